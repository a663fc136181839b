//! Property tests of the gathered executor (ALGORITHM.md section 1) on random tiny BERT models,
//! plus ABT / dense_cls checks on the real all-MiniLM-L6-v2.
//!
//! Properties:
//! (a) a ragged batch gives each example the same outputs as running it alone;
//! (b) for any valid plan, the gathered run equals the dense soft-mask forward with 0/1 masks
//!     (keys outside `I_l` excluded from every softmax), for every row of every `O_l`;
//! (c) no NaN for single tokens, near-zero soft masks, and padding rows;
//! (d) tokens outside `I_1` are never read: changing them leaves the output bit-identical;
//! plus: ABT plans always validate and run; ABT k = 1 and `dense_cls` reproduce dense CLS.

mod common;

use common::{max_abs_diff, random_model, tiny_config};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use sttabt::planners::abt::{backtrack, AbtConfig, AbtForm, Reduce};
use sttabt::{EncodedInput, Encoder, Precision, RunOptions, TokenPlan};

const VOCAB: usize = 20;
const MAX_POS: usize = 16;
const TOL: f32 = 1e-5;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Architecture of a random model: (L, H, head size, d_ff, weight seed).
#[derive(Debug, Clone, Copy)]
struct Arch {
    layers: usize,
    heads: usize,
    head_size: usize,
    d_ff: usize,
    seed: u64,
}

impl Arch {
    fn build(&self) -> Encoder {
        let cfg = tiny_config(self.layers, self.heads, self.head_size, self.d_ff, VOCAB, MAX_POS);
        random_model(&cfg, self.seed, 1.0)
    }
}

fn arch() -> impl Strategy<Value = Arch> {
    (1..=3usize, 1..=3usize, 2..=8usize, 1..=24usize, any::<u64>()).prop_map(|(layers, heads, head_size, d_ff, seed)| Arch {
        layers,
        heads,
        head_size,
        d_ff,
        seed,
    })
}

fn random_input(n: usize, rng: &mut fastrand::Rng) -> EncodedInput {
    EncodedInput {
        ids: (0..n).map(|_| rng.u32(0..VOCAB as u32)).collect(),
        type_ids: (0..n).map(|_| rng.u32(0..2)).collect(),
        patches: Vec::new(),
    }
}

/// A random valid plan: nested random subsets, each containing CLS; `O_L` is `{0}` half the time.
fn random_plan(n: usize, layers: usize, rng: &mut fastrand::Rng) -> TokenPlan {
    let keep = rng.f64(); // how aggressive this plan is
    let mut inputs: Vec<Vec<usize>> = Vec::with_capacity(layers);
    let mut prev: Vec<usize> = (0..n).collect();
    for _ in 0..layers {
        let set: Vec<usize> = prev.iter().copied().filter(|&t| t == 0 || rng.f64() < 0.3 + 0.7 * keep).collect();
        inputs.push(set.clone());
        prev = set;
    }
    let top: Vec<usize> = if rng.bool() { vec![0] } else { prev.iter().copied().filter(|&t| t == 0 || rng.bool()).collect() };
    TokenPlan::from_inputs(n, inputs, top).expect("random plan is valid by construction")
}

fn all_finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// The embedding output of all `n` tokens (`[n, d]`), from a dense run's `hidden_states[0]`.
fn embedding_output(model: &Encoder, x: &EncodedInput) -> Vec<f32> {
    let out = model
        .run(&[x.clone()], &[TokenPlan::dense(x.len(), model.layers.len())], RunOptions { hidden_states: true, attentions: false })
        .expect("dense run");
    let (rows, h) = &out[0].hidden_states.as_ref().expect("hidden states")[0];
    assert_eq!(rows, &(0..x.len()).collect::<Vec<_>>());
    h.clone()
}

/// 0/1 masks of a plan over `t >= n` positions: `masks[l-1] = 1{I_l}`, `masks[L] = 1{O_L}`.
fn plan_masks(plan: &TokenPlan, t: usize) -> Vec<Vec<f32>> {
    let ind = |set: &[usize]| {
        let mut m = vec![0.0f32; t];
        for &j in set {
            m[j] = 1.0;
        }
        m
    };
    let mut masks: Vec<Vec<f32>> = plan.input_sets().iter().map(|s| ind(s)).collect();
    masks.push(ind(plan.top()));
    masks
}

