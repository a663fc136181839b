//! Hugging Face `config.json` -> [`EncoderConfig`] (BERT family), with validation.
//!
//! Mirrors the fields of `transformers.BertConfig` that the encoder uses; unknown fields are
//! ignored, optional ones get the HF defaults.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))` (HF `gelu`).
    Gelu,
    /// The tanh approximation (HF `gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// ReLU.
    Relu,
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

/// Validated encoder configuration (BERT, post-LayerNorm).
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
}

impl EncoderConfig {
    /// Head size `d / H`.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Read and validate `config.json`.
    ///
    /// Errors: missing/unreadable file, invalid JSON, an unsupported `position_embedding_type`
    /// (only `absolute`), an unknown `hidden_act`, or sizes that do not fit together.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let raw: HfBertConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("invalid config.json: {e}"),
        })?;
        Self::from_hf(&raw).map_err(|message| ModelError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Validate a parsed HF config; the error is a sentence naming the field.
    pub fn from_hf(raw: &HfBertConfig) -> Result<Self, String> {
        if let Some(mt) = &raw.model_type {
            if !matches!(mt.as_str(), "bert" | "sttabt-approx") {
                return Err(format!(
                    "model_type '{mt}' is not supported (expected 'bert'; RoBERTa/DistilBERT/ALBERT use other layouts)"
                ));
            }
        }
        let pet = raw.position_embedding_type.as_deref().unwrap_or("absolute");
        if pet != "absolute" {
            return Err(format!(
                "position_embedding_type '{pet}' is not supported (only 'absolute')"
            ));
        }
        let activation = Activation::parse(&raw.hidden_act).ok_or_else(|| {
            format!(
                "hidden_act '{}' is not supported (expected gelu, gelu_new or relu)",
                raw.hidden_act
            )
        })?;
        for (name, v) in [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("intermediate_size", raw.intermediate_size),
            ("max_position_embeddings", raw.max_position_embeddings),
            ("type_vocab_size", raw.type_vocab_size),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive, found 0"));
            }
        }
        if !(raw.layer_norm_eps.is_finite() && raw.layer_norm_eps >= 0.0) {
            return Err(format!("layer_norm_eps must be a finite number >= 0, found {}", raw.layer_norm_eps));
        }
        if raw.hidden_size % raw.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            ));
        }
        let labels = match (&raw.id2label, raw.num_labels) {
            (Some(map), _) if !map.is_empty() => {
                let mut v: Vec<(usize, String)> = Vec::with_capacity(map.len());
                for (k, name) in map {
                    let id: usize = k
                        .parse()
                        .map_err(|_| format!("id2label key '{k}' is not an integer"))?;
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
        })
    }

    /// The HF `config.json` for this configuration (BERT layout), so other tools can read what we save.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
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
        });
        if !self.labels.is_empty() {
            let id2label: BTreeMap<String, String> = self
                .labels
                .iter()
                .enumerate()
                .map(|(i, n)| (i.to_string(), n.clone()))
                .collect();
            let label2id: BTreeMap<String, usize> =
                self.labels.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
            v["num_labels"] = self.labels.len().into();
            v["id2label"] = serde_json::to_value(id2label).unwrap_or_default();
            v["label2id"] = serde_json::to_value(label2id).unwrap_or_default();
        }
        v
    }

    /// Dense encoder FLOPs for `n` tokens (ALGORITHM.md section 5; 1 multiply-add = 2 FLOPs).
    pub fn dense_flops(&self, n: usize) -> u64 {
        crate::plan::dense_flops(n, self.num_layers, self.hidden_size, self.intermediate_size)
    }
}
