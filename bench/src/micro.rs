//! The per-flow operations of benchmark 8, on realistic data: the agent's own decoder and flow
//! builder (with the reference scenario's endpoints), Hubble filters as `flowctl observe`
//! sends them, and protobuf encoding of the `GetFlowsResponse` the agent streams.
//!
//! Used by the criterion benches (`cargo bench -p bench`) and by `bench --only 8`, which times
//! the same closures with a plain loop (median of 5 batches) so that the results table is
//! complete without criterion.

use std::{hint::black_box, time::Instant};

use flowscope_filter::FlowFilterSet;
use flowscope_proto::{
    flow::{Flow, FlowFilter},
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
};
use monitor_agent::{
    decode::{event::Event, flows::FlowBuilder, record::FlowRecord},
    endpoints::{Registry, file},
    kernel::facts::Clock,
};
use monitor_common::{FlowEvent, ct_state, event_flags, event_type, family, obs, proto, tcp};
use prost::Message as _;

/// The data the operations work on.
pub struct Fixture {
    /// A raw kernel event: pod-a's SYN to 1.0.0.1:80 leaving its veth.
    pub raw: FlowEvent,
    /// The clock that converts kernel time.
    pub clock: Clock,
    /// The flow builder, with the scenario's endpoints.
    pub builder: FlowBuilder,
    /// `raw`, decoded.
    pub event: Event,
    /// `event` as a flow.
    pub flow: Flow,
    /// `flowctl observe --ip 1.0.0.1 --protocol tcp` (whitelist: source or destination).
    pub filter_ip: FlowFilterSet,
    /// `flowctl observe --pod default/pod-a --label app=web --not --port 53`.
    pub filter_pod: FlowFilterSet,
    /// `event` as the history's record.
    pub record: FlowRecord,
    /// `flowctl observe --pod default/pod-b`: a follower of another pod (the record fails it).
    pub filter_other_pod: FlowFilterSet,
    /// The response the agent sends for `flow`.
    pub response: GetFlowsResponse,
    /// `response` encoded.
    pub encoded: Vec<u8>,
}

/// pod-a's veth in the scenario, for the flow's interface name.
pub const IFNAME: &str = testbed::scenario::LXC_A;

impl Fixture {
    /// Builds the fixture.
    pub fn new() -> Fixture {
        let mut raw = FlowEvent {
            ts_ns: Clock::monotonic_ns(),
            event_type: event_type::TRACE,
            obs_point: obs::FROM_ENDPOINT,
            ct_state: ct_state::NEW,
            family: family::V4,
            l4_proto: proto::TCP,
            tcp_flags: tcp::SYN,
            flags: event_flags::HAS_L4,
            src_port: 40_000,
            dst_port: 80,
            ifindex: 3,
            hash: 0x8958_dbda,
            orig_len: 60,
            src_mac: [0x02, 0, 0, 0, 0, 0xa],
            dst_mac: [0x02, 0, 0, 0, 0, 0x1],
            ..FlowEvent::default()
        };
        raw.src_addr[..4].copy_from_slice(&[10, 244, 0, 213]);
        raw.dst_addr[..4].copy_from_slice(&[1, 0, 0, 1]);
        let registry = Registry::new(
            vec![
                "198.51.100.10".parse().expect("ip"),
                "10.244.0.201".parse().expect("ip"),
            ],
            vec![],
        );
        registry.set_file(
            file::parse(testbed::scenario::ENDPOINTS_YAML).expect("the scenario's endpoints"),
        );
        let builder = FlowBuilder::new("bench-node".into(), registry);
        let clock = Clock::now();
        let event = Event::decode(&raw, &clock, |_| None);
        let flow = builder.build(&event, Some(IFNAME));
        let filter_ip = FlowFilterSet::compile(
            &[
                FlowFilter {
                    source_ip: vec!["1.0.0.1".into()],
                    protocol: vec!["tcp".into()],
                    ..FlowFilter::default()
                },
                FlowFilter {
                    destination_ip: vec!["1.0.0.1".into()],
                    protocol: vec!["tcp".into()],
                    ..FlowFilter::default()
                },
            ],
            &[],
        )
        .expect("filter");
        let filter_pod = FlowFilterSet::compile(
            &[
                FlowFilter {
                    source_pod: vec!["default/pod-a".into()],
                    source_label: vec!["app=web".into()],
                    ..FlowFilter::default()
                },
                FlowFilter {
                    destination_pod: vec!["default/pod-a".into()],
                    destination_label: vec!["app=web".into()],
                    ..FlowFilter::default()
                },
            ],
            &[FlowFilter {
                destination_port: vec!["53".into()],
                ..FlowFilter::default()
            }],
        )
        .expect("filter");
        let record = builder.record(event.clone(), Some(IFNAME.into()));
        let filter_other_pod = FlowFilterSet::compile(
            &[
                FlowFilter {
                    source_pod: vec!["default/pod-b".into()],
                    ..FlowFilter::default()
                },
                FlowFilter {
                    destination_pod: vec!["default/pod-b".into()],
                    ..FlowFilter::default()
                },
            ],
            &[],
        )
        .expect("filter");
        let response = GetFlowsResponse {
            node_name: flow.node_name.clone(),
            time: flow.time,
            response_types: Some(ResponseTypes::Flow(flow.clone())),
        };
        let encoded = response.encode_to_vec();
        Fixture {
            raw,
            clock,
            builder,
            event,
            flow,
            filter_ip,
            filter_pod,
            record,
            filter_other_pod,
            response,
            encoded,
        }
    }

