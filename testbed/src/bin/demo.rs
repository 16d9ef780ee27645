//! The demo (README's first command): the seed lab's scenario, live.
//!
//! Builds node / pod-a / pod-b / world in network namespaces, starts the real agent on the node,
//! sends the lab's traffic and prints what flowscope saw. Everything is removed at the end,
//! also on error or Ctrl-C (the namespaces are deleted by the scenario's guard).

use std::{io::IsTerminal as _, net::SocketAddr, time::Duration};

use testbed::{
    Scenario, bin_path, client,
    dns::{self, DnsServer},
    process::Spawned,
    scenario::{HOST_DEV, LXC_A, NODE_IP, POD_A_IP, POD_B_IP, WORLD_IP},
    traffic,
};

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

/// Whether something accepts TCP connections on `addr` within `limit`.
fn wait_listening(addr: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
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
    // A real DNS server in the world (dnsmasq), pod-a's resolver pointed at it.
    let dns_server = DnsServer::start(&s.world(), WORLD_IP, &[s.pod_a()]);
    let _b = traffic::tcp_sink(&s.pod_b(), format!("{POD_B_IP}:8080").parse()?);

    step(
        "Starting monitor-agent on the node (aggregation medium, pod metadata from an endpoints file)",
    );
    let socket = s.agent_socket();
    let endpoints = s.endpoints_file();
    let mut agent = Spawned::start(
        &s.node(),
        &bin_path("monitor-agent"),
        &[
            "--socket",
            socket.to_str().expect("utf-8 path"),
            "--endpoints-file",
            endpoints.to_str().expect("utf-8 path"),
            "--node-name",
            "node-1",
            "--host-device",
            HOST_DEV,
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Err(e) = rt.block_on(client::wait_for_socket(&socket, Duration::from_secs(30))) {
        anyhow::bail!("the agent did not come up: {e}\n{}", agent.stderr());
    }
    drop(rt);
    println!("  serving on unix://{}", socket.display());

    // The web view: a relay in front of the node's agent (the agent's own view would listen
    // inside the node's namespace, which the machine's browser cannot reach).
    let ui = std::env::var("FLOWSCOPE_DEMO_UI").unwrap_or_else(|_| "127.0.0.1:12000".into());
    let mut relay = None;
    if std::net::TcpStream::connect(&ui).is_ok() {
        println!("  web view: not started, {ui} is taken (set FLOWSCOPE_DEMO_UI=ip:port)");
    } else {
        let started = Spawned::spawn({
            let mut c = std::process::Command::new(bin_path("flowscope-relay"));
            c.args([
                "--listen-address",
                "127.0.0.1:0",
                "--ui-listen-address",
                &ui,
            ])
            .arg("--peers")
            .arg(format!("node-1=unix://{}", socket.display()));
            c
        });
        if wait_listening(&ui, Duration::from_secs(10)) {
            println!(
                "  web view: http://{ui}/  (the service map, the flows and their paths, live)"
            );
            relay = Some(started);
        } else {
            println!("  web view: the relay did not start: {}", started.stderr());
        }
    }

    step(
        "Traffic from pod-a: ping 1.0.0.1, resolve one.one.one.one, wget http://one.one.one.one/ and a missing page, pod-a -> pod-b",
    );
    println!(
        "  ping: {}",
        if traffic::ping(&s.pod_a(), WORLD_IP, 2) {
            "2 replies"
        } else {
            "FAILED"
        }
    );
    match &dns_server {
        Some(_) => println!(
            "  resolve: {} -> {:?}",
            dns::NAME,
            dns::resolve(&s.pod_a(), dns::NAME)
        ),
        None => println!("  resolve: skipped, dnsmasq is not installed (scripts/setup.sh)"),
    }
    let get = traffic::http_request(&s.pod_a(), world, dns::NAME, "/")?;
    println!(
        "  wget: {} bytes from 1.0.0.1:80 (pod-a port {})",
        get.received.len(),
        get.local_port
    );
    let missing = traffic::http_request(&s.pod_a(), world, dns::NAME, "/missing")?;
    println!(
        "  wget /missing: {}",
        String::from_utf8_lossy(
            missing
                .received
                .split(|b| *b == b'\r')
                .next()
                .unwrap_or(&[])
        )
    );
    traffic::tcp_send(&s.pod_a(), format!("{POD_B_IP}:8080").parse()?, b"hi pod-b")?;
    println!("  tcp:  pod-a -> pod-b:8080");

    step("A node firewall rule drops pod-a's UDP to 1.0.0.1:9");
    s.iptables(&[
        "-I", "FORWARD", "-d", WORLD_IP, "-p", "udp", "--dport", "9", "-j", "DROP",
    ]);
    traffic::udp_send(&s.pod_a(), format!("{WORLD_IP}:9").parse()?, 1, 16, None)?;

    let server = format!("unix://{}", socket.display());
    // The agent reads the ring every 50 ms: wait (bounded) until the drop, the last event of
    // the traffic above, is in its history, rather than sleep and hope.
    for _ in 0..100 {
        let out = std::process::Command::new(bin_path("flowctl"))
            .args([
                "--server",
                &server,
                "observe",
                "--verdict",
                "DROPPED",
                "--port",
                "9",
            ])
            .args(["--last", "1", "-o", "json"])
            .output()?;
        if !out.stdout.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let flowctl = |args: &[&str]| -> anyhow::Result<()> {
        println!("\n  $ flowctl {}", args.join(" "));
        let out = std::process::Command::new(bin_path("flowctl"))
            .arg("--server")
            .arg(&server)
            .args(args)
            .output()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("  {line}");
        }
        if !out.status.success() {
            anyhow::bail!("flowctl failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    step("What flowscope saw: Hubble's view of everything to and from 1.0.0.1");
    flowctl(&["observe", "--ip", WORLD_IP, "--last", "100"])?;
    step("The same, as the lab's `cilium monitor` lines (skb hash, identities, conntrack state)");
    flowctl(&[
        "observe",
        "--ip",
        WORLD_IP,
        "--protocol",
        "tcp",
        "--last",
        "100",
        "-o",
        "monitor",
    ])?;
    step("DNS and HTTP, read from the packets (no proxy): Hubble's L7 flows");
    flowctl(&["observe", "-t", "l7", "--last", "100"])?;
    step("The same as `cilium monitor` prints the proxy's access-log records");
    flowctl(&["observe", "-t", "l7", "--last", "100", "-o", "monitor"])?;
    step("Drops, with the kernel's reason");
    flowctl(&[
        "observe",
        "--verdict",
        "DROPPED",
        "--ip-version",
        "ipv4",
        "--last",
        "10",
    ])?;
    step("pod-a -> pod-b");
    flowctl(&["observe", "--to-pod", "default/pod-b", "--last", "10"])?;
    step(
        "Conntrack, as the lab read it with `cilium bpf ct list global` (packets and bytes per direction)",
    );
    flowctl(&[
        "ct", "list", "--ip", POD_A_IP, "--ip", WORLD_IP, "-o", "cilium",
    ])?;
    step("The kernel's NAT table: what MASQUERADE did (the lab read /proc/net/nf_conntrack)");
    flowctl(&["nat", "list", "--ip", POD_A_IP])?;
    step("The path of the HTTP GET across the node, hop by hop");
    flowctl(&["path", "--ip", WORLD_IP, "--port", "80"])?;
    step("The agent");
    flowctl(&["status"])?;

    if relay.is_some() && std::io::stdin().is_terminal() {
        step(&format!(
            "The scenario as a picture: open http://{ui}/ in a browser (press Enter to end the demo)"
        ));
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    if let Some(mut relay) = relay {
        relay.stop();
    }

    let status = agent.stop();
    if !status.success() {
        anyhow::bail!("the agent exited with {status}: {}", agent.stderr());
    }
    step("Done: namespaces removed");
    Ok(())
}
