//! Printing GetFlows responses the way `hubble observe` prints them.
//!
//! One [`Printer`] per command run. It owns the two writers (stdout for flows
//! and lost events, stderr for node status events, as Hubble does), the
//! options, and the little state some formats need (the dict separator, the
//! table rows that are aligned only once all are known).
//!
//! The pieces every text format shares (host names, identities, the event
//! type column, the verdict, the summary, timestamps, colors) live here; each
//! format's module only arranges them. Every string that comes from the
//! server goes through [`clean`] first, so that a pod name cannot smuggle
//! terminal escape sequences or break a line.

mod compact;
mod dict;
mod json;
mod monitor;
mod table;

pub use table::tabwrite;

use std::borrow::Cow;
use std::io::{self, Write};

use chrono::{DateTime, Utc};
use flowscope_proto::flow::{self, Flow, layer4, layer7};
use flowscope_proto::flowscope::v1::FlowExtension;
use flowscope_proto::observer::GetFlowsResponse;
use flowscope_proto::observer::get_flows_response::ResponseTypes;
use flowscope_proto::relay::{NodeState, NodeStatusEvent};
use flowscope_proto::wkt::Timestamp;

/// Output formats of `flowctl observe -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One line per flow, like `hubble observe` (the default).
    Compact,
    /// Each flow as KEY: VALUE lines, records separated by dashes.
    Dict,
    /// Tab-aligned columns, printed once all flows have arrived.
    Table,
    /// One GetFlowsResponse per line, protojson with the proto's field names.
    Json,
    /// Same as json (Hubble's name for it).
    Jsonpb,
    /// `cilium monitor` lines: `-> stack flow 0x… identity …->… state new …`.
    Monitor,
}

impl Format {
    /// The name `-o` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Compact => "compact",
            Self::Dict => "dict",
            Self::Table => "table",
            Self::Json => "json",
            Self::Jsonpb => "jsonpb",
            Self::Monitor => "monitor",
        }
    }
}

/// How timestamps are printed (`--time-format`), with Hubble's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
pub enum TimeFormat {
    /// `Nov 26 11:00:01.123` (the default).
    #[default]
    #[value(name = "StampMilli")]
    #[serde(rename = "StampMilli")]
    StampMilli,
    /// `2025-11-26`.
    #[value(name = "YearMonthDay")]
    #[serde(rename = "YearMonthDay")]
    YearMonthDay,
    /// `2025-11-26T11Z`.
    #[value(name = "YearMonthDayHour")]
    #[serde(rename = "YearMonthDayHour")]
    YearMonthDayHour,
    /// `2025-11-26T11:00Z`.
    #[value(name = "YearMonthDayHourMinute")]
    #[serde(rename = "YearMonthDayHourMinute")]
    YearMonthDayHourMinute,
    /// `2025-11-26T11:00:01Z`.
    #[value(name = "RFC3339")]
    #[serde(rename = "RFC3339")]
    Rfc3339,
    /// `2025-11-26T11:00:01.123Z` (trailing zeros dropped).
    #[value(name = "RFC3339Milli")]
    #[serde(rename = "RFC3339Milli")]
    Rfc3339Milli,
    /// `2025-11-26T11:00:01.123456Z` (trailing zeros dropped).
    #[value(name = "RFC3339Micro")]
    #[serde(rename = "RFC3339Micro")]
    Rfc3339Micro,
    /// `2025-11-26T11:00:01.123456789Z` (trailing zeros dropped).
    #[value(name = "RFC3339Nano")]
    #[serde(rename = "RFC3339Nano")]
    Rfc3339Nano,
    /// `Wed, 26 Nov 2025 11:00:01 +0000`.
    #[value(name = "RFC1123Z")]
    #[serde(rename = "RFC1123Z")]
    Rfc1123z,
}

