//! The agent's `--observation-points cilium` mode against the seed lab's `cilium monitor`
//! lines: the reference scenario's traffic, read back with the real `flowctl observe -o
//! monitor`. Privileged; run serially.

use std::time::{Duration, Instant};

use flowscope_proto::{
    flow::{Flow, TraceObservationPoint},
    flowscope::v1::ConntrackEntry,
};
use testbed::observe::{addr, flowctl, flows, point};
use testbed::{
    Scenario, require_root,
    scenario::{
        LXC_A, LXC_B, NODE_IP, POD_A_IP, POD_A_IP6, POD_B_IP, POD_B_IP6, ROUTER_IP, WORLD_IP,
    },
    traffic,
};

fn is_from(p: TraceObservationPoint) -> bool {
    use TraceObservationPoint::*;
    matches!(
        p,
        FromEndpoint | FromProxy | FromHost | FromStack | FromOverlay | FromNetwork | FromCrypto
    )
}

/// Replaces the flow hash of a monitor line (`flow 0x…`, the skb hash: not predictable) with
/// `flow 0xHASH`, so that the rest compares exactly.
fn without_hash(line: &str) -> String {
    let mut words: Vec<&str> = line.split(' ').collect();
    if let Some(i) = words.iter().position(|w| *w == "flow")
        && let Some(h) = words.get_mut(i + 1)
        && h.starts_with("0x")
    {
        *h = "0xHASH";
    }
    words.join(" ")
}

/// The traffic of the reference scenario, and what it must give: pod-a's ping, HTTP GET and UDP
/// query to 1.0.0.1, and pod-a -> pod-b TCP.
struct Traffic {
    http_port: u16,
    pod_port: u16,
}

fn send_traffic(s: &Scenario) -> Traffic {
    assert!(traffic::ping(&s.pod_a(), WORLD_IP, 2), "ping 1.0.0.1");
    let get = traffic::http_get(&s.pod_a(), addr(WORLD_IP, 80)).expect("GET");
    assert!(!get.received.is_empty());
    traffic::udp_request(&s.pod_a(), addr(WORLD_IP, 53), b"q").expect("UDP");
    let pod_port =
        traffic::tcp_send(&s.pod_a(), addr(POD_B_IP, 8080), b"hello pod-b").expect("TCP");
    Traffic {
        http_port: get.local_port,
        pod_port,
    }
}

