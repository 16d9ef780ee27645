//! A flow's protobuf bytes written straight from its [`FlowRecord`].
//!
//! A follower needs bytes, not a `flow.Flow`: building one is ~40 allocations and encoding it
//! walks them again. [`FlowEncoder`] writes the same bytes without building it: strings go from
//! the record's shared handles into the buffer, messages without strings (time, layer 4, event
//! type) go through prost from values on the stack. The bytes are those prost writes for
//! [`FlowRecord::to_flow`]: the fields in prost's order (by field number), defaults left
//! out as proto3 does. The tests below hold the two byte for byte over every kind
//! of flow the agent builds; a field added to `to_flow` and not here fails them.

use std::{io::Write as _, net::IpAddr, sync::Arc};

use flowscope_proto::{flow::FlowType, flowscope::v1::FlowExtension, wkt::Timestamp};
use prost::{
    Name as _,
    encoding::{self, WireType},
};

use crate::{
    decode::{nat::Tuple, record::FlowRecord},
    endpoints::Identity,
};

/// `flow.Flow`'s field numbers. prost writes fields in the order of their numbers.
pub(super) mod tag {
    pub const TIME: u32 = 1;
    pub const UUID: u32 = 34;
    pub const EMITTER: u32 = 41;
    pub const VERDICT: u32 = 2;
    pub const DROP_REASON: u32 = 3;
    pub const ETHERNET: u32 = 4;
    pub const IP: u32 = 5;
    pub const L4: u32 = 6;
    pub const SOURCE: u32 = 8;
    pub const DESTINATION: u32 = 9;
    pub const TYPE: u32 = 10;
    pub const NODE_NAME: u32 = 11;
    pub const SOURCE_NAMES: u32 = 13;
    pub const DESTINATION_NAMES: u32 = 14;
    pub const REPLY: u32 = 16;
    pub const EVENT_TYPE: u32 = 19;
    pub const SOURCE_SERVICE: u32 = 20;
    pub const DESTINATION_SERVICE: u32 = 21;
    pub const TRAFFIC_DIRECTION: u32 = 22;
    pub const TRACE_OBSERVATION_POINT: u32 = 24;
    pub const TRACE_REASON: u32 = 36;
    pub const DROP_REASON_DESC: u32 = 25;
    pub const IS_REPLY: u32 = 26;
    pub const INTERFACE: u32 = 28;
    pub const SUMMARY: u32 = 100_000;
    pub const EXTENSIONS: u32 = 150_000;
}

/// Writes flows from records; keeps its scratch text and the endpoints it wrote between calls.
#[derive(Default)]
pub struct FlowEncoder {
    text: String,
    endpoints: EndpointBodies,
}

/// The `flow.Endpoint` bodies a follower has written, by identity. A record's identities are
/// shared handles into the registry's snapshot (the same `Arc`s for every flow of a pod), so
/// each endpoint's labels, pod and workloads are written once and copied afterwards: writing
/// them field by field was ~6 % of the agent's CPU at 400 k events/s with one follower
/// (profile of benchmark 3 in docs/benchmarks.md).
#[derive(Default)]
struct EndpointBodies {
    /// Keyed by the addresses of the identity's shared parts and its number. Each entry keeps
    /// a clone of the identity, so those `Arc`s (immutable while shared) stay alive and their
    /// addresses cannot be reused by other contents while the entry exists.
    by_identity: foldhash::HashMap<(usize, usize, u32), (Identity, Vec<u8>)>,
}

impl EndpointBodies {
    /// Endpoints remembered at most (a node's pods and the reserved identities fit many
    /// times over); past it the cache starts again empty.
    const MAX: usize = 4096;

    /// The body of `id`'s `flow.Endpoint`, written now if it was not before.
    fn body(&mut self, id: &Identity) -> &[u8] {
        let key = (
            Arc::as_ptr(&id.labels).cast::<u8>() as usize,
            id.endpoint
                .as_ref()
                .map_or(0, |e| Arc::as_ptr(e).cast::<u8>() as usize),
            id.identity,
        );
        if self.by_identity.len() >= Self::MAX && !self.by_identity.contains_key(&key) {
            self.by_identity.clear();
        }
        &self
            .by_identity
            .entry(key)
            .or_insert_with(|| {
                let mut body = Vec::new();
                endpoint_body(id, &mut body);
                (id.clone(), body)
            })
            .1
    }
}

