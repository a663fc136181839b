//! Sparse classification: [`classify`] runs any [`Mode`] (the serialisable description of a
//! planner, [`Mode::planner`]) through [`crate::planners::run`] and the teacher's head.
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

use crate::error::ModelError;
use crate::exec::RunOptions;
use crate::model::{EncodedInput, Encoder};
use crate::plan::TokenPlan;
use crate::planners::abt::{Abt, AttentionSource, KeepSchedule};
use crate::planners::concrete::Concrete;
use crate::planners::dense::{Dense, DenseCls};
use crate::planners::ltp::{Ltp, LtpPlanner, LtpScore};
use crate::planners::topk::ManualTopK;
pub use crate::planners::Cost;
use crate::planners::{Models, Planner};

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
    /// ABT on ApproxNet attention with the per-layer keep schedule `k_l = k_min + (1 - k_min)
    /// ((L - l)/(L - 1))^gamma` (ALGORITHM.md section 8, [`KeepSchedule`]), `p` = 0.1.
    AbtSchedule {
        k_min: f64,
        #[serde(with = "crate::planners::abt::gamma_json")]
        gamma: f64,
    },
    /// ABT on the teacher's actual attention with a keep schedule (as `AbtSchedule`).
    AbtActualSchedule {
        k_min: f64,
        #[serde(with = "crate::planners::abt::gamma_json")]
        gamma: f64,
    },
    /// Manual top-k with the final keep fraction `k_min`.
    TopK { k_min: f64 },
    /// Concrete masking (section 4): learned per-layer thresholds `theta` (trained with target
    /// σ(θ_0)); pass the concrete-trained teacher and ApproxNet to [`classify`].
    Concrete { theta0: f64, theta: Vec<f64> },
    /// LTP (section 6): learned thresholds on received attention, trained with L1 weight
    /// `lambda`; pass the LTP-fine-tuned teacher to [`classify`].
    /// `score`: what the thresholds apply to (absent in older JSON: LTP's mean received attention).
    Ltp {
        lambda: f64,
        theta: Vec<f64>,
        #[serde(default)]
        score: LtpScore,
    },
}

impl Mode {
    /// The planner this mode describes, for a teacher of `layers` layers (manual top-k spreads
    /// its keep schedule over them).
    pub fn planner(&self, layers: usize) -> Box<dyn Planner> {
        let abt = |k: &[f64], source| Box::new(Abt::topk(k.to_vec(), source)) as Box<dyn Planner>;
        match self {
            Mode::Dense => Box::new(Dense),
            Mode::DenseCls => Box::new(DenseCls),
            Mode::Abt { k } => abt(&[*k], AttentionSource::ApproxNet),
            Mode::AbtActual { k } => abt(&[*k], AttentionSource::Teacher),
            Mode::AbtPerLayer { k } => abt(k, AttentionSource::ApproxNet),
            Mode::AbtActualPerLayer { k } => abt(k, AttentionSource::Teacher),
            Mode::AbtSchedule { k_min, gamma } => {
                Box::new(Abt::schedule(KeepSchedule { k_min: *k_min, gamma: *gamma }, AttentionSource::ApproxNet))
            }
            Mode::AbtActualSchedule { k_min, gamma } => {
                Box::new(Abt::schedule(KeepSchedule { k_min: *k_min, gamma: *gamma }, AttentionSource::Teacher))
            }
            Mode::TopK { k_min } => Box::new(ManualTopK { k_min: *k_min, layers }),
            Mode::Concrete { theta0, theta } => Box::new(Concrete { theta0: *theta0, theta: theta.clone() }),
            Mode::Ltp { lambda, theta, score } => {
                Box::new(Ltp { lambda: *lambda, thresholds: LtpPlanner { theta: theta.clone(), score: *score } })
            }
        }
    }
    /// Short label for tables, e.g. `abt k=0.30` ([`Planner::label`]).
    pub fn label(&self) -> String {
        self.planner(0).label()
    }
    /// Mode family name (`dense`, `dense-cls`, `abt`, `abt-actual`, `topk`, `concrete`, `ltp`).
    pub fn family(&self) -> &'static str {
        self.planner(0).family()
    }
    /// What this mode's section-5 FLOPs count besides the teacher's planned rows.
    pub fn cost(&self) -> Cost {
        self.planner(0).cost()
    }
    /// Whether this mode plans from an ApproxNet (ABT on ApproxNet attention, concrete): it
    /// needs one passed to [`classify`].
    pub fn needs_approx(&self) -> bool {
        self.cost().approx_pass
    }
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

/// Classify a batch in `mode`. `approx` is required for `abt`.
pub fn classify(teacher: &Encoder, approx: Option<&Encoder>, inputs: &[EncodedInput], mode: &Mode) -> Result<Vec<Prediction>, ModelError> {
    let c = &teacher.config;
    let planner = mode.planner(teacher.layers.len());
    let models = Models { teacher, approx };
    let run = crate::planners::run(planner.as_ref(), &models, inputs, RunOptions::default())?;
    let (outs, plans) = (run.outputs, run.plans);
    let cost = planner.cost();
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
