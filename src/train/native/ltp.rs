//! The LTP step (ALGORITHM.md section 6; issue 15 items 2-3) on the native trainer: the same
//! math as burn's [`ltp_forward`](crate::train::ltp::ltp_forward) + the loss of
//! [`train_ltp`](crate::train::ltp::train_ltp), forward and backward.
//!
//! Index mapping onto the native masks ([`TokenMasks`], section 4.3: `m[l]` = 1-based `m^{l+1}`
//! renormalises 0-based layer `l`'s attention over keys, `m[l + 1]` scales its output rows):
//!
//! - `m[0]` = 1 (every real token; burn runs layer 0 without a key mask; renormalising with ones
//!   changes its probabilities only by float rounding);
//! - `m[l + 1]` for `l = 0..L-2` = burn's running mask after layer `l` (its `masks[l]`): the
//!   previous running mask `m[l]` (layer `l`'s key mask) times `σ((s_j - θ_l)/T)` (hard: the
//!   straight-through `σ + (1[σ > 0.5] - σ)`, forward 0/1, gradient of σ), CLS forced to 1, where
//!   `s_j` is computed from layer `l`'s renormalised probabilities `P̃`: `recv_j = Σ_h Σ_i P̃_hij
//!   m[l]_i`, `s = recv / H` ([`LtpScore::LengthScaled`]) or `recv / (H Σ_i m[l]_i)`
//!   ([`LtpScore::MeanReceived`]). It scales layer `l`'s output and is layer `l + 1`'s key mask,
//!   exactly as burn's `x = x * m` then `layer(.., key_mask = m)`;
//! - `m[L]` = 1 (burn does not scale the last layer's output).
//!
//! The loss is `CE + λ · mean_{l < L-1} mean_b (Σ_j m[l+1]_bj / n_b)`. The backward is the
//! encoder's ([`backward_with`]) with an [`LtpHook`] adding, at each layer, the path
//! `m[l + 1]` -> `σ` -> `s` -> (`P̃`, `m[l]`), and collecting dL/dθ.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use crate::model::Encoder;
use crate::planners::ltp::LtpScore;
use crate::train::finetune::{data_fingerprint, LabeledInput};
use crate::train::ltp::{save_ltp_run, LtpConfig, LtpReport};
use crate::train::native::backward::{backward_with, ExtraGrads, HeadGrad, ProbsHook};
use crate::train::native::batch::PackedBatch;
use crate::train::native::checkpoint::Tensors;
use crate::train::native::driver::{run_steps, LoopSpec, Windows};
use crate::train::native::finetune::native_bert_fingerprint;
use crate::train::native::forward::{forward_with, Forward};
use crate::train::native::masks::TokenMasks;
use crate::train::native::params::NativeBert;
use crate::train::native::real::Real;
use crate::train::native::{batch_of, AdamW, AdamWSettings};
use crate::train::resume::{run_key, Checkpointer};
use crate::train::step_seconds::StageSeconds;
use crate::train::{Progress, Schedule};

/// The LTP settings of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LtpStep {
    /// Sigmoid temperature `T` (> 0).
    pub temperature: f64,
    pub score: LtpScore,
    /// L1 weight λ on the masks.
    pub lambda: f64,
    /// Hard (straight-through) masks; θ gets no gradient then.
    pub hard: bool,
}

/// What the backward of the LTP masks needs from the forward, per layer `l < L-1`, packed as
/// the batch (`[N]`).
#[derive(Debug, Clone, Default)]
pub struct LtpCache {
    /// `σ((s - θ_l)/T)` per layer.
    pub sig: Vec<Vec<f32>>,
    /// The mask factor that multiplied the running mask (1 on CLS; 0/1 in the hard phase).
    pub factor: Vec<Vec<f32>>,
    /// The scores `s` per layer.
    pub score: Vec<Vec<f32>>,
    /// Per layer and example, `Σ_i m[l]_i` (the kept count entering layer `l`).
    pub kept: Vec<Vec<f32>>,
}

/// Loss terms of one LTP step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LtpLoss {
    /// `task + λ · mask_mean`.
    pub loss: f64,
    /// Mean cross-entropy.
    pub task: f64,
    /// `mean_l mean_b (Σ_j m_j / n_b)` of the running masks.
    pub mask_mean: f64,
}

