//! Branch-free f32 approximations of `exp`, `ln`, `erfc` and the normal CDF `Φ`, and the
//! vectorised row kernels built on them (clamped `ln`, standardised-score CDF of ALGORITHM.md
//! section 4 step 1, finiteness check).

use super::*;

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
pub(super) fn erfc_pos(z: f32) -> f32 {
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

/// [`gelu_approx`] on the 8 lanes of `x` with AVX2 and FMA: the scalar function's operations in
/// its order (the same divisions, products, fused multiply-adds, clamp, floor and bit tricks), so
/// every lane is bit-identical to `gelu_approx` of that value, NaN and infinities included. For
/// epilogues that apply GELU in registers before the store.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn gelu_approx_v8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let s = _mm256_set1_ps;
    let z = _mm256_mul_ps(_mm256_andnot_ps(s(-0.0), x), s(std::f32::consts::FRAC_1_SQRT_2));
    // erfc_pos(z)
    let t = _mm256_div_ps(s(1.0), _mm256_add_ps(s(1.0), _mm256_mul_ps(s(0.5), z)));
    let mut p = s(0.170_872_77);
    for c in [-0.822_152_23, 1.488_515_9, -1.135_203_98, 0.278_868_07, -0.186_288_06, 0.096_784_18, 0.374_091_96, 1.000_023_7, -1.265_512_2]
    {
        p = _mm256_fmadd_ps(p, t, s(c));
    }
    let e = _mm256_fmadd_ps(_mm256_xor_ps(z, s(-0.0)), z, p);
    // exp_approx(e): clamp (a NaN passes, as in `f32::clamp`), then the same polynomial
    let e = _mm256_min_ps(s(88.7), _mm256_max_ps(s(-87.3), e));
    let k = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(e, s(std::f32::consts::LOG2_E)), s(0.5)));
    let r = _mm256_fmadd_ps(k, s(2.121_944_4e-4), _mm256_fmadd_ps(k, s(-0.693_359_4), e));
    let mut y = s(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
        y = _mm256_fmadd_ps(y, r, s(c));
    }
    let y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(y, r), r, r), s(1.0));
    let ki = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(k, s(12_582_912.0))), _mm256_set1_epi32(0x4B40_0000));
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(ki, _mm256_set1_epi32(127))));
    let half_erfc = _mm256_mul_ps(s(0.5), _mm256_mul_ps(t, _mm256_mul_ps(y, scale)));
    // x >= 0: x - x · half_erfc, else (NaN too) x · half_erfc
    let neg = _mm256_mul_ps(x, half_erfc);
    _mm256_blendv_ps(neg, _mm256_sub_ps(x, neg), _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_setzero_ps()))
}

