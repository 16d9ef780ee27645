//! Test bed for the relay: fake agents (real tonic Observer servers, each in
//! its own runtime so that "kill" really drops every socket), certificates,
//! clients and helpers. Every wait is bounded.

#![allow(dead_code, reason = "each test file uses part of the bed")]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowscope_proto::flow::{Endpoint, Flow, Ip, LostEvent, LostEventSource};
use flowscope_proto::observer::get_flows_response::ResponseTypes;
use flowscope_proto::observer::observer_client::ObserverClient;
use flowscope_proto::observer::observer_server::{Observer, ObserverServer};
use flowscope_proto::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse,
};
use flowscope_proto::relay::{NodeState, NodeStatusEvent};
use flowscope_proto::wkt::Timestamp;
use flowscope_relay::connector::{TlsDial, lazy_channel};
use flowscope_relay::tls::Reloading;
use flowscope_relay::{
    ClientTlsFiles, PeerTarget, RelayConfig, Resolver, RunningRelay, ServerTlsFiles,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// Upper bound of any single wait in the tests.
pub const LONG: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------
// Fake agent
// ---------------------------------------------------------------------------

/// How a fake agent behaves.
#[derive(Clone, Debug)]
pub struct AgentOpts {
    /// Flows in the history at first start, 10 ms apart, ending now.
    pub history: usize,
    /// Added to every history flow's time (interleaves agents' histories).
    pub history_offset: Duration,
    /// A new flow every `interval` (time = now); none when `None`.
    pub interval: Option<Duration>,
    /// Bytes of padding per flow (in `source_names`).
    pub payload: usize,
    /// TLS (and mTLS) on the agent's listener.
    pub tls: Option<ServerTlsFiles>,
    /// Listen on a unix socket instead of TCP.
    pub unix: Option<PathBuf>,
}

impl Default for AgentOpts {
    fn default() -> Self {
        Self {
            history: 0,
            history_offset: Duration::ZERO,
            interval: None,
            payload: 0,
            tls: None,
            unix: None,
        }
    }
}

/// What the agent was asked.
#[derive(Default)]
pub struct Calls {
    pub get_flows: AtomicUsize,
    pub last_request: Mutex<Option<GetFlowsRequest>>,
}

struct Store {
    flows: VecDeque<GetFlowsResponse>,
    seq: u64,
    seen: u64,
}

const AGENT_CAPACITY: usize = 100_000;

#[derive(Clone)]
struct AgentService {
    name: String,
    incarnation: u64,
    store: Arc<Mutex<Store>>,
    live: broadcast::Sender<GetFlowsResponse>,
    calls: Arc<Calls>,
    started: Instant,
    payload: usize,
}

/// A flow as our fake agents make them: uuid `name/incarnation/seq`.
fn make_flow(
    name: &str,
    incarnation: u64,
    seq: u64,
    time: Timestamp,
    payload: usize,
) -> GetFlowsResponse {
    let flow = Flow {
        time: Some(time),
        uuid: format!("{name}/{incarnation}/{seq}"),
        node_name: name.to_string(),
        verdict: 1,
        ip: Some(Ip {
            source: "10.244.0.213".into(),
            destination: "1.0.0.1".into(),
            ip_version: 1,
            ..Default::default()
        }),
        source: Some(Endpoint {
            namespace: "default".into(),
            pod_name: format!("pod-{name}"),
            ..Default::default()
        }),
        source_names: if payload > 0 {
            vec!["x".repeat(payload)]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    GetFlowsResponse {
        node_name: name.to_string(),
        time: Some(time),
        response_types: Some(ResponseTypes::Flow(flow)),
    }
}

impl AgentService {
    fn push(&self, time: Timestamp) {
        let mut store = self.store.lock().unwrap();
        let seq = store.seq;
        store.seq += 1;
        store.seen += 1;
        let resp = make_flow(&self.name, self.incarnation, seq, time, self.payload);
        if store.flows.len() == AGENT_CAPACITY {
            store.flows.pop_front();
        }
        store.flows.push_back(resp.clone());
        // Sent under the lock: a subscriber that took its snapshot under
        // the lock sees each flow exactly once.
        let _ = self.live.send(resp);
    }
}

fn in_range(resp: &GetFlowsResponse, since: Option<Timestamp>, until: Option<Timestamp>) -> bool {
    let t = resp.time.unwrap_or_default();
    since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
}

#[tonic::async_trait]
impl Observer for AgentService {
    type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        self.calls.get_flows.fetch_add(1, Ordering::SeqCst);
        *self.calls.last_request.lock().unwrap() = Some(req.clone());
        let (since, until) = (req.since, req.until);
        let (history, mut live) = {
            let store = self.store.lock().unwrap();
            let live = self.live.subscribe();
            let matching: Vec<_> = store
                .flows
                .iter()
                .filter(|r| in_range(r, since, until))
                .cloned()
                .collect();
            (matching, live)
        };
        let number = req.number as usize;
        let history: Vec<_> = if req.first {
            history
                .into_iter()
                .take(if number > 0 { number } else { usize::MAX })
                .collect()
        } else if number > 0 {
            let skip = history.len().saturating_sub(number);
            history.into_iter().skip(skip).collect()
        } else if req.follow && since.is_none() {
            Vec::new()
        } else {
            history
        };
        let (tx, rx) = mpsc::channel(256);
        let follow = req.follow;
        let name = self.name.clone();
        tokio::spawn(async move {
            for resp in history {
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                let until_left = until.map(|u| {
                    let now = Timestamp::now();
                    Duration::from_nanos(u64::try_from(u.as_nanos() - now.as_nanos()).unwrap_or(0))
                });
                let next = tokio::select! {
                    next = live.recv() => next,
                    _ = tokio::time::sleep(until_left.unwrap_or(Duration::from_secs(3600))), if until_left.is_some() => return,
                };
                let resp = match next {
                    Ok(resp) => resp,
                    Err(broadcast::error::RecvError::Lagged(n)) => GetFlowsResponse {
                        node_name: name.clone(),
                        time: Some(Timestamp::now()),
                        response_types: Some(ResponseTypes::LostEvents(LostEvent {
                            source: LostEventSource::HubbleRingBuffer as i32,
                            num_events_lost: n,
                            ..Default::default()
                        })),
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !in_range(&resp, since, None) {
                    continue;
                }
                if until.is_some_and(|u| resp.time.unwrap_or_default() > u) {
                    return;
                }
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type GetAgentEventsStream = ReceiverStream<Result<GetAgentEventsResponse, Status>>;
    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented("no"))
    }

    type GetDebugEventsStream = ReceiverStream<Result<GetDebugEventsResponse, Status>>;
    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("no"))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: self.name.clone(),
                version: "fake-agent".into(),
                state: NodeState::NodeConnected as i32,
                ..Default::default()
            }],
        }))
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse {
            namespaces: vec![
                Namespace {
                    cluster: String::new(),
                    namespace: "default".into(),
                },
                Namespace {
                    cluster: String::new(),
                    namespace: format!("ns-{}", self.name),
                },
            ],
        }))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let store = self.store.lock().unwrap();
        Ok(Response::new(ServerStatusResponse {
            num_flows: store.flows.len() as u64,
            max_flows: AGENT_CAPACITY as u64,
            seen_flows: store.seen,
            uptime_ns: self.started.elapsed().as_nanos() as u64 + 1,
            version: "fake-agent".into(),
            flows_rate: 1.5,
            ..Default::default()
        }))
    }
}

