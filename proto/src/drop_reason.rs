//! The kernel's drop reasons in Hubble's words.
//!
//! The agent learns why the kernel dropped a packet from the `skb:kfree_skb` tracepoint: a value
//! of the running kernel's `enum skb_drop_reason`, named through BTF. Hubble clients know another
//! vocabulary, Cilium's datapath drop codes, and read it from three fields of a dropped flow, all
//! equal on Cilium (`pkg/hubble/parser/threefour`): `drop_reason_desc` (the [`DropReason`] enum;
//! Hubble's `hubble_drop_total{reason}` label is its name), the deprecated `drop_reason`, and
//! `event_type.sub_type`, which `hubble observe` turns into its TYPE column through Cilium's table
//! of drop texts (`pkg/monitor/api/drop.go`).
//!
//! [`KERNEL_DROP_REASONS`] says, for every kernel reason we know by name, which Hubble reason
//! means the same thing; `docs/drop-reasons.md` explains each row. A kernel reason without a true
//! equivalent is [`DropReason::Unknown`], never the nearest-sounding Cilium cause: a netfilter
//! drop, for example, is often a firewall rule but may be a full conntrack table, so calling it
//! `POLICY_DENIED` would send an operator looking for a policy that does not exist. The kernel's
//! own name always travels in flowscope's `FlowExtension.kernel_drop_reason_name`.
//!
//! The mapping is by name: the numbers of `enum skb_drop_reason` change between kernel versions.

use std::{collections::HashMap, sync::OnceLock};

use crate::flow::DropReason;

/// `event_type.sub_type` of a drop whose reason has no Hubble equivalent.
///
/// On Cilium the sub type is the drop code, and Hubble's printer shows code 0 as `Success`
/// (`hubble observe --verdict DROPPED` printed `Success DROPPED` for every flowscope drop). The
/// codes are 8 bits wide; Cilium assigns 0–11 to non-drop reasons and numbers drops upward from
/// 130, one by one (205 today). 255, the top of the range, is above all of them, so its table has
/// no text for it and clients print the bare number: no cause at all rather than a wrong one.
pub const UNMAPPED_DROP_SUB_TYPE: i32 = 255;

/// One kernel drop reason and its Hubble equivalent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelDropReason {
    /// The kernel's name, as [`short_name`] writes it (`NETFILTER_DROP`).
    pub kernel: &'static str,
    /// What Hubble clients are told.
    pub hubble: DropReason,
}

const fn row(kernel: &'static str, hubble: DropReason) -> KernelDropReason {
    KernelDropReason { kernel, hubble }
}

use DropReason::{
    FibLookupFailed, InvalidIpv6ExtensionHeader, InvalidPacketDropped, InvalidSourceIp,
    ReachedEdtRateLimitingDropHorizon, SocketLookupFailed, Unknown, UnknownL4Protocol,
    UnsupportedL3Protocol,
};

