//! ApproxNet (ALGORITHM.md section 2): a copy of the teacher's architecture with hidden and FFN
//! sizes divided by a factor `f` (same layers, heads, vocabulary and positions), plus one linear
//! transfer map `d/f -> d` per distilled hidden state (embedding output and layers 1..L-1), used
//! only by distillation.
//!
//! Saved beside the teacher as an HF-style directory: `config.json` (BERT fields plus an
//! `sttabt_approx` block naming the factor and the teacher's shape) and `model.safetensors`
//! (BERT names plus `transfer.{l}.weight/bias`). Loading checks that it fits the teacher.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::split::SplitMix64;
use crate::error::ModelError;
use crate::exec::RunOptions;
use crate::model::checkpoint::TensorStore;
use crate::model::config::EncoderConfig;
use crate::model::{EncodedInput, Encoder, Linear};

/// Factors the ApproxNet may shrink by.
pub const FACTORS: [usize; 4] = [2, 4, 8, 16];

/// The teacher shape an ApproxNet was built for (stored in its config.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproxMeta {
    pub factor: usize,
    pub teacher_hidden_size: usize,
    pub teacher_num_layers: usize,
    pub teacher_num_heads: usize,
    pub teacher_vocab_size: usize,
}

impl ApproxMeta {
    /// The `sttabt_approx` block of `dir/config.json`: `Some` when `dir` holds an ApproxNet
    /// written by `sttabt distill`, `None` for any other checkpoint (or an unreadable config;
    /// loading reports those).
    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        serde_json::from_value(v.get("sttabt_approx")?.clone()).ok()
    }
}

/// How to initialise a new ApproxNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApproxInit {
    /// Normal(0, 0.02) weights, LayerNorm 1/0, deterministic from the seed.
    Random,
    /// Every teacher tensor shrunk to the small shape by linear interpolation along each axis.
    Interpolate,
}

/// An ApproxNet: the small encoder (with the teacher's head count) and its transfer maps.
#[derive(Debug, Clone)]
pub struct ApproxNet {
    pub model: Encoder,
    /// `L` maps `d/f -> d`: index 0 for the embedding output, index l for layer l (l = 1..L-1).
    pub transfer: Vec<Linear>,
    pub meta: ApproxMeta,
}

/// The ApproxNet configuration for a teacher and factor `f`.
/// Errors: `f` not in [`FACTORS`], or `d/f` not divisible by the head count.
pub fn approx_config(teacher: &EncoderConfig, factor: usize) -> Result<EncoderConfig, ModelError> {
    if !FACTORS.contains(&factor) {
        return Err(ModelError::Input(format!("ApproxNet factor must be one of {FACTORS:?}, got {factor}")));
    }
    let d = teacher.hidden_size / factor;
    if d == 0 || !teacher.hidden_size.is_multiple_of(factor) || !d.is_multiple_of(teacher.num_heads) {
        return Err(ModelError::Input(format!(
            "hidden size {} / factor {factor} = {} is not divisible by the {} heads",
            teacher.hidden_size,
            teacher.hidden_size as f64 / factor as f64,
            teacher.num_heads
        )));
    }
    Ok(EncoderConfig { hidden_size: d, intermediate_size: (teacher.intermediate_size / factor).max(1), ..teacher.clone() })
}

/// Resize a row-major tensor to `out_shape` by separable linear interpolation (half-pixel centres).
pub fn interpolate(data: &[f32], shape: &[usize], out_shape: &[usize]) -> Vec<f32> {
    let mut cur = data.to_vec();
    let mut cur_shape = shape.to_vec();
    for axis in 0..shape.len() {
        let (n, m) = (cur_shape[axis], out_shape[axis]);
        if n == m {
            continue;
        }
        let outer: usize = cur_shape[..axis].iter().product();
        let inner: usize = cur_shape[axis + 1..].iter().product();
        let mut next = vec![0.0f32; outer * m * inner];
        for i in 0..m {
            let x = ((i as f64 + 0.5) * n as f64 / m as f64 - 0.5).clamp(0.0, (n - 1) as f64);
            let lo = x.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let w = (x - lo as f64) as f32;
            for o in 0..outer {
                for k in 0..inner {
                    let a = cur[(o * n + lo) * inner + k];
                    let b = cur[(o * n + hi) * inner + k];
                    next[(o * m + i) * inner + k] = a * (1.0 - w) + b * w;
                }
            }
        }
        cur = next;
        cur_shape[axis] = m;
    }
    cur
}

