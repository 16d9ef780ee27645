//! Three agents behind one relay: history and live flows merged in time
//! order; `number`, `first`, `since`, `until` and field masks pass through.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flowscope_proto::observer::GetFlowsRequest;
use flowscope_proto::relay::NodeState;
use flowscope_proto::wkt::{FieldMask, Timestamp};

fn three_agents(history: usize, interval: Option<Duration>) -> Vec<FakeAgent> {
    (0..3)
        .map(|i| {
            FakeAgent::start(
                &format!("node-{i}"),
                AgentOpts {
                    history,
                    // Interleave the histories: node-0 at +0 ms, node-1 at +3 ms, ...
                    history_offset: Duration::from_millis(3 * i as u64),
                    interval,
                    ..Default::default()
                },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_three_agents_is_merged_in_time_order() {
    init_tracing();
    let agents = three_agents(200, None);
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let relay = start_relay(test_config(&peers)).await;
    wait_connected(&relay, 3).await;
    let mut client = client(relay.addr).await;

    let started = Instant::now();
    let mut stream = client
        .get_flows(GetFlowsRequest {
            number: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let msgs = read_all(&mut stream).await;
    let elapsed = started.elapsed();

    // Hubble's first message: the nodes we get flows from.
    match &msgs[0] {
        Msg::Status { state, names, .. } => {
            assert_eq!(*state, NodeState::NodeConnected);
            let mut names = names.clone();
            names.sort();
            assert_eq!(names, ["node-0", "node-1", "node-2"]);
        }
        other => panic!("first message {other:?}"),
    }
    let times = flow_times(&msgs);
    assert_eq!(times.len(), 600, "number applies per node");
    // Exact order although the window (100) is smaller than the result:
    // the window releases as soon as every node has a flow waiting.
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "flows out of order");
    for node in ["node-0", "node-1", "node-2"] {
        assert_eq!(flows_of(&msgs, node).count(), 200);
    }
    println!("merged 600 history flows from 3 agents in {elapsed:?}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_since_until_and_field_mask_pass_through() {
    init_tracing();
    let agents = three_agents(100, None);
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let relay = start_relay(test_config(&peers)).await;
    wait_connected(&relay, 3).await;
    let mut client = client(relay.addr).await;

    // first + number: the 5 oldest of each node.
    let mut all = client
        .get_flows(GetFlowsRequest {
            number: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let all_msgs = read_all(&mut all).await;
    let all = flow_times(&all_msgs);
    let mut stream = client
        .get_flows(GetFlowsRequest {
            number: 5,
            first: true,
            field_mask: Some(FieldMask {
                paths: vec!["time".into(), "uuid".into(), "ip_trace_id".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let msgs = read_all(&mut stream).await;
    let times = flow_times(&msgs);
    // The 5 oldest of each node, merged.
    let mut expected: Vec<i64> = ["node-0", "node-1", "node-2"]
        .iter()
        .flat_map(|node| {
            flow_times(
                &flows_of(&all_msgs, node)
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    expected.sort_unstable();
    assert_eq!(times, expected, "the 5 oldest of each node, in order");
    for agent in &agents {
        let req = agent.calls.last_request.lock().unwrap().clone().unwrap();
        assert!(req.first);
        assert_eq!(req.number, 5);
        assert_eq!(
            req.field_mask.unwrap().paths.len(),
            3,
            "field mask forwarded"
        );
    }

    // since/until: a window in the middle.
    let since = all[30];
    let until = all[59];
    let mut stream = client
        .get_flows(GetFlowsRequest {
            since: Some(Timestamp::from_nanos(since)),
            until: Some(Timestamp::from_nanos(until)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let times = flow_times(&read_all(&mut stream).await);
    assert_eq!(times, all[30..60].to_vec());

    // since after until is refused once.
    let err = client
        .get_flows(GetFlowsRequest {
            since: Some(Timestamp::from_nanos(until)),
            until: Some(Timestamp::from_nanos(since)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_flows_of_three_agents_arrive_in_time_order() {
    init_tracing();
    let agents = three_agents(0, Some(Duration::from_millis(7)));
    let peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    let mut config = test_config(&peers);
    config.sort_buffer_drain_timeout = Duration::from_secs(2);
    let drain = config.sort_buffer_drain_timeout;
    let relay = start_relay(config).await;
    wait_connected(&relay, 3).await;
    let mut client = client(relay.addr).await;
    let mut stream = client
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut msgs = Vec::new();
    read_until(&mut stream, &mut msgs, LONG, "600 live flows", |m| {
        flow_times(m).len() >= 600
    })
    .await;
    for node in ["node-0", "node-1", "node-2"] {
        assert!(
            flows_of(&msgs, node).count() > 100,
            "{node} under-represented"
        );
    }
    let times = flow_times(&msgs);
    let inversions = times.windows(2).filter(|w| w[1] < w[0]).count();
    let worst = times.windows(2).map(|w| w[0] - w[1]).max().unwrap_or(0);
    // In order, up to what the sort window allows.
    assert!(
        worst < drain.as_nanos() as i64,
        "an inversion of {worst} ns exceeds the sort window"
    );
    println!(
        "live: {} flows, {inversions} inversions, worst {worst} ns",
        times.len()
    );
    // No gaps: each node's flows are consecutive.
    for ((node, _), seqs) in sequences(&msgs) {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert!(
            sorted.windows(2).all(|w| w[1] == w[0] + 1),
            "{node}: missing flows"
        );
    }
    drop(stream);
    relay.stop().await;
}
