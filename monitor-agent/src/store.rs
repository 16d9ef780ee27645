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

use flowscope_proto::flow::{Flow, LostEvent};
use tokio::sync::watch;

/// What the history holds: flows, and loss notices from earlier stages (kernel ring, decode
/// queue), which every reader sees in order with the flows.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A flow.
    Flow(Arc<Flow>),
    /// Events lost before they reached the history.
    Lost(Arc<LostEvent>),
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
                if matches!(e, Entry::Flow(_)) {
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

    /// Reads backwards from the newest entry, returning (oldest first) the entries from the
    /// newest `n` for which `keep` holds, scanning at most the whole ring. Used for "the last
    /// N matching flows". Returns the sequence number following the newest entry examined.
    pub fn last_matching(
        &self,
        n: usize,
        mut keep: impl FnMut(&Entry) -> bool,
    ) -> (Vec<Entry>, u64) {
        let Ok(ring) = self.ring.read() else {
            return (Vec::new(), 0);
        };
        let oldest = ring.next.saturating_sub(self.capacity);
        let mut out = Vec::new();
        let mut seq = ring.next;
        while seq > oldest && out.len() < n {
            seq -= 1;
            if let Some(e) = &ring.slots[(seq % self.capacity) as usize]
                && keep(e)
            {
                out.push(e.clone());
            }
        }
        out.reverse();
        (out, ring.next)
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

    #[test]
    fn last_matching_scans_backwards() {
        let s = FlowStore::new(10);
        s.push_batch((0..8).map(flow));
        let (last, next) = s.last_matching(
            3,
            |e| matches!(e, Entry::Flow(f) if f.uuid.parse::<u32>().unwrap() % 2 == 0),
        );
        assert_eq!(ids(&last), ["2", "4", "6"]);
        assert_eq!(next, 8);
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
