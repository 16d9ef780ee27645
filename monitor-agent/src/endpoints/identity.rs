//! Endpoint identities: a number computed from a label set, the same on every node.
//!
//! Cilium allocates identities through a shared store (CRDs or etcd) so that every node agrees.
//! We have no such store and want none: the number is a pure function of the labels, so every
//! node (and every version of flowscope: the function is frozen by a golden test) computes the
//! same one without coordination.
//!
//! # The function
//!
//! 1. Take the labels in Hubble's form (`k8s:app=web`), sort them byte-wise, drop duplicates.
//! 2. If what is left is exactly one reserved label (`reserved:world`), the result is that
//!    reserved identity (2); if nothing is left, it is `unknown` (0).
//! 3. Otherwise hash the labels, each followed by `\n`, with SHA-256; read the first 8 bytes of
//!    the digest as a big-endian `u64` `h`; the identity is
//!    `IDENTITY_FIRST + h % (IDENTITY_LAST - IDENTITY_FIRST + 1)`.
//!
//! The range [`IDENTITY_FIRST`]`..=`[`IDENTITY_LAST`] (256 to 2^24 - 1) is where Cilium puts
//! cluster-wide identities: below it are the reserved ones, from 2^24 up Cilium puts node-local
//! (CIDR) identities, which Hubble clients recognise by that bit. Anyone can check a number by
//! hand (labels never contain a newline: Kubernetes label syntax forbids it):
//!
//! ```text
//! printf 'k8s:app=web\nk8s:io.kubernetes.pod.namespace=default\nk8s:tier=frontend\n' \
//!   | sha256sum | cut -c1-16        # -> h in hex; identity = 256 + h mod 16776960
//! ```
//!
//! A hash can collide: with n distinct label sets in a cluster, the chance that two of them share
//! a number is about n²/33.5 million (1 % at 580 sets, 25 % at 3,000). A collision only merges two
//! label sets under one number; flows still carry each endpoint's own labels, namespace and pod.

use sha2::{Digest as _, Sha256};

use super::reserved;

/// The smallest identity given to a label set (the first after the reserved range).
pub const IDENTITY_FIRST: u32 = 256;
/// The largest identity given to a label set (2^24 - 1: Cilium's cluster-wide identities end here).
pub const IDENTITY_LAST: u32 = (1 << 24) - 1;

/// The identity of a label set (Hubble form): deterministic, independent of the labels' order and
/// of duplicates, in [`IDENTITY_FIRST`]`..=`[`IDENTITY_LAST`] unless the set is a single reserved
/// label (then that reserved identity) or empty (then `unknown`, 0). See the module docs for the
/// exact function.
pub fn identity_for_labels<S: AsRef<str>>(labels: &[S]) -> u32 {
    let mut sorted: Vec<&str> = labels.iter().map(AsRef::as_ref).collect();
    sorted.sort_unstable();
    sorted.dedup();
    match sorted.as_slice() {
        [] => return reserved::UNKNOWN,
        [one] => {
            if let Some(id) = one
                .strip_prefix("reserved:")
                .and_then(reserved::by_name)
                .filter(|&id| id != reserved::UNKNOWN)
            {
                return id;
            }
        }
        _ => {}
    }
    let mut hasher = Sha256::new();
    for label in &sorted {
        hasher.update(label.as_bytes());
        hasher.update(b"\n");
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let h = u64::from_be_bytes(first);
    let span = u64::from(IDENTITY_LAST - IDENTITY_FIRST + 1);
    // The remainder is below 2^24, so it fits in a u32.
    IDENTITY_FIRST + (h % span) as u32
}

/// Whether `id` is one of the reserved identities (below [`IDENTITY_FIRST`]).
pub fn is_reserved(id: u32) -> bool {
    id < IDENTITY_FIRST
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::labels::pod_labels;

    /// pod-a of the reference scenario, as `deploy/examples/endpoints.yaml` describes it.
    fn pod_a() -> Vec<String> {
        pod_labels("default", [("app", "web"), ("tier", "frontend")])
    }

    #[test]
    fn golden_values_never_change() {
        // These numbers are what every node computes; changing them breaks mixed-version
        // clusters (and every stored flow). Checked by hand with the sha256sum recipe of the
        // module docs.
        assert_eq!(identity_for_labels(&pod_a()), GOLDEN_POD_A);
        assert_eq!(
            identity_for_labels(&pod_labels("default", [("app", "db")])),
            GOLDEN_POD_B
        );
    }
    const GOLDEN_POD_A: u32 = 14_040_707;
    const GOLDEN_POD_B: u32 = 8_918_661;

    #[test]
    fn order_and_duplicates_do_not_matter() {
        let mut l = pod_a();
        let id = identity_for_labels(&l);
        l.reverse();
        assert_eq!(identity_for_labels(&l), id);
        l.push(l[0].clone());
        assert_eq!(identity_for_labels(&l), id);
        let as_str: Vec<&str> = l.iter().map(String::as_str).collect();
        assert_eq!(identity_for_labels(&as_str), id);
    }

    #[test]
    fn range_is_respected_and_sets_differ() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let id = identity_for_labels(&pod_labels("ns", [("app", format!("a{i}"))]));
            assert!((IDENTITY_FIRST..=IDENTITY_LAST).contains(&id), "{id}");
            assert!(!is_reserved(id));
            seen.insert(id);
        }
        // 2000 sets in 16.7 million numbers: a collision here would be a 11 % event; more than
        // one means the function is broken.
        assert!(seen.len() >= 1999, "{} distinct", seen.len());
        // The namespace is part of the identity.
        assert_ne!(
            identity_for_labels(&pod_labels("a", [("app", "web")])),
            identity_for_labels(&pod_labels("b", [("app", "web")]))
        );
    }

    #[test]
    fn reserved_and_empty_sets() {
        assert_eq!(identity_for_labels(&["reserved:world"]), reserved::WORLD);
        assert_eq!(
            identity_for_labels(&["reserved:unmanaged", "reserved:unmanaged"]),
            reserved::UNMANAGED
        );
        assert_eq!(identity_for_labels::<&str>(&[]), reserved::UNKNOWN);
        // Not a single reserved label: hashed like any other set.
        let id = identity_for_labels(&["reserved:host", "reserved:kube-apiserver"]);
        assert!(id >= IDENTITY_FIRST);
        assert!(identity_for_labels(&["reserved:bogus"]) >= IDENTITY_FIRST);
    }
}
