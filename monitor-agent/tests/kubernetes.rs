//! The Kubernetes endpoint source against a fake API server.
//!
//! No Kubernetes API server can run on the machines that run these tests: the fake one in
//! `support/fake_apiserver.rs` stands in for it. It speaks the list and watch protocol over
//! real HTTP (paginated lists with `resourceVersion`, chunked watch streams of
//! `{"type":…,"object":…}` lines, bookmarks, `410 Expired` error events, replay from a version),
//! and serves the objects of `fixtures/kubernetes/` (a PodList, NamespaceList, NodeList,
//! ServiceList and EndpointSliceList in the shape and with the fields the API server returns for
//! `kubectl get --raw`). Each test
//! drives it through one situation and checks the registry's lookups, with bounded waits.

#![cfg(feature = "kubernetes")]

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use fake_apiserver::FakeApiServer;
use monitor_agent::endpoints::{
    Registry, identity_for_labels,
    kubernetes::{Connection, KubernetesStatus, Resource, Watch, WatchTuning},
    reserved,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NODE: &str = "node-1";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/kubernetes/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A running source against a fake server loaded with the fixtures; cancelled on drop.
struct Setup {
    api: FakeApiServer,
    registry: Registry,
    status: Arc<KubernetesStatus>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Setup {
    async fn start() -> Setup {
        let api = FakeApiServer::start().await;
        api.load_list("pods", &fixture("pods.json"));
        api.load_list("namespaces", &fixture("namespaces.json"));
        api.load_list("nodes", &fixture("nodes.json"));
        api.load_list("services", &fixture("services.json"));
        api.load_list("endpointslices", &fixture("endpointslices.json"));
        let config = kube::Config::new(api.url().parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let registry = Registry::new(Vec::new(), Vec::new());
        let cancel = CancellationToken::new();
        let tuning = WatchTuning {
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            watch_timeout: Duration::from_secs(60),
            // Small pages, so that every list is paginated.
            page_size: 2,
            namespace_grace: Duration::from_secs(2),
        };
        let Watch { status, task } =
            Connection::new(client, NODE).watch_with(registry.clone(), tuning, cancel.clone());
        let s = Setup {
            api,
            registry,
            status,
            cancel,
            task: Some(task),
        };
        s.wait("the first lists", |s| s.who("10.244.0.213").is_some())
            .await;
        s.wait("open watches", |s| {
            ["pods", "namespaces", "nodes", "services"]
                .iter()
                .all(|k| s.api.watchers(k, "v1") == 1)
                && s.api.watchers("endpointslices", "discovery.k8s.io/v1") == 1
        })
        .await;
        s
    }

    /// `namespace/pod` at `addr`, if an endpoint.
    fn who(&self, addr: &str) -> Option<String> {
        self.registry
            .lookup(ip(addr))
            .endpoint
            .map(|e| format!("{}/{}", e.namespace, e.pod_name))
    }

    fn identity(&self, addr: &str) -> u32 {
        self.registry.lookup(ip(addr)).identity
    }

    /// Waits (at most 10 s) until `cond` holds.
    async fn wait(&self, what: &str, cond: impl Fn(&Setup) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}; requests: {:#?}",
                self.api.requests()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many list (not watch) requests were made for `path`.
    fn lists(&self, path: &str) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|r| r.starts_with(&format!("{path}?")) && !r.contains("watch=true"))
            .count()
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the source ends when cancelled")
            .unwrap();
    }
}

/// A pod of this node, as the API server would send it in a watch event.
fn new_pod(name: &str, uid: &str, ips: &[&str], created: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "generateName": "api-6b8d9c7f5-", "namespace": "shop", "uid": uid,
            "creationTimestamp": created,
            "labels": {"app": "api", "pod-template-hash": "6b8d9c7f5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "api-6b8d9c7f5", "uid": "c0ffee00-0000-4000-8000-000000000001",
                "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {"nodeName": NODE, "serviceAccountName": "api",
                 "containers": [{"name": "api", "image": "ghcr.io/example/api:1.4.2"}]},
        "status": {"phase": "Running", "hostIP": "198.51.100.10",
                   "podIP": ips[0], "podIPs": ips.iter().map(|i| json!({"ip": i})).collect::<Vec<_>>()}
    })
}