impl TimeFormat {
    /// The timestamp as Hubble prints it (always UTC), or `N/A` when it is
    /// missing or out of range.
    pub fn format(self, ts: Option<&Timestamp>) -> String {
        let Some(dt) = ts.and_then(to_datetime) else {
            return "N/A".into();
        };
        // Go truncates fractions when formatting; chrono's `%.3f` does too,
        // and `fraction` below truncates by construction.
        let nanos = dt.timestamp_subsec_nanos();
        match self {
            Self::StampMilli => dt.format("%b %e %H:%M:%S%.3f").to_string(),
            Self::YearMonthDay => dt.format("%Y-%m-%d").to_string(),
            Self::YearMonthDayHour => dt.format("%Y-%m-%dT%HZ").to_string(),
            Self::YearMonthDayHourMinute => dt.format("%Y-%m-%dT%H:%MZ").to_string(),
            Self::Rfc3339 => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            Self::Rfc3339Milli => rfc3339_frac(&dt, fraction(nanos, 3)),
            Self::Rfc3339Micro => rfc3339_frac(&dt, fraction(nanos, 6)),
            Self::Rfc3339Nano => rfc3339_frac(&dt, fraction(nanos, 9)),
            Self::Rfc1123z => dt.format("%a, %d %b %Y %H:%M:%S +0000").to_string(),
        }
    }
}

/// Go's `.999…` layouts: `digits` fractional digits, trailing zeros (and the
/// dot, when nothing is left) removed.
fn fraction(nanos: u32, digits: u32) -> String {
    let value = nanos / 10u32.pow(9 - digits);
    let text = format!("{value:0width$}", width = digits as usize);
    let text = text.trim_end_matches('0');
    if text.is_empty() {
        String::new()
    } else {
        format!(".{text}")
    }
}

fn rfc3339_frac(dt: &DateTime<Utc>, frac: String) -> String {
    format!("{}{frac}Z", dt.format("%Y-%m-%dT%H:%M:%S"))
}

/// A valid protobuf timestamp (years 0001..9999, nanos in range) as UTC.
fn to_datetime(ts: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    (-62_135_596_800..=253_402_300_799)
        .contains(&ts.seconds)
        .then(|| DateTime::from_timestamp(ts.seconds, nanos))
        .flatten()
}

/// What the printer does, beyond the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The output format.
    pub format: Format,
    /// How timestamps are printed.
    pub time_format: TimeFormat,
    /// `--print-node-name`.
    pub node_name: bool,
    /// `--numeric`: addresses instead of pod/service/DNS names (Hubble), and
    /// numeric identities in the monitor format (`cilium monitor -n`).
    pub numeric: bool,
    /// ANSI colors (compact and dict only; Hubble never colors tables).
    pub color: bool,
    /// `--debug`: also print informational node status events
    /// (NODE_CONNECTED, NODE_GONE), which Hubble hides otherwise.
    pub debug: bool,
    /// `--print-extensions`: keep flowscope's `Flow.extensions` in JSON output. Off, the JSON
    /// holds only what Hubble's own tools can read.
    pub extensions: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            format: Format::Compact,
            time_format: TimeFormat::StampMilli,
            node_name: false,
            numeric: false,
            color: false,
            debug: false,
            extensions: false,
        }
    }
}

/// Prints GetFlows responses to `out` (flows, lost events) and `err` (node
/// status events).
pub struct Printer<W: Write, E: Write> {
    opts: Options,
    out: W,
    err: E,
    colors: Colorer,
    /// Records printed so far (dict separators, table header).
    line: usize,
    /// Table rows waiting for [`Printer::finish`] (the header included).
    rows: Vec<Vec<String>>,
}

impl<W: Write, E: Write> Printer<W, E> {
    /// A printer writing to `out` and `err`.
    pub fn new(opts: Options, out: W, err: E) -> Self {
        let color = opts.color && matches!(opts.format, Format::Compact | Format::Dict);
        Self {
            opts,
            out,
            err,
            colors: Colorer { on: color },
            line: 0,
            rows: Vec::new(),
        }
    }

    /// Prints one response. An empty response (no oneof member) prints
    /// nothing, as in Hubble.
    pub fn write(&mut self, res: &GetFlowsResponse) -> io::Result<()> {
        match &res.response_types {
            Some(ResponseTypes::Flow(flow)) => self.write_flow(res, flow),
            Some(ResponseTypes::LostEvents(lost)) => self.write_lost(res, lost),
            Some(ResponseTypes::NodeStatus(status)) => self.write_node_status(res, status),
            None => Ok(()),
        }
    }

    /// Pushes what has been printed so far to the terminal (follow mode
    /// calls this after every response so that lines show up at once).
    pub fn flush(&mut self) -> io::Result<()> {
        self.err.flush()?;
        self.out.flush()
    }

