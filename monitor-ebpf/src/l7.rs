//! L7 payload capture: the first bytes of TCP and UDP payloads on the L7 ports (DNS, HTTP by
//! default), shipped as [`L7Event`]s next to the traces, for the agent's DNS and HTTP parsers.
//!
//! - Which packets: TCP or UDP, source or destination port in the agent's port set
//!   ([`L7Config`], a read-only global), with at least one byte of payload. Every other packet
//!   pays one test of a bit in that global (no helper call, no map lookup).
//! - Where: where pods send and receive, once per packet per node: at `from-endpoint`, and at
//!   `to-endpoint` unless the packet came from another local pod's veth (it was captured when
//!   that pod sent it). Host and transit traffic that touches no pod is not captured.
//! - At every aggregation level: aggregation thins out traces of the same connection, but each
//!   DNS message or HTTP request is an event of its own.
//! - How much: the payload's first `snap_len` bytes (at most [`L7_PAYLOAD_MAX`]); the record
//!   says how long the payload was, and is marked truncated when it was longer. One packet is
//!   one record: a DNS message or HTTP header block spanning segments is not reassembled.

use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    programs::TcContext,
};
use monitor_common::{
    L7_PAYLOAD_MAX, L7Config, L7Event, counter, event_flags, event_type, family, l7_flags, obs,
    proto, role,
};
use monitor_parse::ETH_HLEN;

use crate::{
    maps::{EVENTS, count, iface_role, zero_words},
    parse::Packet,
};

/// The L7 configuration, set by the agent at load (`EbpfLoader::override_global`), like
/// `CONFIG`: in `.rodata`, frozen before verification. Never read directly: see [`l7_config`].
#[unsafe(no_mangle)]
static L7_CONFIG: L7Config = L7Config {
    // Not all zeroes, so that the compiler keeps it in `.rodata` rather than `.bss`.
    snap_len: 1,
    ..L7Config::DISABLED
};

/// The L7 configuration the agent set at load (a volatile read of the address, for the reason
/// given at `maps::config`).
#[inline(always)]
fn l7_config() -> &'static L7Config {
    let p: *const L7Config = &raw const L7_CONFIG;
    // SAFETY: reading a local; the result points to the static, valid for the program's life.
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// What the TC hook knows about the packet besides its headers.
pub struct Hook {
    /// One of `obs`: the hook's own point.
    pub point: u8,
    /// One of `direction`.
    pub dir: u8,
    /// The hook's interface.
    pub ifindex: u32,
    /// `skb->skb_iif`.
    pub ingress_ifindex: u32,
    /// `skb->len`.
    pub len: u32,
    /// Conntrack state (`ct_state`) and extra event flags from conntrack.
    pub ct_state: u8,
    /// Extra `event_flags` from conntrack.
    pub ct_flags: u8,
}

/// Captures the payload of `pkt` if its port is an L7 port (see the module's documentation).
#[inline(always)]
pub fn capture(ctx: &TcContext, pkt: &Packet, hook: &Hook) {
    let cfg = l7_config();
    // The agent's constant: with capture disabled the verifier removes everything below.
    if cfg.snap_len == 0 || pkt.flags & event_flags::HAS_L4 == 0 {
        return;
    }
    let ports = match pkt.key.proto {
        proto::TCP => &cfg.tcp_ports,
        proto::UDP => &cfg.udp_ports,
        _ => return,
    };
    let has = |port: u16| {
        ports
            .get(usize::from(port >> 3))
            .is_some_and(|b| b & (1 << (port & 7)) != 0)
    };
    if !has(pkt.key.dst_port) && !has(pkt.key.src_port) {
        return;
    }
    // Once per packet per node, where pods are.
    match hook.point {
        obs::FROM_ENDPOINT => {}
        obs::TO_ENDPOINT if iface_role(hook.ingress_ifindex) != role::ENDPOINT => {}
        _ => return,
    }
    let _ = copy(ctx, pkt, hook, cfg.snap_len);
}

