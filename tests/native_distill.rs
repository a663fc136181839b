//! Native ApproxNet distillation (src/train/native/distill.rs) against burn's `distill_loss` on
//! the same batch (issue 15, items 2-3): the four loss parts equal burn's, every gradient (the
//! ApproxNet's tensors and the transfer maps) satisfies ‖g_native − g_burn‖ / ‖g_burn‖ <= 1e-4 on
//! tiny random configs (ragged padded batches; with and without L_pred, pooler, teacher head)
//! and <= 1e-3 on an all-MiniLM-L6-v2 teacher (f = 4) with a real Rotten Tomatoes batch; a short
//! run of `distill_native` ends where `distill` ends (and leaves the parameters the loss does not
//! reach untouched, as burn's AdamW does).

mod common;

use burn::tensor::Device;
use common::{norm, random_inputs, rel_err, TempDir};
use sttabt::approx::{ApproxInit, ApproxNet};
use sttabt::train::distill::{distill, distill_loss, ApproxTrain, DistillConfig, KlTarget, LossParts};
use sttabt::train::finetune::{scalar, with_new_head};
use sttabt::train::model::{to_vec, Lin, TrainBert};
use sttabt::train::native::distill::{distill_native, loss_and_grads, NativeApprox};
use sttabt::train::native::params::train_bert_grads;
use sttabt::train::Progress;
use sttabt::{EncodedInput, Encoder};

/// A tiny random 2-layer BERT teacher with a `labels`-class head (none when 0)
/// ([`common::tiny_classifier`]).
fn tiny_teacher(heads: usize, head_size: usize, labels: usize, pooler: bool, seed: u64) -> Encoder {
    common::tiny_classifier(2, heads, head_size, 2 * heads * head_size, labels, pooler, seed)
}

fn burn_model(approx: &ApproxNet, device: &Device) -> ApproxTrain {
    ApproxTrain {
        net: TrainBert::from_native(&approx.model, device),
        transfer: approx.transfer.iter().map(|l| Lin::from_hf(&l.weight_hf(), l.bias(), l.d_in(), l.d_out(), device)).collect(),
    }
}

/// burn's loss parts and gradients (the ApproxNet's in `NativeBert::tensors` order, then the
/// transfer maps') of `approx` against `teacher` on `inputs`.
fn burn_grads(teacher: &Encoder, approx: &ApproxNet, inputs: &[EncodedInput], use_pred: bool) -> (f64, LossParts, Vec<(String, Vec<f32>)>) {
    let device = Device::flex().autodiff();
    let model = burn_model(approx, &device);
    let (loss, parts) = distill_loss(&model, &approx.model.config, teacher, inputs, use_pred, &device).expect("burn distill_loss");
    let lv = scalar(&loss);
    let grads = loss.backward();
    let mut out = train_bert_grads(&model.net, &grads);
    for (l, t) in model.transfer.iter().enumerate() {
        for (name, p) in [("weight", t.w.val().grad(&grads).map(to_vec)), ("bias", t.b.val().grad(&grads).map(to_vec))] {
            out.push((format!("transfer.{l}.{name}"), p.expect("every transfer map is reached")));
        }
    }
    (lv, parts, out)
}

