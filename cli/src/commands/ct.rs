//! `flowctl ct list`: flowscope's conntrack table (what the seed lab read with
//! `cilium bpf ct list global`), from the agent's `flowscope.v1.Inspector`.

use std::io::{self, Write};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use flowscope_proto::flow::{TcpFlags, TrafficDirection};
use flowscope_proto::flowscope::v1::{
    ConntrackEntry, ConntrackState, ListConntrackRequest, inspector_client::InspectorClient,
};

use super::Context;
use crate::client;
use crate::output::{clean, tabwrite};

/// Examples and exit status, shown after `flowctl ct --help`.
pub const AFTER_HELP: &str = "\
Examples:
  Every connection the node tracks, newest first:
    flowctl ct list
  pod-a's connections to 1.0.0.1, with packet and byte counts per direction:
    flowctl ct list --ip 10.244.0.213 --ip 1.0.0.1 --protocol tcp
  The lab's `cilium bpf ct list global` form:
    flowctl ct list -o cilium
  One node through the relay:
    flowctl ct list --node node-1 --server relay:4245

Exit status: 0 success, 1 error (server unreachable, request failed), 2 usage error.";

/// `flowctl ct` subcommands.
#[derive(Debug, Subcommand)]
pub enum CtCommand {
    /// List conntrack entries: tuple, state, expiry, per-direction packets and bytes, TCP flags
    /// seen, source identity, interface.
    List(CtListArgs),
}

/// `flowctl ct` flags.
#[derive(Debug, Args)]
pub struct CtArgs {
    #[command(subcommand)]
    pub command: CtCommand,
}

/// Output formats of `ct list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CtFormat {
    /// An aligned table.
    Table,
    /// One line per entry in the style of `cilium bpf ct list global`.
    Cilium,
    /// One JSON object per entry per line (protojson).
    Json,
}

/// `flowctl ct list` flags.
#[derive(Debug, Args)]
pub struct CtListArgs {
    #[command(flatten)]
    pub filter: super::TupleFilterArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: CtFormat,
}

/// Runs `flowctl ct …`.
pub async fn run(args: &CtArgs, ctx: &Context) -> anyhow::Result<()> {
    let CtCommand::List(args) = &args.command;
    let connect = ctx.connect_options()?;
    let channel = client::connect(&connect).await?;
    let mut inspector = InspectorClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let req = ListConntrackRequest {
        ip: args.filter.ip.clone(),
        port: args.filter.port.clone(),
        protocol: args.filter.protocol.clone(),
        node_name: args.filter.node.clone(),
        limit: args.filter.limit,
    };
    let resp = client::within(&connect, "ListConntrack", inspector.list_conntrack(req))
        .await?
        .into_inner();
    let mut out = io::stdout().lock();
    out.write_all(render(&resp.entries, args.output)?.as_bytes())?;
    if resp.truncated {
        writeln!(io::stderr(), "(truncated at --limit {})", args.filter.limit)?;
    }
    for n in &resp.unavailable_nodes {
        writeln!(io::stderr(), "node {} is unavailable", clean(n))?;
    }
    out.flush()?;
    Ok(())
}

fn flags(f: &Option<TcpFlags>) -> String {
    f.as_ref()
        .map(|f| f.names().collect::<Vec<_>>().join(","))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

fn endpoint(ip: &str, port: u32, icmp_id: u32) -> String {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    if icmp_id != 0 {
        format!("{host} id {icmp_id}")
    } else {
        format!("{host}:{port}")
    }
}

fn state(e: &ConntrackEntry) -> &'static str {
    match ConntrackState::try_from(e.state) {
        Ok(ConntrackState::New) => "NEW",
        Ok(ConntrackState::Established) => "ESTABLISHED",
        Ok(ConntrackState::Related) => "RELATED",
        Ok(ConntrackState::Closing) => "CLOSING",
        _ => "-",
    }
}

fn direction(e: &ConntrackEntry) -> &'static str {
    if e.direction == TrafficDirection::Ingress as i32 {
        "IN"
    } else {
        "OUT"
    }
}

fn expires(e: &ConntrackEntry) -> String {
    e.expires_in
        .as_ref()
        .map(|d| format!("{}s", d.seconds))
        .unwrap_or_else(|| "-".into())
}

