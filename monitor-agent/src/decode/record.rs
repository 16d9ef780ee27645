//! What the history keeps of a flow: the kernel's event and handles into its enrichment.
//!
//! A Hubble `flow.Flow` is ~40 heap objects (~2 KiB with its strings). The history, the metrics
//! and the followers do not need one: a [`FlowRecord`] is the decoded event plus shared handles
//! (the endpoints' identities, the NAT join, the interface name, the node), ~300 bytes. The
//! `flow.Flow` is built from it only where a consumer asks for one ([`FlowRecord::to_flow`]:
//! filters, the export file, the dump); a follower's protobuf bytes are written straight from
//! it (`service::flow_encoder`), tested byte for byte against prost's encoding of `to_flow`.
//!
//! Every fact a flow states is worked out here, once, by a method both paths call: the two
//! can only differ in layout, never in meaning.

use std::{fmt::Write as _, net::IpAddr, sync::Arc, time::SystemTime};

use flowscope_proto::{
    drop_reason,
    flow::{
        self, CiliumEventType, DropReason, Emitter, Ethernet, Flow, FlowType, IpVersion, Layer4,
        NetworkInterface, TcpFlags, TraceObservationPoint, TraceReason, TrafficDirection, Verdict,
    },
    flowscope::v1::{FlowExtension, Tuple as PbTuple},
    wkt::{Any, Timestamp},
};
use monitor_common::{CtKey, event_type, proto as ipproto};

use crate::{
    decode::{
        event::{CtState, Event, Kind, ObsPoint, format_mac},
        nat::{Translation, Tuple},
    },
    endpoints::{Identity, ServiceName},
    service::inspector::ct_id,
};

/// What every flow of this node says about the node (shared by all records).
#[derive(Debug)]
pub struct NodeFacts {
    /// `Flow.node_name`.
    pub node_name: String,
    /// `Flow.emitter.name`.
    pub emitter_name: String,
    /// `Flow.emitter.version`.
    pub emitter_version: String,
}