#[tokio::test]
async fn initial_lists_name_pods_namespaces_and_nodes() {
    let s = Setup::start().await;

    // A Deployment's pod, dual-stack, with Cilium's labels: its own (less pod-template-hash),
    // its namespace's, its service account.
    let web = s.registry.lookup(ip("10.244.0.213"));
    let ep = web.endpoint.clone().unwrap();
    assert_eq!(
        (ep.namespace.as_str(), ep.pod_name.as_str()),
        ("shop", "web-5d9c7b8f4-x2x7k")
    );
    let labels = [
        "k8s:app=web",
        "k8s:io.cilium.k8s.namespace.labels.environment=production",
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
        "k8s:io.cilium.k8s.namespace.labels.team=payments",
        "k8s:io.cilium.k8s.policy.serviceaccount=web",
        "k8s:io.kubernetes.pod.namespace=shop",
        "k8s:tier=frontend",
    ];
    assert_eq!(&*web.labels, labels);
    assert_eq!(web.identity, identity_for_labels(&labels));
    assert_eq!(ep.workloads.len(), 1);
    assert_eq!(
        (ep.workloads[0].kind.as_str(), ep.workloads[0].name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!(
        s.who("fd00:10:244::213").as_deref(),
        Some("shop/web-5d9c7b8f4-x2x7k")
    );

    // A StatefulSet's pod: its per-pod labels are not in the identity.
    let db = s.registry.lookup(ip("10.244.0.77"));
    let db_ep = db.endpoint.unwrap();
    assert_eq!(
        (
            db_ep.workloads[0].kind.as_str(),
            db_ep.workloads[0].name.as_str()
        ),
        ("StatefulSet", "db")
    );
    assert!(
        !db.labels
            .iter()
            .any(|l| l.contains("pod-name") || l.contains("pod-index") || l.contains("revision")),
        "{:?}",
        db.labels
    );
    let dns = s.registry.lookup(ip("10.244.0.3")).endpoint.unwrap();
    assert_eq!(
        (
            dns.workloads[0].kind.as_str(),
            dns.workloads[0].name.as_str()
        ),
        ("Deployment", "coredns")
    );
    // A bare pod: no workload.
    let debug = s.registry.lookup(ip("fd00:10:244::99")).endpoint.unwrap();
    assert_eq!(debug.pod_name, "debug");
    assert!(debug.workloads.is_empty());

    // Not endpoints: the host-network pod (its address is the node's: host), the finished
    // CronJob pod (its address is free), the pod of another node.
    assert_eq!(s.identity("198.51.100.10"), reserved::HOST);
    assert_eq!(s.who("10.244.0.90"), None);
    assert_eq!(s.identity("10.244.0.90"), reserved::WORLD);
    assert_eq!(s.who("10.244.1.17"), None);
    assert_eq!(s.registry.endpoints().len(), 4);
    assert_eq!(s.registry.namespaces(), ["default", "kube-system", "shop"]);

    // Nodes: this one's addresses are host (even the ExternalIP on no interface), the other's
    // remote-node.
    s.wait("the nodes", |s| {
        s.identity("198.51.100.11") == reserved::REMOTE_NODE
    })
    .await;
    for own in ["198.51.100.10", "fd00:198:51:100::10", "203.0.113.10"] {
        assert_eq!(s.identity(own), reserved::HOST, "{own}");
    }
    for other in ["fd00:198:51:100::11", "203.0.113.11"] {
        assert_eq!(s.identity(other), reserved::REMOTE_NODE, "{other}");
    }
    // Every node, for the Peer service, at the address Cilium would pick: IPv4 first, the
    // InternalIP before the ExternalIP.
    let peers = s.registry.cluster_nodes().borrow().clone();
    assert_eq!(
        *peers,
        std::collections::BTreeMap::from([
            ("node-1".to_owned(), ip("198.51.100.10")),
            ("node-2".to_owned(), ip("198.51.100.11")),
        ])
    );

    // Only this node's pods were asked for, page by page.
    let requests = s.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("/api/v1/pods?")
                && r.contains("fieldSelector=spec.nodeName=node-1")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| !r.starts_with("/api/v1/pods?")
                || r.contains("fieldSelector=spec.nodeName=node-1")),
        "{requests:#?}"
    );
    assert!(
        s.lists("/api/v1/pods") >= 3,
        "6 pods in pages of 2: {requests:#?}"
    );
    assert!(s.status.all_up());
    assert_eq!(s.status.pods(), 4);
    assert_eq!(s.status.remote_nodes(), 1);
    s.stop().await;
}

