//! Token masks in the native trainer (src/train/native/masks.rs; ALGORITHM.md section 4.3) against
//! burn's `TrainBert::forward` with masks, autodiff through the masks as tracked tensors: the
//! loss, every parameter's gradient and dL/dm^l of every layer within 1e-4 relative on tiny random
//! configs and 1e-3 on all-MiniLM-L6-v2 with a real Rotten Tomatoes batch, with soft masks in
//! (0, 1) and with 0/1 masks. And 0/1 masks from an ABT plan give the CLS logits of the gathered
//! execution of that plan (`planners::run`), to 1e-4.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{norm, random_batch, rel_err};
use sttabt::approx::{ApproxInit, ApproxNet};
use sttabt::planners::abt::{Abt, AttentionSource};
use sttabt::planners::{run, Models};
use sttabt::train::finetune::{cross_entropy, scalar, with_new_head, LabeledInput};
use sttabt::train::model::{to_vec, Batch, TrainBert};
use sttabt::train::native::backward::backward_full;
use sttabt::train::native::forward::forward_masked;
use sttabt::train::native::masks::TokenMasks;
use sttabt::train::native::params::train_bert_grads;
use sttabt::train::native::{batch_of, NativeBert, PackedBatch};
use sttabt::{EncodedInput, Encoder, RunOptions};

/// A tiny random 2-layer BERT with a classifier ([`common::tiny_classifier`]).
fn tiny_model(heads: usize, labels: usize, pooler: bool, seed: u64) -> Encoder {
    common::tiny_classifier(2, heads, 8, 16 * heads, labels, pooler, seed)
}

/// Masks for `pb`: soft in (0.05, 0.95), or 0/1 with CLS always kept; `L + 1` vectors `[N]`.
fn random_masks(pb: &PackedBatch, layers: usize, soft: bool, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..=layers)
        .map(|_| {
            let mut m: Vec<f32> = (0..pb.rows()).map(|_| if soft { 0.05 + 0.9 * rng.f32() } else { f32::from(rng.bool()) }).collect();
            for e in 0..pb.b {
                if !soft {
                    m[pb.offsets[e]] = 1.0;
                }
            }
            m
        })
        .collect()
}

/// burn: loss, parameter gradients and dL/dm^l (packed back to `[N]`) with `masks` as tracked
/// `[B, T]` tensors (padding 0).
fn burn_run(model: &Encoder, data: &[LabeledInput], masks: &[Vec<f32>], pb: &PackedBatch) -> (f64, Vec<(String, Vec<f32>)>, Vec<Vec<f32>>) {
    let device = Device::flex().autodiff();
    let tb = TrainBert::from_native(model, &device);
    let cfg = &model.config;
    let refs: Vec<&EncodedInput> = data.iter().map(|x| &x.input).collect();
    let batch = Batch::from_inputs(&refs, &device);
    let [b, t] = batch.dims();
    let tracked: Vec<Tensor<2>> = masks
        .iter()
        .map(|m| {
            let mut padded = vec![0.0f32; b * t];
            for e in 0..b {
                for j in 0..pb.lengths[e] {
                    padded[e * t + j] = m[pb.offsets[e] + j];
                }
            }
            Tensor::<2>::from_data(TensorData::new(padded, [b, t]), &device).require_grad()
        })
        .collect();
    let labels: Vec<i64> = data.iter().map(|x| x.label as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &device);
    let out = tb.forward(cfg, &batch, Some(&tracked));
    let loss = cross_entropy(tb.head_logits(cfg, out.last()).expect("classifier"), targets);
    let lv = scalar(&loss);
    let grads = loss.backward();
    let dm = tracked
        .iter()
        .map(|m| {
            let g = m.grad(&grads).map(to_vec).unwrap_or_else(|| vec![0.0; b * t]);
            let mut packed = vec![0.0f32; pb.rows()];
            for e in 0..b {
                for j in 0..pb.lengths[e] {
                    packed[pb.offsets[e] + j] = g[e * t + j];
                }
            }
            packed
        })
        .collect();
    (lv, train_bert_grads(&tb, &grads), dm)
}

