//! From API objects to endpoints: what is kept of a pod, its labels in Hubble's form, its
//! workload, the addresses of nodes, the endpoint list with each address given to one pod, and
//! Services with their frontends and (from EndpointSlices) backends.
//! Pure functions: no I/O, no clock.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use k8s_openapi::{
    api::{
        core::v1::{Node, Pod, Service as K8sService},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
};

use crate::endpoints::{
    Endpoint, Service, ServiceAddr, ServiceName, Workload, identity_for_labels,
    labels::{NAMESPACE_LABEL, pod_labels},
};

/// Prefix of the labels that carry the pod's namespace's labels (Cilium's).
pub(crate) const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// The label that carries the pod's service account (Cilium's).
pub(crate) const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";

/// Whether a label key (without the `k8s:` source) goes into identities, by Cilium's default
/// rules (`pkg/labelsfilter`): a key is left out when it starts with one of the ignored
/// prefixes, unless an included prefix matches more of it.
///
/// Included: `io.kubernetes.pod.namespace`, `io.cilium.k8s.namespace.labels`,
/// `app.kubernetes.io`, `io.cilium.k8s.policy.cluster`. Ignored: `io.kubernetes`,
/// `kubernetes.io`, `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index`,
/// `batch.kubernetes.io/job-completion-index`, anything containing `beta.kubernetes.io`,
/// `k8s.io`, `pod-template-generation`, `pod-template-hash`, `controller-revision-hash`,
/// `annotation…`, `etcd_node`. Everything else is kept.
pub fn identity_relevant(key: &str) -> bool {
    const INCLUDE: [&str; 4] = [
        NAMESPACE_LABEL,
        "io.cilium.k8s.namespace.labels",
        "app.kubernetes.io",
        "io.cilium.k8s.policy.cluster",
    ];
    const IGNORE: [&str; 10] = [
        "io.kubernetes",
        "kubernetes.io",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/job-completion-index",
        "k8s.io",
        "pod-template-generation",
        "pod-template-hash",
        "controller-revision-hash",
        "etcd_node",
    ];
    const BETA: &str = "beta.kubernetes.io";
    // Cilium's rules are regular expressions anchored at the key's start; the length each one
    // matches decides between an include and an ignore. Two are not plain prefixes:
    // `annotation.*` matches the whole key, `.*beta\.kubernetes\.io` up to the last
    // `beta.kubernetes.io`.
    let included = INCLUDE
        .iter()
        .filter(|p| key.starts_with(**p))
        .map(|p| p.len())
        .max()
        .unwrap_or(0);
    let ignored = IGNORE
        .iter()
        .filter(|p| key.starts_with(**p))
        .map(|p| p.len())
        .chain(key.starts_with("annotation").then_some(key.len()))
        .chain(key.rfind(BETA).map(|at| at + BETA.len()))
        .min();
    match ignored {
        None => true,
        Some(ignored) => included > ignored,
    }
}

/// The workload that owns a pod, from its controller reference and labels (see the module
/// docs of [`super`]); `None` for a pod without a controller and for a static pod.
pub fn workload_of(
    owners: &[OwnerReference],
    pod_labels: &BTreeMap<String, String>,
) -> Option<Workload> {
    let owner = owners.iter().find(|o| o.controller == Some(true))?;
    let (kind, name) = (owner.kind.as_str(), owner.name.as_str());
    let workload = |kind: &str, name: &str| Workload {
        name: name.to_owned(),
        kind: kind.to_owned(),
    };
    Some(match kind {
        // A static (mirror) pod is "owned" by its Node: not a workload.
        "Node" => return None,
        "ReplicaSet" => {
            // The Deployment controller names its ReplicaSets `<deployment>-<pod-template-hash>`
            // and puts the hash on their pods.
            let deployment = pod_labels
                .get("pod-template-hash")
                .filter(|h| !h.is_empty())
                .and_then(|h| name.strip_suffix(h.as_str()))
                .and_then(|n| n.strip_suffix('-'))
                .filter(|n| !n.is_empty());
            match deployment {
                Some(d) => workload("Deployment", d),
                None => workload(kind, name),
            }
        }
        "Job" => match cronjob_of(name) {
            Some(c) => workload("CronJob", c),
            None => workload(kind, name),
        },
        _ => workload(kind, name),
    })
}

