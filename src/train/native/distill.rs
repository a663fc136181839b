//! ApproxNet distillation on the native trainer (ALGORITHM.md section 2; issue 15 item 2): the
//! loss of [`crate::train::distill::distill_loss`] (L_att + L_hid + L_emb + L_pred, weights 1,
//! padding excluded) and its gradients on the crate's kernels, and the loop of
//! [`crate::train::distill::distill`] (same config, data order, schedule, AdamW, checkpoint
//! points, KL target, outputs) around them.
//!
//! The ApproxNet's encoder is a [`NativeBert`] (forward: [`forward::forward`]); the frozen
//! teacher's targets (attention probabilities, hidden states, logits) come from the inference
//! executor without gradients, as on the burn path. The losses enter the backward pass
//! ([`backward::backward_with`]) as extra gradients:
//! - L_att on layer l's scores `S = QKᵀ/√d_h`: `(q·Σ_k t_k − t) / (N·H·L)` per real query row
//!   (q the ApproxNet's, t the teacher's attention row; `Σ_k t_k` is 1 up to rounding);
//! - L_emb / L_hid on the hidden states through the transfer maps `W_l` (`d/f -> d`):
//!   `2·w_l·(W_l h_l − h_l^T) / (N·d)` at the map's output, `w_0 = 1`, `w_l = 1/(L−1)`;
//! - L_pred on the logits: the MSE of the two softmaxes, back through the ApproxNet's softmax.
//!
//! A parameter the loss does not reach (without L_pred: the pooler, the classifier and the last
//! layer but for its query and key) gets no AdamW step, as burn skips parameters without a
//! gradient ([`NativeApprox::reached`]).

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::approx::{fidelity, ApproxNet};
use crate::error::ModelError;
use crate::model::checkpoint::TensorStore;
use crate::model::{EncodedInput, Encoder, Linear};
use crate::train::distill::{finish_run, progress_message, DistillConfig, DistillProgress, DistillReport, LossParts};
use crate::train::native::backward::{self, linear_backward, ExtraGrads, HeadGrad};
use crate::train::native::batch::PackedBatch;
use crate::train::native::checkpoint::{self, Tensors};
use crate::train::native::forward::{self, linear_forward, Forward};
use crate::train::native::params::{Dense, NativeBert};
use crate::train::native::teacher_cache::{self, mib, TeacherCache};
pub use crate::train::native::teacher_cache::{teacher_targets, TeacherTargets};
use crate::train::native::{AdamW, AdamWSettings};
use crate::train::resume::{epoch_order, inputs_fingerprint, native_fingerprint, run_key, Checkpointer, Fingerprint};
use crate::train::step_seconds::StageSeconds;
use crate::train::{Progress, Rate, Schedule};

/// The checkpoint job name of native distillation (burn's is `distill`; the two do not resume
/// each other's checkpoints).
pub const JOB: &str = "distill-native";

/// An ApproxNet and its transfer maps as trainable buffers (the same type holds gradients).
#[derive(Debug, Clone, PartialEq)]
pub struct NativeApprox {
    pub net: NativeBert,
    /// `L` maps `d/f -> d` (`[in, out]` weights): 0 for the embedding output, l for layer l.
    pub transfer: Vec<Dense>,
    /// The ApproxNet has no classifier: `net.classifier` is a zero one-class placeholder (the
    /// native model type needs one), never trained and not saved.
    pub placeholder_head: bool,
}

impl NativeApprox {
    /// From an ApproxNet (weights copied).
    ///
    /// Errors: an ApproxNet the native trainer does not cover (not a BERT text encoder).
    pub fn from_approx(a: &ApproxNet) -> Result<Self, ModelError> {
        let mut tensors = a.model.hf_tensors();
        let placeholder_head = a.model.classifier.is_none();
        if placeholder_head {
            let d = a.model.config.hidden_size;
            tensors.push(("classifier.weight".into(), vec![1, d], vec![0.0; d]));
            tensors.push(("classifier.bias".into(), vec![1], vec![0.0]));
        }
        let net = NativeBert::from_hf_tensors(&a.model.config, tensors)?;
        let transfer = a.transfer.iter().map(|l| Dense::from_hf(&l.weight_hf(), l.bias().to_vec(), l.d_in(), l.d_out())).collect();
        Ok(Self { net, transfer, placeholder_head })
    }

