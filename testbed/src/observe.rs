//! Reading what flowscope reports, for the tests: `flowctl` against a scenario's agent, its JSON
//! lines, and the parts of a flow the assertions look at. One copy for every test file.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
};

use flowscope_proto::{
    flow::{Flow, TraceObservationPoint},
    flowscope::v1::FlowExtension,
    observer::{GetFlowsResponse, get_flows_response::ResponseTypes},
};

use crate::{Scenario, bin_path};

/// `ip` (IPv4 or IPv6) and `port` as a socket address.
pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("an IP address"), port)
}

/// Runs the real `flowctl` against the scenario's agent (bounded to 20 s) and returns its
/// standard output; panics with its standard error if it fails.
pub fn flowctl(s: &Scenario, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("20")
        .arg(bin_path("flowctl"))
        .arg("--server")
        .arg(format!("unix://{}", s.agent_socket().display()))
        .args(args)
        .output()
        .expect("flowctl");
    assert!(
        out.status.success(),
        "flowctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every line of `out` as Hubble's JSON of a `T`; panics on a line that is not.
pub fn json_lines<T: serde::de::DeserializeOwned>(out: &str) -> Vec<T> {
    out.lines()
        .map(|l| flowscope_proto::json::from_json(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The flows among `flowctl observe -o json` lines (node status and loss notices left out).
pub fn flows(out: &str) -> Vec<Flow> {
    json_lines::<GetFlowsResponse>(out)
        .into_iter()
        .filter_map(|r| match r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f),
            _ => None,
        })
        .collect()
}

/// flowscope's extension of a flow; panics when there is none (flowctl prints it in JSON only
/// with `--print-extensions`).
pub fn ext(f: &Flow) -> FlowExtension {
    f.extensions
        .as_ref()
        .and_then(|a| a.to_msg::<FlowExtension>().ok().flatten())
        .unwrap_or_else(|| panic!("no flowscope extension in {f:#?}"))
}

/// The flow's observation point.
pub fn point(f: &Flow) -> TraceObservationPoint {
    TraceObservationPoint::try_from(f.trace_observation_point)
        .unwrap_or(TraceObservationPoint::UnknownPoint)
}

/// What Hubble's own tooling makes of JSON lines: each line parsed by an independent, strict
/// protojson implementation (Python protobuf's `json_format`, `cli/tests/protojson_check.py`)
/// into an observer.GetFlowsResponse, over a registry of Hubble's packages only; `dir` holds
/// its input files. `Some(Ok(summary))` when every line parses, `Some(Err(why))` when one does
/// not, `None` when Python's protobuf is missing outside CI ([`crate::skip`]; under CI that
/// fails the test).
pub fn hubble_protojson_check(dir: &Path, lines: &str) -> Option<Result<String, String>> {
    let descriptors = dir.join("flowscope.binpb");
    std::fs::write(&descriptors, flowscope_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let input = dir.join("lines.json");
    std::fs::write(&input, lines).expect("lines");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../cli/tests/protojson_check.py"
    );
    let missing = |why: String| {
        crate::skip(
            "the Hubble protojson check",
            &format!("{why} (scripts/setup.sh installs it)"),
        );
        None
    };
    let out = match Command::new("python3")
        .arg(script)
        .arg(&descriptors)
        .arg(&input)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => return missing(format!("cannot run python3: {e}")),
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(0) => Some(Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())),
        Some(3) => missing(stderr.trim().to_string()),
        _ => Some(Err(stderr)),
    }
}
