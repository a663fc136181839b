//! `sttabt ltp`: the LTP baseline (Kim et al. 2022; ALGORITHM.md section 6). Per layer l, a
//! learnable threshold θ_l on the mean attention a token receives; while training the mask is
//! soft, `σ((s_j - θ_l) / T)`, multiplied into the running mask (once pruned, always pruned; CLS
//! always kept), and the loss adds `λ · mean_l mean_b (Σ_j m^l_j / n)` (L1 of the masks). In the
//! last `hard_frac` of the steps the masks are hard (θ frozen) and the model is fine-tuned with
//! them. At inference the thresholds drive [`crate::planners::ltp::LtpPlanner`]. Checkpoints and
//! `resume` as in [`crate::train::resume`].

use std::path::{Path, PathBuf};

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{Module, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::model::config::EncoderConfig;
use crate::model::{EncodedInput, Encoder};
use crate::planners::ltp::LtpScore;
use crate::train::finetune::{cross_entropy, data_fingerprint, scalar, LabeledInput};
use crate::train::model::{to_vec, Batch, TrainBert};
use crate::train::resume::{epoch_order, module_fingerprint, run_key, Checkpointer};
use crate::train::{save_hf_checkpoint, Progress, Schedule};

/// Hyper-parameters of LTP training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LtpConfig {
    /// L1 weight λ on the masks: larger prunes more (sweep it for several retentions).
    pub lambda: f64,
    /// Sigmoid temperature T of the soft masks (in the units of `score`; see
    /// [`LtpScore::default_temperature`]).
    pub temperature: f64,
    /// The score the thresholds apply to; absent in runs saved before the choice existed
    /// (they used [`LtpScore::MeanReceived`]).
    #[serde(default)]
    pub score: LtpScore,
    pub steps: usize,
    pub batch_size: usize,
    /// Learning rate of the encoder.
    pub lr: f64,
    /// Learning rate of the thresholds.
    pub theta_lr: f64,
    pub weight_decay: f32,
    pub warmup_frac: f64,
    /// Fraction of the last steps trained with hard masks (θ frozen).
    pub hard_frac: f64,
    pub seed: u64,
    /// Save a resumable checkpoint every this many steps (and at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
}

fn default_checkpoint_every() -> usize {
    50
}

impl LtpConfig {
    /// Check the ranges: `steps`, `batch_size`, `checkpoint_every` >= 1; `lr`, `theta_lr`, `temperature` finite and
    /// > 0; `warmup_frac`, `hard_frac` in [0, 1]. [`train_ltp`] calls it before any work.
    pub fn validate(&self) -> Result<(), crate::train::InvalidConfig> {
        use crate::train::{check_count, check_fraction, check_positive};
        const C: &str = "LtpConfig";
        check_count(C, "steps", self.steps)?;
        check_count(C, "batch_size", self.batch_size)?;
        check_positive(C, "lr", self.lr)?;
        check_positive(C, "theta_lr", self.theta_lr)?;
        check_positive(C, "temperature", self.temperature)?;
        check_fraction(C, "warmup_frac", self.warmup_frac)?;
        check_fraction(C, "hard_frac", self.hard_frac)?;
        check_count(C, "checkpoint_every", self.checkpoint_every)
    }
}

impl Default for LtpConfig {
    fn default() -> Self {
        Self {
            lambda: 1.0,
            temperature: LtpScore::LengthScaled.default_temperature(),
            score: LtpScore::LengthScaled,
            steps: 200,
            batch_size: 16,
            lr: 2e-5,
            theta_lr: LtpScore::LengthScaled.default_theta_lr(),
            weight_decay: 0.01,
            warmup_frac: 0.05,
            hard_frac: 0.3,
            seed: 0,
            checkpoint_every: 50,
        }
    }
}

/// Encoder + thresholds as one burn module.
#[derive(Module, Debug)]
pub struct LtpTrain {
    pub teacher: TrainBert,
    /// θ / scale, so Adam moves θ at `theta_lr` while the encoder uses `lr`.
    pub phi: Param<Tensor<1>>,
}

