//! An in-process Observer server with canned answers, and a bounded way to
//! run the real `flowctl` binary against it.

#![allow(dead_code, reason = "each test file uses part of the support module")]

use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowscope_proto::flow::{CiliumEventType, Endpoint, Flow, Ip, Layer4, TcpFlags, Verdict};
use flowscope_proto::flowscope::v1::FlowExtension;
use flowscope_proto::observer::get_flows_response::ResponseTypes;
use flowscope_proto::observer::observer_server::{Observer, ObserverServer};
use flowscope_proto::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse,
};
use flowscope_proto::peer::peer_server::{Peer, PeerServer};
use flowscope_proto::peer::{ChangeNotification, NotifyRequest};
use flowscope_proto::wkt::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// 2025-11-26T11:00:00Z.
pub const T0: i64 = 1_764_154_800;

/// A flow from pod-a (10.244.0.213) port `sport` to 1.0.0.1:80, `i` ms after T0.
#[expect(deprecated, reason = "Summary is Hubble's and servers fill it")]
pub fn flow(i: u32, sport: u16) -> GetFlowsResponse {
    let time = Some(Timestamp::new(
        T0 + i64::from(i / 1000),
        ((i % 1000) * 1_000_000) as i32,
    ));
    let flow = Flow {
        time,
        verdict: Verdict::Forwarded as i32,
        ip: Some(Ip {
            source: "10.244.0.213".into(),
            destination: "1.0.0.1".into(),
            ip_version: 1,
            ..Default::default()
        }),
        l4: Some(Layer4::tcp(sport, 80, TcpFlags::from_header(0x02, false))),
        source: Some(Endpoint {
            id: 762,
            identity: 42837,
            namespace: "default".into(),
            pod_name: "pod-a".into(),
            ..Default::default()
        }),
        destination: Some(Endpoint {
            identity: 2,
            ..Default::default()
        }),
        r#type: 1,
        node_name: "node-1".into(),
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 5,
        }),
        trace_observation_point: 5,
        trace_reason: 1,
        is_reply: Some(false),
        summary: "TCP Flags: SYN".into(),
        ..Default::default()
    };
    GetFlowsResponse {
        node_name: flow.node_name.clone(),
        time,
        response_types: Some(ResponseTypes::Flow(flow)),
    }
}

/// A kernel drop of pod-a's packet to 1.0.0.1:80, `i` ms after T0, carrying flowscope's
/// FlowExtension (skb hash, kernel drop reason) in `Flow.extensions`, as the agent sends it to
/// clients that ask for extensions.
pub fn dropped_with_extension(i: u32, sport: u16) -> GetFlowsResponse {
    let mut res = flow(i, sport);
    if let Some(ResponseTypes::Flow(f)) = &mut res.response_types {
        f.verdict = Verdict::Dropped as i32;
        f.event_type = Some(CiliumEventType {
            r#type: 1,
            sub_type: 0,
        });
        f.extensions = Some(flowscope_proto::wkt::Any::from_msg(&FlowExtension {
            skb_hash: 0x1c2a_7f4c,
            kernel_drop_reason: 6,
            kernel_drop_reason_name: "NETFILTER_DROP".into(),
            ..Default::default()
        }));
    }
    res
}

/// GetFlows requests a server received, each with its `flowscope-extensions`
/// header.
pub type Received = Arc<Mutex<Vec<(GetFlowsRequest, Option<String>)>>>;

/// What the server answers.
#[derive(Clone, Default)]
pub struct Canned {
    /// The flow history, oldest first.
    pub history: Vec<GetFlowsResponse>,
    /// Flows sent to followers, each after its delay from the previous one.
    pub late: Vec<(Duration, GetFlowsResponse)>,
    /// ServerStatus's answer.
    pub status: ServerStatusResponse,
    /// GetNodes's answer.
    pub nodes: Vec<Node>,
    /// GetFlows requests received, with the value of the extensions header.
    pub requests: Received,
    /// GetNamespaces's answer.
    pub namespaces: Vec<Namespace>,
    /// What Peer/Notify sends, each after its delay from the previous one; `None`: the server
    /// has no Peer service (Unimplemented, as the relay).
    pub peers: Option<Vec<(Duration, ChangeNotification)>>,
    /// Whether Notify keeps its stream open after the last notification (until the client
    /// goes, at most 30 s), as an agent does, rather than ending it.
    pub peers_hold: bool,
}

