//! The registry: every source's endpoints, the node's addresses and the remote nodes, merged into
//! an immutable [`Snapshot`] that lookups read.
//!
//! Writers (a file reload, a discovery pass, the node's addresses changing) are rare: each one
//! rebuilds the whole snapshot under a mutex and swaps it in. Readers (every flow, twice) take a
//! read lock only long enough to probe a hash map and clone two `Arc`s; a batch of lookups can
//! take one [`Snapshot`] and skip even that.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use ipnet::IpNet;

use super::{
    Endpoint, Identity, reserved,
    services::{Service, ServiceIndex, ServiceName},
    source,
};

/// Thread-safe, cheap to clone: all clones share the same state.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    /// What the sources said, kept to rebuild the snapshot. Also serialises writers.
    state: Mutex<State>,
    /// The merged view that lookups read.
    current: RwLock<Arc<Snapshot>>,
    /// The cluster's nodes (Kubernetes' Node list): name -> the address their agent is reached
    /// at, for the Peer service. Empty without a source that knows them.
    cluster_nodes: tokio::sync::watch::Sender<Arc<BTreeMap<String, IpAddr>>>,
}

#[derive(Default)]
struct State {
    node_ips: Vec<IpAddr>,
    /// More of the node's own addresses, by source (the Kubernetes Node object's), kept apart
    /// from `node_ips` which the agent replaces from its interfaces at every rescan.
    source_node_ips: BTreeMap<String, Vec<IpAddr>>,
    endpoints: BTreeMap<String, Vec<Arc<Endpoint>>>,
    remote_nodes: BTreeMap<String, Vec<IpNet>>,
    /// Services by source.
    services: BTreeMap<String, Vec<Service>>,
    /// Their index, rebuilt only when they change (endpoints change more often).
    service_index: Arc<ServiceIndex>,
}

/// An immutable, merged view of the registry at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Address -> (endpoint, its labels as a shared slice).
    /// Looked up for both ends of every event: foldhash, not SipHash.
    by_ip: foldhash::HashMap<IpAddr, (Arc<Endpoint>, Arc<[String]>)>,
    node_ips: foldhash::HashSet<IpAddr>,
    /// Remote nodes given as single addresses.
    remote_addrs: foldhash::HashSet<IpAddr>,
    /// Remote nodes given as wider CIDRs (few: a linear scan).
    remote_nets: Vec<IpNet>,
    endpoints: Vec<Arc<Endpoint>>,
    namespaces: Vec<String>,
    services: Arc<ServiceIndex>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("Registry")
            .field("endpoints", &s.endpoints.len())
            .field("addresses", &s.by_ip.len())
            .field("node_ips", &s.node_ips.len())
            .field(
                "remote_nodes",
                &(s.remote_addrs.len() + s.remote_nets.len()),
            )
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(Vec::new(), Vec::new())
    }
}

