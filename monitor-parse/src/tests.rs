//! Byte fixtures through the parser the kernel programs run.
//!
//! The first fixture is written out byte by byte (the lab's SYN); the others are put together
//! from header builders below, which lay out the RFC formats field by field and never call the
//! parser. Each header-kind is also checked cut short at every length.

extern crate std;

use std::{vec, vec::Vec};

use monitor_common::{event_flags, family, proto};

use super::*;

const POD_A: [u8; 4] = [10, 244, 0, 213];
const WORLD: [u8; 4] = [1, 0, 0, 1];
const MAC_POD: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0xd5];
const MAC_GW: [u8; 6] = [0xfe, 0x7e, 0x1b, 0x2c, 0x3d, 0x4e];
const POD_A6: [u8; 16] = [
    0xfd, 0x00, 0x00, 0x10, 0x02, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x13,
];
const WORLD6: [u8; 16] = [
    0x26, 0x06, 0x47, 0x00, 0x47, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x01,
];

/// pod-a's SYN to 1.0.0.1:80 from the lab (10.244.0.213:59242 -> 1.0.0.1:80, options cut).
const LAB_SYN: [u8; 54] = [
    // Ethernet: to the gateway's MAC, from pod-a's, IPv4.
    0xfe, 0x7e, 0x1b, 0x2c, 0x3d, 0x4e, 0x0a, 0x58, 0x0a, 0xf4, 0x00, 0xd5, 0x08, 0x00,
    // IPv4: IHL 5, total length 40, id 0x1c46, DF, TTL 64, TCP, checksum, addresses.
    0x45, 0x00, 0x00, 0x28, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0x0a, 0xf4, 0x00, 0xd5,
    0x01, 0x00, 0x00, 0x01,
    // TCP: 59242 -> 80, seq, ack 0, data offset 5, SYN, window 64240.
    0xe7, 0x6a, 0x00, 0x50, 0x5b, 0x2a, 0x10, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xfa, 0xf0,
    0x00, 0x00, 0x00, 0x00,
];

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&a);
    out
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&MAC_GW);
    b.extend_from_slice(&MAC_POD);
    b.extend_from_slice(&ethertype.to_be_bytes());
    b
}

/// An IPv4 header (with `options` words of options) carrying `payload`.
fn ipv4(
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    frag: u16,
    options: usize,
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 5 + options;
    let mut b = Vec::new();
    b.push(0x40 | ihl as u8);
    b.push(0);
    b.extend_from_slice(&((ihl * 4 + payload.len()) as u16).to_be_bytes());
    b.extend_from_slice(&[0x12, 0x34]);
    b.extend_from_slice(&frag.to_be_bytes());
    b.extend_from_slice(&[64, proto, 0, 0]);
    b.extend_from_slice(&src);
    b.extend_from_slice(&dst);
    // Options: router alert, then no-ops.
    for i in 0..options {
        b.extend_from_slice(if i == 0 {
            &[0x94, 0x04, 0, 0]
        } else {
            &[1, 1, 1, 1]
        });
    }
    b.extend_from_slice(payload);
    b
}

/// An IPv6 header whose next header is `next`, followed by `rest` (extension headers and L4).
fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], rest: &[u8]) -> Vec<u8> {
    let mut b = vec![0x60, 0, 0, 0];
    b.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    b.push(next);
    b.push(64);
    b.extend_from_slice(&src);
    b.extend_from_slice(&dst);
    b.extend_from_slice(rest);
    b
}

/// An options extension header (hop-by-hop or destination options) of `8 * (1 + len)` bytes.
fn ext_options(next: u8, len: u8) -> Vec<u8> {
    let mut b = vec![next, len];
    // PadN filling the rest.
    let pad = 8 * (len as usize + 1) - 2;
    b.push(1);
    b.push(pad as u8 - 2);
    b.resize(2 + pad, 0);
    b
}

fn ext_fragment(next: u8, offset_units: u16, more: bool) -> Vec<u8> {
    let mut b = vec![next, 0];
    b.extend_from_slice(&((offset_units << 3) | more as u16).to_be_bytes());
    b.extend_from_slice(&0xdead_beef_u32.to_be_bytes());
    b
}

