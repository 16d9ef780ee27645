//! The relay's configuration: what to listen on, which agents to dial and
//! how, and the bounds of every buffer. Built by the command line
//! ([`crate::cli::Cli`]) or directly by tests and embedders.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::discovery::{Resolver, SystemResolver};
use crate::error::AddressError;
pub use crate::peer::{Backoff, DnsTarget, PeerSpec, PeerTarget};
pub use crate::tls::{ClientTlsFiles, ServerTlsFiles};

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
    /// The relay's name in the status and lost events it creates (and in its OTLP resource).
    pub name: String,
    /// Export the cluster's flows and the relay's metrics over OTLP/gRPC (off when `None`).
    pub otlp: Option<flowscope_otlp::OtlpOptions>,
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
            otlp: None,
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
            .field("otlp", &self.otlp)
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
