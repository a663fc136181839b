//! The native concrete-mask step (src/train/native/concrete.rs, concrete_masks.rs; ALGORITHM.md
//! section 4) against burn's `train::concrete::concrete_loss` + autodiff on the same batch
//! (issue 15 items 2-3): the loss, its parts, the masks' retention, every gradient of the teacher
//! and of the ApproxNet and dL/dθ within 1e-4 relative on tiny random configs and 1e-3 on
//! all-MiniLM-L6-v2 with a real Rotten Tomatoes batch, soft and hard (straight-through) phase,
//! with and without logit distillation; a float64 finite-difference check of the mask
//! generator's dL/dθ (and dL/dS) to 1e-3; a short native run ends where burn's ends.

mod common;

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{norm, random_batch, rel_err};
use sttabt::approx::{ApproxInit, ApproxNet};
use sttabt::train::concrete::{concrete_loss, ConcreteConfig, ConcreteTrain};
use sttabt::train::finetune::{dense_logits, scalar, with_new_head, LabeledInput};
use sttabt::train::model::{to_vec, Batch, TrainBert};
use sttabt::train::native::concrete::{batches, concrete_backward, concrete_forward, NativeConcrete};
use sttabt::train::native::concrete_masks as cm;
use sttabt::train::native::params::train_bert_grads;
use sttabt::{EncodedInput, Encoder};

/// burn's loss, its parts (task, soft r, hard retention), the teacher's and the ApproxNet's
/// gradients (`NativeBert::tensors` order) and dL/dθ, as `train_concrete` computes them.
#[allow(clippy::type_complexity)]
fn burn_run(
    teacher: &Encoder,
    approx: &ApproxNet,
    data: &[LabeledInput],
    theta: &[f32],
    cfg: &ConcreteConfig,
    hard: bool,
    frozen: Option<&[f32]>,
) -> (f64, [f64; 3], Vec<(String, Vec<f32>)>, Vec<(String, Vec<f32>)>, Vec<f32>) {
    let device = Device::flex().autodiff();
    let phi: Vec<f32> = theta.iter().map(|t| t / 10.0).collect();
    let model = ConcreteTrain {
        teacher: TrainBert::from_native(teacher, &device),
        approx: TrainBert::from_native(&approx.model, &device),
        phi: Param::from_tensor(Tensor::from_data(TensorData::new(phi, [theta.len()]), &device)),
    };
    let refs: Vec<&EncodedInput> = data.iter().map(|x| &x.input).collect();
    let batch = Batch::from_inputs(&refs, &device);
    let labels: Vec<i64> = data.iter().map(|x| x.label as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [data.len()]), &device);
    let fl = frozen.map(|f| Tensor::from_data(TensorData::new(f.to_vec(), [data.len(), f.len() / data.len()]), &device));
    let (loss, parts) = concrete_loss(&model, &teacher.config, &approx.model.config, &batch, targets, cfg, hard, fl);
    let lv = scalar(&loss);
    let grads = loss.backward();
    let dphi = model.phi.val().grad(&grads).map(to_vec).expect("φ gradient");
    let dtheta: Vec<f32> = dphi.iter().map(|g| g / 10.0).collect();
    (
        lv,
        [parts.task, parts.soft_retention, parts.hard_retention],
        train_bert_grads(&model.teacher, &grads),
        train_bert_grads(&model.approx, &grads),
        dtheta,
    )
}

