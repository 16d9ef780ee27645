//! Endpoint metadata and identities: what an IP address is (a pod, this node, another node,
//! the world), as Hubble's `flow.Endpoint` says it.
//!
//! # Sources
//!
//! Endpoints (pods) come from *sources*; each one owns its set and replaces it whole with
//! [`Registry::replace_source`]:
//!
//! - [`file`](mod@file) (`"file"`): a YAML file of pods (namespace, name, addresses, labels,
//!   workload) and of other nodes' addresses, reloaded when it changes;
//! - [`discovery`] (`"discovery"`): the addresses the node routes to each endpoint veth the agent
//!   observes, for pods no other source describes (shown as `reserved:unmanaged`);
//! - [`kubernetes`] (`"kubernetes"`): this node's pods, their namespaces and the cluster's nodes
//!   from the API server (list, then watch), with Cilium's labels; it also sets the `host` and
//!   `remote-node` addresses ([`Registry::replace_node_ips`], [`Registry::replace_remote_nodes`]).
//!   Nothing else here depends on where endpoints come from.
//!
//! Services (a ClusterIP's name, its backends) come from the same sources, the file's `services`
//! and Kubernetes' Services and EndpointSlices, each replacing its set whole with
//! [`Registry::replace_services`]; [`services`] says what they are used for.
//!
//! When sources disagree about an address, the one with the higher [`source::priority`] wins:
//! the file (an operator's explicit word) over Kubernetes over discovery. Discovery only fills
//! gaps: a discovered endpoint that shares an address or its veth with a named pod is folded into
//! that pod (adding the addresses and the interface name it found) rather than shown apart.
//!
//! # Identities
//!
//! An address resolves ([`Registry::lookup`]), in this order, to:
//! 1. `host` (1) if it is one of the node's own addresses ([`Registry::set_node_ips`]);
//! 2. the endpoint's identity if a source knows it: [`identity_for_labels`] of its labels, a
//!    pure function of the sorted labels, in 256..2^24, the same on every node;
//! 3. `remote-node` (6) if it is in a remote-node address or CIDR (configuration, the file);
//! 4. `world` (2) otherwise, with the label `reserved:world`.
//!
//! The reserved numbers, names and labels are in [`reserved`].

pub mod discovery;
pub mod file;
mod identity;
pub mod kubernetes;
pub mod labels;
mod registry;
pub mod reserved;
pub mod services;
#[cfg(test)]
mod testutil;

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;

pub use identity::{IDENTITY_FIRST, IDENTITY_LAST, identity_for_labels, is_reserved};
pub use registry::{Registry, Snapshot};
pub use services::{Service, ServiceAddr, ServiceIndex, ServiceName};

/// Names and precedence of the endpoint sources.
pub mod source {
    /// The endpoints file ([`super::file`]).
    pub const FILE: &str = "file";
    /// The Kubernetes API ([`super::kubernetes`]).
    pub const KUBERNETES: &str = "kubernetes";
    /// Discovery of unknown veth peers ([`super::discovery`]).
    pub const DISCOVERY: &str = "discovery";
    /// The agent's configuration (remote-node addresses given to [`super::Registry::new`]).
    pub const CONFIG: &str = "config";

    /// Higher wins when two sources claim the same address: the file (an operator's explicit
    /// statement) over Kubernetes over any other source over discovery (a guess).
    pub fn priority(source: &str) -> u8 {
        match source {
            FILE => 3,
            KUBERNETES => 2,
            DISCOVERY => 0,
            _ => 1,
        }
    }
}

/// A remote-node entry that is neither an address nor a CIDR.
#[derive(Debug, thiserror::Error)]
#[error("`{text}` is neither an IP address nor a CIDR")]
pub struct CidrError {
    /// What was given.
    pub text: String,
}

/// Parses an address (as a /32 or /128) or a CIDR (host bits dropped: `10.0.0.5/24` is
/// `10.0.0.0/24`), for remote-node lists.
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    text.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| CidrError {
            text: text.to_owned(),
        })
}

/// [`parse_cidr`] on each entry (the agent's `--remote-node` options); the first bad one is the
/// error.
pub fn parse_cidrs<S: AsRef<str>>(entries: &[S]) -> Result<Vec<IpNet>, CidrError> {
    entries.iter().map(|e| parse_cidr(e.as_ref())).collect()
}

/// The workload that owns a pod (Hubble's `flow.Workload`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Workload {
    /// Its name (`web`).
    pub name: String,
    /// Its kind (`Deployment`, `StatefulSet`, `DaemonSet`…).
    pub kind: String,
}

/// One endpoint (a pod).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// Endpoint ID: from the source when it has one (the file's `id`), else the host-side ifindex
    /// of its veth when known, else 0 (unknown; Hubble omits it).
    pub id: u32,
    /// Its identity: [`identity_for_labels`]`(&labels)`.
    pub identity: u32,
    /// Kubernetes namespace; empty for a discovered endpoint.
    pub namespace: String,
    /// Pod name; empty for a discovered endpoint.
    pub pod_name: String,
    /// Labels in Hubble's form, sorted: `k8s:app=web`, `k8s:io.kubernetes.pod.namespace=default`.
    pub labels: Vec<String>,
    /// The workloads that own the pod.
    pub workloads: Vec<Workload>,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// The host-side veth, when known.
    pub ifname: Option<String>,
}

impl Endpoint {
    /// A pod: labels derived from `pairs` the way Cilium does ([`labels::pod_labels`]), identity
    /// computed from them; no addresses, workloads, ID or interface yet.
    pub fn pod<K: AsRef<str>, V: AsRef<str>>(
        namespace: &str,
        pod_name: &str,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let labels = labels::pod_labels(namespace, pairs);
        Endpoint {
            identity: identity_for_labels(&labels),
            namespace: namespace.to_owned(),
            pod_name: pod_name.to_owned(),
            labels,
            ..Endpoint::default()
        }
    }

    /// `namespace/pod`, or the interface name for an endpoint without a pod name.
    pub fn display_name(&self) -> String {
        if self.pod_name.is_empty() {
            self.ifname.clone().unwrap_or_default()
        } else {
            format!("{}/{}", self.namespace, self.pod_name)
        }
    }
}

/// What an address is: its identity, the labels Hubble shows for it, and the endpoint when it is
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The numeric identity (reserved, or computed from the endpoint's labels).
    pub identity: u32,
    /// Its labels (`["reserved:world"]`, or the endpoint's).
    pub labels: Arc<[String]>,
    /// The endpoint, when the address belongs to one.
    pub endpoint: Option<Arc<Endpoint>>,
}

impl Identity {
    /// A reserved identity, without endpoint (no allocation: the labels are shared).
    pub fn reserved(id: u32) -> Self {
        Identity {
            identity: id,
            labels: reserved::shared_labels(id),
            endpoint: None,
        }
    }
}
