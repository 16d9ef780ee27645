//! `deploy/kubernetes`: every kustomization renders (`kubectl kustomize`, kubectl's built-in
//! kustomize), every object it renders validates against the Kubernetes API's schemas of a
//! recent and of the oldest supported release (`kubernetes-validate --strict`, from PyPI:
//! `scripts/setup.sh` installs it), and what the manifests ask of the binaries, they accept
//! (the agent's config file, the relay's environment variables and arguments).
//!
//! Not privileged. Without kubectl or kubernetes-validate these tests say why and skip,
//! except under CI (`CI` set), where they fail: a skipped check would pass for a valid one.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// Kubernetes releases whose schemas every object must satisfy: the newest that
/// kubernetes-validate knows, and the oldest that the manifests promise to work on (the
/// `appArmorProfile` field and the k8s-openapi feature of the agent need 1.30+ / 1.33).
const KUBERNETES_VERSIONS: [&str; 2] = ["1.37.0", "1.33.0"];

/// The kustomizations people apply.
const KUSTOMIZATIONS: [&str; 3] = ["base", "overlays/tls", "overlays/relay-api-discovery"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `program args…` runs; otherwise skip (or fail under CI) with `why`.
fn have(test: &str, program: &str, args: &[&str], why: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        testbed::skip(test, why);
    }
    ok
}

fn tools(test: &str) -> bool {
    have(
        test,
        "kubectl",
        &["version", "--client"],
        "kubectl is not installed (it renders the kustomizations)",
    ) && have(
        test,
        "python3",
        &["-m", "kubernetes_validate", "--version"],
        "kubernetes-validate is not installed (run scripts/setup.sh)",
    )
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("flowscope-deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `kubectl kustomize deploy/kubernetes/<dir>`: the rendered YAML.
fn render(dir: &str) -> String {
    let path = repo().join("deploy/kubernetes").join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered objects as JSON (PyYAML comes with kubernetes-validate).
fn objects(yaml: &str, scratch: &Scratch) -> Vec<Value> {
    let file = scratch.0.join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(&file)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The relay option that environment variable `key` sets, as an argument with `value`
/// (`FLOWSCOPE_RELAY_PEER_DNS` is `--peer-dns`), after checking that the relay reads `key`.
/// Clap does not check environment values when `--version` ends the parse: as arguments, they
/// are checked.
fn relay_env_arg(help: &str, key: &str, value: &str) -> String {
    assert!(
        help.contains(&format!("[env: {key}")),
        "the relay has no {key}"
    );
    let long = key
        .strip_prefix("FLOWSCOPE_RELAY_")
        .unwrap_or_else(|| panic!("{key}: not a relay variable"))
        .to_lowercase()
        .replace('_', "-");
    assert!(
        help.contains(&format!("--{long} ")),
        "{key} is not --{long}"
    );
    format!("--{long}={value}")
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn kustomizations_render_and_validate() {
    if !tools("kustomizations_render_and_validate") {
        return;
    }
    for dir in KUSTOMIZATIONS {
        let scratch = Scratch::new(&dir.replace('/', "-"));
        let yaml = render(dir);
        let file = scratch.0.join("rendered.yaml");
        std::fs::write(&file, &yaml).unwrap();
        for version in KUBERNETES_VERSIONS {
            let out = Command::new("python3")
                .args(["-m", "kubernetes_validate", "--strict", "-k", version])
                .arg(&file)
                .output()
                .expect("running kubernetes-validate");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "{dir} against Kubernetes {version}:\n{text}"
            );
            let objs = objects(&yaml, &scratch);
            let passed = text.matches(" passed for resource ").count();
            assert_eq!(
                passed,
                objs.len(),
                "{dir} against {version}: every object checked\n{text}"
            );
        }
    }
}

#[test]
fn manifests_keep_their_promises() {
    if !tools("manifests_keep_their_promises") {
        return;
    }
    let scratch = Scratch::new("promises");
    let objs = objects(&render("base"), &scratch);

    // Everything namespaced is in the flowscope namespace.
    for o in &objs {
        let kind = o["kind"].as_str().unwrap();
        if !matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding") {
            assert_eq!(o["metadata"]["namespace"], "flowscope", "{kind}");
        }
    }

    // Least privilege: get/list/watch on pods, namespaces, nodes, services and endpointslices,
    // nothing else; the relay has no API access at all.
    let roles: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .collect();
    assert_eq!(roles.len(), 1);
    let rules = roles[0]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["apiGroups"], serde_json::json!([""]));
    assert_eq!(
        rules[0]["resources"],
        serde_json::json!(["pods", "namespaces", "nodes", "services"])
    );
    assert_eq!(
        rules[1]["apiGroups"],
        serde_json::json!(["discovery.k8s.io"])
    );
    assert_eq!(rules[1]["resources"], serde_json::json!(["endpointslices"]));
    for rule in rules {
        assert_eq!(rule["verbs"], serde_json::json!(["get", "list", "watch"]));
    }
    let relay_sa = find(&objs, "ServiceAccount", "flowscope-relay");
    assert_eq!(relay_sa["automountServiceAccountToken"], false);

    // The agent: host network, no other host namespace, capabilities rather than privileged.
    let ds = find(&objs, "DaemonSet", "flowscope-agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert!(pod["hostPID"].is_null() && pod["hostIPC"].is_null());
    let agent = &pod["containers"][0];
    let sc = &agent["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"])
    );
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert!(agent[probe].is_object(), "agent {probe}");
    }
    // Every kustomization probes the agent's gRPC health, not merely an open port: over TCP
    // (plain text) or, where TLS is on, over the unix socket with flowctl.
    for k in KUSTOMIZATIONS {
        let objs = objects(&render(k), &scratch);
        let ds = find(&objs, "DaemonSet", "flowscope-agent");
        let agent = &ds["spec"]["template"]["spec"]["containers"][0];
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let p = &agent[probe];
            assert!(
                p["tcpSocket"].is_null(),
                "{k}: agent {probe} checks health: {p}"
            );
            if p["grpc"].is_object() {
                assert_eq!(
                    p["grpc"]["service"], "hubble.server.Observer",
                    "{k}: {probe}"
                );
            } else {
                let cmd: Vec<&str> = p["exec"]["command"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{k}: agent {probe} is grpc or exec: {p}"))
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                assert_eq!(cmd.first(), Some(&"flowctl"), "{k}: {probe}");
                assert_eq!(cmd.last(), Some(&"status"), "{k}: {probe}");
                let socket = cmd
                    .iter()
                    .find_map(|a| a.strip_prefix("unix://"))
                    .unwrap_or_else(|| panic!("{k}: {probe} names the agent's socket"));
                let config = find(&objs, "ConfigMap", "flowscope-agent-config");
                let yaml = config["data"]["agent.yaml"].as_str().unwrap();
                assert!(
                    yaml.contains(&format!("socket: {socket}")),
                    "{k}: {probe} asks the socket the agent serves: {yaml}"
                );
            }
        }
    }
    for r in ["requests", "limits"] {
        assert!(agent["resources"][r]["memory"].is_string(), "agent {r}");
    }
    assert_eq!(
        agent["env"][0],
        serde_json::json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    );
    // The headless Service selects the agents, on the port they serve.
    let svc = find(&objs, "Service", "flowscope-agent");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(
        svc["spec"]["selector"],
        ds["spec"]["selector"]["matchLabels"]
    );
    let relay_svc = find(&objs, "Service", "flowscope-relay");
    assert_eq!(relay_svc["spec"]["ports"][0]["port"], 4245);
}

