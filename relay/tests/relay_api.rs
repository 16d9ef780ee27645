//! The rest of the relay's API: ServerStatus, GetNodes, GetNamespaces,
//! health, reflection, the version header, metrics, unix socket agents.

mod common;

use std::time::Duration;

use common::*;
use flowscope_proto::observer::{
    GetAgentEventsRequest, GetFlowsRequest, GetNamespacesRequest, GetNodesRequest,
    ServerStatusRequest,
};
use flowscope_proto::relay::NodeState;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Addresses nothing listens on.
fn dead_peers(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .enumerate()
        .map(|(i, l)| format!("dead-{i:02}={}", l.local_addr().unwrap()))
        .collect()
    // The listeners close here: connections are refused.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_status_and_nodes_sum_the_cluster() {
    init_tracing();
    let agents: Vec<FakeAgent> = (0..2)
        .map(|i| {
            FakeAgent::start(
                &format!("node-{i}"),
                AgentOpts {
                    history: 10 * (i + 1),
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut peers: Vec<String> = agents.iter().map(FakeAgent::peer).collect();
    peers.extend(dead_peers(12));
    let relay = start_relay(test_config(&peers)).await;
    wait_connected(&relay, 2).await;
    let mut c = client(relay.addr).await;

    let response = c.server_status(ServerStatusRequest {}).await.unwrap();
    let version = response
        .metadata()
        .get(flowscope_proto::RELAY_VERSION_HEADER)
        .expect("hubble-relay-version header")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let status = response.into_inner();
    assert_eq!(status.num_connected_nodes, Some(2));
    assert_eq!(status.num_unavailable_nodes, Some(12));
    assert_eq!(status.unavailable_nodes.len(), 10, "at most 10 listed");
    assert!(
        status
            .unavailable_nodes
            .iter()
            .all(|n| n.starts_with("dead-"))
    );
    assert_eq!(status.num_flows, 30);
    assert_eq!(status.seen_flows, 30);
    assert_eq!(status.max_flows, 200_000);
    assert!(status.uptime_ns > 0);
    assert!((status.flows_rate - 3.0).abs() < 1e-9);
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));

    let nodes = c
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 14);
    let node1 = nodes
        .iter()
        .find(|n| n.name == "node-1")
        .expect("named by the agent");
    assert_eq!(node1.state, NodeState::NodeConnected as i32);
    assert_eq!(node1.version, "fake-agent");
    assert_eq!(node1.address, agents[1].peer());
    assert_eq!(node1.num_flows, 20);
    assert!(node1.uptime_ns > 0);
    assert!(!node1.tls.clone().unwrap().enabled);
    let dead = nodes.iter().find(|n| n.name == "dead-03").unwrap();
    assert_eq!(dead.state, NodeState::NodeUnavailable as i32);

    let namespaces = c
        .get_namespaces(GetNamespacesRequest {})
        .await
        .unwrap()
        .into_inner()
        .namespaces;
    let names: Vec<_> = namespaces.iter().map(|n| n.namespace.as_str()).collect();
    assert_eq!(
        names,
        ["default", "ns-node-0", "ns-node-1"],
        "merged and deduplicated"
    );

    let err = c
        .get_agent_events(GetAgentEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    // The unavailable ones are announced at the start of a stream.
    let mut stream = c
        .get_flows(GetFlowsRequest {
            number: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let msgs = read_all(&mut stream).await;
    assert!(has_status(&msgs, NodeState::NodeUnavailable, "dead-11"));
    assert_eq!(flow_times(&msgs).len(), 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_node_availability_and_reflection_lists_services() {
    init_tracing();
    let mut agent = FakeAgent::start("node-0", AgentOpts::default());
    let relay = start_relay(test_config(&[agent.peer()])).await;
    wait_connected(&relay, 1).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", relay.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel.clone());
    let check = |service: &str| HealthCheckRequest {
        service: service.to_string(),
    };
    let wait_status = |want: ServingStatus| {
        let mut health = health.clone();
        async move {
            let deadline = std::time::Instant::now() + LONG;
            loop {
                let got = health
                    .check(check(flowscope_proto::HUBBLE_HEALTH_SERVICE))
                    .await
                    .unwrap()
                    .into_inner()
                    .status;
                if got == want as i32 {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "health never {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_status(ServingStatus::Serving).await;
    let overall = HealthClient::new(channel.clone())
        .check(check(""))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(overall, ServingStatus::Serving as i32);
    agent.kill();
    wait_status(ServingStatus::NotServing).await;
    agent.restart();
    wait_status(ServingStatus::Serving).await;

    // Reflection (v1 and v1alpha) lists the Observer service.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("{response:?}");
    };
    let services: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for wanted in ["observer.Observer", "grpc.health.v1.Health"] {
        assert!(services.contains(&wanted), "{services:?}");
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "observer.Observer".into(),
            )),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        assert!(response.message_response.is_some());
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_on_a_unix_socket() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let agent = FakeAgent::start(
        "node-unix",
        AgentOpts {
            history: 5,
            unix: Some(dir.path().join("agent.sock")),
            ..Default::default()
        },
    );
    assert!(agent.peer().starts_with("unix:///"));
    let relay = start_relay(test_config(&[agent.peer()])).await;
    wait_connected(&relay, 1).await;
    let mut c = client(relay.addr).await;
    let mut stream = c
        .get_flows(GetFlowsRequest {
            number: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let msgs = read_all(&mut stream).await;
    assert_eq!(flows_of(&msgs, "node-unix").count(), 5);
    relay.stop().await;
}
