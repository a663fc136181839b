//! `sttabt finetune`.

pub use super::trainer::TrainerArg;
use super::*;

// The options of `sttabt finetune` (the about text is on `Command::Finetune`).
#[derive(clap::Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub images: ImageArgs,
    /// Base checkpoint directory. Default: the cached all-MiniLM-L6-v2 (text), or a new DeiT
    /// trained from scratch (images: 28x28 grey for Fashion-MNIST, 32x32 RGB for a folder).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output directory (created; an existing finished run is not overwritten without --resume).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: FinetuneRunArgs,
    /// Continue exactly from --out/checkpoint (weights, AdamW moments, data and schedule position).
    #[arg(long)]
    pub resume: bool,
    /// No progress bars or status lines (the `data: ...` line included): errors, warnings and the result only.
    #[arg(long)]
    pub quiet: bool,
    /// Training implementation: native (forward/backward on the crate's own kernels, faster:
    /// `sttabt bench-train --trainer both`) or burn (autodiff on burn's Flex backend, the
    /// reference). Default: native where it covers the model (post-LayerNorm BERT text models;
    /// --plan-aware runs on it only), burn otherwise (said on stderr). Same batches, schedule
    /// and AdamW; results equal up to float rounding. A run resumes only with the trainer that
    /// wrote its checkpoint.
    #[arg(long, value_enum)]
    pub trainer: Option<TrainerArg>,
    /// Plan-aware fine-tuning (ABT-FT, ALGORITHM.md section 8): --model is a fine-tuned teacher;
    /// it is trained while it runs under its own hard ABT plans (from the ApproxNet --approx at
    /// keep --keep, no gradient through the planner) with loss CE + α·KL(dense teacher ||
    /// pruned student) against the frozen starting teacher's logits. The best epoch by dev
    /// accuracy under ABT at --keep is saved; finetune.json also reports dense dev accuracy per
    /// epoch. Native trainer only.
    #[arg(long)]
    pub plan_aware: bool,
    /// With --plan-aware: the ApproxNet directory (from `sttabt distill` of this teacher).
    #[arg(long, requires = "plan_aware")]
    pub approx: Option<PathBuf>,
    /// With --plan-aware: ABT keep fraction k in (0, 1] of the training plans (unless
    /// --keep-range) and of the dev evaluation.
    #[arg(long, requires = "plan_aware")]
    pub keep: Option<f64>,
    /// With --plan-aware: draw each batch's k uniformly from [a, b] (`a,b`, 0 < a <= b <= 1),
    /// so one teacher serves several keep fractions.
    #[arg(long, requires = "plan_aware", value_parser = parse_keep_range)]
    pub keep_range: Option<(f64, f64)>,
    /// With --plan-aware: weight α >= 0 of the distillation term.
    #[arg(long, default_value_t = 0.5, requires = "plan_aware", allow_hyphen_values = true)]
    pub kd_alpha: f64,
    /// With --plan-aware: temperature T > 0 of the distillation softmaxes.
    #[arg(long, default_value_t = 1.0, requires = "plan_aware", allow_hyphen_values = true)]
    pub kd_temperature: f64,
    /// With --plan-aware: weight β >= 0 of hidden-state distillation (beyond the paper): the
    /// mean squared difference between the pruned teacher's layer outputs (layers 1..L-1) and
    /// the frozen dense teacher's, on the rows each layer keeps. 0: off (logits only, as the
    /// paper). Costs one dense forward pass per step.
    #[arg(long, default_value_t = 0.0, requires = "plan_aware", allow_hyphen_values = true)]
    pub hidden_weight: f64,
}

/// The schedule and data-size options of a text fine-tuning run, shared by `sttabt finetune`
/// and `sttabt train-parity`.
#[derive(clap::Args)]
pub struct FinetuneRunArgs {
    /// Passes over the training data (>= 1).
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub epochs: usize,
    /// Examples per optimisation step.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Peak learning rate (linear warm-up, then linear decay).
    #[arg(long, default_value_t = 1e-4, value_parser = positive_rate, allow_hyphen_values = true)]
    pub lr: f64,
    /// Use only the first N training examples (after the seeded split).
    #[arg(long, value_parser = at_least_one)]
    pub train_limit: Option<usize>,
    /// Evaluate after each epoch on only the first N dev examples (after the seeded split): a
    /// quicker, noisier pick of the best epoch (--plan-aware: both its ABT and dense passes).
    /// The report records the number used (`dev_examples`). Default: all.
    #[arg(long, value_parser = at_least_one)]
    pub dev_limit: Option<usize>,
    /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
    #[arg(long, default_value_t = 128, value_parser = max_length_tokens)]
    pub max_length: usize,
}