/// Every kernel drop reason we have classified, in the order of Linux 6.18's `enum
/// skb_drop_reason`. Names that are not here (a newer kernel's) get [`DropReason::Unknown`]; the
/// agent's tests fail on a kernel that has such a name, so that it gets classified.
#[expect(
    deprecated,
    reason = "Cilium no longer emits INVALID_SOURCE_MAC, but it is the kernel's MAC_INVALID_SOURCE"
)]
pub const KERNEL_DROP_REASONS: &[KernelDropReason] = &[
    row("NOT_DROPPED_YET", Unknown),
    row("CONSUMED", Unknown),
    row("NOT_SPECIFIED", Unknown),
    row("NO_SOCKET", SocketLookupFailed),
    row("SOCKET_CLOSE", Unknown),
    row("SOCKET_FILTER", Unknown),
    row("SOCKET_RCVBUFF", Unknown),
    row("UNIX_DISCONNECT", Unknown),
    row("UNIX_SKIP_OOB", Unknown),
    row("PKT_TOO_SMALL", InvalidPacketDropped),
    row("TCP_CSUM", InvalidPacketDropped),
    row("UDP_CSUM", InvalidPacketDropped),
    row("NETFILTER_DROP", Unknown),
    row("OTHERHOST", Unknown),
    row("IP_CSUM", InvalidPacketDropped),
    row("IP_INHDR", Unknown),
    row("IP_RPFILTER", InvalidSourceIp),
    row("UNICAST_IN_L2_MULTICAST", Unknown),
    row("XFRM_POLICY", Unknown),
    row("IP_NOPROTO", UnknownL4Protocol),
    row("PROTO_MEM", Unknown),
    row("TCP_AUTH_HDR", Unknown),
    row("TCP_MD5NOTFOUND", Unknown),
    row("TCP_MD5UNEXPECTED", Unknown),
    row("TCP_MD5FAILURE", Unknown),
    row("TCP_AONOTFOUND", Unknown),
    row("TCP_AOUNEXPECTED", Unknown),
    row("TCP_AOKEYNOTFOUND", Unknown),
    row("TCP_AOFAILURE", Unknown),
    row("SOCKET_BACKLOG", Unknown),
    row("TCP_FLAGS", Unknown),
    row("TCP_ABORT_ON_DATA", Unknown),
    row("TCP_ZEROWINDOW", Unknown),
    row("TCP_OLD_DATA", Unknown),
    row("TCP_OVERWINDOW", Unknown),
    row("TCP_OFOMERGE", Unknown),
    row("TCP_RFC7323_PAWS", Unknown),
    row("TCP_RFC7323_PAWS_ACK", Unknown),
    row("TCP_RFC7323_TW_PAWS", Unknown),
    row("TCP_RFC7323_TSECR", Unknown),
    row("TCP_LISTEN_OVERFLOW", Unknown),
    row("TCP_OLD_SEQUENCE", Unknown),
    row("TCP_INVALID_SEQUENCE", Unknown),
    row("TCP_INVALID_END_SEQUENCE", Unknown),
    row("TCP_INVALID_ACK_SEQUENCE", Unknown),
    row("TCP_RESET", Unknown),
    row("TCP_INVALID_SYN", Unknown),
    row("TCP_CLOSE", Unknown),
    row("TCP_FASTOPEN", Unknown),
    row("TCP_OLD_ACK", Unknown),
    row("TCP_TOO_OLD_ACK", Unknown),
    row("TCP_ACK_UNSENT_DATA", Unknown),
    row("TCP_OFO_QUEUE_PRUNE", Unknown),
    row("TCP_OFO_DROP", Unknown),
    row("IP_OUTNOROUTES", FibLookupFailed),
    row("BPF_CGROUP_EGRESS", Unknown),
    row("IPV6DISABLED", UnsupportedL3Protocol),
    row("NEIGH_CREATEFAIL", Unknown),
    row("NEIGH_FAILED", Unknown),
    row("NEIGH_QUEUEFULL", Unknown),
    row("NEIGH_DEAD", Unknown),
    row("NEIGH_HH_FILLFAIL", Unknown),
    row("TC_EGRESS", Unknown),
    row("SECURITY_HOOK", Unknown),
    row("QDISC_DROP", Unknown),
    row("QDISC_OVERLIMIT", Unknown),
    row("QDISC_CONGESTED", Unknown),
    row("CAKE_FLOOD", Unknown),
    row("FQ_BAND_LIMIT", Unknown),
    row("FQ_HORIZON_LIMIT", ReachedEdtRateLimitingDropHorizon),
    row("FQ_FLOW_LIMIT", Unknown),
    row("CPU_BACKLOG", Unknown),
    row("XDP", Unknown),
    row("TC_INGRESS", Unknown),
    row("UNHANDLED_PROTO", Unknown),
    row("SKB_CSUM", Unknown),
    row("SKB_GSO_SEG", Unknown),
    row("SKB_UCOPY_FAULT", Unknown),
    row("DEV_HDR", Unknown),
    row("DEV_READY", Unknown),
    row("FULL_RING", Unknown),
    row("NOMEM", Unknown),
    row("HDR_TRUNC", InvalidPacketDropped),
    row("TAP_FILTER", Unknown),
    row("TAP_TXFILTER", Unknown),
    row("ICMP_CSUM", InvalidPacketDropped),
    row("INVALID_PROTO", Unknown),
    row("IP_INADDRERRORS", Unknown),
    row("IP_INNOROUTES", FibLookupFailed),
    row("IP_LOCAL_SOURCE", InvalidSourceIp),
    row("IP_INVALID_SOURCE", InvalidSourceIp),
    row("IP_LOCALNET", Unknown),
    row("IP_INVALID_DEST", Unknown),
    row("PKT_TOO_BIG", Unknown),
    row("DUP_FRAG", Unknown),
    row("FRAG_REASM_TIMEOUT", Unknown),
    row("FRAG_TOO_FAR", Unknown),
    row("TCP_MINTTL", Unknown),
    row("IPV6_BAD_EXTHDR", InvalidIpv6ExtensionHeader),
    row("IPV6_TOO_MANY_EXTHDRS", InvalidIpv6ExtensionHeader),
    row("IPV6_NDISC_FRAG", InvalidPacketDropped),
    row("IPV6_NDISC_HOP_LIMIT", InvalidPacketDropped),
    row("IPV6_NDISC_BAD_CODE", InvalidPacketDropped),
    row("IPV6_NDISC_BAD_OPTIONS", InvalidPacketDropped),
    row("IPV6_NDISC_NS_OTHERHOST", Unknown),
    row("QUEUE_PURGE", Unknown),
    row("TC_COOKIE_ERROR", Unknown),
    row("PACKET_SOCK_ERROR", Unknown),
    row("TC_CHAIN_NOTFOUND", Unknown),
    row("TC_RECLASSIFY_LOOP", Unknown),
    row("VXLAN_INVALID_HDR", InvalidPacketDropped),
    row("VXLAN_VNI_NOT_FOUND", Unknown),
    row("MAC_INVALID_SOURCE", DropReason::InvalidSourceMac),
    row("VXLAN_ENTRY_EXISTS", Unknown),
    row("NO_TX_TARGET", Unknown),
    row("IP_TUNNEL_ECN", Unknown),
    row("TUNNEL_TXINFO", Unknown),
    row("LOCAL_MAC", Unknown),
    row("ARP_PVLAN_DISABLE", Unknown),
    row("MAC_IEEE_MAC_CONTROL", Unknown),
    row("BRIDGE_INGRESS_STP_STATE", Unknown),
    row("CAN_RX_INVALID_FRAME", InvalidPacketDropped),
    row("CANFD_RX_INVALID_FRAME", InvalidPacketDropped),
    row("CANXL_RX_INVALID_FRAME", InvalidPacketDropped),
    row("PFMEMALLOC", Unknown),
    row("DUALPI2_STEP_DROP", Unknown),
    row("PSP_INPUT", Unknown),
    row("PSP_OUTPUT", Unknown),
    row("RECURSION_LIMIT", Unknown),
    row("SKB_RX_HEADROOM", Unknown),
    row("MAX", Unknown),
];

