//! `flowctl observe`: Hubble's `observe` — selection flags, filter flags,
//! output formats — against the agent or the relay.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal as _, Write};
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{ArgAction, ArgMatches, Args};
use flowscope_proto::EXTENSIONS_HEADER;
use flowscope_proto::flow::{EventTypeFilter, IpVersion, TcpFlags, TrafficDirection, Verdict};
use flowscope_proto::flowscope::v1::{GetFlowsExtension, RecordSelection};
use flowscope_proto::observer::observer_client::ObserverClient;
use flowscope_proto::observer::{
    GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes,
};
use flowscope_proto::wkt::{Any, FieldMask, Timestamp};

use super::Context;
use crate::client;
use crate::config::ColorWhen;
use crate::filters::{self, UsageError};
use crate::offline;
use crate::output::{Format, Options, Printer, TimeFormat};

/// How many flows `observe` asks for when nothing says otherwise (Hubble's
/// default).
pub const DEFAULT_LAST: u64 = 20;

/// Examples and exit status, shown after `flowctl observe --help`.
pub const AFTER_HELP: &str = "\
Examples:
  The last 20 flows of the node (agent) or the cluster (relay):
    flowctl observe
  Follow a pod's traffic to 1.0.0.1, as the lab's `ping 1.1` and `wget http://1.1`:
    flowctl observe -f --ip 1.0.0.1
  Only what the kernel dropped, with its reason:
    flowctl observe --verdict DROPPED
  Packets leaving the node, after routing and MASQUERADE:
    flowctl observe -t trace:to-network --from-pod default/pod-a
  Pods of a namespace talking to the internet, without DNS:
    flowctl observe -n default --to-identity world --not --port 53
  The last 5 minutes as JSON, one GetFlowsResponse per line:
    flowctl observe --since 5m -o json | jq -c .flow.IP
  `cilium monitor` lines, live:
    flowctl observe -f -o monitor
  Offline, from a file of Hubble JSON lines or an export file ('-': standard input):
    flowctl observe --input-file flows.json --verdict DROPPED --last 10
  The FlowFilters these flags make, for --allowlist or the agent's --export-allowlist:
    flowctl observe -n default --verdict DROPPED --print-raw-filters

JSON output is Hubble's, as Hubble's tools read it; --print-extensions adds
flowscope's own data (Flow.extensions), which those tools cannot read.

Filters: the values of one flag are alternatives (OR); different flags must
all match (AND). A flag without from-/to- matches either end of the flow.
--not negates the one filter flag that follows it.

Exit status: 0 success (also when the output is closed early, as by `| head`),
1 error (server unreachable, request failed), 2 usage error (bad flag or value).";

/// `flowctl observe` flags.
#[derive(Debug, Args)]
pub struct ObserveArgs {
    // ---- Selection -------------------------------------------------------
    /// Get the last N flows stored on the server [default: 20 unless --follow,
    /// --since or --until is given]. Through the relay: N per node.
    #[arg(long, value_name = "N", help_heading = "Selection", conflicts_with_all = ["first", "all"])]
    pub last: Option<u64>,

    /// Get the first (oldest) N flows stored on the server. Through the
    /// relay: N per node.
    #[arg(long, value_name = "N", help_heading = "Selection", conflicts_with_all = ["all", "follow"])]
    pub first: Option<u64>,

    /// Keep printing new flows until Ctrl-C or the server ends the stream.
    #[arg(short = 'f', long, help_heading = "Selection")]
    pub follow: bool,

