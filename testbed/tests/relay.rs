//! The relay with real agents: two reference scenarios as two nodes, the real `flowscope-relay`
//! binary on loopback, and `flowctl` through it. Privileged; run serially.

use std::{
    net::{SocketAddr, TcpListener},
    process::Command,
    time::{Duration, Instant},
};

use flowscope_proto::{
    flowscope::v1::ConntrackEntry,
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
};
use testbed::{Scenario, bin_path, process::Spawned, require_root, scenario::WORLD_IP, traffic};

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn flowctl(server: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg(bin_path("flowctl"))
        .arg("--server")
        .arg(server)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Flows of two nodes through one relay, merged in time order, with our extensions; conntrack
/// of one node through the relay; a node that goes away is reported and the others go on.
#[test]
fn two_nodes_behind_one_relay() {
    if !require_root("two_nodes_behind_one_relay") {
        return;
    }
    let (s1, s2) = (Scenario::build(), Scenario::build());
    let _d1 = traffic::udp_server(&s1.world(), addr(WORLD_IP, 53), true);
    let _d2 = traffic::udp_server(&s2.world(), addr(WORLD_IP, 53), true);
    let _a1 = s1.start_agent(&[]);
    let mut a2 = s2.start_agent(&["--node-name", "node-2"]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let peers = format!(
        "node-1=unix://{},node-2=unix://{}",
        s1.agent_socket().display(),
        s2.agent_socket().display()
    );
    let mut relay = Spawned::spawn({
        let mut c = Command::new(bin_path("flowscope-relay"));
        c.args([
            "--listen-address",
            &listen,
            "--peers",
            &peers,
            "--peer-check-interval",
            "1s",
        ]);
        c
    });
    // Both nodes connected.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, _) = flowctl(&listen, &["nodes"]);
        if ok && out.matches("Connected").count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay never saw both nodes: {out}\nrelay: {}",
            relay.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut requests = Vec::new(); // (node, the UDP client's port)
    for (s, node) in [(&s1, "node-1"), (&s2, "node-2"), (&s1, "node-1")] {
        let ex = traffic::udp_request(&s.pod_a(), addr(WORLD_IP, 53), b"q").expect("UDP");
        requests.push((node, u32::from(ex.local_port)));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each node's flows reach its history a poll interval (or more, on a loaded machine) after
    // the traffic: ask until every request is there, from its node.
    let deadline = Instant::now() + Duration::from_secs(20);
    let flows: Vec<_> = loop {
        let (ok, out, err) = flowctl(
            &listen,
            &[
                "observe",
                "--ip",
                WORLD_IP,
                "--last",
                "50",
                "-o",
                "json",
                "--print-extensions",
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
        let all_there = requests.iter().all(|(node, port)| {
            flows.iter().any(|f| {
                f.node_name == *node && f.l4.as_ref().and_then(|l| l.ports()) == Some((*port, 53))
            })
        });
        if all_there || Instant::now() >= deadline {
            break flows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let nodes: std::collections::BTreeSet<_> = flows.iter().map(|f| f.node_name.clone()).collect();
    assert_eq!(nodes.into_iter().collect::<Vec<_>>(), ["node-1", "node-2"]);
    let times: Vec<i64> = flows
        .iter()
        .map(|f| f.time.as_ref().unwrap().as_nanos())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "merged in time order"
    );
    assert!(
        flows.iter().all(|f| f.extensions.is_some()),
        "the relay forwards the request for extensions"
    );

    // Conntrack of one node through the relay.
    let (ok, out, err) = flowctl(
        &listen,
        &[
            "ct", "list", "--node", "node-2", "--port", "53", "-o", "json",
        ],
    );
    assert!(ok, "{err}");
    let cts: Vec<ConntrackEntry> = out
        .lines()
        .map(|l| flowscope_proto::json::from_json(l).unwrap())
        .collect();
    assert!(
        !cts.is_empty() && cts.iter().all(|c| c.node_name == "node-2"),
        "{cts:#?}"
    );

    // node-2 goes away: reported within seconds (10 s allowed: each round also starts a
    // flowctl), node-1 still served.
    assert!(a2.stop().success());
    let t0 = Instant::now();
    loop {
        let (_, out, _) = flowctl(&listen, &["status"]);
        if out.contains("node-2") && out.to_lowercase().contains("unavailable") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "node-2 not reported unavailable: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("node-2 reported unavailable after {:?}", t0.elapsed());
    let (ok, out, _) = flowctl(&listen, &["observe", "--last", "5", "--ip", WORLD_IP]);
    assert!(ok && out.lines().count() > 0, "node-1's flows still served");
    relay.signal(libc::SIGTERM);
    assert!(
        relay.wait_exit(Duration::from_secs(15)).success(),
        "relay exits 0 on SIGTERM"
    );
}
