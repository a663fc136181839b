//! Int8 execution in the model (issue 17): all-MiniLM-L6-v2 with its encoder layers' linear
//! layers in int8 against the fp32 model and the transformers reference
//! (`../shared/reference/minilm`): pooled embeddings (cosine >= 0.999, the goal; measured
//! 0.9991 on the 2-token case3_empty, >= 0.9994 on the others, with the calibrated smoothing and
//! f32 outlier channels of `exec::calibrate`), classifier logits
//! (max |Δ| <= 0.05), ABT plans that do not depend on the teacher's precision, the hard-mask
//! forward equal to gathered execution, the CLI's `--precision int8`, and every int8 kernel path
//! this CPU has (AMX-INT8, AVX-512 VNNI, AVX2, fallback; child processes with `STTABT_NO_AMX`,
//! `STTABT_NO_VNNI` and `STTABT_NO_INT8_AVX2` force the slower ones) - each test names the paths
//! that ran.

mod common;
use common::*;

use std::process::Command;
use std::sync::OnceLock;

use sttabt::kernels::int8::Int8Kernel;
use sttabt::model::{mean_pool_normalized, Linear, Precision};
use sttabt::planners::abt::{Abt, AttentionSource};
use sttabt::planners::{Models, Planner, Schedule};
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{EncodedInput, Encoder, RunOptions, TokenPlan};

/// Lowest cosine accepted between int8 and fp32 / reference embeddings (issue 17).
const COSINE_MIN: f64 = 0.999;

const CASES: [&str; 5] = ["case1_short", "case2_unicode", "case3_empty", "case4_pair", "case5_long_truncated"];

fn case(name: &str) -> serde_json::Value {
    read_json(reference_dir().join("minilm").join(format!("{name}.json")))
}

fn case_input(name: &str) -> EncodedInput {
    let c = case(name);
    let max_len = c.get("max_length").and_then(|v| v.as_u64()).unwrap_or(512) as usize;
    let tok = TextTokenizer::from_dir(&minilm_dir(), max_len).expect("tokenizer");
    let enc = tok.encode(c["text"].as_str().unwrap(), c.get("text_pair").and_then(|v| v.as_str())).unwrap();
    assert_eq!(enc.input.ids, u32s(&c["input_ids"]), "{name}: input_ids");
    enc.input
}

fn minilm_int8() -> &'static Encoder {
    static M: OnceLock<Encoder> = OnceLock::new();
    M.get_or_init(|| minilm().clone().with_precision(Precision::Int8).expect("quantise all-MiniLM-L6-v2"))
}

/// all-MiniLM-L6-v2 with a seeded 2-label head whose logits are of a fine-tuned model's size
/// (weights N(0, 0.1²): logits up to about ±0.3 on the pooled output).
fn classifier(seed: u64) -> Encoder {
    let mut m = sttabt::train::finetune::with_new_head(minilm().clone(), vec!["negative".into(), "positive".into()], seed);
    let d = m.config.hidden_size;
    let mut rng = sttabt::data::split::SplitMix64::new(seed);
    let w: Vec<f32> = (0..d * 2).map(|_| rng.next_normal() * 0.1).collect();
    m.classifier = Some(Linear::new(w, vec![0.05, -0.05], d, 2));
    m
}

fn rt_inputs(n: usize) -> Vec<EncodedInput> {
    let splits = sttabt::data::rt::load_rotten_tomatoes(&rotten_tomatoes_path(), 0).expect("RT");
    let tok = TextTokenizer::from_dir(&minilm_dir(), 128).expect("tokenizer");
    splits.test.examples.iter().take(n).map(|e| tok.encode(&e.text, None).unwrap().input).collect()
}

/// The int8 paths that ran in this process so far, e.g. `amx-int8 12, avx512-vnni 40`.
fn paths_ran() -> String {
    Int8Kernel::ALL.iter().map(|k| format!("{} {}", k.name(), k.calls())).collect::<Vec<_>>().join(", ")
}

#[test]
fn precision_switch_keeps_f32_weights_and_switches_back() {
    let m = minilm_int8();
    assert_eq!(m.precision(), Precision::Int8);
    assert!(m.layers.iter().all(|l| l.precision() == Precision::Int8));
    // f32 weights kept: the export is the fp32 model's, bit for bit
    assert_eq!(m.hf_tensors(), minilm().hf_tensors());
    let back = m.clone().with_precision(Precision::Fp32).unwrap();
    assert_eq!(back.precision(), Precision::Fp32);
    let x = case_input("case1_short");
    let a = minilm().run_dense(std::slice::from_ref(&x), RunOptions::default()).unwrap();
    let b = back.run_dense(std::slice::from_ref(&x), RunOptions::default()).unwrap();
    assert_eq!(a[0].hidden, b[0].hidden, "back at fp32 the outputs are the fp32 model's");
    assert_eq!("int8".parse::<Precision>(), Ok(Precision::Int8));
    assert!("int4".parse::<Precision>().unwrap_err().contains("fp32, int8"));
}

