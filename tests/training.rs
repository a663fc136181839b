//! The burn training stack (src/train) pinned to the native executor and to the criteria:
//! 1. dense parity of `TrainBert` with `Encoder` (hidden states, attention probabilities) on a
//!    tiny random model and on all-MiniLM-L6-v2, and an exact weight round trip;
//! 2. soft-mask parity with `Encoder::forward_soft`, and hard (0/1) masks against the gathered
//!    token-plan executor (ALGORITHM.md section 4.3);
//! 3. gradients reach every checked parameter and the concrete-mask thresholds θ, and stay finite
//!    with masks near 0 and one-token sequences;
//! 4. ApproxNet distillation at least halves the attention KL of a random-init ApproxNet; saved
//!    ApproxNets load back and refuse a foreign teacher;
//! 5. a short MiniLM fine-tune on Rotten Tomatoes beats chance and the majority class on dev, and
//!    resuming continues the step count instead of restarting it.

mod common;

use burn::tensor::activation;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{random_model, tiny_config, TempDir};
use sttabt::approx::{ApproxInit, ApproxNet};
use sttabt::train::distill::{distill, DistillConfig};
use sttabt::train::finetune::{cross_entropy, finetune, with_new_head, FinetuneConfig, LabeledInput};
use sttabt::train::model::{Batch, TrainBert};
use sttabt::train::Progress;
use sttabt::{EncodedInput, Encoder, RunOptions, TokenPlan};

// ---------------------------------------------------------------------------------------------
// helpers

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("tensor data as f32")
}

fn input(ids: Vec<u32>, types: Vec<u32>) -> EncodedInput {
    assert_eq!(ids.len(), types.len());
    EncodedInput { ids, type_ids: types, patches: Vec::new() }
}

/// Random inputs of the given lengths (ids in `1..vocab`, second half of each with type 1).
fn random_inputs(lengths: &[usize], vocab: usize, seed: u64) -> Vec<EncodedInput> {
    let mut rng = fastrand::Rng::with_seed(seed);
    lengths
        .iter()
        .map(|&n| {
            let ids = (0..n).map(|_| rng.u32(1..vocab as u32)).collect();
            let types = (0..n).map(|j| u32::from(j >= n / 2 && n > 2)).collect();
            input(ids, types)
        })
        .collect()
}

/// Rows `0..n` of example `e` of a `[B, T, d]` tensor flattened to a vec.
fn rows(flat: &[f32], e: usize, t: usize, d: usize, n: usize) -> &[f32] {
    &flat[e * t * d..e * t * d + n * d]
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    common::max_abs_diff(a, b)
}

/// Dense parity of the burn model against the native executor on one padded batch:
/// every hidden state (real rows) within `tol_h`, every attention probability (real block) within
/// `tol_p`. Returns the worst differences.
fn dense_parity(m: &Encoder, inputs: &[EncodedInput], tol_h: f32, tol_p: f32) -> (f32, f32) {
    let c = &m.config;
    let (d, h, big_l) = (c.hidden_size, c.num_heads, c.num_layers);
    let device = Device::flex();
    let tb = TrainBert::from_native(m, &device);
    let refs: Vec<&EncodedInput> = inputs.iter().collect();
    let batch = Batch::from_inputs(&refs, &device);
    let [b, t] = batch.dims();
    assert_eq!(b, inputs.len());
    assert_eq!(t, inputs.iter().map(|x| x.len()).max().unwrap());
    assert!(inputs.iter().any(|x| x.len() < t), "the batch must contain padding");
    let out = tb.forward(c, &batch, None);
    assert_eq!(out.hidden.len(), big_l + 1);
    assert_eq!(out.probs.len(), big_l);
    let hidden: Vec<Vec<f32>> = out.hidden.iter().map(|x| vals(x.clone())).collect();
    let probs: Vec<Vec<f32>> = out.probs.iter().map(|x| vals(x.clone())).collect();
    let native = m.run_dense(inputs, RunOptions { attentions: true, hidden_states: true }).expect("native dense run");
    let (mut worst_h, mut worst_p) = (0.0f32, 0.0f32);
    for (e, (x, o)) in inputs.iter().zip(&native).enumerate() {
        let n = x.len();
        assert_eq!(o.rows, (0..n).collect::<Vec<_>>());
        // last hidden state
        let dh = max_diff(rows(&hidden[big_l], e, t, d, n), &o.hidden);
        assert!(dh <= tol_h, "example {e} (n={n}): last hidden differs by {dh} > {tol_h}");
        worst_h = worst_h.max(dh);
        // every intermediate hidden state (0 = embedding output)
        for (l, (rs, hs)) in o.hidden_states.as_ref().expect("hidden states").iter().enumerate() {
            assert_eq!(rs.len(), n);
            let dl = max_diff(rows(&hidden[l], e, t, d, n), hs);
            assert!(dl <= tol_h, "example {e}: hidden state {l} differs by {dl} > {tol_h}");
            worst_h = worst_h.max(dl);
        }
        // attention probabilities, real block; padding keys exactly 0 for real queries
        for (l, la) in o.attentions.as_ref().expect("attentions").iter().enumerate() {
            assert_eq!(la.queries.len(), n);
            assert_eq!(la.keys.len(), n);
            for hh in 0..h {
                for i in 0..n {
                    for j in 0..t {
                        let bp = probs[l][((e * h + hh) * t + i) * t + j];
                        if j < n {
                            let np = la.probs[(hh * n + i) * n + j];
                            let diff = (bp - np).abs();
                            assert!(diff <= tol_p, "example {e} layer {} head {hh} P[{i},{j}]: burn {bp} native {np}", l + 1);
                            worst_p = worst_p.max(diff);
                        } else {
                            assert!(bp.abs() <= 1e-12, "padding key {j} has probability {bp}");
                        }
                    }
                }
            }
        }
    }
    (worst_h, worst_p)
}

