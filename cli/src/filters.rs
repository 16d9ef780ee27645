//! `flowctl observe` filter flags → the GetFlowsRequest white- and blacklists,
//! with the rules of Hubble's `observe` (cilium `hubble/cmd/observe/flows_filter.go`):
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
//! Clap parses and validates each value; the order of the flags matters for
//! `--not`, so [`from_matches`] replays them from clap's indices. The builder and the value
//! parsers live in `flowscope_filter::flags`, shared with the web view.

use clap::ArgMatches;
use flowscope_proto::flow::FlowFilter;

pub use flowscope_filter::flags::*;

/// The clap ids of the filter flags, in no particular order. Each id is the
/// flag's long name with `_` for `-`.
pub const FILTER_ARGS: &[&str] = &[
    "not",
    "ip",
    "from_ip",
    "to_ip",
    "snat_ip",
    "pod",
    "from_pod",
    "to_pod",
    "service",
    "from_service",
    "to_service",
    "namespace",
    "from_namespace",
    "to_namespace",
    "all_namespaces",
    "from_all_namespaces",
    "to_all_namespaces",
    "label",
    "from_label",
    "to_label",
    "identity",
    "from_identity",
    "to_identity",
    "port",
    "from_port",
    "to_port",
    "protocol",
    "tcp_flags",
    "verdict",
    "drop_reason_desc",
    "type",
    "traffic_direction",
    "node_name",
    "node_label",
    "interface",
    "ip_version",
    "uuid",
    "workload",
    "from_workload",
    "to_workload",
    "cluster",
    "from_cluster",
    "to_cluster",
    "fqdn",
    "from_fqdn",
    "to_fqdn",
    "http_status",
    "http_method",
    "http_path",
    "http_url",
];

/// The lists for the filter flags in `matches` (the `observe` subcommand's),
/// replayed in command-line order.
pub fn from_matches(
    matches: &ArgMatches,
) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), UsageError> {
    let mut given: Vec<(usize, String, String)> = Vec::new();
    for id in FILTER_ARGS {
        let (Some(indices), Some(values)) = (matches.indices_of(id), matches.get_raw(id)) else {
            continue;
        };
        let flag = id.replace('_', "-");
        for (index, value) in indices.zip(values) {
            given.push((index, flag.clone(), value.to_string_lossy().into_owned()));
        }
    }
    given.sort_by_key(|(index, _, _)| *index);
    let mut builder = FilterBuilder::new();
    for (_, flag, value) in &given {
        builder.set(flag, value)?;
    }
    builder.build()
}

/// FlowFilters given as JSON (`--allowlist`/`--denylist`); one value may hold
/// several, one after the other, as Hubble accepts.
pub fn parse_raw_filters(flag: &str, values: &[String]) -> Result<Vec<FlowFilter>, UsageError> {
    let mut out = Vec::new();
    for text in values {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<FlowFilter>();
        for filter in stream {
            let filter = filter.map_err(|e| {
                UsageError(format!(
                    "invalid --{flag} {text:?}: {e} (expected a JSON FlowFilter such as \
                     '{{\"source_ip\":[\"10.0.0.1\"],\"verdict\":[\"DROPPED\"]}}')"
                ))
            })?;
            out.push(filter);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
