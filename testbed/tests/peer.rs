//! Hubble's Peer service on the real agent, and the real relay finding its agents through it.
//! Privileged; run serially.

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use flowscope_proto::peer::{
    ChangeNotification, ChangeNotificationType, NotifyRequest, peer_client::PeerClient,
};
use testbed::{Scenario, bin_path, client, process::Spawned, require_root, scenario::NODE_IP};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first notifications of a Notify stream: what comes within `quiet` of the previous one.
async fn first_burst(
    stream: &mut tonic::Streaming<ChangeNotification>,
    quiet: Duration,
) -> Vec<(String, String, i32, Option<String>)> {
    let mut out = Vec::new();
    while let Ok(Some(n)) = tokio::time::timeout(quiet, stream.message())
        .await
        .map(|m| m.expect("Notify stream"))
    {
        out.push((n.name, n.address, n.r#type, n.tls.map(|t| t.server_name)));
    }
    out
}

/// The agent announces itself (at its uplink's address when it listens on every address) and
/// its `--peer`s, every one as PEER_ADDED first; the relay, given only the first agent's Peer
/// service, reaches both agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_lists_the_nodes_and_the_relay_follows_it() {
    if !require_root("notify_lists_the_nodes_and_the_relay_follows_it") {
        return;
    }
    let (s1, s2) = (Scenario::build(), Scenario::build());
    let mut a2 = tokio::task::block_in_place(|| s2.start_agent(&["--node-name", "node-2"]));
    let own = format!("node-1=unix://{}", s1.agent_socket().display());
    let other = format!("node-2=unix://{}", s2.agent_socket().display());
    let mut a1 = tokio::task::block_in_place(|| {
        s1.start_agent(&[
            "--listen-address",
            ":4244",
            "--tls-disabled",
            "--peer",
            &other,
            "--peer",
            "node-3=192.0.2.3",
        ])
    });
    let ch = client::unix_channel(&s1.agent_socket(), Duration::from_secs(5))
        .await
        .expect("agent socket");
    let mut stream = PeerClient::new(ch)
        .notify(NotifyRequest {})
        .await
        .expect("Notify")
        .into_inner();
    let added = ChangeNotificationType::PeerAdded as i32;
    let burst = first_burst(&mut stream, Duration::from_millis(500)).await;
    assert_eq!(
        burst,
        [
            // The node itself, at its default-route interface's address and its port.
            ("node-1".into(), format!("{NODE_IP}:4244"), added, None),
            (
                "node-2".into(),
                other.trim_start_matches("node-2=").into(),
                added,
                None
            ),
            // A bare IP gets Hubble's port.
            ("node-3".into(), "192.0.2.3:4244".into(), added, None),
        ]
    );
    drop(stream);
    a1.stop();

    // Announce the first agent over its socket (the relay runs outside the node's network
    // namespace), and give the relay only that agent's Peer service.
    let mut a1 =
        tokio::task::block_in_place(|| s1.start_agent(&["--peer", &own, "--peer", &other]));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut relay = Spawned::spawn({
        let mut c = Command::new(bin_path("flowscope-relay"));
        c.args([
            "--listen-address",
            &listen,
            "--peer-service",
            &format!("unix://{}", s1.agent_socket().display()),
            "--peer-check-interval",
            "1s",
        ]);
        c
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("timeout")
            .arg("20")
            .arg(bin_path("flowctl"))
            .args(["--server", &listen, "nodes"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success()
            && text.matches("Connected").count() == 2
            && text.contains("node-1")
            && text.contains("node-2")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not reach both agents through the Peer service: {text}\nrelay stderr:\n{}",
            relay.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    relay.stop();
    assert!(a1.stop().success(), "agent 1: {}", a1.stderr());
    assert!(a2.stop().success(), "agent 2: {}", a2.stderr());
}
