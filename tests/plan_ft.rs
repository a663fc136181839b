//! Plan-aware fine-tuning (ALGORITHM.md section 8; src/train/native/plan_ft.rs): the loss and its
//! gradient against finite differences and closed forms; a short real run (all-MiniLM-L6-v2 on
//! Rotten Tomatoes sentences with an ApproxNet) whose loss is finite and falls and whose saved
//! model loads and classifies as reported; the CLI's bad-input errors.

mod common;

use std::path::Path;
use std::process::Command;

use common::{random_tensors, tiny_config, write_checkpoint, TempDir};
use sttabt::approx::{ApproxInit, ApproxNet};
use sttabt::train::finetune::{accuracy, with_new_head, FinetuneConfig};
use sttabt::train::native::plan_ft::{abt_accuracy, ce_kd_loss, finetune_plan_aware, PlanFtConfig, PlanFtReport};
use sttabt::train::Progress;
use sttabt::Encoder;

#[test]
fn ce_kd_loss_and_gradient() {
    let logits = [0.3f32, -1.2, 0.8, 2.0, 0.1, -0.4];
    let dense = [1.0f32, 0.0, -0.5, 0.5, 0.7, -1.0];
    let labels = [2usize, 0];
    let (alpha, t) = (0.7, 2.0);
    let total = |z: &[f32]| {
        let (ce, kl, _) = ce_kd_loss(z, &dense, &labels, alpha, t);
        ce + alpha * kl
    };
    let (ce, kl, g) = ce_kd_loss(&logits, &dense, &labels, alpha, t);
    // closed forms: CE of example 0 (label 2), and KL >= 0, zero against itself
    let lse0 = [0.3f64, -1.2, 0.8].iter().map(|v| v.exp()).sum::<f64>().ln();
    let lse1 = [2.0f64, 0.1, -0.4].iter().map(|v| v.exp()).sum::<f64>().ln();
    assert!((ce - ((lse0 - 0.8) + (lse1 - 2.0)) / 2.0).abs() < 1e-6, "ce {ce}");
    assert!(kl > 0.0);
    assert!(ce_kd_loss(&dense, &dense, &labels, alpha, t).1.abs() < 1e-12);
    // gradient against central differences
    for i in 0..logits.len() {
        let (mut up, mut down) = (logits, logits);
        up[i] += 1e-3;
        down[i] -= 1e-3;
        let fd = (total(&up) - total(&down)) / 2e-3;
        assert!((fd - g[i] as f64).abs() < 1e-5, "logit {i}: analytic {} vs finite difference {fd}", g[i]);
    }
    // alpha 0 is plain cross-entropy and ignores the dense logits
    let (ce0, _, g0) = ce_kd_loss(&logits, &[f32::NAN; 6], &labels, 0.0, t);
    assert_eq!(ce0, ce);
    assert!(g0.iter().all(|v| v.is_finite()));
}

#[test]
fn hidden_distill_loss_closed_form_and_gradient() {
    use sttabt::train::native::masks::TokenMasks;
    use sttabt::train::native::plan_ft::hidden_distill_loss;
    // 3 rows of d = 2; hidden states 0..=2; layers 1..3 distilled; layer 1 keeps rows 0 and 2,
    // layer 2 keeps row 0 only
    let d = 2;
    let student = vec![vec![9.0f32; 6], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![0.5, -0.5, 0.0, 0.0, 0.0, 0.0]];
    let dense = vec![vec![0.0f32; 6], vec![1.5, 2.0, 0.0, 0.0, 4.0, 6.0], vec![0.0, 0.5, 7.0, 7.0, 7.0, 7.0]];
    let masks = TokenMasks { m: vec![vec![1.0; 3], vec![1.0, 0.0, 1.0], vec![1.0, 0.0, 0.0], vec![1.0, 0.0, 0.0]] };
    let (loss, grads) = hidden_distill_loss(&student, &dense, &masks, d, 1..3);
    // layer 1: (0.25 + 0 + 1 + 0) / (2 rows * 2 units); layer 2: (0.25 + 1) / (1 * 2); mean of the two
    let want = (1.25 / 4.0 + 1.25 / 2.0) / 2.0;
    assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");
    assert!(grads[0].is_none());
    let total = |st: &[Vec<f32>]| hidden_distill_loss(st, &dense, &masks, d, 1..3).0;
    for j in 1..3 {
        let g = grads[j].as_ref().expect("a gradient for a distilled layer");
        for i in 0..6 {
            let (mut up, mut down) = (student.clone(), student.clone());
            // a step of 2^-10 moves these f32 values exactly
            let h = 1.0 / 1024.0;
            up[j][i] += h;
            down[j][i] -= h;
            let fd = (total(&up) - total(&down)) / (2.0 * f64::from(h));
            assert!((fd - f64::from(g[i])).abs() < 1e-6, "hidden {j} value {i}: {} vs {fd}", g[i]);
        }
    }
    // rows not kept get no gradient (row 1 of layer 1, rows 1-2 of layer 2)
    assert_eq!(&grads[1].as_ref().unwrap()[2..4], &[0.0, 0.0]);
    assert!(grads[2].as_ref().unwrap()[2..].iter().all(|&v| v == 0.0));
}