/// The entries in `format`.
pub fn render(entries: &[ConntrackEntry], format: CtFormat) -> anyhow::Result<String> {
    let mut s = String::new();
    match format {
        CtFormat::Json => {
            for e in entries {
                s.push_str(&flowscope_proto::json::to_json(e).context("encoding an entry")?);
                s.push('\n');
            }
        }
        CtFormat::Cilium => {
            for e in entries {
                let t = e.tuple.clone().unwrap_or_default();
                s.push_str(&format!(
                    "{} {} {} -> {} expires={} RxPackets={} RxBytes={} TxPackets={} TxBytes={} TxFlagsSeen={} RxFlagsSeen={} Flags={:#x} SourceSecurityID={} IfIndex={}\n",
                    clean(&e.protocol_name),
                    direction(e),
                    endpoint(&t.source_ip, t.source_port, t.icmp_id),
                    endpoint(&t.destination_ip, t.destination_port, 0),
                    expires(e),
                    e.rx_packets,
                    e.rx_bytes,
                    e.tx_packets,
                    e.tx_bytes,
                    flags(&e.tx_tcp_flags),
                    flags(&e.rx_tcp_flags),
                    e.flags.as_ref().map(|f| f.raw).unwrap_or(0),
                    e.source_identity,
                    e.interface.as_ref().map(|i| i.index).unwrap_or(0),
                ));
            }
        }
        CtFormat::Table => {
            let mut rows = vec![
                [
                    "PROTO",
                    "DIR",
                    "SOURCE",
                    "DESTINATION",
                    "STATE",
                    "EXPIRES",
                    "TX PKTS/BYTES",
                    "RX PKTS/BYTES",
                    "FLAGS TX/RX",
                    "IDENTITY",
                    "INTERFACE",
                    "NODE",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for e in entries {
                let t = e.tuple.clone().unwrap_or_default();
                rows.push(vec![
                    clean(&e.protocol_name).into_owned(),
                    direction(e).into(),
                    clean(&endpoint(&t.source_ip, t.source_port, t.icmp_id)).into_owned(),
                    clean(&endpoint(&t.destination_ip, t.destination_port, 0)).into_owned(),
                    state(e).into(),
                    expires(e),
                    format!("{}/{}", e.tx_packets, e.tx_bytes),
                    format!("{}/{}", e.rx_packets, e.rx_bytes),
                    format!("{}/{}", flags(&e.tx_tcp_flags), flags(&e.rx_tcp_flags)),
                    e.source_identity.to_string(),
                    e.interface
                        .as_ref()
                        .map(|i| clean(&i.name).into_owned())
                        .unwrap_or_default(),
                    clean(&e.node_name).into_owned(),
                ]);
            }
            s = tabwrite(&rows);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::flowscope::v1::Tuple;

    fn entry() -> ConntrackEntry {
        ConntrackEntry {
            protocol: 6,
            protocol_name: "TCP".into(),
            tuple: Some(Tuple {
                source_ip: "10.244.0.213".into(),
                destination_ip: "1.0.0.1".into(),
                source_port: 46486,
                destination_port: 80,
                icmp_id: 0,
            }),
            direction: TrafficDirection::Egress as i32,
            state: ConntrackState::Closing as i32,
            tx_packets: 6,
            tx_bytes: 415,
            rx_packets: 4,
            rx_bytes: 614,
            tx_tcp_flags: Some(TcpFlags {
                syn: true,
                ack: true,
                fin: true,
                ..Default::default()
            }),
            source_identity: 42837,
            expires_in: Some(flowscope_proto::wkt::Duration {
                seconds: 9,
                nanos: 0,
            }),
            node_name: "node-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn cilium_line_reads_like_the_lab() {
        let s = render(&[entry()], CtFormat::Cilium).unwrap();
        assert!(
            s.starts_with("TCP OUT 10.244.0.213:46486 -> 1.0.0.1:80 expires=9s RxPackets=4 RxBytes=614 TxPackets=6 TxBytes=415"),
            "{s}"
        );
        assert!(s.contains("SourceSecurityID=42837"), "{s}");
    }

    #[test]
    fn table_has_both_directions() {
        let s = render(&[entry()], CtFormat::Table).unwrap();
        let line = s.lines().nth(1).unwrap();
        assert!(
            line.contains("10.244.0.213:46486")
                && line.contains("6/415")
                && line.contains("4/614")
                && line.contains("CLOSING"),
            "{s}"
        );
    }
}
