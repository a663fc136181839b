//! Honest counts per inference mode (ALGORITHM.md sections 1 and 5), on the real
//! all-MiniLM-L6-v2 with a classification head:
//! - `dense` runs every row of every layer: its retention, computed from its plan, is 1 and its
//!   FLOPs are the dense count; `dense-cls` (only CLS at the top) has its own, lower, retention and
//!   FLOPs and the same logits;
//! - `abt-actual` counts the dense teacher pass it needs on top of its sparse pass;
//! - feed-forward planners (manual top-k, LTP) count `o = |I_l|` at every layer;
//! - `abt` adds the ApproxNet's dense FLOPs.
//!
//! The expected numbers are written out here from the section-5 formulas, independently of
//! `plan::layer_flops`.

mod common;
use common::*;

use sttabt::approx::{ApproxInit, ApproxNet};
use sttabt::infer::{classify, Mode};
use sttabt::train::finetune::with_new_head;
use sttabt::{EncodedInput, TokenPlan};

/// Section 5, written out: Q 2od², K and V 4id², scores and A·V 2oid each, output 2od², FFN 4od·d_ff.
fn layer(o: u64, i: u64, d: u64, f: u64) -> u64 {
    2 * o * d * d + 4 * i * d * d + 4 * o * i * d + 2 * o * d * d + 4 * o * d * f
}

fn planned(plan: &TokenPlan, d: u64, f: u64) -> u64 {
    (0..plan.num_layers()).map(|l| layer(plan.outputs(l).len() as u64, plan.inputs(l).len() as u64, d, f)).sum()
}

fn feed_forward(plan: &TokenPlan, d: u64, f: u64) -> u64 {
    (0..plan.num_layers()).map(|l| layer(plan.inputs(l).len() as u64, plan.inputs(l).len() as u64, d, f)).sum()
}

fn inputs() -> Vec<EncodedInput> {
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&minilm_dir(), 128).unwrap();
    ["A gripping, funny and deeply humane film that never once talks down to its audience.", "The plot drags.", "ok"]
        .iter()
        .map(|t| tok.encode(t, None).unwrap().input)
        .collect()
}

#[test]
fn dense_is_every_row_and_dense_cls_is_its_own_mode() {
    let m = with_new_head(minilm().clone(), vec!["negative".into(), "positive".into()], 3);
    let (d, f, big_l) = (m.config.hidden_size as u64, m.config.intermediate_size as u64, m.layers.len());
    let xs = inputs();
    let dense = classify(&m, None, &xs, &Mode::Dense).unwrap();
    let cls = classify(&m, None, &xs, &Mode::DenseCls).unwrap();
    for ((p, c), x) in dense.iter().zip(&cls).zip(&xs) {
        let n = x.len();
        // the plan computes every row of every layer, the top layer included
        for l in 0..big_l {
            assert_eq!(p.plan.inputs(l).len(), n);
            assert_eq!(p.plan.outputs(l).len(), n, "dense computes every row of layer {}", l + 1);
        }
        // retention (section 5) from the plan's sets: (L n + n) / ((L + 1) n)
        let kept: usize = (0..big_l).map(|l| p.plan.inputs(l).len()).sum::<usize>() + p.plan.outputs(big_l - 1).len();
        assert_eq!(p.retention, kept as f64 / ((big_l + 1) * n) as f64);
        assert_eq!(p.flops, big_l as u64 * layer(n as u64, n as u64, d, f));
        // dense-cls: O_L = {CLS}; (L n + 1) / ((L + 1) n), strictly below dense for n > 1
        assert_eq!(c.plan.outputs(big_l - 1), &[0]);
        assert_eq!(c.retention, (big_l * n + 1) as f64 / ((big_l + 1) * n) as f64);
        assert!(n == 1 || c.retention < p.retention);
        assert_eq!(c.flops, planned(&c.plan, d, f));
        assert!(n == 1 || c.flops < p.flops);
        let diff = max_abs_diff(&p.logits, &c.logits);
        assert!(diff <= 1e-5, "dense-cls logits differ from dense by {diff}");
    }
}

#[test]
fn abt_actual_counts_the_dense_teacher_pass_and_feed_forward_planners_count_every_input_row() {
    let m = with_new_head(minilm().clone(), vec!["negative".into(), "positive".into()], 3);
    let (d, f, big_l) = (m.config.hidden_size as u64, m.config.intermediate_size as u64, m.layers.len() as u64);
    let xs = inputs();
    for p in classify(&m, None, &xs, &Mode::AbtActual { k: 0.3 }).unwrap() {
        let n = p.plan.n() as u64;
        assert!(p.plan.retention() < 0.9, "k = 0.3 prunes");
        assert_eq!(
            p.flops,
            planned(&p.plan, d, f) + big_l * layer(n, n, d, f),
            "abt-actual = its sparse pass + the dense pass it back-tracks"
        );
    }
    for p in classify(&m, None, &xs, &Mode::TopK { k_min: 0.3 }).unwrap() {
        assert_eq!(p.flops, feed_forward(&p.plan, d, f), "manual top-k counts o = |I_l|");
        if p.plan.n() > 2 {
            assert!(p.flops > planned(&p.plan, d, f), "o = |I_l| counts more than o = |O_l| once tokens are dropped");
        }
    }
    let theta = vec![0.05; m.layers.len() - 1];
    for p in classify(&m, None, &xs, &Mode::Ltp { lambda: 0.5, theta, score: Default::default() }).unwrap() {
        assert_eq!(p.flops, feed_forward(&p.plan, d, f), "LTP counts o = |I_l|");
    }
}

#[test]
fn abt_adds_the_approxnet_dense_pass() {
    let m = with_new_head(minilm().clone(), vec!["negative".into(), "positive".into()], 3);
    let (d, f) = (m.config.hidden_size as u64, m.config.intermediate_size as u64);
    let approx = ApproxNet::new(&m, 4, ApproxInit::Interpolate, 0).unwrap();
    let (ad, af, al) =
        (approx.model.config.hidden_size as u64, approx.model.config.intermediate_size as u64, approx.model.layers.len() as u64);
    assert_eq!(ad * 4, d);
    for p in classify(&m, Some(&approx.model), &inputs(), &Mode::Abt { k: 0.3 }).unwrap() {
        let n = p.plan.n() as u64;
        assert_eq!(p.flops, planned(&p.plan, d, f) + al * layer(n, n, ad, af));
    }
}
