//! Flags Hubble users type, through the real binary: what reaches the server, and
//! `--print-raw-filters`, which must not reach any.

mod support;

use std::time::Duration;

use flowscope_proto::flow::Workload;
use support::{Canned, TestServer, flowctl, run};

const LIMIT: Duration = Duration::from_secs(20);

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

#[test]
fn hubbles_filter_flags_reach_the_server() {
    let canned = Canned::default();
    let requests = canned.requests.clone();
    let server = TestServer::tcp(canned);
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.args([
        "--server",
        &server.addr,
        "observe",
        "--uuid",
        "6b6e4ffb-0a4f-4b1c-a2d2-1b7f4d4c9f10",
        "--node-label",
        "kubernetes.io/os=linux",
        "--from-workload",
        "Deployment/web",
        "--to-cluster",
        "prod",
        "--experimental-field-mask",
        "time,source.pod_name",
        "--field-mask",
        "verdict",
        "-o",
        "json",
    ]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    let requests = requests.lock().unwrap();
    let (request, _) = &requests[0];
    assert_eq!(request.whitelist.len(), 1, "{:?}", request.whitelist);
    let filter = &request.whitelist[0];
    assert_eq!(
        filter.uuid,
        strings(&["6b6e4ffb-0a4f-4b1c-a2d2-1b7f4d4c9f10"])
    );
    assert_eq!(filter.node_labels, strings(&["kubernetes.io/os=linux"]));
    assert_eq!(
        filter.source_workload,
        [Workload {
            name: "web".into(),
            kind: "Deployment".into()
        }]
    );
    assert_eq!(filter.destination_cluster_name, strings(&["prod"]));
    assert_eq!(
        request.field_mask.as_ref().map(|m| m.paths.clone()),
        Some(strings(&["time", "source.pod_name", "verdict"]))
    );
}

#[test]
fn field_mask_is_for_json_output_only() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.env("FLOWSCOPE_SERVER", "127.0.0.1:1")
        .args(["observe", "--field-mask", "time"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("the compact output format is not compatible with --field-mask"),
        "{}",
        out.stderr
    );
}

/// `flowctl observe ARGS --print-raw-filters` with no server to reach.
fn raw_filters(args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.env("FLOWSCOPE_SERVER", "127.0.0.1:1")
        .arg("observe")
        .args(args)
        .arg("--print-raw-filters");
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{args:?}: {out:?}");
    assert_eq!(out.stderr, "", "{args:?}");
    out.stdout
}

#[test]
fn print_raw_filters_prints_what_hubble_prints() {
    // Cilium's documentation (Hubble exporter, "Filters"): the same words, the same bytes.
    assert_eq!(
        raw_filters(&["--verdict", "DROPPED", "--verdict", "ERROR"]),
        "allowlist:\n    - '{\"verdict\":[\"DROPPED\",\"ERROR\"]}'\n"
    );
    assert_eq!(
        raw_filters(&["--not", "--namespace", "kube-system"]),
        "denylist:\n    - '{\"source_pod\":[\"kube-system/\"]}'\n    - '{\"destination_pod\":[\"kube-system/\"]}'\n"
    );
    assert_eq!(
        raw_filters(&[
            "--namespace",
            "payments",
            "--verdict",
            "DROPPED",
            "--protocol",
            "tcp"
        ]),
        "allowlist:\n    - '{\"source_pod\":[\"payments/\"],\"verdict\":[\"DROPPED\"],\"protocol\":[\"tcp\"]}'\n    - '{\"destination_pod\":[\"payments/\"],\"verdict\":[\"DROPPED\"],\"protocol\":[\"tcp\"]}'\n"
    );
    // No filter: go-yaml's empty mapping.
    assert_eq!(raw_filters(&[]), "{}\n");
    // A quote inside a value is doubled, as YAML's single-quoted style wants.
    assert_eq!(
        raw_filters(&["--from-label", "k8s:note=it's"]),
        "allowlist:\n    - '{\"source_label\":[\"k8s:note=it''s\"]}'\n"
    );
}

#[test]
fn raw_filters_feed_back_into_allowlist_and_denylist() {
    let args = [
        "--from-pod",
        "default/pod-a",
        "-t",
        "trace:to-network",
        "--not",
        "--port",
        "53",
    ];
    let yaml = raw_filters(&args);
    let document: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&yaml).unwrap();
    let list = |key: &str| -> Vec<String> {
        document
            .get(key)
            .and_then(|v| v.as_sequence())
            .map(|s| s.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut again: Vec<String> = Vec::new();
    for filter in list("allowlist") {
        again.extend(["--allowlist".to_string(), filter]);
    }
    for filter in list("denylist") {
        again.extend(["--denylist".to_string(), filter]);
    }
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    assert_eq!(raw_filters(&again), yaml);
}