impl Registry {
    /// A registry that knows the node's own addresses and the remote nodes of the configuration
    /// (kept as source [`source::CONFIG`]); no endpoints yet.
    pub fn new(node_ips: Vec<IpAddr>, remote_nodes: Vec<IpNet>) -> Self {
        let mut state = State {
            node_ips,
            ..State::default()
        };
        if !remote_nodes.is_empty() {
            state
                .remote_nodes
                .insert(source::CONFIG.to_owned(), remote_nodes);
        }
        let snap = Arc::new(Snapshot::build(&state));
        Registry {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                current: RwLock::new(snap),
                cluster_nodes: tokio::sync::watch::Sender::new(Arc::default()),
            }),
        }
    }

    /// Puts in force the cluster's nodes and their addresses (Kubernetes' Node list); the
    /// Peer service's streams follow.
    pub fn set_cluster_nodes(&self, nodes: BTreeMap<String, IpAddr>) {
        self.shared.cluster_nodes.send_if_modified(|current| {
            if **current == nodes {
                return false;
            }
            *current = Arc::new(nodes);
            true
        });
    }

    /// Follows the cluster's nodes (see [`Registry::set_cluster_nodes`]).
    pub fn cluster_nodes(&self) -> tokio::sync::watch::Receiver<Arc<BTreeMap<String, IpAddr>>> {
        self.shared.cluster_nodes.subscribe()
    }

    /// Replaces the node's own addresses (the agent refreshes them from its interfaces).
    pub fn set_node_ips(&self, ips: Vec<IpAddr>) {
        self.update(|s| {
            if s.node_ips == ips {
                return false;
            }
            s.node_ips = ips;
            true
        });
    }

    /// Replaces the addresses of this node that `source` knows besides its interfaces' (the
    /// Kubernetes Node object's InternalIP and ExternalIP); they resolve to `host` too. An empty
    /// list removes the source's.
    pub fn replace_node_ips(&self, source: &str, ips: Vec<IpAddr>) {
        self.update(|s| {
            if s.source_node_ips
                .get(source)
                .map_or(ips.is_empty(), |old| *old == ips)
            {
                return false;
            }
            if ips.is_empty() {
                s.source_node_ips.remove(source);
            } else {
                s.source_node_ips.insert(source.to_owned(), ips);
            }
            true
        });
    }

    /// Replaces everything `source` said about endpoints (an empty list removes the source).
    /// When two sources claim one address, [`source::priority`] decides; see the module docs.
    /// Replacing a source with what it already holds changes nothing (the agent rediscovers
    /// endpoints at every interface rescan).
    pub fn replace_source(&self, source: &str, endpoints: Vec<Endpoint>) {
        self.update(|s| {
            let same = match s.endpoints.get(source) {
                Some(old) => {
                    old.len() == endpoints.len()
                        && old.iter().zip(&endpoints).all(|(a, b)| **a == *b)
                }
                None => endpoints.is_empty(),
            };
            if same {
                return false;
            }
            if endpoints.is_empty() {
                s.endpoints.remove(source);
            } else {
                s.endpoints.insert(
                    source.to_owned(),
                    endpoints.into_iter().map(Arc::new).collect(),
                );
            }
            true
        });
    }

    /// Replaces the remote-node addresses and CIDRs that `source` knows (the file's
    /// `remote_nodes`, later the Kubernetes nodes); all sources' lists are combined.
    pub fn replace_remote_nodes(&self, source: &str, nets: Vec<IpNet>) {
        self.update(|s| {
            if s.remote_nodes
                .get(source)
                .map_or(nets.is_empty(), |old| *old == nets)
            {
                return false;
            }
            if nets.is_empty() {
                s.remote_nodes.remove(source);
            } else {
                s.remote_nodes.insert(source.to_owned(), nets);
            }
            true
        });
    }

    /// Replaces the Services `source` knows (an empty list removes the source's); see
    /// [`super::services`] for what their frontends and backends are used for.
    pub fn replace_services(&self, source: &str, services: Vec<Service>) {
        self.update(|s| {
            if s.services
                .get(source)
                .map_or(services.is_empty(), |old| *old == services)
            {
                return false;
            }
            if services.is_empty() {
                s.services.remove(source);
            } else {
                s.services.insert(source.to_owned(), services);
            }
            s.service_index = Arc::new(ServiceIndex::build(&s.services));
            true
        });
    }

    /// The Service whose frontend `ip`:`port` is (Hubble's `GetServiceByAddr`).
    pub fn service(&self, ip: IpAddr, port: u16) -> Option<Arc<ServiceName>> {
        self.snapshot().services.frontend(ip, port).cloned()
    }

    /// Applies `change` to the sources' state and, if it says something changed, publishes a new
    /// snapshot.
    fn update(&self, change: impl FnOnce(&mut State) -> bool) {
        // A panic while holding either lock cannot leave a half-made state behind (the snapshot
        // is swapped whole), so a poisoned lock is still good to use.
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !change(&mut state) {
            return;
        }
        let snap = Arc::new(Snapshot::build(&state));
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = snap;
    }

    /// Puts an endpoints file's contents in force (see [`super::file::apply`]).
    pub fn set_file(&self, contents: super::file::FileContents) {
        super::file::apply(self, contents);
    }

    /// The current merged view: for many lookups in a row, or a consistent listing.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What `ip` is: `host`, an endpoint's identity, `remote-node` or `world` (module docs).
    /// Allocates nothing.
    pub fn lookup(&self, ip: IpAddr) -> Identity {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .lookup(ip)
    }

    /// Every endpoint, merged across sources, sorted by namespace, pod, then ID.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.snapshot().endpoints.clone()
    }

    /// The namespaces that have at least one endpoint, sorted (for `GetNamespaces`).
    pub fn namespaces(&self) -> Vec<String> {
        self.snapshot().namespaces.clone()
    }
}

