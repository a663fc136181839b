//! The LTP step (ALGORITHM.md section 6; issue 15 items 2-3) on the native trainer: the same
//! math as burn's [`ltp_forward`](crate::train::ltp::ltp_forward) + the loss of
//! [`train_ltp`](crate::train::ltp::train_ltp), forward and backward.
//!
//! Index mapping onto the native masks ([`TokenMasks`], section 4.3: `m[l]` = 1-based `m^{l+1}`
//! renormalises 0-based layer `l`'s attention over keys, `m[l + 1]` scales its output rows):
//!
//! - `m[0]` = 1 (every real token; burn runs layer 0 without a key mask; renormalising with ones
//!   changes its probabilities only by float rounding);
//! - `m[l + 1]` for `l = 0..L-2` = burn's running mask after layer `l` (its `masks[l]`): the
//!   previous running mask `m[l]` (layer `l`'s key mask) times `σ((s_j - θ_l)/T)` (hard: the
//!   straight-through `σ + (1[σ > 0.5] - σ)`, forward 0/1, gradient of σ), CLS forced to 1, where
//!   `s_j` is computed from layer `l`'s renormalised probabilities `P̃`: `recv_j = Σ_h Σ_i P̃_hij
//!   m[l]_i`, `s = recv / H` ([`LtpScore::LengthScaled`]) or `recv / (H Σ_i m[l]_i)`
//!   ([`LtpScore::MeanReceived`]). It scales layer `l`'s output and is layer `l + 1`'s key mask,
//!   exactly as burn's `x = x * m` then `layer(.., key_mask = m)`;
//! - `m[L]` = 1 (burn does not scale the last layer's output).
//!
//! The loss is `CE + λ · mean_{l < L-1} mean_b (Σ_j m[l+1]_bj / n_b)`. The backward is the
//! encoder's ([`backward_with`]) with an [`LtpHook`] adding, at each layer, the path
//! `m[l + 1]` -> `σ` -> `s` -> (`P̃`, `m[l]`), and collecting dL/dθ.

use std::sync::Mutex;

use crate::planners::ltp::LtpScore;
use crate::train::native::backward::{backward_with, ExtraGrads, HeadGrad, ProbsHook};
use crate::train::native::forward::{forward_with, Forward, PackedBatch};
use crate::train::native::masks::TokenMasks;
use crate::train::native::params::NativeBert;

/// The LTP settings of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LtpStep {
    /// Sigmoid temperature `T` (> 0).
    pub temperature: f64,
    pub score: LtpScore,
    /// L1 weight λ on the masks.
    pub lambda: f64,
    /// Hard (straight-through) masks; θ gets no gradient then.
    pub hard: bool,
}

/// What the backward of the LTP masks needs from the forward, per layer `l < L-1`, packed as
/// the batch (`[N]`).
#[derive(Debug, Clone, Default)]
pub struct LtpCache {
    /// `σ((s - θ_l)/T)` per layer.
    pub sig: Vec<Vec<f32>>,
    /// The mask factor that multiplied the running mask (1 on CLS; 0/1 in the hard phase).
    pub factor: Vec<Vec<f32>>,
    /// The scores `s` per layer.
    pub score: Vec<Vec<f32>>,
    /// Per layer and example, `Σ_i m[l]_i` (the kept count entering layer `l`).
    pub kept: Vec<Vec<f32>>,
}

/// Loss terms of one LTP step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LtpLoss {
    /// `task + λ · mask_mean`.
    pub loss: f64,
    /// Mean cross-entropy.
    pub task: f64,
    /// `mean_l mean_b (Σ_j m_j / n_b)` of the running masks.
    pub mask_mean: f64,
}

/// Per (example, head) block offsets into the probabilities of a layer (`[H, n_e, n_e]` per
/// example): the start of example `e`'s first head.
fn prob_offsets(batch: &PackedBatch, h: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch.b);
    let mut o = 0;
    for &n in &batch.lengths {
        out.push(o);
        o += h * n * n;
    }
    out
}

