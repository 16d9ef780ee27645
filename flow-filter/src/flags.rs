//! Filter flags with `flowctl observe`'s (and `hubble observe`'s) syntax → the GetFlowsRequest
//! white- and blacklists, with the rules of Hubble's `observe` (cilium
//! `hubble/cmd/observe/flows_filter.go`). Shared by flowctl (which replays its clap matches
//! through [`FilterBuilder`]) and the web view (which parses the same words with [`parse_args`]):
//!
//!
//! - Each list is built from two FlowFilters, "left" and "right". A flag
//!   without direction (`--ip X`) puts `source_ip X` in the left one and
//!   `destination_ip X` in the right one: the flow matches when X is either
//!   end. A `--from-`/`--to-` flag goes into both. When both come out equal,
//!   only one is sent. So different flags AND together, and the values of one
//!   flag OR together.
//! - `--not` sends the next filter flag (only that one) to the blacklist,
//!   which is built the same way.
//! - Namespaces (`-n`, `--from-namespace`, `-A`, …) are applied last, to the
//!   pods: `-n default --pod web` is `source_pod default/web` or
//!   `destination_pod default/web`; `-n default` alone is `default/`.
//! - Some flags cannot be combined (`--ip` with `--from-ip`, `--ip` with
//!   `--pod`, …), as in Hubble.
//!
//! The order of the flags matters for `--not`: flags are applied one by one, in the order given.

use flowscope_proto::flow::{
    EventTypeFilter, FlowFilter, IpVersion, NetworkInterface, TcpFlags, TrafficDirection, Verdict,
    Workload,
};
use flowscope_proto::names::{RESERVED_IDENTITIES, TRACE_POINTS};

/// A command-line value or combination that makes no sense: reported like a
/// clap error, with exit status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Flags that may not be used together (in the same list), Hubble's groups
/// restricted to the flags flowctl has.
const CONFLICTS: &[&[&str]] = &[
    &[
        "from-ip",
        "ip",
        "from-namespace",
        "namespace",
        "from-all-namespaces",
        "all-namespaces",
    ],
    &["from-ip", "ip", "from-pod", "pod"],
    &[
        "to-ip",
        "ip",
        "to-namespace",
        "namespace",
        "to-all-namespaces",
        "all-namespaces",
    ],
    &["to-ip", "ip", "to-pod", "pod"],
    &["to-pod", "namespace", "all-namespaces"],
    &["from-pod", "namespace", "all-namespaces"],
    &["to-service", "namespace", "all-namespaces"],
    &["from-service", "namespace", "all-namespaces"],
    &["service", "from-service"],
    &["service", "to-service"],
    &["label", "from-label"],
    &["label", "to-label"],
    &["port", "to-port"],
    &["port", "from-port"],
    &["identity", "to-identity"],
    &["identity", "from-identity"],
    &["workload", "to-workload"],
    &["workload", "from-workload"],
    &["fqdn", "from-fqdn"],
    &["fqdn", "to-fqdn"],
];

// ---------------------------------------------------------------------------
// Value parsers (used by clap, and again by the builder).
// ---------------------------------------------------------------------------

/// An IP address or a CIDR.
pub fn parse_ip_or_cidr(s: &str) -> Result<String, String> {
    if s.parse::<std::net::IpAddr>().is_ok() || s.parse::<ipnet::IpNet>().is_ok() {
        Ok(s.to_string())
    } else {
        Err("expected an IP address or a CIDR (e.g. 10.244.0.213, 10.244.0.0/24, fd00::/64)".into())
    }
}

/// A port number.
pub fn parse_port(s: &str) -> Result<String, String> {
    match s.parse::<u16>() {
        Ok(port) => Ok(port.to_string()),
        Err(_) => Err("expected a port number between 0 and 65535".into()),
    }
}

/// Protocols a FlowFilter accepts (Hubble's list), matched case-insensitively.
const PROTOCOLS: &[&str] = &[
    "tcp", "udp", "sctp", "icmp", "icmpv4", "icmpv6", "dns", "http", "kafka",
];

/// A protocol name, lower-cased.
pub fn parse_protocol(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if PROTOCOLS.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(format!("expected one of {}", PROTOCOLS.join(", ")))
    }
}

