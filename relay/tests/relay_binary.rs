//! The real `flowscope-relay` binary: options, serving, a clean stop on
//! SIGTERM, a restart on the same port, refusing bad certificates.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use flowscope_proto::observer::GetFlowsRequest;
use flowscope_proto::relay::NodeState;

const BIN: &str = env!("CARGO_BIN_EXE_flowscope-relay");

/// Kills the process if the test fails before it stopped it.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.0.id()).unwrap();
        // SAFETY: sending a signal to our own child process, by its pid.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0);
    }

    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn spawn(args: &[String]) -> Proc {
    Proc(
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start flowscope-relay"),
    )
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + LONG;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "relay not listening on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn help_lists_the_options() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "--listen-address",
        "--peers",
        "--peer-dns",
        "--sort-buffer-len-max",
        "--sort-buffer-drain-timeout",
        "--tls-server-cert-file",
        "--tls-client-ca-files",
        "--tls-ca-cert-files",
        "--tls-client-cert-file",
        "--tls-server-name",
        "--metrics-listen-address",
    ] {
        assert!(help.contains(option), "{option} missing from --help");
    }
}

#[test]
fn bad_certificate_stops_before_listening() {
    let addr = free_port();
    let out = Command::new(BIN)
        .args([
            "--listen-address",
            &addr.to_string(),
            "--tls-server-cert-file",
            "/nonexistent/relay.pem",
            "--tls-server-key-file",
            "/nonexistent/relay-key.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/relay.pem"), "{stderr}");
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_stops_on_sigterm_and_restarts() {
    init_tracing();
    let agents: Vec<FakeAgent> = (0..2)
        .map(|i| {
            FakeAgent::start(
                &format!("node-{i}"),
                AgentOpts {
                    interval: Some(Duration::from_millis(20)),
                    ..Default::default()
                },
            )
        })
        .collect();
    let addr = free_port();
    let metrics = free_port();
    let args = vec![
        "--listen-address".to_string(),
        addr.to_string(),
        "--peers".to_string(),
        agents
            .iter()
            .map(FakeAgent::peer)
            .collect::<Vec<_>>()
            .join(","),
        "--metrics-listen-address".to_string(),
        metrics.to_string(),
        "--sort-buffer-drain-timeout".to_string(),
        "300ms".to_string(),
        "--name".to_string(),
        "bin-relay".to_string(),
    ];
    let mut relay = spawn(&args);
    wait_listening(addr).await;

    let mut c = client(addr).await;
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
        "flows from both agents",
        |m| flows_of(m, "node-0").count() >= 5 && flows_of(m, "node-1").count() >= 5,
    )
    .await;
    assert!(has_status(&seen, NodeState::NodeConnected, "node-0"));

    // Metrics of its own.
    let text = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(metrics).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    for line in [
        "flowscope_relay_nodes{state=\"connected\"} 2",
        "flowscope_relay_clients 1",
        "flowscope_relay_flows_relayed_total",
        "flowscope_relay_lost_events_total 0",
        "flowscope_relay_node_errors_total",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }

    // SIGTERM: the stream ends, the process exits 0, promptly.
    relay.sigterm();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "stream still open after SIGTERM");
    let status = relay.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");

    // Restart on the same port; clients reconnect and get flows.
    let _relay = spawn(&args);
    wait_listening(addr).await;
    let mut c = client(addr).await;
    let mut stream = c
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, LONG, "flows after restart", |m| {
        flows_of(m, "node-0").count() >= 5 && flows_of(m, "node-1").count() >= 5
    })
    .await;
}
