//! GetFlows across the cluster: one stream per agent, merged in time order.
//!
//! ```text
//!  node task (per agent) ── bounded ──┐  ┌─ sort window ─┐   bounded, per client
//!  node task (per agent) ── bounded ──┼──┤ status        ├── channel ──► client
//!  node task (per agent) ── bounded ──┘  └─ coalescer ───┘
//! ```
//!
//! - A *node task* opens GetFlows on its agent with the client's request
//!   (`number` applies per node, as in Hubble; `first`, `since`, `until`,
//!   filters and field mask pass through). In follow mode it outlives
//!   failures: after a transport error it reports NODE_ERROR, waits until
//!   the pool has a *newer* connection to the agent (reporting
//!   NODE_UNAVAILABLE meanwhile), reports NODE_CONNECTED and resumes just
//!   after the last flow it forwarded (`since` = last time + 1 ns).
//! - The *merger* (the request's own task) puts responses in a
//!   [`SortWindow`] and releases them in time order. A history request is
//!   an exact k-way merge: when the window is full, the merger reads only
//!   from nodes with nothing waiting (the others wait in their bounded
//!   channels), so nothing older can arrive after a flow is released — up
//!   to a stall timeout (the longer of the drain and request timeouts),
//!   which still bounds the wait for a node that stops sending.
//!   A following request releases the oldest flow when the window is full
//!   (as Hubble does), so one idle node never throttles the others; order
//!   then holds within the window. The merger also coalesces node status
//!   events (identical ones within `status_aggregation_window` become one
//!   event naming every node), and follows the pool: agents discovered
//!   mid-stream join it, agents that disappear are reported NODE_GONE.
//! - Towards the client, a following stream never blocks: when the client's
//!   buffer is full the response is dropped and counted, and a LostEvent
//!   with the count is sent as soon as there is room again. A slow client
//!   thus never slows the agents, the relay, or other clients. A history
//!   request (no follow) is back-pressured instead: it has an end, and the
//!   client asked for all of it.
//! - Both hops carry batches ([`crate::batch`]): a node task reads every
//!   response its stream has ready (up to half its buffer) and hands them
//!   over as one message; the merger sends what one round releases to the
//!   client as one message. Nothing waits to fill a batch (a lone flow
//!   leaves at once), and the bounds still count responses: a node's buffer
//!   holds at most `node_buffer_len` of them, a client's `client_buffer_len`.
//!
//! Flows go through all this encoded: a node task receives
//! [`RelayedResponse`]s, whose flow is the agent's encoded `flow.Flow`
//! (see [`crate::wire`]), and the client gets those bytes unchanged. The
//! relay decodes only each response's `time` (the sort key), `node_name`,
//! and the small node status and lost events; filters, field masks and
//! `number`/`first`/`since`/`until` are the agents' work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flowscope_proto::flow::{LostEvent, LostEventSource};
use flowscope_proto::observer::GetFlowsRequest;
use flowscope_proto::relay::{NodeState, NodeStatusEvent};
use flowscope_proto::wkt::Timestamp;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{Instrument as _, debug, debug_span};

use crate::batch::{self, Batcher, Items, Read, TrySendError, read_ready};
use crate::error::ObserverError;
use crate::metrics::Metrics;
use crate::peer::{PeerState, describe, is_transient};
use crate::pool::{Peer, PeerPool};
use crate::queue::{SortWindow, SourceId};
use crate::wire::{Event, RelayedResponse, open_get_flows};

/// The sort window source of the relay's own events (never live).
const RELAY_SOURCE: SourceId = 0;

/// Responses the merger takes at once when several node events are waiting
/// (the window may then hold this many, plus one node batch, over its length
/// until the next release).
const EVENT_BATCH: usize = 64;

/// The most responses a node task hands over in one message.
const NODE_BATCH_MAX: usize = 256;

/// The most responses a node task hands over in one message: half its
/// buffer, so that it can read the next batch while the merger takes one.
fn node_batch(node_buffer_len: usize) -> usize {
    (node_buffer_len / 2).clamp(1, NODE_BATCH_MAX)
}

/// GetFlows settings, from the relay configuration.
#[derive(Debug, Clone)]
pub(crate) struct FlowsSettings {
    pub sort_buffer_len_max: usize,
    pub sort_buffer_drain_timeout: Duration,
    pub status_aggregation_window: Duration,
    pub client_buffer_len: usize,
    pub node_buffer_len: usize,
    /// How long a new request waits for agents never probed yet (the relay
    /// just started) before it reports them unavailable.
    pub settle_timeout: Duration,
    /// In a history request, how long the merge waits for a node that
    /// stalls before releasing what others sent (order is exact otherwise).
    /// Latency does not matter there, order does: longer than the drain
    /// timeout, which bounds the latency of following requests.
    pub history_stall_timeout: Duration,
    pub relay_name: String,
}

