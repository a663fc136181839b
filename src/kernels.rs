//! The few dense CPU kernels the executor needs: GEMM (through the `gemm` crate, which picks
//! AVX-512/AVX2/scalar code at run time, and for up to 256 rows on AVX-512 CPUs the pre-packed
//! weight panels of [`packed`]), attention, LayerNorm, GELU, softmax.
//!
//! This is the one module where sttabt steps outside burn: burn's Flex backend measured 40-80
//! GFLOP/s on 2 threads for the executor's matrix shapes and ~80 µs of overhead per small
//! element-wise op (examples/burn_probe.rs; examples/gemm_probe.rs measures `gemm`), which would cap batch-1 inference far below the dense ONNX
//! Runtime peer. Training keeps using burn (autodiff); tests pin both to the same numbers.

use crate::config::Activation;

pub mod int8;
pub mod packed;

/// Run `f` on a worker thread of the rayon pool (directly when already on one), so that the
/// parallel kernels it calls fork and join inside the pool. Called from outside, every parallel
/// kernel would inject a job into the pool and put the caller to sleep on a latch: one futex
/// wake-up and sleep per call, ~12% of a batch-1 pass over a 24-token sentence (perf).
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

thread_local! {
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Threads the kernels may split one call over: 1 inside [`serial`], else the rayon pool's.
pub fn threads() -> usize {
    if SERIAL.with(|s| s.get()) {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Run `f` with every kernel it calls on the calling thread only (no fork/join inside): for
/// callers that already split the work across the pool themselves (the executor's row blocks).
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

/// Products with at least this many multiply-adds use both threads (rayon); smaller ones stay on one.
const PAR_MIN_MACS: usize = 96 * 1024;

/// `rows x cols` elements, panicking (not wrapping) on overflow: the kernels' length checks.
fn elems(rows: usize, cols: usize) -> usize {
    rows.checked_mul(cols).unwrap_or_else(|| panic!("{rows} x {cols} elements overflow usize"))
}

/// Elements a strided view of `rows` rows of `width` values at row stride `ld` spans:
/// `(rows - 1) · ld + width` (0 when `rows` is 0), panicking on overflow.
fn strided_span(rows: usize, ld: usize, width: usize) -> usize {
    if rows == 0 {
        return 0;
    }
    (rows - 1)
        .checked_mul(ld)
        .and_then(|x| x.checked_add(width))
        .unwrap_or_else(|| panic!("{rows} rows of {width} at stride {ld} overflow usize"))
}

/// `out[m, n] = a[m, k] · b[k, n] (+ out if accumulate)`, all row-major and contiguous.
///
/// Panics if `a.len() != m k`, `b.len() != k n` or `out.len() != m n`.
pub fn matmul(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    assert!(a.len() == elems(m, k), "matmul: a has {} values, expected m x k = {m} x {k}", a.len());
    assert!(b.len() == elems(k, n), "matmul: b has {} values, expected k x n = {k} x {n}", b.len());
    assert!(out.len() == elems(m, n), "matmul: out has {} values, expected m x n = {m} x {n}", out.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    let threads = threads();
    let par = if m * n * k >= PAR_MIN_MACS && threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the slices have the lengths asserted above (always, not only in debug builds);
    // strides describe row-major layouts.
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
///
/// Panics if `a.len() != m k`, `b.len() != n k` or `out.len() != m n`.
pub fn matmul_bt(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(a.len() == elems(m, k), "matmul_bt: a has {} values, expected m x k = {m} x {k}", a.len());
    assert!(b.len() == elems(n, k), "matmul_bt: b has {} values, expected n x k = {n} x {k}", b.len());
    assert!(out.len() == elems(m, n), "matmul_bt: out has {} values, expected m x n = {m} x {n}", out.len());
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
///
/// Panics unless `lda >= k`, `ldb >= k`, `a` holds `m` rows and `b` `n` rows at those strides and
/// `out.len() >= m n`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bt_strided(a: &[f32], lda: usize, b: &[f32], ldb: usize, out: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(lda >= k && ldb >= k, "matmul_bt_strided: strides {lda}, {ldb} shorter than a row of k = {k}");
    assert!(a.len() >= strided_span(m, lda, k), "matmul_bt_strided: a has {} values, too few for {m} rows of {k} at stride {lda}", a.len());
    assert!(b.len() >= strided_span(n, ldb, k), "matmul_bt_strided: b has {} values, too few for {n} rows of {k} at stride {ldb}", b.len());
    assert!(out.len() >= elems(m, n), "matmul_bt_strided: out has {} values, expected at least m x n = {m} x {n}", out.len());
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: bounds asserted above.
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
            lda as isize,
            b.as_ptr(),
            ldb as isize,
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

/// `out[m, n] (row stride ldo) = p[m, k] · v[k, n] (row stride ldv)`: attention-weighted values.
///
/// Panics unless `ldv >= n`, `ldo >= n`, `p.len() >= m k`, `v` holds `k` rows and `out` `m`
/// rows at those strides.
#[allow(clippy::too_many_arguments)]
pub fn matmul_strided_out(p: &[f32], v: &[f32], ldv: usize, out: &mut [f32], ldo: usize, m: usize, k: usize, n: usize) {
    assert!(ldv >= n && ldo >= n, "matmul_strided_out: strides {ldv}, {ldo} shorter than a row of n = {n}");
    assert!(p.len() >= elems(m, k), "matmul_strided_out: p has {} values, expected at least m x k = {m} x {k}", p.len());
    assert!(
        v.len() >= strided_span(k, ldv, n),
        "matmul_strided_out: v has {} values, too few for {k} rows of {n} at stride {ldv}",
        v.len()
    );
    assert!(
        out.len() >= strided_span(m, ldo, n),
        "matmul_strided_out: out has {} values, too few for {m} rows of {n} at stride {ldo}",
        out.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for r in 0..m {
            out[r * ldo..r * ldo + n].fill(0.0);
        }
        return;
    }
    // SAFETY: bounds asserted above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            ldo as isize,
            false,
            p.as_ptr(),
            1,
            k as isize,
            v.as_ptr(),
            1,
            ldv as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
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

// ---------------------------------------------------------------------------------------------
// Vectorised element-wise kernels with run-time AVX-512 / AVX2 dispatch.
//
// The scalar versions above (libm `erff`, `f32::exp`) measured ~30% of dense MiniLM time at
// n = 128 (perf: erff + erfc2 + expf), all on one thread. The kernels below are branch-free so
// LLVM vectorises them, are compiled three times (AVX-512, AVX2+FMA, baseline) and picked at run
// time, and split large inputs over the rayon pool.

/// Rows per parallel chunk so that each chunk has at least this many elements.
const PAR_MIN_ELEMS: usize = 16 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Isa {
    V4,
    V3,
    Base,
}

#[inline]
fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq") && std::is_x86_feature_detected!("fma")
            {
                Isa::V4
            } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                Isa::V3
            } else {
                Isa::Base
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Isa::Base
    }
}

/// Name of the instruction set the element-wise kernels use on this CPU (for reports).
pub fn simd_level() -> &'static str {
    match isa() {
        Isa::V4 => "avx512",
        Isa::V3 => "avx2+fma",
        Isa::Base => "baseline",
    }
}

/// Defines `$name(args)` that calls `$imp(args)` compiled for AVX-512, AVX2+FMA or the baseline.
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident : $t:ty),*) $(-> $r:ty)? => $imp:ident) => {
        $(#[$m])* $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
                unsafe fn v4($($a: $t),*) $(-> $r)? { $imp($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($a: $t),*) $(-> $r)? { $imp($($a),*) }
                match isa() {
                    // SAFETY: the CPU supports the features (checked by `isa`).
                    Isa::V4 => return unsafe { v4($($a),*) },
                    Isa::V3 => return unsafe { v3($($a),*) },
                    Isa::Base => {}
                }
            }
            $imp($($a),*)
        }
    };
}

/// `e^x` for f32, branch-free (Cephes `expf` polynomial, ~1-2 ulp), inlined so loops vectorise.
/// Inputs are clamped to `[-87.3, 88.7]` (results below ~1e-38 are not flushed to 0).
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    let k = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = k.mul_add(2.121_944_4e-4, k.mul_add(-0.693_359_4, x));
    let mut y = 1.987_569_1e-4f32;
    y = y.mul_add(r, 1.398_199_9e-3);
    y = y.mul_add(r, 8.333_452e-3);
    y = y.mul_add(r, 4.166_579_6e-2);
    y = y.mul_add(r, 1.666_666_5e-1);
    y = y.mul_add(r, 5.000_000_1e-1);
    y = (y * r).mul_add(r, r) + 1.0;
    // 2^k through the bit pattern; k is an integer in [-126, 128] (magic-number conversion,
    // branch-free unlike a saturating `as i32`).
    let ki = ((k + 12_582_912.0).to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(((ki + 127) as u32) << 23);
    y * scale
}

