//! The native trainer (src/train/native) against burn's `TrainBert` on the same batch (issue 15,
//! item 3): the mean cross-entropy equals burn's, every parameter's gradient satisfies
//! ‖g_native − g_burn‖ / ‖g_burn‖ <= 1e-4 on tiny random configs (hidden 16-32, 2 layers, 2-4
//! heads, ragged padded batches, with and without pooler) and <= 1e-3 on all-MiniLM-L6-v2 with a
//! real Rotten Tomatoes batch; AdamW steps (per-tensor clipping, weight decay) leave the
//! parameters equal to burn's within 1e-5 relative; conversions round-trip exactly; bad batches
//! are clear errors.

mod common;

use std::path::Path;

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{norm, random_batch, rel_err};
use sttabt::model::config::EncoderConfig;
use sttabt::train::finetune::{cross_entropy, scalar, with_new_head, LabeledInput};
use sttabt::train::model::{Batch, TrainBert};
use sttabt::train::native::params::train_bert_grads;
use sttabt::train::native::{batch_of, loss_and_grads, AdamW, AdamWSettings, NativeBert};
use sttabt::{EncodedInput, Encoder};

/// A tiny random 2-layer BERT with a classifier ([`common::tiny_classifier`]).
fn tiny_model(heads: usize, head_size: usize, labels: usize, pooler: bool, seed: u64) -> Encoder {
    common::tiny_classifier(2, heads, head_size, 2 * heads * head_size, labels, pooler, seed)
}

/// The attention key bias, whose gradient is zero up to rounding.
fn is_key_bias(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

/// burn's loss and gradients (in `NativeBert::tensors` order) of `tb` on `data`.
fn burn_loss_grads(tb: &TrainBert, cfg: &EncoderConfig, data: &[LabeledInput], device: &Device) -> (f64, Vec<(String, Vec<f32>)>) {
    let refs: Vec<&EncodedInput> = data.iter().map(|x| &x.input).collect();
    let batch = Batch::from_inputs(&refs, device);
    let labels: Vec<i64> = data.iter().map(|x| x.label as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [data.len()]), device);
    let out = tb.forward(cfg, &batch, None);
    let loss = cross_entropy(tb.head_logits(cfg, out.last()).expect("classifier"), targets);
    let lv = scalar(&loss);
    let grads = loss.backward();
    (lv, train_bert_grads(tb, &grads))
}

/// Loss within `1e-5` relative, every gradient within `tol` relative (and no zero burn gradient
/// where the native one is large).
fn check_grads(model: &Encoder, data: &[LabeledInput], tol: f64) {
    let device = Device::flex().autodiff();
    let tb = TrainBert::from_native(model, &device);
    let (lb, gb) = burn_loss_grads(&tb, &model.config, data, &device);
    let native = NativeBert::from_model(model).expect("native params");
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let (ln, gn) = loss_and_grads(&native, &batch_of(&native, &refs).expect("batch"));
    assert!((ln - lb).abs() <= 1e-5 * lb.abs().max(1.0), "loss: native {ln} vs burn {lb}");
    let gn = gn.tensors();
    assert_eq!(gn.len(), gb.len(), "tensor count");
    let mut worst = (0.0f64, String::new());
    for ((name_n, g_n), (name_b, g_b)) in gn.iter().zip(&gb) {
        assert_eq!(name_n, name_b, "tensor order");
        if is_key_bias(name_n) {
            // exactly zero in exact arithmetic (softmax ignores a per-query constant q·b_K):
            // both sides are rounding noise, tiny next to the key weight's gradient
            let scale = gb.iter().find(|(n, _)| *n == name_n.replace(".bias", ".weight")).map(|(_, g)| norm(g)).expect("key weight");
            assert!(norm(g_n) <= 1e-5 * scale && norm(g_b) <= 1e-5 * scale, "{name_n}: {} / {} vs {scale}", norm(g_n), norm(g_b));
            continue;
        }
        assert!(norm(g_b) > 0.0, "{name_b}: burn's gradient is zero (the batch should reach every tensor)");
        let e = rel_err(g_n, g_b);
        if e > worst.0 {
            worst = (e, name_n.clone());
        }
        assert!(e <= tol, "{name_n}: ‖g_native − g_burn‖ / ‖g_burn‖ = {e:.3e} > {tol:e} (‖g_burn‖ = {:.3e})", norm(g_b));
    }
    eprintln!("loss {ln:.6} (burn {lb:.6}); worst gradient {:.2e} at {}", worst.0, worst.1);
}

