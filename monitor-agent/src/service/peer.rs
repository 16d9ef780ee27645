//! Hubble's `peer.Peer` service: the cluster's nodes, for Hubble Relay (ours or a stock one,
//! `--peer-service`) and `hubble watch peers`.
//!
//! Like Cilium's (`pkg/hubble/peer`): a `Notify` stream first sends every known node as
//! PEER_ADDED, then each change: PEER_ADDED, PEER_DELETED, PEER_UPDATED when a node's address
//! changes (a renamed node is a deletion and an addition). A notification names the node, the
//! address of its agent's Observer API and, when the agent serves TLS, the server name to
//! verify: `<node>.<cluster>.hubble-grpc.cilium.io`, dots in the names turned into hyphens,
//! cluster `default` (flowscope has no cluster name). Cilium sends the node's IP alone and
//! Hubble Relay adds its port, 4244; we send `ip:port` with the agent's own port (4244 unless
//! `--listen-address` says otherwise), which Hubble Relay reads as well.
//!
//! Where the nodes come from: the Kubernetes Node list with `--kubernetes` (IPv4 before IPv6,
//! InternalIP before ExternalIP, as Cilium picks a node's IP); outside Kubernetes the node
//! itself (when it serves TCP) and the `--peer` list. A `--peer` wins over a Node of the same
//! name. A slow client never holds anything up: each stream compares what it sent with what is
//! current, so a client that reads late gets the net changes.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use flowscope_proto::peer::{
    ChangeNotification, ChangeNotificationType, NotifyRequest, Tls, peer_server::Peer,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::observer::Stream_;

/// Hubble's port for the Observer API, which Hubble Relay assumes when a peer's address has
/// none.
pub const HUBBLE_PORT: u16 = 4244;

/// Cilium's default cluster name, part of the TLS server names.
const DEFAULT_CLUSTER: &str = "default";

/// A node as the Peer service announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// `host:port` of its agent's Observer API.
    pub address: String,
    /// The name to verify in its certificate; `None` when TLS is off.
    pub tls_server_name: Option<String>,
}

/// A `--peer NAME=ADDR[,TLS-SERVER-NAME]` option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticPeer {
    /// Node name.
    pub name: String,
    /// `host:port` (`[v6]:port`) or `unix:///path`; a bare IP address gets Hubble's port.
    pub address: String,
    /// The name in its certificate, when not Hubble's default for the node.
    pub tls_server_name: Option<String>,
}

impl std::str::FromStr for StaticPeer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rest) = s
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| format!("{s:?}: expected NAME=ADDR[,TLS-SERVER-NAME]"))?;
        let (address, tls) = match rest.split_once(',') {
            Some((a, t)) if !t.is_empty() => (a, Some(t.to_owned())),
            Some((a, _)) => (a, None),
            None => (rest, None),
        };
        let address = if address.starts_with("unix:///") {
            // Hubble Relay dials these too (an agent on this machine).
            address.to_owned()
        } else if let Ok(ip) = address.parse::<IpAddr>() {
            SocketAddr::new(ip, HUBBLE_PORT).to_string()
        } else if address.parse::<SocketAddr>().is_ok() {
            address.to_owned()
        } else {
            match address.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty()
                        && !host.contains(':')
                        && port.parse::<u16>().is_ok_and(|p| p > 0) =>
                {
                    address.to_owned()
                }
                _ => {
                    return Err(format!(
                        "{s:?}: the address must be host:port, [v6]:port or an IP address"
                    ));
                }
            }
        };
        Ok(StaticPeer {
            name: name.to_owned(),
            address,
            tls_server_name: tls,
        })
    }
}

/// The TLS server name Hubble expects of a node's agent (`TLSServerName` in cilium's
/// `pkg/hubble/peer/handler.go`).
pub fn tls_server_name(node: &str, cluster: &str) -> String {
    let cluster = if cluster.is_empty() {
        DEFAULT_CLUSTER
    } else {
        cluster
    };
    format!(
        "{}.{}.hubble-grpc.cilium.io",
        node.replace('.', "-"),
        cluster.replace('.', "-")
    )
}

/// What the Peer service announces: fixed entries (the node itself, `--peer`) and the
/// cluster's nodes as the registry learns them.
#[derive(Clone)]
pub struct PeerDirectory {
    /// The node itself and the `--peer` list (the latter wins).
    fixed: Arc<BTreeMap<String, PeerEntry>>,
    /// Kubernetes' Node list: name -> address.
    cluster: watch::Receiver<Arc<BTreeMap<String, IpAddr>>>,
    /// The port of the agents' Observer API.
    port: u16,
    /// Whether the agents serve TLS (then every entry carries a server name).
    tls: bool,
}

