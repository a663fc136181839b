//! Every job on every text family (issue #18 item 1), end to end through the binary, on the tiny
//! checkpoints of `tests/fixtures/families/` (BERT, DistilBERT, RoBERTa, XLM-R): `classify` in
//! every mode (dense logits equal the float64 reference, the others equal the library's),
//! `distill`, `concrete`, `ltp` and `finetune` for a few steps (their outputs keep the family and
//! classify through the CLI as the library does), `eval`, `bench`. And at the library level: pruned execution with a dense plan equals
//! the dense run, a dropped token leaves the others' position ids alone (RoBERTa's offset), and
//! the training model mirrors the native one for each family (positions, token types, head).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{f32s, max_abs_diff, read_json, TempDir};
use serde_json::Value;
use sttabt::infer::{classify, Mode};
use sttabt::model::EncodedInput;
use sttabt::plan::TokenPlan;
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{Encoder, RunOptions};

const FAMILIES: [&str; 4] = ["bert", "distilbert", "roberta", "xlm-roberta"];

fn fixture(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families").join(family)
}

fn sttabt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sttabt")).args(args).output().expect("run sttabt");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

fn ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = sttabt(args);
    assert!(ok, "sttabt {args:?} failed:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stdout
}

fn json_line(args: &[&str]) -> Value {
    let out = ok(args);
    serde_json::from_str(out.lines().next().expect("one line")).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn close(cli: &[f32], lib: &[f32], tol: f32, what: &str) {
    assert_eq!(cli.len(), lib.len(), "{what}: logit count");
    let e = max_abs_diff(cli, lib);
    assert!(e <= tol, "{what}: {cli:?} vs {lib:?} (max diff {e})");
}

/// A small labelled CSV in the family's label names (the fixtures' own texts, cycled).
fn write_data(path: &Path, labels: &[String], rows: usize) {
    let texts = ["a gripping, funny film", "dull and long", "hello world", "the cat sat on the mat", "wonderful acting", "flat"];
    let mut csv = String::from("text,label\n");
    for i in 0..rows {
        csv.push_str(&format!("\"{}\",{}\n", texts[i % texts.len()], labels[i % labels.len()]));
    }
    std::fs::write(path, csv).expect("write csv");
}

/// The reference's first case: (text, pair, float64 logits).
fn reference_case(family: &str) -> (String, Option<String>, Vec<f32>) {
    let r = read_json(fixture(family).join("reference.json"));
    let case = r["cases"].as_array().unwrap().iter().find(|c| c["text_pairs"].is_array()).expect("a pair case").clone();
    (case["texts"][0].as_str().unwrap().into(), Some(case["text_pairs"][0].as_str().unwrap().into()), f32s(&case["logits"][0]))
}

fn every_job_runs(family: &str) {
    let teacher_dir = fixture(family);
    let t = s(&teacher_dir);
    let teacher = Encoder::load(&teacher_dir).unwrap();
    let labels = teacher.config.labels.clone();
    let dir = TempDir::new(&format!("families-cli-{family}"));
    let (train, dev) = (dir.path().join("train.csv"), dir.path().join("dev.csv"));
    write_data(&train, &labels, 12);
    write_data(&dev, &labels, 6);
    let tok = TextTokenizer::from_dir(&teacher_dir, 128).unwrap();
    let (text, pair, ref_logits) = reference_case(family);
    let x: EncodedInput = tok.encode(&text, pair.as_deref()).unwrap().input;
    let pair = pair.unwrap();
    let classify_args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["classify", "--json", text.as_str(), "--pair", pair.as_str()].iter().map(|v| v.to_string()).collect();
        a.extend(extra.iter().map(|v| v.to_string()));
        a
    };
    let run_classify = |extra: &[&str]| -> Value {
        let a = classify_args(extra);
        json_line(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // distill an ApproxNet (f = 2) for a few steps; it keeps the family
    let approx_dir = dir.path().join("approx");
    ok(&[
        "distill",
        "--teacher",
        t,
        "--out",
        s(&approx_dir),
        "--factor",
        "2",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--quiet",
    ]);
    let approx = sttabt::approx::ApproxNet::load(&approx_dir, &teacher.config).unwrap();
    assert_eq!(approx.model.config.model_type(), teacher.config.model_type(), "{family}: the ApproxNet keeps the family");
    assert_eq!(approx.model.kind(), teacher.kind());

    // classify: dense equals the float64 reference, every other mode the library
    let rec = run_classify(&["--model", t, "--mode", "dense"]);
    close(&f32s(&rec["logits"]), &ref_logits, 1e-5, &format!("{family} dense vs reference"));
    let a = s(&approx_dir);
    for (args, mode) in [
        (vec!["--mode", "dense-cls"], Mode::DenseCls),
        (vec!["--mode", "abt", "--approx", a, "--keep", "0.5"], Mode::Abt { k: 0.5 }),
        (vec!["--mode", "abt", "--approx", a, "--keep", "0.9,0.4"], Mode::AbtPerLayer { k: vec![0.9, 0.4] }),
        (vec!["--mode", "abt-actual", "--keep", "0.5"], Mode::AbtActual { k: 0.5 }),
        (vec!["--mode", "topk", "--keep", "0.5"], Mode::TopK { k_min: 0.5 }),
    ] {
        let mut full = vec!["--model", t];
        full.extend(&args);
        let rec = run_classify(&full);
        let lib = classify(&teacher, Some(&approx.model), std::slice::from_ref(&x), &mode).unwrap().remove(0);
        close(&f32s(&rec["logits"]), &lib.logits, 1e-5, &format!("{family} {args:?}"));
        if mode == Mode::DenseCls {
            close(&lib.logits, &ref_logits, 1e-5, &format!("{family} dense-cls vs reference"));
        }
    }

    // concrete: a few steps, then classify with the run as the library does
    let run = dir.path().join("concrete");
    ok(&[
        "concrete",
        "--teacher",
        t,
        "--approx",
        a,
        "--out",
        s(&run),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--train",
        s(&train),
        "--quiet",
    ]);
    let c = sttabt::train::concrete::ConcreteModel::load(&run).unwrap();
    assert_eq!(c.teacher.config.arch, teacher.config.arch, "{family}: the concrete run's teacher keeps the family");
    let rec = run_classify(&["--concrete", s(&run)]);
    let lib =
        classify(&c.teacher, Some(&c.approx.model), std::slice::from_ref(&x), &Mode::Concrete { theta0: c.theta0, theta: c.theta.clone() })
            .unwrap()
            .remove(0);
    close(&f32s(&rec["logits"]), &lib.logits, 1e-5, &format!("{family} concrete"));

    // LTP: a few steps of fine-tuning with learned thresholds
    let ltp = dir.path().join("ltp");
    // without --trainer: native where it covers the model (BERT), else burn, said on stderr
    let (done, stdout, stderr) =
        sttabt(&["ltp", "--teacher", t, "--out", s(&ltp), "--steps", "2", "--batch-size", "4", "--train", s(&train)]);
    assert!(done && !stderr.contains("panicked"), "{family}: ltp failed:\n{stdout}\n{stderr}");
    let covered = sttabt::train::native::NativeBert::covers(&teacher.config);
    assert_eq!(covered, family == "bert", "{family}: the native trainer covers BERT only");
    let (trainer, fell_back) = (if covered { "(native trainer)" } else { "(burn trainer)" }, stderr.contains("training on burn"));
    assert!(
        stdout.contains(trainer) && fell_back != covered,
        "{family}: expected the {trainer} (fallback said: {fell_back}):\n{stdout}\n{stderr}"
    );
    let rec = run_classify(&["--ltp", s(&ltp)]);
    assert!(rec["mode"].as_str().unwrap().starts_with("ltp"), "{family}: {}", rec["mode"]);
    let lt = Encoder::load(&ltp.join("teacher")).unwrap();
    assert_eq!(lt.config.arch, teacher.config.arch, "{family}: the LTP run's teacher keeps the family");
    assert_eq!(rec["logits"].as_array().unwrap().len(), labels.len());

    // fine-tune one epoch: the result is the same family, under its own names
    let ft = dir.path().join("finetuned");
    ok(&[
        "finetune",
        "--model",
        t,
        "--out",
        s(&ft),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--quiet",
    ]);
    let tuned = Encoder::load(&ft).unwrap();
    assert_eq!(tuned.config.arch, teacher.config.arch, "{family}: fine-tuning keeps the family");
    assert_eq!(read_json(ft.join("config.json"))["model_type"], family);
    let rec = run_classify(&["--model", s(&ft), "--mode", "dense"]);
    let lib = classify(&tuned, None, std::slice::from_ref(&x), &Mode::Dense).unwrap().remove(0);
    close(&f32s(&rec["logits"]), &lib.logits, 1e-5, &format!("{family} fine-tuned dense"));

    // eval: operating points on dev, every mode, the ApproxNet and both runs
    let out = dir.path().join("eval");
    ok(&[
        "eval",
        "--model",
        t,
        "--approx",
        a,
        "--dev",
        s(&dev),
        "--ks",
        "0.5",
        "--timing-examples",
        "2",
        "--concrete",
        s(&run),
        "--ltp",
        s(&ltp),
        "--quiet",
        "--out",
        s(&out),
    ]);
    let v = read_json(out.join("results.json"));
    assert_eq!(v["results"]["dev_examples"], 6, "{family}: {v}");

    // bench: RT sentences (truncated to the model's longest input) and a synthetic length,
    // every mode including ABT, the concrete and the LTP run
    common::rotten_tomatoes_path();
    let report = dir.path().join("bench.json");
    let table = ok(&[
        "bench",
        "--model",
        t,
        "--approx",
        a,
        "--concrete",
        s(&run),
        "--ltp",
        s(&ltp),
        "--rt",
        "4",
        "--lengths",
        "12",
        "--synth-examples",
        "2",
        "--batches",
        "1",
        "--repeats",
        "1",
        "--rounds",
        "1",
        "--json",
        s(&report),
    ]);
    let v = read_json(report.clone());
    let modes: Vec<String> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["workload"].as_str().unwrap(), r["mode"].as_str().unwrap()))
        .collect();
    for want in ["rt dense", "rt abt", "rt concrete", "rt ltp", "T12 dense", "T12 abt"] {
        assert!(modes.iter().any(|m| m.starts_with(want)), "{family}: bench rows {modes:?} lack {want}");
    }
    assert!(!v["memory"].as_array().unwrap().is_empty(), "{family}: memory rows");
    assert_eq!(v["approx_precision"], "fp32", "{family}: an ApproxNet ran: {}", v["approx_precision"]);
    // the table's columns line up however long the mode names ("concrete θ0=-1", "ltp λ=...")
    let lines: Vec<&str> = table.lines().skip_while(|l| !l.starts_with("work ")).take(1 + v["rows"].as_array().unwrap().len()).collect();
    let width = lines[0].chars().count();
    assert!(lines.iter().all(|l| l.chars().count() == width), "{family}: ragged bench table:\n{}", lines.join("\n"));
    assert!(table.contains("; 1 round ("), "{family}: {table}");
    // without --approx or --concrete no ApproxNet runs, and the report names none
    let dense = dir.path().join("bench_dense.json");
    let stdout = ok(&[
        "bench",
        "--model",
        t,
        "--rt",
        "0",
        "--lengths",
        "8",
        "--synth-examples",
        "1",
        "--batches",
        "1",
        "--repeats",
        "1",
        "--rounds",
        "1",
        "--no-memory",
        "--json",
        s(&dense),
    ]);
    assert!(read_json(dense)["approx_precision"].is_null(), "{family}: no ApproxNet ran");
    assert!(stdout.lines().any(|l| l == "precision: teacher fp32"), "{family}: {stdout}");
}