#[test]
fn tiny_configs_loss_and_gradients_match_burn() {
    // (heads, head size, labels, pooler): hidden 16, 24, 32
    for (i, &(heads, hs, labels, pooler)) in [(2usize, 8usize, 2usize, true), (3, 8, 3, false), (4, 8, 2, true)].iter().enumerate() {
        let model = tiny_model(heads, hs, labels, pooler, 10 + i as u64);
        // ragged: padding in every example but the longest, one 1-token example
        let data = random_batch(&[5, 3, 9, 1, 7], 40, labels, 100 + i as u64);
        check_grads(&model, &data, 1e-4);
    }
}

#[test]
fn adamw_steps_match_burn() {
    let model = tiny_model(2, 8, 2, true, 7);
    let cfg = model.config.clone();
    let data = random_batch(&[6, 4, 8, 2], 40, 2, 8);
    let device = Device::flex().autodiff();
    let mut tb = TrainBert::from_native(&model, &device);
    let mut native = NativeBert::from_model(&model).expect("native params");
    // a clip small enough that some tensors are clipped and some are not
    let (wd, clip) = (0.01f32, 0.05f32);
    let mut optim = AdamWConfig::new().with_weight_decay(wd).with_grad_clipping(Some(GradientClippingConfig::Norm(clip))).init();
    let mut adam = AdamW::new(AdamWSettings::burn_defaults(wd, Some(clip)), &native);
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let batch = batch_of(&native, &refs).expect("batch");
    let start = native.clone();
    let (mut clipped, mut unclipped) = (0, 0);
    for (step, lr) in [1e-3f64, 5e-4].into_iter().enumerate() {
        // burn step
        let t_refs: Vec<&EncodedInput> = data.iter().map(|x| &x.input).collect();
        let b = Batch::from_inputs(&t_refs, &device);
        let targets =
            Tensor::<1, Int>::from_data(TensorData::new(data.iter().map(|x| x.label as i64).collect::<Vec<_>>(), [data.len()]), &device);
        let out = tb.forward(&cfg, &b, None);
        let loss = cross_entropy(tb.head_logits(&cfg, out.last()).expect("classifier"), targets);
        let grads = GradientsParams::from_grads(loss.backward(), &tb);
        tb = optim.step(lr, tb, grads);
        // native step
        let (_, mut g) = loss_and_grads(&native, &batch);
        if step == 0 {
            for (_, x) in g.tensors() {
                if norm(x) > clip as f64 {
                    clipped += 1;
                } else {
                    unclipped += 1;
                }
            }
        }
        adam.step(lr, &mut native, &mut g);
        let from_burn = NativeBert::from_train(&tb, &cfg).expect("burn params");
        for (((name, p_n), (_, p_b)), (_, p_0)) in native.tensors().iter().zip(from_burn.tensors()).zip(start.tensors()) {
            let e = rel_err(p_n, p_b);
            assert!(e <= 1e-5, "step {step}, {name}: ‖p_native − p_burn‖ / ‖p_burn‖ = {e:.3e}");
            // and the step itself moved the tensor the same way (the update, not just the weights)
            let du_n: Vec<f32> = p_n.iter().zip(p_0).map(|(a, b)| a - b).collect();
            let du_b: Vec<f32> = p_b.iter().zip(p_0).map(|(a, b)| a - b).collect();
            if is_key_bias(name) {
                continue; // Adam normalises its rounding-noise gradient: not comparable
            }
            assert!(norm(&du_b) > 0.0, "step {step}, {name}: burn did not move the tensor");
            let eu = rel_err(&du_n, &du_b);
            assert!(eu <= 2e-3, "step {step}, {name}: updates differ, relative {eu:.3e}");
        }
    }
    assert!(clipped > 0 && unclipped > 0, "the clip should bind for some tensors only ({clipped} clipped, {unclipped} not)");
}

