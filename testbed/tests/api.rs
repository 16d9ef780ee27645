//! The agent's Observer API, end to end: the real agent in the reference scenario, a real tonic
//! client on its unix socket. Privileged; run serially.

use std::time::Duration;

use flowscope_proto::{
    HUBBLE_HEALTH_SERVICE, SERVER_VERSION_HEADER,
    flow::{Flow, FlowFilter, LostEventSource, TraceObservationPoint, TraceReason, Verdict},
    observer::{
        GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNodesRequest,
        ServerStatusRequest, get_flows_response::ResponseTypes, observer_client::ObserverClient,
    },
    wkt::Timestamp,
};
use futures::StreamExt as _;
use testbed::observe::{addr, point};
use testbed::{
    Scenario, bin_path, client,
    process::Spawned,
    require_root,
    scenario::{NODE_IP, POD_A_IP, WORLD_IP},
    traffic,
};
use tonic::transport::Channel;

struct Agent {
    proc: Spawned,
    channel: Channel,
}

async fn start_agent(s: &Scenario, extra: &[&str]) -> Agent {
    // The helper waits with a runtime of its own: leave this one's worker to it meanwhile.
    let proc = tokio::task::block_in_place(|| s.start_agent(extra));
    let channel = client::unix_channel(&s.agent_socket(), Duration::from_secs(5))
        .await
        .expect("agent socket");
    Agent { proc, channel }
}

fn flows_of(resps: &[GetFlowsResponse]) -> Vec<Flow> {
    resps
        .iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

fn ip_filter(ip: &str) -> Vec<FlowFilter> {
    vec![
        FlowFilter {
            source_ip: vec![ip.into()],
            ..FlowFilter::default()
        },
        FlowFilter {
            destination_ip: vec![ip.into()],
            ..FlowFilter::default()
        },
    ]
}

/// Collects a non-follow GetFlows stream to the end (bounded in time).
async fn get_flows(
    ch: &Channel,
    req: GetFlowsRequest,
) -> Result<Vec<GetFlowsResponse>, tonic::Status> {
    let mut c = ObserverClient::new(ch.clone());
    let mut stream = c.get_flows(req).await?.into_inner();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(r))) => out.push(r),
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Ok(out),
            Err(_) => panic!("GetFlows without follow did not end within 10 s"),
        }
    }
}