    /// Back to an ApproxNet with `like`'s metadata (weights copied).
    ///
    /// Errors: as `Encoder::from_store`.
    pub fn to_approx(&self, like: &ApproxNet) -> Result<ApproxNet, ModelError> {
        let tensors: Vec<_> =
            self.net.hf_tensors().into_iter().filter(|(n, _, _)| !(self.placeholder_head && n.starts_with("classifier."))).collect();
        let model = Encoder::from_store(self.net.config.clone(), &TensorStore::from_tensors(Path::new("<native approx>"), tensors))?;
        let transfer = self
            .transfer
            .iter()
            .map(|t| {
                let (w, b) = t.to_hf();
                Linear::from_hf(&w, b, t.d_in, t.d_out)
            })
            .collect();
        Ok(ApproxNet { model, transfer, meta: like.meta.clone() })
    }

    /// The same shapes, all zeros (gradient and moment buffers).
    pub fn zeros_like(&self) -> Self {
        Self {
            net: self.net.zeros_like(),
            transfer: self.transfer.iter().map(Dense::zeros_like).collect(),
            placeholder_head: self.placeholder_head,
        }
    }

    /// Every tensor: the encoder's ([`NativeBert::tensors`]), then `transfer.{l}.weight` /
    /// `transfer.{l}.bias` (`[in, out]` weights).
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        let mut out = self.net.tensors();
        for (l, t) in self.transfer.iter().enumerate() {
            out.push((format!("transfer.{l}.weight"), &t.w));
            out.push((format!("transfer.{l}.bias"), &t.b));
        }
        out
    }

    /// The tensors of [`Self::tensors`], in the same order, writable.
    pub fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        let mut out = self.net.tensors_mut();
        for t in &mut self.transfer {
            out.push(&mut t.w);
            out.push(&mut t.b);
        }
        out
    }

    /// Per tensor of [`Self::tensors`]: whether the distillation loss reaches it (burn gives
    /// the others no gradient and AdamW leaves them alone). Without L_pred (`use_pred` false)
    /// the pooler, the classifier and the last layer's value, output, FFN and LayerNorms are not
    /// reached (its scores are; its output is not distilled).
    pub fn reached(&self, use_pred: bool) -> Vec<bool> {
        let last = format!("encoder.layer.{}.", self.net.layers.len().saturating_sub(1));
        self.tensors()
            .iter()
            .map(|(name, _)| {
                use_pred
                    || !(name.starts_with("pooler.")
                        || name.starts_with("classifier.")
                        || (name.starts_with(&last) && !name.contains("attention.self.query") && !name.contains("attention.self.key")))
            })
            .collect()
    }

    /// Fingerprint of every tensor (order, lengths, values).
    pub fn fingerprint(&self) -> String {
        let mut fp = Fingerprint::default();
        for (_, x) in self.tensors() {
            fp.f32s(x);
        }
        fp.hex()
    }

    /// A packed batch of `inputs` for this ApproxNet (labels unused: all 0).
    ///
    /// Errors: as [`PackedBatch::new`].
    pub fn batch(&self, inputs: &[EncodedInput]) -> Result<PackedBatch, ModelError> {
        let refs: Vec<&EncodedInput> = inputs.iter().collect();
        PackedBatch::new(&refs, &vec![0; inputs.len()], &self.net.config, self.net.classifier.d_out)
    }
}

impl Tensors for NativeApprox {
    fn named(&self) -> Vec<(String, &[f32])> {
        self.tensors()
    }
    fn named_mut(&mut self) -> Vec<&mut [f32]> {
        self.tensors_mut()
    }
}

/// The distillation loss of `model` on `batch` against `targets` (its parts, as burn's
/// `distill_loss` reports them; the loss is their sum) and its gradient with respect to every
/// tensor, written into `g` (shaped as `model`, every value overwritten). Runs on the caller's
/// rayon pool.
///
/// Errors: targets of another shape (teacher layers, rows, classes) than `model` and `batch`.
pub fn loss_and_grads_into(
    model: &NativeApprox,
    batch: &PackedBatch,
    targets: &TeacherTargets,
    use_pred: bool,
    g: &mut NativeApprox,
) -> Result<LossParts, ModelError> {
    check_targets(model, batch, targets)?;
    let fw = forward::forward(&model.net, batch);
    loss_and_grads_from(model, batch, &fw, targets, use_pred, g)
}

