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
/// Aligned to 8 so that [`Packet::clear`] zeroes it with word stores; the MACs start at an
/// 8-byte boundary so that they are written with word stores too (they are copied from the
/// packet on every parse).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct Packet {
    /// The tuple as it appears on the wire (source -> destination).
    pub key: CtKey,
    /// For ICMP errors: the tuple of the packet the error is about, as that packet was sent.
    /// All zeroes unless `has_inner` (the parser clears what a previous packet left).
    pub inner: CtKey,
    /// Ethernet destination address.
    pub dst_mac: [u8; 6],
    /// Ethernet source address.
    pub src_mac: [u8; 6],
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
    /// Offset of the L4 header from the start of the packet (0 when there is none): where the
    /// L7 capture finds the payload. In the struct's tail padding: the size stays 104.
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

    /// Clears what [`parse`] does not always overwrite: the fields after the MACs, and the
    /// quoted tuple if a previous packet left one (`inner` is written only for ICMP errors, and
    /// its family first, so a zero family and no `has_inner` mean that it is still all zeroes).
    /// The key is written whole by the L3 parser, the MACs by [`parse`]: on the common path
    /// this is one or two stores where [`Packet::clear`] is thirteen.
    #[inline(always)]
    fn reset(&mut self) {
        if self.has_inner || self.inner.family != 0 {
            put::<40, u64>(self, 0);
            put::<48, u64>(self, 0);
            put::<56, u64>(self, 0);
            put::<64, u64>(self, 0);
            put::<72, u64>(self, 0);
        }
        // has_inner, tcp_flags, icmp_type, icmp_code; then flags.
        put::<92, u32>(self, 0);
        self.flags = 0;
        self.l4_off = 0;
    }
}

// Where `put` writes: the key, the quoted key and the MACs (see `Packet`).
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Packet, key) == 0 && offset_of!(Packet, inner) == 40);
    assert!(offset_of!(CtKey, dst_addr) == 16 && offset_of!(CtKey, src_port) == 32);
    assert!(offset_of!(Packet, dst_mac) == 80 && offset_of!(Packet, src_mac) == 86);
    assert!(offset_of!(Packet, has_inner) == 92 && offset_of!(Packet, icmp_code) == 95);
    assert!(core::mem::size_of::<Packet>() == 104);
};

/// Writes `v` at byte `OFF` of `pkt` with one store (a volatile one).
///
/// Written field by field (or as a struct or array assignment), these bytes become byte
/// stores or a call to the BPF target's `memset`, a loop of one-byte stores; a word store is
/// one instruction.
#[inline(always)]
fn put<const OFF: usize, T: Copy>(pkt: &mut Packet, v: T) {
    const {
        assert!(OFF.is_multiple_of(core::mem::align_of::<T>()));
        assert!(OFF + core::mem::size_of::<T>() <= core::mem::size_of::<Packet>());
    }
    // SAFETY: `OFF` is in bounds and aligned for `T` (checked above; `Packet` is aligned to 8);
    // `T` is an integer here, and every field of `Packet` accepts any bytes (integers, byte
    // arrays, and `has_inner`, which is only ever written 0 or 1 this way).
    // Volatile: LLVM would otherwise join neighbouring stores of zeroes into a call to the
    // BPF target's `memset`.
    unsafe {
        (pkt as *mut Packet)
            .cast::<u8>()
            .add(OFF)
            .cast::<T>()
            .write_volatile(v)
    };
}

