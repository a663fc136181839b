//! Attention with AVX-512 for head sizes 8, 16, 32, 64, 16 queries in the 16 lanes.
//!
//! Why: at `dh = 8` (the f = 4 ApproxNet) the row-layout kernel spent most of its time in P·V
//! (one half vector, one scalar broadcast and bounds checks per query-key pair; perf at n = 128),
//! and at `dh = 32` (MiniLM) it ran at ~15 GFLOP/s (141 µs per head at n = 128, 18% of dense
//! samples). Here Qᵀ of a 16-query block is held in vectors, each key row is broadcast once per
//! block, softmax max/sum are lane-wise (no horizontal reductions), P·V accumulates 8 output
//! columns per pass as lane vectors, and the probabilities go out through 16x16 register
//! transposes (`benches/attn_probe.rs`: dh 8 25.6 -> ~18-26 µs incl. noise, dh 32 141 -> 45-64 µs).
//!
//! Bitwise the same results as the row-layout path (`attention_head_imp` with `softmax_imp` and
//! `pv_fixed`): the same FMA order over `dd` for scores; the softmax sum keeps the 16 partial sums
//! (key `j` in partial `j % 16` over whole chunks of 16, then the partials in order, then the
//! tail keys); the same exponential ([`exps`] = `exp_softmax`, or [`expn`] = `exp_approx` when
//! `SoftmaxExp::Cephes` is switched on) operation for operation; P·V keeps the even/odd key
//! accumulators.
//! Rows whose maximum is not finite are left as raw scores, as `softmax_imp` leaves them.

use std::arch::x86_64::*;

/// `erfc(|x| / √2) / 2` per lane of `[__m512; N]` (`super::erfc_pos`'s polynomial, the
/// reciprocal estimate + Newton step for the division), expanded in place: a function would
/// not be inlined into the `target_feature` callers (measured: 20% of the concrete planner in
/// the call).
macro_rules! half_erfc_abs_n {
    ($x:expr, $n:ident) => {{
        let x: [__m512; $n] = $x;
        let z: [__m512; $n] = std::array::from_fn(|j| _mm512_mul_ps(_mm512_abs_ps(x[j]), _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2)));
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
        let ki = _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(k[j], _mm512_set1_ps(12_582_912.0))), _mm512_set1_epi32(0x4B40_0000));
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(ki, _mm512_set1_epi32(127))));
        _mm512_mul_ps(y, scale)
    })
}

/// [`super::exp_softmax`] on `N` vectors of 16 lanes, the same bits: `x log2 e` rounded to
/// nearest by `vrndscaleps`, the same reduction and polynomial, and `2^k` by `vscalefps`
/// (13 operations instead of [`expn`]'s ~21). Steps interleaved over the `N` vectors as there.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(super) fn exps<const N: usize>(x: [__m512; N]) -> [__m512; N] {
    use super::softmax_exp::{EXP_POLY, LN2_HI, LN2_LO};
    let x: [__m512; N] = std::array::from_fn(|j| _mm512_min_ps(_mm512_set1_ps(88.7), _mm512_max_ps(_mm512_set1_ps(-87.3), x[j])));
    let k: [__m512; N] = std::array::from_fn(|j| {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x[j],
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ))
    });
    let r: [__m512; N] =
        std::array::from_fn(|j| _mm512_fmadd_ps(k[j], _mm512_set1_ps(-LN2_LO), _mm512_fmadd_ps(k[j], _mm512_set1_ps(-LN2_HI), x[j])));
    let mut p = [_mm512_set1_ps(EXP_POLY[5]); N];
    for &c in EXP_POLY[..5].iter().rev() {
        for j in 0..N {
            p[j] = _mm512_fmadd_ps(p[j], r[j], _mm512_set1_ps(c));
        }
    }
    std::array::from_fn(|j| _mm512_scalef_ps(_mm512_fmadd_ps(p[j], r[j], _mm512_set1_ps(1.0)), k[j]))
}

/// [`exps`] over a slice in place (four vectors per step, masked tail).
///
/// # Safety
/// AVX-512F/DQ must be available.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(super) unsafe fn exp_slice(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + 64 <= n {
        let e = exps::<4>(std::array::from_fn(|j| unsafe { _mm512_loadu_ps(p.add(i + 16 * j)) }));
        for (j, ej) in e.iter().enumerate() {
            unsafe { _mm512_storeu_ps(p.add(i + 16 * j), *ej) };
        }
        i += 64;
    }
    while i < n {
        let w = (n - i).min(16);
        let m: __mmask16 = if w == 16 { 0xFFFF } else { ((1u32 << w) - 1) as __mmask16 };
        unsafe { _mm512_mask_storeu_ps(p.add(i), m, exps::<1>([_mm512_maskz_loadu_ps(m, p.add(i))])[0]) };
        i += 16;
    }
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