    /// Prints what was held back (the table) and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.rows.is_empty() {
            let text = tabwrite(&std::mem::take(&mut self.rows));
            self.out.write_all(text.as_bytes())?;
        }
        self.flush()
    }

    fn write_flow(&mut self, res: &GetFlowsResponse, flow: &Flow) -> io::Result<()> {
        match self.opts.format {
            Format::Compact => {
                let line = compact::flow_line(self, flow);
                writeln!(self.out, "{line}")?;
            }
            Format::Dict => {
                if self.line != 0 {
                    writeln!(self.out, "{DICT_SEPARATOR}")?;
                }
                let text = dict::flow_record(self, flow);
                self.out.write_all(text.as_bytes())?;
            }
            Format::Table => {
                if self.line == 0 {
                    self.rows.push(table::header(self.opts.node_name));
                }
                let row = table::flow_row(self, flow);
                self.rows.push(row);
            }
            Format::Json | Format::Jsonpb => {
                json::write_line(&mut self.out, res, self.opts.extensions)?;
            }
            Format::Monitor => {
                let line = monitor::flow_line(self, flow);
                if self.opts.node_name {
                    // `cilium monitor` runs on one node; through the relay
                    // the node is worth a prefix.
                    write!(self.out, "[{}] ", clean(&flow.node_name))?;
                }
                writeln!(self.out, "{line}")?;
            }
        }
        self.line += 1;
        Ok(())
    }

    fn write_lost(&mut self, res: &GetFlowsResponse, lost: &flow::LostEvent) -> io::Result<()> {
        let source = enum_name(
            flow::LostEventSource::try_from(lost.source).ok(),
            lost.source,
            |s| s.as_str_name(),
        );
        let cpu = lost.cpu.unwrap_or(0);
        let count = lost.num_events_lost;
        match self.opts.format {
            Format::Compact => writeln!(self.out, "EVENTS LOST: {source} CPU({cpu}) {count}")?,
            Format::Dict => {
                if self.line != 0 {
                    writeln!(self.out, "{DICT_SEPARATOR}")?;
                }
                writeln!(self.out, "  TIMESTAMP: ")?;
                if self.opts.node_name {
                    writeln!(self.out, "       NODE: ")?;
                }
                write!(
                    self.out,
                    "     SOURCE: {source}\n       TYPE: EVENTS LOST\n    VERDICT: \n    SUMMARY: CPU({cpu}) - {count}\n"
                )?;
            }
            Format::Table => {
                if self.line == 0 {
                    self.rows.push(table::header(self.opts.node_name));
                }
                let mut row = vec![String::new()];
                if self.opts.node_name {
                    row.push(String::new());
                }
                row.extend([
                    source,
                    String::new(),
                    "EVENTS LOST".into(),
                    String::new(),
                    format!("CPU({cpu}) - {count}"),
                ]);
                self.rows.push(row);
            }
            Format::Json | Format::Jsonpb => {
                json::write_line(&mut self.out, res, self.opts.extensions)?;
            }
            // `cilium monitor`'s own words for lost perf events.
            Format::Monitor => writeln!(self.out, "CPU {cpu:02}: Lost {count} events ({source})")?,
        }
        self.line += 1;
        Ok(())
    }

    fn write_node_status(
        &mut self,
        res: &GetFlowsResponse,
        status: &NodeStatusEvent,
    ) -> io::Result<()> {
        let state = NodeState::try_from(status.state_change).ok();
        // Like Hubble: without --debug, only the news that something is wrong.
        let important = matches!(
            state,
            Some(NodeState::NodeError | NodeState::NodeUnavailable)
        );
        if !important && !self.opts.debug {
            return Ok(());
        }
        let names: Vec<String> = status
            .node_names
            .iter()
            .map(|n| clean(n).into_owned())
            .collect();
        let node_names = join_with_cut_off(&names, ", ", NODE_NAMES_CUT_OFF);
        let time = self.opts.time_format.format(res.time.as_ref());
        match self.opts.format {
            Format::Json | Format::Jsonpb => {
                json::write_line(&mut self.err, res, self.opts.extensions)
            }
            Format::Dict => {
                if self.line != 0 {
                    writeln!(self.err, "{DICT_SEPARATOR}")?;
                } else {
                    self.line += 1;
                }
                let message = if status.message.is_empty() {
                    "N/A".to_string()
                } else {
                    go_quote(&status.message)
                };
                let state_name = enum_name(state, status.state_change, |s| s.as_str_name());
                write!(
                    self.err,
                    "  TIMESTAMP: {time}\n      STATE: {state_name}\n      NODES: {node_names}\n    MESSAGE: {message}\n"
                )
            }
            Format::Compact | Format::Table | Format::Monitor => {
                let prefix = format!("{time} [{}]", clean(&res.node_name));
                let n = names.len();
                let msg = match state {
                    Some(NodeState::NodeConnected) => {
                        format!("{prefix}: Receiving flows from {n} nodes: {node_names}")
                    }
                    Some(NodeState::NodeUnavailable) => {
                        format!("{prefix}: {n} nodes are unavailable: {node_names}")
                    }
                    Some(NodeState::NodeGone) => {
                        format!("{prefix}: {n} nodes removed from cluster: {node_names}")
                    }
                    Some(NodeState::NodeError) => format!(
                        "{prefix}: Error {} on {n} nodes: {node_names}",
                        go_quote(&status.message)
                    ),
                    _ => format!(
                        "{prefix}: unknown node status event: state {} nodes [{}] message {}",
                        status.state_change,
                        names.join(" "),
                        go_quote(&status.message)
                    ),
                };
                writeln!(self.err, "{msg}")
            }
        }
    }
}

