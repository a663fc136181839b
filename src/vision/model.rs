//! Building ViT/DeiT models from scratch (the small DeiT we train on Fashion-MNIST) and turning
//! images into executor inputs.
//!
//! A new model gets HF-named tensors (`deit.embeddings.cls_token`, ...) with the ViT
//! initialisation (truncated-normal-like N(0, 0.02) weights, zero biases, LayerNorm 1/0) and is
//! built through the same loader as a downloaded checkpoint ([`Encoder::from_store`]), so what
//! we train is saved and reloaded in the HF layout.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::split::SplitMix64;
use crate::error::ModelError;
use crate::model::checkpoint::TensorStore;
use crate::model::config::{Activation, Architecture, EncoderConfig, VisionConfig, VisionHead};
use crate::model::{EncodedInput, Encoder};
use crate::vision::image::Image;
use crate::vision::preprocess::{patchify, ImageProcessor};

/// Shape of a ViT/DeiT to train from scratch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisionSpec {
    /// Input side in pixels (square).
    pub image_size: usize,
    /// Patch side in pixels; divides `image_size`.
    pub patch_size: usize,
    /// Input channels.
    pub channels: usize,
    /// Hidden size `d`.
    pub hidden: usize,
    /// Layers `L`.
    pub layers: usize,
    /// Heads `H` (divides `hidden`).
    pub heads: usize,
    /// FFN size.
    pub intermediate: usize,
    /// DeiT with a distillation token and two heads (`DeiTForImageClassificationWithTeacher`);
    /// otherwise a plain ViT (`ViTForImageClassification`).
    pub distilled: bool,
}

impl VisionSpec {
    /// The default Fashion-MNIST model: 28x28 grey, patch 4 (49 patches + class + distillation
    /// token = 51 tokens), hidden 128, 4 layers, 4 heads, FFN 256 (0.55 M parameters). Sized so
    /// that training from scratch reaches 85% test accuracy within the vision demo's 30-minute
    /// budget on 2 CPU cores (hidden 192 / 6 layers trains about 3x slower per image).
    pub fn fashion_mnist() -> Self {
        Self { image_size: 28, patch_size: 4, channels: 1, hidden: 128, layers: 4, heads: 4, intermediate: 256, distilled: true }
    }

    /// The validated encoder configuration with `labels`.
    /// Errors: sizes that do not fit (hidden not divisible by heads, image by patch, zeros).
    pub fn config(&self, labels: Vec<String>) -> Result<EncoderConfig, ModelError> {
        let raw = crate::model::config::HfVitConfig {
            model_type: if self.distilled { "deit".into() } else { "vit".into() },
            hidden_size: self.hidden,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            intermediate_size: self.intermediate,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            image_size: self.image_size,
            patch_size: self.patch_size,
            num_channels: self.channels,
            qkv_bias: true,
            num_labels: Some(labels.len()),
            id2label: None,
            architectures: None,
        };
        let mut c = EncoderConfig::from_hf_vit(&raw).map_err(|m| ModelError::Input(format!("vision model shape: {m}")))?;
        c.labels = labels;
        if let Architecture::Vit(v) = &mut c.arch {
            v.head = if self.distilled { VisionHead::Distilled } else { VisionHead::ClassToken };
        }
        c.activation = Activation::Gelu;
        Ok(c)
    }
}

/// A randomly initialised ViT/DeiT classifier for `labels` (deterministic from `seed`).
/// Errors: an invalid shape, or fewer than 2 labels.
pub fn new_vision_model(spec: &VisionSpec, labels: Vec<String>, seed: u64) -> Result<Encoder, ModelError> {
    if labels.len() < 2 {
        return Err(ModelError::Input(format!("a classifier needs at least 2 labels, got {}", labels.len())));
    }
    let config = spec.config(labels)?;
    let v = config.vision().cloned().ok_or_else(|| ModelError::Input("not a vision config".into()))?;
    let tensors = init_tensors(&config, &v, seed);
    let store = TensorStore::from_tensors(Path::new("<new vision model>"), tensors);
    Encoder::from_store(config, &store)
}

