//! The datapath against real traffic: the agent binary in the node namespace of the reference
//! scenario, its `--dump json` output checked event by event.
//!
//! Privileged: needs root. Run serially (`--test-threads=1`): some tests look at the BPF
//! programs loaded on the whole machine.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::observe::addr;
use testbed::{
    Scenario, bin_path,
    process::Spawned,
    require_root,
    scenario::{LXC_A, LXC_B, NODE_IP, POD_A_IP, POD_A_IP6, POD_B_IP6, UPLINK, WORLD_IP},
    traffic,
};

const SETTLE: Duration = Duration::from_secs(10);

fn events(agent: &Spawned) -> Vec<Value> {
    agent.values("event")
}

/// Field accessors on an event.
trait Ev {
    fn s(&self, k: &str) -> &str;
    fn n(&self, k: &str) -> u64;
}

impl Ev for Value {
    fn s(&self, k: &str) -> &str {
        self.get(k).and_then(Value::as_str).unwrap_or("")
    }
    fn n(&self, k: &str) -> u64 {
        self.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX)
    }
}

const SYN: u64 = 0x02;
const ACK: u64 = 0x10;
const FIN: u64 = 0x01;

fn is_tcp(e: &Value, point: &str, src: &str, sport: Option<u64>, dst: &str, dport: u64) -> bool {
    e.s("point") == point
        && e.n("proto") == 6
        && e.s("src") == src
        && e.s("dst") == dst
        && e.n("dst_port") == dport
        && sport.is_none_or(|p| e.n("src_port") == p)
}

