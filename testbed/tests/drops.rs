//! Drops as Hubble clients read them: the real agent in the reference scenario, two packets the
//! kernel drops for two reasons, and the flows `flowctl` gets for them. Privileged; run serially.

use std::time::{Duration, Instant};

use flowscope_proto::{
    drop_reason::UNMAPPED_DROP_SUB_TYPE,
    flow::{CiliumEventType, DropReason, Flow, Verdict},
};
use testbed::observe::{addr, ext, flowctl, flows};
use testbed::{
    Scenario, require_root,
    scenario::{GATEWAY_IP, WORLD_IP},
    traffic,
};

/// The drop of a UDP datagram to `ip:9`, if there is one.
fn drop_to<'f>(flows: &'f [Flow], ip: &str) -> Option<&'f Flow> {
    flows.iter().find(|f| {
        f.verdict == Verdict::Dropped as i32
            && f.ip.as_ref().is_some_and(|i| i.destination == ip)
            && f.l4
                .as_ref()
                .and_then(|l| l.ports())
                .is_some_and(|(_, d)| d == 9)
    })
}

/// A datagram a firewall rule drops (the kernel's `NETFILTER_DROP`, which no Hubble reason
/// means) and one to a port of the node where nothing listens (`NO_SOCKET`, Hubble's
/// `SOCKET_LOOKUP_FAILED`): each drop carries Hubble's reason in the three fields Hubble clients
/// read, never the kernel's number in their place and never a sub type of 0 (which `hubble
/// observe` prints as `Success`), and the kernel's name in flowscope's extension, which
/// `flowctl` prints. The export file, which Hubble's tooling reads, says the same.
#[test]
#[expect(
    deprecated,
    reason = "Hubble's drop_reason, which stock clients still read"
)]
fn drops_say_hubbles_reason_and_the_kernels() {
    if !require_root("drops_say_hubbles_reason_and_the_kernels") {
        return;
    }
    let s = Scenario::build();
    s.iptables(&[
        "-I", "FORWARD", "-d", WORLD_IP, "-p", "udp", "--dport", "9", "-j", "DROP",
    ]);
    let export = s.dir().join("flows.json");
    let mut agent = s.start_agent(&["--export-file-path", export.to_str().expect("path")]);
    traffic::udp_send(&s.pod_a(), addr(WORLD_IP, 9), 1, 8, None).expect("send to the world");
    traffic::udp_send(&s.pod_a(), addr(GATEWAY_IP, 9), 1, 8, None).expect("send to the node");

    // The drops reach the history a poll interval after the traffic: ask until both are there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let dropped = loop {
        let dropped = flows(&flowctl(
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
        let both = drop_to(&dropped, WORLD_IP).is_some() && drop_to(&dropped, GATEWAY_IP).is_some();
        if both || Instant::now() >= deadline {
            break dropped;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let firewall = drop_to(&dropped, WORLD_IP)
        .unwrap_or_else(|| panic!("no drop of the datagram to {WORLD_IP}:9: {dropped:#?}"));
    assert_eq!(ext(firewall).kernel_drop_reason_name, "NETFILTER_DROP");
    assert_eq!(firewall.drop_reason_desc, DropReason::Unknown as i32);
    assert_eq!(firewall.drop_reason, 0);
    assert_eq!(
        firewall.event_type,
        Some(CiliumEventType {
            r#type: 1,
            sub_type: UNMAPPED_DROP_SUB_TYPE
        })
    );

    let no_socket = drop_to(&dropped, GATEWAY_IP)
        .unwrap_or_else(|| panic!("no drop of the datagram to {GATEWAY_IP}:9: {dropped:#?}"));
    assert_eq!(ext(no_socket).kernel_drop_reason_name, "NO_SOCKET");
    assert_eq!(
        no_socket.drop_reason_desc,
        DropReason::SocketLookupFailed as i32
    );
    assert_eq!(no_socket.drop_reason, 178);
    assert_eq!(
        no_socket.event_type,
        Some(CiliumEventType {
            r#type: 1,
            sub_type: 178
        })
    );

    // Hubble's filter on Hubble's reason (`hubble observe --drop-reason-desc`) finds it.
    let by_hubble_reason = flows(&flowctl(
        &s,
        &[
            "observe",
            "--drop-reason-desc",
            "SOCKET_LOOKUP_FAILED",
            "--last",
            "100",
            "-o",
            "json",
        ],
    ));
    assert!(
        drop_to(&by_hubble_reason, GATEWAY_IP).is_some()
            && drop_to(&by_hubble_reason, WORLD_IP).is_none(),
        "{by_hubble_reason:#?}"
    );

    // flowctl's own lines name the kernel's reason.
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
    assert!(
        compact.contains("NETFILTER_DROP DROPPED") && compact.contains("NO_SOCKET DROPPED"),
        "{compact}"
    );
    // A clean stop writes what the exporter has queued.
    assert!(agent.stop().success(), "{}", agent.stderr());

    let text = std::fs::read_to_string(&export).expect("export file");
    let exported: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let exported_drop_to = |ip: &str| {
        exported
            .iter()
            .map(|e| &e["flow"])
            .find(|f| {
                f["verdict"] == "DROPPED"
                    && f["IP"]["destination"] == ip
                    && f["l4"]["UDP"]["destination_port"] == 9
            })
            .unwrap_or_else(|| panic!("no exported drop to {ip}:9 in:\n{text}"))
    };
    let f = exported_drop_to(GATEWAY_IP);
    assert_eq!(f["drop_reason_desc"], "SOCKET_LOOKUP_FAILED", "{f}");
    assert_eq!(f["drop_reason"], 178, "{f}");
    assert_eq!(f["event_type"]["sub_type"], 178, "{f}");
    assert!(f.get("extensions").is_none(), "{f}");
    // protojson leaves out a field at its default: DROP_REASON_UNKNOWN and 0.
    let f = exported_drop_to(WORLD_IP);
    assert!(
        f.get("drop_reason_desc").is_none() && f.get("drop_reason").is_none(),
        "{f}"
    );
    assert_eq!(f["event_type"]["sub_type"], UNMAPPED_DROP_SUB_TYPE, "{f}");
}

/// Packets the kernel frees without a reason (`kfree_skb()`, NOT_SPECIFIED) are not all drops:
/// the IPv6 multicast code frees the MLD reports it has processed that way. By default they
/// are counted, not reported as DROPPED flows; `--report-unspecified-drops` reports them.
#[test]
fn packets_freed_without_a_reason_are_counted_not_reported() {
    if !require_root("packets_freed_without_a_reason_are_counted_not_reported") {
        return;
    }
    const METRICS: &str = "127.0.0.1:9968";
    let s = Scenario::build();
    let unspecified = |s: &Scenario| {
        let text = testbed::scrape::wait_metrics(
            &s.node(),
            METRICS.parse().unwrap(),
            Duration::from_secs(5),
        );
        testbed::scrape::value(
            &testbed::scrape::parse(&text),
            "flowscope_drops_unspecified_total",
            &[],
        )
        .unwrap_or_else(|| panic!("no flowscope_drops_unspecified_total in {text}"))
    };
    // A new IPv6 address on pod-a joins its solicited-node multicast group: the MLD report
    // reaches the node over pod-a's veth, and the node's multicast code frees it once handled,
    // with no reason.
    let join = |s: &Scenario, n: u32| {
        traffic::exec(
            &s.pod_a(),
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("fd00:10:244::7:{n:x}/128"),
                "dev",
                "eth0",
            ],
        );
    };
    let unspecified_drops = |s: &Scenario| -> Vec<Flow> {
        flows(&flowctl(
            s,
            &[
                "observe",
                "--verdict",
                "DROPPED",
                "--all",
                "-o",
                "json",
                "--print-extensions",
            ],
        ))
        .into_iter()
        .filter(|f| ext(f).kernel_drop_reason_name == "NOT_SPECIFIED")
        .collect()
    };

    for (report, n) in [(false, 1u32), (true, 2u32)] {
        let mut args = vec!["--metrics-listen-address", METRICS];
        if report {
            args.push("--report-unspecified-drops");
        }
        let mut agent = s.start_agent(&args);
        let before = unspecified(&s);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        // Join groups until the node has freed at least one packet without a reason.
        for i in 0.. {
            join(&s, n * 16 + i % 16);
            std::thread::sleep(Duration::from_millis(300));
            seen = unspecified_drops(&s);
            let counted = unspecified(&s) > before;
            if (report && !seen.is_empty()) || (!report && counted) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no packet freed without a reason (report={report})"
            );
        }
        if report {
            assert_eq!(seen[0].verdict, Verdict::Dropped as i32);
        } else {
            assert!(seen.is_empty(), "reported: {seen:#?}");
        }
        assert!(agent.stop().success());
    }
}
