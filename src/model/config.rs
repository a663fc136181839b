//! [`EncoderConfig`] and its validation from Hugging Face `config.json` fields (reading and
//! writing the file itself, for every family, is `config_file`'s job).
//!
//! Mirrors the fields of `transformers.BertConfig` (and `ViTConfig`/`DeiTConfig`) that the
//! encoder uses; DistilBERT (`DistilBertConfig`: `dim`, `n_layers`, ...) and RoBERTa / XLM-R /
//! CamemBERT configs are parsed in [`super::families`]. Unknown fields are ignored, optional ones
//! get the HF defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Activation of the feed-forward block (defined beside its kernels).
pub use crate::kernels::Activation;

/// The `model_type`s this crate reads.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert", "distilbert", "roberta", "xlm-roberta", "camembert", "vit", "deit"];

/// The error sentence for a `model_type` this crate does not read: names it and lists the supported ones.
pub fn unsupported_model_type(model_type: &str) -> String {
    format!("model_type '{model_type}' is not supported (supported: {})", SUPPORTED_MODEL_TYPES.join(", "))
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }
    /// Parse HF's `hidden_act`; the error names the value and the supported ones.
    pub(crate) fn from_hf(name: &str) -> Result<Self, String> {
        Self::parse(name).ok_or_else(|| format!("hidden_act '{name}' is not supported (expected gelu, gelu_new or relu)"))
    }
    /// The HF name of this activation.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_new",
            Self::Relu => "relu",
        }
    }
}

/// Raw `config.json` as written by transformers (BERT family). Field names are HF's.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HfBertConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub problem_type: Option<String>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}

/// Which model family a configuration describes: where the LayerNorms sit and how tokens are embedded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Architecture {
    /// BERT: token + position + type embeddings with LayerNorm, post-LayerNorm layers, optional
    /// pooler. Token 0 is `[CLS]`.
    #[default]
    Bert,
    /// DistilBERT (`distilbert.*`): word + position embeddings (no token types; the model ignores
    /// type ids), LayerNorm eps 1e-12, post-LayerNorm layers (`sa_layer_norm`,
    /// `output_layer_norm`), head `pre_classifier` + ReLU + `classifier` on token 0.
    DistilBert,
    /// RoBERTa / XLM-R / CamemBERT (`roberta.*`): BERT's layers; position ids start at
    /// `padding_idx + 1`, a single token type (always 0), head `classifier.dense` + tanh +
    /// `classifier.out_proj` on `<s>` (token 0).
    Roberta(RobertaConfig),
    /// ViT / DeiT: patch embedding (a conv with stride = kernel = patch size), class token
    /// (and DeiT's distillation token), learned position embeddings, pre-LayerNorm layers, a final
    /// LayerNorm. Tokens `0..num_special_tokens()` are the class (and distillation) tokens,
    /// token `num_special_tokens() + i` is patch `i` in raster order.
    Vit(VisionConfig),
}

/// What a RoBERTa-family configuration adds to BERT's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobertaConfig {
    /// `"roberta"`, `"xlm-roberta"` or `"camembert"` (written back into `config.json`).
    pub model_type: String,
    /// `pad_token_id`: position ids of an unpadded sequence are `padding_idx + 1 + i`
    /// (HF `create_position_ids_from_input_ids`).
    pub padding_idx: usize,
}

/// Activation between the pooler-like dense layer of a text head and the classifier: tanh for
/// BERT's pooler and RoBERTa's `classifier.dense`, ReLU for DistilBERT's `pre_classifier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolerActivation {
    Tanh,
    Relu,
}

