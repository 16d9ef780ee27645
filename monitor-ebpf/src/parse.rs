//! Header parsing for the TC programs.
//!
//! Two readers behind one parser: [`Linear`] reads the headers in place (direct packet access,
//! a bounds check and a load: a few instructions), [`Skb`] copies them with
//! `bpf_skb_load_bytes`, which also works when headers are not in the linear part of the skb
//! (some GSO or paged packets) but is a helper call per read. [`parse`] tries the first and falls
//! back to the second only when a header lies beyond the linear part. Offsets are small
//! constants or derived from header-length fields that are range-checked before use, so the
//! verifier sees bounded values.

use core::mem::size_of;

use aya_ebpf::programs::TcContext;
use monitor_common::{CtKey, event_flags, family, proto};

use crate::maps::zero_words;

/// Reads `T` at a byte offset of the packet (from the Ethernet header).
trait Bytes {
    fn load<T: Copy>(&self, off: usize) -> Result<T, ParseError>;
}

/// The linear part of the skb, read in place.
struct Linear {
    data: usize,
    end: usize,
}

impl Bytes for Linear {
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Result<T, ParseError> {
        let at = self.data + off;
        if at + size_of::<T>() > self.end {
            return Err(ParseError::Truncated);
        }
        // SAFETY: `at .. at + size_of::<T>()` is inside the packet's linear data (checked just
        // above, the check the verifier wants to see); `T` is plain bytes, read unaligned.
        Ok(unsafe { core::ptr::read_unaligned(at as *const T) })
    }
}

/// The whole packet, through `bpf_skb_load_bytes`.
struct Skb<'a>(&'a TcContext);

impl Bytes for Skb<'_> {
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Result<T, ParseError> {
        self.0.load::<T>(off).map_err(|_| ParseError::Truncated)
    }
}

/// What the programs need from one packet.
///
/// Aligned to 8 so that it is zeroed with word stores (see [`zero_words`]).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Packet {
    /// The tuple as it appears on the wire (source -> destination).
    pub key: CtKey,
    /// For ICMP errors: the tuple of the packet the error is about, as that packet was sent.
    pub inner: CtKey,
    /// `inner` is set.
    pub has_inner: bool,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Bits of `event_flags` (HAS_L4, TCP_NS, FRAGMENT).
    pub flags: u8,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// Why a packet was not parsed.
pub enum ParseError {
    /// Not IPv4 or IPv6 (ARP, LLDP…): not traced, only counted.
    NotIp,
    /// A header was cut short.
    Truncated,
}

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// IPv6 extension headers we step over (hop-by-hop, routing, fragment, AH, destination options).
const MAX_IPV6_EXT: usize = 4;

#[inline(always)]
fn be16(b0: u8, b1: u8) -> u16 {
    u16::from_be_bytes([b0, b1])
}

