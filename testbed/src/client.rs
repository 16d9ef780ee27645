//! gRPC clients for the tests: the agent's API over its unix socket, or the relay over TCP.

use std::{path::Path, time::Duration};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A channel to a unix socket (the agent's API). Fails within `timeout`.
pub async fn unix_channel(path: &Path, timeout: Duration) -> anyhow::Result<Channel> {
    unix_channel_with_window(path, timeout, None).await
}

/// Like [`unix_channel`], with HTTP/2 flow-control windows of `window` bytes: a client that
/// reads slowly then pushes back on the server after that much data, instead of after hyper's
/// default 2 MiB.
pub async fn unix_channel_with_window(
    path: &Path,
    timeout: Duration,
    window: Option<u32>,
) -> anyhow::Result<Channel> {
    let path = path.to_owned();
    let ch = Endpoint::try_from("http://localhost")?
        .connect_timeout(timeout)
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await?;
    Ok(ch)
}

/// A channel to `host:port` in plain text.
pub async fn tcp_channel(addr: &str, timeout: Duration) -> anyhow::Result<Channel> {
    Ok(Endpoint::try_from(format!("http://{addr}"))?
        .connect_timeout(timeout)
        .connect()
        .await?)
}

/// Waits until the agent answers a health check on its socket, or the timeout. A connection
/// alone is not enough: the agent binds its socket before it attaches (so that a bad address
/// fails early) and serves only once attached.
pub async fn wait_for_socket(path: &Path, timeout: Duration) -> anyhow::Result<Channel> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = async {
            let ch = unix_channel(path, Duration::from_secs(1)).await?;
            let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
            let req = tonic_health::pb::HealthCheckRequest {
                service: flowscope_proto::HUBBLE_HEALTH_SERVICE.into(),
            };
            tokio::time::timeout(Duration::from_secs(1), health.check(req)).await??;
            anyhow::Ok(ch)
        };
        match attempt.await {
            Ok(ch) => return Ok(ch),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!(
                    "agent socket {} not ready after {timeout:?}: {e}",
                    path.display()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
