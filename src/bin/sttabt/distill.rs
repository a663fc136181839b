//! `sttabt distill`.

use super::trainer::TrainerArg;
use super::*;

// The options of `sttabt distill` (the about text is on `Command::Distill`).
#[derive(clap::Args)]
pub struct DistillArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub images: ImageArgs,
    /// Teacher checkpoint (normally the output of `sttabt finetune`).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Output directory (created; an existing finished run is not overwritten without --resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Shrink factor f: hidden and FFN sizes are divided by it (2, 4, 8, 16).
    #[arg(long, default_value_t = 4)]
    pub factor: usize,
    /// Initialisation: random, or interpolate (shrink the teacher's tensors).
    #[arg(long, default_value = "interpolate", value_parser = ["random", "interpolate"])]
    pub init: String,
    /// Optimisation steps (>= 1).
    #[arg(long, default_value_t = 200, value_parser = at_least_one)]
    pub steps: usize,
    /// Examples per optimisation step (>= 1).
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Peak learning rate (> 0).
    #[arg(long, default_value_t = 1e-3, value_parser = positive_rate, allow_hyphen_values = true)]
    pub lr: f64,
    /// Use only the first N training examples (after the seeded split).
    #[arg(long, value_parser = at_least_one)]
    pub train_limit: Option<usize>,
    /// Held-out dev examples (sentences or images) for the fidelity report.
    #[arg(long, default_value_t = 200)]
    pub heldout: usize,
    /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
    #[arg(long, default_value_t = 128, value_parser = max_length_tokens)]
    pub max_length: usize,
    /// Continue exactly from --out/checkpoint (weights, AdamW moments, data and schedule position).
    #[arg(long)]
    pub resume: bool,
    /// No progress bars or status lines (the `data: ...` line included): errors, warnings and the result only.
    #[arg(long)]
    pub quiet: bool,
    /// Training implementation: native (forward/backward on the crate's own kernels) or burn
    /// (autodiff on burn's Flex backend, the reference). Default: native where it covers the
    /// model (post-LayerNorm BERT text models), burn otherwise (said on stderr). Same batches,
    /// schedule, AdamW and outputs; results equal up to float rounding. A run resumes only with
    /// the trainer that wrote its checkpoint.
    #[arg(long, value_enum)]
    pub trainer: Option<TrainerArg>,
    /// Stop once the attention KL on the held-out sentences is <= X (evaluated every --kl-every
    /// steps; --steps is then the most steps run and still sets the learning-rate schedule). The
    /// curve goes into distill.json. Without it, all --steps run.
    #[arg(long, value_parser = positive_rate, allow_hyphen_values = true)]
    pub target_kl: Option<f64>,
    /// Steps between held-out KL evaluations with --target-kl (>= 1).
    #[arg(long, default_value_t = 50, value_parser = at_least_one)]
    pub kl_every: usize,
    /// With the native trainer: keep the frozen teacher's targets of up to N MiB of training
    /// examples in memory (RAM; default 4096, or a quarter of the available memory when that is less; 0 = off) so that an example met again (after the first
    /// pass over the data) reads them back instead of running the teacher again. The size per
    /// example grows with its length n as L·H·n² attention values plus L·n·d hidden values (~0.43
    /// MiB for a 26-token sentence and all-MiniLM-L6-v2, ~5 MiB at 128 tokens). An error with
    /// the burn trainer. Exact: every target is
    /// the teacher's output on its example alone, cached or not, so the budget changes no number
    /// (examples beyond it are computed each time) and --resume stays exact.
    #[arg(long)]
    pub teacher_cache_mb: Option<usize>,
}

/// Run `sttabt distill`.
pub fn run(args: DistillArgs) -> Result<()> {
    let DistillArgs {
        data,
        images,
        teacher,
        out,
        factor,
        init,
        steps,
        batch_size,
        lr,
        train_limit,
        heldout,
        max_length,
        resume,
        quiet,
        trainer,
        target_kl,
        kl_every,
        teacher_cache_mb,
    } = args;
    if !sttabt::approx::FACTORS.contains(&factor) {
        bail!(
            "--factor must be one of {} (the ApproxNet's hidden and FFN sizes are the teacher's divided by it), got {factor}",
            sttabt::approx::FACTORS.map(|f| f.to_string()).join(", ")
        );
    }
    super::refuse_non_teacher(
        &teacher,
        "--teacher",
        "a teacher",
        "give the fine-tuned teacher it was distilled from as --teacher (an ApproxNet is distilled from its teacher)",
    )?;
    let target_kl = target_kl.map(|kl| sttabt::train::distill::KlTarget { kl, every: kl_every });
    let cfg = sttabt::train::distill::DistillConfig { steps, batch_size, lr, seed: data.seed, target_kl, ..Default::default() };
    check_config(cfg.validate(), FLAGS)?;
    if let Some(src) = image_source(&images, &data)? {
        TrainerArg::for_images(trainer, "distil", quiet)?;
        no_cache_on_burn(teacher_cache_mb)?;
        guard_output(&out, "distill.json", resume)?;
        let init = if init == "random" { sttabt::approx::ApproxInit::Random } else { sttabt::approx::ApproxInit::Interpolate };
        return vision::distill(&src, &teacher, &out, factor, init, cfg, train_limit, heldout, quiet, resume);
    }
    distill(&data, &teacher, &out, factor, &init, cfg, train_limit, heldout, max_length, resume, quiet, (trainer, teacher_cache_mb))
}

