//! More of the datapath against real traffic, each test proving a claim of README.md: IPv6
//! behind extension headers and SCTP on the TC path, what the `low` and `max` aggregation levels
//! report (counted against the agent's conntrack), the host device's points, and both attach
//! modes. The agent binary runs in the node namespace of the reference scenario; its
//! `--dump json` output is checked event by event.
//!
//! Privileged: needs root. Run serially (`--test-threads=1`): the attach-mode test looks at the
//! BPF programs loaded on the whole machine.

use std::{
    net::SocketAddr,
    process::Command,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use flowscope_proto::{
    flow::{Flow, TraceObservationPoint, layer4::Protocol},
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
};
use serde_json::Value;
use testbed::observe::addr;
use testbed::{
    Scenario, bin_path,
    netns::run,
    packets::{self, Ipv6Ext},
    process::Spawned,
    require_root,
    scenario::{
        GATEWAY_IP, HOST_DEV, LXC_A, LXC_B, NODE_IP, POD_A_IP, POD_A_IP6, POD_B_IP, POD_B_IP6,
        UPLINK, WORLD_IP,
    },
    traffic,
};

const SETTLE: Duration = Duration::from_secs(10);

/// The world's IPv6 address on the uplink's link, added by [`ipv6_uplink`].
const WORLD_IP6: &str = "2001:db8:100::1";
/// The node's IPv6 address on the uplink.
const NODE_IP6: &str = "2001:db8:100::10";

/// Field accessors on an event or a conntrack entry of the dump.
trait Ev {
    fn s(&self, k: &str) -> &str;
    fn n(&self, k: &str) -> u64;
    fn b(&self, k: &str) -> bool;
}

impl Ev for Value {
    fn s(&self, k: &str) -> &str {
        self.get(k).and_then(Value::as_str).unwrap_or("")
    }
    fn n(&self, k: &str) -> u64 {
        self.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX)
    }
    fn b(&self, k: &str) -> bool {
        self.get(k).and_then(Value::as_bool).unwrap_or(false)
    }
}

fn describe(evs: &[Value]) -> String {
    evs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A packet pattern: observation point, L4 protocol, addresses, ports (`None`: any).
#[derive(Clone, Copy, Debug)]
struct Pat<'a> {
    point: &'a str,
    proto: u64,
    src: &'a str,
    dst: &'a str,
    sport: Option<u64>,
    dport: Option<u64>,
}

impl Pat<'_> {
    fn matches(&self, e: &Value) -> bool {
        e.s("kind") == "trace"
            && e.s("point") == self.point
            && e.n("proto") == self.proto
            && e.s("src") == self.src
            && e.s("dst") == self.dst
            && self.sport.is_none_or(|p| e.n("src_port") == p)
            && self.dport.is_none_or(|p| e.n("dst_port") == p)
    }
}

/// Starts the agent with every packet reported and its events printed.
fn agent_none(s: &Scenario) -> Spawned {
    s.start_agent(&[
        "--dump",
        "json",
        "--stats-interval",
        "200ms",
        "--aggregation",
        "none",
    ])
}

/// Waits until every pattern of `pats` has an event; panics naming the missing ones.
fn wait_all(agent: &mut Spawned, pats: &[Pat<'_>]) -> Vec<Value> {
    let ok = agent.wait_for(SETTLE, |lines| {
        let evs: Vec<&Value> = lines.iter().filter_map(|l| l.get("event")).collect();
        pats.iter().all(|p| evs.iter().any(|e| p.matches(e)))
    });
    let evs = agent.values("event");
    if !ok {
        let missing: Vec<_> = pats
            .iter()
            .filter(|p| !evs.iter().any(|e| p.matches(e)))
            .collect();
        panic!(
            "not seen within {SETTLE:?}: {missing:#?}\n{}",
            describe(&evs)
        );
    }
    evs
}

/// Gives the uplink IPv6 addresses (the scenario's has only IPv4) and the world a route back to
/// the pods: IPv6 from a pod to the world is then forwarded, untranslated, through the uplink.
fn ipv6_uplink(s: &Scenario) {
    s.node_exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{NODE_IP6}/64"),
        "dev",
        UPLINK,
        "nodad",
    ]);
    let w = s.world();
    run(
        &w,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{WORLD_IP6}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    run(
        &w,
        &[
            "ip",
            "-6",
            "route",
            "add",
            "fd00:10:244::/64",
            "via",
            NODE_IP6,
        ],
    );
}

