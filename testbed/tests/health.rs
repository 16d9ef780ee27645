//! The agent's gRPC health follows what it can see: SERVING while its programs are attached and
//! its ring-buffer reader goes round, NOT_SERVING when the reader stalls or every monitored
//! interface is gone, SERVING again when that passes. Privileged; run serially.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use flowscope_proto::HUBBLE_HEALTH_SERVICE;
use testbed::{
    Scenario, client,
    process::Spawned,
    require_root,
    scenario::{HOST_DEV, LXC_A, LXC_B, UPLINK},
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn status(ch: &Channel, service: &str) -> ServingStatus {
    let mut health = HealthClient::new(ch.clone());
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        health.check(HealthCheckRequest {
            service: service.into(),
        }),
    )
    .await
    .expect("health check answered within 5 s")
    .expect("health check");
    ServingStatus::try_from(answer.into_inner().status).expect("known status")
}

/// Polls until both `""` and `hubble.server.Observer` report `want`; returns how long it took.
async fn wait_status(
    ch: &Channel,
    want: ServingStatus,
    within: Duration,
    agent: &Spawned,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let both = [
            status(ch, HUBBLE_HEALTH_SERVICE).await,
            status(ch, "").await,
        ];
        if both == [want, want] {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "health is {both:?} after {within:?}, want {want:?}; agent stderr:\n{}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The thread id of the agent's thread named `name` (`/proc/PID/task/*/comm`).
fn thread_id(pid: i32, name: &str) -> Option<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .and_then(|t| t.file_name().to_str()?.parse().ok())
}

/// Stops one thread of another process, and only that thread, until dropped: ptrace's
/// SEIZE + INTERRUPT puts the thread in a ptrace stop while its siblings go on (SIGSTOP would
/// stop the whole process, health server included). ptrace belongs to the tracing *thread*, so
/// one thread of ours attaches, waits for the stop, and detaches when told (or when the test
/// ends: a tracer that exits detaches its tracees).
struct StoppedThread {
    resume: Option<mpsc::Sender<()>>,
    tracer: Option<std::thread::JoinHandle<()>>,
}

impl StoppedThread {
    fn stop(tid: i32) -> StoppedThread {
        let (stopped_tx, stopped_rx) = mpsc::channel::<Result<(), String>>();
        let (resume, resume_rx) = mpsc::channel::<()>();
        let tracer = std::thread::spawn(move || {
            // SAFETY: ptrace on a thread id we just read; the arguments are the documented
            // ones for SEIZE (no options), INTERRUPT and DETACH (no signal).
            unsafe {
                if libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize) != 0 {
                    let _ = stopped_tx.send(Err(format!(
                        "PTRACE_SEIZE {tid}: {}",
                        std::io::Error::last_os_error()
                    )));
                    return;
                }
                if libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) != 0 {
                    let _ = stopped_tx.send(Err(format!(
                        "PTRACE_INTERRUPT {tid}: {}",
                        std::io::Error::last_os_error()
                    )));
                    return;
                }
                let mut st = 0;
                if libc::waitpid(tid, &mut st, libc::__WALL) != tid {
                    let _ = stopped_tx.send(Err(format!(
                        "waitpid {tid}: {}",
                        std::io::Error::last_os_error()
                    )));
                    return;
                }
                let _ = stopped_tx.send(Ok(()));
                // Until told, or until the test drops the sender (also on panic).
                let _ = resume_rx.recv();
                libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, 0usize);
            }
        });
        stopped_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the tracer answered")
            .expect("the thread is stopped");
        StoppedThread {
            resume: Some(resume),
            tracer: Some(tracer),
        }
    }

    fn resume(mut self) {
        self.release();
    }

    fn release(&mut self) {
        drop(self.resume.take());
        if let Some(t) = self.tracer.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        self.release();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_reader_and_the_datapath() {
    if !require_root("health_follows_the_reader_and_the_datapath") {
        return;
    }
    let s = Scenario::build();
    let mut agent = tokio::task::block_in_place(|| s.start_agent(&[]));
    let ch = client::unix_channel(&s.agent_socket(), Duration::from_secs(5))
        .await
        .expect("agent socket");
    wait_status(&ch, ServingStatus::Serving, Duration::from_secs(5), &agent).await;

    // 1. The reader stops going round (a thread stuck in a call or a loop looks like this):
    // NOT_SERVING once it has been silent for 5 s (the agent's threshold at the default poll
    // interval), SERVING again once it runs.
    let tid = thread_id(agent.pid(), "ring-reader").expect("the agent's ring-reader thread");
    let stopped = StoppedThread::stop(tid);
    let took = wait_status(
        &ch,
        ServingStatus::NotServing,
        Duration::from_secs(15),
        &agent,
    )
    .await;
    println!("stalled reader reported after {took:?}");
    assert!(
        took >= Duration::from_secs(4),
        "NOT_SERVING only after the reader has been silent a while, not at once: {took:?}"
    );
    stopped.resume();
    let took = wait_status(&ch, ServingStatus::Serving, Duration::from_secs(5), &agent).await;
    println!("resumed reader reported after {took:?}");
    assert!(
        agent.stderr().contains("has not made progress"),
        "the log says why: {}",
        agent.stderr()
    );

    // 2. Every monitored interface goes away (the uplink with the default route through it):
    // nothing is attached any more, and health says so.
    for iface in [LXC_A, LXC_B, HOST_DEV, UPLINK] {
        s.node_exec(&["ip", "link", "del", iface]);
    }
    wait_status(
        &ch,
        ServingStatus::NotServing,
        Duration::from_secs(10),
        &agent,
    )
    .await;
    assert!(
        agent
            .stderr()
            .contains("the programs are attached to no interface"),
        "the log says why: {}",
        agent.stderr()
    );
    // A new pod's veth appears: attached, serving again.
    s.node_exec(&[
        "ip",
        "link",
        "add",
        "lxcfeedbeef0001",
        "type",
        "veth",
        "peer",
        "name",
        "lxcpeer0001",
    ]);
    s.node_exec(&["ip", "link", "set", "lxcfeedbeef0001", "up"]);
    wait_status(&ch, ServingStatus::Serving, Duration::from_secs(10), &agent).await;

    assert!(agent.stop().success(), "agent: {}", agent.stderr());
}
