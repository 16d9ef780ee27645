//! Benchmark 8 with criterion: the per-flow operations of [`bench::micro`].
//!
//! `cargo bench -p bench --bench micro` (results in `target/criterion/`).

use criterion::{Criterion, criterion_group, criterion_main};

fn per_flow(c: &mut Criterion) {
    let fx = bench::micro::Fixture::new();
    let mut group = c.benchmark_group("per_flow");
    for (name, _) in bench::micro::OPERATIONS {
        let mut buf = Vec::with_capacity(4096);
        group.bench_function(name, |b| {
            b.iter(|| bench::micro::run_op(&fx, name, &mut buf))
        });
    }
    group.finish();
}

criterion_group!(benches, per_flow);
criterion_main!(benches);