    /// Flows since this time: RFC 3339 (2025-11-26T11:00:00Z, 2025-11-26),
    /// RFC 1123Z, or a duration into the past (30s, 5m, 1h30m).
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "Selection")]
    pub since: Option<Timestamp>,

    /// Flows until this time (same forms as --since; ignored with --follow).
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "Selection")]
    pub until: Option<Timestamp>,

    /// Get all flows stored on the server (use with filters).
    #[arg(long, help_heading = "Selection")]
    pub all: bool,

    /// Reports of connections that got no reply instead of flows: the agent reports a new TCP
    /// or UDP connection without an answer after its --unanswered-timeout (5 s by default),
    /// once. Filters, --last, --first, --since and --follow apply to these reports.
    #[arg(long, help_heading = "Selection")]
    pub unanswered: bool,

    // ---- Filters ---------------------------------------------------------
    /// Negate the next filter flag: --not --ip 10.0.0.1.
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", help_heading = "Filters")]
    pub not: Vec<bool>,

    /// Flows from or to this address or CIDR (10.244.0.213, 1.0.0.0/24, fd00::/64).
    #[arg(long, value_name = "IP", value_parser = filters::parse_ip_or_cidr, help_heading = "Filters")]
    pub ip: Vec<String>,

    /// Flows from this address or CIDR.
    #[arg(long, value_name = "IP", value_parser = filters::parse_ip_or_cidr, help_heading = "Filters")]
    pub from_ip: Vec<String>,

    /// Flows to this address or CIDR.
    #[arg(long, value_name = "IP", value_parser = filters::parse_ip_or_cidr, help_heading = "Filters")]
    pub to_ip: Vec<String>,

    /// Flows whose source was translated (SNAT, MASQUERADE) to this address or CIDR.
    #[arg(long, value_name = "IP", value_parser = filters::parse_ip_or_cidr, help_heading = "Filters")]
    pub snat_ip: Vec<String>,

    /// Flows from or to this pod: [namespace/]pod-name-prefix.
    #[arg(long, value_name = "POD", help_heading = "Filters")]
    pub pod: Vec<String>,

    /// Flows from this pod: [namespace/]pod-name-prefix.
    #[arg(long, value_name = "POD", help_heading = "Filters")]
    pub from_pod: Vec<String>,

    /// Flows to this pod: [namespace/]pod-name-prefix.
    #[arg(long, value_name = "POD", help_heading = "Filters")]
    pub to_pod: Vec<String>,

    /// Flows from or to this Kubernetes Service (its ClusterIP and port, as Hubble):
    /// [namespace/]service-name-prefix.
    #[arg(long, value_name = "SERVICE", help_heading = "Filters")]
    pub service: Vec<String>,

    /// Flows from this Service: [namespace/]service-name-prefix.
    #[arg(long, value_name = "SERVICE", help_heading = "Filters")]
    pub from_service: Vec<String>,

    /// Flows to this Service: [namespace/]service-name-prefix.
    #[arg(long, value_name = "SERVICE", help_heading = "Filters")]
    pub to_service: Vec<String>,

    /// Flows from or to pods of this Kubernetes namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE", help_heading = "Filters")]
    pub namespace: Vec<String>,

    /// Flows from pods of this namespace.
    #[arg(long, value_name = "NAMESPACE", help_heading = "Filters")]
    pub from_namespace: Vec<String>,

    /// Flows to pods of this namespace.
    #[arg(long, value_name = "NAMESPACE", help_heading = "Filters")]
    pub to_namespace: Vec<String>,

    /// Pods of any namespace (with --pod: that pod name in any namespace).
    #[arg(short = 'A', long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", help_heading = "Filters")]
    pub all_namespaces: Vec<bool>,

    /// Flows from pods of any namespace.
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", help_heading = "Filters")]
    pub from_all_namespaces: Vec<bool>,

    /// Flows to pods of any namespace.
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true", help_heading = "Filters")]
    pub to_all_namespaces: Vec<bool>,

    /// Flows from or to an endpoint with these labels (k8s:app=web, reserved:world).
    #[arg(short = 'l', long, value_name = "LABELS", help_heading = "Filters")]
    pub label: Vec<String>,

    /// Flows from an endpoint with these labels.
    #[arg(long, value_name = "LABELS", help_heading = "Filters")]
    pub from_label: Vec<String>,

    /// Flows to an endpoint with these labels.
    #[arg(long, value_name = "LABELS", help_heading = "Filters")]
    pub to_label: Vec<String>,

    /// Flows from or to this security identity: a number or a reserved name
    /// (host, world, unmanaged, health, init, remote-node, kube-apiserver,
    /// ingress, world-ipv4, world-ipv6).
    #[arg(long, value_name = "ID", value_parser = filters::parse_identity, help_heading = "Filters")]
    pub identity: Vec<u32>,

    /// Flows from this security identity.
    #[arg(long, value_name = "ID", value_parser = filters::parse_identity, help_heading = "Filters")]
    pub from_identity: Vec<u32>,

    /// Flows to this security identity.
    #[arg(long, value_name = "ID", value_parser = filters::parse_identity, help_heading = "Filters")]
    pub to_identity: Vec<u32>,

    /// Flows with this source or destination port.
    #[arg(long, value_name = "PORT", value_parser = filters::parse_port, help_heading = "Filters")]
    pub port: Vec<String>,

    /// Flows with this source port.
    #[arg(long, value_name = "PORT", value_parser = filters::parse_port, help_heading = "Filters")]
    pub from_port: Vec<String>,

    /// Flows with this destination port.
    #[arg(long, value_name = "PORT", value_parser = filters::parse_port, help_heading = "Filters")]
    pub to_port: Vec<String>,

    /// Flows of this protocol: tcp, udp, sctp, icmp, icmpv4, icmpv6 (and L7: dns, http, kafka).
    #[arg(long, value_name = "PROTOCOL", value_parser = filters::parse_protocol, help_heading = "Filters")]
    pub protocol: Vec<String>,

    /// TCP flows with these flags set, comma-separated (syn, SYN,ACK, fin).
    #[arg(long, value_name = "FLAGS", value_parser = filters::parse_tcp_flags, help_heading = "Filters")]
    pub tcp_flags: Vec<TcpFlags>,

    /// Flows with this verdict: FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED, TRANSLATED.
    #[arg(long, value_name = "VERDICT", value_parser = filters::parse_verdict, help_heading = "Filters")]
    pub verdict: Vec<Verdict>,

    /// Dropped flows with this Hubble drop reason (POLICY_DENIED, ...).
    #[arg(long, value_name = "REASON", value_parser = filters::parse_drop_reason, help_heading = "Filters")]
    pub drop_reason_desc: Vec<i32>,

    /// Event type TYPE[:SUBTYPE]: trace, drop, capture, l7, policy-verdict,
    /// trace-sock, or a number; trace sub-types: to-endpoint, to-proxy,
    /// to-host, to-stack, to-overlay, to-network, to-crypto, from-endpoint,
    /// from-proxy, from-host, from-stack, from-overlay, from-network,
    /// from-crypto (e.g. trace:to-network).
    #[arg(id = "type", short = 't', long = "type", value_name = "TYPE", value_parser = filters::parse_event_type, help_heading = "Filters")]
    pub event_type: Vec<EventTypeFilter>,

    /// Flows in this traffic direction: ingress or egress.
    #[arg(long, value_name = "DIRECTION", value_parser = filters::parse_traffic_direction, help_heading = "Filters")]
    pub traffic_direction: Vec<TrafficDirection>,

    /// Flows observed on nodes matching this name or glob (node-1, k8s*).
    #[arg(long, value_name = "NAME", help_heading = "Filters")]
    pub node_name: Vec<String>,

    /// Flows observed on nodes with these labels, a label selector (kubernetes.io/os=linux).
    /// flowscope's agent sets no node labels: this matches flows from Cilium's files only.
    #[arg(long, value_name = "SELECTOR", help_heading = "Filters")]
    pub node_label: Vec<String>,

    /// The flow with this UUID (Flow.uuid).
    #[arg(long, value_name = "UUID", help_heading = "Filters")]
    pub uuid: Vec<String>,

    /// Flows from or to an endpoint of this workload: [KIND/]NAME (Deployment/web, web, DaemonSet/).
    #[arg(long, value_name = "WORKLOAD", help_heading = "Filters")]
    pub workload: Vec<String>,

    /// Flows from an endpoint of this workload.
    #[arg(long, value_name = "WORKLOAD", help_heading = "Filters")]
    pub from_workload: Vec<String>,

    /// Flows to an endpoint of this workload.
    #[arg(long, value_name = "WORKLOAD", help_heading = "Filters")]
    pub to_workload: Vec<String>,

    /// Flows from or to an address that this DNS name resolved to (names learnt from the DNS
    /// answers the agent saw; a glob: `*.example.com`).
    #[arg(long, value_name = "NAME", help_heading = "Filters")]
    pub fqdn: Vec<String>,

    /// Flows from an address with this DNS name.
    #[arg(long, value_name = "NAME", help_heading = "Filters")]
    pub from_fqdn: Vec<String>,

    /// Flows to an address with this DNS name.
    #[arg(long, value_name = "NAME", help_heading = "Filters")]
    pub to_fqdn: Vec<String>,

    /// HTTP responses with this status code: 404, or a prefix such as 5+ or 40+.
    #[arg(long, value_name = "CODE", value_parser = filters::parse_http_status, help_heading = "Filters")]
    pub http_status: Vec<String>,

    /// HTTP flows with this method (GET, POST, …).
    #[arg(long, value_name = "METHOD", help_heading = "Filters")]
    pub http_method: Vec<String>,

    /// HTTP flows whose path matches this regular expression.
    #[arg(long, value_name = "REGEX", help_heading = "Filters")]
    pub http_path: Vec<String>,

    /// HTTP flows whose URL matches this regular expression.
    #[arg(long, value_name = "REGEX", help_heading = "Filters")]
    pub http_url: Vec<String>,

    /// Flows from or to an endpoint of this cluster (Endpoint.cluster_name). flowscope's agent
    /// knows no cluster name: this matches flows from Cilium's files only.
    #[arg(long, value_name = "NAME", value_parser = filters::parse_cluster, help_heading = "Filters")]
    pub cluster: Vec<String>,

    /// Flows from an endpoint of this cluster.
    #[arg(long, value_name = "NAME", value_parser = filters::parse_cluster, help_heading = "Filters")]
    pub from_cluster: Vec<String>,

    /// Flows to an endpoint of this cluster.
    #[arg(long, value_name = "NAME", value_parser = filters::parse_cluster, help_heading = "Filters")]
    pub to_cluster: Vec<String>,

    /// Flows observed at this network interface (eth0, lxc12ab).
    #[arg(long, value_name = "NAME", help_heading = "Filters")]
    pub interface: Vec<String>,

    /// Flows of this IP version: v4, v6 or none (non-IP).
    #[arg(long, value_name = "VERSION", value_parser = filters::parse_ip_version, help_heading = "Filters")]
    pub ip_version: Vec<IpVersion>,

    /// Allowlist as JSON-encoded FlowFilters ('{"source_ip":["10.0.0.1"]}'), added to the filter flags'.
    #[arg(long, value_name = "JSON", help_heading = "Raw filters")]
    pub allowlist: Vec<String>,

    /// Denylist as JSON-encoded FlowFilters, added to the --not filters.
    #[arg(long, value_name = "JSON", help_heading = "Raw filters")]
    pub denylist: Vec<String>,

    /// Print the allowlist and denylist these flags make (YAML, each FlowFilter as JSON, ready
    /// for --allowlist/--denylist or the agent's --export-allowlist) and exit without
    /// contacting the server.
    #[arg(long, help_heading = "Raw filters")]
    pub print_raw_filters: bool,

    // ---- Input -----------------------------------------------------------
    /// Read flows from this file of Hubble JSON lines instead of the server ('-': standard
    /// input): `flowctl observe -o json` or `hubble observe -o json` output, or an export file
    /// (the agent's --export-file-path, Cilium's). Filters, --since/--until and --first/--last
    /// apply to it; without --first/--last every selected flow is printed.
    #[arg(long, value_name = "FILE", help_heading = "Input")]
    pub input_file: Option<String>,

    // ---- Output ----------------------------------------------------------
    /// Output format [default: compact, or the config file's].
    #[arg(
        short = 'o',
        long,
        value_enum,
        value_name = "FORMAT",
        help_heading = "Output"
    )]
    pub output: Option<Format>,

    /// Print the node that observed each flow.
    #[arg(long, help_heading = "Output")]
    pub print_node_name: bool,

    /// Time format for text output [default: StampMilli].
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        value_name = "FORMAT",
        help_heading = "Output"
    )]
    pub time_format: Option<TimeFormat>,

    /// Addresses instead of pod/service/DNS names (and numeric identities with -o monitor).
    #[arg(long, help_heading = "Output")]
    pub numeric: bool,

    /// Color compact and dict output [default: auto, only on a terminal].
    #[arg(long, value_enum, value_name = "WHEN", help_heading = "Output")]
    pub color: Option<ColorWhen>,

    /// Only these fields of each flow, comma-separated proto paths (time,verdict,source.pod_name):
    /// the server leaves the others out. json and jsonpb output only.
    #[arg(
        long,
        visible_alias = "experimental-field-mask",
        value_name = "PATHS",
        value_delimiter = ',',
        help_heading = "Output"
    )]
    pub field_mask: Vec<String>,

    /// With -o json/jsonpb, also print flowscope's own data in each flow's `extensions`
    /// (skb hash, conntrack tuple, kernel drop reason, SNAT port). Off by default: Hubble's
    /// tools reject a line with a type they do not know.
    #[arg(long, help_heading = "Output")]
    pub print_extensions: bool,
}

