//! `sttabt concrete`: concrete masking (ALGORITHM.md section 4) as a training job.
//!
//! The teacher encoder, the ApproxNet and one threshold θ_l per layer are trained jointly:
//! ApproxNet pre-softmax scores -> per-row standardisation over real keys (population std) -> Φ ->
//! head mean -> soft back-tracking from CLS -> per-layer sigmoid masks, nested by max -> the
//! soft-mask forward of the teacher (section 4.3). Loss (section 4.5):
//! `L_task + 1e-3 Σ_l (θ_l - θ_0)² + 1e-3 (σ(θ_0) - r)²` (+ optional logit distillation from the
//! frozen teacher). θ trains at 10x the learning rate (θ = 10 φ with φ the Adam parameter). In the
//! last `hard_frac` of the steps the masks are hard (m >= 0.5) with a straight-through gradient.

use std::path::{Path, PathBuf};

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{Module, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::approx::ApproxNet;
use crate::model::config::EncoderConfig;
use crate::model::{EncodedInput, Encoder};
use crate::train::finetune::{cross_entropy, data_fingerprint, scalar, LabeledInput};
use crate::train::model::{to_vec, Batch, TrainBert};
use crate::train::resume::{epoch_order, module_fingerprint, run_key, Checkpointer};
use crate::train::{save_hf_checkpoint, Progress, Schedule};

/// Temperature of the concrete masks.
pub const TAU: f64 = 0.1;
/// Back-tracking weight p.
pub const P: f64 = 0.1;
/// Clamp of s before the logit.
pub const CLAMP_EPS: f64 = 1e-6;
/// Standardisation epsilon.
pub const STD_EPS: f64 = 1e-6;

/// Hyper-parameters of concrete-mask training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConcreteConfig {
    /// θ_0: sets the retention target σ(θ_0) and the anchor of every θ_l.
    pub theta0: f64,
    /// Initial θ_l (default: θ_0).
    pub theta_init: Option<f64>,
    pub steps: usize,
    pub batch_size: usize,
    /// Learning rate of the encoders (θ gets 10x).
    pub lr: f64,
    pub weight_decay: f32,
    pub warmup_frac: f64,
    /// Fraction of the last steps trained with hard masks.
    pub hard_frac: f64,
    /// Weight of the retention term (1e-3 for text in the paper; vision used 100).
    pub retention_weight: f64,
    /// Weight of the θ anchor term.
    pub anchor_weight: f64,
    /// Weight of KL(frozen teacher logits || student logits); 0 = off.
    pub distill_weight: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
}

impl ConcreteConfig {
    /// Check the ranges: `steps`, `batch_size`, `checkpoint_every` >= 1; `lr` finite and > 0;
    /// `warmup_frac`, `hard_frac` in [0, 1]. [`train_concrete`] calls it before any work.
    pub fn validate(&self) -> Result<(), crate::train::InvalidConfig> {
        use crate::train::{check_count, check_fraction, check_positive};
        const C: &str = "ConcreteConfig";
        check_count(C, "steps", self.steps)?;
        check_count(C, "batch_size", self.batch_size)?;
        check_positive(C, "lr", self.lr)?;
        check_fraction(C, "warmup_frac", self.warmup_frac)?;
        check_fraction(C, "hard_frac", self.hard_frac)?;
        check_count(C, "checkpoint_every", self.checkpoint_every)
    }
}

impl Default for ConcreteConfig {
    fn default() -> Self {
        Self {
            theta0: 0.0,
            theta_init: None,
            steps: 200,
            batch_size: 16,
            lr: 2e-5,
            weight_decay: 0.05,
            warmup_frac: 0.05,
            hard_frac: 0.2,
            retention_weight: 1e-3,
            anchor_weight: 1e-3,
            distill_weight: 0.0,
            seed: 0,
            checkpoint_every: 50,
        }
    }
}

/// Teacher + ApproxNet + thresholds as one burn module.
#[derive(Module, Debug)]
pub struct ConcreteTrain {
    pub teacher: TrainBert,
    pub approx: TrainBert,
    /// θ / 10 (so that Adam moves θ at 10x the learning rate).
    pub phi: Param<Tensor<1>>,
}

impl ConcreteTrain {
    /// θ `[L]`.
    pub fn theta(&self) -> Tensor<1> {
        self.phi.val().mul_scalar(10.0)
    }
}