/// The image side of a ViT / DeiT configuration (HF `ViTConfig` / `DeiTConfig` fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// `"vit"` or `"deit"` (DeiT always has a distillation token; HF `DeiTEmbeddings`).
    pub model_type: String,
    /// Input side in pixels (square images; HF `image_size`).
    pub image_size: usize,
    /// Patch side in pixels (HF `patch_size`); divides `image_size`.
    pub patch_size: usize,
    /// Input channels (HF `num_channels`).
    pub num_channels: usize,
    /// Whether Q/K/V have biases (HF `qkv_bias`, default true).
    pub qkv_bias: bool,
    /// The head layout: `ViTForImageClassification`/`DeiTForImageClassification` (`classifier`
    /// on the class token) or `DeiTForImageClassificationWithTeacher` (`cls_classifier` and
    /// `distillation_classifier`, logits averaged).
    pub head: VisionHead,
}

/// Classification head layout of a vision checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VisionHead {
    /// `classifier` on the class token (or no head at all).
    ClassToken,
    /// `cls_classifier` on the class token plus `distillation_classifier` on the distillation
    /// token, logits averaged (DeiT-distilled).
    Distilled,
}

impl VisionConfig {
    /// Patches per image, `(image_size / patch_size)^2`.
    pub fn num_patches(&self) -> usize {
        let g = self.image_size / self.patch_size.max(1);
        g * g
    }
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }
    /// 1 (class token) for ViT, 2 (class + distillation token) for DeiT.
    pub fn num_special_tokens(&self) -> usize {
        if self.model_type == "deit" {
            2
        } else {
            1
        }
    }
    /// Sequence length `n = num_special_tokens + num_patches`.
    pub fn seq_len(&self) -> usize {
        self.num_special_tokens() + self.num_patches()
    }
    /// Values per flattened patch, `C p p`.
    pub fn patch_dim(&self) -> usize {
        self.num_channels * self.patch_size * self.patch_size
    }
    /// The HF weight-name prefix of the backbone (`vit.` or `deit.`).
    pub fn prefix(&self) -> &'static str {
        if self.model_type == "deit" {
            "deit."
        } else {
            "vit."
        }
    }
}

/// Raw `config.json` of a ViT / DeiT checkpoint (HF field names).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HfVitConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
}

fn default_image_size() -> usize {
    224
}
fn default_patch_size() -> usize {
    16
}
fn default_channels() -> usize {
    3
}
fn default_true() -> bool {
    true
}

/// Validated encoder configuration (BERT, DistilBERT, RoBERTa: post-LayerNorm; ViT/DeiT: pre-LayerNorm).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    /// Hidden size `d`.
    pub hidden_size: usize,
    /// Number of layers `L`.
    pub num_layers: usize,
    /// Number of heads `H`; `d` is divisible by it.
    pub num_heads: usize,
    /// FFN size `d_ff`.
    pub intermediate_size: usize,
    pub activation: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// Class names, in label-id order; empty when the checkpoint has no classification head.
    pub labels: Vec<String>,
    /// Model family (BERT, DistilBERT or RoBERTa text, or ViT/DeiT vision). For vision,
    /// `vocab_size` and `type_vocab_size` are 1 and `max_position_embeddings` is the sequence
    /// length; DistilBERT has `type_vocab_size` 1 and no type table; `max_position_embeddings`
    /// is always the position table's rows (RoBERTa's inputs are shorter: [`max_tokens`](Self::max_tokens)).
    #[serde(default)]
    pub arch: Architecture,
}

impl EncoderConfig {
    /// Head size `d / H`.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Position id of token `i` of an unpadded sequence: `i`, or `padding_idx + 1 + i` for the
    /// RoBERTa family. Row `i + position_offset()` of the position table embeds token `i`.
    pub fn position_offset(&self) -> usize {
        match &self.arch {
            Architecture::Roberta(r) => r.padding_idx + 1,
            _ => 0,
        }
    }

