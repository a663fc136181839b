//! `reference/backtrack/concrete_soft_forward_{A,B}.json` (reference/README.md section 2.8):
//! the soft-mask forward (ALGORITHM.md section 4 step 3) with soft and hard masks, and the gathered
//! token-plan execution of the hard plan, on a tiny random post-LN BERT. Tolerance 1e-5 absolute.

mod common;

use common::{f32s, max_abs_diff, read_json, reference_dir, tiny_config, write_checkpoint, TempDir};
use sttabt::exec::{ExampleOutput, SoftLayerTrace};
use sttabt::{Encoder, RunOptions, TokenPlan};

const TOL: f32 = 1e-5;

struct Case {
    file: serde_json::Value,
    model: Encoder,
    l: usize,
    d: usize,
    h: usize,
    t: usize,
    n: usize,
    valid: Vec<bool>,
    x0: Vec<f32>,
}

fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("int") as usize).collect()
}

fn sets(v: &serde_json::Value) -> Vec<Vec<usize>> {
    v.as_array().expect("array of sets").iter().map(usizes).collect()
}

fn load_case(name: &str) -> Case {
    let file = read_json(reference_dir().join("backtrack").join(format!("concrete_soft_forward_{name}.json")));
    let c = &file["config"];
    let get = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("config.{k}")) as usize;
    let (l, d, h, hs, d_ff, t, n) = (get("L"), get("d"), get("H"), get("head_size"), get("d_ff"), get("T"), get("n"));
    assert_eq!(h * hs, d);
    assert!(c["hidden_act"].as_str().unwrap().starts_with("gelu (exact erf"));
    assert_eq!(c["layer_norm_eps"].as_f64(), Some(1e-12));
    // The reference starts from X0; the checkpoint still needs embeddings: dummy ones (vocab 4,
    // T positions), never used here.
    let cfg = tiny_config(l, h, hs, d_ff, 4, t);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![4, d], vec![0.25; 4 * d]),
        ("embeddings.position_embeddings.weight".into(), vec![t, d], (0..t * d).map(|i| (i % 7) as f32 * 0.1).collect()),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, d], vec![0.0; 2 * d]),
        ("embeddings.LayerNorm.weight".into(), vec![d], vec![1.0; d]),
        ("embeddings.LayerNorm.bias".into(), vec![d], vec![0.0; d]),
    ];
    let weights = file["weights"].as_object().expect("weights");
    for (name, value) in weights {
        let data = f32s(value);
        let shape = match value.as_array().and_then(|a| a.first()).map(|f| f.is_array()) {
            Some(true) => vec![value.as_array().unwrap().len(), value[0].as_array().unwrap().len()],
            _ => vec![data.len()],
        };
        tensors.push((name.clone(), shape, data));
    }
    assert_eq!(weights.len(), 16 * l, "16 tensors per layer");
    let dir = TempDir::new(&format!("softfwd-{name}"));
    write_checkpoint(dir.path(), &cfg, &tensors);
    let model = Encoder::load(dir.path()).expect("load the reference encoder");
    let valid: Vec<bool> = usizes(&file["valid"]).into_iter().map(|v| v == 1).collect();
    assert_eq!(valid.len(), t);
    assert_eq!(valid.iter().filter(|&&v| v).count(), n);
    assert_eq!(usizes(&file["X0_shape"]), vec![t, d]);
    let x0 = f32s(&file["X0"]);
    Case { file, model, l, d, h, t, n, valid, x0 }
}

fn masks(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array().expect("masks").iter().map(f32s).collect()
}

fn check_trace(case: &Case, run: &str, trace: &[SoftLayerTrace]) {
    let r = &case.file[run];
    let (l, d, h, t) = (case.l, case.d, case.h, case.t);
    assert_eq!(trace.len(), l);
    let field = |name: &str, per_layer: usize| -> Vec<Vec<f32>> {
        let all = f32s(&r[name]);
        assert_eq!(all.len(), l * per_layer, "{run}.{name} size");
        all.chunks(per_layer).map(|c| c.to_vec()).collect()
    };
    let (p, a, y, x) = (field("P", h * t * t), field("attention_output", t * d), field("Y", t * d), field("X", t * d));
    for li in 0..l {
        for (what, got, want) in [
            ("P", &trace[li].p, &p[li]),
            ("attention_output", &trace[li].attention_output, &a[li]),
            ("Y", &trace[li].y, &y[li]),
            ("X", &trace[li].x, &x[li]),
        ] {
            let diff = max_abs_diff(got, want);
            assert!(diff <= TOL, "{run} layer {}: {what} differs from the reference by {diff}", li + 1);
        }
    }
    let x_cls = f32s(&r["X_cls"]);
    let diff = max_abs_diff(&trace[l - 1].x[..d], &x_cls);
    assert!(diff <= TOL, "{run}: X_cls differs from the reference by {diff}");
}