/// Per (example, head) block offsets into the probabilities of a layer (`[H, n_e, n_e]` per
/// example): the start of example `e`'s first head.
fn prob_offsets(batch: &PackedBatch, h: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch.b);
    let mut o = 0;
    for &n in &batch.lengths {
        out.push(o);
        o += h * n * n;
    }
    out
}

/// The LTP forward (see the module docs for the mapping onto burn's `ltp_forward`): `theta`
/// `[L - 1]` thresholds in the score's units. Returns the forward (with the masks it ran with,
/// `L + 1` of `[N]`), the cache for [`ltp_backward`] and the loss terms.
///
/// Errors: `theta` not of `L - 1` values, or a model with fewer than 2 layers.
pub fn ltp_forward_native(
    model: &NativeBert,
    batch: &PackedBatch,
    theta: &[f32],
    step: &LtpStep,
) -> Result<(Forward, LtpCache, LtpLoss), crate::error::ModelError> {
    let big_l = model.layers.len();
    if big_l < 2 || theta.len() != big_l - 1 {
        return Err(crate::error::ModelError::Input(format!(
            "{} LTP thresholds for a {big_l}-layer model; LTP needs >= 2 layers and L - 1 thresholds",
            theta.len()
        )));
    }
    let h = model.config.num_heads;
    let rows = batch.rows();
    let masks = TokenMasks { m: vec![vec![1.0f32; rows]; big_l + 1] };
    let offs = prob_offsets(batch, h);
    let mut cache = LtpCache::default();
    let mut hook = |l: usize, probs: &[f32], tm: &mut TokenMasks| {
        if l + 1 >= big_l {
            return;
        }
        let a = tm.m[l].clone();
        let (mut sig, mut factor, mut sc) = (vec![0.0f32; rows], vec![1.0f32; rows], vec![0.0f32; rows]);
        let mut kept = vec![0.0f32; batch.b];
        for e in 0..batch.b {
            let (n, r0) = (batch.lengths[e], batch.offsets[e]);
            let rs = r0..r0 + n;
            let out = LayerMaskOut { sig: &mut sig[rs.clone()], factor: &mut factor[rs.clone()], score: &mut sc[rs] };
            kept[e] = example_layer_mask(&probs[offs[e]..offs[e] + h * n * n], &a[r0..r0 + n], h, theta[l], step, out);
        }
        tm.m[l + 1] = a.iter().zip(&factor).map(|(x, f)| x * f).collect();
        cache.sig.push(sig);
        cache.factor.push(factor);
        cache.score.push(sc);
        cache.kept.push(kept);
    };
    let fw = forward_with(model, batch, Some(masks), Some(&mut hook));
    let tm = fw.masks.as_ref().expect("the LTP masks");
    let mut mask_mean = 0.0f64;
    for m in &tm.m[1..big_l] {
        let per: f64 = (0..batch.b)
            .map(|e| {
                let r0 = batch.offsets[e];
                m[r0..r0 + batch.lengths[e]].iter().map(|&v| v as f64).sum::<f64>() / batch.lengths[e] as f64
            })
            .sum();
        mask_mean += per / batch.b as f64;
    }
    mask_mean /= (big_l - 1) as f64;
    let loss = LtpLoss { loss: fw.loss + step.lambda * mask_mean, task: fw.loss, mask_mean };
    Ok((fw, cache, loss))
}

/// Where [`example_layer_mask`] writes one example's `[n]` outputs at one layer.
#[derive(Debug)]
pub struct LayerMaskOut<'a, F> {
    /// `σ((s - θ_l)/T)`.
    pub sig: &'a mut [F],
    /// The factor that multiplies the running mask: 1 on CLS (token 0), `σ` (soft) or the
    /// straight-through `σ + (1[σ > 0.5] - σ)` (hard) elsewhere.
    pub factor: &'a mut [F],
    /// The scores `s`.
    pub score: &'a mut [F],
}

