//! Plan-aware fine-tuning (ABT-FT, ALGORITHM.md section 8) on the native trainer: the teacher is
//! fine-tuned while it runs under its own hard ABT plans, so it learns to work on pruned inputs.
//!
//! Per batch: ABT plans from the (frozen) ApproxNet at keep `k` (section 3; no gradient through
//! the planner; `k` fixed or drawn uniformly per batch from a range); the teacher runs with those
//! plans as 0/1 token masks (section 4.3, which equals the gathered execution of section 1); the
//! loss is `CE + α · KL(softmax(z_dense/T) || softmax(z_pruned/T))`, `z_dense` the logits of the
//! frozen dense teacher (the starting model, on the inference executor, without gradient).
//! Each epoch evaluates dev accuracy under ABT at `keep` (which picks the best epoch) and dense;
//! checkpoints and exact resume as [`finetune_native`](super::finetune_native). The dense
//! logits are computed once per training example and kept ([`DenseLogitsCache`], exact); the
//! plans are recomputed every step (see [`train_plans`]).

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::approx::ApproxNet;
use crate::data::split::SplitMix64;
use crate::error::ModelError;
use crate::model::{EncodedInput, Encoder};
use crate::plan::TokenPlan;
use crate::planners::abt::{abt_plans, AbtConfig};
use crate::train::finetune::{accuracy_counted, argmax, data_fingerprint, FinetuneConfig, LabeledInput};
use crate::train::native::backward::{backward_full, backward_with, ExtraGrads, HeadGrad};
use crate::train::native::finetune::native_bert_fingerprint;
use crate::train::native::forward::forward_cls_last;
use crate::train::native::masks::TokenMasks;
use crate::train::native::teacher_cache::{dense_logits_each, DenseLogitsCache};
use crate::train::native::{batch_of, checkpoint, AdamW, AdamWSettings, NativeBert};
use crate::train::resume::{epoch_order, run_key, Checkpointer, Fingerprint};
use crate::train::{save_hf_checkpoint, InvalidConfig, Progress, Rate, Schedule};

/// The checkpoint job name of plan-aware fine-tuning.
pub const JOB: &str = "plan-ft-native";

/// Hyper-parameters of plan-aware fine-tuning: fine-tuning's, plus the plans and the distillation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanFtConfig {
    #[serde(flatten)]
    pub finetune: FinetuneConfig,
    /// ABT keep fraction `k` in (0, 1]: the training plans' (unless `keep_range`) and the dev
    /// evaluation's.
    pub keep: f64,
    /// Draw each batch's `k` uniformly from `[a, b]` (both in (0, 1], `a <= b`; seeded by the
    /// step, so a resumed run draws the same).
    pub keep_range: Option<(f64, f64)>,
    /// Weight `α >= 0` of the logit distillation term.
    pub kd_alpha: f64,
    /// Temperature `T > 0` of the distillation softmaxes.
    pub kd_temperature: f64,
    /// Weight `β >= 0` of the hidden-state distillation term ([`hidden_distill_loss`]; beyond
    /// the paper, which distils logits only): the pruned teacher's layer outputs on the rows it
    /// keeps are pulled toward the frozen dense teacher's. 0 (the default, not written to
    /// configs): off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hidden_weight: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl PlanFtConfig {
    /// Fine-tuning's checks ([`FinetuneConfig::validate`]), `keep` and the range in (0, 1] with
    /// `a <= b`, `kd_alpha` finite and >= 0, `kd_temperature` finite and > 0.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        const C: &str = "PlanFtConfig";
        self.finetune.validate()?;
        let keep_ok = |k: f64| k > 0.0 && k <= 1.0;
        if !keep_ok(self.keep) {
            return Err(InvalidConfig { config: C, field: "keep", expected: "in (0, 1]", found: self.keep.to_string() });
        }
        if let Some((a, b)) = self.keep_range {
            if !(keep_ok(a) && keep_ok(b) && a <= b) {
                return Err(InvalidConfig {
                    config: C,
                    field: "keep_range",
                    expected: "a,b with 0 < a <= b <= 1",
                    found: format!("{a},{b}"),
                });
            }
        }
        if !(self.kd_alpha.is_finite() && self.kd_alpha >= 0.0) {
            return Err(InvalidConfig { config: C, field: "kd_alpha", expected: "a finite number >= 0", found: self.kd_alpha.to_string() });
        }
        if !(self.hidden_weight.is_finite() && self.hidden_weight >= 0.0) {
            return Err(InvalidConfig {
                config: C,
                field: "hidden_weight",
                expected: "a finite number >= 0",
                found: self.hidden_weight.to_string(),
            });
        }
        crate::train::check_positive(C, "kd_temperature", self.kd_temperature)
    }

    /// The keep fraction of step `step`: `keep`, or a uniform draw from `keep_range` seeded by
    /// the run's seed and the step.
    pub fn keep_at(&self, step: usize) -> f64 {
        match self.keep_range {
            None => self.keep,
            Some((a, b)) => {
                let mut rng = SplitMix64::new(self.finetune.seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                a + (b - a) * rng.next_f64()
            }
        }
    }
}