struct RunningAgent {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// A fake agent that can be killed and restarted on the same address.
pub struct FakeAgent {
    pub name: String,
    pub opts: AgentOpts,
    addr: SocketAddr,
    incarnation: u64,
    running: Option<RunningAgent>,
    pub calls: Arc<Calls>,
    /// Number of flows the current incarnation has produced so far.
    produced: Arc<AtomicU64>,
}

impl FakeAgent {
    /// Starts an agent on 127.0.0.1 (a free port) or its unix socket.
    pub fn start(name: &str, opts: AgentOpts) -> Self {
        let mut agent = Self {
            name: name.to_string(),
            opts,
            addr: "127.0.0.1:0".parse().unwrap(),
            incarnation: 0,
            running: None,
            calls: Arc::new(Calls::default()),
            produced: Arc::new(AtomicU64::new(0)),
        };
        agent.launch();
        agent
    }

    /// `host:port` or `unix:///path`, as the relay's `--peers` wants it.
    pub fn peer(&self) -> String {
        match &self.opts.unix {
            Some(path) => format!("unix://{}", path.display()),
            None => self.addr.to_string(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn launch(&mut self) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let first = self.incarnation == 0;
        self.incarnation += 1;
        let service = AgentService {
            name: self.name.clone(),
            incarnation: self.incarnation,
            store: Arc::new(Mutex::new(Store {
                flows: VecDeque::new(),
                seq: 0,
                seen: 0,
            })),
            live: broadcast::channel(4096).0,
            calls: self.calls.clone(),
            started: Instant::now(),
            payload: self.opts.payload,
        };
        // History (first start only: a restarted agent starts empty).
        if first && self.opts.history > 0 {
            let n = self.opts.history as i64;
            let base = Timestamp::now().as_nanos() - n * 10_000_000;
            for k in 0..n {
                let t = base + k * 10_000_000 + self.opts.history_offset.as_nanos() as i64;
                service.push(Timestamp::from_nanos(t));
            }
        }
        let opts = self.opts.clone();
        let addr = self.addr;
        let produced = self.produced.clone();
        produced.store(0, Ordering::SeqCst);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let token = CancellationToken::new();
                let server = tonic::transport::Server::builder()
                    .add_service(ObserverServer::new(service.clone()));
                if let Some(path) = &opts.unix {
                    let _ = std::fs::remove_file(path);
                    let listener = tokio::net::UnixListener::bind(path).unwrap();
                    ready_tx.send(addr).unwrap();
                    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                    tokio::spawn(server.serve_with_incoming(incoming));
                } else {
                    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                    ready_tx.send(listener.local_addr().unwrap()).unwrap();
                    let tls = opts.tls.as_ref().map(|files| {
                        Arc::new(Reloading::fixed(
                            flowscope_relay::tls::server_config(files).unwrap(),
                        ))
                    });
                    let incoming = flowscope_relay::tls::incoming(listener, tls, token.clone());
                    tokio::spawn(server.serve_with_incoming(incoming));
                }
                if let Some(interval) = opts.interval {
                    let service = service.clone();
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(interval);
                        loop {
                            tick.tick().await;
                            service.push(Timestamp::now());
                            produced.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
                let _ = stop_rx.await;
                token.cancel();
            });
            // Dropping the runtime cancels every task: the listener and all
            // connections close at once, like a killed process.
            rt.shutdown_timeout(Duration::from_millis(200));
        });
        self.addr = ready_rx.recv_timeout(LONG).expect("agent started");
        self.running = Some(RunningAgent {
            stop: stop_tx,
            thread,
        });
    }

