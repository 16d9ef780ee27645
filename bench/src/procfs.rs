//! Per-process facts from /proc: resident memory, CPU ticks, context switches.

/// One `kB` field of /proc/PID/status.
fn status_kib(pid: i32, name: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
}

/// Resident set size now and its peak (`VmRSS`, `VmHWM`), in KiB.
pub fn rss_kib(pid: i32) -> Option<(u64, u64)> {
    Some((status_kib(pid, "VmRSS:")?, status_kib(pid, "VmHWM:")?))
}

/// The resident set now by kind, in KiB: anonymous (heap, stacks) and file-backed (the
/// binary's pages, and mappings of kernel memory such as a BPF ring buffer: its data pages are
/// mapped twice, so a 4 MiB ring counts 8 MiB here).
pub fn rss_split_kib(pid: i32) -> Option<(u64, u64)> {
    Some((status_kib(pid, "RssAnon:")?, status_kib(pid, "RssFile:")?))
}

/// `utime + stime` of the process (all live threads), in µs.
pub fn cpu_usec(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), i.e. 12 and 13 after the state field at index 0.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000 / hz)
}

/// Context switches (voluntary + involuntary) of every live thread of the process: a process
/// that sleeps until there is work switches a few times per wake-up; a busy poller either
/// switches constantly or burns CPU without switching.
pub fn context_switches(pid: i32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut total = 0;
    for t in dir.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        for l in s.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// Number of threads of the process.
pub fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// CPU time used by this process so far (`getrusage(RUSAGE_SELF)`), in µs.
pub fn self_cpu_usec() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id() as i32;
        let (rss, hwm) = rss_kib(pid).unwrap();
        assert!(rss > 0 && hwm >= rss);
        let (anon, file) = rss_split_kib(pid).unwrap();
        assert!(anon > 0 && file > 0);
        assert!(cpu_usec(pid).is_some());
        assert!(context_switches(pid) > 0);
        assert!(threads(pid) >= 1);
    }
}