/// `erfc(z)` for `z >= 0` (Numerical Recipes `erfcc`, fractional error < 1.2e-7), branch-free.
#[inline(always)]
fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77f32;
    p = p.mul_add(t, -0.822_152_23);
    p = p.mul_add(t, 1.488_515_9);
    p = p.mul_add(t, -1.135_203_98);
    p = p.mul_add(t, 0.278_868_07);
    p = p.mul_add(t, -0.186_288_06);
    p = p.mul_add(t, 0.096_784_18);
    p = p.mul_add(t, 0.374_091_96);
    p = p.mul_add(t, 1.000_023_7);
    p = p.mul_add(t, -1.265_512_2);
    t * exp_approx((-z).mul_add(z, p))
}

/// Exact (erf) GELU: `0.5 x (1 + erf(x/√2))` = `x - 0.5 x erfc(x/√2)` (x >= 0) or `0.5 x erfc(-x/√2)`.
#[inline(always)]
pub fn gelu_approx(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let half_erfc = 0.5 * erfc_pos(z);
    if x >= 0.0 {
        x - x * half_erfc
    } else {
        x * half_erfc
    }
}

#[inline(always)]
fn bias_act_imp(x: &mut [f32], bias: &[f32], act: u8) {
    let n = bias.len();
    for row in x.chunks_exact_mut(n) {
        match act {
            0 => {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v = gelu_approx(*v + *b);
                }
            }
            1 => {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += *b;
                }
            }
            _ => {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v = (*v + *b).max(0.0);
                }
            }
        }
    }
}
dispatch!(fn bias_act_dispatch(x: &mut [f32], bias: &[f32], act: u8) => bias_act_imp);

/// `x = act(x + bias)` row-wise, vectorised and split over the thread pool for large inputs.
/// `act = None` only adds the bias. GELU uses [`gelu_approx`] (erf form, ~2e-7 relative).
pub fn bias_activate(x: &mut [f32], bias: &[f32], act: Option<Activation>) {
    let n = bias.len();
    if n == 0 {
        return;
    }
    if act == Some(Activation::GeluTanh) {
        add_bias(x, bias);
        activate(x, Activation::GeluTanh);
        return;
    }
    let code = match act {
        Some(Activation::Gelu) => 0u8,
        None => 1,
        _ => 2,
    };
    par_rows(x, n, |chunk| bias_act_dispatch(chunk, bias, code));
}

/// Run `f` over chunks of whole rows of `x` (row length `n`), in parallel when `x` is large.
fn par_rows<F: Fn(&mut [f32]) + Sync>(x: &mut [f32], n: usize, f: F) {
    use rayon::prelude::*;
    let rows = x.len() / n.max(1);
    let threads = threads();
    if threads <= 1 || x.len() < 2 * PAR_MIN_ELEMS || rows < 2 {
        f(x);
        return;
    }
    let per = (rows.div_ceil(threads * 2)).max(PAR_MIN_ELEMS / n + 1);
    x.par_chunks_mut(per * n).for_each(|c| f(c));
}