fn row(x: &[f32], i: usize, d: usize) -> &[f32] {
    &x[i * d..(i + 1) * d]
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// (a) Batch == each example alone, for random ragged plans.
    #[test]
    fn batch_equals_single(a in arch(), ns in prop::collection::vec(1..=12usize, 1..=5), seed in any::<u64>()) {
        let model = a.build();
        let mut rng = fastrand::Rng::with_seed(seed);
        let inputs: Vec<EncodedInput> = ns.iter().map(|&n| random_input(n, &mut rng)).collect();
        let plans: Vec<TokenPlan> = ns.iter().map(|&n| random_plan(n, a.layers, &mut rng)).collect();
        let opts = RunOptions { attentions: true, hidden_states: true };
        let batch = model.run(&inputs, &plans, opts).expect("batch run");
        prop_assert_eq!(batch.len(), inputs.len());
        for (e, (x, p)) in inputs.iter().zip(&plans).enumerate() {
            let single = model.run(std::slice::from_ref(x), std::slice::from_ref(p), opts).expect("single run");
            let (b, s) = (&batch[e], &single[0]);
            prop_assert_eq!(&b.rows, &p.top().to_vec());
            prop_assert_eq!(&b.rows, &s.rows);
            let diff = max_abs_diff(&b.hidden, &s.hidden);
            prop_assert!(diff <= TOL, "example {}: batch vs single hidden differ by {}", e, diff);
            let (bh, sh) = (b.hidden_states.as_ref().unwrap(), s.hidden_states.as_ref().unwrap());
            prop_assert_eq!(bh.len(), a.layers + 1);
            for (l, ((br, bv), (sr, sv))) in bh.iter().zip(sh).enumerate() {
                prop_assert_eq!(br, sr);
                let diff = max_abs_diff(bv, sv);
                prop_assert!(diff <= TOL, "example {} hidden_states[{}] differ by {}", e, l, diff);
            }
            for (l, (ba, sa)) in b.attentions.as_ref().unwrap().iter().zip(s.attentions.as_ref().unwrap()).enumerate() {
                prop_assert_eq!(&ba.queries, &sa.queries);
                prop_assert_eq!(&ba.keys, &sa.keys);
                let diff = max_abs_diff(&ba.probs, &sa.probs);
                prop_assert!(diff <= TOL, "example {} layer {} attention differs by {}", e, l + 1, diff);
            }
        }
    }

    /// (b) Gathered run == dense soft forward with 0/1 plan masks (plus padding rows that must not
    /// matter), for every row of every O_l, and the attention over I_l.
    #[test]
    fn gathered_equals_masked_dense(a in arch(), n in 1..=12usize, pad in 0..=2usize, seed in any::<u64>()) {
        let model = a.build();
        let d = model.config.hidden_size;
        let h = model.config.num_heads;
        let mut rng = fastrand::Rng::with_seed(seed);
        let x = random_input(n, &mut rng);
        let plan = random_plan(n, a.layers, &mut rng);
        let out = model.run(&[x.clone()], &[plan.clone()], RunOptions { attentions: true, hidden_states: true }).expect("run")
            .remove(0);

        // X0 of all n real tokens plus `pad` garbage padding rows.
        let t = n + pad;
        let mut x0 = embedding_output(&model, &x);
        x0.extend((0..pad * d).map(|_| rng.f32() * 200.0 - 100.0));
        let valid: Vec<bool> = (0..t).map(|j| j < n).collect();
        let trace = model.forward_soft(&x0, &valid, &plan_masks(&plan, t)).expect("forward_soft");
        prop_assert_eq!(trace.len(), a.layers);

        // hidden_states[0] = embedding output of I_1 (rows are independent: bit-identical)
        let states = out.hidden_states.as_ref().unwrap();
        prop_assert_eq!(&states[0].0, &plan.inputs(0).to_vec());
        for (r, &tok) in states[0].0.iter().enumerate() {
            prop_assert_eq!(row(&states[0].1, r, d), row(&x0, tok, d));
        }
        for l in 0..a.layers {
            let (rows, vals) = &states[l + 1];
            prop_assert_eq!(rows, &plan.outputs(l).to_vec());
            for (r, &tok) in rows.iter().enumerate() {
                let diff = max_abs_diff(row(vals, r, d), row(&trace[l].x, tok, d));
                prop_assert!(diff <= TOL, "layer {} row {}: gathered vs masked dense differ by {} (plan {:?})", l + 1, tok, diff, plan);
            }
            // attention: [H, |O_l|, |I_l|] vs P[H, T, T] restricted; excluded keys get exactly 0
            let att = &out.attentions.as_ref().unwrap()[l];
            prop_assert_eq!(&att.queries, &plan.outputs(l).to_vec());
            prop_assert_eq!(&att.keys, &plan.inputs(l).to_vec());
            let (no, ni) = (att.queries.len(), att.keys.len());
            for head in 0..h {
                for (qi, &q) in att.queries.iter().enumerate() {
                    let prow = &trace[l].p[(head * t + q) * t..(head * t + q + 1) * t];
                    let sum: f32 = att.probs[(head * no + qi) * ni..(head * no + qi + 1) * ni].iter().sum();
                    prop_assert!((sum - 1.0).abs() <= 1e-5, "attention row sums to {}", sum);
                    for (ki, &k) in att.keys.iter().enumerate() {
                        let g = att.probs[(head * no + qi) * ni + ki];
                        prop_assert!((g - prow[k]).abs() <= TOL, "layer {} head {} P[{},{}]: {} vs {}", l + 1, head, q, k, g, prow[k]);
                    }
                    for k in (0..t).filter(|k| att.keys.binary_search(k).is_err()) {
                        prop_assert_eq!(prow[k], 0.0, "excluded key {} has attention", k);
                    }
                }
            }
        }
        // the CLS output, explicitly
        let diff = max_abs_diff(out.cls(), row(&trace[a.layers - 1].x, 0, d));
        prop_assert!(diff <= TOL, "CLS: gathered vs masked dense differ by {}", diff);
        prop_assert!(all_finite(&out.hidden));
    }

    /// (b') dense_cls and dense give the same CLS; the dense plan's top rows are all tokens.
    #[test]
    fn dense_cls_equals_dense(a in arch(), n in 1..=12usize, seed in any::<u64>()) {
        let model = a.build();
        let mut rng = fastrand::Rng::with_seed(seed);
        let x = random_input(n, &mut rng);
        let dense = model.run(&[x.clone()], &[TokenPlan::dense(n, a.layers)], RunOptions::default()).unwrap().remove(0);
        let cls = model.run(&[x.clone()], &[TokenPlan::dense_cls(n, a.layers)], RunOptions::default()).unwrap().remove(0);
        prop_assert_eq!(&dense.rows, &(0..n).collect::<Vec<_>>());
        prop_assert_eq!(&cls.rows, &vec![0]);
        let diff = max_abs_diff(dense.cls(), cls.cls());
        prop_assert!(diff <= TOL, "dense_cls vs dense CLS differ by {}", diff);
        let via_run_dense = model.run_dense(&[x], RunOptions::default()).unwrap().remove(0);
        prop_assert_eq!(&via_run_dense.hidden, &dense.hidden);
    }

    /// (c) No NaN: single-token inputs (every plan), soft masks near 0, padding rows.
    #[test]
    fn no_nan(a in arch(), n in 1..=12usize, pad in 0..=3usize, seed in any::<u64>()) {
        let model = a.build();
        let d = model.config.hidden_size;
        let big_l = a.layers;
        let mut rng = fastrand::Rng::with_seed(seed);
        let opts = RunOptions { attentions: true, hidden_states: true };
        // single token: the only valid plans are dense == dense_cls
        let one = random_input(1, &mut rng);
        for p in [TokenPlan::dense(1, big_l), TokenPlan::dense_cls(1, big_l)] {
            let o = model.run(&[one.clone()], &[p], opts).unwrap().remove(0);
            prop_assert!(all_finite(&o.hidden), "single token: NaN in output");
            for att in o.attentions.as_ref().unwrap() {
                prop_assert!(att.probs.iter().all(|&v| (v - 1.0).abs() <= 1e-6), "single token attends to itself with weight 1");
            }
            prop_assert!(o.hidden_states.as_ref().unwrap().iter().all(|(_, v)| all_finite(v)));
        }
        let x0_one = embedding_output(&model, &one);
        let tr = model.forward_soft(&x0_one, &[true], &vec![vec![1.0]; big_l + 1]).unwrap();
        prop_assert!(tr.iter().all(|l| all_finite(&l.x) && all_finite(&l.p)));

        // soft masks near 0 (CLS included), exactly 0, and mixed; padding rows with garbage
        let x = random_input(n, &mut rng);
        let t = n + pad;
        let mut x0 = embedding_output(&model, &x);
        x0.extend((0..pad * d).map(|_| rng.f32() * 2000.0 - 1000.0));
        let valid: Vec<bool> = (0..t).map(|j| j < n).collect();
        let tiny = [0.0f32, 1e-38, 1e-30, 1e-20, 1e-12, 1e-6, 0.5, 1.0];
        for variant in 0..3 {
            let masks: Vec<Vec<f32>> = (0..=big_l)
                .map(|_| (0..t).map(|j| match (variant, j < n) {
                    (_, false) => 0.0,
                    (0, true) => 1e-30,
                    (1, true) => 0.0,
                    _ => tiny[rng.usize(..tiny.len())],
                }).collect())
                .collect();
            let tr = model.forward_soft(&x0, &valid, &masks).expect("forward_soft");
            for (l, layer) in tr.iter().enumerate() {
                prop_assert!(all_finite(&layer.p), "variant {} layer {}: non-finite P", variant, l + 1);
                prop_assert!(all_finite(&layer.attention_output), "variant {} layer {}: non-finite A", variant, l + 1);
                prop_assert!(all_finite(&layer.y), "variant {} layer {}: non-finite Y", variant, l + 1);
                prop_assert!(all_finite(&layer.x), "variant {} layer {}: non-finite X", variant, l + 1);
                // padding keys get no attention
                let h = model.config.num_heads;
                for head in 0..h {
                    for i in 0..t {
                        for j in n..t {
                            prop_assert_eq!(layer.p[(head * t + i) * t + j], 0.0);
                        }
                    }
                }
            }
        }

        // padding rows never affect real rows: change the garbage, real rows are bit-identical
        if pad > 0 {
            let masks = vec![vec![1.0f32; t]; big_l + 1];
            let masks: Vec<Vec<f32>> = masks.into_iter().map(|m| m.iter().enumerate().map(|(j, &v)| if j < n { v } else { 0.0 }).collect()).collect();
            let a1 = model.forward_soft(&x0, &valid, &masks).unwrap();
            let mut x0b = x0.clone();
            for v in x0b[n * d..].iter_mut() {
                *v = -*v * 3.0 + 7.0;
            }
            let a2 = model.forward_soft(&x0b, &valid, &masks).unwrap();
            for l in 0..big_l {
                prop_assert_eq!(&a1[l].x[..n * d], &a2[l].x[..n * d], "layer {}: padding rows changed real rows", l + 1);
                prop_assert_eq!(&a1[l].y[..n * d], &a2[l].y[..n * d]);
            }
        }
    }

    /// (d) Tokens outside I_1 are never read: changing their ids / type ids leaves the output
    /// bit-identical.
    #[test]
    fn tokens_outside_i1_are_never_read(a in arch(), n in 2..=12usize, seed in any::<u64>()) {
        let model = a.build();
        let mut rng = fastrand::Rng::with_seed(seed);
        let x = random_input(n, &mut rng);
        let plan = random_plan(n, a.layers, &mut rng);
        let base = model.run(&[x.clone()], &[plan.clone()], RunOptions::default()).unwrap().remove(0);
        let mut y = x.clone();
        for t in (0..n).filter(|t| plan.inputs(0).binary_search(t).is_err()) {
            y.ids[t] = (y.ids[t] + 1 + rng.u32(0..VOCAB as u32 - 1)) % VOCAB as u32;
            y.type_ids[t] = 1 - y.type_ids[t];
        }
        let other = model.run(&[y.clone()], &[plan.clone()], RunOptions::default()).unwrap().remove(0);
        prop_assert_eq!(&base.rows, &other.rows);
        prop_assert!(base.hidden == other.hidden, "changing tokens outside I_1 {:?} changed the output", plan.inputs(0));
        // also inside a batch with other examples
        let z = random_input(1 + rng.usize(..12), &mut rng);
        let zp = random_plan(z.len(), a.layers, &mut rng);
        let b1 = model.run(&[z.clone(), x], &[zp.clone(), plan.clone()], RunOptions::default()).unwrap();
        let b2 = model.run(&[z, y], &[zp, plan], RunOptions::default()).unwrap();
        prop_assert!(b1[1].hidden == b2[1].hidden);
        prop_assert!(b1[0].hidden == b2[0].hidden);
    }

    /// ABT plans computed from the model's own attention always validate and run.
    #[test]
    fn abt_plans_validate_and_run(a in arch(), n in 1..=12usize, k in 0.01f64..=1.0, p in 0.0f64..=1.0,
                                  head_max in any::<bool>(), tok_max in any::<bool>(), dynamic in any::<bool>(),
                                  seed in any::<u64>()) {
        let model = a.build();
        let h = model.config.num_heads;
        let mut rng = fastrand::Rng::with_seed(seed);
        let x = random_input(n, &mut rng);
        let dense = model.run(&[x.clone()], &[TokenPlan::dense(n, a.layers)], RunOptions { attentions: true, hidden_states: false }).unwrap().remove(0);
        let mut attn = Vec::with_capacity(a.layers * h * n * n);
        for la in dense.attentions.as_ref().unwrap() {
            prop_assert_eq!(la.probs.len(), h * n * n);
            attn.extend_from_slice(&la.probs);
        }
        let mut cfg = if dynamic { AbtConfig::dynamic() } else { AbtConfig::topk(k) };
        cfg.p = p;
        cfg.head_reduce = if head_max { Reduce::Max } else { Reduce::Avg };
        cfg.token_reduce = if tok_max { Reduce::Max } else { Reduce::Avg };
        if !dynamic && rng.bool() {
            cfg.form = AbtForm::TopK { k: (0..a.layers).map(|_| 0.01 + 0.99 * rng.f64()).collect() };
        }
        let (plan, traces) = backtrack(&attn, a.layers, h, n, n, &cfg).expect("ABT on real attention");
        prop_assert_eq!(traces.len(), a.layers);
        prop_assert_eq!(plan.n(), n);
        prop_assert_eq!(plan.num_layers(), a.layers);
        prop_assert_eq!(plan.top(), &[0usize][..]);
        let again = TokenPlan::new(n, plan.input_sets().to_vec(), plan.output_sets().to_vec());
        prop_assert!(again.is_ok(), "ABT plan does not validate: {:?}", again);
        let out = model.run(&[x], &[plan], RunOptions::default()).expect("ABT plan runs");
        prop_assert!(all_finite(&out[0].hidden));
        // k = 1: every input is kept, so the CLS equals the dense one
        let (full, _) = backtrack(&attn, a.layers, h, n, n, &AbtConfig::topk(1.0)).unwrap();
        prop_assert_eq!(&full, &TokenPlan::dense_cls(n, a.layers));
    }
}

