//! Attention with AVX2 + FMA for head sizes 8, 16, 32, 64: the design of the AVX-512 kernel
//! (`qlanes`) on 8-lane vectors, `8 G` queries per block held in `G` vectors per value.
//!
//! Why: on AVX2-only CPUs (AMD Zen 3) the row-layout kernel (`attention_head_imp`) ran at
//! ~29 GFLOP/s and was 15% of the int8 teacher's samples at T128 b32 (perf). Here Qᵀ of a query
//! block is held in lane vectors, each key value is broadcast once per block (and shared by the
//! `G` vectors), softmax max/sum are lane-wise (no horizontal reductions), P·V accumulates a few
//! output columns per pass as lane vectors, and the probabilities go out through 8x8 register
//! transposes. Measured (docs/results/attn_avx2_ab.txt, interleaved A/B on Zen 3, thread CPU
//! time, `benches/attn_probe.rs`): per head 1.5-2.7x faster than the row layout (n 128 dh 32:
//! 90 -> 47 µs; n 128 dh 8: 42 -> 21 µs); the `sttabt bench` attention stage 1.4-2.7x faster
//! at T128/T256, fp32 and int8. 16 queries in two vectors with 4 P·V columns per pass measured
//! fastest of 8x4, 16x2, 16x4 and 8x8 (`AVX2_GROUPS` in `attention`).
//!
//! When a call has more than one query block, the head's keys and values are packed once
//! (`KV_PACK`: K as `[ni, DH]`, V per P·V pass and key parity as contiguous `[ni / 2, PVC]`
//! blocks), so that the inner loops read contiguous memory instead of one strided (or gathered)
//! row per key; a one-block call (the ABT head reduction's) reads the rows in place, as packing
//! them cost as much as the block (its ApproxNet pass 0.86-0.89x at length 256 batch 32 when
//! every call packed). P·V sums the even keys, then the odd keys, with one set of accumulators
//! live (the old loop kept both sets and spilled). Measured under `STTABT_NO_AVX512=1` on a Zen
//! 4 EPYC (the AVX2 code; attn_probe, 6 alternations of the old and new binary, min;
//! docs/results/attn_avx2_kv_pack_ab.txt): dh 32 1.26-1.32x at n 128/256, 1.07x at n 26; dh 8
//! 1.08-1.12x at n 128/256, 0.97x at n 26 (the packing costs more than it saves on 26 keys of 8
//! values). On Zen 3 in the twelfth session: dh 32 n 256 1.25x.
//!
//! Bitwise the same results as the row-layout path (`attention_head_imp` with `softmax_imp`
//! and `pv_fixed`), as `qlanes` is: the same FMA order over `dd` for scores; the softmax sum
//! keeps the 16 partial sums (key `j` in partial `j % 16` over whole chunks of 16, then the
//! partials in order, then the tail keys); the same exponential ([`exps`] = `exp_softmax`, or
//! [`expn`] = `exp_approx` under `SoftmaxExp::Cephes`) operation for operation; P·V keeps the
//! even/odd key accumulators. Rows whose maximum is not finite are left as raw scores, as
//! `softmax_imp` leaves them.

use std::arch::x86_64::*;

/// Keys whose scores are computed together (each `Qᵀ` vector load is shared by them).
const KEYS: usize = 4;

/// [`super::exp_approx`] on `M x G` vectors of 8 lanes, operation for operation (the clamp as
/// `f32::clamp` does it, NaN passing through); each step on all vectors before the next (one
/// exponential is a ~20-op dependency chain, see `qlanes::expn`).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn expn<const M: usize, const G: usize>(x: [[__m256; G]; M]) -> [[__m256; G]; M] {
    let x: [[__m256; G]; M] = std::array::from_fn(|u| {
        std::array::from_fn(|g| _mm256_min_ps(_mm256_set1_ps(88.7), _mm256_max_ps(_mm256_set1_ps(-87.3), x[u][g])))
    });
    let k: [[__m256; G]; M] = std::array::from_fn(|u| {
        std::array::from_fn(|g| {
            _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x[u][g], _mm256_set1_ps(std::f32::consts::LOG2_E)), _mm256_set1_ps(0.5)))
        })
    });
    let r: [[__m256; G]; M] = std::array::from_fn(|u| {
        std::array::from_fn(|g| {
            _mm256_fmadd_ps(k[u][g], _mm256_set1_ps(2.121_944_4e-4), _mm256_fmadd_ps(k[u][g], _mm256_set1_ps(-0.693_359_4), x[u][g]))
        })
    });
    let mut y = [[_mm256_set1_ps(1.987_569_1e-4); G]; M];
    for c in [1.398_199_9e-3f32, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
        for u in 0..M {
            for g in 0..G {
                y[u][g] = _mm256_fmadd_ps(y[u][g], r[u][g], _mm256_set1_ps(c));
            }
        }
    }
    std::array::from_fn(|u| {
        std::array::from_fn(|g| {
            let (y, r, k) = (y[u][g], r[u][g], k[u][g]);
            let y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(y, r), r, r), _mm256_set1_ps(1.0));
            let ki = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(k, _mm256_set1_ps(12_582_912.0))), _mm256_set1_epi32(0x4B40_0000));
            let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(ki, _mm256_set1_epi32(127))));
            _mm256_mul_ps(y, scale)
        })
    })
}