/// `--keep-range a,b`.
fn parse_keep_range(s: &str) -> std::result::Result<(f64, f64), String> {
    let parts: Vec<&str> = s.split(',').collect();
    let bad = || format!("expected `a,b` with 0 < a <= b <= 1, e.g. 0.3,0.7; got {s:?}");
    let [a, b] = parts.as_slice() else { return Err(bad()) };
    let (a, b) = (a.trim().parse::<f64>().map_err(|_| bad())?, b.trim().parse::<f64>().map_err(|_| bad())?);
    if !(a > 0.0 && a <= b && b <= 1.0) {
        return Err(bad());
    }
    Ok((a, b))
}

/// Run `sttabt finetune`.
pub fn run(args: FinetuneArgs) -> Result<()> {
    let FinetuneArgs { data, images, model, out, run, resume, quiet, trainer, .. } = args;
    let FinetuneRunArgs { epochs, batch_size, lr, train_limit, dev_limit, max_length } = run;
    let limits = Limits { train: train_limit, dev: dev_limit };
    if let Some(m) = &model {
        refuse_non_finetunable(m, args.plan_aware)?;
    }
    if let Some(a) = &args.approx {
        super::refuse_file_as_approx(a, "--approx")?;
    }
    if args.plan_aware {
        if image_source(&images, &data)?.is_some() {
            bail!("--plan-aware covers text BERT models only (the native trainer)");
        }
        if trainer == Some(TrainerArg::Burn) {
            bail!("--plan-aware runs on the native trainer only; drop --trainer burn (the burn path of this job exists only as `sttabt bench-train --jobs plan-ft`)");
        }
        let Some(approx) = args.approx else {
            bail!("--plan-aware needs --approx DIR (an ApproxNet of this teacher, from `sttabt distill`)")
        };
        let Some(keep) = args.keep else { bail!("--plan-aware needs --keep K (ABT keep fraction in (0, 1])") };
        let cfg = sttabt::train::native::plan_ft::PlanFtConfig {
            finetune: sttabt::train::finetune::FinetuneConfig { epochs, batch_size, lr, seed: data.seed, ..Default::default() },
            keep,
            keep_range: args.keep_range,
            kd_alpha: args.kd_alpha,
            kd_temperature: args.kd_temperature,
            hidden_weight: args.hidden_weight,
        };
        check_config(cfg.validate(), PLAN_AWARE_FLAGS)?;
        return plan_aware(&data, model, &approx, &out, cfg, limits, max_length, resume, quiet);
    }
    if let Some(src) = image_source(&images, &data)? {
        TrainerArg::for_images(trainer, "fine-tune", quiet)?;
        guard_output(&out, "finetune.json", resume)?;
        // from scratch: the vision defaults unless the flags were changed
        let d = vision::vision_finetune_config(epochs);
        let cfg = sttabt::train::finetune::FinetuneConfig {
            batch_size: if batch_size == 32 { d.batch_size } else { batch_size },
            lr: if lr == 1e-4 && model.is_none() { d.lr } else { lr },
            seed: data.seed,
            ..d
        };
        check_config(cfg.validate(), FLAGS)?;
        return vision::finetune(&src, model, &out, cfg, limits, resume, quiet);
    }
    let cfg = sttabt::train::finetune::FinetuneConfig { epochs, batch_size, lr, seed: data.seed, ..Default::default() };
    check_config(cfg.validate(), FLAGS)?;
    finetune(&data, model, &out, cfg, limits, max_length, resume, quiet, trainer)
}

/// The fields of [`FinetuneConfig`](sttabt::train::finetune::FinetuneConfig) that flags set, for
/// [`check_config`]'s messages.
const FLAGS: &[(&str, &str)] = &[("epochs", "--epochs"), ("batch_size", "--batch-size"), ("lr", "--lr")];

/// [`FLAGS`] and the fields of [`PlanFtConfig`](sttabt::train::native::plan_ft::PlanFtConfig) that
/// the `--plan-aware` flags set.
const PLAN_AWARE_FLAGS: &[(&str, &str)] = &[
    ("epochs", "--epochs"),
    ("batch_size", "--batch-size"),
    ("lr", "--lr"),
    ("keep", "--keep"),
    ("keep_range", "--keep-range"),
    ("kd_alpha", "--kd-alpha"),
    ("kd_temperature", "--kd-temperature"),
    ("hidden_weight", "--hidden-weight"),
];

/// `--model DIR` of a fine-tuning run: an ApproxNet, or a concrete / LTP run or a bundle, is an
/// error saying what it is and what to pass instead (with `plan_aware`: the ApproxNet goes to
/// --approx), before anything is loaded.
fn refuse_non_finetunable(dir: &std::path::Path, plan_aware: bool) -> Result<()> {
    if plan_aware {
        let fix = format!("pass it as --approx {} and its teacher (the model it was distilled from) as --model", dir.display());
        return super::refuse_non_teacher(dir, "--model", "a classifier", &fix);
    }
    super::refuse_non_teacher(
        dir,
        "--model",
        "a checkpoint to fine-tune",
        "give the model it was distilled from, or another Hugging Face checkpoint directory, as --model",
    )
}

