//! Golden output per format, on flows shaped like the reference scenario's
//! (docs/reference-scenario.md): pod-a's TCP connection to 1.0.0.1:80 seen at its veth, at
//! the uplink after MASQUERADE and on the way back; a kernel drop; ICMP; an
//! IPv6 flow between reserved identities; a lost-events notice and relay node
//! status events.

use flowscope_proto::flow::{
    CiliumEventType, Endpoint, Flow, Ip, IpVersion, Layer4, LostEvent, LostEventSource,
    NetworkInterface, TcpFlags, TraceObservationPoint, TraceReason, Verdict,
};
use flowscope_proto::flowscope::v1::FlowExtension;
use flowscope_proto::observer::GetFlowsResponse;
use flowscope_proto::observer::get_flows_response::ResponseTypes;
use flowscope_proto::relay::{NodeState, NodeStatusEvent};
use flowscope_proto::wkt::{Any, Timestamp};

use super::*;

/// 2025-11-26T11:00:00Z.
const T0: i64 = 1_764_154_800;

fn ts(secs: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp::new(T0 + secs, nanos))
}

fn pod_a() -> Endpoint {
    Endpoint {
        id: 762,
        identity: 42837,
        namespace: "default".into(),
        labels: vec![
            "k8s:app=pod-a".into(),
            "k8s:io.kubernetes.pod.namespace=default".into(),
        ],
        pod_name: "pod-a".into(),
        ..Default::default()
    }
}

fn world() -> Endpoint {
    Endpoint {
        identity: 2,
        labels: vec!["reserved:world".into()],
        ..Default::default()
    }
}

fn ext(skb_hash: u32, f: impl FnOnce(&mut FlowExtension)) -> Option<Any> {
    let mut ext = FlowExtension {
        skb_hash,
        ..Default::default()
    };
    f(&mut ext);
    Some(Any::from_msg(&ext))
}

fn ipv4(src: &str, dst: &str) -> Option<Ip> {
    Some(Ip {
        source: src.into(),
        destination: dst.into(),
        ip_version: IpVersion::IPv4 as i32,
        ..Default::default()
    })
}

fn trace_event(point: TraceObservationPoint, datapath: i32) -> (Option<CiliumEventType>, i32) {
    (
        Some(CiliumEventType {
            r#type: 4,
            sub_type: datapath,
        }),
        point as i32,
    )
}

fn lxc() -> Option<NetworkInterface> {
    Some(NetworkInterface {
        index: 7,
        name: "lxcf4cd39e34601".into(),
    })
}

/// pod-a's SYN to 1.0.0.1:80, seen leaving the pod (at its veth).
#[expect(deprecated, reason = "Summary is Hubble's and we fill it")]
fn syn_from_endpoint() -> Flow {
    let (event_type, point) = trace_event(TraceObservationPoint::FromEndpoint, 5);
    Flow {
        time: ts(1, 123_456_789),
        verdict: Verdict::Forwarded as i32,
        ip: ipv4("10.244.0.213", "1.0.0.1"),
        l4: Some(Layer4::tcp(59242, 80, TcpFlags::from_header(0x02, false))),
        source: Some(pod_a()),
        destination: Some(world()),
        r#type: 1,
        node_name: "node-1".into(),
        event_type,
        trace_observation_point: point,
        trace_reason: TraceReason::New as i32,
        is_reply: Some(false),
        interface: lxc(),
        summary: "TCP Flags: SYN".into(),
        extensions: ext(0x8958_dbda, |_| {}),
        ..Default::default()
    }
}

/// The same SYN at the uplink, after MASQUERADE to 198.51.100.10:41708.
#[expect(deprecated, reason = "Summary is Hubble's and we fill it")]
fn syn_to_network() -> Flow {
    let (event_type, point) = trace_event(TraceObservationPoint::ToNetwork, 11);
    let mut ip = ipv4("10.244.0.213", "1.0.0.1");
    if let Some(ip) = ip.as_mut() {
        ip.source_xlated = "198.51.100.10".into();
    }
    Flow {
        time: ts(1, 124_000_000),
        verdict: Verdict::Forwarded as i32,
        ip,
        l4: Some(Layer4::tcp(59242, 80, TcpFlags::from_header(0x02, false))),
        source: Some(pod_a()),
        destination: Some(world()),
        r#type: 1,
        node_name: "node-1".into(),
        event_type,
        trace_observation_point: point,
        trace_reason: TraceReason::New as i32,
        is_reply: Some(false),
        interface: Some(NetworkInterface {
            index: 2,
            name: "eth0".into(),
        }),
        summary: "TCP Flags: SYN".into(),
        extensions: ext(0x8958_dbda, |e| e.source_xlated_port = 41708),
        ..Default::default()
    }
}