/// Reserves, fills and submits the record; `Err` when the packet has no payload or a read
/// fails (the reservation is then discarded).
#[inline(always)]
fn copy(ctx: &TcContext, pkt: &Packet, hook: &Hook, snap_len: u32) -> Result<(), ()> {
    let l4 = usize::from(pkt.l4_off);
    let l4_len = if pkt.key.proto == proto::UDP {
        8
    } else {
        // TCP data offset, in 4-byte words.
        let b: [u8; 1] = ctx.load(l4 + 12).map_err(|_| ())?;
        let doff = usize::from(b[0] >> 4) * 4;
        if doff < 20 {
            return Err(());
        }
        doff
    };
    // Where the IP packet ends, from its own length: frames may carry link-layer padding.
    let ip_end = if pkt.key.family == family::V4 {
        let b: [u8; 2] = ctx.load(ETH_HLEN + 2).map_err(|_| ())?;
        ETH_HLEN + usize::from(u16::from_be_bytes(b))
    } else {
        let b: [u8; 2] = ctx.load(ETH_HLEN + 4).map_err(|_| ())?;
        ETH_HLEN + 40 + usize::from(u16::from_be_bytes(b))
    };
    let end = core::cmp::min(ip_end, hook.len as usize);
    let payload_off = l4 + l4_len;
    if end <= payload_off {
        return Err(());
    }
    let payload_len = (end - payload_off) as u32;
    let n = core::cmp::min(payload_len, snap_len);
    if n == 0 || n as usize > L7_PAYLOAD_MAX {
        return Err(());
    }
    // For the verifier: a size in [1, L7_PAYLOAD_MAX] it can see (a range check alone may be
    // compiled into a test on `n - 1` that leaves `n` itself unbounded). Equal to `n` here.
    let n = ((n - 1) & (L7_PAYLOAD_MAX as u32 - 1)) + 1;
    let Some(mut slot) = EVENTS.reserve::<L7Event>(0) else {
        count(counter::RING_LOST);
        return Ok(());
    };
    let rec = slot.as_mut_ptr();
    // SAFETY: the slot is a valid, exclusively owned L7Event-sized reservation. The header is
    // zeroed before it is filled; of the payload only the copied bytes are meaningful (the
    // record says how many), so the rest is left as the ring had it.
    let copied = unsafe {
        zero_words(&raw mut (*rec).ev);
        let ev = &mut (*rec).ev;
        ev.ts_ns = bpf_ktime_get_ns();
        ev.src_addr = pkt.key.src_addr;
        ev.dst_addr = pkt.key.dst_addr;
        ev.ifindex = hook.ifindex;
        ev.ingress_ifindex = hook.ingress_ifindex;
        ev.orig_len = hook.len;
        ev.src_port = pkt.key.src_port;
        ev.dst_port = pkt.key.dst_port;
        ev.event_type = event_type::L7;
        ev.obs_point = hook.point;
        ev.ct_state = hook.ct_state;
        ev.direction = hook.dir;
        ev.family = pkt.key.family;
        ev.l4_proto = pkt.key.proto;
        ev.tcp_flags = pkt.tcp_flags;
        ev.flags = pkt.flags | hook.ct_flags;
        ev.src_mac = pkt.src_mac;
        ev.dst_mac = pkt.dst_mac;
        (*rec).payload_len = payload_len;
        (*rec).captured_len = n as u16;
        (*rec).l7_flags = if payload_len > n {
            l7_flags::TRUNCATED
        } else {
            0
        };
        (*rec)._pad = [0];
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            payload_off as u32,
            (&raw mut (*rec).payload).cast(),
            n,
        )
    };
    if copied != 0 {
        slot.discard(0);
        return Err(());
    }
    // No wake-up: the reader's timer, or the next trace's threshold test, picks it up.
    slot.submit(aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64);
    count(counter::L7_CAPTURED);
    Ok(())
}
