//! LTP (Learned Token Pruning, Kim et al. 2022) as a feed-forward planner (ALGORITHM.md section 6):
//! after layer l, a token survives if the mean attention it receives (over heads and the kept
//! queries of layer l) exceeds the learned threshold θ_l. CLS always survives; once pruned, a token
//! stays pruned. Training (soft sigmoid masks with a temperature, then hard) is in
//! [`crate::train::ltp`].

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::exec::LayerHook;
use crate::model::EncodedInput;
use crate::plan::Execution;
use crate::planners::{Cost, Models, Planner, Schedule};

/// Learned per-layer thresholds (`theta[l-1]` decides which outputs of layer l feed layer l+1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LtpPlanner {
    pub theta: Vec<f64>,
}

/// Mean attention received by each key: `attention` `[H, m, m]` (queries = keys = the kept
/// tokens), averaged over heads and queries. Sums to 1 over keys.
pub fn received_attention(attention: &[f32], heads: usize, m: usize) -> Vec<f64> {
    let mut score = vec![0.0f64; m];
    for row in attention.chunks_exact(m).take(heads * m) {
        for (s, &p) in score.iter_mut().zip(row) {
            *s += p as f64;
        }
    }
    let norm = (heads * m).max(1) as f64;
    score.iter_mut().for_each(|s| *s /= norm);
    score
}

/// Check that `theta` holds one finite threshold per layer boundary, `L - 1` for `layers` = L
/// (the last layer only outputs CLS, so it has no threshold). Errors name the count found and
/// the count expected.
pub fn check_thresholds(theta: &[f64], layers: usize) -> Result<(), ModelError> {
    if layers < 2 || theta.len() + 1 != layers {
        return Err(ModelError::Input(format!(
            "LTP needs L - 1 = {} thresholds for a {layers}-layer model (one per layer boundary; the last layer only outputs CLS), found {}",
            layers.saturating_sub(1),
            theta.len()
        )));
    }
    if let Some((i, t)) = theta.iter().enumerate().find(|(_, t)| !t.is_finite()) {
        return Err(ModelError::Input(format!("LTP threshold {} (after layer {}) is {t}, expected a finite number", i, i + 1)));
    }
    Ok(())
}

impl LtpPlanner {
    /// A planner for a `layers`-layer model; `theta` must hold `layers - 1` finite thresholds.
    pub fn new(theta: Vec<f64>, layers: usize) -> Result<Self, ModelError> {
        check_thresholds(&theta, layers)?;
        Ok(Self { theta })
    }
}

impl LayerHook for LtpPlanner {
    fn check_layers(&self, layers: usize) -> Result<(), ModelError> {
        check_thresholds(&self.theta, layers)
    }

    fn next_inputs(&self, _example: usize, layer: usize, _n: usize, inputs: &[usize], attention: &[f32], heads: usize) -> Vec<usize> {
        // `check_layers` (run by `run_feed_forward` before any layer) guarantees a threshold here
        let Some(&th) = self.theta.get(layer - 1) else { return inputs.to_vec() };
        let score = received_attention(attention, heads, inputs.len());
        inputs.iter().zip(&score).filter(|(&t, &s)| t == 0 || s > th).map(|(&t, _)| t).collect()
    }
}

/// The LTP planner: the learned thresholds ([`LtpPlanner`], the executor's per-layer hook) and
/// the L1 weight `λ` they were trained with (for the label). Pass the LTP-fine-tuned teacher.
#[derive(Debug, Clone, PartialEq)]
pub struct Ltp {
    pub lambda: f64,
    pub thresholds: LtpPlanner,
}

impl Planner for Ltp {
    fn label(&self) -> String {
        format!("ltp λ={}", self.lambda)
    }
    fn family(&self) -> &'static str {
        "ltp"
    }
    fn cost(&self) -> Cost {
        Cost { execution: Execution::FeedForward, ..Cost::default() }
    }
    fn schedule<'a>(&'a self, _models: &Models<'a>, _inputs: &[EncodedInput]) -> Result<Schedule<'a>, ModelError> {
        Ok(Schedule::FeedForward(&self.thresholds))
    }
}