/// `--since`/`--until`: an absolute time or a duration before now.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    const EXPECTED: &str = "expected RFC 3339 (2025-11-26T11:00:00Z, 2025-11-26), RFC 1123Z or a duration into the past (30s, 5m, 1h30m)";
    if let Ok(ago) = humantime::parse_duration(s) {
        let at = SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{s:?} is too far back"))?;
        return Ok(at.into());
    }
    let from = |dt: chrono::DateTime<chrono::FixedOffset>| {
        let utc = dt.with_timezone(&chrono::Utc);
        // timestamp_subsec_nanos() < 1e9 fits in i32.
        Timestamp::new(utc.timestamp(), utc.timestamp_subsec_nanos() as i32)
    };
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(from(dt));
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc2822(s) {
        return Ok(from(dt));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(dt) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(from(dt.and_utc().fixed_offset()));
    }
    // Hubble's YearMonthDayHour(Minute): 2025-11-26T11Z, 2025-11-26T11:00+01:00.
    let zoned = match s.strip_suffix('Z') {
        Some(rest) => format!("{rest}+00:00"),
        None => s.to_string(),
    };
    const HOUR_MINUTE: &str = "%Y-%m-%dT%H:%M%:z";
    if let Ok(dt) = chrono::DateTime::parse_from_str(&zoned, HOUR_MINUTE) {
        return Ok(from(dt));
    }
    // Hour only: chrono wants minutes, so add them before the zone.
    if let Some(at) = zoned
        .len()
        .checked_sub(6)
        .filter(|at| zoned.is_char_boundary(*at))
    {
        let (head, zone) = zoned.split_at(at);
        if let Ok(dt) = chrono::DateTime::parse_from_str(&format!("{head}:00{zone}"), HOUR_MINUTE) {
            return Ok(from(dt));
        }
    }
    Err(EXPECTED.into())
}

