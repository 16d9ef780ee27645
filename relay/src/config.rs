//! The relay's configuration: what to listen on, which agents to dial and
//! how, and the bounds of every buffer. Built by the command line
//! ([`crate::cli::Cli`]) or directly by tests and embedders.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::discovery::{Resolver, SystemResolver};
use crate::error::AddressError;

/// Where an agent listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerTarget {
    /// TCP, optionally TLS: a host name or IP address and a port.
    Tcp {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A unix socket (`unix:///path`): tests and single-node use.
    Unix(PathBuf),
}

impl PeerTarget {
    /// The host part, used as the default TLS server name.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Tcp { host, .. } => Some(host),
            Self::Unix(_) => None,
        }
    }
}

impl fmt::Display for PeerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

impl FromStr for PeerTarget {
    type Err = AddressError;

    /// `host:port`, `[v6]:port` or `unix:///absolute/path`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| AddressError::Invalid {
            value: s.to_string(),
            reason,
        };
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "a unix socket path must be absolute (unix:///path)",
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let (host, port) = split_host_port(s).ok_or_else(|| invalid("expected host:port"))?;
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid("the port must be 1..65535"))?;
        Ok(Self::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

/// `host:port` or `[v6]:port` split into host (without brackets) and port.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host, port));
    }
    let (host, port) = s.rsplit_once(':')?;
    // A bare IPv6 address without brackets is ambiguous.
    (!host.contains(':')).then_some((host, port))
}

/// One statically configured agent: `[name=]host:port` or
/// `[name=]unix:///path`. Without a name, the relay asks the agent
/// (GetNodes) or uses the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The node name, when given.
    pub name: Option<String>,
    /// Where the agent listens.
    pub target: PeerTarget,
}

impl FromStr for PeerSpec {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.split_once('=') {
            Some((name, target)) if !name.is_empty() && !name.contains(':') => Ok(Self {
                name: Some(name.to_string()),
                target: target.parse()?,
            }),
            _ => Ok(Self {
                name: None,
                target: s.parse()?,
            }),
        }
    }
}

/// A DNS name whose addresses are agents (a headless Service in
/// Kubernetes), resolved again every [`RelayConfig::dns_refresh_interval`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    /// The name to resolve.
    pub host: String,
    /// The agents' port.
    pub port: u16,
}

impl FromStr for DnsTarget {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<PeerTarget>()? {
            PeerTarget::Tcp { host, port } => Ok(Self { host, port }),
            PeerTarget::Unix(_) => Err(AddressError::Invalid {
                value: s.to_string(),
                reason: "a DNS target is host:port",
            }),
        }
    }
}

impl fmt::Display for DnsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The relay's gRPC listen address: `host:port`, or `:port` for every
/// interface (Go's convention, as in Hubble's `--listen-address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddress {
    /// The socket address to bind; `[::]` for `:port` (IPv4 too on Linux
    /// unless `bindv6only`; the relay falls back to `0.0.0.0` without IPv6).
    pub addr: SocketAddr,
    /// True for `:port`.
    pub any: bool,
}

impl FromStr for ListenAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| AddressError::Invalid {
            value: s.to_string(),
            reason,
        };
        if let Some(port) = s.strip_prefix(':') {
            let port = port
                .parse::<u16>()
                .map_err(|_| invalid("expected :port or ip:port"))?;
            return Ok(Self {
                addr: SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
                any: true,
            });
        }
        let addr = s
            .parse::<SocketAddr>()
            .map_err(|_| invalid("expected :port or ip:port"))?;
        Ok(Self { addr, any: false })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.any {
            write!(f, ":{}", self.addr.port())
        } else {
            write!(f, "{}", self.addr)
        }
    }
}

/// Exponential backoff with jitter between connection attempts to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt + 1` (0 = after the first failure):
    /// `initial * 2^attempt` capped at `max`, of which a random part in
    /// `[0, delay/2)` is taken away ("equal jitter"), so that agents
    /// failing together are not all dialed again at the same instant.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = exp / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(if jitter_nanos == 0 {
            0
        } else {
            fastrand::u64(0..jitter_nanos)
        });
        exp - jitter
    }
}

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

