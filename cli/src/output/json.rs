//! `-o json` / `-o jsonpb`: one GetFlowsResponse per line in protojson with
//! the proto's field names, byte for byte what `hubble observe -o json`
//! prints (the serde impls live in flowscope-proto).
//!
//! Hubble's tools read these lines with Go's protojson, which resolves an
//! `Any` by its type URL among the types it knows and rejects the whole line
//! for one it does not: flowscope's `Flow.extensions`
//! (`flowscope.v1.FlowExtension`) is such a type. So it is left out unless
//! asked for (`--print-extensions`).

use std::io::{self, Write};

use flowscope_proto::observer::GetFlowsResponse;
use flowscope_proto::observer::get_flows_response::ResponseTypes;

/// Writes `res` as one JSON line, with `Flow.extensions` only when
/// `extensions` is set.
pub(super) fn write_line<W: Write>(
    out: &mut W,
    res: &GetFlowsResponse,
    extensions: bool,
) -> io::Result<()> {
    match &res.response_types {
        Some(ResponseTypes::Flow(flow)) if !extensions && flow.extensions.is_some() => {
            let mut flow = flow.clone();
            flow.extensions = None;
            let hubble = GetFlowsResponse {
                response_types: Some(ResponseTypes::Flow(flow)),
                node_name: res.node_name.clone(),
                time: res.time,
            };
            flowscope_proto::json::write_json_line(out, &hubble)
        }
        _ => flowscope_proto::json::write_json_line(out, res),
    }
}
