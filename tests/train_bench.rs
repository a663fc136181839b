//! The training bench (src/train/bench.rs, issue 15 item 1) on a tiny random model: the FLOP
//! count by hand, the length-128-style inputs, and a full run of every job and both trainers
//! whose rows are consistent (stages sum to the step time, examples/s and GFLOP/s follow) and
//! whose native and burn rows (every job) reach the same loss after the same steps.

mod common;

use std::path::Path;

use sttabt::model::checkpoint::TensorStore;
use sttabt::train::bench::{bench_train, forward_flops, long_inputs, Job, TrainBenchConfig, Trainer, Workload};
use sttabt::train::finetune::LabeledInput;
use sttabt::train::Progress;
use sttabt::{EncodedInput, Encoder};

fn tiny_classifier() -> Encoder {
    let mut cfg = common::tiny_config(2, 2, 8, 32, 40, 16);
    cfg.labels = vec!["a".into(), "b".into()];
    let mut tensors = common::random_tensors(&cfg, 1, 1.0);
    let mut rng = fastrand::Rng::with_seed(2);
    tensors.push(("classifier.weight".into(), vec![2, 16], (0..32).map(|_| rng.f32() - 0.5).collect()));
    tensors.push(("classifier.bias".into(), vec![2], vec![0.1, -0.1]));
    Encoder::from_store(cfg, &TensorStore::from_tensors(Path::new("<tiny>"), tensors)).expect("tiny model")
}

/// `[CLS]=1 ... [SEP]=2` sentences of the given inner lengths.
fn sentences(inner: &[usize]) -> Vec<LabeledInput> {
    inner
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut ids = vec![1u32];
            ids.extend((0..n).map(|j| 3 + ((i * 7 + j) % 30) as u32));
            ids.push(2);
            LabeledInput { input: EncodedInput { type_ids: vec![0; ids.len()], ids, patches: Vec::new() }, label: i % 2 }
        })
        .collect()
}

#[test]
fn forward_flops_by_hand() {
    let m = tiny_classifier();
    // d 16, d_ff 32, 2 layers, B 2, T 5, 2 labels:
    // per layer 2·10·(4·256 + 2·16·32) + 2·2·2·25·16 = 40960 + 3200; head 2·2·(256 + 32)
    assert_eq!(forward_flops(&m.config, 2, 5, 2), 2.0 * (40960.0 + 3200.0) + 1152.0);
    assert_eq!(forward_flops(&m.config, 2, 5, 0), 2.0 * (40960.0 + 3200.0));
}

#[test]
fn long_inputs_run_sentences_together() {
    let s = sentences(&[3, 2, 4, 5]);
    let long = long_inputs(&s, 2, 8).expect("long inputs");
    // [CLS] + 6 inner tokens + [SEP]: sentence 0's 3, sentence 1's 2 and the first of sentence 2;
    // the next input starts at sentence 3 (5 tokens) and wraps around to sentence 0
    assert_eq!(long[0].input.ids, vec![1, 3, 4, 5, 10, 11, 17, 2]);
    assert_eq!(long[1].input.ids, vec![1, 24, 25, 26, 27, 28, 3, 2]);
    assert!(long.iter().all(|x| x.input.len() == 8 && x.input.type_ids == vec![0; 8]));
    assert_eq!((long[0].label, long[1].label), (0, 1));
    assert!(long_inputs(&s, 1, 2).expect_err("too short").to_string().contains("at least 3"));
}

