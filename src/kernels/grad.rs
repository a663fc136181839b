//! Kernels of the native trainer's backward pass and optimiser ([`crate::train::native`]): the
//! GELU derivative and the AdamW element update, vectorised. (Its matrix products with either
//! operand read transposed, `dW = Xᵀ·dY`, `dX = dY·Wᵀ`, are [`matmul_t`] in the gemm module.)

use rayon::prelude::*;

use super::*;

/// Exact (erf) GELU's derivative `Φ(x) + x·φ(x)` ([`normal_cdf_approx`], [`exp_approx`]:
/// absolute error below ~1e-6).
#[inline(always)]
pub fn gelu_grad_approx(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    normal_cdf_approx(x) + x * INV_SQRT_2PI * exp_approx(-0.5 * x * x)
}

#[inline(always)]
fn gelu_backward_imp(dy: &mut [f32], x: &[f32]) {
    for (d, &v) in dy.iter_mut().zip(x) {
        *d *= gelu_grad_approx(v);
    }
}
dispatch!(fn gelu_backward_dispatch(dy: &mut [f32], x: &[f32]) => gelu_backward_imp);

/// `dy *= GELU'(x)` element-wise (exact-erf GELU, [`gelu_grad_approx`]), vectorised, in
/// parallel blocks on the caller's rayon pool.
///
/// Panics if the lengths differ.
pub fn gelu_backward(dy: &mut [f32], x: &[f32]) {
    assert_eq!(dy.len(), x.len(), "gelu_backward: dy and x differ in length");
    const BLOCK: usize = 1 << 14;
    dy.par_chunks_mut(BLOCK).zip(x.par_chunks(BLOCK)).for_each(|(d, v)| gelu_backward_dispatch(d, v));
}

#[inline(always)]
fn softmax_rows_scaled_imp(x: &mut [f32], n: usize, scale: f32) {
    for row in x.chunks_exact_mut(n) {
        for v in row.iter_mut() {
            *v *= scale;
        }
        super::attention::softmax_imp(row);
    }
}
dispatch!(fn softmax_rows_scaled_dispatch(x: &mut [f32], n: usize, scale: f32) => softmax_rows_scaled_imp);

/// Attention probabilities from raw scores in place: every row of `n` values of `x` becomes
/// `softmax(scale · row)` (max-subtracted, the vectorised [`exp_approx`]); ALGORITHM.md section 1.
/// One thread (callers split rows or heads across the pool themselves).
///
/// Panics if `n` is 0 or does not divide `x.len()`.
pub fn softmax_rows_scaled(x: &mut [f32], n: usize, scale: f32) {
    assert!(n > 0 && x.len().is_multiple_of(n), "softmax_rows_scaled: {} values are not rows of {n}", x.len());
    softmax_rows_scaled_dispatch(x, n, scale)
}

#[inline(always)]
fn softmax_backward_imp(g: &mut [f32], p: &[f32], extra: Option<&[f32]>, n: usize, scale: f32) {
    for (r, (gr, pr)) in g.chunks_exact_mut(n).zip(p.chunks_exact(n)).enumerate() {
        // Σ_j P_j dP_j with 16 independent lanes (vectorised)
        let mut acc = [0.0f32; 16];
        let (gc, pc) = (gr.chunks_exact(16), pr.chunks_exact(16));
        let (gt, pt) = (gc.remainder(), pc.remainder());
        for (a, b) in gc.zip(pc) {
            for k in 0..16 {
                acc[k] = a[k].mul_add(b[k], acc[k]);
            }
        }
        let mut dot: f32 = acc.iter().sum();
        for (a, b) in gt.iter().zip(pt) {
            dot += a * b;
        }
        match extra {
            None => {
                for (s, &pv) in gr.iter_mut().zip(pr) {
                    *s = pv * (*s - dot) * scale;
                }
            }
            Some(e) => {
                for ((s, &pv), &ev) in gr.iter_mut().zip(pr).zip(&e[r * n..(r + 1) * n]) {
                    *s = (pv * (*s - dot) + ev) * scale;
                }
            }
        }
    }
}
dispatch!(fn softmax_backward_dispatch(g: &mut [f32], p: &[f32], extra: Option<&[f32]>, n: usize, scale: f32) => softmax_backward_imp);

/// Backward of [`softmax_rows_scaled`] in place: row by row (`n` values), `g ← (P ⊙ (g − Σ_j P_j
/// g_j) + extra) · scale`, i.e. dL/dS from dL/dP for `P = softmax(scale · S)` (`extra`: an
/// optional extra gradient on the scaled scores, e.g. a loss on them, same layout as `g`).
/// Vectorised, one thread.
///
/// Panics if `n` is 0, does not divide `g.len()`, or `p` / `extra` differ in length from `g`.
pub fn softmax_backward_rows(g: &mut [f32], p: &[f32], extra: Option<&[f32]>, n: usize, scale: f32) {
    assert!(n > 0 && g.len().is_multiple_of(n), "softmax_backward_rows: {} values are not rows of {n}", g.len());
    assert_eq!(p.len(), g.len(), "softmax_backward_rows: probabilities and gradient differ in length");
    if let Some(e) = extra {
        assert_eq!(e.len(), g.len(), "softmax_backward_rows: extra and gradient differ in length");
    }
    softmax_backward_dispatch(g, p, extra, n, scale)
}

