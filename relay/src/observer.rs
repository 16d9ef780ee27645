//! The relay's Observer service: the same API as an agent, for the whole
//! cluster.
//!
//! The relay's server answers GetFlows with `RelayObserver::relayed_flows`
//! (flows forwarded encoded, see [`crate::wire`]); the `Observer` trait's
//! `get_flows` serves the same stream decoded, for embedders that mount the
//! generated server themselves.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowscope_proto::observer::observer_server::{Observer, ObserverServer};
use flowscope_proto::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse,
    Tls,
};
use flowscope_proto::relay::NodeState;
use flowscope_proto::route::StreamingRoute;
use futures::future::join_all;
use futures::{Stream, StreamExt as _};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::error::ObserverError;
use crate::flows::{FlowStream, FlowsSettings, get_flows};
use crate::metrics::Metrics;
use crate::peer::{MAX_MESSAGE, PeerState, describe};
use crate::pool::{Peer, PeerPool};
use crate::wire::{GET_FLOWS_PATH, RelayedResponse};

/// Hubble reports at most this many unavailable nodes in ServerStatus.
pub const MAX_UNAVAILABLE_REPORTED: usize = 10;

/// The relay's version, in ServerStatus and the `hubble-relay-version` header.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Implements `observer.Observer` over the agents of a [`PeerPool`].
pub struct RelayObserver {
    pool: PeerPool,
    flows: Arc<FlowsSettings>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    request_timeout: Duration,
    started: Instant,
}

impl RelayObserver {
    pub(crate) fn new(
        pool: PeerPool,
        flows: Arc<FlowsSettings>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        request_timeout: Duration,
    ) -> Self {
        Self {
            pool,
            flows,
            metrics,
            shutdown,
            request_timeout,
            started: Instant::now(),
        }
    }

    /// GetFlows across the cluster, flows left encoded: what the relay's
    /// server answers (through [`crate::wire`]'s codec).
    pub(crate) fn relayed_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        if self.shutdown.is_cancelled() {
            return Err(ObserverError::ShuttingDown.into());
        }
        // Our own clients ask for `Flow.extensions` with a header; pass that one (and only
        // that one: client headers are not the agents' business) on to every agent.
        let extensions = request
            .metadata()
            .get(crate::flows::EXTENSIONS_HEADER)
            .is_some_and(|v| v == "true");
        let stream = get_flows(
            self.pool.clone(),
            self.flows.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
            request.into_inner(),
            extensions,
        )?;
        Ok(Response::new(stream))
    }

    /// ServerStatus of one connected agent, `None` if it is not connected
    /// or does not answer in time.
    async fn agent_status(&self, peer: &Peer) -> Result<ServerStatusResponse, String> {
        if peer.status().state != PeerState::Connected {
            return Err(peer
                .status()
                .last_error
                .unwrap_or_else(|| "not connected".to_string()));
        }
        let mut client = peer.client();
        match tokio::time::timeout(
            self.request_timeout,
            client.server_status(ServerStatusRequest {}),
        )
        .await
        {
            Ok(Ok(response)) => {
                let info = response.into_inner();
                peer.record_info(info.clone());
                Ok(info)
            }
            Ok(Err(status)) => Err(describe(&status)),
            Err(_) => Err("ServerStatus timed out".to_string()),
        }
    }
}

fn node_state(state: PeerState) -> NodeState {
    match state {
        PeerState::Connected => NodeState::NodeConnected,
        PeerState::Connecting | PeerState::Unavailable => NodeState::NodeUnavailable,
        PeerState::Error => NodeState::NodeError,
    }
}

#[tonic::async_trait]
impl Observer for RelayObserver {
    type GetFlowsStream =
        Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send + 'static>>;

