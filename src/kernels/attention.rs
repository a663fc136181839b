//! Attention of one head (scores, softmax, P·V; ALGORITHM.md section 1) on the row layout, its
//! dispatch to the AVX-512 16-query kernels of `qlanes` and the AVX2 ones of `qlanes_avx2`, and the head reduction of attention
//! back-tracking (section 3).

use super::*;

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

#[inline(always)]
pub(super) fn softmax_imp(row: &mut [f32]) {
    softmax_imp_exp(row, softmax_exp() == SoftmaxExp::Fast)
}

/// `softmax_imp` with the exponential given: [`exp_softmax`] (`fast`) or [`exp_approx`].
#[inline(always)]
fn softmax_imp_exp(row: &mut [f32], fast: bool) {
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
    if fast {
        for v in row.iter_mut() {
            *v = exp_softmax(*v - max);
        }
    } else {
        for v in row.iter_mut() {
            *v = exp_approx(*v - max);
        }
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
/// - `kt`: scratch of at least `dh * ceil(ni / 16) * 16`;
/// - `fast_exp`: the softmax exponential, [`exp_softmax`] (`true`) or [`exp_approx`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn attention_head_imp(
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
    fast_exp: bool,
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
        softmax_imp_exp(row, fast_exp);
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

    /// A query-lane kernel under test: `(dh, fast exponential, q, ldq, kv, ldkv, v_off, key
    /// rows, no, ni, probs (empty: not wanted), ctx, ldc)`.
    type LaneKernel<'a> =
        &'a dyn Fn(usize, bool, &[f32], usize, &[f32], usize, usize, Option<&[usize]>, usize, usize, &mut [f32], *mut f32, usize);

    /// Runs `lanes` and the row-layout path (`attention_head_dispatch`, no key weights) on
    /// ragged shapes (no / ni not multiples of the lane count or of 16, 1 key, 1 query),
    /// gathered key rows, a row of non-finite scores (left raw by the softmax), the
    /// exponentials `exps` (`true`: `exp_softmax`, `false`: `exp_approx`), probabilities kept
    /// and not; asserts the same bits (any NaN for NaN). Returns the number of runs compared.
    fn check_bitwise_equal_row_kernel(lanes: LaneKernel, exps: &[bool]) -> usize {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut runs = 0;
        for &(dh, no, ni, gathered) in &[
            (8, 1, 1, false),
            (8, 5, 7, false),
            (8, 17, 33, true),
            (8, 9, 4, false),
            (16, 40, 16, false),
            (16, 3, 130, true),
            (16, 8, 3, true),
            (8, 128, 128, false),
            (8, 16, 31, true),
            (8, 33, 257, false),
            (32, 1, 9, false),
            (32, 24, 2, false),
            (32, 37, 53, true),
            (32, 128, 128, false),
            (64, 20, 35, true),
            (64, 17, 66, false),
            (64, 5, 128, false),
        ] {
            let ldq = dh * 3 + 1;
            let ldkv = dh * 5 + 3;
            let v_off = dh * 2;
            let rows_kv = ni + 4;
            let mut q: Vec<f32> = (0..no * ldq).map(|_| rng.f32() * 4.0 - 2.0).collect();
            if no > 2 {
                // a row whose scores overflow (±inf, NaN): softmax leaves it as raw scores
                q[2 * ldq..2 * ldq + dh].fill(3e38);
            }
            let kv: Vec<f32> = (0..rows_kv * ldkv).map(|_| rng.f32() * 4.0 - 2.0).collect();
            let key_rows: Vec<usize> = if gathered { (0..ni).map(|j| (j * 7 + 3) % rows_kv).collect() } else { Vec::new() };
            let kr = gathered.then_some(&key_rows[..]);
            let ldc = dh + 2;
            for &fast_exp in exps {
                let mut p0 = vec![0.0f32; no * ni];
                let mut c0 = vec![0.0f32; no * ldc];
                let mut kt = vec![0.0f32; dh * ni.div_ceil(16) * 16];
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
                    &mut p0,
                    c0.as_mut_ptr(),
                    ldc,
                    &mut kt,
                    fast_exp,
                );
                for keep in [true, false] {
                    let mut p1 = if keep { vec![0.0f32; no * ni] } else { Vec::new() };
                    let mut c1 = vec![0.0f32; no * ldc];
                    lanes(dh, fast_exp, &q, ldq, &kv, ldkv, v_off, kr, no, ni, &mut p1, c1.as_mut_ptr(), ldc);
                    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
                    let what = format!("dh {dh} no {no} ni {ni} gathered {gathered} fast exp {fast_exp} probs kept {keep}");
                    if keep {
                        assert!(p0.iter().zip(&p1).all(|(a, b)| same(*a, *b)), "probs {what}");
                    }
                    for i in 0..no {
                        for dd in 0..dh {
                            assert!(same(c0[i * ldc + dd], c1[i * ldc + dd]), "ctx {what} i {i} dd {dd}");
                        }
                    }
                    // the raw (non-finite) row and the softmax rows both occur
                    assert!(no <= 2 || !c0[2 * ldc..2 * ldc + dh].iter().all(|v| v.is_finite()));
                    assert!(c0[..dh].iter().all(|v| v.is_finite()) && c0[..dh].iter().any(|v| *v != 0.0));
                    runs += 1;
                }
            }
        }
        runs
    }

    #[test]
    fn qlanes_bitwise_equal_row_kernel() {
        if super::isa() != super::Isa::V4 {
            let _ = writeln!(
                std::io::stderr(),
                "NOTE: qlanes_bitwise_equal_row_kernel did NOT run: this CPU has no AVX-512F/DQ (the 16-lane kernel is AVX-512 only; the AVX2 one is checked by qlanes_avx2_bitwise_equal_row_kernel)"
            );
            return;
        }
        let lanes =
            |dh: usize, fe: bool, q: &[f32], ldq, kv: &[f32], ldkv, v_off, kr: Option<&[usize]>, no, ni, probs: &mut [f32], ctx, ldc| {
                use super::qlanes::attention as a;
                let mut pt = vec![[0.0f32; 16]; ni];
                let p = &mut pt[..];
                // SAFETY: V4 checked; sizes as attention_head asserts.
                unsafe {
                    match (dh, fe) {
                        (8, true) => a::<8, true>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                        (16, true) => a::<16, true>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                        (32, true) => a::<32, true>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                        (_, true) => a::<64, true>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                        (8, false) => a::<8, false>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                        (16, false) => a::<16, false>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                        (32, false) => a::<32, false>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                        (_, false) => a::<64, false>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                    }
                }
            };
        let runs = check_bitwise_equal_row_kernel(&lanes, &[true, false]);
        let _ = writeln!(
            std::io::stderr(),
            "qlanes_bitwise_equal_row_kernel: AVX-512 16-lane kernel ran, {runs} runs bitwise equal to the row kernel"
        );
    }

    /// The AVX2 kernel in both layouts (8 queries per block, and 16 queries in two vectors as
    /// `attention_head` runs it; 4 P·V columns per pass), wherever the CPU has AVX2 + FMA (also on AVX-512 CPUs,
    /// which dispatch to the 16-lane kernel instead).
    #[test]
    fn qlanes_avx2_bitwise_equal_row_kernel() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            let _ = writeln!(std::io::stderr(), "NOTE: qlanes_avx2_bitwise_equal_row_kernel did NOT run: this CPU has no AVX2 + FMA");
            return;
        }
        macro_rules! avx2_kernel {
            ($g:literal, $c:literal) => {
                |dh: usize, fe: bool, q: &[f32], ldq, kv: &[f32], ldkv, v_off, kr: Option<&[usize]>, no, ni, probs: &mut [f32], ctx, ldc| {
                    use super::qlanes_avx2::attention as a;
                    let mut pt = vec![0.0f32; 8 * $g * ni];
                    let p = &mut pt[..];
                    // SAFETY: AVX2 + FMA checked; sizes as attention_head asserts.
                    unsafe {
                        match (dh, fe) {
                            (8, true) => a::<8, true, $g, $c>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                            (16, true) => a::<16, true, $g, $c>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                            (32, true) => a::<32, true, $g, $c>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                            (_, true) => a::<64, true, $g, $c>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                            (8, false) => a::<8, false, $g, $c>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                            (16, false) => a::<16, false, $g, $c>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                            (32, false) => a::<32, false, $g, $c>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                            (_, false) => a::<64, false, $g, $c>(q, ldq, kv, ldkv, v_off, kr, no, ni, probs, ctx, ldc, p),
                        }
                    }
                }
            };
        }
        let runs8 = check_bitwise_equal_row_kernel(&avx2_kernel!(1, 4), &[true, false]);
        let runs16 = check_bitwise_equal_row_kernel(&avx2_kernel!(2, 4), &[true, false]);
        let _ = writeln!(
            std::io::stderr(),
            "qlanes_avx2_bitwise_equal_row_kernel: AVX2 kernel ran (8 queries x 4 P·V columns: {runs8} runs; 16 queries x 4 as dispatched: {runs16} runs), bitwise equal to the row kernel"
        );
    }

    /// `attention_head_accumulate` over the heads of a layer (whichever kernel this CPU runs it
    /// on: AVX-512 or AVX2) gives the row-layout path's context bits and, divided by H, the bits
    /// of `reduce_heads_row` on the row-major probabilities (the route taken without it): ragged
    /// blocks (1..16 queries), 1 key, gathered keys, a head with a raw (non-finite) row, and a
    /// stale accumulator that the first head must overwrite.
    #[test]
    fn attention_head_accumulate_bitwise_equal_reduce_heads_row() {
        if !super::attention_accumulate_supported(8, 16, 1) {
            let _ = writeln!(
                std::io::stderr(),
                "NOTE: attention_head_accumulate_bitwise_equal_reduce_heads_row did NOT run: this CPU has neither AVX-512F/DQ nor AVX2 + FMA"
            );
            return;
        }
        assert!(!super::attention_accumulate_supported(8, 17, 4) && !super::attention_accumulate_supported(12, 4, 4));
        assert!(!super::attention_accumulate_supported(8, 4, 0));
        let fast_exp = super::softmax_exp() == super::SoftmaxExp::Fast;
        let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        let mut rng = fastrand::Rng::with_seed(5);
        let h = 3;
        let mut runs = 0;
        for &(dh, no, ni, gathered) in &[
            (8usize, 16usize, 128usize, false),
            (8, 1, 1, false),
            (16, 7, 33, true),
            (32, 16, 130, true),
            (64, 9, 17, false),
            (8, 13, 5, true),
        ] {
            let d = h * dh;
            let rows_kv = ni + 3;
            let mut q: Vec<f32> = (0..no * d).map(|_| rng.f32() * 4.0 - 2.0).collect();
            if no > 2 {
                // head 1, query 2: scores overflow, softmax leaves the raw scores (±inf, NaN)
                q[2 * d + dh..2 * d + 2 * dh].fill(3e38);
            }
            let kv: Vec<f32> = (0..rows_kv * 2 * d).map(|_| rng.f32() * 4.0 - 2.0).collect();
            let key_rows: Vec<usize> = if gathered { (0..ni).map(|j| (j * 5 + 2) % rows_kv).collect() } else { Vec::new() };
            let kr = gathered.then_some(&key_rows[..]);
            // the route without accumulation: row-major [H, no, ni] probabilities, then reduced
            let mut probs = vec![0.0f32; h * no * ni];
            let mut c0 = vec![0.0f32; no * d];
            let mut kt = vec![0.0f32; dh * ni.div_ceil(16) * 16];
            for head in 0..h {
                super::attention_head_dispatch(
                    &q[head * dh..],
                    d,
                    &kv[head * dh..],
                    2 * d,
                    d,
                    kr,
                    None,
                    no,
                    ni,
                    dh,
                    &mut probs[head * no * ni..(head + 1) * no * ni],
                    // SAFETY: columns head·dh.. of `no` rows of stride d.
                    unsafe { c0.as_mut_ptr().add(head * dh) },
                    d,
                    &mut kt,
                    fast_exp,
                );
            }
            let mut acc = vec![7.5f64; 16 * ni];
            let mut c1 = vec![0.0f32; no * d];
            for head in 0..h {
                // SAFETY: as above; the support checked at the top covers these shapes.
                unsafe {
                    super::attention_head_accumulate(
                        &q[head * dh..],
                        d,
                        &kv[head * dh..],
                        2 * d,
                        d,
                        kr,
                        no,
                        ni,
                        dh,
                        c1.as_mut_ptr().add(head * dh),
                        d,
                        &mut acc,
                        head == 0,
                    )
                };
            }
            let what = format!("dh {dh} no {no} ni {ni} gathered {gathered}");
            assert!(c0.iter().zip(&c1).all(|(a, b)| same(f64::from(*a), f64::from(*b))), "ctx {what}");
            let mut want = vec![0.0f64; ni];
            for r in 0..no {
                super::reduce_heads_row(&probs[r * ni..], no * ni, h, false, &mut want);
                for (j, &w) in want.iter().enumerate() {
                    let got = acc[16 * j + r] / h as f64;
                    assert!(same(got, w), "{what}: row {r} key {j}: accumulated {got:e}, reduce_heads_row {w:e}");
                }
                // a finite row's mean probabilities sum to 1; the raw row does not
                let total: f64 = want.iter().sum();
                assert!((total - 1.0).abs() < 1e-5 || r == 2, "{what}: row {r} sums to {total}");
                assert!(r != 2 || !total.is_finite() || (total - 1.0).abs() > 1.0, "{what}: the raw row sums to {total}");
            }
            runs += 1;
        }
        let _ = writeln!(
            std::io::stderr(),
            "attention_head_accumulate_bitwise_equal_reduce_heads_row: {} ran, {runs} shapes bitwise equal",
            if super::isa() == super::Isa::V4 { "AVX-512 16-lane kernel" } else { "AVX2 query-lane kernel" }
        );
    }

    /// `attention_head` itself (whichever kernel this CPU dispatches to, named on stderr) gives
    /// the row-layout path's bits.
    #[test]
    fn attention_head_dispatch_bitwise_equal_row_kernel() {
        let lanes =
            |dh: usize, fe: bool, q: &[f32], ldq, kv: &[f32], ldkv, v_off, kr: Option<&[usize]>, no, ni, probs: &mut [f32], ctx, ldc| {
                assert!(fe, "the dispatch reads the process-wide exponential (the fast one in tests)");
                let mut kt = Vec::new();
                // SAFETY: ctx has `no` rows of stride ldc >= dh.
                unsafe { super::attention_head(q, ldq, kv, ldkv, v_off, kr, None, no, ni, dh, probs, ctx, ldc, &mut kt) };
            };
        // (the default exponential only: switching the process-wide one would race other tests)
        assert_eq!(super::softmax_exp(), super::SoftmaxExp::Fast);
        let runs = check_bitwise_equal_row_kernel(&lanes, &[true]);
        let path = match super::isa() {
            super::Isa::V4 => "AVX-512 16-lane kernel",
            super::Isa::V3 => "AVX2 query-lane kernel",
            super::Isa::Base => "row-layout kernel (baseline)",
        };
        let _ = writeln!(
            std::io::stderr(),
            "attention_head_dispatch_bitwise_equal_row_kernel: attention_head ran the {path}; {runs} runs bitwise equal"
        );
    }

    /// The 8-lane exponentials give the scalar forms' bits (`exp_softmax`, `exp_approx`) on
    /// every 97th f32 of `[-100, 100]` and on the edges (clamps, ±0, ±inf, NaN).
    #[test]
    fn avx2_exponentials_equal_scalar() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            let _ = writeln!(std::io::stderr(), "NOTE: avx2_exponentials_equal_scalar did NOT run: this CPU has no AVX2 + FMA");
            return;
        }
        use std::arch::x86_64::*;
        let mut xs: Vec<f32> = Vec::new();
        for (lo, hi) in [(0u32, 100f32.to_bits()), (0x8000_0000, (-100f32).to_bits())] {
            xs.extend((lo..=hi).step_by(97).map(f32::from_bits));
        }
        xs.extend([0.0, -0.0, 88.7, -87.3, 88.8, -87.4, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN, 1e-45]);
        while !xs.len().is_multiple_of(16) {
            xs.push(0.5);
        }
        #[target_feature(enable = "avx2,fma")]
        fn both(x: &[f32], fast: bool) -> Vec<f32> {
            let mut out = vec![0.0f32; x.len()];
            for (c, o) in x.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
                // SAFETY: 16 values in each chunk.
                let v: [[__m256; 2]; 1] = unsafe { [[_mm256_loadu_ps(c.as_ptr()), _mm256_loadu_ps(c.as_ptr().add(8))]] };
                let e = if fast { super::qlanes_avx2::exps::<1, 2>(v) } else { super::qlanes_avx2::expn::<1, 2>(v) };
                unsafe {
                    _mm256_storeu_ps(o.as_mut_ptr(), e[0][0]);
                    _mm256_storeu_ps(o.as_mut_ptr().add(8), e[0][1]);
                }
            }
            out
        }
        for fast in [true, false] {
            // SAFETY: AVX2 + FMA checked above.
            let got = unsafe { both(&xs, fast) };
            for (&x, &g) in xs.iter().zip(&got) {
                let want = if fast { super::exp_softmax(x) } else { super::exp_approx(x) };
                assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "fast {fast}: e^{x:e} = {g:e}, scalar {want:e}");
            }
        }
        assert!(xs.len() > 2_000_000);
    }

    #[test]
    fn transpose8_transposes() {
        if !std::is_x86_feature_detected!("avx2") {
            let _ = writeln!(std::io::stderr(), "NOTE: transpose8_transposes did NOT run: this CPU has no AVX2");
            return;
        }
        use std::arch::x86_64::*;
        let m: Vec<f32> = (0..64).map(|v| v as f32).collect();
        let mut out = [0.0f32; 64];
        // SAFETY: AVX2 checked above.
        unsafe {
            let mut r: [__m256; 8] = std::array::from_fn(|a| _mm256_loadu_ps(m[a * 8..].as_ptr()));
            super::qlanes_avx2::transpose8(&mut r);
            for (b, rb) in r.iter().enumerate() {
                _mm256_storeu_ps(out[b * 8..].as_mut_ptr(), *rb);
            }
        }
        for a in 0..8 {
            for b in 0..8 {
                assert_eq!(out[b * 8 + a], m[a * 8 + b], "a {a} b {b}");
            }
        }
    }
}