impl PeerDirectory {
    /// A directory of `statics`, the node itself at `own` (when it serves TCP), and the nodes
    /// of `cluster` reached at `port`.
    pub fn new(
        statics: &[StaticPeer],
        own: Option<(String, SocketAddr)>,
        cluster: watch::Receiver<Arc<BTreeMap<String, IpAddr>>>,
        port: u16,
        tls: bool,
    ) -> Self {
        let mut fixed = BTreeMap::new();
        if let Some((name, addr)) = own {
            let tls_server_name = tls.then(|| tls_server_name(&name, DEFAULT_CLUSTER));
            fixed.insert(
                name,
                PeerEntry {
                    address: addr.to_string(),
                    tls_server_name,
                },
            );
        }
        for p in statics {
            let server_name = p
                .tls_server_name
                .clone()
                .or_else(|| tls.then(|| tls_server_name(&p.name, DEFAULT_CLUSTER)));
            fixed.insert(
                p.name.clone(),
                PeerEntry {
                    address: p.address.clone(),
                    tls_server_name: server_name,
                },
            );
        }
        PeerDirectory {
            fixed: Arc::new(fixed),
            cluster,
            port,
            tls,
        }
    }

    /// Every node now.
    fn current(&self, cluster: &BTreeMap<String, IpAddr>) -> BTreeMap<String, PeerEntry> {
        let mut out: BTreeMap<String, PeerEntry> = cluster
            .iter()
            .map(|(name, ip)| {
                (
                    name.clone(),
                    PeerEntry {
                        address: SocketAddr::new(*ip, self.port).to_string(),
                        tls_server_name: self.tls.then(|| tls_server_name(name, DEFAULT_CLUSTER)),
                    },
                )
            })
            .collect();
        for (name, e) in self.fixed.iter() {
            out.insert(name.clone(), e.clone());
        }
        out
    }
}

fn notification(name: &str, e: &PeerEntry, t: ChangeNotificationType) -> ChangeNotification {
    ChangeNotification {
        name: name.to_owned(),
        address: e.address.clone(),
        r#type: t as i32,
        tls: e.tls_server_name.as_ref().map(|n| Tls {
            server_name: n.clone(),
        }),
    }
}

/// The notifications that take a client from `sent` to `now`: deletions, then additions and
/// updates, each in name order.
fn changes(
    sent: &BTreeMap<String, PeerEntry>,
    now: &BTreeMap<String, PeerEntry>,
) -> Vec<ChangeNotification> {
    let mut out: Vec<ChangeNotification> = sent
        .iter()
        .filter(|(name, _)| !now.contains_key(*name))
        .map(|(name, e)| notification(name, e, ChangeNotificationType::PeerDeleted))
        .collect();
    for (name, e) in now {
        match sent.get(name) {
            None => out.push(notification(name, e, ChangeNotificationType::PeerAdded)),
            Some(old) if old != e => {
                out.push(notification(name, e, ChangeNotificationType::PeerUpdated))
            }
            Some(_) => {}
        }
    }
    out
}

/// The `peer.Peer` service.
#[derive(Clone)]
pub struct PeerService {
    directory: PeerDirectory,
    shutdown: CancellationToken,
}

