//! `flowctl observe --input-file`: Hubble JSON lines read offline, with the filters, the
//! selection and every output of `observe`. Fixtures: `hubble-observe.json` holds what
//! `hubble observe -o json` prints (its first line is the golden Hubble line of
//! proto/tests/json.rs), `export.json` an export file's ExportEvent lines.

mod support;

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use flowscope_proto::observer::GetFlowsResponse;
use flowscope_proto::observer::get_flows_response::ResponseTypes;
use support::{flowctl, run};

const LIMIT: Duration = Duration::from_secs(20);
const HUBBLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/hubble-observe.json"
);
const EXPORT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/export.json");

/// The UUIDs of the flows of the golden line, the policy drop and the export file's flow.
const GOLDEN: &str = "6b6e4ffb-0a4f-4b1c-a2d2-1b7f4d4c9f10";
const POLICY_DROP: &str = "0f3c8a5e-3b0e-4a59-9d6e-7d1c2b9a4e01";
const KERNEL_DROP: &str = "3c1d7a52-8f7e-4d0b-b6a9-51f2e8c0d7aa";

/// `flowctl observe --input-file FILES… ARGS…` with no server anywhere: offline reading must
/// never dial.
fn observe(args: &[&str]) -> support::Finished {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.env("FLOWSCOPE_SERVER", "127.0.0.1:1")
        .arg("observe")
        .args(args);
    run(cmd, LIMIT)
}

/// What each stdout line is: a flow's UUID, `lost`, or `other`.
fn kinds(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| {
            let res: GetFlowsResponse =
                flowscope_proto::json::from_json(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            match res.response_types {
                Some(ResponseTypes::Flow(f)) => f.uuid,
                Some(ResponseTypes::LostEvents(_)) => "lost".into(),
                _ => "other".into(),
            }
        })
        .collect()
}