/// Soft masks of one batch (section 4 steps 1-2) from ApproxNet scores.
#[derive(Debug, Clone)]
pub struct MaskOutput {
    /// `L + 1` masks `[B, T]`: index l-1 = m^l, index L = one-hot(CLS).
    pub masks: Vec<Tensor<2>>,
    /// r = mean over layers and batch of Σ_j m^l_j / n (the loss's retention).
    pub r: Tensor<1>,
}

/// Compute the concrete masks from ApproxNet pre-softmax `scores` (`L` × `[B, H, T, T]`),
/// validity `[B, T]` and `theta` `[L]`. With `hard`, masks are rounded at 0.5 with a
/// straight-through gradient.
pub fn concrete_masks(scores: &[Tensor<4>], valid: &Tensor<2>, theta: Tensor<1>, hard: bool) -> MaskOutput {
    concrete_masks_top(scores, valid, theta, hard, 1)
}

/// [`concrete_masks`] with the top set `O_L = 0..num_special` (2 for DeiT: class and
/// distillation token, which are then kept at every layer by the nesting `m^l >= m^{l+1}`).
pub fn concrete_masks_top(scores: &[Tensor<4>], valid: &Tensor<2>, theta: Tensor<1>, hard: bool, num_special: usize) -> MaskOutput {
    let big_l = scores.len();
    let [b, _h, t, _] = scores[0].dims();
    let device = valid.device();
    let n = valid.clone().sum_dim(1); // [B,1]
    let km = valid.clone().reshape([b, 1, 1, t]);
    let n4 = n.clone().reshape([b, 1, 1, 1]);
    let mut cls = vec![0.0f32; b * t];
    for e in 0..b {
        for j in 0..num_special.clamp(1, t) {
            cls[e * t + j] = 1.0;
        }
    }
    let onehot: Tensor<2> = Tensor::from_data(TensorData::new(cls, [b, t]), &device);
    let mut m_next = onehot.clone();
    let mut c = onehot.clone();
    let mut masks = vec![onehot.clone(); big_l + 1];
    for l in (0..big_l).rev() {
        let s = scores[l].clone();
        let mean = (s.clone() * km.clone()).sum_dim(3) / n4.clone();
        let centered = s - mean;
        let var = (centered.clone().powi_scalar(2) * km.clone()).sum_dim(3) / n4.clone();
        let z = centered / var.sqrt().add_scalar(STD_EPS);
        let phi = z.div_scalar(std::f64::consts::SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5);
        let u = phi.mean_dim(1).reshape([b, t, t]) * valid.clone().reshape([b, 1, t]);
        let w = m_next.clone() * c.clone().mul_scalar(P).add_scalar(1.0 - P);
        let s_hat = w.reshape([b, 1, t]).matmul(u).reshape([b, t]) / m_next.clone().sum_dim(1);
        let s_max = (s_hat.clone() * valid.clone()).max_dim(1).clamp_min(1e-30);
        let s_l = (s_hat / s_max).mul_scalar(0.99).add_scalar(0.01) * valid.clone();
        c = s_l.clone();
        let sc = s_l.clamp(CLAMP_EPS, 1.0 - CLAMP_EPS);
        let logit = sc.clone().log() - sc.neg().add_scalar(1.0).log();
        let th = theta.clone().slice([l..l + 1]).reshape([1, 1]);
        let mask = activation::sigmoid((logit + th).div_scalar(TAU)) * valid.clone();
        let m_l = mask.max_pair(m_next.clone());
        masks[l] = m_l.clone();
        m_next = m_l;
    }
    // r from the soft masks (the paper's retention signal), over layers 1..L
    let mut r: Option<Tensor<1>> = None;
    for m in masks.iter().take(big_l) {
        let per = (m.clone() * valid.clone()).sum_dim(1) / n.clone(); // [B,1]
        let v = per.mean().reshape([1]);
        r = Some(match r {
            Some(x) => x + v,
            None => v,
        });
    }
    let r = r.map(|x| x.div_scalar(big_l as f64)).unwrap_or_else(|| Tensor::zeros([1], &device));
    if hard {
        for m in masks.iter_mut().take(big_l) {
            let h = m.clone().greater_equal_elem(0.5).float();
            *m = m.clone() + (h - m.clone()).detach();
        }
    }
    MaskOutput { masks, r }
}