/// The hidden-state term through a whole plan-aware step: 0 against the model itself under a
/// plan that keeps every row; otherwise its parameter gradient (the step's with β = 1 minus
/// β = 0) matches central differences of β·h along a random direction.
#[test]
fn plan_aware_step_hidden_term_gradient() {
    use sttabt::model::EncodedInput;
    use sttabt::plan::TokenPlan;
    use sttabt::train::finetune::LabeledInput;
    use sttabt::train::native::plan_ft::plan_aware_step;
    use sttabt::train::native::NativeBert;
    let model = NativeBert::from_model(&common::tiny_classifier(3, 2, 4, 16, 2, true, 11)).expect("tiny");
    let frozen = NativeBert::from_model(&common::tiny_classifier(3, 2, 4, 16, 2, true, 12)).expect("tiny frozen");
    let input = |ids: &[u32]| EncodedInput { ids: ids.to_vec(), type_ids: vec![0; ids.len()], patches: Vec::new() };
    let data =
        [LabeledInput { input: input(&[1, 5, 9, 3, 7, 2, 8, 4]), label: 1 }, LabeledInput { input: input(&[1, 6, 2, 2, 9, 3]), label: 0 }];
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let pruned = vec![
        TokenPlan::from_inputs(8, vec![(0..8).collect(), vec![0, 1, 3, 5, 6], vec![0, 3, 5]], vec![0]).expect("plan"),
        TokenPlan::from_inputs(6, vec![(0..6).collect(), vec![0, 2, 4], vec![0, 4]], vec![0]).expect("plan"),
    ];
    let full = vec![TokenPlan::dense_top(8, 3, &[0]), TokenPlan::dense_top(6, 3, &[0])];
    let dense_logits = [0.2f32, -0.1, 0.4, 0.3];
    let step = |m: &NativeBert, plans: &[TokenPlan], f: Option<(&NativeBert, f64)>| {
        let mut g = m.zeros_like();
        let l = plan_aware_step(m, &refs, plans, &dense_logits, 0.5, 1.0, f, &mut g).expect("step");
        (l, g)
    };
    // against itself with every row kept, the term is (numerically) zero
    let (same, _) = step(&model, &full, Some((&model, 1.0)));
    assert!(same.hidden < 1e-10, "{same:?}");
    let (l1, g1) = step(&model, &pruned, Some((&frozen, 1.0)));
    let (l0, g0) = step(&model, &pruned, None);
    assert!(l1.hidden > 1e-3, "{l1:?}");
    assert_eq!((l1.ce, l1.kl, l0.hidden), (l0.ce, l0.kl, 0.0));
    assert!((l1.loss - (l1.ce + 0.5 * l1.kl + l1.hidden)).abs() < 1e-9);
    // directional derivative of h along a random direction v over every parameter
    let mut rng = fastrand::Rng::with_seed(3);
    let dirs: Vec<Vec<f32>> = model.tensors().iter().map(|(_, t)| t.iter().map(|_| rng.f32() - 0.5).collect()).collect();
    let analytic: f64 = g1
        .tensors()
        .iter()
        .zip(g0.tensors())
        .zip(&dirs)
        .map(|(((_, a), (_, b)), v)| a.iter().zip(b).zip(v).map(|((x, y), z)| f64::from(x - y) * f64::from(*z)).sum::<f64>())
        .sum();
    let h_at = |eps: f32| {
        let mut m = model.clone();
        for (t, v) in m.tensors_mut().into_iter().zip(&dirs) {
            t.iter_mut().zip(v).for_each(|(x, z)| *x += eps * z);
        }
        step(&m, &pruned, Some((&frozen, 1.0))).0.hidden
    };
    let eps = 1e-3;
    let fd = (h_at(eps) - h_at(-eps)) / (2.0 * f64::from(eps));
    eprintln!("hidden term {:.5}; directional derivative analytic {analytic:.6}, finite difference {fd:.6}", l1.hidden);
    assert!(analytic.abs() > 1e-3, "a direction the term does not move along tests nothing: {analytic}");
    assert!((fd - analytic).abs() <= 1e-2 * analytic.abs(), "directional derivative: analytic {analytic} vs finite difference {fd}");
}

