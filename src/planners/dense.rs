//! Planners without pruning decisions (ALGORITHM.md sections 1 and 5): the full plan, the full
//! plan with only `O_L` at the top layer, and a fixed keep-first plan (a bench baseline).

use super::{Cost, Models, Planner, Schedule};
use crate::error::ModelError;
use crate::model::EncodedInput;
use crate::plan::TokenPlan;

/// `dense`: every row of every layer (retention 1.0), what a dense runtime computes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dense;

impl Planner for Dense {
    fn label(&self) -> String {
        "dense".into()
    }
    fn family(&self) -> &'static str {
        "dense"
    }
    fn cost(&self) -> Cost {
        Cost::default()
    }
    fn schedule<'a>(&'a self, models: &Models<'a>, inputs: &[EncodedInput]) -> Result<Schedule<'a>, ModelError> {
        let big_l = models.teacher.layers.len();
        let plans = inputs.iter().map(|x| TokenPlan::dense(x.len().max(1), big_l)).collect();
        Ok(Schedule::Plans { plans, timing: None })
    }
}

/// `dense-cls`: every input, but only `O_L` (CLS, and DeiT's distillation token) computed at the
/// top layer: the free cut any classifier can take.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenseCls;

impl Planner for DenseCls {
    fn label(&self) -> String {
        "dense-cls".into()
    }
    fn family(&self) -> &'static str {
        "dense-cls"
    }
    fn cost(&self) -> Cost {
        Cost::default()
    }
    fn schedule<'a>(&'a self, models: &Models<'a>, inputs: &[EncodedInput]) -> Result<Schedule<'a>, ModelError> {
        let t = models.teacher;
        let (big_l, top) = (t.layers.len(), t.top_tokens());
        let plans = inputs.iter().map(|x| TokenPlan::dense_top(x.len().max(1), big_l, &top)).collect();
        Ok(Schedule::Plans { plans, timing: None })
    }
}

/// Fixed plan: the first `ceil(keep n)` tokens at every layer, only CLS at the top (`n >= 1`).
///
/// Panics if `n` is 0.
pub fn keep_first_plan(n: usize, layers: usize, keep: f64) -> TokenPlan {
    let c = super::abt::keep_count(keep, n);
    TokenPlan::from_inputs(n, vec![(0..c).collect(); layers], vec![0]).expect("valid plan")
}

/// `fixed`: [`keep_first_plan`] with keep fraction `keep` (0..1) for every input: a baseline that
/// prunes as much as ABT without looking at the input.
#[derive(Debug, Clone, Copy)]
pub struct KeepFirst {
    pub keep: f64,
}

impl Planner for KeepFirst {
    fn label(&self) -> String {
        format!("fixed keep={:.2}", self.keep)
    }
    fn family(&self) -> &'static str {
        "fixed"
    }
    fn cost(&self) -> Cost {
        Cost::default()
    }
    fn schedule<'a>(&'a self, models: &Models<'a>, inputs: &[EncodedInput]) -> Result<Schedule<'a>, ModelError> {
        let big_l = models.teacher.layers.len();
        let plans = inputs.iter().map(|x| keep_first_plan(x.len(), big_l, self.keep)).collect();
        Ok(Schedule::Plans { plans, timing: None })
    }
}
