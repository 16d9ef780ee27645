//! Finding agents: the static `--peers` list, and DNS names (a headless
//! Service in Kubernetes lists one address per agent pod) resolved again
//! every `--dns-refresh-interval`, so that nodes joining and leaving the
//! cluster are picked up, also by GetFlows streams already following.
//!
//! The resolver is a trait so that tests can inject names without a DNS
//! server; the default is the system resolver (`getaddrinfo`, which reads
//! `/etc/hosts`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::{DnsTarget, PeerSpec, PeerTarget};
use crate::pool::{PeerDesc, PeerPool, Source};

/// The future a [`Resolver`] returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Resolves a host name to socket addresses.
pub trait Resolver: Send + Sync + 'static {
    /// Every address of `host`, with `port`.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// The static peers, as the pool wants them.
pub(crate) fn static_peers(peers: &[PeerSpec]) -> Vec<PeerDesc> {
    peers
        .iter()
        .map(|spec| PeerDesc {
            spec: spec.clone(),
            server_name_hint: None,
        })
        .collect()
}

/// The peers behind one resolution: one per distinct address, named by
/// their address until the agent tells its name.
fn dns_peers(target: &DnsTarget, mut addrs: Vec<SocketAddr>) -> Vec<PeerDesc> {
    addrs.sort_unstable();
    addrs.dedup();
    addrs
        .into_iter()
        .map(|addr| PeerDesc {
            spec: PeerSpec {
                name: None,
                target: PeerTarget::Tcp {
                    host: addr.ip().to_string(),
                    port: addr.port(),
                },
            },
            server_name_hint: Some(target.host.clone()),
        })
        .collect()
}

/// Resolves `target` now and every `interval` until `shutdown`, making the
/// pool's source `Dns(index)` list exactly the addresses found. A failed
/// resolution keeps the previous list (a DNS hiccup must not drop every
/// node from the streams).
pub(crate) async fn watch_dns(
    pool: PeerPool,
    index: usize,
    target: DnsTarget,
    resolver: std::sync::Arc<dyn Resolver>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = tokio::time::timeout(interval.max(Duration::from_secs(1)), resolver.resolve(&target.host, target.port)) => result,
        };
        match result {
            Ok(Ok(addrs)) => {
                if failing {
                    warn!(name = %target, "DNS resolution works again");
                    failing = false;
                }
                debug!(name = %target, count = addrs.len(), "resolved");
                pool.sync_source(Source::Dns(index), dns_peers(&target, addrs));
            }
            Ok(Err(err)) => {
                if !failing {
                    warn!(name = %target, error = %err, "DNS resolution failed; keeping the previous peers");
                }
                failing = true;
            }
            Err(_) => {
                if !failing {
                    warn!(name = %target, "DNS resolution timed out; keeping the previous peers");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn system_resolver_reads_etc_hosts() {
        let addrs = SystemResolver.resolve("localhost", 4244).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == 4244 && a.ip().is_loopback())
        );
    }

    #[test]
    fn one_peer_per_distinct_address() {
        let target: DnsTarget = "agents.example:4244".parse().unwrap();
        let a: SocketAddr = "10.0.0.2:4244".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:4244".parse().unwrap();
        let peers = dns_peers(&target, vec![a, b, a]);
        let addrs: Vec<_> = peers.iter().map(|p| p.spec.target.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:4244", "10.0.0.2:4244"]);
        assert_eq!(peers[0].server_name_hint.as_deref(), Some("agents.example"));
    }
}
