//! `sttabt finetune`: fine-tune a checkpoint into a sequence classifier (AdamW, linear warm-up
//! then linear decay, dynamic padding per batch, seeded shuffling, gradient clipping), evaluate on
//! dev each epoch with the fast native executor, keep the best, save in the HF layout.
//! Checkpoints are written atomically every `checkpoint_every` steps and after each epoch; `resume`
//! continues exactly from the last one (see [`crate::train::resume`]).

use std::path::{Path, PathBuf};

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::data::split::SplitMix64;
use crate::exec::RunOptions;
use crate::model::{EncodedInput, Encoder, Linear};
use crate::train::model::{normal, Batch, TrainBert};
use crate::train::resume::{epoch_order, inputs_fingerprint, module_fingerprint, run_key, Checkpointer};
use crate::train::{save_hf_checkpoint, Progress, Schedule};

/// Hyper-parameters of fine-tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of steps spent warming up linearly from 0.
    pub warmup_frac: f64,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value.
    pub grad_clip: f32,
    pub seed: u64,
    /// Save a resumable checkpoint every this many steps.
    pub checkpoint_every: usize,
}

impl FinetuneConfig {
    /// Check the ranges: `epochs`, `batch_size`, `checkpoint_every` >= 1; `lr` finite and > 0;
    /// `warmup_frac` in [0, 1]. [`finetune`] calls it before any work.
    pub fn validate(&self) -> Result<(), crate::train::InvalidConfig> {
        use crate::train::{check_count, check_fraction, check_positive};
        const C: &str = "FinetuneConfig";
        check_count(C, "epochs", self.epochs)?;
        check_count(C, "batch_size", self.batch_size)?;
        check_positive(C, "lr", self.lr)?;
        check_fraction(C, "warmup_frac", self.warmup_frac)?;
        check_count(C, "checkpoint_every", self.checkpoint_every)
    }
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self { epochs: 1, batch_size: 32, lr: 1e-4, warmup_frac: 0.1, weight_decay: 0.01, grad_clip: 1.0, seed: 0, checkpoint_every: 50 }
    }
}

/// One labelled, tokenised example.
#[derive(Debug, Clone)]
pub struct LabeledInput {
    pub input: EncodedInput,
    pub label: usize,
}

/// What fine-tuning did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneReport {
    pub steps: usize,
    pub epochs: usize,
    /// Dev accuracy after each epoch.
    pub dev_accuracy: Vec<f64>,
    pub best_dev_accuracy: f64,
    pub best_epoch: usize,
    pub seconds: f64,
    pub output_dir: PathBuf,
}

/// Fine-tuning progress kept in a checkpoint beside the weights and the optimiser state.
/// Also the native trainer's ([`crate::train::native::finetune_native`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResumeState {
    pub(crate) dev_accuracy: Vec<f64>,
    pub(crate) best_dev_accuracy: f64,
    pub(crate) best_epoch: usize,
    /// The progress bar's smoothed loss.
    pub(crate) loss_ema: Option<f64>,
}

/// Accuracy in [0, 1] of the native model on labelled inputs (dense, `batch` examples per run;
/// 0 for no inputs). Errors: bad input; the model has no classification head.
pub fn accuracy(model: &Encoder, data: &[LabeledInput], batch: usize) -> Result<f64, crate::ModelError> {
    accuracy_counted(model, data, batch, &ProgressBar::hidden())
}