impl ApproxNet {
    /// A new ApproxNet for `teacher` with factor `f`.
    pub fn new(teacher: &Encoder, factor: usize, init: ApproxInit, seed: u64) -> Result<Self, ModelError> {
        let tc = &teacher.config;
        let cfg = approx_config(tc, factor)?;
        let small = cfg.hidden_size;
        let mut rng = SplitMix64::new(seed ^ 0xA99F_0C7E);
        let mut tensors = Vec::new();
        for (name, shape, data) in teacher.hf_tensors() {
            // Embedding tables keep their rows (vocabulary, positions, types); every other axis
            // of hidden or FFN size shrinks.
            // (`embeddings.`, `distilbert.embeddings.`, `roberta.embeddings.`)
            let is_table = name.contains("embeddings.") && name.ends_with("_embeddings.weight");
            // vision: position table [1, n, d] and class/distillation tokens [1, 1, d] shrink
            // only along d; the patch projection [d, C, p, p] only along axis 0
            let last_axis_only = name.ends_with("embeddings.position_embeddings") || name.ends_with("_token");
            let first_axis_only = name.ends_with("patch_embeddings.projection.weight");
            let out_shape: Vec<usize> = shape
                .iter()
                .enumerate()
                .map(|(axis, &s)| {
                    if (is_table && axis == 0) || (last_axis_only && axis + 1 < shape.len()) || (first_axis_only && axis > 0) {
                        s
                    } else if s == tc.hidden_size {
                        small
                    } else if s == tc.intermediate_size {
                        cfg.intermediate_size
                    } else {
                        s
                    }
                })
                .collect();
            let new = match init {
                ApproxInit::Interpolate => interpolate(&data, &shape, &out_shape),
                ApproxInit::Random => {
                    let len: usize = out_shape.iter().product();
                    if name.ends_with("LayerNorm.weight")
                        || ((name.contains("layernorm") || name.contains("layer_norm")) && name.ends_with(".weight"))
                    {
                        vec![1.0; len]
                    } else if name.ends_with(".bias") {
                        vec![0.0; len]
                    } else {
                        (0..len).map(|_| rng.next_normal() * 0.02).collect()
                    }
                }
            };
            tensors.push((name, out_shape, new));
        }
        let store = TensorStore::from_tensors(Path::new("<approxnet init>"), tensors);
        let model = Encoder::from_store(cfg, &store)?;
        let transfer = (0..tc.num_layers.max(1))
            .map(|_| {
                let w: Vec<f32> = (0..tc.hidden_size * small).map(|_| rng.next_normal() * 0.02).collect();
                Linear::from_hf(&w, vec![0.0; tc.hidden_size], small, tc.hidden_size)
            })
            .collect();
        Ok(Self {
            model,
            transfer,
            meta: ApproxMeta {
                factor,
                teacher_hidden_size: tc.hidden_size,
                teacher_num_layers: tc.num_layers,
                teacher_num_heads: tc.num_heads,
                teacher_vocab_size: tc.vocab_size,
            },
        })
    }

