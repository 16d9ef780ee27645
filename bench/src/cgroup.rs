//! CPU time of one process (and its threads) from a cgroup v2 of its own.
//!
//! The harness creates `flowscope-bench-<pid>-<n>` under the cgroup v2 mount (`/sys/fs/cgroup`
//! on a pure v2 system, `/sys/fs/cgroup/unified` in hybrid mode), moves the measured process
//! into it, and reads `usage_usec` from its `cpu.stat`, which cgroup v2 keeps for every cgroup
//! even without the cpu controller. The kernel accounts it exactly at each context switch, so
//! a difference over a window is the process's CPU time in that window (threads that exited
//! included). The guard moves any process left back to the root and removes the directory.
//!
//! Without cgroup v2, [`CpuMeter`] falls back to `utime + stime` of `/proc/<pid>/stat` (the
//! process's own accounting, in clock ticks).

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Where cgroup v2 is mounted, if it is.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fs) = (f.next()?, f.next()?, f.next()?);
        (fs == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// A cgroup v2 made for one measured process; removed on drop.
#[derive(Debug)]
pub struct CpuGroup {
    path: PathBuf,
    root: PathBuf,
}

impl CpuGroup {
    /// Creates a new, empty cgroup; None without cgroup v2 (or without the right to create).
    pub fn create(tag: &str) -> Option<CpuGroup> {
        let root = cgroup2_root()?;
        let name = format!(
            "flowscope-bench-{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = root.join(name);
        std::fs::create_dir(&path).ok()?;
        let g = CpuGroup { path, root };
        // cpu.stat must be readable, or the group is of no use.
        g.usage_usec()?;
        Some(g)
    }

    /// Moves process `pid` (all its threads) into the group.
    pub fn add(&self, pid: i32) -> std::io::Result<()> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
    }

    /// CPU time used by the processes of the group since it was created, in µs.
    pub fn usage_usec(&self) -> Option<u64> {
        cpu_stat_usage(&self.path)
    }

    /// The group's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn cpu_stat_usage(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("cpu.stat"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // A process still there (should not happen: the owner kills it first) goes back to the
        // root, else the directory cannot be removed.
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        // A process that just exited leaves the group asynchronously: retry for a second.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}

/// Removes cgroups left by runs that were killed before they could clean up (their pid is
/// gone).
pub fn remove_stale() {
    let Some(root) = cgroup2_root() else { return };
    let Ok(dir) = std::fs::read_dir(&root) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("flowscope-bench-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// CPU time of one process: its cgroup if there is one, else its `/proc/<pid>/stat`.
#[derive(Debug)]
pub enum CpuMeter {
    /// Exact, from the process's own cgroup.
    Cgroup(CpuGroup),
    /// From `/proc/<pid>/stat` (clock-tick resolution; threads that exited are lost).
    Proc(i32),
}

impl CpuMeter {
    /// Puts `pid` in a cgroup of its own if possible.
    pub fn attach(pid: i32, tag: &str) -> CpuMeter {
        match CpuGroup::create(tag) {
            Some(g) if g.add(pid).is_ok() => CpuMeter::Cgroup(g),
            _ => CpuMeter::Proc(pid),
        }
    }

    /// CPU time used so far, in µs (0 if it cannot be read).
    pub fn usec(&self) -> u64 {
        match self {
            CpuMeter::Cgroup(g) => g.usage_usec().unwrap_or(0),
            CpuMeter::Proc(pid) => crate::procfs::cpu_usec(*pid).unwrap_or(0),
        }
    }

    /// Where the numbers come from, for the report.
    pub fn source(&self) -> &'static str {
        match self {
            CpuMeter::Cgroup(_) => "cgroup v2 cpu.stat",
            CpuMeter::Proc(_) => "/proc/<pid>/stat",
        }
    }
}

/// CPU used between two readings, as a fraction of one core.
pub fn cores(usec_before: u64, usec_after: u64, wall: Duration) -> f64 {
    usec_after.saturating_sub(usec_before) as f64 / 1e6 / wall.as_secs_f64().max(1e-9)
}
