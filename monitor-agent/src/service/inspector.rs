//! `flowscope.v1.Inspector`: what Hubble has no room for — our conntrack table, the kernel's
//! NAT table and the agent's own status.

use std::{
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
};

use flowscope_proto::{
    flow::{IpVersion, NetworkInterface, TcpFlags, TrafficDirection},
    flowscope::v1::{
        AgentStatus, AgentStatusRequest, AgentStatusResponse, AggregationLevel,
        AttachMode as PbAttachMode, AttachedInterface, ConntrackEntry, ConntrackFlags,
        ConntrackState, InterfaceRole, ListConntrackRequest, ListConntrackResponse, ListNatRequest,
        ListNatResponse, MapFill, NatEntry, NatKind, StageCounters, Tuple,
        inspector_server::Inspector,
    },
    wkt::{Duration as PbDuration, Timestamp},
};
use monitor_common::{
    CtEntry, CtKey, DIR_ORIG, DIR_REPLY, aggregation, counter, ct_flags, family, obs, proto,
};
use tonic::{Request, Response, Status};

use super::AgentState;
use crate::{
    decode::nat,
    kernel::{
        datapath::{AttachMode, lifetime_ns},
        facts::Clock,
        ifaces::Role,
    },
};

/// The Inspector service.
#[derive(Clone)]
pub struct InspectorService {
    state: Arc<AgentState>,
}

impl InspectorService {
    /// A service over the agent's state.
    pub fn new(state: Arc<AgentState>) -> Self {
        InspectorService { state }
    }
}

/// An address or CIDR from a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { net: addr, bits })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Protocol name -> number, for request filters.
pub(crate) fn protocol_number(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "tcp" => Some(proto::TCP),
        "udp" => Some(proto::UDP),
        "icmp" | "icmpv4" => Some(proto::ICMP),
        "icmpv6" => Some(proto::ICMPV6),
        "sctp" => Some(proto::SCTP),
        n => n.parse().ok(),
    }
}

/// Protocol number -> name.
pub(crate) fn protocol_name(p: u8) -> String {
    match p {
        proto::TCP => "TCP".into(),
        proto::UDP => "UDP".into(),
        proto::ICMP => "ICMP".into(),
        proto::ICMPV6 => "ICMPv6".into(),
        proto::SCTP => "SCTP".into(),
        p => format!("proto-{p}"),
    }
}

/// A request's (ip, port, protocol) filters, compiled.
pub(crate) struct TupleFilter {
    ips: Vec<Cidr>,
    ports: Vec<u16>,
    protocols: Vec<u8>,
}

