//! The native trainer's backward pass: gradients of the mean cross-entropy of
//! [`forward`](super::forward::forward) with respect to every parameter, on the crate's GEMMs
//! (`dX = dY·Wᵀ`, `dW = Xᵀ·dY`, the transposed operand read through its strides,
//! [`kernels::matmul_t`]); [`backward_with`] takes other losses' gradients on the logits, the
//! hidden states and the attention scores instead (ApproxNet distillation).

use rayon::prelude::*;

use crate::kernels;
use crate::model::config::Activation;
use crate::train::native::batch::PackedBatch;
use crate::train::native::forward::{gather_cls, split_blocks, Forward, LayerCache, LayerRows, LnCache};
use crate::train::native::masks;
use crate::train::native::params::{Dense, LayerNormParams, NativeBert, NativeLayer};

/// Backward of `y = x·W + b` (`x` `[m, d_in]`, `dy` `[m, d_out]`): writes `grad.w = xᵀ·dy`,
/// `grad.b = Σ_rows dy`; returns `dx = dy·Wᵀ` when `want_dx`.
pub fn linear_backward(x: &[f32], dy: &[f32], w: &Dense, grad: &mut Dense, m: usize, want_dx: bool) -> Option<Vec<f32>> {
    let (di, dout) = (w.d_in, w.d_out);
    kernels::column_sums(dy, dout, &mut grad.b);
    kernels::matmul_t(x, true, dy, false, &mut grad.w, di, m, dout, false);
    want_dx.then(|| kernels::matmul_t_new(dy, false, &w.w, true, m, dout, di))
}

/// [`linear_backward`] with `dx += dy·Wᵀ` accumulated into `dx` `[m, d_in]` (the GEMM adds into
/// it: no separate buffer and pass for a residual or for Q/K/V sharing one input).
///
/// Panics if `dx.len() != m · d_in`.
pub fn linear_backward_acc(x: &[f32], dy: &[f32], w: &Dense, grad: &mut Dense, m: usize, dx: &mut [f32]) {
    linear_backward(x, dy, w, grad, m, false);
    kernels::matmul_t(dy, false, &w.w, true, dx, m, w.d_out, w.d_in, true);
}

/// Backward of a LayerNorm `y = x̂·γ + β`: writes `grad.gamma`, `grad.beta`; returns `dx`
/// (row blocks in parallel, their γ/β sums added in block order).
pub fn layer_norm_backward(dy: &[f32], cache: &LnCache, p: &LayerNormParams, grad: &mut LayerNormParams) -> Vec<f32> {
    let d = p.gamma.len();
    const ROWS: usize = 64;
    let mut dx = kernels::zeros_par(dy.len());
    let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(ROWS * d)
        .zip(dy.par_chunks(ROWS * d))
        .zip(cache.xhat.par_chunks(ROWS * d))
        .zip(cache.inv_std.par_chunks(ROWS))
        .map(|(((dxb, dyb), xhb), invb)| {
            let (mut gg, mut gb) = (vec![0.0f32; d], vec![0.0f32; d]);
            let mut dxhat = vec![0.0f32; d];
            for (r, (dyr, dxr)) in dyb.chunks_exact(d).zip(dxb.chunks_exact_mut(d)).enumerate() {
                let xh = &xhb[r * d..(r + 1) * d];
                let (mut s1, mut s2) = (0.0f64, 0.0f64);
                for i in 0..d {
                    gg[i] += dyr[i] * xh[i];
                    gb[i] += dyr[i];
                    dxhat[i] = dyr[i] * p.gamma[i];
                    s1 += dxhat[i] as f64;
                    s2 += (dxhat[i] * xh[i]) as f64;
                }
                let (m1, m2) = ((s1 / d as f64) as f32, (s2 / d as f64) as f32);
                let inv = invb[r];
                for i in 0..d {
                    dxr[i] = inv * (dxhat[i] - m1 - xh[i] * m2);
                }
            }
            (gg, gb)
        })
        .collect();
    grad.gamma.iter_mut().for_each(|v| *v = 0.0);
    grad.beta.iter_mut().for_each(|v| *v = 0.0);
    for (gg, gb) in partial {
        for i in 0..d {
            grad.gamma[i] += gg[i];
            grad.beta[i] += gb[i];
        }
    }
    dx
}