impl PeerService {
    /// A service announcing `directory` until `shutdown`.
    pub fn new(directory: PeerDirectory, shutdown: CancellationToken) -> Self {
        PeerService {
            directory,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    type NotifyStream = Stream_<ChangeNotification>;

    async fn notify(
        &self,
        _request: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let directory = self.directory.clone();
        let mut cluster = directory.cluster.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut sent = BTreeMap::new();
            loop {
                let now = directory.current(&cluster.borrow_and_update());
                for n in changes(&sent, &now) {
                    if tx.send(Ok(n)).await.is_err() {
                        return;
                    }
                }
                sent = now;
                tokio::select! {
                    changed = cluster.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ns: &[ChangeNotification]) -> Vec<(String, String, i32, Option<String>)> {
        ns.iter()
            .map(|n| {
                (
                    n.name.clone(),
                    n.address.clone(),
                    n.r#type,
                    n.tls.as_ref().map(|t| t.server_name.clone()),
                )
            })
            .collect()
    }

    const ADDED: i32 = ChangeNotificationType::PeerAdded as i32;
    const DELETED: i32 = ChangeNotificationType::PeerDeleted as i32;
    const UPDATED: i32 = ChangeNotificationType::PeerUpdated as i32;

    #[test]
    fn server_names_are_hubbles() {
        assert_eq!(
            tls_server_name("moseisley", "tatooine"),
            "moseisley.tatooine.hubble-grpc.cilium.io"
        );
        assert_eq!(
            tls_server_name("node.example.com", ""),
            "node-example-com.default.hubble-grpc.cilium.io"
        );
    }

    #[test]
    fn static_peers_parse() {
        let p: StaticPeer = "node-2=10.0.0.2:4244".parse().unwrap();
        assert_eq!(
            (p.name.as_str(), p.address.as_str()),
            ("node-2", "10.0.0.2:4244")
        );
        assert_eq!(p.tls_server_name, None);
        let p: StaticPeer = "node-3=fd00::3,agent.example".parse().unwrap();
        assert_eq!(p.address, "[fd00::3]:4244");
        assert_eq!(p.tls_server_name.as_deref(), Some("agent.example"));
        let p: StaticPeer = "n=agents.example:4300".parse().unwrap();
        assert_eq!(p.address, "agents.example:4300");
        let p: StaticPeer = "n=unix:///run/agent.sock".parse().unwrap();
        assert_eq!(p.address, "unix:///run/agent.sock");
        for bad in ["10.0.0.2:4244", "=10.0.0.2", "n=", "n=host", "n=host:0"] {
            assert!(bad.parse::<StaticPeer>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_directory_merges_nodes_static_peers_and_itself() {
        let (tx, rx) = watch::channel(Arc::new(BTreeMap::from([
            ("node-1".to_owned(), "10.0.0.1".parse().unwrap()),
            ("node-2".to_owned(), "fd00::2".parse().unwrap()),
        ])));
        let statics = ["node-2=192.0.2.2:4300".parse().unwrap()];
        let own = Some(("node-0".to_owned(), "10.0.0.100:4244".parse().unwrap()));
        let d = PeerDirectory::new(&statics, own, rx, 4244, true);
        let now = d.current(&tx.borrow());
        let first = changes(&BTreeMap::new(), &now);
        assert_eq!(
            names(&first),
            [
                (
                    "node-0".into(),
                    "10.0.0.100:4244".into(),
                    ADDED,
                    Some("node-0.default.hubble-grpc.cilium.io".into())
                ),
                (
                    "node-1".into(),
                    "10.0.0.1:4244".into(),
                    ADDED,
                    Some("node-1.default.hubble-grpc.cilium.io".into())
                ),
                (
                    "node-2".into(),
                    "192.0.2.2:4300".into(),
                    ADDED,
                    Some("node-2.default.hubble-grpc.cilium.io".into())
                ),
            ]
        );
        // node-1 moves, node-3 joins, the static node-2 stays as configured.
        tx.send_replace(Arc::new(BTreeMap::from([
            ("node-1".to_owned(), "10.0.0.11".parse().unwrap()),
            ("node-3".to_owned(), "10.0.0.3".parse().unwrap()),
        ])));
        let next = d.current(&tx.borrow());
        assert_eq!(
            names(&changes(&now, &next)),
            [
                (
                    "node-1".into(),
                    "10.0.0.11:4244".into(),
                    UPDATED,
                    Some("node-1.default.hubble-grpc.cilium.io".into())
                ),
                (
                    "node-3".into(),
                    "10.0.0.3:4244".into(),
                    ADDED,
                    Some("node-3.default.hubble-grpc.cilium.io".into())
                ),
            ]
        );
        // node-3 leaves.
        tx.send_replace(Arc::new(BTreeMap::from([(
            "node-1".to_owned(),
            "10.0.0.11".parse().unwrap(),
        )])));
        let last = d.current(&tx.borrow());
        assert_eq!(
            names(&changes(&next, &last)),
            [(
                "node-3".into(),
                "10.0.0.3:4244".into(),
                DELETED,
                Some("node-3.default.hubble-grpc.cilium.io".into())
            )]
        );
    }

    #[test]
    fn without_tls_no_server_name() {
        let (_tx, rx) = watch::channel(Arc::new(BTreeMap::from([(
            "node-1".to_owned(),
            "10.0.0.1".parse().unwrap(),
        )])));
        let d = PeerDirectory::new(&[], None, rx, 4300, false);
        let now = d.current(&d.cluster.borrow());
        assert_eq!(
            names(&changes(&BTreeMap::new(), &now)),
            [("node-1".into(), "10.0.0.1:4300".into(), ADDED, None)]
        );
    }
}
