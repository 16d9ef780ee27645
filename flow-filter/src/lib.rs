//! Hubble's flow filters, compiled once and matched against
//! `flowscope_proto::flow::Flow`s.
//!
//! Shared by the agent (GetFlows), the relay (validates a request once before
//! fanning it out) and the exporters. Pure logic: no I/O, no async, no gRPC
//! (map [`FilterError`] to `tonic::Status::invalid_argument` at the server,
//! naming [`FilterError::field`]).
//!
//! Semantics are Hubble's: a flow passes when (the whitelist is empty or any
//! whitelist filter matches) and no blacklist filter matches; inside one
//! `FlowFilter` every non-empty field must match (AND); the values of one
//! repeated field are alternatives (OR). See each field's rules on
//! [`CompiledFilter`].
//!
//! Only flows are filtered here. Hubble lets `LostEvent`s through every
//! filter (they are rare and always wanted); the caller does the same.
//!
//! ```
//! use flowscope_filter::FlowFilterSet;
//! use flowscope_proto::flow::{Flow, FlowFilter, Ip};
//!
//! let only_world = FlowFilter { destination_ip: vec!["1.0.0.0/24".into()], ..Default::default() };
//! let set = FlowFilterSet::compile(&[only_world], &[])?;
//! let flow = Flow {
//!     ip: Some(Ip { destination: "1.0.0.1".into(), ..Default::default() }),
//!     ..Default::default()
//! };
//! assert!(set.matches(&flow));
//!
//! let bad = FlowFilter { source_ip: vec!["10.0.0.300".into()], ..Default::default() };
//! let err = FlowFilterSet::compile(&[bad], &[]).unwrap_err();
//! assert_eq!(err.field(), "source_ip");
//! assert!(err.to_string().starts_with(r#"invalid source_ip "10.0.0.300": "#));
//! # Ok::<(), flowscope_filter::FilterError>(())
//! ```

/// Filter flags as flowctl (and `hubble observe`) take them, into white- and blacklists.
pub mod flags;
mod glob;
mod ip;
mod label;
pub mod lists;
mod misc;
mod pod;
mod port;
mod produced;

pub use produced::refuse_unproduced;

use flowscope_proto::flow::{
    Endpoint, EventTypeFilter, Flow, FlowFilter, HttpHeader, NetworkInterface, TcpFlags,
};
use regex::Regex;
use std::net::IpAddr;

use crate::ip::IpMatcher;
use crate::label::LabelMatcher;
use crate::misc::{FqdnMatcher, HttpStatusMatcher, NodeNameMatcher};
use crate::pod::{NameMatcher, WorkloadMatcher};
use crate::port::{PortMatcher, ProtocolMatcher};

/// Why a filter cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A value of a field is malformed (the field is named as in the proto).
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// Proto name of the FlowFilter field (`source_ip`, `node_name`, ...).
        field: &'static str,
        /// The offending value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field this implementation does not evaluate; refusing it is safer
    /// than silently matching too much.
    #[error("unsupported filter field {field}")]
    Unsupported {
        /// Proto name of the field.
        field: &'static str,
    },
    /// A valid filter on something no flowscope flow carries: it could only
    /// ever match nothing (see [`refuse_unproduced`]).
    #[error("filter {field} {value:?} can never match: {reason}")]
    NeverMatches {
        /// Proto name of the FlowFilter field.
        field: &'static str,
        /// The value that cannot match.
        value: String,
        /// Why no flow carries it.
        reason: String,
    },
}

impl FilterError {
    /// Proto name of the field at fault, for an `InvalidArgument` status.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Invalid { field, .. }
            | Self::Unsupported { field }
            | Self::NeverMatches { field, .. } => field,
        }
    }
}

/// Source or destination endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

impl Side {
    fn endpoint(self, flow: &Flow) -> Option<&Endpoint> {
        match self {
            Side::Source => flow.source.as_ref(),
            Side::Destination => flow.destination.as_ref(),
        }
    }
}

/// Which address of `flow.IP` an IP filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IpField {
    Source,
    SourceXlated,
    Destination,
}

