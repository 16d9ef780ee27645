//! The real `flowctl` binary against an in-process Observer server, over TCP
//! and a unix socket. Every wait is bounded.

mod support;

use std::io::BufRead as _;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flowscope_proto::observer::{GetFlowsResponse, Node, ServerStatusResponse};
use flowscope_proto::relay::NodeState;
use support::{Ca, Canned, TestServer, flow, flowctl, run};

const LIMIT: Duration = Duration::from_secs(20);

fn history(n: u32) -> Vec<GetFlowsResponse> {
    (0..n)
        .map(|i| flow(i, 40000 + (i % 20000) as u16))
        .collect()
}

fn config_home() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn observe_json_lines_parse_back() {
    let canned = Canned {
        history: history(5),
        ..Default::default()
    };
    let requests = canned.requests.clone();
    let server = TestServer::tcp(canned.clone());
    let home = config_home();
    let mut cmd = flowctl(home.path());
    cmd.args([
        "--server",
        &server.addr,
        "observe",
        "-o",
        "json",
        "--last",
        "100",
    ]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<GetFlowsResponse> = out
        .stdout
        .lines()
        .map(|line| flowscope_proto::json::from_json(line).unwrap())
        .collect();
    assert_eq!(lines, canned.history);
    let requests = requests.lock().unwrap();
    let (request, header) = &requests[0];
    assert_eq!(request.number, 100);
    assert!(!request.follow && !request.first);
    assert_eq!(
        header.as_deref(),
        Some("true"),
        "flowctl asks for flowscope's extensions"
    );
}

#[test]
fn observe_last_2_prints_2_lines() {
    let server = TestServer::tcp(Canned {
        history: history(10),
        ..Default::default()
    });
    let home = config_home();
    let mut cmd = flowctl(home.path());
    cmd.args(["--server", &server.addr, "observe", "--last", "2"]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "Nov 26 11:00:00.008: default/pod-a:40008 (ID:42837) -> 1.0.0.1:80 (world) from-endpoint FORWARDED (TCP Flags: SYN)\n\
         Nov 26 11:00:00.009: default/pod-a:40009 (ID:42837) -> 1.0.0.1:80 (world) from-endpoint FORWARDED (TCP Flags: SYN)\n"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn observe_over_a_unix_socket_with_filters() {
    let canned = Canned {
        history: history(3),
        ..Default::default()
    };
    let requests = canned.requests.clone();
    let server = TestServer::unix(canned);
    assert!(server.addr.starts_with("unix:///"));
    let home = config_home();
    let mut cmd = flowctl(home.path());
    cmd.args([
        "--server",
        &server.addr,
        "observe",
        "-o",
        "monitor",
        "--ip",
        "1.0.0.1",
        "--not",
        "-t",
        "trace:to-network",
    ]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    assert!(
        out.stdout
            .starts_with("<- endpoint 762 flow 0x0 identity 42837->world state new ifindex 0 orig-ip 0.0.0.0: 10.244.0.213:40000 -> 1.0.0.1:80 tcp SYN\n"),
        "{}",
        out.stdout
    );
    let requests = requests.lock().unwrap();
    let (request, _) = &requests[0];
    assert_eq!(request.number, 20, "Hubble's default --last");
    assert_eq!(request.whitelist.len(), 2);
    assert_eq!(request.whitelist[0].source_ip, ["1.0.0.1"]);
    assert_eq!(request.whitelist[1].destination_ip, ["1.0.0.1"]);
    assert_eq!(request.blacklist.len(), 1);
    assert_eq!(request.blacklist[0].event_type[0].sub_type, 11);
}

#[test]
fn follow_prints_a_late_flow_within_a_second() {
    let server = TestServer::tcp(Canned {
        history: history(1),
        late: vec![(Duration::from_millis(300), flow(5000, 50000))],
        ..Default::default()
    });
    let home = config_home();
    let mut cmd = flowctl(home.path());
    cmd.args([
        "--server",
        &server.addr,
        "observe",
        "--follow",
        "--last",
        "1",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10));
    // The server keeps the stream open for 30 s after the late flow: a flowctl that held its
    // output back until the stream ends would print nothing within these 10 s.
    let late = rx.recv_timeout(Duration::from_secs(10));
    // Follow mode runs until Ctrl-C: stop it ourselves.
    let _ = child.kill();
    let _ = child.wait();
    let (t1, line1) = first.expect("the history flow");
    assert!(line1.contains(":40000 "), "{line1}");
    let (t2, line2) = late.expect("the flow sent 300 ms later, within 10 s");
    assert!(
        line2.contains("Nov 26 11:00:05.000: default/pod-a:50000 "),
        "{line2}"
    );
    // Within a second of the history, on an idle machine; 3 s leaves a loaded one room.
    assert!(
        t2 - t1 < Duration::from_secs(3),
        "the late flow printed {:?} after the history",
        t2 - t1
    );
}

#[test]
fn follow_ends_cleanly_on_ctrl_c() {
    let server = TestServer::tcp(Canned {
        history: history(1),
        ..Default::default()
    });
    let home = config_home();
    let mut cmd = flowctl(home.path());
    cmd.args(["--server", &server.addr, "observe", "-f", "--last", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("default/pod-a:40000"), "{line}");
    // SIGINT to this child only, as Ctrl-C would send it.
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
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exits 0 after Ctrl-C"
    );
}

#[test]
fn closed_pipe_exits_0_quietly() {
    // Far more output than a pipe holds, so writes go on after head exits.
    let server = TestServer::tcp(Canned {
        history: history(5000),
        ..Default::default()
    });
    let home = config_home();
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("rc");
    let err = dir.path().join("err");
    let mut cmd = flowctl(home.path());
    let mut sh = std::process::Command::new("sh");
    sh.envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env_remove("FLOWSCOPE_SERVER")
        .arg("-c")
        .arg(r#"{ "$0" --server "$1" observe --last 5000; echo $? > "$2"; } 2>"$3" | head -1"#)
        .arg(cmd.get_program())
        .arg(&server.addr)
        .arg(&rc)
        .arg(&err);
    cmd = sh;
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert_eq!(
        std::fs::read_to_string(&rc).unwrap().trim(),
        "0",
        "flowctl's exit status"
    );
    assert_eq!(
        std::fs::read_to_string(&err).unwrap(),
        "",
        "nothing on stderr"
    );
}

#[test]
fn unreachable_server_fails_fast_naming_it() {
    let home = config_home();
    let mut cmd = flowctl(home.path());
    cmd.args(["--server", "127.0.0.1:1", "observe"]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.elapsed < Duration::from_secs(4), "{:?}", out.elapsed);
    assert!(
        out.stderr
            .starts_with("error: cannot reach the flowscope server at 127.0.0.1:1: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .trim_end()
            .ends_with("(use --server or FLOWSCOPE_SERVER)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "printed once: {}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn silent_server_times_out() {
    // Accepts TCP connections (the kernel does, into the backlog) but never
    // speaks HTTP/2.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let home = config_home();
    for args in [&["observe"][..], &["status"][..], &["nodes"][..]] {
        let mut cmd = flowctl(home.path());
        cmd.args(["--server", &addr, "--timeout", "1s"]).args(args);
        let out = run(cmd, LIMIT);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            out.elapsed < Duration::from_secs(4),
            "{args:?}: {:?}",
            out.elapsed
        );
        assert!(
            out.stderr.starts_with(&format!(
                "error: cannot reach the flowscope server at {addr}: "
            )),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("within 1s (--timeout)"),
            "{args:?}: {}",
            out.stderr
        );
    }
    drop(listener);
}

#[test]
fn missing_unix_socket_is_named() {
    let home = config_home();
    let mut cmd = flowctl(home.path());
    cmd.args(["status"])
        .env("FLOWSCOPE_SERVER", "unix:///nonexistent/flowscope.sock");
    let out = run(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("cannot reach the flowscope server at unix:///nonexistent/flowscope.sock: "),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_values_are_usage_errors_without_a_server() {
    let home = config_home();
    for (args, expected) in [
        (
            &["observe", "--ip", "1.2.3"][..],
            "expected an IP address or a CIDR",
        ),
        (
            &["observe", "--ip", "1.1.1.1", "--from-ip", "2.2.2.2"][..],
            "cannot be combined",
        ),
        (&["observe", "--not"][..], "trailing --not"),
        (
            &["observe", "--first", "3", "--last", "2"][..],
            "cannot be used with",
        ),
        (
            &["observe", "-o", "table", "-f"][..],
            "not compatible with --follow",
        ),
        (
            &["--server", "localhost", "status"][..],
            "expected unix:///path/to/socket or host:port",
        ),
        (
            &["observe", "--since", "yesterday"][..],
            "expected RFC 3339",
        ),
    ] {
        let mut cmd = flowctl(home.path());
        // A server that does not exist: usage errors come before dialing.
        cmd.env("FLOWSCOPE_SERVER", "127.0.0.1:1").args(args);
        let out = run(cmd, LIMIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("error: "),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn status_prints_health_and_server_status() {
    let server = TestServer::tcp(Canned {
        status: ServerStatusResponse {
            num_flows: 100,
            max_flows: 4095,
            seen_flows: 5000,
            uptime_ns: 100_000_000_000,
            num_connected_nodes: Some(2),
            num_unavailable_nodes: Some(1),
            unavailable_nodes: vec!["node-3".into()],
            version: "flowscope-relay 0.1.0".into(),
            flows_rate: 0.0,
        },
        ..Default::default()
    });
    let home = config_home();
    let mut cmd = flowctl(home.path());
    cmd.args(["status", "--server", &server.addr]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        format!(
            "Healthcheck (via {}): Ok\nCurrent/Max Flows: 100/4,095 (2.44%)\nFlows/s: 50.00\n\
             Connected Nodes: 2/3\nUnavailable Nodes: 1\n  - node-3\nVersion: flowscope-relay 0.1.0\n",
            server.addr
        )
    );
}

#[test]
fn nodes_prints_a_table() {
    let server = TestServer::unix(Canned {
        nodes: vec![
            Node {
                name: "node-2".into(),
                state: NodeState::NodeUnavailable as i32,
                ..Default::default()
            },
            Node {
                name: "node-1".into(),
                state: NodeState::NodeConnected as i32,
                uptime_ns: 60_000_000_000,
                num_flows: 10,
                max_flows: 100,
                seen_flows: 120,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let home = config_home();
    let mut cmd = flowctl(home.path());
    cmd.args(["nodes"]).env("FLOWSCOPE_SERVER", &server.addr);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "NAME     STATUS        AGE    FLOWS/S   CURRENT/MAX-FLOWS\n\
         node-1   Connected     1m0s   2.00      10/100 ( 10.00%)\n\
         node-2   Unavailable   N/A    N/A       N/A\n"
    );
}

#[test]
fn config_file_gives_server_and_output() {
    let server = TestServer::tcp(Canned {
        history: history(2),
        ..Default::default()
    });
    let home = config_home();
    let dir = home.path().join("flowctl");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "server: {}\noutput: dict\ntime-format: RFC3339\n",
            server.addr
        ),
    )
    .unwrap();
    let mut cmd = flowctl(home.path());
    cmd.args(["observe"]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout
            .starts_with("  TIMESTAMP: 2025-11-26T11:00:00Z\n     SOURCE: default/pod-a:40000\n"),
        "{}",
        out.stdout
    );
    // Flags win over the file.
    let mut cmd = flowctl(home.path());
    cmd.args(["observe", "-o", "compact", "--last", "1"]);
    let out = run(cmd, LIMIT);
    assert!(
        out.stdout
            .starts_with("2025-11-26T11:00:00Z: default/pod-a:40001 "),
        "{}",
        out.stdout
    );
}

#[test]
fn help_documents_examples_and_exit_codes() {
    let home = config_home();
    let mut cmd = flowctl(home.path());
    cmd.args(["observe", "--help"]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success());
    for needle in [
        "Examples:",
        "Exit status:",
        "--not",
        "--ip <IP>",
        "-t, --type <TYPE>",
        "[env: FLOWSCOPE_SERVER=",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle} missing from:\n{}",
            out.stdout
        );
    }
}

#[test]
fn completion_scripts() {
    let home = config_home();
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = flowctl(home.path());
        cmd.args(["completion", shell]);
        let out = run(cmd, LIMIT);
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(out.stdout.contains("observe"), "{shell}");
        assert!(out.stdout.contains("tcp-flags"), "{shell}");
    }
}

#[test]
fn tls_and_mutual_tls() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf("relay.flowscope.test", false);
    let (client_cert, client_key) = ca.leaf("flowctl", true);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    let ca_file = write("ca.pem", &ca.cert_pem);
    let cert_file = write("client.pem", &client_cert);
    let key_file = write("client-key.pem", &client_key);
    let server = TestServer::tls(
        Canned {
            history: history(3),
            ..Default::default()
        },
        &cert,
        &key,
        Some(&ca.cert_pem),
    );
    let home = config_home();
    let tls_args = [
        "--tls-ca-cert-files",
        &ca_file,
        "--tls-server-name",
        "relay.flowscope.test",
    ];

    // Mutual TLS: the server checks flowctl's certificate.
    let mut cmd = flowctl(home.path());
    cmd.args(["observe", "--server", &server.addr, "--last", "3"])
        .args(tls_args)
        .args([
            "--tls-client-cert-file",
            &cert_file,
            "--tls-client-key-file",
            &key_file,
        ]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);

    // Without a client certificate the server refuses.
    let mut cmd = flowctl(home.path());
    cmd.args(["observe", "--server", &server.addr])
        .args(tls_args);
    let out = run(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // A certificate for another name is refused by flowctl.
    let mut cmd = flowctl(home.path());
    cmd.args(["status", "--server", &format!("tls://{}", server.addr)])
        .args([
            "--tls-ca-cert-files",
            &ca_file,
            "--tls-server-name",
            "other.test",
        ])
        .args([
            "--tls-client-cert-file",
            &cert_file,
            "--tls-client-key-file",
            &key_file,
        ]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot reach the flowscope server at tls://{}: ",
            server.addr
        )),
        "{}",
        out.stderr
    );

    // A key without its certificate is a usage error.
    let mut cmd = flowctl(home.path());
    cmd.args([
        "status",
        "--server",
        &server.addr,
        "--tls-client-key-file",
        &key_file,
    ]);
    let out = run(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
