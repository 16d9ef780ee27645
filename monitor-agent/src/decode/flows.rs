//! Turning decoded kernel events into Hubble flows (`flow.Flow`).
//!
//! Field by field as Hubble fills them (`docs/hubble-wire.md`), with identities and pod metadata
//! from the endpoint [`Registry`]. A drop carries the Hubble `DropReason` that means what the
//! kernel's reason means (`flowscope_proto::drop_reason`, `docs/drop-reasons.md`). Facts Hubble
//! has no field for (the skb hash that joins hops, the kernel's drop reason by name) go into
//! `Flow.extensions` as a
//! `flowscope.v1.FlowExtension`; the service strips them for clients that did not ask, since a
//! stock Hubble client cannot print an `Any` of a type it does not know.

use std::{net::IpAddr, sync::Arc};

use flowscope_proto::{
    drop_reason,
    flow::{
        self, CiliumEventType, Emitter, Ethernet, Flow, FlowType, IpVersion, Layer4,
        NetworkInterface, TcpFlags, TraceObservationPoint, TraceReason, TrafficDirection, Verdict,
    },
    flowscope::v1::{FlowExtension, Tuple as PbTuple},
    wkt::{Any, Timestamp},
};
use monitor_common::{CtKey, event_type, proto as ipproto};

use crate::{
    decode::{
        event::{CtState, Event, Kind, ObsPoint, format_mac},
        nat::{NatCache, Translation, Tuple},
    },
    endpoints::{Identity, Registry, ServiceIndex, reserved},
    service::inspector::ct_id,
};

/// Builds flows for one node.
pub struct FlowBuilder {
    node_name: String,
    emitter: Emitter,
    registry: Registry,
    /// The kernel's NAT table, to join uplink flows to the pod behind the node's address.
    nat: Option<Arc<NatCache>>,
}

