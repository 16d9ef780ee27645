//! TLS: mTLS on the relay's listener (right certificate accepted, wrong CA
//! refused, plain text refused), mTLS towards agents, certificate reload.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flowscope_proto::observer::{GetFlowsRequest, ServerStatusRequest};
use flowscope_proto::relay::NodeState;
use flowscope_relay::{ClientTlsFiles, ServerTlsFiles};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_listener_accepts_right_certificate_only() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("relay CA");
    let other = Ca::new("someone else's CA");
    let ca_path = ca.write(dir.path(), "ca");
    let (server_cert, server_key) =
        ca.write_leaf(dir.path(), "server", &["localhost", "127.0.0.1"], false);
    let (client_cert, client_key) = ca.write_leaf(dir.path(), "client", &["flowctl"], true);
    let (wrong_cert, wrong_key) = other.write_leaf(dir.path(), "wrong", &["flowctl"], true);

    let agent = FakeAgent::start(
        "node-0",
        AgentOpts {
            history: 10,
            ..Default::default()
        },
    );
    let mut config = test_config(&[agent.peer()]);
    config.server_tls = Some(ServerTlsFiles {
        cert: server_cert,
        key: server_key,
        client_ca: vec![ca_path.clone()],
    });
    let relay = start_relay(config).await;
    wait_connected(&relay, 1).await;

    // Right certificate: accepted, flows.
    let mut good = tls_client(
        relay.addr,
        &ClientTlsFiles {
            ca: vec![ca_path.clone()],
            cert: Some(client_cert),
            key: Some(client_key),
            server_name: None,
        },
    );
    let status = good.server_status(ServerStatusRequest {}).await.unwrap();
    assert_eq!(status.get_ref().num_connected_nodes, Some(1));
    let mut stream = good
        .get_flows(GetFlowsRequest {
            number: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(flow_times(&read_all(&mut stream).await).len(), 10);

    // Client certificate from another CA: refused.
    let mut wrong = tls_client(
        relay.addr,
        &ClientTlsFiles {
            ca: vec![ca_path.clone()],
            cert: Some(wrong_cert),
            key: Some(wrong_key),
            server_name: None,
        },
    );
    let err = wrong
        .server_status(ServerStatusRequest {})
        .await
        .unwrap_err();
    println!("wrong CA: {err}");
    // The handshake fails (TLS 1.3: the client learns it when the server's
    // alert closes the connection): Unavailable or Cancelled, never a reply.
    assert!(
        matches!(
            err.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
        "{err}"
    );

    // TLS without a client certificate: refused.
    let mut anonymous = tls_client(
        relay.addr,
        &ClientTlsFiles {
            ca: vec![ca_path.clone()],
            ..Default::default()
        },
    );
    assert!(
        anonymous
            .server_status(ServerStatusRequest {})
            .await
            .is_err()
    );

    // Plain text: refused (the connection attempt or the first call fails).
    let plain = tonic::transport::Channel::from_shared(format!("http://{}", relay.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut c = flowscope_proto::observer::observer_client::ObserverClient::new(channel);
        assert!(c.server_status(ServerStatusRequest {}).await.is_err());
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_towards_agents() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("agents CA");
    let other = Ca::new("other CA");
    let ca_path = ca.write(dir.path(), "ca");
    let (agent_cert, agent_key) =
        ca.write_leaf(dir.path(), "agent", &["node-0.hubble-grpc.test"], false);
    let (relay_cert, relay_key) = ca.write_leaf(dir.path(), "relay-client", &["relay"], true);
    let (wrong_cert, wrong_key) = other.write_leaf(dir.path(), "wrong-client", &["relay"], true);

    let agent = FakeAgent::start(
        "node-0",
        AgentOpts {
            history: 20,
            tls: Some(ServerTlsFiles {
                cert: agent_cert,
                key: agent_key,
                client_ca: vec![ca_path.clone()],
            }),
            ..Default::default()
        },
    );

    // With the right client certificate: connected, flows.
    let mut config = test_config(&[agent.peer()]);
    config.client_tls = Some(ClientTlsFiles {
        ca: vec![ca_path.clone()],
        cert: Some(relay_cert),
        key: Some(relay_key),
        server_name: Some("node-0.hubble-grpc.test".into()),
    });
    let relay = start_relay(config).await;
    wait_connected(&relay, 1).await;
    let mut c = client(relay.addr).await;
    let mut stream = c
        .get_flows(GetFlowsRequest {
            number: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(flow_times(&read_all(&mut stream).await).len(), 20);
    let nodes = c
        .get_nodes(flowscope_proto::observer::GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let tls = nodes[0].tls.clone().unwrap();
    assert!(tls.enabled);
    assert_eq!(tls.server_name, "node-0.hubble-grpc.test");
    relay.stop().await;

    // With a client certificate from another CA: the agent refuses, the
    // relay reports the node unavailable.
    let msgs = first_20_through_a_relay(
        &agent.peer(),
        ClientTlsFiles {
            ca: vec![ca_path.clone()],
            cert: Some(wrong_cert),
            key: Some(wrong_key),
            server_name: Some("node-0.hubble-grpc.test".into()),
        },
    )
    .await;
    assert!(
        has_status(&msgs, NodeState::NodeUnavailable, &agent.peer()),
        "{msgs:?}"
    );
    assert!(flow_times(&msgs).is_empty());

    // The right client certificate, but the agent's certificate does not name the server the
    // relay expects (`--tls-server-name`): the relay refuses the agent and reports the node
    // unavailable.
    let (good_cert, good_key) = ca.write_leaf(dir.path(), "relay-client-2", &["relay"], true);
    let msgs = first_20_through_a_relay(
        &agent.peer(),
        ClientTlsFiles {
            ca: vec![ca_path.clone()],
            cert: Some(good_cert),
            key: Some(good_key),
            server_name: Some("node-1.hubble-grpc.test".into()),
        },
    )
    .await;
    assert!(
        has_status(&msgs, NodeState::NodeUnavailable, &agent.peer()),
        "an agent whose certificate names another server: {msgs:?}"
    );
    assert!(flow_times(&msgs).is_empty());
}

/// What a client reading 20 flows gets through a relay that dials `peer` with `tls`.
async fn first_20_through_a_relay(peer: &str, tls: ClientTlsFiles) -> Vec<Msg> {
    let mut config = test_config(&[peer.to_owned()]);
    config.client_tls = Some(tls);
    let relay = start_relay(config).await;
    let mut c = client(relay.addr).await;
    let mut stream = c
        .get_flows(GetFlowsRequest {
            number: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let msgs = read_all(&mut stream).await;
    relay.stop().await;
    msgs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_certificate_is_reloaded_when_files_change() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca1 = Ca::new("CA 1");
    let ca2 = Ca::new("CA 2");
    let ca1_path = ca1.write(dir.path(), "ca1");
    let ca2_path = ca2.write(dir.path(), "ca2");
    let (cert, key) = ca1.write_leaf(dir.path(), "server", &["localhost"], false);

    let agent = FakeAgent::start("node-0", AgentOpts::default());
    let mut config = test_config(&[agent.peer()]);
    config.server_tls = Some(ServerTlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: vec![],
    });
    let relay = start_relay(config).await;
    let trusts = |ca: &std::path::Path| ClientTlsFiles {
        ca: vec![ca.to_path_buf()],
        ..Default::default()
    };
    let mut c1 = tls_client(relay.addr, &trusts(&ca1_path));
    c1.server_status(ServerStatusRequest {}).await.unwrap();
    assert!(
        tls_client(relay.addr, &trusts(&ca2_path))
            .server_status(ServerStatusRequest {})
            .await
            .is_err()
    );

    // Rotate to a certificate from CA 2 (written to a temp file and renamed,
    // as a careful rotation does).
    let (cert2, key2) = ca2.leaf(&["localhost"], false);
    std::fs::write(dir.path().join("tmp-key"), key2).unwrap();
    std::fs::write(dir.path().join("tmp-cert"), cert2).unwrap();
    std::fs::rename(dir.path().join("tmp-key"), &key).unwrap();
    std::fs::rename(dir.path().join("tmp-cert"), &cert).unwrap();

    let rotated = Instant::now();
    loop {
        let ok = tls_client(relay.addr, &trusts(&ca2_path))
            .server_status(ServerStatusRequest {})
            .await
            .is_ok();
        if ok {
            break;
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(10),
            "new certificate not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "new certificate served {:?} after rotation",
        rotated.elapsed()
    );
    // New connections trusting only CA 1 now fail.
    assert!(
        tls_client(relay.addr, &trusts(&ca1_path))
            .server_status(ServerStatusRequest {})
            .await
            .is_err()
    );
    relay.stop().await;
}
