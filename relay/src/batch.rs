//! Handing flows on in batches: whatever is ready is taken at once.
//!
//! Every flow of a GetFlows call takes two hops inside the relay: from its
//! node task to the merger, and from the merger to the client's stream.
//! Paid per flow, each hop is a channel operation, a semaphore operation and
//! often a task wake-up; with many agents each stream delivers a small share
//! of the flows, so these per-hop costs are shared by fewer flows and the
//! relay's CPU per flow grows with the number of agents (benchmark 5 in
//! docs/benchmarks.md). Here both hops carry batches:
//!
//! - [`read_ready`] takes from a stream every item it can give without
//!   waiting (it waits only for the first), up to a bound: a lone flow leaves
//!   at once, a burst leaves together. Nothing waits to fill a batch.
//! - [`channel`] carries messages that each take some number of *slots*
//!   (one per flow), bounded in slots: a bounded `mpsc` of flows, with one
//!   message (and at most one wake-up) per batch. [`Batcher`] collects the
//!   items one task produces in one go and sends them as one message;
//!   [`Items`] gives them back one by one, freeing one slot per item taken,
//!   so the bound counts exactly what a bounded channel of items would.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::{Stream, StreamExt as _};
use tokio::sync::{Semaphore, TryAcquireError, mpsc};
use tonic::Status;

/// How a [`read_ready`] ended.
#[derive(Debug)]
pub(crate) enum Read {
    /// The stream may give more.
    More,
    /// The stream ended after the items read.
    Ended,
    /// The stream failed after the items read.
    Failed(Status),
}

/// Waits for the next item of `stream`, then takes every further item it
/// gives without waiting, up to `max` in all, into `batch` (in order). An
/// end or an error stops the read; the items read before it are in
/// `batch`. Cancel-safe: an item read is in `batch`, and the future is
/// pending only while `batch` got nothing.
pub(crate) async fn read_ready<S, T>(stream: &mut S, max: usize, batch: &mut Vec<T>) -> Read
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    let max = max.max(1);
    std::future::poll_fn(|cx| {
        let mut read = 0;
        while read < max {
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(item))) => {
                    batch.push(item);
                    read += 1;
                }
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Read::Failed(status)),
                Poll::Ready(None) => return Poll::Ready(Read::Ended),
                // The stream registered our waker: when nothing was read, the
                // task sleeps until more comes.
                Poll::Pending if read == 0 => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        Poll::Ready(Read::More)
    })
    .await
}

/// Slots of a [`channel`] held by a message; freed when dropped.
pub(crate) struct Slots {
    semaphore: Arc<Semaphore>,
    count: usize,
}

impl Slots {
    fn none(semaphore: Arc<Semaphore>) -> Self {
        Self {
            semaphore,
            count: 0,
        }
    }

    /// Number of slots held.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.count
    }

    /// Adds `other`'s slots to these.
    fn merge(&mut self, mut other: Slots) {
        self.count += std::mem::take(&mut other.count);
    }

    /// Frees `n` of the slots held (at most all of them).
    fn release(&mut self, n: usize) {
        let n = n.min(self.count);
        self.count -= n;
        self.semaphore.add_permits(n);
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.release(self.count);
    }
}

/// The receiving side of a [`channel`] is gone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Closed;

/// Why a [`Batcher::try_send`] did not take an item (given back).
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    /// No slot free.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// A channel of messages that each hold some slots, at most `capacity` held
/// in all (at least 1): a message is received with its [`Slots`], which are
/// free again when dropped.
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    // Slots are counted in `u32` (tokio's semaphore takes that many at once).
    let capacity = capacity.clamp(1, u32::MAX as usize);
    let semaphore = Arc::new(Semaphore::new(capacity));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Sender {
            tx,
            semaphore: semaphore.clone(),
            capacity,
        },
        Receiver { rx, semaphore },
    )
}

/// The sending side of a [`channel`].
pub(crate) struct Sender<T> {
    tx: mpsc::UnboundedSender<(T, Slots)>,
    semaphore: Arc<Semaphore>,
    capacity: usize,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            semaphore: self.semaphore.clone(),
            capacity: self.capacity,
        }
    }
}

