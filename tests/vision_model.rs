//! ViT / DeiT in the shared encoder: checkpoints written here with the exact Hugging Face names and
//! shapes (`modeling_vit.py`, `modeling_deit.py`), checked against a plain f64 re-implementation
//! of the HF forward pass (a real convolution for the patch embedding, pre-LayerNorm layers, the
//! final LayerNorm, the DeiT-distilled head), plus plan invariants with class and distillation
//! tokens, the burn training model, and bad input.

mod common;

use std::collections::HashMap;

use burn::tensor::Device;
use common::{max_abs_diff, TempDir};
use sttabt::exec::RunOptions;
use sttabt::infer::{classify, Mode};
use sttabt::model::config::EncoderConfig;
use sttabt::model::EncodedInput;
use sttabt::train::model::{Batch, TrainBert};
use sttabt::vision::image::Image;
use sttabt::vision::model::{encode_image, new_vision_model, VisionSpec};
use sttabt::vision::preprocess::{patchify, ImageProcessor};
use sttabt::{Encoder, TokenPlan};

/// Small shapes: 8x8 images with 2 channels, patch 2 -> 16 patches; d = 12, 3 heads, 2 layers.
const IMG: usize = 8;
const P: usize = 2;
const C: usize = 2;
const D: usize = 12;
const H: usize = 3;
const FF: usize = 20;
const L: usize = 2;
const K: usize = 3;

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// HF-named tensors of a ViT (`vit.`, `classifier`) or DeiT-distilled (`deit.`, two heads) with
/// random values. The names are spelled out here, not taken from the crate.
fn hf_tensors(deit: bool, prefix: bool, seed: u64) -> Tensors {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t: Tensors = Vec::new();
    let mut rand = |name: String, shape: Vec<usize>, scale: f32, t: &mut Tensors| {
        let n: usize = shape.iter().product();
        t.push((name, shape, (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * scale).collect()));
    };
    let pre = match (prefix, deit) {
        (false, _) => "",
        (true, true) => "deit.",
        (true, false) => "vit.",
    };
    let n = (IMG / P) * (IMG / P) + if deit { 2 } else { 1 };
    rand(format!("{pre}embeddings.cls_token"), vec![1, 1, D], 1.0, &mut t);
    if deit {
        rand(format!("{pre}embeddings.distillation_token"), vec![1, 1, D], 1.0, &mut t);
    }
    rand(format!("{pre}embeddings.position_embeddings"), vec![1, n, D], 0.5, &mut t);
    rand(format!("{pre}embeddings.patch_embeddings.projection.weight"), vec![D, C, P, P], 0.5, &mut t);
    rand(format!("{pre}embeddings.patch_embeddings.projection.bias"), vec![D], 0.1, &mut t);
    for l in 0..L {
        let p = format!("{pre}encoder.layer.{l}");
        for q in ["query", "key", "value"] {
            rand(format!("{p}.attention.attention.{q}.weight"), vec![D, D], 0.5, &mut t);
            rand(format!("{p}.attention.attention.{q}.bias"), vec![D], 0.1, &mut t);
        }
        rand(format!("{p}.attention.output.dense.weight"), vec![D, D], 0.3, &mut t);
        rand(format!("{p}.attention.output.dense.bias"), vec![D], 0.1, &mut t);
        for ln in ["layernorm_before", "layernorm_after"] {
            rand(format!("{p}.{ln}.weight"), vec![D], 0.2, &mut t);
            rand(format!("{p}.{ln}.bias"), vec![D], 0.1, &mut t);
            let last = t.len() - 2;
            t[last].2.iter_mut().for_each(|g| *g += 1.0);
        }
        rand(format!("{p}.intermediate.dense.weight"), vec![FF, D], 0.3, &mut t);
        rand(format!("{p}.intermediate.dense.bias"), vec![FF], 0.1, &mut t);
        rand(format!("{p}.output.dense.weight"), vec![D, FF], 0.3, &mut t);
        rand(format!("{p}.output.dense.bias"), vec![D], 0.1, &mut t);
    }
    rand(format!("{pre}layernorm.weight"), vec![D], 0.2, &mut t);
    rand(format!("{pre}layernorm.bias"), vec![D], 0.1, &mut t);
    let last = t.len() - 2;
    t[last].2.iter_mut().for_each(|g| *g += 1.0);
    if deit {
        rand("cls_classifier.weight".into(), vec![K, D], 0.5, &mut t);
        rand("cls_classifier.bias".into(), vec![K], 0.1, &mut t);
        rand("distillation_classifier.weight".into(), vec![K, D], 0.5, &mut t);
        rand("distillation_classifier.bias".into(), vec![K], 0.1, &mut t);
    } else {
        rand("classifier.weight".into(), vec![K, D], 0.5, &mut t);
        rand("classifier.bias".into(), vec![K], 0.1, &mut t);
    }
    t
}