#[test]
fn bert_every_job_runs() {
    every_job_runs("bert");
}

#[test]
fn distilbert_every_job_runs() {
    every_job_runs("distilbert");
}

#[test]
fn roberta_every_job_runs() {
    every_job_runs("roberta");
}

#[test]
fn xlm_roberta_every_job_runs() {
    every_job_runs("xlm-roberta");
}

#[test]
fn pruned_execution_with_a_dense_plan_equals_the_dense_run() {
    for family in FAMILIES {
        let model = Encoder::load(&fixture(family)).unwrap();
        let tok = TextTokenizer::from_dir(&fixture(family), 64).unwrap();
        let x = tok.encode("the cat sat on the mat", Some("hello world")).unwrap().input;
        let n = x.len();
        let layers = model.config.num_layers;
        let opts = RunOptions { attentions: false, hidden_states: true };
        let dense = model.run_dense(std::slice::from_ref(&x), opts).unwrap().remove(0);
        let planned = model.run(std::slice::from_ref(&x), &[TokenPlan::dense(n, layers)], opts).unwrap().remove(0);
        assert_eq!(dense.hidden, planned.hidden, "{family}: top rows");
        assert_eq!(model.logits_of(&dense).unwrap(), model.logits_of(&planned).unwrap(), "{family}: logits");

        // dropping a middle token at the embedding: the others keep their rows' position ids
        // (so token i of the pruned run embeds exactly as token i of the dense run)
        let keep: Vec<usize> = (0..n).filter(|&i| i != n / 2).collect();
        let plan = TokenPlan::from_inputs(n, vec![keep.clone(); layers], vec![0]).unwrap();
        let pruned = model.run(std::slice::from_ref(&x), &[plan], opts).unwrap().remove(0);
        let (rows, emb) = &pruned.hidden_states.as_ref().unwrap()[0];
        assert_eq!(rows, &keep);
        let d = model.config.hidden_size;
        let (_, dense_emb) = &dense.hidden_states.as_ref().unwrap()[0];
        for (r, &t) in keep.iter().enumerate() {
            assert_eq!(&emb[r * d..(r + 1) * d], &dense_emb[t * d..(t + 1) * d], "{family}: embedding of token {t}");
        }
    }
}

