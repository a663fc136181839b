//! `sttabt distill`: train an ApproxNet to imitate the teacher (ALGORITHM.md section 2).
//!
//! Loss = L_att + L_hid + L_emb + L_pred (weights 1), padding excluded:
//! - L_att: KL(teacher row || ApproxNet row) summed over keys, averaged over real queries, heads,
//!   batch and layers;
//! - L_hid: mean over l = 1..L-1 of MSE(W_l h_l^approx, h_l^teacher) over real tokens;
//! - L_emb: MSE(W_e emb^approx, emb^teacher);
//! - L_pred: MSE(softmax(approx logits), softmax(teacher logits)), when both have a classifier.
//!
//! The frozen teacher runs on the fast native executor; the ApproxNet trains on burn (AdamW,
//! warm-up + linear decay, gradient clipping, seeded shuffling), or on the native trainer
//! ([`crate::train::native::distill::distill_native`], same loop and outputs). Checkpoints are
//! atomic; `resume` continues exactly from the last one (see [`crate::train::resume`]). With a
//! [`KlTarget`] the run stops at the first held-out evaluation with attention KL <= the target
//! (the curve goes into `distill.json`).

use std::path::Path;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::approx::{fidelity, ApproxNet, Fidelity};
use crate::exec::RunOptions;
use crate::model::config::EncoderConfig;
use crate::model::{EncodedInput, Encoder, Linear};
use crate::train::finetune::scalar;
use crate::train::model::{Batch, Lin, TrainBert};
use crate::train::resume::{epoch_order, inputs_fingerprint, module_fingerprint, native_fingerprint, run_key, Checkpointer};
use crate::train::{Progress, Schedule};

/// Hyper-parameters of distillation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_frac: f64,
    pub weight_decay: f32,
    pub grad_clip: f32,
    pub seed: u64,
    pub checkpoint_every: usize,
    /// Include L_pred (needs classifiers on both models).
    pub use_pred: bool,
    /// Stop early once the held-out attention KL reaches a target (issue 16 item 2); `None`:
    /// run all `steps` (the fixed-steps behaviour; such a config's run key is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_kl: Option<KlTarget>,
}

/// The early-stopping rule of distillation: evaluate the attention KL on the held-out inputs
/// ([`fidelity`], ALGORITHM.md section 2) every `every` steps and stop at the first evaluation
/// with KL `<= kl`; `steps` stays the most steps run (and fixes the learning-rate schedule).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KlTarget {
    /// Target KL(teacher row || ApproxNet row), nats per real query row (the paper: 0.2019).
    pub kl: f64,
    /// Steps between evaluations (>= 1).
    pub every: usize,
}

/// One evaluation of the held-out attention KL during distillation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KlPoint {
    /// Optimisation steps done when it was measured.
    pub step: usize,
    pub attention_kl: f64,
}

impl DistillConfig {
    /// Check the ranges: `steps`, `batch_size`, `checkpoint_every` >= 1; `lr` finite and > 0;
    /// `warmup_frac` in [0, 1]. [`distill`] calls it before any work.
    pub fn validate(&self) -> Result<(), crate::train::InvalidConfig> {
        use crate::train::{check_count, check_fraction, check_positive};
        const C: &str = "DistillConfig";
        check_count(C, "steps", self.steps)?;
        check_count(C, "batch_size", self.batch_size)?;
        check_positive(C, "lr", self.lr)?;
        check_fraction(C, "warmup_frac", self.warmup_frac)?;
        check_count(C, "checkpoint_every", self.checkpoint_every)?;
        if let Some(t) = &self.target_kl {
            check_positive(C, "target_kl.kl", t.kl)?;
            check_count(C, "target_kl.every", t.every)?;
        }
        Ok(())
    }
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            steps: 200,
            batch_size: 16,
            lr: 1e-3,
            warmup_frac: 0.05,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 0,
            checkpoint_every: 50,
            use_pred: true,
            target_kl: None,
        }
    }
}

/// What distillation did, with fidelity before and after on held-out inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillReport {
    /// Optimisation steps run (fewer than the configured ones when the KL target stopped the run).
    pub steps: usize,
    pub seconds: f64,
    pub final_loss: f64,
    pub before: Fidelity,
    pub after: Fidelity,
    /// Held-out attention KL at step 0 and every `target_kl.every` steps (empty without a target).
    #[serde(default)]
    pub kl_curve: Vec<KlPoint>,
    /// Whether the KL target was reached (`None` without a target).
    #[serde(default)]
    pub target_reached: Option<bool>,
    /// `burn` or `native`.
    #[serde(default)]
    pub trainer: String,
}

