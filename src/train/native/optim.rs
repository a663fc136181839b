//! AdamW exactly as the burn path runs it (`AdamWConfig::new().with_weight_decay(wd)
//! .with_grad_clipping(Some(Norm(clip)))`, burn 0.22): per tensor, the gradient is first clipped
//! to L2 norm `clip` (`g · min(1, clip / (‖g‖ + f32::MIN_POSITIVE))`, each tensor on its own, not
//! the global norm), then `m = β1 m + (1-β1) g`, `v = β2 v + (1-β2) g²`,
//! `Δ = (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + ε)` and `θ = θ (1 - lr·wd) - lr Δ`, with
//! β1 = 0.9, β2 = 0.999, ε = 1e-5 (burn's defaults). Weight decay applies to every tensor
//! (biases, LayerNorm and embeddings too), as on the burn path.

use crate::kernels;
use serde::{Deserialize, Serialize};

use crate::train::native::params::NativeBert;

/// AdamW hyper-parameters (burn's defaults for β1, β2, ε).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWSettings {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    /// Per-tensor gradient norm limit; `None` for no clipping.
    pub grad_clip: Option<f32>,
}

impl AdamWSettings {
    /// burn's `AdamWConfig` defaults with this weight decay and per-tensor norm clipping.
    pub fn burn_defaults(weight_decay: f32, grad_clip: Option<f32>) -> Self {
        Self { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-5, weight_decay, grad_clip }
    }
}

/// The moments of every tensor (in [`NativeBert::tensors`] order) and the step count.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub settings: AdamWSettings,
    /// Steps taken (burn's per-tensor `time`; every tensor steps every time here).
    pub time: i32,
    pub moment_1: Vec<Vec<f32>>,
    pub moment_2: Vec<Vec<f32>>,
}

impl AdamW {
    /// Fresh moments (zeros) for `model`'s tensors.
    pub fn new(settings: AdamWSettings, model: &NativeBert) -> Self {
        Self::for_lengths(settings, model.tensors().iter().map(|(_, x)| x.len()))
    }

    /// Fresh moments (zeros) for tensors of these lengths (in the order later steps give them).
    pub fn for_lengths(settings: AdamWSettings, lengths: impl Iterator<Item = usize>) -> Self {
        let shapes: Vec<usize> = lengths.collect();
        Self {
            settings,
            time: 0,
            moment_1: shapes.iter().map(|&n| vec![0.0; n]).collect(),
            moment_2: shapes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// One step at learning rate `lr` with gradients `grads` (same shapes as `model`; left
    /// unchanged: the clipping factor is applied inside the update), element blocks vectorised
    /// and in parallel on the caller's rayon pool ([`kernels::adamw_update`]).
    pub fn step(&mut self, lr: f64, model: &mut NativeBert, grads: &mut NativeBert) {
        self.step_tensors(lr, model.tensors_mut(), grads.tensors_mut(), None);
    }

    /// [`Self::step`] on parameter and gradient tensors given in the order of the moments
    /// ([`Self::for_lengths`]). With `active`, a tensor whose flag is false is left alone (no
    /// update, no weight decay, moments kept): burn's AdamW skips a parameter that got no
    /// gradient (one the loss does not reach), and so does this.
    pub fn step_tensors(&mut self, lr: f64, params: Vec<&mut [f32]>, grads: Vec<&mut [f32]>, active: Option<&[bool]>) {
        assert!(
            params.len() == self.moment_1.len() && grads.len() == self.moment_1.len(),
            "AdamW: {} parameters and {} gradients for {} moments",
            params.len(),
            grads.len(),
            self.moment_1.len()
        );
        let s = self.settings;
        self.time += 1;
        let t = self.time;
        let decay = lr * s.weight_decay as f64 != 0.0;
        let base = kernels::AdamWStep {
            beta_1: s.beta_1,
            beta_2: s.beta_2,
            epsilon: s.epsilon,
            bias_1: 1.0f32 - s.beta_1.powi(t),
            bias_2: 1.0f32 - s.beta_2.powi(t),
            lr: lr as f32,
            keep: decay.then_some((1.0 - lr * s.weight_decay as f64) as f32),
            grad_scale: 1.0,
        };
        for (i, (((p, g), m), v)) in params.into_iter().zip(grads).zip(&mut self.moment_1).zip(&mut self.moment_2).enumerate() {
            if active.is_some_and(|a| !a[i]) {
                continue;
            }
            let mut step = base;
            if let Some(clip) = s.grad_clip {
                let norm = kernels::sum_squares(g).sqrt() as f32;
                step.grad_scale = (clip / (norm + f32::MIN_POSITIVE)).min(1.0);
            }
            kernels::adamw_update(p, g, m, v, step);
        }
    }
}