impl FlowEncoder {
    /// Appends the fields of `rec`'s `flow.Flow` to `out` (a message body, without a length),
    /// with flowscope's extension only when `extensions` is set.
    pub fn encode(&mut self, rec: &FlowRecord, extensions: bool, out: &mut Vec<u8>) {
        let ev = &rec.event;
        let reason = rec.hubble_reason();
        let reply = rec.is_reply();
        encoding::message::encode(tag::TIME, &Timestamp::from(ev.time), out);
        int32(tag::VERDICT, rec.verdict() as i32, out);
        uint32(tag::DROP_REASON, reason.map_or(0, |r| r as u32), out);
        nested(tag::ETHERNET, out, |out| {
            string(1, mac(&ev.src_mac, &mut [0; 17]), out);
            string(2, mac(&ev.dst_mac, &mut [0; 17]), out);
        });
        if let Some((source, source_xlated, destination)) = rec.addresses() {
            nested(tag::IP, out, |out| {
                address(1, source, out);
                address(2, destination, out);
                int32(3, rec.ip_version() as i32, out);
                if let Some(x) = source_xlated {
                    address(5, x, out);
                }
            });
        }
        if let Some(l4) = rec.l4() {
            encoding::message::encode(tag::L4, &l4, out);
        }
        for (field, id) in [(tag::SOURCE, &rec.src), (tag::DESTINATION, &rec.dst)] {
            if let Some(id) = id {
                let body = self.endpoints.body(id);
                encoding::encode_key(field, WireType::LengthDelimited, out);
                encoding::encode_varint(body.len() as u64, out);
                out.extend_from_slice(body);
            }
        }
        int32(tag::TYPE, FlowType::L3L4 as i32, out);
        string(tag::NODE_NAME, &rec.node.node_name, out);
        for (field, names) in [
            (tag::SOURCE_NAMES, &rec.src_names),
            (tag::DESTINATION_NAMES, &rec.dst_names),
        ] {
            for n in names.as_deref().unwrap_or_default() {
                repeated_string(field, n, out);
            }
        }
        if reply == Some(true) {
            encoding::bool::encode(tag::REPLY, &true, out);
        }
        encoding::message::encode(tag::EVENT_TYPE, &rec.event_type(), out);
        for (field, svc) in [
            (tag::SOURCE_SERVICE, &rec.src_service),
            (tag::DESTINATION_SERVICE, &rec.dst_service),
        ] {
            if let Some(svc) = svc {
                nested(field, out, |out| {
                    string(1, &svc.name, out);
                    string(2, &svc.namespace, out);
                });
            }
        }
        int32(tag::TRAFFIC_DIRECTION, rec.direction() as i32, out);
        int32(
            tag::TRACE_OBSERVATION_POINT,
            rec.observation_point() as i32,
            out,
        );
        int32(tag::DROP_REASON_DESC, reason.map_or(0, |r| r as i32), out);
        if let Some(r) = reply {
            encoding::message::encode(tag::IS_REPLY, &r, out);
        }
        if let Some((index, name)) = rec.interface() {
            nested(tag::INTERFACE, out, |out| {
                uint32(1, index, out);
                string(2, name, out);
            });
        }
        let mut uuid = [0u8; 36];
        string(
            tag::UUID,
            rec.uuid.hyphenated().encode_lower(&mut uuid),
            out,
        );
        int32(tag::TRACE_REASON, rec.trace_reason() as i32, out);
        nested(tag::EMITTER, out, |out| {
            string(1, &rec.node.emitter_name, out);
            string(2, &rec.node.emitter_version, out);
        });
        self.text.clear();
        rec.write_summary(&mut self.text);
        string(tag::SUMMARY, &self.text, out);
        if extensions {
            nested(tag::EXTENSIONS, out, |out| {
                string(1, &FlowExtension::type_url(), out);
                nested(2, out, |out| extension(rec, out));
            });
        }
    }
}

