//! The text families beside BERT (issue #18): DistilBERT and RoBERTa / XLM-R / CamemBERT.
//!
//! All three are post-LayerNorm encoders with BERT's layer; they differ only in data, which this
//! module holds: how `config.json` spells the sizes ([`distilbert_from_json`],
//! [`roberta_from_json`] and their inverses), the tensor names ([`TextLayout`]), and, through
//! [`Architecture`], the position offset, whether token types are read and the head's
//! activation (see [`EncoderConfig::position_offset`], [`EncoderConfig::uses_token_types`],
//! [`EncoderConfig::pooler_activation`]). Written from transformers' `modeling_distilbert.py` and
//! `modeling_roberta.py`:
//!
//! | | BERT | DistilBERT | RoBERTa |
//! |---|---|---|---|
//! | prefix | `bert.` (optional) | `distilbert.` | `roberta.` |
//! | positions of token `i` | `i` | `i` | `padding_idx + 1 + i` |
//! | token types | read | none | one type, always 0 |
//! | layer | `attention.self.{query,key,value}`, ... | `attention.{q,k,v,out}_lin`, `sa_layer_norm`, `ffn.lin1/2`, `output_layer_norm` | as BERT |
//! | head on token 0 | `pooler.dense` + tanh, `classifier` | `pre_classifier` + ReLU, `classifier` | `classifier.dense` + tanh, `classifier.out_proj` |

use std::collections::BTreeMap;

use serde::Deserialize;

use super::checkpoint::TensorStore;
use super::config::{check_sizes, parse_labels, Activation, Architecture, EncoderConfig, HfBertConfig, RobertaConfig};
use crate::error::ModelError;

pub use super::config::{unsupported_model_type, SUPPORTED_MODEL_TYPES};

/// Raw DistilBERT `config.json` (`transformers.DistilBertConfig` field names).
#[derive(Debug, Clone, Deserialize)]
struct HfDistilBertConfig {
    vocab_size: usize,
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    hidden_dim: usize,
    #[serde(default = "default_distil_act")]
    activation: String,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
}

fn default_distil_act() -> String {
    "gelu".into()
}
fn default_max_pos() -> usize {
    512
}

/// LayerNorm eps of every DistilBERT LayerNorm (hard-coded upstream; the config has no key).
pub const DISTILBERT_LAYER_NORM_EPS: f64 = 1e-12;

/// Parse and validate a DistilBERT `config.json` (`dim`, `n_layers`, `n_heads`, `hidden_dim`,
/// `activation`, `max_position_embeddings`, `vocab_size`, labels). The error names the field.
pub fn distilbert_from_json(value: serde_json::Value) -> Result<EncoderConfig, String> {
    let raw: HfDistilBertConfig = serde_json::from_value(value).map_err(|e| format!("invalid DistilBERT config.json: {e}"))?;
    let activation = Activation::from_hf(&raw.activation).map_err(|e| e.replace("hidden_act", "activation"))?;
    check_sizes(
        &[
            ("vocab_size", raw.vocab_size),
            ("dim", raw.dim),
            ("n_layers", raw.n_layers),
            ("n_heads", raw.n_heads),
            ("hidden_dim", raw.hidden_dim),
            ("max_position_embeddings", raw.max_position_embeddings),
        ],
        raw.dim,
        raw.n_heads,
        DISTILBERT_LAYER_NORM_EPS,
    )
    .map_err(|e| e.replace("hidden_size", "dim").replace("num_attention_heads", "n_heads"))?;
    Ok(EncoderConfig {
        vocab_size: raw.vocab_size,
        hidden_size: raw.dim,
        num_layers: raw.n_layers,
        num_heads: raw.n_heads,
        intermediate_size: raw.hidden_dim,
        activation,
        max_position_embeddings: raw.max_position_embeddings,
        type_vocab_size: 1,
        layer_norm_eps: DISTILBERT_LAYER_NORM_EPS,
        labels: parse_labels(&raw.id2label, raw.num_labels)?,
        arch: Architecture::DistilBert,
    })
}

