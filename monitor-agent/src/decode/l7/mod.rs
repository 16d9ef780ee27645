//! L7 flows from captured payloads: DNS and HTTP/1.x, without a proxy.
//!
//! The kernel copies the first bytes of TCP and UDP payloads on the L7 ports (see
//! `monitor-ebpf/src/l7.rs` and `--l7-ports`); here each record is parsed ([`dns`], [`http`])
//! and becomes a Hubble L7 flow as Cilium's proxy reports one (`pkg/hubble/parser/seven`):
//! `Type: L7`, event type 129, `l7.type` REQUEST or RESPONSE, `is_reply`, the `l7.dns` or
//! `l7.http` record and Hubble's summary. A response's `l7.latency_ns` is the time since its
//! request: DNS by connection (the 5-tuple) and message id, HTTP by request order on the
//! connection (HTTP/1.x answers in order). DNS answers feed the [`FqdnCache`].
//!
//! A payload that is not a message (a body segment, another protocol on the port, garbage)
//! yields no flow and is counted in [`L7Stats`]; nothing here panics on input (the parsers are
//! fuzzed in the tests below).

pub mod dns;
pub mod http;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use flowscope_proto::flow::{
    self, CiliumEventType, Flow, FlowType, L7FlowType, Layer7, TraceObservationPoint, layer4,
    layer7,
};
use monitor_common::{L7_PAYLOAD_MAX, L7Config, event_type, proto as ipproto};

use crate::{
    decode::{
        event::{Event, ObsPoint},
        fqdn::FqdnCache,
    },
    kernel::reader::L7Record,
};

/// Cilium's observation source of DNS records from its proxy is `proxy`; ours come from
/// packets seen by the kernel programs.
pub const DNS_OBSERVATION_SOURCE: &str = "datapath";

/// Requests waiting for their response, at most this many per protocol; older ones are
/// forgotten after [`PENDING_TTL`].
const MAX_PENDING: usize = 16_384;
/// How long a request waits for its response before it is forgotten.
const PENDING_TTL: Duration = Duration::from_secs(30);
/// Requests remembered per HTTP connection (pipelining depth).
const MAX_PIPELINED: usize = 32;

/// An L7 protocol the agent parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L7Proto {
    /// DNS, over UDP and TCP.
    Dns,
    /// HTTP/1.x, over TCP.
    Http,
}

impl L7Proto {
    /// The name in `--l7-ports` and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            L7Proto::Dns => "dns",
            L7Proto::Http => "http",
        }
    }
}

/// The L7 port set (`--l7-ports`): which ports carry which protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L7Ports {
    ports: Vec<(L7Proto, u16)>,
}

impl Default for L7Ports {
    /// DNS on 53 (UDP and TCP), HTTP on 80 and 8080.
    fn default() -> Self {
        L7Ports {
            ports: vec![
                (L7Proto::Dns, 53),
                (L7Proto::Http, 80),
                (L7Proto::Http, 8080),
            ],
        }
    }
}

impl std::str::FromStr for L7Ports {
    type Err = String;

