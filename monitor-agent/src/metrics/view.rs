//! What Hubble's metrics read of a flow, from a built `flow.Flow` or straight from a
//! [`FlowRecord`].
//!
//! The pipeline counts every flow of a packet from its record: building a `flow.Flow` (~40
//! allocations) only to read a dozen fields of it was most of the metrics' cost. Flows that
//! exist only as `flow.Flow` (tests, flows built elsewhere) are counted through the same trait.
//! A test (`hubble.rs`, `a_record_counts_as_its_flow`) holds the two implementations to the same
//! series over random records.

use std::{borrow::Cow, net::IpAddr};

use flowscope_proto::{
    flow::{Flow, Layer7, Verdict, layer4::Protocol},
    flowscope::v1::FlowExtension,
};

use crate::decode::{
    event::Kind,
    record::{FlowRecord, write_icmpv4_name, write_icmpv6_name},
};

/// An endpoint as the metrics read it.
#[derive(Clone, Copy, Debug, Default)]
pub struct EndpointView<'a> {
    /// Kubernetes namespace (empty when none).
    pub namespace: &'a str,
    /// Pod name (empty when none).
    pub pod_name: &'a str,
    /// Labels in Hubble's form.
    pub labels: &'a [String],
    /// The first workload's name.
    pub workload: Option<&'a str>,
}

/// The fields of a flow that Hubble's metrics read.
pub trait FlowView {
    /// `verdict`.
    fn verdict(&self) -> Verdict;
    /// `event_type`: (type, sub type).
    fn event_type(&self) -> Option<(i32, i32)>;
    /// `l4.protocol`.
    fn protocol(&self) -> Option<Protocol>;
    /// `IP.ip_version`, when the flow has an `IP`.
    fn ip_version(&self) -> Option<i32>;
    /// `IP.source` or `IP.destination` ("" without IP).
    fn ip_text(&self, source: bool) -> Cow<'_, str>;
    /// `is_reply`.
    fn is_reply(&self) -> Option<bool>;
    /// `drop_reason_desc`.
    fn drop_reason_desc(&self) -> i32;
    /// `traffic_direction`.
    fn traffic_direction(&self) -> i32;
    /// `source` or `destination`.
    fn endpoint(&self, source: bool) -> Option<EndpointView<'_>>;
    /// `source_names` or `destination_names`.
    fn names(&self, source: bool) -> &[String];
    /// gopacket's name of the ICMP type and code (`EchoRequest`), as Hubble labels it.
    fn icmp_type_name(&self) -> Cow<'_, str>;
    /// The kernel's name of a drop's reason (flowscope's extension), when it has one.
    fn kernel_drop_reason_name(&self) -> Option<Cow<'_, str>>;
    /// `l7` (records are flows of packets: never L7).
    fn l7(&self) -> Option<&Layer7>;
}

impl FlowView for Flow {
    fn verdict(&self) -> Verdict {
        Verdict::try_from(self.verdict).unwrap_or(Verdict::Unknown)
    }

    fn event_type(&self) -> Option<(i32, i32)> {
        self.event_type.as_ref().map(|e| (e.r#type, e.sub_type))
    }

    fn protocol(&self) -> Option<Protocol> {
        // No allocation: every protocol we build carries numbers only.
        self.l4.as_ref().and_then(|l| l.protocol.clone())
    }

    fn ip_version(&self) -> Option<i32> {
        self.ip.as_ref().map(|ip| ip.ip_version)
    }

    fn ip_text(&self, source: bool) -> Cow<'_, str> {
        Cow::Borrowed(
            self.ip
                .as_ref()
                .map(|ip| if source { &ip.source } else { &ip.destination })
                .map_or("", String::as_str),
        )
    }

    fn is_reply(&self) -> Option<bool> {
        self.is_reply
    }

    fn drop_reason_desc(&self) -> i32 {
        self.drop_reason_desc
    }

    fn traffic_direction(&self) -> i32 {
        self.traffic_direction
    }

    fn endpoint(&self, source: bool) -> Option<EndpointView<'_>> {
        let e = if source {
            &self.source
        } else {
            &self.destination
        };
        e.as_ref().map(|e| EndpointView {
            namespace: &e.namespace,
            pod_name: &e.pod_name,
            labels: &e.labels,
            workload: e.workloads.first().map(|w| w.name.as_str()),
        })
    }