/// The SYN-ACK delivered back to pod-a.
#[expect(deprecated, reason = "Summary is Hubble's and we fill it")]
fn synack_to_endpoint() -> Flow {
    let (event_type, point) = trace_event(TraceObservationPoint::ToEndpoint, 0);
    Flow {
        time: ts(1, 140_000_000),
        verdict: Verdict::Forwarded as i32,
        ip: ipv4("1.0.0.1", "10.244.0.213"),
        l4: Some(Layer4::tcp(80, 59242, TcpFlags::from_header(0x12, false))),
        source: Some(world()),
        destination: Some(pod_a()),
        r#type: 1,
        node_name: "node-1".into(),
        event_type,
        trace_observation_point: point,
        trace_reason: TraceReason::Reply as i32,
        is_reply: Some(true),
        interface: lxc(),
        summary: "TCP Flags: SYN, ACK".into(),
        extensions: ext(0, |_| {}),
        ..Default::default()
    }
}

/// A UDP packet to 1.0.0.1:53 that a node firewall rule dropped.
#[expect(deprecated, reason = "Summary is Hubble's and we fill it")]
fn netfilter_drop() -> Flow {
    Flow {
        time: ts(3, 0),
        verdict: Verdict::Dropped as i32,
        ip: ipv4("10.244.0.213", "1.0.0.1"),
        l4: Some(Layer4::udp(40000, 53)),
        source: Some(pod_a()),
        destination: Some(world()),
        r#type: 1,
        node_name: "node-1".into(),
        // What the agent sends: no Hubble reason means "dropped by netfilter".
        event_type: Some(CiliumEventType {
            r#type: 1,
            sub_type: flowscope_proto::drop_reason::UNMAPPED_DROP_SUB_TYPE,
        }),
        interface: Some(NetworkInterface {
            index: 2,
            name: "eth0".into(),
        }),
        summary: "UDP".into(),
        extensions: ext(0x1c2a_3b4c, |e| {
            e.kernel_drop_reason = 6;
            e.kernel_drop_reason_name = "NETFILTER_DROP".into();
        }),
        ..Default::default()
    }
}

/// pod-a pinging 1.0.0.1 (the lab's `ping 1.1`).
#[expect(deprecated, reason = "Summary is Hubble's and we fill it")]
fn ping() -> Flow {
    let (event_type, point) = trace_event(TraceObservationPoint::FromEndpoint, 5);
    Flow {
        time: ts(4, 500_000_000),
        verdict: Verdict::Forwarded as i32,
        ip: ipv4("10.244.0.213", "1.0.0.1"),
        l4: Some(Layer4::icmpv4(8, 0)),
        source: Some(pod_a()),
        destination: Some(world()),
        r#type: 1,
        node_name: "node-1".into(),
        event_type,
        trace_observation_point: point,
        trace_reason: TraceReason::New as i32,
        is_reply: Some(false),
        interface: lxc(),
        summary: "ICMPv4 EchoRequest".into(),
        extensions: ext(0xabc, |_| {}),
        ..Default::default()
    }
}

/// IPv6 from the host to a remote node's agent, handed to the stack.
#[expect(deprecated, reason = "Summary is Hubble's and we fill it")]
fn ipv6_host_to_remote_node() -> Flow {
    let (event_type, point) = trace_event(TraceObservationPoint::ToStack, 3);
    Flow {
        time: ts(5, 0),
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "fd00::10".into(),
            destination: "fd00::20".into(),
            ip_version: IpVersion::IPv6 as i32,
            ..Default::default()
        }),
        l4: Some(Layer4::tcp(34567, 4244, TcpFlags::from_header(0x10, false))),
        source: Some(Endpoint {
            identity: 1,
            labels: vec!["reserved:host".into()],
            ..Default::default()
        }),
        destination: Some(Endpoint {
            identity: 6,
            labels: vec!["reserved:remote-node".into()],
            ..Default::default()
        }),
        node_name: "node-1".into(),
        event_type,
        trace_observation_point: point,
        trace_reason: TraceReason::Established as i32,
        is_reply: Some(false),
        summary: "TCP Flags: ACK".into(),
        ..Default::default()
    }
}

