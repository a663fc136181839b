//! The native trainer's forward pass over a padded batch `[B, T]`, keeping what the backward
//! pass needs: the same math as burn's `TrainBert::forward` + `head_logits` + `cross_entropy`
//! (post-LayerNorm BERT, exact-erf GELU, padding keys biased by -1e9, no dropout), every padded
//! row computed as burn computes it.

use rayon::prelude::*;

use crate::config::{Activation, EncoderConfig};
use crate::encoder::EncodedInput;
use crate::error::ModelError;
use crate::kernels;
use crate::train::native::params::{Dense, LayerNormParams, NativeBert};

/// A padded batch: token ids and types `[B, T]` (padding: id 0, type 0), lengths and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct PaddedBatch {
    pub b: usize,
    pub t: usize,
    pub ids: Vec<usize>,
    pub types: Vec<usize>,
    pub lengths: Vec<usize>,
    pub labels: Vec<usize>,
}

impl PaddedBatch {
    /// Pad `inputs` on the right to the longest (as burn's `Batch::from_inputs`).
    ///
    /// Errors: no inputs, a label count differing from the input count, an empty input, an
    /// input longer than `max_position_embeddings`, an id or type outside the vocabularies, a
    /// label `>= num_labels`, or image inputs.
    pub fn new(inputs: &[&EncodedInput], labels: &[usize], config: &EncoderConfig, num_labels: usize) -> Result<Self, ModelError> {
        let bad = |m: String| Err(ModelError::Input(m));
        if inputs.is_empty() {
            return bad("an empty batch".into());
        }
        if inputs.len() != labels.len() {
            return bad(format!("{} inputs but {} labels", inputs.len(), labels.len()));
        }
        let b = inputs.len();
        let t = inputs.iter().map(|x| x.len()).max().unwrap_or(0);
        let mut ids = vec![0usize; b * t];
        let mut types = vec![0usize; b * t];
        for (e, x) in inputs.iter().enumerate() {
            if !x.patches.is_empty() {
                return bad(format!("example {e} is an image; the native trainer takes text only"));
            }
            if x.is_empty() || x.len() > config.max_position_embeddings {
                return bad(format!("example {e} has {} tokens; expected 1..={}", x.len(), config.max_position_embeddings));
            }
            if x.type_ids.len() != x.ids.len() {
                return bad(format!("example {e} has {} ids but {} type ids", x.ids.len(), x.type_ids.len()));
            }
            for j in 0..x.len() {
                let (id, ty) = (x.ids[j] as usize, x.type_ids[j] as usize);
                if id >= config.vocab_size || ty >= config.type_vocab_size {
                    return bad(format!(
                        "example {e} token {j}: id {id} / type {ty} outside vocab {} / {}",
                        config.vocab_size, config.type_vocab_size
                    ));
                }
                ids[e * t + j] = id;
                types[e * t + j] = ty;
            }
            if labels[e] >= num_labels {
                return bad(format!("example {e} has label {} but the head has {num_labels} classes", labels[e]));
            }
        }
        Ok(Self { b, t, ids, types, lengths: inputs.iter().map(|x| x.len()).collect(), labels: labels.to_vec() })
    }
}

/// A LayerNorm's normalised input `x̂` `[rows, d]` and `1/σ` per row, for the backward pass.
#[derive(Debug, Clone, Default)]
pub struct LnCache {
    pub xhat: Vec<f32>,
    pub inv_std: Vec<f32>,
}

/// One layer's saved activations (its input is the previous entry of [`Forward::hidden`]).
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    /// Q, K, V by head, `[B, H, T, d_h]`.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Attention probabilities `[B, H, T, T]` (padding keys 0).
    pub probs: Vec<f32>,
    /// Attention context, heads merged, `[B·T, d]`.
    pub ctx: Vec<f32>,
    pub ln1: LnCache,
    /// Output of the attention block (after its LayerNorm) `[B·T, d]`.
    pub a: Vec<f32>,
    /// FFN input projection before / after the activation `[B·T, d_ff]`.
    pub inter_pre: Vec<f32>,
    pub inter_act: Vec<f32>,
    pub ln2: LnCache,
}