#[test]
fn conversions_round_trip_exactly() {
    let model = tiny_model(2, 8, 3, true, 3);
    let native = NativeBert::from_model(&model).expect("native params");
    let back = native.to_model().expect("back to Encoder");
    assert_eq!(back.hf_tensors(), model.hf_tensors());
    let device = Device::flex().autodiff();
    let from_train = NativeBert::from_train(&TrainBert::from_native(&model, &device), &model.config).expect("from burn");
    assert_eq!(from_train, native);
}

#[test]
fn bad_batches_are_clear_errors() {
    let model = tiny_model(2, 8, 2, false, 4);
    let native = NativeBert::from_model(&model).expect("native params");
    let mut data = random_batch(&[3, 2], 40, 2, 5);
    data[1].label = 2;
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let err = batch_of(&native, &refs).expect_err("label 2 of a 2-class head").to_string();
    assert!(err.contains("label 2") && err.contains("2 classes"), "{err}");
    data[1].label = 1;
    data[0].input.ids[1] = 40;
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let err = batch_of(&native, &refs).expect_err("id 40 of a 40-token vocabulary").to_string();
    assert!(err.contains("id 40") && err.contains("vocab 40"), "{err}");
    let long = random_batch(&[17], 40, 2, 6);
    let refs: Vec<&LabeledInput> = long.iter().collect();
    let err = batch_of(&native, &refs).expect_err("17 tokens, 16 positions").to_string();
    assert!(err.contains("17 tokens") && err.contains("1..=16"), "{err}");
    let err = batch_of(&native, &[]).expect_err("empty batch").to_string();
    assert!(err.contains("empty batch"), "{err}");
}

#[test]
fn minilm_rotten_tomatoes_gradients_match_burn() {
    let rt = sttabt::data::rt::load_rotten_tomatoes(&common::rotten_tomatoes_path(), 0).expect("Rotten Tomatoes");
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 128).expect("tokenizer");
    let (train, _) = sttabt::pipeline::tokenize(&tok, &rt.train, Some(8)).expect("tokenise");
    let lengths: Vec<usize> = train.iter().map(|x| x.input.len()).collect();
    assert!(lengths.iter().min() < lengths.iter().max(), "a ragged batch: {lengths:?}");
    let model = with_new_head(common::minilm().clone(), vec!["negative".into(), "positive".into()], 0);
    check_grads(&model, &train, 1e-3);
}