fn flow_response(flow: Flow) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: flow.node_name.clone(),
        time: flow.time,
        response_types: Some(ResponseTypes::Flow(flow)),
    }
}

fn lost() -> GetFlowsResponse {
    GetFlowsResponse {
        response_types: Some(ResponseTypes::LostEvents(LostEvent {
            source: LostEventSource::HubbleRingBuffer as i32,
            num_events_lost: 42,
            cpu: None,
            ..Default::default()
        })),
        node_name: "node-1".into(),
        time: ts(6, 0),
    }
}

fn node_status(state: NodeState, names: &[&str], message: &str) -> GetFlowsResponse {
    GetFlowsResponse {
        response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
            state_change: state as i32,
            node_names: names.iter().map(|n| n.to_string()).collect(),
            message: message.into(),
        })),
        node_name: String::new(),
        time: ts(0, 0),
    }
}

/// Everything, in stream order.
fn stream() -> Vec<GetFlowsResponse> {
    vec![
        node_status(NodeState::NodeConnected, &["node-1", "node-2"], ""),
        node_status(NodeState::NodeUnavailable, &["node-3"], ""),
        flow_response(syn_from_endpoint()),
        flow_response(syn_to_network()),
        flow_response(synack_to_endpoint()),
        flow_response(netfilter_drop()),
        flow_response(ping()),
        flow_response(ipv6_host_to_remote_node()),
        lost(),
    ]
}

/// Prints `responses` and returns (stdout, stderr).
fn render(opts: Options, responses: &[GetFlowsResponse]) -> (String, String) {
    let mut printer = Printer::new(opts, Vec::new(), Vec::new());
    for res in responses {
        printer.write(res).unwrap();
    }
    printer.finish().unwrap();
    (
        String::from_utf8(printer.out).unwrap(),
        String::from_utf8(printer.err).unwrap(),
    )
}

fn with_format(format: Format) -> Options {
    Options {
        format,
        ..Options::default()
    }
}

#[test]
fn compact_golden() {
    let (out, err) = render(with_format(Format::Compact), &stream());
    assert_eq!(
        out,
        "\
Nov 26 11:00:01.123: default/pod-a:59242 (ID:42837) -> 1.0.0.1:80 (world) from-endpoint FORWARDED (TCP Flags: SYN)
Nov 26 11:00:01.124: default/pod-a:59242 (ID:42837) -> 1.0.0.1:80 (world) to-network FORWARDED (TCP Flags: SYN)
Nov 26 11:00:01.140: default/pod-a:59242 (ID:42837) <- 1.0.0.1:80 (world) to-endpoint FORWARDED (TCP Flags: SYN, ACK)
Nov 26 11:00:03.000: default/pod-a:40000 (ID:42837) <> 1.0.0.1:53 (world) NETFILTER_DROP DROPPED (UDP)
Nov 26 11:00:04.500: default/pod-a (ID:42837) -> 1.0.0.1 (world) from-endpoint FORWARDED (ICMPv4 EchoRequest)
Nov 26 11:00:05.000: [fd00::10]:34567 (host) -> [fd00::20]:4244 (remote-node) to-stack FORWARDED (TCP Flags: ACK)
EVENTS LOST: HUBBLE_RING_BUFFER CPU(0) 42
"
    );
    // Node status goes to stderr; without --debug only the bad news.
    assert_eq!(
        err,
        "Nov 26 11:00:00.000 []: 1 nodes are unavailable: node-3\n"
    );
}

#[test]
fn compact_node_status_with_debug() {
    let opts = Options {
        debug: true,
        ..Options::default()
    };
    let responses = [
        node_status(NodeState::NodeConnected, &["node-1", "node-2"], ""),
        node_status(NodeState::NodeError, &["node-4"], "stream reset"),
        node_status(NodeState::NodeGone, &["node-5"], ""),
    ];
    let (out, err) = render(opts, &responses);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "\
Nov 26 11:00:00.000 []: Receiving flows from 2 nodes: node-1, node-2
Nov 26 11:00:00.000 []: Error \"stream reset\" on 1 nodes: node-4
Nov 26 11:00:00.000 []: 1 nodes removed from cluster: node-5
"
    );
}