fn describe(evs: &[Value]) -> String {
    evs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// pod-a -> 1.0.0.1:80 seen at all four observation points, NAT at the uplink, conntrack states
/// and TCP flags in order; ICMP echo; UDP request/reply; hops of one packet share the skb hash.
#[test]
fn reference_scenario_every_hop() {
    if !require_root("reference_scenario_every_hop") {
        return;
    }
    let s = Scenario::build();
    let _http = traffic::http_server(&s.world(), addr(WORLD_IP, 80), "hello from 1.0.0.1\n");
    let _dns = traffic::udp_server(&s.world(), addr(WORLD_IP, 53), true);
    let mut agent = s.start_agent(&[
        "--dump",
        "json",
        "--stats-interval",
        "200ms",
        "--aggregation",
        "none",
    ]);

    assert!(
        traffic::ping(&s.pod_a(), WORLD_IP, 2),
        "ping 1.0.0.1 from pod-a failed"
    );
    let get = traffic::http_get(&s.pod_a(), addr(WORLD_IP, 80)).expect("HTTP GET");
    assert!(String::from_utf8_lossy(&get.received).contains("hello from 1.0.0.1"));
    let dns = traffic::udp_request(&s.pod_a(), addr(WORLD_IP, 53), b"query").expect("UDP");
    let port = get.local_port as u64;
    let dport = dns.local_port as u64;

    // Wait until every event asserted below has been printed (the UDP exchange is the last
    // traffic, but the reader prints in batches: waiting for one event says nothing of the later
    // ones).
    let complete = agent.wait_for(SETTLE, |lines| {
        let evs: Vec<&Value> = lines.iter().filter_map(|l| l.get("event")).collect();
        every_hop_missing(&evs, port, dport).is_empty()
    });
    let evs = events(&agent);
    let ctx = describe(&evs);
    assert!(
        complete,
        "not every hop seen within {SETTLE:?}, missing {:?}:\n{ctx}",
        every_hop_missing(&evs.iter().collect::<Vec<_>>(), port, dport)
    );

    // 1. FROM_ENDPOINT: the SYN, state new, on pod-a's veth.
    let syn_out = evs
        .iter()
        .find(|e| {
            is_tcp(e, "from-endpoint", POD_A_IP, Some(port), WORLD_IP, 80)
                && e.n("tcp_flags") == SYN
        })
        .unwrap_or_else(|| panic!("no from-endpoint SYN for port {port}:\n{ctx}"));
    assert_eq!(syn_out.s("ct_state"), "new");
    assert_eq!(syn_out.s("ifname"), LXC_A);

    // 2. TO_NETWORK: the same SYN after MASQUERADE, source = the node's address.
    let syn_net = evs
        .iter()
        .find(|e| is_tcp(e, "to-network", NODE_IP, None, WORLD_IP, 80) && e.n("tcp_flags") == SYN)
        .unwrap_or_else(|| panic!("no to-network SYN from {NODE_IP}:\n{ctx}"));
    assert_eq!(syn_net.s("ct_state"), "new");
    assert_eq!(syn_net.s("ifname"), UPLINK);
    assert_eq!(
        syn_net.n("hash"),
        syn_out.n("hash"),
        "hops of one packet must share the skb hash"
    );
    assert_eq!(
        syn_net.n("ingress_ifindex"),
        syn_out.n("ifindex"),
        "entered the node on pod-a's veth"
    );
    let nat_port = syn_net.n("src_port");

    // 3. FROM_NETWORK: SYN-ACK to the node address, state reply.
    let synack_net = evs
        .iter()
        .find(|e| {
            e.s("point") == "from-network"
                && e.s("src") == WORLD_IP
                && e.s("dst") == NODE_IP
                && e.n("dst_port") == nat_port
                && e.n("tcp_flags") == SYN | ACK
        })
        .unwrap_or_else(|| panic!("no from-network SYN-ACK:\n{ctx}"));
    assert_eq!(synack_net.s("ct_state"), "reply");

    // 4. TO_ENDPOINT: SYN-ACK delivered to pod-a after reverse NAT, state reply.
    let synack_ep = evs
        .iter()
        .find(|e| {
            e.s("point") == "to-endpoint"
                && e.s("dst") == POD_A_IP
                && e.n("dst_port") == port
                && e.n("tcp_flags") == SYN | ACK
        })
        .unwrap_or_else(|| panic!("no to-endpoint SYN-ACK:\n{ctx}"));
    assert_eq!(synack_ep.s("ct_state"), "reply");
    assert_eq!(synack_ep.s("ifname"), LXC_A);

    // 5. Flags in order at pod-a's veth: SYN first, then ACKs, a FIN last; ESTABLISHED after NEW.
    let out: Vec<&Value> = evs
        .iter()
        .filter(|e| is_tcp(e, "from-endpoint", POD_A_IP, Some(port), WORLD_IP, 80))
        .collect();
    assert!(out.len() >= 3, "too few from-endpoint packets:\n{ctx}");
    assert_eq!(out[0].n("tcp_flags"), SYN);
    assert!(
        out[1..].iter().all(|e| e.s("ct_state") == "established"),
        "{ctx}"
    );
    assert!(out[1..].iter().all(|e| e.n("tcp_flags") & ACK != 0));
    assert!(
        out.iter().any(|e| e.n("tcp_flags") & FIN != 0),
        "no FIN from pod-a:\n{ctx}"
    );
    let replies: Vec<&Value> = evs
        .iter()
        .filter(|e| e.s("point") == "to-endpoint" && e.n("dst_port") == port)
        .collect();
    assert!(replies.iter().all(|e| e.s("ct_state") == "reply"));

    // 6. ICMP echo request out, echo reply back.
    assert!(
        evs.iter().any(|e| e.s("point") == "from-endpoint"
            && e.n("proto") == 1
            && e.n("icmp_type") == 8
            && e.s("dst") == WORLD_IP),
        "no ICMP echo request:\n{ctx}"
    );
    assert!(
        evs.iter().any(|e| e.s("point") == "to-endpoint"
            && e.n("proto") == 1
            && e.n("icmp_type") == 0
            && e.s("ct_state") == "reply"),
        "no ICMP echo reply:\n{ctx}"
    );

    // 7. UDP request and reply.
    assert!(evs.iter().any(|e| e.s("point") == "from-endpoint"
        && e.n("proto") == 17
        && e.n("src_port") == dport
        && e.s("ct_state") == "new"));
    assert!(evs.iter().any(|e| e.s("point") == "to-endpoint"
        && e.n("proto") == 17
        && e.n("dst_port") == dport
        && e.s("ct_state") == "reply"));

    assert!(agent.stop().success(), "agent exit: {}", agent.stderr());
}

/// The events `reference_scenario_every_hop` looks for (only which packet at which point: the
/// test checks their fields) that are not among `evs` yet. `port`: the HTTP client's port;
/// `udp_port`: the UDP client's.
/// One hop the test expects: its name, and whether an event is it.
type HopCheck<'a> = (&'static str, &'a dyn Fn(&Value) -> bool);

fn every_hop_missing(evs: &[&Value], port: u64, udp_port: u64) -> Vec<&'static str> {
    let has = |f: &dyn Fn(&Value) -> bool| evs.iter().any(|e| f(e));
    let nat_port = evs
        .iter()
        .find(|e| is_tcp(e, "to-network", NODE_IP, None, WORLD_IP, 80) && e.n("tcp_flags") == SYN)
        .map(|e| e.n("src_port"));
    let checks: [HopCheck; 10] = [
        ("from-endpoint SYN", &|e| {
            is_tcp(e, "from-endpoint", POD_A_IP, Some(port), WORLD_IP, 80)
                && e.n("tcp_flags") == SYN
        }),
        ("to-network SYN", &|e| {
            is_tcp(e, "to-network", NODE_IP, None, WORLD_IP, 80) && e.n("tcp_flags") == SYN
        }),
        ("from-network SYN-ACK", &|e| {
            e.s("point") == "from-network"
                && e.s("src") == WORLD_IP
                && e.s("dst") == NODE_IP
                && Some(e.n("dst_port")) == nat_port
                && e.n("tcp_flags") == SYN | ACK
        }),
        ("to-endpoint SYN-ACK", &|e| {
            e.s("point") == "to-endpoint"
                && e.s("dst") == POD_A_IP
                && e.n("dst_port") == port
                && e.n("tcp_flags") == SYN | ACK
        }),
        ("to-endpoint FIN", &|e| {
            e.s("point") == "to-endpoint"
                && e.n("proto") == 6
                && e.n("dst_port") == port
                && e.n("tcp_flags") & FIN != 0
        }),
        ("from-endpoint FIN", &|e| {
            is_tcp(e, "from-endpoint", POD_A_IP, Some(port), WORLD_IP, 80)
                && e.n("tcp_flags") & FIN != 0
        }),
        ("ICMP echo request", &|e| {
            e.s("point") == "from-endpoint"
                && e.n("proto") == 1
                && e.n("icmp_type") == 8
                && e.s("dst") == WORLD_IP
        }),
        ("ICMP echo reply", &|e| {
            e.s("point") == "to-endpoint" && e.n("proto") == 1 && e.n("icmp_type") == 0
        }),
        ("UDP request", &|e| {
            e.s("point") == "from-endpoint" && e.n("proto") == 17 && e.n("src_port") == udp_port
        }),
        ("UDP reply", &|e| {
            e.s("point") == "to-endpoint" && e.n("proto") == 17 && e.n("dst_port") == udp_port
        }),
    ];
    checks
        .into_iter()
        .filter(|(_, check)| !has(*check))
        .map(|(name, _)| name)
        .collect()
}