/// UDP over IPv6 behind hop-by-hop and destination-options headers, and fragmented, from pod-a
/// to the world and to pod-b: every observation point reports UDP with the datagram's ports
/// (the first fragment; later fragments carry no L4 header and are reported without ports).
#[test]
fn ipv6_extension_headers_on_the_tc_path() {
    if !require_root("ipv6_extension_headers_on_the_tc_path") {
        return;
    }
    let s = Scenario::build();
    ipv6_uplink(&s);
    let _echo_world = traffic::udp_server(&s.world(), addr(WORLD_IP6, 7001), true);
    let _echo_b = traffic::udp_server(&s.pod_b(), addr(POD_B_IP6, 7001), true);
    let mut agent = agent_none(&s);

    const HBH: &[Ipv6Ext] = &[Ipv6Ext::HopByHop];
    const DST: &[Ipv6Ext] = &[Ipv6Ext::DestOpts];
    const BOTH: &[Ipv6Ext] = &[Ipv6Ext::HopByHop, Ipv6Ext::DestOpts];
    // (headers, datagram size, destination); 2,000 bytes do not fit the 1,500-byte MTU: the
    // sender fragments ([HBH] Frag [Dst] UDP), and so does the echo.
    let cases: [(&str, &[Ipv6Ext], usize, &str); 5] = [
        ("hop-by-hop", HBH, 100, WORLD_IP6),
        ("destination options", DST, 100, WORLD_IP6),
        ("hop-by-hop + destination options", BOTH, 100, WORLD_IP6),
        ("hop-by-hop, fragmented", HBH, 2000, WORLD_IP6),
        (
            "hop-by-hop + destination options, fragmented",
            BOTH,
            2000,
            WORLD_IP6,
        ),
    ];
    let mut sent = Vec::new();
    for (what, exts, size, dst) in cases {
        let (port, echoed) = packets::udp6_with_ext(&s.pod_a(), addr(dst, 7001), exts, size)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(echoed, size, "{what}: echo");
        sent.push((what, u64::from(port), size > 1500, exts.len(), size));
    }
    let (to_b_port, _) = packets::udp6_with_ext(&s.pod_a(), addr(POD_B_IP6, 7001), HBH, 100)
        .expect("hop-by-hop to pod-b");
    let to_b_port = u64::from(to_b_port);

    let udp = |point, src, dst, sport, dport| Pat {
        point,
        proto: 17,
        src,
        dst,
        sport: Some(sport),
        dport: Some(dport),
    };
    let mut pats = Vec::new();
    for &(_, port, ..) in &sent {
        pats.push(udp("from-endpoint", POD_A_IP6, WORLD_IP6, port, 7001));
        pats.push(udp("to-network", POD_A_IP6, WORLD_IP6, port, 7001));
        pats.push(udp("from-network", WORLD_IP6, POD_A_IP6, 7001, port));
        pats.push(udp("to-endpoint", WORLD_IP6, POD_A_IP6, 7001, port));
    }
    pats.push(udp("from-endpoint", POD_A_IP6, POD_B_IP6, to_b_port, 7001));
    pats.push(udp("to-endpoint", POD_A_IP6, POD_B_IP6, to_b_port, 7001));
    let evs = wait_all(&mut agent, &pats);
    let ctx = describe(&evs);

    for &(what, port, fragmented, n_ext, size) in &sent {
        for (point, ifname) in [("from-endpoint", LXC_A), ("to-network", UPLINK)] {
            let p = udp(point, POD_A_IP6, WORLD_IP6, port, 7001);
            let with_l4: Vec<&Value> = evs.iter().filter(|e| p.matches(e)).collect();
            assert_eq!(with_l4.len(), 1, "{what} at {point}: one datagram\n{ctx}");
            let e = with_l4[0];
            assert!(e.b("has_l4"), "{what} at {point}: {e}");
            assert_eq!(e.s("ifname"), ifname, "{what} at {point}: {e}");
            // Untranslated, the datagram meets the same conntrack entry on the uplink: there it
            // is the second sighting of one packet.
            if !fragmented {
                // The headers were on the wire: Ethernet, IPv6, 8 bytes each, UDP, payload.
                let len = 14 + 40 + 8 * n_ext + 8 + size;
                assert_eq!(e.n("len"), len as u64, "{what} at {point}: {e}");
            }
            if point == "from-endpoint" {
                assert_eq!(e.s("ct_state"), "new", "{what} at {point}: {e}");
            } else {
                assert!(e.b("transit_dup"), "{what} at {point}: {e}");
            }
            if fragmented {
                // The later fragments: same addresses, no L4 header, so no ports.
                let rest = evs
                    .iter()
                    .filter(|e| {
                        e.s("point") == point
                            && e.s("src") == POD_A_IP6
                            && e.s("dst") == WORLD_IP6
                            && !e.b("has_l4")
                            && e.n("src_port") == 0
                            && e.n("dst_port") == 0
                    })
                    .count();
                assert!(rest >= 1, "{what} at {point}: no later fragment\n{ctx}");
            }
        }
        let reply = udp("to-endpoint", WORLD_IP6, POD_A_IP6, 7001, port);
        let e = evs.iter().find(|e| reply.matches(e)).expect("waited for");
        assert_eq!(e.s("ct_state"), "reply", "{what}: echo at to-endpoint: {e}");
    }
    let to_b = evs
        .iter()
        .find(|e| udp("to-endpoint", POD_A_IP6, POD_B_IP6, to_b_port, 7001).matches(e))
        .expect("waited for");
    assert_eq!(to_b.s("ifname"), LXC_B);
    assert!(to_b.b("has_l4"), "{to_b}");
    assert_eq!(
        evs.iter()
            .filter(|e| e.s("point") == "to-endpoint"
                && e.n("proto") != 17
                && e.s("src") == POD_A_IP6)
            .count(),
        0,
        "an extension header taken for the upper layer:\n{ctx}"
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// SCTP (hand-built INIT and INIT-ACK on raw sockets: the test kernel has no SCTP stack) from
/// pod-a to the world over IPv4 (masqueraded) and IPv6: SCTP with the association's ports at all
/// four observation points, with the conntrack states, and as Hubble's `l4.SCTP` in flowctl.
#[test]
fn sctp_on_the_tc_path() {
    if !require_root("sctp_on_the_tc_path") {
        return;
    }
    let s = Scenario::build();
    ipv6_uplink(&s);
    let responder4 = packets::sctp_responder(&s.world(), addr(WORLD_IP, 7002));
    let responder6 = packets::sctp_responder(&s.world(), addr(WORLD_IP6, 7002));
    let mut agent = agent_none(&s);
    // The INIT-ACK comes back: the node's conntrack and NAT handled the association.
    packets::sctp_init(&s.pod_a(), 40132, addr(WORLD_IP, 7002)).expect("SCTP over IPv4");
    packets::sctp_init(&s.pod_a(), 40133, addr(WORLD_IP6, 7002)).expect("SCTP over IPv6");
    assert_eq!(responder4.served.load(Ordering::Relaxed), 1);
    assert_eq!(responder6.served.load(Ordering::Relaxed), 1);

    let sctp = |point, src, dst, sport, dport| Pat {
        point,
        proto: 132,
        src,
        dst,
        sport,
        dport,
    };
    let v4 = [
        sctp("from-endpoint", POD_A_IP, WORLD_IP, Some(40132), Some(7002)),
        sctp("to-network", NODE_IP, WORLD_IP, None, Some(7002)),
        sctp("from-network", WORLD_IP, NODE_IP, Some(7002), None),
        sctp("to-endpoint", WORLD_IP, POD_A_IP, Some(7002), Some(40132)),
    ];
    let v6 = [
        sctp(
            "from-endpoint",
            POD_A_IP6,
            WORLD_IP6,
            Some(40133),
            Some(7002),
        ),
        sctp("to-network", POD_A_IP6, WORLD_IP6, Some(40133), Some(7002)),
        sctp(
            "from-network",
            WORLD_IP6,
            POD_A_IP6,
            Some(7002),
            Some(40133),
        ),
        sctp("to-endpoint", WORLD_IP6, POD_A_IP6, Some(7002), Some(40133)),
    ];
    let evs = wait_all(&mut agent, &[v4, v6].concat());
    let ctx = describe(&evs);
    let one = |p: &Pat<'_>| -> &Value {
        let found: Vec<&Value> = evs.iter().filter(|e| p.matches(e)).collect();
        assert_eq!(found.len(), 1, "{p:?}: one packet each way\n{ctx}");
        found[0]
    };
    // The masqueraded association at the uplink: the node's address and its port, both ways.
    let out = one(&v4[1]);
    let nat_port = out.n("src_port");
    let back = one(&v4[2]);
    assert_eq!(back.n("dst_port"), nat_port, "{back}");
    // IPv4 is translated on the uplink: two tuples, two conntrack entries, each hop reported
    // with its entry's state. IPv6 is not: the uplink hop of the INIT and the veth hop of the
    // INIT-ACK are second sightings of packets the node already traced where they entered.
    for (p, state, ifname, dup) in [
        (&v4[0], Some("new"), LXC_A, false),
        (&v4[1], Some("new"), UPLINK, false),
        (&v4[2], Some("reply"), UPLINK, false),
        (&v4[3], Some("reply"), LXC_A, false),
        (&v6[0], Some("new"), LXC_A, false),
        (&v6[1], None, UPLINK, true),
        (&v6[2], Some("reply"), UPLINK, false),
        (&v6[3], Some("reply"), LXC_A, true),
    ] {
        let e = one(p);
        assert!(e.b("has_l4"), "{e}");
        if let Some(state) = state {
            assert_eq!(e.s("ct_state"), state, "{e}");
        }
        assert_eq!(e.s("ifname"), ifname, "{e}");
        assert_eq!(e.b("transit_dup"), dup, "{e}");
    }

    // Hubble's view: l4.SCTP with the ports, selected by `--protocol sctp`.
    let out = Command::new("timeout")
        .arg("20")
        .arg(bin_path("flowctl"))
        .arg("--server")
        .arg(format!("unix://{}", s.agent_socket().display()))
        .args([
            "observe",
            "--protocol",
            "sctp",
            "--last",
            "100",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flows: Vec<Flow> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| flowscope_proto::json::from_json::<GetFlowsResponse>(l).unwrap())
        .filter_map(|r| match r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(flows.len(), 8, "two packets at four points: {flows:#?}");
    for f in &flows {
        let l4 = f.l4.as_ref().expect("l4");
        assert!(matches!(l4.protocol, Some(Protocol::Sctp(_))), "{f:?}");
    }
    let from_ep: Vec<_> = flows
        .iter()
        .filter(|f| f.trace_observation_point == TraceObservationPoint::FromEndpoint as i32)
        .map(|f| f.l4.as_ref().and_then(|l| l.ports()))
        .collect();
    assert_eq!(from_ep, [Some((40132, 7002)), Some((40133, 7002))]);
    assert!(agent.stop().success(), "{}", agent.stderr());
}

/// The conntrack entry of the agent's exit dump whose tuple is `src:sport -> dst:dport`.
fn ct_entry<'a>(ct: &'a [Value], src: &str, sport: u64, dst: &str, dport: u64) -> &'a Value {
    ct.iter()
        .find(|c| {
            c.s("src") == src
                && c.n("src_port") == sport
                && c.s("dst") == dst
                && c.n("dst_port") == dport
        })
        .unwrap_or_else(|| panic!("no conntrack entry {src}:{sport} -> {dst}:{dport}: {ct:#?}"))
}

/// Sends `count` UDP datagrams from pod-a to `dst` (an echo server behind `served`), paced, and
/// waits until the server has them all (or deliveries stop); returns the client's port.
fn udp_burst(
    s: &Scenario,
    dst: SocketAddr,
    served: &std::sync::atomic::AtomicU64,
    count: u64,
) -> u64 {
    let base = served.load(Ordering::Relaxed);
    let port = traffic::udp_send(
        &s.pod_a(),
        dst,
        count as usize,
        64,
        Some(Duration::from_micros(500)),
    )
    .expect("send") as u64;
    let deadline = Instant::now() + SETTLE;
    while served.load(Ordering::Relaxed) < base + count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    port
}

/// `low` reports every packet once per conntrack tuple: a pod-to-pod packet, which crosses two
/// monitored interfaces untranslated, only where it enters the node (`none` reports it at both);
/// a masqueraded packet once under the pod's tuple (its veth) and once under the node's (the
/// uplink). Each count equals the agent's conntrack count of that tuple and direction.
#[test]
fn aggregation_low_reports_each_packet_once_per_tuple() {
    if !require_root("aggregation_low_reports_each_packet_once_per_tuple") {
        return;
    }
    const N: u64 = 200;
    let s = Scenario::build();
    let echo_b = traffic::udp_server(&s.pod_b(), addr(POD_B_IP, 5002), true);
    let echo_w = traffic::udp_server(&s.world(), addr(WORLD_IP, 5001), true);
    for level in ["none", "low"] {
        let mut agent = s.start_agent(&[
            "--dump",
            "json",
            "--stats-interval",
            "200ms",
            "--aggregation",
            level,
        ]);
        let p2p = udp_burst(&s, addr(POD_B_IP, 5002), &echo_b.served, N);
        let p2w = udp_burst(&s, addr(WORLD_IP, 5001), &echo_w.served, N);
        // The last echoes are on their way back: let them pass the hooks. Whatever passes after
        // the agent detaches is neither traced nor counted, so the comparison holds either way.
        std::thread::sleep(Duration::from_millis(300));
        assert!(agent.stop().success(), "{}", agent.stderr());
        let evs = agent.values("event");
        let ct = agent.values("conntrack").pop().expect("conntrack dump");
        let ct = ct.as_array().unwrap();
        let st = agent.values("stats").pop().expect("stats");
        assert_eq!(
            st.n("ring_lost"),
            0,
            "{level}: nothing lost in the ring: {st}"
        );
        let traces = |point: &str, ifname: &str, src: &str, sport: u64, dst: &str, dport: u64| {
            evs.iter()
                .filter(|e| {
                    e.s("kind") == "trace"
                        && e.s("point") == point
                        && e.s("ifname") == ifname
                        && e.s("src") == src
                        && e.n("src_port") == sport
                        && e.s("dst") == dst
                        && e.n("dst_port") == dport
                })
                .count() as u64
        };

        // Pod to pod: one entry, both directions.
        let e = ct_entry(ct, POD_A_IP, p2p, POD_B_IP, 5002);
        let (tx, rx) = (e.n("tx_packets"), e.n("rx_packets"));
        assert_eq!(tx, N, "{level}: every request counted once: {e}");
        assert!(rx > 0, "{level}: echoes counted: {e}");
        let req_in = traces("from-endpoint", LXC_A, POD_A_IP, p2p, POD_B_IP, 5002);
        let req_out = traces("to-endpoint", LXC_B, POD_A_IP, p2p, POD_B_IP, 5002);
        let rep_in = traces("from-endpoint", LXC_B, POD_B_IP, 5002, POD_A_IP, p2p);
        let rep_out = traces("to-endpoint", LXC_A, POD_B_IP, 5002, POD_A_IP, p2p);
        println!(
            "aggregation {level}, pod to pod: {N} requests ({req_in} + {req_out} traces), {rx} echoes ({rep_in} + {rep_out} traces)"
        );
        assert_eq!(req_in, tx, "{level}: requests where they enter the node");
        assert_eq!(rep_in, rx, "{level}: echoes where they enter the node");
        let (want_out, want_rep_out) = if level == "low" { (0, 0) } else { (tx, rx) };
        assert_eq!(
            req_out, want_out,
            "{level}: requests where they leave the node"
        );
        assert_eq!(
            rep_out, want_rep_out,
            "{level}: echoes where they leave the node"
        );

        // Pod to world: the pod's tuple on its veth, the node's on the uplink.
        let pod = ct_entry(ct, POD_A_IP, p2w, WORLD_IP, 5001);
        let nat = ct
            .iter()
            .find(|c| c.s("src") == NODE_IP && c.s("dst") == WORLD_IP && c.n("dst_port") == 5001)
            .unwrap_or_else(|| panic!("no NAT entry: {ct:#?}"));
        let nat_port = nat.n("src_port");
        assert_eq!(pod.n("tx_packets"), N, "{level}: {pod}");
        assert_eq!(nat.n("tx_packets"), N, "{level}: {nat}");
        for (what, got, want) in [
            (
                "from-endpoint (requests, pod's tuple)",
                traces("from-endpoint", LXC_A, POD_A_IP, p2w, WORLD_IP, 5001),
                pod.n("tx_packets"),
            ),
            (
                "to-network (requests, node's tuple)",
                traces("to-network", UPLINK, NODE_IP, nat_port, WORLD_IP, 5001),
                nat.n("tx_packets"),
            ),
            (
                "from-network (echoes, node's tuple)",
                traces("from-network", UPLINK, WORLD_IP, 5001, NODE_IP, nat_port),
                nat.n("rx_packets"),
            ),
            (
                "to-endpoint (echoes, pod's tuple)",
                traces("to-endpoint", LXC_A, WORLD_IP, 5001, POD_A_IP, p2w),
                pod.n("rx_packets"),
            ),
        ] {
            assert_eq!(got, want, "{level}: {what}: traces = conntrack packets");
        }
        println!(
            "aggregation {level}, pod to world: {} requests, {} echoes, reported at each of the four points",
            pod.n("tx_packets"),
            pod.n("rx_packets")
        );
    }
}

/// Under `medium` and `max`, a trace per new connection and per first sighting of each TCP flag
/// in each direction, then at most one per interval (5 s, 30 s): a UDP exchange of 6.5 s
/// (a datagram every 100 ms) is reported twice at each point under medium, one of 31 s (a
/// datagram a second) twice under max, the second trace one interval after the first; the
/// flags of an HTTP GET reported at each point are exactly those conntrack saw, each reported
/// once. Conntrack counts every packet at both levels.
#[test]
fn aggregation_medium_and_max_intervals_and_flags() {
    if !require_root("aggregation_medium_and_max_intervals_and_flags") {
        return;
    }
    let s = Scenario::build();
    let echo = traffic::udp_server(&s.world(), addr(WORLD_IP, 5003), true);
    let _http = traffic::http_server(&s.world(), addr(WORLD_IP, 80), "hello\n");
    // (level, its interval, datagrams, pace): the exchange lasts between one and two intervals.
    for (level, interval, n, pace) in [
        (
            "medium",
            Duration::from_secs(5),
            65u64,
            Duration::from_millis(100),
        ),
        ("max", Duration::from_secs(30), 32, Duration::from_secs(1)),
    ] {
        let mut agent = s.start_agent(&[
            "--dump",
            "json",
            "--stats-interval",
            "200ms",
            "--aggregation",
            level,
        ]);
        let base = echo.served.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let port = traffic::udp_send(&s.pod_a(), addr(WORLD_IP, 5003), n as usize, 16, Some(pace))
            .expect("send") as u64;
        let took = t0.elapsed();
        assert!(
            took > interval + pace / 2 && took < interval * 2 - pace * 5,
            "{n} datagrams every {pace:?} took {took:?}: the machine is too loaded for this test"
        );
        let get = traffic::http_get(&s.pod_a(), addr(WORLD_IP, 80)).expect("HTTP GET");
        let deadline = Instant::now() + SETTLE;
        while echo.served.load(Ordering::Relaxed) < base + n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(agent.stop().success(), "{}", agent.stderr());
        let evs = agent.values("event");
        let ctx = describe(&evs);
        let ct = agent.values("conntrack").pop().expect("conntrack dump");
        let ct = ct.as_array().unwrap();

        let pod = ct_entry(ct, POD_A_IP, port, WORLD_IP, 5003);
        let nat = ct
            .iter()
            .find(|c| c.s("src") == NODE_IP && c.s("dst") == WORLD_IP && c.n("dst_port") == 5003)
            .unwrap_or_else(|| panic!("no NAT entry: {ct:#?}"));
        let nat_port = nat.n("src_port");
        assert_eq!(
            pod.n("tx_packets"),
            n,
            "{level}: every datagram counted: {pod}"
        );
        assert_eq!(nat.n("tx_packets"), n, "{level}: {nat}");
        assert!(
            pod.n("rx_packets") >= n - 2,
            "{level}: echoes counted: {pod}"
        );
        for (point, src, sport, dst, dport) in [
            ("from-endpoint", POD_A_IP, port, WORLD_IP, 5003),
            ("to-network", NODE_IP, nat_port, WORLD_IP, 5003),
            ("from-network", WORLD_IP, 5003, NODE_IP, nat_port),
            ("to-endpoint", WORLD_IP, 5003, POD_A_IP, port),
        ] {
            let p = Pat {
                point,
                proto: 17,
                src,
                dst,
                sport: Some(sport),
                dport: Some(dport),
            };
            let times: Vec<u64> = evs
                .iter()
                .filter(|e| p.matches(e))
                .map(|e| e.n("ktime_ns"))
                .collect();
            assert_eq!(times.len(), 2, "{level}: UDP traces at {point}\n{ctx}");
            let gap = Duration::from_nanos(times[1] - times[0]);
            println!(
                "aggregation {level}: {n} datagrams over {took:?}: 2 traces at {point}, {gap:?} apart"
            );
            // The datapath decides on its coarse clock (a tick, 1-10 ms, behind the precise one
            // the events carry); the second report goes with the first datagram after the
            // interval.
            assert!(
                gap + Duration::from_millis(20) >= interval && gap <= interval + pace * 2,
                "{level} {point}: traces {gap:?} apart, interval {interval:?}"
            );
        }

        // TCP: each flag reported the first time it is seen in a direction, nothing else (the
        // exchange is far shorter than the interval).
        let hport = u64::from(get.local_port);
        let entry = ct_entry(ct, POD_A_IP, hport, WORLD_IP, 80);
        for (point, src, sport, dst, dport, seen) in [
            (
                "from-endpoint",
                POD_A_IP,
                hport,
                WORLD_IP,
                80,
                entry.n("flags_seen_tx"),
            ),
            (
                "to-endpoint",
                WORLD_IP,
                80,
                POD_A_IP,
                hport,
                entry.n("flags_seen_rx"),
            ),
        ] {
            let p = Pat {
                point,
                proto: 6,
                src,
                dst,
                sport: Some(sport),
                dport: Some(dport),
            };
            let flags: Vec<u64> = evs
                .iter()
                .filter(|e| p.matches(e))
                .map(|e| e.n("tcp_flags"))
                .collect();
            let mut union = 0;
            for f in &flags {
                assert_ne!(
                    f & !union,
                    0,
                    "{level} {point}: {flags:x?} reports no new flag"
                );
                union |= f;
            }
            assert_eq!(
                union, seen,
                "{level} {point}: reported flags {flags:x?} = the flags conntrack saw"
            );
            let packets = if point == "from-endpoint" {
                entry.n("tx_packets")
            } else {
                entry.n("rx_packets")
            };
            println!(
                "aggregation {level}: HTTP GET at {point}: {} traces for {packets} packets, flags {flags:x?}",
                flags.len()
            );
        }
    }
}

/// `flowctl observe args… -o json` against the scenario's agent: its flows.
fn observe(s: &Scenario, args: &[&str]) -> Vec<Flow> {
    let out = Command::new("timeout")
        .arg("20")
        .arg(bin_path("flowctl"))
        .arg("--server")
        .arg(format!("unix://{}", s.agent_socket().display()))
        .arg("observe")
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flowctl observe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| flowscope_proto::json::from_json::<GetFlowsResponse>(l).unwrap())
        .filter_map(|r| match r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f),
            _ => None,
        })
        .collect()
}