    /// `dns:53,http:80,http:8080`; empty: no capture.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut ports = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (proto, port) = item
                .split_once(':')
                .ok_or_else(|| format!("`{item}`: expected PROTOCOL:PORT, e.g. dns:53, http:80"))?;
            let proto = match proto.to_ascii_lowercase().as_str() {
                "dns" => L7Proto::Dns,
                "http" => L7Proto::Http,
                other => return Err(format!("`{other}`: the L7 protocols are dns and http")),
            };
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{port}`: expected a port between 1 and 65535"))?;
            if ports.iter().any(|(_, p)| *p == port) {
                return Err(format!("port {port} is listed twice"));
            }
            ports.push((proto, port));
        }
        Ok(L7Ports { ports })
    }
}

impl L7Ports {
    /// No capture at all.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The kernel's form, copying `snap_len` bytes per packet (clamped to what a record holds).
    pub fn kernel_config(&self, snap_len: usize) -> L7Config {
        let mut c = L7Config::DISABLED;
        if self.ports.is_empty() {
            return c;
        }
        c.snap_len = snap_len.clamp(1, L7_PAYLOAD_MAX) as u32;
        for (proto, port) in &self.ports {
            c.add_port(ipproto::TCP, *port);
            if *proto == L7Proto::Dns {
                c.add_port(ipproto::UDP, *port);
            }
        }
        c
    }

    /// The protocol of a packet between these ports; the server's (destination of a request,
    /// source of a response) is the one looked for first.
    pub fn protocol(&self, l4: u8, src_port: u16, dst_port: u16) -> Option<L7Proto> {
        let of = |port: u16| {
            self.ports
                .iter()
                .find(|(_, p)| *p == port)
                .map(|(proto, _)| *proto)
                .filter(|proto| l4 == ipproto::TCP || *proto == L7Proto::Dns)
        };
        of(dst_port).or_else(|| of(src_port))
    }
}

/// Counters of the L7 decoder, for metrics (`flowscope_l7_*`).
#[derive(Debug, Default)]
pub struct L7Stats {
    /// L7 flows emitted: DNS, HTTP.
    pub flows: [AtomicU64; 2],
    /// Payloads that were not a message (malformed): DNS, HTTP.
    pub malformed: [AtomicU64; 2],
    /// Payloads cut before a message could be read (truncated): DNS, HTTP.
    pub truncated: [AtomicU64; 2],
    /// Responses without a request seen (no latency): DNS, HTTP.
    pub unmatched: [AtomicU64; 2],
}

impl L7Stats {
    fn slot(proto: L7Proto) -> usize {
        match proto {
            L7Proto::Dns => 0,
            L7Proto::Http => 1,
        }
    }

    fn inc(counters: &[AtomicU64; 2], proto: L7Proto) {
        counters[Self::slot(proto)].fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection, client side first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Conn {
    client: IpAddr,
    client_port: u16,
    server: IpAddr,
    server_port: u16,
    proto: u8,
}

/// An HTTP request waiting for its response.
struct HttpRequest {
    at_ns: u64,
    seen: Instant,
    method: String,
    url: String,
}

/// The L7 decoder: parsers plus the state that pairs responses with requests.
pub struct L7Decoder {
    ports: L7Ports,
    dns_pending: HashMap<(Conn, u16), (u64, Instant)>,
    http_pending: HashMap<Conn, VecDeque<HttpRequest>>,
    http_pending_len: usize,
    stats: Arc<L7Stats>,
}

impl L7Decoder {
    /// A decoder for the protocols of `ports`.
    pub fn new(ports: L7Ports) -> Self {
        L7Decoder {
            ports,
            dns_pending: HashMap::new(),
            http_pending: HashMap::new(),
            http_pending_len: 0,
            stats: Arc::default(),
        }
    }

    /// The counters, shared with metrics.
    pub fn stats(&self) -> Arc<L7Stats> {
        self.stats.clone()
    }

    /// Forgets requests older than [`PENDING_TTL`] (the agent calls it every second).
    pub fn expire(&mut self, now: Instant) {
        self.dns_pending
            .retain(|_, (_, seen)| now.duration_since(*seen) < PENDING_TTL);
        let mut len = 0;
        self.http_pending.retain(|_, q| {
            q.retain(|r| now.duration_since(r.seen) < PENDING_TTL);
            len += q.len();
            !q.is_empty()
        });
        self.http_pending_len = len;
    }

    /// Turns `rec` into an L7 flow: `base` is the flow the builder made of the record's header
    /// (endpoints, addresses, ports, direction). DNS answers go into `fqdn`. `None` when the
    /// payload is not a message (counted).
    pub fn decode(
        &mut self,
        rec: &L7Record,
        ev: &Event,
        base: Flow,
        fqdn: &mut FqdnCache,
        now: Instant,
    ) -> Option<Flow> {
        let (src, dst) = (ev.src?, ev.dst?);
        let proto = self.ports.protocol(ev.proto, ev.src_port, ev.dst_port)?;
        let tcp = ev.proto == ipproto::TCP;
        let (record, l7_type, latency_ns, summary) = match proto {
            L7Proto::Dns => {
                let m = match dns::parse(&rec.payload, tcp, rec.truncated) {
                    Ok(m) => m,
                    Err(dns::DnsError::Truncated) => {
                        L7Stats::inc(&self.stats.truncated, proto);
                        return None;
                    }
                    Err(dns::DnsError::Malformed) => {
                        L7Stats::inc(&self.stats.malformed, proto);
                        return None;
                    }
                };
                let latency = self.dns_latency(&m, ev, src, dst, now);
                if m.response && m.rcode == 0 && !m.ips.is_empty() {
                    let name = m.query.trim_end_matches('.');
                    fqdn.insert(name, &m.ips, m.ttl, now);
                }
                let summary = dns_summary(&m);
                let l7_type = if m.response {
                    L7FlowType::Response
                } else {
                    L7FlowType::Request
                };
                (
                    layer7::Record::Dns(dns_record(&m)),
                    l7_type,
                    latency,
                    summary,
                )
            }
            L7Proto::Http => {
                let head = match http::parse(&rec.payload) {
                    Ok(h) => h,
                    // Bodies of large messages follow their head on the same port: only a
                    // payload that does not even start a line counts as malformed.
                    Err(http::HttpError::Truncated) => {
                        L7Stats::inc(&self.stats.truncated, proto);
                        return None;
                    }
                    Err(http::HttpError::Malformed) => {
                        L7Stats::inc(&self.stats.malformed, proto);
                        return None;
                    }
                };
                self.http(head, ev, src, dst, now)
            }
        };
        L7Stats::inc(&self.stats.flows, proto);
        Some(l7_flow(base, ev, record, l7_type, latency_ns, summary))
    }

    fn dns_latency(
        &mut self,
        m: &dns::DnsMessage,
        ev: &Event,
        src: IpAddr,
        dst: IpAddr,
        now: Instant,
    ) -> u64 {
        if !m.response {
            let conn = Conn {
                client: src,
                client_port: ev.src_port,
                server: dst,
                server_port: ev.dst_port,
                proto: ev.proto,
            };
            if self.dns_pending.len() < MAX_PENDING {
                self.dns_pending.insert((conn, m.id), (ev.ktime_ns, now));
            }
            return 0;
        }
        let conn = Conn {
            client: dst,
            client_port: ev.dst_port,
            server: src,
            server_port: ev.src_port,
            proto: ev.proto,
        };
        match self.dns_pending.remove(&(conn, m.id)) {
            Some((at, _)) => ev.ktime_ns.saturating_sub(at),
            None => {
                L7Stats::inc(&self.stats.unmatched, L7Proto::Dns);
                0
            }
        }
    }

    fn http(
        &mut self,
        head: http::HttpHead,
        ev: &Event,
        src: IpAddr,
        dst: IpAddr,
        now: Instant,
    ) -> (layer7::Record, L7FlowType, u64, String) {
        match head {
            http::HttpHead::Request {
                ref method,
                ref target,
                ref protocol,
                ref headers,
                ..
            } => {
                let url = url_of(target, head.host(), dst, ev.dst_port);
                let conn = Conn {
                    client: src,
                    client_port: ev.src_port,
                    server: dst,
                    server_port: ev.dst_port,
                    proto: ev.proto,
                };
                let q = self.http_pending.entry(conn).or_default();
                if q.len() < MAX_PIPELINED && self.http_pending_len < MAX_PENDING {
                    q.push_back(HttpRequest {
                        at_ns: ev.ktime_ns,
                        seen: now,
                        method: method.clone(),
                        url: url.clone(),
                    });
                    self.http_pending_len += 1;
                }
                let summary = format!("{protocol} {method} {url}");
                let rec = flow::Http {
                    method: method.clone(),
                    url,
                    protocol: protocol.clone(),
                    headers: sorted_headers(headers),
                    ..flow::Http::default()
                };
                (layer7::Record::Http(rec), L7FlowType::Request, 0, summary)
            }
            http::HttpHead::Response {
                code,
                protocol,
                headers,
                ..
            } => {
                let conn = Conn {
                    client: dst,
                    client_port: ev.dst_port,
                    server: src,
                    server_port: ev.src_port,
                    proto: ev.proto,
                };
                let (req, drained) = match self.http_pending.get_mut(&conn) {
                    Some(q) => (q.pop_front(), q.is_empty()),
                    None => (None, false),
                };
                if drained {
                    self.http_pending.remove(&conn);
                }
                if req.is_some() {
                    self.http_pending_len = self.http_pending_len.saturating_sub(1);
                } else {
                    L7Stats::inc(&self.stats.unmatched, L7Proto::Http);
                }
                let (latency, method, url) = match req {
                    Some(r) => (ev.ktime_ns.saturating_sub(r.at_ns), r.method, r.url),
                    None => (0, String::new(), String::new()),
                };
                let summary = format!(
                    "{protocol} {code} {}ms ({method} {url})",
                    latency / 1_000_000
                );
                let rec = flow::Http {
                    code: u32::from(code),
                    method,
                    url,
                    protocol,
                    headers: sorted_headers(&headers),
                };
                (
                    layer7::Record::Http(rec),
                    L7FlowType::Response,
                    latency,
                    summary,
                )
            }
        }
    }
}

/// The request's URL as Envoy reports it to Hubble: scheme, host (the `Host` header, else the
/// server's address and port) and the request target; an absolute target as sent.
fn url_of(target: &str, host: Option<&str>, server: IpAddr, port: u16) -> String {
    if target.starts_with("http://") || target.starts_with("https://") {
        return target.to_owned();
    }
    let host = match host {
        Some(h) if !h.is_empty() => h.to_owned(),
        _ => match (server, port) {
            (IpAddr::V4(a), 80) => a.to_string(),
            (IpAddr::V6(a), 80) => format!("[{a}]"),
            (IpAddr::V4(a), p) => format!("{a}:{p}"),
            (IpAddr::V6(a), p) => format!("[{a}]:{p}"),
        },
    };
    let sep = if target.starts_with('/') { "" } else { "/" };
    format!("http://{host}{sep}{target}")
}

/// Hubble sorts headers by key (stable: repeated keys keep their order).
fn sorted_headers(headers: &[(String, String)]) -> Vec<flow::HttpHeader> {
    let mut v: Vec<flow::HttpHeader> = headers
        .iter()
        .map(|(k, v)| flow::HttpHeader {
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

fn dns_record(m: &dns::DnsMessage) -> flow::Dns {
    let mut d = flow::Dns {
        query: m.query.clone(),
        observation_source: DNS_OBSERVATION_SOURCE.to_owned(),
        qtypes: m.qtypes.clone(),
        ..flow::Dns::default()
    };
    // Cilium sets only these three on requests.
    if m.response {
        d.ips = m.ips.iter().map(IpAddr::to_string).collect();
        d.ttl = m.ttl;
        d.cnames = m.cnames.clone();
        d.rcode = m.rcode;
        d.rrtypes = m.rrtypes.clone();
    }
    d
}

/// Hubble's summary of a DNS record (`dnsSummary` in Cilium's `parser/seven`).
fn dns_summary(m: &dns::DnsMessage) -> String {
    let qtypes = m.qtypes.join(",");
    if !m.response {
        return format!("DNS Query {} {qtypes}", m.query);
    }
    let answer = if m.rcode != 0 {
        format!("RCode: {}", dns::rcode_name(m.rcode))
    } else {
        let mut parts = Vec::new();
        if !m.ips.is_empty() {
            let ips: Vec<String> = m.ips.iter().map(IpAddr::to_string).collect();
            parts.push(format!("{:?}", ips.join(",")));
        }
        if !m.cnames.is_empty() {
            parts.push(format!("CNAMEs: {:?}", m.cnames.join(",")));
        }
        parts.join(" ")
    };
    format!(
        "DNS Answer {answer} TTL: {} (Query {} {qtypes})",
        m.ttl, m.query
    )
}

/// `base` (the builder's flow for the record's header) made into an L7 flow as Cilium's
/// `parser/seven` fills one: no trace point, no interface, no TCP flags, event type 129.
#[expect(
    deprecated,
    reason = "Hubble's Summary and reply are deprecated but clients still read them"
)]
fn l7_flow(
    mut f: Flow,
    ev: &Event,
    record: layer7::Record,
    l7_type: L7FlowType,
    latency_ns: u64,
    summary: String,
) -> Flow {
    let reply = l7_type == L7FlowType::Response;
    f.r#type = FlowType::L7 as i32;
    f.event_type = Some(CiliumEventType {
        r#type: i32::from(event_type::L7),
        sub_type: 0,
    });
    f.trace_observation_point = TraceObservationPoint::UnknownPoint as i32;
    f.trace_reason = 0;
    f.interface = None;
    f.ethernet = None;
    f.is_reply = Some(reply);
    f.reply = reply;
    if let Some(l4) = f.l4.as_mut()
        && let Some(layer4::Protocol::Tcp(t)) = l4.protocol.as_mut()
    {
        t.flags = None;
    }
    // Direction of the connection from the pod's side: a request the pod sent (or a response
    // delivered to it) is its egress traffic; a request delivered to it, ingress.
    let pod_sent = ev.point == ObsPoint::FromEndpoint;
    f.traffic_direction = if pod_sent != reply {
        flow::TrafficDirection::Egress
    } else {
        flow::TrafficDirection::Ingress
    } as i32;
    f.l7 = Some(Layer7 {
        r#type: l7_type as i32,
        latency_ns,
        record: Some(record),
    });
    f.summary = summary;
    f
}

#[cfg(test)]
mod tests;
