//! flowscope's benchmarks (issue 9): what the agent and the relay cost, and how far they go.
//!
//! The `bench` binary builds the reference scenario of the test bed (node, pod-a, pod-b and
//! world namespaces, MASQUERADE on the node's uplink), runs the real release binaries
//! (`monitor-agent`, `flowscope-relay`) against real traffic, and prints a Markdown table: per
//! metric the median over the repetitions, the spread (min–max and IQR), the goal, and whether
//! it is met and by how much. `docs/benchmarks.md` holds the latest results.
//!
//! Benchmarks are not timed tests: nothing here fails because a number is bad. `--smoke` only
//! keeps the harness working (a few seconds per benchmark, one repetition).
//!
//! Ground rules, for numbers that mean something on a noisy 2-core VM:
//! - configurations are interleaved (A B C A B C …), each repeated (5 by default);
//! - CPU comes from cgroup v2 `cpu.stat` of a cgroup holding only the measured process (or its
//!   `/proc/<pid>/stat` times when there is no cgroup v2), never from `/proc/stat` sampling;
//! - BPF run time comes from the kernel's own `bpf_stats` (enabled for the run through
//!   `BPF_ENABLE_STATS`, which turns itself off when the harness exits, even if it crashes).
//!
//! Everything the harness creates (namespaces, processes, cgroups) is removed by guards with
//! `Drop`, also when a benchmark fails or the run is interrupted (Ctrl-C). Traffic stays inside
//! the scenario's namespaces or on 127.0.0.1.
//!
//! Modules:
//! - [`machine`]: what the machine is and how busy it was;
//! - [`stats`]: medians, spreads, goals and the Markdown report;
//! - [`cgroup`], [`procfs`]: CPU, memory and wake-ups of one process;
//! - [`agent`]: the agent in the scenario's node, its counters, a gRPC follower;
//! - [`load`]: paced UDP floods with many flows, iperf3;
//! - [`bpf`]: per-program run time and count from `bpf_stats`;
//! - [`synth`]: synthetic agents speaking the Observer API (relay benchmark);
//! - [`micro`]: the per-flow operations measured by #8 (criterion and the quick timer);
//! - [`suite`]: the benchmarks themselves, one module each.

pub mod agent;
pub mod bpf;
pub mod cgroup;
pub mod load;
pub mod machine;
pub mod micro;
pub mod procfs;
pub mod stats;
pub mod suite;
pub mod synth;

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set a flag that every benchmark loop checks, so that an
/// interrupted run unwinds through its guards (namespaces, processes, cgroups are removed)
/// instead of dying on the spot.
pub fn install_interrupt_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// True once SIGINT or SIGTERM was received.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Fails when the run was interrupted; loops call it between steps.
pub fn check_interrupt() -> anyhow::Result<()> {
    if interrupted() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d` in small steps, returning early (with an error) if the run is interrupted.
pub fn sleep(d: std::time::Duration) -> anyhow::Result<()> {
    let end = std::time::Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = std::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(std::time::Duration::from_millis(50)));
    }
}