/// The host device's points. The reference node delivers a pod's packets for the node's own
/// addresses straight from the pod's veth, and reaches its pods straight over their veths: that
/// traffic is seen at from-endpoint and to-endpoint only. A node that routes between its stack
/// and its pods through its gateway pair (`fs_host`/`fs_net`, like Cilium's
/// `cilium_host`/`cilium_net`) shows the host's packets at from-host (leaving the stack on the
/// gateway device) and the pods' packets for the host at to-host (reaching the stack through
/// it), with their conntrack states, in the dump and in flowctl as Hubble's FROM_HOST/TO_HOST.
#[test]
fn host_device_points() {
    if !require_root("host_device_points") {
        return;
    }
    let s = Scenario::build();
    let mut agent = agent_none(&s);
    let echo = |point, ifname, src, dst, icmp_type| {
        move |e: &Value| {
            e.s("kind") == "trace"
                && e.s("point") == point
                && e.s("ifname") == ifname
                && e.n("proto") == 1
                && e.s("src") == src
                && e.s("dst") == dst
                && e.n("icmp_type") == icmp_type
        }
    };
    let icmp_on_host_dev =
        |e: &Value| e.s("ifname") == HOST_DEV && e.s("kind") == "trace" && e.n("proto") == 1;

    // 1. Pod-a pings its gateway address on the reference node: straight from the veth.
    assert!(traffic::ping(&s.pod_a(), GATEWAY_IP, 1), "ping the gateway");
    let reply = echo("to-endpoint", LXC_A, GATEWAY_IP, POD_A_IP, 0);
    assert!(
        agent.wait_for(SETTLE, |l| l
            .iter()
            .filter_map(|l| l.get("event"))
            .any(reply)),
        "no echo reply at to-endpoint:\n{}",
        describe(&agent.values("event"))
    );
    let direct = agent.values("event");
    assert!(
        direct
            .iter()
            .any(echo("from-endpoint", LXC_A, POD_A_IP, GATEWAY_IP, 8)),
        "{}",
        describe(&direct)
    );
    assert!(
        !direct.iter().any(icmp_on_host_dev),
        "the direct path does not cross the gateway device:\n{}",
        describe(&direct)
    );

    // 2. Route between the node's stack and the pods through the gateway pair: what the node
    // sends to a pod leaves through fs_host (and is forwarded from fs_net to the pod's veth);
    // what pod-a sends to the gateway address goes out fs_net and reaches the stack through
    // fs_host. The local table moves behind the rule that does the latter.
    for cmd in [
        "sysctl -qw net.ipv4.conf.fs_net.accept_local=1",
        "sysctl -qw net.ipv4.conf.fs_net.proxy_arp=1",
        "sysctl -qw net.ipv4.conf.fs_net.rp_filter=0",
        "sysctl -qw net.ipv4.conf.fs_host.rp_filter=0",
        "sysctl -qw net.ipv4.conf.all.rp_filter=0",
        "ip route add 10.244.0.0/24 dev fs_host src 10.244.0.201 table 100",
        "ip rule add pref 100 iif lo to 10.244.0.0/24 lookup 100",
        "ip route add 10.244.0.201 dev fs_net table 101",
        &format!("ip rule add pref 101 iif {LXC_A} to 10.244.0.201 lookup 101"),
        "ip rule add pref 1000 lookup local",
        "ip rule del pref 0",
    ] {
        s.node_exec(&cmd.split(' ').collect::<Vec<_>>());
    }
    let before = direct.len();
    assert!(
        traffic::ping(&s.node(), POD_A_IP, 1),
        "the node pings pod-a"
    );
    assert!(
        traffic::ping(&s.pod_a(), GATEWAY_IP, 1),
        "pod-a pings the gateway"
    );
    // (point, interface, source, destination, ICMP type, conntrack state). A packet's second
    // sighting on its way through the node (the departure side) carries the state of its
    // entry's direction once the entry exists: "established" for a request, "reply" for a
    // reply; that of a request is not asserted.
    type Hop<'a> = (&'a str, &'a str, &'a str, &'a str, u64, Option<&'a str>);
    let wanted: [Hop<'_>; 8] = [
        // The node's echo request to pod-a, and pod-a's reply.
        ("from-host", HOST_DEV, GATEWAY_IP, POD_A_IP, 8, Some("new")),
        ("to-endpoint", LXC_A, GATEWAY_IP, POD_A_IP, 8, None),
        (
            "from-endpoint",
            LXC_A,
            POD_A_IP,
            GATEWAY_IP,
            0,
            Some("reply"),
        ),
        ("to-host", HOST_DEV, POD_A_IP, GATEWAY_IP, 0, Some("reply")),
        // Pod-a's echo request to the gateway address, and the node's reply.
        ("from-endpoint", LXC_A, POD_A_IP, GATEWAY_IP, 8, Some("new")),
        ("to-host", HOST_DEV, POD_A_IP, GATEWAY_IP, 8, None),
        (
            "from-host",
            HOST_DEV,
            GATEWAY_IP,
            POD_A_IP,
            0,
            Some("reply"),
        ),
        ("to-endpoint", LXC_A, GATEWAY_IP, POD_A_IP, 0, Some("reply")),
    ];
    let found = |evs: &[Value]| -> Vec<usize> {
        wanted
            .iter()
            .enumerate()
            .filter(|(_, (point, ifname, src, dst, t, state))| {
                evs[before.min(evs.len())..].iter().any(|e| {
                    echo(point, ifname, src, dst, *t)(e)
                        && state.is_none_or(|state| e.s("ct_state") == state)
                })
            })
            .map(|(i, _)| i)
            .collect()
    };
    agent.wait_for(SETTLE, |l| {
        let evs: Vec<Value> = l.iter().filter_map(|l| l.get("event").cloned()).collect();
        found(&evs).len() == wanted.len()
    });
    let evs = agent.values("event");
    let got = found(&evs);
    let missing: Vec<_> = wanted
        .iter()
        .enumerate()
        .filter(|(i, _)| !got.contains(i))
        .map(|(_, w)| w)
        .collect();
    assert!(
        missing.is_empty(),
        "not seen through the gateway pair: {missing:#?}\n{}",
        describe(&evs[before..])
    );

    // Hubble's view of the same: FROM_HOST and TO_HOST, with the ICMP types.
    for (filter, point) in [
        ("trace:from-host", TraceObservationPoint::FromHost),
        ("trace:to-host", TraceObservationPoint::ToHost),
    ] {
        let flows = observe(&s, &["--type", filter, "--ip", POD_A_IP, "--last", "100"]);
        let mut types: Vec<u32> = flows
            .iter()
            .filter_map(|f| match f.l4.as_ref()?.protocol.as_ref()? {
                Protocol::IcmPv4(icmp) => Some(icmp.r#type),
                _ => None,
            })
            .collect();
        types.sort();
        assert_eq!(types, [0, 8], "{filter}: a request and a reply: {flows:#?}");
        assert!(
            flows
                .iter()
                .all(|f| f.trace_observation_point == point as i32),
            "{flows:#?}"
        );
    }
    assert!(agent.stop().success(), "{}", agent.stderr());

    // Conntrack, what README.md says of this path: the node's echo request crossed fs_host
    // (from-host), then went from fs_net, which is not monitored, to pod-a's veth; the datapath
    // cannot tell it is the packet it already counted, and counts it at both. Pod-a's reply,
    // from its veth to fs_host, is counted once.
    let id = evs[before..]
        .iter()
        .find(|e| echo("from-host", HOST_DEV, GATEWAY_IP, POD_A_IP, 8)(e))
        .map(|e| e.n("src_port"))
        .expect("seen");
    let ct = agent.values("conntrack").pop().expect("conntrack dump");
    let entry = ct_entry(ct.as_array().unwrap(), GATEWAY_IP, id, POD_A_IP, 0);
    assert_eq!(
        (entry.n("tx_packets"), entry.n("rx_packets")),
        (2, 1),
        "one echo request counted at both sides of the gateway pair, its reply once: {entry}"
    );
}

