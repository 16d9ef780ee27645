//! The flow history: a fixed-capacity ring of recent flows that readers follow at their own pace.
//!
//! Like Hubble's ring buffer: the writer (the decode task) never waits for a reader. Every
//! entry has a sequence number; a reader keeps the sequence number of the next entry it wants.
//! When the writer has overwritten entries a reader had not read yet, the reader is told how
//! many it lost (it then sends a `LostEvent` with source HUBBLE_RING_BUFFER to its client) and
//! jumps to the oldest entry still there. One slow reader therefore loses only its own events.

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicU64, Ordering},
};

use flowscope_proto::{
    flow::{Flow, LostEvent},
    wkt::Timestamp,
};
use tokio::sync::watch;

use crate::decode::record::FlowRecord;

/// What the history holds: flows, and loss notices from earlier stages (kernel ring, decode
/// queue), which every reader sees in order with the flows.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A flow of a packet, as its record (~300 bytes; the `flow.Flow` is built only for a
    /// reader that needs one).
    Record(Arc<FlowRecord>),
    /// A flow built already (the reports of unanswered connections, in their own history).
    Flow(Arc<Flow>),
    /// Events lost before they reached the history.
    Lost(Arc<LostEvent>),
}

impl Entry {
    /// A flow's time in ns since the epoch (`None` for loss notices and flows without one).
    pub fn flow_time_nanos(&self) -> Option<i64> {
        match self {
            Entry::Record(r) => Some(Timestamp::from(r.time()).as_nanos()),
            Entry::Flow(f) => f.time.as_ref().map(|t| t.as_nanos()),
            Entry::Lost(_) => None,
        }
    }

    /// A flow (record or built), not a loss notice.
    pub fn is_flow(&self) -> bool {
        !matches!(self, Entry::Lost(_))
    }
}

struct Ring {
    slots: Vec<Option<Entry>>,
    /// Sequence number of the next entry to be written.
    next: u64,
}

/// The history. Cheap to share (`Arc<FlowStore>`).
pub struct FlowStore {
    ring: RwLock<Ring>,
    capacity: u64,
    /// Flows ever stored (Hubble's `seen_flows`).
    seen: AtomicU64,
    /// Publishes `next` after each write, to wake followers.
    tx: watch::Sender<u64>,
}

/// A batch read from the history.
#[derive(Debug, Default)]
pub struct Read {
    /// Entries lost by this reader since its last read (overwritten before it got there).
    pub lost: u64,
    /// The entries, oldest first.
    pub entries: Vec<Entry>,
}

