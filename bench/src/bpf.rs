//! Run time and run count of the agent's BPF programs, from the kernel's `bpf_stats`.
//!
//! Statistics are enabled with `BPF_ENABLE_STATS` (the same switch as the sysctl
//! `kernel.bpf_stats_enabled`, but held by a file descriptor): they stay on while the guard
//! lives and turn off by themselves when it is dropped or the harness dies, so no sysctl is
//! left changed. Only the programs of the agent under test count: their ids come from the
//! agent's own file descriptors (`/proc/<pid>/fdinfo`, `prog_id:`), since other agents (tests
//! running in parallel) may load programs with the same names.

use std::{collections::BTreeMap, os::fd::OwnedFd};

use anyhow::Context as _;

/// Keeps `bpf_stats` on while alive.
pub struct StatsGuard(#[expect(dead_code, reason = "held for its Drop (closing the fd)")] OwnedFd);

impl StatsGuard {
    /// Turns run-time statistics on.
    pub fn enable() -> anyhow::Result<StatsGuard> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS (needs CAP_SYS_ADMIN, Linux 5.8+)")?;
        Ok(StatsGuard(fd))
    }
}

/// Ids of the BPF programs process `pid` holds.
pub fn program_ids(pid: i32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for e in dir.flatten() {
        let Ok(s) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if let Some(id) = s
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Run count and total run time of one program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    /// Times the program ran.
    pub runs: u64,
    /// Total time it ran, in ns.
    pub ns: u64,
}

impl ProgStats {
    /// Mean run time in ns (NaN without runs).
    pub fn ns_per_run(&self) -> f64 {
        if self.runs == 0 {
            f64::NAN
        } else {
            self.ns as f64 / self.runs as f64
        }
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &ProgStats) -> ProgStats {
        ProgStats {
            runs: self.runs.saturating_sub(earlier.runs),
            ns: self.ns.saturating_sub(earlier.ns),
        }
    }
}

/// Statistics of the programs with these ids, by program name (programs of the same name are
/// summed).
pub fn snapshot(ids: &[u32]) -> BTreeMap<String, ProgStats> {
    let mut out: BTreeMap<String, ProgStats> = BTreeMap::new();
    for info in aya::programs::loaded_programs().flatten() {
        if !ids.contains(&info.id()) {
            continue;
        }
        let name = info
            .name_as_str()
            .map_or_else(|| format!("prog{}", info.id()), str::to_owned);
        let e = out.entry(name).or_default();
        e.runs += info.run_count();
        e.ns += info.run_time().as_nanos() as u64;
    }
    out
}

/// Per-program differences between two snapshots.
pub fn delta(
    before: &BTreeMap<String, ProgStats>,
    after: &BTreeMap<String, ProgStats>,
) -> BTreeMap<String, ProgStats> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.since(&before.get(k).copied().unwrap_or_default()),
            )
        })
        .collect()
}
