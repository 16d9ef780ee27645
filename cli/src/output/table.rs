//! `-o table`: tab-aligned columns, like Go's `text/tabwriter` with Hubble's
//! settings (minimum width 2, padding 3, spaces). Columns can only be sized
//! once every row is known, so the printer holds the rows until the end
//! (which is also why Hubble refuses `--follow` with this format).

use std::io::Write;

use flowscope_proto::flow::Flow;

use super::{Printer, clean};

/// The header row.
pub(super) fn header(node_name: bool) -> Vec<String> {
    let mut row = vec!["TIMESTAMP".to_string()];
    if node_name {
        row.push("NODE".into());
    }
    row.extend(["SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"].map(String::from));
    row
}

/// One flow's cells. A translated source shows its SNAT address after it:
/// `default/pod-a:59242 (SNAT 198.51.100.10:41708)`; a Service's ClusterIP
/// the backend its connection was DNATed to: `default/web:80 (DNAT
/// 10.244.0.77:8080)`.
pub(super) fn flow_row<W: Write, E: Write>(p: &Printer<W, E>, flow: &Flow) -> Vec<String> {
    let (mut src, mut dst) = p.host_names(flow);
    if let Some(snat) = p.snat_source(flow) {
        src = format!("{src} (SNAT {snat})");
    }
    match p.dnat_backend(flow) {
        Some((backend, true)) => src = format!("{src} (DNAT {backend})"),
        Some((backend, false)) => dst = format!("{dst} (DNAT {backend})"),
        None => {}
    }
    let mut row = vec![p.time(flow)];
    if p.opts.node_name {
        row.push(clean(&flow.node_name).into_owned());
    }
    row.extend([
        src,
        dst,
        super::flow_type(flow),
        p.verdict(flow),
        p.summary(flow),
    ]);
    row
}

/// Aligns rows into columns: every cell but a row's last is padded to its
/// column's widest cell plus 3 spaces (at least 2 wide); the last cell is
/// printed as is. Widths count characters, as tabwriter counts runes.
pub fn tabwrite(rows: &[Vec<String>]) -> String {
    const PADDING: usize = 3;
    const MIN_WIDTH: usize = 2;
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = (cell.chars().count() + PADDING).max(MIN_WIDTH);
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}