/// `d act(x) / dx`.
pub fn activation_grad(x: f32, act: Activation) -> f32 {
    match act {
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f32::consts::PI).sqrt();
            cdf + x * pdf
        }
        Activation::GeluTanh => {
            let c = (2.0f32 / std::f32::consts::PI).sqrt();
            let u = c * (x + 0.044715 * x * x * x);
            let th = u.tanh();
            0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * c * (1.0 + 3.0 * 0.044715 * x * x)
        }
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
    }
}

/// Gradients of `fw.loss` (the mean cross-entropy) with respect to every parameter of `model`.
pub fn backward(model: &NativeBert, batch: &PackedBatch, fw: &Forward) -> NativeBert {
    let mut g = model.zeros_like();
    backward_into(model, batch, fw, &mut g);
    g
}

/// [`backward`] into the buffers of `g` (shaped as `model`, e.g. [`NativeBert::zeros_like`]),
/// overwriting every value: a training loop keeps one `g` across steps and saves allocating and
/// first-touching the ~90 MB of a BERT-small gradient every step.
pub fn backward_into(model: &NativeBert, batch: &PackedBatch, fw: &Forward, g: &mut NativeBert) {
    backward_with(model, batch, fw, g, &ExtraGrads::default());
}

/// [`backward_into`] for any loss on the logits, through the token masks `fw` ran with
/// ([`forward_masked`](super::forward::forward_masked)): `dlogits` `[B, C]` is dL/dlogits
/// (`None`: the mean cross-entropy of `fw.loss`). With `want_mask_grads` and masks, returns
/// dL/dm^l for l = 1..=L+1 (`L + 1` vectors `[N]`, packed as the batch); else `None`.
pub fn backward_full(
    model: &NativeBert,
    batch: &PackedBatch,
    fw: &Forward,
    g: &mut NativeBert,
    dlogits: Option<&[f32]>,
    want_mask_grads: bool,
) -> Option<Vec<Vec<f32>>> {
    let head = match dlogits {
        Some(dl) => HeadGrad::Logits(dl),
        None => HeadGrad::CrossEntropy,
    };
    backward_with(model, batch, fw, g, &ExtraGrads { head, mask_grads: want_mask_grads, ..ExtraGrads::default() })
}

/// Where the gradient entering the head comes from.
#[derive(Debug, Clone, Copy, Default)]
pub enum HeadGrad<'a> {
    /// The mean cross-entropy of `fw.logits` against the batch labels (fine-tuning).
    #[default]
    CrossEntropy,
    /// `d loss / d logits` `[B, C]` of another loss on the logits (e.g. distillation's L_pred).
    Logits(&'a [f32]),
    /// No loss on the head: the pooler and classifier gradients are zero and the last layer's
    /// output gets only what [`ExtraGrads::hidden`] gives it.
    None,
}

/// Gradients of losses on the encoder's internals, injected by [`backward_with`] (ApproxNet
/// distillation, ALGORITHM.md section 2; [`super::distill`]). The default is plain fine-tuning.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtraGrads<'a> {
    pub head: HeadGrad<'a>,
    /// `d loss / d hidden[l]` `[N, d]` (packed rows, as [`Forward::hidden`]: 0 = embedding output,
    /// l = layer l's output), added to what flows back from above; missing or `None`: nothing.
    pub hidden: &'a [Option<Vec<f32>>],
    /// `d loss / d S_l` for layer l's pre-softmax scores `S = QKᵀ/√d_h` (before the padding
    /// bias), in the layout of [`LayerCache::probs`](super::forward::LayerCache::probs) (per
    /// example `[H, n_e, n_e]`); missing or `None`: nothing.
    pub scores: &'a [Option<Vec<f32>>],
    /// With token masks in the forward ([`forward_masked`](super::forward::forward_masked)):
    /// also return dL/dm^l (see [`backward_full`]).
    pub mask_grads: bool,
    /// Masks computed from the attention probabilities (LTP, ALGORITHM.md section 6): the path
    /// mask -> probabilities, called layer by layer (needs `mask_grads` and masks in the forward).
    pub probs: Option<&'a dyn ProbsHook>,
}