#[inline(always)]
pub(super) fn pv_fixed<const DH: usize>(row: &[f32], kv: &[f32], ldkv: usize, v_off: usize, key_rows: Option<&[usize]>, out: &mut [f32]) {
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
    fn attention_head_dispatch(q: &[f32], ldq: usize, kv: &[f32], ldkv: usize, v_off: usize, key_rows: Option<&[usize]>, key_weights: Option<&[f32]>, no: usize, ni: usize, dh: usize, probs: &mut [f32], ctx: *mut f32, ldc: usize, kt: &mut [f32], fast_exp: bool) => attention_head_imp
);

/// Safe wrapper of one head's attention (see `attention_head_imp` for the layout). Head sizes
/// 8/16/32/64 without key weights run the query-lane kernels (AVX-512: `qlanes`, 16 queries
/// per vector; AVX2 + FMA: `qlanes_avx2`, 16 queries in two vectors), which give the row-layout
/// path's bits; everything else runs the row layout.
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
    // an empty `probs`: the probabilities are not wanted (the query-lane kernels then skip
    // writing them: register transposes per block, and the caller's zeroed [no, ni] buffer)
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
    #[cfg(target_arch = "x86_64")]
    if key_weights.is_none() && ni > 0 && matches!(dh, 8 | 16 | 32 | 64) && isa() == Isa::V3 {
        // SAFETY: AVX2 + FMA checked by `isa`; bounds asserted above (q rows, key rows, probs).
        unsafe { run_qlanes_avx2(q, ldq, kv, ldkv, v_off, key_rows, no, ni, dh, probs, ctx, ldc, |_| ()) };
        return;
    }
    let fast_exp = softmax_exp() == SoftmaxExp::Fast;
    let need = dh * ni.div_ceil(16) * 16;
    if kt.len() < need {
        kt.resize(need, 0.0);
    }
    if probs.is_empty() {
        let mut scratch = vec![0.0f32; no * ni];
        attention_head_dispatch(q, ldq, kv, ldkv, v_off, key_rows, key_weights, no, ni, dh, &mut scratch, ctx, ldc, kt, fast_exp)
    } else {
        attention_head_dispatch(q, ldq, kv, ldkv, v_off, key_rows, key_weights, no, ni, dh, probs, ctx, ldc, kt, fast_exp)
    }
}

