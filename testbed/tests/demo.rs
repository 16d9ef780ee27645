//! README's first command, the demo, as a user runs it: it must build the scenario, show what
//! flowscope saw and clean up. Privileged; run serially.

use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use testbed::{bin_path, require_root};

#[test]
fn the_demo_shows_the_reference_scenario() {
    if !require_root("the_demo_shows_the_reference_scenario") {
        return;
    }
    let mut child = Command::new(bin_path("demo"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo");
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            // Our own child, by its PID.
            let _ = child.kill();
            panic!("the demo did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    assert!(status.success(), "demo failed: {stderr}\n{stdout}");
    for expected in [
        // Hubble's compact view of the HTTP GET, from the pod, masqueraded, and back.
        "default/pod-a:",
        // pod-a resolved the name first: the flows to 1.0.0.1 carry it.
        "one.one.one.one:80 (world)",
        "to-network FORWARDED (TCP Flags: SYN)",
        "to-endpoint FORWARDED",
        // The lab's cilium-monitor lines.
        "-> network flow 0x",
        // DNS and HTTP from the packets, as Hubble and cilium monitor print them.
        "dns-request datapath FORWARDED (DNS Query one.one.one.one. A)",
        "http-response FORWARDED (HTTP/1.0 404",
        "GET http://one.one.one.one/missing => 404",
        // The firewall's drop, with the kernel's reason.
        "NETFILTER_DROP",
        // Conntrack as `cilium bpf ct list global`, NAT, the path.
        "TCP OUT 10.244.0.213:",
        "SNAT",
        "from-endpoint → eth0 to-network +",
        // The web view's address.
        "web view: http://",
        "Done: namespaces removed",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // Nothing left behind: the demo's namespaces (named after its PID) are gone.
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with(&format!("fs{pid}-"))),
        "the demo's namespaces are left: {left}"
    );
}