/// An HTTP status code filter as Hubble takes it: three digits (`404`), or one or two
/// followed by `+` (`5+`, `40+`: every code with that prefix).
pub fn parse_http_status(s: &str) -> Result<String, String> {
    let (digits, prefix) = match s.strip_suffix('+') {
        Some(d) => (d, true),
        None => (s, false),
    };
    let ok = digits.bytes().all(|b| b.is_ascii_digit())
        && if prefix {
            (1..=2).contains(&digits.len())
        } else {
            digits.len() == 3
        };
    if ok {
        Ok(s.to_string())
    } else {
        Err("expected a status code (404) or a prefix of one or two digits and + (5+, 40+)".into())
    }
}

/// A security identity: a number or a reserved name (`world` is 2).
pub fn parse_identity(s: &str) -> Result<u32, String> {
    // `unknown` (0) is not a name a user filters on; no `reserved:` prefix either.
    if let Some(id) = flowscope_proto::names::reserved_identity_number(s)
        .filter(|id| *id != 0 && !s.starts_with("reserved:"))
    {
        return Ok(id);
    }
    s.parse::<u32>().map_err(|_| {
        let names: Vec<&str> = RESERVED_IDENTITIES[1..].to_vec();
        format!("expected a numeric identity or one of {}", names.join(", "))
    })
}

/// TCP flags, comma-separated: `syn`, `SYN,ACK`.
pub fn parse_tcp_flags(s: &str) -> Result<TcpFlags, String> {
    let mut flags = TcpFlags::default();
    for name in s.split(',') {
        let flag = match name.to_ascii_uppercase().as_str() {
            "SYN" => &mut flags.syn,
            "FIN" => &mut flags.fin,
            "RST" => &mut flags.rst,
            "PSH" => &mut flags.psh,
            "ACK" => &mut flags.ack,
            "URG" => &mut flags.urg,
            "ECE" => &mut flags.ece,
            "CWR" => &mut flags.cwr,
            "NS" => &mut flags.ns,
            _ => {
                return Err(format!(
                    "unknown TCP flag {name:?}: expected a comma-separated list of SYN, ACK, RST, FIN, PSH, URG, ECE, CWR, NS"
                ));
            }
        };
        *flag = true;
    }
    Ok(flags)
}

/// A verdict name, case-insensitive (Hubble wants upper case).
pub fn parse_verdict(s: &str) -> Result<Verdict, String> {
    const VERDICTS: [Verdict; 7] = [
        Verdict::Forwarded,
        Verdict::Dropped,
        Verdict::Audit,
        Verdict::Redirected,
        Verdict::Error,
        Verdict::Traced,
        Verdict::Translated,
    ];
    let upper = s.to_ascii_uppercase();
    VERDICTS
        .into_iter()
        .find(|v| v.as_str_name() == upper)
        .ok_or_else(|| {
            let names: Vec<&str> = VERDICTS.iter().map(|v| v.as_str_name()).collect();
            format!("expected one of {}", names.join(", "))
        })
}

/// A Hubble DropReason name (`POLICY_DENIED`), case-insensitive.
pub fn parse_drop_reason(s: &str) -> Result<i32, String> {
    flowscope_proto::flow::DropReason::from_str_name(&s.to_ascii_uppercase())
        .filter(|r| *r as i32 != 0)
        .map(|r| r as i32)
        .ok_or_else(|| {
            "expected a Hubble drop reason name such as POLICY_DENIED or UNSUPPORTED_L3_PROTOCOL"
                .into()
        })
}

/// Event type names for `-t`, and their monitor message type numbers.
const EVENT_TYPES: &[(&str, i32)] = &[
    ("drop", 1),
    ("debug", 2),
    ("capture", 3),
    ("trace", 4),
    ("policy-verdict", 5),
    ("recorder", 6),
    ("trace-sock", 7),
    ("l7", 129),
    ("agent", 130),
];

