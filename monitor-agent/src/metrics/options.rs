//! Hubble's `--metrics` option syntax, parsed once at start.
//!
//! Each entry is `name[:option;option…]`, an option is `key=value` (or a bare `key` for the
//! switches of `flows-to-world`), exactly as Cilium's `--hubble-metrics` takes them:
//!
//! ```text
//! flow
//! drop:sourceContext=namespace;destinationContext=identity
//! flows-to-world:any-drop;port;sourceContext=pod|namespace
//! tcp:labelsContext=source_namespace,destination_namespace
//! ```
//!
//! A context is a list of alternatives separated by `|`: the first one that gives a non-empty
//! value for a flow is used (`pod|reserved-identity` names pods and, for anything else, its
//! reserved identity). Unlike Hubble, an unknown metric, option, context or label is an error
//! naming it rather than being ignored: a typo would otherwise silently give a dashboard without
//! the labels it expects.

use std::fmt;

/// Why a `--metrics` entry is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsOptionError {
    /// The metric name is not one we serve.
    #[error("unknown metric {name:?} (known: {known})")]
    UnknownMetric {
        /// The name given.
        name: String,
        /// The names we know, for the message.
        known: String,
    },
    /// The same metric was given twice (its series would clash).
    #[error("metric {0:?} is given twice")]
    Duplicate(String),
    /// An option this metric does not have.
    #[error("metric {metric:?}: unknown option {option:?}")]
    UnknownOption {
        /// The metric.
        metric: String,
        /// The option key.
        option: String,
    },
    /// An option without its value.
    #[error("metric {metric:?}: option {option:?} needs a value")]
    MissingValue {
        /// The metric.
        metric: String,
        /// The option key.
        option: String,
    },
    /// A context identifier we do not know.
    #[error(
        "metric {metric:?}: unknown context {value:?} in {option} (known: identity, namespace, pod, pod-short, pod-name, dns, ip, reserved-identity, workload-name, app)"
    )]
    UnknownContext {
        /// The metric.
        metric: String,
        /// The option (`sourceContext`, …).
        option: String,
        /// The identifier given.
        value: String,
    },
    /// A `labelsContext` label we do not know.
    #[error("metric {metric:?}: unknown labelsContext label {value:?} (known: {known})")]
    UnknownLabel {
        /// The metric.
        metric: String,
        /// The label given.
        value: String,
        /// The labels we know, for the message.
        known: String,
    },
}

/// The flow metrics we serve, with Hubble's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// `hubble_flows_processed_total{protocol,type,subtype,verdict}`.
    Flow,
    /// `hubble_drop_total{reason,protocol}`.
    Drop,
    /// `hubble_tcp_flags_total{flag,family}`.
    Tcp,
    /// `hubble_port_distribution_total{protocol,port}`.
    PortDistribution,
    /// `hubble_icmp_total{family,type}`.
    Icmp,
    /// `hubble_flows_to_world_total{protocol,verdict[,port]}`.
    FlowsToWorld,
    /// `hubble_dns_queries_total`, `hubble_dns_responses_total{rcode,qtypes,ips_returned}`,
    /// `hubble_dns_response_types_total{type,qtypes}`.
    Dns,
    /// `hubble_http_requests_total{method,protocol,reporter}`,
    /// `hubble_http_responses_total{method,protocol,status,reporter}`,
    /// `hubble_http_request_duration_seconds{method,reporter}`.
    Http,
}