#[test]
fn compact_with_node_name_numeric_and_time_format() {
    let opts = Options {
        node_name: true,
        numeric: true,
        time_format: TimeFormat::Rfc3339Nano,
        ..Options::default()
    };
    let (out, _) = render(opts, &[flow_response(synack_to_endpoint())]);
    assert_eq!(
        out,
        "2025-11-26T11:00:01.14Z [node-1]: 10.244.0.213:59242 (ID:42837) <- 1.0.0.1:80 (world) to-endpoint FORWARDED (TCP Flags: SYN, ACK)\n"
    );
}

#[test]
fn compact_with_colors() {
    let opts = Options {
        color: true,
        ..Options::default()
    };
    let (out, _) = render(opts, &[flow_response(netfilter_drop())]);
    assert_eq!(
        out,
        "Nov 26 11:00:03.000: \x1b[36mdefault/pod-a:\x1b[33m40000\x1b[0m\x1b[0m \x1b[35m(ID:42837)\x1b[0m <> \
         \x1b[36m1.0.0.1:\x1b[33m53\x1b[0m\x1b[0m \x1b[35m(world)\x1b[0m NETFILTER_DROP \x1b[31mDROPPED\x1b[0m (UDP)\n"
    );
}

#[test]
fn names_and_services_win_over_addresses() {
    let mut flow = syn_from_endpoint();
    flow.destination_names = vec!["one.one.one.one".into()];
    let (out, _) = render(Options::default(), &[flow_response(flow.clone())]);
    assert!(out.contains("-> one.one.one.one:80 (world)"), "{out}");
    flow.destination_service = Some(flowscope_proto::flow::Service {
        name: "dns".into(),
        namespace: "kube-system".into(),
    });
    let (out, _) = render(Options::default(), &[flow_response(flow)]);
    assert!(out.contains("-> kube-system/dns:80 (world)"), "{out}");
}

#[test]
fn drop_reason_falls_back_to_hubble_names() {
    let mut flow = netfilter_drop();
    flow.extensions = None;
    let (out, _) = render(Options::default(), &[flow_response(flow.clone())]);
    assert!(out.contains("(world) UNKNOWN DROPPED (UDP)"), "{out}");
    flow.drop_reason_desc = flowscope_proto::flow::DropReason::PolicyDenied as i32;
    let (out, _) = render(Options::default(), &[flow_response(flow)]);
    assert!(out.contains("(world) POLICY_DENIED DROPPED (UDP)"), "{out}");
}

#[test]
fn control_characters_from_the_server_are_neutralized() {
    let mut flow = syn_from_endpoint();
    if let Some(src) = flow.source.as_mut() {
        src.pod_name = "evil\x1b[2Jpod\nnext".into();
    }
    let (out, _) = render(Options::default(), &[flow_response(flow)]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("default/evil\u{FFFD}[2Jpod\u{FFFD}next:59242"),
        "{out}"
    );
}

#[test]
fn dict_golden() {
    let responses = [
        flow_response(syn_to_network()),
        flow_response(netfilter_drop()),
        lost(),
        node_status(
            NodeState::NodeUnavailable,
            &["node-3"],
            "connection refused",
        ),
    ];
    let (out, err) = render(with_format(Format::Dict), &responses);
    assert_eq!(
        out,
        "  TIMESTAMP: Nov 26 11:00:01.124
     SOURCE: default/pod-a:59242
SNAT SOURCE: 198.51.100.10:41708
DESTINATION: 1.0.0.1:80
       TYPE: to-network
    VERDICT: FORWARDED
    SUMMARY: TCP Flags: SYN
------------
  TIMESTAMP: Nov 26 11:00:03.000
     SOURCE: default/pod-a:40000
DESTINATION: 1.0.0.1:53
       TYPE: NETFILTER_DROP
    VERDICT: DROPPED
    SUMMARY: UDP
------------
  TIMESTAMP: 
     SOURCE: HUBBLE_RING_BUFFER
       TYPE: EVENTS LOST
    VERDICT: 
    SUMMARY: CPU(0) - 42
"
    );
    assert_eq!(
        err,
        "------------
  TIMESTAMP: Nov 26 11:00:00.000
      STATE: NODE_UNAVAILABLE
      NODES: node-3
    MESSAGE: \"connection refused\"
"
    );
}

