//! Connections that got no answer: the first question when "my pod cannot reach the internet".
//!
//! Every new connection a pod (or the node) opens with a TCP SYN or a UDP request is remembered
//! for `timeout`. When the time is up, the BPF conntrack entry says whether a reply was seen; if
//! not, the connection is reported once, as what it is: an [`UnansweredConnection`] record with
//! the connection's addresses, ports and endpoints, when it started, how long we waited and how
//! many packets went out meanwhile. It is not a packet, so it is never made to look like one:
//! it carries no verdict, event type or TCP flags, it goes to its own history (served only to
//! clients that select it with `flowscope.v1.GetFlowsExtension`), its own metric and, when
//! asked, its own export line. Hubble clients, Hubble's metrics and the export file's flow lines
//! only ever see packets that happened.
//!
//! The table is bounded: what does not fit is counted, not tracked.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use flowscope_proto::{
    flow::{Flow, Layer4, Verdict, layer4::Protocol},
    flowscope::v1::{FlowExtension, UnansweredConnection},
    wkt::{Any, Timestamp},
};
use monitor_common::{CtEntry, CtKey, ct_flags, proto, tcp};

use crate::{
    decode::{
        event::{CtState, Event, Kind, ObsPoint},
        record::FlowRecord,
    },
    kernel::datapath::Datapath,
};

/// Counters of the tracker, read by the metrics at scrape time.
#[derive(Debug, Default)]
pub struct UnansweredStats {
    /// TCP connections reported unanswered.
    pub tcp: AtomicU64,
    /// UDP "connections" (a request and its expected response) reported unanswered.
    pub udp: AtomicU64,
    /// Connections not tracked because the table was full.
    pub untracked: AtomicU64,
}

/// A connection waiting for its first reply.
struct Pending {
    due: Instant,
    /// The record of the connection's first packet, where it left the pod (or the node).
    first: Arc<FlowRecord>,
}

/// The pending connections.
pub struct Unanswered {
    timeout: Duration,
    pending: HashMap<CtKey, Pending>,
    max: usize,
    stats: Arc<UnansweredStats>,
}

fn key_of(ev: &Event) -> Option<CtKey> {
    Some(CtKey::new(
        ev.proto,
        ev.src?,
        ev.src_port,
        ev.dst?,
        ev.dst_port,
    ))
}

impl Unanswered {
    /// Tracks connections for `timeout` (0 disables), at most `max` at a time.
    pub fn new(timeout: Duration, max: usize) -> Self {
        Unanswered {
            timeout,
            pending: HashMap::new(),
            max,
            stats: Arc::default(),
        }
    }

    /// The tracker's counters.
    pub fn stats(&self) -> Arc<UnansweredStats> {
        self.stats.clone()
    }

    /// Looks at one flow: remembers it if it opens a connection that expects a reply.
    pub fn observe(&mut self, rec: &Arc<FlowRecord>) {
        let ev = &rec.event;
        if self.timeout.is_zero() || ev.kind != Kind::Trace || ev.ct_state != Some(CtState::New) {
            return;
        }
        // Where a connection starts: a pod sending, or the node itself sending out. With the
        // `cilium` observation points a pod's packet is reported at its veth as to-stack, or as
        // to-endpoint (by the veth's ingress hook) when delivered to a local pod.
        let origin = match ev.point {
            ObsPoint::FromEndpoint | ObsPoint::FromHost | ObsPoint::ToStack => true,
            ObsPoint::ToEndpoint => ev.ingress_hook,
            ObsPoint::ToNetwork => ev.ingress_ifindex == 0,
            _ => false,
        };
        let opens = match ev.proto {
            proto::TCP => ev.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN,
            proto::UDP => true,
            _ => false,
        };
        if !origin || !opens {
            return;
        }
        let Some(key) = key_of(ev) else { return };
        if self.pending.len() >= self.max && !self.pending.contains_key(&key) {
            self.stats.untracked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.pending.entry(key).or_insert_with(|| Pending {
            due: Instant::now() + self.timeout,
            first: rec.clone(),
        });
    }

    /// The connections whose time is up and whose conntrack entry saw no reply, as reports.
    pub fn expire(&mut self, dp: &Mutex<Datapath>) -> Vec<Arc<Flow>> {
        let now = Instant::now();
        let due: Vec<CtKey> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        // Look the entries up under the lock, build the reports after releasing it.
        let looked_up: Vec<(Pending, Option<CtEntry>)> = {
            let Ok(d) = dp.lock() else { return Vec::new() };
            due.iter()
                .filter_map(|k| Some((self.pending.remove(k)?, d.conntrack_get(k))))
                .collect()
        };
        let at = Timestamp::now();
        let mut out = Vec::new();
        for (pending, entry) in looked_up {
            // No entry at all (evicted, or the connection was closed by a RST without a reply):
            // nothing answered either.
            let answered = entry
                .as_ref()
                .is_some_and(|e| e.flags & ct_flags::SEEN_REPLY != 0);
            if answered {
                continue;
            }
            let first = pending.first.to_flow();
            let report = report(&first, entry.as_ref(), self.timeout, at);
            match first.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
                Some(Protocol::Tcp(_)) => self.stats.tcp.fetch_add(1, Ordering::Relaxed),
                _ => self.stats.udp.fetch_add(1, Ordering::Relaxed),
            };
            out.push(Arc::new(report));
        }
        out
    }
}

