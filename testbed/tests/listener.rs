//! Where the agent serves its API, as README says: a root-only unix socket always, TCP only when
//! asked, and never plain TCP unless the user says the network is trusted. Privileged; serial.

use std::{os::unix::fs::PermissionsExt as _, process::Command};

use testbed::{Scenario, bin_path, certs::Ca, netns, require_root};

/// TCP sockets listening in namespace `ns` (`ss -ltnH`: local address:port per line).
fn listening(ns: &str) -> Vec<String> {
    let out = netns::run(ns, &["ss", "-ltnH"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

fn flowctl_status(ns: &str, server: &str) -> (bool, String) {
    flowctl_status_with(ns, server, &[])
}

/// `flowctl --server SERVER EXTRA… status` in `ns`, bounded to 20 s.
fn flowctl_status_with(ns: &str, server: &str, extra: &[&str]) -> (bool, String) {
    let flowctl = bin_path("flowctl");
    let mut args = vec![
        "timeout",
        "20",
        flowctl.to_str().unwrap(),
        "--server",
        server,
    ];
    args.extend_from_slice(extra);
    args.push("status");
    let out = netns::try_run(ns, &args);
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

/// TLS without client certificates (`--tls-cert-file` and `--tls-key-file`, no client CA): a
/// client that trusts the agent's CA reads it without a certificate of its own; a client that
/// trusts another CA, or speaks plain text, is refused.
#[test]
fn server_only_tls_serves_clients_without_certificates() {
    if !require_root("server_only_tls_serves_clients_without_certificates") {
        return;
    }
    let s = Scenario::build();
    let dir = s.dir();
    let ca = Ca::new("flowscope test CA");
    let ca_file = ca.write(dir, "ca");
    let other_ca_file = Ca::new("another CA").write(dir, "other-ca");
    let (cert, key) = ca.leaf(dir, "agent", "127.0.0.1", false);
    let mut agent = s.start_agent(&[
        "--metrics-listen-address",
        "",
        "--listen-address",
        "127.0.0.1:4297",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
    ]);
    assert_eq!(listening(&s.node()), vec!["127.0.0.1:4297".to_owned()]);
    let trusted = ["--tls", "--tls-ca-cert-files", ca_file.to_str().unwrap()];
    let (ok, out) = flowctl_status_with(&s.node(), "127.0.0.1:4297", &trusted);
    assert!(
        ok,
        "a client trusting the agent's CA, without a certificate: {out}"
    );
    assert!(
        out.contains("Healthcheck (via 127.0.0.1:4297): Ok"),
        "{out}"
    );
    let untrusted = [
        "--tls",
        "--tls-ca-cert-files",
        other_ca_file.to_str().unwrap(),
    ];
    let (ok, out) = flowctl_status_with(&s.node(), "127.0.0.1:4297", &untrusted);
    assert!(!ok, "a client trusting another CA must be refused: {out}");
    let (ok, out) = flowctl_status(&s.node(), "127.0.0.1:4297");
    assert!(!ok, "a plain-text client must be refused: {out}");
    assert!(agent.stop().success());
}
