//! Int8 quantisation of activations: asymmetric (unsigned, with a zero point) per row, every
//! call. The weights' side (per-column quantisation, panel packings, SmoothQuant factors) is
//! `super::weights`.

use super::Activations;
use rayon::prelude::*;

/// Quantise one activation row asymmetrically to unsigned bytes (the "dynamic quantisation" of
/// ONNX Runtime): with `lo = min(0, min x)` and `hi = max(0, max x)`, the scale is
/// `s = (hi − lo) / 255`, the zero point `z = round(−lo / s)` in `[0, 255]`, and
/// `u[t] = clamp(round(x[t] / s) + z, 0, 255)` (ties to even), so that `x ≈ (u − z) · s` and 0 is
/// exact. Returns `(s, z)`. A one-sided row (GELU outputs, `x >= −0.17`) gets twice the
/// resolution of a symmetric `[-max, max]` code; a symmetric row gets `z = 128`.
///
/// An all-zero row has scale 0, `z = 0` and `u = 0`; a row holding a NaN or infinity has scale
/// NaN (its outputs come out NaN), `z = 0` and `u = 0`. Rows whose range is subnormal are
/// quantised in f64 (the f32 reciprocal of their scale would overflow).
///
/// Panics if `u.len() != x.len()`.
pub fn quantize_row(x: &[f32], u: &mut [u8]) -> (f32, i32) {
    assert_eq!(u.len(), x.len(), "quantize_row: u has {} values, x has {}", u.len(), x.len());
    let p = row_params(x);
    quantize_into(x, u, &p);
    (p.scale, p.zero)
}

/// One row's quantisation parameters (see [`quantize_row`]).
struct RowParams {
    scale: f32,
    /// `255 / (hi − lo)` in f32 (not finite for a subnormal range; 0 for a zero or non-finite row).
    inv: f32,
    /// The same in f64.
    inv64: f64,
    zero: i32,
}

/// [`RowParams`] of row `x`: its minimum and maximum in 16 lanes (so that it vectorises), and
/// whether it holds a NaN or infinity (on the bit patterns: `|x|`'s bits at or above infinity's).
#[inline(always)]
fn row_params(x: &[f32]) -> RowParams {
    let (mut lo, mut hi, mut bits) = ([0.0f32; 16], [0.0f32; 16], [0u32; 16]);
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for t in 0..16 {
            lo[t] = lo[t].min(c[t]);
            hi[t] = hi[t].max(c[t]);
            bits[t] = bits[t].max(c[t].to_bits() & 0x7fff_ffff);
        }
    }
    for &v in tail {
        lo[0] = lo[0].min(v);
        hi[0] = hi[0].max(v);
        bits[0] = bits[0].max(v.to_bits() & 0x7fff_ffff);
    }
    const ZERO: RowParams = RowParams { scale: 0.0, inv: 0.0, inv64: 0.0, zero: 0 };
    if bits.iter().any(|&b| b >= 0x7f80_0000) {
        return RowParams { scale: f32::NAN, ..ZERO };
    }
    let lo = lo.iter().fold(0.0f32, |a, &v| a.min(v));
    let hi = hi.iter().fold(0.0f32, |a, &v| a.max(v));
    params_from_range(lo, hi)
}

/// [`RowParams`] of a finite row whose range, widened to include 0, is `[lo, hi]` (`lo <= 0 <=
/// hi`): all zero for an all-zero row. Shared by the scalar and SIMD quantisers, so they agree
/// bit for bit.
#[inline(always)]
fn params_from_range(lo: f32, hi: f32) -> RowParams {
    let range = f64::from(hi) - f64::from(lo);
    if range == 0.0 {
        return RowParams { scale: 0.0, inv: 0.0, inv64: 0.0, zero: 0 };
    }
    let inv64 = 255.0 / range;
    let zero = (-f64::from(lo) * inv64).round_ties_even().clamp(0.0, 255.0) as i32;
    RowParams { scale: (range / 255.0) as f32, inv: inv64 as f32, inv64, zero }
}