#[test]
fn config_validation_names_the_field() {
    let ok = PlanFtConfig {
        finetune: FinetuneConfig::default(),
        keep: 0.5,
        keep_range: None,
        kd_alpha: 0.5,
        kd_temperature: 1.0,
        hidden_weight: 0.0,
    };
    ok.validate().expect("valid");
    for (cfg, field) in [
        (PlanFtConfig { keep: 0.0, ..ok.clone() }, "keep"),
        (PlanFtConfig { keep: 1.5, ..ok.clone() }, "keep"),
        (PlanFtConfig { keep_range: Some((0.6, 0.4)), ..ok.clone() }, "keep_range"),
        (PlanFtConfig { kd_alpha: -0.1, ..ok.clone() }, "kd_alpha"),
        (PlanFtConfig { kd_temperature: 0.0, ..ok.clone() }, "kd_temperature"),
        (PlanFtConfig { hidden_weight: -1.0, ..ok.clone() }, "hidden_weight"),
        (PlanFtConfig { hidden_weight: f64::NAN, ..ok.clone() }, "hidden_weight"),
    ] {
        let err = cfg.validate().expect_err(field).to_string();
        assert!(err.contains(&format!("PlanFtConfig.{field} must be")), "{err}");
    }
    // per-step keep draws stay in the range, differ between steps, and repeat for a step
    let r = PlanFtConfig { keep_range: Some((0.3, 0.7)), ..ok };
    let ks: Vec<f64> = (0..50).map(|s| r.keep_at(s)).collect();
    assert!(ks.iter().all(|k| (0.3..=0.7).contains(k)));
    assert!(ks.iter().any(|&k| k < 0.4) && ks.iter().any(|&k| k > 0.6), "{ks:?}");
    assert_eq!(r.keep_at(17), ks[17]);
}