/// The loss and its parts within `1e-5` relative of burn's, every gradient within `tol`
/// relative; tensors burn gives no gradient are zero natively and exactly those
/// [`NativeApprox::reached`] marks unreached.
fn check(teacher: &Encoder, approx: &ApproxNet, inputs: &[EncodedInput], use_pred: bool, tol: f64) {
    let (lb, pb, gb) = burn_grads(teacher, approx, inputs, use_pred);
    let native = NativeApprox::from_approx(approx).expect("native ApproxNet");
    let (ln, pn, gn) = loss_and_grads(&native, teacher, inputs, use_pred).expect("native loss");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1e-3);
    assert!(close(ln, lb), "loss: native {ln} vs burn {lb}");
    for (what, a, b) in [("att_kl", pn.att_kl, pb.att_kl), ("hid", pn.hid, pb.hid), ("emb", pn.emb, pb.emb), ("pred", pn.pred, pb.pred)] {
        assert!(close(a, b), "{what}: native {a} vs burn {b}");
    }
    assert!(pb.att_kl > 0.01 && pb.hid > 0.0 && pb.emb > 0.0, "the batch should give every part a value: {pb:?}");
    assert_eq!(pb.pred > 0.0, use_pred, "L_pred on exactly when asked: {pb:?}");
    let gn_t = gn.tensors();
    let reached = native.reached(use_pred);
    let mut worst = (0.0f64, String::new());
    let mut unreached = 0;
    for (i, (name, g_n)) in gn_t.iter().enumerate() {
        let Some((_, g_b)) = gb.iter().find(|(n, _)| n == name) else {
            // the placeholder head of an ApproxNet without a classifier
            assert!(native.placeholder_head && name.starts_with("classifier."), "{name}: no burn tensor");
            assert!(!reached[i] && norm(g_n) == 0.0, "{name}: the placeholder head has a gradient");
            continue;
        };
        if norm(g_b) == 0.0 {
            // burn gave no gradient: the loss does not reach it
            assert!(norm(g_n) == 0.0, "{name}: burn's gradient is zero, the native one is not");
            assert!(!reached[i], "{name}: not reached by burn's loss, but marked reached");
            unreached += 1;
            continue;
        }
        assert!(reached[i], "{name}: burn's loss reaches it, but it is marked unreached");
        if name.ends_with("attention.self.key.bias") {
            // zero in exact arithmetic (softmax ignores a per-query constant): rounding noise
            let scale = gb.iter().find(|(n, _)| *n == name.replace(".bias", ".weight")).map(|(_, g)| norm(g)).expect("key weight");
            assert!(norm(g_n) <= 1e-5 * scale && norm(g_b) <= 1e-5 * scale, "{name}: {} / {} vs {scale}", norm(g_n), norm(g_b));
            continue;
        }
        let e = rel_err(g_n, g_b);
        if e > worst.0 {
            worst = (e, name.clone());
        }
        assert!(e <= tol, "{name}: ‖g_native − g_burn‖ / ‖g_burn‖ = {e:.3e} > {tol:e} (‖g_burn‖ = {:.3e})", norm(g_b));
    }
    assert_eq!(unreached == 0, use_pred, "without L_pred the head and most of the last layer are unreached ({unreached})");
    eprintln!("loss {ln:.6} (burn {lb:.6}); worst gradient {:.2e} at {}; {unreached} tensors unreached", worst.0, worst.1);
}

#[test]
fn tiny_configs_loss_parts_and_gradients_match_burn() {
    // (heads, head size, labels, pooler, factor, init, use_pred): teacher hidden 16-32
    let cases = [
        (2usize, 8usize, 2usize, true, 2usize, ApproxInit::Interpolate, true),
        (2, 16, 3, false, 4, ApproxInit::Random, true),
        (4, 8, 2, true, 2, ApproxInit::Random, false),
        (2, 8, 0, true, 2, ApproxInit::Interpolate, false),
    ];
    for (i, &(heads, hs, labels, pooler, factor, init, use_pred)) in cases.iter().enumerate() {
        let teacher = tiny_teacher(heads, hs, labels, pooler, 40 + i as u64);
        let approx = ApproxNet::new(&teacher, factor, init, 50 + i as u64).expect("approx");
        // ragged: padding in every example but the longest, one 1-token example
        let inputs = random_inputs(&[5, 3, 9, 1, 7], 40, 60 + i as u64);
        eprintln!("case {i}: heads {heads}, head size {hs}, labels {labels}, pooler {pooler}, f {factor}, {init:?}, L_pred {use_pred}");
        check(&teacher, &approx, &inputs, use_pred, 1e-4);
    }
}

#[test]
fn minilm_rotten_tomatoes_gradients_match_burn() {
    let rt = sttabt::data::rt::load_rotten_tomatoes(&common::rotten_tomatoes_path(), 0).expect("Rotten Tomatoes");
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 128).expect("tokenizer");
    let (train, _) = sttabt::pipeline::tokenize(&tok, &rt.train, Some(8)).expect("tokenise");
    let inputs: Vec<EncodedInput> = train.into_iter().map(|x| x.input).collect();
    let lengths: Vec<usize> = inputs.iter().map(|x| x.len()).collect();
    assert!(lengths.iter().min() < lengths.iter().max(), "a ragged batch: {lengths:?}");
    let teacher = with_new_head(common::minilm().clone(), vec!["negative".into(), "positive".into()], 0);
    let approx = ApproxNet::new(&teacher, 4, ApproxInit::Interpolate, 0).expect("approx");
    check(&teacher, &approx, &inputs, true, 1e-3);
}

