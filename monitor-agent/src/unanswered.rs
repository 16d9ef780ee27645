//! Connections that got no answer: the first question when "my pod cannot reach the internet".
//!
//! Every new connection a pod (or the node) opens with a TCP SYN or a UDP request is remembered
//! for `timeout`. When the time is up, the BPF conntrack entry says whether a reply was seen; if
//! not, the connection's first flow is reported again, marked unanswered (`FlowExtension.
//! unanswered`, and in the summary for clients that do not read our extension). The table is
//! bounded: what does not fit is counted, not tracked.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flowscope_proto::{
    flow::Flow,
    flowscope::v1::FlowExtension,
    wkt::{Any, Timestamp},
};
use monitor_common::{CtKey, ct_flags, family, proto, tcp};

use crate::{
    datapath::Datapath,
    event::{CtState, Event, Kind, ObsPoint},
    store::Entry,
};

/// The pending connections.
pub struct Unanswered {
    timeout: Duration,
    pending: HashMap<CtKey, (Instant, Arc<Flow>)>,
    max: usize,
    /// Connections not tracked because the table was full.
    pub overflow: u64,
    /// Connections reported unanswered so far.
    pub reported: u64,
}

fn key_of(ev: &Event) -> Option<CtKey> {
    let (src, dst) = (ev.src?, ev.dst?);
    let mut k = CtKey {
        proto: ev.proto,
        src_port: ev.src_port,
        dst_port: ev.dst_port,
        ..CtKey::default()
    };
    let put = |d: &mut [u8; 16], ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => d[..4].copy_from_slice(&a.octets()),
        std::net::IpAddr::V6(a) => *d = a.octets(),
    };
    put(&mut k.src_addr, src);
    put(&mut k.dst_addr, dst);
    k.family = if src.is_ipv4() {
        family::V4
    } else {
        family::V6
    };
    Some(k)
}

impl Unanswered {
    /// Tracks connections for `timeout` (0 disables), at most `max` at a time.
    pub fn new(timeout: Duration, max: usize) -> Self {
        Unanswered {
            timeout,
            pending: HashMap::new(),
            max,
            overflow: 0,
            reported: 0,
        }
    }

    /// Looks at one event and its flow: remembers it if it opens a connection that expects a reply.
    pub fn observe(&mut self, ev: &Event, flow: &Arc<Flow>) {
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
            self.overflow += 1;
            return;
        }
        self.pending
            .entry(key)
            .or_insert_with(|| (Instant::now() + self.timeout, flow.clone()));
    }

    /// Reports the connections whose time is up and whose conntrack entry saw no reply.
    pub fn expire(&mut self, dp: &Mutex<Datapath>) -> Vec<Entry> {
        let now = Instant::now();
        let due: Vec<CtKey> = self
            .pending
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let Ok(d) = dp.lock() else { return Vec::new() };
        let mut out = Vec::new();
        for k in due {
            let Some((_, flow)) = self.pending.remove(&k) else {
                continue;
            };
            // No entry at all (evicted, or the connection was closed by RST without reply):
            // nothing answered either.
            let answered = d
                .conntrack_get(&k)
                .is_some_and(|e| e.flags & ct_flags::SEEN_REPLY != 0);
            if !answered {
                out.push(Entry::Flow(Arc::new(self.mark(&flow))));
                self.reported += 1;
            }
        }
        out
    }

    #[expect(
        deprecated,
        reason = "Hubble's Summary field is what every client prints"
    )]
    fn mark(&self, f: &Flow) -> Flow {
        let mut f = f.clone();
        f.uuid = uuid::Uuid::new_v4().to_string();
        f.time = Some(Timestamp::now());
        f.summary = format!(
            "{} (no reply after {})",
            f.summary,
            humantime::format_duration(self.timeout)
        );
        let mut ext: FlowExtension = f
            .extensions
            .as_ref()
            .and_then(|a| a.to_msg().ok().flatten())
            .unwrap_or_default();
        ext.unanswered = true;
        f.extensions = Some(Any::from_msg(&ext));
        f
    }
}