/// Request header by which flowscope's clients ask agents for `Flow.extensions`.
pub(crate) use flowscope_proto::EXTENSIONS_HEADER;

/// The stream answering one GetFlows call.
pub(crate) type FlowStream = Items<Result<RelayedResponse, Status>>;

/// Validates `req` once for the whole cluster, then starts the fan-out.
pub(crate) fn get_flows(
    pool: PeerPool,
    settings: Arc<FlowsSettings>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    req: GetFlowsRequest,
    extensions: bool,
) -> Result<FlowStream, ObserverError> {
    // An invalid filter is one InvalidArgument here, not one NODE_ERROR per node.
    flowscope_filter::FlowFilterSet::compile(&req.whitelist, &req.blacklist)?;
    flowscope_filter::refuse_unproduced(&req.whitelist, &req.blacklist)?;
    // So is a field mask naming no field of flow.Flow (the agents would each refuse it).
    flowscope_proto::fieldmask::FlowMask::new(
        req.field_mask
            .as_ref()
            .map(|m| m.paths.as_slice())
            .unwrap_or_default(),
    )?;
    if req.first && req.follow {
        // As Hubble's agents and relay refuse it.
        return Err(ObserverError::InvalidRequest(
            "first cannot be specified with follow",
        ));
    }
    if let (Some(since), Some(until)) = (&req.since, &req.until)
        && since > until
    {
        return Err(ObserverError::InvalidRequest("since is after until"));
    }
    let until = req
        .until
        .map(SystemTime::try_from)
        .transpose()
        .map_err(|_| ObserverError::InvalidRequest("until is out of range"))?;
    let (out_tx, out_rx) = batch::channel(settings.client_buffer_len.max(1));
    let span = debug_span!("get_flows", follow = req.follow, number = req.number);
    let merger = Merger::new(
        pool,
        settings,
        metrics,
        shutdown.child_token(),
        Batcher::new(out_tx),
        &req,
        extensions,
    );
    tokio::spawn(merger.run(req, until).instrument(span));
    Ok(Items::new(out_rx))
}

/// Event time of a response: the response's `time`, else the flow's, else
/// a LostEvent's `last`, else now.
fn response_time(resp: &RelayedResponse) -> Timestamp {
    resp.event_time().unwrap_or_else(Timestamp::now)
}

/// What a node task tells the merger (on its own channel, in order).
enum NodeEvent {
    /// Responses from the agent, in the order received (small: each flow is
    /// a `Bytes`); never empty.
    Responses(Vec<RelayedResponse>),
    /// The node's stream opened (`true`) or ended (`false`).
    Live(bool),
    /// A node status change to report.
    Status {
        name: String,
        state: NodeState,
        message: String,
    },
}

impl NodeEvent {
    /// Slots it takes in the node's buffer: one per response.
    fn slots(&self) -> usize {
        match self {
            NodeEvent::Responses(responses) => responses.len(),
            NodeEvent::Live(_) | NodeEvent::Status { .. } => 1,
        }
    }
}

/// Node status events waiting to be coalesced.
struct PendingStatus {
    state: NodeState,
    message: String,
    names: Vec<String>,
    deadline: Instant,
}

/// Coalesces failure reports: NODE_ERROR events with the same message and
/// NODE_UNAVAILABLE events arriving within `window` become one event naming
/// every node. NODE_CONNECTED and NODE_GONE are not delayed. A new event
/// for a node first flushes any pending event naming it, so each node's
/// events keep their order.
struct StatusCoalescer {
    window: Duration,
    relay_name: String,
    pending: Vec<PendingStatus>,
}

impl StatusCoalescer {
    fn new(window: Duration, relay_name: String) -> Self {
        Self {
            window,
            relay_name,
            pending: Vec::new(),
        }
    }

    fn response(&self, state: NodeState, names: Vec<String>, message: String) -> RelayedResponse {
        node_status(&self.relay_name, state, names, message)
    }

    /// Adds an event; returns the events to emit now. Pending events leave
    /// in the order they were created, which keeps each node's events in
    /// order: a failure notice joins the latest event with the same state
    /// and message unless the node already appears in a later one; a
    /// NODE_CONNECTED or NODE_GONE first releases every pending event up to
    /// the last one naming the node.
    fn add(
        &mut self,
        state: NodeState,
        name: String,
        message: String,
        now: Instant,
    ) -> Vec<RelayedResponse> {
        let coalesce = matches!(state, NodeState::NodeError | NodeState::NodeUnavailable)
            && !self.window.is_zero();
        let last_naming = self.pending.iter().rposition(|p| p.names.contains(&name));
        if !coalesce {
            let flush = last_naming.map_or(0, |i| i + 1);
            let flushed: Vec<PendingStatus> = self.pending.drain(..flush).collect();
            let mut out: Vec<RelayedResponse> = flushed
                .into_iter()
                .map(|p| self.response(p.state, p.names, p.message))
                .collect();
            out.push(self.response(state, vec![name], message));
            return out;
        }
        let same = self
            .pending
            .iter()
            .rposition(|p| p.state == state && p.message == message);
        match same {
            Some(i) if last_naming.is_none_or(|j| j <= i) => {
                let p = &mut self.pending[i];
                if !p.names.contains(&name) {
                    p.names.push(name);
                }
            }
            _ => self.pending.push(PendingStatus {
                state,
                message,
                names: vec![name],
                deadline: now + self.window,
            }),
        }
        Vec::new()
    }