/// Compare one family of gradients (teacher or ApproxNet) tensor by tensor; returns the worst.
fn compare(what: &str, native: &[(String, &[f32])], burn: &[(String, Vec<f32>)], reached: Option<&[bool]>, tol: f64) -> (f64, String) {
    let mut worst = (0.0f64, String::new());
    let largest = burn.iter().map(|(_, g)| norm(g)).fold(0.0, f64::max);
    for (i, (name, g_n)) in native.iter().enumerate() {
        let Some((_, g_b)) = burn.iter().find(|(n, _)| n == name) else {
            // the placeholder head of an ApproxNet without a classifier
            assert!(name.starts_with("classifier.") && norm(g_n) == 0.0, "{what} {name}: no burn tensor");
            continue;
        };
        if let Some(r) = reached {
            assert_eq!(norm(g_b) > 0.0, r[i], "{what} {name}: burn's gradient norm {} vs reached {}", norm(g_b), r[i]);
        }
        if norm(g_b) == 0.0 {
            assert!(norm(g_n) == 0.0, "{what} {name}: burn's gradient is zero, the native one is not");
            continue;
        }
        if name.ends_with("attention.self.key.bias") || norm(g_b) <= 1e-6 * largest {
            // zero in exact arithmetic (softmax ignores a per-query constant), or vanishing:
            // rounding noise on both sides
            assert!(norm(g_n) <= 1e-5 * largest && norm(g_b) <= 1e-5 * largest, "{what} {name}: {} / {}", norm(g_n), norm(g_b));
            continue;
        }
        let e = rel_err(g_n, g_b);
        if e > worst.0 {
            worst = (e, format!("{what} {name}"));
        }
        assert!(e <= tol, "{what} {name}: ‖g_native − g_burn‖ / ‖g_burn‖ = {e:.3e} > {tol:e}");
    }
    worst
}

/// Native and burn agree on the loss (1e-5), r and the hard retention, every gradient and dL/dθ
/// (`tol`); the masks are neither all kept nor all pruned.
fn check(teacher: &Encoder, approx: &ApproxNet, data: &[LabeledInput], theta: &[f32], cfg: &ConcreteConfig, hard: bool, tol: f64) {
    let frozen: Option<Vec<f32>> = (cfg.distill_weight > 0.0).then(|| {
        let inputs: Vec<EncodedInput> = data.iter().map(|x| x.input.clone()).collect();
        dense_logits(teacher, &inputs).expect("frozen logits").into_iter().flatten().collect()
    });
    let (lb, [task_b, r_b, hr_b], gt_b, ga_b, dt_b) = burn_run(teacher, approx, data, theta, cfg, hard, frozen.as_deref());
    let mut model = NativeConcrete::new(teacher, approx, 0.0).expect("native models");
    model.phi = theta.iter().map(|t| t / 10.0).collect();
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let (tb, ab) = batches(&model, &refs).expect("batches");
    let fw = sttabt::kernels::in_pool(|| concrete_forward(&model, &tb, &ab, cfg, hard, frozen.as_deref())).expect("native forward");
    let mut g = model.zeros_like();
    sttabt::kernels::in_pool(|| concrete_backward(&model, &tb, &ab, &fw, cfg, frozen.as_deref(), &mut g));
    let p = fw.parts;
    assert!((fw.loss - lb).abs() <= 1e-5 * lb.abs().max(1.0), "loss: native {} vs burn {lb}", fw.loss);
    assert!((p.task - task_b).abs() <= 1e-5 * task_b.abs().max(1.0), "task: native {} vs burn {task_b}", p.task);
    assert!((p.soft_retention - r_b).abs() <= 1e-5, "r: native {} vs burn {r_b}", p.soft_retention);
    assert!((p.hard_retention - hr_b).abs() <= 1e-9, "hard retention: native {} vs burn {hr_b}", p.hard_retention);
    assert!(hr_b > 1.0 / (teacher.layers.len() + 1) as f64 + 1e-3 && hr_b < 0.999, "masks all one way: hard retention {hr_b}");
    assert_eq!(p.distill > 0.0, cfg.distill_weight > 0.0, "distillation term on exactly when asked: {p:?}");
    let reached = model.reached();
    let nt = model.teacher.tensors().len();
    let w1 = compare("teacher", &g.teacher.tensors(), &gt_b, None, tol);
    let w2 = compare("approx", &g.approx.net.tensors(), &ga_b, Some(&reached[nt..nt + g.approx.net.tensors().len()]), tol);
    assert!(norm(&dt_b) > 0.0, "burn's dL/dθ is zero");
    let dt_n: Vec<f32> = g.phi.iter().map(|v| v / 10.0).collect();
    let e = rel_err(&dt_n, &dt_b);
    assert!(e <= tol, "dL/dθ: relative error {e:.3e} > {tol:e} (native {dt_n:?}, burn {dt_b:?})");
    eprintln!(
        "hard {hard}, distill {}: loss {:.6} (burn {lb:.6}); r {r_b:.4}, hard retention {hr_b:.4}; worst {:.2e} at {} / {:.2e} at {}; θ {e:.2e}",
        cfg.distill_weight, fw.loss, w1.0, w1.1, w2.0, w2.1
    );
}

