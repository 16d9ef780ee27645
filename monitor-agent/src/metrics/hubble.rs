//! Hubble's flow metrics, computed from each flow as it is built: same names, same labels, same
//! rules about which flows count, so that Hubble's dashboards and alerts work unchanged.
//!
//! | `--metrics` | series | counts |
//! |---|---|---|
//! | `flow` | `hubble_flows_processed_total{protocol,type,subtype,verdict}` | every flow |
//! | `drop` | `hubble_drop_total{reason,protocol}` | dropped flows |
//! | `tcp` | `hubble_tcp_flags_total{flag,family}` | forwarded SYN, SYN-ACK, FIN, RST |
//! | `port-distribution` | `hubble_port_distribution_total{protocol,port}` | forwarded non-reply flows, by destination port |
//! | `icmp` | `hubble_icmp_total{family,type}` | ICMP messages, by gopacket type name |
//! | `flows-to-world` | `hubble_flows_to_world_total{protocol,verdict}` | flows to `reserved:world`, no replies; drops only if denied by policy unless `any-drop` |
//! | `dns` | `hubble_dns_queries_total{rcode,qtypes,ips_returned}`, `hubble_dns_responses_total{rcode,qtypes,ips_returned}`, `hubble_dns_response_types_total{type,qtypes}` | L7 DNS flows: queries, responses, each answer record type (`query` adds the name, `ignoreAAAA` leaves AAAA-only questions out) |
//! | `http` | `hubble_http_requests_total{method,protocol,reporter}`, `hubble_http_responses_total{method,protocol,status,reporter}`, `hubble_http_request_duration_seconds{method,reporter}` | L7 HTTP flows; `reporter` is `client` for egress, `server` for ingress; the histogram observes each response's latency |
//!
//! A drop's `reason` is what it is on Cilium, the name of the flow's Hubble `DropReason`: the
//! Hubble reason that means what the kernel's reason means, `DROP_REASON_UNKNOWN` where none does
//! (`NETFILTER_DROP` among them: `docs/drop-reasons.md`). `flows-to-world` counts a drop, as
//! Hubble does, only when it is `POLICY_DENIED` (or with `any-drop`). The kernel's own reason is
//! in flowscope's series next to it, `flowscope_drops_total{reason,protocol}` (`NETFILTER_DROP`,
//! `NO_SOCKET`, …: a closed set read from BTF), on whenever `drop` is.
//!
//! Context labels (`source`, `destination`, `labelsContext`) name endpoints: their series are
//! removed when not incremented for the series TTL (see [`FlowMetrics::tick`]), so that pods that
//! are gone do not stay in every scrape forever.

use std::{
    borrow::Cow,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use flowscope_proto::flow::{
    DropReason, IpVersion, L7FlowType, Layer7, TrafficDirection, Verdict, layer4::Protocol, layer7,
};
use monitor_common::event_type;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{
        MetricType, counter::ConstCounter, family::Family, gauge::ConstGauge, histogram::Histogram,
    },
};

use super::{
    family::CounterFamily,
    options::{CONTEXT_LABELS, ContextId, ContextOptions, MetricKind, MetricSpec},
    view::FlowView,
};

/// Most series one Hubble metric may hold (see the module docs of `family`).
pub const MAX_SERIES_PER_METRIC: usize = 20_000;

/// Fixed labels first, then `labelsContext`, `source`, `destination`, plus `port`.
const MAX_LABELS: usize = 5 + CONTEXT_LABELS.len() + 2;

/// `flowscope_drops_total`: drops by the kernel's reason.
const KERNEL_DROPS: &str = "flowscope_drops";

/// The label value of a drop whose kernel reason has no name (kernels before 5.17).
const UNNAMED_KERNEL_REASON: &str = "UNKNOWN";

struct Handler {
    spec: MetricSpec,
    family: CounterFamily,
    /// The metric's other counters: DNS responses and response types, HTTP responses.
    extra: Vec<CounterFamily>,
    /// `hubble_http_request_duration_seconds`, for `http`.
    duration: Option<DurationFamily>,
    /// Series expire only where labels name endpoints; the others come from closed sets.
    expires: bool,
}

/// Label values of a histogram series, owned: one allocation per response, on the L7 path only.
type LabelValues = Vec<(&'static str, String)>;

/// A histogram family with Prometheus' default buckets, as Hubble's.
struct DurationFamily {
    name: &'static str,
    help: &'static str,
    label_names: Vec<&'static str>,
    family: Family<LabelValues, Histogram, fn() -> Histogram>,
}

impl DurationFamily {
    fn new(name: &'static str, help: &'static str, label_names: Vec<&'static str>) -> Self {
        fn default_buckets() -> Histogram {
            // The Go client's DefBuckets, which Hubble's histogram uses.
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        }
        DurationFamily {
            name,
            help,
            label_names,
            family: Family::new_with_constructor(default_buckets),
        }
    }

    fn observe(&self, values: &[&str], seconds: f64) {
        let labels: LabelValues = self
            .label_names
            .iter()
            .zip(values)
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        self.family.get_or_create(&labels).observe(seconds);
    }

    fn encode_into(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = encoder.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
        self.family.encode(m)
    }
}

/// The enabled Hubble metrics. `observe_flow` is called for every flow by the pipeline.
pub struct FlowMetrics {
    handlers: Vec<Handler>,
    /// Drops by the kernel's reason, when the `drop` metric is on.
    kernel_drops: Option<CounterFamily>,
    started: Instant,
    /// Seconds since `started`, advanced by `tick` (the hot path must not read the clock).
    now: AtomicU32,
    ttl: u32,
    expired: AtomicU64,
}

impl std::fmt::Debug for FlowMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.handlers.iter().map(|h| &h.family))
            .finish()
    }
}