impl NodeFacts {
    /// The facts of node `node_name`, emitted by this build of flowscope.
    pub fn new(node_name: String) -> Self {
        NodeFacts {
            node_name,
            emitter_name: "flowscope".into(),
            emitter_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// One flow as the history keeps it.
#[derive(Clone, Debug)]
pub struct FlowRecord {
    /// The decoded kernel event.
    pub event: Event,
    /// Name of `event.ifindex` when the event was decoded.
    pub ifname: Option<Arc<str>>,
    /// Source endpoint (after the NAT join: the pod behind a masqueraded address).
    pub src: Option<Identity>,
    /// Destination endpoint (after the NAT join).
    pub dst: Option<Identity>,
    /// The kernel's source NAT of this connection, when it translated it and this hop sees the
    /// translated side.
    pub xlat: Option<Arc<Translation>>,
    /// The kernel's DNAT of a connection to a Service's frontend (a ClusterIP), on either side
    /// of the translation.
    pub dnat: Option<Arc<Translation>>,
    /// The Service whose frontend is the source address and port (Hubble's `source_service`).
    pub src_service: Option<Arc<ServiceName>>,
    /// The Service whose frontend is the destination (Hubble's `destination_service`).
    pub dst_service: Option<Arc<ServiceName>>,
    /// Names the node's DNS answers gave the source address (Hubble's `source_names`).
    pub src_names: Option<Arc<[String]>>,
    /// Names of the destination address (Hubble's `destination_names`).
    pub dst_names: Option<Arc<[String]>>,
    /// `Flow.uuid`: drawn once, so that every reader of the record sees the same one.
    pub uuid: uuid::Uuid,
    /// The node.
    pub node: Arc<NodeFacts>,
}

impl FlowRecord {
    /// Hubble's drop reason for a drop (the code meaning what the kernel's reason means).
    pub fn hubble_reason(&self) -> Option<DropReason> {
        (self.event.kind == Kind::Drop)
            .then(|| drop_reason::hubble_drop_reason(self.event.drop_reason_name.as_deref()))
    }

    /// `Flow.verdict`.
    pub fn verdict(&self) -> Verdict {
        if self.event.kind == Kind::Drop {
            Verdict::Dropped
        } else {
            Verdict::Forwarded
        }
    }

    /// `Flow.time`.
    pub fn time(&self) -> SystemTime {
        self.event.time
    }

    /// `Flow.is_reply` (`Flow.reply` is its value, false when unknown).
    pub fn is_reply(&self) -> Option<bool> {
        match self.event.ct_state {
            Some(CtState::Reply) => Some(true),
            Some(CtState::New | CtState::Established | CtState::Related) => Some(false),
            None => None,
        }
    }

    /// `Flow.event_type`: trace with the observation point, or drop with Hubble's reason code.
    pub fn event_type(&self) -> CiliumEventType {
        let is_drop = self.event.kind == Kind::Drop;
        CiliumEventType {
            r#type: if is_drop {
                event_type::DROP
            } else {
                event_type::TRACE
            } as i32,
            sub_type: match self.hubble_reason() {
                Some(r) => drop_reason::drop_sub_type(r),
                None => self.event.point.raw() as i32,
            },
        }
    }

    /// `Flow.trace_observation_point` (unknown for drops, as Cilium's drop events have none).
    pub fn observation_point(&self) -> TraceObservationPoint {
        if self.event.kind == Kind::Drop {
            TraceObservationPoint::UnknownPoint
        } else {
            TraceObservationPoint::from_datapath(self.event.point.raw())
        }
    }

    /// `Flow.trace_reason`.
    pub fn trace_reason(&self) -> TraceReason {
        match self.event.ct_state {
            Some(CtState::New) => TraceReason::New,
            Some(CtState::Established) => TraceReason::Established,
            Some(CtState::Reply) => TraceReason::Reply,
            Some(CtState::Related) => TraceReason::Related,
            None => TraceReason::Unknown,
        }
    }

    /// `Flow.traffic_direction`: from the local endpoint's point of view, as Hubble reports it
    /// (a pod's own connection is EGRESS, including its replies).
    pub fn direction(&self) -> TrafficDirection {
        let ev = &self.event;
        let reply = match ev.ct_state {
            None => return TrafficDirection::Unknown,
            Some(CtState::Reply | CtState::Related) => true,
            Some(_) => false,
        };
        let outward = match ev.point {
            ObsPoint::FromEndpoint
            | ObsPoint::ToStack
            | ObsPoint::ToNetwork
            | ObsPoint::FromHost => true,
            ObsPoint::ToEndpoint | ObsPoint::FromNetwork | ObsPoint::ToHost => false,
            ObsPoint::Unknown => return TrafficDirection::Unknown,
        };
        if outward != reply {
            TrafficDirection::Egress
        } else {
            TrafficDirection::Ingress
        }
    }

    /// The addresses of `Flow.IP`: `(source, source_xlated, destination)`. On the uplink of a
    /// masqueraded connection, Hubble's convention: `source` is the pod's address before
    /// translation, `source_xlated` the node's on the wire.
    pub fn addresses(&self) -> Option<(IpAddr, Option<IpAddr>, IpAddr)> {
        let (src, dst) = (self.event.src?, self.event.dst?);
        Some(match self.snat_at_uplink() {
            Some(t) => (t.orig.src, Some(src), dst),
            None => (src, None, dst),
        })
    }

    /// `Flow.IP.ip_version`.
    pub fn ip_version(&self) -> IpVersion {
        match self.event.src {
            Some(IpAddr::V4(_)) => IpVersion::IPv4,
            Some(IpAddr::V6(_)) => IpVersion::IPv6,
            None => IpVersion::IpNotUsed,
        }
    }

    /// The translation when this hop is the uplink's departure side of a masqueraded
    /// connection (the only hop whose source address and port are rewritten in the flow).
    fn snat_at_uplink(&self) -> Option<&Translation> {
        self.xlat
            .as_deref()
            .filter(|_| self.event.point == ObsPoint::ToNetwork)
    }

    /// `Flow.l4` (no allocation: every field is a number). On the uplink of a masqueraded
    /// connection the source port is the pod's.
    pub fn l4(&self) -> Option<Layer4> {
        let ev = &self.event;
        if !ev.has_l4 {
            return None;
        }
        let sport = self.snat_at_uplink().map_or(ev.src_port, |t| t.orig.sport);
        Some(match ev.proto {
            ipproto::TCP => Layer4::tcp(
                sport,
                ev.dst_port,
                TcpFlags::from_header(ev.tcp_flags, ev.tcp_ns),
            ),
            ipproto::UDP => Layer4::udp(sport, ev.dst_port),
            ipproto::SCTP => Layer4::sctp(sport, ev.dst_port),
            ipproto::ICMP => Layer4::icmpv4(ev.icmp_type, ev.icmp_code),
            ipproto::ICMPV6 => Layer4::icmpv6(ev.icmp_type, ev.icmp_code),
            _ => return None,
        })
    }

    /// The source and destination ports as `Flow.l4` shows them (0 without ports).
    pub fn ports(&self) -> (u16, u16) {
        use flowscope_proto::flow::layer4::Protocol;
        match self.l4().and_then(|l| l.protocol) {
            Some(Protocol::Tcp(t)) => (t.source_port as u16, t.destination_port as u16),
            Some(Protocol::Udp(u)) => (u.source_port as u16, u.destination_port as u16),
            Some(Protocol::Sctp(s)) => (s.source_port as u16, s.destination_port as u16),
            _ => (0, 0),
        }
    }

    /// `Flow.interface`: none for a to-stack trace (index 0), as Hubble leaves it on Cilium's.
    pub fn interface(&self) -> Option<(u32, &str)> {
        (self.event.ifindex != 0).then(|| {
            (
                self.event.ifindex,
                self.ifname.as_deref().unwrap_or_default(),
            )
        })
    }

    /// Hubble's summary line (`TCP Flags: SYN, ACK`, `UDP`, `ICMPv4 EchoRequest`, …), written
    /// into `out`.
    pub fn write_summary(&self, out: &mut String) {
        let ev = &self.event;
        if !ev.has_l4 {
            out.push_str(match ev.src {
                Some(IpAddr::V4(_)) => "IPv4",
                Some(IpAddr::V6(_)) => "IPv6",
                None => "non-IP",
            });
            return;
        }
        match ev.proto {
            ipproto::TCP => {
                out.push_str("TCP Flags: ");
                out.push_str(&TcpFlags::from_header(ev.tcp_flags, ev.tcp_ns).to_hubble_string());
            }
            ipproto::UDP => out.push_str("UDP"),
            ipproto::SCTP => out.push_str("SCTP"),
            ipproto::ICMP => {
                out.push_str("ICMPv4 ");
                write_icmpv4_name(out, ev.icmp_type, ev.icmp_code);
            }
            ipproto::ICMPV6 => {
                out.push_str("ICMPv6 ");
                write_icmpv6_name(out, ev.icmp_type, ev.icmp_code);
            }
            p => {
                let _ = write!(out, "IP protocol {p}");
            }
        }
    }

    /// Hubble's summary line.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        self.write_summary(&mut s);
        s
    }

    /// The connection's tuple in its original direction, on the pod's side of any NAT: every
    /// hop of the connection carries the same one, so clients can put the hops together.
    pub fn connection(&self) -> Option<Tuple> {
        match self.xlat.as_deref().or(self.dnat.as_deref()) {
            Some(t) => Some(t.orig),
            None => wire_tuple(&self.event).and_then(|w| match self.event.ct_state {
                Some(CtState::New | CtState::Established) => Some(w),
                Some(CtState::Reply) => Some(reply_of(&w)),
                _ => None,
            }),
        }
    }

    /// The numbers of flowscope's extension that are worked out rather than copied.
    pub fn extension_numbers(&self) -> ExtensionNumbers {
        let conn = self.connection();
        ExtensionNumbers {
            ct_id: conn.as_ref().map(|t| ct_id(&ct_key(t))).unwrap_or(0),
            conn,
            source_xlated_port: self
                .snat_at_uplink()
                .map_or(0, |_| u32::from(self.event.src_port)),
            // Where the kernel sent the connection: the reply tuple's source is the backend.
            destination_xlated: self.dnat.as_ref().map(|t| (t.reply.src, t.reply.sport)),
        }
    }

    /// flowscope's extension of this flow (what Hubble has no field for).
    pub fn extension(&self) -> FlowExtension {
        let ev = &self.event;
        let n = self.extension_numbers();
        FlowExtension {
            skb_hash: ev.hash,
            kernel_drop_reason: ev.drop_reason.unwrap_or(0),
            kernel_drop_reason_name: ev.drop_reason_name.clone().unwrap_or_default(),
            ct_id: n.ct_id,
            ct_tuple: n.conn.as_ref().map(pb_tuple),
            source_xlated_port: n.source_xlated_port,
            destination_xlated: n
                .destination_xlated
                .map(|(a, _)| a.to_string())
                .unwrap_or_default(),
            destination_xlated_port: n.destination_xlated.map_or(0, |(_, p)| u32::from(p)),
            ..FlowExtension::default()
        }
    }

    /// The Hubble flow this record stands for.
    #[expect(
        deprecated,
        reason = "Hubble's Summary and drop_reason are deprecated but clients still read them"
    )]
    pub fn to_flow(&self) -> Flow {
        let ev = &self.event;
        let hubble_reason = self.hubble_reason();
        let reply = self.is_reply();
        Flow {
            time: Some(Timestamp::from(ev.time)),
            uuid: self.uuid.to_string(),
            emitter: Some(Emitter {
                name: self.node.emitter_name.clone(),
                version: self.node.emitter_version.clone(),
            }),
            verdict: self.verdict() as i32,
            ethernet: Some(Ethernet {
                source: format_mac(&ev.src_mac),
                destination: format_mac(&ev.dst_mac),
            }),
            ip: self
                .addresses()
                .map(|(source, source_xlated, destination)| flow::Ip {
                    source: source.to_string(),
                    source_xlated: source_xlated.map(|a| a.to_string()).unwrap_or_default(),
                    destination: destination.to_string(),
                    ip_version: self.ip_version() as i32,
                    ..flow::Ip::default()
                }),
            l4: self.l4(),
            source: self.src.as_ref().map(endpoint_of),
            destination: self.dst.as_ref().map(endpoint_of),
            r#type: FlowType::L3L4 as i32,
            node_name: self.node.node_name.clone(),
            source_names: self
                .src_names
                .as_deref()
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
            destination_names: self
                .dst_names
                .as_deref()
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
            event_type: Some(self.event_type()),
            traffic_direction: self.direction() as i32,
            trace_observation_point: self.observation_point() as i32,
            trace_reason: self.trace_reason() as i32,
            is_reply: reply,
            reply: reply.unwrap_or(false),
            source_service: self.src_service.as_deref().map(service_of),
            destination_service: self.dst_service.as_deref().map(service_of),
            interface: self.interface().map(|(index, name)| NetworkInterface {
                index,
                name: name.to_owned(),
            }),
            summary: self.summary(),
            drop_reason: hubble_reason.map_or(0, |r| r as u32),
            drop_reason_desc: hubble_reason.map_or(0, |r| r as i32),
            extensions: Some(Any::from_msg(&self.extension())),
            ..Flow::default()
        }
    }
}

