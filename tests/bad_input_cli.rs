//! Bad input on the command line (and at the library entry points behind it): a clear error that
//! names the flag / file and what is accepted, or a warning naming the value used; never a panic,
//! never a silent substitution.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{random_tensors, tiny_config, write_checkpoint, TempDir};
use sttabt::model::config::EncoderConfig;
use sttabt::train::Progress;

fn sttabt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sttabt")).args(args).env("NO_COLOR", "1").output().expect("run the sttabt binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command failed, without a panic, and stderr names every one of `parts`.
fn assert_fails_naming(o: &Output, what: &str, parts: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "{what}: expected failure, got success; stderr:\n{err}");
    assert!(!err.contains("panicked at"), "{what}: panicked:\n{err}");
    for p in parts {
        assert!(err.contains(p), "{what}: stderr does not mention {p:?}:\n{err}");
    }
}

/// A tiny 2-layer text classifier (labels neg, pos; 64 positions) with MiniLM's tokenizer files,
/// so that the text jobs can tokenise for it.
fn tiny_classifier(tag: &str) -> (TempDir, EncoderConfig) {
    let dir = TempDir::new(tag);
    let mut cfg = tiny_config(2, 2, 4, 16, 30522, 64);
    cfg.labels = vec!["neg".into(), "pos".into()];
    let mut t = random_tensors(&cfg, 11, 1.0);
    let mut rng = fastrand::Rng::with_seed(5);
    t.push(("classifier.weight".into(), vec![2, 8], (0..16).map(|_| rng.f32() - 0.5).collect()));
    t.push(("classifier.bias".into(), vec![2], vec![0.0, 0.0]));
    write_checkpoint(dir.path(), &cfg, &t);
    let minilm = common::minilm_dir();
    for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        if minilm.join(f).exists() {
            std::fs::copy(minilm.join(f), dir.path().join(f)).expect("copy tokenizer file");
        }
    }
    (dir, cfg)
}

fn write_csv(path: &Path, rows: &[(&str, &str)]) {
    let mut s = String::from("text,label\n");
    for (t, l) in rows {
        s.push_str(&format!("\"{t}\",{l}\n"));
    }
    std::fs::write(path, s).expect("write csv");
}

