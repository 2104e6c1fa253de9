//! This machine's f32 arithmetic limit: a tight loop of independent fused multiply-adds per core.
//!
//! Each accumulator is updated `acc = acc·a + b` once per loop turn. One FMA takes 4–5 cycles
//! before its result can be used again and a core has two FMA units, so 8–10 independent
//! chains are needed to keep both busy every cycle; the AVX2 kernel runs 12 (of 16 `ymm`
//! registers), the AVX-512 kernel 16 (of 32 `zmm` registers). Nothing but the FMAs and the loop
//! counter runs in the loop, so `flops / time` is what the FMA units deliver: the peak every
//! other benchmark is measured against.
//!
//! The instruction set is chosen at run time (`is_x86_feature_detected!`): AVX-512F, else
//! AVX2 with FMA, else a portable loop (whose "peak" is only what the compiler makes of it).

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Independent accumulators of the AVX2 kernel.
const AVX2_ACCS: usize = 12;
/// Independent accumulators of the AVX-512 kernel.
const AVX512_ACCS: usize = 16;
/// Independent accumulators (of 8 lanes) of the portable kernel.
const PORTABLE_ACCS: usize = 12;

/// The multiplier: close to 1 so that `acc·a + b` converges to `b/(1−a)` = 0.5 and never
/// leaves the normal range (denormals would slow the units down).
const MUL: f32 = 0.999_999;
/// The addend.
const ADD: f32 = 0.5e-6;

/// Which loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    Portable,
}

/// The FMA loop for this CPU; build it with [`Kernel::detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    isa: Isa,
}

impl Kernel {
    /// The widest FMA loop this CPU runs: AVX-512F, else AVX2+FMA, else portable.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Kernel { isa: Isa::Avx512 };
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Kernel { isa: Isa::Avx2Fma };
            }
        }
        Kernel { isa: Isa::Portable }
    }

    /// The portable loop, whatever the CPU (for comparison and tests).
    pub fn portable() -> Self {
        Kernel { isa: Isa::Portable }
    }

    /// A name for the benchmark id: `avx512f`, `avx2-fma` or `portable`.
    pub fn name(&self) -> &'static str {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512f",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => "avx2-fma",
            Isa::Portable => "portable",
        }
    }

    /// Independent accumulators (dependency chains).
    pub fn chains(&self) -> usize {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => AVX512_ACCS,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => AVX2_ACCS,
            Isa::Portable => PORTABLE_ACCS,
        }
    }

    /// f32 lanes per accumulator.
    pub fn lanes(&self) -> usize {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 16,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => 8,
            Isa::Portable => 8,
        }
    }

    /// Multiply-adds per loop turn: lanes times accumulators.
    pub fn fmas_per_turn(&self) -> u64 {
        (self.chains() * self.lanes()) as u64
    }

    /// Flops of `turns` loop turns on one thread: two (a multiply and an add) per FMA lane.
    pub fn flops(&self, turns: u64) -> u64 {
        2 * self.fmas_per_turn() * turns
    }

    /// Runs `turns` loop turns and returns the sum of the accumulators (so that the work
    /// cannot be optimized away).
    pub fn run(&self, turns: u64) -> f32 {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx512` is only built by `detect` after `avx512f` was detected on
            // this CPU, which is all `fma_avx512` requires.
            Isa::Avx512 => unsafe { fma_avx512(turns) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2Fma` is only built by `detect` after both `avx2` and `fma`
            // were detected on this CPU, which is all `fma_avx2` requires.
            Isa::Avx2Fma => unsafe { fma_avx2(turns) },
            Isa::Portable => fma_portable(turns),
        }
    }

    /// Runs `turns` loop turns on each of `threads` threads at once and returns the wall
    /// time from the first thread's start to the last one's end.
    ///
    /// The threads are spawned first and released together by a barrier, so thread creation
    /// is not timed; any skew between their starts is (it can only lower the result).
    ///
    /// # Panics
    /// If a thread panics.
    pub fn time_on_threads(&self, threads: usize, turns: u64) -> Duration {
        let threads = threads.max(1);
        let barrier = Barrier::new(threads);
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let start = Instant::now();
                        black_box(self.run(black_box(turns)));
                        (start, Instant::now())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let start = spans.iter().map(|s| s.0).min();
        let end = spans.iter().map(|s| s.1).max();
        match (start, end) {
            (Some(s), Some(e)) => e - s,
            _ => Duration::ZERO,
        }
    }
}