#[test]
fn table_golden() {
    let responses = [
        flow_response(syn_from_endpoint()),
        flow_response(syn_to_network()),
        flow_response(synack_to_endpoint()),
        flow_response(netfilter_drop()),
        flow_response(ipv6_host_to_remote_node()),
        lost(),
    ];
    let (out, _) = render(with_format(Format::Table), &responses);
    assert_eq!(
        out,
        "\
TIMESTAMP             SOURCE                                           DESTINATION           TYPE             VERDICT     SUMMARY
Nov 26 11:00:01.123   default/pod-a:59242                              1.0.0.1:80            from-endpoint    FORWARDED   TCP Flags: SYN
Nov 26 11:00:01.124   default/pod-a:59242 (SNAT 198.51.100.10:41708)   1.0.0.1:80            to-network       FORWARDED   TCP Flags: SYN
Nov 26 11:00:01.140   1.0.0.1:80                                       default/pod-a:59242   to-endpoint      FORWARDED   TCP Flags: SYN, ACK
Nov 26 11:00:03.000   default/pod-a:40000                              1.0.0.1:53            NETFILTER_DROP   DROPPED     UDP
Nov 26 11:00:05.000   [fd00::10]:34567                                 [fd00::20]:4244       to-stack         FORWARDED   TCP Flags: ACK
                      HUBBLE_RING_BUFFER                                                     EVENTS LOST                  CPU(0) - 42
"
    );
}

#[test]
fn table_with_node_name() {
    let opts = Options {
        format: Format::Table,
        node_name: true,
        ..Options::default()
    };
    let (out, _) = render(opts, &[flow_response(ping())]);
    assert_eq!(
        out,
        "\
TIMESTAMP             NODE     SOURCE          DESTINATION   TYPE            VERDICT     SUMMARY
Nov 26 11:00:04.500   node-1   default/pod-a   1.0.0.1       from-endpoint   FORWARDED   ICMPv4 EchoRequest
"
    );
}

#[test]
fn json_leaves_flowscopes_extension_out_unless_asked() {
    let (out, _) = render(with_format(Format::Json), &stream());
    assert!(!out.contains("extensions"), "{out}");
    let with = Options {
        extensions: true,
        ..with_format(Format::Json)
    };
    let (out_with, _) = render(with, &stream());
    assert!(
        out_with
            .contains(r#""extensions":{"@type":"type.googleapis.com/flowscope.v1.FlowExtension""#)
    );
    // Nothing else differs.
    for (without, with) in out.lines().zip(out_with.lines()) {
        let mut a: GetFlowsResponse = flowscope_proto::json::from_json(without).unwrap();
        let b: GetFlowsResponse = flowscope_proto::json::from_json(with).unwrap();
        if let (Some(ResponseTypes::Flow(fa)), Some(ResponseTypes::Flow(fb))) =
            (&mut a.response_types, &b.response_types)
        {
            fa.extensions.clone_from(&fb.extensions);
        }
        assert_eq!(a, b);
    }
}

#[test]
fn json_golden() {
    let opts = Options {
        extensions: true,
        ..with_format(Format::Json)
    };
    let (out, err) = render(opts, &stream());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    // Exactly what `hubble observe -o json` prints for these.
    assert_eq!(
        lines[6],
        r#"{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":"42"},"node_name":"node-1","time":"2025-11-26T11:00:06Z"}"#
    );
    assert!(
        lines[1].starts_with(
            r#"{"flow":{"time":"2025-11-26T11:00:01.124Z","verdict":"FORWARDED","IP":{"source":"10.244.0.213","source_xlated":"198.51.100.10","destination":"1.0.0.1","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":59242,"destination_port":80,"flags":{"SYN":true}}},"source":{"ID":762,"identity":42837,"namespace":"default","#
        ),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].contains(
            r#""extensions":{"@type":"type.googleapis.com/flowscope.v1.FlowExtension","skb_hash":472529740,"kernel_drop_reason":6,"kernel_drop_reason_name":"NETFILTER_DROP"}"#
        ),
        "{}",
        lines[3]
    );
    // Every line reads back as the response it came from.
    let flows: Vec<GetFlowsResponse> = stream().into_iter().skip(2).collect();
    for (line, want) in lines.iter().zip(&flows) {
        let back: GetFlowsResponse = flowscope_proto::json::from_json(line).unwrap();
        assert_eq!(&back, want);
    }
    // Node status: JSON on stderr, only the unavailable one without --debug.
    assert_eq!(
        err,
        r#"{"node_status":{"state_change":"NODE_UNAVAILABLE","node_names":["node-3"]},"time":"2025-11-26T11:00:00Z"}"#
            .to_string()
            + "\n"
    );
    // jsonpb is the same thing.
    let jsonpb = Options {
        extensions: true,
        ..with_format(Format::Jsonpb)
    };
    assert_eq!(render(jsonpb, &stream()).0, out);
}

