//! Training throughput (issue 15, item 1): the time of one optimisation step of each training
//! job (fine-tune, ApproxNet distillation, concrete soft-mask training of ALGORITHM.md section 4.3,
//! LTP soft-mask training) on real Rotten Tomatoes batches and on length-128 inputs, with
//! examples/s, GFLOP/s and a per-stage profile (data, forward, backward, optimiser).
//!
//! Each measured step is a full step of the job's own loop (the same loss functions, AdamW with
//! per-tensor norm clipping, schedule) on a fixed batch, after `warmup` unmeasured steps.
//!
//! FLOP counting (see [`forward_flops`]): a forward pass counts `2·m·k·n` for every matrix
//! product of the padded batch `[B, T]` the trainer computes (Q, K, V, output, FFN in/out
//! projections, `QKᵀ` and `PV` per head, pooler and classifier on the CLS rows), nothing for
//! element-wise work; a trained module's forward + backward counts 3x its forward (the backward
//! does two products, `dX = dY·Wᵀ` and `dW = Xᵀ·dY`, per forward product); a frozen module
//! run without gradients (the distillation teacher, on the native executor) counts 1x. Native
//! rows count the same padded-batch FLOPs although the native trainer skips padding rows, so
//! their GFLOP/s is burn-equivalent throughput (examples/s compares the two directly).

use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Param;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub use super::step_seconds::StageSeconds;

use crate::approx::{ApproxInit, ApproxNet};
use crate::exec::RunOptions;
use crate::model::config::EncoderConfig;
use crate::model::{EncodedInput, Encoder};
use crate::train::concrete::{concrete_loss, ConcreteConfig, ConcreteTrain};
use crate::train::distill::{distill_loss, ApproxTrain};
use crate::train::finetune::{cross_entropy, scalar, LabeledInput};
use crate::train::ltp::{ltp_forward, LtpTrain};
use crate::train::model::{Batch, Lin, TrainBert};

/// A training job of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Job {
    /// Fine-tuning the classifier (cross-entropy), [`crate::train::finetune`].
    Finetune,
    /// ApproxNet distillation (attention KL + hidden/embedding MSE + prediction), [`crate::train::distill`].
    Distill,
    /// Concrete soft-mask training (teacher + ApproxNet + θ), [`crate::train::concrete`].
    Concrete,
    /// LTP soft-mask training (teacher + θ), [`crate::train::ltp`].
    Ltp,
    /// Plan-aware fine-tuning (teacher under ABT plans, CE + α·KL), [`crate::train::bench_plan_ft`].
    #[serde(rename = "plan-ft")]
    PlanFt,
}

impl Job {
    /// All five jobs, in pipeline order.
    pub const ALL: [Job; 5] = [Job::Finetune, Job::Distill, Job::Concrete, Job::Ltp, Job::PlanFt];
    /// The jobs the native trainer runs (all five).
    pub const NATIVE: [Job; 5] = [Job::Finetune, Job::Distill, Job::Concrete, Job::Ltp, Job::PlanFt];
    /// Lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Job::Finetune => "finetune",
            Job::Distill => "distill",
            Job::Concrete => "concrete",
            Job::Ltp => "ltp",
            Job::PlanFt => "plan-ft",
        }
    }
}

/// Which implementation ran a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trainer {
    /// burn (Flex backend, autodiff): today's path.
    Burn,
    /// The native forward/backward on the crate's kernels ([`crate::train::native`]).
    Native,
}

/// The inputs of a measurement: real RT sentences (dynamic padding), or length-128 inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Consecutive Rotten Tomatoes training sentences, padded to the longest of the batch.
    Rt,
    /// Inputs of exactly `long_len` tokens: `[CLS]`, RT sentence tokens run together, `[SEP]`.
    Long,
}

/// What to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainBenchConfig {
    pub jobs: Vec<Job>,
    pub trainers: Vec<Trainer>,
    pub batch_sizes: Vec<usize>,
    pub workloads: Vec<Workload>,
    /// Length of the [`Workload::Long`] inputs (tokens, with `[CLS]` and `[SEP]`).
    pub long_len: usize,
    /// Unmeasured steps before the measured ones (allocator and thread-pool warm-up).
    pub warmup: usize,
    /// Measured steps; the report gives their mean.
    pub reps: usize,
    /// ApproxNet shrink factor for distillation and concrete training.
    pub approx_factor: usize,
}

