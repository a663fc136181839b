//! Concrete masking math, ALGORITHM.md section 4 steps 1, 2 and 4 (pure numbers, no training),
//! with the choices of `reference/README.md` section 2.3 (rules 7–12).
//!
//! Step 1 ([`standardized_cdf_scores`]) turns ApproxNet pre-softmax scores into `U^l[i, j]`;
//! step 2 ([`concrete_masks`]) back-tracks soft masks `m^l` from CLS with learned per-layer
//! thresholds `θ_l`; step 4 rounds them (`m^l_j >= 0.5`) into a hard [`TokenPlan`].

use serde::Serialize;

use crate::error::ModelError;
use crate::model::{EncodedInput, Encoder};
use crate::plan::{PlanError, TokenPlan};
use crate::planners::{Cost, Models, PlanTiming, Planner, Schedule};

/// Invalid concrete-masking input.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ConcreteError {
    /// `layers`, `heads` or `t` is 0.
    #[error("layers, heads and t must be >= 1 (got layers {layers}, heads {heads}, t {t})")]
    EmptyShape {
        /// Layers given.
        layers: usize,
        /// Heads given (1 for [`concrete_masks`]).
        heads: usize,
        /// Padded length given.
        t: usize,
    },
    /// `n` is 0 or larger than `t`.
    #[error("number of real tokens n = {n} must be in 1..=t (t = {t})")]
    BadTokenCount {
        /// Real tokens.
        n: usize,
        /// Padded length.
        t: usize,
    },
    /// An input slice has the wrong length.
    #[error("{what} has {got} values, expected {expected}")]
    Length {
        /// Which input.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// `n <= ddof`: the standard deviation is undefined.
    #[error("ddof = {ddof} needs more than {ddof} real tokens (n = {n})")]
    BadDdof {
        /// Delta degrees of freedom.
        ddof: usize,
        /// Real tokens.
        n: usize,
    },
    /// A scalar parameter is out of its range.
    #[error("parameter {name} = {value} is out of range ({range})")]
    BadParam {
        /// Parameter name.
        name: &'static str,
        /// Value given.
        value: f64,
        /// Allowed range, in words.
        range: &'static str,
    },
    /// A value in a read region of the input is NaN or infinite.
    #[error("{what} contains a non-finite value at flat index {index}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Flat index.
        index: usize,
    },
    /// All real-token scores `ŝ` of a layer are `<= 0`, so `ŝ / max ŝ` is undefined.
    #[error("layer {layer}: no positive score s_hat among real tokens")]
    DegenerateScores {
        /// Layer number `l` (1-based).
        layer: usize,
    },
    /// The hard plan failed validation (should not happen for valid inputs).
    #[error("internal: produced an invalid plan: {0}")]
    Plan(#[from] PlanError),
}

/// Complementary error function `erfc(x)`, accurate to about 1e-15 (absolute; relative for
/// `x >= 2.5`). Series `erf(x) = 2/√π e^{-x²} Σ 2^k x^{2k+1} / (2k+1)!!` (all terms positive)
/// for `|x| < 2.5`, Laplace continued fraction beyond.
pub fn erfc(x: f64) -> f64 {
    const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        let x2 = x * x;
        let (mut term, mut sum) = (x, x);
        let mut k = 0.0;
        while term > 1e-17 * sum {
            k += 1.0;
            term *= 2.0 * x2 / (2.0 * k + 1.0);
            sum += term;
        }
        return 1.0 - FRAC_2_SQRT_PI * (-x2).exp() * sum;
    }
    if x > 27.3 {
        return 0.0; // below the smallest subnormal
    }
    // erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated bottom-up.
    let mut f = x;
    for k in (1..=120).rev() {
        f = x + 0.5 * k as f64 / f;
    }
    0.5 * FRAC_2_SQRT_PI * (-x * x).exp() / f
}

/// Standard normal CDF `Φ(z) = erfc(−z/√2) / 2`.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z * std::f64::consts::FRAC_1_SQRT_2)
}

