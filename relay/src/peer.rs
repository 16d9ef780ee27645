//! The relay's peers (the agents) as every other module sees them: where one listens
//! ([`PeerTarget`], [`PeerSpec`], [`DnsTarget`]), what lists it (`Source`, `PeerDesc`),
//! its connection state ([`PeerState`], [`PeerStatus`]), how often it is dialed again
//! ([`Backoff`]), and how its failures are read (`is_transient`, `describe`).
//!
//! A leaf module (it imports only `error`): the configuration, the pool, discovery, TLS and
//! metrics all use these types, and before they had a module of their own they imported
//! each other in a circle (config → discovery → pool → tls → config, pool ⇄ metrics).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use flowscope_proto::observer::ServerStatusResponse;

use crate::error::AddressError;

/// Largest gRPC message accepted from an agent.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Connection state of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerState {
    /// Not probed yet.
    Connecting,
    /// The last probe (or stream) succeeded.
    Connected,
    /// The agent cannot be reached.
    Unavailable,
    /// The agent answered with an error.
    Error,
}

impl PeerState {
    /// Every state, for metrics.
    pub const ALL: [PeerState; 4] = [
        PeerState::Connecting,
        PeerState::Connected,
        PeerState::Unavailable,
        PeerState::Error,
    ];

    /// Lower-case name (metrics label value).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Connecting => "connecting",
            PeerState::Connected => "connected",
            PeerState::Unavailable => "unavailable",
            PeerState::Error => "error",
        }
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of what the relay knows about one agent.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// Node name: configured, reported by the agent, or its address.
    pub name: String,
    /// Connection state.
    pub state: PeerState,
    /// Incremented each time the peer becomes connected: a stream that
    /// failed on generation `g` waits for a connection newer than `g`.
    pub generation: u64,
    /// Why it is not connected.
    pub last_error: Option<String>,
    /// The agent's last ServerStatus answer.
    pub info: Option<ServerStatusResponse>,
}

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
/// Kubernetes), resolved again every [`RelayConfig::dns_refresh_interval`](crate::RelayConfig::dns_refresh_interval).
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

/// What lists a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    /// `--peers`.
    Static,
    /// The n-th `--peer-dns` name.
    Dns(usize),
    /// `--peer-pods`: the agents' pods, from the Kubernetes API.
    Kubernetes,
    /// The n-th `--peer-service`: Hubble's Peer service.
    PeerService(usize),
}

/// A peer as a source describes it.
#[derive(Debug, Clone)]
pub(crate) struct PeerDesc {
    pub spec: PeerSpec,
    /// TLS server name to use when none is configured (the DNS name for
    /// discovered addresses).
    pub server_name_hint: Option<String>,
}

/// Is this status a connectivity problem (try again later) rather than an
/// answer from the agent (it would say the same again)?
pub(crate) fn is_transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    !matches!(
        status.code(),
        Code::InvalidArgument
            | Code::Unimplemented
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::NotFound
            | Code::AlreadyExists
    )
}

/// A short, stable description of a failed call, used in node status
/// events (identical messages are coalesced).
pub(crate) fn describe(status: &tonic::Status) -> String {
    let message = status.message();
    if message.is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {message}", status.code())
    }
}
