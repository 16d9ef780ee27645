//! Where the agent serves its API, as README says: a root-only unix socket always, TCP only when
//! asked, and never plain TCP unless the user says the network is trusted. Privileged; serial.

use std::{os::unix::fs::PermissionsExt as _, process::Command};

use testbed::{Scenario, bin_path, netns, require_root};

/// TCP sockets listening in namespace `ns` (`ss -ltnH`: local address:port per line).
fn listening(ns: &str) -> Vec<String> {
    let out = netns::run(ns, &["ss", "-ltnH"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

fn flowctl_status(ns: &str, server: &str) -> (bool, String) {
    let out = netns::try_run(
        ns,
        &[
            "timeout",
            "20",
            bin_path("flowctl").to_str().unwrap(),
            "--server",
            server,
            "status",
        ],
    );
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_api_is_a_root_only_socket_and_tcp_only_when_asked() {
    if !require_root("the_api_is_a_root_only_socket_and_tcp_only_when_asked") {
        return;
    }
    let s = Scenario::build();

    // Default: the unix socket, mode 0600, and nothing on TCP but the metrics port.
    let mut agent = s.start_agent(&["--metrics-listen-address", ""]);
    let mode = std::fs::metadata(s.agent_socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    assert_eq!(listening(&s.node()), Vec::<String>::new());
    assert!(agent.stop().success());

    // TCP without TLS files: the agent refuses to start, and says what to do.
    let out = Command::new("ip")
        .args(["netns", "exec", &s.node()])
        .arg(bin_path("monitor-agent"))
        .args(["--socket", s.dir().join("x.sock").to_str().unwrap()])
        .args(["--listen-address", "127.0.0.1:4299"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--tls-disabled"), "{stderr}");

    // --tls-disabled: plain text on the address asked for, readable by flowctl.
    let mut agent = s.start_agent(&[
        "--metrics-listen-address",
        "",
        "--listen-address",
        "127.0.0.1:4299",
        "--tls-disabled",
    ]);
    assert_eq!(listening(&s.node()), vec!["127.0.0.1:4299".to_owned()]);
    let (ok, out) = flowctl_status(&s.node(), "127.0.0.1:4299");
    assert!(ok, "{out}");
    assert!(
        out.contains("Healthcheck (via 127.0.0.1:4299): Ok"),
        "{out}"
    );
    assert!(agent.stop().success());
}