fn configs() -> [ConcreteConfig; 2] {
    let base = ConcreteConfig { theta0: -0.5, retention_weight: 0.5, anchor_weight: 0.01, ..Default::default() };
    [base.clone(), ConcreteConfig { distill_weight: 0.7, ..base }]
}

#[test]
fn tiny_configs_concrete_gradients_match_burn() {
    // (layers, heads, head size, labels, pooler, factor, init)
    let cases = [
        (3usize, 2usize, 8usize, 2usize, true, 2usize, ApproxInit::Interpolate),
        (2, 4, 8, 3, false, 2, ApproxInit::Random),
        (4, 2, 16, 2, true, 4, ApproxInit::Random),
    ];
    for (i, &(layers, heads, hs, labels, pooler, factor, init)) in cases.iter().enumerate() {
        let teacher = common::tiny_classifier(layers, heads, hs, 2 * heads * hs, labels, pooler, 70 + i as u64);
        let approx = ApproxNet::new(&teacher, factor, init, 80 + i as u64).expect("approx");
        let data = random_batch(&[5, 3, 9, 2, 7], 40, labels, 90 + i as u64);
        let theta: Vec<f32> = (0..layers).map(|l| -0.4 + 0.3 * l as f32).collect();
        for cfg in configs() {
            for hard in [false, true] {
                check(&teacher, &approx, &data, &theta, &cfg, hard, 1e-4);
            }
        }
    }
}

#[test]
fn minilm_rotten_tomatoes_concrete_gradients_match_burn() {
    let rt = sttabt::data::rt::load_rotten_tomatoes(&common::rotten_tomatoes_path(), 0).expect("Rotten Tomatoes");
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 128).expect("tokenizer");
    let (train, _) = sttabt::pipeline::tokenize(&tok, &rt.train, Some(6)).expect("tokenise");
    let teacher = with_new_head(common::minilm().clone(), vec!["negative".into(), "positive".into()], 0);
    let approx = ApproxNet::new(&teacher, 4, ApproxInit::Interpolate, 3).expect("approx");
    let theta = [-1.0f32, -0.5, 0.0, 0.5, 0.0, -0.5];
    for cfg in configs() {
        for hard in [false, true] {
            check(&teacher, &approx, &train, &theta, &cfg, hard, 1e-3);
        }
    }
}

/// Random f64 scores `[H, n, n]` per layer, packed for `lengths`.
fn random_scores(layers: usize, heads: usize, lengths: &[usize], seed: u64) -> Vec<Vec<f64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let len: usize = lengths.iter().map(|n| heads * n * n).sum();
    (0..layers).map(|_| (0..len).map(|_| rng.f64() * 4.0 - 2.0).collect()).collect()
}

/// `L(θ, S) = Σ_l <G_l, m^l> + a Σ_l (θ_l − θ_0)² + w (r − σ(θ_0))²` in f64 (a fixed linear
/// stand-in `G` for the teacher's loss, whose dL/dm the burn comparison covers).
fn f64_loss(scores: &[Vec<f64>], lengths: &[usize], heads: usize, theta: &[f64], gm: &[Vec<f64>], cfg: &ConcreteConfig) -> f64 {
    let bm = cm::batch_forward(scores, lengths, heads, theta, 1);
    let lin: f64 = bm.m.iter().zip(gm).map(|(m, g)| m.iter().zip(g).map(|(a, b)| a * b).sum::<f64>()).sum();
    let anchor = cfg.anchor_weight * theta.iter().map(|t| (t - cfg.theta0).powi(2)).sum::<f64>();
    let target = 1.0 / (1.0 + (-cfg.theta0).exp());
    lin + anchor + cfg.retention_weight * (cm::soft_retention(&bm.m, lengths) - target).powi(2)
}