#[inline(always)]
fn residual_ln_imp(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f64) {
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
dispatch!(fn residual_ln_dispatch(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f64) => residual_ln_imp);

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

#[inline(always)]
fn softmax_imp(row: &mut [f32]) {
    // max and sum with 16 independent lanes so that LLVM vectorises them
    let mut m = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            m[k] = m[k].max(c[k]);
        }
    }
    let mut max = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in tail {
        max = max.max(v);
    }
    if !max.is_finite() {
        return;
    }
    for v in row.iter_mut() {
        *v = exp_approx(*v - max);
    }
    let mut s = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            s[k] += c[k];
        }
    }
    let mut sum: f32 = s.iter().sum();
    for &v in tail {
        sum += v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Softmax of one row in place with the vectorised exponential (compiled for the current ISA by
/// the caller; see [`attention_head`]).
#[inline(always)]
pub fn softmax_row_fast(row: &mut [f32]) {
    softmax_imp(row)
}

/// One head of attention for one example, without GEMM-call overhead (small `dh`, ragged `n`).
///
/// - `q`: `no` query rows, row stride `ldq`, this head's `dh` columns first;
/// - `kv`: key/value rows, row stride `ldkv`; K at column 0, V at column `v_off` (relative);
///   `key_rows`: which rows of `kv` are the keys (`None`: the first `ni`);
/// - `key_weights`: optional soft-mask renormalisation `P_ij <- P_ij m_j / (Σ P_ik m_k + 1e-9)`;
/// - `probs`: `[no, ni]` out (the attention probabilities);
/// - `ctx`: `no` output rows, row stride `ldc`, this head's `dh` columns first;
/// - `kt`: scratch of at least `dh * ceil(ni / 16) * 16`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attention_head_imp(
    q: &[f32],
    ldq: usize,
    kv: &[f32],
    ldkv: usize,
    v_off: usize,
    key_rows: Option<&[usize]>,
    key_weights: Option<&[f32]>,
    no: usize,
    ni: usize,
    dh: usize,
    probs: &mut [f32],
    ctx: *mut f32,
    ldc: usize,
    kt: &mut [f32],
) {
    let key = |j: usize| key_rows.map_or(j, |kr| kr[j]);
    // Kᵀ [dh, ni_pad] (keys padded to a multiple of 16 with zeros): 4 queries x 16 keys per block.
    let ni_pad = ni.div_ceil(16) * 16;
    let kt = &mut kt[..dh * ni_pad];
    for j in 0..ni {
        let r = &kv[key(j) * ldkv..key(j) * ldkv + dh];
        for (dd, &v) in r.iter().enumerate() {
            kt[dd * ni_pad + j] = v;
        }
    }
    for dd in 0..dh {
        kt[dd * ni_pad + ni..(dd + 1) * ni_pad].fill(0.0);
    }
    let mut i0 = 0;
    while i0 < no {
        let nq = (no - i0).min(4);
        let mut jb = 0;
        while jb < ni {
            let mut acc = [[0.0f32; 16]; 4];
            for dd in 0..dh {
                let kr: &[f32; 16] = kt[dd * ni_pad + jb..dd * ni_pad + jb + 16].try_into().unwrap();
                for qq in 0..4 {
                    let qv = if qq < nq { q[(i0 + qq) * ldq + dd] } else { 0.0 };
                    for l in 0..16 {
                        acc[qq][l] = qv.mul_add(kr[l], acc[qq][l]);
                    }
                }
            }
            let w = (ni - jb).min(16);
            for qq in 0..nq {
                probs[(i0 + qq) * ni + jb..(i0 + qq) * ni + jb + w].copy_from_slice(&acc[qq][..w]);
            }
            jb += 16;
        }
        i0 += 4;
    }
    for i in 0..no {
        let row = &mut probs[i * ni..(i + 1) * ni];
        softmax_imp(row);
        if let Some(m) = key_weights {
            let mut sum = 0.0f32;
            for (p, w) in row.iter_mut().zip(m) {
                *p *= *w;
                sum += *p;
            }
            let inv = 1.0 / (sum + 1e-9);
            for p in row.iter_mut() {
                *p *= inv;
            }
        }
        // ctx_i = Σ_j p_j V_j
        let row = &probs[i * ni..(i + 1) * ni];
        // SAFETY: the caller guarantees `ctx` row i has `dh` writable elements.
        let out = unsafe { std::slice::from_raw_parts_mut(ctx.add(i * ldc), dh) };
        match dh {
            32 => pv_fixed::<32>(row, kv, ldkv, v_off, key_rows, out),
            8 => pv_fixed::<8>(row, kv, ldkv, v_off, key_rows, out),
            16 => pv_fixed::<16>(row, kv, ldkv, v_off, key_rows, out),
            64 => pv_fixed::<64>(row, kv, ldkv, v_off, key_rows, out),
            _ => {
                out.fill(0.0);
                for (j, &p) in row.iter().enumerate() {
                    let v = &kv[key(j) * ldkv + v_off..key(j) * ldkv + v_off + dh];
                    for (a, &x) in out.iter_mut().zip(v) {
                        *a += p * x;
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread scratch of [`qlanes::attention`]: a 16-query block of scores per key.
    static QLANE_SCRATCH: std::cell::RefCell<Vec<[f32; 16]>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Attention with AVX-512 for head sizes 8, 16, 32, 64, 16 queries in the 16 lanes.
///
/// Why: at `dh = 8` (the f = 4 ApproxNet) the row-layout kernel spent most of its time in P·V
/// (one half vector, one scalar broadcast and bounds checks per query-key pair; perf at n = 128),
/// and at `dh = 32` (MiniLM) it ran at ~15 GFLOP/s (141 µs per head at n = 128, 18% of dense
/// samples). Here Qᵀ of a 16-query block is held in vectors, each key row is broadcast once per
/// block, softmax max/sum are lane-wise (no horizontal reductions), P·V accumulates 8 output
/// columns per pass as lane vectors, and the probabilities go out through 16x16 register
/// transposes (`examples/attn_probe.rs`: dh 8 25.6 -> ~18-26 µs incl. noise, dh 32 141 -> 45-64 µs).
///
/// Bitwise the same results as the row-layout path (`attention_head_imp` with `softmax_imp` and
/// `pv_fixed`): the same FMA order over `dd` for scores; the softmax sum keeps the 16 partial sums
/// (key `j` in partial `j % 16` over whole chunks of 16, then the partials in order, then the
/// tail keys); the same `exp_approx` operation sequence; P·V keeps the even/odd key accumulators.
/// Rows whose maximum is not finite are left as raw scores, as `softmax_imp` leaves them.
#[cfg(target_arch = "x86_64")]
mod qlanes {
    use std::arch::x86_64::*;

    /// `erfc(|x| / √2) / 2` per lane of `[__m512; N]` (`super::erfc_pos`'s polynomial, the
    /// reciprocal estimate + Newton step for the division), expanded in place: a function would
    /// not be inlined into the `target_feature` callers (measured: 20% of the concrete planner in
    /// the call).
    macro_rules! half_erfc_abs_n {
        ($x:expr, $n:ident) => {{
            let x: [__m512; $n] = $x;
            let z: [__m512; $n] =
                std::array::from_fn(|j| _mm512_mul_ps(_mm512_abs_ps(x[j]), _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2)));
            let y: [__m512; $n] = std::array::from_fn(|j| _mm512_add_ps(_mm512_set1_ps(1.0), _mm512_mul_ps(_mm512_set1_ps(0.5), z[j])));
            let r0: [__m512; $n] = std::array::from_fn(|j| _mm512_rcp14_ps(y[j]));
            let t: [__m512; $n] = std::array::from_fn(|j| _mm512_mul_ps(r0[j], _mm512_fnmadd_ps(y[j], r0[j], _mm512_set1_ps(2.0))));
            let mut p = [_mm512_set1_ps(0.170_872_77); $n];
            for c in [
                -0.822_152_23f32,
                1.488_515_9,
                -1.135_203_98,
                0.278_868_07,
                -0.186_288_06,
                0.096_784_18,
                0.374_091_96,
                1.000_023_7,
                -1.265_512_2,
            ] {
                for j in 0..$n {
                    p[j] = _mm512_fmadd_ps(p[j], t[j], _mm512_set1_ps(c));
                }
            }
            let e = expn::<$n>(std::array::from_fn(|j| _mm512_fmadd_ps(_mm512_sub_ps(_mm512_setzero_ps(), z[j]), z[j], p[j])));
            std::array::from_fn(|j| _mm512_mul_ps(_mm512_set1_ps(0.5), _mm512_mul_ps(t[j], e[j])))
        }};
    }

    /// [`super::gelu_approx`] on `N` vectors of 16 lanes, operation for operation except
    /// `1 / (1 + z/2)`: a 14-bit reciprocal estimate and one Newton step (within ~1 ulp of the
    /// division) instead of `vdivps`, which holds its port for ~16 cycles per vector. Each step
    /// is applied to all `N` vectors before the next (see [`expn`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn gelun<const N: usize>(x: [__m512; N]) -> [__m512; N] {
        let half: [__m512; N] = half_erfc_abs_n!(x, N);
        std::array::from_fn(|j| {
            let xh = _mm512_mul_ps(x[j], half[j]);
            let nonneg = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x[j], _mm512_setzero_ps());
            _mm512_mask_blend_ps(nonneg, xh, _mm512_sub_ps(x[j], xh))
        })
    }

    /// [`super::normal_cdf_approx`] on `N` vectors, as [`gelun`] does it (reciprocal estimate
    /// instead of the division).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn cdfn<const N: usize>(x: [__m512; N]) -> [__m512; N] {
        let half: [__m512; N] = half_erfc_abs_n!(x, N);
        std::array::from_fn(|j| {
            let nonneg = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x[j], _mm512_setzero_ps());
            _mm512_mask_blend_ps(nonneg, half[j], _mm512_sub_ps(_mm512_set1_ps(1.0), half[j]))
        })
    }

    /// `u[j] += Φ(f32((x[j] − mean) · inv))` (the last pass of `standardized_cdf_row`), 16 values
    /// per step, `z` in f64 as there, `Φ` by [`cdfn`].
    ///
    /// # Safety
    /// AVX-512F/DQ must be available; `u.len() == x.len()`.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn cdf_add(x: &[f32], mean: f64, inv: f64, u: &mut [f64]) {
        let n = x.len();
        debug_assert_eq!(u.len(), n);
        let (xp, up) = (x.as_ptr(), u.as_mut_ptr());
        let (m, iv) = (_mm512_set1_pd(mean), _mm512_set1_pd(inv));
        let mut i = 0;
        while i < n {
            let w = (n - i).min(16);
            let mask: __mmask16 = if w == 16 { 0xFFFF } else { ((1u32 << w) - 1) as __mmask16 };
            let v = unsafe { _mm512_maskz_loadu_ps(mask, xp.add(i)) };
            let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))));
            let zl = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_sub_pd(lo, m), iv));
            let zh = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_sub_pd(hi, m), iv));
            let z = _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castps_pd(_mm512_castps256_ps512(zl)), _mm256_castps_pd(zh)));
            let c = cdfn::<1>([z])[0];
            let cl = _mm512_cvtps_pd(_mm512_castps512_ps256(c));
            let ch = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(c))));
            let (ml, mh) = ((mask & 0xFF) as __mmask8, (mask >> 8) as __mmask8);
            unsafe {
                let ol = _mm512_maskz_loadu_pd(ml, up.add(i));
                _mm512_mask_storeu_pd(up.add(i), ml, _mm512_add_pd(ol, cl));
                if mh != 0 {
                    let oh = _mm512_maskz_loadu_pd(mh, up.add(i + 8));
                    _mm512_mask_storeu_pd(up.add(i + 8), mh, _mm512_add_pd(oh, ch));
                }
            }
            i += 16;
        }
    }

    /// [`gelun`] on the `16 N` floats at `p`, in place.
    ///
    /// # Safety
    /// AVX-512F/DQ must be available; `p` valid for `16 N` reads and writes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    unsafe fn gelu_vectors<const N: usize>(p: *mut f32) {
        let g = gelun::<N>(std::array::from_fn(|j| unsafe { _mm512_loadu_ps(p.add(16 * j)) }));
        for (j, gj) in g.iter().enumerate() {
            unsafe { _mm512_storeu_ps(p.add(16 * j), *gj) };
        }
    }

    /// [`gelun`] over a slice (masked tail).
    ///
    /// # Safety
    /// AVX-512F/DQ must be available.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn gelu_slice(x: &mut [f32]) {
        let n = x.len();
        let p = x.as_mut_ptr();
        let mut i = 0;
        // four vectors per step: one GELU is a ~45-op dependency chain; one vector per step ran
        // at 1.09 ns per value, four interleaved at 0.78 ns (with the division: 0.96 / 1.1 ns)
        while i + 64 <= n {
            unsafe { gelu_vectors::<4>(p.add(i)) };
            i += 64;
        }
        if i + 48 <= n {
            // (the packed GEMM's 48-wide tile rows)
            unsafe { gelu_vectors::<3>(p.add(i)) };
            i += 48;
        }
        while i + 16 <= n {
            unsafe { gelu_vectors::<1>(p.add(i)) };
            i += 16;
        }
        if i < n {
            let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
            unsafe { _mm512_mask_storeu_ps(p.add(i), m, gelun::<1>([_mm512_maskz_loadu_ps(m, p.add(i))])[0]) };
        }
    }

    /// [`super::exp_approx`] on `N` vectors of 16 lanes, operation for operation. Each step is
    /// applied to all `N` vectors before the next: one exponential is a ~20-op dependency chain,
    /// and the out-of-order window holds only a few such chains when they are written one after
    /// the other (the compiler keeps the source order).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    fn expn<const N: usize>(x: [__m512; N]) -> [__m512; N] {
        let x: [__m512; N] = std::array::from_fn(|j| _mm512_min_ps(_mm512_set1_ps(88.7), _mm512_max_ps(_mm512_set1_ps(-87.3), x[j])));
        let k: [__m512; N] = std::array::from_fn(|j| {
            let k = _mm512_add_ps(_mm512_mul_ps(x[j], _mm512_set1_ps(std::f32::consts::LOG2_E)), _mm512_set1_ps(0.5));
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(k)
        });
        let r: [__m512; N] = std::array::from_fn(|j| {
            _mm512_fmadd_ps(k[j], _mm512_set1_ps(2.121_944_4e-4), _mm512_fmadd_ps(k[j], _mm512_set1_ps(-0.693_359_4), x[j]))
        });
        let mut y = [_mm512_set1_ps(1.987_569_1e-4); N];
        for c in [1.398_199_9e-3f32, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
            for j in 0..N {
                y[j] = _mm512_fmadd_ps(y[j], r[j], _mm512_set1_ps(c));
            }
        }
        std::array::from_fn(|j| {
            let y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(y[j], r[j]), r[j], r[j]), _mm512_set1_ps(1.0));
            let ki =
                _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(k[j], _mm512_set1_ps(12_582_912.0))), _mm512_set1_epi32(0x4B40_0000));
            let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(ki, _mm512_set1_epi32(127))));
            _mm512_mul_ps(y, scale)
        })
    }

    /// `acc[16 j + l] = f64(pt[j][l])` (`first`) or `+= f64(pt[j][l])`: one head's lane-major
    /// probabilities added to the head reduction, in `reduce_heads_row`'s arithmetic.
    ///
    /// # Safety
    /// AVX-512F/DQ must be available; `acc.len() >= 16 * pt.len()`.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn accumulate_lanes(pt: &[[f32; 16]], acc: &mut [f64], first: bool) {
        debug_assert!(acc.len() >= 16 * pt.len());
        let a = acc.as_mut_ptr();
        for (j, p) in pt.iter().enumerate() {
            let v = unsafe { _mm512_loadu_ps(p.as_ptr()) };
            let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))));
            unsafe {
                let (al, ah) = (a.add(16 * j), a.add(16 * j + 8));
                if first {
                    _mm512_storeu_pd(al, lo);
                    _mm512_storeu_pd(ah, hi);
                } else {
                    _mm512_storeu_pd(al, _mm512_add_pd(_mm512_loadu_pd(al), lo));
                    _mm512_storeu_pd(ah, _mm512_add_pd(_mm512_loadu_pd(ah), hi));
                }
            }
        }
    }

    /// Transpose 16 rows of 16 lanes in place (`r[a]` lane `b` -> `r[b]` lane `a`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) fn transpose16(r: &mut [__m512; 16]) {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let lo = |a: __m512, b: __m512| _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
        let hi = |a: __m512, b: __m512| _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
        for i in 0..4 {
            r[4 * i] = lo(t[4 * i], t[4 * i + 2]);
            r[4 * i + 1] = hi(t[4 * i], t[4 * i + 2]);
            r[4 * i + 2] = lo(t[4 * i + 1], t[4 * i + 3]);
            r[4 * i + 3] = hi(t[4 * i + 1], t[4 * i + 3]);
        }
        for i in 0..4 {
            t[i] = _mm512_shuffle_f32x4::<0x88>(r[i], r[i + 4]);
            t[i + 4] = _mm512_shuffle_f32x4::<0xdd>(r[i], r[i + 4]);
            t[i + 8] = _mm512_shuffle_f32x4::<0x88>(r[i + 8], r[i + 12]);
            t[i + 12] = _mm512_shuffle_f32x4::<0xdd>(r[i + 8], r[i + 12]);
        }
        for i in 0..8 {
            r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[i + 8]);
            r[i + 8] = _mm512_shuffle_f32x4::<0xdd>(t[i], t[i + 8]);
        }
    }

    /// See the module comment; the arguments are those of `super::attention_head` (no key
    /// weights), `pt`: scratch of `ni` blocks.
    ///
    /// # Safety
    /// AVX-512F/DQ must be available; `ctx` as in `attention_head`; the bounds `attention_head`
    /// asserts must hold.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub(super) unsafe fn attention<const DH: usize>(
        q: &[f32],
        ldq: usize,
        kv: &[f32],
        ldkv: usize,
        v_off: usize,
        key_rows: Option<&[usize]>,
        no: usize,
        ni: usize,
        probs: &mut [f32],
        ctx: *mut f32,
        ldc: usize,
        pt: &mut [[f32; 16]],
    ) {
        debug_assert!(pt.len() == ni && (probs.is_empty() || probs.len() >= no * ni));
        let key = |j: usize| key_rows.map_or(j, |kr| kr[j]);
        let kvp = kv.as_ptr();
        let ptp = pt.as_mut_ptr() as *mut f32;
        let full = ni / 16 * 16;
        let mut i0 = 0;
        while i0 < no {
            let nq = (no - i0).min(16);
            let qmask: __mmask16 = if nq == 16 { 0xFFFF } else { (1u16 << nq) - 1 };
            // Qᵀ of the block: qt[dd] lane l = q[i0 + l][dd]
            let mut qs = [[0.0f32; 16]; DH];
            for l in 0..nq {
                let r = &q[(i0 + l) * ldq..(i0 + l) * ldq + DH];
                for dd in 0..DH {
                    qs[dd][l] = r[dd];
                }
            }
            let qt: [__m512; DH] = std::array::from_fn(|dd| unsafe { _mm512_loadu_ps(qs[dd].as_ptr()) });
            // scores and the lane-wise maximum
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            for j in 0..ni {
                let kp = unsafe { kvp.add(key(j) * ldkv) };
                let mut s = _mm512_setzero_ps();
                for dd in 0..DH {
                    s = _mm512_fmadd_ps(qt[dd], _mm512_set1_ps(unsafe { *kp.add(dd) }), s);
                }
                mx = _mm512_max_ps(s, mx); // NaN scores are skipped, as f32::max does
                unsafe { _mm512_storeu_ps(ptp.add(j * 16), s) };
            }
            let finite: __mmask16 = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(mx), _mm512_set1_ps(f32::INFINITY));
            // exponentials and their sum in softmax_imp's order
            let mut part = [_mm512_setzero_ps(); 16];
            for jb in (0..full).step_by(16) {
                // four keys' exponentials interleaved (see `expn`)
                for k0 in (0..16).step_by(4) {
                    let p = unsafe { ptp.add((jb + k0) * 16) };
                    let raw: [__m512; 4] = std::array::from_fn(|j| unsafe { _mm512_loadu_ps(p.add(16 * j)) });
                    let e = expn::<4>(std::array::from_fn(|j| _mm512_sub_ps(raw[j], mx)));
                    for j in 0..4 {
                        let e = _mm512_mask_blend_ps(finite, raw[j], e[j]);
                        unsafe { _mm512_storeu_ps(p.add(16 * j), e) };
                        part[k0 + j] = _mm512_add_ps(part[k0 + j], e);
                    }
                }
            }
            let mut sum = _mm512_setzero_ps();
            for pk in part {
                sum = _mm512_add_ps(sum, pk);
            }
            for j in full..ni {
                let p = unsafe { ptp.add(j * 16) };
                let raw = unsafe { _mm512_loadu_ps(p) };
                let e = _mm512_mask_blend_ps(finite, raw, expn::<1>([_mm512_sub_ps(raw, mx)])[0]);
                unsafe { _mm512_storeu_ps(p, e) };
                sum = _mm512_add_ps(sum, e);
            }
            let inv = _mm512_mask_blend_ps(finite, _mm512_set1_ps(1.0), _mm512_div_ps(_mm512_set1_ps(1.0), sum));
            for j in 0..ni {
                let p = unsafe { ptp.add(j * 16) };
                unsafe { _mm512_storeu_ps(p, _mm512_mul_ps(_mm512_loadu_ps(p), inv)) };
            }
            // P·V, 8 output columns per pass, with even/odd key accumulators (pv_fixed's order)
            for d0 in (0..DH).step_by(8) {
                let mut acc = [_mm512_setzero_ps(); 8];
                let mut acc2 = [_mm512_setzero_ps(); 8];
                for jj in 0..ni / 2 {
                    let (j0, j1) = (2 * jj, 2 * jj + 1);
                    let (v0, v1) = unsafe { (kvp.add(key(j0) * ldkv + v_off + d0), kvp.add(key(j1) * ldkv + v_off + d0)) };
                    let p0 = unsafe { _mm512_loadu_ps(ptp.add(j0 * 16)) };
                    let p1 = unsafe { _mm512_loadu_ps(ptp.add(j1 * 16)) };
                    for dd in 0..8 {
                        acc[dd] = _mm512_fmadd_ps(p0, _mm512_set1_ps(unsafe { *v0.add(dd) }), acc[dd]);
                        acc2[dd] = _mm512_fmadd_ps(p1, _mm512_set1_ps(unsafe { *v1.add(dd) }), acc2[dd]);
                    }
                }
                if ni % 2 == 1 {
                    let j = ni - 1;
                    let v = unsafe { kvp.add(key(j) * ldkv + v_off + d0) };
                    let p = unsafe { _mm512_loadu_ps(ptp.add(j * 16)) };
                    for dd in 0..8 {
                        acc[dd] = _mm512_fmadd_ps(p, _mm512_set1_ps(unsafe { *v.add(dd) }), acc[dd]);
                    }
                }
                let mut cs = [[0.0f32; 16]; 8];
                for dd in 0..8 {
                    unsafe { _mm512_storeu_ps(cs[dd].as_mut_ptr(), _mm512_add_ps(acc[dd], acc2[dd])) };
                }
                for l in 0..nq {
                    // SAFETY: the caller guarantees `ctx` row i0 + l has `DH` writable elements.
                    let out = unsafe { std::slice::from_raw_parts_mut(ctx.add((i0 + l) * ldc + d0), 8) };
                    for dd in 0..8 {
                        out[dd] = cs[dd][l];
                    }
                }
            }
            // probabilities, row-major [no, ni]: 16x16 transposes (when wanted)
            let pr = if probs.is_empty() { std::ptr::null_mut() } else { unsafe { probs.as_mut_ptr().add(i0 * ni) } };
            let mut jb = if probs.is_empty() { ni } else { 0 };
            while jb < ni {
                let w = (ni - jb).min(16);
                let mut r = [_mm512_setzero_ps(); 16];
                for (k, rk) in r.iter_mut().enumerate().take(w) {
                    *rk = unsafe { _mm512_loadu_ps(ptp.add((jb + k) * 16)) };
                }
                transpose16(&mut r);
                let kmask: __mmask16 = if w == 16 { 0xFFFF } else { (1u16 << w) - 1 };
                for (l, rl) in r.iter().enumerate().take(nq) {
                    unsafe { _mm512_mask_storeu_ps(pr.add(l * ni + jb), kmask, *rl) };
                }
                jb += 16;
            }
            let _ = qmask;
            i0 += 16;
        }
    }
}