/// Soft (or hard) LTP forward: CLS rows `[B, d]` and the per-layer running masks (`L - 1` of
/// `[B, T]`). The mask after layer l is `σ((score_j - θ_l) / temperature)` with `score` the
/// mean attention received from the kept queries, times their (soft) count for
/// [`LtpScore::LengthScaled`].
pub fn ltp_forward(
    model: &LtpTrain,
    c: &EncoderConfig,
    batch: &Batch,
    theta: Tensor<1>,
    (temperature, score): (f64, LtpScore),
    hard: bool,
) -> (Tensor<2>, Vec<Tensor<2>>) {
    let [b, t] = batch.dims();
    let big_l = c.num_layers;
    let h = c.num_heads as f64;
    let device = batch.valid.device();
    let mut cls = vec![0.0f32; b * t];
    for e in 0..b {
        cls[e * t] = 1.0;
    }
    let cls: Tensor<2> = Tensor::from_data(TensorData::new(cls, [b, t]), &device);
    let key_bias = TrainBert::key_bias(batch);
    let mut x = model.teacher.embed(c, batch);
    let mut m = batch.valid.clone();
    let mut masks = Vec::new();
    for l in 0..big_l {
        let key_mask = (l > 0).then(|| m.clone());
        let (y, _, p) = model.teacher.layer(c, l, x, key_bias.clone(), key_mask, None);
        x = y;
        if l + 1 < big_l {
            // mean attention each key receives from the kept queries, over heads
            let w = m.clone().reshape([b, 1, t, 1]);
            let recv = (p * w).sum_dim(2).sum_dim(1).reshape([b, t]);
            let s = match score {
                LtpScore::MeanReceived => recv / m.clone().sum_dim(1).mul_scalar(h),
                LtpScore::LengthScaled => recv.div_scalar(h),
            };
            let th = theta.clone().slice([l..l + 1]).reshape([1, 1]);
            let mut mask = activation::sigmoid((s - th).div_scalar(temperature));
            if hard {
                let hm = mask.clone().greater_elem(0.5).float();
                mask = mask.clone() + (hm - mask).detach();
            }
            mask = (mask * (cls.clone().neg().add_scalar(1.0)) + cls.clone()) * batch.valid.clone();
            m = m * mask;
            x = x * m.clone().reshape([b, t, 1]);
            masks.push(m.clone());
        }
    }
    let [_, _, d] = x.dims();
    (x.slice([0..b, 0..1, 0..d]).reshape([b, d]), masks)
}

/// Mean section-5 retention of the hard plans implied by running masks (`m > 0.5`): layer 1
/// reads every token, the masks give `I_2 .. I_L`.
fn hard_retention(masks: &[Tensor<2>], lengths: &[usize]) -> f64 {
    crate::train::masked_plan_retention(masks, lengths, 1, |v| v > 0.5)
}

/// What LTP training did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LtpReport {
    pub lambda: f64,
    pub temperature: f64,
    pub score: LtpScore,
    pub theta: Vec<f64>,
    pub steps: usize,
    pub seconds: f64,
    /// Hard retention over the first and last 10% of steps.
    pub start_retention: f64,
    pub end_retention: f64,
    pub output_dir: PathBuf,
}

/// A trained LTP model (fine-tuned teacher + thresholds).
#[derive(Debug, Clone)]
pub struct LtpModel {
    pub teacher: Encoder,
    pub theta: Vec<f64>,
    pub lambda: f64,
    /// What `theta` applies to (from the run's config; older runs: mean received attention).
    pub score: LtpScore,
}

impl LtpModel {
    /// Load `dir` (teacher/, ltp.json) written by [`train_ltp`].
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        super::check_run_dir(dir, "ltp.json")?;
        let path = dir.join("ltp.json");
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e} (train one with `sttabt ltp`)", path.display()))?,
        )?;
        let teacher = Encoder::load(&dir.join("teacher"))?;
        let theta: Vec<f64> = serde_json::from_value(meta["report"]["theta"].clone())?;
        crate::planners::ltp::check_thresholds(&theta, teacher.layers.len())
            .map_err(|e| anyhow::anyhow!("{}: report.theta: {e}", path.display()))?;
        let score = match meta["config"].get("score") {
            None => LtpScore::MeanReceived,
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("{}: config.score: {e}", path.display()))?,
        };
        Ok(Self { teacher, theta, lambda: meta["report"]["lambda"].as_f64().unwrap_or(0.0), score })
    }
}