/// Loss parts of one step.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ConcreteParts {
    pub task: f64,
    pub anchor: f64,
    pub retention_term: f64,
    pub distill: f64,
    /// r with soft masks.
    pub soft_retention: f64,
    /// Section-5 retention of the hard plans of this batch.
    pub hard_retention: f64,
}

impl ConcreteParts {
    /// The progress bar's message for this step (both trainers): task loss, soft and hard
    /// retention, the target σ(θ0), and `[hard]` in the hard-mask phase.
    pub fn progress_message(&self, theta0: f64, hard: bool) -> String {
        format!(
            "task {:.3} r {:.3} hard {:.3} target {:.3}{}",
            self.task,
            self.soft_retention,
            self.hard_retention,
            sigmoid(theta0),
            if hard { " [hard]" } else { "" }
        )
    }
}

/// The loss of one batch and its parts.
#[allow(clippy::too_many_arguments)]
pub fn concrete_loss(
    model: &ConcreteTrain,
    tcfg: &EncoderConfig,
    acfg: &EncoderConfig,
    batch: &Batch,
    labels: Tensor<1, Int>,
    cfg: &ConcreteConfig,
    hard: bool,
    frozen_logits: Option<Tensor<2>>,
) -> (Tensor<1>, ConcreteParts) {
    let a_out = model.approx.forward(acfg, batch, None);
    let theta = model.theta();
    let mo = concrete_masks_top(&a_out.scores, &batch.valid, theta.clone(), hard, tcfg.num_special_tokens());
    let t_out = model.teacher.forward(tcfg, batch, Some(&mo.masks));
    let logits = model.teacher.head_logits(tcfg, t_out.last()).expect("teacher has a classifier");
    let task = cross_entropy(logits.clone(), labels);
    let anchor = theta.sub_scalar(cfg.theta0).powi_scalar(2).sum().mul_scalar(cfg.anchor_weight);
    let target = 1.0 / (1.0 + (-cfg.theta0).exp());
    let ret = mo.r.clone().sub_scalar(target).powi_scalar(2).mean().mul_scalar(cfg.retention_weight);
    let mut loss = task.clone() + anchor.clone() + ret.clone();
    let mut distill = 0.0;
    if let (Some(fl), true) = (frozen_logits, cfg.distill_weight > 0.0) {
        let p = activation::softmax(fl, 1);
        let logq = activation::log_softmax(logits, 1);
        let kl = (p.clone() * (p.clamp_min(1e-30).log() - logq)).sum_dim(1).mean().mul_scalar(cfg.distill_weight);
        distill = scalar(&kl);
        loss = loss + kl;
    }
    let hard_ret = hard_retention(&mo.masks, &batch.lengths);
    (
        loss,
        ConcreteParts {
            task: scalar(&task),
            anchor: scalar(&anchor),
            retention_term: scalar(&ret),
            distill,
            soft_retention: scalar(&mo.r),
            hard_retention: hard_ret,
        },
    )
}

/// Mean section-5 retention of the hard plans given by masks (`m >= 0.5`); `masks` as in
/// [`MaskOutput`] (`L + 1` entries, the last one-hot CLS).
pub fn hard_retention(masks: &[Tensor<2>], lengths: &[usize]) -> f64 {
    crate::train::masked_plan_retention(&masks[..masks.len() - 1], lengths, 0, |v| v >= 0.5)
}

/// What concrete training did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConcreteReport {
    pub theta0: f64,
    pub target_retention: f64,
    pub theta: Vec<f64>,
    pub steps: usize,
    pub seconds: f64,
    /// Soft r and hard retention averaged over the first and the last 10% of the steps.
    pub start: ConcreteParts,
    pub end: ConcreteParts,
    pub output_dir: PathBuf,
}

/// A trained concrete-mask model: teacher, ApproxNet and θ (loaded for inference).
#[derive(Debug, Clone)]
pub struct ConcreteModel {
    pub teacher: Encoder,
    pub approx: ApproxNet,
    pub theta: Vec<f64>,
    pub theta0: f64,
}