impl Default for TrainBenchConfig {
    fn default() -> Self {
        Self {
            jobs: Job::ALL.to_vec(),
            trainers: vec![Trainer::Burn],
            batch_sizes: vec![16, 32],
            workloads: vec![Workload::Rt, Workload::Long],
            long_len: 128,
            warmup: 1,
            reps: 2,
            approx_factor: 4,
        }
    }
}

/// One measurement: a job, a trainer, a workload, a batch size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRow {
    pub job: Job,
    pub trainer: Trainer,
    pub workload: Workload,
    pub batch_size: usize,
    /// Padded length `T` of the batch.
    pub padded_len: usize,
    /// Real (non-padding) tokens in the batch.
    pub real_tokens: usize,
    /// Mean seconds per optimisation step (sum of the stages).
    pub seconds_per_step: f64,
    pub examples_per_s: f64,
    /// Floating-point operations of one step, counted as in the module docs (GFLOP).
    pub gflop_per_step: f64,
    pub gflop_per_s: f64,
    pub stages: StageSeconds,
    /// The loss of the last measured step (a sanity value).
    pub loss: f64,
    /// The frozen teacher's targets were read from the trainer's exact per-example cache
    /// ([`crate::train::native::teacher_cache`]): a step of the steady state after a run's first
    /// epoch (native distillation: all targets; native plan-aware fine-tuning: the dense logits,
    /// its plans are still computed). `false`: the cold step of the first epoch, the teacher run
    /// on the batch (every burn row; the burn trainer has no cache).
    #[serde(default)]
    pub teacher_cached: bool,
}

/// The whole measurement, serialisable as the `bench-train` JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainBench {
    /// The teacher checkpoint's description (layers, hidden size, heads).
    pub model: String,
    /// Threads of the rayon pool the kernels and burn's Flex backend use.
    pub threads: usize,
    /// How FLOPs are counted.
    pub flop_counting: String,
    /// Free-form note about the machine state (e.g. "machine busy: indicative only").
    pub note: String,
    pub config: TrainBenchConfig,
    pub rows: Vec<BenchRow>,
}

impl TrainBench {
    /// A fixed-width text table of the rows (one line each), for terminals and reports.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<9} {:<7} {:<5} {:>3} {:>4} {:>9} {:>8} {:>8} | {:>7} {:>7} {:>7} {:>7} {:>7} {:<7}\n",
            "job", "trainer", "data", "B", "T", "s/step", "ex/s", "GFLOP/s", "data", "fwd", "bwd", "optim", "teacher", "targets"
        );
        for r in &self.rows {
            s += &row_line(r);
            s.push('\n');
        }
        s
    }
}

/// One row of [`TrainBench::table`] (no newline).
pub fn row_line(r: &BenchRow) -> String {
    format!(
        "{:<9} {:<7} {:<5} {:>3} {:>4} {:>9.3} {:>8.2} {:>8.2} | {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:<7}",
        r.job.name(),
        match r.trainer {
            Trainer::Burn => "burn",
            Trainer::Native => "native",
        },
        match r.workload {
            Workload::Rt => "rt",
            Workload::Long => "long",
        },
        r.batch_size,
        r.padded_len,
        r.seconds_per_step,
        r.examples_per_s,
        r.gflop_per_s,
        r.stages.data,
        r.stages.forward,
        r.stages.backward,
        r.stages.optimizer,
        r.stages.teacher,
        targets_label(r)
    )
}

/// The `targets` column: `-` for jobs without frozen-teacher targets (fine-tune, concrete,
/// LTP), else `cold` (computed this step) or `cached` (read from the exact cache, after epoch 1).
pub fn targets_label(r: &BenchRow) -> &'static str {
    match (r.job, r.teacher_cached) {
        (Job::Distill | Job::PlanFt, false) => "cold",
        (Job::Distill | Job::PlanFt, true) => "cached",
        _ => "-",
    }
}