impl MetricKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [MetricKind; 8] = [
        MetricKind::Flow,
        MetricKind::Drop,
        MetricKind::Tcp,
        MetricKind::PortDistribution,
        MetricKind::Icmp,
        MetricKind::FlowsToWorld,
        MetricKind::Dns,
        MetricKind::Http,
    ];

    /// The name used in `--metrics`.
    pub fn option_name(self) -> &'static str {
        match self {
            MetricKind::Flow => "flow",
            MetricKind::Drop => "drop",
            MetricKind::Tcp => "tcp",
            MetricKind::PortDistribution => "port-distribution",
            MetricKind::Icmp => "icmp",
            MetricKind::FlowsToWorld => "flows-to-world",
            MetricKind::Dns => "dns",
            MetricKind::Http => "http",
        }
    }

    fn parse(name: &str) -> Result<Self, MetricsOptionError> {
        Self::ALL
            .into_iter()
            .find(|k| k.option_name() == name)
            .ok_or_else(|| MetricsOptionError::UnknownMetric {
                name: name.to_owned(),
                known: Self::ALL.map(MetricKind::option_name).join(", "),
            })
    }
}

/// How an endpoint is named in the `source` / `destination` label (Hubble's context identifiers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextId {
    /// All the endpoint's labels, comma-separated.
    Identity,
    /// Its namespace.
    Namespace,
    /// `namespace/pod`.
    Pod,
    /// `namespace/` and the pod name without its replica-set and pod suffixes.
    PodShort,
    /// The pod name alone.
    PodName,
    /// The DNS names of the flow (`source_names` / `destination_names`).
    Dns,
    /// The IP address (opt-in: one series per address).
    Ip,
    /// The endpoint's `reserved:` label (`reserved:kube-apiserver` first).
    ReservedIdentity,
    /// The name of its first workload.
    WorkloadName,
    /// Its app label (`app.kubernetes.io/name`, `k8s-app` or `app`).
    App,
}

impl ContextId {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "identity" => ContextId::Identity,
            "namespace" => ContextId::Namespace,
            "pod" => ContextId::Pod,
            "pod-short" => ContextId::PodShort,
            "pod-name" => ContextId::PodName,
            "dns" => ContextId::Dns,
            "ip" => ContextId::Ip,
            "reserved-identity" => ContextId::ReservedIdentity,
            "workload-name" => ContextId::WorkloadName,
            "app" => ContextId::App,
            _ => return None,
        })
    }
}

/// The labels `labelsContext` may add, in the order Hubble puts them.
pub const CONTEXT_LABELS: [&str; 11] = [
    "source_ip",
    "source_pod",
    "source_namespace",
    "source_workload",
    "source_app",
    "destination_ip",
    "destination_pod",
    "destination_namespace",
    "destination_workload",
    "destination_app",
    "traffic_direction",
];

/// Which endpoint labels a metric carries (Hubble's `ContextOptions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextOptions {
    /// `sourceContext`: alternatives for the `source` label.
    pub source: Vec<ContextId>,
    /// `sourceEgressContext`: used instead of `source` for egress flows.
    pub source_egress: Vec<ContextId>,
    /// `sourceIngressContext`: used instead of `source` for ingress flows.
    pub source_ingress: Vec<ContextId>,
    /// `destinationContext`: alternatives for the `destination` label.
    pub destination: Vec<ContextId>,
    /// `destinationEgressContext`.
    pub destination_egress: Vec<ContextId>,
    /// `destinationIngressContext`.
    pub destination_ingress: Vec<ContextId>,
    /// `labelsContext`: indices into [`CONTEXT_LABELS`], ascending.
    pub labels: Vec<usize>,
}

impl ContextOptions {
    /// True when the metric has a `source` label.
    pub fn has_source(&self) -> bool {
        !(self.source.is_empty() && self.source_egress.is_empty() && self.source_ingress.is_empty())
    }

    /// True when the metric has a `destination` label.
    pub fn has_destination(&self) -> bool {
        !(self.destination.is_empty()
            && self.destination_egress.is_empty()
            && self.destination_ingress.is_empty())
    }

    /// True when no endpoint label is added.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && !self.has_source() && !self.has_destination()
    }

    /// Names of the labels added, in the order their values come from `values`.
    pub fn label_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.labels.iter().map(|&i| CONTEXT_LABELS[i]).collect();
        if self.has_source() {
            names.push("source");
        }
        if self.has_destination() {
            names.push("destination");
        }
        names
    }
}

