//! Finding agents: the static `--peers` list, DNS names (a headless
//! Service in Kubernetes lists one address per agent pod) resolved again
//! every `--dns-refresh-interval`, and Hubble Peer services
//! (`--peer-service`, followed as a stream), so that nodes joining and
//! leaving the cluster are picked up, also by GetFlows streams already
//! following.
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
use tracing::{debug, info, warn};

use crate::peer::{Backoff, DnsTarget, PeerDesc, PeerSpec, PeerTarget, Source};
use crate::pool::PeerPool;
use flowscope_proto::peer::{
    ChangeNotification, ChangeNotificationType, NotifyRequest, peer_client::PeerClient,
};
use std::collections::BTreeMap;

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

/// Hubble Relay's port for a peer address without one (Cilium announces bare IPs).
const HUBBLE_PORT: u16 = 4244;

/// How long the first notifications of a (re)connected Peer stream may keep coming before the
/// relay takes them as the whole list: Cilium sends every node at once, then changes.
const SETTLE: Duration = Duration::from_millis(300);

/// The peer a notification describes, read as Hubble Relay reads it
/// (`FromChangeNotification`): `unix://` paths, `host:port`, or an IP address alone (port
/// 4244); the TLS server name, when given, is the name to verify.
fn notified_peer(cn: &ChangeNotification) -> Option<PeerDesc> {
    let address = cn.address.trim();
    let target = match address.parse::<std::net::IpAddr>() {
        Ok(ip) => PeerTarget::Tcp {
            host: ip.to_string(),
            port: HUBBLE_PORT,
        },
        Err(_) => address.parse::<PeerTarget>().ok()?,
    };
    Some(PeerDesc {
        spec: PeerSpec {
            name: (!cn.name.is_empty()).then(|| cn.name.clone()),
            target,
        },
        server_name_hint: cn
            .tls
            .as_ref()
            .map(|t| t.server_name.clone())
            .filter(|n| !n.is_empty()),
    })
}

/// Applies one notification to the peers known by name.
fn apply(peers: &mut BTreeMap<String, PeerDesc>, cn: &ChangeNotification) {
    let key = if cn.name.is_empty() {
        cn.address.clone()
    } else {
        cn.name.clone()
    };
    match ChangeNotificationType::try_from(cn.r#type) {
        Ok(ChangeNotificationType::PeerDeleted) => {
            peers.remove(&key);
        }
        Ok(ChangeNotificationType::PeerAdded | ChangeNotificationType::PeerUpdated) => {
            match notified_peer(cn) {
                Some(desc) => {
                    peers.insert(key, desc);
                }
                None => {
                    warn!(name = %cn.name, address = %cn.address, "ignoring a peer whose address cannot be used");
                    peers.remove(&key);
                }
            }
        }
        _ => debug!(name = %cn.name, "ignoring a notification of unknown type"),
    }
}

/// Follows the Peer service at `target` until `shutdown`, making the pool's source
/// `PeerService(index)` exactly the peers it lists. After a (re)connection the stream's first
/// burst (every node as PEER_ADDED) replaces the list whole, which also forgets nodes deleted
/// while the relay was not listening; then each notification applies at once. While the
/// service cannot be reached, the last list stays in force (as for a failing DNS name).
pub(crate) async fn watch_peer_service(
    pool: PeerPool,
    index: usize,
    target: PeerTarget,
    backoff: Backoff,
    shutdown: CancellationToken,
) {
    let source = Source::PeerService(index);
    let sync = |peers: &BTreeMap<String, PeerDesc>| {
        pool.sync_source(source, peers.values().cloned().collect());
    };
    let channel = match pool.dial(&target) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "cannot dial the peer service");
            return;
        }
    };
    let mut failures: u32 = 0;
    loop {
        if failures > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.delay(failures - 1)) => {}
            }
        }
        let mut client = PeerClient::new(channel.clone());
        let started = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = client.notify(NotifyRequest {}) => r,
        };
        let mut stream = match started {
            Ok(s) => s.into_inner(),
            Err(status) => {
                if failures == 0 {
                    warn!(error = %crate::peer::describe(&status), "the peer service cannot be reached; keeping the known peers");
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        if failures > 0 {
            info!("the peer service answers again");
        }
        let mut peers = BTreeMap::new();
        let mut settled = false;
        loop {
            let next = if settled {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = stream.message() => Some(m),
                }
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = stream.message() => Some(m),
                    _ = tokio::time::sleep(SETTLE) => None,
                }
            };
            match next {
                // The first burst is over: the list is complete.
                None => {
                    settled = true;
                    debug!(count = peers.len(), "peers listed");
                    sync(&peers);
                }
                Some(Ok(Some(cn))) => {
                    apply(&mut peers, &cn);
                    if settled {
                        sync(&peers);
                    }
                }
                Some(Ok(None)) | Some(Err(_)) => {
                    if let Some(Err(status)) = &next {
                        warn!(error = %crate::peer::describe(status), "the peer service stream ended; keeping the known peers");
                    }
                    if !settled && !peers.is_empty() {
                        sync(&peers);
                    }
                    failures = 1;
                    break;
                }
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

    fn cn(
        name: &str,
        address: &str,
        t: ChangeNotificationType,
        tls: Option<&str>,
    ) -> ChangeNotification {
        ChangeNotification {
            name: name.into(),
            address: address.into(),
            r#type: t as i32,
            tls: tls.map(|n| flowscope_proto::peer::Tls {
                server_name: n.into(),
            }),
        }
    }

    #[test]
    fn notifications_read_as_hubble_relay_reads_them() {
        use ChangeNotificationType::*;
        let mut peers = BTreeMap::new();
        apply(
            &mut peers,
            &cn(
                "a",
                "10.0.0.1",
                PeerAdded,
                Some("a.default.hubble-grpc.cilium.io"),
            ),
        );
        apply(&mut peers, &cn("b", "[fd00::2]:4300", PeerAdded, None));
        apply(&mut peers, &cn("c", "unix:///run/c.sock", PeerAdded, None));
        apply(&mut peers, &cn("d", "not an address", PeerAdded, None));
        let addrs: Vec<_> = peers.values().map(|p| p.spec.target.to_string()).collect();
        assert_eq!(
            addrs,
            ["10.0.0.1:4244", "[fd00::2]:4300", "unix:///run/c.sock"]
        );
        assert_eq!(
            peers["a"].server_name_hint.as_deref(),
            Some("a.default.hubble-grpc.cilium.io")
        );
        assert_eq!(peers["a"].spec.name.as_deref(), Some("a"));
        apply(&mut peers, &cn("a", "10.0.0.11:4244", PeerUpdated, None));
        apply(&mut peers, &cn("b", "", PeerDeleted, None));
        let addrs: Vec<_> = peers.values().map(|p| p.spec.target.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.11:4244", "unix:///run/c.sock"]);
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
