//! Sparse classification: one function per inference mode, all ending in the same executor.
//!
//! - `dense`: the full plan of ALGORITHM.md section 1: every row of every layer (retention 1.0),
//!   what a dense runtime such as ONNX Runtime computes.
//! - `dense-cls`: every input, but only CLS (and DeiT's distillation token) computed at the top
//!   layer: the free cut any classifier can take; its own name, retention and FLOPs.
//! - `abt`: ApproxNet attention -> attention back-tracking (ALGORITHM.md section 3) -> plan.
//! - `abt-actual`: the same back-tracking on the teacher's own attention (upper bound; needs a
//!   dense teacher pass, so it saves nothing).
//! - `topk`: manual top-k feed-forward pruning (section 6).

use serde::{Deserialize, Serialize};

use crate::config::EncoderConfig;
use crate::encoder::{BertModel, EncodedInput, RunOptions};
use crate::error::ModelError;
use crate::plan::{Execution, TokenPlan};
use crate::planners::abt::AbtConfig;
use crate::planners::topk::ManualTopK;

/// An inference mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Mode {
    /// Every row of every layer (section 1).
    Dense,
    /// Every input; only `O_L` (CLS, and DeiT's distillation token) at the top layer.
    DenseCls,
    /// ABT on ApproxNet attention with keep fraction `k` (same for every layer), `p` = 0.1.
    Abt { k: f64 },
    /// ABT on the teacher's actual attention.
    AbtActual { k: f64 },
    /// ABT on ApproxNet attention with one keep fraction per layer, `k[l-1] = k_l` for
    /// l = 1..L (ALGORITHM.md section 3; one value means the same `k` everywhere), `p` = 0.1.
    AbtPerLayer { k: Vec<f64> },
    /// ABT on the teacher's actual attention with per-layer keep fractions (as `AbtPerLayer`).
    AbtActualPerLayer { k: Vec<f64> },
    /// Manual top-k with the final keep fraction `k_min`.
    TopK { k_min: f64 },
    /// Concrete masking (section 4): learned per-layer thresholds `theta` (trained with target
    /// σ(θ_0)); pass the concrete-trained teacher and ApproxNet to [`classify`].
    Concrete { theta0: f64, theta: Vec<f64> },
    /// LTP (section 6): learned thresholds on received attention, trained with L1 weight
    /// `lambda`; pass the LTP-fine-tuned teacher to [`classify`].
    Ltp { lambda: f64, theta: Vec<f64> },
}

impl Mode {
    /// Short label for tables, e.g. `abt k=0.30`.
    pub fn label(&self) -> String {
        match self {
            Mode::Dense => "dense".into(),
            Mode::DenseCls => "dense-cls".into(),
            Mode::Abt { k } => format!("abt k={k:.2}"),
            Mode::AbtActual { k } => format!("abt-actual k={k:.2}"),
            Mode::AbtPerLayer { k } => format!("abt k={}", keep_list(k)),
            Mode::AbtActualPerLayer { k } => format!("abt-actual k={}", keep_list(k)),
            Mode::TopK { k_min } => format!("topk k_min={k_min:.3}"),
            Mode::Concrete { theta0, .. } => format!("concrete θ0={theta0}"),
            Mode::Ltp { lambda, .. } => format!("ltp λ={lambda}"),
        }
    }
    /// Mode family name (`dense`, `dense-cls`, `abt`, `abt-actual`, `topk`, `concrete`, `ltp`).
    pub fn family(&self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::DenseCls => "dense-cls",
            Mode::Abt { .. } => "abt",
            Mode::AbtActual { .. } => "abt-actual",
            Mode::AbtPerLayer { .. } => "abt",
            Mode::AbtActualPerLayer { .. } => "abt-actual",
            Mode::TopK { .. } => "topk",
            Mode::Concrete { .. } => "concrete",
            Mode::Ltp { .. } => "ltp",
        }
    }
}

impl Mode {
    /// What this mode's section-5 FLOPs count besides the teacher's planned rows.
    pub fn cost(&self) -> Cost {
        match self {
            Mode::Dense | Mode::DenseCls => Cost::default(),
            Mode::Abt { .. } | Mode::AbtPerLayer { .. } | Mode::Concrete { .. } => Cost { approx_pass: true, ..Cost::default() },
            Mode::AbtActual { .. } | Mode::AbtActualPerLayer { .. } => Cost { dense_teacher_pass: true, ..Cost::default() },
            Mode::TopK { .. } | Mode::Ltp { .. } => Cost { execution: Execution::FeedForward, ..Cost::default() },
        }
    }
}

/// How to count a mode's FLOPs per example (ALGORITHM.md section 5): the teacher's executed
/// rows, plus the ApproxNet's dense pass for modes planned from it, plus a full dense teacher pass
/// for ABT on the teacher's actual attention (it needs one to get the attention it back-tracks).
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

