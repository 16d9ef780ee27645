//! `flowctl nodes`: GetNodes as a table, like `hubble list nodes`.

use std::io::{self, Write};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use flowscope_proto::observer::observer_client::ObserverClient;
use flowscope_proto::observer::{GetNodesRequest, Node};
use flowscope_proto::relay::NodeState;

use super::Context;
use super::status::go_duration;
use crate::client;
use crate::output::{clean, tabwrite};

/// Examples and exit status, shown after `flowctl nodes --help`.
pub const AFTER_HELP: &str = "\
Examples:
  The nodes the relay streams from, and how busy each is:
    flowctl nodes --server relay.example:4245
  With versions, addresses and TLS:
    flowctl nodes -o wide

Exit status: 0 success, 1 error (server unreachable, request failed), 2 usage error.";

/// `flowctl nodes -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NodesFormat {
    /// NAME, STATUS, AGE, FLOWS/S, CURRENT/MAX-FLOWS (the default).
    Table,
    /// The table plus VERSION, ADDRESS and TLS.
    Wide,
    /// The nodes as a JSON array (protojson objects).
    Json,
}

/// `flowctl nodes` flags.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Output format.
    #[arg(
        short = 'o',
        long,
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub output: NodesFormat,
}

/// Runs `flowctl nodes`.
pub async fn run(args: &NodesArgs, ctx: &Context) -> anyhow::Result<()> {
    let connect = ctx.connect_options()?;
    let channel = client::connect(&connect).await?;
    let request = tonic::Request::new(GetNodesRequest {});
    let mut observer = ObserverClient::new(channel);
    let mut nodes = client::within(&connect, "GetNodes", observer.get_nodes(request))
        .await?
        .into_inner()
        .nodes;
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let text = render(&nodes, args.output).context("encoding the nodes")?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// The nodes in `format`.
pub fn render(nodes: &[Node], format: NodesFormat) -> anyhow::Result<String> {
    const NA: &str = "N/A";
    if format == NodesFormat::Json {
        let values = nodes
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(serde_json::to_string_pretty(&values)? + "\n");
    }
    let wide = format == NodesFormat::Wide;
    let mut header: Vec<String> = ["NAME", "STATUS", "AGE", "FLOWS/S", "CURRENT/MAX-FLOWS"]
        .map(String::from)
        .to_vec();
    if wide {
        header.extend(["VERSION", "ADDRESS", "TLS"].map(String::from));
    }
    let mut rows = vec![header];
    for node in nodes {
        let uptime = node.uptime_ns / 1_000_000_000;
        let (age, rate) = if uptime > 0 {
            (
                go_duration(uptime),
                format!("{:.2}", node.seen_flows as f64 / uptime as f64),
            )
        } else {
            (NA.to_string(), NA.to_string())
        };
        let flows = if node.max_flows > 0 {
            format!(
                "{}/{} ({:6.2}%)",
                node.num_flows,
                node.max_flows,
                node.num_flows as f64 / node.max_flows as f64 * 100.0
            )
        } else {
            NA.to_string()
        };
        let state = match NodeState::try_from(node.state) {
            Ok(NodeState::NodeConnected) => "Connected",
            Ok(NodeState::NodeUnavailable) => "Unavailable",
            Ok(NodeState::NodeGone) => "Gone",
            Ok(NodeState::NodeError) => "Error",
            _ => "Unknown",
        };
        let mut row = vec![
            clean(&node.name).into_owned(),
            state.into(),
            age,
            rate,
            flows,
        ];
        if wide {
            let version = if node.version.is_empty() {
                NA.into()
            } else {
                clean(&node.version).into_owned()
            };
            let tls = match &node.tls {
                Some(tls) if tls.enabled => "Enabled",
                Some(_) => "Disabled",
                None => NA,
            };
            row.extend([version, clean(&node.address).into_owned(), tls.into()]);
        }
        rows.push(row);
    }
    Ok(tabwrite(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::observer::Tls;

    fn nodes() -> Vec<Node> {
        vec![
            Node {
                name: "node-1".into(),
                version: "0.1.0".into(),
                address: "10.0.0.1:4244".into(),
                state: NodeState::NodeConnected as i32,
                tls: Some(Tls {
                    enabled: true,
                    server_name: "node-1.flowscope".into(),
                }),
                uptime_ns: 7_200_000_000_000,
                num_flows: 4095,
                max_flows: 4095,
                seen_flows: 72_000,
            },
            Node {
                name: "node-2".into(),
                address: "10.0.0.2:4244".into(),
                state: NodeState::NodeUnavailable as i32,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn table_golden() {
        assert_eq!(
            render(&nodes(), NodesFormat::Table).unwrap(),
            "NAME     STATUS        AGE      FLOWS/S   CURRENT/MAX-FLOWS\n\
             node-1   Connected     2h0m0s   10.00     4095/4095 (100.00%)\n\
             node-2   Unavailable   N/A      N/A       N/A\n"
        );
    }

    #[test]
    fn wide_golden() {
        assert_eq!(
            render(&nodes(), NodesFormat::Wide).unwrap(),
            "NAME     STATUS        AGE      FLOWS/S   CURRENT/MAX-FLOWS     VERSION   ADDRESS         TLS\n\
             node-1   Connected     2h0m0s   10.00     4095/4095 (100.00%)   0.1.0     10.0.0.1:4244   Enabled\n\
             node-2   Unavailable   N/A      N/A       N/A                   N/A       10.0.0.2:4244   N/A\n"
        );
    }

    #[test]
    fn json_is_protojson() {
        let text = render(&nodes()[1..], NodesFormat::Json).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value[0]["state"], "NODE_UNAVAILABLE");
        assert_eq!(value[0]["name"], "node-2");
    }
}
