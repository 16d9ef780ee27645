//! Test helpers: privileged-test gating, a fresh network namespace per test, temporary dirs.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Whether a privileged test can run: true as root. Otherwise it prints why it skips, unless
/// `CI` is set: there it must run, so it fails.
pub(crate) fn privileged(test: &str) -> bool {
    testbed::require_root(test)
}

/// Runs `f` on a dedicated thread that has entered a new, empty network namespace. Only that
/// thread changes namespace (and the commands it spawns, which inherit it), never the test
/// process, so nothing touches the machine's network. The namespace has no other reference: it
/// and every link made in it disappear when the thread ends, even if `f` panics.
pub(crate) fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::Builder::new()
        .name("fresh-netns".into())
        .spawn(move || {
            // SAFETY: unshare(2) only changes the calling thread's network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .expect("spawning the netns thread");
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs `ip <args>` (from the calling thread, so in its namespace); panics with stderr on failure.
pub(crate) fn ip_cmd(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("running `ip {args}` (is iproute2 installed?): {e}"));
    assert!(
        out.status.success(),
        "`ip {args}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "flowscope-endpoints-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temporary dir");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