/// [`quantize_row`]'s bytes with the parameters `p` of row `x`.
#[inline(always)]
fn quantize_into(x: &[f32], out: &mut [u8], p: &RowParams) {
    let z = p.zero as f32;
    if p.inv.is_finite() {
        // (|v · inv| <= 255 (1 + 2^-22), so the sum rounds into [-255, 510] before the clamp;
        // via i32: a saturating `as u8` from f32 does not vectorise; NaN, in a row whose `inv`
        // is 0, becomes z = 0)
        for (o, &v) in out.iter_mut().zip(x) {
            *o = ((v * p.inv).round_ties_even() + z).clamp(0.0, 255.0) as i32 as u8;
        }
    } else {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = ((f64::from(v) * p.inv64).round_ties_even() + f64::from(p.zero)).clamp(0.0, 255.0) as u8;
        }
    }
}

/// Quantise the `m` rows of `x` `[m, k]` (each multiplied by `pre` `[k]` first when given: the
/// smoothing and f32-channel factors, applied to one row at a time in an L1-sized scratch) into
/// `rows` rows of `ld` bytes `u` (padding bytes and rows hold 0, multiplying zero-padded
/// weights), with their scales and zero points, and gather the f32 channels `x[:, side]`
/// `[m, side.len()]` for the epilogue; rows split over the pool's threads from
/// [`PAR_MIN_VALUES`] values on.
pub(super) fn quantize_rows(x: &[f32], m: usize, k: usize, ld: usize, rows: usize, pre: Option<&[f32]>, side: &[usize]) -> Activations {
    debug_assert!(x.len() == m * k && ld >= k && rows >= m && side.iter().all(|&c| c < k));
    let mut data = vec![0u8; rows * ld];
    let mut scale = vec![0.0f32; m];
    let mut zero = vec![0i32; m];
    let side_n = side.len();
    let mut side_x = vec![0.0f32; m * side_n];
    for (o, xr) in side_x.chunks_exact_mut(side_n.max(1)).zip(x.chunks_exact(k)) {
        for (v, &c) in o.iter_mut().zip(side) {
            *v = xr[c];
        }
    }
    let row = |(xr, (out, (s, z))): (&[f32], (&mut [u8], (&mut f32, &mut i32)))| quantize_one(xr, pre, &mut out[..k], s, z);
    if m * k >= PAR_MIN_VALUES && crate::kernels::threads() > 1 {
        x.par_chunks_exact(k)
            .zip(data.par_chunks_exact_mut(ld).zip(scale.par_iter_mut().zip(zero.par_iter_mut())))
            .with_min_len(8)
            .for_each(row);
    } else {
        x.chunks_exact(k).zip(data.chunks_exact_mut(ld).zip(scale.iter_mut().zip(zero.iter_mut()))).for_each(row);
    }
    Activations { data, scale, zero, ld, side: side_x, side_n }
}

