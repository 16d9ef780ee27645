//! `monitor-agent`: see the library crate for what it does. This file only parses options.

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{CommandFactory as _, Parser};
use monitor_agent::{
    agent::{self, AgentOptions, DumpFormat},
    export::{self, ExportOptions, FilterList},
    kernel::{
        datapath::{Aggregation, AttachMode, DatapathOptions, ObservationPoints},
        ifaces::Selector,
    },
    metrics::{self, MetricsOptions},
    service::{ListenOptions, TlsFiles},
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// flowscope's per-node agent: observes every packet of the node's pods with eBPF and serves
/// the flows over Hubble's Observer API (unix socket, optionally TCP with TLS).
///
/// Examples:
///   monitor-agent                             # serve on /var/run/flowscope/agent.sock
///   monitor-agent --dump text                 # also print what the node does, cilium-monitor style
///   monitor-agent --endpoints-file /etc/flowscope/endpoints.yaml --node-name node-1
///   monitor-agent --kubernetes                # in a DaemonSet: pods from the API server
///   monitor-agent --listen-address :4244 --tls-cert-file tls.crt --tls-key-file tls.key
///   monitor-agent --config /etc/flowscope/agent.yaml
///
/// The config file is YAML whose keys are the long option names, e.g.
///   aggregation: low
///   history-size: 65535
///   endpoint-pattern: ["lxc*", "cali*"]
/// Options given on the command line win over the file.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment, args_override_self = true)]
struct Cli {
    /// Read options from this YAML file (keys are the long option names).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's name, put in every flow. Default: $NODE_NAME, else the hostname.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    node_name: Option<String>,
    /// Unix socket of the API (root-only).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/var/run/flowscope/agent.sock"
    )]
    socket: PathBuf,
    /// Also serve the API on this TCP address (e.g. :4244); needs --tls-cert-file/--tls-key-file
    /// unless --tls-disabled.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    listen_address: Option<SocketAddr>,
    /// TLS certificate (PEM) of the TCP listener.
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM) of the TCP listener.
    #[arg(long, value_name = "FILE")]
    tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM) whose client certificates are required on the TCP listener (mTLS).
    #[arg(long, value_name = "FILE")]
    tls_client_ca_files: Vec<PathBuf>,
    /// Serve TCP in plain text (only on a trusted network).
    #[arg(long)]
    tls_disabled: bool,
    /// Serve the web view (service map, flows, paths) on this address, e.g. :12000 (Hubble
    /// UI's port); off by default. With the TCP listener's TLS files, over TLS.
    #[arg(long, value_name = "ADDR")]
    ui_listen_address: Option<flowscope_ui::ListenAddress>,
    /// Number of recent flows kept in memory.
    #[arg(long, value_name = "N", default_value_t = 4095, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    history_size: u64,
    /// Endpoint metadata (YAML: addresses -> namespace, pod, labels, workload), reloaded on change.
    #[arg(long, value_name = "FILE")]
    endpoints_file: Option<PathBuf>,
    /// Address or CIDR of another node (identity remote-node); repeat for several.
    #[arg(long = "remote-node", value_name = "CIDR")]
    remote_nodes: Vec<String>,
    /// Another node's agent for the Peer service: NAME=ADDR[,TLS-SERVER-NAME], ADDR as host:port
    /// (an IP address alone: port 4244) or unix:///path; repeat for several. With --kubernetes the Node list
    /// is announced too.
    #[arg(long = "peer", value_name = "NAME=ADDR")]
    peers: Vec<monitor_agent::service::peer::StaticPeer>,
    /// Name pods, namespaces, workloads and nodes from the Kubernetes API server (this node's
    /// pods: --node-name must be the Node's name).
    #[arg(long)]
    kubernetes: bool,
    /// Kubeconfig for --kubernetes (implies it). Default: $KUBECONFIG or ~/.kube/config if
    /// present, else the pod's service account.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Report a new TCP or UDP connection that got no reply after this long (0s: never).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    unanswered_timeout: Duration,
    /// Glob pattern of endpoint (pod) veths, host side; repeat for several.
    #[arg(long = "endpoint-pattern", value_name = "GLOB", default_values = ["lxc*", "veth*", "cali*"])]
    endpoint_patterns: Vec<String>,
    /// Uplink interface; repeat for several. Default: the interface(s) of the default route.
    #[arg(long = "uplink", value_name = "IFACE")]
    uplinks: Vec<String>,
    /// Host gateway device (like cilium_host), observed as to-host / from-host.
    #[arg(long, value_name = "IFACE")]
    host_device: Option<String>,
    /// Monitor aggregation: none, low, medium (new connections, new TCP flags, then every 5 s), max.
    #[arg(long, value_enum, default_value = "medium")]
    aggregation: Aggregation,
    /// Observation points: per-hop (each hook its own point: from-endpoint, to-network,
    /// from-network, to-endpoint…) or cilium (Cilium's: no from-* point from aggregation low up,
    /// a pod's packets reported at its veth as to-stack, or to-endpoint for a local pod).
    #[arg(long, value_enum, default_value = "per-hop")]
    observation_points: ObservationPoints,
    /// Report only the packets that match this filter, decided in the kernel before anything
    /// is emitted (conntrack still counts every packet): flowctl's filter flags --ip,
    /// --from-ip, --to-ip (address or CIDR), --port, --from-port, --to-port and --protocol
    /// (tcp, udp, sctp, icmp, icmpv4, icmpv6) in one string, e.g.
    /// "--ip 10.244.0.0/16 --protocol udp --port 53". Values of one flag OR together, flags
    /// AND together. Applies to drops too.
    #[arg(long, value_name = "FLAGS", value_parser = monitor_agent::kernel::filter::parse_kernel_filter, allow_hyphen_values = true)]
    kernel_filter: Option<monitor_common::KernelFilter>,
    /// Size of the kernel ring buffer (a power of two, e.g. 4MiB, 16MiB).
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = parse_size)]
    ring_size: u32,
    /// Capacity of the BPF conntrack table.
    #[arg(long, value_name = "N", default_value_t = monitor_common::CONNTRACK_MAX_ENTRIES)]
    conntrack_size: u32,
    /// Ports whose payloads are parsed as DNS or HTTP/1.x, to make Hubble's L7 flows and put
    /// DNS names on flows: PROTOCOL:PORT,… (dns: UDP and TCP; http: TCP). Empty: none.
    #[arg(long, value_name = "LIST", default_value = "dns:53,http:80,http:8080")]
    l7_ports: monitor_agent::decode::l7::L7Ports,
    /// Payload bytes copied per packet on the L7 ports (1 to 512): the DNS messages and HTTP
    /// heads longer than this are cut (docs/l7.md).
    #[arg(long, value_name = "BYTES", default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..=512))]
    l7_capture_bytes: u16,
    /// Addresses the FQDN cache (names from DNS answers) holds at most; 0: no names on flows.
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    fqdn_cache_size: usize,
    /// Shortest time a name from a DNS answer stays on flows, whatever the answer's TTL
    /// (clients keep using addresses past their TTL).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    fqdn_min_ttl: Duration,
    /// Do not trace kernel drops (needed on kernels without BTF).
    #[arg(long)]
    no_drops: bool,
    /// Also report packets the kernel freed with no drop reason (NOT_SPECIFIED). Off by
    /// default: parts of the kernel free packets they have processed that way (IPv6 MLD
    /// reports, neighbour discovery), and reporting them would show drops that did not happen.
    /// They are always counted (flowscope_drops_unspecified_total).
    #[arg(long)]
    report_unspecified_drops: bool,
    /// How to attach TC programs: tcx (Linux 6.6+), netlink (clsact), or auto.
    #[arg(long, value_enum, default_value = "auto")]
    attach_mode: AttachMode,
    /// Longest time events wait in the ring before the reader drains it.
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Capacity of the decode queue, in events (at least one batch of 256).
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    queue_size: usize,
    /// Print events on standard output (json: one object per line; text: cilium-monitor style).
    #[arg(long, value_enum)]
    dump: Option<DumpFormat>,
    /// Period of the counters line with --dump json.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    stats_interval: Duration,
    /// Serve Prometheus metrics on this address (`:9965`: every address; empty: off).
    #[arg(long, value_name = "ADDR", default_value = ":9965", value_parser = metrics::parse_listen_address)]
    metrics_listen_address: metrics::ListenAddress,
    /// A Hubble metric to serve, in Hubble's syntax `name[:option;…]`; repeat for several.
    /// Names: flow, drop, tcp, port-distribution, icmp, flows-to-world. Options:
    /// sourceContext / destinationContext = alternatives separated by | (first non-empty wins)
    /// among identity, namespace, pod, pod-short, pod-name, dns, ip, reserved-identity,
    /// workload-name, app; labelsContext = a list of source_/destination_ ip, pod, namespace,
    /// workload, app and traffic_direction; flows-to-world also takes any-drop, port, syn-only.
    /// E.g. --metrics 'drop:sourceContext=namespace;destinationContext=identity'
    #[arg(long = "metrics", value_name = "METRIC", default_values = metrics::options::DEFAULT_METRICS)]
    metrics: Vec<String>,
    /// A metric series whose labels name an endpoint is removed after this long without flows.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    metrics_series_ttl: Duration,
    /// Export flows to this file: one JSON object per line, Hubble's ExportEvent.
    #[arg(long, value_name = "FILE")]
    export_file_path: Option<PathBuf>,
    /// Rotate the export file before it grows past this size (MiB, fractions allowed; 0: never).
    #[arg(long, value_name = "MB", default_value_t = 10.0, value_parser = parse_mb)]
    export_file_max_size_mb: f64,
    /// Rotated export files kept (0: all).
    #[arg(long, value_name = "N", default_value_t = 5)]
    export_file_max_backups: usize,
    /// Gzip rotated export files.
    #[arg(long)]
    export_file_compress: bool,
    /// Export only flows matching one of these JSON FlowFilters, e.g. '{"verdict":["DROPPED"]}'
    /// (several: comma-separated, a JSON array, or repeat the option).
    #[arg(long, value_name = "JSON", value_parser = export::parse_filter_list)]
    export_allowlist: Vec<FilterList>,
    /// Never export flows matching one of these JSON FlowFilters.
    #[arg(long, value_name = "JSON", value_parser = export::parse_filter_list)]
    export_denylist: Vec<FilterList>,
    /// Export only these fields of each flow, e.g. time,verdict,source.namespace (`extensions`
    /// adds flowscope's own; without a mask, every Hubble field).
    #[arg(long, value_name = "PATHS")]
    export_fieldmask: Vec<String>,
    /// Also export reports of connections that got no reply, as `flowscope_unanswered` lines
    /// (not an ExportEvent: Hubble's tools reading the file would not know them).
    #[arg(long)]
    export_unanswered: bool,
    /// The OTLP exporter's options (`--otlp-*`, the relay's too).
    #[command(flatten)]
    otlp: flowscope_otlp::OtlpArgs,
}