impl<T> Sender<T> {
    /// The channel's capacity in slots.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// `n` slots if they are free now (`n` is at most the capacity).
    pub(crate) fn try_reserve(&self, n: usize) -> Result<Option<Slots>, Closed> {
        let n = n.min(self.capacity);
        match self.semaphore.try_acquire_many(n as u32) {
            Ok(permit) => {
                permit.forget();
                Ok(Some(Slots {
                    semaphore: self.semaphore.clone(),
                    count: n,
                }))
            }
            Err(TryAcquireError::NoPermits) => Ok(None),
            Err(TryAcquireError::Closed) => Err(Closed),
        }
    }

    /// Waits until `n` slots are free (`n` is at most the capacity). Waiters
    /// are served in order.
    pub(crate) async fn reserve(&self, n: usize) -> Result<Slots, Closed> {
        let n = n.min(self.capacity);
        let permit = self
            .semaphore
            .acquire_many(n as u32)
            .await
            .map_err(|_| Closed)?;
        permit.forget();
        Ok(Slots {
            semaphore: self.semaphore.clone(),
            count: n,
        })
    }

    /// Sends `message`, which holds `slots`.
    pub(crate) fn send(&self, message: T, slots: Slots) -> Result<(), Closed> {
        self.tx.send((message, slots)).map_err(|_| Closed)
    }

    /// Completes when the receiver is gone.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// The receiving side of a [`channel`]. Dropping it closes the channel:
/// senders waiting for slots give up.
pub(crate) struct Receiver<T> {
    rx: mpsc::UnboundedReceiver<(T, Slots)>,
    semaphore: Arc<Semaphore>,
}

impl<T> Receiver<T> {
    /// The next message and the slots it holds; `None` when every sender is
    /// gone and nothing is left.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<(T, Slots)>> {
        self.rx.poll_recv(cx)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.semaphore.close();
    }
}

/// Collects items to send as one message on a [`channel`] of batches: each
/// item takes one slot when it is added, and all leave on [`Batcher::flush`].
pub(crate) struct Batcher<T> {
    sender: Sender<Vec<T>>,
    items: Vec<T>,
    slots: Slots,
}

impl<T> Batcher<T> {
    pub(crate) fn new(sender: Sender<Vec<T>>) -> Self {
        let slots = Slots::none(sender.semaphore.clone());
        Self {
            sender,
            items: Vec::new(),
            slots,
        }
    }

    /// The channel's sender (for futures that must not borrow the batcher).
    pub(crate) fn sender(&self) -> &Sender<Vec<T>> {
        &self.sender
    }

    /// Adds `item` if a slot is free (never waits).
    pub(crate) fn try_send(&mut self, item: T) -> Result<(), TrySendError<T>> {
        match self.sender.try_reserve(1) {
            Ok(Some(slot)) => {
                self.push(item, slot);
                Ok(())
            }
            Ok(None) => Err(TrySendError::Full(item)),
            Err(Closed) => Err(TrySendError::Closed(item)),
        }
    }

    /// Adds `item`, which holds `slots` (from this batcher's sender).
    pub(crate) fn push(&mut self, item: T, slots: Slots) {
        self.items.push(item);
        self.slots.merge(slots);
    }

    /// Adds `item`, waiting for a slot if none is free; what was added
    /// before is sent first, so that the receiver can free slots.
    pub(crate) async fn send(&mut self, item: T) -> Result<(), Closed> {
        let item = match self.try_send(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(Closed),
            Err(TrySendError::Full(item)) => item,
        };
        self.flush()?;
        let slot = self.sender.reserve(1).await?;
        self.push(item, slot);
        Ok(())
    }

    /// Sends what was added, as one message.
    pub(crate) fn flush(&mut self) -> Result<(), Closed> {
        if self.items.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut self.items);
        let slots = std::mem::replace(&mut self.slots, Slots::none(self.sender.semaphore.clone()));
        self.sender.send(items, slots)
    }
}