/// IPv6 pod-a -> pod-b: both endpoint hops; the second is flagged as a transit duplicate and
/// conntrack counts each packet once.
#[test]
fn ipv6_pod_to_pod() {
    if !require_root("ipv6_pod_to_pod") {
        return;
    }
    let s = Scenario::build();
    let sink = traffic::tcp_sink(&s.pod_b(), addr(POD_B_IP6, 8080));
    let mut agent = s.start_agent(&[
        "--dump",
        "json",
        "--stats-interval",
        "200ms",
        "--aggregation",
        "none",
    ]);
    let port = traffic::tcp_send(&s.pod_a(), addr(POD_B_IP6, 8080), b"hello over IPv6")
        .expect("IPv6 connect") as u64;
    // Both FINs delivered: pod-a's to pod-b, and pod-b's to pod-a (after which pod-a sends only
    // its last ACK).
    let fin_to = |e: &Value, src: &str, src_port: Option<u64>, dst_port: u64| {
        e.s("point") == "to-endpoint"
            && e.n("proto") == 6
            && e.s("src") == src
            && src_port.is_none_or(|p| e.n("src_port") == p)
            && e.n("dst_port") == dst_port
            && e.n("tcp_flags") & FIN != 0
    };
    let closed = agent.wait_for(SETTLE, |lines| {
        let mut evs = lines.iter().filter_map(|l| l.get("event"));
        evs.clone().any(|e| fin_to(e, POD_A_IP6, Some(port), 8080))
            && evs.any(|e| fin_to(e, POD_B_IP6, Some(8080), port))
    });
    // Stop first, then read the events: the agent detaches, drains the ring and prints every
    // event before its conntrack dump, so the events and the conntrack entry below count the
    // same packets (pod-a's last ACK included, whenever it passed the hook).
    assert!(agent.stop().success(), "agent exit: {}", agent.stderr());
    let evs = events(&agent);
    let ctx = describe(&evs);
    assert!(closed, "both FINs not delivered within {SETTLE:?}:\n{ctx}");
    let from = evs
        .iter()
        .find(|e| {
            is_tcp(e, "from-endpoint", POD_A_IP6, Some(port), POD_B_IP6, 8080)
                && e.n("tcp_flags") == SYN
        })
        .unwrap_or_else(|| panic!("no IPv6 SYN from pod-a:\n{ctx}"));
    assert_eq!(from.s("ct_state"), "new");
    let to = evs
        .iter()
        .find(|e| {
            is_tcp(e, "to-endpoint", POD_A_IP6, Some(port), POD_B_IP6, 8080)
                && e.n("tcp_flags") == SYN
        })
        .unwrap_or_else(|| panic!("no IPv6 SYN delivered to pod-b:\n{ctx}"));
    assert_eq!(to.s("ifname"), LXC_B);
    assert_eq!(
        to["transit_dup"],
        Value::Bool(true),
        "second hop of a pod-to-pod packet"
    );
    assert!(evs.iter().any(|e| e.s("point") == "from-endpoint"
        && e.s("src") == POD_B_IP6
        && e.s("ct_state") == "reply"));

    let ct = agent
        .values("conntrack")
        .pop()
        .expect("conntrack dump at exit");
    let entry = ct
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c.s("src") == POD_A_IP6 && c.n("src_port") == port)
        .unwrap_or_else(|| panic!("no conntrack entry for the IPv6 connection: {ct}"));
    let sent_from_a = evs
        .iter()
        .filter(|e| is_tcp(e, "from-endpoint", POD_A_IP6, Some(port), POD_B_IP6, 8080))
        .count() as u64;
    assert_eq!(
        entry.n("tx_packets"),
        sent_from_a,
        "each packet counted once, not once per hop: {entry}"
    );
    drop(sink);
}

