//! Any planners against dense by the bench's method: the same inputs and batches, timed in
//! rounds whose order alternates (dense first, then dense last, ...), each row's figure the
//! median over rounds and its speed-up the median of the per-round ratios to dense.

use super::*;

/// One planner timed by [`versus_dense`], on its own models (a fine-tuned copy of the teacher,
/// its ApproxNet).
pub struct Contender<'a> {
    pub models: Models<'a>,
    pub planner: Box<dyn Planner>,
}

/// What [`versus_dense`] measured for one contender at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersusDense {
    /// Batch size.
    pub batch: usize,
    /// Examples timed per pass.
    pub examples: usize,
    /// Examples/s, median over rounds (a round's figure: the median of its passes).
    pub examples_per_s: f64,
    /// Every round's examples/s, in round order.
    pub examples_per_s_rounds: Vec<f64>,
    /// Dense's examples/s, median over the same rounds.
    pub dense_examples_per_s: f64,
    /// Median over rounds of (examples/s / dense's examples/s in the same round).
    pub vs_dense: f64,
    /// Smallest and largest per-round ratio.
    pub vs_dense_min: f64,
    pub vs_dense_max: f64,
}

impl VersusDense {
    /// Its speed-up over the rounds as the reliability check judges it (the per-round ratios to
    /// dense: median, smallest, largest), the row named `label`.
    pub fn round_spread(&self, label: String) -> RoundSpread {
        RoundSpread {
            label,
            rounds: self.examples_per_s_rounds.len(),
            median: self.vs_dense,
            min: self.vs_dense_min,
            max: self.vs_dense_max,
        }
    }
}

/// Time every contender and the dense full plan of `dense.teacher` (ALGORITHM.md section 1) on
/// `inputs` in batches of `batch`, end to end from token ids (ApproxNet and planning included),
/// over `rounds` rounds: even rounds time dense first and the contenders in order, odd rounds
/// the contenders in reverse order and dense last; each time is one warm-up batch and `repeats`
/// timed passes. Returns one result per contender, in order.
///
/// Errors: no inputs, `batch`, `rounds` or `repeats` is 0, or a contender fails (bad input, a
/// missing ApproxNet).
pub fn versus_dense(
    dense: Models,
    contenders: &[Contender],
    inputs: &[EncodedInput],
    batch: usize,
    rounds: usize,
    repeats: usize,
) -> anyhow::Result<Vec<VersusDense>> {
    anyhow::ensure!(!inputs.is_empty(), "no inputs to time");
    anyhow::ensure!(batch >= 1 && rounds >= 1 && repeats >= 1, "batch, rounds and repeats must be >= 1");
    let dense_run = |chunk: &[EncodedInput], st: &mut Stages| run_planned(&dense, &Dense, chunk, st);
    let mut dense_eps: Vec<f64> = Vec::with_capacity(rounds);
    let mut eps: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); contenders.len()];
    for round in 0..rounds {
        let mut order: Vec<Option<usize>> = std::iter::once(None).chain((0..contenders.len()).map(Some)).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for who in order {
            match who {
                None => dense_eps.push(measure_round_with(inputs, batch, repeats, 0.0, &dense_run)?.examples_per_s),
                Some(i) => {
                    let c = &contenders[i];
                    let run = |chunk: &[EncodedInput], st: &mut Stages| run_planned(&c.models, c.planner.as_ref(), chunk, st);
                    eps[i].push(measure_round_with(inputs, batch, repeats, 0.0, &run)?.examples_per_s);
                }
            }
        }
    }
    Ok(eps
        .into_iter()
        .map(|e| {
            let ratios: Vec<f64> = e.iter().zip(&dense_eps).filter(|(_, d)| **d > 0.0).map(|(a, d)| a / d).collect();
            let (vs_dense, vs_dense_min, vs_dense_max) = spread(&ratios);
            VersusDense {
                batch,
                examples: inputs.len(),
                examples_per_s: spread(&e).0,
                examples_per_s_rounds: e,
                dense_examples_per_s: spread(&dense_eps).0,
                vs_dense,
                vs_dense_min,
                vs_dense_max,
            }
        })
        .collect())
}
