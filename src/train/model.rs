//! The BERT encoder as a burn module, for training (fine-tuning, ApproxNet distillation, concrete
//! masking). Same math and HF tensor names as [`crate::encoder::BertModel`]; the two convert into
//! each other ([`TrainBert::from_native`], [`TrainBert::to_native`]) and tests pin them to the same
//! numbers. Runs on padded batches `[B, T]` with a validity mask, optionally with the soft masks
//! of ALGORITHM.md section 4.3.

use burn::module::{Module, Param};
use burn::tensor::activation;
use burn::tensor::module::linear;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::checkpoint::TensorStore;
use crate::config::{Activation, EncoderConfig};
use crate::encoder::{BertModel, EncodedInput};
use crate::error::ModelError;

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
    let u1 = rng.next_f64().max(1e-300);
    let u2 = rng.next_f64();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
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
    /// Normalise over the last dimension of `[B, T, d]`.
    pub fn forward(&self, x: Tensor<3>, eps: f64) -> Tensor<3> {
        let (var, mean) = x.clone().var_mean_bias(2);
        let xn = (x - mean) / var.add_scalar(eps).sqrt();
        xn * self.gamma.val().unsqueeze::<3>() + self.beta.val().unsqueeze::<3>()
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

/// BERT encoder + optional pooler and classifier, as a burn module.
#[derive(Module, Debug)]
pub struct TrainBert {
    pub word: Param<Tensor<2>>,
    pub position: Param<Tensor<2>>,
    pub token_type: Param<Tensor<2>>,
    pub emb_ln: Norm,
    pub layers: Vec<TrainLayer>,
    pub pooler: Option<Lin>,
    pub classifier: Option<Lin>,
}

/// A padded batch on a device: ids and token types `[B, T]`, `valid` `[B, T]` (1 real, 0 padding).
#[derive(Debug, Clone)]
pub struct Batch {
    pub ids: Tensor<2, Int>,
    pub types: Tensor<2, Int>,
    pub valid: Tensor<2>,
    /// Real token count per example.
    pub lengths: Vec<usize>,
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
        Self {
            ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
            types: Tensor::from_data(TensorData::new(types, [b, t]), device),
            valid: Tensor::from_data(TensorData::new(valid, [b, t]), device),
            lengths: inputs.iter().map(|x| x.len()).collect(),
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
}

/// A tensor's values as f32, row-major (empty if the data cannot be read back).
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default()
}

impl TrainBert {
    /// Copy a native model's weights onto `device` (an autodiff device for training).
    pub fn from_native(m: &BertModel, device: &Device) -> Self {
        let tensors = m.hf_tensors();
        let get = |name: &str| -> &[f32] {
            tensors.iter().find(|(n, _, _)| n == name).map(|(_, _, d)| d.as_slice()).unwrap_or(&[])
        };
        let c = &m.config;
        let d = c.hidden_size;
        let p2 = |data: &[f32], r: usize, k: usize| Param::from_tensor(Tensor::from_data(TensorData::new(data.to_vec(), [r, k]), device));
        let lin = |p: &str, i: usize, o: usize| Lin::from_hf(get(&format!("{p}.weight")), get(&format!("{p}.bias")), i, o, device);
        let norm = |p: &str| Norm::new(get(&format!("{p}.weight")), get(&format!("{p}.bias")), device);
        let layers = (0..c.num_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                TrainLayer {
                    query: lin(&format!("{p}.attention.self.query"), d, d),
                    key: lin(&format!("{p}.attention.self.key"), d, d),
                    value: lin(&format!("{p}.attention.self.value"), d, d),
                    attn_out: lin(&format!("{p}.attention.output.dense"), d, d),
                    attn_ln: norm(&format!("{p}.attention.output.LayerNorm")),
                    ffn_in: lin(&format!("{p}.intermediate.dense"), d, c.intermediate_size),
                    ffn_out: lin(&format!("{p}.output.dense"), c.intermediate_size, d),
                    out_ln: norm(&format!("{p}.output.LayerNorm")),
                }
            })
            .collect();
        Self {
            word: p2(&m.embeddings.word, c.vocab_size, d),
            position: p2(&m.embeddings.position, c.max_position_embeddings, d),
            token_type: p2(&m.embeddings.token_type, c.type_vocab_size, d),
            emb_ln: norm("embeddings.LayerNorm"),
            layers,
            pooler: m.pooler.as_ref().map(|_| lin("pooler.dense", d, d)),
            classifier: m.classifier.as_ref().map(|cl| lin("classifier", d, cl.d_out)),
        }
    }

    /// The weights as HF-named tensors `(name, shape, data)`.
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
        p2("embeddings.word_embeddings.weight", &self.word, &mut out);
        p2("embeddings.position_embeddings.weight", &self.position, &mut out);
        p2("embeddings.token_type_embeddings.weight", &self.token_type, &mut out);
        norm("embeddings.LayerNorm", &self.emb_ln, &mut out);
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("encoder.layer.{l}");
            lin(&format!("{p}.attention.self.query"), &layer.query, &mut out);
            lin(&format!("{p}.attention.self.key"), &layer.key, &mut out);
            lin(&format!("{p}.attention.self.value"), &layer.value, &mut out);
            lin(&format!("{p}.attention.output.dense"), &layer.attn_out, &mut out);
            norm(&format!("{p}.attention.output.LayerNorm"), &layer.attn_ln, &mut out);
            lin(&format!("{p}.intermediate.dense"), &layer.ffn_in, &mut out);
            lin(&format!("{p}.output.dense"), &layer.ffn_out, &mut out);
            norm(&format!("{p}.output.LayerNorm"), &layer.out_ln, &mut out);
        }
        if let Some(p) = &self.pooler {
            lin("pooler.dense", p, &mut out);
        }
        if let Some(c) = &self.classifier {
            lin("classifier", c, &mut out);
        }
        out
    }

    /// Back to the fast native executor (weights copied).
    pub fn to_native(&self, config: &EncoderConfig) -> Result<BertModel, ModelError> {
        let store = TensorStore::from_tensors(std::path::Path::new("<training model>"), self.hf_tensors());
        BertModel::from_store(config.clone(), &store)
    }

    /// Embedding output `[B, T, d]` of a padded batch.
    pub fn embed(&self, c: &EncoderConfig, batch: &Batch) -> Tensor<3> {
        let [b, t] = batch.dims();
        let d = c.hidden_size;
        let flat = |x: Tensor<2, Int>| x.reshape([b * t]);
        let word = self.word.val().select(0, flat(batch.ids.clone())).reshape([b, t, d]);
        let ty = self.token_type.val().select(0, flat(batch.types.clone())).reshape([b, t, d]);
        let pos = self.position.val().slice([0..t, 0..d]).unsqueeze::<3>();
        self.emb_ln.forward(word + ty + pos, c.layer_norm_eps)
    }

    /// One encoder layer on `[B, T, d]`: the shared layer code of every training mode.
    ///
    /// `key_bias` `[B, 1, 1, T]` is added to the scores (0 real keys, -1e9 padding);
    /// `key_mask` `[B, T]`, when given, renormalises attention over mask-weighted keys
    /// (section 4.3: `P_ij <- P_ij m_j / (Σ_k P_ik m_k + 1e-9)`); `out_scale` `[B, T]`, when
    /// given, scales the output rows after the last LayerNorm. Returns (output, scores, probs).
    pub fn layer(&self, c: &EncoderConfig, l: usize, x: Tensor<3>, key_bias: Tensor<4>, key_mask: Option<Tensor<2>>, out_scale: Option<Tensor<2>>) -> (Tensor<3>, Tensor<4>, Tensor<4>) {
        let [b, t, d] = x.dims();
        let h = c.num_heads;
        let dh = c.head_size();
        let layer = &self.layers[l];
        let split = |y: Tensor<3>| y.reshape([b, t, h, dh]).swap_dims(1, 2);
        let q = split(layer.query.forward(x.clone()));
        let k = split(layer.key.forward(x.clone()));
        let v = split(layer.value.forward(x.clone()));
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (dh as f64).sqrt());
        let mut p = activation::softmax(scores.clone() + key_bias, 3);
        if let Some(m) = key_mask {
            let pm = p * m.reshape([b, 1, 1, t]);
            let denom = pm.clone().sum_dim(3).add_scalar(1e-9);
            p = pm / denom;
        }
        let ctx = p.clone().matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        let a = layer.attn_ln.forward(layer.attn_out.forward(ctx) + x, c.layer_norm_eps);
        let inter = layer.ffn_in.forward(a.clone());
        let inter = match c.activation {
            Activation::Gelu => activation::gelu(inter),
            Activation::GeluTanh => activation::gelu_approximate(inter),
            Activation::Relu => activation::relu(inter),
        };
        let mut y = layer.out_ln.forward(layer.ffn_out.forward(inter) + a, c.layer_norm_eps);
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

    /// Classification logits `[B, num_labels]` from CLS rows `[B, d]` (pooler if present, then classifier).
    pub fn logits(&self, cls: Tensor<2>) -> Option<Tensor<2>> {
        let pooled = match &self.pooler {
            Some(p) => activation::tanh(p.forward(cls)),
            None => cls,
        };
        self.classifier.as_ref().map(|c| c.forward(pooled))
    }
}