#[test]
fn minilm_plan_aware_steps_lower_the_loss_and_the_model_classifies() {
    let t0 = std::time::Instant::now();
    let rt = sttabt::data::rt::load_rotten_tomatoes(&common::rotten_tomatoes_path(), 0).expect("Rotten Tomatoes");
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 64).expect("tokenizer");
    let (train, _) = sttabt::pipeline::tokenize(&tok, &rt.train, Some(32)).expect("tokenise");
    let (dev, _) = sttabt::pipeline::tokenize(&tok, &rt.dev, Some(24)).expect("tokenise");
    let teacher = with_new_head(common::minilm().clone(), vec!["negative".into(), "positive".into()], 0);
    let approx = ApproxNet::new(&teacher, 4, ApproxInit::Interpolate, 0).expect("ApproxNet");
    let cfg = PlanFtConfig {
        finetune: FinetuneConfig { epochs: 3, batch_size: 8, lr: 3e-4, seed: 1, checkpoint_every: 100, ..Default::default() },
        keep: 0.5,
        keep_range: Some((0.4, 0.6)),
        kd_alpha: 0.5,
        kd_temperature: 1.0,
        hidden_weight: 0.0,
    };
    let out = TempDir::new("plan-ft-minilm");
    let q = Progress { quiet: true };
    let r =
        finetune_plan_aware(&teacher, &approx, &train, &dev, &cfg, out.path(), &common::minilm_dir(), false, &q).expect("plan-aware run");
    assert_eq!(r.steps, 12);
    let losses: Vec<f64> = r.epoch_loss.iter().map(|l| l.loss).collect();
    eprintln!("epoch losses {losses:?}, abt dev {:?}, dense dev {:?}", r.abt_dev_accuracy, r.dense_dev_accuracy);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    assert!(losses[2] < 0.9 * losses[0], "the loss should fall: {losses:?}");
    for l in &r.epoch_loss {
        assert!(l.kl >= 0.0 && l.ce > 0.0 && (l.loss - (l.ce + 0.5 * l.kl)).abs() < 1e-9, "{l:?}");
        assert!(l.retention > 0.2 && l.retention < 0.8, "retention of plans at k in [0.4, 0.6]: {}", l.retention);
    }
    // the saved model is the best epoch's: it loads and classifies as the report says
    let saved = Encoder::load(out.path()).expect("load the saved teacher");
    assert_eq!(saved.config.labels, vec!["negative".to_string(), "positive".to_string()]);
    let best = r.best_epoch - 1;
    assert_eq!(r.best_abt_dev_accuracy, r.abt_dev_accuracy.iter().copied().fold(f64::MIN, f64::max));
    assert_eq!(accuracy(&saved, &dev, 64).expect("dense accuracy"), r.dense_dev_accuracy[best]);
    let (abt, ret) = abt_accuracy(&saved, &approx.model, &dev, 0.5).expect("ABT accuracy");
    assert_eq!((abt, ret), (r.abt_dev_accuracy[best], r.abt_dev_retention[best]));
    let preds = sttabt::train::finetune::predict(&saved, dev.iter().map(|x| &x.input), 64).expect("predict");
    assert_eq!(preds.len(), dev.len());
    // it moved away from the starting teacher
    let start = sttabt::train::native::NativeBert::from_model(&teacher).expect("start");
    let end = sttabt::train::native::NativeBert::from_model(&saved).expect("end");
    assert!(start.tensors().iter().zip(end.tensors()).any(|((_, a), (_, b))| *a != b));
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("plan-aware MiniLM run: {secs:.1} s");
}

/// A tiny teacher with MiniLM's vocabulary and tokenizer and a two-class head, its ApproxNet,
/// and a small train/dev CSV pair.
fn cli_fixture(root: &Path) {
    let vocab = common::minilm().config.vocab_size;
    let cfg = tiny_config(2, 2, 8, 32, vocab, 64);
    let raw = root.join("raw");
    write_checkpoint(&raw, &cfg, &random_tensors(&cfg, 5, 1.0));
    let m = with_new_head(Encoder::load(&raw).expect("tiny"), vec!["negative".into(), "positive".into()], 1);
    sttabt::train::save_hf_checkpoint(&m, &root.join("teacher"), Some(&common::minilm_dir())).expect("save teacher");
    ApproxNet::new(&m, 4, ApproxInit::Interpolate, 0).expect("approx").save(&root.join("approx")).expect("save approx");
    let rows = |n: usize| {
        let mut s = String::from("text,label\n");
        for i in 0..n {
            s.push_str(&format!(
                "{} film number {i},{}\n",
                if i % 2 == 0 { "a good" } else { "a bad" },
                if i % 2 == 0 { "positive" } else { "negative" }
            ));
        }
        s
    };
    std::fs::write(root.join("train.csv"), rows(12)).expect("train.csv");
    std::fs::write(root.join("dev.csv"), rows(6)).expect("dev.csv");
    std::fs::create_dir_all(root.join("corrupt")).expect("dir");
    std::fs::write(root.join("corrupt/config.json"), "{ not json").expect("corrupt config");
}