/// The backward of masks that a forward computed from attention probabilities
/// ([`forward_with`](super::forward::forward_with)'s hook), called by [`backward_with`] at
/// layer `l` (0-based, top down) once dL/dm^{l+2} = `dm_next` (1-based `m^{l+2}` = `m[l + 1]`,
/// the mask scaling layer l's output) is complete: it adds dL/dm^{l+1} (`m[l]`, layer l's key
/// mask) of its own path into `dm_this` and returns the extra dL/dP̃ of layer l's renormalised
/// probabilities (layout of `LayerCache::probs`), or `None`.
pub trait ProbsHook: Sync {
    fn probs_grad(&self, l: usize, dm_next: &[f32], dm_this: &mut [f32]) -> Option<Vec<f32>>;
}

impl std::fmt::Debug for dyn ProbsHook + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbsHook")
    }
}

/// [`backward_into`] with the head's gradient and extra gradients on hidden states and
/// attention scores given by `extra` (the cross-entropy path is `ExtraGrads::default()`, bit for
/// bit [`backward_into`]).
/// With masks in `fw` and `extra.mask_grads`, returns dL/dm^l for l = 1..=L+1 (`L + 1` vectors
/// `[N]`, packed as the batch); else `None`. A forward that ran the last layer for the CLS rows
/// only ([`forward_cls_last`](super::forward::forward_cls_last)) is back-propagated through
/// those rows (K and V over all rows).
///
/// Panics if `fw` ran the last layer for the CLS rows only and `extra` has a gradient on the
/// last hidden state or a probabilities hook (those read every row of the last layer).
pub fn backward_with(
    model: &NativeBert,
    batch: &PackedBatch,
    fw: &Forward,
    g: &mut NativeBert,
    extra: &ExtraGrads,
) -> Option<Vec<Vec<f32>>> {
    let want_mask_grads = extra.mask_grads;
    let c = &model.config;
    let tm = fw.masks.as_ref();
    let mut dmask: Vec<Vec<f32>> = match tm {
        Some(t) if want_mask_grads => vec![vec![0.0f32; batch.rows()]; t.m.len()],
        _ => Vec::new(),
    };
    let (b, d) = (batch.b, c.hidden_size);
    let bt = batch.rows();
    // the embedding tables are accumulated into; every other gradient is written in full
    g.word.par_chunks_mut(1 << 16).for_each(|x| x.fill(0.0));
    g.position.fill(0.0);
    g.token_type.fill(0.0);
    let extra_hidden = |l: usize| extra.hidden.get(l).and_then(|x| x.as_deref());
    let mut dy = match extra.head {
        HeadGrad::CrossEntropy => head_backward(model, batch, fw, g, &ce_logit_grads(model, batch, fw)),
        HeadGrad::Logits(dl) => head_backward(model, batch, fw, g, dl),
        HeadGrad::None => {
            for x in g.pooler.iter_mut().chain([&mut g.classifier]) {
                x.w.fill(0.0);
                x.b.fill(0.0);
            }
            vec![0.0f32; if fw.cls_last { b } else { bt } * d]
        }
    };
    let n_layers = model.layers.len();
    for (l, layer) in model.layers.iter().enumerate().rev() {
        let lrows = if fw.cls_last && l + 1 == n_layers { LayerRows::Cls } else { LayerRows::All };
        if let Some(e) = extra_hidden(l + 1) {
            assert!(
                lrows == LayerRows::All,
                "backward_with: an extra gradient on the last hidden state needs a forward over all rows, not forward_cls_last"
            );
            add_into(&mut dy, e);
        }
        let extra_scores = extra.scores.get(l).and_then(|x| x.as_deref());
        let cache = &fw.layers[l];
        let x = &fw.hidden[l];
        let gl = &mut g.layers[l];
        if let Some(t) = tm {
            let mut scratch = Vec::new();
            let dm = dmask.get_mut(l + 1).unwrap_or(&mut scratch);
            dm.resize(bt, 0.0);
            match lrows {
                LayerRows::All => masks::scale_rows_backward(&mut dy, &cache.ln2.xhat, &layer.out_ln, &t.m[l + 1], dm),
                LayerRows::Cls => {
                    let cls_rows = &batch.offsets[..b];
                    let m_cls: Vec<f32> = cls_rows.iter().map(|&r| t.m[l + 1][r]).collect();
                    let mut dm_cls = vec![0.0f32; b];
                    masks::scale_rows_backward(&mut dy, &cache.ln2.xhat, &layer.out_ln, &m_cls, &mut dm_cls);
                    for (&r, v) in cls_rows.iter().zip(&dm_cls) {
                        dm[r] += *v;
                    }
                }
            }
        }
        let extra_probs = match extra.probs {
            Some(hook) if dmask.len() > l + 1 => {
                assert!(lrows == LayerRows::All, "backward_with: a probabilities hook needs a forward over all rows, not forward_cls_last");
                let (lo, hi) = dmask.split_at_mut(l + 1);
                hook.probs_grad(l, &hi[0], &mut lo[l])
            }
            _ => None,
        };
        let dm_keys = dmask.get_mut(l);
        dy = layer_backward(
            model,
            layer,
            batch,
            x,
            cache,
            gl,
            &dy,
            lrows,
            tm.map(|t| t.m[l].as_slice()),
            dm_keys,
            extra_probs.as_deref(),
            extra_scores,
        );
    }
    if let Some(e) = extra_hidden(0) {
        add_into(&mut dy, e);
    }
    // embeddings: LayerNorm, then scatter into the tables
    let demb = layer_norm_backward(&dy, &fw.emb_ln, &model.emb_ln, &mut g.emb_ln);
    for e in 0..b {
        for j in 0..batch.lengths[e] {
            let r = batch.offsets[e] + j;
            let row = &demb[r * d..(r + 1) * d];
            let (w, ty, p) = (batch.ids[r] * d, batch.types[r] * d, j * d);
            for (table, at) in [(&mut g.word, w), (&mut g.token_type, ty), (&mut g.position, p)] {
                for (acc, v) in table[at..at + d].iter_mut().zip(row) {
                    *acc += *v;
                }
            }
        }
    }
    (want_mask_grads && tm.is_some()).then_some(dmask)
}