/// Loss terms of one plan-aware step (means over the batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanFtLoss {
    /// `ce + α · kl`.
    pub loss: f64,
    pub ce: f64,
    /// `KL(softmax(z_dense/T) || softmax(z_pruned/T))`.
    pub kl: f64,
    /// Mean token retention of the batch's plans (section 5).
    pub retention: f64,
    /// The hidden-state distillation term ([`hidden_distill_loss`]; 0 when off), already in
    /// `loss` times `β`.
    #[serde(default)]
    pub hidden: f64,
}

/// Hidden-state distillation on kept rows (beyond the paper; the pruned teacher learns to keep
/// its intermediate representations where the dense teacher has them): for the hidden states
/// `j` in `layers` (indices of [`Forward::hidden`](super::forward::Forward::hidden): layer
/// `j`'s output, scaled by the token mask `m[j]`), the mean over the rows with `m[j] = 1` and
/// the `d` units of `(student - dense)²`, averaged over the layers. `student` and `dense` are
/// `[N, d]` per hidden state (packed rows); a layer without kept rows adds 0.
///
/// Returns `(loss, dL/dhidden)`, the gradient as [`ExtraGrads::hidden`](super::backward::ExtraGrads)
/// wants it: one entry per hidden state, `Some([N, d])` for those in `layers` (0 on rows not
/// kept), `None` elsewhere.
pub fn hidden_distill_loss(
    student: &[Vec<f32>],
    dense: &[Vec<f32>],
    masks: &TokenMasks,
    d: usize,
    layers: std::ops::Range<usize>,
) -> (f64, Vec<Option<Vec<f32>>>) {
    let count = layers.len().max(1) as f64;
    let mut grads: Vec<Option<Vec<f32>>> = vec![None; student.len()];
    let mut loss = 0.0f64;
    for j in layers {
        let (s, t, m) = (&student[j], &dense[j], &masks.m[j]);
        let kept = m.iter().filter(|&&v| v == 1.0).count();
        let mut g = vec![0.0f32; s.len()];
        if kept > 0 {
            let scale = 1.0 / (kept as f64 * d as f64 * count);
            for (r, _) in m.iter().enumerate().filter(|(_, &v)| v == 1.0) {
                for i in r * d..(r + 1) * d {
                    let diff = f64::from(s[i]) - f64::from(t[i]);
                    loss += diff * diff * scale;
                    g[i] = (2.0 * diff * scale) as f32;
                }
            }
        }
        grads[j] = Some(g);
    }
    (loss, grads)
}