    /// Kills the agent: listener and every connection close at once.
    pub fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            running.thread.join().unwrap();
        }
    }

    /// Starts a new incarnation on the same address.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + LONG;
        loop {
            // The port may linger briefly; SO_REUSEADDR (tokio's default) covers TIME_WAIT.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.launch()));
            match result {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }

    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::SeqCst)
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Relay, clients
// ---------------------------------------------------------------------------

/// A relay in this process; stopped when dropped.
pub struct TestRelay {
    pub relay: Option<RunningRelay>,
    pub shutdown: CancellationToken,
    pub addr: SocketAddr,
}

impl TestRelay {
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(relay) = self.relay.take() {
            tokio::time::timeout(LONG, relay.wait())
                .await
                .expect("relay stops in time")
                .expect("relay stops cleanly");
        }
    }

    pub fn running(&self) -> &RunningRelay {
        self.relay.as_ref().unwrap()
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Test defaults: loopback, short intervals.
pub fn test_config(peers: &[String]) -> RelayConfig {
    RelayConfig {
        listen_address: "127.0.0.1:0".parse().unwrap(),
        peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
        peer_check_interval: Duration::from_millis(500),
        dial_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        backoff: flowscope_relay::Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(800),
        },
        status_aggregation_window: Duration::from_millis(300),
        sort_buffer_drain_timeout: Duration::from_millis(300),
        tls_reload_interval: Duration::from_millis(200),
        name: "test-relay".into(),
        ..RelayConfig::default()
    }
}

pub async fn start_relay(config: RelayConfig) -> TestRelay {
    let shutdown = CancellationToken::new();
    let relay = flowscope_relay::start(config, shutdown.clone())
        .await
        .expect("relay starts");
    let addr = relay.local_addr();
    TestRelay {
        relay: Some(relay),
        shutdown,
        addr,
    }
}

/// A plain-text client.
pub async fn client(addr: SocketAddr) -> ObserverClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect to relay");
    ObserverClient::new(channel).max_decoding_message_size(64 << 20)
}

