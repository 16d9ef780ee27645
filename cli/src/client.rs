//! Where the flowscope server is and how to reach it: over the agent's unix
//! socket, or TCP to an agent or the relay, optionally with TLS (rustls with
//! ring; mutual TLS with a client certificate).
//!
//! The connection is made eagerly, so that an unreachable server is reported
//! once, up front, naming the address that was tried.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// The agent's socket on a node (root-only), tried when nothing else names
/// a server.
pub const AGENT_SOCKET: &str = "/var/run/flowscope/agent.sock";

/// The relay's conventional address, the last resort.
pub const RELAY_DEFAULT: &str = "localhost:4245";

/// How long connecting and unary requests may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A server address, as given with `--server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// A unix socket (`unix:///var/run/flowscope/agent.sock`).
    Unix(PathBuf),
    /// A TCP address (`localhost:4245`, `[::1]:4245`, `tls://relay:4245`).
    Tcp {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
        /// The address itself asked for TLS (`tls://` or `https://`).
        tls: bool,
    },
}

const ADDRESS_EXPECTED: &str = "expected unix:///path/to/socket or host:port (e.g. localhost:4245, [::1]:4245, tls://relay.example:4245)";

impl ServerAddr {
    /// Parses `unix:///path`, `unix:path`, `host:port`, `[v6]:port`, with an
    /// optional `http://`, `https://` or `tls://` in front of TCP addresses
    /// (the last two turn TLS on, as `tls://` does in Hubble).
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(format!("empty socket path: {ADDRESS_EXPECTED}"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let (rest, tls) = if let Some(rest) = s.strip_prefix("tls://") {
            (rest, true)
        } else if let Some(rest) = s.strip_prefix("https://") {
            (rest, true)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (rest, false)
        } else {
            (s, false)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if let Ok(addr) = rest.parse::<std::net::SocketAddr>() {
            return Ok(Self::Tcp {
                host: addr.ip().to_string(),
                port: addr.port(),
                tls,
            });
        }
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(format!("no port in {s:?}: {ADDRESS_EXPECTED}"));
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("bad port in {s:?}: {ADDRESS_EXPECTED}"))?;
        if host.is_empty() || host.contains([':', '/', '[', ']', ' ']) {
            return Err(format!("bad host in {s:?}: {ADDRESS_EXPECTED}"));
        }
        Ok(Self::Tcp {
            host: host.to_string(),
            port,
            tls,
        })
    }

    /// The server to use: `--server` or `FLOWSCOPE_SERVER` (`flag`), else the
    /// config file's, else the local agent's socket when it exists, else the
    /// relay on localhost.
    pub fn resolve(flag: Option<&str>, config: Option<&str>) -> Result<Self, String> {
        if let Some(addr) = flag.or(config) {
            return Self::parse(addr);
        }
        if Path::new(AGENT_SOCKET).exists() {
            return Ok(Self::Unix(PathBuf::from(AGENT_SOCKET)));
        }
        Self::parse(RELAY_DEFAULT)
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp { host, port, tls } => {
                let scheme = if *tls { "tls://" } else { "" };
                if host.contains(':') {
                    write!(f, "{scheme}[{host}]:{port}")
                } else {
                    write!(f, "{scheme}{host}:{port}")
                }
            }
        }
    }
}

/// TLS settings (`--tls` and friends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `--tls` (also implied by `tls://` and by any of the files below).
    pub enabled: bool,
    /// CA certificates (PEM) that sign the server's certificate; the
    /// system's roots when empty.
    pub ca_files: Vec<PathBuf>,
    /// Client certificate (PEM), for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM), for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// Name to check the server's certificate against (default: the host).
    pub server_name: Option<String>,
}

impl TlsOptions {
    fn wanted(&self) -> bool {
        self.enabled
            || !self.ca_files.is_empty()
            || self.client_cert.is_some()
            || self.client_key.is_some()
    }
}

/// Everything needed to dial the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Where.
    pub server: ServerAddr,
    /// With which TLS settings.
    pub tls: TlsOptions,
    /// How long connecting (and each unary request) may take.
    pub timeout: Duration,
}

/// The server could not be reached. Its message names the address and says
/// how to pick another one.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the flowscope server at {addr}: {cause} (use --server or FLOWSCOPE_SERVER)")]
pub struct Unreachable {
    /// The address tried.
    pub addr: String,
    /// Why, as one line.
    pub cause: String,
}

/// Connects to the server.
pub async fn connect(opts: &ConnectOptions) -> anyhow::Result<Channel> {
    let unreachable = |cause: String| Unreachable {
        addr: opts.server.to_string(),
        cause,
    };
    let user_agent = concat!("flowctl/", env!("CARGO_PKG_VERSION"));
    let attempt = match &opts.server {
        ServerAddr::Unix(path) => {
            if opts.tls.wanted() {
                anyhow::bail!(
                    "TLS is not used over a unix socket: drop the --tls flags or use a TCP --server"
                );
            }
            // The URI is only a placeholder (it becomes the :authority
            // header); the connector below ignores it.
            let endpoint = Endpoint::from_static("http://localhost")
                .user_agent(user_agent)?
                .connect_timeout(opts.timeout);
            let path = path.clone();
            let connector = tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            });
            tokio::time::timeout(opts.timeout, endpoint.connect_with_connector(connector)).await
        }
        ServerAddr::Tcp { host, port, tls } => {
            let tls = *tls || opts.tls.wanted();
            let scheme = if tls { "https" } else { "http" };
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
                .map_err(|e| unreachable(error_chain(&e)))?
                .user_agent(user_agent)?
                .connect_timeout(opts.timeout);
            if tls {
                endpoint = endpoint
                    .tls_config(tls_config(&opts.tls)?)
                    .context("setting up TLS")?;
            }
            tokio::time::timeout(opts.timeout, endpoint.connect()).await
        }
    };
    match attempt {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => {
            let mut cause = error_chain(&e);
            if cause.contains("Permission denied") && matches!(opts.server, ServerAddr::Unix(_)) {
                cause.push_str("; the agent's socket is root-only, try sudo");
            }
            Err(unreachable(cause).into())
        }
        Err(_) => Err(unreachable(format!(
            "no answer within {} (--timeout)",
            humantime::format_duration(opts.timeout)
        ))
        .into()),
    }
}