/// [`super::exp_softmax`] on `M x G` vectors of 8 lanes, operation for operation: `x log2 e`
/// rounded by adding and subtracting `1.5 · 2^23`, the same reduction and polynomial, and
/// `2^k` as the product of the two powers `2^(k >> 1)` and `2^(k − (k >> 1))` (AVX2 has no
/// `vscalefps`). Steps interleaved over the vectors as in [`expn`].
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exps<const M: usize, const G: usize>(x: [[__m256; G]; M]) -> [[__m256; G]; M] {
    use super::softmax_exp::{EXP_POLY, LN2_HI, LN2_LO, ROUND_SHIFT};
    let x: [[__m256; G]; M] = std::array::from_fn(|u| {
        std::array::from_fn(|g| _mm256_min_ps(_mm256_set1_ps(88.7), _mm256_max_ps(_mm256_set1_ps(-87.3), x[u][g])))
    });
    let t: [[__m256; G]; M] = std::array::from_fn(|u| {
        std::array::from_fn(|g| {
            _mm256_add_ps(_mm256_mul_ps(x[u][g], _mm256_set1_ps(std::f32::consts::LOG2_E)), _mm256_set1_ps(ROUND_SHIFT))
        })
    });
    let r: [[__m256; G]; M] = std::array::from_fn(|u| {
        std::array::from_fn(|g| {
            let k = _mm256_sub_ps(t[u][g], _mm256_set1_ps(ROUND_SHIFT));
            _mm256_fmadd_ps(k, _mm256_set1_ps(-LN2_LO), _mm256_fmadd_ps(k, _mm256_set1_ps(-LN2_HI), x[u][g]))
        })
    });
    let mut p = [[_mm256_set1_ps(EXP_POLY[5]); G]; M];
    for &c in EXP_POLY[..5].iter().rev() {
        for u in 0..M {
            for g in 0..G {
                p[u][g] = _mm256_fmadd_ps(p[u][g], r[u][g], _mm256_set1_ps(c));
            }
        }
    }
    std::array::from_fn(|u| {
        std::array::from_fn(|g| {
            let y = _mm256_fmadd_ps(p[u][g], r[u][g], _mm256_set1_ps(1.0));
            let ki = _mm256_sub_epi32(_mm256_castps_si256(t[u][g]), _mm256_set1_epi32(0x4B40_0000));
            let k1 = _mm256_srai_epi32::<1>(ki);
            let k2 = _mm256_sub_epi32(ki, k1);
            let pow2 = |e: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(e, _mm256_set1_epi32(127))));
            _mm256_mul_ps(_mm256_mul_ps(y, pow2(k1)), pow2(k2))
        })
    })
}

/// Transpose 8 rows of 8 lanes in place (`r[a]` lane `b` -> `r[b]` lane `a`).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn transpose8(r: &mut [__m256; 8]) {
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // u[4h + c]: column c (and c + 4) of rows 4h..4h+4
    let u: [__m256; 8] = std::array::from_fn(|i| {
        let (h, c) = (i / 4, i % 4);
        let (a, b) = (t[4 * h + c / 2], t[4 * h + c / 2 + 2]);
        if c % 2 == 0 {
            _mm256_shuffle_ps::<0x44>(a, b)
        } else {
            _mm256_shuffle_ps::<0xEE>(a, b)
        }
    });
    for c in 0..4 {
        r[c] = _mm256_permute2f128_ps::<0x20>(u[c], u[c + 4]);
        r[c + 4] = _mm256_permute2f128_ps::<0x31>(u[c], u[c + 4]);
    }
}

