//! Running commands and code inside a network namespace.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::{Command, Output},
};

/// Runs `ip netns exec <ns> <args…>` (or the bare command when `ns` is empty) and returns its
/// output; panics with the command's stderr when it fails, since a half-built test bed is useless.
pub fn run(ns: &str, args: &[&str]) -> Output {
    let out = try_run(ns, args);
    assert!(
        out.status.success(),
        "command failed in {ns:?}: {args:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Like [`run`] but returns the output whatever the exit status.
pub fn try_run(ns: &str, args: &[&str]) -> Output {
    let mut cmd = if ns.is_empty() {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    };
    cmd.output()
        .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"))
}

/// Runs `f` on a new thread that has entered namespace `ns`: sockets created there belong to
/// that namespace. Only the thread changes namespace, never the test process.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(ns, f)
        .join()
        .expect("thread in netns panicked")
}

/// Like [`in_netns`] without waiting (servers).
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        f()
    })
}
