//! `flowctl completion SHELL`: a completion script generated from the clap
//! definition, so it never goes stale.

use std::io::{self, Write};

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

/// Examples and exit status, shown after `flowctl completion --help`.
pub const AFTER_HELP: &str = "\
Examples:
  bash, for this shell only:
    source <(flowctl completion bash)
  bash, for good:
    flowctl completion bash | sudo tee /etc/bash_completion.d/flowctl >/dev/null
  zsh (a directory of your $fpath):
    flowctl completion zsh > \"${fpath[1]}/_flowctl\"
  fish:
    flowctl completion fish > ~/.config/fish/completions/flowctl.fish

Exit status: 0 success, 2 usage error.";

/// `flowctl completion` arguments.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to generate the script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the script.
pub fn run(args: &CompletionArgs) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut crate::Cli::command(),
        "flowctl",
        &mut script,
    );
    let mut stdout = io::stdout().lock();
    stdout.write_all(&script)?;
    stdout.flush()?;
    Ok(())
}
