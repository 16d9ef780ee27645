//! OTLP/gRPC export, end to end: the real agent in the reference scenario sends its flows as
//! OTLP log records (and its metrics) to a receiver built only from the OpenTelemetry project's
//! Python packages (`opentelemetry-proto`'s generated stubs and `grpcio`,
//! `tests/otlp_receiver.py`), which shares no code with our encoder. The receiver runs in the
//! node's namespace on 127.0.0.1:4317, in plain text, TLS or mutual TLS. The relay exports the
//! merged stream of two nodes the same way. Privileged; run serially.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use flowscope_proto::flow::{Flow, IpVersion, TraceObservationPoint, Verdict, layer4::Protocol};
use serde_json::Value;
use testbed::{
    Scenario, bin_path,
    certs::Ca,
    observe,
    process::Spawned,
    require_root,
    scenario::{POD_A_IP, POD_B_IP, WORLD_IP},
    scrape, skip, traffic,
};

const RECEIVER: &str = "127.0.0.1:4317";
const METRICS: &str = "127.0.0.1:9965";

fn sock(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("address")
}

/// Whether python3 has the receiver's packages (scripts/setup.sh installs them); skips (or fails
/// under CI) when not.
fn receiver_available(test: &str) -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import grpc, google.rpc.status_pb2, \
             opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(
            test,
            "python3 lacks grpcio, googleapis-common-protos or opentelemetry-proto (scripts/setup.sh installs them)",
        );
    }
    ok
}

/// Starts the receiver in the node's namespace and waits until it listens.
fn start_receiver(s: &Scenario, extra: &[&str]) -> Spawned {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp_receiver.py");
    let mut args = vec![script.to_str().expect("utf-8 path"), "--listen", RECEIVER];
    args.extend_from_slice(extra);
    let mut r = Spawned::start(&s.node(), Path::new("python3"), &args);
    let up = r.wait_for(Duration::from_secs(20), |l| {
        l.iter().any(|v| v.get("listening").is_some())
    });
    assert!(up, "the OTLP receiver did not start: {}", r.stderr());
    r
}

fn start_agent(s: &Scenario, extra: &[&str]) -> Spawned {
    start_agent_to(s, &format!("http://{RECEIVER}"), extra)
}

