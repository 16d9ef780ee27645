//! Services without Kubernetes: a "ClusterIP" that a DNAT rule in the node (standing in for
//! kube-proxy's iptables rules) sends to a backend pod, named by the endpoints file's
//! `services` section. Traffic from pod-a to the ClusterIP: the flows carry Hubble's
//! `destination_service` / `source_service` where the packet carries the ClusterIP, and the
//! backend's side of the translation is joined to the client's through the kernel's conntrack.
//! Privileged; run serially.

use std::time::{Duration, Instant};

use flowscope_proto::flow::{Flow, TraceObservationPoint};
use testbed::observe::{addr, ext, flowctl, flows, hubble_protojson_check, point};
use testbed::{
    Scenario, require_root,
    scenario::{ENDPOINTS_YAML, POD_A_IP, POD_B_IP},
    traffic,
};

/// The Service's ClusterIP and port, and the backend's port on pod-b.
const CLUSTER_IP: &str = "10.96.0.10";
const SERVICE_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;

/// The scenario's endpoints file, with the Service.
fn endpoints_yaml() -> String {
    format!(
        "{ENDPOINTS_YAML}\
services:
  - namespace: default
    name: web
    ips: [{CLUSTER_IP}]
    ports:
      - {{port: {SERVICE_PORT}, target_port: {BACKEND_PORT}, protocol: TCP}}
    backends: [{POD_B_IP}]
"
    )
}

fn service_name(s: &Option<flowscope_proto::flow::Service>) -> Option<String> {
    s.as_ref().map(|s| format!("{}/{}", s.namespace, s.name))
}