/// `dst[j] = acc[16 j + r] / heads` for `j < dst.len()`: one query row out of the lane-major
/// head sum, eight keys per gather, IEEE division (the bits of the scalar form).
///
/// # Safety
/// AVX-512F must be available; `r < 16`, `acc.len() >= 16 * dst.len()`.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(super) unsafe fn lane_row_mean(acc: &[f64], r: usize, heads: f64, dst: &mut [f64]) {
    debug_assert!(r < 16 && acc.len() >= 16 * dst.len());
    let n = dst.len();
    let (a, o) = (acc.as_ptr(), dst.as_mut_ptr());
    let h = _mm512_set1_pd(heads);
    let lanes = _mm512_set_epi64(112, 96, 80, 64, 48, 32, 16, 0);
    let mut j = 0;
    while j + 8 <= n {
        // SAFETY: indices 16 (j + k) + r < 16 n <= acc.len() for k < 8; j + 8 <= n = dst.len().
        unsafe {
            let v = _mm512_i64gather_pd::<8>(lanes, a.add(16 * j + r));
            _mm512_storeu_pd(o.add(j), _mm512_div_pd(v, h));
        }
        j += 8;
    }
    if j < n {
        let m = ((1u32 << (n - j)) - 1) as __mmask8;
        // SAFETY: as above, lanes k < n - j only.
        unsafe {
            let v = _mm512_mask_i64gather_pd::<8>(_mm512_setzero_pd(), m, lanes, a.add(16 * j + r));
            _mm512_mask_storeu_pd(o.add(j), m, _mm512_div_pd(v, h));
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
pub(super) unsafe fn attention<const DH: usize, const FAST_EXP: bool>(
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
                let d: [__m512; 4] = std::array::from_fn(|j| _mm512_sub_ps(raw[j], mx));
                let e = if FAST_EXP { exps::<4>(d) } else { expn::<4>(d) };
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
            let d = [_mm512_sub_ps(raw, mx)];
            let e = _mm512_mask_blend_ps(finite, raw, if FAST_EXP { exps::<1>(d) } else { expn::<1>(d) }[0]);
            unsafe { _mm512_storeu_ps(p, e) };
            sum = _mm512_add_ps(sum, e);
        }
        let inv = _mm512_mask_blend_ps(finite, _mm512_set1_ps(1.0), _mm512_div_ps(_mm512_set1_ps(1.0), sum));
        // the probabilities e · inv (1 on rows left raw), normalised in place by the first P·V
        // pass as it reads them (one pass over the block's scratch instead of two)
        let prob = |j: usize, first: bool| unsafe {
            let p = ptp.add(j * 16);
            if first {
                let v = _mm512_mul_ps(_mm512_loadu_ps(p), inv);
                _mm512_storeu_ps(p, v);
                v
            } else {
                _mm512_loadu_ps(p)
            }
        };
        // P·V, 8 output columns per pass, with even/odd key accumulators (pv_fixed's order)
        for d0 in (0..DH).step_by(8) {
            let first = d0 == 0;
            let mut acc = [_mm512_setzero_ps(); 8];
            let mut acc2 = [_mm512_setzero_ps(); 8];
            for jj in 0..ni / 2 {
                let (j0, j1) = (2 * jj, 2 * jj + 1);
                let (v0, v1) = unsafe { (kvp.add(key(j0) * ldkv + v_off + d0), kvp.add(key(j1) * ldkv + v_off + d0)) };
                let (p0, p1) = (prob(j0, first), prob(j1, first));
                for dd in 0..8 {
                    acc[dd] = _mm512_fmadd_ps(p0, _mm512_set1_ps(unsafe { *v0.add(dd) }), acc[dd]);
                    acc2[dd] = _mm512_fmadd_ps(p1, _mm512_set1_ps(unsafe { *v1.add(dd) }), acc2[dd]);
                }
            }
            if ni % 2 == 1 {
                let j = ni - 1;
                let v = unsafe { kvp.add(key(j) * ldkv + v_off + d0) };
                let p = prob(j, first);
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