/// The bytes `at .. at + 4` of `h` as a word in memory order (one load: LLVM joins the bytes).
#[inline(always)]
fn w32<const N: usize>(h: &[u8; N], at: usize) -> u32 {
    u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

/// The bytes `at .. at + 2` of `h`, in memory order.
#[inline(always)]
fn w16<const N: usize>(h: &[u8; N], at: usize) -> u16 {
    u16::from_ne_bytes([h[at], h[at + 1]])
}

/// The bytes `at .. at + 8` of `h`, in memory order.
#[inline(always)]
fn w64<const N: usize>(h: &[u8; N], at: usize) -> u64 {
    u64::from_ne_bytes([
        h[at],
        h[at + 1],
        h[at + 2],
        h[at + 3],
        h[at + 4],
        h[at + 5],
        h[at + 6],
        h[at + 7],
    ])
}

/// The last word of a key: ports, protocol, family, padding, in memory order.
#[inline(always)]
fn key_tail(src_port: u16, dst_port: u16, proto: u8, family: u8) -> u64 {
    let s = src_port.to_ne_bytes();
    let d = dst_port.to_ne_bytes();
    u64::from_ne_bytes([s[0], s[1], d[0], d[1], proto, family, 0, 0])
}

/// Writes a key at byte `OFF` of `pkt` (0: the key, 40: the quoted key) from its addresses as
/// words in memory order (IPv4: the address in the first word's low half, zeroes after) and
/// its last word ([`key_tail`]).
#[inline(always)]
fn put_key<const OFF: usize>(pkt: &mut Packet, src: [u64; 2], dst: [u64; 2], tail: u64) {
    const { assert!(OFF == 0 || OFF == 40) };
    // Const generic arithmetic is not stable: the two keys spelled out.
    if OFF == 0 {
        put::<0, u64>(pkt, src[0]);
        put::<8, u64>(pkt, src[1]);
        put::<16, u64>(pkt, dst[0]);
        put::<24, u64>(pkt, dst[1]);
        put::<32, u64>(pkt, tail);
    } else {
        put::<40, u64>(pkt, src[0]);
        put::<48, u64>(pkt, src[1]);
        put::<56, u64>(pkt, dst[0]);
        put::<64, u64>(pkt, dst[1]);
        put::<72, u64>(pkt, tail);
    }
}

/// An IPv4 address at `at` in `h` as the two words of a key's address (memory order).
#[inline(always)]
fn v4_words<const N: usize>(h: &[u8; N], at: usize) -> [u64; 2] {
    // Zero-extended in memory order: the address's bytes first, then zeroes.
    let w = w32(h, at);
    let lo = if cfg!(target_endian = "little") {
        u64::from(w)
    } else {
        u64::from(w) << 32
    };
    [lo, 0]
}

/// An IPv6 address at `at` in `h` as two words (memory order).
#[inline(always)]
fn v6_words<const N: usize>(h: &[u8; N], at: usize) -> [u64; 2] {
    [w64(h, at), w64(h, at + 8)]
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
/// header into `pkt` (every field is written or cleared: what a previous packet left does not
/// show through).
///
/// One read per header (Ethernet, IP, L4), each field a word read and a word write, and a frame
/// that is not IP is rejected before anything but its MACs is written. A truncated L4 header fails the whole parse: the TC programs then
/// retry through `bpf_skb_load_bytes`, which reads beyond the linear part of the skb.
#[inline(always)]
pub fn parse<B: PacketBytes + ?Sized>(b: &B, pkt: &mut Packet) -> Result<(), ParseError> {
    let eth: [u8; ETH_HLEN] = b.load(0)?;
    // dst_mac at 80, src_mac at 86: two words each, aligned. Before the EtherType is looked
    // at: in the same basic block as the load, LLVM reads them as words too.
    put::<80, u32>(pkt, w32(&eth, 0));
    put::<84, u16>(pkt, w16(&eth, 4));
    put::<86, u16>(pkt, w16(&eth, 6));
    put::<88, u32>(pkt, w32(&eth, 8));
    let ethertype = be16(eth[12], eth[13]);
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return Err(ParseError::NotIp);
    }
    pkt.reset();
    if let Some(off) = parse_l3(b, ETH_HLEN, ethertype, pkt)? {
        // At most 14 + 40 + 4 extension headers of 2 KiB each: fits in 16 bits.
        pkt.l4_off = off as u16;
        parse_l4(b, off, pkt)?;
    }
    Ok(())
}

/// Parses the IPv4 or IPv6 header at `off` (`ethertype` says which) into `pkt`'s key (written
/// whole: addresses, protocol and family, ports zero until [`parse_l4`]) and fragment flag;
/// returns the offset of the L4 header, or `None` for a fragment
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

#[inline(always)]
fn parse_ipv4<B: PacketBytes + ?Sized>(
    b: &B,
    off: usize,
    pkt: &mut Packet,
) -> Result<Option<usize>, ParseError> {
    let ip: [u8; 20] = b.load(off)?;
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ihl < 20 {
        return Err(ParseError::Truncated);
    }
    put_key::<0>(
        pkt,
        v4_words(&ip, 12),
        v4_words(&ip, 16),
        key_tail(0, 0, ip[9], family::V4),
    );
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
    let ip: [u8; 40] = b.load(off)?;
    put_key::<0>(
        pkt,
        v6_words(&ip, 8),
        v6_words(&ip, 24),
        key_tail(0, 0, 0, family::V6),
    );
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
    let Ok(ip) = b.load::<20>(off) else {
        return;
    };
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ihl < 20 {
        return;
    }
    let Ok(l4) = b.load::<8>(off + (ihl & 0x3c)) else {
        return;
    };
    put_key::<40>(
        pkt,
        v4_words(&ip, 12),
        v4_words(&ip, 16),
        key_tail(0, 0, ip[9], family::V4),
    );
    set_inner_ports(pkt, &l4, proto::ICMP, 8);
    pkt.has_inner = true;
}

/// The packet quoted in an ICMPv6 error (its extension headers are not stepped over: the
/// quoted tuple is then left without ports). Best effort, like [`parse_inner_ipv4`].
#[inline(always)]
fn parse_inner_ipv6<B: PacketBytes + ?Sized>(b: &B, off: usize, pkt: &mut Packet) {
    let Ok(ip) = b.load::<40>(off) else {
        return;
    };
    let Ok(l4) = b.load::<8>(off + 40) else {
        return;
    };
    put_key::<40>(
        pkt,
        v6_words(&ip, 8),
        v6_words(&ip, 24),
        key_tail(0, 0, ip[6], family::V6),
    );
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