    /// Events whose window is over, oldest first.
    fn take_due(&mut self, now: Instant) -> Vec<RelayedResponse> {
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.deadline <= now);
        self.pending = keep;
        due.into_iter()
            .map(|p| self.response(p.state, p.names, p.message))
            .collect()
    }

    fn take_all(&mut self) -> Vec<RelayedResponse> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|p| self.response(p.state, p.names, p.message))
            .collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }
}

/// A NodeStatusEvent response from the relay.
fn node_status(
    relay_name: &str,
    state: NodeState,
    names: Vec<String>,
    message: String,
) -> RelayedResponse {
    RelayedResponse::new(
        Event::NodeStatus(Box::new(NodeStatusEvent {
            state_change: state as i32,
            node_names: names,
            message,
        })),
        relay_name,
        Some(Timestamp::now()),
    )
}

/// Responses dropped for a slow client, reported as one LostEvent.
#[derive(Default)]
struct Lost {
    count: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

impl Lost {
    fn add(&mut self, resp: &RelayedResponse) {
        let t = response_time(resp);
        self.count += 1;
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
    }

    fn take_event(&mut self, relay_name: &str) -> RelayedResponse {
        let lost = std::mem::take(self);
        RelayedResponse::new(
            Event::LostEvents(Box::new(LostEvent {
                // The relay's per-client buffer plays the role of Hubble's
                // ring buffer here: a reader fell behind the flows.
                source: LostEventSource::HubbleRingBuffer as i32,
                num_events_lost: lost.count,
                cpu: None,
                first: lost.first,
                last: lost.last,
            })),
            relay_name,
            Some(Timestamp::now()),
        )
    }
}

/// The client went away or the relay is stopping.
struct Closed;

struct NodeHandle {
    id: SourceId,
    peer: Arc<Peer>,
    cancel: CancellationToken,
}

/// One GetFlows call's merger.
struct Merger {
    pool: PeerPool,
    settings: Arc<FlowsSettings>,
    metrics: Arc<Metrics>,
    /// Fires when the relay stops; the request's node tasks use children.
    cancel: CancellationToken,
    /// What a round releases leaves as one message (`flush`): before the
    /// merger waits for anything.
    out: Batcher<Result<RelayedResponse, Status>>,
    follow: bool,
    /// Ask the agents for `Flow.extensions`.
    extensions: bool,
    window: SortWindow<RelayedResponse>,
    statuses: StatusCoalescer,
    lost: Lost,
    nodes: HashMap<String, NodeHandle>,
    next_id: SourceId,
    /// Each node task's channel; removed when the task ends.
    receivers: Vec<(SourceId, batch::Receiver<NodeEvent>)>,
    /// Where the next poll of `receivers` starts (fairness).
    next_poll: usize,
    /// New node tasks may still start (follow mode before `until`); the
    /// merger ends when this is false and every node task is done.
    spawning: bool,
}

impl Merger {
    fn new(
        pool: PeerPool,
        settings: Arc<FlowsSettings>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
        out: Batcher<Result<RelayedResponse, Status>>,
        req: &GetFlowsRequest,
        extensions: bool,
    ) -> Self {
        Self {
            window: if req.follow {
                SortWindow::new(
                    settings.sort_buffer_len_max,
                    settings.sort_buffer_drain_timeout,
                )
            } else {
                SortWindow::new(settings.sort_buffer_len_max, settings.history_stall_timeout)
                    .with_back_pressure()
            },
            statuses: StatusCoalescer::new(
                settings.status_aggregation_window,
                settings.relay_name.clone(),
            ),
            pool,
            settings,
            metrics,
            cancel,
            out,
            follow: req.follow,
            extensions,
            lost: Lost::default(),
            nodes: HashMap::new(),
            next_id: RELAY_SOURCE + 1,
            receivers: Vec::new(),
            next_poll: 0,
            spawning: true,
        }
    }