/// An authentication header with `words` 32-bit words of ICV after the fixed 12 bytes.
fn ext_ah(next: u8, icv_words: u8) -> Vec<u8> {
    let len = 1 + icv_words; // (total / 4) - 2, total = 12 + 4 * icv_words
    let mut b = vec![next, len, 0, 0];
    b.extend_from_slice(&0x100_u32.to_be_bytes());
    b.extend_from_slice(&1_u32.to_be_bytes());
    b.resize(12 + 4 * icv_words as usize, 0xaa);
    b
}

fn tcp(sport: u16, dport: u16, flags: u8, ns: bool) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    b.push(0x50 | ns as u8);
    b.push(flags);
    b.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
    b
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(payload);
    b
}

/// An SCTP common header with one INIT chunk's first bytes.
fn sctp(sport: u16, dport: u16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
    b.extend_from_slice(&[1, 0, 0, 20]);
    b
}

/// ICMP (or ICMPv6) header: type, code, checksum, then the 4-byte rest (echo id and sequence).
fn icmp(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = vec![ty, code, 0, 0];
    b.extend_from_slice(&rest);
    b.extend_from_slice(body);
    b
}

fn frame(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut b = eth(ethertype);
    b.extend_from_slice(l3);
    b
}

fn parsed(bytes: &[u8]) -> Packet {
    let mut pkt = Packet::default();
    // Garbage first: parse must clear what a previous packet left in the scratch.
    pkt.key.src_port = 0xffff;
    pkt.has_inner = true;
    pkt.inner.proto = 99;
    parse(bytes, &mut pkt).unwrap_or_else(|e| panic!("{e:?} parsing {bytes:02x?}"));
    pkt
}

/// Every strict prefix of `bytes` shorter than `needed` fails as truncated, and no prefix
/// panics. `needed` is where the headers the parser must read end.
fn truncations_fail(bytes: &[u8], needed: usize) {
    for len in 0..needed {
        let mut pkt = Packet::default();
        assert_eq!(
            parse(&bytes[..len], &mut pkt),
            Err(ParseError::Truncated),
            "cut at {len} of {needed}"
        );
    }
    let mut pkt = Packet::default();
    assert_eq!(
        parse(&bytes[..needed], &mut pkt),
        Ok(()),
        "{needed} bytes are enough"
    );
}

#[test]
fn lab_syn() {
    let p = parsed(&LAB_SYN);
    assert_eq!(p.dst_mac, MAC_GW);
    assert_eq!(p.src_mac, MAC_POD);
    assert_eq!(p.key.family, family::V4);
    assert_eq!(p.key.proto, proto::TCP);
    assert_eq!(p.key.src_addr, v4(POD_A));
    assert_eq!(p.key.dst_addr, v4(WORLD));
    assert_eq!((p.key.src_port, p.key.dst_port), (59242, 80));
    assert_eq!(p.tcp_flags, monitor_common::tcp::SYN);
    assert_eq!(p.flags, event_flags::HAS_L4);
    assert!(!p.has_inner);
    assert_eq!(p.inner, CtKey::default(), "cleared");
    assert_eq!(
        p.l4_off,
        14 + 20,
        "the TCP header follows Ethernet and IPv4"
    );
    // Ethernet, IPv4, and the first 14 bytes of TCP (through the flags).
    truncations_fail(&LAB_SYN, 14 + 20 + 14);
}

#[test]
fn ipv4_tcp_with_options_and_ns() {
    let ack = monitor_common::tcp::ACK;
    let b = frame(
        ETH_P_IP,
        &ipv4(
            proto::TCP,
            WORLD,
            POD_A,
            0x4000,
            2,
            &tcp(80, 59242, ack, true),
        ),
    );
    let p = parsed(&b);
    assert_eq!((p.key.src_port, p.key.dst_port), (80, 59242));
    assert_eq!(p.tcp_flags, ack);
    assert_eq!(p.flags, event_flags::HAS_L4 | event_flags::TCP_NS);
    // Ethernet 14 + IPv4 28 + the 14 TCP bytes read.
    truncations_fail(&b, 14 + 28 + 14);
}

