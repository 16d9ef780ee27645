//! L7 flows from packets, end to end: pod-a resolves `one.one.one.one` with glibc through a
//! real DNS server (dnsmasq) in the world, then fetches the page and a missing one from the
//! world's HTTP server. The agent makes Hubble's DNS and HTTP flows of what it captured, puts
//! the name on the L3/L4 flows of the fetch, and leaves L7-looking bytes on another port alone.
//! Privileged; run serially.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use flowscope_proto::flow::{Flow, FlowType, L7FlowType, TrafficDirection, layer7};
use testbed::{
    Scenario,
    dns::{self, DnsServer},
    observe::{addr, flowctl, flows, hubble_protojson_check},
    require_root,
    scenario::{POD_A_IP, WORLD_IP},
    skip, traffic,
};

/// The flows `flowctl observe --all ARGS -o json` returns, polled until `done` holds for them
/// (at most 10 s: the reader drains the ring every 50 ms).
fn wait_flows(s: &Scenario, args: &[&str], done: impl Fn(&[Flow]) -> bool) -> Vec<Flow> {
    let mut all = vec!["observe", "--all", "-o", "json"];
    all.extend_from_slice(args);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = flows(&flowctl(s, &all));
        if done(&got) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn dns_of(f: &Flow) -> Option<&flowscope_proto::flow::Dns> {
    match f.l7.as_ref()?.record.as_ref()? {
        layer7::Record::Dns(d) => Some(d),
        _ => None,
    }
}

fn http_of(f: &Flow) -> Option<&flowscope_proto::flow::Http> {
    match f.l7.as_ref()?.record.as_ref()? {
        layer7::Record::Http(h) => Some(h),
        _ => None,
    }
}

fn ports(f: &Flow) -> [u32; 2] {
    use flowscope_proto::flow::layer4::Protocol;
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => [t.source_port, t.destination_port],
        Some(Protocol::Udp(u)) => [u.source_port, u.destination_port],
        _ => [0, 0],
    }
}