#[tokio::test]
async fn watch_adds_updates_and_deletes() {
    let s = Setup::start().await;
    // Added.
    let pod = new_pod(
        "api-6b8d9c7f5-abcde",
        "11111111-1111-4111-8111-111111111111",
        &["10.244.0.50", "fd00:10:244::50"],
        "2026-11-26T11:00:00Z",
    );
    s.api.apply("pods", pod.clone());
    s.wait("the added pod", |s| {
        s.who("10.244.0.50").as_deref() == Some("shop/api-6b8d9c7f5-abcde")
    })
    .await;
    let api = s.registry.lookup(ip("fd00:10:244::50")).endpoint.unwrap();
    assert_eq!(
        (
            api.workloads[0].kind.as_str(),
            api.workloads[0].name.as_str()
        ),
        ("Deployment", "api")
    );
    let before = s.identity("10.244.0.50");

    // Modified: new labels, new identity.
    let mut relabelled = pod.clone();
    relabelled["metadata"]["labels"]["version"] = json!("v2");
    s.api.apply("pods", relabelled);
    s.wait("the new labels", |s| s.identity("10.244.0.50") != before)
        .await;
    assert!(
        s.registry
            .lookup(ip("10.244.0.50"))
            .labels
            .contains(&"k8s:version=v2".to_owned())
    );

    // A status-only change (a readiness flip) changes nothing.
    let snapshot = s.registry.snapshot();
    let mut not_ready = pod.clone();
    not_ready["metadata"]["labels"]["version"] = json!("v2");
    not_ready["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    s.api.apply("pods", not_ready);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(Arc::ptr_eq(&snapshot, &s.registry.snapshot()));

    // The pod finishes: its address is released at once, before the delete.
    let mut done = pod.clone();
    done["status"]["phase"] = json!("Succeeded");
    s.api.apply("pods", done);
    s.wait("the finished pod gone", |s| s.who("10.244.0.50").is_none())
        .await;

    // Deleted (another one).
    s.api.delete("pods", "v1", "default/debug");
    s.wait("the deleted pod gone", |s| s.who("10.244.0.99").is_none())
        .await;
    assert_eq!(s.identity("10.244.0.99"), reserved::WORLD);

    // A namespace's labels change: its pods' identities follow.
    let web_before = s.identity("10.244.0.213");
    let mut shop = fixture("namespaces.json")["items"][2].clone();
    assert_eq!(shop["metadata"]["name"], "shop");
    shop["apiVersion"] = json!("v1");
    shop["kind"] = json!("Namespace");
    shop["metadata"]["labels"]["team"] = json!("checkout");
    s.api.apply("namespaces", shop);
    s.wait("the namespace's new label", |s| {
        s.identity("10.244.0.213") != web_before
    })
    .await;
    assert!(
        s.registry
            .lookup(ip("10.244.0.213"))
            .labels
            .contains(&"k8s:io.cilium.k8s.namespace.labels.team=checkout".to_owned())
    );

    // Nodes join and leave.
    let mut node3 = fixture("nodes.json")["items"][1].clone();
    node3["apiVersion"] = json!("v1");
    node3["kind"] = json!("Node");
    node3["metadata"]["name"] = json!("node-3");
    node3["status"]["addresses"] = json!([{"type": "InternalIP", "address": "198.51.100.12"}]);
    s.api.apply("nodes", node3);
    s.wait("node-3", |s| {
        s.identity("198.51.100.12") == reserved::REMOTE_NODE
    })
    .await;
    let peer = |s: &Setup, name: &str| s.registry.cluster_nodes().borrow().get(name).copied();
    assert_eq!(
        peer(&s, "node-3"),
        Some(ip("198.51.100.12")),
        "a Peer for node-3"
    );
    s.api.delete("nodes", "v1", "/node-3");
    s.wait("node-3 gone", |s| {
        s.identity("198.51.100.12") == reserved::WORLD
    })
    .await;
    assert_eq!(peer(&s, "node-3"), None, "node-3's Peer is deleted");
    assert!(peer(&s, "node-2").is_some());
    assert_eq!(s.status.relists(Resource::Pods), 0);
    assert_eq!(s.lists("/api/v1/pods"), 3, "no list after the first");
    s.stop().await;
}

#[tokio::test]
async fn a_reused_address_stays_with_the_new_pod() {
    let s = Setup::start().await;
    let old = new_pod(
        "api-6b8d9c7f5-old01",
        "22222222-2222-4222-8222-222222222222",
        &["10.244.0.60"],
        "2026-11-26T10:00:00Z",
    );
    s.api.apply("pods", old);
    s.wait("the old pod", |s| {
        s.who("10.244.0.60").as_deref() == Some("shop/api-6b8d9c7f5-old01")
    })
    .await;

    // The old pod is going away; a new pod gets its address before the old one's delete is
    // seen (the CNI released it on teardown).
    let mut terminating = new_pod(
        "api-6b8d9c7f5-old01",
        "22222222-2222-4222-8222-222222222222",
        &["10.244.0.60"],
        "2026-11-26T10:00:00Z",
    );
    terminating["metadata"]["deletionTimestamp"] = json!("2026-11-26T11:59:00Z");
    s.api.apply("pods", terminating);
    s.api.apply(
        "pods",
        new_pod(
            "api-6b8d9c7f5-new02",
            "33333333-3333-4333-8333-333333333333",
            &["10.244.0.60"],
            "2026-11-26T11:59:30Z",
        ),
    );
    s.wait("the new pod", |s| {
        s.who("10.244.0.60").as_deref() == Some("shop/api-6b8d9c7f5-new02")
    })
    .await;
    // The old pod's delete arrives last: the address stays the new pod's.
    s.api.delete("pods", "v1", "shop/api-6b8d9c7f5-old01");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        s.who("10.244.0.60").as_deref(),
        Some("shop/api-6b8d9c7f5-new02")
    );

    // The same without the terminating state: the newer pod wins while both are listed.
    s.api.apply(
        "pods",
        new_pod(
            "api-6b8d9c7f5-new03",
            "44444444-4444-4444-8444-444444444444",
            &["10.244.0.60"],
            "2026-11-26T12:01:00Z",
        ),
    );
    s.wait("the newest pod", |s| {
        s.who("10.244.0.60").as_deref() == Some("shop/api-6b8d9c7f5-new03")
    })
    .await;
    s.api.delete("pods", "v1", "shop/api-6b8d9c7f5-new02");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        s.who("10.244.0.60").as_deref(),
        Some("shop/api-6b8d9c7f5-new03")
    );
    s.stop().await;
}