#[test]
fn ipv4_udp() {
    let b = frame(
        ETH_P_IP,
        &ipv4(proto::UDP, POD_A, WORLD, 0, 0, &udp(41000, 53, b"q")),
    );
    let p = parsed(&b);
    assert_eq!(p.key.proto, proto::UDP);
    assert_eq!((p.key.src_port, p.key.dst_port), (41000, 53));
    assert_eq!(p.flags, event_flags::HAS_L4);
    truncations_fail(&b, 14 + 20 + 4);
}

#[test]
fn ipv4_icmp_echo_identifier_plays_the_port() {
    let req = frame(
        ETH_P_IP,
        &ipv4(
            proto::ICMP,
            POD_A,
            WORLD,
            0x4000,
            0,
            &icmp(8, 0, [0x00, 0x2a, 0, 1], b"ping"),
        ),
    );
    let p = parsed(&req);
    assert_eq!((p.icmp_type, p.icmp_code), (8, 0));
    assert_eq!((p.key.src_port, p.key.dst_port), (42, 0));
    assert_eq!(p.flags, event_flags::HAS_L4);
    truncations_fail(&req, 14 + 20 + 8);

    let reply = frame(
        ETH_P_IP,
        &ipv4(
            proto::ICMP,
            WORLD,
            POD_A,
            0,
            0,
            &icmp(0, 0, [0x00, 0x2a, 0, 1], b"ping"),
        ),
    );
    let p = parsed(&reply);
    assert_eq!((p.key.src_port, p.key.dst_port), (0, 42));
    // The reply's tuple, reversed, is the request's: the conntrack entry is found.
    assert_eq!(p.key.reversed(), parsed(&req).key);
}

#[test]
fn ipv4_icmp_error_quoting_udp() {
    // 1.0.0.1 says port unreachable about pod-a's UDP datagram 41000 -> 53.
    let quoted = ipv4(proto::UDP, POD_A, WORLD, 0, 0, &udp(41000, 53, b""));
    let b = frame(
        ETH_P_IP,
        &ipv4(
            proto::ICMP,
            WORLD,
            POD_A,
            0,
            0,
            &icmp(3, 3, [0; 4], &quoted),
        ),
    );
    let p = parsed(&b);
    assert_eq!((p.icmp_type, p.icmp_code), (3, 3));
    assert_eq!((p.key.src_port, p.key.dst_port), (0, 0));
    assert!(p.has_inner);
    assert_eq!(p.inner.family, family::V4);
    assert_eq!(p.inner.proto, proto::UDP);
    assert_eq!(p.inner.src_addr, v4(POD_A));
    assert_eq!(p.inner.dst_addr, v4(WORLD));
    assert_eq!((p.inner.src_port, p.inner.dst_port), (41000, 53));
    // The quote is best effort: cut anywhere inside it, the error still parses, without it.
    let outer = 14 + 20 + 8;
    for len in outer..b.len() {
        let mut pkt = Packet::default();
        assert_eq!(parse(&b[..len], &mut pkt), Ok(()), "cut at {len}");
        assert!(!pkt.has_inner, "cut at {len}: a partial quote is not used");
        assert_eq!(pkt.icmp_type, 3);
    }
    truncations_fail(&b, outer);
}

#[test]
fn ipv4_icmp_error_quoting_an_echo_request() {
    let quoted = ipv4(
        proto::ICMP,
        POD_A,
        WORLD,
        0,
        0,
        &icmp(8, 0, [0, 7, 0, 1], b""),
    );
    let b = frame(
        ETH_P_IP,
        &ipv4(
            proto::ICMP,
            WORLD,
            POD_A,
            0,
            0,
            &icmp(11, 0, [0; 4], &quoted),
        ),
    );
    let p = parsed(&b);
    assert!(p.has_inner);
    assert_eq!(p.inner.proto, proto::ICMP);
    assert_eq!(
        (p.inner.src_port, p.inner.dst_port),
        (7, 0),
        "the echo id, as the request's key"
    );
}