/// `config.json` as transformers writes it for these shapes.
fn hf_config(deit: bool) -> serde_json::Value {
    serde_json::json!({
        "architectures": [if deit { "DeiTForImageClassificationWithTeacher" } else { "ViTForImageClassification" }],
        "model_type": if deit { "deit" } else { "vit" },
        "attention_probs_dropout_prob": 0.0,
        "encoder_stride": 16,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": D,
        "id2label": {"0": "cat", "1": "dog", "2": "bird"},
        "label2id": {"cat": 0, "dog": 1, "bird": 2},
        "image_size": IMG,
        "initializer_range": 0.02,
        "intermediate_size": FF,
        "layer_norm_eps": 1e-12,
        "num_attention_heads": H,
        "num_channels": C,
        "num_hidden_layers": L,
        "patch_size": P,
        "qkv_bias": true,
        "torch_dtype": "float32",
        "transformers_version": "4.46.0"
    })
}

fn write_hf(dir: &std::path::Path, deit: bool, tensors: &Tensors) {
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&hf_config(deit)).unwrap()).unwrap();
    let views: Vec<(String, Vec<usize>, &[f32])> = tensors.iter().map(|(n, s, d)| (n.clone(), s.clone(), &d[..])).collect();
    sttabt::model::checkpoint::write_safetensors(&dir.join("model.safetensors"), &views).unwrap();
}

fn random_image(seed: u64) -> Image {
    let mut rng = fastrand::Rng::with_seed(seed);
    Image::new(C, IMG, IMG, (0..C * IMG * IMG).map(|_| rng.f32() * 2.0 - 1.0).collect()).unwrap()
}

fn input_of(model: &Encoder, img: &Image) -> EncodedInput {
    let v = model.config.vision().expect("vision config");
    EncodedInput::image(patchify(img, P).unwrap(), v.num_special_tokens(), v.patch_dim())
}

// ---- the f64 reference (HF semantics, written from modeling_vit.py / modeling_deit.py) ----

fn layer_norm(x: &[f64], g: &[f32], b: &[f32]) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    x.iter().enumerate().map(|(i, v)| (v - mean) / (var + 1e-12).sqrt() * g[i] as f64 + b[i] as f64).collect()
}

/// `W x + b` with HF weight `[out, in]`.
fn dense(w: &[f32], b: &[f32], x: &[f64]) -> Vec<f64> {
    let d_in = x.len();
    (0..b.len()).map(|o| b[o] as f64 + (0..d_in).map(|i| w[o * d_in + i] as f64 * x[i]).sum::<f64>()).collect()
}