    /// Check that this ApproxNet was built for `teacher` (layers, heads, vocabulary, positions, factor).
    pub fn check_teacher(&self, teacher: &EncoderConfig) -> Result<(), ModelError> {
        let a = &self.model.config;
        let m = &self.meta;
        let mut problems = Vec::new();
        if a.num_layers != teacher.num_layers || m.teacher_num_layers != teacher.num_layers {
            problems.push(format!("layers: ApproxNet {} vs teacher {}", a.num_layers, teacher.num_layers));
        }
        if a.num_heads != teacher.num_heads {
            problems.push(format!("heads: ApproxNet {} vs teacher {}", a.num_heads, teacher.num_heads));
        }
        if a.vocab_size != teacher.vocab_size {
            problems.push(format!("vocabulary: ApproxNet {} vs teacher {}", a.vocab_size, teacher.vocab_size));
        }
        if a.vision() != teacher.vision() {
            problems.push("image/patch layout differs (ViT/DeiT configuration)".into());
        } else if a.arch != teacher.arch {
            problems.push(format!("family: ApproxNet {} vs teacher {}", a.model_type(), teacher.model_type()));
        }
        if a.max_position_embeddings < teacher.max_position_embeddings || a.type_vocab_size != teacher.type_vocab_size {
            problems.push("position/token-type tables differ".into());
        }
        if m.teacher_hidden_size != teacher.hidden_size || a.hidden_size * m.factor != teacher.hidden_size {
            problems.push(format!("hidden: ApproxNet {} x factor {} vs teacher {}", a.hidden_size, m.factor, teacher.hidden_size));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Input(format!("this ApproxNet does not belong to this teacher: {}", problems.join("; "))))
        }
    }

    /// Save into `dir` (config.json + model.safetensors, atomically).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::Io { path: dir.to_path_buf(), source: e })?;
        let mut tensors = self.model.hf_tensors();
        for (l, t) in self.transfer.iter().enumerate() {
            tensors.push((format!("transfer.{l}.weight"), vec![t.d_out(), t.d_in()], t.weight_hf()));
            tensors.push((format!("transfer.{l}.bias"), vec![t.d_out()], t.bias().to_vec()));
        }
        let views: Vec<(String, Vec<usize>, &[f32])> = tensors.iter().map(|(n, s, d)| (n.clone(), s.clone(), d.as_slice())).collect();
        crate::model::checkpoint::write_safetensors(&dir.join("model.safetensors"), &views)?;
        let mut cfg = self.model.config.to_hf_json();
        if self.model.config.vision().is_none() {
            // a text ApproxNet must not be mistaken for a BERT teacher; vision configs keep
            // `vit`/`deit` (the loader needs it) and are told apart by the `sttabt_approx` block
            // (`sttabt_family` keeps the teacher's: DistilBERT / RoBERTa names and config keys)
            cfg["sttabt_family"] = self.model.config.model_type().into();
            cfg["model_type"] = "sttabt-approx".into();
        }
        cfg["sttabt_approx"] = serde_json::to_value(&self.meta).unwrap_or_default();
        crate::model::checkpoint::write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap_or_default().as_bytes())
    }

    /// Load from `dir` and check it against `teacher`.
    pub fn load(dir: &Path, teacher: &EncoderConfig) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Input(format!(
                "{}: no such directory: expected an ApproxNet directory written by `sttabt distill` (config.json + model.safetensors)",
                dir.display()
            )));
        }
        let cfg_path = dir.join("config.json");
        if !cfg_path.exists() {
            let hint =
                crate::model::checkpoint::missing_config_hint(dir, "an ApproxNet directory written by `sttabt distill` needs config.json");
            return Err(ModelError::MissingFile { path: cfg_path, hint });
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::Io { path: cfg_path.clone(), source: e })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Config { path: cfg_path.clone(), message: e.to_string() })?;
        let meta: ApproxMeta =
            serde_json::from_value(v.get("sttabt_approx").cloned().unwrap_or_default()).map_err(|_| ModelError::Config {
                path: cfg_path.clone(),
                message: "not an ApproxNet: config.json has no valid `sttabt_approx` block (create one with `sttabt distill`)".into(),
            })?;
        let model = Encoder::load(dir)?;
        let store = TensorStore::read(&dir.join("model.safetensors"))?;
        let small = model.config.hidden_size;
        let transfer = (0..meta.teacher_num_layers.max(1))
            .map(|l| Linear::load(&store, &format!("transfer.{l}"), small, meta.teacher_hidden_size))
            .collect::<Result<Vec<_>, _>>()?;
        let a = Self { model, transfer, meta };
        a.check_teacher(teacher)?;
        Ok(a)
    }
}

/// Attention fidelity of an ApproxNet against its teacher (ALGORITHM.md section 2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Mean squared error of attention probabilities over real (query, key) pairs, heads, layers.
    pub attention_mse: f64,
    /// KL(teacher row || ApproxNet row), summed over keys, averaged over real queries, heads, layers.
    pub attention_kl: f64,
    pub examples: usize,
}

/// Measure attention fidelity on `inputs` (dense runs of both models).
pub fn fidelity(teacher: &Encoder, approx: &Encoder, inputs: &[EncodedInput]) -> Result<Fidelity, ModelError> {
    let opts = RunOptions { attentions: true, hidden_states: false };
    let (mut se, mut se_n, mut kl, mut kl_n) = (0.0f64, 0usize, 0.0f64, 0usize);
    for chunk in inputs.chunks(32) {
        let t = teacher.run_dense(chunk, opts)?;
        let a = approx.run_dense(chunk, opts)?;
        for (te, ae) in t.iter().zip(&a) {
            for (tl, al) in te.attentions.iter().flatten().zip(ae.attentions.iter().flatten()) {
                let n = tl.keys.len();
                for (tr, ar) in tl.probs.chunks_exact(n).zip(al.probs.chunks_exact(n)) {
                    let mut row_kl = 0.0f64;
                    for (&p, &q) in tr.iter().zip(ar) {
                        se += ((p - q) as f64).powi(2);
                        if p > 0.0 {
                            row_kl += p as f64 * ((p as f64).ln() - (q.max(1e-30) as f64).ln());
                        }
                    }
                    se_n += n;
                    kl += row_kl;
                    kl_n += 1;
                }
            }
        }
    }
    Ok(Fidelity { attention_mse: se / se_n.max(1) as f64, attention_kl: kl / kl_n.max(1) as f64, examples: inputs.len() })
}