/// Per case: cosine(int8, fp32) and cosine(int8, transformers) of the sentence embedding and the
/// pooler output >= [`COSINE_MIN`]; int8 really differs from fp32; the calibration smoothed the
/// LayerNorm-fed layers and put a few input channels in f32.
#[test]
fn minilm_cases_pooled_embeddings_within_cosine_0_999() {
    let (m32, m8) = (minilm(), minilm_int8());
    let d = m32.config.hidden_size;
    for name in CASES {
        let c = case(name);
        let x = case_input(name);
        let o32 = m32.run_dense(std::slice::from_ref(&x), RunOptions::default()).unwrap().remove(0);
        let o8 = m8.run_dense(std::slice::from_ref(&x), RunOptions::default()).unwrap().remove(0);
        let (e32, e8) = (mean_pool_normalized(&o32.hidden, d), mean_pool_normalized(&o8.hidden, d));
        let (p32, p8) = (m32.pool(o32.cls()).unwrap(), m8.pool(o8.cls()).unwrap());
        let cos = [
            ("embedding vs fp32", cosine(&e8, &e32)),
            ("embedding vs reference", cosine(&e8, &f32s(&c["sentence_embedding"]))),
            ("pooler vs fp32", cosine(&p8, &p32)),
            ("pooler vs reference", cosine(&p8, &f32s(&c["pooler_output"]))),
        ];
        eprintln!("{name} ({} tokens): {cos:?}; max |Δ hidden| int8 - fp32 = {:.3e}", x.len(), max_abs_diff(&o8.hidden, &o32.hidden));
        for (what, v) in cos {
            assert!(v >= COSINE_MIN, "{name}: cosine {what} = {v}");
        }
        assert!(max_abs_diff(&o8.hidden, &o32.hidden) > 1e-4, "{name}: int8 gave the fp32 output (did it run?)");
    }
    eprintln!("int8 paths so far: {}", paths_ran());
    assert!(Int8Kernel::ALL.iter().any(|k| k.calls() > 0), "no int8 kernel ran");
    let l0 = &m8.layers[0];
    assert!(l0.query.int8().unwrap().inverse_smoothing().is_some(), "Q is smoothed");
    assert!(l0.attn_out.int8().unwrap().inverse_smoothing().is_none(), "the attention output is not smoothed");
    // the FFN-out channel of largest range (calibrated on synthetic ids) is one of those kept in f32
    assert_eq!(l0.ffn_out.int8().unwrap().f32_channels().len(), 8);
    assert_eq!(l0.query.int8().unwrap().f32_channels().len(), 4);
}

/// MiniLM with a seeded classification head: max |Δlogit| int8 vs fp32 <= 0.05 on the reference
/// cases and 48 RT test sentences (one batch); the head's logits reach about ±0.3.
#[test]
fn classifier_logits_within_0_05() {
    let m32 = classifier(3);
    let m8 = m32.clone().with_precision(Precision::Int8).unwrap();
    let mut inputs: Vec<EncodedInput> = CASES.iter().map(|n| case_input(n)).collect();
    inputs.extend(rt_inputs(48));
    let o32 = m32.run_dense(&inputs, RunOptions::default()).unwrap();
    let o8 = m8.run_dense(&inputs, RunOptions::default()).unwrap();
    let (mut worst, mut scale) = (0.0f32, 0.0f32);
    for (a, b) in o32.iter().zip(&o8) {
        let (l32, l8) = (m32.logits_of(a).unwrap(), m8.logits_of(b).unwrap());
        worst = worst.max(max_abs_diff(&l32, &l8));
        scale = scale.max(l32.iter().fold(0.0f32, |s, v| s.max(v.abs())));
    }
    eprintln!("max |Δlogit| int8 - fp32 = {worst:.4} over {} inputs (largest |logit| {scale:.2}); paths: {}", inputs.len(), paths_ran());
    assert!(scale > 0.25, "the head's logits are too small to test anything: {scale}");
    assert!(worst <= 0.05, "max |Δlogit| = {worst}");
    assert!(worst > 0.0, "int8 logits equal fp32 exactly (did int8 run?)");
}

