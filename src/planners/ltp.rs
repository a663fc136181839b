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

/// The token score LTP thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LtpScore {
    /// LTP's own score (Kim et al. 2022): the attention a token receives, averaged over heads
    /// and the `m` kept queries. It sums to 1 over the `m` kept tokens, so it shrinks as `1/m`:
    /// thresholds learned on short inputs prune almost every token of a long one. The default
    /// of runs saved before the choice existed.
    #[default]
    MeanReceived,
    /// The same score times `m` (the number of kept tokens): mean 1 over the tokens at every
    /// length, so a learned threshold means the same on short and long inputs (ALGORITHM.md
    /// section 8, length robustness).
    LengthScaled,
}

impl LtpScore {
    /// The factor applied to the mean received attention with `m` kept tokens.
    pub fn scale(&self, m: usize) -> f64 {
        match self {
            LtpScore::MeanReceived => 1.0,
            LtpScore::LengthScaled => m as f64,
        }
    }
    /// The default learning rate of the thresholds (2e-3 for scores ~1/n; 5e-2 for the
    /// length-scaled ones, whose thresholds are ~n times larger).
    pub fn default_theta_lr(&self) -> f64 {
        match self {
            LtpScore::MeanReceived => 2e-3,
            LtpScore::LengthScaled => 5e-2,
        }
    }
    /// The default soft-mask temperature for this score's scale (0.01 for scores ~1/n on
    /// ~26-token sentences; 0.25 for the length-scaled ones, ~26x larger).
    pub fn default_temperature(&self) -> f64 {
        match self {
            LtpScore::MeanReceived => 0.01,
            LtpScore::LengthScaled => 0.25,
        }
    }
}

/// Learned per-layer thresholds (`theta[l-1]` decides which outputs of layer l feed layer l+1)
/// on the score `score`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LtpPlanner {
    pub theta: Vec<f64>,
    #[serde(default)]
    pub score: LtpScore,
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
    ///
    /// Errors: [`ModelError::Input`] naming the count or the non-finite threshold.
    pub fn new(theta: Vec<f64>, score: LtpScore, layers: usize) -> Result<Self, ModelError> {
        check_thresholds(&theta, layers)?;
        Ok(Self { theta, score })
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
        let scale = self.score.scale(inputs.len());
        inputs.iter().zip(&score).filter(|(&t, &s)| t == 0 || s * scale > th).map(|(&t, _)| t).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform attention over `m` kept tokens, `heads` heads: every token receives `1/m`.
    fn uniform(heads: usize, m: usize) -> Vec<f32> {
        vec![1.0 / m as f32; heads * m * m]
    }

    fn kept(p: &LtpPlanner, m: usize) -> usize {
        let inputs: Vec<usize> = (0..m).collect();
        p.next_inputs(0, 1, m, &inputs, &uniform(2, m), 2).len()
    }

    #[test]
    fn length_scaled_thresholds_mean_the_same_at_every_length() {
        // a threshold learned on ~20-token sentences: between the uniform score there and 0
        let mean = LtpPlanner::new(vec![0.5 / 20.0; 2], LtpScore::MeanReceived, 3).unwrap();
        let scaled = LtpPlanner::new(vec![0.5; 2], LtpScore::LengthScaled, 3).unwrap();
        assert_eq!((kept(&mean, 20), kept(&scaled, 20)), (20, 20));
        // 500 tokens: the mean-received score (1/500) falls under the threshold, only CLS is left
        assert_eq!(kept(&mean, 500), 1);
        assert_eq!(kept(&scaled, 500), 500);
        assert_eq!(LtpScore::LengthScaled.scale(7), 7.0);
        assert_eq!(LtpScore::MeanReceived.scale(7), 1.0);
    }

    #[test]
    fn older_json_means_mean_received() {
        let p: LtpPlanner = serde_json::from_str(r#"{"theta":[0.1]}"#).unwrap();
        assert_eq!(p.score, LtpScore::MeanReceived);
        let q: LtpPlanner = serde_json::from_str(r#"{"theta":[0.1],"score":"length-scaled"}"#).unwrap();
        assert_eq!(q.score, LtpScore::LengthScaled);
    }
}