/// One example's LTP mask factor at one layer (section 6), generic over the float type (`f32`
/// in training, `f64` in the finite-difference check of dL/dθ in `tests/native_ltp.rs`):
/// `probs` `[H, n, n]` are the layer's renormalised attention probabilities `P̃`, `a` `[n]` its
/// key mask (the running mask `m[l]`). `recv_j = Σ_h Σ_i P̃_hij a_i`; `s = recv / H`
/// ([`LtpScore::LengthScaled`]) or `recv / (H Σ_i a_i)` ([`LtpScore::MeanReceived`]);
/// `σ = sigmoid((s - θ_l)/T)`. Fills `out` and returns `Σ_i a_i`; the next running mask is
/// `a · factor`.
pub fn example_layer_mask<F: Real>(probs: &[F], a: &[F], heads: usize, theta_l: F, step: &LtpStep, out: LayerMaskOut<'_, F>) -> F {
    let n = a.len();
    let (zero, one) = (F::of(0.0), F::of(1.0));
    let temp = F::of(step.temperature);
    let mut recv = vec![zero; n];
    for blk in probs.chunks_exact(n * n).take(heads) {
        for (row, &ai) in blk.chunks_exact(n).zip(a) {
            for (r, &p) in recv.iter_mut().zip(row) {
                *r += p * ai;
            }
        }
    }
    let k: F = a.iter().copied().sum();
    let hf = F::of(heads as f64);
    let denom = match step.score {
        LtpScore::LengthScaled => hf,
        LtpScore::MeanReceived => k * hf,
    };
    for j in 0..n {
        let s = recv[j] / denom;
        let sg = one / (one + (-((s - theta_l) / temp)).exp());
        out.score[j] = s;
        out.sig[j] = sg;
        out.factor[j] = if j == 0 {
            one
        } else if step.hard {
            sg + ((if sg > F::of(0.5) { one } else { zero }) - sg)
        } else {
            sg
        };
    }
    k
}

/// What [`example_layer_mask_backward`] reads of one example's forward at one layer (`[n]`
/// each, as [`LayerMaskOut`]; `kept` = `Σ_i a_i`).
#[derive(Debug, Clone, Copy)]
pub struct LayerMaskState<'a, F> {
    pub sig: &'a [F],
    pub factor: &'a [F],
    pub score: &'a [F],
    pub kept: F,
}

/// Backward of [`example_layer_mask`] and of the product `m_next = a · factor` for one example
/// at one layer: `dm_next` `[n]` is dL/dm_next from the rest of the network, `dl1` the L1 term's
/// dL/dm_next per token (`λ / ((L-1) · B · n)`). Adds dL/da (through the product, the score's
/// normalisation and `recv`) into `dm_this` `[n]`, writes dL/dP̃ of this path into `dprobs`
/// `[H, n, n]`, and subtracts `Σ_j dL/dz_j` (= -dL/dθ_l's share) from `dtheta` in `f64`.
/// θ gets its gradient only in the soft phase; callers ignore `dtheta` in the hard one.
#[allow(clippy::too_many_arguments)] // one per tensor of the layer's forward and backward
pub fn example_layer_mask_backward<F: Real>(
    probs: &[F],
    a: &[F],
    heads: usize,
    fwd: &LayerMaskState<'_, F>,
    step: &LtpStep,
    dl1: F,
    dm_next: &[F],
    dm_this: &mut [F],
    dprobs: &mut [F],
    dtheta: &mut f64,
) {
    let n = a.len();
    let (zero, one) = (F::of(0.0), F::of(1.0));
    let temp = F::of(step.temperature);
    // dL/ds_j and dL/da_j from the product m_next = a · factor
    let mut ds = vec![zero; n];
    for j in 0..n {
        let g = dm_next[j] + dl1;
        dm_this[j] += g * fwd.factor[j];
        if j > 0 {
            let sg = fwd.sig[j];
            let dz = g * a[j] * sg * (one - sg) / temp;
            ds[j] = dz;
            *dtheta -= dz.to_f64();
        }
    }
    let hf = F::of(heads as f64);
    let denom = match step.score {
        LtpScore::LengthScaled => hf,
        LtpScore::MeanReceived => fwd.kept * hf,
    };
    if step.score == LtpScore::MeanReceived {
        // s = recv / (H Σ a): dL/da_i += -Σ_j ds_j s_j / Σ a
        let dk: F = -(0..n).map(|j| ds[j] * fwd.score[j]).sum::<F>() / fwd.kept;
        for v in dm_this.iter_mut() {
            *v += dk;
        }
    }
    let drecv: Vec<F> = ds.iter().map(|&v| v / denom).collect();
    // recv_j = Σ_h Σ_i P̃_hij a_i
    for (blk, dblk) in probs.chunks_exact(n * n).zip(dprobs.chunks_exact_mut(n * n)).take(heads) {
        for (i, (row, drow)) in blk.chunks_exact(n).zip(dblk.chunks_exact_mut(n)).enumerate() {
            let ai = a[i];
            let mut acc = zero;
            for j in 0..n {
                drow[j] = ai * drecv[j];
                acc += row[j] * drecv[j];
            }
            dm_this[i] += acc;
        }
    }
}