/// Mean cross-entropy of `logits` `[B, C]` against `labels` plus `alpha` times the mean
/// `KL(softmax(dense/T) || softmax(logits/T))`, and its gradient dL/dlogits `[B, C]`
/// (`(softmax(z) - onehot)/B + α (softmax(z/T) - softmax(z_dense/T)) / (T B)`). `dense` is
/// `[B, C]` (ignored when `alpha == 0`). Returns `(ce, kl, dlogits)`.
pub fn ce_kd_loss(logits: &[f32], dense: &[f32], labels: &[usize], alpha: f64, temperature: f64) -> (f64, f64, Vec<f32>) {
    let b = labels.len();
    let c = logits.len() / b.max(1);
    let softmax = |row: &[f32], t: f64| -> Vec<f64> {
        let max = row.iter().map(|&v| v as f64 / t).fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 / t - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    };
    let (mut ce, mut kl) = (0.0f64, 0.0f64);
    let mut grad = vec![0.0f32; logits.len()];
    for e in 0..b {
        let z = &logits[e * c..(e + 1) * c];
        let p = softmax(z, 1.0);
        ce -= p[labels[e]].ln();
        let mut g: Vec<f64> = p.iter().enumerate().map(|(i, &pi)| (pi - f64::from(u8::from(i == labels[e]))) / b as f64).collect();
        if alpha > 0.0 {
            let pt = softmax(z, temperature);
            let pd = softmax(&dense[e * c..(e + 1) * c], temperature);
            kl += pd.iter().zip(&pt).filter(|(d, _)| **d > 0.0).map(|(d, s)| d * (d.ln() - s.max(f64::MIN_POSITIVE).ln())).sum::<f64>();
            for i in 0..c {
                g[i] += alpha * (pt[i] - pd[i]) / (temperature * b as f64);
            }
        }
        for i in 0..c {
            grad[e * c + i] = g[i] as f32;
        }
    }
    (ce / b as f64, kl / b as f64, grad)
}

/// The targets of one plan-aware batch, computed without gradient: ABT plans of `inputs` from
/// `approx` at `keep` (top set: `teacher`'s) and the frozen `teacher`'s dense logits `[B, C]`,
/// each example run alone ([`dense_logits_each`], the bits [`DenseLogitsCache`] holds; zeros
/// when `alpha == 0`: the distillation term is off). Returns `(plans, dense logits)`.
///
/// Errors: bad input, or back-tracking fails on an example.
pub fn plan_targets(
    teacher: &Encoder,
    approx: &Encoder,
    inputs: &[EncodedInput],
    keep: f64,
    alpha: f64,
) -> Result<(Vec<TokenPlan>, Vec<f32>), ModelError> {
    let plans = train_plans(teacher, approx, inputs, keep)?;
    let nl = teacher.classifier.as_ref().map_or(0, |c| c.d_out());
    let dense: Vec<f32> = if alpha > 0.0 { dense_logits_each(teacher, inputs)? } else { vec![0.0; inputs.len() * nl] };
    Ok((plans, dense))
}

/// The training plans of a batch: ABT plans of `inputs` from `approx` at `keep`, with
/// `teacher`'s top set (section 3; no gradient). Not cached: `keep` may be drawn per step, and
/// the ApproxNet's batched attention depends on the batch's composition.
///
/// Errors: bad input, or back-tracking fails on an example.
pub fn train_plans(teacher: &Encoder, approx: &Encoder, inputs: &[EncodedInput], keep: f64) -> Result<Vec<TokenPlan>, ModelError> {
    let cfg = AbtConfig { top: teacher.top_tokens(), ..AbtConfig::topk(keep) };
    abt_plans(approx, inputs, &cfg)
}

/// One plan-aware step's forward and backward: [`plan_targets`], `model` under the plans' 0/1
/// masks, and the gradient of [`ce_kd_loss`] into `g` (shaped as `model`). Runs on the caller's
/// pool (wrap in [`crate::kernels::in_pool`]).
///
/// Errors: bad input, or back-tracking fails on an example.
#[allow(clippy::too_many_arguments)]
pub fn plan_aware_grads(
    model: &NativeBert,
    teacher: &Encoder,
    approx: &Encoder,
    data: &[&LabeledInput],
    keep: f64,
    alpha: f64,
    temperature: f64,
    g: &mut NativeBert,
) -> Result<PlanFtLoss, ModelError> {
    let inputs: Vec<EncodedInput> = data.iter().map(|x| x.input.clone()).collect();
    let (plans, dense) = plan_targets(teacher, approx, &inputs, keep, alpha)?;
    plan_aware_step(model, data, &plans, &dense, alpha, temperature, None, g)
}

