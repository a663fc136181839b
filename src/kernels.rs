//! The few dense CPU kernels the executor needs: GEMM (through the `gemm` crate, which picks
//! AVX-512/AVX2/scalar code at run time), LayerNorm, GELU, softmax.
//!
//! This is the one module where sttabt steps outside burn: burn's Flex backend measured 40-80
//! GFLOP/s on 2 threads for the executor's matrix shapes and ~80 µs of overhead per small
//! element-wise op (examples/probe.rs), which would cap batch-1 inference far below the dense ONNX
//! Runtime peer. Training keeps using burn (autodiff); tests pin both to the same numbers.

use crate::config::Activation;

/// Products with at least this many multiply-adds use both threads (rayon); smaller ones stay on one.
const PAR_MIN_MACS: usize = 96 * 1024;

/// `out[m, n] = a[m, k] · b[k, n] (+ out if accumulate)`, all row-major and contiguous.
pub fn matmul(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    debug_assert_eq!(a.len(), m * k);
    debug_assert_eq!(b.len(), k * n);
    debug_assert_eq!(out.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    let par = if m * n * k >= PAR_MIN_MACS {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices have the lengths asserted above; strides describe row-major layouts.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `out[m, n] = a[m, k] · b[n, k]ᵀ` (b row-major `[n, k]`, read transposed), e.g. scores = Q Kᵀ.
pub fn matmul_bt(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    debug_assert_eq!(a.len(), m * k);
    debug_assert_eq!(b.len(), n * k);
    debug_assert_eq!(out.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: b is [n, k] row-major; reading it with row stride 1 and column stride k is bᵀ [k, n].
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Strided variant used for per-head attention: `a` rows of length `k` at stride `lda`, `b` likewise.
/// `out[m, n] = a · bᵀ`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bt_strided(a: &[f32], lda: usize, b: &[f32], ldb: usize, out: &mut [f32], m: usize, k: usize, n: usize) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= (m - 1) * lda + k && b.len() >= (n - 1) * ldb + k && out.len() >= m * n);
    // SAFETY: bounds asserted above.
    unsafe {
        gemm::gemm(
            m, n, k, out.as_mut_ptr(), 1, n as isize, false,
            a.as_ptr(), 1, lda as isize,
            b.as_ptr(), ldb as isize, 1,
            0.0, 1.0, false, false, false, gemm::Parallelism::None,
        );
    }
}

/// `out[m, n] (row stride ldo) = p[m, k] · v[k, n] (row stride ldv)`: attention-weighted values.
#[allow(clippy::too_many_arguments)]
pub fn matmul_strided_out(p: &[f32], v: &[f32], ldv: usize, out: &mut [f32], ldo: usize, m: usize, k: usize, n: usize) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(p.len() >= m * k && (k == 0 || v.len() >= (k - 1) * ldv + n) && out.len() >= (m - 1) * ldo + n);
    if k == 0 {
        for r in 0..m {
            out[r * ldo..r * ldo + n].fill(0.0);
        }
        return;
    }
    // SAFETY: bounds asserted above.
    unsafe {
        gemm::gemm(
            m, n, k, out.as_mut_ptr(), 1, ldo as isize, false,
            p.as_ptr(), 1, k as isize,
            v.as_ptr(), 1, ldv as isize,
            0.0, 1.0, false, false, false, gemm::Parallelism::None,
        );
    }
}

/// Add `bias[n]` to every row of `x[m, n]`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    let n = bias.len();
    for row in x.chunks_exact_mut(n) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += *b;
        }
    }
}

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

/// Apply the activation in place.
pub fn activate(x: &mut [f32], act: Activation) {
    match act {
        Activation::Gelu => {
            for v in x.iter_mut() {
                *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
        Activation::GeluTanh => {
            let c = (2.0f32 / std::f32::consts::PI).sqrt();
            for v in x.iter_mut() {
                let u = *v;
                *v = 0.5 * u * (1.0 + (c * (u + 0.044715 * u * u * u)).tanh());
            }
        }
        Activation::Relu => {
            for v in x.iter_mut() {
                *v = v.max(0.0);
            }
        }
    }
}

/// Softmax of one row in place (max-subtracted). An empty row is left empty.
pub fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return;
    }
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}
