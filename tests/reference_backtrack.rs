//! Checks `plan`, `planners::abt` and `planners::concrete` against every file in
//! `reference/backtrack/` (reference README section 2; tolerances of section 2.7), plus plan
//! validation, error and property checks.
//!
//! The reference directory is `$STTABT_REFERENCE_DIR` if set, else `../shared/reference`
//! relative to the crate root.

mod common;

use std::path::PathBuf;

use serde_json::Value;
use sttabt::plan::{dense_flops, layer_flops, PlanError, SetKind, TokenPlan};
use sttabt::planners::abt::{backtrack, keep_count, AbtConfig, AbtError, AbtForm, AbtLayerTrace, Reduce};
use sttabt::planners::concrete::{concrete_masks, erfc, normal_cdf, standardized_cdf_scores, standardized_cdf_scores_fast, ConcreteError};

// ---------------------------------------------------------------- helpers

/// The reference vectors (one lookup for every test file: `common::reference_dir`).
fn ref_dir() -> PathBuf {
    common::reference_dir()
}

fn load(name: &str) -> Value {
    let path = ref_dir().join("backtrack").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

fn uz(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("expected an unsigned integer, got {v}")) as usize
}
fn fl(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("expected a number, got {v}"))
}
fn arr(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("expected an array, got {v}"))
}
fn usizes(v: &Value) -> Vec<usize> {
    arr(v).iter().map(uz).collect()
}
fn f64s(v: &Value) -> Vec<f64> {
    arr(v).iter().map(fl).collect()
}
fn sets(v: &Value) -> Vec<Vec<usize>> {
    arr(v).iter().map(usizes).collect()
}
/// Flattens a nested numeric array row-major.
fn flatten(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| flatten(x, out)),
        other => out.push(fl(other)),
    }
}
fn flat_f64(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    flatten(v, &mut out);
    out
}
fn flat_f32(v: &Value) -> Vec<f32> {
    // The stored inputs are exactly representable in f32 (README 2.1).
    flat_f64(v).into_iter().map(|x| x as f32).collect()
}

fn close(got: f64, want: f64, rel: f64, abs: f64) -> bool {
    (got - want).abs() <= abs || (got - want).abs() <= rel * want.abs()
}

fn assert_vec_close(ctx: &str, got: &[f64], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{ctx}: length");
    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(close(g, w, rel, abs), "{ctx}[{j}]: got {g}, want {w}");
    }
}

const REL: f64 = 1e-5; // ABT scores / weights (README 2.7)
const ABS: f64 = 1e-7;
const BERT_D: usize = 768;
const BERT_FF: usize = 3072;

fn reduce(v: &Value) -> Reduce {
    match v.as_str() {
        Some("avg") => Reduce::Avg,
        Some("max") => Reduce::Max,
        other => panic!("unknown reduce {other:?}"),
    }
}

fn config_of(run: &Value) -> AbtConfig {
    let form = match run["form"].as_str() {
        Some("topk") => AbtForm::TopK { k: f64s(&run["k"]) },
        Some("dynamic") => {
            let clamp = f64s(&run["dynamic_clamp"]);
            AbtForm::Dynamic { ratio: fl(&run["dynamic_ratio"]), clamp: (clamp[0], clamp[1]) }
        }
        other => panic!("unknown form {other:?}"),
    };
    AbtConfig {
        form,
        p: fl(&run["p"]),
        head_reduce: reduce(&run["head_reduce"]),
        token_reduce: reduce(&run["token_reduce"]),
        top: usizes(&run["O_top"]),
    }
}

