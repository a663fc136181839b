//! Token planners: every way of pruning tokens, behind one interface ([`Planner`]) and one
//! executor ([`run`] = [`Planner::schedule`] + [`execute`]).
//!
//! - [`dense`]: the full plan (section 1), dense with only `O_L` at the top, a fixed keep-first plan.
//! - [`abt`]: attention back-tracking, top-k and threshold forms, on ApproxNet or teacher
//!   attention (ALGORITHM.md section 3).
//! - [`concrete`]: concrete-masking scores and masks (ALGORITHM.md section 4 steps 1, 2, 4).
//! - [`topk`]: manual top-k feed-forward pruning (section 6 baseline).
//! - [`ltp`]: learned token pruning, feed-forward with learned thresholds (section 6).
//!
//! Two kinds share the interface: *ahead-of-time* planners (dense, ABT, concrete) compute every
//! example's [`TokenPlan`] before the teacher runs (from an ApproxNet pass, or the teacher's own
//! attention); *feed-forward* planners (manual top-k, LTP) answer the executor's per-layer
//! [`LayerHook`] while the teacher runs. A new planner is one file here implementing [`Planner`]
//! (plus its command-line option); `classify`, `eval`, `bench` and the CLI reach it through
//! [`run`].

use crate::error::ModelError;
use crate::exec::{ExampleOutput, LayerHook, RunOptions};
use crate::model::config::EncoderConfig;
use crate::model::{EncodedInput, Encoder};
use crate::plan::{Execution, TokenPlan};

pub mod abt;
pub mod concrete;
pub mod dense;
pub mod ltp;
pub mod topk;

/// The models a planner may read: the teacher that executes the plans and, for planners that
/// plan from an approximation network (ABT, concrete), that ApproxNet.
#[derive(Debug, Clone, Copy)]
pub struct Models<'a> {
    /// The encoder the executor runs (and whose classification head gives the prediction).
    pub teacher: &'a Encoder,
    /// The ApproxNet (ALGORITHM.md section 2), when the planner needs one.
    pub approx: Option<&'a Encoder>,
}

impl<'a> Models<'a> {
    /// The ApproxNet, or an input error naming `what` needs it and how to get one.
    pub fn approx_for(&self, what: &str) -> Result<&'a Encoder, ModelError> {
        self.approx.ok_or_else(|| ModelError::Input(format!("{what} needs an ApproxNet (--approx DIR; create one with `sttabt distill`)")))
    }
}

/// Seconds an ahead-of-time planner spent before the teacher ran: the ApproxNet (or teacher)
/// attention pass, and the planning on its output (back-tracking). `bench` reports them apart
/// from the executor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlanTiming {
    /// The attention pass (ApproxNet, or the teacher for ABT on actual attention), seconds.
    pub approx: f64,
    /// Planning on the reduced attention (back-tracking), seconds.
    pub planning: f64,
}

/// What [`Planner::schedule`] hands the executor.
pub enum Schedule<'a> {
    /// One plan per input, computed ahead of time; `timing` is `Some` for planners that ran an
    /// attention pass to get them (their planning time is not the executor's).
    Plans { plans: Vec<TokenPlan>, timing: Option<PlanTiming> },
    /// The executor asks this hook for each layer's inputs as it runs (`O_L` = the teacher's
    /// top tokens).
    FeedForward(&'a dyn LayerHook),
}

/// A token planner (ALGORITHM.md sections 1, 3, 4, 6): decides which tokens each layer of the
/// teacher computes.
pub trait Planner: Sync {
    /// Short label for tables, e.g. `abt k=0.30`.
    fn label(&self) -> String;
    /// Family name (`dense`, `dense-cls`, `abt`, `abt-actual`, `topk`, `concrete`, `ltp`, ...).
    fn family(&self) -> &'static str;
    /// What the planner's section-5 FLOPs count besides the teacher's planned rows.
    fn cost(&self) -> Cost;
    /// Ahead-of-time planners return one plan per input (from their ApproxNet or teacher pass);
    /// feed-forward planners return themselves as the executor's per-layer hook.
    ///
    /// Errors: bad input, or a model the planner needs is missing (e.g. no ApproxNet).
    fn schedule<'a>(&'a self, models: &Models<'a>, inputs: &[EncodedInput]) -> Result<Schedule<'a>, ModelError>;
}

/// The outcome of [`run`]: one executor output and one executed plan per input, and the
/// planning time of ahead-of-time planners that ran an attention pass.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub outputs: Vec<ExampleOutput>,
    /// The plans the teacher executed (for feed-forward planners, as the hook decided them).
    pub plans: Vec<TokenPlan>,
    pub timing: Option<PlanTiming>,
}

/// Run `schedule` (from [`Planner::schedule`]) on `models.teacher`: the one executor
/// ([`Encoder::run`] for plans, [`Encoder::run_feed_forward`] for a hook). Returns the outputs
/// and the executed plans.
///
/// Errors: bad input (see [`Encoder::run`]).
pub fn execute(
    models: &Models,
    inputs: &[EncodedInput],
    schedule: Schedule,
    opts: RunOptions,
) -> Result<(Vec<ExampleOutput>, Vec<TokenPlan>), ModelError> {
    let t = models.teacher;
    match schedule {
        Schedule::Plans { plans, .. } => Ok((t.run(inputs, &plans, opts)?, plans)),
        Schedule::FeedForward(hook) => t.run_feed_forward(inputs, hook, &t.top_tokens(), opts),
    }
}

/// Plan `inputs` with `planner` and run them through the one executor.
///
/// Errors: as [`Planner::schedule`] and [`execute`].
pub fn run(planner: &dyn Planner, models: &Models, inputs: &[EncodedInput], opts: RunOptions) -> Result<PlannedRun, ModelError> {
    let schedule = planner.schedule(models, inputs)?;
    let timing = match &schedule {
        Schedule::Plans { timing, .. } => *timing,
        Schedule::FeedForward(_) => None,
    };
    let (outputs, plans) = execute(models, inputs, schedule, opts)?;
    Ok(PlannedRun { outputs, plans, timing })
}

/// How to count a planner's FLOPs per example (ALGORITHM.md section 5): the teacher's executed
/// rows, plus the ApproxNet's dense pass for planners that plan from it, plus a full dense
/// teacher pass for ABT on the teacher's actual attention (it needs one to get the attention it
/// back-tracks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// How the teacher's pass executes the plan ([`Execution::FeedForward`]: `o = |I_l|`).
    pub execution: Execution,
    /// Add the ApproxNet's dense FLOPs at the example's length.
    pub approx_pass: bool,
    /// Add the teacher's dense FLOPs at the example's length.
    pub dense_teacher_pass: bool,
}

impl Default for Cost {
    fn default() -> Self {
        Self { execution: Execution::Planned, approx_pass: false, dense_teacher_pass: false }
    }
}

impl Cost {
    /// FLOPs of one example (1 multiply-add = 2 FLOPs) run with `plan` on a teacher of
    /// configuration `teacher`; `approx` is the ApproxNet's configuration (required when
    /// `approx_pass`; `None` there counts nothing for it). The one count `classify`, `eval` and
    /// `bench` share.
    pub fn flops(&self, teacher: &EncoderConfig, approx: Option<&EncoderConfig>, plan: &TokenPlan) -> u64 {
        let n = plan.n();
        let mut f = plan.executed_flops(teacher.hidden_size, teacher.intermediate_size, self.execution);
        if self.approx_pass {
            f += approx.map_or(0, |a| a.dense_flops(n));
        }
        if self.dense_teacher_pass {
            f += teacher.dense_flops(n);
        }
        f
    }
}
