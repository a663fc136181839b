//! The `plan-ft` job of [`crate::train::bench`]: one plan-aware fine-tuning step (ALGORITHM.md
//! section 8) on burn (the reference: `TrainBert::forward` with the plans' 0/1 masks as `[B, T]`
//! tensors, cross-entropy + α·KL in burn, autodiff, burn's AdamW) and on the native trainer
//! ([`crate::train::native::plan_ft`]). Both get the same targets (ABT plans from the ApproxNet
//! at keep [`KEEP`], the frozen teacher's dense logits on the native executor), timed as the
//! `teacher` stage (part of `data`), as distillation's teacher signals are.

use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::model::{EncodedInput, Encoder};
use crate::plan::TokenPlan;
use crate::train::finetune::{cross_entropy, scalar, LabeledInput};
use crate::train::model::{Batch, TrainBert};
use crate::train::native::plan_ft::{ce_kd_loss, plan_targets, train_plans};
use crate::train::native::teacher_cache::DenseLogitsCache;
use crate::train::step_seconds::StageSeconds;

/// Keep fraction of the benchmarked plans.
pub const KEEP: f64 = 0.5;
/// Distillation weight and temperature of the benchmarked loss (the CLI defaults).
pub const ALPHA: f64 = 0.5;
pub const TEMPERATURE: f64 = 1.0;

/// Learning rate, weight decay and clipping of every bench step (as the other jobs' rows).
const LR: f64 = 1e-5;

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// The plans as `L + 1` masks `[B, T]` (padding 0): `m^l` on `I_l`, `m^{L+1}` on `O_L`.
pub fn plan_mask_tensors(plans: &[TokenPlan], t: usize, device: &Device) -> Vec<Tensor<2>> {
    let b = plans.len();
    let layers = plans.first().map_or(0, |p| p.num_layers());
    let mut m = vec![vec![0.0f32; b * t]; layers + 1];
    for (e, p) in plans.iter().enumerate() {
        for (l, set) in p.input_sets().iter().enumerate() {
            set.iter().for_each(|&j| m[l][e * t + j] = 1.0);
        }
        p.top().iter().for_each(|&j| m[layers][e * t + j] = 1.0);
    }
    m.into_iter().map(|v| Tensor::<2>::from_data(TensorData::new(v, [b, t]), device)).collect()
}

/// `warmup + reps` plan-aware steps of `teacher` on burn; the measured steps' stage times and the
/// last loss. Errors: no classifier, bad input, a non-finite loss.
pub fn burn_steps(
    teacher: &Encoder,
    approx: &Encoder,
    data: &[LabeledInput],
    warmup: usize,
    reps: usize,
) -> anyhow::Result<(Vec<StageSeconds>, f64)> {
    let device = Device::flex().autodiff();
    let tcfg = teacher.config.clone();
    let inputs: Vec<&EncodedInput> = data.iter().map(|x| &x.input).collect();
    let owned: Vec<EncodedInput> = data.iter().map(|x| x.input.clone()).collect();
    let label_ids: Vec<i64> = data.iter().map(|x| x.label as i64).collect();
    let b = data.len();
    let mut model = TrainBert::from_native(teacher, &device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).with_grad_clipping(Some(GradientClippingConfig::Norm(1.0))).init();
    let (mut stages, mut loss_v) = (Vec::new(), f64::NAN);
    for rep in 0..warmup + reps {
        let t0 = Instant::now();
        let (plans, dense) = plan_targets(teacher, approx, &owned, KEEP, ALPHA)?;
        let teacher_s = secs(t0);
        let t0 = Instant::now();
        let batch = Batch::from_inputs(&inputs, &device);
        let [_, t] = batch.dims();
        let masks = plan_mask_tensors(&plans, t, &device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(label_ids.clone(), [b]), &device);
        let nl = dense.len() / b;
        let pd = activation::softmax(Tensor::<2>::from_data(TensorData::new(dense, [b, nl]), &device).div_scalar(TEMPERATURE), 1);
        let data_s = secs(t0);
        let t1 = Instant::now();
        let out = model.forward(&tcfg, &batch, Some(&masks));
        let logits = model.head_logits(&tcfg, out.last()).ok_or_else(|| anyhow::anyhow!("the teacher has no classifier"))?;
        let log_q = activation::log_softmax(logits.clone().div_scalar(TEMPERATURE), 1);
        let kl = (pd.clone() * (pd.clone().add_scalar(1e-30).log() - log_q)).sum_dim(1).mean();
        let loss = cross_entropy(logits, targets) + kl.mul_scalar(ALPHA);
        loss_v = scalar(&loss);
        let fwd_s = secs(t1);
        anyhow::ensure!(loss_v.is_finite(), "plan-ft loss {loss_v} is not finite");
        let t2 = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let bwd_s = secs(t2);
        let t3 = Instant::now();
        model = optim.step(LR, model, grads);
        let opt_s = secs(t3);
        if rep >= warmup {
            stages.push(StageSeconds { data: data_s + teacher_s, forward: fwd_s, backward: bwd_s, optimizer: opt_s, teacher: teacher_s });
        }
    }
    Ok((stages, loss_v))
}