fn soft_and_hard(name: &str) {
    let case = load_case(name);
    let soft = masks(&case.file["soft_masks"]);
    let hard = masks(&case.file["hard_masks"]);
    assert_eq!(soft.len(), case.l + 1);
    let tr = case.model.forward_soft(&case.x0, &case.valid, &soft).expect("soft forward");
    check_trace(&case, "soft", &tr);
    let tr_hard = case.model.forward_soft(&case.x0, &case.valid, &hard).expect("hard forward");
    check_trace(&case, "hard", &tr_hard);

    // P0 of layer 1 = the plain softmax: with m^1 = valid the renormalisation is a no-op (to 1e-9).
    let mut m = soft.clone();
    m[0] = case.valid.iter().map(|&v| if v { 1.0 } else { 0.0 }).collect();
    let tr0 = case.model.forward_soft(&case.x0, &case.valid, &m).unwrap();
    let p0 = f32s(&case.file["soft"]["P0"]);
    let per = case.h * case.t * case.t;
    let diff = max_abs_diff(&tr0[0].p, &p0[..per]);
    assert!(diff <= TOL, "layer-1 P0 differs by {diff}");
    let p0_hard = f32s(&case.file["hard"]["P0"]);
    assert_eq!(&p0[..per], &p0_hard[..per], "layer-1 P0 is mask-independent");

    // The padding row of X0 is never read by a real row (README: "changes no real row (0.0)").
    let mut x0 = case.x0.clone();
    for (j, v) in case.valid.iter().enumerate() {
        if !v {
            x0[j * case.d..(j + 1) * case.d].iter_mut().for_each(|x| *x = 100.0);
        }
    }
    let tr100 = case.model.forward_soft(&x0, &case.valid, &soft).unwrap();
    let real = case.n * case.d;
    for li in 0..case.l {
        assert_eq!(&tr100[li].x[..real], &tr[li].x[..real], "layer {}: padding row changed a real row", li + 1);
    }
}

#[test]
fn soft_forward_a() {
    soft_and_hard("A");
}

#[test]
fn soft_forward_b() {
    soft_and_hard("B");
}

/// The hard plan from the file's hard masks, checked against its `I` / `O`.
fn hard_plan(case: &Case) -> TokenPlan {
    let hard = masks(&case.file["hard_masks"]);
    let set = |m: &[f32]| -> Vec<usize> { (0..case.t).filter(|&j| m[j] >= 0.5).collect() };
    let inputs: Vec<Vec<usize>> = hard[..case.l].iter().map(|m| set(m)).collect();
    let top = set(&hard[case.l]);
    assert_eq!(top, vec![0]);
    let plan = TokenPlan::from_inputs(case.n, inputs, top).expect("hard plan is valid");
    assert_eq!(plan.input_sets(), &sets(&case.file["I"])[..]);
    assert_eq!(plan.output_sets(), &sets(&case.file["O"])[..]);
    plan
}

fn check_gathered(case: &Case, out: &ExampleOutput, what: &str) {
    let g = &case.file["gathered"];
    let d = case.d;
    let layers = g["layers"].as_array().unwrap();
    let atts = out.attentions.as_ref().expect("attentions");
    let states = out.hidden_states.as_ref().expect("hidden states");
    for (li, gl) in layers.iter().enumerate() {
        let (keys, queries) = (usizes(&gl["key_rows"]), usizes(&gl["query_rows"]));
        assert_eq!(atts[li].keys, keys, "{what} layer {}: keys", li + 1);
        assert_eq!(atts[li].queries, queries, "{what} layer {}: queries", li + 1);
        let diff = max_abs_diff(&atts[li].probs, &f32s(&gl["P"]));
        assert!(diff <= TOL, "{what} layer {}: gathered P differs by {diff}", li + 1);
        assert_eq!(states[li + 1].0, queries);
        let diff = max_abs_diff(&states[li + 1].1, &f32s(&gl["X_rows"]));
        assert!(diff <= TOL, "{what} layer {}: gathered X_rows differ by {diff}", li + 1);
    }
    assert_eq!(out.rows, vec![0]);
    let diff = max_abs_diff(out.cls(), &f32s(&g["X_cls"]));
    assert!(diff <= TOL, "{what}: gathered X_cls differs by {diff}");
    assert_eq!(out.cls().len(), d);
}