impl FlowBuilder {
    /// A builder for flows of `node_name`.
    pub fn new(node_name: String, registry: Registry) -> Self {
        FlowBuilder {
            node_name,
            emitter: Emitter {
                name: "flowscope".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            registry,
            nat: None,
        }
    }

    /// Joins uplink flows to the kernel's NAT translations (see [`crate::nat`]).
    pub fn with_nat(mut self, nat: Arc<NatCache>) -> Self {
        self.nat = Some(nat);
        self
    }

    /// For a flow on the uplink to or from one of the node's own addresses, the kernel's
    /// translation of its connection, if the kernel translated it.
    fn translation(
        &self,
        ev: &Event,
        src: &Option<Identity>,
        dst: &Option<Identity>,
    ) -> Option<Translation> {
        let nat = self.nat.as_ref()?;
        let is_host =
            |id: &Option<Identity>| id.as_ref().is_some_and(|i| i.identity == reserved::HOST);
        let wire = wire_tuple(ev)?;
        match ev.point {
            // Leaving the node: the wire tuple is the reply tuple reversed.
            ObsPoint::ToNetwork if is_host(src) => nat.lookup_reply(&reply_of(&wire)),
            // Arriving for the node's address: the wire tuple is the reply tuple.
            ObsPoint::FromNetwork if is_host(dst) => nat.lookup_reply(&wire),
            _ => None,
        }
    }

    /// For a flow to or from a Service's frontend or backend (see
    /// [`crate::endpoints::services`]), the kernel's DNAT of its connection, if the kernel
    /// translated it. Flows of no Service cost nothing: the index is empty or has no entry.
    fn dnat(&self, services: &ServiceIndex, ev: &Event) -> Option<Translation> {
        let nat = self.nat.as_ref()?;
        if services.is_empty() || !has_ports(ev) {
            return None;
        }
        let wire = wire_tuple(ev)?;
        let t = if services.frontend(wire.dst, wire.dport).is_some() {
            // The client's request to the ClusterIP, before DNAT: the original tuple.
            nat.lookup_orig(&wire)
        } else if services.frontend(wire.src, wire.sport).is_some() {
            // The reply to the client, after the reverse translation: the original reversed.
            nat.lookup_orig(&reply_of(&wire))
        } else if services.is_backend(wire.dst, wire.dport) {
            // The request reaching the backend, after DNAT: the reply tuple reversed.
            nat.lookup_reply(&reply_of(&wire))
        } else if services.is_backend(wire.src, wire.sport) {
            // The backend's reply, before the reverse translation: the reply tuple.
            nat.lookup_reply(&wire)
        } else {
            None
        };
        t.filter(|t| t.dnat)
    }

    /// The node name put into every flow.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The flow for one event. `ifname` is the name of `ev.ifindex`, when known.
    #[expect(
        deprecated,
        reason = "Hubble's Summary and drop_reason are deprecated but clients still read them"
    )]
    pub fn build(&self, ev: &Event, ifname: Option<&str>) -> Flow {
        let snap = self.registry.snapshot();
        let mut src = ev.src.map(|ip| snap.lookup(ip));
        let mut dst = ev.dst.map(|ip| snap.lookup(ip));
        let xlat = self.translation(ev, &src, &dst).filter(|t| t.snat);
        // A connection to a Service's frontend, translated to a backend: on both sides of the
        // translation, the hops carry the connection's original tuple and the backend.
        let dnat = match &xlat {
            Some(t) if t.dnat => Some(*t),
            Some(_) => None,
            None => self.dnat(snap.services(), ev),
        };
        // A masqueraded connection: the node's address stands for the pod behind it.
        if let Some(t) = &xlat {
            match ev.point {
                ObsPoint::ToNetwork => src = Some(snap.lookup(t.orig.src)),
                ObsPoint::FromNetwork => dst = Some(snap.lookup(t.orig.src)),
                _ => {}
            }
        }
        let is_drop = ev.kind == Kind::Drop;
        // Hubble's words for the kernel's reason; Cilium puts the same code in drop_reason,
        // drop_reason_desc and the event sub type, which `hubble observe` prints.
        let hubble_reason =
            is_drop.then(|| drop_reason::hubble_drop_reason(ev.drop_reason_name.as_deref()));
        let reply = match ev.ct_state {
            Some(CtState::Reply) => Some(true),
            Some(CtState::New | CtState::Established | CtState::Related) => Some(false),
            None => None,
        };
        let mut f = Flow {
            time: Some(Timestamp::from(ev.time)),
            uuid: uuid::Uuid::new_v4().to_string(),
            emitter: Some(self.emitter.clone()),
            verdict: if is_drop {
                Verdict::Dropped
            } else {
                Verdict::Forwarded
            } as i32,
            ethernet: Some(Ethernet {
                source: format_mac(&ev.src_mac),
                destination: format_mac(&ev.dst_mac),
            }),
            ip: ip_of(ev),
            l4: l4_of(ev),
            source: src.as_ref().map(endpoint_of),
            destination: dst.as_ref().map(endpoint_of),
            r#type: FlowType::L3L4 as i32,
            node_name: self.node_name.clone(),
            event_type: Some(CiliumEventType {
                r#type: if is_drop {
                    event_type::DROP
                } else {
                    event_type::TRACE
                } as i32,
                sub_type: match hubble_reason {
                    Some(r) => drop_reason::drop_sub_type(r),
                    None => ev.point.raw() as i32,
                },
            }),
            traffic_direction: direction(ev) as i32,
            trace_observation_point: if is_drop {
                TraceObservationPoint::UnknownPoint as i32
            } else {
                TraceObservationPoint::from_datapath(ev.point.raw()) as i32
            },
            trace_reason: match ev.ct_state {
                Some(CtState::New) => TraceReason::New,
                Some(CtState::Established) => TraceReason::Established,
                Some(CtState::Reply) => TraceReason::Reply,
                Some(CtState::Related) => TraceReason::Related,
                None => TraceReason::Unknown,
            } as i32,
            is_reply: reply,
            reply: reply.unwrap_or(false),
            // No interface for a to-stack trace (index 0), as Hubble leaves it on Cilium's.
            interface: (ev.ifindex != 0).then(|| NetworkInterface {
                index: ev.ifindex,
                name: ifname.unwrap_or_default().to_owned(),
            }),
            summary: summary(ev),
            drop_reason: hubble_reason.map_or(0, |r| r as u32),
            drop_reason_desc: hubble_reason.map_or(0, |r| r as i32),
            ..Flow::default()
        };
        // The connection's tuple in its original direction, on the pod's side of any NAT: every
        // hop of the connection carries the same one, so clients can put the hops together.
        let conn = match xlat.as_ref().or(dnat.as_ref()) {
            Some(t) => Some(t.orig),
            None => wire_tuple(ev).and_then(|w| match ev.ct_state {
                Some(CtState::New | CtState::Established) => Some(w),
                Some(CtState::Reply) => Some(reply_of(&w)),
                _ => None,
            }),
        };
        let mut ext = FlowExtension {
            skb_hash: ev.hash,
            kernel_drop_reason: ev.drop_reason.unwrap_or(0),
            kernel_drop_reason_name: ev.drop_reason_name.clone().unwrap_or_default(),
            ct_id: conn.as_ref().map(|t| ct_id(&ct_key(t))).unwrap_or(0),
            ct_tuple: conn.as_ref().map(pb_tuple),
            ..FlowExtension::default()
        };
        if let (Some(t), ObsPoint::ToNetwork) = (&xlat, ev.point)
            && let Some(ip) = f.ip.as_mut()
        {
            // Hubble's convention: `source` is the address before translation, `source_xlated`
            // the one on the wire.
            ip.source_xlated = ip.source.clone();
            ip.source = t.orig.src.to_string();
            ext.source_xlated_port = ev.src_port as u32;
            if let Some(l4) = f.l4.as_mut() {
                set_source_port(l4, t.orig.sport);
            }
        }
        if let Some(t) = &dnat {
            // Where the kernel sent the connection: the reply tuple's source is the backend.
            ext.destination_xlated = t.reply.src.to_string();
            ext.destination_xlated_port = t.reply.sport as u32;
        }
        // Hubble's service getter: each end's address and port, looked up among frontends.
        if has_ports(ev)
            && let Some(ip) = f.ip.as_ref()
        {
            let (sport, dport) = l4_ports(f.l4.as_ref());
            let service_of = |addr: &str, port: u16| {
                let ip = addr.parse().ok()?;
                let name = snap.services().frontend(ip, port)?;
                Some(flow::Service {
                    name: name.name.clone(),
                    namespace: name.namespace.clone(),
                })
            };
            f.source_service = service_of(&ip.source, sport);
            f.destination_service = service_of(&ip.destination, dport);
        }
        f.extensions = Some(Any::from_msg(&ext));
        f
    }
}