/// Runs every run of an ABT file, checks it against the stored result, returns the outputs.
fn check_abt_file(name: &str) -> Vec<(TokenPlan, Vec<AbtLayerTrace>)> {
    let file = load(name);
    let (l, h, t, n) = (uz(&file["L"]), uz(&file["H"]), uz(&file["T"]), uz(&file["n"]));
    assert_eq!(usizes(&file["valid"]), (0..t).map(|j| usize::from(j < n)).collect::<Vec<_>>(), "{name}: valid");
    assert_eq!(usizes(&file["attention_probs_shape"]), vec![l, h, t, t]);
    let attn = flat_f32(&file["attention_probs"]);
    let runs = arr(&file["runs"]);
    assert!(!runs.is_empty());
    let mut outputs = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        let cfg = config_of(run);
        let ctx = format!("{name} run {r} ({cfg:?})");
        let (plan, traces) = backtrack(&attn, l, h, t, n, &cfg).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let res = &run["result"];
        assert_eq!(plan.n(), uz(&res["n"]), "{ctx}: n");
        assert_eq!(plan.input_sets(), sets(&res["I"]).as_slice(), "{ctx}: I");
        assert_eq!(plan.output_sets(), sets(&res["O"]).as_slice(), "{ctx}: O");
        assert!((plan.retention() - fl(&res["retention"])).abs() <= 1e-12, "{ctx}: retention");
        assert_vec_close(&ctx, &plan.per_layer_retention(), &f64s(&res["per_layer_retention"]), 0.0, 1e-12);

        let layers = arr(&res["layers"]);
        assert_eq!(traces.len(), layers.len(), "{ctx}: layer count");
        for (tr, want) in traces.iter().zip(layers) {
            let ctx = format!("{ctx} layer {}", tr.layer);
            assert_eq!(tr.layer, uz(&want["layer"]), "{ctx}: layer");
            assert_eq!(tr.o, usizes(&want["O"]), "{ctx}: O");
            assert_eq!(tr.c, uz(&want["c"]), "{ctx}: c");
            assert_eq!(tr.topk, usizes(&want["topk"]), "{ctx}: topk");
            assert_eq!(tr.i, usizes(&want["I"]), "{ctx}: I");
            assert_vec_close(&format!("{ctx}: w_in"), &tr.w_in, &f64s(&want["w_in"]), REL, ABS);
            assert_vec_close(&format!("{ctx}: scores"), &tr.scores, &f64s(&want["scores"]), REL, ABS);
            assert_vec_close(&format!("{ctx}: w"), &tr.w, &f64s(&want["w"]), REL, ABS);
            match (tr.boundary_gap, want["boundary_gap"].as_f64()) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    assert!(close(g, w, REL, ABS), "{ctx}: boundary gap {g} vs {w}")
                }
                (g, w) => panic!("{ctx}: boundary gap {g:?} vs {w:?}"),
            }
            if let Some(c) = want.get("ceil_k_n") {
                assert_eq!(tr.c, uz(c), "{ctx}: ceil_k_n");
            }
            if want.get("threshold").is_some() {
                let d = tr.dynamic.as_ref().unwrap_or_else(|| panic!("{ctx}: no dynamic trace"));
                assert!(close(d.threshold, fl(&want["threshold"]), REL, ABS), "{ctx}: threshold");
                assert_eq!(d.count_above_threshold, uz(&want["count_above_threshold"]), "{ctx}: count");
                assert_eq!(d.clamp_lo, uz(&want["clamp_lo"]), "{ctx}: clamp_lo");
                assert_eq!(d.clamp_hi, uz(&want["clamp_hi"]), "{ctx}: clamp_hi");
            } else {
                assert!(tr.dynamic.is_none(), "{ctx}: unexpected dynamic trace");
            }
        }

        let fl_ref = &res["flops_bert_base_dims"];
        let flops = plan.flops(BERT_D, BERT_FF);
        let per_layer: Vec<usize> = flops.per_layer.iter().map(|f| f.total as usize).collect();
        assert_eq!(per_layer, usizes(&fl_ref["per_layer_total"]), "{ctx}: per-layer FLOPs");
        assert_eq!(flops.total, fl_ref["total"].as_u64().unwrap_or(0), "{ctx}: FLOPs");
        assert_eq!(dense_flops(n, l, BERT_D, BERT_FF), fl_ref["dense_same_n"].as_u64().unwrap_or(0), "{ctx}: dense");
        check_plan_invariants(&plan);
        outputs.push((plan, traces));
    }
    outputs
}

/// Re-validates a plan through the public constructor and checks the nesting by hand.
fn check_plan_invariants(plan: &TokenPlan) {
    let rebuilt = TokenPlan::new(plan.n(), plan.input_sets().to_vec(), plan.output_sets().to_vec());
    assert_eq!(rebuilt.as_ref(), Ok(plan));
    for l in 0..plan.num_layers() {
        assert!(plan.outputs(l).iter().all(|j| plan.inputs(l).contains(j)));
        assert!(plan.inputs(l).iter().all(|&j| j < plan.n()) && plan.inputs(l)[0] == 0);
        if l > 0 {
            assert_eq!(plan.inputs(l), plan.outputs(l - 1));
        }
    }
}

// ---------------------------------------------------------------- coverage

const ABT_FILES: [&str; 9] = [
    "abt_A_L3H2T8n6.json",
    "abt_A_padgarbage.json",
    "abt_B_L4H3T10n10.json",
    "abt_C_ceil_L2H2T25n25.json",
    "abt_C_ceil_L3H2T10n10.json",
    "abt_C_ceil_L3H2T8n7.json",
    "abt_dynamic_L3H2T24n20.json",
    "abt_ties_duplicate.json",
    "abt_ties_uniform.json",
];
const OTHER_CHECKED: [&str; 3] = ["concrete_A_L3H2T8n6.json", "concrete_B_L4H3T10n10.json", "flops.json"];
/// Need the encoder (soft-mask forward of a tiny BERT); checked elsewhere. `index.json` is the index.
const NOT_HERE: [&str; 3] = ["concrete_soft_forward_A.json", "concrete_soft_forward_B.json", "index.json"];

#[test]
fn every_reference_file_is_covered() {
    let dir = ref_dir().join("backtrack");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
        let name = entry.map(|e| e.file_name().to_string_lossy().into_owned()).unwrap_or_default();
        assert!(
            ABT_FILES.contains(&name.as_str()) || OTHER_CHECKED.contains(&name.as_str()) || NOT_HERE.contains(&name.as_str()),
            "reference file {name} is not covered by this test suite"
        );
        seen.push(name);
    }
    for name in ABT_FILES.iter().chain(&OTHER_CHECKED) {
        assert!(seen.iter().any(|s| s == name), "reference file {name} is missing");
    }
    // index.json lists the same files.
    let index = load("index.json");
    for f in arr(&index["files"]) {
        let name = f["file"].as_str().unwrap_or_default();
        assert!(seen.iter().any(|s| s == name), "index.json names {name}, not in the directory");
    }
}

// ---------------------------------------------------------------- ABT reference files

#[test]
fn abt_a_random_with_padding() {
    assert_eq!(check_abt_file("abt_A_L3H2T8n6.json").len(), 18);
}

