//! Turning decoded kernel events into Hubble flows (`flow.Flow`).
//!
//! Field by field as Hubble fills them (`docs/hubble-wire.md`), with identities and pod metadata
//! from the endpoint [`Registry`]. A drop carries the Hubble `DropReason` that means what the
//! kernel's reason means (`flowscope_proto::drop_reason`, `docs/drop-reasons.md`). Facts Hubble
//! has no field for (the skb hash that joins hops, the kernel's drop reason by name) go into
//! `Flow.extensions` as a
//! `flowscope.v1.FlowExtension`; the service strips them for clients that did not ask, since a
//! stock Hubble client cannot print an `Any` of a type it does not know.

use std::sync::Arc;

use flowscope_proto::flow::Flow;

use crate::{
    decode::{
        event::{Event, ObsPoint},
        nat::{NatCache, Translation},
        record::{FlowRecord, NodeFacts, has_ports, reply_of, wire_tuple},
    },
    endpoints::{Identity, Registry, ServiceIndex, reserved},
};

/// Builds flow records (and, where asked, flows) for one node.
pub struct FlowBuilder {
    node: Arc<NodeFacts>,
    registry: Registry,
    /// The kernel's NAT table, to join uplink flows to the pod behind the node's address.
    nat: Option<Arc<NatCache>>,
}

impl FlowBuilder {
    /// A builder for flows of `node_name`.
    pub fn new(node_name: String, registry: Registry) -> Self {
        FlowBuilder {
            node: Arc::new(NodeFacts::new(node_name)),
            registry,
            nat: None,
        }
    }

    /// Joins uplink flows to the kernel's NAT translations (see [`crate::decode::nat`]).
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
    ) -> Option<Arc<Translation>> {
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
    fn dnat(&self, services: &ServiceIndex, ev: &Event) -> Option<Arc<Translation>> {
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
        &self.node.node_name
    }

    /// The record of one event: the event with its endpoints and NAT join. `ifname` is the name
    /// of `ev.ifindex`, when known.
    pub fn record(&self, ev: Event, ifname: Option<Arc<str>>) -> FlowRecord {
        let snap = self.registry.snapshot();
        let mut src = ev.src.map(|ip| snap.lookup(ip));
        let mut dst = ev.dst.map(|ip| snap.lookup(ip));
        let xlat = self.translation(&ev, &src, &dst).filter(|t| t.snat);
        // A connection to a Service's frontend, translated to a backend: on both sides of the
        // translation, the hops carry the connection's original tuple and the backend.
        let dnat = match &xlat {
            Some(t) if t.dnat => Some(t.clone()),
            Some(_) => None,
            None => self.dnat(snap.services(), &ev),
        };
        // A masqueraded connection: the node's address stands for the pod behind it.
        if let Some(t) = &xlat {
            match ev.point {
                ObsPoint::ToNetwork => src = Some(snap.lookup(t.orig.src)),
                ObsPoint::FromNetwork => dst = Some(snap.lookup(t.orig.src)),
                _ => {}
            }
        }
        let mut rec = FlowRecord {
            event: ev,
            ifname,
            src,
            dst,
            xlat,
            dnat,
            src_service: None,
            dst_service: None,
            src_names: None,
            dst_names: None,
            uuid: uuid::Uuid::new_v4(),
            node: self.node.clone(),
        };
        // Hubble's service getter: each end's address and port (as the flow shows them),
        // looked up among frontends.
        let services = snap.services();
        if !services.is_empty()
            && has_ports(&rec.event)
            && let Some((source, _, destination)) = rec.addresses()
        {
            let (sport, dport) = rec.ports();
            rec.src_service = services.frontend(source, sport).cloned();
            rec.dst_service = services.frontend(destination, dport).cloned();
        }
        rec
    }

    /// The flow for one event (its record's [`FlowRecord::to_flow`]).
    pub fn build(&self, ev: &Event, ifname: Option<&str>) -> Flow {
        self.record(ev.clone(), ifname.map(Arc::from)).to_flow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::record::{write_icmpv4_name, write_icmpv6_name},
        kernel::facts::Clock,
    };
    use flowscope_proto::{
        drop_reason,
        flow::{
            self, CiliumEventType, DropReason, TraceObservationPoint, TraceReason,
            TrafficDirection, Verdict,
        },
        flowscope::v1::FlowExtension,
    };
    use monitor_common::{event_type, proto as ipproto};

    fn icmpv4_name(t: u8, c: u8) -> String {
        let mut s = String::new();
        write_icmpv4_name(&mut s, t, c);
        s
    }

    fn icmpv6_name(t: u8, c: u8) -> String {
        let mut s = String::new();
        write_icmpv6_name(&mut s, t, c);
        s
    }
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