// ---------------------------------------------------------------------------------------------
// The real model

const SENTENCES: &[(&str, Option<&str>)] = &[
    ("The quick brown fox jumps over the lazy dog.", None),
    ("a gripping, beautifully acted thriller that never lets up", None),
    ("It's not that the film is bad; it simply has nothing new to say about grief, memory or love.", None),
    ("How old are you?", Some("What is your age?")),
    ("ok", None),
];

fn minilm_inputs() -> Vec<EncodedInput> {
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 128).expect("tokenizer");
    SENTENCES.iter().map(|(a, b)| tok.encode(a, *b).expect("encode").input).collect()
}

fn minilm_attention(model: &Encoder, x: &EncodedInput) -> (Vec<f32>, Vec<f32>) {
    let n = x.len();
    let big_l = model.layers.len();
    let out =
        model.run(&[x.clone()], &[TokenPlan::dense(n, big_l)], RunOptions { attentions: true, hidden_states: false }).unwrap().remove(0);
    let attn: Vec<f32> = out.attentions.as_ref().unwrap().iter().flat_map(|a| a.probs.iter().copied()).collect();
    (attn, out.cls().to_vec())
}

#[test]
fn minilm_abt_k1_and_dense_cls_reproduce_dense_cls() {
    let model = common::minilm();
    let (big_l, h) = (model.layers.len(), model.config.num_heads);
    for x in minilm_inputs() {
        let n = x.len();
        let (attn, dense_cls) = minilm_attention(model, &x);
        assert_eq!(attn.len(), big_l * h * n * n);
        let (plan, _) = backtrack(&attn, big_l, h, n, n, &AbtConfig::topk(1.0)).expect("ABT");
        assert_eq!(plan, TokenPlan::dense_cls(n, big_l), "ABT k=1 keeps every input, only CLS at the top");
        let abt = model.run(&[x.clone()], &[plan], RunOptions::default()).unwrap().remove(0);
        assert_eq!(abt.rows, vec![0]);
        let diff = max_abs_diff(abt.cls(), &dense_cls);
        assert!(diff <= 1e-5, "n={n}: ABT k=1 CLS differs from dense by {diff}");
        let dc = model.run(&[x.clone()], &[TokenPlan::dense_cls(n, big_l)], RunOptions::default()).unwrap().remove(0);
        let diff = max_abs_diff(dc.cls(), &dense_cls);
        assert!(diff <= 1e-5, "n={n}: dense_cls CLS differs from dense by {diff}");
    }
}