/// `warmup + reps` plan-aware steps of `teacher` on the native trainer; as [`burn_steps`].
pub fn native_steps(
    teacher: &Encoder,
    approx: &Encoder,
    data: &[LabeledInput],
    warmup: usize,
    reps: usize,
) -> anyhow::Result<(Vec<StageSeconds>, f64)> {
    native_steps_with(teacher, approx, data, warmup, reps, false)
}

/// [`native_steps`] in the cold (`cached` false: plans and dense teacher logits computed every
/// step, as in a run's first epoch) or the cached steady state (`cached` true: the dense logits
/// are in a [`DenseLogitsCache`] filled before the warm-up, as in every later epoch; the plans
/// are still computed, as the training loop does).
///
/// Errors: as [`native_steps`].
pub fn native_steps_with(
    teacher: &Encoder,
    approx: &Encoder,
    data: &[LabeledInput],
    warmup: usize,
    reps: usize,
    cached: bool,
) -> anyhow::Result<(Vec<StageSeconds>, f64)> {
    use crate::train::native::{backward::backward_full, batch_of, forward::forward_masked, masks::TokenMasks};
    use crate::train::native::{AdamW, AdamWSettings, NativeBert};
    let mut model = NativeBert::from_model(teacher)?;
    let mut optim = AdamW::new(AdamWSettings::burn_defaults(0.01, Some(1.0)), &model);
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let owned: Vec<EncodedInput> = data.iter().map(|x| x.input.clone()).collect();
    let owned_refs: Vec<&EncodedInput> = owned.iter().collect();
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut cache = DenseLogitsCache::new(data.len());
    if cached {
        cache.logits(teacher, &idx, &owned_refs)?;
    }
    let mut g = model.zeros_like();
    let (mut stages, mut loss_v) = (Vec::new(), f64::NAN);
    for rep in 0..warmup + reps {
        let t0 = Instant::now();
        let (plans, dense) = if cached {
            crate::kernels::in_pool(|| -> Result<_, crate::ModelError> {
                Ok((train_plans(teacher, approx, &owned, KEEP)?, cache.logits(teacher, &idx, &owned_refs)?))
            })?
        } else {
            crate::kernels::in_pool(|| plan_targets(teacher, approx, &owned, KEEP, ALPHA))?
        };
        let teacher_s = secs(t0);
        let t0 = Instant::now();
        let batch = batch_of(&model, &refs)?;
        let masks = TokenMasks::from_plans(&plans, &batch, model.layers.len())?;
        let data_s = secs(t0);
        let t1 = Instant::now();
        let (fw, (ce, kl, dlogits)) = crate::kernels::in_pool(|| {
            let fw = forward_masked(&model, &batch, Some(&masks));
            let l = ce_kd_loss(&fw.logits, &dense, &batch.labels, ALPHA, TEMPERATURE);
            (fw, l)
        });
        loss_v = ce + ALPHA * kl;
        let fwd_s = secs(t1);
        anyhow::ensure!(loss_v.is_finite(), "native plan-ft loss {loss_v} is not finite");
        let t2 = Instant::now();
        crate::kernels::in_pool(|| backward_full(&model, &batch, &fw, &mut g, Some(&dlogits), false));
        let bwd_s = secs(t2);
        let t3 = Instant::now();
        crate::kernels::in_pool(|| optim.step(LR, &mut model, &mut g));
        let opt_s = secs(t3);
        if rep >= warmup {
            stages.push(StageSeconds { data: data_s + teacher_s, forward: fwd_s, backward: bwd_s, optimizer: opt_s, teacher: teacher_s });
        }
    }
    Ok((stages, loss_v))
}
