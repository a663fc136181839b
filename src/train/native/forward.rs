//! The native trainer's forward pass over a packed batch (real tokens only), keeping what the
//! backward pass needs: the same math as burn's `TrainBert::forward` + `head_logits` +
//! `cross_entropy` on a padded batch (post-LayerNorm BERT, exact-erf GELU, softmax attention over
//! each example's own tokens, which is what burn's -1e9 padding-key bias gives, no dropout).

use rayon::prelude::*;

use crate::kernels;
use crate::model::config::Activation;
use crate::train::native::batch::PackedBatch;
use crate::train::native::masks::{self, MaskCache, TokenMasks};
use crate::train::native::params::{Dense, LayerNormParams, NativeBert};

/// A LayerNorm's normalised input `x̂` `[rows, d]` and `1/σ` per row, for the backward pass.
#[derive(Debug, Clone, Default)]
pub struct LnCache {
    pub xhat: Vec<f32>,
    pub inv_std: Vec<f32>,
}

/// One layer's saved activations (its input is the previous entry of [`Forward::hidden`]).
///
/// `Nq` is the layer's query rows ([`LayerRows`]): all `N` rows, or one CLS row per example
/// (`B`) in the last layer of a [`forward_cls_last`] pass.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    /// Q `[Nq, d]`, K, V `[N, d]` (packed rows; head `h` is columns `h·d_h..(h + 1)·d_h`).
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Attention probabilities: per example `[H, nq_e, n_e]` (`nq_e` = `n_e`, or 1 for CLS
    /// rows only), examples one after another.
    pub probs: Vec<f32>,
    /// Attention context, heads merged, `[Nq, d]`.
    pub ctx: Vec<f32>,
    pub ln1: LnCache,
    /// Output of the attention block (after its LayerNorm) `[Nq, d]`.
    pub a: Vec<f32>,
    /// FFN input projection before / after the activation `[Nq, d_ff]`.
    pub inter_pre: Vec<f32>,
    pub inter_act: Vec<f32>,
    pub ln2: LnCache,
    /// The softmax before the section-4.3 renormalisation, when the forward ran with masks.
    pub masked: Option<MaskCache>,
}

/// Which rows a layer computes its output for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerRows {
    /// Every row (the layer's output `[N, d]`).
    #[default]
    All,
    /// The CLS row (first token) of each example only (output `[B, d]`): K and V still cover
    /// every row, as the CLS query attends to all keys. Exact for a loss that reads only the
    /// last layer's CLS rows.
    Cls,
}

impl LayerRows {
    /// Query rows and the first query row of example `e`.
    pub fn queries(self, batch: &PackedBatch, e: usize) -> (usize, usize) {
        match self {
            LayerRows::All => (batch.lengths[e], batch.offsets[e]),
            LayerRows::Cls => (1, e),
        }
    }

    /// All query rows `Nq`.
    pub fn count(self, batch: &PackedBatch) -> usize {
        match self {
            LayerRows::All => batch.rows(),
            LayerRows::Cls => batch.b,
        }
    }
}

/// The CLS rows (one per example, `[B, d]`) of `x` `[N, d]`.
pub fn gather_cls(x: &[f32], batch: &PackedBatch, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(batch.b * d);
    for e in 0..batch.b {
        let r = batch.offsets[e];
        out.extend_from_slice(&x[r * d..(r + 1) * d]);
    }
    out
}

/// Everything the backward pass needs, and the loss.
#[derive(Debug, Clone, Default)]
pub struct Forward {
    pub emb_ln: LnCache,
    /// `L + 1` hidden states `[N, d]`: 0 = embedding output, l = layer l's output (the last is
    /// `[B, d]`, the CLS rows, when `cls_last`).
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
    /// The token masks the pass ran with ([`forward_masked`]).
    pub masks: Option<TokenMasks>,
    /// The last layer computed its CLS rows only ([`forward_cls_last`], [`LayerRows::Cls`]).
    pub cls_last: bool,
}