/// With an fp32 ApproxNet, ABT plans (from the `Planner` interface) are identical whatever the
/// teacher's precision; an int8 ApproxNet's plan agreement is reported.
#[test]
fn abt_plans_do_not_depend_on_teacher_precision() {
    let t32 = classifier(5);
    let t8 = t32.clone().with_precision(Precision::Int8).unwrap();
    let approx = sttabt::approx::ApproxNet::new(&t32, 4, sttabt::approx::ApproxInit::Interpolate, 0).unwrap().model;
    let approx8 = approx.clone().with_precision(Precision::Int8).unwrap();
    // the ApproxNet (4 heads) is calibrated as the teacher is: smoothed Q, f32 channels in FFN-out
    let a0 = &approx8.layers[0];
    assert!(a0.query.int8().is_some_and(|q| q.inverse_smoothing().is_some()), "int8 ApproxNet Q is calibrated");
    assert_eq!(a0.ffn_out.int8().map(|q| q.f32_channels().len()), Some(8));
    let inputs = rt_inputs(40);
    let plans = |teacher: &Encoder, approx: &Encoder, k: f64| -> Vec<TokenPlan> {
        let planner = Abt::topk(vec![k], AttentionSource::ApproxNet);
        match planner.schedule(&Models { teacher, approx: Some(approx) }, &inputs).unwrap() {
            Schedule::Plans { plans, .. } => plans,
            Schedule::FeedForward(_) => panic!("ABT plans ahead of time"),
        }
    };
    for k in [0.5, 0.3] {
        let p32 = plans(&t32, &approx, k);
        assert!(p32.iter().any(|p| p.retention() < 0.99), "k = {k}: the plans prune nothing");
        assert_eq!(p32, plans(&t8, &approx, k), "k = {k}: ABT plans changed with the teacher's precision");
        let same = p32.iter().zip(plans(&t8, &approx8, k)).filter(|(a, b)| **a == *b).count();
        eprintln!("k = {k}: int8 ApproxNet plans equal to the fp32 ApproxNet's on {same}/{} inputs", inputs.len());
    }
    // and the int8 teacher executes them: its predictions through the one entry point
    let planner = Abt::topk(vec![0.3], AttentionSource::ApproxNet);
    let r8 = sttabt::planners::run(&planner, &Models { teacher: &t8, approx: Some(&approx) }, &inputs, RunOptions::default()).unwrap();
    let r32 = sttabt::planners::run(&planner, &Models { teacher: &t32, approx: Some(&approx) }, &inputs, RunOptions::default()).unwrap();
    assert_eq!(r8.plans, r32.plans);
    let worst = r8.outputs.iter().zip(&r32.outputs).map(|(a, b)| max_abs_diff(a.cls(), b.cls())).fold(0.0f32, f32::max);
    assert!(worst > 0.0 && worst < 0.5, "ABT-pruned CLS int8 vs fp32 differs by {worst}");
}