/// Logits of the HF forward pass on a raw `[C, IMG, IMG]` image.
fn reference_logits(t: &HashMap<String, Vec<f32>>, deit: bool, pre: &str, img: &Image) -> Vec<f64> {
    let g = |n: &str| t.get(n).unwrap_or_else(|| panic!("missing {n}")).as_slice();
    let ns = if deit { 2 } else { 1 };
    let grid = IMG / P;
    // patch embedding: a real convolution, kernel = stride = P, output flattened in raster order
    let (w, b) = (
        g(&format!("{pre}embeddings.patch_embeddings.projection.weight")),
        g(&format!("{pre}embeddings.patch_embeddings.projection.bias")),
    );
    let mut x: Vec<Vec<f64>> = vec![g(&format!("{pre}embeddings.cls_token")).iter().map(|&v| v as f64).collect()];
    if deit {
        x.push(g(&format!("{pre}embeddings.distillation_token")).iter().map(|&v| v as f64).collect());
    }
    for py in 0..grid {
        for px in 0..grid {
            let mut row = vec![0.0f64; D];
            for (o, r) in row.iter_mut().enumerate() {
                let mut acc = b[o] as f64;
                for c in 0..C {
                    for ky in 0..P {
                        for kx in 0..P {
                            acc += w[((o * C + c) * P + ky) * P + kx] as f64 * img.get(c, py * P + ky, px * P + kx) as f64;
                        }
                    }
                }
                *r = acc;
            }
            x.push(row);
        }
    }
    let pos = g(&format!("{pre}embeddings.position_embeddings"));
    for (i, row) in x.iter_mut().enumerate() {
        for j in 0..D {
            row[j] += pos[i * D + j] as f64;
        }
    }
    let n = x.len();
    assert_eq!(n, ns + grid * grid);
    let dh = D / H;
    for l in 0..L {
        let p = format!("{pre}encoder.layer.{l}");
        let hx: Vec<Vec<f64>> =
            x.iter().map(|r| layer_norm(r, g(&format!("{p}.layernorm_before.weight")), g(&format!("{p}.layernorm_before.bias")))).collect();
        let proj = |name: &str| -> Vec<Vec<f64>> {
            hx.iter()
                .map(|r| dense(g(&format!("{p}.attention.attention.{name}.weight")), g(&format!("{p}.attention.attention.{name}.bias")), r))
                .collect()
        };
        let (q, k, v) = (proj("query"), proj("key"), proj("value"));
        let mut ctx = vec![vec![0.0f64; D]; n];
        for head in 0..H {
            for i in 0..n {
                let s: Vec<f64> =
                    (0..n).map(|j| (0..dh).map(|e| q[i][head * dh + e] * k[j][head * dh + e]).sum::<f64>() / (dh as f64).sqrt()).collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for j in 0..n {
                    let pj = (s[j] - m).exp() / z;
                    for e in 0..dh {
                        ctx[i][head * dh + e] += pj * v[j][head * dh + e];
                    }
                }
            }
        }
        for i in 0..n {
            let a: Vec<f64> =
                dense(g(&format!("{p}.attention.output.dense.weight")), g(&format!("{p}.attention.output.dense.bias")), &ctx[i])
                    .iter()
                    .zip(&x[i])
                    .map(|(u, r)| u + r)
                    .collect();
            let h2 = layer_norm(&a, g(&format!("{p}.layernorm_after.weight")), g(&format!("{p}.layernorm_after.bias")));
            let inter: Vec<f64> = dense(g(&format!("{p}.intermediate.dense.weight")), g(&format!("{p}.intermediate.dense.bias")), &h2)
                .iter()
                .map(|&u| 0.5 * u * (1.0 + libm::erf(u / std::f64::consts::SQRT_2)))
                .collect();
            x[i] = dense(g(&format!("{p}.output.dense.weight")), g(&format!("{p}.output.dense.bias")), &inter)
                .iter()
                .zip(&a)
                .map(|(u, r)| u + r)
                .collect();
        }
    }
    let fin = |r: &[f64]| layer_norm(r, g(&format!("{pre}layernorm.weight")), g(&format!("{pre}layernorm.bias")));
    if deit {
        let a = dense(g("cls_classifier.weight"), g("cls_classifier.bias"), &fin(&x[0]));
        let b = dense(g("distillation_classifier.weight"), g("distillation_classifier.bias"), &fin(&x[1]));
        a.iter().zip(&b).map(|(u, v)| 0.5 * (u + v)).collect()
    } else {
        dense(g("classifier.weight"), g("classifier.bias"), &fin(&x[0]))
    }
}

fn as_map(t: &Tensors) -> HashMap<String, Vec<f32>> {
    t.iter().map(|(n, _, d)| (n.clone(), d.clone())).collect()
}

