//! Feed-forward planners (ALGORITHM.md section 6): manual top-k and LTP. Keeping everything
//! reproduces dense; plans are valid; LTP's hard soft-mask forward equals the feed-forward
//! executor; a larger LTP λ prunes more.

mod common;
use common::*;

use burn::tensor::{Device, Tensor, TensorData};
use sttabt::infer::{classify, Mode};
use sttabt::planners::ltp::LtpPlanner;
use sttabt::planners::topk::{calibrate_k_min, mean_schedule_retention, schedule_retention, ManualTopK, UnreachableRetention};
use sttabt::train::finetune::{with_new_head, LabeledInput};
use sttabt::train::ltp::{ltp_forward, train_ltp, LtpConfig, LtpTrain};
use sttabt::train::model::{Batch, TrainBert};
use sttabt::{EncodedInput, RunOptions, TokenPlan};

fn sentences() -> Vec<EncodedInput> {
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&minilm_dir(), 128).unwrap();
    ["A gripping, funny and deeply humane film.", "The plot drags and the jokes fall flat, again and again.", "ok", ""]
        .iter()
        .map(|t| tok.encode(t, None).unwrap().input)
        .collect()
}

fn with_head() -> sttabt::Encoder {
    with_new_head(minilm().clone(), vec!["negative".into(), "positive".into()], 1)
}

/// Manual top-k with k_min = 1 and LTP with thresholds below every score keep every token: the
/// CLS logits equal the dense run within 1e-5.
#[test]
fn keep_all_reproduces_dense_logits() {
    let m = with_head();
    let xs = sentences();
    let dense = classify(&m, None, &xs, &Mode::Dense).unwrap();
    let l = m.layers.len();
    for mode in [Mode::TopK { k_min: 1.0 }, Mode::Ltp { lambda: 0.0, theta: vec![-1.0; l - 1], score: Default::default() }] {
        let got = classify(&m, None, &xs, &mode).unwrap();
        for (d, g) in dense.iter().zip(&got) {
            let err = max_abs_diff(&d.logits, &g.logits);
            assert!(err < 1e-5, "{}: logits differ by {err}", mode.label());
            assert_eq!(g.plan.inputs(l - 1).len(), g.plan.n(), "{}: all tokens kept", mode.label());
        }
    }
}

/// Feed-forward plans are valid and nested, keep CLS, and shrink with the schedule.
#[test]
fn feed_forward_plans_are_valid() {
    let m = with_head();
    let xs = sentences();
    let l = m.layers.len();
    let hook = ManualTopK { k_min: 0.2, layers: l };
    let (_, plans) = m.run_feed_forward(&xs, &hook, &[0], RunOptions::default()).unwrap();
    for (p, x) in plans.iter().zip(&xs) {
        let re = TokenPlan::new(p.n(), p.input_sets().to_vec(), p.output_sets().to_vec()).unwrap();
        assert_eq!(&re, p);
        assert_eq!(p.n(), x.len());
        assert!((1..l).all(|i| p.inputs(i).len() <= p.inputs(i - 1).len()));
    }
    // a threshold above every possible score keeps only CLS after layer 1
    let ltp = LtpPlanner { theta: vec![2.0; l - 1], score: Default::default() };
    let (_, plans) = m.run_feed_forward(&xs, &ltp, &[0], RunOptions::default()).unwrap();
    for p in &plans {
        assert_eq!(p.inputs(1), &[0]);
    }
}

/// k_min calibration hits a reachable target and the schedule's retention is monotone in k_min.
#[test]
fn topk_calibration() {
    let lengths = [10usize, 20, 30, 40];
    let target = 0.6;
    let k = calibrate_k_min(&lengths, 6, target).expect("0.6 is reachable");
    let mean = lengths.iter().map(|&n| schedule_retention(n, 6, k)).sum::<f64>() / 4.0;
    assert!(mean <= target + 1e-9 && mean > target - 0.05, "k_min {k} gives {mean}");
    assert!(schedule_retention(30, 6, 0.2) < schedule_retention(30, 6, 0.6));
}

/// A retention below the schedule's floor (k_min = 0: every token in layer 1, one in layer L) is
/// reported unreachable, not answered with a k_min = 0 point at a much higher retention.
#[test]
fn topk_calibration_reports_unreachable_targets() {
    let lengths = [10usize, 20, 30, 40];
    let floor = mean_schedule_retention(&lengths, 6, 0.0);
    // n = 10: |I_l| = 10, 8, 6, 4, 2, 1 -> (31 + 1) / 70
    assert!((schedule_retention(10, 6, 0.0) - 32.0 / 70.0).abs() < 1e-12);
    assert!(floor > 0.4 && floor < 0.5, "floor {floor}");
    let e = calibrate_k_min(&lengths, 6, 0.2).unwrap_err();
    assert_eq!(e, UnreachableRetention { target: 0.2, min: floor });
    let msg = e.to_string();
    assert!(msg.contains("cannot reach retention 0.200") && msg.contains("unreachable") && msg.contains(&format!("{floor:.3}")), "{msg}");
    assert!(calibrate_k_min(&lengths, 6, f64::NAN).is_err());
    // the floor itself is reachable, at k_min near 0
    let k = calibrate_k_min(&lengths, 6, floor).expect("the floor is reachable");
    assert!((mean_schedule_retention(&lengths, 6, k) - floor).abs() < 1e-12 && k < 0.05, "k {k}");
}