/// A GLUE SST-2 `dev.tsv` of three labelled sentences (then `extra` lines) in `dir`.
fn write_glue_dev(dir: &Path, extra: &str) {
    let rows = format!("sentence\tlabel\na gripping film \t1\ndull and long \t0\na joy \t1\n{extra}");
    std::fs::write(dir.join("dev.tsv"), rows).expect("write dev.tsv");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `sttabt eval --model MODEL DATA... --ks 0.5 --timing-examples 2 --quiet --out OUT`.
fn eval_quick(model: &Path, data: &[&str], out: &Path) -> Output {
    let mut args = data.to_vec();
    args.push("--quiet");
    eval_loud(model, &args, out)
}

/// [`eval_quick`] without `--quiet`: with the `data: ...` line (and the progress bars).
fn eval_loud(model: &Path, data: &[&str], out: &Path) -> Output {
    let mut args = vec!["eval", "--model", s(model)];
    args.extend_from_slice(data);
    args.extend(["--ks", "0.5", "--timing-examples", "2", "--out", s(out)]);
    sttabt(&args)
}

// ---------------------------------------------------------------------------------------------
// Training ranges: rejected by the command line before any work

#[test]
fn zero_counts_and_bad_learning_rates_rejected_for_every_training_job() {
    let dir = TempDir::new("ranges");
    let out = dir.path().join("out");
    let o = s(&out);
    let jobs: Vec<(&str, Vec<&str>)> = vec![
        ("finetune", vec!["finetune", "--out", o]),
        ("finetune --vision", vec!["finetune", "--vision", "--out", o]),
        ("distill", vec!["distill", "--teacher", "t", "--out", o]),
        ("distill --vision", vec!["distill", "--vision", "--teacher", "t", "--out", o]),
        ("concrete", vec!["concrete", "--teacher", "t", "--approx", "a", "--out", o]),
        ("concrete --vision", vec!["concrete", "--vision", "--teacher", "t", "--approx", "a", "--out", o]),
        ("ltp", vec!["ltp", "--teacher", "t", "--out", o]),
    ];
    let mut checked = 0;
    for (job, base) in &jobs {
        let has = |flag: &str| match base[0] {
            "finetune" => ["--epochs", "--batch-size", "--lr"].contains(&flag),
            "ltp" => ["--steps", "--batch-size"].contains(&flag),
            _ => ["--steps", "--batch-size", "--lr"].contains(&flag),
        };
        for (flag, value, range) in [
            ("--batch-size", "0", "at least 1"),
            ("--steps", "0", "at least 1"),
            ("--epochs", "0", "at least 1"),
            ("--lr", "0", "> 0"),
            ("--lr", "-1e-4", "> 0"),
            ("--lr", "NaN", "> 0"),
            ("--lr", "inf", "> 0"),
        ] {
            if !has(flag) {
                continue;
            }
            let mut args = base.clone();
            args.extend([flag, value]);
            let r = sttabt(&args);
            assert_fails_naming(&r, &format!("{job} {flag} {value}"), &[flag, value, range]);
            checked += 1;
        }
    }
    assert_eq!(checked, 6 * 6 + 2, "every job x flag combination ran");
    // distillation's KL target and the native trainer's reach
    for (extra, what) in [
        (vec!["--target-kl", "0"], vec!["--target-kl", "0", "> 0"]),
        (vec!["--target-kl", "-0.2"], vec!["--target-kl", "-0.2", "> 0"]),
        (vec!["--target-kl", "0.2", "--kl-every", "0"], vec!["--kl-every", "0", "at least 1"]),
    ] {
        let mut args = jobs[2].1.clone();
        args.extend(extra.iter().copied());
        assert_fails_naming(&sttabt(&args), &format!("distill {extra:?}"), &what);
    }
    // loss weights: finite and >= 0 (a negative weight rewards the opposite), written either way
    for (job, flag, value) in [
        (6, "--lambda", "-1"),
        (6, "--lambda=-1", ""),
        (6, "--lambda", "NaN"),
        (4, "--retention-weight", "-1"),
        (4, "--distill-weight", "-0.5"),
    ] {
        let mut args = jobs[job].1.clone();
        args.push(flag);
        if !value.is_empty() {
            args.push(value);
        }
        let name = flag.split('=').next().unwrap_or(flag);
        assert_fails_naming(&sttabt(&args), &format!("{flag} {value}"), &[name, ">= 0"]);
    }
    let mut args = jobs[3].1.clone();
    args.extend(["--trainer", "native"]);
    assert_fails_naming(&sttabt(&args), "distill --vision --trainer native", &["--trainer native", "text BERT", "--trainer burn"]);
    assert!(!out.exists(), "a rejected job created its output directory");
}

#[test]
fn library_training_entry_points_reject_bad_configs() {
    use sttabt::approx::{ApproxInit, ApproxNet};
    use sttabt::train::{concrete, distill, finetune, ltp};
    let (dir, _) = tiny_classifier("libcfg");
    let teacher = sttabt::Encoder::load(dir.path()).expect("tiny classifier loads");
    let x = sttabt::EncodedInput { ids: vec![101, 2000, 102], type_ids: vec![0; 3], patches: Vec::new() };
    let data = vec![finetune::LabeledInput { input: x.clone(), label: 1 }; 4];
    let out = TempDir::new("libcfg-out");
    let q = Progress { quiet: true };
    let approx = || ApproxNet::new(&teacher, 2, ApproxInit::Random, 0).expect("approx net");

    let cfg = finetune::FinetuneConfig { batch_size: 0, ..Default::default() };
    let e = finetune::finetune(teacher.clone(), &data, &data, &cfg, out.path(), dir.path(), false, &q).unwrap_err().to_string();
    assert_eq!(e, "FinetuneConfig.batch_size must be at least 1, got 0");
    let cfg = finetune::FinetuneConfig { epochs: 0, ..Default::default() };
    assert_eq!(cfg.validate().unwrap_err().to_string(), "FinetuneConfig.epochs must be at least 1, got 0");
    let cfg = finetune::FinetuneConfig { lr: f64::NAN, ..Default::default() };
    assert_eq!(cfg.validate().unwrap_err().to_string(), "FinetuneConfig.lr must be a finite number > 0, got NaN");

    let cfg = distill::DistillConfig { steps: 0, ..Default::default() };
    let inputs = vec![x.clone(); 4];
    let e = distill::distill(&teacher, approx(), &inputs, &inputs, &cfg, out.path(), false, &q).unwrap_err().to_string();
    assert_eq!(e, "DistillConfig.steps must be at least 1, got 0");
    let cfg = distill::DistillConfig { lr: -1.0, ..Default::default() };
    assert_eq!(cfg.validate().unwrap_err().to_string(), "DistillConfig.lr must be a finite number > 0, got -1");

    let cfg = concrete::ConcreteConfig { lr: 0.0, ..Default::default() };
    let e = concrete::train_concrete(&teacher, &approx(), &data, &cfg, out.path(), false, &q).unwrap_err().to_string();
    assert_eq!(e, "ConcreteConfig.lr must be a finite number > 0, got 0");
    let cfg = concrete::ConcreteConfig { batch_size: 0, ..Default::default() };
    assert_eq!(cfg.validate().unwrap_err().to_string(), "ConcreteConfig.batch_size must be at least 1, got 0");

    let cfg = ltp::LtpConfig { batch_size: 0, ..Default::default() };
    let e = ltp::train_ltp(&teacher, &data, &cfg, out.path(), false, &q).unwrap_err().to_string();
    assert_eq!(e, "LtpConfig.batch_size must be at least 1, got 0");
    let cfg = ltp::LtpConfig { steps: 0, ..Default::default() };
    assert_eq!(cfg.validate().unwrap_err().to_string(), "LtpConfig.steps must be at least 1, got 0");

    // the defaults are valid
    finetune::FinetuneConfig::default().validate().expect("default finetune config");
    distill::DistillConfig::default().validate().expect("default distill config");
    concrete::ConcreteConfig::default().validate().expect("default concrete config");
    ltp::LtpConfig::default().validate().expect("default ltp config");
    assert!(std::fs::read_dir(out.path()).unwrap().next().is_none(), "a rejected config wrote into the output directory");
}

// ---------------------------------------------------------------------------------------------
// Data files are used as given, or the combination is an error: never Rotten Tomatoes instead

#[test]
fn eval_reads_dev_and_test_files_without_train() {
    let (model, _) = tiny_classifier("evalfiles");
    let dir = TempDir::new("evalfiles-data");
    let dev = dir.path().join("dev.csv");
    let test = dir.path().join("test.csv");
    write_csv(&dev, &[("a gripping, funny film", "pos"), ("dull and long", "neg"), ("a joy", "pos")]);
    write_csv(&test, &[("flat", "neg"), ("wonderful acting", "pos")]);
    let out = dir.path().join("results");
    let r = eval_loud(model.path(), &["--dev", s(&dev), "--test", s(&test)], &out);
    let err = stderr(&r);
    assert!(r.status.success(), "eval with --dev/--test failed:\n{err}");
    assert!(!err.contains("panicked at"), "{err}");
    let line = format!("data: dev={} (3 rows), test={} (2 rows)", dev.display(), test.display());
    assert!(err.contains(&line), "expected the line {line:?} in stderr:\n{err}");
    assert!(!err.contains("Rotten Tomatoes"), "{err}");
    let v = common::read_json(out.join("results.json"));
    assert_eq!(v["results"]["dev_examples"], 3, "{v}");
    assert_eq!(v["results"]["test_examples"], 2, "{v}");
    let data = v["data"].as_str().expect("data description");
    assert!(data.contains("dev.csv") && data.contains("test.csv") && !data.contains("Rotten"), "{data}");

    // --dev alone: test = dev
    let out2 = dir.path().join("results2");
    let r = eval_loud(model.path(), &["--dev", s(&dev)], &out2);
    let err = stderr(&r);
    assert!(r.status.success(), "eval with --dev failed:\n{err}");
    assert!(err.contains(&format!("data: dev={} (3 rows), test=dev (3 rows)", dev.display())), "{err}");
    assert_eq!(common::read_json(out2.join("results.json"))["results"]["test_examples"], 3);

    // --limit: the data line gives the rows the job reads
    let out3 = dir.path().join("results3");
    let r = eval_loud(model.path(), &["--dev", s(&dev), "--test", s(&test), "--limit", "2"], &out3);
    let err = stderr(&r);
    assert!(r.status.success(), "eval --limit 2 failed:\n{err}");
    let line = format!("data: dev={} (2 of 3 rows), test={} (2 rows)", dev.display(), test.display());
    assert!(err.contains(&line), "expected the line {line:?} in stderr:\n{err}");
    assert_eq!(common::read_json(out3.join("results.json"))["results"]["dev_examples"], 2);
}

#[test]
fn eval_reads_integer_labels_as_class_indices_of_named_labels() {
    // the model's id2label is neg/pos; a file labelled 0/1 means the class indices
    let (model, _) = tiny_classifier("evalints");
    let dir = TempDir::new("evalints-data");
    let dev = dir.path().join("dev.csv");
    write_csv(&dev, &[("a gripping, funny film", "1"), ("dull and long", "0"), ("a joy", "pos")]);
    let out = dir.path().join("results");
    let r = eval_quick(model.path(), &["--dev", s(&dev), "--limit", "3"], &out);
    assert!(r.status.success(), "eval with 0/1 labels failed:\n{}", stderr(&r));
    assert_eq!(common::read_json(out.join("results.json"))["results"]["dev_examples"], 3);
    // an integer out of range: the file and line, the value and the valid range
    write_csv(&dev, &[("a joy", "1"), ("flat", "2")]);
    let r = eval_quick(model.path(), &["--dev", s(&dev)], &dir.path().join("bad"));
    assert_fails_naming(&r, "eval with label 2 of 2 classes", &[&format!("{}: line 3", dev.display()), "\"2\"", "0..=1"]);
}

#[test]
fn quiet_jobs_print_no_data_line() {
    // --quiet: errors, warnings and the job's result only; the `data: ...` line is progress
    let (model, _) = tiny_classifier("quietdata");
    let dir = TempDir::new("quietdata-data");
    let (train, dev) = (dir.path().join("train.csv"), dir.path().join("dev.csv"));
    write_csv(&train, &[("a gripping, funny film", "pos"), ("dull and long", "neg"), ("a joy", "pos"), ("flat", "neg")]);
    write_csv(&dev, &[("wonderful acting", "pos"), ("a bore", "neg")]);
    let out = dir.path().join("approx");
    let base = ["distill", "--teacher", s(model.path()), "--train", s(&train), "--dev", s(&dev), "--factor", "2"];
    let mut args = base.to_vec();
    args.extend(["--steps", "1", "--batch-size", "2", "--heldout", "2", "--out", s(&out), "--quiet"]);
    let r = sttabt(&args);
    let err = stderr(&r);
    assert!(r.status.success(), "distill --quiet failed:\n{err}");
    // (the one warning left: --max-length 128 clamped to the tiny model's 64 positions)
    assert!(err.lines().all(|l| l.starts_with("warning: ")), "distill --quiet printed more than warnings:\n{err}");
    assert!(String::from_utf8_lossy(&r.stdout).starts_with("ApproxNet f=2: attention KL"), "the result line");
    let r = eval_quick(model.path(), &["--dev", s(&dev)], &dir.path().join("eval"));
    let err = stderr(&r);
    assert!(r.status.success(), "eval --quiet failed:\n{err}");
    assert!(err.lines().all(|l| l.starts_with("warning: ")), "eval --quiet printed more than warnings:\n{err}");
    // finetune --quiet: not even the split sizes
    let ft = dir.path().join("ft");
    let r = sttabt(&[
        "finetune",
        "--model",
        s(model.path()),
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--out",
        s(&ft),
        "--quiet",
    ]);
    let err = stderr(&r);
    assert!(r.status.success(), "finetune --quiet failed:\n{err}");
    assert!(err.lines().all(|l| l.starts_with("warning: ")), "finetune --quiet printed more than warnings:\n{err}");
    // without --quiet the line is there
    let mut args = base.to_vec();
    let out2 = dir.path().join("approx2");
    args.extend(["--steps", "1", "--batch-size", "2", "--heldout", "2", "--out", s(&out2)]);
    let r = sttabt(&args);
    let err = stderr(&r);
    assert!(r.status.success(), "distill failed:\n{err}");
    assert!(err.contains(&format!("data: train={} (4 rows), dev={} (2 rows)", train.display(), dev.display())), "{err}");
}

#[test]
fn data_flag_combinations_that_cannot_be_honoured_are_errors() {
    let (model, _) = tiny_classifier("dataflags");
    let m = s(model.path());
    let dir = TempDir::new("dataflags-data");
    let f = dir.path().join("d.csv");
    write_csv(&f, &[("fine", "pos"), ("bad", "neg")]);
    let f = s(&f);
    let out = dir.path().join("out");
    let o = s(&out);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["finetune", "--out", o, "--dev", f, "--test", f],
            vec![
                "`sttabt finetune` was given --dev and --test but not --train FILE",
                "give none of --train/--dev/--test to use Rotten Tomatoes",
            ],
        ),
        (vec!["finetune", "--out", o, "--train", f], vec!["`sttabt finetune`", "--dev"]),
        (vec!["finetune", "--out", o, "--train", f, "--dev", f, "--test", f], vec!["does not read --test", "remove --test"]),
        (vec!["distill", "--teacher", m, "--out", o, "--dev", f], vec!["`sttabt distill`", "--train"]),
        (
            vec!["concrete", "--teacher", m, "--approx", m, "--out", o, "--train", f, "--dev", f],
            vec!["`sttabt concrete` does not read --dev"],
        ),
        (
            vec!["ltp", "--teacher", m, "--out", o, "--train", f, "--dev", f],
            vec!["`sttabt ltp` does not read --dev: it reads --train only"],
        ),
        (vec!["ltp", "--teacher", m, "--out", o, "--dev", f], vec!["`sttabt ltp` was given --dev but not --train FILE"]),
        (vec!["eval", "--model", m, "--out", o, "--test", f], vec!["`sttabt eval`", "--dev"]),
        (vec!["eval", "--model", m, "--out", o, "--train", f, "--dev", f], vec!["`sttabt eval` does not read --train"]),
        (vec!["finetune", "--out", o, "--task", "sst2"], vec!["--task sst2 needs --glue"]),
        (
            vec!["eval", "--model", m, "--out", o, "--glue", s(dir.path()), "--task", "sst2", "--dev", f],
            vec!["--glue cannot be combined with --dev"],
        ),
        // flags that shape data files only, given without data files: refused, not ignored
        (
            vec!["eval", "--model", m, "--out", o, "--text-column", "sentence"],
            vec!["--text-column apply to --train/--dev/--test files only", "Rotten Tomatoes"],
        ),
        (vec!["eval", "--model", m, "--out", o, "--skip-bad-rows"], vec!["--skip-bad-rows", "Rotten Tomatoes"]),
        (
            vec!["eval", "--model", m, "--out", o, "--glue", s(dir.path()), "--task", "sst2", "--label-column", "y"],
            vec!["--label-column", "GLUE task folder"],
        ),
        // zero limits: refused by the command line, naming the flag
        (vec!["eval", "--model", m, "--out", o, "--limit", "0"], vec!["--limit", "at least 1"]),
        (vec!["finetune", "--out", o, "--train-limit", "0"], vec!["--train-limit", "at least 1"]),
        (vec!["finetune", "--out", o, "--dev-limit", "0"], vec!["--dev-limit", "at least 1"]),
        (vec!["train-parity", "--out", o, "--dev-limit", "0"], vec!["--dev-limit", "at least 1"]),
        (vec!["ltp", "--teacher", m, "--out", o, "--train-limit", "0"], vec!["--train-limit", "at least 1"]),
    ];
    for (args, words) in cases {
        let r = sttabt(&args);
        assert_fails_naming(&r, &args.join(" "), &words);
        assert!(!stderr(&r).contains("data: Rotten Tomatoes"), "{}: fell back to Rotten Tomatoes", args.join(" "));
    }
    assert!(!out.exists(), "a rejected job created its output directory");
}