/// `0.90,0.70,0.50` (labels of per-layer keep lists).
fn keep_list(k: &[f64]) -> String {
    k.iter().map(|k| format!("{k:.2}")).collect::<Vec<_>>().join(",")
}

/// The result for one example.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub logits: Vec<f32>,
    pub label: usize,
    pub probability: f32,
    /// Section-5 retention of the executed plan.
    pub retention: f64,
    pub plan: TokenPlan,
    /// Section-5 FLOPs of the example ([`Cost::flops`]): the teacher's executed rows, plus the
    /// ApproxNet's dense pass (ABT, concrete) or the teacher's dense pass (ABT on actual attention).
    pub flops: u64,
}

/// ABT plans from dense attention of `net` (the ApproxNet, or the teacher for abt-actual).
pub fn abt_plans(net: &BertModel, inputs: &[EncodedInput], cfg: &AbtConfig) -> Result<Vec<TokenPlan>, ModelError> {
    abt_plans_timed(net, inputs, cfg).map(|(p, _, _)| p)
}

/// [`abt_plans`] with its two stages timed: `(plans, seconds in the attention run, seconds
/// back-tracking)`. The attention run computes only what back-tracking reads: at the top layer
/// only the `cfg.top` query rows (other rows of a softmax are independent, so the plans are
/// identical to a full dense run's); attention is reduced over heads as it is produced
/// ([`BertModel::run_attention_reduced`]), so `[L, H, n, n]` is never stored.
pub fn abt_plans_timed(net: &BertModel, inputs: &[EncodedInput], cfg: &AbtConfig) -> Result<(Vec<TokenPlan>, f64, f64), ModelError> {
    let c = &net.config;
    let big_l = net.layers.len();
    let t0 = std::time::Instant::now();
    let top_ok =
        |n: usize| !cfg.top.is_empty() && cfg.top.iter().all(|&t| t < n) && cfg.top.windows(2).all(|w| w[0] < w[1]) && cfg.top[0] == 0;
    let plans: Vec<TokenPlan> = inputs
        .iter()
        .map(|x| {
            let n = x.len().max(1);
            if top_ok(n) {
                TokenPlan::from_inputs(n, vec![(0..n).collect(); big_l], cfg.top.clone()).unwrap_or_else(|_| TokenPlan::dense(n, big_l))
            } else {
                TokenPlan::dense(n, big_l)
            }
        })
        .collect();
    let reduced = net.run_attention_reduced(inputs, &plans, cfg.head_reduce == crate::planners::abt::Reduce::Max)?;
    let t1 = std::time::Instant::now();
    use rayon::prelude::*;
    let plans = reduced
        .par_iter()
        .zip(inputs)
        .enumerate()
        .map(|(e, (att, x))| {
            let n = x.len();
            crate::planners::abt::backtrack_reduced(att, c.num_layers, n, cfg)
                .map(|(p, _)| p)
                .map_err(|err| ModelError::Input(format!("back-tracking example {e}: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let t2 = std::time::Instant::now();
    Ok((plans, (t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64()))
}

/// Hard concrete-mask plans (section 4 step 4) from the ApproxNet's attention and thresholds
/// `theta` (one per layer). `Z` standardises the ApproxNet's pre-softmax scores `S` (section 4
/// step 1), computed from the queries and keys in the attention pass (not from the
/// probabilities: `ln P` of a key more than ~88 nats below its row's max underflows in f32).
///
/// Fast path: f32 scores (`kernels::attention_scores`) and vectorised `Φ` (the arithmetic of
/// [`standardized_cdf_scores_fast`](crate::planners::concrete::standardized_cdf_scores_fast),
/// `U` within ~2.5e-7 of the f64 reference on the same scores), computed inside the ApproxNet's
/// attention pass per block of 16 query rows ([`BertModel::run_attention_reduced_with`]):
/// `[L, H, n, n]` maps are never stored (the planning took 25% of a dense 26-token pass when
/// they were).
///
/// Errors: bad input; non-finite ApproxNet attention scores.
pub fn concrete_plans(approx: &BertModel, inputs: &[EncodedInput], theta: &[f64]) -> Result<Vec<TokenPlan>, ModelError> {
    use crate::planners::concrete::concrete_masks_top;
    use rayon::prelude::*;
    let c = &approx.config;
    let big_l = approx.layers.len();
    let top = approx.top_tokens();
    // At the top layer only the rows of O_L (mask 1 at the top) enter the scores: the others are
    // weighted by m^{L+1} = 0, so they are not computed (left as 0 in U, they add exactly 0) -
    // the same plans as from a dense attention run.
    let plans: Vec<TokenPlan> = inputs
        .iter()
        .map(|x| {
            let n = x.len().max(1);
            let o_top: Vec<usize> = (0..top.len().clamp(1, n)).collect();
            TokenPlan::from_inputs(n, vec![(0..n).collect(); big_l], o_top).unwrap_or_else(|_| TokenPlan::dense(n, big_l))
        })
        .collect();
    let u = approx.run_attention_reduced_with(inputs, &plans, crate::encoder::HeadReduce::ConcreteCdf { ddof: 0, eps: 1e-6 })?;
    u.par_iter()
        .zip(inputs)
        .enumerate()
        .map(|(e, (u, x))| {
            let n = x.len();
            let err = |m: String| ModelError::Input(format!("concrete masks for example {e}: {m}"));
            // O_L = the class (and DeiT distillation) token, as in training
            let r = concrete_masks_top(u, c.num_layers, n, n, theta, 0.1, 0.1, 1e-6, top.len()).map_err(|er| err(er.to_string()))?;
            Ok(r.plan)
        })
        .collect()
}

/// Classify a batch in `mode`. `approx` is required for `abt`.
pub fn classify(
    teacher: &BertModel,
    approx: Option<&BertModel>,
    inputs: &[EncodedInput],
    mode: &Mode,
) -> Result<Vec<Prediction>, ModelError> {
    let big_l = teacher.layers.len();
    let c = &teacher.config;
    let top = teacher.top_tokens();
    let abt_cfg = |k: f64| AbtConfig { top: top.clone(), ..AbtConfig::topk(k) };
    let (outs, plans) = match mode {
        Mode::Dense => {
            let plans: Vec<TokenPlan> = inputs.iter().map(|x| TokenPlan::dense(x.len().max(1), big_l)).collect();
            (teacher.run(inputs, &plans, RunOptions::default())?, plans)
        }
        Mode::DenseCls => {
            let plans: Vec<TokenPlan> = inputs.iter().map(|x| TokenPlan::dense_top(x.len().max(1), big_l, &top)).collect();
            (teacher.run(inputs, &plans, RunOptions::default())?, plans)
        }
        Mode::Abt { k } => {
            let a = approx
                .ok_or_else(|| ModelError::Input("mode abt needs an ApproxNet (--approx DIR; create one with `sttabt distill`)".into()))?;
            let plans = abt_plans(a, inputs, &abt_cfg(*k))?;
            (teacher.run(inputs, &plans, RunOptions::default())?, plans)
        }
        Mode::AbtActual { k } => {
            let plans = abt_plans(teacher, inputs, &abt_cfg(*k))?;
            (teacher.run(inputs, &plans, RunOptions::default())?, plans)
        }
        Mode::AbtPerLayer { k } => {
            let a = approx
                .ok_or_else(|| ModelError::Input("mode abt needs an ApproxNet (--approx DIR; create one with `sttabt distill`)".into()))?;
            let plans = abt_plans(a, inputs, &AbtConfig { top: top.clone(), ..AbtConfig::topk_per_layer(k.clone()) })?;
            (teacher.run(inputs, &plans, RunOptions::default())?, plans)
        }
        Mode::AbtActualPerLayer { k } => {
            let plans = abt_plans(teacher, inputs, &AbtConfig { top: top.clone(), ..AbtConfig::topk_per_layer(k.clone()) })?;
            (teacher.run(inputs, &plans, RunOptions::default())?, plans)
        }
        Mode::Concrete { theta, .. } => {
            let a = approx.ok_or_else(|| ModelError::Input("mode concrete needs its ApproxNet".into()))?;
            let plans = concrete_plans(a, inputs, theta)?;
            (teacher.run(inputs, &plans, RunOptions::default())?, plans)
        }
        Mode::Ltp { theta, .. } => {
            let hook = crate::planners::ltp::LtpPlanner { theta: theta.clone() };
            let (o, p) = teacher.run_feed_forward(inputs, &hook, &top, RunOptions::default())?;
            (o, p)
        }
        Mode::TopK { k_min } => {
            let hook = ManualTopK { k_min: *k_min, layers: big_l };
            let (o, p) = teacher.run_feed_forward(inputs, &hook, &top, RunOptions::default())?;
            (o, p)
        }
    };
    let cost = mode.cost();
    let approx_cfg = approx.map(|a| &a.config);
    outs.iter()
        .zip(plans)
        .map(|(o, plan)| {
            let logits = teacher.logits_of(o)?;
            let probs = softmax(&logits);
            let label = crate::train::finetune::argmax(&logits);
            let flops = cost.flops(c, approx_cfg, &plan);
            Ok(Prediction { probability: probs[label], logits, label, retention: plan.retention(), plan, flops })
        })
        .collect()
}

/// Softmax of a logit vector.
pub fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}