#[cfg(test)]
mod approx_tests {
    #[test]
    fn gelu_fast_matches_gelu_approx() {
        let mut x: Vec<f32> = (-40_000..40_000).map(|i| i as f32 * 2.5e-4).collect();
        x.extend([-1e30, -87.0, -20.0, -9.0, -1e-30, 0.0, -0.0, 1e-30, 9.0, 20.0, 1e30, f32::MAX, f32::MIN]);
        x.push(3.0); // odd length: the masked tail
        let mut got = x.clone();
        super::gelu_fast(&mut got);
        let mut worst = (0.0f64, 0.0f32);
        for (&v, &g) in x.iter().zip(&got) {
            let want = super::gelu_approx(v);
            // relative error; absolute (scaled by 1e-5) where GELU is below 1e-5 (x < -4.3)
            let err = (f64::from(g) - f64::from(want)).abs() / f64::from(want.abs()).max(1e-5);
            if err > worst.0 {
                worst = (err, v);
            }
            assert!(g.is_finite() == want.is_finite(), "gelu({v}) = {g}, want {want}");
        }
        // (a 1-ulp change of t = 1/(1 + z/2) moves erfc by up to ~1e-6 relative near z = 3)
        assert!(worst.0 < 2e-6, "gelu_fast relative error {:e} at x = {}", worst.0, worst.1);
        // GELU(x) = x Φ(x): spot values
        for (v, want) in [(1.0f32, 0.841_344_75f32), (-1.0, -0.158_655_25), (0.5, 0.345_731_1)] {
            let mut g = [v];
            super::gelu_fast(&mut g);
            assert!((g[0] - want).abs() < 1e-6, "gelu({v}) = {}, want {want}", g[0]);
        }
        let mut nan = [f32::NAN];
        super::gelu_fast(&mut nan);
        assert!(nan[0].is_nan());
    }

