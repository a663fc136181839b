//! The exponential of the attention softmax (ALGORITHM.md section 1: `P = softmax(Q Kᵀ / √d_h)`),
//! in scalar and AVX-512 form with the same bits, and the switch between it and the older
//! Cephes polynomial ([`exp_approx`]).
//!
//! Why its own exponential: at head size 8 (the f = 4 ApproxNet of every ABT plan) the
//! exponentials were ~40% of the attention kernel's cycles (perf, n = 256), and [`exp_approx`]
//! spends ~21 vector operations on one: a clamp on both sides, `floor(x log2 e + 1/2)`, a degree-7
//! polynomial `1 + r + r² P5(r)` and five integer operations to build `2^k`. [`exp_softmax`]
//! rounds `x log2 e` to nearest (so `|r| <= ln 2 / 2`, where a degree-6 polynomial is enough),
//! and on AVX-512 scales by `2^k` with one `vscalefps`: 13 operations.
//!
//! Accuracy (tests/softmax_exp.rs, against f64 `exp` on every 61st f32 of `[-87.3, 88.7]`):
//! within 1.03 ulp (measured 1.024; mean 0.06 ulp; relative error below 1.3e-7, where the
//! Cephes form measured 1.00 ulp below 88.3 and overflows to infinity from 88.38 on); the polynomial's own relative error is 2e-9 (a
//! Lawson-weighted least-squares minimax fit of `e^r` on `[-ln 2 / 2, ln 2 / 2]`, coefficients
//! rounded to f32), the rest is f32 rounding. Inputs are clamped to `[-87.3, 88.7]` as in
//! [`exp_approx`] (a softmax only sees `x − max <= 0`; below `e^-87.3 ≈ 1.2e-38` the result is
//! `e^-87.3`, not 0); NaN gives NaN.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// `ln 2` split for the range reduction `r = x − k ln 2` (Cody and Waite): `LN2_HI` has 9
/// significant bits, so `k · LN2_HI` is exact for `|k| <= 128`.
pub(super) const LN2_HI: f32 = 0.693_359_4;
pub(super) const LN2_LO: f32 = -2.121_944_4e-4;
/// `e^r ≈ 1 + r (C[0] + r (C[1] + ... + r C[5]))` on `|r| <= ln 2 / 2`, highest degree last.
pub(super) const EXP_POLY: [f32; 6] = [1.0, 0.499_999_94, 0.166_664_32, 0.041_668_002, 0.008_374_155_5, 0.001_384_365_4];
/// `1.5 · 2^23`: adding and subtracting it rounds an f32 of magnitude below `2^22` to the
/// nearest integer, ties to even (as `vrndscaleps` with round-to-nearest does).
pub(super) const ROUND_SHIFT: f32 = 12_582_912.0;

/// `e^x` in f32 as the attention softmax computes it (module docs: within 1.03 ulp on
/// `[-87.3, 88.7]`, inputs clamped there, NaN stays NaN); branch-free, inlined so that loops
/// vectorise. The AVX-512 attention kernel computes the same bits 16 lanes at a time.
#[inline(always)]
pub fn exp_softmax(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // k = round(x log2 e), ties to even; |x log2 e| < 128
    let t = x * std::f32::consts::LOG2_E + ROUND_SHIFT;
    let k = t - ROUND_SHIFT;
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, x));
    let mut p = EXP_POLY[5];
    for &c in EXP_POLY[..5].iter().rev() {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r, 1.0);
    // y · 2^k with k in [-126, 128] as two exact powers of two 2^(k/2) (k/2 rounded down) and
    // 2^(k − k/2), both normal: the first product is exact, the second rounds once, as
    // `vscalefps` does (also when the result is subnormal)
    let ki = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let (k1, k2) = (ki >> 1, ki - (ki >> 1));
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    y * pow2(k1) * pow2(k2)
}

#[inline(always)]
fn exp_row_imp(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = exp_softmax(*v);
    }
}
dispatch!(fn exp_row_dispatch(x: &mut [f32]) => exp_row_imp);

/// `x[i] = e^x[i]` in place by [`exp_softmax`]: 16 values per `vscalefps` step on AVX-512 CPUs,
/// else the scalar form compiled for AVX2+FMA or the baseline (picked at run time); every path
/// gives the same bits.
pub fn exp_row(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::V4 {
        // SAFETY: AVX-512F/DQ checked by `isa`.
        unsafe { qlanes::exp_slice(x) };
        return;
    }
    exp_row_dispatch(x)
}

/// Which exponential the attention softmax uses (every attention path: the AVX-512 query-lane
/// kernel and the row-layout kernel alike, so both still give the same bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxExp {
    /// [`exp_softmax`] (the default).
    Fast,
    /// [`exp_approx`], the Cephes polynomial the softmax used before [`exp_softmax`] (kept so
    /// that tests can check that plans do not change; also the GELU's and erfc's exponential).
    Cephes,
}

static CEPHES: AtomicBool = AtomicBool::new(false);

/// Switch the softmax exponential for the whole process (see [`SoftmaxExp`]); results computed
/// while another thread switches may use either.
pub fn set_softmax_exp(e: SoftmaxExp) {
    CEPHES.store(e == SoftmaxExp::Cephes, Ordering::Relaxed);
}

/// The softmax exponential in use ([`set_softmax_exp`]).
pub fn softmax_exp() -> SoftmaxExp {
    if CEPHES.load(Ordering::Relaxed) {
        SoftmaxExp::Cephes
    } else {
        SoftmaxExp::Fast
    }
}