/// Issue 15 item 3: the mask generator's analytic dL/dθ (and dL/dS along a random direction)
/// equals central finite differences in f64 to 1e-3 relative, on tiny configs.
#[test]
fn f64_finite_differences_match_dtheta() {
    let cfg = ConcreteConfig { theta0: -0.5, retention_weight: 0.5, anchor_weight: 0.01, ..Default::default() };
    for (case, &(layers, heads)) in [(3usize, 2usize), (4, 3)].iter().enumerate() {
        let lengths = [5usize, 3, 8];
        let rows: usize = lengths.iter().sum();
        let scores = random_scores(layers, heads, &lengths, 11 + case as u64);
        let mut rng = fastrand::Rng::with_seed(21 + case as u64);
        let gm: Vec<Vec<f64>> = (0..=layers).map(|l| (0..rows).map(|_| if l < layers { rng.f64() - 0.5 } else { 0.0 }).collect()).collect();
        let theta: Vec<f64> = (0..layers).map(|l| -0.6 + 0.35 * l as f64).collect();
        // analytic
        let bm = cm::batch_forward(&scores, &lengths, heads, &theta, 1);
        let mut dm = gm.clone();
        cm::retention_term(&bm.m, &lengths, 1.0 / (1.0 + (-cfg.theta0).exp()), cfg.retention_weight, &mut dm);
        let (dscores, mut dtheta) = cm::batch_backward(&bm, &dm, &lengths, heads);
        for (d, t) in dtheta.iter_mut().zip(&theta) {
            *d += 2.0 * cfg.anchor_weight * (t - cfg.theta0);
        }
        // numeric
        let h = 1e-6;
        let loss = |s: &[Vec<f64>], t: &[f64]| f64_loss(s, &lengths, heads, t, &gm, &cfg);
        let numeric: Vec<f64> = (0..layers)
            .map(|l| {
                let (mut up, mut dn) = (theta.clone(), theta.clone());
                up[l] += h;
                dn[l] -= h;
                (loss(&scores, &up) - loss(&scores, &dn)) / (2.0 * h)
            })
            .collect();
        let diff: f64 = dtheta.iter().zip(&numeric).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        let scale: f64 = numeric.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(scale > 1e-3, "dL/dθ is too small to test: {numeric:?}");
        assert!(diff <= 1e-3 * scale, "dL/dθ: analytic {dtheta:?} vs finite differences {numeric:?}");
        for (l, (a, b)) in dtheta.iter().zip(&numeric).enumerate() {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1e-2 * scale), "layer {l}: analytic {a} vs numeric {b}");
        }
        // dL/dS along a random direction v: <dL/dS, v> vs (L(S + hv) − L(S − hv)) / 2h
        let v: Vec<Vec<f64>> = scores.iter().map(|s| s.iter().map(|_| rng.f64() - 0.5).collect()).collect();
        let shift = |sign: f64| -> Vec<Vec<f64>> {
            scores.iter().zip(&v).map(|(s, d)| s.iter().zip(d).map(|(a, b)| a + sign * h * b).collect()).collect()
        };
        let num_dir = (loss(&shift(1.0), &theta) - loss(&shift(-1.0), &theta)) / (2.0 * h);
        let ana_dir: f64 = dscores.iter().zip(&v).map(|(g, d)| g.iter().zip(d).map(|(a, b)| a * b).sum::<f64>()).sum();
        assert!(num_dir.abs() > 1e-4, "directional derivative too small to test: {num_dir}");
        assert!((ana_dir - num_dir).abs() <= 1e-3 * num_dir.abs(), "dL/dS·v: analytic {ana_dir} vs numeric {num_dir}");
        eprintln!("case {case}: dL/dθ {dtheta:?} vs {numeric:?}; dL/dS·v {ana_dir:.6e} vs {num_dir:.6e}");
    }
}