/// How many training and dev examples a run uses (`None`: all), from --train-limit and
/// --dev-limit: the first ones after the seeded split.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub train: Option<usize>,
    pub dev: Option<usize>,
}

/// What a text fine-tuning run reads: the base checkpoint (with a head for the data's labels),
/// the tokenised splits and the effective maximum length.
pub(crate) struct TextRun {
    pub dir: PathBuf,
    pub base: Encoder,
    pub train: Vec<sttabt::train::finetune::LabeledInput>,
    pub dev: Vec<sttabt::train::finetune::LabeledInput>,
    pub splits: sttabt::pipeline::Splits,
    pub max_length: usize,
}

/// Load the base checkpoint `model` (default: the cached all-MiniLM-L6-v2) and the train and
/// dev splits of `data` for `job`, tokenised to `max_length` (capped at the model's), the first
/// `limits` training and dev examples of each; a fresh head (seed `seed`) replaces one that does not
/// match the labels. Prints the split sizes on stderr (not with `quiet`).
///
/// Errors: `model` is an ApproxNet or a run directory; a checkpoint or data set that cannot be read or tokenised.
pub(crate) fn load_text_run(
    data: &DataArgs,
    model: Option<PathBuf>,
    job: &'static str,
    limits: Limits,
    max_length: usize,
    seed: u64,
    quiet: bool,
) -> Result<TextRun> {
    use sttabt::pipeline::{tokenize, warn_truncation};
    let dir = model_dir(model)?;
    refuse_non_finetunable(&dir, false)?;
    let needs = DataNeeds::train_dev(job).with_eval_limit(limits.dev).with_train_limit(limits.train);
    let source = data.source(&needs)?;
    let base = Encoder::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let max_length = clamp_max_length(&dir, &base, max_length);
    let splits = data.load(&source, &needs, quiet)?;
    let tok = text_tokenizer(&dir, &base, max_length)?;
    let (train, cut) = tokenize(&tok, &splits.train, limits.train)?;
    warn_truncation("train", cut, max_length);
    let (dev, cut) = tokenize(&tok, &splits.dev, limits.dev)?;
    warn_truncation("dev", cut, max_length);
    if !quiet {
        eprintln!("{}: {} train / {} dev examples, labels {:?}", splits.description, train.len(), dev.len(), splits.label_names);
    }
    let base = if base.classifier.as_ref().map(|c| c.d_out()) == Some(splits.label_names.len()) {
        base
    } else {
        sttabt::train::finetune::with_new_head(base, splits.label_names.clone(), seed)
    };
    Ok(TextRun { dir, base, train, dev, splits, max_length })
}