/// The LTP forward (see the module docs for the mapping onto burn's `ltp_forward`): `theta`
/// `[L - 1]` thresholds in the score's units. Returns the forward (with the masks it ran with,
/// `L + 1` of `[N]`), the cache for [`ltp_backward`] and the loss terms.
///
/// Errors: `theta` not of `L - 1` values, or a model with fewer than 2 layers.
pub fn ltp_forward_native(
    model: &NativeBert,
    batch: &PackedBatch,
    theta: &[f32],
    step: &LtpStep,
) -> Result<(Forward, LtpCache, LtpLoss), crate::error::ModelError> {
    let big_l = model.layers.len();
    if big_l < 2 || theta.len() != big_l - 1 {
        return Err(crate::error::ModelError::Input(format!(
            "{} LTP thresholds for a {big_l}-layer model; LTP needs >= 2 layers and L - 1 thresholds",
            theta.len()
        )));
    }
    let h = model.config.num_heads;
    let rows = batch.rows();
    let masks = TokenMasks { m: vec![vec![1.0f32; rows]; big_l + 1] };
    let offs = prob_offsets(batch, h);
    let mut cache = LtpCache::default();
    let (temp, score, hard) = (step.temperature, step.score, step.hard);
    let mut hook = |l: usize, probs: &[f32], tm: &mut TokenMasks| {
        if l + 1 >= big_l {
            return;
        }
        let a = tm.m[l].clone();
        let (mut sig, mut factor, mut sc) = (vec![0.0f32; rows], vec![1.0f32; rows], vec![0.0f32; rows]);
        let mut kept = vec![0.0f32; batch.b];
        let th = theta[l];
        for e in 0..batch.b {
            let (n, r0) = (batch.lengths[e], batch.offsets[e]);
            let ae = &a[r0..r0 + n];
            let mut recv = vec![0.0f32; n];
            for hh in 0..h {
                let blk = &probs[offs[e] + hh * n * n..offs[e] + (hh + 1) * n * n];
                for (row, &ai) in blk.chunks_exact(n).zip(ae) {
                    for (r, &p) in recv.iter_mut().zip(row) {
                        *r += p * ai;
                    }
                }
            }
            let k: f32 = ae.iter().sum();
            kept[e] = k;
            let denom = match score {
                LtpScore::LengthScaled => h as f32,
                LtpScore::MeanReceived => k * h as f32,
            };
            for j in 0..n {
                let s = recv[j] / denom;
                let sg = 1.0 / (1.0 + (-((s - th) / temp as f32)).exp());
                sc[r0 + j] = s;
                sig[r0 + j] = sg;
                if j > 0 {
                    factor[r0 + j] = if hard { sg + (f32::from(u8::from(sg > 0.5)) - sg) } else { sg };
                }
            }
        }
        tm.m[l + 1] = a.iter().zip(&factor).map(|(x, f)| x * f).collect();
        cache.sig.push(sig);
        cache.factor.push(factor);
        cache.score.push(sc);
        cache.kept.push(kept);
    };
    let fw = forward_with(model, batch, Some(masks), Some(&mut hook));
    let tm = fw.masks.as_ref().expect("the LTP masks");
    let mut mask_mean = 0.0f64;
    for m in &tm.m[1..big_l] {
        let per: f64 = (0..batch.b)
            .map(|e| {
                let r0 = batch.offsets[e];
                m[r0..r0 + batch.lengths[e]].iter().map(|&v| v as f64).sum::<f64>() / batch.lengths[e] as f64
            })
            .sum();
        mask_mean += per / batch.b as f64;
    }
    mask_mean /= (big_l - 1) as f64;
    let loss = LtpLoss { loss: fw.loss + step.lambda * mask_mean, task: fw.loss, mask_mean };
    Ok((fw, cache, loss))
}

/// The backward of the LTP masks, called by [`backward_with`] layer by layer.
pub struct LtpHook<'a> {
    batch: &'a PackedBatch,
    fw: &'a Forward,
    cache: &'a LtpCache,
    step: LtpStep,
    heads: usize,
    layers: usize,
    /// dL/dθ_l (f64 sums).
    dtheta: Mutex<Vec<f64>>,
}

