//! NAT, conntrack and the path of a connection (what the seed lab stitched together by hand),
//! through `flowctl` against the real agent. Privileged; run serially.

use std::time::{Duration, Instant};

use flowscope_proto::{
    flow::{Flow, TraceObservationPoint, Verdict},
    flowscope::v1::{ConntrackEntry, FlowPath, NatEntry},
};
use testbed::observe::{addr, ext, flowctl, flows, json_lines, point};
use testbed::{
    Scenario, require_root,
    scenario::{NODE_IP, POD_A_IP, WORLD_IP},
    traffic,
};

/// The kernel's own accounting of a connection: (orig packets, orig bytes, reply packets, reply
/// bytes), from `conntrack -L` in the node (accounting switched on by the test).
fn kernel_counters(s: &Scenario, sport: u16) -> (u64, u64, u64, u64) {
    let out = testbed::netns::run(
        &s.node(),
        &[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--orig-port-src",
            &sport.to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(POD_A_IP))
        .unwrap_or_else(|| panic!("no kernel conntrack entry: {text}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| {
            w.strip_prefix("packets=")
                .or_else(|| w.strip_prefix("bytes="))
        })
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 4, "accounting fields in {line}");
    (nums[0], nums[1], nums[2], nums[3])
}

/// ct list counts what was sent and received; nat list shows the MASQUERADE mapping; uplink
/// flows carry pod-a's identity and the translated source; `--pod` sees all four points; the
/// path has its hops in order.
#[test]
fn conntrack_nat_and_path_of_the_http_get() {
    if !require_root("conntrack_nat_and_path_of_the_http_get") {
        return;
    }
    let s = Scenario::build();
    // The kernel's per-connection accounting: the ground truth we compare our counters with.
    s.node_exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"]);
    let _http = traffic::http_server(&s.world(), addr(WORLD_IP, 80), "hello from 1.0.0.1\n");
    let mut agent = s.start_agent(&[]);
    let get = traffic::http_get(&s.pod_a(), addr(WORLD_IP, 80)).expect("GET");
    let port = get.local_port;
    let conn_of = |all: &[Flow]| -> Vec<Flow> {
        all.iter()
            .filter(|f| {
                ext(f)
                    .ct_tuple
                    .is_some_and(|t| t.source_port == port as u32)
            })
            .cloned()
            .collect()
    };
    let four_points = [
        TraceObservationPoint::FromEndpoint,
        TraceObservationPoint::ToNetwork,
        TraceObservationPoint::FromNetwork,
        TraceObservationPoint::ToEndpoint,
    ];

    // The connection's last packets (pod-a's FIN and the world's ACK of it) may still be on
    // their way when the GET returns, and the flows reach the history a poll interval (or more,
    // on a loaded machine) later: read our ct entry, the kernel's counters and the pod's flows
    // again until the counters agree and the flows show all four points, then check them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (cts, (kp, kb, rp, rb), all) = loop {
        // ct list: our pod-side entry, equal to the kernel's accounting (+14 bytes of Ethernet
        // header per packet, which the TC hook sees and netfilter does not).
        let cts: Vec<ConntrackEntry> = json_lines(&flowctl(
            &s,
            &[
                "ct",
                "list",
                "--ip",
                POD_A_IP,
                "--port",
                &port.to_string(),
                "-o",
                "json",
            ],
        ));
        let kernel = kernel_counters(&s, port);
        // --pod sees all four points.
        let all = flows(&flowctl(
            &s,
            &[
                "observe",
                "--pod",
                "default/pod-a",
                "--last",
                "500",
                "-o",
                "json",
                "--print-extensions",
            ],
        ));
        let counted = cts.iter().any(|c| {
            c.tuple
                .as_ref()
                .is_some_and(|t| t.source_ip == POD_A_IP && t.source_port == port as u32)
                && (c.tx_packets, c.rx_packets) == (kernel.0, kernel.2)
        });
        let conn = conn_of(&all);
        let seen = four_points
            .iter()
            .all(|p| conn.iter().any(|f| point(f) == *p));
        if (counted && seen) || Instant::now() >= deadline {
            break (cts, kernel, all);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ct = cts
        .iter()
        .find(|c| {
            c.tuple
                .as_ref()
                .is_some_and(|t| t.source_ip == POD_A_IP && t.source_port == port as u32)
        })
        .unwrap_or_else(|| panic!("no ct entry for pod-a:{port}: {cts:#?}"));
    println!(
        "ct: tx {} pkts {} B, rx {} pkts {} B; kernel: orig {kp} pkts {kb} B, reply {rp} pkts {rb} B",
        ct.tx_packets, ct.tx_bytes, ct.rx_packets, ct.rx_bytes
    );
    assert_eq!(
        (ct.tx_packets, ct.rx_packets),
        (kp, rp),
        "packets per direction"
    );
    assert_eq!(
        (ct.tx_bytes, ct.rx_bytes),
        (kb + 14 * kp, rb + 14 * rp),
        "bytes per direction"
    );
    assert!(
        ct.tx_packets >= 4 && ct.rx_packets >= 3,
        "a whole HTTP exchange"
    );
    assert!(ct.source_identity >= 256, "pod-a's identity");
    let table = flowctl(&s, &["ct", "list", "--ip", POD_A_IP, "-o", "cilium"]);
    assert!(
        table.contains(&format!("TCP OUT {POD_A_IP}:{port} -> {WORLD_IP}:80")),
        "{table}"
    );

    // nat list: the MASQUERADE mapping of this connection.
    let nats: Vec<NatEntry> = json_lines(&flowctl(
        &s,
        &["nat", "list", "--ip", POD_A_IP, "-o", "json"],
    ));
    let nat = nats
        .iter()
        .find(|n| {
            n.original
                .as_ref()
                .is_some_and(|o| o.source_port == port as u32 && o.destination_ip == WORLD_IP)
        })
        .unwrap_or_else(|| panic!("no NAT entry for pod-a:{port}: {nats:#?}"));
    assert_eq!(nat.translated_source_ip, NODE_IP);
    let text = flowctl(&s, &["nat", "list", "--ip", POD_A_IP]);
    println!("{text}");
    assert!(
        text.contains(&format!("{POD_A_IP}:{port}")) && text.contains(&format!("src {NODE_IP}:")),
        "{text}"
    );

    // Uplink flows carry pod-a, the translated source, and --pod sees all four points.
    let conn = conn_of(&all);
    let points: std::collections::BTreeSet<_> = conn.iter().map(point).collect();
    for p in four_points {
        assert!(
            points.contains(&p),
            "--pod default/pod-a lacks {p:?}: {points:?}"
        );
    }
    let up = conn
        .iter()
        .find(|f| point(f) == TraceObservationPoint::ToNetwork)
        .unwrap();
    let src = up.source.as_ref().unwrap();
    assert_eq!(
        (src.namespace.as_str(), src.pod_name.as_str()),
        ("default", "pod-a"),
        "uplink flow attributed to the pod"
    );
    assert!(src.identity >= 256);
    let ip = up.ip.as_ref().unwrap();
    assert_eq!(
        (ip.source.as_str(), ip.source_xlated.as_str()),
        (POD_A_IP, NODE_IP)
    );
    let back = conn
        .iter()
        .find(|f| point(f) == TraceObservationPoint::FromNetwork)
        .unwrap();
    assert_eq!(
        back.destination.as_ref().unwrap().pod_name,
        "pod-a",
        "the reply is attributed to the pod, not to host"
    );

    // The path: hops in order, non-negative times.
    let paths: Vec<FlowPath> = json_lines(&flowctl(
        &s,
        &["path", "--ip", WORLD_IP, "--port", "80", "-o", "json"],
    ));
    let mine: Vec<&FlowPath> = paths.iter().filter(|p| p.ct_id == ct.ct_id).collect();
    assert!(!mine.is_empty(), "no path for the connection");
    let syn = mine[0];
    let pts: Vec<i32> = syn.hops.iter().map(|h| h.observation_point).collect();
    assert_eq!(
        pts,
        [
            TraceObservationPoint::FromEndpoint as i32,
            TraceObservationPoint::ToNetwork as i32
        ],
        "{syn:?}"
    );
    for p in &mine {
        let mut last = 0i64;
        for h in &p.hops {
            let d = h
                .since_first
                .as_ref()
                .map(|d| d.seconds * 1_000_000_000 + d.nanos as i64)
                .unwrap_or(-1);
            assert!(d >= last, "hops in time order: {p:?}");
            last = d;
        }
    }
    let text = flowctl(&s, &["path", "--ip", WORLD_IP, "--port", "80"]);
    println!("{text}");
    assert!(text.contains("from-endpoint → eth0 to-network +"), "{text}");
    assert!(agent.stop().success());
}

/// Without MASQUERADE the world cannot answer: the connection is flagged unanswered. A node
/// firewall DROP is a DROPPED flow with the kernel's reason by name.
#[test]
fn unanswered_connections_and_named_drops() {
    if !require_root("unanswered_connections_and_named_drops") {
        return;
    }
    let s = Scenario::build();
    s.remove_masquerade();
    s.iptables(&[
        "-I", "FORWARD", "-d", WORLD_IP, "-p", "udp", "--dport", "9", "-j", "DROP",
    ]);
    let mut agent = s.start_agent(&["--unanswered-timeout", "1s"]);
    // The SYN leaves with pod-a's own address; the world has no route back.
    assert!(
        traffic::http_get(&s.pod_a(), addr(WORLD_IP, 80)).is_err(),
        "no answer without MASQUERADE"
    );
    traffic::udp_send(&s.pod_a(), addr(WORLD_IP, 9), 1, 8, None).expect("send");

    // The SYN is flagged once --unanswered-timeout has passed and the agent's next once-a-second
    // check ran; the drop is in the history after the next poll. Ask until both are there.
    let syn_to_80 = |f: &Flow| {
        f.ip.as_ref().is_some_and(|ip| ip.destination == WORLD_IP)
            && f.l4
                .as_ref()
                .and_then(|l| l.ports())
                .is_some_and(|(_, d)| d == 80)
    };
    let to_9 = |f: &Flow| {
        f.l4.as_ref()
            .and_then(|l| l.ports())
            .is_some_and(|(_, p)| p == 9)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (unanswered, drops) = loop {
        let unanswered = flows(&flowctl(
            &s,
            &[
                "observe",
                "--unanswered",
                "--last",
                "100",
                "-o",
                "json",
                "--print-extensions",
            ],
        ));
        let drops = flows(&flowctl(
            &s,
            &[
                "observe",
                "--verdict",
                "DROPPED",
                "--last",
                "100",
                "-o",
                "json",
                "--print-extensions",
            ],
        ));
        let both = unanswered.iter().any(syn_to_80) && drops.iter().any(to_9);
        if both || Instant::now() >= deadline {
            break (unanswered, drops);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let syn = unanswered
        .iter()
        .find(|f| syn_to_80(f))
        .unwrap_or_else(|| panic!("the SYN to 1.0.0.1:80 is not flagged: {unanswered:#?}"));
    assert!(ext(syn).unanswered);
    assert_eq!(syn.source.as_ref().unwrap().pod_name, "pod-a");
    let compact = flowctl(&s, &["observe", "--unanswered", "--last", "10"]);
    assert!(compact.contains("no reply after 1s"), "{compact}");

    let d = drops
        .iter()
        .find(|f| to_9(f))
        .unwrap_or_else(|| panic!("no drop of the UDP to :9: {drops:#?}"));
    assert_eq!(d.verdict, Verdict::Dropped as i32);
    assert_eq!(ext(d).kernel_drop_reason_name, "NETFILTER_DROP");
    let compact = flowctl(
        &s,
        &[
            "observe",
            "--verdict",
            "DROPPED",
            "--port",
            "9",
            "--last",
            "10",
        ],
    );
    assert!(compact.contains("NETFILTER_DROP"), "{compact}");
    assert!(agent.stop().success());
}
