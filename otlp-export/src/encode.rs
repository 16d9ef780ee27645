//! Flows as OTLP log records, Hubble's metrics as OTLP sums.
//!
//! A record's body is the flow in Hubble's JSON (protojson with proto field names, what
//! `hubble observe -o json` prints under `"flow"`), after the field mask; its attributes follow
//! OpenTelemetry's semantic conventions where they have a name for the fact (`network.*`,
//! `source.*`, `destination.*`, `k8s.*`) and are `flow.*` otherwise, with Hubble's enum names as
//! values. Attributes come from the masked flow: a field the mask removes is in neither.

use flowscope_proto::{
    flow::{
        DropReason, Endpoint, Flow, FlowType, IpVersion, TraceObservationPoint, TraceReason,
        TrafficDirection, Verdict, layer4::Protocol,
    },
    flowscope::v1::FlowExtension,
};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    logs::v1::{LogRecord, SeverityNumber},
    metrics::v1::{
        AggregationTemporality, Metric, NumberDataPoint, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
};

/// The instrumentation scope of every record and metric.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "flowscope".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    }
}

/// A resource of string attributes.
pub fn resource(attrs: &[(String, String)]) -> Resource {
    Resource {
        attributes: attrs.iter().map(|(k, v)| kv_str(k, v.clone())).collect(),
        ..Resource::default()
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn kv_str(key: &str, value: String) -> KeyValue {
    kv(key, Value::StringValue(value))
}

/// The event name of flow records (`LogRecord.event_name`).
pub const EVENT_NAME: &str = "flowscope.flow";

/// One flow as a log record. `flow` is the masked flow, `body` its JSON; `observed` is when the
/// exporter took it (ns since the epoch).
pub fn log_record(flow: &Flow, body: String, observed: u64) -> LogRecord {
    let verdict = Verdict::try_from(flow.verdict).unwrap_or(Verdict::Unknown);
    let (severity, severity_text) = match verdict {
        Verdict::Dropped | Verdict::Error => (SeverityNumber::Warn, "WARN"),
        _ => (SeverityNumber::Info, "INFO"),
    };
    LogRecord {
        time_unix_nano: flow
            .time
            .map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(0)),
        observed_time_unix_nano: observed,
        severity_number: severity as i32,
        severity_text: severity_text.into(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(body)),
        }),
        attributes: attributes(flow),
        event_name: EVENT_NAME.into(),
        ..LogRecord::default()
    }
}