/// Forward FLOPs of `c` on a padded batch `[b, t]`: `2·m·k·n` per matrix product (see the
/// module docs), with the pooler and classifier (`labels` outputs) on the `b` CLS rows when
/// `labels > 0`.
pub fn forward_flops(c: &EncoderConfig, b: usize, t: usize, labels: usize) -> f64 {
    let (bt, d, f) = ((b * t) as f64, c.hidden_size as f64, c.intermediate_size as f64);
    let per_layer = 2.0 * bt * (4.0 * d * d + 2.0 * d * f) + 2.0 * 2.0 * (b as f64) * (t * t) as f64 * d;
    let head = if labels > 0 { 2.0 * b as f64 * (d * d + d * labels as f64) } else { 0.0 };
    per_layer * c.num_layers as f64 + head
}

/// The `[CLS] ... [SEP]` inputs of exactly `len` tokens, built from consecutive RT sentences
/// (their tokens between `[CLS]` and `[SEP]` run together), labelled as the first sentence used.
///
/// Errors: `len < 3`, or the sentences hold too few tokens.
pub fn long_inputs(sentences: &[LabeledInput], count: usize, len: usize) -> anyhow::Result<Vec<LabeledInput>> {
    anyhow::ensure!(len >= 3, "long inputs need at least 3 tokens, got {len}");
    let mut out = Vec::with_capacity(count);
    let mut it = sentences.iter().filter(|s| s.input.len() > 2).cycle().take(sentences.len() * 64 + 1);
    for _ in 0..count {
        let first = it.next().ok_or_else(|| anyhow::anyhow!("no sentence with more than 2 tokens"))?;
        let (cls, sep) = (first.input.ids[0], *first.input.ids.last().unwrap_or(&0));
        let mut ids = vec![cls];
        let mut cur = first;
        loop {
            let inner = &cur.input.ids[1..cur.input.len() - 1];
            let room = len - 1 - ids.len();
            ids.extend_from_slice(&inner[..inner.len().min(room)]);
            if ids.len() == len - 1 {
                break;
            }
            cur = it.next().ok_or_else(|| anyhow::anyhow!("too few sentence tokens for {count} inputs of {len}"))?;
        }
        ids.push(sep);
        out.push(LabeledInput { input: EncodedInput { type_ids: vec![0; len], ids, patches: Vec::new() }, label: first.label });
    }
    Ok(out)
}

/// Time one optimisation step of each job in `cfg` on `teacher` (which must have a classification
/// head) with batches drawn from `sentences` (consecutive, from the start; tokenised RT training
/// sentences), on the rayon pool the caller runs in; each row is printed through `progress`
/// as it is measured.
///
/// Errors: `teacher` has no classifier, too few sentences for a batch, an ApproxNet cannot be
/// built with `cfg.approx_factor`, or a loss is not finite. Jobs outside [`Job::NATIVE`] get
/// burn rows only (none today).
pub fn bench_train(
    teacher: &Encoder,
    sentences: &[LabeledInput],
    cfg: &TrainBenchConfig,
    note: &str,
    progress: &crate::train::Progress,
) -> anyhow::Result<TrainBench> {
    anyhow::ensure!(teacher.classifier.is_some(), "the teacher has no classification head");
    anyhow::ensure!(cfg.reps >= 1, "TrainBenchConfig.reps must be at least 1");
    let labels = teacher.config.labels.len().max(teacher.classifier.as_ref().map(|c| c.d_out()).unwrap_or(0));
    let approx = ApproxNet::new(teacher, cfg.approx_factor, ApproxInit::Interpolate, 0)?;
    let mut rows = Vec::new();
    for &workload in &cfg.workloads {
        for &b in &cfg.batch_sizes {
            anyhow::ensure!(sentences.len() >= b, "{} sentences are fewer than a batch of {b}", sentences.len());
            let data = match workload {
                Workload::Rt => sentences[..b].to_vec(),
                Workload::Long => long_inputs(sentences, b, cfg.long_len)?,
            };
            for &job in &cfg.jobs {
                for &trainer in &cfg.trainers {
                    if trainer == Trainer::Native && !Job::NATIVE.contains(&job) {
                        continue; // no native trainer for this job
                    }
                    let row = match trainer {
                        Trainer::Burn => burn_row(job, teacher, &approx, &data, cfg, labels)?,
                        Trainer::Native => native_row(job, teacher, &approx, &data, cfg, labels)?,
                    };
                    let row = BenchRow { workload, ..row };
                    progress.println(row_line(&row));
                    rows.push(row);
                    // the native trainer caches the frozen teacher's targets: its steady-state
                    // step (every epoch after the first) beside the cold one
                    if trainer == Trainer::Native && matches!(job, Job::Distill | Job::PlanFt) {
                        let row = BenchRow { workload, ..native_cached_row(job, teacher, &approx, &data, cfg, labels)? };
                        progress.println(row_line(&row));
                        rows.push(row);
                    }
                }
            }
        }
    }
    Ok(TrainBench {
        model: format!(
            "{} layers, hidden {}, {} heads, FFN {}",
            teacher.config.num_layers, teacher.config.hidden_size, teacher.config.num_heads, teacher.config.intermediate_size
        ),
        threads: rayon::current_num_threads(),
        flop_counting: "2·m·k·n per matrix product of the padded batch (projections, FFN, QKᵀ, PV, pooler, classifier); trained modules 3x forward (forward + dX + dW), the frozen distillation teacher 1x; element-wise work not counted; native rows (which skip padding rows) are counted on the same padded batch".into(),
        note: note.into(),
        config: cfg.clone(),
        rows,
    })
}