    async fn run(mut self, req: GetFlowsRequest, until: Option<SystemTime>) {
        let _client = self.metrics.client();
        // Node tasks end with the request, whatever way it ends.
        let _stop_nodes = self.cancel.clone().drop_guard();
        match self.serve(req, until).await {
            Ok(()) => debug!("stream done"),
            Err(Closed) if self.cancel.is_cancelled() => {
                // What was released is sent before the error.
                let _ = self
                    .out
                    .try_send(Err(Status::from(ObserverError::ShuttingDown)));
                let _ = self.out.flush();
            }
            Err(Closed) => debug!("client gone"),
        }
    }

    async fn serve(
        &mut self,
        req: GetFlowsRequest,
        until: Option<SystemTime>,
    ) -> Result<(), Closed> {
        let req = Arc::new(req);

        self.settle().await?;
        let mut changes = self.pool.subscribe();
        changes.borrow_and_update();

        // Hubble's first messages: which nodes we expect flows from, which not.
        let mut connected = Vec::new();
        let mut unavailable = Vec::new();
        for peer in self.pool.peers() {
            let status = peer.status();
            if status.state == PeerState::Connected {
                connected.push(status.name);
                self.start_node(peer, &req, until, Some(status.generation), false);
            } else {
                unavailable.push(status.name);
                if self.follow {
                    self.start_node(peer, &req, until, None, true);
                }
            }
        }
        let relay_name = self.settings.relay_name.clone();
        if !connected.is_empty() {
            let event = node_status(
                &relay_name,
                NodeState::NodeConnected,
                connected,
                String::new(),
            );
            self.send_blocking(event).await?;
        }
        if !unavailable.is_empty() {
            let event = node_status(
                &relay_name,
                NodeState::NodeUnavailable,
                unavailable,
                String::new(),
            );
            self.send_blocking(event).await?;
        }
        self.flush()?;

        // No node joins a history request: it ends when its nodes are done.
        self.spawning = self.follow;
        let until_deadline = until.map(|u| {
            let left = u.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });

        // Branch futures must not borrow `self`, which the event branch
        // borrows mutably (and the reservation borrows the sender). The two
        // that end the request live across iterations: set up once, not per
        // flow.
        let out = self.out.sender().clone();
        let cancel = self.cancel.clone();
        let cancelled = cancel.cancelled();
        let closed = out.closed();
        tokio::pin!(cancelled, closed);
        loop {
            self.release_ready().await?;
            let deadline = [self.window.next_deadline(), self.statuses.next_deadline()]
                .into_iter()
                .flatten()
                .min();
            let lost_pending = self.lost.count > 0;
            let spawning = self.spawning;
            tokio::select! {
                biased;
                _ = &mut cancelled => return Err(Closed),
                _ = &mut closed => return Err(Closed),
                event = std::future::poll_fn(|cx| self.poll_event(cx)) => match event {
                    Some((node, event)) => {
                        let now = Instant::now();
                        self.handle(node, event, now);
                        self.handle_ready_events(now);
                    }
                    None => break,
                },
                slot = out.reserve(1), if lost_pending => match slot {
                    Ok(slot) => {
                        self.out.push(Ok(self.lost.take_event(&relay_name)), slot);
                        self.flush()?;
                    }
                    Err(_) => return Err(Closed),
                },
                _ = sleep_until(deadline.map_or_else(far_future, tokio::time::Instant::from_std)), if deadline.is_some() => {}
                changed = changes.changed(), if spawning => {
                    if changed.is_ok() {
                        self.reconcile(&req, until);
                    }
                },
                _ = sleep_until(until_deadline.unwrap_or_else(far_future)), if spawning && until_deadline.is_some() => {
                    // Past `until`: no node joins any more; the stream ends
                    // when the current ones are done.
                    self.spawning = false;
                },
            }
        }

        // Every node is done: release everything, in order.
        let now = Instant::now();
        for event in self.statuses.take_all() {
            self.push_status(event, now);
        }
        while let Some(resp) = self.window.pop() {
            self.emit(resp).await?;
        }
        if self.lost.count > 0 {
            let event = self.lost.take_event(&relay_name);
            self.send_blocking(event).await?;
        }
        self.flush()
    }

    /// Waits (boundedly) for agents that were never probed: a request
    /// arriving right after the relay started should not find every node
    /// "unavailable" only because the first probes are in flight.
    async fn settle(&self) -> Result<(), Closed> {
        let deadline = tokio::time::Instant::now() + self.settings.settle_timeout;
        for peer in self.pool.peers() {
            let mut rx = peer.subscribe();
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(Closed),
                _ = self.out.sender().closed() => return Err(Closed),
                _ = tokio::time::sleep_until(deadline) => break,
                _ = rx.wait_for(|s| s.state != PeerState::Connecting) => {}
            }
        }
        Ok(())
    }

