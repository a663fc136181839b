//! Bias and activation kernels: GELU (exact erf form, vectorised), GELU-tanh, ReLU.

use serde::{Deserialize, Serialize};

use super::*;

/// Activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (HF `gelu`).
    Gelu,
    /// The tanh approximation (HF `gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// ReLU.
    Relu,
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

#[inline(always)]
pub(super) fn bias_act_imp(x: &mut [f32], bias: &[f32], act: u8) {
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
dispatch!(pub(super) fn bias_act_dispatch(x: &mut [f32], bias: &[f32], act: u8) => bias_act_imp);

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
pub(super) fn gelu_imp(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_approx(*v);
    }
}
dispatch!(pub(super) fn gelu_dispatch(x: &mut [f32]) => gelu_imp);