    /// The relay's server does not route GetFlows here (it serves
    /// `RelayObserver::relayed_flows` as is): this decodes every flow, for
    /// users of the generated `ObserverServer`.
    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let stream = self.relayed_flows(request)?.into_inner();
        let decoded = stream.map(|item| {
            item.and_then(|resp: RelayedResponse| {
                resp.to_response()
                    .map_err(|e| Status::internal(format!("an agent sent a bad flow: {e}")))
            })
        });
        Ok(Response::new(Box::pin(decoded)))
    }

    type GetAgentEventsStream = ReceiverStream<Result<GetAgentEventsResponse, Status>>;

    async fn get_agent_events(
        &self,
        _request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(ObserverError::Unimplemented("GetAgentEvents").into())
    }

    type GetDebugEventsStream = ReceiverStream<Result<GetDebugEventsResponse, Status>>;

    async fn get_debug_events(
        &self,
        _request: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(ObserverError::Unimplemented("GetDebugEvents").into())
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let peers = self.pool.peers();
        let nodes = join_all(peers.iter().map(|peer| async move {
            let before = peer.status();
            let mut node = Node {
                name: before.name.clone(),
                address: peer.address().to_string(),
                state: node_state(before.state) as i32,
                tls: Some(Tls {
                    enabled: peer.tls_server_name().is_some(),
                    server_name: peer.tls_server_name().unwrap_or_default().to_string(),
                }),
                ..Default::default()
            };
            let info = match self.agent_status(peer).await {
                Ok(info) => Some(info),
                Err(error) => {
                    if before.state == PeerState::Connected {
                        // Connected a moment ago, failing now.
                        debug!(peer = %peer.address(), %error, "ServerStatus failed");
                        node.state = NodeState::NodeError as i32;
                    }
                    before.info
                }
            };
            if let Some(info) = info {
                node.version = info.version;
                node.uptime_ns = info.uptime_ns;
                node.num_flows = info.num_flows;
                node.max_flows = info.max_flows;
                node.seen_flows = info.seen_flows;
            }
            // The name may have been learned meanwhile.
            node.name = peer.name();
            node
        }))
        .await;
        let mut nodes = nodes;
        nodes.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.address.cmp(&b.address)));
        Ok(Response::new(GetNodesResponse { nodes }))
    }

    async fn get_namespaces(
        &self,
        request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let request = request.into_inner();
        let peers = self.pool.peers();
        let answers = join_all(
            peers
                .iter()
                .filter(|p| p.status().state == PeerState::Connected)
                .map(|peer| {
                    async move {
                        let mut client = peer.client();
                        match tokio::time::timeout(self.request_timeout, client.get_namespaces(request))
                            .await
                        {
                            Ok(Ok(response)) => response.into_inner().namespaces,
                            Ok(Err(status)) => {
                                debug!(peer = %peer.address(), error = %describe(&status), "GetNamespaces failed");
                                Vec::new()
                            }
                            Err(_) => Vec::new(),
                        }
                    }
                }),
        )
        .await;
        let unique: BTreeSet<(String, String)> = answers
            .into_iter()
            .flatten()
            .map(|ns| (ns.cluster, ns.namespace))
            .collect();
        let namespaces = unique
            .into_iter()
            .map(|(cluster, namespace)| Namespace { cluster, namespace })
            .collect();
        Ok(Response::new(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let peers = self.pool.peers();
        let answers = join_all(peers.iter().map(|peer| self.agent_status(peer))).await;
        let mut response = ServerStatusResponse {
            version: VERSION.to_string(),
            ..Default::default()
        };
        let mut connected = 0u32;
        let mut unavailable = Vec::new();
        for (peer, answer) in peers.iter().zip(answers) {
            match answer {
                Ok(status) => {
                    connected += 1;
                    response.num_flows += status.num_flows;
                    response.max_flows += status.max_flows;
                    response.seen_flows += status.seen_flows;
                    response.flows_rate += status.flows_rate;
                    // Summing uptimes makes no sense: the oldest agent's, as Hubble.
                    response.uptime_ns = response.uptime_ns.max(status.uptime_ns);
                }
                Err(_) => unavailable.push(peer.name()),
            }
        }
        if peers.is_empty() {
            response.uptime_ns =
                u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        }
        let unavailable_count = u32::try_from(unavailable.len()).unwrap_or(u32::MAX);
        unavailable.sort();
        unavailable.truncate(MAX_UNAVAILABLE_REPORTED);
        response.num_connected_nodes = Some(connected);
        response.num_unavailable_nodes = Some(unavailable_count);
        response.unavailable_nodes = unavailable;
        Ok(Response::new(response))
    }
}

/// The relay's `observer.Observer` service: GetFlows answered with
/// [`RelayedResponse`]s (flows forwarded encoded), every other method by the
/// generated [`ObserverServer`] over the same [`RelayObserver`]. The
/// generated server cannot serve GetFlows this way: its `Observer` trait
/// fixes the stream's item type to `GetFlowsResponse`.
pub(crate) type ObserverService =
    StreamingRoute<ObserverServer<RelayObserver>, GetFlowsRequest, RelayedResponse, FlowStream>;

/// The relay's Observer service over `observer`.
pub(crate) fn observer_service(observer: RelayObserver) -> ObserverService {
    let observer = Arc::new(observer);
    let generated = ObserverServer::from_arc(observer.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    StreamingRoute::new(
        GET_FLOWS_PATH,
        generated,
        Arc::new(move |request| observer.relayed_flows(request)),
    )
    .max_message_size(MAX_MESSAGE)
}
