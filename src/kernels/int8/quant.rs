//! Symmetric int8 quantisation: per output column for weights (once), per row for activations
//! (every call), and the weight panel packing the VNNI and AMX kernels read (see `super`).

use super::{Activations, KB, NR};

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

/// [`quantize_row`] writing `f(q)` for each value (the kernels store `q + 128` as `u8`).
#[inline(always)]
fn quantize_into<T>(x: &[f32], out: &mut [T], f: impl Fn(i8) -> T) -> f32 {
    let max = abs_max(x);
    if !crate::kernels::all_finite(x) {
        out.iter_mut().for_each(|o| *o = f(0));
        return f32::NAN;
    }
    if max == 0.0 {
        out.iter_mut().for_each(|o| *o = f(0));
        return 0.0;
    }
    let inv = 127.0 / max;
    if inv.is_finite() {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f((v * inv).round_ties_even().clamp(-127.0, 127.0) as i8);
        }
    } else {
        let inv = 127.0 / f64::from(max);
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f((f64::from(v) * inv).round_ties_even().clamp(-127.0, 127.0) as i8);
        }
    }
    max / 127.0
}

/// `max |x|`, ignoring NaN (callers check finiteness); 16 lanes so that it vectorises.
#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *l = if a > *l { a } else { *l };
        }
    }
    let mut max = 0.0f32;
    for &v in lanes.iter().chain(tail) {
        let a = v.abs();
        max = if a > max { a } else { max };
    }
    max
}

/// Quantise the `m` rows of `x` `[m, k]` into `rows` rows of `ld` bytes `q + 128` (padding
/// bytes and rows hold 128, i.e. `q = 0`), with their scales.
pub(super) fn quantize_rows(x: &[f32], m: usize, k: usize, ld: usize, rows: usize) -> Activations {
    debug_assert!(x.len() == m * k && ld >= k && rows >= m);
    let mut data = vec![128u8; rows * ld];
    let mut scale = vec![0.0f32; m];
    #[cfg(target_arch = "x86_64")]
    if super::vnni::available() {
        // SAFETY: AVX-512F/BW checked by `vnni::available`.
        unsafe { rows_avx512(x, k, ld, &mut data, &mut scale) };
        return Activations { data, scale, ld };
    }
    rows_imp(x, k, ld, &mut data, &mut scale);
    Activations { data, scale, ld }
}

#[inline(always)]
fn rows_imp(x: &[f32], k: usize, ld: usize, data: &mut [u8], scale: &mut [f32]) {
    for (i, s) in scale.iter_mut().enumerate() {
        *s = quantize_into(&x[i * k..(i + 1) * k], &mut data[i * ld..i * ld + k], |q| (q as u8) ^ 0x80);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn rows_avx512(x: &[f32], k: usize, ld: usize, data: &mut [u8], scale: &mut [f32]) {
    rows_imp(x, k, ld, data, scale)
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
    debug_assert!(kp % KB == 0 && kp >= k);
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
