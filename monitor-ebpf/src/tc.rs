//! The TC programs: one per observation point, all sharing [`observe`].
//!
//! They return `TC_ACT_UNSPEC` (tcx: "next"): observe only, the next program in the chain or
//! the kernel decides what happens to the packet.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_UNSPEC, bpf_fib_lookup,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_get_hash_recalc, bpf_ktime_get_coarse_ns,
        bpf_ktime_get_ns,
    },
    macros::classifier,
    programs::TcContext,
};
use monitor_common::{
    Config, FlowEvent, aggregation, counter, direction, event_type, family, obs, obs_mode, role,
};

use crate::{
    conntrack::{self, Verdict},
    maps::{PKT_SCRATCH, config, count, emit, filter_passes, iface_role, zero_pad},
    parse::{self, Packet, ParseError},
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

/// What every trace of one packet at one hook shares.
struct Seen {
    dir: u8,
    ingress_ifindex: u32,
    len: u32,
    mark: u32,
    hash: u32,
    ts: u64,
}

#[inline(always)]
fn observe(ctx: &TcContext, point: u8, dir: u8) -> i32 {
    let cfg = config();
    count(counter::PACKETS_SEEN);
    let Some(scratch) = PKT_SCRATCH.get_ptr_mut(0) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours while the program runs.
    let scratch = unsafe { &mut *scratch };
    let pkt = &mut scratch.pkt;
    let reply_first = &mut scratch.reply_first[usize::from(point) & 15];
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
    let (ifindex, ingress_ifindex, len, mark, skb_hash) = unsafe {
        let skb = &*ctx.skb.skb;
        (
            skb.ifindex,
            skb.ingress_ifindex,
            skb.len,
            skb.mark,
            skb.hash,
        )
    };
    // Conntrack's clock is the coarse one (CLOCK_MONOTONIC at tick resolution, a memory read):
    // lifetimes and report intervals are seconds, and the precise clock costs tens of
    // nanoseconds per read on a VM. Only reported packets read it, for the event's time.
    // SAFETY: plain helpers without memory arguments beyond the context.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let transit = || iface_role(ingress_ifindex);
    let verdict = conntrack::track(pkt, point, ifindex, len, transit, cfg, now, reply_first);
    // The agent's `--kernel-filter` comes after conntrack (whose counts stay those of every
    // packet) and before the L7 capture, the clock, the hash and the ring.
    let passes = filter_passes(pkt);
    // Payloads on L7 ports, whatever aggregation reports (one bit test for other packets).
    if passes {
        crate::l7::capture(
            ctx,
            pkt,
            &crate::l7::Hook {
                point,
                dir,
                ifindex,
                ingress_ifindex,
                len,
                ct_state: verdict.state,
                ct_flags: verdict.flags,
            },
        );
    }
    // Parsed and counted; what follows reports the packet.
    if !verdict.report || !passes {
        return TC_ACT_UNSPEC;
    }
    // The skb's hash when it has one (a socket's, the NIC's, or the one an earlier hook or the
    // stack computed): a field of the context, where the helper is a call. Without one, the
    // helper computes it (the flow dissector) and sets it, as the stack itself would.
    let hash = if skb_hash != 0 {
        skb_hash
    } else {
        // SAFETY: a plain helper on the program's own skb.
        unsafe { bpf_get_hash_recalc(ctx.skb.skb) }
    };
    // The event's time, from the precise clock. The conntrack clock read above (tick
    // resolution) was tried at aggregation `none` to save this read (issue 14): it dates a
    // packet up to a tick before it was seen, which `since` queries, the order against other
    // clocks and the path's time between hooks all read (testbed/tests/api_history.rs fails).
    // SAFETY: a helper without arguments.
    let ts = unsafe { bpf_ktime_get_ns() };
    let seen = Seen {
        dir,
        ingress_ifindex,
        len,
        mark,
        hash,
        ts,
    };
    if cfg.obs_mode == obs_mode::CILIUM && point == obs::FROM_ENDPOINT {
        // Cilium's from-container program: FROM_LXC, reported at `none` only, then where the
        // packet goes, under the same conntrack verdict.
        if cfg.aggregation == aggregation::NONE {
            emit_trace(cfg, pkt, &verdict, &seen, point, ifindex);
        }
        let (next, next_ifindex) = next_hop(ctx, pkt, ifindex);
        emit_trace(cfg, pkt, &verdict, &seen, next, next_ifindex);
    } else {
        emit_trace(cfg, pkt, &verdict, &seen, point, ifindex);
    }
    TC_ACT_UNSPEC
}

/// Where a packet that an endpoint sent goes, as Cilium's from-container program reports it:
/// delivered to another local endpoint (TO_ENDPOINT, with that endpoint's interface), or handed
/// to the node's stack (TO_STACK, interface unknown: Cilium's `TRACE_IFINDEX_UNKNOWN`).
///
/// Cilium knows its endpoints' addresses; here the kernel's FIB says where the stack will route
/// the packet, and the interface map whether that is an endpoint veth. Only reported packets
/// pay for the lookup.
#[inline(always)]
fn next_hop(ctx: &TcContext, pkt: &Packet, ifindex: u32) -> (u8, u32) {
    // SAFETY: a plain C struct of integers, unions of integers and byte arrays.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.l4_protocol = pkt.key.proto;
    p.sport = pkt.key.src_port.to_be();
    p.dport = pkt.key.dst_port.to_be();
    p.ifindex = ifindex;
    let word = |a: &[u8; 16], i: usize| {
        u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
    };
    if pkt.key.family == family::V4 {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src = word(&pkt.key.src_addr, 0);
        p.__bindgen_anon_4.ipv4_dst = word(&pkt.key.dst_addr, 0);
    } else {
        p.family = AF_INET6;
        // One volatile store per word: `p` is on the stack, where the verifier refuses a
        // misaligned access, and LLVM (allowed misaligned access, see build.rs) would join two
        // of these 4-byte stores into an 8-byte one at a 4-byte boundary.
        let src = (&raw mut p.__bindgen_anon_3).cast::<u32>();
        let dst = (&raw mut p.__bindgen_anon_4).cast::<u32>();
        for i in 0..4 {
            // SAFETY: both unions hold a `[u32; 4]` (ipv6_src, ipv6_dst): in bounds, aligned.
            unsafe {
                src.add(i).write_volatile(word(&pkt.key.src_addr, i));
                dst.add(i).write_volatile(word(&pkt.key.dst_addr, i));
            }
        }
    }
    // SAFETY: `p` is a valid, writable bpf_fib_lookup of the size passed.
    let r = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &mut p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    // Without a neighbour entry yet the route is known all the same.
    let routed = r == BPF_FIB_LKUP_RET_SUCCESS as i64 || r == BPF_FIB_LKUP_RET_NO_NEIGH as i64;
    if routed && p.ifindex != ifindex && iface_role(p.ifindex) == role::ENDPOINT {
        (obs::TO_ENDPOINT, p.ifindex)
    } else {
        (obs::TO_STACK, 0)
    }
}

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Writes one trace event for `pkt` at `point` on `ifindex`.
#[inline(always)]
fn emit_trace(cfg: &Config, pkt: &Packet, verdict: &Verdict, seen: &Seen, point: u8, ifindex: u32) {
    // Every field is written: the event is not zeroed first.
    let _ = emit(cfg, false, |ev| {
        ev.ts_ns = seen.ts;
        ev.drop_location = 0;
        ev.drop_reason = 0;
        zero_pad(ev);
        ev.hash = seen.hash;
        ev.ifindex = ifindex;
        ev.ingress_ifindex = seen.ingress_ifindex;
        ev.orig_len = seen.len;
        ev.mark = seen.mark;
        ev.src_port = pkt.key.src_port;
        ev.dst_port = pkt.key.dst_port;
        ev.event_type = event_type::TRACE;
        ev.obs_point = point;
        ev.ct_state = verdict.state;
        ev.direction = seen.dir;
        ev.family = pkt.key.family;
        ev.l4_proto = pkt.key.proto;
        ev.tcp_flags = pkt.tcp_flags;
        ev.icmp_type = pkt.icmp_type;
        ev.icmp_code = pkt.icmp_code;
        ev.flags = pkt.flags | verdict.flags;
        copy_addresses(ev, pkt);
        Ok(())
    });
}

/// Copies the addresses and the MACs of `pkt` into `ev` a word at a time.
///
/// As array assignments they become calls to the BPF target's `memcpy` (a byte loop) or byte
/// moves, depending on what LLVM makes of the rest of the function; volatile word moves stay
/// what they are.
#[inline(always)]
fn copy_addresses(ev: &mut FlowEvent, pkt: &Packet) {
    use core::mem::offset_of;
    const {
        assert!(offset_of!(FlowEvent, src_addr) == 16 && offset_of!(FlowEvent, dst_addr) == 32);
        assert!(offset_of!(FlowEvent, src_mac) == 86 && offset_of!(FlowEvent, dst_mac) == 92);
        assert!(offset_of!(Packet, dst_mac) == 80 && offset_of!(Packet, src_mac) == 86);
        assert!(core::mem::align_of::<Packet>() == 8 && core::mem::align_of::<FlowEvent>() == 8);
    };
    let d = (ev as *mut FlowEvent).cast::<u8>();
    let s = (pkt as *const Packet).cast::<u8>();
    // SAFETY: every offset is in bounds of its struct (checked above) and aligned for the
    // width moved there (both structs are 8-byte aligned); the fields are byte arrays, which
    // accept any bytes.
    unsafe {
        let mv64 = |to: usize, from: usize| {
            d.add(to)
                .cast::<u64>()
                .write_volatile(s.add(from).cast::<u64>().read_volatile())
        };
        let mv32 = |to: usize, from: usize| {
            d.add(to)
                .cast::<u32>()
                .write_volatile(s.add(from).cast::<u32>().read_volatile())
        };
        let mv16 = |to: usize, from: usize| {
            d.add(to)
                .cast::<u16>()
                .write_volatile(s.add(from).cast::<u16>().read_volatile())
        };
        // Addresses: the key's (Packet 0 and 16) to the event's 16 and 32.
        mv64(16, 0);
        mv64(24, 8);
        mv64(32, 16);
        mv64(40, 24);
        // src_mac: Packet 86..92 to FlowEvent 86..92; dst_mac: Packet 80..86 to 92..98.
        mv16(86, 86);
        mv32(88, 88);
        mv32(92, 80);
        mv16(96, 84);
    }
}