/// `flowscope.v1.FlowExtension` of `rec` (the fields of [`FlowRecord::extension`]).
fn extension(rec: &FlowRecord, out: &mut Vec<u8>) {
    let ev = &rec.event;
    let ext = rec.extension_numbers();
    uint32(1, ev.hash, out);
    if ext.ct_id != 0 {
        encoding::uint64::encode(2, &ext.ct_id, out);
    }
    if let Some(t) = &ext.conn {
        nested(3, out, |out| tuple(t, out));
    }
    uint32(4, ext.source_xlated_port, out);
    uint32(6, ev.drop_reason.unwrap_or(0), out);
    string(7, ev.drop_reason_name.as_deref().unwrap_or_default(), out);
    if let Some((backend, port)) = ext.destination_xlated {
        address(10, backend, out);
        uint32(11, port.into(), out);
    }
}

fn tuple(t: &Tuple, out: &mut Vec<u8>) {
    address(1, t.src, out);
    address(2, t.dst, out);
    uint32(3, t.sport.into(), out);
    uint32(4, t.dport.into(), out);
    uint32(5, t.icmp_id.into(), out);
}

/// The body of an identity's `flow.Endpoint` (the fields of `record::endpoint_of`).
fn endpoint_body(id: &Identity, out: &mut Vec<u8>) {
    let ep = id.endpoint.as_deref();
    uint32(1, ep.map_or(0, |e| e.id), out);
    uint32(2, id.identity, out);
    if let Some(e) = ep {
        string(3, &e.namespace, out);
    }
    for l in id.labels.iter() {
        repeated_string(4, l, out);
    }
    if let Some(e) = ep {
        string(5, &e.pod_name, out);
        for w in &e.workloads {
            nested(6, out, |out| {
                string(1, &w.name, out);
                string(2, &w.kind, out);
            });
        }
    }
}

/// A length-delimited field whose body `body` writes; the length is fixed up afterwards (one
/// byte reserved, the body moved when its length needs more).
fn nested(field: u32, out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    encoding::encode_key(field, WireType::LengthDelimited, out);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    let width = encoding::encoded_len_varint(len as u64);
    if width > 1 {
        out.resize(out.len() + width - 1, 0);
        out.copy_within(at + 1..at + 1 + len, at + width);
    }
    let mut prefix = [0u8; 10];
    let mut w = &mut prefix[..];
    encoding::encode_varint(len as u64, &mut w);
    out[at..at + width].copy_from_slice(&prefix[..width]);
}