#[test]
fn abt_a_padgarbage_equals_a() {
    let a = check_abt_file("abt_A_L3H2T8n6.json");
    let g = check_abt_file("abt_A_padgarbage.json");
    // Padding-key columns are never read, so the outputs are bitwise identical.
    assert_eq!(a, g);
}

#[test]
fn abt_b_no_padding_and_two_class_tokens() {
    let file = load("abt_B_L4H3T10n10.json");
    assert!(arr(&file["runs"]).iter().any(|r| usizes(&r["O_top"]) == vec![0, 1]), "B has an O_top = {{0, 1}} run");
    let out = check_abt_file("abt_B_L4H3T10n10.json");
    assert_eq!(out.len(), arr(&file["runs"]).len());
}

#[test]
fn abt_ties_uniform_takes_lowest_indices() {
    let out = check_abt_file("abt_ties_uniform.json");
    for (_, traces) in &out {
        for tr in traces {
            assert_eq!(tr.topk, (0..tr.c).collect::<Vec<_>>(), "layer {}", tr.layer);
            assert!(tr.scores.iter().all(|s| s.to_bits() == tr.scores[0].to_bits()), "scores tie bitwise");
        }
    }
}

#[test]
fn abt_ties_duplicate_prefers_lower_index() {
    let file = load("abt_ties_duplicate.json");
    let tie = usizes(&file["notes"]["tie_tokens"]);
    let out = check_abt_file("abt_ties_duplicate.json");
    for (_, traces) in &out {
        for tr in traces {
            assert_eq!(tr.scores[tie[0]].to_bits(), tr.scores[tie[1]].to_bits(), "tied scores must be bitwise equal");
        }
    }
    let straddles = arr(&file["notes"]["tie_straddles_topk_boundary_at"]);
    assert!(!straddles.is_empty());
    for s in straddles {
        let (k, p, layer) = (fl(&s["k"]), fl(&s["p"]), uz(&s["layer"]));
        let runs = arr(&file["runs"]);
        let r = runs
            .iter()
            .position(|r| f64s(&r["k"]).iter().all(|&x| x == k) && fl(&r["p"]) == p)
            .unwrap_or_else(|| panic!("no run for k {k}, p {p}"));
        let tr = &out[r].1[layer - 1];
        assert!(tr.topk.contains(&tie[0]) && !tr.topk.contains(&tie[1]), "k {k} p {p} layer {layer}: {:?}", tr.topk);
    }
}

#[test]
fn abt_ceil_rule_files() {
    for name in ["abt_C_ceil_L3H2T10n10.json", "abt_C_ceil_L3H2T8n7.json", "abt_C_ceil_L2H2T25n25.json"] {
        let file = load(name);
        let n = uz(&file["n"]);
        let out = check_abt_file(name);
        for (run, (_, traces)) in arr(&file["runs"]).iter().zip(&out) {
            for (want, tr) in arr(&run["result"]["layers"]).iter().zip(traces) {
                let k = fl(&want["k"]);
                assert_eq!(k * n as f64, fl(&want["k_times_n_f64"]), "{name}: k*n in f64");
                assert_eq!(keep_count(k, n), uz(&want["c"]), "{name}: keep_count");
                assert_eq!(tr.c, uz(&want["c"]));
            }
        }
    }
    // 0.28 * 25 = 7.000000000000001 in f64: the 1e-9 keeps c at 7; a genuine fraction rounds up.
    assert_eq!(keep_count(0.28, 25), 7);
    assert_eq!(keep_count(0.3, 7), 3);
    assert_eq!((keep_count(0.07, 100), keep_count(0.14, 50), keep_count(0.56, 25)), (7, 7, 14));
    assert_eq!((keep_count(1e-6, 10), keep_count(1.0, 10)), (1, 10));
}

#[test]
fn abt_dynamic_threshold_form() {
    let out = check_abt_file("abt_dynamic_L3H2T24n20.json");
    assert_eq!(out.len(), 3);
    for (_, traces) in &out {
        let d = traces.iter().map(|t| t.dynamic.clone()).collect::<Option<Vec<_>>>().unwrap_or_default();
        assert_eq!(d.len(), 3);
        assert_eq!((d[0].clamp_lo, d[0].clamp_hi), (4, 19));
    }
}

// ---------------------------------------------------------------- concrete masking