/// See the module comment; the arguments are those of `super::attention_head` (no key
/// weights); `pt`: lane-major scratch of at least `8 G ni` values (key `j`'s block scores at
/// `8 G j`); `PVC`: output columns per P·V pass (`DH % PVC == 0`).
///
/// # Safety
/// AVX2 and FMA must be available; `ctx` as in `attention_head`; the bounds `attention_head`
/// asserts must hold.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn attention<const DH: usize, const FAST_EXP: bool, const G: usize, const PVC: usize>(
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
    pt: &mut [f32],
) {
    let qb = 8 * G;
    debug_assert!(pt.len() >= qb * ni && (probs.is_empty() || probs.len() >= no * ni) && DH.is_multiple_of(PVC));
    let key = |j: usize| key_rows.map_or(j, |kr| kr[j]);
    // This head's keys and values, packed once per call when more than one query block shares
    // them: K as `[ni, DH]`, V as `DH / PVC` passes of `[ni, PVC]` per key parity, so that the
    // score and P·V loops read contiguous memory instead of one strided (and possibly gathered)
    // row per key. A call of one block (the ABT head reduction's, `attention_head_accumulate`)
    // reads the rows where they are: packing would copy as much as it computes.
    let packed = no > qb;
    let half = ni.div_ceil(2);
    let mut pack = KV_PACK.take();
    if packed {
        if pack.len() < ni * DH + 2 * half * DH {
            pack.resize(ni * DH + 2 * half * DH, 0.0);
        }
        let (kpk, vpk) = pack.split_at_mut(ni * DH);
        for j in 0..ni {
            let row = &kv[key(j) * ldkv..];
            kpk[j * DH..(j + 1) * DH].copy_from_slice(&row[..DH]);
            for d0 in (0..DH).step_by(PVC) {
                let at = ((d0 / PVC * 2 + j % 2) * half + j / 2) * PVC;
                vpk[at..at + PVC].copy_from_slice(&row[v_off + d0..v_off + d0 + PVC]);
            }
        }
    }
    let (kpp, kvp) = (pack.as_ptr(), kv.as_ptr());
    // key j's K row, and value row `2 jj + parity`'s columns d0 .. d0 + PVC
    let kaddr = |j: usize| unsafe {
        if packed {
            kpp.add(j * DH)
        } else {
            kvp.add(key(j) * ldkv)
        }
    };
    let vaddr = |d0: usize, parity: usize, jj: usize| unsafe {
        if packed {
            kpp.add(ni * DH + ((d0 / PVC * 2 + parity) * half + jj) * PVC)
        } else {
            kvp.add(key(2 * jj + parity) * ldkv + v_off + d0)
        }
    };
    let ptp = pt.as_mut_ptr();
    let full = ni / 16 * 16;
    let exp = |d: [[__m256; G]; KEYS]| if FAST_EXP { exps::<KEYS, G>(d) } else { expn::<KEYS, G>(d) };
    let exp1 = |d: [[__m256; G]; 1]| if FAST_EXP { exps::<1, G>(d) } else { expn::<1, G>(d) };
    let mut i0 = 0;
    while i0 < no {
        let nq = (no - i0).min(qb);
        // Qᵀ of the block: qs[dd][g] lane l = q[i0 + 8g + l][dd] (0 past the last row)
        let mut qs = [[[0.0f32; 8]; G]; DH];
        for l in 0..nq {
            let r = &q[(i0 + l) * ldq..(i0 + l) * ldq + DH];
            for dd in 0..DH {
                qs[dd][l / 8][l % 8] = r[dd];
            }
        }
        // scores (KEYS keys at a time, each summed over dd in order) and the lane-wise maximum
        let mut mx = [_mm256_set1_ps(f32::NEG_INFINITY); G];
        let mut j = 0;
        while j < ni {
            let nk = (ni - j).min(KEYS);
            if nk == KEYS {
                let kp: [*const f32; KEYS] = std::array::from_fn(|u| kaddr(j + u));
                let mut s = [[_mm256_setzero_ps(); G]; KEYS];
                for (dd, qd) in qs.iter().enumerate() {
                    let qv: [__m256; G] = std::array::from_fn(|g| unsafe { _mm256_loadu_ps(qd[g].as_ptr()) });
                    for u in 0..KEYS {
                        let b = _mm256_set1_ps(unsafe { *kp[u].add(dd) });
                        for g in 0..G {
                            s[u][g] = _mm256_fmadd_ps(qv[g], b, s[u][g]);
                        }
                    }
                }
                for (u, su) in s.iter().enumerate() {
                    for g in 0..G {
                        mx[g] = _mm256_max_ps(su[g], mx[g]); // NaN scores are skipped, as f32::max does
                        unsafe { _mm256_storeu_ps(ptp.add((j + u) * qb + 8 * g), su[g]) };
                    }
                }
            } else {
                for u in 0..nk {
                    let kp = kaddr(j + u);
                    let mut s = [_mm256_setzero_ps(); G];
                    for (dd, qd) in qs.iter().enumerate() {
                        let b = _mm256_set1_ps(unsafe { *kp.add(dd) });
                        for g in 0..G {
                            s[g] = _mm256_fmadd_ps(_mm256_loadu_ps(qd[g].as_ptr()), b, s[g]);
                        }
                    }
                    for g in 0..G {
                        mx[g] = _mm256_max_ps(s[g], mx[g]);
                        unsafe { _mm256_storeu_ps(ptp.add((j + u) * qb + 8 * g), s[g]) };
                    }
                }
            }
            j += nk;
        }
        let finite: [__m256; G] = std::array::from_fn(|g| {
            _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(_mm256_set1_ps(-0.0), mx[g]), _mm256_set1_ps(f32::INFINITY))
        });
        // exponentials and their sum in softmax_imp's order
        let mut part = [[_mm256_setzero_ps(); G]; 16];
        for jb in (0..full).step_by(16) {
            for k0 in (0..16).step_by(KEYS) {
                let p = unsafe { ptp.add((jb + k0) * qb) };
                let raw: [[__m256; G]; KEYS] =
                    std::array::from_fn(|u| std::array::from_fn(|g| unsafe { _mm256_loadu_ps(p.add(u * qb + 8 * g)) }));
                let e = exp(std::array::from_fn(|u| std::array::from_fn(|g| _mm256_sub_ps(raw[u][g], mx[g]))));
                for u in 0..KEYS {
                    for g in 0..G {
                        let e = _mm256_blendv_ps(raw[u][g], e[u][g], finite[g]);
                        unsafe { _mm256_storeu_ps(p.add(u * qb + 8 * g), e) };
                        part[k0 + u][g] = _mm256_add_ps(part[k0 + u][g], e);
                    }
                }
            }
        }
        let mut sum = [_mm256_setzero_ps(); G];
        for pk in part {
            for g in 0..G {
                sum[g] = _mm256_add_ps(sum[g], pk[g]);
            }
        }
        for j in full..ni {
            let p = unsafe { ptp.add(j * qb) };
            let raw: [__m256; G] = std::array::from_fn(|g| unsafe { _mm256_loadu_ps(p.add(8 * g)) });
            let e = exp1([std::array::from_fn(|g| _mm256_sub_ps(raw[g], mx[g]))])[0];
            for g in 0..G {
                let e = _mm256_blendv_ps(raw[g], e[g], finite[g]);
                unsafe { _mm256_storeu_ps(p.add(8 * g), e) };
                sum[g] = _mm256_add_ps(sum[g], e);
            }
        }
        let inv: [__m256; G] =
            std::array::from_fn(|g| _mm256_blendv_ps(_mm256_set1_ps(1.0), _mm256_div_ps(_mm256_set1_ps(1.0), sum[g]), finite[g]));
        // the probabilities e · inv (1 on rows left raw), normalised in place by the first P·V
        // pass as it reads them (one pass over the block's scratch instead of two)
        let prob = |j: usize, first: bool| -> [__m256; G] {
            std::array::from_fn(|g| unsafe {
                let p = ptp.add(j * qb + 8 * g);
                if first {
                    let v = _mm256_mul_ps(_mm256_loadu_ps(p), inv[g]);
                    _mm256_storeu_ps(p, v);
                    v
                } else {
                    _mm256_loadu_ps(p)
                }
            })
        };
        // P·V, PVC output columns per pass, with even/odd key accumulators (pv_fixed's order):
        // the even keys' sum, then the odd keys' (each in key order, as before), so that only
        // one set of `PVC x G` accumulators is live (with two sets live, some spilled)
        for d0 in (0..DH).step_by(PVC) {
            let first = d0 == 0;
            let sums: [[[__m256; G]; PVC]; 2] = std::array::from_fn(|parity| {
                let mut acc = [[_mm256_setzero_ps(); G]; PVC];
                for jj in 0..(ni + 1 - parity) / 2 {
                    let j = 2 * jj + parity;
                    let v = vaddr(d0, parity, jj);
                    let p = prob(j, first);
                    for dd in 0..PVC {
                        let b = _mm256_set1_ps(unsafe { *v.add(dd) });
                        for g in 0..G {
                            acc[dd][g] = _mm256_fmadd_ps(p[g], b, acc[dd][g]);
                        }
                    }
                }
                acc
            });
            let (acc, acc2) = (sums[0], sums[1]);
            let mut cs = [[[0.0f32; 8]; G]; PVC];
            for dd in 0..PVC {
                for g in 0..G {
                    unsafe { _mm256_storeu_ps(cs[dd][g].as_mut_ptr(), _mm256_add_ps(acc[dd][g], acc2[dd][g])) };
                }
            }
            for l in 0..nq {
                // SAFETY: the caller guarantees `ctx` row i0 + l has `DH` writable elements.
                let out = unsafe { std::slice::from_raw_parts_mut(ctx.add((i0 + l) * ldc + d0), PVC) };
                for (dd, o) in out.iter_mut().enumerate() {
                    *o = cs[dd][l / 8][l % 8];
                }
            }
        }
        // probabilities, row-major [no, ni]: 8x8 transposes (when wanted)
        if !probs.is_empty() {
            let pr = unsafe { probs.as_mut_ptr().add(i0 * ni) };
            for g in 0..G.min(nq.div_ceil(8)) {
                let rows = (nq - 8 * g).min(8);
                for jb in (0..ni).step_by(8) {
                    let w = (ni - jb).min(8);
                    let mut r = [_mm256_setzero_ps(); 8];
                    for (k, rk) in r.iter_mut().enumerate().take(w) {
                        *rk = unsafe { _mm256_loadu_ps(ptp.add((jb + k) * qb + 8 * g)) };
                    }
                    transpose8(&mut r);
                    let dst = |l: usize| unsafe { pr.add((8 * g + l) * ni + jb) };
                    if w == 8 {
                        for (l, rl) in r.iter().enumerate().take(rows) {
                            unsafe { _mm256_storeu_ps(dst(l), *rl) };
                        }
                    } else {
                        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(w as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                        for (l, rl) in r.iter().enumerate().take(rows) {
                            unsafe { _mm256_maskstore_ps(dst(l), mask, *rl) };
                        }
                    }
                }
            }
        }
        i0 += qb;
    }
    KV_PACK.set(pack);
}

