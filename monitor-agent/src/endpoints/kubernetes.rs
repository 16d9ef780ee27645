//! The Kubernetes source (`"kubernetes"`): this node's pods, their namespaces and the cluster's
//! nodes, from the API server.
//!
//! # What it watches, and what it makes of it
//!
//! | object | selection | becomes |
//! |---|---|---|
//! | `Pod` | `fieldSelector=spec.nodeName=<node>` | one endpoint per pod with an address: namespace, name, labels, workload, IPv4 and IPv6 addresses ([`Registry::replace_source`]) |
//! | `Namespace` | all | the `io.cilium.k8s.namespace.labels.*` labels of its pods |
//! | `Node` | all | InternalIP and ExternalIP addresses: this node's are `host` ([`Registry::replace_node_ips`]), the others' `remote-node` ([`Registry::replace_remote_nodes`]) |
//! | `Service` | all | its frontends: ClusterIPs, external IPs and load balancer addresses, each with every port ([`Registry::replace_services`]); headless and `ExternalName` Services have none |
//! | `EndpointSlice` (`discovery.k8s.io/v1`) | all | the backends of its Service (label `kubernetes.io/service-name`): every address with every port, ready or not |
//!
//! Only `get`/`list`/`watch` on those five kinds are needed (see `deploy/kubernetes/base`).
//! Services and EndpointSlices of the whole cluster are watched: a pod here may reach any
//! Service, and a Service's backends may be anywhere. What they are used for:
//! [`crate::endpoints::services`].
//! Pods of other nodes are not watched (the choice: an agent watching every pod of a
//! large cluster costs the API server and the agent's memory); the agent of the node that hosts
//! a pod names it, and the relay merges both views.
//!
//! Pods left out: host-network pods (their address is the node's: `host`), pods that have
//! finished (`Succeeded`, `Failed`: the kubelet has released their address, which a new pod may
//! already have), pods without an address yet.
//!
//! ## Labels and identities
//!
//! Labels are Cilium's, in Hubble's form, so that flows read as Hubble's do:
//!
//! - each pod label `k: v` as `k8s:k=v`, except those Cilium leaves out of identities by
//!   default (`pod-template-hash`, `controller-revision-hash`, `statefulset.kubernetes.io/pod-name`,
//!   anything under `kubernetes.io`, `k8s.io`, …: [`identity_relevant`]), otherwise every
//!   rollout of a Deployment and every pod of a StatefulSet would get an identity of its own;
//! - `k8s:io.kubernetes.pod.namespace=<namespace>`;
//! - each label of the pod's namespace as `k8s:io.cilium.k8s.namespace.labels.<k>=<v>`;
//! - `k8s:io.cilium.k8s.policy.serviceaccount=<service account>`.
//!
//! The identity is [`identity_for_labels`](super::identity_for_labels) of that list, the function
//! the endpoints file uses, so every node computes the same number for the same pod. (A pod
//! described in the endpoints file gets the same identity only if the file lists the same labels,
//! e.g. `io.cilium.k8s.policy.serviceaccount: default`.) Cilium's `io.cilium.k8s.policy.cluster`
//! label is not added: flowscope has no cluster name.
//!
//! ## Workloads
//!
//! From the pod's controller (the owner reference with `controller: true`), without reading the
//! owners themselves, so that RBAC stays at pods, namespaces and nodes (the heuristic Cilium and
//! Istio use, [`workload_of`]):
//!
//! - `ReplicaSet` `web-5d9c7b8f4` and pod label `pod-template-hash: 5d9c7b8f4`: `Deployment web`
//!   (a ReplicaSet without that label, made by hand, stays a `ReplicaSet`);
//! - `Job` `backup-29012345`, a name ending in `-` and 8 to 10 digits (the scheduled minute the
//!   CronJob controller appends): `CronJob backup`; any other Job stays a `Job` (a Job created by
//!   hand with such a name would be taken for a CronJob's: the price of not reading Jobs);
//! - `StatefulSet`, `DaemonSet` and any other kind: as they are; a static pod (owned by its
//!   `Node`) has no workload.
//!
//! ## Keeping up with the API server
//!
//! Each kind is listed (paginated, 500 objects a page), then watched from the list's
//! `resourceVersion` with bookmarks. A watch that ends (the server's `timeoutSeconds`, a dropped
//! connection) resumes from the last version seen; a `410 Gone` (the version was compacted
//! away), as an error event or as the watch's answer, lists again and replaces that kind's
//! state whole, which also forgets objects deleted while the agent was not watching. Other
//! errors are retried with exponential backoff and jitter (0.5 s to 30 s by default).
//!
//! While the API server cannot be reached, nothing is removed: the last known pods and nodes
//! stay in force. The outage is logged once (`warn!`) when it starts and once (`info!`) when it
//! ends, and counted in the metrics of [`KubernetesStatus`] (`flowscope_kubernetes_api_up`,
//! `flowscope_kubernetes_api_errors_total`, `flowscope_kubernetes_relists_total`).
//!
//! ## Pod addresses are reused
//!
//! The source keeps pods by UID and rebuilds its whole endpoint list from that store after each
//! change, so the delete of an old pod removes that pod only: if a new pod already has the old
//! pod's address, the address stays the new pod's. When two pods claim an address at once (the
//! old one's delete has not arrived yet), a pod that is not terminating beats one that is, then
//! the more recently created one wins; the loser keeps its other addresses.
//!
//! ## Why our own list-then-watch loop rather than `kube::runtime::watcher`
//!
//! kube-runtime's watcher implements the same protocol, but it reports nothing when a watch is
//! re-established after an error (there is no event until an object changes), so "the API server
//! is back" could not be told apart from "still down"; our loop knows the outcome of each list
//! and watch request, which is what the health metric needs. The protocol is small (list with
//! `continue`, watch from a version, bookmarks, `410` to relist), the loop is about a hundred
//! lines tested against a fake API server, and leaving out kube-runtime spares a dozen crates.
//! kube-rs's client still does the configuration (in-cluster or kubeconfig), authentication,
//! TLS (rustls) and JSON decoding.
//!
//! # Building without it
//!
//! kube-rs and k8s-openapi take about 150 s of CPU time to build (debug; k8s-openapi alone 45 s).
//! They sit behind the `kubernetes` cargo feature, on by default: `cargo build
//! --no-default-features` builds an agent whose `--kubernetes` option says it was left out.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "kubernetes")]
mod convert;
#[cfg(feature = "kubernetes")]
mod listwatch;
#[cfg(feature = "kubernetes")]
mod source;

