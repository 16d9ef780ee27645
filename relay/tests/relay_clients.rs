//! Many clients at once, a slow client among fast ones, an invalid filter.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use flowscope_proto::flow::FlowFilter;
use flowscope_proto::observer::GetFlowsRequest;
use flowscope_proto::observer::observer_client::ObserverClient;
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_at_once() {
    init_tracing();
    let agents: Vec<FakeAgent> = (0..3)
        .map(|i| {
            FakeAgent::start(
                &format!("node-{i}"),
                AgentOpts {
                    history: 100,
                    interval: Some(Duration::from_millis(25)),
                    ..Default::default()
                },
            )
        })
        .collect();
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let mut config = test_config(&peers);
    config.metrics_listen_address = Some("127.0.0.1:0".parse().unwrap());
    let relay = start_relay(config).await;
    wait_connected(&relay, 3).await;

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let addr = relay.addr;
        tasks.spawn(async move {
            let mut c = client(addr).await;
            if i % 2 == 0 {
                // History: 50 per node, exactly merged.
                let mut stream = c
                    .get_flows(GetFlowsRequest {
                        number: 50,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let msgs = read_all(&mut stream).await;
                let times = flow_times(&msgs);
                assert_eq!(times.len(), 150, "client {i}");
                assert!(
                    times.windows(2).all(|w| w[0] <= w[1]),
                    "client {i} out of order"
                );
            } else {
                // Follow: live flows from every node.
                let mut stream = c
                    .get_flows(GetFlowsRequest {
                        follow: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let mut seen = Vec::new();
                read_until(
                    &mut stream,
                    &mut seen,
                    LONG,
                    "live flows of all nodes",
                    |m| {
                        ["node-0", "node-1", "node-2"]
                            .iter()
                            .all(|n| flows_of(m, n).count() >= 10)
                    },
                )
                .await;
                assert!(
                    !seen.iter().any(|m| matches!(m, Msg::Lost { .. })),
                    "client {i} lost flows"
                );
            }
        });
    }
    while let Some(done) = tokio::time::timeout(LONG, tasks.join_next())
        .await
        .expect("clients finish in time")
    {
        done.unwrap();
    }
    println!("20 clients served in {:?}", started.elapsed());

    // Every client's stream is gone: the gauge is back to 0.
    let metrics = relay.running().metrics_addr().unwrap();
    let deadline = Instant::now() + LONG;
    loop {
        let text = http_get(metrics, "/metrics").await;
        if text.contains("flowscope_relay_clients 0") {
            assert!(
                text.contains("flowscope_relay_nodes{state=\"connected\"} 3"),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "clients gauge stuck:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(LONG, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_that_can_never_match_is_refused_before_any_agent_is_asked() {
    init_tracing();
    let agents: Vec<FakeAgent> = (0..2)
        .map(|i| FakeAgent::start(&format!("node-{i}"), AgentOpts::default()))
        .collect();
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let relay = start_relay(test_config(&peers)).await;
    wait_connected(&relay, 2).await;
    let mut c = client(relay.addr).await;
    let err = c
        .get_flows(GetFlowsRequest {
            blacklist: vec![FlowFilter {
                protocol: vec!["kafka".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("protocol") && err.message().contains("can never match"),
        "{}",
        err.message()
    );
    for agent in &agents {
        assert_eq!(agent.calls.get_flows.load(Ordering::SeqCst), 0);
    }
    // Hubble's rule: first and follow do not go together.
    let err = c
        .get_flows(GetFlowsRequest {
            number: 3,
            first: true,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("first cannot be specified with follow")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_filter_is_one_invalid_argument() {
    init_tracing();
    let agents: Vec<FakeAgent> = (0..3)
        .map(|i| FakeAgent::start(&format!("node-{i}"), AgentOpts::default()))
        .collect();
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let relay = start_relay(test_config(&peers)).await;
    wait_connected(&relay, 3).await;
    let mut c = client(relay.addr).await;
    let err = c
        .get_flows(GetFlowsRequest {
            follow: true,
            whitelist: vec![FlowFilter {
                source_ip: vec!["10.0.0.300".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("source_ip"), "{}", err.message());
    // Not a single agent was asked.
    for agent in &agents {
        assert_eq!(agent.calls.get_flows.load(Ordering::SeqCst), 0);
    }
    // A valid filter goes through to every agent.
    let mut stream = c
        .get_flows(GetFlowsRequest {
            whitelist: vec![FlowFilter {
                source_ip: vec!["10.0.0.0/8".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    read_all(&mut stream).await;
    for agent in &agents {
        assert_eq!(agent.calls.get_flows.load(Ordering::SeqCst), 1);
        let req = agent.calls.last_request.lock().unwrap().clone().unwrap();
        assert_eq!(req.whitelist[0].source_ip, vec!["10.0.0.0/8".to_string()]);
    }
    relay.stop().await;
}

/// A client whose HTTP/2 windows are tiny: it can only have a few KB in
/// flight, so when it stops reading the relay's buffer for it fills up.
async fn small_window_client(addr: std::net::SocketAddr) -> ObserverClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    ObserverClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_gets_lost_events_fast_client_gets_everything() {
    init_tracing();
    // 3 agents x 250 flows/s x ~2 KB.
    let agents: Vec<FakeAgent> = (0..3)
        .map(|i| {
            FakeAgent::start(
                &format!("node-{i}"),
                AgentOpts {
                    interval: Some(Duration::from_millis(4)),
                    payload: 2048,
                    ..Default::default()
                },
            )
        })
        .collect();
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let mut config = test_config(&peers);
    config.client_buffer_len = 512;
    let relay = start_relay(config).await;
    wait_connected(&relay, 3).await;

    let mut fast = client(relay.addr)
        .await
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut slow = small_window_client(relay.addr)
        .await
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // The fast client reads everything for 4 s while the slow one reads
    // nothing for 3 s, then catches up.
    let fast_task = tokio::spawn(async move {
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_secs(10), fast.message()).await {
                Ok(Ok(Some(resp))) => seen.push(classify(resp)),
                other => panic!("fast client: {other:?}"),
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut slow_seen = Vec::new();
    read_until(&mut slow, &mut slow_seen, LONG, "a LostEvent", |m| {
        m.iter().any(|m| matches!(m, Msg::Lost { .. }))
    })
    .await;
    let lost: u64 = slow_seen
        .iter()
        .filter_map(|m| match m {
            Msg::Lost { node, count } => {
                assert_eq!(node, "test-relay", "the relay reports its own loss");
                Some(*count)
            }
            _ => None,
        })
        .sum();
    assert!(lost > 0);

    let fast_seen = fast_task.await.unwrap();
    assert!(
        !fast_seen.iter().any(|m| matches!(m, Msg::Lost { .. })),
        "the fast client lost flows"
    );
    let fast_flows = flow_times(&fast_seen).len();
    // No gaps in any node's sequence for the fast client.
    for ((node, _), mut seqs) in sequences(&fast_seen) {
        seqs.sort_unstable();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "fast client missed flows of {node}"
        );
    }
    println!(
        "fast client: {fast_flows} flows, none lost; slow client: {} messages read, {lost} flows reported lost",
        slow_seen.len()
    );
    assert!(fast_flows > 1500, "only {fast_flows} flows in 4 s");
    let produced: u64 = agents.iter().map(FakeAgent::produced).sum();
    assert!(produced > 0);
    drop(slow);
    relay.stop().await;
}

/// A field mask naming no field of flow.Flow is refused once by the relay, with the agents'
/// own message, before any agent is asked; a valid one goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_field_mask_is_one_invalid_argument() {
    init_tracing();
    let agents: Vec<FakeAgent> = (0..2)
        .map(|i| FakeAgent::start(&format!("node-{i}"), AgentOpts::default()))
        .collect();
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let relay = start_relay(test_config(&peers)).await;
    wait_connected(&relay, 2).await;
    let mut c = client(relay.addr).await;
    let mask = |paths: &[&str]| {
        Some(flowscope_proto::wkt::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })
    };
    let err = c
        .get_flows(GetFlowsRequest {
            field_mask: mask(&["time", "source.podname"]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Word for word what an agent says (flowscope_proto::fieldmask, shared by both).
    let agent_says = flowscope_proto::fieldmask::FlowMask::new(&["time", "source.podname"])
        .unwrap_err()
        .to_string();
    assert_eq!(err.message(), agent_says);
    assert!(
        err.message().contains("\"source.podname\""),
        "{}",
        err.message()
    );
    for agent in &agents {
        assert_eq!(agent.calls.get_flows.load(Ordering::SeqCst), 0);
    }
    let mut stream = c
        .get_flows(GetFlowsRequest {
            field_mask: mask(&["time", "source.pod_name", "ip_trace_id"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let _ = read_all(&mut stream).await;
    for agent in &agents {
        assert_eq!(agent.calls.get_flows.load(Ordering::SeqCst), 1);
    }
    relay.stop().await;
}