#[test]
fn distill_native_follows_the_burn_run() {
    let quiet = Progress { quiet: true };
    // with a head (L_pred on) and without (the unreached tensors must not move)
    for (labels, seed) in [(2usize, 71u64), (0, 72)] {
        let teacher = tiny_teacher(2, 8, labels, true, seed);
        let approx = ApproxNet::new(&teacher, 2, ApproxInit::Interpolate, 3).expect("approx");
        let lengths: Vec<usize> = (0..14).map(|i| 2 + (i * 5) % 9).collect();
        let train = random_inputs(&lengths, 40, seed + 1);
        let held = random_inputs(&[4, 6, 3, 8, 5, 2], 40, seed + 2);
        // 2 epochs of 4 batches (the last one short), warm-up and decay, clipping binding
        let cfg = DistillConfig { steps: 8, batch_size: 4, lr: 2e-3, warmup_frac: 0.25, grad_clip: 0.5, seed: 3, ..Default::default() };
        let (bd, nd) = (TempDir::new("di-burn"), TempDir::new("di-native"));
        let (ab, rb) = distill(&teacher, approx.clone(), &train, &held, &cfg, bd.path(), false, &quiet).expect("burn distill");
        let (an, rn) = distill_native(&teacher, approx.clone(), &train, &held, &cfg, nd.path(), false, &quiet).expect("native distill");
        assert_eq!((rn.steps, rb.steps), (8, 8));
        assert_eq!((rb.trainer.as_str(), rn.trainer.as_str()), ("burn", "native"));
        assert!((rn.after.attention_kl - rb.after.attention_kl).abs() <= 1e-4 * rb.after.attention_kl, "{:?} vs {:?}", rn.after, rb.after);
        assert!(rn.after.attention_kl < rn.before.attention_kl, "distillation should lower the KL: {:?} -> {:?}", rn.before, rn.after);
        let (wb, wn, w0) = (ab.model.hf_tensors(), an.model.hf_tensors(), approx.model.hf_tensors());
        assert_eq!(wb.len(), wn.len());
        let last = "encoder.layer.1.";
        for (((name, _, b), (name_n, _, n)), (_, _, s)) in wb.iter().zip(&wn).zip(&w0) {
            assert_eq!(name, name_n);
            if name.ends_with("attention.self.key.bias") {
                continue; // Adam normalises its rounding-noise gradient: not comparable
            }
            let e = rel_err(n, b);
            assert!(e <= 1e-4, "labels {labels}, {name}: weights differ, relative {e:.3e}");
            let unreached = labels == 0
                && (name.starts_with("pooler.") || (name.starts_with(last) && !name.contains(".query.") && !name.contains(".key.")));
            if unreached {
                assert!(b == s && n == s, "labels {labels}, {name}: not reached by the loss, but moved");
            } else {
                assert!(b != s, "labels {labels}, {name}: burn did not move it");
            }
        }
        for (l, (tb, tn)) in ab.transfer.iter().zip(&an.transfer).enumerate() {
            let e = rel_err(&tn.weight_hf(), &tb.weight_hf());
            assert!(e <= 1e-4, "transfer {l}: weights differ, relative {e:.3e}");
        }
        // the saved ApproxNet loads and is the returned one
        let loaded = ApproxNet::load(nd.path(), &teacher.config).expect("load the native result");
        assert_eq!(loaded.model.hf_tensors(), wn);
        // resuming the finished run has nothing left to do and gives the same ApproxNet
        let (again, r2) = distill_native(&teacher, approx.clone(), &train, &held, &cfg, nd.path(), true, &quiet).expect("resume");
        assert_eq!((r2.steps, again.model.hf_tensors()), (8, wn));
        // burn refuses the native checkpoint, naming the job
        let err = distill(&teacher, approx, &train, &held, &cfg, nd.path(), true, &quiet).expect_err("burn resume of native");
        assert!(format!("{err:#}").contains("job: distill-native -> distill"), "{err:#}");
    }
}

