//! `flowctl observe --input-file`: flows read from Hubble JSON lines instead of a server, selected
//! the way `hubble observe --input-file` selects them (cilium `hubble/cmd/observe/
//! io_reader_observer.go`).
//!
//! A line is one event in protojson: a GetFlowsResponse (`flowctl observe -o json`, `hubble
//! observe -o json`) or an ExportEvent (the agent's and Cilium's export files), which share their
//! field names. Flows, lost events and node status events are kept; agent and debug events are
//! not flows and are passed over. A line that does not parse is reported on stderr and skipped,
//! as Hubble does, so that one damaged line does not hide the rest of a file.
//!
//! Selection, in file order (the file is not sorted by time):
//! - `--since`/`--until` against each line's `time` (the flow's own time when the line has none);
//! - the allow and deny filters, with the server's matcher (flowscope-filter); lost events and
//!   node status events have no flow to match, so they pass only when there is no allow filter;
//! - then `--first N` (stop after N), `--last N` (the last N kept, printed at the end of input),
//!   or everything (no `--first`/`--last`, or `--all`): unlike a server, a file has no default of
//!   20.

use std::collections::VecDeque;
use std::io::{self, BufRead};

use anyhow::Context as _;
use flowscope_filter::FlowFilterSet;
use flowscope_proto::observer::get_flows_response::ResponseTypes;
use flowscope_proto::observer::{ExportEvent, GetFlowsRequest, GetFlowsResponse, export_event};
use flowscope_proto::wkt::Timestamp;

use crate::filters::UsageError;

const WRITING: &str = "writing to stdout";

/// Parse failures reported one by one; past this many only their number is given at the end.
const MAX_LINE_WARNINGS: usize = 10;

/// Which events of the input are printed: the request's filters, time window and count.
pub struct Selection {
    filters: FlowFilterSet,
    has_allow: bool,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    count: Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    All,
    First(u64),
    Last(u64),
}

impl Selection {
    /// The selection a GetFlows request asks for, applied to a file.
    pub fn new(req: &GetFlowsRequest) -> Result<Self, UsageError> {
        let filters = FlowFilterSet::compile(&req.whitelist, &req.blacklist)
            .map_err(|e| UsageError(format!("invalid filter: {e}")))?;
        let count = match (req.first, req.number) {
            (_, 0) | (_, u64::MAX) => Count::All,
            (true, n) => Count::First(n),
            (false, n) => Count::Last(n),
        };
        Ok(Self {
            filters,
            has_allow: !req.whitelist.is_empty(),
            since: req.since,
            until: req.until,
            count,
        })
    }

    fn keeps(&self, res: &GetFlowsResponse) -> bool {
        let flow_time = match &res.response_types {
            Some(ResponseTypes::Flow(f)) => f.time,
            _ => None,
        };
        let time = res.time.or(flow_time);
        // No time at all counts as the epoch, as in Hubble (Go's zero timestamp).
        let at = time.map_or((0, 0), |t| (t.seconds, t.nanos));
        if self.since.is_some_and(|s| (s.seconds, s.nanos) > at) {
            return false;
        }
        if self.until.is_some_and(|u| (u.seconds, u.nanos) < at) {
            return false;
        }
        match &res.response_types {
            Some(ResponseTypes::Flow(flow)) => self.filters.matches(flow),
            _ => !self.has_allow,
        }
    }
}

/// What reading the input found, besides the events printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Lines that were not Hubble JSON events.
    pub unparsed: usize,
    /// Agent and debug events passed over.
    pub not_flows: usize,
}