#[test]
fn monitor_golden() {
    let (out, err) = render(with_format(Format::Monitor), &stream());
    assert_eq!(
        out,
        "\
<- endpoint 762 flow 0x8958dbda identity 42837->world state new ifindex lxcf4cd39e34601 orig-ip 0.0.0.0: 10.244.0.213:59242 -> 1.0.0.1:80 tcp SYN
-> network flow 0x8958dbda identity 42837->world state new ifindex eth0 orig-ip 10.244.0.213: 198.51.100.10:41708 -> 1.0.0.1:80 tcp SYN
-> endpoint 762 flow 0x0 identity world->42837 state reply ifindex lxcf4cd39e34601 orig-ip 1.0.0.1: 1.0.0.1:80 -> 10.244.0.213:59242 tcp SYN, ACK
xx drop (NETFILTER_DROP) flow 0x1c2a3b4c to endpoint 0, ifindex 2, identity 42837->world: 10.244.0.213:40000 -> 1.0.0.1:53 udp
<- endpoint 762 flow 0xabc identity 42837->world state new ifindex lxcf4cd39e34601 orig-ip 0.0.0.0: 10.244.0.213 -> 1.0.0.1 EchoRequest
-> stack flow 0x0 identity host->remote-node state established ifindex 0 orig-ip ::: [fd00::10]:34567 -> [fd00::20]:4244 tcp ACK
CPU 00: Lost 42 events (HUBBLE_RING_BUFFER)
"
    );
    assert_eq!(
        err,
        "Nov 26 11:00:00.000 []: 1 nodes are unavailable: node-3\n"
    );
}

/// With the agent's `cilium` observation points, pod-a's SYN is a to-stack flow without an
/// interface, and its SYN-ACK a to-endpoint flow: the lab's two `cilium monitor` lines, byte for
/// byte.
#[test]
fn monitor_prints_the_lab_lines() {
    let mut syn = syn_from_endpoint();
    let (event_type, point) = trace_event(TraceObservationPoint::ToStack, 3);
    syn.event_type = event_type;
    syn.trace_observation_point = point;
    syn.interface = None;
    let (out, _) = render(
        with_format(Format::Monitor),
        &[flow_response(syn), flow_response(synack_to_endpoint())],
    );
    assert_eq!(
        out,
        "\
-> stack flow 0x8958dbda identity 42837->world state new ifindex 0 orig-ip 0.0.0.0: 10.244.0.213:59242 -> 1.0.0.1:80 tcp SYN
-> endpoint 762 flow 0x0 identity world->42837 state reply ifindex lxcf4cd39e34601 orig-ip 1.0.0.1: 1.0.0.1:80 -> 10.244.0.213:59242 tcp SYN, ACK
"
    );
}

#[test]
fn monitor_numeric_identities() {
    let opts = Options {
        format: Format::Monitor,
        numeric: true,
        ..Options::default()
    };
    let (out, _) = render(opts, &[flow_response(synack_to_endpoint())]);
    assert!(out.contains(" identity 2->42837 state reply "), "{out}");
    let opts = Options {
        format: Format::Monitor,
        node_name: true,
        ..Options::default()
    };
    let (out, _) = render(opts, &[flow_response(synack_to_endpoint())]);
    assert!(
        out.starts_with("[node-1] -> endpoint 762 flow 0x0 identity world->42837 "),
        "{out}"
    );
}

