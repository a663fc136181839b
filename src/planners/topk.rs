//! Manual top-k (feed-forward) pruning, PoWER-BERT style (ALGORITHM.md section 6): after layer l,
//! keep the tokens with the largest mean attention received from the kept queries (mean over
//! heads and queries of layer l's real attention); the keep fraction falls linearly from 1.0 at
//! layer 1 to `k_min` at layer L. CLS is always kept. `k_min` can be solved for a target retention.

use crate::error::ModelError;
use crate::exec::LayerHook;
use crate::model::EncodedInput;
use crate::plan::Execution;
use crate::planners::abt::keep_count;
use crate::planners::{Cost, Models, Planner, Schedule};

/// Keep fraction of layer `l` (1-based) for `L` layers: 1.0 at l = 1 falling linearly to `k_min` at l = L.
pub fn keep_fraction(l: usize, layers: usize, k_min: f64) -> f64 {
    if layers <= 1 {
        return 1.0;
    }
    1.0 + (k_min - 1.0) * (l - 1) as f64 / (layers - 1) as f64
}

/// |I_l| for every layer under the schedule, for `n` real tokens (nested: never grows).
pub fn schedule_sizes(n: usize, layers: usize, k_min: f64) -> Vec<usize> {
    let mut prev = n;
    (1..=layers)
        .map(|l| {
            let c = keep_count(keep_fraction(l, layers, k_min), n).min(prev);
            prev = c;
            c
        })
        .collect()
}

/// Section-5 retention of the schedule for `n` tokens (O_L = {CLS}).
pub fn schedule_retention(n: usize, layers: usize, k_min: f64) -> f64 {
    let s: usize = schedule_sizes(n, layers, k_min).iter().sum();
    (s + 1) as f64 / ((layers + 1) * n) as f64
}

/// A retention target below the smallest the manual top-k schedule reaches on some lengths.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("manual top-k cannot reach retention {target:.3}: target unreachable, its schedule keeps at least {min:.3} on these lengths (k_min = 0 still keeps every token in layer 1 and one token in layer L)")]
pub struct UnreachableRetention {
    /// The retention asked for.
    pub target: f64,
    /// The schedule's smallest mean retention (`k_min` = 0).
    pub min: f64,
}

/// Mean section-5 retention of the schedule with `k_min` over `lengths`.
pub fn mean_schedule_retention(lengths: &[usize], layers: usize, k_min: f64) -> f64 {
    lengths.iter().map(|&n| schedule_retention(n, layers, k_min)).sum::<f64>() / lengths.len().max(1) as f64
}

/// Solve `k_min` in [0, 1] so the mean retention over `lengths` is as close as possible to
/// `target` without exceeding it (bisection; retention is monotone in `k_min`).
///
/// Errors: [`UnreachableRetention`] when even `k_min` = 0 keeps more than `target` (the schedule
/// cannot go that low: a point there would not be at the asked retention).
pub fn calibrate_k_min(lengths: &[usize], layers: usize, target: f64) -> Result<f64, UnreachableRetention> {
    let mean = |k: f64| mean_schedule_retention(lengths, layers, k);
    let min = mean(0.0);
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // also rejects a NaN target
    if !(target >= min) {
        return Err(UnreachableRetention { target, min });
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if mean(mid) > target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(lo)
}

/// The feed-forward planner: a [`LayerHook`] for [`crate::Encoder::run_feed_forward`].
#[derive(Debug, Clone)]
pub struct ManualTopK {
    pub k_min: f64,
    pub layers: usize,
}

impl LayerHook for ManualTopK {
    fn next_inputs(&self, _example: usize, layer: usize, n: usize, inputs: &[usize], attention: &[f32], heads: usize) -> Vec<usize> {
        let m = inputs.len();
        let want = keep_count(keep_fraction(layer + 1, self.layers, self.k_min), n).min(m);
        // mean attention each kept token receives (over heads and kept queries)
        let mut score = vec![0.0f64; m];
        for h in 0..heads {
            for q in 0..m {
                let row = &attention[(h * m + q) * m..(h * m + q + 1) * m];
                for (s, &p) in score.iter_mut().zip(row) {
                    *s += p as f64;
                }
            }
        }
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
        let mut keep: Vec<usize> = order[..want].iter().map(|&p| inputs[p]).collect();
        if !keep.contains(&0) {
            keep.push(0);
        }
        keep.sort_unstable();
        keep
    }
}

impl Planner for ManualTopK {
    fn label(&self) -> String {
        format!("topk k_min={:.3}", self.k_min)
    }
    fn family(&self) -> &'static str {
        "topk"
    }
    fn cost(&self) -> Cost {
        Cost { execution: Execution::FeedForward, ..Cost::default() }
    }
    fn schedule<'a>(&'a self, _models: &Models<'a>, _inputs: &[EncodedInput]) -> Result<Schedule<'a>, ModelError> {
        Ok(Schedule::FeedForward(self))
    }
}