/// The backward of the LTP masks, called by [`backward_with`] layer by layer.
pub struct LtpHook<'a> {
    batch: &'a PackedBatch,
    fw: &'a Forward,
    cache: &'a LtpCache,
    step: LtpStep,
    heads: usize,
    layers: usize,
    /// dL/dθ_l (f64 sums).
    dtheta: Mutex<Vec<f64>>,
}

impl ProbsHook for LtpHook<'_> {
    fn probs_grad(&self, l: usize, dm_next: &[f32], dm_this: &mut [f32]) -> Option<Vec<f32>> {
        if l + 1 >= self.layers {
            return None;
        }
        let (batch, h) = (self.batch, self.heads);
        let tm = self.fw.masks.as_ref().expect("the LTP masks");
        let a = &tm.m[l];
        let probs = &self.fw.layers[l].probs;
        let offs = prob_offsets(batch, h);
        let (sig, factor, sc, kept) = (&self.cache.sig[l], &self.cache.factor[l], &self.cache.score[l], &self.cache.kept[l]);
        let l1 = self.step.lambda / ((self.layers - 1) as f64 * batch.b as f64);
        let mut dp = vec![0.0f32; probs.len()];
        let mut dth = 0.0f64;
        for e in 0..batch.b {
            let (n, r0) = (batch.lengths[e], batch.offsets[e]);
            let rs = r0..r0 + n;
            let fwd = LayerMaskState { sig: &sig[rs.clone()], factor: &factor[rs.clone()], score: &sc[rs.clone()], kept: kept[e] };
            example_layer_mask_backward(
                &probs[offs[e]..offs[e] + h * n * n],
                &a[rs.clone()],
                h,
                &fwd,
                &self.step,
                (l1 / n as f64) as f32,
                &dm_next[rs.clone()],
                &mut dm_this[rs],
                &mut dp[offs[e]..offs[e] + h * n * n],
                &mut dth,
            );
        }
        if !self.step.hard {
            self.dtheta.lock().expect("dtheta lock")[l] += dth;
        }
        Some(dp)
    }
}

/// Gradients of the LTP loss ([`ltp_forward_native`]) with respect to every parameter of
/// `model` (into `g`, shaped as `model`) and to θ (returned, `[L - 1]`; zeros in the hard phase,
/// where θ is frozen as in burn's `train_ltp`). Runs on the caller's pool.
pub fn ltp_backward(
    model: &NativeBert,
    batch: &PackedBatch,
    fw: &Forward,
    cache: &LtpCache,
    step: &LtpStep,
    g: &mut NativeBert,
) -> Vec<f32> {
    let layers = model.layers.len();
    let hook = LtpHook {
        batch,
        fw,
        cache,
        step: *step,
        heads: model.config.num_heads,
        layers,
        dtheta: Mutex::new(vec![0.0; layers.saturating_sub(1)]),
    };
    let extra = ExtraGrads { head: HeadGrad::CrossEntropy, mask_grads: true, probs: Some(&hook), ..ExtraGrads::default() };
    backward_with(model, batch, fw, g, &extra);
    hook.dtheta.into_inner().expect("dtheta lock").into_iter().map(|v| v as f32).collect()
}

/// The checkpoint job name of native LTP training (burn's is `ltp`; the two do not mix).
pub const JOB: &str = "ltp-native";

/// The trained tensors of LTP: the encoder and `φ = θ / scale` `[L - 1]` (as burn's
/// [`LtpTrain`](crate::train::ltp::LtpTrain): Adam moves θ at `theta_lr` while the encoder uses
/// `lr`), checkpointed under the name `ltp.phi` after the encoder's.
#[derive(Debug, Clone)]
pub struct NativeLtp {
    pub net: NativeBert,
    pub phi: Vec<f32>,
}

impl Tensors for NativeLtp {
    fn named(&self) -> Vec<(String, &[f32])> {
        let mut v = self.net.tensors();
        v.push(("ltp.phi".into(), &self.phi));
        v
    }
    fn named_mut(&mut self) -> Vec<&mut [f32]> {
        let mut v = self.net.tensors_mut();
        v.push(&mut self.phi);
        v
    }
}