#[test]
fn time_formats() {
    let t = Timestamp::new(T0 + 1, 123_400_000);
    let cases = [
        (TimeFormat::StampMilli, "Nov 26 11:00:01.123"),
        (TimeFormat::YearMonthDay, "2025-11-26"),
        (TimeFormat::YearMonthDayHour, "2025-11-26T11Z"),
        (TimeFormat::YearMonthDayHourMinute, "2025-11-26T11:00Z"),
        (TimeFormat::Rfc3339, "2025-11-26T11:00:01Z"),
        (TimeFormat::Rfc3339Milli, "2025-11-26T11:00:01.123Z"),
        (TimeFormat::Rfc3339Micro, "2025-11-26T11:00:01.1234Z"),
        (TimeFormat::Rfc3339Nano, "2025-11-26T11:00:01.1234Z"),
        (TimeFormat::Rfc1123z, "Wed, 26 Nov 2025 11:00:01 +0000"),
    ];
    for (format, want) in cases {
        assert_eq!(format.format(Some(&t)), want, "{format:?}");
    }
    // Single-digit days are space-padded, as Go's `_2`.
    assert_eq!(
        TimeFormat::StampMilli.format(Some(&Timestamp::new(0, 0))),
        "Jan  1 00:00:00.000"
    );
    assert_eq!(
        TimeFormat::Rfc3339Milli.format(Some(&Timestamp::new(T0, 0))),
        "2025-11-26T11:00:00Z"
    );
    assert_eq!(TimeFormat::StampMilli.format(None), "N/A");
    assert_eq!(
        TimeFormat::StampMilli.format(Some(&Timestamp::new(-1, -1))),
        "N/A"
    );
}

#[test]
fn long_node_lists_are_cut() {
    let names: Vec<String> = (1..=20).map(|i| format!("node-{i:02}")).collect();
    let joined = join_with_cut_off(&names, ", ", NODE_NAMES_CUT_OFF);
    assert_eq!(
        joined,
        "node-01, node-02, node-03, node-04, node-05 (and 15 more)"
    );
}

#[test]
fn icmp_type_codes() {
    assert_eq!(icmpv4_type_code(8, 0), "EchoRequest");
    assert_eq!(icmpv4_type_code(3, 3), "DestinationUnreachable(Port)");
    assert_eq!(icmpv4_type_code(3, 99), "DestinationUnreachable(Code: 99)");
    assert_eq!(icmpv4_type_code(0, 1), "EchoReply(Code: 1)");
    assert_eq!(icmpv4_type_code(200, 1), "200(1)");
    assert_eq!(icmpv6_type_code(128, 0), "EchoRequest");
    assert_eq!(
        icmpv6_type_code(1, 4),
        "DestinationUnreachable(PortUnreachable)"
    );
}

#[test]
fn flow_types() {
    let mut flow = Flow::default();
    assert_eq!(flow_type(&flow), "UNKNOWN");
    flow.event_type = Some(CiliumEventType {
        r#type: 4,
        sub_type: 123,
    });
    assert_eq!(flow_type(&flow), "123");
    flow.event_type = Some(CiliumEventType {
        r#type: 5,
        sub_type: 0,
    });
    flow.traffic_direction = flowscope_proto::flow::TrafficDirection::Ingress as i32;
    flow.policy_match_type = 2;
    assert_eq!(flow_type(&flow), "policy-verdict:L3-L4 INGRESS");
    flow.l7 = Some(flowscope_proto::flow::Layer7 {
        r#type: 1,
        record: Some(layer7::Record::Http(Default::default())),
        ..Default::default()
    });
    assert_eq!(flow_type(&flow), "http-request");
}

/// pod-a's SYN to a Service's ClusterIP, and the backend's reply as pod-a sees it
/// (the ClusterIP as source), the connection DNATed to 10.244.0.77:8080.
fn clusterip_flows() -> (Flow, Flow) {
    let dnat = |e: &mut FlowExtension| {
        e.ct_tuple = Some(flowscope_proto::flowscope::v1::Tuple {
            source_ip: "10.244.0.213".into(),
            destination_ip: "10.96.0.10".into(),
            source_port: 59242,
            destination_port: 80,
            icmp_id: 0,
        });
        e.destination_xlated = "10.244.0.77".into();
        e.destination_xlated_port = 8080;
    };
    let web = Some(flowscope_proto::flow::Service {
        name: "web".into(),
        namespace: "default".into(),
    });
    let mut syn = syn_from_endpoint();
    syn.ip = ipv4("10.244.0.213", "10.96.0.10");
    syn.destination_service = web.clone();
    syn.extensions = ext(1, dnat);
    let mut reply = synack_to_endpoint();
    reply.ip = ipv4("10.96.0.10", "10.244.0.213");
    reply.source_service = web;
    reply.extensions = ext(2, dnat);
    (syn, reply)
}