/// Train LTP thresholds (and fine-tune the teacher) on `train`; saves `out_dir/teacher` and
/// `ltp.json`. Checkpoints ([`crate::train::resume`]) go to `out_dir/checkpoint` every
/// `cfg.checkpoint_every` steps and at the end; with `resume` the run continues exactly from the
/// last one, and one of another configuration, data set or teacher is an error naming the fields.
pub fn train_ltp(
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
    let start_t = std::time::Instant::now();
    let device = Device::flex().autodiff();
    let c = teacher.config.clone();
    let big_l = c.num_layers;
    anyhow::ensure!(big_l >= 2, "LTP needs at least 2 layers");
    let scale = cfg.theta_lr / cfg.lr;
    let mut model =
        LtpTrain { teacher: TrainBert::from_native(teacher, &device), phi: Param::from_tensor(Tensor::zeros([big_l - 1], &device)) };
    let schedule = Schedule::new(cfg.lr, cfg.steps, cfg.warmup_frac);
    let mut optim =
        AdamWConfig::new().with_weight_decay(cfg.weight_decay).with_grad_clipping(Some(GradientClippingConfig::Norm(1.0))).init();
    let hard_from = ((1.0 - cfg.hard_frac) * cfg.steps as f64).round() as usize;
    let per_epoch = train.len().div_ceil(cfg.batch_size).max(1);
    let ckpt = Checkpointer::new(
        out_dir.join("checkpoint"),
        "ltp",
        run_key(cfg, &["checkpoint_every"], &[("data", data_fingerprint(train)), ("start_weights", module_fingerprint(&model).into())]),
    );
    let mut step0 = 0;
    let (mut first, mut last): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    if resume {
        let restored;
        (model, optim, restored) = ckpt.load(model, optim)?;
        if let Some(r) = restored {
            step0 = r.step;
            (first, last) = serde_json::from_value(r.extra)?;
            progress.println(format!("resuming LTP training from step {step0}"));
        }
    }
    let bar = progress.bar(cfg.steps as u64, &format!("ltp λ={}", cfg.lambda));
    bar.set_position(step0 as u64);
    let window = (cfg.steps / 10).max(1);
    let mut order: Vec<usize> = Vec::new();
    for step in step0..cfg.steps {
        if step % per_epoch == 0 || step == step0 {
            order = epoch_order(train.len(), cfg.seed, 3000, step / per_epoch);
        }
        let b = step % per_epoch;
        let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())];
        let inputs: Vec<&EncodedInput> = idx.iter().map(|&i| &train[i].input).collect();
        let labels: Vec<i64> = idx.iter().map(|&i| train[i].label as i64).collect();
        let batch = Batch::from_inputs(&inputs, &device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [idx.len()]), &device);
        let hard = step >= hard_from;
        let mut theta = model.phi.val().mul_scalar(scale);
        if hard {
            theta = theta.detach();
        }
        let (cls, masks) = ltp_forward(&model, &c, &batch, theta, (cfg.temperature, cfg.score), hard);
        let logits = model.teacher.logits(&c, cls).ok_or_else(|| anyhow::anyhow!("no classifier"))?;
        let task = cross_entropy(logits, targets);
        let n = batch.valid.clone().sum_dim(1);
        let mut l1: Option<Tensor<1>> = None;
        for m in &masks {
            let v = (m.clone().sum_dim(1) / n.clone()).mean().reshape([1]);
            l1 = Some(match l1 {
                Some(x) => x + v,
                None => v,
            });
        }
        let l1 = l1.map(|x| x.div_scalar(masks.len() as f64)).unwrap_or_else(|| Tensor::zeros([1], &device));
        let loss = task.clone() + l1.clone().mul_scalar(cfg.lambda);
        let lv = scalar(&loss);
        anyhow::ensure!(lv.is_finite(), "LTP loss became {lv} at step {step}");
        let hr = hard_retention(&masks, &batch.lengths);
        if step < window {
            first.push(hr);
        }
        if step + window >= cfg.steps {
            last.push(hr);
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(schedule.lr(step), model, grads);
        bar.set_message(format!(
            "task {:.3} mask-mean {:.3} hard retention {hr:.3}{}",
            scalar(&task),
            scalar(&l1),
            if hard { " [hard]" } else { "" }
        ));
        bar.inc(1);
        if (step + 1) % cfg.checkpoint_every.max(1) == 0 || step + 1 == cfg.steps {
            ckpt.save(&model, &optim, step + 1, per_epoch, &schedule, serde_json::to_value((&first, &last))?)?;
        }
    }
    bar.finish_and_clear();
    let theta: Vec<f64> = to_vec(model.phi.val().mul_scalar(scale)).into_iter().map(|v| v as f64).collect();
    let native = model.teacher.to_native(&c)?;
    save_ltp_run(out_dir, &native, cfg, theta, start_t, (&first, &last), None)
}

/// The end of an LTP run, on either trainer: saves `out_dir/teacher` and `out_dir/ltp.json`
/// (`{"report", "config"}`, plus `"trainer"` when given) and returns the report. `windows` are
/// the hard retentions over the first and last 10% of the steps.
///
/// Errors: a file that cannot be written.
pub fn save_ltp_run(
    out_dir: &Path,
    teacher: &Encoder,
    cfg: &LtpConfig,
    theta: Vec<f64>,
    start_t: std::time::Instant,
    (first, last): (&[f64], &[f64]),
    trainer: Option<&str>,
) -> anyhow::Result<LtpReport> {
    save_hf_checkpoint(teacher, &out_dir.join("teacher"), None)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let report = LtpReport {
        lambda: cfg.lambda,
        temperature: cfg.temperature,
        score: cfg.score,
        theta,
        steps: cfg.steps,
        seconds: start_t.elapsed().as_secs_f64(),
        start_retention: mean(first),
        end_retention: mean(last),
        output_dir: out_dir.to_path_buf(),
    };
    let mut meta = serde_json::json!({"report": report, "config": cfg});
    if let Some(t) = trainer {
        meta["trainer"] = t.into();
    }
    crate::model::checkpoint::write_atomic(&out_dir.join("ltp.json"), serde_json::to_string_pretty(&meta)?.as_bytes())?;
    Ok(report)
}