impl ProbsHook for LtpHook<'_> {
    fn probs_grad(&self, l: usize, dm_next: &[f32], dm_this: &mut [f32]) -> Option<Vec<f32>> {
        if l + 1 >= self.layers {
            return None;
        }
        let (batch, h) = (self.batch, self.heads);
        let tm = self.fw.masks.as_ref().expect("the LTP masks");
        let a = &tm.m[l];
        let probs = &self.fw.layers[l].probs;
        let offs = prob_offsets(batch, h);
        let (sig, factor, sc, kept) = (&self.cache.sig[l], &self.cache.factor[l], &self.cache.score[l], &self.cache.kept[l]);
        let temp = self.step.temperature as f32;
        let l1 = self.step.lambda / ((self.layers - 1) as f64 * batch.b as f64);
        let mut dp = vec![0.0f32; probs.len()];
        let mut dth = 0.0f64;
        for e in 0..batch.b {
            let (n, r0) = (batch.lengths[e], batch.offsets[e]);
            let dl1 = (l1 / n as f64) as f32;
            // dL/ds_j and dL/da_j from the product m[l+1] = a · factor
            let mut ds = vec![0.0f32; n];
            for j in 0..n {
                let g = dm_next[r0 + j] + dl1;
                dm_this[r0 + j] += g * factor[r0 + j];
                if j > 0 {
                    let sg = sig[r0 + j];
                    let dz = g * a[r0 + j] * sg * (1.0 - sg) / temp;
                    ds[j] = dz;
                    dth -= dz as f64;
                }
            }
            let denom = match self.step.score {
                LtpScore::LengthScaled => h as f32,
                LtpScore::MeanReceived => kept[e] * h as f32,
            };
            if self.step.score == LtpScore::MeanReceived {
                // s = recv / (H Σ a): dL/da_i += -Σ_j ds_j s_j / Σ a
                let dk: f32 = -(0..n).map(|j| ds[j] * sc[r0 + j]).sum::<f32>() / kept[e];
                for v in &mut dm_this[r0..r0 + n] {
                    *v += dk;
                }
            }
            let drecv: Vec<f32> = ds.iter().map(|v| v / denom).collect();
            // recv_j = Σ_h Σ_i P̃_hij a_i
            for hh in 0..h {
                let o = offs[e] + hh * n * n;
                let blk = &probs[o..o + n * n];
                let dblk = &mut dp[o..o + n * n];
                for (i, (row, drow)) in blk.chunks_exact(n).zip(dblk.chunks_exact_mut(n)).enumerate() {
                    let ai = a[r0 + i];
                    let mut acc = 0.0f32;
                    for j in 0..n {
                        drow[j] = ai * drecv[j];
                        acc += row[j] * drecv[j];
                    }
                    dm_this[r0 + i] += acc;
                }
            }
        }
        if !self.step.hard {
            self.dtheta.lock().expect("dtheta lock")[l] += dth;
        }
        Some(dp)
    }
}

/// Gradients of the LTP loss ([`ltp_forward_native`]) with respect to every parameter of
/// `model` (into `g`, shaped as `model`) and to θ (returned, `[L - 1]`; zeros in the hard phase,
/// where θ is frozen as in burn's `train_ltp`). Runs on the caller's pool.
pub fn ltp_backward(
    model: &NativeBert,
    batch: &PackedBatch,
    fw: &Forward,
    cache: &LtpCache,
    step: &LtpStep,
    g: &mut NativeBert,
) -> Vec<f32> {
    let layers = model.layers.len();
    let hook = LtpHook {
        batch,
        fw,
        cache,
        step: *step,
        heads: model.config.num_heads,
        layers,
        dtheta: Mutex::new(vec![0.0; layers.saturating_sub(1)]),
    };
    let extra = ExtraGrads { head: HeadGrad::CrossEntropy, mask_grads: true, probs: Some(&hook), ..ExtraGrads::default() };
    backward_with(model, batch, fw, g, &extra);
    hook.dtheta.into_inner().expect("dtheta lock").into_iter().map(|v| v as f32).collect()
}
