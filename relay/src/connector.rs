//! Dialing an agent: TCP or a unix socket, optionally TLS, as a lazily
//! connected tonic `Channel`.
//!
//! The channel connects on first use and reconnects on the next call after
//! its connection dies; each (re)connection goes through the private `Dialer`, which
//! reads the *current* TLS client configuration (see `tls.rs`), so renewed
//! client certificates are used without restarting the relay.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::peer::PeerTarget;
use crate::tls::Reloading;

/// HTTP/2 flow control windows towards agents. A following client that
/// reads slowly never holds back an agent's stream (the merger drops for it
/// instead), but a history request (no follow) is back-pressured, and its
/// stream may hold up to one stream window of the connection's window. A
/// large connection window keeps a few slow history readers from stalling
/// every other request to the same agent (HTTP/2 shares the connection
/// window); memory stays bounded by the stream window per request.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// TLS parameters for dialing: the reloadable client configuration and the
/// name to verify in the agent's certificate.
#[derive(Clone)]
pub struct TlsDial {
    /// The client configuration (CAs, optional client certificate).
    pub config: Arc<Reloading<rustls::ClientConfig>>,
    /// The name the agent's certificate must carry.
    pub server_name: ServerName<'static>,
}

/// Anything a connection to an agent can run over (TCP, unix, TLS on either).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A `tower::Service<Uri>` that opens a connection to one agent, whatever
/// the URI says (tonic only needs the URI for the `:authority` header).
#[derive(Clone)]
pub(crate) struct Dialer {
    target: PeerTarget,
    tls: Option<TlsDial>,
}

impl Dialer {
    /// A dialer for `target`, with TLS when `tls` is given.
    pub(crate) fn new(target: PeerTarget, tls: Option<TlsDial>) -> Self {
        Self { target, tls }
    }

    async fn dial(target: PeerTarget, tls: Option<TlsDial>) -> io::Result<TokioIo<Box<dyn Io>>> {
        let io: Box<dyn Io> = match &target {
            PeerTarget::Tcp { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                wrap_tls(stream, tls).await?
            }
            PeerTarget::Unix(path) => wrap_tls(UnixStream::connect(path).await?, tls).await?,
        };
        Ok(TokioIo::new(io))
    }
}

async fn wrap_tls<S>(stream: S, tls: Option<TlsDial>) -> io::Result<Box<dyn Io>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    match tls {
        None => Ok(Box::new(stream)),
        Some(tls) => {
            let connector = tokio_rustls::TlsConnector::from(tls.config.current());
            Ok(Box::new(connector.connect(tls.server_name, stream).await?))
        }
    }
}

impl tower::Service<Uri> for Dialer {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        Box::pin(Self::dial(self.target.clone(), self.tls.clone()))
    }
}

/// A lazily connected channel to `target`: nothing is dialed until the
/// first call, and a lost connection is dialed again on the next call.
/// `dial_timeout` bounds TCP connect plus TLS handshake.
pub fn lazy_channel(target: &PeerTarget, tls: Option<TlsDial>, dial_timeout: Duration) -> Channel {
    let uri = match target {
        PeerTarget::Tcp { .. } => format!("http://{target}"),
        PeerTarget::Unix(_) => "http://localhost".to_string(),
    };
    // A `PeerTarget` always formats to a valid authority; fall back to a
    // placeholder authority rather than fail (the dialer ignores the URI).
    let endpoint = Endpoint::from_shared(uri)
        .unwrap_or_else(|_| Endpoint::from_static("http://localhost"))
        .connect_timeout(dial_timeout)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // Detect agents that vanished without closing their sockets (node
        // powered off) while a stream is open.
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10));
    endpoint.connect_with_connector_lazy(Dialer::new(target.clone(), tls))
}