/// One element of a repeated string field: written even when empty.
fn repeated_string(field: u32, s: &str, out: &mut Vec<u8>) {
    encoding::encode_key(field, WireType::LengthDelimited, out);
    encoding::encode_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

fn string(field: u32, s: &str, out: &mut Vec<u8>) {
    if !s.is_empty() {
        encoding::encode_key(field, WireType::LengthDelimited, out);
        encoding::encode_varint(s.len() as u64, out);
        out.extend_from_slice(s.as_bytes());
    }
}

fn uint32(field: u32, v: u32, out: &mut Vec<u8>) {
    if v != 0 {
        encoding::uint32::encode(field, &v, out);
    }
}

fn int32(field: u32, v: i32, out: &mut Vec<u8>) {
    if v != 0 {
        encoding::int32::encode(field, &v, out);
    }
}

/// An address as its text (`Display`, as `to_string` writes it), without allocating.
fn address(field: u32, a: IpAddr, out: &mut Vec<u8>) {
    if let IpAddr::V4(v4) = a {
        // The common case, written digit by digit: `core::fmt`'s `Display` of an address
        // (a formatter, padding support, one `write_str` per part) cost about 5 % of the
        // agent's CPU per event by a profile of benchmark 3.
        let mut buf = [0u8; 15];
        string(field, ipv4_text(v4, &mut buf), out);
        return;
    }
    let mut buf = [0u8; 48];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    // 45 bytes is the longest IPv6 text form: the write cannot fail.
    let _ = write!(cur, "{a}");
    let n = cur.position() as usize;
    // Only ASCII was written.
    string(
        field,
        std::str::from_utf8(&buf[..n]).unwrap_or_default(),
        out,
    );
}

/// An IPv4 address as `Display` writes it (dotted decimal, no leading zeroes).
fn ipv4_text(a: std::net::Ipv4Addr, buf: &mut [u8; 15]) -> &str {
    let mut n = 0;
    for (i, octet) in a.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    // Only ASCII digits and dots were written.
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// A MAC as `record::format_mac` writes it.
fn mac<'b>(m: &[u8; 6], buf: &'b mut [u8; 17]) -> &'b str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in m.iter().enumerate() {
        buf[i * 3] = HEX[(b >> 4) as usize];
        buf[i * 3 + 1] = HEX[(b & 15) as usize];
        if i < 5 {
            buf[i * 3 + 2] = b':';
        }
    }
    // Only ASCII was written.
    std::str::from_utf8(&buf[..]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use flowscope_proto::flow::Flow;
    use monitor_common::{ct_state, event_flags, event_type, family, obs, proto as ipproto, tcp};
    use prost::Message as _;

    use super::*;
    use crate::{
        decode::{
            nat::Translation,
            record::{
                FlowRecord,
                testing::{base, pod, random_records, record, v4, v6},
            },
        },
        endpoints::reserved,
    };

    /// The encoder's bytes against prost's for the flow of `rec`, with and without extension.
    fn same_bytes(what: &str, rec: &FlowRecord) {
        same_bytes_with(&mut FlowEncoder::default(), what, rec);
    }

    /// As [`same_bytes`], with an encoder that has written other flows before (as a
    /// follower's does).
    fn same_bytes_with(enc: &mut FlowEncoder, what: &str, rec: &FlowRecord) {
        for extensions in [true, false] {
            let mut flow = rec.to_flow();
            if !extensions {
                flow.extensions = None;
            }
            let want = flow.encode_to_vec();
            let mut got = Vec::new();
            enc.encode(rec, extensions, &mut got);
            if got != want {
                let decoded = Flow::decode(got.as_slice());
                panic!(
                    "{what} (extensions {extensions}): encoder bytes differ from prost's\n\
                     want {want:02x?}\n got {got:02x?}\n flow {flow:?}\n decoded {decoded:?}"
                );
            }
        }
    }

    /// The digit-by-digit IPv4 text is `Display`'s, for every octet value in every position.
    #[test]
    fn ipv4_text_is_what_display_writes() {
        let mut buf = [0u8; 15];
        for o in 0..=255u8 {
            for a in [
                std::net::Ipv4Addr::new(o, 0, 9, 255),
                std::net::Ipv4Addr::new(10, o, 100, 1),
                std::net::Ipv4Addr::new(255, 99, o, 10),
                std::net::Ipv4Addr::new(1, 200, 0, o),
            ] {
                assert_eq!(ipv4_text(a, &mut buf), a.to_string());
            }
        }
    }

    #[test]
    fn every_kind_of_flow_is_encoded_as_prost_encodes_it() {
        let tcp_syn = {
            let mut e = base(obs::FROM_ENDPOINT, ct_state::NEW, ipproto::TCP);
            e.tcp_flags = tcp::SYN;
            e
        };
        same_bytes("TCP SYN from a pod", &record(&tcp_syn, None));

        let mut reply = base(obs::TO_ENDPOINT, ct_state::REPLY, ipproto::TCP);
        reply.tcp_flags = tcp::SYN | tcp::ACK;
        reply.flags |= event_flags::TCP_NS;
        let mut r = record(&reply, None);
        std::mem::swap(&mut r.src, &mut r.dst);
        same_bytes("TCP SYN-ACK to a pod, NS flag", &r);

        // The uplink of a masqueraded connection: the pod's address and port in the flow.
        let mut out = tcp_syn;
        out.obs_point = obs::TO_NETWORK;
        out.src_addr = v4([198, 51, 100, 10]);
        out.src_port = 40_000;
        let mut r = record(&out, None);
        let orig = crate::decode::nat::Tuple {
            src: "10.244.0.213".parse().unwrap(),
            dst: "1.0.0.1".parse().unwrap(),
            proto: ipproto::TCP,
            sport: 59_242,
            dport: 80,
            icmp_id: 0,
            icmp_type: 0,
        };
        let reply_tuple = crate::decode::nat::Tuple {
            src: "1.0.0.1".parse().unwrap(),
            dst: "198.51.100.10".parse().unwrap(),
            sport: 80,
            dport: 40_000,
            ..orig
        };
        r.xlat = Some(std::sync::Arc::new(Translation {
            orig,
            reply: reply_tuple,
            snat: true,
            dnat: false,
        }));
        same_bytes("TCP SYN at the uplink, masqueraded", &r);
        // A connection to a Service's ClusterIP, DNAT'ed to a backend.
        let mut to_svc = record(&tcp_syn, None);
        let web = std::sync::Arc::new(crate::endpoints::ServiceName {
            namespace: "default".into(),
            name: "web".into(),
        });
        to_svc.dst_service = Some(web.clone());
        to_svc.dnat = Some(std::sync::Arc::new(Translation {
            orig,
            reply: crate::decode::nat::Tuple {
                src: "10.244.0.77".parse().unwrap(),
                dst: "10.244.0.213".parse().unwrap(),
                sport: 8080,
                dport: 59_242,
                ..orig
            },
            snat: false,
            dnat: true,
        }));
        same_bytes("TCP SYN to a ClusterIP", &to_svc);
        to_svc.src_service = Some(web);
        same_bytes("both ends named by services", &to_svc);
        to_svc.dst_names = Some(vec!["one.one.one.one".to_owned(), "x.example".to_owned()].into());
        to_svc.src_names = Some(vec![String::new()].into());
        same_bytes("names from DNS answers", &to_svc);
        let mut back = base(obs::FROM_NETWORK, ct_state::REPLY, ipproto::TCP);
        back.src_addr = v4([1, 0, 0, 1]);
        back.dst_addr = v4([198, 51, 100, 10]);
        back.tcp_flags = tcp::ACK | tcp::PSH;
        let mut r2 = record(&back, None);
        r2.xlat = r.xlat.clone();
        same_bytes("TCP reply arriving for the node, masqueraded", &r2);

        let udp = base(obs::TO_NETWORK, ct_state::ESTABLISHED, ipproto::UDP);
        same_bytes("UDP", &record(&udp, None));

        let mut echo = base(obs::FROM_ENDPOINT, ct_state::NEW, ipproto::ICMP);
        (echo.icmp_type, echo.src_port, echo.dst_port) = (8, 7, 0);
        same_bytes("ICMPv4 echo request", &record(&echo, None));
        let mut unreach = base(obs::TO_ENDPOINT, ct_state::RELATED, ipproto::ICMP);
        (unreach.icmp_type, unreach.icmp_code) = (3, 3);
        same_bytes("ICMPv4 port unreachable", &record(&unreach, None));
        (unreach.icmp_type, unreach.icmp_code) = (3, 9);
        same_bytes(
            "ICMPv4 unreachable, code without a name",
            &record(&unreach, None),
        );

        let mut v6echo = base(obs::TO_ENDPOINT, ct_state::REPLY, ipproto::ICMPV6);
        v6echo.family = family::V6;
        (v6echo.src_addr, v6echo.dst_addr) = (v6(1), v6(0x2a));
        (v6echo.icmp_type, v6echo.src_port, v6echo.dst_port) = (129, 0, 7);
        same_bytes("ICMPv6 echo reply", &record(&v6echo, None));
        let mut v6tcp = base(obs::FROM_ENDPOINT, ct_state::NEW, ipproto::TCP);
        v6tcp.family = family::V6;
        (v6tcp.src_addr, v6tcp.dst_addr) = (v6(0x2a), v6(1));
        same_bytes("TCP over IPv6", &record(&v6tcp, None));

        let sctp = base(obs::FROM_ENDPOINT, ct_state::NEW, ipproto::SCTP);
        same_bytes("SCTP", &record(&sctp, None));
        let mut gre = base(obs::FROM_ENDPOINT, ct_state::NEW, 47);
        gre.flags = 0;
        same_bytes("IP without a layer 4 we parse", &record(&gre, None));
        let mut non_ip = base(obs::FROM_ENDPOINT, ct_state::UNKNOWN, 0);
        (non_ip.family, non_ip.flags) = (0, 0);
        let mut r = record(&non_ip, None);
        (r.src, r.dst) = (None, None);
        same_bytes("not IP", &r);

        let mut drop = base(0, ct_state::UNKNOWN, ipproto::TCP);
        drop.event_type = event_type::DROP;
        drop.drop_reason = 3;
        same_bytes("drop, NO_SOCKET", &record(&drop, Some("NO_SOCKET")));
        same_bytes(
            "drop, NETFILTER_DROP",
            &record(&drop, Some("NETFILTER_DROP")),
        );
        same_bytes(
            "drop, a reason we do not map",
            &record(&drop, Some("SOME_NEW_REASON")),
        );
        same_bytes("drop without a reason name", &record(&drop, None));

        let mut to_stack = base(obs::TO_STACK, ct_state::NEW, ipproto::UDP);
        to_stack.ifindex = 0;
        same_bytes("to-stack (no interface)", &record(&to_stack, None));
        let mut r = record(&udp, None);
        r.ifname = None;
        same_bytes("an interface without a name", &r);
        r.src = Some(Identity::reserved(reserved::HOST));
        r.dst = Some(pod("a-namespace", "pod-with-many-labels", 12));
        same_bytes("host to a pod with a long label list", &r);
    }

    /// Random events (every field drawn) with random endpoints: the two encodings agree.
    #[test]
    fn random_events_are_encoded_as_prost_encodes_them() {
        for rec in random_records(5_000) {
            same_bytes("a random event", &rec);
        }
        // One encoder for all of them, as a follower has: the endpoints it remembers (the
        // records share their identities' handles) are the ones prost writes.
        let mut enc = FlowEncoder::default();
        for rec in random_records(5_000) {
            same_bytes_with(&mut enc, "a random event, one encoder", &rec);
        }
    }

    /// The endpoints an encoder remembers are told apart by everything that is written of
    /// them: an identity with another number but the same shared labels and endpoint, and a
    /// pod whose snapshot changed (new handles, new contents), are written as they are now.
    #[test]
    fn a_remembered_endpoint_is_written_only_for_the_same_identity() {
        let mut enc = FlowEncoder::default();
        let mut r = record(&base(obs::FROM_ENDPOINT, ct_state::NEW, ipproto::TCP), None);
        let a = pod("ns", "a", 2);
        r.src = Some(a.clone());
        same_bytes_with(&mut enc, "pod a", &r);
        let mut renumbered = a.clone();
        renumbered.identity += 1;
        r.src = Some(renumbered);
        same_bytes_with(&mut enc, "pod a under another identity number", &r);
        for round in 0..50 {
            // Dropped and made again: the allocator may hand the new handles the addresses
            // of the old ones; the entry kept for the old ones holds them, so it cannot.
            r.src = Some(pod("ns", &format!("a-{round}"), round % 4));
            same_bytes_with(&mut enc, "a pod made again", &r);
        }
        for n in 0..(EndpointBodies::MAX + 10) {
            r.dst = Some(Identity {
                identity: n as u32,
                ..Identity::reserved(reserved::WORLD)
            });
            let mut got = Vec::new();
            enc.encode(&r, false, &mut got);
        }
        assert!(enc.endpoints.by_identity.len() <= EndpointBodies::MAX);
        same_bytes_with(&mut enc, "after the cache started again", &r);
    }
}