/// The node's interfaces the agent attaches to.
const NODE_IFACES: [&str; 4] = [LXC_A, LXC_B, UPLINK, HOST_DEV];

/// The BPF programs hanging on clsact filters of the node's interfaces: (interface, direction,
/// program name, program id), from `tc filter show`.
fn tc_filters(s: &Scenario) -> Vec<(String, String, String, u32)> {
    let mut out = Vec::new();
    for dev in NODE_IFACES {
        for dir in ["ingress", "egress"] {
            let text = run(&s.node(), &["tc", "filter", "show", "dev", dev, dir]).stdout;
            let text = String::from_utf8_lossy(&text);
            // `… bpf chain 0 handle 0x1 fs_from_ep direct-action not_in_hw id 42 name … tag …`
            for line in text.lines().filter(|l| l.contains(" bpf ")) {
                let words: Vec<&str> = line.split_whitespace().collect();
                let id = words
                    .iter()
                    .position(|w| *w == "id")
                    .and_then(|i| words.get(i + 1)?.parse().ok());
                let name = words
                    .iter()
                    .position(|w| *w == "handle")
                    .and_then(|i| words.get(i + 2));
                if let (Some(id), Some(name)) = (id, name) {
                    assert!(
                        line.contains("direct-action"),
                        "{dev} {dir}: not direct-action: {line}"
                    );
                    out.push((dev.to_owned(), dir.to_owned(), name.to_string(), id));
                }
            }
        }
    }
    out
}

