//! The portable int8 path: plain Rust i32 loops over the row-major `Wq`, on any CPU.
//!
//! Same arithmetic as the SIMD paths: `acc_j = Σ_k u_k · Wq[k, j]` over the shifted bytes
//! `u = q + 128`, minus the compensation, then `(acc − c_j) · (sx · sw_j) + b_j`.

use super::{Activations, Int8Kernel, QuantizedLinear, PAR_MIN_MACS};
use rayon::prelude::*;

/// `out[m, n]` from the quantised activations (rows split over the pool when large).
pub(super) fn run(l: &QuantizedLinear, act: &Activations, out: &mut [f32], m: usize, gelu: bool) {
    let n = l.n;
    let threads = crate::kernels::threads();
    let per_task = if threads > 1 && m * n * l.k >= PAR_MIN_MACS { m.div_ceil(threads * 2) } else { m };
    out.par_chunks_mut(per_task * n).enumerate().for_each(|(t, block)| {
        Int8Kernel::Fallback.count();
        let mut acc = vec![0i32; n];
        for (r, row) in block.chunks_exact_mut(n).enumerate() {
            let i = t * per_task + r;
            rows_imp(l, &act.data[i * act.ld..i * act.ld + l.k], &mut acc);
            let sx = act.scale[i];
            for (j, (o, &a)) in row.iter_mut().zip(&acc).enumerate() {
                *o = (a - l.comp[j]) as f32 * (sx * l.w_scale[j]) + l.bias[j];
            }
            if gelu {
                crate::kernels::gelu_fast(row);
            }
        }
    });
}

/// `acc[j] = Σ_kk u[kk] · Wq[kk, j]` (one activation row).
#[inline]
fn rows_imp(l: &QuantizedLinear, u: &[u8], acc: &mut [i32]) {
    acc.fill(0);
    for (&a, w) in u.iter().zip(l.w_q.chunks_exact(l.n)) {
        let a = i32::from(a);
        for (s, &wv) in acc.iter_mut().zip(w) {
            *s += a * i32::from(wv);
        }
    }
}
