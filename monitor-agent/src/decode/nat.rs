//! The kernel's NAT translations, from its own conntrack table over ctnetlink.
//!
//! Two uses: `flowctl nat list` (a dump of the connections the kernel translated), and joining
//! the two halves of a translated connection in flows: a masqueraded one (SNAT), and one to a
//! Service's ClusterIP that kube-proxy's rules sent to a backend (DNAT). A pod's connection to the world is seen
//! on the pod's veth with the pod's address and on the uplink with the node's; the kernel's
//! conntrack entry for it holds both tuples (original: pod -> world; reply: world -> node). An
//! uplink flow's tuple is that reply tuple (or its reverse), so one lookup by reply tuple gives
//! the pod's original tuple.
//!
//! For DNAT the halves are the client's side, where the packet carries the ClusterIP (its
//! tuple is the original tuple, or its reverse for replies: one lookup by original tuple), and
//! the backend's side, where it carries the backend's address (the reply tuple or its reverse).
//! The decoder asks only for flows to or from a known Service frontend or backend
//! (`endpoints::services`).
//!
//! Why this mechanism: the kernel's conntrack is the authority on what MASQUERADE (or any SNAT
//! or DNAT, iptables or nftables) did, and ctnetlink is its stable API. Hooking the NAT functions
//! with kprobes breaks between kernel versions; looking conntrack up from BPF needs kfuncs and
//! CO-RE access to `struct nf_conn`, which Rust's BPF target cannot express. Lookups happen only
//! for uplink flows to or from a node address and are cached, so the cost is a netlink round trip
//! (~20 µs) per new masqueraded connection.
//!
//! Why our own codec: the maintained `netlink-packet-netfilter` crate parses conntrack tuples,
//! status, timeout and mark, but not ICMP ids, counters, zones or ids, which the NAT listing
//! shows; the few messages we send and read fit in this file.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

// linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h, nf_conntrack_common.h
const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

/// `IPS_SRC_NAT`: the connection's source was translated.
pub const IPS_SRC_NAT: u32 = 1 << 4;
/// `IPS_DST_NAT`: the connection's destination was translated.
pub const IPS_DST_NAT: u32 = 1 << 5;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// What identifies a tuple for lookups: addresses, protocol, ports, ICMP echo id.
type TupleKey = (IpAddr, IpAddr, u8, u16, u16, u16);

/// One direction of a connection, as conntrack stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IANA protocol.
    pub proto: u8,
    /// Source port (0 for ICMP).
    pub sport: u16,
    /// Destination port (0 for ICMP).
    pub dport: u16,
    /// ICMP echo identifier (0 otherwise).
    pub icmp_id: u16,
    /// ICMP type (for ICMP tuples).
    pub icmp_type: u8,
}

impl Tuple {
    /// The same connection in the other direction.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }

    /// The key used to find the entry from a packet: ICMP type/code do not identify a
    /// connection, the echo id does.
    fn key(&self) -> TupleKey {
        (
            self.src,
            self.dst,
            self.proto,
            self.sport,
            self.dport,
            self.icmp_id,
        )
    }
}

/// A conntrack entry, as much as we show of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    /// Tuple in the original direction.
    pub orig: Tuple,
    /// Tuple in the reply direction (after NAT, its addresses show the translation).
    pub reply: Tuple,
    /// `IPS_*` status bits.
    pub status: u32,
    /// Seconds until it expires.
    pub timeout: u32,
    /// Connection mark.
    pub mark: u32,
    /// Conntrack zone.
    pub zone: u16,
    /// Kernel id.
    pub id: u32,
    /// TCP state (`tcp_conntrack` numbering) when TCP.
    pub tcp_state: Option<u8>,
    /// (packets, bytes) original direction, when accounting is on (`nf_conntrack_acct`).
    pub counters_orig: Option<(u64, u64)>,
    /// (packets, bytes) reply direction.
    pub counters_reply: Option<(u64, u64)>,
}

impl ConnEntry {
    /// Source NAT: the translated source is the reply tuple's destination.
    pub fn snat(&self) -> bool {
        self.status & IPS_SRC_NAT != 0
    }
    /// Destination NAT.
    pub fn dnat(&self) -> bool {
        self.status & IPS_DST_NAT != 0
    }
}

