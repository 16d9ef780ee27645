//! Packet header parsing for flowscope's kernel programs, testable on the host.
//!
//! The parser reads through [`PacketBytes`], a fixed-size byte reader: `monitor-ebpf` implements
//! it over the skb (direct packet access, or `bpf_skb_load_bytes`) and over kernel memory (the
//! drop tracepoint), and `[u8]` implements it here, so that `cargo test -p monitor-parse` runs
//! the very code the kernel runs over byte fixtures.
//!
//! Written for the BPF verifier: every function is `#[inline(always)]` (the BPF target has no
//! cheap calls and the verifier follows constants better inside one function), every read has a
//! constant size, offsets are constants or derived from header-length fields that are masked or
//! range-checked before use, and the one loop (IPv6 extension headers) has a constant bound.
//! It must stay `no_std`, allocation-free, and depend on nothing but `monitor-common`.
#![no_std]

use monitor_common::{CtKey, event_flags, family, proto};

#[cfg(test)]
mod tests;

/// Why a packet was not parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4 or IPv6 (ARP, LLDP…): not traced, only counted.
    NotIp,
    /// A header was cut short (or an IPv4 header length below 20).
    Truncated,
}

/// Reads the packet's bytes at an offset: from the Ethernet header for [`parse`], from the
/// network header for [`parse_l3`].
pub trait PacketBytes {
    /// The `N` bytes at `off`, or [`ParseError::Truncated`] if they are not all in the packet.
    fn load<const N: usize>(&self, off: usize) -> Result<[u8; N], ParseError>;
}

/// A byte slice holding the packet (the host's tests, captures).
impl PacketBytes for [u8] {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Result<[u8; N], ParseError> {
        let end = off.checked_add(N).ok_or(ParseError::Truncated)?;
        match self.get(off..end) {
            Some(b) => b.try_into().map_err(|_| ParseError::Truncated),
            None => Err(ParseError::Truncated),
        }
    }
}

/// What the programs need from one packet.
///
/// Aligned to 8 so that [`Packet::clear`] zeroes it with word stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct Packet {
    /// The tuple as it appears on the wire (source -> destination).
    pub key: CtKey,
    /// For ICMP errors: the tuple of the packet the error is about, as that packet was sent.
    pub inner: CtKey,
    /// `inner` is set.
    pub has_inner: bool,
    /// TCP flags byte.
    pub tcp_flags: u8,
    /// ICMP / ICMPv6 type.
    pub icmp_type: u8,
    /// ICMP / ICMPv6 code.
    pub icmp_code: u8,
    /// Bits of `event_flags` (HAS_L4, TCP_NS, FRAGMENT).
    pub flags: u8,
    /// Ethernet source address.
    pub src_mac: [u8; 6],
    /// Ethernet destination address.
    pub dst_mac: [u8; 6],
    /// Offset of the L4 header from the start of the packet (0 when there is none): where the
    /// L7 capture finds the payload.
    pub l4_off: u16,
}

impl Packet {
    /// Zeroes every field with 8-byte stores.
    ///
    /// A struct assignment (`*self = Packet::default()`) becomes the BPF target's `memset`, a
    /// loop of one-byte stores: for this 104-byte struct that was a tenth of a TC program's run
    /// time. Volatile, so that LLVM does not turn the stores back into that `memset`.
    #[inline(always)]
    pub fn clear(&mut self) {
        const WORDS: usize = core::mem::size_of::<Packet>() / 8;
        const { assert!(core::mem::size_of::<Packet>().is_multiple_of(8)) };
        let words = (self as *mut Packet).cast::<u64>();
        let mut i = 0;
        while i < WORDS {
            // SAFETY: `self` is 8-byte aligned (repr align(8)) and WORDS * 8 bytes long; every
            // field is an integer, a byte array or a bool, for which all-zero bytes are valid.
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
            i += 1;
        }
    }
}

/// Ethernet header length (no VLAN tag: on veths and uplinks the kernel keeps tags out of the
/// packet data, in the skb's metadata).
pub const ETH_HLEN: usize = 14;
/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;