    /// Raw kernel event → decoded event.
    pub fn decode(&self) -> Event {
        Event::decode(black_box(&self.raw), &self.clock, |_| None)
    }

    /// Decoded event → Hubble flow (identities, pod metadata, uuid, summary).
    pub fn build(&self) -> Flow {
        self.builder.build(black_box(&self.event), Some(IFNAME))
    }

    /// The whole per-event path of the agent: decode, build, wrap in an `Arc` for the history.
    pub fn event_to_flow(&self) -> std::sync::Arc<Flow> {
        let ev = Event::decode(black_box(&self.raw), &self.clock, |_| None);
        std::sync::Arc::new(self.builder.build(&ev, Some(IFNAME)))
    }

    /// The IP + protocol filter on the flow (it matches).
    pub fn filter_ip(&self) -> bool {
        self.filter_ip.matches(black_box(&self.flow))
    }

    /// The pod + label filter with a blacklist on the flow (it matches).
    pub fn filter_pod(&self) -> bool {
        self.filter_pod.matches(black_box(&self.flow))
    }

    /// Another pod's follower on the record, by building its flow (the agent before
    /// `FlowFilterSet::decide`).
    pub fn filter_record_built(&self) -> bool {
        self.filter_other_pod
            .matches(&black_box(&self.record).to_flow())
    }

    /// Another pod's follower on the record, decided on the record's fields (what the agent
    /// does).
    pub fn filter_record(&self) -> bool {
        let r = black_box(&self.record);
        self.filter_other_pod
            .decide(r)
            .unwrap_or_else(|| self.filter_other_pod.matches(&r.to_flow()))
    }

    /// The response as the server does it: the flow cloned into a `GetFlowsResponse`
    /// (field mask, extensions stripped), then encoded into `buf`.
    pub fn respond_and_encode(&self, buf: &mut Vec<u8>) -> usize {
        buf.clear();
        let resp = GetFlowsResponse {
            node_name: self.flow.node_name.clone(),
            time: self.flow.time,
            response_types: Some(ResponseTypes::Flow(black_box(&self.flow).clone())),
        };
        resp.encode(buf).expect("Vec grows");
        buf.len()
    }

    /// Protobuf encoding alone of a ready response into `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) -> usize {
        buf.clear();
        black_box(&self.response).encode(buf).expect("Vec grows");
        buf.len()
    }

    /// Protobuf decoding of a response (what every client and the relay do per flow).
    pub fn decode_pb(&self) -> GetFlowsResponse {
        GetFlowsResponse::decode(black_box(self.encoded.as_slice())).expect("valid")
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

/// The operations, by name, as (name, what it is).
pub const OPERATIONS: [(&str, &str); 10] = [
    ("decode", "kernel event → Event"),
    ("build", "Event → flow.Flow"),
    ("event_to_flow", "decode + build + Arc (agent per event)"),
    ("filter_ip", "filter --ip 1.0.0.1 --protocol tcp"),
    ("filter_pod", "filter --pod/--label, blacklist --port"),
    (
        "filter_record_built",
        "another pod's filter on a record, flow built",
    ),
    (
        "filter_record",
        "another pod's filter on a record, decided on it",
    ),
    ("encode", "protobuf encode GetFlowsResponse"),
    (
        "respond_encode",
        "clone into response + encode (agent per flow sent)",
    ),
    (
        "decode_pb",
        "protobuf decode GetFlowsResponse (client/relay)",
    ),
];

/// Runs operation `name` once.
pub fn run_op(fx: &Fixture, name: &str, buf: &mut Vec<u8>) {
    match name {
        "decode" => {
            black_box(fx.decode());
        }
        "build" => {
            black_box(fx.build());
        }
        "event_to_flow" => {
            black_box(fx.event_to_flow());
        }
        "filter_ip" => {
            black_box(fx.filter_ip());
        }
        "filter_pod" => {
            black_box(fx.filter_pod());
        }
        "filter_record_built" => {
            black_box(fx.filter_record_built());
        }
        "filter_record" => {
            black_box(fx.filter_record());
        }
        "encode" => {
            black_box(fx.encode(buf));
        }
        "respond_encode" => {
            black_box(fx.respond_and_encode(buf));
        }
        "decode_pb" => {
            black_box(fx.decode_pb());
        }
        other => panic!("unknown operation {other}"),
    }
}

/// Times `name` with a plain loop: `batches` batches of about `batch_time` each; returns the
/// ns per operation of each batch.
pub fn quick(
    fx: &Fixture,
    name: &str,
    batches: usize,
    batch_time: std::time::Duration,
) -> Vec<f64> {
    let mut buf = Vec::with_capacity(4096);
    // Calibrate: how many iterations fill a batch.
    let mut n = 16u64;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            run_op(fx, name, &mut buf);
        }
        let e = t.elapsed();
        if e >= batch_time / 4 || n >= 1 << 26 {
            n = ((n as f64) * batch_time.as_secs_f64() / e.as_secs_f64().max(1e-9)) as u64;
            break;
        }
        n *= 4;
    }
    let n = n.max(1);
    (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                run_op(fx, name, &mut buf);
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_is_realistic() {
        let fx = Fixture::new();
        assert!(fx.filter_ip(), "the IP filter matches the flow");
        assert!(fx.filter_pod(), "the pod filter matches the flow");
        let src = fx.flow.source.as_ref().expect("source endpoint");
        assert_eq!(src.pod_name, "pod-a");
        assert!(fx.encoded.len() > 100, "{} bytes", fx.encoded.len());
        let mut buf = Vec::new();
        for (name, _) in OPERATIONS {
            run_op(&fx, name, &mut buf);
        }
    }
}
