//! The portable int8 path: plain Rust integer loops over the row-major `Wq`, on any CPU
//! (compiled a second time for AVX2, picked at run time).
//!
//! Same arithmetic as the SIMD paths: `acc_j = Σ_k u_k · Wq[k, j]` over the unsigned bytes `u`,
//! then `(acc − z · c_j) · (sx · sw_j) + b_j` with the row's zero point `z` and column sum `c_j`,
//! plus the f32 channels `Σ_c x_c · W[c, j]` (multiply and add, not fused) before the GELU. Each product
//! `u · w` fits i16 (`|255 · 127| < 2^15`), so the loops multiply 16-bit lanes and add into
//! 32-bit ones; blocks of [`ROWS`] rows share each pass over a weight row.

use super::{Activations, Int8Kernel, QuantizedLinear, PAR_MIN_MACS};
use rayon::prelude::*;

/// Activation rows per pass over the weights.
const ROWS: usize = 4;

/// `out[m, n]` from the quantised activations (row blocks split over the pool when large).
pub(super) fn run(l: &QuantizedLinear, act: &Activations, out: &mut [f32], m: usize, gelu: bool) {
    let n = l.n;
    let threads = crate::kernels::threads();
    let per_task = if threads > 1 && m * n * l.k >= PAR_MIN_MACS { m.div_ceil(threads * 2).next_multiple_of(ROWS) } else { m };
    out.par_chunks_mut(per_task * n).enumerate().for_each(|(t, block)| {
        Int8Kernel::Fallback.count();
        let mut acc = vec![0i32; ROWS * n];
        for (b, rows) in block.chunks_mut(ROWS * n).enumerate() {
            let i0 = t * per_task + b * ROWS;
            let r = rows.len() / n;
            accumulate(l, act, i0, r, &mut acc[..r * n]);
            for (dr, row) in rows.chunks_exact_mut(n).enumerate() {
                let (sx, z) = (act.scale[i0 + dr], act.zero[i0 + dr]);
                for (j, (o, &a)) in row.iter_mut().zip(&acc[dr * n..(dr + 1) * n]).enumerate() {
                    *o = (a - z * l.col_sum[j]) as f32 * (sx * l.w_scale[j]) + l.bias[j];
                }
                // + x[i, C] · W[C, :] while the row is in L1 (the f32 channels, in order)
                let sn = act.side_n;
                for (&xv, w) in act.side[(i0 + dr) * sn..(i0 + dr + 1) * sn].iter().zip(l.f32_rows.chunks_exact(l.w_scale.len())) {
                    for (o, &wv) in row.iter_mut().zip(w) {
                        *o += xv * wv;
                    }
                }
                if gelu {
                    crate::kernels::gelu_fast(row);
                }
            }
        }
    });
}

/// `acc[r, j] = Σ_kk u[i0 + r, kk] · Wq[kk, j]` for `r < rows <= ROWS`.
fn accumulate(l: &QuantizedLinear, act: &Activations, i0: usize, rows: usize, acc: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(l: &QuantizedLinear, act: &Activations, i0: usize, rows: usize, acc: &mut [i32]) {
            accumulate_imp(l, act, i0, rows, acc)
        }
        // SAFETY: AVX2 checked just above.
        return unsafe { avx2(l, act, i0, rows, acc) };
    }
    accumulate_imp(l, act, i0, rows, acc)
}

#[inline(always)]
fn accumulate_imp(l: &QuantizedLinear, act: &Activations, i0: usize, rows: usize, acc: &mut [i32]) {
    let (k, n) = (l.k, l.n);
    let u = |r: usize, kk: usize| i16::from(act.data[(i0 + r.min(rows - 1)) * act.ld + kk]);
    acc.fill(0);
    let mut block = [vec![0i32; n], vec![0i32; n], vec![0i32; n], vec![0i32; n]];
    for (kk, w) in l.w_q.chunks_exact(n).enumerate().take(k) {
        // (rows past `rows` repeat the last one and are dropped below)
        let a = [u(0, kk), u(1, kk), u(2, kk), u(3, kk)];
        let [b0, b1, b2, b3] = &mut block;
        for ((((&wv, s0), s1), s2), s3) in w.iter().zip(b0.iter_mut()).zip(b1.iter_mut()).zip(b2.iter_mut()).zip(b3.iter_mut()) {
            let wv = i16::from(wv);
            *s0 += i32::from(a[0] * wv);
            *s1 += i32::from(a[1] * wv);
            *s2 += i32::from(a[2] * wv);
            *s3 += i32::from(a[3] * wv);
        }
    }
    for (r, b) in block.iter().enumerate().take(rows) {
        acc[r * n..(r + 1) * n].copy_from_slice(b);
    }
}