#[test]
fn dnat_backends_in_dict_and_table() {
    let (syn, reply) = clusterip_flows();
    let (out, _) = render(with_format(Format::Dict), &[flow_response(syn.clone())]);
    assert!(
        out.contains("DESTINATION: default/web:80\n  DNAT DEST: 10.244.0.77:8080\n"),
        "{out}"
    );
    let (out, _) = render(
        with_format(Format::Table),
        &[flow_response(syn), flow_response(reply.clone())],
    );
    assert!(
        out.contains("default/web:80 (DNAT 10.244.0.77:8080)"),
        "{out}"
    );
    assert!(
        out.contains("default/web:80 (DNAT 10.244.0.77:8080)   default/pod-a:59242"),
        "{out}"
    );
    // On the backend's side the packet carries the backend: nothing to add.
    let mut at_backend = reply;
    at_backend.ip = ipv4("10.244.0.77", "10.244.0.213");
    at_backend.source_service = None;
    let (out, _) = render(with_format(Format::Dict), &[flow_response(at_backend)]);
    assert!(!out.contains("DNAT"), "{out}");
}

/// A DNS query and an HTTP response as the agent builds them from captured payloads.
#[expect(deprecated, reason = "Hubble's summary")]
fn l7_flows() -> Vec<Flow> {
    use flowscope_proto::flow::{
        Dns, FlowType, Http, L7FlowType, Layer7, TrafficDirection, layer7,
    };
    let base = |src: Endpoint, dst: Endpoint, ip: Option<Ip>, l4: Layer4| Flow {
        time: ts(6, 0),
        verdict: Verdict::Forwarded as i32,
        ip,
        l4: Some(l4),
        source: Some(src),
        destination: Some(dst),
        r#type: FlowType::L7 as i32,
        event_type: Some(CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        traffic_direction: TrafficDirection::Egress as i32,
        ..Default::default()
    };
    let mut query = base(
        pod_a(),
        world(),
        ipv4("10.244.0.213", "1.0.0.1"),
        Layer4::udp(40000, 53),
    );
    query.is_reply = Some(false);
    query.l7 = Some(Layer7 {
        r#type: L7FlowType::Request as i32,
        latency_ns: 0,
        record: Some(layer7::Record::Dns(Dns {
            query: "one.one.one.one.".into(),
            qtypes: vec!["A".into()],
            observation_source: "datapath".into(),
            ..Default::default()
        })),
    });
    query.summary = "DNS Query one.one.one.one. A".into();
    let mut response = base(
        world(),
        pod_a(),
        ipv4("1.0.0.1", "10.244.0.213"),
        Layer4 {
            protocol: Some(flowscope_proto::flow::layer4::Protocol::Tcp(
                flowscope_proto::flow::Tcp {
                    source_port: 80,
                    destination_port: 59242,
                    flags: None,
                },
            )),
        },
    );
    response.is_reply = Some(true);
    response.source_names = vec!["one.one.one.one".into()];
    response.l7 = Some(Layer7 {
        r#type: L7FlowType::Response as i32,
        latency_ns: 2_000_000,
        record: Some(layer7::Record::Http(Http {
            code: 404,
            method: "GET".into(),
            url: "http://one.one.one.one/missing".into(),
            protocol: "HTTP/1.0".into(),
            ..Default::default()
        })),
    });
    response.summary = "HTTP/1.0 404 2ms (GET http://one.one.one.one/missing)".into();
    vec![query, response]
}

#[test]
fn l7_flows_in_compact_and_monitor() {
    let flows: Vec<GetFlowsResponse> = l7_flows().into_iter().map(flow_response).collect();
    let (out, _) = render(with_format(Format::Compact), &flows);
    assert_eq!(
        out,
        "\
Nov 26 11:00:06.000: default/pod-a:40000 (ID:42837) -> 1.0.0.1:53 (world) dns-request datapath FORWARDED (DNS Query one.one.one.one. A)
Nov 26 11:00:06.000: default/pod-a:59242 (ID:42837) <- one.one.one.one:80 (world) http-response FORWARDED (HTTP/1.0 404 2ms (GET http://one.one.one.one/missing))
"
    );
    let (out, _) = render(with_format(Format::Monitor), &flows);
    assert_eq!(
        out,
        "\
-> Request dns from 762 ([k8s:app=pod-a k8s:io.kubernetes.pod.namespace=default]) to 0 ([reserved:world]), identity 42837->2, verdict Forwarded DNS datapath: one.one.one.one. A
-> Response http to 762 ([k8s:app=pod-a k8s:io.kubernetes.pod.namespace=default]) from 0 ([reserved:world]), identity 2->42837, verdict Forwarded GET http://one.one.one.one/missing => 404
"
    );
}