/// 1,000 UDP packets: `medium` reports a handful of traces, `none` every hop of every packet;
/// conntrack counts exactly 1,000 either way.
#[test]
fn aggregation_medium_vs_none() {
    if !require_root("aggregation_medium_vs_none") {
        return;
    }
    let s = Scenario::build();
    let sink = traffic::udp_server(&s.world(), addr(WORLD_IP, 5001), false);
    let mut counts = Vec::new();
    for level in ["medium", "none"] {
        let mut agent = s.start_agent(&[
            "--dump",
            "json",
            "--stats-interval",
            "200ms",
            "--aggregation",
            level,
        ]);
        let base = sink.served.load(Ordering::Relaxed);
        // Paced so that the veth backlog (1,000 packets) cannot overflow before our hook.
        let port = traffic::udp_send(
            &s.pod_a(),
            addr(WORLD_IP, 5001),
            1000,
            64,
            Some(Duration::from_micros(50)),
        )
        .expect("send") as u64;
        // The agent detaches before its last drain: stop it only once every packet has passed
        // both hooks, i.e. reached the world. The world's socket may drop a few under load (the
        // count at the end allows it), so also stop waiting once deliveries have stopped.
        let deadline = Instant::now() + SETTLE;
        let (mut last, mut since_change) = (base, Instant::now());
        loop {
            let served = sink.served.load(Ordering::Relaxed);
            if served >= base + 1000 || Instant::now() >= deadline {
                break;
            }
            if served != last {
                (last, since_change) = (served, Instant::now());
            } else if since_change.elapsed() >= Duration::from_secs(1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "aggregation {level}: {} of 1000 delivered to the world before the stop",
            sink.served.load(Ordering::Relaxed) - base
        );
        assert!(agent.stop().success(), "agent exit: {}", agent.stderr());
        let evs = events(&agent);
        let traces = evs
            .iter()
            .filter(|e| e.n("dst_port") == 5001 && e.s("kind") == "trace")
            .count();
        let ct = agent.values("conntrack").pop().expect("conntrack dump");
        let ct = ct.as_array().unwrap();
        let pod_entry = ct
            .iter()
            .find(|c| c.s("src") == POD_A_IP && c.n("src_port") == port)
            .expect("pod entry");
        assert_eq!(
            pod_entry.n("tx_packets"),
            1000,
            "{level}: conntrack at the pod's veth: {pod_entry}"
        );
        assert_eq!(
            pod_entry.n("tx_bytes"),
            1000 * (64 + 8 + 20 + 14),
            "{level}: bytes on the wire"
        );
        let nat_entry = ct
            .iter()
            .find(|c| c.s("src") == NODE_IP && c.n("dst_port") == 5001)
            .expect("NAT entry");
        assert_eq!(
            nat_entry.n("tx_packets"),
            1000,
            "{level}: conntrack at the uplink: {nat_entry}"
        );
        let aggregated = agent
            .values("stats")
            .last()
            .map(|st| st.n("aggregated"))
            .unwrap_or(0);
        println!(
            "aggregation {level}: {traces} traces for 1000 packets x 2 hops ({aggregated} aggregated away)"
        );
        counts.push((level, traces));
    }
    assert!(sink.served.load(Ordering::Relaxed) >= 1000);
    let (medium, none) = (counts[0].1, counts[1].1);
    assert!(
        medium <= 10,
        "medium should report a handful of traces, got {medium}"
    );
    assert_eq!(none, 2000, "none reports every packet at both hops");
}

/// A node firewall rule drops a packet: a drop event with the kernel's reason, by name.
#[test]
fn iptables_drop_has_the_kernel_reason() {
    if !require_root("iptables_drop_has_the_kernel_reason") {
        return;
    }
    let s = Scenario::build();
    s.iptables(&[
        "-I", "FORWARD", "-d", WORLD_IP, "-p", "udp", "--dport", "9", "-j", "DROP",
    ]);
    let mut agent = s.start_agent(&["--dump", "json", "--stats-interval", "200ms"]);
    let port = traffic::udp_send(
        &s.pod_a(),
        addr(WORLD_IP, 9),
        3,
        32,
        Some(Duration::from_millis(10)),
    )
    .expect("send") as u64;
    // All three drops, not only the first: the reader may print them in two batches.
    let found = agent.wait_for(SETTLE, |lines| {
        lines
            .iter()
            .filter_map(|l| l.get("event"))
            .filter(|e| e.s("kind") == "drop" && e.n("src_port") == port)
            .count()
            >= 3
    });
    let evs = events(&agent);
    assert!(
        found,
        "fewer than 3 drop events within {SETTLE:?}:\n{}",
        describe(&evs)
    );
    let drops: Vec<&Value> = evs
        .iter()
        .filter(|e| e.s("kind") == "drop" && e.n("src_port") == port)
        .collect();
    assert_eq!(drops.len(), 3, "drops are never aggregated");
    for d in drops {
        assert_eq!(d.s("drop_reason_name"), "NETFILTER_DROP");
        assert_eq!(d.s("src"), POD_A_IP);
        assert_eq!(d.s("dst"), WORLD_IP);
        assert_eq!(d.n("dst_port"), 9);
        assert_eq!(d.s("ifname"), LXC_A);
    }
    assert!(agent.stop().success());
}

/// An IPv6 datagram behind an extension header (destination options), dropped by ip6tables:
/// the drop event names the protocol and ports of the upper layer, not the extension header.
#[test]
fn ipv6_drop_behind_an_extension_header() {
    if !require_root("ipv6_drop_behind_an_extension_header") {
        return;
    }
    let s = Scenario::build();
    s.node_exec(&[
        "ip6tables",
        "-I",
        "FORWARD",
        "-d",
        POD_B_IP6,
        "-p",
        "udp",
        "--dport",
        "7777",
        "-j",
        "DROP",
    ]);
    let mut agent = s.start_agent(&["--dump", "json", "--stats-interval", "200ms"]);
    let port = testbed::netns::in_netns(&s.pod_a(), || -> std::io::Result<u16> {
        use std::os::fd::AsRawFd as _;
        let sock = std::net::UdpSocket::bind("[::]:0")?;
        // A destination-options header with one PadN option (8 bytes; the kernel fills in the
        // next-header byte). Needs CAP_NET_RAW: the tests run as root.
        let opts: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
        // SAFETY: a valid socket and an 8-byte buffer that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_DSTOPTS,
                opts.as_ptr().cast(),
                opts.len() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        sock.connect(format!("[{POD_B_IP6}]:7777"))?;
        sock.send(b"behind a header")?;
        Ok(sock.local_addr()?.port())
    })
    .expect("send with IPV6_DSTOPTS") as u64;
    let is_ours = |e: &Value| e.s("kind") == "drop" && e.s("src") == POD_A_IP6;
    let found = agent.wait_for(SETTLE, |lines| {
        lines.iter().filter_map(|l| l.get("event")).any(is_ours)
    });
    let evs = events(&agent);
    assert!(found, "no drop within {SETTLE:?}:\n{}", describe(&evs));
    let d = evs.iter().find(|e| is_ours(e)).expect("found");
    assert_eq!(
        d.n("proto"),
        17,
        "the upper layer, not the extension header: {d}"
    );
    assert_eq!((d.n("src_port"), d.n("dst_port")), (port, 7777), "{d}");
    assert_eq!(d.s("dst"), POD_B_IP6);
    assert_eq!(d.s("drop_reason_name"), "NETFILTER_DROP");
    assert!(agent.stop().success());
}

/// An ICMP error about a tracked connection is RELATED, at both hops (NAT'ed and not).
#[test]
fn icmp_error_is_related() {
    if !require_root("icmp_error_is_related") {
        return;
    }
    let s = Scenario::build();
    let mut agent = s.start_agent(&["--dump", "json", "--stats-interval", "200ms"]);
    // Nothing listens on 1.0.0.1:7: the world answers with ICMP port unreachable.
    traffic::udp_send(&s.pod_a(), addr(WORLD_IP, 7), 1, 16, None).expect("send");
    let found = agent.wait_for(SETTLE, |lines| {
        lines
            .iter()
            .filter_map(|l| l.get("event"))
            .any(|e| e.s("point") == "to-endpoint" && e.n("icmp_type") == 3)
    });
    let evs = events(&agent);
    assert!(found, "no ICMP error delivered:\n{}", describe(&evs));
    for point in ["from-network", "to-endpoint"] {
        let e = evs
            .iter()
            .find(|e| e.s("point") == point && e.n("proto") == 1 && e.n("icmp_type") == 3)
            .unwrap_or_else(|| panic!("no ICMP unreachable at {point}"));
        assert_eq!(e.s("ct_state"), "related", "{point}: {e}");
    }
    assert!(agent.stop().success());
}

/// A tiny ring and a paused reader: events are lost in the kernel and counted, not hidden.
#[test]
fn tiny_ring_counts_lost_events() {
    if !require_root("tiny_ring_counts_lost_events") {
        return;
    }
    let s = Scenario::build();
    let _sink = traffic::udp_server(&s.world(), addr(WORLD_IP, 5001), false);
    let export = s.dir().join("flows.json");
    let mut agent = s.start_agent(&[
        "--dump",
        "json",
        "--stats-interval",
        "200ms",
        "--aggregation",
        "none",
        "--ring-size",
        "4096",
        "--export-file-path",
        export.to_str().expect("path"),
    ]);
    agent.signal(libc::SIGSTOP);
    traffic::udp_send(
        &s.pod_a(),
        addr(WORLD_IP, 5001),
        500,
        32,
        Some(Duration::from_micros(50)),
    )
    .expect("send");
    agent.signal(libc::SIGCONT);
    // The agent detaches before its last drain: stop it only once its counters account for
    // every packet at both hops and the reader has caught up with the ring.
    let settled = agent.wait_for(SETTLE, |lines| {
        lines
            .iter()
            .filter_map(|l| l.get("stats"))
            .next_back()
            .is_some_and(|st| {
                st.n("events_emitted").saturating_add(st.n("ring_lost")) >= 1000
                    && st.n("events_read") == st.n("events_emitted")
            })
    });
    assert!(
        settled,
        "the counters never accounted for 500 packets x 2 hops within {SETTLE:?}: {:?}",
        agent.values("stats").last()
    );
    // The loss is reported (history, export file) on the agent's next one-second tick.
    let ring_lost = agent
        .values("stats")
        .pop()
        .map_or(0, |st| st.n("ring_lost"));
    let exported_lost = || {
        lost_events(
            &std::fs::read_to_string(&export).unwrap_or_default(),
            "PERF_EVENT_RING_BUFFER",
        )
    };
    let deadline = std::time::Instant::now() + SETTLE;
    while exported_lost() < ring_lost && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop().success());
    let st = agent.values("stats").pop().expect("final stats");
    assert_eq!(
        exported_lost(),
        st.n("ring_lost"),
        "the export file tells how many events the kernel ring lost: {st}"
    );
    let (emitted, lost, read) = (
        st.n("events_emitted"),
        st.n("ring_lost"),
        st.n("events_read"),
    );
    println!("tiny ring: emitted {emitted}, lost in kernel {lost}, read {read}");
    assert!(
        lost > 0,
        "a 4 KiB ring with a paused reader must lose events: {st}"
    );
    assert!(
        emitted + lost >= 1000,
        "500 packets x 2 hops are all accounted for: {st}"
    );
    assert_eq!(
        read, emitted,
        "everything that entered the ring was read: {st}"
    );
}