#[test]
fn ipv4_fragments() {
    // A later fragment: addresses and protocol, no L4 header (its bytes are payload).
    let later = frame(
        ETH_P_IP,
        &ipv4(proto::UDP, POD_A, WORLD, 185, 0, &[0xaa; 16]),
    );
    let p = parsed(&later);
    assert_eq!(p.key.proto, proto::UDP);
    assert_eq!(p.key.src_addr, v4(POD_A));
    assert_eq!((p.key.src_port, p.key.dst_port), (0, 0));
    assert_eq!(p.flags, event_flags::FRAGMENT);
    truncations_fail(&later, 14 + 20);
    // The first fragment (more-fragments set, offset 0) carries the L4 header.
    let first = frame(
        ETH_P_IP,
        &ipv4(proto::UDP, POD_A, WORLD, 0x2000, 0, &udp(41000, 53, b"x")),
    );
    let p = parsed(&first);
    assert_eq!((p.key.src_port, p.key.dst_port), (41000, 53));
    assert_eq!(p.flags, event_flags::HAS_L4);
}

#[test]
fn ipv4_header_length_below_20_is_refused() {
    let mut b = frame(
        ETH_P_IP,
        &ipv4(proto::TCP, POD_A, WORLD, 0, 0, &tcp(1, 2, 0, false)),
    );
    b[14] = 0x44;
    let mut pkt = Packet::default();
    assert_eq!(parse(&b[..], &mut pkt), Err(ParseError::Truncated));
}

#[test]
fn ipv6_tcp() {
    let syn = monitor_common::tcp::SYN;
    let b = frame(
        ETH_P_IPV6,
        &ipv6(proto::TCP, POD_A6, WORLD6, &tcp(40000, 443, syn, false)),
    );
    let p = parsed(&b);
    assert_eq!(p.key.family, family::V6);
    assert_eq!(p.key.proto, proto::TCP);
    assert_eq!(p.key.src_addr, POD_A6);
    assert_eq!(p.key.dst_addr, WORLD6);
    assert_eq!((p.key.src_port, p.key.dst_port), (40000, 443));
    assert_eq!(p.tcp_flags, syn);
    assert_eq!(p.flags, event_flags::HAS_L4);
    truncations_fail(&b, 14 + 40 + 14);
}

#[test]
fn ipv6_extension_headers_are_stepped_over() {
    // Hop-by-hop (16 bytes) -> destination options (8) -> fragment (first, more to come) -> UDP.
    let mut rest = ext_options(60, 1);
    rest.extend(ext_options(44, 0));
    rest.extend(ext_fragment(proto::UDP, 0, true));
    rest.extend(udp(5353, 53, b"q"));
    let b = frame(ETH_P_IPV6, &ipv6(0, POD_A6, WORLD6, &rest));
    let p = parsed(&b);
    assert_eq!(p.key.proto, proto::UDP);
    assert_eq!((p.key.src_port, p.key.dst_port), (5353, 53));
    assert_eq!(p.flags, event_flags::HAS_L4);
    truncations_fail(&b, 14 + 40 + 16 + 8 + 8 + 4);

    // The same chain on a later fragment: the protocol is known, the ports are not.
    let mut rest = ext_options(60, 1);
    rest.extend(ext_options(44, 0));
    rest.extend(ext_fragment(proto::UDP, 185, false));
    rest.extend([0xaa; 8]);
    let b = frame(ETH_P_IPV6, &ipv6(0, POD_A6, WORLD6, &rest));
    let p = parsed(&b);
    assert_eq!(p.key.proto, proto::UDP);
    assert_eq!((p.key.src_port, p.key.dst_port), (0, 0));
    assert_eq!(p.flags, event_flags::FRAGMENT);
    truncations_fail(&b, 14 + 40 + 16 + 8 + 4);

    // Routing header (8-byte units, like the options headers) and AH (4-byte units) before TCP.
    let mut rest = vec![51, 2, 0, 0];
    rest.resize(24, 0);
    rest.extend(ext_ah(proto::TCP, 3));
    rest.extend(tcp(40000, 443, 0x10, false));
    let b = frame(ETH_P_IPV6, &ipv6(43, POD_A6, WORLD6, &rest));
    let p = parsed(&b);
    assert_eq!(p.key.proto, proto::TCP);
    assert_eq!((p.key.src_port, p.key.dst_port), (40000, 443));
    truncations_fail(&b, 14 + 40 + 24 + 24 + 14);
}