    fn start_node(
        &mut self,
        peer: Arc<Peer>,
        req: &Arc<GetFlowsRequest>,
        until: Option<SystemTime>,
        connected: Option<u64>,
        announced_unavailable: bool,
    ) {
        if !self.spawning {
            return;
        }
        let (events, receiver) = batch::channel(self.settings.node_buffer_len.max(1));
        let id = self.next_id;
        self.next_id += 1;
        if connected.is_some() {
            // Its stream opens now: wait for it before releasing anything.
            self.window.set_live(id, true);
        }
        let cancel = self.cancel.child_token();
        let task = NodeTask {
            peer: peer.clone(),
            req: req.clone(),
            follow: self.follow,
            extensions: self.extensions,
            until,
            batch: node_batch(events.capacity()),
            events,
            cancel: cancel.clone(),
            metrics: self.metrics.clone(),
        };
        let span = debug_span!("node", address = %peer.address());
        tokio::spawn(task.run(connected, announced_unavailable).instrument(span));
        self.receivers.push((id, receiver));
        self.nodes
            .insert(peer.address().to_string(), NodeHandle { id, peer, cancel });
    }

    /// The next event of any node task; `None` when every node task is done
    /// and none may start any more. In a history request with a full
    /// window, only nodes with nothing waiting are read: the others are
    /// back-pressured so that the window stays an exact merge.
    fn poll_event(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<(SourceId, NodeEvent)>> {
        use std::task::Poll;
        let full = !self.follow && self.window.len() >= self.settings.sort_buffer_len_max;
        let count = self.receivers.len();
        let mut i = 0;
        while i < count.min(self.receivers.len()) {
            let index = (self.next_poll + i) % self.receivers.len();
            let (id, receiver) = &mut self.receivers[index];
            let id = *id;
            if full && self.window.pending(id) > 0 {
                i += 1;
                continue;
            }
            match receiver.poll_recv(cx) {
                Poll::Ready(Some((event, slots))) => {
                    // Taken: its slots are free for the node task.
                    drop(slots);
                    self.next_poll = index + 1;
                    return Poll::Ready(Some((id, event)));
                }
                Poll::Ready(None) => {
                    // The node task is done.
                    self.receivers.swap_remove(index);
                    self.window.set_live(id, false);
                }
                Poll::Pending => i += 1,
            }
        }
        if self.receivers.is_empty() && !self.spawning {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// Follows the pool: start streams on new agents, report removed ones.
    fn reconcile(&mut self, req: &Arc<GetFlowsRequest>, until: Option<SystemTime>) {
        let peers = self.pool.peers();
        let now = Instant::now();
        // Gone: no longer listed, or listed again as a new peer (removed and
        // re-added between two looks).
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(key, handle)| {
                !peers
                    .iter()
                    .any(|p| p.address() == key.as_str() && Arc::ptr_eq(p, &handle.peer))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            if let Some(handle) = self.nodes.remove(&key) {
                handle.cancel.cancel();
                self.receivers.retain(|(id, _)| *id != handle.id);
                self.window.set_live(handle.id, false);
                let name = handle.peer.name();
                for event in self
                    .statuses
                    .add(NodeState::NodeGone, name, String::new(), now)
                {
                    self.push_status(event, now);
                }
            }
        }
        for peer in peers {
            if !self.nodes.contains_key(peer.address()) {
                // It reports NODE_CONNECTED itself once the pool connects it.
                self.start_node(peer, req, until, None, false);
            }
        }
    }

    /// Handles the node events already waiting, until about
    /// [`EVENT_BATCH`] responses: a round of the merger's `select!` costs
    /// more than a flow does. (Polled with a no-op waker: the next `select!`
    /// polls the receivers again with the task's own before it sleeps.)
    fn handle_ready_events(&mut self, now: Instant) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut taken = 0;
        while taken < EVENT_BATCH {
            match self.poll_event(&mut cx) {
                std::task::Poll::Ready(Some((node, event))) => {
                    taken += event.slots();
                    self.handle(node, event, now);
                }
                // `None` (every node done) shows again in the next `select!`.
                _ => return,
            }
        }
    }

    fn handle(&mut self, node: SourceId, event: NodeEvent, now: Instant) {
        match event {
            NodeEvent::Responses(responses) => {
                for resp in responses {
                    let key = response_time(&resp).as_nanos();
                    self.window.push(node, key, resp, now);
                }
            }
            NodeEvent::Live(live) => self.window.set_live(node, live),
            NodeEvent::Status {
                name,
                state,
                message,
            } => {
                for event in self.statuses.add(state, name, message, now) {
                    self.push_status(event, now);
                }
            }
        }
    }

    fn push_status(&mut self, event: RelayedResponse, now: Instant) {
        let key = response_time(&event).as_nanos();
        self.window.push(RELAY_SOURCE, key, event, now);
    }

    /// Moves due status events into the window and sends whatever the
    /// window releases, as one message.
    async fn release_ready(&mut self) -> Result<(), Closed> {
        let now = Instant::now();
        for event in self.statuses.take_due(now) {
            self.push_status(event, now);
        }
        while let Some(resp) = self.window.pop_ready(now) {
            self.emit(resp).await?;
        }
        self.flush()
    }

    /// Sends what was emitted since the last flush.
    fn flush(&mut self) -> Result<(), Closed> {
        self.out.flush().map_err(|batch::Closed| Closed)
    }

    /// Sends a response to the client: never waiting in follow mode (drop
    /// and count instead), waiting in history mode.
    async fn emit(&mut self, resp: RelayedResponse) -> Result<(), Closed> {
        let is_flow = resp.is_flow();
        if !self.follow {
            self.send_blocking(resp).await?;
        } else {
            if self.lost.count > 0 {
                // Report the loss before anything newer.
                let event = self.lost.take_event(&self.settings.relay_name);
                match self.out.try_send(Ok(event)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(Ok(event))) => {
                        self.restore_lost(event);
                        self.drop_for_slow_client(&resp);
                        return Ok(());
                    }
                    Err(TrySendError::Full(Err(_))) => {}
                    Err(TrySendError::Closed(_)) => return Err(Closed),
                }
            }
            match self.out.try_send(Ok(resp)) {
                Ok(()) => {}
                Err(TrySendError::Full(Ok(resp))) => {
                    self.drop_for_slow_client(&resp);
                    return Ok(());
                }
                Err(TrySendError::Full(Err(_))) => return Ok(()),
                Err(TrySendError::Closed(_)) => return Err(Closed),
            }
        }
        if is_flow {
            self.metrics.flow_relayed();
        }
        Ok(())
    }

    fn drop_for_slow_client(&mut self, resp: &RelayedResponse) {
        self.lost.add(resp);
        self.metrics.lost_event();
    }

    /// Puts back a LostEvent that could not be sent.
    fn restore_lost(&mut self, event: RelayedResponse) {
        if let Some(Event::LostEvents(lost)) = event.event {
            self.lost = Lost {
                count: lost.num_events_lost,
                first: lost.first,
                last: lost.last,
            };
        }
    }

    /// Adds `resp` to what leaves at the next flush, waiting for room in
    /// the client's buffer (and sending what waits first) if there is none.
    async fn send_blocking(&mut self, resp: RelayedResponse) -> Result<(), Closed> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(Closed),
            sent = self.out.send(Ok(resp)) => sent.map_err(|batch::Closed| Closed),
        }
    }
}