/// Events lost at `source`, summed over the `lost_events` lines of Hubble's JSON in `text` (an
/// export file, `flowctl observe -o json`): `num_events_lost` is a uint64, a string in JSON.
fn lost_events(text: &str, source: &str) -> u64 {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["lost_events"]["source"] == source)
        .filter_map(|v| {
            v["lost_events"]["num_events_lost"]
                .as_str()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Events the decode queue had no room for are counted and reported like the kernel ring's
/// losses, as Hubble reports its observer queue's: a `LostEvent` with source
/// `OBSERVER_EVENTS_QUEUE` in the export file and in the history a client reads, for as many
/// events as the queue dropped. A paused agent with a queue of one batch (256 events) and the
/// default 4 MiB ring: on SIGCONT the reader drains thousands of events into the queue far
/// faster than the decoder empties it.
#[test]
fn decode_queue_loss_reaches_clients_and_the_export_file() {
    if !require_root("decode_queue_loss_reaches_clients_and_the_export_file") {
        return;
    }
    let s = Scenario::build();
    let _sink = traffic::udp_server(&s.world(), addr(WORLD_IP, 5001), false);
    let export = s.dir().join("flows.json");
    let mut agent = s.start_agent(&[
        "--dump",
        "json",
        "--stats-interval",
        "200ms",
        "--aggregation",
        "none",
        "--queue-size",
        "1",
        "--export-file-path",
        export.to_str().expect("path"),
    ]);
    agent.signal(libc::SIGSTOP);
    traffic::udp_send(
        &s.pod_a(),
        addr(WORLD_IP, 5001),
        3000,
        32,
        Some(Duration::from_micros(20)),
    )
    .expect("send");
    agent.signal(libc::SIGCONT);
    // Settled: the ring lost nothing, the reader read every event, and the queue dropped some.
    let settled = agent.wait_for(SETTLE, |lines| {
        lines
            .iter()
            .filter_map(|l| l.get("stats"))
            .next_back()
            .is_some_and(|st| {
                st.n("events_emitted") >= 6000
                    && st.n("events_read") == st.n("events_emitted")
                    && st.n("queue_lost") > 0
            })
    });
    let st = agent.values("stats").pop().expect("stats");
    assert!(
        settled,
        "3000 packets x 2 hops with a one-batch queue: the queue never dropped any: {st}"
    );
    assert_eq!(st.n("ring_lost"), 0, "the 4 MiB ring holds the burst: {st}");
    let queue_lost = st.n("queue_lost");
    // Reported on the agent's next one-second tick.
    let lost_lines = |text: &str| lost_events(text, "OBSERVER_EVENTS_QUEUE");
    let exported = || lost_lines(&std::fs::read_to_string(&export).unwrap_or_default());
    let deadline = Instant::now() + SETTLE;
    while exported() < queue_lost && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        exported(),
        queue_lost,
        "the export file tells how many events the decode queue dropped"
    );
    // A client reading the history (flowctl, as `hubble observe` would) sees the same loss.
    let history = testbed::observe::flowctl(&s, &["observe", "--last", "1000000", "-o", "json"]);
    assert_eq!(
        lost_lines(&history),
        queue_lost,
        "the history's LostEvents account for the queue's losses: {}",
        history
            .lines()
            .filter(|l| l.contains("lost_events"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(agent.stop().success());
}

/// New endpoint interfaces are attached within a second, vanished ones detached; named
/// interfaces that do not exist and missing privileges are clear errors.
#[test]
fn follows_interfaces_and_reports_clear_errors() {
    if !require_root("follows_interfaces_and_reports_clear_errors") {
        return;
    }
    let s = Scenario::build();
    let mut agent = s.start_agent(&["--dump", "json", "--stats-interval", "200ms"]);
    s.node_exec(&[
        "ip", "link", "add", "lxcnew0", "type", "veth", "peer", "name", "lxcnew0p",
    ]);
    s.node_exec(&["ip", "link", "set", "lxcnew0", "up"]);
    // From the moment the interface is up (starting any earlier would time our own `ip`
    // processes too); the agent may only have been faster.
    let t0 = Instant::now();
    let attached = agent.wait_for(SETTLE, |lines| {
        lines
            .iter()
            .any(|l| l.get("attached").is_some_and(|a| a.s("name") == "lxcnew0"))
    });
    let took = t0.elapsed();
    assert!(
        attached,
        "new veth not attached; stderr:\n{}",
        agent.stderr()
    );
    println!("new interface attached after {took:?}");
    // The spec is "within a second"; 3 s leaves a loaded CI machine room and still catches an
    // agent that only notices interfaces on some slow rescan.
    assert!(
        took < Duration::from_secs(3),
        "attached after {took:?}, want < 1 s (3 s allowed for a loaded machine)"
    );
    s.node_exec(&["ip", "link", "del", "lxcnew0"]);
    assert!(
        agent.wait_for(SETTLE, |lines| {
            lines
                .iter()
                .any(|l| l.get("detached").is_some_and(|a| a.s("name") == "lxcnew0"))
        }),
        "deleted veth not detached within {SETTLE:?}; stderr:\n{}",
        agent.stderr()
    );
    assert!(agent.stop().success());

    let mut bad = Spawned::start(&s.node(), &bin_path("monitor-agent"), &["--uplink", "eth9"]);
    assert!(!bad.wait_exit(Duration::from_secs(20)).success());
    assert!(
        bad.stderr().contains("interface eth9 not found"),
        "stderr: {}",
        bad.stderr()
    );

    let mut cmd = std::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &s.node(),
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(bin_path("monitor-agent"));
    let mut unpriv = Spawned::spawn(cmd);
    assert!(!unpriv.wait_exit(Duration::from_secs(20)).success());
    assert!(
        unpriv
            .stderr()
            .contains("missing capabilities: CAP_NET_ADMIN, CAP_BPF"),
        "stderr: {}",
        unpriv.stderr()
    );
}

/// A SIGTERM (what Kubernetes and systemd send; every other test stops the agent with SIGINT)
/// stops the agent in order, losing nothing and leaving nothing behind: it exits 0 in time; the
/// flows of the last packets before the signal, still in the ring then (a long poll interval
/// keeps them there), reach both the export file and a `flowctl observe --follow` that is
/// streaming, whose stream then ends without an error; every flow the follower saw is in the
/// export file, which ends with a complete line; the programs the agent loaded (the TC programs
/// and the drop tracepoint) are unloaded, and no tcx link or tc filter remains.
#[test]
fn shutdown_leaves_nothing_behind() {
    if !require_root("shutdown_leaves_nothing_behind") {
        return;
    }
    let s = Scenario::build();
    let _dns = traffic::udp_server(&s.world(), addr(WORLD_IP, 53), true);
    let export = s.dir().join("export.json");
    let ours_before = flowscope_programs();
    let mut agent = s.start_agent(&[
        "--export-file-path",
        export.to_str().expect("utf-8 path"),
        "--poll-interval",
        "1s",
    ]);
    // The exact programs this agent attached (other agents may run on the machine).
    let ids = attached_program_ids(&s);
    assert_eq!(
        ids.len(),
        8,
        "two programs on each of the four interfaces: {ids:?}"
    );
    // Every program this agent loaded: the TC programs and the drop tracepoint.
    let loaded_by_agent: Vec<u32> = flowscope_programs()
        .into_iter()
        .filter(|id| !ours_before.contains(id))
        .collect();
    assert!(
        ids.iter().all(|id| loaded_by_agent.contains(id))
            && loaded_by_agent.iter().any(|id| !ids.contains(id)),
        "the attached TC programs {ids:?} and the drop tracepoint among {loaded_by_agent:?}"
    );

    let mut follow = Spawned::spawn({
        let mut cmd = std::process::Command::new(bin_path("flowctl"));
        cmd.arg("--server")
            .arg(format!("unix://{}", s.agent_socket().display()))
            .args(["observe", "--follow", "-o", "json"]);
        cmd
    });
    // Subscribed once it shows a flow (as in flowctl.rs: a fixed sleep is no barrier).
    let deadline = Instant::now() + Duration::from_secs(20);
    for probe in 1.. {
        traffic::udp_request(&s.pod_a(), addr(WORLD_IP, 53), b"probe").expect("UDP probe");
        if follow.wait_for(Duration::from_millis(1500), |lines| !lines.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline && probe < 20,
            "follow printed nothing after {probe} probes; stderr: {}",
            follow.stderr()
        );
    }

    // The last packets: one datagram from each of a few fresh ports, then the signal at once.
    let ports: Vec<u16> = (0..8)
        .map(|_| traffic::udp_send(&s.pod_a(), addr(WORLD_IP, 53), 1, 32, None).expect("UDP"))
        .collect();
    agent.signal(libc::SIGTERM);
    let t0 = Instant::now();
    let status = agent.wait_exit(Duration::from_secs(15));
    let took = t0.elapsed();
    assert!(status.success(), "exit {status:?}: {}", agent.stderr());
    println!("stopped {took:?} after SIGTERM");

    // The follower's stream ends by itself (its server went away cleanly), without an error.
    let fstatus = follow.wait_exit(Duration::from_secs(10));
    assert!(
        fstatus.success() && !follow.stderr().contains("error"),
        "follower: exit {fstatus:?}, stderr: {}",
        follow.stderr()
    );
    let text = std::fs::read_to_string(&export).expect("the export file");
    assert!(
        text.ends_with('\n'),
        "the export file ends with a complete line: {:?}",
        &text[text.len().saturating_sub(200)..]
    );
    let exported: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("export line ({e}): {l:?}")))
        .collect();
    let followed = follow.lines();
    let flows = |lines: &[Value]| -> Vec<Value> {
        lines
            .iter()
            .filter_map(|l| l.get("flow").cloned())
            .collect()
    };
    let (exported, followed) = (flows(&exported), flows(&followed));
    let uuids: std::collections::HashSet<&str> =
        exported.iter().filter_map(|f| f["uuid"].as_str()).collect();
    let missing: Vec<&Value> = followed
        .iter()
        .filter(|f| !f["uuid"].as_str().is_some_and(|u| uuids.contains(u)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of the {} flows the follower saw are not in the export file, e.g. {:?}",
        missing.len(),
        followed.len(),
        missing.first()
    );
    let from_port = |flows: &[Value], port: u16| {
        flows.iter().any(|f| {
            f["IP"]["source"] == POD_A_IP && f["l4"]["UDP"]["source_port"] == u64::from(port)
        })
    };
    for port in &ports {
        assert!(
            from_port(&exported, *port),
            "no exported flow of the datagram from port {port} (sent just before SIGTERM)"
        );
        assert!(
            from_port(&followed, *port),
            "the follower did not get the flow of the datagram from port {port} (sent just before SIGTERM)"
        );
    }

    // Programs are freed after an RCU grace period: give it a moment.
    let loaded = || -> Vec<u32> {
        flowscope_programs()
            .into_iter()
            .filter(|id| loaded_by_agent.contains(id))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !loaded().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        loaded(),
        Vec::<u32>::new(),
        "programs of this agent still loaded after shutdown"
    );
    assert!(
        attached_program_ids(&s).is_empty(),
        "tcx links left on the node's interfaces"
    );
    for dev in [LXC_A, LXC_B, UPLINK, "fs_host"] {
        for dir in ["ingress", "egress"] {
            let out = testbed::netns::run(&s.node(), &["tc", "filter", "show", "dev", dev, dir]);
            assert!(
                out.stdout.is_empty(),
                "{dev} {dir}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// IDs of the BPF programs loaded on the machine whose name is one of ours (`fs_…`).
fn flowscope_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("fs_")))
        .map(|p| p.id())
        .collect()
}

/// IDs of the programs attached with tcx to the node's interfaces (queried from inside the node
/// namespace, where the interface names mean something).
fn attached_program_ids(s: &Scenario) -> Vec<u32> {
    testbed::netns::in_netns(&s.node(), || {
        use aya::programs::{SchedClassifier, tc::TcAttachType};
        let mut ids = Vec::new();
        for dev in [LXC_A, LXC_B, UPLINK, "fs_host"] {
            for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
                if let Ok((_, progs)) = SchedClassifier::query_tcx(dev, dir) {
                    ids.extend(progs.iter().map(|p| p.id()));
                }
            }
        }
        ids
    })
}
