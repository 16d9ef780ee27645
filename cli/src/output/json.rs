//! `-o json` / `-o jsonpb`: one GetFlowsResponse per line in protojson with
//! the proto's field names, byte for byte what `hubble observe -o json`
//! prints (the serde impls live in flowscope-proto).

use std::io::{self, Write};

use flowscope_proto::observer::GetFlowsResponse;

/// Writes `res` as one JSON line.
pub(super) fn write_line<W: Write>(out: &mut W, res: &GetFlowsResponse) -> io::Result<()> {
    flowscope_proto::json::write_json_line(out, res)
}