/// `--export-file-max-size-mb`: a non-negative number of MiB.
fn parse_mb(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a size in MB like 10 or 0.5, got {s:?}")),
    }
}

/// The export options, or why the export flags do not make sense together.
fn export_options(cli: &Cli) -> Result<Option<ExportOptions>, String> {
    let Some(path) = cli.export_file_path.clone() else {
        let used = !cli.export_allowlist.is_empty()
            || !cli.export_denylist.is_empty()
            || !cli.export_fieldmask.is_empty()
            || cli.export_file_compress
            || cli.export_unanswered;
        if used {
            return Err("the --export-… options need --export-file-path".into());
        }
        return Ok(None);
    };
    let flat = |l: &[FilterList]| l.iter().flat_map(|f| f.0.iter().cloned()).collect();
    Ok(Some(ExportOptions {
        path,
        // Saturating float-to-int cast: a huge size means "never rotate" in practice.
        max_size_bytes: (cli.export_file_max_size_mb * 1_048_576.0) as u64,
        max_backups: cli.export_file_max_backups,
        compress: cli.export_file_compress,
        allowlist: flat(&cli.export_allowlist),
        denylist: flat(&cli.export_denylist),
        field_mask: cli
            .export_fieldmask
            .iter()
            .flat_map(|m| export::parse_field_mask(m))
            .collect(),
        queue_size: export::DEFAULT_QUEUE,
        unanswered: cli.export_unanswered,
    }))
}