#[test]
fn minilm_abt_plans_validate_and_batch_matches_single() {
    let model = common::minilm();
    let (big_l, h) = (model.layers.len(), model.config.num_heads);
    let inputs = minilm_inputs();
    for cfg in [AbtConfig::topk(0.5), AbtConfig::topk(0.2), AbtConfig::dynamic()] {
        let plans: Vec<TokenPlan> = inputs
            .iter()
            .map(|x| {
                let (attn, _) = minilm_attention(model, x);
                let (plan, _) = backtrack(&attn, big_l, h, x.len(), x.len(), &cfg).expect("ABT");
                TokenPlan::new(plan.n(), plan.input_sets().to_vec(), plan.output_sets().to_vec()).expect("ABT plan validates")
            })
            .collect();
        let batch = model.run(&inputs, &plans, RunOptions::default()).expect("batch");
        for (e, (x, p)) in inputs.iter().zip(&plans).enumerate() {
            let single = model.run(std::slice::from_ref(x), std::slice::from_ref(p), RunOptions::default()).unwrap().remove(0);
            let diff = max_abs_diff(&batch[e].hidden, &single.hidden);
            assert!(diff <= 1e-4, "{cfg:?} example {e}: batch vs single differ by {diff}");
            // and the gathered run equals the masked dense forward on the real model too
            let n = x.len();
            let x0 = embedding_output(model, x);
            let trace = model.forward_soft(&x0, &vec![true; n], &plan_masks(p, n)).unwrap();
            let d = model.config.hidden_size;
            let diff = max_abs_diff(single.cls(), row(&trace[big_l - 1].x, 0, d));
            assert!(diff <= 1e-4, "{cfg:?} example {e}: gathered vs masked dense CLS differ by {diff}");
        }
    }
}