#[test]
fn finetune_native_follows_the_burn_run() {
    use sttabt::train::finetune::{finetune, FinetuneConfig};
    use sttabt::train::native::finetune_native;
    use sttabt::train::Progress;
    let model = tiny_model(2, 8, 2, true, 21);
    let lengths: Vec<usize> = (0..14).map(|i| 2 + (i * 5) % 9).collect();
    let train = random_batch(&lengths, 40, 2, 22);
    let dev = random_batch(&[4, 6, 3, 8, 5, 2], 40, 2, 23);
    // 2 epochs of 4 batches (the last one short), warm-up and decay, clipping binding
    let cfg = FinetuneConfig {
        epochs: 2,
        batch_size: 4,
        lr: 2e-3,
        warmup_frac: 0.25,
        weight_decay: 0.01,
        grad_clip: 0.5,
        seed: 3,
        checkpoint_every: 100,
    };
    let (burn_dir, native_dir, tok) = (common::TempDir::new("ft-burn"), common::TempDir::new("ft-native"), common::TempDir::new("ft-tok"));
    let quiet = Progress { quiet: true };
    let rb = finetune(model.clone(), &train, &dev, &cfg, burn_dir.path(), tok.path(), false, &quiet).expect("burn fine-tune");
    let rn = finetune_native(model.clone(), &train, &dev, &cfg, native_dir.path(), tok.path(), false, &quiet).expect("native fine-tune");
    assert_eq!((rn.steps, rn.epochs), (8, 2));
    assert_eq!((rn.steps, rn.best_epoch, &rn.dev_accuracy), (rb.steps, rb.best_epoch, &rb.dev_accuracy));
    let wb = Encoder::load(burn_dir.path()).expect("burn result").hf_tensors();
    let wn = Encoder::load(native_dir.path()).expect("native result").hf_tensors();
    let w0 = model.hf_tensors();
    for (((name, _, b), (_, _, n)), (_, _, s)) in wb.iter().zip(&wn).zip(&w0) {
        let e = rel_err(n, b);
        assert!(e <= 1e-5, "{name}: saved weights differ, relative {e:.3e}");
        if !is_key_bias(name) {
            let du_b: Vec<f32> = b.iter().zip(s).map(|(x, y)| x - y).collect();
            let du_n: Vec<f32> = n.iter().zip(s).map(|(x, y)| x - y).collect();
            let eu = rel_err(&du_n, &du_b);
            assert!(eu <= 1e-2, "{name}: the runs moved the weights differently, relative {eu:.3e}");
        }
    }
    // resuming a finished run has nothing left to do and reports the same run
    let again = finetune_native(model.clone(), &train, &dev, &cfg, native_dir.path(), tok.path(), true, &quiet).expect("resume");
    assert_eq!((again.steps, &again.dev_accuracy, again.best_epoch), (rn.steps, &rn.dev_accuracy, rn.best_epoch));
    // the burn trainer refuses the native checkpoint (and the native one burn's), naming the job
    let err = finetune(model.clone(), &train, &dev, &cfg, native_dir.path(), tok.path(), true, &quiet).expect_err("burn resume");
    assert!(format!("{err:#}").contains("job: finetune-native -> finetune"), "{err:#}");
    let err = finetune_native(model, &train, &dev, &cfg, burn_dir.path(), tok.path(), true, &quiet).expect_err("native resume");
    assert!(format!("{err:#}").contains("job: finetune -> finetune-native"), "{err:#}");
}

#[test]
fn backward_into_a_reused_buffer_equals_a_fresh_backward() {
    use sttabt::train::native::{backward, forward};
    let model = NativeBert::from_model(&tiny_model(2, 8, 3, true, 31)).expect("native");
    let first = random_batch(&[5, 3, 7], 40, 3, 32);
    let second = random_batch(&[4, 6], 40, 3, 33);
    let (b1, b2) = (
        batch_of(&model, &first.iter().collect::<Vec<_>>()).expect("b1"),
        batch_of(&model, &second.iter().collect::<Vec<_>>()).expect("b2"),
    );
    let fresh = backward::backward(&model, &b2, &forward::forward(&model, &b2));
    // a buffer holding the first batch's gradient (other embedding rows touched), then the second's
    let mut g = model.zeros_like();
    backward::backward_into(&model, &b1, &forward::forward(&model, &b1), &mut g);
    assert!(g.tensors() != fresh.tensors(), "the two batches should have different gradients");
    backward::backward_into(&model, &b2, &forward::forward(&model, &b2), &mut g);
    for ((name, a), (_, b)) in g.tensors().into_iter().zip(fresh.tensors()) {
        assert!(a == b, "{name}: the reused buffer's gradient differs from a fresh one");
    }
}

/// The native trainer computes BERT's embeddings and head; other families (position offset, no
/// token types, ReLU / `classifier.dense` heads) are refused by name instead of trained wrongly.
#[test]
fn native_trainer_refuses_other_families() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families");
    for (family, model_type) in [("distilbert", "distilbert"), ("roberta", "roberta"), ("xlm-roberta", "xlm-roberta")] {
        let m = Encoder::load(&root.join(family)).expect("fixture");
        let err = NativeBert::from_model(&m).expect_err("a non-BERT family must be refused").to_string();
        assert!(err.contains("BERT checkpoints only") && err.contains(model_type), "{family}: {err}");
    }
    let bert = Encoder::load(&root.join("bert")).expect("fixture");
    NativeBert::from_model(&bert).expect("BERT is supported");
}