/// Backward of one encoder layer ([`super::forward`]'s `layer_forward`) for its query rows
/// `lrows`: from `dy` `[Nq, d]` (dL/d its output, after any output-mask scaling) writes the
/// layer's gradients into `gl` and returns dL/dx `[N, d]` for its input `x`. With section 4.3's
/// key mask `key_mask` `[N]` (and the forward's renormalisation cache), adds dL/d key mask into
/// `dm_keys` when given; `extra_probs` / `extra_scores` are extra gradients on the renormalised
/// probabilities / the pre-softmax scores (layout of `cache.probs`).
#[allow(clippy::too_many_arguments)]
fn layer_backward(
    model: &NativeBert,
    layer: &NativeLayer,
    batch: &PackedBatch,
    x: &[f32],
    cache: &LayerCache,
    gl: &mut NativeLayer,
    dy: &[f32],
    lrows: LayerRows,
    key_mask: Option<&[f32]>,
    dm_keys: Option<&mut Vec<f32>>,
    extra_probs: Option<&[f32]>,
    extra_scores: Option<&[f32]>,
) -> Vec<f32> {
    let c = &model.config;
    let (b, d) = (batch.b, c.hidden_size);
    let (h, dh) = (c.num_heads, c.head_size());
    let bt = batch.rows();
    let nq_all = lrows.count(batch);
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    // FFN block: y = LN2(ffn_out(act(ffn_in(a))) + a)
    let dffn = layer_norm_backward(dy, &cache.ln2, &layer.out_ln, &mut gl.out_ln);
    let mut dinter = linear_backward(&cache.inter_act, &dffn, &layer.ffn_out, &mut gl.ffn_out, nq_all, true).expect("dx requested");
    if c.activation == Activation::Gelu {
        kernels::gelu_backward(&mut dinter, &cache.inter_pre);
    } else {
        dinter.par_iter_mut().zip(cache.inter_pre.par_iter()).for_each(|(dv, &u)| *dv *= activation_grad(u, c.activation));
    }
    // the residual's gradient dffn, plus ffn_in's dX accumulated into it
    let mut da = dffn;
    linear_backward_acc(&cache.a, &dinter, &layer.ffn_in, &mut gl.ffn_in, nq_all, &mut da);
    // attention block: a = LN1(attn_out(ctx) + x)
    let datt = layer_norm_backward(&da, &cache.ln1, &layer.attn_ln, &mut gl.attn_ln);
    let dctx = linear_backward(&cache.ctx, &datt, &layer.attn_out, &mut gl.attn_out, nq_all, true).expect("dx requested");
    let mut dq = kernels::zeros_par(nq_all * d);
    let mut dk = kernels::zeros_par(bt * d);
    let mut dv = kernels::zeros_par(bt * d);
    let masked = key_mask.zip(cache.masked.as_ref());
    let nq_of = |e: usize| lrows.queries(batch, e).0;
    // per example: its heads' dL/dm contributions, `[H, n]` (added in order below)
    let mut dm_blocks: Vec<Vec<f32>> =
        batch.lengths.iter().map(|&n| if masked.is_some() && dm_keys.is_some() { vec![0.0f32; h * n] } else { Vec::new() }).collect();
    // one task per example (as the forward): its rows of dq, dk, dv and its [H, nq, n]
    // probabilities; heads are column blocks of the row-major [rows, d] buffers
    let tasks: Vec<_> = split_blocks(&mut dq, b, |e| nq_of(e) * d)
        .into_iter()
        .zip(split_blocks(&mut dk, b, |e| batch.lengths[e] * d))
        .zip(split_blocks(&mut dv, b, |e| batch.lengths[e] * d))
        .zip(dm_blocks.iter_mut())
        .enumerate()
        .collect();
    let p_starts: Vec<usize> = (0..b)
        .scan(0usize, |acc, e| {
            let s = *acc;
            *acc += h * nq_of(e) * batch.lengths[e];
            Some(s)
        })
        .collect();
    tasks.into_par_iter().for_each(|(e, (((dqe, dke), dve), dme))| {
        let (n, r0) = (batch.lengths[e], batch.offsets[e]);
        let (nq, q0) = lrows.queries(batch, e);
        let rws = r0 * d..(r0 + n) * d;
        let qrws = q0 * d..(q0 + nq) * d;
        let (qe, ke, ve, dce) = (&cache.q[qrws.clone()], &cache.k[rws.clone()], &cache.v[rws], &dctx[qrws]);
        let mut ds = vec![0.0f32; nq * n];
        let mut dm_scratch = vec![0.0f32; n];
        for hh in 0..h {
            let c0 = hh * dh;
            let p0 = p_starts[e] + hh * nq * n;
            let pspan = p0..p0 + nq * n;
            let mut p = &cache.probs[pspan.clone()];
            // dV = Pᵀ·dC, dP = dC·Vᵀ
            kernels::matmul_at_strided(p, &dce[c0..], d, &mut dve[c0..], d, n, nq, dh, false);
            kernels::matmul_bt_strided(&dce[c0..], d, &ve[c0..], d, &mut ds, nq, dh, n);
            if let Some(ep) = extra_probs {
                add_into(&mut ds, &ep[pspan.clone()]);
            }
            // section 4.3's renormalisation: dP̃ -> dP (the softmax before it), and dm
            if let Some((m, mc)) = masked {
                let d0 = h * q0 + hh * nq;
                let dmb = if dme.is_empty() { &mut dm_scratch[..] } else { &mut dme[hh * n..(hh + 1) * n] };
                masks::renormalise_backward(&mut ds, p, &mc.raw[pspan.clone()], &mc.denom[d0..d0 + nq], &m[r0..r0 + n], dmb);
                p = &mc.raw[pspan.clone()];
            }
            // softmax backward, then the 1/√d_h scale: dS = P ⊙ (dP - Σ_j P dP) / √d_h
            // (plus the extra gradient on S of a loss on the scores, before the scale)
            kernels::softmax_backward_rows(&mut ds, p, extra_scores.map(|es| &es[pspan.clone()]), n, scale);
            // dQ = dS·K, dK = dSᵀ·Q
            kernels::matmul_strided_out(&ds, &ke[c0..], d, &mut dqe[c0..], d, nq, n, dh);
            kernels::matmul_at_strided(&ds, &qe[c0..], d, &mut dke[c0..], d, n, nq, dh, false);
        }
    });
    if let Some(dm) = dm_keys {
        // the heads' and queries' contributions, block by block in order
        for (e, blk) in dm_blocks.iter().enumerate() {
            let (n, r0) = (batch.lengths[e], batch.offsets[e]);
            for hb in blk.chunks_exact(n) {
                for (acc, v) in dm[r0..r0 + n].iter_mut().zip(hb) {
                    *acc += *v;
                }
            }
        }
    }
    match lrows {
        LayerRows::All => {
            let mut dx = datt;
            for (proj, gproj, dproj) in
                [(&layer.query, &mut gl.query, &dq), (&layer.key, &mut gl.key, &dk), (&layer.value, &mut gl.value, &dv)]
            {
                linear_backward_acc(x, dproj, proj, gproj, bt, &mut dx);
            }
            dx
        }
        LayerRows::Cls => {
            // the CLS rows: residual and Q; every row: K and V
            let mut dxq = datt;
            linear_backward_acc(&gather_cls(x, batch, d), &dq, &layer.query, &mut gl.query, nq_all, &mut dxq);
            let mut dx = linear_backward(x, &dk, &layer.key, &mut gl.key, bt, true).expect("dx requested");
            linear_backward_acc(x, &dv, &layer.value, &mut gl.value, bt, &mut dx);
            for (e, row) in dxq.chunks_exact(d).enumerate() {
                let r = batch.offsets[e];
                add_into(&mut dx[r * d..(r + 1) * d], row);
            }
            dx
        }
    }
}