/// The fields GetFlows filters read, straight from the record: a filtered follower decides most
/// records without building their flow (`FlowFilterSet::decide`). Each is what `to_flow` puts
/// in the flow, through the same methods (held by `service::observer`'s test
/// `deciding_on_records_answers_what_the_built_flows_answer`).
impl flowscope_filter::FlowFields for FlowRecord {
    fn addresses(&self) -> Option<(IpAddr, Option<IpAddr>, IpAddr)> {
        FlowRecord::addresses(self)
    }

    fn ports(&self) -> Option<(u32, u32)> {
        self.l4().and_then(|l| l.ports())
    }

    fn verdict(&self) -> i32 {
        FlowRecord::verdict(self) as i32
    }

    fn source(&self) -> Option<flowscope_filter::EndpointFields<'_>> {
        self.src.as_ref().map(endpoint_fields)
    }

    fn destination(&self) -> Option<flowscope_filter::EndpointFields<'_>> {
        self.dst.as_ref().map(endpoint_fields)
    }
}

/// The filters' view of [`endpoint_of`]`(id)`.
fn endpoint_fields(id: &Identity) -> flowscope_filter::EndpointFields<'_> {
    let ep = id.endpoint.as_deref();
    flowscope_filter::EndpointFields {
        identity: id.identity,
        namespace: ep.map_or("", |e| &e.namespace),
        pod_name: ep.map_or("", |e| &e.pod_name),
        labels: &id.labels,
    }
}