/// The ABT planner's fused pass (`run_attention_reduced`: 16 query rows through every head, then
/// the head reduction, in groups of examples) gives exactly the plans of a dense run that keeps
/// all attention maps + `backtrack`, for batches of ragged lengths across several 16-row blocks,
/// the ApproxNet's head size 8 and MiniLM's 32, mean and max head reduction.
#[test]
fn fused_abt_pass_equals_backtrack_on_full_attention() {
    let approx_like = random_model(&tiny_config(3, 6, 8, 64, 50, 80), 21, 1.0);
    let lens = [1usize, 2, 15, 16, 17, 33, 47, 64];
    let synthetic: Vec<EncodedInput> = lens
        .iter()
        .enumerate()
        .map(|(e, &n)| EncodedInput {
            ids: (0..n).map(|i| ((i * 7 + e * 3) % 50) as u32).collect(),
            type_ids: vec![0; n],
            patches: Vec::new(),
        })
        .collect();
    let mut minilm_batch = minilm_inputs();
    minilm_batch.push(sttabt::bench::synthetic_input(40, 1));
    for (model, inputs) in [(&approx_like, synthetic), (common::minilm(), minilm_batch)] {
        let (big_l, h) = (model.layers.len(), model.config.num_heads);
        let cfgs = [
            AbtConfig::topk(0.3),
            AbtConfig::topk(0.7),
            AbtConfig::dynamic(),
            AbtConfig { head_reduce: Reduce::Max, ..AbtConfig::topk(0.5) },
        ];
        for cfg in cfgs {
            let fused = sttabt::planners::abt::abt_plans(model, &inputs, &cfg).expect("abt_plans");
            for (e, x) in inputs.iter().enumerate() {
                let n = x.len();
                let out = model
                    .run(std::slice::from_ref(x), &[TokenPlan::dense(n, big_l)], RunOptions { attentions: true, hidden_states: false })
                    .unwrap()
                    .remove(0);
                let attn: Vec<f32> = out.attentions.as_ref().unwrap().iter().flat_map(|a| a.probs.iter().copied()).collect();
                let (want, _) = backtrack(&attn, big_l, h, n, n, &cfg).expect("backtrack");
                assert_eq!(fused[e], want, "{cfg:?} example {e} (n = {n}): fused planner differs from backtrack on the full attention");
            }
        }
    }
}

/// Batches of more than one group of about `REDUCED_GROUP_ROWS` tokens: the fused passes run
/// group by group into memory the thread reuses (from earlier groups and earlier calls, not
/// cleared in between), so every entry the plans do not write must still read 0 and every plan
/// must be the one of its example alone. Ragged lengths (the blocks move between groups and
/// calls), ABT (mean and max), concrete plans, and `run_attention_reduced` with a sparse plan.
#[test]
fn fused_passes_over_several_groups_match_each_example_alone() {
    let m = random_model(&tiny_config(3, 6, 8, 64, 50, 80), 23, 1.0);
    let big_l = m.layers.len();
    let lens: Vec<usize> = (0..60).map(|e| [80usize, 3, 57, 21, 66, 1, 80, 40, 12][e % 9]).collect();
    assert!(lens.iter().sum::<usize>() > 2 * sttabt::exec::REDUCED_GROUP_ROWS, "the batch spans at least three groups");
    let inputs = common::random_inputs(&lens, 50, 4);
    let short = common::random_inputs(&[80, 80, 5], 50, 5);
    for cfg in [AbtConfig::topk(0.3), AbtConfig { head_reduce: Reduce::Max, ..AbtConfig::topk(0.5) }] {
        let batch = sttabt::planners::abt::abt_plans(&m, &inputs, &cfg).expect("abt_plans");
        // another batch in between leaves other blocks in the thread's memory
        sttabt::planners::abt::abt_plans(&m, &short, &cfg).expect("abt_plans");
        let again = sttabt::planners::abt::abt_plans(&m, &inputs, &cfg).expect("abt_plans");
        assert_eq!(batch, again, "{cfg:?}: a second call on the same batch changed its plans");
        for (e, x) in inputs.iter().enumerate() {
            let alone = sttabt::planners::abt::abt_plans(&m, std::slice::from_ref(x), &cfg).expect("abt_plans alone");
            assert_eq!(batch[e], alone[0], "{cfg:?} example {e} (n = {}): batch plan differs from the example alone", x.len());
        }
    }
    let theta = vec![-0.5f64; big_l];
    let batch = sttabt::planners::concrete::concrete_plans(&m, &inputs, &theta).expect("concrete_plans");
    for (e, x) in inputs.iter().enumerate() {
        let alone = sttabt::planners::concrete::concrete_plans(&m, std::slice::from_ref(x), &theta).expect("concrete alone");
        assert_eq!(batch[e], alone[0], "concrete example {e}: batch plan differs from the example alone");
    }
    // A sparse plan (half the tokens from layer 2, CLS alone at the top): unwritten entries are 0.
    let plans: Vec<TokenPlan> = lens
        .iter()
        .map(|&n| {
            let half: Vec<usize> = (0..n).filter(|t| t % 2 == 0).collect();
            let mut sets = vec![(0..n).collect::<Vec<usize>>(); big_l];
            sets[1] = half.clone();
            sets[2] = half;
            TokenPlan::from_inputs(n, sets, vec![0]).unwrap()
        })
        .collect();
    let reduced = m.run_attention_reduced(&inputs, &plans, false).expect("run_attention_reduced");
    sttabt::planners::abt::abt_plans(&m, &short, &AbtConfig::topk(0.3)).expect("abt_plans");
    let again = m.run_attention_reduced(&inputs, &plans, false).expect("run_attention_reduced");
    for (e, (x, p)) in inputs.iter().zip(&plans).enumerate() {
        assert!(
            reduced[e].iter().zip(&again[e]).all(|(a, b)| a.to_bits() == b.to_bits()),
            "example {e}: a second call changed the reduced attention"
        );
        // alone, the projections may take other kernel paths (fewer rows): rounding apart
        let alone = m.run_attention_reduced(std::slice::from_ref(x), std::slice::from_ref(p), false).expect("alone").remove(0);
        let diff = reduced[e].iter().zip(&alone).map(|(a, b)| (a - b).abs()).fold(0.0f64, f64::max);
        assert!(diff <= 1e-6, "example {e}: reduced attention differs from the example alone by {diff}");
        let n = x.len();
        for l in 0..big_l {
            let (ins, outs) = (p.inputs(l), p.outputs(l));
            for i in 0..n {
                for j in 0..n {
                    let v = reduced[e][(l * n + i) * n + j];
                    if !(outs.contains(&i) && ins.contains(&j)) {
                        assert_eq!(
                            v.to_bits(),
                            0f64.to_bits(),
                            "example {e} layer {l} ({i}, {j}): an entry outside O_l x I_l is {v}, not 0"
                        );
                    }
                }
            }
            // every row of O_l sums to 1 over I_l (a head mean of softmax rows)
            for &i in outs {
                let sum: f64 = reduced[e][(l * n + i) * n..][..n].iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "example {e} layer {l} row {i}: sums to {sum}");
            }
        }
    }
}