/// The items of a [`channel`] of batches, one by one: each item's slot is
/// freed when the item is taken.
pub(crate) struct Items<T> {
    rx: Receiver<Vec<T>>,
    current: std::vec::IntoIter<T>,
    slots: Slots,
}

impl<T> Items<T> {
    pub(crate) fn new(rx: Receiver<Vec<T>>) -> Self {
        let slots = Slots::none(rx.semaphore.clone());
        Self {
            rx,
            current: Vec::new().into_iter(),
            slots,
        }
    }
}

impl<T> Stream for Items<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.current.next() {
                this.slots.release(1);
                return Poll::Ready(Some(item));
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some((items, slots)) => {
                    this.current = items.into_iter();
                    this.slots = slots;
                }
                None => return Poll::Ready(None),
            }
        }
    }
}

// `T` is only moved, never pinned.
impl<T> Unpin for Items<T> {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt as _;

    use super::*;

    type Item = Result<u32, Status>;

    /// A stream fed by the test, as a node's gRPC stream is by the network.
    fn feed() -> (
        mpsc::UnboundedSender<Item>,
        impl Stream<Item = Item> + Unpin,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
    }

    #[tokio::test]
    async fn a_burst_that_is_ready_is_one_batch() {
        let (tx, mut stream) = feed();
        for i in 0..10 {
            tx.send(Ok(i)).unwrap();
        }
        let mut batch = Vec::new();
        let read = read_ready(&mut stream, 256, &mut batch).await;
        assert!(matches!(read, Read::More));
        assert_eq!(batch, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_lone_item_is_not_held_back() {
        let (tx, mut stream) = feed();
        let mut batch = Vec::new();
        // Nothing ready: the read waits ...
        assert!(
            read_ready(&mut stream, 256, &mut batch)
                .now_or_never()
                .is_none()
        );
        assert!(batch.is_empty());
        // ... and one item ends the wait at once, without waiting for more.
        let reader = tokio::spawn(async move {
            let mut batch = Vec::new();
            let read = read_ready(&mut stream, 256, &mut batch).await;
            (read, batch)
        });
        tokio::task::yield_now().await;
        tx.send(Ok(7)).unwrap();
        let (read, batch) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("a lone item must not wait for company")
            .unwrap();
        assert!(matches!(read, Read::More));
        assert_eq!(batch, vec![7]);
        drop(tx);
    }

    #[tokio::test]
    async fn batches_are_bounded_and_keep_the_order() {
        let (tx, mut stream) = feed();
        for i in 0..100 {
            tx.send(Ok(i)).unwrap();
        }
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        while all.len() < 100 {
            let mut batch = Vec::new();
            assert!(matches!(
                read_ready(&mut stream, 32, &mut batch).await,
                Read::More
            ));
            sizes.push(batch.len());
            all.extend(batch);
        }
        assert_eq!(sizes, vec![32, 32, 32, 4]);
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_end_and_errors_come_after_the_items_before_them() {
        let (tx, mut stream) = feed();
        tx.send(Ok(1)).unwrap();
        tx.send(Ok(2)).unwrap();
        tx.send(Err(Status::unavailable("gone"))).unwrap();
        tx.send(Ok(3)).unwrap();
        let mut batch = Vec::new();
        match read_ready(&mut stream, 256, &mut batch).await {
            Read::Failed(status) => assert_eq!(status.message(), "gone"),
            other => panic!("{other:?}"),
        }
        assert_eq!(batch, vec![1, 2]);

        let (tx, mut stream) = feed();
        tx.send(Ok(1)).unwrap();
        drop(tx);
        let mut batch = Vec::new();
        assert!(matches!(
            read_ready(&mut stream, 256, &mut batch).await,
            Read::Ended
        ));
        assert_eq!(batch, vec![1]);
    }

    #[tokio::test]
    async fn slots_bound_the_items_not_the_messages() {
        let (tx, mut rx) = channel::<Vec<u32>>(4);
        let slots = tx.try_reserve(3).unwrap().unwrap();
        assert_eq!(slots.count(), 3);
        tx.send(vec![1, 2, 3], slots).unwrap();
        // One slot left.
        assert!(tx.try_reserve(2).unwrap().is_none());
        let one = tx.try_reserve(1).unwrap().unwrap();
        assert!(tx.try_reserve(1).unwrap().is_none());
        drop(one);
        // Receiving the message and dropping its slots frees them.
        let (items, slots) = rx.recv_now().unwrap();
        assert_eq!(items, vec![1, 2, 3]);
        assert!(tx.try_reserve(2).unwrap().is_none(), "held until dropped");
        drop(slots);
        assert_eq!(tx.try_reserve(4).unwrap().unwrap().count(), 4);
    }

    #[tokio::test]
    async fn a_sender_waiting_for_slots_gives_up_when_the_receiver_goes() {
        let (tx, rx) = channel::<u32>(1);
        let held = tx.try_reserve(1).unwrap().unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.reserve(1).await.map(|s| s.count()) }
        });
        tokio::task::yield_now().await;
        drop(rx);
        let result = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(result, Err(Closed));
        assert!(tx.try_reserve(1).is_err());
        assert!(tx.send(1, held).is_err());
    }