/// One row of [`quantize_rows`]: `xr · pre` (element-wise, when `pre` is given) quantised into
/// `out`, its scale and zero point into `s`, `z`. On AVX-512 one pass finds the range of the
/// multiplied row and a second multiplies again and quantises (no scratch row); elsewhere, and
/// for a row whose range is subnormal, the multiplied row goes through [`quantize_row`]'s code.
/// Both give [`quantize_row`]'s bits for the multiplied row.
#[inline(always)]
fn quantize_one(xr: &[f32], pre: Option<&[f32]>, out: &mut [u8], s: &mut f32, z: &mut i32) {
    debug_assert!(pre.is_none_or(|f| f.len() == xr.len()) && out.len() == xr.len());
    #[cfg(target_arch = "x86_64")]
    if super::vnni::available() {
        // SAFETY: AVX-512F/BW checked by `vnni::available`; `out` and `pre` have `xr.len()` values.
        if let Some((scale, zero)) = unsafe { row_avx512(xr, pre, out) } {
            (*s, *z) = (scale, zero);
            return;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: AVX2 and FMA checked by `avx2::available`; `out` and `pre` have `xr.len()` values.
        if let Some((scale, zero)) = unsafe { row_avx2(xr, pre, out) } {
            (*s, *z) = (scale, zero);
            return;
        }
    }
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let plain = |x: &[f32], out: &mut [u8]| {
        let p = row_params(x);
        quantize_into(x, out, &p);
        (p.scale, p.zero)
    };
    (*s, *z) = match pre {
        None => plain(xr, out),
        Some(f) => SCRATCH.with_borrow_mut(|tmp| {
            tmp.clear();
            tmp.extend(xr.iter().zip(f).map(|(v, g)| v * g));
            plain(tmp, out)
        }),
    };
}

/// Activation values from which [`quantize_rows`] splits the rows over the pool's threads.
const PAR_MIN_VALUES: usize = 64 * 1024;

/// [`row_params`] and [`quantize_into`]'s f32 branch on AVX-512 for the row `x · pre`: the
/// same minimum, maximum and non-finite check (in 16 lanes, on the multiplied values, each
/// product rounded once as in the scalar code), the same parameters (computed by the scalar
/// code from the reduced range), then `f32 → i32` rounding to nearest even (as
/// `round_ties_even`), `+ z` and the clamp to `[0, 255]` in registers (the compiler scalarises
/// Rust's saturating casts, and without AVX-512 enabled it runs the range pass 4 lanes wide
/// with NaN-aware minima: together measured about as long as the AMX product at k = 384).
/// Returns `(scale, zero)`, or `None` without writing `out` when the range is subnormal (its
/// f32 reciprocal overflows: the caller's f64 branch quantises it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn row_avx512(x: &[f32], pre: Option<&[f32]>, out: &mut [u8]) -> Option<(f32, i32)> {
    use std::arch::x86_64::*;
    let n = x.len();
    let load = |t: usize, mask: __mmask16| {
        let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(t));
        match pre {
            Some(f) => _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mask, f.as_ptr().add(t))),
            None => v,
        }
    };
    let tail_mask = |t: usize| if n - t >= 16 { 0xFFFF } else { ((1u32 << (n - t)) - 1) as __mmask16 };
    let (mut lo, mut hi, mut bits) = (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_si512());
    let abs_bits = _mm512_set1_epi32(0x7fff_ffff);
    let mut t = 0;
    while t < n {
        let v = load(t, tail_mask(t));
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
        bits = _mm512_max_epu32(bits, _mm512_and_si512(_mm512_castps_si512(v), abs_bits));
        t += 16;
    }
    // (a NaN lane makes min/max pick either operand; such rows are caught by their bits first)
    if _mm512_reduce_max_epu32(bits) >= 0x7f80_0000 {
        out.fill(0);
        return Some((f32::NAN, 0));
    }
    let (lo, hi) = (_mm512_reduce_min_ps(lo).min(0.0), _mm512_reduce_max_ps(hi).max(0.0));
    let p = params_from_range(lo, hi);
    if p.inv64 == 0.0 {
        out.fill(0);
        return Some((0.0, 0));
    }
    if !p.inv.is_finite() {
        return None;
    }
    let (inv, zero) = (p.inv, p.zero);
    let iv = _mm512_set1_ps(inv);
    let z = _mm512_set1_epi32(zero);
    let mut t = 0;
    while t < n {
        let mask = tail_mask(t);
        let q = _mm512_add_epi32(
            _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(load(t, mask), iv)),
            z,
        );
        _mm512_mask_cvtusepi32_storeu_epi8(out.as_mut_ptr().add(t) as *mut i8, mask, _mm512_max_epi32(q, _mm512_setzero_si512()));
        t += 16;
    }
    Some((p.scale, zero))
}