#[tokio::test]
async fn gone_410_lists_again_and_forgets_what_was_missed() {
    let s = Setup::start().await;
    // Changes whose events this watcher never gets: a pod deleted, another added.
    s.api.delete_silently("pods", "v1", "default/debug");
    s.api.apply_silently(
        "pods",
        new_pod(
            "api-6b8d9c7f5-quiet",
            "55555555-5555-4555-8555-555555555555",
            &["10.244.0.70"],
            "2026-11-26T11:30:00Z",
        ),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.who("10.244.0.99").as_deref(),
        Some("default/debug"),
        "not seen yet"
    );
    // The server tells the watch its version has expired.
    s.api.expire_watches("pods", "v1");
    s.wait("the relisted state", |s| {
        s.who("10.244.0.99").is_none() && s.who("10.244.0.70").is_some()
    })
    .await;
    assert_eq!(s.status.relists(Resource::Pods), 1);
    assert_eq!(
        s.lists("/api/v1/pods"),
        6,
        "one paginated list, then a second"
    );
    assert_eq!(s.status.errors(Resource::Pods), 0, "a 410 is no error");
    s.wait("a new watch", |s| s.api.watchers("pods", "v1") == 1)
        .await;

    // A watch resuming from a compacted version gets the 410 as its first event.
    s.api.apply_silently(
        "pods",
        new_pod(
            "api-6b8d9c7f5-quiet",
            "55555555-5555-4555-8555-555555555555",
            &["10.244.0.71"],
            "2026-11-26T11:30:00Z",
        ),
    );
    s.api.cut_watches("pods", "v1");
    s.wait("the second relist", |s| s.who("10.244.0.71").is_some())
        .await;
    assert_eq!(s.who("10.244.0.70"), None);
    assert_eq!(s.status.relists(Resource::Pods), 2);
    // Everything else kept working.
    assert_eq!(
        s.who("10.244.0.213").as_deref(),
        Some("shop/web-5d9c7b8f4-x2x7k")
    );
    s.stop().await;
}

