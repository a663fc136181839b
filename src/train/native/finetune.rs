//! Fine-tuning on the native trainer: the loop of [`crate::train::finetune::finetune`] (same
//! config and report, same data order, schedule, AdamW, per-epoch dev evaluation on the native
//! executor, best model saved in the HF layout) with the forward/backward of
//! [`crate::train::native`] instead of burn. No resumable checkpoints yet.

use std::path::Path;

use crate::model::Encoder;
use crate::train::finetune::{accuracy, FinetuneConfig, FinetuneReport, LabeledInput};
use crate::train::native::{backward, batch_of, forward, AdamW, AdamWSettings, NativeBert};
use crate::train::resume::epoch_order;
use crate::train::{save_hf_checkpoint, Progress, Schedule};

/// Fine-tune `base` (with a classification head, see
/// [`with_new_head`](crate::train::finetune::with_new_head)) on `train` with the native trainer,
/// evaluating on `dev` after each epoch and saving the best model to `out_dir` (config.json,
/// model.safetensors, tokenizer files from `tokenizer_dir`). Same batches, learning rates and
/// AdamW updates as the burn path for the same `cfg` (up to float rounding; see
/// `tests/native_grad.rs`).
///
/// Errors: an invalid `cfg`, no training data, a model the native trainer does not cover
/// (vision, pre-LayerNorm, no classifier), bad input, a non-finite loss, `resume` (the native
/// trainer writes no resumable checkpoints yet), or a file that cannot be written.
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
    anyhow::ensure!(
        !resume,
        "the native trainer cannot resume yet (it writes no checkpoints); run without --resume or use the burn trainer"
    );
    anyhow::ensure!(base.classifier.is_some(), "the model has no classification head");
    let start = std::time::Instant::now();
    let mut model = NativeBert::from_model(&base)?;
    drop(base);
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let schedule = Schedule::new(cfg.lr, total_steps, cfg.warmup_frac);
    let mut optim = AdamW::new(AdamWSettings::burn_defaults(cfg.weight_decay, Some(cfg.grad_clip)), &model);
    let bar = progress.bar(total_steps as u64, "fine-tune");
    let (mut dev_accuracy, mut best, mut best_epoch) = (Vec::new(), -1.0f64, 0usize);
    let mut loss_ema = f64::NAN;
    let mut step = 0usize;
    for epoch in 0..cfg.epochs {
        let order = epoch_order(train.len(), cfg.seed, 0, epoch);
        for b in 0..steps_per_epoch {
            let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())];
            let data: Vec<&LabeledInput> = idx.iter().map(|&i| &train[i]).collect();
            let batch = batch_of(&model, &data)?;
            let (lv, mut grads) = crate::kernels::in_pool(|| {
                let fw = forward::forward(&model, &batch);
                let g = backward::backward(&model, &batch, &fw);
                (fw.loss, g)
            });
            anyhow::ensure!(lv.is_finite(), "loss became {lv} at step {step}; lower --lr");
            loss_ema = if loss_ema.is_nan() { lv } else { 0.95 * loss_ema + 0.05 * lv };
            optim.step(schedule.lr(step), &mut model, &mut grads);
            step += 1;
            bar.set_message(format!("epoch {} loss {loss_ema:.4}", epoch + 1));
            bar.inc(1);
        }
        let native = model.to_model()?;
        let acc = accuracy(&native, dev, 64)?;
        progress.println(format!("epoch {}: dev accuracy {:.2}%", epoch + 1, acc * 100.0));
        dev_accuracy.push(acc);
        if acc > best {
            best = acc;
            best_epoch = epoch + 1;
            save_hf_checkpoint(&native, out_dir, Some(tokenizer_dir))?;
        }
    }
    bar.finish_and_clear();
    Ok(FinetuneReport {
        steps: step,
        epochs: cfg.epochs,
        dev_accuracy,
        best_dev_accuracy: best,
        best_epoch,
        seconds: start.elapsed().as_secs_f64(),
        output_dir: out_dir.to_path_buf(),
    })
}
