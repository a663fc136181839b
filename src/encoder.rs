//! The encoder (BERT post-LayerNorm, ViT/DeiT pre-LayerNorm) and the token-plan executor
//! (ALGORITHM.md section 1).
//!
//! Text mirrors transformers' `BertModel` (`modeling_bert.py`): `BertEmbeddings`,
//! `BertSelfAttention`, `BertSelfOutput`, `BertIntermediate`, `BertOutput`, `BertPooler`, plus the
//! `BertForSequenceClassification` head. Vision mirrors `ViTModel` / `DeiTModel`
//! (`modeling_vit.py`, `modeling_deit.py`): patch embedding (a conv with kernel = stride = patch,
//! computed as a GEMM over flattened patches), class (+ distillation) token, learned position
//! embeddings, pre-LayerNorm layers (`layernorm_before`, `layernorm_after`), the final
//! `layernorm`, and the `ViTForImageClassification` / `DeiTForImageClassificationWithTeacher`
//! heads. Both families run through the same executor. Weights are stored pre-transposed (`[in, out]`) and the
//! attention scale `1/sqrt(d_h)` is folded into the query projection at load time.
//!
//! Execution is *gathered*: each example of a batch carries its own [`TokenPlan`]; at layer `l`
//! only the rows in `I_l` (keys/values) and `O_l` (queries, FFN, LayerNorms) are computed, and the
//! kept rows of all examples are packed into one matrix for the linear layers (no padding, no
//! multiply-by-zero). The full plan is dense inference.

use std::path::Path;

use rayon::prelude::*;

use crate::checkpoint::TensorStore;
use crate::config::EncoderConfig;
use crate::error::ModelError;
use crate::kernels;
use crate::plan::TokenPlan;

/// A linear layer `y = x W + b` with `W` stored `[in, out]` (the transpose of HF's `[out, in]`).
///
/// On CPUs with AVX-512 the first forward pass also keeps `W` in the panel layout of
/// [`kernels::packed`] (built once, then reused by every call with at most
/// [`PACKED_MAX_ROWS`] rows). The fields are private so that the weights cannot change after
/// they were packed: read them with [`weight`](Self::weight) / [`bias`](Self::bias), build a new
/// layer with [`new`](Self::new) or [`from_hf`](Self::from_hf) to change them:
///
/// ```compile_fail,E0616
/// let mut l = sttabt::encoder::Linear::new(vec![0.0; 6], vec![0.0; 3], 2, 3);
/// l.w[0] = 1.0; // private field: a packed copy of `w` could go stale
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    d_in: usize,
    d_out: usize,
    packed: PackedCache,
}

/// Token rows per group in [`BertModel::run_attention_reduced`] (the ApproxNet pass of ABT).
pub const REDUCED_GROUP_ROWS: usize = 1024;

/// Calls with at most this many rows use the pre-packed weights (measured faster than `gemm` up
/// to ~128-256 rows, slower on large batches; examples/packed_probe.rs).
pub const PACKED_MAX_ROWS: usize = 256;

/// Lazily packed copy of a [`Linear`]'s weights (`None` inside: this CPU has no AVX-512).
#[derive(Clone, Default)]
struct PackedCache(std::sync::OnceLock<Option<kernels::packed::PackedWeights>>);

impl PartialEq for PackedCache {
    /// A cache, not data: two layers are equal when their weights are.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for PackedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some_and(|p| p.is_some()) { "packed" } else { "-" })
    }
}

impl Linear {
    /// A layer from `w` `[d_in, d_out]` row-major (this crate's layout; [`from_hf`](Self::from_hf)
    /// takes HF's `[out, in]`) and `b` `[d_out]`.
    ///
    /// Panics if `w.len() != d_in · d_out` or `b.len() != d_out`.
    pub fn new(w: Vec<f32>, b: Vec<f32>, d_in: usize, d_out: usize) -> Self {
        assert!(
            d_in.checked_mul(d_out) == Some(w.len()),
            "Linear::new: weight has {} values, expected d_in x d_out = {d_in} x {d_out}",
            w.len()
        );
        assert!(b.len() == d_out, "Linear::new: bias has {} values, expected d_out = {d_out}", b.len());
        Self { w, b, d_in, d_out, packed: PackedCache::default() }
    }

    /// The weight `[d_in, d_out]` row-major (the transpose of HF's layout; see [`weight_hf`](Self::weight_hf)).
    pub fn weight(&self) -> &[f32] {
        &self.w
    }

    /// The bias `[d_out]`.
    pub fn bias(&self) -> &[f32] {
        &self.b
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// Load `{prefix}.weight` `[out, in]` and `{prefix}.bias` `[out]` from an HF checkpoint.
    pub fn load(store: &TensorStore, prefix: &str, d_in: usize, d_out: usize) -> Result<Self, ModelError> {
        let w_hf = store.get(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let b = store.get(&format!("{prefix}.bias"), &[d_out])?;
        Ok(Self::from_hf(&w_hf, b, d_in, d_out))
    }

    /// Build from an HF-layout weight `[out, in]` and bias `[out]`.
    ///
    /// Panics if `w_hf.len() != d_out · d_in` or `b.len() != d_out`.
    pub fn from_hf(w_hf: &[f32], b: Vec<f32>, d_in: usize, d_out: usize) -> Self {
        assert!(
            d_in.checked_mul(d_out) == Some(w_hf.len()),
            "Linear::from_hf: weight has {} values, expected d_out x d_in = {d_out} x {d_in}",
            w_hf.len()
        );
        assert!(b.len() == d_out, "Linear::from_hf: bias has {} values, expected d_out = {d_out}", b.len());
        let mut w = vec![0.0; d_in * d_out];
        for o in 0..d_out {
            for i in 0..d_in {
                w[i * d_out + o] = w_hf[o * d_in + i];
            }
        }
        Self { w, b, d_in, d_out, packed: PackedCache::default() }
    }

    /// The packed weights when a call with `rows` rows should use them (AVX-512 CPU, few rows).
    fn packed_for(&self, rows: usize) -> Option<&kernels::packed::PackedWeights> {
        if rows > PACKED_MAX_ROWS {
            return None;
        }
        self.packed.0.get_or_init(|| kernels::packed::PackedWeights::new(&self.w, self.d_in, self.d_out)).as_ref()
    }

    /// `out[rows, d_out] = act(x[rows, d_in] W + b)`: bias (and GELU) fused into the packed
    /// kernel where it runs; else the bias pre-filled, `gemm` accumulating, the activation after.
    /// The kernels assert `x.len() == rows · d_in` and `out.len() == rows · d_out`.
    fn linear_into(&self, x: &[f32], out: &mut [f32], rows: usize, act: Option<crate::config::Activation>) {
        if let Some(p) = self.packed_for(rows) {
            let gelu = act == Some(crate::config::Activation::Gelu);
            p.matmul_bias(x, &self.b, out, rows, gelu);
            if let Some(a) = act.filter(|_| !gelu) {
                kernels::activate_fast(out, a);
            }
            return;
        }
        kernels::linear(x, &self.w, &self.b, out, rows, self.d_in, self.d_out, act);
    }

    /// The weight in HF layout `[out, in]`.
    pub fn weight_hf(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.d_in * self.d_out];
        for i in 0..self.d_in {
            for o in 0..self.d_out {
                w[o * self.d_in + i] = self.w[i * self.d_out + o];
            }
        }
        w
    }

    /// Rows of `x` `[rows, d_in]`; panics (naming `what`) if its length is not a multiple of `d_in`.
    fn rows_of(&self, x: &[f32], what: &str) -> usize {
        assert!(
            if self.d_in == 0 { x.is_empty() } else { x.len() % self.d_in == 0 },
            "Linear::{what}: input has {} values, not a whole number of rows of d_in = {}",
            x.len(),
            self.d_in
        );
        x.len().checked_div(self.d_in).unwrap_or(0)
    }

    /// `out[rows, d_out] = x[rows, d_in] W + b`.
    ///
    /// Panics if `x.len()` is not a multiple of `d_in` or `out.len() != rows · d_out`.
    pub fn forward_into(&self, x: &[f32], out: &mut [f32]) {
        let rows = self.rows_of(x, "forward_into");
        assert!(
            Some(out.len()) == rows.checked_mul(self.d_out),
            "Linear::forward_into: output has {} values, expected rows x d_out = {rows} x {}",
            out.len(),
            self.d_out
        );
        self.linear_into(x, out, rows, None);
    }

    /// `x[rows, d_in] W + b` as a new buffer.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.forward_act(x, None)
    }

    /// `act(x W + b)` as a new buffer (bias and activation fused into the GEMM output pass).
    ///
    /// Panics if `x.len()` is not a multiple of `d_in`.
    pub fn forward_act(&self, x: &[f32], act: Option<crate::config::Activation>) -> Vec<f32> {
        let rows = self.rows_of(x, "forward_act");
        let mut out = vec![0.0; rows * self.d_out];
        self.linear_into(x, &mut out, rows, act);
        out
    }

    /// Multiply the output columns in `cols` by `s` (weights and bias).
    fn scale_cols(&mut self, cols: std::ops::Range<usize>, s: f32) {
        self.packed = PackedCache::default();
        for i in 0..self.d_in {
            for o in cols.clone() {
                self.w[i * self.d_out + o] *= s;
            }
        }
        for o in cols {
            self.b[o] *= s;
        }
    }
}

/// LayerNorm parameters `γ`, `β` (HF names `.weight`/`.bias`, or the older `.gamma`/`.beta`).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f64,
}

impl LayerNorm {
    fn load(store: &TensorStore, prefix: &str, d: usize, eps: f64) -> Result<Self, ModelError> {
        let gamma = store.get_any(&[&format!("{prefix}.weight"), &format!("{prefix}.gamma")], &[d])?;
        let beta = store.get_any(&[&format!("{prefix}.bias"), &format!("{prefix}.beta")], &[d])?;
        Ok(Self { gamma, beta, eps })
    }
    /// Normalise every row of `x[rows, d]` in place.
    pub fn apply(&self, x: &mut [f32]) {
        kernels::layer_norm(x, &self.gamma, &self.beta, self.eps);
    }
}

