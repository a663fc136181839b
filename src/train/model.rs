//! The encoder (BERT or ViT/DeiT) as a burn module, for training (fine-tuning, ApproxNet distillation, concrete
//! masking). Same math and HF tensor names as [`crate::model::Encoder`]; the two convert into
//! each other ([`TrainBert::from_native`], [`TrainBert::to_native`]) and tests pin them to the same
//! numbers. Runs on padded batches `[B, T]` with a validity mask, optionally with the soft masks
//! of ALGORITHM.md section 4.3.

use burn::module::{Module, Param};
use burn::tensor::activation;
use burn::tensor::module::linear;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::ModelError;
use crate::model::checkpoint::TensorStore;
use crate::model::config::{Activation, EncoderConfig, PoolerActivation};
use crate::model::families::TextLayout;
use crate::model::{split_cols, Embeddings, EncodedInput, Encoder, LayerNorm, Linear};

/// Linear layer, weight `[in, out]`.
#[derive(Module, Debug)]
pub struct Lin {
    pub w: Param<Tensor<2>>,
    pub b: Param<Tensor<1>>,
}

impl Lin {
    /// `x W + b` over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.w.val(), Some(self.b.val()))
    }
    /// From an HF weight `[out, in]` and bias `[out]`.
    pub fn from_hf(w_hf: &[f32], b: &[f32], d_in: usize, d_out: usize, device: &Device) -> Self {
        let mut w = vec![0.0f32; d_in * d_out];
        for o in 0..d_out {
            for i in 0..d_in {
                w[i * d_out + o] = w_hf[o * d_in + i];
            }
        }
        Self {
            w: Param::from_tensor(Tensor::from_data(TensorData::new(w, [d_in, d_out]), device)),
            b: Param::from_tensor(Tensor::from_data(TensorData::new(b.to_vec(), [d_out]), device)),
        }
    }
    /// Random init (normal, std 0.02, as BERT), zero bias; deterministic from `seed`.
    pub fn random(d_in: usize, d_out: usize, seed: u64, device: &Device) -> Self {
        let mut rng = crate::data::split::SplitMix64::new(seed);
        let w_hf: Vec<f32> = (0..d_in * d_out).map(|_| normal(&mut rng) * 0.02).collect();
        Self::from_hf(&w_hf, &vec![0.0; d_out], d_in, d_out, device)
    }
    /// `(weight [out, in], bias)` in HF layout.
    pub fn to_hf(&self) -> (Vec<f32>, Vec<f32>, usize, usize) {
        let [d_in, d_out] = self.w.val().dims();
        let w = to_vec(self.w.val());
        let mut w_hf = vec![0.0f32; d_in * d_out];
        for i in 0..d_in {
            for o in 0..d_out {
                w_hf[o * d_in + i] = w[i * d_out + o];
            }
        }
        (w_hf, to_vec(self.b.val()), d_in, d_out)
    }
}

/// Standard normal sample (Box-Muller) from the crate's seeded PRNG.
pub fn normal(rng: &mut crate::data::split::SplitMix64) -> f32 {
    rng.next_normal()
}

/// LayerNorm `γ`, `β` (biased variance, as torch).
#[derive(Module, Debug)]
pub struct Norm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
}

impl Norm {
    fn new(gamma: &[f32], beta: &[f32], device: &Device) -> Self {
        let d = gamma.len();
        Self {
            gamma: Param::from_tensor(Tensor::from_data(TensorData::new(gamma.to_vec(), [d]), device)),
            beta: Param::from_tensor(Tensor::from_data(TensorData::new(beta.to_vec(), [d]), device)),
        }
    }
    /// Normalise over the last dimension (`[.., d]`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>, eps: f64) -> Tensor<D> {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let xn = (x - mean) / var.add_scalar(eps).sqrt();
        xn * self.gamma.val().unsqueeze::<D>() + self.beta.val().unsqueeze::<D>()
    }
}

