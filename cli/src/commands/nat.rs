//! `flowctl nat list`: the node kernel's NAT translations (the lab read them from
//! `/proc/net/nf_conntrack`), from the agent over ctnetlink.

use std::io::{self, Write};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use flowscope_proto::flowscope::v1::{
    ListNatRequest, NatEntry, NatKind, Tuple, inspector_client::InspectorClient,
};

use super::Context;
use crate::client;
use crate::output::{clean, tabwrite};

/// Examples and exit status, shown after `flowctl nat --help`.
pub const AFTER_HELP: &str = "\
Examples:
  What MASQUERADE did to pod-a's connections:
    flowctl nat list --ip 10.244.0.213
  Every translated connection to port 80, as JSON:
    flowctl nat list --port 80 -o json

Exit status: 0 success, 1 error (server unreachable, request failed), 2 usage error.";

/// `flowctl nat` subcommands.
#[derive(Debug, Subcommand)]
pub enum NatCommand {
    /// List translated connections: original tuple => translated source/destination.
    List(NatListArgs),
}

/// `flowctl nat` flags.
#[derive(Debug, Args)]
pub struct NatArgs {
    #[command(subcommand)]
    pub command: NatCommand,
}

/// Output formats of `nat list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NatFormat {
    /// One aligned line per translation: `orig -> dst  =>  translated`.
    Table,
    /// One JSON object per entry per line (protojson).
    Json,
}

/// `flowctl nat list` flags.
#[derive(Debug, Args)]
pub struct NatListArgs {
    #[command(flatten)]
    pub filter: super::TupleFilterArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: NatFormat,
}

/// Runs `flowctl nat …`.
pub async fn run(args: &NatArgs, ctx: &Context) -> anyhow::Result<()> {
    let NatCommand::List(args) = &args.command;
    let connect = ctx.connect_options()?;
    let channel = client::connect(&connect).await?;
    let mut inspector = InspectorClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let req = ListNatRequest {
        ip: args.filter.ip.clone(),
        port: args.filter.port.clone(),
        protocol: args.filter.protocol.clone(),
        node_name: args.filter.node.clone(),
        limit: args.filter.limit,
    };
    let resp = client::within(&connect, "ListNat", inspector.list_nat(req))
        .await?
        .into_inner();
    let mut out = io::stdout().lock();
    out.write_all(render(&resp.entries, args.output)?.as_bytes())?;
    for n in &resp.unavailable_nodes {
        writeln!(io::stderr(), "node {} is unavailable", clean(n))?;
    }
    out.flush()?;
    Ok(())
}

fn hostport(ip: &str, port: u32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn side(t: &Option<Tuple>, src: bool) -> String {
    let t = t.clone().unwrap_or_default();
    let (ip, port) = if src {
        (t.source_ip, t.source_port)
    } else {
        (t.destination_ip, t.destination_port)
    };
    if t.icmp_id != 0 && src {
        format!("{ip} id {}", t.icmp_id)
    } else if t.icmp_id != 0 {
        ip
    } else {
        hostport(&ip, port)
    }
}

/// The entries in `format`.
pub fn render(entries: &[NatEntry], format: NatFormat) -> anyhow::Result<String> {
    if format == NatFormat::Json {
        let mut s = String::new();
        for e in entries {
            s.push_str(&flowscope_proto::json::to_json(e).context("encoding an entry")?);
            s.push('\n');
        }
        return Ok(s);
    }
    let mut rows = vec![
        [
            "PROTO",
            "ORIGINAL",
            "",
            "",
            "",
            "TRANSLATED",
            "KIND",
            "STATE",
            "TIMEOUT",
            "NODE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for e in entries {
        let mut translated = Vec::new();
        if !e.translated_source_ip.is_empty() {
            translated.push(format!(
                "src {}",
                hostport(&e.translated_source_ip, e.translated_source_port)
            ));
        }
        if !e.translated_destination_ip.is_empty() {
            translated.push(format!(
                "dst {}",
                hostport(&e.translated_destination_ip, e.translated_destination_port)
            ));
        }
        let kind = match NatKind::try_from(e.kind) {
            Ok(NatKind::Snat) => "SNAT",
            Ok(NatKind::Dnat) => "DNAT",
            Ok(NatKind::Both) => "SNAT+DNAT",
            _ => "-",
        };
        rows.push(vec![
            clean(&e.protocol_name).into_owned(),
            clean(&side(&e.original, true)).into_owned(),
            "->".into(),
            clean(&side(&e.original, false)).into_owned(),
            "=>".into(),
            clean(&translated.join(" ")).into_owned(),
            kind.into(),
            clean(if e.state.is_empty() { "-" } else { &e.state }).into_owned(),
            e.timeout
                .as_ref()
                .map(|d| format!("{}s", d.seconds))
                .unwrap_or_default(),
            clean(&e.node_name).into_owned(),
        ]);
    }
    Ok(tabwrite(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_line() {
        let e = NatEntry {
            protocol_name: "TCP".into(),
            original: Some(Tuple {
                source_ip: "10.244.0.213".into(),
                destination_ip: "1.0.0.1".into(),
                source_port: 41708,
                destination_port: 80,
                icmp_id: 0,
            }),
            kind: NatKind::Snat as i32,
            translated_source_ip: "198.51.100.10".into(),
            translated_source_port: 41708,
            state: "TIME_WAIT".into(),
            ..Default::default()
        };
        let s = render(&[e], NatFormat::Table).unwrap();
        let line = s.lines().nth(1).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            &words[..7],
            [
                "TCP",
                "10.244.0.213:41708",
                "->",
                "1.0.0.1:80",
                "=>",
                "src",
                "198.51.100.10:41708"
            ]
        );
        assert!(line.contains("SNAT") && line.contains("TIME_WAIT"));
    }
}