impl FlowStore {
    /// A history of `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (tx, _) = watch::channel(0);
        FlowStore {
            ring: RwLock::new(Ring {
                slots: vec![None; capacity],
                next: 0,
            }),
            capacity: capacity as u64,
            seen: AtomicU64::new(0),
            tx,
        }
    }

    /// Capacity in entries (Hubble's `max_flows`).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Flows ever stored.
    pub fn seen_flows(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Entries currently held.
    pub fn len(&self) -> u64 {
        self.ring
            .read()
            .map(|r| r.next.min(self.capacity))
            .unwrap_or(0)
    }

    /// True when nothing was ever stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends entries (one lock for the whole batch) and wakes followers.
    pub fn push_batch(&self, entries: impl IntoIterator<Item = Entry>) {
        let next = {
            let Ok(mut ring) = self.ring.write() else {
                return;
            };
            let mut flows = 0;
            for e in entries {
                if e.is_flow() {
                    flows += 1;
                }
                let idx = (ring.next % self.capacity) as usize;
                ring.slots[idx] = Some(e);
                ring.next += 1;
            }
            self.seen.fetch_add(flows, Ordering::Relaxed);
            ring.next
        };
        self.tx.send_replace(next);
    }

    /// Sequence number of the oldest entry held and of the next one to be written.
    pub fn bounds(&self) -> (u64, u64) {
        self.ring
            .read()
            .map(|r| (r.next.saturating_sub(self.capacity), r.next))
            .unwrap_or((0, 0))
    }

    /// Reads up to `max` entries starting at `*cursor`, advancing it. If entries before the
    /// oldest one still held were wanted, they are reported in `lost`.
    pub fn read_from(&self, cursor: &mut u64, max: usize) -> Read {
        let Ok(ring) = self.ring.read() else {
            return Read::default();
        };
        let oldest = ring.next.saturating_sub(self.capacity);
        let mut lost = 0;
        if *cursor < oldest {
            lost = oldest - *cursor;
            *cursor = oldest;
        }
        let end = ring.next.min(*cursor + max as u64);
        let mut entries = Vec::with_capacity((end - *cursor) as usize);
        for seq in *cursor..end {
            if let Some(e) = &ring.slots[(seq % self.capacity) as usize] {
                entries.push(e.clone());
            }
        }
        *cursor = end;
        Read { lost, entries }
    }

    /// Where a history query starts, found the way Hubble's observer rewinds its ring buffer
    /// (`newRingReader` in cilium's `pkg/hubble/observer/local_observer.go`): backwards from the
    /// newest entry, counting the flows that `keep` accepts (loss notices are passed over:
    /// nobody asks for them, they come along with the flows around them), it stops
    /// - with `since`: just after the newest kept flow older than `since`;
    /// - without: at the `number`-th kept flow (0: never);
    ///
    /// and otherwise at the oldest entry held. Reading forward from the sequence number it
    /// returns gives the last `number` kept flows (or the kept flows since `since`) with every
    /// loss notice stored among them, in order.
    pub fn rewind(
        &self,
        number: u64,
        since: Option<i64>,
        mut keep: impl FnMut(&Entry) -> bool,
    ) -> u64 {
        let Ok(ring) = self.ring.read() else {
            return 0;
        };
        let oldest = ring.next.saturating_sub(self.capacity);
        let mut seq = ring.next;
        let mut kept = 0u64;
        while seq > oldest {
            seq -= 1;
            let Some(e) = &ring.slots[(seq % self.capacity) as usize] else {
                continue;
            };
            if !e.is_flow() || !keep(e) {
                continue;
            }
            kept += 1;
            match since {
                Some(since) if e.flow_time_nanos().is_some_and(|t| t < since) => {
                    return seq + 1;
                }
                Some(_) => {}
                None if kept == number => return seq,
                None => {}
            }
        }
        oldest
    }

    /// A receiver that changes whenever entries are written.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    /// Receivers from [`FlowStore::subscribe`] alive now: every GetFlows stream holds one for
    /// its whole life (the `flowscope_subscribers` metric).
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: u32) -> Entry {
        Entry::Flow(Arc::new(Flow {
            uuid: n.to_string(),
            ..Flow::default()
        }))
    }

    fn ids(es: &[Entry]) -> Vec<String> {
        es.iter()
            .map(|e| match e {
                Entry::Flow(f) => f.uuid.clone(),
                Entry::Record(r) => r.uuid.to_string(),
                Entry::Lost(_) => "lost".into(),
            })
            .collect()
    }

    #[test]
    fn keeps_the_last_capacity_entries() {
        let s = FlowStore::new(3);
        s.push_batch((0..5).map(flow));
        assert_eq!(s.len(), 3);
        assert_eq!(s.seen_flows(), 5);
        let mut cursor = 0;
        let r = s.read_from(&mut cursor, 10);
        assert_eq!(r.lost, 2, "entries 0 and 1 were overwritten");
        assert_eq!(ids(&r.entries), ["2", "3", "4"]);
        assert_eq!(cursor, 5);
    }

    #[test]
    fn a_slow_reader_loses_only_its_own_entries() {
        let s = FlowStore::new(4);
        let (mut fast, mut slow) = (0, 0);
        s.push_batch((0..3).map(flow));
        assert_eq!(s.read_from(&mut fast, 10).entries.len(), 3);
        s.push_batch((3..10).map(flow));
        let f = s.read_from(&mut fast, 100);
        let sl = s.read_from(&mut slow, 100);
        assert_eq!(f.lost, 3, "fast reader missed 3..6 (only 6..10 remain)");
        assert_eq!(sl.lost, 6);
        assert_eq!(ids(&sl.entries), ["6", "7", "8", "9"]);
    }

    fn timed(n: u32, secs: i64) -> Entry {
        Entry::Flow(Arc::new(Flow {
            uuid: n.to_string(),
            time: Some(flowscope_proto::wkt::Timestamp::new(secs, 0)),
            ..Flow::default()
        }))
    }

    fn lost(n: u64) -> Entry {
        Entry::Lost(Arc::new(LostEvent {
            num_events_lost: n,
            ..LostEvent::default()
        }))
    }

    fn even(e: &Entry) -> bool {
        let Entry::Flow(f) = e else { return false };
        f.uuid.parse::<u32>().unwrap() % 2 == 0
    }

    #[test]
    fn rewind_stops_at_the_nth_kept_flow_passing_losses() {
        let s = FlowStore::new(10);
        // 0 1 L 2 3 L 4 5
        s.push_batch([timed(0, 0), timed(1, 1), lost(7), timed(2, 2), timed(3, 3)]);
        s.push_batch([lost(9), timed(4, 4), timed(5, 5)]);
        // The last two even flows are 2 and 4: start at 2, the loss after it comes along.
        let start = s.rewind(2, None, even);
        let mut cursor = start;
        let got = ids(&s.read_from(&mut cursor, 100).entries);
        assert_eq!(got, ["2", "3", "lost", "4", "5"]);
        // More than there are: from the oldest entry.
        assert_eq!(s.rewind(10, None, even), 0);
        assert_eq!(s.rewind(0, None, even), 0, "no number: the whole history");
    }

    #[test]
    fn rewind_with_since_starts_after_the_newest_older_kept_flow() {
        let s = FlowStore::new(10);
        s.push_batch([
            timed(0, 0),
            timed(1, 1),
            lost(7),
            timed(2, 2),
            timed(3, 3),
            timed(4, 4),
        ]);
        // Since t=3 over even flows: 2 is the newest kept flow before it, start just after.
        let start = s.rewind(1, Some(3_000_000_000), even);
        assert_eq!(start, 4, "number does not matter with since");
        // Since t=2 over all flows: flow 1 is older, the loss after it comes along.
        assert_eq!(s.rewind(0, Some(2_000_000_000), |_| true), 2);
    }

    #[test]
    fn rewind_in_an_overwritten_ring_stops_at_the_oldest_held() {
        let s = FlowStore::new(4);
        s.push_batch((0..10).map(|n| timed(n, n as i64)));
        assert_eq!(s.rewind(0, None, |_| true), 6);
        assert_eq!(s.rewind(2, None, |_| true), 8);
    }

    #[tokio::test]
    async fn followers_are_woken() {
        let s = Arc::new(FlowStore::new(8));
        let mut rx = s.subscribe();
        let s2 = s.clone();
        tokio::spawn(async move { s2.push_batch([flow(1)]) });
        tokio::time::timeout(std::time::Duration::from_secs(2), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*rx.borrow(), 1);
    }
}