fn names_and_help(spec: &MetricSpec) -> (&'static str, &'static str, Vec<&'static str>) {
    let (name, help, mut labels): (_, _, Vec<&'static str>) = match spec.kind {
        MetricKind::Flow => (
            "hubble_flows_processed",
            "Total number of flows processed",
            vec!["protocol", "type", "subtype", "verdict"],
        ),
        MetricKind::Drop => ("hubble_drop", "Number of drops", vec!["reason", "protocol"]),
        MetricKind::Tcp => (
            "hubble_tcp_flags",
            "TCP flag occurrences",
            vec!["flag", "family"],
        ),
        MetricKind::PortDistribution => (
            "hubble_port_distribution",
            "Numbers of packets distributed by destination port",
            vec!["protocol", "port"],
        ),
        MetricKind::Icmp => (
            "hubble_icmp",
            "Number of ICMP messages",
            vec!["family", "type"],
        ),
        MetricKind::FlowsToWorld => (
            "hubble_flows_to_world",
            "Total number of flows to reserved:world",
            vec!["protocol", "verdict"],
        ),
        MetricKind::Dns => (
            "hubble_dns_queries",
            "Number of DNS queries observed",
            dns_labels(spec, &["rcode", "qtypes", "ips_returned"]),
        ),
        MetricKind::Http => (
            "hubble_http_requests",
            "Count of HTTP requests",
            vec!["method", "protocol", "reporter"],
        ),
    };
    if spec.port {
        labels.push("port");
    }
    labels.extend(spec.context.label_names());
    (name, help, labels)
}

fn dns_labels(spec: &MetricSpec, fixed: &[&'static str]) -> Vec<&'static str> {
    let mut v = fixed.to_vec();
    if spec.query {
        v.push("query");
    }
    v
}

/// A metric's counters besides its first, and its histogram (Hubble's names and help).
fn extras(spec: &MetricSpec) -> (Vec<CounterFamily>, Option<DurationFamily>) {
    let with_context = |mut labels: Vec<&'static str>| {
        labels.extend(spec.context.label_names());
        labels
    };
    let family = |name, help, labels| {
        CounterFamily::new(name, help, with_context(labels), MAX_SERIES_PER_METRIC)
    };
    match spec.kind {
        MetricKind::Dns => (
            vec![
                family(
                    "hubble_dns_responses",
                    "Number of DNS queries observed",
                    dns_labels(spec, &["rcode", "qtypes", "ips_returned"]),
                ),
                family(
                    "hubble_dns_response_types",
                    "Number of DNS queries observed",
                    dns_labels(spec, &["type", "qtypes"]),
                ),
            ],
            None,
        ),
        MetricKind::Http => (
            vec![family(
                "hubble_http_responses",
                "Count of HTTP responses",
                vec!["method", "protocol", "status", "reporter"],
            )],
            Some(DurationFamily::new(
                "hubble_http_request_duration_seconds",
                "Quantiles of HTTP request duration in seconds",
                with_context(vec!["method", "reporter"]),
            )),
        ),
        _ => (Vec::new(), None),
    }
}

impl FlowMetrics {
    /// The metrics of `specs`; series with endpoint labels expire after `ttl` without flows.
    pub fn new(specs: &[MetricSpec], ttl: Duration) -> Self {
        let handlers = specs
            .iter()
            .map(|spec| {
                let (name, help, labels) = names_and_help(spec);
                let (extra, duration) = extras(spec);
                Handler {
                    spec: spec.clone(),
                    family: CounterFamily::new(name, help, labels, MAX_SERIES_PER_METRIC),
                    extra,
                    duration,
                    expires: !spec.context.is_empty(),
                }
            })
            .collect();
        let kernel_drops = specs.iter().any(|s| s.kind == MetricKind::Drop).then(|| {
            CounterFamily::new(
                KERNEL_DROPS,
                "Number of drops by the kernel's drop reason (enum skb_drop_reason)",
                vec!["reason", "protocol"],
                MAX_SERIES_PER_METRIC,
            )
        });
        FlowMetrics {
            handlers,
            kernel_drops,
            started: Instant::now(),
            now: AtomicU32::new(0),
            ttl: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX).max(1),
            expired: AtomicU64::new(0),
        }
    }

    /// Counts one flow in every enabled metric. Takes a read lock per metric and allocates
    /// only for a new series or for context labels that are not plain fields (`identity`,
    /// `pod`).
    pub fn observe_flow(&self, flow: &impl FlowView) {
        let now = self.now.load(Ordering::Relaxed);
        let facts = Facts::of(flow);
        for h in &self.handlers {
            h.observe(flow, &facts, now);
        }
        if let Some(kernel) = &self.kernel_drops
            && facts.verdict == Verdict::Dropped
        {
            let name = flow.kernel_drop_reason_name();
            let reason = name.as_deref().unwrap_or(UNNAMED_KERNEL_REASON);
            kernel.inc(&[reason, facts.protocol], now);
        }
    }

    /// Advances the coarse clock and removes expired series; called about once a second.
    pub fn tick(&self) {
        let now = u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX);
        let before = self.now.swap(now, Ordering::Relaxed);
        // Expiry takes write locks: every ttl/4 at most, not every second.
        let every = (self.ttl / 4).clamp(1, 60);
        if now / every != before / every {
            self.expire_at(now);
        }
    }

    fn expire_at(&self, now: u32) {
        for h in self.handlers.iter().filter(|h| h.expires) {
            let n = h.family.expire(now, self.ttl)
                + h.extra.iter().map(|f| f.expire(now, self.ttl)).sum::<u64>();
            self.expired.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The family of one metric (tests).
    pub fn family(&self, kind: MetricKind) -> Option<&CounterFamily> {
        self.handlers
            .iter()
            .find(|h| h.spec.kind == kind)
            .map(|h| &h.family)
    }

    /// Every enabled Hubble counter (a metric's own, then its others: DNS responses, HTTP
    /// responses), then `flowscope_drops` when `drop` is on (the OTLP exporter pushes them; the
    /// HTTP duration histogram is not among them).
    pub fn families(&self) -> impl Iterator<Item = &CounterFamily> {
        self.handlers
            .iter()
            .flat_map(|h| std::iter::once(&h.family).chain(h.extra.iter()))
            .chain(self.kernel_drops.iter())
    }

    /// A metric's other counter families (tests): DNS responses and response types, HTTP
    /// responses.
    pub fn extra_families(&self, kind: MetricKind) -> &[CounterFamily] {
        self.handlers
            .iter()
            .find(|h| h.spec.kind == kind)
            .map_or(&[], |h| &h.extra)
    }

    /// `flowscope_drops_total`, when the `drop` metric is on (tests).
    pub fn kernel_drops(&self) -> Option<&CounterFamily> {
        self.kernel_drops.as_ref()
    }
}

impl Collector for FlowMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for h in &self.handlers {
            h.family.encode_into(&mut encoder)?;
            for f in &h.extra {
                f.encode_into(&mut encoder)?;
            }
            if let Some(d) = &h.duration {
                d.encode_into(&mut encoder)?;
            }
        }
        if let Some(kernel) = &self.kernel_drops {
            kernel.encode_into(&mut encoder)?;
        }
        // How close each metric is to its bound, by metric name (a closed set).
        let mut series = encoder.encode_descriptor(
            "flowscope_metrics_series",
            "Series held by each Hubble metric",
            None,
            MetricType::Gauge,
        )?;
        for h in &self.handlers {
            let l = [("metric", h.family.name())];
            ConstGauge::new(h.family.len()).encode(series.encode_family(&l)?)?;
        }
        let mut refused = encoder.encode_descriptor(
            "flowscope_metrics_series_refused",
            "New series not created because their Hubble metric held the most series allowed",
            None,
            MetricType::Counter,
        )?;
        for h in &self.handlers {
            let l = [("metric", h.family.name())];
            ConstCounter::new(h.family.refused()).encode(refused.encode_family(&l)?)?;
        }
        ConstCounter::new(self.expired.load(Ordering::Relaxed)).encode(encoder.encode_descriptor(
            "flowscope_metrics_series_expired",
            "Series removed because their endpoint had no flow for the series TTL",
            None,
            MetricType::Counter,
        )?)
    }
}