fn l7_type(f: &Flow) -> L7FlowType {
    L7FlowType::try_from(f.l7.as_ref().map_or(0, |l| l.r#type)).unwrap_or(L7FlowType::UnknownL7Type)
}

fn is_response(f: &Flow) -> bool {
    l7_type(f) == L7FlowType::Response
}

#[test]
#[expect(
    deprecated,
    reason = "Hubble's summary is deprecated but its clients print it"
)]
fn dns_and_http_from_packets_become_hubble_l7_flows_with_names() {
    if !require_root("dns_and_http_from_packets_become_hubble_l7_flows_with_names") {
        return;
    }
    let s = Scenario::build();
    let Some(_dns) = DnsServer::start(&s.world(), WORLD_IP, &[s.pod_a()]) else {
        skip(
            "dns_and_http_from_packets_become_hubble_l7_flows_with_names",
            "dnsmasq is not installed (scripts/setup.sh installs dnsmasq-base)",
        );
        return;
    };
    let _http = traffic::http_server(&s.world(), addr(WORLD_IP, 80), "hello from 1.0.0.1\n");
    let _sink = traffic::tcp_sink(&s.world(), addr(WORLD_IP, 9090));
    // Aggregation medium (the default): L7 payloads are captured whatever aggregation reports.
    let mut agent = s.start_agent(&[]);

    // pod-a resolves the name, then fetches the page and a missing one.
    let ips = dns::resolve(&s.pod_a(), dns::NAME);
    assert_eq!(ips, [WORLD_IP.parse::<IpAddr>().unwrap()], "{}", _dns.log());
    assert!(dns::resolve(&s.pod_a(), dns::NX_NAME).is_empty());
    let page =
        traffic::http_request(&s.pod_a(), addr(WORLD_IP, 80), dns::NAME, "/").expect("GET /");
    assert!(page.received.starts_with(b"HTTP/1.0 200"));
    let missing = traffic::http_request(&s.pod_a(), addr(WORLD_IP, 80), dns::NAME, "/missing")
        .expect("GET /missing");
    assert!(missing.received.starts_with(b"HTTP/1.0 404"));
    // An HTTP request on a port that is not an L7 port: its packets are traced, not parsed.
    let other_port = traffic::tcp_send(
        &s.pod_a(),
        addr(WORLD_IP, 9090),
        b"GET /not-l7 HTTP/1.1\r\nHost: one.one.one.one\r\n\r\n",
    )
    .expect("request on 9090");

    // DNS: the query and its answer, the NXDOMAIN as what it is.
    let dns_flows = wait_flows(&s, &["--protocol", "dns"], |f| {
        f.iter().filter(|f| is_response(f)).count() >= 2
    });
    let query = dns_flows
        .iter()
        .find(|f| !is_response(f) && dns_of(f).is_some_and(|d| d.query == "one.one.one.one."))
        .unwrap_or_else(|| panic!("no DNS query flow: {dns_flows:#?}"));
    assert_eq!(query.r#type, FlowType::L7 as i32);
    assert_eq!(query.event_type.as_ref().unwrap().r#type, 129);
    assert_eq!(query.is_reply, Some(false));
    assert_eq!(query.traffic_direction, TrafficDirection::Egress as i32);
    assert_eq!(query.source.as_ref().unwrap().pod_name, "pod-a");
    assert_eq!(query.ip.as_ref().unwrap().source, POD_A_IP);
    assert_eq!(dns_of(query).unwrap().qtypes, ["A"]);
    assert_eq!(query.summary, "DNS Query one.one.one.one. A");
    let answer = dns_flows
        .iter()
        .find(|f| is_response(f) && dns_of(f).is_some_and(|d| d.query == "one.one.one.one."))
        .unwrap_or_else(|| panic!("no DNS answer flow: {dns_flows:#?}"));
    let d = dns_of(answer).unwrap();
    assert_eq!(d.ips, [WORLD_IP]);
    assert_eq!((d.rcode, d.ttl), (0, 300));
    assert_eq!(d.rrtypes, ["A"]);
    assert!(answer.l7.as_ref().unwrap().latency_ns > 0, "{answer:#?}");
    assert_eq!(answer.is_reply, Some(true));
    assert_eq!(answer.destination.as_ref().unwrap().pod_name, "pod-a");
    let nx = dns_flows
        .iter()
        .find(|f| is_response(f) && dns_of(f).is_some_and(|d| d.query == "nx.example."))
        .unwrap_or_else(|| panic!("no NXDOMAIN flow: {dns_flows:#?}"));
    assert_eq!(dns_of(nx).unwrap().rcode, 3);
    assert!(dns_of(nx).unwrap().ips.is_empty());
    assert!(
        nx.summary.contains("RCode: Non-Existent Domain"),
        "{}",
        nx.summary
    );

    // HTTP: requests and responses, paired, with method, URL, code and latency.
    let http_flows = wait_flows(&s, &["--protocol", "http"], |f| {
        f.iter().filter(|f| is_response(f)).count() >= 2
    });
    let response = |code: u32| {
        http_flows
            .iter()
            .find(|f| is_response(f) && http_of(f).is_some_and(|h| h.code == code))
            .unwrap_or_else(|| panic!("no HTTP {code} response: {http_flows:#?}"))
    };
    let ok = http_of(response(200)).unwrap();
    assert_eq!(
        (ok.method.as_str(), ok.url.as_str()),
        ("GET", "http://one.one.one.one/")
    );
    assert_eq!(ok.protocol, "HTTP/1.0");
    assert!(response(200).l7.as_ref().unwrap().latency_ns > 0);
    let not_found = http_of(response(404)).unwrap();
    assert_eq!(not_found.url, "http://one.one.one.one/missing");
    let request = http_flows
        .iter()
        .find(|f| !is_response(f) && http_of(f).is_some_and(|h| h.url.ends_with("/missing")))
        .unwrap_or_else(|| panic!("no HTTP request flow: {http_flows:#?}"));
    assert_eq!(http_of(request).unwrap().method, "GET");
    assert_eq!(
        request.summary,
        "HTTP/1.1 GET http://one.one.one.one/missing"
    );
    // Hubble's own filters on them, served by the agent.
    let only_404 = flows(&flowctl(
        &s,
        &["observe", "--all", "-o", "json", "--http-status", "404"],
    ));
    assert!(
        !only_404.is_empty()
            && only_404
                .iter()
                .all(|f| http_of(f).is_some_and(|h| h.code == 404))
    );

    // Names on the L3/L4 flows of the fetch.
    let named = wait_flows(
        &s,
        &["--to-fqdn", dns::NAME, "-t", "trace", "--to-port", "80"],
        |f| !f.is_empty(),
    );
    assert!(!named.is_empty(), "no trace to one.one.one.one");
    for f in &named {
        assert_eq!(f.destination_names, [dns::NAME], "{f:#?}");
    }

    // The request on port 9090 was traced, and never made an L7 flow.
    let traced = flows(&flowctl(
        &s,
        &["observe", "--all", "-o", "json", "--port", "9090"],
    ));
    assert!(!traced.is_empty(), "no trace of the request on port 9090");
    assert!(
        traced.iter().all(|f| f.l7.is_none()),
        "L7 flow on port 9090 (client port {other_port}): {traced:#?}"
    );
    let l7_all = flows(&flowctl(
        &s,
        &["observe", "--all", "-o", "json", "-t", "l7"],
    ));
    assert!(
        l7_all.iter().all(|f| !ports(f).contains(&9090)),
        "{l7_all:#?}"
    );

    // What a stock Hubble client reads: Hubble's JSON, every line.
    let json = flowctl(&s, &["observe", "--all", "-o", "json", "-t", "l7"]);
    if let Some(verdict) = hubble_protojson_check(s.dir(), &json) {
        verdict.unwrap_or_else(|e| panic!("Hubble's tooling rejects the L7 flows: {e}"));
    }
    // And the text outputs: Hubble's compact lines, cilium monitor's access-log lines.
    let compact = flowctl(&s, &["observe", "--all", "--protocol", "dns"]);
    assert!(
        compact.contains("dns-request datapath FORWARDED (DNS Query one.one.one.one. A)"),
        "{compact}"
    );
    let monitor = flowctl(
        &s,
        &["observe", "--all", "--protocol", "http", "-o", "monitor"],
    );
    assert!(
        monitor.contains("GET http://one.one.one.one/missing => 404"),
        "{monitor}"
    );
    println!("{compact}{monitor}");
    assert!(agent.stop().success());
}