/// The fields of [`DistillConfig`](sttabt::train::distill::DistillConfig) that flags set, for
/// [`check_config`]'s messages.
const FLAGS: &[(&str, &str)] = &[
    ("steps", "--steps"),
    ("batch_size", "--batch-size"),
    ("lr", "--lr"),
    ("target_kl.kl", "--target-kl"),
    ("target_kl.every", "--kl-every"),
];

/// `--teacher-cache-mb` belongs to the native trainer.
fn no_cache_on_burn(teacher_cache_mb: Option<usize>) -> Result<()> {
    if teacher_cache_mb.is_some() {
        bail!("--teacher-cache-mb applies to the native trainer only (the burn trainer computes the teacher's targets each step)");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn distill(
    data: &DataArgs,
    teacher_dir: &std::path::Path,
    out: &std::path::Path,
    factor: usize,
    init: &str,
    cfg: sttabt::train::distill::DistillConfig,
    train_limit: Option<usize>,
    heldout: usize,
    max_length: usize,
    resume: bool,
    quiet: bool,
    (trainer, teacher_cache_mb): (Option<TrainerArg>, Option<usize>),
) -> Result<()> {
    use sttabt::approx::{ApproxInit, ApproxNet};
    guard_output(out, "distill.json", resume)?;
    check_config(cfg.validate(), FLAGS)?;
    // the held-out sentences are the first --heldout of dev
    let needs = DataNeeds::train_dev("distill").with_eval_limit(Some(heldout)).with_train_limit(train_limit);
    let source = data.source(&needs)?;
    let teacher = Encoder::load(teacher_dir).with_context(|| format!("loading teacher {}", teacher_dir.display()))?;
    let trainer = TrainerArg::resolve(trainer, &teacher.config, "distill", quiet);
    if trainer == TrainerArg::Burn {
        no_cache_on_burn(teacher_cache_mb)?;
    }
    let splits = data.load(&source, &needs, quiet)?;
    let tok = text_tokenizer(teacher_dir, &teacher, max_length)?;
    let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, train_limit)?;
    let (held, _) = sttabt::pipeline::tokenize(&tok, &splits.dev, Some(heldout))?;
    let init = if init == "random" { ApproxInit::Random } else { ApproxInit::Interpolate };
    let approx = ApproxNet::new(&teacher, factor, init, data.seed)?;
    let train: Vec<_> = train.into_iter().map(|x| x.input).collect();
    let held: Vec<_> = held.into_iter().map(|x| x.input).collect();
    let progress = sttabt::train::Progress { quiet };
    let (_, report) = match trainer {
        TrainerArg::Burn => sttabt::train::distill::distill(&teacher, approx, &train, &held, &cfg, out, resume, &progress)?,
        TrainerArg::Native => {
            let cache_mb = teacher_cache_mb.unwrap_or_else(sttabt::train::native::teacher_cache::default_teacher_cache_mb);
            let bytes = sttabt::train::native::teacher_cache::mib(cache_mb);
            sttabt::train::native::distill::distill_native_cached(&teacher, approx, &train, &held, &cfg, out, resume, &progress, bytes)?
        }
    };
    println!(
        "ApproxNet f={factor}: attention KL {:.4} -> {:.4}, MSE {:.5} -> {:.5} on {} held-out sentences ({} steps, {:.0} s, {} trainer){}; saved to {}",
        report.before.attention_kl,
        report.after.attention_kl,
        report.before.attention_mse,
        report.after.attention_mse,
        report.after.examples,
        report.steps,
        report.seconds,
        report.trainer,
        match (cfg.target_kl, report.target_reached) {
            (Some(t), Some(true)) => format!("; KL target {} reached", t.kl),
            (Some(t), _) => format!("; KL target {} NOT reached in {} steps", t.kl, cfg.steps),
            _ => String::new(),
        },
        out.display()
    );
    Ok(())
}