fn check_targets(model: &NativeApprox, batch: &PackedBatch, targets: &TeacherTargets) -> Result<(), ModelError> {
    let c = &model.net.config;
    let (h, big_l, n_real) = (c.num_heads, c.num_layers, batch.rows());
    let probs_len: usize = batch.lengths.iter().map(|n| h * n * n).sum();
    let bad = |m: String| Err(ModelError::Input(format!("distillation targets do not fit the ApproxNet: {m}")));
    if targets.probs.len() != big_l || targets.probs.iter().any(|p| p.len() != probs_len) || targets.hidden.len() != model.transfer.len() {
        return bad(format!("{} attention layers / {} hidden states for {big_l} layers", targets.probs.len(), targets.hidden.len()));
    }
    for (l, (t, hs)) in model.transfer.iter().zip(&targets.hidden).enumerate() {
        if hs.len() != n_real * t.d_out {
            return bad(format!("hidden state {l} has {} values, expected {n_real} x {}", hs.len(), t.d_out));
        }
    }
    if let (Some(tl), false) = (&targets.logits, model.placeholder_head) {
        if tl.len() != batch.b * model.net.classifier.d_out {
            return bad(format!("{} teacher logits for {} examples x {} classes", tl.len(), batch.b, model.net.classifier.d_out));
        }
    }
    Ok(())
}

/// [`loss_and_grads_into`] after the ApproxNet's forward pass `fw` on `batch`, for timing the
/// two apart.
///
/// Errors: as [`loss_and_grads_into`].
pub fn loss_and_grads_from(
    model: &NativeApprox,
    batch: &PackedBatch,
    fw: &Forward,
    targets: &TeacherTargets,
    use_pred: bool,
    g: &mut NativeApprox,
) -> Result<LossParts, ModelError> {
    check_targets(model, batch, targets)?;
    let c = &model.net.config;
    let (h, big_l, n_real) = (c.num_heads, c.num_layers, batch.rows());
    // L_att: KL = Σ t ln t − Σ t ln q, averaged over real queries x heads x layers; its gradient
    // on the scores is (q Σt − t) / norm
    let norm = (n_real * h * big_l) as f64;
    let att: Vec<(f64, Vec<f32>)> = (0..big_l)
        .into_par_iter()
        .map(|l| {
            let (q, t) = (&fw.layers[l].probs, &targets.probs[l]);
            let mut ds = vec![0.0f32; q.len()];
            let mut cross = 0.0f64;
            let mut at = 0usize;
            for &n in &batch.lengths {
                for _ in 0..h * n {
                    let (qr, tr, dr) = (&q[at..at + n], &t[at..at + n], &mut ds[at..at + n]);
                    let tsum: f64 = tr.iter().map(|&v| v as f64).sum();
                    for j in 0..n {
                        let (qv, tv) = (qr[j] as f64, tr[j] as f64);
                        if tv != 0.0 {
                            cross += tv * qv.max(f64::from(f32::MIN_POSITIVE)).ln();
                        }
                        dr[j] = ((qv * tsum - tv) / norm) as f32;
                    }
                    at += n;
                }
            }
            (cross, ds)
        })
        .collect();
    let cross: f64 = att.iter().map(|(c, _)| c).sum();
    let scores: Vec<Option<Vec<f32>>> = att.into_iter().map(|(_, ds)| Some(ds)).collect();
    let mut parts = LossParts { att_kl: (targets.entropy_sum - cross) / norm, ..Default::default() };
    // L_emb (l = 0) and L_hid (mean over l = 1..L-1): MSE through the transfer maps
    let mut hidden: Vec<Option<Vec<f32>>> = Vec::with_capacity(big_l + 1);
    for (l, (t, target)) in model.transfer.iter().zip(&targets.hidden).enumerate() {
        let d_t = t.d_out;
        let denom = (n_real * d_t) as f64;
        let w = if l == 0 { 1.0 } else { 1.0 / (big_l - 1) as f64 };
        let mut y = linear_forward(&fw.hidden[l], t, n_real);
        let mut sq = 0.0f64;
        for (v, &tv) in y.iter_mut().zip(target) {
            let diff = *v - tv;
            sq += (diff as f64).powi(2);
            *v = (2.0 * w * diff as f64 / denom) as f32;
        }
        if l == 0 {
            parts.emb = sq / denom;
        } else {
            parts.hid += w * sq / denom;
        }
        hidden.push(linear_backward(&fw.hidden[l], &y, t, &mut g.transfer[l], n_real, true));
    }
    // L_pred: mean over [B, C] of (softmax(a) − softmax(t))², back through softmax(a)
    let mut dlogits = Vec::new();
    let pred = use_pred && !model.placeholder_head;
    if let (true, Some(tl)) = (pred, &targets.logits) {
        let (b, nl) = (batch.b, model.net.classifier.d_out);
        dlogits = vec![0.0f32; b * nl];
        let mut sq = 0.0f64;
        for e in 0..b {
            let (p, pt) = (softmax64(&fw.logits[e * nl..(e + 1) * nl]), softmax64(&tl[e * nl..(e + 1) * nl]));
            let gp: Vec<f64> = p.iter().zip(&pt).map(|(a, t)| 2.0 * (a - t) / (b * nl) as f64).collect();
            sq += p.iter().zip(&pt).map(|(a, t)| (a - t).powi(2)).sum::<f64>();
            let dot: f64 = p.iter().zip(&gp).map(|(a, g)| a * g).sum();
            for i in 0..nl {
                dlogits[e * nl + i] = (p[i] * (gp[i] - dot)) as f32;
            }
        }
        parts.pred = sq / (b * nl) as f64;
    }
    let head = if dlogits.is_empty() { HeadGrad::None } else { HeadGrad::Logits(&dlogits) };
    backward::backward_with(
        &model.net,
        batch,
        fw,
        &mut g.net,
        &ExtraGrads { head, hidden: &hidden, scores: &scores, mask_grads: false, probs: None },
    );
    Ok(parts)
}

