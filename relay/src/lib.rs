//! flowscope-relay: one Observer endpoint for a whole cluster.
//!
//! The relay discovers the agents (a static list, DNS names resolved again
//! periodically), keeps a lazily (re)connected channel to each with backoff
//! and jitter, and serves the same `observer.Observer` API as an agent:
//! `GetFlows` fans out to every agent and merges their streams in time order
//! within a bounded sort window, reporting nodes that connect, fail or go
//! away as `NodeStatusEvent`s, and forwards each flow as the bytes the agent
//! encoded (it decodes only the response's time, node name and the small
//! status and lost events: [`wire`]); `ServerStatus` and `GetNodes` sum and list
//! the nodes. Health (`hubble.server.Observer`), reflection (v1, v1alpha),
//! the `hubble-relay-version` header, TLS on the listener and towards agents
//! (with client certificates, reloaded when the files change) and its own
//! Prometheus metrics come along. With `--otlp-endpoint` it also exports the
//! cluster's flows (and its metrics) over OTLP/gRPC (`export.rs`, with the
//! agent's exporter, `flowscope-otlp`).
//!
//! Memory is bounded by configuration: the sort window, the per-request
//! buffer between node streams and merger, and the per-client buffer; a
//! following client that reads too slowly loses flows (and is told so with
//! a `LostEvent`) instead of slowing anything else down.
//!
//! Depends on `flowscope-proto` (the API) and `flowscope-filter` (to
//! validate filters once, before fanning out); never on the agent or aya.
//!
//! ```no_run
//! # async fn run() -> Result<(), flowscope_relay::RelayError> {
//! use flowscope_relay::{RelayConfig, start};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = RelayConfig {
//!     listen_address: "127.0.0.1:4245".parse().expect("address"),
//!     peers: vec!["node-1=10.0.0.1:4244".parse().expect("peer")],
//!     ..RelayConfig::default()
//! };
//! let shutdown = CancellationToken::new();
//! let relay = start(config, shutdown.clone()).await?;
//! println!("listening on {}", relay.local_addr());
//! // ... later: shutdown.cancel(); relay.wait().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod batch;
pub mod cli;
pub mod config;
pub mod connector;
pub mod discovery;
pub mod error;
mod export;
mod flows;
pub mod inspector;
pub mod kubernetes;
pub mod metrics;
pub mod observer;
pub mod peer;
pub mod pool;
pub mod queue;
mod server;
pub mod tls;
pub mod wire;

pub use config::{
    Backoff, ClientTlsFiles, DnsTarget, ListenAddress, PeerSpec, PeerTarget, RelayConfig,
    ServerTlsFiles,
};
pub use discovery::{Resolver, SystemResolver};
pub use error::{ObserverError, RelayError, TlsError};
pub use server::{RunningRelay, start};

/// An error and its sources, `: `-separated (for logs).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}