fn check_finite(what: &'static str, values: impl Iterator<Item = (usize, f64)>) -> Result<(), ConcreteError> {
    for (index, v) in values {
        if !v.is_finite() {
            return Err(ConcreteError::NonFinite { what, index });
        }
    }
    Ok(())
}

fn check_shape(layers: usize, heads: usize, t: usize, n: usize) -> Result<(), ConcreteError> {
    if layers == 0 || heads == 0 || t == 0 {
        return Err(ConcreteError::EmptyShape { layers, heads, t });
    }
    if n == 0 || n > t {
        return Err(ConcreteError::BadTokenCount { n, t });
    }
    Ok(())
}

/// Shape and parameter checks shared by [`standardized_cdf_scores`] and
/// [`standardized_cdf_scores_fast`].
fn check_score_args(len: usize, layers: usize, heads: usize, t: usize, n: usize, ddof: usize, eps: f64) -> Result<(), ConcreteError> {
    check_shape(layers, heads, t, n)?;
    let expected = layers * heads * t * t;
    if len != expected {
        return Err(ConcreteError::Length { what: "scores", expected, got: len });
    }
    if n <= ddof {
        return Err(ConcreteError::BadDdof { ddof, n });
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(ConcreteError::BadParam { name: "eps", value: eps, range: "finite, >= 0" });
    }
    Ok(())
}

/// Section 4 step 1: `U^l[i, j] = mean_h Φ(Z_h[i, j])` with
/// `Z = (S − mean) / (std + eps)` per (layer, head, query row) over the **real keys** `j < n`,
/// `std` with `ddof` delta degrees of freedom (0 = population std, normative; 1 = torch's
/// default). Padding query rows are computed like the others; padding-key columns are 0 and
/// their input values are never read.
///
/// `scores`: ApproxNet pre-softmax scores, row-major `[L, H, T, T]` (layer `l-1`, head, query,
/// key). Returns `U` row-major `[L, T, T]` in f64. Paper/reference: `ddof = 0`, `eps = 1e-6`.
///
/// Errors: [`ConcreteError`] for shape mismatches, `n ∉ 1..=t`, `n <= ddof`, `eps` not finite
/// and `>= 0`, or non-finite scores among the real keys.
pub fn standardized_cdf_scores(
    scores: &[f32],
    layers: usize,
    heads: usize,
    t: usize,
    n: usize,
    ddof: usize,
    eps: f64,
) -> Result<Vec<f64>, ConcreteError> {
    check_score_args(scores.len(), layers, heads, t, n, ddof, eps)?;
    let mut u = vec![0.0f64; layers * t * t];
    for l in 0..layers {
        for h in 0..heads {
            for i in 0..t {
                let base = ((l * heads + h) * t + i) * t;
                let row = &scores[base..base + n];
                check_finite("scores", row.iter().enumerate().map(|(j, &x)| (base + j, f64::from(x))))?;
                let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
                let var = row.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / (n - ddof) as f64;
                let denom = var.sqrt() + eps;
                let out = &mut u[(l * t + i) * t..][..n];
                for (o, &x) in out.iter_mut().zip(row) {
                    *o += normal_cdf((f64::from(x) - mean) / denom);
                }
            }
        }
    }
    let inv_h = 1.0 / heads as f64;
    u.iter_mut().for_each(|x| *x *= inv_h);
    Ok(u)
}