const DICT_SEPARATOR: &str = "------------";

/// Hubble shortens long node lists in status events to about this many bytes.
const NODE_NAMES_CUT_OFF: usize = 50;

/// Joins `elems`, leaving out those past `target_len` bytes (at least one is
/// always printed) and saying how many were left out: `a, b (and 3 more)`.
fn join_with_cut_off(elems: &[String], sep: &str, target_len: usize) -> String {
    let mut len = 0;
    let mut end = elems.len();
    for (i, elem) in elems.iter().enumerate() {
        len += elem.len() + sep.len();
        if len > target_len && i > 0 {
            end = i;
            break;
        }
    }
    let joined = elems[..end].join(sep);
    match elems.len() - end {
        0 => joined,
        omitted => format!("{joined} (and {omitted} more)"),
    }
}

/// A string quoted as Go's `%q` does for printable text.
fn go_quote(s: &str) -> String {
    format!("{:?}", clean(s))
}

/// The enum's proto name when the number has one, the number otherwise (what
/// Go's `String()` prints for an unknown value).
fn enum_name<E>(known: Option<E>, value: i32, name: impl Fn(&E) -> &'static str) -> String {
    known.map_or_else(|| value.to_string(), |e| name(&e).to_string())
}

/// Replaces control characters (ESC, CR, LF, TAB, …) in server-provided text
/// so that it can neither drive the terminal nor break a line or a column.
pub(crate) fn clean(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

// ---------------------------------------------------------------------------
// Colors (Hubble uses fatih/color: host cyan, identity magenta, port yellow,
// verdicts green / red / yellow).
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Colorer {
    on: bool,
}

impl Colorer {
    fn paint(self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn host(self, text: &str) -> String {
        self.paint("36", text)
    }

    fn identity(self, text: &str) -> String {
        self.paint("35", text)
    }

    fn port(self, text: &str) -> String {
        self.paint("33", text)
    }

    fn green(self, text: &str) -> String {
        self.paint("32", text)
    }

    fn red(self, text: &str) -> String {
        self.paint("31", text)
    }

    fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }
}

// ---------------------------------------------------------------------------
// The pieces of a flow line, as Hubble's printer computes them.
// ---------------------------------------------------------------------------

/// Monitor message types (Cilium's `pkg/monitor/api`).
pub(crate) mod msg_type {
    /// A packet dropped by the datapath (or, for us, by the kernel).
    pub const DROP: i32 = 1;
    /// A debug capture.
    pub const CAPTURE: i32 = 3;
    /// A packet seen at an observation point.
    pub const TRACE: i32 = 4;
    /// A policy decision.
    pub const POLICY_VERDICT: i32 = 5;
    /// A socket-level translation.
    pub const TRACE_SOCK: i32 = 7;
}

pub(crate) use flowscope_proto::names::trace_point_name;

pub(crate) use flowscope_proto::names::reserved_identity_name;

/// flowscope's extension of the flow, when present and readable.
pub(crate) fn extension(flow: &Flow) -> Option<FlowExtension> {
    flow.extensions.as_ref()?.to_msg::<FlowExtension>().ok()?
}

/// Source and destination ports for TCP, UDP and SCTP; empty otherwise.
fn ports(flow: &Flow) -> (String, String) {
    match flow.l4.as_ref().and_then(|l4| l4.ports()) {
        Some((src, dst)) => (src.to_string(), dst.to_string()),
        None => (String::new(), String::new()),
    }
}

/// `host:port`, with brackets around an IPv6 host (Go's `net.JoinHostPort`).
pub(crate) fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Go's `path.Join` for the two-element case Hubble uses (`ns/pod`).
fn path_join(ns: &str, name: &str) -> String {
    match (ns.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (false, true) => ns.to_string(),
        (false, false) => format!("{ns}/{name}"),
    }
}

impl<W: Write, E: Write> Printer<W, E> {
    /// `ns/pod:port`, `ns/service:port`, `a.example.com:port` or `ip:port`,
    /// as Hubble's `Hostname`; only the address with `--numeric`.
    fn hostname(
        &self,
        ip: &str,
        port: &str,
        ns: &str,
        pod: &str,
        svc: &str,
        names: &[String],
    ) -> String {
        let mut host = clean(ip).into_owned();
        if !self.opts.numeric {
            if !pod.is_empty() {
                host = path_join(&clean(ns), &clean(pod));
            } else if !svc.is_empty() {
                host = path_join(&clean(ns), &clean(svc));
            } else if !names.is_empty() {
                host = names.iter().map(|n| clean(n)).collect::<Vec<_>>().join(",");
            }
        }
        if !port.is_empty() && port != "0" {
            join_host_port(&host, &self.colors.port(port))
        } else {
            host
        }
    }

    /// Source and destination as printed (before colors are applied to the
    /// whole host), Hubble's `GetHostNames`.
    fn host_names(&self, flow: &Flow) -> (String, String) {
        let Some(ip) = &flow.ip else {
            return match &flow.ethernet {
                Some(eth) => (
                    self.colors.host(&clean(&eth.source)),
                    self.colors.host(&clean(&eth.destination)),
                ),
                None => (String::new(), String::new()),
            };
        };
        let (mut src_ns, mut src_pod, mut src_svc) = (String::new(), String::new(), String::new());
        let (mut dst_ns, mut dst_pod, mut dst_svc) = (String::new(), String::new(), String::new());
        if let Some(ep) = &flow.source {
            src_ns.clone_from(&ep.namespace);
            src_pod.clone_from(&ep.pod_name);
        }
        if let Some(ep) = &flow.destination {
            dst_ns.clone_from(&ep.namespace);
            dst_pod.clone_from(&ep.pod_name);
        }
        // Hubble lets the service's namespace win over the pod's.
        if let Some(svc) = &flow.source_service {
            src_ns.clone_from(&svc.namespace);
            src_svc.clone_from(&svc.name);
        }
        if let Some(svc) = &flow.destination_service {
            dst_ns.clone_from(&svc.namespace);
            dst_svc.clone_from(&svc.name);
        }
        let (src_port, dst_port) = ports(flow);
        let src = self.hostname(
            &ip.source,
            &src_port,
            &src_ns,
            &src_pod,
            &src_svc,
            &flow.source_names,
        );
        let dst = self.hostname(
            &ip.destination,
            &dst_port,
            &dst_ns,
            &dst_pod,
            &dst_svc,
            &flow.destination_names,
        );
        (self.colors.host(&src), self.colors.host(&dst))
    }

    /// `(world)` for reserved identities, `(ID:42837)` for the others.
    fn identity(&self, id: u32) -> String {
        match reserved_identity_name(id) {
            Some(name) => self.colors.identity(&format!("({name})")),
            None => self.colors.identity(&format!("(ID:{id})")),
        }
    }

    /// The translated source, `198.51.100.10:41708`, when the packet was
    /// SNATed (flowscope's addition to dict and table output).
    fn snat_source(&self, flow: &Flow) -> Option<String> {
        let xlated = flow.ip.as_ref().map(|ip| ip.source_xlated.as_str())?;
        if xlated.is_empty() {
            return None;
        }
        let port = extension(flow).map_or(0, |ext| ext.source_xlated_port);
        let xlated = clean(xlated);
        Some(if port == 0 {
            xlated.into_owned()
        } else {
            join_host_port(&xlated, &port.to_string())
        })
    }

    /// Where the kernel sent a DNATed connection, `10.244.0.77:8080`, for a
    /// flow that carries the address before translation (a Service's
    /// ClusterIP): `(backend, true)` when that address is the flow's source (a
    /// reply), `(backend, false)` when it is its destination. None on the
    /// backend's side, where the packet already carries the backend.
    fn dnat_backend(&self, flow: &Flow) -> Option<(String, bool)> {
        let ext = extension(flow)?;
        let ip = flow.ip.as_ref()?;
        let frontend = ext.ct_tuple.as_ref()?.destination_ip.clone();
        if ext.destination_xlated.is_empty() || frontend == ext.destination_xlated {
            return None;
        }
        let on_source = if ip.destination == frontend {
            false
        } else if ip.source == frontend {
            true
        } else {
            return None;
        };
        let backend = clean(&ext.destination_xlated).into_owned();
        let backend = match ext.destination_xlated_port {
            0 => backend,
            port => join_host_port(&backend, &port.to_string()),
        };
        Some((backend, on_source))
    }

    /// The verdict, with Hubble's words for policy verdict events.
    fn verdict(&self, flow: &Flow) -> String {
        // A connection that got no reply is no packet and has no verdict: say what it is.
        if is_unanswered(flow) {
            return self.colors.yellow("UNANSWERED");
        }
        let verdict = flow::Verdict::try_from(flow.verdict).ok();
        let mut msg = enum_name(verdict, flow.verdict, |v| v.as_str_name());
        let policy = event_type(flow) == Some(msg_type::POLICY_VERDICT);
        match verdict {
            Some(flow::Verdict::Forwarded | flow::Verdict::Redirected) => {
                if policy {
                    msg = "ALLOWED".into();
                }
                self.colors.green(&msg)
            }
            Some(flow::Verdict::Dropped | flow::Verdict::Error) => {
                if policy {
                    msg = "DENIED".into();
                }
                self.colors.red(&msg)
            }
            Some(flow::Verdict::Audit) => {
                if policy {
                    msg = "AUDITED".into();
                }
                self.colors.yellow(&msg)
            }
            Some(flow::Verdict::Traced | flow::Verdict::Translated) => self.colors.yellow(&msg),
            _ => msg,
        }
    }

    /// The summary: Hubble's `Summary` string with the IP trace id before
    /// it and the authentication type after it.
    #[expect(
        deprecated,
        reason = "Hubble still fills and prints Summary; nothing replaces it"
    )]
    fn summary(&self, flow: &Flow) -> String {
        let mut out = String::new();
        if let Some(trace) = &flow.ip_trace_id
            && trace.trace_id > 0
        {
            out.push_str(&format!("IP Trace ID: {}; ", trace.trace_id));
        }
        out.push_str(&clean(&flow.summary));
        match flow::AuthType::try_from(flow.auth_type) {
            Ok(flow::AuthType::Disabled) => {}
            Ok(flow::AuthType::TestAlwaysFail) => {
                out.push_str("; ");
                out.push_str(&self.colors.red("TEST_ALWAYS_FAIL"));
            }
            Ok(auth) => {
                out.push_str("; ");
                out.push_str(&self.colors.green(auth.as_str_name()));
            }
            Err(_) => out.push_str(&format!("; {}", flow.auth_type)),
        }
        out
    }

    fn time(&self, flow: &Flow) -> String {
        self.opts.time_format.format(flow.time.as_ref())
    }
}

