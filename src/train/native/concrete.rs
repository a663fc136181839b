//! Concrete-mask training (ALGORITHM.md section 4; issue 15 items 2-3) on the native trainer:
//! the step of burn's [`concrete_loss`](crate::train::concrete::concrete_loss) + backward, and
//! the loop of [`train_concrete`](crate::train::concrete::train_concrete) around it.
//!
//! One step: the ApproxNet's native forward gives its pre-softmax scores `QKᵀ/√d_h` per layer;
//! the mask generator ([`super::concrete_masks`]) turns them and `θ = 10 φ` into `L` nested soft
//! masks (hard straight-through copies in the last `hard_frac` of the steps); the teacher runs
//! the section-4.3 masked forward with them. Loss: `CE + a Σ_l (θ_l − θ_0)² + w (r − σ(θ_0))²`
//! (+ `d · KL(frozen dense teacher ‖ student)` on the logits when `distill_weight > 0`).
//! Backward: the teacher's ([`backward_with`], with dL/dm), the retention term's dL/dm, the mask
//! generator's exact backward (dL/dm -> dL/dθ and dL/dS), then the ApproxNet's backward with
//! dL/dS injected at its scores ([`ExtraGrads::scores`]). Parameters the loss does not reach
//! (the ApproxNet's head, its last layer but for query and key) get no AdamW step, as in burn.

use std::path::Path;
use std::time::Instant;

use crate::approx::ApproxNet;
use crate::error::ModelError;
use crate::kernels;
use crate::model::{EncodedInput, Encoder};
use crate::train::concrete::{finish_concrete_run, ConcreteConfig, ConcreteParts, ConcreteReport};
use crate::train::finetune::{data_fingerprint, LabeledInput};
use crate::train::native::backward::{backward_with, ExtraGrads, HeadGrad};
use crate::train::native::batch::PackedBatch;
use crate::train::native::checkpoint::Tensors;
use crate::train::native::concrete_masks::{self as cm, BatchMasks};
use crate::train::native::distill::NativeApprox;
use crate::train::native::driver::{run_steps, LoopSpec, Windows};
use crate::train::native::forward::{forward, forward_cls_last, Forward};
use crate::train::native::masks::TokenMasks;
use crate::train::native::params::NativeBert;
use crate::train::native::teacher_cache::DenseLogitsCache;
use crate::train::native::{batch_of, AdamW, AdamWSettings};
use crate::train::resume::{run_key, Checkpointer, Fingerprint};
use crate::train::step_seconds::StageSeconds;
use crate::train::{Progress, Schedule};

/// The checkpoint job name of native concrete training (burn's is `concrete`; the two do not
/// resume each other's checkpoints).
pub const JOB: &str = "concrete-native";

/// θ = `THETA_SCALE` · φ (φ is the AdamW parameter, so θ moves at 10x the learning rate).
pub const THETA_SCALE: f32 = 10.0;

/// The trained tensors: teacher, ApproxNet (its transfer maps are carried, not trained) and
/// `φ = θ / 10` `[L]`; checkpointed as `teacher.*`, `approx.*`, `concrete.phi`.
#[derive(Debug, Clone)]
pub struct NativeConcrete {
    pub teacher: NativeBert,
    pub approx: NativeApprox,
    pub phi: Vec<f32>,
}

impl NativeConcrete {
    /// From a teacher with a classifier and its ApproxNet, `θ_l = theta_init` for every layer.
    ///
    /// Errors: models the native trainer does not cover (text BERT only), or an ApproxNet of
    /// another teacher.
    pub fn new(teacher: &Encoder, approx: &ApproxNet, theta_init: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(teacher.classifier.is_some(), "the teacher has no classification head");
        approx.check_teacher(&teacher.config)?;
        let t = NativeBert::from_model(teacher)?;
        let a = NativeApprox::from_approx(approx)?;
        let phi = vec![(theta_init / THETA_SCALE as f64) as f32; t.layers.len()];
        Ok(Self { teacher: t, approx: a, phi })
    }