/// One encoder layer (`encoder.layer.{i}`).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderLayer {
    /// `attention.self.query` exactly as stored (HF layout round trip; not used for compute).
    pub query_hf: (Vec<f32>, Vec<f32>),
    /// `attention.self.query`, pre-scaled by `1/sqrt(d_h)`.
    pub query: Linear,
    /// `attention.self.key` and `.value` fused: output columns `[0, d)` = K, `[d, 2d)` = V.
    pub key_value: Linear,
    /// `attention.output.dense`.
    pub attn_out: Linear,
    /// `attention.output.LayerNorm`.
    pub attn_ln: LayerNorm,
    /// `intermediate.dense`.
    pub ffn_in: Linear,
    /// `output.dense`.
    pub ffn_out: Linear,
    /// `output.LayerNorm`.
    pub out_ln: LayerNorm,
}
// For ViT/DeiT (pre-LayerNorm) `attn_ln` holds `layernorm_before` (applied to the layer input
// before Q/K/V) and `out_ln` holds `layernorm_after` (applied before the FFN); the residuals are
// added without normalisation.

/// `embeddings.*` of a text model: word + position + token type, then LayerNorm.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEmbeddings {
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub token_type: Vec<f32>,
    pub ln: LayerNorm,
}

/// `{vit,deit}.embeddings.*` of a vision model: patch projection, special tokens, positions.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchEmbeddings {
    /// `patch_embeddings.projection` (conv `[d, C, p, p]`) as a linear map `C·p·p -> d` over
    /// patches flattened in `(c, ky, kx)` order.
    pub projection: Linear,
    /// `cls_token` (and `distillation_token`), `[num_special, d]`.
    pub special: Vec<f32>,
    /// `position_embeddings` without the leading batch axis, `[n, d]` (`n = num_special + patches`).
    pub position: Vec<f32>,
}

/// The embedding layer of either family.
#[derive(Debug, Clone, PartialEq)]
pub enum Embeddings {
    Text(TextEmbeddings),
    Patch(PatchEmbeddings),
}

impl Embeddings {
    /// The text embedding tables, if this is a text model.
    pub fn text(&self) -> Option<&TextEmbeddings> {
        match self {
            Embeddings::Text(e) => Some(e),
            Embeddings::Patch(_) => None,
        }
    }
    /// The patch embedding, if this is a vision model.
    pub fn patch(&self) -> Option<&PatchEmbeddings> {
        match self {
            Embeddings::Patch(e) => Some(e),
            Embeddings::Text(_) => None,
        }
    }
}

/// One example: real tokens only (no padding). `n = ids.len()`; position ids are `0..n`.
///
/// Text: `ids`/`type_ids` from the tokenizer, `patches` empty. Images (see
/// [`EncodedInput::image`]): `ids`/`type_ids` are `n` zeros (they only carry the length) and
/// `patches` holds the preprocessed pixels as `[num_patches, C·p·p]` (`vision::preprocess::patchify`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncodedInput {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub patches: Vec<f32>,
}

impl EncodedInput {
    /// An image input: `patches` is `[num_patches, patch_dim]`, the sequence has
    /// `num_special + num_patches` tokens.
    pub fn image(patches: Vec<f32>, num_special: usize, patch_dim: usize) -> Self {
        let n = num_special + patches.len() / patch_dim.max(1);
        Self { ids: vec![0; n], type_ids: vec![0; n], patches }
    }
    /// Number of real tokens `n`.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    /// True when there are no tokens (never valid input to the encoder).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Attention probabilities of one layer for one example: `probs[h][q][k]` flattened
/// (`[H, |queries|, |keys|]`), softmax over `keys` (token indices) for each query in `queries`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerAttention {
    pub queries: Vec<usize>,
    pub keys: Vec<usize>,
    pub probs: Vec<f32>,
}

/// What the executor returns for one example.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleOutput {
    /// Token indices of the rows in `hidden` (= `O_L`).
    pub rows: Vec<usize>,
    /// Last-layer hidden states of `rows`, `[|O_L|, d]`.
    pub hidden: Vec<f32>,
    /// Per-layer attention (index l-1), when asked for.
    pub attentions: Option<Vec<LayerAttention>>,
    /// Per-layer outputs (index 0 = embedding output on `I_1`, index l = layer l on `O_l`), when asked for.
    pub hidden_states: Option<Vec<(Vec<usize>, Vec<f32>)>>,
}

impl ExampleOutput {
    /// The CLS (token 0) row of the last layer, `[d]`. `O_L` always contains CLS in a valid plan.
    pub fn cls(&self) -> &[f32] {
        let d = self.hidden.len() / self.rows.len().max(1);
        let pos = self.rows.iter().position(|&r| r == 0).unwrap_or(0);
        &self.hidden[pos * d..(pos + 1) * d]
    }
}

/// Options of one executor run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Return each layer's attention probabilities (needed by planners; costs a copy).
    pub attentions: bool,
    /// Return each layer's output rows (for parity checks).
    pub hidden_states: bool,
}

/// Decides, while the executor runs, which tokens layer `l+1` reads (feed-forward planners:
/// manual top-k, LTP). Called after layer `l` with that layer's attention over its inputs.
pub trait LayerHook: Sync {
    /// `attention` is `[H, |inputs|, |inputs|]` over `inputs` (= `I_l`, queries = keys).
    /// Return `I_{l+1}` as a sorted subset of `inputs` containing 0.
    fn next_inputs(&self, example: usize, layer: usize, n: usize, inputs: &[usize], attention: &[f32], heads: usize) -> Vec<usize>;

    /// Whether the hook can plan a `layers`-layer model (e.g. LTP needs `layers - 1`
    /// thresholds); [`BertModel::run_feed_forward`] calls it before running anything.
    fn check_layers(&self, _layers: usize) -> Result<(), ModelError> {
        Ok(())
    }
}

/// Per-example state between layers in a packed batch.
struct Segment {
    /// Token indices of the rows currently held (`I_l` before layer l).
    rows: Vec<usize>,
    /// Offset of this example's first row in the packed matrix.
    offset: usize,
}

/// An encoder (BERT, or ViT/DeiT when `config.arch` says so) with optional pooler and
/// classification head.
#[derive(Debug, Clone, PartialEq)]
pub struct BertModel {
    pub config: EncoderConfig,
    pub embeddings: Embeddings,
    pub layers: Vec<EncoderLayer>,
    /// `pooler.dense` (tanh), if the checkpoint has it (text only).
    pub pooler: Option<Linear>,
    /// `classifier` on the pooled output (HF `BertForSequenceClassification`), or on the class
    /// token (ViT/DeiT), or `cls_classifier` (DeiT-distilled), if present.
    pub classifier: Option<Linear>,
    /// `{vit,deit}.layernorm`, applied to the last layer's output rows (vision only).
    pub final_ln: Option<LayerNorm>,
    /// `distillation_classifier` on the distillation token (DeiT-distilled only); the logits are
    /// the mean of both heads.
    pub distillation_classifier: Option<Linear>,
}

