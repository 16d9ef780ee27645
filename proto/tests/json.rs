//! Hubble's JSON, byte for byte, and round trips through protobuf and JSON.

use flowscope_proto::flow::{self, Endpoint, Flow, Ip, IpVersion, Layer4, TcpFlags};
use flowscope_proto::flowscope::v1 as fs;
use flowscope_proto::observer::{self, GetFlowsResponse, get_flows_response::ResponseTypes};
use flowscope_proto::wkt::{Any, Duration, FieldMask, Timestamp};
use flowscope_proto::{json, relay};
use prost::Message as _;

/// The line `hubble observe -o json` prints for a pod's SYN leaving the node.
const HUBBLE_LINE: &str = concat!(
    r#"{"flow":{"time":"2026-11-26T11:00:01.123456789Z","uuid":"6b6e4ffb-0a4f-4b1c-a2d2-1b7f4d4c9f10","#,
    r#""verdict":"FORWARDED","IP":{"source":"10.244.0.213","destination":"1.0.0.1","ipVersion":"IPv4"},"#,
    r#""l4":{"TCP":{"source_port":59242,"destination_port":80,"flags":{"SYN":true}}},"#,
    r#""source":{"ID":762,"identity":42837,"namespace":"default","labels":["k8s:app=web"],"pod_name":"pod-a"},"#,
    r#""destination":{"identity":2,"labels":["reserved:world"]},"Type":"L3_L4","node_name":"node","#,
    r#""event_type":{"type":4},"traffic_direction":"EGRESS","trace_observation_point":"TO_NETWORK","#,
    r#""trace_reason":"NEW","is_reply":false,"interface":{"index":2,"name":"eth0"},"Summary":"TCP Flags: SYN"},"#,
    r#""node_name":"node","time":"2026-11-26T11:00:01.123456789Z"}"#,
);

fn syn_flow() -> Flow {
    let time = Timestamp::new(1_795_690_801, 123_456_789);
    let flags = TcpFlags {
        syn: true,
        ..Default::default()
    };
    #[expect(deprecated, reason = "Hubble still fills Summary")]
    Flow {
        time: Some(time),
        uuid: "6b6e4ffb-0a4f-4b1c-a2d2-1b7f4d4c9f10".into(),
        verdict: flow::Verdict::Forwarded.into(),
        ip: Some(Ip {
            source: "10.244.0.213".into(),
            destination: "1.0.0.1".into(),
            ip_version: IpVersion::IPv4.into(),
            ..Default::default()
        }),
        l4: Some(Layer4::tcp(59242, 80, flags)),
        source: Some(Endpoint {
            id: 762,
            identity: 42837,
            namespace: "default".into(),
            labels: vec!["k8s:app=web".into()],
            pod_name: "pod-a".into(),
            ..Default::default()
        }),
        destination: Some(Endpoint {
            identity: 2,
            labels: vec!["reserved:world".into()],
            ..Default::default()
        }),
        r#type: flow::FlowType::L3L4.into(),
        node_name: "node".into(),
        event_type: Some(flow::CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        traffic_direction: flow::TrafficDirection::Egress.into(),
        trace_observation_point: flow::TraceObservationPoint::ToNetwork.into(),
        trace_reason: flow::TraceReason::New.into(),
        is_reply: Some(false),
        interface: Some(flow::NetworkInterface {
            index: 2,
            name: "eth0".into(),
        }),
        summary: flags.summary(),
        ..Default::default()
    }
}

fn syn_response() -> GetFlowsResponse {
    let flow = syn_flow();
    GetFlowsResponse {
        time: flow.time,
        node_name: "node".into(),
        response_types: Some(ResponseTypes::Flow(flow)),
    }
}

#[test]
fn golden_hubble_line() {
    assert_eq!(json::to_json(&syn_response()).unwrap(), HUBBLE_LINE);
}

#[test]
fn hubble_line_parses_back() {
    let parsed: GetFlowsResponse = json::from_json(HUBBLE_LINE).unwrap();
    assert_eq!(parsed, syn_response());
}

#[test]
fn lower_camel_case_names_parse_too() {
    let camel = r#"{"flow":{"nodeName":"n","isReply":true,"trafficDirection":"INGRESS",
        "l4":{"TCP":{"sourcePort":1,"destinationPort":2}},"dropReasonDesc":"POLICY_DENIED"},
        "nodeName":"n","unknownFutureField":{"x":1}}"#;
    let parsed: GetFlowsResponse = json::from_json(camel).unwrap();
    let Some(ResponseTypes::Flow(f)) = parsed.response_types else {
        panic!("a flow")
    };
    assert_eq!(f.node_name, "n");
    assert_eq!(f.is_reply, Some(true));
    assert_eq!(f.traffic_direction(), flow::TrafficDirection::Ingress);
    assert_eq!(f.l4.as_ref().and_then(|l4| l4.ports()), Some((1, 2)));
    assert_eq!(f.drop_reason_desc(), flow::DropReason::PolicyDenied);
    assert_eq!(parsed.node_name, "n");
}