/// Bad frozen logits are a clear error.
#[test]
fn wrong_frozen_logits_are_a_clear_error() {
    let teacher = common::tiny_classifier(2, 2, 8, 32, 2, true, 5);
    let approx = ApproxNet::new(&teacher, 2, ApproxInit::Random, 6).expect("approx");
    let data = random_batch(&[4, 3], 40, 2, 7);
    let model = NativeConcrete::new(&teacher, &approx, 0.0).expect("native models");
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let (tb, ab) = batches(&model, &refs).expect("batches");
    let cfg = ConcreteConfig { distill_weight: 1.0, ..Default::default() };
    let err = concrete_forward(&model, &tb, &ab, &cfg, false, Some(&[0.0; 3])).expect_err("3 logits for 2 x 2").to_string();
    assert!(err.contains("3 frozen logits") && err.contains("2 examples x 2 classes"), "{err}");
}

/// `‖x − y‖ <= 1e-3 ‖y − start‖` per tensor (all but the key biases, whose gradient is rounding
/// noise that Adam's normalisation blows up to steps of size lr in either trainer).
fn assert_same_weights(
    what: &str,
    x: &[(String, Vec<usize>, Vec<f32>)],
    y: &[(String, Vec<usize>, Vec<f32>)],
    start: &[(String, Vec<usize>, Vec<f32>)],
) {
    assert_eq!(x.len(), y.len(), "{what}: tensor count");
    for (((name, _, a), (_, _, b)), (_, _, s)) in x.iter().zip(y).zip(start) {
        if name.ends_with("attention.self.key.bias") {
            continue;
        }
        let moved: Vec<f32> = b.iter().zip(s).map(|(p, q)| p - q).collect();
        let diff: Vec<f32> = a.iter().zip(b).map(|(p, q)| p - q).collect();
        assert!(
            norm(&diff) <= 1e-3 * norm(&moved).max(1e-6),
            "{what} {name}: native − burn {:.3e} vs the update {:.3e}",
            norm(&diff),
            norm(&moved)
        );
    }
}

/// Whole runs: burn's `train_concrete` and `train_concrete_native` on the same tiny teacher,
/// ApproxNet and data (12 steps, the last 4 hard, distillation on) end with the same
/// thresholds, report windows, teacher and ApproxNet weights up to float rounding.
#[test]
fn native_concrete_run_equals_burn_run() {
    use sttabt::train::concrete::{train_concrete, ConcreteModel};
    use sttabt::train::native::concrete::train_concrete_native;
    let teacher = common::tiny_classifier(3, 2, 8, 32, 2, true, 17);
    let approx = ApproxNet::new(&teacher, 2, ApproxInit::Interpolate, 18).expect("approx");
    let data = random_batch(&[5, 3, 9, 4, 7, 6, 2, 8, 5, 6], 40, 2, 19);
    let cfg = ConcreteConfig {
        theta0: -0.5,
        steps: 12,
        batch_size: 4,
        lr: 1e-3,
        hard_frac: 0.34,
        retention_weight: 0.5,
        distill_weight: 0.5,
        checkpoint_every: 100,
        ..Default::default()
    };
    let (a, b) = (common::TempDir::new("concrete-burn"), common::TempDir::new("concrete-native"));
    let quiet = sttabt::train::Progress { quiet: true };
    let rb = train_concrete(&teacher, &approx, &data, &cfg, a.path(), false, &quiet).expect("burn concrete run");
    let rn = train_concrete_native(&teacher, &approx, &data, &cfg, b.path(), false, &quiet).expect("native concrete run");
    assert!(rb.theta.iter().all(|t| (t - cfg.theta0).abs() > 1e-3), "θ moved: {:?}", rb.theta);
    for (x, y) in rn.theta.iter().zip(&rb.theta) {
        assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "θ: native {:?} vs burn {:?}", rn.theta, rb.theta);
    }
    for (p, q) in [(rn.start, rb.start), (rn.end, rb.end)] {
        assert!((p.soft_retention - q.soft_retention).abs() < 1e-5 && (p.hard_retention - q.hard_retention).abs() < 1e-9, "{p:?} vs {q:?}");
        assert!((p.task - q.task).abs() < 1e-4 && (p.distill - q.distill).abs() < 1e-5 && p.distill > 0.0, "{p:?} vs {q:?}");
    }
    let (mb, mn) = (ConcreteModel::load(a.path()).expect("burn run"), ConcreteModel::load(b.path()).expect("native run"));
    assert_same_weights("teacher", &mn.teacher.hf_tensors(), &mb.teacher.hf_tensors(), &teacher.hf_tensors());
    assert_same_weights("approx", &mn.approx.model.hf_tensors(), &mb.approx.model.hf_tensors(), &approx.model.hf_tensors());
    let jn: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.path().join("concrete.json")).expect("concrete.json")).expect("json");
    assert_eq!(jn["trainer"], "native");
    assert_eq!(jn["config"]["steps"], 12);
}