/// Asks for the monitor lines (and the flows as JSON) until `done` holds for them or 20 s pass.
fn observe_until(s: &Scenario, done: impl Fn(&[String]) -> bool) -> (Vec<String>, Vec<Flow>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines: Vec<String> = flowctl(s, &["observe", "--last", "1000", "-o", "monitor"])
            .lines()
            .map(without_hash)
            .collect();
        if done(&lines) || Instant::now() >= deadline {
            let json = flows(&flowctl(s, &["observe", "--last", "1000", "-o", "json"]));
            return (lines, json);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// pod-a's identity, from its flows (derived from its labels: the same on every node).
fn identity_of(flows: &[Flow], pod: &str) -> u32 {
    flows
        .iter()
        .find_map(|f| {
            f.source
                .as_ref()
                .filter(|e| e.pod_name == pod)
                .map(|e| e.identity)
        })
        .unwrap_or_else(|| panic!("no flow from {pod}"))
}

/// At `medium` (the default level), `cilium` observation points print the lab's lines: pod-a's
/// egress at its veth as `-> stack … ifindex 0 orig-ip 0.0.0.0`, the replies as `-> endpoint
/// 762 … orig-ip 1.0.0.1`, pod-to-pod as a delivery to the other endpoint, and no FROM_* point
/// anywhere; the conntrack counts still match the kernel's.
#[test]
fn cilium_points_print_the_lab_lines() {
    if !require_root("cilium_points_print_the_lab_lines") {
        return;
    }
    let s = Scenario::build();
    s.node_exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"]);
    let _http = traffic::http_server(&s.world(), addr(WORLD_IP, 80), "hello\n");
    let _dns = traffic::udp_server(&s.world(), addr(WORLD_IP, 53), true);
    let _sink = traffic::tcp_sink(&s.pod_b(), addr(POD_B_IP, 8080));
    let _sink_a = traffic::tcp_sink(&s.pod_a(), addr(POD_A_IP, 8080));
    let _sink6 = traffic::tcp_sink(&s.pod_b(), format!("[{POD_B_IP6}]:8080").parse().unwrap());
    // The world routes the pods' range through the node: a connection the world opens to pod-a
    // (not masqueraded: MASQUERADE only translates connections the pods open).
    traffic::exec(
        &s.world(),
        &["ip", "route", "add", "10.244.0.0/24", "via", NODE_IP],
    );
    let mut agent = s.start_agent(&["--observation-points", "cilium"]);
    let t = send_traffic(&s);
    let http = t.http_port;
    let inbound = traffic::tcp_send(&s.world(), addr(POD_A_IP, 8080), b"hello pod-a").expect("TCP");
    let port6 = traffic::tcp_send(
        &s.pod_a(),
        format!("[{POD_B_IP6}]:8080").parse().unwrap(),
        b"hello over IPv6",
    )
    .expect("IPv6 TCP");

    let syn_suffix = format!(": {POD_A_IP}:{http} -> {WORLD_IP}:80 tcp SYN");
    let synack_suffix = format!(": {WORLD_IP}:80 -> {POD_A_IP}:{http} tcp SYN, ACK");
    let pod_syn_suffix = format!(": {POD_A_IP}:{} -> {POD_B_IP}:8080 tcp SYN", t.pod_port);
    let inbound_syn_suffix = format!(": {ROUTER_IP}:{inbound} -> {POD_A_IP}:8080 tcp SYN");
    let syn6_suffix = format!(": [{POD_A_IP6}]:{port6} -> [{POD_B_IP6}]:8080 tcp SYN");
    let (lines, json) = observe_until(&s, |lines| {
        [
            &syn_suffix,
            &synack_suffix,
            &pod_syn_suffix,
            &inbound_syn_suffix,
            &syn6_suffix,
        ]
        .iter()
        .all(|sfx| lines.iter().any(|l| l.ends_with(sfx.as_str())))
            && lines.iter().any(|l| l.ends_with("EchoReply"))
    });
    let text = lines.join("\n");
    println!("{text}");
    let id_a = identity_of(&json, "pod-a");
    let id_b = identity_of(&json, "pod-b");

    // The lab's lines, but for the hash (the skb's, on both hops here) and the identity and
    // port numbers of this run.
    let want = [
        format!(
            "-> stack flow 0xHASH identity {id_a}->world state new ifindex 0 orig-ip 0.0.0.0{syn_suffix}"
        ),
        format!(
            "-> endpoint 762 flow 0xHASH identity world->{id_a} state reply ifindex {LXC_A} orig-ip {WORLD_IP}{synack_suffix}"
        ),
        format!(
            "-> stack flow 0xHASH identity {id_a}->world state new ifindex 0 orig-ip 0.0.0.0: {POD_A_IP} -> {WORLD_IP} EchoRequest"
        ),
        format!(
            "-> endpoint 762 flow 0xHASH identity world->{id_a} state reply ifindex {LXC_A} orig-ip {WORLD_IP}: {WORLD_IP} -> {POD_A_IP} EchoReply"
        ),
        // pod-to-pod: delivered to pod-b (endpoint 1204) by pod-a's veth, as Cilium's local
        // delivery reports it: pod-b's interface, not the stack.
        format!(
            "-> endpoint 1204 flow 0xHASH identity {id_a}->{id_b} state new ifindex {LXC_B} orig-ip {POD_A_IP}{pod_syn_suffix}"
        ),
        // A connection from the world: the uplink's ingress is silent, and the first trace,
        // at pod-a's veth, says new; pod-a's answer goes to the stack.
        format!(
            "-> endpoint 762 flow 0xHASH identity world->{id_a} state new ifindex {LXC_A} orig-ip {ROUTER_IP}{inbound_syn_suffix}"
        ),
        format!(
            "-> stack flow 0xHASH identity {id_a}->world state reply ifindex 0 orig-ip 0.0.0.0: {POD_A_IP}:8080 -> {ROUTER_IP}:{inbound} tcp SYN, ACK"
        ),
        // The FIB lookup over IPv6: pod-to-pod is a delivery too.
        format!(
            "-> endpoint 1204 flow 0xHASH identity {id_a}->{id_b} state new ifindex {LXC_B} orig-ip {POD_A_IP6}{syn6_suffix}"
        ),
    ];
    for w in &want {
        assert!(lines.iter().any(|l| l == w), "missing\n  {w}\nin\n{text}");
    }
    // Each packet once: pod-a's SYN to pod-b is not also a to-stack line, nor a second
    // to-endpoint line from pod-b's veth.
    let pod_syn: Vec<&String> = lines
        .iter()
        .filter(|l| l.ends_with(pod_syn_suffix.as_str()))
        .collect();
    assert_eq!(pod_syn.len(), 1, "{pod_syn:#?}");
    let pod_synack = format!(
        "-> endpoint 762 flow 0xHASH identity {id_b}->{id_a} state reply ifindex {LXC_A} orig-ip {POD_B_IP}: {POD_B_IP}:8080 -> {POD_A_IP}:{} tcp SYN, ACK",
        t.pod_port
    );
    assert_eq!(
        lines.iter().filter(|l| **l == pod_synack).count(),
        1,
        "pod-b's SYN-ACK, delivered by pod-b's veth to pod-a, once:\n{text}"
    );

    // No FROM_* observation point at medium: not in the monitor lines, not in the flows.
    assert!(
        !lines.iter().any(|l| l.starts_with("<- ")),
        "a FROM_* trace at medium:\n{text}"
    );
    let from: Vec<_> = json.iter().filter(|f| is_from(point(f))).collect();
    assert!(from.is_empty(), "FROM_* flows at medium: {from:#?}");
    // The to-stack flow is Hubble's TO_STACK, without an interface, as Hubble gives it.
    let to_stack = json
        .iter()
        .find(|f| point(f) == TraceObservationPoint::ToStack)
        .expect("a to-stack flow");
    assert_eq!(to_stack.interface, None);
    assert_eq!(to_stack.event_type.as_ref().map(|t| t.sub_type), Some(3));

    // What is not reported is still counted: pod-a's HTTP connection, as the kernel counts it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ct, kernel) = loop {
        let cts: Vec<ConntrackEntry> = flowctl(
            &s,
            &[
                "ct",
                "list",
                "--ip",
                POD_A_IP,
                "--port",
                &http.to_string(),
                "-o",
                "json",
            ],
        )
        .lines()
        .map(|l| flowscope_proto::json::from_json(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
        let ct = cts.into_iter().find(|c| {
            c.tuple
                .as_ref()
                .is_some_and(|t| t.source_ip == POD_A_IP && t.source_port == u32::from(http))
        });
        let kernel = kernel_counters(&s, http);
        let agree = ct
            .as_ref()
            .is_some_and(|c| (c.tx_packets, c.rx_packets) == (kernel.0, kernel.2));
        if agree || Instant::now() >= deadline {
            break (ct.expect("ct entry of pod-a's HTTP connection"), kernel);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((ct.tx_packets, ct.rx_packets), (kernel.0, kernel.2));
    assert_eq!(
        (ct.tx_bytes, ct.rx_bytes),
        (kernel.1 + 14 * kernel.0, kernel.3 + 14 * kernel.2),
        "bytes per direction (+14 bytes of Ethernet header per packet at the hook)"
    );
    assert!(agent.stop().success());
}

/// At `none`, Cilium's from-container program reports FROM_LXC and then where the packet goes:
/// pod-a's SYN is `<- endpoint 762` then `-> stack`; the uplink's ingress reports again; a
/// pod-to-pod packet is delivered once (`-> endpoint 1204`), not a second time by pod-b's veth.
#[test]
fn cilium_points_at_none() {
    if !require_root("cilium_points_at_none") {
        return;
    }
    let s = Scenario::build();
    let _http = traffic::http_server(&s.world(), addr(WORLD_IP, 80), "hello\n");
    let _dns = traffic::udp_server(&s.world(), addr(WORLD_IP, 53), true);
    let _sink = traffic::tcp_sink(&s.pod_b(), addr(POD_B_IP, 8080));
    let mut agent = s.start_agent(&["--observation-points", "cilium", "--aggregation", "none"]);
    let t = send_traffic(&s);
    let http = t.http_port;

    let syn_suffix = format!(": {POD_A_IP}:{http} -> {WORLD_IP}:80 tcp SYN");
    let pod_syn_suffix = format!(": {POD_A_IP}:{} -> {POD_B_IP}:8080 tcp SYN", t.pod_port);
    let (lines, json) = observe_until(&s, |lines| {
        lines.iter().any(|l| l.ends_with(pod_syn_suffix.as_str()))
            && lines.iter().any(|l| l.starts_with("<- network"))
            && lines.iter().any(|l| l.ends_with(syn_suffix.as_str()))
    });
    let text = lines.join("\n");
    println!("{text}");
    let id_a = identity_of(&json, "pod-a");
    let id_b = identity_of(&json, "pod-b");

    let http_syn: Vec<&String> = lines
        .iter()
        .filter(|l| l.ends_with(syn_suffix.as_str()))
        .collect();
    assert_eq!(
        http_syn,
        [
            &format!(
                "<- endpoint 762 flow 0xHASH identity {id_a}->world state new ifindex {LXC_A} orig-ip 0.0.0.0{syn_suffix}"
            ),
            &format!(
                "-> stack flow 0xHASH identity {id_a}->world state new ifindex 0 orig-ip 0.0.0.0{syn_suffix}"
            ),
        ],
        "\n{text}"
    );
    let pod_syn: Vec<&String> = lines
        .iter()
        .filter(|l| l.ends_with(pod_syn_suffix.as_str()))
        .collect();
    assert_eq!(
        pod_syn,
        [
            &format!(
                "<- endpoint 762 flow 0xHASH identity {id_a}->{id_b} state new ifindex {LXC_A} orig-ip 0.0.0.0{pod_syn_suffix}"
            ),
            &format!(
                "-> endpoint 1204 flow 0xHASH identity {id_a}->{id_b} state new ifindex {LXC_B} orig-ip {POD_A_IP}{pod_syn_suffix}"
            ),
        ],
        "\n{text}"
    );
    assert!(agent.stop().success());
}

/// At `low`, every packet once at each `to-*` point and never at a `from-*` one: each packet of
/// pod-a's HTTP request is one `-> stack` line at pod-a's veth and each packet of the answer one
/// `-> endpoint 762` line, as many as the kernel counted.
#[test]
fn cilium_points_at_low() {
    if !require_root("cilium_points_at_low") {
        return;
    }
    let s = Scenario::build();
    s.node_exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"]);
    let _http = traffic::http_server(&s.world(), addr(WORLD_IP, 80), "hello\n");
    let mut agent = s.start_agent(&["--observation-points", "cilium", "--aggregation", "low"]);
    let http = traffic::http_get(&s.pod_a(), addr(WORLD_IP, 80))
        .expect("GET")
        .local_port;
    let out_sfx = format!(": {POD_A_IP}:{http} -> {WORLD_IP}:80 tcp");
    let back_sfx = format!(": {WORLD_IP}:80 -> {POD_A_IP}:{http} tcp");
    let count = |lines: &[String], prefix: &str, sfx: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(prefix) && l.contains(sfx))
            .count() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (lines, kernel) = loop {
        let lines: Vec<String> = flowctl(&s, &["observe", "--last", "1000", "-o", "monitor"])
            .lines()
            .map(without_hash)
            .collect();
        let kernel = kernel_counters(&s, http);
        let seen = (
            count(&lines, "-> stack ", &out_sfx),
            count(&lines, "-> endpoint 762 ", &back_sfx),
        );
        if (kernel.0 > 0 && seen == (kernel.0, kernel.2)) || Instant::now() >= deadline {
            break (lines, kernel);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = lines.join("\n");
    println!("{text}");
    assert!(
        kernel.0 >= 4 && kernel.2 >= 3,
        "a whole HTTP exchange: {kernel:?}"
    );
    assert_eq!(
        count(&lines, "-> stack ", &out_sfx),
        kernel.0,
        "one to-stack line per packet pod-a sent:\n{text}"
    );
    assert_eq!(
        count(&lines, "-> endpoint 762 ", &back_sfx),
        kernel.2,
        "one to-endpoint line per packet pod-a received:\n{text}"
    );
    // The masqueraded packets at the uplink: to-network, each once.
    let nat_out = format!(" -> {WORLD_IP}:80 tcp");
    assert_eq!(
        count(&lines, "-> network ", &nat_out),
        kernel.0,
        "one to-network line per packet:\n{text}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("<- ")),
        "a FROM_* trace at low:\n{text}"
    );
    assert!(agent.stop().success());
}

/// The kernel's own accounting of pod-a's TCP connection from `sport`: (orig packets, orig
/// bytes, reply packets, reply bytes), from `conntrack -L` in the node.
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
    let Some(line) = text.lines().find(|l| l.contains(POD_A_IP)) else {
        return (0, 0, 0, 0);
    };
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
