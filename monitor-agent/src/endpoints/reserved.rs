//! Cilium's reserved identities (0 to 10): numbers, names and labels, as Hubble shows them.
//!
//! Numbers below [`super::IDENTITY_FIRST`] (256) are reserved; these eleven are the ones Hubble
//! clients know by name (`hubble observe --identity world`, `(world)` after an address).

use std::sync::{Arc, LazyLock};

/// No identity is known.
pub const UNKNOWN: u32 = 0;
/// The local node (any of its own addresses).
pub const HOST: u32 = 1;
/// Outside the cluster.
pub const WORLD: u32 = 2;
/// An endpoint that no source describes (a pod behind a veth we only discovered).
pub const UNMANAGED: u32 = 3;
/// Cilium's health-check endpoint.
pub const HEALTH: u32 = 4;
/// An endpoint whose identity is not resolved yet.
pub const INIT: u32 = 5;
/// Another node of the cluster.
pub const REMOTE_NODE: u32 = 6;
/// The Kubernetes API server.
pub const KUBE_APISERVER: u32 = 7;
/// Cilium's ingress proxy.
pub const INGRESS: u32 = 8;
/// Outside the cluster, IPv4 (dual-stack clusters).
pub const WORLD_IPV4: u32 = 9;
/// Outside the cluster, IPv6 (dual-stack clusters).
pub const WORLD_IPV6: u32 = 10;

/// Labels, indexed by number; `unknown` has none (as in Hubble's flows).
const LABELS: [&[&str]; 11] = [
    &[],
    &["reserved:host"],
    &["reserved:world"],
    &["reserved:unmanaged"],
    &["reserved:health"],
    &["reserved:init"],
    &["reserved:remote-node"],
    &["reserved:kube-apiserver"],
    &["reserved:ingress"],
    &["reserved:world-ipv4"],
    &["reserved:world-ipv6"],
];

/// The labels of reserved identity `id` (`["reserved:world"]`); empty for `unknown` and for a
/// number that is not a reserved identity.
pub fn labels(id: u32) -> &'static [&'static str] {
    LABELS.get(id as usize).copied().unwrap_or(&[])
}

/// The name of reserved identity `id` (`"remote-node"`), if it is one.
pub fn name(id: u32) -> Option<&'static str> {
    flowscope_proto::names::reserved_identity_name(id)
}

/// The number of a reserved identity by name, with or without the `reserved:` prefix
/// (`"world"` and `"reserved:world"` both give 2).
pub fn by_name(name: &str) -> Option<u32> {
    flowscope_proto::names::reserved_identity_number(name)
}

/// The labels of each reserved identity as shared slices, built once, so that lookups hand out
/// clones of an `Arc` instead of allocating.
static SHARED: LazyLock<[Arc<[String]>; 11]> =
    LazyLock::new(|| std::array::from_fn(|i| LABELS[i].iter().map(|l| (*l).to_owned()).collect()));

/// [`labels`] as a shared slice (no allocation).
pub(crate) fn shared_labels(id: u32) -> Arc<[String]> {
    SHARED
        .get(id as usize)
        .cloned()
        .unwrap_or_else(|| SHARED[UNKNOWN as usize].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_labels_agree() {
        assert_eq!(name(HOST), Some("host"));
        assert_eq!(name(REMOTE_NODE), Some("remote-node"));
        assert_eq!(name(WORLD_IPV6), Some("world-ipv6"));
        assert_eq!(name(11), None);
        assert_eq!(by_name("world"), Some(WORLD));
        assert_eq!(by_name("reserved:kube-apiserver"), Some(KUBE_APISERVER));
        assert_eq!(by_name("nope"), None);
        assert_eq!(labels(WORLD), ["reserved:world"]);
        assert!(labels(UNKNOWN).is_empty() && labels(4242).is_empty());
        for id in 1..=WORLD_IPV6 {
            let n = name(id).unwrap();
            assert_eq!(by_name(n), Some(id));
            assert_eq!(labels(id), [format!("reserved:{n}")]);
            assert_eq!(&*shared_labels(id), labels(id));
        }
    }
}