    #[test]
    fn ln_approx_close_to_ln() {
        let mut worst = 0.0f64;
        let mut x = 1e-37f32;
        while x < 1e30 {
            for k in 0..64 {
                let v = x * (1.0 + k as f32 / 64.0);
                let want = f64::from(v).ln();
                let got = f64::from(super::ln_approx(v));
                worst = worst.max((got - want).abs() / want.abs().max(1.0));
            }
            x *= 1.7;
        }
        assert!(worst < 2e-7, "ln_approx error {worst:e}");
        let mut out = [0.0f32; 3];
        super::ln_clamped(&[0.0, 1.0, 0.5], &mut out);
        assert_eq!(out[1], 0.0);
        assert!((out[0] - 1e-37f32.ln()).abs() < 1e-5 && (out[2] - 0.5f32.ln()).abs() < 1e-7);
    }

    #[test]
    fn normal_cdf_approx_close() {
        let mut worst = 0.0f64;
        for i in -4000..=4000 {
            let z = i as f32 / 400.0;
            let want = crate::planners::concrete::normal_cdf(f64::from(z));
            worst = worst.max((f64::from(super::normal_cdf_approx(z)) - want).abs());
        }
        assert!(worst < 2e-7, "normal_cdf_approx error {worst:e}");
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod qlane_tests {
    use std::io::Write as _;

    #[test]
    fn transpose16_transposes() {
        if !(std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq")) {
            let _ = writeln!(
                std::io::stderr(),
                "NOTE: transpose16_transposes did NOT run: this CPU has no AVX-512F/DQ (the 16x16 transpose is AVX-512 only)"
            );
            return;
        }
        use std::arch::x86_64::*;
        let m: Vec<f32> = (0..256).map(|v| v as f32).collect();
        let mut out = [0.0f32; 256];
        // SAFETY: AVX-512 checked above.
        unsafe {
            let mut r: [__m512; 16] = std::array::from_fn(|a| _mm512_loadu_ps(m[a * 16..].as_ptr()));
            super::qlanes::transpose16(&mut r);
            for (b, rb) in r.iter().enumerate() {
                _mm512_storeu_ps(out[b * 16..].as_mut_ptr(), *rb);
            }
        }
        for a in 0..16 {
            for b in 0..16 {
                assert_eq!(out[b * 16 + a], m[a * 16 + b], "a {a} b {b}");
            }
        }
    }

    /// Without a probabilities buffer (not wanted) the context rows are the same bits, for every
    /// head size and for key weights (the row kernel's path).
    #[test]
    fn attention_without_probabilities_gives_the_same_context() {
        let mut rng = fastrand::Rng::with_seed(11);
        for &(dh, no, ni, weighted) in &[(8usize, 19usize, 37usize, false), (32, 16, 130, false), (12, 7, 9, false), (8, 5, 21, true)] {
            let q: Vec<f32> = (0..no * dh).map(|_| rng.f32() * 4.0 - 2.0).collect();
            let kv: Vec<f32> = (0..ni * 2 * dh).map(|_| rng.f32() * 4.0 - 2.0).collect();
            let w: Vec<f32> = (0..ni).map(|j| if j % 3 == 0 { 0.0 } else { 1.0 }).collect();
            let kw = weighted.then_some(&w[..]);
            let run = |keep: bool| {
                let mut probs = if keep { vec![0.0f32; no * ni] } else { Vec::new() };
                let mut ctx = vec![0.0f32; no * dh];
                let mut kt = Vec::new();
                // SAFETY: ctx has `no` rows of `dh` columns.
                unsafe { super::attention_head(&q, dh, &kv, 2 * dh, dh, None, kw, no, ni, dh, &mut probs, ctx.as_mut_ptr(), dh, &mut kt) };
                ctx
            };
            let (a, b) = (run(true), run(false));
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "dh {dh} no {no} ni {ni}: context differs without probabilities"
            );
            assert!(a.iter().all(|v| v.is_finite()) && a.iter().any(|v| *v != 0.0));
        }
    }

    #[test]
    fn qlanes_bitwise_equal_row_kernel() {
        if super::isa() != super::Isa::V4 {
            let _ = writeln!(
                std::io::stderr(),
                "NOTE: qlanes_bitwise_equal_row_kernel did NOT run: this CPU has no AVX-512F/DQ (the query-lane kernel is AVX-512 only)"
            );
            return;
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for &(dh, no, ni, gathered) in &[
            (8, 1, 1, false),
            (8, 5, 7, false),
            (8, 17, 33, true),
            (16, 40, 16, false),
            (16, 3, 130, true),
            (8, 128, 128, false),
            (8, 16, 31, true),
            (32, 1, 9, false),
            (32, 37, 53, true),
            (32, 128, 128, false),
            (64, 20, 35, true),
            (64, 5, 128, false),
        ] {
            let ldq = dh * 3 + 1;
            let ldkv = dh * 5 + 3;
            let v_off = dh * 2;
            let rows_kv = ni + 4;
            let mut q: Vec<f32> = (0..no * ldq).map(|_| rng.f32() * 4.0 - 2.0).collect();
            if no > 2 {
                // a row whose scores overflow: softmax leaves it as raw scores
                q[2 * ldq..2 * ldq + dh].fill(3e38);
            }
            let kv: Vec<f32> = (0..rows_kv * ldkv).map(|_| rng.f32() * 4.0 - 2.0).collect();
            let key_rows: Vec<usize> = if gathered { (0..ni).map(|j| (j * 7 + 3) % rows_kv).collect() } else { Vec::new() };
            let kr = gathered.then_some(&key_rows[..]);
            let ldc = dh + 2;
            let run = |fast: bool| {
                let mut probs = vec![0.0f32; no * ni];
                let mut ctx = vec![0.0f32; no * ldc];
                let mut kt = vec![0.0f32; dh * ni.div_ceil(16) * 16];
                if fast {
                    let mut pt = vec![[0.0f32; 16]; ni];
                    // SAFETY: V4 checked; sizes as attention_head asserts.
                    unsafe {
                        match dh {
                            8 => super::qlanes::attention::<8>(
                                &q,
                                ldq,
                                &kv,
                                ldkv,
                                v_off,
                                kr,
                                no,
                                ni,
                                &mut probs,
                                ctx.as_mut_ptr(),
                                ldc,
                                &mut pt,
                            ),
                            16 => super::qlanes::attention::<16>(
                                &q,
                                ldq,
                                &kv,
                                ldkv,
                                v_off,
                                kr,
                                no,
                                ni,
                                &mut probs,
                                ctx.as_mut_ptr(),
                                ldc,
                                &mut pt,
                            ),
                            32 => super::qlanes::attention::<32>(
                                &q,
                                ldq,
                                &kv,
                                ldkv,
                                v_off,
                                kr,
                                no,
                                ni,
                                &mut probs,
                                ctx.as_mut_ptr(),
                                ldc,
                                &mut pt,
                            ),
                            _ => super::qlanes::attention::<64>(
                                &q,
                                ldq,
                                &kv,
                                ldkv,
                                v_off,
                                kr,
                                no,
                                ni,
                                &mut probs,
                                ctx.as_mut_ptr(),
                                ldc,
                                &mut pt,
                            ),
                        }
                    }
                } else {
                    super::attention_head_dispatch(
                        &q,
                        ldq,
                        &kv,
                        ldkv,
                        v_off,
                        kr,
                        None,
                        no,
                        ni,
                        dh,
                        &mut probs,
                        ctx.as_mut_ptr(),
                        ldc,
                        &mut kt,
                    );
                }
                (probs, ctx)
            };
            let (p0, c0) = run(false);
            let (p1, c1) = run(true);
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            assert!(p0.iter().zip(&p1).all(|(a, b)| same(*a, *b)), "probs dh {dh} no {no} ni {ni}");
            for i in 0..no {
                for dd in 0..dh {
                    assert!(same(c0[i * ldc + dd], c1[i * ldc + dd]), "ctx dh {dh} no {no} ni {ni} i {i} dd {dd}");
                }
            }
        }
    }
}

#[inline(always)]
fn pv_fixed<const DH: usize>(row: &[f32], kv: &[f32], ldkv: usize, v_off: usize, key_rows: Option<&[usize]>, out: &mut [f32]) {
    let mut acc = [0.0f32; DH];
    let mut acc2 = [0.0f32; DH];
    let pairs = row.len() / 2;
    for jj in 0..pairs {
        let (j0, j1) = (2 * jj, 2 * jj + 1);
        let (r0, r1) = (key_rows.map_or(j0, |kr| kr[j0]), key_rows.map_or(j1, |kr| kr[j1]));
        let (p0, p1) = (row[j0], row[j1]);
        let v0: &[f32; DH] = kv[r0 * ldkv + v_off..r0 * ldkv + v_off + DH].try_into().unwrap();
        let v1: &[f32; DH] = kv[r1 * ldkv + v_off..r1 * ldkv + v_off + DH].try_into().unwrap();
        for l in 0..DH {
            acc[l] = p0.mul_add(v0[l], acc[l]);
            acc2[l] = p1.mul_add(v1[l], acc2[l]);
        }
    }
    if row.len() % 2 == 1 {
        let j = row.len() - 1;
        let r = key_rows.map_or(j, |kr| kr[j]);
        let v: &[f32; DH] = kv[r * ldkv + v_off..r * ldkv + v_off + DH].try_into().unwrap();
        for l in 0..DH {
            acc[l] = row[j].mul_add(v[l], acc[l]);
        }
    }
    for l in 0..DH {
        acc[l] += acc2[l];
    }
    out.copy_from_slice(&acc);
}
dispatch!(
    #[allow(clippy::too_many_arguments)]
    fn attention_head_dispatch(q: &[f32], ldq: usize, kv: &[f32], ldkv: usize, v_off: usize, key_rows: Option<&[usize]>, key_weights: Option<&[f32]>, no: usize, ni: usize, dh: usize, probs: &mut [f32], ctx: *mut f32, ldc: usize, kt: &mut [f32]) => attention_head_imp
);

/// Safe wrapper of one head's attention (see `attention_head_imp` for the layout).
///
/// # Safety
/// `ctx` must point to `no` rows of stride `ldc` with `dh` writable elements each, not written
/// concurrently by anyone else (different heads write disjoint column ranges).
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_head(
    q: &[f32],
    ldq: usize,
    kv: &[f32],
    ldkv: usize,
    v_off: usize,
    key_rows: Option<&[usize]>,
    key_weights: Option<&[f32]>,
    no: usize,
    ni: usize,
    dh: usize,
    probs: &mut [f32],
    ctx: *mut f32,
    ldc: usize,
    kt: &mut Vec<f32>,
) {
    assert_head_bounds(q, ldq, kv, ldkv, v_off, key_rows, no, ni, dh);
    // an empty `probs`: the probabilities are not wanted (the AVX-512 kernel then skips writing
    // them: 16x16 transposes per block, and the caller's zeroed [no, ni] buffer)
    assert!(probs.is_empty() || probs.len() >= no * ni);
    if let Some(m) = key_weights {
        assert!(m.len() >= ni);
    }
    #[cfg(target_arch = "x86_64")]
    if key_weights.is_none() && ni > 0 && matches!(dh, 8 | 16 | 32 | 64) && isa() == Isa::V4 {
        // SAFETY: AVX-512 checked by `isa`; bounds asserted above (q rows, key rows, probs).
        unsafe { run_qlanes(q, ldq, kv, ldkv, v_off, key_rows, no, ni, dh, probs, ctx, ldc, |_| ()) };
        return;
    }
    let need = dh * ni.div_ceil(16) * 16;
    if kt.len() < need {
        kt.resize(need, 0.0);
    }
    if probs.is_empty() {
        let mut scratch = vec![0.0f32; no * ni];
        attention_head_dispatch(q, ldq, kv, ldkv, v_off, key_rows, key_weights, no, ni, dh, &mut scratch, ctx, ldc, kt)
    } else {
        attention_head_dispatch(q, ldq, kv, ldkv, v_off, key_rows, key_weights, no, ni, dh, probs, ctx, ldc, kt)
    }
}

#[inline(always)]
fn attention_scores_imp(q: &[f32], ldq: usize, kt: &[f32], no: usize, ni: usize, dh: usize, out: &mut [f32]) {
    for (r, o) in out.chunks_exact_mut(ni).take(no).enumerate() {
        let qr = &q[r * ldq..r * ldq + dh];
        o.fill(0.0);
        for (dd, &qv) in qr.iter().enumerate() {
            for (x, &kv) in o.iter_mut().zip(&kt[dd * ni..(dd + 1) * ni]) {
                *x += qv * kv;
            }
        }
    }
}
dispatch!(fn attention_scores_dispatch(q: &[f32], ldq: usize, kt: &[f32], no: usize, ni: usize, dh: usize, out: &mut [f32]) => attention_scores_imp);

/// One head's pre-softmax attention scores (ALGORITHM.md section 4 step 1's `S`):
/// `out[r · ni + j] = Σ_dd q[r · ldq + dd] · kv[key(j) · ldkv + dd]` for `r < no`, `j < ni`, with
/// `key(j) = key_rows[j]` (or `j`); the queries are pre-scaled by `1/√d_h` in this crate, so this is
/// `Q Kᵀ / √d_h`, before any key weighting or softmax. f32, summed over `dd` in order; `kt` is
/// scratch (`Kᵀ`, `[dh, ni]`).
///
/// Panics if `q` does not hold `no` rows of `dh` at stride `ldq`, a key row is past `kv`, or
/// `out.len() < no · ni`.
#[allow(clippy::too_many_arguments)]
pub fn attention_scores(
    q: &[f32],
    ldq: usize,
    kv: &[f32],
    ldkv: usize,
    key_rows: Option<&[usize]>,
    no: usize,
    ni: usize,
    dh: usize,
    kt: &mut Vec<f32>,
    out: &mut [f32],
) {
    assert_head_bounds(q, ldq, kv, ldkv, 0, key_rows, no, ni, dh);
    assert!(out.len() >= elems(no, ni), "attention_scores: out has {} values, expected at least no x ni = {no} x {ni}", out.len());
    if no == 0 || ni == 0 {
        return;
    }
    kt.clear();
    kt.resize(elems(dh, ni), 0.0);
    for j in 0..ni {
        let r = key_rows.map_or(j, |kr| kr[j]) * ldkv;
        for (dd, &v) in kv[r..r + dh].iter().enumerate() {
            kt[dd * ni + j] = v;
        }
    }
    attention_scores_dispatch(q, ldq, &kt[..], no, ni, dh, &mut out[..no * ni])
}

/// Whether [`attention_head_accumulate`] runs for head size `dh`, `no` query rows, `ni` keys.
pub fn attention_accumulate_supported(dh: usize, no: usize, ni: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        ni > 0 && no <= 16 && matches!(dh, 8 | 16 | 32 | 64) && isa() == Isa::V4
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dh, no, ni);
        false
    }
}