    /// θ `[L]` (`10 φ` in f32, as burn's `ConcreteTrain::theta`).
    pub fn theta(&self) -> Vec<f32> {
        self.phi.iter().map(|p| p * THETA_SCALE).collect()
    }

    /// Zeros of the same shapes (gradient buffers).
    pub fn zeros_like(&self) -> Self {
        Self { teacher: self.teacher.zeros_like(), approx: self.approx.zeros_like(), phi: vec![0.0; self.phi.len()] }
    }

    /// Per tensor of [`Tensors::named`]: whether the loss reaches it (the teacher's and φ
    /// always; the ApproxNet's as [`NativeApprox::reached`] without L_pred).
    pub fn reached(&self) -> Vec<bool> {
        let mut v = vec![true; self.teacher.tensors().len()];
        v.extend(self.approx.reached(false).into_iter().take(self.approx.net.tensors().len()));
        v.push(true);
        v
    }

    /// Fingerprint of every tensor (order, lengths, values; the transfer maps included).
    pub fn fingerprint(&self) -> String {
        let mut fp = Fingerprint::default();
        for (_, x) in self.named() {
            fp.f32s(x);
        }
        for t in &self.approx.transfer {
            fp.f32s(&t.w);
            fp.f32s(&t.b);
        }
        fp.hex()
    }
}

impl Tensors for NativeConcrete {
    fn named(&self) -> Vec<(String, &[f32])> {
        let mut v: Vec<(String, &[f32])> = self.teacher.tensors().into_iter().map(|(n, x)| (format!("teacher.{n}"), x)).collect();
        v.extend(self.approx.net.tensors().into_iter().map(|(n, x)| (format!("approx.{n}"), x)));
        v.push(("concrete.phi".into(), &self.phi));
        v
    }
    fn named_mut(&mut self) -> Vec<&mut [f32]> {
        let mut v = self.teacher.tensors_mut();
        v.extend(self.approx.net.tensors_mut());
        v.push(&mut self.phi);
        v
    }
}

/// The pre-softmax scores `QKᵀ/√d_h` of every layer of a native forward (recomputed from its
/// cached Q and K with the forward's own kernel), in the layout of `LayerCache::probs`.
pub fn pre_softmax_scores(model: &NativeBert, batch: &PackedBatch, fw: &Forward) -> Vec<Vec<f32>> {
    use rayon::prelude::*;
    let (h, dh) = (model.config.num_heads, model.config.head_size());
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    let d = model.config.hidden_size;
    let probs_len: usize = batch.lengths.iter().map(|n| h * n * n).sum();
    fw.layers
        .iter()
        .map(|lc| {
            let mut s = vec![0.0f32; probs_len];
            // one task per example; the heads are column blocks of the row-major [n, d] Q and K
            let blocks: Vec<_> = batch.example_blocks(&mut s, |n| h * n * n).into_iter().enumerate().collect();
            blocks.into_par_iter().for_each(|(e, se)| {
                let (n, r0) = (batch.lengths[e], batch.offsets[e]);
                let rws = r0 * d..(r0 + n) * d;
                let (qe, ke) = (&lc.q[rws.clone()], &lc.k[rws]);
                for hh in 0..h {
                    let c0 = hh * dh;
                    let p = &mut se[hh * n * n..(hh + 1) * n * n];
                    kernels::matmul_bt_strided(&qe[c0..], d, &ke[c0..], d, p, n, dh, n);
                    for v in p.iter_mut() {
                        *v *= scale;
                    }
                }
            });
            s
        })
        .collect()
}