thread_local! {
    /// [`attention`]'s packed keys and values, reused across calls.
    static KV_PACK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `acc[16 j + l] = f64(pt[j][l])` (`first`) or `+= f64(pt[j][l])`: one head's lane-major
/// probabilities (16 queries per key, the layout [`attention`] leaves with `G = 2`) added to
/// the head reduction in `reduce_heads_row`'s arithmetic (f32 -> f64 is exact; one f64 add
/// per head, heads in call order), as `qlanes::accumulate_lanes` on 4-lane f64 vectors.
///
/// # Safety
/// AVX2 must be available; `acc.len() >= 16 * pt.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn accumulate_lanes(pt: &[[f32; 16]], acc: &mut [f64], first: bool) {
    debug_assert!(acc.len() >= 16 * pt.len());
    let a = acc.as_mut_ptr();
    for (j, p) in pt.iter().enumerate() {
        for h in 0..2 {
            // SAFETY: 8 values at 8 h of `p`; 8 f64 at 16 j + 8 h of `acc` (asserted length).
            unsafe {
                let v = _mm256_loadu_ps(p.as_ptr().add(8 * h));
                let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
                let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
                let (al, ah) = (a.add(16 * j + 8 * h), a.add(16 * j + 8 * h + 4));
                if first {
                    _mm256_storeu_pd(al, lo);
                    _mm256_storeu_pd(ah, hi);
                } else {
                    _mm256_storeu_pd(al, _mm256_add_pd(_mm256_loadu_pd(al), lo));
                    _mm256_storeu_pd(ah, _mm256_add_pd(_mm256_loadu_pd(ah), hi));
                }
            }
        }
    }
}
