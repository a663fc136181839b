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
    #[command(flatten)]
    pub run: super::finetune::FinetuneRunArgs,
    /// Also write the report as JSON to FILE (it is always written to --out/parity.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bars or status lines (the `data: ...` line included): errors, warnings and the result only.
    #[arg(long)]
    pub quiet: bool,
}

/// Run `sttabt train-parity`.
pub fn run(args: TrainParityArgs) -> Result<()> {
    use sttabt::train::finetune::FinetuneConfig;
    let TrainParityArgs { data, model, out, run, json, quiet, .. } = args;
    let super::finetune::FinetuneRunArgs { epochs, batch_size, lr, train_limit, dev_limit, max_length } = run;
    super::check_out_dir("--out", &out)?;
    if out.join("parity.json").exists() || out.join("burn").exists() || out.join("native").exists() {
        bail!(
            "{} already holds a parity check (parity.json, burn/ or native/); choose another --out (nothing was overwritten)",
            out.display()
        );
    }
    let cfg = FinetuneConfig { epochs, batch_size, lr, seed: data.seed, ..Default::default() };
    cfg.validate()?;
    let limits = super::finetune::Limits { train: train_limit, dev: dev_limit };
    let super::finetune::TextRun { dir, base, train, dev, splits, max_length } =
        super::finetune::load_text_run(&data, model, "train-parity", limits, max_length, cfg.seed, quiet)?;
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
