//! Symmetric int8 quantisation: per output column for weights (once), per row for activations
//! (every call), and the weight panel packing the VNNI and AMX kernels read (see `super`).

use super::{Activations, KB, NR};
use rayon::prelude::*;

/// Quantise one activation row: returns its scale `s = max |x| / 127` and writes
/// `q[t] = round(x[t] / s)` (ties to even, in `[-127, 127]`), so that `x ≈ q · s`.
///
/// An all-zero row has scale 0 and `q = 0`; a row holding a NaN or infinity has scale NaN (its
/// outputs come out NaN) and `q = 0`. Rows whose largest magnitude is subnormal are quantised in
/// f64 (the f32 reciprocal of their scale would overflow).
///
/// Panics if `q.len() != x.len()`.
pub fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
    assert_eq!(q.len(), x.len(), "quantize_row: q has {} values, x has {}", q.len(), x.len());
    quantize_into(x, q, |v| v)
}

/// Row `x`'s scale `max |x| / 127`, `127 / max |x|` and `max |x|` (all 0 for an all-zero row; NaN
/// scale for a row with a NaN or infinity; the reciprocal is not finite for a subnormal maximum).
#[inline(always)]
fn row_scale(x: &[f32]) -> (f32, f32, f32) {
    // max |x| on the bit patterns: for finite floats the order of |x|'s bits is the order of |x|,
    // and NaN and infinity sit above every finite value; 16 u32 lanes, so that it vectorises.
    let mut lanes = [0u32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = (*l).max(v.to_bits() & 0x7fff_ffff);
        }
    }
    let bits = lanes.iter().copied().chain(tail.iter().map(|v| v.to_bits() & 0x7fff_ffff)).max().unwrap_or(0);
    if bits >= 0x7f80_0000 {
        return (f32::NAN, 0.0, f32::NAN);
    }
    let max = f32::from_bits(bits);
    if max == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    (max / 127.0, 127.0 / max, max)
}

/// [`quantize_row`] writing `f(q)` for each value (the kernels store `q + 128` as `u8`).
#[inline(always)]
fn quantize_into<T>(x: &[f32], out: &mut [T], f: impl Fn(i8) -> T) -> f32 {
    let (scale, inv, max) = row_scale(x);
    if inv.is_finite() {
        // |v · inv| <= 127 (1 + 2^-22) rounds into [-127, 127]; (via i32: a saturating `as i8`
        // does not vectorise; NaN, in a row whose `inv` is 0, becomes 0)
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f((v * inv).round_ties_even().clamp(-127.0, 127.0) as i32 as i8);
        }
    } else {
        let inv = if max > 0.0 { 127.0 / f64::from(max) } else { 0.0 };
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f((f64::from(v) * inv).round_ties_even().clamp(-127.0, 127.0) as i8);
        }
    }
    scale
}

/// Quantise the `m` rows of `x` `[m, k]` into `rows` rows of `ld` bytes `q + 128` (padding
/// bytes and rows hold 128, i.e. `q = 0`), with their scales; rows split over the pool's
/// threads from [`PAR_MIN_VALUES`] values on.
pub(super) fn quantize_rows(x: &[f32], m: usize, k: usize, ld: usize, rows: usize) -> Activations {
    debug_assert!(x.len() == m * k && ld >= k && rows >= m);
    let mut data = vec![128u8; rows * ld];
    let mut scale = vec![0.0f32; m];
    let row = |(xr, (out, s)): (&[f32], (&mut [u8], &mut f32))| {
        let out = &mut out[..k];
        #[cfg(target_arch = "x86_64")]
        if super::vnni::available() {
            // SAFETY: AVX-512F/BW checked by `vnni::available`; `out` has `xr.len()` bytes.
            *s = unsafe { row_avx512(xr, out) };
            return;
        }
        *s = quantize_into(xr, out, |q| (q as u8) ^ 0x80);
    };
    if m * k >= PAR_MIN_VALUES && crate::kernels::threads() > 1 {
        x.par_chunks_exact(k).zip(data.par_chunks_exact_mut(ld).zip(scale.par_iter_mut())).with_min_len(8).for_each(row);
    } else {
        x.chunks_exact(k).zip(data.chunks_exact_mut(ld).zip(scale.iter_mut())).for_each(row);
    }
    Activations { data, scale, ld }
}