/// Progress of a distillation run kept in its checkpoints (`extra`): the last loss parts and
/// the KL curve so far; shared by the burn and native loops.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DistillProgress {
    #[serde(default)]
    pub last: LossParts,
    #[serde(default)]
    pub kl_curve: Vec<KlPoint>,
    /// The KL target was reached at the checkpoint's step: nothing left to run.
    #[serde(default)]
    pub reached: bool,
}

impl DistillProgress {
    /// After step `done`: with a KL target due at `done`, measure the held-out KL with `kl`,
    /// record it, and return whether the target is reached.
    pub fn evaluate(&mut self, cfg: &DistillConfig, done: usize, kl: impl FnOnce() -> anyhow::Result<f64>) -> anyhow::Result<bool> {
        let Some(t) = cfg.target_kl else { return Ok(false) };
        if !done.is_multiple_of(t.every) {
            return Ok(false);
        }
        let v = kl()?;
        self.kl_curve.push(KlPoint { step: done, attention_kl: v });
        self.reached = v <= t.kl;
        Ok(self.reached)
    }
}

/// The end of a distillation run on either trainer: fidelity after, the ApproxNet saved into
/// `out_dir`, `distill.json` (report, config, last loss parts) written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_run(
    teacher: &Encoder,
    result: &ApproxNet,
    heldout: &[EncodedInput],
    cfg: &DistillConfig,
    out_dir: &Path,
    (steps, before, start): (usize, Fidelity, std::time::Instant),
    mut prog: DistillProgress,
    trainer: &str,
) -> anyhow::Result<DistillReport> {
    let after = fidelity(teacher, &result.model, heldout)?;
    result.save(out_dir)?;
    if cfg.target_kl.is_some() && prog.kl_curve.first().map(|p| p.step) != Some(0) {
        prog.kl_curve.insert(0, KlPoint { step: 0, attention_kl: before.attention_kl });
    }
    let last = prog.last;
    let report = DistillReport {
        steps,
        seconds: start.elapsed().as_secs_f64(),
        final_loss: last.att_kl + last.hid + last.emb + last.pred,
        before,
        after,
        target_reached: cfg.target_kl.map(|_| prog.reached),
        kl_curve: prog.kl_curve,
        trainer: trainer.into(),
    };
    crate::model::checkpoint::write_atomic(
        &out_dir.join("distill.json"),
        serde_json::to_string_pretty(&serde_json::json!({"report": report, "config": cfg, "last_loss_parts": last}))?.as_bytes(),
    )?;
    Ok(report)
}

/// The ApproxNet and its transfer maps as one burn module.
#[derive(Module, Debug)]
pub struct ApproxTrain {
    pub net: TrainBert,
    pub transfer: Vec<Lin>,
}

/// Loss parts of one step (floats, for the progress bar and reports).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LossParts {
    pub att_kl: f64,
    pub hid: f64,
    pub emb: f64,
    pub pred: f64,
}

/// Teacher signals for one padded batch.
struct TeacherBatch {
    probs: Vec<Tensor<4>>,
    hidden: Vec<Tensor<3>>,
    probs_entropy_sum: f64,
    logits: Option<Tensor<2>>,
}

fn teacher_batch(teacher: &Encoder, inputs: &[EncodedInput], t: usize, device: &Device) -> Result<TeacherBatch, crate::ModelError> {
    let c = &teacher.config;
    let (h, d, big_l) = (c.num_heads, c.hidden_size, c.num_layers);
    let b = inputs.len();
    let outs = teacher.run_dense(inputs, RunOptions { attentions: true, hidden_states: true })?;
    let mut probs = vec![vec![0.0f32; b * h * t * t]; big_l];
    let mut hidden = vec![vec![0.0f32; b * t * d]; big_l];
    let mut ent = 0.0f64;
    let mut logits = Vec::new();
    for (e, o) in outs.iter().enumerate() {
        let n = inputs[e].len();
        for (l, la) in o.attentions.iter().flatten().enumerate() {
            for hh in 0..h {
                for i in 0..n {
                    for j in 0..n {
                        let p = la.probs[(hh * n + i) * n + j];
                        probs[l][((e * h + hh) * t + i) * t + j] = p;
                        if p > 0.0 {
                            ent += p as f64 * (p as f64).ln();
                        }
                    }
                }
            }
        }
        for (l, (_, rows)) in o.hidden_states.iter().flatten().take(big_l).enumerate() {
            hidden[l][e * t * d..e * t * d + n * d].copy_from_slice(rows);
        }
        if teacher.classifier.is_some() {
            logits.extend(teacher.logits_of(o)?);
        }
    }
    let nl = logits.len() / b.max(1);
    Ok(TeacherBatch {
        probs: probs.into_iter().map(|p| Tensor::from_data(TensorData::new(p, [b, h, t, t]), device)).collect(),
        hidden: hidden.into_iter().map(|x| Tensor::from_data(TensorData::new(x, [b, t, d]), device)).collect(),
        probs_entropy_sum: ent,
        logits: (!logits.is_empty()).then(|| Tensor::from_data(TensorData::new(logits, [b, nl]), device)),
    })
}