#[tokio::test]
async fn a_dropped_watch_resumes_from_the_last_version() {
    let s = Setup::start().await;
    let v = s.api.apply(
        "pods",
        new_pod(
            "api-6b8d9c7f5-first",
            "66666666-6666-4666-8666-666666666666",
            &["10.244.0.80"],
            "2026-11-26T11:40:00Z",
        ),
    );
    s.wait("the first pod", |s| s.who("10.244.0.80").is_some())
        .await;
    // A bookmark moves the version on without an object.
    s.api.apply(
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "other", "uid": "77777777-7777-4777-8777-777777777777",
                            "labels": {"kubernetes.io/metadata.name": "other"}}}),
    );
    let bookmark = s.api.bookmark("pods", "v1");
    assert!(bookmark > v);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The connection drops in the middle of an event; meanwhile a pod is added.
    s.api.cut_watches("pods", "v1");
    s.api.apply(
        "pods",
        new_pod(
            "api-6b8d9c7f5-second",
            "88888888-8888-4888-8888-888888888888",
            &["10.244.0.81"],
            "2026-11-26T11:41:00Z",
        ),
    );
    s.wait("the pod added while reconnecting", |s| {
        s.who("10.244.0.81").is_some()
    })
    .await;
    // Resumed from the bookmark, not listed again.
    let resumed = s
        .api
        .requests()
        .iter()
        .filter(|r| r.starts_with("/api/v1/pods?") && r.contains("watch=true"))
        .any(|r| {
            r.split(['?', '&'])
                .any(|p| p == format!("resourceVersion={bookmark}"))
        });
    assert!(resumed, "{:#?}", s.api.requests());
    assert_eq!(s.lists("/api/v1/pods"), 3, "no second list");
    assert_eq!(s.status.relists(Resource::Pods), 0);
    assert!(s.who("10.244.0.80").is_some());
    s.stop().await;
}

/// `namespace/name` of the Service whose frontend `addr`:`port` is.
fn service_at(s: &Setup, addr: &str, port: u16) -> Option<String> {
    s.registry.service(ip(addr), port).map(|n| n.to_string())
}

/// A Service as the API server sends it in a watch event.
fn new_service(ns: &str, name: &str, cluster_ip: &str, ports: &[(u16, &str)]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns,
                     "uid": format!("5e7c0000-0000-4000-8000-{:012}", ports[0].0),
                     "creationTimestamp": "2026-11-26T12:00:00Z"},
        "spec": {
            "ports": ports.iter().map(|(p, proto)| json!({"protocol": proto, "port": p,
                "targetPort": p})).collect::<Vec<_>>(),
            "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": "ClusterIP",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"
        },
        "status": {"loadBalancer": {}}
    })
}

