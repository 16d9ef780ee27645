//! `source_port`, `destination_port` and `protocol`.

use flowscope_proto::flow::{Flow, layer4::Protocol, layer7::Record};

/// Parses a port like Go's `strconv.ParseUint(p, 10, 16)`: decimal digits
/// only (no sign, no spaces), `0..=65535`.
fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a decimal port number".into());
    }
    text.parse::<u16>()
        .map_err(|_| "port out of range 0..65535".into())
}

/// Matches the source or destination port of TCP, UDP and SCTP flows.
#[derive(Debug, Clone, Default)]
pub(crate) struct PortMatcher {
    ports: Vec<u16>,
}

impl PortMatcher {
    pub(crate) fn compile(values: &[String]) -> Result<Self, (String, String)> {
        let ports = values
            .iter()
            .map(|v| parse_port(v).map_err(|r| (v.clone(), r)))
            .collect::<Result<_, _>>()?;
        Ok(Self { ports })
    }

    /// `port` is the flow's port, `None` for flows without ports.
    pub(crate) fn matches(&self, port: Option<u32>) -> bool {
        port.is_some_and(|p| self.ports.iter().any(|x| u32::from(*x) == p))
    }
}

/// The protocols `protocol` accepts (lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
    /// ICMPv4 or ICMPv6.
    Icmp,
    IcmpV4,
    IcmpV6,
    Vrrp,
    Igmp,
    Dns,
    Http,
    Kafka,
}

/// Matches the flow's L4 (or L7) protocol by name, case-insensitively:
/// `tcp`, `udp`, `sctp`, `icmp` (v4 or v6), `icmpv4`, `icmpv6`, `vrrp`,
/// `igmp`, and Hubble's L7 names `dns`, `http`, `kafka`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProtocolMatcher {
    protos: Vec<Proto>,
}

impl ProtocolMatcher {
    pub(crate) fn compile(values: &[String]) -> Result<Self, (String, String)> {
        let protos = values
            .iter()
            .map(|v| {
                Ok(match v.to_ascii_lowercase().as_str() {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    "sctp" => Proto::Sctp,
                    "icmp" => Proto::Icmp,
                    "icmpv4" => Proto::IcmpV4,
                    "icmpv6" => Proto::IcmpV6,
                    "vrrp" => Proto::Vrrp,
                    "igmp" => Proto::Igmp,
                    "dns" => Proto::Dns,
                    "http" => Proto::Http,
                    "kafka" => Proto::Kafka,
                    _ => {
                        return Err((
                            v.clone(),
                            "unknown protocol (expected tcp, udp, sctp, icmp, icmpv4, icmpv6, \
                             vrrp, igmp, dns, http or kafka)"
                                .to_string(),
                        ));
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { protos })
    }

    pub(crate) fn matches(&self, flow: &Flow) -> bool {
        let l4 = flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref());
        let l7 = flow.l7.as_ref().and_then(|l7| l7.record.as_ref());
        self.protos.iter().any(|p| match p {
            Proto::Tcp => matches!(l4, Some(Protocol::Tcp(_))),
            Proto::Udp => matches!(l4, Some(Protocol::Udp(_))),
            Proto::Sctp => matches!(l4, Some(Protocol::Sctp(_))),
            Proto::Icmp => matches!(l4, Some(Protocol::IcmPv4(_) | Protocol::IcmPv6(_))),
            Proto::IcmpV4 => matches!(l4, Some(Protocol::IcmPv4(_))),
            Proto::IcmpV6 => matches!(l4, Some(Protocol::IcmPv6(_))),
            Proto::Vrrp => matches!(l4, Some(Protocol::Vrrp(_))),
            Proto::Igmp => matches!(l4, Some(Protocol::Igmp(_))),
            Proto::Dns => matches!(l7, Some(Record::Dns(_))),
            Proto::Http => matches!(l7, Some(Record::Http(_))),
            #[expect(deprecated, reason = "Hubble still accepts the kafka protocol filter")]
            Proto::Kafka => matches!(l7, Some(Record::Kafka(_))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        for ok in ["0", "80", "65535"] {
            assert!(parse_port(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "65536",
            "-1",
            "+80",
            " 80",
            "80 ",
            "http",
            "0x50",
            "99999999999",
        ] {
            assert!(parse_port(bad).is_err(), "{bad:?}");
        }
        let m = PortMatcher::compile(&["80".into(), "443".into()]).unwrap();
        assert!(m.matches(Some(443)));
        assert!(!m.matches(Some(8080)));
        assert!(!m.matches(None));
    }
}