#[test]
fn the_training_model_mirrors_the_native_model_for_each_family() {
    use burn::tensor::{Device, Tensor};
    use sttabt::train::model::{to_vec, Batch, TrainBert};
    let device = Device::flex();
    for family in FAMILIES {
        let model = Encoder::load(&fixture(family)).unwrap();
        let tok = TextTokenizer::from_dir(&fixture(family), 64).unwrap();
        let xs: Vec<EncodedInput> = [("hello world", None), ("the cat sat on the mat", Some("a gripping film"))]
            .iter()
            .map(|(a, b)| tok.encode(a, *b).unwrap().input)
            .collect();
        let tb = TrainBert::from_native(&model, &device);
        let refs: Vec<&EncodedInput> = xs.iter().collect();
        let batch = Batch::from_inputs(&refs, &device);
        let out = tb.forward(&model.config, &batch, None);
        let logits: Tensor<2> = tb.head_logits(&model.config, out.last()).unwrap();
        let logits = to_vec(logits);
        let k = model.config.labels.len();
        for (e, x) in xs.iter().enumerate() {
            let native = model.run_dense(std::slice::from_ref(x), RunOptions::default()).unwrap().remove(0);
            close(&logits[e * k..(e + 1) * k], &model.logits_of(&native).unwrap(), 1e-5, &format!("{family}: training vs native logits"));
        }
        // and back: the same weights, under the family's own names
        let back = tb.to_native(&model.config).unwrap();
        assert_eq!(back.hf_tensors(), model.hf_tensors(), "{family}: to_native(from_native(m)) = m");
    }
}