impl ConcreteModel {
    /// Load `dir` (teacher/, approx/, concrete.json) written by [`train_concrete`].
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        super::check_run_dir(dir, "concrete.json")?;
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("concrete.json"))
                .map_err(|e| anyhow::anyhow!("{}: {e} (train one with `sttabt concrete`)", dir.join("concrete.json").display()))?,
        )?;
        let teacher = Encoder::load(&dir.join("teacher"))?;
        let approx = ApproxNet::load(&dir.join("approx"), &teacher.config)?;
        let theta: Vec<f64> = serde_json::from_value(meta["report"]["theta"].clone())?;
        anyhow::ensure!(
            theta.len() == teacher.layers.len(),
            "{}: {} thresholds for {} layers",
            dir.display(),
            theta.len(),
            teacher.layers.len()
        );
        Ok(Self { teacher, approx, theta, theta0: meta["report"]["theta0"].as_f64().unwrap_or(0.0) })
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Train concrete masks starting from a fine-tuned teacher and its ApproxNet; saves
/// `out_dir/{teacher,approx}` and `out_dir/concrete.json`. Checkpoints ([`crate::train::resume`])
/// go to `out_dir/checkpoint` every `cfg.checkpoint_every` steps and at the end; with `resume` the
/// run continues exactly from the last one (bit-identical to an uninterrupted run), and one of
/// another configuration, data set or starting model is an error naming the differing fields.
#[allow(clippy::too_many_arguments)]
pub fn train_concrete(
    teacher: &Encoder,
    approx: &ApproxNet,
    train: &[LabeledInput],
    cfg: &ConcreteConfig,
    out_dir: &Path,
    resume: bool,
    progress: &Progress,
) -> anyhow::Result<ConcreteReport> {
    cfg.validate()?;
    anyhow::ensure!(!train.is_empty(), "no training examples");
    anyhow::ensure!(cfg.batch_size > 0, "batch size must be at least 1");
    anyhow::ensure!(teacher.classifier.is_some(), "the teacher has no classification head");
    approx.check_teacher(&teacher.config)?;
    let start_t = std::time::Instant::now();
    let device = Device::flex().autodiff();
    let big_l = teacher.layers.len();
    let theta_init = vec![cfg.theta_init.unwrap_or(cfg.theta0); big_l];
    let tcfg = teacher.config.clone();
    let acfg = approx.model.config.clone();
    let phi: Vec<f32> = theta_init.iter().map(|t| (*t / 10.0) as f32).collect();
    let mut model = ConcreteTrain {
        teacher: TrainBert::from_native(teacher, &device),
        approx: TrainBert::from_native(&approx.model, &device),
        phi: Param::from_tensor(Tensor::from_data(TensorData::new(phi, [big_l]), &device)),
    };
    let frozen = (cfg.distill_weight > 0.0).then(|| teacher.clone());
    let schedule = Schedule::new(cfg.lr, cfg.steps, cfg.warmup_frac);
    let mut optim =
        AdamWConfig::new().with_weight_decay(cfg.weight_decay).with_grad_clipping(Some(GradientClippingConfig::Norm(1.0))).init();
    let hard_from = ((1.0 - cfg.hard_frac) * cfg.steps as f64).round() as usize;
    let per_epoch = train.len().div_ceil(cfg.batch_size).max(1);
    let ckpt = Checkpointer::new(
        out_dir.join("checkpoint"),
        "concrete",
        run_key(cfg, &["checkpoint_every"], &[("data", data_fingerprint(train)), ("start_weights", module_fingerprint(&model).into())]),
    );
    let mut step0 = 0;
    let (mut first, mut last): (Vec<ConcreteParts>, Vec<ConcreteParts>) = (Vec::new(), Vec::new());
    if resume {
        let restored;
        (model, optim, restored) = ckpt.load(model, optim)?;
        if let Some(r) = restored {
            step0 = r.step;
            (first, last) = serde_json::from_value(r.extra)?;
            progress.println(format!("resuming concrete training from step {step0}"));
        }
    }
    let bar = progress.bar(cfg.steps as u64, &format!("concrete θ0={}", cfg.theta0));
    bar.set_position(step0 as u64);
    let window = (cfg.steps / 10).max(1);
    let mut order: Vec<usize> = Vec::new();
    for step in step0..cfg.steps {
        if step % per_epoch == 0 || step == step0 {
            order = epoch_order(train.len(), cfg.seed, 2000, step / per_epoch);
        }
        let b = step % per_epoch;
        let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())];
        let inputs: Vec<&EncodedInput> = idx.iter().map(|&i| &train[i].input).collect();
        let labels: Vec<i64> = idx.iter().map(|&i| train[i].label as i64).collect();
        let batch = Batch::from_inputs(&inputs, &device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [idx.len()]), &device);
        let frozen_logits = match &frozen {
            Some(f) => {
                let owned: Vec<EncodedInput> = inputs.iter().map(|x| (*x).clone()).collect();
                let logits = crate::train::finetune::dense_logits(f, &owned)?;
                let nl = logits[0].len();
                Some(Tensor::from_data(TensorData::new(logits.into_iter().flatten().collect::<Vec<f32>>(), [idx.len(), nl]), &device))
            }
            None => None,
        };
        let hard = step >= hard_from;
        let (loss, parts) = concrete_loss(&model, &tcfg, &acfg, &batch, targets, cfg, hard, frozen_logits);
        let lv = scalar(&loss);
        anyhow::ensure!(lv.is_finite(), "concrete loss became {lv} at step {step}; lower --lr");
        if step < window {
            first.push(parts);
        }
        if step + window >= cfg.steps {
            last.push(parts);
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(schedule.lr(step), model, grads);
        bar.set_message(parts.progress_message(cfg.theta0, hard));
        bar.inc(1);
        if (step + 1) % cfg.checkpoint_every.max(1) == 0 || step + 1 == cfg.steps {
            ckpt.save(&model, &optim, step + 1, per_epoch, &schedule, serde_json::to_value((&first, &last))?)?;
        }
    }
    bar.finish_and_clear();
    let theta = theta_vec(&model);
    let (t, a) = (model.teacher.to_native(&tcfg)?, model.approx.to_native(&acfg)?);
    let a = ApproxNet { model: a, transfer: approx.transfer.clone(), meta: approx.meta.clone() };
    finish_concrete_run(out_dir, &t, &a, cfg, theta, start_t, (&first, &last), None)
}