/// A deadline that never comes (for disabled `select!` branches, which
/// still evaluate their future expression).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// How a node's stream ended.
enum Outcome {
    /// The request was cancelled (client gone, relay stopping, node removed).
    Cancelled,
    /// The agent ended the stream.
    Ended,
    /// The call failed.
    Failed(Status),
}

/// One agent's part of one GetFlows call.
struct NodeTask {
    peer: Arc<Peer>,
    req: Arc<GetFlowsRequest>,
    follow: bool,
    extensions: bool,
    until: Option<SystemTime>,
    events: batch::Sender<NodeEvent>,
    /// The most responses handed over in one message.
    batch: usize,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
}

impl NodeTask {
    /// `connected`: the connection generation when the node was announced
    /// connected in the stream's first message; `None` when it was
    /// announced unavailable (`announced_unavailable`) or joined later.
    async fn run(self, connected: Option<u64>, announced_unavailable: bool) {
        let mut status_rx = self.peer.subscribe();
        let mut reported_unavailable = announced_unavailable;
        let mut current = connected;
        // Wait for a connection newer than this one.
        let mut failed_generation = 0;
        let mut last_time: Option<Timestamp> = None;
        loop {
            let generation = match current.take() {
                Some(generation) => generation,
                None => {
                    let Some(generation) = self
                        .wait_connected(
                            &mut status_rx,
                            failed_generation,
                            &mut reported_unavailable,
                        )
                        .await
                    else {
                        return;
                    };
                    if !self.send(NodeEvent::Live(true)).await
                        || !self.status(NodeState::NodeConnected, String::new()).await
                    {
                        return;
                    }
                    reported_unavailable = false;
                    generation
                }
            };
            let request = resume_request(&self.req, last_time);
            let outcome = self.stream(request, &mut last_time).await;
            if !self.send(NodeEvent::Live(false)).await {
                return;
            }
            match outcome {
                Outcome::Cancelled => return,
                Outcome::Ended => {
                    if !self.follow || self.until_passed() {
                        return;
                    }
                    // The agent closed a following stream: it is stopping.
                    self.peer
                        .report_failure(generation, "the node closed the stream");
                }
                Outcome::Failed(status) => {
                    self.metrics.node_error();
                    let message = describe(&status);
                    debug!(error = %message, "node stream failed");
                    if !self.status(NodeState::NodeError, message.clone()).await {
                        return;
                    }
                    if !self.follow || !is_transient(&status) {
                        return;
                    }
                    self.peer.report_failure(generation, &message);
                }
            }
            failed_generation = generation;
        }
    }

