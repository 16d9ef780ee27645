//! TLS: rustls configurations built from PEM files and rebuilt when the files
//! change, the relay's listener (plain or TLS, optionally requiring client
//! certificates) and the TLS dial towards agents.
//!
//! Why not tonic's own TLS (`ServerTlsConfig`, `ClientTlsConfig`): tonic
//! builds its rustls configuration once, when the server or endpoint is
//! built, and offers no way to swap certificates afterwards; certificates
//! issued by cert-manager or Cilium's certgen rotate every few days. So we
//! terminate TLS ourselves with tokio-rustls: every accepted connection is
//! handshaken with the *current* `ServerConfig`, every new connection to an
//! agent with the current `ClientConfig` ([`Reloading`] holds them), and the
//! resulting streams are handed to tonic as plain I/O
//! (`serve_with_incoming_shutdown`, `connect_with_connector`). The crypto
//! provider is `ring`, chosen explicitly (no process-wide default needed).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, info, warn};

use crate::error::TlsError;

/// The relay's own listener TLS: certificate and key, and CAs whose client
/// certificates are required (mTLS) when given. Reloaded when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundles; when non-empty, clients must present a certificate
    /// signed by one of them.
    pub client_ca: Vec<PathBuf>,
}

/// TLS towards agents: CAs to trust, an optional client certificate (mTLS)
/// and the name to expect in the agents' certificates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsFiles {
    /// PEM CA bundles the agents' certificates must chain to.
    pub ca: Vec<PathBuf>,
    /// PEM client certificate chain (with `key`), for agents requiring mTLS.
    pub cert: Option<PathBuf>,
    /// PEM client private key.
    pub key: Option<PathBuf>,
    /// The server name to verify in every agent's certificate; default: the
    /// host of the peer address (or of the DNS name for discovered peers).
    pub server_name: Option<String>,
}

/// Longest time a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent TLS handshakes on the listener; more connections wait in the
/// kernel's accept queue rather than in our memory.
const MAX_HANDSHAKES: usize = 256;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_err(
    kind: &'static str,
    path: &Path,
) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Read { kind, path, source }
}

/// Every certificate of a PEM file.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err("certificate", path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err("certificate", path))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            kind: "certificate",
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            kind: "private key",
            path: path.to_path_buf(),
        },
        source => TlsError::Read {
            kind: "private key",
            path: path.to_path_buf(),
            source,
        },
    })
}

/// A root store from PEM CA bundles.
fn load_roots(paths: &[PathBuf], side: &'static str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for path in paths {
        for cert in load_certs(path)? {
            roots
                .add(cert)
                .map_err(|source| TlsError::Config { side, source })?;
        }
    }
    Ok(roots)
}

/// The relay listener's rustls configuration: its certificate, HTTP/2 by
/// ALPN, and client certificates required when `client_ca` is non-empty.
pub fn server_config(files: &ServerTlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            side: "server",
            source,
        })?;
    let builder = if files.client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let roots = load_roots(&files.client_ca, "server")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(TlsError::Verifier)?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Config {
            side: "server",
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The rustls configuration towards agents: the CAs to trust, a client
/// certificate when given, HTTP/2 by ALPN.
pub fn client_config(files: &ClientTlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    if files.ca.is_empty() {
        return Err(TlsError::MissingCa);
    }
    let roots = load_roots(&files.ca, "client")?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            side: "client",
            source,
        })?
        .with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|source| TlsError::Config {
                side: "client",
                source,
            })?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfClientCert),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A TLS server name from a host name or IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName {
        name: name.to_string(),
    })
}

