//! `sttabt distill`.

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
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Held-out dev examples (sentences or images) for the fidelity report.
    #[arg(long, default_value_t = 200)]
    pub heldout: usize,
    /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// Continue exactly from --out/checkpoint (weights, AdamW moments, data and schedule position).
    #[arg(long)]
    pub resume: bool,
    /// No progress bars or status lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Run `sttabt distill`.
pub fn run(args: DistillArgs) -> Result<()> {
    let DistillArgs { data, images, teacher, out, factor, init, steps, batch_size, lr, train_limit, heldout, max_length, resume, quiet } =
        args;
    let cfg = sttabt::train::distill::DistillConfig { steps, batch_size, lr, seed: data.seed, ..Default::default() };
    if let Some(src) = image_source(&images, &data)? {
        guard_output(&out, "distill.json", resume)?;
        let init = if init == "random" { sttabt::approx::ApproxInit::Random } else { sttabt::approx::ApproxInit::Interpolate };
        return vision::distill(&src, &teacher, &out, factor, init, cfg, train_limit, heldout, quiet, resume);
    }
    distill(&data, &teacher, &out, factor, &init, cfg, train_limit, heldout, max_length, resume, quiet)
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
) -> Result<()> {
    use sttabt::approx::{ApproxInit, ApproxNet};
    guard_output(out, "distill.json", resume)?;
    cfg.validate()?;
    let needs = DataNeeds::train_dev("distill");
    let source = data.source(&needs)?;
    let teacher = Encoder::load(teacher_dir).with_context(|| format!("loading teacher {}", teacher_dir.display()))?;
    let splits = data.load(&source, &needs)?;
    let tok = text_tokenizer(teacher_dir, &teacher, max_length)?;
    let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, train_limit)?;
    let (held, _) = sttabt::pipeline::tokenize(&tok, &splits.dev, Some(heldout))?;
    let init = if init == "random" { ApproxInit::Random } else { ApproxInit::Interpolate };
    let approx = ApproxNet::new(&teacher, factor, init, data.seed)?;
    let train: Vec<_> = train.into_iter().map(|x| x.input).collect();
    let held: Vec<_> = held.into_iter().map(|x| x.input).collect();
    let (_, report) =
        sttabt::train::distill::distill(&teacher, approx, &train, &held, &cfg, out, resume, &sttabt::train::Progress { quiet })?;
    println!(
        "ApproxNet f={factor}: attention KL {:.4} -> {:.4}, MSE {:.5} -> {:.5} on {} held-out sentences ({} steps, {:.0} s); saved to {}",
        report.before.attention_kl,
        report.after.attention_kl,
        report.before.attention_mse,
        report.after.attention_mse,
        report.after.examples,
        report.steps,
        report.seconds,
        out.display()
    );
    Ok(())
}