/// `acc += x`, element by element.
fn add_into(acc: &mut [f32], x: &[f32]) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a += *v;
    }
}

/// `d loss / d logits` `[B, C]` of the mean cross-entropy: `(softmax - onehot) / B`.
fn ce_logit_grads(model: &NativeBert, batch: &PackedBatch, fw: &Forward) -> Vec<f32> {
    let (b, nl) = (batch.b, model.classifier.d_out);
    let mut dlogits = vec![0.0f32; b * nl];
    for e in 0..b {
        let row = &fw.logits[e * nl..(e + 1) * nl];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        for i in 0..nl {
            let p = (row[i] as f64 - max).exp() / sum;
            let y = if i == batch.labels[e] { 1.0 } else { 0.0 };
            dlogits[e * nl + i] = ((p - y) / b as f64) as f32;
        }
    }
    dlogits
}

/// Backward of the head (classifier, tanh pooler) from `dlogits` `[B, C]`: writes their
/// gradients into `g`; returns `d loss / d hidden[L]` `[N, d]` (non-zero on the CLS rows only),
/// or `[B, d]` (the CLS rows) when the forward computed the last layer for them only.
fn head_backward(model: &NativeBert, batch: &PackedBatch, fw: &Forward, g: &mut NativeBert, dlogits: &[f32]) -> Vec<f32> {
    let (b, d) = (batch.b, model.config.hidden_size);
    let dpooled = linear_backward(&fw.pooled, dlogits, &model.classifier, &mut g.classifier, b, true).expect("dx requested");
    let dcls = match (&model.pooler, &mut g.pooler) {
        (Some(p), Some(gp)) => {
            let dpre: Vec<f32> = dpooled.iter().zip(&fw.pooled).map(|(dy, y)| dy * (1.0 - y * y)).collect();
            linear_backward(&fw.cls, &dpre, p, gp, b, true).expect("dx requested")
        }
        _ => dpooled,
    };
    if fw.cls_last {
        return dcls;
    }
    let mut dy = kernels::zeros_par(batch.rows() * d);
    for e in 0..b {
        let r = batch.offsets[e];
        dy[r * d..(r + 1) * d].copy_from_slice(&dcls[e * d..(e + 1) * d]);
    }
    dy
}
