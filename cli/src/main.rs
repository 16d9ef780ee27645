//! `flowctl`, flowscope's command line: what users touch.
//!
//! It speaks Hubble's Observer API (flowscope-proto) to the agent's unix
//! socket or to the relay, and prints flows the way `hubble observe` does —
//! plus `cilium monitor` lines, the server's status and its nodes. It depends
//! on the proto crate and on flowscope-filter (the servers' flow matcher, for
//! `observe --input-file`) only: nothing of the agent (aya, the ABI), nothing
//! of the relay.
//!
//! Layout: `commands/` has one module per subcommand, `client` dials the
//! server, `filters` turns filter flags into FlowFilters, `offline` reads
//! flows from Hubble JSON lines, `output/` has one module per output format,
//! `config` reads and writes the optional config file.
//!
//! Errors are printed once, as `error: {err:#}`. A closed stdout
//! (`flowctl observe | head -1`) ends the program quietly with status 0.

mod client;
mod commands;
mod config;
mod filters;
mod offline;
mod output;

use std::io::{self, Write as _};
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser};

use crate::commands::{Command, GlobalArgs};
use crate::filters::UsageError;

/// Shown after `flowctl --help`.
const AFTER_HELP: &str = "\
Examples:
  flowctl observe                         the last 20 flows
  flowctl observe -f --ip 1.0.0.1         follow the flows from or to 1.0.0.1
  flowctl observe --verdict DROPPED       what the kernel dropped, and why
  flowctl status                          is the server healthy, which nodes answer
  flowctl nodes                           the nodes behind the relay
  flowctl list namespaces                 the namespaces of recent flows
  flowctl config set server relay:4245    remember the server in the config file

The server is --server, else $FLOWSCOPE_SERVER, else the config file's
(~/.config/flowctl/config.yaml), else the local agent's socket
unix:///var/run/flowscope/agent.sock when it exists, else the relay at
localhost:4245.

Exit status:
  0  success, including when the output is closed early (`flowctl observe | head -1`)
  1  error: the server cannot be reached, a request failed, output failed
  2  usage error: unknown flag, bad flag value, flags that cannot be combined";

/// flowctl: observe network flows on a node or a whole cluster (agent or
/// relay), the way `hubble observe` does.
#[derive(Debug, Parser)]
#[command(name = "flowctl", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,

    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => {
            // --help and --version come this way too, on stdout, status 0.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let sub_matches = matches
        .subcommand()
        .map(|(_, m)| m.clone())
        .unwrap_or_default();

    // One thread is plenty for one stream, and leaves the machine to others.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    match runtime.block_on(commands::run(cli.command, cli.global, &sub_matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `err` once and picks the exit status.
fn fail(err: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(err) {
        // The reader went away (`| head`): not an error for a Unix tool.
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(io::stderr(), "error: {err:#}");
    if err.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn broken_pipe_anywhere_in_the_chain_is_quiet() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing to stdout");
        assert!(is_broken_pipe(&err));
        let err = anyhow::anyhow!("something else");
        assert!(!is_broken_pipe(&err));
    }

    #[test]
    fn every_subcommand_has_examples_in_its_help() {
        let mut cli = Cli::command();
        cli.build();
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Examples:"),
                "{} has no examples",
                sub.get_name()
            );
            assert!(
                help.contains("Exit status"),
                "{} has no exit status",
                sub.get_name()
            );
        }
    }
}