/// Native and burn agree on the loss (1e-5), every parameter gradient and every dL/dm^l (`tol`).
fn check(model: &Encoder, data: &[LabeledInput], soft: bool, tol: f64, seed: u64) {
    let native = NativeBert::from_model(model).expect("native params");
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let pb = batch_of(&native, &refs).expect("batch");
    let layers = model.layers.len();
    let m = random_masks(&pb, layers, soft, seed);
    let (lb, gb, dmb) = burn_run(model, data, &m, &pb);
    let masks = TokenMasks::new(m, &pb, layers).expect("valid masks");
    let fw = forward_masked(&native, &pb, Some(&masks));
    let mut gn = native.zeros_like();
    let dmn = backward_full(&native, &pb, &fw, &mut gn, None, true).expect("mask gradients were asked for");
    let ln = fw.loss;
    assert!((ln - lb).abs() <= 1e-5 * lb.abs().max(1.0), "loss: native {ln} vs burn {lb}");
    // the masks change the loss (so the comparison is of the masked path)
    let plain = sttabt::train::native::forward::forward(&native, &pb).loss;
    assert!((plain - ln).abs() > 1e-4, "masks did not change the loss: {plain} vs {ln}");
    let mut worst = (0.0f64, String::new());
    for ((name, g_n), (_, g_b)) in gn.tensors().iter().zip(&gb) {
        if name.ends_with("attention.self.key.bias") {
            let scale = gb.iter().find(|(n, _)| *n == name.replace(".bias", ".weight")).map(|(_, g)| norm(g)).expect("key weight");
            assert!(norm(g_n) <= 1e-5 * scale && norm(g_b) <= 1e-5 * scale, "{name}: {} / {} vs {scale}", norm(g_n), norm(g_b));
            continue;
        }
        assert!(norm(g_b) > 0.0, "{name}: burn's gradient is zero");
        let e = rel_err(g_n, g_b);
        if e > worst.0 {
            worst = (e, name.clone());
        }
        assert!(e <= tol, "{name}: relative gradient error {e:.3e} > {tol:e}");
    }
    assert_eq!(dmn.len(), layers + 1);
    for (l, (a, b)) in dmn.iter().zip(&dmb).enumerate() {
        assert!(norm(b) > 0.0, "dL/dm^{}: burn's is zero", l + 1);
        let e = rel_err(a, b);
        assert!(e <= tol, "dL/dm^{}: relative error {e:.3e} > {tol:e} (‖burn‖ {:.3e})", l + 1, norm(b));
        if e > worst.0 {
            worst = (e, format!("m^{}", l + 1));
        }
    }
    eprintln!("soft {soft}: loss {ln:.6} (burn {lb:.6}); worst {:.2e} at {}", worst.0, worst.1);
}

#[test]
fn tiny_configs_masked_gradients_match_burn() {
    for (i, &(heads, labels, pooler)) in [(2usize, 2usize, true), (3, 3, false), (4, 2, true)].iter().enumerate() {
        let model = tiny_model(heads, labels, pooler, 30 + i as u64);
        let data = random_batch(&[5, 3, 9, 1, 7], 40, labels, 200 + i as u64);
        check(&model, &data, true, 1e-4, 7 + i as u64);
        check(&model, &data, false, 1e-4, 17 + i as u64);
    }
}

#[test]
fn minilm_rotten_tomatoes_masked_gradients_match_burn() {
    let rt = sttabt::data::rt::load_rotten_tomatoes(&common::rotten_tomatoes_path(), 0).expect("Rotten Tomatoes");
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 128).expect("tokenizer");
    let (train, _) = sttabt::pipeline::tokenize(&tok, &rt.train, Some(6)).expect("tokenise");
    let model = with_new_head(common::minilm().clone(), vec!["negative".into(), "positive".into()], 0);
    check(&model, &train, true, 1e-3, 1);
    check(&model, &train, false, 1e-3, 2);
}

