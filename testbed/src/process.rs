//! A flowscope binary running as a child process inside a namespace, its JSON-lines output
//! collected by a thread. Stopped with SIGINT (clean shutdown) by [`Spawned::stop`]; killed by
//! PID if still running when dropped. Once the child has exited, every line it printed is
//! collected before [`Spawned::wait_exit`] or [`Spawned::wait_for`] return (the output threads
//! are waited for until they reach the end of the pipes, bounded in time).

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

/// A running child process.
pub struct Spawned {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    raw: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    /// The threads reading stdout and stderr; each ends at the end of its pipe.
    readers: Vec<JoinHandle<()>>,
}

/// How long the output threads may take to reach the end of the pipes once the child has
/// exited. The child is the only writer (`ip netns exec` and `setpriv` exec the program), so the
/// end comes at once; the bound only guards against a grandchild holding a pipe open.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Spawned {
    /// Starts `program args…` inside namespace `ns` (`ip netns exec` execs it: the child's PID
    /// is the program's).
    pub fn start(ns: &str, program: &std::path::Path, args: &[&str]) -> Spawned {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program).args(args);
        Self::spawn(cmd)
    }

    /// Starts a prepared command.
    pub fn spawn(mut cmd: Command) -> Spawned {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let (l, r) = (lines.clone(), raw.clone());
        let out_reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    l.lock().expect("lines").push(v);
                }
                r.lock().expect("raw").push(line);
            }
        });
        let err = child.stderr.take().expect("stderr");
        let e = stderr.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = e.lock().expect("stderr");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Spawned {
            child,
            lines,
            raw,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    /// The child's PID.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every JSON line printed so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("lines").clone()
    }

    /// Every line printed so far, as text.
    pub fn raw_lines(&self) -> Vec<String> {
        self.raw.lock().expect("raw").clone()
    }

    /// The values under `key` of every JSON line that has it (`"event"`, `"stats"`, …).
    pub fn values(&self, key: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter_map(|v| v.get(key).cloned())
            .collect()
    }

    /// What the child wrote on stderr.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Waits until `pred` holds on the collected lines, or the timeout; returns whether it held.
    /// If the child exits meanwhile, `pred` is checked once more on everything it printed.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.lines()) {
                return true;
            }
            if self.child.try_wait().ok().flatten().is_some() {
                self.drain_output(DRAIN_TIMEOUT);
                return pred(&self.lines());
            }
            if Instant::now() >= deadline {
                return pred(&self.lines());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `timeout`) until the output threads have read both pipes to the end, so
    /// that every line the child printed is collected; returns whether they did. Call only once
    /// the child has exited.
    fn drain_output(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.readers.iter().all(JoinHandle::is_finished) {
            if Instant::now() >= deadline {
                eprintln!(
                    "pid {}: output still open {timeout:?} after the exit; its last lines may be missing",
                    self.pid()
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for reader in self.readers.drain(..) {
            // A reader cannot panic short of a poisoned lock; its lines are collected either way.
            let _ = reader.join();
        }
        true
    }

    /// Waits for a `{"ready": …}` line; panics with the child's stderr if it does not come.
    pub fn wait_ready(&mut self, timeout: Duration) {
        if !self.wait_for(timeout, |l| l.iter().any(|v| v.get("ready").is_some())) {
            panic!("not ready after {timeout:?}; stderr:\n{}", self.stderr());
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Clean stop: SIGINT, then wait up to 15 s (SIGKILL after that). Returns the exit status,
    /// once every line the child printed is collected.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGINT);
        self.wait_exit(Duration::from_secs(15))
    }

    /// Waits for the child to exit by itself (SIGKILL after `timeout`), then until every line it
    /// printed is collected.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st;
            }
            if Instant::now() >= deadline {
                self.signal(libc::SIGKILL);
                break self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.drain_output(DRAIN_TIMEOUT);
        status
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