/// The hard-mask forward (soft-mask forward with 0/1 masks, every row computed) equals gathered
/// execution of a pruning plan: in fp32 to 1e-5, in int8 within the int8-vs-fp32 difference; and
/// a dense plan through the gathering executor equals the dense int8 run exactly. int8 is not
/// continuous: the two paths' f32 values differ by ~1e-7 (attention summation order), and one
/// activation landing on the other side of a rounding boundary moves an output by
/// `s_x · s_w · |Wq|` (~1e-2 on rows with outlier values); with per-row symmetric activations
/// the sparse plan here happened to flip none (1e-5), with the calibrated asymmetric ones it
/// flips some (1.5e-2 on CLS, against 2.6e-2 for int8 vs fp32). Both paths are deterministic.
#[test]
fn hard_mask_forward_equals_gathered_execution_in_int8() {
    let m8 = minilm_int8();
    let m32 = minilm();
    let big_l = m8.layers.len();
    let x = case_input("case5_long_truncated");
    let n = x.len();
    assert!(n >= 24, "want a long input (AMX rows), got {n}");
    let dense = m8.run_dense(std::slice::from_ref(&x), RunOptions { attentions: false, hidden_states: true }).unwrap().remove(0);
    let x0 = dense.hidden_states.as_ref().unwrap()[0].1.clone();
    // nested input sets: layer l keeps CLS and the tokens j with j % (l + 1) != 1
    let sparse: Vec<Vec<usize>> =
        (1..=big_l).map(|l| (0..n).filter(|&j| j == 0 || l == 1 || (1..=l).all(|i| j % (i + 1) != 1)).collect()).collect();
    let all: Vec<Vec<usize>> = vec![(0..n).collect(); big_l];
    for (what, inputs) in [("sparse", sparse), ("dense", all)] {
        let plan = TokenPlan::from_inputs(n, inputs.clone(), vec![0]).unwrap();
        let mut masks: Vec<Vec<f32>> =
            inputs.iter().map(|set| (0..n).map(|j| if set.contains(&j) { 1.0 } else { 0.0 }).collect()).collect();
        masks.push((0..n).map(|j| if j == 0 { 1.0 } else { 0.0 }).collect());
        let trace = m8.forward_soft(&x0, &vec![true; n], &masks).unwrap();
        let d = m8.config.hidden_size;
        let soft_cls = &trace.last().unwrap().y[..d];
        let x0_32 = m32.run_dense(std::slice::from_ref(&x), RunOptions { attentions: false, hidden_states: true }).unwrap().remove(0);
        let trace32 = m32.forward_soft(&x0_32.hidden_states.as_ref().unwrap()[0].1, &vec![true; n], &masks).unwrap();
        let gathered = m8.run(std::slice::from_ref(&x), &[plan.clone()], RunOptions::default()).unwrap().remove(0);
        let fp32 = m32.run(std::slice::from_ref(&x), &[plan], RunOptions::default()).unwrap().remove(0);
        let err = max_abs_diff(soft_cls, gathered.cls());
        let precision_gap = max_abs_diff(gathered.cls(), fp32.cls());
        let vs_dense = max_abs_diff(gathered.cls(), dense.cls());
        eprintln!("{what} plan ({n} tokens): hard-mask vs gathered CLS {err:.2e}; int8 vs fp32 CLS {precision_gap:.2e}; gathered vs run_dense {vs_dense:.2e}");
        let err32 = max_abs_diff(&trace32.last().unwrap().y[..d], fp32.cls());
        eprintln!("  fp32: hard-mask vs gathered CLS {err32:.2e}");
        if what == "sparse" {
            assert!(err32 < 1e-5, "sparse: fp32 hard-mask forward vs gathered CLS differs by {err32}");
            assert!(err32 * 100.0 < precision_gap, "the check cannot see int8 errors ({err32} vs {precision_gap})");
            assert!(
                err < precision_gap,
                "sparse: int8 hard-mask forward vs gathered CLS differs by {err}, more than int8 vs fp32 {precision_gap}"
            );
        } else {
            // a dense plan through the gathering executor is the dense int8 run, bit for bit
            assert_eq!(vs_dense, 0.0, "dense plan through the executor vs run_dense");
        }
    }
    eprintln!("int8 paths so far: {}", paths_ran());
}

/// Gathered int8 execution is row-wise: a pruned batch (ABT plans, rows of all examples packed
/// per layer, AMX from 24 rows) gives each example's CLS bit for bit as running it alone (VNNI).
#[test]
fn int8_batch_equals_examples_alone() {
    let t8 = classifier(11).with_precision(Precision::Int8).unwrap();
    let approx = sttabt::approx::ApproxNet::new(&t8, 4, sttabt::approx::ApproxInit::Interpolate, 0).unwrap().model;
    let inputs = rt_inputs(16);
    let planner = Abt::topk(vec![0.5], AttentionSource::ApproxNet);
    let models = Models { teacher: &t8, approx: Some(&approx) };
    let batch = sttabt::planners::run(&planner, &models, &inputs, RunOptions::default()).unwrap();
    for (i, x) in inputs.iter().enumerate() {
        let alone = sttabt::planners::run(&planner, &models, std::slice::from_ref(x), RunOptions::default()).unwrap();
        assert_eq!(alone.plans[0], batch.plans[i], "example {i}: plan");
        assert_eq!(alone.outputs[0].cls(), batch.outputs[i].cls(), "example {i}: CLS alone vs in the batch");
    }
    eprintln!("int8 paths so far: {}", paths_ran());
}