#[cfg(test)]
mod approx_tests {

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn gelu_approx_v8_bit_identical_to_scalar() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            // no AVX2 on this CPU: nothing calls the function; the scalar path is tested above
            assert!(!crate::kernels::int8::avx2::available());
            return;
        }
        let mut x: Vec<f32> = (-80_000..80_000).map(|i| i as f32 * 1.3e-4).collect();
        x.extend([-1e30, -87.0, -20.0, -9.0, -1e-30, 0.0, -0.0, 1e-30, 9.0, 20.0, 1e30, f32::MAX, f32::MIN, f32::MIN_POSITIVE]);
        x.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN, 1e-45, -1e-45, 130.0, -130.0]);
        let mut rng = fastrand::Rng::with_seed(7);
        x.extend((0..50_000).map(|_| f32::from_bits(rng.u32(..))));
        x.resize(x.len().next_multiple_of(8), 1.0);
        for c in x.chunks_exact(8) {
            let mut got = [0.0f32; 8];
            // SAFETY: AVX2 and FMA checked above; `c` and `got` hold 8 values.
            unsafe {
                use std::arch::x86_64::*;
                _mm256_storeu_ps(got.as_mut_ptr(), super::gelu_approx_v8(_mm256_loadu_ps(c.as_ptr())));
            }
            for (&v, &g) in c.iter().zip(&got) {
                let want = super::gelu_approx(v);
                assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "gelu_approx_v8({v:e}) = {g:e}, scalar {want:e}");
            }
        }
    }
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
pub(super) fn ln_clamped_imp(p: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(p) {
        *o = ln_approx(v.max(1e-37));
    }
}
dispatch!(pub(super) fn ln_clamped_dispatch(p: &[f32], out: &mut [f32]) => ln_clamped_imp);

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
pub(super) fn standardized_cdf_row_imp(x: &[f32], ddof: usize, eps: f64, u: &mut [f64]) {
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
pub(super) fn all_finite_imp(x: &[f32]) -> bool {
    x.iter().fold(true, |acc, v| acc & v.is_finite())
}
dispatch!(pub(super) fn all_finite_dispatch(x: &[f32]) -> bool => all_finite_imp);

/// Whether every value of `x` is finite (vectorised, no early exit).
pub fn all_finite(x: &[f32]) -> bool {
    all_finite_dispatch(x)
}
dispatch!(pub(super) fn standardized_cdf_row_dispatch(x: &[f32], ddof: usize, eps: f64, u: &mut [f64]) => standardized_cdf_row_imp);

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

#[inline(always)]
fn standardize_cdf_add_imp(row: &[f32], mean: f32, a: f32, z: &mut [f32], u: &mut [f32]) {
    for ((o, zz), &v) in u.iter_mut().zip(z.iter_mut()).zip(row) {
        let zv = (v - mean) / a;
        *zz = zv;
        *o += normal_cdf_approx(zv);
    }
}
dispatch!(fn standardize_cdf_add_dispatch(row: &[f32], mean: f32, a: f32, z: &mut [f32], u: &mut [f32]) => standardize_cdf_add_imp);

/// The native concrete trainer's step 1 on one score row (ALGORITHM.md section 4, step 1; f32):
/// `z[j] = (row[j] − mean) / a` and `u[j] += Φ(z[j])` ([`normal_cdf_approx`], absolute error
/// below ~2e-7), vectorised. All four slices have the row's length.
///
/// Panics if the lengths differ.
pub fn standardize_cdf_add(row: &[f32], mean: f32, a: f32, z: &mut [f32], u: &mut [f32]) {
    assert!(z.len() == row.len() && u.len() == row.len(), "standardize_cdf_add: row {}, z {}, u {}", row.len(), z.len(), u.len());
    standardize_cdf_add_dispatch(row, mean, a, z, u)
}

#[inline(always)]
fn cdf_backward_imp(du: &[f32], z: &[f32], heads: f32, a: f32, dz: &mut [f32]) -> f32 {
    let pdf_c = (1.0 / (2.0 * std::f64::consts::PI).sqrt()) as f32;
    for ((d, &g), &zz) in dz.iter_mut().zip(du).zip(z) {
        *d = g / heads * (pdf_c * exp_approx(-(zz * zz) * 0.5));
    }
    // Σ −dz·z / a in 8 partial sums (vectorised)
    let mut acc = [0.0f32; 8];
    let (dc, zc) = (dz.chunks_exact(8), z.chunks_exact(8));
    let (dt, zt) = (dc.remainder(), zc.remainder());
    for (d8, z8) in dc.zip(zc) {
        for k in 0..8 {
            acc[k] += -(d8[k] * z8[k]) / a;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (&d, &zz) in dt.iter().zip(zt) {
        s += -(d * zz) / a;
    }
    s
}
dispatch!(fn cdf_backward_dispatch(du: &[f32], z: &[f32], heads: f32, a: f32, dz: &mut [f32]) -> f32 => cdf_backward_imp);

/// The backward of [`standardize_cdf_add`] averaged over `heads` heads, on one row: `dz[j] =
/// du[j] / heads · φ(z[j])` (φ the standard normal density, through [`exp_approx`]) and the
/// return value `Σ_j −dz[j]·z[j] / a` (the row's dL/d std, before the variance chain), in 8
/// partial sums. All slices have the row's length.
///
/// Panics if the lengths differ.
pub fn cdf_backward_row(du: &[f32], z: &[f32], heads: f32, a: f32, dz: &mut [f32]) -> f32 {
    assert!(z.len() == du.len() && dz.len() == du.len(), "cdf_backward_row: du {}, z {}, dz {}", du.len(), z.len(), dz.len());
    cdf_backward_dispatch(du, z, heads, a, dz)
}
