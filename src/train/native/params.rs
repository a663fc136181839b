//! The native trainer's parameters: a post-LayerNorm text encoder (BERT) with pooler and
//! classifier as plain `f32` buffers, linear weights `[in, out]` (burn's [`Lin`] layout, so
//! `y = x·W + b` is one row-major product). Converted from and to the neutral HF-named tensors
//! (`Encoder::hf_tensors`, `TrainBert::hf_tensors`). The same type holds gradients and AdamW
//! moments ([`NativeBert::zeros_like`]).
//!
//! [`Lin`]: crate::train::model::Lin

use std::path::Path;

use crate::error::ModelError;
use crate::model::checkpoint::TensorStore;
use crate::model::config::EncoderConfig;
use crate::model::Encoder;
use crate::train::model::{to_vec, Lin, Norm, TrainBert};

/// A linear layer, `w` `[d_in, d_out]` row-major, bias `[d_out]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub d_in: usize,
    pub d_out: usize,
}

impl Dense {
    /// From an HF weight `[out, in]` and bias `[out]`.
    pub fn from_hf(w_hf: &[f32], b: Vec<f32>, d_in: usize, d_out: usize) -> Self {
        Self { w: transpose(w_hf, d_out, d_in), b, d_in, d_out }
    }
    /// `(weight [out, in], bias)` in HF layout.
    pub fn to_hf(&self) -> (Vec<f32>, Vec<f32>) {
        (transpose(&self.w, self.d_in, self.d_out), self.b.clone())
    }
    /// The same shapes, all zeros.
    pub fn zeros_like(&self) -> Self {
        Self { w: vec![0.0; self.w.len()], b: vec![0.0; self.b.len()], d_in: self.d_in, d_out: self.d_out }
    }
}

/// LayerNorm scale γ and shift β, `[d]` each.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormParams {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

impl LayerNormParams {
    fn zeros_like(&self) -> Self {
        Self { gamma: vec![0.0; self.gamma.len()], beta: vec![0.0; self.beta.len()] }
    }
}

/// One encoder layer (HF `encoder.layer.{i}`; same field names as burn's `TrainLayer`).
#[derive(Debug, Clone, PartialEq)]
pub struct NativeLayer {
    pub query: Dense,
    pub key: Dense,
    pub value: Dense,
    pub attn_out: Dense,
    pub attn_ln: LayerNormParams,
    pub ffn_in: Dense,
    pub ffn_out: Dense,
    pub out_ln: LayerNormParams,
}

/// A text encoder with a classification head, as trainable buffers. Embedding tables are
/// `[rows, d]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeBert {
    pub config: EncoderConfig,
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub token_type: Vec<f32>,
    pub emb_ln: LayerNormParams,
    pub layers: Vec<NativeLayer>,
    pub pooler: Option<Dense>,
    pub classifier: Dense,
}

/// `x` `[rows, cols]` row-major, transposed to `[cols, rows]`.
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    transpose_into(x, rows, cols, &mut out);
    out
}

/// `x` `[rows, cols]` transposed into `out` `[cols, rows]` (blocked for cache reuse; blocks of
/// output rows in parallel on the rayon pool).
pub fn transpose_into(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    use rayon::prelude::*;
    assert!(x.len() == rows * cols && out.len() == rows * cols, "transpose: {} / {} values for {rows} x {cols}", x.len(), out.len());
    const BLK: usize = 32;
    if rows == 0 || cols == 0 {
        return;
    }
    let block = |(cb, o): (usize, &mut [f32])| {
        let c0 = cb * BLK;
        let cn = o.len() / rows;
        for r0 in (0..rows).step_by(BLK) {
            for r in r0..(r0 + BLK).min(rows) {
                let src = &x[r * cols + c0..r * cols + c0 + cn];
                for (c, &v) in src.iter().enumerate() {
                    o[c * rows + r] = v;
                }
            }
        }
    };
    // small ones (attention blocks, called from parallel loops) stay on the calling thread
    if rows * cols >= 1 << 16 {
        out.par_chunks_mut(BLK * rows).enumerate().for_each(block);
    } else {
        out.chunks_mut(BLK * rows).enumerate().for_each(block);
    }
}

impl NativeBert {
    /// Whether the native trainer covers models of `config`: post-LayerNorm BERT text encoders
    /// (not vision, pre-LayerNorm, DistilBERT or RoBERTa-family checkpoints).
    pub fn covers(config: &EncoderConfig) -> bool {
        config.vision().is_none() && !config.pre_norm() && matches!(config.arch, crate::model::config::Architecture::Bert)
    }

