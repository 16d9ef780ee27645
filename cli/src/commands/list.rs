//! `flowctl list namespaces|nodes`: Hubble's `hubble list`. `list nodes` is `flowctl nodes`.

use std::io::{self, Write};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use flowscope_proto::observer::observer_client::ObserverClient;
use flowscope_proto::observer::{GetNamespacesRequest, Namespace};

use super::{Context, nodes};
use crate::client;
use crate::output::{clean, tabwrite};

/// Examples and exit status, shown after `flowctl list --help`.
pub const AFTER_HELP: &str = "\
Examples:
  The namespaces of the pods in recent flows:
    flowctl list namespaces
  With their clusters, as JSON:
    flowctl list namespaces -o json
  The nodes behind the relay (the same as `flowctl nodes`):
    flowctl list nodes --server relay.example:4245

Exit status: 0 success, 1 error (server unreachable, request failed), 2 usage error.";

/// `flowctl list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// What to list.
    #[command(subcommand)]
    pub what: ListCommand,
}

/// What `flowctl list` lists.
#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// The namespaces of the pods seen in recent flows (GetNamespaces).
    Namespaces(NamespacesArgs),
    /// The nodes behind the server, as `flowctl nodes` lists them.
    Nodes(nodes::NodesArgs),
}

/// `flowctl list namespaces -o`, Hubble's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NamespacesFormat {
    /// One NAMESPACE column (the default).
    Table,
    /// NAMESPACE and CLUSTER.
    Wide,
    /// The namespaces as a JSON array (protojson objects).
    Json,
}

/// `flowctl list namespaces` flags.
#[derive(Debug, Args)]
pub struct NamespacesArgs {
    /// Output format.
    #[arg(
        short = 'o',
        long,
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub output: NamespacesFormat,
}

/// Runs `flowctl list …`.
pub async fn run(args: &ListArgs, ctx: &Context) -> anyhow::Result<()> {
    match &args.what {
        ListCommand::Nodes(nodes_args) => nodes::run(nodes_args, ctx).await,
        ListCommand::Namespaces(ns_args) => {
            let connect = ctx.connect_options()?;
            let channel = client::connect(&connect).await?;
            let mut observer = ObserverClient::new(channel);
            let request = tonic::Request::new(GetNamespacesRequest {});
            let namespaces =
                client::within(&connect, "GetNamespaces", observer.get_namespaces(request))
                    .await?
                    .into_inner()
                    .namespaces;
            let text = render(&namespaces, ns_args.output).context("encoding the namespaces")?;
            let mut stdout = io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// The namespaces in `format`, in the server's order (Hubble's servers sort them).
pub fn render(namespaces: &[Namespace], format: NamespacesFormat) -> anyhow::Result<String> {
    if format == NamespacesFormat::Json {
        let values = namespaces
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(serde_json::to_string_pretty(&values)? + "\n");
    }
    let wide = format == NamespacesFormat::Wide;
    let mut rows = vec![if wide {
        vec!["NAMESPACE".to_string(), "CLUSTER".to_string()]
    } else {
        vec!["NAMESPACE".to_string()]
    }];
    for ns in namespaces {
        let mut row = vec![clean(&ns.namespace).into_owned()];
        // Hubble leaves the cell out, not empty, when a namespace has no cluster.
        if wide && !ns.cluster.is_empty() {
            row.push(clean(&ns.cluster).into_owned());
        }
        rows.push(row);
    }
    Ok(tabwrite(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaces() -> Vec<Namespace> {
        vec![
            Namespace {
                cluster: "prod".into(),
                namespace: "default".into(),
            },
            Namespace {
                cluster: "prod".into(),
                namespace: "kube-system".into(),
            },
        ]
    }

    #[test]
    fn table_and_wide() {
        assert_eq!(
            render(&namespaces(), NamespacesFormat::Table).unwrap(),
            "NAMESPACE\ndefault\nkube-system\n"
        );
        assert_eq!(
            render(&namespaces(), NamespacesFormat::Wide).unwrap(),
            "NAMESPACE     CLUSTER\ndefault       prod\nkube-system   prod\n"
        );
    }

    #[test]
    fn json_is_protojson() {
        let text = render(&namespaces()[..1], NamespacesFormat::Json).unwrap();
        assert_eq!(
            text,
            "[\n  {\n    \"cluster\": \"prod\",\n    \"namespace\": \"default\"\n  }\n]\n"
        );
        assert_eq!(render(&[], NamespacesFormat::Json).unwrap(), "[]\n");
    }
}