#[test]
fn bad_masks_are_clear_errors() {
    let model = tiny_model(2, 2, false, 4);
    let native = NativeBert::from_model(&model).expect("native params");
    let data = random_batch(&[3, 2], 40, 2, 5);
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let pb = batch_of(&native, &refs).expect("batch");
    let err = TokenMasks::new(vec![vec![1.0; 5]; 2], &pb, 2).expect_err("2 masks, 3 needed").to_string();
    assert!(err.contains("2 token masks") && err.contains("expected 3"), "{err}");
    let err = TokenMasks::new(vec![vec![1.0; 4]; 3], &pb, 2).expect_err("4 values, 5 tokens").to_string();
    assert!(err.contains("4 values") && err.contains("5 tokens"), "{err}");
    let mut m = vec![vec![1.0; 5]; 3];
    m[1][2] = 1.5;
    let err = TokenMasks::new(m, &pb, 2).expect_err("1.5").to_string();
    assert!(err.contains("m^2 token 2 is 1.5"), "{err}");
    let plan = sttabt::TokenPlan::dense_cls(4, 2);
    let err = TokenMasks::from_plans(&[plan.clone(), plan], &pb, 2).expect_err("4-token plan, 3-token example").to_string();
    assert!(err.contains("plan 0 covers 4 tokens"), "{err}");
}

/// 0/1 masks from ABT plans (ApproxNet at keep 0.4) give the gathered execution's logits.
fn plan_masks_equal_gathered(teacher: &Encoder, data: &[LabeledInput], tol: f32) {
    let approx = ApproxNet::new(teacher, 4, ApproxInit::Interpolate, 0).expect("ApproxNet");
    let inputs: Vec<EncodedInput> = data.iter().map(|x| x.input.clone()).collect();
    let models = Models { teacher, approx: Some(&approx.model) };
    let planned = run(&Abt::topk(vec![0.4], AttentionSource::ApproxNet), &models, &inputs, RunOptions::default()).expect("ABT run");
    let retention: f64 = planned.plans.iter().map(|p| p.retention()).sum::<f64>() / planned.plans.len() as f64;
    assert!(retention < 0.75, "the plans should prune: retention {retention}");
    let native = NativeBert::from_model(teacher).expect("native params");
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let pb = batch_of(&native, &refs).expect("batch");
    let masks = TokenMasks::from_plans(&planned.plans, &pb, teacher.layers.len()).expect("plan masks");
    let fw = forward_masked(&native, &pb, Some(&masks));
    let dense = sttabt::train::native::forward::forward(&native, &pb);
    let nl = native.classifier.d_out;
    let mut moved = 0.0f32;
    for (e, out) in planned.outputs.iter().enumerate() {
        let gathered = teacher.logits_of(out).expect("logits");
        let masked = &fw.logits[e * nl..(e + 1) * nl];
        let diff = common::max_abs_diff(masked, &gathered);
        assert!(diff <= tol, "example {e}: masked {masked:?} vs gathered {gathered:?} ({diff:.2e})");
        moved = moved.max(common::max_abs_diff(&dense.logits[e * nl..(e + 1) * nl], &gathered));
    }
    assert!(moved > 10.0 * tol, "pruning should change some logits (max change {moved:.2e})");
}

#[test]
fn abt_plan_masks_equal_the_gathered_execution() {
    let model = tiny_model(2, 2, true, 41);
    let data = random_batch(&[12, 7, 16, 3, 9], 40, 2, 42);
    plan_masks_equal_gathered(&model, &data, 1e-4);
    let rt = sttabt::data::rt::load_rotten_tomatoes(&common::rotten_tomatoes_path(), 0).expect("Rotten Tomatoes");
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 128).expect("tokenizer");
    let (train, _) = sttabt::pipeline::tokenize(&tok, &rt.train, Some(8)).expect("tokenise");
    let model = with_new_head(common::minilm().clone(), vec!["negative".into(), "positive".into()], 0);
    plan_masks_equal_gathered(&model, &train, 1e-4);
}
