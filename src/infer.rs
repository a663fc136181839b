//! Sparse classification: one function per inference mode, all ending in the same executor.
//!
//! - `dense`: the full plan (retention 1.0; only CLS is computed at the top layer).
//! - `abt`: ApproxNet attention -> attention back-tracking (ALGORITHM.md section 3) -> plan.
//! - `abt-actual`: the same back-tracking on the teacher's own attention (upper bound; needs a
//!   dense teacher pass, so it saves nothing).
//! - `topk`: manual top-k feed-forward pruning (section 6).

use serde::{Deserialize, Serialize};

use crate::encoder::{BertModel, EncodedInput, RunOptions};
use crate::error::ModelError;
use crate::plan::TokenPlan;
use crate::planners::abt::AbtConfig;
use crate::planners::topk::ManualTopK;

/// An inference mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Mode {
    Dense,
    /// ABT on ApproxNet attention with keep fraction `k` (same for every layer), `p` = 0.1.
    Abt { k: f64 },
    /// ABT on the teacher's actual attention.
    AbtActual { k: f64 },
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
            Mode::Abt { k } => format!("abt k={k:.2}"),
            Mode::AbtActual { k } => format!("abt-actual k={k:.2}"),
            Mode::TopK { k_min } => format!("topk k_min={k_min:.3}"),
            Mode::Concrete { theta0, .. } => format!("concrete θ0={theta0}"),
            Mode::Ltp { lambda, .. } => format!("ltp λ={lambda}"),
        }
    }
    /// Mode family name (`dense`, `abt`, `abt-actual`, `topk`).
    pub fn family(&self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::Abt { .. } => "abt",
            Mode::AbtActual { .. } => "abt-actual",
            Mode::TopK { .. } => "topk",
            Mode::Concrete { .. } => "concrete",
            Mode::Ltp { .. } => "ltp",
        }
    }
}

/// The result for one example.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub logits: Vec<f32>,
    pub label: usize,
    pub probability: f32,
    /// Section-5 retention of the executed plan (dense: 1.0).
    pub retention: f64,
    pub plan: TokenPlan,
    /// Teacher sparse FLOPs + ApproxNet dense FLOPs (section 5).
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
    let top_ok = |n: usize| !cfg.top.is_empty() && cfg.top.iter().all(|&t| t < n) && cfg.top.windows(2).all(|w| w[0] < w[1]) && cfg.top[0] == 0;
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
pub fn classify(teacher: &BertModel, approx: Option<&BertModel>, inputs: &[EncodedInput], mode: &Mode) -> Result<Vec<Prediction>, ModelError> {
    let big_l = teacher.layers.len();
    let c = &teacher.config;
    let top = teacher.top_tokens();
    let abt_cfg = |k: f64| AbtConfig { top: top.clone(), ..AbtConfig::topk(k) };
    let (outs, plans, dense) = match mode {
        Mode::Dense => {
            let plans: Vec<TokenPlan> = inputs.iter().map(|x| TokenPlan::dense_top(x.len().max(1), big_l, &top)).collect();
            (teacher.run(inputs, &plans, RunOptions::default())?, plans, true)
        }
        Mode::Abt { k } => {
            let a = approx.ok_or_else(|| ModelError::Input("mode abt needs an ApproxNet (--approx DIR; create one with `sttabt distill`)".into()))?;
            let plans = abt_plans(a, inputs, &abt_cfg(*k))?;
            (teacher.run(inputs, &plans, RunOptions::default())?, plans, false)
        }
        Mode::AbtActual { k } => {
            let plans = abt_plans(teacher, inputs, &abt_cfg(*k))?;
            (teacher.run(inputs, &plans, RunOptions::default())?, plans, false)
        }
        Mode::Concrete { theta, .. } => {
            let a = approx.ok_or_else(|| ModelError::Input("mode concrete needs its ApproxNet".into()))?;
            let plans = concrete_plans(a, inputs, theta)?;
            (teacher.run(inputs, &plans, RunOptions::default())?, plans, false)
        }
        Mode::Ltp { theta, .. } => {
            let hook = crate::planners::ltp::LtpPlanner { theta: theta.clone() };
            let (o, p) = teacher.run_feed_forward(inputs, &hook, &top, RunOptions::default())?;
            (o, p, false)
        }
        Mode::TopK { k_min } => {
            let hook = ManualTopK { k_min: *k_min, layers: big_l };
            let (o, p) = teacher.run_feed_forward(inputs, &hook, &top, RunOptions::default())?;
            (o, p, false)
        }
    };
    let approx_flops = |n: usize| match (mode, approx) {
        (Mode::Abt { .. } | Mode::Concrete { .. }, Some(a)) => a.config.dense_flops(n),
        _ => 0,
    };
    outs.iter()
        .zip(plans)
        .map(|(o, plan)| {
            let logits = teacher.logits_of(o)?;
            let probs = softmax(&logits);
            let label = crate::train::finetune::argmax(&logits);
            let n = plan.n();
            let (retention, flops) = if dense {
                (1.0, c.dense_flops(n))
            } else {
                let f = match mode {
                    // feed-forward planners compute the full layer for every input row
                    Mode::TopK { .. } | Mode::Ltp { .. } => plan.input_sets().iter().map(|i| crate::plan::layer_flops(i.len(), i.len(), c.hidden_size, c.intermediate_size).total).sum(),
                    _ => plan.flops(c.hidden_size, c.intermediate_size).total,
                };
                (plan.retention(), f + approx_flops(n))
            };
            Ok(Prediction { probability: probs[label], logits, label, retention, plan, flops })
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
