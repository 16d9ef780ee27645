//! `-o dict`: each flow as `KEY: VALUE` lines, keys right-aligned as Hubble
//! aligns them, records separated by a line of dashes.

use std::io::Write;

use flowscope_proto::flow::Flow;

use super::{Printer, clean};

/// One record, each line ending in a newline (the separator is the caller's).
///
/// flowscope adds two lines to Hubble's set: `SNAT SOURCE`, the source
/// address (and port) after SNAT/MASQUERADE, for flows the kernel translated,
/// and `  DNAT DEST`, the backend a DNATed connection (to a Service's
/// ClusterIP) was sent to, for flows that carry the ClusterIP.
pub(super) fn flow_record<W: Write, E: Write>(p: &Printer<W, E>, flow: &Flow) -> String {
    let (src, dst) = p.host_names(flow);
    let mut out = format!("  TIMESTAMP: {}\n", p.time(flow));
    if p.opts.node_name {
        out.push_str(&format!("       NODE: {}\n", clean(&flow.node_name)));
    }
    out.push_str(&format!("     SOURCE: {src}\n"));
    if let Some(snat) = p.snat_source(flow) {
        out.push_str(&format!("SNAT SOURCE: {snat}\n"));
    }
    out.push_str(&format!("DESTINATION: {dst}\n"));
    if let Some((backend, _)) = p.dnat_backend(flow) {
        out.push_str(&format!("  DNAT DEST: {backend}\n"));
    }
    out.push_str(&format!(
        "       TYPE: {}\n    VERDICT: {}\n    SUMMARY: {}\n",
        super::flow_type(flow),
        p.verdict(flow),
        p.summary(flow),
    ));
    out
}