#[test]
fn protobuf_round_trip() {
    let res = syn_response();
    let bytes = res.encode_to_vec();
    assert_eq!(GetFlowsResponse::decode(bytes.as_slice()).unwrap(), res);
}

#[test]
fn value_forms() {
    // 64-bit integers are strings; 32-bit ones are numbers.
    let status = observer::ServerStatusResponse {
        num_flows: 4095,
        max_flows: 4096,
        seen_flows: 123_456_789_012,
        uptime_ns: 1,
        num_connected_nodes: Some(3),
        num_unavailable_nodes: Some(0),
        flows_rate: 1.5,
        ..Default::default()
    };
    assert_eq!(
        json::to_json(&status).unwrap(),
        r#"{"num_flows":"4095","max_flows":"4096","seen_flows":"123456789012","uptime_ns":"1","num_connected_nodes":3,"num_unavailable_nodes":0,"flows_rate":1.5}"#
    );
    // Timestamps: 0, 3, 6 or 9 fractional digits and `Z`, like protojson.
    for (nanos, text) in [
        (0, "\"2026-11-26T11:00:01Z\""),
        (500_000_000, "\"2026-11-26T11:00:01.500Z\""),
        (1_000, "\"2026-11-26T11:00:01.000001Z\""),
        (1, "\"2026-11-26T11:00:01.000000001Z\""),
    ] {
        let t = Timestamp::new(1_795_690_801, nanos);
        assert_eq!(json::to_json(&t).unwrap(), text);
        assert_eq!(json::from_json::<Timestamp>(text).unwrap(), t);
    }
    // Offsets are accepted when parsing.
    assert_eq!(
        json::from_json::<Timestamp>("\"2026-11-26T12:00:01+01:00\"").unwrap(),
        Timestamp::new(1_795_690_801, 0)
    );
    // Out of protojson's range: an error, not garbage.
    assert!(json::to_json(&Timestamp::new(i64::MAX, 0)).is_err());
    // Durations like protojson: "1.500s".
    let d = Duration {
        seconds: 1,
        nanos: 500_000_000,
    };
    assert_eq!(json::to_json(&d).unwrap(), "\"1.500s\"");
    // Field masks are one camelCase string.
    let mask = FieldMask {
        paths: vec!["time".into(), "source.pod_name".into()],
    };
    assert_eq!(json::to_json(&mask).unwrap(), "\"time,source.podName\"");
    assert_eq!(
        json::from_json::<FieldMask>("\"time,source.podName\"").unwrap(),
        mask
    );
}

