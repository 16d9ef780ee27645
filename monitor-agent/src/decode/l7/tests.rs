//! The L7 decoder on records as the kernel writes them, and a bounded fuzz of the parsers.

use std::time::{Duration, Instant};

use flowscope_proto::flow::{FlowType, L7FlowType, TrafficDirection, layer7};
use monitor_common::{FlowEvent, ct_state, direction, event_flags, event_type, family, obs, proto};

use super::*;
use crate::{
    decode::{event::Event, flows::FlowBuilder, fqdn::FqdnCache},
    endpoints::Registry,
    kernel::facts::Clock,
};

const POD: [u8; 4] = [10, 244, 0, 213];
const WORLD: [u8; 4] = [1, 0, 0, 1];

fn header(
    point: u8,
    from_pod: bool,
    l4: u8,
    pod_port: u16,
    server_port: u16,
    ts: u64,
) -> FlowEvent {
    let mut ev = FlowEvent {
        ts_ns: ts,
        event_type: event_type::L7,
        obs_point: point,
        ct_state: if from_pod {
            ct_state::ESTABLISHED
        } else {
            ct_state::REPLY
        },
        direction: direction::INGRESS,
        family: family::V4,
        l4_proto: l4,
        flags: event_flags::HAS_L4,
        ..FlowEvent::default()
    };
    let (s, d, sp, dp) = if from_pod {
        (POD, WORLD, pod_port, server_port)
    } else {
        (WORLD, POD, server_port, pod_port)
    };
    ev.src_addr[..4].copy_from_slice(&s);
    ev.dst_addr[..4].copy_from_slice(&d);
    ev.src_port = sp;
    ev.dst_port = dp;
    ev
}

fn record(header: FlowEvent, payload: &[u8]) -> L7Record {
    L7Record {
        header,
        payload_len: payload.len() as u32,
        truncated: false,
        payload: payload.to_vec(),
    }
}

struct Rig {
    dec: L7Decoder,
    fqdn: FqdnCache,
    builder: FlowBuilder,
    clock: Clock,
}

impl Rig {
    fn new() -> Self {
        Rig {
            dec: L7Decoder::new(L7Ports::default()),
            fqdn: FqdnCache::new(16, Duration::from_secs(60)),
            builder: FlowBuilder::new("node".into(), Registry::new(Vec::new(), Vec::new())),
            clock: Clock::now(),
        }
    }

    fn decode(&mut self, rec: &L7Record) -> Option<Flow> {
        let ev = Event::decode(&rec.header, &self.clock, |_| None);
        let base = self.builder.build(&ev, Some("lxc1"));
        self.dec
            .decode(rec, &ev, base, &mut self.fqdn, Instant::now())
    }
}