/// The train and dev sizes a run was started with (`OUT/data_sizes.json`, written when it starts):
/// a `--resume` with other sizes (another --train-limit or --dev-limit) is refused, since it
/// would mix data positions or compare epochs' dev accuracies over different sentences. A run
/// directory without the file (older runs) is not checked.
///
/// Errors: the sizes differ from the recorded ones; the file cannot be written.
pub(crate) fn guard_resume_sizes(out: &std::path::Path, train: usize, dev: usize, resume: bool) -> Result<()> {
    let path = out.join("data_sizes.json");
    if resume {
        if let Some(v) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) {
            let (t0, d0) = (v["train_examples"].as_u64(), v["dev_examples"].as_u64());
            if t0 != Some(train as u64) || d0 != Some(dev as u64) {
                bail!(
                    "--resume: {} was started with {} train / {} dev examples, this call has {train} / {dev}; resume with the same --train-limit and --dev-limit (or start a new --out)",
                    out.display(),
                    t0.map_or("?".into(), |t| t.to_string()),
                    d0.map_or("?".into(), |d| d.to_string())
                );
            }
            return Ok(());
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::json!({"train_examples": train, "dev_examples": dev});
    sttabt::model::checkpoint::write_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn finetune(
    data: &DataArgs,
    model: Option<PathBuf>,
    out: &std::path::Path,
    cfg: sttabt::train::finetune::FinetuneConfig,
    limits: Limits,
    max_length: usize,
    resume: bool,
    quiet: bool,
    trainer: Option<TrainerArg>,
) -> Result<()> {
    use sttabt::train::finetune::finetune;
    guard_output(out, "finetune.json", resume)?;
    check_config(cfg.validate(), FLAGS)?;
    let TextRun { dir, base, train, dev, splits, max_length } =
        load_text_run(data, model, "finetune", limits, max_length, cfg.seed, quiet)?;
    guard_resume_sizes(out, train.len(), dev.len(), resume)?;
    let trainer = TrainerArg::resolve(trainer, &base.config, "finetune", quiet);
    let progress = sttabt::train::Progress { quiet };
    let report = match trainer {
        TrainerArg::Burn => finetune(base, &train, &dev, &cfg, out, &dir, resume, &progress)?,
        TrainerArg::Native => sttabt::train::native::finetune_native(base, &train, &dev, &cfg, out, &dir, resume, &progress)?,
    };
    let json = serde_json::json!({"report": report, "config": cfg, "trainer": trainer.name(), "data": splits.description, "split": splits.split_info, "base_model": dir, "max_length": max_length, "train_examples": train.len(), "dev_examples": dev.len()});
    sttabt::model::checkpoint::write_atomic(&out.join("finetune.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!(
        "best dev accuracy {:.2}% (epoch {}), {} step{} in {:.0} s, {} trainer; saved to {}",
        report.best_dev_accuracy * 100.0,
        report.best_epoch,
        report.steps,
        if report.steps == 1 { "" } else { "s" },
        report.seconds,
        trainer.name(),
        out.display()
    );
    Ok(())
}

/// `sttabt finetune --plan-aware`.
#[allow(clippy::too_many_arguments)]
fn plan_aware(
    data: &DataArgs,
    model: Option<PathBuf>,
    approx_dir: &std::path::Path,
    out: &std::path::Path,
    cfg: sttabt::train::native::plan_ft::PlanFtConfig,
    limits: Limits,
    max_length: usize,
    resume: bool,
    quiet: bool,
) -> Result<()> {
    use sttabt::pipeline::{tokenize, warn_truncation};
    let dir = model_dir(model)?;
    guard_output(out, "finetune.json", resume)?;
    check_config(cfg.validate(), PLAN_AWARE_FLAGS)?;
    let needs = DataNeeds::train_dev("finetune --plan-aware").with_eval_limit(limits.dev).with_train_limit(limits.train);
    let source = data.source(&needs)?;
    let teacher = Encoder::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let approx = sttabt::approx::ApproxNet::load(approx_dir, &teacher.config)
        .with_context(|| format!("loading ApproxNet {} (--approx)", approx_dir.display()))?;
    let max_length = clamp_max_length(&dir, &teacher, max_length);
    let splits = data.load(&source, &needs, quiet)?;
    let heads = teacher.classifier.as_ref().map(|c| c.d_out());
    if heads != Some(splits.label_names.len()) {
        bail!(
            "--plan-aware starts from a teacher fine-tuned on this task: {} has {} but the data has {} labels {:?}; fine-tune it first with `sttabt finetune`",
            dir.display(),
            heads.map_or("no classification head".to_string(), |h| format!("a {h}-class head")),
            splits.label_names.len(),
            splits.label_names
        );
    }
    let tok = text_tokenizer(&dir, &teacher, max_length)?;
    let (train, cut) = tokenize(&tok, &splits.train, limits.train)?;
    warn_truncation("train", cut, max_length);
    let (dev, cut) = tokenize(&tok, &splits.dev, limits.dev)?;
    warn_truncation("dev", cut, max_length);
    if !quiet {
        eprintln!("{}: {} train / {} dev examples, labels {:?}", splits.description, train.len(), dev.len(), splits.label_names);
    }
    guard_resume_sizes(out, train.len(), dev.len(), resume)?;
    let progress = sttabt::train::Progress { quiet };
    let report = sttabt::train::native::plan_ft::finetune_plan_aware(&teacher, &approx, &train, &dev, &cfg, out, &dir, resume, &progress)?;
    let json = serde_json::json!({"report": report, "config": cfg, "trainer": "native", "plan_aware": true, "approx": approx_dir, "data": splits.description, "split": splits.split_info, "base_model": dir, "max_length": max_length, "train_examples": train.len(), "dev_examples": dev.len()});
    sttabt::model::checkpoint::write_atomic(&out.join("finetune.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!(
        "best dev accuracy under ABT k = {} {:.2}% (epoch {}; dense {:.2}%; before {:.2}% / dense {:.2}%), {} steps in {:.0} s; saved to {}",
        cfg.keep,
        report.best_abt_dev_accuracy * 100.0,
        report.best_epoch,
        report.dense_dev_accuracy[report.best_epoch - 1] * 100.0,
        report.start_abt_dev_accuracy * 100.0,
        report.start_dense_dev_accuracy * 100.0,
        report.steps,
        report.seconds,
        out.display()
    );
    if let Some(w) = report.below_start() {
        eprintln!("warning: {w}");
    }
    Ok(())
}