#[tokio::test]
async fn services_appear_change_and_disappear() {
    let s = Setup::start().await;
    s.wait("the services", |s| {
        service_at(s, "10.96.0.10", 80).is_some()
    })
    .await;

    // Every ClusterIP of a dual-stack Service, on its port; not on another port; never the
    // backend (Hubble names frontends only).
    assert_eq!(
        service_at(&s, "10.96.0.10", 80).as_deref(),
        Some("shop/web")
    );
    assert_eq!(
        service_at(&s, "fd00:10:96::10", 80).as_deref(),
        Some("shop/web")
    );
    assert_eq!(service_at(&s, "10.96.0.10", 8080), None);
    assert_eq!(service_at(&s, "10.244.0.213", 8080), None);
    // UDP and TCP ports of one Service.
    assert_eq!(
        service_at(&s, "10.96.0.53", 53).as_deref(),
        Some("kube-system/kube-dns")
    );
    // A headless Service has no frontend.
    assert_eq!(s.registry.snapshot().services().len(), 2);
    assert_eq!(s.status.services(), 2);
    // The EndpointSlice's endpoint is web's backend, on the slice's port.
    s.wait("the backends", |s| {
        s.registry
            .snapshot()
            .services()
            .is_backend(ip("10.244.0.213"), 8080)
    })
    .await;
    assert!(
        !s.registry
            .snapshot()
            .services()
            .is_backend(ip("10.244.0.213"), 80)
    );

    // A new Service appears.
    s.api.apply(
        "services",
        new_service("shop", "api", "10.96.0.20", &[(8443, "TCP")]),
    );
    s.wait("the new service", |s| {
        service_at(s, "10.96.0.20", 8443).is_some()
    })
    .await;
    assert_eq!(
        service_at(&s, "10.96.0.20", 8443).as_deref(),
        Some("shop/api")
    );

    // It changes port: the old frontend is gone, the new one named.
    s.api.apply(
        "services",
        new_service("shop", "api", "10.96.0.20", &[(9443, "TCP")]),
    );
    s.wait("the changed port", |s| {
        service_at(s, "10.96.0.20", 9443).is_some()
    })
    .await;
    assert_eq!(service_at(&s, "10.96.0.20", 8443), None);

    // Its backends come and go with its EndpointSlice.
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "api-abcde", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "api"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.91"], "conditions": {"ready": true}}],
        "ports": [{"protocol": "TCP", "port": 9443}]
    });
    s.api.apply("endpointslices", slice);
    s.wait("the new backend", |s| {
        s.registry
            .snapshot()
            .services()
            .is_backend(ip("10.244.0.91"), 9443)
    })
    .await;
    s.api
        .delete("endpointslices", "discovery.k8s.io/v1", "shop/api-abcde");
    s.wait("the backend gone", |s| {
        !s.registry
            .snapshot()
            .services()
            .is_backend(ip("10.244.0.91"), 9443)
    })
    .await;

    // The Service is deleted: its name is gone; the others stay.
    s.api.delete("services", "v1", "shop/api");
    s.wait("the deleted service", |s| {
        service_at(s, "10.96.0.20", 9443).is_none()
    })
    .await;
    assert_eq!(
        service_at(&s, "10.96.0.10", 80).as_deref(),
        Some("shop/web")
    );

    // A change missed while not watching (410 Gone, relist) is caught up too.
    s.api.apply_silently(
        "services",
        new_service("shop", "late", "10.96.0.30", &[(80, "TCP")]),
    );
    s.api.expire_watches("services", "v1");
    s.wait("the relisted service", |s| {
        service_at(s, "10.96.0.30", 80).is_some()
    })
    .await;
    assert!(s.status.relists(Resource::Services) >= 1);
    s.stop().await;
}

#[tokio::test]
async fn an_unreachable_api_server_is_reported_and_the_last_state_kept() {
    let s = Setup::start().await;
    s.wait("the nodes", |s| {
        s.identity("198.51.100.11") == reserved::REMOTE_NODE
    })
    .await;
    let endpoints = s.registry.endpoints().len();
    s.api.set_down(true);
    s.wait("the outage seen", |s| {
        Resource::ALL
            .iter()
            .all(|&r| !s.status.is_up(r) && s.status.errors(r) > 0)
    })
    .await;
    // Metrics say so.
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(s.status.clone()));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("flowscope_kubernetes_api_up{resource=\"pods\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("flowscope_kubernetes_api_errors_total{resource=\"nodes\"}"),
        "{text}"
    );
    // Nothing is forgotten meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.registry.endpoints().len(), endpoints);
    assert_eq!(
        s.who("10.244.0.213").as_deref(),
        Some("shop/web-5d9c7b8f4-x2x7k")
    );
    assert_eq!(s.identity("198.51.100.11"), reserved::REMOTE_NODE);

    // Back: the source catches up (from its versions, or by listing again).
    s.api.set_down(false);
    s.api.apply(
        "pods",
        new_pod(
            "api-6b8d9c7f5-after",
            "99999999-9999-4999-8999-999999999999",
            &["10.244.0.91"],
            "2026-11-26T11:50:00Z",
        ),
    );
    s.wait("the pod added after the outage", |s| {
        s.who("10.244.0.91").is_some()
    })
    .await;
    s.wait("every kind up", |s| s.status.all_up()).await;
    s.stop().await;
}
