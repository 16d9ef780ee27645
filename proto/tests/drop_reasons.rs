//! `docs/drop-reasons.md` describes the table the agent uses: the same kernel reasons, in the
//! same order, with the same Hubble reason and number.

use std::path::PathBuf;

use flowscope_proto::drop_reason::KERNEL_DROP_REASONS;

/// (kernel name, Hubble name, number) of each row of the document's table.
fn document_rows() -> Vec<(String, String, i32)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/drop-reasons.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let table = text
        .split_once("## The table")
        .unwrap_or_else(|| panic!("{} has no `## The table`", path.display()))
        .1;
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let unquote = |c: &str| c.trim_matches('`').to_string();
            let number = cells[3]
                .parse()
                .unwrap_or_else(|_| panic!("number in {l:?}"));
            (unquote(cells[1]), unquote(cells[2]), number)
        })
        .collect()
}

#[test]
fn the_document_lists_the_table() {
    let doc = document_rows();
    let code: Vec<(String, String, i32)> = KERNEL_DROP_REASONS
        .iter()
        .map(|r| {
            (
                r.kernel.to_string(),
                r.hubble.as_str_name().to_string(),
                r.hubble as i32,
            )
        })
        .collect();
    for (d, c) in doc.iter().zip(&code) {
        assert_eq!(
            d, c,
            "docs/drop-reasons.md differs from proto/src/drop_reason.rs"
        );
    }
    assert_eq!(
        doc.len(),
        code.len(),
        "docs/drop-reasons.md has {} rows, the table {}",
        doc.len(),
        code.len()
    );
}