fn softmax64(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// The distillation loss of `model` on `inputs` (teacher targets computed here) with its parts
/// and gradient, on the crate's rayon pool: the native counterpart of burn's `distill_loss` +
/// `backward` (compared in `tests/native_distill.rs`).
///
/// Errors: bad input, or an ApproxNet that does not fit the teacher.
pub fn loss_and_grads(
    model: &NativeApprox,
    teacher: &Encoder,
    inputs: &[EncodedInput],
    use_pred: bool,
) -> anyhow::Result<(f64, LossParts, NativeApprox)> {
    let targets = teacher_targets(teacher, inputs)?;
    let batch = model.batch(inputs)?;
    let mut g = model.zeros_like();
    let parts = crate::kernels::in_pool(|| loss_and_grads_into(model, &batch, &targets, use_pred, &mut g))?;
    Ok((parts.att_kl + parts.hid + parts.emb + parts.pred, parts, g))
}

/// [`crate::train::distill::distill`] on the native trainer: the same batches, learning rates,
/// AdamW updates (up to float rounding), checkpoint points, KL target and outputs
/// (`out_dir`: the ApproxNet, `distill.json`, `checkpoint/` of job [`JOB`]). With `resume` the
/// run continues exactly from the last checkpoint (weights, AdamW moments, data and schedule
/// position, KL curve); one of another configuration, data, teacher, starting ApproxNet or of
/// the burn trainer is an error naming the fields.
///
/// Errors: an invalid `cfg`, no training inputs, an ApproxNet of another teacher or one the
/// native trainer does not cover (BERT text encoders only), bad input, a non-finite loss, an
/// unusable checkpoint, or a file that cannot be written.
///
/// The teacher's targets are cached by example up to [`teacher_cache::default_teacher_cache_mb`] MiB
/// ([`distill_native_cached`] sets the budget; the cache never changes a number).
#[allow(clippy::too_many_arguments)]
pub fn distill_native(
    teacher: &Encoder,
    approx: ApproxNet,
    train: &[EncodedInput],
    heldout: &[EncodedInput],
    cfg: &DistillConfig,
    out_dir: &Path,
    resume: bool,
    progress: &Progress,
) -> anyhow::Result<(ApproxNet, DistillReport)> {
    distill_native_cached(teacher, approx, train, heldout, cfg, out_dir, resume, progress, mib(teacher_cache::default_teacher_cache_mb()))
}

/// [`distill_native`] with the teacher's targets cached by training-example index up to
/// `teacher_cache_bytes` bytes ([`TeacherCache`]; 0: computed every step; the CLI's
/// `--teacher-cache-mb N` passes [`mib`]`(N)`). The frozen teacher's
/// targets of an example are the same in every epoch, so a multi-epoch run computes each once
/// while the budget lasts; examples beyond it are computed each time they are drawn. The budget
/// changes no number: runs with any budget give bit-identical ApproxNets, and a resumed run
/// (whose cache starts empty and refills) stays exact; it is not part of the checkpoint's run key.
///
/// Errors: as [`distill_native`].
#[allow(clippy::too_many_arguments)]
pub fn distill_native_cached(
    teacher: &Encoder,
    approx: ApproxNet,
    train: &[EncodedInput],
    heldout: &[EncodedInput],
    cfg: &DistillConfig,
    out_dir: &Path,
    resume: bool,
    progress: &Progress,
    teacher_cache_bytes: usize,
) -> anyhow::Result<(ApproxNet, DistillReport)> {
    cfg.validate()?;
    anyhow::ensure!(!train.is_empty(), "no training inputs for distillation");
    approx.check_teacher(&teacher.config)?;
    let start = Instant::now();
    let before = fidelity(teacher, &approx.model, heldout)?;
    let mut model = NativeApprox::from_approx(&approx)?;
    let use_pred = cfg.use_pred && teacher.classifier.is_some() && approx.model.classifier.is_some();
    let reached = model.reached(use_pred);
    let schedule = Schedule::new(cfg.lr, cfg.steps, cfg.warmup_frac);
    let settings = AdamWSettings::burn_defaults(cfg.weight_decay, Some(cfg.grad_clip));
    let mut optim = AdamW::for_lengths(settings, model.tensors().iter().map(|(_, x)| x.len()));
    let per_epoch = train.len().div_ceil(cfg.batch_size).max(1);
    let key = run_key(
        cfg,
        &["checkpoint_every"],
        &[
            ("data", inputs_fingerprint(train.iter(), std::iter::empty())),
            ("teacher", native_fingerprint(teacher).into()),
            ("approx_init", model.fingerprint().into()),
        ],
    );
    let ckpt = Checkpointer::new(out_dir.join("checkpoint"), JOB, key);
    let mut step0 = 0usize;
    let mut prog = DistillProgress::default();
    if resume {
        if let Some(r) = checkpoint::load(&ckpt, &mut model, &mut optim)? {
            step0 = r.step;
            prog = serde_json::from_value(r.extra).unwrap_or_default();
            progress.println(format!("resuming native distillation from step {step0}"));
        }
    }
    let bar = progress.bar(cfg.steps as u64, "distill");
    bar.set_position(step0 as u64);
    let rate = Rate::start(step0);
    let mut grads = model.zeros_like();
    let mut cache = TeacherCache::new(train.len(), teacher_cache_bytes);
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
        let targets = cache.targets(teacher, train, idx)?;
        let batch = model.batch(&inputs)?;
        let parts = crate::kernels::in_pool(|| loss_and_grads_into(&model, &batch, &targets, use_pred, &mut grads))?;
        let lv = parts.att_kl + parts.hid + parts.emb + parts.pred;
        anyhow::ensure!(lv.is_finite(), "distillation loss became {lv} at step {step}; lower --lr");
        prog.last = parts;
        crate::kernels::in_pool(|| optim.step_tensors(schedule.lr(step), model.tensors_mut(), grads.tensors_mut(), Some(&reached)));
        done = step + 1;
        bar.set_message(progress_message(&parts, &rate, done, cfg.batch_size));
        bar.inc(1);
        let stop = prog.evaluate(cfg, done, || Ok(fidelity(teacher, &model.to_approx(&approx)?.model, heldout)?.attention_kl))?;
        if stop || done.is_multiple_of(cfg.checkpoint_every.max(1)) || done == cfg.steps {
            checkpoint::save(&ckpt, &model, &optim, done, per_epoch, &schedule, serde_json::to_value(&prog)?)?;
        }
    }
    bar.finish_and_clear();
    progress.println(format!(
        "teacher cache: {} of {} examples held ({:.1} of {:.0} MiB); {} targets read back, {} computed",
        cache.len(),
        train.len(),
        cache.used_bytes() as f64 / (1u64 << 20) as f64,
        teacher_cache_bytes as f64 / (1u64 << 20) as f64,
        cache.hits,
        cache.misses
    ));
    let result = model.to_approx(&approx)?;
    let report = finish_run(teacher, &result, heldout, cfg, out_dir, (done, before, start), prog, "native")?;
    Ok((result, report))
}