/// One encoder layer (HF `encoder.layer.{i}`).
#[derive(Module, Debug)]
pub struct TrainLayer {
    pub query: Lin,
    pub key: Lin,
    pub value: Lin,
    pub attn_out: Lin,
    pub attn_ln: Norm,
    pub ffn_in: Lin,
    pub ffn_out: Lin,
    pub out_ln: Norm,
}

/// Encoder + optional pooler and classifier, as a burn module. Text models use `word`,
/// `token_type` and `emb_ln`; vision models (pre-LayerNorm) use `patch_w`/`patch_b` (the conv
/// weight in HF layout `[d, C, p, p]`), `special` (class and distillation token rows) and
/// `final_ln`. `position` is `[max_positions, d]` (text) or `[n, d]` (vision).
#[derive(Module, Debug)]
pub struct TrainBert {
    pub word: Option<Param<Tensor<2>>>,
    pub position: Param<Tensor<2>>,
    pub token_type: Option<Param<Tensor<2>>>,
    pub emb_ln: Option<Norm>,
    pub patch_w: Option<Param<Tensor<4>>>,
    pub patch_b: Option<Param<Tensor<1>>>,
    pub special: Option<Param<Tensor<2>>>,
    pub layers: Vec<TrainLayer>,
    pub final_ln: Option<Norm>,
    pub pooler: Option<Lin>,
    pub classifier: Option<Lin>,
    pub distillation_classifier: Option<Lin>,
}

/// A padded batch on a device: ids and token types `[B, T]`, `valid` `[B, T]` (1 real, 0 padding);
/// for images also the patches (no padding: every image has the same length).
#[derive(Debug, Clone)]
pub struct Batch {
    pub ids: Tensor<2, Int>,
    pub types: Tensor<2, Int>,
    pub valid: Tensor<2>,
    /// Real token count per example.
    pub lengths: Vec<usize>,
    /// Flattened patches `[B, P·C·p·p]` of image inputs (reshaped by the model, which knows `C·p·p`).
    pub patches: Option<Tensor<2>>,
}

impl Batch {
    /// Pad `inputs` on the right to the longest (dynamic padding).
    pub fn from_inputs(inputs: &[&EncodedInput], device: &Device) -> Self {
        let b = inputs.len();
        let t = inputs.iter().map(|x| x.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![0i64; b * t];
        let mut types = vec![0i64; b * t];
        let mut valid = vec![0f32; b * t];
        for (e, x) in inputs.iter().enumerate() {
            for j in 0..x.len() {
                ids[e * t + j] = x.ids[j] as i64;
                types[e * t + j] = x.type_ids[j] as i64;
                valid[e * t + j] = 1.0;
            }
        }
        let patches = inputs.first().filter(|x| !x.patches.is_empty()).map(|first| {
            let per = first.patches.len();
            let mut all = Vec::with_capacity(b * per);
            for x in inputs {
                // every image of one model has the same patch count (the executor's `check_input`
                // and the data pipeline enforce it); a mismatch here is a caller bug
                assert_eq!(x.patches.len(), per, "all images of a batch must have the same number of patches");
                all.extend_from_slice(&x.patches);
            }
            Tensor::<2>::from_data(TensorData::new(all, [b, per]), device)
        });
        Self {
            ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
            types: Tensor::from_data(TensorData::new(types, [b, t]), device),
            valid: Tensor::from_data(TensorData::new(valid, [b, t]), device),
            lengths: inputs.iter().map(|x| x.len()).collect(),
            patches,
        }
    }
    /// `[B, T]`.
    pub fn dims(&self) -> [usize; 2] {
        self.valid.dims()
    }
}

/// Everything a training loss may need from one forward pass.
#[derive(Debug, Clone)]
pub struct TrainOutput {
    /// `L + 1` hidden states `[B, T, d]`: index 0 = embedding output, l = layer l (after mask scaling).
    pub hidden: Vec<Tensor<3>>,
    /// Per layer, pre-softmax attention scores `QKᵀ/√d_h` `[B, H, T, T]` (padding keys not masked).
    pub scores: Vec<Tensor<4>>,
    /// Per layer, attention probabilities `[B, H, T, T]` (padding keys 0; soft-mask renormalised).
    pub probs: Vec<Tensor<4>>,
}

impl TrainOutput {
    /// CLS rows of the last layer, `[B, d]`.
    pub fn cls(&self) -> Tensor<2> {
        let last = self.hidden.last().expect("at least the embedding output").clone();
        let [b, _, d] = last.dims();
        last.slice([0..b, 0..1, 0..d]).reshape([b, d])
    }
    /// The last layer's output `[B, T, d]` (before a vision model's final LayerNorm).
    pub fn last(&self) -> Tensor<3> {
        self.hidden.last().expect("at least the embedding output").clone()
    }
}

/// A tensor's values as f32, row-major (empty if the data cannot be read back).
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default()
}

