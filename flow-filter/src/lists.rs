//! Lists of FlowFilters written as JSON, as Hubble's `--hubble-export-allowlist` takes them:
//! the agent's `--export-allowlist`/`--export-denylist` and the `--otlp-allowlist`/
//! `--otlp-denylist` of the agent and the relay.

use flowscope_proto::flow::FlowFilter;

/// Parses JSON FlowFilters: one object, several separated by commas, or an array.
pub fn parse_filters(s: &str) -> Result<Vec<FlowFilter>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let text = if s.starts_with('[') {
        s.to_owned()
    } else {
        format!("[{s}]")
    };
    flowscope_proto::json::from_json::<Vec<FlowFilter>>(&text)
        .map_err(|e| format!("expected JSON FlowFilters like {{\"verdict\":[\"DROPPED\"]}}: {e}"))
}

/// One allow or deny list option's value (a newtype: clap gives `Vec<Vec<_>>` a meaning of its
/// own).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilterList(pub Vec<FlowFilter>);

/// [`parse_filters`] for clap.
pub fn parse_filter_list(s: &str) -> Result<FilterList, String> {
    parse_filters(s).map(FilterList)
}

/// The filters of every occurrence of a repeated option, in order.
pub fn flatten(lists: &[FilterList]) -> Vec<FlowFilter> {
    lists.iter().flat_map(|l| l.0.iter().cloned()).collect()
}