/// Parses Ethernet, IPv4/IPv6 and the L4 header of the packet in `ctx` into `pkt`, which lives
/// in a per-CPU map rather than on the 512-byte BPF stack.
///
/// In place when the headers are in the linear part of the skb (nearly always on veths and
/// uplinks: the stack pulls the headers it parsed itself), else through `bpf_skb_load_bytes`.
#[inline(always)]
pub fn parse(ctx: &TcContext, pkt: &mut Packet) -> Result<(), ParseError> {
    let linear = Linear {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    match parse_with(&linear, pkt) {
        Err(ParseError::Truncated) => parse_with(&Skb(ctx), pkt),
        other => other,
    }
}

#[inline(always)]
fn parse_with<B: Bytes>(ctx: &B, pkt: &mut Packet) -> Result<(), ParseError> {
    // SAFETY: `pkt` is a valid, exclusive, 8-byte aligned `Packet` of integers and byte arrays.
    unsafe { zero_words(pkt) };
    load_into::<6, _>(ctx, 0, &mut pkt.dst_mac)?;
    load_into::<6, _>(ctx, 6, &mut pkt.src_mac)?;
    let ethertype: [u8; 2] = ctx.load(12)?;
    let l4_off = match be16(ethertype[0], ethertype[1]) {
        ETH_P_IP => parse_ipv4(ctx, ETH_HLEN, pkt)?,
        ETH_P_IPV6 => parse_ipv6(ctx, ETH_HLEN, pkt)?,
        _ => return Err(ParseError::NotIp),
    };
    if let Some(off) = l4_off {
        parse_l4(ctx, off, pkt)?;
    }
    Ok(())
}

/// Copies `N` bytes at `off` into `dst` (the first `N` bytes of it). A fixed-size load:
/// `TcContext::load_bytes` computes a length the verifier may see as possibly zero.
#[inline(always)]
fn load_into<const N: usize, B: Bytes>(
    ctx: &B,
    off: usize,
    dst: &mut [u8],
) -> Result<(), ParseError> {
    let v: [u8; N] = ctx.load(off)?;
    if let Some(d) = dst.get_mut(..N) {
        d.copy_from_slice(&v);
    }
    Ok(())
}

/// Fills the addresses and protocol; returns the L4 offset, or `None` for a non-first fragment.
#[inline(always)]
fn parse_ipv4<B: Bytes>(
    ctx: &B,
    off: usize,
    pkt: &mut Packet,
) -> Result<Option<usize>, ParseError> {
    let ip: [u8; 12] = ctx.load(off)?;
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ihl < 20 {
        return Err(ParseError::Truncated);
    }
    pkt.key.family = family::V4;
    pkt.key.proto = ip[9];
    load_into::<4, _>(ctx, off + 12, &mut pkt.key.src_addr)?;
    load_into::<4, _>(ctx, off + 16, &mut pkt.key.dst_addr)?;
    let frag_offset = be16(ip[6], ip[7]) & 0x1fff;
    if frag_offset != 0 {
        pkt.flags |= event_flags::FRAGMENT;
        return Ok(None);
    }
    // ihl is at most 60: the verifier sees a bounded offset.
    Ok(Some(off + (ihl & 0x3c)))
}

#[inline(always)]
fn parse_ipv6<B: Bytes>(
    ctx: &B,
    off: usize,
    pkt: &mut Packet,
) -> Result<Option<usize>, ParseError> {
    let ip: [u8; 8] = ctx.load(off)?;
    pkt.key.family = family::V6;
    load_into::<16, _>(ctx, off + 8, &mut pkt.key.src_addr)?;
    load_into::<16, _>(ctx, off + 24, &mut pkt.key.dst_addr)?;
    let mut next = ip[6];
    let mut l4 = off + 40;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, not counting
            // the first 8.
            0 | 43 | 60 => {
                let h: [u8; 2] = ctx.load(l4)?;
                next = h[0];
                l4 += (h[1] as usize + 1) * 8;
            }
            // Fragment header: fixed 8 bytes; only the first fragment has the L4 header.
            44 => {
                let h: [u8; 4] = ctx.load(l4)?;
                next = h[0];
                l4 += 8;
                if be16(h[2], h[3]) >> 3 != 0 {
                    pkt.key.proto = next;
                    pkt.flags |= event_flags::FRAGMENT;
                    return Ok(None);
                }
            }
            // Authentication header: length in 4-byte units, not counting the first 8.
            51 => {
                let h: [u8; 2] = ctx.load(l4)?;
                next = h[0];
                l4 += (h[1] as usize + 2) * 4;
            }
            _ => break,
        }
    }
    pkt.key.proto = next;
    Ok(Some(l4))
}