/// Row blocks (small layers' projections and feed-forward split across threads by rows, each
/// block on one thread) give the same bits as each kernel splitting its own output columns: an
/// ApproxNet-sized model (hidden 96, 12 heads of 8, FFN 384) on a 130-token example, a ragged
/// batch under random plans, and the ABT planner's fused pass, in fp32, int8 and int8-w7. Both
/// paths run every output element through the same micro-kernel with the same summation order
/// (int8: the same per-row activation quantisation and exact integer products). On a CPU whose
/// kernels keep the column split ([`sttabt::exec::row_blocks_apply`] false) the two runs are the
/// same path; the test says so.
#[test]
fn row_blocks_give_the_same_bits_as_column_split() {
    let m32 = random_model(&tiny_config(2, 12, 8, 384, 50, 256), 5, 1.0);
    for precision in [Precision::Fp32, Precision::Int8, Precision::Int8W7] {
        let m = m32.clone().with_precision(precision).unwrap();
        if !sttabt::exec::row_blocks_apply(&m, 130) {
            println!("{precision}: this CPU keeps the column split for this model, so both runs take the same path");
        }
        let mut rng = fastrand::Rng::with_seed(9);
        let long = vec![random_input(130, &mut rng)];
        let ragged: Vec<EncodedInput> = [40usize, 9, 25, 61].iter().map(|&n| random_input(n, &mut rng)).collect();
        let opts = RunOptions { attentions: true, hidden_states: true };
        let run_all = |on: bool| {
            sttabt::exec::set_row_blocks(on);
            let dense = m.run(&long, &[TokenPlan::dense(130, 2)], opts).unwrap();
            let plans: Vec<TokenPlan> =
                ragged.iter().map(|x| random_plan(x.len(), 2, &mut fastrand::Rng::with_seed(x.len() as u64))).collect();
            let sparse = m.run(&ragged, &plans, opts).unwrap();
            let abt = sttabt::planners::abt::abt_plans(&m, &ragged, &AbtConfig::topk(0.4)).unwrap();
            (dense, sparse, abt)
        };
        let (with, without) = (run_all(true), run_all(false));
        sttabt::exec::set_row_blocks(true);
        for (a, b) in with.0.iter().chain(&with.1).zip(without.0.iter().chain(&without.1)) {
            assert_eq!(a.rows, b.rows);
            assert!(a.hidden == b.hidden, "{precision}: hidden rows differ with row blocks by {}", max_abs_diff(&a.hidden, &b.hidden));
            let (ha, hb) = (a.hidden_states.as_ref().unwrap(), b.hidden_states.as_ref().unwrap());
            assert!(ha.iter().zip(hb).all(|(p, q)| p.1 == q.1), "{precision}: a layer's hidden states differ with row blocks");
            let (pa, pb) = (a.attentions.as_ref().unwrap(), b.attentions.as_ref().unwrap());
            assert!(pa.iter().zip(pb).all(|(p, q)| p.probs == q.probs), "{precision}: attention maps differ with row blocks");
        }
        assert_eq!(with.2, without.2, "{precision}: ABT plans differ with row blocks");
        assert!(with.0[0].hidden.iter().all(|v| v.is_finite()));
    }
}

/// A batch whose layer-1 rows exceed [`sttabt::exec::BATCH_GROUP_ROWS`] runs in groups of
/// consecutive examples, one after the other: every example's output rows, hidden states and
/// attention maps equal those of the example run alone, bit for bit in int8 and int8-w7 (row-wise
/// quantisation, exact integer products), within 1e-5 in fp32 (the f32 GEMM's blocking depends on
/// the row count); an ApproxNet-sized model, ragged lengths 9-300, random plans.
#[test]
fn grouped_batches_give_each_example_its_own_bits() {
    let m32 = random_model(&tiny_config(2, 12, 8, 384, 50, 512), 6, 1.0);
    let mut rng = fastrand::Rng::with_seed(21);
    let lengths = [130usize, 90, 40, 200, 9, 61, 300, 17];
    assert!(lengths.iter().sum::<usize>() > 2 * sttabt::exec::BATCH_GROUP_ROWS, "the batch must form several groups");
    let inputs: Vec<EncodedInput> = lengths.iter().map(|&n| random_input(n, &mut rng)).collect();
    let plans: Vec<TokenPlan> = inputs.iter().map(|x| random_plan(x.len(), 2, &mut rng)).collect();
    let opts = RunOptions { attentions: true, hidden_states: true };
    for precision in [Precision::Fp32, Precision::Int8, Precision::Int8W7] {
        let m = m32.clone().with_precision(precision).unwrap();
        let batch = m.run(&inputs, &plans, opts).unwrap();
        assert_eq!(batch.len(), inputs.len());
        for (e, got) in batch.iter().enumerate() {
            let alone = m.run(&inputs[e..e + 1], &plans[e..e + 1], opts).unwrap().remove(0);
            assert_eq!(got.rows, alone.rows, "{precision}: example {e}'s output rows");
            let tol = if precision.is_int8() { 0.0 } else { 1e-5 };
            let diff = max_abs_diff(&got.hidden, &alone.hidden);
            assert!(diff <= tol, "{precision}: example {e} differs from its run alone by {diff}");
            let (ha, hb) = (got.hidden_states.as_ref().unwrap(), alone.hidden_states.as_ref().unwrap());
            assert_eq!(ha.len(), hb.len());
            for (p, q) in ha.iter().zip(hb) {
                assert_eq!(p.0, q.0, "{precision}: example {e}'s hidden-state rows");
                assert!(max_abs_diff(&p.1, &q.1) <= tol, "{precision}: example {e}'s hidden states differ by {}", max_abs_diff(&p.1, &q.1));
            }
            let (pa, pb) = (got.attentions.as_ref().unwrap(), alone.attentions.as_ref().unwrap());
            for (p, q) in pa.iter().zip(pb) {
                assert!(p.queries == q.queries && p.keys == q.keys, "{precision}: example {e}'s attention rows");
                assert!(max_abs_diff(&p.probs, &q.probs) <= tol, "{precision}: example {e}'s attention maps differ");
            }
        }
    }
}