/// Label values of one flow for one metric, on the stack.
struct Values<'a> {
    v: [&'a str; MAX_LABELS],
    n: usize,
}

impl<'a> Values<'a> {
    fn new() -> Self {
        Values {
            v: [""; MAX_LABELS],
            n: 0,
        }
    }
    fn push(&mut self, s: &'a str) {
        self.v[self.n] = s;
        self.n += 1;
    }
    fn as_slice(&self) -> &[&'a str] {
        &self.v[..self.n]
    }
}

/// Decimal digits of a port, without allocating.
fn port_str(port: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    let mut n = port;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// What every metric asks of a flow, worked out once per flow.
struct Facts {
    verdict: Verdict,
    l4: Option<Protocol>,
    protocol: &'static str,
    /// Hubble's drop reason name, for drops only.
    drop_reason: Cow<'static, str>,
}

impl Facts {
    fn of(f: &impl FlowView) -> Self {
        let verdict = f.verdict();
        let l4 = f.protocol();
        Facts {
            verdict,
            protocol: protocol(f.event_type(), l4.as_ref(), f.l7()),
            l4,
            drop_reason: if verdict == Verdict::Dropped {
                drop_reason(f.drop_reason_desc())
            } else {
                Cow::Borrowed("")
            },
        }
    }

    fn is_policy_drop(&self, f: &impl FlowView) -> bool {
        f.drop_reason_desc() == DropReason::PolicyDenied as i32
    }
}

impl Handler {
    fn observe<F: FlowView>(&self, f: &F, facts: &Facts, now: u32) {
        // Context values are worked out only for flows this metric counts, once.
        let mut context: Option<Context<'_>> = None;
        let mut inc = |fixed: &[&str]| {
            let ctx = context.get_or_insert_with(|| Context::of(&self.spec.context, f));
            self.family.inc_parts(fixed, ctx.iter(), now);
        };
        let verdict = facts.verdict;
        let mut buf = [0u8; 10];
        match self.spec.kind {
            MetricKind::Flow => {
                let (kind, subtype) = type_and_subtype(f.event_type(), f.l7());
                inc(&[facts.protocol, kind, subtype, verdict.as_str_name()]);
            }
            MetricKind::Drop => {
                if verdict == Verdict::Dropped {
                    inc(&[&facts.drop_reason, facts.protocol]);
                }
            }
            MetricKind::Tcp => {
                let (Some(Protocol::Tcp(tcp)), Some(ip_version)) =
                    (facts.l4.as_ref(), f.ip_version())
                else {
                    return;
                };
                let Some(flags) = tcp.flags.as_ref() else {
                    return;
                };
                if verdict != Verdict::Forwarded {
                    return;
                }
                let family = ip_family(ip_version);
                if flags.fin {
                    inc(&["FIN", family]);
                }
                if flags.syn {
                    inc(&[if flags.ack { "SYN-ACK" } else { "SYN" }, family]);
                }
                if flags.rst {
                    inc(&["RST", family]);
                }
            }
            MetricKind::PortDistribution => {
                // A flow not known to be a request would count ephemeral ports.
                if !matches!(verdict, Verdict::Forwarded | Verdict::Redirected)
                    || f.is_reply() != Some(false)
                {
                    return;
                }
                match facts.l4.as_ref() {
                    Some(Protocol::Tcp(t)) => inc(&["TCP", port_str(t.destination_port, &mut buf)]),
                    Some(Protocol::Udp(u)) => inc(&["UDP", port_str(u.destination_port, &mut buf)]),
                    Some(Protocol::Sctp(s)) => {
                        inc(&["SCTP", port_str(s.destination_port, &mut buf)])
                    }
                    Some(Protocol::IcmPv4(_)) => inc(&["ICMPv4", "0"]),
                    Some(Protocol::IcmPv6(_)) => inc(&["ICMPv6", "0"]),
                    Some(Protocol::Vrrp(_)) => inc(&["VRRP", "0"]),
                    Some(Protocol::Igmp(_)) => inc(&["IGMP", "0"]),
                    None => {}
                }
            }
            MetricKind::Icmp => {
                let family = match facts.l4.as_ref() {
                    Some(Protocol::IcmPv4(_)) => "IPv4",
                    Some(Protocol::IcmPv6(_)) => "IPv6",
                    _ => return,
                };
                inc(&[family, &f.icmp_type_name()]);
            }
            MetricKind::Dns => self.observe_dns(f, now),
            MetricKind::Http => self.observe_http(f, now),
            MetricKind::FlowsToWorld => {
                let Some(l4) = facts.l4.as_ref().filter(|_| self.counts_to_world(f, facts)) else {
                    return;
                };
                let verdict = verdict.as_str_name();
                if self.spec.port {
                    let port = match l4 {
                        Protocol::Tcp(t) => port_str(t.destination_port, &mut buf),
                        Protocol::Udp(u) => port_str(u.destination_port, &mut buf),
                        Protocol::Sctp(s) => port_str(s.destination_port, &mut buf),
                        _ => "",
                    };
                    inc(&[facts.protocol, verdict, port]);
                } else {
                    inc(&[facts.protocol, verdict]);
                }
            }
        }
    }

    /// Hubble's DNS handler (`pkg/hubble/metrics/dns`): queries (and what policy denied) by
    /// rcode (empty for queries), question types and number of addresses; responses by their
    /// rcode's name; each answer record's type.
    fn observe_dns(&self, f: &impl FlowView, now: u32) {
        let Some(layer7::Record::Dns(dns)) = f.l7().and_then(|l| l.record.as_ref()) else {
            return;
        };
        if self.spec.ignore_aaaa && dns.qtypes.len() == 1 && dns.qtypes[0] == "AAAA" {
            return;
        }
        let ctx = Context::of(&self.spec.context, f);
        let qtypes = dns.qtypes.join(",");
        let ips = dns.ips.len().to_string();
        let inc = |family: &CounterFamily, fixed: &[&str]| {
            let mut v = Values::new();
            for s in fixed {
                v.push(s);
            }
            if self.spec.query {
                v.push(&dns.query);
            }
            for c in ctx.iter() {
                v.push(c);
            }
            family.inc(v.as_slice(), now);
        };
        let dropped = f.verdict() == Verdict::Dropped;
        if dropped {
            inc(&self.family, &["Policy denied", &qtypes, &ips]);
        } else if f.is_reply() != Some(true) {
            inc(&self.family, &["", &qtypes, &ips]);
        } else {
            let rcode = crate::decode::l7::dns::rcode_name(dns.rcode);
            if let Some(responses) = self.extra.first() {
                inc(responses, &[rcode, &qtypes, &ips]);
            }
            if let Some(types) = self.extra.get(1) {
                for t in &dns.rrtypes {
                    inc(types, &[t, &qtypes]);
                }
            }
        }
    }

    /// Hubble's HTTP handler (`pkg/hubble/metrics/http`, v1): requests by method and protocol,
    /// responses by method, protocol and status, and each response's latency.
    fn observe_http(&self, f: &impl FlowView, now: u32) {
        let Some(l7) = f.l7() else { return };
        let Some(layer7::Record::Http(http)) = l7.record.as_ref() else {
            return;
        };
        let reporter = match TrafficDirection::try_from(f.traffic_direction()) {
            Ok(TrafficDirection::Egress) => "client",
            Ok(TrafficDirection::Ingress) => "server",
            _ => "unknown",
        };
        let ctx = Context::of(&self.spec.context, f);
        let values = |fixed: &[&'_ str]| -> Vec<String> {
            fixed
                .iter()
                .map(|s| (*s).to_owned())
                .chain(ctx.iter().map(str::to_owned))
                .collect()
        };
        let inc = |family: &CounterFamily, fixed: &[&str]| {
            let v = values(fixed);
            let refs: Vec<&str> = v.iter().map(String::as_str).collect();
            family.inc(&refs, now);
        };
        match L7FlowType::try_from(l7.r#type) {
            Ok(L7FlowType::Request) => {
                inc(&self.family, &[&http.method, &http.protocol, reporter]);
            }
            Ok(L7FlowType::Response) => {
                let status = http.code.to_string();
                if let Some(responses) = self.extra.first() {
                    inc(
                        responses,
                        &[&http.method, &http.protocol, &status, reporter],
                    );
                }
                if let Some(d) = &self.duration {
                    let v = values(&[&http.method, reporter]);
                    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
                    d.observe(&refs, l7.latency_ns as f64 / 1e9);
                }
            }
            _ => {}
        }
    }

    /// Hubble's rules for `flows-to-world` (see the module docs).
    fn counts_to_world(&self, f: &impl FlowView, facts: &Facts) -> bool {
        let to_world = f.endpoint(false).is_some_and(|d| {
            d.labels.iter().any(|l| {
                matches!(
                    l.as_str(),
                    "reserved:world" | "reserved:world-ipv4" | "reserved:world-ipv6"
                )
            })
        });
        let Some(l4) = facts.l4.as_ref() else {
            return false;
        };
        if !to_world || f.event_type().is_none() {
            return false;
        }
        let dropped = facts.verdict == Verdict::Dropped;
        if dropped && !self.spec.any_drop && !facts.is_policy_drop(f) {
            return false;
        }
        let is_reply = f.is_reply() == Some(true);
        if !dropped && is_reply {
            return false;
        }
        if self.spec.syn_only {
            let syn = matches!(l4, Protocol::Tcp(t) if t.flags.as_ref().is_some_and(|fl| fl.syn));
            if !syn || is_reply {
                return false;
            }
        }
        true
    }
}

/// Hubble's `FlowProtocol`: the L4 protocol of trace and drop events, the L7 protocol of L7
/// events.
fn protocol(
    event_type: Option<(i32, i32)>,
    l4: Option<&Protocol>,
    l7: Option<&Layer7>,
) -> &'static str {
    let ty = event_type.map(|e| e.0);
    if ty == Some(i32::from(event_type::L7)) {
        return l7_protocol(l7).unwrap_or("Unknown L7");
    }
    if !matches!(ty, Some(t) if t == i32::from(event_type::TRACE) || t == i32::from(event_type::DROP))
    {
        return "Unknown flow";
    }
    match l4 {
        Some(Protocol::Tcp(_)) => "TCP",
        Some(Protocol::Udp(_)) => "UDP",
        Some(Protocol::IcmPv4(_)) => "ICMPv4",
        Some(Protocol::IcmPv6(_)) => "ICMPv6",
        Some(Protocol::Sctp(_)) => "SCTP",
        Some(Protocol::Vrrp(_)) => "VRRP",
        Some(Protocol::Igmp(_)) => "IGMP",
        None => "Unknown L4",
    }
}

