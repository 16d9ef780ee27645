//! Finding agents through the Kubernetes API: the pods of a namespace that match a label selector
//! (the agents' DaemonSet's), listed and then watched, each one a peer dialed at its pod address
//! (the node's: the agents use the host network) and named after the node it runs on.
//!
//! Compared with `--peer-dns` on the agents' headless Service, the relay learns of an agent the
//! moment its pod gets an address (not at the next resolution), knows each agent's node name
//! before it connects, and needs no DNS; it needs `get`, `list` and `watch` on pods in that
//! namespace (`deploy/kubernetes/overlays/relay-api-discovery`).
//!
//! While the API server cannot be reached the last known peers are kept. Every failure, a
//! watch that ends (`timeoutSeconds`) or expires (`410 Gone`) leads to a fresh list: agent pods
//! are few (one per node), so a list costs little and keeps this loop short.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    api::{ListParams, WatchEvent, WatchParams},
    config::KubeConfigOptions,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::RelayError;
use crate::peer::{Backoff, PeerDesc, PeerSpec, PeerTarget, Source};
use crate::pool::PeerPool;

/// The agents' port: a number, or the name of a port of the pods' containers (`grpc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A port number.
    Number(u16),
    /// The name of a container port.
    Name(String),
}

impl FromStr for PortRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u16>() {
            return if n == 0 {
                Err("the port must be 1..65535".into())
            } else {
                Ok(Self::Number(n))
            };
        }
        // A port name: an IANA service name, as Kubernetes checks it: 1 to 15 lower-case
        // letters, digits and '-', at least one letter, no '-' at either end or twice in a row.
        let valid = (1..=15).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.bytes().any(|b| b.is_ascii_lowercase())
            && !s.starts_with('-')
            && !s.ends_with('-')
            && !s.contains("--");
        if !valid {
            return Err(format!("{s:?} is neither a port number nor a port name"));
        }
        Ok(Self::Name(s.to_owned()))
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(n) => f.write_str(n),
        }
    }
}

/// Which pods are agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDiscovery {
    /// Their label selector (`app.kubernetes.io/name=flowscope-agent`).
    pub selector: String,
    /// Their namespace; `None`: the relay's own (its service account's, or the kubeconfig
    /// context's).
    pub namespace: Option<String>,
    /// Their port.
    pub port: PortRef,
    /// A kubeconfig; `None`: `$KUBECONFIG` or `~/.kube/config` if present, else in-cluster.
    pub kubeconfig: Option<PathBuf>,
}

/// A client for the API server, from the kubeconfig or the pod's service account.
pub(crate) async fn client(discovery: &PodDiscovery) -> Result<Client, RelayError> {
    let wrap = |e: Box<dyn std::error::Error + Send + Sync>| RelayError::Kubernetes { source: e };
    let config = match &discovery.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| wrap(e.into()))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| wrap(e.into()))?
        }
        None => Config::infer().await.map_err(|e| wrap(e.into()))?,
    };
    Client::try_from(config).map_err(|e| wrap(e.into()))
}

/// The peers that `pods` describe: one per pod with an address and the port, named after its
/// node, sorted by address.
fn pod_peers(pods: &BTreeMap<String, Pod>, port: &PortRef) -> Vec<PeerDesc> {
    let mut peers: Vec<PeerDesc> = pods
        .values()
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
            let spec = pod.spec.as_ref()?;
            let port = match port {
                PortRef::Number(n) => *n,
                PortRef::Name(name) => spec
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok())?,
            };
            Some(PeerDesc {
                spec: PeerSpec {
                    name: spec.node_name.clone(),
                    target: PeerTarget::Tcp {
                        host: ip.to_owned(),
                        port,
                    },
                },
                server_name_hint: None,
            })
        })
        .collect();
    peers.sort_by_key(|p| p.spec.target.to_string());
    peers.dedup_by_key(|p| p.spec.target.to_string());
    peers
}