/// A TLS client (lazy: errors show on the first call).
pub fn tls_client(addr: SocketAddr, files: &ClientTlsFiles) -> ObserverClient<Channel> {
    let config = flowscope_relay::tls::client_config(files).expect("client TLS config");
    let tls = TlsDial {
        config: Arc::new(Reloading::fixed(config)),
        server_name: flowscope_relay::tls::server_name("localhost").unwrap(),
    };
    let target = PeerTarget::Tcp {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    ObserverClient::new(lazy_channel(&target, Some(tls), Duration::from_secs(2)))
}

/// Waits until the relay sees `n` connected agents.
pub async fn wait_connected(relay: &TestRelay, n: usize) {
    let pool = relay.running().pool().clone();
    tokio::time::timeout(LONG, async {
        loop {
            let connected = pool
                .peers()
                .iter()
                .filter(|p| p.status().state == flowscope_relay::pool::PeerState::Connected)
                .count();
            if connected >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} agents connected in time: {:?}", pool));
}

/// One message of a GetFlows stream, classified.
#[derive(Debug, Clone)]
pub enum Msg {
    Flow {
        node: String,
        uuid: String,
        time: i64,
    },
    Status {
        state: NodeState,
        names: Vec<String>,
        message: String,
    },
    Lost {
        node: String,
        count: u64,
    },
}

pub fn classify(resp: GetFlowsResponse) -> Msg {
    match resp.response_types {
        Some(ResponseTypes::Flow(flow)) => Msg::Flow {
            node: resp.node_name,
            uuid: flow.uuid,
            time: resp.time.unwrap().as_nanos(),
        },
        Some(ResponseTypes::NodeStatus(NodeStatusEvent {
            state_change,
            node_names,
            message,
        })) => Msg::Status {
            state: NodeState::try_from(state_change).unwrap(),
            names: node_names,
            message,
        },
        Some(ResponseTypes::LostEvents(lost)) => Msg::Lost {
            node: resp.node_name,
            count: lost.num_events_lost,
        },
        None => panic!("empty response"),
    }
}

/// Reads a whole (non-follow) stream.
pub async fn read_all(stream: &mut Streaming<GetFlowsResponse>) -> Vec<Msg> {
    let mut out = Vec::new();
    tokio::time::timeout(LONG, async {
        while let Some(resp) = stream.message().await.expect("stream ok") {
            out.push(classify(resp));
        }
    })
    .await
    .expect("stream ends in time");
    out
}

/// Reads messages into `seen` until `done(seen)` holds; panics after `limit`.
pub async fn read_until(
    stream: &mut Streaming<GetFlowsResponse>,
    seen: &mut Vec<Msg>,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&[Msg]) -> bool,
) {
    let start = seen.len();
    let result = tokio::time::timeout(limit, async {
        while !done(&seen[start..]) {
            match stream.message().await {
                Ok(Some(resp)) => seen.push(classify(resp)),
                Ok(None) => panic!("stream ended while waiting for {what}"),
                Err(status) => panic!("stream failed while waiting for {what}: {status}"),
            }
        }
    })
    .await;
    if result.is_err() {
        let tail: Vec<_> = seen[start..]
            .iter()
            .filter(|m| !matches!(m, Msg::Flow { .. }))
            .collect();
        panic!(
            "no {what} within {limit:?}; {} messages, non-flows: {tail:?}",
            seen.len() - start
        );
    }
}

pub fn flows_of<'a>(msgs: &'a [Msg], node: &'a str) -> impl Iterator<Item = &'a Msg> + 'a {
    msgs.iter()
        .filter(move |m| matches!(m, Msg::Flow { node: n, .. } if n == node))
}

pub fn has_status(msgs: &[Msg], state: NodeState, name: &str) -> bool {
    msgs.iter().any(|m| {
        matches!(m, Msg::Status { state: s, names, .. } if *s == state && names.iter().any(|n| n == name))
    })
}

/// Flow times of `msgs` in stream order.
pub fn flow_times(msgs: &[Msg]) -> Vec<i64> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Flow { time, .. } => Some(*time),
            _ => None,
        })
        .collect()
}

/// Per node, the sequence numbers of its flows (uuid `name/incarnation/seq`).
pub fn sequences(msgs: &[Msg]) -> BTreeMap<(String, u64), Vec<u64>> {
    let mut out: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
    for m in msgs {
        if let Msg::Flow { uuid, .. } = m {
            let mut parts = uuid.split('/');
            let name = parts.next().unwrap().to_string();
            let inc = parts.next().unwrap().parse().unwrap();
            let seq = parts.next().unwrap().parse().unwrap();
            out.entry((name, inc)).or_default().push(seq);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// DNS
// ---------------------------------------------------------------------------

/// A resolver whose answers the test sets.
#[derive(Default)]
pub struct FakeResolver {
    pub answers: Mutex<Vec<SocketAddr>>,
}

impl Resolver for FakeResolver {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        _port: u16,
    ) -> flowscope_relay::discovery::ResolveFuture<'a> {
        let answers = self.answers.lock().unwrap().clone();
        Box::pin(async move { Ok(answers) })
    }
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A CA that signs server and client certificates (rcgen).
pub struct Ca {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `names`, for a server or a client.
    pub fn leaf(&self, names: &[&str], client: bool) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a leaf to `dir/<stem>.pem` and `dir/<stem>-key.pem`.
    pub fn write_leaf(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        client: bool,
    ) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf(names, client);
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}-key.pem"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }

    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let path = dir.join(format!("{stem}.pem"));
        std::fs::write(&path, &self.cert_pem).unwrap();
        path
    }
}
