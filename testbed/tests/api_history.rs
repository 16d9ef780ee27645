//! History queries and field masks through the agent's Observer API, end to end: the real agent
//! in the reference scenario, a real tonic client on its unix socket. Privileged; run serially.

use std::{net::SocketAddr, time::Duration};

use flowscope_proto::{
    flow::{FlowFilter, LostEventSource},
    observer::{
        GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes,
        observer_client::ObserverClient,
    },
    wkt::{FieldMask, Timestamp},
};
use futures::StreamExt as _;
use testbed::{
    Scenario, client, require_root,
    scenario::{POD_A_IP, WORLD_IP},
    traffic,
};
use tonic::transport::Channel;

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

async fn get_flows(
    ch: &Channel,
    req: GetFlowsRequest,
) -> Result<Vec<GetFlowsResponse>, tonic::Status> {
    let mut stream = ObserverClient::new(ch.clone())
        .get_flows(req)
        .await?
        .into_inner();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(r))) => out.push(r),
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Ok(out),
            Err(_) => panic!("GetFlows without follow did not end within 10 s"),
        }
    }
}

/// One letter per response: `f` a flow, `L` a loss notice of the kernel ring.
fn shape(resps: &[GetFlowsResponse]) -> String {
    resps
        .iter()
        .map(|r| match &r.response_types {
            Some(ResponseTypes::Flow(_)) => 'f',
            Some(ResponseTypes::LostEvents(l))
                if l.source == LostEventSource::PerfEventRingBuffer as i32 =>
            {
                'L'
            }
            _ => '?',
        })
        .collect()
}

fn lost_total(resps: &[GetFlowsResponse]) -> u64 {
    resps
        .iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::LostEvents(l)) => Some(l.num_events_lost),
            _ => None,
        })
        .sum()
}

fn to_port(port: u16) -> Vec<FlowFilter> {
    vec![FlowFilter {
        destination_port: vec![port.to_string()],
        ..FlowFilter::default()
    }]
}

