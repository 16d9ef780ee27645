//! FlowFilterSet behaviour on a handful of realistic flows, table-driven.

use flowscope_filter::{FilterError, FlowFilterSet};
use flowscope_proto::flow::{
    self, CiliumEventType, Dns, DropReason, Endpoint, EventTypeFilter, Flow, FlowFilter, Http,
    HttpHeader, Ip, IpVersion, Layer4, Layer7, NetworkInterface, Service, TcpFlags,
    TrafficDirection, Verdict, Workload, flow_filter::Experimental, layer7::Record,
};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn ep(ns: &str, pod: &str, identity: u32, labels: &[&str]) -> Option<Endpoint> {
    Some(Endpoint {
        namespace: ns.into(),
        pod_name: pod.into(),
        identity,
        labels: s(labels),
        cluster_name: if ns.is_empty() {
            String::new()
        } else {
            "default".into()
        },
        workloads: if pod.is_empty() {
            vec![]
        } else {
            vec![Workload {
                name: pod.trim_end_matches("-a").into(),
                kind: "Deployment".into(),
            }]
        },
        ..Default::default()
    })
}

fn ipv4(src: &str, dst: &str) -> Option<Ip> {
    Some(Ip {
        source: src.into(),
        destination: dst.into(),
        ip_version: IpVersion::IPv4.into(),
        ..Default::default()
    })
}

/// 0: a pod's SYN to the world, seen on the uplink after MASQUERADE.
fn pod_syn() -> Flow {
    let mut ip = ipv4("10.244.0.213", "1.0.0.1");
    if let Some(ip) = ip.as_mut() {
        ip.source_xlated = "192.168.1.10".into();
    }
    Flow {
        uuid: "u-syn".into(),
        verdict: Verdict::Forwarded.into(),
        ip,
        l4: Some(Layer4::tcp(59242, 80, TcpFlags::from_header(0x02, false))),
        source: ep(
            "default",
            "pod-a",
            42837,
            &["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"],
        ),
        destination: ep("", "", 2, &["reserved:world"]),
        node_name: "node-1".into(),
        node_labels: s(&["k8s:kubernetes.io/hostname=node-1"]),
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        traffic_direction: TrafficDirection::Egress.into(),
        is_reply: Some(false),
        interface: Some(NetworkInterface {
            index: 2,
            name: "eth0".into(),
        }),
        destination_names: s(&["one.one.one.one"]),
        ..Default::default()
    }
}

/// 1: the SYN-ACK coming back.
fn reply_syn_ack() -> Flow {
    Flow {
        uuid: "u-synack".into(),
        verdict: Verdict::Forwarded.into(),
        ip: ipv4("1.0.0.1", "10.244.0.213"),
        l4: Some(Layer4::tcp(80, 59242, TcpFlags::from_header(0x12, false))),
        source: ep("", "", 2, &["reserved:world"]),
        destination: ep("default", "pod-a", 42837, &["k8s:app=web"]),
        node_name: "node-1".into(),
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        traffic_direction: TrafficDirection::Ingress.into(),
        is_reply: Some(true),
        interface: Some(NetworkInterface {
            index: 7,
            name: "lxc1234".into(),
        }),
        source_names: s(&["one.one.one.one"]),
        ..Default::default()
    }
}

/// 2: an ICMPv6 packet dropped by policy on another cluster's node; reply unknown.
fn icmp6_drop() -> Flow {
    Flow {
        uuid: "u-drop".into(),
        verdict: Verdict::Dropped.into(),
        drop_reason_desc: DropReason::PolicyDenied.into(),
        ip: Some(Ip {
            source: "fd00::1".into(),
            destination: "fd00:1::2".into(),
            ip_version: IpVersion::IPv6.into(),
            encrypted: true,
            ..Default::default()
        }),
        l4: Some(Layer4::icmpv6(128, 0)),
        source: ep("kube-system", "coredns-abc", 100, &["k8s:k8s-app=kube-dns"]),
        destination: ep("prod", "db-0", 200, &["k8s:app=db", "k8s:tier=backend"]),
        node_name: "mesh-b/node-2".into(),
        event_type: Some(CiliumEventType {
            r#type: 1,
            sub_type: 133,
        }),
        is_reply: None,
        ..Default::default()
    }
}

