//! This machine's f32 limit: the FMA loop of `manabi_benches::peak` on one core and on two.
//!
//! Ids are `peak/<isa>/<n> core(s) t<n> flop<F>`, `F` counting every thread's flops of one
//! iteration, so the table's GFLOP/s is the peak that `cargo xtask bench` compares the other
//! rows with (the `t1` row for single-thread rows, the `t2` row for two-thread ones).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use manabi_benches::peak::Kernel;
use std::time::Duration;

/// Loop turns per thread and iteration: a few tens of µs, so criterion's linear sampling
/// has room, while each sample (one barrier, one spawn per thread) runs many of them.
const TURNS: u64 = 20_000;

fn peak(c: &mut Criterion) {
    let kernel = Kernel::detect();
    let mut group = c.benchmark_group("peak");
    for threads in [1usize, 2] {
        let flops = kernel.flops(TURNS) * threads as u64;
        let cores = if threads == 1 { "core" } else { "cores" };
        let id = format!("{threads} {cores} t{threads} flop{flops}");
        group.bench_function(BenchmarkId::new(kernel.name(), id), |b| {
            b.iter_custom(|iters| kernel.time_on_threads(threads, iters * TURNS));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = peak
}
criterion_main!(benches);