fn sttabt_err(root: &Path, extra: &[&str]) -> String {
    let p = |f: &str| root.join(f).display().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_sttabt"))
        .args(["--threads", "1", "finetune", "--model", &p("teacher"), "--train", &p("train.csv"), "--dev", &p("dev.csv")])
        .args(["--out", &p("out"), "--quiet", "--batch-size", "4"])
        .args(extra)
        .output()
        .expect("run sttabt");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{extra:?} succeeded: {err}");
    assert!(!err.contains("panicked"), "{extra:?} panicked: {err}");
    err
}

#[test]
fn cli_plan_aware_runs_and_bad_input_is_a_clear_error() {
    let root = TempDir::new("plan-ft-cli");
    cli_fixture(root.path());
    let approx = root.path().join("approx").display().to_string();
    let corrupt = root.path().join("corrupt").display().to_string();
    let missing = root.path().join("missing").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--plan-aware", "--keep", "0.5"], "needs --approx"),
        (vec!["--plan-aware", "--approx", &approx], "needs --keep"),
        (vec!["--plan-aware", "--approx", &approx, "--keep", "0"], "--keep must be in (0, 1], got 0"),
        (vec!["--plan-aware", "--approx", &approx, "--keep", "1.2"], "--keep must be in (0, 1]"),
        (vec!["--plan-aware", "--approx", &approx, "--keep", "0.5", "--kd-alpha", "-1"], "--kd-alpha must be"),
        (vec!["--plan-aware", "--approx", &approx, "--keep", "0.5", "--kd-temperature", "0"], "--kd-temperature must be"),
        (vec!["--plan-aware", "--approx", &approx, "--keep", "0.5", "--keep-range", "0.7,0.2"], "expected `a,b` with 0 < a <= b <= 1"),
        (vec!["--plan-aware", "--approx", &approx, "--keep", "0.5", "--trainer", "burn"], "native trainer only"),
        (vec!["--plan-aware", "--approx", &missing, "--keep", "0.5"], "loading ApproxNet"),
        (vec!["--plan-aware", "--approx", &corrupt, "--keep", "0.5"], "loading ApproxNet"),
        (vec!["--keep", "0.5"], "--plan-aware"),
    ];
    for (args, want) in &cases {
        let err = sttabt_err(root.path(), args);
        assert!(err.contains(want), "{args:?}: expected {want:?} in: {err}");
    }
    // a teacher without a head is refused (fine-tune it first)
    let p = |f: &str| root.path().join(f).display().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_sttabt"))
        .args(["--threads", "1", "finetune", "--model", &p("raw"), "--train", &p("train.csv"), "--dev", &p("dev.csv")])
        .args(["--out", &p("out-raw"), "--quiet", "--plan-aware", "--approx", &approx, "--keep", "0.5"])
        .output()
        .expect("run sttabt");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("fine-tune it first"), "{err}");
    // and a good run writes the teacher and its report
    let o = Command::new(env!("CARGO_BIN_EXE_sttabt"))
        .args(["--threads", "1", "finetune", "--model", &p("teacher"), "--train", &p("train.csv"), "--dev", &p("dev.csv")])
        .args(["--out", &p("out-ok"), "--quiet", "--batch-size", "4", "--plan-aware", "--approx", &approx, "--keep", "0.5"])
        .output()
        .expect("run sttabt");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("out-ok/finetune.json")).expect("finetune.json")).expect("json");
    assert_eq!(json["plan_aware"], true);
    assert_eq!(json["config"]["keep"], 0.5);
    assert_eq!(json["config"]["kd_alpha"], 0.5);
    assert_eq!(json["report"]["steps"], 3);
    assert_eq!(json["report"]["dense_dev_accuracy"].as_array().map(|a| a.len()), Some(1));
    assert_eq!(json["dev_examples"], 6, "all dev examples without --dev-limit");
    Encoder::load(&root.path().join("out-ok")).expect("the saved teacher loads");
}