/// The name [`KERNEL_DROP_REASONS`] and `FlowExtension.kernel_drop_reason_name` use for a value
/// of `enum skb_drop_reason` as BTF spells it: without the `SKB_DROP_REASON_` prefix
/// (`SKB_DROP_REASON_SKB_CSUM` is `SKB_CSUM`), or without `SKB_` for the two values that have
/// no `DROP_REASON` in their name (`SKB_CONSUMED` is `CONSUMED`).
pub fn short_name(btf_name: &str) -> &str {
    btf_name
        .strip_prefix("SKB_DROP_REASON_")
        .or_else(|| btf_name.strip_prefix("SKB_"))
        .unwrap_or(btf_name)
}

/// The row of a kernel reason, if it has one.
pub fn lookup(kernel_name: &str) -> Option<&'static KernelDropReason> {
    static INDEX: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        KERNEL_DROP_REASONS
            .iter()
            .enumerate()
            .map(|(i, r)| (r.kernel, i))
            .collect()
    });
    index.get(kernel_name).map(|&i| &KERNEL_DROP_REASONS[i])
}

/// Hubble's reason for a kernel drop reason (by [`short_name`]); [`DropReason::Unknown`] for a
/// name without a row, or when the kernel gave no name.
pub fn hubble_drop_reason(kernel_name: Option<&str>) -> DropReason {
    kernel_name
        .and_then(lookup)
        .map(|r| r.hubble)
        .unwrap_or(DropReason::Unknown)
}