/// Parse and validate a RoBERTa / XLM-R / CamemBERT `config.json` (BERT's keys; `pad_token_id`,
/// default 1, is the position `padding_idx`). `family` is the `model_type` to keep.
pub fn roberta_from_json(mut value: serde_json::Value, family: &str) -> Result<EncoderConfig, String> {
    value["model_type"] = "bert".into();
    let raw: HfBertConfig = serde_json::from_value(value).map_err(|e| format!("invalid {family} config.json: {e}"))?;
    let mut cfg = EncoderConfig::from_hf(&raw)?;
    let padding_idx = raw.pad_token_id.unwrap_or(1);
    if raw.max_position_embeddings <= padding_idx + 1 {
        return Err(format!(
            "max_position_embeddings {} leaves no positions after padding_idx {padding_idx} (a {family} model's positions start at padding_idx + 1)",
            raw.max_position_embeddings
        ));
    }
    cfg.arch = Architecture::Roberta(RobertaConfig { model_type: family.to_string(), padding_idx });
    Ok(cfg)
}

/// DistilBERT `config.json` for `c` (the keys `DistilBertConfig` reads).
pub(crate) fn distilbert_json(c: &EncoderConfig) -> serde_json::Value {
    serde_json::json!({
        "architectures": [if c.labels.is_empty() { "DistilBertModel" } else { "DistilBertForSequenceClassification" }],
        "model_type": "distilbert",
        "vocab_size": c.vocab_size,
        "dim": c.hidden_size,
        "n_layers": c.num_layers,
        "n_heads": c.num_heads,
        "hidden_dim": c.intermediate_size,
        "activation": c.activation.hf_name(),
        "max_position_embeddings": c.max_position_embeddings,
        "sinusoidal_pos_embds": false,
        "pad_token_id": 0,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "seq_classif_dropout": 0.2,
        "qa_dropout": 0.1,
        "initializer_range": 0.02,
        "tie_weights_": true,
    })
}

/// RoBERTa-family `config.json` for `c`: BERT's keys with the family's `model_type`,
/// architecture name and `pad_token_id`.
pub(crate) fn roberta_json(c: &EncoderConfig, r: &RobertaConfig) -> serde_json::Value {
    let mut v = c.bert_json();
    let stem = match r.model_type.as_str() {
        "xlm-roberta" => "XLMRoberta",
        "camembert" => "Camembert",
        _ => "Roberta",
    };
    let arch = if c.labels.is_empty() { format!("{stem}Model") } else { format!("{stem}ForSequenceClassification") };
    v["architectures"] = serde_json::json!([arch]);
    v["model_type"] = r.model_type.clone().into();
    v["pad_token_id"] = r.padding_idx.into();
    v["bos_token_id"] = 0.into();
    v["eos_token_id"] = 2.into();
    v
}

/// HF tensor names of one text layer.
pub(crate) struct LayerNames {
    pub query: String,
    pub key: String,
    pub value: String,
    pub attn_out: String,
    pub attn_ln: String,
    pub ffn_in: String,
    pub ffn_out: String,
    pub out_ln: String,
}

/// The tensor names of a text family (without `.weight` / `.bias`): backbone names under
/// `prefix`, head names at the top level.
#[derive(Debug, Clone)]
pub(crate) struct TextLayout {
    /// `""` (BERT; the store also finds `bert.`), `"distilbert."` or `"roberta."`.
    pub prefix: &'static str,
    /// DistilBERT's layer names (`transformer.layer.N.attention.q_lin`, ...) instead of BERT's.
    distil: bool,
    /// Whether there is a token-type table.
    pub token_types: bool,
    /// The dense layer before the classifier: `pooler.dense`, `pre_classifier` or `classifier.dense`.
    pub pooler: &'static str,
    /// `classifier` or `classifier.out_proj`.
    pub classifier: &'static str,
    /// The family's display name, for errors.
    family: &'static str,
}

impl TextLayout {
    /// The upstream names of `arch`'s family (what its checkpoints hold and what we write).
    /// `None` for vision.
    pub fn of(arch: &Architecture) -> Option<Self> {
        let bert = Self { prefix: "", distil: false, token_types: true, pooler: "pooler.dense", classifier: "classifier", family: "BERT" };
        match arch {
            Architecture::Bert => Some(bert),
            Architecture::DistilBert => Some(Self {
                prefix: "distilbert.",
                distil: true,
                token_types: false,
                pooler: "pre_classifier",
                classifier: "classifier",
                family: "DistilBERT",
            }),
            Architecture::Roberta(_) => {
                Some(Self { prefix: "roberta.", pooler: "classifier.dense", classifier: "classifier.out_proj", family: "RoBERTa", ..bert })
            }
            Architecture::Vit(_) => None,
        }
    }

