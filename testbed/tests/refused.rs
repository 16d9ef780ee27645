//! Requests the agent cannot answer truthfully are refused, with the reason, instead of being
//! accepted and answered with nothing. Privileged; run serially.

use std::{process::Command, time::Duration};

use flowscope_proto::{
    flow::FlowFilter,
    observer::{GetFlowsRequest, observer_client::ObserverClient},
};
use testbed::{Scenario, bin_path, require_root};

fn flowctl(s: &Scenario, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .arg("20")
        .arg(bin_path("flowctl"))
        .arg("--server")
        .arg(format!("unix://{}", s.agent_socket().display()))
        .args(args)
        .output()
        .expect("flowctl")
}

#[test]
fn filters_that_can_never_match_are_refused() {
    if !require_root("filters_that_can_never_match_are_refused") {
        return;
    }
    let s = Scenario::build();
    let mut agent = s.start_agent(&[]);

    // flowctl, as a user types it: an error that says why, and a failing exit status.
    for args in [
        &["observe", "--protocol", "kafka"][..],
        &["observe", "--protocol", "kafka", "--last", "5"][..],
        &["observe", "--verdict", "AUDIT"][..],
    ] {
        let out = flowctl(&s, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains("can never match"), "{args:?}: {stderr}");
    }
    // What the agent produces is still served.
    let out = flowctl(
        &s,
        &["observe", "--protocol", "tcp", "--verdict", "FORWARDED"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A stock client's request with a field flowscope never fills: InvalidArgument naming it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let ch = testbed::client::unix_channel(&s.agent_socket(), Duration::from_secs(5))
            .await
            .unwrap();
        ObserverClient::new(ch)
            .get_flows(GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    trace_id: vec!["4bf92f3577b34da6a3ce929d0e0e4736".into()],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .expect_err("accepted")
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("trace_id"), "{status:?}");
    // Hubble's rule on the request: first and follow do not go together.
    let status = rt.block_on(async {
        let ch = testbed::client::unix_channel(&s.agent_socket(), Duration::from_secs(5))
            .await
            .unwrap();
        ObserverClient::new(ch)
            .get_flows(GetFlowsRequest {
                number: 1,
                first: true,
                follow: true,
                ..Default::default()
            })
            .await
            .expect_err("accepted")
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "first cannot be specified with follow");
    assert!(agent.stop().success());

    // The export's filters too: the agent does not start with one that can never match.
    let out = Command::new("ip")
        .args(["netns", "exec", &s.node()])
        .arg(bin_path("monitor-agent"))
        .args(["--export-file-path", "/dev/null", "--export-allowlist"])
        .arg(r#"{"protocol":["kafka"]}"#)
        .output()
        .expect("monitor-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("can never match"), "{stderr}");
}