#[test]
fn hubbles_own_json_reads_back_byte_for_byte() {
    let out = observe(&["--input-file", HUBBLE, "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, std::fs::read_to_string(HUBBLE).unwrap());
    assert_eq!(out.stderr, "");
    // Every line, also after flowctl, is what Hubble's tooling reads.
    if let Some(verdict) = support::hubble_protojson_check(&out.stdout) {
        assert_eq!(verdict.unwrap(), "parsed 3 lines");
    }
}

#[test]
fn every_output_format_reads_a_file() {
    let out = observe(&["--input-file", HUBBLE]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout,
        "Nov 26 11:00:01.123: default/pod-a:59242 (ID:42837) -> 1.0.0.1:80 (world) to-endpoint FORWARDED (TCP Flags: SYN)\n\
         Nov 26 11:00:02.500: shop/web-7d4b9c-x2k8f:53001 (ID:51234) -> kube-system/coredns-5d78c9869d-abcde:53 (ID:4817) POLICY_DENIED DROPPED (UDP)\n\
         EVENTS LOST: HUBBLE_RING_BUFFER CPU(0) 12\n"
    );
    let out = observe(&["--input-file", HUBBLE, "-o", "table", "--print-node-name"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout
            .starts_with("TIMESTAMP             NODE          SOURCE"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);
    let out = observe(&["--input-file", HUBBLE, "-o", "dict", "--uuid", GOLDEN]);
    assert!(
        out.stdout
            .starts_with("  TIMESTAMP: Nov 26 11:00:01.123\n     SOURCE: default/pod-a:59242\n"),
        "{}",
        out.stdout
    );
    let out = observe(&["--input-file", HUBBLE, "-o", "monitor", "--uuid", GOLDEN]);
    assert!(
        out.stdout
            .contains("10.244.0.213:59242 -> 1.0.0.1:80 tcp SYN"),
        "{}",
        out.stdout
    );
}

#[test]
fn export_files_and_flowscopes_extension() {
    // ExportEvent lines: the flow (with flowscope's extension), the loss; the node status
    // goes to stderr as with a server; the agent event is not a flow.
    let out = observe(&["--input-file", EXPORT, "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(kinds(&out.stdout), [KERNEL_DROP, "lost"]);
    assert!(!out.stdout.contains("extensions"), "{}", out.stdout);
    assert!(out.stderr.contains("NODE_UNAVAILABLE"), "{}", out.stderr);
    // The extension was read: compact prints the kernel's drop reason, --print-extensions
    // writes it back.
    let out = observe(&["--input-file", EXPORT]);
    assert!(
        out.stdout
            .starts_with("Nov 26 11:00:04.250: default/pod-a:59300 (ID:42837) -> 1.0.0.1:8080 (world) NETFILTER_DROP DROPPED (TCP Flags: SYN)\n"),
        "{}",
        out.stdout
    );
    let out = observe(&["--input-file", EXPORT, "-o", "json", "--print-extensions"]);
    assert!(
        out.stdout
            .contains(r#""kernel_drop_reason_name":"NETFILTER_DROP""#),
        "{}",
        out.stdout
    );
}

#[test]
fn filters_apply_to_the_file() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--ip", "1.0.0.1"], &[GOLDEN]),
        (&["--uuid", POLICY_DROP], &[POLICY_DROP]),
        (&["--verdict", "DROPPED"], &[POLICY_DROP]),
        (&["--not", "--verdict", "DROPPED"], &[GOLDEN, "lost"]),
        (&["--node-label", "kubernetes.io/os=linux"], &[POLICY_DROP]),
        (&["--node-label", "kubernetes.io/os=windows"], &[]),
        (&["--cluster", "prod"], &[POLICY_DROP]),
        (&["--to-cluster", "staging"], &[]),
        (&["--from-workload", "Deployment/web"], &[POLICY_DROP]),
        (&["--workload", "coredns"], &[POLICY_DROP]),
        (&["--to-workload", "web"], &[]),
        (&["--node-name", "prod/"], &[POLICY_DROP]),
        (&["-n", "kube-system", "--port", "53"], &[POLICY_DROP]),
        (&["--pod", "default/pod-a", "--to-port", "80"], &[GOLDEN]),
        (
            &["--allowlist", r#"{"drop_reason_desc":["POLICY_DENIED"]}"#],
            &[POLICY_DROP],
        ),
    ];
    for (args, want) in cases {
        let out = observe(&[&["--input-file", HUBBLE, "-o", "json"], *args].concat());
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(kinds(&out.stdout), *want, "{args:?}");
    }
}

#[test]
fn first_last_since_and_until_select_in_file_order() {
    let cases: &[(&[&str], &[&str])] = &[
        // Without a count, a file is read whole (a server would give its last 20).
        (&[], &[GOLDEN, POLICY_DROP, "lost"]),
        (&["--first", "1"], &[GOLDEN]),
        (&["--last", "2"], &[POLICY_DROP, "lost"]),
        (&["--last", "1", "--verdict", "FORWARDED"], &[GOLDEN]),
        (&["--all"], &[GOLDEN, POLICY_DROP, "lost"]),
        (&["--since", "2026-11-26T11:00:02Z"], &[POLICY_DROP, "lost"]),
        (
            &["--until", "2026-11-26T11:00:02.5Z"],
            &[GOLDEN, POLICY_DROP],
        ),
        (
            &[
                "--since",
                "2026-11-26T11:00:02Z",
                "--until",
                "2026-11-26T11:00:02Z",
            ],
            &[],
        ),
    ];
    for (args, want) in cases {
        let out = observe(&[&["--input-file", HUBBLE, "-o", "json"], *args].concat());
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(kinds(&out.stdout), *want, "{args:?}");
    }
}

#[test]
fn standard_input_and_damaged_lines() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.args(["observe", "--input-file", "-", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = std::fs::read_to_string(HUBBLE).unwrap();
    input.insert_str(0, "this is not JSON\n");
    input.push_str(&std::fs::read_to_string(EXPORT).unwrap());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let status = support::wait(&mut child, LIMIT).expect("flowctl ends at the end of its input");
    let out = child.wait_with_output().unwrap();
    assert!(status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        kinds(&stdout),
        [GOLDEN, POLICY_DROP, "lost", KERNEL_DROP, "lost"]
    );
    assert!(
        stderr.starts_with("warning: standard input:1: skipped, not a Hubble JSON event: "),
        "{stderr}"
    );
}

#[test]
fn usage_errors_offline() {
    for (args, expected) in [
        (
            &["--input-file", HUBBLE, "-o", "json", "--field-mask", "time"][..],
            "does not apply to --input-file",
        ),
        (
            &["--input-file", HUBBLE, "--node-label", "a in (b"][..],
            "invalid filter: invalid node_labels",
        ),
    ] {
        let out = observe(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
    let out = observe(&["--input-file", "/nonexistent/flows.json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: opening --input-file /nonexistent/flows.json: "),
        "{}",
        out.stderr
    );
}