/// Whether the event's protocol has ports (TCP, UDP, SCTP): the only ones Services name.
fn has_ports(ev: &Event) -> bool {
    ev.has_l4 && matches!(ev.proto, ipproto::TCP | ipproto::UDP | ipproto::SCTP)
}

/// The source and destination ports of a flow's L4 header (0 without).
fn l4_ports(l4: Option<&Layer4>) -> (u16, u16) {
    use flowscope_proto::flow::layer4::Protocol;
    match l4.and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => (t.source_port as u16, t.destination_port as u16),
        Some(Protocol::Udp(u)) => (u.source_port as u16, u.destination_port as u16),
        Some(Protocol::Sctp(s)) => (s.source_port as u16, s.destination_port as u16),
        _ => (0, 0),
    }
}

/// The event's tuple as conntrack writes it (ICMP echo: the identifier, no ports).
fn wire_tuple(ev: &Event) -> Option<Tuple> {
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
fn reply_of(t: &Tuple) -> Tuple {
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

fn set_source_port(l4: &mut Layer4, port: u16) {
    use flowscope_proto::flow::layer4::Protocol;
    match l4.protocol.as_mut() {
        Some(Protocol::Tcp(t)) => t.source_port = port as u32,
        Some(Protocol::Udp(u)) => u.source_port = port as u32,
        Some(Protocol::Sctp(s)) => s.source_port = port as u32,
        _ => {}
    }
}

fn endpoint_of(id: &Identity) -> flow::Endpoint {
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

fn ip_of(ev: &Event) -> Option<flow::Ip> {
    let (src, dst) = (ev.src?, ev.dst?);
    Some(flow::Ip {
        source: src.to_string(),
        destination: dst.to_string(),
        ip_version: match src {
            IpAddr::V4(_) => IpVersion::IPv4,
            IpAddr::V6(_) => IpVersion::IPv6,
        } as i32,
        ..flow::Ip::default()
    })
}

fn l4_of(ev: &Event) -> Option<Layer4> {
    if !ev.has_l4 {
        return None;
    }
    Some(match ev.proto {
        ipproto::TCP => Layer4::tcp(
            ev.src_port,
            ev.dst_port,
            TcpFlags::from_header(ev.tcp_flags, ev.tcp_ns),
        ),
        ipproto::UDP => Layer4::udp(ev.src_port, ev.dst_port),
        ipproto::SCTP => Layer4::sctp(ev.src_port, ev.dst_port),
        ipproto::ICMP => Layer4::icmpv4(ev.icmp_type, ev.icmp_code),
        ipproto::ICMPV6 => Layer4::icmpv6(ev.icmp_type, ev.icmp_code),
        _ => return None,
    })
}

/// Direction of the connection from the local endpoint's point of view (as Hubble reports it):
/// a pod's own connection is EGRESS, including its replies; a connection to the pod is INGRESS.
fn direction(ev: &Event) -> TrafficDirection {
    let reply = match ev.ct_state {
        None => return TrafficDirection::Unknown,
        Some(CtState::Reply | CtState::Related) => true,
        Some(_) => false,
    };
    let outward = match ev.point {
        ObsPoint::FromEndpoint | ObsPoint::ToStack | ObsPoint::ToNetwork | ObsPoint::FromHost => {
            true
        }
        ObsPoint::ToEndpoint | ObsPoint::FromNetwork | ObsPoint::ToHost => false,
        ObsPoint::Unknown => return TrafficDirection::Unknown,
    };
    if outward != reply {
        TrafficDirection::Egress
    } else {
        TrafficDirection::Ingress
    }
}

/// Hubble's summary line: `TCP Flags: SYN, ACK`, `UDP`, `ICMPv4 EchoRequest`, …
fn summary(ev: &Event) -> String {
    if !ev.has_l4 {
        return match ev.src {
            Some(IpAddr::V4(_)) => "IPv4".into(),
            Some(IpAddr::V6(_)) => "IPv6".into(),
            None => "non-IP".into(),
        };
    }
    match ev.proto {
        ipproto::TCP => TcpFlags::from_header(ev.tcp_flags, ev.tcp_ns).summary(),
        ipproto::UDP => "UDP".into(),
        ipproto::SCTP => "SCTP".into(),
        ipproto::ICMP => format!("ICMPv4 {}", icmpv4_name(ev.icmp_type, ev.icmp_code)),
        ipproto::ICMPV6 => format!("ICMPv6 {}", icmpv6_name(ev.icmp_type, ev.icmp_code)),
        p => format!("IP protocol {p}"),
    }
}

/// gopacket's names for ICMPv4 types and codes, which Hubble prints.
fn icmpv4_name(t: u8, c: u8) -> String {
    let unreach = [
        "Net",
        "Host",
        "Protocol",
        "Port",
        "FragmentationNeeded",
        "SourceRoutingFailed",
    ];
    match t {
        0 => "EchoReply".into(),
        3 => match unreach.get(c as usize) {
            Some(n) => format!("DestinationUnreachable({n})"),
            None => format!("DestinationUnreachable({c})"),
        },
        4 => "SourceQuench".into(),
        5 => "Redirect".into(),
        8 => "EchoRequest".into(),
        11 => {
            if c == 0 {
                "TimeExceeded(TTLExceeded)".into()
            } else {
                "TimeExceeded(FragmentReassemblyTimeExceeded)".into()
            }
        }
        12 => "ParameterProblem".into(),
        13 => "TimestampRequest".into(),
        14 => "TimestampReply".into(),
        _ => format!("{t}({c})"),
    }
}

fn icmpv6_name(t: u8, c: u8) -> String {
    match t {
        1 => format!("DestinationUnreachable({c})"),
        2 => "PacketTooBig".into(),
        3 => "TimeExceeded".into(),
        4 => "ParameterProblem".into(),
        128 => "EchoRequest".into(),
        129 => "EchoReply".into(),
        133 => "RouterSolicitation".into(),
        134 => "RouterAdvertisement".into(),
        135 => "NeighborSolicitation".into(),
        136 => "NeighborAdvertisement".into(),
        143 => "MLDv2MulticastListenerReport".into(),
        _ => format!("{t}({c})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::facts::Clock;
    use flowscope_proto::flow::DropReason;
    use monitor_common::{FlowEvent, ct_state, event_flags, family, obs, tcp};

    fn raw(
        point: u8,
        state: u8,
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        flags: u8,
    ) -> FlowEvent {
        let mut ev = FlowEvent {
            ts_ns: 1_000,
            event_type: event_type::TRACE,
            obs_point: point,
            ct_state: state,
            family: family::V4,
            l4_proto: ipproto::TCP,
            tcp_flags: flags,
            flags: event_flags::HAS_L4,
            src_port: sport,
            dst_port: dport,
            ifindex: 3,
            hash: 0x8958_dbda,
            ..FlowEvent::default()
        };
        ev.src_addr[..4].copy_from_slice(&src);
        ev.dst_addr[..4].copy_from_slice(&dst);
        ev
    }

    fn builder() -> FlowBuilder {
        FlowBuilder::new(
            "node".into(),
            Registry::new(vec!["198.51.100.10".parse().unwrap()], vec![]),
        )
    }

    #[test]
    #[expect(deprecated, reason = "checks Summary")]
    fn syn_at_the_uplink() {
        let ev = Event::decode(
            &raw(
                obs::TO_NETWORK,
                ct_state::NEW,
                [198, 51, 100, 10],
                [1, 0, 0, 1],
                59242,
                80,
                tcp::SYN,
            ),
            &Clock::now(),
            |_| None,
        );
        let f = builder().build(&ev, Some("eth0"));
        assert_eq!(f.verdict, Verdict::Forwarded as i32);
        assert_eq!(
            f.trace_observation_point,
            TraceObservationPoint::ToNetwork as i32
        );
        assert_eq!(f.trace_reason, TraceReason::New as i32);
        assert_eq!(f.is_reply, Some(false));
        assert_eq!(f.traffic_direction, TrafficDirection::Egress as i32);
        assert_eq!(f.summary, "TCP Flags: SYN");
        assert_eq!(
            f.event_type,
            Some(CiliumEventType {
                r#type: 4,
                sub_type: 11
            })
        );
        assert_eq!(f.interface.as_ref().unwrap().name, "eth0");
        let ip = f.ip.as_ref().unwrap();
        assert_eq!(
            (ip.source.as_str(), ip.destination.as_str()),
            ("198.51.100.10", "1.0.0.1")
        );
        assert_eq!(
            f.source.as_ref().unwrap().identity,
            1,
            "the node's own address is host"
        );
        assert_eq!(
            f.destination.as_ref().unwrap().identity,
            2,
            "1.0.0.1 is world"
        );
        assert_eq!(
            f.destination.as_ref().unwrap().labels,
            vec!["reserved:world".to_string()]
        );
        let ext: FlowExtension = f.extensions.as_ref().unwrap().to_msg().unwrap().unwrap();
        assert_eq!(ext.skb_hash, 0x8958_dbda);
    }

    #[test]
    fn reply_to_the_pod_is_egress_and_reply() {
        let ev = Event::decode(
            &raw(
                obs::TO_ENDPOINT,
                ct_state::REPLY,
                [1, 0, 0, 1],
                [10, 244, 0, 213],
                80,
                59242,
                tcp::SYN | tcp::ACK,
            ),
            &Clock::now(),
            |_| None,
        );
        let f = builder().build(&ev, Some("lxc1"));
        assert_eq!(
            f.trace_observation_point,
            TraceObservationPoint::ToEndpoint as i32
        );
        assert_eq!(f.is_reply, Some(true));
        assert_eq!(f.trace_reason, TraceReason::Reply as i32);
        assert_eq!(
            f.traffic_direction,
            TrafficDirection::Egress as i32,
            "reply of the pod's own connection"
        );
        assert_eq!(
            f.event_type.unwrap().sub_type,
            0,
            "TO_ENDPOINT is 0 in the datapath numbering"
        );
    }

    /// A drop of kernel reason `number`, which BTF names `name`.
    fn drop_flow(number: u32, name: Option<&str>) -> Flow {
        let mut r = raw(
            obs::UNKNOWN,
            ct_state::UNKNOWN,
            [10, 244, 0, 213],
            [1, 0, 0, 1],
            4000,
            9,
            0,
        );
        r.event_type = event_type::DROP;
        r.l4_proto = ipproto::UDP;
        r.drop_reason = number;
        let ev = Event::decode(&r, &Clock::now(), |_| name.map(String::from));
        builder().build(&ev, None)
    }

    #[test]
    #[expect(deprecated, reason = "checks Hubble's drop_reason")]
    fn drops_carry_the_kernel_reason() {
        let f = drop_flow(12, Some("NETFILTER_DROP"));
        assert_eq!(f.verdict, Verdict::Dropped as i32);
        assert_eq!(f.is_reply, None);
        let ext: FlowExtension = f.extensions.as_ref().unwrap().to_msg().unwrap().unwrap();
        assert_eq!(ext.kernel_drop_reason_name, "NETFILTER_DROP");
        assert_eq!(ext.kernel_drop_reason, 12);
        // No Hubble reason means "dropped by netfilter": Hubble's fields say unknown, and the
        // sub type is not 0 (which Hubble's printer shows as `Success`), nor the kernel's number
        // (which it would read as one of Cilium's codes).
        assert_eq!(f.drop_reason_desc, DropReason::Unknown as i32);
        assert_eq!(f.drop_reason, 0);
        assert_eq!(
            f.event_type,
            Some(CiliumEventType {
                r#type: 1,
                sub_type: drop_reason::UNMAPPED_DROP_SUB_TYPE
            })
        );
    }

    #[test]
    #[expect(deprecated, reason = "checks Hubble's drop_reason")]
    fn drops_with_a_hubble_equivalent_say_it_in_every_hubble_field() {
        // The number is this kernel's business: the name decides.
        let f = drop_flow(3, Some("NO_SOCKET"));
        assert_eq!(f.drop_reason_desc, DropReason::SocketLookupFailed as i32);
        assert_eq!(f.drop_reason, 178);
        assert_eq!(f.event_type.unwrap().sub_type, 178);
        let ext: FlowExtension = f.extensions.as_ref().unwrap().to_msg().unwrap().unwrap();
        assert_eq!(
            (ext.kernel_drop_reason, ext.kernel_drop_reason_name.as_str()),
            (3, "NO_SOCKET")
        );
        // A kernel without reason names (before 5.17): unknown, not a number read as Cilium's.
        let f = drop_flow(3, None);
        assert_eq!(f.drop_reason_desc, DropReason::Unknown as i32);
        assert_eq!(f.drop_reason, 0);
    }

    #[test]
    fn services_are_named_by_frontend_as_hubble_does() {
        use crate::endpoints::{Service, ServiceAddr, ServiceName, source};
        let b = builder();
        let addr = |ip: &str, port| ServiceAddr {
            ip: ip.parse().unwrap(),
            port,
            proto: ipproto::TCP,
        };
        b.registry.replace_services(
            source::FILE,
            vec![Service {
                name: ServiceName {
                    namespace: "default".into(),
                    name: "web".into(),
                },
                frontends: vec![addr("10.96.0.10", 80)],
                backends: vec![addr("10.244.0.77", 8080)],
            }],
        );
        let build = |point, state, src, dst, sport, dport| {
            let ev = Event::decode(
                &raw(point, state, src, dst, sport, dport, tcp::SYN),
                &Clock::now(),
                |_| None,
            );
            b.build(&ev, Some("lxc1"))
        };
        let web = Some(flow::Service {
            name: "web".into(),
            namespace: "default".into(),
        });
        // The client's request to the ClusterIP: destination_service.
        let f = build(
            obs::FROM_ENDPOINT,
            ct_state::NEW,
            [10, 244, 0, 213],
            [10, 96, 0, 10],
            41000,
            80,
        );
        assert_eq!(f.destination_service, web);
        assert_eq!(f.source_service, None);
        // The reply from it: source_service.
        let f = build(
            obs::TO_ENDPOINT,
            ct_state::REPLY,
            [10, 96, 0, 10],
            [10, 244, 0, 213],
            80,
            41000,
        );
        assert_eq!(f.source_service, web);
        // Another port of the ClusterIP, and the backend itself: no service.
        let f = build(
            obs::FROM_ENDPOINT,
            ct_state::NEW,
            [10, 244, 0, 213],
            [10, 96, 0, 10],
            41000,
            81,
        );
        assert_eq!(f.destination_service, None);
        let f = build(
            obs::TO_ENDPOINT,
            ct_state::NEW,
            [10, 244, 0, 213],
            [10, 244, 0, 77],
            41000,
            8080,
        );
        assert_eq!(f.destination_service, None);
        // ICMP has no port: an echo whose identifier equals the Service's port names nothing.
        let mut echo = raw(
            obs::FROM_ENDPOINT,
            ct_state::NEW,
            [10, 244, 0, 213],
            [10, 96, 0, 10],
            80,
            0,
            0,
        );
        echo.l4_proto = ipproto::ICMP;
        echo.icmp_type = 8;
        let ev = Event::decode(&echo, &Clock::now(), |_| None);
        assert_eq!(b.build(&ev, Some("lxc1")).destination_service, None);
        // Without the NAT join (no conntrack here) nothing claims a translation.
        let ext: FlowExtension = f.extensions.as_ref().unwrap().to_msg().unwrap().unwrap();
        assert!(ext.destination_xlated.is_empty());
    }

    #[test]
    fn icmp_summaries() {
        assert_eq!(icmpv4_name(8, 0), "EchoRequest");
        assert_eq!(icmpv4_name(3, 3), "DestinationUnreachable(Port)");
        assert_eq!(icmpv6_name(129, 0), "EchoReply");
    }
}