#[test]
fn ipv6_extension_chain_longer_than_the_bound() {
    // Five hop-by-hop-style headers: the parser steps over four (a constant bound, for the
    // verifier) and reports the fifth's type as the protocol, without ports.
    let mut rest = Vec::new();
    for _ in 0..4 {
        rest.extend(ext_options(60, 0));
    }
    rest.extend(ext_options(proto::UDP, 0));
    rest.extend(udp(1, 2, b""));
    let b = frame(ETH_P_IPV6, &ipv6(0, POD_A6, WORLD6, &rest));
    let p = parsed(&b);
    assert_eq!(p.key.proto, 60);
    assert_eq!(p.flags & event_flags::HAS_L4, 0);
}

#[test]
fn icmpv6_echo_and_errors() {
    let req = frame(
        ETH_P_IPV6,
        &ipv6(
            proto::ICMPV6,
            POD_A6,
            WORLD6,
            &icmp(128, 0, [0, 9, 0, 1], b""),
        ),
    );
    let p = parsed(&req);
    assert_eq!((p.icmp_type, p.key.src_port, p.key.dst_port), (128, 9, 0));
    truncations_fail(&req, 14 + 40 + 8);
    let reply = frame(
        ETH_P_IPV6,
        &ipv6(
            proto::ICMPV6,
            WORLD6,
            POD_A6,
            &icmp(129, 0, [0, 9, 0, 1], b""),
        ),
    );
    let p = parsed(&reply);
    assert_eq!((p.icmp_type, p.key.src_port, p.key.dst_port), (129, 0, 9));

    // Destination unreachable (port) about pod-a's TCP SYN, and packet too big about UDP.
    for (ty, code, l4proto, l4) in [
        (1u8, 4u8, proto::TCP, tcp(40000, 443, 2, false)),
        (2, 0, proto::UDP, udp(5353, 53, b"")),
        (3, 0, proto::SCTP, sctp(9000, 38412)),
    ] {
        let quoted = ipv6(l4proto, POD_A6, WORLD6, &l4);
        let b = frame(
            ETH_P_IPV6,
            &ipv6(
                proto::ICMPV6,
                WORLD6,
                POD_A6,
                &icmp(ty, code, [0, 0, 5, 0xdc], &quoted),
            ),
        );
        let p = parsed(&b);
        assert_eq!((p.icmp_type, p.icmp_code), (ty, code));
        assert!(p.has_inner, "type {ty}");
        assert_eq!(p.inner.family, family::V6);
        assert_eq!(p.inner.proto, l4proto);
        assert_eq!(p.inner.src_addr, POD_A6);
        assert_eq!(p.inner.dst_addr, WORLD6);
        let ports = (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        );
        assert_eq!((p.inner.src_port, p.inner.dst_port), ports);
        // A quote cut short is not used; the error itself still parses.
        let mut pkt = Packet::default();
        assert_eq!(parse(&b[..b.len() - l4.len() + 4], &mut pkt), Ok(()));
        assert!(!pkt.has_inner);
        truncations_fail(&b, 14 + 40 + 8);
    }
    // Neighbour solicitation: type and code, nothing else.
    let ns = frame(
        ETH_P_IPV6,
        &ipv6(
            proto::ICMPV6,
            POD_A6,
            WORLD6,
            &icmp(135, 0, [0; 4], &[0; 16]),
        ),
    );
    let p = parsed(&ns);
    assert_eq!((p.icmp_type, p.key.src_port, p.has_inner), (135, 0, false));
}

