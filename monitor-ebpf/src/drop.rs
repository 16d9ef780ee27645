//! The `skb:kfree_skb` tracepoint: packets the kernel dropped, with the kernel's reason.
//!
//! The tracepoint fires for every network namespace of the machine and for every free that is
//! not a normal consumption (the kernel reports those through `skb:consume_skb`). We keep only
//! drops of packets on the interfaces the agent monitors, in the agent's namespace.
//!
//! The `sk_buff` and `net_device` field offsets come from the running kernel's BTF, read by the
//! agent (see `KernelOffsets`): Rust's BPF target emits no CO-RE relocations, and hard-coded
//! offsets would break on the next kernel build.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf, generated::bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use monitor_common::{
    Config, counter, ct_state, direction, event_flags, event_type, family, obs, proto,
};

use crate::maps::{config, count, emit, is_monitored};

/// `enum skb_drop_reason`: 0 = not dropped yet, 1 = consumed (a normal free).
const SKB_CONSUMED: u32 = 1;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
/// `skb->mac_header` when unset.
const HEADER_UNSET: u16 = 0xffff;

#[tracepoint]
pub fn fs_kfree_skb(ctx: TracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
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
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };

    // The event is filled in place in the ring buffer: the stack is too small for a copy.
    emit(cfg, |ev| {
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
        let ip = head + nh as u64;
        let l4 = match protocol {
            ETH_P_IP => {
                let h: [u8; 12] = rd(ip)?;
                ev.family = family::V4;
                ev.l4_proto = h[9];
                read_buf(ip + 12, &mut ev.src_addr[..4])?;
                read_buf(ip + 16, &mut ev.dst_addr[..4])?;
                if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                    ev.flags |= event_flags::FRAGMENT;
                    0
                } else {
                    ip + ((h[0] & 0x0f) as u64) * 4
                }
            }
            ETH_P_IPV6 => {
                let h: [u8; 8] = rd(ip)?;
                ev.family = family::V6;
                read_buf(ip + 8, &mut ev.src_addr)?;
                read_buf(ip + 24, &mut ev.dst_addr)?;
                let (next, l4) = ipv6_l4(ip + 40, h[6])?;
                ev.l4_proto = next;
                if l4 == 0 {
                    ev.flags |= event_flags::FRAGMENT;
                }
                l4
            }
            _ => 0,
        };
        if l4 != 0 {
            // Best effort: the drop is reported even if the L4 header cannot be read.
            if let Ok(h) = rd::<[u8; 14]>(l4) {
                match ev.l4_proto {
                    proto::TCP | proto::UDP | proto::SCTP => {
                        ev.src_port = u16::from_be_bytes([h[0], h[1]]);
                        ev.dst_port = u16::from_be_bytes([h[2], h[3]]);
                        if ev.l4_proto == proto::TCP {
                            ev.tcp_flags = h[13];
                        }
                        ev.flags |= event_flags::HAS_L4;
                    }
                    proto::ICMP | proto::ICMPV6 => {
                        ev.icmp_type = h[0];
                        ev.icmp_code = h[1];
                        ev.flags |= event_flags::HAS_L4;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    })
}

/// IPv6 extension headers stepped over, as in the TC parser.
const MAX_IPV6_EXT: usize = 4;

/// Steps over the IPv6 extension headers that start at `off` (`next` is the IPv6 header's
/// next-header field): the upper-layer protocol and the address of its header, or 0 for a
/// fragment that is not the first (it has no L4 header).
#[inline(always)]
fn ipv6_l4(mut off: u64, mut next: u8) -> Result<(u8, u64), i32> {
    for _ in 0..MAX_IPV6_EXT {
        match next {
            // Hop-by-hop, routing, destination options: 8-byte units, not counting the first 8.
            0 | 43 | 60 => {
                let e: [u8; 2] = rd(off)?;
                next = e[0];
                off += (e[1] as u64 + 1) * 8;
            }
            // Fragment: fixed 8 bytes; only the first fragment carries the L4 header.
            44 => {
                let e: [u8; 4] = rd(off)?;
                next = e[0];
                off += 8;
                if u16::from_be_bytes([e[2], e[3]]) >> 3 != 0 {
                    return Ok((next, 0));
                }
            }
            // Authentication header: 4-byte units, not counting the first 8.
            51 => {
                let e: [u8; 2] = rd(off)?;
                next = e[0];
                off += (e[1] as u64 + 2) * 4;
            }
            _ => break,
        }
    }
    Ok((next, off))
}

#[inline(always)]
fn read_buf(addr: u64, dst: &mut [u8]) -> Result<(), i32> {
    // SAFETY: as for `rd`.
    unsafe { bpf_probe_read_kernel_buf(addr as *const u8, dst) }
}