/// The report of one unanswered connection, made from the flow of its first packet and what
/// our conntrack entry counted since. Only what describes the connection is kept: addresses,
/// ports, endpoints, interface, direction, node; nothing that would describe a packet.
#[expect(
    deprecated,
    reason = "Hubble's Summary field is what every client prints"
)]
pub fn report(first: &Flow, entry: Option<&CtEntry>, waited: Duration, at: Timestamp) -> Flow {
    let first_ext: FlowExtension = first
        .extensions
        .as_ref()
        .and_then(|a| a.to_msg().ok().flatten())
        .unwrap_or_default();
    let (packets_sent, bytes_sent) = entry.map_or((0, 0), |e| (e.packets[0], e.bytes[0]));
    // Ports, without the first packet's TCP flags.
    let l4 = first.l4.as_ref().and_then(|l| match &l.protocol {
        Some(Protocol::Tcp(t)) => Some(Layer4 {
            protocol: Some(Protocol::Tcp(flowscope_proto::flow::Tcp {
                flags: None,
                ..*t
            })),
        }),
        Some(Protocol::Udp(u)) => Some(Layer4 {
            protocol: Some(Protocol::Udp(*u)),
        }),
        _ => None,
    });
    let proto_name = match l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(_)) => "TCP",
        _ => "UDP",
    };
    let ext = FlowExtension {
        unanswered: true,
        unanswered_connection: Some(UnansweredConnection {
            first_seen: first.time,
            waited: Some(waited.into()),
            packets_sent,
            bytes_sent,
        }),
        ct_id: first_ext.ct_id,
        ct_tuple: first_ext.ct_tuple,
        source_xlated_port: first_ext.source_xlated_port,
        destination_xlated: first_ext.destination_xlated,
        destination_xlated_port: first_ext.destination_xlated_port,
        ..FlowExtension::default()
    };
    Flow {
        time: Some(at),
        uuid: uuid::Uuid::new_v4().to_string(),
        verdict: Verdict::Unknown as i32,
        ip: first.ip.clone(),
        l4,
        source: first.source.clone(),
        destination: first.destination.clone(),
        // An unanswered connection to a Service's ClusterIP says which Service.
        source_service: first.source_service.clone(),
        destination_service: first.destination_service.clone(),
        r#type: first.r#type,
        node_name: first.node_name.clone(),
        is_reply: Some(false),
        traffic_direction: first.traffic_direction,
        interface: first.interface.clone(),
        summary: format!(
            "{proto_name} connection unanswered: no reply after {}, {packets_sent} packet{} sent",
            humantime::format_duration(waited),
            if packets_sent == 1 { "" } else { "s" },
        ),
        extensions: Some(Any::from_msg(&ext)),
        ..Flow::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::flow::{
        CiliumEventType, Endpoint, Ip, TcpFlags, TraceObservationPoint, TrafficDirection,
    };

    #[expect(deprecated, reason = "Summary is set as the agent sets it")]
    fn syn() -> Flow {
        Flow {
            time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            uuid: "first".into(),
            verdict: Verdict::Forwarded as i32,
            ip: Some(Ip {
                source: "10.244.0.213".into(),
                destination: "1.0.0.1".into(),
                ..Ip::default()
            }),
            l4: Some(Layer4::tcp(
                40_000,
                81,
                TcpFlags {
                    syn: true,
                    ..TcpFlags::default()
                },
            )),
            source: Some(Endpoint {
                namespace: "default".into(),
                pod_name: "pod-a".into(),
                ..Endpoint::default()
            }),
            event_type: Some(CiliumEventType {
                r#type: 4,
                sub_type: 0,
            }),
            trace_observation_point: TraceObservationPoint::FromEndpoint as i32,
            traffic_direction: TrafficDirection::Egress as i32,
            node_name: "node-1".into(),
            summary: "TCP Flags: SYN".into(),
            ..Flow::default()
        }
    }

    #[test]
    fn a_report_describes_the_connection_not_a_packet() {
        let entry = CtEntry {
            packets: [3, 0],
            bytes: [180, 0],
            ..CtEntry::default()
        };
        let at = Timestamp {
            seconds: 1_700_000_002,
            nanos: 0,
        };
        let r = report(&syn(), Some(&entry), Duration::from_secs(2), at);
        assert_ne!(r.uuid, "first");
        assert_eq!(r.time, Some(at));
        // Nothing that a Hubble client would read as a packet.
        assert_eq!(r.verdict, Verdict::Unknown as i32);
        assert_eq!(r.event_type, None);
        assert_eq!(r.trace_observation_point, 0);
        let Some(Protocol::Tcp(t)) = r.l4.as_ref().and_then(|l| l.protocol.as_ref()) else {
            panic!("no TCP layer: {r:?}");
        };
        assert_eq!(
            (t.source_port, t.destination_port, t.flags),
            (40_000, 81, None)
        );
        // What identifies the connection is kept.
        assert_eq!(r.ip, syn().ip);
        assert_eq!(r.source, syn().source);
        let ext: FlowExtension = r.extensions.unwrap().to_msg().unwrap().unwrap();
        assert!(ext.unanswered);
        let c = ext.unanswered_connection.unwrap();
        assert_eq!(c.first_seen, syn().time);
        assert_eq!((c.packets_sent, c.bytes_sent), (3, 180));
        assert_eq!(c.waited, Some(Duration::from_secs(2).into()));
        #[expect(deprecated, reason = "what clients print")]
        let summary = r.summary;
        assert_eq!(
            summary,
            "TCP connection unanswered: no reply after 2s, 3 packets sent"
        );
    }

    #[test]
    fn a_report_without_conntrack_entry_says_nothing_was_counted() {
        let at = Timestamp::now();
        let r = report(&syn(), None, Duration::from_secs(5), at);
        let ext: FlowExtension = r.extensions.unwrap().to_msg().unwrap().unwrap();
        assert_eq!(ext.unanswered_connection.unwrap().packets_sent, 0);
    }
}