/// One head of attention for at most 16 query rows (as [`attention_head`], no key weights)
/// whose probabilities go straight into a lane-major head reduction instead of a row-major
/// `[no, ni]` buffer: `acc[16 j + r] = f64(P[r, j])` when `first`, else `+= f64(P[r, j])`
/// (`reduce_heads_row`'s arithmetic, so dividing by `H` afterwards gives its bits). Saves the
/// 16x16 transposes (~30% of a head at head size 8) and the reduction's second pass.
///
/// # Safety
/// As [`attention_head`]; [`attention_accumulate_supported`]`(dh, no, ni)` must hold and
/// `acc.len() >= 16 ni`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_head_accumulate(
    q: &[f32],
    ldq: usize,
    kv: &[f32],
    ldkv: usize,
    v_off: usize,
    key_rows: Option<&[usize]>,
    no: usize,
    ni: usize,
    dh: usize,
    ctx: *mut f32,
    ldc: usize,
    acc: &mut [f64],
    first: bool,
) {
    assert!(attention_accumulate_supported(dh, no, ni) && acc.len() >= 16 * ni);
    assert_head_bounds(q, ldq, kv, ldkv, v_off, key_rows, no, ni, dh);
    // SAFETY: AVX-512 checked by `attention_accumulate_supported`; bounds asserted above. One
    // block of <= 16 rows: the lane scratch holds its normalised probabilities afterwards.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        run_qlanes(q, ldq, kv, ldkv, v_off, key_rows, no, ni, dh, &mut [], ctx, ldc, |pt| qlanes::accumulate_lanes(pt, acc, first))
    };
}