#[test]
fn eval_on_a_glue_folder_needs_no_train_tsv() {
    // eval reads dev.tsv only (dev doubles as test): a folder without train.tsv is enough
    let (model, _) = tiny_classifier("gluedev");
    let dir = TempDir::new("gluedev-data");
    write_glue_dev(dir.path(), "");
    let out = dir.path().join("results");
    let r = eval_loud(model.path(), &["--glue", s(dir.path()), "--task", "sst2"], &out);
    let err = stderr(&r);
    assert!(r.status.success(), "eval --glue without train.tsv failed:\n{err}");
    assert!(err.contains("dev 3 rows"), "{err}");
    assert!(!err.contains("train "), "eval printed a train split it does not read:\n{err}");
    assert_eq!(common::read_json(out.join("results.json"))["results"]["test_examples"], 3);
    // finetune does read train.tsv: its absence is an error naming the file
    let r = sttabt(&["finetune", "--glue", s(dir.path()), "--task", "sst2", "--out", s(&dir.path().join("ft"))]);
    assert_fails_naming(&r, "finetune --glue without train.tsv", &["train.tsv", "No such file"]);
    assert_eq!(stderr(&r).matches("No such file").count(), 1, "the OS error is printed once:\n{}", stderr(&r));
}

#[test]
fn skipped_rows_of_a_split_read_as_dev_and_test_are_counted_once() {
    let (model, _) = tiny_classifier("skiponce");
    let dir = TempDir::new("skiponce-data");
    // GLUE: dev.tsv doubles as the test split; one row without a label column
    write_glue_dev(dir.path(), "no label here\n");
    let out = dir.path().join("glue");
    let r = eval_quick(model.path(), &["--glue", s(dir.path()), "--task", "sst2", "--skip-bad-rows"], &out);
    let err = stderr(&r);
    assert!(r.status.success(), "eval --skip-bad-rows failed:\n{err}");
    assert!(err.contains("skipped 1 malformed row(s) (--skip-bad-rows): train 0, dev 1, test = dev"), "{err}");
    assert_eq!(common::read_json(out.join("results.json"))["results"]["test_examples"], 3);
    // a --dev table without --test: the same; with a --test table its rows count apart
    let dev = dir.path().join("dev.csv");
    std::fs::write(&dev, "text,label\n\"a joy\",pos\n\"flat\",neg\n\"no label\"\n").expect("write dev.csv");
    let r = eval_quick(model.path(), &["--dev", s(&dev), "--skip-bad-rows"], &dir.path().join("table"));
    let err = stderr(&r);
    assert!(r.status.success(), "eval --dev --skip-bad-rows failed:\n{err}");
    assert!(err.contains("skipped 1 malformed row(s) (--skip-bad-rows): train 0, dev 1, test = dev"), "{err}");
    let test = dir.path().join("test.csv");
    std::fs::write(&test, "text,label\n\"dull\",neg\n\"oops\"\n\"a joy\",pos\n").expect("write test.csv");
    let r = eval_quick(model.path(), &["--dev", s(&dev), "--test", s(&test), "--skip-bad-rows"], &dir.path().join("both"));
    let err = stderr(&r);
    assert!(r.status.success(), "eval --dev --test --skip-bad-rows failed:\n{err}");
    assert!(err.contains("skipped 2 malformed row(s) (--skip-bad-rows): train 0, dev 1, test 1"), "{err}");
}