/// One compiled, non-empty field of a FlowFilter.
#[derive(Debug, Clone)]
enum Predicate {
    Uuid(Vec<String>),
    Ip(IpField, IpMatcher),
    Pod(Side, NameMatcher),
    Service(Side, NameMatcher),
    Fqdn(Side, FqdnMatcher),
    Label(Side, LabelMatcher),
    NodeLabels(LabelMatcher),
    Workload(Side, WorkloadMatcher),
    ClusterName(Side, Vec<String>),
    Identity(Side, Vec<u32>),
    Port(Side, PortMatcher),
    Protocol(ProtocolMatcher),
    Verdict(Vec<i32>),
    DropReason(Vec<i32>),
    TrafficDirection(Vec<i32>),
    IpVersion(Vec<i32>),
    EventType(Vec<EventTypeFilter>),
    TcpFlags(Vec<TcpFlags>),
    Reply(Vec<bool>),
    NodeName(NodeNameMatcher),
    Interface(Vec<NetworkInterface>),
    Encrypted(Vec<bool>),
    HttpStatus(HttpStatusMatcher),
    HttpMethod(Vec<String>),
    HttpPath(Vec<Regex>),
    HttpUrl(Vec<Regex>),
    HttpHeader(Vec<HttpHeader>),
    DnsQuery(Vec<Regex>),
    TraceId(Vec<String>),
    IpTraceId(Vec<u64>),
}

impl Predicate {
    fn matches(&self, flow: &Flow) -> bool {
        let ip = flow.ip.as_ref();
        match self {
            Predicate::Uuid(ids) => ids.contains(&flow.uuid),
            Predicate::Ip(field, m) => ip.is_some_and(|ip| {
                m.matches(match field {
                    IpField::Source => &ip.source,
                    IpField::SourceXlated => &ip.source_xlated,
                    IpField::Destination => &ip.destination,
                })
            }),
            Predicate::Pod(side, m) => side
                .endpoint(flow)
                .is_some_and(|ep| m.matches(&ep.namespace, &ep.pod_name)),
            Predicate::Service(side, m) => {
                let svc = match side {
                    Side::Source => flow.source_service.as_ref(),
                    Side::Destination => flow.destination_service.as_ref(),
                };
                svc.is_some_and(|s| m.matches(&s.namespace, &s.name))
            }
            Predicate::Fqdn(side, m) => m.matches(match side {
                Side::Source => &flow.source_names,
                Side::Destination => &flow.destination_names,
            }),
            Predicate::Label(side, m) => {
                m.matches(side.endpoint(flow).map_or(&[][..], |ep| &ep.labels))
            }
            Predicate::NodeLabels(m) => m.matches(&flow.node_labels),
            Predicate::Workload(side, m) => m.matches(side.endpoint(flow)),
            Predicate::ClusterName(side, names) => side
                .endpoint(flow)
                .is_some_and(|ep| names.contains(&ep.cluster_name)),
            // A missing endpoint matches no identity (not even 0), as in Hubble.
            Predicate::Identity(side, ids) => side
                .endpoint(flow)
                .is_some_and(|ep| ids.contains(&ep.identity)),
            Predicate::Port(side, m) => {
                let ports = flow.l4.as_ref().and_then(|l4| l4.ports());
                m.matches(ports.map(|(src, dst)| match side {
                    Side::Source => src,
                    Side::Destination => dst,
                }))
            }
            Predicate::Protocol(m) => m.matches(flow),
            Predicate::Verdict(v) => v.contains(&flow.verdict),
            Predicate::DropReason(v) => v.contains(&flow.drop_reason_desc),
            Predicate::TrafficDirection(v) => v.contains(&flow.traffic_direction),
            Predicate::IpVersion(v) => v.contains(&ip.map_or(0, |ip| ip.ip_version)),
            Predicate::EventType(f) => misc::event_type_matches(f, flow),
            Predicate::TcpFlags(f) => misc::tcp_flags_match(f, flow),
            Predicate::Reply(v) => misc::reply_matches(v, flow),
            Predicate::NodeName(m) => m.matches(&flow.node_name),
            Predicate::Interface(f) => misc::interface_matches(f, flow),
            Predicate::Encrypted(v) => v.contains(&ip.is_some_and(|ip| ip.encrypted)),
            Predicate::HttpStatus(m) => m.matches(flow),
            Predicate::HttpMethod(m) => misc::http_method_matches(m, flow),
            Predicate::HttpPath(r) => misc::http_path_matches(r, flow),
            Predicate::HttpUrl(r) => misc::http_url_matches(r, flow),
            Predicate::HttpHeader(h) => misc::http_header_matches(h, flow),
            Predicate::DnsQuery(r) => misc::dns_query_matches(r, flow),
            // Hubble compares through getters: no trace context is trace id "".
            Predicate::TraceId(ids) => {
                let id = flow
                    .trace_context
                    .as_ref()
                    .and_then(|t| t.parent.as_ref())
                    .map_or("", |p| p.trace_id.as_str());
                ids.iter().any(|x| x == id)
            }
            Predicate::IpTraceId(ids) => flow
                .ip_trace_id
                .as_ref()
                .is_some_and(|t| ids.contains(&t.trace_id)),
        }
    }
}