/// Largest difference in units of the last place (f32) between two equally long slices.
fn max_ulps(a: &[f32], b: &[f32]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x.to_bits() as i32 as i64 - y.to_bits() as i32 as i64).unsigned_abs() as u32).max().unwrap_or(0)
}

/// Compare two HF tensor lists: names and shapes equal; returns per tensor the max ulp difference.
fn tensor_ulps(a: &[(String, Vec<usize>, Vec<f32>)], b: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<(String, u32)> {
    assert_eq!(a.len(), b.len(), "tensor count");
    a.iter()
        .zip(b)
        .map(|((na, sa, da), (nb, sb, db))| {
            assert_eq!(na, nb);
            assert_eq!(sa, sb, "{na}: shape");
            assert_eq!(da.len(), db.len());
            (na.clone(), max_ulps(da, db))
        })
        .collect()
}

/// The weight round trip through burn: `TrainBert::from_native(m).hf_tensors()` is bit-exact;
/// `to_native(from_native(m)).hf_tensors()` is bit-exact except the query weights/biases, which
/// the native model stores pre-scaled by `1/sqrt(d_h)` (unscale∘scale in f32 may move a value by
/// an ulp; see `round_trip_is_bit_exact` for the strict version). Returns the query drift in ulps.
fn assert_round_trip(m: &Encoder) -> u32 {
    let tb = TrainBert::from_native(m, &Device::flex());
    let a = m.hf_tensors();
    for (name, u) in tensor_ulps(&a, &tb.hf_tensors()) {
        assert_eq!(u, 0, "{name}: TrainBert::hf_tensors differs from the native tensor by {u} ulp");
    }
    let back = tb.to_native(&m.config).expect("to_native");
    assert_eq!(back.config, m.config);
    let mut query_drift = 0;
    for (name, u) in tensor_ulps(&a, &back.hf_tensors()) {
        if name.contains("attention.self.query") {
            assert!(u <= 1, "{name}: round trip moved a value by {u} ulp");
            query_drift = query_drift.max(u);
        } else {
            assert_eq!(u, 0, "{name}: values changed in the round trip ({u} ulp)");
        }
    }
    query_drift
}

fn tiny_model() -> Encoder {
    // L=2, H=2, head 8 (d=16), d_ff 32, vocab 50, 16 positions
    random_model(&tiny_config(2, 2, 8, 32, 50, 16), 11, 1.5)
}

// ---------------------------------------------------------------------------------------------
// 1. dense parity and round trip

#[test]
fn dense_parity_tiny_random_model() {
    let m = tiny_model();
    let inputs = random_inputs(&[5, 9, 3], 50, 1);
    let (wh, wp) = dense_parity(&m, &inputs, 1e-4, 1e-5);
    let drift = assert_round_trip(&m);
    println!("tiny model: worst hidden diff {wh:.2e}, worst prob diff {wp:.2e}; query round-trip drift {drift} ulp");
}

#[test]
fn dense_parity_minilm() {
    let m = common::minilm();
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 128).expect("tokenizer");
    let texts = [
        "A quietly devastating film about grief.",
        "Bad.",
        "The cast is uniformly excellent, but the script never decides whether it wants to be a comedy or a thriller.",
    ];
    let inputs: Vec<EncodedInput> = texts.iter().map(|t| tok.encode(t, None).expect("encode").input).collect();
    let lens: Vec<usize> = inputs.iter().map(|x| x.len()).collect();
    assert!(lens[0] != lens[1] && lens[1] != lens[2], "lengths differ: {lens:?}");
    let (wh, wp) = dense_parity(m, &inputs, 1e-4, 1e-5);
    let drift = assert_round_trip(m);
    println!("MiniLM (lengths {lens:?}): worst hidden diff {wh:.2e}, worst prob diff {wp:.2e}; query round-trip drift {drift} ulp");
}