/// See [`FlowRecord::extension_numbers`].
#[derive(Clone, Copy, Debug)]
pub struct ExtensionNumbers {
    /// The connection's original tuple ([`FlowRecord::connection`]).
    pub conn: Option<Tuple>,
    /// Its id, as `flowctl ct` shows it.
    pub ct_id: u64,
    /// The source port on the wire, when the flow shows the pod's port before SNAT.
    pub source_xlated_port: u32,
    /// The backend a Service's frontend was translated to (DNAT).
    pub destination_xlated: Option<(IpAddr, u16)>,
}

/// The event's tuple as conntrack writes it (ICMP echo: the identifier, no ports).
pub(crate) fn wire_tuple(ev: &Event) -> Option<Tuple> {
    let (src, dst) = (ev.src?, ev.dst?);
    let icmp = matches!(ev.proto, ipproto::ICMP | ipproto::ICMPV6);
    if icmp && !ev.is_icmp_echo() {
        return None;
    }
    Some(Tuple {
        src,
        dst,
        proto: ev.proto,
        sport: if icmp { 0 } else { ev.src_port },
        dport: if icmp { 0 } else { ev.dst_port },
        // The datapath puts the echo id in the source port of requests, the destination port
        // of replies.
        icmp_id: if icmp {
            ev.src_port.max(ev.dst_port)
        } else {
            0
        },
        icmp_type: ev.icmp_type,
    })
}

