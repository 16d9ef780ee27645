//! `flowctl status`: the gRPC health check, then ServerStatus (flows held,
//! flow rate, connected and unavailable nodes), printed as `hubble status`
//! prints them.

use std::io::{self, Write};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use flowscope_proto::observer::ServerStatusResponse;
use flowscope_proto::observer::observer_client::ObserverClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::Context;
use crate::client;
use crate::output::tabwrite;

/// Examples and exit status, shown after `flowctl status --help`.
pub const AFTER_HELP: &str = "\
Examples:
  Is the local agent up, and how full is its flow buffer?
    sudo flowctl status
  The relay's view: how many nodes it reaches, and which it cannot:
    flowctl status --server relay.example:4245
  For scripts:
    flowctl status -o json

Exit status: 0 healthy, 1 unreachable or not serving, 2 usage error.";

/// `flowctl status -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// A few lines for people (the default).
    Compact,
    /// KEY: VALUE lines.
    Dict,
    /// The ServerStatusResponse as protojson.
    Json,
    /// Tab-aligned columns.
    Table,
}

/// `flowctl status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(
        short = 'o',
        long,
        value_enum,
        default_value = "compact",
        value_name = "FORMAT"
    )]
    pub output: StatusFormat,
}

/// Runs `flowctl status`.
pub async fn run(args: &StatusArgs, ctx: &Context) -> anyhow::Result<()> {
    let connect = ctx.connect_options()?;
    let channel = client::connect(&connect).await?;
    let mut stdout = io::stdout().lock();

    let mut health = HealthClient::new(channel.clone());
    let request = tonic::Request::new(HealthCheckRequest {
        service: flowscope_proto::HUBBLE_HEALTH_SERVICE.into(),
    });
    let answer = tokio::time::timeout(connect.timeout, health.check(request))
        .await
        .map_err(|_| client::Unreachable {
            addr: connect.server.to_string(),
            cause: format!(
                "no answer to the health check within {} (--timeout)",
                humantime::format_duration(connect.timeout)
            ),
        })?;
    let health_line = match answer {
        Ok(res) => match ServingStatus::try_from(res.into_inner().status) {
            Ok(ServingStatus::Serving) => "Ok".to_string(),
            other => {
                let name = other.map_or("UNKNOWN", |s| s.as_str_name());
                if args.output == StatusFormat::Compact {
                    writeln!(
                        stdout,
                        "Healthcheck (via {}): Unavailable: {name}",
                        connect.server
                    )?;
                }
                anyhow::bail!("the server at {} is not healthy ({name})", connect.server);
            }
        },
        // A server without the health service can still answer the rest.
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            "N/A (no health service)".to_string()
        }
        Err(status) => {
            return Err(client::rpc_error(
                &connect.server,
                "the health check",
                &status,
            ));
        }
    };
    if args.output == StatusFormat::Compact {
        writeln!(
            stdout,
            "Healthcheck (via {}): {health_line}",
            connect.server
        )?;
    }

    let request = tonic::Request::new(Default::default());
    let mut observer = ObserverClient::new(channel);
    let status = client::within(&connect, "ServerStatus", observer.server_status(request))
        .await?
        .into_inner();
    let text = render(&status, args.output).context("encoding the status")?;
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// ServerStatus in `format` (the compact health line aside).
pub fn render(res: &ServerStatusResponse, format: StatusFormat) -> anyhow::Result<String> {
    let connected = res
        .num_connected_nodes
        .map_or("N/A".to_string(), |n| n.to_string());
    let unavailable = res
        .num_unavailable_nodes
        .map_or("N/A".to_string(), |n| n.to_string());
    let mut flows_per_sec = if res.flows_rate > 0.0 {
        format!("{:.2}", res.flows_rate)
    } else {
        "N/A".to_string()
    };
    Ok(match format {
        StatusFormat::Table => tabwrite(&[
            [
                "NUM FLOWS",
                "MAX FLOWS",
                "SEEN FLOWS",
                "FLOWS PER SECOND",
                "UPTIME",
                "NUM CONNECTED NODES",
                "NUM UNAVAILABLE NODES",
                "VERSION",
            ]
            .map(String::from)
            .to_vec(),
            vec![
                grouped(res.num_flows),
                grouped(res.max_flows),
                grouped(res.seen_flows),
                flows_per_sec,
                go_duration(res.uptime_ns / 1_000_000_000),
                connected,
                unavailable,
                output_clean(&res.version),
            ],
        ]),
        StatusFormat::Dict => format!(
            "          NUM FLOWS: {}\n          MAX FLOWS: {}\n         SEEN FLOWS: {}\n   FLOWS PER SECOND: {flows_per_sec}\n             UPTIME: {}\nNUM CONNECTED NODES: {connected}\n NUM UNAVAIL. NODES: {unavailable}\n            VERSION: {}\n",
            grouped(res.num_flows),
            grouped(res.max_flows),
            grouped(res.seen_flows),
            go_duration(res.uptime_ns / 1_000_000_000),
            output_clean(&res.version),
        ),
        StatusFormat::Json => flowscope_proto::json::to_json(res)? + "\n",
        StatusFormat::Compact => {
            let mut out = String::new();
            let ratio = if res.max_flows > 0 {
                format!(
                    " ({:.2}%)",
                    res.num_flows as f64 / res.max_flows as f64 * 100.0
                )
            } else {
                String::new()
            };
            out.push_str(&format!(
                "Current/Max Flows: {}/{}{ratio}\n",
                grouped(res.num_flows),
                grouped(res.max_flows)
            ));
            let uptime_s = res.uptime_ns as f64 / 1e9;
            if flows_per_sec == "N/A" && uptime_s > 0.0 {
                flows_per_sec = format!("{:.2}", res.seen_flows as f64 / uptime_s);
            }
            out.push_str(&format!("Flows/s: {flows_per_sec}\n"));
            if let Some(connected) = res.num_connected_nodes {
                let total = res.num_unavailable_nodes.map_or(String::new(), |u| {
                    format!("/{}", u.saturating_add(connected))
                });
                out.push_str(&format!("Connected Nodes: {connected}{total}\n"));
            }
            if let Some(unavailable) = res.num_unavailable_nodes.filter(|n| *n > 0) {
                let mut names: Vec<String> = res
                    .unavailable_nodes
                    .iter()
                    .map(|n| output_clean(n))
                    .collect();
                names.sort();
                if names.is_empty() {
                    out.push_str(&format!("Unavailable Nodes: {unavailable}\n"));
                } else {
                    // The server lists at most 10; say how many it left out.
                    let listed = u32::try_from(names.len()).unwrap_or(u32::MAX);
                    if unavailable > listed {
                        names.push(format!("and {} more...", unavailable - listed));
                    }
                    out.push_str(&format!(
                        "Unavailable Nodes: {unavailable}\n  - {}\n",
                        names.join("\n  - ")
                    ));
                }
            }
            if !res.version.is_empty() {
                out.push_str(&format!("Version: {}\n", output_clean(&res.version)));
            }
            out
        }
    })
}

