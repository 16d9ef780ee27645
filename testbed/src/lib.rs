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
//! - [`process`]: the agent (or another binary) as a child process, its JSON output collected;
//! - [`client`]: gRPC channels to the agent's unix socket or a TCP server;
//! - [`scrape`]: Prometheus metrics read from inside a namespace.

pub mod client;
pub mod netns;
pub mod process;
pub mod scenario;
pub mod scrape;
pub mod traffic;

pub use scenario::Scenario;

/// Privileged tests call this first. Without root they skip (returning false) with a message,
/// except under CI (`CI` set), where skipping would hide a broken set-up: there they panic.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: privileged test under CI but not running as root");
    }
    eprintln!("skipping {test}: needs root (network namespaces, BPF)");
    false
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