/// [`plan_aware_grads`] with the batch's `plans` and dense teacher logits `dense` `[B, C]`
/// given (from [`train_plans`] and a [`DenseLogitsCache`]). With `hidden = Some((frozen, β))`
/// the loss adds `β ·` [`hidden_distill_loss`] against `frozen`'s dense pass over the batch
/// (layers 1..L-1; the top layer's CLS row is distilled through the logits).
///
/// Errors: plans that do not fit the batch.
#[allow(clippy::too_many_arguments)]
pub fn plan_aware_step(
    model: &NativeBert,
    data: &[&LabeledInput],
    plans: &[TokenPlan],
    dense: &[f32],
    alpha: f64,
    temperature: f64,
    hidden: Option<(&NativeBert, f64)>,
    g: &mut NativeBert,
) -> Result<PlanFtLoss, ModelError> {
    if dense.len() != data.len() * model.classifier.d_out {
        return Err(ModelError::Input(format!(
            "{} dense teacher logits for {} examples x {} classes",
            dense.len(),
            data.len(),
            model.classifier.d_out
        )));
    }
    let batch = batch_of(model, data)?;
    let masks = TokenMasks::from_plans(plans, &batch, model.layers.len())?;
    let fw = forward_cls_last(model, &batch, Some(&masks));
    let (ce, kl, dlogits) = ce_kd_loss(&fw.logits, dense, &batch.labels, alpha, temperature);
    let retention = mean_retention(plans);
    let Some((frozen, beta)) = hidden.filter(|(_, b)| *b > 0.0) else {
        backward_full(model, &batch, &fw, g, Some(&dlogits), false);
        return Ok(PlanFtLoss { loss: ce + alpha * kl, ce, kl, retention, hidden: 0.0 });
    };
    let target = forward_cls_last(frozen, &batch, None);
    let top = model.layers.len();
    let (h, mut grads) = hidden_distill_loss(&fw.hidden, &target.hidden, &masks, model.config.hidden_size, 1..top);
    for x in grads.iter_mut().flatten() {
        x.iter_mut().for_each(|v| *v *= beta as f32);
    }
    let extra = ExtraGrads { head: HeadGrad::Logits(&dlogits), hidden: &grads, ..ExtraGrads::default() };
    backward_with(model, &batch, &fw, g, &extra);
    Ok(PlanFtLoss { loss: ce + alpha * kl + beta * h, ce, kl, retention, hidden: h })
}

/// Mean section-5 retention of `plans` (0 for none).
pub fn mean_retention(plans: &[TokenPlan]) -> f64 {
    plans.iter().map(|p| p.retention()).sum::<f64>() / plans.len().max(1) as f64
}

/// Dev accuracy of `model` under ABT plans from `approx` at `keep` (gathered execution), and the
/// plans' mean retention. Errors: bad input.
pub fn abt_accuracy(model: &Encoder, approx: &Encoder, dev: &[LabeledInput], keep: f64) -> Result<(f64, f64), ModelError> {
    abt_accuracy_counted(model, approx, dev, keep, &ProgressBar::hidden())
}

/// [`abt_accuracy`], advancing `bar` by each batch's example count as it goes (by `dev.len()`
/// in all). The same batches, so the same values.
pub fn abt_accuracy_counted(
    model: &Encoder,
    approx: &Encoder,
    dev: &[LabeledInput],
    keep: f64,
    bar: &ProgressBar,
) -> Result<(f64, f64), ModelError> {
    use crate::planners::abt::{Abt, AttentionSource};
    use crate::planners::{run, Models};
    let planner = Abt::topk(vec![keep], AttentionSource::ApproxNet);
    let models = Models { teacher: model, approx: Some(approx) };
    let (mut correct, mut retention) = (0usize, 0.0f64);
    for chunk in dev.chunks(64) {
        let inputs: Vec<EncodedInput> = chunk.iter().map(|x| x.input.clone()).collect();
        let r = run(&planner, &models, &inputs, crate::RunOptions::default())?;
        for ((out, plan), x) in r.outputs.iter().zip(&r.plans).zip(chunk) {
            correct += usize::from(argmax(&model.logits_of(out)?) == x.label);
            retention += plan.retention();
        }
        bar.inc(chunk.len() as u64);
    }
    let n = dev.len().max(1) as f64;
    Ok((correct as f64 / n, retention / n))
}