/// The reply-direction tuple of a connection whose original tuple is `t`.
pub(crate) fn reply_of(t: &Tuple) -> Tuple {
    let mut r = t.reversed();
    // An echo request's reply is an echo reply: conntrack's reply tuple carries that type.
    r.icmp_type = match (t.proto, t.icmp_type) {
        (ipproto::ICMP, 8) => 0,
        (ipproto::ICMP, 0) => 8,
        (ipproto::ICMPV6, 128) => 129,
        (ipproto::ICMPV6, 129) => 128,
        (_, ty) => ty,
    };
    r
}

/// Our BPF conntrack key for a connection's original tuple (for `ct_id`).
fn ct_key(t: &Tuple) -> CtKey {
    if matches!(t.proto, ipproto::ICMP | ipproto::ICMPV6) {
        CtKey::new(t.proto, t.src, t.icmp_id, t.dst, 0)
    } else {
        CtKey::new(t.proto, t.src, t.sport, t.dst, t.dport)
    }
}

fn pb_tuple(t: &Tuple) -> PbTuple {
    PbTuple {
        source_ip: t.src.to_string(),
        destination_ip: t.dst.to_string(),
        source_port: t.sport as u32,
        destination_port: t.dport as u32,
        icmp_id: t.icmp_id as u32,
    }
}

/// Whether the event's protocol has ports (TCP, UDP, SCTP): the only ones Services name.
pub fn has_ports(ev: &Event) -> bool {
    ev.has_l4 && matches!(ev.proto, ipproto::TCP | ipproto::UDP | ipproto::SCTP)
}

fn service_of(s: &ServiceName) -> flow::Service {
    flow::Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
    }
}

