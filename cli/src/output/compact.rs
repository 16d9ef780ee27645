//! `-o compact`: Hubble's one-line form,
//! `{time} [{node}]: {src} {src-id} {arrow} {dst} {dst-id} {type} {VERDICT} ({summary})`.

use std::io::Write;

use flowscope_proto::flow::Flow;

use super::{Printer, clean};

/// One compact line (without the newline).
///
/// The arrow says which way the packet goes relative to its connection:
/// `->` for the original direction, `<-` for a reply (source and destination
/// are swapped so that the connection's initiator stays on the left, as
/// Hubble does), `<>` when the server does not know (`is_reply` absent).
pub(super) fn flow_line<W: Write, E: Write>(p: &Printer<W, E>, flow: &Flow) -> String {
    let (mut src, mut dst) = p.host_names(flow);
    let mut src_id = p.identity(flow.source.as_ref().map_or(0, |e| e.identity));
    let mut dst_id = p.identity(flow.destination.as_ref().map_or(0, |e| e.identity));
    let arrow = match flow.is_reply {
        None => "<>",
        Some(false) => "->",
        Some(true) => {
            std::mem::swap(&mut src, &mut dst);
            std::mem::swap(&mut src_id, &mut dst_id);
            "<-"
        }
    };
    let node = if p.opts.node_name {
        format!(" [{}]", clean(&flow.node_name))
    } else {
        String::new()
    };
    format!(
        "{}{node}: {src} {src_id} {arrow} {dst} {dst_id} {} {} ({})",
        p.time(flow),
        super::flow_type(flow),
        p.verdict(flow),
        p.summary(flow),
    )
}