/// IPv6 extension headers stepped over (hop-by-hop, routing, fragment, AH, destination
/// options), at most this many: a constant bound for the verifier.
pub const MAX_IPV6_EXT: usize = 4;

#[inline(always)]
fn be16(b0: u8, b1: u8) -> u16 {
    u16::from_be_bytes([b0, b1])
}

/// Parses Ethernet, IPv4/IPv6 and the L4 header of a packet that starts with its Ethernet
/// header into `pkt` (cleared first).
///
/// A truncated L4 header fails the whole parse: the TC programs then retry through
/// `bpf_skb_load_bytes`, which reads beyond the linear part of the skb.
#[inline(always)]
pub fn parse<B: PacketBytes + ?Sized>(b: &B, pkt: &mut Packet) -> Result<(), ParseError> {
    pkt.clear();
    pkt.dst_mac = b.load::<6>(0)?;
    pkt.src_mac = b.load::<6>(6)?;
    let ethertype: [u8; 2] = b.load(12)?;
    if let Some(off) = parse_l3(b, ETH_HLEN, be16(ethertype[0], ethertype[1]), pkt)? {
        // At most 14 + 40 + 4 extension headers of 2 KiB each: fits in 16 bits.
        pkt.l4_off = off as u16;
        parse_l4(b, off, pkt)?;
    }
    Ok(())
}

/// Parses the IPv4 or IPv6 header at `off` (`ethertype` says which) into `pkt`'s addresses,
/// protocol and fragment flag; returns the offset of the L4 header, or `None` for a fragment
/// that is not the first (it has none).
#[inline(always)]
pub fn parse_l3<B: PacketBytes + ?Sized>(
    b: &B,
    off: usize,
    ethertype: u16,
    pkt: &mut Packet,
) -> Result<Option<usize>, ParseError> {
    match ethertype {
        ETH_P_IP => parse_ipv4(b, off, pkt),
        ETH_P_IPV6 => parse_ipv6(b, off, pkt),
        _ => Err(ParseError::NotIp),
    }
}

/// Copies `N` bytes at `off` into the first `N` bytes of `dst`. A fixed-size load: a length
/// computed from `dst` may look possibly zero to the verifier.
#[inline(always)]
fn load_into<const N: usize, B: PacketBytes + ?Sized>(
    b: &B,
    off: usize,
    dst: &mut [u8],
) -> Result<(), ParseError> {
    let v: [u8; N] = b.load(off)?;
    if let Some(d) = dst.get_mut(..N) {
        d.copy_from_slice(&v);
    }
    Ok(())
}

#[inline(always)]
fn parse_ipv4<B: PacketBytes + ?Sized>(
    b: &B,
    off: usize,
    pkt: &mut Packet,
) -> Result<Option<usize>, ParseError> {
    let ip: [u8; 12] = b.load(off)?;
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ihl < 20 {
        return Err(ParseError::Truncated);
    }
    pkt.key.family = family::V4;
    pkt.key.proto = ip[9];
    load_into::<4, _>(b, off + 12, &mut pkt.key.src_addr)?;
    load_into::<4, _>(b, off + 16, &mut pkt.key.dst_addr)?;
    let frag_offset = be16(ip[6], ip[7]) & 0x1fff;
    if frag_offset != 0 {
        pkt.flags |= event_flags::FRAGMENT;
        return Ok(None);
    }
    // ihl is at most 60: the verifier sees a bounded offset.
    Ok(Some(off + (ihl & 0x3c)))
}

#[inline(always)]
fn parse_ipv6<B: PacketBytes + ?Sized>(
    b: &B,
    off: usize,
    pkt: &mut Packet,
) -> Result<Option<usize>, ParseError> {
    let ip: [u8; 8] = b.load(off)?;
    pkt.key.family = family::V6;
    load_into::<16, _>(b, off + 8, &mut pkt.key.src_addr)?;
    load_into::<16, _>(b, off + 24, &mut pkt.key.dst_addr)?;
    let mut next = ip[6];
    let mut l4 = off + 40;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, not counting
            // the first 8.
            0 | 43 | 60 => {
                let h: [u8; 2] = b.load(l4)?;
                next = h[0];
                l4 += (h[1] as usize + 1) * 8;
            }
            // Fragment header: fixed 8 bytes; only the first fragment has the L4 header.
            44 => {
                let h: [u8; 4] = b.load(l4)?;
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
                let h: [u8; 2] = b.load(l4)?;
                next = h[0];
                l4 += (h[1] as usize + 2) * 4;
            }
            _ => break,
        }
    }
    pkt.key.proto = next;
    Ok(Some(l4))
}