/// What a flow that is not built yet tells the filters (see [`FlowFilterSet::decide`]). Each
/// method returns exactly what the `flow.Flow` built from the same data would hold; the agent's
/// history records implement it, so that a filtered follower does not build every flow only to
/// drop most of them.
pub trait FlowFields {
    /// `Flow.IP`'s addresses: `(source, source_xlated, destination)`; `None` when the flow has
    /// no `IP`.
    fn addresses(&self) -> Option<(IpAddr, Option<IpAddr>, IpAddr)>;
    /// `Flow.l4`'s ports as [`flowscope_proto::flow::Layer4::ports`] reads them (`None` for
    /// flows without ports).
    fn ports(&self) -> Option<(u32, u32)>;
    /// `Flow.verdict`.
    fn verdict(&self) -> i32;
    /// `Flow.source`, `None` when the flow has none.
    fn source(&self) -> Option<EndpointFields<'_>>;
    /// `Flow.destination`, `None` when the flow has none.
    fn destination(&self) -> Option<EndpointFields<'_>>;
}

/// The fields of a `flow.Endpoint` that [`FlowFields`] gives.
#[derive(Debug, Clone, Copy)]
pub struct EndpointFields<'a> {
    /// `Endpoint.identity`.
    pub identity: u32,
    /// `Endpoint.namespace`.
    pub namespace: &'a str,
    /// `Endpoint.pod_name`.
    pub pod_name: &'a str,
    /// `Endpoint.labels`.
    pub labels: &'a [String],
}

impl Predicate {
    /// What [`Predicate::matches`] would answer on the flow built from `f`, when the fields of
    /// [`FlowFields`] are enough to tell; `None` otherwise.
    fn decide(&self, f: &impl FlowFields) -> Option<bool> {
        let endpoint = |side: Side| match side {
            Side::Source => f.source(),
            Side::Destination => f.destination(),
        };
        Some(match self {
            Predicate::Ip(field, m) => f.addresses().is_some_and(|(src, xlated, dst)| {
                match field {
                    IpField::Source => Some(src),
                    IpField::SourceXlated => xlated,
                    IpField::Destination => Some(dst),
                }
                .is_some_and(|a| m.matches_addr(a))
            }),
            Predicate::Pod(side, m) => {
                endpoint(*side).is_some_and(|ep| m.matches(ep.namespace, ep.pod_name))
            }
            Predicate::Label(side, m) => m.matches(endpoint(*side).map_or(&[][..], |ep| ep.labels)),
            Predicate::Identity(side, ids) => {
                endpoint(*side).is_some_and(|ep| ids.contains(&ep.identity))
            }
            Predicate::Port(side, m) => m.matches(f.ports().map(|(src, dst)| match side {
                Side::Source => src,
                Side::Destination => dst,
            })),
            Predicate::Verdict(v) => v.contains(&f.verdict()),
            _ => return None,
        })
    }
}

/// Turns a family's `(value, reason)` error into a [`FilterError`].
fn invalid(field: &'static str) -> impl FnOnce((String, String)) -> FilterError {
    move |(value, reason)| FilterError::Invalid {
        field,
        value,
        reason,
    }
}

