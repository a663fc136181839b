//! The per-stage time of one training step ([`StageSeconds`]), as every trainer's `bench_steps`
//! measures it for the training bench ([`super::bench`]).

use serde::{Deserialize, Serialize};

/// Mean seconds per step spent in each stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageSeconds {
    /// Padding the batch into tensors; for distillation also the frozen teacher's signals
    /// (native executor), which are also given alone in `teacher`.
    pub data: f64,
    /// The trained modules' forward pass and the loss (read back as a number).
    pub forward: f64,
    /// Back-propagation, including collecting the gradients per parameter.
    pub backward: f64,
    /// The AdamW step (per-tensor gradient clipping, moments, weight decay, update).
    pub optimizer: f64,
    /// Part of `data`: the frozen teacher's forward pass (distillation only, else 0). The
    /// distillation loss runs the teacher inside; its time is measured by a separate run of the
    /// teacher on the same batch after each step and moved from `forward` to `data`.
    pub teacher: f64,
}