    fn until_passed(&self) -> bool {
        self.until.is_some_and(|u| SystemTime::now() >= u)
    }

    /// Waits until the pool has a connection newer than `failed_generation`;
    /// reports NODE_UNAVAILABLE once while waiting. `None`: give up (request
    /// over, node removed, `until` passed).
    async fn wait_connected(
        &self,
        status_rx: &mut tokio::sync::watch::Receiver<crate::peer::PeerStatus>,
        failed_generation: u64,
        reported_unavailable: &mut bool,
    ) -> Option<u64> {
        let until = self.until.map(|u| {
            let left = u.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        loop {
            let status = status_rx.borrow_and_update().clone();
            if status.state == PeerState::Connected && status.generation > failed_generation {
                return Some(status.generation);
            }
            if matches!(status.state, PeerState::Unavailable | PeerState::Error)
                && !*reported_unavailable
            {
                if !self.status(NodeState::NodeUnavailable, String::new()).await {
                    return None;
                }
                *reported_unavailable = true;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = self.peer.removed().cancelled() => return None,
                _ = sleep_until(until.unwrap_or_else(far_future)), if until.is_some() => return None,
                changed = status_rx.changed() => if changed.is_err() {
                    return None;
                },
            }
        }
    }

    /// Streams the agent's responses to the merger until the stream ends.
    async fn stream(&self, request: GetFlowsRequest, last_time: &mut Option<Timestamp>) -> Outcome {
        let channel = self.peer.channel();
        let mut request = tonic::Request::new(request);
        if self.extensions {
            request.metadata_mut().insert(
                EXTENSIONS_HEADER,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        // Set up once for the whole stream, not per message.
        let stopped = async {
            tokio::select! {
                _ = self.cancel.cancelled() => {}
                _ = self.peer.removed().cancelled() => {}
            }
        };
        tokio::pin!(stopped);
        let response = tokio::select! {
            _ = &mut stopped => return Outcome::Cancelled,
            response = open_get_flows(channel, request) => response,
        };
        let mut stream = match response {
            Ok(response) => response.into_inner(),
            Err(status) => return Outcome::Failed(status),
        };
        let mut known_name = String::new();
        let mut responses = Vec::with_capacity(self.batch);
        loop {
            // Whatever the stream has ready, in one message: one hand-over
            // and one wake-up of the merger per batch, not per flow.
            let read = tokio::select! {
                _ = &mut stopped => return Outcome::Cancelled,
                read = read_ready(&mut stream, self.batch, &mut responses) => read,
            };
            for resp in &mut responses {
                let name = resp.node_name();
                if name.is_empty() {
                    resp.set_node_name(self.peer.name());
                } else if name != known_name {
                    self.peer.learn_name(name);
                    known_name = name.to_string();
                }
                if resp.is_flow() {
                    let t = response_time(resp);
                    *last_time = Some(last_time.map_or(t, |l| l.max(t)));
                }
            }
            if !responses.is_empty() {
                let batch = std::mem::replace(&mut responses, Vec::with_capacity(self.batch));
                if !self.send(NodeEvent::Responses(batch)).await {
                    return Outcome::Cancelled;
                }
            }
            match read {
                Read::More => {}
                Read::Ended => return Outcome::Ended,
                Read::Failed(status) => return Outcome::Failed(status),
            }
        }
    }

    async fn status(&self, state: NodeState, message: String) -> bool {
        self.send(NodeEvent::Status {
            name: self.peer.name(),
            state,
            message,
        })
        .await
    }

    /// False when the request is over.
    async fn send(&self, event: NodeEvent) -> bool {
        let n = event.slots();
        // Room in the channel (the common case): no future to set up.
        let slots = match self.events.try_reserve(n) {
            Ok(Some(slots)) => slots,
            Err(batch::Closed) => return false,
            Ok(None) => tokio::select! {
                _ = self.cancel.cancelled() => return false,
                slots = self.events.reserve(n) => match slots {
                    Ok(slots) => slots,
                    Err(batch::Closed) => return false,
                },
            },
        };
        self.events.send(event, slots).is_ok()
    }
}

/// The request to send to a node: the client's, or after a reconnection
/// the same one resumed just after the last flow already forwarded (no
/// duplicates, and the flows the agent kept meanwhile are not lost).
fn resume_request(req: &GetFlowsRequest, last_time: Option<Timestamp>) -> GetFlowsRequest {
    let mut request = req.clone();
    if let Some(last) = last_time {
        let next = Timestamp::from_nanos(last.as_nanos().saturating_add(1));
        request.number = 0;
        request.first = false;
        request.since = Some(request.since.map_or(next, |since| since.max(next)));
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(resp: &RelayedResponse) -> (i32, Vec<String>, String) {
        match &resp.event {
            Some(Event::NodeStatus(s)) => (s.state_change, s.node_names.clone(), s.message.clone()),
            other => panic!("not a node status: {other:?}"),
        }
    }

    #[test]
    fn identical_errors_are_coalesced() {
        let t0 = Instant::now();
        let mut c = StatusCoalescer::new(Duration::from_secs(1), "relay".into());
        assert!(
            c.add(NodeState::NodeError, "a".into(), "boom".into(), t0)
                .is_empty()
        );
        assert!(
            c.add(NodeState::NodeError, "b".into(), "boom".into(), t0)
                .is_empty()
        );
        assert!(
            c.add(NodeState::NodeError, "c".into(), "other".into(), t0)
                .is_empty()
        );
        assert!(
            c.add(NodeState::NodeUnavailable, "d".into(), String::new(), t0)
                .is_empty()
        );
        assert!(c.take_due(t0 + Duration::from_millis(999)).is_empty());
        let due = c.take_due(t0 + Duration::from_secs(1));
        let due: Vec<_> = due.iter().map(names).collect();
        assert_eq!(
            due,
            vec![
                (
                    NodeState::NodeError as i32,
                    vec!["a".into(), "b".into()],
                    "boom".into()
                ),
                (
                    NodeState::NodeError as i32,
                    vec!["c".into()],
                    "other".into()
                ),
                (
                    NodeState::NodeUnavailable as i32,
                    vec!["d".into()],
                    String::new()
                ),
            ]
        );
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_node_event_flushes_its_pending_one_first() {
        let t0 = Instant::now();
        let mut c = StatusCoalescer::new(Duration::from_secs(1), "relay".into());
        let none = |out: Vec<RelayedResponse>| assert!(out.is_empty());
        none(c.add(NodeState::NodeError, "a".into(), "x".into(), t0));
        none(c.add(NodeState::NodeUnavailable, "a".into(), String::new(), t0));
        // b's notices join a's: in order for each node.
        none(c.add(NodeState::NodeError, "b".into(), "x".into(), t0));
        none(c.add(NodeState::NodeUnavailable, "b".into(), String::new(), t0));
        none(c.add(NodeState::NodeUnavailable, "c".into(), String::new(), t0));
        // c fails after its NODE_UNAVAILABLE: a new event after it.
        none(c.add(NodeState::NodeError, "c".into(), "x".into(), t0));
        let out = c.add(NodeState::NodeConnected, "a".into(), String::new(), t0);
        let out: Vec<_> = out.iter().map(names).collect();
        let err = NodeState::NodeError as i32;
        let unavailable = NodeState::NodeUnavailable as i32;
        let connected = NodeState::NodeConnected as i32;
        assert_eq!(
            out,
            vec![
                (err, vec!["a".into(), "b".into()], "x".into()),
                (
                    unavailable,
                    vec!["a".into(), "b".into(), "c".into()],
                    String::new()
                ),
                (connected, vec!["a".into()], String::new()),
            ]
        );
        let rest: Vec<_> = c.take_all().iter().map(names).collect();
        assert_eq!(rest, vec![(err, vec!["c".into()], "x".into())]);
    }

    #[test]
    fn resume_after_the_last_flow() {
        let req = GetFlowsRequest {
            number: 20,
            first: true,
            follow: true,
            since: Some(Timestamp::new(10, 0)),
            ..Default::default()
        };
        assert_eq!(resume_request(&req, None), req);
        let resumed = resume_request(&req, Some(Timestamp::new(99, 999_999_999)));
        assert_eq!(resumed.number, 0);
        assert!(!resumed.first);
        assert_eq!(resumed.since, Some(Timestamp::new(100, 0)));
        // Never earlier than what the client asked for.
        let resumed = resume_request(&req, Some(Timestamp::new(5, 0)));
        assert_eq!(resumed.since, Some(Timestamp::new(10, 0)));
    }

    #[test]
    fn lost_event_counts_and_spans() {
        let mut lost = Lost::default();
        for s in [5, 3, 9] {
            let mut resp = RelayedResponse::default();
            resp.time = Some(Timestamp::new(s, 0));
            lost.add(&resp);
        }
        let event = lost.take_event("relay");
        match event.event {
            Some(Event::LostEvents(l)) => {
                assert_eq!(l.num_events_lost, 3);
                assert_eq!(l.first, Some(Timestamp::new(3, 0)));
                assert_eq!(l.last, Some(Timestamp::new(9, 0)));
                assert_eq!(l.source, LostEventSource::HubbleRingBuffer as i32);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(lost.count, 0);
    }
}