/// The CronJob of a Job named `<cronjob>-<8 to 10 digits>` (the CronJob controller appends the
/// scheduled time in minutes since the epoch).
fn cronjob_of(job: &str) -> Option<&str> {
    let (prefix, digits) = job.rsplit_once('-')?;
    ((8..=10).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(prefix)
        .filter(|p| !p.is_empty())
}

/// What the source keeps of a pod: only what its endpoint is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodInfo {
    pub(crate) uid: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// Its own labels, unfiltered.
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) service_account: String,
    pub(crate) workload: Option<Workload>,
    /// IPv4 and IPv6, in the order the API gives them, without duplicates.
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) created: Option<Time>,
    /// It has a deletion timestamp: it is shutting down.
    pub(crate) terminating: bool,
}

impl PodInfo {
    /// What to keep of `pod`; `None` when it should not be an endpoint (see the module docs of
    /// [`super`]): no UID or name, host network, finished, or no address yet.
    pub(crate) fn from_pod(pod: &Pod) -> Option<PodInfo> {
        let meta = &pod.metadata;
        let (uid, name) = (meta.uid.clone()?, meta.name.clone()?);
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network) == Some(true) {
            return None;
        }
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
        for text in listed.chain(status.pod_ip.as_deref()) {
            // An address the API server accepted always parses; skip one that does not
            // rather than drop the pod.
            if let Ok(ip) = text.trim().parse::<IpAddr>() {
                let ip = ip.to_canonical();
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        if ips.is_empty() {
            return None;
        }
        let labels = meta.labels.clone().unwrap_or_default();
        let workload = workload_of(meta.owner_references.as_deref().unwrap_or(&[]), &labels);
        Some(PodInfo {
            uid,
            namespace,
            name,
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            workload,
            ips,
            created: meta.creation_timestamp.clone(),
            terminating: meta.deletion_timestamp.is_some(),
            labels,
        })
    }

    /// Its labels in Hubble's form (see the module docs of [`super`]), given its namespace's
    /// labels when known.
    pub(crate) fn hubble_labels(
        &self,
        namespace_labels: Option<&BTreeMap<String, String>>,
    ) -> Vec<String> {
        let own = self
            .labels
            .iter()
            // What we derive ourselves cannot be overridden by a pod's label of the same name.
            .filter(|(k, _)| {
                k.as_str() != NAMESPACE_LABEL
                    && k.as_str() != SERVICE_ACCOUNT_LABEL
                    && !k.starts_with(NAMESPACE_LABELS_PREFIX)
            })
            .map(|(k, v)| (k.clone(), v.clone()));
        let namespace = namespace_labels
            .into_iter()
            .flatten()
            .map(|(k, v)| (format!("{NAMESPACE_LABELS_PREFIX}{k}"), v.clone()));
        let account = (!self.service_account.is_empty()).then(|| {
            (
                SERVICE_ACCOUNT_LABEL.to_owned(),
                self.service_account.clone(),
            )
        });
        let pairs: Vec<(String, String)> = own
            .chain(namespace)
            .chain(account)
            .filter(|(k, _)| identity_relevant(k))
            .collect();
        pod_labels(&self.namespace, pairs)
    }
}

/// The endpoints of `pods`, sorted by namespace and name. Each address goes to one pod: a pod
/// that is not terminating before one that is, then the most recently created, then by UID; a
/// pod left without any address is left out.
pub(crate) fn endpoints(
    pods: &BTreeMap<String, PodInfo>,
    namespaces: &HashMap<String, BTreeMap<String, String>>,
) -> Vec<Endpoint> {
    let mut order: Vec<&PodInfo> = pods.values().collect();
    order.sort_by(|a, b| {
        (a.terminating, Reverse(&a.created), &a.uid).cmp(&(
            b.terminating,
            Reverse(&b.created),
            &b.uid,
        ))
    });
    let mut taken: HashSet<IpAddr> = HashSet::new();
    let mut out: Vec<(&PodInfo, Endpoint)> = Vec::new();
    for pod in order {
        let ips: Vec<IpAddr> = pod
            .ips
            .iter()
            .copied()
            .filter(|ip| taken.insert(*ip))
            .collect();
        if ips.is_empty() {
            tracing::debug!(pod = %format!("{}/{}", pod.namespace, pod.name),
                "every address of this pod belongs to a newer pod: left out");
            continue;
        }
        let labels = pod.hubble_labels(namespaces.get(&pod.namespace));
        out.push((
            pod,
            Endpoint {
                id: 0,
                identity: identity_for_labels(&labels),
                namespace: pod.namespace.clone(),
                pod_name: pod.name.clone(),
                labels,
                workloads: pod.workload.iter().cloned().collect(),
                ips,
                ifname: None,
            },
        ));
    }
    out.sort_by(|(a, _), (b, _)| {
        (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid))
    });
    out.into_iter().map(|(_, e)| e).collect()
}