/// `:4244` (all addresses) or `host:port`.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    s.parse()
        .map_err(|_| format!("expected an address like :4244 or 127.0.0.1:4244, got {s:?}"))
}

/// The command line with the config file's options inserted before the user's own (so that
/// the command line wins). Unknown keys are errors naming the file.
fn args_with_config(argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let mut path = None;
    for (i, a) in argv.iter().enumerate() {
        let a = a.to_string_lossy();
        if let Some(p) = a.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
        } else if a == "--config" {
            path = argv.get(i + 1).map(PathBuf::from);
        }
    }
    let Some(path) = path else { return Ok(argv) };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("config file {}: not valid YAML", path.display()))?;
    let known: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let mut extra: Vec<OsString> = Vec::new();
    let map = match doc {
        serde_yaml_ng::Value::Mapping(m) => m,
        serde_yaml_ng::Value::Null => Default::default(),
        _ => bail!(
            "config file {}: expected a mapping of option names to values",
            path.display()
        ),
    };
    for (k, v) in map {
        let key = k.as_str().map(str::to_owned).unwrap_or_default();
        if key == "config" || !known.contains(&key) {
            bail!(
                "config file {}: unknown option {key:?} (see monitor-agent --help)",
                path.display()
            );
        }
        let scalar = |v: &serde_yaml_ng::Value| -> anyhow::Result<String> {
            Ok(match v {
                serde_yaml_ng::Value::String(s) => s.clone(),
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                serde_yaml_ng::Value::Bool(b) => b.to_string(),
                _ => bail!(
                    "config file {}: option {key:?} has a value of the wrong shape",
                    path.display()
                ),
            })
        };
        match &v {
            serde_yaml_ng::Value::Bool(true) => extra.push(format!("--{key}").into()),
            serde_yaml_ng::Value::Bool(false) | serde_yaml_ng::Value::Null => {}
            serde_yaml_ng::Value::Sequence(items) => {
                for item in items {
                    extra.push(format!("--{key}={}", scalar(item)?).into());
                }
            }
            other => extra.push(format!("--{key}={}", scalar(other)?).into()),
        }
    }
    let mut out = vec![argv[0].clone()];
    out.extend(extra);
    out.extend(argv.into_iter().skip(1));
    Ok(out)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Parses `4096`, `64KiB`, `4MiB`, `1GiB`.
