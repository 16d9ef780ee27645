//! The `skb:kfree_skb` tracepoint: packets the kernel dropped, with the kernel's reason.
//!
//! The tracepoint fires for every network namespace of the machine and for every free that is
//! not a normal consumption (the kernel reports those through `skb:consume_skb`). We keep only
//! drops of packets on the interfaces the agent monitors, in the agent's namespace.
//!
//! The `sk_buff` and `net_device` field offsets come from the running kernel's BTF, read by the
//! agent (see `KernelOffsets`): Rust's BPF target emits no CO-RE relocations, and hard-coded
//! offsets would break on the next kernel build.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_kernel_buf, generated as helpers,
        generated::bpf_ktime_get_ns,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{Config, counter, ct_state, direction, event_type, obs};
use monitor_parse::{PacketBytes, ParseError};

use crate::{
    maps::{DROP_PKT_SCRATCH, config, count, emit, filter_passes, is_monitored},
    parse::{COPY_DROP, copy_buffer},
};

/// `enum skb_drop_reason`: 0 = not dropped yet, 1 = consumed (a normal free).
const SKB_CONSUMED: u32 = 1;
/// `skb->mac_header` when unset.
const HEADER_UNSET: u16 = 0xffff;

#[tracepoint]
pub fn fs_kfree_skb(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.drops_enabled == 0 {
        return 0;
    }
    if try_drop(&ctx, cfg).is_err() {
        count(counter::DROP_READ_ERRORS);
    }
    0
}

#[inline(always)]
fn rd<T>(addr: u64) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(addr as *const T) }
}

#[inline(always)]
fn try_drop(ctx: &TracePointContext, cfg: &Config) -> Result<(), i32> {
    let off = &cfg.offsets;
    let reason: u32 = if off.tp_reason != 0 {
        // SAFETY: offsets come from the tracepoint's own format file.
        unsafe { ctx.read_at::<u32>(off.tp_reason as usize)? }
    } else {
        0
    };
    if reason != 0 && reason <= SKB_CONSUMED {
        return Ok(());
    }
    // SAFETY: as above.
    let skb: u64 = unsafe { ctx.read_at::<u64>(off.tp_skbaddr as usize)? };
    // SAFETY: as above.
    let location: u64 = unsafe { ctx.read_at::<u64>(off.tp_location as usize)? };
    if skb == 0 {
        return Ok(());
    }

    // Which interface, in which namespace?
    let dev: u64 = rd(skb + off.skb_dev as u64)?;
    if dev == 0 {
        return Ok(());
    }
    let net: u64 = rd(dev + off.netdev_nd_net as u64)?;
    let inum: u32 = rd(net + off.net_ns_inum as u64)?;
    if inum != cfg.netns_ino {
        return Ok(());
    }
    let ifindex: u32 = rd(dev + off.netdev_ifindex as u64)?;
    let iif: u32 = rd(skb + off.skb_iif as u64)?;
    if !is_monitored(ifindex) && !is_monitored(iif) {
        return Ok(());
    }
    count(counter::DROPS_SEEN);

    let head: u64 = rd(skb + off.skb_head as u64)?;
    let nh: u16 = rd(skb + off.skb_network_header as u64)?;
    let mh: u16 = rd(skb + off.skb_mac_header as u64)?;
    let protocol = u16::from_be(rd::<u16>(skb + off.skb_protocol as u64)?);

    // The headers, through the TC programs' parser, from the network header on: the skb's
    // protocol says which. Its own scratch slot rather than the TC programs': nothing promises
    // that an skb is never freed (an interrupt, a nested softirq) on a CPU whose TC program is
    // between parsing and reporting.
    let pkt = DROP_PKT_SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: per-CPU scratch slot, exclusively ours while the program runs (a tracepoint
    // program does not nest on one CPU).
    let pkt = unsafe { &mut *pkt };
    pkt.clear();
    let ip = KernelBytes(head + nh as u64);
    match monitor_parse::parse_l3(&ip, 0, protocol, pkt) {
        // Best effort: the drop is reported even if the L4 header cannot be read.
        Ok(Some(l4)) => {
            let _ = monitor_parse::parse_l4(&ip, l4, pkt);
        }
        // A later fragment (no L4 header), or not IP: reported with what is known.
        Ok(None) | Err(ParseError::NotIp) => {}
        Err(ParseError::Truncated) => return Err(-1),
    }
    // The agent's `--kernel-filter` applies to drops too (a frame that is not IP has an empty
    // key: it passes only a filter without addresses, ports or protocols).
    if !filter_passes(pkt) {
        return Ok(());
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };

    // The event is filled in place in the ring buffer: the stack is too small for a copy.
    emit(cfg, true, |ev| {
        ev.ts_ns = now;
        ev.drop_location = location;
        ev.hash = rd(skb + off.skb_hash as u64)?;
        ev.ifindex = ifindex;
        ev.ingress_ifindex = iif;
        ev.orig_len = rd(skb + off.skb_len as u64)?;
        ev.drop_reason = reason;
        ev.mark = rd(skb + off.skb_mark as u64)?;
        ev.event_type = event_type::DROP;
        ev.obs_point = obs::UNKNOWN;
        ev.ct_state = ct_state::UNKNOWN;
        ev.direction = direction::UNKNOWN;
        if mh != HEADER_UNSET && mh < nh {
            read_buf(head + mh as u64, &mut ev.dst_mac)?;
            read_buf(head + mh as u64 + 6, &mut ev.src_mac)?;
        }
        ev.family = pkt.key.family;
        ev.l4_proto = pkt.key.proto;
        ev.src_addr = pkt.key.src_addr;
        ev.dst_addr = pkt.key.dst_addr;
        ev.src_port = pkt.key.src_port;
        ev.dst_port = pkt.key.dst_port;
        ev.tcp_flags = pkt.tcp_flags;
        ev.icmp_type = pkt.icmp_type;
        ev.icmp_code = pkt.icmp_code;
        ev.flags = pkt.flags;
        Ok(())
    })
}

/// Kernel memory from the packet's network header on, read with `bpf_probe_read_kernel`.
/// Reads past the end of the packet are not detected (the skb's tail follows): the tracepoint
/// reports what it finds, best effort, as for every field it reads.
struct KernelBytes(u64);

impl PacketBytes for KernelBytes {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Result<[u8; N], ParseError> {
        // Into a per-CPU map buffer, not the stack: see `COPY_SCRATCH`.
        let buf = copy_buffer::<N>(COPY_DROP)?;
        // SAFETY: `buf` points to at least N writable bytes of a per-CPU map value; the helper
        // copes with any source address.
        let r = unsafe {
            helpers::bpf_probe_read_kernel(
                buf.cast(),
                N as u32,
                (self.0 + off as u64) as *const c_void,
            )
        };
        if r != 0 {
            return Err(ParseError::Truncated);
        }
        // SAFETY: the helper wrote the N bytes; a byte array has no alignment needs.
        Ok(unsafe { core::ptr::read_unaligned(buf.cast::<[u8; N]>()) })
    }
}

#[inline(always)]
fn read_buf(addr: u64, dst: &mut [u8]) -> Result<(), i32> {
    // SAFETY: as for `rd`.
    unsafe { bpf_probe_read_kernel_buf(addr as *const u8, dst) }
}