/// Everything the backward pass needs, and the loss.
#[derive(Debug, Clone, Default)]
pub struct Forward {
    pub emb_ln: LnCache,
    /// `L + 1` hidden states `[B·T, d]`: 0 = embedding output, l = layer l's output.
    pub hidden: Vec<Vec<f32>>,
    pub layers: Vec<LayerCache>,
    /// CLS rows of the last layer `[B, d]`.
    pub cls: Vec<f32>,
    /// tanh(pooler) `[B, d]` (the CLS rows when there is no pooler).
    pub pooled: Vec<f32>,
    /// `[B, C]`.
    pub logits: Vec<f32>,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// `out = x·W + b` for `x` `[m, d_in]` (the crate's parallel GEMM).
pub fn linear_forward(x: &[f32], w: &Dense, m: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * w.d_out];
    kernels::matmul(x, &w.w, &mut out, m, w.d_in, w.d_out, false);
    kernels::add_bias(&mut out, &w.b);
    out
}

/// Row-wise LayerNorm (biased variance, as torch and burn) into a new buffer, with its cache
/// (rows in parallel).
pub fn layer_norm_forward(x: &[f32], p: &LayerNormParams, eps: f64) -> (Vec<f32>, LnCache) {
    let d = p.gamma.len();
    let rows = x.len() / d;
    let mut out = vec![0.0f32; x.len()];
    let mut xhat = vec![0.0f32; x.len()];
    let mut inv_std = vec![0.0f32; rows];
    out.par_chunks_mut(d).zip(xhat.par_chunks_mut(d)).zip(inv_std.par_iter_mut()).zip(x.par_chunks(d)).for_each(|(((o, xh), is), row)| {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps).sqrt();
        *is = inv as f32;
        for i in 0..d {
            let h = ((row[i] as f64 - mean) * inv) as f32;
            xh[i] = h;
            o[i] = h * p.gamma[i] + p.beta[i];
        }
    });
    (out, LnCache { xhat, inv_std })
}

