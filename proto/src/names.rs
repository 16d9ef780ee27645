//! Hubble's names for numbers on the wire, in one place for the agent, the relay and flowctl.

/// Cilium's trace observation point names, indexed by the datapath's number (a TRACE event's
/// `sub_type`; `to-endpoint` is 0 here and 101 in the API's `TraceObservationPoint`). As
/// `hubble observe` prints them and `-t trace:<name>` takes them.
pub const TRACE_POINTS: [&str; 14] = [
    "to-endpoint",
    "to-proxy",
    "to-host",
    "to-stack",
    "to-overlay",
    "from-endpoint",
    "from-proxy",
    "from-host",
    "from-stack",
    "from-overlay",
    "from-network",
    "to-network",
    "from-crypto",
    "to-crypto",
];

/// The name of a trace observation point number (`11` → `to-network`).
pub fn trace_point_name(sub_type: i32) -> Option<&'static str> {
    usize::try_from(sub_type)
        .ok()
        .and_then(|i| TRACE_POINTS.get(i))
        .copied()
}

/// The number of a trace observation point name (`to-network` → `11`).
pub fn trace_point_number(name: &str) -> Option<i32> {
    TRACE_POINTS
        .iter()
        .position(|n| *n == name)
        .and_then(|i| i32::try_from(i).ok())
}

/// Cilium's reserved security identities, indexed by number (`world` is 2).
pub const RESERVED_IDENTITIES: [&str; 11] = [
    "unknown",
    "host",
    "world",
    "unmanaged",
    "health",
    "init",
    "remote-node",
    "kube-apiserver",
    "ingress",
    "world-ipv4",
    "world-ipv6",
];

/// The name of reserved identity `id` (`6` → `remote-node`), if it is one.
pub fn reserved_identity_name(id: u32) -> Option<&'static str> {
    usize::try_from(id)
        .ok()
        .and_then(|i| RESERVED_IDENTITIES.get(i))
        .copied()
}

/// The number of a reserved identity by name, with or without the `reserved:` prefix
/// (`world` and `reserved:world` both give 2).
pub fn reserved_identity_number(name: &str) -> Option<u32> {
    let name = name.strip_prefix("reserved:").unwrap_or(name);
    RESERVED_IDENTITIES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for (i, name) in TRACE_POINTS.iter().enumerate() {
            let n = i32::try_from(i).unwrap();
            assert_eq!(trace_point_name(n), Some(*name));
            assert_eq!(trace_point_number(name), Some(n));
        }
        assert_eq!(trace_point_name(11), Some("to-network"));
        assert_eq!(trace_point_name(14), None);
        assert_eq!(trace_point_name(-1), None);
        assert_eq!(trace_point_number("nowhere"), None);
    }

    #[test]
    fn reserved_identities() {
        assert_eq!(reserved_identity_name(2), Some("world"));
        assert_eq!(reserved_identity_name(11), None);
        assert_eq!(reserved_identity_number("reserved:remote-node"), Some(6));
        assert_eq!(reserved_identity_number("host"), Some(1));
        assert_eq!(reserved_identity_number("cluster"), None);
    }
}