    /// BERT's names for any text family (the training model's export, [`crate::train::model`]):
    /// no prefix, `pooler.dense`, `classifier`; a token-type table only where the family has one.
    pub fn canonical(arch: &Architecture) -> Option<Self> {
        let own = Self::of(arch)?;
        Some(Self { prefix: "", distil: false, pooler: "pooler.dense", classifier: "classifier", ..own })
    }

    pub fn word(&self) -> String {
        format!("{}embeddings.word_embeddings.weight", self.prefix)
    }
    pub fn position(&self) -> String {
        format!("{}embeddings.position_embeddings.weight", self.prefix)
    }
    pub fn token_type(&self) -> String {
        format!("{}embeddings.token_type_embeddings.weight", self.prefix)
    }
    pub fn emb_ln(&self) -> String {
        format!("{}embeddings.LayerNorm", self.prefix)
    }

    /// The names of layer `l`.
    pub fn layer(&self, l: usize) -> LayerNames {
        if self.distil {
            let p = format!("{}transformer.layer.{l}", self.prefix);
            return LayerNames {
                query: format!("{p}.attention.q_lin"),
                key: format!("{p}.attention.k_lin"),
                value: format!("{p}.attention.v_lin"),
                attn_out: format!("{p}.attention.out_lin"),
                attn_ln: format!("{p}.sa_layer_norm"),
                ffn_in: format!("{p}.ffn.lin1"),
                ffn_out: format!("{p}.ffn.lin2"),
                out_ln: format!("{p}.output_layer_norm"),
            };
        }
        let p = format!("{}encoder.layer.{l}", self.prefix);
        LayerNames {
            query: format!("{p}.attention.self.query"),
            key: format!("{p}.attention.self.key"),
            value: format!("{p}.attention.self.value"),
            attn_out: format!("{p}.attention.output.dense"),
            attn_ln: format!("{p}.attention.output.LayerNorm"),
            ffn_in: format!("{p}.intermediate.dense"),
            ffn_out: format!("{p}.output.dense"),
            out_ln: format!("{p}.output.LayerNorm"),
        }
    }

    /// This layout as `store` spells it: the prefix dropped when the checkpoint was saved from
    /// the bare backbone (`DistilBertModel`, `RobertaModel`).
    ///
    /// Errors: [`ModelError::Checkpoint`] when the store has neither spelling of the word
    /// embeddings and layer 0's query: the message lists the names expected, some found, and
    /// the family the found names look like.
    pub fn resolve(&self, store: &TensorStore, model_type: &str) -> Result<Self, ModelError> {
        let bare = Self { prefix: "", ..self.clone() };
        for cand in [self.clone(), bare] {
            if store.contains(&cand.word()) && store.contains(&format!("{}.weight", cand.layer(0).query)) {
                return Ok(cand);
            }
        }
        let names = store.names();
        // the backbone's first names say the most about the layout; then whatever there is
        let telling = names.iter().filter(|n| n.contains("word_embeddings") || n.contains("layer.0.attention"));
        let sample: Vec<String> = telling.chain(names.iter()).take(3).map(|n| format!("'{n}'")).collect();
        let guess = guess_family(&names)
            .filter(|g| *g != self.family)
            .map(|g| format!("; they look like a {g} checkpoint: is config.json's model_type right?"))
            .unwrap_or_default();
        let prefix_note = if self.prefix.is_empty() {
            " (or with the 'bert.' prefix)".to_string()
        } else {
            format!(" (or without the '{}' prefix)", self.prefix)
        };
        Err(ModelError::Checkpoint {
            path: store.path.clone(),
            message: format!(
                "the tensor names match no {} checkpoint (config.json: model_type '{model_type}'): expected '{}', '{}.weight', '{}.weight', ...{prefix_note}; found {} tensors such as {}{guess}",
                self.family,
                self.word(),
                self.layer(0).query,
                self.layer(0).ffn_in,
                names.len(),
                sample.join(", "),
            ),
        })
    }
}

/// Which family a checkpoint's tensor names look like, if any.
fn guess_family(names: &[String]) -> Option<&'static str> {
    let any = |f: &dyn Fn(&str) -> bool| names.iter().any(|n| f(n));
    if any(&|n| n.contains("transformer.layer.") && n.contains("attention.q_lin")) {
        Some("DistilBERT")
    } else if any(&|n| n.starts_with("roberta.")) {
        Some("RoBERTa")
    } else if any(&|n| n.contains("encoder.layer.") && n.contains("attention.self.query")) {
        Some("BERT")
    } else if any(&|n| n.contains("attention.attention.query")) {
        Some("ViT/DeiT")
    } else {
        None
    }
}