#[test]
fn skipped_rows_are_listed_by_file_and_line_with_the_reason() {
    let (model, _) = tiny_classifier("skiplist");
    let dir = TempDir::new("skiplist-data");
    // one bad row: it is named (dev doubles as test: listed once)
    write_glue_dev(dir.path(), "no label here\n");
    let r = eval_quick(model.path(), &["--glue", s(dir.path()), "--task", "sst2", "--skip-bad-rows"], &dir.path().join("glue"));
    let err = stderr(&r);
    assert!(r.status.success(), "{err}");
    let line = format!("  {}: line 5: expected 2 tab/comma-separated fields, found 1\n", dir.path().join("dev.tsv").display());
    assert_eq!(err.matches(&line).count(), 1, "expected {line:?} once in:\n{err}");
    assert!(!err.contains("more\n"), "{err}");
    // seven bad rows over dev and test: the first five, in file order (test.csv's unknown label on
    // line 3 before its empty text on line 4, though labels are checked after reading), then how many more
    let (dev, test) = (dir.path().join("dev.csv"), dir.path().join("test.csv"));
    let mut body = String::from("text,label\n\"a joy\",pos\n");
    for _ in 0..4 {
        body.push_str("\"no label\"\n");
    }
    std::fs::write(&dev, body).expect("write dev.csv");
    std::fs::write(&test, "text,label\n\"flat\",neg\n\"oops\",meh\n\" \",pos\n\"a\",pos,extra\n").expect("write test.csv");
    let r = eval_quick(model.path(), &["--dev", s(&dev), "--test", s(&test), "--skip-bad-rows"], &dir.path().join("table"));
    let err = stderr(&r);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("skipped 7 malformed row(s) (--skip-bad-rows): train 0, dev 4, test 3"), "{err}");
    let listed: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
    let (d, t) = (dev.display().to_string(), test.display().to_string());
    let expect = [
        format!("  {d}: line 3: expected 2 tab/comma-separated fields, found 1"),
        format!("  {d}: line 4: expected 2 tab/comma-separated fields, found 1"),
        format!("  {d}: line 5: expected 2 tab/comma-separated fields, found 1"),
        format!("  {d}: line 6: expected 2 tab/comma-separated fields, found 1"),
        format!(
            "  {t}: line 3: column \"label\": expected one of the label names [\"neg\", \"pos\"] or a class index in 0..=1, found \"meh\""
        ),
        "  ... and 2 more".to_string(),
    ];
    assert_eq!(listed, expect, "{err}");
}

