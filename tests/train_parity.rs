//! The same-seed parity check of the two trainers (src/train/parity.rs, issue 15 item 3): on a
//! tiny random classifier both fine-tuning runs happen, with the configured epochs, and the
//! report's curves, differences and bound follow from the two runs' own reports
//! (`finetune.json`-equivalent fields); the comparison arithmetic on given curves.

mod common;

use common::TempDir;
use sttabt::train::finetune::FinetuneConfig;
use sttabt::train::parity::{compare, finetune_parity, ParityRun, PARITY_POINTS};
use sttabt::train::Progress;

fn run(trainer: &str, acc: &[f64]) -> ParityRun {
    ParityRun { trainer: trainer.into(), dev_accuracy: acc.to_vec(), steps: 10, seconds: 2.0, examples_per_s: 80.0 }
}

#[test]
fn compare_reports_the_difference_in_points() {
    let cfg = FinetuneConfig::default();
    let r = compare(&cfg, 100, 40, run("burn", &[0.70, 0.75]), run("native", &[0.725, 0.7525]));
    assert_eq!(r.difference_points_per_epoch.len(), 2);
    assert!((r.difference_points_per_epoch[0] - 2.5).abs() < 1e-9);
    assert!((r.final_difference_points - 0.25).abs() < 1e-9, "{}", r.final_difference_points);
    assert!(r.within_bound && r.bound_points == PARITY_POINTS);
    let r = compare(&cfg, 100, 40, run("burn", &[0.80]), run("native", &[0.79]));
    assert!((r.final_difference_points + 1.0).abs() < 1e-9 && !r.within_bound);
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["burn"]["dev_accuracy"][0], 0.8);
    assert_eq!(json["job"], "finetune");
}

#[test]
fn finetune_parity_runs_both_trainers_from_one_seed() {
    let teacher = common::tiny_classifier(2, 2, 8, 32, 2, true, 51);
    let train = common::random_batch(&[5, 9, 3, 12, 7, 4, 8, 6, 10, 2, 11, 5], 40, 2, 52);
    let dev = common::random_batch(&[4, 7, 9, 3, 6, 8, 5, 10], 40, 2, 53);
    let cfg = FinetuneConfig { epochs: 2, batch_size: 4, lr: 1e-3, seed: 3, ..Default::default() };
    let out = TempDir::new("parity");
    let tok = TempDir::new("parity-tok");
    let r = finetune_parity(&teacher, &train, &dev, &cfg, out.path(), tok.path(), &Progress { quiet: true }).expect("parity");
    assert_eq!((r.train_examples, r.dev_examples, r.job.as_str()), (12, 8, "finetune"));
    for (x, name) in [(&r.burn, "burn"), (&r.native, "native")] {
        assert_eq!((x.trainer.as_str(), x.steps, x.dev_accuracy.len()), (name, 6, 2));
        assert!(x.seconds > 0.0 && (x.examples_per_s - 24.0 / x.seconds).abs() < 1e-9 * x.examples_per_s);
        assert!(x.dev_accuracy.iter().all(|a| (0.0..=1.0).contains(a) && (a * 8.0).fract() == 0.0), "{:?}", x.dev_accuracy);
        assert!(out.path().join(name).join("model.safetensors").exists(), "{name}: best epoch saved");
    }
    let d: Vec<f64> = r.burn.dev_accuracy.iter().zip(&r.native.dev_accuracy).map(|(b, n)| (n - b) * 100.0).collect();
    assert_eq!(r.difference_points_per_epoch, d);
    assert_eq!(r.final_difference_points, d[1]);
    assert_eq!(r.within_bound, d[1].abs() <= 0.5);
    // the same seed: on a tiny model the two trainers' rounding differences do not change a
    // prediction after 6 steps
    assert_eq!(r.burn.dev_accuracy, r.native.dev_accuracy);
    // no dev examples: a clear error
    let e = finetune_parity(&teacher, &train, &[], &cfg, &out.path().join("x"), tok.path(), &Progress { quiet: true })
        .expect_err("no dev")
        .to_string();
    assert!(e.contains("no dev examples"), "{e}");
}