/// Mean section-5 retention of the hard plans implied by the running masks of `fw`
/// (`m > 0.5`): layer 1 reads every token, `m[1..L]` give `I_2 .. I_L`, `O_L` = {CLS} (burn's
/// `hard_retention` in [`crate::train::ltp`]).
pub fn hard_retention(fw: &Forward, batch: &PackedBatch) -> f64 {
    let Some(tm) = fw.masks.as_ref() else { return 1.0 };
    let layers = tm.m.len() - 1;
    let mut total = 0.0;
    for (e, &n) in batch.lengths.iter().enumerate() {
        let r0 = batch.offsets[e];
        let kept: usize = tm.m[1..layers].iter().map(|m| m[r0..r0 + n].iter().filter(|&&v| v > 0.5).count()).sum();
        total += (n + kept + 1) as f64 / ((layers + 1) * n) as f64;
    }
    total / batch.b.max(1) as f64
}

/// One LTP step's loss and gradients: `g.net` the encoder's, `g.phi` dL/dφ = dL/dθ · `scale`
/// (zeros in the hard phase); returns the loss terms and the batch's hard retention. Runs on the
/// caller's pool.
///
/// Errors: bad input (see [`ltp_forward_native`]).
pub fn ltp_step_grads(
    model: &NativeLtp,
    batch: &PackedBatch,
    scale: f32,
    step: &LtpStep,
    g: &mut NativeLtp,
) -> Result<(LtpLoss, f64), crate::error::ModelError> {
    let theta: Vec<f32> = model.phi.iter().map(|p| p * scale).collect();
    let (fw, cache, loss) = ltp_forward_native(&model.net, batch, &theta, step)?;
    let dtheta = ltp_backward(&model.net, batch, &fw, &cache, step, &mut g.net);
    for (d, t) in g.phi.iter_mut().zip(dtheta) {
        *d = t * scale;
    }
    Ok((loss, hard_retention(&fw, batch)))
}

/// [`train_ltp`](crate::train::ltp::train_ltp) on the native trainer: the same batches, schedule,
/// AdamW (per-tensor clipping 1.0; θ frozen in the last `hard_frac` of the steps), checkpoint
/// points and outputs (`out_dir/teacher`, `ltp.json` with `"trainer": "native"`; checkpoints of
/// job [`JOB`] in `out_dir/checkpoint`). With `resume` the run continues exactly from the last
/// checkpoint (weights, φ, AdamW moments and step count, data and schedule position, the
/// retention windows); one of another configuration, data, teacher or of the burn trainer is an
/// error naming the fields.
///
/// Errors: an invalid `cfg`, no training examples, a teacher without a classifier, with fewer
/// than 2 layers or not covered by the native trainer (text BERT only), a non-finite loss, an
/// unusable checkpoint, or a file that cannot be written.
pub fn train_ltp_native(
    teacher: &Encoder,
    train: &[LabeledInput],
    cfg: &LtpConfig,
    out_dir: &Path,
    resume: bool,
    progress: &Progress,
) -> anyhow::Result<LtpReport> {
    cfg.validate()?;
    anyhow::ensure!(!train.is_empty(), "no training examples");
    anyhow::ensure!(teacher.classifier.is_some(), "the teacher has no classification head");
    let start_t = Instant::now();
    let net = NativeBert::from_model(teacher)?;
    let big_l = net.layers.len();
    anyhow::ensure!(big_l >= 2, "LTP needs at least 2 layers");
    let scale = (cfg.theta_lr / cfg.lr) as f32;
    let key =
        run_key(cfg, &["checkpoint_every"], &[("data", data_fingerprint(train)), ("start_weights", native_bert_fingerprint(&net).into())]);
    let mut model = NativeLtp { net, phi: vec![0.0; big_l - 1] };
    let schedule = Schedule::new(cfg.lr, cfg.steps, cfg.warmup_frac);
    let settings = AdamWSettings::burn_defaults(cfg.weight_decay, Some(1.0));
    let mut optim = AdamW::for_lengths(settings, model.named().iter().map(|(_, x)| x.len()));
    let hard_from = ((1.0 - cfg.hard_frac) * cfg.steps as f64).round() as usize;
    let ckpt = Checkpointer::new(out_dir.join("checkpoint"), JOB, key);
    let spec = LoopSpec {
        steps: cfg.steps,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        stream: 3000,
        checkpoint_every: cfg.checkpoint_every,
        label: format!("ltp λ={}", cfg.lambda),
        what: "native LTP training",
    };
    let mut grads = NativeLtp { net: model.net.zeros_like(), phi: vec![0.0; big_l - 1] };
    let active = vec![true; optim.moment_1.len()];
    let (first, last): Windows<f64> = run_steps(
        &spec,
        train.len(),
        &schedule,
        &mut model,
        &mut grads,
        &mut optim,
        active,
        &ckpt,
        resume,
        progress,
        |step, idx, model, grads, active| {
            let refs: Vec<&LabeledInput> = idx.iter().map(|&i| &train[i]).collect();
            let batch = batch_of(&model.net, &refs)?;
            let hard = step >= hard_from;
            let st = LtpStep { temperature: cfg.temperature, score: cfg.score, lambda: cfg.lambda, hard };
            let (loss, hr) = crate::kernels::in_pool(|| ltp_step_grads(model, &batch, scale, &st, grads))?;
            anyhow::ensure!(loss.loss.is_finite(), "LTP loss became {} at step {step}", loss.loss);
            // burn detaches θ in the hard phase: φ gets no gradient and AdamW leaves it alone
            *active.last_mut().expect("φ") = !hard;
            let message = format!(
                "task {:.3} mask-mean {:.3} hard retention {hr:.3}{}",
                loss.task,
                loss.mask_mean,
                if hard { " [hard]" } else { "" }
            );
            Ok((hr, message))
        },
    )?;
    let theta: Vec<f64> = model.phi.iter().map(|p| (p * scale) as f64).collect();
    save_ltp_run(out_dir, &model.net.to_model()?, cfg, theta, start_t, (&first, &last), Some("native"))
}

