//! Fine-tuning on the native trainer: the loop of [`crate::train::finetune::finetune`] (same
//! config and report, same data order, schedule, AdamW, checkpoint points, per-epoch dev
//! evaluation on the native executor, best model saved in the HF layout) with the
//! forward/backward of [`crate::train::native`] instead of burn, and exact resume
//! ([`crate::train::native::checkpoint`]).

use std::path::Path;

use crate::model::Encoder;
use crate::train::finetune::{data_fingerprint, dev_accuracy, FinetuneConfig, FinetuneReport, LabeledInput, ResumeState};
use crate::train::native::{backward, batch_of, checkpoint, forward, AdamW, AdamWSettings, NativeBert};
use crate::train::resume::{epoch_order, run_key, Checkpointer, Fingerprint};
use crate::train::{save_hf_checkpoint, Progress, Rate, Schedule};

/// The checkpoint job name of the native fine-tuning trainer.
pub const JOB: &str = "finetune-native";

/// Fingerprint of a native model's tensors (names' order, values and lengths).
pub fn native_bert_fingerprint(model: &NativeBert) -> String {
    let mut fp = Fingerprint::default();
    for (_, x) in model.tensors() {
        fp.f32s(x);
    }
    fp.hex()
}

/// Fine-tune `base` (with a classification head, see
/// [`with_new_head`](crate::train::finetune::with_new_head)) on `train` with the native trainer,
/// evaluating on `dev` after each epoch and saving the best model to `out_dir` (config.json,
/// model.safetensors, tokenizer files from `tokenizer_dir`). Same batches, learning rates and
/// AdamW updates as the burn path for the same `cfg` (up to float rounding; see
/// `tests/native_grad.rs`).
///
/// Checkpoints go to `out_dir/checkpoint` every `cfg.checkpoint_every` steps and after each
/// epoch, as on the burn path; with `resume` the run continues exactly from the last one
/// (weights, AdamW moments and step count, data order and schedule position), bit-identical to
/// an uninterrupted run. A checkpoint of another configuration, data set, base model or of the
/// burn trainer is an error naming the differing fields.
///
/// Errors: an invalid `cfg`, no training data, a model the native trainer does not cover
/// (vision, pre-LayerNorm, no classifier), bad input, a non-finite loss, an unusable checkpoint,
/// or a file that cannot be written.
#[allow(clippy::too_many_arguments)]
pub fn finetune_native(
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
    anyhow::ensure!(base.classifier.is_some(), "the model has no classification head");
    let start = std::time::Instant::now();
    let mut model = NativeBert::from_model(&base)?;
    drop(base);
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let schedule = Schedule::new(cfg.lr, total_steps, cfg.warmup_frac);
    let mut optim = AdamW::new(AdamWSettings::burn_defaults(cfg.weight_decay, Some(cfg.grad_clip)), &model);
    let ckpt = Checkpointer::new(
        out_dir.join("checkpoint"),
        JOB,
        run_key(cfg, &["checkpoint_every"], &[("data", data_fingerprint(train)), ("base_model", native_bert_fingerprint(&model).into())]),
    );
    let mut state = ResumeState { dev_accuracy: Vec::new(), best_dev_accuracy: -1.0, best_epoch: 0, loss_ema: None };
    let mut step = 0usize;
    if resume {
        if let Some(r) = checkpoint::load(&ckpt, &mut model, &mut optim)? {
            step = r.step;
            state = serde_json::from_value(r.extra)?;
            progress.println(format!("resuming native fine-tuning from step {step}"));
        }
    }
    let bar = progress.bar(total_steps as u64, "fine-tune");
    bar.set_position(step as u64);
    let mut loss_ema = state.loss_ema.unwrap_or(f64::NAN);
    let rate = Rate::start(step);
    let mut grads = model.zeros_like();
    // epochs evaluated so far; a checkpoint written at the end of an epoch but before its
    // evaluation resumes with that evaluation
    for epoch in state.dev_accuracy.len()..cfg.epochs {
        let order = epoch_order(train.len(), cfg.seed, 0, epoch);
        for b in step.saturating_sub(epoch * steps_per_epoch)..steps_per_epoch {
            let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())];
            let data: Vec<&LabeledInput> = idx.iter().map(|&i| &train[i]).collect();
            let batch = batch_of(&model, &data)?;
            let lv = crate::kernels::in_pool(|| {
                let fw = forward::forward_cls_last(&model, &batch, None);
                backward::backward_into(&model, &batch, &fw, &mut grads);
                fw.loss
            });
            anyhow::ensure!(lv.is_finite(), "loss became {lv} at step {step}; lower --lr");
            loss_ema = if loss_ema.is_nan() { lv } else { 0.95 * loss_ema + 0.05 * lv };
            crate::kernels::in_pool(|| optim.step(schedule.lr(step), &mut model, &mut grads));
            step += 1;
            bar.set_message(format!("epoch {} loss {loss_ema:.4} {}", epoch + 1, rate.examples_per_s(step, cfg.batch_size)));
            bar.inc(1);
            // the end of an epoch has its own checkpoint, after the evaluation
            if step.is_multiple_of(cfg.checkpoint_every.max(1)) && b + 1 < steps_per_epoch {
                state.loss_ema = Some(loss_ema);
                checkpoint::save(&ckpt, &model, &optim, step, steps_per_epoch, &schedule, serde_json::to_value(&state)?)?;
            }
        }
        let native = model.to_model()?;
        let acc = bar.suspend(|| dev_accuracy(&native, dev, progress))?;
        progress.println(format!("epoch {}: dev accuracy {:.2}%", epoch + 1, acc * 100.0));
        state.dev_accuracy.push(acc);
        if acc > state.best_dev_accuracy {
            state.best_dev_accuracy = acc;
            state.best_epoch = epoch + 1;
            save_hf_checkpoint(&native, out_dir, Some(tokenizer_dir))?;
        }
        state.loss_ema = Some(loss_ema);
        checkpoint::save(&ckpt, &model, &optim, step, steps_per_epoch, &schedule, serde_json::to_value(&state)?)?;
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