/// IDs of the programs attached with tcx to the node's interfaces.
fn tcx_programs(s: &Scenario) -> Vec<u32> {
    testbed::netns::in_netns(&s.node(), || {
        use aya::programs::{SchedClassifier, tc::TcAttachType};
        let mut ids = Vec::new();
        for dev in NODE_IFACES {
            for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
                if let Ok((_, progs)) = SchedClassifier::query_tcx(dev, dir) {
                    ids.extend(progs.iter().map(|p| p.id()));
                }
            }
        }
        ids
    })
}

/// Which of `ids` are still loaded, once the kernel had up to 15 s to free them (programs go
/// after an RCU grace period).
fn still_loaded(ids: &[u32]) -> Vec<u32> {
    let loaded = || -> Vec<u32> {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .filter(|id| ids.contains(id))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !loaded().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    loaded()
}

/// The programs every attachment carries, (interface, direction, program), sorted.
fn expected_attachments() -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = [
        (LXC_A, "ingress", "fs_from_ep"),
        (LXC_A, "egress", "fs_to_ep"),
        (LXC_B, "ingress", "fs_from_ep"),
        (LXC_B, "egress", "fs_to_ep"),
        (UPLINK, "ingress", "fs_from_net"),
        (UPLINK, "egress", "fs_to_net"),
        (HOST_DEV, "ingress", "fs_to_host"),
        (HOST_DEV, "egress", "fs_from_host"),
    ]
    .iter()
    .map(|(d, r, p)| (d.to_string(), r.to_string(), p.to_string()))
    .collect();
    v.sort();
    v
}