/// Mean of the measured steps' stage times and the row around them.
fn finish_row(job: Job, trainer: Trainer, data: &[LabeledInput], stages: &[StageSeconds], gflop: f64, loss: f64) -> BenchRow {
    let n = stages.len().max(1) as f64;
    let mut m = StageSeconds::default();
    for s in stages {
        m.data += s.data / n;
        m.forward += s.forward / n;
        m.backward += s.backward / n;
        m.optimizer += s.optimizer / n;
        m.teacher += s.teacher / n;
    }
    let total = m.data + m.forward + m.backward + m.optimizer;
    let b = data.len();
    BenchRow {
        job,
        trainer,
        workload: Workload::Rt,
        batch_size: b,
        padded_len: data.iter().map(|x| x.input.len()).max().unwrap_or(0),
        real_tokens: data.iter().map(|x| x.input.len()).sum(),
        seconds_per_step: total,
        examples_per_s: b as f64 / total,
        gflop_per_step: gflop,
        gflop_per_s: gflop / total,
        stages: m,
        loss,
        teacher_cached: false,
    }
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// One job on burn: `warmup + reps` steps of the job's loss, backward and AdamW step.
fn burn_row(
    job: Job,
    teacher: &Encoder,
    approx: &ApproxNet,
    data: &[LabeledInput],
    cfg: &TrainBenchConfig,
    labels: usize,
) -> anyhow::Result<BenchRow> {
    let device = Device::flex().autodiff();
    let tcfg = teacher.config.clone();
    let acfg = approx.model.config.clone();
    let inputs: Vec<&EncodedInput> = data.iter().map(|x| &x.input).collect();
    let owned: Vec<EncodedInput> = data.iter().map(|x| x.input.clone()).collect();
    let label_ids: Vec<i64> = data.iter().map(|x| x.label as i64).collect();
    let (b, t) = (data.len(), data.iter().map(|x| x.input.len()).max().unwrap_or(0));
    let optim_cfg = AdamWConfig::new().with_weight_decay(0.01).with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)));
    let lr = 1e-5;
    let mut stages = Vec::new();
    let mut loss_v = f64::NAN;
    let big_l = tcfg.num_layers;
    let gflop = job_flops(job, &tcfg, &acfg, b, t, labels) / 1e9;
    // the job's module and a closure-free step per job (each module type differs)
    macro_rules! run_steps {
        ($model:ident, $loss:expr, $teacher_s:expr) => {{
            let mut optim = optim_cfg.init();
            for rep in 0..cfg.warmup + cfg.reps {
                let t0 = Instant::now();
                let batch = Batch::from_inputs(&inputs, &device);
                let targets = Tensor::<1, Int>::from_data(TensorData::new(label_ids.clone(), [b]), &device);
                let data_s = secs(t0);
                let t1 = Instant::now();
                let loss: Tensor<1> = $loss(&$model, &batch, targets)?;
                loss_v = scalar(&loss);
                let fwd_s = secs(t1);
                anyhow::ensure!(loss_v.is_finite(), "{} loss {loss_v} is not finite", job.name());
                let t2 = Instant::now();
                let grads = GradientsParams::from_grads(loss.backward(), &$model);
                let bwd_s = secs(t2);
                let t3 = Instant::now();
                $model = optim.step(lr, $model, grads);
                let opt_s = secs(t3);
                let teacher_s: f64 = $teacher_s;
                if rep >= cfg.warmup {
                    stages.push(StageSeconds {
                        data: data_s + teacher_s,
                        forward: (fwd_s - teacher_s).max(0.0),
                        backward: bwd_s,
                        optimizer: opt_s,
                        teacher: teacher_s,
                    });
                }
            }
        }};
    }
    match job {
        Job::Finetune => {
            let mut model = TrainBert::from_native(teacher, &device);
            run_steps!(
                model,
                |m: &TrainBert, batch: &Batch, targets| -> anyhow::Result<Tensor<1>> {
                    let out = m.forward(&tcfg, batch, None);
                    let logits = m.head_logits(&tcfg, out.last()).ok_or_else(|| anyhow::anyhow!("no classifier"))?;
                    Ok(cross_entropy(logits, targets))
                },
                0.0
            );
        }
        Job::Distill => {
            let mut model = ApproxTrain {
                net: TrainBert::from_native(&approx.model, &device),
                transfer: approx.transfer.iter().map(|l| Lin::from_hf(&l.weight_hf(), l.bias(), l.d_in(), l.d_out(), &device)).collect(),
            };
            // distill_loss computes the teacher's signals inside; time them alone to split them off
            let teacher_time = || -> anyhow::Result<f64> {
                let t0 = Instant::now();
                let outs = teacher.run_dense(&owned, RunOptions { attentions: true, hidden_states: true })?;
                std::hint::black_box(&outs);
                Ok(secs(t0))
            };
            run_steps!(
                model,
                |m: &ApproxTrain, _batch: &Batch, _targets| -> anyhow::Result<Tensor<1>> {
                    Ok(distill_loss(m, &acfg, teacher, &owned, true, &device)?.0)
                },
                teacher_time()?
            );
        }
        Job::Concrete => {
            let cc = ConcreteConfig::default();
            let phi = vec![(cc.theta0 / 10.0) as f32; big_l];
            let mut model = ConcreteTrain {
                teacher: TrainBert::from_native(teacher, &device),
                approx: TrainBert::from_native(&approx.model, &device),
                phi: Param::from_tensor(Tensor::from_data(TensorData::new(phi, [big_l]), &device)),
            };
            run_steps!(
                model,
                |m: &ConcreteTrain, batch: &Batch, targets| -> anyhow::Result<Tensor<1>> {
                    Ok(concrete_loss(m, &tcfg, &acfg, batch, targets, &cc, false, None).0)
                },
                0.0
            );
        }
        Job::Ltp => {
            let lc = crate::train::ltp::LtpConfig::default();
            let scale = lc.theta_lr / lc.lr;
            let mut model = LtpTrain {
                teacher: TrainBert::from_native(teacher, &device),
                phi: Param::from_tensor(Tensor::zeros([big_l - 1], &device)),
            };
            run_steps!(
                model,
                |m: &LtpTrain, batch: &Batch, targets| -> anyhow::Result<Tensor<1>> {
                    let theta = m.phi.val().mul_scalar(scale);
                    let (cls, masks) = ltp_forward(m, &tcfg, batch, theta, (lc.temperature, lc.score), false);
                    let logits = m.teacher.logits(&tcfg, cls).ok_or_else(|| anyhow::anyhow!("no classifier"))?;
                    let task = cross_entropy(logits, targets);
                    let n = batch.valid.clone().sum_dim(1);
                    let mut l1: Tensor<1> = Tensor::zeros([1], &batch.valid.device());
                    for mk in &masks {
                        l1 = l1 + (mk.clone().sum_dim(1) / n.clone()).mean().reshape([1]);
                    }
                    Ok(task + l1.div_scalar(masks.len().max(1) as f64).mul_scalar(lc.lambda))
                },
                0.0
            );
        }
        Job::PlanFt => {
            (stages, loss_v) = crate::train::bench_plan_ft::burn_steps(teacher, &approx.model, data, cfg.warmup, cfg.reps)?;
        }
    }
    Ok(finish_row(job, Trainer::Burn, data, &stages, gflop, loss_v))
}