/// The GetFlows request for these flags (Hubble's `getFlowsRequest`).
pub fn build_request(
    args: &ObserveArgs,
    matches: &ArgMatches,
) -> Result<GetFlowsRequest, UsageError> {
    let first = args.first.unwrap_or(0);
    let mut last = args.last.unwrap_or(0);
    let since = args.since;
    // With --follow the stream has no end: --until would contradict it, and
    // Hubble drops it.
    let until = if args.follow { None } else { args.until };
    if since.is_none() && until.is_none() && first == 0 {
        if args.all {
            last = u64::MAX;
        } else if last == 0 && !args.follow && args.input_file.is_none() {
            // A server's history gets Hubble's default; a file is read whole.
            last = DEFAULT_LAST;
        }
    }
    let (mut whitelist, mut blacklist) = filters::from_matches(matches)?;
    whitelist.extend(filters::parse_raw_filters("allowlist", &args.allowlist)?);
    blacklist.extend(filters::parse_raw_filters("denylist", &args.denylist)?);
    Ok(GetFlowsRequest {
        number: if first > 0 { first } else { last },
        first: first > 0,
        follow: args.follow,
        blacklist,
        whitelist,
        since,
        until,
        extensions: args.unanswered.then(|| {
            Any::from_msg(&GetFlowsExtension {
                records: RecordSelection::Unanswered as i32,
            })
        }),
        field_mask: (!args.field_mask.is_empty()).then(|| FieldMask {
            paths: args.field_mask.clone(),
        }),
        ..Default::default()
    })
}