/// Lists and watches the agents' pods until `shutdown`, making the pool's Kubernetes source
/// exactly the peers they describe.
pub(crate) async fn watch_pods(
    pool: PeerPool,
    client: Client,
    discovery: PodDiscovery,
    backoff: Backoff,
    shutdown: CancellationToken,
) {
    let namespace = discovery
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let selector = discovery.selector.clone();
    info!(%namespace, %selector, port = %discovery.port, "finding agents through the Kubernetes API");
    let mut failures: u32 = 0;
    let sync = |pods: &BTreeMap<String, Pod>| {
        pool.sync_source(Source::Kubernetes, pod_peers(pods, &discovery.port));
    };
    loop {
        if failures > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.delay(failures - 1)) => {}
            }
        }
        let params = ListParams::default().labels(&selector);
        let listed = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = api.list(&params) => r,
        };
        let list = match listed {
            Ok(l) => l,
            Err(e) => {
                if failures == 0 {
                    warn!(error = %crate::error_chain(&e), "listing the agents' pods failed; keeping the known agents");
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        if failures > 0 {
            info!("the Kubernetes API server answers again");
        }
        failures = 0;
        let mut pods: BTreeMap<String, Pod> = list
            .items
            .into_iter()
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
            .collect();
        sync(&pods);
        let Some(version) = list.metadata.resource_version else {
            failures = 1;
            continue;
        };
        let params = WatchParams::default().labels(&selector).timeout(290);
        let watched = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = api.watch(&params, &version) => r,
        };
        let stream = match watched {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %crate::error_chain(&e), "watching the agents' pods failed");
                failures = 1;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = stream.next() => e,
            };
            match event {
                Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
                    pods.insert(p.metadata.name.clone().unwrap_or_default(), p);
                }
                Some(Ok(WatchEvent::Deleted(p))) => {
                    pods.remove(p.metadata.name.as_deref().unwrap_or_default());
                }
                Some(Ok(WatchEvent::Bookmark(_))) => continue,
                // Ended (timeout, dropped connection) or expired (410): list again, at once.
                None | Some(Ok(WatchEvent::Error(_))) => break,
                Some(Err(e)) => {
                    debug!(error = %crate::error_chain(&e), "the watch of the agents' pods broke");
                    failures = 1;
                    break;
                }
            }
            sync(&pods);
        }
        // A watch cut at once, again and again, must not spin.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_by_number_or_name() {
        assert_eq!("4244".parse(), Ok(PortRef::Number(4244)));
        assert_eq!("grpc".parse(), Ok(PortRef::Name("grpc".into())));
        assert_eq!("h2c-4244".parse(), Ok(PortRef::Name("h2c-4244".into())));
        for bad in [
            "0",
            "",
            "GRPC",
            "a-very-long-port-name",
            "70000",
            "-grpc",
            "g--rpc",
        ] {
            assert!(bad.parse::<PortRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn peers_from_pods() {
        let pod = |name: &str, node: &str, ip: Option<&str>, phase: &str| -> (String, Pod) {
            let v = serde_json::json!({
                "metadata": {"name": name, "namespace": "flowscope"},
                "spec": {"nodeName": node, "containers": [{"name": "agent",
                    "ports": [{"name": "grpc", "containerPort": 4244}]}]},
                "status": {"phase": phase, "podIP": ip},
            });
            (name.to_owned(), serde_json::from_value(v).unwrap())
        };
        let pods = BTreeMap::from([
            pod("a", "node-2", Some("198.51.100.11"), "Running"),
            pod("b", "node-1", Some("198.51.100.10"), "Running"),
            pod("c", "node-3", None, "Pending"),
            pod("d", "node-4", Some("198.51.100.13"), "Failed"),
        ]);
        let peers = pod_peers(&pods, &PortRef::Name("grpc".into()));
        let got: Vec<(Option<String>, String)> = peers
            .iter()
            .map(|p| (p.spec.name.clone(), p.spec.target.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("node-1".into()), "198.51.100.10:4244".into()),
                (Some("node-2".into()), "198.51.100.11:4244".into()),
            ]
        );
        assert_eq!(pod_peers(&pods, &PortRef::Name("http".into())).len(), 0);
        assert_eq!(
            pod_peers(&pods, &PortRef::Number(9000))[0]
                .spec
                .target
                .to_string(),
            "198.51.100.10:9000"
        );
    }
}