/// `--dev-limit N`: the per-epoch dev evaluation (plain and plan-aware fine-tuning) runs on the
/// first N dev examples only, finetune.json records N, and each reported accuracy is a count
/// over N (here 5 of the 6 dev rows: a multiple of 1/5, not of 1/6, unless 0 or 1).
#[test]
fn cli_dev_limit_bounds_the_dev_evaluation() {
    let root = TempDir::new("plan-ft-dev-limit");
    cli_fixture(root.path());
    let p = |f: &str| root.path().join(f).display().to_string();
    let over_five = |v: &serde_json::Value, what: &str| {
        let a = v.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {v}"));
        assert!(((a * 5.0) - (a * 5.0).round()).abs() < 1e-9, "{what}: {a} is not a count over 5 dev examples");
    };
    for (tag, extra) in [("plain", vec![]), ("plan-aware", vec!["--plan-aware", "--approx", "APPROX", "--keep", "0.5"])] {
        let out = p(&format!("out-{tag}"));
        let approx = p("approx");
        let extra: Vec<&str> = extra.iter().map(|a| if *a == "APPROX" { approx.as_str() } else { a }).collect();
        let o = Command::new(env!("CARGO_BIN_EXE_sttabt"))
            .args(["--threads", "1", "finetune", "--model", &p("teacher"), "--train", &p("train.csv"), "--dev", &p("dev.csv")])
            .args(["--out", &out, "--quiet", "--batch-size", "4", "--train-limit", "4", "--dev-limit", "5", "--epochs", "2"])
            .args(&extra)
            .output()
            .expect("run sttabt");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{tag}: {err}");
        // --quiet: the split sizes are not printed; finetune.json records them
        assert!(!err.contains("dev examples"), "{tag}: --quiet printed the split sizes: {err}");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(Path::new(&out).join("finetune.json")).expect("finetune.json")).expect("json");
        assert_eq!(json["dev_examples"], 5, "{tag}");
        assert_eq!(json["train_examples"], 4, "{tag}");
        let r = &json["report"];
        let per_epoch = if tag == "plain" { &r["dev_accuracy"] } else { &r["abt_dev_accuracy"] };
        assert_eq!(per_epoch.as_array().map(|a| a.len()), Some(2), "{tag}: {r}");
        for (i, a) in per_epoch.as_array().expect("array").iter().enumerate() {
            over_five(a, &format!("{tag} epoch {}", i + 1));
        }
        if tag == "plan-aware" {
            over_five(&r["start_abt_dev_accuracy"], "start ABT");
            over_five(&r["start_dense_dev_accuracy"], "start dense");
            r["dense_dev_accuracy"].as_array().expect("dense per epoch").iter().for_each(|a| over_five(a, "dense"));
        }
    }
}

/// The counted evaluations behind the dev bars give the values of the plain ones and advance
/// their bar by one per example (hidden bars, so nothing is drawn).
#[test]
fn counted_dev_evaluations_match_and_count_every_example() {
    use sttabt::train::finetune::{accuracy_counted, predict, LabeledInput};
    use sttabt::train::native::plan_ft::abt_accuracy_counted;
    let m = common::tiny_classifier(2, 2, 8, 32, 3, true, 7);
    let approx = ApproxNet::new(&m, 2, ApproxInit::Interpolate, 0).expect("ApproxNet");
    let inputs = common::random_inputs(&[5, 9, 2, 14, 7, 3, 11], 40, 8);
    let dev: Vec<LabeledInput> = inputs.into_iter().enumerate().map(|(i, input)| LabeledInput { input, label: i % 3 }).collect();
    // reference: argmax predictions one example at a time
    let preds: Vec<usize> = dev.iter().map(|d| predict(&m, std::iter::once(&d.input), 1).expect("predict")[0]).collect();
    let want = preds.iter().zip(&dev).filter(|(p, d)| **p == d.label).count() as f64 / dev.len() as f64;
    for batch in [1, 3, 64] {
        let bar = indicatif::ProgressBar::hidden();
        assert_eq!(accuracy_counted(&m, &dev, batch, &bar).expect("accuracy"), want, "batch {batch}");
        assert_eq!(accuracy(&m, &dev, batch).expect("accuracy"), want, "batch {batch}");
        assert_eq!(bar.position(), dev.len() as u64, "batch {batch}");
    }
    let bar = indicatif::ProgressBar::hidden();
    let counted = abt_accuracy_counted(&m, &approx.model, &dev, 0.5, &bar).expect("ABT accuracy");
    assert_eq!(counted, abt_accuracy(&m, &approx.model, &dev, 0.5).expect("ABT accuracy"));
    assert!(counted.1 > 0.0 && counted.1 < 1.0, "retention at k = 0.5: {}", counted.1);
    assert_eq!(bar.position(), dev.len() as u64);
}