/// Runs in every process: the int8 paths that ran are exactly the ones this process may use
/// (AMX from 24 rows when granted, VNNI when available, AVX2 only without VNNI, the fallback only
/// without either), and the
/// embeddings they give stay within cosine [`COSINE_MIN`] of the reference. The parent test below runs
/// it again with AMX and with VNNI switched off.
#[test]
fn int8_paths_that_ran_are_the_available_ones() {
    let m8 = minilm().clone().with_precision(Precision::Int8).unwrap();
    let d = m8.config.hidden_size;
    for name in ["case1_short", "case5_long_truncated"] {
        let out = m8.run_dense(&[case_input(name)], RunOptions::default()).unwrap().remove(0);
        let cos = cosine(&mean_pool_normalized(&out.hidden, d), &f32s(&case(name)["sentence_embedding"]));
        assert!(cos >= COSINE_MIN, "{name}: cosine to the reference {cos}");
    }
    let ran = paths_ran();
    println!("INT8-PATHS: {ran}");
    eprintln!("int8 paths in this process: {ran} (available: {:?})", Int8Kernel::ALL.map(|k| (k.name(), k.available())));
    for k in Int8Kernel::ALL {
        let expected = match k {
            Int8Kernel::Fallback => !Int8Kernel::Vnni.available() && !Int8Kernel::Avx2.available(),
            Int8Kernel::Avx2 => k.available() && !Int8Kernel::Vnni.available(),
            _ => k.available(),
        };
        assert_eq!(k.calls() > 0, expected, "{k}: ran {} times, available here: {}", k.calls(), k.available());
    }
}

/// The path test again in child processes with `STTABT_NO_AMX=1` (VNNI only),
/// `STTABT_NO_VNNI=1` (AVX2, or the fallback on a CPU without it) and both `STTABT_NO_VNNI=1`
/// and `STTABT_NO_INT8_AVX2=1` (the fallback), so that every path this CPU has runs in the model.
#[test]
fn every_int8_path_this_cpu_has_runs_in_the_model() {
    let exe = std::env::current_exe().unwrap();
    let mut ran = Vec::new();
    for vars in [&["STTABT_NO_AMX"][..], &["STTABT_NO_VNNI"], &["STTABT_NO_VNNI", "STTABT_NO_INT8_AVX2"]] {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "int8_paths_that_ran_are_the_available_ones", "--nocapture", "--test-threads", "1"]);
        for var in vars {
            cmd.env(var, "1");
        }
        let out = cmd.output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{vars:?}=1: child failed\n{stdout}\n{stderr}");
        let line = stdout
            .lines()
            .find_map(|l| l.find("INT8-PATHS:").map(|i| &l[i..]))
            .unwrap_or_else(|| panic!("{vars:?}: no path line\n{stdout}"));
        eprintln!("{vars:?}=1: {line}");
        ran.push((vars, line.to_string()));
    }
    assert!(ran[0].1.contains("amx-int8 0,"), "STTABT_NO_AMX still ran AMX: {}", ran[0].1);
    assert!(ran[1].1.contains("amx-int8 0, avx512-vnni 0,"), "STTABT_NO_VNNI: {}", ran[1].1);
    // (AVX2 runs without VNNI where the CPU has it, else the fallback)
    let avx2_cpu = cfg!(target_arch = "x86_64") && Int8Kernel::Avx2.available();
    assert_eq!(ran[1].1.contains("avx2 0,"), !avx2_cpu, "STTABT_NO_VNNI (AVX2 on this CPU: {avx2_cpu}): {}", ran[1].1);
    assert_eq!(ran[1].1.contains("fallback 0"), avx2_cpu, "STTABT_NO_VNNI (AVX2 on this CPU: {avx2_cpu}): {}", ran[1].1);
    assert!(
        ran[2].1.contains("amx-int8 0, avx512-vnni 0, avx2 0,") && !ran[2].1.contains("fallback 0"),
        "STTABT_NO_VNNI + STTABT_NO_INT8_AVX2: {}",
        ran[2].1
    );
    let names = |v: bool| Int8Kernel::ALL.iter().filter(|k| k.available() == v).map(|k| k.name()).collect::<Vec<_>>();
    eprintln!("int8 paths this CPU has: {:?} (plus the fallback); not available here: {:?}", names(true), names(false));
}