impl BertModel {
    /// Load `config.json` + `model.safetensors` from an HF checkpoint directory.
    ///
    /// Errors: missing files, invalid config, missing tensors, shape mismatches (names the
    /// tensor, expected vs found), non-float dtypes, NaN/inf weights, corrupt safetensors.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
                hint: "expected a checkpoint directory (config.json + model.safetensors), as `sttabt finetune` writes; `sttabt fetch` gets the default all-MiniLM-L6-v2".into(),
            });
        }
        let cfg_path = dir.join("config.json");
        if !cfg_path.exists() {
            return Err(ModelError::MissingFile { path: cfg_path, hint: "a Hugging Face checkpoint directory needs config.json".into() });
        }
        let config = EncoderConfig::from_file(&cfg_path)?;
        let store = TensorStore::read_dir(dir)?;
        Self::from_store(config, &store)
    }

    /// Build from a config and a tensor store (HF names; for ViT/DeiT the `vit.`/`deit.` prefixed
    /// names of `ViTForImageClassification`, `DeiTForImageClassification(WithTeacher)`, or the
    /// bare `ViTModel`/`DeiTModel` names without prefix).
    pub fn from_store(config: EncoderConfig, store: &TensorStore) -> Result<Self, ModelError> {
        if let Some(v) = config.vision().cloned() {
            return Self::from_store_vision(config, &v, store);
        }
        Self::from_store_text(config, store)
    }

    fn from_store_vision(mut config: EncoderConfig, v: &crate::config::VisionConfig, store: &TensorStore) -> Result<Self, ModelError> {
        let d = config.hidden_size;
        let eps = config.layer_norm_eps;
        // checkpoints saved from the bare ViTModel/DeiTModel have no prefix
        let pre = if store.contains(&format!("{}embeddings.cls_token", v.prefix())) { v.prefix() } else { "" };
        let ns = v.num_special_tokens();
        let n = v.seq_len();
        let mut special = store.get(&format!("{pre}embeddings.cls_token"), &[1, 1, d])?;
        if ns == 2 {
            special.extend(store.get(&format!("{pre}embeddings.distillation_token"), &[1, 1, d])?);
        }
        let pw =
            store.get(&format!("{pre}embeddings.patch_embeddings.projection.weight"), &[d, v.num_channels, v.patch_size, v.patch_size])?;
        let pb = if v.qkv_bias || store.contains(&format!("{pre}embeddings.patch_embeddings.projection.bias")) {
            store.get(&format!("{pre}embeddings.patch_embeddings.projection.bias"), &[d])?
        } else {
            vec![0.0; d]
        };
        let embeddings = Embeddings::Patch(PatchEmbeddings {
            projection: Linear::from_hf(&pw, pb, v.patch_dim(), d),
            special,
            position: store.get(&format!("{pre}embeddings.position_embeddings"), &[1, n, d])?,
        });
        let scale = 1.0 / (config.head_size() as f32).sqrt();
        let qkv = |store: &TensorStore, name: &str| -> Result<Linear, ModelError> {
            if v.qkv_bias {
                Linear::load(store, name, d, d)
            } else {
                Ok(Linear::from_hf(&store.get(&format!("{name}.weight"), &[d, d])?, vec![0.0; d], d, d))
            }
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("{pre}encoder.layer.{l}");
            let mut query = qkv(store, &format!("{p}.attention.attention.query"))?;
            let query_hf = (query.weight_hf(), query.b.clone());
            query.scale_cols(0..d, scale);
            let key = qkv(store, &format!("{p}.attention.attention.key"))?;
            let value = qkv(store, &format!("{p}.attention.attention.value"))?;
            layers.push(EncoderLayer {
                query_hf,
                query,
                key_value: concat_cols(&key, &value),
                attn_out: Linear::load(store, &format!("{p}.attention.output.dense"), d, d)?,
                attn_ln: LayerNorm::load(store, &format!("{p}.layernorm_before"), d, eps)?,
                ffn_in: Linear::load(store, &format!("{p}.intermediate.dense"), d, config.intermediate_size)?,
                ffn_out: Linear::load(store, &format!("{p}.output.dense"), config.intermediate_size, d)?,
                out_ln: LayerNorm::load(store, &format!("{p}.layernorm_after"), d, eps)?,
            });
        }
        let final_ln = Some(LayerNorm::load(store, &format!("{pre}layernorm"), d, eps)?);
        let head_name = if store.contains("cls_classifier.weight") { "cls_classifier" } else { "classifier" };
        let (classifier, distillation_classifier) = if store.contains(&format!("{head_name}.weight")) {
            let n_labels = if config.labels.is_empty() {
                store.shape(&format!("{head_name}.weight")).map(|s| s[0]).unwrap_or(0)
            } else {
                config.labels.len()
            };
            if config.labels.is_empty() {
                config.labels = (0..n_labels).map(|i| format!("LABEL_{i}")).collect();
            }
            let cls = Linear::load(store, head_name, d, n_labels)?;
            let dist = if head_name == "cls_classifier" {
                if ns != 2 {
                    return Err(ModelError::Input(
                        "cls_classifier/distillation_classifier need a DeiT (model_type 'deit') with a distillation token".into(),
                    ));
                }
                Some(Linear::load(store, "distillation_classifier", d, n_labels)?)
            } else {
                None
            };
            (Some(cls), dist)
        } else {
            (None, None)
        };
        if let crate::config::Architecture::Vit(vc) = &mut config.arch {
            vc.head = if distillation_classifier.is_some() {
                crate::config::VisionHead::Distilled
            } else {
                crate::config::VisionHead::ClassToken
            };
        }
        Ok(Self { config, embeddings, layers, pooler: None, classifier, final_ln, distillation_classifier })
    }

    fn from_store_text(mut config: EncoderConfig, store: &TensorStore) -> Result<Self, ModelError> {
        let d = config.hidden_size;
        let eps = config.layer_norm_eps;
        let embeddings = Embeddings::Text(TextEmbeddings {
            word: store.get("embeddings.word_embeddings.weight", &[config.vocab_size, d])?,
            position: store.get("embeddings.position_embeddings.weight", &[config.max_position_embeddings, d])?,
            token_type: store.get("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, d])?,
            ln: LayerNorm::load(store, "embeddings.LayerNorm", d, eps)?,
        });
        let scale = 1.0 / (config.head_size() as f32).sqrt();
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("encoder.layer.{l}");
            let mut query = Linear::load(store, &format!("{p}.attention.self.query"), d, d)?;
            let query_hf = (query.weight_hf(), query.b.clone());
            query.scale_cols(0..d, scale);
            let key = Linear::load(store, &format!("{p}.attention.self.key"), d, d)?;
            let value = Linear::load(store, &format!("{p}.attention.self.value"), d, d)?;
            layers.push(EncoderLayer {
                query_hf,
                query,
                key_value: concat_cols(&key, &value),
                attn_out: Linear::load(store, &format!("{p}.attention.output.dense"), d, d)?,
                attn_ln: LayerNorm::load(store, &format!("{p}.attention.output.LayerNorm"), d, eps)?,
                ffn_in: Linear::load(store, &format!("{p}.intermediate.dense"), d, config.intermediate_size)?,
                ffn_out: Linear::load(store, &format!("{p}.output.dense"), config.intermediate_size, d)?,
                out_ln: LayerNorm::load(store, &format!("{p}.output.LayerNorm"), d, eps)?,
            });
        }
        let pooler = if store.contains("pooler.dense.weight") { Some(Linear::load(store, "pooler.dense", d, d)?) } else { None };
        let classifier = if store.contains("classifier.weight") {
            let n_labels = if config.labels.is_empty() {
                // infer from the tensor when config.json has no id2label / num_labels
                store.shape("classifier.weight").map(|s| s[0]).unwrap_or(0)
            } else {
                config.labels.len()
            };
            if config.labels.is_empty() {
                config.labels = (0..n_labels).map(|i| format!("LABEL_{i}")).collect();
            }
            Some(Linear::load(store, "classifier", d, n_labels)?)
        } else {
            None
        };
        Ok(Self { config, embeddings, layers, pooler, classifier, final_ln: None, distillation_classifier: None })
    }

    /// Number of parameters (as stored in the HF checkpoint).
    pub fn num_parameters(&self) -> usize {
        let lin = |l: &Linear| l.w.len() + l.b.len();
        let ln = |l: &LayerNorm| l.gamma.len() + l.beta.len();
        let emb = match &self.embeddings {
            Embeddings::Text(e) => e.word.len() + e.position.len() + e.token_type.len() + ln(&e.ln),
            Embeddings::Patch(e) => lin(&e.projection) + e.special.len() + e.position.len(),
        };
        emb + self
            .layers
            .iter()
            .map(|l| {
                lin(&l.query) + lin(&l.key_value) + lin(&l.attn_out) + ln(&l.attn_ln) + lin(&l.ffn_in) + lin(&l.ffn_out) + ln(&l.out_ln)
            })
            .sum::<usize>()
            + self.pooler.as_ref().map(lin).unwrap_or(0)
            + self.classifier.as_ref().map(lin).unwrap_or(0)
            + self.final_ln.as_ref().map(ln).unwrap_or(0)
            + self.distillation_classifier.as_ref().map(lin).unwrap_or(0)
    }

    /// All weights as HF-named tensors (`[out, in]` linear weights, attention scale unfolded).
    pub fn hf_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let c = &self.config;
        let d = c.hidden_size;
        let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        if let (Embeddings::Patch(e), Some(v)) = (&self.embeddings, c.vision()) {
            return self.hf_tensors_vision(e, v);
        }
        let Embeddings::Text(e) = &self.embeddings else { return out };
        out.push(("embeddings.word_embeddings.weight".into(), vec![c.vocab_size, d], e.word.clone()));
        out.push(("embeddings.position_embeddings.weight".into(), vec![c.max_position_embeddings, d], e.position.clone()));
        out.push(("embeddings.token_type_embeddings.weight".into(), vec![c.type_vocab_size, d], e.token_type.clone()));
        push_ln(&mut out, "embeddings.LayerNorm", &e.ln);
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("encoder.layer.{l}");
            // the stored (unscaled) query weights, so a save/load round trip is bit-exact
            out.push((format!("{p}.attention.self.query.weight"), vec![d, d], layer.query_hf.0.clone()));
            out.push((format!("{p}.attention.self.query.bias"), vec![d], layer.query_hf.1.clone()));
            let (k, v) = split_cols(&layer.key_value, d);
            push_linear(&mut out, &format!("{p}.attention.self.key"), &k);
            push_linear(&mut out, &format!("{p}.attention.self.value"), &v);
            push_linear(&mut out, &format!("{p}.attention.output.dense"), &layer.attn_out);
            push_ln(&mut out, &format!("{p}.attention.output.LayerNorm"), &layer.attn_ln);
            push_linear(&mut out, &format!("{p}.intermediate.dense"), &layer.ffn_in);
            push_linear(&mut out, &format!("{p}.output.dense"), &layer.ffn_out);
            push_ln(&mut out, &format!("{p}.output.LayerNorm"), &layer.out_ln);
        }
        if let Some(p) = &self.pooler {
            push_linear(&mut out, "pooler.dense", p);
        }
        if let Some(cl) = &self.classifier {
            push_linear(&mut out, "classifier", cl);
        }
        out
    }

    /// HF names of a ViT/DeiT (`ViTForImageClassification`, `DeiTForImageClassification` or
    /// `DeiTForImageClassificationWithTeacher` layout).
    fn hf_tensors_vision(&self, e: &PatchEmbeddings, v: &crate::config::VisionConfig) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let d = self.config.hidden_size;
        let pre = v.prefix();
        let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        out.push((format!("{pre}embeddings.cls_token"), vec![1, 1, d], e.special[..d].to_vec()));
        if v.num_special_tokens() == 2 {
            out.push((format!("{pre}embeddings.distillation_token"), vec![1, 1, d], e.special[d..2 * d].to_vec()));
        }
        out.push((format!("{pre}embeddings.position_embeddings"), vec![1, v.seq_len(), d], e.position.clone()));
        out.push((
            format!("{pre}embeddings.patch_embeddings.projection.weight"),
            vec![d, v.num_channels, v.patch_size, v.patch_size],
            e.projection.weight_hf(),
        ));
        out.push((format!("{pre}embeddings.patch_embeddings.projection.bias"), vec![d], e.projection.b.clone()));
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("{pre}encoder.layer.{l}");
            out.push((format!("{p}.attention.attention.query.weight"), vec![d, d], layer.query_hf.0.clone()));
            if v.qkv_bias {
                out.push((format!("{p}.attention.attention.query.bias"), vec![d], layer.query_hf.1.clone()));
            }
            let (k, val) = split_cols(&layer.key_value, d);
            for (name, lin) in [("key", &k), ("value", &val)] {
                if v.qkv_bias {
                    push_linear(&mut out, &format!("{p}.attention.attention.{name}"), lin);
                } else {
                    out.push((format!("{p}.attention.attention.{name}.weight"), vec![d, d], lin.weight_hf()));
                }
            }
            push_linear(&mut out, &format!("{p}.attention.output.dense"), &layer.attn_out);
            push_ln(&mut out, &format!("{p}.layernorm_before"), &layer.attn_ln);
            push_linear(&mut out, &format!("{p}.intermediate.dense"), &layer.ffn_in);
            push_linear(&mut out, &format!("{p}.output.dense"), &layer.ffn_out);
            push_ln(&mut out, &format!("{p}.layernorm_after"), &layer.out_ln);
        }
        if let Some(ln) = &self.final_ln {
            push_ln(&mut out, &format!("{pre}layernorm"), ln);
        }
        match (&self.classifier, &self.distillation_classifier) {
            (Some(c), Some(dc)) => {
                push_linear(&mut out, "cls_classifier", c);
                push_linear(&mut out, "distillation_classifier", dc);
            }
            (Some(c), None) => push_linear(&mut out, "classifier", c),
            _ => {}
        }
        out
    }

    /// Check an input against the model: non-empty, within `max_position_embeddings`, ids in the
    /// vocabulary, token types in range.
    pub fn check_input(&self, example: usize, x: &EncodedInput) -> Result<(), ModelError> {
        let c = &self.config;
        if let Some(v) = c.vision() {
            let want = v.num_patches() * v.patch_dim();
            if x.patches.len() != want || x.ids.len() != v.seq_len() {
                return Err(ModelError::Input(format!(
                    "example {example}: an image input must hold {} patches of {} values ({}x{} pixels, {} channel(s), patch {}), found {} values and {} tokens; preprocess images with the model's image processor",
                    v.num_patches(),
                    v.patch_dim(),
                    v.image_size,
                    v.image_size,
                    v.num_channels,
                    v.patch_size,
                    x.patches.len(),
                    x.ids.len()
                )));
            }
            if let Some(i) = x.patches.iter().position(|p| !p.is_finite()) {
                return Err(ModelError::Input(format!("example {example}: pixel value {i} is not finite")));
            }
            return Ok(());
        }
        if !x.patches.is_empty() {
            return Err(ModelError::Input(format!("example {example} is an image, but this is a text model")));
        }
        if x.ids.is_empty() {
            return Err(ModelError::Input(format!("example {example} has no tokens (an empty text still has [CLS] [SEP])")));
        }
        if x.type_ids.len() != x.ids.len() {
            return Err(ModelError::Input(format!("example {example}: {} token ids but {} token type ids", x.ids.len(), x.type_ids.len())));
        }
        if x.ids.len() > c.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "example {example} has {} tokens, more than max_position_embeddings = {} (truncate it: --max-length)",
                x.ids.len(),
                c.max_position_embeddings
            )));
        }
        if let Some(&bad) = x.ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(ModelError::Input(format!("example {example}: token id {bad} is outside the vocabulary (size {})", c.vocab_size)));
        }
        if let Some(&bad) = x.type_ids.iter().find(|&&i| i as usize >= c.type_vocab_size) {
            return Err(ModelError::Input(format!("example {example}: token type {bad} is outside type_vocab_size {}", c.type_vocab_size)));
        }
        Ok(())
    }

    /// Embedding output rows for `tokens` of one example, `[|tokens|, d]` into `out`.
    fn embed_rows(&self, x: &EncodedInput, tokens: &[usize], out: &mut [f32]) {
        let d = self.config.hidden_size;
        let e = match &self.embeddings {
            Embeddings::Text(e) => e,
            Embeddings::Patch(e) => return self.embed_patches(e, x, tokens, out),
        };
        for (r, &t) in tokens.iter().enumerate() {
            let row = &mut out[r * d..(r + 1) * d];
            let id = x.ids[t] as usize;
            let ty = x.type_ids[t] as usize;
            let w = &e.word[id * d..(id + 1) * d];
            let p = &e.position[t * d..(t + 1) * d];
            let tt = &e.token_type[ty * d..(ty + 1) * d];
            for j in 0..d {
                row[j] = w[j] + p[j] + tt[j];
            }
        }
        e.ln.apply(out);
    }

    /// Vision embedding rows for `tokens`: special tokens from their table, patch tokens through
    /// the projection (only the patches in `tokens` are projected), plus position embeddings.
    fn embed_patches(&self, e: &PatchEmbeddings, x: &EncodedInput, tokens: &[usize], out: &mut [f32]) {
        let d = self.config.hidden_size;
        let ns = e.special.len() / d;
        let pd = e.projection.d_in;
        let patch_tokens: Vec<usize> = tokens.iter().copied().filter(|&t| t >= ns).collect();
        let mut gathered = Vec::with_capacity(patch_tokens.len() * pd);
        for &t in &patch_tokens {
            gathered.extend_from_slice(&x.patches[(t - ns) * pd..(t - ns + 1) * pd]);
        }
        let projected = e.projection.forward(&gathered);
        let mut next_patch = 0;
        for (r, &t) in tokens.iter().enumerate() {
            let row = &mut out[r * d..(r + 1) * d];
            let src = if t < ns {
                &e.special[t * d..(t + 1) * d]
            } else {
                next_patch += 1;
                &projected[(next_patch - 1) * d..next_patch * d]
            };
            let pos = &e.position[t * d..(t + 1) * d];
            for j in 0..d {
                row[j] = src[j] + pos[j];
            }
        }
    }

    /// `O_L` of a classification plan for this model: `[0]`, or `[0, 1]` for DeiT.
    pub fn top_tokens(&self) -> Vec<usize> {
        self.config.top_tokens()
    }

    /// Run a batch where each example has its own plan (ragged), computing only the planned rows.
    ///
    /// `inputs[e]` holds real tokens only; `plans[e].n()` must equal `inputs[e].len()` and have
    /// `L` layers. Returns, per example, the last-layer rows `O_L`.
    /// Errors: invalid input (see [`check_input`](Self::check_input)) or a plan that does not fit.
    pub fn run(&self, inputs: &[EncodedInput], plans: &[TokenPlan], opts: RunOptions) -> Result<Vec<ExampleOutput>, ModelError> {
        self.run_inner(inputs, None, PlanSource::Static(plans), opts)
    }

    /// Like [`run`](Self::run), but starting from embedding outputs instead of token ids:
    /// `x0[e]` is `[plans[e].n(), d]` (all real tokens; only the rows in `I_1` are read).
    /// Errors: mismatched counts, or a row count that is not `n · d`.
    pub fn run_from_embeddings(&self, x0: &[Vec<f32>], plans: &[TokenPlan], opts: RunOptions) -> Result<Vec<ExampleOutput>, ModelError> {
        let d = self.config.hidden_size;
        if x0.len() != plans.len() {
            return Err(ModelError::Input(format!("{} embedding inputs but {} plans", x0.len(), plans.len())));
        }
        let mut dummies = Vec::with_capacity(x0.len());
        for (e, (x, p)) in x0.iter().zip(plans).enumerate() {
            if x.len() != p.n() * d {
                return Err(ModelError::Input(format!(
                    "example {e}: embedding input has {} values, expected n·d = {}·{}",
                    x.len(),
                    p.n(),
                    d
                )));
            }
            if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                return Err(ModelError::Input(format!("example {e}: embedding input holds a non-finite value at flat index {i}")));
            }
            dummies.push(EncodedInput { ids: vec![0; p.n()], type_ids: vec![0; p.n()], patches: Vec::new() });
        }
        self.run_inner(&dummies, Some(x0), PlanSource::Static(plans), opts)
    }

    /// Run with a feed-forward planner: layer 1 reads every token, and `hook` chooses `I_{l+1}`
    /// from layer `l`'s attention. The last layer outputs `top` (normally `[0]`).
    /// Returns the outputs and the plans that were executed.
    pub fn run_feed_forward(
        &self,
        inputs: &[EncodedInput],
        hook: &dyn LayerHook,
        top: &[usize],
        opts: RunOptions,
    ) -> Result<(Vec<ExampleOutput>, Vec<TokenPlan>), ModelError> {
        hook.check_layers(self.layers.len())?;
        let mut executed: Vec<Vec<Vec<usize>>> = vec![Vec::new(); inputs.len()];
        let outs = self.run_inner(inputs, None, PlanSource::Hook { hook, top, executed: &mut executed }, opts)?;
        let plans = executed
            .into_iter()
            .zip(inputs)
            .enumerate()
            .map(|(e, (ins, x))| {
                TokenPlan::from_inputs(x.len(), ins, top.to_vec()).map_err(|source| ModelError::Plan { example: e, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((outs, plans))
    }

    /// Dense run of a batch (full plan: every token in, every token out).
    pub fn run_dense(&self, inputs: &[EncodedInput], opts: RunOptions) -> Result<Vec<ExampleOutput>, ModelError> {
        let plans: Vec<TokenPlan> = inputs.iter().map(|x| TokenPlan::dense(x.len().max(1), self.layers.len())).collect();
        self.run(inputs, &plans, opts)
    }

    /// Run static `plans` and return, per example, each layer's attention reduced over heads as
    /// `[L, n, n]` f64 (query rows in `O_l`, keys in `I_l`, everything else 0): the f64 sum over
    /// heads in head order divided by the head count (`max = false`), or the f64 max (`max = true`).
    /// This is what attention back-tracking reads (`planners::abt::backtrack_reduced`), without
    /// keeping `[L, H, n, n]` per example.
    ///
    /// Large batches run in consecutive groups of about [`REDUCED_GROUP_ROWS`] tokens, so that a
    /// layer's per-head attention maps (`[H, n, n]` f32 per example, 100 MB for 32 x 256 tokens
    /// with 12 heads) stay small and are reused instead of being faulted in afresh every layer.
    pub fn run_attention_reduced(&self, inputs: &[EncodedInput], plans: &[TokenPlan], max: bool) -> Result<Vec<Vec<f64>>, ModelError> {
        self.run_attention_reduced_with(inputs, plans, if max { HeadReduce::Max } else { HeadReduce::Mean })
    }

    /// [`run_attention_reduced`](Self::run_attention_reduced) with any [`HeadReduce`]: e.g. the
    /// concrete planner's per-head standardised scores, reduced while each block of 16 query rows
    /// is in cache instead of storing `[L, H, n, n]` maps.
    ///
    /// Errors: as `run_attention_reduced`; with `ConcreteCdf`, a non-finite score row (NaN
    /// weights) or a row of at most `ddof` keys.
    pub fn run_attention_reduced_with(
        &self,
        inputs: &[EncodedInput],
        plans: &[TokenPlan],
        reduce: HeadReduce,
    ) -> Result<Vec<Vec<f64>>, ModelError> {
        // Checked here, once, with batch-wide example numbers.
        for (e, x) in inputs.iter().enumerate() {
            self.check_input(e, x)?;
        }
        let big_l = self.layers.len();
        if plans.len() != inputs.len() || plans.iter().zip(inputs).any(|(p, x)| p.n() != x.len() || p.num_layers() != big_l) {
            return Err(ModelError::Input("run_attention_reduced: one plan per input, for its length and the model's layers".into()));
        }
        kernels::in_pool(move || {
            let mut out = Vec::with_capacity(inputs.len());
            let mut start = 0;
            while start < inputs.len() {
                let mut end = start + 1;
                let mut rows = inputs[start].len();
                while end < inputs.len() && rows + inputs[end].len() <= REDUCED_GROUP_ROWS {
                    rows += inputs[end].len();
                    end += 1;
                }
                out.extend(self.run_attention_reduced_in_pool(&inputs[start..end], &plans[start..end], reduce)?);
                start = end;
            }
            Ok(out)
        })
    }

    fn run_attention_reduced_in_pool(
        &self,
        inputs: &[EncodedInput],
        plans: &[TokenPlan],
        reduce: HeadReduce,
    ) -> Result<Vec<Vec<f64>>, ModelError> {
        let c = &self.config;
        let d = c.hidden_size;
        let big_l = self.layers.len();
        let mut segs: Vec<Segment> = Vec::with_capacity(inputs.len());
        let mut total = 0;
        for p in plans {
            let rows = p.inputs(0).to_vec();
            let len = rows.len();
            segs.push(Segment { rows, offset: total });
            total += len;
        }
        let mut hidden = vec![0.0f32; total * d];
        {
            let mut chunks: Vec<(&Segment, &EncodedInput, &mut [f32])> = Vec::with_capacity(segs.len());
            let mut rest: &mut [f32] = &mut hidden;
            for (s, x) in segs.iter().zip(inputs) {
                let (a, b) = rest.split_at_mut(s.rows.len() * d);
                chunks.push((s, x, a));
                rest = b;
            }
            chunks.into_par_iter().for_each(|(s, x, out)| self.embed_rows(x, &s.rows, out));
        }
        let mut reduced: Vec<Vec<f64>> = inputs.iter().map(|x| vec![0.0f64; big_l * x.len() * x.len()]).collect();
        for (l, layer) in self.layers.iter().enumerate() {
            let out_pos: Vec<Vec<usize>> = segs.iter().zip(plans).map(|(s, p)| positions_in(&s.rows, p.outputs(l))).collect();
            let sink = ReduceSink {
                kind: reduce,
                bad: std::sync::atomic::AtomicBool::new(false),
                dst: reduced
                    .iter_mut()
                    .map(|r| {
                        let off = l * r.len() / big_l;
                        SendPtrF64(r[off..].as_mut_ptr())
                    })
                    .collect(),
                n: inputs.iter().map(|x| x.len()).collect(),
            };
            let LayerOut { y, .. } = self.layer_forward(layer, &hidden, &segs, &out_pos, None, None, false, Some(&sink));
            if sink.bad.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ModelError::Input(format!("layer {}: an attention score row is not finite (NaN or infinite weights?) or has too few keys for the standardised scores", l + 1)));
            }
            let mut off = 0;
            for (s, op) in segs.iter_mut().zip(&out_pos) {
                s.rows = op.iter().map(|&p| s.rows[p]).collect();
                s.offset = off;
                off += s.rows.len();
            }
            hidden = y;
        }
        Ok(reduced)
    }

    fn run_inner(
        &self,
        inputs: &[EncodedInput],
        x0: Option<&[Vec<f32>]>,
        source: PlanSource<'_, '_>,
        opts: RunOptions,
    ) -> Result<Vec<ExampleOutput>, ModelError> {
        kernels::in_pool(move || self.run_inner_in_pool(inputs, x0, source, opts))
    }

    fn run_inner_in_pool(
        &self,
        inputs: &[EncodedInput],
        x0: Option<&[Vec<f32>]>,
        mut source: PlanSource<'_, '_>,
        opts: RunOptions,
    ) -> Result<Vec<ExampleOutput>, ModelError> {
        let c = &self.config;
        let d = c.hidden_size;
        let big_l = self.layers.len();
        if x0.is_none() {
            for (e, x) in inputs.iter().enumerate() {
                self.check_input(e, x)?;
            }
        }
        if let PlanSource::Static(plans) = &source {
            if plans.len() != inputs.len() {
                return Err(ModelError::Input(format!("{} inputs but {} plans", inputs.len(), plans.len())));
            }
            for (e, (p, x)) in plans.iter().zip(inputs).enumerate() {
                if p.n() != x.len() || p.num_layers() != big_l {
                    return Err(ModelError::Input(format!(
                        "plan of example {e} is for n = {} tokens and {} layers, but the input has {} tokens and the model {} layers",
                        p.n(),
                        p.num_layers(),
                        x.len(),
                        big_l
                    )));
                }
            }
        }
        // Layer-1 inputs and the embedding output of those rows, packed.
        let mut segs: Vec<Segment> = Vec::with_capacity(inputs.len());
        let mut total = 0;
        for (e, x) in inputs.iter().enumerate() {
            let rows: Vec<usize> = match &source {
                PlanSource::Static(plans) => plans[e].inputs(0).to_vec(),
                PlanSource::Hook { .. } => (0..x.len()).collect(),
            };
            segs.push(Segment { rows, offset: total });
            total += segs[e].rows.len();
        }
        let t_embed = crate::profile::start();
        let mut hidden = vec![0.0f32; total * d];
        {
            let mut chunks: Vec<(usize, &Segment, &EncodedInput, &mut [f32])> = Vec::with_capacity(segs.len());
            let mut rest: &mut [f32] = &mut hidden;
            for (e, (s, x)) in segs.iter().zip(inputs).enumerate() {
                let (a, b) = rest.split_at_mut(s.rows.len() * d);
                chunks.push((e, s, x, a));
                rest = b;
            }
            chunks.into_par_iter().for_each(|(e, s, x, out)| match x0 {
                Some(x0) => {
                    for (r, &t) in s.rows.iter().enumerate() {
                        out[r * d..(r + 1) * d].copy_from_slice(&x0[e][t * d..(t + 1) * d]);
                    }
                }
                None => self.embed_rows(x, &s.rows, out),
            });
        }
        crate::profile::lap(t_embed, crate::profile::Stage::Embed);
        let mut attn_out: Vec<Vec<LayerAttention>> = vec![Vec::new(); inputs.len()];
        let mut states: Vec<Vec<(Vec<usize>, Vec<f32>)>> = vec![Vec::new(); inputs.len()];
        if opts.hidden_states {
            for (e, s) in segs.iter().enumerate() {
                states[e].push((s.rows.clone(), hidden[s.offset * d..(s.offset + s.rows.len()) * d].to_vec()));
            }
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if let PlanSource::Hook { executed, .. } = &mut source {
                for (e, s) in segs.iter().enumerate() {
                    executed[e].push(s.rows.clone());
                }
            }
            // Output rows of this layer, as positions within the current rows.
            let need_full_attn = matches!(source, PlanSource::Hook { .. }) && l + 1 < big_l;
            let out_pos: Vec<Vec<usize>> = segs
                .iter()
                .enumerate()
                .map(|(e, s)| {
                    let out_tokens: &[usize] = match &source {
                        PlanSource::Static(plans) => plans[e].outputs(l),
                        PlanSource::Hook { top, .. } => {
                            if l + 1 == big_l {
                                top
                            } else {
                                &s.rows
                            }
                        }
                    };
                    positions_in(&s.rows, out_tokens)
                })
                .collect();
            let want_attn = opts.attentions || need_full_attn;
            let LayerOut { y: next, probs, .. } = self.layer_forward(layer, &hidden, &segs, &out_pos, None, None, want_attn, None);
            // Feed-forward planners: choose I_{l+1} from this layer's attention over I_l.
            let mut new_rows: Vec<Vec<usize>> = segs.iter().zip(&out_pos).map(|(s, op)| op.iter().map(|&p| s.rows[p]).collect()).collect();
            let mut hidden_next = next;
            if let (PlanSource::Hook { hook, top, .. }, true) = (&source, need_full_attn) {
                let chosen: Vec<Vec<usize>> = segs
                    .par_iter()
                    .enumerate()
                    .map(|(e, s)| {
                        // the top tokens (CLS, DeiT's distillation token) are kept at every layer
                        let mut next = hook.next_inputs(e, l + 1, inputs[e].len(), &s.rows, &probs[e], c.num_heads);
                        next.extend(top.iter().copied().filter(|t| s.rows.contains(t)));
                        next.sort_unstable();
                        next.dedup();
                        next
                    })
                    .collect();
                // gather the chosen rows out of this layer's (full) outputs
                let mut packed = Vec::with_capacity(chosen.iter().map(|v| v.len()).sum::<usize>() * d);
                let mut off = 0;
                for (e, ch) in chosen.iter().enumerate() {
                    let pos = positions_in(&new_rows[e], ch);
                    let base = off;
                    for p in pos {
                        packed.extend_from_slice(&hidden_next[(base + p) * d..(base + p + 1) * d]);
                    }
                    off += new_rows[e].len();
                }
                new_rows = chosen;
                hidden_next = packed;
            }
            if opts.attentions {
                for (e, s) in segs.iter().enumerate() {
                    attn_out[e].push(LayerAttention {
                        queries: out_pos[e].iter().map(|&p| s.rows[p]).collect(),
                        keys: s.rows.clone(),
                        probs: probs[e].clone(),
                    });
                }
            }
            let mut off = 0;
            for (s, rows) in segs.iter_mut().zip(new_rows) {
                s.offset = off;
                off += rows.len();
                s.rows = rows;
            }
            hidden = hidden_next;
            if opts.hidden_states {
                for (e, s) in segs.iter().enumerate() {
                    states[e].push((s.rows.clone(), hidden[s.offset * d..(s.offset + s.rows.len()) * d].to_vec()));
                }
            }
        }
        if let Some(ln) = &self.final_ln {
            ln.apply(&mut hidden);
        }
        Ok(segs
            .iter()
            .enumerate()
            .map(|(e, s)| ExampleOutput {
                rows: s.rows.clone(),
                hidden: hidden[s.offset * d..(s.offset + s.rows.len()) * d].to_vec(),
                attentions: opts.attentions.then(|| std::mem::take(&mut attn_out[e])),
                hidden_states: opts.hidden_states.then(|| std::mem::take(&mut states[e])),
            })
            .collect())
    }

    /// One layer over a packed batch. `x` holds, for each segment, its current rows (keys/values);
    /// `out_pos[e]` are the positions (within the segment's rows) of the query/output rows.
    /// `key_weights[e]`, when given, renormalises attention over the segment's keys
    /// (soft mask, ALGORITHM.md section 4.3): `P_ij <- P_ij m_j / (Σ_k P_ik m_k + 1e-9)`.
    /// `key_pos[e]`, when given, restricts the keys to those positions (default: all rows).
    /// Returns the packed output rows `[Σ|out_pos|, d]` and, if asked, each segment's attention
    /// `[H, |out_pos|, |keys|]` (after renormalisation).
    #[allow(clippy::too_many_arguments)]
    /// With `reduce`, the attention is not kept: each task takes 16 query rows of one example
    /// through every head and writes their head reduction straight into `reduce` (while the
    /// probabilities are in cache); `probs` is then empty.
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        layer: &EncoderLayer,
        x: &[f32],
        segs: &[Segment],
        out_pos: &[Vec<usize>],
        key_pos: Option<&[Vec<usize>]>,
        key_weights: Option<&[Vec<f32>]>,
        want_attn: bool,
        reduce: Option<&ReduceSink>,
    ) -> LayerOut {
        let c = &self.config;
        let d = c.hidden_size;
        let h = c.num_heads;
        let dh = c.head_size();
        let pre_norm = c.pre_norm();
        use crate::profile::{lap, Stage};
        let t = crate::profile::start();
        // Pre-LN (ViT): Q/K/V read LayerNorm(x); the residual reads x.
        let normed: Option<Vec<f32>> = pre_norm.then(|| {
            let mut h = x.to_vec();
            layer.attn_ln.apply(&mut h);
            h
        });
        let x_in: &[f32] = normed.as_deref().unwrap_or(x);
        // Gather the output rows (queries, residual); dense layers use `x` as it is.
        let n_out: usize = out_pos.iter().map(|v| v.len()).sum();
        let identity = segs.iter().zip(out_pos).all(|(s, op)| op.len() == s.rows.len() && op.iter().enumerate().all(|(i, &p)| i == p))
            && segs.iter().map(|s| s.rows.len()).sum::<usize>() * d == x.len();
        let mut out_off = Vec::with_capacity(segs.len());
        {
            let mut r = 0;
            for op in out_pos {
                out_off.push(r);
                r += op.len();
            }
        }
        let gather = |src: &[f32]| -> Vec<f32> {
            let mut buf = Vec::with_capacity(n_out * d);
            for (s, op) in segs.iter().zip(out_pos) {
                for &p in op {
                    buf.extend_from_slice(&src[(s.offset + p) * d..(s.offset + p + 1) * d]);
                }
            }
            buf
        };
        let (gathered_xo, gathered_qin) = if identity { (None, None) } else { (Some(gather(x)), pre_norm.then(|| gather(x_in))) };
        let xo: &[f32] = gathered_xo.as_deref().unwrap_or(x);
        let q_in: &[f32] = if pre_norm { gathered_qin.as_deref().unwrap_or(x_in) } else { xo };
        let t = lap(t, Stage::Gather);
        // K and V for every current row, Q for the output rows.
        let n_rows = x.len() / d;
        let blocks = row_blocks(n_rows.max(n_out), d * (4 * d + 2 * c.intermediate_size));
        let (kv, q) = if blocks > 1 {
            let mut kv = vec![0.0f32; n_rows * 2 * d];
            let mut q = vec![0.0f32; n_out * d];
            let (kb, qb) = (n_rows.div_ceil(blocks).max(1), n_out.div_ceil(blocks).max(1));
            // One task per thread, each a block of K/V rows and a block of Q rows (even shares).
            let mut kv_blocks: Vec<_> = x_in.chunks(kb * d).zip(kv.chunks_mut(kb * 2 * d)).map(Some).collect();
            let mut q_blocks: Vec<_> = q_in.chunks(qb * d).zip(q.chunks_mut(qb * d)).map(Some).collect();
            kv_blocks.resize_with(blocks, || None);
            q_blocks.resize_with(blocks, || None);
            let tasks: Vec<_> = kv_blocks.into_iter().zip(q_blocks).collect();
            tasks.into_par_iter().for_each(|(kv_task, q_task)| {
                kernels::serial(|| {
                    if let Some((a, o)) = kv_task {
                        layer.key_value.forward_into(a, o);
                    }
                    if let Some((a, o)) = q_task {
                        layer.query.forward_into(a, o);
                    }
                })
            });
            (kv, q)
        } else {
            (layer.key_value.forward(x_in), layer.query.forward(q_in))
        };
        let t = lap(t, Stage::Projections);
        // Attention: one task per (example, head), hand-written kernel (no GEMM call overhead).
        let mut ctx = vec![0.0f32; n_out * d];
        let ctx_ptr = SendPtr(ctx.as_mut_ptr());
        let n_keys = |e: usize| key_pos.map_or(segs[e].rows.len(), |kp| kp[e].len());
        let mut probs: Vec<Vec<f32>> =
            if want_attn { (0..segs.len()).map(|e| vec![0.0f32; h * out_pos[e].len() * n_keys(e)]).collect() } else { Vec::new() };
        if let Some(sink) = reduce {
            // One task per (example, block of 16 query rows): every head, then the reduction.
            let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
            for (e, op) in out_pos.iter().enumerate() {
                for q0 in (0..op.len()).step_by(16) {
                    tasks.push((e, q0, (q0 + 16).min(op.len())));
                }
            }
            let (q, kv, out_off) = (&q, &kv, &out_off);
            tasks.into_par_iter().for_each_init(
                || (Vec::<f32>::new(), Vec::<f32>::new(), Vec::<f64>::new(), Vec::<f32>::new(), Vec::<f64>::new()),
                move |(buf, kt, row, pbuf, acc), (e, q0, q1)| {
                    let ctx_ptr = ctx_ptr;
                    let s = &segs[e];
                    let nb = q1 - q0;
                    let ni = n_keys(e);
                    let key_rows = key_pos.map(|kp| &kp[e][..]);
                    let kw = key_weights.map(|kw| &kw[e][..]);
                    // one head's query rows of this block, the example's K/V rows, and the
                    // offset of the block's context columns for that head
                    let head_inputs = |head: usize| {
                        let qr = (out_off[e] + q0) * d + head * dh;
                        (&q[qr..(out_off[e] + q1) * d], &kv[s.offset * 2 * d + head * dh..(s.offset + s.rows.len()) * 2 * d], qr)
                    };
                    if sink.kind == HeadReduce::Mean && kw.is_none() && kernels::attention_accumulate_supported(dh, nb, ni) {
                        // probabilities added over heads as they are produced (lane-major f64)
                        acc.resize(16 * ni, 0.0);
                        for head in 0..h {
                            let (q_b, kv_e, c0) = head_inputs(head);
                            // SAFETY: rows out_off[e]+q0..q1 of ctx, columns of this head: this task only.
                            unsafe {
                                kernels::attention_head_accumulate(
                                    q_b,
                                    d,
                                    kv_e,
                                    2 * d,
                                    d,
                                    key_rows,
                                    nb,
                                    ni,
                                    dh,
                                    ctx_ptr.0.add(c0),
                                    d,
                                    acc,
                                    head == 0,
                                );
                            }
                        }
                        let (n, hf) = (sink.n[e], h as f64);
                        for r in 0..nb {
                            let token = s.rows[out_pos[e][q0 + r]];
                            // SAFETY: as below (one task per query token; token < n).
                            let dst = unsafe { std::slice::from_raw_parts_mut(sink.dst[e].0.add(token * n), n) };
                            for j in 0..ni {
                                let key = key_pos.map_or(j, |kp| kp[e][j]);
                                dst[s.rows[key]] = acc[16 * j + r] / hf;
                            }
                        }
                        return;
                    }
                    buf.resize(h * nb * ni, 0.0);
                    if let HeadReduce::ConcreteCdf { ddof, eps } = sink.kind {
                        // U row = (1/H) Σ_h Φ(standardised S_h row), heads in order, from the
                        // pre-softmax scores S (section 4 step 1), not from the probabilities:
                        // ln P of a key ~88 nats below its row's max underflows in f32
                        // (planners::concrete::standardized_cdf_scores_fast's arithmetic on S).
                        // The probabilities themselves are not kept (only the context).
                        let lanes = kw.is_none() && kernels::attention_accumulate_supported(dh, nb, ni);
                        for head in 0..h {
                            let (q_b, kv_e, c0) = head_inputs(head);
                            // the AVX-512 kernel skips writing probabilities; others need a buffer
                            if !lanes {
                                pbuf.resize(nb * ni, 0.0);
                            }
                            let probs: &mut [f32] = if lanes { &mut [] } else { &mut pbuf[..nb * ni] };
                            // SAFETY: rows out_off[e]+q0..q1 of ctx, columns of this head: this task only.
                            unsafe {
                                kernels::attention_head(q_b, d, kv_e, 2 * d, d, key_rows, kw, nb, ni, dh, probs, ctx_ptr.0.add(c0), d, kt);
                            }
                            kernels::attention_scores(
                                q_b,
                                d,
                                kv_e,
                                2 * d,
                                key_rows,
                                nb,
                                ni,
                                dh,
                                kt,
                                &mut buf[head * nb * ni..(head + 1) * nb * ni],
                            );
                        }
                        let n = sink.n[e];
                        let inv_h = 1.0 / h as f64;
                        for r in 0..nb {
                            let token = s.rows[out_pos[e][q0 + r]];
                            row.clear();
                            row.resize(ni, 0.0);
                            for head in 0..h {
                                let sc = &buf[head * nb * ni + r * ni..][..ni];
                                if ni <= ddof || !kernels::all_finite(sc) {
                                    sink.bad.store(true, std::sync::atomic::Ordering::Relaxed);
                                    continue;
                                }
                                kernels::standardized_cdf_row(sc, ddof, eps, row);
                            }
                            row.iter_mut().for_each(|x| *x *= inv_h);
                            // SAFETY: each query token of example e is in exactly one task; the
                            // sink's block for e is [n, n] and token < n.
                            let dst = unsafe { std::slice::from_raw_parts_mut(sink.dst[e].0.add(token * n), n) };
                            for (j, &a) in row.iter().enumerate() {
                                let key = key_pos.map_or(j, |kp| kp[e][j]);
                                dst[s.rows[key]] = a;
                            }
                        }
                        return;
                    }
                    for head in 0..h {
                        let (q_b, kv_e, c0) = head_inputs(head);
                        // SAFETY: rows out_off[e]+q0..q1 of ctx, columns of this head: this task only.
                        unsafe {
                            kernels::attention_head(
                                q_b,
                                d,
                                kv_e,
                                2 * d,
                                d,
                                key_rows,
                                kw,
                                nb,
                                ni,
                                dh,
                                &mut buf[head * nb * ni..(head + 1) * nb * ni],
                                ctx_ptr.0.add(c0),
                                d,
                                kt,
                            );
                        }
                    }
                    let n = sink.n[e];
                    let identity = key_pos.is_none() && ni == n;
                    for r in 0..nb {
                        let token = s.rows[out_pos[e][q0 + r]];
                        // SAFETY: each query token of example e is in exactly one task; the
                        // sink's block for e is [n, n] and token < n.
                        let dst = unsafe { std::slice::from_raw_parts_mut(sink.dst[e].0.add(token * n), n) };
                        let max = sink.kind == HeadReduce::Max;
                        if identity {
                            kernels::reduce_heads_row(&buf[r * ni..], nb * ni, h, max, dst);
                        } else {
                            row.resize(ni, 0.0);
                            kernels::reduce_heads_row(&buf[r * ni..], nb * ni, h, max, row);
                            for (j, &a) in row.iter().enumerate() {
                                let key = key_pos.map_or(j, |kp| kp[e][j]);
                                dst[s.rows[key]] = a;
                            }
                        }
                    }
                },
            );
        } else {
            let mut tasks: Vec<(usize, usize, Option<&mut [f32]>)> = Vec::with_capacity(segs.len() * h);
            if want_attn {
                for (e, all) in probs.iter_mut().enumerate() {
                    let per = out_pos[e].len() * n_keys(e);
                    let mut rest: &mut [f32] = all;
                    for head in 0..h {
                        let (a, b) = rest.split_at_mut(per);
                        tasks.push((e, head, Some(a)));
                        rest = b;
                    }
                }
            } else {
                for e in 0..segs.len() {
                    for head in 0..h {
                        tasks.push((e, head, None));
                    }
                }
            }
            let q = &q;
            let kv = &kv;
            let out_off = &out_off;
            tasks.into_par_iter().for_each(move |(e, head, p)| {
                let ctx_ptr = ctx_ptr;
                let s = &segs[e];
                let no = out_pos[e].len();
                let ni = n_keys(e);
                // no probabilities wanted: an empty slice (the kernel skips writing them)
                let probs_h: &mut [f32] = p.unwrap_or(&mut []);
                let mut kt = Vec::new();
                let q_e = &q[out_off[e] * d + head * dh..(out_off[e] + no) * d];
                let kv_e = &kv[s.offset * 2 * d + head * dh..(s.offset + s.rows.len()) * 2 * d];
                let key_rows = key_pos.map(|kp| &kp[e][..]);
                let kw = key_weights.map(|kw| &kw[e][..]);
                // SAFETY: rows out_off[e].. of ctx, columns head*dh..(head+1)*dh belong to this task only.
                unsafe {
                    kernels::attention_head(
                        q_e,
                        d,
                        kv_e,
                        2 * d,
                        d,
                        key_rows,
                        kw,
                        no,
                        ni,
                        dh,
                        probs_h,
                        ctx_ptr.0.add(out_off[e] * d + head * dh),
                        d,
                        &mut kt,
                    );
                }
            });
        }
        let t = lap(t, Stage::Attention);
        if blocks > 1 {
            let (a, (y, share)) = self.output_blocks(layer, &ctx, xo, n_out, blocks);
            crate::profile::split(t, Stage::AttentionOutput, Stage::FeedForward, share);
            return LayerOut { y, a, probs };
        }
        // Attention output projection + residual + LayerNorm.
        let mut a = layer.attn_out.forward(&ctx);
        drop(ctx);
        if pre_norm {
            // a = x + attention; y = a + FFN(LayerNorm(a))
            add_assign(&mut a, xo);
            let t = lap(t, Stage::AttentionOutput);
            let mut h = a.clone();
            layer.out_ln.apply(&mut h);
            let inter = layer.ffn_in.forward_act(&h, Some(c.activation));
            drop(h);
            let mut y = layer.ffn_out.forward(&inter);
            add_assign(&mut y, &a);
            lap(t, Stage::FeedForward);
            return LayerOut { y, a, probs };
        }
        kernels::residual_layer_norm(&mut a, xo, &layer.attn_ln.gamma, &layer.attn_ln.beta, layer.attn_ln.eps);
        let t = lap(t, Stage::AttentionOutput);
        // FFN + residual + LayerNorm.
        let inter = layer.ffn_in.forward_act(&a, Some(c.activation));
        let mut y = layer.ffn_out.forward(&inter);
        drop(inter);
        kernels::residual_layer_norm(&mut y, &a, &layer.out_ln.gamma, &layer.out_ln.beta, layer.out_ln.eps);
        lap(t, Stage::FeedForward);
        LayerOut { y, a, probs }
    }

    /// The rows after attention, in `blocks` row blocks on the pool (each block's kernels on one
    /// thread, see [`row_blocks`]): `a` = attention output projection + residual (+ LayerNorm
    /// after, in a post-LN block), `y` = the feed-forward block's output; also the share of the
    /// blocks' time spent in the attention-output part (for the stage timers; 0 when off).
    fn output_blocks(&self, layer: &EncoderLayer, ctx: &[f32], xo: &[f32], n_out: usize, blocks: usize) -> (Vec<f32>, (Vec<f32>, f64)) {
        let c = &self.config;
        let d = c.hidden_size;
        let pre_norm = c.pre_norm();
        let timed = crate::profile::start().is_some();
        let mut a = vec![0.0f32; n_out * d];
        let mut y = vec![0.0f32; n_out * d];
        let rb = n_out.div_ceil(blocks).max(1) * d;
        let (t_ao, t_all) = ctx
            .par_chunks(rb)
            .zip(xo.par_chunks(rb))
            .zip(a.par_chunks_mut(rb))
            .zip(y.par_chunks_mut(rb))
            .map(|(((ctx, xo), a), y)| {
                kernels::serial(|| {
                    let t0 = timed.then(std::time::Instant::now);
                    layer.attn_out.forward_into(ctx, a);
                    let inter = if pre_norm {
                        // a = x + attention; y = a + FFN(LayerNorm(a))
                        add_assign(a, xo);
                        let mut h = a.to_vec();
                        layer.out_ln.apply(&mut h);
                        h
                    } else {
                        kernels::residual_layer_norm(a, xo, &layer.attn_ln.gamma, &layer.attn_ln.beta, layer.attn_ln.eps);
                        Vec::new()
                    };
                    let t1 = timed.then(std::time::Instant::now);
                    let inter = layer.ffn_in.forward_act(if pre_norm { &inter } else { a }, Some(c.activation));
                    layer.ffn_out.forward_into(&inter, y);
                    if pre_norm {
                        add_assign(y, a);
                    } else {
                        kernels::residual_layer_norm(y, a, &layer.out_ln.gamma, &layer.out_ln.beta, layer.out_ln.eps);
                    }
                    match (t0, t1) {
                        (Some(t0), Some(t1)) => ((t1 - t0).as_secs_f64(), t0.elapsed().as_secs_f64()),
                        _ => (0.0, 0.0),
                    }
                })
            })
            .reduce(|| (0.0, 0.0), |p, q| (p.0 + q.0, p.1 + q.1));
        (a, (y, if t_all > 0.0 { t_ao / t_all } else { 0.0 }))
    }

    /// Soft-mask forward of one example (ALGORITHM.md section 4.3), for training parity and
    /// reference checks: every one of the `T` rows of `x0` (`[T, d]`, the embedding output) is
    /// computed; keys with `valid[j] = false` are excluded from the softmax; attention is
    /// renormalised over `masks[l-1]` (m^l, `[T]`), and layer l's output rows are scaled by
    /// `masks[l]` (m^{l+1}; `masks` has `L + 1` entries, the last one-hot CLS).
    /// Returns per layer `(P [H,T,T], attention output A [T,d], Y [T,d], X [T,d])`.
    pub fn forward_soft(&self, x0: &[f32], valid: &[bool], masks: &[Vec<f32>]) -> Result<Vec<SoftLayerTrace>, ModelError> {
        let d = self.config.hidden_size;
        let t = valid.len();
        if x0.len() != t * d || masks.len() != self.layers.len() + 1 || masks.iter().any(|m| m.len() != t) {
            return Err(ModelError::Input(format!("forward_soft: x0 must be [T={t}, d={d}] and masks [L+1={}][T]", self.layers.len() + 1)));
        }
        let h = self.config.num_heads;
        let real: Vec<usize> = (0..t).filter(|&j| valid[j]).collect();
        let nk = real.len();
        if nk == 0 {
            return Err(ModelError::Input("forward_soft: no real token (valid is all false); at least CLS must be valid".into()));
        }
        let mut x = x0.to_vec();
        let mut trace = Vec::with_capacity(self.layers.len());
        let segs = [Segment { rows: (0..t).collect(), offset: 0 }];
        let all_rows = vec![(0..t).collect::<Vec<usize>>()];
        let keys = vec![real.clone()];
        for (l, layer) in self.layers.iter().enumerate() {
            let kw = vec![real.iter().map(|&j| masks[l][j]).collect::<Vec<f32>>()];
            let out = self.layer_forward(layer, &x, &segs, &all_rows, Some(&keys), Some(&kw), true, None);
            // P over all T keys (padding columns 0).
            let mut p = vec![0.0f32; h * t * t];
            for head in 0..h {
                for i in 0..t {
                    for (kj, &j) in real.iter().enumerate() {
                        p[(head * t + i) * t + j] = out.probs[0][(head * t + i) * nk + kj];
                    }
                }
            }
            let mut xn = out.y.clone();
            for (i, row) in xn.chunks_exact_mut(d).enumerate() {
                let m = masks[l + 1][i];
                for v in row.iter_mut() {
                    *v *= m;
                }
            }
            trace.push(SoftLayerTrace { p, attention_output: out.a, y: out.y, x: xn.clone() });
            x = xn;
        }
        Ok(trace)
    }

    /// Pooler output `tanh(W h_CLS + b)`, `[d]`. Errors if the checkpoint has no pooler.
    pub fn pool(&self, cls: &[f32]) -> Result<Vec<f32>, ModelError> {
        let p = self.pooler.as_ref().ok_or_else(|| ModelError::Input("this checkpoint has no pooler (pooler.dense.*)".into()))?;
        let mut v = p.forward(cls);
        for x in v.iter_mut() {
            *x = x.tanh();
        }
        Ok(v)
    }

    /// Classification logits of one executor output, `[num_labels]`: from the CLS row, or for a
    /// DeiT-distilled head the mean of `cls_classifier(row 0)` and `distillation_classifier(row 1)`.
    /// Errors if the checkpoint has no classification head or a needed row was not computed.
    pub fn logits_of(&self, out: &ExampleOutput) -> Result<Vec<f32>, ModelError> {
        let Some(dc) = &self.distillation_classifier else {
            return self.logits(out.cls());
        };
        let d = self.config.hidden_size;
        let pos = out
            .rows
            .iter()
            .position(|&r| r == 1)
            .ok_or_else(|| ModelError::Input("the plan did not compute the distillation token (token 1) at the top layer".into()))?;
        let mut l = self.logits(out.cls())?;
        let ld = dc.forward(&out.hidden[pos * d..(pos + 1) * d]);
        for (a, b) in l.iter_mut().zip(ld) {
            *a = 0.5 * (*a + b);
        }
        Ok(l)
    }

    /// Classification logits from the CLS row (pooler, if present, then classifier), `[num_labels]`.
    /// For a DeiT-distilled head this is the class-token head only: use [`logits_of`](Self::logits_of).
    /// Errors if the checkpoint has no classification head.
    pub fn logits(&self, cls: &[f32]) -> Result<Vec<f32>, ModelError> {
        let head = self.classifier.as_ref().ok_or_else(|| {
            ModelError::Input("this checkpoint has no classification head (classifier.weight); fine-tune one with `sttabt finetune`".into())
        })?;
        let pooled = match &self.pooler {
            Some(_) => self.pool(cls)?,
            None => cls.to_vec(),
        };
        Ok(head.forward(&pooled))
    }
}