/// [`row_avx512`] on AVX2 (8 lanes; the CPUs the AVX2 int8 kernel serves): the same range
/// pass, the same parameters, then `f32 → i32` with `vcvtps2dq` (round to nearest even, the
/// default MXCSR mode, as `round_ties_even`), `+ z`, the clamp to `[0, 255]` and two unsigned
/// saturating packs, 32 values per step (without it the scalar code calls `rintf` per value:
/// measured longer than the AVX2 product at k = 384, n = 384). A tail of fewer than 32 values
/// goes 8 at a time through masked loads. Returns `None` without writing `out` for a subnormal
/// range, as [`row_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(x: &[f32], pre: Option<&[f32]>, out: &mut [u8]) -> Option<(f32, i32)> {
    use std::arch::x86_64::*;
    let n = x.len();
    // lanes t .. t + 8 of x · pre, 0 past n
    let load = |t: usize| {
        let live = (n - t).min(8) as i32;
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        let v = if live == 8 { _mm256_loadu_ps(x.as_ptr().add(t)) } else { _mm256_maskload_ps(x.as_ptr().add(t), mask) };
        match pre {
            Some(f) if live == 8 => _mm256_mul_ps(v, _mm256_loadu_ps(f.as_ptr().add(t))),
            Some(f) => _mm256_mul_ps(v, _mm256_maskload_ps(f.as_ptr().add(t), mask)),
            None => v,
        }
    };
    let (mut lo, mut hi, mut bits) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_si256());
    let abs_bits = _mm256_set1_epi32(0x7fff_ffff);
    let mut t = 0;
    while t < n {
        let v = load(t);
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
        bits = _mm256_max_epu32(bits, _mm256_and_si256(_mm256_castps_si256(v), abs_bits));
        t += 8;
    }
    let (mut l8, mut h8, mut b8) = ([0.0f32; 8], [0.0f32; 8], [0u32; 8]);
    _mm256_storeu_ps(l8.as_mut_ptr(), lo);
    _mm256_storeu_ps(h8.as_mut_ptr(), hi);
    _mm256_storeu_si256(b8.as_mut_ptr() as *mut __m256i, bits);
    // (a NaN lane makes min/max pick either operand; such rows are caught by their bits first)
    if b8.iter().any(|&b| b >= 0x7f80_0000) {
        out.fill(0);
        return Some((f32::NAN, 0));
    }
    let lo = l8.iter().fold(0.0f32, |a, &v| a.min(v));
    let hi = h8.iter().fold(0.0f32, |a, &v| a.max(v));
    let p = params_from_range(lo, hi);
    if p.inv64 == 0.0 {
        out.fill(0);
        return Some((0.0, 0));
    }
    if !p.inv.is_finite() {
        return None;
    }
    let (inv, zero) = (p.inv, p.zero);
    let iv = _mm256_set1_ps(inv);
    let z = _mm256_set1_epi32(zero);
    let (zero_v, max_v) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
    let q =
        |t: usize| _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(load(t), iv)), z), zero_v), max_v);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut t = 0;
    while t + 32 <= n {
        // (packs work per 128-bit half: the permute puts the four groups of 8 back in order)
        let ab = _mm256_packus_epi32(q(t), q(t + 8));
        let cd = _mm256_packus_epi32(q(t + 16), q(t + 24));
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
        _mm256_storeu_si256(out.as_mut_ptr().add(t) as *mut __m256i, bytes);
        t += 32;
    }
    while t < n {
        let mut v = [0i32; 8];
        _mm256_storeu_si256(v.as_mut_ptr() as *mut __m256i, q(t));
        for (o, &q) in out[t..].iter_mut().zip(&v) {
            *o = q as u8;
        }
        t += 8;
    }
    Some((p.scale, zero))
}
