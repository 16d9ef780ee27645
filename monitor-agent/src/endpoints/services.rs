//! Services: the names of the addresses clients use to reach a set of pods (a Kubernetes
//! Service's ClusterIP and ports), and the pods behind them (its backends).
//!
//! # What Hubble means by `source_service` / `destination_service`
//!
//! Hubble names a flow's end after a Service when that end's address *and port* is one of the
//! Service's **frontends**: Cilium's service getter looks the flow's (address, port) up in its
//! load balancer's frontend table, TCP first then UDP (`GetServiceByAddr`, called by the L3/L4
//! parser with the packet's source and then destination). A backend's address is not a frontend:
//! a packet to the pod behind the Service carries no service name. flowscope means the same:
//! [`ServiceIndex::frontend`] answers for frontends only, by address and port, whatever the
//! protocol (as Hubble's TCP-then-UDP lookup does).
//!
//! Frontends are a Service's ClusterIPs, its `externalIPs` and its load balancer's ingress
//! addresses, each with every port of the Service. NodePorts are not frontends here (they are a
//! node address and a port, and the node's address already names the node); headless Services
//! (`clusterIP: None`) have none, as on Cilium.
//!
//! # Backends
//!
//! Backends (a Service's EndpointSlices, or the endpoints file's `backends`) are what a
//! frontend is translated to. flowscope uses them for one thing: to know which flows may be the
//! far side of a translated connection, and join them to it through the kernel's conntrack (see
//! `decode::nat`): a connection to a ClusterIP that kube-proxy DNATs to a pod is seen with the
//! ClusterIP on the client's side and with the pod's address on the backend's side.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use super::source;

/// A Service's name: Hubble's `flow.Service`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An address and port, with the IANA protocol number (6 TCP, 17 UDP, 132 SCTP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceAddr {
    /// The address.
    pub ip: IpAddr,
    /// The port.
    pub port: u16,
    /// The protocol.
    pub proto: u8,
}

/// One Service as a source describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Its name.
    pub name: ServiceName,
    /// Where clients reach it (ClusterIPs with each port, external and load balancer addresses).
    pub frontends: Vec<ServiceAddr>,
    /// The pods' addresses and ports behind it.
    pub backends: Vec<ServiceAddr>,
}

/// Every source's Services, indexed for the decoder's lookups.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    /// (address, port) -> the Service whose frontend it is.
    frontends: HashMap<(IpAddr, u16), Arc<ServiceName>>,
    /// (address, port) of every backend.
    backends: HashSet<(IpAddr, u16)>,
    /// Distinct Services with at least one frontend or backend.
    count: usize,
}

impl ServiceIndex {
    /// Indexes `by_source` (source name -> its Services). When two Services claim one frontend,
    /// the source of higher [`source::priority`] wins (the file over Kubernetes); within a
    /// source, the TCP frontend wins over the others (Hubble looks TCP up first), then the
    /// Service that sorts first.
    pub(crate) fn build(by_source: &BTreeMap<String, Vec<Service>>) -> ServiceIndex {
        let mut order: Vec<(&String, &Vec<Service>)> = by_source.iter().collect();
        order.sort_by_key(|(name, _)| std::cmp::Reverse(source::priority(name)));
        let mut frontends: HashMap<(IpAddr, u16), (u8, bool, Arc<ServiceName>)> = HashMap::new();
        let mut backends = HashSet::new();
        let mut names = HashSet::new();
        for (rank, (_, services)) in order.iter().enumerate() {
            let rank = rank as u8;
            let mut sorted: Vec<&Service> = services.iter().collect();
            sorted.sort_by(|a, b| a.name.cmp(&b.name));
            for svc in sorted {
                let name = Arc::new(svc.name.clone());
                if !svc.frontends.is_empty() || !svc.backends.is_empty() {
                    names.insert(svc.name.clone());
                }
                for fe in &svc.frontends {
                    let key = (fe.ip.to_canonical(), fe.port);
                    let tcp = fe.proto == 6;
                    let better = match frontends.get(&key) {
                        None => true,
                        // Same source: TCP beats the rest; a higher-priority source always wins.
                        Some((r, was_tcp, _)) => *r == rank && tcp && !was_tcp,
                    };
                    if better {
                        frontends.insert(key, (rank, tcp, name.clone()));
                    }
                }
                for be in &svc.backends {
                    backends.insert((be.ip.to_canonical(), be.port));
                }
            }
        }
        ServiceIndex {
            frontends: frontends.into_iter().map(|(k, (_, _, n))| (k, n)).collect(),
            backends,
            count: names.len(),
        }
    }

