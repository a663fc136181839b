//! LayerNorm: the reference row-wise form and the fused residual + LayerNorm kernel.

use super::*;

/// Row-wise LayerNorm in place: `x = (x - mean) / sqrt(var + eps) * gamma + beta` (biased variance, as torch).
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f64) {
    let n = gamma.len();
    for row in x.chunks_exact_mut(n) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (((*v as f64 - mean) * inv) as f32) * *g + *b;
        }
    }
}

#[inline(always)]
pub(super) fn residual_ln_imp(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f64) {
    let n = gamma.len();
    for (row, res) in x.chunks_exact_mut(n).zip(residual.chunks_exact(n)) {
        for (v, r) in row.iter_mut().zip(res) {
            *v += *r;
        }
        // f64 statistics, as `layer_norm` (parity with torch at 1e-6).
        let mut s = [0.0f64; 8];
        let chunks = row.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for k in 0..8 {
                s[k] += c[k] as f64;
            }
        }
        let mut sum: f64 = s.iter().sum();
        for &v in tail {
            sum += v as f64;
        }
        let mean = sum / n as f64;
        let mut q = [0.0f64; 8];
        let chunks = row.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for k in 0..8 {
                let dlt = c[k] as f64 - mean;
                q[k] += dlt * dlt;
            }
        }
        let mut var: f64 = q.iter().sum();
        for &v in tail {
            var += (v as f64 - mean) * (v as f64 - mean);
        }
        var /= n as f64;
        let inv = 1.0 / (var + eps).sqrt();
        let (mean32, inv32) = (mean as f32, inv as f32);
        let _ = (mean32, inv32);
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (((*v as f64 - mean) * inv) as f32) * *g + *b;
        }
    }
}
dispatch!(pub(super) fn residual_ln_dispatch(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f64) => residual_ln_imp);

/// `x = LayerNorm(x + residual)` row-wise (f64 statistics), vectorised, parallel for large inputs.
/// `residual` may be empty (plain LayerNorm).
pub fn residual_layer_norm(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f64) {
    use rayon::prelude::*;
    let n = gamma.len();
    if n == 0 {
        return;
    }
    let zeros;
    let residual = if residual.is_empty() {
        zeros = vec![0.0f32; x.len()];
        &zeros[..]
    } else {
        residual
    };
    assert_eq!(residual.len(), x.len());
    let rows = x.len() / n;
    let threads = threads();
    if threads <= 1 || x.len() < 2 * PAR_MIN_ELEMS {
        residual_ln_dispatch(x, residual, gamma, beta, eps);
        return;
    }
    let per = rows.div_ceil(threads * 2).max(1);
    x.par_chunks_mut(per * n).zip(residual.par_chunks(per * n)).for_each(|(c, r)| residual_ln_dispatch(c, r, gamma, beta, eps));
}
