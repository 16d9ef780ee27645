//! The test bed: rebuilds the user's scenario (`docs/reference-scenario.md`) in network namespaces
//! and runs the real flowscope binaries against real traffic.
//!
//! Everything it creates lives in namespaces it creates (`fs<pid>-<n>-node`, `-pod-a`,
//! `-pod-b`, `-world`): none is linked to the machine's network, so no packet can leave the
//! machine. [`Scenario`] removes them when dropped, also when a test panics; a namespace left by
//! a killed run (its pid no longer alive) is removed by the next [`Scenario::build`].
//!
//! - [`netns`]: commands and threads inside a namespace;
//! - [`scenario`]: the reference topology;
//! - [`traffic`]: servers and clients on std sockets;
//! - [`dns`]: a real DNS server (dnsmasq) in the world, and pods resolving through it;
//! - [`packets`]: IPv6 extension headers and SCTP (raw sockets);
//! - [`process`]: the agent (or another binary) as a child process, its JSON output collected;
//! - [`certs`]: a CA, server and client certificates for the TLS tests;
//! - [`client`]: gRPC channels to the agent's unix socket or a TCP server;
//! - [`scrape`]: Prometheus metrics read from inside a namespace;
//! - [`topology`]: namespaces and links of a test's own, beyond the scenario.

pub mod certs;
pub mod client;
pub mod dns;
pub mod netns;
pub mod observe;
pub mod packets;
pub mod process;
pub mod scenario;
pub mod scrape;
pub mod topology;
pub mod traffic;

pub use scenario::Scenario;

/// Privileged tests call this first. Without root they skip (returning false, see [`skip`]),
/// except under CI, where they fail.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(test, "needs root (network namespaces, BPF)");
    false
}

/// A test whose precondition is missing (root, BTF, a tool, a file) calls this, then returns.
/// Under CI (`CI` set) it fails instead: a skip there would hide a broken set-up and pass a run
/// that tested nothing. Elsewhere it prints `SKIPPED <test>: <why>` straight to the process's
/// standard error, past the test harness's capture (which only takes `print!`/`eprint!`), so
/// that the line stands next to the test's `ok` in `cargo test`'s output.
pub fn skip(test: &str, why: &str) {
    use std::io::Write as _;
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}; CI is set, and a test may not skip under CI");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Path of a workspace binary (`monitor-agent`, `flowctl`, …) next to the running executable:
/// a test runs from `target/<profile>/deps/`, the demo from `target/<profile>/`, and the
/// binaries are in `target/<profile>/`. README's commands build the binaries first.
pub fn bin_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("executable dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target dir");
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (cargo build --bins)",
        p.display()
    );
    p
}