fn gathered(name: &str) {
    let case = load_case(name);
    let plan = hard_plan(&case);
    let (d, l, t) = (case.d, case.l, case.t);

    // 1. The hard-mask soft forward equals the gathered run (README: the same computation up to
    //    the 1e-9, invisible in float32), for the CLS and every O_l row, and P over I_l.
    let hard = masks(&case.file["hard_masks"]);
    let tr = case.model.forward_soft(&case.x0, &case.valid, &hard).unwrap();
    let g = &case.file["gathered"];
    let diff = max_abs_diff(&tr[l - 1].x[..d], &f32s(&g["X_cls"]));
    assert!(diff <= TOL, "forward_soft(hard) CLS vs gathered.X_cls: {diff}");
    for (li, gl) in g["layers"].as_array().unwrap().iter().enumerate() {
        let (keys, queries) = (usizes(&gl["key_rows"]), usizes(&gl["query_rows"]));
        let rows: Vec<f32> = queries.iter().flat_map(|&q| tr[li].x[q * d..(q + 1) * d].iter().copied()).collect();
        let diff = max_abs_diff(&rows, &f32s(&gl["X_rows"]));
        assert!(diff <= TOL, "forward_soft(hard) layer {} O_l rows vs gathered X_rows: {diff}", li + 1);
        let mut p = Vec::new();
        for head in 0..case.h {
            for &q in &queries {
                for &k in &keys {
                    p.push(tr[li].p[(head * t + q) * t + k]);
                }
            }
        }
        let diff = max_abs_diff(&p, &f32s(&gl["P"]));
        assert!(diff <= TOL, "forward_soft(hard) layer {} P[O_l, I_l] vs gathered P: {diff}", li + 1);
    }

    // 2. The executor itself, started from X0 (real rows only; the plan never reads padding).
    //    See the marked block below: until `Encoder::run_from_embeddings` exists, a test-side
    //    gathered path built from the model's public layer pieces stands in for it.
    let x0_real = case.x0[..case.n * d].to_vec();
    let out = case
        .model
        .run_from_embeddings(&[x0_real.clone()], &[plan.clone()], RunOptions { attentions: true, hidden_states: true })
        .expect("gathered run from X0")
        .remove(0);
    check_gathered(&case, &out, "run_from_embeddings");
    // hidden_states[0] is X0 on I_1
    let states = out.hidden_states.as_ref().unwrap();
    assert_eq!(states[0].0, plan.inputs(0));
    let want: Vec<f32> = plan.inputs(0).iter().flat_map(|&j| x0_real[j * d..(j + 1) * d].iter().copied()).collect();
    assert_eq!(states[0].1, want);
    // rows outside I_1 are never read
    let mut x0_junk = x0_real.clone();
    for j in (0..case.n).filter(|j| !plan.inputs(0).contains(j)) {
        x0_junk[j * d..(j + 1) * d].iter_mut().for_each(|v| *v = 1e3);
    }
    let out2 = case.model.run_from_embeddings(&[x0_junk], &[plan.clone()], RunOptions::default()).unwrap().remove(0);
    assert_eq!(out2.hidden, out.hidden, "rows outside I_1 were read");
    // a ragged batch (the dense_cls plan next to the hard plan) changes nothing
    let outs = case
        .model
        .run_from_embeddings(&[x0_real.clone(), x0_real.clone()], &[TokenPlan::dense_cls(case.n, l), plan.clone()], RunOptions::default())
        .unwrap();
    assert!(max_abs_diff(&outs[1].hidden, &out.hidden) <= TOL);
    // bad shapes are an error
    assert!(case.model.run_from_embeddings(&[x0_real[..d].to_vec()], &[plan.clone()], RunOptions::default()).is_err());
    assert!(case.model.run_from_embeddings(&[x0_real], &[], RunOptions::default()).is_err());
}

#[test]
fn gathered_a() {
    gathered("A");
}

#[test]
fn gathered_b() {
    gathered("B");
}

// =============================================================================================