/// The per-epoch dev evaluation: ([`abt_accuracy`] at `keep`, dense [`accuracy`](crate::train::finetune::accuracy)),
/// under one "dev eval" bar of `progress` over both passes (none when quiet), cleared when done.
/// Errors: bad input.
fn dev_accuracies(
    model: &Encoder,
    approx: &Encoder,
    dev: &[LabeledInput],
    keep: f64,
    progress: &Progress,
) -> Result<((f64, f64), f64), ModelError> {
    let bar = progress.bar(2 * dev.len() as u64, "dev eval");
    let abt = abt_accuracy_counted(model, approx, dev, keep, &bar)?;
    let dense = accuracy_counted(model, dev, 64, &bar)?;
    bar.finish_and_clear();
    Ok((abt, dense))
}

/// What plan-aware fine-tuning did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanFtReport {
    pub steps: usize,
    pub epochs: usize,
    /// Dev accuracy under ABT at `keep` after each epoch (picks the best epoch).
    pub abt_dev_accuracy: Vec<f64>,
    /// Mean retention of those dev plans, per epoch.
    pub abt_dev_retention: Vec<f64>,
    /// Dense dev accuracy after each epoch.
    pub dense_dev_accuracy: Vec<f64>,
    /// Before training: the starting teacher's ABT and dense dev accuracy.
    pub start_abt_dev_accuracy: f64,
    pub start_dense_dev_accuracy: f64,
    pub best_abt_dev_accuracy: f64,
    pub best_epoch: usize,
    /// Mean loss terms of each epoch's steps.
    pub epoch_loss: Vec<PlanFtLoss>,
    pub seconds: f64,
    pub output_dir: PathBuf,
}

impl PlanFtReport {
    /// A warning when the saved model (the best epoch) is below the starting teacher under ABT on
    /// dev, i.e. when no epoch improved on `--model` at the `keep` it was trained for; `None`
    /// otherwise. Plan-aware fine-tuning saves its best epoch, so the saved model is then worse
    /// than the one it started from.
    pub fn below_start(&self) -> Option<String> {
        (self.best_abt_dev_accuracy < self.start_abt_dev_accuracy).then(|| {
            format!(
                "no epoch beat the starting teacher under ABT on dev: the saved best epoch {} reaches {:.2}% against {:.2}% before training; keep using the starting --model, or try a lower --lr or another --keep",
                self.best_epoch,
                self.best_abt_dev_accuracy * 100.0,
                self.start_abt_dev_accuracy * 100.0
            )
        })
    }
}

/// Progress kept in a checkpoint beside the weights and the optimiser state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PlanFtState {
    abt: Vec<f64>,
    retention: Vec<f64>,
    dense: Vec<f64>,
    start: (f64, f64),
    best: f64,
    best_epoch: usize,
    epoch_loss: Vec<PlanFtLoss>,
    sum: PlanFtLoss,
    sum_steps: usize,
    loss_ema: Option<f64>,
}

