//! The [`Encoder`] (BERT text or ViT/DeiT vision, [`EncoderKind`]): loading from a Hugging Face
//! checkpoint, parameter export, and the heads (pooler, classifier) applied to the executor's
//! output rows.

use std::path::Path;

use super::checkpoint::TensorStore;
use super::config::{Architecture, EncoderConfig, PoolerActivation};
use super::families::TextLayout;
use super::*;
use crate::error::ModelError;

/// Which family an [`Encoder`] belongs to, derived from its configuration
/// ([`EncoderConfig::arch`](super::config::EncoderConfig::arch)): where the LayerNorms sit, how
/// tokens are embedded, and the tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// BERT text encoder: token + position + type embeddings, post-LayerNorm layers.
    Bert,
    /// DistilBERT: BERT's layer under other names, no token types, `pre_classifier` + ReLU head.
    DistilBert,
    /// RoBERTa / XLM-R / CamemBERT: BERT's layer, positions offset by `padding_idx + 1`, one
    /// token type, `classifier.dense` + tanh + `classifier.out_proj` head.
    Roberta,
    /// ViT / DeiT image encoder: patch embedding, class (+ distillation) token, pre-LayerNorm.
    Vit,
}

/// An encoder (BERT, or ViT/DeiT when `config.arch` says so; see [`Encoder::kind`]) with optional pooler and
/// classification head.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoder {
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

impl Encoder {
    /// The family this encoder belongs to (from `config.arch`).
    pub fn kind(&self) -> EncoderKind {
        match self.config.arch {
            Architecture::Bert => EncoderKind::Bert,
            Architecture::DistilBert => EncoderKind::DistilBert,
            Architecture::Roberta(_) => EncoderKind::Roberta,
            Architecture::Vit(_) => EncoderKind::Vit,
        }
    }