/// `-t TYPE[:SUBTYPE]`: `trace`, `drop`, `trace:to-network`, `4:11`.
pub fn parse_event_type(s: &str) -> Result<EventTypeFilter, String> {
    let (ty, sub) = match s.split_once(':') {
        Some((ty, sub)) => (ty, Some(sub)),
        None => (s, None),
    };
    let type_names = || {
        EVENT_TYPES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let number = match EVENT_TYPES.iter().find(|(name, _)| *name == ty) {
        Some((_, n)) => *n,
        None => ty.parse::<u32>().ok().and_then(|n| i32::try_from(n).ok()).ok_or_else(|| {
            format!(
                "unknown event type {ty:?}: expected TYPE[:SUBTYPE] with TYPE one of {} or a number",
                type_names()
            )
        })?,
    };
    let mut filter = EventTypeFilter {
        r#type: number,
        ..Default::default()
    };
    if let Some(sub) = sub {
        let named = (number == 4)
            .then(|| flowscope_proto::names::trace_point_number(sub))
            .flatten();
        let sub_type = match named {
            Some(n) => n,
            None => sub
                .parse::<u32>()
                .ok()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| {
                    let points = TRACE_POINTS;
                    format!(
                        "unknown event sub-type {sub:?}: expected a number, or for trace one of {}",
                        points.join(", ")
                    )
                })?,
        };
        filter.match_sub_type = true;
        filter.sub_type = sub_type;
    }
    Ok(filter)
}

/// `ingress` or `egress`, case-insensitive.
pub fn parse_traffic_direction(s: &str) -> Result<TrafficDirection, String> {
    match s.to_ascii_lowercase().as_str() {
        "ingress" => Ok(TrafficDirection::Ingress),
        "egress" => Ok(TrafficDirection::Egress),
        _ => Err("expected ingress or egress".into()),
    }
}

/// `4`, `v4`, `ipv4`, `ip4`, the same with 6, or `none` (non-IP flows).
pub fn parse_ip_version(s: &str) -> Result<IpVersion, String> {
    match s.to_ascii_lowercase().as_str() {
        "4" | "v4" | "ipv4" | "ip4" => Ok(IpVersion::IPv4),
        "6" | "v6" | "ipv6" | "ip6" => Ok(IpVersion::IPv6),
        "none" => Ok(IpVersion::IpNotUsed),
        _ => Err("expected v4, v6 or none".into()),
    }
}

/// A cluster name: not empty (Hubble's servers refuse an empty one).
pub fn parse_cluster(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("expected a cluster name".into())
    } else {
        Ok(s.to_string())
    }
}

/// A workload, `[KIND/]NAME` as Hubble writes it: `Deployment/web`, `web` (any kind),
/// `Deployment/` (any name of that kind).
pub fn parse_workload(s: &str) -> Workload {
    match s.split_once('/') {
        Some((kind, name)) => Workload {
            name: name.to_string(),
            kind: kind.to_string(),
        },
        None => Workload {
            name: s.to_string(),
            kind: String::new(),
        },
    }
}

