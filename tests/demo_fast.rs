//! End to end on real data: `sttabt demo --fast` (the default demo's recipe at smoke size: a
//! teacher fine-tuned natively on Rotten Tomatoes, a native ApproxNet, a plan-aware fine-tune,
//! concrete masks, LTP, every mode on dev and test, the fastest setting within 1 point timed
//! against dense) into a fresh directory. Asserts the fine-tuned accuracy, that results.json holds
//! every mode, the speed report and the stage times in demo.json, then that a second run reuses
//! every cached stage and that a stage whose settings changed is redone alone.

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
    for fam in ["dense", "dense-cls", "abt", "abt-ft", "abt-actual", "topk", "concrete", "ltp"] {
        assert!(points.iter().any(|p| p["family"] == fam && p["precision"] == "fp32"), "results.json lacks mode {fam}");
        // every mode again with its teacher in int8 (eval --int8-rows), the oracle aside
        let int8 = points.iter().find(|p| p["family"] == format!("{fam} int8"));
        if fam == "abt-actual" {
            assert!(int8.is_none(), "the oracle has no int8 row");
        } else {
            let int8 = int8.unwrap_or_else(|| panic!("results.json lacks the int8 row of {fam}"));
            assert_eq!(int8["precision"], "int8", "{}", int8["label"]);
            assert!(int8["label"].as_str().unwrap().ends_with(" int8"), "{}", int8["label"]);
        }
    }
    // int8 dense predicts as fp32 dense up to a few flips (argmax agreement >= 98.5% in issue 17)
    let dense_int8 = points.iter().find(|p| p["family"] == "dense int8").unwrap();
    let flip = (dense_int8["test_accuracy"].as_f64().unwrap() - points[0]["test_accuracy"].as_f64().unwrap()).abs();
    assert!(flip <= 0.03, "dense int8 test accuracy differs from dense by {flip}");
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
    for plot in ["accuracy_vs_retention.png", "accuracy_vs_throughput_b1.png"] {
        assert!(std::fs::metadata(dir.join("results").join(plot)).map(|m| m.len() > 1000).unwrap_or(false), "missing plot {plot}");
    }
    // every stage ran (none cached) and recorded its wall time
    let stages = ["teacher", "approx", "planft", "concrete_theta-1", "ltp_lambda0.5", "eval", "speed", "long_reviews"];
    let demo = common::read_json(dir.join("demo.json"));
    let recorded: Vec<&str> = demo["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(recorded, stages);
    for s in demo["stages"].as_array().unwrap() {
        assert_eq!(s["cached"], false, "{}", s["stage"]);
        assert!(s["seconds"].as_f64().unwrap() > 0.0, "{}: no wall time", s["stage"]);
    }
    let approx = &demo["stages"][1]["summary"];
    assert!(
        approx["attention_kl_after"].as_f64().unwrap() < approx["attention_kl_before"].as_f64().unwrap(),
        "distillation lowered no KL: {approx}"
    );
    // the speed stage: every family's within-1-point setting (no dense, dense-cls or oracle)
    // timed against dense in 3 rounds at batch 1 and 32, the fastest chosen and named
    let speed = &demo["speed"];
    let within = res["results"]["within_one_point"].as_array().unwrap();
    let candidates: Vec<&serde_json::Value> = within
        .iter()
        .filter(|p| {
            let fam = p["family"].as_str().unwrap();
            ["abt", "abt-ft", "concrete", "ltp", "topk"].contains(&fam.strip_suffix(" int8").unwrap_or(fam))
        })
        .collect();
    let timed = speed["timed"].as_array().unwrap();
    // every within-1-point candidate, then dense int8 for reference (never chosen)
    assert_eq!(timed.len(), candidates.len() + 1, "every within-1-point candidate is timed, and dense int8");
    let reference = timed.last().unwrap();
    assert_eq!((reference["point"]["family"].as_str(), reference["reference"].as_bool()), (Some("dense int8"), Some(true)));
    let mut best = (f64::NEG_INFINITY, usize::MAX);
    for (i, t) in timed.iter().enumerate() {
        for b in ["b1", "b32"] {
            let v = &t[b];
            assert_eq!(v["examples_per_s_rounds"].as_array().unwrap().len(), 3, "{b}: 3 rounds");
        }
        if t["reference"] == true {
            continue;
        }
        assert!(candidates.iter().any(|p| p["label"] == t["point"]["label"]));
        for b in ["b1", "b32"] {
            let v = &t[b];
            assert_eq!(v["examples_per_s_rounds"].as_array().unwrap().len(), 3, "{b}: 3 rounds");
            let (m, lo, hi) = (v["vs_dense"].as_f64().unwrap(), v["vs_dense_min"].as_f64().unwrap(), v["vs_dense_max"].as_f64().unwrap());
            assert!(lo <= m && m <= hi && lo > 0.0, "{b}: median {m} outside [{lo}, {hi}]");
        }
        let score = (t["b1"]["vs_dense"].as_f64().unwrap() * t["b32"]["vs_dense"].as_f64().unwrap()).sqrt();
        if score > best.0 {
            best = (score, i);
        }
    }
    let sentence = demo["sentence"].as_str().unwrap();
    assert_eq!(sentence, speed["sentence"].as_str().unwrap());
    // a busy machine or disagreeing rounds (a test run shares its cores) are said in the sentence
    for w in speed["warnings"].as_array().expect("the speed stage records its warnings") {
        assert!(sentence.contains(&format!("Caution: {}", w.as_str().unwrap())), "{sentence}");
    }
    assert!(first.contains(sentence), "the closing sentence is printed");
    if timed.len() == 1 {
        assert!(speed["chosen"].is_null());
        assert!(sentence.starts_with("No pruned setting is within 1 point"), "{sentence}");
    } else {
        assert_eq!(speed["chosen"].as_u64(), Some(best.1 as u64), "the fastest by the geometric mean of the two speed-ups");
        let label = timed[best.1]["point"]["label"].as_str().unwrap();
        assert!(sentence.contains(label) && sentence.contains("at batch 1") && sentence.contains("at batch 32"), "{sentence}");
        // the ONNX Runtime peer is not run in --fast, and the sentence says so
        assert!(speed["peer"].is_null());
        let note = speed["peer_note"].as_str().expect("a reason when the peer was not compared");
        assert!(note.contains("--fast") && sentence.contains(note), "{sentence}");
        // the chosen setting is bundled: its manifest names the chosen planner, and classify
        // --bundle predicts with it as the same planner does from its own flags
        let bundle = dir.join("bundle");
        assert_eq!(demo["bundle"].as_str().map(std::path::PathBuf::from), Some(bundle.clone()));
        let manifest = common::read_json(bundle.join("bundle.json"));
        assert_eq!(manifest["label"], timed[best.1]["point"]["label"]);
        assert_eq!(manifest["planner"], timed[best.1]["point"]["mode"]);
        // and the precision it was chosen at, which classify --bundle then runs
        assert_eq!(manifest["precision"], timed[best.1]["point"]["precision"]);
        assert!(first.contains(&format!("--bundle {}", bundle.display())), "the demo names its bundle");
        let out = Command::new(env!("CARGO_BIN_EXE_sttabt"))
            .args(["classify", "--bundle"])
            .arg(&bundle)
            .args(["--json", "a gripping, funny film"])
            .output()
            .expect("run sttabt classify --bundle");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "classify --bundle failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or("")).expect("classify --json prints JSON");
        let r = v["retention"].as_f64().expect("retention");
        assert!(r > 0.0 && r <= 1.0, "retention {r}");
        assert_eq!(v["precision"]["teacher"], manifest["precision"], "classify --bundle runs the bundle's precision");
    }
    // length robustness: every planner on 4 dev / 4 test long reviews of >= 700 words (512 tokens)
    let long = common::read_json(dir.join("long_reviews/results.json"));
    assert_eq!(long["results"]["dev_examples"], 4, "{long}");
    assert_eq!(long["results"]["test_examples"], 4, "{long}");
    let long_points = long["results"]["points"].as_array().expect("long-review points");
    for fam in ["dense", "abt", "abt-ft", "concrete", "ltp"] {
        assert!(long_points.iter().any(|p| p["family"] == fam), "long reviews lack family {fam}");
    }
    for p in long_points {
        let acc = p["test_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{}: accuracy {acc}", p["label"]);
    }
    assert!(long["data"].as_str().unwrap().contains("long reviews"), "{}", long["data"]);
    // the demo's concrete and LTP runs classify on their own (their teacher/ carries the tokenizer)
    for (flag, run) in [("--concrete", "concrete_theta-1"), ("--ltp", "ltp_lambda0.5")] {
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
    // second run: every stage cached, with the wall time of the run that made it
    let t = std::time::Instant::now();
    let second = run();
    assert!(t.elapsed().as_secs_f64() < 120.0, "cached re-run took too long");
    assert!(second.contains("teacher test accuracy") && second.contains(sentence));
    let demo2 = common::read_json(dir.join("demo.json"));
    for (a, b) in demo["stages"].as_array().unwrap().iter().zip(demo2["stages"].as_array().unwrap()) {
        assert_eq!(b["cached"], true, "{}", b["stage"]);
        assert_eq!(a["seconds"], b["seconds"], "{}", b["stage"]);
    }
    // a stage recorded with other settings (an older recipe) is redone, and only it
    let record = dir.join("speed/demo_stage.json");
    let mut r = common::read_json(record.clone());
    r["key"]["settings"]["examples"] = serde_json::json!(999);
    std::fs::write(&record, serde_json::to_string(&r).unwrap()).unwrap();
    run();
    let demo3 = common::read_json(dir.join("demo.json"));
    for s in demo3["stages"].as_array().unwrap() {
        assert_eq!(s["cached"], s["stage"] != "speed", "{}", s["stage"]);
    }
    std::fs::remove_dir_all(&dir).ok();
}