#[test]
fn absurd_thread_counts_are_refused_and_oversubscription_warns() {
    let r = sttabt(&["--threads", "100000", "info"]);
    assert_fails_naming(&r, "--threads 100000", &["--threads 100000", "at most 1024"]);
    let r = sttabt(&["--threads", "0", "info"]);
    assert_fails_naming(&r, "--threads 0", &["--threads", "at least 1"]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let many = (cores + 1).to_string();
    let r = sttabt(&["--threads", &many, "info"]);
    assert!(r.status.success(), "--threads {many} info failed:\n{}", stderr(&r));
    assert!(stderr(&r).contains("more than this machine's"), "no oversubscription warning:\n{}", stderr(&r));
}

#[test]
fn info_on_a_run_dir_points_at_its_teacher() {
    // the layout `sttabt concrete` / `sttabt ltp` write: a marker file beside teacher/ (and approx/)
    let (model, _) = tiny_classifier("inforun");
    let dir = TempDir::new("inforun-runs");
    let copy = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(model.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    };
    let concrete = dir.path().join("concrete_run");
    copy(&concrete.join("teacher"));
    std::fs::write(concrete.join("concrete.json"), "{}").unwrap();
    let r = sttabt(&["info", s(&concrete)]);
    let (c, t) = (concrete.display(), concrete.join("teacher").display().to_string());
    assert_fails_naming(&r, "info on a concrete run", &["is a concrete-masking run", &format!("its teacher is {t} (`sttabt info {t}`)")]);
    assert!(!stderr(&r).contains("ApproxNet"), "no approx/ checkpoint, none named: {}", stderr(&r));
    // with the ApproxNet it used (a checkpoint in approx/)
    copy(&concrete.join("approx"));
    let r = sttabt(&["info", s(&concrete)]);
    assert_fails_naming(&r, "info on a concrete run", &[&format!("the ApproxNet it used is {c}/approx"), &format!("--concrete {c}")]);
    let ltp = dir.path().join("ltp_run");
    copy(&ltp.join("teacher"));
    std::fs::write(ltp.join("ltp.json"), "{}").unwrap();
    let r = sttabt(&["info", s(&ltp)]);
    let t = ltp.join("teacher").display().to_string();
    assert_fails_naming(&r, "info on an LTP run", &["is an LTP run", &format!("its teacher is {t}"), &format!("--ltp {}", ltp.display())]);
    // the teacher itself is described
    let r = sttabt(&["info", &t]);
    assert!(r.status.success(), "{}", stderr(&r));
}

// ---------------------------------------------------------------------------------------------
// --max-length above the model's positions: a warning with the value used

#[test]
fn max_length_above_positions_warns_and_clamps() {
    let (model, _) = tiny_classifier("maxlen");
    let r = sttabt(&["embed", "--model", s(model.path()), "--max-length", "100000", "a short sentence"]);
    let err = stderr(&r);
    assert!(r.status.success(), "embed failed:\n{err}");
    assert!(!err.contains("panicked at"), "{err}");
    assert!(err.contains("warning: --max-length 100000 is above the model's max_position_embeddings (64"), "{err}");
    assert!(err.contains("using --max-length 64"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("embed prints JSON");
    assert_eq!(v["dim"], 8);
    // a long text is cut at the clamped length (64 tokens, [CLS] and [SEP] included)
    let long = vec!["film"; 200].join(" ");
    let r = sttabt(&["embed", "--model", s(model.path()), "--max-length", "100000", &long]);
    assert!(r.status.success(), "{}", stderr(&r));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("embed prints JSON");
    assert_eq!(v["embeddings"][0]["tokens"], 64, "{}", v["embeddings"][0]["tokens"]);
    // within the positions: no warning
    let r = sttabt(&["embed", "--model", s(model.path()), "--max-length", "64", "a short sentence"]);
    assert!(r.status.success() && !stderr(&r).contains("warning"), "{}", stderr(&r));
}

#[test]
fn max_length_below_three_names_the_flag_and_the_range() {
    let (model, _) = tiny_classifier("maxlen0");
    let m = s(model.path());
    let dir = TempDir::new("maxlen0-data");
    let out = dir.path().join("out");
    let o = s(&out);
    for bad in ["0", "2", "many"] {
        let cases: Vec<Vec<&str>> = vec![
            vec!["embed", "--model", m, "--max-length", bad, "a short sentence"],
            vec!["classify", "--model", m, "--mode", "dense", "--max-length", bad, "a short sentence"],
            vec!["eval", "--model", m, "--max-length", bad, "--out", o],
            vec!["distill", "--teacher", m, "--max-length", bad, "--out", o],
        ];
        for args in cases {
            let r = sttabt(&args);
            assert_fails_naming(&r, &args.join(" "), &["--max-length", "3 ([CLS], one token, [SEP])", "max_position_embeddings"]);
            assert!(!stderr(&r).contains("max_length"), "{}: names the internal name:\n{}", args.join(" "), stderr(&r));
        }
    }
    // 3 is the smallest accepted
    let r = sttabt(&["embed", "--model", m, "--max-length", "3", "a short sentence"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(!out.exists(), "a rejected job created its output directory");
}

// ---------------------------------------------------------------------------------------------
// Checkpoints that are not safetensors

fn checkpoint_with_weights(tag: &str, bytes: &[u8]) -> TempDir {
    let dir = TempDir::new(tag);
    let cfg = tiny_config(2, 2, 4, 16, 10, 12);
    write_checkpoint(dir.path(), &cfg, &random_tensors(&cfg, 7, 1.0));
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    dir
}

#[test]
fn info_names_lfs_pointer_pytorch_zip_and_truncated_checkpoints() {
    let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db\nsize 90868376\n";
    let dir = checkpoint_with_weights("cli-lfs", lfs);
    let r = sttabt(&["info", s(dir.path())]);
    let pointer = format!("Git LFS pointer file ({} bytes)", lfs.len());
    assert_fails_naming(&r, "info on an LFS pointer", &["model.safetensors", &pointer, "the real file is 90868376 bytes", "git lfs pull"]);

    let mut zip = b"PK\x03\x04\x00\x00\x08\x08".to_vec();
    zip.extend_from_slice(b"archive/data.pkl and more bytes");
    let dir = checkpoint_with_weights("cli-zip", &zip);
    let r = sttabt(&["info", s(dir.path())]);
    assert_fails_naming(&r, "info on a PyTorch zip", &["model.safetensors", "PyTorch zip archive", "torch.load"]);

    let good = TempDir::new("cli-good");
    let cfg = tiny_config(2, 2, 4, 16, 10, 12);
    write_checkpoint(good.path(), &cfg, &random_tensors(&cfg, 7, 1.0));
    let bytes = std::fs::read(good.path().join("model.safetensors")).unwrap();
    let dir = checkpoint_with_weights("cli-trunc", &bytes[..bytes.len() - 100]);
    let r = sttabt(&["info", s(dir.path())]);
    let size = (bytes.len() - 100).to_string();
    let full = bytes.len().to_string();
    assert_fails_naming(
        &r,
        "info on a truncated file",
        &["model.safetensors", "truncated safetensors file", &format!("needs {full} bytes"), &format!("has only {size}")],
    );
}

// ---------------------------------------------------------------------------------------------
// LTP thresholds: exactly L - 1

#[test]
fn ltp_run_with_wrong_threshold_count_is_an_error() {
    let (model, _) = tiny_classifier("ltpbad");
    let run = TempDir::new("ltpbad-run");
    let cfg = tiny_config(2, 2, 4, 16, 10, 12);
    write_checkpoint(&run.path().join("teacher"), &cfg, &random_tensors(&cfg, 3, 1.0));
    for theta in [serde_json::json!([0.1, 0.2, 0.3]), serde_json::json!([])] {
        let meta = serde_json::json!({"report": {"lambda": 1.0, "theta": theta}});
        std::fs::write(run.path().join("ltp.json"), meta.to_string()).unwrap();
        let n = theta.as_array().unwrap().len();
        let r = sttabt(&["eval", "--model", s(model.path()), "--ltp", s(run.path()), "--out", s(&run.path().join("res"))]);
        assert_fails_naming(
            &r,
            &format!("eval --ltp with {n} thresholds"),
            &["ltp.json", "LTP needs L - 1 = 1 thresholds for a 2-layer model", &format!("found {n}")],
        );
    }
    // the planner itself refuses to run with a wrong count (no threshold 0 substituted)
    let m = sttabt::Encoder::load(model.path()).unwrap();
    let x = sttabt::EncodedInput { ids: vec![101, 2000, 2001, 102], type_ids: vec![0; 4], patches: Vec::new() };
    for theta in [vec![], vec![0.1, 0.2]] {
        let hook = sttabt::planners::ltp::LtpPlanner { theta: theta.clone(), score: Default::default() };
        let e = m.run_feed_forward(std::slice::from_ref(&x), &hook, &[0], sttabt::RunOptions::default()).unwrap_err().to_string();
        assert!(e.contains("LTP needs L - 1 = 1 thresholds") && e.contains(&format!("found {}", theta.len())), "{e}");
        assert!(sttabt::planners::ltp::LtpPlanner::new(theta, Default::default(), 2).is_err());
    }
    let hook = sttabt::planners::ltp::LtpPlanner::new(vec![0.0], Default::default(), 2).expect("one threshold for two layers");
    let (_, plans) = m.run_feed_forward(&[x], &hook, &[0], sttabt::RunOptions::default()).expect("valid LTP plan runs");
    assert_eq!(plans[0].inputs(0), &[0, 1, 2, 3][..]);
}

/// `--vision` / `--image-folder` beside text-data flags: an error naming the text flags (they used
/// to be ignored silently), before any data is read or anything is written.
#[test]
fn image_jobs_refuse_text_data_flags() {
    let (model, _) = tiny_classifier("vision-text-flags");
    let dir = TempDir::new("vision-text-flags-out");
    let csv = dir.path().join("dev.csv");
    write_csv(&csv, &[("a fine film", "pos")]);
    let out = dir.path().join("out");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["eval", "--vision", "--model", s(model.path()), "--dev", s(&csv), "--out", s(&out)], vec!["--dev", "--vision"]),
        (vec!["finetune", "--vision", "--out", s(&out), "--train", s(&csv), "--dev", s(&csv)], vec!["--train, --dev"]),
        (
            vec![
                "distill",
                "--image-folder",
                s(dir.path()),
                "--teacher",
                s(model.path()),
                "--out",
                s(&out),
                "--glue",
                s(dir.path()),
                "--task",
                "sst2",
            ],
            vec!["--glue, --task"],
        ),
        (
            vec![
                "concrete",
                "--vision",
                "--teacher",
                s(model.path()),
                "--approx",
                s(model.path()),
                "--out",
                s(&out),
                "--label-column",
                "y",
            ],
            vec!["--label-column"],
        ),
    ];
    for (args, parts) in cases {
        let o = sttabt(&args);
        assert_fails_naming(&o, &args.join(" "), &parts);
        assert!(!out.exists(), "{}: wrote {}", args.join(" "), out.display());
    }
}

#[test]
fn empty_texts_are_errors_naming_their_position() {
    let (model, _) = tiny_classifier("empty");
    let m = s(model.path());
    let r = sttabt(&["classify", "--model", m, "--mode", "dense", "good", "  "]);
    assert_fails_naming(&r, "classify with an empty argument", &["argument 2 is empty"]);
    let r = sttabt(&["embed", "--model", m, ""]);
    assert_fails_naming(&r, "embed with an empty argument", &["argument 1 is empty"]);
    let dir = TempDir::new("empty-lines");
    let f = dir.path().join("texts.txt");
    std::fs::write(&f, "a fine film\n\nanother one\n").unwrap();
    let r = sttabt(&["classify", "--model", m, "--mode", "dense", "--file", s(&f)]);
    assert_fails_naming(&r, "classify with an empty line", &["texts.txt: line 2 is empty"]);
    let r = sttabt(&["embed", "--model", m, "--file", s(&f)]);
    assert_fails_naming(&r, "embed with an empty line", &["texts.txt: line 2 is empty"]);
    let r = sttabt(&["classify", "--model", m, "--mode", "dense", "--pair", "", "a premise"]);
    assert_fails_naming(&r, "classify with an empty pair", &["argument 2 is empty"]);
    // the same inputs without the empty one succeed
    let r = sttabt(&["classify", "--model", m, "--mode", "dense", "good", "bad"]);
    assert!(r.status.success(), "{}", stderr(&r));
    // blank lines at the end of a file are not inputs: two lines in, two lines out
    std::fs::write(&f, "a fine film\nanother one\n\n  \r\n").unwrap();
    let r = sttabt(&["classify", "--model", m, "--mode", "dense", "--file", s(&f)]);
    assert!(r.status.success(), "trailing blank lines: {}", stderr(&r));
    assert_eq!(String::from_utf8_lossy(&r.stdout).lines().count(), 2, "one output line per text");
}

// ---------------------------------------------------------------------------------------------
// eval records its arithmetic; zero timing examples are refused; a closed stdout is not a panic

#[test]
fn eval_names_its_precision_and_refuses_zero_timing_examples() {
    let (model, _) = tiny_classifier("evalprec");
    let dir = TempDir::new("evalprec-data");
    write_glue_dev(dir.path(), "");
    let glue = ["--glue", s(dir.path()), "--task", "sst2"];
    // no --approx: no ApproxNet runs, so none is named
    for (precision, expect) in [("fp32", "teacher fp32"), ("int8", "teacher int8; int8 kernels: ")] {
        let out = dir.path().join(format!("results-{precision}"));
        let mut data = glue.to_vec();
        data.extend(["--precision", precision]);
        let r = eval_quick(model.path(), &data, &out);
        assert!(r.status.success(), "eval --precision {precision} failed:\n{}", stderr(&r));
        let table = String::from_utf8_lossy(&r.stdout);
        assert!(table.contains("3 dev / 3 test examples"), "{table}");
        assert!(table.contains(expect), "eval --precision {precision} does not name it:\n{table}");
        let recorded = common::read_json(out.join("results.json"))["results"]["precision"].as_str().map(str::to_owned);
        assert!(
            recorded.as_deref().is_some_and(|p| p.starts_with(expect) && !p.contains("ApproxNet")),
            "results.json precision {recorded:?}"
        );
    }
    // --int8-rows: every mode again with the teacher in int8, beside fp32 dense; not on top of
    // an int8 run
    let out = dir.path().join("results-int8-rows");
    let mut data = glue.to_vec();
    data.push("--int8-rows");
    let r = eval_quick(model.path(), &data, &out);
    assert!(r.status.success(), "eval --int8-rows failed:\n{}", stderr(&r));
    let res = common::read_json(out.join("results.json"));
    let points = res["results"]["points"].as_array().unwrap();
    assert_eq!((points[0]["family"].as_str(), points[0]["precision"].as_str()), (Some("dense"), Some("fp32")));
    let int8 = points.iter().find(|p| p["family"] == "dense int8").expect("a dense int8 row");
    assert_eq!(int8["precision"], "int8");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    // its arithmetic as the run's line gives it: no ApproxNet runs in dense, the kernels named
    let kernels = format!("; int8 kernels: {}\"", sttabt::precision_eval::int8_kernels_here());
    assert!(csv.lines().any(|l| l.starts_with("dense int8,") && l.ends_with(&format!("\"teacher int8{kernels}"))), "{csv}");

    let mut data = glue.to_vec();
    data.extend(["--int8-rows", "--precision", "int8"]);
    assert_fails_naming(
        &eval_quick(model.path(), &data, &dir.path().join("x")),
        "eval --int8-rows --precision int8",
        &["--int8-rows", "--precision fp32"],
    );
    let zero = dir.path().join("zero");
    let mut args = vec!["eval", "--model", s(model.path())];
    args.extend(glue);
    args.extend(["--timing-examples", "0", "--out", s(&zero)]);
    assert_fails_naming(&sttabt(&args), "eval --timing-examples 0", &["--timing-examples", "at least 1"]);
}

#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let (model, _) = tiny_classifier("pipe");
    let dir = TempDir::new("pipe-data");
    let file = dir.path().join("many.txt");
    std::fs::write(&file, "a gripping film\n".repeat(2000)).expect("write texts");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sttabt"))
        .args(["classify", "--model", s(model.path()), "--mode", "dense", "--file", s(&file)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sttabt");
    // read one line, then close the pipe as `| head -1` does
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("a first line");
    drop(stdout);
    let out = child.wait_with_output().expect("sttabt ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "classify panicked on a closed pipe:\n{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Output directories: a file (or a path under one) as --out is refused before any work

/// `--out` that is a regular file, or a path below one, is an error naming `--out`, the path
/// and the file, for eval and every training job, before any data is read or model loaded
/// (the data and ApproxNet paths below do not exist: reaching them would be another error).
#[test]
fn out_that_is_a_file_is_refused_before_any_work() {
    let (model, _) = tiny_classifier("outfile");
    let m = s(model.path());
    let dir = TempDir::new("outfile-data");
    let file = dir.path().join("afile");
    std::fs::write(&file, "keep me").unwrap();
    let missing = dir.path().join("missing.csv");
    let (f, x) = (s(&file), s(&missing));
    let nowhere = dir.path().join("no-approx");
    let a = s(&nowhere);
    let jobs: Vec<Vec<&str>> = vec![
        vec!["eval", "--model", m, "--dev", x, "--ks", "0.5"],
        vec!["finetune", "--model", m, "--train", x, "--dev", x],
        vec!["finetune", "--model", m, "--train", x, "--dev", x, "--resume"],
        vec!["finetune", "--model", m, "--plan-aware", "--approx", a, "--keep", "0.3", "--train", x, "--dev", x],
        vec!["distill", "--teacher", m, "--train", x, "--dev", x, "--steps", "1"],
        vec!["concrete", "--teacher", m, "--approx", a, "--train", x, "--steps", "1"],
        vec!["ltp", "--teacher", m, "--train", x, "--steps", "1"],
        vec!["train-parity", "--model", m, "--train", x, "--dev", x],
    ];
    let below = file.join("sub");
    for base in &jobs {
        let mut args = base.clone();
        args.extend(["--out", f]);
        assert_fails_naming(&sttabt(&args), &args.join(" "), &[&format!("--out {f}: is a file, not a directory")]);
        let mut args = base.clone();
        args.extend(["--out", s(&below)]);
        assert_fails_naming(&sttabt(&args), &args.join(" "), &[&format!("--out {}: {f} is a file, not a directory", below.display())]);
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me", "the file was overwritten");
}

// ---------------------------------------------------------------------------------------------
// Teacher and ApproxNet directories given to the wrong flag: what it is and where it goes

/// An ApproxNet (or a concrete run) where a teacher or base checkpoint belongs, and an
/// ApproxNet's config.json where its directory belongs, are errors naming the flag, the path
/// and what it is, before anything is loaded (the data file does not exist: reaching it would
/// be another error); eval no longer evaluates an ApproxNet as a plan-aware teacher.
#[test]
fn approxnet_or_file_where_a_teacher_or_approx_dir_belongs_is_named() {
    use sttabt::approx::{ApproxInit, ApproxNet};
    let (model, _) = tiny_classifier("wrongdir");
    let m = s(model.path());
    let dir = TempDir::new("wrongdir-runs");
    let approx = dir.path().join("approx");
    let teacher = sttabt::Encoder::load(model.path()).expect("tiny classifier loads");
    ApproxNet::new(&teacher, 2, ApproxInit::Random, 0).expect("approx net").save(&approx).expect("save approx");
    let a = s(&approx);
    let approx_cfg = approx.join("config.json");
    let ac = s(&approx_cfg);
    // a concrete run: concrete.json beside teacher/
    let run = dir.path().join("concrete_run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("concrete.json"), "{}").unwrap();
    let c = s(&run);
    let missing = dir.path().join("missing.csv");
    let x = s(&missing);
    let out = dir.path().join("out");
    let o = s(&out);
    let is_approx = |flag: &str| format!("{flag} {a} is an ApproxNet (factor 2,");
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (
            vec!["finetune", "--model", a, "--train", x, "--dev", x, "--out", o],
            vec![is_approx("--model"), "not a checkpoint to fine-tune".into()],
        ),
        (
            vec!["finetune", "--model", a, "--plan-aware", "--approx", a, "--keep", "0.3", "--train", x, "--dev", x, "--out", o],
            vec![is_approx("--model"), "not a classifier".into(), format!("pass it as --approx {a}")],
        ),
        (
            vec!["finetune", "--model", m, "--plan-aware", "--approx", ac, "--keep", "0.3", "--train", x, "--dev", x, "--out", o],
            vec![format!("--approx {ac}: is a file, not a directory")],
        ),
        (vec!["finetune", "--model", c, "--train", x, "--dev", x, "--out", o], vec![format!("--model: {c} is a concrete-masking run")]),
        (vec!["distill", "--teacher", a, "--train", x, "--dev", x, "--out", o], vec![is_approx("--teacher"), "not a teacher".into()]),
        (vec!["ltp", "--teacher", a, "--train", x, "--out", o], vec![is_approx("--teacher"), "not a teacher".into()]),
        (
            vec!["concrete", "--teacher", a, "--approx", a, "--train", x, "--out", o],
            vec![is_approx("--teacher"), format!("pass it as --approx {a}")],
        ),
        (
            vec!["concrete", "--teacher", m, "--approx", ac, "--train", x, "--out", o],
            vec![format!("--approx {ac}: is a file, not a directory"), "sttabt distill".into()],
        ),
        (
            vec!["eval", "--model", m, "--plan-aware", a, "--approx", a, "--ks", "0.5", "--dev", x, "--out", o],
            vec![is_approx("--plan-aware"), "not a fine-tuned teacher".into(), "sttabt finetune --plan-aware".into()],
        ),
        (
            vec!["eval", "--model", m, "--plan-aware", c, "--approx", a, "--dev", x, "--out", o],
            vec![format!("--plan-aware: {c} is a concrete")],
        ),
        (vec!["eval", "--model", m, "--approx", ac, "--dev", x, "--out", o], vec![format!("--approx {ac}: is a file, not a directory")]),
        (vec!["classify", "--model", m, "--approx", ac, "a fine film"], vec![format!("--approx {ac}: is a file, not a directory")]),
        (vec!["bench", "--model", m, "--approx", ac, "--rt", "2"], vec![format!("--approx {ac}: is a file, not a directory")]),
        (
            vec!["compress", "--model", m, "--approx", ac, "--dev", x, "--out", o],
            vec![format!("--approx {ac}: is a file, not a directory")],
        ),
        (
            vec!["compress", "--model", m, "--approx", a, "--plan-aware", a, "--dev", x, "--out", o],
            vec![is_approx("--plan-aware"), "not a fine-tuned teacher".into()],
        ),
    ];
    for (args, parts) in cases {
        let r = sttabt(&args);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        assert_fails_naming(&r, &args.join(" "), &parts);
        assert!(!stderr(&r).contains("missing.csv"), "{}: read the data first:\n{}", args.join(" "), stderr(&r));
    }
    assert!(!out.exists(), "a rejected job created its output directory");
}

// ---------------------------------------------------------------------------------------------
// Training hyper-parameters out of range: the flag, not the config struct's field

/// Values the command line accepts but the training config refuses are errors naming the flag
/// (`--hidden-weight must be ...`), not the library's `PlanFtConfig.hidden_weight`, before any
/// model or data is read (the ApproxNet and data paths do not exist).
#[test]
fn out_of_range_training_values_name_the_flag_not_the_config_field() {
    let (model, _) = tiny_classifier("cfgflags");
    let m = s(model.path());
    let dir = TempDir::new("cfgflags-data");
    let missing = dir.path().join("missing.csv");
    let x = s(&missing);
    let nowhere = dir.path().join("no-approx");
    let a = s(&nowhere);
    let out = dir.path().join("out");
    let o = s(&out);
    let plan_aware = ["finetune", "--model", m, "--plan-aware", "--approx", a, "--train", x, "--dev", x, "--out", o];
    let concrete = ["concrete", "--teacher", m, "--approx", a, "--train", x, "--out", o];
    let cases: Vec<(Vec<&str>, &[&str], &str)> = vec![
        (plan_aware.to_vec(), &["--keep", "0"], "--keep must be in (0, 1], got 0"),
        (plan_aware.to_vec(), &["--keep", "1.2"], "--keep must be in (0, 1], got 1.2"),
        (plan_aware.to_vec(), &["--keep", "0.5", "--kd-alpha", "-1"], "--kd-alpha must be a finite number >= 0, got -1"),
        (plan_aware.to_vec(), &["--keep", "0.5", "--kd-temperature", "0"], "--kd-temperature must be a finite number > 0, got 0"),
        (plan_aware.to_vec(), &["--keep", "0.5", "--hidden-weight", "-1"], "--hidden-weight must be a finite number >= 0, got -1"),
        (plan_aware.to_vec(), &["--keep", "0.5", "--hidden-weight", "NaN"], "--hidden-weight must be a finite number >= 0, got NaN"),
        (concrete.to_vec(), &["--hard-frac", "2"], "--hard-frac must be in [0, 1], got 2"),
        (concrete.to_vec(), &["--hard-frac", "-0.5"], "--hard-frac must be in [0, 1], got -0.5"),
        (concrete.to_vec(), &["--theta0", "nan"], "--theta0 must be a finite number"),
        (concrete.to_vec(), &["--theta0", "inf"], "--theta0 must be a finite number"),
        (vec!["distill", "--teacher", m, "--train", x, "--dev", x, "--out", o], &["--factor", "0"], "--factor must be one of 2, 4, 8, 16"),
    ];
    for (mut args, extra, want) in cases {
        args.extend_from_slice(extra);
        let r = sttabt(&args);
        assert_fails_naming(&r, &args.join(" "), &[want]);
        let err = stderr(&r);
        let field = want.split(' ').next().unwrap_or_default().trim_start_matches('-').replace('-', "_");
        assert!(!err.contains("Config.") && !err.contains(&format!(" {field} ")), "{}: names the config field:\n{err}", args.join(" "));
        assert!(!err.contains("missing.csv") && !err.contains("no-approx"), "{}: loaded first:\n{err}", args.join(" "));
    }
    assert!(!out.exists(), "a rejected job created its output directory");
}

// ---------------------------------------------------------------------------------------------
// The `data:` line of the training jobs gives the rows they read

/// `--train-limit` (and finetune's `--dev-limit`, distill's `--heldout`) show in the `data:`
/// line as eval's `--limit` does: `train=FILE (2 of 4 rows)`.
#[test]
fn training_data_line_gives_the_rows_read() {
    use sttabt::approx::{ApproxInit, ApproxNet};
    let (model, _) = tiny_classifier("datalimit");
    let m = s(model.path());
    let dir = TempDir::new("datalimit-data");
    let (train, dev) = (dir.path().join("train.csv"), dir.path().join("dev.csv"));
    write_csv(&train, &[("a gripping, funny film", "pos"), ("dull and long", "neg"), ("a joy", "pos"), ("flat", "neg")]);
    write_csv(&dev, &[("wonderful acting", "pos"), ("a bore", "neg")]);
    let (t, d) = (s(&train), s(&dev));
    let approx = dir.path().join("approx");
    let teacher = sttabt::Encoder::load(model.path()).expect("tiny classifier loads");
    ApproxNet::new(&teacher, 2, ApproxInit::Random, 0).expect("approx net").save(&approx).expect("save approx");
    let a = s(&approx);
    let out = |name: &str| dir.path().join(name).display().to_string();
    let (o1, o2, o3, o4, o5) = (out("ft"), out("pa"), out("di"), out("co"), out("lt"));
    let tr = format!("train={t} (2 of 4 rows)");
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (
            vec![
                "finetune",
                "--model",
                m,
                "--train",
                t,
                "--dev",
                d,
                "--train-limit",
                "2",
                "--dev-limit",
                "1",
                "--epochs",
                "1",
                "--out",
                &o1,
            ],
            vec![format!("data: {tr}, dev={d} (1 of 2 rows)")],
        ),
        (
            vec!["finetune", "--model", m, "--plan-aware", "--approx", a, "--keep", "0.5", "--train", t, "--dev", d, "--train-limit", "2"],
            vec![format!("data: {tr}, dev={d} (2 rows)")],
        ),
        (
            vec!["distill", "--teacher", m, "--train", t, "--dev", d, "--train-limit", "2", "--heldout", "1", "--steps", "1", "--out", &o3],
            vec![format!("data: {tr}, dev={d} (1 of 2 rows)")],
        ),
        (
            vec!["concrete", "--teacher", m, "--approx", a, "--train", t, "--train-limit", "2", "--steps", "1", "--out", &o4],
            vec![format!("data: {tr}")],
        ),
        (vec!["ltp", "--teacher", m, "--train", t, "--train-limit", "2", "--steps", "1", "--out", &o5], vec![format!("data: {tr}")]),
    ];
    for (mut args, parts) in cases {
        if args.contains(&"--plan-aware") {
            args.extend(["--epochs", "1", "--out", &o2]);
        }
        args.extend(["--batch-size", "2"]);
        let r = sttabt(&args);
        let err = stderr(&r);
        assert!(r.status.success(), "{} failed:\n{err}", args.join(" "));
        for p in parts {
            assert!(err.contains(&p), "{}: expected {p:?} in stderr:\n{err}", args.join(" "));
        }
    }
}
