//! End to end on real data: `sttabt demo --fast` (fine-tune MiniLM on Rotten Tomatoes, distil an
//! ApproxNet, evaluate every mode) into a fresh directory. Asserts the fine-tuned accuracy and that
//! results.json holds every mode, then that a second run reuses the cached stages.

mod common;

use std::process::Command;

#[test]
fn demo_fast_end_to_end() {
    common::ensure_assets(false);
    let dir = std::env::temp_dir().join(format!("sttabt-demo-fast-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_sttabt"))
            .args(["demo", "--fast", "--quiet", "--out"])
            .arg(&dir)
            .output()
            .expect("run sttabt demo");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let t = std::time::Instant::now();
    let first = run();
    eprintln!("{first}\nfirst run {:.0} s", t.elapsed().as_secs_f64());
    let ft = common::read_json(dir.join("teacher/finetune.json"));
    let dev_acc = ft["report"]["best_dev_accuracy"].as_f64().unwrap();
    assert!(dev_acc >= 0.70, "fine-tuned dev accuracy {dev_acc} < 0.70");
    let res = common::read_json(dir.join("results/results.json"));
    let points = res["results"]["points"].as_array().unwrap();
    for fam in ["dense", "abt", "abt-actual", "topk"] {
        assert!(points.iter().any(|p| p["family"] == fam), "results.json lacks mode {fam}");
    }
    // dense is the full plan (every row of every layer): its retention, computed from the plans,
    // is 1; dense-cls (only CLS at the top) gives the same predictions at a lower retention and
    // fewer FLOPs; every speed-up is against full dense
    let dense = &points[0];
    assert_eq!(dense["family"], "dense");
    assert!((dense["retention"].as_f64().unwrap() - 1.0).abs() < 1e-12, "dense retention {}", dense["retention"]);
    assert_eq!(dense["speedup_b1"].as_f64().unwrap(), 1.0);
    let cls = points.iter().find(|p| p["family"] == "dense-cls").expect("results.json lacks dense-cls");
    // the same CLS up to fp32 rounding (the top layer runs 1 row instead of n): at most one flip
    let n_test = res["results"]["test_examples"].as_f64().unwrap();
    let diff = (cls["test_accuracy"].as_f64().unwrap() - dense["test_accuracy"].as_f64().unwrap()).abs();
    assert!(diff <= 1.0 / n_test + 1e-12, "dense-cls must predict as dense: accuracies differ by {diff}");
    let r = cls["retention"].as_f64().unwrap();
    assert!(r < 1.0 && r > 0.8, "dense-cls retention {r}: (L n + 1) / ((L + 1) n) is below 1");
    assert!(cls["gflops"].as_f64().unwrap() < dense["gflops"].as_f64().unwrap());
    // bootstrap intervals on test: dense's paired difference to itself is exactly 0; every
    // accuracy interval holds its estimate, every difference interval the accuracy difference
    let dense_diff = &dense["test_difference_to_dense"];
    assert_eq!((dense_diff["lo"].as_f64(), dense_diff["hi"].as_f64()), (Some(0.0), Some(0.0)), "{dense_diff}");
    for p in points {
        let r = p["retention"].as_f64().unwrap();
        assert!(r > 0.0 && r <= 1.0, "retention {r}");
        assert!(p["examples_per_s_b1"].as_f64().unwrap() > 0.0);
        let (acc, iv) = (p["test_accuracy"].as_f64().unwrap(), &p["test_accuracy_interval"]);
        assert!(iv["lo"].as_f64().unwrap() <= acc && acc <= iv["hi"].as_f64().unwrap(), "{}: {acc} outside {iv}", p["label"]);
        let d = acc - dense["test_accuracy"].as_f64().unwrap();
        let iv = &p["test_difference_to_dense"];
        assert!(iv["lo"].as_f64().unwrap() <= d + 1e-12 && d - 1e-12 <= iv["hi"].as_f64().unwrap(), "{}: {d} outside {iv}", p["label"]);
    }
    assert!(res["split"]["seed"].is_number(), "the split is recorded");
    // the demo's concrete and LTP runs classify on their own (their teacher/ carries the tokenizer)
    for (flag, run) in [("--concrete", "concrete_theta0"), ("--ltp", "ltp_lambda1")] {
        let out = Command::new(env!("CARGO_BIN_EXE_sttabt"))
            .args(["classify", flag])
            .arg(dir.join(run))
            .args(["--json", "a gripping, funny film"])
            .output()
            .expect("run sttabt classify");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "classify {flag} {run} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or("")).expect("classify --json prints JSON");
        let r = v["retention"].as_f64().expect("retention");
        assert!(r > 0.0 && r <= 1.0, "{flag}: retention {r}");
    }
    // second run: stages cached
    let t = std::time::Instant::now();
    let second = run();
    assert!(t.elapsed().as_secs_f64() < 120.0, "cached re-run took too long");
    assert!(second.contains("teacher test accuracy"));
    std::fs::remove_dir_all(&dir).ok();
}
