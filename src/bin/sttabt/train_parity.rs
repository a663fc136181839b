//! `sttabt train-parity`.

use super::*;

// The options of `sttabt train-parity` (the about text is on `Command::TrainParity`).
#[derive(clap::Args)]
pub struct TrainParityArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Base checkpoint directory (default: the cached all-MiniLM-L6-v2); a fresh head is drawn
    /// from --seed when it has none for the task's labels.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Job to compare (only `finetune` so far).
    #[arg(long, default_value = "finetune", value_parser = ["finetune"])]
    pub job: String,
    /// Output directory: burn/ and native/ hold the two runs (created; an existing finished
    /// check is not overwritten).
    #[arg(long)]
    pub out: PathBuf,
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
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Maximum tokens per example, [CLS]/[SEP] included.
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// Also write the report as JSON to FILE (it is always written to --out/parity.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bars or status lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Run `sttabt train-parity`.
pub fn run(args: TrainParityArgs) -> Result<()> {
    use sttabt::pipeline::{tokenize, warn_truncation};
    use sttabt::train::finetune::{with_new_head, FinetuneConfig};
    let TrainParityArgs { data, model, out, epochs, batch_size, lr, train_limit, max_length, json, quiet, .. } = args;
    let dir = model_dir(model)?;
    if out.join("parity.json").exists() || out.join("burn").exists() || out.join("native").exists() {
        bail!(
            "{} already holds a parity check (parity.json, burn/ or native/); choose another --out (nothing was overwritten)",
            out.display()
        );
    }
    let cfg = FinetuneConfig { epochs, batch_size, lr, seed: data.seed, ..Default::default() };
    cfg.validate()?;
    let needs = DataNeeds::train_dev("train-parity");
    let source = data.source(&needs)?;
    let base = Encoder::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let max_length = clamp_max_length(&dir, &base, max_length);
    let splits = data.load(&source, &needs)?;
    let tok = text_tokenizer(&dir, &base, max_length)?;
    let (train, cut) = tokenize(&tok, &splits.train, train_limit)?;
    warn_truncation("train", cut, max_length);
    let (dev, cut) = tokenize(&tok, &splits.dev, None)?;
    warn_truncation("dev", cut, max_length);
    eprintln!("{}: {} train / {} dev examples, labels {:?}", splits.description, train.len(), dev.len(), splits.label_names);
    let base = if base.classifier.as_ref().map(|c| c.d_out()) == Some(splits.label_names.len()) {
        base
    } else {
        with_new_head(base, splits.label_names.clone(), cfg.seed)
    };
    let progress = sttabt::train::Progress { quiet };
    let report = sttabt::train::parity::finetune_parity(&base, &train, &dev, &cfg, &out, &dir, &progress)?;
    let value = serde_json::json!({"report": report, "data": splits.description, "split": splits.split_info, "base_model": dir, "max_length": max_length});
    let text = serde_json::to_string_pretty(&value)?;
    sttabt::model::checkpoint::write_atomic(&out.join("parity.json"), text.as_bytes())?;
    if let Some(path) = &json {
        sttabt::model::checkpoint::write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    for r in [&report.burn, &report.native] {
        let curve: Vec<String> = r.dev_accuracy.iter().map(|a| format!("{:.2}", a * 100.0)).collect();
        println!(
            "{:<6} dev accuracy per epoch [{}] %, {} steps in {:.0} s ({:.1} ex/s)",
            r.trainer,
            curve.join(", "),
            r.steps,
            r.seconds,
            r.examples_per_s
        );
    }
    println!(
        "native - burn after epoch {}: {:+.2} points on {} dev examples ({} the {:.1}-point bound)",
        epochs,
        report.final_difference_points,
        report.dev_examples,
        if report.within_bound { "within" } else { "OUTSIDE" },
        report.bound_points
    );
    Ok(())
}