type PeerStream = Pin<Box<dyn Stream<Item = Result<ChangeNotification, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for Canned {
    type NotifyStream = PeerStream;

    async fn notify(&self, _: Request<NotifyRequest>) -> Result<Response<PeerStream>, Status> {
        let Some(peers) = self.peers.clone() else {
            return Err(Status::unimplemented("unknown service peer.Peer"));
        };
        let hold = self.peers_hold;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            for (delay, n) in peers {
                tokio::time::sleep(delay).await;
                if tx.send(Ok(n)).await.is_err() {
                    return;
                }
            }
            if hold {
                let _ = tokio::time::timeout(Duration::from_secs(30), tx.closed()).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

type FlowStream = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Observer for Canned {
    type GetFlowsStream = FlowStream;
    type GetAgentEventsStream =
        Pin<Box<dyn Stream<Item = Result<GetAgentEventsResponse, Status>> + Send>>;
    type GetDebugEventsStream =
        Pin<Box<dyn Stream<Item = Result<GetDebugEventsResponse, Status>> + Send>>;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        let header = request
            .metadata()
            .get("flowscope-extensions")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let req = request.into_inner();
        self.requests.lock().unwrap().push((req.clone(), header));
        let n = usize::try_from(req.number).unwrap_or(usize::MAX);
        let history: Vec<GetFlowsResponse> = if req.number == 0 {
            if req.follow {
                Vec::new()
            } else {
                self.history.clone()
            }
        } else if req.first {
            self.history.iter().take(n).cloned().collect()
        } else {
            let skip = self.history.len().saturating_sub(n);
            self.history[skip..].to_vec()
        };
        let (tx, rx) = mpsc::channel(64);
        let late = if req.follow {
            self.late.clone()
        } else {
            Vec::new()
        };
        let follow = req.follow;
        tokio::spawn(async move {
            for res in history {
                if tx.send(Ok(res)).await.is_err() {
                    return;
                }
            }
            for (delay, res) in late {
                tokio::time::sleep(delay).await;
                if tx.send(Ok(res)).await.is_err() {
                    return;
                }
            }
            if follow {
                // Keep the stream open until the client goes, at most 30 s.
                let _ = tokio::time::timeout(Duration::from_secs(30), tx.closed()).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse {
            nodes: self.nodes.clone(),
        }))
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse {
            namespaces: self.namespaces.clone(),
        }))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(self.status.clone()))
    }
}

/// A running server; stops when dropped.
pub struct TestServer {
    /// The address to give `--server`.
    pub addr: String,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Serves `canned` on 127.0.0.1 (a free port).
    pub fn tcp(canned: Canned) -> Self {
        let runtime = runtime();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        Self::serve_with(runtime, canned, incoming, addr, None, None)
    }

    /// Serves `canned` with TLS on 127.0.0.1, requiring a client certificate
    /// signed by `client_ca` when one is given.
    pub fn tls(canned: Canned, cert_pem: &str, key_pem: &str, client_ca: Option<&str>) -> Self {
        let runtime = runtime();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let mut tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        Self::serve_with(runtime, canned, incoming, addr, None, Some(tls))
    }

    /// Serves `canned` on a unix socket in a temporary directory.
    pub fn unix(canned: Canned) -> Self {
        let runtime = runtime();
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("agent.sock");
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(&path).expect("bind unix socket")
        };
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let addr = format!("unix://{}", path.display());
        Self::serve_with(runtime, canned, incoming, addr, Some(dir), None)
    }

    fn serve_with<S, IO>(
        runtime: tokio::runtime::Runtime,
        canned: Canned,
        incoming: S,
        addr: String,
        dir: Option<tempfile::TempDir>,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Self
    where
        S: Stream<Item = std::io::Result<IO>> + Send + 'static,
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
    {
        let (shutdown, stop) = oneshot::channel::<()>();
        runtime.spawn(async move {
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter
                .set_service_status(
                    flowscope_proto::HUBBLE_HEALTH_SERVICE,
                    tonic_health::ServingStatus::Serving,
                )
                .await;
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                builder = builder.tls_config(tls).expect("server TLS config");
            }
            builder
                .add_service(health)
                .add_service(PeerServer::new(canned.clone()))
                .add_service(ObserverServer::new(canned))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop.await;
                })
                .await
                .expect("test server");
        });
        Self {
            addr,
            runtime: Some(runtime),
            shutdown: Some(shutdown),
            _dir: dir,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `flowctl` with a clean environment: no server or config from the machine
/// running the tests.
pub fn flowctl(config_home: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowctl"));
    cmd.env_remove("FLOWSCOPE_SERVER")
        .env_remove("FLOWCTL_CONFIG")
        .env("XDG_CONFIG_HOME", config_home)
        .stdin(Stdio::null());
    cmd
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `cmd` to completion, killing it (and failing) after `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Finished {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flowctl");
    let stdout = reader(child.stdout.take().unwrap());
    let stderr = reader(child.stderr.take().unwrap());
    let status = wait(&mut child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("flowctl still running after {limit:?}");
    });
    Finished {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        elapsed: start.elapsed(),
    }
}

/// Waits for `child` at most `limit`.
pub fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn reader(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// A test CA that signs server and client certificates.
pub struct Ca {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    /// A new CA.
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "flowctl test CA");
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

    /// (certificate, key) PEMs for `name`, for a server or a client.
    pub fn leaf(&self, name: &str, client: bool) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// What Hubble's own tooling makes of JSON lines (see `testbed::observe::hubble_protojson_check`).
pub fn hubble_protojson_check(lines: &str) -> Option<Result<String, String>> {
    let dir = tempfile::tempdir().unwrap();
    testbed::observe::hubble_protojson_check(dir.path(), lines)
}
