//! Per-layer token masks in the native trainer: the soft forward of ALGORITHM.md section 4.3 on
//! a packed batch, and its backward (issue 16 item 4, issue 15 item 2).
//!
//! Layer `l` (1..=L) renormalises its attention over keys with `m^l`,
//! `P_ij <- P_ij m^l_j / (Σ_k P_ik m^l_k + 1e-9)`, and scales its output rows (after its last
//! LayerNorm, post-LN BERT) by `m^{l+1}`: the same math as burn's
//! [`TrainBert::forward`](crate::train::model::TrainBert::forward) with `masks`. With 0/1 masks
//! from a [`TokenPlan`] (`m^l = 1` on `I_l`, `m^{L+1} = 1` on `O_L`) the CLS output equals the
//! gathered execution of that plan (section 1) up to the `1e-9` and float rounding.

use crate::error::ModelError;
use crate::plan::TokenPlan;
use crate::train::native::batch::PackedBatch;
use crate::train::native::params::LayerNormParams;
use crate::train::native::real::Real;

/// The `1e-9` of section 4.3's renormalisation denominator (as burn's `TrainBert::layer`).
pub const RENORM_EPS: f32 = 1e-9;

/// `L + 1` per-token masks over the rows of a [`PackedBatch`]: `m[l - 1]` = `m^l` `[N]` (values
/// in [0, 1]) for `l = 1..=L + 1`; `m^l` renormalises layer `l`'s attention over keys and
/// `m^{l+1}` scales its output rows.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenMasks {
    pub m: Vec<Vec<f32>>,
}

impl TokenMasks {
    /// Masks `m` (`layers + 1` vectors of `batch.rows()` values each, packed as the batch).
    ///
    /// Errors: a wrong count or length, or a value that is not finite or outside [0, 1].
    pub fn new(m: Vec<Vec<f32>>, batch: &PackedBatch, layers: usize) -> Result<Self, ModelError> {
        if m.len() != layers + 1 {
            return Err(ModelError::Input(format!(
                "{} token masks for a {layers}-layer model; expected {} (m^1..m^L+1)",
                m.len(),
                layers + 1
            )));
        }
        for (l, v) in m.iter().enumerate() {
            if v.len() != batch.rows() {
                return Err(ModelError::Input(format!("mask m^{} has {} values; the batch has {} tokens", l + 1, v.len(), batch.rows())));
            }
            if let Some((j, x)) = v.iter().enumerate().find(|(_, x)| !(0.0..=1.0).contains(*x)) {
                return Err(ModelError::Input(format!("mask m^{} token {j} is {x}; masks lie in [0, 1]", l + 1)));
            }
        }
        Ok(Self { m })
    }

    /// The 0/1 masks of one token plan per example: `m^l_j = 1` iff `j ∈ I_l` (l = 1..=L),
    /// `m^{L+1}_j = 1` iff `j ∈ O_L`.
    ///
    /// Errors: a plan count differing from the batch's examples, or a plan whose token count
    /// or layer count does not match its example / the model.
    pub fn from_plans(plans: &[TokenPlan], batch: &PackedBatch, layers: usize) -> Result<Self, ModelError> {
        if plans.len() != batch.b {
            return Err(ModelError::Input(format!("{} plans for a batch of {} examples", plans.len(), batch.b)));
        }
        let mut m = vec![vec![0.0f32; batch.rows()]; layers + 1];
        for (e, p) in plans.iter().enumerate() {
            if p.n() != batch.lengths[e] || p.num_layers() != layers {
                return Err(ModelError::Input(format!(
                    "plan {e} covers {} tokens and {} layers; the example has {} tokens and the model {layers} layers",
                    p.n(),
                    p.num_layers(),
                    batch.lengths[e]
                )));
            }
            let base = batch.offsets[e];
            for (l, set) in p.input_sets().iter().enumerate() {
                for &j in set {
                    m[l][base + j] = 1.0;
                }
            }
            for &j in p.top() {
                m[layers][base + j] = 1.0;
            }
        }
        Ok(Self { m })
    }
}