#[inline(always)]
pub(super) fn attention_scores_imp(q: &[f32], ldq: usize, kt: &[f32], no: usize, ni: usize, dh: usize, out: &mut [f32]) {
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
dispatch!(pub(super) fn attention_scores_dispatch(q: &[f32], ldq: usize, kt: &[f32], no: usize, ni: usize, dh: usize, out: &mut [f32]) => attention_scores_imp);

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

/// Whether [`attention_head_accumulate`] runs for head size `dh`, `no` query rows, `ni` keys:
/// `dh` in 8/16/32/64, `1 <= ni`, `no <= 16`, on AVX-512F/DQ or AVX2 + FMA (x86-64 only).
pub fn attention_accumulate_supported(dh: usize, no: usize, ni: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // one block of <= 16 queries: the AVX-512 kernel's lanes, or the AVX2 kernel's
        // 8 AVX2_GROUPS (= 16) queries in two vectors; both leave a [ni][16] lane scratch
        ni > 0 && no <= 8 * AVX2_GROUPS && matches!(dh, 8 | 16 | 32 | 64) && matches!(isa(), Isa::V4 | Isa::V3)
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
    // SAFETY: AVX-512 (V4) or AVX2 + FMA (V3) checked by `attention_accumulate_supported`;
    // bounds asserted above. One block of <= 16 rows: the lane scratch holds its normalised
    // probabilities afterwards (query r of key j at [j][r], both kernels).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        if isa() == Isa::V4 {
            run_qlanes(q, ldq, kv, ldkv, v_off, key_rows, no, ni, dh, &mut [], ctx, ldc, |pt| qlanes::accumulate_lanes(pt, acc, first))
        } else {
            run_qlanes_avx2(q, ldq, kv, ldkv, v_off, key_rows, no, ni, dh, &mut [], ctx, ldc, |pt| {
                qlanes_avx2::accumulate_lanes(pt, acc, first)
            })
        }
    };
}