impl TupleFilter {
    pub(crate) fn new(
        ips: &[String],
        ports: &[String],
        protocols: &[String],
    ) -> Result<Self, Status> {
        let ips = ips
            .iter()
            .map(|s| {
                Cidr::parse(s).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "invalid ip {s:?}: expected an address or CIDR"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let ports = ports
            .iter()
            .map(|s| {
                s.parse::<u16>().map_err(|_| {
                    Status::invalid_argument(format!("invalid port {s:?}: expected 0..65535"))
                })
            })
            .collect::<Result<_, _>>()?;
        let protocols = protocols
            .iter()
            .map(|s| {
                protocol_number(s).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "invalid protocol {s:?}: expected tcp, udp, icmp, icmpv6, sctp"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TupleFilter {
            ips,
            ports,
            protocols,
        })
    }

    pub(crate) fn matches(
        &self,
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    ) -> bool {
        (self.protocols.is_empty() || self.protocols.contains(&proto))
            && (self.ips.is_empty() || self.ips.iter().any(|c| c.contains(src) || c.contains(dst)))
            && (self.ports.is_empty() || self.ports.contains(&sport) || self.ports.contains(&dport))
    }
}

fn key_addr(fam: u8, raw: &[u8; 16]) -> IpAddr {
    // The kernel writes only the two families; anything else reads as IPv6, as before.
    monitor_common::addr_from_raw(fam, raw)
        .unwrap_or_else(|| monitor_common::addr_from_raw(family::V6, raw).expect("IPv6"))
}

/// A stable identifier for a conntrack key (FNV-1a of its bytes): the same on every listing.
pub fn ct_id(k: &CtKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = k
        .src_addr
        .iter()
        .chain(&k.dst_addr)
        .copied()
        .chain(k.src_port.to_be_bytes())
        .chain(k.dst_port.to_be_bytes())
        .chain([k.proto, k.family]);
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl InspectorService {
    fn entry(
        &self,
        k: &CtKey,
        e: &CtEntry,
        clock: &Clock,
        now_mono: u64,
        names: &std::collections::BTreeMap<u32, String>,
        cfg: &monitor_common::Config,
    ) -> ConntrackEntry {
        let (src, dst) = (
            key_addr(k.family, &k.src_addr),
            key_addr(k.family, &k.dst_addr),
        );
        let icmp = matches!(k.proto, proto::ICMP | proto::ICMPV6);
        let remaining =
            lifetime_ns(cfg, k, e).saturating_sub(now_mono.saturating_sub(e.last_seen_ns));
        let ts = |mono: u64| (mono != 0).then(|| Timestamp::from(clock.to_system_time(mono)));
        let closing = e.flags & ct_flags::CLOSING != 0;
        let seen_reply = e.flags & ct_flags::SEEN_REPLY != 0;
        ConntrackEntry {
            protocol: k.proto as u32,
            protocol_name: protocol_name(k.proto),
            family: if k.family == family::V4 {
                IpVersion::IPv4
            } else {
                IpVersion::IPv6
            } as i32,
            tuple: Some(Tuple {
                source_ip: src.to_string(),
                destination_ip: dst.to_string(),
                source_port: if icmp { 0 } else { k.src_port as u32 },
                destination_port: if icmp { 0 } else { k.dst_port as u32 },
                icmp_id: if icmp {
                    k.src_port.max(k.dst_port) as u32
                } else {
                    0
                },
            }),
            direction: match e.obs_point {
                obs::FROM_ENDPOINT | obs::TO_NETWORK | obs::FROM_HOST => TrafficDirection::Egress,
                _ => TrafficDirection::Ingress,
            } as i32,
            state: if closing {
                ConntrackState::Closing
            } else if seen_reply {
                ConntrackState::Established
            } else {
                ConntrackState::New
            } as i32,
            flags: Some(ConntrackFlags {
                closing,
                seen_reply,
                seen_non_syn: (e.flags_seen[DIR_ORIG] | e.flags_seen[DIR_REPLY]) & !0x02 != 0,
                raw: e.flags as u32,
                ..ConntrackFlags::default()
            }),
            ct_id: ct_id(k),
            created: ts(e.created_ns),
            last_seen: ts(e.last_seen_ns),
            expires_in: Some(PbDuration {
                seconds: (remaining / 1_000_000_000) as i64,
                nanos: (remaining % 1_000_000_000) as i32,
            }),
            tx_packets: e.packets[DIR_ORIG],
            tx_bytes: e.bytes[DIR_ORIG],
            rx_packets: e.packets[DIR_REPLY],
            rx_bytes: e.bytes[DIR_REPLY],
            tx_tcp_flags: (k.proto == proto::TCP)
                .then(|| TcpFlags::from_header(e.flags_seen[DIR_ORIG], false)),
            rx_tcp_flags: (k.proto == proto::TCP)
                .then(|| TcpFlags::from_header(e.flags_seen[DIR_REPLY], false)),
            last_tx_report: ts(e.last_report_ns[DIR_ORIG]),
            last_rx_report: ts(e.last_report_ns[DIR_REPLY]),
            source_identity: self.state.registry.lookup(src).identity,
            interface: Some(NetworkInterface {
                index: e.ifindex,
                name: names.get(&e.ifindex).cloned().unwrap_or_default(),
            }),
            node_name: self.state.node_name.clone(),
        }
    }
}

fn pb_nat_tuple(t: &nat::Tuple) -> Tuple {
    Tuple {
        source_ip: t.src.to_string(),
        destination_ip: t.dst.to_string(),
        source_port: t.sport as u32,
        destination_port: t.dport as u32,
        icmp_id: t.icmp_id as u32,
    }
}

/// One translated connection, as `flowctl nat list` shows it: the original tuple, the reply
/// tuple, and what the translation changed (the reply's destination is the translated source,
/// its source the translated destination).
fn nat_entry(e: &nat::ConnEntry, node: &str) -> NatEntry {
    let kind = match (e.snat(), e.dnat()) {
        (true, true) => NatKind::Both,
        (true, false) => NatKind::Snat,
        (false, true) => NatKind::Dnat,
        _ => NatKind::Unspecified,
    };
    let port = |t: &nat::Tuple, src: bool| if t.icmp_id != 0 { t.icmp_id } else if src { t.sport } else { t.dport } as u32;
    NatEntry {
        protocol: e.orig.proto as u32,
        protocol_name: protocol_name(e.orig.proto),
        family: if e.orig.src.is_ipv4() {
            IpVersion::IPv4
        } else {
            IpVersion::IPv6
        } as i32,
        original: Some(pb_nat_tuple(&e.orig)),
        reply: Some(pb_nat_tuple(&e.reply)),
        kind: kind as i32,
        translated_source_ip: if e.snat() {
            e.reply.dst.to_string()
        } else {
            String::new()
        },
        translated_source_port: if e.snat() { port(&e.reply, false) } else { 0 },
        translated_destination_ip: if e.dnat() {
            e.reply.src.to_string()
        } else {
            String::new()
        },
        translated_destination_port: if e.dnat() { port(&e.reply, true) } else { 0 },
        timeout: Some(PbDuration {
            seconds: e.timeout as i64,
            nanos: 0,
        }),
        state: e
            .tcp_state
            .map(nat::tcp_state_name)
            .unwrap_or_default()
            .to_owned(),
        status: nat::status_names(e.status)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        original_packets: e.counters_orig.map(|c| c.0),
        original_bytes: e.counters_orig.map(|c| c.1),
        reply_packets: e.counters_reply.map(|c| c.0),
        reply_bytes: e.counters_reply.map(|c| c.1),
        mark: e.mark,
        zone: e.zone as u32,
        id: e.id,
        node_name: node.to_owned(),
    }
}

fn node_selected(wanted: &[String], node: &str) -> bool {
    wanted.is_empty() || wanted.iter().any(|w| w == node)
}

#[tonic::async_trait]
impl Inspector for InspectorService {
    async fn list_conntrack(
        &self,
        request: Request<ListConntrackRequest>,
    ) -> Result<Response<ListConntrackResponse>, Status> {
        let req = request.into_inner();
        let filter = TupleFilter::new(&req.ip, &req.port, &req.protocol)?;
        if !node_selected(&req.node_name, &self.state.node_name) {
            return Ok(Response::new(ListConntrackResponse::default()));
        }
        let (table, names) = {
            let d = self
                .state
                .datapath
                .lock()
                .map_err(|_| Status::internal("datapath lock poisoned"))?;
            let names = d.attached().map(|a| (a.ifindex, a.name.clone())).collect();
            (d.conntrack_table(), names)
        };
        // The walk blocks (two syscalls per entry): off the async workers, and without the
        // datapath's mutex, which the interface follower and other requests take.
        let cfg = *table.config();
        let entries = tokio::task::spawn_blocking(move || table.entries())
            .await
            .map_err(|e| Status::internal(format!("conntrack walk: {e}")))?;
        let clock = Clock::now();
        let now = Clock::monotonic_ns();
        let mut out: Vec<ConntrackEntry> = entries
            .iter()
            .filter(|(k, _)| {
                let (s, d) = (
                    key_addr(k.family, &k.src_addr),
                    key_addr(k.family, &k.dst_addr),
                );
                filter.matches(k.proto, s, d, k.src_port, k.dst_port)
            })
            .map(|(k, e)| self.entry(k, e, &clock, now, &names, &cfg))
            .collect();
        // Most recent first, as an operator reads it.
        out.sort_by(|a, b| {
            b.last_seen
                .as_ref()
                .map(Timestamp::as_nanos)
                .cmp(&a.last_seen.as_ref().map(Timestamp::as_nanos))
        });
        let truncated = req.limit > 0 && out.len() > req.limit as usize;
        if truncated {
            out.truncate(req.limit as usize);
        }
        Ok(Response::new(ListConntrackResponse {
            entries: out,
            truncated,
            unavailable_nodes: vec![],
        }))
    }

    async fn list_nat(
        &self,
        request: Request<ListNatRequest>,
    ) -> Result<Response<ListNatResponse>, Status> {
        let req = request.into_inner();
        let filter = TupleFilter::new(&req.ip, &req.port, &req.protocol)?;
        if !node_selected(&req.node_name, &self.state.node_name) {
            return Ok(Response::new(ListNatResponse::default()));
        }
        let entries = tokio::task::spawn_blocking(nat::dump)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                Status::unavailable(format!(
                    "reading the kernel's conntrack table over ctnetlink: {e}"
                ))
            })?;
        let mut out: Vec<NatEntry> = entries
            .iter()
            .filter(|e| e.snat() || e.dnat())
            .filter(|e| {
                let (o, r) = (&e.orig, &e.reply);
                filter.matches(o.proto, o.src, o.dst, o.sport.max(o.icmp_id), o.dport)
                    || filter.matches(r.proto, r.src, r.dst, r.sport.max(r.icmp_id), r.dport)
            })
            .map(|e| nat_entry(e, &self.state.node_name))
            .collect();
        out.sort_by(|a, b| {
            b.timeout
                .as_ref()
                .map(|t| t.seconds)
                .cmp(&a.timeout.as_ref().map(|t| t.seconds))
        });
        let truncated = req.limit > 0 && out.len() > req.limit as usize;
        if truncated {
            out.truncate(req.limit as usize);
        }
        Ok(Response::new(ListNatResponse {
            entries: out,
            truncated,
            unavailable_nodes: vec![],
        }))
    }

    async fn get_agent_status(
        &self,
        request: Request<AgentStatusRequest>,
    ) -> Result<Response<AgentStatusResponse>, Status> {
        let req = request.into_inner();
        let s = &self.state;
        if !node_selected(&req.node_name, &s.node_name) {
            return Ok(Response::new(AgentStatusResponse::default()));
        }
        // Counting the conntrack entries is a walk: off the async workers, before the datapath's
        // mutex is taken.
        let table = s
            .datapath
            .lock()
            .map_err(|_| Status::internal("datapath lock poisoned"))?
            .conntrack_table();
        let ct_len = tokio::task::spawn_blocking(move || table.len() as u64)
            .await
            .map_err(|e| Status::internal(format!("conntrack walk: {e}")))?;
        let d = s
            .datapath
            .lock()
            .map_err(|_| Status::internal("datapath lock poisoned"))?;
        let c = d.counters();
        let interfaces = d
            .attached()
            .map(|a| AttachedInterface {
                name: a.name.clone(),
                ifindex: a.ifindex,
                role: match a.role {
                    Role::Endpoint => InterfaceRole::Endpoint,
                    Role::Uplink => InterfaceRole::Uplink,
                    Role::Host => InterfaceRole::Host,
                } as i32,
                attach_mode: match a.mode {
                    AttachMode::Netlink => PbAttachMode::Netlink,
                    _ => PbAttachMode::Tcx,
                } as i32,
                attached_at: None,
            })
            .collect();
        let uptime = s.started.elapsed();
        let status = AgentStatus {
            node_name: s.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime: Some(PbDuration {
                seconds: uptime.as_secs() as i64,
                nanos: uptime.subsec_nanos() as i32,
            }),
            aggregation: match d.config().aggregation {
                aggregation::NONE => AggregationLevel::None,
                aggregation::LOW => AggregationLevel::Low,
                aggregation::MEDIUM => AggregationLevel::Medium,
                _ => AggregationLevel::Max,
            } as i32,
            interfaces,
            counters: Some(StageCounters {
                events_read: s.reader.events_read.load(Ordering::Relaxed),
                lost_kernel_ring: c[counter::RING_LOST as usize],
                lost_decode_queue: s.reader.queue_lost.load(Ordering::Relaxed),
                lost_history: s.pipeline.history_lost.load(Ordering::Relaxed),
                // The one decode failure there is: a ring record of an unexpected size.
                decode_errors: s.reader.malformed.load(Ordering::Relaxed),
                aggregated_away: c[counter::AGGREGATED as usize],
                flows_produced: s.store.seen_flows(),
            }),
            maps: vec![MapFill {
                name: monitor_common::CONNTRACK_MAP.into(),
                entries: ct_len,
                max_entries: d.conntrack_capacity() as u64,
            }],
        };
        Ok(Response::new(AgentStatusResponse {
            agents: vec![status],
            unavailable_nodes: vec![],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.244.0.0/24").unwrap();
        assert!(c.contains("10.244.0.213".parse().unwrap()));
        assert!(!c.contains("10.245.0.1".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        assert!(
            Cidr::parse("fd00::/64")
                .unwrap()
                .contains("fd00::213".parse().unwrap())
        );
        assert!(
            Cidr::parse("1.0.0.1")
                .unwrap()
                .contains("1.0.0.1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn tuple_filter() {
        let f = TupleFilter::new(&["1.0.0.1".into()], &["80".into()], &["tcp".into()]).unwrap();
        let (a, b) = ("10.244.0.213".parse().unwrap(), "1.0.0.1".parse().unwrap());
        assert!(f.matches(proto::TCP, a, b, 40000, 80));
        assert!(!f.matches(proto::UDP, a, b, 40000, 80));
        assert!(TupleFilter::new(&[], &["http".into()], &[]).is_err());
    }

    #[test]
    fn ct_ids_are_stable_and_distinct() {
        let mut k = CtKey {
            proto: proto::TCP,
            family: family::V4,
            src_port: 1,
            dst_port: 80,
            ..CtKey::default()
        };
        let a = ct_id(&k);
        assert_eq!(a, ct_id(&k));
        k.src_port = 2;
        assert_ne!(a, ct_id(&k));
    }
}