/// What the backward of one masked attention layer needs besides the renormalised
/// probabilities: the softmax before renormalisation and the denominators.
#[derive(Debug, Clone, Default)]
pub struct MaskCache {
    /// Softmax probabilities before renormalisation, laid out as `LayerCache::probs`.
    pub raw: Vec<f32>,
    /// `Σ_k P_ik m_k + 1e-9` per (example, head, query) row, in the order of `probs`' rows.
    pub denom: Vec<f32>,
}

/// Renormalise the softmax rows of one (example, head) block `p` (`[n, n]`) over keys with the
/// example's mask `m` `[n]`, in place; `raw` `[n, n]` receives the rows before, `denom` `[n]`
/// the denominators. Generic over the float type ([`Real`]: `f32` in training, `f64` in the
/// finite-difference check of LTP's dL/dθ).
pub fn renormalise<F: Real>(p: &mut [F], m: &[F], raw: &mut [F], denom: &mut [F]) {
    let n = m.len();
    let eps = F::of(f64::from(RENORM_EPS));
    raw.copy_from_slice(p);
    for (row, dn) in p.chunks_exact_mut(n).zip(denom.iter_mut()) {
        let mut s = F::of(0.0);
        for (v, &mj) in row.iter_mut().zip(m) {
            *v = *v * mj;
            s += *v;
        }
        let den = s + eps;
        *dn = den;
        for v in row.iter_mut() {
            *v = *v / den;
        }
    }
}

/// Backward of [`renormalise`] on one block: `g` `[n, n]` holds dL/dP̃ (the renormalised
/// probabilities `p`) and is overwritten with dL/dP (the softmax before); `dm` `[n]` gets
/// dL/dm added: `dP_ij = m_j / D_i (g_ij - r_i)`, `dm_j += Σ_i P_ij / D_i (g_ij - r_i)` with
/// `r_i = Σ_k g_ik P̃_ik`.
pub fn renormalise_backward<F: Real>(g: &mut [F], p: &[F], cache_raw: &[F], denom: &[F], m: &[F], dm: &mut [F]) {
    let n = m.len();
    for (((gr, pr), rr), &den) in g.chunks_exact_mut(n).zip(p.chunks_exact(n)).zip(cache_raw.chunks_exact(n)).zip(denom) {
        let r: F = gr.iter().zip(pr).map(|(&a, &b)| a * b).sum();
        for j in 0..n {
            let c = (gr[j] - r) / den;
            dm[j] += rr[j] * c;
            gr[j] = m[j] * c;
        }
    }
}

/// Scale the rows (`[N, d]`) of a layer output by `m` `[N]` in place.
pub fn scale_rows(y: &mut [f32], m: &[f32], d: usize) {
    for (row, &s) in y.chunks_exact_mut(d).zip(m) {
        for v in row.iter_mut() {
            *v *= s;
        }
    }
}

/// Backward of [`scale_rows`] after the LayerNorm `ln` (cache `xhat`, parameters `p`): adds
/// `Σ_c dy_ic · y_ic` to `dm` (`y` = the LayerNorm output before scaling, recomputed as
/// `x̂·γ + β`) and scales `dy` by `m` in place.
pub fn scale_rows_backward(dy: &mut [f32], xhat: &[f32], p: &LayerNormParams, m: &[f32], dm: &mut [f32]) {
    let d = p.gamma.len();
    for (((dyr, xr), &s), g) in dy.chunks_exact_mut(d).zip(xhat.chunks_exact(d)).zip(m).zip(dm.iter_mut()) {
        let mut acc = 0.0f32;
        for c in 0..d {
            acc += dyr[c] * (xr[c] * p.gamma[c] + p.beta[c]);
            dyr[c] *= s;
        }
        *g += acc;
    }
}
