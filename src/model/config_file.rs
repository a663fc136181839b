//! `config.json` in and out for every family: [`EncoderConfig::from_file`] reads one, dispatching
//! on `model_type` to BERT / ViT / DeiT ([`super::config`]) or the families beside BERT
//! ([`super::families`]); [`EncoderConfig::to_hf_json`] writes one in the family's own layout.

use std::collections::BTreeMap;
use std::path::Path;

use super::config::{unsupported_model_type, Architecture, EncoderConfig, HfBertConfig, HfVitConfig, VisionHead};
use super::families;
use crate::error::ModelError;

impl EncoderConfig {
    /// Read and validate `config.json` of any supported family: `model_type` `bert` (or none),
    /// `distilbert` (or none with DistilBERT's `dim`/`n_layers` keys), `roberta`, `xlm-roberta`,
    /// `camembert`, `vit`, `deit`, and `sttabt-approx` (a text ApproxNet, its teacher's family in
    /// `sttabt_family`).
    ///
    /// Errors ([`ModelError::Config`] naming the field): missing/unreadable file, invalid JSON, a
    /// `model_type` not in [`SUPPORTED_MODEL_TYPES`](super::config::SUPPORTED_MODEL_TYPES) (the
    /// message lists them), an unsupported `position_embedding_type` (only `absolute`), an
    /// unknown activation, or sizes that do not fit together.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
        let cfg_err = |message: String| ModelError::Config { path: path.to_path_buf(), message };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| cfg_err(format!("invalid config.json: {e}")))?;
        if matches!(value.get("model_type").and_then(|v| v.as_str()), Some("vit" | "deit")) {
            let raw: HfVitConfig = serde_json::from_value(value).map_err(|e| cfg_err(format!("invalid ViT/DeiT config.json: {e}")))?;
            return Self::from_hf_vit(&raw).map_err(cfg_err);
        }
        let model_type = value.get("model_type").and_then(|v| v.as_str()).map(str::to_string);
        // a text ApproxNet keeps its teacher's family in `sttabt_family` (see `approx.rs`)
        let family = match model_type.as_deref() {
            Some("sttabt-approx") => value.get("sttabt_family").and_then(|v| v.as_str()).unwrap_or("bert").to_string(),
            Some(mt) => mt.to_string(),
            // older configs without model_type: DistilBERT's keys say what it is
            None if value.get("dim").is_some() && value.get("n_layers").is_some() => "distilbert".to_string(),
            None => "bert".to_string(),
        };
        match family.as_str() {
            "bert" => {}
            "distilbert" => return families::distilbert_from_json(value).map_err(cfg_err),
            "roberta" | "xlm-roberta" | "camembert" => return families::roberta_from_json(value, &family).map_err(cfg_err),
            other => return Err(cfg_err(unsupported_model_type(other))),
        }
        let raw: HfBertConfig = serde_json::from_value(value).map_err(|e| cfg_err(format!("invalid config.json: {e}")))?;
        Self::from_hf(&raw).map_err(cfg_err)
    }

    /// The HF `config.json` for this configuration (BERT layout), so other tools can read what we save.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = match &self.arch {
            Architecture::Bert => self.bert_json(),
            Architecture::DistilBert => families::distilbert_json(self),
            Architecture::Roberta(r) => families::roberta_json(self, r),
            Architecture::Vit(vc) => {
                let arch = match (vc.model_type.as_str(), vc.head, self.labels.is_empty()) {
                    ("deit", VisionHead::Distilled, _) => "DeiTForImageClassificationWithTeacher",
                    ("deit", _, false) => "DeiTForImageClassification",
                    ("deit", _, true) => "DeiTModel",
                    (_, _, false) => "ViTForImageClassification",
                    _ => "ViTModel",
                };
                serde_json::json!({
                    "architectures": [arch],
                    "model_type": vc.model_type,
                    "hidden_size": self.hidden_size,
                    "num_hidden_layers": self.num_layers,
                    "num_attention_heads": self.num_heads,
                    "intermediate_size": self.intermediate_size,
                    "hidden_act": self.activation.hf_name(),
                    "layer_norm_eps": self.layer_norm_eps,
                    "image_size": vc.image_size,
                    "patch_size": vc.patch_size,
                    "num_channels": vc.num_channels,
                    "qkv_bias": vc.qkv_bias,
                    "hidden_dropout_prob": 0.0,
                    "attention_probs_dropout_prob": 0.0,
                    "initializer_range": 0.02,
                    "encoder_stride": vc.patch_size,
                })
            }
        };
        if !self.labels.is_empty() {
            let id2label: BTreeMap<String, String> = self.labels.iter().enumerate().map(|(i, n)| (i.to_string(), n.clone())).collect();
            let label2id: BTreeMap<String, usize> = self.labels.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
            v["num_labels"] = self.labels.len().into();
            v["id2label"] = serde_json::to_value(id2label).unwrap_or_default();
            v["label2id"] = serde_json::to_value(label2id).unwrap_or_default();
        }
        v
    }
}