/// A source's endpoint while merging.
struct Slot {
    ep: Arc<Endpoint>,
    /// Addresses folded in from discovered endpoints.
    extra_ips: Vec<IpAddr>,
    ifname: Option<String>,
    id: u32,
    changed: bool,
}

impl Snapshot {
    fn build(state: &State) -> Snapshot {
        // Sources by decreasing priority (then by name, so that the result is deterministic).
        let mut order: Vec<(&String, &Vec<Arc<Endpoint>>)> = state.endpoints.iter().collect();
        order.sort_by(|a, b| {
            (Reverse(source::priority(a.0)), a.0).cmp(&(Reverse(source::priority(b.0)), b.0))
        });

        let mut slots: Vec<Slot> = Vec::new();
        let mut owner: HashMap<IpAddr, usize> = HashMap::new();
        let mut by_ifname: HashMap<String, usize> = HashMap::new();
        for (_, eps) in order {
            for ep in eps {
                if ep.pod_name.is_empty() {
                    // An anonymous endpoint (discovery) sharing an address or a veth with a
                    // named one already placed is the same pod: fold it in.
                    let target = ep
                        .ips
                        .iter()
                        .find_map(|ip| owner.get(&ip.to_canonical()).copied())
                        .or_else(|| ep.ifname.as_ref().and_then(|n| by_ifname.get(n).copied()))
                        .filter(|&t| !slots[t].ep.pod_name.is_empty());
                    if let Some(t) = target {
                        for ip in &ep.ips {
                            let ip = ip.to_canonical();
                            if let std::collections::hash_map::Entry::Vacant(v) = owner.entry(ip) {
                                v.insert(t);
                                slots[t].extra_ips.push(ip);
                                slots[t].changed = true;
                            }
                        }
                        if slots[t].ifname.is_none()
                            && let Some(n) = &ep.ifname
                        {
                            slots[t].ifname = Some(n.clone());
                            by_ifname.entry(n.clone()).or_insert(t);
                            slots[t].changed = true;
                        }
                        if slots[t].id == 0 && ep.id != 0 {
                            slots[t].id = ep.id;
                            slots[t].changed = true;
                        }
                        continue;
                    }
                }
                // Otherwise the endpoint stands on its own; each of its addresses goes to it
                // unless a higher-priority endpoint claimed it first.
                let idx = slots.len();
                for ip in &ep.ips {
                    owner.entry(ip.to_canonical()).or_insert(idx);
                }
                if let Some(n) = &ep.ifname {
                    by_ifname.entry(n.clone()).or_insert(idx);
                }
                slots.push(Slot {
                    ep: ep.clone(),
                    extra_ips: Vec::new(),
                    ifname: ep.ifname.clone(),
                    id: ep.id,
                    changed: false,
                });
            }
        }

        let merged: Vec<(Arc<Endpoint>, Arc<[String]>)> = slots
            .into_iter()
            .map(|slot| {
                let ep = if slot.changed {
                    let mut e = (*slot.ep).clone();
                    e.ips.extend(slot.extra_ips);
                    e.ifname = slot.ifname;
                    e.id = slot.id;
                    Arc::new(e)
                } else {
                    slot.ep
                };
                let labels: Arc<[String]> = ep.labels.as_slice().into();
                (ep, labels)
            })
            .collect();
        let by_ip = owner
            .into_iter()
            .map(|(ip, idx)| (ip, merged[idx].clone()))
            .collect();

        let mut endpoints: Vec<Arc<Endpoint>> = merged.into_iter().map(|(ep, _)| ep).collect();
        endpoints.sort_by(|a, b| {
            (&a.namespace, &a.pod_name, a.id, &a.ifname).cmp(&(
                &b.namespace,
                &b.pod_name,
                b.id,
                &b.ifname,
            ))
        });
        let mut namespaces: Vec<String> = endpoints
            .iter()
            .filter(|e| !e.namespace.is_empty())
            .map(|e| e.namespace.clone())
            .collect();
        namespaces.dedup(); // sorted by namespace above

        let mut remote_addrs = foldhash::HashSet::default();
        let mut remote_nets = Vec::new();
        for net in state.remote_nodes.values().flatten() {
            let net = net.trunc();
            if net.prefix_len() == net.max_prefix_len() {
                remote_addrs.insert(net.addr().to_canonical());
            } else if !remote_nets.contains(&net) {
                remote_nets.push(net);
            }
        }

        Snapshot {
            by_ip,
            node_ips: state
                .node_ips
                .iter()
                .chain(state.source_node_ips.values().flatten())
                .map(|ip| ip.to_canonical())
                .collect(),
            remote_addrs,
            remote_nets,
            endpoints,
            namespaces,
            services: state.service_index.clone(),
        }
    }