#[inline(always)]
fn parse_l4<B: Bytes>(ctx: &B, off: usize, pkt: &mut Packet) -> Result<(), ParseError> {
    match pkt.key.proto {
        proto::TCP => {
            let h: [u8; 14] = ctx.load(off)?;
            pkt.key.src_port = be16(h[0], h[1]);
            pkt.key.dst_port = be16(h[2], h[3]);
            pkt.tcp_flags = h[13];
            if h[12] & 1 != 0 {
                pkt.flags |= event_flags::TCP_NS;
            }
        }
        proto::UDP | proto::SCTP => {
            let h: [u8; 4] = ctx.load(off)?;
            pkt.key.src_port = be16(h[0], h[1]);
            pkt.key.dst_port = be16(h[2], h[3]);
        }
        proto::ICMP => {
            let h: [u8; 8] = ctx.load(off)?;
            pkt.icmp_type = h[0];
            pkt.icmp_code = h[1];
            let id = be16(h[4], h[5]);
            match h[0] {
                // Echo request: the identifier plays the source port, so that the reply's
                // reversed tuple finds the request's entry.
                8 => pkt.key.src_port = id,
                0 => pkt.key.dst_port = id,
                // Destination unreachable, source quench, time exceeded, parameter problem.
                3 | 4 | 11 | 12 => parse_inner_ipv4(ctx, off + 8, pkt),
                _ => {}
            }
        }
        proto::ICMPV6 => {
            let h: [u8; 8] = ctx.load(off)?;
            pkt.icmp_type = h[0];
            pkt.icmp_code = h[1];
            let id = be16(h[4], h[5]);
            match h[0] {
                128 => pkt.key.src_port = id,
                129 => pkt.key.dst_port = id,
                // Destination unreachable, packet too big, time exceeded, parameter problem.
                1..=4 => parse_inner_ipv6(ctx, off + 8, pkt),
                _ => {}
            }
        }
        _ => return Ok(()),
    }
    pkt.flags |= event_flags::HAS_L4;
    Ok(())
}

/// The packet quoted in an ICMPv4 error. Best effort: a short quote leaves `has_inner` false.
#[inline(always)]
fn parse_inner_ipv4<B: Bytes>(ctx: &B, off: usize, pkt: &mut Packet) {
    let Ok(ip) = ctx.load::<[u8; 12]>(off) else {
        return;
    };
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ihl < 20 {
        return;
    }
    pkt.inner.family = family::V4;
    pkt.inner.proto = ip[9];
    if load_into::<4, _>(ctx, off + 12, &mut pkt.inner.src_addr).is_err()
        || load_into::<4, _>(ctx, off + 16, &mut pkt.inner.dst_addr).is_err()
    {
        return;
    }
    let Ok(l4) = ctx.load::<[u8; 8]>(off + (ihl & 0x3c)) else {
        return;
    };
    set_inner_ports(pkt, &l4, proto::ICMP, 8);
    pkt.has_inner = true;
}

#[inline(always)]
fn parse_inner_ipv6<B: Bytes>(ctx: &B, off: usize, pkt: &mut Packet) {
    let Ok(ip) = ctx.load::<[u8; 8]>(off) else {
        return;
    };
    pkt.inner.family = family::V6;
    pkt.inner.proto = ip[6];
    if load_into::<16, _>(ctx, off + 8, &mut pkt.inner.src_addr).is_err()
        || load_into::<16, _>(ctx, off + 24, &mut pkt.inner.dst_addr).is_err()
    {
        return;
    }
    let Ok(l4) = ctx.load::<[u8; 8]>(off + 40) else {
        return;
    };
    set_inner_ports(pkt, &l4, proto::ICMPV6, 128);
    pkt.has_inner = true;
}

#[inline(always)]
fn set_inner_ports(pkt: &mut Packet, l4: &[u8; 8], icmp_proto: u8, echo_request: u8) {
    let p = pkt.inner.proto;
    if p == proto::TCP || p == proto::UDP || p == proto::SCTP {
        pkt.inner.src_port = be16(l4[0], l4[1]);
        pkt.inner.dst_port = be16(l4[2], l4[3]);
    } else if p == icmp_proto && l4[0] == echo_request {
        pkt.inner.src_port = be16(l4[4], l4[5]);
    }
}