/// [`standardized_cdf_scores`] for inference: the same inputs, checks and errors, with `Φ` in
/// f32 (`kernels::standardized_cdf_row`: f64 row statistics, `z` rounded to f32, Numerical
/// Recipes `erfc`) instead of the f64 series, vectorised and split over layers. Each `U` entry is
/// within ~2.5e-7 (absolute) of [`standardized_cdf_scores`]; on the reference vectors (U to
/// 1e-6) the hard sets are the same (tested). A hard mask can only differ for a token whose mask
/// logit `θ_l + logit(s_j)` is within that error of 0.
pub fn standardized_cdf_scores_fast(
    scores: &[f32],
    layers: usize,
    heads: usize,
    t: usize,
    n: usize,
    ddof: usize,
    eps: f64,
) -> Result<Vec<f64>, ConcreteError> {
    use rayon::prelude::*;
    check_score_args(scores.len(), layers, heads, t, n, ddof, eps)?;
    // the first non-finite score among the real keys, in the reference's order (layer, head, row)
    for l in 0..layers {
        for h in 0..heads {
            for i in 0..t {
                let base = ((l * heads + h) * t + i) * t;
                let row = &scores[base..base + n];
                if !crate::kernels::all_finite(row) {
                    check_finite("scores", row.iter().enumerate().map(|(j, &x)| (base + j, f64::from(x))))?;
                }
            }
        }
    }
    let mut u = vec![0.0f64; layers * t * t];
    let inv_h = 1.0 / heads as f64;
    u.par_chunks_mut(t * t).enumerate().for_each(|(l, ul)| {
        for h in 0..heads {
            for i in 0..t {
                let base = ((l * heads + h) * t + i) * t;
                crate::kernels::standardized_cdf_row(&scores[base..base + n], ddof, eps, &mut ul[i * t..i * t + n]);
            }
        }
        ul.iter_mut().for_each(|x| *x *= inv_h);
    });
    Ok(u)
}

/// Result of [`concrete_masks`]. Per-layer lists are indexed `l − 1`; each vector has `T` entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConcreteResult {
    /// `ŝ` per layer.
    pub s_hat: Vec<Vec<f64>>,
    /// `s = (0.01 + 0.99 ŝ / max ŝ) · valid` per layer.
    pub s: Vec<Vec<f64>>,
    /// `sigmoid((θ_l + logit(clamp(s))) / τ)` per layer, before nesting.
    pub mask: Vec<Vec<f64>>,
    /// `m^l = max(mask, m^{l+1})` per layer.
    pub m: Vec<Vec<f64>>,
    /// `m^{L+1}` = one-hot(CLS).
    pub m_top: Vec<f64>,
    /// Hard plan: `I_l = {j < n : m^l_j >= 0.5}`, `O_l = I_{l+1}`, `O_L = {CLS}`.
    pub plan: TokenPlan,
    /// `r = mean_l Σ_{j<n} m^l_j / n` (the retention signal of the section 4 loss, one example).
    pub soft_retention_r: f64,
}

/// Section 4 steps 2 and 4: soft masks from `U` (as returned by [`standardized_cdf_scores`],
/// row-major `[L, T, T]`, query × key) and the per-layer thresholds `theta[l-1] = θ_l`
/// (`logit(π_l) = θ_l`). `tau`: temperature (paper 0.1); `p`: weight of the back-tracked
/// importance `c` (paper 0.1); `clamp_eps`: `s` is clamped to `[clamp_eps, 1 − clamp_eps]`
/// before the logit (reference 1e-6). No noise. Padding tokens (`j >= n`) get `s = 0`.
///
/// Errors: [`ConcreteError`] for shape mismatches, `n ∉ 1..=t`, `tau <= 0`, `p ∉ [0, 1]`,
/// `clamp_eps ∉ (0, 0.5)`, non-finite `u` / `theta`, or a layer without a positive score.
#[allow(clippy::too_many_arguments)]
pub fn concrete_masks(
    u: &[f64],
    layers: usize,
    t: usize,
    n: usize,
    theta: &[f64],
    tau: f64,
    p: f64,
    clamp_eps: f64,
) -> Result<ConcreteResult, ConcreteError> {
    concrete_masks_top(u, layers, t, n, theta, tau, p, clamp_eps, 1)
}

