//! One training-loop driver for the native jobs that record per-step windows (concrete masking,
//! section 4, and LTP, section 6; issue 15 item 4): the epoch shuffle, the batch of each step,
//! the learning-rate schedule, AdamW, the checkpoints with the first and last windows of per-step
//! figures, exact resume and the progress bar with examples/s. The job supplies the step itself
//! (forward and backward into the gradients) and what the bar shows.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::kernels;
use crate::train::native::checkpoint::{self, Tensors};
use crate::train::native::AdamW;
use crate::train::resume::{epoch_order, Checkpointer};
use crate::train::{Progress, Rate, Schedule};

/// The fixed settings of one run of [`run_steps`].
#[derive(Debug, Clone)]
pub struct LoopSpec {
    /// Optimisation steps (>= 1).
    pub steps: usize,
    /// Examples per step (>= 1); the last batch of an epoch may be shorter.
    pub batch_size: usize,
    /// Seed of the epoch shuffle.
    pub seed: u64,
    /// The job's stream of the epoch shuffle ([`epoch_order`]).
    pub stream: u64,
    /// Steps between checkpoints (the last step always writes one).
    pub checkpoint_every: usize,
    /// The progress bar's label.
    pub label: String,
    /// What the resume line names, e.g. "native LTP training".
    pub what: &'static str,
}

/// The first and last `max(steps / 10, 1)` steps' figures of a run (the report's start and end
/// windows).
pub type Windows<P> = (Vec<P>, Vec<P>);

/// Run steps `0..spec.steps` (from the checkpoint's step with `resume`) of `model` over
/// `train_len` examples: each step draws its batch's example indices from the epoch shuffle,
/// calls `step(step, indices, model, grads, active)` (which fills `grads`, shaped as `model`,
/// may change `active`, the tensors AdamW updates, and returns the step's figures and the bar's
/// message), then runs AdamW at `schedule.lr(step)` and writes a checkpoint every
/// `spec.checkpoint_every` steps and at the last one (weights, AdamW moments, position and the
/// windows so far). Returns the windows.
///
/// Errors: those of `step`, and an unusable or mismatched checkpoint (`resume`) or one that
/// cannot be written.
#[allow(clippy::too_many_arguments)] // the run's parts, each named at the call
pub fn run_steps<M, P, F>(
    spec: &LoopSpec,
    train_len: usize,
    schedule: &Schedule,
    model: &mut M,
    grads: &mut M,
    optim: &mut AdamW,
    mut active: Vec<bool>,
    ckpt: &Checkpointer,
    resume: bool,
    progress: &Progress,
    mut step: F,
) -> anyhow::Result<Windows<P>>
where
    M: Tensors + Send,
    P: Copy + Serialize + DeserializeOwned,
    F: FnMut(usize, &[usize], &M, &mut M, &mut Vec<bool>) -> anyhow::Result<(P, String)>,
{
    let per_epoch = train_len.div_ceil(spec.batch_size).max(1);
    let mut step0 = 0;
    let (mut first, mut last): Windows<P> = (Vec::new(), Vec::new());
    if resume {
        if let Some(r) = checkpoint::load(ckpt, model, optim)? {
            step0 = r.step;
            (first, last) = serde_json::from_value(r.extra)?;
            progress.println(format!("resuming {} from step {step0}", spec.what));
        }
    }
    let bar = progress.bar(spec.steps as u64, &spec.label);
    bar.set_position(step0 as u64);
    let rate = Rate::start(step0);
    let window = (spec.steps / 10).max(1);
    let mut order: Vec<usize> = Vec::new();
    for s in step0..spec.steps {
        if s % per_epoch == 0 || s == step0 {
            order = epoch_order(train_len, spec.seed, spec.stream, s / per_epoch);
        }
        let b = s % per_epoch;
        let idx = &order[b * spec.batch_size..((b + 1) * spec.batch_size).min(order.len())];
        let (parts, message) = step(s, idx, model, grads, &mut active)?;
        if s < window {
            first.push(parts);
        }
        if s + window >= spec.steps {
            last.push(parts);
        }
        kernels::in_pool(|| optim.step_tensors(schedule.lr(s), model.named_mut(), grads.named_mut(), Some(&active)));
        let done = s + 1;
        bar.set_message(format!("{message} {}", rate.examples_per_s(done, spec.batch_size)));
        bar.inc(1);
        if done.is_multiple_of(spec.checkpoint_every.max(1)) || done == spec.steps {
            checkpoint::save(ckpt, model, optim, done, per_epoch, schedule, serde_json::to_value((&first, &last))?)?;
        }
    }
    bar.finish_and_clear();
    Ok((first, last))
}
