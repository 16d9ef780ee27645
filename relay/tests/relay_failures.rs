//! Nodes failing, coming back, joining and leaving while a client follows;
//! the relay itself restarting.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flowscope_proto::observer::GetFlowsRequest;
use flowscope_proto::relay::NodeState;

fn live_agent(name: &str) -> FakeAgent {
    FakeAgent::start(
        name,
        AgentOpts {
            interval: Some(Duration::from_millis(20)),
            ..Default::default()
        },
    )
}

fn follow() -> GetFlowsRequest {
    GetFlowsRequest {
        follow: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_is_reported_and_comes_back() {
    init_tracing();
    let mut agents: Vec<FakeAgent> = (0..3).map(|i| live_agent(&format!("node-{i}"))).collect();
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let relay = start_relay(test_config(&peers)).await;
    wait_connected(&relay, 3).await;
    let mut client = client(relay.addr).await;
    let mut stream = client.get_flows(follow()).await.unwrap().into_inner();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, LONG, "flows from all three", |m| {
        ["node-0", "node-1", "node-2"]
            .iter()
            .all(|n| flows_of(m, n).count() >= 5)
    })
    .await;

    // Kill node-1: reported unavailable promptly (10 s allowed), the others go on.
    let killed = Instant::now();
    agents[1].kill();
    read_until(
        &mut stream,
        &mut seen,
        Duration::from_secs(10),
        "node-1 unavailable",
        |m| has_status(m, NodeState::NodeUnavailable, "node-1"),
    )
    .await;
    let reported = killed.elapsed();
    println!("node-1 reported unavailable {reported:?} after the kill");
    assert!(
        has_status(&seen, NodeState::NodeError, "node-1"),
        "NODE_ERROR first: {:?}",
        seen.iter()
            .filter(|m| !matches!(m, Msg::Flow { .. }))
            .collect::<Vec<_>>()
    );
    let mark = seen.len();
    read_until(&mut stream, &mut seen, LONG, "flows from the others", |m| {
        flows_of(m, "node-0").count() >= 10 && flows_of(m, "node-2").count() >= 10
    })
    .await;
    assert_eq!(flows_of(&seen[mark..], "node-1").count(), 0);

    // Restart it: NODE_CONNECTED and its flows again (a new incarnation).
    agents[1].restart();
    let mark = seen.len();
    read_until(
        &mut stream,
        &mut seen,
        LONG,
        "node-1 connected again",
        |m| has_status(m, NodeState::NodeConnected, "node-1"),
    )
    .await;
    read_until(&mut stream, &mut seen, LONG, "node-1 flows again", |m| {
        flows_of(m, "node-1").count() >= 5
    })
    .await;
    let incarnations: Vec<u64> = sequences(&seen[mark..])
        .keys()
        .filter(|(n, _)| n == "node-1")
        .map(|(_, inc)| *inc)
        .collect();
    assert_eq!(incarnations, vec![2], "flows of the restarted agent");

    // The pool agrees.
    let node1 = relay
        .running()
        .pool()
        .peers()
        .into_iter()
        .find(|p| p.name() == "node-1")
        .unwrap();
    assert_eq!(
        node1.status().state,
        flowscope_relay::pool::PeerState::Connected
    );
    drop(stream);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_down_at_start_joins_when_it_comes_up() {
    init_tracing();
    let up = live_agent("node-up");
    let mut down = live_agent("node-down");
    let down_peer = down.peer();
    down.kill();
    let relay = start_relay(test_config(&[up.peer(), format!("node-down={down_peer}")])).await;
    wait_connected(&relay, 1).await;
    let mut client = client(relay.addr).await;
    let mut stream = client.get_flows(follow()).await.unwrap().into_inner();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, LONG, "initial statuses", |m| {
        has_status(m, NodeState::NodeConnected, "node-up")
            && has_status(m, NodeState::NodeUnavailable, "node-down")
    })
    .await;
    // Hubble's order: CONNECTED first, then UNAVAILABLE, before any flow.
    assert!(matches!(
        &seen[0],
        Msg::Status {
            state: NodeState::NodeConnected,
            ..
        }
    ));
    assert!(matches!(
        &seen[1],
        Msg::Status {
            state: NodeState::NodeUnavailable,
            ..
        }
    ));
    down.restart();
    read_until(&mut stream, &mut seen, LONG, "node-down connected", |m| {
        has_status(m, NodeState::NodeConnected, "node-down") && flows_of(m, "node-down").count() > 3
    })
    .await;
    drop(stream);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_found_by_dns_join_and_leave_a_following_stream() {
    init_tracing();
    let a = live_agent("node-a");
    let b = live_agent("node-b");
    let resolver = Arc::new(FakeResolver::default());
    resolver.answers.lock().unwrap().push(a.addr());
    let mut config = test_config(&[]);
    config.peer_dns = vec!["agents.test:4244".parse().unwrap()];
    config.resolver = resolver.clone();
    config.dns_refresh_interval = Duration::from_millis(200);
    let relay = start_relay(config).await;
    wait_connected(&relay, 1).await;
    let mut client = client(relay.addr).await;
    let mut stream = client.get_flows(follow()).await.unwrap().into_inner();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, LONG, "node-a flows", |m| {
        flows_of(m, "node-a").count() >= 3
    })
    .await;
    // The agent's own name replaced its address (GetNodes on connect).
    assert!(
        has_status(&seen, NodeState::NodeConnected, "node-a"),
        "{:?}",
        &seen[0]
    );

    // node-b appears in DNS mid-follow.
    resolver.answers.lock().unwrap().push(b.addr());
    read_until(&mut stream, &mut seen, LONG, "node-b joins", |m| {
        has_status(m, NodeState::NodeConnected, "node-b") && flows_of(m, "node-b").count() >= 3
    })
    .await;

    // node-a leaves DNS: NODE_GONE, then only node-b.
    resolver
        .answers
        .lock()
        .unwrap()
        .retain(|addr| *addr != a.addr());
    read_until(&mut stream, &mut seen, LONG, "node-a gone", |m| {
        has_status(m, NodeState::NodeGone, "node-a")
    })
    .await;
    let mark = seen.len();
    read_until(&mut stream, &mut seen, LONG, "more node-b flows", |m| {
        flows_of(m, "node-b").count() >= 10
    })
    .await;
    assert_eq!(flows_of(&seen[mark..], "node-a").count(), 0);
    drop(stream);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_on_the_same_port() {
    init_tracing();
    let agents: Vec<FakeAgent> = (0..2).map(|i| live_agent(&format!("node-{i}"))).collect();
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let relay = start_relay(test_config(&peers)).await;
    let addr = relay.addr;
    wait_connected(&relay, 2).await;
    let mut c = client(addr).await;
    let mut stream = c.get_flows(follow()).await.unwrap().into_inner();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, LONG, "flows", |m| {
        flow_times(m).len() >= 10
    })
    .await;

    // Stop: the following stream ends with Unavailable, promptly.
    let stopping = Instant::now();
    relay.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .expect("stream ends when the relay stops");
    assert!(
        matches!(end, Some(tonic::Code::Unavailable) | None),
        "stream ended with {end:?}"
    );
    println!("relay stopped in {:?}", stopping.elapsed());

    // Start again on the same port: new clients get flows right away (the
    // first request waits for the first probes rather than report every
    // node unavailable).
    let mut config = test_config(&peers);
    config.listen_address = flowscope_relay::ListenAddress { addr, any: false };
    let relay = start_relay(config).await;
    let mut c = client(addr).await;
    let mut stream = c.get_flows(follow()).await.unwrap().into_inner();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, LONG, "flows after restart", |m| {
        flows_of(m, "node-0").count() >= 3 && flows_of(m, "node-1").count() >= 3
    })
    .await;
    match &seen[0] {
        Msg::Status { state, names, .. } => {
            assert_eq!(*state, NodeState::NodeConnected);
            assert_eq!(names.len(), 2, "{names:?}");
        }
        other => panic!("{other:?}"),
    }
    drop(stream);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_failing_together_are_reported_once() {
    init_tracing();
    let mut agents: Vec<FakeAgent> = (0..3).map(|i| live_agent(&format!("node-{i}"))).collect();
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let mut config = test_config(&peers);
    config.status_aggregation_window = Duration::from_secs(3);
    let relay = start_relay(config).await;
    wait_connected(&relay, 3).await;
    let mut client = client(relay.addr).await;
    let mut stream = client.get_flows(follow()).await.unwrap().into_inner();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, LONG, "flows", |m| {
        flow_times(m).len() >= 20
    })
    .await;
    agents[0].kill();
    agents[2].kill();
    let both = |m: &Msg, state: NodeState| {
        matches!(m, Msg::Status { state: s, names, .. }
            if *s == state && names.contains(&"node-0".to_string()) && names.contains(&"node-2".to_string()))
    };
    read_until(
        &mut stream,
        &mut seen,
        Duration::from_secs(10),
        "one NODE_UNAVAILABLE for both",
        |m| m.iter().any(|m| both(m, NodeState::NodeUnavailable)),
    )
    .await;
    let unavailable_events = seen
        .iter()
        .filter(|m| {
            matches!(
                m,
                Msg::Status {
                    state: NodeState::NodeUnavailable,
                    ..
                }
            )
        })
        .count();
    assert_eq!(unavailable_events, 1, "coalesced into one event");
    // Identical stream errors are one NODE_ERROR too.
    let errors: Vec<_> = seen
        .iter()
        .filter(|m| {
            matches!(
                m,
                Msg::Status {
                    state: NodeState::NodeError,
                    ..
                }
            )
        })
        .collect();
    println!("errors: {errors:?}");
    assert_eq!(errors.len(), 1, "one NODE_ERROR naming both");
    drop(stream);
    relay.stop().await;
}