/// Time `warmup + reps` native distillation steps of `approx` against `teacher` on the batch
/// `data` (learning rate 1e-5, weight decay 0.01, clipping 1.0, L_pred on when both have a
/// classifier, as burn's rows of [`crate::train::bench`]); returns the measured steps' stage
/// times (`data` includes the teacher's targets, also given alone in `teacher`) and the last loss.
///
/// Errors: an ApproxNet the native trainer does not cover, or bad input.
pub fn bench_steps(
    teacher: &Encoder,
    approx: &ApproxNet,
    data: &[EncodedInput],
    warmup: usize,
    reps: usize,
) -> anyhow::Result<(Vec<StageSeconds>, f64)> {
    bench_steps_with(teacher, approx, data, warmup, reps, false)
}

/// [`bench_steps`] in the cold (`cached` false: the teacher runs every step, as in a run's
/// first epoch) or the cached steady state (`cached` true: the batch's targets are in a
/// [`TeacherCache`], filled before the warm-up, so `teacher` is the time to read them back, as
/// in every later epoch of a run whose cache holds the data).
///
/// Errors: as [`bench_steps`].
pub fn bench_steps_with(
    teacher: &Encoder,
    approx: &ApproxNet,
    data: &[EncodedInput],
    warmup: usize,
    reps: usize,
    cached: bool,
) -> anyhow::Result<(Vec<StageSeconds>, f64)> {
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut cache = TeacherCache::new(data.len(), if cached { usize::MAX } else { 0 });
    if cached {
        cache.targets(teacher, data, &idx)?;
    }
    let mut model = NativeApprox::from_approx(approx)?;
    let use_pred = teacher.classifier.is_some() && approx.model.classifier.is_some();
    let reached = model.reached(use_pred);
    let mut optim = AdamW::for_lengths(AdamWSettings::burn_defaults(0.01, Some(1.0)), model.tensors().iter().map(|(_, x)| x.len()));
    let mut g = model.zeros_like();
    let (mut stages, mut loss) = (Vec::new(), f64::NAN);
    for rep in 0..warmup + reps {
        let t0 = Instant::now();
        let targets = cache.targets(teacher, data, &idx)?;
        let teacher_s = t0.elapsed().as_secs_f64();
        let batch = model.batch(data)?;
        let data_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let fw = crate::kernels::in_pool(|| forward::forward(&model.net, &batch));
        let fwd_s = t1.elapsed().as_secs_f64();
        // the losses and their gradients count as backward (they enter the backward pass)
        let t3 = Instant::now();
        let parts = crate::kernels::in_pool(|| loss_and_grads_from(&model, &batch, &fw, &targets, use_pred, &mut g))?;
        let bwd_s = t3.elapsed().as_secs_f64();
        let t2 = Instant::now();
        crate::kernels::in_pool(|| optim.step_tensors(1e-5, model.tensors_mut(), g.tensors_mut(), Some(&reached)));
        let opt_s = t2.elapsed().as_secs_f64();
        loss = parts.att_kl + parts.hid + parts.emb + parts.pred;
        anyhow::ensure!(loss.is_finite(), "native distillation loss {loss} is not finite");
        if rep >= warmup {
            stages.push(StageSeconds { data: data_s, forward: fwd_s, backward: bwd_s, optimizer: opt_s, teacher: teacher_s });
        }
    }
    Ok((stages, loss))
}