fn sttabt_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sttabt"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run sttabt");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `classify --precision int8` gives the library's int8 logits, close to fp32's; with VNNI and
/// the AVX2 int8 kernel switched off it warns once, naming the missing features, and gives the
/// same logits.
#[test]
fn classify_cli_precision_int8() {
    let tmp = TempDir::new("int8-cli");
    let (tdir, adir) = (tmp.path().join("teacher"), tmp.path().join("approx"));
    let teacher = classifier(9);
    sttabt::train::save_hf_checkpoint(&teacher, &tdir, Some(&minilm_dir())).expect("save teacher");
    let teacher = Encoder::load(&tdir).unwrap();
    let approx = sttabt::approx::ApproxNet::new(&teacher, 4, sttabt::approx::ApproxInit::Interpolate, 0).unwrap();
    approx.save(&adir).unwrap();
    let text = "a gripping, funny and thoroughly original film";
    let (t, a) = (tdir.to_str().unwrap(), adir.to_str().unwrap());
    let logits = |prec: &str, env: &[(&str, &str)]| -> (Vec<f32>, serde_json::Value, String) {
        let (ok, out, err) =
            sttabt_cli(&["classify", "--model", t, "--approx", a, "--precision", prec, "--json", "--keep", "0.5", text], env);
        assert!(ok, "classify --precision {prec} failed: {err}");
        let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        (f32s(&v["logits"]), v, err)
    };
    let (l8, v8, err8) = logits("int8", &[]);
    let (l32, v32, _) = logits("fp32", &[]);
    let m8 = teacher.clone().with_precision(Precision::Int8).unwrap();
    let tok = TextTokenizer::from_dir(&tdir, 128).unwrap();
    let x = tok.encode(text, None).unwrap().input;
    let lib = sttabt::infer::classify(&m8, Some(&approx.model), &[x], &sttabt::infer::Mode::Abt { k: 0.5 }).unwrap().remove(0);
    assert!(max_abs_diff(&l8, &lib.logits) < 1e-5, "CLI int8 {l8:?} vs library int8 {:?}", lib.logits);
    let gap = max_abs_diff(&l8, &l32);
    assert!(gap > 0.0 && gap <= 0.05, "int8 vs fp32 logits differ by {gap}");
    assert_eq!(v8["inputs_per_layer"], v32["inputs_per_layer"], "the fp32 ApproxNet's plan changed with --precision");
    let fast_here = Int8Kernel::Vnni.available() || Int8Kernel::Avx2.available();
    assert_eq!(err8.contains("warning: int8 runs on the portable fallback"), !fast_here, "{err8}");
    let (lf, _, errf) = logits("int8", &[("STTABT_NO_VNNI", "1"), ("STTABT_NO_INT8_AVX2", "1")]);
    assert_eq!(errf.matches("warning: int8 runs on the portable fallback kernel").count(), 1, "one warning expected: {errf}");
    assert!(errf.contains("VNNI") && errf.contains("AVX2"), "the warning names the missing features: {errf}");
    let (_, _, err_avx2) = logits("int8", &[("STTABT_NO_VNNI", "1")]);
    assert_eq!(err_avx2.contains("warning: int8 runs on the portable fallback"), !Int8Kernel::Avx2.available(), "{err_avx2}");
    // (the fallback's epilogue rounds twice, multiply then add, where the SIMD paths fuse them:
    // 1-ulp differences in a layer's output flip a few activation codes in the next layers;
    // measured 7e-4 between the AVX2 path and the fallback, far inside the 0.05 to fp32)
    assert!(max_abs_diff(&lf, &l8) < 2e-3, "fallback {lf:?} vs {l8:?}");
    let (ok, _, err) = sttabt_cli(&["classify", "--model", t, "--precision", "int4", text], &[]);
    assert!(!ok && err.contains("fp32, int8"), "{err}");
}

/// `Encoder::at_precision`: the model itself (no copy) where it already runs at the precision,
/// else a copy switched to it that gives `with_precision`'s logits bit for bit; the original is
/// left as it was.
#[test]
fn at_precision_borrows_when_nothing_changes() {
    use std::borrow::Cow;
    let m = classifier(4);
    let x = rt_inputs(3);
    let run = |e: &Encoder| -> Vec<Vec<f32>> { sttabt::train::finetune::dense_logits(e, &x).expect("logits") };
    let same = m.at_precision(Precision::Fp32).expect("fp32");
    assert!(matches!(&same, Cow::Borrowed(b) if std::ptr::eq(*b, &m)), "an fp32 model at fp32 is borrowed, not copied");
    let m8 = m.at_precision(Precision::Int8).expect("int8");
    assert!(matches!(m8, Cow::Owned(_)), "fp32 -> int8 is a copy");
    assert_eq!(m8.precision(), Precision::Int8);
    assert_eq!(m.precision(), Precision::Fp32, "the original stays fp32");
    let reference = m.clone().with_precision(Precision::Int8).expect("int8");
    assert_eq!(run(&m8), run(&reference), "at_precision(int8) = with_precision(int8)");
    let again = m8.at_precision(Precision::Int8).expect("int8 at int8");
    assert!(matches!(&again, Cow::Borrowed(b) if std::ptr::eq(*b, &*m8)), "an int8 model at int8 is borrowed");
    let back = m8.at_precision(Precision::Fp32).expect("back to fp32");
    assert!(matches!(back, Cow::Owned(_)));
    assert_eq!(run(&back), run(&m), "int8 -> fp32 runs the kept f32 weights");
}

