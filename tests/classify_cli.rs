//! `sttabt classify` as an inference front end, through the command line, checked against the
//! library: sentence pairs (`--pair`, TEXT<TAB>PAIR files), per-layer `--keep` lists (ABT,
//! ALGORITHM.md section 3), `--explain --json` char offsets, concrete and LTP run directories
//! (tiny runs trained here on the real all-MiniLM-L6-v2), and bad input (clear errors, no panics).

mod common;

use std::path::Path;
use std::process::Command;

use common::TempDir;
use serde_json::Value;
use sttabt::infer::{classify, Mode};
use sttabt::model::EncodedInput;
use sttabt::planners::abt::{keep_count, AbtConfig};
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::Encoder;

/// Run the binary: (success, stdout, stderr).
fn sttabt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sttabt")).args(args).output().expect("run sttabt");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Run the binary and parse its JSON lines; panics with its output when it fails.
fn json_lines(args: &[&str]) -> Vec<Value> {
    let (ok, stdout, stderr) = sttabt(args);
    assert!(ok, "sttabt {args:?} failed:\n{stdout}\n{stderr}");
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// Run the binary, expecting a clean failure whose message contains every one of `parts`.
fn expect_error(args: &[&str], parts: &[&str]) {
    let (ok, stdout, stderr) = sttabt(args);
    assert!(!ok, "sttabt {args:?} should fail, printed:\n{stdout}");
    assert!(!stderr.contains("panicked"), "sttabt {args:?} panicked:\n{stderr}");
    assert!(stderr.starts_with("error:"), "sttabt {args:?}: no error line:\n{stderr}");
    for p in parts {
        assert!(stderr.contains(p), "sttabt {args:?}: error lacks {p:?}:\n{stderr}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// all-MiniLM-L6-v2 with a fresh 2-label head, saved as a classifier checkpoint in `dir`
/// (with the tokenizer files): what `sttabt finetune` writes, minus the training.
fn write_teacher(dir: &Path) -> Encoder {
    let base = Encoder::load(&common::minilm_dir()).expect("load all-MiniLM-L6-v2");
    let m = sttabt::train::finetune::with_new_head(base, vec!["negative".into(), "positive".into()], 7);
    sttabt::train::save_hf_checkpoint(&m, dir, Some(&common::minilm_dir())).expect("save teacher");
    Encoder::load(dir).expect("reload teacher")
}

/// An (untrained, interpolated) ApproxNet of `teacher`, saved in `dir`.
fn write_approx(teacher: &Encoder, dir: &Path) -> sttabt::approx::ApproxNet {
    let a = sttabt::approx::ApproxNet::new(teacher, 4, sttabt::approx::ApproxInit::Interpolate, 0).expect("ApproxNet");
    a.save(dir).expect("save ApproxNet");
    sttabt::approx::ApproxNet::load(dir, &teacher.config).expect("reload ApproxNet")
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("integer") as usize).collect()
}

fn assert_close(cli: &[f32], lib: &[f32], what: &str) {
    assert_eq!(cli.len(), lib.len(), "{what}: logit count");
    let d = common::max_abs_diff(cli, lib);
    assert!(d <= 1e-5, "{what}: CLI logits {cli:?} vs library {lib:?} (max diff {d})");
}

const LONG: &str = "The film starts slowly, but the second half is a gripping, funny and surprisingly moving story about two brothers who never learned to talk to each other.";

#[test]
fn pairs_match_library_pair_encoding() {
    let dir = TempDir::new("classify-pairs");
    let t = dir.path().join("teacher");
    let teacher = write_teacher(&t);
    let tok = TextTokenizer::from_dir(&t, 128).unwrap();
    let (a, b) = ("A man is playing a guitar on stage.", "Someone performs music for a crowd.");
    let lib = |a: &str, b: Option<&str>| {
        let enc = tok.encode(a, b).unwrap();
        let p = classify(&teacher, None, &[enc.input.clone()], &Mode::Dense).unwrap().remove(0);
        (enc, p)
    };

    // --pair: one pair with the positional TEXT
    let rec = json_lines(&["classify", "--model", s(&t), "--mode", "dense", "--json", a, "--pair", b]).remove(0);
    let (enc, p) = lib(a, Some(b));
    assert_eq!(rec["text"], a);
    assert_eq!(rec["pair"], b);
    assert!(rec.get("bundle").is_none(), "no `bundle` field without --bundle: {rec}");
    assert_eq!(rec["precision"], serde_json::json!({"teacher": "fp32", "approx": null}), "no ApproxNet runs in dense mode: {rec}");
    let int8 = json_lines(&["classify", "--model", s(&t), "--mode", "dense", "--precision", "int8", "--json", a]).remove(0);
    assert_eq!(int8["precision"]["teacher"], "int8", "{int8}");
    // int8-w7 (7-bit weights): named as such, close to int8 but its own numbers
    let w7 = json_lines(&["classify", "--model", s(&t), "--mode", "dense", "--precision", "int8-w7", "--json", a]).remove(0);
    assert_eq!(w7["precision"]["teacher"], "int8-w7", "{w7}");
    let (l8, l7) = (f32s(&int8["logits"]), f32s(&w7["logits"]));
    assert!(common::max_abs_diff(&l8, &l7) > 0.0 && common::max_abs_diff(&l8, &l7) < 0.1, "int8 {l8:?} vs int8-w7 {l7:?}");
    let tokens: Vec<String> = rec["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    assert_eq!(tokens, enc.tokens, "pair tokens");
    assert_eq!(tokens.iter().filter(|t| *t == "[SEP]").count(), 2, "[CLS] TEXT [SEP] PAIR [SEP]: {tokens:?}");
    assert!(enc.input.type_ids.contains(&1), "the pair has token type 1");
    assert_close(&f32s(&rec["logits"]), &p.logits, "--pair");
    // a pair is not the text alone
    let (_, alone) = lib(a, None);
    assert!(common::max_abs_diff(&alone.logits, &p.logits) > 1e-6, "the pair changed nothing");

    // a TEXT<TAB>PAIR file (CRLF line ends too), one record per line in order, ABT on the teacher's attention
    let file = dir.path().join("pairs.tsv");
    let pairs = [(a, b), ("The cat sat on the mat.", "A cat is sitting on a rug."), ("It rains.", "The sun is out.")];
    let body: String = pairs.iter().map(|(x, y)| format!("{x}\t{y}\r\n")).collect();
    std::fs::write(&file, body).unwrap();
    let recs = json_lines(&["classify", "--model", s(&t), "--mode", "abt-actual", "--keep", "0.5", "--json", "--file", s(&file)]);
    assert_eq!(recs.len(), pairs.len());
    for (rec, (x, y)) in recs.iter().zip(pairs) {
        assert_eq!(rec["text"], x);
        assert_eq!(rec["pair"], y);
        let enc = tok.encode(x, Some(y)).unwrap();
        let p = classify(&teacher, None, &[enc.input], &Mode::AbtActual { k: 0.5 }).unwrap().remove(0);
        assert_close(&f32s(&rec["logits"]), &p.logits, "pair file");
        assert_eq!(usizes(&rec["inputs_per_layer"]), (0..6).map(|l| p.plan.inputs(l).len()).collect::<Vec<_>>());
    }

    // plain text output: the pair is the last column
    let (ok, stdout, stderr) = sttabt(&["classify", "--model", s(&t), "--mode", "dense", a, "--pair", b]);
    assert!(ok, "{stderr}");
    assert!(stdout.trim_end().ends_with(&format!("{a}\t{b}")), "{stdout}");
}

#[test]
fn per_layer_keep_list_gives_the_abt_plan() {
    let dir = TempDir::new("classify-keep");
    let t = dir.path().join("teacher");
    let ap = dir.path().join("approx");
    let teacher = write_teacher(&t);
    let approx = write_approx(&teacher, &ap);
    let tok = TextTokenizer::from_dir(&t, 128).unwrap();
    let enc = tok.encode(LONG, None).unwrap();
    let n = enc.input.len();
    let ks = [0.9, 0.7, 0.5, 0.4, 0.3, 0.3];
    let keep_arg = "0.9,0.7,0.5,0.4,0.3,0.3";
    let sizes = |p: &sttabt::plan::TokenPlan| (0..6).map(|l| p.inputs(l).len()).collect::<Vec<_>>();

    for (mode, net) in [("abt", &approx.model), ("abt-actual", &teacher)] {
        let mut args = vec!["classify", "--model", s(&t), "--mode", mode, "--keep", keep_arg, "--json", LONG];
        if mode == "abt" {
            args.extend(["--approx", s(&ap)]);
        }
        let rec = json_lines(&args).remove(0);
        let got = usizes(&rec["inputs_per_layer"]);
        // the library's plan: ABT section 3 with k_l per layer
        let cfg = AbtConfig { top: teacher.top_tokens(), ..AbtConfig::topk_per_layer(ks.to_vec()) };
        let plan = sttabt::planners::abt::abt_plans(net, &[enc.input.clone()], &cfg).unwrap().remove(0);
        assert_eq!(got, sizes(&plan), "{mode}: |I_l| per layer");
        // section 3: I_l = TopK_c(s) ∪ O_l with c = ceil(k_l n), O_l = I_{l+1}, O_L = {CLS}
        for l in 0..6 {
            let c = keep_count(ks[l], n);
            let above = if l + 1 < 6 { got[l + 1] } else { 1 };
            assert!(got[l] >= c && got[l] <= c + above, "{mode} layer {}: |I_l| = {} for c = {c}, |O_l| = {above}", l + 1, got[l]);
        }
        let lib = classify(
            &teacher,
            Some(&approx.model),
            &[enc.input.clone()],
            &if mode == "abt" { Mode::AbtPerLayer { k: ks.to_vec() } } else { Mode::AbtActualPerLayer { k: ks.to_vec() } },
        )
        .unwrap()
        .remove(0);
        assert_close(&f32s(&rec["logits"]), &lib.logits, mode);
        assert!((rec["retention"].as_f64().unwrap() - lib.plan.retention()).abs() < 1e-12);
        assert!(rec["mode"].as_str().unwrap().contains("0.90,0.70,0.50,0.40,0.30,0.30"), "{}", rec["mode"]);
    }

    // one value = the same k on every layer = the single-k mode
    let one = json_lines(&["classify", "--model", s(&t), "--mode", "abt-actual", "--keep", "0.4", "--json", LONG]).remove(0);
    let six =
        json_lines(&["classify", "--model", s(&t), "--mode", "abt-actual", "--keep", "0.4,0.4,0.4,0.4,0.4,0.4", "--json", LONG]).remove(0);
    let lib = classify(&teacher, None, &[enc.input.clone()], &Mode::AbtActual { k: 0.4 }).unwrap().remove(0);
    assert_eq!(usizes(&one["inputs_per_layer"]), sizes(&lib.plan));
    assert_eq!(usizes(&six["inputs_per_layer"]), sizes(&lib.plan));
    assert_eq!(one["logits"], six["logits"]);
}

#[test]
fn explain_json_offsets_slice_the_original_text() {
    let dir = TempDir::new("classify-explain");
    let t = dir.path().join("teacher");
    write_teacher(&t);
    let text = "The movie's plot was surprisingly gripping, and unbelievably well-acted!";
    // a multi-byte char before the words: char offsets differ from byte offsets
    let pair = "Café crème: «excellent» acting, dull script.";
    let slice = |s: &str, a: usize, b: usize| -> String { s.chars().skip(a).take(b - a).collect() };

    // dense: every token is read by every layer
    let rec = json_lines(&["classify", "--model", s(&t), "--mode", "dense", "--explain", "--json", text, "--pair", pair]).remove(0);
    let tokens = rec["tokens"].as_array().unwrap();
    let ex = rec["explain"].as_array().expect("explain array");
    assert_eq!(ex.len(), tokens.len(), "dense keeps every token");
    let mut seen_pair = false;
    for (j, e) in ex.iter().enumerate() {
        let tok = e["token"].as_str().unwrap();
        assert_eq!(e["index"], j);
        assert_eq!(e["token"], tokens[j]);
        assert_eq!(e["last_layer"], 6);
        if tok == "[CLS]" || tok == "[SEP]" {
            assert!(e["segment"].is_null() && e["char_start"].is_null() && e["char_end"].is_null(), "special token with offsets: {e}");
            continue;
        }
        let (a, b) = (e["char_start"].as_u64().unwrap() as usize, e["char_end"].as_u64().unwrap() as usize);
        assert!(a < b, "empty span: {e}");
        if tok == "[UNK]" {
            continue;
        }
        let surface = tok.trim_start_matches("##");
        match e["segment"].as_u64() {
            Some(0) => assert_eq!(slice(text, a, b).to_lowercase(), surface, "text token {j}: {e}"),
            Some(1) => {
                seen_pair = true;
                let got = slice(pair, a, b).to_lowercase();
                // the tokenizer strips accents: compare the ASCII words exactly
                if got.is_ascii() {
                    assert_eq!(got, surface, "pair token {j}: {e}");
                } else {
                    assert_eq!(got.chars().count(), surface.chars().count(), "pair token {j}: {e}");
                }
            }
            other => panic!("token {j} has segment {other:?}: {e}"),
        }
    }
    assert!(seen_pair, "no token of the pair");
    let acting = ex.iter().find(|e| e["token"] == "acting" && e["segment"] == 1).expect("'acting' in the pair");
    let byte_start = pair.find("acting").unwrap();
    let char_start = pair[..byte_start].chars().count();
    assert_ne!(byte_start, char_start, "the test needs multi-byte chars before 'acting'");
    assert_eq!(acting["char_start"], char_start, "offsets are in chars, not bytes");

    // pruned: only the tokens layer 1 reads, each with the last layer that reads it
    let rec = json_lines(&[
        "classify",
        "--model",
        s(&t),
        "--mode",
        "abt-actual",
        "--keep",
        "0.6,0.5,0.4,0.3,0.2,0.1",
        "--explain",
        "--json",
        text,
    ])
    .remove(0);
    let depth = usizes(&rec["survives_to_layer"]);
    let ex = rec["explain"].as_array().unwrap();
    let kept: Vec<usize> = (0..depth.len()).filter(|&j| depth[j] > 0).collect();
    assert!(kept.len() < depth.len(), "k_1 = 0.6 dropped nothing: {depth:?}");
    assert_eq!(ex.iter().map(|e| e["index"].as_u64().unwrap() as usize).collect::<Vec<_>>(), kept);
    let per_layer = usizes(&rec["inputs_per_layer"]);
    for e in ex {
        let j = e["index"].as_u64().unwrap() as usize;
        assert_eq!(e["last_layer"], depth[j]);
        if let (Some(a), Some(b)) = (e["char_start"].as_u64(), e["char_end"].as_u64()) {
            assert_eq!(slice(text, a as usize, b as usize).to_lowercase(), e["token"].as_str().unwrap().trim_start_matches("##"));
        }
    }
    for (l, &size) in per_layer.iter().enumerate() {
        assert_eq!(depth.iter().filter(|&&d| d > l).count(), size, "layer {}: tokens with last_layer >= l", l + 1);
    }
}

/// A small `sttabt concrete` run (batch 4) of `teacher` and `approx` into `out`, with `extra` flags.
fn train_concrete(teacher: &Path, approx: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["concrete", "--teacher", s(teacher), "--approx", s(approx), "--out", s(out), "--batch-size", "4", "--quiet"];
    args.extend(extra);
    let (ok, stdout, stderr) = sttabt(&args);
    assert!(ok, "sttabt concrete failed:\n{stdout}\n{stderr}");
}

#[test]
fn concrete_run_dir() {
    let dir = TempDir::new("classify-concrete");
    let (t, ap, run) = (dir.path().join("teacher"), dir.path().join("approx"), dir.path().join("concrete"));
    let teacher = write_teacher(&t);
    write_approx(&teacher, &ap);
    train_concrete(&t, &ap, &run, &["--steps", "2", "--train-limit", "8"]);
    let text = "An honest, warm and very funny film.";
    let rec = json_lines(&["classify", "--concrete", s(&run), "--json", text]).remove(0);
    assert!(rec["mode"].as_str().unwrap().starts_with("concrete"), "{}", rec["mode"]);
    // the library with the run's own teacher and ApproxNet
    let c = sttabt::train::concrete::ConcreteModel::load(&run).unwrap();
    let tok = TextTokenizer::from_dir(&run.join("teacher"), 128).unwrap();
    let x: EncodedInput = tok.encode(text, None).unwrap().input;
    let p =
        classify(&c.teacher, Some(&c.approx.model), &[x], &Mode::Concrete { theta0: c.theta0, theta: c.theta.clone() }).unwrap().remove(0);
    assert_close(&f32s(&rec["logits"]), &p.logits, "concrete");
    assert_eq!(usizes(&rec["inputs_per_layer"]), (0..6).map(|l| p.plan.inputs(l).len()).collect::<Vec<_>>());
    assert!((rec["retention"].as_f64().unwrap() - p.retention).abs() < 1e-12);
    // --mode concrete spelled out, and a pair, work too
    let (ok, _, stderr) = sttabt(&["classify", "--mode", "concrete", "--concrete", s(&run), text, "--pair", "It is."]);
    assert!(ok, "{stderr}");
    // the run carries its own teacher: --model, --approx and --keep are refused, not ignored
    expect_error(&["classify", "--concrete", s(&run), "--model", s(&t), text], &["--model", "own"]);
    expect_error(&["classify", "--concrete", s(&run), "--keep", "0.5", text], &["--keep", "concrete"]);
    expect_error(&["classify", "--concrete", s(&run), "--mode", "abt", text], &["--concrete", "--mode abt"]);
    // a concrete run given as an LTP run, or its marker file given as the run, says what it is
    expect_error(&["classify", "--ltp", s(&run), text], &["is a concrete-masking run (concrete.json), not an LTP run", "--concrete"]);
    expect_error(&["classify", "--concrete", s(&run.join("concrete.json")), text], &["is a file, not a directory"]);

    // a run whose thresholds keep nothing of the text (θ0 = -20: π ≈ 2e-9, so only the nested
    // CLS row survives) still answers, with a warning that the answer ignores the text
    let none = dir.path().join("concrete-none");
    train_concrete(&t, &ap, &none, &["--theta0=-20", "--steps", "1", "--train-limit", "4"]);
    let (ok, _, stderr) = sttabt(&["classify", "--concrete", s(&none), text]);
    assert!(ok && stderr.contains("warning: input 1: the planner kept no token of the text"), "{stderr}");
    let (ok, _, stderr) = sttabt(&["classify", "--model", s(&t), "--mode", "dense", text]);
    assert!(ok && !stderr.contains("kept no token"), "dense reads every token: {stderr}");
}

#[test]
fn ltp_run_dir() {
    let dir = TempDir::new("classify-ltp");
    let (t, run) = (dir.path().join("teacher"), dir.path().join("ltp"));
    write_teacher(&t);
    let (ok, stdout, stderr) =
        sttabt(&["ltp", "--teacher", s(&t), "--out", s(&run), "--steps", "2", "--batch-size", "4", "--train-limit", "8", "--quiet"]);
    assert!(ok, "sttabt ltp failed:\n{stdout}\n{stderr}");
    let text = "A dull, lifeless remake.";
    let rec = json_lines(&["classify", "--ltp", s(&run), "--explain", "--json", text]).remove(0);
    assert!(rec["mode"].as_str().unwrap().starts_with("ltp"), "{}", rec["mode"]);
    let m = sttabt::train::ltp::LtpModel::load(&run).unwrap();
    let tok = TextTokenizer::from_dir(&run.join("teacher"), 128).unwrap();
    let x = tok.encode(text, None).unwrap().input;
    let p = classify(&m.teacher, None, &[x], &Mode::Ltp { lambda: m.lambda, theta: m.theta.clone(), score: m.score }).unwrap().remove(0);
    assert_close(&f32s(&rec["logits"]), &p.logits, "ltp");
    assert_eq!(usizes(&rec["inputs_per_layer"]), (0..6).map(|l| p.plan.inputs(l).len()).collect::<Vec<_>>());
    assert!(rec["explain"].as_array().is_some_and(|e| !e.is_empty()));
    expect_error(&["classify", "--ltp", s(&run), "--keep", "0.5", text], &["--keep", "ltp"]);
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = TempDir::new("classify-bad");
    let t = dir.path().join("teacher");
    write_teacher(&t);
    let m = s(&t);
    let text = "A fine film.";
    // a text the tokenizer reduces to its special tokens (zero-width / control characters) is
    // refused, naming which input, before anything is printed
    let (ok, stdout, stderr) = sttabt(&["classify", "--model", m, "--mode", "dense", text, "\u{200b}"]);
    assert!(!ok && stdout.is_empty() && stderr.contains("input 2: the tokenizer keeps nothing of it"), "{stdout}\n{stderr}");
    expect_error(&["embed", "--model", m, "\u{1}\u{2}"], &["text 1", "keeps nothing"]);
    // each side of a pair on its own
    expect_error(&["classify", "--model", m, "--mode", "dense", text, "--pair", "\u{200b}"], &["input 1", "nothing of its pair"]);
    // a file that is not UTF-8: the line of the first bad byte
    let bad = dir.path().join("latin1.txt");
    std::fs::write(&bad, b"good film\nbad \xff film\n").unwrap();
    expect_error(&["classify", "--model", m, "--mode", "dense", "--file", s(&bad)], &["latin1.txt: line 2 is not valid UTF-8"]);
    expect_error(&["embed", "--model", m, "--file", s(&bad)], &["latin1.txt: line 2 is not valid UTF-8"]);
    // --keep: wrong count, out of range, not a number, a list for topk, keep where it means nothing
    expect_error(&["classify", "--model", m, "--mode", "abt-actual", "--keep", "0.9,0.5", text], &["--keep", "2 values", "6 layers"]);
    expect_error(
        &["classify", "--model", m, "--mode", "abt-actual", "--keep", "0.9,0.7,0.5,0.4,0.3,0.3,0.2", text],
        &["7 values", "6 layers"],
    );
    expect_error(&["classify", "--model", m, "--mode", "abt-actual", "--keep", "0", text], &["--keep", "(0, 1]"]);
    expect_error(&["classify", "--model", m, "--mode", "abt-actual", "--keep", "0.9,0.7,0,0.4,0.3,0.3", text], &["value 3 is 0", "(0, 1]"]);
    expect_error(&["classify", "--model", m, "--mode", "abt-actual", "--keep", "1.5", text], &["(0, 1]"]);
    expect_error(&["classify", "--model", m, "--mode", "abt-actual", "--keep", "0.5,,0.5", text], &["not a number"]);
    expect_error(&["classify", "--model", m, "--mode", "topk", "--keep", "0.9,0.7,0.5,0.4,0.3,0.3", text], &["topk", "one --keep value"]);
    expect_error(&["classify", "--model", m, "--mode", "dense", "--keep", "0.5", text], &["--keep", "dense"]);
    // an ApproxNet (or its precision) where no ApproxNet runs is refused, not ignored
    expect_error(&["classify", "--model", m, "--approx", m, "--mode", "topk", text], &["--approx", "--mode topk"]);
    expect_error(&["classify", "--model", m, "--mode", "dense", "--approx-precision", "int8", text], &["--approx-precision int8", "dense"]);
    // pair files: the malformed line is named file:line
    let f = dir.path().join("bad.tsv");
    std::fs::write(&f, "good text\tgood pair\nsecond\tpair\nno tab on this line\n").unwrap();
    expect_error(&["classify", "--model", m, "--mode", "dense", "--file", s(&f)], &[&format!("{}:3:", f.display()), "TEXT<TAB>PAIR"]);
    std::fs::write(&f, "a\tb\tc\n").unwrap();
    expect_error(&["classify", "--model", m, "--mode", "dense", "--file", s(&f)], &[&format!("{}:1:", f.display()), "3 tab-separated"]);
    std::fs::write(&f, "a\tb\n\t b\n").unwrap();
    expect_error(&["classify", "--model", m, "--mode", "dense", "--file", s(&f)], &[&format!("{}:2:", f.display()), "TEXT", "empty"]);
    // --pair needs exactly one TEXT
    expect_error(&["classify", "--model", m, "--mode", "dense", "one", "two", "--pair", "p"], &["--pair", "exactly one"]);
    // run directories that are not there
    let missing = dir.path().join("no-such-run");
    expect_error(&["classify", "--concrete", s(&missing), text], &["--concrete", "no-such-run", "sttabt concrete"]);
    expect_error(&["classify", "--ltp", s(&missing), text], &["--ltp", "no-such-run", "sttabt ltp"]);
    // a directory that is not a run
    expect_error(&["classify", "--concrete", m, text], &["concrete.json"]);
    expect_error(&["classify", "--mode", "ltp", "--model", m, text], &["--mode ltp needs --ltp DIR"]);
}

#[test]
fn an_approxnet_given_as_model_is_named_with_how_to_pass_it() {
    let tmp = TempDir::new("approx-as-model");
    let (tdir, adir) = (tmp.path().join("teacher"), tmp.path().join("approx"));
    let teacher = write_teacher(&tdir);
    write_approx(&teacher, &adir);
    let a = s(&adir);
    let parts = ["is an ApproxNet (factor 4, teacher hidden size 384", &format!("pass it as --approx {a}"), "its teacher", "as --model"];
    expect_error(&["classify", "--model", a, "A fine film."], &parts);
    expect_error(&["classify", "--model", a, "--approx", a, "--mode", "dense", "A fine film."], &parts);
    expect_error(&["eval", "--model", a, "--limit", "2", "--out", s(&tmp.path().join("eval"))], &parts);
    expect_error(&["bench", "--model", a, "--synth-examples", "1"], &parts);
    // a concrete or LTP run directory (its models in RUN/teacher, no config.json of its own)
    for (marker, what, flag) in [("concrete.json", "is a concrete-masking run", "--concrete"), ("ltp.json", "is an LTP run", "--ltp")] {
        let run = tmp.path().join(marker.replace(".json", "_run"));
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join(marker), "{}").unwrap();
        let r = s(&run);
        let parts = [format!("--model: {r} {what}"), format!("its teacher is {}", run.join("teacher").display()), format!("{flag} {r}")];
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        expect_error(&["classify", "--model", r, "A fine film."], &parts);
        expect_error(&["eval", "--model", r, "--limit", "2", "--out", s(&tmp.path().join("eval2"))], &parts);
    }
}

#[test]
fn the_approxnet_precision_is_named_only_when_one_runs() {
    let tmp = TempDir::new("approx-precision");
    let (tdir, adir) = (tmp.path().join("teacher"), tmp.path().join("approx"));
    let teacher = write_teacher(&tdir);
    write_approx(&teacher, &adir);
    let (t, a, text) = (s(&tdir), s(&adir), "A fine film.");
    // dense: the teacher alone runs (an --approx beside it is refused, bad_input_gives_clear_errors)
    {
        let mut args = vec!["classify", "--model", t, "--mode", "dense", "--precision", "int8", text];
        let (ok, _, err) = sttabt(&args);
        assert!(ok, "{err}");
        assert!(err.contains("precision: teacher int8; int8 kernels: "), "{err}");
        assert!(!err.contains("ApproxNet"), "dense runs no ApproxNet: {err}");
        args.push("--json");
        let rec = json_lines(&args).remove(0);
        let kernels = sttabt::precision_eval::int8_kernels_here();
        assert_eq!(rec["precision"], serde_json::json!({"teacher": "int8", "approx": null, "int8_kernels": kernels}), "{rec}");
    }
    // ABT: the ApproxNet runs and is named
    let args = ["classify", "--model", t, "--approx", a, "--keep", "0.5", "--precision", "int8", text];
    let (ok, _, err) = sttabt(&args);
    assert!(ok, "{err}");
    assert!(err.contains("precision: teacher int8, ApproxNet fp32; int8 kernels: "), "{err}");
    let mut args = args.to_vec();
    args.push("--json");
    let rec = json_lines(&args).remove(0);
    let kernels = sttabt::precision_eval::int8_kernels_here();
    assert_eq!(rec["precision"], serde_json::json!({"teacher": "int8", "approx": "fp32", "int8_kernels": kernels}), "{rec}");
}

#[test]
fn info_names_an_approxnet_and_its_teacher_shape() {
    let tmp = TempDir::new("info-approx");
    let (tdir, adir) = (tmp.path().join("teacher"), tmp.path().join("approx"));
    let teacher = write_teacher(&tdir);
    write_approx(&teacher, &adir);
    let (ok, out, err) = sttabt(&["info", s(&adir)]);
    assert!(ok, "info on an ApproxNet failed:\n{err}");
    assert!(out.contains("ApproxNet   factor 4 of a teacher with hidden 384, 6 layers, 12 heads"), "{out}");
    assert!(out.contains("hidden 96"), "{out}");
    let v: Value = serde_json::from_str(&sttabt(&["info", s(&adir), "--json"]).1).expect("info --json");
    assert_eq!(v["approxnet"]["meta"]["factor"], 4, "{v}");
    assert_eq!(v["approxnet"]["meta"]["teacher_num_layers"], 6, "{v}");
    // a teacher is not an ApproxNet
    let (ok, out, _) = sttabt(&["info", s(&tdir)]);
    assert!(ok && !out.contains("ApproxNet"), "{out}");
    let v: Value = serde_json::from_str(&sttabt(&["info", s(&tdir), "--json"]).1).expect("info --json");
    assert!(v["approxnet"].is_null(), "{v}");
}

#[test]
fn truncated_inputs_are_named_then_summed_up() {
    let dir = TempDir::new("classify-cuts");
    let t = dir.path().join("teacher");
    write_teacher(&t);
    let tok = TextTokenizer::from_dir(&t, 8).unwrap();
    // seven texts over 8 tokens, one under: the first five cut ones are named, then one total
    let texts: Vec<String> = (0..8)
        .map(|i| if i == 2 { "short one".to_string() } else { format!("the film number {i} is long and slow and dull and far too long") })
        .collect();
    let file = dir.path().join("long.txt");
    std::fs::write(&file, texts.join("\n")).unwrap();
    let (ok, _, stderr) = sttabt(&["classify", "--model", s(&t), "--mode", "dense", "--max-length", "8", "--file", s(&file)]);
    assert!(ok, "{stderr}");
    let named: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning: input ")).collect();
    let cut = |i: usize| tok.encode(&texts[i], None).unwrap().truncated;
    let expected: Vec<String> =
        [0, 1, 3, 4, 5].iter().map(|&i| format!("warning: input {}: {} tokens cut (--max-length 8)", i + 1, cut(i))).collect();
    assert_eq!(named, expected, "{stderr}");
    let total: usize = (0..8).map(cut).sum();
    assert_eq!(cut(2), 0);
    assert!(
        stderr.contains(&format!("warning: 7 of 8 inputs were cut to --max-length 8 ({total} tokens in all; the first 5 are named above)")),
        "{stderr}"
    );
    // --json records each input's cut tokens
    let recs = json_lines(&["classify", "--model", s(&t), "--mode", "dense", "--max-length", "8", "--json", "--file", s(&file)]);
    let cuts: Vec<usize> = recs.iter().map(|r| r["tokens_cut"].as_u64().unwrap() as usize).collect();
    assert_eq!(cuts, (0..8).map(cut).collect::<Vec<_>>());
    // a --max-length above the model's positions: the warnings name the length in force
    let max_pos = Encoder::load(&t).unwrap().config.max_tokens();
    let long = format!("{} end", "word ".repeat(max_pos + 5));
    let (ok, _, stderr) = sttabt(&["classify", "--model", s(&t), "--mode", "dense", "--max-length", "9999", &long]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains(&format!("using --max-length {max_pos}")), "{stderr}");
    assert!(stderr.contains(&format!("tokens cut (--max-length {max_pos})")), "the cut names the capped length: {stderr}");
}