/// One connection through a DNAT'ed ClusterIP: every observation point, the service where
/// Hubble puts it, the backend joined on both sides, JSON that Hubble's tooling reads, the
/// `--to-service` filter and the compact line.
#[test]
fn clusterip_flows_name_the_service_and_join_the_backend() {
    if !require_root("clusterip_flows_name_the_service_and_join_the_backend") {
        return;
    }
    let s = Scenario::build();
    // kube-proxy's rule, in miniature: connections to the ClusterIP go to pod-b's port 8080.
    s.iptables(&[
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-d",
        &format!("{CLUSTER_IP}/32"),
        "-p",
        "tcp",
        "--dport",
        &SERVICE_PORT.to_string(),
        "-j",
        "DNAT",
        "--to-destination",
        &format!("{POD_B_IP}:{BACKEND_PORT}"),
    ]);
    let _backend =
        traffic::http_server(&s.pod_b(), addr(POD_B_IP, BACKEND_PORT), "hello from web\n");
    let file = s.dir().join("services.yaml");
    std::fs::write(&file, endpoints_yaml()).expect("endpoints file");
    let _agent = s.start_agent(&["--endpoints-file", file.to_str().expect("utf-8")]);

    let get = traffic::http_get(&s.pod_a(), addr(CLUSTER_IP, SERVICE_PORT)).expect("GET");
    assert!(
        String::from_utf8_lossy(&get.received).contains("hello from web"),
        "the DNAT rule did not reach the backend"
    );
    let port = get.local_port;

    // The connection's flows: every hop carries its original tuple (pod-a -> ClusterIP), on
    // both sides of the translation.
    let conn_of = |all: &[Flow]| -> Vec<Flow> {
        all.iter()
            .filter(|f| {
                ext(f).ct_tuple.is_some_and(|t| {
                    t.source_port == port as u32
                        && t.destination_ip == CLUSTER_IP
                        && t.destination_port == SERVICE_PORT as u32
                })
            })
            .cloned()
            .collect()
    };
    let wanted = [
        // pod-a's side: its veth, where packets carry the ClusterIP.
        (TraceObservationPoint::FromEndpoint, POD_A_IP),
        (TraceObservationPoint::ToEndpoint, POD_A_IP),
        // pod-b's side: its veth, where they carry the backend.
        (TraceObservationPoint::ToEndpoint, POD_B_IP),
        (TraceObservationPoint::FromEndpoint, POD_B_IP),
    ];
    let at = |f: &Flow, p: TraceObservationPoint, pod_ip: &str| {
        let ip = f.ip.as_ref().unwrap();
        point(f) == p
            && match p {
                TraceObservationPoint::FromEndpoint => ip.source == pod_ip,
                _ => ip.destination == pod_ip,
            }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let conn = loop {
        let all = flows(&flowctl(
            &s,
            &[
                "observe",
                "--last",
                "1000",
                "-o",
                "json",
                "--print-extensions",
            ],
        ));
        let conn = conn_of(&all);
        let seen = wanted
            .iter()
            .all(|(p, ip)| conn.iter().any(|f| at(f, *p, ip)));
        if seen || Instant::now() >= deadline {
            break conn;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (p, ip) in wanted {
        assert!(
            conn.iter().any(|f| at(f, p, ip)),
            "no {p:?} flow at {ip} joined to pod-a:{port} -> {CLUSTER_IP}:{SERVICE_PORT}: {conn:#?}"
        );
    }
    let backend = format!("{POD_B_IP}:{BACKEND_PORT}");
    for f in &conn {
        let ip = f.ip.as_ref().unwrap();
        let e = ext(f);
        // Every hop knows where the kernel sent the connection.
        assert_eq!(
            format!("{}:{}", e.destination_xlated, e.destination_xlated_port),
            backend,
            "{f:#?}"
        );
        // Hubble's service getter: the ClusterIP with its port is the frontend, the backend is
        // not one.
        let (dst_svc, src_svc) = (
            service_name(&f.destination_service),
            service_name(&f.source_service),
        );
        if ip.destination == CLUSTER_IP {
            assert_eq!(dst_svc.as_deref(), Some("default/web"), "{f:#?}");
            assert_eq!(src_svc, None);
            // The ClusterIP is no endpoint: world, as on Cilium.
            assert_eq!(f.destination.as_ref().unwrap().identity, 2);
        } else if ip.source == CLUSTER_IP {
            assert_eq!(src_svc.as_deref(), Some("default/web"), "{f:#?}");
            assert_eq!(dst_svc, None);
        } else {
            // The backend's side: pod-b's address, no service, pod-b's endpoint.
            assert!(
                ip.source == POD_B_IP || ip.destination == POD_B_IP,
                "{f:#?}"
            );
            assert_eq!((dst_svc, src_svc), (None, None), "{f:#?}");
            let pod_b = if ip.destination == POD_B_IP {
                f.destination.as_ref()
            } else {
                f.source.as_ref()
            };
            assert_eq!(pod_b.unwrap().pod_name, "pod-b");
        }
    }
    // All hops share one connection id.
    let ids: std::collections::BTreeSet<u64> = conn.iter().map(|f| ext(f).ct_id).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");

    // What Hubble's tooling reads: the same flows without our extension, services included.
    let json = flowctl(
        &s,
        &[
            "observe",
            "--to-service",
            "default/web",
            "--last",
            "1000",
            "-o",
            "json",
        ],
    );
    let named = flows(&json);
    assert!(!named.is_empty(), "--to-service default/web found nothing");
    assert!(
        named
            .iter()
            .all(|f| service_name(&f.destination_service).as_deref() == Some("default/web")),
        "{named:#?}"
    );
    if let Some(verdict) = hubble_protojson_check(s.dir(), &json) {
        let summary =
            verdict.unwrap_or_else(|e| panic!("Hubble's tooling rejects the service flows: {e}"));
        println!("protojson check of the service flows: {summary}");
    }
    // --from-service selects the replies from the ClusterIP.
    let replies = flows(&flowctl(
        &s,
        &[
            "observe",
            "--from-service",
            "default/web",
            "--last",
            "1000",
            "-o",
            "json",
        ],
    ));
    assert!(
        !replies.is_empty()
            && replies
                .iter()
                .all(|f| f.ip.as_ref().unwrap().source == CLUSTER_IP),
        "{replies:#?}"
    );

    // The compact line names the Service where Hubble does.
    let compact = flowctl(
        &s,
        &[
            "observe",
            "--to-service",
            "default/web",
            "--from-pod",
            "default/pod-a",
            "--last",
            "1000",
        ],
    );
    println!("{compact}");
    assert!(
        compact.contains(&format!("default/pod-a:{port} (ID:"))
            && compact.contains(&format!("-> default/web:{SERVICE_PORT} (world)")),
        "{compact}"
    );
}