fn output_clean(s: &str) -> String {
    crate::output::clean(s).into_owned()
}

/// `1234567` → `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whole seconds as Go prints a `time.Duration`: `1h2m3s`, `4m0s`, `42s`.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_status() -> ServerStatusResponse {
        ServerStatusResponse {
            num_flows: 8190,
            max_flows: 8190,
            seen_flows: 123_456,
            uptime_ns: 3_723_000_000_000,
            num_connected_nodes: Some(2),
            num_unavailable_nodes: Some(1),
            unavailable_nodes: vec!["node-3".into()],
            version: "flowscope-relay 0.1.0".into(),
            flows_rate: 12.5,
        }
    }

    #[test]
    fn compact_golden() {
        assert_eq!(
            render(&relay_status(), StatusFormat::Compact).unwrap(),
            "Current/Max Flows: 8,190/8,190 (100.00%)\n\
             Flows/s: 12.50\n\
             Connected Nodes: 2/3\n\
             Unavailable Nodes: 1\n  - node-3\n\
             Version: flowscope-relay 0.1.0\n"
        );
        // An agent: no node counts, the rate from seen flows and uptime.
        let agent = ServerStatusResponse {
            num_flows: 10,
            max_flows: 4095,
            seen_flows: 100,
            uptime_ns: 50_000_000_000,
            ..Default::default()
        };
        assert_eq!(
            render(&agent, StatusFormat::Compact).unwrap(),
            "Current/Max Flows: 10/4,095 (0.24%)\nFlows/s: 2.00\n"
        );
    }

    #[test]
    fn dict_and_table_golden() {
        assert_eq!(
            render(&relay_status(), StatusFormat::Dict).unwrap(),
            "          NUM FLOWS: 8,190\n          MAX FLOWS: 8,190\n         SEEN FLOWS: 123,456\n   FLOWS PER SECOND: 12.50\n             UPTIME: 1h2m3s\nNUM CONNECTED NODES: 2\n NUM UNAVAIL. NODES: 1\n            VERSION: flowscope-relay 0.1.0\n"
        );
        assert_eq!(
            render(&relay_status(), StatusFormat::Table).unwrap(),
            "NUM FLOWS   MAX FLOWS   SEEN FLOWS   FLOWS PER SECOND   UPTIME   NUM CONNECTED NODES   NUM UNAVAILABLE NODES   VERSION\n\
             8,190       8,190       123,456      12.50              1h2m3s   2                     1                       flowscope-relay 0.1.0\n"
        );
    }

    #[test]
    fn more_unavailable_than_listed() {
        let res = ServerStatusResponse {
            num_connected_nodes: Some(5),
            num_unavailable_nodes: Some(12),
            unavailable_nodes: vec!["b".into(), "a".into()],
            ..Default::default()
        };
        let text = render(&res, StatusFormat::Compact).unwrap();
        assert!(
            text.contains(
                "Connected Nodes: 5/17\nUnavailable Nodes: 12\n  - a\n  - b\n  - and 10 more...\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(240), "4m0s");
        assert_eq!(go_duration(3600), "1h0m0s");
    }
}