fn check_concrete_file(name: &str) {
    let file = load(name);
    let (l, h, t, n) = (uz(&file["L"]), uz(&file["H"]), uz(&file["T"]), uz(&file["n"]));
    let scores = flat_f32(&file["scores"]);
    let theta = f64s(&file["theta"]);
    let (tau, p, clamp_eps) = (fl(&file["tau"]), fl(&file["p"]), fl(&file["logit_clamp_eps"]));
    let variant = arr(&file["variants"]).iter().find(|v| uz(&v["std_ddof"]) == 0).unwrap_or_else(|| panic!("{name}: no ddof 0 variant"));
    let u = standardized_cdf_scores(&scores, l, h, t, n, 0, fl(&variant["std_eps"])).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_vec_close(&format!("{name}: U"), &u, &flat_f64(&variant["U"]), 0.0, 1e-6);

    let res = concrete_masks(&u, l, t, n, &theta, tau, p, clamp_eps).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = &variant["result"];
    assert_vec_close(&format!("{name}: m_top"), &res.m_top, &f64s(&want["m_top"]), 0.0, 0.0);
    assert_eq!(res.plan.input_sets(), sets(&want["I"]).as_slice(), "{name}: I");
    assert_eq!(res.plan.output_sets(), sets(&want["O"]).as_slice(), "{name}: O");
    assert!((res.plan.retention() - fl(&want["retention"])).abs() <= 1e-12, "{name}: retention");
    assert_vec_close(name, &res.plan.per_layer_retention(), &f64s(&want["per_layer_retention"]), 0.0, 1e-12);
    assert!((res.soft_retention_r - fl(&want["soft_retention_r"])).abs() <= 1e-5, "{name}: r");
    for (idx, wl) in arr(&want["layers"]).iter().enumerate() {
        let ctx = format!("{name} layer {}", idx + 1);
        assert_eq!(uz(&wl["layer"]), idx + 1);
        assert_eq!(fl(&wl["theta"]), theta[idx]);
        assert_vec_close(&format!("{ctx}: s_hat"), &res.s_hat[idx], &f64s(&wl["s_hat"]), 0.0, 1e-5);
        assert_vec_close(&format!("{ctx}: s"), &res.s[idx], &f64s(&wl["s"]), 0.0, 1e-5);
        assert_vec_close(&format!("{ctx}: mask"), &res.mask[idx], &f64s(&wl["mask"]), 0.0, 1e-5);
        assert_vec_close(&format!("{ctx}: m"), &res.m[idx], &f64s(&wl["m"]), 0.0, 1e-5);
        let hard: Vec<bool> = arr(&wl["hard"]).iter().map(|b| b.as_bool() == Some(true)).collect();
        assert_eq!(res.m[idx].iter().map(|&m| m >= 0.5).collect::<Vec<_>>(), hard, "{ctx}: hard");
        assert_eq!(res.plan.inputs(idx), usizes(&wl["I"]).as_slice(), "{ctx}: I");
    }
    check_plan_invariants(&res.plan);

    // the inference path (f32 Φ): U to the same tolerance, the same hard sets
    let fast =
        standardized_cdf_scores_fast(&scores, l, h, t, n, 0, fl(&variant["std_eps"])).unwrap_or_else(|e| panic!("{name} (fast): {e}"));
    assert_vec_close(&format!("{name}: U (fast)"), &fast, &flat_f64(&variant["U"]), 0.0, 1e-6);
    let res_fast = concrete_masks(&fast, l, t, n, &theta, tau, p, clamp_eps).unwrap_or_else(|e| panic!("{name} (fast): {e}"));
    assert_eq!(res_fast.plan, res.plan, "{name}: plan (fast)");
    for idx in 0..l {
        assert_eq!(
            res_fast.m[idx].iter().map(|&m| m >= 0.5).collect::<Vec<_>>(),
            res.m[idx].iter().map(|&m| m >= 0.5).collect::<Vec<_>>(),
            "{name} layer {}: hard (fast)",
            idx + 1
        );
    }
}

#[test]
fn concrete_a_with_padding() {
    check_concrete_file("concrete_A_L3H2T8n6.json");
}

#[test]
fn concrete_b_no_padding() {
    check_concrete_file("concrete_B_L4H3T10n10.json");
}

#[test]
fn erfc_matches_known_values() {
    // Values from a libm erfc (glibc through Python's math.erfc).
    let table = [
        (-3.0, 1.9999779095030015),
        (-1.0, 1.842700792949715),
        (-0.3, 1.3286267594591274),
        (0.0, 1.0),
        (0.001, 0.9988716212090307),
        (0.3, 0.6713732405408726),
        (0.5, 0.4795001221869535),
        (1.0, 0.15729920705028513),
        (1.5, 0.033894853524689274),
        (2.0, 0.004677734981047265),
        (2.4999, 0.0004071699003334514),
        (2.5, 0.0004069520174449589),
        (2.7, 0.00013433273994052422),
        (3.0, 2.2090496998585438e-05),
        (4.0, 1.541725790028002e-08),
        (5.0, 1.5374597944280351e-12),
        (6.0, 2.1519736712498916e-17),
        (8.0, 1.1224297172982928e-29),
        (10.0, 2.088487583762545e-45),
    ];
    for (x, want) in table {
        let got = erfc(x);
        assert!((got - want).abs() <= 1e-15 || (got - want).abs() <= 1e-12 * want, "erfc({x}) = {got}, want {want}");
    }
    assert_eq!(normal_cdf(0.0), 0.5);
    assert!((normal_cdf(1.959963984540054) - 0.975).abs() < 1e-14);
    assert!(erfc(f64::NAN).is_nan() && erfc(40.0) == 0.0 && erfc(-40.0) == 2.0);
}