/// Parses the L4 header at `off` for `pkt.key.proto`: ports, TCP flags, ICMP type and code
/// (the echo identifier plays a port), and the tuple quoted by an ICMP error. Sets `HAS_L4`
/// when the protocol is one of these; other protocols are left alone.
#[inline(always)]
pub fn parse_l4<B: PacketBytes + ?Sized>(
    b: &B,
    off: usize,
    pkt: &mut Packet,
) -> Result<(), ParseError> {
    match pkt.key.proto {
        proto::TCP => {
            let h: [u8; 14] = b.load(off)?;
            pkt.key.src_port = be16(h[0], h[1]);
            pkt.key.dst_port = be16(h[2], h[3]);
            pkt.tcp_flags = h[13];
            if h[12] & 1 != 0 {
                pkt.flags |= event_flags::TCP_NS;
            }
        }
        proto::UDP | proto::SCTP => {
            let h: [u8; 4] = b.load(off)?;
            pkt.key.src_port = be16(h[0], h[1]);
            pkt.key.dst_port = be16(h[2], h[3]);
        }
        proto::ICMP => {
            let h: [u8; 8] = b.load(off)?;
            pkt.icmp_type = h[0];
            pkt.icmp_code = h[1];
            let id = be16(h[4], h[5]);
            match h[0] {
                // Echo request: the identifier plays the source port, so that the reply's
                // reversed tuple finds the request's entry.
                8 => pkt.key.src_port = id,
                0 => pkt.key.dst_port = id,
                // Destination unreachable, source quench, time exceeded, parameter problem.
                3 | 4 | 11 | 12 => parse_inner_ipv4(b, off + 8, pkt),
                _ => {}
            }
        }
        proto::ICMPV6 => {
            let h: [u8; 8] = b.load(off)?;
            pkt.icmp_type = h[0];
            pkt.icmp_code = h[1];
            let id = be16(h[4], h[5]);
            match h[0] {
                128 => pkt.key.src_port = id,
                129 => pkt.key.dst_port = id,
                // Destination unreachable, packet too big, time exceeded, parameter problem.
                1..=4 => parse_inner_ipv6(b, off + 8, pkt),
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
fn parse_inner_ipv4<B: PacketBytes + ?Sized>(b: &B, off: usize, pkt: &mut Packet) {
    let Ok(ip) = b.load::<12>(off) else {
        return;
    };
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ihl < 20 {
        return;
    }
    pkt.inner.family = family::V4;
    pkt.inner.proto = ip[9];
    if load_into::<4, _>(b, off + 12, &mut pkt.inner.src_addr).is_err()
        || load_into::<4, _>(b, off + 16, &mut pkt.inner.dst_addr).is_err()
    {
        return;
    }
    let Ok(l4) = b.load::<8>(off + (ihl & 0x3c)) else {
        return;
    };
    set_inner_ports(pkt, &l4, proto::ICMP, 8);
    pkt.has_inner = true;
}

/// The packet quoted in an ICMPv6 error (its extension headers are not stepped over: the
/// quoted tuple is then left without ports). Best effort, like [`parse_inner_ipv4`].
#[inline(always)]
fn parse_inner_ipv6<B: PacketBytes + ?Sized>(b: &B, off: usize, pkt: &mut Packet) {
    let Ok(ip) = b.load::<8>(off) else {
        return;
    };
    pkt.inner.family = family::V6;
    pkt.inner.proto = ip[6];
    if load_into::<16, _>(b, off + 8, &mut pkt.inner.src_addr).is_err()
        || load_into::<16, _>(b, off + 24, &mut pkt.inner.dst_addr).is_err()
    {
        return;
    }
    let Ok(l4) = b.load::<8>(off + 40) else {
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