/// Time `warmup + reps` native LTP soft-mask steps of `teacher` on the batch `data` (the default
/// [`LtpConfig`]'s λ, temperature, score and θ scale, θ starting at 0; learning rate 1e-5, weight
/// decay 0.01, clipping 1.0, as burn's row in [`crate::train::bench`]); returns the measured
/// steps' stage times and the last loss.
///
/// Errors: a teacher the native trainer does not cover, with fewer than 2 layers, or bad input.
pub fn bench_steps(teacher: &Encoder, data: &[LabeledInput], warmup: usize, reps: usize) -> anyhow::Result<(Vec<StageSeconds>, f64)> {
    let lc = LtpConfig::default();
    let net = NativeBert::from_model(teacher)?;
    let big_l = net.layers.len();
    anyhow::ensure!(big_l >= 2, "LTP needs at least 2 layers");
    let scale = (lc.theta_lr / lc.lr) as f32;
    let mut model = NativeLtp { net, phi: vec![0.0; big_l - 1] };
    let mut optim = AdamW::for_lengths(AdamWSettings::burn_defaults(0.01, Some(1.0)), model.named().iter().map(|(_, x)| x.len()));
    let mut g = NativeLtp { net: model.net.zeros_like(), phi: vec![0.0; big_l - 1] };
    let st = LtpStep { temperature: lc.temperature, score: lc.score, lambda: lc.lambda, hard: false };
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let (mut stages, mut loss) = (Vec::new(), f64::NAN);
    for rep in 0..warmup + reps {
        let t0 = Instant::now();
        let batch = batch_of(&model.net, &refs)?;
        let data_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let theta: Vec<f32> = model.phi.iter().map(|p| p * scale).collect();
        let (fw, cache, l) = crate::kernels::in_pool(|| ltp_forward_native(&model.net, &batch, &theta, &st))?;
        let fwd_s = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let dtheta = crate::kernels::in_pool(|| ltp_backward(&model.net, &batch, &fw, &cache, &st, &mut g.net));
        for (d, t) in g.phi.iter_mut().zip(dtheta) {
            *d = t * scale;
        }
        let bwd_s = t2.elapsed().as_secs_f64();
        let t3 = Instant::now();
        crate::kernels::in_pool(|| optim.step_tensors(1e-5, model.named_mut(), g.named_mut(), None));
        let opt_s = t3.elapsed().as_secs_f64();
        loss = l.loss;
        anyhow::ensure!(loss.is_finite(), "native LTP loss {loss} is not finite");
        if rep >= warmup {
            stages.push(StageSeconds { data: data_s, forward: fwd_s, backward: bwd_s, optimizer: opt_s, teacher: 0.0 });
        }
    }
    Ok((stages, loss))
}
