//! Matrix products (through the `gemm` crate, which picks AVX-512/AVX2/scalar code at run time):
//! plain, transposed and strided forms, and [`linear`] (bias and activation fused into the GEMM).

use super::*;

/// `out[m, n] = a[m, k] · b[k, n] (+ out if accumulate)`, all row-major and contiguous.
///
/// Panics if `a.len() != m k`, `b.len() != k n` or `out.len() != m n`.
pub fn matmul(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    assert!(a.len() == elems(m, k), "matmul: a has {} values, expected m x k = {m} x {k}", a.len());
    assert!(b.len() == elems(k, n), "matmul: b has {} values, expected k x n = {k} x {n}", b.len());
    assert!(out.len() == elems(m, n), "matmul: out has {} values, expected m x n = {m} x {n}", out.len());
    product(a, false, b, false, out, m, k, n, accumulate);
}

/// `out[m, n] = op(a) · op(b) (+ out if accumulate)` with `op(a)` `[m, k]` and `op(b)` `[k, n]`:
/// `a` is stored row-major as `[m, k]`, or as `[k, m]` when `a_t` (read transposed); likewise
/// `b` as `[k, n]`, or `[n, k]` when `b_t`. Parallel on the caller's rayon pool for large
/// products (as [`matmul`]).
///
/// Panics if a slice's length is not the product of its dimensions.
#[allow(clippy::too_many_arguments)]
pub fn matmul_t(a: &[f32], a_t: bool, b: &[f32], b_t: bool, out: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    assert!(a.len() == elems(m, k), "matmul_t: a has {} values, expected m x k = {m} x {k}", a.len());
    assert!(b.len() == elems(k, n), "matmul_t: b has {} values, expected k x n = {k} x {n}", b.len());
    assert!(out.len() == elems(m, n), "matmul_t: out has {} values, expected m x n = {m} x {n}", out.len());
    product(a, a_t, b, b_t, out, m, k, n, accumulate);
}

/// The products with nothing to multiply: `m` or `n` is 0 (nothing to write), or `k` is 0 (the
/// sum is empty: `out` is zeroed unless `accumulate`). Returns true when it handled the product.
pub(super) fn empty_product(out: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) -> bool {
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return true;
    }
    false
}

/// The one strided `gemm` call behind [`matmul`] and [`matmul_t`]: `out = op(a) · op(b)` (+ out
/// if accumulate), lengths already checked by the caller.
#[allow(clippy::too_many_arguments)]
fn product(a: &[f32], a_t: bool, b: &[f32], b_t: bool, out: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    if empty_product(out, m, k, n, accumulate) {
        return;
    }
    // SAFETY: out holds m·n initialised values (asserted by the callers).
    unsafe { gemm_raw(a, a_t, b, b_t, out.as_mut_ptr(), m, k, n, accumulate) }
}

/// `out = op(a) · op(b)` (+ out if accumulate) through the `gemm` crate, parallel on the caller's
/// pool for large products; with `accumulate = false` the crate never reads `out` (it only
/// writes it), so `out` may be uninitialised then.
///
/// # Safety
/// `a` holds `op(a)` `[m, k]` and `b` `op(b)` `[k, n]` (lengths checked by the caller); `out`
/// points to `m·n` writable f32 values, initialised when `accumulate`; `m`, `n`, `k` > 0.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_raw(a: &[f32], a_t: bool, b: &[f32], b_t: bool, out: *mut f32, m: usize, k: usize, n: usize, accumulate: bool) {
    // (column stride, row stride) of op(a) and op(b)
    let (acs, ars) = if a_t { (m as isize, 1) } else { (1, k as isize) };
    let (bcs, brs) = if b_t { (k as isize, 1) } else { (1, n as isize) };
    let threads = threads();
    let par = if m * n * k >= PAR_MIN_MACS && threads > 1 { ::gemm::Parallelism::Rayon(threads) } else { ::gemm::Parallelism::None };
    // SAFETY: the caller guarantees the lengths; the strides address op(a) [m, k] and op(b)
    // [k, n] inside them.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            out,
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            acs,
            ars,
            b.as_ptr(),
            bcs,
            brs,
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
        ::gemm::gemm(
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
            ::gemm::Parallelism::None,
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
        ::gemm::gemm(
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
            ::gemm::Parallelism::None,
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
        ::gemm::gemm(
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
            ::gemm::Parallelism::None,
        );
    }
}

/// `out[m, n] (row stride ldo) = aᵀ · b (+ out if accumulate)` with `a` stored row-major as
/// `[k, m]` (read transposed) and `b` as `k` rows of `n` values at row stride `ldb`: the
/// per-head `dK = dSᵀ·Q` and `dV = Pᵀ·dC` of attention's backward pass, reading and writing one
/// head's columns of row-major `[rows, H·d_h]` buffers in place. One thread.
///
/// Panics unless `ldb >= n`, `ldo >= n`, `a.len() >= k m`, `b` holds `k` rows and `out` `m`
/// rows at those strides.
#[allow(clippy::too_many_arguments)]
pub fn matmul_at_strided(a: &[f32], b: &[f32], ldb: usize, out: &mut [f32], ldo: usize, m: usize, k: usize, n: usize, accumulate: bool) {
    assert!(ldb >= n && ldo >= n, "matmul_at_strided: strides {ldb}, {ldo} shorter than a row of n = {n}");
    assert!(a.len() >= elems(k, m), "matmul_at_strided: a has {} values, expected at least k x m = {k} x {m}", a.len());
    assert!(b.len() >= strided_span(k, ldb, n), "matmul_at_strided: b has {} values, too few for {k} rows of {n} at stride {ldb}", b.len());
    assert!(
        out.len() >= strided_span(m, ldo, n),
        "matmul_at_strided: out has {} values, too few for {m} rows of {n} at stride {ldo}",
        out.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                out[r * ldo..r * ldo + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: bounds asserted above; op(a)[i, kk] = a[kk·m + i] (column stride m, row stride 1).
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            ldo as isize,
            accumulate,
            a.as_ptr(),
            m as isize,
            1,
            b.as_ptr(),
            1,
            ldb as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
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
