//! DNS messages from captured payloads, into Hubble's `flow.DNS` fields.
//!
//! The header (id, QR bit, RCODE) is read from its fixed 12 bytes; the sections by
//! [`simple_dns`], which parses a borrowed buffer and fails (rather than guessing) on a message
//! cut short. Over TCP a message is preceded by its 2-byte length (RFC 1035 4.2.2): a segment
//! that does not hold the whole message is [`DnsError::Truncated`], never parsed in part.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::RData;

/// A parsed DNS message: what Hubble's `flow.DNS` carries, plus the id and direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsMessage {
    /// The message id, which pairs a response with its query.
    pub id: u16,
    /// The QR bit: a response.
    pub response: bool,
    /// The first question's name, with the trailing dot (`one.one.one.one.`), as Cilium's.
    pub query: String,
    /// Question types by name (`A`, `AAAA`), gopacket's names as Hubble prints them.
    pub qtypes: Vec<String>,
    /// Addresses in A and AAAA answers.
    pub ips: Vec<IpAddr>,
    /// The smallest TTL of the answers (0 without answers).
    pub ttl: u32,
    /// CNAME targets, with the trailing dot.
    pub cnames: Vec<String>,
    /// RCODE (the header's 4 bits).
    pub rcode: u32,
    /// Answer record types by name.
    pub rrtypes: Vec<String>,
}

/// Why a payload gave no DNS message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The capture holds only part of the message (a longer UDP datagram than the snap
    /// length, or a DNS-over-TCP message spanning segments).
    #[error("truncated DNS message")]
    Truncated,
    /// Not a DNS message, or a broken one.
    #[error("malformed DNS message")]
    Malformed,
}