/// `event_type.sub_type` of a drop with Hubble reason `reason`: the reason's number, as on
/// Cilium, except for [`DropReason::Unknown`] (see [`UNMAPPED_DROP_SUB_TYPE`]).
pub fn drop_sub_type(reason: DropReason) -> i32 {
    match reason {
        DropReason::Unknown => UNMAPPED_DROP_SUB_TYPE,
        r => r as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(
            short_name("SKB_DROP_REASON_NETFILTER_DROP"),
            "NETFILTER_DROP"
        );
        // Only one prefix comes off: the kernel's own name is `SKB_CSUM`.
        assert_eq!(short_name("SKB_DROP_REASON_SKB_CSUM"), "SKB_CSUM");
        assert_eq!(short_name("SKB_CONSUMED"), "CONSUMED");
        assert_eq!(short_name("SKB_NOT_DROPPED_YET"), "NOT_DROPPED_YET");
        assert_eq!(short_name("SOMETHING_ELSE"), "SOMETHING_ELSE");
    }

    #[test]
    fn one_row_per_name() {
        let mut seen = std::collections::HashSet::new();
        for r in KERNEL_DROP_REASONS {
            assert!(seen.insert(r.kernel), "{} twice", r.kernel);
            assert_eq!(lookup(r.kernel), Some(r));
        }
    }

    #[test]
    fn equivalents_and_the_default() {
        assert_eq!(
            hubble_drop_reason(Some("NO_SOCKET")),
            DropReason::SocketLookupFailed
        );
        assert_eq!(
            hubble_drop_reason(Some("IP_CSUM")),
            DropReason::InvalidPacketDropped
        );
        // A firewall rule or a full conntrack table: no Hubble reason says which.
        assert_eq!(
            hubble_drop_reason(Some("NETFILTER_DROP")),
            DropReason::Unknown
        );
        assert_eq!(
            hubble_drop_reason(Some("A_REASON_OF_A_LATER_KERNEL")),
            DropReason::Unknown
        );
        assert_eq!(hubble_drop_reason(None), DropReason::Unknown);
    }

    #[test]
    fn sub_types_never_read_as_success() {
        assert_eq!(drop_sub_type(DropReason::Unknown), UNMAPPED_DROP_SUB_TYPE);
        assert_eq!(drop_sub_type(DropReason::SocketLookupFailed), 178);
        for r in KERNEL_DROP_REASONS {
            let sub = drop_sub_type(r.hubble);
            assert_ne!(sub, 0, "{}", r.kernel);
            // Cilium's drop codes are 8 bits wide (DropNotify.SubType).
            assert!(u8::try_from(sub).is_ok(), "{}", r.kernel);
        }
        // Not one of Hubble's reasons: the printer has no text for it.
        assert!(DropReason::try_from(UNMAPPED_DROP_SUB_TYPE).is_err());
    }
}