fn tls_config(opts: &TlsOptions) -> anyhow::Result<ClientTlsConfig> {
    let mut config = ClientTlsConfig::new();
    if opts.ca_files.is_empty() {
        config = config.with_native_roots();
    }
    for file in &opts.ca_files {
        let pem = std::fs::read(file).with_context(|| {
            format!(
                "reading the CA certificate file {} (--tls-ca-cert-files)",
                file.display()
            )
        })?;
        config = config.ca_certificate(Certificate::from_pem(pem));
    }
    match (&opts.client_cert, &opts.client_key) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::read(cert).with_context(|| {
                format!(
                    "reading the client certificate {} (--tls-client-cert-file)",
                    cert.display()
                )
            })?;
            let key = std::fs::read(key).with_context(|| {
                format!(
                    "reading the client key {} (--tls-client-key-file)",
                    key.display()
                )
            })?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            anyhow::bail!("mutual TLS needs both --tls-client-cert-file and --tls-client-key-file")
        }
    }
    if let Some(name) = &opts.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

/// An error and its sources on one line, `a: b: c`, without repeating a
/// part that the previous one already ends with.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    // tonic's outer "transport error" says nothing its sources do not.
    if parts.len() > 1 && parts[0] == "transport error" {
        parts.remove(0);
    }
    parts.join(": ")
}

/// Awaits a request's answer (for a stream: its start) for at most the
/// timeout, so that a server that accepts connections but never answers
/// does not hang the command.
pub async fn within<T>(
    opts: &ConnectOptions,
    call: &str,
    request: impl Future<Output = Result<T, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(opts.timeout, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(status)) => Err(rpc_error(&opts.server, call, &status)),
        Err(_) => Err(Unreachable {
            addr: opts.server.to_string(),
            cause: format!(
                "no answer to {call} within {} (--timeout)",
                humantime::format_duration(opts.timeout)
            ),
        }
        .into()),
    }
}

/// An RPC that failed after the connection was made.
pub fn rpc_error(server: &ServerAddr, call: &str, status: &tonic::Status) -> anyhow::Error {
    let message = if status.message().is_empty() {
        status.code().description().to_string()
    } else {
        status.message().to_string()
    };
    if status.code() == tonic::Code::Unavailable {
        return Unreachable {
            addr: server.to_string(),
            cause: message,
        }
        .into();
    }
    anyhow::anyhow!(
        "{call} on {server} failed: {message} (gRPC status {:?})",
        status.code()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let tcp = |host: &str, port, tls| ServerAddr::Tcp {
            host: host.into(),
            port,
            tls,
        };
        let cases = [
            (
                "unix:///var/run/flowscope/agent.sock",
                ServerAddr::Unix("/var/run/flowscope/agent.sock".into()),
            ),
            (
                "unix:relative.sock",
                ServerAddr::Unix("relative.sock".into()),
            ),
            ("localhost:4245", tcp("localhost", 4245, false)),
            ("127.0.0.1:4244", tcp("127.0.0.1", 4244, false)),
            ("[::1]:4245", tcp("::1", 4245, false)),
            ("http://relay:80", tcp("relay", 80, false)),
            ("tls://relay.example:4245", tcp("relay.example", 4245, true)),
            ("https://[fd00::1]:443/", tcp("fd00::1", 443, true)),
        ];
        for (text, want) in cases {
            assert_eq!(ServerAddr::parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn displays_addresses() {
        for text in [
            "unix:///run/a.sock",
            "localhost:4245",
            "[::1]:4245",
            "tls://relay:4245",
        ] {
            assert_eq!(ServerAddr::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn bad_addresses_say_what_is_expected() {
        for bad in [
            "localhost",
            "unix://",
            "host:http",
            "::1:80",
            "a b:1",
            "host:99999",
        ] {
            let err = ServerAddr::parse(bad).unwrap_err();
            assert!(
                err.contains("expected unix:///path/to/socket or host:port"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn resolution_prefers_flag_then_config() {
        assert_eq!(
            ServerAddr::resolve(Some("a:1"), Some("b:2"))
                .unwrap()
                .to_string(),
            "a:1"
        );
        assert_eq!(
            ServerAddr::resolve(None, Some("b:2")).unwrap().to_string(),
            "b:2"
        );
        // Without either: the agent's socket if this machine has one.
        let fallback = ServerAddr::resolve(None, None).unwrap().to_string();
        assert!(
            fallback == "localhost:4245" || fallback == format!("unix://{AGENT_SOCKET}"),
            "{fallback}"
        );
    }

    #[test]
    fn error_chain_skips_repeats() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let outer = std::io::Error::other(Wrapped(inner));
        assert_eq!(error_chain(&outer), "wrapped: Connection refused");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