/// A feed-forward planner's batch (manual top-k, a [`sttabt::exec::LayerHook`]) whose layer-1
/// rows exceed [`sttabt::exec::BATCH_GROUP_ROWS`] runs in groups too: each example gets the plan
/// and outputs of its run alone, bit for bit in int8 and int8-w7, the same plan and outputs
/// within 1e-5 in fp32; an ApproxNet-sized model, ragged lengths 9-300.
#[test]
fn grouped_feed_forward_batches_give_each_example_its_own_plan() {
    let m32 = random_model(&tiny_config(3, 12, 8, 384, 50, 512), 7, 1.0);
    let mut rng = fastrand::Rng::with_seed(22);
    let lengths = [130usize, 90, 40, 200, 9, 61, 300, 17];
    assert!(lengths.iter().sum::<usize>() > 2 * sttabt::exec::BATCH_GROUP_ROWS, "the batch must form several groups");
    let inputs: Vec<EncodedInput> = lengths.iter().map(|&n| random_input(n, &mut rng)).collect();
    let hook = sttabt::planners::topk::ManualTopK { k_min: 0.3, layers: 3 };
    let opts = RunOptions { attentions: false, hidden_states: true };
    for precision in [Precision::Fp32, Precision::Int8, Precision::Int8W7] {
        let m = m32.clone().with_precision(precision).unwrap();
        if !sttabt::exec::row_blocks_apply(&m, sttabt::exec::BATCH_GROUP_ROWS) {
            println!("{precision}: this CPU keeps the column split for this model, so the batch runs whole");
        }
        let (batch, plans) = m.run_feed_forward(&inputs, &hook, &[0], opts).unwrap();
        assert_eq!((batch.len(), plans.len()), (inputs.len(), inputs.len()));
        let mut pruned = 0;
        for e in 0..inputs.len() {
            let (mut alone, alone_plan) = m.run_feed_forward(&inputs[e..e + 1], &hook, &[0], opts).unwrap();
            let alone = alone.remove(0);
            assert_eq!(plans[e], alone_plan[0], "{precision}: example {e}'s plan differs from its run alone");
            pruned += usize::from(plans[e].inputs(2).len() < inputs[e].len());
            let tol = if precision.is_int8() { 0.0 } else { 1e-5 };
            let diff = max_abs_diff(&batch[e].hidden, &alone.hidden);
            assert!(diff <= tol, "{precision}: example {e} differs from its run alone by {diff}");
            let (ha, hb) = (batch[e].hidden_states.as_ref().unwrap(), alone.hidden_states.as_ref().unwrap());
            for (p, q) in ha.iter().zip(hb) {
                assert_eq!(p.0, q.0, "{precision}: example {e}'s hidden-state rows");
                assert!(max_abs_diff(&p.1, &q.1) <= tol, "{precision}: example {e}'s hidden states differ");
            }
        }
        assert_eq!(pruned, inputs.len(), "{precision}: manual top-k kept every token of some example at layer 3");
    }
}

/// Pre-softmax attention scores `S = Q Kᵀ / √d_h` of a dense run of `x`, `[L, H, n, n]`
/// (ALGORITHM.md section 4 step 1), from the layer inputs and the layers' own weights, in f64
/// (rounded to f32 at the end). Post-LN BERT: layer l reads hidden state l - 1 as it is.
fn presoftmax_scores(m: &Encoder, x: &EncodedInput) -> Vec<f32> {
    let (big_l, h, d) = (m.layers.len(), m.config.num_heads, m.config.hidden_size);
    let (n, dh) = (x.len(), d / h);
    let out = m
        .run(std::slice::from_ref(x), &[TokenPlan::dense(n, big_l)], RunOptions { attentions: false, hidden_states: true })
        .unwrap()
        .remove(0);
    let hs = out.hidden_states.expect("hidden states");
    let mut s = vec![0.0f32; big_l * h * n * n];
    for (l, layer) in m.layers.iter().enumerate() {
        let (rows, xin) = &hs[l];
        assert_eq!(rows, &(0..n).collect::<Vec<_>>(), "dense run: layer {} reads every token", l + 1);
        let q = layer.query.forward(xin); // pre-scaled by 1/sqrt(d_h)
        let kv = layer.key_value.forward(xin); // [n, 2d]: K in columns 0..d
        for head in 0..h {
            for i in 0..n {
                for j in 0..n {
                    let dot: f64 = (0..dh).map(|dd| f64::from(q[i * d + head * dh + dd]) * f64::from(kv[j * 2 * d + head * dh + dd])).sum();
                    s[((l * h + head) * n + i) * n + j] = dot as f32;
                }
            }
        }
    }
    s
}

