//! Hubble's `observer.Observer` service on the agent.

use std::{pin::Pin, sync::Arc, sync::atomic::Ordering, time::Duration};

use flowscope_filter::FlowFilterSet;
use flowscope_proto::{
    SERVER_VERSION_HEADER,
    flow::{Flow, LostEvent, LostEventSource},
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
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, metadata::MetadataValue};

use super::{AgentState, EXTENSIONS_HEADER, encoded::EncodedResponse, mask::FieldMask};
use crate::store::Entry;

pub(super) type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Entries read from the history per lock acquisition.
const READ_BATCH: usize = 512;
/// Responses buffered per client; a client slower than the history gets LostEvents instead.
const CLIENT_BUFFER: usize = 1024;

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
}

impl Query {
    fn time_ok(&self, f: &Flow) -> bool {
        let Some(t) = nanos(&f.time) else { return true };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    fn matches(&self, f: &Flow) -> bool {
        self.time_ok(f) && self.filters.matches(f)
    }

    fn past_until(&self, f: &Flow) -> bool {
        matches!((nanos(&f.time), self.until), (Some(t), Some(u)) if t > u)
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

/// What a GetFlows stream carries: the generated server's `GetFlowsResponse`s, or the
/// [`EncodedResponse`]s the agent's own route sends (see `encoded.rs`).
trait Reply: Send + 'static {
    fn flow(q: &Query, f: &Flow, scratch: &mut Vec<u8>) -> Self;
    fn other(r: GetFlowsResponse) -> Self;
}

impl Reply for GetFlowsResponse {
    fn flow(q: &Query, f: &Flow, _: &mut Vec<u8>) -> Self {
        q.response(f)
    }
    fn other(r: GetFlowsResponse) -> Self {
        r
    }
}

impl Reply for EncodedResponse {
    fn flow(q: &Query, f: &Flow, scratch: &mut Vec<u8>) -> Self {
        EncodedResponse::flow(f, &q.mask, q.extensions, scratch)
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
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
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
        };
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        let state = self.state.clone();
        // "Follow from now" means from the request, not from whenever the task first runs: a
        // client that sends traffic right after its call returned must see all of it.
        let now = state.store.bounds().1;
        tokio::spawn(async move {
            stream_flows(state, req, q, now, tx).await;
        });
        Ok(with_version(Box::pin(ReceiverStream::new(rx)) as Stream_<R>))
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

/// Sends the flows of one request: first from the history, then (with `follow`) new ones as
/// they come. Ends when the client goes away.
async fn stream_flows<R: Reply>(
    state: Arc<AgentState>,
    req: GetFlowsRequest,
    q: Query,
    now: u64,
    tx: mpsc::Sender<Result<R, Status>>,
) {
    let store = &state.store;
    let mut updates = store.subscribe();
    let number = req.number as usize;
    let node = state.node_name.clone();
    let send = |r: R| tx.send(Ok(r));
    let mut scratch = Vec::new();

    // 1. History.
    let mut cursor;
    if req.first {
        let (oldest, _) = store.bounds();
        cursor = oldest;
        let mut sent = 0usize;
        'history: loop {
            let read = store.read_from(&mut cursor, READ_BATCH);
            if read.entries.is_empty() {
                break;
            }
            for e in &read.entries {
                if let Entry::Flow(f) = e {
                    if q.past_until(f) {
                        return;
                    }
                    if q.matches(f) {
                        if send(R::flow(&q, f, &mut scratch)).await.is_err() {
                            return;
                        }
                        sent += 1;
                        if number > 0 && sent >= number {
                            break 'history;
                        }
                    }
                }
            }
        }
        if !req.follow {
            return;
        }
    } else if number > 0 || !req.follow || q.since.is_some() {
        let limit = if number > 0 { number } else { usize::MAX };
        let (entries, next) =
            store.last_matching(limit, |e| matches!(e, Entry::Flow(f) if q.matches(f)));
        for e in &entries {
            if let Entry::Flow(f) = e
                && send(R::flow(&q, f, &mut scratch)).await.is_err()
            {
                return;
            }
        }
        if !req.follow {
            return;
        }
        cursor = next;
    } else {
        cursor = now;
    }

    // 2. Follow.
    loop {
        let read = store.read_from(&mut cursor, READ_BATCH);
        if read.lost > 0 {
            state
                .pipeline
                .history_lost
                .fetch_add(read.lost, Ordering::Relaxed);
            if send(R::other(lost_response(
                &node,
                LostEventSource::HubbleRingBuffer,
                read.lost,
            )))
            .await
            .is_err()
            {
                return;
            }
        }
        if read.entries.is_empty() {
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
                _ = state.shutdown.cancelled() => return,
                // Wake up now and then: a follow with `until` must end even if no flow comes.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if q.until.is_some_and(|u| Timestamp::now().as_nanos() > u) {
                return;
            }
            continue;
        }
        for e in &read.entries {
            let resp = match e {
                Entry::Flow(f) => {
                    if q.past_until(f) {
                        return;
                    }
                    if !q.matches(f) {
                        continue;
                    }
                    R::flow(&q, f, &mut scratch)
                }
                Entry::Lost(l) => R::other(GetFlowsResponse {
                    node_name: node.clone(),
                    time: l.last,
                    response_types: Some(ResponseTypes::LostEvents(**l)),
                }),
            };
            if send(resp).await.is_err() {
                return;
            }
        }
    }
}