/// One enabled metric with its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricSpec {
    /// Which metric.
    pub kind: MetricKind,
    /// Endpoint labels.
    pub context: ContextOptions,
    /// `flows-to-world:any-drop`: count every drop, not only policy denials.
    pub any_drop: bool,
    /// `flows-to-world:port`: add a `port` label (destination port).
    pub port: bool,
    /// `flows-to-world:syn-only`: count only TCP SYNs (one per connection attempt).
    pub syn_only: bool,
    /// `dns:query`: add the query name as a label (one series per name).
    pub query: bool,
    /// `dns:ignoreAAAA`: leave out DNS flows whose only question is AAAA.
    pub ignore_aaaa: bool,
}

impl fmt::Display for MetricSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.option_name())
    }
}

/// The default `--metrics`: every metric we have; flows and drops with the namespaces (and for
/// flows the pods) at both ends, which the dashboard's "top namespaces / pods" panels use. The
/// other metrics keep label sets from closed sets.
pub const DEFAULT_METRICS: [&str; 8] = [
    "flow:labelsContext=source_namespace,source_pod,destination_namespace,destination_pod",
    "drop:labelsContext=source_namespace,destination_namespace",
    "tcp",
    "port-distribution",
    "icmp",
    "flows-to-world",
    "dns",
    "http",
];