/// Strict: `to_native(from_native(m))` gives back exactly the weights of `m` (the issue's
/// criterion). Also checks that a native save/load cycle (`hf_tensors` -> `from_store`) keeps the
/// executor's own (pre-scaled) weights, so repeated checkpoint/resume cycles do not drift.
#[test]
fn round_trip_is_bit_exact() {
    for (what, m) in [("tiny (d_h = 8)", tiny_model()), ("MiniLM (d_h = 32)", common::minilm().clone())] {
        let back = TrainBert::from_native(&m, &Device::flex()).to_native(&m.config).expect("to_native");
        let bad: Vec<(String, u32)> = tensor_ulps(&m.hf_tensors(), &back.hf_tensors()).into_iter().filter(|(_, u)| *u > 0).collect();
        let same_native = back == m;
        assert!(
            bad.is_empty() && same_native,
            "{what}: to_native(from_native(m)) is not bit-exact: {} tensors differ (max ulps {:?}); native model equal: {same_native}",
            bad.len(),
            bad.iter().take(3).collect::<Vec<_>>()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. soft-mask parity

/// Masks `[L+1][B][T]` as burn tensors.
fn mask_tensors(masks: &[Vec<Vec<f32>>], device: &Device) -> Vec<Tensor<2>> {
    masks
        .iter()
        .map(|per_ex| {
            let b = per_ex.len();
            let t = per_ex[0].len();
            let flat: Vec<f32> = per_ex.iter().flatten().copied().collect();
            Tensor::from_data(TensorData::new(flat, [b, t]), device)
        })
        .collect()
}

/// Embedding outputs of every real token, padded with zero rows to `t`.
fn embedding_outputs(m: &Encoder, inputs: &[EncodedInput], t: usize) -> Vec<Vec<f32>> {
    let d = m.config.hidden_size;
    let outs = m.run_dense(inputs, RunOptions { attentions: false, hidden_states: true }).expect("dense run");
    outs.iter()
        .zip(inputs)
        .map(|(o, x)| {
            let (rs, x0) = &o.hidden_states.as_ref().unwrap()[0];
            assert_eq!(rs.len(), x.len());
            let mut v = x0.clone();
            v.resize(t * d, 0.0);
            v
        })
        .collect()
}

#[test]
fn soft_mask_parity_with_native_forward_soft() {
    let m = tiny_model();
    let c = &m.config;
    let (d, h, big_l) = (c.hidden_size, c.num_heads, c.num_layers);
    let inputs = random_inputs(&[7, 4, 10], 50, 2);
    let t = 10;
    let mut rng = fastrand::Rng::with_seed(3);
    // masks[l][e][j]: random in [0.05, 1] on real tokens, 0 on padding; the last one-hot CLS.
    let mut masks: Vec<Vec<Vec<f32>>> = (0..big_l)
        .map(|_| inputs.iter().map(|x| (0..t).map(|j| if j < x.len() { 0.05 + 0.95 * rng.f32() } else { 0.0 }).collect()).collect())
        .collect();
    masks.push(inputs.iter().map(|_| (0..t).map(|j| f32::from(j == 0)).collect()).collect());

    let device = Device::flex();
    let tb = TrainBert::from_native(&m, &device);
    let refs: Vec<&EncodedInput> = inputs.iter().collect();
    let batch = Batch::from_inputs(&refs, &device);
    let mt = mask_tensors(&masks, &device);
    let out = tb.forward(c, &batch, Some(&mt));
    let hidden: Vec<Vec<f32>> = out.hidden.iter().map(|x| vals(x.clone())).collect();
    let probs: Vec<Vec<f32>> = out.probs.iter().map(|x| vals(x.clone())).collect();
    let cls = vals(out.cls());

    let x0s = embedding_outputs(&m, &inputs, t);
    let mut worst = 0.0f32;
    for (e, x) in inputs.iter().enumerate() {
        let n = x.len();
        // the burn embedding output is the native one
        let d0 = max_diff(rows(&hidden[0], e, t, d, n), &x0s[e][..n * d]);
        assert!(d0 <= 1e-5, "example {e}: embedding output differs by {d0}");
        let valid: Vec<bool> = (0..t).map(|j| j < n).collect();
        let me: Vec<Vec<f32>> = masks.iter().map(|per| per[e].clone()).collect();
        let trace = m.forward_soft(&x0s[e], &valid, &me).expect("forward_soft");
        assert_eq!(trace.len(), big_l);
        for (l, tr) in trace.iter().enumerate() {
            let dl = max_diff(rows(&hidden[l + 1], e, t, d, n), &tr.x[..n * d]);
            assert!(dl <= 1e-4, "example {e} layer {}: soft hidden differs by {dl}", l + 1);
            for hh in 0..h {
                for i in 0..n {
                    for j in 0..n {
                        let bp = probs[l][((e * h + hh) * t + i) * t + j];
                        let np = tr.p[(hh * t + i) * t + j];
                        assert!((bp - np).abs() <= 1e-5, "example {e} layer {} head {hh} P[{i},{j}]: burn {bp} native {np}", l + 1);
                    }
                }
            }
        }
        let native_cls = &trace[big_l - 1].x[..d];
        let dc = max_diff(&cls[e * d..(e + 1) * d], native_cls);
        assert!(dc <= 1e-4, "example {e}: CLS differs by {dc}");
        worst = worst.max(dc);
        // only CLS survives the last one-hot mask
        assert!(rows(&hidden[big_l], e, t, d, n)[d..].iter().all(|v| *v == 0.0));
    }
    println!("soft masks: worst CLS diff {worst:.2e}");
}

#[test]
fn hard_masks_equal_gathered_execution() {
    let m = tiny_model();
    let c = &m.config;
    let (d, big_l) = (c.hidden_size, c.num_layers);
    let inputs = random_inputs(&[9, 6, 12, 2], 50, 4);
    let t = 12;
    let mut rng = fastrand::Rng::with_seed(5);
    // Nested input sets I_1 ⊇ I_2 ⊇ ... each containing CLS; I_1 is a random subset too.
    let mut sets: Vec<Vec<Vec<usize>>> = Vec::new(); // [e][l]
    for x in &inputs {
        let mut cur: Vec<usize> = (0..x.len()).collect();
        let mut per = Vec::new();
        for _ in 0..big_l {
            cur.retain(|&j| j == 0 || rng.f32() < 0.7);
            per.push(cur.clone());
        }
        sets.push(per);
    }
    let mut masks: Vec<Vec<Vec<f32>>> =
        (0..big_l).map(|l| sets.iter().map(|per| (0..t).map(|j| f32::from(per[l].contains(&j))).collect()).collect()).collect();
    masks.push(inputs.iter().map(|_| (0..t).map(|j| f32::from(j == 0)).collect()).collect());

    let device = Device::flex();
    let tb = TrainBert::from_native(&m, &device);
    let refs: Vec<&EncodedInput> = inputs.iter().collect();
    let batch = Batch::from_inputs(&refs, &device);
    let out = tb.forward(c, &batch, Some(&mask_tensors(&masks, &device)));
    let cls = vals(out.cls());

    let plans: Vec<TokenPlan> =
        inputs.iter().zip(&sets).map(|(x, per)| TokenPlan::from_inputs(x.len(), per.clone(), vec![0]).expect("valid plan")).collect();
    let gathered = m.run(&inputs, &plans, RunOptions::default()).expect("gathered run");
    let dense = m.run_dense(&inputs, RunOptions::default()).expect("dense run");
    let mut worst = 0.0f32;
    let mut pruned_differs = false;
    for (e, o) in gathered.iter().enumerate() {
        let dc = max_diff(&cls[e * d..(e + 1) * d], o.cls());
        assert!(dc <= 1e-4, "example {e} (sets {:?}): burn CLS vs gathered CLS differ by {dc}", sets[e]);
        worst = worst.max(dc);
        if sets[e][0].len() < inputs[e].len() {
            pruned_differs |= max_diff(o.cls(), dense[e].cls()) > 1e-3;
        }
    }
    assert!(pruned_differs, "pruning changed no CLS output: the test would not detect ignored masks");
    println!("hard masks: worst CLS diff {worst:.2e}; sets {sets:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. gradients

struct GradRun {
    loss: f64,
    grads: Vec<(&'static str, Vec<f32>)>,
    theta: Vec<f32>,
}

/// One forward/backward with masks m^l = sigmoid(θ_l + score) (CLS forced to 1, padding 0) or,
/// when `tiny_mask`, 1e-6 · sigmoid(θ_l + score) on non-CLS tokens.
fn grad_run(lengths: &[usize], tiny_mask: bool) -> GradRun {
    let base = random_model(&tiny_config(2, 2, 8, 32, 50, 16), 21, 1.5);
    let m = with_new_head(base, vec!["a".into(), "b".into(), "c".into()], 9);
    let c = m.config.clone();
    let big_l = c.num_layers;
    let device = Device::flex().autodiff();
    let tb = TrainBert::from_native(&m, &device);
    let inputs = random_inputs(lengths, 50, 6);
    let refs: Vec<&EncodedInput> = inputs.iter().collect();
    let batch = Batch::from_inputs(&refs, &device);
    let [b, t] = batch.dims();
    let theta = Tensor::<1>::from_data(TensorData::new(vec![0.3f32, -0.7], [big_l]), &device).require_grad();
    let mut rng = fastrand::Rng::with_seed(8);
    let cls_only: Vec<f32> = (0..b * t).map(|i| f32::from(i % t == 0)).collect();
    let cls_t = Tensor::<2>::from_data(TensorData::new(cls_only.clone(), [b, t]), &device);
    let mut masks = Vec::new();
    for l in 0..big_l {
        let scores: Vec<f32> = (0..b * t).map(|_| rng.f32() * 4.0 - 2.0).collect();
        let scores = Tensor::<2>::from_data(TensorData::new(scores, [b, t]), &device);
        let th = theta.clone().slice([l..l + 1]).reshape([1, 1]);
        let mut s = activation::sigmoid(scores + th);
        if tiny_mask {
            s = s.mul_scalar(1e-6);
        }
        // CLS = 1, other real tokens = s, padding = 0
        let non_cls = (cls_t.clone().neg().add_scalar(1.0)) * batch.valid.clone();
        masks.push(s * non_cls + cls_t.clone());
    }
    masks.push(cls_t.clone());
    let out = tb.forward(&c, &batch, Some(&masks));
    let logits = tb.logits(&c, out.cls()).expect("classifier");
    let targets: Vec<i64> = (0..b as i64).map(|i| i % 3).collect();
    let loss = cross_entropy(logits, Tensor::<1, Int>::from_data(TensorData::new(targets, [b]), &device));
    let lv = sttabt::train::finetune::scalar(&loss);
    let g = loss.backward();
    let grad = |name: &'static str, x: Option<Vec<f32>>| (name, x.unwrap_or_else(|| panic!("{name}: no gradient")));
    let last = &tb.layers[big_l - 1];
    let grads = vec![
        grad("word embeddings", tb.word.as_ref().expect("text model").val().grad(&g).map(vals)),
        grad("layer 0 query weight", tb.layers[0].query.w.val().grad(&g).map(vals)),
        grad("layer 0 key weight", tb.layers[0].key.w.val().grad(&g).map(vals)),
        grad("last layer out_ln gamma", last.out_ln.gamma.val().grad(&g).map(vals)),
        grad("classifier weight", tb.classifier.as_ref().unwrap().w.val().grad(&g).map(vals)),
        grad("classifier bias", tb.classifier.as_ref().unwrap().b.val().grad(&g).map(vals)),
    ];
    let theta_g = theta.grad(&g).map(vals).expect("theta has no gradient");
    GradRun { loss: lv, grads, theta: theta_g }
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn gradients_reach_parameters_and_thresholds() {
    let r = grad_run(&[6, 9, 4], false);
    assert!(r.loss.is_finite() && r.loss > 0.0, "loss {}", r.loss);
    for (name, g) in &r.grads {
        assert!(g.iter().all(|x| x.is_finite()), "{name}: non-finite gradient");
        assert!(norm(g) > 1e-8, "{name}: zero gradient (norm {})", norm(g));
    }
    assert_eq!(r.theta.len(), 2);
    for (l, g) in r.theta.iter().enumerate() {
        assert!(g.is_finite() && g.abs() > 1e-9, "θ_{}: gradient {g}", l + 1);
    }
    println!("loss {:.4}; θ grad {:?}; grad norms {:?}", r.loss, r.theta, r.grads.iter().map(|(n, g)| (*n, norm(g))).collect::<Vec<_>>());
}

#[test]
fn gradients_stay_finite_with_tiny_masks_and_one_token() {
    for (what, lengths, tiny) in [
        ("masks 1e-6 on non-CLS", vec![6usize, 9, 4], true),
        ("one-token sequences", vec![1, 1], false),
        ("one-token sequence padded, masks 1e-6", vec![1, 7], true),
    ] {
        let r = grad_run(&lengths, tiny);
        assert!(r.loss.is_finite(), "{what}: loss {}", r.loss);
        for (name, g) in &r.grads {
            assert!(g.iter().all(|x| x.is_finite()), "{what}: {name}: non-finite gradient");
        }
        assert!(r.theta.iter().all(|x| x.is_finite()), "{what}: θ gradient {:?}", r.theta);
        // the classifier always learns
        let cl = &r.grads.iter().find(|(n, _)| *n == "classifier weight").unwrap().1;
        assert!(norm(cl) > 1e-8, "{what}: classifier gradient vanished");
        println!("{what}: loss {:.4}, θ grad {:?}", r.loss, r.theta);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. distillation

/// A random teacher whose attention scores have rank <= `rank` per layer (query and key weights
/// `U_q V`, `U_k V` with one shared `V` `[rank, d]` per layer), like the low-rank attention of
/// trained models; `sigma_u` sets the score scale (entries of `U` have that std). Everything else
/// as `common::random_tensors(cfg, seed, scale)`.
fn low_rank_teacher(cfg: &sttabt::model::config::EncoderConfig, seed: u64, scale: f32, rank: usize, sigma_u: f32) -> Encoder {
    let d = cfg.hidden_size;
    let mut tensors = common::random_tensors(cfg, seed, scale);
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x10F7);
    let mut uni = |n: usize, std: f32| -> Vec<f32> { (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * std * 3f32.sqrt()).collect() };
    for l in 0..cfg.num_layers {
        let v = uni(rank * d, 1.0 / (d as f32).sqrt());
        for which in ["query", "key"] {
            let u = uni(d * rank, sigma_u);
            let mut w = vec![0.0f32; d * d];
            for o in 0..d {
                for i in 0..d {
                    w[o * d + i] = (0..rank).map(|r| u[o * rank + r] * v[r * d + i]).sum();
                }
            }
            let name = format!("encoder.layer.{l}.attention.self.{which}.weight");
            tensors.iter_mut().find(|(n, _, _)| *n == name).expect("query/key weight").2 = w;
            let bname = format!("encoder.layer.{l}.attention.self.{which}.bias");
            tensors.iter_mut().find(|(n, _, _)| *n == bname).expect("query/key bias").2 = vec![0.0; d];
        }
    }
    let dir = TempDir::new("teacher");
    common::write_checkpoint(dir.path(), cfg, &tensors);
    Encoder::load(dir.path()).expect("load the teacher")
}

#[test]
fn distillation_halves_attention_kl() {
    // Teacher: L=2, H=2, d=32 (head 16), d_ff=64, vocab 50, 16 positions. Attention scores of
    // rank 4 per layer (as in trained models; a full-rank random teacher is beyond a rank-4 f=4
    // ApproxNet head, see below), scale chosen so attention is peaked (random-init KL ~1.2).
    let tcfg = tiny_config(2, 2, 16, 64, 50, 16);
    let teacher = low_rank_teacher(&tcfg, 31, 2.0, 4, 1.2);
    let mut rng = fastrand::Rng::with_seed(12);
    let lens: Vec<usize> = (0..400).map(|_| rng.usize(4..=12)).collect();
    let all = random_inputs(&lens, 50, 13);
    let (train, heldout) = all.split_at(320);
    let approx = ApproxNet::new(&teacher, 4, ApproxInit::Random, 7).expect("ApproxNet::new");
    assert_eq!(approx.model.config.hidden_size, 8);
    assert_eq!(approx.model.config.num_heads, 2);
    let dir = TempDir::new("distill");
    let cfg = DistillConfig {
        steps: 400,
        batch_size: 16,
        lr: 1e-2,
        warmup_frac: 0.05,
        weight_decay: 0.0,
        grad_clip: 1.0,
        seed: 1,
        checkpoint_every: 1000,
        use_pred: false,
        target_kl: None,
    };
    let t0 = std::time::Instant::now();
    let (_net, report) = distill(&teacher, approx, train, heldout, &cfg, dir.path(), false, &Progress { quiet: true }).expect("distill");
    let (kb, ka) = (report.before.attention_kl, report.after.attention_kl);
    println!(
        "distillation (rank-4 teacher): KL {kb:.4} -> {ka:.4} (ratio {:.3}); MSE {:.5} -> {:.5}; {} steps in {:.1}s (wall {:.1}s); final loss {:.4}",
        ka / kb,
        report.before.attention_mse,
        report.after.attention_mse,
        report.steps,
        report.seconds,
        t0.elapsed().as_secs_f64(),
        report.final_loss
    );
    assert!(kb.is_finite() && kb > 0.5, "random-init KL {kb} should be clearly positive (peaked teacher)");
    assert!(ka <= 0.5 * kb, "attention KL after distillation {ka} > half of before {kb}");
    assert!(report.after.attention_mse < 0.5 * report.before.attention_mse);
    assert_eq!(report.before.examples, 80);
    assert_eq!(report.steps, 400);

    // the saved ApproxNet loads back and has the reported fidelity
    let loaded = ApproxNet::load(dir.path(), &teacher.config).expect("load the distilled ApproxNet");
    assert_eq!(loaded.meta.factor, 4);
    assert_eq!(loaded.transfer.len(), 2);
    let f = sttabt::approx::fidelity(&teacher, &loaded.model, heldout).expect("fidelity");
    assert!((f.attention_kl - ka).abs() < 1e-6, "reloaded KL {} vs reported {ka}", f.attention_kl);
    assert!(dir.path().join("distill.json").exists());

    // ...and refuses a teacher of another shape
    let other = tiny_config(3, 2, 16, 64, 50, 16);
    let err = ApproxNet::load(dir.path(), &other).expect_err("an ApproxNet must not load against a 3-layer teacher");
    assert!(err.to_string().contains("does not belong"), "error: {err}");
    let other = tiny_config(2, 4, 8, 64, 50, 16);
    let err = ApproxNet::load(dir.path(), &other).expect_err("an ApproxNet must not load against a 4-head teacher");
    assert!(err.to_string().contains("does not belong"), "error: {err}");

    // A full-rank random teacher (weights std ~0.5): distillation still helps, but a rank-4
    // ApproxNet head cannot reach half the KL (measured ratio ~0.75; reported, not a bug).
    let full = random_model(&tcfg, 31, 4.9);
    let approx = ApproxNet::new(&full, 4, ApproxInit::Random, 7).expect("ApproxNet::new");
    let dir2 = TempDir::new("distill-full");
    let (_, r2) = distill(
        &full,
        approx,
        &train[..160],
        heldout,
        &DistillConfig { steps: 200, ..cfg.clone() },
        dir2.path(),
        false,
        &Progress { quiet: true },
    )
    .expect("distill");
    println!(
        "distillation (full-rank teacher): KL {:.4} -> {:.4} (ratio {:.3})",
        r2.before.attention_kl,
        r2.after.attention_kl,
        r2.after.attention_kl / r2.before.attention_kl
    );
    assert!(r2.after.attention_kl < 0.9 * r2.before.attention_kl);
}

/// ApproxNet::new shrinks every tensor axis whose size equals the teacher's hidden (or FFN) size,
/// so a position table `[max_pos, d]` with `max_pos == d` is shrunk on both axes.
#[test]
fn approxnet_new_when_positions_equal_hidden_size() {
    // d = 16 and max_position_embeddings = 16 (as BERT-small: hidden 512, 512 positions).
    let teacher = random_model(&tiny_config(2, 2, 8, 32, 50, 16), 51, 1.0);
    for init in [ApproxInit::Random, ApproxInit::Interpolate] {
        let a = ApproxNet::new(&teacher, 4, init, 0).unwrap_or_else(|e| panic!("{init:?}: ApproxNet::new failed: {e}"));
        assert_eq!(a.model.config.max_position_embeddings, 16);
        assert_eq!(a.model.embeddings.text().expect("text model").position.len(), 16 * 4, "{init:?}: position table must be [16, 4]");
    }
}

/// `check_teacher` must refuse a teacher that accepts longer inputs than the ApproxNet has
/// positions for (its condition `a < min(t, a)` can never be true).
#[test]
fn approxnet_refuses_teacher_with_more_positions() {
    let teacher = random_model(&tiny_config(2, 2, 16, 64, 50, 16), 52, 1.0);
    let approx = ApproxNet::new(&teacher, 4, ApproxInit::Random, 0).expect("ApproxNet::new");
    assert!(approx.check_teacher(&teacher.config).is_ok());
    let longer = tiny_config(2, 2, 16, 64, 50, 32);
    let r = approx.check_teacher(&longer);
    assert!(
        r.as_ref().is_err_and(|e| e.to_string().contains("does not belong")),
        "an ApproxNet with 16 positions accepted a teacher with 32: {r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. fine-tuning

#[test]
fn finetune_minilm_on_rotten_tomatoes() {
    let rt = sttabt::data::rt::load_rotten_tomatoes(&common::rotten_tomatoes_path(), 0).expect("Rotten Tomatoes");
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 128).expect("tokenizer");
    let (train, _) = sttabt::pipeline::tokenize(&tok, &rt.train, Some(128)).expect("tokenise train");
    let (dev, _) = sttabt::pipeline::tokenize(&tok, &rt.dev, Some(200)).expect("tokenise dev");
    assert_eq!((train.len(), dev.len()), (128, 200));

    let labels = rt.train.label_names.clone();
    assert_eq!(labels, vec!["negative".to_string(), "positive".to_string()]);
    let base = with_new_head(common::minilm().clone(), labels.clone(), 0);
    let dir = TempDir::new("finetune");
    // 128 sentences (256 took ~55 s on 2 cores), batch 8, lr 3e-4 (16 steps). With 256 sentences,
    // batch 32, lr 1e-4 (8 steps) AdamW moves no weight by more than ~5e-4 and the model predicts
    // the majority class for every dev sentence (accuracy 0.58 = the positive rate).
    let cfg = FinetuneConfig {
        epochs: 1,
        batch_size: 8,
        lr: 3e-4,
        warmup_frac: 0.1,
        weight_decay: 0.01,
        grad_clip: 1.0,
        seed: 0,
        checkpoint_every: 1000,
    };
    let report = finetune(base, &train, &dev, &cfg, dir.path(), &common::minilm_dir(), false, &Progress { quiet: true }).expect("finetune");
    println!("fine-tune: {} steps in {:.1}s, dev accuracy {:?}", report.steps, report.seconds, report.dev_accuracy);
    assert_eq!(report.steps, 16);
    assert_eq!(report.dev_accuracy.len(), 1);
    let acc = report.best_dev_accuracy;
    assert!(acc.is_finite());
    let saved = Encoder::load(dir.path()).expect("the fine-tuned checkpoint loads");
    assert_eq!(saved.config.labels, labels);
    assert!(saved.classifier.is_some());
    assert!(dir.path().join("tokenizer.json").exists() || dir.path().join("vocab.txt").exists(), "tokenizer files copied");
    let again = sttabt::train::finetune::accuracy(&saved, &dev, 64).expect("accuracy");
    assert!((again - acc).abs() < 1e-9, "saved model accuracy {again} vs reported {acc}");
    let pos = dev.iter().filter(|x| x.label == 1).count() as f64 / dev.len() as f64;
    let majority = pos.max(1.0 - pos);
    let preds = sttabt::train::finetune::predict(&saved, dev.iter().map(|x| &x.input), 64).expect("predict");
    let pred_pos = preds.iter().filter(|p| **p == 1).count();
    println!("fine-tune: dev accuracy {acc:.3} (majority-class rate {majority:.3}; {pred_pos}/200 predicted positive)");
    assert!(acc > 0.55, "dev accuracy {acc} after fine-tuning is not above 55%");
    assert!(acc > majority, "dev accuracy {acc} does not beat the majority class ({majority})");
}

#[test]
fn finetune_resume_continues_step_count() {
    // Tiny random model, 64 examples with a learnable rule, batch 16: 4 steps per epoch.
    let base = random_model(&tiny_config(2, 2, 8, 32, 50, 16), 41, 1.0);
    let m = with_new_head(base, vec!["low".into(), "high".into()], 3);
    let mut rng = fastrand::Rng::with_seed(77);
    let data: Vec<LabeledInput> = (0..80)
        .map(|_| {
            let n = rng.usize(3..10);
            let ids: Vec<u32> = (0..n).map(|_| rng.u32(1..50)).collect();
            let label = usize::from(ids[1] >= 25);
            LabeledInput { input: input(ids, vec![0; n]), label }
        })
        .collect();
    let (train, dev) = data.split_at(64);
    let dir = TempDir::new("resume");
    let tokdir = TempDir::new("resume-tok");
    let q = Progress { quiet: true };
    let cfg1 = FinetuneConfig {
        epochs: 1,
        batch_size: 16,
        lr: 1e-3,
        warmup_frac: 0.1,
        weight_decay: 0.0,
        grad_clip: 1.0,
        seed: 0,
        checkpoint_every: 3,
    };
    let r1 = finetune(m.clone(), train, dev, &cfg1, dir.path(), tokdir.path(), false, &q).expect("first run");
    assert_eq!(r1.steps, 4);
    let ckpt = dir.path().join("checkpoint");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json")).expect("state.json")).unwrap();
    assert_eq!(state["step"], 4, "state after one epoch: {state}");

    // Resuming into a 2-epoch run would change the learning-rate schedule: refused, naming the field.
    let cfg2 = FinetuneConfig { epochs: 2, ..cfg1.clone() };
    let err = finetune(m.clone(), train, dev, &cfg2, dir.path(), tokdir.path(), true, &q).expect_err("resume with other epochs");
    assert!(format!("{err:#}").contains("epochs: 1 -> 2"), "error does not name epochs: {err:#}");

    // Resuming a finished run does nothing more and reports the same.
    let r4 = finetune(m.clone(), train, dev, &cfg1, dir.path(), tokdir.path(), true, &q).expect("resume of a finished run");
    assert_eq!(r4.steps, 4);
    assert_eq!(r4.dev_accuracy, r1.dev_accuracy);

    // Without resume it starts over from step 0.
    let r5 = finetune(m, train, dev, &cfg1, dir.path(), tokdir.path(), false, &q).expect("fresh run");
    assert_eq!(r5.steps, 4);
    assert_eq!(r5.dev_accuracy.len(), 1);
    let saved = Encoder::load(dir.path()).expect("saved model");
    assert_eq!(saved.config.labels, vec!["low".to_string(), "high".to_string()]);
}