/// The attributes of a flow's record (see docs/otlp.md for the table).
pub fn attributes(f: &Flow) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(24);
    let s = |a: &mut Vec<KeyValue>, k: &str, v: &str| {
        if !v.is_empty() {
            a.push(kv_str(k, v.to_owned()));
        }
    };
    if let Some(ip) = &f.ip {
        match IpVersion::try_from(ip.ip_version) {
            Ok(IpVersion::IPv4) => s(&mut a, "network.type", "ipv4"),
            Ok(IpVersion::IPv6) => s(&mut a, "network.type", "ipv6"),
            _ => {}
        }
        s(&mut a, "source.address", &ip.source);
        s(&mut a, "destination.address", &ip.destination);
    }
    let ports = |a: &mut Vec<KeyValue>, transport: &str, sport: u32, dport: u32| {
        a.push(kv_str("network.transport", transport.to_owned()));
        a.push(kv("source.port", Value::IntValue(i64::from(sport))));
        a.push(kv("destination.port", Value::IntValue(i64::from(dport))));
    };
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => ports(&mut a, "tcp", t.source_port, t.destination_port),
        Some(Protocol::Udp(u)) => ports(&mut a, "udp", u.source_port, u.destination_port),
        Some(Protocol::Sctp(x)) => ports(&mut a, "sctp", x.source_port, x.destination_port),
        Some(Protocol::IcmPv4(i)) => {
            s(&mut a, "network.transport", "icmp");
            a.push(kv("flow.icmp.type", Value::IntValue(i64::from(i.r#type))));
            a.push(kv("flow.icmp.code", Value::IntValue(i64::from(i.code))));
        }
        Some(Protocol::IcmPv6(i)) => {
            s(&mut a, "network.transport", "icmpv6");
            a.push(kv("flow.icmp.type", Value::IntValue(i64::from(i.r#type))));
            a.push(kv("flow.icmp.code", Value::IntValue(i64::from(i.code))));
        }
        _ => {}
    }
    // The flow's pod: the source's when it is a pod, else the destination's.
    let pod = [&f.source, &f.destination]
        .into_iter()
        .flatten()
        .find(|e| !e.pod_name.is_empty());
    if let Some(p) = pod {
        s(&mut a, "k8s.namespace.name", &p.namespace);
        s(&mut a, "k8s.pod.name", &p.pod_name);
    }
    s(&mut a, "k8s.node.name", &f.node_name);
    endpoint(&mut a, "flow.source", f.source.as_ref());
    endpoint(&mut a, "flow.destination", f.destination.as_ref());
    if let Some(i) = &f.interface {
        s(&mut a, "network.interface.name", &i.name);
    }
    s(&mut a, "flow.uuid", &f.uuid);
    if f.verdict != 0 {
        s(&mut a, "flow.verdict", verdict_name(f.verdict));
    }
    if let Ok(t) = FlowType::try_from(f.r#type)
        && t != FlowType::UnknownType
    {
        s(&mut a, "flow.type", t.as_str_name());
    }
    if let Ok(p) = TraceObservationPoint::try_from(f.trace_observation_point)
        && p != TraceObservationPoint::UnknownPoint
    {
        s(&mut a, "flow.observation_point", p.as_str_name());
    }
    if let Ok(r) = TraceReason::try_from(f.trace_reason)
        && r != TraceReason::Unknown
    {
        s(&mut a, "flow.trace_reason", r.as_str_name());
    }
    if let Ok(d) = TrafficDirection::try_from(f.traffic_direction)
        && d != TrafficDirection::Unknown
    {
        s(&mut a, "flow.traffic_direction", d.as_str_name());
    }
    if f.verdict == Verdict::Dropped as i32 {
        let reason = DropReason::try_from(f.drop_reason_desc)
            .map_or("DROP_REASON_UNKNOWN", |r| r.as_str_name());
        s(&mut a, "flow.drop_reason", reason);
        if let Some(kernel) = f
            .extensions
            .as_ref()
            .and_then(|x| x.to_msg::<FlowExtension>().ok().flatten())
            .map(|e| e.kernel_drop_reason_name)
        {
            s(&mut a, "flow.kernel_drop_reason", &kernel);
        }
    }
    if let Some(reply) = f.is_reply {
        a.push(kv("flow.is_reply", Value::BoolValue(reply)));
    }
    a
}

fn verdict_name(v: i32) -> &'static str {
    Verdict::try_from(v).map_or("VERDICT_UNKNOWN", |v| v.as_str_name())
}

/// `flow.source.*` / `flow.destination.*`: the endpoint's pod, namespace, identity, workload.
fn endpoint(a: &mut Vec<KeyValue>, prefix: &str, e: Option<&Endpoint>) {
    let Some(e) = e else { return };
    let mut s = |k: &str, v: &str| {
        if !v.is_empty() {
            a.push(kv_str(&format!("{prefix}.{k}"), v.to_owned()));
        }
    };
    s("namespace", &e.namespace);
    s("pod_name", &e.pod_name);
    if let Some(w) = e.workloads.first() {
        s("workload", &w.name);
    }
    if e.identity != 0 {
        a.push(kv(
            &format!("{prefix}.identity"),
            Value::IntValue(i64::from(e.identity)),
        ));
    }
}

/// A monotonic cumulative sum named as the Prometheus counter without `_total` (OpenTelemetry's
/// convention: a Prometheus exporter or Mimir's OTLP endpoint adds `_total` back, so that the
/// series keeps Hubble's name, `hubble_drop_total`).
pub fn cumulative_sum(
    name: &str,
    description: &str,
    points: impl IntoIterator<Item = (Vec<(String, String)>, u64)>,
    start: u64,
    now: u64,
) -> Metric {
    let data_points = points
        .into_iter()
        .map(|(labels, value)| NumberDataPoint {
            attributes: labels.into_iter().map(|(k, v)| kv_str(&k, v)).collect(),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsInt(
                i64::try_from(value).unwrap_or(i64::MAX),
            )),
            ..NumberDataPoint::default()
        })
        .collect();
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        data: Some(Data::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Metric::default()
    }
}

/// A gauge of one value.
pub fn gauge(name: &str, description: &str, value: i64, now: u64) -> Metric {
    gauge_points(name, description, vec![(Vec::new(), value)], now)
}

/// A gauge of several series (label pairs, value).
pub fn gauge_points(
    name: &str,
    description: &str,
    points: impl IntoIterator<Item = (Vec<(String, String)>, i64)>,
    now: u64,
) -> Metric {
    let data_points = points
        .into_iter()
        .map(|(labels, value)| NumberDataPoint {
            attributes: labels.into_iter().map(|(k, v)| kv_str(&k, v)).collect(),
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsInt(value)),
            ..NumberDataPoint::default()
        })
        .collect();
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        data: Some(Data::Gauge(
            opentelemetry_proto::tonic::metrics::v1::Gauge { data_points },
        )),
        ..Metric::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::{
        flow::{Ip, Layer4, NetworkInterface, Tcp, Workload},
        wkt::{Any, Timestamp},
    };

    fn get<'a>(a: &'a [KeyValue], k: &str) -> Option<&'a Value> {
        a.iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn text(a: &[KeyValue], k: &str) -> Option<String> {
        match get(a, k)? {
            Value::StringValue(s) => Some(s.clone()),
            other => panic!("{k}: {other:?}"),
        }
    }

    #[test]
    fn a_dropped_tcp_flow() {
        let f = Flow {
            time: Some(Timestamp::new(1_700_000_000, 5)),
            uuid: "u-1".into(),
            node_name: "node-1".into(),
            verdict: Verdict::Dropped as i32,
            drop_reason_desc: DropReason::PolicyDenied as i32,
            r#type: FlowType::L3L4 as i32,
            trace_observation_point: TraceObservationPoint::ToNetwork as i32,
            traffic_direction: TrafficDirection::Egress as i32,
            is_reply: Some(false),
            ip: Some(Ip {
                source: "10.244.0.213".into(),
                destination: "1.0.0.1".into(),
                ip_version: IpVersion::IPv4 as i32,
                ..Ip::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 40000,
                    destination_port: 80,
                    flags: None,
                })),
            }),
            source: Some(Endpoint {
                namespace: "default".into(),
                pod_name: "pod-a".into(),
                identity: 762,
                workloads: vec![Workload {
                    name: "web".into(),
                    kind: "Deployment".into(),
                }],
                ..Endpoint::default()
            }),
            interface: Some(NetworkInterface {
                index: 3,
                name: "eth0".into(),
            }),
            extensions: Some(Any::from_msg(&FlowExtension {
                kernel_drop_reason_name: "NETFILTER_DROP".into(),
                ..FlowExtension::default()
            })),
            ..Flow::default()
        };
        let r = log_record(&f, "{}".into(), 7);
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_005);
        assert_eq!(r.observed_time_unix_nano, 7);
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(r.event_name, EVENT_NAME);
        let a = &r.attributes;
        for (k, v) in [
            ("network.type", "ipv4"),
            ("network.transport", "tcp"),
            ("source.address", "10.244.0.213"),
            ("destination.address", "1.0.0.1"),
            ("k8s.namespace.name", "default"),
            ("k8s.pod.name", "pod-a"),
            ("k8s.node.name", "node-1"),
            ("flow.source.workload", "web"),
            ("network.interface.name", "eth0"),
            ("flow.uuid", "u-1"),
            ("flow.verdict", "DROPPED"),
            ("flow.type", "L3_L4"),
            ("flow.observation_point", "TO_NETWORK"),
            ("flow.traffic_direction", "EGRESS"),
            ("flow.drop_reason", "POLICY_DENIED"),
            ("flow.kernel_drop_reason", "NETFILTER_DROP"),
        ] {
            assert_eq!(text(a, k).as_deref(), Some(v), "{k}");
        }
        assert_eq!(get(a, "source.port"), Some(&Value::IntValue(40000)));
        assert_eq!(get(a, "destination.port"), Some(&Value::IntValue(80)));
        assert_eq!(get(a, "flow.source.identity"), Some(&Value::IntValue(762)));
        assert_eq!(get(a, "flow.is_reply"), Some(&Value::BoolValue(false)));
        assert_eq!(get(a, "flow.trace_reason"), None, "unknown: left out");
        assert_eq!(get(a, "flow.destination.pod_name"), None);
    }

    #[test]
    fn a_forwarded_flow_has_no_drop_attributes() {
        let f = Flow {
            verdict: Verdict::Forwarded as i32,
            trace_reason: TraceReason::Established as i32,
            destination: Some(Endpoint {
                namespace: "default".into(),
                pod_name: "pod-b".into(),
                ..Endpoint::default()
            }),
            ..Flow::default()
        };
        let r = log_record(&f, String::new(), 0);
        assert_eq!(r.severity_number, SeverityNumber::Info as i32);
        let a = &r.attributes;
        assert_eq!(text(a, "flow.verdict").as_deref(), Some("FORWARDED"));
        assert_eq!(text(a, "flow.trace_reason").as_deref(), Some("ESTABLISHED"));
        assert_eq!(text(a, "k8s.pod.name").as_deref(), Some("pod-b"));
        assert_eq!(get(a, "flow.drop_reason"), None);
        assert_eq!(get(a, "network.type"), None, "no IP, no address attributes");
    }

    #[test]
    fn sums_are_cumulative_and_monotonic() {
        let m = cumulative_sum(
            "hubble_drop",
            "Number of drops",
            vec![(vec![("reason".to_owned(), "POLICY_DENIED".to_owned())], 3)],
            1,
            2,
        );
        let Some(Data::Sum(s)) = m.data else {
            panic!("a sum")
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsInt(3))
        );
        assert_eq!(s.data_points[0].start_time_unix_nano, 1);
    }
}