/// Parses every `--metrics` value. A value may hold several entries separated by whitespace, as
/// in Cilium's configuration (`"drop tcp flow:sourceContext=namespace"`).
pub fn parse_metrics(values: &[String]) -> Result<Vec<MetricSpec>, MetricsOptionError> {
    let mut specs: Vec<MetricSpec> = Vec::new();
    for entry in values.iter().flat_map(|v| v.split_whitespace()) {
        let spec = parse_one(entry)?;
        if specs.iter().any(|s| s.kind == spec.kind) {
            return Err(MetricsOptionError::Duplicate(
                spec.kind.option_name().to_owned(),
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

fn parse_one(entry: &str) -> Result<MetricSpec, MetricsOptionError> {
    let (name, options) = entry.split_once(':').unwrap_or((entry, ""));
    let kind = MetricKind::parse(name)?;
    let mut spec = MetricSpec {
        kind,
        context: ContextOptions::default(),
        any_drop: false,
        port: false,
        syn_only: false,
        query: false,
        ignore_aaaa: false,
    };
    for option in options.split(';').filter(|o| !o.is_empty()) {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option, None),
        };
        let required = || {
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| MetricsOptionError::MissingValue {
                    metric: name.to_owned(),
                    option: key.to_owned(),
                })
        };
        let ctx = &mut spec.context;
        let target = match key.to_ascii_lowercase().as_str() {
            "sourcecontext" => Some(&mut ctx.source),
            "sourceegresscontext" => Some(&mut ctx.source_egress),
            "sourceingresscontext" => Some(&mut ctx.source_ingress),
            "destinationcontext" => Some(&mut ctx.destination),
            "destinationegresscontext" => Some(&mut ctx.destination_egress),
            "destinationingresscontext" => Some(&mut ctx.destination_ingress),
            _ => None,
        };
        if let Some(target) = target {
            *target = parse_context(name, key, required()?)?;
            continue;
        }
        match (key.to_ascii_lowercase().as_str(), kind) {
            ("labelscontext", _) => ctx.labels = parse_labels(name, required()?)?,
            ("any-drop", MetricKind::FlowsToWorld) if value.is_none() => spec.any_drop = true,
            ("port", MetricKind::FlowsToWorld) if value.is_none() => spec.port = true,
            ("syn-only", MetricKind::FlowsToWorld) if value.is_none() => spec.syn_only = true,
            ("query", MetricKind::Dns) if value.is_none() => spec.query = true,
            ("ignoreaaaa", MetricKind::Dns) if value.is_none() => spec.ignore_aaaa = true,
            _ => {
                return Err(MetricsOptionError::UnknownOption {
                    metric: name.to_owned(),
                    option: option.to_owned(),
                });
            }
        }
    }
    Ok(spec)
}

fn parse_context(
    metric: &str,
    option: &str,
    value: &str,
) -> Result<Vec<ContextId>, MetricsOptionError> {
    value
        .split('|')
        .filter(|v| !v.is_empty())
        .map(|v| {
            ContextId::parse(v).ok_or_else(|| MetricsOptionError::UnknownContext {
                metric: metric.to_owned(),
                option: option.to_owned(),
                value: v.to_owned(),
            })
        })
        .collect()
}

fn parse_labels(metric: &str, value: &str) -> Result<Vec<usize>, MetricsOptionError> {
    let mut out = Vec::new();
    for label in value.split(',').filter(|v| !v.is_empty()) {
        let i = CONTEXT_LABELS
            .iter()
            .position(|l| *l == label)
            .ok_or_else(|| MetricsOptionError::UnknownLabel {
                metric: metric.to_owned(),
                value: label.to_owned(),
                known: CONTEXT_LABELS.join(", "),
            })?;
        out.push(i);
    }
    // Hubble orders these labels by its list, not by the option: keep the same series names.
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Vec<MetricSpec>, MetricsOptionError> {
        parse_metrics(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn hubble_examples() {
        let specs = parse(&[
            "drop:sourceContext=namespace;destinationContext=identity",
            "flows-to-world:any-drop;port;sourceContext=pod|reserved-identity tcp",
        ])
        .unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].kind, MetricKind::Drop);
        assert_eq!(specs[0].context.source, vec![ContextId::Namespace]);
        assert_eq!(specs[0].context.destination, vec![ContextId::Identity]);
        assert_eq!(
            specs[0].context.label_names(),
            vec!["source", "destination"]
        );
        assert!(specs[1].any_drop && specs[1].port && !specs[1].syn_only);
        assert_eq!(
            specs[1].context.source,
            vec![ContextId::Pod, ContextId::ReservedIdentity]
        );
        assert!(!specs[1].context.has_destination());
        assert_eq!(specs[2].kind, MetricKind::Tcp);
        assert!(specs[2].context.is_empty());
        let dns = parse(&["dns:query;ignoreAAAA;sourceContext=pod", "http"]).unwrap();
        assert!(dns[0].query && dns[0].ignore_aaaa);
        assert_eq!(dns[1].kind, MetricKind::Http);
    }

    #[test]
    fn labels_context_in_hubble_order() {
        let specs =
            parse(&["flow:labelsContext=traffic_direction,source_namespace,source_namespace"])
                .unwrap();
        assert_eq!(
            specs[0].context.label_names(),
            vec!["source_namespace", "traffic_direction"]
        );
    }

    #[test]
    fn defaults_parse() {
        let specs = parse(&DEFAULT_METRICS).unwrap();
        assert_eq!(
            specs.iter().map(|s| s.kind).collect::<Vec<_>>(),
            MetricKind::ALL
        );
    }

    #[test]
    fn bad_input_names_the_culprit() {
        let err = |v: &str| parse(&[v]).unwrap_err().to_string();
        assert!(err("dorp").contains("unknown metric \"dorp\""));
        assert!(err("drop:sourceContext=namespce").contains("unknown context \"namespce\""));
        assert!(err("drop:sourcecontext").contains("needs a value"));
        assert!(err("drop:colour=red").contains("unknown option \"colour=red\""));
        // flows-to-world's switches belong to it alone.
        assert!(err("drop:port").contains("unknown option \"port\""));
        assert!(err("tcp:labelsContext=source_pod,pod").contains("unknown labelsContext label"));
        assert_eq!(
            parse(&["drop", "drop:sourceContext=pod"]).unwrap_err(),
            MetricsOptionError::Duplicate("drop".into())
        );
    }
}