/// What identifies one version of a file: modification time and size.
type FileStamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> FileStamp {
    // `metadata` follows symlinks: Kubernetes secret volumes swap a
    // `..data` symlink, which changes the target's mtime as seen here.
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

type Builder<C> = Box<dyn Fn() -> Result<C, TlsError> + Send + Sync>;

/// A configuration built from files and rebuilt when they change.
/// [`Reloading::current`] is what every new connection uses.
pub struct Reloading<C> {
    what: &'static str,
    current: RwLock<Arc<C>>,
    generation: AtomicU64,
    files: Vec<PathBuf>,
    build: Option<Builder<C>>,
    /// Stamps of the files the current configuration was built from, and of
    /// the last version that failed to build (reported once).
    stamps: Mutex<(Vec<FileStamp>, Option<Vec<FileStamp>>)>,
}

impl<C> Reloading<C> {
    /// Builds the configuration now (an error stops the caller) and
    /// remembers the files to watch.
    pub fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<C, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = files.iter().map(|p| stamp(p)).collect();
        let config = build()?;
        Ok(Self {
            what,
            current: RwLock::new(Arc::new(config)),
            generation: AtomicU64::new(0),
            files,
            build: Some(Box::new(build)),
            stamps: Mutex::new((stamps, None)),
        })
    }

    /// A configuration that never changes (tests, embedders).
    pub fn fixed(config: C) -> Self {
        Self {
            what: "fixed",
            current: RwLock::new(Arc::new(config)),
            generation: AtomicU64::new(0),
            files: Vec::new(),
            build: None,
            stamps: Mutex::new((Vec::new(), None)),
        }
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<C> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Incremented on every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Rebuilds the configuration if a file changed. Returns `Ok(true)` when
    /// a new configuration is in place. On error the previous configuration
    /// stays (a half-written certificate must not take the relay down).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let Some(build) = &self.build else {
            return Ok(false);
        };
        let now: Vec<FileStamp> = self.files.iter().map(|p| stamp(p)).collect();
        let mut stamps = self
            .stamps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now == stamps.0 || stamps.1.as_ref() == Some(&now) {
            return Ok(false);
        }
        match build() {
            Ok(config) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
                self.generation.fetch_add(1, Ordering::AcqRel);
                *stamps = (now, None);
                Ok(true)
            }
            Err(err) => {
                stamps.1 = Some(now);
                Err(err)
            }
        }
    }

    /// Checks the files every `interval` until `shutdown`.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken)
    where
        C: Send + Sync + 'static,
    {
        if self.build.is_none() || self.files.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.reload_if_changed() {
                Ok(true) => info!(what = self.what, "TLS configuration reloaded"),
                Ok(false) => {}
                Err(err) => warn!(
                    what = self.what,
                    error = %crate::error_chain(&err),
                    "TLS files changed but cannot be used; keeping the previous configuration"
                ),
            }
        }
    }
}

/// An accepted connection on the relay's listener, plain or TLS.
pub enum ServerIo {
    /// Plain-text TCP.
    Plain(TcpStream),
    /// TLS over TCP, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for ServerIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Self::Plain(s) => s.connect_info(),
            Self::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The connections accepted on `listener`, for
/// `tonic::transport::Server::serve_with_incoming_shutdown`.
///
/// With `tls`, each connection is handshaken in its own task (a slow or
/// hostile client cannot stall the accept loop) with the configuration
/// current at accept time; failed handshakes (plain-text clients, client
/// certificates from another CA) are logged and dropped. The stream ends
/// when `shutdown` fires.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Reloading<rustls::ServerConfig>>>,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<ServerIo>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: wait a little rather than spin.
                    warn!(error = %err, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Some(tls) = &tls else {
                if tx.send(Ok(ServerIo::Plain(stream))).await.is_err() {
                    return;
                }
                continue;
            };
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    done = handshake => match done {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(ServerIo::Tls(Box::new(stream)))).await;
                        }
                        Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let files = ServerTlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: vec![],
        };
        let err = server_config(&files).unwrap_err();
        let text = crate::error_chain(&err);
        assert!(text.contains("/nonexistent/cert.pem"), "{text}");
        assert!(matches!(
            client_config(&ClientTlsFiles::default()),
            Err(TlsError::MissingCa)
        ));
    }

    #[test]
    fn empty_file_is_not_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        fs::write(&path, "").unwrap();
        assert!(matches!(load_certs(&path), Err(TlsError::Empty { .. })));
        assert!(matches!(load_key(&path), Err(TlsError::Empty { .. })));
    }

    #[test]
    fn reloading_keeps_old_config_on_error_and_picks_up_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        fs::write(&path, "1").unwrap();
        let p = path.clone();
        let r = Reloading::new("test", vec![path.clone()], move || {
            let text = fs::read_to_string(&p).unwrap();
            text.trim().parse::<u32>().map_err(|_| TlsError::MissingCa)
        })
        .unwrap();
        assert_eq!(*r.current(), 1);
        assert!(!r.reload_if_changed().unwrap());
        fs::write(&path, "not a number").unwrap();
        assert!(r.reload_if_changed().is_err());
        // Reported once, then quiet until the file changes again.
        assert!(!r.reload_if_changed().unwrap());
        assert_eq!(*r.current(), 1);
        fs::write(&path, "22").unwrap();
        assert!(r.reload_if_changed().unwrap());
        assert_eq!(*r.current(), 22);
        assert_eq!(r.generation(), 1);
    }
}