/// int8 execution (issue #17) on every family: `classify --precision int8` through the binary
/// equals the library's int8 run, and int8 stays within 0.05 of the fp32 logits on the
/// reference's pair case (per-channel weights, per-row activations: the families share the
/// linear layers int8 replaces).
#[test]
fn int8_classifies_every_family() {
    for family in FAMILIES {
        let teacher_dir = fixture(family);
        let fp32 = Encoder::load(&teacher_dir).unwrap();
        let int8 = fp32.clone().with_precision(sttabt::Precision::Int8).unwrap();
        let tok = TextTokenizer::from_dir(&teacher_dir, 128).unwrap();
        let (text, pair, _) = reference_case(family);
        let x: EncodedInput = tok.encode(&text, pair.as_deref()).unwrap().input;
        let lib_fp32 = classify(&fp32, None, std::slice::from_ref(&x), &Mode::Dense).unwrap().remove(0).logits;
        let lib_int8 = classify(&int8, None, std::slice::from_ref(&x), &Mode::Dense).unwrap().remove(0).logits;
        close(&lib_int8, &lib_fp32, 0.05, &format!("{family}: int8 vs fp32"));
        assert_ne!(lib_int8, lib_fp32, "{family}: int8 must actually run (identical logits mean fp32 ran)");
        for mode in ["dense", "topk"] {
            let pair = pair.clone().unwrap();
            let mut args =
                vec!["classify", "--json", &text, "--pair", &pair, "--model", s(&teacher_dir), "--mode", mode, "--precision", "int8"];
            if mode == "topk" {
                args.extend(["--keep", "0.5"]);
            }
            let rec = json_line(&args);
            let lib = if mode == "dense" {
                lib_int8.clone()
            } else {
                classify(&int8, None, std::slice::from_ref(&x), &Mode::TopK { k_min: 0.5 }).unwrap().remove(0).logits
            };
            close(&f32s(&rec["logits"]), &lib, 1e-5, &format!("{family} {mode} int8: CLI vs library"));
        }
    }
}
