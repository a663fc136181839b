//! The attention softmax's exponential (`kernels::exp_softmax`, issue 17: the ApproxNet pass of
//! ABT is exp-bound at head size 8): its accuracy against f64 `exp`, the same bits on every
//! path (AVX-512 `vscalefps` kernel, scalar fallback), and plans on real Rotten Tomatoes test
//! sentences identical to those of the exponential it replaced (`SoftmaxExp::Cephes`), for ABT
//! (ApproxNet attention, head size 8), the concrete planner and manual top-k (the teacher's
//! attention, head size 32).

mod common;
use common::*;

use std::io::Write as _;
use sttabt::kernels::{exp_approx, exp_row, exp_softmax, set_softmax_exp, SoftmaxExp};
use sttabt::planners::abt::{Abt, AttentionSource};
use sttabt::planners::topk::ManualTopK;
use sttabt::planners::{Models, Planner, Schedule};
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{EncodedInput, Encoder, RunOptions, TokenPlan};

/// `|got − e^x|` in units in the last place of `e^x` (as an f32, normal here).
fn ulps(got: f32, x: f32) -> f64 {
    let want = f64::from(x).exp();
    let ulp = 2f64.powi(want.log2().floor() as i32 - 23);
    (f64::from(got) - want).abs() / ulp
}

/// Every 61st f32 of `[-87.3, 88.7]` (~3.7e7 values, both signs, every binade): within 1.03 ulp
/// of f64 `exp` (measured 1.024, relative error < 1.3e-7), and `exp_row` (AVX-512 on such CPUs)
/// gives the scalar form's bits; the Cephes polynomial it replaced is measured for comparison
/// (below 88.3: from 88.38 on its `2^128` overflows to infinity).
#[test]
fn exp_softmax_is_within_1_03_ulp_on_its_whole_range() {
    let mut xs: Vec<f32> = Vec::new();
    for (lo, hi) in [(0u32, 88.7f32.to_bits()), (0x8000_0000, (-87.3f32).to_bits())] {
        xs.extend((lo..=hi).step_by(61).map(f32::from_bits));
    }
    xs.extend([0.0, -0.0, 1.0, -1.0, 88.7, -87.3, 0.5 * std::f32::consts::LN_2, -0.5 * std::f32::consts::LN_2]);
    let mut fast = xs.clone();
    exp_row(&mut fast);
    let (mut worst, mut worst_x, mut worst_cephes, mut sum) = (0.0f64, 0.0f32, 0.0f64, 0.0f64);
    for (&x, &y) in xs.iter().zip(&fast) {
        let s = exp_softmax(x);
        assert_eq!(y.to_bits(), s.to_bits(), "exp_row({x:e}) = {y:e}, scalar exp_softmax {s:e}");
        let u = ulps(y, x);
        sum += u;
        if u > worst {
            (worst, worst_x) = (u, x);
        }
        if x < 88.3 {
            worst_cephes = worst_cephes.max(ulps(exp_approx(x), x));
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "exp_softmax over {} values: worst {worst:.3} ulp (at {worst_x:e}), mean {:.3}; Cephes exp_approx worst {worst_cephes:.3} ulp",
        xs.len(),
        sum / xs.len() as f64
    );
    assert!(worst <= 1.03, "exp_softmax({worst_x:e}) is {worst} ulp off");
    assert!(xs.len() > 30_000_000);
}

/// Clamping, NaN, infinities and every tail length of the vector path.
#[test]
fn exp_softmax_edges_and_tails() {
    assert!(exp_softmax(f32::NAN).is_nan());
    assert_eq!(exp_softmax(0.0), 1.0);
    assert_eq!(exp_softmax(f32::NEG_INFINITY), exp_softmax(-87.3));
    assert_eq!(exp_softmax(-1000.0), exp_softmax(-87.3));
    assert!(exp_softmax(-87.3) > 0.0 && exp_softmax(-87.3) < 1.3e-38);
    assert_eq!(exp_softmax(f32::INFINITY), exp_softmax(88.7));
    assert!(exp_softmax(88.7).is_finite() && exp_softmax(88.7) > 3.2e38, "{}", exp_softmax(88.7));
    let mut rng = fastrand::Rng::with_seed(41);
    for len in 0..=140 {
        let mut x: Vec<f32> = (0..len).map(|_| (rng.f32() - 0.8) * 60.0).collect();
        if len > 3 {
            x[len / 2] = f32::NAN;
            x[1] = f32::NEG_INFINITY;
        }
        let want: Vec<f32> = x.iter().map(|&v| exp_softmax(v)).collect();
        exp_row(&mut x);
        for (i, (a, b)) in x.iter().zip(&want).enumerate() {
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "len {len} [{i}]: {a:e} vs {b:e}");
        }
    }
}