/// Events the kernel ring lost are in the history as LostEvents, and a query without follow
/// whose range covers them carries them in order among its flows, as Hubble's does: filters do
/// not apply to them, `number` counts flows only, and `since`/`until` bound where the range
/// starts and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_queries_carry_the_losses_they_cover() {
    if !require_root("history_queries_carry_the_losses_they_cover") {
        return;
    }
    let s = Scenario::build();
    let _sink = traffic::udp_server(&s.world(), addr(WORLD_IP, 5001), false);
    let agent = tokio::task::block_in_place(|| {
        s.start_agent(&["--aggregation", "none", "--ring-size", "4096"])
    });
    let ch = client::unix_channel(&s.agent_socket(), Duration::from_secs(5))
        .await
        .expect("agent socket");
    let before = Timestamp::now();
    // A paused agent with a 4 KiB ring (about 36 events) loses most of a 500-packet burst.
    agent.signal(libc::SIGSTOP);
    let pod_a = s.pod_a();
    let sent = tokio::task::spawn_blocking(move || {
        traffic::udp_send(
            &pod_a,
            addr(WORLD_IP, 5001),
            500,
            32,
            Some(Duration::from_micros(50)),
        )
    })
    .await
    .unwrap();
    agent.signal(libc::SIGCONT);
    sent.expect("send");
    // The loss is stored on the agent's next one-second tick, after what the reader drained.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let all = loop {
        let all = get_flows(
            &ch,
            GetFlowsRequest {
                whitelist: to_port(5001),
                ..Default::default()
            },
        )
        .await
        .expect("GetFlows");
        if shape(&all).contains('L') || tokio::time::Instant::now() >= deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let burst = shape(&all);
    println!("history after the burst: {burst}");
    assert!(
        burst.contains('L'),
        "the kernel ring's loss is in the history: {burst}; agent stderr:\n{}",
        agent.stderr()
    );
    assert!(!burst.contains('?'), "{burst}");
    let flows = burst.matches('f').count() as u64;
    assert!(flows > 0, "the ring held some of the burst: {burst}");
    assert!(
        flows + lost_total(&all) >= 1000,
        "500 packets x 2 hops are delivered or counted lost: {flows} flows + {} lost",
        lost_total(&all)
    );
    // After the burst, traffic the agent sees whole: stored after the loss notice.
    let after_loss = Timestamp::now();
    let pod_a = s.pod_a();
    tokio::task::spawn_blocking(move || {
        traffic::udp_send(
            &pod_a,
            addr(WORLD_IP, 5001),
            3,
            32,
            Some(Duration::from_millis(5)),
        )
    })
    .await
    .unwrap()
    .expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let full = loop {
        let full = shape(
            &get_flows(
                &ch,
                GetFlowsRequest {
                    whitelist: to_port(5001),
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
        );
        if full.matches('f').count() as u64 >= flows + 6 || tokio::time::Instant::now() >= deadline
        {
            break full;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("history after the burst and 3 more packets: {full}");
    // The loss is noticed on a one-second tick: before, among or after what the reader drained
    // of the burst, always before the later traffic.
    let after = &full[full.rfind('L').expect("the loss is still held") + 1..];
    assert!(
        after.ends_with("ffffff"),
        "3 packets x 2 hops after the loss: {full}"
    );
    let k = after.len() as u64;
    let total = full.matches('f').count() as u64;

    // The last k flows are all after the loss: no notice. One more reaches back past it.
    let last = |n: u64| {
        let ch = ch.clone();
        async move {
            shape(
                &get_flows(
                    &ch,
                    GetFlowsRequest {
                        number: n,
                        whitelist: to_port(5001),
                        ..Default::default()
                    },
                )
                .await
                .unwrap(),
            )
        }
    };
    assert_eq!(last(k).await, after);
    let one_more = last(k + 1).await;
    assert_eq!(
        one_more.matches('f').count() as u64,
        (k + 1).min(total),
        "{one_more}"
    );
    assert!(
        one_more.contains('L'),
        "the last k+1 flows cover the loss: {one_more}"
    );
    assert!(one_more.ends_with(after), "{one_more}");
    // Since after the loss: the range starts just after the newest flow older than `since` (the
    // last of the burst), so the loss stored after that flow comes along, as in Hubble.
    let since = shape(
        &get_flows(
            &ch,
            GetFlowsRequest {
                since: Some(after_loss),
                whitelist: to_port(5001),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    let before_later = &full[..full.len() - 6];
    let expected = &full[before_later.rfind('f').map_or(0, |i| i + 1)..];
    assert_eq!(since, expected);
    // Until before the burst: the range ends at the first flow past it, so before the loss when
    // a flow of the burst was stored before the loss (loss notices pass time bounds, as in
    // Hubble: one stored before any burst flow would come along).
    let until = shape(
        &get_flows(
            &ch,
            GetFlowsRequest {
                until: Some(before),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    if full.starts_with('f') {
        assert!(!until.contains('L'), "{until}");
    }
    // The first `total` flows from the oldest entry: everything, the loss included.
    let first = shape(
        &get_flows(
            &ch,
            GetFlowsRequest {
                number: total,
                first: true,
                whitelist: to_port(5001),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(first, full);

    drop(ch);
    let mut agent = agent;
    assert!(agent.stop().success(), "agent: {}", agent.stderr());
}

/// Field masks: a path that names no field of Hubble's flow.Flow is InvalidArgument naming
/// it; real paths keep exactly those fields, and never send a flow emptied by mistake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_masks_are_checked_and_applied() {
    if !require_root("field_masks_are_checked_and_applied") {
        return;
    }
    let s = Scenario::build();
    let _dns = traffic::udp_server(&s.world(), addr(WORLD_IP, 53), true);
    let mut agent = tokio::task::block_in_place(|| s.start_agent(&["--aggregation", "none"]));
    let ch = client::unix_channel(&s.agent_socket(), Duration::from_secs(5))
        .await
        .expect("agent socket");
    let pod_a = s.pod_a();
    tokio::task::spawn_blocking(move || traffic::udp_request(&pod_a, addr(WORLD_IP, 53), b"q"))
        .await
        .unwrap()
        .expect("udp");
    let mask = |paths: &[&str]| {
        Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })
    };

    let err = get_flows(
        &ch,
        GetFlowsRequest {
            field_mask: mask(&["time", "source.pod"]),
            ..Default::default()
        },
    )
    .await
    .expect_err("an unknown path is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("\"source.pod\""),
        "{}",
        err.message()
    );
    // The same for a follow.
    let err = ObserverClient::new(ch.clone())
        .get_flows(GetFlowsRequest {
            follow: true,
            field_mask: mask(&["IP.src"]),
            ..Default::default()
        })
        .await
        .expect_err("an unknown path is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Real paths, including ones recent Hubble CLIs ask for: exactly those fields.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let flows = loop {
        let resps = get_flows(
            &ch,
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    destination_ip: vec![WORLD_IP.into()],
                    ..FlowFilter::default()
                }],
                field_mask: mask(&[
                    "time",
                    "source.pod_name",
                    "IP.source",
                    "l4.UDP.destination_port",
                    "ip_trace_id",
                ]),
                ..Default::default()
            },
        )
        .await
        .expect("a valid mask");
        let flows: Vec<_> = resps
            .into_iter()
            .filter_map(|r| match r.response_types {
                Some(ResponseTypes::Flow(f)) => Some((r.node_name, f)),
                _ => None,
            })
            .collect();
        if !flows.is_empty() || tokio::time::Instant::now() >= deadline {
            break flows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!flows.is_empty(), "the request's flows");
    for (node, f) in &flows {
        assert_eq!(node, "node-1", "the response still names the node");
        assert!(f.time.is_some(), "{f:?}");
        assert_eq!(f.source.as_ref().unwrap().pod_name, "pod-a", "{f:?}");
        assert_eq!(f.source.as_ref().unwrap().namespace, "", "{f:?}");
        let ip = f.ip.as_ref().unwrap();
        assert_eq!(
            (ip.source.as_str(), ip.destination.as_str()),
            (POD_A_IP, "")
        );
        assert_eq!(f.l4.as_ref().and_then(|l| l.ports()).map(|p| p.1), Some(53));
        assert!(
            f.node_name.is_empty() && f.uuid.is_empty() && f.interface.is_none(),
            "only the masked fields: {f:?}"
        );
    }
    assert!(agent.stop().success(), "agent: {}", agent.stderr());
}