/// One line as a GetFlowsResponse: `Ok(None)` for a blank line or an event that is not a flow,
/// a lost event or a node status event.
pub fn parse_line(line: &str) -> Result<Option<GetFlowsResponse>, serde_json::Error> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    // ExportEvent's JSON is GetFlowsResponse's plus agent_event and debug_event: one parser
    // reads both kinds of file.
    let ev: ExportEvent = flowscope_proto::json::from_json(line)?;
    let response_types = match ev.response_types {
        Some(export_event::ResponseTypes::Flow(f)) => ResponseTypes::Flow(f),
        Some(export_event::ResponseTypes::LostEvents(l)) => ResponseTypes::LostEvents(l),
        Some(export_event::ResponseTypes::NodeStatus(n)) => ResponseTypes::NodeStatus(n),
        Some(
            export_event::ResponseTypes::AgentEvent(_) | export_event::ResponseTypes::DebugEvent(_),
        )
        | None => return Ok(None),
    };
    Ok(Some(GetFlowsResponse {
        response_types: Some(response_types),
        node_name: ev.node_name,
        time: ev.time,
    }))
}

/// Reads `input` (named `name` in warnings) to its end, or until `--first` is satisfied, and
/// hands each selected event to `emit` in input order; `warn` gets one line per problem.
pub fn read(
    input: impl BufRead,
    name: &str,
    selection: &Selection,
    mut warn: impl FnMut(&str),
    mut emit: impl FnMut(&GetFlowsResponse) -> io::Result<()>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut last: VecDeque<GetFlowsResponse> = VecDeque::new();
    let mut emitted = 0u64;
    // Lines are read as bytes: a line that is not UTF-8 is one bad line, not the end of input.
    for (index, line) in input.split(b'\n').enumerate() {
        let line = line.map_err(|e| anyhow::Error::new(e).context(format!("reading {name}")))?;
        let parsed = std::str::from_utf8(&line)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_line(text).map_err(|e| e.to_string()));
        let res = match parsed {
            Ok(Some(res)) => res,
            Ok(None) => {
                if !line.iter().all(u8::is_ascii_whitespace) {
                    report.not_flows += 1;
                }
                continue;
            }
            Err(e) => {
                report.unparsed += 1;
                if report.unparsed <= MAX_LINE_WARNINGS {
                    warn(&format!(
                        "{name}:{}: skipped, not a Hubble JSON event: {e}",
                        index + 1
                    ));
                }
                continue;
            }
        };
        if !selection.keeps(&res) {
            continue;
        }
        match selection.count {
            Count::Last(n) => {
                if last.len() as u64 == n {
                    last.pop_front();
                }
                last.push_back(res);
            }
            Count::First(n) => {
                emit(&res).context(WRITING)?;
                emitted += 1;
                if emitted == n {
                    break;
                }
            }
            Count::All => emit(&res).context(WRITING)?,
        }
    }
    for res in &last {
        emit(res).context(WRITING)?;
    }
    if report.unparsed > MAX_LINE_WARNINGS {
        warn(&format!(
            "{name}: {} lines skipped in all, not Hubble JSON events",
            report.unparsed
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::flow::{Flow, FlowFilter};

    fn line(i: i64, node: &str) -> String {
        let res = GetFlowsResponse {
            response_types: Some(ResponseTypes::Flow(Flow {
                time: Some(Timestamp::new(1_000 + i, 0)),
                node_name: node.into(),
                uuid: format!("u-{i}"),
                ..Default::default()
            })),
            node_name: node.into(),
            time: Some(Timestamp::new(1_000 + i, 0)),
        };
        flowscope_proto::json::to_json(&res).unwrap()
    }

    fn select(input: &str, req: GetFlowsRequest) -> (Vec<String>, Vec<String>, Report) {
        let selection = Selection::new(&req).unwrap();
        let mut warnings = Vec::new();
        let mut uuids = Vec::new();
        let report = read(
            input.as_bytes(),
            "in.json",
            &selection,
            |w| warnings.push(w.to_string()),
            |res| {
                uuids.push(match &res.response_types {
                    Some(ResponseTypes::Flow(f)) => f.uuid.clone(),
                    Some(ResponseTypes::LostEvents(_)) => "lost".into(),
                    _ => "other".into(),
                });
                Ok(())
            },
        )
        .unwrap();
        (uuids, warnings, report)
    }

    fn input(n: i64) -> String {
        (0..n)
            .map(|i| line(i, if i % 2 == 0 { "even" } else { "odd" }) + "\n")
            .collect()
    }

    #[test]
    fn first_last_and_all_count_selected_events() {
        let all = |n: u64, first: bool| GetFlowsRequest {
            number: n,
            first,
            ..Default::default()
        };
        assert_eq!(select(&input(5), all(0, false)).0.len(), 5);
        assert_eq!(select(&input(5), all(u64::MAX, false)).0.len(), 5);
        assert_eq!(select(&input(5), all(2, true)).0, ["u-0", "u-1"]);
        assert_eq!(select(&input(5), all(2, false)).0, ["u-3", "u-4"]);
        assert_eq!(select(&input(5), all(9, false)).0.len(), 5);
        // Counted after filtering: the last two flows of node "even".
        let req = GetFlowsRequest {
            number: 2,
            whitelist: vec![FlowFilter {
                node_name: vec!["even".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(select(&input(6), req).0, ["u-2", "u-4"]);
    }

    #[test]
    fn since_and_until_are_inclusive() {
        let req = GetFlowsRequest {
            since: Some(Timestamp::new(1_001, 0)),
            until: Some(Timestamp::new(1_003, 0)),
            ..Default::default()
        };
        assert_eq!(select(&input(6), req).0, ["u-1", "u-2", "u-3"]);
    }

    #[test]
    fn bad_lines_are_reported_and_skipped() {
        let text = format!(
            "{}\nnot json\n\n{{\"flow\":{{\"time\":\"yesterday\"}}}}\n\u{0}\u{ff}\n{}\n",
            line(0, "n"),
            line(1, "n")
        );
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(b"\xff\xfe\n");
        let selection = Selection::new(&GetFlowsRequest::default()).unwrap();
        let mut warnings = Vec::new();
        let mut n = 0;
        let report = read(
            bytes.as_slice(),
            "in.json",
            &selection,
            |w| warnings.push(w.to_string()),
            |_| {
                n += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(report.unparsed, 4, "{warnings:?}");
        assert!(warnings[0].starts_with("in.json:2: skipped, not a Hubble JSON event: "));
        assert!(warnings[1].starts_with("in.json:4: "), "{warnings:?}");
        assert!(warnings[3].starts_with("in.json:7: "), "{warnings:?}");
    }

    #[test]
    fn many_bad_lines_are_summed_up() {
        let text = "x\n".repeat(25);
        let (_, warnings, report) = select(&text, GetFlowsRequest::default());
        assert_eq!(report.unparsed, 25);
        assert_eq!(warnings.len(), MAX_LINE_WARNINGS + 1);
        assert_eq!(
            warnings.last().unwrap(),
            "in.json: 25 lines skipped in all, not Hubble JSON events"
        );
    }

    #[test]
    fn export_lines_lost_events_and_agent_events() {
        let text = concat!(
            r#"{"lost_events":{"source":"PERF_EVENT_RING_BUFFER","num_events_lost":"7"},"node_name":"n","time":"2025-11-26T11:00:00Z"}"#,
            "\n",
            r#"{"agent_event":{"type":"AGENT_STARTED"},"node_name":"n","time":"2025-11-26T11:00:00Z"}"#,
            "\n",
        );
        let (got, warnings, report) = select(text, GetFlowsRequest::default());
        assert_eq!(got, ["lost"]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(report.not_flows, 1);
        // With an allow filter a lost event has no flow to match; a deny filter keeps it.
        let allow = GetFlowsRequest {
            whitelist: vec![FlowFilter {
                node_name: vec!["n".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(select(text, allow).0.is_empty());
        let deny = GetFlowsRequest {
            blacklist: vec![FlowFilter {
                node_name: vec!["n".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(select(text, deny).0, ["lost"]);
    }

    #[test]
    fn invalid_filters_are_usage_errors() {
        let req = GetFlowsRequest {
            whitelist: vec![FlowFilter {
                source_ip: vec!["10.0.0.300".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = Selection::new(&req).err().unwrap();
        assert!(
            err.0.starts_with("invalid filter: invalid source_ip"),
            "{err}"
        );
    }
}
