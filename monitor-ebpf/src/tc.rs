//! The TC programs: one per observation point, all sharing [`observe`].
//!
//! They return `TC_ACT_UNSPEC` (tcx: "next"): observe only, the next program in the chain or
//! the kernel decides what happens to the packet.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::generated::{bpf_get_hash_recalc, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::classifier,
    programs::TcContext,
};
use monitor_common::{counter, direction, event_type, obs};

use crate::{
    conntrack,
    maps::{PKT_SCRATCH, config, count, emit, is_monitored},
    parse::{self, ParseError},
};

#[classifier]
pub fn fs_from_ep(ctx: TcContext) -> i32 {
    observe(&ctx, obs::FROM_ENDPOINT, direction::INGRESS)
}

#[classifier]
pub fn fs_to_ep(ctx: TcContext) -> i32 {
    observe(&ctx, obs::TO_ENDPOINT, direction::EGRESS)
}

#[classifier]
pub fn fs_from_net(ctx: TcContext) -> i32 {
    observe(&ctx, obs::FROM_NETWORK, direction::INGRESS)
}

#[classifier]
pub fn fs_to_net(ctx: TcContext) -> i32 {
    observe(&ctx, obs::TO_NETWORK, direction::EGRESS)
}

/// The host gateway device's egress: the host stack sent the packet.
#[classifier]
pub fn fs_from_host(ctx: TcContext) -> i32 {
    observe(&ctx, obs::FROM_HOST, direction::EGRESS)
}

/// The host gateway device's ingress: the packet goes to the host stack.
#[classifier]
pub fn fs_to_host(ctx: TcContext) -> i32 {
    observe(&ctx, obs::TO_HOST, direction::INGRESS)
}

#[inline(always)]
fn observe(ctx: &TcContext, point: u8, dir: u8) -> i32 {
    let Some(cfg) = config() else {
        return TC_ACT_UNSPEC;
    };
    count(counter::PACKETS_SEEN);
    let Some(pkt) = PKT_SCRATCH.get_ptr_mut(0) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours while the program runs.
    let pkt = unsafe { &mut *pkt };
    match parse::parse(ctx, pkt) {
        Ok(()) => {}
        Err(ParseError::NotIp) => {
            count(counter::NON_IP);
            return TC_ACT_UNSPEC;
        }
        Err(ParseError::Truncated) => {
            count(counter::PARSE_ERRORS);
            return TC_ACT_UNSPEC;
        }
    }
    // SAFETY: reading fields of the program's own context.
    let (ifindex, ingress_ifindex, len, mark) = unsafe {
        let skb = &*ctx.skb.skb;
        (skb.ifindex, skb.ingress_ifindex, skb.len, skb.mark)
    };
    // Conntrack's clock is the coarse one (CLOCK_MONOTONIC at tick resolution, a memory read):
    // lifetimes and report intervals are seconds, and the precise clock costs tens of
    // nanoseconds per read on a VM. Only reported packets read it, for the event's time.
    // SAFETY: plain helpers without memory arguments beyond the context.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let transit = || is_monitored(ingress_ifindex);
    let verdict = conntrack::track(pkt, point, ifindex, len, transit, cfg, now);
    if !verdict.report {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: as above. Computing the hash may set skb->hash, as the stack itself would.
    let (hash, ts) = unsafe { (bpf_get_hash_recalc(ctx.skb.skb), bpf_ktime_get_ns()) };
    let _ = emit(cfg, |ev| {
        ev.ts_ns = ts;
        ev.src_addr = pkt.key.src_addr;
        ev.dst_addr = pkt.key.dst_addr;
        ev.hash = hash;
        ev.ifindex = ifindex;
        ev.ingress_ifindex = ingress_ifindex;
        ev.orig_len = len;
        ev.mark = mark;
        ev.src_port = pkt.key.src_port;
        ev.dst_port = pkt.key.dst_port;
        ev.event_type = event_type::TRACE;
        ev.obs_point = point;
        ev.ct_state = verdict.state;
        ev.direction = dir;
        ev.family = pkt.key.family;
        ev.l4_proto = pkt.key.proto;
        ev.tcp_flags = pkt.tcp_flags;
        ev.icmp_type = pkt.icmp_type;
        ev.icmp_code = pkt.icmp_code;
        ev.flags = pkt.flags | verdict.flags;
        ev.src_mac = pkt.src_mac;
        ev.dst_mac = pkt.dst_mac;
        Ok(())
    });
    TC_ACT_UNSPEC
}