/// The agent, exporting to `endpoint`.
fn start_agent_to(s: &Scenario, endpoint: &str, extra: &[&str]) -> Spawned {
    let mut args = vec![
        "--metrics-listen-address",
        METRICS,
        "--aggregation",
        "none",
        "--otlp-endpoint",
        endpoint,
        "--otlp-batch-interval",
        "200ms",
        "--otlp-metrics-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    s.start_agent(&args)
}

/// One agent metric (summed over the series matching `labels`), 0 when absent.
fn metric(s: &Scenario, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = scrape::wait_metrics(&s.node(), sock("127.0.0.1", 9965), Duration::from_secs(5));
    scrape::value(&scrape::parse(&text), name, labels).unwrap_or(0.0)
}

/// Waits (bounded) until `cond` holds on the agent's metrics.
fn wait_metric(
    s: &Scenario,
    what: &str,
    cond: impl Fn(&dyn Fn(&str, &[(&str, &str)]) -> f64) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if cond(&|n, l| metric(s, n, l)) {
            return;
        }
        if Instant::now() >= deadline {
            let text =
                scrape::wait_metrics(&s.node(), sock("127.0.0.1", 9965), Duration::from_secs(5));
            let ours: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("flowscope_otlp"))
                .collect();
            panic!("{what}: not reached in 30 s; {ours:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The flows in the agent's history (GetFlows through the real flowctl).
fn history(s: &Scenario) -> Vec<Flow> {
    observe::flows(&observe::flowctl(
        s,
        &["observe", "--last", "1000000", "-o", "jsonpb"],
    ))
}

/// The log records the receiver accepted so far, by `flow.uuid`.
fn received(r: &Spawned) -> BTreeMap<String, Value> {
    r.values("log")
        .into_iter()
        .map(|l| {
            let uuid = l["attributes"]["flow.uuid"]
                .as_str()
                .unwrap_or_else(|| panic!("a record without flow.uuid: {l}"))
                .to_owned();
            (uuid, l)
        })
        .collect()
}

/// (transport, source, source port, destination, destination port) of a flow.
fn five_tuple(f: &Flow) -> (String, String, i64, String, i64) {
    let ip = f.ip.clone().unwrap_or_default();
    let (t, sp, dp) = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => ("tcp", t.source_port, t.destination_port),
        Some(Protocol::Udp(u)) => ("udp", u.source_port, u.destination_port),
        Some(Protocol::IcmPv4(_)) => ("icmp", 0, 0),
        Some(Protocol::IcmPv6(_)) => ("icmpv6", 0, 0),
        _ => ("", 0, 0),
    };
    (
        t.into(),
        ip.source,
        i64::from(sp),
        ip.destination,
        i64::from(dp),
    )
}

/// The same five-tuple read from a record's attributes.
fn record_tuple(r: &Value) -> (String, String, i64, String, i64) {
    let a = &r["attributes"];
    let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
    let n = |k: &str| a[k].as_i64().unwrap_or(0);
    (
        s("network.transport"),
        s("source.address"),
        n("source.port"),
        s("destination.address"),
        n("destination.port"),
    )
}

/// Waits until the receiver holds exactly the flows of the agent's history (bounded): the
/// history is read again each round, since a late packet (a retransmission, neighbour
/// discovery) may still come.
fn wait_same_flows(s: &Scenario, r: &Spawned) -> (Vec<Flow>, BTreeMap<String, Value>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let flows = history(s);
        let got = received(r);
        let want: BTreeSet<&str> = flows.iter().map(|f| f.uuid.as_str()).collect();
        let have: BTreeSet<&str> = got.keys().map(String::as_str).collect();
        // The scenario's last packet is the firewall's drop: until the history holds it, the
        // agent may still be reading the scenario's events, and an equal pair of sets proves
        // nothing yet.
        let complete = flows.iter().any(is_the_dropped_datagram);
        if complete && want == have && got.len() == r.values("log").len() {
            return (flows, got);
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = want.difference(&have).take(5).collect();
            let extra: Vec<_> = have.difference(&want).take(5).collect();
            panic!(
                "the receiver has {} records ({} lines), the history {} flows (the drop among them: {complete}); missing {missing:?}, extra {extra:?}",
                got.len(),
                r.values("log").len(),
                flows.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The datagram `reference_traffic` sends last, which the node's firewall drops.
fn is_the_dropped_datagram(f: &Flow) -> bool {
    f.verdict == Verdict::Dropped as i32 && five_tuple(f).0 == "udp" && five_tuple(f).4 == 9
}

/// The reference scenario's traffic: ping and HTTP to the world, UDP, pod-to-pod TCP, and a
/// datagram the node's firewall drops.
fn reference_traffic(s: &Scenario) {
    let _http = traffic::http_server(&s.world(), sock(WORLD_IP, 80), "hello");
    let _udp = traffic::udp_server(&s.world(), sock(WORLD_IP, 5353), true);
    let _tcp = traffic::tcp_sink(&s.pod_b(), sock(POD_B_IP, 9000));
    assert!(traffic::ping(&s.pod_a(), WORLD_IP, 2), "ping");
    traffic::http_get(&s.pod_a(), sock(WORLD_IP, 80)).expect("http");
    traffic::udp_request(&s.pod_a(), sock(WORLD_IP, 5353), b"q").expect("udp");
    traffic::tcp_send(&s.pod_a(), sock(POD_B_IP, 9000), b"hi").expect("tcp");
    s.iptables(&[
        "-I", "FORWARD", "-d", WORLD_IP, "-p", "udp", "--dport", "9", "-j", "DROP",
    ]);
    traffic::udp_send(&s.pod_a(), sock(WORLD_IP, 9), 1, 16, None).expect("udp to be dropped");
}

/// After the reference scenario's traffic the receiver has exactly the flows of the agent's
/// history, each once, with the semantic-convention attributes matching the flow, Hubble's JSON
/// as the body, and the resource naming the agent and the node; the Hubble metrics arrive as
/// cumulative monotonic sums, and nothing was dropped.
#[test]
fn otlp_receiver_gets_exactly_the_history() {
    let name = "otlp_receiver_gets_exactly_the_history";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let s = Scenario::build();
    let r = start_receiver(&s, &[]);
    let mut agent = start_agent(&s, &[]);
    reference_traffic(&s);
    let (flows, got) = wait_same_flows(&s, &r);
    assert!(flows.len() >= 20, "{} flows", flows.len());
    for f in &flows {
        let rec = &got[&f.uuid];
        let a = &rec["attributes"];
        assert_eq!(record_tuple(rec), five_tuple(f), "{rec}");
        let version = f.ip.as_ref().map(|i| i.ip_version);
        let want_type = match version.and_then(|v| IpVersion::try_from(v).ok()) {
            Some(IpVersion::IPv4) => "ipv4",
            Some(IpVersion::IPv6) => "ipv6",
            _ => "",
        };
        assert_eq!(a["network.type"].as_str().unwrap_or(""), want_type, "{rec}");
        assert_eq!(a["k8s.node.name"], "node-1", "{rec}");
        let verdict = Verdict::try_from(f.verdict).expect("verdict").as_str_name();
        assert_eq!(a["flow.verdict"], verdict, "{rec}");
        let pod = [&f.source, &f.destination]
            .into_iter()
            .flatten()
            .find(|e| !e.pod_name.is_empty());
        match pod {
            Some(p) => {
                assert_eq!(a["k8s.pod.name"], p.pod_name.as_str(), "{rec}");
                assert_eq!(a["k8s.namespace.name"], p.namespace.as_str(), "{rec}");
            }
            None => assert!(a.get("k8s.pod.name").is_none(), "{rec}"),
        }
        match observe::point(f) {
            // Drops come from the kernel's drop tracepoint: no observation point.
            TraceObservationPoint::UnknownPoint => {
                assert!(a.get("flow.observation_point").is_none(), "{rec}")
            }
            p => assert_eq!(a["flow.observation_point"], p.as_str_name(), "{rec}"),
        }
        // The body is the flow in Hubble's JSON: it parses back into the same flow (our
        // extension left out, as in the export file).
        let body = rec["body"].as_str().expect("a string body");
        let back: Flow = flowscope_proto::json::from_json(body).expect("Hubble's JSON");
        assert_eq!(
            back,
            Flow {
                extensions: None,
                ..f.clone()
            }
        );
        let t = f.time.expect("time");
        assert_eq!(rec["time_unix_nano"].as_i64(), Some(t.as_nanos()), "{rec}");
        assert_eq!(rec["event_name"], "flowscope.flow");
        assert_eq!(rec["scope"], "flowscope");
        let res = &rec["resource"];
        assert_eq!(res["service.name"], "flowscope-agent", "{rec}");
        assert_eq!(res["k8s.node.name"], "node-1", "{rec}");
    }
    // pod-a's HTTP request to the world, as the scenario describes it.
    assert!(
        got.values().any(|r| {
            let a = &r["attributes"];
            a["source.address"] == POD_A_IP
                && a["destination.port"] == 80
                && a["network.transport"] == "tcp"
                && a["k8s.pod.name"] == "pod-a"
                && a["flow.observation_point"] == "FROM_ENDPOINT"
        }),
        "pod-a's HTTP request"
    );
    // The firewall's drop, with Hubble's and the kernel's reasons.
    assert!(
        got.values().any(|r| {
            let a = &r["attributes"];
            a["flow.verdict"] == "DROPPED"
                && a["destination.port"] == 9
                && a["flow.drop_reason"].is_string()
                && a["flow.kernel_drop_reason"] == "NETFILTER_DROP"
                && r["severity_text"] == "WARN"
        }),
        "the dropped datagram; the drops received: {:#?}",
        got.values()
            .filter(|r| r["attributes"]["flow.verdict"] == "DROPPED")
            .collect::<Vec<_>>()
    );
    // The metrics: Hubble's series under their names without _total, as cumulative sums.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let processed: Vec<Value> = r
            .values("metric")
            .into_iter()
            .filter(|m| m["name"] == "hubble_flows_processed")
            .collect();
        let total: i64 = {
            // The last push holds the latest values of each series.
            let mut latest: BTreeMap<String, i64> = BTreeMap::new();
            for m in &processed {
                latest.insert(
                    m["attributes"].to_string(),
                    m["value"].as_i64().unwrap_or(0),
                );
            }
            latest.values().sum()
        };
        if !processed.is_empty() && total >= flows.len() as i64 {
            let m = &processed[0];
            assert_eq!(m["kind"], "sum");
            assert_eq!(m["monotonic"], true);
            assert_eq!(m["temporality"], 2, "cumulative");
            assert_eq!(m["resource"]["service.name"], "flowscope-agent");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hubble_flows_processed over OTLP: {total} < {} flows",
            flows.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(metric(&s, "flowscope_otlp_dropped_total", &[]), 0.0);
    assert!(metric(&s, "flowscope_otlp_sent_total", &[("signal", "logs")]) >= flows.len() as f64);
    check_otlp_dashboard(&got, &r.values("metric"));
    promtool_accepts_the_otlp_series(&s);
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// The allow list, deny list and field mask choose what is sent, as for the export file: only
/// pod-a's flows, no ICMP, and only the masked fields in the body and the attributes.
#[test]
fn otlp_filters_and_field_mask() {
    let name = "otlp_filters_and_field_mask";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let s = Scenario::build();
    let r = start_receiver(&s, &[]);
    let mut agent = start_agent(
        &s,
        &[
            "--otlp-allowlist",
            r#"{"source_pod":["default/pod-a"]}"#,
            "--otlp-denylist",
            r#"{"protocol":["icmp"]}"#,
            "--otlp-field-mask",
            "time,verdict,source.pod_name,source.namespace,IP,l4,uuid",
        ],
    );
    reference_traffic(&s);
    let deadline = Instant::now() + Duration::from_secs(30);
    let want: BTreeSet<String> = loop {
        // What the filters select from the history.
        let want: BTreeSet<String> = history(&s)
            .iter()
            .filter(|f| {
                f.source.as_ref().is_some_and(|e| e.pod_name == "pod-a")
                    && !matches!(
                        f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                        Some(Protocol::IcmPv4(_) | Protocol::IcmPv6(_))
                    )
            })
            .map(|f| f.uuid.clone())
            .collect();
        let have: BTreeSet<String> = received(&r).into_keys().collect();
        if !want.is_empty() && want == have {
            break want;
        }
        assert!(
            Instant::now() < deadline,
            "the receiver's flows are not the selected ones: want {want:?}, have {have:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(want.len() >= 5, "{want:?}");
    for rec in received(&r).values() {
        let body: Value = serde_json::from_str(rec["body"].as_str().expect("body")).expect("JSON");
        let mut keys: Vec<&str> = body
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        for k in &keys {
            assert!(
                ["IP", "l4", "source", "time", "uuid", "verdict"].contains(k),
                "unmasked {k}: {body}"
            );
        }
        let a = &rec["attributes"];
        assert_eq!(a["k8s.pod.name"], "pod-a", "{rec}");
        assert!(
            a.get("k8s.node.name").is_none(),
            "node_name is masked: {rec}"
        );
        assert!(
            a.get("flow.observation_point").is_none(),
            "the observation point is masked: {rec}"
        );
        assert_ne!(a["network.transport"], "icmp", "{rec}");
        assert!(a.get("source.address").is_some() && a.get("source.port").is_some());
    }
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// The receiver is down when the agent starts: requests fail and are retried with backoff
/// (counted), the pipeline and the API go on; once the receiver is up, every flow of the
/// history arrives.
#[test]
fn otlp_receiver_down_at_start_then_up() {
    let name = "otlp_receiver_down_at_start_then_up";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let s = Scenario::build();
    let mut agent = start_agent(&s, &[]);
    reference_traffic(&s);
    wait_metric(&s, "failed requests and retries", |m| {
        m(
            "flowscope_otlp_requests_failed_total",
            &[("signal", "logs")],
        ) >= 2.0
            && m("flowscope_otlp_retries_total", &[("signal", "logs")]) >= 1.0
    });
    assert!(!history(&s).is_empty(), "the API serves flows meanwhile");
    let r = start_receiver(&s, &[]);
    let (flows, _) = wait_same_flows(&s, &r);
    assert!(flows.len() >= 20, "{} flows", flows.len());
    assert_eq!(metric(&s, "flowscope_otlp_dropped_total", &[]), 0.0);
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// The receiver answers UNAVAILABLE (with a RetryInfo of 200 ms) to its first three log
/// requests: they are retried, counted, and every flow still arrives exactly once.
#[test]
fn otlp_unavailable_is_retried() {
    let name = "otlp_unavailable_is_retried";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let s = Scenario::build();
    let r = start_receiver(&s, &["--unavailable", "3"]);
    let mut agent = start_agent(&s, &[]);
    reference_traffic(&s);
    let (flows, _) = wait_same_flows(&s, &r);
    assert!(flows.len() >= 20, "{} flows", flows.len());
    let answers: Vec<Value> = r
        .values("request")
        .into_iter()
        .filter(|q| q["signal"] == "logs")
        .collect();
    assert_eq!(
        answers
            .iter()
            .filter(|q| q["answer"] == "unavailable")
            .count(),
        3,
        "{answers:?}"
    );
    assert!(metric(&s, "flowscope_otlp_retries_total", &[("signal", "logs")]) >= 3.0);
    assert!(
        metric(
            &s,
            "flowscope_otlp_requests_failed_total",
            &[("signal", "logs")]
        ) >= 3.0
    );
    assert_eq!(metric(&s, "flowscope_otlp_dropped_total", &[]), 0.0);
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// The receiver refuses two records of every request in a partial success: they are counted as
/// rejected, and delivered + rejected = every flow of the history.
#[test]
fn otlp_partial_success_is_counted() {
    let name = "otlp_partial_success_is_counted";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let s = Scenario::build();
    let r = start_receiver(&s, &["--reject", "2"]);
    let mut agent = start_agent(&s, &[]);
    reference_traffic(&s);
    wait_metric(&s, "delivered + rejected = the history", |m| {
        let sent = m("flowscope_otlp_sent_total", &[("signal", "logs")]);
        let rejected = m("flowscope_otlp_dropped_total", &[("reason", "rejected")]);
        // The receiver rejects the first two records of each request, or its only one: a
        // batch closed by time may hold a single late flow.
        let said_rejected: f64 = r
            .values("request")
            .iter()
            .filter(|q| q["signal"] == "logs")
            .map(|q| q["rejected"].as_f64().unwrap_or(0.0))
            .sum();
        rejected > 0.0
            && rejected == said_rejected
            && sent == r.values("log").len() as f64
            && sent + rejected == history(&s).len() as f64
    });
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// The agent with `env` (`KEY=value` items) in its environment, exporting every 200 ms;
/// waits until it serves.
fn start_agent_with_env(s: &Scenario, env: &[&str], extra: &[&str]) -> Spawned {
    let socket = s.agent_socket();
    let endpoints = s.endpoints_file();
    let agent_bin = testbed::bin_path("monitor-agent");
    // `env` sets the variables and execs the agent (its PID is the agent's).
    let mut args: Vec<&str> = env.to_vec();
    args.extend([
        agent_bin.to_str().expect("utf-8 path"),
        "--socket",
        socket.to_str().expect("utf-8 path"),
        "--endpoints-file",
        endpoints.to_str().expect("utf-8 path"),
        "--node-name",
        "node-1",
        "--metrics-listen-address",
        METRICS,
        "--otlp-batch-interval",
        "200ms",
    ]);
    args.extend_from_slice(extra);
    let agent = Spawned::start(&s.node(), Path::new("env"), &args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(testbed::client::wait_for_socket(
        &socket,
        Duration::from_secs(30),
    )) {
        panic!("{e}; agent stderr:\n{}", agent.stderr());
    }
    agent
}

/// OpenTelemetry's environment variables configure the exporter (endpoint, headers, resource
/// attributes, service name), and a flag wins over its variable.
#[test]
fn otlp_environment_variables_and_flags() {
    let name = "otlp_environment_variables_and_flags";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let s = Scenario::build();
    let r = start_receiver(&s, &[]);
    let endpoint = format!("OTEL_EXPORTER_OTLP_ENDPOINT=http://{RECEIVER}");
    let mut agent = start_agent_with_env(
        &s,
        &[
            &endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS=x-tenant=from-env,x-api-key=k%2C1",
            "OTEL_RESOURCE_ATTRIBUTES=k8s.cluster.name=lab,deployment.environment.name=test",
            "OTEL_SERVICE_NAME=flowscope-lab",
        ],
        &["--otlp-headers", "x-tenant=from-flag"],
    );
    assert!(traffic::ping(&s.pod_a(), WORLD_IP, 2), "ping");
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.values("log").is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing arrived: {}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rec = &r.values("log")[0];
    let res = &rec["resource"];
    assert_eq!(res["k8s.cluster.name"], "lab", "{res}");
    assert_eq!(res["deployment.environment.name"], "test", "{res}");
    assert_eq!(
        res["service.name"], "flowscope-lab",
        "OTEL_SERVICE_NAME: {res}"
    );
    assert_eq!(res["k8s.node.name"], "node-1", "{res}");
    let q = r
        .values("request")
        .into_iter()
        .find(|q| q["signal"] == "logs")
        .expect("a logs request");
    assert_eq!(q["headers"]["x-tenant"], "from-flag", "the flag wins: {q}");
    assert!(
        q["headers"].get("x-api-key").is_none(),
        "the flag replaces the variable's whole list: {q}"
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// A slow receiver (3 s per request for its first four requests) behind a small queue: the
/// pipeline never waits for it (GetFlows answers at once, the history gets every flow), the
/// flows the queue cannot hold are counted as dropped, and once the receiver is fast again new
/// flows are delivered.
#[test]
fn otlp_slow_receiver_never_blocks() {
    let name = "otlp_slow_receiver_never_blocks";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let s = Scenario::build();
    let r = start_receiver(&s, &["--slow", "4:3"]);
    let mut agent = start_agent(&s, &["--otlp-queue-size", "32", "--otlp-batch-size", "16"]);
    let _udp = traffic::udp_server(&s.world(), sock(WORLD_IP, 5000), false);
    // Two flows per datagram (from-endpoint, to-network): far more than the queue holds while
    // the receiver sleeps.
    traffic::udp_send(&s.pod_a(), sock(WORLD_IP, 5000), 400, 16, None).expect("udp");
    // The history gets every flow, and GetFlows answers at once, while the receiver sleeps.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = Instant::now();
        let flows = history(&s);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "GetFlows took {:?}",
            t.elapsed()
        );
        let to_5000 = flows.iter().filter(|f| five_tuple(f).4 == 5000).count();
        if to_5000 >= 800 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the history has {to_5000} of the 800 flows"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_metric(&s, "queue drops", |m| {
        m("flowscope_otlp_dropped_total", &[("reason", "queue_full")]) >= 100.0
    });
    // The slow requests end; later flows are delivered.
    wait_metric(&s, "slow requests done", |_| {
        r.values("request")
            .iter()
            .filter(|q| q["signal"] == "logs" && q["answer"] == "slow")
            .count()
            >= 4
    });
    let port = traffic::udp_send(&s.pod_a(), sock(WORLD_IP, 5000), 5, 16, None).expect("udp");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let late = r
            .values("log")
            .iter()
            .filter(|l| l["attributes"]["source.port"] == i64::from(port))
            .count();
        if late >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivery did not resume: {late} of the last flows arrived"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Every flow is accounted for: delivered or counted as dropped, once the queue is empty.
    wait_metric(&s, "sent + dropped = the flows of the history", |m| {
        let sent = m("flowscope_otlp_sent_total", &[("signal", "logs")]);
        let dropped = m("flowscope_otlp_dropped_total", &[]);
        m("flowscope_otlp_queue_length", &[]) == 0.0 && sent + dropped == history(&s).len() as f64
    });
    assert_eq!(
        r.values("log").len() as f64,
        metric(&s, "flowscope_otlp_sent_total", &[("signal", "logs")]),
        "what the receiver got is what the agent counts as sent"
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A CA of the test's own, the receiver's certificate (for 127.0.0.1) and a client certificate
/// for the agent, in `dir`: (CA file, receiver cert, receiver key, client cert, client key).
fn certificates(dir: &Path) -> [std::path::PathBuf; 5] {
    let ca = Ca::new("flowscope OTLP test CA");
    let ca_file = ca.write(dir, "ca");
    let (server_cert, server_key) = ca.leaf(dir, "receiver", "127.0.0.1", false);
    let (client_cert, client_key) = ca.leaf(dir, "agent", "node-1", true);
    [ca_file, server_cert, server_key, client_cert, client_key]
}

/// TLS to the receiver: the endpoint without a scheme means TLS (OTLP's rule), the receiver's
/// certificate is checked against `--otlp-ca-file` (a CA of the test's own), and every flow of
/// the history arrives.
#[test]
fn otlp_over_tls() {
    let name = "otlp_over_tls";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, server_cert, server_key, _, _] = certificates(dir.path());
    let s = Scenario::build();
    let r = start_receiver(
        &s,
        &["--tls-cert", p(&server_cert), "--tls-key", p(&server_key)],
    );
    let mut agent = start_agent_to(&s, RECEIVER, &["--otlp-ca-file", p(&ca)]);
    reference_traffic(&s);
    let (flows, _) = wait_same_flows(&s, &r);
    assert!(flows.len() >= 20, "{} flows", flows.len());
    assert_eq!(metric(&s, "flowscope_otlp_dropped_total", &[]), 0.0);
    assert_eq!(
        metric(
            &s,
            "flowscope_otlp_requests_failed_total",
            &[("signal", "logs")]
        ),
        0.0
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// Mutual TLS: a receiver that requires a client certificate of its CA gets every flow from an
/// agent with `--otlp-client-cert-file`/`--otlp-client-key-file` (over `https://`).
#[test]
fn otlp_over_mutual_tls() {
    let name = "otlp_over_mutual_tls";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, server_cert, server_key, client_cert, client_key] = certificates(dir.path());
    let s = Scenario::build();
    let r = start_receiver(
        &s,
        &[
            "--tls-cert",
            p(&server_cert),
            "--tls-key",
            p(&server_key),
            "--tls-client-ca",
            p(&ca),
        ],
    );
    let mut agent = start_agent_to(
        &s,
        &format!("https://{RECEIVER}"),
        &[
            "--otlp-ca-file",
            p(&ca),
            "--otlp-client-cert-file",
            p(&client_cert),
            "--otlp-client-key-file",
            p(&client_key),
        ],
    );
    reference_traffic(&s);
    let (flows, _) = wait_same_flows(&s, &r);
    assert!(flows.len() >= 20, "{} flows", flows.len());
    assert_eq!(metric(&s, "flowscope_otlp_dropped_total", &[]), 0.0);
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// The TLS files come from OpenTelemetry's environment variables too
/// (`OTEL_EXPORTER_OTLP_CERTIFICATE`, `_CLIENT_CERTIFICATE`, `_CLIENT_KEY`): a receiver
/// requiring a client certificate gets the agent's flows.
#[test]
fn otlp_tls_files_from_the_environment() {
    let name = "otlp_tls_files_from_the_environment";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, server_cert, server_key, client_cert, client_key] = certificates(dir.path());
    let s = Scenario::build();
    let r = start_receiver(
        &s,
        &[
            "--tls-cert",
            p(&server_cert),
            "--tls-key",
            p(&server_key),
            "--tls-client-ca",
            p(&ca),
        ],
    );
    let env = [
        format!("OTEL_EXPORTER_OTLP_ENDPOINT=https://{RECEIVER}"),
        format!("OTEL_EXPORTER_OTLP_CERTIFICATE={}", p(&ca)),
        format!("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE={}", p(&client_cert)),
        format!("OTEL_EXPORTER_OTLP_CLIENT_KEY={}", p(&client_key)),
    ];
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    let mut agent = start_agent_with_env(&s, &env, &[]);
    assert!(traffic::ping(&s.pod_a(), WORLD_IP, 2), "ping");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !r.values("log").iter().any(|l| {
        l["attributes"]["source.address"] == POD_A_IP
            && l["attributes"]["network.transport"] == "icmp"
    }) {
        assert!(
            Instant::now() < deadline,
            "pod-a's ping did not arrive: {}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// A receiver that requires a client certificate receives nothing from an agent that has none:
/// its requests fail and are counted, nothing counts as sent, and the agent goes on serving.
#[test]
fn otlp_mutual_tls_refuses_an_agent_without_a_certificate() {
    let name = "otlp_mutual_tls_refuses_an_agent_without_a_certificate";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, server_cert, server_key, _, _] = certificates(dir.path());
    let s = Scenario::build();
    let r = start_receiver(
        &s,
        &[
            "--tls-cert",
            p(&server_cert),
            "--tls-key",
            p(&server_key),
            "--tls-client-ca",
            p(&ca),
        ],
    );
    let mut agent = start_agent_to(
        &s,
        &format!("https://{RECEIVER}"),
        &["--otlp-ca-file", p(&ca)],
    );
    reference_traffic(&s);
    wait_metric(&s, "failed log and metric requests", |m| {
        m(
            "flowscope_otlp_requests_failed_total",
            &[("signal", "logs")],
        ) >= 2.0
            && m(
                "flowscope_otlp_requests_failed_total",
                &[("signal", "metrics")],
            ) >= 1.0
    });
    assert!(!history(&s).is_empty(), "the API serves flows meanwhile");
    assert_eq!(
        metric(&s, "flowscope_otlp_sent_total", &[("signal", "logs")]),
        0.0
    );
    assert!(
        r.values("log").is_empty() && r.values("request").is_empty(),
        "the receiver accepted something: {:?}",
        r.lines()
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
}

const RELAY: &str = "127.0.0.1:4245";
const RELAY_METRICS: &str = "127.0.0.1:9966";

/// `flowctl --server <relay> args…`, run in `ns` (bounded to 20 s); panics if it fails.
fn relay_flowctl(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "20"])
        .arg(bin_path("flowctl"))
        .args(["--server", RELAY])
        .args(args)
        .output()
        .expect("flowctl");
    assert!(
        out.status.success(),
        "flowctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every flow of both nodes' histories, through the relay.
fn relay_history(ns: &str) -> Vec<Flow> {
    observe::flows(&relay_flowctl(
        ns,
        &["observe", "--last", "1000000", "-o", "jsonpb"],
    ))
}

/// The relay, in node-1's namespace, dialing both agents over their unix sockets and exporting
/// over OTLP to the receiver's address; started before the agents (which it waits for).
fn start_relay(s1: &Scenario, s2: &Scenario) -> Spawned {
    let peers = format!(
        "node-1=unix://{},node-2=unix://{}",
        s1.agent_socket().display(),
        s2.agent_socket().display()
    );
    let endpoint = format!("http://{RECEIVER}");
    Spawned::start(
        &s1.node(),
        &bin_path("flowscope-relay"),
        &[
            "--listen-address",
            RELAY,
            "--metrics-listen-address",
            RELAY_METRICS,
            "--peers",
            &peers,
            "--peer-check-interval",
            "1s",
            "--backoff-max",
            "1s",
            "--name",
            "relay-0",
            "--otlp-endpoint",
            &endpoint,
            "--otlp-batch-interval",
            "200ms",
            "--otlp-metrics-interval",
            "1s",
        ],
    )
}

/// Waits (bounded) until the relay reports both nodes connected.
fn wait_both_connected(ns: &str, relay: &Spawned) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = relay_flowctl(ns, &["nodes"]);
        if out.matches("Connected").count() == 2 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never saw both nodes: {out}\nrelay: {}",
            relay.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One relay metric (summed over the series matching `labels`), 0 when absent.
fn relay_metric(ns: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = scrape::wait_metrics(
        ns,
        RELAY_METRICS.parse().expect("addr"),
        Duration::from_secs(5),
    );
    scrape::value(&scrape::parse(&text), name, labels).unwrap_or(0.0)
}

/// Waits until the receiver holds exactly the flows the relay returns for both nodes' histories
/// (each once), once both histories hold their node's firewall drop (the traffic's last
/// packet).
fn wait_same_flows_through_relay(ns: &str, r: &Spawned) -> (Vec<Flow>, BTreeMap<String, Value>) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let flows = relay_history(ns);
        let got = received(r);
        let want: BTreeSet<&str> = flows.iter().map(|f| f.uuid.as_str()).collect();
        let have: BTreeSet<&str> = got.keys().map(String::as_str).collect();
        let complete = ["node-1", "node-2"].iter().all(|n| {
            flows
                .iter()
                .any(|f| f.node_name == *n && is_the_dropped_datagram(f))
        });
        if complete && want == have && got.len() == r.values("log").len() {
            return (flows, got);
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = want.difference(&have).take(5).collect();
            let extra: Vec<_> = have.difference(&want).take(5).collect();
            panic!(
                "the receiver has {} records ({} lines), the relay {} flows (both drops among them: {complete}); missing {missing:?}, extra {extra:?}",
                got.len(),
                r.values("log").len(),
                flows.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The relay exports the cluster's stream: with `--otlp-endpoint` on the relay only (the agents
/// export nothing), after the reference traffic on two nodes the receiver has exactly the flows
/// `flowctl observe --last N` through the relay returns, each once, each record naming its
/// own node (`k8s.node.name` = the flow's `node_name`), under the relay's resource
/// (`service.name=flowscope-relay`, no node of its own); the relay's metrics arrive as OTLP
/// metrics, and its `/metrics` counts what it sent.
#[test]
fn otlp_relay_exports_the_cluster_stream() {
    let name = "otlp_relay_exports_the_cluster_stream";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let (s1, s2) = (Scenario::build(), Scenario::build());
    let ns = s1.node();
    let r = start_receiver(&s1, &[]);
    let mut relay = start_relay(&s1, &s2);
    let mut a1 = s1.start_agent(&[]);
    let mut a2 = s2.start_agent(&["--node-name", "node-2"]);
    wait_both_connected(&ns, &relay);
    reference_traffic(&s1);
    reference_traffic(&s2);
    let (flows, got) = wait_same_flows_through_relay(&ns, &r);
    let per_node = |n: &str| flows.iter().filter(|f| f.node_name == n).count();
    println!(
        "through the relay: {} flows of node-1, {} of node-2; the receiver: {} records",
        per_node("node-1"),
        per_node("node-2"),
        got.len()
    );
    assert!(
        per_node("node-1") >= 20 && per_node("node-2") >= 20,
        "{} + {} flows",
        per_node("node-1"),
        per_node("node-2")
    );
    for f in &flows {
        let rec = &got[&f.uuid];
        assert_eq!(
            rec["attributes"]["k8s.node.name"],
            f.node_name.as_str(),
            "{rec}"
        );
        assert_eq!(record_tuple(rec), five_tuple(f), "{rec}");
        let res = &rec["resource"];
        assert_eq!(res["service.name"], "flowscope-relay", "{rec}");
        assert_eq!(res["service.instance.id"], "relay-0", "{rec}");
        assert!(res.get("k8s.node.name").is_none(), "{rec}");
        let body = rec["body"].as_str().expect("a string body");
        let back: Flow = flowscope_proto::json::from_json(body).expect("Hubble's JSON");
        assert_eq!(
            back,
            Flow {
                extensions: None,
                ..f.clone()
            }
        );
    }
    // Both drops, with the kernel's reason (the relay asks the agents for our extension).
    for node in ["node-1", "node-2"] {
        assert!(
            got.values().any(|r| {
                let a = &r["attributes"];
                a["k8s.node.name"] == node
                    && a["flow.verdict"] == "DROPPED"
                    && a["flow.kernel_drop_reason"] == "NETFILTER_DROP"
            }),
            "{node}'s drop"
        );
    }
    // The relay's own metrics, pushed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes: Vec<Value> = r
            .values("metric")
            .into_iter()
            .filter(|m| {
                m["name"] == "flowscope_relay_nodes" && m["attributes"]["state"] == "connected"
            })
            .collect();
        if nodes.last().is_some_and(|m| m["value"] == 2) {
            assert_eq!(nodes[0]["resource"]["service.name"], "flowscope-relay");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flowscope_relay_nodes over OTLP: {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(relay_metric(&ns, "flowscope_otlp_dropped_total", &[]), 0.0);
    assert_eq!(
        relay_metric(&ns, "flowscope_otlp_sent_total", &[("signal", "logs")]),
        r.values("log").len() as f64
    );
    relay.signal(libc::SIGTERM);
    assert!(
        relay.wait_exit(Duration::from_secs(15)).success(),
        "relay exits 0 on SIGTERM: {}",
        relay.stderr()
    );
    assert!(a1.stop().success(), "{}", a1.stderr());
    assert!(a2.stop().success(), "{}", a2.stderr());
}

/// The receiver is down when the relay starts: its requests fail and are retried (counted on
/// the relay's `/metrics`), the relay's GetFlows keeps answering at once meanwhile, and once
/// the receiver is up every flow of both nodes arrives, once.
#[test]
fn otlp_relay_receiver_down_at_start_then_up() {
    let name = "otlp_relay_receiver_down_at_start_then_up";
    if !require_root(name) || !receiver_available(name) {
        return;
    }
    let (s1, s2) = (Scenario::build(), Scenario::build());
    let ns = s1.node();
    let mut relay = start_relay(&s1, &s2);
    let mut a1 = s1.start_agent(&[]);
    let mut a2 = s2.start_agent(&["--node-name", "node-2"]);
    wait_both_connected(&ns, &relay);
    reference_traffic(&s1);
    reference_traffic(&s2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(relay_metric(
        &ns,
        "flowscope_otlp_requests_failed_total",
        &[("signal", "logs")],
    ) >= 2.0
        && relay_metric(&ns, "flowscope_otlp_retries_total", &[("signal", "logs")]) >= 1.0)
    {
        assert!(
            Instant::now() < deadline,
            "no failed and retried request on the relay: {}",
            relay.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = Instant::now();
    let flows = relay_history(&ns);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "GetFlows through the relay took {:?}",
        t.elapsed()
    );
    assert!(
        flows.iter().any(|f| f.node_name == "node-1")
            && flows.iter().any(|f| f.node_name == "node-2"),
        "the relay serves both nodes' flows meanwhile"
    );
    let r = start_receiver(&s1, &[]);
    let (flows, _) = wait_same_flows_through_relay(&ns, &r);
    assert!(flows.len() >= 40, "{} flows", flows.len());
    assert_eq!(relay_metric(&ns, "flowscope_otlp_dropped_total", &[]), 0.0);
    relay.signal(libc::SIGTERM);
    assert!(
        relay.wait_exit(Duration::from_secs(15)).success(),
        "{}",
        relay.stderr()
    );
    assert!(a1.stop().success(), "{}", a1.stderr());
    assert!(a2.stop().success(), "{}", a2.stderr());
}

/// The `flowscope_otlp_*` series on `/metrics` pass `promtool check metrics` (Debian's
/// prometheus package, which scripts/setup.sh installs).
fn promtool_accepts_the_otlp_series(s: &Scenario) {
    use std::io::Write as _;
    const PROMTOOL: &str = "/usr/bin/promtool";
    if !Path::new(PROMTOOL).exists() {
        skip("promtool_accepts_the_otlp_series", "no /usr/bin/promtool");
        return;
    }
    let text = scrape::wait_metrics(&s.node(), sock("127.0.0.1", 9965), Duration::from_secs(5));
    let ours: String = text
        .lines()
        .filter(|l| l.contains("flowscope_otlp_"))
        .map(|l| format!("{l}\n"))
        .collect();
    for name in [
        "flowscope_otlp_sent_total",
        "flowscope_otlp_dropped_total",
        "flowscope_otlp_requests_failed_total",
        "flowscope_otlp_retries_total",
        "flowscope_otlp_queue_length",
        "flowscope_otlp_queue_capacity",
    ] {
        assert!(ours.contains(name), "{name} missing:\n{ours}");
    }
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(ours.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{ours}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn repo_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Every (datasource type, expression) of a dashboard's panels.
fn dashboard_targets(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let ds = t["datasource"]["type"]
                .as_str()
                .or(p["datasource"]["type"].as_str())
                .expect("a datasource type")
                .to_owned();
            out.push((ds, t["expr"].as_str().expect("expr").to_owned()));
        }
    }
    out
}

/// Label names a LogQL or PromQL expression filters or groups on: words followed by `=`, `!=`,
/// `=~`, `!~` (outside strings) and the words of `by (…)` lists.
fn used_labels(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut out = BTreeSet::new();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'`' => {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let rest = expr[i..].trim_start();
                if word == "by" && rest.starts_with('(') {
                    let end = rest.find(')').expect("a closed by list");
                    for l in rest[1..end].split(',') {
                        out.insert(l.trim().to_owned());
                    }
                } else if ["=", "!=", "=~", "!~"]
                    .iter()
                    .any(|op| rest.starts_with(op) && !rest.starts_with("=="))
                {
                    out.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Series names (`hubble_…`, `flowscope_…`) of a PromQL expression.
fn series_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("hubble_") || w.starts_with("flowscope_"))
        .map(str::to_owned)
        .collect()
}

/// The OTLP dashboard asks only for what the agent sends: its LogQL filters and groups on
/// Loki's names (dots as underscores) of attributes the receiver got (records' or resource's),
/// and its PromQL names only series pushed over OTLP (a monotonic sum `x` is `x_total` in
/// Prometheus and Mimir) with the job label Prometheus derives from the resource.
fn check_otlp_dashboard(logs: &BTreeMap<String, Value>, metrics: &[Value]) {
    let d: Value = serde_json::from_str(&repo_file("deploy/grafana/flowscope-otlp-dashboard.json"))
        .expect("the OTLP dashboard is JSON");
    let mut loki_labels: BTreeSet<String> = BTreeSet::new();
    for rec in logs.values() {
        for part in ["attributes", "resource"] {
            for k in rec[part].as_object().expect("attributes").keys() {
                loki_labels.insert(k.replace('.', "_"));
            }
        }
    }
    let mut series: BTreeSet<String> = BTreeSet::new();
    for m in metrics {
        let name = m["name"].as_str().expect("name");
        series.insert(if m["monotonic"] == true {
            format!("{name}_total")
        } else {
            name.to_owned()
        });
    }
    let resource = &logs.values().next().expect("a record")["resource"];
    let job = format!(
        "{}/{}",
        resource["service.namespace"]
            .as_str()
            .expect("service.namespace"),
        resource["service.name"].as_str().expect("service.name")
    );
    let targets = dashboard_targets(&d);
    let (mut loki, mut prom) = (0, 0);
    for (ds, expr) in &targets {
        match ds.as_str() {
            "loki" => {
                loki += 1;
                for l in used_labels(expr) {
                    assert!(
                        loki_labels.contains(&l),
                        "{expr}: {l} is not among {loki_labels:?}"
                    );
                }
                assert!(expr.contains("service_name=\"flowscope-agent\""), "{expr}");
            }
            "prometheus" => {
                prom += 1;
                for s in series_names(expr) {
                    assert!(series.contains(&s), "{expr}: {s} is not among {series:?}");
                }
                assert!(expr.contains(&format!("job=\"{job}\"")), "{expr}");
            }
            other => panic!("unexpected datasource {other}"),
        }
    }
    assert!(loki >= 3 && prom >= 3, "logs next to metrics: {targets:?}");
}

/// The Collector configuration is valid YAML whose pipelines use only components it defines:
/// OTLP/gRPC in on 4317, logs out to Loki's OTLP endpoint, metrics to an OTLP metrics endpoint.
/// The Alloy configuration wires the same components: every `….input` it sends to is a block it
/// declares. (Neither program runs here: this checks the files' structure, not the tools'.)
#[test]
fn collector_and_alloy_configs_are_wired() {
    let yaml: serde_json::Value = serde_yaml_ng::from_str(&repo_file("deploy/otel/collector.yaml"))
        .expect("collector.yaml is YAML");
    assert_eq!(
        yaml["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "0.0.0.0:4317"
    );
    let defined = |section: &str, name: &str| yaml[section].get(name).is_some();
    let pipelines = yaml["service"]["pipelines"].as_object().expect("pipelines");
    for signal in ["logs", "metrics"] {
        let p = &pipelines[signal];
        for (section, key) in [
            ("receivers", "receivers"),
            ("processors", "processors"),
            ("exporters", "exporters"),
        ] {
            for c in p[key].as_array().expect("a list") {
                let c = c.as_str().expect("a name");
                assert!(defined(section, c), "{signal}: {c} is not under {section}");
            }
        }
    }
    let exporter = |signal: &str| {
        let name = pipelines[signal]["exporters"][0]
            .as_str()
            .expect("exporter");
        yaml["exporters"][name]["endpoint"]
            .as_str()
            .expect("endpoint")
            .to_owned()
    };
    assert!(
        exporter("logs").ends_with(":3100/otlp"),
        "Loki's OTLP endpoint"
    );
    assert!(
        exporter("metrics").ends_with("/otlp"),
        "an OTLP metrics endpoint"
    );

    let alloy = repo_file("deploy/otel/alloy.alloy");
    let mut declared = BTreeSet::new();
    for line in alloy.lines().map(str::trim) {
        if line.starts_with("otelcol.")
            && let Some((kind, rest)) = line.split_once(' ')
            && let Some(label) = rest.strip_prefix('"').and_then(|r| r.split('"').next())
        {
            declared.insert(format!("{kind}.{label}"));
        }
    }
    let mut sent_to = BTreeSet::new();
    for word in alloy.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == ',') {
        if let Some(target) = word.strip_suffix(".input") {
            sent_to.insert(target.to_owned());
        }
    }
    assert!(
        declared.contains("otelcol.receiver.otlp.flowscope"),
        "{declared:?}"
    );
    assert!(
        sent_to.contains("otelcol.exporter.otlphttp.loki"),
        "{sent_to:?}"
    );
    assert!(
        sent_to.contains("otelcol.exporter.otlphttp.mimir"),
        "{sent_to:?}"
    );
    for t in &sent_to {
        assert!(
            declared.contains(t),
            "{t} is used but not declared: {declared:?}"
        );
    }
    assert!(alloy.contains("\"0.0.0.0:4317\""));
}