fn max_diff64(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max)
}

#[test]
fn hf_vit_and_deit_checkpoints_load_and_match_the_reference_forward() {
    for (deit, prefix) in [(true, true), (false, true), (false, false)] {
        let dir = TempDir::new("vit-hf");
        let tensors = hf_tensors(deit, prefix, 11);
        write_hf(dir.path(), deit, &tensors);
        let m = Encoder::load(dir.path()).unwrap_or_else(|e| panic!("deit={deit} prefix={prefix}: {e}"));
        let v = m.config.vision().expect("a vision config").clone();
        assert_eq!(v.num_patches(), 16);
        assert_eq!(v.num_special_tokens(), if deit { 2 } else { 1 });
        assert_eq!(m.config.labels, vec!["cat", "dog", "bird"]);
        assert_eq!(m.top_tokens(), if deit { vec![0, 1] } else { vec![0] });
        let patch = m.embeddings.patch().expect("patch embedding");
        assert_eq!((patch.projection.d_in(), patch.projection.d_out()), (C * P * P, D));
        assert_eq!(patch.position.len(), v.seq_len() * D);
        let map = as_map(&tensors);
        let pre = match (prefix, deit) {
            (false, _) => "",
            (true, true) => "deit.",
            (true, false) => "vit.",
        };
        let images: Vec<Image> = (0..3).map(|s| random_image(100 + s)).collect();
        let inputs: Vec<EncodedInput> = images.iter().map(|im| input_of(&m, im)).collect();
        let preds = classify(&m, None, &inputs, &Mode::Dense).unwrap();
        for (im, p) in images.iter().zip(&preds) {
            let want = reference_logits(&map, deit, pre, im);
            let diff = max_diff64(&p.logits, &want);
            assert!(diff < 1e-4, "deit={deit} prefix={prefix}: logits differ from the HF reference by {diff}");
            assert_eq!(p.retention, 1.0);
        }
    }
}

#[test]
fn hf_round_trip_is_exact_and_keeps_the_layout() {
    for deit in [true, false] {
        let dir = TempDir::new("vit-rt");
        let tensors = hf_tensors(deit, true, 5);
        write_hf(dir.path(), deit, &tensors);
        let m = Encoder::load(dir.path()).unwrap();
        let mut back = m.hf_tensors();
        let mut orig = tensors.clone();
        back.sort_by(|a, b| a.0.cmp(&b.0));
        orig.sort_by(|a, b| a.0.cmp(&b.0));
        let names = |t: &Tensors| t.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect::<Vec<_>>();
        assert_eq!(names(&back), names(&orig), "deit={deit}: names and shapes must be HF's");
        for ((n, _, a), (_, _, b)) in back.iter().zip(&orig) {
            assert!(a == b, "{n} changed in the round trip");
        }
        // saving and loading through our writer keeps the model and the architecture name
        let out = TempDir::new("vit-save");
        sttabt::train::save_hf_checkpoint(&m, out.path(), None).unwrap();
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["architectures"][0], if deit { "DeiTForImageClassificationWithTeacher" } else { "ViTForImageClassification" });
        assert_eq!(cfg["model_type"], if deit { "deit" } else { "vit" });
        let again = Encoder::load(out.path()).unwrap();
        assert!(again == m, "deit={deit}: save/load changed the model");
    }
}