/// One compiled `FlowFilter`: every set field must match.
///
/// Field rules (Hubble's, unless noted):
/// - `uuid`, `source_cluster_name`/`destination_cluster_name`, `trace_id`,
///   `ip_trace_id`: exact values; cluster names must not be empty.
/// - `source_ip`, `destination_ip`, `source_ip_xlated`: addresses or CIDRs,
///   IPv4 and IPv6; a flow without that address matches nothing.
/// - `source_pod`/`destination_pod`, `source_service`/`destination_service`:
///   `namespace/name-prefix`, `namespace/` (whole namespace), `name-prefix`
///   (namespace `default`), `/name-prefix` (any namespace — Hubble itself
///   would require an empty namespace).
/// - `source_label`/`destination_label`/`node_labels`: Kubernetes label
///   selectors against Cilium labels (see the `label` module).
/// - `source_identity`/`destination_identity`: a flow without that endpoint
///   matches no identity.
/// - `source_port`/`destination_port`: `0`..`65535` against TCP, UDP, SCTP.
/// - `protocol`: `tcp`, `udp`, `sctp`, `icmp`, `icmpv4`, `icmpv6`, `vrrp`,
///   `igmp`, `dns`, `http`, `kafka`, case-insensitive.
/// - `verdict`, `drop_reason_desc`, `traffic_direction`, `ip_version`,
///   `encrypted`: membership.
/// - `event_type`: `type` 0 = any; `sub_type` only with `match_sub_type`.
/// - `tcp_flags`: an entry matches when all its flags are set in the flow.
/// - `reply`: against `is_reply`; unknown matches neither value, except that a
///   DROPPED flow counts as not a reply (Hubble's compatibility rule).
/// - `node_name`: `[cluster/]node` globs (`*`, `?`); node names without a
///   cluster are in cluster `default`.
/// - `interface`: index when non-zero and name when non-empty.
/// - `source_workload`/`destination_workload`: name and kind, empty = any.
/// - `source_fqdn`/`destination_fqdn`: globs against `source_names` /
///   `destination_names`.
/// - `http_status_code` (`200`, `4+`, `40+`), `http_method` (any case),
///   `http_path` and `http_url` (regexes; the path is not percent-decoded),
///   `http_header` (exact key and value), `dns_query` (regex). HTTP fields
///   are refused next to an `event_type` filter that excludes L7 (type 129).
/// - `experimental.cel_expression`: [`FilterError::Unsupported`].
#[derive(Debug, Clone, Default)]
pub struct CompiledFilter {
    predicates: Vec<Predicate>,
}