#[cfg(feature = "kubernetes")]
pub use convert::{identity_relevant, workload_of};

use super::Registry;

/// How the agent reaches the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesOptions {
    /// The name of this node's `Node` object (the DaemonSet passes `spec.nodeName` as
    /// `$NODE_NAME`): only pods scheduled here are watched.
    pub node_name: String,
    /// A kubeconfig file; without one, `$KUBECONFIG` or `~/.kube/config` if present, else the
    /// pod's service account (in-cluster configuration).
    pub kubeconfig: Option<PathBuf>,
}

/// How the source paces itself; the defaults suit a real API server, tests shorten them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchTuning {
    /// First pause after a failed request.
    pub min_backoff: Duration,
    /// Longest pause between retries (the pause doubles up to it, with jitter).
    pub max_backoff: Duration,
    /// `timeoutSeconds` of each watch request: the server ends the watch after it and the
    /// source resumes from the last version seen.
    pub watch_timeout: Duration,
    /// Objects per list page.
    pub page_size: u32,
    /// How long the first pods wait for the namespaces' labels (their identities include
    /// them) before they are published without.
    pub namespace_grace: Duration,
}

impl Default for WatchTuning {
    fn default() -> Self {
        WatchTuning {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(290),
            page_size: 500,
            namespace_grace: Duration::from_secs(5),
        }
    }
}

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What kube-rs said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Neither a kubeconfig nor an in-cluster service account was found.
    #[error(
        "no Kubernetes configuration: not in a pod (no service account), and no kubeconfig \
         ($KUBECONFIG, ~/.kube/config or --kubeconfig)"
    )]
    NoConfig {
        /// What kube-rs said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The client could not be built from the configuration (TLS material, proxy…).
    #[error("building the Kubernetes client")]
    Client {
        /// What kube-rs said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// This agent was built without the `kubernetes` feature.
    #[error("this monitor-agent was built without Kubernetes support (cargo feature `kubernetes`)")]
    NotBuilt,
}

/// The kinds the source watches: the label values of its metrics (a closed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// This node's pods.
    Pods = 0,
    /// All namespaces.
    Namespaces = 1,
    /// All nodes.
    Nodes = 2,
    /// All Services.
    Services = 3,
    /// All EndpointSlices.
    EndpointSlices = 4,
}