/// The distillation loss of one batch (a scalar tensor) and its parts.
pub fn distill_loss(
    model: &ApproxTrain,
    cfg: &EncoderConfig,
    teacher: &Encoder,
    inputs: &[EncodedInput],
    use_pred: bool,
    device: &Device,
) -> anyhow::Result<(Tensor<1>, LossParts)> {
    let refs: Vec<&EncodedInput> = inputs.iter().collect();
    let batch = Batch::from_inputs(&refs, device);
    let [b, t] = batch.dims();
    let tb = teacher_batch(teacher, inputs, t, device)?;
    let out = model.net.forward(cfg, &batch, None);
    let big_l = cfg.num_layers;
    let h = cfg.num_heads;
    let n_real: usize = batch.lengths.iter().sum();
    let key_bias = (batch.valid.clone() - 1.0).mul_scalar(1e9).reshape([b, 1, 1, t]);
    let qmask = batch.valid.clone().reshape([b, 1, t, 1]);
    // L_att: KL = Σ p log p - Σ p log q, averaged over real queries x heads x layers.
    let norm = (n_real * h * big_l) as f64;
    let mut cross: Option<Tensor<1>> = None;
    for l in 0..big_l {
        let logq = activation::log_softmax(out.scores[l].clone() + key_bias.clone(), 3);
        let term = (tb.probs[l].clone() * logq).sum_dim(3) * qmask.clone();
        let s = term.sum();
        cross = Some(match cross {
            Some(c) => c + s,
            None => s,
        });
    }
    let l_att = cross.ok_or_else(|| anyhow::anyhow!("model has no layers"))?.neg().div_scalar(norm).add_scalar(tb.probs_entropy_sum / norm);
    // L_emb and L_hid.
    let vmask = batch.valid.clone().reshape([b, t, 1]);
    let d_t = teacher.config.hidden_size;
    let mse = |pred: Tensor<3>, target: Tensor<3>| -> Tensor<1> {
        let diff = (pred - target) * vmask.clone();
        diff.powi_scalar(2).sum().div_scalar((n_real * d_t) as f64)
    };
    let l_emb = mse(model.transfer[0].forward(out.hidden[0].clone()), tb.hidden[0].clone());
    let mut l_hid: Option<Tensor<1>> = None;
    for l in 1..big_l {
        let m = mse(model.transfer[l].forward(out.hidden[l].clone()), tb.hidden[l].clone());
        l_hid = Some(match l_hid {
            Some(x) => x + m,
            None => m,
        });
    }
    let l_hid = l_hid.map(|x| x.div_scalar((big_l - 1) as f64));
    let mut loss = l_att.clone() + l_emb.clone();
    if let Some(x) = &l_hid {
        loss = loss + x.clone();
    }
    let mut parts = LossParts { att_kl: scalar(&l_att), emb: scalar(&l_emb), hid: l_hid.as_ref().map(scalar).unwrap_or(0.0), pred: 0.0 };
    if use_pred {
        if let (Some(tl), Some(al)) = (tb.logits, model.net.head_logits(cfg, out.last())) {
            let diff = activation::softmax(al, 1) - activation::softmax(tl, 1);
            let l_pred = diff.powi_scalar(2).mean();
            parts.pred = scalar(&l_pred);
            loss = loss + l_pred;
        }
    }
    Ok((loss, parts))
}

fn to_approx_net(model: &ApproxTrain, cfg: &EncoderConfig, like: &ApproxNet) -> anyhow::Result<ApproxNet> {
    let net = model.net.to_native(cfg)?;
    let transfer = model
        .transfer
        .iter()
        .map(|l| {
            let (w, b, i, o) = l.to_hf();
            Linear::from_hf(&w, b, i, o)
        })
        .collect();
    Ok(ApproxNet { model: net, transfer, meta: like.meta.clone() })
}

