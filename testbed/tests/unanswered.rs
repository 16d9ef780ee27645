//! Connections that got no reply, end to end: reported once, as what they are, and never as a
//! packet that did not happen. Privileged; run serially.
//!
//! The reference scenario without MASQUERADE: pod-a's SYN to 1.0.0.1:80 leaves with the pod's
//! own address and the world has no route back, so the connection is never answered.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use flowscope_proto::{
    EXTENSIONS_HEADER,
    flow::{Flow, TraceObservationPoint, Verdict, layer4::Protocol},
    flowscope::v1::{GetFlowsExtension, RecordSelection},
    observer::{
        GetFlowsRequest, ServerStatusRequest, get_flows_response::ResponseTypes,
        observer_client::ObserverClient,
    },
    wkt::Any,
};
use testbed::observe::{addr, ext, flowctl};
use testbed::{
    Scenario, bin_path, require_root,
    scenario::{POD_A_IP, POD_B_IP, WORLD_IP},
    scrape, traffic,
};

const METRICS: &str = "127.0.0.1:9967";

/// GetFlows over the agent's socket. `ours` = the request of a flowscope client (extensions
/// header, and the unanswered records selected); otherwise a stock Hubble client's request.
fn get_flows(s: &Scenario, number: u64, unanswered: bool) -> Vec<Flow> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = testbed::client::unix_channel(&s.agent_socket(), Duration::from_secs(5))
            .await
            .expect("agent socket");
        let mut client = ObserverClient::new(ch);
        let mut req = tonic::Request::new(GetFlowsRequest {
            number,
            extensions: unanswered.then(|| {
                Any::from_msg(&GetFlowsExtension {
                    records: RecordSelection::Unanswered as i32,
                })
            }),
            ..GetFlowsRequest::default()
        });
        if unanswered {
            req.metadata_mut()
                .insert(EXTENSIONS_HEADER, "true".parse().unwrap());
        }
        let mut stream = client.get_flows(req).await.expect("GetFlows").into_inner();
        let mut flows = Vec::new();
        while let Some(r) = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("GetFlows stalled")
            .expect("GetFlows failed")
        {
            if let Some(ResponseTypes::Flow(f)) = r.response_types {
                flows.push(f);
            }
        }
        flows
    })
}

fn seen_flows(s: &Scenario) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = testbed::client::unix_channel(&s.agent_socket(), Duration::from_secs(5))
            .await
            .unwrap();
        ObserverClient::new(ch)
            .server_status(ServerStatusRequest::default())
            .await
            .unwrap()
            .into_inner()
            .seen_flows
    })
}

fn ports(f: &Flow) -> Option<(u32, u32)> {
    match f.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(t) => Some((t.source_port, t.destination_port)),
        Protocol::Udp(u) => Some((u.source_port, u.destination_port)),
        _ => None,
    }
}

#[expect(deprecated, reason = "Summary is what Hubble clients print")]
fn summary(f: &Flow) -> &str {
    &f.summary
}