#[test]
fn unknown_enum_numbers_survive() {
    // A DropReason a newer Hubble knows and we do not: printed as a number
    // (as protojson does), read back unchanged.
    let f = Flow {
        drop_reason_desc: 999,
        verdict: flow::Verdict::Dropped.into(),
        ..Default::default()
    };
    let text = json::to_json(&f).unwrap();
    assert_eq!(text, r#"{"verdict":"DROPPED","drop_reason_desc":999}"#);
    assert_eq!(json::from_json::<Flow>(&text).unwrap(), f);
    // Unknown names parse as the default rather than failing the line.
    let g: Flow = json::from_json(r#"{"verdict":"SOMETHING_NEW"}"#).unwrap();
    assert_eq!(g.verdict, 0);
    // Repeated enums too.
    let ff = flow::FlowFilter {
        verdict: vec![1, 77],
        ..Default::default()
    };
    let text = json::to_json(&ff).unwrap();
    assert_eq!(text, r#"{"verdict":["FORWARDED",77]}"#);
    assert_eq!(json::from_json::<flow::FlowFilter>(&text).unwrap(), ff);
}

#[test]
fn extensions_print_inline_with_type() {
    let ext = fs::FlowExtension {
        skb_hash: 0xdead_beef,
        ct_id: 42,
        source_xlated_port: 40000,
        unanswered: true,
        kernel_drop_reason: 2,
        kernel_drop_reason_name: "NO_SOCKET".into(),
        ..Default::default()
    };
    let f = Flow {
        extensions: Some(Any::from_msg(&ext)),
        ..Default::default()
    };
    let text = json::to_json(&f).unwrap();
    assert_eq!(
        text,
        r#"{"extensions":{"@type":"type.googleapis.com/flowscope.v1.FlowExtension","skb_hash":3735928559,"ct_id":"42","source_xlated_port":40000,"unanswered":true,"kernel_drop_reason":2,"kernel_drop_reason_name":"NO_SOCKET"}}"#
    );
    let back: Flow = json::from_json(&text).unwrap();
    assert_eq!(back, f);
    let unpacked = back
        .extensions
        .unwrap()
        .to_msg::<fs::FlowExtension>()
        .unwrap();
    assert_eq!(unpacked, Some(ext));

    // A type we do not know: base64 under "value", and back.
    let foreign = Any {
        type_url: "type.googleapis.com/other.Thing".into(),
        value: vec![8, 1],
    };
    let text = json::to_json(&foreign).unwrap();
    assert_eq!(
        text,
        r#"{"@type":"type.googleapis.com/other.Thing","value":"CAE="}"#
    );
    assert_eq!(json::from_json::<Any>(&text).unwrap(), foreign);

    // A well-known type with a scalar JSON form goes under "value".
    let t = Any::from_msg(&Timestamp::new(0, 0));
    let text = json::to_json(&t).unwrap();
    assert_eq!(
        text,
        r#"{"@type":"type.googleapis.com/google.protobuf.Timestamp","value":"1970-01-01T00:00:00Z"}"#
    );
    assert_eq!(json::from_json::<Any>(&text).unwrap(), t);
}

#[test]
fn other_response_types() {
    let lost = GetFlowsResponse {
        response_types: Some(ResponseTypes::LostEvents(flow::LostEvent {
            source: flow::LostEventSource::PerfEventRingBuffer.into(),
            num_events_lost: 7,
            cpu: Some(1),
            ..Default::default()
        })),
        node_name: "node".into(),
        time: Some(Timestamp::new(0, 0)),
    };
    let text = json::to_json(&lost).unwrap();
    assert_eq!(
        text,
        r#"{"lost_events":{"source":"PERF_EVENT_RING_BUFFER","num_events_lost":"7","cpu":1},"node_name":"node","time":"1970-01-01T00:00:00Z"}"#
    );
    assert_eq!(json::from_json::<GetFlowsResponse>(&text).unwrap(), lost);

    let status = GetFlowsResponse {
        response_types: Some(ResponseTypes::NodeStatus(relay::NodeStatusEvent {
            state_change: relay::NodeState::NodeConnected.into(),
            node_names: vec!["a".into(), "b".into()],
            message: String::new(),
        })),
        ..Default::default()
    };
    let text = json::to_json(&status).unwrap();
    assert_eq!(
        text,
        r#"{"node_status":{"state_change":"NODE_CONNECTED","node_names":["a","b"]}}"#
    );
    assert_eq!(json::from_json::<GetFlowsResponse>(&text).unwrap(), status);

    // Two oneof members at once is an error, as in protojson.
    assert!(json::from_json::<GetFlowsResponse>(r#"{"flow":{},"lost_events":{}}"#).is_err());

    // ExportEvent carries agent and debug events as well.
    let export = observer::ExportEvent {
        response_types: Some(observer::export_event::ResponseTypes::AgentEvent(
            flow::AgentEvent {
                r#type: flow::AgentEventType::AgentStarted.into(),
                notification: Some(flow::agent_event::Notification::AgentStart(
                    flow::TimeNotification {
                        time: Some(Timestamp::new(1, 0)),
                    },
                )),
            },
        )),
        node_name: "node".into(),
        time: Some(Timestamp::new(1, 0)),
    };
    let text = json::to_json(&export).unwrap();
    assert_eq!(
        text,
        r#"{"agent_event":{"type":"AGENT_STARTED","agent_start":{"time":"1970-01-01T00:00:01Z"}},"node_name":"node","time":"1970-01-01T00:00:01Z"}"#
    );
    assert_eq!(
        json::from_json::<observer::ExportEvent>(&text).unwrap(),
        export
    );
}

#[test]
fn flowscope_messages_round_trip() {
    let entry = fs::ConntrackEntry {
        protocol: 6,
        protocol_name: "TCP".into(),
        family: IpVersion::IPv4.into(),
        tuple: Some(fs::Tuple {
            source_ip: "10.244.0.213".into(),
            destination_ip: "1.0.0.1".into(),
            source_port: 59242,
            destination_port: 80,
            icmp_id: 0,
        }),
        direction: flow::TrafficDirection::Egress.into(),
        state: fs::ConntrackState::Established.into(),
        flags: Some(fs::ConntrackFlags {
            seen_reply: true,
            seen_non_syn: true,
            ..Default::default()
        }),
        expires_in: Some(Duration {
            seconds: 21_599,
            nanos: 0,
        }),
        tx_packets: 10,
        tx_bytes: 1000,
        tx_tcp_flags: Some(TcpFlags {
            syn: true,
            ack: true,
            ..Default::default()
        }),
        node_name: "node".into(),
        ..Default::default()
    };
    let text = json::to_json(&entry).unwrap();
    assert!(
        text.contains(r#""state":"CONNTRACK_STATE_ESTABLISHED""#),
        "{text}"
    );
    assert!(text.contains(r#""expires_in":"21599s""#), "{text}");
    assert!(text.contains(r#""tx_packets":"10""#), "{text}");
    assert_eq!(json::from_json::<fs::ConntrackEntry>(&text).unwrap(), entry);
    assert_eq!(
        fs::ConntrackEntry::decode(entry.encode_to_vec().as_slice()).unwrap(),
        entry
    );

    // proto3 `optional`: absent vs zero are different.
    let nat = fs::NatEntry {
        kind: fs::NatKind::Snat.into(),
        original_packets: Some(0),
        ..Default::default()
    };
    let text = json::to_json(&nat).unwrap();
    assert_eq!(text, r#"{"kind":"NAT_KIND_SNAT","original_packets":"0"}"#);
    assert_eq!(json::from_json::<fs::NatEntry>(&text).unwrap(), nat);
}

#[test]
fn write_json_line_appends_newline() {
    let mut buf = Vec::new();
    json::write_json_line(&mut buf, &syn_response()).unwrap();
    assert_eq!(buf, format!("{HUBBLE_LINE}\n").into_bytes());
}

#[test]
fn tcp_flags_in_hubble_order() {
    let all = TcpFlags::from_header(0xff, true);
    assert_eq!(
        all.summary(),
        "TCP Flags: SYN, ACK, RST, FIN, PSH, URG, ECE, CWR, NS"
    );
    let syn_ack = TcpFlags::from_header(0x12, false);
    assert_eq!(syn_ack.summary(), "TCP Flags: SYN, ACK");
    let fin_ack = TcpFlags::from_header(0x11, false);
    assert_eq!(fin_ack.to_hubble_string(), "ACK, FIN");
    assert!(TcpFlags::from_header(0x02, false).is_subset_of(&syn_ack));
    assert!(!syn_ack.is_subset_of(&TcpFlags::from_header(0x02, false)));
}

#[test]
fn datapath_mappings() {
    use flow::{TraceObservationPoint as P, TraceReason as R};
    assert_eq!(P::from_datapath(0), P::ToEndpoint);
    assert_eq!(P::from_datapath(11), P::ToNetwork);
    assert_eq!(P::from_datapath(200), P::UnknownPoint);
    assert_eq!(R::from_ct_result(0), R::New);
    assert_eq!(R::from_ct_result(2), R::Reply);
    assert_eq!(R::from_ct_result(9), R::Unknown);
}