/// The constants of one AdamW step (see [`adamw_update`]).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// `1 - β1^t`, `1 - β2^t`.
    pub bias_1: f32,
    pub bias_2: f32,
    /// Learning rate.
    pub lr: f32,
    /// `1 - lr·wd`, or `None` without weight decay.
    pub keep: Option<f32>,
    /// Factor applied to the gradient first (per-tensor clipping; 1 for none).
    pub grad_scale: f32,
}

#[inline(always)]
fn adamw_imp(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWStep) {
    let (f1, f2) = (1.0 - s.beta_1, 1.0 - s.beta_2);
    let keep = s.keep.unwrap_or(1.0);
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * s.grad_scale;
        *m = *m * s.beta_1 + g * f1;
        *v = *v * s.beta_2 + g * g * f2;
        let delta = (*m / s.bias_1) / ((*v / s.bias_2).sqrt() + s.epsilon);
        *p = *p * keep - delta * s.lr;
    }
}
dispatch!(fn adamw_dispatch(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWStep) => adamw_imp);

/// One AdamW element update of a tensor (burn's formula): `g ← g·grad_scale`,
/// `m ← β1 m + (1-β1) g`, `v ← β2 v + (1-β2) g²`,
/// `p ← p·keep − lr · (m / bias_1) / (sqrt(v / bias_2) + ε)`; vectorised, in parallel blocks on
/// the caller's rayon pool. `g` is not modified.
///
/// Panics if the lengths differ.
pub fn adamw_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWStep) {
    assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len(), "adamw_update: tensors of different lengths");
    const BLOCK: usize = 1 << 14;
    p.par_chunks_mut(BLOCK)
        .zip(g.par_chunks(BLOCK))
        .zip(m.par_chunks_mut(BLOCK))
        .zip(v.par_chunks_mut(BLOCK))
        .for_each(|(((p, g), m), v)| adamw_dispatch(p, g, m, v, s));
}

#[inline(always)]
fn sum_squares_imp(x: &[f32]) -> f64 {
    // 16 f32 lanes per block, widened to f64 per block
    let mut total = 0.0f64;
    for c in x.chunks(256) {
        let mut acc = [0.0f32; 16];
        let it = c.chunks_exact(16);
        let tail = it.remainder();
        for v in it {
            for k in 0..16 {
                acc[k] += v[k] * v[k];
            }
        }
        let mut s: f64 = acc.iter().map(|&a| a as f64).sum();
        for &v in tail {
            s += (v * v) as f64;
        }
        total += s;
    }
    total
}
dispatch!(fn sum_squares_dispatch(x: &[f32]) -> f64 => sum_squares_imp);

