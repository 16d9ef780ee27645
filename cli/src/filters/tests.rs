//! Filter flags → FlowFilters, checked against what Hubble's `observe`
//! builds for the same flags (cilium `flows_filter_test.go`), through the
//! real clap definition.

use clap::CommandFactory as _;
use flowscope_proto::flow::{
    EventTypeFilter, FlowFilter, NetworkInterface, TcpFlags, Verdict, Workload,
};

use super::*;
use crate::Cli;
use flowscope_proto::names::TRACE_POINTS;

/// Parses `flowctl observe ARGS…` and builds the lists.
fn lists(args: &[&str]) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), String> {
    let argv = ["flowctl", "observe"].iter().chain(args);
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| e.to_string())?;
    let (_, sub) = matches.subcommand().expect("observe");
    from_matches(sub).map_err(|e| e.to_string())
}

fn whitelist(args: &[&str]) -> Vec<FlowFilter> {
    let (white, black) = lists(args).unwrap();
    assert!(black.is_empty(), "unexpected blacklist {black:?}");
    white
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

#[test]
fn no_flags_no_filters() {
    assert_eq!(lists(&[]).unwrap(), (vec![], vec![]));
}

#[test]
fn ip_is_either_end() {
    assert_eq!(
        whitelist(&["--ip", "1.0.0.1", "--ip", "10.244.0.0/24"]),
        vec![
            FlowFilter {
                source_ip: strings(&["1.0.0.1", "10.244.0.0/24"]),
                ..Default::default()
            },
            FlowFilter {
                destination_ip: strings(&["1.0.0.1", "10.244.0.0/24"]),
                ..Default::default()
            },
        ]
    );
}

#[test]
fn from_and_to_go_into_one_filter() {
    assert_eq!(
        whitelist(&[
            "--from-ip",
            "10.244.0.213",
            "--to-ip",
            "1.0.0.1",
            "--to-port",
            "80"
        ]),
        vec![FlowFilter {
            source_ip: strings(&["10.244.0.213"]),
            destination_ip: strings(&["1.0.0.1"]),
            destination_port: strings(&["80"]),
            ..Default::default()
        }]
    );
}

#[test]
fn directionless_flags_and_together_per_side() {
    // Hubble: --ip X --port 80 is (src X and src port 80) or (dst X and dst port 80).
    assert_eq!(
        whitelist(&["--ip", "1.0.0.1", "--port", "80", "--verdict", "forwarded"]),
        vec![
            FlowFilter {
                source_ip: strings(&["1.0.0.1"]),
                source_port: strings(&["80"]),
                verdict: vec![Verdict::Forwarded as i32],
                ..Default::default()
            },
            FlowFilter {
                destination_ip: strings(&["1.0.0.1"]),
                destination_port: strings(&["80"]),
                verdict: vec![Verdict::Forwarded as i32],
                ..Default::default()
            },
        ]
    );
}

#[test]
fn not_negates_only_the_next_flag() {
    // Hubble's TestFilterDispatch.
    let (white, black) = lists(&[
        "--from-ip",
        "1.2.3.4",
        "--from-ip",
        "5.6.7.8",
        "--not",
        "--to-ip",
        "5.5.5.5",
        "--verdict",
        "DROPPED",
        "-t",
        "l7",
    ])
    .unwrap();
    assert_eq!(
        white,
        vec![FlowFilter {
            source_ip: strings(&["1.2.3.4", "5.6.7.8"]),
            verdict: vec![Verdict::Dropped as i32],
            event_type: vec![EventTypeFilter {
                r#type: 129,
                ..Default::default()
            }],
            ..Default::default()
        }]
    );
    assert_eq!(
        black,
        vec![FlowFilter {
            destination_ip: strings(&["5.5.5.5"]),
            ..Default::default()
        }]
    );
}

#[test]
fn several_nots_build_one_blacklist() {
    // Hubble's TestFilterLeftRight: the negated flags AND together.
    let (white, black) = lists(&[
        "--ip",
        "1.2.3.4",
        "--not",
        "--pod",
        "deathstar",
        "--not",
        "--port",
        "53",
        "--node-name",
        "k8s*",
    ])
    .unwrap();
    assert_eq!(
        white,
        vec![
            FlowFilter {
                source_ip: strings(&["1.2.3.4"]),
                node_name: strings(&["k8s*"]),
                ..Default::default()
            },
            FlowFilter {
                destination_ip: strings(&["1.2.3.4"]),
                node_name: strings(&["k8s*"]),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        black,
        vec![
            FlowFilter {
                source_pod: strings(&["deathstar"]),
                source_port: strings(&["53"]),
                ..Default::default()
            },
            FlowFilter {
                destination_pod: strings(&["deathstar"]),
                destination_port: strings(&["53"]),
                ..Default::default()
            },
        ]
    );
}

#[test]
fn not_mistakes_are_usage_errors() {
    assert_eq!(
        lists(&["--not", "--not", "--ip", "1.1.1.1"]).unwrap_err(),
        "consecutive --not statements"
    );
    assert_eq!(
        lists(&["--ip", "1.1.1.1", "--not"]).unwrap_err(),
        "trailing --not found in the arguments"
    );
}

#[test]
fn event_types() {
    assert_eq!(
        whitelist(&[
            "-t",
            "trace:to-network",
            "-t",
            "drop",
            "--type",
            "4:0",
            "-t",
            "trace:from-endpoint"
        ]),
        vec![FlowFilter {
            event_type: vec![
                EventTypeFilter {
                    r#type: 4,
                    match_sub_type: true,
                    sub_type: 11,
                },
                EventTypeFilter {
                    r#type: 1,
                    ..Default::default()
                },
                EventTypeFilter {
                    r#type: 4,
                    match_sub_type: true,
                    sub_type: 0,
                },
                EventTypeFilter {
                    r#type: 4,
                    match_sub_type: true,
                    sub_type: 5,
                },
            ],
            ..Default::default()
        }]
    );
    let all_points: Vec<i32> = TRACE_POINTS
        .iter()
        .map(|name| parse_event_type(&format!("trace:{name}")).unwrap().sub_type)
        .collect();
    assert_eq!(all_points, (0..14).collect::<Vec<_>>());
}

#[test]
fn identities_by_name_or_number() {
    assert_eq!(
        whitelist(&["--identity", "world", "--identity", "42837"]),
        vec![
            FlowFilter {
                source_identity: vec![2, 42837],
                ..Default::default()
            },
            FlowFilter {
                destination_identity: vec![2, 42837],
                ..Default::default()
            },
        ]
    );
    let names = [
        ("host", 1),
        ("world", 2),
        ("unmanaged", 3),
        ("health", 4),
        ("init", 5),
        ("remote-node", 6),
        ("kube-apiserver", 7),
        ("ingress", 8),
        ("world-ipv4", 9),
        ("world-ipv6", 10),
    ];
    for (name, id) in names {
        assert_eq!(parse_identity(name), Ok(id), "{name}");
    }
    assert_eq!(
        whitelist(&["--from-identity", "host", "--to-identity", "remote-node"]),
        vec![FlowFilter {
            source_identity: vec![1],
            destination_identity: vec![6],
            ..Default::default()
        }]
    );
}

#[test]
fn namespaces_apply_to_pods() {
    // Hubble's TestNamespace cases.
    assert_eq!(
        whitelist(&["--namespace", "cilium", "--port", "443"]),
        vec![
            FlowFilter {
                source_pod: strings(&["cilium/"]),
                source_port: strings(&["443"]),
                ..Default::default()
            },
            FlowFilter {
                destination_pod: strings(&["cilium/"]),
                destination_port: strings(&["443"]),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        whitelist(&["-n", "cilium", "--pod", "foo-9c76d6c95-tf788"]),
        vec![
            FlowFilter {
                source_pod: strings(&["cilium/foo-9c76d6c95-tf788"]),
                ..Default::default()
            },
            FlowFilter {
                destination_pod: strings(&["cilium/foo-9c76d6c95-tf788"]),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        whitelist(&["--from-namespace", "kube-system", "--to-pod", "cilium/foo"]),
        vec![FlowFilter {
            source_pod: strings(&["kube-system/"]),
            destination_pod: strings(&["cilium/foo"]),
            ..Default::default()
        }]
    );
    assert_eq!(
        whitelist(&["--to-namespace", "cilium"]),
        vec![FlowFilter {
            destination_pod: strings(&["cilium/"]),
            ..Default::default()
        }]
    );
    assert_eq!(
        lists(&["--to-namespace", "kube-system", "--to-pod", "cilium/foo"]).unwrap_err(),
        r#"namespace conflict: "kube-system" does not contain "cilium/foo""#
    );
}

#[test]
fn all_namespaces() {
    // With a pod: that pod name in any namespace, as Hubble.
    assert_eq!(
        whitelist(&["-A", "--pod", "foo"]),
        vec![
            FlowFilter {
                source_pod: strings(&["/foo"]),
                ..Default::default()
            },
            FlowFilter {
                destination_pod: strings(&["/foo"]),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        whitelist(&["--to-all-namespaces", "--to-pod", "foo"]),
        vec![FlowFilter {
            destination_pod: strings(&["/foo"]),
            ..Default::default()
        }]
    );
    // Alone it restricts nothing (Hubble would send the invalid pod "/").
    assert_eq!(whitelist(&["-A"]), vec![]);
    assert_eq!(
        whitelist(&["-A", "--port", "443"]),
        vec![
            FlowFilter {
                source_port: strings(&["443"]),
                ..Default::default()
            },
            FlowFilter {
                destination_port: strings(&["443"]),
                ..Default::default()
            },
        ]
    );
}

#[test]
fn conflicts_as_hubble() {
    let pairs = [
        ("--ip", "--from-ip"),
        ("--ip", "--to-ip"),
        ("--port", "--to-port"),
        ("--port", "--from-port"),
        ("--identity", "--to-identity"),
        ("--label", "--from-label"),
        ("--pod", "--from-pod"),
        ("--pod", "--to-pod"),
        ("--namespace", "--from-namespace"),
        ("--ip", "--pod"),
        ("--ip", "--namespace"),
        ("--to-ip", "--to-namespace"),
        ("--from-pod", "--namespace"),
    ];
    for (a, b) in pairs {
        let value = |flag: &str| {
            if flag.contains("ip") {
                "1.1.1.1"
            } else if flag.contains("port") {
                "80"
            } else if flag.contains("identity") {
                "world"
            } else {
                "foo"
            }
        };
        let err = lists(&[a, value(a), b, value(b)]).unwrap_err();
        assert!(err.contains("cannot be combined"), "{a} {b}: {err}");
    }
    assert_eq!(
        lists(&["--ip", "1.1.1.1", "--from-ip", "2.2.2.2"]).unwrap_err(),
        "filters --from-ip and --ip cannot be combined"
    );
    // In different lists they do not conflict.
    assert!(lists(&["--ip", "1.1.1.1", "--not", "--from-ip", "2.2.2.2"]).is_ok());
}

#[test]
fn other_flags_map_to_their_fields() {
    assert_eq!(
        whitelist(&[
            "--protocol",
            "TCP",
            "--tcp-flags",
            "syn,ack",
            "--traffic-direction",
            "Egress",
            "--interface",
            "eth0",
            "--ip-version",
            "v6",
            "--snat-ip",
            "198.51.100.10",
            "--drop-reason-desc",
            "policy_denied",
            "-l",
            "k8s:app=web",
        ]),
        vec![
            FlowFilter {
                protocol: strings(&["tcp"]),
                tcp_flags: vec![TcpFlags {
                    syn: true,
                    ack: true,
                    ..Default::default()
                }],
                traffic_direction: vec![2],
                interface: vec![NetworkInterface {
                    index: 0,
                    name: "eth0".into(),
                }],
                ip_version: vec![2],
                source_ip_xlated: strings(&["198.51.100.10"]),
                drop_reason_desc: vec![133],
                source_label: strings(&["k8s:app=web"]),
                ..Default::default()
            },
            FlowFilter {
                protocol: strings(&["tcp"]),
                tcp_flags: vec![TcpFlags {
                    syn: true,
                    ack: true,
                    ..Default::default()
                }],
                traffic_direction: vec![2],
                interface: vec![NetworkInterface {
                    index: 0,
                    name: "eth0".into(),
                }],
                ip_version: vec![2],
                source_ip_xlated: strings(&["198.51.100.10"]),
                drop_reason_desc: vec![133],
                destination_label: strings(&["k8s:app=web"]),
                ..Default::default()
            },
        ]
    );
}

#[test]
fn invalid_values_say_what_is_expected() {
    let cases: &[(&[&str], &str)] = &[
        (&["--ip", "10.0.0.300"], "expected an IP address or a CIDR"),
        (
            &["--from-ip", "10.0.0.0/33"],
            "expected an IP address or a CIDR",
        ),
        (
            &["--port", "http"],
            "expected a port number between 0 and 65535",
        ),
        (
            &["--to-port", "65536"],
            "expected a port number between 0 and 65535",
        ),
        (
            &["--identity", "wrld"],
            "expected a numeric identity or one of host, world",
        ),
        (&["--protocol", "quic"], "expected one of tcp, udp"),
        (
            &["--tcp-flags", "syn,"],
            "expected a comma-separated list of SYN, ACK",
        ),
        (&["--verdict", "LOST"], "expected one of FORWARDED, DROPPED"),
        (
            &["-t", "tracee"],
            "expected TYPE[:SUBTYPE] with TYPE one of drop, debug",
        ),
        (
            &["-t", "trace:to-moon"],
            "for trace one of to-endpoint, to-proxy",
        ),
        (&["--traffic-direction", "up"], "expected ingress or egress"),
        (&["--ip-version", "5"], "expected v4, v6 or none"),
        (
            &["--drop-reason-desc", "bad"],
            "expected a Hubble drop reason name",
        ),
    ];
    for (args, expected) in cases {
        let err = lists(args).unwrap_err();
        assert!(err.contains(expected), "{args:?}: {err}");
        // clap names the flag and the value.
        assert!(err.contains(args[1]), "{args:?}: {err}");
    }
}

#[test]
fn raw_filters() {
    let filters = parse_raw_filters(
        "allowlist",
        &[
            r#"{"source_ip":["10.0.0.1"],"verdict":["DROPPED"]} {"destination_port":["53"]}"#
                .into(),
        ],
    )
    .unwrap();
    assert_eq!(
        filters,
        vec![
            FlowFilter {
                source_ip: strings(&["10.0.0.1"]),
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            },
            FlowFilter {
                destination_port: strings(&["53"]),
                ..Default::default()
            },
        ]
    );
    let err = parse_raw_filters("denylist", &["{not json".into()])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid --denylist"), "{err}");
    assert!(err.contains("expected a JSON FlowFilter"), "{err}");
}

#[test]
fn uuid_node_label_workload_and_cluster_as_hubble() {
    // Flags without direction on both sides collapse into one filter.
    assert_eq!(
        whitelist(&["--uuid", "u-1", "--uuid", "u-2"]),
        vec![FlowFilter {
            uuid: strings(&["u-1", "u-2"]),
            ..Default::default()
        }]
    );
    assert_eq!(
        whitelist(&["--node-label", "kubernetes.io/os=linux"]),
        vec![FlowFilter {
            node_labels: strings(&["kubernetes.io/os=linux"]),
            ..Default::default()
        }]
    );
    // Hubble's TestCluster: --cluster is either end's cluster.
    assert_eq!(
        whitelist(&["--cluster", "foo", "--cluster", "bar"]),
        vec![
            FlowFilter {
                source_cluster_name: strings(&["foo", "bar"]),
                ..Default::default()
            },
            FlowFilter {
                destination_cluster_name: strings(&["foo", "bar"]),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        whitelist(&["--from-cluster", "foo", "--to-cluster", "bar"]),
        vec![FlowFilter {
            source_cluster_name: strings(&["foo"]),
            destination_cluster_name: strings(&["bar"]),
            ..Default::default()
        }]
    );
    // Workloads are [KIND/]NAME.
    let workload = |kind: &str, name: &str| Workload {
        name: name.into(),
        kind: kind.into(),
    };
    assert_eq!(
        whitelist(&["--workload", "Deployment/web"]),
        vec![
            FlowFilter {
                source_workload: vec![workload("Deployment", "web")],
                ..Default::default()
            },
            FlowFilter {
                destination_workload: vec![workload("Deployment", "web")],
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        whitelist(&["--from-workload", "web", "--to-workload", "DaemonSet/"]),
        vec![FlowFilter {
            source_workload: vec![workload("", "web")],
            destination_workload: vec![workload("DaemonSet", "")],
            ..Default::default()
        }]
    );
    // Hubble's conflicts, and its refusal of an empty cluster name.
    assert_eq!(
        lists(&["--workload", "a", "--to-workload", "b"]).unwrap_err(),
        "filters --workload and --to-workload cannot be combined"
    );
    let err = lists(&["--cluster", ""]).unwrap_err();
    assert!(err.contains("expected a cluster name"), "{err}");
    // --not works on them like on any filter flag.
    let (white, black) = lists(&["--not", "--uuid", "u-1"]).unwrap();
    assert!(white.is_empty());
    assert_eq!(black[0].uuid, strings(&["u-1"]));
}

#[test]
fn service_flags_as_hubble() {
    // Hubble's `service`, `from-service`, `to-service` cases of flows_filter.go.
    assert_eq!(
        whitelist(&["--service", "kube-system/kube-dns"]),
        vec![
            FlowFilter {
                source_service: strings(&["kube-system/kube-dns"]),
                ..Default::default()
            },
            FlowFilter {
                destination_service: strings(&["kube-system/kube-dns"]),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        whitelist(&["--from-service", "web", "--to-service", "default/db"]),
        vec![FlowFilter {
            source_service: strings(&["web"]),
            destination_service: strings(&["default/db"]),
            ..Default::default()
        }]
    );
    // Namespaces apply to services as to pods; without a pod, no `ns/` pod filter is added.
    assert_eq!(
        whitelist(&["--to-namespace", "default", "--to-service", "web"]),
        vec![FlowFilter {
            destination_service: strings(&["default/web"]),
            ..Default::default()
        }]
    );
    assert_eq!(
        lists(&[
            "--to-namespace",
            "kube-system",
            "--to-service",
            "default/web"
        ])
        .unwrap_err(),
        r#"namespace conflict: "kube-system" does not contain "default/web""#
    );
    assert!(
        lists(&["--service", "web", "--to-service", "db"])
            .unwrap_err()
            .contains("cannot be combined")
    );
    assert!(
        lists(&["-n", "default", "--from-service", "web"])
            .unwrap_err()
            .contains("cannot be combined")
    );
    // --not sends the service filter to the blacklist.
    let (white, black) = lists(&["--not", "--to-service", "default/web"]).unwrap();
    assert!(white.is_empty());
    assert_eq!(
        black,
        vec![FlowFilter {
            destination_service: strings(&["default/web"]),
            ..Default::default()
        }]
    );
}

#[test]
fn fqdn_is_either_end_and_http_fields_go_into_both() {
    assert_eq!(
        whitelist(&["--fqdn", "one.one.one.one", "--http-status", "4+"]),
        vec![
            FlowFilter {
                source_fqdn: strings(&["one.one.one.one"]),
                http_status_code: strings(&["4+"]),
                ..Default::default()
            },
            FlowFilter {
                destination_fqdn: strings(&["one.one.one.one"]),
                http_status_code: strings(&["4+"]),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        whitelist(&[
            "--to-fqdn",
            "*.example.com",
            "--http-method",
            "GET",
            "--http-path",
            "^/api",
            "--http-url",
            "example",
            "--protocol",
            "http",
            "-t",
            "l7",
        ]),
        vec![FlowFilter {
            destination_fqdn: strings(&["*.example.com"]),
            http_method: strings(&["GET"]),
            http_path: strings(&["^/api"]),
            http_url: strings(&["example"]),
            protocol: strings(&["http"]),
            event_type: vec![EventTypeFilter {
                r#type: 129,
                ..Default::default()
            }],
            ..Default::default()
        }]
    );
    assert!(lists(&["--http-status", "4040"]).is_err());
    assert!(lists(&["--http-status", "abc"]).is_err());
    assert!(
        lists(&["--fqdn", "a", "--to-fqdn", "b"])
            .unwrap_err()
            .contains("cannot be combined")
    );
}

/// The web view parses the words of its filter box with `flowscope_filter::flags::parse_args`:
/// it must build the lists flowctl builds from the same flags.
#[test]
fn words_build_what_the_flags_build() {
    let cases: &[&[&str]] = &[
        &["--ip", "1.0.0.1"],
        &["--pod", "default/pod-a", "--not", "--port", "53"],
        &["-n", "default", "--verdict", "DROPPED"],
        &[
            "--from-ip",
            "10.0.0.0/8",
            "--to-port",
            "80",
            "--protocol",
            "TCP",
        ],
        &["-A", "--pod", "web"],
        &["-t", "trace:to-network", "--tcp-flags", "SYN,ACK"],
        &["--label", "app=web", "--not", "--identity", "world"],
        &[
            "--to-namespace",
            "default",
            "--from-all-namespaces",
            "--workload",
            "Deployment/web",
        ],
        &["--to-service", "default/web", "--http-status", "4+"],
        &["--fqdn", "one.one.one.one", "--protocol", "dns"],
    ];
    for args in cases {
        assert_eq!(parse_args(args).unwrap(), lists(args).unwrap(), "{args:?}");
    }
}