/// Plan-aware fine-tuning of `teacher` (a fine-tuned classifier: also the frozen dense
/// teacher of the distillation term) on `train` with ABT plans from `approx`, evaluating on
/// `dev` after each epoch and saving the best epoch (by dev accuracy under ABT at `cfg.keep`) to
/// `out_dir` in the HF layout (tokenizer files from `tokenizer_dir`). Same data order, schedule,
/// AdamW and checkpoints (`out_dir/checkpoint`, job [`JOB`]) as
/// [`finetune_native`](super::finetune_native); with `resume` the run continues exactly.
///
/// Errors: an invalid `cfg`, no training or dev data, a teacher without a classifier or that
/// the native trainer does not cover, an ApproxNet of another teacher, bad input, a non-finite
/// loss, an unusable checkpoint, or a file that cannot be written.
#[allow(clippy::too_many_arguments)]
pub fn finetune_plan_aware(
    teacher: &Encoder,
    approx: &ApproxNet,
    train: &[LabeledInput],
    dev: &[LabeledInput],
    cfg: &PlanFtConfig,
    out_dir: &Path,
    tokenizer_dir: &Path,
    resume: bool,
    progress: &Progress,
) -> anyhow::Result<PlanFtReport> {
    cfg.validate()?;
    anyhow::ensure!(!train.is_empty(), "no training examples");
    anyhow::ensure!(!dev.is_empty(), "no dev examples (plan-aware fine-tuning picks its best epoch on dev)");
    anyhow::ensure!(
        teacher.classifier.is_some(),
        "the teacher has no classification head; plan-aware fine-tuning starts from a fine-tuned teacher (`sttabt finetune`)"
    );
    approx.check_teacher(&teacher.config)?;
    let fc = &cfg.finetune;
    let start = std::time::Instant::now();
    let mut model = NativeBert::from_model(teacher)?;
    let steps_per_epoch = train.len().div_ceil(fc.batch_size);
    let total_steps = steps_per_epoch * fc.epochs;
    let schedule = Schedule::new(fc.lr, total_steps, fc.warmup_frac);
    let mut optim = AdamW::new(AdamWSettings::burn_defaults(fc.weight_decay, Some(fc.grad_clip)), &model);
    let mut afp = Fingerprint::default();
    for (_, _, x) in approx.model.hf_tensors() {
        afp.f32s(&x);
    }
    let ckpt = Checkpointer::new(
        out_dir.join("checkpoint"),
        JOB,
        run_key(
            cfg,
            &["checkpoint_every"],
            &[("data", data_fingerprint(train)), ("base_model", native_bert_fingerprint(&model).into()), ("approx", afp.hex().into())],
        ),
    );
    let mut state = PlanFtState::default();
    let mut step = 0usize;
    let mut resumed = false;
    if resume {
        if let Some(r) = checkpoint::load(&ckpt, &mut model, &mut optim)? {
            step = r.step;
            state = serde_json::from_value(r.extra)?;
            resumed = true;
            progress.println(format!("resuming plan-aware fine-tuning from step {step}"));
        }
    }
    let am = &approx.model;
    if !resumed {
        let ((abt, _), dense) = dev_accuracies(teacher, am, dev, cfg.keep, progress)?;
        state.start = (abt, dense);
        progress.println(format!(
            "start: dev accuracy {:.2}% under ABT k = {}, {:.2}% dense",
            abt * 100.0,
            cfg.keep,
            state.start.1 * 100.0
        ));
    }
    let bar = progress.bar(total_steps as u64, "plan-aware fine-tune");
    bar.set_position(step as u64);
    let mut loss_ema = state.loss_ema.unwrap_or(f64::NAN);
    let rate = Rate::start(step);
    let mut grads = model.zeros_like();
    // the frozen teacher's dense logits (C floats per example), computed once per example; a
    // resumed run refills it with the same bits
    let mut dense_cache = DenseLogitsCache::new(train.len());
    // the frozen dense teacher of the hidden-state term, on the native trainer (its layer outputs)
    let frozen = if cfg.hidden_weight > 0.0 { Some(NativeBert::from_model(teacher)?) } else { None };
    for epoch in state.abt.len()..fc.epochs {
        let order = epoch_order(train.len(), fc.seed, 0, epoch);
        for b in step.saturating_sub(epoch * steps_per_epoch)..steps_per_epoch {
            let idx = &order[b * fc.batch_size..((b + 1) * fc.batch_size).min(order.len())];
            let data: Vec<&LabeledInput> = idx.iter().map(|&i| &train[i]).collect();
            let keep = cfg.keep_at(step);
            let inputs: Vec<EncodedInput> = data.iter().map(|x| x.input.clone()).collect();
            let l = crate::kernels::in_pool(|| -> Result<PlanFtLoss, ModelError> {
                let plans = train_plans(teacher, am, &inputs, keep)?;
                let dense = if cfg.kd_alpha > 0.0 {
                    dense_cache.logits(teacher, idx, &inputs.iter().collect::<Vec<_>>())?
                } else {
                    vec![0.0; data.len() * model.classifier.d_out]
                };
                let hidden = frozen.as_ref().map(|f| (f, cfg.hidden_weight));
                plan_aware_step(&model, &data, &plans, &dense, cfg.kd_alpha, cfg.kd_temperature, hidden, &mut grads)
            })?;
            anyhow::ensure!(l.loss.is_finite(), "loss became {} at step {step}; lower --lr", l.loss);
            loss_ema = if loss_ema.is_nan() { l.loss } else { 0.95 * loss_ema + 0.05 * l.loss };
            state.sum = PlanFtLoss {
                loss: state.sum.loss + l.loss,
                ce: state.sum.ce + l.ce,
                kl: state.sum.kl + l.kl,
                retention: state.sum.retention + l.retention,
                hidden: state.sum.hidden + l.hidden,
            };
            state.sum_steps += 1;
            crate::kernels::in_pool(|| optim.step(schedule.lr(step), &mut model, &mut grads));
            step += 1;
            bar.set_message(format!(
                "epoch {} loss {loss_ema:.4} k {keep:.2} retention {:.2} {}",
                epoch + 1,
                l.retention,
                rate.examples_per_s(step, fc.batch_size)
            ));
            bar.inc(1);
            if step.is_multiple_of(fc.checkpoint_every.max(1)) && b + 1 < steps_per_epoch {
                state.loss_ema = Some(loss_ema);
                checkpoint::save(&ckpt, &model, &optim, step, steps_per_epoch, &schedule, serde_json::to_value(&state)?)?;
            }
        }
        let native = model.to_model()?;
        let ((abt, ret), dense) = bar.suspend(|| dev_accuracies(&native, am, dev, cfg.keep, progress))?;
        progress.println(format!(
            "epoch {}: dev accuracy {:.2}% under ABT k = {} (retention {:.3}), {:.2}% dense",
            epoch + 1,
            abt * 100.0,
            cfg.keep,
            ret,
            dense * 100.0
        ));
        state.abt.push(abt);
        state.retention.push(ret);
        state.dense.push(dense);
        let n = state.sum_steps.max(1) as f64;
        let s = state.sum;
        state.epoch_loss.push(PlanFtLoss {
            loss: s.loss / n,
            ce: s.ce / n,
            kl: s.kl / n,
            retention: s.retention / n,
            hidden: s.hidden / n,
        });
        (state.sum, state.sum_steps) = (PlanFtLoss::default(), 0);
        if abt > state.best || state.best_epoch == 0 {
            state.best = abt;
            state.best_epoch = epoch + 1;
            save_hf_checkpoint(&native, out_dir, Some(tokenizer_dir))?;
        }
        state.loss_ema = Some(loss_ema);
        checkpoint::save(&ckpt, &model, &optim, step, steps_per_epoch, &schedule, serde_json::to_value(&state)?)?;
    }
    bar.finish_and_clear();
    Ok(PlanFtReport {
        steps: step,
        epochs: fc.epochs,
        abt_dev_accuracy: state.abt,
        abt_dev_retention: state.retention,
        dense_dev_accuracy: state.dense,
        start_abt_dev_accuracy: state.start.0,
        start_dense_dev_accuracy: state.start.1,
        best_abt_dev_accuracy: state.best,
        best_epoch: state.best_epoch,
        epoch_loss: state.epoch_loss,
        seconds: start.elapsed().as_secs_f64(),
        output_dir: out_dir.to_path_buf(),
    })
}
