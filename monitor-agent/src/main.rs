//! `monitor-agent`: see the library crate for what it does. This file only parses options.

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use monitor_agent::{
    agent::{self, AgentOptions, DumpFormat},
    datapath::{Aggregation, AttachMode, DatapathOptions},
    ifaces::Selector,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// flowscope's per-node agent: observes every packet of the node's pods with eBPF.
///
/// Examples:
///   monitor-agent --dump text                 # follow what the node does, cilium-monitor style
///   monitor-agent --uplink eth0 --endpoint-pattern 'lxc*' --aggregation none --dump json
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
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
    /// Size of the kernel ring buffer (a power of two, e.g. 4MiB, 16MiB).
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = parse_size)]
    ring_size: u32,
    /// Capacity of the BPF conntrack table.
    #[arg(long, value_name = "N", default_value_t = monitor_common::CONNTRACK_MAX_ENTRIES)]
    conntrack_size: u32,
    /// Do not trace kernel drops (needed on kernels without BTF).
    #[arg(long)]
    no_drops: bool,
    /// How to attach TC programs: tcx (Linux 6.6+), netlink (clsact), or auto.
    #[arg(long, value_enum, default_value = "auto")]
    attach_mode: AttachMode,
    /// Longest time events wait in the ring before the reader drains it.
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Capacity of the decode queue, in events.
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    queue_size: usize,
    /// Print events on standard output (json: one object per line; text: cilium-monitor style).
    #[arg(long, value_enum)]
    dump: Option<DumpFormat>,
    /// Period of the counters line with --dump json.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    stats_interval: Duration,
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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
            drops: !cli.no_drops,
            attach_mode: cli.attach_mode,
            ..DatapathOptions::default()
        },
        poll_interval: cli.poll_interval,
        queue_events: cli.queue_size,
        dump: cli.dump,
        stats_interval: cli.stats_interval,
        rescan_interval: Duration::from_secs(5),
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
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("3000").is_err());
        assert!(parse_size("lots").is_err());
    }
}