#[test]
#[expect(deprecated, reason = "Hubble's summary")]
fn dns_query_and_answer_become_hubble_l7_flows_with_latency() {
    let mut rig = Rig::new();
    let q = rig
        .decode(&record(
            header(obs::FROM_ENDPOINT, true, proto::UDP, 40_000, 53, 1_000_000),
            &dns::tests::query(),
        ))
        .unwrap();
    assert_eq!(q.r#type, FlowType::L7 as i32);
    assert_eq!(q.event_type.as_ref().unwrap().r#type, 129);
    assert_eq!(q.is_reply, Some(false));
    assert_eq!(q.traffic_direction, TrafficDirection::Egress as i32);
    assert_eq!(q.trace_observation_point, 0);
    assert!(q.interface.is_none());
    let l7 = q.l7.as_ref().unwrap();
    assert_eq!(l7.r#type, L7FlowType::Request as i32);
    let Some(layer7::Record::Dns(d)) = &l7.record else {
        panic!()
    };
    assert_eq!(d.query, "one.one.one.one.");
    assert_eq!(d.qtypes, ["A"]);
    assert!(d.ips.is_empty(), "Cilium sets no answer fields on requests");
    assert_eq!(q.summary, "DNS Query one.one.one.one. A");

    let a = rig
        .decode(&record(
            header(obs::TO_ENDPOINT, false, proto::UDP, 40_000, 53, 3_500_000),
            &dns::tests::answer(0),
        ))
        .unwrap();
    let l7 = a.l7.as_ref().unwrap();
    assert_eq!(l7.r#type, L7FlowType::Response as i32);
    assert_eq!(l7.latency_ns, 2_500_000);
    assert_eq!(a.is_reply, Some(true));
    assert_eq!(a.traffic_direction, TrafficDirection::Egress as i32);
    let Some(layer7::Record::Dns(d)) = &l7.record else {
        panic!()
    };
    assert_eq!(d.ips, ["1.0.0.1"]);
    assert_eq!((d.ttl, d.rcode), (300, 0));
    assert_eq!(d.rrtypes, ["A"]);
    assert_eq!(d.observation_source, DNS_OBSERVATION_SOURCE);
    assert_eq!(
        a.summary,
        "DNS Answer \"1.0.0.1\" TTL: 300 (Query one.one.one.one. A)"
    );
    // The answer named the address.
    assert_eq!(
        rig.fqdn.names(&"1.0.0.1".parse().unwrap(), Instant::now()),
        ["one.one.one.one"]
    );
    // An answer to nothing asked has no latency, and is counted.
    let again = rig
        .decode(&record(
            header(obs::TO_ENDPOINT, false, proto::UDP, 40_000, 53, 9_000_000),
            &dns::tests::answer(3),
        ))
        .unwrap();
    assert_eq!(again.l7.unwrap().latency_ns, 0);
    assert_eq!(
        again.summary,
        "DNS Answer RCode: Non-Existent Domain TTL: 0 (Query one.one.one.one. A)"
    );
    assert_eq!(rig.dec.stats().unmatched[0].load(Ordering::Relaxed), 1);
}

#[test]
#[expect(deprecated, reason = "Hubble's summary")]
fn http_request_and_response_pair_in_order() {
    let mut rig = Rig::new();
    let h = |from_pod, ts| header(obs::FROM_ENDPOINT, from_pod, proto::TCP, 50_000, 80, ts);
    let req = rig
        .decode(&record(
            h(true, 10_000_000),
            b"GET / HTTP/1.1\r\nHost: one.one.one.one\r\nCookie: secret\r\n\r\n",
        ))
        .unwrap();
    let Some(layer7::Record::Http(r)) = &req.l7.as_ref().unwrap().record else {
        panic!()
    };
    assert_eq!(
        (r.method.as_str(), r.url.as_str()),
        ("GET", "http://one.one.one.one/")
    );
    assert_eq!(r.headers[0].key, "Cookie");
    assert_eq!(r.headers[0].value, http::REDACTED_VALUE);
    assert_eq!(req.summary, "HTTP/1.1 GET http://one.one.one.one/");
    let mut resp_header = h(false, 25_000_000);
    resp_header.obs_point = obs::TO_ENDPOINT;
    let resp = rig
        .decode(&record(
            resp_header,
            b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\n",
        ))
        .unwrap();
    let l7 = resp.l7.as_ref().unwrap();
    assert_eq!(l7.latency_ns, 15_000_000);
    let Some(layer7::Record::Http(r)) = &l7.record else {
        panic!()
    };
    assert_eq!((r.code, r.method.as_str()), (404, "GET"));
    assert_eq!(
        resp.summary,
        "HTTP/1.0 404 15ms (GET http://one.one.one.one/)"
    );
    // A body segment on the same connection is not a message.
    assert!(
        rig.decode(&record(h(false, 26_000_000), b"<html>not found</html>"))
            .is_none()
    );
    assert_eq!(rig.dec.stats().malformed[1].load(Ordering::Relaxed), 1);
}

#[test]
fn url_without_a_host_header_names_the_server() {
    let ip: IpAddr = "1.0.0.1".parse().unwrap();
    assert_eq!(url_of("/a?b", None, ip, 80), "http://1.0.0.1/a?b");
    assert_eq!(url_of("/", None, ip, 8080), "http://1.0.0.1:8080/");
    assert_eq!(url_of("http://x/y", Some("z"), ip, 80), "http://x/y");
}

#[test]
fn l7_ports_parse_and_map_to_the_kernel() {
    let p: L7Ports = "dns:53, http:80,http:8080".parse().unwrap();
    assert_eq!(p, L7Ports::default());
    let k = p.kernel_config(512);
    assert!(k.has_port(proto::UDP, 53) && k.has_port(proto::TCP, 53));
    assert!(k.has_port(proto::TCP, 8080) && !k.has_port(proto::UDP, 8080));
    assert_eq!(k.snap_len, 512);
    assert_eq!(p.kernel_config(100_000).snap_len, L7_PAYLOAD_MAX as u32);
    let none: L7Ports = "".parse().unwrap();
    assert!(none.is_empty());
    assert_eq!(none.kernel_config(512).snap_len, 0);
    assert!("ftp:21".parse::<L7Ports>().is_err());
    assert!("dns:0".parse::<L7Ports>().is_err());
    assert!("http:80,dns:80".parse::<L7Ports>().is_err());
    assert_eq!(p.protocol(proto::UDP, 40_000, 80), None, "HTTP is TCP only");
    assert_eq!(p.protocol(proto::TCP, 80, 50_000), Some(L7Proto::Http));
}

/// A bounded fuzz (fixed seed, fixed count): random bytes and mutations of valid messages
/// through both parsers and the whole decoder. Nothing may panic; whatever parses must have
/// come from a message start.
#[test]
fn fuzz_parsers_and_decoder_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x17_15);
    let seeds: Vec<Vec<u8>> = vec![
        dns::tests::query(),
        dns::tests::answer(0),
        dns::tests::answer(3),
        b"GET /x HTTP/1.1\r\nHost: a\r\nCookie: c\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    ];
    let mut rig = Rig::new();
    for i in 0..20_000u32 {
        let mut b = if i % 4 == 0 {
            let n = rng.usize(0..600);
            (0..n).map(|_| rng.u8(..)).collect()
        } else {
            seeds[rng.usize(..seeds.len())].clone()
        };
        for _ in 0..rng.usize(0..6) {
            if b.is_empty() {
                break;
            }
            let at = rng.usize(..b.len());
            match rng.u8(0..3) {
                0 => b[at] = rng.u8(..),
                1 => b.truncate(at),
                _ => b.insert(at, rng.u8(..)),
            }
        }
        b.truncate(L7_PAYLOAD_MAX);
        let cut = rng.bool();
        let _ = dns::parse(&b, rng.bool(), cut);
        let _ = http::parse(&b);
        let (l4, port) = match rng.u8(0..3) {
            0 => (proto::UDP, 53),
            1 => (proto::TCP, 53),
            _ => (proto::TCP, 80),
        };
        let mut rec = record(
            header(
                obs::FROM_ENDPOINT,
                rng.bool(),
                l4,
                40_000 + (i % 7) as u16,
                port,
                u64::from(i),
            ),
            &b,
        );
        rec.truncated = cut;
        let _ = rig.decode(&rec);
    }
    rig.dec.expire(Instant::now() + PENDING_TTL);
    assert!(rig.dec.dns_pending.is_empty() && rig.dec.http_pending.is_empty());
}