/// A node's InternalIP and ExternalIP addresses, sorted, without duplicates.
pub(crate) fn node_addresses(node: &Node) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips
}

/// The address a node's agent is reached at, chosen as Cilium chooses a node's IP for Hubble's
/// peers: IPv4 before IPv6, an InternalIP before an ExternalIP.
pub(crate) fn node_peer_address(node: &Node) -> Option<IpAddr> {
    let addresses: Vec<(&str, IpAddr)> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter_map(|a| Some((a.type_.as_str(), a.address.trim().parse::<IpAddr>().ok()?)))
        .map(|(t, ip)| (t, ip.to_canonical()))
        .collect();
    [
        ("InternalIP", true),
        ("ExternalIP", true),
        ("InternalIP", false),
        ("ExternalIP", false),
    ]
    .into_iter()
    .find_map(|(kind, v4)| {
        addresses
            .iter()
            .find(|(t, ip)| *t == kind && ip.is_ipv4() == v4)
            .map(|(_, ip)| *ip)
    })
}

/// The label an EndpointSlice's controller puts on it: the name of its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An IANA protocol number from a Kubernetes protocol name (TCP when not given, as the API
/// defaults it); `None` for one flowscope does not know.
fn protocol_number(name: Option<&str>) -> Option<u8> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

/// `namespace/name` of an object.
pub(crate) fn object_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// What the source keeps of a Service: its name and frontends (see
/// [`crate::endpoints::services`]): every ClusterIP, external IP and load balancer ingress
/// address, each with every port. `None` for one without a frontend: headless (`clusterIP:
/// None`), `ExternalName`, or without ports.
pub(crate) fn service_frontends(svc: &K8sService) -> Option<(ServiceName, Vec<ServiceAddr>)> {
    let meta = &svc.metadata;
    let name = ServiceName {
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone()?,
    };
    let spec = svc.spec.as_ref()?;
    let ips: Vec<IpAddr> = {
        let cluster = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.as_ref());
        let external = spec.external_ips.iter().flatten();
        let balancer = svc
            .status
            .iter()
            .filter_map(|s| s.load_balancer.as_ref())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .filter_map(|i| i.ip.as_ref());
        let mut ips: Vec<IpAddr> = Vec::new();
        // "None" (headless) and "" (ExternalName) do not parse: no frontend.
        for text in cluster.chain(external).chain(balancer) {
            if let Ok(ip) = text.trim().parse::<IpAddr>() {
                let ip = ip.to_canonical();
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        ips
    };
    let ports: Vec<(u16, u8)> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok().filter(|p| *p != 0)?;
            Some((port, protocol_number(p.protocol.as_deref())?))
        })
        .collect();
    let frontends: Vec<ServiceAddr> = ips
        .iter()
        .flat_map(|ip| {
            ports.iter().map(|(port, proto)| ServiceAddr {
                ip: *ip,
                port: *port,
                proto: *proto,
            })
        })
        .collect();
    (!frontends.is_empty()).then_some((name, frontends))
}

