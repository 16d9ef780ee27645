//! `flowctl observe -o json` is Hubble's JSON: what Hubble's own tooling reads, checked with an
//! independent protojson implementation that knows only Hubble's packages.

mod support;

use std::time::Duration;

use flowscope_proto::flow::LostEvent;
use flowscope_proto::observer::GetFlowsResponse;
use flowscope_proto::observer::get_flows_response::ResponseTypes;
use support::{Canned, TestServer, dropped_with_extension, flow, flowctl, run};

const LIMIT: Duration = Duration::from_secs(20);

/// A history like the agent's: flows, a kernel drop with flowscope's extension, a loss notice.
fn agent_like_history() -> Vec<GetFlowsResponse> {
    let lost = GetFlowsResponse {
        response_types: Some(ResponseTypes::LostEvents(LostEvent {
            source: 1,
            num_events_lost: 3,
            cpu: Some(0),
            ..Default::default()
        })),
        node_name: "node-1".into(),
        time: flow(3, 1).time,
    };
    vec![
        flow(0, 40000),
        dropped_with_extension(1, 40001),
        flow(2, 40002),
        lost,
    ]
}

#[test]
fn json_output_is_read_by_hubbles_tooling() {
    let canned = Canned {
        history: agent_like_history(),
        ..Default::default()
    };
    let requests = canned.requests.clone();
    let server = TestServer::tcp(canned);
    let home = tempfile::tempdir().unwrap();
    for format in ["json", "jsonpb"] {
        let mut cmd = flowctl(home.path());
        cmd.args(["--server", &server.addr, "observe", "-o", format]);
        let out = run(cmd, LIMIT);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);
        if let Some(verdict) = support::hubble_protojson_check(&out.stdout) {
            let summary = verdict.unwrap_or_else(|e| {
                panic!("Hubble's tooling rejects `flowctl observe -o {format}`: {e}")
            });
            assert_eq!(summary, "parsed 4 lines");
        }
        assert!(
            !out.stdout.contains("extensions") && !out.stdout.contains("flowscope"),
            "-o {format} prints flowscope's extension by default:\n{}",
            out.stdout
        );
    }
    // flowctl still asks for the extensions: its text outputs print the kernel's drop reason.
    let requests = requests.lock().unwrap();
    assert!(
        requests
            .iter()
            .all(|(_, header)| header.as_deref() == Some("true"))
    );
}

#[test]
fn print_extensions_adds_flowscopes_extension_to_json() {
    let server = TestServer::tcp(Canned {
        history: agent_like_history(),
        ..Default::default()
    });
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.args([
        "--server",
        &server.addr,
        "observe",
        "-o",
        "json",
        "--print-extensions",
    ]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    let drop_line = out.stdout.lines().nth(1).unwrap();
    assert!(
        drop_line.contains(
            r#""extensions":{"@type":"type.googleapis.com/flowscope.v1.FlowExtension","skb_hash":472547148,"kernel_drop_reason":6,"kernel_drop_reason_name":"NETFILTER_DROP"}"#
        ),
        "{drop_line}"
    );
    // Every line reads back whole in flowscope's own reader.
    let back: Vec<GetFlowsResponse> = out
        .stdout
        .lines()
        .map(|l| flowscope_proto::json::from_json(l).unwrap())
        .collect();
    assert_eq!(back, agent_like_history());
    // And that is exactly what Hubble's tooling cannot read: the check above can fail.
    if let Some(verdict) = support::hubble_protojson_check(&out.stdout) {
        let err = verdict.expect_err("a line with flowscope's Any must be rejected");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("flowscope.v1.FlowExtension"), "{err}");
    }
}

#[test]
fn text_outputs_still_use_the_extension() {
    let server = TestServer::tcp(Canned {
        history: vec![dropped_with_extension(1, 40001)],
        ..Default::default()
    });
    let home = tempfile::tempdir().unwrap();
    let mut cmd = flowctl(home.path());
    cmd.args(["--server", &server.addr, "observe"]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains(" NETFILTER_DROP DROPPED "),
        "{}",
        out.stdout
    );
}