/// The bounds every attention kernel relies on: `no` query rows of `dh` values at stride `ldq`,
/// `ni` key rows (gathered through `key_rows`) with K at 0 and V at `v_off`, stride `ldkv`.
#[allow(clippy::too_many_arguments)]
fn assert_head_bounds(
    q: &[f32],
    ldq: usize,
    kv: &[f32],
    ldkv: usize,
    v_off: usize,
    key_rows: Option<&[usize]>,
    no: usize,
    ni: usize,
    dh: usize,
) {
    assert!(q.len() >= strided_span(no, ldq, dh), "attention: q has {} values, too few for {no} rows of {dh} at stride {ldq}", q.len());
    let width = v_off.checked_add(dh).expect("attention: v_off + dh overflows usize");
    if let Some(kr) = key_rows {
        assert!(kr.len() >= ni, "attention: {} key rows given, expected at least ni = {ni}", kr.len());
        assert!(
            kr[..ni].iter().all(|&r| r.checked_mul(ldkv).and_then(|x| x.checked_add(width)).is_some_and(|end| end <= kv.len())),
            "attention: a key row index points past kv ({} values, stride {ldkv})",
            kv.len()
        );
    } else {
        assert!(
            kv.len() >= strided_span(ni, ldkv, width),
            "attention: kv has {} values, too few for {ni} key rows at stride {ldkv}",
            kv.len()
        );
    }
}

/// The AVX-512 query-lane kernel for head size `dh` (8/16/32/64) with this thread's lane
/// scratch; `then` sees the last 16-row block's lane-major probabilities (`[ni][16]`).
///
/// # Safety
/// AVX-512F/DQ must be available; the bounds of [`assert_head_bounds`] and of `ctx` as in
/// [`attention_head`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_qlanes(
    q: &[f32],
    ldq: usize,
    kv: &[f32],
    ldkv: usize,
    v_off: usize,
    key_rows: Option<&[usize]>,
    no: usize,
    ni: usize,
    dh: usize,
    probs: &mut [f32],
    ctx: *mut f32,
    ldc: usize,
    then: impl FnOnce(&[[f32; 16]]),
) {
    let mut pt = QLANE_SCRATCH.with(|s| s.take());
    if pt.len() < ni {
        pt.resize(ni, [0.0; 16]);
    }
    // SAFETY: as this function's contract.
    unsafe {
        match dh {
            8 => qlanes::attention::<8>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, &mut pt[..ni]),
            16 => qlanes::attention::<16>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, &mut pt[..ni]),
            32 => qlanes::attention::<32>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, &mut pt[..ni]),
            _ => qlanes::attention::<64>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, &mut pt[..ni]),
        }
    }
    then(&pt[..ni]);
    QLANE_SCRATCH.with(|s| s.replace(pt));
}

#[inline(always)]
fn reduce_heads_row_imp(probs: &[f32], head_stride: usize, h: usize, max: bool, out: &mut [f64]) {
    let nk = out.len();
    for (a, &x) in out.iter_mut().zip(&probs[..nk]) {
        *a = f64::from(x);
    }
    for head in 1..h {
        let src = &probs[head * head_stride..head * head_stride + nk];
        if max {
            for (a, &x) in out.iter_mut().zip(src) {
                *a = a.max(f64::from(x));
            }
        } else {
            for (a, &x) in out.iter_mut().zip(src) {
                *a += f64::from(x);
            }
        }
    }
    if !max {
        let hf = h as f64;
        for a in out.iter_mut() {
            *a /= hf;
        }
    }
}
dispatch!(fn reduce_heads_row_dispatch(probs: &[f32], head_stride: usize, h: usize, max: bool, out: &mut [f64]) => reduce_heads_row_imp);