#[test]
fn concrete_input_errors() {
    let u = vec![0.5; 2 * 4 * 4];
    let ok = |u: &[f64], theta: &[f64]| concrete_masks(u, 2, 4, 3, theta, 0.1, 0.1, 1e-6);
    assert!(ok(&u, &[0.0, 0.0]).is_ok());
    assert!(matches!(ok(&u[1..], &[0.0, 0.0]), Err(ConcreteError::Length { what: "u", .. })));
    assert!(matches!(ok(&u, &[0.0]), Err(ConcreteError::Length { what: "theta", .. })));
    assert!(matches!(concrete_masks(&u, 2, 4, 5, &[0.0; 2], 0.1, 0.1, 1e-6), Err(ConcreteError::BadTokenCount { .. })));
    assert!(matches!(concrete_masks(&u, 2, 4, 3, &[0.0; 2], 0.0, 0.1, 1e-6), Err(ConcreteError::BadParam { name: "tau", .. })));
    assert!(matches!(concrete_masks(&u, 2, 4, 3, &[0.0; 2], 0.1, 1.5, 1e-6), Err(ConcreteError::BadParam { name: "p", .. })));
    assert!(matches!(
        concrete_masks(&vec![0.0; 32], 2, 4, 3, &[0.0; 2], 0.1, 0.1, 1e-6),
        Err(ConcreteError::DegenerateScores { layer: 2 })
    ));
    let mut bad = u.clone();
    bad[5] = f64::NAN;
    assert!(matches!(ok(&bad, &[0.0, 0.0]), Err(ConcreteError::NonFinite { what: "u", index: 5 })));
    let s = vec![0.0f32; 2 * 2 * 4 * 4];
    assert!(standardized_cdf_scores(&s, 2, 2, 4, 3, 0, 1e-6).is_ok());
    assert!(matches!(standardized_cdf_scores(&s, 2, 2, 4, 1, 1, 1e-6), Err(ConcreteError::BadDdof { .. })));
    assert!(matches!(standardized_cdf_scores(&s[1..], 2, 2, 4, 3, 0, 1e-6), Err(ConcreteError::Length { .. })));
    // Padding-key values are never read, even when non-finite.
    let mut s = s;
    s[3] = f32::NAN;
    let u = standardized_cdf_scores(&s, 2, 2, 4, 3, 0, 1e-6).unwrap_or_default();
    assert_eq!(u[3], 0.0);
    assert_eq!(u[0], 0.5);
}

// ---------------------------------------------------------------- FLOPs

#[test]
fn flops_reference() {
    let f = load("flops.json");
    let dense = &f["bert_base_dense_n128"];
    let (n, l, d, ff) = (uz(&dense["n"]), uz(&dense["config"]["L"]), uz(&dense["config"]["d"]), uz(&dense["config"]["d_ff"]));
    let pl = &dense["per_layer"];
    let got = layer_flops(uz(&pl["o"]), uz(&pl["i"]), d, ff);
    let want = [&pl["q"], &pl["kv"], &pl["scores"], &pl["av"], &pl["out_proj"], &pl["ffn"], &pl["total"]].map(|v| v.as_u64().unwrap_or(0));
    assert_eq!([got.q, got.kv, got.scores, got.av, got.out_proj, got.ffn, got.total], want);
    assert_eq!((got.o, got.i), (128, 128));
    let total = dense_flops(n, l, d, ff);
    assert_eq!(total, dense["total_flops"].as_u64().unwrap_or(0));
    assert_eq!(total / 2, dense["total_macs"].as_u64().unwrap_or(0));
    assert_eq!(TokenPlan::dense(n, l).flops(d, ff).total, total);

    for key in ["f4", "f8"] {
        let a = &f["approxnet_dense_n128"][key];
        let c = &a["config"];
        let got = dense_flops(uz(&a["n"]), uz(&c["L"]), uz(&c["d"]), uz(&c["d_ff"]));
        assert_eq!(got, a["total_flops"].as_u64().unwrap_or(0), "approxnet {key}");
        assert!((got as f64 / total as f64 - fl(&a["ratio_to_dense"])).abs() < 1e-12);
    }
    let m = &f["minilm_l6_dense_n128"];
    let c = &m["config"];
    assert_eq!(dense_flops(uz(&m["n"]), uz(&c["L"]), uz(&c["d"]), uz(&c["d_ff"])), m["total_flops"].as_u64().unwrap_or(0));

    let p = &f["bert_base_plan_n128"];
    let i_sizes = usizes(&p["I_sizes"]);
    let o_sizes = usizes(&p["O_sizes"]);
    let inputs: Vec<Vec<usize>> = i_sizes.iter().map(|&s| (0..s).collect()).collect();
    let plan = TokenPlan::from_inputs(uz(&p["n"]), inputs, vec![0]).unwrap_or_else(|e| panic!("plan: {e}"));
    assert_eq!(plan.output_sets().iter().map(Vec::len).collect::<Vec<_>>(), o_sizes);
    let pf = plan.flops(d, ff);
    for (g, w) in pf.per_layer.iter().zip(arr(&p["per_layer"])) {
        let want = [&w["q"], &w["kv"], &w["scores"], &w["av"], &w["out_proj"], &w["ffn"], &w["total"]].map(|v| v.as_u64().unwrap_or(0));
        assert_eq!([g.q, g.kv, g.scores, g.av, g.out_proj, g.ffn, g.total], want);
        assert_eq!((g.o, g.i), (uz(&w["o"]), uz(&w["i"])));
    }
    assert_eq!(pf.total, p["encoder_total_flops"].as_u64().unwrap_or(0));
    let approx = p["approxnet_f4_flops"].as_u64().unwrap_or(0);
    assert_eq!(pf.total + approx, p["total_with_approxnet_f4_flops"].as_u64().unwrap_or(0));
    assert_eq!(dense_flops(128, 12, d, ff), p["dense_flops"].as_u64().unwrap_or(0));
    assert!((pf.total as f64 / total as f64 - fl(&p["ratio_encoder_only"])).abs() < 1e-12);
    assert!(((pf.total + approx) as f64 / total as f64 - fl(&p["ratio_with_approxnet_f4"])).abs() < 1e-12);
    assert!((plan.retention() - fl(&p["retention"])).abs() < 1e-12);
    assert_vec_close("per-layer retention", &plan.per_layer_retention(), &f64s(&p["per_layer_retention"]), 0.0, 1e-12);
}