/// [`concrete_masks`] with `O_L = 0..num_special` (2 for DeiT: the class and distillation tokens
/// start with mask 1 at the top and the nesting `m^l >= m^{l+1}` keeps them at every layer).
/// `num_special` is clamped to `1..=n`.
#[allow(clippy::too_many_arguments)]
pub fn concrete_masks_top(
    u: &[f64],
    layers: usize,
    t: usize,
    n: usize,
    theta: &[f64],
    tau: f64,
    p: f64,
    clamp_eps: f64,
    num_special: usize,
) -> Result<ConcreteResult, ConcreteError> {
    check_shape(layers, 1, t, n)?;
    let num_special = num_special.clamp(1, n.max(1));
    let expected = layers * t * t;
    if u.len() != expected {
        return Err(ConcreteError::Length { what: "u", expected, got: u.len() });
    }
    if theta.len() != layers {
        return Err(ConcreteError::Length { what: "theta", expected: layers, got: theta.len() });
    }
    if !(tau.is_finite() && tau > 0.0) {
        return Err(ConcreteError::BadParam { name: "tau", value: tau, range: "finite, > 0" });
    }
    if !(0.0..=1.0).contains(&p) {
        return Err(ConcreteError::BadParam { name: "p", value: p, range: "[0, 1]" });
    }
    if !(clamp_eps > 0.0 && clamp_eps < 0.5) {
        return Err(ConcreteError::BadParam { name: "clamp_eps", value: clamp_eps, range: "(0, 0.5)" });
    }
    check_finite("u", u.iter().copied().enumerate())?;
    check_finite("theta", theta.iter().copied().enumerate())?;

    let logit = |x: f64| (x / (1.0 - x)).ln();
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut m_next = vec![0.0f64; t];
    m_next[..num_special].iter_mut().for_each(|m| *m = 1.0);
    let m_top = m_next.clone();
    let mut c = m_next.clone();
    let (mut s_hat_all, mut s_all, mut mask_all, mut m_all) =
        (vec![Vec::new(); layers], vec![Vec::new(); layers], vec![Vec::new(); layers], vec![Vec::new(); layers]);

    for l in (0..layers).rev() {
        let u_l = &u[l * t * t..(l + 1) * t * t];
        let m_sum: f64 = m_next.iter().sum();
        let mut s_hat = vec![0.0f64; t];
        for i in 0..t {
            let factor = m_next[i] * (p * c[i] + 1.0 - p);
            for (s, &x) in s_hat.iter_mut().zip(&u_l[i * t..(i + 1) * t]) {
                *s += factor * x;
            }
        }
        s_hat.iter_mut().for_each(|s| *s /= m_sum);
        let max = s_hat[..n].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max <= 0.0 {
            return Err(ConcreteError::DegenerateScores { layer: l + 1 });
        }
        let s: Vec<f64> = (0..t).map(|j| if j < n { 0.01 + 0.99 * s_hat[j] / max } else { 0.0 }).collect();
        let mask: Vec<f64> = s.iter().map(|&sj| sigmoid((theta[l] + logit(sj.clamp(clamp_eps, 1.0 - clamp_eps))) / tau)).collect();
        let m: Vec<f64> = mask.iter().zip(&m_next).map(|(&a, &b)| a.max(b)).collect();
        c.clone_from(&s);
        m_next.clone_from(&m);
        (s_hat_all[l], s_all[l], mask_all[l], m_all[l]) = (s_hat, s, mask, m);
    }

    let inputs: Vec<Vec<usize>> = m_all.iter().map(|m| (0..n).filter(|&j| m[j] >= 0.5).collect()).collect();
    let plan = TokenPlan::from_inputs(n, inputs, (0..num_special).collect())?;
    let soft_retention_r = m_all.iter().map(|m| m[..n].iter().sum::<f64>() / n as f64).sum::<f64>() / layers as f64;
    Ok(ConcreteResult { s_hat: s_hat_all, s: s_all, mask: mask_all, m: m_all, m_top, plan, soft_retention_r })
}