/// The seed's flows through the API: pod names, namespaces and identities from the endpoints
/// file, `world` for 1.0.0.1, `host` for the node's own address; last N, first N, since/until.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_scenario_through_the_api() {
    if !require_root("reference_scenario_through_the_api") {
        return;
    }
    let s = Scenario::build();
    let _http = traffic::http_server(&s.world(), addr(WORLD_IP, 80), "hello\n");
    let mut agent = start_agent(&s, &["--aggregation", "none"]).await;
    let before = Timestamp::now();
    let (pod_a, world) = (s.pod_a(), addr(WORLD_IP, 80));
    let get = tokio::task::spawn_blocking(move || traffic::http_get(&pod_a, world))
        .await
        .unwrap()
        .expect("GET");
    let port = get.local_port as u32;

    let req = GetFlowsRequest {
        number: 100,
        whitelist: ip_filter(WORLD_IP),
        ..GetFlowsRequest::default()
    };
    let conn_of = |flows: &[Flow]| -> Vec<Flow> {
        flows
            .iter()
            .filter(|f| {
                let l4 = f.l4.as_ref().and_then(|l| l.ports());
                matches!(l4, Some((a, b)) if a == port || b == port)
                    || point(f) == TraceObservationPoint::ToNetwork
                    || point(f) == TraceObservationPoint::FromNetwork
            })
            .cloned()
            .collect()
    };
    // Flows reach the history a poll interval (or more, on a loaded machine) after the traffic:
    // ask until the ones checked below are there.
    let complete = |conn: &[Flow]| {
        conn.iter().any(|f| {
            point(f) == TraceObservationPoint::FromEndpoint
                && f.trace_reason == TraceReason::New as i32
        }) && conn
            .iter()
            .any(|f| point(f) == TraceObservationPoint::ToNetwork)
            && conn
                .iter()
                .any(|f| point(f) == TraceObservationPoint::ToEndpoint && f.is_reply == Some(true))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let conn = loop {
        let flows = flows_of(
            &get_flows(&agent.channel, req.clone())
                .await
                .expect("GetFlows"),
        );
        let conn = conn_of(&flows);
        if complete(&conn) || tokio::time::Instant::now() >= deadline {
            break conn;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Flow times are the kernel's: every flow of the GET is older than this.
    let after = Timestamp::now();
    let syn = conn
        .iter()
        .find(|f| {
            point(f) == TraceObservationPoint::FromEndpoint
                && f.trace_reason == TraceReason::New as i32
        })
        .unwrap_or_else(|| panic!("no from-endpoint NEW flow among {conn:#?}"));
    let src = syn.source.as_ref().unwrap();
    assert_eq!(
        (src.namespace.as_str(), src.pod_name.as_str(), src.id),
        ("default", "pod-a", 762)
    );
    assert!(
        src.labels.contains(&"k8s:app=web".to_string()),
        "{:?}",
        src.labels
    );
    assert!(
        src.identity >= 256,
        "endpoint identity in the cluster-local range: {}",
        src.identity
    );
    assert_eq!(src.workloads.first().map(|w| w.name.as_str()), Some("web"));
    let dst = syn.destination.as_ref().unwrap();
    assert_eq!(dst.identity, 2);
    assert_eq!(dst.labels, vec!["reserved:world".to_string()]);
    assert_eq!(syn.node_name, "node-1");
    assert_eq!(syn.verdict, Verdict::Forwarded as i32);
    assert_eq!(syn.is_reply, Some(false));
    assert!(
        syn.extensions.is_none(),
        "no extensions for clients that did not ask"
    );
    let uplink = conn
        .iter()
        .find(|f| point(f) == TraceObservationPoint::ToNetwork)
        .expect("to-network flow");
    // The NAT join: the uplink flow names the pod (address before translation) and carries the
    // node's address as the translated source, as Hubble does for SNAT.
    let ip = uplink.ip.as_ref().unwrap();
    assert_eq!(
        (ip.source.as_str(), ip.source_xlated.as_str()),
        (POD_A_IP, NODE_IP)
    );
    assert_eq!(uplink.source.as_ref().unwrap().pod_name, "pod-a");
    assert_eq!(uplink.interface.as_ref().unwrap().name, "eth0");
    let reply = conn
        .iter()
        .find(|f| point(f) == TraceObservationPoint::ToEndpoint && f.is_reply == Some(true))
        .expect("reply delivered to pod-a");
    assert_eq!(reply.destination.as_ref().unwrap().pod_name, "pod-a");

    // last N: the newest N, oldest first.
    let last2 = flows_of(
        &get_flows(
            &agent.channel,
            GetFlowsRequest {
                number: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(last2.len(), 2);
    assert!(
        last2[0].time.as_ref().unwrap().as_nanos() <= last2[1].time.as_ref().unwrap().as_nanos()
    );
    // first N: the oldest N.
    let first3 = flows_of(
        &get_flows(
            &agent.channel,
            GetFlowsRequest {
                number: 3,
                first: true,
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(first3.len(), 3);
    let all = flows_of(
        &get_flows(&agent.channel, GetFlowsRequest::default())
            .await
            .unwrap(),
    );
    assert_eq!(first3[0].uuid, all[0].uuid);
    // since/until bound the time.
    let window = flows_of(
        &get_flows(
            &agent.channel,
            GetFlowsRequest {
                since: Some(before),
                until: Some(after),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert!(!window.is_empty());
    for f in &window {
        let t = f.time.as_ref().unwrap().as_nanos();
        assert!(t >= before.as_nanos() && t <= after.as_nanos());
    }
    let future = flows_of(
        &get_flows(
            &agent.channel,
            GetFlowsRequest {
                since: Some(after),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert!(
        future
            .iter()
            .all(|f| f.time.as_ref().unwrap().as_nanos() >= after.as_nanos())
    );

    assert!(
        agent.proc.stop().success(),
        "agent: {}",
        agent.proc.stderr()
    );
}

/// follow: new traffic arrives within 1 s (3 s allowed on a loaded machine); an invalid filter
/// is InvalidArgument naming its field; status, nodes, namespaces, health, the version header,
/// and extensions on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_filters_and_status() {
    if !require_root("follow_filters_and_status") {
        return;
    }
    let s = Scenario::build();
    let _dns = traffic::udp_server(&s.world(), addr(WORLD_IP, 53), true);
    let mut agent = start_agent(&s, &[]).await;
    let mut c = ObserverClient::new(agent.channel.clone());

    // Invalid filter.
    let bad = GetFlowsRequest {
        whitelist: vec![FlowFilter {
            source_ip: vec!["10.0.0.300".into()],
            ..FlowFilter::default()
        }],
        ..Default::default()
    };
    let err = c
        .get_flows(bad)
        .await
        .expect_err("invalid filter must be rejected");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("source_ip"), "{}", err.message());

    // Follow, with extensions requested. A follow stream starts wherever the history is when
    // the agent's stream task first runs, which can be after the response came back: `since`
    // (any time before the traffic; nothing went to 1.0.0.1 before) makes it start with the
    // history instead, so that no flow of the request below can be missed.
    let since = Timestamp::from_nanos(Timestamp::now().as_nanos() - 1_000_000_000);
    let mut req = tonic::Request::new(GetFlowsRequest {
        follow: true,
        since: Some(since),
        whitelist: ip_filter(WORLD_IP),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("flowscope-extensions", "true".parse().unwrap());
    let resp = c.get_flows(req).await.expect("follow");
    assert!(
        resp.metadata().get(SERVER_VERSION_HEADER).is_some(),
        "hubble-server-version header"
    );
    let mut stream = resp.into_inner();
    let t0 = std::time::Instant::now();
    let pod_a = s.pod_a();
    tokio::task::spawn_blocking(move || traffic::udp_request(&pod_a, addr(WORLD_IP, 53), b"q"))
        .await
        .unwrap()
        .expect("udp");
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(GetFlowsResponse {
                    response_types: Some(ResponseTypes::Flow(f)),
                    ..
                })) => return f,
                Some(Ok(_)) => continue,
                other => panic!("stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a followed flow within 10 s of the traffic");
    let took = t0.elapsed();
    println!("follow latency: {took:?}");
    // The spec is "within a second" (a 50 ms poll interval); 3 s leaves a loaded CI machine
    // room and still catches flows held back until some later event.
    assert!(
        took < Duration::from_secs(3),
        "followed flow after {took:?}, want < 1 s (3 s allowed for a loaded machine)"
    );
    assert_eq!(first.source.as_ref().unwrap().pod_name, "pod-a");
    assert!(first.extensions.is_some(), "extensions were requested");
    drop(stream);

    let status = c
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.max_flows, 4095);
    assert!(status.num_flows > 0 && status.seen_flows >= status.num_flows);
    assert!(status.version.contains("flowscope"));
    let nodes = c.get_nodes(GetNodesRequest {}).await.unwrap().into_inner();
    assert_eq!(nodes.nodes.len(), 1);
    assert_eq!(nodes.nodes[0].name, "node-1");
    let ns = c
        .get_namespaces(GetNamespacesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(ns.namespaces.iter().any(|n| n.namespace == "default"));
    let mut health = tonic_health::pb::health_client::HealthClient::new(agent.channel.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: HUBBLE_HEALTH_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    assert!(agent.proc.stop().success());
}

/// A deliberately slow follower gets a LostEvent accounting for what it missed, while a fast one
/// receives every flow; the pipeline is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_follower_gets_lost_events() {
    if !require_root("slow_follower_gets_lost_events") {
        return;
    }
    let s = Scenario::build();
    let _sink = traffic::udp_server(&s.world(), addr(WORLD_IP, 5001), false);
    // A short poll interval: the reader hands the history ~100 events at a time instead of
    // ~1,000 (a 50 ms poll at ~20,000 events/s), so the fast follower keeps up with a 1,024-entry
    // history without having to be scheduled within a millisecond of each burst. The slow one
    // still falls thousands of entries behind.
    let mut agent = start_agent(
        &s,
        &[
            "--aggregation",
            "none",
            "--history-size",
            "1024",
            "--poll-interval",
            "5ms",
        ],
    )
    .await;
    let filter = vec![FlowFilter {
        destination_port: vec!["5001".into()],
        ..FlowFilter::default()
    }];
    // `since` (any time before the traffic; nothing went to port 5001 before): both streams
    // start with the history and follow on from it, so neither misses the first flows if the
    // agent's stream task runs after the traffic started. Without it a follow stream starts
    // wherever the history is when that task first runs.
    let since = Timestamp::from_nanos(Timestamp::now().as_nanos() - 1_000_000_000);
    let req = GetFlowsRequest {
        follow: true,
        since: Some(since),
        whitelist: filter,
        ..Default::default()
    };
    let mut fast = ObserverClient::new(agent.channel.clone())
        .get_flows(req.clone())
        .await
        .unwrap()
        .into_inner();
    let slow_channel =
        client::unix_channel_with_window(&s.agent_socket(), Duration::from_secs(5), Some(65_535))
            .await
            .unwrap();
    let mut slow = ObserverClient::new(slow_channel)
        .get_flows(req)
        .await
        .unwrap()
        .into_inner();

    const PACKETS: usize = 3000;
    let pod_a = s.pod_a();
    let sender = tokio::task::spawn_blocking(move || {
        traffic::udp_send(
            &pod_a,
            addr(WORLD_IP, 5001),
            PACKETS,
            32,
            Some(Duration::from_micros(20)),
        )
    });
    // The fast follower reads everything as it comes (until every flow is accounted for: a loss
    // fails the asserts below rather than a timeout here).
    let want = PACKETS * 2; // from-endpoint and to-network
    let mut fast_flows = 0;
    let mut fast_lost = 0;
    while (fast_flows as u64).saturating_add(fast_lost) < want as u64 {
        match tokio::time::timeout(Duration::from_secs(10), fast.next()).await {
            Ok(Some(Ok(GetFlowsResponse {
                response_types: Some(ResponseTypes::Flow(_)),
                ..
            }))) => fast_flows += 1,
            Ok(Some(Ok(GetFlowsResponse {
                response_types: Some(ResponseTypes::LostEvents(l)),
                ..
            }))) => fast_lost += l.num_events_lost,
            Ok(Some(Ok(_))) => {}
            other => panic!("fast follower stream: {other:?} after {fast_flows} flows"),
        }
    }
    sender.await.unwrap().expect("send");
    // The slow one only starts reading now, until every flow is delivered or counted as lost.
    let (mut slow_flows, mut slow_lost) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while slow_flows.saturating_add(slow_lost) < want as u64 {
        match tokio::time::timeout_at(deadline, slow.next()).await {
            Ok(Some(Ok(r))) => match r.response_types {
                Some(ResponseTypes::Flow(_)) => slow_flows += 1,
                Some(ResponseTypes::LostEvents(l)) => {
                    assert_eq!(l.source, LostEventSource::HubbleRingBuffer as i32);
                    slow_lost += l.num_events_lost;
                }
                _ => {}
            },
            other => panic!(
                "slow follower stream: {other:?} after {slow_flows} flows and {slow_lost} lost, want {want}"
            ),
        }
    }
    println!(
        "fast: {fast_flows} flows, {fast_lost} lost; slow: {slow_flows} flows, {slow_lost} lost (history 1024)"
    );
    assert_eq!(fast_flows, want);
    assert_eq!(fast_lost, 0, "the fast follower kept up");
    assert!(slow_lost > 0, "the slow follower must be told what it lost");
    assert!(slow_flows < want as u64);
    assert!(
        slow_flows + slow_lost >= want as u64,
        "every flow is either delivered or counted as lost"
    );
    assert!(agent.proc.stop().success());
}

/// A bad endpoints file stops the agent before it attaches anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoints_file_fails_before_attaching() {
    if !require_root("bad_endpoints_file_fails_before_attaching") {
        return;
    }
    let s = Scenario::build();
    let bad = s.dir().join("bad.yaml");
    std::fs::write(
        &bad,
        "endpoints:\n  - namespace: default\n    pod: pod-a\n    ips: [not-an-ip]\n",
    )
    .unwrap();
    let socket = s.agent_socket();
    let mut p = Spawned::start(
        &s.node(),
        &bin_path("monitor-agent"),
        &[
            "--socket",
            socket.to_str().unwrap(),
            "--endpoints-file",
            bad.to_str().unwrap(),
        ],
    );
    let status = p.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    assert!(
        p.stderr().contains("bad.yaml"),
        "the error names the file: {}",
        p.stderr()
    );
    assert!(
        !p.stderr().contains("attached"),
        "nothing was attached: {}",
        p.stderr()
    );
}