/// The agent's config file of each kustomization is one the agent accepts, and the relay's
/// environment variables and arguments are ones it knows.
#[test]
fn the_binaries_accept_the_manifests_options() {
    if !tools("the_binaries_accept_the_manifests_options") {
        return;
    }
    let agent_bin = testbed::bin_path("monitor-agent");
    let relay_bin = testbed::bin_path("flowscope-relay");
    let relay_help = Command::new(&relay_bin).arg("--help").output().unwrap();
    let relay_help = String::from_utf8_lossy(&relay_help.stdout).into_owned();
    for dir in KUSTOMIZATIONS {
        let scratch = Scratch::new(&format!("options-{}", dir.replace('/', "-")));
        let objs = objects(&render(dir), &scratch);

        let config = find(&objs, "ConfigMap", "flowscope-agent-config");
        let file = scratch.0.join("agent.yaml");
        std::fs::write(&file, config["data"]["agent.yaml"].as_str().unwrap()).unwrap();
        // `--version` after the file's options: they are parsed and checked, nothing runs.
        let out = Command::new(&agent_bin)
            .arg(format!("--config={}", file.display()))
            .arg("--version")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{dir}: the agent refuses its config file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The DaemonSet points the agent at that file, mounted from that ConfigMap.
        let ds = find(&objs, "DaemonSet", "flowscope-agent");
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["args"],
            serde_json::json!(["--config=/etc/flowscope/agent.yaml"])
        );
        assert!(
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["configMap"]["name"] == "flowscope-agent-config")
        );

        let env = find(&objs, "ConfigMap", "flowscope-relay-config");
        let mut args: Vec<String> = env["data"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(key, _)| *key != "RUST_LOG")
            .map(|(key, value)| relay_env_arg(&relay_help, key, value.as_str().unwrap()))
            .collect();
        let relay = find(&objs, "Deployment", "flowscope-relay");
        args.extend(
            relay["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().unwrap().to_owned()),
        );
        let out = Command::new(&relay_bin)
            .args(&args)
            .arg("--version")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{dir}: the relay refuses {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `deploy/systemd`: the agent's example config file and the relay's environment file hold
/// options the binaries know, and the units run the binaries with them.
#[test]
fn systemd_files_agree_with_the_binaries() {
    let systemd = repo().join("deploy/systemd");
    let out = Command::new(testbed::bin_path("monitor-agent"))
        .arg(format!("--config={}", systemd.join("agent.yaml").display()))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the agent refuses deploy/systemd/agent.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = Command::new(testbed::bin_path("flowscope-relay"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let env = std::fs::read_to_string(systemd.join("relay.env")).unwrap();
    let args: Vec<String> = env
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.split_once('=').expect("KEY=value");
            relay_env_arg(&help, key, value)
        })
        .collect();
    let out = Command::new(testbed::bin_path("flowscope-relay"))
        .args(&args)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the relay refuses relay.env: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (unit, line) in [
        (
            "flowscope-agent.service",
            "ExecStart=/usr/local/bin/monitor-agent --config=/etc/flowscope/agent.yaml",
        ),
        (
            "flowscope-relay.service",
            "EnvironmentFile=/etc/flowscope/relay.env",
        ),
    ] {
        let text = std::fs::read_to_string(systemd.join(unit)).unwrap();
        assert!(text.lines().any(|l| l == line), "{unit}: {line}");
    }
}