/// `type` and `subtype` of `hubble_flows_processed_total`.
fn type_and_subtype(
    event_type: Option<(i32, i32)>,
    l7: Option<&Layer7>,
) -> (&'static str, &'static str) {
    let Some((ty, sub_type)) = event_type else {
        return ("Unknown", "");
    };
    match u8::try_from(ty) {
        Ok(event_type::TRACE) => (
            "Trace",
            flowscope_proto::names::trace_point_name(sub_type).unwrap_or(""),
        ),
        Ok(event_type::DROP) => ("Drop", ""),
        Ok(event_type::L7) => ("L7", l7_protocol(l7).unwrap_or("")),
        // Hubble prints the number of other types; we emit no other type, so one value is
        // enough and keeps the label set closed.
        _ => ("Unknown", ""),
    }
}

/// The protocol of an L7 flow's record, as Hubble names it.
#[expect(
    deprecated,
    reason = "Hubble still names Kafka records, deprecated in its proto"
)]
fn l7_protocol(l7: Option<&Layer7>) -> Option<&'static str> {
    match l7.and_then(|l| l.record.as_ref())? {
        layer7::Record::Dns(_) => Some("DNS"),
        layer7::Record::Http(_) => Some("HTTP"),
        layer7::Record::Kafka(_) => Some("Kafka"),
    }
}