/// The Service an EndpointSlice belongs to (`namespace/name`, from its
/// `kubernetes.io/service-name` label) and its backends: every address of its endpoints with
/// every port. Endpoints that are not ready are kept: a terminating backend still answers the
/// connections it has, and those are the ones to join. `None` for a slice of no Service.
pub(crate) fn slice_backends(slice: &EndpointSlice) -> Option<(String, Vec<ServiceAddr>)> {
    let meta = &slice.metadata;
    let service = meta.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let key = format!(
        "{}/{service}",
        meta.namespace.as_deref().unwrap_or("default")
    );
    // FQDN slices name hosts, not addresses.
    if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
        return Some((key, Vec::new()));
    }
    let ports: Vec<(u16, u8)> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port?).ok().filter(|p| *p != 0)?;
            Some((port, protocol_number(p.protocol.as_deref())?))
        })
        .collect();
    let mut backends = Vec::new();
    for ep in &slice.endpoints {
        for text in &ep.addresses {
            let Ok(ip) = text.trim().parse::<IpAddr>() else {
                continue;
            };
            for (port, proto) in &ports {
                let be = ServiceAddr {
                    ip: ip.to_canonical(),
                    port: *port,
                    proto: *proto,
                };
                if !backends.contains(&be) {
                    backends.push(be);
                }
            }
        }
    }
    Some((key, backends))
}

