//! `sttabt concrete`.

use super::trainer::TrainerArg;
use super::*;

// The options of `sttabt concrete` (the about text is on `Command::Concrete`).
#[derive(clap::Args)]
pub struct ConcreteArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub images: ImageArgs,
    /// Fine-tuned teacher (from `sttabt finetune`).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Its ApproxNet (from `sttabt distill`).
    #[arg(long)]
    pub approx: PathBuf,
    /// Output directory (created; an existing finished run is not overwritten without --resume).
    #[arg(long)]
    pub out: PathBuf,
    /// θ_0: retention target σ(θ_0) and anchor of the thresholds (paper sweep: -2 ... 1).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub theta0: f64,
    /// Optimisation steps (>= 1).
    #[arg(long, default_value_t = 200, value_parser = at_least_one)]
    pub steps: usize,
    /// Examples per optimisation step (>= 1).
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Learning rate of the encoders (> 0); θ trains at 10x.
    #[arg(long, default_value_t = 2e-5, value_parser = positive_rate, allow_hyphen_values = true)]
    pub lr: f64,
    /// Fraction of the last steps trained with hard masks.
    #[arg(long, default_value_t = 0.2)]
    pub hard_frac: f64,
    /// Weight of the retention term (paper: 1e-3 for text).
    #[arg(long, default_value_t = 1e-3, value_parser = non_negative_weight, allow_hyphen_values = true)]
    pub retention_weight: f64,
    /// Weight of logit distillation from the frozen teacher (0 = off).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_weight, allow_hyphen_values = true)]
    pub distill_weight: f64,
    /// Use only the first N training examples (after the seeded split).
    #[arg(long, value_parser = at_least_one)]
    pub train_limit: Option<usize>,
    /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
    #[arg(long, default_value_t = 128, value_parser = max_length_tokens)]
    pub max_length: usize,
    /// Training path: `native` (forward/backward on the crate's own kernels, BERT text models
    /// only; its loss and gradients equal burn's to 1e-4 relative on tiny configs and 1e-3 on
    /// MiniLM, tests/native_concrete.rs) or `burn` (the reference). Default: native where it
    /// covers the model (post-LayerNorm BERT text models), burn otherwise (said on stderr). Same batches, schedule, AdamW and outputs
    /// (teacher/, approx/, concrete.json with θ); results equal up to float rounding. A run
    /// resumes only with the trainer that wrote its checkpoint.
    #[arg(long, value_enum)]
    pub trainer: Option<TrainerArg>,
    /// Continue exactly from --out/checkpoint (weights, AdamW moments, data and schedule position).
    #[arg(long)]
    pub resume: bool,
    /// No progress bars or status lines (the `data: ...` line included): errors, warnings and the result only.
    #[arg(long)]
    pub quiet: bool,
}

/// Run `sttabt concrete`.
pub fn run(args: ConcreteArgs) -> Result<()> {
    let ConcreteArgs {
        data,
        images,
        teacher,
        approx,
        out,
        theta0,
        steps,
        batch_size,
        lr,
        hard_frac,
        retention_weight,
        distill_weight,
        train_limit,
        max_length,
        trainer,
        resume,
        quiet,
    } = args;
    let fix = format!("pass it as --approx {} and its teacher (the model it was distilled from) as --teacher", teacher.display());
    super::refuse_non_teacher(&teacher, "--teacher", "a teacher", &fix)?;
    super::refuse_file_as_approx(&approx, "--approx")?;
    if !theta0.is_finite() {
        bail!("--theta0 must be a finite number (the initial per-layer threshold logit; the paper sweeps -2 .. 1), got {theta0}");
    }
    let cfg = sttabt::train::concrete::ConcreteConfig {
        theta0,
        steps,
        batch_size,
        lr,
        hard_frac,
        retention_weight,
        distill_weight,
        seed: data.seed,
        ..Default::default()
    };
    check_config(cfg.validate(), FLAGS)?;
    if let Some(src) = image_source(&images, &data)? {
        TrainerArg::for_images(trainer, "concrete", quiet)?;
        guard_output(&out, "concrete.json", resume)?;
        return vision::concrete(&src, &teacher, &approx, &out, cfg, train_limit, resume, quiet);
    }
    concrete(&data, &teacher, &approx, &out, cfg, train_limit, max_length, resume, quiet, trainer)
}

/// The fields of [`ConcreteConfig`](sttabt::train::concrete::ConcreteConfig) that flags set, for
/// [`check_config`]'s messages.
const FLAGS: &[(&str, &str)] = &[("steps", "--steps"), ("batch_size", "--batch-size"), ("lr", "--lr"), ("hard_frac", "--hard-frac")];

#[allow(clippy::too_many_arguments)]
pub(crate) fn concrete(
    data: &DataArgs,
    teacher_dir: &std::path::Path,
    approx_dir: &std::path::Path,
    out: &std::path::Path,
    cfg: sttabt::train::concrete::ConcreteConfig,
    train_limit: Option<usize>,
    max_length: usize,
    resume: bool,
    quiet: bool,
    trainer: Option<TrainerArg>,
) -> Result<()> {
    guard_output(out, "concrete.json", resume)?;
    check_config(cfg.validate(), FLAGS)?;
    let needs = DataNeeds::train_only("concrete").with_train_limit(train_limit);
    let source = data.source(&needs)?;
    let teacher = Encoder::load(teacher_dir).with_context(|| format!("loading teacher {}", teacher_dir.display()))?;
    let approx = sttabt::approx::ApproxNet::load(approx_dir, &teacher.config)
        .with_context(|| format!("loading ApproxNet {}", approx_dir.display()))?;
    let splits = data.load(&source, &needs, quiet)?;
    let tok = text_tokenizer(teacher_dir, &teacher, max_length)?;
    let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, train_limit)?;
    let native = TrainerArg::resolve(trainer, &teacher.config, "concrete", quiet) == TrainerArg::Native;
    let progress = sttabt::train::Progress { quiet };
    let r = if native {
        sttabt::train::native::concrete::train_concrete_native(&teacher, &approx, &train, &cfg, out, resume, &progress)?
    } else {
        sttabt::train::concrete::train_concrete(&teacher, &approx, &train, &cfg, out, resume, &progress)?
    };
    sttabt::train::copy_preprocessing_files(teacher_dir, &out.join("teacher"))?;
    println!(
        "concrete θ0={}: target retention {:.3}; soft r {:.3} -> {:.3}, hard retention {:.3} -> {:.3}; θ = {:?}; {:.0} s ({} trainer); saved to {}",
        r.theta0,
        r.target_retention,
        r.start.soft_retention,
        r.end.soft_retention,
        r.start.hard_retention,
        r.end.hard_retention,
        r.theta.iter().map(|t| (t * 1000.0).round() / 1000.0 + 0.0).collect::<Vec<_>>(), // (+ 0.0: no "-0.0")
        r.seconds,
        if native { "native" } else { "burn" },
        out.display()
    );
    Ok(())
}
