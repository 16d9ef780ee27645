//! `--kernel-filter`: the agent binary in the node namespace of the reference scenario, with a
//! filter the TC programs evaluate; its `--dump json` output checked event by event.
//!
//! Privileged: needs root. Run serially (`--test-threads=1`).

use std::time::Duration;

use serde_json::Value;
use testbed::observe::addr;
use testbed::{
    Scenario, require_root,
    scenario::{NODE_IP, POD_A_IP, WORLD_IP},
    traffic,
};

const SETTLE: Duration = Duration::from_secs(10);

fn s<'a>(e: &'a Value, k: &str) -> &'a str {
    e.get(k).and_then(Value::as_str).unwrap_or("")
}

fn n(e: &Value, k: &str) -> u64 {
    e.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX)
}

fn describe(evs: &[Value]) -> String {
    evs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// With `--ip 1.0.0.1 --protocol udp --port 53`, the UDP exchange with 1.0.0.1:53 is reported
/// at every hop (under the pod's tuple on its veth and the masqueraded one on the uplink: the
/// filter sees the tuple on the wire, and 1.0.0.1 is in both), and nothing else is: not the
/// ping, not the HTTP exchange with the same address, not other UDP ports. Conntrack still
/// counts the connections whose packets were not reported.
#[test]
fn only_matching_flows_are_reported() {
    if !require_root("only_matching_flows_are_reported") {
        return;
    }
    let s_ = Scenario::build();
    let _http = traffic::http_server(&s_.world(), addr(WORLD_IP, 80), "hello\n");
    let _dns = traffic::udp_server(&s_.world(), addr(WORLD_IP, 53), true);
    let _other = traffic::udp_server(&s_.world(), addr(WORLD_IP, 5353), true);
    let mut agent = s_.start_agent(&[
        "--dump",
        "json",
        "--stats-interval",
        "200ms",
        "--aggregation",
        "none",
        "--kernel-filter",
        "--ip 1.0.0.1 --protocol udp --port 53",
    ]);

    assert!(traffic::ping(&s_.pod_a(), WORLD_IP, 2), "ping 1.0.0.1");
    let get = traffic::http_get(&s_.pod_a(), addr(WORLD_IP, 80)).expect("HTTP GET");
    traffic::udp_request(&s_.pod_a(), addr(WORLD_IP, 5353), b"other").expect("UDP 5353");
    let dns = traffic::udp_request(&s_.pod_a(), addr(WORLD_IP, 53), b"query").expect("UDP 53");
    let dport = u64::from(dns.local_port);

    let hops = |evs: &[&Value]| {
        ["from-endpoint", "to-network", "from-network", "to-endpoint"]
            .iter()
            .filter(|p| {
                !evs.iter().any(|e| {
                    s(e, "point") == **p && (n(e, "src_port") == 53 || n(e, "dst_port") == 53)
                })
            })
            .count()
    };
    let complete = agent.wait_for(SETTLE, |lines| {
        let evs: Vec<&Value> = lines.iter().filter_map(|l| l.get("event")).collect();
        hops(&evs) == 0
    });
    // The traffic before the DNS exchange is long done; give the reader one more batch.
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.stop().success(), "agent exit: {}", agent.stderr());
    let evs = agent.values("event");
    let ctx = describe(&evs);
    assert!(
        complete,
        "the UDP exchange on port 53 not seen at every hop:\n{ctx}"
    );

    for e in &evs {
        let matches = n(e, "proto") == 17
            && (s(e, "src") == WORLD_IP || s(e, "dst") == WORLD_IP)
            && (n(e, "src_port") == 53 || n(e, "dst_port") == 53);
        assert!(
            matches,
            "an event outside the filter: {e}\nall events:\n{ctx}"
        );
    }
    // Request and reply, each at the pod's veth and at the uplink.
    let pod_side = evs
        .iter()
        .filter(|e| s(e, "src") == POD_A_IP || s(e, "dst") == POD_A_IP)
        .count();
    let node_side = evs
        .iter()
        .filter(|e| s(e, "src") == NODE_IP || s(e, "dst") == NODE_IP)
        .count();
    assert!(
        pod_side >= 2 && node_side >= 2,
        "both tuples reported:\n{ctx}"
    );
    assert!(evs.iter().any(|e| s(e, "point") == "from-endpoint"
        && n(e, "src_port") == dport
        && s(e, "ct_state") == "new"));

    // Conntrack counted what was not reported.
    let ct = agent
        .values("conntrack")
        .pop()
        .expect("conntrack dump at exit");
    let ct = ct.as_array().expect("conntrack array");
    let http = ct
        .iter()
        .find(|c| {
            s(c, "src") == POD_A_IP
                && n(c, "src_port") == u64::from(get.local_port)
                && n(c, "dst_port") == 80
        })
        .unwrap_or_else(|| panic!("no conntrack entry for the HTTP connection: {ct:#?}"));
    assert!(
        n(http, "tx_packets") >= 3 && n(http, "rx_packets") >= 3,
        "the HTTP connection counted in full: {http}"
    );
    assert!(
        ct.iter()
            .any(|c| s(c, "src") == POD_A_IP && n(c, "dst_port") == 5353),
        "the other UDP flow tracked: {ct:#?}"
    );
}

/// A filter that matches nothing: the TC programs see every packet, count them in conntrack,
/// and emit nothing at all.
#[test]
fn a_filter_that_matches_nothing_emits_nothing() {
    if !require_root("a_filter_that_matches_nothing_emits_nothing") {
        return;
    }
    let s_ = Scenario::build();
    let _http = traffic::http_server(&s_.world(), addr(WORLD_IP, 80), "hello\n");
    let mut agent = s_.start_agent(&[
        "--dump",
        "json",
        "--stats-interval",
        "200ms",
        "--aggregation",
        "none",
        "--kernel-filter",
        "--ip 192.0.2.0/24",
    ]);
    assert!(traffic::ping(&s_.pod_a(), WORLD_IP, 2), "ping 1.0.0.1");
    let get = traffic::http_get(&s_.pod_a(), addr(WORLD_IP, 80)).expect("HTTP GET");
    // Until the stats show the programs saw the traffic.
    let seen = agent.wait_for(SETTLE, |lines| {
        lines
            .iter()
            .filter_map(|l| l.get("stats"))
            .any(|st| n(st, "packets_seen") != u64::MAX && n(st, "packets_seen") >= 16)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.stop().success(), "agent exit: {}", agent.stderr());
    let evs = agent.values("event");
    assert!(
        seen,
        "the programs saw the traffic: {:?}",
        agent.values("stats").last()
    );
    assert!(evs.is_empty(), "no event passes:\n{}", describe(&evs));
    let st = agent.values("stats").pop().expect("final stats");
    assert_eq!(n(&st, "events_emitted"), 0, "nothing emitted: {st}");
    let ct = agent
        .values("conntrack")
        .pop()
        .expect("conntrack dump at exit");
    assert!(
        ct.as_array().expect("conntrack array").iter().any(|c| {
            s(c, "src") == POD_A_IP
                && n(c, "src_port") == u64::from(get.local_port)
                && n(c, "tx_packets") >= 3
        }),
        "conntrack counted the HTTP connection: {ct}"
    );
}
