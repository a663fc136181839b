//! `sttabt ltp`.

use super::trainer::TrainerArg;
use super::*;
use sttabt::planners::ltp::LtpScore;

// The options of `sttabt ltp` (the about text is on `Command::Ltp`).
#[derive(clap::Args)]
pub struct LtpArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Fine-tuned teacher (from `sttabt finetune`).
    #[arg(long)]
    pub teacher: PathBuf,
    /// Output directory (created; an existing finished run is not overwritten without --resume).
    #[arg(long)]
    pub out: PathBuf,
    /// L1 weight on the masks (larger prunes more; length-scaled score, a 4-epoch MiniLM teacher on
    /// RT, 400 steps: λ 0.5 kept 61% of the tokens, λ 2 18%).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_weight, allow_hyphen_values = true)]
    pub lambda: f64,
    /// Temperature of the soft sigmoid masks, in the score's units (default: 0.25 for
    /// length-scaled scores, 0.01 for mean-received ones).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// What the thresholds apply to: `length-scaled` (the mean attention a token receives
    /// times the number of kept tokens: mean 1 at every length, so thresholds learned on short
    /// sentences still mean the same on long reviews) or `mean-received` (LTP's own score,
    /// which shrinks as 1/n: learned thresholds prune almost everything on inputs longer than
    /// the training ones).
    #[arg(long, default_value = "length-scaled", value_parser = ["length-scaled", "mean-received"])]
    pub score: String,
    /// Optimisation steps (>= 1).
    #[arg(long, default_value_t = 200, value_parser = at_least_one)]
    pub steps: usize,
    /// Examples per optimisation step (>= 1).
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Use only the first N training examples (after the seeded split).
    #[arg(long, value_parser = at_least_one)]
    pub train_limit: Option<usize>,
    /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
    #[arg(long, default_value_t = 128, value_parser = max_length_tokens)]
    pub max_length: usize,
    /// Training path: `native` (forward/backward on the crate's own kernels) or `burn` (the
    /// reference). Default: native where it covers the model (post-LayerNorm BERT text models),
    /// burn otherwise (said on stderr). Same batches, schedule, AdamW and outputs (teacher/,
    /// ltp.json); results equal up to float rounding. A run resumes only with the trainer that
    /// wrote its checkpoint.
    #[arg(long, value_enum)]
    pub trainer: Option<TrainerArg>,
    /// Continue exactly from --out/checkpoint (weights, AdamW moments, data and schedule position).
    #[arg(long)]
    pub resume: bool,
    /// No progress bars or status lines (the `data: ...` line included): errors, warnings and the result only.
    #[arg(long)]
    pub quiet: bool,
}

/// Run `sttabt ltp`.
pub fn run(args: LtpArgs) -> Result<()> {
    let LtpArgs { data, teacher, out, lambda, temperature, score, steps, batch_size, train_limit, max_length, resume, quiet, trainer } =
        args;
    super::refuse_non_teacher(
        &teacher,
        "--teacher",
        "a teacher",
        "give the fine-tuned teacher it was distilled from as --teacher (LTP trains thresholds on a classifier)",
    )?;
    let score = if score == "mean-received" { LtpScore::MeanReceived } else { LtpScore::LengthScaled };
    let temperature = temperature.unwrap_or(score.default_temperature());
    if !(temperature.is_finite() && temperature > 0.0) {
        bail!("--temperature must be a positive number, got {temperature}");
    }
    let cfg = sttabt::train::ltp::LtpConfig {
        lambda,
        temperature,
        score,
        theta_lr: score.default_theta_lr(),
        steps,
        batch_size,
        seed: data.seed,
        ..Default::default()
    };
    check_config(cfg.validate(), &[("steps", "--steps"), ("batch_size", "--batch-size"), ("temperature", "--temperature")])?;
    guard_output(&out, "ltp.json", resume)?;
    let teacher_m = Encoder::load(&teacher).with_context(|| format!("loading teacher {}", teacher.display()))?;
    let needs = DataNeeds::train_only("ltp").with_train_limit(train_limit);
    let source = data.source(&needs)?;
    let splits = data.load(&source, &needs, quiet)?;
    let tok = text_tokenizer(&teacher, &teacher_m, max_length)?;
    let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, train_limit)?;
    let trainer = TrainerArg::resolve(trainer, &teacher_m.config, "ltp", quiet);
    let progress = sttabt::train::Progress { quiet };
    let r = match trainer {
        TrainerArg::Burn => sttabt::train::ltp::train_ltp(&teacher_m, &train, &cfg, &out, resume, &progress)?,
        TrainerArg::Native => sttabt::train::native::ltp::train_ltp_native(&teacher_m, &train, &cfg, &out, resume, &progress)?,
    };
    sttabt::train::copy_preprocessing_files(&teacher, &out.join("teacher"))?;
    println!(
        "LTP λ={lambda}: hard retention {:.3} -> {:.3}; θ = {:?}; {:.0} s ({} trainer); saved to {}",
        r.start_retention,
        r.end_retention,
        r.theta.iter().map(|t| (t * 1e4).round() / 1e4).collect::<Vec<_>>(),
        r.seconds,
        trainer.name(),
        out.display()
    );
    Ok(())
}