/// One layer of [`BertModel::forward_soft`]: `p` `[H, T, T]`, `attention_output` `[T, d]`
/// (after the first LayerNorm), `y` `[T, d]` (after the last LayerNorm), `x` `[T, d]` (`y` with
/// rows scaled by m^{l+1}).
#[derive(Debug, Clone, PartialEq)]
pub struct SoftLayerTrace {
    pub p: Vec<f32>,
    pub attention_output: Vec<f32>,
    pub y: Vec<f32>,
    pub x: Vec<f32>,
}

/// A raw pointer that may cross threads (each task writes a disjoint part).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes from rayon tasks while the owner is borrowed.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// How [`BertModel::run_attention_reduced_with`] reduces each query row of a layer's `H`
/// attention maps to one f64 row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeadReduce {
    /// Mean over heads (attention back-tracking, ALGORITHM.md section 3).
    Mean,
    /// Maximum over heads.
    Max,
    /// The concrete planner's step 1 (section 4): the mean over heads of `Φ` of each head's
    /// standardised pre-softmax scores `S = Q Kᵀ / √d_h` (f32, [`kernels::attention_scores`];
    /// `ddof`, `eps` and the arithmetic as in `planners::concrete::standardized_cdf_scores_fast`).
    ConcreteCdf { ddof: usize, eps: f64 },
}