fn parse_size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("KiB") {
        (n, 1u64 << 10)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("GiB") {
        (n, 1 << 30)
    } else {
        (s, 1)
    };
    let v = num
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("expected a size like 4096 or 4MiB, got {s:?}"))?
        * mult;
    if !v.is_power_of_two() || v < 4096 {
        return Err(format!("{s} is not a power of two of at least 4KiB"));
    }
    u32::try_from(v).map_err(|_| format!("{s} is too large"))
}

/// A flow is ~40 small heap objects built, shared and dropped per event: mimalloc serves them
/// faster than the system allocator (docs/benchmarks.md, benchmark 3).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's option setter (linked in by the `mimalloc` crate, which does not wrap it).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Keeps the agent's resident memory to what it uses.
///
/// - Freed pages go back to the kernel at once instead of after mimalloc's default second:
///   the history replaces flows continuously, and with the delay the agent's peak RSS at
///   `--history-size 4095` was 80 MiB instead of 57 (benchmark 6); it costs 2–4 % more CPU per
///   event at 150 k events/s (benchmark 3). `MIMALLOC_PURGE_DELAY` in the environment still
///   wins.
/// - No transparent huge pages: with them a heap of small objects is resident in 2 MiB units
///   (12 of the 18 MiB of anonymous memory at idle, benchmark 6). mimalloc's `no_thp` feature
///   (the workspace's Cargo.toml) stops it asking for them; this also covers kernels set to
///   give them to every process (`transparent_hugepage/enabled` = `always`).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain setter of a process-wide option, safe to call at any time.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    // SAFETY: sets a flag of this process's memory; no pointers involved. It fails only on
    // kernels without THP (nothing to disable), so the result is not checked.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[tokio::main]