/// Save a finished concrete run (either trainer): `out_dir/teacher` (HF layout), `out_dir/approx`
/// and `out_dir/concrete.json` (`{"report", "config"}`, plus `"trainer"` when given); the report
/// averages the first and last windows of step parts.
///
/// Errors: a file that cannot be written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_concrete_run(
    out_dir: &Path,
    teacher: &Encoder,
    approx: &ApproxNet,
    cfg: &ConcreteConfig,
    theta: Vec<f64>,
    start_t: std::time::Instant,
    (first, last): (&[ConcreteParts], &[ConcreteParts]),
    trainer: Option<&str>,
) -> anyhow::Result<ConcreteReport> {
    save_hf_checkpoint(teacher, &out_dir.join("teacher"), None)?;
    approx.save(&out_dir.join("approx"))?;
    let avg = |v: &[ConcreteParts]| {
        let n = v.len().max(1) as f64;
        ConcreteParts {
            task: v.iter().map(|p| p.task).sum::<f64>() / n,
            anchor: v.iter().map(|p| p.anchor).sum::<f64>() / n,
            retention_term: v.iter().map(|p| p.retention_term).sum::<f64>() / n,
            distill: v.iter().map(|p| p.distill).sum::<f64>() / n,
            soft_retention: v.iter().map(|p| p.soft_retention).sum::<f64>() / n,
            hard_retention: v.iter().map(|p| p.hard_retention).sum::<f64>() / n,
        }
    };
    let report = ConcreteReport {
        theta0: cfg.theta0,
        target_retention: sigmoid(cfg.theta0),
        theta,
        steps: cfg.steps,
        seconds: start_t.elapsed().as_secs_f64(),
        start: avg(first),
        end: avg(last),
        output_dir: out_dir.to_path_buf(),
    };
    let mut meta = serde_json::json!({"report": report, "config": cfg});
    if let Some(t) = trainer {
        meta["trainer"] = t.into();
    }
    crate::model::checkpoint::write_atomic(&out_dir.join("concrete.json"), serde_json::to_string_pretty(&meta)?.as_bytes())?;
    Ok(report)
}

fn theta_vec(model: &ConcreteTrain) -> Vec<f64> {
    to_vec(model.theta()).into_iter().map(|v| v as f64).collect()
}