/// LTP's soft-mask forward with hard masks gives the CLS of the feed-forward executor.
#[test]
fn ltp_hard_forward_equals_executor() {
    let cfg = tiny_config(3, 2, 8, 24, 40, 16);
    let teacher = with_new_head(random_model(&cfg, 21, 0.3), vec!["a".into(), "b".into()], 2);
    let device = Device::flex();
    let theta = vec![0.12f32, 0.15];
    let model =
        LtpTrain { teacher: TrainBert::from_native(&teacher, &device), phi: burn::module::Param::from_tensor(Tensor::zeros([2], &device)) };
    let mut rng = sttabt::data::split::SplitMix64::new(5);
    for _ in 0..6 {
        let n = 4 + rng.next_below(8) as usize;
        let x = EncodedInput { ids: (0..n).map(|_| 1 + rng.next_below(39) as u32).collect(), type_ids: vec![0; n], patches: Vec::new() };
        let batch = Batch::from_inputs(&[&x], &device);
        let th: Tensor<1> = Tensor::from_data(TensorData::new(theta.clone(), [2]), &device);
        let (cls, _) = ltp_forward(&model, &teacher.config, &batch, th, (0.01, Default::default()), true);
        let soft_cls: Vec<f32> = cls.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let hook = LtpPlanner { theta: theta.iter().map(|&t| t as f64).collect(), score: Default::default() };
        let (outs, plan) = teacher.run_feed_forward(std::slice::from_ref(&x), &hook, &[0], RunOptions::default()).unwrap();
        let err = max_abs_diff(&soft_cls, outs[0].cls());
        assert!(err < 1e-4, "n = {n}, plan {:?}: {err}", plan[0].input_sets());
    }
}

/// A larger λ ends with a lower hard retention (tiny model, real training loop).
#[test]
fn larger_lambda_prunes_more() {
    let cfg = tiny_config(3, 2, 8, 24, 40, 16);
    let teacher = with_new_head(random_model(&cfg, 8, 0.3), vec!["a".into(), "b".into()], 3);
    let mut rng = sttabt::data::split::SplitMix64::new(9);
    let data: Vec<LabeledInput> = (0..64)
        .map(|_| {
            let n = 4 + rng.next_below(10) as usize;
            let ids: Vec<u32> = (0..n).map(|j| if j == 0 { 1 } else { 2 + rng.next_below(38) as u32 }).collect();
            LabeledInput { label: (ids[1] % 2) as usize, input: EncodedInput { type_ids: vec![0; n], ids, patches: Vec::new() } }
        })
        .collect();
    let mut ends = Vec::new();
    for lambda in [0.0, 5.0] {
        let tmp = TempDir::new("ltp");
        let r = train_ltp(
            &teacher,
            &data,
            &LtpConfig { lambda, steps: 40, lr: 1e-3, theta_lr: 0.1, ..Default::default() },
            tmp.path(),
            false,
            &sttabt::train::Progress { quiet: true },
        )
        .unwrap();
        eprintln!("λ = {lambda}: hard retention {:.3} -> {:.3}, θ {:?}", r.start_retention, r.end_retention, r.theta);
        assert!(r.theta.iter().all(|t| t.is_finite()));
        let loaded = sttabt::train::ltp::LtpModel::load(tmp.path()).unwrap();
        assert_eq!(loaded.theta.len(), 2);
        assert_eq!(loaded.score, sttabt::planners::ltp::LtpScore::LengthScaled, "new runs threshold length-scaled scores");
        // a run saved before the score was recorded loads as LTP's mean received attention
        let path = tmp.path().join("ltp.json");
        let mut meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        meta["config"].as_object_mut().unwrap().remove("score");
        std::fs::write(&path, meta.to_string()).unwrap();
        assert_eq!(sttabt::train::ltp::LtpModel::load(tmp.path()).unwrap().score, sttabt::planners::ltp::LtpScore::MeanReceived);
        ends.push(r.end_retention);
    }
    assert!(ends[1] < ends[0], "λ = 5 should prune more than λ = 0: {ends:?}");
}