/// Distil `approx` from `teacher` on `train` inputs; measure fidelity on `heldout` before and after;
/// save the result into `out_dir`, with checkpoints ([`crate::train::resume`]) in
/// `out_dir/checkpoint` every `cfg.checkpoint_every` steps and at the end. With `resume` the run
/// continues exactly from the last checkpoint (bit-identical to an uninterrupted run); one of
/// another configuration, data set, teacher or starting ApproxNet is an error naming the fields.
#[allow(clippy::too_many_arguments)]
pub fn distill(
    teacher: &Encoder,
    approx: ApproxNet,
    train: &[EncodedInput],
    heldout: &[EncodedInput],
    cfg: &DistillConfig,
    out_dir: &Path,
    resume: bool,
    progress: &Progress,
) -> anyhow::Result<(ApproxNet, DistillReport)> {
    cfg.validate()?;
    anyhow::ensure!(!train.is_empty(), "no training inputs for distillation");
    anyhow::ensure!(cfg.batch_size > 0, "batch size must be at least 1");
    approx.check_teacher(&teacher.config)?;
    let start = std::time::Instant::now();
    let before = fidelity(teacher, &approx.model, heldout)?;
    let device = Device::flex().autodiff();
    let acfg = approx.model.config.clone();
    let mut model = ApproxTrain {
        net: TrainBert::from_native(&approx.model, &device),
        transfer: approx.transfer.iter().map(|l| Lin::from_hf(&l.weight_hf(), l.bias(), l.d_in(), l.d_out(), &device)).collect(),
    };
    let use_pred = cfg.use_pred && teacher.classifier.is_some() && approx.model.classifier.is_some();
    let schedule = Schedule::new(cfg.lr, cfg.steps, cfg.warmup_frac);
    let mut optim =
        AdamWConfig::new().with_weight_decay(cfg.weight_decay).with_grad_clipping(Some(GradientClippingConfig::Norm(cfg.grad_clip))).init();
    let per_epoch = train.len().div_ceil(cfg.batch_size).max(1);
    let key = run_key(
        cfg,
        &["checkpoint_every"],
        &[
            ("data", inputs_fingerprint(train.iter(), std::iter::empty())),
            ("teacher", native_fingerprint(teacher).into()),
            ("approx_init", module_fingerprint(&model).into()),
        ],
    );
    let ckpt = Checkpointer::new(out_dir.join("checkpoint"), "distill", key);
    let mut step0 = 0usize;
    let mut prog = DistillProgress::default();
    if resume {
        let restored;
        (model, optim, restored) = ckpt.load(model, optim)?;
        if let Some(r) = restored {
            step0 = r.step;
            prog = serde_json::from_value(r.extra.clone()).unwrap_or_default();
            progress.println(format!("resuming distillation from step {step0}"));
        }
    }
    let bar = progress.bar(cfg.steps as u64, "distill");
    bar.set_position(step0 as u64);
    let rate = crate::train::Rate::start(step0);
    let mut order: Vec<usize> = Vec::new();
    let mut done = step0;
    for step in step0..cfg.steps {
        if prog.reached {
            break;
        }
        let epoch = step / per_epoch;
        if step % per_epoch == 0 || step == step0 {
            order = epoch_order(train.len(), cfg.seed, 1000, epoch);
        }
        let b = step % per_epoch;
        let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())];
        let inputs: Vec<EncodedInput> = idx.iter().map(|&i| train[i].clone()).collect();
        let (loss, parts) = distill_loss(&model, &acfg, teacher, &inputs, use_pred, &device)?;
        let lv = scalar(&loss);
        anyhow::ensure!(lv.is_finite(), "distillation loss became {lv} at step {step}; lower --lr");
        prog.last = parts;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(schedule.lr(step), model, grads);
        done = step + 1;
        bar.set_message(progress_message(&parts, &rate, done, cfg.batch_size));
        bar.inc(1);
        let stop = prog.evaluate(cfg, done, || Ok(fidelity(teacher, &model.net.to_native(&acfg)?, heldout)?.attention_kl))?;
        if stop || done.is_multiple_of(cfg.checkpoint_every.max(1)) || done == cfg.steps {
            ckpt.save(&model, &optim, done, per_epoch, &schedule, serde_json::to_value(&prog)?)?;
        }
    }
    bar.finish_and_clear();
    let result = to_approx_net(&model, &acfg, &approx)?;
    let report = finish_run(teacher, &result, heldout, cfg, out_dir, (done, before, start), prog, "burn")?;
    Ok((result, report))
}

/// The progress-bar message of a distillation step: loss parts and examples/s.
pub(crate) fn progress_message(parts: &LossParts, rate: &crate::train::Rate, done: usize, batch_size: usize) -> String {
    format!(
        "KL {:.3} hid {:.3} emb {:.3} pred {:.4} {}",
        parts.att_kl,
        parts.hid,
        parts.emb,
        parts.pred,
        rate.examples_per_s(done, batch_size)
    )
}
