//! Hubble's `observer.Observer` service on the agent.

use std::{pin::Pin, sync::Arc, sync::atomic::Ordering, time::Duration};

use flowscope_filter::FlowFilterSet;
use flowscope_proto::{
    SERVER_VERSION_HEADER,
    flow::{Flow, LostEvent, LostEventSource},
    flowscope::v1::{GetFlowsExtension, RecordSelection},
    observer::{
        GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
        GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
        GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Namespace, Node,
        ServerStatusRequest, ServerStatusResponse, Tls, get_flows_response::ResponseTypes,
        observer_server::Observer,
    },
    relay::NodeState,
    wkt::Timestamp,
};
use futures::Stream;
use tonic::{Request, Response, Status, metadata::MetadataValue};

use super::{
    AgentState, EXTENSIONS_HEADER, encoded::EncodedResponse, flow_encoder::FlowEncoder,
    mask::FieldMask,
};
use crate::{
    decode::record::FlowRecord,
    history::{Entry, FlowStore},
};

pub(super) type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Entries read from the history per lock acquisition. What a stream has read is its own (the
/// history may overwrite those entries meanwhile): with HTTP/2's send buffer, this is the
/// slack a client has beyond the history before it gets LostEvents.
const READ_BATCH: usize = 1024;

/// The Observer service.
#[derive(Clone)]
pub struct ObserverService {
    state: Arc<AgentState>,
}

impl ObserverService {
    /// A service over the agent's state.
    pub fn new(state: Arc<AgentState>) -> Self {
        ObserverService { state }
    }
}

fn with_version<T>(msg: T) -> Response<T> {
    let mut r = Response::new(msg);
    r.metadata_mut().insert(
        SERVER_VERSION_HEADER,
        MetadataValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    r
}

fn nanos(t: &Option<Timestamp>) -> Option<i64> {
    t.as_ref().map(|t| t.as_nanos())
}

/// One GetFlows request, compiled.
struct Query {
    filters: FlowFilterSet,
    since: Option<i64>,
    until: Option<i64>,
    mask: FieldMask,
    extensions: bool,
    /// Which records the request selects (`flowscope.v1.GetFlowsExtension`): flows of packets,
    /// or reports of connections that got no reply, each from its own history.
    records: RecordSelection,
}

impl Query {
    fn time_ok(&self, t: Option<i64>) -> bool {
        let Some(t) = t else { return true };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    fn past_until(&self, t: Option<i64>) -> bool {
        matches!((t, self.until), (Some(t), Some(u)) if t > u)
    }

    /// Whether the flow `e` holds passes the request's time bounds and filters.
    fn keeps(&self, e: &Entry) -> bool {
        self.time_ok(e.flow_time_nanos()) && self.filtered_in(e)
    }

    /// Whether the flow `e` holds passes the request's filters. A record is built into a
    /// `flow.Flow` only when its own fields cannot decide (filters on addresses, ports,
    /// verdicts, pods, namespaces, labels and identities can: a follower of one pod does not
    /// build the flows of all the others).
    fn filtered_in(&self, e: &Entry) -> bool {
        match e {
            Entry::Flow(f) => self.filters.matches(f),
            Entry::Record(r) => {
                self.filters.is_empty()
                    || self
                        .filters
                        .decide(r.as_ref())
                        .unwrap_or_else(|| self.filters.matches(&r.to_flow()))
            }
            Entry::Lost(_) => true,
        }
    }

    fn response(&self, f: &Flow) -> GetFlowsResponse {
        let mut flow = self.mask.apply(f);
        if !self.extensions {
            flow.extensions = None;
        }
        GetFlowsResponse {
            node_name: f.node_name.clone(),
            time: f.time,
            response_types: Some(ResponseTypes::Flow(flow)),
        }
    }
}

fn lost_response(node: &str, source: LostEventSource, n: u64) -> GetFlowsResponse {
    let now = Timestamp::now();
    GetFlowsResponse {
        node_name: node.to_owned(),
        time: Some(now),
        response_types: Some(ResponseTypes::LostEvents(LostEvent {
            source: source as i32,
            num_events_lost: n,
            cpu: None,
            first: Some(now),
            last: Some(now),
        })),
    }
}

/// The records a request selects, from `GetFlowsRequest.extensions` when it holds our
/// `GetFlowsExtension` (any other Any is ignored, as a Hubble server ignores ours).
fn record_selection(req: &GetFlowsRequest) -> Result<RecordSelection, Status> {
    let Some(any) = &req.extensions else {
        return Ok(RecordSelection::Packets);
    };
    let ext: Option<GetFlowsExtension> = any.to_msg().map_err(|e| {
        Status::invalid_argument(format!(
            "extensions: malformed flowscope.v1.GetFlowsExtension: {e}"
        ))
    })?;
    let Some(ext) = ext else {
        return Ok(RecordSelection::Packets);
    };
    RecordSelection::try_from(ext.records).map_err(|_| {
        Status::invalid_argument(format!(
            "extensions: unknown GetFlowsExtension.records value {}",
            ext.records
        ))
    })
}

/// What a GetFlows stream carries: the generated server's `GetFlowsResponse`s, or the
/// [`EncodedResponse`]s the agent's own route sends (see `encoded.rs`).
trait Reply: Send + 'static {
    fn flow(q: &Query, f: &Flow, scratch: &mut Vec<u8>) -> Self;
    fn record(q: &Query, r: &FlowRecord, enc: &mut FlowEncoder, scratch: &mut Vec<u8>) -> Self;
    fn other(r: GetFlowsResponse) -> Self;
}

impl Reply for GetFlowsResponse {
    fn flow(q: &Query, f: &Flow, _: &mut Vec<u8>) -> Self {
        q.response(f)
    }
    fn record(q: &Query, r: &FlowRecord, _: &mut FlowEncoder, _: &mut Vec<u8>) -> Self {
        q.response(&r.to_flow())
    }
    fn other(r: GetFlowsResponse) -> Self {
        r
    }
}

impl Reply for EncodedResponse {
    fn flow(q: &Query, f: &Flow, scratch: &mut Vec<u8>) -> Self {
        EncodedResponse::flow(f, &q.mask, q.extensions, scratch)
    }
    fn record(q: &Query, r: &FlowRecord, enc: &mut FlowEncoder, scratch: &mut Vec<u8>) -> Self {
        if q.mask.is_all() {
            EncodedResponse::record(r, q.extensions, enc, scratch)
        } else {
            // Rare (clients that send a field mask): the mask works on the encoded flow.
            EncodedResponse::flow(&r.to_flow(), &q.mask, q.extensions, scratch)
        }
    }
    fn other(r: GetFlowsResponse) -> Self {
        EncodedResponse::of(&r)
    }
}

impl ObserverService {
    /// GetFlows: compiles the request and starts the stream that answers it.
    fn start_flows<R: Reply>(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Stream_<R>>, Status> {
        let extensions = request
            .metadata()
            .get(EXTENSIONS_HEADER)
            .is_some_and(|v| v == "true");
        let req = request.into_inner();
        let filters = FlowFilterSet::compile(&req.whitelist, &req.blacklist)
            .and_then(|f| {
                flowscope_filter::refuse_unproduced(&req.whitelist, &req.blacklist).map(|()| f)
            })
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let records = record_selection(&req)?;
        // Hubble's one rule on the request itself (local_observer.go validateRequest).
        if req.first && req.follow {
            return Err(Status::invalid_argument(
                "first cannot be specified with follow",
            ));
        }
        let q = Query {
            filters,
            since: nanos(&req.since),
            until: nanos(&req.until),
            mask: FieldMask::new(
                req.field_mask
                    .as_ref()
                    .map(|m| m.paths.as_slice())
                    .unwrap_or_default(),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
            extensions,
            records,
        };
        // "Follow from now" means from the request, not from whenever the stream is first
        // polled: a client that sends traffic right after its call returned must see all of it.
        let now = self.state.history(records).bounds().1;
        let stream = FlowStream::<R>::new(self.state.clone(), &req, q, now);
        Ok(with_version(Box::pin(stream.into_stream()) as Stream_<R>))
    }

    /// GetFlows as the agent's own route serves it (see `encoded.rs`).
    pub(crate) fn get_flows_encoded(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Stream_<EncodedResponse>>, Status> {
        self.start_flows(request)
    }
}

#[tonic::async_trait]
impl Observer for ObserverService {
    type GetFlowsStream = Stream_<GetFlowsResponse>;
    type GetAgentEventsStream = Stream_<GetAgentEventsResponse>;
    type GetDebugEventsStream = Stream_<GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        self.start_flows(request)
    }

    async fn get_agent_events(
        &self,
        _request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        // flowscope has no policy engine or endpoint lifecycle to report yet: an empty stream,
        // like a Hubble agent with nothing to say.
        Ok(with_version(
            Box::pin(tokio_stream::empty()) as Self::GetAgentEventsStream
        ))
    }

    async fn get_debug_events(
        &self,
        _request: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Ok(with_version(
            Box::pin(tokio_stream::empty()) as Self::GetDebugEventsStream
        ))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let s = &self.state;
        let node = Node {
            name: s.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            address: s.addresses.first().cloned().unwrap_or_default(),
            state: NodeState::NodeConnected as i32,
            tls: Some(Tls {
                enabled: s.tls,
                server_name: String::new(),
            }),
            uptime_ns: s.started.elapsed().as_nanos() as u64,
            num_flows: s.store.len(),
            max_flows: s.store.capacity(),
            seen_flows: s.store.seen_flows(),
        };
        Ok(with_version(GetNodesResponse { nodes: vec![node] }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let namespaces = self
            .state
            .registry
            .namespaces()
            .into_iter()
            .map(|namespace| Namespace {
                cluster: String::new(),
                namespace,
            })
            .collect();
        Ok(with_version(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let s = &self.state;
        Ok(with_version(ServerStatusResponse {
            num_flows: s.store.len(),
            max_flows: s.store.capacity(),
            seen_flows: s.store.seen_flows(),
            uptime_ns: s.started.elapsed().as_nanos() as u64,
            version: format!("flowscope-agent {}", env!("CARGO_PKG_VERSION")),
            flows_rate: s.flows_rate(),
            ..ServerStatusResponse::default()
        }))
    }
}

/// Where a request starts reading the history (Hubble's `newRingReader`): `since` takes
/// precedence over `number`; `first` starts at the oldest entry, a follow without `number` or
/// `since` at `now` (the end of the history when the request came); otherwise the history is
/// rewound to the last `number` matching flows, or to the first one since `since`.
fn start_of(store: &FlowStore, req: &GetFlowsRequest, q: &Query, now: u64) -> u64 {
    if req.first && q.since.is_none() {
        store.bounds().0
    } else if req.follow && req.number == 0 && q.since.is_none() {
        now
    } else {
        store.rewind(req.number, q.since, |e| q.filtered_in(e))
    }
}

/// What the stream sends next, read from the history: Hubble's `eventsReader`.
#[derive(Debug)]
enum Next {
    /// A matching flow, or a loss notice stored in the history (these pass every filter and
    /// time bound, as in Hubble: nobody asks for them, and they tell what a range misses).
    Send(Entry),
    /// Entries this reader lost because the history overwrote them (HUBBLE_RING_BUFFER).
    Overwritten(u64),
    /// Nothing more for now (a follow waits for new entries).
    Idle,
    /// The request is answered.
    End,
}

/// Reads the history forward for one request.
struct HistoryReader {
    cursor: u64,
    /// Without follow: where the history ended when the request came; the answer ends there.
    end: Option<u64>,
    /// Without follow: at most this many flows (0: no limit). Loss notices are not counted.
    number: u64,
    sent: u64,
    pending: std::collections::VecDeque<Entry>,
}

impl HistoryReader {
    fn new(store: &FlowStore, req: &GetFlowsRequest, q: &Query, now: u64) -> Self {
        HistoryReader {
            cursor: start_of(store, req, q, now),
            end: (!req.follow).then_some(now),
            number: if req.follow { 0 } else { req.number },
            sent: 0,
            pending: std::collections::VecDeque::new(),
        }
    }

    fn next(&mut self, store: &FlowStore, q: &Query) -> Next {
        loop {
            if self.number > 0 && self.sent >= self.number {
                return Next::End;
            }
            let Some(e) = self.pending.pop_front() else {
                let max = match self.end {
                    Some(end) if self.cursor >= end => return Next::End,
                    Some(end) => (end - self.cursor).min(READ_BATCH as u64) as usize,
                    None => READ_BATCH,
                };
                let read = store.read_from(&mut self.cursor, max);
                self.pending.extend(read.entries);
                if read.lost > 0 {
                    return Next::Overwritten(read.lost);
                }
                if self.pending.is_empty() {
                    return if self.end.is_some() {
                        Next::End
                    } else {
                        Next::Idle
                    };
                }
                continue;
            };
            if e.is_flow() {
                if q.past_until(e.flow_time_nanos()) {
                    return Next::End;
                }
                if !q.keeps(&e) {
                    continue;
                }
                self.sent += 1;
            }
            return Next::Send(e);
        }
    }
}

/// The flows of one request: from where the history is rewound to, to its end (or, with
/// `follow`, on as new entries come). The server polls it for the next response as its send
/// buffer has room: each response is read and written when it is sent, with no task and no
/// channel of its own per follower (those were a tenth of the agent's CPU per event with one
/// follower). Dropped when the client goes away.
struct FlowStream<R> {
    state: Arc<AgentState>,
    q: Query,
    reader: HistoryReader,
    updates: tokio::sync::watch::Receiver<u64>,
    node: String,
    scratch: Vec<u8>,
    encoder: FlowEncoder,
    _reply: std::marker::PhantomData<fn() -> R>,
}

impl<R: Reply> FlowStream<R> {
    fn new(state: Arc<AgentState>, req: &GetFlowsRequest, q: Query, now: u64) -> Self {
        let store = state.history(q.records);
        FlowStream {
            updates: store.subscribe(),
            reader: HistoryReader::new(store, req, &q, now),
            node: state.node_name.clone(),
            state,
            q,
            scratch: Vec::new(),
            encoder: FlowEncoder::default(),
            _reply: std::marker::PhantomData,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<R, Status>> + Send + 'static {
        futures::stream::unfold(self, |mut s| async move {
            let resp = s.next_response().await?;
            Some((Ok(resp), s))
        })
    }

    /// The next response, waiting for new entries when a follow has read everything; `None`
    /// when the request is answered or the agent stops.
    async fn next_response(&mut self) -> Option<R> {
        let q = &self.q;
        loop {
            let store = self.state.history(q.records);
            return Some(match self.reader.next(store, q) {
                Next::End => return None,
                Next::Idle => {
                    tokio::select! {
                        changed = self.updates.changed() => if changed.is_err() { return None },
                        _ = self.state.shutdown.cancelled() => return None,
                        // Wake up now and then: a follow with `until` must end even if no flow
                        // comes.
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    if q.until.is_some_and(|u| Timestamp::now().as_nanos() > u) {
                        return None;
                    }
                    continue;
                }
                Next::Overwritten(n) => {
                    self.state
                        .pipeline
                        .history_lost
                        .fetch_add(n, Ordering::Relaxed);
                    R::other(lost_response(
                        &self.node,
                        LostEventSource::HubbleRingBuffer,
                        n,
                    ))
                }
                Next::Send(Entry::Record(r)) => {
                    R::record(q, &r, &mut self.encoder, &mut self.scratch)
                }
                Next::Send(Entry::Flow(f)) => R::flow(q, &f, &mut self.scratch),
                Next::Send(Entry::Lost(l)) => R::other(GetFlowsResponse {
                    node_name: self.node.clone(),
                    time: l.last,
                    response_types: Some(ResponseTypes::LostEvents(*l)),
                }),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::flow::FlowFilter;

    fn flow(n: u32, secs: i64) -> Entry {
        Entry::Flow(Arc::new(Flow {
            uuid: n.to_string(),
            time: Some(Timestamp::new(secs, 0)),
            ..Flow::default()
        }))
    }

    fn lost(n: u64) -> Entry {
        Entry::Lost(Arc::new(LostEvent {
            source: LostEventSource::PerfEventRingBuffer as i32,
            num_events_lost: n,
            ..LostEvent::default()
        }))
    }

    /// Flows 0..=6 at t = 0..=6 s, with kernel losses stored after flows 1 and 4.
    fn store() -> FlowStore {
        let s = FlowStore::new(64);
        s.push_batch([flow(0, 0), flow(1, 1), lost(10), flow(2, 2), flow(3, 3)]);
        s.push_batch([flow(4, 4), lost(20), flow(5, 5), flow(6, 6)]);
        s
    }

    fn query(req: &GetFlowsRequest) -> Query {
        Query {
            filters: FlowFilterSet::compile(&req.whitelist, &req.blacklist).unwrap(),
            since: nanos(&req.since),
            until: nanos(&req.until),
            mask: FieldMask::default(),
            extensions: false,
            records: RecordSelection::Packets,
        }
    }

    /// What a non-follow request answers, as flow numbers and `lost N`.
    fn answer(s: &FlowStore, req: GetFlowsRequest) -> Vec<String> {
        let q = query(&req);
        let mut r = HistoryReader::new(s, &req, &q, s.bounds().1);
        let mut out = Vec::new();
        for _ in 0..100 {
            match r.next(s, &q) {
                Next::Send(Entry::Flow(f)) => out.push(f.uuid.clone()),
                Next::Send(Entry::Record(r)) => out.push(r.uuid.to_string()),
                Next::Send(Entry::Lost(l)) => out.push(format!("lost {}", l.num_events_lost)),
                Next::Overwritten(n) => out.push(format!("overwritten {n}")),
                Next::Idle => panic!("a request without follow never waits"),
                Next::End => return out,
            }
        }
        panic!("no end: {out:?}")
    }

    fn only(uuids: &[&str]) -> Vec<FlowFilter> {
        vec![FlowFilter {
            uuid: uuids.iter().map(|u| u.to_string()).collect(),
            ..FlowFilter::default()
        }]
    }

    #[test]
    fn the_whole_history_carries_its_losses_in_order() {
        let s = store();
        assert_eq!(
            answer(&s, GetFlowsRequest::default()),
            ["0", "1", "lost 10", "2", "3", "4", "lost 20", "5", "6"]
        );
    }

    #[test]
    fn last_n_carries_the_losses_among_them_not_before() {
        let s = store();
        let req = GetFlowsRequest {
            number: 3,
            ..Default::default()
        };
        assert_eq!(answer(&s, req), ["4", "lost 20", "5", "6"]);
    }

    #[test]
    fn filters_do_not_apply_to_losses() {
        let s = store();
        let req = GetFlowsRequest {
            number: 2,
            whitelist: only(&["1", "5"]),
            ..Default::default()
        };
        assert_eq!(answer(&s, req), ["1", "lost 10", "lost 20", "5"]);
    }

    #[test]
    fn first_n_stops_after_the_nth_flow() {
        let s = store();
        let req = GetFlowsRequest {
            number: 2,
            first: true,
            ..Default::default()
        };
        assert_eq!(
            answer(&s, req),
            ["0", "1"],
            "the loss after the 2nd flow is not sent"
        );
        let req = GetFlowsRequest {
            number: 3,
            first: true,
            ..Default::default()
        };
        assert_eq!(answer(&s, req), ["0", "1", "lost 10", "2"]);
    }

    #[test]
    fn since_and_until_bound_the_range_and_its_losses() {
        let s = store();
        // Since t=2: from just after flow 1, so the loss stored after it comes along.
        let req = GetFlowsRequest {
            since: Some(Timestamp::new(2, 0)),
            until: Some(Timestamp::new(4, 0)),
            ..Default::default()
        };
        assert_eq!(answer(&s, req), ["lost 10", "2", "3", "4", "lost 20"]);
        // Since takes precedence over number: the first N since, as Hubble.
        let req = GetFlowsRequest {
            since: Some(Timestamp::new(3, 0)),
            number: 1,
            ..Default::default()
        };
        assert_eq!(answer(&s, req), ["3"]);
        // Until: the loss stored before the first flow past it comes along.
        let req = GetFlowsRequest {
            until: Some(Timestamp::new(1, 0)),
            ..Default::default()
        };
        assert_eq!(answer(&s, req), ["0", "1", "lost 10"]);
    }

    #[test]
    fn a_request_ends_where_the_history_ended_when_it_came() {
        let s = store();
        let req = GetFlowsRequest::default();
        let q = query(&req);
        let mut r = HistoryReader::new(&s, &req, &q, s.bounds().1);
        s.push_batch([flow(7, 7)]);
        let mut n = 0;
        while let Next::Send(_) = r.next(&s, &q) {
            n += 1;
        }
        assert_eq!(n, 9, "7 flows and 2 losses; flow 7 came after the request");
    }

    /// A record's filters are decided on its own fields only when they give the answer its
    /// built flow gets; and the filters those fields cover are always decided there (else the
    /// follower of one pod would build every flow again).
    #[test]
    fn deciding_on_records_answers_what_the_built_flows_answer() {
        use std::sync::Arc;

        use crate::decode::{
            nat::{Translation, Tuple},
            record::testing::random_records,
        };

        let filter = |edit: &dyn Fn(&mut FlowFilter)| {
            let mut f = FlowFilter::default();
            edit(&mut f);
            f
        };
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (whitelist, blacklist, decided on every record?)
        let sets: Vec<(Vec<FlowFilter>, Vec<FlowFilter>, bool)> = vec![
            // `--pod ns/p` (either side), `--namespace kube-system`.
            (
                vec![
                    filter(&|f| f.source_pod = strings(&["ns/p"])),
                    filter(&|f| f.destination_pod = strings(&["ns/p"])),
                ],
                vec![],
                true,
            ),
            (
                vec![
                    filter(&|f| f.source_pod = strings(&["kube-system/"])),
                    filter(&|f| f.destination_pod = strings(&["kube-system/"])),
                ],
                vec![],
                true,
            ),
            // Addresses and blocks, with the translated source.
            (
                vec![filter(&|f| {
                    f.source_ip = strings(&["0.0.0.0/1", "8000::/1"])
                })],
                vec![],
                true,
            ),
            (
                vec![filter(&|f| {
                    f.destination_ip = strings(&["10.244.0.213", "128.0.0.0/2"])
                })],
                vec![],
                true,
            ),
            (
                vec![filter(&|f| {
                    f.source_ip_xlated = strings(&["198.51.100.10"])
                })],
                vec![],
                true,
            ),
            // Ports, verdicts, identities, labels, and an AND of them.
            (
                vec![filter(&|f| f.destination_port = strings(&["53", "80"]))],
                vec![],
                true,
            ),
            (
                vec![filter(&|f| {
                    f.verdict = vec![flowscope_proto::flow::Verdict::Dropped as i32]
                })],
                vec![],
                true,
            ),
            (
                vec![filter(&|f| {
                    f.source_identity = vec![2];
                    f.destination_label = strings(&["app=web"]);
                    f.source_port = strings(&["53"]);
                })],
                vec![],
                true,
            ),
            // `--not --namespace kube-system`: a blacklist alone.
            (
                vec![],
                vec![
                    filter(&|f| f.source_pod = strings(&["kube-system/"])),
                    filter(&|f| f.destination_pod = strings(&["kube-system/"])),
                ],
                true,
            ),
            // Fields the record does not give: decided only where another field fails.
            (
                vec![filter(&|f| {
                    f.source_pod = strings(&["ns/p"]);
                    f.protocol = strings(&["udp"]);
                })],
                vec![],
                false,
            ),
            (
                vec![
                    filter(&|f| f.protocol = strings(&["tcp"])),
                    filter(&|f| f.destination_port = strings(&["53"])),
                ],
                vec![filter(&|f| f.source_label = strings(&["app=web"]))],
                false,
            ),
            (
                vec![filter(&|f| f.node_name = strings(&["node-*"]))],
                vec![filter(&|f| f.destination_ip = strings(&["0.0.0.0/0"]))],
                false,
            ),
        ];
        let compiled: Vec<(FlowFilterSet, bool)> = sets
            .iter()
            .map(|(w, b, always)| (FlowFilterSet::compile(w, b).unwrap(), *always))
            .collect();
        let tcp = |src: &str, sport, dst: &str, dport| Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: 6,
            sport,
            dport,
            icmp_id: 0,
            icmp_type: 0,
        };
        let masquerade = Arc::new(Translation {
            orig: tcp("10.244.0.213", 59_242, "1.0.0.1", 53),
            reply: tcp("1.0.0.1", 53, "198.51.100.10", 40_000),
            snat: true,
            dnat: false,
        });
        let (mut decided, mut matched) = (vec![0; sets.len()], vec![0; sets.len()]);
        for (i, mut r) in random_records(3_000).enumerate() {
            // Some well-known ports and some masqueraded hops among the random ones.
            if i % 4 == 0 {
                r.event.dst_port = [53, 80][i % 8 / 4];
            }
            if i % 5 == 0 {
                r.event.src_port = 53;
            }
            if i % 3 == 0 && r.event.src.is_some_and(|a| a.is_ipv4()) {
                r.event.src = Some(masquerade.reply.dst);
                r.xlat = Some(masquerade.clone());
            }
            let flow = r.to_flow();
            for (n, (set, always)) in compiled.iter().enumerate() {
                let full = set.matches(&flow);
                matched[n] += usize::from(full);
                match set.decide(&r) {
                    Some(d) => {
                        assert_eq!(d, full, "set {n} on {flow:?}");
                        decided[n] += 1;
                    }
                    None => assert!(!always, "set {n} undecided on {flow:?}"),
                }
            }
        }
        for n in 0..sets.len() {
            // Every set matched some records and not others: the cases were not trivial.
            assert!(
                matched[n] > 0 && matched[n] < 3_000,
                "set {n} matched {} of 3000",
                matched[n]
            );
            if !sets[n].2 {
                assert!(decided[n] > 0, "set {n}: never decided on the record");
                assert!(decided[n] < 3_000, "set {n}: always decided");
            }
        }
    }
}