/// `eval --compare-precision` with an fp32 ApproxNet (the int8 run then uses the fp32 ApproxNet
/// itself): every ABT row has the same plans and retention at both precisions; with
/// `--approx-precision int8` the command runs and reports the int8 ApproxNet.
#[test]
fn eval_compare_precision_with_fp32_and_int8_approx() {
    let tmp = TempDir::new("int8-compare");
    let (tdir, adir) = (tmp.path().join("teacher"), tmp.path().join("approx"));
    let teacher = classifier(5);
    sttabt::train::save_hf_checkpoint(&teacher, &tdir, Some(&minilm_dir())).expect("save teacher");
    let teacher = Encoder::load(&tdir).unwrap();
    sttabt::approx::ApproxNet::new(&teacher, 4, sttabt::approx::ApproxInit::Interpolate, 0).unwrap().save(&adir).unwrap();
    let csv = tmp.path().join("test.csv");
    let mut rows = String::from("text,label\n");
    for (i, t) in ["a gripping, funny and thoroughly original film", "dull and far too long", "i loved every minute of it", "a mess"]
        .iter()
        .enumerate()
    {
        rows.push_str(&format!("\"{t}\",{}\n", if i % 2 == 0 { "positive" } else { "negative" }));
    }
    std::fs::write(&csv, rows).unwrap();
    let (t, a, c) = (tdir.to_str().unwrap(), adir.to_str().unwrap(), csv.to_str().unwrap());
    for ap in ["fp32", "int8"] {
        let out = tmp.path().join(format!("out-{ap}"));
        let (ok, stdout, err) = sttabt_cli(
            &["eval", "--model", t, "--approx", a, "--dev", c, "--test", c, "--compare-precision", "--approx-precision", ap]
                .iter()
                .chain(&["--ks", "0.5", "--quiet", "--out", out.to_str().unwrap()])
                .copied()
                .collect::<Vec<_>>(),
            &[],
        );
        assert!(ok, "eval --compare-precision --approx-precision {ap} failed:\n{stdout}\n{err}");
        let r = read_json(out.join("precision_comparison.json"));
        assert_eq!(r["approx_precision_int8_run"], ap, "{r}");
        assert_eq!(r["examples"], 4);
        let abt: Vec<&serde_json::Value> =
            r["modes"].as_array().unwrap().iter().filter(|m| m["label"].as_str().unwrap().starts_with("abt")).collect();
        assert!(!abt.is_empty(), "no ABT row: {r}");
        if ap == "fp32" {
            for m in abt {
                assert_eq!(m["plan_agreement"], 1.0, "the fp32 ApproxNet plans the same tokens for both runs: {m}");
                assert_eq!(m["retention_fp32"], m["retention_int8"], "{m}");
            }
        }
    }
    // --precision int8-w7: the comparison runs the teacher at int8-w7 and says so
    let out = tmp.path().join("out-w7");
    let args = ["eval", "--model", t, "--approx", a, "--dev", c, "--test", c, "--ks", "0.5", "--quiet", "--out", out.to_str().unwrap()];
    let (ok, stdout, err) = sttabt_cli(&[&args[..], &["--compare-precision", "--precision", "int8-w7"]].concat(), &[]);
    assert!(ok, "eval --compare-precision --precision int8-w7 failed:\n{stdout}\n{err}");
    assert_eq!(read_json(out.join("precision_comparison.json"))["teacher_precision"], "int8-w7");
    assert!(stdout.contains("teacher int8-w7 vs fp32") && stdout.contains("acc int8-w7"), "{stdout}");
    // a plain eval at int8-w7 records the precision in results.json and on every results.csv row
    let out = tmp.path().join("out-w7-plain");
    let args = ["eval", "--model", t, "--approx", a, "--dev", c, "--test", c, "--ks", "0.5", "--quiet", "--out", out.to_str().unwrap()];
    let (ok, stdout, err) = sttabt_cli(&[&args[..], &["--timing-examples", "2", "--precision", "int8-w7"]].concat(), &[]);
    assert!(ok, "eval --precision int8-w7 failed:\n{stdout}\n{err}");
    let recorded = read_json(out.join("results.json"))["results"]["precision"].as_str().unwrap().to_string();
    assert!(recorded.starts_with("teacher int8-w7, ApproxNet fp32"), "{recorded}");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with(",precision"), "{csv}");
    let rows: Vec<&str> = lines.collect();
    // each row names the run's arithmetic; only the rows whose mode runs the ApproxNet name it
    let teacher_only = recorded.replace(", ApproxNet fp32", "");
    assert!(rows.len() >= 2, "{csv}");
    for l in &rows {
        let want = if l.starts_with("abt k=") { &recorded } else { &teacher_only };
        assert!(l.ends_with(&format!(",\"{want}\"")), "{l}:\n{csv}");
    }
    assert!(rows.iter().any(|l| l.starts_with("abt k=")) && rows.iter().any(|l| l.starts_with("dense,")), "{csv}");
}