#[test]
fn sctp_ports_on_both_families() {
    let b = frame(
        ETH_P_IP,
        &ipv4(proto::SCTP, POD_A, WORLD, 0, 0, &sctp(9000, 38412)),
    );
    let p = parsed(&b);
    assert_eq!(p.key.proto, proto::SCTP);
    assert_eq!((p.key.src_port, p.key.dst_port), (9000, 38412));
    assert_eq!(p.flags, event_flags::HAS_L4);
    truncations_fail(&b, 14 + 20 + 4);

    let b = frame(
        ETH_P_IPV6,
        &ipv6(proto::SCTP, POD_A6, WORLD6, &sctp(9000, 38412)),
    );
    let p = parsed(&b);
    assert_eq!(p.key.family, family::V6);
    assert_eq!(p.key.proto, proto::SCTP);
    assert_eq!((p.key.src_port, p.key.dst_port), (9000, 38412));
    assert_eq!(p.flags, event_flags::HAS_L4);
    truncations_fail(&b, 14 + 40 + 4);
}

#[test]
fn other_ip_protocols_have_no_l4() {
    // GRE: addresses and protocol, no ports, no HAS_L4.
    let b = frame(ETH_P_IP, &ipv4(47, POD_A, WORLD, 0, 0, &[0, 0, 0x08, 0x00]));
    let p = parsed(&b);
    assert_eq!(p.key.proto, 47);
    assert_eq!(p.flags, 0);
    truncations_fail(&b, 14 + 20);
}

#[test]
fn arp_and_vlan_tagged_frames_are_not_ip() {
    // An ARP request for the gateway.
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&MAC_POD);
    arp.extend_from_slice(&POD_A);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[10, 244, 0, 201]);
    let mut pkt = Packet::default();
    assert_eq!(parse(&arp[..], &mut pkt), Err(ParseError::NotIp));
    // A tag left in the data (the kernel normally moves it into the skb's metadata) is not
    // looked through: the frame counts as non-IP rather than being misread.
    let mut tagged = eth(0x8100);
    tagged.extend_from_slice(&[0, 100, 0x08, 0x00]);
    tagged.extend(ipv4(proto::UDP, POD_A, WORLD, 0, 0, &udp(1, 2, b"")));
    assert_eq!(parse(&tagged[..], &mut pkt), Err(ParseError::NotIp));
    // Shorter than an Ethernet header.
    assert_eq!(parse(&arp[..13], &mut pkt), Err(ParseError::Truncated));
}

#[test]
fn parse_l3_reads_from_the_network_header() {
    // What the drop tracepoint does: it has the protocol from the skb and starts at the IP
    // header.
    let ip = ipv4(proto::TCP, POD_A, WORLD, 0, 1, &tcp(59242, 80, 2, false));
    let mut pkt = Packet::default();
    let l4 = parse_l3(&ip[..], 0, ETH_P_IP, &mut pkt).unwrap();
    assert_eq!(l4, Some(24));
    parse_l4(&ip[..], 24, &mut pkt).unwrap();
    assert_eq!((pkt.key.src_port, pkt.key.dst_port), (59242, 80));
    assert_eq!(
        parse_l3(&ip[..], 0, 0x0806, &mut Packet::default()),
        Err(ParseError::NotIp)
    );
}

#[test]
fn clear_zeroes_every_byte() {
    let mut p = Packet {
        key: CtKey {
            src_addr: [0xff; 16],
            dst_addr: [0xff; 16],
            src_port: 1,
            dst_port: 2,
            proto: 3,
            family: 4,
            _pad: [5; 2],
        },
        has_inner: true,
        tcp_flags: 1,
        icmp_type: 1,
        icmp_code: 1,
        flags: 1,
        src_mac: [1; 6],
        dst_mac: [1; 6],
        l4_off: 34,
        ..Packet::default()
    };
    p.inner = p.key;
    p.clear();
    assert_eq!(p, Packet::default());
}