    /// From HF-named tensors (`Encoder::hf_tensors` / `TrainBert::hf_tensors`), shapes
    /// checked against `config`.
    ///
    /// Errors: a vision or pre-LayerNorm config (the native trainer covers BERT-style text
    /// encoders only), a missing or misshapen tensor, or no classifier.
    pub fn from_hf_tensors(config: &EncoderConfig, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<Self, ModelError> {
        if config.vision().is_some() || config.pre_norm() {
            return Err(ModelError::Input(
                "the native trainer supports post-LayerNorm text encoders (BERT) only, not vision models".into(),
            ));
        }
        if !matches!(config.arch, crate::model::config::Architecture::Bert) {
            return Err(ModelError::Input(format!(
                "the native trainer supports BERT checkpoints only, not model_type {:?} (its position offset, token types and head differ); use --trainer burn",
                config.model_type()
            )));
        }
        let store = TensorStore::from_tensors(Path::new("<native trainer>"), tensors);
        let c = config;
        let (d, f) = (c.hidden_size, c.intermediate_size);
        let dense = |p: &str, d_in: usize, d_out: usize| -> Result<Dense, ModelError> {
            let w = store.get(&format!("{p}.weight"), &[d_out, d_in])?;
            let b = store.get(&format!("{p}.bias"), &[d_out])?;
            Ok(Dense::from_hf(&w, b, d_in, d_out))
        };
        let ln = |p: &str| -> Result<LayerNormParams, ModelError> {
            Ok(LayerNormParams { gamma: store.get(&format!("{p}.weight"), &[d])?, beta: store.get(&format!("{p}.bias"), &[d])? })
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let p = format!("encoder.layer.{l}");
            layers.push(NativeLayer {
                query: dense(&format!("{p}.attention.self.query"), d, d)?,
                key: dense(&format!("{p}.attention.self.key"), d, d)?,
                value: dense(&format!("{p}.attention.self.value"), d, d)?,
                attn_out: dense(&format!("{p}.attention.output.dense"), d, d)?,
                attn_ln: ln(&format!("{p}.attention.output.LayerNorm"))?,
                ffn_in: dense(&format!("{p}.intermediate.dense"), d, f)?,
                ffn_out: dense(&format!("{p}.output.dense"), f, d)?,
                out_ln: ln(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let pooler = if store.contains("pooler.dense.weight") { Some(dense("pooler.dense", d, d)?) } else { None };
        let labels = store
            .shape("classifier.weight")
            .and_then(|s| s.first().copied())
            .ok_or_else(|| ModelError::Input("the native trainer needs a classification head (tensor 'classifier.weight')".into()))?;
        Ok(Self {
            config: c.clone(),
            word: store.get("embeddings.word_embeddings.weight", &[c.vocab_size, d])?,
            position: store.get("embeddings.position_embeddings.weight", &[c.max_position_embeddings, d])?,
            token_type: store.get("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, d])?,
            emb_ln: ln("embeddings.LayerNorm")?,
            layers,
            pooler,
            classifier: dense("classifier", d, labels)?,
        })
    }

    /// From the native executor's model (weights copied). Errors as [`Self::from_hf_tensors`].
    pub fn from_model(m: &Encoder) -> Result<Self, ModelError> {
        Self::from_hf_tensors(&m.config, m.hf_tensors())
    }

    /// From burn's training module. Errors as [`Self::from_hf_tensors`].
    pub fn from_train(m: &TrainBert, config: &EncoderConfig) -> Result<Self, ModelError> {
        Self::from_hf_tensors(config, m.hf_tensors())
    }

    /// The weights as HF-named tensors `(name, shape, data)` (`[out, in]` linear weights).
    pub fn hf_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let c = &self.config;
        let d = c.hidden_size;
        let mut out = vec![
            ("embeddings.word_embeddings.weight".to_string(), vec![c.vocab_size, d], self.word.clone()),
            ("embeddings.position_embeddings.weight".to_string(), vec![c.max_position_embeddings, d], self.position.clone()),
            ("embeddings.token_type_embeddings.weight".to_string(), vec![c.type_vocab_size, d], self.token_type.clone()),
        ];
        let dense = |p: &str, x: &Dense, out: &mut Vec<(String, Vec<usize>, Vec<f32>)>| {
            let (w, b) = x.to_hf();
            out.push((format!("{p}.weight"), vec![x.d_out, x.d_in], w));
            out.push((format!("{p}.bias"), vec![x.d_out], b));
        };
        let ln = |p: &str, x: &LayerNormParams, out: &mut Vec<(String, Vec<usize>, Vec<f32>)>| {
            out.push((format!("{p}.weight"), vec![d], x.gamma.clone()));
            out.push((format!("{p}.bias"), vec![d], x.beta.clone()));
        };
        ln("embeddings.LayerNorm", &self.emb_ln, &mut out);
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("encoder.layer.{l}");
            dense(&format!("{p}.attention.self.query"), &layer.query, &mut out);
            dense(&format!("{p}.attention.self.key"), &layer.key, &mut out);
            dense(&format!("{p}.attention.self.value"), &layer.value, &mut out);
            dense(&format!("{p}.attention.output.dense"), &layer.attn_out, &mut out);
            ln(&format!("{p}.attention.output.LayerNorm"), &layer.attn_ln, &mut out);
            dense(&format!("{p}.intermediate.dense"), &layer.ffn_in, &mut out);
            dense(&format!("{p}.output.dense"), &layer.ffn_out, &mut out);
            ln(&format!("{p}.output.LayerNorm"), &layer.out_ln, &mut out);
        }
        if let Some(p) = &self.pooler {
            dense("pooler.dense", p, &mut out);
        }
        dense("classifier", &self.classifier, &mut out);
        out
    }

    /// Back to the native executor (weights copied). Errors: as `Encoder::from_store`.
    pub fn to_model(&self) -> Result<Encoder, ModelError> {
        let store = TensorStore::from_tensors(Path::new("<native trainer>"), self.hf_tensors());
        Encoder::from_store(self.config.clone(), &store)
    }

    /// The same shapes, all zeros (gradient and moment buffers).
    pub fn zeros_like(&self) -> Self {
        Self {
            config: self.config.clone(),
            word: vec![0.0; self.word.len()],
            position: vec![0.0; self.position.len()],
            token_type: vec![0.0; self.token_type.len()],
            emb_ln: self.emb_ln.zeros_like(),
            layers: self
                .layers
                .iter()
                .map(|l| NativeLayer {
                    query: l.query.zeros_like(),
                    key: l.key.zeros_like(),
                    value: l.value.zeros_like(),
                    attn_out: l.attn_out.zeros_like(),
                    attn_ln: l.attn_ln.zeros_like(),
                    ffn_in: l.ffn_in.zeros_like(),
                    ffn_out: l.ffn_out.zeros_like(),
                    out_ln: l.out_ln.zeros_like(),
                })
                .collect(),
            pooler: self.pooler.as_ref().map(Dense::zeros_like),
            classifier: self.classifier.zeros_like(),
        }
    }

    /// Every parameter tensor in a fixed order with a name (HF name; linear weights in the
    /// `[in, out]` layout of this type and of burn's `Lin`), read-only.
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        let mut out: Vec<(String, &[f32])> = vec![
            ("embeddings.word_embeddings.weight".into(), &self.word),
            ("embeddings.position_embeddings.weight".into(), &self.position),
        ];
        out.push(("embeddings.token_type_embeddings.weight".into(), &self.token_type));
        out.push(("embeddings.LayerNorm.weight".into(), &self.emb_ln.gamma));
        out.push(("embeddings.LayerNorm.bias".into(), &self.emb_ln.beta));
        for (l, layer) in self.layers.iter().enumerate() {
            for (name, x) in layer_tensor_names(l).into_iter().zip(layer_tensors(layer)) {
                out.push((name, x));
            }
        }
        if let Some(p) = &self.pooler {
            out.push(("pooler.dense.weight".into(), &p.w));
            out.push(("pooler.dense.bias".into(), &p.b));
        }
        out.push(("classifier.weight".into(), &self.classifier.w));
        out.push(("classifier.bias".into(), &self.classifier.b));
        out
    }

    /// The tensors of [`Self::tensors`], in the same order, writable.
    pub fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        let mut out: Vec<&mut [f32]> =
            vec![&mut self.word, &mut self.position, &mut self.token_type, &mut self.emb_ln.gamma, &mut self.emb_ln.beta];
        for l in &mut self.layers {
            out.extend([
                &mut l.query.w[..],
                &mut l.query.b,
                &mut l.key.w,
                &mut l.key.b,
                &mut l.value.w,
                &mut l.value.b,
                &mut l.attn_out.w,
                &mut l.attn_out.b,
                &mut l.attn_ln.gamma,
                &mut l.attn_ln.beta,
                &mut l.ffn_in.w,
                &mut l.ffn_in.b,
                &mut l.ffn_out.w,
                &mut l.ffn_out.b,
                &mut l.out_ln.gamma,
                &mut l.out_ln.beta,
            ]);
        }
        if let Some(p) = &mut self.pooler {
            out.push(&mut p.w);
            out.push(&mut p.b);
        }
        out.push(&mut self.classifier.w);
        out.push(&mut self.classifier.b);
        out
    }
}

fn layer_tensor_names(l: usize) -> Vec<String> {
    let p = format!("encoder.layer.{l}");
    [
        "attention.self.query.weight",
        "attention.self.query.bias",
        "attention.self.key.weight",
        "attention.self.key.bias",
        "attention.self.value.weight",
        "attention.self.value.bias",
        "attention.output.dense.weight",
        "attention.output.dense.bias",
        "attention.output.LayerNorm.weight",
        "attention.output.LayerNorm.bias",
        "intermediate.dense.weight",
        "intermediate.dense.bias",
        "output.dense.weight",
        "output.dense.bias",
        "output.LayerNorm.weight",
        "output.LayerNorm.bias",
    ]
    .iter()
    .map(|s| format!("{p}.{s}"))
    .collect()
}

fn layer_tensors(l: &NativeLayer) -> [&[f32]; 16] {
    [
        &l.query.w,
        &l.query.b,
        &l.key.w,
        &l.key.b,
        &l.value.w,
        &l.value.b,
        &l.attn_out.w,
        &l.attn_out.b,
        &l.attn_ln.gamma,
        &l.attn_ln.beta,
        &l.ffn_in.w,
        &l.ffn_in.b,
        &l.ffn_out.w,
        &l.ffn_out.b,
        &l.out_ln.gamma,
        &l.out_ln.beta,
    ]
}

/// burn's gradients of a text [`TrainBert`] (after `loss.backward()`), in the order and layout
/// of [`NativeBert::tensors`] (`[in, out]` linear weights); a parameter without a gradient
/// gives zeros. For comparing the native backward with burn's.
pub fn train_bert_grads(m: &TrainBert, grads: &burn::tensor::Gradients) -> Vec<(String, Vec<f32>)> {
    use burn::module::Param;
    use burn::tensor::Tensor;
    fn g<const D: usize>(p: &Param<Tensor<D>>, grads: &burn::tensor::Gradients) -> Vec<f32> {
        let v = p.val();
        let n: usize = v.dims().iter().product();
        v.grad(grads).map(to_vec).unwrap_or_else(|| vec![0.0; n])
    }
    let lin = |l: &Lin| [g(&l.w, grads), g(&l.b, grads)];
    let norm = |n: &Norm| [g(&n.gamma, grads), g(&n.beta, grads)];
    let mut vals: Vec<Vec<f32>> = Vec::new();
    if let (Some(w), Some(t), Some(ln)) = (&m.word, &m.token_type, &m.emb_ln) {
        vals.extend([g(w, grads), g(&m.position, grads), g(t, grads)]);
        vals.extend(norm(ln));
    }
    for l in &m.layers {
        vals.extend(lin(&l.query));
        vals.extend(lin(&l.key));
        vals.extend(lin(&l.value));
        vals.extend(lin(&l.attn_out));
        vals.extend(norm(&l.attn_ln));
        vals.extend(lin(&l.ffn_in));
        vals.extend(lin(&l.ffn_out));
        vals.extend(norm(&l.out_ln));
    }
    let mut names: Vec<String> = vec![
        "embeddings.word_embeddings.weight".into(),
        "embeddings.position_embeddings.weight".into(),
        "embeddings.token_type_embeddings.weight".into(),
        "embeddings.LayerNorm.weight".into(),
        "embeddings.LayerNorm.bias".into(),
    ];
    for l in 0..m.layers.len() {
        names.extend(layer_tensor_names(l));
    }
    if let Some(p) = &m.pooler {
        vals.extend(lin(p));
        names.extend(["pooler.dense.weight".into(), "pooler.dense.bias".into()]);
    }
    if let Some(c) = &m.classifier {
        vals.extend(lin(c));
        names.extend(["classifier.weight".into(), "classifier.bias".into()]);
    }
    names.into_iter().zip(vals).collect()
}
