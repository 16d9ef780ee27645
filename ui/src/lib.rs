//! flowscope's web view: a page that draws the service map, the flow table, the path of a
//! packet across the node, unanswered connections and drops by reason, live, from the same
//! GetFlows the gRPC clients use. Served by the agent (one node) and by the relay (the cluster)
//! on `--ui-listen-address`.
//!
//! How it talks to the server: the page reads newline-delimited JSON (`/api/flows`, one Hubble
//! `GetFlowsResponse` in protojson per line, `Flow.extensions` included) over plain HTTP/1.1
//! `fetch` streaming. The UI server turns each request into a GetFlows call on the server's own
//! Observer service, in process ([`Api`]): the same filters, history, follow, per-client buffers
//! and `LostEvent`s as any gRPC client, and no second port, codec or protobuf library in the
//! browser (gRPC-Web would need one). Filters are typed as flowctl takes them (`--ip 1.0.0.1
//! --verdict DROPPED`) and parsed here by [`flowscope_filter::flags`], flowctl's own builder.
//!
//! Bounded: at most [`MAX_STREAMS`] open streams, each with a queue of [`STREAM_QUEUE`] lines;
//! a tab that stops reading stops the pull from the server's stream, whose own per-client
//! buffer then drops flows and reports them as lost, so a slow browser never slows the server.
//! The page caps its map and table (see `assets/app.js`) and closes its stream while hidden.
//!
//! The page's files are compiled into the binary ([`assets`]): no CDN, nothing from the
//! internet.

mod assets;
mod listen;
mod server;
mod tls;

use std::sync::Arc;

use tonic::codegen::http as h;
use tower::util::BoxCloneSyncService;

pub use listen::{ListenAddress, bind};
pub use server::{MAX_STREAMS, STREAM_QUEUE, serve};
pub use tls::{TlsFiles, server_config};

/// Any error of a boxed service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The server's Observer service (the very service its gRPC listener serves), called in
/// process by the UI server. Its errors are gRPC statuses in the response, never the
/// service's own (tonic's generated servers are infallible).
pub type Api = BoxCloneSyncService<
    h::Request<tonic::body::Body>,
    h::Response<tonic::body::Body>,
    std::convert::Infallible,
>;

/// Wraps a server's Observer routes as an [`Api`].
pub fn api<S>(service: S) -> Api
where
    S: tower::Service<
            h::Request<tonic::body::Body>,
            Response = h::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service)
}

/// Which server serves the page (shown in its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// One node's agent.
    Agent,
    /// The relay: every node of the cluster.
    Relay,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Relay => "relay",
        }
    }
}

/// The TLS configuration current at accept time (the relay reloads its certificates): the UI
/// listener uses the API listener's certificate and client CAs, with ALPN `http/1.1`.
pub type TlsSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// Errors of the UI server's set-up.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The listen address could not be bound.
    #[error("binding the web view's listener {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file could not be read or used.
    #[error("web view TLS: {what} {path}")]
    Tls {
        /// What the file is.
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },
}