    /// The longest input in tokens: `max_position_embeddings - position_offset()` (RoBERTa
    /// reserves the rows up to `padding_idx`).
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings.saturating_sub(self.position_offset())
    }

    /// Whether the model reads the tokenizer's token type ids: BERT does; DistilBERT has no
    /// type embeddings and RoBERTa a single type (0), so both ignore them.
    pub fn uses_token_types(&self) -> bool {
        matches!(self.arch, Architecture::Bert)
    }

    /// Whether the checkpoint has a token-type table (`type_vocab_size` rows): every text family
    /// but DistilBERT.
    pub fn has_token_type_table(&self) -> bool {
        matches!(self.arch, Architecture::Bert | Architecture::Roberta(_))
    }

    /// Whether the classification head always has a dense layer before the classifier
    /// (DistilBERT's `pre_classifier`, RoBERTa's `classifier.dense`); BERT's pooler is optional.
    pub fn has_classifier_dense(&self) -> bool {
        matches!(self.arch, Architecture::DistilBert | Architecture::Roberta(_))
    }

    /// Activation after the text head's dense layer (pooler / `pre_classifier` / `classifier.dense`).
    pub fn pooler_activation(&self) -> PoolerActivation {
        match self.arch {
            Architecture::DistilBert => PoolerActivation::Relu,
            _ => PoolerActivation::Tanh,
        }
    }

    /// The HF `model_type` of this configuration (`bert`, `distilbert`, `roberta`,
    /// `xlm-roberta`, `camembert`, `vit`, `deit`).
    pub fn model_type(&self) -> &str {
        match &self.arch {
            Architecture::Bert => "bert",
            Architecture::DistilBert => "distilbert",
            Architecture::Roberta(r) => &r.model_type,
            Architecture::Vit(v) => &v.model_type,
        }
    }

    /// Number of tokens that every plan keeps at every layer and that form `O_L`: `[CLS]` for
    /// text and ViT (1), class + distillation token for DeiT (2).
    pub fn num_special_tokens(&self) -> usize {
        match &self.arch {
            Architecture::Vit(v) => v.num_special_tokens(),
            _ => 1,
        }
    }

    /// `O_L` of a classification plan: `0..num_special_tokens()`.
    pub fn top_tokens(&self) -> Vec<usize> {
        (0..self.num_special_tokens()).collect()
    }

    /// The vision part, if this is a ViT/DeiT.
    pub fn vision(&self) -> Option<&VisionConfig> {
        match &self.arch {
            Architecture::Vit(v) => Some(v),
            _ => None,
        }
    }

    /// True for pre-LayerNorm layers (ViT/DeiT).
    pub fn pre_norm(&self) -> bool {
        matches!(self.arch, Architecture::Vit(_))
    }

    /// Validate a parsed HF ViT/DeiT config; the error is a sentence naming the field.
    pub fn from_hf_vit(raw: &HfVitConfig) -> Result<Self, String> {
        if !matches!(raw.model_type.as_str(), "vit" | "deit") {
            return Err(format!("model_type '{}' is not a ViT/DeiT", raw.model_type));
        }
        let activation = Activation::from_hf(&raw.hidden_act)?;
        check_sizes(
            &[
                ("hidden_size", raw.hidden_size),
                ("num_hidden_layers", raw.num_hidden_layers),
                ("num_attention_heads", raw.num_attention_heads),
                ("intermediate_size", raw.intermediate_size),
                ("image_size", raw.image_size),
                ("patch_size", raw.patch_size),
                ("num_channels", raw.num_channels),
            ],
            raw.hidden_size,
            raw.num_attention_heads,
            raw.layer_norm_eps,
        )?;
        if !raw.image_size.is_multiple_of(raw.patch_size) {
            return Err(format!("image_size {} is not divisible by patch_size {}", raw.image_size, raw.patch_size));
        }
        let labels = parse_labels(&raw.id2label, raw.num_labels)?;
        let distilled = raw.architectures.as_ref().is_some_and(|a| a.iter().any(|n| n.contains("WithTeacher")));
        let vision = VisionConfig {
            model_type: raw.model_type.clone(),
            image_size: raw.image_size,
            patch_size: raw.patch_size,
            num_channels: raw.num_channels,
            qkv_bias: raw.qkv_bias,
            head: if distilled && raw.model_type == "deit" { VisionHead::Distilled } else { VisionHead::ClassToken },
        };
        Ok(Self {
            vocab_size: 1,
            hidden_size: raw.hidden_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            activation,
            max_position_embeddings: vision.seq_len(),
            type_vocab_size: 1,
            layer_norm_eps: raw.layer_norm_eps,
            labels,
            arch: Architecture::Vit(vision),
        })
    }

    /// Validate a parsed HF config; the error is a sentence naming the field.
    pub fn from_hf(raw: &HfBertConfig) -> Result<Self, String> {
        if let Some(mt) = &raw.model_type {
            if !matches!(mt.as_str(), "bert" | "sttabt-approx") {
                return Err(unsupported_model_type(mt));
            }
        }
        let pet = raw.position_embedding_type.as_deref().unwrap_or("absolute");
        if pet != "absolute" {
            return Err(format!("position_embedding_type '{pet}' is not supported (only 'absolute')"));
        }
        let activation = Activation::from_hf(&raw.hidden_act)?;
        check_sizes(
            &[
                ("vocab_size", raw.vocab_size),
                ("hidden_size", raw.hidden_size),
                ("num_hidden_layers", raw.num_hidden_layers),
                ("num_attention_heads", raw.num_attention_heads),
                ("intermediate_size", raw.intermediate_size),
                ("max_position_embeddings", raw.max_position_embeddings),
                ("type_vocab_size", raw.type_vocab_size),
            ],
            raw.hidden_size,
            raw.num_attention_heads,
            raw.layer_norm_eps,
        )?;
        let labels = parse_labels(&raw.id2label, raw.num_labels)?;
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            activation,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
            labels,
            arch: Architecture::Bert,
        })
    }

    pub(crate) fn bert_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": [if self.labels.is_empty() { "BertModel" } else { "BertForSequenceClassification" }],
            "model_type": "bert",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.activation.hf_name(),
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "position_embedding_type": "absolute",
            "pad_token_id": 0,
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02,
        })
    }

    /// Dense encoder FLOPs for `n` tokens (ALGORITHM.md section 5; 1 multiply-add = 2 FLOPs).
    pub fn dense_flops(&self, n: usize) -> u64 {
        crate::plan::dense_flops(n, self.num_layers, self.hidden_size, self.intermediate_size)
    }
}