/// Attention back-tracking's head reduction of one query row (ALGORITHM.md section 3):
/// `out[k] = (Σ_h f64(probs[h · head_stride + k])) / h` with the sum in head order
/// (`max = false`), or `max_h f64(probs[h · head_stride + k])` (`max = true`), for
/// `k < out.len()`. The same f64 operations as `planners::abt::backtrack`, so bitwise the same
/// values; vectorised for the CPU (AVX-512 / AVX2 / baseline). `h >= 1`.
pub fn reduce_heads_row(probs: &[f32], head_stride: usize, h: usize, max: bool, out: &mut [f64]) {
    assert!(
        h >= 1 && probs.len() >= strided_span(h, head_stride, out.len()),
        "reduce_heads_row: probs has {} values, too few for {h} heads of {} at stride {head_stride}",
        probs.len(),
        out.len()
    );
    reduce_heads_row_dispatch(probs, head_stride, h, max, out)
}

/// Natural logarithm for f32 `x` in the normal range, branch-free (Cephes `logf` polynomial,
/// relative error below ~1e-7), inlined so loops vectorise. Not for 0, subnormals, inf or NaN.
#[inline(always)]
pub fn ln_approx(x: f32) -> f32 {
    let bits = x.to_bits();
    // x = m · 2^e with m in [0.5, 1)
    let e = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    let f = if small { m + m - 1.0 } else { m - 1.0 };
    let e = (if small { e - 1 } else { e }) as f32;
    let z = f * f;
    let mut y = 7.037_683_6e-2f32;
    y = y.mul_add(f, -1.151_461e-1);
    y = y.mul_add(f, 1.167_699_9e-1);
    y = y.mul_add(f, -1.242_014_1e-1);
    y = y.mul_add(f, 1.424_932_3e-1);
    y = y.mul_add(f, -1.666_805_8e-1);
    y = y.mul_add(f, 2.000_071_5e-1);
    y = y.mul_add(f, -2.499_999_4e-1);
    y = y.mul_add(f, 3.333_333_1e-1);
    y = y * f * z;
    y = e.mul_add(-2.121_944_4e-4, y);
    y = z.mul_add(-0.5, y);
    e.mul_add(0.693_359_4, f + y)
}

#[inline(always)]
fn ln_clamped_imp(p: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(p) {
        *o = ln_approx(v.max(1e-37));
    }
}
dispatch!(fn ln_clamped_dispatch(p: &[f32], out: &mut [f32]) => ln_clamped_imp);

/// `out[i] = ln(max(p[i], 1e-37))` ([`ln_approx`], vectorised): log-probabilities for the
/// concrete planner. `out` must be at least as long as `p`. NaN inputs give garbage, not NaN.
pub fn ln_clamped(p: &[f32], out: &mut [f32]) {
    assert!(out.len() >= p.len());
    ln_clamped_dispatch(p, &mut out[..p.len()])
}

/// Standard normal CDF `Φ(z) = erfc(−z/√2) / 2` in f32 through [`erfc_pos`] (Numerical Recipes
/// `erfcc`, fractional error < 1.2e-7): absolute error below ~2e-7 for every finite `z`.
#[inline(always)]
pub fn normal_cdf_approx(z: f32) -> f32 {
    let half = 0.5 * erfc_pos(z.abs() * std::f32::consts::FRAC_1_SQRT_2);
    if z >= 0.0 {
        1.0 - half
    } else {
        half
    }
}

#[inline(always)]
fn standardized_cdf_row_imp(x: &[f32], ddof: usize, eps: f64, u: &mut [f64]) {
    let n = x.len();
    let mut s = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            s[k] += f64::from(c[k]);
        }
    }
    let mut sum: f64 = s.iter().sum();
    for &v in tail {
        sum += f64::from(v);
    }
    let mean = sum / n as f64;
    let mut q = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    for c in chunks {
        for k in 0..8 {
            let dlt = f64::from(c[k]) - mean;
            q[k] += dlt * dlt;
        }
    }
    let mut var: f64 = q.iter().sum();
    for &v in tail {
        var += (f64::from(v) - mean) * (f64::from(v) - mean);
    }
    var /= (n - ddof) as f64;
    let inv = 1.0 / (var.sqrt() + eps);
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::V4 {
        // SAFETY: AVX-512F/DQ checked by `isa`; lengths asserted by `standardized_cdf_row`.
        unsafe { qlanes::cdf_add(x, mean, inv, u) };
        return;
    }
    // (z in f32 from f32 mean and 1/std measured 2.5e-5 off the reference on wide score rows)
    for (o, &v) in u.iter_mut().zip(x) {
        let z = ((f64::from(v) - mean) * inv) as f32;
        *o += f64::from(normal_cdf_approx(z));
    }
}

#[inline(always)]
fn all_finite_imp(x: &[f32]) -> bool {
    x.iter().fold(true, |acc, v| acc & v.is_finite())
}
dispatch!(fn all_finite_dispatch(x: &[f32]) -> bool => all_finite_imp);

/// Whether every value of `x` is finite (vectorised, no early exit).
pub fn all_finite(x: &[f32]) -> bool {
    all_finite_dispatch(x)
}
dispatch!(fn standardized_cdf_row_dispatch(x: &[f32], ddof: usize, eps: f64, u: &mut [f64]) => standardized_cdf_row_imp);

/// One row of the concrete planner's step 1 (ALGORITHM.md section 4), fast form:
/// `u[j] += Φ((x_j − mean) / (std + eps))` over the row `x` (the real keys), `std` with `ddof`
/// delta degrees of freedom. Statistics and `z` in f64 (8 partial sums), `z` rounded to f32 and
/// `Φ` by [`normal_cdf_approx`] (on AVX-512 CPUs the same polynomial, 16 values at a time, with
/// a reciprocal estimate + Newton step for its division): each added term is within ~2.5e-7 of
/// the f64 reference (`planners::concrete::standardized_cdf_scores`; tested on whichever path
/// the machine runs). `x.len() > ddof`, `u.len() == x.len()`.
pub fn standardized_cdf_row(x: &[f32], ddof: usize, eps: f64, u: &mut [f64]) {
    assert!(x.len() > ddof && u.len() == x.len());
    standardized_cdf_row_dispatch(x, ddof, eps, u)
}

/// `out[m, n] = x[m, k] · w[k, n] + bias` (then `act`), bias/activation fused into the GEMM's
/// output pass: the output is pre-filled with the bias and the GEMM accumulates into it.
///
/// Panics if `x.len() != m k`, `w.len() != k n`, `bias.len() != n` or `out.len() != m n`.
#[allow(clippy::too_many_arguments)]
pub fn linear(x: &[f32], w: &[f32], bias: &[f32], out: &mut [f32], m: usize, k: usize, n: usize, act: Option<Activation>) {
    assert!(x.len() == elems(m, k), "linear: x has {} values, expected m x k = {m} x {k}", x.len());
    assert!(w.len() == elems(k, n), "linear: w has {} values, expected k x n = {k} x {n}", w.len());
    assert!(bias.len() == n, "linear: bias has {} values, expected n = {n}", bias.len());
    assert!(out.len() == elems(m, n), "linear: out has {} values, expected m x n = {m} x {n}", out.len());
    if n > 0 {
        for row in out.chunks_exact_mut(n) {
            row.copy_from_slice(bias);
        }
    }
    matmul(x, w, out, m, k, n, true);
    if let Some(a) = act {
        activate_fast(out, a);
    }
}

/// [`gelu_approx`] in place, vectorised: on AVX-512 CPUs with a reciprocal estimate and one
/// Newton step instead of the division (within 2e-6 relative of `gelu_approx`, 1.4x faster),
/// elsewhere `gelu_approx` itself, auto-vectorised.
pub fn gelu_fast(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::V4 {
        // SAFETY: AVX-512F/DQ checked by `isa`.
        unsafe { qlanes::gelu_slice(x) };
        return;
    }
    gelu_dispatch(x)
}

/// [`activate`] with the vectorised, parallel GELU ([`gelu_fast`]); other activations as `activate`.
pub fn activate_fast(x: &mut [f32], act: Activation) {
    if act == Activation::Gelu {
        par_rows(x, 1, gelu_fast);
    } else {
        activate(x, act);
    }
}

#[inline(always)]
fn gelu_imp(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_approx(*v);
    }
}
dispatch!(fn gelu_dispatch(x: &mut [f32]) => gelu_imp);
