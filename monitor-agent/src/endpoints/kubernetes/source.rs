//! The source itself: five list-watch loops feed one task, which keeps pods (by UID),
//! namespaces, nodes, Services and EndpointSlices, and republishes to the registry after each
//! change.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::Path,
    sync::{Arc, atomic::Ordering},
};

use ipnet::IpNet;
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service as K8sService},
    discovery::v1::EndpointSlice,
};
use kube::{Api, Client, Config, config::KubeConfigOptions};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    KubernetesError, KubernetesStatus, Resource, WatchTuning,
    convert::{
        PodInfo, endpoints, node_addresses, node_peer_address, object_key, service_frontends,
        services, slice_backends,
    },
    listwatch::{ListWatch, Update},
};
use crate::endpoints::{Registry, ServiceAddr, ServiceName, source};

/// A client from `kubeconfig`, else from `$KUBECONFIG` or `~/.kube/config`, else in-cluster.
pub(crate) async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubernetesError> {
    let config = match kubeconfig {
        Some(path) => {
            let named = |e: kube::config::KubeconfigError| KubernetesError::Kubeconfig {
                path: path.to_owned(),
                source: Box::new(e),
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(named)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(named)?
        }
        None => Config::infer()
            .await
            .map_err(|e| KubernetesError::NoConfig {
                source: Box::new(e),
            })?,
    };
    Client::try_from(config).map_err(|e| KubernetesError::Client {
        source: Box::new(e),
    })
}

/// What the loops send.
enum Change {
    Pods(Update<Pod>),
    Namespaces(Update<Namespace>),
    Nodes(Update<Node>),
    Services(Update<K8sService>),
    EndpointSlices(Update<EndpointSlice>),
}

/// Starts the loops and the task that applies their updates.
pub(crate) fn spawn(
    client: Client,
    node_name: String,
    registry: Registry,
    tuning: WatchTuning,
    status: Arc<KubernetesStatus>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Bounded: a slow registry holds the loops back rather than queueing without end.
        let (tx, rx) = mpsc::channel(64);
        let mut loops = tokio::task::JoinSet::new();
        fn lw<K: kube::Resource<DynamicType = ()> + Clone>(
            client: &Client,
            resource: Resource,
            field_selector: Option<String>,
            tuning: &WatchTuning,
            status: &Arc<KubernetesStatus>,
        ) -> ListWatch<K> {
            ListWatch {
                api: Api::all(client.clone()),
                resource,
                field_selector,
                tuning: tuning.clone(),
                status: status.clone(),
            }
        }
        let on_node = Some(format!("spec.nodeName={node_name}"));
        let pods = lw::<Pod>(&client, Resource::Pods, on_node, &tuning, &status);
        loops.spawn(pods.run(tx.clone(), Change::Pods, cancel.clone()));
        let namespaces = lw::<Namespace>(&client, Resource::Namespaces, None, &tuning, &status);
        loops.spawn(namespaces.run(tx.clone(), Change::Namespaces, cancel.clone()));
        let nodes = lw::<Node>(&client, Resource::Nodes, None, &tuning, &status);
        loops.spawn(nodes.run(tx.clone(), Change::Nodes, cancel.clone()));
        let svcs = lw::<K8sService>(&client, Resource::Services, None, &tuning, &status);
        loops.spawn(svcs.run(tx.clone(), Change::Services, cancel.clone()));
        let slices = lw::<EndpointSlice>(&client, Resource::EndpointSlices, None, &tuning, &status);
        loops.spawn(slices.run(tx, Change::EndpointSlices, cancel.clone()));
        info!(
            node = %node_name,
            "watching pods, namespaces, nodes, services and endpointslices on the Kubernetes API \
             server"
        );

        let mut state = State {
            node_name,
            registry,
            status,
            pods: BTreeMap::new(),
            namespaces: HashMap::new(),
            nodes: BTreeMap::new(),
            peers: BTreeMap::new(),
            published_pods: false,
            namespaces_listed: false,
            grace: tuning.namespace_grace,
            pods_listed_at: None,
            warned_no_node: false,
            frontends: BTreeMap::new(),
            slices: BTreeMap::new(),
            services_listed: false,
        };
        state.run(rx, cancel).await;
        // The loops end on the same token; the JoinSet aborts any that has not yet.
        loops.shutdown().await;
    })
}