/// [`accuracy`], advancing `bar` by each batch's example count as it goes (by `data.len()` in
/// all). The same batches, so the same value.
pub fn accuracy_counted(model: &Encoder, data: &[LabeledInput], batch: usize, bar: &ProgressBar) -> Result<f64, crate::ModelError> {
    let mut correct = 0usize;
    for chunk in data.chunks(batch.max(1)) {
        let inputs: Vec<EncodedInput> = chunk.iter().map(|d| d.input.clone()).collect();
        let logits = dense_logits(model, &inputs)?;
        correct += logits.iter().zip(chunk).filter(|(l, d)| argmax(l) == d.label).count();
        bar.inc(chunk.len() as u64);
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

/// The training loops' per-epoch dev accuracy: [`accuracy`] (batches of 64) under a
/// "dev eval" bar of `progress` (none when quiet), cleared when done.
pub fn dev_accuracy(model: &Encoder, dev: &[LabeledInput], progress: &Progress) -> Result<f64, crate::ModelError> {
    let bar = progress.bar(dev.len() as u64, "dev eval");
    let acc = accuracy_counted(model, dev, 64, &bar);
    bar.finish_and_clear();
    acc
}

/// Argmax predictions of the native model (dense plan, only CLS needed at the top).
pub fn predict<'a>(model: &Encoder, data: impl Iterator<Item = &'a EncodedInput>, batch: usize) -> Result<Vec<usize>, crate::ModelError> {
    let inputs: Vec<EncodedInput> = data.cloned().collect();
    let mut out = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(batch.max(1)) {
        out.extend(dense_logits(model, chunk)?.iter().map(|l| argmax(l)));
    }
    Ok(out)
}

/// Logits of the native model for `inputs` (one batch), every input token at every layer and
/// only the head's tokens (`O_L`: CLS, and DeiT's distillation token) at the top: the frozen
/// teacher's logits for distillation, the predictions of [`predict`]. `[batch][labels]`.
///
/// Errors: bad input; the model has no classification head.
pub fn dense_logits(model: &Encoder, inputs: &[EncodedInput]) -> Result<Vec<Vec<f32>>, crate::ModelError> {
    let top = model.top_tokens();
    let plans: Vec<_> = inputs.iter().map(|x| crate::plan::TokenPlan::dense_top(x.len(), model.layers.len(), &top)).collect();
    model.run(inputs, &plans, RunOptions::default())?.iter().map(|r| model.logits_of(r)).collect()
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Give `base` a fresh classification head for `labels` (normal(0, 0.02), zero bias), deterministic from `seed`;
/// DistilBERT and RoBERTa bases without one also get the dense layer before it (`pre_classifier`,
/// `classifier.dense`).
pub fn with_new_head(mut base: Encoder, labels: Vec<String>, seed: u64) -> Encoder {
    let d = base.config.hidden_size;
    let n = labels.len();
    let mut rng = SplitMix64::new(seed ^ 0x5EED_C1A5);
    let w: Vec<f32> = (0..n * d).map(|_| normal(&mut rng) * 0.02).collect();
    base.classifier = Some(Linear::from_hf(&w, vec![0.0; n], d, n));
    if base.pooler.is_none() && base.config.has_classifier_dense() {
        // DistilBERT's `pre_classifier` / RoBERTa's `classifier.dense`: part of the head, new
        // with it (BERT's optional pooler stays absent when the base has none)
        let p: Vec<f32> = (0..d * d).map(|_| normal(&mut rng) * 0.02).collect();
        base.pooler = Some(Linear::from_hf(&p, vec![0.0; d], d, d));
    }
    base.config.labels = labels;
    base
}

/// Fine-tune `base` (which must already have a classification head, see [`with_new_head`]) on
/// `train`, evaluating on `dev` after each epoch; the best model is saved to `out_dir` in the HF
/// layout (config.json with id2label, model.safetensors, tokenizer files copied from `tokenizer_dir`).
///
/// Checkpoints ([`crate::train::resume`]) go to `out_dir/checkpoint` every
/// `cfg.checkpoint_every` steps and after each epoch. With `resume`, the run continues exactly
/// where the last one stopped (weights, AdamW moments, data order and schedule position), so the
/// result is bit-identical to an uninterrupted run; a checkpoint of another configuration, data
/// set or base model is an error naming the differing fields.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    base: Encoder,
    train: &[LabeledInput],
    dev: &[LabeledInput],
    cfg: &FinetuneConfig,
    out_dir: &Path,
    tokenizer_dir: &Path,
    resume: bool,
    progress: &Progress,
) -> anyhow::Result<FinetuneReport> {
    cfg.validate()?;
    anyhow::ensure!(!train.is_empty(), "no training examples");
    anyhow::ensure!(cfg.batch_size > 0, "batch size must be at least 1");
    anyhow::ensure!(base.classifier.is_some(), "the model has no classification head");
    let start = std::time::Instant::now();
    let config = base.config.clone();
    let device = Device::flex().autodiff();
    let mut model = TrainBert::from_native(&base, &device);
    drop(base);
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let schedule = Schedule::new(cfg.lr, total_steps, cfg.warmup_frac);
    let mut optim =
        AdamWConfig::new().with_weight_decay(cfg.weight_decay).with_grad_clipping(Some(GradientClippingConfig::Norm(cfg.grad_clip))).init();
    let ckpt = Checkpointer::new(
        out_dir.join("checkpoint"),
        "finetune",
        run_key(cfg, &["checkpoint_every"], &[("data", data_fingerprint(train)), ("base_model", module_fingerprint(&model).into())]),
    );
    let mut state = ResumeState { dev_accuracy: Vec::new(), best_dev_accuracy: -1.0, best_epoch: 0, loss_ema: None };
    let mut step = 0;
    if resume {
        let restored;
        (model, optim, restored) = ckpt.load(model, optim)?;
        if let Some(r) = restored {
            step = r.step;
            state = serde_json::from_value(r.extra)?;
            progress.println(format!("resuming fine-tuning from step {step}"));
        }
    }
    let bar = progress.bar(total_steps as u64, "fine-tune");
    bar.set_position(step as u64);
    let mut loss_ema = state.loss_ema.unwrap_or(f64::NAN);
    let rate = crate::train::Rate::start(step);
    // epochs evaluated so far; a checkpoint written at the end of an epoch but before its
    // evaluation resumes with that evaluation
    for epoch in state.dev_accuracy.len()..cfg.epochs {
        let order = epoch_order(train.len(), cfg.seed, 0, epoch);
        for b in step.saturating_sub(epoch * steps_per_epoch)..steps_per_epoch {
            let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())];
            let inputs: Vec<&EncodedInput> = idx.iter().map(|&i| &train[i].input).collect();
            let labels: Vec<i64> = idx.iter().map(|&i| train[i].label as i64).collect();
            let batch = Batch::from_inputs(&inputs, &device);
            let out = model.forward(&config, &batch, None);
            let logits = model.head_logits(&config, out.last()).ok_or_else(|| anyhow::anyhow!("no classifier"))?;
            let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [idx.len()]), &device);
            let loss = cross_entropy(logits, targets);
            let lv = scalar(&loss);
            anyhow::ensure!(lv.is_finite(), "loss became {lv} at step {step}; lower --lr");
            loss_ema = if loss_ema.is_nan() { lv } else { 0.95 * loss_ema + 0.05 * lv };
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(schedule.lr(step), model, grads);
            step += 1;
            bar.set_message(format!("epoch {} loss {loss_ema:.4} {}", epoch + 1, rate.examples_per_s(step, cfg.batch_size)));
            bar.inc(1);
            // the end of an epoch has its own checkpoint, after the evaluation
            if step % cfg.checkpoint_every.max(1) == 0 && b + 1 < steps_per_epoch {
                state.loss_ema = Some(loss_ema);
                ckpt.save(&model, &optim, step, steps_per_epoch, &schedule, serde_json::to_value(&state)?)?;
            }
        }
        let native = model.to_native(&config)?;
        let acc = bar.suspend(|| dev_accuracy(&native, dev, progress))?;
        progress.println(format!("epoch {}: dev accuracy {:.2}%", epoch + 1, acc * 100.0));
        state.dev_accuracy.push(acc);
        if acc > state.best_dev_accuracy {
            state.best_dev_accuracy = acc;
            state.best_epoch = epoch + 1;
            save_hf_checkpoint(&native, out_dir, Some(tokenizer_dir))?;
        }
        state.loss_ema = Some(loss_ema);
        ckpt.save(&model, &optim, step, steps_per_epoch, &schedule, serde_json::to_value(&state)?)?;
    }
    bar.finish_and_clear();
    Ok(FinetuneReport {
        steps: step,
        epochs: cfg.epochs,
        dev_accuracy: state.dev_accuracy.clone(),
        best_dev_accuracy: state.best_dev_accuracy,
        best_epoch: state.best_epoch,
        seconds: start.elapsed().as_secs_f64(),
        output_dir: out_dir.to_path_buf(),
    })
}

/// Fingerprint of labelled training data (token ids, types, patches and labels, in order).
pub fn data_fingerprint(data: &[LabeledInput]) -> serde_json::Value {
    inputs_fingerprint(data.iter().map(|x| &x.input), data.iter().map(|x| x.label))
}

/// Mean cross-entropy of `logits` `[B, C]` against class ids `[B]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let logp = burn::tensor::activation::log_softmax(logits, 1);
    let picked = logp.gather(1, targets.reshape([b, 1]));
    picked.mean().neg()
}

/// Read a 1-element tensor as f64.
pub fn scalar<const D: usize>(t: &Tensor<D>) -> f64 {
    t.clone().into_data().convert::<f32>().try_into_vec::<f32>().ok().and_then(|v| v.first().copied()).unwrap_or(f32::NAN) as f64
}