/// Pod-a's ping to the world, seen at the four points of its path.
fn ping_seen_everywhere(s: &Scenario, agent: &mut Spawned, mode: &str) {
    assert!(traffic::ping(&s.pod_a(), WORLD_IP, 1), "{mode}: ping");
    let icmp = |point, src, dst, t| {
        move |e: &Value| {
            e.s("point") == point
                && e.n("proto") == 1
                && e.s("src") == src
                && e.s("dst") == dst
                && e.n("icmp_type") == t
        }
    };
    let checks = [
        icmp("from-endpoint", POD_A_IP, WORLD_IP, 8),
        icmp("to-network", NODE_IP, WORLD_IP, 8),
        icmp("from-network", WORLD_IP, NODE_IP, 0),
        icmp("to-endpoint", WORLD_IP, POD_A_IP, 0),
    ];
    let seen = agent.wait_for(SETTLE, |l| {
        let evs: Vec<&Value> = l.iter().filter_map(|l| l.get("event")).collect();
        checks.iter().all(|c| evs.iter().any(|e| c(e)))
    });
    assert!(
        seen,
        "{mode}: the ping not seen at every point:\n{}",
        describe(&agent.values("event"))
    );
}

/// Both attach modes on this kernel: `--attach-mode netlink` (clsact filters, the only mode
/// before Linux 6.6) and `tcx`: each attaches its eight programs to the node's four interfaces
/// (and nothing through the other mechanism), reports traffic at every point, and leaves no
/// filter, link or program behind after a clean stop. Netlink filters outlive a killed agent;
/// the next agent removes them before attaching its own.
#[test]
fn attach_modes_netlink_and_tcx() {
    if !require_root("attach_modes_netlink_and_tcx") {
        return;
    }
    let s = Scenario::build();
    for mode in ["netlink", "tcx"] {
        let mut agent = s.start_agent(&[
            "--dump",
            "json",
            "--aggregation",
            "none",
            "--attach-mode",
            mode,
        ]);
        let ready = agent.values("ready").pop().expect("ready line");
        let modes: Vec<&str> = ready["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.s("mode"))
            .collect();
        assert_eq!(modes, [mode; 4], "{ready}");
        let filters = tc_filters(&s);
        let tcx = tcx_programs(&s);
        let ids: Vec<u32> = if mode == "netlink" {
            assert!(tcx.is_empty(), "netlink mode made tcx links: {tcx:?}");
            let mut got: Vec<_> = filters
                .iter()
                .map(|(d, r, p, _)| (d.clone(), r.clone(), p.clone()))
                .collect();
            got.sort();
            assert_eq!(got, expected_attachments(), "{filters:?}");
            filters.iter().map(|f| f.3).collect()
        } else {
            assert!(filters.is_empty(), "tcx mode made tc filters: {filters:?}");
            assert_eq!(tcx.len(), 8, "two programs on each of four interfaces");
            tcx
        };
        ping_seen_everywhere(&s, &mut agent, mode);
        assert!(agent.stop().success(), "{mode}: {}", agent.stderr());
        assert_eq!(tc_filters(&s), [], "{mode}: tc filters left");
        assert_eq!(
            tcx_programs(&s),
            Vec::<u32>::new(),
            "{mode}: tcx links left"
        );
        assert_eq!(
            still_loaded(&ids),
            Vec::<u32>::new(),
            "{mode}: programs left"
        );
        println!("{mode}: attached, traced, detached; programs {ids:?} unloaded");
        // The clsact qdisc netlink mode added stays: another tool's filters may hang on it.
    }

    // A killed agent in netlink mode: its filters (and so its programs) stay attached.
    let mut killed = s.start_agent(&["--attach-mode", "netlink"]);
    let old: Vec<u32> = tc_filters(&s).iter().map(|f| f.3).collect();
    assert_eq!(old.len(), 8);
    killed.signal(libc::SIGKILL);
    killed.wait_exit(Duration::from_secs(15));
    assert_eq!(
        tc_filters(&s).iter().map(|f| f.3).collect::<Vec<_>>(),
        old,
        "filters outlive their agent"
    );
    // The next agent replaces them: eight filters, all its own, and the old programs freed.
    let mut next = s.start_agent(&[
        "--dump",
        "json",
        "--aggregation",
        "none",
        "--attach-mode",
        "netlink",
    ]);
    let now = tc_filters(&s);
    assert_eq!(now.len(), 8, "{now:?}");
    assert!(
        now.iter().all(|f| !old.contains(&f.3)),
        "{now:?} vs {old:?}"
    );
    assert_eq!(
        still_loaded(&old),
        Vec::<u32>::new(),
        "the killed agent's programs"
    );
    ping_seen_everywhere(&s, &mut next, "netlink after a crash");
    let ids: Vec<u32> = now.iter().map(|f| f.3).collect();
    assert!(next.stop().success(), "{}", next.stderr());
    assert_eq!(tc_filters(&s), [], "tc filters left");
    assert_eq!(still_loaded(&ids), Vec::<u32>::new(), "programs left");
}