/// What the source knows.
struct State {
    node_name: String,
    registry: Registry,
    status: Arc<KubernetesStatus>,
    /// This node's pods that are endpoints, by UID: a delete removes that pod and no other, even
    /// if another pod has taken its address since.
    pods: BTreeMap<String, PodInfo>,
    /// Namespace name -> its labels.
    namespaces: HashMap<String, BTreeMap<String, String>>,
    /// Node name -> its addresses.
    nodes: BTreeMap<String, Vec<IpAddr>>,
    /// Node name -> the address its agent is reached at (the Peer service).
    peers: BTreeMap<String, IpAddr>,
    /// Pods have been published at least once.
    published_pods: bool,
    /// Namespaces have been listed at least once.
    namespaces_listed: bool,
    /// How long the first pods wait for the namespaces (see [`WatchTuning::namespace_grace`]).
    grace: std::time::Duration,
    /// When pods were first listed, while waiting for the namespaces.
    pods_listed_at: Option<Instant>,
    warned_no_node: bool,
    /// Services with a frontend, by `namespace/name`.
    frontends: BTreeMap<String, (ServiceName, Vec<ServiceAddr>)>,
    /// EndpointSlices by `namespace/name`: their Service's `namespace/name` and backends.
    slices: BTreeMap<String, (String, Vec<ServiceAddr>)>,
    /// Services have been listed at least once.
    services_listed: bool,
}

impl State {
    async fn run(&mut self, mut rx: mpsc::Receiver<Change>, cancel: CancellationToken) {
        loop {
            let grace_end = self
                .pods_listed_at
                .filter(|_| !self.published_pods)
                .map(|t| t + self.grace);
            let change = tokio::select! {
                _ = cancel.cancelled() => return,
                c = rx.recv() => match c {
                    Some(c) => c,
                    None => return,
                },
                _ = sleep_until(grace_end) => {
                    warn!(
                        "namespaces not listed {:?} after pods: publishing pods without their \
                         namespace's labels (their identities will change when they come)",
                        self.grace
                    );
                    self.publish_pods(true);
                    continue;
                }
            };
            match change {
                Change::Pods(u) => {
                    if self.apply_pods(u) {
                        self.publish_pods(false);
                    }
                }
                Change::Namespaces(u) => {
                    if self.apply_namespaces(u) {
                        self.publish_pods(false);
                    }
                }
                Change::Nodes(u) => {
                    if self.apply_nodes(u) {
                        self.publish_nodes();
                    }
                }
                Change::Services(u) => {
                    if self.apply_services(u) {
                        self.publish_services();
                    }
                }
                Change::EndpointSlices(u) => {
                    if self.apply_slices(u) {
                        self.publish_services();
                    }
                }
            }
        }
    }

    /// Applies a pod update; true when the endpoints may have changed.
    fn apply_pods(&mut self, update: Update<Pod>) -> bool {
        match update {
            Update::Listed(items) => {
                let pods: BTreeMap<String, PodInfo> = items
                    .iter()
                    .filter_map(PodInfo::from_pod)
                    .map(|p| (p.uid.clone(), p))
                    .collect();
                self.pods_listed_at.get_or_insert_with(Instant::now);
                self.pods = pods;
                true
            }
            Update::Applied(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                match PodInfo::from_pod(&pod) {
                    Some(info) => {
                        if self.pods.get(&uid) == Some(&info) {
                            return false; // a status change that does not touch the endpoint
                        }
                        self.pods.insert(uid, info);
                        true
                    }
                    // Finished, or host network: no longer an endpoint.
                    None => self.pods.remove(&uid).is_some(),
                }
            }
            Update::Deleted(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                self.pods.remove(&uid).is_some()
            }
        }
    }

    /// Applies a namespace update; true when a namespace with pods here changed labels.
    fn apply_namespaces(&mut self, update: Update<Namespace>) -> bool {
        let labels_of = |ns: &Namespace| ns.metadata.labels.clone().unwrap_or_default();
        let name_of = |ns: &Namespace| ns.metadata.name.clone().unwrap_or_default();
        match update {
            Update::Listed(items) => {
                let new: HashMap<_, _> = items.iter().map(|n| (name_of(n), labels_of(n))).collect();
                let changed = new != self.namespaces;
                self.namespaces = new;
                self.namespaces_listed = true;
                changed || !self.published_pods
            }
            Update::Applied(ns) => {
                let name = name_of(&ns);
                let labels = labels_of(&ns);
                if self.namespaces.get(&name) == Some(&labels) {
                    return false;
                }
                self.namespaces.insert(name.clone(), labels);
                self.has_pods_in(&name)
            }
            Update::Deleted(ns) => {
                let name = name_of(&ns);
                self.namespaces.remove(&name).is_some() && self.has_pods_in(&name)
            }
        }
    }

    fn has_pods_in(&self, namespace: &str) -> bool {
        self.pods.values().any(|p| p.namespace == namespace)
    }

