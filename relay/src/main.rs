//! The `flowscope-relay` binary: parse options, start the relay, stop on
//! SIGINT/SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;
use flowscope_relay::cli::Cli;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use tracing_subscriber::EnvFilter;

/// How long a stop waits for open connections to close.
const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The relay forwards the flow bytes agents send (`wire.rs`), but its streams, sort window and
/// channels still allocate per flow: mimalloc serves them faster than the system allocator
/// (docs/benchmarks.md, benchmark 5).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Cli::parse().into_config()?;

    let shutdown = CancellationToken::new();
    let relay = flowscope_relay::start(config, shutdown.clone())
        .await
        .context("starting the relay")?;

    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
        _ = terminate.recv() => info!("SIGTERM: stopping"),
    }
    shutdown.cancel();
    // Streams end when the token fires; a client holding another stream open
    // (a health Watch, say) must not keep the process alive forever.
    match tokio::time::timeout(GRACE, relay.wait()).await {
        Ok(result) => result.context("stopping the relay")?,
        Err(_) => warn!("connections still open after {GRACE:?}; exiting anyway"),
    }
    Ok(())
}