/// Is this the agent's report of a connection that got no reply (not a packet)?
pub(crate) fn is_unanswered(flow: &Flow) -> bool {
    extension(flow).is_some_and(|e| e.unanswered)
}

fn event_type(flow: &Flow) -> Option<i32> {
    flow.event_type.as_ref().map(|t| t.r#type)
}

/// Why a packet was dropped, best name first: the kernel's reason from our
/// extension (`NETFILTER_DROP`), Hubble's DropReason (`POLICY_DENIED`), the
/// datapath's number.
pub(crate) fn drop_reason(flow: &Flow) -> String {
    if let Some(ext) = extension(flow)
        && !ext.kernel_drop_reason_name.is_empty()
    {
        return clean(&ext.kernel_drop_reason_name).into_owned();
    }
    if flow.drop_reason_desc != 0 {
        return enum_name(
            flow::DropReason::try_from(flow.drop_reason_desc).ok(),
            flow.drop_reason_desc,
            |r| r.as_str_name(),
        );
    }
    let sub = flow.event_type.as_ref().map_or(0, |t| t.sub_type);
    // A flowscope agent's drop whose kernel reason Hubble has no word for.
    if sub != 0 && sub != flowscope_proto::drop_reason::UNMAPPED_DROP_SUB_TYPE {
        sub.to_string()
    } else {
        "UNKNOWN".into()
    }
}

/// The TYPE column: `to-network`, `http-request`, a drop reason, … (Hubble's
/// `GetFlowType`).
pub(crate) fn flow_type(flow: &Flow) -> String {
    if let Some(l7) = &flow.l7 {
        let mut l7_type = flow::L7FlowType::try_from(l7.r#type)
            .map_or_else(|_| l7.r#type.to_string(), |t| t.as_str_name().to_string())
            .to_lowercase();
        let protocol = match &l7.record {
            Some(layer7::Record::Http(_)) => "http",
            Some(layer7::Record::Dns(dns)) => {
                l7_type.push(' ');
                l7_type.push_str(&clean(&dns.observation_source));
                "dns"
            }
            #[expect(deprecated, reason = "Hubble still prints Kafka records")]
            Some(layer7::Record::Kafka(_)) => "kafka",
            None => "l7",
        };
        return format!("{protocol}-{l7_type}");
    }
    if is_unanswered(flow) {
        return "no-reply".into();
    }
    let Some(et) = &flow.event_type else {
        return "UNKNOWN".into();
    };
    match et.r#type {
        msg_type::TRACE => {
            trace_point_name(et.sub_type).map_or_else(|| et.sub_type.to_string(), String::from)
        }
        msg_type::DROP => drop_reason(flow),
        msg_type::POLICY_VERDICT => {
            let direction = flow::TrafficDirection::try_from(flow.traffic_direction).map_or_else(
                |_| flow.traffic_direction.to_string(),
                |d| d.as_str_name().to_string(),
            );
            format!(
                "policy-verdict:{} {direction}",
                policy_match_type(flow.policy_match_type)
            )
        }
        msg_type::CAPTURE => enum_name(
            flow::DebugCapturePoint::try_from(flow.debug_capture_point).ok(),
            flow.debug_capture_point,
            |p| p.as_str_name(),
        ),
        msg_type::TRACE_SOCK => match flow::SocketTranslationPoint::try_from(flow.sock_xlate_point)
        {
            Ok(flow::SocketTranslationPoint::SockXlatePointPostDirectionFwd) => {
                "post-xlate-fwd".into()
            }
            Ok(flow::SocketTranslationPoint::SockXlatePointPostDirectionRev) => {
                "post-xlate-rev".into()
            }
            Ok(flow::SocketTranslationPoint::SockXlatePointPreDirectionFwd) => {
                "pre-xlate-fwd".into()
            }
            Ok(flow::SocketTranslationPoint::SockXlatePointPreDirectionRev) => {
                "pre-xlate-rev".into()
            }
            Ok(other) => other.as_str_name().into(),
            Err(_) => flow.sock_xlate_point.to_string(),
        },
        _ => "UNKNOWN".into(),
    }
}

/// Cilium's policy match type names.
fn policy_match_type(value: u32) -> String {
    match value {
        0 => "none".into(),
        1 => "L3-Only".into(),
        2 => "L3-L4".into(),
        3 => "L4-Only".into(),
        4 => "all".into(),
        5 => "cidr".into(),
        6 => "L7/HTTP".into(),
        other => other.to_string(),
    }
}

/// The connection in `cilium monitor` words: `10.0.0.1:1234 -> 1.0.0.1:80
/// tcp SYN` or `10.0.0.1 -> 1.0.0.1 EchoRequest`.
pub(crate) fn connection_summary(flow: &Flow, src_ip: &str, dst_ip: &str) -> String {
    let l4 = flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref());
    let with_ports = |sp: u32, dp: u32, proto: &str| {
        format!(
            "{} -> {} {proto}",
            join_host_port(src_ip, &sp.to_string()),
            join_host_port(dst_ip, &dp.to_string())
        )
    };
    match l4 {
        Some(layer4::Protocol::Tcp(tcp)) => {
            // `cilium monitor` names only these four flags, in this order.
            let flags = tcp.flags.unwrap_or_default();
            let names: Vec<&str> = [
                (flags.syn, "SYN"),
                (flags.ack, "ACK"),
                (flags.rst, "RST"),
                (flags.fin, "FIN"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            format!(
                "{} {}",
                with_ports(tcp.source_port, tcp.destination_port, "tcp"),
                names.join(", ")
            )
        }
        Some(layer4::Protocol::Udp(udp)) => {
            with_ports(udp.source_port, udp.destination_port, "udp")
        }
        Some(layer4::Protocol::Sctp(sctp)) => {
            with_ports(sctp.source_port, sctp.destination_port, "sctp")
        }
        Some(layer4::Protocol::IcmPv4(icmp)) => {
            format!(
                "{src_ip} -> {dst_ip} {}",
                icmpv4_type_code(icmp.r#type, icmp.code)
            )
        }
        Some(layer4::Protocol::IcmPv6(icmp)) => {
            format!(
                "{src_ip} -> {dst_ip} {}",
                icmpv6_type_code(icmp.r#type, icmp.code)
            )
        }
        _ if !src_ip.is_empty() || !dst_ip.is_empty() => format!("{src_ip} -> {dst_ip}"),
        _ => "[unknown]".into(),
    }
}

/// gopacket's words for ICMPv4 types and codes.
fn icmpv4_type_code(ty: u32, code: u32) -> String {
    let (name, codes): (&str, &[&str]) = match ty {
        0 => ("EchoReply", &[]),
        3 => (
            "DestinationUnreachable",
            &[
                "Net",
                "Host",
                "Protocol",
                "Port",
                "FragmentationNeeded",
                "SourceRoutingFailed",
                "NetUnknown",
                "HostUnknown",
                "SourceIsolated",
                "NetAdminProhibited",
                "HostAdminProhibited",
                "NetTOS",
                "HostTOS",
                "CommAdminProhibited",
                "HostPrecedence",
                "PrecedenceCutoff",
            ],
        ),
        4 => ("SourceQuench", &[]),
        5 => ("Redirect", &["Net", "Host", "TOS+Net", "TOS+Host"]),
        8 => ("EchoRequest", &[]),
        9 => ("RouterAdvertisement", &[]),
        10 => ("RouterSolicitation", &[]),
        11 => (
            "TimeExceeded",
            &["TTLExceeded", "FragmentReassemblyTimeExceeded"],
        ),
        12 => (
            "ParameterProblem",
            &["PointerIndicatesError", "MissingOption", "BadLength"],
        ),
        13 => ("TimestampRequest", &[]),
        14 => ("TimestampReply", &[]),
        15 => ("InfoRequest", &[]),
        16 => ("InfoReply", &[]),
        17 => ("AddressMaskRequest", &[]),
        18 => ("AddressMaskReply", &[]),
        _ => return format!("{ty}({code})"),
    };
    type_code(name, codes, code)
}

/// gopacket's words for ICMPv6 types and codes.
fn icmpv6_type_code(ty: u32, code: u32) -> String {
    let (name, codes): (&str, &[&str]) = match ty {
        1 => (
            "DestinationUnreachable",
            &[
                "NoRouteToDst",
                "AdminProhibited",
                "BeyondScopeOfSrc",
                "AddressUnreachable",
                "PortUnreachable",
                "SrcAddressFailedPolicy",
                "RejectRouteToDst",
            ],
        ),
        2 => ("PacketTooBig", &[]),
        3 => (
            "TimeExceeded",
            &["HopLimitExceeded", "FragmentReassemblyTimeExceeded"],
        ),
        4 => (
            "ParameterProblem",
            &[
                "ErroneousHeaderField",
                "UnrecognizedNextHeader",
                "UnrecognizedIPv6Option",
            ],
        ),
        128 => ("EchoRequest", &[]),
        129 => ("EchoReply", &[]),
        133 => ("RouterSolicitation", &[]),
        134 => ("RouterAdvertisement", &[]),
        135 => ("NeighborSolicitation", &[]),
        136 => ("NeighborAdvertisement", &[]),
        137 => ("Redirect", &[]),
        _ => return format!("{ty}({code})"),
    };
    type_code(name, codes, code)
}

fn type_code(name: &str, codes: &[&str], code: u32) -> String {
    if codes.is_empty() {
        return if code == 0 {
            name.to_string()
        } else {
            format!("{name}(Code: {code})")
        };
    }
    match usize::try_from(code).ok().and_then(|c| codes.get(c)) {
        Some(code_name) => format!("{name}({code_name})"),
        None => format!("{name}(Code: {code})"),
    }
}

#[cfg(test)]
pub(crate) mod tests;