// ---------------------------------------------------------------- plan validation

#[test]
fn plan_constructors() {
    let d = TokenPlan::dense(5, 3);
    assert_eq!((d.n(), d.num_layers(), d.retention()), (5, 3, 1.0));
    assert_eq!(d.top(), &[0, 1, 2, 3, 4]);
    let c = TokenPlan::dense_cls(5, 3);
    assert_eq!(c.top(), &[0]);
    assert_eq!(c.inputs(2), &[0, 1, 2, 3, 4]);
    assert!((c.retention() - 16.0 / 20.0).abs() < 1e-15);
    assert_eq!(c.per_layer_retention(), vec![1.0; 3]);
    let p = TokenPlan::from_inputs(4, vec![vec![0, 1, 2, 3], vec![0, 2]], vec![0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.output_sets(), &[vec![0, 2], vec![0]]);
    assert!((p.retention() - 7.0 / 12.0).abs() < 1e-15);
    // FLOPs: layer 1 has o = 2, i = 4.
    assert_eq!(p.flops(8, 16).per_layer[0], layer_flops(2, 4, 8, 16));
    assert_eq!(layer_flops(2, 4, 8, 16).total, 2 * 2 * 64 + 4 * 4 * 64 + 2 * 2 * 4 * 8 * 2 + 2 * 2 * 64 + 4 * 2 * 8 * 16);
}

#[test]
fn plan_validation_errors() {
    use PlanError::*;
    let new = |n, i: Vec<Vec<usize>>, o: Vec<Vec<usize>>| TokenPlan::new(n, i, o);
    assert_eq!(new(0, vec![vec![0]], vec![vec![0]]), Err(NoTokens));
    assert_eq!(new(3, vec![], vec![]), Err(NoLayers));
    assert_eq!(TokenPlan::from_inputs(3, vec![], vec![0]), Err(NoLayers));
    assert_eq!(new(3, vec![vec![0]], vec![]), Err(LayerCountMismatch { inputs: 1, outputs: 0 }));
    // Empty set.
    assert_eq!(new(3, vec![vec![]], vec![vec![0]]), Err(Empty { layer: 1, set: SetKind::Input }));
    assert_eq!(new(3, vec![vec![0, 1]], vec![vec![]]), Err(Empty { layer: 1, set: SetKind::Output }));
    // Unsorted / duplicate.
    assert_eq!(new(3, vec![vec![0, 2, 1]], vec![vec![0]]), Err(Unsorted { layer: 1, set: SetKind::Input, token: 1, previous: 2 }));
    assert_eq!(new(3, vec![vec![0, 1, 1]], vec![vec![0]]), Err(Unsorted { layer: 1, set: SetKind::Input, token: 1, previous: 1 }));
    // Padding / out of range.
    assert_eq!(
        new(3, vec![vec![0, 1, 2], vec![0, 3]], vec![vec![0, 3], vec![0]]),
        Err(OutOfRange { layer: 1, set: SetKind::Output, token: 3, n: 3 })
    );
    // Missing CLS.
    assert_eq!(new(3, vec![vec![1, 2]], vec![vec![1]]), Err(MissingCls { layer: 1, set: SetKind::Input }));
    assert_eq!(new(3, vec![vec![0, 2]], vec![vec![2]]), Err(MissingCls { layer: 1, set: SetKind::Output }));
    // O not within I.
    assert_eq!(new(3, vec![vec![0, 2]], vec![vec![0, 1]]), Err(OutputNotInInput { layer: 1, token: 1 }));
    // Non-nested: I_2 != O_1 (reads a row the layer below does not produce, or skips one).
    assert_eq!(new(4, vec![vec![0, 1, 2, 3], vec![0, 1, 3]], vec![vec![0, 1], vec![0]]), Err(NotNested { layer: 2, below: 1, token: 3 }));
    assert_eq!(TokenPlan::from_inputs(4, vec![vec![0, 1], vec![0, 1, 2]], vec![0]), Err(OutputNotInInput { layer: 1, token: 2 }));
    assert_eq!(new(4, vec![vec![0, 1, 2], vec![0, 1]], vec![vec![0, 1, 2], vec![0]]), Err(NotNested { layer: 2, below: 1, token: 2 }));
    // Error messages name layer and token.
    let msg = NotNested { layer: 2, below: 1, token: 3 }.to_string();
    assert!(msg.contains("layer 2") && msg.contains("token 3"), "{msg}");
}

#[test]
fn plan_serde_round_trip_validates() {
    let plan = TokenPlan::from_inputs(5, vec![vec![0, 1, 2, 3, 4], vec![0, 2, 4]], vec![0]).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_string(&plan).unwrap_or_default();
    let back: TokenPlan = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, plan);
    let bad = r#"{"n":3,"inputs":[[0,1,5]],"outputs":[[0]]}"#;
    let err = serde_json::from_str::<TokenPlan>(bad).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("token 5"), "{err}");
}

// ---------------------------------------------------------------- ABT errors and properties