    /// The Service whose frontend `ip`:`port` is, as Hubble's `GetServiceByAddr`.
    pub fn frontend(&self, ip: IpAddr, port: u16) -> Option<&Arc<ServiceName>> {
        if self.frontends.is_empty() {
            return None;
        }
        self.frontends.get(&(ip.to_canonical(), port))
    }

    /// Whether `ip`:`port` is a backend of some Service.
    pub fn is_backend(&self, ip: IpAddr, port: u16) -> bool {
        !self.backends.is_empty() && self.backends.contains(&(ip.to_canonical(), port))
    }

    /// Whether no Service is known (the decoder then skips every service lookup).
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty() && self.backends.is_empty()
    }

    /// How many Services are known.
    pub fn len(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str, port: u16, proto: u8) -> ServiceAddr {
        ServiceAddr {
            ip: s.parse().unwrap(),
            port,
            proto,
        }
    }

    fn svc(ns: &str, name: &str, fe: &[ServiceAddr], be: &[ServiceAddr]) -> Service {
        Service {
            name: ServiceName {
                namespace: ns.into(),
                name: name.into(),
            },
            frontends: fe.to_vec(),
            backends: be.to_vec(),
        }
    }

    #[test]
    fn frontends_by_address_and_port_backends_apart() {
        let mut by = BTreeMap::new();
        by.insert(
            source::KUBERNETES.to_owned(),
            vec![
                svc(
                    "default",
                    "web",
                    &[addr("10.96.0.10", 80, 6), addr("10.96.0.10", 443, 6)],
                    &[addr("10.244.0.77", 8080, 6)],
                ),
                svc(
                    "kube-system",
                    "kube-dns",
                    &[addr("10.96.0.53", 53, 17), addr("10.96.0.53", 53, 6)],
                    &[],
                ),
            ],
        );
        let idx = ServiceIndex::build(&by);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            idx.frontend(ip("10.96.0.10"), 443).unwrap().to_string(),
            "default/web"
        );
        // Another port of the same address is no frontend; neither is a backend.
        assert!(idx.frontend(ip("10.96.0.10"), 8080).is_none());
        assert!(idx.frontend(ip("10.244.0.77"), 8080).is_none());
        assert!(idx.is_backend(ip("10.244.0.77"), 8080));
        assert!(!idx.is_backend(ip("10.244.0.77"), 80));
        assert_eq!(
            idx.frontend(ip("::ffff:10.96.0.53"), 53).unwrap().name,
            "kube-dns"
        );
        assert_eq!(idx.len(), 2);

        // The file wins a frontend Kubernetes also claims.
        by.insert(
            source::FILE.to_owned(),
            vec![svc("ops", "override", &[addr("10.96.0.10", 80, 6)], &[])],
        );
        let idx = ServiceIndex::build(&by);
        assert_eq!(
            idx.frontend(ip("10.96.0.10"), 80).unwrap().to_string(),
            "ops/override"
        );
        assert_eq!(
            idx.frontend(ip("10.96.0.10"), 443).unwrap().to_string(),
            "default/web"
        );
        assert!(ServiceIndex::build(&BTreeMap::new()).is_empty());
    }
}