/// A value clap already validated, parsed again by the builder: a failure
/// here is a bug, reported as a usage error rather than a panic.
fn reparse<T>(
    flag: &str,
    value: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, UsageError> {
    parse(value).map_err(|e| UsageError(format!("invalid value '{value}' for '--{flag}': {e}")))
}

// ---------------------------------------------------------------------------
// The builder
// ---------------------------------------------------------------------------

/// One list (white or black) under construction.
#[derive(Debug, Default)]
struct Tracker {
    left: Option<FlowFilter>,
    right: Option<FlowFilter>,
    ns: Vec<String>,
    src_ns: Vec<String>,
    dst_ns: Vec<String>,
    /// Flags used so far, for the conflict rules.
    changed: Vec<String>,
}

impl Tracker {
    fn apply_left(&mut self, update: impl FnOnce(&mut FlowFilter)) {
        update(self.left.get_or_insert_with(FlowFilter::default));
    }

    fn apply_right(&mut self, update: impl FnOnce(&mut FlowFilter)) {
        update(self.right.get_or_insert_with(FlowFilter::default));
    }

    fn apply(&mut self, update: impl Fn(&mut FlowFilter)) {
        self.apply_left(&update);
        self.apply_right(&update);
    }

    fn check_conflicts(&self) -> Result<(), UsageError> {
        for group in CONFLICTS {
            for flag in *group {
                if !self.changed.iter().any(|c| c == flag) {
                    continue;
                }
                for other in *group {
                    if other != flag && self.changed.iter().any(|c| c == other) {
                        return Err(UsageError(format!(
                            "filters --{flag} and --{other} cannot be combined"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// A pod given with a namespace (`kube-system/x`) must be in the
    /// namespaces given with `-n`/`--from-namespace`/`--to-namespace`.
    fn check_namespace_conflicts(&self) -> Result<(), UsageError> {
        for filter in [&self.left, &self.right].into_iter().flatten() {
            for (namespaces, pods) in [
                (&self.ns, &filter.source_pod),
                (&self.ns, &filter.destination_pod),
                (&self.src_ns, &filter.source_pod),
                (&self.dst_ns, &filter.destination_pod),
                (&self.ns, &filter.source_service),
                (&self.ns, &filter.destination_service),
                (&self.src_ns, &filter.source_service),
                (&self.dst_ns, &filter.destination_service),
            ] {
                // `-A` (the empty namespace) allows any namespace: Hubble
                // calls `-A --pod kube-system/x` a conflict, which it is not.
                for ns in namespaces.iter().filter(|ns| !ns.is_empty()) {
                    for pod in pods {
                        if let Some((pod_ns, _)) = pod.split_once('/')
                            && pod_ns != ns
                        {
                            return Err(UsageError(format!(
                                "namespace conflict: {ns:?} does not contain {pod:?}"
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The one or two FlowFilters of this list.
    fn flow_filters(mut self) -> Vec<FlowFilter> {
        if self.left.is_none()
            && self.right.is_none()
            && self.ns.is_empty()
            && self.src_ns.is_empty()
            && self.dst_ns.is_empty()
        {
            return Vec::new();
        }
        let mut left = self.left.take().unwrap_or_default();
        let mut right = self.right.take().unwrap_or_default();
        if !self.dst_ns.is_empty() {
            apply_destination_namespaces(&self.dst_ns, &mut left);
            apply_destination_namespaces(&self.dst_ns, &mut right);
        }
        if !self.src_ns.is_empty() {
            apply_source_namespaces(&self.src_ns, &mut left);
            apply_source_namespaces(&self.src_ns, &mut right);
        }
        if !self.ns.is_empty() {
            apply_source_namespaces(&self.ns, &mut left);
            apply_destination_namespaces(&self.ns, &mut right);
        }
        let filters = if left == right {
            vec![left]
        } else {
            vec![left, right]
        };
        // Only `-A` alone leaves a filter empty; an empty filter matches
        // everything, which is what sending none says more plainly.
        filters
            .into_iter()
            .filter(|f| *f != FlowFilter::default())
            .collect()
    }
}

fn apply_source_namespaces(ns: &[String], f: &mut FlowFilter) {
    if f.source_pod.is_empty() && f.source_service.is_empty() {
        if only_all_namespaces(ns) {
            return;
        }
        f.source_pod = vec![String::new()];
    }
    f.source_pod = add_namespaces(&f.source_pod, ns);
    f.source_service = add_namespaces(&f.source_service, ns);
}

fn apply_destination_namespaces(ns: &[String], f: &mut FlowFilter) {
    if f.destination_pod.is_empty() && f.destination_service.is_empty() {
        if only_all_namespaces(ns) {
            return;
        }
        f.destination_pod = vec![String::new()];
    }
    f.destination_pod = add_namespaces(&f.destination_pod, ns);
    f.destination_service = add_namespaces(&f.destination_service, ns);
}

/// `-A` alone: Hubble would send the pod filter `/`, which servers reject
/// (neither namespace nor name); "any namespace" with no pod named is no
/// restriction at all, so nothing is added. With `--pod web`, `-A` gives
/// `/web` exactly as in Hubble.
fn only_all_namespaces(ns: &[String]) -> bool {
    ns.iter().all(String::is_empty)
}

/// Prefixes names that have no namespace with each namespace.
fn add_namespaces(names: &[String], ns: &[String]) -> Vec<String> {
    if ns.is_empty() || names.is_empty() {
        return names.to_vec();
    }
    let mut out = Vec::new();
    for name in names {
        if name.contains('/') {
            out.push(name.clone());
            continue;
        }
        for n in ns {
            out.push(format!("{n}/{name}"));
        }
    }
    out
}

/// Builds the white- and blacklist from filter flags given in command-line
/// order.
#[derive(Debug, Default)]
pub struct FilterBuilder {
    whitelist: Option<Tracker>,
    blacklist: Option<Tracker>,
    blacklisting: bool,
}

impl FilterBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one flag (its long name, `from-ip`) with its value (`true`
    /// for flags without one).
    pub fn set(&mut self, flag: &str, value: &str) -> Result<(), UsageError> {
        if flag == "not" {
            if self.blacklisting {
                return Err(UsageError("consecutive --not statements".into()));
            }
            self.blacklisting = true;
            return Ok(());
        }
        let tracker = if std::mem::take(&mut self.blacklisting) {
            self.blacklist.get_or_insert_with(Tracker::default)
        } else {
            self.whitelist.get_or_insert_with(Tracker::default)
        };
        if !tracker.changed.iter().any(|c| c == flag) {
            tracker.changed.push(flag.to_string());
        }
        tracker.check_conflicts()?;
        set_one(tracker, flag, value)?;
        tracker.check_namespace_conflicts()
    }

    /// The whitelist and blacklist.
    pub fn build(self) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), UsageError> {
        if self.blacklisting {
            return Err(UsageError("trailing --not found in the arguments".into()));
        }
        Ok((
            self.whitelist
                .map(Tracker::flow_filters)
                .unwrap_or_default(),
            self.blacklist
                .map(Tracker::flow_filters)
                .unwrap_or_default(),
        ))
    }
}

fn set_one(t: &mut Tracker, flag: &str, value: &str) -> Result<(), UsageError> {
    let v = value.to_string();
    match flag {
        "ip" => {
            t.apply_left(|f| f.source_ip.push(v.clone()));
            t.apply_right(|f| f.destination_ip.push(v));
        }
        "from-ip" => t.apply(|f| f.source_ip.push(v.clone())),
        "to-ip" => t.apply(|f| f.destination_ip.push(v.clone())),
        "snat-ip" => t.apply(|f| f.source_ip_xlated.push(v.clone())),
        "pod" => {
            t.apply_left(|f| f.source_pod.push(v.clone()));
            t.apply_right(|f| f.destination_pod.push(v));
        }
        "from-pod" => t.apply(|f| f.source_pod.push(v.clone())),
        "to-pod" => t.apply(|f| f.destination_pod.push(v.clone())),
        "service" => {
            t.apply_left(|f| f.source_service.push(v.clone()));
            t.apply_right(|f| f.destination_service.push(v));
        }
        "from-service" => t.apply(|f| f.source_service.push(v.clone())),
        "to-service" => t.apply(|f| f.destination_service.push(v.clone())),
        "namespace" => t.ns.push(v),
        "from-namespace" => t.src_ns.push(v),
        "to-namespace" => t.dst_ns.push(v),
        "all-namespaces" => t.ns.push(String::new()),
        "from-all-namespaces" => t.src_ns.push(String::new()),
        "to-all-namespaces" => t.dst_ns.push(String::new()),
        "label" => {
            t.apply_left(|f| f.source_label.push(v.clone()));
            t.apply_right(|f| f.destination_label.push(v));
        }
        "from-label" => t.apply(|f| f.source_label.push(v.clone())),
        "to-label" => t.apply(|f| f.destination_label.push(v.clone())),
        "identity" => {
            let id = reparse(flag, value, parse_identity)?;
            t.apply_left(|f| f.source_identity.push(id));
            t.apply_right(|f| f.destination_identity.push(id));
        }
        "from-identity" => {
            let id = reparse(flag, value, parse_identity)?;
            t.apply(|f| f.source_identity.push(id));
        }
        "to-identity" => {
            let id = reparse(flag, value, parse_identity)?;
            t.apply(|f| f.destination_identity.push(id));
        }
        "port" => {
            let port = reparse(flag, value, parse_port)?;
            t.apply_left(|f| f.source_port.push(port.clone()));
            t.apply_right(|f| f.destination_port.push(port));
        }
        "from-port" => {
            let port = reparse(flag, value, parse_port)?;
            t.apply(|f| f.source_port.push(port.clone()));
        }
        "to-port" => {
            let port = reparse(flag, value, parse_port)?;
            t.apply(|f| f.destination_port.push(port.clone()));
        }
        "protocol" => {
            let protocol = reparse(flag, value, parse_protocol)?;
            t.apply(|f| f.protocol.push(protocol.clone()));
        }
        "tcp-flags" => {
            let flags = reparse(flag, value, parse_tcp_flags)?;
            t.apply(|f| f.tcp_flags.push(flags));
        }
        "verdict" => {
            let verdict = reparse(flag, value, parse_verdict)?;
            t.apply(|f| f.verdict.push(verdict as i32));
        }
        "drop-reason-desc" => {
            let reason = reparse(flag, value, parse_drop_reason)?;
            t.apply(|f| f.drop_reason_desc.push(reason));
        }
        "type" => {
            let event_type = reparse(flag, value, parse_event_type)?;
            t.apply(|f| f.event_type.push(event_type));
        }
        "traffic-direction" => {
            let direction = reparse(flag, value, parse_traffic_direction)?;
            t.apply(|f| f.traffic_direction.push(direction as i32));
        }
        "node-name" => t.apply(|f| f.node_name.push(v.clone())),
        "node-label" => t.apply(|f| f.node_labels.push(v.clone())),
        "uuid" => t.apply(|f| f.uuid.push(v.clone())),
        "workload" => {
            let workload = parse_workload(value);
            t.apply_left(|f| f.source_workload.push(workload.clone()));
            t.apply_right(|f| f.destination_workload.push(workload));
        }
        "from-workload" => {
            let workload = parse_workload(value);
            t.apply(|f| f.source_workload.push(workload.clone()));
        }
        "to-workload" => {
            let workload = parse_workload(value);
            t.apply(|f| f.destination_workload.push(workload.clone()));
        }
        "cluster" => {
            let cluster = reparse(flag, value, parse_cluster)?;
            t.apply_left(|f| f.source_cluster_name.push(cluster.clone()));
            t.apply_right(|f| f.destination_cluster_name.push(cluster));
        }
        "from-cluster" => {
            let cluster = reparse(flag, value, parse_cluster)?;
            t.apply(|f| f.source_cluster_name.push(cluster.clone()));
        }
        "to-cluster" => {
            let cluster = reparse(flag, value, parse_cluster)?;
            t.apply(|f| f.destination_cluster_name.push(cluster.clone()));
        }
        "fqdn" => {
            t.apply_left(|f| f.source_fqdn.push(v.clone()));
            t.apply_right(|f| f.destination_fqdn.push(v));
        }
        "from-fqdn" => t.apply(|f| f.source_fqdn.push(v.clone())),
        "to-fqdn" => t.apply(|f| f.destination_fqdn.push(v.clone())),
        "http-status" => {
            let status = reparse(flag, value, parse_http_status)?;
            t.apply(|f| f.http_status_code.push(status.clone()));
        }
        "http-method" => t.apply(|f| f.http_method.push(v.clone())),
        "http-path" => t.apply(|f| f.http_path.push(v.clone())),
        "http-url" => t.apply(|f| f.http_url.push(v.clone())),
        "interface" => t.apply(|f| {
            f.interface.push(NetworkInterface {
                index: 0,
                name: v.clone(),
            })
        }),
        "ip-version" => {
            let version = reparse(flag, value, parse_ip_version)?;
            t.apply(|f| f.ip_version.push(version as i32));
        }
        other => return Err(UsageError(format!("unknown filter flag --{other}"))),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Words, as a user types them (the web view's filter box)
// ---------------------------------------------------------------------------

/// The filter flags' long names, each with the short name it has in flowctl, if any, and
/// whether it takes a value.
pub const FLAGS: &[(&str, Option<char>, bool)] = &[
    ("not", None, false),
    ("ip", None, true),
    ("from-ip", None, true),
    ("to-ip", None, true),
    ("snat-ip", None, true),
    ("pod", None, true),
    ("from-pod", None, true),
    ("to-pod", None, true),
    ("service", None, true),
    ("from-service", None, true),
    ("to-service", None, true),
    ("namespace", Some('n'), true),
    ("from-namespace", None, true),
    ("to-namespace", None, true),
    ("all-namespaces", Some('A'), false),
    ("from-all-namespaces", None, false),
    ("to-all-namespaces", None, false),
    ("label", Some('l'), true),
    ("from-label", None, true),
    ("to-label", None, true),
    ("identity", None, true),
    ("from-identity", None, true),
    ("to-identity", None, true),
    ("port", None, true),
    ("from-port", None, true),
    ("to-port", None, true),
    ("protocol", None, true),
    ("tcp-flags", None, true),
    ("verdict", None, true),
    ("drop-reason-desc", None, true),
    ("type", Some('t'), true),
    ("traffic-direction", None, true),
    ("node-name", None, true),
    ("node-label", None, true),
    ("interface", None, true),
    ("ip-version", None, true),
    ("uuid", None, true),
    ("workload", None, true),
    ("from-workload", None, true),
    ("to-workload", None, true),
    ("cluster", None, true),
    ("from-cluster", None, true),
    ("to-cluster", None, true),
    ("fqdn", None, true),
    ("from-fqdn", None, true),
    ("to-fqdn", None, true),
    ("http-status", None, true),
    ("http-method", None, true),
    ("http-path", None, true),
    ("http-url", None, true),
];

/// Splits a line into words as a shell would for these flags: blanks separate words, single
/// or double quotes keep blanks inside one (`-l 'app in (web, db)'`).
pub fn split_words(line: &str) -> Result<Vec<String>, UsageError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err(UsageError("unterminated quote in the filter".into()));
    }
    words.extend(word);
    Ok(words)
}

/// The white- and blacklist for filter flags given as words (`--ip 1.0.0.1 --not --port 53`,
/// `--verdict=DROPPED`, `-n default`), built exactly as `flowctl observe` builds them from the
/// same flags: the same builder, the same value checks.
pub fn parse_args<S: AsRef<str>>(
    words: &[S],
) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), UsageError> {
    let mut builder = FilterBuilder::new();
    let mut words = words.iter().map(AsRef::as_ref);
    while let Some(word) = words.next() {
        let (name, inline) = if let Some(long) = word.strip_prefix("--") {
            match long.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (long.to_string(), None),
            }
        } else if let Some(short) = word.strip_prefix('-')
            && let Some(c) = short.chars().next()
            && let Some((name, _, _)) = FLAGS.iter().find(|(_, s, _)| *s == Some(c))
        {
            // `-n default`, `-ndefault`, `-n=default`.
            let rest = &short[c.len_utf8()..];
            let rest = rest.strip_prefix('=').unwrap_or(rest);
            (
                name.to_string(),
                (!rest.is_empty()).then(|| rest.to_string()),
            )
        } else {
            return Err(UsageError(format!(
                "unexpected {word:?}: expected a filter flag such as --ip, --pod, --port, --verdict"
            )));
        };
        let Some((_, _, takes_value)) = FLAGS.iter().find(|(n, _, _)| *n == name) else {
            return Err(UsageError(format!("unknown filter flag --{name}")));
        };
        let value = match (takes_value, inline) {
            (false, None) => "true".to_string(),
            (false, Some(_)) => {
                return Err(UsageError(format!("--{name} takes no value")));
            }
            (true, Some(value)) => value,
            (true, None) => match words.next() {
                Some(value) => value.to_string(),
                None => return Err(UsageError(format!("--{name} needs a value"))),
            },
        };
        // The builder re-checks the values it converts; addresses it takes as they are, so
        // they are checked here, as clap checks them for flowctl.
        if matches!(name.as_str(), "ip" | "from-ip" | "to-ip" | "snat-ip") {
            reparse(&name, &value, parse_ip_or_cidr)?;
        }
        builder.set(&name, &value)?;
    }
    builder.build()
}

#[cfg(test)]
mod words_tests {
    use super::*;

    #[test]
    fn quotes_keep_blanks() {
        assert_eq!(
            split_words(r#"--ip 1.0.0.1  -l 'app in (web, db)' --pod "default/pod a""#).unwrap(),
            [
                "--ip",
                "1.0.0.1",
                "-l",
                "app in (web, db)",
                "--pod",
                "default/pod a"
            ]
        );
        assert!(split_words("--pod 'x").is_err());
    }

    #[test]
    fn forms_of_a_value() {
        let a = parse_args(&["--verdict", "DROPPED", "-n", "default"]).unwrap();
        let b = parse_args(&["--verdict=DROPPED", "-ndefault"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.0[0].verdict, [Verdict::Dropped as i32]);
    }

    #[test]
    fn errors_name_the_flag() {
        let err = |w: &[&str]| parse_args(w).unwrap_err().0;
        assert!(err(&["--ip", "1.0.0.300"]).contains("--ip"));
        assert!(err(&["--bogus", "1"]).contains("--bogus"));
        assert!(err(&["--port"]).contains("needs a value"));
        assert!(err(&["--not"]).contains("trailing --not"));
        assert!(err(&["--ip", "1.0.0.1", "--from-ip", "1.0.0.2"]).contains("cannot be combined"));
        assert!(err(&["1.0.0.1"]).contains("expected a filter flag"));
    }
}