/// Everything one step computed, for the backward and for reports.
#[derive(Debug, Clone)]
pub struct ConcreteForward {
    pub approx: Forward,
    pub masks: BatchMasks<f32>,
    pub teacher: Forward,
    /// The loss (`task + anchor + retention_term + distill`) and its parts.
    pub loss: f64,
    pub parts: ConcreteParts,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The forward of one step: `tbatch` / `abatch` the same examples packed for the teacher and
/// the ApproxNet; `frozen` `[B, C]` the frozen dense teacher's logits (used when
/// `cfg.distill_weight > 0`); `hard` for straight-through hard masks.
///
/// Errors: frozen logits of another shape than `[B, C]`.
pub fn concrete_forward(
    model: &NativeConcrete,
    tbatch: &PackedBatch,
    abatch: &PackedBatch,
    cfg: &ConcreteConfig,
    hard: bool,
    frozen: Option<&[f32]>,
) -> Result<ConcreteForward, ModelError> {
    let nl = model.teacher.classifier.d_out;
    if let Some(f) = frozen {
        if f.len() != tbatch.b * nl {
            return Err(ModelError::Input(format!("{} frozen logits for {} examples x {nl} classes", f.len(), tbatch.b)));
        }
    }
    let afw = forward(&model.approx.net, abatch);
    let scores = pre_softmax_scores(&model.approx.net, abatch, &afw);
    let theta = model.theta();
    let special = model.teacher.config.num_special_tokens();
    let bm = cm::batch_forward(&scores, &tbatch.lengths, model.approx.net.config.num_heads, &theta, special);
    let run_masks = if hard { cm::harden(&bm.m) } else { bm.m.clone() };
    // The loss reads the teacher's logits only, and the top mask keeps CLS alone: the last layer
    // runs for the CLS rows (K and V over all rows), exact up to float rounding.
    let tfw = forward_cls_last(&model.teacher, tbatch, Some(&TokenMasks { m: run_masks }));
    let task = tfw.loss;
    let anchor = cfg.anchor_weight * theta.iter().map(|&t| (t as f64 - cfg.theta0).powi(2)).sum::<f64>();
    let r = cm::soft_retention(&bm.m, &tbatch.lengths);
    let retention_term = cfg.retention_weight * (r - sigmoid(cfg.theta0)).powi(2);
    let mut distill = 0.0;
    if let (Some(f), true) = (frozen, cfg.distill_weight > 0.0) {
        let mut kl = 0.0;
        for e in 0..tbatch.b {
            let (p, lq) = (softmax64(&f[e * nl..(e + 1) * nl]), log_softmax64(&tfw.logits[e * nl..(e + 1) * nl]));
            kl += p.iter().zip(&lq).map(|(&pv, &l)| pv * (pv.max(1e-30).ln() - l)).sum::<f64>();
        }
        distill = cfg.distill_weight * kl / tbatch.b as f64;
    }
    // the parts at f32 precision, as burn reports them (f32 tensors): they also round-trip
    // through the checkpoint's JSON exactly
    let f = |x: f64| x as f32 as f64;
    let parts = ConcreteParts {
        task: f(task),
        anchor: f(anchor),
        retention_term: f(retention_term),
        distill: f(distill),
        soft_retention: f(r),
        hard_retention: cm::hard_retention(&bm.m, &tbatch.lengths),
    };
    Ok(ConcreteForward { approx: afw, masks: bm, teacher: tfw, loss: task + anchor + retention_term + distill, parts })
}

/// The gradients of the step's loss into `g` (shaped as `model`; every value overwritten): the
/// teacher's, the ApproxNet's (zero where unreached) and dL/dφ = 10 dL/dθ. Runs on the caller's
/// rayon pool.
pub fn concrete_backward(
    model: &NativeConcrete,
    tbatch: &PackedBatch,
    abatch: &PackedBatch,
    fw: &ConcreteForward,
    cfg: &ConcreteConfig,
    frozen: Option<&[f32]>,
    g: &mut NativeConcrete,
) {
    let (b, nl) = (tbatch.b, model.teacher.classifier.d_out);
    let mut dlogits = Vec::new();
    if let (Some(f), true) = (frozen, cfg.distill_weight > 0.0) {
        // CE: (q − y) / B; KL(p ‖ q): d (q Σp − p) / B
        dlogits = vec![0.0f32; b * nl];
        for e in 0..b {
            let q = softmax64(&fw.teacher.logits[e * nl..(e + 1) * nl]);
            let p = softmax64(&f[e * nl..(e + 1) * nl]);
            let ps: f64 = p.iter().sum();
            for c in 0..nl {
                let y = if c == tbatch.labels[e] { 1.0 } else { 0.0 };
                dlogits[e * nl + c] = ((q[c] - y + cfg.distill_weight * (q[c] * ps - p[c])) / b as f64) as f32;
            }
        }
    }
    let head = if dlogits.is_empty() { HeadGrad::CrossEntropy } else { HeadGrad::Logits(&dlogits) };
    let extra = ExtraGrads { head, mask_grads: true, ..ExtraGrads::default() };
    let mut dm = backward_with(&model.teacher, tbatch, &fw.teacher, &mut g.teacher, &extra).expect("mask gradients of a masked forward");
    let bm = &fw.masks;
    cm::retention_term(&bm.m, &tbatch.lengths, sigmoid(cfg.theta0), cfg.retention_weight, &mut dm);
    let (dscores, dtheta) = cm::batch_backward(bm, &dm, &tbatch.lengths, model.approx.net.config.num_heads);
    let theta = model.theta();
    for ((gp, dt), &t) in g.phi.iter_mut().zip(&dtheta).zip(&theta) {
        let full = *dt as f64 + 2.0 * cfg.anchor_weight * (t as f64 - cfg.theta0);
        *gp = (full * THETA_SCALE as f64) as f32;
    }
    let scores: Vec<Option<Vec<f32>>> = dscores.into_iter().map(Some).collect();
    let extra = ExtraGrads { head: HeadGrad::None, scores: &scores, ..ExtraGrads::default() };
    backward_with(&model.approx.net, abatch, &fw.approx, &mut g.approx.net, &extra);
}

fn softmax64(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn log_softmax64(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// The same examples packed for the teacher (with labels) and the ApproxNet.
///
/// Errors: as [`PackedBatch::new`].
pub fn batches(model: &NativeConcrete, data: &[&LabeledInput]) -> Result<(PackedBatch, PackedBatch), ModelError> {
    let tb = batch_of(&model.teacher, data)?;
    let inputs: Vec<EncodedInput> = data.iter().map(|x| x.input.clone()).collect();
    Ok((tb, model.approx.batch(&inputs)?))
}

/// [`train_concrete`](crate::train::concrete::train_concrete) on the native trainer: the same
/// batches, schedule, AdamW (per-tensor clipping 1.0, θ at 10x through φ), hard phase,
/// checkpoint points and outputs (`out_dir/{teacher,approx}`, `concrete.json` with
/// `"trainer": "native"`; checkpoints of job [`JOB`] in `out_dir/checkpoint`). The frozen
/// teacher's logits (distillation) are computed once per example and cached. With `resume` the
/// run continues exactly from the last checkpoint (weights, φ, AdamW moments and step count,
/// data and schedule position, the report windows); one of another configuration, data,
/// starting models or of the burn trainer is an error naming the fields.
///
/// Errors: an invalid `cfg`, no training examples, a teacher without a classifier, models the
/// native trainer does not cover, an ApproxNet of another teacher, a non-finite loss, an
/// unusable checkpoint, or a file that cannot be written.
pub fn train_concrete_native(
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
    let start_t = Instant::now();
    let mut model = NativeConcrete::new(teacher, approx, cfg.theta_init.unwrap_or(cfg.theta0))?;
    let key = run_key(cfg, &["checkpoint_every"], &[("data", data_fingerprint(train)), ("start_weights", model.fingerprint().into())]);
    let schedule = Schedule::new(cfg.lr, cfg.steps, cfg.warmup_frac);
    let settings = AdamWSettings::burn_defaults(cfg.weight_decay, Some(1.0));
    let mut optim = AdamW::for_lengths(settings, model.named().iter().map(|(_, x)| x.len()));
    let reached = model.reached();
    let hard_from = ((1.0 - cfg.hard_frac) * cfg.steps as f64).round() as usize;
    let ckpt = Checkpointer::new(out_dir.join("checkpoint"), JOB, key);
    let spec = LoopSpec {
        steps: cfg.steps,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        stream: 2000,
        checkpoint_every: cfg.checkpoint_every,
        label: format!("concrete θ0={}", cfg.theta0),
        what: "native concrete training",
    };
    let mut frozen = (cfg.distill_weight > 0.0).then(|| DenseLogitsCache::new(train.len()));
    let mut grads = model.zeros_like();
    let (first, last): Windows<ConcreteParts> = run_steps(
        &spec,
        train.len(),
        &schedule,
        &mut model,
        &mut grads,
        &mut optim,
        reached,
        &ckpt,
        resume,
        progress,
        |step, idx, model, grads, _| {
            let refs: Vec<&LabeledInput> = idx.iter().map(|&i| &train[i]).collect();
            let (tb, ab) = batches(model, &refs)?;
            let fl = match frozen.as_mut() {
                Some(f) => Some(f.logits(teacher, idx, &refs.iter().map(|x| &x.input).collect::<Vec<_>>())?),
                None => None,
            };
            let hard = step >= hard_from;
            let fw = kernels::in_pool(|| concrete_forward(model, &tb, &ab, cfg, hard, fl.as_deref()))?;
            anyhow::ensure!(fw.loss.is_finite(), "concrete loss became {} at step {step}; lower --lr", fw.loss);
            kernels::in_pool(|| concrete_backward(model, &tb, &ab, &fw, cfg, fl.as_deref(), grads));
            Ok((fw.parts, fw.parts.progress_message(cfg.theta0, hard)))
        },
    )?;
    let theta: Vec<f64> = model.theta().into_iter().map(|t| t as f64).collect();
    let (t, a) = (model.teacher.to_model()?, model.approx.to_approx(approx)?);
    finish_concrete_run(out_dir, &t, &a, cfg, theta, start_t, (&first, &last), Some("native"))
}

/// Time `warmup + reps` native concrete soft-mask steps of `teacher` and `approx` on the batch
/// `data` (θ_0 = 0, the default [`ConcreteConfig`]'s loss weights, no distillation; learning
/// rate 1e-5, weight decay 0.01, clipping 1.0, as burn's row in [`crate::train::bench`]);
/// returns the measured steps' stage times and the last loss.
///
/// Errors: models the native trainer does not cover, or bad input.
pub fn bench_steps(
    teacher: &Encoder,
    approx: &ApproxNet,
    data: &[LabeledInput],
    warmup: usize,
    reps: usize,
) -> anyhow::Result<(Vec<StageSeconds>, f64)> {
    let cfg = ConcreteConfig::default();
    let mut model = NativeConcrete::new(teacher, approx, cfg.theta0)?;
    let mut optim = AdamW::for_lengths(AdamWSettings::burn_defaults(0.01, Some(1.0)), model.named().iter().map(|(_, x)| x.len()));
    let reached = model.reached();
    let mut g = model.zeros_like();
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let (mut stages, mut loss) = (Vec::new(), f64::NAN);
    for rep in 0..warmup + reps {
        let t0 = Instant::now();
        let (tb, ab) = batches(&model, &refs)?;
        let data_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let fw = kernels::in_pool(|| concrete_forward(&model, &tb, &ab, &cfg, false, None))?;
        let fwd_s = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        kernels::in_pool(|| concrete_backward(&model, &tb, &ab, &fw, &cfg, None, &mut g));
        let bwd_s = t2.elapsed().as_secs_f64();
        let t3 = Instant::now();
        kernels::in_pool(|| optim.step_tensors(1e-5, model.named_mut(), g.named_mut(), Some(&reached)));
        let opt_s = t3.elapsed().as_secs_f64();
        loss = fw.loss;
        anyhow::ensure!(loss.is_finite(), "native concrete loss {loss} is not finite");
        if rep >= warmup {
            stages.push(StageSeconds { data: data_s, forward: fwd_s, backward: bwd_s, optimizer: opt_s, teacher: 0.0 });
        }
    }
    Ok((stages, loss))
}