    /// Applies a node update; true when an address changed.
    fn apply_nodes(&mut self, update: Update<Node>) -> bool {
        let name_of = |n: &Node| n.metadata.name.clone().unwrap_or_default();
        match update {
            Update::Listed(items) => {
                let new: BTreeMap<_, _> = items
                    .iter()
                    .map(|n| (name_of(n), node_addresses(n)))
                    .collect();
                if !self.warned_no_node && !new.contains_key(&self.node_name) {
                    self.warned_no_node = true;
                    warn!(
                        node = %self.node_name,
                        "no Node named {:?}: no pod will be found for this node; set the node \
                         name from spec.nodeName (NODE_NAME through the downward API, or \
                         --node-name)",
                        self.node_name
                    );
                }
                let peers: BTreeMap<_, _> = items
                    .iter()
                    .filter_map(|n| Some((name_of(n), node_peer_address(n)?)))
                    .collect();
                let changed = new != self.nodes || peers != self.peers;
                self.nodes = new;
                self.peers = peers;
                changed
            }
            // Kubelets update their Node's status every few seconds: only addresses matter.
            Update::Applied(node) => {
                let (name, ips) = (name_of(&node), node_addresses(&node));
                let peer = node_peer_address(&node);
                if self.nodes.get(&name) == Some(&ips) && self.peers.get(&name) == peer.as_ref() {
                    return false;
                }
                match peer {
                    Some(ip) => self.peers.insert(name.clone(), ip),
                    None => self.peers.remove(&name),
                };
                self.nodes.insert(name, ips);
                true
            }
            Update::Deleted(node) => {
                let name = name_of(&node);
                let peer = self.peers.remove(&name).is_some();
                self.nodes.remove(&name).is_some() || peer
            }
        }
    }

    /// Applies a Service update; true when a frontend changed.
    fn apply_services(&mut self, update: Update<K8sService>) -> bool {
        match update {
            Update::Listed(items) => {
                let new: BTreeMap<_, _> = items
                    .iter()
                    .filter_map(|s| Some((object_key(&s.metadata), service_frontends(s)?)))
                    .collect();
                let changed = new != self.frontends || !self.services_listed;
                self.frontends = new;
                self.services_listed = true;
                changed
            }
            Update::Applied(svc) => {
                let key = object_key(&svc.metadata);
                match service_frontends(&svc) {
                    Some(fe) => {
                        if self.frontends.get(&key) == Some(&fe) {
                            return false; // a status or annotation change
                        }
                        self.frontends.insert(key, fe);
                        true
                    }
                    // Made headless or ExternalName: no frontend any more.
                    None => self.frontends.remove(&key).is_some(),
                }
            }
            Update::Deleted(svc) => self.frontends.remove(&object_key(&svc.metadata)).is_some(),
        }
    }

    /// Applies an EndpointSlice update; true when a backend changed.
    fn apply_slices(&mut self, update: Update<EndpointSlice>) -> bool {
        match update {
            Update::Listed(items) => {
                let new: BTreeMap<_, _> = items
                    .iter()
                    .filter_map(|s| Some((object_key(&s.metadata), slice_backends(s)?)))
                    .collect();
                let changed = new != self.slices;
                self.slices = new;
                changed
            }
            Update::Applied(slice) => {
                let key = object_key(&slice.metadata);
                match slice_backends(&slice) {
                    Some(be) => {
                        if self.slices.get(&key) == Some(&be) {
                            return false;
                        }
                        self.slices.insert(key, be);
                        true
                    }
                    None => self.slices.remove(&key).is_some(),
                }
            }
            Update::Deleted(slice) => self.slices.remove(&object_key(&slice.metadata)).is_some(),
        }
    }

    /// Puts the Services in force, once they have been listed.
    fn publish_services(&mut self) {
        if !self.services_listed {
            return; // what a watch said before the first list is not the whole picture
        }
        let list = services(&self.frontends, &self.slices);
        self.status
            .services
            .store(list.len() as u64, Ordering::Relaxed);
        self.registry.replace_services(source::KUBERNETES, list);
    }

    /// Puts the pods in force, once pods are listed and the namespaces too (or `force`).
    fn publish_pods(&mut self, force: bool) {
        if self.pods_listed_at.is_none() {
            return; // what a watch said before the first list is not the whole picture
        }
        if !self.published_pods && !self.namespaces_listed && !force {
            return; // identities include the namespace's labels: wait for them a little
        }
        let eps = endpoints(&self.pods, &self.namespaces);
        self.status.pods.store(eps.len() as u64, Ordering::Relaxed);
        if !self.published_pods {
            info!(pods = eps.len(), "pods of this node known from Kubernetes");
        }
        self.published_pods = true;
        self.registry.replace_source(source::KUBERNETES, eps);
    }

    /// Puts the nodes' addresses in force: this node's are `host`, the others' `remote-node`;
    /// and every node, with its agent's address, for the Peer service.
    fn publish_nodes(&mut self) {
        let mut remote: Vec<IpNet> = self
            .nodes
            .iter()
            .filter(|(name, _)| **name != self.node_name)
            .flat_map(|(_, ips)| ips.iter().map(|ip| IpNet::from(*ip)))
            .collect();
        remote.sort_unstable();
        remote.dedup();
        let own = self.nodes.get(&self.node_name).cloned().unwrap_or_default();
        let others = self.nodes.len() - usize::from(self.nodes.contains_key(&self.node_name));
        self.status
            .remote_nodes
            .store(others as u64, Ordering::Relaxed);
        self.registry.set_cluster_nodes(self.peers.clone());
        self.registry.replace_node_ips(source::KUBERNETES, own);
        self.registry
            .replace_remote_nodes(source::KUBERNETES, remote);
    }
}

/// Sleeps until `t`, or forever without one.
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
