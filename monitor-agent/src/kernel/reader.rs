//! The ring-buffer reader: one OS thread that drains the kernel's ring buffer into a bounded
//! queue of batches and never waits for anyone downstream.
//!
//! The kernel programs submit without waking us (a wake-up per event costs about a
//! microsecond per packet); they force a wake-up only when the ring fills past a threshold. So
//! the reader sleeps in `poll(2)` with a short timeout: at most `poll_interval` of added latency,
//! no busy polling when idle. If the queue is full, the batch is dropped and counted: a slow
//! consumer must never back-pressure the kernel.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use monitor_common::{FLOW_EVENT_SIZE, FlowEvent, L7_EVENT_SIZE, L7Event, event_type};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A captured payload, as the reader hands it on.
#[derive(Clone, Debug)]
pub struct L7Record {
    /// The packet's header (`event_type` = L7).
    pub header: monitor_common::FlowEvent,
    /// Bytes of payload the packet carried.
    pub payload_len: u32,
    /// The kernel copied less than the packet carried.
    pub truncated: bool,
    /// The bytes copied.
    pub payload: Vec<u8>,
}

impl L7Record {
    /// From the kernel's record; `None` for an impossible captured length.
    pub fn from_raw(raw: &monitor_common::L7Event) -> Option<L7Record> {
        let n = usize::from(raw.captured_len);
        Some(L7Record {
            header: raw.ev,
            payload_len: raw.payload_len,
            truncated: raw.l7_flags & monitor_common::l7_flags::TRUNCATED != 0,
            payload: raw.payload.get(..n)?.to_vec(),
        })
    }
}

/// One record of the ring: a trace or drop, or a captured L7 payload (told apart by the
/// header's `event_type`).
#[derive(Clone, Debug)]
pub enum Record {
    /// A trace or a drop.
    Event(FlowEvent),
    /// The first bytes of a payload on an L7 port (boxed: rare, and ten times larger).
    L7(Box<L7Record>),
}

/// Events are handed downstream in batches: one channel operation per batch, not per event.
pub const BATCH: usize = 256;

/// The decode queue: batches of records from the reader to the decode task, bounded in
/// **events** (`--queue-size`), whatever the batches' sizes.
///
/// A channel bounded in batches held `queue_size / 256` of them, and a reader that keeps up
/// with the kernel hands on small batches (what arrived since its last drain): at 400 k events/s
/// a few milliseconds of them filled it while it held a few thousand events (benchmark 3).
pub fn queue(events: usize) -> (QueueSender, QueueReceiver) {
    // At least one full batch: a smaller queue could never take one and would drop them all.
    let events = events.max(BATCH);
    // Never the limit: every batch holds at least one event.
    let (tx, rx) = mpsc::channel(events);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        QueueSender {
            tx,
            queued: queued.clone(),
            capacity: events,
        },
        QueueReceiver { rx, queued },
    )
}

/// The reader's end of the [`queue`].
pub struct QueueSender {
    tx: mpsc::Sender<Vec<Record>>,
    /// Events sent and not yet received.
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// Why [`QueueSender::try_send`] did not queue a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The batch would take the queue past its capacity in events: dropped.
    Full,
    /// The decode task is gone.
    Closed,
}

impl QueueSender {
    /// Queues `batch`, or drops it when the events queued would exceed the capacity.
    pub fn try_send(&self, batch: Vec<Record>) -> Result<(), QueueError> {
        let n = batch.len();
        // Only this thread adds; the receiver only subtracts, so the check cannot be overtaken.
        if self.queued.load(Ordering::Acquire) + n > self.capacity {
            return Err(QueueError::Full);
        }
        self.queued.fetch_add(n, Ordering::AcqRel);
        self.tx.try_send(batch).map_err(|e| {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => QueueError::Full,
                mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
            }
        })
    }
}

/// The decode task's end of the [`queue`].
pub struct QueueReceiver {
    rx: mpsc::Receiver<Vec<Record>>,
    queued: Arc<AtomicUsize>,
}

impl QueueReceiver {
    /// The next batch; `None` once the reader is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Vec<Record>> {
        let batch = self.rx.recv().await?;
        self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        Some(batch)
    }
}

/// Counters of the reader (shared with metrics and status).
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Events taken from the ring.
    pub events_read: AtomicU64,
    /// Events dropped because the decode queue was full (Hubble: OBSERVER_EVENTS_QUEUE).
    pub queue_lost: AtomicU64,
    /// Records of an unexpected size (should stay 0).
    pub malformed: AtomicU64,
    /// `CLOCK_MONOTONIC` time (ns) of the reader's last round. The reader goes round at least
    /// every poll interval, and after every batch while it drains: a reader that is stuck or
    /// gone stops moving it (the health check's input, see `service/health.rs`).
    pub heartbeat_ns: AtomicU64,
    /// True from [`spawn`] until the thread ends, however it ends (a panic included).
    pub running: AtomicBool,
}