/// The concrete-masking planner (section 4 step 4): hard masks from the ApproxNet's attention
/// and the learned per-layer thresholds `theta` (trained with target `σ(θ_0)` = `theta0`). Pass
/// the concrete-trained teacher and its ApproxNet in [`Models`](Models).
#[derive(Debug, Clone)]
pub struct Concrete {
    pub theta0: f64,
    pub theta: Vec<f64>,
}

impl Planner for Concrete {
    fn label(&self) -> String {
        format!("concrete θ0={}", self.theta0)
    }
    fn family(&self) -> &'static str {
        "concrete"
    }
    fn cost(&self) -> Cost {
        Cost { approx_pass: true, ..Cost::default() }
    }
    fn schedule<'a>(&'a self, models: &Models<'a>, inputs: &[EncodedInput]) -> Result<Schedule<'a>, ModelError> {
        let a = models.approx.ok_or_else(|| ModelError::Input("mode concrete needs its ApproxNet".into()))?;
        // the ApproxNet pass and the masks, all counted as the attention pass
        let t0 = std::time::Instant::now();
        let plans = concrete_plans(a, inputs, &self.theta)?;
        let timing = PlanTiming { approx: t0.elapsed().as_secs_f64(), planning: 0.0 };
        Ok(Schedule::Plans { plans, timing: Some(timing) })
    }
}

/// Hard concrete-mask plans (section 4 step 4) from the ApproxNet's attention and thresholds
/// `theta` (one per layer). `Z` standardises the ApproxNet's pre-softmax scores `S` (section 4
/// step 1), computed from the queries and keys in the attention pass (not from the
/// probabilities: `ln P` of a key more than ~88 nats below its row's max underflows in f32).
///
/// Fast path: f32 scores (`kernels::attention_scores`) and vectorised `Φ` (the arithmetic of
/// [`standardized_cdf_scores_fast`](crate::planners::concrete::standardized_cdf_scores_fast),
/// `U` within ~2.5e-7 of the f64 reference on the same scores), computed inside the ApproxNet's
/// attention pass per block of 16 query rows ([`Encoder::run_attention_reduced_with`]):
/// `[L, H, n, n]` maps are never stored (the planning took 25% of a dense 26-token pass when
/// they were).
///
/// Errors: bad input; non-finite ApproxNet attention scores.
pub fn concrete_plans(approx: &Encoder, inputs: &[EncodedInput], theta: &[f64]) -> Result<Vec<TokenPlan>, ModelError> {
    use rayon::prelude::*;
    let c = &approx.config;
    let big_l = approx.layers.len();
    let top = approx.top_tokens();
    // At the top layer only the rows of O_L (mask 1 at the top) enter the scores: the others are
    // weighted by m^{L+1} = 0, so they are not computed (left as 0 in U, they add exactly 0) -
    // the same plans as from a dense attention run.
    let plans: Vec<TokenPlan> = inputs
        .iter()
        .map(|x| {
            let n = x.len().max(1);
            let o_top: Vec<usize> = (0..top.len().clamp(1, n)).collect();
            TokenPlan::from_inputs(n, vec![(0..n).collect(); big_l], o_top).unwrap_or_else(|_| TokenPlan::dense(n, big_l))
        })
        .collect();
    let mut out: Vec<TokenPlan> = Vec::with_capacity(inputs.len());
    approx.for_each_reduced_group(inputs, &plans, crate::exec::HeadReduce::ConcreteCdf { ddof: 0, eps: 1e-6 }, |first, blocks| {
        let group = blocks
            .par_iter()
            .enumerate()
            .map(|(i, u)| {
                let e = first + i;
                let n = inputs[e].len();
                let err = |m: String| ModelError::Input(format!("concrete masks for example {e}: {m}"));
                // O_L = the class (and DeiT distillation) token, as in training
                let r = concrete_masks_top(u, c.num_layers, n, n, theta, 0.1, 0.1, 1e-6, top.len()).map_err(|er| err(er.to_string()))?;
                Ok(r.plan)
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        out.extend(group);
        Ok(())
    })?;
    Ok(out)
}
