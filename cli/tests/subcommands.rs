//! `flowctl list`, `flowctl config` and `flowctl watch peers`, the real binary against an
//! in-process server (Observer and Peer) or a temporary config directory.

mod support;

use std::io::BufRead as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use flowscope_proto::observer::{Namespace, Node};
use flowscope_proto::peer::{ChangeNotification, ChangeNotificationType, Tls};
use flowscope_proto::relay::NodeState;
use support::{Canned, TestServer, flowctl, run};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn list_namespaces_and_nodes() {
    let server = TestServer::unix(Canned {
        namespaces: vec![
            Namespace {
                cluster: String::new(),
                namespace: "default".into(),
            },
            Namespace {
                cluster: String::new(),
                namespace: "kube-system".into(),
            },
        ],
        nodes: vec![Node {
            name: "node-1".into(),
            state: NodeState::NodeConnected as i32,
            ..Default::default()
        }],
        ..Default::default()
    });
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.args(["--server", &server.addr, "list", "namespaces"]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "NAMESPACE\ndefault\nkube-system\n");
    let mut cmd = flowctl(home.path());
    cmd.args(["--server", &server.addr, "list", "namespaces", "-o", "json"]);
    let out = run(cmd, LIMIT);
    let parsed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(parsed[1]["namespace"], "kube-system");
    // `list nodes` is `nodes`.
    let nodes = |args: &[&str]| {
        let mut cmd = flowctl(home.path());
        cmd.args(["--server", &server.addr]).args(args);
        let out = run(cmd, LIMIT);
        assert!(out.status.success(), "{args:?}: {out:?}");
        out.stdout
    };
    assert_eq!(
        nodes(&["list", "nodes", "-o", "wide"]),
        nodes(&["nodes", "-o", "wide"])
    );
    assert!(nodes(&["list", "nodes"]).starts_with("NAME     STATUS"));
}

fn peer(
    kind: ChangeNotificationType,
    name: &str,
    addr: &str,
    tls: Option<&str>,
) -> ChangeNotification {
    ChangeNotification {
        name: name.into(),
        address: addr.into(),
        r#type: kind as i32,
        tls: tls.map(|server_name| Tls {
            server_name: server_name.into(),
        }),
    }
}

#[test]
fn watch_peers_prints_hubbles_lines_until_the_stream_ends() {
    let ms = Duration::from_millis;
    let server = TestServer::tcp(Canned {
        peers: Some(vec![
            (
                ms(0),
                peer(
                    ChangeNotificationType::PeerAdded,
                    "node-1",
                    "10.0.0.1:4244",
                    None,
                ),
            ),
            (
                ms(0),
                peer(
                    ChangeNotificationType::PeerAdded,
                    "node-2",
                    "10.0.0.2:4244",
                    Some("node-2.default.hubble-grpc.cilium.io"),
                ),
            ),
            (
                ms(100),
                peer(
                    ChangeNotificationType::PeerDeleted,
                    "node-1",
                    "10.0.0.1:4244",
                    None,
                ),
            ),
        ]),
        ..Default::default()
    });
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.args(["--server", &server.addr, "watch", "peers"]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "PEER_ADDED   10.0.0.1:4244 node-1\n\
         PEER_ADDED   10.0.0.2:4244 node-2 (TLS.ServerName: node-2.default.hubble-grpc.cilium.io)\n\
         PEER_DELETED 10.0.0.1:4244 node-1\n"
    );
}

#[test]
fn watch_peers_is_live_and_ends_on_ctrl_c() {
    let server = TestServer::tcp(Canned {
        peers: Some(vec![
            (
                Duration::ZERO,
                peer(
                    ChangeNotificationType::PeerAdded,
                    "node-1",
                    "10.0.0.1:4244",
                    None,
                ),
            ),
            (
                Duration::from_millis(300),
                peer(
                    ChangeNotificationType::PeerUpdated,
                    "node-1",
                    "10.0.0.9:4244",
                    None,
                ),
            ),
        ]),
        peers_hold: true,
        ..Default::default()
    });
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.args(["--server", &server.addr, "watch", "peer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..2 {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let _ = tx.send((Instant::now(), line));
        }
    });
    // The server keeps the stream open for 30 s: lines held back until the end would not
    // show within these 10 s.
    let first = rx.recv_timeout(Duration::from_secs(10));
    let second = rx.recv_timeout(Duration::from_secs(10));
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = support::wait(&mut child, Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(first.unwrap().1, "PEER_ADDED   10.0.0.1:4244 node-1\n");
    assert_eq!(second.unwrap().1, "PEER_UPDATED 10.0.0.9:4244 node-1\n");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exits 0 after Ctrl-C"
    );
}