/// One job on the native trainer, counted as burn's row.
fn native_row(
    job: Job,
    teacher: &Encoder,
    approx: &ApproxNet,
    data: &[LabeledInput],
    cfg: &TrainBenchConfig,
    labels: usize,
) -> anyhow::Result<BenchRow> {
    let (b, t) = (data.len(), data.iter().map(|x| x.input.len()).max().unwrap_or(0));
    let gflop = job_flops(job, &teacher.config, &approx.model.config, b, t, labels) / 1e9;
    let (stages, loss) = match job {
        Job::Finetune => crate::train::native::bench_steps(teacher, data, cfg.warmup, cfg.reps)?,
        Job::Distill => {
            let inputs: Vec<EncodedInput> = data.iter().map(|x| x.input.clone()).collect();
            crate::train::native::distill::bench_steps(teacher, approx, &inputs, cfg.warmup, cfg.reps)?
        }
        Job::PlanFt => crate::train::bench_plan_ft::native_steps(teacher, &approx.model, data, cfg.warmup, cfg.reps)?,
        Job::Ltp => crate::train::native::ltp::bench_steps(teacher, data, cfg.warmup, cfg.reps)?,
        Job::Concrete => crate::train::native::concrete::bench_steps(teacher, approx, data, cfg.warmup, cfg.reps)?,
    };
    Ok(finish_row(job, Trainer::Native, data, &stages, gflop, loss))
}