/// Parses a DNS message carried over UDP (`tcp` false) or TCP. `truncated`: the kernel copied
/// less than the packet carried.
pub fn parse(payload: &[u8], tcp: bool, truncated: bool) -> Result<DnsMessage, DnsError> {
    let msg = if tcp {
        let [hi, lo, rest @ ..] = payload else {
            return Err(DnsError::Truncated);
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        match rest.get(..len) {
            Some(m) => m,
            None => return Err(DnsError::Truncated),
        }
    } else {
        payload
    };
    if msg.len() < 12 {
        return Err(if truncated {
            DnsError::Truncated
        } else {
            DnsError::Malformed
        });
    }
    let packet = match simple_dns::Packet::parse(msg) {
        Ok(p) => p,
        // A UDP message cut by the snap length fails to parse: say why.
        Err(_) if truncated && !tcp => return Err(DnsError::Truncated),
        Err(_) => return Err(DnsError::Malformed),
    };
    let question = packet.questions.first().ok_or(DnsError::Malformed)?;
    let mut m = DnsMessage {
        id: u16::from_be_bytes([msg[0], msg[1]]),
        response: msg[2] & 0x80 != 0,
        query: format!("{}.", question.qname),
        qtypes: packet
            .questions
            .iter()
            .map(|q| type_name(u16::from(q.qtype)))
            .collect(),
        rcode: u32::from(msg[3] & 0x0f),
        ..DnsMessage::default()
    };
    if m.response {
        let mut ttl = None::<u32>;
        for rr in &packet.answers {
            m.rrtypes.push(type_name(u16::from(rr.rdata.type_code())));
            ttl = Some(ttl.map_or(rr.ttl, |t| t.min(rr.ttl)));
            match &rr.rdata {
                RData::A(a) => m.ips.push(IpAddr::V4(Ipv4Addr::from(a.address))),
                RData::AAAA(a) => m.ips.push(IpAddr::V6(Ipv6Addr::from(a.address))),
                RData::CNAME(c) => m.cnames.push(format!("{}.", c.0)),
                _ => {}
            }
        }
        m.ttl = ttl.unwrap_or(0);
    }
    Ok(m)
}

/// A resource record type's name as gopacket's `DNSType.String()` prints it (what Hubble puts
/// in `qtypes` and `rrtypes`).
pub fn type_name(t: u16) -> String {
    let name = match t {
        1 => "A",
        2 => "NS",
        3 => "MD",
        4 => "MF",
        5 => "CNAME",
        6 => "SOA",
        7 => "MB",
        8 => "MG",
        9 => "MR",
        10 => "NULL",
        11 => "WKS",
        12 => "PTR",
        13 => "HINFO",
        14 => "MINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        41 => "OPT",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        256 => "URI",
        _ => "Unknown",
    };
    name.to_owned()
}

/// An RCODE's name as Hubble's DNS metrics (`rcode` label) and summaries write it.
pub fn rcode_name(rcode: u32) -> &'static str {
    match rcode {
        0 => "No Error",
        1 => "Format Error",
        2 => "Server Failure",
        3 => "Non-Existent Domain",
        4 => "Not Implemented",
        5 => "Query Refused",
        6 => "Name Exists when it should not",
        7 => "RR Set Exists when it should not",
        8 => "RR Set that should exist does not",
        9 => "Not Authorized",
        10 => "Name not contained in zone",
        11 => "DSO-TYPE Not Implemented",
        16 => "Bad OPT Version",
        17 => "Key not recognized",
        18 => "Signature out of time window",
        19 => "Bad TKEY Mode",
        20 => "Duplicate key name",
        21 => "Algorithm not supported",
        22 => "Bad Truncation",
        23 => "Bad/missing Server Cookie",
        _ => "",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `one.one.one.one` A, id 0x1234, as `dig` sends it (without EDNS).
    pub(crate) fn query() -> Vec<u8> {
        let mut b = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["one", "one", "one", "one"] {
            b.push(label.len() as u8);
            b.extend_from_slice(label.as_bytes());
        }
        b.extend_from_slice(&[0, 0, 1, 0, 1]);
        b
    }

    /// The answer: a CNAME-free A record 1.0.0.1, TTL 300, name compressed to the question.
    pub(crate) fn answer(rcode: u8) -> Vec<u8> {
        let mut b = query();
        b[2] = 0x81;
        b[3] = 0x80 | rcode;
        if rcode == 0 {
            b[7] = 1;
            b.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 1, 0, 0, 1]);
        }
        b
    }

    #[test]
    fn a_query_and_its_answer() {
        let q = parse(&query(), false, false).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(!q.response);
        assert_eq!(q.query, "one.one.one.one.");
        assert_eq!(q.qtypes, ["A"]);
        let a = parse(&answer(0), false, false).unwrap();
        assert!(a.response);
        assert_eq!(a.ips, ["1.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.ttl, 300);
        assert_eq!(a.rrtypes, ["A"]);
        assert_eq!(a.rcode, 0);
    }

    #[test]
    fn nxdomain_is_rcode_3() {
        let a = parse(&answer(3), false, false).unwrap();
        assert_eq!(a.rcode, 3);
        assert!(a.ips.is_empty());
        assert_eq!(rcode_name(a.rcode), "Non-Existent Domain");
    }

    #[test]
    fn over_tcp_the_length_prefix_decides() {
        let mut b = vec![0, 0];
        let q = query();
        b[1] = q.len() as u8;
        b.extend_from_slice(&q);
        assert_eq!(parse(&b, true, false).unwrap().query, "one.one.one.one.");
        // The message continues in the next segment: never parsed in part.
        assert_eq!(
            parse(&b[..b.len() - 1], true, true),
            Err(DnsError::Truncated)
        );
        assert_eq!(parse(&b[..1], true, false), Err(DnsError::Truncated));
    }

    #[test]
    fn cut_short_is_truncated_or_malformed_never_a_message() {
        let a = answer(0);
        for len in 0..a.len() {
            let r = parse(&a[..len], false, true);
            assert_eq!(r, Err(DnsError::Truncated), "cut at {len}");
        }
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n", false, false),
            Err(DnsError::Malformed)
        );
    }
}
