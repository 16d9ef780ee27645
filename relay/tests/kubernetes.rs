//! `--peer-pods`: the relay finds the agents as pods through the Kubernetes API.
//!
//! No Kubernetes API server can run on the machines that run these tests: the fake one of
//! `monitor-agent/tests/support/fake_apiserver.rs` stands in for it (the list and watch protocol
//! over real HTTP, from a kubeconfig file as a user would write one), and fake agents (real
//! Observer servers) are the pods' containers.

mod common;
#[path = "../../monitor-agent/tests/support/fake_apiserver.rs"]
mod fake_apiserver;

use std::time::{Duration, Instant};

use common::*;
use fake_apiserver::FakeApiServer;
use flowscope_relay::kubernetes::{PodDiscovery, PortRef};
use serde_json::{Value, json};

const SELECTOR: &str = "app.kubernetes.io/name=flowscope-agent";

/// An agent pod of the DaemonSet, as the API server returns it: on `node`, with the host's
/// address (127.0.0.1 here) and the agent's port as the container port `grpc`.
fn agent_pod(node: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("flowscope-agent-{node}"), "generateName": "flowscope-agent-",
            "namespace": "flowscope", "uid": format!("uid-{node}"),
            "labels": {"app.kubernetes.io/name": "flowscope-agent",
                       "app.kubernetes.io/part-of": "flowscope",
                       "controller-revision-hash": "6d5f8c7b9", "pod-template-generation": "1"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                "name": "flowscope-agent", "uid": "ds-uid", "controller": true,
                "blockOwnerDeletion": true}]
        },
        "spec": {"nodeName": node, "hostNetwork": true, "serviceAccountName": "flowscope-agent",
                 "containers": [{"name": "agent", "image": "flowscope:0.1.0",
                     "ports": [{"name": "grpc", "containerPort": port, "protocol": "TCP"},
                               {"name": "metrics", "containerPort": 9965, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                   "podIPs": [{"ip": "127.0.0.1"}]}
    })
}

/// A kubeconfig for the fake server, whose context's namespace is `flowscope`.
fn kubeconfig(api: &FakeApiServer, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: relay, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: relay, namespace: flowscope}}}}]\n\
             current-context: fake\n",
            api.url()
        ),
    )
    .unwrap();
    path
}

/// The pool's peers as (name, address), sorted.
fn peers(relay: &TestRelay) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = relay
        .running()
        .pool()
        .peers()
        .iter()
        .map(|p| (p.name(), p.address().to_owned()))
        .collect();
    p.sort();
    p
}

async fn wait_peers(relay: &TestRelay, want: &[(String, String)]) {
    let start = Instant::now();
    while peers(relay) != want {
        assert!(
            start.elapsed() < LONG,
            "peers {:?}, want {want:?}",
            peers(relay)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_found_and_followed_as_pods() {
    init_tracing();
    let a = FakeAgent::start("node-a", AgentOpts::default());
    let b = FakeAgent::start("node-b", AgentOpts::default());
    let c = FakeAgent::start("node-c", AgentOpts::default());
    let api = FakeApiServer::start().await;
    let mut other = agent_pod("node-a", 1);
    other["metadata"]["name"] = json!("web-1");
    other["metadata"]["labels"] = json!({"app": "web"});
    api.load_list(
        "pods",
        &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                "items": [agent_pod("node-a", a.addr().port()), agent_pod("node-b", b.addr().port()), other]}),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = flowscope_relay::RelayConfig {
        peer_pods: Some(PodDiscovery {
            selector: SELECTOR.into(),
            namespace: None, // the kubeconfig context's
            port: PortRef::Name("grpc".into()),
            kubeconfig: Some(kubeconfig(&api, dir.path())),
        }),
        ..test_config(&[])
    };
    let relay = start_relay(config).await;
    let peer = |node: &str, agent: &FakeAgent| (node.to_owned(), agent.addr().to_string());

    // The two agents' pods, by their nodes' names; not the other pod.
    wait_peers(&relay, &[peer("node-a", &a), peer("node-b", &b)]).await;
    wait_connected(&relay, 2).await;
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("/api/v1/namespaces/flowscope/pods?")
                && r.contains(&format!("labelSelector={SELECTOR}"))),
        "{requests:#?}"
    );

    // A node joins: its agent's pod is watched in.
    api.apply("pods", agent_pod("node-c", c.addr().port()));
    wait_peers(
        &relay,
        &[peer("node-a", &a), peer("node-b", &b), peer("node-c", &c)],
    )
    .await;
    wait_connected(&relay, 3).await;

    // A node leaves.
    api.delete("pods", "v1", "flowscope/flowscope-agent-node-b");
    wait_peers(&relay, &[peer("node-a", &a), peer("node-c", &c)]).await;

    // The watch expires (410): the relay lists again and keeps following.
    api.expire_watches("pods", "v1");
    api.apply("pods", agent_pod("node-b", b.addr().port()));
    wait_peers(
        &relay,
        &[peer("node-a", &a), peer("node-b", &b), peer("node-c", &c)],
    )
    .await;

    // The API server goes away: the known agents stay.
    api.set_down(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(peers(&relay).len(), 3);
    api.set_down(false);
    api.delete("pods", "v1", "flowscope/flowscope-agent-node-c");
    wait_peers(&relay, &[peer("node-a", &a), peer("node-b", &b)]).await;
    relay.stop().await;
}

#[tokio::test]
async fn a_bad_kubeconfig_stops_the_relay_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = flowscope_relay::RelayConfig {
        peer_pods: Some(PodDiscovery {
            selector: SELECTOR.into(),
            namespace: None,
            port: PortRef::Number(4244),
            kubeconfig: Some(dir.path().join("missing")),
        }),
        ..test_config(&[])
    };
    let Err(err) = flowscope_relay::start(config, tokio_util::sync::CancellationToken::new()).await
    else {
        panic!("a missing kubeconfig is an error");
    };
    let text = flowscope_relay::error_chain(&err);
    assert!(
        text.contains("--peer-pods") && text.contains("missing"),
        "{text}"
    );
}