/// 3: an HTTP response seen by the proxy.
fn http_404() -> Flow {
    Flow {
        uuid: "u-http".into(),
        verdict: Verdict::Forwarded.into(),
        ip: ipv4("10.244.1.5", "10.244.0.213"),
        l4: Some(Layer4::tcp(8080, 40000, TcpFlags::default())),
        l7: Some(Layer7 {
            record: Some(Record::Http(Http {
                code: 404,
                method: "GET".into(),
                url: "http://api.default.svc/api/v1/items?page=2".into(),
                headers: vec![HttpHeader {
                    key: "x-req".into(),
                    value: "1".into(),
                }],
                ..Default::default()
            })),
            ..Default::default()
        }),
        destination_service: Some(Service {
            name: "api".into(),
            namespace: "default".into(),
        }),
        event_type: Some(CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        is_reply: Some(true),
        node_name: "node-1".into(),
        ..Default::default()
    }
}

/// 4: a DNS query over UDP.
fn dns_query() -> Flow {
    Flow {
        uuid: "u-dns".into(),
        verdict: Verdict::Forwarded.into(),
        ip: ipv4("10.244.0.213", "10.96.0.10"),
        l4: Some(Layer4::udp(53000, 53)),
        l7: Some(Layer7 {
            record: Some(Record::Dns(Dns {
                query: "example.com.".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        source: ep("default", "pod-a", 42837, &["k8s:app=web"]),
        destination_service: Some(Service {
            name: "kube-dns".into(),
            namespace: "kube-system".into(),
        }),
        is_reply: Some(false),
        node_name: "node-1".into(),
        ..Default::default()
    }
}

/// 5: nothing at all.
fn empty() -> Flow {
    Flow::default()
}

fn flows() -> Vec<Flow> {
    vec![
        pod_syn(),
        reply_syn_ack(),
        icmp6_drop(),
        http_404(),
        dns_query(),
        empty(),
    ]
}

/// Expected result per flow, in the order of `flows()`.
type Expect = [bool; 6];

fn ff() -> FlowFilter {
    FlowFilter::default()
}

fn check(name: &str, white: &[FlowFilter], black: &[FlowFilter], want: Expect) {
    let set = FlowFilterSet::compile(white, black)
        .unwrap_or_else(|e| panic!("{name}: does not compile: {e}"));
    let got: Vec<bool> = flows().iter().map(|f| set.matches(f)).collect();
    assert_eq!(got, want, "{name}");
}

#[test]
#[rustfmt::skip] // one line per case reads as a table
fn whitelist_and_blacklist_combinations() {
    let tcp = [FlowFilter { protocol: s(&["tcp"]), ..ff() }];
    let node1 = FlowFilter { node_name: s(&["node-1"]), ..ff() };
    let replies = [FlowFilter { reply: vec![true], ..ff() }];
    let tcp_on_node1 = [FlowFilter { protocol: s(&["TCP"]), node_name: s(&["node-1"]), ..ff() }];
    let udp_or_icmpv6 = [FlowFilter { protocol: s(&["udp", "icmpv6"]), ..ff() }];
    let cases: &[(&str, &[FlowFilter], &[FlowFilter], Expect)] = &[
        ("nothing: everything passes", &[], &[], [true; 6]),
        ("an empty filter matches all", &[ff()], &[], [true; 6]),
        ("an empty blacklist filter removes all", &[], &[ff()], [false; 6]),
        ("whitelist", &tcp, &[], [true, true, false, true, false, false]),
        ("whitelist entries are ORed", &[tcp[0].clone(), node1], &[], [true, true, false, true, true, false]),
        ("fields are ANDed", &tcp_on_node1, &[], [true, true, false, true, false, false]),
        ("blacklist only", &[], &tcp, [false, false, true, false, true, true]),
        ("whitelist minus blacklist", &tcp, &replies, [true, false, false, false, false, false]),
        ("blacklist entries are ORed", &[], &[tcp[0].clone(), replies[0].clone()], [false, false, true, false, true, true]),
        ("values inside a field are ORed", &udp_or_icmpv6, &[], [false, false, true, false, true, false]),
    ];
    for (name, white, black, want) in cases {
        check(name, white, black, *want);
    }
}

#[test]
#[rustfmt::skip] // one line per case reads as a table
fn every_field_family() {
    let cases: Vec<(&str, FlowFilter, Expect)> = vec![
        ("uuid", FlowFilter { uuid: s(&["u-drop", "u-dns"]), ..ff() }, [false, false, true, false, true, false]),
        ("source_ip v4", FlowFilter { source_ip: s(&["10.244.0.213"]), ..ff() }, [true, false, false, false, true, false]),
        ("source_ip cidr", FlowFilter { source_ip: s(&["10.244.0.0/16"]), ..ff() }, [true, false, false, true, true, false]),
        ("source_ip v6 cidr", FlowFilter { source_ip: s(&["fd00::/64"]), ..ff() }, [false, false, true, false, false, false]),
        ("destination_ip", FlowFilter { destination_ip: s(&["1.0.0.0/24", "fd00:1::/32"]), ..ff() }, [true, false, true, false, false, false]),
        ("source_ip_xlated", FlowFilter { source_ip_xlated: s(&["192.168.1.0/24"]), ..ff() }, [true, false, false, false, false, false]),
        ("source_pod ns/prefix", FlowFilter { source_pod: s(&["default/pod"]), ..ff() }, [true, false, false, false, true, false]),
        ("source_pod ns/", FlowFilter { source_pod: s(&["kube-system/"]), ..ff() }, [false, false, true, false, false, false]),
        ("source_pod bare = default ns", FlowFilter { source_pod: s(&["coredns"]), ..ff() }, [false; 6]),
        ("source_pod /prefix any ns", FlowFilter { source_pod: s(&["/coredns"]), ..ff() }, [false, false, true, false, false, false]),
        ("destination_pod", FlowFilter { destination_pod: s(&["default/pod-a"]), ..ff() }, [false, true, false, false, false, false]),
        ("destination_service", FlowFilter { destination_service: s(&["kube-system/"]), ..ff() }, [false, false, false, false, true, false]),
        ("source_service (none set)", FlowFilter { source_service: s(&["default/"]), ..ff() }, [false; 6]),
        ("source_label", FlowFilter { source_label: s(&["app=web"]), ..ff() }, [true, false, false, false, true, false]),
        ("source_label reserved", FlowFilter { source_label: s(&["reserved:world"]), ..ff() }, [false, true, false, false, false, false]),
        ("destination_label set", FlowFilter { destination_label: s(&["app in (db, cache), tier=backend"]), ..ff() }, [false, false, true, false, false, false]),
        ("destination_label negation", FlowFilter { destination_label: s(&["!reserved:world"]), ..ff() }, [false, true, true, true, true, true]),
        ("node_labels", FlowFilter { node_labels: s(&["kubernetes.io/hostname=node-1"]), ..ff() }, [true, false, false, false, false, false]),
        ("source_identity", FlowFilter { source_identity: vec![42837, 100], ..ff() }, [true, false, true, false, true, false]),
        ("destination_identity", FlowFilter { destination_identity: vec![2], ..ff() }, [true, false, false, false, false, false]),
        ("identity 0 needs an endpoint", FlowFilter { destination_identity: vec![0], ..ff() }, [false; 6]),
        ("source_port", FlowFilter { source_port: s(&["80", "53000"]), ..ff() }, [false, true, false, false, true, false]),
        ("destination_port", FlowFilter { destination_port: s(&["53"]), ..ff() }, [false, false, false, false, true, false]),
        ("protocol icmp = v4 or v6", FlowFilter { protocol: s(&["ICMP"]), ..ff() }, [false, false, true, false, false, false]),
        ("protocol icmpv4", FlowFilter { protocol: s(&["icmpv4"]), ..ff() }, [false; 6]),
        ("protocol l7", FlowFilter { protocol: s(&["dns", "http"]), ..ff() }, [false, false, false, true, true, false]),
        ("verdict", FlowFilter { verdict: vec![Verdict::Dropped.into()], ..ff() }, [false, false, true, false, false, false]),
        ("drop_reason_desc", FlowFilter { drop_reason_desc: vec![DropReason::PolicyDenied.into()], ..ff() }, [false, false, true, false, false, false]),
        ("traffic_direction", FlowFilter { traffic_direction: vec![TrafficDirection::Egress.into()], ..ff() }, [true, false, false, false, false, false]),
        ("ip_version", FlowFilter { ip_version: vec![IpVersion::IPv6.into()], ..ff() }, [false, false, true, false, false, false]),
        ("event_type any sub type", FlowFilter { event_type: vec![EventTypeFilter { r#type: 1, ..Default::default() }], ..ff() }, [false, false, true, false, false, false]),
        ("event_type sub type", FlowFilter { event_type: vec![EventTypeFilter { r#type: 1, match_sub_type: true, sub_type: 5 }], ..ff() }, [false; 6]),
        ("event_type type 0 = any", FlowFilter { event_type: vec![EventTypeFilter::default()], ..ff() }, [true, true, true, true, false, false]),
        ("tcp_flags SYN", FlowFilter { tcp_flags: vec![TcpFlags::from_header(0x02, false)], ..ff() }, [true, true, false, false, false, false]),
        ("tcp_flags SYN+ACK", FlowFilter { tcp_flags: vec![TcpFlags::from_header(0x12, false)], ..ff() }, [false, true, false, false, false, false]),
        ("tcp_flags FIN or ACK", FlowFilter { tcp_flags: vec![TcpFlags::from_header(0x01, false), TcpFlags::from_header(0x10, false)], ..ff() }, [false, true, false, false, false, false]),
        ("reply true", FlowFilter { reply: vec![true], ..ff() }, [false, true, false, true, false, false]),
        ("reply false (a drop with unknown is_reply counts)", FlowFilter { reply: vec![false], ..ff() }, [true, false, true, false, true, false]),
        ("reply either (unknown non-drop matches neither)", FlowFilter { reply: vec![true, false], ..ff() }, [true, true, true, true, true, false]),
        ("node_name glob", FlowFilter { node_name: s(&["node-*"]), ..ff() }, [true, true, true, true, true, false]),
        ("node_name cluster", FlowFilter { node_name: s(&["mesh-b/"]), ..ff() }, [false, false, true, false, false, false]),
        ("node_name default cluster", FlowFilter { node_name: s(&["default/node-?"]), ..ff() }, [true, true, false, true, true, false]),
        ("interface by name", FlowFilter { interface: vec![NetworkInterface { index: 0, name: "eth0".into() }], ..ff() }, [true, false, false, false, false, false]),
        ("interface by index", FlowFilter { interface: vec![NetworkInterface { index: 7, name: String::new() }], ..ff() }, [false, true, false, false, false, false]),
        ("interface index and name disagree", FlowFilter { interface: vec![NetworkInterface { index: 7, name: "eth0".into() }], ..ff() }, [false; 6]),
        ("source_workload", FlowFilter { source_workload: vec![Workload { name: "pod".into(), kind: String::new() }], ..ff() }, [true, false, false, false, true, false]),
        ("destination_workload kind", FlowFilter { destination_workload: vec![Workload { name: String::new(), kind: "Deployment".into() }], ..ff() }, [false, true, true, false, false, false]),
        ("source_cluster_name", FlowFilter { source_cluster_name: s(&["default"]), ..ff() }, [true, false, true, false, true, false]),
        ("destination_cluster_name", FlowFilter { destination_cluster_name: s(&["other"]), ..ff() }, [false; 6]),
        ("encrypted", FlowFilter { encrypted: vec![true], ..ff() }, [false, false, true, false, false, false]),
        ("not encrypted (no IP counts as false)", FlowFilter { encrypted: vec![false], ..ff() }, [true, true, false, true, true, true]),
        ("source_fqdn", FlowFilter { source_fqdn: s(&["*.one.one"]), ..ff() }, [false, true, false, false, false, false]),
        ("destination_fqdn", FlowFilter { destination_fqdn: s(&["one.one.one.one"]), ..ff() }, [true, false, false, false, false, false]),
        ("http_status_code", FlowFilter { http_status_code: s(&["4+"]), ..ff() }, [false, false, false, true, false, false]),
        ("http_method", FlowFilter { http_method: s(&["get"]), ..ff() }, [false, false, false, true, false, false]),
        ("http_path", FlowFilter { http_path: s(&["^/api/v[0-9]+/items$"]), ..ff() }, [false, false, false, true, false, false]),
        ("http_url", FlowFilter { http_url: s(&["page=2"]), ..ff() }, [false, false, false, true, false, false]),
        ("http_header", FlowFilter { http_header: vec![HttpHeader { key: "x-req".into(), value: "1".into() }], ..ff() }, [false, false, false, true, false, false]),
        ("http with l7 event type", FlowFilter { http_method: s(&["GET"]), event_type: vec![EventTypeFilter { r#type: 129, ..Default::default() }], ..ff() }, [false, false, false, true, false, false]),
        ("dns_query", FlowFilter { dns_query: s(&[r"^example\.com\.$"]), ..ff() }, [false, false, false, false, true, false]),
        ("trace_id", FlowFilter { trace_id: s(&["abc"]), ..ff() }, [false; 6]),
    ];
    for (name, filter, want) in cases {
        check(name, &[filter], &[], want);
    }
}

#[test]
#[rustfmt::skip] // one line per case reads as a table
fn invalid_values_name_their_field() {
    let http_needs_l7 = FlowFilter { http_method: s(&["GET"]), event_type: vec![EventTypeFilter { r#type: 4, ..Default::default() }], ..ff() };
    let cases: Vec<(FlowFilter, &str, &str)> = vec![
        (FlowFilter { source_ip: s(&["10.0.0.300"]), ..ff() }, "source_ip", "10.0.0.300"),
        (FlowFilter { destination_ip: s(&["10.0.0.0/40"]), ..ff() }, "destination_ip", "10.0.0.0/40"),
        (FlowFilter { source_ip_xlated: s(&["nope"]), ..ff() }, "source_ip_xlated", "nope"),
        (FlowFilter { source_pod: s(&[""]), ..ff() }, "source_pod", ""),
        (FlowFilter { destination_pod: s(&["a/b/c"]), ..ff() }, "destination_pod", "a/b/c"),
        (FlowFilter { source_service: s(&["/"]), ..ff() }, "source_service", "/"),
        (FlowFilter { destination_service: s(&[""]), ..ff() }, "destination_service", ""),
        (FlowFilter { source_label: s(&["()"]), ..ff() }, "source_label", "()"),
        (FlowFilter { destination_label: s(&["="]), ..ff() }, "destination_label", "="),
        (FlowFilter { node_labels: s(&["a in (b"]), ..ff() }, "node_labels", "a in (b"),
        (FlowFilter { source_port: s(&["65536"]), ..ff() }, "source_port", "65536"),
        (FlowFilter { destination_port: s(&["http"]), ..ff() }, "destination_port", "http"),
        (FlowFilter { protocol: s(&["quic"]), ..ff() }, "protocol", "quic"),
        (FlowFilter { node_name: s(&["a/b/c"]), ..ff() }, "node_name", "a/b/c"),
        (FlowFilter { source_fqdn: s(&["bad name"]), ..ff() }, "source_fqdn", "bad name"),
        (FlowFilter { destination_fqdn: s(&[""]), ..ff() }, "destination_fqdn", ""),
        (FlowFilter { source_cluster_name: s(&[""]), ..ff() }, "source_cluster_name", ""),
        (FlowFilter { destination_cluster_name: s(&["ok", ""]), ..ff() }, "destination_cluster_name", ""),
        (FlowFilter { http_status_code: s(&["999"]), ..ff() }, "http_status_code", "999"),
        (FlowFilter { http_path: s(&["("]), ..ff() }, "http_path", "("),
        (FlowFilter { http_url: s(&["[z-a]"]), ..ff() }, "http_url", "[z-a]"),
        (FlowFilter { dns_query: s(&["*"]), ..ff() }, "dns_query", "*"),
        (http_needs_l7, "http_method", "GET"),
    ];
    for (filter, field, value) in cases {
        // In the whitelist and in the blacklist alike.
        for err in [
            FlowFilterSet::compile(std::slice::from_ref(&filter), &[]).unwrap_err(),
            FlowFilterSet::compile(&[], std::slice::from_ref(&filter)).unwrap_err(),
        ] {
            assert_eq!(err.field(), field, "{err}");
            let FilterError::Invalid { value: got, .. } = &err else {
                panic!("{field}: expected Invalid, got {err:?}");
            };
            assert_eq!(got, value);
            let text = err.to_string();
            assert!(text.starts_with(&format!("invalid {field} {value:?}: ")), "{text}");
        }
    }
    let cel = FlowFilter { experimental: Some(Experimental { cel_expression: s(&["true"]) }), ..ff() };
    let err = FlowFilterSet::compile(&[cel], &[]).unwrap_err();
    assert_eq!(err, FilterError::Unsupported { field: "experimental.cel_expression" });
    assert_eq!(err.to_string(), "unsupported filter field experimental.cel_expression");
}

/// Every kind of filter against flows missing the sub-messages it looks at.
#[test]
fn missing_sub_messages_never_panic() {
    let all_fields = FlowFilter {
        uuid: s(&["x"]),
        source_ip: s(&["10.0.0.0/8"]),
        source_ip_xlated: s(&["10.0.0.1"]),
        source_pod: s(&["default/"]),
        source_fqdn: s(&["*"]),
        source_label: s(&["app"]),
        source_service: s(&["default/"]),
        source_workload: vec![Workload::default()],
        source_cluster_name: s(&["c"]),
        destination_ip: s(&["::/0"]),
        destination_pod: s(&["/p"]),
        destination_fqdn: s(&["*.x"]),
        destination_label: s(&["!app"]),
        destination_service: s(&["s"]),
        destination_workload: vec![Workload::default()],
        destination_cluster_name: s(&["c"]),
        traffic_direction: vec![0],
        verdict: vec![0],
        drop_reason_desc: vec![0],
        interface: vec![NetworkInterface::default()],
        event_type: vec![EventTypeFilter {
            r#type: 129,
            ..Default::default()
        }],
        http_status_code: s(&["2+"]),
        protocol: s(&["tcp", "dns"]),
        source_port: s(&["1"]),
        destination_port: s(&["2"]),
        reply: vec![true, false],
        dns_query: s(&[".*"]),
        source_identity: vec![0],
        destination_identity: vec![0],
        http_method: s(&["GET"]),
        http_path: s(&["/"]),
        http_url: s(&["."]),
        http_header: vec![HttpHeader::default()],
        tcp_flags: vec![TcpFlags::default()],
        node_name: s(&["*"]),
        node_labels: s(&["a"]),
        ip_version: vec![0],
        trace_id: s(&["t"]),
        ip_trace_id: vec![1],
        encrypted: vec![false],
        experimental: None,
    };
    let weird = [
        Flow::default(),
        Flow {
            l4: Some(Layer4 { protocol: None }),
            ..Default::default()
        },
        Flow {
            l7: Some(Layer7::default()),
            ..Default::default()
        },
        Flow {
            ip: Some(Ip::default()),
            ..Default::default()
        },
        Flow {
            source: Some(Endpoint::default()),
            destination: Some(Endpoint::default()),
            ..Default::default()
        },
        Flow {
            trace_context: Some(flow::TraceContext { parent: None }),
            event_type: Some(CiliumEventType::default()),
            interface: Some(NetworkInterface::default()),
            l4: Some(Layer4::tcp(1, 2, TcpFlags::default())),
            ..Default::default()
        },
        Flow {
            l4: Some(Layer4 {
                protocol: Some(flow::layer4::Protocol::Tcp(flow::Tcp {
                    flags: None,
                    ..Default::default()
                })),
            }),
            ip: Some(Ip {
                source: "not an ip".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    // The whole filter, and each field alone (one field set per filter).
    let set = FlowFilterSet::compile(
        std::slice::from_ref(&all_fields),
        std::slice::from_ref(&all_fields),
    )
    .unwrap();
    for f in &weird {
        assert!(!set.matches(f));
    }
    let json = flowscope_proto::json::to_json(&all_fields).unwrap();
    let object: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in object.as_object().unwrap().keys() {
        let mut one = serde_json::Map::new();
        one.insert(key.clone(), object[key].clone());
        if key.starts_with("http_") {
            one.insert("event_type".into(), object["event_type"].clone());
        }
        let single: FlowFilter = serde_json::from_value(serde_json::Value::Object(one)).unwrap();
        let one = std::slice::from_ref(&single);
        let set = FlowFilterSet::compile(one, one).unwrap();
        for f in &weird {
            let _ = set.matches(f);
        }
    }
}