    fn names(&self, source: bool) -> &[String] {
        if source {
            &self.source_names
        } else {
            &self.destination_names
        }
    }

    fn icmp_type_name(&self) -> Cow<'_, str> {
        // The builder writes gopacket's name into the summary (`ICMPv4 EchoRequest`).
        #[expect(
            deprecated,
            reason = "Hubble's Summary field is deprecated, but it carries gopacket's ICMP names"
        )]
        let summary = self.summary.as_str();
        if let Some(name) = summary
            .strip_prefix("ICMPv4 ")
            .or_else(|| summary.strip_prefix("ICMPv6 "))
        {
            return Cow::Borrowed(name);
        }
        match self.protocol() {
            Some(Protocol::IcmPv4(i)) => Cow::Owned(format!("{}({})", i.r#type, i.code)),
            Some(Protocol::IcmPv6(i)) => Cow::Owned(format!("{}({})", i.r#type, i.code)),
            _ => Cow::Borrowed(""),
        }
    }

    fn kernel_drop_reason_name(&self) -> Option<Cow<'_, str>> {
        let ext: FlowExtension = self.extensions.as_ref()?.to_msg().ok()??;
        Some(Cow::<str>::Owned(ext.kernel_drop_reason_name)).filter(|n| !n.is_empty())
    }

    fn l7(&self) -> Option<&Layer7> {
        self.l7.as_ref()
    }
}

impl FlowView for FlowRecord {
    fn verdict(&self) -> Verdict {
        FlowRecord::verdict(self)
    }

    fn event_type(&self) -> Option<(i32, i32)> {
        let e = FlowRecord::event_type(self);
        Some((e.r#type, e.sub_type))
    }

    fn protocol(&self) -> Option<Protocol> {
        self.l4().and_then(|l| l.protocol)
    }

    fn ip_version(&self) -> Option<i32> {
        self.addresses()
            .map(|_| FlowRecord::ip_version(self) as i32)
    }

    fn ip_text(&self, source: bool) -> Cow<'_, str> {
        let Some((src, _, dst)) = self.addresses() else {
            return Cow::Borrowed("");
        };
        let a: IpAddr = if source { src } else { dst };
        Cow::Owned(a.to_string())
    }

    fn is_reply(&self) -> Option<bool> {
        FlowRecord::is_reply(self)
    }

    fn drop_reason_desc(&self) -> i32 {
        self.hubble_reason().map_or(0, |r| r as i32)
    }

    fn traffic_direction(&self) -> i32 {
        self.direction() as i32
    }

    fn endpoint(&self, source: bool) -> Option<EndpointView<'_>> {
        let id = if source { &self.src } else { &self.dst };
        id.as_ref().map(|id| {
            let ep = id.endpoint.as_deref();
            EndpointView {
                namespace: ep.map_or("", |e| e.namespace.as_str()),
                pod_name: ep.map_or("", |e| e.pod_name.as_str()),
                labels: &id.labels,
                workload: ep
                    .and_then(|e| e.workloads.first())
                    .map(|w| w.name.as_str()),
            }
        })
    }

    fn names(&self, source: bool) -> &[String] {
        let names = if source {
            &self.src_names
        } else {
            &self.dst_names
        };
        names.as_deref().unwrap_or_default()
    }

    fn icmp_type_name(&self) -> Cow<'_, str> {
        let ev = &self.event;
        if !ev.has_l4 {
            return Cow::Borrowed("");
        }
        let mut s = String::new();
        match ev.proto {
            monitor_common::proto::ICMP => write_icmpv4_name(&mut s, ev.icmp_type, ev.icmp_code),
            monitor_common::proto::ICMPV6 => write_icmpv6_name(&mut s, ev.icmp_type, ev.icmp_code),
            _ => {}
        }
        Cow::Owned(s)
    }

    fn kernel_drop_reason_name(&self) -> Option<Cow<'_, str>> {
        if self.event.kind != Kind::Drop {
            return None;
        }
        self.event
            .drop_reason_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(Cow::Borrowed)
    }

    fn l7(&self) -> Option<&Layer7> {
        None
    }
}
