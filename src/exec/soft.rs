//! The soft-mask forward (ALGORITHM.md section 4.3): every row of every layer, with attention
//! renormalised by the concrete masks and rows scaled by `m^{l+1}` - the reference the concrete
//! training path is tested against.

use super::*;

/// One layer of [`Encoder::forward_soft`]: `p` `[H, T, T]`, `attention_output` `[T, d]`
/// (after the first LayerNorm), `y` `[T, d]` (after the last LayerNorm), `x` `[T, d]` (`y` with
/// rows scaled by m^{l+1}).
#[derive(Debug, Clone, PartialEq)]
pub struct SoftLayerTrace {
    pub p: Vec<f32>,
    pub attention_output: Vec<f32>,
    pub y: Vec<f32>,
    pub x: Vec<f32>,
}

impl Encoder {
    /// Soft-mask forward of one example (ALGORITHM.md section 4.3), for training parity and
    /// reference checks: every one of the `T` rows of `x0` (`[T, d]`, the embedding output) is
    /// computed; keys with `valid[j] = false` are excluded from the softmax; attention is
    /// renormalised over `masks[l-1]` (m^l, `[T]`), and layer l's output rows are scaled by
    /// `masks[l]` (m^{l+1}; `masks` has `L + 1` entries, the last one-hot CLS).
    /// Returns per layer `(P [H,T,T], attention output A [T,d], Y [T,d], X [T,d])`.
    pub fn forward_soft(&self, x0: &[f32], valid: &[bool], masks: &[Vec<f32>]) -> Result<Vec<SoftLayerTrace>, ModelError> {
        let d = self.config.hidden_size;
        let t = valid.len();
        if x0.len() != t * d || masks.len() != self.layers.len() + 1 || masks.iter().any(|m| m.len() != t) {
            return Err(ModelError::Input(format!("forward_soft: x0 must be [T={t}, d={d}] and masks [L+1={}][T]", self.layers.len() + 1)));
        }
        let h = self.config.num_heads;
        let real: Vec<usize> = (0..t).filter(|&j| valid[j]).collect();
        let nk = real.len();
        if nk == 0 {
            return Err(ModelError::Input("forward_soft: no real token (valid is all false); at least CLS must be valid".into()));
        }
        let mut x = x0.to_vec();
        let mut trace = Vec::with_capacity(self.layers.len());
        let segs = [Segment { rows: (0..t).collect(), offset: 0 }];
        let all_rows = vec![(0..t).collect::<Vec<usize>>()];
        let keys = vec![real.clone()];
        for (l, layer) in self.layers.iter().enumerate() {
            let kw = vec![real.iter().map(|&j| masks[l][j]).collect::<Vec<f32>>()];
            let out = self.layer_forward(layer, &x, &segs, &all_rows, Some(&keys), Some(&kw), true, None);
            // P over all T keys (padding columns 0).
            let mut p = vec![0.0f32; h * t * t];
            for head in 0..h {
                for i in 0..t {
                    for (kj, &j) in real.iter().enumerate() {
                        p[(head * t + i) * t + j] = out.probs[0][(head * t + i) * nk + kj];
                    }
                }
            }
            let mut xn = out.y.clone();
            for (i, row) in xn.chunks_exact_mut(d).enumerate() {
                let m = masks[l + 1][i];
                for v in row.iter_mut() {
                    *v *= m;
                }
            }
            trace.push(SoftLayerTrace { p, attention_output: out.a, y: out.y, x: xn.clone() });
            x = xn;
        }
        Ok(trace)
    }
}