fn ip_family(v: i32) -> &'static str {
    IpVersion::try_from(v)
        .unwrap_or(IpVersion::IpNotUsed)
        .as_str_name()
}

/// Hubble's label: the name of `drop_reason_desc` (Go's `String()`, which prints the number of
/// a value it has no name for).
fn drop_reason(desc: i32) -> Cow<'static, str> {
    match DropReason::try_from(desc) {
        Ok(r) => Cow::Borrowed(r.as_str_name()),
        Err(_) => Cow::Owned(desc.to_string()),
    }
}

/// Hubble's short pod name: without the last one or two `-[a-z0-9]+` parts
/// (`web-5d4f8c7b9-x2x4z` -> `web`), the name itself when it has none.
fn short_pod_name(name: &str) -> &str {
    let strip = |s: &str| -> Option<usize> {
        let (head, tail) = s.rsplit_once('-')?;
        let ok = !head.is_empty()
            && !tail.is_empty()
            && tail
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        ok.then_some(head.len())
    };
    match strip(name) {
        Some(one) => match strip(&name[..one]) {
            Some(two) => &name[..two],
            None => &name[..one],
        },
        None => name,
    }
}

/// Value of the app label (`app.kubernetes.io/name`, `k8s-app` or `app`), first match in the
/// endpoint's label order.
fn app_label(labels: &[String]) -> &str {
    const KEYS: [&str; 3] = ["k8s:app.kubernetes.io/name=", "k8s:k8s-app=", "k8s:app="];
    labels
        .iter()
        .find_map(|l| KEYS.iter().find_map(|k| l.strip_prefix(k)))
        .filter(|v| !v.is_empty())
        .unwrap_or("")
}

fn reserved_identity(labels: &[String]) -> &str {
    if let Some(l) = labels.iter().find(|l| *l == "reserved:kube-apiserver") {
        return l;
    }
    labels
        .iter()
        .find(|l| l.starts_with("reserved:"))
        .map(String::as_str)
        .unwrap_or("")
}

fn endpoint_value<'f, F: FlowView>(id: ContextId, f: &'f F, source: bool) -> Cow<'f, str> {
    let ep = f.endpoint(source).unwrap_or_default();
    let with_ns = |pod: &str| -> Cow<'f, str> {
        if ep.namespace.is_empty() {
            Cow::Owned(pod.to_owned())
        } else {
            Cow::Owned(format!("{}/{pod}", ep.namespace))
        }
    };
    match id {
        ContextId::Namespace => Cow::Borrowed(ep.namespace),
        ContextId::Identity => Cow::Owned(ep.labels.join(",")),
        ContextId::Pod => with_ns(ep.pod_name),
        ContextId::PodShort => with_ns(short_pod_name(ep.pod_name)),
        ContextId::PodName => Cow::Borrowed(ep.pod_name),
        ContextId::Dns => Cow::Owned(f.names(source).join(",")),
        ContextId::Ip => f.ip_text(source),
        ContextId::ReservedIdentity => Cow::Borrowed(reserved_identity(ep.labels)),
        ContextId::WorkloadName => Cow::Borrowed(ep.workload.unwrap_or("")),
        ContextId::App => Cow::Borrowed(app_label(ep.labels)),
    }
}

/// The first non-empty value among the alternatives.
fn first_of<'f, F: FlowView>(ids: &[ContextId], f: &'f F, source: bool) -> Cow<'f, str> {
    for &id in ids {
        let v = endpoint_value(id, f, source);
        if !v.is_empty() {
            return v;
        }
    }
    Cow::Borrowed("")
}

/// Alternatives for a direction-specific context (`sourceEgressContext`, …), else the general.
fn pick<'c>(
    dir: TrafficDirection,
    all: &'c [ContextId],
    egress: &'c [ContextId],
    ingress: &'c [ContextId],
) -> &'c [ContextId] {
    match dir {
        TrafficDirection::Ingress if !ingress.is_empty() => ingress,
        TrafficDirection::Egress if !egress.is_empty() => egress,
        _ => all,
    }
}

const MAX_CONTEXT: usize = CONTEXT_LABELS.len() + 2;

/// Values of the context labels of one flow, in [`ContextOptions::label_names`] order, on the
/// stack.
struct Context<'f> {
    v: [Cow<'f, str>; MAX_CONTEXT],
    n: usize,
}