/// The concrete planner's fused pass (per-head standardised scores reduced inside the
/// ApproxNet's attention pass) against the f64 reference (`standardized_cdf_scores` on the
/// pre-softmax scores computed here from the layers' weights): `U` within 1e-5 and the same
/// plans as `concrete_masks_top` on the reference `U`; on a ragged batch across several 16-row
/// blocks, for several thresholds; and it refuses NaN weights.
#[test]
fn fused_concrete_pass_equals_scores_on_full_attention() {
    use sttabt::exec::HeadReduce;
    use sttabt::planners::concrete::{concrete_masks_top, standardized_cdf_scores};
    let m = random_model(&tiny_config(3, 4, 8, 64, 50, 80), 33, 1.0);
    let (big_l, h) = (m.layers.len(), m.config.num_heads);
    let mut rng = fastrand::Rng::with_seed(4);
    let inputs: Vec<EncodedInput> = [1usize, 2, 17, 33, 64].iter().map(|&n| random_input(n, &mut rng)).collect();
    let dense: Vec<TokenPlan> = inputs.iter().map(|x| TokenPlan::dense(x.len(), big_l)).collect();
    let fused_u = m.run_attention_reduced_with(&inputs, &dense, HeadReduce::ConcreteCdf { ddof: 0, eps: 1e-6 }).expect("fused U");
    let want_u: Vec<Vec<f64>> =
        inputs.iter().map(|x| standardized_cdf_scores(&presoftmax_scores(&m, x), big_l, h, x.len(), x.len(), 0, 1e-6).unwrap()).collect();
    for (e, (f, w)) in fused_u.iter().zip(&want_u).enumerate() {
        let worst = f.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-5, "example {e}: fused U is {worst:e} off the f64 reference on the pre-softmax scores");
    }
    for theta in [[-2.0, 0.0, 1.0], [0.0; 3], [1.5, -0.5, -3.0]] {
        let fused = sttabt::planners::concrete::concrete_plans(&m, &inputs, &theta).expect("concrete_plans");
        for (e, x) in inputs.iter().enumerate() {
            let n = x.len();
            let want = concrete_masks_top(&want_u[e], big_l, n, n, &theta, 0.1, 0.1, 1e-6, 1).unwrap().plan;
            assert_eq!(fused[e], want, "θ = {theta:?}, example {e} (n = {n}): fused concrete planner differs");
        }
    }
    // NaN weights (loading refuses them; a layer rebuilt with one after loading): a clear
    // error, not a plan
    let mut bad = random_model(&tiny_config(2, 4, 8, 64, 50, 80), 3, 1.0);
    let kv = &bad.layers[1].key_value;
    let mut w = kv.weight().to_vec();
    w[0] = f32::NAN;
    bad.layers[1].key_value = sttabt::model::Linear::new(w, kv.bias().to_vec(), kv.d_in(), kv.d_out());
    let err = sttabt::planners::concrete::concrete_plans(&bad, &inputs[2..3], &[0.0, 0.0]).expect_err("NaN attention must be refused");
    assert!(err.to_string().contains("not finite"), "{err}");
}

/// Concrete inference standardises the pre-softmax scores even where the probabilities
/// underflow: a model whose queries are scaled up so that keys sit more than 90 nats below their
/// row's max (`P = e^{-90}` is 0 in f32; `ln P` would be clamped). The fused `U` and the plans
/// equal the f64 reference (`planners::concrete::standardized_cdf_scores`) on the scores, and
/// `U` from the clamped log-probabilities (the old computation) is measurably different, so the
/// test tells the two apart.
#[test]
fn concrete_plans_standardise_scores_far_below_the_row_max() {
    use sttabt::exec::HeadReduce;
    use sttabt::planners::concrete::{concrete_masks_top, standardized_cdf_scores, standardized_cdf_scores_fast};
    let cfg = tiny_config(2, 4, 8, 64, 50, 80);
    let mut tensors = common::random_tensors(&cfg, 91, 1.0);
    for (name, _, data) in tensors.iter_mut() {
        if name.ends_with("attention.self.query.weight") || name.ends_with("attention.self.key.weight") {
            data.iter_mut().for_each(|v| *v *= 12.0);
        }
    }
    let dir = common::TempDir::new("far-scores");
    common::write_checkpoint(dir.path(), &cfg, &tensors);
    let m = Encoder::load(dir.path()).expect("load");
    let (big_l, h) = (m.layers.len(), m.config.num_heads);
    let mut rng = fastrand::Rng::with_seed(5);
    let inputs: Vec<EncodedInput> = [24usize, 40].iter().map(|&n| random_input(n, &mut rng)).collect();
    let dense: Vec<TokenPlan> = inputs.iter().map(|x| TokenPlan::dense(x.len(), big_l)).collect();
    let fused_u = m.run_attention_reduced_with(&inputs, &dense, HeadReduce::ConcreteCdf { ddof: 0, eps: 1e-6 }).expect("fused U");
    let theta = [0.5, -0.5];
    let plans = sttabt::planners::concrete::concrete_plans(&m, &inputs, &theta).expect("concrete_plans");
    for (e, x) in inputs.iter().enumerate() {
        let n = x.len();
        let s = presoftmax_scores(&m, x);
        // the premise: many keys more than 90 nats below their row's max
        let far = s
            .chunks(n)
            .map(|row| {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                row.iter().filter(|&&v| v < max - 90.0).count()
            })
            .sum::<usize>();
        assert!(far > 10 * n, "example {e}: only {far} scores are > 90 nats below their row max; scale the queries up");
        let want = standardized_cdf_scores(&s, big_l, h, n, n, 0, 1e-6).unwrap();
        let worst = fused_u[e].iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-5, "example {e}: fused U is {worst:e} off the f64 reference on the pre-softmax scores");
        let want_plan = concrete_masks_top(&want, big_l, n, n, &theta, 0.1, 0.1, 1e-6, 1).unwrap().plan;
        assert_eq!(plans[e], want_plan, "example {e}: concrete plan differs from the reference on the scores");
        // the old computation: standardised ln(max(P, 1e-37)) - visibly wrong here
        let out = m
            .run(std::slice::from_ref(x), &[TokenPlan::dense(n, big_l)], RunOptions { attentions: true, hidden_states: false })
            .unwrap()
            .remove(0);
        let mut logp = vec![0.0f32; big_l * h * n * n];
        for (l, la) in out.attentions.as_ref().unwrap().iter().enumerate() {
            for (r, p) in la.probs.chunks(n).enumerate() {
                sttabt::kernels::ln_clamped(p, &mut logp[(l * h * n + r) * n..][..n]);
            }
        }
        let old = standardized_cdf_scores_fast(&logp, big_l, h, n, n, 0, 1e-6).unwrap();
        let gap = old.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!("example {e} (n = {n}): {far} scores > 90 nats below their row max; fused U within {worst:.1e} of the reference; U from clamped ln P off by {gap:.3}");
        assert!(gap > 1e-3, "example {e}: U from clamped log-probabilities is only {gap:e} off; the test would not catch it");
    }
}