#[test]
fn watch_peers_on_a_server_without_the_service() {
    let server = TestServer::tcp(Canned::default());
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.args(["--server", &server.addr, "watch", "peers"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("this server has no Peer service")
            && out.stderr.contains("Unimplemented"),
        "{}",
        out.stderr
    );
}

/// `flowctl ARGS` with `home` as XDG_CONFIG_HOME.
fn flowctl_in(home: &std::path::Path, args: &[&str]) -> support::Finished {
    let mut cmd = flowctl(home);
    cmd.args(args);
    run(cmd, LIMIT)
}

#[test]
fn config_view_get_set_reset() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("flowctl/config.yaml");

    // Nothing set: the defaults (the server: wherever flowctl would connect on this machine).
    let out = flowctl_in(home.path(), &["--server", "relay:4245", "config", "view"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "color: auto\noutput: compact\nprint-node-name: false\nserver: relay:4245\n\
         time-format: StampMilli\ntimeout: 5s\ntls: false\ntls-ca-cert-files: []\n\
         tls-client-cert-file: ''\ntls-client-key-file: ''\ntls-server-name: ''\n"
    );
    assert!(!file.exists(), "view writes nothing");

    // set writes the file, typed and checked; view and get show it; observe uses it.
    for (key, value) in [
        ("server", "tls://relay.example:4245"),
        ("timeout", "1m30s"),
        (
            "tls-ca-cert-files",
            "/etc/flowscope/ca.pem,/etc/flowscope/ca2.pem",
        ),
        ("output", "json"),
        ("time-format", "rfc3339nano"),
        ("print-node-name", "true"),
    ] {
        let out = flowctl_in(home.path(), &["config", "set", key, value]);
        assert!(out.status.success(), "{key}: {out:?}");
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text,
        "server: tls://relay.example:4245\ntimeout: 1m30s\ntls-ca-cert-files:\n\
         - /etc/flowscope/ca.pem\n- /etc/flowscope/ca2.pem\noutput: json\n\
         time-format: RFC3339Nano\nprint-node-name: true\n"
    );
    let get = |key: &str| {
        let out = flowctl_in(home.path(), &["config", "get", key]);
        assert!(out.status.success(), "{key}: {out:?}");
        out.stdout
    };
    assert_eq!(get("server"), "tls://relay.example:4245\n");
    assert_eq!(get("timeout"), "1m30s\n");
    assert_eq!(get("print-node-name"), "true\n");
    assert_eq!(
        get("tls-ca-cert-files"),
        "- /etc/flowscope/ca.pem\n- /etc/flowscope/ca2.pem\n"
    );
    // Flags and the environment win over the file, as for every command.
    let out = flowctl_in(
        home.path(),
        &["--server", "other:1", "config", "get", "server"],
    );
    assert_eq!(out.stdout, "other:1\n");
    let mut cmd = flowctl(home.path());
    cmd.env("FLOWSCOPE_SERVER", "unix:///run/x.sock")
        .args(["config", "get", "server"]);
    assert_eq!(run(cmd, LIMIT).stdout, "unix:///run/x.sock\n");
    // `get` without a key is `view`.
    assert_eq!(
        flowctl_in(home.path(), &["config", "get"]).stdout,
        flowctl_in(home.path(), &["config", "view"]).stdout
    );

    // Bad keys and values are usage errors, and the file is left alone.
    for (args, expected) in [
        (
            &["config", "set", "sever", "x:1"][..],
            "invalid value 'sever'",
        ),
        (
            &["config", "set", "output", "xml"][..],
            "expected compact, dict",
        ),
        (
            &["config", "set", "tls", "maybe"][..],
            "expected true or false",
        ),
        (&["config", "get", "nope"][..], "invalid value 'nope'"),
    ] {
        let out = flowctl_in(home.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // set without a value, and reset KEY, remove the key; reset removes them all.
    assert!(
        flowctl_in(home.path(), &["config", "set", "timeout"])
            .status
            .success()
    );
    assert!(
        flowctl_in(home.path(), &["config", "reset", "output"])
            .status
            .success()
    );
    assert_eq!(get("timeout"), "5s\n");
    assert_eq!(get("output"), "compact\n");
    assert!(std::fs::read_to_string(&file).unwrap().contains("server: "));
    assert!(
        flowctl_in(home.path(), &["config", "reset"])
            .status
            .success()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
}

#[test]
fn config_set_repairs_a_file_that_does_not_load() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("flowctl");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.yaml"), "output: xml\nserver: relay:4245\n").unwrap();
    // Other commands refuse the file, naming the problem.
    let out = flowctl_in(home.path(), &["observe"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("unknown variant `xml`"),
        "{}",
        out.stderr
    );
    // `config set` fixes it, keeping the rest.
    let out = flowctl_in(home.path(), &["config", "set", "output", "dict"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("config.yaml")).unwrap(),
        "output: dict\nserver: relay:4245\n"
    );
    // --config names another file, created on demand.
    let other = home.path().join("elsewhere/flowctl.yaml");
    let out = flowctl_in(
        home.path(),
        &[
            "--config",
            other.to_str().unwrap(),
            "config",
            "set",
            "color",
            "never",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "color: never\n");
}