/// `flow.Endpoint` of an identity.
pub fn endpoint_of(id: &Identity) -> flow::Endpoint {
    let mut e = flow::Endpoint {
        identity: id.identity,
        labels: id.labels.to_vec(),
        ..flow::Endpoint::default()
    };
    if let Some(ep) = &id.endpoint {
        e.id = ep.id;
        e.namespace = ep.namespace.clone();
        e.pod_name = ep.pod_name.clone();
        e.workloads = ep
            .workloads
            .iter()
            .map(|w| flow::Workload {
                name: w.name.clone(),
                kind: w.kind.clone(),
            })
            .collect();
    }
    e
}

/// gopacket's names for ICMPv4 types and codes, which Hubble prints.
pub fn write_icmpv4_name(out: &mut String, t: u8, c: u8) {
    const UNREACH: [&str; 6] = [
        "Net",
        "Host",
        "Protocol",
        "Port",
        "FragmentationNeeded",
        "SourceRoutingFailed",
    ];
    let name = match t {
        0 => "EchoReply",
        3 => {
            let _ = match UNREACH.get(c as usize) {
                Some(n) => write!(out, "DestinationUnreachable({n})"),
                None => write!(out, "DestinationUnreachable({c})"),
            };
            return;
        }
        4 => "SourceQuench",
        5 => "Redirect",
        8 => "EchoRequest",
        11 if c == 0 => "TimeExceeded(TTLExceeded)",
        11 => "TimeExceeded(FragmentReassemblyTimeExceeded)",
        12 => "ParameterProblem",
        13 => "TimestampRequest",
        14 => "TimestampReply",
        _ => {
            let _ = write!(out, "{t}({c})");
            return;
        }
    };
    out.push_str(name);
}

/// gopacket's names for ICMPv6 types, which Hubble prints.
pub fn write_icmpv6_name(out: &mut String, t: u8, c: u8) {
    let name = match t {
        1 => {
            let _ = write!(out, "DestinationUnreachable({c})");
            return;
        }
        2 => "PacketTooBig",
        3 => "TimeExceeded",
        4 => "ParameterProblem",
        128 => "EchoRequest",
        129 => "EchoReply",
        133 => "RouterSolicitation",
        134 => "RouterAdvertisement",
        135 => "NeighborSolicitation",
        136 => "NeighborAdvertisement",
        143 => "MLDv2MulticastListenerReport",
        _ => {
            let _ = write!(out, "{t}({c})");
            return;
        }
    };
    out.push_str(name);
}