/// Class names from `id2label` (ids must be `0..k`) or `num_labels` (`LABEL_i`); empty if neither.
pub(crate) fn parse_labels(id2label: &Option<BTreeMap<String, String>>, num_labels: Option<usize>) -> Result<Vec<String>, String> {
    let labels = match (id2label, num_labels) {
        (Some(map), _) if !map.is_empty() => {
            let mut v: Vec<(usize, String)> = Vec::with_capacity(map.len());
            for (k, name) in map {
                let id: usize = k.parse().map_err(|_| format!("id2label key '{k}' is not an integer"))?;
                v.push((id, name.clone()));
            }
            v.sort();
            for (pos, (id, _)) in v.iter().enumerate() {
                if *id != pos {
                    return Err(format!("id2label ids are not 0..{} (missing {pos})", v.len()));
                }
            }
            v.into_iter().map(|(_, n)| n).collect()
        }
        (_, Some(n)) => (0..n).map(|i| format!("LABEL_{i}")).collect(),
        _ => Vec::new(),
    };
    Ok(labels)
}

/// Every size positive, `hidden` divisible by `heads`, `eps` finite and >= 0; the error names the field.
pub(crate) fn check_sizes(sizes: &[(&str, usize)], hidden: usize, heads: usize, eps: f64) -> Result<(), String> {
    if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
        return Err(format!("{name} must be positive, found 0"));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(format!("layer_norm_eps must be a finite number >= 0, found {eps}"));
    }
    if !hidden.is_multiple_of(heads) {
        return Err(format!("hidden_size {hidden} is not divisible by num_attention_heads {heads}"));
    }
    Ok(())
}