/// Query row `r` of [`attention_head_accumulate`]'s lane-major head sum as the head mean:
/// `dst[j] = acc[16 j + r] / heads` for `j < dst.len()` (IEEE division, so the bits of
/// [`reduce_heads_row`]'s mean). AVX-512 gathers where the CPU has them, else scalar.
///
/// Panics: `r >= 16` or `acc.len() < 16 dst.len()`.
pub fn lane_row_mean(acc: &[f64], r: usize, heads: f64, dst: &mut [f64]) {
    assert!(
        r < 16 && acc.len() >= 16 * dst.len(),
        "lane_row_mean: row {r} of a lane scratch of {} values for {} keys",
        acc.len(),
        dst.len()
    );
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::V4 {
        // SAFETY: AVX-512F checked (V4); bounds asserted above.
        unsafe { qlanes::lane_row_mean(acc, r, heads, dst) };
        return;
    }
    for (j, o) in dst.iter_mut().enumerate() {
        *o = acc[16 * j + r] / heads;
    }
}

/// The bounds every attention kernel relies on: `no` query rows of `dh` values at stride `ldq`,
/// `ni` key rows (gathered through `key_rows`) with K at 0 and V at `v_off`, stride `ldkv`.
#[allow(clippy::too_many_arguments)]
pub(super) fn assert_head_bounds(
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
pub(super) unsafe fn run_qlanes(
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
    with_lane_scratch(ni, |p| {
        // SAFETY: as this function's contract.
        unsafe {
            match (dh, softmax_exp() == SoftmaxExp::Fast) {
                (8, true) => qlanes::attention::<8, true>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (16, true) => qlanes::attention::<16, true>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (32, true) => qlanes::attention::<32, true>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (_, true) => qlanes::attention::<64, true>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (8, false) => qlanes::attention::<8, false>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (16, false) => qlanes::attention::<16, false>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (32, false) => qlanes::attention::<32, false>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (_, false) => qlanes::attention::<64, false>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
            }
        }
        then(p);
    });
}

/// `f` on this thread's query-lane scratch (`ni` blocks of 16 lanes; reused across calls, grown
/// when short), shared by the AVX-512 and AVX2 query-lane kernels.
#[cfg(target_arch = "x86_64")]
fn with_lane_scratch(ni: usize, f: impl FnOnce(&mut [[f32; 16]])) {
    let mut pt = QLANE_SCRATCH.with(|s| s.take());
    if pt.len() < ni {
        pt.resize(ni, [0.0; 16]);
    }
    f(&mut pt[..ni]);
    QLANE_SCRATCH.with(|s| s.replace(pt));
}

/// Query vectors per block of the AVX2 query-lane kernel (`8 G` queries) and output columns
/// per P·V pass. Measured on Zen 3 (attn_probe, thread CPU time, 3 interleaved rounds, busy
/// machine): 16 queries x 4 columns fastest or within noise of the fastest at n = 26, 128, 256
/// and dh = 8, 32 (e.g. n 128 dh 32: 61 µs against 69 for 16 x 2, 72 for 8 x 4, 87 for 8 x 8).
#[cfg(target_arch = "x86_64")]
const AVX2_GROUPS: usize = 2;
#[cfg(target_arch = "x86_64")]
const AVX2_PV_COLS: usize = 4;

/// The AVX2 query-lane kernel (`qlanes_avx2`) for head size `dh` (8/16/32/64) with this
/// thread's lane scratch, then `then` on that scratch (`ni` keys of 16 queries, the last
/// block's normalised probabilities, query `r` of key `j` at `[j][r]`).
///
/// # Safety
/// AVX2 and FMA must be available; the bounds of [`assert_head_bounds`] and of `ctx` as in
/// [`attention_head`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_qlanes_avx2(
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
    use qlanes_avx2::attention as a;
    with_lane_scratch(ni, |pt| {
        let p = pt.as_flattened_mut();
        const G: usize = AVX2_GROUPS;
        const C: usize = AVX2_PV_COLS;
        // SAFETY: as this function's contract.
        unsafe {
            match (dh, softmax_exp() == SoftmaxExp::Fast) {
                (8, true) => a::<8, true, G, C>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (16, true) => a::<16, true, G, C>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (32, true) => a::<32, true, G, C>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (_, true) => a::<64, true, G, C>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (8, false) => a::<8, false, G, C>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (16, false) => a::<16, false, G, C>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (32, false) => a::<32, false, G, C>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
                (_, false) => a::<64, false, G, C>(q, ldq, kv, ldkv, v_off, key_rows, no, ni, probs, ctx, ldc, p),
            }
        }
        then(pt);
    });
}

#[inline(always)]
pub(super) fn reduce_heads_row_imp(probs: &[f32], head_stride: usize, h: usize, max: bool, out: &mut [f64]) {
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
dispatch!(pub(super) fn reduce_heads_row_dispatch(probs: &[f32], head_stride: usize, h: usize, max: bool, out: &mut [f64]) => reduce_heads_row_imp);

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