/// Records for tests: hand-made and random ones.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use monitor_common::{
        FlowEvent, ct_state, event_flags, event_type, family, obs, proto as ipproto,
    };

    use super::{FlowRecord, NodeFacts};
    use crate::{
        decode::event::Event,
        endpoints::{Endpoint, Identity, Workload, reserved},
        kernel::facts::Clock,
    };

    pub fn pod(ns: &str, name: &str, extra_labels: usize) -> Identity {
        let mut pairs: Vec<(String, String)> = vec![("app".into(), "web".into())];
        for i in 0..extra_labels {
            pairs.push((
                format!("label-{i}"),
                format!("a-rather-long-label-value-{i}"),
            ));
        }
        let mut e = Endpoint::pod(ns, name, pairs);
        e.id = 3171;
        e.workloads = vec![Workload {
            name: "web".into(),
            kind: "Deployment".into(),
        }];
        Identity {
            identity: e.identity,
            labels: e.labels.clone().into(),
            endpoint: Some(Arc::new(e)),
        }
    }

    pub fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut r = [0; 16];
        r[..4].copy_from_slice(&a);
        r
    }

    pub fn v6(last: u8) -> [u8; 16] {
        let mut r = [0; 16];
        r[0] = 0xfd;
        r[15] = last;
        r
    }

    pub fn record(raw: &FlowEvent, reason: Option<&str>) -> FlowRecord {
        let reason = reason.map(str::to_owned);
        FlowRecord {
            event: Event::decode(raw, &Clock::now(), |_| reason.clone()),
            ifname: Some(Arc::from("eth0")),
            src: Some(pod("default", "web-5d4f8c7b9-x2x4z", 1)),
            dst: Some(Identity::reserved(reserved::WORLD)),
            xlat: None,
            dnat: None,
            src_service: None,
            dst_service: None,
            src_names: None,
            dst_names: None,
            uuid: uuid::Uuid::new_v4(),
            node: Arc::new(NodeFacts::new("node-1".into())),
        }
    }

    pub fn base(point: u8, state: u8, proto: u8) -> FlowEvent {
        FlowEvent {
            ts_ns: 1_234_567,
            event_type: event_type::TRACE,
            obs_point: point,
            ct_state: state,
            family: family::V4,
            l4_proto: proto,
            flags: event_flags::HAS_L4,
            src_port: 59_242,
            dst_port: 80,
            ifindex: 3,
            hash: 0x8958_dbda,
            src_addr: v4([10, 244, 0, 213]),
            dst_addr: v4([1, 0, 0, 1]),
            src_mac: [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0xd5],
            dst_mac: [0xee, 0xff, 0, 1, 2, 3],
            ..FlowEvent::default()
        }
    }

    /// `n` records of random events (every field drawn, a fixed seed) between random endpoints.
    pub fn random_records(n: usize) -> impl Iterator<Item = FlowRecord> {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let points = [
            obs::TO_ENDPOINT,
            obs::TO_HOST,
            obs::TO_STACK,
            obs::FROM_ENDPOINT,
            obs::FROM_HOST,
            obs::FROM_NETWORK,
            obs::TO_NETWORK,
            200,
        ];
        let protos = [
            ipproto::TCP,
            ipproto::UDP,
            ipproto::ICMP,
            ipproto::ICMPV6,
            ipproto::SCTP,
            47,
        ];
        let idents = [
            None,
            Some(Identity::reserved(reserved::WORLD)),
            Some(Identity::reserved(reserved::HOST)),
            Some(pod("ns", "p", 0)),
            Some(pod("kube-system", "coredns-abc", 9)),
        ];
        (0..n).map(move |_| {
            let r = next();
            let mut raw = base(
                points[(r % 8) as usize],
                [
                    ct_state::NEW,
                    ct_state::ESTABLISHED,
                    ct_state::REPLY,
                    ct_state::RELATED,
                    ct_state::UNKNOWN,
                ][((r >> 3) % 5) as usize],
                protos[((r >> 6) % 6) as usize],
            );
            raw.event_type = if (r >> 9) % 5 == 0 {
                event_type::DROP
            } else {
                event_type::TRACE
            };
            raw.family = if (r >> 12) % 3 == 0 {
                family::V6
            } else {
                family::V4
            };
            let a = next();
            raw.src_addr = a.to_le_bytes().repeat(2).try_into().unwrap();
            raw.dst_addr = next().to_be_bytes().repeat(2).try_into().unwrap();
            let b = next();
            raw.src_port = b as u16;
            raw.dst_port = (b >> 16) as u16;
            raw.tcp_flags = (b >> 32) as u8;
            raw.flags = (b >> 40) as u8;
            raw.icmp_type = (b >> 48) as u8;
            raw.icmp_code = (b >> 56) as u8 % 12;
            raw.ifindex = (r >> 15) as u32 % 3;
            raw.hash = (r >> 20) as u32;
            raw.drop_reason = (r >> 40) as u32 % 4;
            raw.src_mac = a.to_le_bytes()[..6].try_into().unwrap();
            let reason = match (r >> 50) % 3 {
                0 => None,
                1 => Some("NO_SOCKET"),
                _ => Some("OTHERHOST"),
            };
            let mut rec = record(&raw, reason);
            rec.src = idents[((r >> 24) % 5) as usize].clone();
            rec.dst = idents[((r >> 28) % 5) as usize].clone();
            rec
        })
    }
}

#[cfg(test)]
mod tests {
    use super::FlowRecord;

    /// The history holds one record per stored flow (benchmark 6 measures ~390 bytes each with
    /// the allocation and the history's slot): what is rare (NAT, DNAT, names, services) is a
    /// shared handle, not inline. With its two translations inline it was 512 bytes.
    #[test]
    fn a_record_stays_small() {
        let size = std::mem::size_of::<FlowRecord>();
        assert!(size <= 320, "a FlowRecord is {size} bytes");
    }
}