#[test]
fn target_kl_stops_early_and_records_the_curve() {
    let quiet = Progress { quiet: true };
    let teacher = tiny_teacher(2, 8, 2, true, 81);
    let approx = ApproxNet::new(&teacher, 2, ApproxInit::Random, 4).expect("approx");
    let lengths: Vec<usize> = (0..24).map(|i| 3 + (i * 7) % 10).collect();
    let train = random_inputs(&lengths, 40, 82);
    let held = random_inputs(&[4, 6, 3, 8, 5, 9], 40, 83);
    let base = DistillConfig { steps: 60, batch_size: 4, lr: 3e-3, seed: 5, checkpoint_every: 7, ..Default::default() };
    // a fixed-steps run gives the curve to choose a target from
    let probe = DistillConfig { target_kl: Some(KlTarget { kl: 1e-9, every: 5 }), ..base.clone() };
    let dir = TempDir::new("kl-probe");
    let (_, rp) = distill_native(&teacher, approx.clone(), &train, &held, &probe, dir.path(), false, &quiet).expect("probe");
    assert_eq!((rp.steps, rp.target_reached), (60, Some(false)));
    let steps: Vec<usize> = rp.kl_curve.iter().map(|p| p.step).collect();
    assert_eq!(steps, (0..=60).step_by(5).collect::<Vec<_>>(), "evaluated at step 0 and every 5 steps");
    assert_eq!(rp.kl_curve[0].attention_kl, rp.before.attention_kl);
    let first = rp.kl_curve[0].attention_kl;
    let at20 = rp.kl_curve[4].attention_kl;
    assert!(at20 < first, "the KL should fall in 20 steps: {:?}", rp.kl_curve);
    // a target halfway between the first new low from step 20 on and the lowest value before
    // it stops there (a margin for the two trainers' rounding)
    let kls: Vec<f64> = rp.kl_curve.iter().map(|p| p.attention_kl).collect();
    let k = (4..kls.len()).find(|&k| kls[k] < kls[1..k].iter().copied().fold(f64::INFINITY, f64::min)).expect("a new low after step 20");
    let target = 0.5 * (kls[k] + kls[1..k].iter().copied().fold(f64::INFINITY, f64::min));
    let stop_at = rp.kl_curve[k].step;
    assert!(stop_at < 60, "the target should stop the run early: {kls:?}");
    let cfg = DistillConfig { target_kl: Some(KlTarget { kl: target, every: 5 }), ..base.clone() };
    for native in [true, false] {
        let dir = TempDir::new("kl-stop");
        let run = |resume: bool| {
            if native {
                distill_native(&teacher, approx.clone(), &train, &held, &cfg, dir.path(), resume, &quiet)
            } else {
                distill(&teacher, approx.clone(), &train, &held, &cfg, dir.path(), resume, &quiet)
            }
        };
        let (_, r) = run(false).expect("run with a KL target");
        assert_eq!((r.steps, r.target_reached), (stop_at, Some(true)), "native {native}");
        assert!(r.kl_curve.last().expect("curve").attention_kl <= target);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("distill.json")).expect("distill.json")).expect("json");
        assert_eq!(json["report"]["kl_curve"].as_array().map(|a| a.len()), Some(stop_at / 5 + 1));
        assert_eq!(json["config"]["target_kl"]["kl"].as_f64(), Some(target));
        // a stopped run resumes to the same end: nothing left to do
        let (_, r2) = run(true).expect("resume a stopped run");
        assert_eq!((r2.steps, r2.target_reached, r2.kl_curve.len()), (stop_at, Some(true), r.kl_curve.len()));
    }
    // a run without a target keeps the run key of before (no `target_kl` field)
    let key = serde_json::to_value(&base).expect("json");
    assert!(key.get("target_kl").is_none(), "{key}");
    // bad targets are clear errors
    for (t, field) in [(KlTarget { kl: 0.0, every: 5 }, "target_kl.kl"), (KlTarget { kl: 0.2, every: 0 }, "target_kl.every")] {
        let e = DistillConfig { target_kl: Some(t), ..base.clone() }.validate().expect_err("bad target").to_string();
        assert!(e.contains(field), "{e}");
    }
}