impl CompiledFilter {
    /// Validates and compiles one FlowFilter.
    pub fn compile(f: &FlowFilter) -> Result<Self, FilterError> {
        use Predicate as P;
        use Side::{Destination as Dst, Source as Src};

        let mut p = Vec::new();
        let strings = |v: &[String]| v.to_vec();

        if !f.uuid.is_empty() {
            p.push(P::Uuid(strings(&f.uuid)));
        }
        for (field, values, which) in [
            ("source_ip", &f.source_ip, IpField::Source),
            (
                "source_ip_xlated",
                &f.source_ip_xlated,
                IpField::SourceXlated,
            ),
            ("destination_ip", &f.destination_ip, IpField::Destination),
        ] {
            if !values.is_empty() {
                p.push(P::Ip(
                    which,
                    IpMatcher::compile(values).map_err(invalid(field))?,
                ));
            }
        }
        for (field, values, side, service) in [
            ("source_pod", &f.source_pod, Src, false),
            ("destination_pod", &f.destination_pod, Dst, false),
            ("source_service", &f.source_service, Src, true),
            ("destination_service", &f.destination_service, Dst, true),
        ] {
            if !values.is_empty() {
                let m = NameMatcher::compile(values).map_err(invalid(field))?;
                p.push(if service {
                    P::Service(side, m)
                } else {
                    P::Pod(side, m)
                });
            }
        }
        for (field, values, side) in [
            ("source_fqdn", &f.source_fqdn, Src),
            ("destination_fqdn", &f.destination_fqdn, Dst),
        ] {
            if !values.is_empty() {
                p.push(P::Fqdn(
                    side,
                    FqdnMatcher::compile(values).map_err(invalid(field))?,
                ));
            }
        }
        for (field, values, side) in [
            ("source_label", &f.source_label, Src),
            ("destination_label", &f.destination_label, Dst),
        ] {
            if !values.is_empty() {
                p.push(P::Label(
                    side,
                    LabelMatcher::compile(values).map_err(invalid(field))?,
                ));
            }
        }
        if !f.node_labels.is_empty() {
            let m = LabelMatcher::compile(&f.node_labels).map_err(invalid("node_labels"))?;
            p.push(P::NodeLabels(m));
        }
        for (values, side) in [(&f.source_workload, Src), (&f.destination_workload, Dst)] {
            if !values.is_empty() {
                p.push(P::Workload(side, WorkloadMatcher::new(values)));
            }
        }
        for (field, values, side) in [
            ("source_cluster_name", &f.source_cluster_name, Src),
            ("destination_cluster_name", &f.destination_cluster_name, Dst),
        ] {
            if !values.is_empty() {
                let names = pod::compile_cluster_names(values).map_err(invalid(field))?;
                p.push(P::ClusterName(side, names));
            }
        }
        for (values, side) in [(&f.source_identity, Src), (&f.destination_identity, Dst)] {
            if !values.is_empty() {
                p.push(P::Identity(side, values.clone()));
            }
        }
        for (field, values, side) in [
            ("source_port", &f.source_port, Src),
            ("destination_port", &f.destination_port, Dst),
        ] {
            if !values.is_empty() {
                p.push(P::Port(
                    side,
                    PortMatcher::compile(values).map_err(invalid(field))?,
                ));
            }
        }
        if !f.protocol.is_empty() {
            let m = ProtocolMatcher::compile(&f.protocol).map_err(invalid("protocol"))?;
            p.push(P::Protocol(m));
        }
        if !f.verdict.is_empty() {
            p.push(P::Verdict(f.verdict.clone()));
        }
        if !f.drop_reason_desc.is_empty() {
            p.push(P::DropReason(f.drop_reason_desc.clone()));
        }
        if !f.traffic_direction.is_empty() {
            p.push(P::TrafficDirection(f.traffic_direction.clone()));
        }
        if !f.ip_version.is_empty() {
            p.push(P::IpVersion(f.ip_version.clone()));
        }
        if !f.event_type.is_empty() {
            p.push(P::EventType(f.event_type.clone()));
        }
        if !f.tcp_flags.is_empty() {
            p.push(P::TcpFlags(f.tcp_flags.clone()));
        }
        if !f.reply.is_empty() {
            p.push(P::Reply(f.reply.clone()));
        }
        if !f.node_name.is_empty() {
            let m = NodeNameMatcher::compile(&f.node_name).map_err(invalid("node_name"))?;
            p.push(P::NodeName(m));
        }
        if !f.interface.is_empty() {
            p.push(P::Interface(f.interface.clone()));
        }
        if !f.encrypted.is_empty() {
            p.push(P::Encrypted(f.encrypted.clone()));
        }

        // HTTP fields need an event type filter that lets L7 records through.
        if !misc::http_compatible(&f.event_type) {
            let http_fields = [
                ("http_status_code", f.http_status_code.first().cloned()),
                ("http_method", f.http_method.first().cloned()),
                ("http_path", f.http_path.first().cloned()),
                ("http_url", f.http_url.first().cloned()),
                (
                    "http_header",
                    f.http_header
                        .first()
                        .map(|h| format!("{}: {}", h.key, h.value)),
                ),
            ];
            if let Some((field, Some(value))) = http_fields.into_iter().find(|(_, v)| v.is_some()) {
                return Err(FilterError::Invalid {
                    field,
                    value,
                    reason:
                        "HTTP filters need the event_type filter to include L7 events (type 129)"
                            .into(),
                });
            }
        }
        if !f.http_status_code.is_empty() {
            let m = HttpStatusMatcher::compile(&f.http_status_code)
                .map_err(invalid("http_status_code"))?;
            p.push(P::HttpStatus(m));
        }
        if !f.http_method.is_empty() {
            p.push(P::HttpMethod(strings(&f.http_method)));
        }
        if !f.http_path.is_empty() {
            let r = misc::compile_regexes(&f.http_path).map_err(invalid("http_path"))?;
            p.push(P::HttpPath(r));
        }
        if !f.http_url.is_empty() {
            let r = misc::compile_regexes(&f.http_url).map_err(invalid("http_url"))?;
            p.push(P::HttpUrl(r));
        }
        if !f.http_header.is_empty() {
            p.push(P::HttpHeader(f.http_header.clone()));
        }
        if !f.dns_query.is_empty() {
            let r = misc::compile_regexes(&f.dns_query).map_err(invalid("dns_query"))?;
            p.push(P::DnsQuery(r));
        }
        if !f.trace_id.is_empty() {
            p.push(P::TraceId(strings(&f.trace_id)));
        }
        if !f.ip_trace_id.is_empty() {
            p.push(P::IpTraceId(f.ip_trace_id.clone()));
        }
        if f.experimental
            .as_ref()
            .is_some_and(|e| !e.cel_expression.is_empty())
        {
            return Err(FilterError::Unsupported {
                field: "experimental.cel_expression",
            });
        }
        Ok(Self { predicates: p })
    }