    /// Load `config.json` + `model.safetensors` from an HF checkpoint directory.
    ///
    /// Errors: missing files, invalid config, missing tensors, shape mismatches (names the
    /// tensor, expected vs found), non-float dtypes, NaN/inf weights, corrupt safetensors.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        if dir.is_file() {
            return Err(ModelError::Config {
                path: dir.to_path_buf(),
                message: "is a file, not a directory: give the checkpoint directory that holds config.json and model.safetensors".into(),
            });
        }
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
                hint: "expected a checkpoint directory (config.json + model.safetensors), as `sttabt finetune` writes; `sttabt fetch` gets the default all-MiniLM-L6-v2".into(),
            });
        }
        let cfg_path = dir.join("config.json");
        if !cfg_path.exists() {
            return Err(ModelError::MissingFile {
                path: cfg_path,
                hint: super::checkpoint::missing_config_hint(dir, "a Hugging Face checkpoint directory needs config.json"),
            });
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

    pub(crate) fn from_store_vision(
        mut config: EncoderConfig,
        v: &crate::model::config::VisionConfig,
        store: &TensorStore,
    ) -> Result<Self, ModelError> {
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
        if let crate::model::config::Architecture::Vit(vc) = &mut config.arch {
            vc.head = if distillation_classifier.is_some() {
                crate::model::config::VisionHead::Distilled
            } else {
                crate::model::config::VisionHead::ClassToken
            };
        }
        Ok(Self { config, embeddings, layers, pooler: None, classifier, final_ln, distillation_classifier })
    }

    pub(crate) fn from_store_text(config: EncoderConfig, store: &TensorStore) -> Result<Self, ModelError> {
        let names = TextLayout::of(&config.arch).ok_or_else(|| ModelError::Input("a vision configuration has no text layout".into()))?;
        let names = names.resolve(store, config.model_type())?;
        Self::from_store_with(config, store, &names)
    }

    /// Build a text encoder from `store` with the tensor names of `names` (a family's own, or
    /// BERT's for any family: [`TextLayout::canonical`], the training model's export).
    pub(crate) fn from_store_with(mut config: EncoderConfig, store: &TensorStore, names: &TextLayout) -> Result<Self, ModelError> {
        let d = config.hidden_size;
        let eps = config.layer_norm_eps;
        // (loaded in checkpoint order, so that the first wrong tensor is the one named)
        let word = store.get(&names.word(), &[config.vocab_size, d])?;
        let position = store.get(&names.position(), &[config.max_position_embeddings, d])?;
        let token_type = if names.token_types { store.get(&names.token_type(), &[config.type_vocab_size, d])? } else { Vec::new() };
        let ln = LayerNorm::load(store, &names.emb_ln(), d, eps)?;
        let embeddings = Embeddings::Text(TextEmbeddings { word, position, token_type, ln });
        let scale = 1.0 / (config.head_size() as f32).sqrt();
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let n = names.layer(l);
            let mut query = Linear::load(store, &n.query, d, d)?;
            let query_hf = (query.weight_hf(), query.b.clone());
            query.scale_cols(0..d, scale);
            let key = Linear::load(store, &n.key, d, d)?;
            let value = Linear::load(store, &n.value, d, d)?;
            layers.push(EncoderLayer {
                query_hf,
                query,
                key_value: concat_cols(&key, &value),
                attn_out: Linear::load(store, &n.attn_out, d, d)?,
                attn_ln: LayerNorm::load(store, &n.attn_ln, d, eps)?,
                ffn_in: Linear::load(store, &n.ffn_in, d, config.intermediate_size)?,
                ffn_out: Linear::load(store, &n.ffn_out, config.intermediate_size, d)?,
                out_ln: LayerNorm::load(store, &n.out_ln, d, eps)?,
            });
        }
        let classifier_w = format!("{}.weight", names.classifier);
        let has_classifier = store.contains(&classifier_w);
        // BERT's pooler is optional; DistilBERT's and RoBERTa's head always has its dense layer
        let pooler = if store.contains(&format!("{}.weight", names.pooler)) || (has_classifier && names.pooler != "pooler.dense") {
            Some(Linear::load(store, names.pooler, d, d)?)
        } else {
            None
        };
        let classifier = if has_classifier {
            let n_labels = if config.labels.is_empty() {
                // infer from the tensor when config.json has no id2label / num_labels
                store.shape(&classifier_w).map(|s| s[0]).unwrap_or(0)
            } else {
                config.labels.len()
            };
            if config.labels.is_empty() {
                config.labels = (0..n_labels).map(|i| format!("LABEL_{i}")).collect();
            }
            Some(Linear::load(store, names.classifier, d, n_labels)?)
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
        let Some(names) = TextLayout::of(&c.arch) else { return out };
        out.push((names.word(), vec![c.vocab_size, d], e.word.clone()));
        out.push((names.position(), vec![c.max_position_embeddings, d], e.position.clone()));
        if names.token_types {
            out.push((names.token_type(), vec![c.type_vocab_size, d], e.token_type.clone()));
        }
        push_ln(&mut out, &names.emb_ln(), &e.ln);
        for (l, layer) in self.layers.iter().enumerate() {
            let n = names.layer(l);
            // the stored (unscaled) query weights, so a save/load round trip is bit-exact
            out.push((format!("{}.weight", n.query), vec![d, d], layer.query_hf.0.clone()));
            out.push((format!("{}.bias", n.query), vec![d], layer.query_hf.1.clone()));
            let (k, v) = split_cols(&layer.key_value, d);
            push_linear(&mut out, &n.key, &k);
            push_linear(&mut out, &n.value, &v);
            push_linear(&mut out, &n.attn_out, &layer.attn_out);
            push_ln(&mut out, &n.attn_ln, &layer.attn_ln);
            push_linear(&mut out, &n.ffn_in, &layer.ffn_in);
            push_linear(&mut out, &n.ffn_out, &layer.ffn_out);
            push_ln(&mut out, &n.out_ln, &layer.out_ln);
        }
        if let Some(p) = &self.pooler {
            push_linear(&mut out, names.pooler, p);
        }
        if let Some(cl) = &self.classifier {
            push_linear(&mut out, names.classifier, cl);
        }
        out
    }

    /// HF names of a ViT/DeiT (`ViTForImageClassification`, `DeiTForImageClassification` or
    /// `DeiTForImageClassificationWithTeacher` layout).
    pub(crate) fn hf_tensors_vision(
        &self,
        e: &PatchEmbeddings,
        v: &crate::model::config::VisionConfig,
    ) -> Vec<(String, Vec<usize>, Vec<f32>)> {
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

    /// `O_L` of a classification plan for this model: `[0]`, or `[0, 1]` for DeiT.
    pub fn top_tokens(&self) -> Vec<usize> {
        self.config.top_tokens()
    }

    /// Pooler output `act(W h_CLS + b)`, `[d]`: BERT's `pooler.dense` and RoBERTa's
    /// `classifier.dense` with tanh, DistilBERT's `pre_classifier` with ReLU
    /// ([`EncoderConfig::pooler_activation`]). Errors if the checkpoint has no pooler.
    pub fn pool(&self, cls: &[f32]) -> Result<Vec<f32>, ModelError> {
        let p = self.pooler.as_ref().ok_or_else(|| ModelError::Input("this checkpoint has no pooler (pooler.dense.*)".into()))?;
        let mut v = p.forward(cls);
        match self.config.pooler_activation() {
            PoolerActivation::Tanh => v.iter_mut().for_each(|x| *x = x.tanh()),
            PoolerActivation::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        }
        Ok(v)
    }

    /// Classification logits from the CLS row (pooler, if present, then classifier), `[num_labels]`.
    /// For a DeiT-distilled head this is the class-token head only: use [`logits_of`](Self::logits_of) (in [`crate::exec`]).
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