impl<'f> Context<'f> {
    fn push(&mut self, c: Cow<'f, str>) {
        self.v[self.n] = c;
        self.n += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &str> + Clone {
        self.v[..self.n].iter().map(|c| &**c)
    }

    fn of<F: FlowView>(ctx: &ContextOptions, f: &'f F) -> Self {
        let mut out = Context {
            v: std::array::from_fn(|_| Cow::Borrowed("")),
            n: 0,
        };
        if ctx.is_empty() {
            return out;
        }
        let dir =
            TrafficDirection::try_from(f.traffic_direction()).unwrap_or(TrafficDirection::Unknown);
        for &i in &ctx.labels {
            let e = f.endpoint(i < 5);
            out.push(match CONTEXT_LABELS[i] {
                "source_ip" => f.ip_text(true),
                "destination_ip" => f.ip_text(false),
                "source_pod" | "destination_pod" => Cow::Borrowed(e.map_or("", |e| e.pod_name)),
                "source_namespace" | "destination_namespace" => {
                    Cow::Borrowed(e.map_or("", |e| e.namespace))
                }
                "source_workload" | "destination_workload" => {
                    Cow::Borrowed(e.and_then(|e| e.workload).unwrap_or(""))
                }
                "source_app" | "destination_app" => {
                    Cow::Borrowed(e.map_or("", |e| app_label(e.labels)))
                }
                _ => Cow::Borrowed(match dir {
                    TrafficDirection::Ingress => "ingress",
                    TrafficDirection::Egress => "egress",
                    _ => "unknown",
                }),
            });
        }
        if ctx.has_source() {
            let ids = pick(dir, &ctx.source, &ctx.source_egress, &ctx.source_ingress);
            out.push(first_of(ids, f, true));
        }
        if ctx.has_destination() {
            let ids = pick(
                dir,
                &ctx.destination,
                &ctx.destination_egress,
                &ctx.destination_ingress,
            );
            out.push(first_of(ids, f, false));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::options::parse_metrics;
    use flowscope_proto::{
        drop_reason,
        flow::{CiliumEventType, Endpoint, Flow, Ip, Layer4, TcpFlags, Workload},
        flowscope::v1::FlowExtension,
        wkt::Any,
    };

    fn metrics(spec: &[&str]) -> FlowMetrics {
        let specs = parse_metrics(&spec.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid --metrics");
        FlowMetrics::new(&specs, Duration::from_secs(600))
    }

    fn pod(ns: &str, name: &str, app: &str) -> Endpoint {
        Endpoint {
            namespace: ns.into(),
            pod_name: name.into(),
            identity: 4242,
            labels: vec![
                format!("k8s:app={app}"),
                format!("k8s:io.kubernetes.pod.namespace={ns}"),
            ],
            workloads: vec![Workload {
                name: app.into(),
                kind: "Deployment".into(),
            }],
            ..Endpoint::default()
        }
    }

    fn world() -> Endpoint {
        Endpoint {
            identity: 2,
            labels: vec!["reserved:world".into()],
            ..Endpoint::default()
        }
    }

    /// A trace flow at `point` (datapath number) from pod-a to the world.
    #[expect(deprecated, reason = "the summary is part of what flows.rs builds")]
    fn trace(point: i32, l4: Layer4, reply: bool, summary: &str) -> Flow {
        Flow {
            verdict: Verdict::Forwarded as i32,
            ip: Some(Ip {
                source: "10.244.0.213".into(),
                destination: "1.0.0.1".into(),
                ip_version: IpVersion::IPv4 as i32,
                ..Ip::default()
            }),
            l4: Some(l4),
            source: Some(pod("default", "web-5d4f8c7b9-x2x4z", "web")),
            destination: Some(world()),
            event_type: Some(CiliumEventType {
                r#type: i32::from(event_type::TRACE),
                sub_type: point,
            }),
            traffic_direction: TrafficDirection::Egress as i32,
            is_reply: Some(reply),
            summary: summary.into(),
            ..Flow::default()
        }
    }

    /// A drop as the agent builds it (flows.rs), the kernel's reason named `kernel_reason`.
    #[expect(deprecated, reason = "Hubble's drop_reason, which the agent fills")]
    fn dropped(kernel_reason: &str) -> Flow {
        let hubble = drop_reason::hubble_drop_reason(Some(kernel_reason));
        let mut f = trace(0, Layer4::udp(40000, 9), false, "UDP");
        f.verdict = Verdict::Dropped as i32;
        f.event_type = Some(CiliumEventType {
            r#type: i32::from(event_type::DROP),
            sub_type: drop_reason::drop_sub_type(hubble),
        });
        f.is_reply = None;
        f.drop_reason = hubble as u32;
        f.drop_reason_desc = hubble as i32;
        f.extensions = Some(Any::from_msg(&FlowExtension {
            kernel_drop_reason: 2,
            kernel_drop_reason_name: kernel_reason.into(),
            ..FlowExtension::default()
        }));
        f
    }

    fn syn() -> TcpFlags {
        TcpFlags {
            syn: true,
            ..TcpFlags::default()
        }
    }

    /// An L7 flow as the decoder makes it.
    fn l7(record: layer7::Record, response: bool, latency_ns: u64) -> Flow {
        use flowscope_proto::flow::{FlowType, Layer7};
        Flow {
            verdict: Verdict::Forwarded as i32,
            r#type: FlowType::L7 as i32,
            event_type: Some(CiliumEventType {
                r#type: 129,
                sub_type: 0,
            }),
            l4: Some(Layer4::udp(40000, 53)),
            is_reply: Some(response),
            traffic_direction: TrafficDirection::Egress as i32,
            source: Some(pod("default", "pod-a", "web")),
            l7: Some(Layer7 {
                r#type: if response {
                    L7FlowType::Response
                } else {
                    L7FlowType::Request
                } as i32,
                latency_ns,
                record: Some(record),
            }),
            ..Flow::default()
        }
    }

    #[test]
    fn dns_and_http_metrics_count_like_hubble() {
        use flowscope_proto::flow::{Dns, Http};
        let m = metrics(&["flow", "dns:query", "http:sourceContext=pod"]);
        let dns = |rcode: u32, ips: &[&str]| {
            layer7::Record::Dns(Dns {
                query: "one.one.one.one.".into(),
                qtypes: vec!["A".into()],
                ips: ips.iter().map(|s| s.to_string()).collect(),
                rrtypes: ips.iter().map(|_| "A".to_string()).collect(),
                rcode,
                ..Dns::default()
            })
        };
        m.observe_flow(&l7(dns(0, &[]), false, 0));
        m.observe_flow(&l7(dns(0, &["1.0.0.1"]), true, 1_000_000));
        m.observe_flow(&l7(dns(3, &[]), true, 1_000_000));
        let get = |k: MetricKind, v: &[&str]| m.family(k).unwrap().get(v);
        let q = "one.one.one.one.";
        assert_eq!(get(MetricKind::Dns, &["", "A", "0", q]), Some(1));
        let extra = m.extra_families(MetricKind::Dns);
        assert_eq!(extra[0].name(), "hubble_dns_responses");
        assert_eq!(extra[0].get(&["No Error", "A", "1", q]), Some(1));
        assert_eq!(extra[0].get(&["Non-Existent Domain", "A", "0", q]), Some(1));
        assert_eq!(extra[1].name(), "hubble_dns_response_types");
        assert_eq!(extra[1].get(&["A", "A", q]), Some(1));
        assert_eq!(
            get(MetricKind::Flow, &["DNS", "L7", "DNS", "FORWARDED"]),
            Some(3)
        );

        let http = |code: u32| {
            layer7::Record::Http(Http {
                code,
                method: "GET".into(),
                url: "http://one.one.one.one/".into(),
                protocol: "HTTP/1.1".into(),
                ..Http::default()
            })
        };
        m.observe_flow(&l7(http(0), false, 0));
        m.observe_flow(&l7(http(404), true, 20_000_000));
        assert_eq!(
            get(
                MetricKind::Http,
                &["GET", "HTTP/1.1", "client", "default/pod-a"]
            ),
            Some(1)
        );
        let extra = m.extra_families(MetricKind::Http);
        assert_eq!(
            extra[0].get(&["GET", "HTTP/1.1", "404", "client", "default/pod-a"]),
            Some(1)
        );
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(m));
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "hubble_http_request_duration_seconds_bucket{le=\"0.025\",method=\"GET\",reporter=\"client\",source=\"default/pod-a\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("hubble_dns_queries_total{"), "{text}");
    }

    #[test]
    fn default_metrics_count_like_hubble() {
        let m = metrics(&[
            "flow",
            "drop",
            "tcp",
            "port-distribution",
            "icmp",
            "flows-to-world",
        ]);
        m.observe_flow(&trace(
            5,
            Layer4::tcp(40000, 80, syn()),
            false,
            "TCP Flags: SYN",
        ));
        let synack = TcpFlags {
            syn: true,
            ack: true,
            ..TcpFlags::default()
        };
        m.observe_flow(&trace(
            0,
            Layer4::tcp(80, 40000, synack),
            true,
            "TCP Flags: SYN, ACK",
        ));
        m.observe_flow(&trace(5, Layer4::icmpv4(8, 0), false, "ICMPv4 EchoRequest"));
        m.observe_flow(&dropped("NETFILTER_DROP"));
        m.observe_flow(&dropped("NETFILTER_DROP"));

        let get = |k: MetricKind, v: &[&str]| m.family(k).unwrap().get(v);
        assert_eq!(
            get(
                MetricKind::Flow,
                &["TCP", "Trace", "from-endpoint", "FORWARDED"]
            ),
            Some(1)
        );
        assert_eq!(
            get(
                MetricKind::Flow,
                &["TCP", "Trace", "to-endpoint", "FORWARDED"]
            ),
            Some(1)
        );
        assert_eq!(
            get(MetricKind::Flow, &["UDP", "Drop", "", "DROPPED"]),
            Some(2)
        );
        // Hubble's reason (none means "dropped by netfilter"); the kernel's next to it.
        assert_eq!(
            get(MetricKind::Drop, &["DROP_REASON_UNKNOWN", "UDP"]),
            Some(2)
        );
        assert_eq!(
            m.kernel_drops().unwrap().get(&["NETFILTER_DROP", "UDP"]),
            Some(2)
        );
        assert_eq!(get(MetricKind::Tcp, &["SYN", "IPv4"]), Some(1));
        assert_eq!(get(MetricKind::Tcp, &["SYN-ACK", "IPv4"]), Some(1));
        // The reply's destination port is ephemeral: not counted.
        assert_eq!(get(MetricKind::PortDistribution, &["TCP", "80"]), Some(1));
        assert_eq!(m.family(MetricKind::PortDistribution).unwrap().len(), 2);
        assert_eq!(get(MetricKind::Icmp, &["IPv4", "EchoRequest"]), Some(1));
        // To world: the SYN and the ping; not the drops, which are not POLICY_DENIED.
        assert_eq!(
            get(MetricKind::FlowsToWorld, &["TCP", "FORWARDED"]),
            Some(1)
        );
        assert_eq!(
            get(MetricKind::FlowsToWorld, &["ICMPv4", "FORWARDED"]),
            Some(1)
        );
        assert_eq!(get(MetricKind::FlowsToWorld, &["UDP", "DROPPED"]), None);
    }

    #[test]
    fn drop_reasons_are_hubbles_and_the_kernels_are_ours() {
        let m = metrics(&["drop", "flows-to-world"]);
        m.observe_flow(&dropped("NO_SOCKET"));
        let mut denied = dropped("NOT_SPECIFIED");
        denied.drop_reason_desc = DropReason::PolicyDenied as i32;
        m.observe_flow(&denied);
        let mut from_a_newer_server = dropped("NOT_SPECIFIED");
        from_a_newer_server.drop_reason_desc = 250;
        m.observe_flow(&from_a_newer_server);
        let drop = m.family(MetricKind::Drop).unwrap();
        assert_eq!(drop.get(&["SOCKET_LOOKUP_FAILED", "UDP"]), Some(1));
        assert_eq!(drop.get(&["POLICY_DENIED", "UDP"]), Some(1));
        // Go's String() of an enum value it has no name for.
        assert_eq!(drop.get(&["250", "UDP"]), Some(1));
        let kernel = m.kernel_drops().unwrap();
        assert_eq!(kernel.get(&["NO_SOCKET", "UDP"]), Some(1));
        assert_eq!(kernel.get(&["NOT_SPECIFIED", "UDP"]), Some(2));
        // Only the policy denial goes to the world's drops.
        assert_eq!(
            m.family(MetricKind::FlowsToWorld)
                .unwrap()
                .get(&["UDP", "DROPPED"]),
            Some(1)
        );
        // No `drop` metric, no kernel drops either.
        assert!(metrics(&["flow"]).kernel_drops().is_none());
    }

    #[test]
    fn drops_other_than_policy_need_any_drop() {
        let plain = metrics(&["flows-to-world"]);
        let any = metrics(&["flows-to-world:any-drop;port"]);
        for m in [&plain, &any] {
            m.observe_flow(&dropped("NO_SOCKET"));
        }
        assert_eq!(plain.family(MetricKind::FlowsToWorld).unwrap().len(), 0);
        assert_eq!(
            any.family(MetricKind::FlowsToWorld)
                .unwrap()
                .get(&["UDP", "DROPPED", "9"]),
            Some(1)
        );
        let m = metrics(&["drop"]);
        let mut unknown = dropped("");
        unknown.extensions = None;
        m.observe_flow(&unknown);
        assert_eq!(
            m.family(MetricKind::Drop)
                .unwrap()
                .get(&["DROP_REASON_UNKNOWN", "UDP"]),
            Some(1)
        );
    }

    /// The pipeline counts records; a record must count as its `flow.Flow` would, in every
    /// metric and with every context, over random records.
    #[test]
    fn a_record_counts_as_its_flow() {
        use crate::decode::record::testing::random_records;
        let specs = [
            "flow:sourceContext=pod-short;destinationContext=pod|reserved-identity;labelsContext=source_ip,source_pod,source_namespace,source_workload,source_app,destination_ip,destination_pod,destination_namespace,destination_workload,destination_app,traffic_direction",
            "drop:sourceContext=namespace|ip;destinationContext=identity",
            "tcp:sourceContext=workload-name;destinationContext=ip",
            "port-distribution:sourceContext=app|pod-name;destinationContext=dns|namespace",
            "icmp:sourceEgressContext=pod;destinationIngressContext=identity",
            "flows-to-world:any-drop;port",
        ];
        let encoded = |via_record: bool| {
            let m = metrics(&specs);
            for rec in random_records(3_000) {
                if via_record {
                    m.observe_flow(&rec);
                } else {
                    m.observe_flow(&rec.to_flow());
                }
            }
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register_collector(Box::new(m));
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        let (records, flows) = (encoded(true), encoded(false));
        assert!(
            records.lines().filter(|l| l.starts_with("hubble_")).count() > 200,
            "the random records cover many series:\n{records}"
        );
        assert_eq!(records, flows);
    }

    #[test]
    fn contexts_and_labels() {
        let m = metrics(&[
            "drop:sourceContext=namespace;destinationContext=identity",
            "flow:sourceContext=pod-short;destinationContext=pod|reserved-identity;labelsContext=source_app,traffic_direction",
            "tcp:sourceContext=workload-name;destinationContext=ip",
        ]);
        let f = trace(5, Layer4::tcp(40000, 80, syn()), false, "TCP Flags: SYN");
        m.observe_flow(&f);
        m.observe_flow(&dropped("NETFILTER_DROP"));
        let flow = m.family(MetricKind::Flow).unwrap();
        assert_eq!(
            flow.label_names(),
            [
                "protocol",
                "type",
                "subtype",
                "verdict",
                "source_app",
                "traffic_direction",
                "source",
                "destination"
            ]
        );
        assert_eq!(
            flow.get(&[
                "TCP",
                "Trace",
                "from-endpoint",
                "FORWARDED",
                "web",
                "egress",
                "default/web",
                "reserved:world"
            ]),
            Some(1)
        );
        assert_eq!(
            m.family(MetricKind::Drop).unwrap().get(&[
                "DROP_REASON_UNKNOWN",
                "UDP",
                "default",
                "reserved:world"
            ]),
            Some(1)
        );
        assert_eq!(
            m.family(MetricKind::Tcp)
                .unwrap()
                .get(&["SYN", "IPv4", "web", "1.0.0.1"]),
            Some(1)
        );
    }

    #[test]
    fn context_series_expire_closed_sets_do_not() {
        let m = FlowMetrics::new(
            &parse_metrics(&["drop:sourceContext=pod".into(), "flow".into()]).unwrap(),
            Duration::from_secs(60),
        );
        m.observe_flow(&dropped("NETFILTER_DROP"));
        // 2 minutes later (simulated), with no flow from that pod.
        m.expire_at(120);
        assert_eq!(m.family(MetricKind::Drop).unwrap().len(), 0);
        assert_eq!(m.family(MetricKind::Flow).unwrap().len(), 1);
        assert_eq!(m.expired.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn helpers() {
        assert_eq!(short_pod_name("web-5d4f8c7b9-x2x4z"), "web");
        assert_eq!(short_pod_name("coredns-abc"), "coredns");
        assert_eq!(short_pod_name("a-b-c-d"), "a-b");
        assert_eq!(short_pod_name("solo"), "solo");
        assert_eq!(short_pod_name("-x"), "-x");
        assert_eq!(short_pod_name("web-ABC"), "web-ABC");
        let mut b = [0u8; 10];
        assert_eq!(port_str(0, &mut b), "0");
        assert_eq!(port_str(65535, &mut b), "65535");
        assert_eq!(port_str(u32::MAX, &mut b), "4294967295");
        assert_eq!(
            reserved_identity(&["k8s:a=b".into(), "reserved:world".into()]),
            "reserved:world"
        );
        assert_eq!(
            app_label(&["k8s:app=x".into(), "k8s:k8s-app=y".into()]),
            "x"
        );
    }

    /// A rough measure of the per-flow cost (run with `--ignored --nocapture`; not a test of
    /// speed, which would fail on a loaded machine).
    #[test]
    #[ignore = "measurement, not a test"]
    fn observe_flow_cost() {
        let flows = [
            trace(5, Layer4::tcp(40000, 80, syn()), false, "TCP Flags: SYN"),
            trace(11, Layer4::udp(40000, 53), false, "UDP"),
            trace(5, Layer4::icmpv4(8, 0), false, "ICMPv4 EchoRequest"),
            dropped("NETFILTER_DROP"),
        ];
        for spec in [
            &super::super::options::DEFAULT_METRICS[..],
            &[
                "flow:sourceContext=pod;destinationContext=pod|reserved-identity",
                "drop:sourceContext=namespace",
            ],
            &[],
            &["flow"],
            &["drop"],
            &["tcp"],
            &["icmp"],
            &["port-distribution"],
            &["flows-to-world"],
        ] {
            let m = metrics(spec);
            let n = 1_000_000;
            // This thread's CPU time: the machine may be busy with other work.
            let cpu = || {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: a valid timespec for the call to fill.
                unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
                ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
            };
            let t = cpu();
            for i in 0..n {
                m.observe_flow(&flows[i % flows.len()]);
            }
            println!("{spec:?}: {:.0} ns per flow", (cpu() - t) / n as f64);
        }
    }
}
