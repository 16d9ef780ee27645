//! `--peer-service`: the relay learns its agents from a Hubble Peer service and follows the
//! nodes it adds and deletes, also in streams already following.

mod common;

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use common::*;
use flowscope_proto::observer::{GetFlowsRequest, GetNodesRequest};
use flowscope_proto::peer::{
    ChangeNotification, ChangeNotificationType, NotifyRequest,
    peer_server::{Peer, PeerServer},
};
use flowscope_relay::config::PeerTarget;
use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

type Nodes = Arc<Vec<ChangeNotification>>;

/// A Peer service as Cilium's behaves: every node as PEER_ADDED, then the changes. Each stream
/// diffs the node list it sent against the current one.
#[derive(Clone)]
struct FakePeerService {
    nodes: watch::Receiver<Nodes>,
}

#[tonic::async_trait]
impl Peer for FakePeerService {
    type NotifyStream =
        Pin<Box<dyn Stream<Item = Result<ChangeNotification, tonic::Status>> + Send>>;

    async fn notify(
        &self,
        _: tonic::Request<NotifyRequest>,
    ) -> Result<tonic::Response<Self::NotifyStream>, tonic::Status> {
        let mut nodes = self.nodes.clone();
        let stream = async_stream(move |tx| async move {
            let mut sent: Vec<ChangeNotification> = Vec::new();
            loop {
                let now = nodes.borrow_and_update().clone();
                for old in &sent {
                    if !now.iter().any(|n| n.name == old.name) {
                        let mut gone = old.clone();
                        gone.r#type = ChangeNotificationType::PeerDeleted as i32;
                        if tx.send(Ok(gone)).await.is_err() {
                            return;
                        }
                    }
                }
                for n in now.iter() {
                    if !sent.iter().any(|o| o.name == n.name)
                        && tx.send(Ok(n.clone())).await.is_err()
                    {
                        return;
                    }
                }
                sent = now.to_vec();
                if nodes.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(stream))
    }
}

/// A stream fed by a task.
fn async_stream<F, Fut>(
    f: F,
) -> Pin<Box<dyn Stream<Item = Result<ChangeNotification, tonic::Status>> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ChangeNotification, tonic::Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn serve_peer_service(nodes: watch::Receiver<Nodes>, stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PeerServer::new(FakePeerService { nodes }))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            ),
    );
    addr
}

fn added(name: &str, address: String) -> ChangeNotification {
    ChangeNotification {
        name: name.into(),
        address,
        r#type: ChangeNotificationType::PeerAdded as i32,
        tls: None,
    }
}

async fn node_names(relay: &TestRelay) -> Vec<String> {
    let mut c = client(relay.addr).await;
    let mut names: Vec<String> = c
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| n.name)
        .collect();
    names.sort();
    names
}

async fn wait_nodes(relay: &TestRelay, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names = node_names(relay).await;
        if names == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes {names:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_come_and_go_with_the_peer_service() {
    init_tracing();
    let live = || AgentOpts {
        interval: Some(Duration::from_millis(20)),
        ..AgentOpts::default()
    };
    let a = FakeAgent::start("node-a", live());
    let b = FakeAgent::start("node-b", live());
    // Cilium announces a bare IP (Hubble Relay adds port 4244); ours `ip:port`. Both are read.
    let (nodes_tx, nodes_rx) = watch::channel(Arc::new(vec![
        added("node-a", a.addr().to_string()),
        added("node-b", b.addr().to_string()),
    ]));
    let stop = CancellationToken::new();
    let service = serve_peer_service(nodes_rx, stop.clone()).await;
    let mut config = test_config(&[]);
    config.peer_service = vec![PeerTarget::Tcp {
        host: service.ip().to_string(),
        port: service.port(),
    }];
    let relay = start_relay(config).await;
    wait_connected(&relay, 2).await;
    wait_nodes(&relay, &["node-a", "node-b"]).await;

    // A following stream sees both, then only node-a once node-b is deleted.
    let mut c = client(relay.addr).await;
    let mut follow = c
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = std::collections::BTreeSet::new();
    let t0 = tokio::time::Instant::now();
    while seen.len() < 2 && t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Ok(Some(r))) =
            tokio::time::timeout(Duration::from_secs(1), follow.message()).await
            && let Msg::Flow { node, .. } = classify(r)
        {
            seen.insert(node);
        }
    }
    assert_eq!(seen.len(), 2, "flows of both agents: {seen:?}");

    nodes_tx.send_replace(Arc::new(vec![added("node-a", a.addr().to_string())]));
    wait_nodes(&relay, &["node-a"]).await;
    assert_eq!(relay.running().pool().peers().len(), 1);
    // The following stream drops node-b: after what was in flight, only node-a's flows.
    let mut tail = Vec::new();
    let t0 = tokio::time::Instant::now();
    while tail.len() < 60 && t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Ok(Some(r))) =
            tokio::time::timeout(Duration::from_secs(1), follow.message()).await
            && let Msg::Flow { node, .. } = classify(r)
        {
            tail.push(node);
        }
    }
    assert!(
        tail[30..].iter().all(|n| n == "node-a"),
        "node-b's flows stop once it is deleted: {tail:?}"
    );

    // node-b comes back (as a new node with the same agent): added again.
    nodes_tx.send_replace(Arc::new(vec![
        added("node-a", a.addr().to_string()),
        added("node-b", b.addr().to_string()),
    ]));
    wait_connected(&relay, 2).await;
    wait_nodes(&relay, &["node-a", "node-b"]).await;

    // The service goes away: the relay keeps the peers it knows.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(node_names(&relay).await, ["node-a", "node-b"]);
    drop(follow);
    relay.stop().await;
}