/// `--print-raw-filters`: the lists as `hubble observe --print-raw-filters` prints them, YAML
/// (go-yaml v3's layout) whose items are FlowFilters in protojson.
pub fn raw_filters_yaml(req: &GetFlowsRequest) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for (key, list) in [("allowlist", &req.whitelist), ("denylist", &req.blacklist)] {
        if list.is_empty() {
            continue;
        }
        out.push_str(key);
        out.push_str(":\n");
        for filter in list {
            let json = flowscope_proto::json::to_json(filter)?;
            // A single-quoted YAML scalar: only the quote itself is escaped, by doubling it.
            out.push_str(&format!("    - '{}'\n", json.replace('\'', "''")));
        }
    }
    if out.is_empty() {
        // go-yaml's empty mapping.
        out.push_str("{}\n");
    }
    Ok(out)
}

/// Printer options from the flags, the config file and the terminal.
pub fn printer_options(args: &ObserveArgs, ctx: &Context, stdout_is_terminal: bool) -> Options {
    let config = &ctx.config;
    let color = match args.color.or(config.color).unwrap_or_default() {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            stdout_is_terminal
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
        }
    };
    Options {
        format: args.output.or(config.output).unwrap_or(Format::Compact),
        time_format: args.time_format.or(config.time_format).unwrap_or_default(),
        node_name: args.print_node_name || config.print_node_name.unwrap_or(false),
        numeric: args.numeric,
        color,
        debug: ctx.global.debug,
        extensions: args.print_extensions,
    }
}