#[test]
fn every_job_and_trainer_gives_consistent_rows() {
    let m = tiny_classifier();
    let s = sentences(&[3, 7, 1, 5, 9, 2]);
    let cfg = TrainBenchConfig {
        jobs: Job::ALL.to_vec(),
        trainers: vec![Trainer::Burn, Trainer::Native],
        batch_sizes: vec![3],
        workloads: vec![Workload::Rt, Workload::Long],
        long_len: 12,
        warmup: 1,
        reps: 2,
        approx_factor: 4,
    };
    let report = bench_train(&m, &s, &cfg, "test", &Progress { quiet: true }).expect("bench");
    // per workload: 5 burn rows + 5 native rows + native distillation and plan-aware
    // fine-tuning rows with cached teacher targets
    assert_eq!(report.rows.len(), 2 * 12);
    for r in &report.rows {
        let st = r.stages;
        assert!((st.data + st.forward + st.backward + st.optimizer - r.seconds_per_step).abs() < 1e-12);
        assert!(r.seconds_per_step > 0.0 && r.loss.is_finite() && r.loss > 0.0, "{r:?}");
        assert!((r.examples_per_s - 3.0 / r.seconds_per_step).abs() < 1e-9 * r.examples_per_s);
        assert!((r.gflop_per_s * r.seconds_per_step - r.gflop_per_step).abs() < 1e-9);
        assert_eq!(st.teacher > 0.0, matches!(r.job, Job::Distill | Job::PlanFt), "{r:?}");
        assert!(!r.teacher_cached || (r.trainer == Trainer::Native && matches!(r.job, Job::Distill | Job::PlanFt)), "{r:?}");
        let (t, real) = match r.workload {
            Workload::Rt => (9, 3 + 7 + 1 + 6),
            Workload::Long => (12, 36),
        };
        assert_eq!((r.padded_len, r.real_tokens), (t, real));
        if r.job == Job::Finetune {
            assert_eq!(r.gflop_per_step, 3.0 * forward_flops(&m.config, 3, t, 2) / 1e9);
        }
    }
    for w in [Workload::Rt, Workload::Long] {
        for job in Job::ALL {
            let row = |tr: Trainer| {
                report.rows.iter().find(|r| r.workload == w && r.job == job && r.trainer == tr && !r.teacher_cached).expect("row")
            };
            let (b, n) = (row(Trainer::Burn), row(Trainer::Native));
            let cached: Vec<_> = report.rows.iter().filter(|r| r.workload == w && r.job == job && r.teacher_cached).collect();
            if matches!(job, Job::Distill | Job::PlanFt) {
                // the cache is exact: the same steps reach the same loss, bit for bit
                assert_eq!(cached.len(), 1, "{w:?} {job:?}: one cached row");
                assert_eq!(cached[0].loss, n.loss, "{w:?} {job:?}: the cached row's loss differs from the cold row's");
                assert_eq!((cached[0].gflop_per_step, cached[0].batch_size), (n.gflop_per_step, n.batch_size));
            } else {
                assert!(cached.is_empty(), "{w:?} {job:?}: no teacher targets to cache");
            }
            assert!(
                (b.loss - n.loss).abs() <= 1e-4 * b.loss,
                "{w:?} {job:?}: after the same 3 steps, burn loss {} vs native {}",
                b.loss,
                n.loss
            );
            assert_eq!(b.gflop_per_step, n.gflop_per_step, "{w:?} {job:?}: both rows count the same FLOPs");
        }
    }
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["rows"][0]["job"], "finetune");
    let table = report.table();
    assert_eq!(table.lines().count(), 25);
    assert!(table.lines().next().is_some_and(|h| h.ends_with("targets")), "{table}");
    assert_eq!(table.lines().filter(|l| l.trim_end().ends_with("cached")).count(), 4, "{table}");
    assert_eq!(table.lines().filter(|l| l.trim_end().ends_with("cold")).count(), 8, "{table}");
    assert_eq!(json["rows"].as_array().expect("rows").iter().filter(|r| r["teacher_cached"] == true).count(), 4);
    assert!(json["rows"].as_array().expect("rows").iter().any(|r| r["job"] == "plan-ft"));
}

/// The ratio table reads the native trainer both ways: per (job, point) its cold step against
/// burn's and, for distillation and plan-aware fine-tuning, its step with cached teacher targets
/// against the same burn row (burn computes them every step).
#[test]
fn ratios_pair_cold_and_cached_native_rows_with_burn() {
    use sttabt::train::bench_rounds::bench_rounds;
    let m = tiny_classifier();
    let s = sentences(&[3, 7, 1, 5]);
    let cfg = TrainBenchConfig {
        jobs: vec![Job::Finetune, Job::Distill, Job::PlanFt],
        trainers: vec![Trainer::Burn, Trainer::Native],
        batch_sizes: vec![2],
        workloads: vec![Workload::Rt],
        long_len: 12,
        warmup: 0,
        reps: 1,
        approx_factor: 4,
    };
    let r = bench_rounds(&m, &s, &[cfg], 1, "test", &Progress { quiet: true }).expect("bench rounds");
    let keys: Vec<(Job, bool)> = r.ratios.iter().map(|x| (x.job, x.teacher_cached)).collect();
    assert_eq!(keys, vec![(Job::Finetune, false), (Job::Distill, false), (Job::Distill, true), (Job::PlanFt, false), (Job::PlanFt, true)]);
    let rows = &r.rounds[0].rows;
    for x in &r.ratios {
        let burn = rows.iter().find(|b| b.job == x.job && b.trainer == Trainer::Burn).expect("burn row");
        let native =
            rows.iter().find(|n| n.job == x.job && n.trainer == Trainer::Native && n.teacher_cached == x.teacher_cached).expect("row");
        assert_eq!((x.burn_examples_per_s, x.native_examples_per_s), (burn.examples_per_s, native.examples_per_s));
        assert_eq!(x.ratios, vec![native.examples_per_s / burn.examples_per_s]);
    }
    let table = r.ratio_table();
    assert!(table.lines().any(|l| l.starts_with("distill   cached")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("plan-ft   cold")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("finetune  -")), "{table}");
}