/// The AVX2 loop: 12 independent `vfmadd` chains of 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(turns: u64) -> f32 {
    use core::arch::x86_64::{
        _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm256_add_ps, _mm256_castps256_ps128,
        _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_set1_ps,
    };
    let a = _mm256_set1_ps(black_box(MUL));
    let b = _mm256_set1_ps(black_box(ADD));
    // Different starting points per chain, so no two chains are provably equal.
    let mut acc: [_; AVX2_ACCS] = core::array::from_fn(|i| _mm256_set1_ps(i as f32 * 0.01));
    for _ in 0..turns {
        for v in &mut acc {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm256_set1_ps(0.0), |s, &v| _mm256_add_ps(s, v));
    let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
    let quarter = _mm_hadd_ps(half, half);
    _mm_cvtss_f32(_mm_hadd_ps(quarter, quarter))
}

/// The AVX-512 loop: 16 independent `vfmadd` chains of 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512(turns: u64) -> f32 {
    use core::arch::x86_64::{
        _mm512_add_ps, _mm512_fmadd_ps, _mm512_reduce_add_ps, _mm512_set1_ps,
    };
    let a = _mm512_set1_ps(black_box(MUL));
    let b = _mm512_set1_ps(black_box(ADD));
    let mut acc: [_; AVX512_ACCS] = core::array::from_fn(|i| _mm512_set1_ps(i as f32 * 0.01));
    for _ in 0..turns {
        for v in &mut acc {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm512_set1_ps(0.0), |s, &v| _mm512_add_ps(s, v));
    _mm512_reduce_add_ps(sum)
}

/// The same arithmetic in plain Rust (`acc·a + b`, two roundings), for other CPUs.
fn fma_portable(turns: u64) -> f32 {
    let a = black_box(MUL);
    let b = black_box(ADD);
    let mut acc = [[0.0f32; 8]; PORTABLE_ACCS];
    for (i, lanes) in acc.iter_mut().enumerate() {
        lanes.fill(i as f32 * 0.01);
    }
    for _ in 0..turns {
        for lanes in &mut acc {
            for v in lanes {
                *v = *v * a + b;
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_are_two_per_lane_per_accumulator_per_turn() {
        // The portable loop: 12 accumulators of 8 lanes, 2 flops each, 10 turns = 1920.
        assert_eq!(Kernel::portable().flops(10), 1920);
        let k = Kernel::detect();
        assert_eq!(k.flops(3), 6 * k.fmas_per_turn());
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            assert_eq!((k.name(), k.fmas_per_turn()), ("avx512f", 256));
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            assert_eq!((k.name(), k.fmas_per_turn()), ("avx2-fma", 96));
        }
    }

    /// Each chain is `x ← x·a + b` from `x₀ = i/100`, so after `n` turns it is
    /// `x_n = x* + (x₀ − x*)·aⁿ` with `x* = b/(1−a) = 0.5`: computed here in f64 from the
    /// closed form, independently of the kernels.
    fn closed_form_sum(chains: usize, lanes: usize, turns: u64) -> f64 {
        let (a, b) = (f64::from(MUL), f64::from(ADD));
        let fixed = b / (1.0 - a);
        (0..chains)
            .map(|i| {
                let x0 = f64::from(i as f32 * 0.01);
                lanes as f64 * (fixed + (x0 - fixed) * a.powi(turns as i32))
            })
            .sum()
    }

    #[test]
    fn kernels_compute_the_recurrence() {
        let turns = 1000;
        for k in [Kernel::portable(), Kernel::detect()] {
            let want = closed_form_sum(k.chains(), k.lanes(), turns);
            let got = f64::from(k.run(turns));
            // f32 rounding over 1000 turns drifts by ~1000·6e-8 relative at most.
            assert!(
                (got - want).abs() < 1e-3 * want.abs(),
                "{}: {got} vs {want}",
                k.name()
            );
        }
    }

    #[test]
    fn the_timed_span_lies_within_the_call() {
        let k = Kernel::detect();
        for threads in [1, 2] {
            let outer = Instant::now();
            let inner = k.time_on_threads(threads, 100_000);
            let outer = outer.elapsed();
            assert!(
                inner > Duration::ZERO && inner <= outer,
                "{threads} threads: {inner:?} timed, {outer:?} spent"
            );
        }
    }
}