/// The f32 row kernels of the concrete masks' standardised-score CDF (vectorised `Φ` and `exp`
/// approximations) against the generic f64 forms (`erf`, `exp` of libm) on a 131-value row (not a
/// multiple of the vector width) whose z-scores pass ±4.5: z bit-identical to the f32 division,
/// Φ within 3e-7, the backward within 1e-5 relative.
#[test]
fn f32_cdf_row_kernels_match_the_f64_forms() {
    use sttabt::train::native::real::Real;
    let n = 131;
    let row: Vec<f32> = (0..n).map(|j| ((j * 37 % 131) as f32 / 13.0 - 5.0) * 1.3).collect();
    let (mean, a) = (0.2f32, 1.3f32);
    let u0: Vec<f32> = (0..n).map(|j| j as f32 * 0.01).collect();
    let (mut z32, mut u32_) = (vec![0.0f32; n], u0.clone());
    f32::standardize_cdf_add(&row, mean, a, &mut z32, &mut u32_);
    let row64: Vec<f64> = row.iter().map(|&v| v as f64).collect();
    let (mut z64, mut u64_) = (vec![0.0f64; n], u0.iter().map(|&v| v as f64).collect::<Vec<_>>());
    f64::standardize_cdf_add(&row64, mean as f64, a as f64, &mut z64, &mut u64_);
    assert!(z32.iter().any(|&z| z > 4.5) && z32.iter().any(|&z| z < -4.5), "z-scores should reach ±4.5: {z32:?}");
    for j in 0..n {
        assert_eq!(z32[j], (row[j] - mean) / a, "z[{j}]");
        assert!((u32_[j] as f64 - u64_[j]).abs() <= 3e-7, "u[{j}]: f32 {} vs f64 {}", u32_[j], u64_[j]);
    }
    let du: Vec<f32> = (0..n).map(|j| ((j * 17 % 23) as f32 - 11.0) * 0.05).collect();
    let du64: Vec<f64> = du.iter().map(|&v| v as f64).collect();
    let zf64: Vec<f64> = z32.iter().map(|&v| v as f64).collect();
    let (mut dz32, mut dz64) = (vec![0.0f32; n], vec![0.0f64; n]);
    let s32 = f32::cdf_backward_row(&du, &z32, 12.0, a, &mut dz32);
    let s64 = f64::cdf_backward_row(&du64, &zf64, 12.0, a as f64, &mut dz64);
    let scale = dz64.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for j in 0..n {
        assert!((dz32[j] as f64 - dz64[j]).abs() <= 1e-5 * scale, "dz[{j}]: f32 {} vs f64 {}", dz32[j], dz64[j]);
    }
    assert!(s64.abs() > 1e-3 && (s32 as f64 - s64).abs() <= 1e-5 * s64.abs().max(scale), "Σ: f32 {s32} vs f64 {s64}");
}