/// `Σ x²` (f32 products summed in f32 over blocks of 256 values, blocks summed in f64),
/// vectorised, in parallel blocks on the caller's rayon pool; the block sums are added in order,
/// so the result does not depend on the thread count or on scheduling (exact resume needs that).
pub fn sum_squares(x: &[f32]) -> f64 {
    const BLOCK: usize = 1 << 15;
    let partial: Vec<f64> = x.par_chunks(BLOCK).map(sum_squares_dispatch).collect();
    partial.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_t_equals_matmul_of_the_transposed_copies() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.25).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.5).collect();
        let t = |x: &[f32], r: usize, c: usize| -> Vec<f32> { (0..c * r).map(|i| x[(i % r) * c + i / r]).collect() };
        let mut want = vec![0.0f32; m * n];
        matmul(&a, &b, &mut want, m, k, n, false);
        let (at, bt) = (t(&a, m, k), t(&b, k, n));
        for (x, xt, y, yt) in [(&a, false, &b, false), (&at, true, &b, false), (&a, false, &bt, true), (&at, true, &bt, true)] {
            let mut got = vec![1.0f32; m * n];
            matmul_t(x, xt, y, yt, &mut got, m, k, n, false);
            assert_eq!(got, want, "a transposed {xt}, b transposed {yt}");
            matmul_t(x, xt, y, yt, &mut got, m, k, n, true);
            let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
            assert_eq!(got, twice, "accumulate, a transposed {xt}, b transposed {yt}");
        }
    }

    #[test]
    fn matmul_at_strided_reads_and_writes_column_blocks() {
        // aᵀ·b for a stored [k, m], b the columns 3..3+n of rows of width 9, out columns 2..2+n
        // of rows of width 7 (the rest untouched)
        let (m, k, n) = (4, 6, 3);
        let a: Vec<f32> = (0..k * m).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.25).collect();
        let b: Vec<f32> = (0..k * 9).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.5).collect();
        for accumulate in [false, true] {
            let mut out = vec![1.5f32; m * 7];
            matmul_at_strided(&a, &b[3..], 9, &mut out[2..], 7, m, k, n, accumulate);
            for i in 0..m {
                for j in 0..7 {
                    let got = out[i * 7 + j];
                    if (2..2 + n).contains(&j) {
                        let dot: f32 = (0..k).map(|t| a[t * m + i] * b[t * 9 + 3 + j - 2]).sum();
                        let want = dot + if accumulate { 1.5 } else { 0.0 };
                        assert!((got - want).abs() <= 1e-5, "[{i},{j}] acc {accumulate}: {got} vs {want}");
                    } else {
                        assert_eq!(got, 1.5, "[{i},{j}] outside the block was written");
                    }
                }
            }
        }
    }

    #[test]
    fn softmax_rows_scaled_and_its_backward_follow_the_formulas() {
        let n = 37; // two 16-lane blocks and a tail
        let rows = 3;
        let x: Vec<f32> = (0..rows * n).map(|i| ((i * 29 % 23) as f32 - 11.0) * 0.3).collect();
        let g0: Vec<f32> = (0..rows * n).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
        let e: Vec<f32> = (0..rows * n).map(|i| ((i % 5) as f32 - 2.0) * 0.01).collect();
        let scale = 0.25f32;
        let mut p = x.clone();
        softmax_rows_scaled(&mut p, n, scale);
        for (xr, pr) in x.chunks(n).zip(p.chunks(n)) {
            let max = xr.iter().map(|&v| (v * scale) as f64).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = xr.iter().map(|&v| ((v * scale) as f64 - max).exp()).sum();
            for (&v, &got) in xr.iter().zip(pr) {
                let want = ((v * scale) as f64 - max).exp() / z;
                assert!((got as f64 - want).abs() <= 1e-6 * want.max(1e-3), "softmax {got} vs {want}");
            }
        }
        for extra in [None, Some(&e[..])] {
            let mut g = g0.clone();
            softmax_backward_rows(&mut g, &p, extra, n, scale);
            for r in 0..rows {
                let dot: f64 = (0..n).map(|j| (p[r * n + j] * g0[r * n + j]) as f64).sum();
                for j in 0..n {
                    let i = r * n + j;
                    let want = (p[i] as f64 * (g0[i] as f64 - dot) + extra.map_or(0.0, |e| e[i] as f64)) * scale as f64;
                    assert!((g[i] as f64 - want).abs() <= 1e-6, "dS[{r},{j}] = {} vs {want}", g[i]);
                }
            }
        }
    }

    #[test]
    fn gelu_backward_matches_the_exact_derivative() {
        let x: Vec<f32> = (-8000..8000).map(|i| i as f32 * 1e-3).chain([-30.0, 30.0]).collect();
        let mut dy = vec![2.0f32; x.len()];
        gelu_backward(&mut dy, &x);
        for (&v, &d) in x.iter().zip(&dy) {
            let v64 = v as f64;
            let pdf = (-0.5 * v64 * v64).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let cdf = 0.5 * (1.0 + libm::erf(v64 / std::f64::consts::SQRT_2));
            let want = 2.0 * (cdf + v64 * pdf);
            assert!((d as f64 - want).abs() < 4e-6, "GELU'({v}) * 2 = {d}, want {want}");
        }
        assert_eq!(gelu_grad_approx(0.0), 0.5);
    }

    #[test]
    fn adamw_update_and_sum_squares_follow_the_formula() {
        let n = 40_000; // several parallel blocks
        let g: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) * 1e-2).collect();
        let want_sq: f64 = g.iter().map(|&v| (v * v) as f64).sum();
        assert!((sum_squares(&g) - want_sq).abs() <= 1e-6 * want_sq, "{} vs {want_sq}", sum_squares(&g));
        let mut p: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.1).collect();
        let (mut m, mut v) = (vec![0.01f32; n], vec![0.02f32; n]);
        let s = AdamWStep {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            bias_1: 0.19,
            bias_2: 0.002,
            lr: 1e-3,
            keep: Some(0.99),
            grad_scale: 0.5,
        };
        let (p0, m0, v0) = (p.clone(), m.clone(), v.clone());
        adamw_update(&mut p, &g, &mut m, &mut v, s);
        for i in [0, 1, 7, 16_384, n - 1] {
            let gi = g[i] * 0.5;
            let mi = m0[i] * 0.9 + gi * (1.0 - 0.9);
            let vi = v0[i] * 0.999 + gi * gi * (1.0 - 0.999);
            let pi = p0[i] * 0.99 - (mi / 0.19) / ((vi / 0.002).sqrt() + 1e-5) * 1e-3;
            assert_eq!((m[i], v[i]), (mi, vi), "moments at {i}");
            assert!((p[i] - pi).abs() <= 1e-7 * pi.abs().max(1.0), "p[{i}] = {}, want {pi}", p[i]);
        }
    }
}
