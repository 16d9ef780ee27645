//! `--ui-listen-address`: `:port` (every interface, Go's convention as in Hubble's flags) or
//! `ip:port`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use tokio::net::TcpListener;

use crate::UiError;

/// Where the web view listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddress {
    /// The address to bind; `[::]` for `:port`.
    pub addr: SocketAddr,
    /// True for `:port` (falls back to `0.0.0.0` on a machine without IPv6).
    pub any: bool,
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("invalid address {s:?}: expected :port or ip:port (e.g. :12000)");
        if let Some(port) = s.strip_prefix(':') {
            let port = port.parse::<u16>().map_err(|_| invalid())?;
            return Ok(Self {
                addr: SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
                any: true,
            });
        }
        let addr = s.parse::<SocketAddr>().map_err(|_| invalid())?;
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

/// Binds the web view's listener (before the server starts serving anything else, so that a
/// taken port stops it with a clear error).
pub async fn bind(addr: ListenAddress) -> Result<TcpListener, UiError> {
    match TcpListener::bind(addr.addr).await {
        Ok(listener) => Ok(listener),
        Err(_) if addr.any => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.addr.port()));
            TcpListener::bind(v4)
                .await
                .map_err(|source| UiError::Bind { addr: v4, source })
        }
        Err(source) => Err(UiError::Bind {
            addr: addr.addr,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let any: ListenAddress = ":12000".parse().unwrap();
        assert!(any.any);
        assert_eq!(any.addr.port(), 12000);
        assert_eq!(any.to_string(), ":12000");
        let one: ListenAddress = "127.0.0.1:12000".parse().unwrap();
        assert!(!one.any);
        assert_eq!(one.to_string(), "127.0.0.1:12000");
        assert!("12000".parse::<ListenAddress>().is_err());
        assert!(":http".parse::<ListenAddress>().is_err());
    }
}