/// Per example, where a layer's head-reduced attention goes: `dst[e]` points to an `[n[e], n[e]]`
/// f64 block indexed by token (query row, key column), written by `layer_forward` tasks.
struct ReduceSink {
    kind: HeadReduce,
    /// Set by a task that met a row `kind` cannot reduce (non-finite, too few keys).
    bad: std::sync::atomic::AtomicBool,
    dst: Vec<SendPtrF64>,
    n: Vec<usize>,
}

#[derive(Clone, Copy)]
struct SendPtrF64(*mut f64);
// SAFETY: tasks write disjoint rows (one query token each) while the owner is borrowed.
unsafe impl Send for SendPtrF64 {}
unsafe impl Sync for SendPtrF64 {}

/// Output of one layer over a packed batch: `y` (after the last LayerNorm), `a` (after the first),
/// per-segment attention when asked for.
struct LayerOut {
    y: Vec<f32>,
    a: Vec<f32>,
    probs: Vec<Vec<f32>>,
}

enum PlanSource<'a, 'b> {
    Static(&'a [TokenPlan]),
    Hook { hook: &'a dyn LayerHook, top: &'a [usize], executed: &'b mut Vec<Vec<Vec<usize>>> },
}

/// Layers with at most this many weights (floats) split their rows across threads
/// ([`row_blocks`]): every thread then reads all of the layer's weights, which must stay cheap
/// (446 K floats = 1.7 MB for the MiniLM ApproxNet, f = 4; the teacher's 1.77 M floats per layer
/// ran 4-8% slower row-split than column-split, examples/plan_probe.rs `ab`).
pub const ROW_BLOCK_MAX_WEIGHTS: usize = 512 * 1024;

/// How many row blocks a layer's row-wise work (projections, feed-forward, LayerNorms) is split
/// into across the pool for `rows` rows of a layer with `weights` weight floats: one per thread
/// for small layers at packed-GEMM sizes (at least 8 rows per thread, at most
/// [`PACKED_MAX_ROWS`] in all), each block's kernels then running on one thread: 3 fork/joins per
/// layer instead of one per kernel, and the LayerNorms split too. 1 (each kernel splits its own
/// work by output columns) otherwise.
fn row_blocks(rows: usize, weights: usize) -> usize {
    let t = kernels::threads();
    if t <= 1
        || rows > PACKED_MAX_ROWS
        || rows < 8 * t
        || weights > ROW_BLOCK_MAX_WEIGHTS
        || !kernels::packed::available()
        || !ROW_BLOCKS.load(std::sync::atomic::Ordering::Relaxed)
    {
        return 1;
    }
    t
}

static ROW_BLOCKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Switch the row-block split of [`row_blocks`] on or off (on by default) process-wide: for A/B
/// measurements and the equality test (both ways give the same bits on the packed path).
#[doc(hidden)]
pub fn set_row_blocks(on: bool) {
    ROW_BLOCKS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `x += y` element-wise (pre-LN residuals).
fn add_assign(x: &mut [f32], y: &[f32]) {
    if kernels::threads() <= 1 {
        for (p, q) in x.iter_mut().zip(y) {
            *p += *q;
        }
        return;
    }
    x.par_chunks_mut(4096).zip(y.par_chunks(4096)).for_each(|(a, b)| {
        for (p, q) in a.iter_mut().zip(b) {
            *p += *q;
        }
    });
}

/// Positions of `wanted` (sorted token indices) within `rows` (sorted token indices, a superset).
fn positions_in(rows: &[usize], wanted: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(wanted.len());
    let mut p = 0;
    for &w in wanted {
        while p < rows.len() && rows[p] < w {
            p += 1;
        }
        out.push(p.min(rows.len().saturating_sub(1)));
    }
    out
}

fn concat_cols(a: &Linear, b: &Linear) -> Linear {
    let d_in = a.d_in;
    let d_out = a.d_out + b.d_out;
    let mut w = vec![0.0; d_in * d_out];
    for i in 0..d_in {
        w[i * d_out..i * d_out + a.d_out].copy_from_slice(&a.w[i * a.d_out..(i + 1) * a.d_out]);
        w[i * d_out + a.d_out..(i + 1) * d_out].copy_from_slice(&b.w[i * b.d_out..(i + 1) * b.d_out]);
    }
    let mut bias = a.b.clone();
    bias.extend_from_slice(&b.b);
    Linear { w, b: bias, d_in, d_out, packed: PackedCache::default() }
}

pub(crate) fn split_cols(l: &Linear, first: usize) -> (Linear, Linear) {
    let second = l.d_out - first;
    let mut wa = vec![0.0; l.d_in * first];
    let mut wb = vec![0.0; l.d_in * second];
    for i in 0..l.d_in {
        wa[i * first..(i + 1) * first].copy_from_slice(&l.w[i * l.d_out..i * l.d_out + first]);
        wb[i * second..(i + 1) * second].copy_from_slice(&l.w[i * l.d_out + first..(i + 1) * l.d_out]);
    }
    (
        Linear { w: wa, b: l.b[..first].to_vec(), d_in: l.d_in, d_out: first, packed: PackedCache::default() },
        Linear { w: wb, b: l.b[first..].to_vec(), d_in: l.d_in, d_out: second, packed: PackedCache::default() },
    )
}

fn push_linear(out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, prefix: &str, l: &Linear) {
    out.push((format!("{prefix}.weight"), vec![l.d_out, l.d_in], l.weight_hf()));
    out.push((format!("{prefix}.bias"), vec![l.d_out], l.b.clone()));
}

fn push_ln(out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, prefix: &str, ln: &LayerNorm) {
    out.push((format!("{prefix}.weight"), vec![ln.gamma.len()], ln.gamma.clone()));
    out.push((format!("{prefix}.bias"), vec![ln.beta.len()], ln.beta.clone()));
}

/// Mean of the rows of `hidden` (`[rows, d]`) normalised to unit L2 norm: the sentence-transformers
/// embedding when `hidden` holds every real token.
pub fn mean_pool_normalized(hidden: &[f32], d: usize) -> Vec<f32> {
    let rows = (hidden.len() / d).max(1);
    let mut v = vec![0.0f64; d];
    for row in hidden.chunks_exact(d) {
        for (a, b) in v.iter_mut().zip(row) {
            *a += *b as f64;
        }
    }
    let norm = v.iter().map(|x| (x / rows as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|x| (x / rows as f64 / norm) as f32).collect()
}