/// The activation `act(x)` (GELU with erf as burn's `gelu`, tanh GELU, ReLU).
pub fn activation(x: f32, act: Activation) -> f32 {
    match act {
        Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
        Activation::GeluTanh => {
            let c = (2.0f32 / std::f32::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Relu => x.max(0.0),
    }
}

/// `[B·T, H·d_h]` rows to `[B, H, T, d_h]`.
pub fn split_heads(x: &[f32], b: usize, t: usize, h: usize, dh: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for e in 0..b {
        for j in 0..t {
            let row = &x[(e * t + j) * h * dh..(e * t + j + 1) * h * dh];
            for hh in 0..h {
                let o = ((e * h + hh) * t + j) * dh;
                out[o..o + dh].copy_from_slice(&row[hh * dh..(hh + 1) * dh]);
            }
        }
    }
    out
}

/// `[B, H, T, d_h]` to `[B·T, H·d_h]` rows (inverse of [`split_heads`]).
pub fn merge_heads(x: &[f32], b: usize, t: usize, h: usize, dh: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for e in 0..b {
        for hh in 0..h {
            for j in 0..t {
                let i = ((e * h + hh) * t + j) * dh;
                let o = (e * t + j) * h * dh + hh * dh;
                out[o..o + dh].copy_from_slice(&x[i..i + dh]);
            }
        }
    }
    out
}

/// Forward pass and mean cross-entropy of `model` on `batch`.
pub fn forward(model: &NativeBert, batch: &PaddedBatch) -> Forward {
    let c = &model.config;
    let (b, t, d) = (batch.b, batch.t, c.hidden_size);
    let (h, dh) = (c.num_heads, c.head_size());
    let bt = b * t;
    let eps = c.layer_norm_eps;
    // embeddings: word + type + position, LayerNorm
    let mut emb = vec![0.0f32; bt * d];
    for e in 0..b {
        for j in 0..t {
            let r = e * t + j;
            let (w, ty, p) = (batch.ids[r] * d, batch.types[r] * d, j * d);
            for i in 0..d {
                emb[r * d + i] = model.word[w + i] + model.token_type[ty + i] + model.position[p + i];
            }
        }
    }
    let (x0, emb_ln) = layer_norm_forward(&emb, &model.emb_ln, eps);
    let mut hidden = vec![x0];
    let mut layers = Vec::with_capacity(model.layers.len());
    // 0 for real keys, -1e9 for padding (burn's key bias)
    let key_bias: Vec<f32> = (0..bt).map(|r| if r % t < batch.lengths[r / t] { 0.0 } else { -1e9 }).collect();
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    for layer in &model.layers {
        let x = hidden.last().expect("the embedding output");
        let q = split_heads(&linear_forward(x, &layer.query, bt), b, t, h, dh);
        let k = split_heads(&linear_forward(x, &layer.key, bt), b, t, h, dh);
        let v = split_heads(&linear_forward(x, &layer.value, bt), b, t, h, dh);
        let mut probs = vec![0.0f32; b * h * t * t];
        let mut ctx_h = vec![0.0f32; bt * d];
        probs.par_chunks_mut(t * t).zip(ctx_h.par_chunks_mut(t * dh)).enumerate().for_each(|(bh, (p, cx))| {
            let e = bh / h;
            let (qh, kh, vh) = (&q[bh * t * dh..(bh + 1) * t * dh], &k[bh * t * dh..(bh + 1) * t * dh], &v[bh * t * dh..(bh + 1) * t * dh]);
            kernels::matmul_bt(qh, kh, p, t, dh, t);
            for row in p.chunks_exact_mut(t) {
                for (j, s) in row.iter_mut().enumerate() {
                    *s = *s * scale + key_bias[e * t + j];
                }
                softmax_in_place(row);
            }
            kernels::serial(|| kernels::matmul(p, vh, cx, t, t, dh, false));
        });
        let ctx = merge_heads(&ctx_h, b, t, h, dh);
        let mut attended = linear_forward(&ctx, &layer.attn_out, bt);
        for (y, r) in attended.iter_mut().zip(x) {
            *y += *r;
        }
        let (a, ln1) = layer_norm_forward(&attended, &layer.attn_ln, eps);
        let inter_pre = linear_forward(&a, &layer.ffn_in, bt);
        let inter_act: Vec<f32> = inter_pre.par_iter().map(|&u| activation(u, c.activation)).collect();
        let mut ffn = linear_forward(&inter_act, &layer.ffn_out, bt);
        for (y, r) in ffn.iter_mut().zip(&a) {
            *y += *r;
        }
        let (y, ln2) = layer_norm_forward(&ffn, &layer.out_ln, eps);
        hidden.push(y);
        layers.push(LayerCache { q, k, v, probs, ctx, ln1, a, inter_pre, inter_act, ln2 });
    }
    let last = hidden.last().expect("the embedding output");
    let mut cls = vec![0.0f32; b * d];
    for e in 0..b {
        cls[e * d..(e + 1) * d].copy_from_slice(&last[e * t * d..e * t * d + d]);
    }
    let pooled = match &model.pooler {
        Some(p) => linear_forward(&cls, p, b).into_iter().map(f32::tanh).collect(),
        None => cls.clone(),
    };
    let logits = linear_forward(&pooled, &model.classifier, b);
    let nl = model.classifier.d_out;
    let mut loss = 0.0f64;
    for e in 0..b {
        let row = &logits[e * nl..(e + 1) * nl];
        loss -= log_softmax_at(row, batch.labels[e]);
    }
    Forward { emb_ln, hidden, layers, cls, pooled, logits, loss: loss / b as f64 }
}

/// Softmax of one row in place (max-subtracted, f32 as burn).
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// `log_softmax(row)[i]`, in f64.
pub fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    row[i] as f64 - lse
}