/// The dense-logit cache of plan-aware fine-tuning (src/train/native/teacher_cache.rs): a
/// batch's cached logits are, bit for bit, each example's logits from a run of the teacher on
/// that example alone (what [`plan_targets`]' `dense_logits_each` computes), in batch order;
/// each example is computed once; mismatched or out-of-range indices are clear errors.
#[test]
fn dense_logit_cache_is_exact() {
    use sttabt::train::finetune::dense_logits;
    use sttabt::train::native::teacher_cache::{dense_logits_each, DenseLogitsCache};
    let teacher = common::tiny_classifier(2, 2, 8, 32, 3, true, 41);
    let inputs = common::random_inputs(&[5, 9, 2, 14, 7, 3], 40, 42);
    let mut cache = DenseLogitsCache::new(inputs.len());
    let idx = [4usize, 1, 3];
    let refs: Vec<_> = idx.iter().map(|&i| &inputs[i]).collect();
    let batch: Vec<_> = idx.iter().map(|&i| inputs[i].clone()).collect();
    let each = dense_logits_each(&teacher, &batch).expect("dense logits");
    let alone: Vec<f32> = refs.iter().flat_map(|x| dense_logits(&teacher, std::slice::from_ref(*x)).expect("one")[0].clone()).collect();
    assert_eq!(each, alone);
    assert_eq!(each.len(), 3 * 3);
    for round in 0..2 {
        assert_eq!(cache.logits(&teacher, &idx, &refs).expect("cached logits"), each, "round {round}");
    }
    assert_eq!((cache.misses, cache.hits), (3, 3));
    // a batch sharing examples computes only the new one
    let idx2 = [3usize, 0];
    let got = cache.logits(&teacher, &idx2, &[&inputs[3], &inputs[0]]).expect("logits");
    assert_eq!(got, dense_logits_each(&teacher, &[inputs[3].clone(), inputs[0].clone()]).expect("dense"));
    assert_eq!((cache.misses, cache.hits), (4, 4));
    let e = cache.logits(&teacher, &[0, 1], &[&inputs[0]]).expect_err("lengths").to_string();
    assert!(e.contains("2 indices for 1 inputs"), "{e}");
    let e = cache.logits(&teacher, &[6], &[&inputs[0]]).expect_err("index").to_string();
    assert!(e.contains("example index 6") && e.contains("6 examples"), "{e}");
}

#[test]
fn a_best_epoch_below_the_start_is_flagged() {
    let report = |start: f64, best: f64| PlanFtReport {
        steps: 10,
        epochs: 2,
        abt_dev_accuracy: vec![best - 0.01, best],
        abt_dev_retention: vec![0.4, 0.4],
        dense_dev_accuracy: vec![0.8, 0.8],
        start_abt_dev_accuracy: start,
        start_dense_dev_accuracy: 0.84,
        best_abt_dev_accuracy: best,
        best_epoch: 2,
        epoch_loss: Vec::new(),
        seconds: 1.0,
        output_dir: "out".into(),
    };
    let w = report(0.8102, 0.7950).below_start().expect("below the start is flagged");
    assert!(w.contains("79.50% against 81.02%") && w.contains("epoch 2") && w.contains("starting --model"), "{w}");
    assert_eq!(report(0.8102, 0.8345).below_start(), None);
    assert_eq!(report(0.8102, 0.8102).below_start(), None, "equal is not below");
}