    /// The Services known, indexed by frontend and backend.
    pub fn services(&self) -> &ServiceIndex {
        &self.services
    }

    /// What `ip` is (see [`Registry::lookup`]). Allocates nothing.
    pub fn lookup(&self, ip: IpAddr) -> Identity {
        let ip = ip.to_canonical();
        if self.node_ips.contains(&ip) {
            return Identity::reserved(reserved::HOST);
        }
        if let Some((ep, labels)) = self.by_ip.get(&ip) {
            return Identity {
                identity: ep.identity,
                labels: labels.clone(),
                endpoint: Some(ep.clone()),
            };
        }
        if self.remote_addrs.contains(&ip) || self.remote_nets.iter().any(|n| n.contains(&ip)) {
            return Identity::reserved(reserved::REMOTE_NODE);
        }
        Identity::reserved(reserved::WORLD)
    }

    /// The endpoint a source assigned `ip` to, if any, even when `ip` is also one of the node's
    /// addresses (for which [`Snapshot::lookup`] says `host`).
    pub fn endpoint(&self, ip: IpAddr) -> Option<&Arc<Endpoint>> {
        self.by_ip.get(&ip.to_canonical()).map(|(ep, _)| ep)
    }

    /// Every endpoint, merged across sources, sorted by namespace, pod, then ID.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The namespaces that have at least one endpoint, sorted.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::{IDENTITY_FIRST, discovery};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pod(ns: &str, name: &str, app: &str, ips: &[&str]) -> Endpoint {
        let mut e = Endpoint::pod(ns, name, [("app", app)]);
        e.ips = ips.iter().map(|s| ip(s)).collect();
        e
    }

    fn registry() -> Registry {
        Registry::new(
            vec![ip("198.51.100.10"), ip("10.244.0.201")],
            vec![
                "198.51.100.11/32".parse().unwrap(),
                "203.0.113.0/28".parse().unwrap(),
            ],
        )
    }

    #[test]
    fn reserved_lookups() {
        let r = registry();
        let host = r.lookup(ip("198.51.100.10"));
        assert_eq!(host.identity, reserved::HOST);
        assert_eq!(&*host.labels, ["reserved:host"]);
        assert!(host.endpoint.is_none());
        assert_eq!(r.lookup(ip("10.244.0.201")).identity, reserved::HOST);
        // An IPv4-mapped IPv6 address is the IPv4 address.
        assert_eq!(
            r.lookup(ip("::ffff:198.51.100.10")).identity,
            reserved::HOST
        );

        let remote = r.lookup(ip("198.51.100.11"));
        assert_eq!(remote.identity, reserved::REMOTE_NODE);
        assert_eq!(&*remote.labels, ["reserved:remote-node"]);
        assert_eq!(r.lookup(ip("203.0.113.15")).identity, reserved::REMOTE_NODE);
        assert_eq!(r.lookup(ip("203.0.113.16")).identity, reserved::WORLD);

        let world = r.lookup(ip("1.0.0.1"));
        assert_eq!(world.identity, reserved::WORLD);
        assert_eq!(&*world.labels, ["reserved:world"]);
        assert_eq!(r.lookup(ip("2606:4700::1111")).identity, reserved::WORLD);

        r.set_node_ips(vec![ip("198.51.100.20")]);
        assert_eq!(r.lookup(ip("198.51.100.10")).identity, reserved::WORLD);
        assert_eq!(r.lookup(ip("198.51.100.20")).identity, reserved::HOST);

        // Remote nodes from another source add to the configuration's.
        r.replace_remote_nodes(source::FILE, vec!["2001:db8::/64".parse().unwrap()]);
        assert_eq!(r.lookup(ip("2001:db8::7")).identity, reserved::REMOTE_NODE);
        assert_eq!(
            r.lookup(ip("198.51.100.11")).identity,
            reserved::REMOTE_NODE
        );
        r.replace_remote_nodes(source::FILE, vec![]);
        assert_eq!(r.lookup(ip("2001:db8::7")).identity, reserved::WORLD);

        // A source's addresses of this node (a Node object's ExternalIP, on no interface) are
        // host too, and survive the agent replacing the interfaces' addresses.
        r.replace_node_ips(source::KUBERNETES, vec![ip("203.0.113.99")]);
        r.set_node_ips(vec![ip("198.51.100.21")]);
        assert_eq!(r.lookup(ip("203.0.113.99")).identity, reserved::HOST);
        assert_eq!(r.lookup(ip("198.51.100.21")).identity, reserved::HOST);
        r.replace_node_ips(source::KUBERNETES, vec![]);
        assert_eq!(r.lookup(ip("203.0.113.99")).identity, reserved::WORLD);
    }

    #[test]
    fn endpoints_resolve_to_their_identity() {
        let r = registry();
        r.replace_source(
            source::FILE,
            vec![pod(
                "default",
                "pod-a",
                "web",
                &["10.244.0.213", "fd00:10:244::213"],
            )],
        );
        let a = r.lookup(ip("10.244.0.213"));
        assert!(a.identity >= IDENTITY_FIRST);
        assert_eq!(
            &*a.labels,
            ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"]
        );
        let ep = a.endpoint.as_ref().unwrap();
        assert_eq!(
            (ep.namespace.as_str(), ep.pod_name.as_str()),
            ("default", "pod-a")
        );
        let a6 = r.lookup(ip("fd00:10:244::213"));
        assert!(
            Arc::ptr_eq(ep, a6.endpoint.as_ref().unwrap()),
            "one endpoint, shared"
        );
        // The node's own address is host even if a source lists it (a host-network pod).
        r.replace_source(
            source::FILE,
            vec![pod("kube-system", "proxy", "p", &["198.51.100.10"])],
        );
        assert_eq!(r.lookup(ip("198.51.100.10")).identity, reserved::HOST);
        // An endpoint inside a remote-node CIDR is the endpoint.
        r.replace_source(
            source::FILE,
            vec![pod("default", "x", "x", &["203.0.113.5"])],
        );
        assert!(r.lookup(ip("203.0.113.5")).endpoint.is_some());
    }

    #[test]
    fn lookups_share_instead_of_allocating() {
        let r = registry();
        r.replace_source(
            source::FILE,
            vec![pod("default", "pod-a", "web", &["10.244.0.213"])],
        );
        let (a, b) = (r.lookup(ip("10.244.0.213")), r.lookup(ip("10.244.0.213")));
        assert!(Arc::ptr_eq(&a.labels, &b.labels));
        let (w1, w2) = (r.lookup(ip("1.0.0.1")), r.lookup(ip("8.8.8.8")));
        assert!(Arc::ptr_eq(&w1.labels, &w2.labels));
    }

    #[test]
    fn file_beats_kubernetes_beats_discovery() {
        let r = registry();
        r.replace_source(
            source::KUBERNETES,
            vec![pod("prod", "k", "kube", &["10.0.0.1", "10.0.0.2"])],
        );
        r.replace_source(
            source::FILE,
            vec![pod("default", "f", "file", &["10.0.0.1"])],
        );
        // The file wins the shared address, Kubernetes keeps the other one; the order in which
        // sources were replaced does not matter.
        assert_eq!(r.lookup(ip("10.0.0.1")).endpoint.unwrap().pod_name, "f");
        assert_eq!(r.lookup(ip("10.0.0.2")).endpoint.unwrap().pod_name, "k");
        // An unknown source ranks between Kubernetes and discovery.
        r.replace_source("other", vec![pod("o", "o", "o", &["10.0.0.2", "10.0.0.3"])]);
        assert_eq!(r.lookup(ip("10.0.0.2")).endpoint.unwrap().pod_name, "k");
        assert_eq!(r.lookup(ip("10.0.0.3")).endpoint.unwrap().pod_name, "o");
        // Removing a source gives its addresses back to the others.
        r.replace_source(source::FILE, vec![]);
        assert_eq!(r.lookup(ip("10.0.0.1")).endpoint.unwrap().pod_name, "k");
        assert_eq!(r.endpoints().len(), 2);
    }

    #[test]
    fn discovery_fills_gaps_only() {
        let r = registry();
        let mut a = pod("default", "pod-a", "web", &["10.244.0.213"]);
        a.id = 762;
        let b = pod("default", "pod-b", "db", &["10.244.0.77"]);
        r.replace_source(source::FILE, vec![a, b]);
        r.replace_source(
            source::DISCOVERY,
            vec![
                // pod-a's veth also routes its IPv6 address: folded into pod-a.
                discovery::unmanaged(
                    7,
                    "lxcf4cd39e34601",
                    vec![ip("10.244.0.213"), ip("fd00:10:244::213")],
                ),
                // pod-b's veth: folded, and pod-b (no ID in the file) takes the ifindex.
                discovery::unmanaged(9, "lxc2b8e1f0a9c77", vec![ip("10.244.0.77")]),
                // A pod nobody describes.
                discovery::unmanaged(11, "lxc0000", vec![ip("10.244.0.99")]),
            ],
        );
        let a6 = r.lookup(ip("fd00:10:244::213"));
        let ep = a6.endpoint.unwrap();
        assert_eq!(ep.pod_name, "pod-a");
        assert_eq!(ep.id, 762, "the file's ID stays");
        assert_eq!(ep.ifname.as_deref(), Some("lxcf4cd39e34601"));
        assert_eq!(ep.ips, [ip("10.244.0.213"), ip("fd00:10:244::213")]);
        let b = r.lookup(ip("10.244.0.77")).endpoint.unwrap();
        assert_eq!((b.pod_name.as_str(), b.id), ("pod-b", 9));

        let u = r.lookup(ip("10.244.0.99"));
        assert_eq!(u.identity, reserved::UNMANAGED);
        assert_eq!(&*u.labels, ["reserved:unmanaged"]);
        let ue = u.endpoint.unwrap();
        assert_eq!((ue.id, ue.ifname.as_deref()), (11, Some("lxc0000")));
        assert!(ue.pod_name.is_empty() && ue.namespace.is_empty());

        assert_eq!(r.endpoints().len(), 3);
        assert_eq!(r.namespaces(), ["default"]);
        // The file changes: pod-b goes away, its veth is still there: unmanaged again.
        r.replace_source(
            source::FILE,
            vec![pod("default", "pod-a", "web", &["10.244.0.213"])],
        );
        assert_eq!(r.lookup(ip("10.244.0.77")).identity, reserved::UNMANAGED);
    }

    #[test]
    fn replacing_with_the_same_set_keeps_the_snapshot() {
        let r = registry();
        let set = || vec![discovery::unmanaged(5, "lxc5", vec![ip("10.0.0.9")])];
        r.replace_source(source::DISCOVERY, set());
        let before = r.snapshot();
        r.replace_source(source::DISCOVERY, set());
        r.set_node_ips(vec![ip("198.51.100.10"), ip("10.244.0.201")]);
        r.replace_remote_nodes(source::FILE, vec![]);
        assert!(
            Arc::ptr_eq(&before, &r.snapshot()),
            "nothing changed: no new snapshot"
        );
        r.replace_source(source::DISCOVERY, vec![]);
        assert!(!Arc::ptr_eq(&before, &r.snapshot()));
        assert!(r.endpoints().is_empty());
    }

    #[test]
    fn namespaces_are_sorted_and_unique() {
        let r = registry();
        assert!(r.namespaces().is_empty());
        r.replace_source(
            source::FILE,
            vec![
                pod("prod", "a", "a", &["10.0.0.1"]),
                pod("default", "b", "b", &["10.0.0.2"]),
                pod("prod", "c", "c", &[]),
            ],
        );
        r.replace_source(
            source::DISCOVERY,
            vec![discovery::unmanaged(5, "lxc5", vec![ip("10.0.0.9")])],
        );
        r.replace_source(
            source::KUBERNETES,
            vec![pod("kube-system", "d", "d", &["10.0.0.3"])],
        );
        assert_eq!(r.namespaces(), ["default", "kube-system", "prod"]);
        let names: Vec<String> = r.endpoints().iter().map(|e| e.display_name()).collect();
        assert_eq!(
            names,
            ["lxc5", "default/b", "kube-system/d", "prod/a", "prod/c"]
        );
    }

    #[test]
    fn clones_share_state_across_threads() {
        let r = registry();
        let r2 = r.clone();
        std::thread::spawn(move || {
            r2.replace_source(
                source::FILE,
                vec![pod("default", "pod-a", "web", &["10.244.0.213"])],
            )
        })
        .join()
        .unwrap();
        assert!(r.lookup(ip("10.244.0.213")).endpoint.is_some());
        assert!(format!("{r:?}").contains("endpoints: 1"));
    }
}