/// The exact teacher cache (src/train/native/teacher_cache.rs): a batch's targets are each
/// example's alone, assembled, whether cached or not; and the budget changes no number: runs
/// with the cache off, holding about half the examples, and holding all of them give
/// bit-identical ApproxNets and losses after the same steps (3 epochs, so later epochs read
/// cached targets back).
#[test]
fn teacher_cache_changes_no_number() {
    use sttabt::train::native::distill::{distill_native_cached, teacher_targets};
    use sttabt::train::native::teacher_cache::{example_targets, TeacherCache};
    let quiet = Progress { quiet: true };
    let teacher = tiny_teacher(2, 8, 2, true, 91);
    let approx = ApproxNet::new(&teacher, 2, ApproxInit::Interpolate, 5).expect("approx");
    let lengths: Vec<usize> = (0..14).map(|i| 2 + (i * 5) % 13).collect();
    let train = random_inputs(&lengths, 40, 92);
    let held = random_inputs(&[4, 6, 3, 8], 40, 93);

    // assembled per-example targets are the batch's targets, bit for bit, cached or not
    let each: Vec<_> = train.iter().map(|x| example_targets(&teacher, x).expect("example targets")).collect();
    let bytes: Vec<usize> = each.iter().map(|e| e.bytes()).collect();
    let half: usize = bytes[..7].iter().sum();
    let idx = [3usize, 0, 11, 7, 5];
    let batch: Vec<EncodedInput> = idx.iter().map(|&i| train[i].clone()).collect();
    let direct = teacher_targets(&teacher, &batch).expect("targets");
    assert_eq!(direct.probs.len(), 2);
    assert_eq!(direct.probs[1].len(), idx.iter().map(|&i| 2 * lengths[i] * lengths[i]).sum::<usize>());
    assert_eq!(direct.hidden[0].len(), idx.iter().map(|&i| lengths[i] * 16).sum::<usize>());
    assert_eq!(direct.logits.as_ref().map(Vec::len), Some(idx.len() * 2));
    let ent: f64 = idx.iter().map(|&i| each[i].entropy).sum();
    assert_eq!(direct.entropy_sum, ent);
    assert!(ent < 0.0, "Σ t ln t of attention rows is negative: {ent}");
    let mut cache = TeacherCache::new(train.len(), bytes[3] + bytes[0]);
    for round in 0..3 {
        let t = cache.targets(&teacher, &train, &idx).expect("cached targets");
        assert_eq!((&t.probs, &t.hidden, &t.logits, t.entropy_sum), (&direct.probs, &direct.hidden, &direct.logits, direct.entropy_sum));
        // examples 3 and 0 fit the budget and are read back from the second round on
        assert_eq!((cache.len(), cache.used_bytes(), cache.hits), (2, bytes[3] + bytes[0], 2 * round), "round {round}");
    }
    assert_eq!(cache.misses, 5 + 2 * 3);
    let err = cache.targets(&teacher, &train, &[1, 14]).expect_err("index beyond the data").to_string();
    assert!(err.contains("example index 14") && err.contains("14 training examples"), "{err}");

    // three budgets, one run each: bit-identical results
    let cfg = DistillConfig { steps: 12, batch_size: 4, lr: 2e-3, warmup_frac: 0.25, seed: 6, checkpoint_every: 5, ..Default::default() };
    let mut results = Vec::new();
    for budget in [0, half, usize::MAX] {
        let dir = TempDir::new("teacher-cache");
        let (a, r) =
            distill_native_cached(&teacher, approx.clone(), &train, &held, &cfg, dir.path(), false, &quiet, budget).expect("distill");
        assert_eq!(r.steps, 12);
        let transfer: Vec<Vec<f32>> = a.transfer.iter().map(|t| t.weight_hf()).collect();
        results.push((a.model.hf_tensors(), transfer, r.final_loss, r.after.attention_kl));
    }
    assert!(results[0] == results[1], "a half-full cache changed the ApproxNet or the loss");
    assert!(results[0] == results[2], "a full cache changed the ApproxNet or the loss");
    assert!(results[0].0 != approx.model.hf_tensors(), "the run should move the ApproxNet");
}