/// `out = x·W + b` for `x` `[m, d_in]` (the crate's parallel GEMM, accumulating into the bias
/// rows).
pub fn linear_forward(x: &[f32], w: &Dense, m: usize) -> Vec<f32> {
    kernels::linear_new(x, &w.w, &w.b, m, w.d_in, w.d_out)
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

/// Forward pass and mean cross-entropy of `model` on `batch`.
pub fn forward(model: &NativeBert, batch: &PackedBatch) -> Forward {
    forward_masked(model, batch, None)
}

/// [`forward`] with the per-layer token masks of ALGORITHM.md section 4.3 ([`TokenMasks`],
/// checked against `batch` and the model by [`TokenMasks::new`]): layer `l` renormalises its
/// attention over keys with `m^l` and scales its output rows by `m^{l+1}`. `None` is [`forward`].
pub fn forward_masked(model: &NativeBert, batch: &PackedBatch, token_masks: Option<&TokenMasks>) -> Forward {
    forward_with(model, batch, token_masks.cloned(), None)
}

/// Called by [`forward_with`] after layer `l` (0-based) computed its attention probabilities
/// (renormalised with `m[l]`, laid out as [`LayerCache::probs`]) and before its output rows are
/// scaled by `m[l + 1]`: it may write `masks.m[l + 1]` (and later masks) from those
/// probabilities, for feed-forward masks such as LTP's (ALGORITHM.md section 6). Called only
/// when the pass runs with masks.
pub type MaskHook<'a> = &'a mut dyn FnMut(usize, &[f32], &mut TokenMasks);

/// [`forward_masked`] with owned masks that `hook` may fill in layer by layer (see
/// [`MaskHook`]); the masks the pass ran with end up in [`Forward::masks`].
pub fn forward_with(model: &NativeBert, batch: &PackedBatch, token_masks: Option<TokenMasks>, hook: Option<MaskHook>) -> Forward {
    forward_rows(model, batch, token_masks, hook, LayerRows::All)
}

/// [`forward_masked`] with the last layer computed for the CLS rows only ([`LayerRows::Cls`]):
/// the same logits and loss (up to float rounding), ~1/7 fewer FLOPs at BERT-small sizes, for
/// losses that read only the logits (fine-tuning, plan-aware fine-tuning). The last layer's
/// cache and `hidden[L]` then hold `B` rows ([`Forward::cls_last`]); [`super::backward`] takes
/// it as it is, for a head loss without extra gradients on the last layer's output or attention.
pub fn forward_cls_last(model: &NativeBert, batch: &PackedBatch, token_masks: Option<&TokenMasks>) -> Forward {
    forward_rows(model, batch, token_masks.cloned(), None, LayerRows::Cls)
}

/// The forward pass: every layer over all rows, the last one over `last` rows.
fn forward_rows(
    model: &NativeBert,
    batch: &PackedBatch,
    mut token_masks: Option<TokenMasks>,
    mut hook: Option<MaskHook>,
    last: LayerRows,
) -> Forward {
    let c = &model.config;
    let (b, d) = (batch.b, c.hidden_size);
    let rows = batch.rows();
    let eps = c.layer_norm_eps;
    super::keep_freed_buffers();
    // embeddings: word + type + position, LayerNorm
    let mut emb = vec![0.0f32; rows * d];
    for e in 0..b {
        for j in 0..batch.lengths[e] {
            let r = batch.offsets[e] + j;
            let (w, ty, p) = (batch.ids[r] * d, batch.types[r] * d, j * d);
            for i in 0..d {
                emb[r * d + i] = model.word[w + i] + model.token_type[ty + i] + model.position[p + i];
            }
        }
    }
    let (x0, emb_ln) = layer_norm_forward(&emb, &model.emb_ln, eps);
    let mut hidden = vec![x0];
    let mut layers = Vec::with_capacity(model.layers.len());
    let n_layers = model.layers.len();
    let cls_last = last == LayerRows::Cls && n_layers > 0;
    for (li, layer) in model.layers.iter().enumerate() {
        let x = hidden.last().expect("the embedding output");
        let lrows = if li + 1 == n_layers { last } else { LayerRows::All };
        let key_mask = token_masks.as_ref().map(|tm| tm.m[li].as_slice());
        let (mut y, cache) = layer_forward(model, layer, batch, x, lrows, key_mask);
        if let (Some(hk), Some(tm)) = (hook.as_mut(), token_masks.as_mut()) {
            hk(li, &cache.probs, tm);
        }
        if let Some(tm) = token_masks.as_ref() {
            match lrows {
                LayerRows::All => masks::scale_rows(&mut y, &tm.m[li + 1], d),
                LayerRows::Cls => masks::scale_rows(&mut y, &batch.offsets[..b].iter().map(|&r| tm.m[li + 1][r]).collect::<Vec<_>>(), d),
            }
        }
        hidden.push(y);
        layers.push(cache);
    }
    let last_h = hidden.last().expect("the embedding output");
    let cls = if cls_last { last_h.clone() } else { gather_cls(last_h, batch, d) };
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
    Forward { emb_ln, hidden, layers, cls, pooled, logits, loss: loss / b as f64, masks: token_masks, cls_last }
}

/// One encoder layer on `x` `[N, d]` for the query rows `lrows`, with section 4.3's key mask
/// (`[N]`) when given; returns the layer output `[Nq, d]` (before any output-mask scaling) and
/// its cache.
fn layer_forward(
    model: &NativeBert,
    layer: &super::params::NativeLayer,
    batch: &PackedBatch,
    x: &[f32],
    lrows: LayerRows,
    key_mask: Option<&[f32]>,
) -> (Vec<f32>, LayerCache) {
    let c = &model.config;
    let (b, d) = (batch.b, c.hidden_size);
    let (h, dh) = (c.num_heads, c.head_size());
    let rows = batch.rows();
    let nq_all = lrows.count(batch);
    let eps = c.layer_norm_eps;
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    let xq_owned = (lrows == LayerRows::Cls).then(|| gather_cls(x, batch, d));
    let xq: &[f32] = xq_owned.as_deref().unwrap_or(x);
    let q = linear_forward(xq, &layer.query, nq_all);
    let k = linear_forward(x, &layer.key, rows);
    let v = linear_forward(x, &layer.value, rows);
    let nq_of = |e: usize| lrows.queries(batch, e).0;
    let probs_len: usize = (0..b).map(|e| h * nq_of(e) * batch.lengths[e]).sum();
    let mut probs = kernels::zeros_par(probs_len);
    let mut ctx = kernels::zeros_par(nq_all * d);
    let mut mask_cache = key_mask.map(|_| MaskCache { raw: vec![0.0; probs_len], denom: vec![0.0; h * nq_all] });
    let probs_per = |e: usize| h * nq_of(e) * batch.lengths[e];
    let mc_blocks: Vec<Option<(&mut [f32], &mut [f32])>> = match mask_cache.as_mut() {
        Some(mc) => split_blocks(&mut mc.raw, b, probs_per)
            .into_iter()
            .zip(split_blocks(&mut mc.denom, b, |e| h * nq_of(e)))
            .map(|(r, dn)| Some((r, dn)))
            .collect(),
        None => (0..b).map(|_| None).collect(),
    };
    // one task per example (its rows of q, k, v, ctx and its [H, nq, n] probabilities); the
    // heads are column blocks of the row-major [rows, d] buffers, read and written in place
    let tasks: Vec<_> = split_blocks(&mut probs, b, probs_per)
        .into_iter()
        .zip(split_blocks(&mut ctx, b, |e| nq_of(e) * d))
        .zip(mc_blocks)
        .enumerate()
        .collect();
    tasks.into_par_iter().for_each(|(e, ((pe, ce), mut mc))| {
        let (n, r0) = (batch.lengths[e], batch.offsets[e]);
        let (nq, q0) = lrows.queries(batch, e);
        let rws = r0 * d..(r0 + n) * d;
        let (qe, ke, ve) = (&q[q0 * d..(q0 + nq) * d], &k[rws.clone()], &v[rws]);
        for hh in 0..h {
            let c0 = hh * dh;
            let p = &mut pe[hh * nq * n..(hh + 1) * nq * n];
            kernels::matmul_bt_strided(&qe[c0..], d, &ke[c0..], d, p, nq, dh, n);
            kernels::softmax_rows_scaled(p, n, scale);
            if let (Some((raw, dn)), Some(m)) = (mc.as_mut(), key_mask) {
                masks::renormalise(p, &m[r0..r0 + n], &mut raw[hh * nq * n..(hh + 1) * nq * n], &mut dn[hh * nq..(hh + 1) * nq]);
            }
            kernels::matmul_strided_out(p, &ve[c0..], d, &mut ce[c0..], d, nq, n, dh);
        }
    });
    let mut attended = linear_forward(&ctx, &layer.attn_out, nq_all);
    kernels::add_assign_par(&mut attended, xq);
    let (a, ln1) = layer_norm_forward(&attended, &layer.attn_ln, eps);
    let inter_pre = linear_forward(&a, &layer.ffn_in, nq_all);
    let inter_act: Vec<f32> = if c.activation == Activation::Gelu {
        kernels::activated_new(&inter_pre, Activation::Gelu)
    } else {
        inter_pre.par_iter().map(|&u| activation(u, c.activation)).collect()
    };
    let mut ffn = linear_forward(&inter_act, &layer.ffn_out, nq_all);
    kernels::add_assign_par(&mut ffn, &a);
    let (y, ln2) = layer_norm_forward(&ffn, &layer.out_ln, eps);
    (y, LayerCache { q, k, v, probs, ctx, ln1, a, inter_pre, inter_act, ln2, masked: mask_cache })
}

/// Split `buf` into `b` consecutive blocks of `per(e)` values, in example order.
pub(crate) fn split_blocks(mut buf: &mut [f32], b: usize, per: impl Fn(usize) -> usize) -> Vec<&mut [f32]> {
    let mut out = Vec::with_capacity(b);
    for e in 0..b {
        let (blk, rest) = std::mem::take(&mut buf).split_at_mut(per(e));
        out.push(blk);
        buf = rest;
    }
    out
}

/// `log_softmax(row)[i]`, in f64.
pub fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    row[i] as f64 - lse
}