/// Output choices that cannot go together (Hubble's `handleFlowArgs` checks, and ours).
fn check_output(args: &ObserveArgs, opts: &Options) -> Result<(), UsageError> {
    if opts.format == Format::Table && args.follow {
        return Err(UsageError(
            "the table format is not compatible with --follow (it aligns columns once all flows are in): use -o compact or -o dict".into(),
        ));
    }
    if !args.field_mask.is_empty() {
        if !matches!(opts.format, Format::Json | Format::Jsonpb) {
            return Err(UsageError(format!(
                "the {} output format is not compatible with --field-mask (the text formats need the fields it would leave out): use -o json",
                opts.format.name()
            )));
        }
        if args.input_file.is_some() {
            return Err(UsageError(
                "--field-mask asks the server to leave fields out; it does not apply to --input-file (use jq on the output)".into(),
            ));
        }
    }
    Ok(())
}

/// Runs `flowctl observe`.
pub async fn run(args: &ObserveArgs, matches: &ArgMatches, ctx: &Context) -> anyhow::Result<()> {
    let request = build_request(args, matches)?;
    let stdout_is_terminal = std::io::stdout().is_terminal();
    let opts = printer_options(args, ctx, stdout_is_terminal);
    check_output(args, &opts)?;
    if args.print_raw_filters {
        let yaml = raw_filters_yaml(&request).context("encoding the filters")?;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(yaml.as_bytes())
            .and_then(|()| stdout.flush())
            .context("writing to stdout")?;
        return Ok(());
    }
    // Lines must show up as they come when someone watches (follow mode, a
    // terminal); otherwise a buffer saves a write per line.
    let flush_each = args.follow || stdout_is_terminal;
    let mut printer = Printer::new(opts, BufWriter::new(std::io::stdout()), std::io::stderr());
    if let Some(path) = &args.input_file {
        return observe_file(path, &request, args.unanswered, flush_each, &mut printer);
    }

    let connect = ctx.connect_options()?;
    if ctx.global.debug {
        let _ = writeln!(
            std::io::stderr(),
            "flowctl: connecting to {} for {request:?}",
            connect.server
        );
    }
    let channel = client::connect(&connect).await?;
    let mut observer = ObserverClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);

    let mut grpc_request = tonic::Request::new(request);
    // Always asked for: the text formats print what it carries (the kernel's drop reason);
    // the JSON formats leave it out unless --print-extensions.
    grpc_request.metadata_mut().insert(
        EXTENSIONS_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = client::within(&connect, "GetFlows", observer.get_flows(grpc_request))
        .await?
        .into_inner();

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(response)) => {
                    printer.write(&response).context("writing to stdout")?;
                    if flush_each {
                        printer.flush().context("writing to stdout")?;
                    }
                }
                Ok(None) => break,
                Err(status) if status.code() == tonic::Code::Cancelled => break,
                Err(status) => {
                    // Show what arrived before the failure, then the failure.
                    printer.finish().context("writing to stdout")?;
                    return Err(client::rpc_error(&connect.server, "GetFlows", &status));
                }
            },
            _ = &mut ctrl_c => break,
        }
    }
    printer.finish().context("writing to stdout")
}

/// `--input-file`: the request's selection applied to Hubble JSON lines (see [`offline`]).
fn observe_file<W: Write, E: Write>(
    path: &str,
    request: &GetFlowsRequest,
    unanswered: bool,
    flush_each: bool,
    printer: &mut Printer<W, E>,
) -> anyhow::Result<()> {
    let selection = offline::Selection::new(request)?;
    let (input, name): (Box<dyn BufRead>, &str) = if path == "-" {
        (Box::new(std::io::stdin().lock()), "standard input")
    } else {
        let file = File::open(path).with_context(|| format!("opening --input-file {path}"))?;
        (Box::new(BufReader::new(file)), path)
    };
    let warn = |message: &str| {
        let _ = writeln!(std::io::stderr(), "warning: {message}");
    };
    let emit = |response: &GetFlowsResponse| -> std::io::Result<()> {
        // A file holds whatever was saved: with --unanswered only the reports of
        // connections that got no reply, without it only flows of packets.
        let report = matches!(
            &response.response_types,
            Some(ResponseTypes::Flow(f)) if crate::output::is_unanswered(f)
        );
        if unanswered != report {
            return Ok(());
        }
        printer.write(response)?;
        if flush_each {
            printer.flush()?;
        }
        Ok(())
    };
    offline::read(input, name, &selection, warn, emit)?;
    printer.finish().context("writing to stdout")
}