impl Resource {
    /// Every kind, in metric order.
    pub const ALL: [Resource; 5] = [
        Resource::Pods,
        Resource::Namespaces,
        Resource::Nodes,
        Resource::Services,
        Resource::EndpointSlices,
    ];

    /// The plural the API uses (`pods`): the metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Namespaces => "namespaces",
            Resource::Nodes => "nodes",
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
        }
    }
}

/// The source's health, shared with the metrics endpoint (as a [`Collector`]) and tests.
#[derive(Debug, Default)]
pub struct KubernetesStatus {
    per: [PerResource; 5],
    pods: AtomicU64,
    remote_nodes: AtomicU64,
    services: AtomicU64,
}

#[derive(Debug, Default)]
struct PerResource {
    /// The last list or watch request succeeded.
    up: AtomicBool,
    /// At least one list completed: the source's view of this kind is the API server's.
    synced: AtomicBool,
    errors: AtomicU64,
    relists: AtomicU64,
}

impl KubernetesStatus {
    fn of(&self, r: Resource) -> &PerResource {
        &self.per[r as usize]
    }

    /// Whether the last request for `r` succeeded.
    pub fn is_up(&self, r: Resource) -> bool {
        self.of(r).up.load(Ordering::Relaxed)
    }

    /// Whether the last request of every kind succeeded.
    pub fn all_up(&self) -> bool {
        Resource::ALL.iter().all(|&r| self.is_up(r))
    }

    /// Whether `r` has been listed at least once.
    pub fn is_synced(&self, r: Resource) -> bool {
        self.of(r).synced.load(Ordering::Relaxed)
    }

    /// Failed requests for `r` (lists, watches, broken watch streams, error events but 410).
    pub fn errors(&self, r: Resource) -> u64 {
        self.of(r).errors.load(Ordering::Relaxed)
    }

    /// Lists of `r` made again because the watch's version had expired (410 Gone).
    pub fn relists(&self, r: Resource) -> u64 {
        self.of(r).relists.load(Ordering::Relaxed)
    }

    /// Pods published as endpoints.
    pub fn pods(&self) -> u64 {
        self.pods.load(Ordering::Relaxed)
    }

    /// Other nodes known.
    pub fn remote_nodes(&self) -> u64 {
        self.remote_nodes.load(Ordering::Relaxed)
    }

    /// Services with a frontend known.
    pub fn services(&self) -> u64 {
        self.services.load(Ordering::Relaxed)
    }

    /// Records a successful request; true when `r` was down before (an outage ends).
    #[cfg_attr(
        not(feature = "kubernetes"),
        expect(dead_code, reason = "used by the source")
    )]
    fn set_up(&self, r: Resource) -> bool {
        !self.of(r).up.swap(true, Ordering::Relaxed)
    }

    /// Records a failed request; true when `r` was up before (an outage starts).
    #[cfg_attr(
        not(feature = "kubernetes"),
        expect(dead_code, reason = "used by the source")
    )]
    fn set_down(&self, r: Resource) -> bool {
        self.of(r).errors.fetch_add(1, Ordering::Relaxed);
        self.of(r).up.swap(false, Ordering::Relaxed)
    }
}