/// Activation values from which [`quantize_rows`] splits the rows over the pool's threads.
const PAR_MIN_VALUES: usize = 64 * 1024;

/// [`quantize_into`] for `u8` output on AVX-512: the conversions `f32 → i32` (round to nearest
/// even, as `round_ties_even`) and `i32 → u8` in registers (the compiler scalarises Rust's
/// saturating `as i8`: measured more time than the VNNI kernel itself).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn row_avx512(x: &[f32], out: &mut [u8]) -> f32 {
    use std::arch::x86_64::*;
    let (scale, inv, _) = row_scale(x);
    if !inv.is_finite() {
        return quantize_into(x, out, |q| (q as u8) ^ 0x80);
    }
    let iv = _mm512_set1_ps(inv);
    let off = _mm512_set1_epi32(128);
    // (NaN · 0 in a non-finite row converts to 0x8000_0000, whose low byte after + 128 is 128: q = 0)
    let quant = |v: __m512| {
        _mm512_add_epi32(_mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(v, iv)), off)
    };
    let mut t = 0;
    while t + 16 <= x.len() {
        let u = quant(_mm512_loadu_ps(x.as_ptr().add(t)));
        _mm_storeu_si128(out.as_mut_ptr().add(t) as *mut __m128i, _mm512_cvtepi32_epi8(u));
        t += 16;
    }
    if t < x.len() {
        let mask = ((1u32 << (x.len() - t)) - 1) as __mmask16;
        let u = quant(_mm512_maskz_loadu_ps(mask, x.as_ptr().add(t)));
        _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(t) as *mut i8, mask, u);
    }
    scale
}

/// Per-column quantisation of `w` `[k, n]` (finite, checked by the caller): `Wq` row-major and
/// the scales `sw_j = max_k |W[k, j]| / 127` (0 for an all-zero column). In f64, once per layer.
pub(super) fn quantize_columns(w: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let mut max = vec![0.0f32; n];
    for row in w.chunks_exact(n) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let inv: Vec<f64> = max.iter().map(|&m| if m > 0.0 { 127.0 / f64::from(m) } else { 0.0 }).collect();
    let mut q = vec![0i8; k * n];
    for (qrow, row) in q.chunks_exact_mut(n).zip(w.chunks_exact(n)) {
        for ((o, &v), &s) in qrow.iter_mut().zip(row).zip(&inv) {
            *o = (f64::from(v) * s).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }
    (q, max.iter().map(|&m| m / 127.0).collect())
}

/// `Wq` `[k, n]` into [`NR`]-column panels of 4-byte `k` groups, `k` padded to `kp` (a multiple
/// of [`KB`]): byte `256 g + 4 c + t` of panel `p` is `Wq[4g + t, 64p + c]` or 0 (module docs).
pub(super) fn pack_panels(w_q: &[i8], k: usize, n: usize, kp: usize) -> Vec<i8> {
    debug_assert!(kp.is_multiple_of(KB) && kp >= k);
    let panels = n.div_ceil(NR);
    let mut packed = vec![0i8; panels * kp * NR];
    for p in 0..panels {
        let panel = &mut packed[p * kp * NR..(p + 1) * kp * NR];
        for kk in 0..k {
            let (g, t) = (kk / 4, kk % 4);
            for c in 0..NR.min(n - p * NR) {
                panel[g * 4 * NR + 4 * c + t] = w_q[kk * n + p * NR + c];
            }
        }
    }
    packed
}
