//! Serving the API: a root-only unix socket always, TCP only when asked (and then with TLS
//! unless explicitly disabled), with gRPC health and reflection on both.

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use flowscope_proto::{
    FILE_DESCRIPTOR_SET, flowscope::v1::inspector_server::InspectorServer,
    peer::peer_server::PeerServer,
};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::info;

use super::{AgentState, InspectorService, ObserverService, PeerService, encoded::observer_routes};

/// Certificate files for the TCP listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CAs whose client certificates are accepted; empty = no client certificates required.
    pub client_cas: Vec<PathBuf>,
}

/// Where to listen.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// Unix socket path (created root-only).
    pub socket: PathBuf,
    /// TCP address, if any.
    pub tcp: Option<SocketAddr>,
    /// TLS for the TCP listener; `None` with `tcp` set means plain text (explicitly allowed).
    pub tls: Option<TlsFiles>,
    /// The web view's address, if any (same TLS as the TCP listener).
    pub ui: Option<flowscope_ui::ListenAddress>,
}

/// Binds the unix socket: removes a stale socket file, creates the directory, restricts the
/// socket to root (0600: flows reveal every connection of the node).
fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use: is another agent running?", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn tls_config(files: &TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let cert =
        std::fs::read(&files.cert).with_context(|| format!("reading {}", files.cert.display()))?;
    let key =
        std::fs::read(&files.key).with_context(|| format!("reading {}", files.key.display()))?;
    let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if !files.client_cas.is_empty() {
        let mut pem = Vec::new();
        for ca in &files.client_cas {
            pem.extend(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
        }
        cfg = cfg.client_ca_root(Certificate::from_pem(pem));
    }
    Ok(cfg)
}

/// Listeners bound, not yet serving.
pub struct Listeners {
    unix: tokio::net::UnixListener,
    socket: PathBuf,
    tcp: Option<tokio::net::TcpListener>,
    tls: Option<ServerTlsConfig>,
    ui: Option<(tokio::net::TcpListener, Option<flowscope_ui::TlsSource>)>,
}

impl Listeners {
    /// Addresses the API is reachable at, for GetNodes.
    pub fn addresses(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(Ok(a)) = self.tcp.as_ref().map(|t| t.local_addr()) {
            v.push(a.to_string());
        }
        v.push(format!("unix://{}", self.socket.display()));
        v
    }

    /// TLS on the TCP listener.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TCP listener's address, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|t| t.local_addr().ok())
    }
}

/// Binds the unix socket and the TCP listener, and reads the TLS files: every error here comes
/// before the agent attaches anything.
pub async fn bind(opts: &ListenOptions) -> anyhow::Result<Listeners> {
    let unix = bind_unix(&opts.socket)?;
    let tcp = match opts.tcp {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
    let tls = opts.tls.as_ref().map(tls_config).transpose()?;
    let ui = match opts.ui {
        Some(addr) => {
            let listener = flowscope_ui::bind(addr).await?;
            let tls = match &opts.tls {
                Some(files) => {
                    let config = flowscope_ui::server_config(&flowscope_ui::TlsFiles {
                        cert: files.cert.clone(),
                        key: files.key.clone(),
                        client_cas: files.client_cas.clone(),
                    })?;
                    Some(std::sync::Arc::new(move || config.clone()) as flowscope_ui::TlsSource)
                }
                None => None,
            };
            Some((listener, tls))
        }
        None => None,
    };
    Ok(Listeners {
        unix,
        socket: opts.socket.clone(),
        tcp,
        tls,
        ui,
    })
}

/// Serves until `shutdown` fires.
pub async fn serve(
    state: Arc<AgentState>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Listeners {
        unix,
        socket,
        tcp,
        tls,
        ui,
    } = listeners;
    let (health, health_service) = tonic_health::server::health_reporter();
    // The first answer is known before the first request can come; then once a second.
    let mut health = super::health::Watcher::new(state.clone(), health);
    health.update().await;
    tokio::spawn(health.run(shutdown.clone()));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building reflection v1")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building reflection v1alpha")?;

    let router = |tls: Option<ServerTlsConfig>| -> anyhow::Result<_> {
        let mut b = Server::builder();
        if let Some(tls) = tls {
            b = b.tls_config(tls).context("TLS configuration")?;
        }
        Ok(
            b.add_service(observer_routes(ObserverService::new(state.clone())))
                .add_service(InspectorServer::new(InspectorService::new(state.clone())))
                .add_service(PeerServer::new(PeerService::new(
                    state.peers.clone(),
                    state.shutdown.clone(),
                )))
                .add_service(health_service.clone())
                .add_service(reflection_v1.clone())
                .add_service(reflection_v1alpha.clone()),
        )
    };

    if let Some((listener, ui_tls)) = ui {
        // The web view calls the Observer service in process: the same GetFlows as gRPC.
        let api = flowscope_ui::api(observer_routes(ObserverService::new(state.clone())));
        tokio::spawn(flowscope_ui::serve(
            listener,
            ui_tls,
            api,
            flowscope_ui::Role::Agent,
            shutdown.clone(),
        ));
    }

    info!(socket = %socket.display(), "serving the Observer API");
    let unix_task = {
        let r = router(None)?;
        let token = shutdown.clone();
        tokio::spawn(async move {
            r.serve_with_incoming_shutdown(UnixListenerStream::new(unix), token.cancelled())
                .await
        })
    };
    let tcp_task = match tcp {
        Some(listener) => {
            info!(address = %listener.local_addr()?, tls = tls.is_some(), "serving the Observer API on TCP");
            let r = router(tls)?;
            let token = shutdown.clone();
            Some(tokio::spawn(async move {
                r.serve_with_incoming_shutdown(TcpListenerStream::new(listener), token.cancelled())
                    .await
            }))
        }
        None => None,
    };
    unix_task.await?.context("unix socket server")?;
    if let Some(t) = tcp_task {
        t.await?.context("TCP server")?;
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