impl TrainBert {
    /// Copy a native model's weights onto `device` (an autodiff device for training).
    pub fn from_native(m: &Encoder, device: &Device) -> Self {
        let c = &m.config;
        let d = c.hidden_size;
        let p2 = |data: &[f32], r: usize, k: usize| Param::from_tensor(Tensor::from_data(TensorData::new(data.to_vec(), [r, k]), device));
        let lin = |l: &Linear| Lin::from_hf(&l.weight_hf(), l.bias(), l.d_in(), l.d_out(), device);
        let norm = |n: &LayerNorm| Norm::new(&n.gamma, &n.beta, device);
        let layers = m
            .layers
            .iter()
            .map(|layer| {
                let (k, v) = split_cols(&layer.key_value, d);
                TrainLayer {
                    query: Lin::from_hf(&layer.query_hf.0, &layer.query_hf.1, d, d, device),
                    key: lin(&k),
                    value: lin(&v),
                    attn_out: lin(&layer.attn_out),
                    attn_ln: norm(&layer.attn_ln),
                    ffn_in: lin(&layer.ffn_in),
                    ffn_out: lin(&layer.ffn_out),
                    out_ln: norm(&layer.out_ln),
                }
            })
            .collect();
        let (word, position, token_type, emb_ln, patch_w, patch_b, special) = match (&m.embeddings, c.vision()) {
            (Embeddings::Patch(e), Some(v)) => (
                None,
                p2(&e.position, v.seq_len(), d),
                None,
                None,
                Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(e.projection.weight_hf(), [d, v.num_channels, v.patch_size, v.patch_size]),
                    device,
                ))),
                Some(Param::from_tensor(Tensor::from_data(TensorData::new(e.projection.bias().to_vec(), [d]), device))),
                Some(p2(&e.special, v.num_special_tokens(), d)),
            ),
            (Embeddings::Text(e), _) => (
                Some(p2(&e.word, c.vocab_size, d)),
                p2(&e.position, c.max_position_embeddings, d),
                // DistilBERT has no type table
                (!e.token_type.is_empty()).then(|| p2(&e.token_type, c.type_vocab_size, d)),
                Some(norm(&e.ln)),
                None,
                None,
                None,
            ),
            (Embeddings::Patch(_), None) => unreachable!("a patch embedding always comes with a vision config"),
        };
        Self {
            word,
            position,
            token_type,
            emb_ln,
            patch_w,
            patch_b,
            special,
            layers,
            final_ln: m.final_ln.as_ref().map(norm),
            pooler: m.pooler.as_ref().map(lin),
            classifier: m.classifier.as_ref().map(lin),
            distillation_classifier: m.distillation_classifier.as_ref().map(lin),
        }
    }

    /// The weights as HF-named tensors `(name, shape, data)`: BERT's names for every text family
    /// (no token-type table for DistilBERT; [`to_native`](Self::to_native) maps them back to the
    /// family, whose own names the native model writes), or ViT/DeiT names for a vision model
    /// (`deit.` when there is a distillation token, else `vit.`).
    pub fn hf_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        let p2 = |name: &str, p: &Param<Tensor<2>>, out: &mut Vec<(String, Vec<usize>, Vec<f32>)>| {
            let t = p.val();
            out.push((name.to_string(), t.dims().to_vec(), to_vec(t)));
        };
        let lin = |prefix: &str, l: &Lin, out: &mut Vec<(String, Vec<usize>, Vec<f32>)>| {
            let (w, b, i, o) = l.to_hf();
            out.push((format!("{prefix}.weight"), vec![o, i], w));
            out.push((format!("{prefix}.bias"), vec![o], b));
        };
        let norm = |prefix: &str, n: &Norm, out: &mut Vec<(String, Vec<usize>, Vec<f32>)>| {
            let g = to_vec(n.gamma.val());
            let b = to_vec(n.beta.val());
            out.push((format!("{prefix}.weight"), vec![g.len()], g));
            out.push((format!("{prefix}.bias"), vec![b.len()], b));
        };
        let vision = self.special.is_some();
        let pre = match &self.special {
            Some(sp) if sp.val().dims()[0] == 2 => "deit.",
            Some(_) => "vit.",
            None => "",
        };
        if let (Some(sp), Some(pw), Some(pb)) = (&self.special, &self.patch_w, &self.patch_b) {
            let sp = sp.val();
            let [ns, d] = sp.dims();
            let rows = to_vec(sp);
            out.push((format!("{pre}embeddings.cls_token"), vec![1, 1, d], rows[..d].to_vec()));
            if ns == 2 {
                out.push((format!("{pre}embeddings.distillation_token"), vec![1, 1, d], rows[d..].to_vec()));
            }
            let pos = self.position.val();
            out.push((format!("{pre}embeddings.position_embeddings"), [vec![1], pos.dims().to_vec()].concat(), to_vec(pos)));
            let w = pw.val();
            out.push((format!("{pre}embeddings.patch_embeddings.projection.weight"), w.dims().to_vec(), to_vec(w)));
            let b = pb.val();
            out.push((format!("{pre}embeddings.patch_embeddings.projection.bias"), b.dims().to_vec(), to_vec(b)));
        }
        if let (Some(w), Some(ln)) = (&self.word, &self.emb_ln) {
            p2("embeddings.word_embeddings.weight", w, &mut out);
            p2("embeddings.position_embeddings.weight", &self.position, &mut out);
            if let Some(t) = &self.token_type {
                p2("embeddings.token_type_embeddings.weight", t, &mut out);
            }
            norm("embeddings.LayerNorm", ln, &mut out);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("{pre}encoder.layer.{l}");
            let (att, ln1, ln2) = if vision {
                ("attention.attention", "layernorm_before", "layernorm_after")
            } else {
                ("attention.self", "attention.output.LayerNorm", "output.LayerNorm")
            };
            lin(&format!("{p}.{att}.query"), &layer.query, &mut out);
            lin(&format!("{p}.{att}.key"), &layer.key, &mut out);
            lin(&format!("{p}.{att}.value"), &layer.value, &mut out);
            lin(&format!("{p}.attention.output.dense"), &layer.attn_out, &mut out);
            norm(&format!("{p}.{ln1}"), &layer.attn_ln, &mut out);
            lin(&format!("{p}.intermediate.dense"), &layer.ffn_in, &mut out);
            lin(&format!("{p}.output.dense"), &layer.ffn_out, &mut out);
            norm(&format!("{p}.{ln2}"), &layer.out_ln, &mut out);
        }
        if let Some(n) = &self.final_ln {
            norm(&format!("{pre}layernorm"), n, &mut out);
        }
        if let Some(p) = &self.pooler {
            lin("pooler.dense", p, &mut out);
        }
        match (&self.classifier, &self.distillation_classifier) {
            (Some(c), Some(dc)) => {
                lin("cls_classifier", c, &mut out);
                lin("distillation_classifier", dc, &mut out);
            }
            (Some(c), None) => lin("classifier", c, &mut out),
            _ => {}
        }
        out
    }

    /// Back to the fast native executor (weights copied).
    pub fn to_native(&self, config: &EncoderConfig) -> Result<Encoder, ModelError> {
        let store = TensorStore::from_tensors(std::path::Path::new("<training model>"), self.hf_tensors());
        match TextLayout::canonical(&config.arch) {
            Some(names) => Encoder::from_store_with(config.clone(), &store, &names),
            None => Encoder::from_store(config.clone(), &store),
        }
    }

    /// Embedding output `[B, T, d]` of a padded batch (text: word + type + position, LayerNorm;
    /// images: class/distillation rows and projected patches, plus positions). Text positions
    /// start at [`EncoderConfig::position_offset`]; families that ignore type ids add type 0's
    /// row (RoBERTa) or none (DistilBERT).
    pub fn embed(&self, c: &EncoderConfig, batch: &Batch) -> Tensor<3> {
        let [b, t] = batch.dims();
        let d = c.hidden_size;
        if let (Some(sp), Some(pw), Some(pb), Some(patches)) = (&self.special, &self.patch_w, &self.patch_b, &batch.patches) {
            let [dd, ch, p1, p2] = pw.val().dims();
            let pd = ch * p1 * p2;
            let np = patches.dims()[1] / pd;
            let w = pw.val().reshape([dd, pd]).transpose();
            let x = linear(patches.clone().reshape([b, np, pd]), w, Some(pb.val()));
            let ns = sp.val().dims()[0];
            let special = sp.val().unsqueeze::<3>().repeat_dim(0, b);
            let pos = self.position.val().slice([0..ns + np, 0..d]).unsqueeze::<3>();
            return Tensor::cat(vec![special, x], 1) + pos;
        }
        let (Some(word), Some(ln)) = (&self.word, &self.emb_ln) else {
            panic!("TrainBert::embed: a text model needs token ids, an image model needs patches");
        };
        let flat = |x: Tensor<2, Int>| x.reshape([b * t]);
        let word = word.val().select(0, flat(batch.ids.clone())).reshape([b, t, d]);
        let off = c.position_offset();
        let pos = self.position.val().slice([off..off + t, 0..d]).unsqueeze::<3>();
        let x = match &self.token_type {
            Some(tt) if c.uses_token_types() => word + tt.val().select(0, flat(batch.types.clone())).reshape([b, t, d]),
            Some(tt) => word + tt.val().slice([0..1, 0..d]).unsqueeze::<3>(),
            None => word,
        };
        ln.forward(x + pos, c.layer_norm_eps)
    }

    /// One encoder layer on `[B, T, d]`: the shared layer code of every training mode.
    ///
    /// `key_bias` `[B, 1, 1, T]` is added to the scores (0 real keys, -1e9 padding);
    /// `key_mask` `[B, T]`, when given, renormalises attention over mask-weighted keys
    /// (section 4.3: `P_ij <- P_ij m_j / (Σ_k P_ik m_k + 1e-9)`); `out_scale` `[B, T]`, when
    /// given, scales the output rows after the last LayerNorm. Returns (output, scores, probs).
    pub fn layer(
        &self,
        c: &EncoderConfig,
        l: usize,
        x: Tensor<3>,
        key_bias: Tensor<4>,
        key_mask: Option<Tensor<2>>,
        out_scale: Option<Tensor<2>>,
    ) -> (Tensor<3>, Tensor<4>, Tensor<4>) {
        let [b, t, d] = x.dims();
        let h = c.num_heads;
        let dh = c.head_size();
        let layer = &self.layers[l];
        let split = |y: Tensor<3>| y.reshape([b, t, h, dh]).swap_dims(1, 2);
        let pre_norm = c.pre_norm();
        let x_in = if pre_norm { layer.attn_ln.forward(x.clone(), c.layer_norm_eps) } else { x.clone() };
        let q = split(layer.query.forward(x_in.clone()));
        let k = split(layer.key.forward(x_in.clone()));
        let v = split(layer.value.forward(x_in));
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (dh as f64).sqrt());
        let mut p = activation::softmax(scores.clone() + key_bias, 3);
        if let Some(m) = key_mask {
            let pm = p * m.reshape([b, 1, 1, t]);
            let denom = pm.clone().sum_dim(3).add_scalar(1e-9);
            p = pm / denom;
        }
        let ctx = p.clone().matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        let attended = layer.attn_out.forward(ctx) + x;
        let a = if pre_norm { attended } else { layer.attn_ln.forward(attended, c.layer_norm_eps) };
        let ffn_input = if pre_norm { layer.out_ln.forward(a.clone(), c.layer_norm_eps) } else { a.clone() };
        let inter = layer.ffn_in.forward(ffn_input);
        let inter = match c.activation {
            Activation::Gelu => activation::gelu(inter),
            Activation::GeluTanh => activation::gelu_approximate(inter),
            Activation::Relu => activation::relu(inter),
        };
        let ffn = layer.ffn_out.forward(inter) + a;
        let mut y = if pre_norm { ffn } else { layer.out_ln.forward(ffn, c.layer_norm_eps) };
        if let Some(m) = out_scale {
            y = y * m.reshape([b, t, 1]);
        }
        (y, scores, p)
    }

    /// Additive key mask `[B, 1, 1, T]`: 0 for real keys, -1e9 for padding.
    pub fn key_bias(batch: &Batch) -> Tensor<4> {
        let [b, t] = batch.dims();
        (batch.valid.clone() - 1.0).mul_scalar(1e9).reshape([b, 1, 1, t])
    }

    /// Forward pass over a padded batch.
    ///
    /// `masks`, when given, are the soft masks of ALGORITHM.md section 4.3: `L + 1` tensors
    /// `[B, T]` (`masks[l-1]` = m^l renormalises layer l's attention over keys; `masks[l]` scales
    /// layer l's output rows). Without masks this is the plain encoder.
    pub fn forward(&self, c: &EncoderConfig, batch: &Batch, masks: Option<&[Tensor<2>]>) -> TrainOutput {
        let mut x = self.embed(c, batch);
        let key_bias = Self::key_bias(batch);
        let mut hidden = vec![x.clone()];
        let mut scores_all = Vec::with_capacity(self.layers.len());
        let mut probs_all = Vec::with_capacity(self.layers.len());
        for l in 0..self.layers.len() {
            let (y, scores, p) = self.layer(c, l, x, key_bias.clone(), masks.map(|m| m[l].clone()), masks.map(|m| m[l + 1].clone()));
            x = y;
            hidden.push(x.clone());
            scores_all.push(scores);
            probs_all.push(p);
        }
        TrainOutput { hidden, scores: scores_all, probs: probs_all }
    }

    /// Classification logits `[B, num_labels]` from the last layer's output `[B, T, d]`: text
    /// uses the CLS row (pooler, classifier); vision applies the final LayerNorm to the class
    /// token (and, for DeiT-distilled, averages with the distillation head on token 1).
    pub fn head_logits(&self, c: &EncoderConfig, last: Tensor<3>) -> Option<Tensor<2>> {
        let [b, _, d] = last.dims();
        let row = |i: usize| {
            let r = last.clone().slice([0..b, i..i + 1, 0..d]);
            let r = match &self.final_ln {
                Some(n) => n.forward(r, c.layer_norm_eps),
                None => r,
            };
            r.reshape([b, d])
        };
        let cls_logits = self.logits(c, row(0))?;
        match &self.distillation_classifier {
            Some(dc) => Some((cls_logits + dc.forward(row(1))).mul_scalar(0.5)),
            None => Some(cls_logits),
        }
    }

    /// Classification logits `[B, num_labels]` from CLS rows `[B, d]` (pooler if present, with
    /// the family's activation, [`EncoderConfig::pooler_activation`]; then classifier). Vision
    /// models: use [`head_logits`](Self::head_logits) (final LayerNorm, DeiT heads).
    pub fn logits(&self, c: &EncoderConfig, cls: Tensor<2>) -> Option<Tensor<2>> {
        let pooled = match (&self.pooler, c.pooler_activation()) {
            (Some(p), PoolerActivation::Tanh) => activation::tanh(p.forward(cls)),
            (Some(p), PoolerActivation::Relu) => activation::relu(p.forward(cls)),
            (None, _) => cls,
        };
        self.classifier.as_ref().map(|c| c.forward(pooled))
    }
}