/// TCP conntrack state names (`enum tcp_conntrack`).
pub fn tcp_state_name(s: u8) -> &'static str {
    const NAMES: [&str; 10] = [
        "NONE",
        "SYN_SENT",
        "SYN_RECV",
        "ESTABLISHED",
        "FIN_WAIT",
        "CLOSE_WAIT",
        "LAST_ACK",
        "TIME_WAIT",
        "CLOSE",
        "SYN_SENT2",
    ];
    NAMES.get(s as usize).copied().unwrap_or("UNKNOWN")
}

/// Status bit names, as `conntrack -L` prints them.
pub fn status_names(status: u32) -> Vec<&'static str> {
    const BITS: [(u32, &str); 8] = [
        (1 << 0, "EXPECTED"),
        (1 << 1, "SEEN_REPLY"),
        (1 << 2, "ASSURED"),
        (1 << 3, "CONFIRMED"),
        (IPS_SRC_NAT, "SRC_NAT"),
        (IPS_DST_NAT, "DST_NAT"),
        (1 << 9, "DYING"),
        (1 << 10, "FIXED_TIMEOUT"),
    ];
    BITS.iter()
        .filter(|(b, _)| status & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The socket and the messages.
// ---------------------------------------------------------------------------------------------

fn nla_put(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn nla_nested(buf: &mut Vec<u8>, ty: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    inner(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn put_tuple(buf: &mut Vec<u8>, ty: u16, t: &Tuple) {
    nla_nested(buf, ty, |b| {
        nla_nested(b, CTA_TUPLE_IP, |b| match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                nla_put(b, CTA_IP_V4_SRC, &s.octets());
                nla_put(b, CTA_IP_V4_DST, &d.octets());
            }
            (s, d) => {
                nla_put(b, CTA_IP_V6_SRC, &to_v6(s).octets());
                nla_put(b, CTA_IP_V6_DST, &to_v6(d).octets());
            }
        });
        nla_nested(b, CTA_TUPLE_PROTO, |b| {
            nla_put(b, CTA_PROTO_NUM, &[t.proto]);
            match t.proto {
                IPPROTO_ICMP => {
                    nla_put(b, CTA_PROTO_ICMP_ID, &t.icmp_id.to_be_bytes());
                    nla_put(b, CTA_PROTO_ICMP_TYPE, &[t.icmp_type]);
                    nla_put(b, CTA_PROTO_ICMP_CODE, &[0]);
                }
                IPPROTO_ICMPV6 => {
                    nla_put(b, CTA_PROTO_ICMPV6_ID, &t.icmp_id.to_be_bytes());
                    nla_put(b, CTA_PROTO_ICMPV6_TYPE, &[t.icmp_type]);
                    nla_put(b, CTA_PROTO_ICMPV6_CODE, &[0]);
                }
                _ => {
                    nla_put(b, CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
                    nla_put(b, CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
                }
            }
        });
    });
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// Builds one ctnetlink request.
fn request(msg: u16, flags: u16, family: u8, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(20 + attrs.len());
    let len = 16 + 4 + attrs.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // struct nfgenmsg { family, version, res_id (be16) }
    buf.extend_from_slice(&[family, 0, 0, 0]);
    buf.extend_from_slice(attrs);
    buf
}

/// Iterates the attributes of `data`: (type without flags, payload).
fn attrs(data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 4 > data.len() {
            return None;
        }
        let len = u16::from_ne_bytes([data[off], data[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([data[off + 2], data[off + 3]]) & NLA_TYPE_MASK;
        if len < 4 || off + len > data.len() {
            return None;
        }
        let payload = &data[off + 4..off + len];
        off += (len + 3) & !3;
        Some((ty, payload))
    })
}

fn be16(p: &[u8]) -> u16 {
    p.get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0)
}
fn be32(p: &[u8]) -> u32 {
    p.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}
fn be64(p: &[u8]) -> u64 {
    p.get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
        .unwrap_or(0)
}

fn parse_tuple(data: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst) = (None, None);
    let mut t = Tuple {
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        proto: 0,
        sport: 0,
        dport: 0,
        icmp_id: 0,
        icmp_type: 0,
    };
    for (ty, p) in attrs(data) {
        match ty {
            CTA_TUPLE_IP => {
                for (ty, a) in attrs(p) {
                    let v4 = || {
                        <[u8; 4]>::try_from(a)
                            .ok()
                            .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
                    };
                    let v6 = || {
                        <[u8; 16]>::try_from(a)
                            .ok()
                            .map(|o| IpAddr::V6(Ipv6Addr::from(o)))
                    };
                    match ty {
                        CTA_IP_V4_SRC => src = v4(),
                        CTA_IP_V4_DST => dst = v4(),
                        CTA_IP_V6_SRC => src = v6(),
                        CTA_IP_V6_DST => dst = v6(),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (ty, a) in attrs(p) {
                    match ty {
                        CTA_PROTO_NUM => t.proto = a.first().copied().unwrap_or(0),
                        CTA_PROTO_SRC_PORT => t.sport = be16(a),
                        CTA_PROTO_DST_PORT => t.dport = be16(a),
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => t.icmp_id = be16(a),
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                            t.icmp_type = a.first().copied().unwrap_or(0)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t.src = src?;
    t.dst = dst?;
    Some(t)
}

fn parse_counters(data: &[u8]) -> (u64, u64) {
    let (mut pk, mut by) = (0, 0);
    for (ty, a) in attrs(data) {
        match ty {
            CTA_COUNTERS_PACKETS => pk = be64(a),
            CTA_COUNTERS_BYTES => by = be64(a),
            _ => {}
        }
    }
    (pk, by)
}

/// Parses the attributes of one IPCTNL_MSG_CT_NEW message (after the nfgenmsg header).
fn parse_entry(data: &[u8]) -> Option<ConnEntry> {
    let (mut orig, mut reply) = (None, None);
    let mut e = ConnEntry::default();
    for (ty, p) in attrs(data) {
        match ty {
            CTA_TUPLE_ORIG => orig = parse_tuple(p),
            CTA_TUPLE_REPLY => reply = parse_tuple(p),
            CTA_STATUS => e.status = be32(p),
            CTA_TIMEOUT => e.timeout = be32(p),
            CTA_MARK => e.mark = be32(p),
            CTA_ZONE => e.zone = be16(p),
            CTA_ID => e.id = be32(p),
            CTA_COUNTERS_ORIG => e.counters_orig = Some(parse_counters(p)),
            CTA_COUNTERS_REPLY => e.counters_reply = Some(parse_counters(p)),
            CTA_PROTOINFO => {
                for (ty, a) in attrs(p) {
                    if ty == CTA_PROTOINFO_TCP {
                        for (ty, s) in attrs(a) {
                            if ty == CTA_PROTOINFO_TCP_STATE {
                                e.tcp_state = s.first().copied();
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    e.orig = orig?;
    e.reply = reply?;
    Some(e)
}

impl Default for ConnEntry {
    fn default() -> Self {
        let t = Tuple {
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            proto: 0,
            sport: 0,
            dport: 0,
            icmp_id: 0,
            icmp_type: 0,
        };
        ConnEntry {
            orig: t,
            reply: t,
            status: 0,
            timeout: 0,
            mark: 0,
            zone: 0,
            id: 0,
            tcp_state: None,
            counters_orig: None,
            counters_reply: None,
        }
    }
}

/// A ctnetlink socket in the agent's network namespace.
struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2)/bind(2)/setsockopt(2) calls; the fd is owned right away.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            if libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            // A dump can be large; a timeout bounds every call.
            let tv = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
            Ok(Socket { fd, seq: 1 })
        }
    }

    /// Sends a request and collects the CT_NEW messages of the answer until DONE (dump) or
    /// the ACK/error (get).
    fn call(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        attrs_buf: &[u8],
        dump: bool,
    ) -> io::Result<Vec<ConnEntry>> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(msg, flags, family, self.seq, attrs_buf);
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: the buffer is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let data = &buf[..n as usize];
            let mut off = 0;
            while off + 16 <= data.len() {
                let len =
                    u32::from_ne_bytes(data[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
                let ty = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
                if len < 16 || off + len > data.len() {
                    break;
                }
                let body = &data[off + 16..off + len];
                match ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let err = i32::from_ne_bytes(
                            body.get(..4)
                                .and_then(|b| b.try_into().ok())
                                .unwrap_or([0; 4]),
                        );
                        return if err == 0 {
                            Ok(out)
                        } else {
                            Err(io::Error::from_raw_os_error(-err))
                        };
                    }
                    t if t == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
                        if let Some(e) = body.get(4..).and_then(parse_entry) {
                            out.push(e);
                        }
                        if !dump {
                            // A get answers with one message, then the ACK.
                        }
                    }
                    _ => {}
                }
                off += (len + 3) & !3;
            }
        }
    }
}

/// Every conntrack entry of this network namespace (IPv4 and IPv6).
pub fn dump() -> io::Result<Vec<ConnEntry>> {
    let mut s = Socket::open()?;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    s.call(IPCTNL_MSG_CT_GET, flags, libc::AF_UNSPEC as u8, &[], true)
}

/// The entry whose reply tuple is `reply`, if any.
pub fn get_by_reply(reply: &Tuple) -> io::Result<Option<ConnEntry>> {
    get_by(CTA_TUPLE_REPLY, reply)
}

/// The entry whose original tuple is `orig`, if any.
pub fn get_by_orig(orig: &Tuple) -> io::Result<Option<ConnEntry>> {
    get_by(CTA_TUPLE_ORIG, orig)
}

fn get_by(which: u16, t: &Tuple) -> io::Result<Option<ConnEntry>> {
    let mut s = Socket::open()?;
    let mut a = Vec::new();
    put_tuple(&mut a, which, t);
    let family = if t.src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    } as u8;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    match s.call(IPCTNL_MSG_CT_GET, flags, family, &a, false) {
        Ok(mut v) => Ok(v.pop()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a translated packet was before translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The connection's original tuple (pod -> world for MASQUERADE).
    pub orig: Tuple,
    /// The reply tuple (world -> node).
    pub reply: Tuple,
    /// Source NAT.
    pub snat: bool,
    /// Destination NAT.
    pub dnat: bool,
}

/// A cached answer and when it was asked. The translation is shared: every record of the
/// connection's flows holds the same one (two inline translations were ~190 bytes of each
/// record in the history, translated or not).
type Cached = (Instant, Option<Arc<Translation>>);

/// Which tuple of the connection a lookup gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum By {
    Orig,
    Reply,
}

/// Cached lookups of translations by reply or original tuple. Entries live `ttl`; a negative
/// answer lives a short time too, so that a burst of packets of an untranslated connection costs
/// one lookup.
pub struct NatCache {
    /// Looked up for every event that may be translated: foldhash, not SipHash.
    entries: Mutex<foldhash::HashMap<(By, TupleKey), Cached>>,
    ttl: Duration,
    negative_ttl: Duration,
    max: usize,
}

impl Default for NatCache {
    fn default() -> Self {
        NatCache {
            entries: Mutex::default(),
            ttl: Duration::from_secs(10),
            negative_ttl: Duration::from_millis(500),
            max: 65_536,
        }
    }
}

impl NatCache {
    /// The translation of the connection whose reply-direction tuple is `reply`.
    pub fn lookup_reply(&self, reply: &Tuple) -> Option<Arc<Translation>> {
        self.lookup(By::Reply, reply)
    }

    /// The translation of the connection whose original-direction tuple is `orig` (a packet
    /// seen before DNAT: a client's request to a Service's ClusterIP).
    pub fn lookup_orig(&self, orig: &Tuple) -> Option<Arc<Translation>> {
        self.lookup(By::Orig, orig)
    }

    fn lookup(&self, by: By, tuple: &Tuple) -> Option<Arc<Translation>> {
        let key = (by, tuple.key());
        let now = Instant::now();
        if let Ok(map) = self.entries.lock()
            && let Some((at, t)) = map.get(&key)
        {
            let ttl = if t.is_some() {
                self.ttl
            } else {
                self.negative_ttl
            };
            if now.duration_since(*at) < ttl {
                return t.clone();
            }
        }
        let entry = match by {
            By::Reply => get_by_reply(tuple),
            By::Orig => get_by_orig(tuple),
        };
        let found = entry.ok().flatten().and_then(|e| {
            (e.snat() || e.dnat()).then(|| {
                Arc::new(Translation {
                    orig: e.orig,
                    reply: e.reply,
                    snat: e.snat(),
                    dnat: e.dnat(),
                })
            })
        });
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= self.max {
                map.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
                if map.len() >= self.max {
                    map.clear();
                }
            }
            map.insert(key, (now, found.clone()));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPPROTO_TCP: u8 = 6;

    fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: IPPROTO_TCP,
            sport,
            dport,
            icmp_id: 0,
            icmp_type: 0,
        }
    }

    #[test]
    fn tuples_round_trip_through_the_codec() {
        for t in [
            tcp("10.244.0.213", 41708, "1.0.0.1", 80),
            tcp("fd00:10:244::213", 41708, "fd00::1", 443),
            Tuple {
                proto: IPPROTO_ICMP,
                sport: 0,
                dport: 0,
                icmp_id: 77,
                icmp_type: 8,
                ..tcp("10.0.0.1", 0, "1.0.0.1", 0)
            },
        ] {
            let mut buf = Vec::new();
            put_tuple(&mut buf, CTA_TUPLE_ORIG, &t);
            let (ty, payload) = attrs(&buf).next().unwrap();
            assert_eq!(ty, CTA_TUPLE_ORIG);
            assert_eq!(parse_tuple(payload), Some(t));
        }
    }

    #[test]
    fn parses_an_entry() {
        let orig = tcp("10.244.0.213", 41708, "1.0.0.1", 80);
        let reply = tcp("1.0.0.1", 80, "198.51.100.10", 41708);
        let mut buf = Vec::new();
        put_tuple(&mut buf, CTA_TUPLE_ORIG, &orig);
        put_tuple(&mut buf, CTA_TUPLE_REPLY, &reply);
        nla_put(&mut buf, CTA_STATUS, &(IPS_SRC_NAT | 0x0e).to_be_bytes());
        nla_put(&mut buf, CTA_TIMEOUT, &120u32.to_be_bytes());
        nla_nested(&mut buf, CTA_COUNTERS_ORIG, |b| {
            nla_put(b, CTA_COUNTERS_PACKETS, &6u64.to_be_bytes());
            nla_put(b, CTA_COUNTERS_BYTES, &415u64.to_be_bytes());
        });
        nla_nested(&mut buf, CTA_PROTOINFO, |b| {
            nla_nested(b, CTA_PROTOINFO_TCP, |b| {
                nla_put(b, CTA_PROTOINFO_TCP_STATE, &[7])
            })
        });
        let e = parse_entry(&buf).unwrap();
        assert_eq!((e.orig, e.reply), (orig, reply));
        assert!(e.snat() && !e.dnat());
        assert_eq!(e.timeout, 120);
        assert_eq!(e.counters_orig, Some((6, 415)));
        assert_eq!(e.tcp_state.map(tcp_state_name), Some("TIME_WAIT"));
        assert_eq!(
            status_names(e.status),
            ["SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT"]
        );
    }

    #[test]
    fn truncated_attributes_do_not_panic() {
        assert!(parse_entry(&[8, 0, 1, 0, 1]).is_none());
        assert_eq!(attrs(&[200, 0, 1, 0]).count(), 0);
    }

    /// The real kernel, in a fresh network namespace: a dump works and a missing tuple is None.
    #[test]
    fn talks_to_the_kernel() {
        if !testbed::require_root("nat::tests::talks_to_the_kernel") {
            return;
        }
        let r = std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread's network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let d = dump().expect("dump");
            let g = get_by_reply(&tcp("192.0.2.1", 1, "192.0.2.2", 2)).expect("get");
            (d.len(), g)
        })
        .join()
        .unwrap();
        assert_eq!(r, (0, None), "a new namespace has no connections");
        let r = std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread's network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            get_by_orig(&tcp("192.0.2.1", 1, "192.0.2.2", 2)).expect("get by original tuple")
        })
        .join()
        .unwrap();
        assert_eq!(r, None);
    }
}