/// The native trainer's step of `job` (distillation or plan-aware fine-tuning) with the frozen
/// teacher's targets already in its exact cache (filled before the warm-up), counted as the
/// cold row (the FLOPs of the teacher pass it skips stay counted, so GFLOP/s reads as
/// burn-equivalent throughput).
///
/// Errors: another job, or as [`native_row`].
fn native_cached_row(
    job: Job,
    teacher: &Encoder,
    approx: &ApproxNet,
    data: &[LabeledInput],
    cfg: &TrainBenchConfig,
    labels: usize,
) -> anyhow::Result<BenchRow> {
    let (b, t) = (data.len(), data.iter().map(|x| x.input.len()).max().unwrap_or(0));
    let gflop = job_flops(job, &teacher.config, &approx.model.config, b, t, labels) / 1e9;
    let (stages, loss) = match job {
        Job::Distill => {
            let inputs: Vec<EncodedInput> = data.iter().map(|x| x.input.clone()).collect();
            crate::train::native::distill::bench_steps_with(teacher, approx, &inputs, cfg.warmup, cfg.reps, true)?
        }
        Job::PlanFt => crate::train::bench_plan_ft::native_steps_with(teacher, &approx.model, data, cfg.warmup, cfg.reps, true)?,
        _ => anyhow::bail!("{} has no frozen-teacher targets to cache", job.name()),
    };
    Ok(BenchRow { teacher_cached: true, ..finish_row(job, Trainer::Native, data, &stages, gflop, loss) })
}

/// FLOPs of one step of `job` on a padded batch `[b, t]` (module docs): teacher config `tc`,
/// ApproxNet config `ac`, a `labels`-class head.
fn job_flops(job: Job, tc: &EncoderConfig, ac: &EncoderConfig, b: usize, t: usize, labels: usize) -> f64 {
    match job {
        Job::Finetune => 3.0 * forward_flops(tc, b, t, labels),
        Job::Distill => {
            let transfer = 2.0 * (b * t * ac.hidden_size * tc.hidden_size * tc.num_layers) as f64;
            3.0 * (forward_flops(ac, b, t, labels) + transfer) + forward_flops(tc, b, t, labels)
        }
        Job::Concrete => 3.0 * (forward_flops(tc, b, t, labels) + forward_flops(ac, b, t, 0)),
        Job::Ltp => 3.0 * forward_flops(tc, b, t, labels),
        // the teacher trained under masks (3x forward, the masks do not shrink the padded
        // products), its frozen dense pass for the distillation logits (1x) and the ApproxNet's
        // attention pass for the plans (1x, no head)
        Job::PlanFt => 4.0 * forward_flops(tc, b, t, labels) + forward_flops(ac, b, t, 0),
    }
}
