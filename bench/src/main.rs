//! `bench`: flowscope's benchmark harness (issue 9). See the crate docs and
//! `docs/benchmarks.md`.

use std::{io::Write as _, process::ExitCode, time::Duration};

use bench::{
    machine,
    stats::Report,
    suite::{self, Ctx, Plan},
};
use clap::Parser;

/// Measures what flowscope costs and how far it goes, on the reference scenario of the test
/// bed, and prints a Markdown table (median, spread, goal, met or missed by how much).
///
/// Run it as root from target/release (it starts the release binaries next to it):
///   cargo build --release -p monitor-agent -p flowscope-relay -p bench
///   sudo target/release/bench                 # everything, about 15 minutes
///   sudo target/release/bench --only 1,2      # some benchmarks
///   sudo target/release/bench --smoke         # keeps the harness working (< 1 minute)
///
/// Benchmarks: 1 datapath overhead, 2 BPF cost per packet, 3 agent pipeline ceiling, 4 burst,
/// 5 relay merge, 6 memory, 7 idle, 8 micro (criterion: cargo bench -p bench).
#[derive(Debug, Parser)]
#[command(verbatim_doc_comment)]
struct Cli {
    /// Benchmarks to run, by number (comma-separated); default: all.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=8))]
    only: Vec<u8>,
    /// Quick run that only checks that the harness works (1 round, short windows).
    #[arg(long)]
    smoke: bool,
    /// Rounds per configuration (configurations are interleaved within a round).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,
    /// Also measure design variants (aggregation low, poll interval, queue/history sizes, relay
    /// sort buffer, an idle follower).
    #[arg(long)]
    variants: bool,
    /// Length of the sustained run of benchmark 3, in seconds.
    #[arg(long, default_value_t = 120)]
    sustain: u64,
    /// Rate of the sustained run of benchmark 3, in thousands of events per second.
    #[arg(long, value_name = "K", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=2000))]
    sustain_rate: u64,
    /// The follower of benchmarks 3, 4 and 6 decodes every flow in full (as a Hubble client
    /// does) instead of reading only its time; in the harness's process, on the agent's two
    /// cores, the full decode was what lost events first at 400 k events/s.
    #[arg(long)]
    full_follower: bool,
    /// Length of the idle run of benchmark 7, in seconds.
    #[arg(long, default_value_t = 60)]
    idle: u64,
    /// An extra option for the agents of benchmarks 2 and 3 (repeatable), e.g.
    /// `--agent-arg=--kernel-filter --agent-arg='--ip 192.0.2.1'` to measure a kernel filter,
    /// `--agent-arg=--history-size=16383` for a follower with more slack.
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// Also write the Markdown report to this file.
    #[arg(long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "error: the benchmarks build network namespaces and load BPF programs: run as root"
        );
        return ExitCode::from(2);
    }
    bench::install_interrupt_handler();
    bench::cgroup::remove_stale();
    let plan = Plan {
        smoke: cli.smoke,
        reps: if cli.smoke { 1 } else { cli.reps as usize },
        variants: cli.variants,
        sustain: Duration::from_secs(if cli.smoke { 2 } else { cli.sustain.max(1) }),
        sustain_rate: cli.sustain_rate * 1000,
        full_follower: cli.full_follower,
        idle: Duration::from_secs(if cli.smoke { 2 } else { cli.idle.max(1) }),
        agent_args: cli.agent_args,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let m = machine::describe();
    let started = std::time::SystemTime::now();
    let load_start = machine::loadavg_text();
    eprintln!("machine: {m}; {load_start}");
    let mut report = Report::default();
    let mut failed = Vec::new();
    for b in suite::ALL
        .iter()
        .filter(|b| cli.only.is_empty() || cli.only.contains(&b.id))
    {
        if bench::interrupted() {
            break;
        }
        eprintln!("== {}. {} ({})", b.id, b.name, machine::loadavg_text());
        let t = std::time::Instant::now();
        let mut ctx = Ctx {
            rt: &rt,
            plan: &plan,
            report: &mut report,
        };
        // A benchmark that panics (a scenario that cannot be built) must not stop the others;
        // its guards have run by the time the panic is caught.
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (b.run)(&mut ctx)));
        let err = match res {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(p) => Some(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into()),
            ),
        };
        if let Some(e) = err {
            eprintln!("error: benchmark {} failed: {e}", b.id);
            report.note(format!("{}: **did not complete**: {e}", b.id));
            failed.push(b.id);
        }
        eprintln!("   {} s", t.elapsed().as_secs());
    }
    let header = vec![
        format!(
            "### flowscope benchmarks, {}",
            monitor_agent::decode::event::format_rfc3339(started)
                .split('.')
                .next()
                .unwrap_or_default()
                .replace('T', " ")
                + " UTC"
        ),
        String::new(),
        format!("- machine: {m}"),
        format!(
            "- commit: {} (plus the working tree)",
            machine::commit().unwrap_or_else(|| "unknown".into())
        ),
        format!(
            "- mode: {}{}, {} round(s) per configuration, interleaved",
            if plan.smoke { "smoke" } else { "full" },
            if plan.variants { " + variants" } else { "" },
            plan.reps
        ),
        format!(
            "- load: at start {load_start}; at end {} (a 2-core machine shared with other work \
             gives noisy numbers)",
            machine::loadavg_text()
        ),
    ];
    let md = report.markdown(&header);
    println!("{md}");
    let _ = std::io::stdout().flush();
    if let Some(path) = &cli.output
        && let Err(e) = std::fs::write(path, &md)
    {
        eprintln!("error: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if bench::interrupted() {
        eprintln!("interrupted: partial results above");
        return ExitCode::from(130);
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
