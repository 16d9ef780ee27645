//! Benchmark 8 — micro: the per-flow operations of [`crate::micro`], timed with a plain loop
//! (median of 5 batches). `cargo bench -p bench --bench micro` measures the same closures with
//! criterion.

use super::Ctx;
use crate::{micro, stats::Row};

/// Runs benchmark 8.
pub fn run(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let fx = micro::Fixture::new();
    let batch = ctx.plan.secs(0.2, 0.02);
    for (name, what) in micro::OPERATIONS {
        crate::check_interrupt()?;
        let v = micro::quick(&fx, name, 5, batch);
        ctx.report.push(Row::new(8, name, what, "ns/op", &v));
    }
    ctx.report.note(format!(
        "8: a flow encodes to {} bytes; criterion: `cargo bench -p bench --bench micro`.",
        fx.encoded.len()
    ));
    Ok(())
}