/// Clears [`ReaderStats::running`] when the reader thread ends, also by unwinding.
struct Running<'a>(&'a ReaderStats);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Relaxed);
    }
}

/// Starts the reader thread. It stops when `stop` fires (checked at least every
/// `poll_interval`; it drains the ring once more first) or when the receiving side is gone.
pub fn spawn(
    mut ring: RingBuf<MapData>,
    poll_interval: Duration,
    tx: QueueSender,
    stats: Arc<ReaderStats>,
    stop: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    stats.heartbeat_ns.store(
        crate::kernel::facts::Clock::monotonic_ns(),
        Ordering::Relaxed,
    );
    stats.running.store(true, Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name("ring-reader".into())
        .spawn({
            let stats = stats.clone();
            move || {
                let _running = Running(&stats);
                read_loop(&mut ring, poll_interval, &tx, &stats, &stop)
            }
        });
    if spawned.is_err() {
        stats.running.store(false, Ordering::Relaxed);
    }
    spawned
}

fn read_loop(
    ring: &mut RingBuf<MapData>,
    poll_interval: Duration,
    tx: &QueueSender,
    stats: &ReaderStats,
    stop: &CancellationToken,
) {
    let fd = ring.as_raw_fd();
    let timeout_ms = poll_interval.as_millis().clamp(1, i32::MAX as u128) as i32;
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    loop {
        beat(stats);
        // Read before sleeping, so that the last round after `stop` drains what is left.
        let stopping = stop.is_cancelled();
        if !stopping {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd. EINTR and timeouts both lead to a drain attempt.
            unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        }
        while let Some(item) = ring.next() {
            if item.len() < FLOW_EVENT_SIZE {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // SAFETY: the record holds at least a FlowEvent; read_unaligned copes with any
            // alignment of the ring's data pages.
            let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) };
            let record = if ev.event_type != event_type::L7 {
                Record::Event(ev)
            } else if item.len() < L7_EVENT_SIZE {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            } else {
                // SAFETY: the record holds a whole L7Event (checked just above).
                let raw = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<L7Event>()) };
                match L7Record::from_raw(&raw) {
                    Some(r) => Record::L7(Box::new(r)),
                    None => {
                        stats.malformed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            };
            drop(item);
            batch.push(record);
            if batch.len() == BATCH {
                if !send(tx, &mut batch, stats) {
                    return;
                }
                // A ring that never runs dry keeps the reader in this loop: still alive.
                beat(stats);
            }
        }
        if (!batch.is_empty() && !send(tx, &mut batch, stats)) || stopping {
            return;
        }
    }
}

fn beat(stats: &ReaderStats) {
    stats.heartbeat_ns.store(
        crate::kernel::facts::Clock::monotonic_ns(),
        Ordering::Relaxed,
    );
}

/// Hands a batch downstream; false when the receiver is gone.
fn send(tx: &QueueSender, batch: &mut Vec<Record>, stats: &ReaderStats) -> bool {
    let n = batch.len() as u64;
    stats.events_read.fetch_add(n, Ordering::Relaxed);
    let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
    match tx.try_send(full) {
        Ok(()) => true,
        Err(QueueError::Full) => {
            stats.queue_lost.fetch_add(n, Ordering::Relaxed);
            true
        }
        Err(QueueError::Closed) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<Record> {
        vec![Record::Event(FlowEvent::default()); n]
    }

    /// Small batches fill the queue by their events: a queue of 1,000 events takes 1,000
    /// batches of one (bounded in batches of 256, it took 3).
    #[tokio::test]
    async fn the_queue_is_bounded_in_events_not_batches() {
        let (tx, mut rx) = queue(1_000);
        for i in 0..1_000 {
            assert_eq!(tx.try_send(batch(1)), Ok(()), "batch {i}");
        }
        assert_eq!(tx.try_send(batch(1)), Err(QueueError::Full));
        // Taking one batch of one makes room for one event, not for a batch of two.
        assert_eq!(rx.recv().await.map(|b| b.len()), Some(1));
        assert_eq!(tx.try_send(batch(2)), Err(QueueError::Full));
        assert_eq!(tx.try_send(batch(1)), Ok(()));
        // Drained, it takes one full-size batch again.
        for _ in 0..1_000 {
            rx.recv().await.expect("queued");
        }
        assert_eq!(tx.try_send(batch(BATCH)), Ok(()));
        drop(rx);
        assert_eq!(tx.try_send(batch(1)), Err(QueueError::Closed));
    }
}
