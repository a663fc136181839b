//! LTP (Learned Token Pruning, Kim et al. 2022) as a feed-forward planner (ALGORITHM.md section 6):
//! after layer l, a token survives if the mean attention it receives (over heads and the kept
//! queries of layer l) exceeds the learned threshold θ_l. CLS always survives; once pruned, a token
//! stays pruned. Training (soft sigmoid masks with a temperature, then hard) is in
//! [`crate::train::ltp`].

use serde::{Deserialize, Serialize};

use crate::encoder::LayerHook;

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

impl LayerHook for LtpPlanner {
    fn next_inputs(&self, _example: usize, layer: usize, _n: usize, inputs: &[usize], attention: &[f32], heads: usize) -> Vec<usize> {
        let th = self.theta.get(layer - 1).copied().unwrap_or(0.0);
        let score = received_attention(attention, heads, inputs.len());
        inputs.iter().zip(&score).filter(|(&t, &s)| t == 0 || s > th).map(|(&t, _)| t).collect()
    }
}