/// The Services to publish: each Service with a frontend, with the backends of its slices,
/// sorted by name.
pub(crate) fn services(
    frontends: &BTreeMap<String, (ServiceName, Vec<ServiceAddr>)>,
    slices: &BTreeMap<String, (String, Vec<ServiceAddr>)>,
) -> Vec<Service> {
    let mut backends: HashMap<&str, Vec<ServiceAddr>> = HashMap::new();
    for (service, addrs) in slices.values() {
        let list = backends.entry(service.as_str()).or_default();
        for a in addrs {
            if !list.contains(a) {
                list.push(*a);
            }
        }
    }
    frontends
        .iter()
        .map(|(key, (name, fe))| {
            let mut be = backends.remove(key.as_str()).unwrap_or_default();
            be.sort_unstable();
            Service {
                name: name.clone(),
                frontends: fe.clone(),
                backends: be,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    /// A pod as the API server returns it (trimmed): a Deployment's, dual-stack.
    fn web() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-5d9c7b8f4-x2x7k", "generateName": "web-5d9c7b8f4-",
                "namespace": "default", "uid": "7e3f1f55-9a52-4d1c-9c8e-2d0b8a0b6c11",
                "resourceVersion": "1183", "creationTimestamp": "2026-11-20T09:12:31Z",
                "labels": {"app": "web", "tier": "frontend", "pod-template-hash": "5d9c7b8f4"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-5d9c7b8f4", "uid": "0b5c4f7e-1d32-4c55-8f0e-6a1b2c3d4e5f",
                    "controller": true, "blockOwnerDeletion": true}]
            },
            "spec": {"nodeName": "node-1", "serviceAccountName": "default",
                     "containers": [{"name": "nginx", "image": "nginx:1.27"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.213",
                       "podIPs": [{"ip": "10.244.0.213"}, {"ip": "fd00:10:244::213"}]}
        })
    }

    fn owner(kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn cilium_identity_label_filter() {
        for keep in [
            "app",
            "tier",
            "app.kubernetes.io/name",
            "io.kubernetes.pod.namespace",
            "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name",
            "io.cilium.k8s.namespace.labels.team",
            "io.cilium.k8s.policy.serviceaccount",
            "io.cilium.k8s.policy.cluster",
            "job-name",
            "example.com/owner",
        ] {
            assert!(identity_relevant(keep), "{keep} is kept");
        }
        for drop in [
            "pod-template-hash",
            "controller-revision-hash",
            "pod-template-generation",
            "statefulset.kubernetes.io/pod-name",
            "apps.kubernetes.io/pod-index",
            "batch.kubernetes.io/job-completion-index",
            "kubernetes.io/hostname",
            "io.kubernetes.container.name",
            "k8s.io/cluster-service",
            "failure-domain.beta.kubernetes.io/zone",
            "annotation.foo",
            "etcd_node",
        ] {
            assert!(!identity_relevant(drop), "{drop} is left out");
        }
    }

    #[test]
    fn workloads_from_owner_references() {
        let hash = labels(&[("pod-template-hash", "5d9c7b8f4")]);
        let w = |kind: &str, name: &str| {
            Some(Workload {
                name: name.into(),
                kind: kind.into(),
            })
        };
        assert_eq!(
            workload_of(&[owner("ReplicaSet", "web-5d9c7b8f4")], &hash),
            w("Deployment", "web")
        );
        // A ReplicaSet without the Deployment's hash (made by hand), or whose name does not end
        // with it, is the workload itself.
        assert_eq!(
            workload_of(&[owner("ReplicaSet", "web-5d9c7b8f4")], &BTreeMap::new()),
            w("ReplicaSet", "web-5d9c7b8f4")
        );
        assert_eq!(
            workload_of(&[owner("ReplicaSet", "web5d9c7b8f4")], &hash),
            w("ReplicaSet", "web5d9c7b8f4")
        );
        assert_eq!(
            workload_of(&[owner("StatefulSet", "db")], &hash),
            w("StatefulSet", "db")
        );
        assert_eq!(
            workload_of(&[owner("DaemonSet", "agent")], &BTreeMap::new()),
            w("DaemonSet", "agent")
        );
        assert_eq!(
            workload_of(&[owner("Job", "backup-29012345")], &BTreeMap::new()),
            w("CronJob", "backup")
        );
        assert_eq!(
            workload_of(
                &[owner("Job", "nightly-report-2901234567")],
                &BTreeMap::new()
            ),
            w("CronJob", "nightly-report")
        );
        for job in [
            "migrate",
            "migrate-1",
            "migrate-12345678901",
            "-12345678",
            "db-1234abcd",
        ] {
            assert_eq!(
                workload_of(&[owner("Job", job)], &BTreeMap::new()),
                w("Job", job),
                "{job}"
            );
        }
        // Only the controller counts; static pods and orphans have no workload.
        let mut not_controller = owner("ReplicaSet", "x-1");
        not_controller.controller = None;
        assert_eq!(workload_of(&[not_controller], &hash), None);
        assert_eq!(workload_of(&[owner("Node", "node-1")], &hash), None);
        assert_eq!(workload_of(&[], &hash), None);
    }

    #[test]
    fn a_pod_in_hubble_form() {
        let info = PodInfo::from_pod(&pod(web())).unwrap();
        assert_eq!(
            info.ips,
            [
                "10.244.0.213".parse::<IpAddr>().unwrap(),
                "fd00:10:244::213".parse().unwrap()
            ]
        );
        assert_eq!(
            info.workload,
            Some(Workload {
                name: "web".into(),
                kind: "Deployment".into()
            })
        );
        let ns = labels(&[("kubernetes.io/metadata.name", "default"), ("team", "a")]);
        assert_eq!(
            info.hubble_labels(Some(&ns)),
            [
                "k8s:app=web",
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
                "k8s:io.cilium.k8s.namespace.labels.team=a",
                "k8s:io.cilium.k8s.policy.serviceaccount=default",
                "k8s:io.kubernetes.pod.namespace=default",
                "k8s:tier=frontend",
            ]
        );
        // Without its namespace's labels (not known yet) it still has its own.
        assert_eq!(info.hubble_labels(None).len(), 4);
        // A pod cannot claim another namespace through a label.
        let mut v = web();
        v["metadata"]["labels"]["io.kubernetes.pod.namespace"] = json!("kube-system");
        v["metadata"]["labels"]["io.cilium.k8s.policy.serviceaccount"] = json!("admin");
        let l = PodInfo::from_pod(&pod(v)).unwrap().hubble_labels(None);
        assert!(
            l.contains(&"k8s:io.kubernetes.pod.namespace=default".to_owned()),
            "{l:?}"
        );
        assert!(
            !l.iter()
                .any(|x| x.contains("kube-system") || x.contains("admin")),
            "{l:?}"
        );
    }

    #[test]
    fn pods_that_are_not_endpoints() {
        let mut host = web();
        host["spec"]["hostNetwork"] = json!(true);
        assert!(PodInfo::from_pod(&pod(host)).is_none());
        for phase in ["Succeeded", "Failed"] {
            let mut done = web();
            done["status"]["phase"] = json!(phase);
            assert!(PodInfo::from_pod(&pod(done)).is_none(), "{phase}");
        }
        let mut pending = web();
        pending["status"] = json!({"phase": "Pending"});
        assert!(PodInfo::from_pod(&pod(pending)).is_none());
        // Only `podIP` (an old API server): enough.
        let mut old = web();
        old["status"] = json!({"phase": "Running", "podIP": "10.244.0.9"});
        assert_eq!(PodInfo::from_pod(&pod(old)).unwrap().ips.len(), 1);
    }

    fn info(uid: &str, name: &str, ips: &[&str], created: &str, terminating: bool) -> PodInfo {
        let mut v = web();
        v["metadata"]["uid"] = json!(uid);
        v["metadata"]["name"] = json!(name);
        v["metadata"]["creationTimestamp"] = json!(created);
        if terminating {
            v["metadata"]["deletionTimestamp"] = json!("2026-11-20T10:00:00Z");
        }
        v["status"]["podIPs"] = json!(ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>());
        v["status"]["podIP"] = json!(ips[0]);
        PodInfo::from_pod(&pod(v)).unwrap()
    }

    #[test]
    fn an_address_goes_to_one_pod() {
        let by = |eps: &[Endpoint], ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            eps.iter()
                .filter(|e| e.ips.contains(&ip))
                .map(|e| e.pod_name.clone())
                .collect::<Vec<_>>()
        };
        let old = info(
            "a",
            "old",
            &["10.0.0.5", "fd00::5"],
            "2026-11-20T09:00:00Z",
            false,
        );
        let new = info("b", "new", &["10.0.0.5"], "2026-11-20T09:30:00Z", false);
        let mut pods = BTreeMap::from([("a".to_owned(), old.clone()), ("b".to_owned(), new)]);
        let ns = HashMap::new();
        let eps = endpoints(&pods, &ns);
        assert_eq!(by(&eps, "10.0.0.5"), ["new"], "the newer pod wins");
        assert_eq!(
            by(&eps, "fd00::5"),
            ["old"],
            "the older one keeps its other address"
        );
        // A terminating pod loses even when it is newer.
        let newest_terminating = info("c", "going", &["10.0.0.5"], "2026-11-20T09:45:00Z", true);
        pods.insert("c".into(), newest_terminating);
        assert_eq!(by(&endpoints(&pods, &ns), "10.0.0.5"), ["new"]);
        // The old pod's address taken, it has nothing left: not an endpoint.
        pods.insert(
            "a".into(),
            info("a", "old", &["10.0.0.5"], "2026-11-20T09:00:00Z", false),
        );
        let eps = endpoints(&pods, &ns);
        assert_eq!(
            eps.iter().map(|e| e.pod_name.as_str()).collect::<Vec<_>>(),
            ["new"]
        );
    }

    #[test]
    fn node_addresses_are_internal_and_external_ips() {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-2", "uid": "n2"},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "198.51.100.11"},
                {"type": "InternalIP", "address": "fd00:198:51:100::11"},
                {"type": "ExternalIP", "address": "203.0.113.11"},
                {"type": "Hostname", "address": "node-2"},
                {"type": "InternalDNS", "address": "node-2.internal"},
                {"type": "InternalIP", "address": "198.51.100.11"}
            ]}
        }))
        .unwrap();
        assert_eq!(
            node_addresses(&node),
            [
                "198.51.100.11".parse::<IpAddr>().unwrap(),
                "203.0.113.11".parse().unwrap(),
                "fd00:198:51:100::11".parse().unwrap()
            ]
        );
    }
}
