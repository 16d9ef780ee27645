//! Synthetic agents for the relay benchmark: in-process tonic servers on 127.0.0.1 that speak
//! the Observer API and stream flows at a given rate.
//!
//! Each following `GetFlows` gets flows cloned from a realistic template (the flow the real
//! agent builds for pod-a's SYN to 1.0.0.1, about 0.5 KiB on the wire), each with its own
//! uuid, source port and `time` set when it is generated: receive time minus `time` at the
//! client is then the latency the relay adds (plus the generator's and the client's queues).
//! The schedule is absolute; a relay that cannot keep up back-pressures the generator, which
//! then forgets debts older than 100 ms (the achieved rate shows it).

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use flowscope_proto::{
    flow::{Flow, Layer4, layer4},
    observer::{
        GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
        GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
        GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Node, ServerStatusRequest,
        ServerStatusResponse,
        get_flows_response::ResponseTypes,
        observer_server::{Observer, ObserverServer},
    },
    relay::NodeState,
    wkt::Timestamp,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Responses buffered per stream before the generator waits for the relay.
const STREAM_BUFFER: usize = 1024;

#[derive(Clone)]
struct Synth {
    name: Arc<str>,
    /// Flows per second per following stream.
    rate: f64,
    template: Arc<Flow>,
    sent: Arc<AtomicU64>,
    started: Instant,
    cancel: CancellationToken,
}

impl Synth {
    fn flow(&self, n: u64) -> GetFlowsResponse {
        let mut f = (*self.template).clone();
        f.time = Some(Timestamp::now());
        f.node_name = self.name.to_string();
        f.uuid = format!("00000000-0000-4000-8000-{:012x}", n & 0xffff_ffff_ffff);
        if let Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(tcp)),
        }) = f.l4.as_mut()
        {
            tcp.source_port = 10_000 + (n % 50_000) as u32;
        }
        GetFlowsResponse {
            node_name: f.node_name.clone(),
            time: f.time,
            response_types: Some(ResponseTypes::Flow(f)),
        }
    }

    async fn generate(self, tx: mpsc::Sender<Result<GetFlowsResponse, Status>>) {
        let start = Instant::now();
        let mut produced = 0u64;
        let debt_max = (self.rate / 10.0) as u64;
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            let due = (start.elapsed().as_secs_f64() * self.rate) as u64;
            if due > produced + debt_max {
                produced = due - debt_max;
            }
            while produced < due {
                if tx.send(Ok(self.flow(produced))).await.is_err() {
                    return;
                }
                produced += 1;
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tonic::async_trait]
impl Observer for Synth {
    type GetFlowsStream = BoxStream<GetFlowsResponse>;
    type GetAgentEventsStream = BoxStream<GetAgentEventsResponse>;
    type GetDebugEventsStream = BoxStream<GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        if !request.get_ref().follow {
            // No history: the benchmark only follows.
            return Ok(Response::new(Box::pin(tokio_stream::empty())));
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(self.clone().generate(tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }

    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: self.name.to_string(),
                version: "synthetic".into(),
                state: NodeState::NodeConnected as i32,
                uptime_ns: self.started.elapsed().as_nanos() as u64,
                max_flows: 4095,
                seen_flows: self.sent.load(Ordering::Relaxed),
                ..Node::default()
            }],
        }))
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse::default()))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            max_flows: 4095,
            seen_flows: self.sent.load(Ordering::Relaxed),
            uptime_ns: self.started.elapsed().as_nanos() as u64,
            version: "flowscope-bench synthetic agent".into(),
            flows_rate: self.rate,
            ..ServerStatusResponse::default()
        }))
    }
}

/// One synthetic agent. Stops (streams end, server aborted) on drop.
pub struct SynthAgent {
    /// Its name (the node name of its flows).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    sent: Arc<AtomicU64>,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl SynthAgent {
    /// Starts an agent named `name` on 127.0.0.1 (a free port) that streams `rate` flows per
    /// second to each follower. Call from within the runtime.
    pub async fn start(name: &str, rate: f64, template: Arc<Flow>) -> anyhow::Result<SynthAgent> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sent = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let svc = Synth {
            name: name.into(),
            rate,
            template,
            sent: sent.clone(),
            started: Instant::now(),
            cancel: cancel.clone(),
        };
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ObserverServer::new(svc))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await;
        });
        Ok(SynthAgent {
            name: name.into(),
            addr,
            sent,
            cancel,
            server,
        })
    }

    /// Flows generated so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for SynthAgent {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.server.abort();
    }
}