    /// True when every set field of the filter matches the flow (an empty
    /// filter matches every flow, as in Hubble).
    pub fn matches(&self, flow: &Flow) -> bool {
        self.predicates.iter().all(|p| p.matches(flow))
    }

    /// What [`CompiledFilter::matches`] would answer on the flow built from `f`, when its
    /// [`FlowFields`] are enough to tell: false as soon as one field that can be read fails.
    fn decide(&self, f: &impl FlowFields) -> Option<bool> {
        let mut known = true;
        for p in &self.predicates {
            match p.decide(f) {
                Some(false) => return Some(false),
                Some(true) => {}
                None => known = false,
            }
        }
        known.then_some(true)
    }
}

/// A compiled GetFlowsRequest whitelist and blacklist.
#[derive(Debug, Clone, Default)]
pub struct FlowFilterSet {
    whitelist: Vec<CompiledFilter>,
    blacklist: Vec<CompiledFilter>,
}

impl FlowFilterSet {
    /// Validates and compiles both lists; the first invalid value fails the
    /// whole set (nothing is half-applied).
    pub fn compile(
        whitelist: &[FlowFilter],
        blacklist: &[FlowFilter],
    ) -> Result<Self, FilterError> {
        Ok(Self {
            whitelist: whitelist
                .iter()
                .map(CompiledFilter::compile)
                .collect::<Result<_, _>>()?,
            blacklist: blacklist
                .iter()
                .map(CompiledFilter::compile)
                .collect::<Result<_, _>>()?,
        })
    }

    /// True when the flow passes: whitelist empty or one of its filters
    /// matches, and no blacklist filter matches. Does not allocate.
    pub fn matches(&self, flow: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|f| f.matches(flow)))
            && !self.blacklist.iter().any(|f| f.matches(flow))
    }

    /// What [`FlowFilterSet::matches`] would answer on the flow built from `f`, when the fields
    /// of [`FlowFields`] are enough to tell (`None`: build the flow and ask `matches`). Filters
    /// on addresses, ports, verdicts, pods, namespaces, labels and identities decide here; a
    /// whitelist whose every filter fails on one of those fields rejects the flow whatever
    /// its other fields say.
    pub fn decide(&self, f: &impl FlowFields) -> Option<bool> {
        let mut blacklisted = Some(false);
        for b in &self.blacklist {
            match b.decide(f) {
                Some(true) => return Some(false),
                Some(false) => {}
                None => blacklisted = None,
            }
        }
        let whitelisted = if self.whitelist.is_empty() {
            Some(true)
        } else {
            let mut any = Some(false);
            for w in &self.whitelist {
                match w.decide(f) {
                    Some(true) => {
                        any = Some(true);
                        break;
                    }
                    Some(false) => {}
                    None => any = None,
                }
            }
            any
        };
        match (whitelisted, blacklisted) {
            (Some(false), _) => Some(false),
            (Some(true), Some(false)) => Some(true),
            _ => None,
        }
    }

    /// True when the set lets every flow through (both lists empty).
    pub fn is_empty(&self) -> bool {
        self.whitelist.is_empty() && self.blacklist.is_empty()
    }
}