fn rt_test_inputs() -> Vec<EncodedInput> {
    let splits = sttabt::data::rt::load_rotten_tomatoes(&rotten_tomatoes_path(), 0).expect("RT");
    let tok = TextTokenizer::from_dir(&minilm_dir(), 128).expect("tokenizer");
    splits.test.examples.iter().map(|e| tok.encode(&e.text, None).unwrap().input).collect()
}

/// Each planner's plans for every input, under the current softmax exponential.
fn all_plans(teacher: &Encoder, approx: &Encoder, inputs: &[EncodedInput]) -> Vec<(String, Vec<TokenPlan>)> {
    let models = Models { teacher, approx: Some(approx) };
    let ahead = |planner: &dyn Planner| match planner.schedule(&models, inputs).unwrap() {
        Schedule::Plans { plans, .. } => plans,
        Schedule::FeedForward(_) => panic!("{} plans ahead of time", planner.label()),
    };
    let mut out = Vec::new();
    for k in [0.5, 0.3] {
        out.push((format!("abt k={k}"), ahead(&Abt::topk(vec![k], AttentionSource::ApproxNet))));
    }
    let theta = vec![0.0f64; teacher.layers.len()];
    out.push(("concrete θ0=0".into(), sttabt::planners::concrete::concrete_plans(approx, inputs, &theta).unwrap()));
    let topk = ManualTopK { k_min: 0.5, layers: teacher.layers.len() };
    let first = &inputs[..400.min(inputs.len())];
    out.push(("topk k_min=0.5".into(), sttabt::planners::run(&topk, &models, first, RunOptions::default()).unwrap().plans));
    out
}

/// The plans of every planner that reads attention probabilities, on all 1,275 RT test
/// sentences (manual top-k, which runs the teacher, on the first 400): identical with `exp_softmax` and with the Cephes exponential it replaced (the only test in
/// this file that switches the process-wide exponential).
#[test]
fn plans_on_rt_sentences_do_not_change_with_the_exponential() {
    let teacher = minilm();
    // the f = 4 ApproxNet: 12 heads of 8 dims, as the demo's
    let approx = sttabt::approx::ApproxNet::new(teacher, 4, sttabt::approx::ApproxInit::Interpolate, 0).unwrap().model;
    assert_eq!((approx.config.num_heads, approx.config.head_size()), (12, 8));
    let inputs = rt_test_inputs();
    assert!(inputs.len() > 1000, "{} RT test sentences", inputs.len());
    set_softmax_exp(SoftmaxExp::Cephes);
    let before = all_plans(teacher, &approx, &inputs);
    set_softmax_exp(SoftmaxExp::Fast);
    let after = all_plans(teacher, &approx, &inputs);
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        let pruned = a.iter().filter(|p| p.retention() < 0.99).count();
        let differ: Vec<usize> = a.iter().zip(b).enumerate().filter(|(_, (x, y))| x != y).map(|(i, _)| i).collect();
        let _ = writeln!(std::io::stderr(), "{name}: {} sentences, {pruned} pruned, {} plans differ", a.len(), differ.len());
        assert!(pruned > a.len() / 2 && a.len() >= 400, "{name}: too few plans prune anything to test ({pruned} of {})", a.len());
        assert!(differ.is_empty(), "{name}: plans differ on sentences {differ:?}");
    }
}