    #[tokio::test]
    async fn a_batcher_sends_what_it_collected_as_one_message_in_order() {
        let (tx, mut rx) = channel::<Vec<u32>>(8);
        let mut batcher = Batcher::new(tx);
        for i in 0..5 {
            batcher.try_send(i).unwrap();
        }
        // Nothing leaves before the flush.
        assert!(rx.recv_now().is_none());
        batcher.flush().unwrap();
        batcher.try_send(5).unwrap();
        batcher.flush().unwrap();
        let (first, slots) = rx.recv_now().unwrap();
        assert_eq!((first, slots.count()), (vec![0, 1, 2, 3, 4], 5));
        let (second, slots) = rx.recv_now().unwrap();
        assert_eq!((second, slots.count()), (vec![5], 1));
        // Flushing nothing sends nothing.
        batcher.flush().unwrap();
        assert!(rx.recv_now().is_none());
    }

    #[tokio::test]
    async fn a_full_batcher_refuses_then_frees_a_slot_per_item_taken() {
        let (tx, rx) = channel::<Vec<u32>>(3);
        let mut batcher = Batcher::new(tx);
        for i in 0..3 {
            batcher.try_send(i).unwrap();
        }
        // The items added hold the slots, flushed or not.
        assert!(matches!(batcher.try_send(3), Err(TrySendError::Full(3))));
        batcher.flush().unwrap();
        assert!(matches!(batcher.try_send(3), Err(TrySendError::Full(3))));
        let mut items = Items::new(rx);
        assert_eq!(items.next().await, Some(0));
        // The item taken freed its slot, and only that one.
        batcher.try_send(3).unwrap();
        assert!(matches!(batcher.try_send(4), Err(TrySendError::Full(4))));
        batcher.flush().unwrap();
        let rest: Vec<u32> = (&mut items).take(3).collect().await;
        assert_eq!(rest, vec![1, 2, 3]);
        // Every slot is free again.
        for i in 0..3 {
            batcher.try_send(i).unwrap();
        }
        drop(items);
        assert!(matches!(batcher.try_send(9), Err(TrySendError::Closed(9))));
        assert_eq!(batcher.flush(), Err(Closed));
    }

    #[tokio::test]
    async fn a_waiting_send_flushes_first_so_the_receiver_can_make_room() {
        let (tx, rx) = channel::<Vec<u32>>(2);
        let mut batcher = Batcher::new(tx);
        let reader =
            tokio::spawn(async move { Items::new(rx).take(5).collect::<Vec<u32>>().await });
        for i in 0..5 {
            tokio::time::timeout(Duration::from_secs(5), batcher.send(i))
                .await
                .expect("the reader frees slots")
                .unwrap();
        }
        batcher.flush().unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    impl<T> Receiver<T> {
        /// The next message if one is waiting.
        fn recv_now(&mut self) -> Option<(T, Slots)> {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match self.poll_recv(&mut cx) {
                Poll::Ready(item) => item,
                Poll::Pending => None,
            }
        }
    }
}
