//! `sttabt compress` and `--bundle DIR` through the command line: a compress run on a small
//! real dev subset (Rotten Tomatoes sentences, all-MiniLM-L6-v2 with a fresh head, an
//! ApproxNet distilled for two steps) writes a bundle whose table and choice are consistent;
//! `classify --bundle` equals classify with the same explicit flags (also for a per-layer keep
//! schedule, ALGORITHM.md section 8); `eval` and `bench` run the bundle's planner; damaged or
//! foreign bundles and bad flags are clear errors.

mod common;

use std::path::Path;
use std::process::Command;

use common::TempDir;
use serde_json::Value;
use sttabt::infer::Mode;

fn sttabt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sttabt")).args(args).output().expect("run sttabt");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

fn ok(args: &[&str]) -> String {
    let (good, stdout, stderr) = sttabt(args);
    assert!(good, "sttabt {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

fn expect_error(args: &[&str], parts: &[&str]) {
    let (good, stdout, stderr) = sttabt(args);
    assert!(!good, "sttabt {args:?} should fail, printed:\n{stdout}");
    assert!(!stderr.contains("panicked"), "sttabt {args:?} panicked:\n{stderr}");
    assert!(stderr.starts_with("error"), "sttabt {args:?}: no error line:\n{stderr}");
    for p in parts {
        assert!(stderr.contains(p), "sttabt {args:?}: error lacks {p:?}:\n{stderr}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// all-MiniLM-L6-v2 with a fresh 2-label head, saved with its tokenizer in `dir`.
fn write_teacher(dir: &Path) {
    let base = sttabt::Encoder::load(&common::minilm_dir()).expect("load all-MiniLM-L6-v2");
    let m = sttabt::train::finetune::with_new_head(base, vec!["negative".into(), "positive".into()], 5);
    sttabt::train::save_hf_checkpoint(&m, dir, Some(&common::minilm_dir())).expect("save teacher");
}

/// The first `n` sentences of a Rotten Tomatoes split as a `text<TAB>label` file.
fn write_tsv(path: &Path, ds: &sttabt::data::Dataset, n: usize) {
    let mut body = String::from("text\tlabel\n");
    for e in ds.examples.iter().take(n) {
        let sttabt::data::Label::Class(c) = e.label else { panic!("RT labels are classes") };
        body.push_str(&format!("{}\t{}\n", e.text.split_whitespace().collect::<Vec<_>>().join(" "), ds.label_names[c]));
    }
    std::fs::write(path, body).unwrap();
}

/// `classify --json` logits per line.
fn logits(stdout: &str) -> Vec<Vec<f64>> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect()
}

/// The explicit classify flags of a mode.
fn mode_flags(m: &Mode) -> Vec<String> {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match m {
        Mode::Dense => v(&["--mode", "dense"]),
        Mode::DenseCls => v(&["--mode", "dense-cls"]),
        Mode::Abt { k } => v(&["--mode", "abt", "--keep", &k.to_string()]),
        Mode::AbtSchedule { k_min, gamma } => v(&["--mode", "abt", "--keep", &format!("kmin={k_min},gamma={gamma}")]),
        other => panic!("compress does not choose {other:?} here"),
    }
}

const TEXTS: [&str; 3] = [
    "a gripping, funny and surprisingly moving film about two brothers who never learned to talk to each other",
    "dull.",
    "the plot goes nowhere, the actors look bored and the jokes land with a thud every single time",
];

#[test]
fn compress_writes_a_bundle_that_classify_eval_and_bench_load() {
    let dir = TempDir::new("compress");
    let (t, out) = (dir.path().join("teacher"), dir.path().join("bundle"));
    write_teacher(&t);
    let rt = sttabt::data::rt::load_rotten_tomatoes(&common::rotten_tomatoes_path(), 0).unwrap();
    let (dev, train) = (dir.path().join("dev.tsv"), dir.path().join("train.tsv"));
    write_tsv(&dev, &rt.dev, 32);
    write_tsv(&train, &rt.train, 48);

    // no --approx: distils one (2 steps) on --train; a budget of 50 points puts every candidate in
    let stdout = ok(&[
        "compress",
        "--model",
        s(&t),
        "--dev",
        s(&dev),
        "--train",
        s(&train),
        "--distill-steps",
        "2",
        "--max-drop",
        "50",
        "--objective",
        "b1",
        "--out",
        s(&out),
        "--ks",
        "0.3,0.7",
        "--k-mins",
        "0.2",
        "--gammas",
        "1,inf",
        "--bench-examples",
        "8",
        "--max-timed",
        "2",
        "--quiet",
    ]);
    assert!(stdout.contains("chosen:") && stdout.contains("bundle written to"), "{stdout}");
    for f in
        ["bundle.json", "table.json", "table.txt", "README.md", "teacher/config.json", "teacher/model.safetensors", "teacher/vocab.txt"]
    {
        assert!(out.join(f).is_file(), "bundle lacks {f}");
    }
    assert!(!out.join("approx/checkpoint").exists(), "the distillation checkpoint stays out of the bundle");
    let manifest = read_json(&out.join("bundle.json"));
    let table = &read_json(&out.join("table.json"))["table"];
    assert_eq!(manifest["format"], "sttabt-bundle");
    assert_eq!(manifest["version"], 1);
    // the timing's reliability is recorded as the bench's: load averages around the rounds, and
    // every warning in table.json printed in table.txt and in the bundle's README
    assert!(table["loadavg_before"].as_str().is_some_and(|l| !l.is_empty()), "{table}");
    let txt = std::fs::read_to_string(out.join("table.txt")).unwrap();
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    for w in table["warnings"].as_array().expect("warnings recorded") {
        let w = w.as_str().unwrap();
        assert!(txt.contains(&format!("WARNING: {w}")) && readme.contains(w), "{w}");
    }
    let cands = table["candidates"].as_array().unwrap();
    // dense, dense-cls, abt k = 0.3 and 0.7, two schedules
    assert_eq!(cands.len(), 6, "{table}");
    let modes: Vec<Mode> = cands.iter().map(|c| serde_json::from_value(c["mode"].clone()).unwrap()).collect();
    assert_eq!(modes[0], Mode::Dense);
    assert!(modes.contains(&Mode::AbtSchedule { k_min: 0.2, gamma: f64::INFINITY }), "{modes:?}");
    assert!(modes.contains(&Mode::Abt { k: 0.3 }));
    let dense_acc = cands[0]["dev_accuracy"].as_f64().unwrap();
    for c in cands {
        let acc = c["dev_accuracy"].as_f64().unwrap();
        assert!(c["within_budget"].as_bool().unwrap(), "budget 50 points: {c}");
        let iv = &c["dev_accuracy_interval"];
        assert!(iv["lo"].as_f64().unwrap() <= acc && acc <= iv["hi"].as_f64().unwrap(), "{c}");
        let d = &c["dev_difference_to_dense"];
        assert!((d["estimate"].as_f64().unwrap() - (acc - dense_acc)).abs() < 1e-9, "{c}");
        let r = c["dev_retention"].as_f64().unwrap();
        assert!(r > 0.0 && r <= 1.0);
    }
    // the two lowest-retention candidates were timed, 3 alternating rounds at batch 1 and 32
    let mut order: Vec<usize> = (1..cands.len()).collect();
    order.sort_by(|&a, &b| cands[a]["dev_retention"].as_f64().unwrap().total_cmp(&cands[b]["dev_retention"].as_f64().unwrap()));
    for (rank, &i) in order.iter().enumerate() {
        let timed = !cands[i]["speed_b1"].is_null();
        assert_eq!(timed, rank < 2, "candidate {i} timed {timed} at retention rank {rank}");
        if timed {
            assert_eq!(cands[i]["speed_b1"]["examples_per_s_rounds"].as_array().unwrap().len(), 3);
            assert_eq!(cands[i]["speed_b32"]["batch"], 32);
        }
    }
    // chosen: the fastest timed one at b1 when it beats dense, else dense
    let chosen = table["chosen"].as_u64().unwrap() as usize;
    let speed = |i: usize| cands[i]["speed_b1"]["vs_dense"].as_f64().unwrap_or(0.0);
    let best = order[..2].iter().copied().max_by(|&a, &b| speed(a).total_cmp(&speed(b))).unwrap();
    assert_eq!(chosen, if speed(best) > 1.0 { best } else { 0 }, "{table}");
    assert_eq!(serde_json::from_value::<Mode>(manifest["planner"].clone()).unwrap(), modes[chosen]);
    assert_eq!(manifest["approx"].is_string(), modes[chosen].needs_approx());

    // classify --bundle equals classify with the same explicit flags
    let bundled = logits(&ok(&[&["classify", "--bundle", s(&out), "--json"][..], &TEXTS].concat()));
    let mut explicit: Vec<String> = ["classify", "--model", s(&t), "--json"].iter().map(|x| x.to_string()).collect();
    if modes[chosen].needs_approx() {
        explicit.extend(["--approx".to_string(), s(&out.join("approx")).to_string()]);
    }
    explicit.extend(mode_flags(&modes[chosen]));
    explicit.extend(TEXTS.iter().map(|x| x.to_string()));
    let explicit = logits(&ok(&explicit.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(bundled, explicit, "classify --bundle vs explicit flags ({:?})", modes[chosen]);

    // the same with a per-layer keep schedule as the bundle's planner
    let mut m = manifest.clone();
    m["planner"] = serde_json::to_value(Mode::AbtSchedule { k_min: 0.2, gamma: 2.0 }).unwrap();
    m["label"] = "abt k_min=0.20 γ=2.00".into();
    m["approx"] = "approx".into();
    std::fs::write(out.join("bundle.json"), serde_json::to_string(&m).unwrap()).unwrap();
    let bundled = ok(&[&["classify", "--bundle", s(&out), "--json"][..], &TEXTS].concat());
    let explicit =
        ok(&[&["classify", "--model", s(&t), "--approx", s(&out.join("approx")), "--keep", "kmin=0.2,gamma=2", "--json"][..], &TEXTS]
            .concat());
    assert_eq!(logits(&bundled), logits(&explicit));
    let rec: Value = serde_json::from_str(bundled.lines().next().unwrap()).unwrap();
    assert_eq!(rec["mode"], "abt k_min=0.20 γ=2.00");
    assert_eq!(rec["bundle"], "abt k_min=0.20 γ=2.00", "the bundle's label: {rec}");
    let rec: Value = serde_json::from_str(explicit.lines().next().unwrap()).unwrap();
    assert!(rec.get("bundle").is_none(), "no `bundle` field without --bundle: {rec}");
    let sizes: Vec<u64> = rec["inputs_per_layer"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    let n = rec["tokens"].as_array().unwrap().len() as u64;
    assert_eq!(sizes[0], n, "layer 1 keeps every token (k_1 = 1)");
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "nested: {sizes:?}");

    // a bundle chosen in int8 runs in int8 unless --precision says otherwise; one written before
    // the precision was recorded (no `precision` field) runs in fp32
    m["precision"] = "int8".into();
    std::fs::write(out.join("bundle.json"), serde_json::to_string(&m).unwrap()).unwrap();
    let int8 = ok(&[&["classify", "--bundle", s(&out), "--json"][..], &TEXTS].concat());
    let rec: Value = serde_json::from_str(int8.lines().next().unwrap()).unwrap();
    assert_eq!(rec["precision"]["teacher"], "int8", "{rec}");
    let explicit_int8 = ok(&[
        &["classify", "--model", s(&t), "--approx", s(&out.join("approx")), "--keep", "kmin=0.2,gamma=2", "--precision", "int8", "--json"]
            [..],
        &TEXTS,
    ]
    .concat());
    assert_eq!(logits(&int8), logits(&explicit_int8), "classify --bundle (int8) vs explicit --precision int8");
    let (fine, fp32, err) = sttabt(&[&["classify", "--bundle", s(&out), "--precision", "fp32", "--json"][..], &TEXTS].concat());
    assert!(fine, "{err}");
    assert_eq!(logits(&fp32), logits(&bundled), "--precision fp32 overrides the bundle's int8");
    assert!(err.contains("chosen with its teacher in int8") && err.contains("--precision"), "the override is said: {err}");
    m.as_object_mut().unwrap().remove("precision");
    std::fs::write(out.join("bundle.json"), serde_json::to_string(&m).unwrap()).unwrap();
    let old = ok(&[&["classify", "--bundle", s(&out), "--json"][..], &TEXTS].concat());
    assert_eq!(logits(&old), logits(&bundled), "a bundle without `precision` runs in fp32");
    assert_eq!(serde_json::from_str::<Value>(old.lines().next().unwrap()).unwrap()["precision"]["teacher"], "fp32");

    // eval --bundle: the bundle's planner is one of the rows
    let res = dir.path().join("results");
    ok(&[
        "eval",
        "--bundle",
        s(&out),
        "--dev",
        s(&dev),
        "--limit",
        "12",
        "--ks",
        "0.5",
        "--timing-examples",
        "2",
        "--out",
        s(&res),
        "--quiet",
    ]);
    let points = read_json(&res.join("results.json"))["results"]["points"].as_array().unwrap().clone();
    assert!(points.iter().any(|p| p["label"] == "abt k_min=0.20 γ=2.00"), "eval rows lack the bundle's planner");
    // bench --bundle: one RT row of the bundle's planner, labelled apart from the ordinary rows
    let bj = dir.path().join("bench.json");
    ok(&[
        "bench",
        "--bundle",
        s(&out),
        "--rt",
        "4",
        "--lengths",
        "16",
        "--synth-examples",
        "1",
        "--batches",
        "1",
        "--rounds",
        "1",
        "--repeats",
        "1",
        "--no-memory",
        "--json",
        s(&bj),
    ]);
    let rows = read_json(&bj)["rows"].as_array().unwrap().clone();
    assert!(
        rows.iter().any(|r| r["workload"] == "rt" && r["mode"] == "bundle: abt k_min=0.20 γ=2.00"),
        "bench rows lack the bundle's planner"
    );
    // an fp32 bundle's rows are against fp32 dense already: no second dense row
    assert!(rows.iter().all(|r| r["mode"] != "dense fp32" && r["vs_dense_fp32"].is_null()), "{rows:?}");
    // in int8, the RT rows also get their speed-up over dense fp32 (a bundle's headline reference),
    // timed in the same rounds: the `dense fp32` row's examples/s over theirs, round by round
    let bj8 = dir.path().join("bench-int8.json");
    ok(&["bench", "--bundle", s(&out), "--precision", "int8", "--rt", "4", "--lengths", "16", "--synth-examples", "1"]
        .into_iter()
        .chain(["--batches", "1", "--rounds", "1", "--repeats", "1", "--no-memory", "--json", s(&bj8)])
        .collect::<Vec<_>>());
    let rows = read_json(&bj8)["rows"].as_array().unwrap().clone();
    let fp32 = rows.iter().find(|r| r["workload"] == "rt" && r["mode"] == "dense fp32").expect("a dense fp32 row");
    assert!(fp32["vs_dense_fp32"].is_null(), "{fp32}");
    let bundle_row =
        rows.iter().find(|r| r["workload"] == "rt" && r["mode"] == "bundle: abt k_min=0.20 γ=2.00 int8").expect("the bundle's row");
    let want = bundle_row["examples_per_s"].as_f64().unwrap() / fp32["examples_per_s"].as_f64().unwrap();
    let got = bundle_row["vs_dense_fp32"].as_f64().expect("the bundle's speed-up over dense fp32");
    assert!((got - want).abs() < 1e-9 * want, "one round: the ratio of the two rows' figures, {got} vs {want}");
    // synthetic lengths have no fp32 reference row
    assert!(rows.iter().filter(|r| r["workload"] != "rt").all(|r| r["vs_dense_fp32"].is_null()), "{rows:?}");

    // --int8: every source again with an int8 teacher (dense int8 included), the bundle recording
    // the precision of the source it chose
    let out8 = dir.path().join("bundle-int8");
    let approx_dir = out.join("approx");
    // a small compress run into `to` with the given precision flags
    let compress_small = |to: &Path, max_timed: &str, precision: &[&str]| {
        let mut args = vec!["compress", "--model", s(&t), "--approx", s(&approx_dir), "--dev", s(&dev), "--max-drop", "50"];
        args.extend(["--out", s(to), "--ks", "0.3", "--k-mins", "0.2", "--gammas", "1", "--bench-examples", "8"]);
        args.extend(["--max-timed", max_timed, "--quiet"]);
        args.extend(precision);
        ok(&args);
    };
    compress_small(&out8, "3", &["--int8"]);
    let table = read_json(&out8.join("table.json"))["table"].clone();
    let sources: Vec<&str> = table["sources"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(sources, ["teacher", "int8 teacher"], "{table}");
    let cands = table["candidates"].as_array().unwrap();
    let dense8 = cands.iter().find(|c| c["source"] == 1 && c["mode"]["mode"] == "dense").expect("dense int8 is a candidate");
    // within the budget, dense int8 is timed even though it is not among the lowest retentions
    assert!(dense8["speed_b1"]["vs_dense"].as_f64().is_some_and(|v| v > 0.0), "dense int8 was not timed: {table}");
    assert_eq!(cands.iter().filter(|c| c["source"] == 1).count(), cands.iter().filter(|c| c["source"] == 0).count(), "{table}");
    // each candidate records its teacher's arithmetic
    for c in cands {
        assert_eq!(c["precision"], if c["source"] == 1 { "int8" } else { "fp32" }, "{c}");
    }
    let chosen = &cands[table["chosen"].as_u64().unwrap() as usize];
    let m8 = read_json(&out8.join("bundle.json"));
    let want = if chosen["source"] == 1 { "int8" } else { "fp32" };
    assert_eq!(m8["precision"], want, "{m8}");
    assert_eq!(m8["label"].as_str().unwrap().ends_with(" int8"), want == "int8", "{m8}");
    let rec: Value = serde_json::from_str(ok(&["classify", "--bundle", s(&out8), "--json", "x"]).lines().next().unwrap()).unwrap();
    assert_eq!(rec["precision"]["teacher"], want);

    // --precisions without fp32: only the quantised candidates compete (fp32 dense is still the
    // reference), here in int8-w7
    let outw7 = dir.path().join("bundle-w7");
    compress_small(&outw7, "2", &["--precisions", "int8-w7"]);
    let table = read_json(&outw7.join("table.json"))["table"].clone();
    let sources: Vec<&str> = table["sources"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(sources, ["teacher", "int8-w7 teacher"], "{table}");
    let cands = table["candidates"].as_array().unwrap();
    assert_eq!(cands[0]["mode"]["mode"], "dense", "{table}");
    assert_eq!(cands[0]["precision"], "fp32", "{table}");
    assert!(cands[1..].iter().all(|c| c["source"] == 1 && c["precision"] == "int8-w7"), "{table}");
    assert_eq!(read_json(&outw7.join("bundle.json"))["precision"], cands[table["chosen"].as_u64().unwrap() as usize]["precision"]);

    // int8 and int8-w7 together: where 7-bit weights are no faster (every int8 path but AVX2's),
    // int8-w7 is left out (it could only win by timing noise, at an accuracy cost)
    let outboth = dir.path().join("bundle-both");
    compress_small(&outboth, "1", &["--precisions", "int8,int8-w7"]);
    let table = read_json(&outboth.join("table.json"))["table"].clone();
    let sources: Vec<&str> = table["sources"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    if sttabt::model::Precision::Int8W7.no_gain_here().is_some() {
        assert_eq!(sources, ["teacher", "int8 teacher"], "{table}");
    } else {
        assert_eq!(sources, ["teacher", "int8 teacher", "int8-w7 teacher"], "{table}");
    }

    // flags that the bundle replaces conflict
    expect_error(&["classify", "--bundle", s(&out), "--model", s(&t), "x"], &["--bundle", "--model"]);
    expect_error(&["classify", "--bundle", s(&out), "--keep", "0.5", "x"], &["--bundle", "--keep"]);
    expect_error(&["eval", "--bundle", s(&out), "--approx", s(&out.join("approx"))], &["--bundle", "--approx"]);
    expect_error(&["bench", "--bundle", s(&out), "--model", s(&t)], &["--bundle", "--model"]);
    // an existing bundle is not overwritten
    expect_error(&["compress", "--model", s(&t), "--dev", s(&dev), "--out", s(&out)], &["already holds a bundle"]);
}

#[test]
fn damaged_foreign_and_missing_bundles_are_clear_errors() {
    let dir = TempDir::new("bundle-bad");
    let b = dir.path().join("b");
    let missing = dir.path().join("nowhere");
    expect_error(&["classify", "--bundle", s(&missing), "x"], &["no such directory", "sttabt compress"]);
    let afile = dir.path().join("afile");
    std::fs::write(&afile, "not a bundle").unwrap();
    expect_error(&["classify", "--bundle", s(&afile), "x"], &["is a file, not a directory", "sttabt compress"]);
    std::fs::create_dir_all(b.join("teacher")).unwrap();
    expect_error(&["classify", "--bundle", s(&b), "x"], &["has no bundle.json"]);
    std::fs::write(b.join("bundle.json"), "{\"format\": \"sttabt-bundle\", \"version\": 1, ").unwrap();
    expect_error(&["classify", "--bundle", s(&b), "x"], &["not valid JSON", "damaged"]);
    let good = serde_json::json!({
        "format": "sttabt-bundle", "version": 1, "sttabt_version": "0.1.0", "teacher": "teacher", "approx": null,
        "planner": {"mode": "dense"}, "label": "dense", "summary": "chosen: dense"
    });
    let write = |v: &Value| std::fs::write(b.join("bundle.json"), serde_json::to_string(v).unwrap()).unwrap();
    let mut v = good.clone();
    v["version"] = 2.into();
    write(&v);
    expect_error(&["eval", "--bundle", s(&b)], &["bundle version 2", "reads version 1"]);
    let mut v = good.clone();
    v["format"] = "something-else".into();
    write(&v);
    expect_error(&["bench", "--bundle", s(&b)], &["not an sttabt bundle"]);
    let mut v = good.clone();
    v["planner"] = serde_json::json!({"mode": "warp-drive"});
    write(&v);
    expect_error(&["classify", "--bundle", s(&b), "x"], &["bundle.json", "damaged"]);
    // the teacher folder without a checkpoint; then an ABT planner without an ApproxNet
    write(&good);
    expect_error(&["classify", "--bundle", s(&b), "x"], &["teacher folder", "config.json"]);
    write_teacher(&b.join("teacher"));
    let mut v = good.clone();
    v["planner"] = serde_json::json!({"mode": "abt", "k": 0.3});
    write(&v);
    expect_error(&["classify", "--bundle", s(&b), "x"], &["needs an ApproxNet"]);
    // a healthy dense bundle classifies like --mode dense
    write(&good);
    let t = b.join("teacher");
    assert_eq!(
        logits(&ok(&["classify", "--bundle", s(&b), "--json", TEXTS[0]])),
        logits(&ok(&["classify", "--model", s(&t), "--mode", "dense", "--json", TEXTS[0]]))
    );
    // compress flag checks
    for bad in ["0", "-1", "nan"] {
        expect_error(&["compress", "--model", s(&t), "--max-drop", bad, "--out", s(&dir.path().join("o"))], &["--max-drop", "> 0"]);
    }
    expect_error(&["compress", "--model", s(&t), "--rounds", "2", "--out", s(&dir.path().join("o"))], &["at least 3"]);
    expect_error(&["compress", "--model", s(&t), "--gammas", "0", "--out", s(&dir.path().join("o"))], &["gamma"]);
    expect_error(&["compress", "--model", s(&missing), "--out", s(&dir.path().join("o"))], &["no such directory"]);
    // a file where a directory belongs is named as such
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    expect_error(&["compress", "--model", s(&t), "--out", s(&file)], &["--out", "is a file, not a directory"]);
    expect_error(&["classify", "--model", s(&file), TEXTS[0]], &["a-file", "is a file, not a directory"]);
    // ... and named once (the `loading DIR` context and the cause both carry the path)
    let (_, _, stderr) = sttabt(&["classify", "--model", s(&file), TEXTS[0]]);
    assert_eq!(stderr.matches(s(&file)).count(), 1, "{stderr}");
    expect_error(&["compress", "--model", s(&t), "--precisions", "int4", "--out", s(&dir.path().join("o"))], &["--precisions", "int4"]);
    expect_error(
        &["compress", "--model", s(&t), "--int8", "--precisions", "int8", "--out", s(&dir.path().join("o"))],
        &["--int8", "--precisions"],
    );
}