#[test]
fn abt_input_errors() {
    let (l, h, t, n) = (2, 1, 4, 3);
    let attn = vec![0.25f32; l * h * t * t];
    let run = |attn: &[f32], n: usize, cfg: &AbtConfig| backtrack(attn, l, h, t, n, cfg).map(|_| ());
    assert!(run(&attn, n, &AbtConfig::topk(0.5)).is_ok());
    assert_eq!(run(&attn[1..], n, &AbtConfig::topk(0.5)), Err(AbtError::AttentionLength { expected: 32, got: 31 }));
    assert_eq!(run(&attn, 5, &AbtConfig::topk(0.5)), Err(AbtError::BadTokenCount { n: 5, t: 4 }));
    assert_eq!(run(&attn, 0, &AbtConfig::topk(0.5)), Err(AbtError::BadTokenCount { n: 0, t: 4 }));
    assert_eq!(run(&attn, n, &AbtConfig::topk(0.0)), Err(AbtError::KeepFraction { layer: 1, k: 0.0 }));
    assert_eq!(run(&attn, n, &AbtConfig::topk(1.5)), Err(AbtError::KeepFraction { layer: 1, k: 1.5 }));
    assert!(matches!(run(&attn, n, &AbtConfig::topk(f64::NAN)), Err(AbtError::KeepFraction { .. })));
    let mut cfg = AbtConfig::topk(0.5);
    cfg.form = AbtForm::TopK { k: vec![0.5; 3] };
    assert_eq!(run(&attn, n, &cfg), Err(AbtError::KeepCount { got: 3, layers: 2 }));
    cfg.form = AbtForm::TopK { k: vec![0.5, -1.0] };
    assert_eq!(run(&attn, n, &cfg), Err(AbtError::KeepFraction { layer: 2, k: -1.0 }));
    let mut cfg = AbtConfig::topk(0.5);
    cfg.p = 1.5;
    assert_eq!(run(&attn, n, &cfg), Err(AbtError::BadP(1.5)));
    let mut cfg = AbtConfig::topk(0.5);
    cfg.top = vec![0, 3];
    assert!(matches!(run(&attn, n, &cfg), Err(AbtError::Top(PlanError::OutOfRange { token: 3, .. }))));
    cfg.top = vec![1];
    assert!(matches!(run(&attn, n, &cfg), Err(AbtError::Top(PlanError::MissingCls { .. }))));
    cfg.top = vec![];
    assert!(matches!(run(&attn, n, &cfg), Err(AbtError::Top(PlanError::Empty { .. }))));
    let mut cfg = AbtConfig::dynamic();
    cfg.form = AbtForm::Dynamic { ratio: 0.1, clamp: (0.9, 0.2) };
    assert!(matches!(run(&attn, n, &cfg), Err(AbtError::DynamicParams { .. })));
    let mut bad = attn.clone();
    bad[t + 2] = f32::NAN; // layer 1, head 0, query 1, key 2 (layer 2 reads only row 0 first)
    assert!(run(&bad, n, &AbtConfig::topk(1.0)).is_err());
    // NaN in a padding-key column is never read.
    let mut pad = attn.clone();
    pad[3] = f32::NAN;
    assert!(run(&pad, n, &AbtConfig::topk(0.5)).is_ok());
}

/// Small deterministic generator (xorshift64*), enough for property checks.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, m: usize) -> usize {
        (self.next() % m as u64) as usize
    }
}

