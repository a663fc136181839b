//! The float type of the native trainer's mask code: `f32` in training, `f64` in the
//! finite-difference checks of dL/dθ (`tests/native_concrete.rs`, `tests/native_ltp.rs`). The
//! concrete-mask generator ([`super::concrete_masks`]), the renormalisation of section 4.3
//! ([`super::masks`]) and the LTP masks ([`super::ltp`]) are generic over it; for `f32` each
//! operation is the plain `f32` one, so the trainer's bits do not depend on the generics, except
//! the two row kernels of concrete masking's standardised-score CDF (`standardize_cdf_add`,
//! `cdf_backward_row`), which run the vectorised approximations of `Φ` and `exp` in f32.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// The float operations the generic mask code needs (implemented for `f32` and `f64`).
pub trait Real:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + Sum
{
    /// `x` rounded to this type.
    fn of(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn erf(self) -> Self;

    /// Concrete masking's step 1 on one score row (ALGORITHM.md section 4, step 1): `z[j] = (row[j] −
    /// mean) / a`, `u[j] += Φ(z[j])`. `f64`: `Φ` through `erf`; `f32`: the vectorised
    /// [`crate::kernels::standardize_cdf_add`].
    fn standardize_cdf_add(row: &[Self], mean: Self, a: Self, z: &mut [Self], u: &mut [Self]) {
        let (one, half) = (Self::of(1.0), Self::of(0.5));
        let inv_sqrt2 = Self::of(std::f64::consts::FRAC_1_SQRT_2);
        for ((o, zz), &v) in u.iter_mut().zip(z.iter_mut()).zip(row) {
            let zv = (v - mean) / a;
            *zz = zv;
            *o += ((zv * inv_sqrt2).erf() + one) * half;
        }
    }

    /// Its backward on one row, averaged over `heads`: `dz[j] = du[j] / heads · φ(z[j])`; returns
    /// `Σ_j −dz[j]·z[j] / a`. `f32`: the vectorised [`crate::kernels::cdf_backward_row`].
    fn cdf_backward_row(du: &[Self], z: &[Self], heads: Self, a: Self, dz: &mut [Self]) -> Self {
        let pdf_c = Self::of(1.0 / (2.0 * std::f64::consts::PI).sqrt());
        let mut s = Self::of(0.0);
        for ((d, &g), &zz) in dz.iter_mut().zip(du).zip(z) {
            *d = g / heads * (pdf_c * (-(zz * zz) * Self::of(0.5)).exp());
            s += -(*d * zz) / a;
        }
        s
    }
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn erf(self) -> Self {
        libm::erff(self)
    }
    fn standardize_cdf_add(row: &[Self], mean: Self, a: Self, z: &mut [Self], u: &mut [Self]) {
        crate::kernels::standardize_cdf_add(row, mean, a, z, u)
    }
    fn cdf_backward_row(du: &[Self], z: &[Self], heads: Self, a: Self, dz: &mut [Self]) -> Self {
        crate::kernels::cdf_backward_row(du, z, heads, a, dz)
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
}