/// HF-named initial tensors of a ViT/DeiT classifier.
fn init_tensors(c: &EncoderConfig, v: &VisionConfig, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = SplitMix64::new(seed ^ 0x0511_7EAD);
    let d = c.hidden_size;
    let pre = v.prefix();
    let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let randn = |shape: Vec<usize>, rng: &mut SplitMix64| {
        let len: usize = shape.iter().product();
        let data: Vec<f32> = (0..len).map(|_| (rng.next_normal() * 0.02).clamp(-0.04, 0.04)).collect();
        (shape, data)
    };
    let push_rand = |name: String, shape: Vec<usize>, out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, rng: &mut SplitMix64| {
        let (s, data) = randn(shape, rng);
        out.push((name, s, data));
    };
    push_rand(format!("{pre}embeddings.cls_token"), vec![1, 1, d], &mut out, &mut rng);
    if v.num_special_tokens() == 2 {
        push_rand(format!("{pre}embeddings.distillation_token"), vec![1, 1, d], &mut out, &mut rng);
    }
    push_rand(format!("{pre}embeddings.position_embeddings"), vec![1, v.seq_len(), d], &mut out, &mut rng);
    push_rand(
        format!("{pre}embeddings.patch_embeddings.projection.weight"),
        vec![d, v.num_channels, v.patch_size, v.patch_size],
        &mut out,
        &mut rng,
    );
    out.push((format!("{pre}embeddings.patch_embeddings.projection.bias"), vec![d], vec![0.0; d]));
    let linear = |name: String, d_in: usize, d_out: usize, out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, rng: &mut SplitMix64| {
        let w: Vec<f32> = (0..d_in * d_out).map(|_| (rng.next_normal() * 0.02).clamp(-0.04, 0.04)).collect();
        out.push((format!("{name}.weight"), vec![d_out, d_in], w));
        out.push((format!("{name}.bias"), vec![d_out], vec![0.0; d_out]));
    };
    let ln = |name: String, out: &mut Vec<(String, Vec<usize>, Vec<f32>)>| {
        out.push((format!("{name}.weight"), vec![d], vec![1.0; d]));
        out.push((format!("{name}.bias"), vec![d], vec![0.0; d]));
    };
    for l in 0..c.num_layers {
        let p = format!("{pre}encoder.layer.{l}");
        for q in ["query", "key", "value"] {
            linear(format!("{p}.attention.attention.{q}"), d, d, &mut out, &mut rng);
        }
        linear(format!("{p}.attention.output.dense"), d, d, &mut out, &mut rng);
        ln(format!("{p}.layernorm_before"), &mut out);
        linear(format!("{p}.intermediate.dense"), d, c.intermediate_size, &mut out, &mut rng);
        linear(format!("{p}.output.dense"), c.intermediate_size, d, &mut out, &mut rng);
        ln(format!("{p}.layernorm_after"), &mut out);
    }
    ln(format!("{pre}layernorm"), &mut out);
    let k = c.labels.len();
    if v.num_special_tokens() == 2 && matches!(v.head, VisionHead::Distilled) {
        linear("cls_classifier".into(), d, k, &mut out, &mut rng);
        linear("distillation_classifier".into(), d, k, &mut out, &mut rng);
    } else {
        linear("classifier".into(), d, k, &mut out, &mut rng);
    }
    out
}

/// Preprocess `image` with `processor` and cut it into the model's patches.
/// Errors: the processor output does not match the model (size, channels), or a preprocessing error.
pub fn encode_image(config: &EncoderConfig, processor: &ImageProcessor, image: &Image) -> Result<EncodedInput, ModelError> {
    let v = config.vision().ok_or_else(|| ModelError::Input("this is a text model; it cannot read images".into()))?;
    let x = processor.apply(image).map_err(|e| ModelError::Input(format!("preprocessing: {}", with_causes(&e))))?;
    if x.height != v.image_size || x.width != v.image_size || x.channels != v.num_channels {
        return Err(ModelError::Input(format!(
            "the image processor produced {}x{} with {} channel(s), but the model expects {}x{} with {} (check preprocessor_config.json)",
            x.height, x.width, x.channels, v.image_size, v.image_size, v.num_channels
        )));
    }
    let patches = patchify(&x, v.patch_size).map_err(|e| ModelError::Input(format!("patchify: {e}")))?;
    Ok(EncodedInput::image(patches, v.num_special_tokens(), v.patch_dim()))
}

/// [`encode_image`] for many images, in parallel; the error names the image index.
pub fn encode_images(config: &EncoderConfig, processor: &ImageProcessor, images: &[Image]) -> Result<Vec<EncodedInput>, ModelError> {
    images
        .par_iter()
        .enumerate()
        .map(|(i, im)| encode_image(config, processor, im).map_err(|e| ModelError::Input(format!("image #{i}: {e}"))))
        .collect()
}

/// The image processor stored beside a checkpoint (`preprocessor_config.json`), or, when there is
/// none, HF's ViT default for the model's size (resize to `image_size`, mean/std 0.5).
pub fn processor_for(dir: &Path, config: &EncoderConfig) -> Result<ImageProcessor, ModelError> {
    let path = dir.join("preprocessor_config.json");
    if path.exists() {
        return ImageProcessor::from_file(&path).map_err(|e| ModelError::Input(with_causes(&e)));
    }
    let v = config.vision().ok_or_else(|| ModelError::Input("this is a text model".into()))?;
    ImageProcessor::for_model(v.image_size, v.num_channels, &[0.5], &[0.5]).map_err(|e| ModelError::Input(e.to_string()))
}

/// An error and its chain of causes as one line (`a: b: c`).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut m = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        m.push_str(": ");
        m.push_str(&s.to_string());
        src = s.source();
    }
    m
}