impl Collector for KubernetesStatus {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut up = encoder.encode_descriptor(
            "flowscope_kubernetes_api_up",
            "Whether the last list or watch request to the Kubernetes API server succeeded, by kind",
            None,
            MetricType::Gauge,
        )?;
        for r in Resource::ALL {
            ConstGauge::new(i64::from(self.is_up(r)))
                .encode(up.encode_family(&[("resource", r.as_str())])?)?;
        }
        let mut errors = encoder.encode_descriptor(
            "flowscope_kubernetes_api_errors",
            "Failed list and watch requests to the Kubernetes API server, by kind",
            None,
            MetricType::Counter,
        )?;
        for r in Resource::ALL {
            ConstCounter::new(self.errors(r))
                .encode(errors.encode_family(&[("resource", r.as_str())])?)?;
        }
        let mut relists = encoder.encode_descriptor(
            "flowscope_kubernetes_relists",
            "Lists made again because a watch's resource version expired (410 Gone), by kind",
            None,
            MetricType::Counter,
        )?;
        for r in Resource::ALL {
            ConstCounter::new(self.relists(r))
                .encode(relists.encode_family(&[("resource", r.as_str())])?)?;
        }
        ConstGauge::new(self.pods() as i64).encode(encoder.encode_descriptor(
            "flowscope_kubernetes_pods",
            "Pods of this node known from the Kubernetes API server, with an address",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(self.remote_nodes() as i64).encode(encoder.encode_descriptor(
            "flowscope_kubernetes_remote_nodes",
            "Other nodes known from the Kubernetes API server",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(self.services() as i64).encode(encoder.encode_descriptor(
            "flowscope_kubernetes_services",
            "Services with a frontend (ClusterIP, external or load balancer address) known from \
             the Kubernetes API server",
            None,
            MetricType::Gauge,
        )?)
    }
}

/// A client for the API server, made before the agent attaches anything (a bad kubeconfig
/// stops it first); [`Connection::watch`] starts the source.
pub struct Connection {
    #[cfg(feature = "kubernetes")]
    client: kube::Client,
    node_name: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// The running source: its health and its task.
#[derive(Debug)]
pub struct Watch {
    /// Health and counts, for metrics.
    pub status: std::sync::Arc<KubernetesStatus>,
    /// Ends when the cancellation token given to [`Connection::watch`] fires.
    pub task: JoinHandle<()>,
}

/// Reads the configuration (a kubeconfig, or the pod's service account) and builds a client.
/// Contacts nothing yet: an API server that is down does not stop the agent.
pub async fn connect(opts: &KubernetesOptions) -> Result<Connection, KubernetesError> {
    #[cfg(feature = "kubernetes")]
    {
        let client = source::client(opts.kubeconfig.as_deref()).await?;
        Ok(Connection::new(client, &opts.node_name))
    }
    #[cfg(not(feature = "kubernetes"))]
    {
        let _ = opts;
        Err(KubernetesError::NotBuilt)
    }
}

impl Connection {
    /// A connection through `client` (tests point one at a fake API server).
    #[cfg(feature = "kubernetes")]
    pub fn new(client: kube::Client, node_name: &str) -> Self {
        Connection {
            client,
            node_name: node_name.to_owned(),
        }
    }

    /// Starts the source with the default [`WatchTuning`]: lists and watches pods, namespaces,
    /// nodes, Services and EndpointSlices, and keeps `registry` in step, until `cancel` fires.
    pub fn watch(self, registry: Registry, cancel: CancellationToken) -> Watch {
        self.watch_with(registry, WatchTuning::default(), cancel)
    }

    /// [`Connection::watch`] with other timings.
    pub fn watch_with(
        self,
        registry: Registry,
        tuning: WatchTuning,
        cancel: CancellationToken,
    ) -> Watch {
        let status = std::sync::Arc::new(KubernetesStatus::default());
        #[cfg(feature = "kubernetes")]
        let task = source::spawn(
            self.client,
            self.node_name,
            registry,
            tuning,
            status.clone(),
            cancel,
        );
        #[cfg(not(feature = "kubernetes"))]
        let task = {
            // A Connection cannot be made without the feature: connect() refuses.
            let _ = (registry, tuning);
            tokio::spawn(async move { cancel.cancelled().await })
        };
        Watch { status, task }
    }
}