async fn main() -> ExitCode {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match args_with_config(std::env::args_os().collect()) {
        Ok(args) => Cli::parse_from(args),
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if cli.listen_address.is_some()
        && !cli.tls_disabled
        && (cli.tls_cert_file.is_none() || cli.tls_key_file.is_none())
    {
        eprintln!(
            "error: --listen-address serves flows over the network: give --tls-cert-file and --tls-key-file, or --tls-disabled on a trusted network"
        );
        return ExitCode::from(2);
    }
    if cli.ui_listen_address.is_some()
        && !cli.tls_disabled
        && (cli.tls_cert_file.is_none() || cli.tls_key_file.is_none())
    {
        eprintln!(
            "error: --ui-listen-address serves flows over the network: give --tls-cert-file and --tls-key-file, or --tls-disabled on a trusted network"
        );
        return ExitCode::from(2);
    }
    let tls = match (&cli.tls_cert_file, &cli.tls_key_file) {
        (Some(cert), Some(key)) if !cli.tls_disabled => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_cas: cli.tls_client_ca_files.clone(),
        }),
        _ => None,
    };
    let metric_specs = match metrics::parse_metrics(&cli.metrics) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: --metrics: {e}");
            return ExitCode::from(2);
        }
    };
    let export = match export_options(&cli) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let otlp = match cli.otlp.options("flowscope-agent") {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = AgentOptions {
        selector: Selector {
            endpoint_patterns: cli.endpoint_patterns,
            uplinks: cli.uplinks,
            host_device: cli.host_device,
        },
        datapath: DatapathOptions {
            ring_bytes: cli.ring_size,
            conntrack_entries: cli.conntrack_size,
            aggregation: cli.aggregation,
            observation_points: cli.observation_points,
            drops: !cli.no_drops,
            attach_mode: cli.attach_mode,
            l7_ports: cli.l7_ports.clone(),
            l7_snap_len: usize::from(cli.l7_capture_bytes),
            kernel_filter: cli.kernel_filter,
            ..DatapathOptions::default()
        },
        poll_interval: cli.poll_interval,
        queue_events: cli.queue_size,
        dump: cli.dump,
        stats_interval: cli.stats_interval,
        rescan_interval: Duration::from_secs(5),
        node_name: cli.node_name.clone().unwrap_or_else(hostname),
        history_size: cli.history_size as usize,
        listen: ListenOptions {
            socket: cli.socket.clone(),
            tcp: cli.listen_address,
            tls,
            ui: cli.ui_listen_address,
        },
        endpoints_file: cli.endpoints_file.clone(),
        remote_nodes: cli.remote_nodes.clone(),
        peers: cli.peers.clone(),
        kubernetes: (cli.kubernetes || cli.kubeconfig.is_some()).then(|| {
            monitor_agent::endpoints::kubernetes::KubernetesOptions {
                node_name: cli.node_name.clone().unwrap_or_else(hostname),
                kubeconfig: cli.kubeconfig.clone(),
            }
        }),
        metrics: MetricsOptions {
            listen: cli.metrics_listen_address.0,
            metrics: metric_specs,
            series_ttl: cli.metrics_series_ttl,
        },
        export,
        otlp,
        unanswered_timeout: cli.unanswered_timeout,
        report_unspecified_drops: cli.report_unspecified_drops,
        fqdn_cache_size: cli.fqdn_cache_size,
        fqdn_min_ttl: cli.fqdn_min_ttl,
    };
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        token.cancel();
    });
    match agent::run(opts, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_file_options_come_before_the_command_line() {
        let dir = std::env::temp_dir().join(format!("fs-agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("agent.yaml");
        std::fs::write(&f, "aggregation: low\nobservation-points: cilium\nhistory-size: 100\nendpoint-pattern: [\"lxc*\", \"cali*\"]\nno-drops: true\n").unwrap();
        let argv: Vec<OsString> = [
            "monitor-agent",
            "--config",
            f.to_str().unwrap(),
            "--history-size",
            "7",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let cli = Cli::parse_from(args_with_config(argv).unwrap());
        assert_eq!(cli.aggregation, Aggregation::Low);
        assert_eq!(cli.observation_points, ObservationPoints::Cilium);
        assert_eq!(cli.history_size, 7, "the command line wins");
        assert_eq!(cli.endpoint_patterns, vec!["lxc*", "cali*"]);
        assert!(cli.no_drops);
        std::fs::write(&f, "aggregaton: low\n").unwrap();
        let argv: Vec<OsString> = ["monitor-agent", "--config", f.to_str().unwrap()]
            .iter()
            .map(Into::into)
            .collect();
        let err = args_with_config(argv).unwrap_err().to_string();
        assert!(err.contains("unknown option \"aggregaton\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("3000").is_err());
        assert!(parse_size("lots").is_err());
    }
}