#[test]
fn unanswered_connection_is_reported_once_and_never_as_a_packet() {
    if !require_root("unanswered_connection_is_reported_once_and_never_as_a_packet") {
        return;
    }
    let s = Scenario::build();
    s.remove_masquerade();
    let export = s.dir().join("export/flows.json");
    let mut agent = s.start_agent(&[
        "--unanswered-timeout",
        "1s",
        "--metrics-listen-address",
        METRICS,
        "--export-file-path",
        export.to_str().unwrap(),
        "--export-unanswered",
    ]);
    scrape::wait_metrics(&s.node(), METRICS.parse().unwrap(), Duration::from_secs(10));

    // The SYN (and its retransmissions) get no answer; the connect times out after 3 s.
    assert!(
        traffic::http_get(&s.pod_a(), addr(WORLD_IP, 80)).is_err(),
        "no answer without MASQUERADE"
    );

    // 1. The report, selected on the server.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let got = get_flows(&s, 5, true);
        if let Some(r) = got
            .iter()
            .find(|f| f.ip.as_ref().is_some_and(|ip| ip.destination == WORLD_IP))
        {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no unanswered report: {got:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (sport, dport) = ports(&report).expect("ports");
    assert_eq!(dport, 80);
    assert_eq!(report.ip.as_ref().unwrap().source, POD_A_IP);
    assert_eq!(report.source.as_ref().unwrap().pod_name, "pod-a");
    // What it is: no verdict, no event type, no flags.
    assert_eq!(report.verdict, Verdict::Unknown as i32, "{report:#?}");
    assert_eq!(report.event_type, None);
    let Some(Protocol::Tcp(tcp)) = report.l4.as_ref().and_then(|l| l.protocol.as_ref()) else {
        panic!("not TCP: {report:#?}");
    };
    assert_eq!(tcp.flags, None);
    let e = ext(&report);
    assert!(e.unanswered);
    let c = e.unanswered_connection.expect("unanswered_connection");
    assert!(c.packets_sent >= 1, "{c:?}");
    assert!(c.first_seen.unwrap().as_nanos() < report.time.unwrap().as_nanos());

    // 2. Selected on the server: 40 newer flows of other connections do not hide it from
    //    `--last 1` (a client-side filter after the server's last N would).
    // (An echo server: these exchanges are answered.)
    let srv = traffic::udp_server(&s.pod_b(), addr(POD_B_IP, 5300), true);
    let before = seen_flows(&s);
    for _ in 0..40 {
        traffic::udp_send(&s.pod_a(), addr(POD_B_IP, 5300), 1, 8, None).expect("udp");
    }
    drop(srv);
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen_flows(&s) < before + 40 {
        assert!(
            Instant::now() < deadline,
            "the 40 exchanges are not in the history"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let compact = flowctl(&s, &["observe", "--unanswered", "--last", "1"]);
    assert!(
        compact.contains("UNANSWERED") && compact.contains(&format!("{WORLD_IP}:80")),
        "{compact}"
    );
    assert!(compact.contains("no reply after 1s"), "{compact}");
    assert_eq!(compact.lines().count(), 1, "{compact}");

    // 3. Followed, filtered on the server: a follower of UDP reports gets the unanswered UDP
    //    request (nothing listens on the world's port 5301, and no reply could come back
    //    anyway), and not the TCP connection's report.
    let mut follower = testbed::process::Spawned::spawn({
        let mut c = Command::new(bin_path("flowctl"));
        c.args([
            "--server",
            &format!("unix://{}", s.agent_socket().display()),
        ])
        .args(["observe", "--unanswered", "-f", "--protocol", "udp"])
        .args(["-o", "json", "--print-extensions"]);
        c
    });
    // The follower starts at its request: give it a moment to be subscribed.
    std::thread::sleep(Duration::from_millis(500));
    let udp_port = traffic::udp_send(&s.pod_a(), addr(WORLD_IP, 5301), 2, 16, None).expect("udp");
    let got = follower.wait_for(Duration::from_secs(15), |lines| {
        lines
            .iter()
            .any(|l| l["flow"]["l4"]["UDP"]["destination_port"] == 5301)
    });
    follower.signal(libc::SIGINT);
    let _ = follower.wait_exit(Duration::from_secs(5));
    assert!(got, "no UDP report followed: {:?}", follower.raw_lines());
    let followed = follower.values("flow");
    assert!(
        followed.iter().all(|f| f["l4"].get("TCP").is_none()),
        "the protocol filter let a TCP report through: {followed:#?}"
    );
    let udp = followed
        .iter()
        .find(|f| f["l4"]["UDP"]["source_port"] == udp_port)
        .expect("the UDP request's report");
    assert_eq!(
        udp["extensions"]["unanswered_connection"]["packets_sent"], "2",
        "{udp:#?}"
    );

    // 4. Once: another check later still finds one report for the connection.
    std::thread::sleep(Duration::from_millis(2500));
    let reports: Vec<Flow> = get_flows(&s, 100, true)
        .into_iter()
        .filter(|f| ports(f) == Some((sport, 80)))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:#?}");

    // 5. A stock Hubble client sees the packets that happened and nothing else: one SYN at
    //    pod-a's veth (aggregation medium reports a connection's first SYN; retransmissions
    //    are counted in conntrack), no copy of it, nothing that says "no reply".
    let stock = get_flows(&s, 10_000, false);
    assert!(stock.len() > 40);
    for f in &stock {
        assert!(f.extensions.is_none());
        assert_ne!(f.verdict, Verdict::Unknown as i32, "{f:#?}");
        assert!(!summary(f).contains("no reply"), "{f:#?}");
    }
    let syns_at_veth = stock
        .iter()
        .filter(|f| {
            ports(f) == Some((sport, 80))
                && f.trace_observation_point == TraceObservationPoint::FromEndpoint as i32
        })
        .count();
    assert_eq!(syns_at_veth, 1, "{stock:#?}");

    // 6. Its own metric; Hubble's metrics count packets.
    let text = scrape::wait_metrics(&s.node(), METRICS.parse().unwrap(), Duration::from_secs(5));
    let samples = scrape::parse(&text);
    assert_eq!(
        scrape::value(
            &samples,
            "flowscope_unanswered_connections_total",
            &[("protocol", "TCP")]
        ),
        Some(1.0),
        "{text}"
    );
    let processed: f64 = samples
        .iter()
        .filter(|s| s.name == "hubble_flows_processed_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(processed as u64, seen_flows(&s), "{text}");

    // 7. Its own export line; the flow lines are packets.
    assert!(agent.stop().success());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .expect("export file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let own: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            l["flowscope_unanswered"]["IP"]["destination"] == WORLD_IP
                && l["flowscope_unanswered"]["l4"].get("TCP").is_some()
        })
        .collect();
    assert_eq!(own.len(), 1, "{own:#?}");
    assert_eq!(
        own[0]["flowscope_unanswered"]["l4"]["TCP"]["source_port"],
        serde_json::json!(sport)
    );
    for l in &lines {
        if let Some(f) = l.get("flow") {
            let s = f["Summary"].as_str().unwrap_or_default();
            assert!(!s.contains("no reply"), "{l}");
        }
    }
}
