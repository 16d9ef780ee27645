//! `FlowFilterSet::matches` must not allocate: it runs for every flow of
//! every subscriber. A counting allocator checks it over filters of every
//! family (after one warm-up call, which lets the regex engine set up its
//! per-thread cache).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use flowscope_filter::FlowFilterSet;
use flowscope_proto::flow::{
    CiliumEventType, EventTypeFilter, Flow, FlowFilter, Http, Ip, Layer4, Layer7, TcpFlags,
    layer7::Record,
};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the
// thread-locals are const-initialized and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn matching_does_not_allocate() {
    let white = [FlowFilter {
        source_ip: s(&["10.0.0.0/8", "fd00::/8", "1.2.3.4"]),
        source_pod: s(&["default/web", "/api"]),
        source_label: s(&["app in (web, api), !canary, k8s:tier!=db"]),
        destination_port: s(&["80", "443"]),
        protocol: s(&["tcp", "udp"]),
        node_name: s(&["node-*", "prod/*"]),
        tcp_flags: vec![TcpFlags::from_header(0x02, false)],
        reply: vec![false],
        event_type: vec![EventTypeFilter {
            r#type: 129,
            ..Default::default()
        }],
        http_path: s(&["^/api/"]),
        http_status_code: s(&["2+"]),
        destination_fqdn: s(&["*.example.com"]),
        ..Default::default()
    }];
    let black = [FlowFilter {
        destination_label: s(&["reserved:host"]),
        dns_query: s(&["internal$"]),
        ..Default::default()
    }];
    let set = FlowFilterSet::compile(&white, &black).unwrap();
    let flow = Flow {
        ip: Some(Ip {
            source: "10.1.2.3".into(),
            destination: "93.184.216.34".into(),
            ..Default::default()
        }),
        l4: Some(Layer4::tcp(40000, 443, TcpFlags::from_header(0x02, false))),
        l7: Some(Layer7 {
            record: Some(Record::Http(Http {
                code: 200,
                url: "https://www.example.com/api/v1?x=1".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        source: Some(flowscope_proto::flow::Endpoint {
            namespace: "default".into(),
            pod_name: "web-1".into(),
            labels: s(&["k8s:app=web", "k8s:tier=fe"]),
            ..Default::default()
        }),
        destination_names: s(&["www.example.com"]),
        node_name: "node-3".into(),
        event_type: Some(CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        is_reply: Some(false),
        ..Default::default()
    };
    assert!(set.matches(&flow), "warm-up and sanity");

    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let mut passed = 0;
    for _ in 0..1000 {
        passed += usize::from(set.matches(&flow));
        passed += usize::from(set.matches(&Flow::default()));
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(passed, 1000);
    assert_eq!(COUNT.with(Cell::get), 0, "matches() allocated");
}
