//! The demo (README's first command): the seed lab's scenario, live.
//!
//! Builds node / pod-a / pod-b / world in network namespaces, starts the real agent on the node,
//! sends the lab's traffic and prints what flowscope saw. Everything is removed at the end,
//! also on error or Ctrl-C (the namespaces are deleted by the scenario's guard).

use std::{net::SocketAddr, time::Duration};

use testbed::{
    Scenario, bin_path,
    process::Spawned,
    scenario::{HOST_DEV, LXC_A, NODE_IP, POD_A_IP, POD_B_IP, WORLD_IP},
    traffic,
};

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the demo builds network namespaces and loads BPF programs: run it as root");
    }
    step("Building the reference scenario (network namespaces, nothing leaves this machine)");
    let s = Scenario::build();
    println!(
        "  pod-a {POD_A_IP}/32 --veth-- node ({LXC_A}, gateway {HOST_DEV} 10.244.0.201, MASQUERADE) --eth0 {NODE_IP}-- world (1.0.0.1)"
    );
    println!("  pod-b {POD_B_IP}/32 --veth-- node");
    let world: SocketAddr = format!("{WORLD_IP}:80").parse()?;
    let _http = traffic::http_server(&s.world(), world, "hello from 1.0.0.1\n");
    let _dns = traffic::udp_server(&s.world(), format!("{WORLD_IP}:53").parse()?, true);
    let _b = traffic::tcp_sink(&s.pod_b(), format!("{POD_B_IP}:8080").parse()?);

    step("Starting monitor-agent on the node (aggregation medium)");
    let mut agent = Spawned::start(
        &s.node(),
        &bin_path("monitor-agent"),
        &[
            "--dump",
            "json",
            "--host-device",
            HOST_DEV,
            "--stats-interval",
            "1h",
        ],
    );
    agent.wait_ready(Duration::from_secs(30));
    for a in agent.values("attached") {
        println!(
            "  attached to {} ({})",
            a["name"].as_str().unwrap_or("?"),
            a["role"].as_str().unwrap_or("?")
        );
    }

    step(
        "Traffic from pod-a: ping 1.0.0.1, wget http://1.0.0.1, a DNS-like UDP query, pod-a -> pod-b",
    );
    println!(
        "  ping: {}",
        if traffic::ping(&s.pod_a(), WORLD_IP, 2) {
            "2 replies"
        } else {
            "FAILED"
        }
    );
    let get = traffic::http_get(&s.pod_a(), world)?;
    println!(
        "  wget: {} bytes from 1.0.0.1:80 (pod-a port {})",
        get.received.len(),
        get.local_port
    );
    let dns = traffic::udp_request(&s.pod_a(), format!("{WORLD_IP}:53").parse()?, b"query")?;
    println!("  udp:  {} bytes back from 1.0.0.1:53", dns.received.len());
    traffic::tcp_send(&s.pod_a(), format!("{POD_B_IP}:8080").parse()?, b"hi pod-b")?;
    println!("  tcp:  pod-a -> pod-b:8080");

    step("A node firewall rule drops pod-a's UDP to 1.0.0.1:9");
    s.iptables(&[
        "-I", "FORWARD", "-d", WORLD_IP, "-p", "udp", "--dport", "9", "-j", "DROP",
    ]);
    traffic::udp_send(&s.pod_a(), format!("{WORLD_IP}:9").parse()?, 1, 16, None)?;
    std::thread::sleep(Duration::from_millis(300));
    let status = agent.stop();

    step("What the node did to each packet (monitor-agent --dump, cilium-monitor style)");
    for e in agent.values("event") {
        if e["point"] == "to-endpoint" && e["dst"] == serde_json::Value::Null {
            continue;
        }
        println!("  {}", monitor_line(&e));
    }
    step("Conntrack (per-direction packets and bytes, suppressed traces included)");
    if let Some(ct) = agent.values("conntrack").pop() {
        for c in ct.as_array().into_iter().flatten() {
            println!(
                "  proto {:>2} {}:{} -> {}:{}  tx {} pkts {} B  rx {} pkts {} B",
                c["proto"],
                c["src"].as_str().unwrap_or(""),
                c["src_port"],
                c["dst"].as_str().unwrap_or(""),
                c["dst_port"],
                c["tx_packets"],
                c["tx_bytes"],
                c["rx_packets"],
                c["rx_bytes"]
            );
        }
    }
    if !status.success() {
        anyhow::bail!("the agent exited with {status}: {}", agent.stderr());
    }
    step("Done: namespaces removed");
    Ok(())
}

/// The event in `cilium monitor` style, from the agent's JSON.
fn monitor_line(e: &serde_json::Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
    let n = |k: &str| e[k].as_u64().unwrap_or(0);
    let head = if s("kind") == "drop" {
        format!("xx drop ({}) on {}", s("drop_reason_name"), s("ifname"))
    } else {
        format!(
            "{:<13} {:<9} on {:<15}",
            s("point"),
            s("ct_state"),
            s("ifname")
        )
    };
    let flags: Vec<&str> = [(1, "FIN"), (2, "SYN"), (4, "RST"), (8, "PSH"), (16, "ACK")]
        .iter()
        .filter(|(b, _)| n("tcp_flags") & b != 0)
        .map(|(_, f)| *f)
        .collect();
    let l4 = match n("proto") {
        6 => format!(
            "{}:{} -> {}:{} tcp {}",
            s("src"),
            n("src_port"),
            s("dst"),
            n("dst_port"),
            flags.join(",")
        ),
        17 => format!(
            "{}:{} -> {}:{} udp",
            s("src"),
            n("src_port"),
            s("dst"),
            n("dst_port")
        ),
        1 => format!("{} -> {} icmp type {}", s("src"), s("dst"), n("icmp_type")),
        58 => format!(
            "{} -> {} icmpv6 type {}",
            s("src"),
            s("dst"),
            n("icmp_type")
        ),
        p => format!("{} -> {} proto {p}", s("src"), s("dst")),
    };
    format!("{head} {l4}")
}