#[test]
fn plans_keep_class_and_distillation_tokens_and_gathered_equals_masked() {
    let dir = TempDir::new("vit-plan");
    write_hf(dir.path(), true, &hf_tensors(true, true, 3));
    let m = Encoder::load(dir.path()).unwrap();
    let inputs: Vec<EncodedInput> = (0..4).map(|s| input_of(&m, &random_image(200 + s))).collect();
    let n = inputs[0].len();
    for mode in [Mode::AbtActual { k: 0.2 }, Mode::TopK { k_min: 0.1 }] {
        let preds = classify(&m, None, &inputs, &mode).unwrap();
        for p in &preds {
            assert!(p.retention < 0.9, "{mode:?}: retention {} should drop tokens", p.retention);
            assert_eq!(p.plan.top(), &[0, 1], "{mode:?}: O_L must be the class and distillation tokens");
            for l in 0..L {
                let set = p.plan.inputs(l);
                assert!(set.contains(&0) && set.contains(&1), "{mode:?}: layer {} dropped a special token: {set:?}", l + 1);
            }
            assert!(p.logits.iter().all(|v| v.is_finite()));
        }
    }
    // concrete masks back-track from both special tokens and keep them everywhere
    let plans = sttabt::planners::concrete::concrete_plans(&m, &inputs, &[-3.0; L]).unwrap();
    for p in &plans {
        assert_eq!(p.top(), &[0, 1]);
        assert!(p.retention() < 0.9, "θ = -3 should drop tokens (retention {})", p.retention());
        for l in 0..L {
            assert!(p.inputs(l).starts_with(&[0, 1]), "concrete layer {} dropped a special token", l + 1);
        }
    }
    // hard-mask (dense with excluded keys and zeroed rows) == gathered execution
    let dense = m.run(&inputs[..1], &[TokenPlan::dense(n, L)], RunOptions { attentions: false, hidden_states: true }).unwrap();
    let x0 = dense[0].hidden_states.as_ref().unwrap()[0].1.clone();
    let keep1: Vec<usize> = (0..n).filter(|t| *t < 2 || t % 3 == 0).collect();
    let keep2: Vec<usize> = keep1.iter().copied().filter(|t| *t < 2 || t % 2 == 0).collect();
    let plan = TokenPlan::from_inputs(n, vec![keep1.clone(), keep2.clone()], vec![0, 1]).unwrap();
    let gathered = m.run(&inputs[..1], std::slice::from_ref(&plan), RunOptions::default()).unwrap();
    let ind = |set: &[usize]| (0..n).map(|t| if set.contains(&t) { 1.0f32 } else { 0.0 }).collect::<Vec<f32>>();
    let masks = vec![ind(&keep1), ind(&keep2), ind(&[0, 1])];
    let trace = m.forward_soft(&x0, &vec![true; n], &masks).unwrap();
    let last = &trace[L - 1].x;
    let mut top_rows = last[..2 * D].to_vec();
    m.final_ln.as_ref().unwrap().apply(&mut top_rows);
    assert_eq!(gathered[0].rows, vec![0, 1]);
    let diff = max_abs_diff(&gathered[0].hidden, &top_rows);
    assert!(diff < 1e-4, "gathered vs masked dense differ by {diff}");
    let full = m.logits_of(&dense[0]).unwrap();
    let pruned = m.logits_of(&gathered[0]).unwrap();
    assert!(max_abs_diff(&full, &pruned) > 1e-6, "dropping tokens must change the logits of a random model");
}

#[test]
fn burn_training_model_matches_native_and_round_trips() {
    let spec =
        VisionSpec { image_size: IMG, patch_size: P, channels: C, hidden: D, layers: L, heads: H, intermediate: FF, distilled: true };
    let m = new_vision_model(&spec, vec!["a".into(), "b".into(), "c".into()], 9).unwrap();
    let device = Device::flex();
    let tb = TrainBert::from_native(&m, &device);
    let inputs: Vec<EncodedInput> = (0..3).map(|s| input_of(&m, &random_image(300 + s))).collect();
    let refs: Vec<&EncodedInput> = inputs.iter().collect();
    let batch = Batch::from_inputs(&refs, &device);
    let out = tb.forward(&m.config, &batch, None);
    let logits = sttabt::train::model::to_vec(tb.head_logits(&m.config, out.last()).unwrap());
    let native = m.run_dense(&inputs, RunOptions::default()).unwrap();
    for (e, o) in native.iter().enumerate() {
        let l = m.logits_of(o).unwrap();
        let diff = max_abs_diff(&l, &logits[e * 3..(e + 1) * 3]);
        assert!(diff < 1e-4, "example {e}: burn and native logits differ by {diff}");
    }
    let back = tb.to_native(&m.config).unwrap();
    let (a, b) = (m.hf_tensors(), back.hf_tensors());
    assert_eq!(a.len(), b.len());
    for ((n1, s1, d1), (n2, s2, d2)) in a.iter().zip(&b) {
        assert_eq!((n1, s1), (n2, s2));
        assert!(max_abs_diff(d1, d2) < 1e-6, "{n1} changed through burn");
    }
}

