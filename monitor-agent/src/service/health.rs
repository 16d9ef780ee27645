//! gRPC health (`grpc.health.v1`) that tells the truth: the agent answers SERVING for
//! `hubble.server.Observer` (and the server as a whole, `""`) only while it can see the node's
//! traffic, NOT_SERVING otherwise, and SERVING again once it recovers.
//!
//! What "can see" means here, checked once a second:
//! - the datapath is attached: the programs are loaded (the agent does not start otherwise) and
//!   at least one interface carries them. With none (every monitored interface gone, or none
//!   matching the selection) no packet can reach the history;
//! - the ring-buffer reader runs: its thread has not ended, and it went round within
//!   [`AgentState::reader_stall_after`] (it goes round at least every poll interval; a reader
//!   stuck in a call or a loop stops its heartbeat, see `reader.rs`).
//!
//! Kubernetes' probes, `hubble status` and `flowctl status` read this; the relay keeps its own
//! health (SERVING while it reaches at least one agent).

use std::{
    sync::{Arc, TryLockError, atomic::Ordering},
    time::Duration,
};

use flowscope_proto::HUBBLE_HEALTH_SERVICE;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use super::AgentState;
use crate::kernel::{facts::Clock, reader::ReaderStats};

/// How often the watcher looks.
const PERIOD: Duration = Duration::from_secs(1);

/// Why the agent is not serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// No interface carries the programs.
    NotAttached,
    /// The reader thread has ended.
    ReaderStopped,
    /// The reader has not gone round for this long.
    ReaderStalled(Duration),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::NotAttached => f.write_str("the programs are attached to no interface"),
            Problem::ReaderStopped => f.write_str("the ring-buffer reader has stopped"),
            Problem::ReaderStalled(d) => write!(
                f,
                "the ring-buffer reader has not made progress for {:.1} s",
                d.as_secs_f64()
            ),
        }
    }
}

/// What the datapath looked like the last time its lock was free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attachment {
    Attached,
    Detached,
}

/// The reader's part of the check, from its counters and `now` (CLOCK_MONOTONIC ns).
fn reader_problem(stats: &ReaderStats, stall_after: Duration, now_ns: u64) -> Option<Problem> {
    if !stats.running.load(Ordering::Relaxed) {
        return Some(Problem::ReaderStopped);
    }
    let beat = stats.heartbeat_ns.load(Ordering::Relaxed);
    let idle = Duration::from_nanos(now_ns.saturating_sub(beat));
    (idle > stall_after).then_some(Problem::ReaderStalled(idle))
}

/// The datapath's part; `None` when its lock is busy (an attach in progress): the caller keeps
/// what it saw last rather than wait behind netlink.
fn attachment(state: &AgentState) -> Option<Attachment> {
    match state.datapath.try_lock() {
        Ok(dp) if dp.attached().next().is_some() => Some(Attachment::Attached),
        Ok(_) => Some(Attachment::Detached),
        // A poisoned lock means a thread panicked holding it: nothing is attached any more
        // that the agent could still manage.
        Err(TryLockError::Poisoned(_)) => Some(Attachment::Detached),
        Err(TryLockError::WouldBlock) => None,
    }
}

async fn publish(reporter: &HealthReporter, status: ServingStatus) {
    for service in ["", HUBBLE_HEALTH_SERVICE] {
        reporter.set_service_status(service, status).await;
    }
}

/// Follows the agent's state and publishes it as gRPC health.
pub(crate) struct Watcher {
    state: Arc<AgentState>,
    reporter: HealthReporter,
    attached: Attachment,
    /// What was published last (`None`: nothing yet).
    published: Option<Option<Problem>>,
}

/// A problem without its changing details: a stall's growing duration is not a change.
fn kind(p: &Option<Problem>) -> Option<Problem> {
    p.as_ref().map(|p| match p {
        Problem::ReaderStalled(_) => Problem::ReaderStalled(Duration::ZERO),
        other => other.clone(),
    })
}

impl Watcher {
    /// A watcher that has published nothing yet.
    pub(crate) fn new(state: Arc<AgentState>, reporter: HealthReporter) -> Self {
        Watcher {
            state,
            reporter,
            attached: Attachment::Attached,
            published: None,
        }
    }

    /// Looks once and publishes a change (logged with its reason).
    pub(crate) async fn update(&mut self) {
        if let Some(a) = attachment(&self.state) {
            self.attached = a;
        }
        let problem = match self.attached {
            Attachment::Detached => Some(Problem::NotAttached),
            Attachment::Attached => reader_problem(
                &self.state.reader,
                self.state.reader_stall_after,
                Clock::monotonic_ns(),
            ),
        };
        if self.published.as_ref().map(kind) == Some(kind(&problem)) {
            return;
        }
        match &problem {
            None => {
                if self.published.is_some() {
                    info!("health: serving again");
                }
                publish(&self.reporter, ServingStatus::Serving).await;
            }
            Some(p) => {
                warn!("health: not serving: {p}");
                publish(&self.reporter, ServingStatus::NotServing).await;
            }
        }
        self.published = Some(problem);
    }

    /// Looks once a second until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.update().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn stats(running: bool, beat_ns: u64) -> ReaderStats {
        ReaderStats {
            running: AtomicBool::new(running),
            heartbeat_ns: beat_ns.into(),
            ..ReaderStats::default()
        }
    }

    #[test]
    fn a_reader_that_goes_round_is_healthy() {
        let s = stats(true, 10_000_000_000);
        let after = Duration::from_secs(5);
        assert_eq!(reader_problem(&s, after, 10_000_000_000), None);
        assert_eq!(reader_problem(&s, after, 14_900_000_000), None);
        // A heartbeat from "the future" (another CPU's clock read) is not a stall.
        assert_eq!(reader_problem(&s, after, 9_000_000_000), None);
    }

    #[test]
    fn a_silent_reader_is_stalled_and_an_ended_one_stopped() {
        let after = Duration::from_secs(5);
        assert_eq!(
            reader_problem(&stats(true, 1_000_000_000), after, 7_000_000_000),
            Some(Problem::ReaderStalled(Duration::from_secs(6)))
        );
        assert_eq!(
            reader_problem(&stats(false, 7_000_000_000), after, 7_000_000_000),
            Some(Problem::ReaderStopped)
        );
    }

    #[test]
    fn a_growing_stall_is_one_change() {
        let a = Some(Problem::ReaderStalled(Duration::from_secs(6)));
        let b = Some(Problem::ReaderStalled(Duration::from_secs(9)));
        assert_eq!(kind(&a), kind(&b));
        assert_ne!(kind(&a), kind(&Some(Problem::NotAttached)));
        assert_ne!(kind(&a), kind(&None));
    }
}