/// Everything the relay needs. `Default` gives Hubble Relay's defaults with
/// no peers and no TLS.
#[derive(Clone)]
pub struct RelayConfig {
    /// gRPC listen address (default `:4245`).
    pub listen_address: ListenAddress,
    /// Statically configured agents.
    pub peers: Vec<PeerSpec>,
    /// DNS names whose addresses are agents.
    pub peer_dns: Vec<DnsTarget>,
    /// How often DNS names are resolved again.
    pub dns_refresh_interval: Duration,
    /// Agents found as pods through the Kubernetes API.
    pub peer_pods: Option<crate::kubernetes::PodDiscovery>,
    /// Hubble Peer services (an agent's, or Cilium's `hubble-peer`) listing the agents.
    pub peer_service: Vec<PeerTarget>,
    /// Resolver for `peer_dns` (the system's by default; tests inject one).
    pub resolver: Arc<dyn Resolver>,
    /// Maximum flows held in a request's sort window (Hubble: 100).
    pub sort_buffer_len_max: usize,
    /// Longest time a flow waits in the sort window (Hubble: 1 s).
    pub sort_buffer_drain_timeout: Duration,
    /// Window during which identical node status events (same state and
    /// message) are coalesced into one naming every node.
    pub status_aggregation_window: Duration,
    /// Responses buffered towards each client; a following client that
    /// falls further behind loses flows and is told with a LostEvent.
    pub client_buffer_len: usize,
    /// Messages buffered per node between one request's node stream and its
    /// merger (a following request drains them at once; a history request
    /// back-pressures the nodes that are ahead).
    pub node_buffer_len: usize,
    /// How often a connected agent is probed (ServerStatus).
    pub peer_check_interval: Duration,
    /// Timeout of a TCP (+TLS) connection to an agent.
    pub dial_timeout: Duration,
    /// Timeout of a unary call to an agent (probe, ServerStatus, GetNodes);
    /// also how long a history merge waits for a stalled agent.
    pub request_timeout: Duration,
    /// Backoff between connection attempts to an unavailable agent.
    pub backoff: Backoff,
    /// TLS on the relay's own listener.
    pub server_tls: Option<ServerTlsFiles>,
    /// TLS towards agents.
    pub client_tls: Option<ClientTlsFiles>,
    /// How often TLS files are checked for changes.
    pub tls_reload_interval: Duration,
    /// Prometheus metrics listen address (off when `None`).
    pub metrics_listen_address: Option<ListenAddress>,
    /// The web view's listen address (off when `None`).
    pub ui_listen_address: Option<flowscope_ui::ListenAddress>,
    /// The relay's name in the status and lost events it creates.
    pub name: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen_address: ":4245".parse().expect("valid default listen address"),
            peers: Vec::new(),
            peer_dns: Vec::new(),
            dns_refresh_interval: Duration::from_secs(10),
            peer_pods: None,
            peer_service: Vec::new(),
            resolver: Arc::new(SystemResolver),
            sort_buffer_len_max: 100,
            sort_buffer_drain_timeout: Duration::from_secs(1),
            status_aggregation_window: Duration::from_secs(1),
            client_buffer_len: 2048,
            node_buffer_len: 64,
            peer_check_interval: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            server_tls: None,
            client_tls: None,
            tls_reload_interval: Duration::from_secs(5),
            metrics_listen_address: None,
            ui_listen_address: None,
            name: "flowscope-relay".to_string(),
        }
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("listen_address", &self.listen_address)
            .field("peers", &self.peers)
            .field("peer_dns", &self.peer_dns)
            .field("dns_refresh_interval", &self.dns_refresh_interval)
            .field("peer_pods", &self.peer_pods)
            .field("peer_service", &self.peer_service)
            .field("sort_buffer_len_max", &self.sort_buffer_len_max)
            .field("sort_buffer_drain_timeout", &self.sort_buffer_drain_timeout)
            .field("status_aggregation_window", &self.status_aggregation_window)
            .field("client_buffer_len", &self.client_buffer_len)
            .field("node_buffer_len", &self.node_buffer_len)
            .field("peer_check_interval", &self.peer_check_interval)
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("backoff", &self.backoff)
            .field("server_tls", &self.server_tls)
            .field("client_tls", &self.client_tls)
            .field("tls_reload_interval", &self.tls_reload_interval)
            .field("metrics_listen_address", &self.metrics_listen_address)
            .field("ui_listen_address", &self.ui_listen_address)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_specs() {
        let p: PeerSpec = "node-1=10.0.0.1:4244".parse().unwrap();
        assert_eq!(p.name.as_deref(), Some("node-1"));
        assert_eq!(
            p.target,
            PeerTarget::Tcp {
                host: "10.0.0.1".into(),
                port: 4244
            }
        );
        let p: PeerSpec = "agent.example:4244".parse().unwrap();
        assert_eq!(p.name, None);
        assert_eq!(p.target.to_string(), "agent.example:4244");
        let p: PeerSpec = "[fd00::1]:4244".parse().unwrap();
        assert_eq!(p.target.host(), Some("fd00::1"));
        assert_eq!(p.target.to_string(), "[fd00::1]:4244");
        let p: PeerSpec = "n=unix:///run/flowscope.sock".parse().unwrap();
        assert_eq!(p.target, PeerTarget::Unix("/run/flowscope.sock".into()));
        for bad in [
            "",
            "host",
            "host:0",
            "host:99999",
            ":4244",
            "unix://rel",
            "fd00::1:4244",
        ] {
            assert!(bad.parse::<PeerSpec>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dns_targets() {
        let d: DnsTarget = "hubble-peer.kube-system.svc:4244".parse().unwrap();
        assert_eq!(d.host, "hubble-peer.kube-system.svc");
        assert_eq!(d.port, 4244);
        assert!("unix:///x".parse::<DnsTarget>().is_err());
    }

    #[test]
    fn listen_addresses() {
        let l: ListenAddress = ":4245".parse().unwrap();
        assert!(l.any);
        assert_eq!(l.addr.port(), 4245);
        assert_eq!(l.to_string(), ":4245");
        let l: ListenAddress = "127.0.0.1:0".parse().unwrap();
        assert!(!l.any);
        assert!("localhost:4245".parse::<ListenAddress>().is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for _ in 0..200 {
            let d0 = b.delay(0);
            assert!(d0 > Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 > Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            let d40 = b.delay(40);
            assert!(d40 > Duration::from_secs(1) && d40 <= Duration::from_secs(2));
        }
        // Jitter actually varies.
        let samples: std::collections::HashSet<_> = (0..50).map(|_| b.delay(5)).collect();
        assert!(samples.len() > 1);
    }
}