/// `int8-w7` (7-bit weights, what the AVX2 path multiplies bytewise): every linear layer holds
/// weights in `[-63, 63]`; on the MiniLM reference cases the pooled embedding's cosine to fp32
/// and the seeded head's logits stay within measured bounds (cosine >= 0.997: measured
/// 0.9974 on the 2-token case3_empty, 0.9981-0.9990 on the others, so **under** issue 17's
/// 0.999, which `int8` meets; max |Δlogit| <= 0.05, the issue's, measured 0.009; the weight step is twice as large); the
/// precision round-trips through its name; and switching int8 <-> int8-w7 requantises.
#[test]
fn int8_w7_has_7_bit_weights_and_measured_parity() {
    use sttabt::kernels::int8::WeightRange;
    assert_eq!("int8-w7".parse::<Precision>(), Ok(Precision::Int8W7));
    assert_eq!(Precision::Int8W7.to_string(), "int8-w7");
    assert_eq!(serde_json::to_string(&Precision::Int8W7).unwrap(), "\"int8-w7\"");
    // it buys speed only where the AVX2 path runs, and says so elsewhere
    let avx2_runs = Int8Kernel::for_rows(1) == Int8Kernel::Avx2;
    assert_eq!(Precision::Int8W7.no_gain_here().is_none(), avx2_runs, "{:?}", Precision::Int8W7.no_gain_here());
    assert_eq!(Precision::Int8.no_gain_here(), None);
    let m7 = minilm().clone().with_precision(Precision::Int8W7).unwrap();
    assert_eq!(m7.precision(), Precision::Int8W7);
    for l in &m7.layers {
        for q in [&l.query, &l.key_value, &l.attn_out, &l.ffn_in, &l.ffn_out].map(|lin| lin.int8().expect("int8 layer")) {
            assert_eq!(q.weight_range(), WeightRange::Reduced);
            assert!(q.weight_q().iter().all(|&w| (-63..=63).contains(&w)));
        }
    }
    let back = m7.clone().with_precision(Precision::Int8).unwrap();
    assert_eq!(back.precision(), Precision::Int8);
    assert!(back.layers[0].ffn_in.int8().unwrap().weight_q().iter().any(|&w| w.abs() > 63), "int8 again has 8-bit weights");
    let d = minilm().config.hidden_size;
    let mut worst_cos = 1.0f64;
    for name in CASES {
        let x = case_input(name);
        let o32 = minilm().run_dense(std::slice::from_ref(&x), RunOptions::default()).unwrap().remove(0);
        let o7 = m7.run_dense(std::slice::from_ref(&x), RunOptions::default()).unwrap().remove(0);
        let cos = cosine(&mean_pool_normalized(&o7.hidden, d), &mean_pool_normalized(&o32.hidden, d));
        eprintln!("int8-w7 {name}: embedding cosine to fp32 {cos:.5}");
        worst_cos = worst_cos.min(cos);
    }
    assert!(worst_cos >= 0.997, "int8-w7 embedding cosine {worst_cos}");
    let c32 = classifier(3);
    let c7 = c32.clone().with_precision(Precision::Int8W7).unwrap();
    let mut inputs: Vec<EncodedInput> = CASES.iter().map(|n| case_input(n)).collect();
    inputs.extend(rt_inputs(48));
    let o32 = c32.run_dense(&inputs, RunOptions::default()).unwrap();
    let o7 = c7.run_dense(&inputs, RunOptions::default()).unwrap();
    let worst =
        o32.iter().zip(&o7).map(|(a, b)| max_abs_diff(&c32.logits_of(a).unwrap(), &c7.logits_of(b).unwrap())).fold(0.0f32, f32::max);
    eprintln!("int8-w7: max |Δlogit| to fp32 {worst:.4} over {} inputs; paths: {}", inputs.len(), paths_ran());
    assert!(worst > 0.0 && worst <= 0.05, "int8-w7 max |Δlogit| = {worst}");
}
