//! Fresh output buffers written in one pass (the native trainer's per-step activations and
//! gradients): a GEMM into a new vector that only the GEMM writes, a linear layer whose new
//! output starts as the bias rows (copied in parallel, the GEMM then adds into them), column
//! sums in parallel, and zeroed vectors cleared by every thread of the pool.
//!
//! Why: `vec![0.0; n]` is `calloc`, which memsets reused heap memory on the calling thread, and a
//! GEMM with `accumulate = false` then overwrites every value: at length 128 that was ~0.5 GB of
//! single-threaded zeroing per training step (docs/research/2026-12-03-training-step-t128.md).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::*;

/// Values per parallel chunk of the fills below (256 KiB of f32).
const FILL_CHUNK: usize = 1 << 16;

/// Fill the uninitialised `out` by `fill(first_index, chunk)` over chunks of `chunk` values, in
/// parallel when it is large; every call must write every value of its chunk.
fn par_fill(out: &mut [MaybeUninit<f32>], chunk: usize, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) {
    let chunk = chunk.max(1);
    if threads() <= 1 || out.len() < 2 * chunk {
        fill(0, out);
        return;
    }
    out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| fill(i * chunk, c));
}

/// A new vector of `len` zeros, cleared in parallel chunks on the caller's rayon pool (not by
/// `calloc` on one thread).
pub fn zeros_par(len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    par_fill(&mut v.spare_capacity_mut()[..len], FILL_CHUNK, |_, c| c.fill(MaybeUninit::new(0.0)));
    // SAFETY: `par_fill` wrote all `len` values of the spare capacity.
    unsafe { v.set_len(len) };
    v
}

/// `out[m, n] = op(a) · op(b)` as [`matmul_t`] (`accumulate = false`), into a new vector that
/// only the GEMM writes: no zeroing pass before it. Same values as `matmul_t` into zeros.
///
/// Panics if a slice's length is not the product of its dimensions.
#[allow(clippy::too_many_arguments)]
pub fn matmul_t_new(a: &[f32], a_t: bool, b: &[f32], b_t: bool, m: usize, k: usize, n: usize) -> Vec<f32> {
    assert!(a.len() == elems(m, k), "matmul_t_new: a has {} values, expected m x k = {m} x {k}", a.len());
    assert!(b.len() == elems(k, n), "matmul_t_new: b has {} values, expected k x n = {k} x {n}", b.len());
    let len = elems(m, n);
    if len == 0 || k == 0 {
        return vec![0.0; len];
    }
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: the capacity holds m·n values; with `read_dst = false` the gemm crate sets alpha to
    // 0 and never reads dst (gemm-common 0.19 `gemm_basic_generic`, alpha_status 0, and its
    // gemv/gevv paths), and it writes every one of the m·n values, so `set_len` exposes only
    // initialised values.
    unsafe {
        gemm_raw(a, a_t, b, b_t, out.as_mut_ptr(), m, k, n, false);
        out.set_len(len);
    }
    out
}

/// `out[m, n] = x[m, k] · w[k, n] + bias` into a new vector: the bias rows are copied in parallel,
/// then the GEMM adds the product into them (no zero pass, no serial bias pass).
///
/// Panics if `x.len() != m k`, `w.len() != k n` or `bias.len() != n`.
pub fn linear_new(x: &[f32], w: &[f32], bias: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert!(x.len() == elems(m, k), "linear_new: x has {} values, expected m x k = {m} x {k}", x.len());
    assert!(w.len() == elems(k, n), "linear_new: w has {} values, expected k x n = {k} x {n}", w.len());
    assert!(bias.len() == n, "linear_new: bias has {} values, expected n = {n}", bias.len());
    let len = elems(m, n);
    if len == 0 {
        return Vec::new();
    }
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let rows_per = (FILL_CHUNK / n).max(1);
    par_fill(&mut out.spare_capacity_mut()[..len], rows_per * n, |_, c| {
        for row in c.chunks_exact_mut(n) {
            for (o, &v) in row.iter_mut().zip(bias) {
                o.write(v);
            }
        }
    });
    // SAFETY: the chunks are whole rows (a multiple of n), so every value was written.
    unsafe { out.set_len(len) };
    if k > 0 {
        matmul(x, w, &mut out, m, k, n, true);
    }
    out
}

/// Column sums of `y` `[m, n]` into `out` `[n]` (overwritten): row blocks summed in parallel,
/// their partial sums added in block order, so the result does not depend on the thread count's
/// timing (the same bits every run for the same `threads()`).
///
/// Panics if `out.len() != n` or `y.len()` is not a multiple of `n`.
pub fn column_sums(y: &[f32], n: usize, out: &mut [f32]) {
    assert!(out.len() == n, "column_sums: out has {} values, expected n = {n}", out.len());
    out.fill(0.0);
    if n == 0 {
        return;
    }
    assert!(y.len().is_multiple_of(n), "column_sums: y has {} values, not a multiple of n = {n}", y.len());
    const ROWS: usize = 256;
    let partial: Vec<Vec<f32>> = y
        .par_chunks(ROWS * n)
        .map(|blk| {
            let mut acc = vec![0.0f32; n];
            col_sum_dispatch(blk, &mut acc);
            acc
        })
        .collect();
    for p in partial {
        for (o, v) in out.iter_mut().zip(&p) {
            *o += *v;
        }
    }
}

#[inline(always)]
fn col_sum_imp(blk: &[f32], acc: &mut [f32]) {
    for row in blk.chunks_exact(acc.len()) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += *v;
        }
    }
}
dispatch!(fn col_sum_dispatch(blk: &[f32], acc: &mut [f32]) => col_sum_imp);

/// `acc += x` element-wise, in parallel chunks for large inputs.
///
/// Panics if the lengths differ.
pub fn add_assign_par(acc: &mut [f32], x: &[f32]) {
    assert!(acc.len() == x.len(), "add_assign_par: {} and {} values", acc.len(), x.len());
    if threads() <= 1 || acc.len() < 2 * FILL_CHUNK {
        add_imp(acc, x);
        return;
    }
    acc.par_chunks_mut(FILL_CHUNK).zip(x.par_chunks(FILL_CHUNK)).for_each(|(a, v)| add_dispatch(a, v));
}

#[inline(always)]
fn add_imp(acc: &mut [f32], x: &[f32]) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a += *v;
    }
}
dispatch!(fn add_dispatch(acc: &mut [f32], x: &[f32]) => add_imp);

/// `out = act(x)` (GELU as [`gelu_fast`]) into a new vector, chunk by chunk in parallel: each
/// chunk is copied and activated while in cache (no separate copy pass). Other activations:
/// [`activate`] on a copy.
pub fn activated_new(x: &[f32], act: Activation) -> Vec<f32> {
    if act != Activation::Gelu {
        let mut out = x.to_vec();
        activate(&mut out, act);
        return out;
    }
    let mut out: Vec<f32> = Vec::with_capacity(x.len());
    par_fill(&mut out.spare_capacity_mut()[..x.len()], FILL_CHUNK / 4, |at, c| {
        for (o, &v) in c.iter_mut().zip(&x[at..]) {
            o.write(v);
        }
        // SAFETY: every value of `c` was just written.
        let c = unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) };
        gelu_fast(c);
    });
    // SAFETY: `par_fill` wrote all values.
    unsafe { out.set_len(x.len()) };
    out
}
