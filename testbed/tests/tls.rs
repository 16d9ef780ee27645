//! The agent's TCP listener with TLS and mutual TLS, end to end: two reference scenarios as two
//! nodes, each agent serving on TCP with a certificate of the test's own CA and requiring client
//! certificates of that CA; the real `flowscope-relay`, in a namespace of its own linked to both
//! nodes, dials them with its client certificate, and `flowctl` reads both nodes' flows through
//! it. A client with a certificate of another CA, without a certificate or in plain text is
//! refused. Privileged; run serially.
//!
//! ```text
//!  relay ns: flowscope-relay 127.0.0.1:4245, flowctl
//!     n1 203.0.113.1/30 ── fsrelay 203.0.113.2/30  node-1 (agent on :4244)
//!     n2 203.0.113.5/30 ── fsrelay 203.0.113.6/30  node-2 (agent on :4244)
//! ```

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use flowscope_proto::observer::{GetFlowsResponse, get_flows_response::ResponseTypes};
use testbed::{
    Scenario, bin_path,
    certs::Ca,
    process::Spawned,
    require_root,
    scenario::WORLD_IP,
    topology::{End, Netns, link},
    traffic,
};

const AGENT_1: &str = "203.0.113.2";
const AGENT_2: &str = "203.0.113.6";
const AGENT_PORT: u16 = 4244;
const RELAY: &str = "127.0.0.1:4245";
const ROGUE_RELAY: &str = "127.0.0.1:4246";

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `flowctl args…` run in namespace `ns`, bounded to 20 s: (success, stdout, stderr).
fn flowctl(ns: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "20"])
        .arg(bin_path("flowctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn world(port: u16) -> SocketAddr {
    format!("{WORLD_IP}:{port}").parse().unwrap()
}

/// Flows of both nodes through a relay that dials the agents over mutual TLS; the agents refuse
/// a client certificate of another CA (a relay holding one sees both nodes unavailable), a TLS
/// client without a certificate, and a plain-text client.
#[test]
fn agents_serve_mtls_to_the_relay() {
    if !require_root("agents_serve_mtls_to_the_relay") {
        return;
    }
    let (s1, s2) = (Scenario::build(), Scenario::build());
    let relay_ns = Netns::create("relay");
    let r = relay_ns.name();
    link(
        &End {
            ns: r,
            ifname: "n1",
            cidr: "203.0.113.1/30",
        },
        &End {
            ns: &s1.node(),
            ifname: "fsrelay",
            cidr: &format!("{AGENT_1}/30"),
        },
    );
    link(
        &End {
            ns: r,
            ifname: "n2",
            cidr: "203.0.113.5/30",
        },
        &End {
            ns: &s2.node(),
            ifname: "fsrelay",
            cidr: &format!("{AGENT_2}/30"),
        },
    );

    let dir = s1.dir();
    let ca = Ca::new("flowscope test CA");
    let other_ca = Ca::new("another CA");
    let ca_file = ca.write(dir, "ca");
    let (a1_cert, a1_key) = ca.leaf(dir, "agent-1", AGENT_1, false);
    let (a2_cert, a2_key) = ca.leaf(dir, "agent-2", AGENT_2, false);
    let (relay_cert, relay_key) = ca.leaf(dir, "relay", "relay.flowscope.test", true);
    let (rogue_cert, rogue_key) = other_ca.leaf(dir, "rogue", "relay.flowscope.test", true);

    let _dns1 = traffic::udp_server(&s1.world(), world(53), true);
    let _dns2 = traffic::udp_server(&s2.world(), world(53), true);
    let listen1 = format!("{AGENT_1}:{AGENT_PORT}");
    let listen2 = format!("{AGENT_2}:{AGENT_PORT}");
    let tls_args = |listen: &str, cert: &Path, key: &Path| -> Vec<String> {
        [
            "--listen-address",
            listen,
            "--tls-cert-file",
            p(cert),
            "--tls-key-file",
            p(key),
            "--tls-client-ca-files",
            p(&ca_file),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let args1 = tls_args(&listen1, &a1_cert, &a1_key);
    let mut args2 = tls_args(&listen2, &a2_cert, &a2_key);
    args2.extend(["--node-name".into(), "node-2".into()]);
    let mut agent1 = s1.start_agent(&args1.iter().map(String::as_str).collect::<Vec<_>>());
    let mut agent2 = s2.start_agent(&args2.iter().map(String::as_str).collect::<Vec<_>>());

    let peers = format!("node-1={listen1},node-2={listen2}");
    let start_relay = |listen: &str, cert: &Path, key: &Path| {
        Spawned::start(
            r,
            &bin_path("flowscope-relay"),
            &[
                "--listen-address",
                listen,
                "--peers",
                &peers,
                "--peer-check-interval",
                "1s",
                "--tls",
                "--tls-ca-cert-files",
                p(&ca_file),
                "--tls-client-cert-file",
                p(cert),
                "--tls-client-key-file",
                p(key),
            ],
        )
    };
    let mut relay = start_relay(RELAY, &relay_cert, &relay_key);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, _) = flowctl(r, &["--server", RELAY, "nodes"]);
        if ok && out.matches("Connected").count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never connected to both agents over mTLS: {out}\nrelay: {}\nagent-1: {}",
            relay.stderr(),
            agent1.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // One UDP request from pod-a of each node; both reach flowctl through the relay.
    let mut requests = Vec::new();
    for (s, node) in [(&s1, "node-1"), (&s2, "node-2")] {
        let ex = traffic::udp_request(&s.pod_a(), world(53), b"q").expect("UDP");
        requests.push((node, u32::from(ex.local_port)));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let missing = loop {
        let (ok, out, err) = flowctl(
            r,
            &[
                "--server", RELAY, "observe", "--ip", WORLD_IP, "--last", "50", "-o", "json",
            ],
        );
        assert!(ok, "{err}");
        let flows: Vec<_> = out
            .lines()
            .map(|l| flowscope_proto::json::from_json::<GetFlowsResponse>(l).unwrap())
            .filter_map(|r| match r.response_types {
                Some(ResponseTypes::Flow(f)) => Some(f),
                _ => None,
            })
            .collect();
        let missing: Vec<_> = requests
            .iter()
            .filter(|(node, port)| {
                !flows.iter().any(|f| {
                    f.node_name == *node
                        && f.l4.as_ref().and_then(|l| l.ports()) == Some((*port, 53))
                })
            })
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break format!("{missing:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        missing, "[]",
        "requests not seen through the relay (node, port)"
    );

    // Straight to an agent: with the relay's certificate it answers (so what follows is refused
    // for the credentials, not for the route) …
    let server = listen1.clone();
    let (ok, out, err) = flowctl(
        r,
        &[
            "--server",
            &server,
            "--tls",
            "--tls-ca-cert-files",
            p(&ca_file),
            "--tls-client-cert-file",
            p(&relay_cert),
            "--tls-client-key-file",
            p(&relay_key),
            "status",
        ],
    );
    assert!(ok, "mTLS client with the right CA refused: {out}{err}");
    // … a certificate of another CA, no certificate, or plain text: refused.
    let refused: [(&str, Vec<&str>); 3] = [
        (
            "client certificate of another CA",
            vec![
                "--tls",
                "--tls-ca-cert-files",
                p(&ca_file),
                "--tls-client-cert-file",
                p(&rogue_cert),
                "--tls-client-key-file",
                p(&rogue_key),
            ],
        ),
        (
            "TLS without a client certificate",
            vec!["--tls", "--tls-ca-cert-files", p(&ca_file)],
        ),
        ("plain text", vec![]),
    ];
    for (what, tls) in refused {
        let mut args = vec!["--server", &server];
        args.extend(tls);
        args.push("status");
        let (ok, out, err) = flowctl(r, &args);
        assert!(!ok, "{what}: the agent answered: {out}");
        println!("{what}: refused: {}", err.trim());
    }

    // A relay holding a certificate of another CA reaches neither agent.
    let mut rogue = start_relay(ROGUE_RELAY, &rogue_cert, &rogue_key);
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let (_, out, _) = flowctl(r, &["--server", ROGUE_RELAY, "nodes"]);
        let unavailable = out
            .lines()
            .filter(|l| l.to_lowercase().contains("unavailable"))
            .count();
        if unavailable == 2 || Instant::now() >= deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        out.lines()
            .filter(|l| l.to_lowercase().contains("unavailable"))
            .count(),
        2,
        "both nodes unavailable to a relay with a certificate of another CA: {out}\nrelay: {}",
        rogue.stderr()
    );
    assert!(!out.contains("Connected"), "{out}");

    rogue.signal(libc::SIGTERM);
    assert!(rogue.wait_exit(Duration::from_secs(15)).success());
    relay.signal(libc::SIGTERM);
    assert!(relay.wait_exit(Duration::from_secs(15)).success());
    assert!(agent1.stop().success(), "{}", agent1.stderr());
    assert!(agent2.stop().success(), "{}", agent2.stderr());
}