#[test]
fn images_of_the_wrong_size_or_channels() {
    let dir = TempDir::new("vit-bad");
    write_hf(dir.path(), false, &hf_tensors(false, true, 1));
    let m = Encoder::load(dir.path()).unwrap();
    // wrong patch count reaching the executor: a clear error, no panic
    let short = EncodedInput::image(vec![0.0; 8 * C * P * P], 1, C * P * P);
    let err = classify(&m, None, &[short], &Mode::Dense).unwrap_err().to_string();
    assert!(err.contains("16 patches") && err.contains("preprocess"), "{err}");
    // NaN pixels
    let mut nan = input_of(&m, &random_image(1));
    nan.patches[3] = f32::NAN;
    let err = classify(&m, None, &[nan], &Mode::Dense).unwrap_err().to_string();
    assert!(err.contains("not finite"), "{err}");
    // an image given to a text model
    let text = common::random_model(&common::tiny_config(1, 2, 4, 8, 10, 12), 1, 1.0);
    let err = classify(&text, None, &[input_of(&m, &random_image(1))], &Mode::Dense).unwrap_err().to_string();
    assert!(err.contains("image") && err.contains("text model"), "{err}");
    // the processor resizes a larger image to the model's size; a 2-channel image cannot be
    // converted to the processor's 1 channel and is refused by name
    let proc1 = ImageProcessor::for_model(IMG, 1, &[0.5], &[0.5]).unwrap();
    let grey_cfg = EncoderConfig {
        arch: sttabt::model::config::Architecture::Vit(sttabt::model::config::VisionConfig {
            num_channels: 1,
            ..m.config.vision().unwrap().clone()
        }),
        ..m.config.clone()
    };
    let big = Image::filled(1, 3 * IMG, 3 * IMG, 0.25).unwrap();
    let x = encode_image(&grey_cfg, &proc1, &big).expect("a 24x24 image is resized to 8x8");
    assert_eq!(x.len(), 17);
    assert!(x.patches.iter().all(|v| (v - (-0.5)).abs() < 1e-5), "(0.25 - 0.5) / 0.5 = -0.5 everywhere");
    let two = Image::filled(2, IMG, IMG, 0.5).unwrap();
    let err = encode_image(&grey_cfg, &proc1, &two).unwrap_err().to_string();
    assert!(err.contains("channel"), "{err}");
    // a processor whose output does not fit the model
    let proc_wrong = ImageProcessor::for_model(2 * IMG, 1, &[0.5], &[0.5]).unwrap();
    let err = encode_image(&grey_cfg, &proc_wrong, &Image::filled(1, IMG, IMG, 0.1).unwrap()).unwrap_err().to_string();
    assert!(err.contains("16x16") && err.contains("expects 8x8"), "{err}");
    // a config with an image size the patch does not divide is refused when loading
    let bad = TempDir::new("vit-badcfg");
    let mut cfg = hf_config(false);
    cfg["image_size"] = 9.into();
    std::fs::write(bad.path().join("config.json"), cfg.to_string()).unwrap();
    let err = EncoderConfig::from_file(&bad.path().join("config.json")).unwrap_err().to_string();
    assert!(err.contains("image_size 9 is not divisible by patch_size 2"), "{err}");
    // a checkpoint missing the distillation token names it
    let miss = TempDir::new("vit-miss");
    let t: Tensors = hf_tensors(true, true, 2).into_iter().filter(|(n, _, _)| !n.ends_with("distillation_token")).collect();
    write_hf(miss.path(), true, &t);
    let err = Encoder::load(miss.path()).unwrap_err().to_string();
    assert!(err.contains("deit.embeddings.distillation_token"), "{err}");
}