/// Random softmax attention `[L, H, T, T]` with padding keys at probability 0.
fn random_attention(rng: &mut Rng, l: usize, h: usize, t: usize, n: usize, peak: f64) -> Vec<f32> {
    let mut a = vec![0.0f32; l * h * t * t];
    for row in a.chunks_mut(t) {
        let e: Vec<f64> = (0..n).map(|_| (peak * (rng.unit() - 0.5)).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (x, v) in row.iter_mut().zip(&e) {
            *x = (v / sum) as f32;
        }
    }
    a
}

#[test]
fn abt_plans_always_validate() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for case in 0..400 {
        let (l, h) = (1 + rng.below(5), 1 + rng.below(4));
        let t = 1 + rng.below(24);
        let n = 1 + rng.below(t);
        let peak = [0.0, 2.0, 12.0][rng.below(3)];
        let attn = random_attention(&mut rng, l, h, t, n, peak);
        let form = if rng.below(3) == 0 {
            let lo = 0.05 + 0.5 * rng.unit();
            AbtForm::Dynamic { ratio: [0.0, 0.00625, 0.5][rng.below(3)], clamp: (lo, lo + (1.0 - lo) * rng.unit()) }
        } else if rng.below(2) == 0 {
            AbtForm::TopK { k: vec![0.01 + 0.99 * rng.unit()] }
        } else {
            AbtForm::TopK { k: (0..l).map(|_| 0.01 + 0.99 * rng.unit()).collect() }
        };
        let top = if n > 1 && rng.below(3) == 0 { vec![0, 1 + rng.below(n - 1)] } else { vec![0] };
        let red = |r: usize| if r == 0 { Reduce::Avg } else { Reduce::Max };
        let cfg = AbtConfig {
            form,
            p: [0.0, 0.1, 0.5, 1.0][rng.below(4)],
            head_reduce: red(rng.below(2)),
            token_reduce: red(rng.below(2)),
            top: top.clone(),
        };
        let ctx = format!("case {case}: L {l} H {h} T {t} n {n} {cfg:?}");
        let (plan, traces) = backtrack(&attn, l, h, t, n, &cfg).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        check_plan_invariants(&plan);
        assert_eq!(plan.top(), top.as_slice(), "{ctx}");
        for (idx, tr) in traces.iter().enumerate() {
            assert_eq!(tr.layer, idx + 1);
            assert_eq!((tr.scores.len(), tr.topk.len(), tr.w.len(), tr.w_in.len()), (n, tr.c, tr.i.len(), tr.o.len()), "{ctx}");
            assert!((1..=n).contains(&tr.c), "{ctx}");
            assert_eq!(tr.i, plan.inputs(idx), "{ctx}");
            assert_eq!(tr.o, plan.outputs(idx), "{ctx}");
            assert!(tr.topk.iter().all(|j| tr.i.contains(j)), "{ctx}");
            assert!((tr.w.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{ctx}: weights sum to 1");
            // Every kept top-k token scores at least as high as every token left out.
            let min_kept = tr.topk.iter().map(|&j| tr.scores[j]).fold(f64::INFINITY, f64::min);
            assert!((0..n).filter(|j| !tr.topk.contains(j)).all(|j| tr.scores[j] <= min_kept), "{ctx}");
            if let AbtForm::TopK { k } = &cfg.form {
                assert_eq!(tr.c, keep_count(if k.len() == 1 { k[0] } else { k[idx] }, n), "{ctx}");
            }
        }
        // k = 1 keeps every real token but only `top` at the output (not dense).
        if matches!(&cfg.form, AbtForm::TopK { k } if k.iter().all(|&x| x == 1.0)) {
            assert_eq!(plan, TokenPlan::dense_cls(n, l));
        }
    }
    let attn = random_attention(&mut rng, 3, 2, 8, 6, 2.0);
    let (plan, _) = backtrack(&attn, 3, 2, 8, 6, &AbtConfig::topk(1.0)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan, TokenPlan::dense_cls(6, 3));
}

#[test]
fn concrete_plans_always_validate() {
    let mut rng = Rng(12345);
    for case in 0..200 {
        let (l, h) = (1 + rng.below(4), 1 + rng.below(3));
        let t = 2 + rng.below(12);
        let n = 2 + rng.below(t - 1);
        let scores: Vec<f32> = (0..l * h * t * t).map(|_| (6.0 * (rng.unit() - 0.5)) as f32).collect();
        let theta: Vec<f64> = (0..l).map(|_| 4.0 * (rng.unit() - 0.5)).collect();
        let u = standardized_cdf_scores(&scores, l, h, t, n, 0, 1e-6).unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert!(u.iter().all(|&x| (0.0..=1.0).contains(&x)));
        let res = concrete_masks(&u, l, t, n, &theta, 0.1, 0.1, 1e-6).unwrap_or_else(|e| panic!("case {case}: {e}"));
        check_plan_invariants(&res.plan);
        let mut above = &res.m_top;
        for idx in (0..l).rev() {
            let m = &res.m[idx];
            assert!(m.iter().zip(above).all(|(a, b)| a >= b), "case {case}: nesting");
            assert!(m[n..].iter().all(|&x| x < 1e-40), "case {case}: padding masks vanish");
            above = m;
        }
        assert!((0.0..=1.0).contains(&res.soft_retention_r));
    }
}

/// The inference form of step 1 (f32 Φ) stays within 2.5e-7 of the f64 reference, gives the same
/// plans on random inputs, and reports the same errors.
#[test]
fn concrete_fast_scores_match_reference_function() {
    common::note_cpu_paths("standardized_cdf_scores_fast vs the f64 reference");
    let mut rng = Rng(777);
    let mut worst = 0.0f64;
    for case in 0..300 {
        let (l, h) = (1 + rng.below(4), 1 + rng.below(3));
        let t = 2 + rng.below(40);
        let n = 2 + rng.below(t - 1);
        let spread = [0.5, 6.0, 40.0][case % 3];
        let scores: Vec<f32> = (0..l * h * t * t).map(|_| (spread * (rng.unit() - 0.5)) as f32).collect();
        let theta: Vec<f64> = (0..l).map(|_| 4.0 * (rng.unit() - 0.5)).collect();
        let ddof = case % 2;
        let u = standardized_cdf_scores(&scores, l, h, t, n, ddof, 1e-6).unwrap();
        let f = standardized_cdf_scores_fast(&scores, l, h, t, n, ddof, 1e-6).unwrap();
        for (a, b) in u.iter().zip(&f) {
            worst = worst.max((a - b).abs());
        }
        let p1 = concrete_masks(&u, l, t, n, &theta, 0.1, 0.1, 1e-6).unwrap().plan;
        let p2 = concrete_masks(&f, l, t, n, &theta, 0.1, 0.1, 1e-6).unwrap().plan;
        assert_eq!(p1, p2, "case {case}: plan");
    }
    assert!(worst <= 2.5e-7, "max |U_fast - U| = {worst:e}");
    let mut s = vec![0.5f32; 2 * 2 * 4 * 4];
    s[2 * 16 + 5] = f32::NAN;
    assert_eq!(standardized_cdf_scores_fast(&s, 2, 2, 4, 3, 0, 1e-6), standardized_cdf_scores(&s, 2, 2, 4, 3, 0, 1e-6).map(|_| Vec::new()));
    assert_eq!(standardized_cdf_scores_fast(&s, 2, 2, 4, 1, 1, 1e-6), Err(ConcreteError::BadDdof { ddof: 1, n: 1 }));
}
