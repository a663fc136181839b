//! `sttabt bench-train`.

use super::*;

use sttabt::pipeline::minilm_and_rt;
use sttabt::train::bench::{Job, TrainBenchConfig, Trainer, Workload};
use sttabt::train::bench_rounds::bench_rounds;

/// Which trainer(s) `bench-train` times.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainerChoice {
    /// burn's Flex backend with autodiff (the reference implementation).
    Burn,
    /// The native forward/backward on the crate's kernels (every job).
    Native,
    /// Both, side by side in one run, alternating which goes first per round.
    Both,
}

// The options of `sttabt bench-train` (the about text is on `Command::BenchTrain`).
#[derive(clap::Args)]
pub struct BenchTrainArgs {
    /// Jobs to time: finetune, distill, concrete, ltp, plan-ft (plan-aware fine-tuning,
    /// ALGORITHM.md section 8; ABT plans at keep 0.5) (comma-separated).
    #[arg(long, default_value = "finetune,distill,concrete,ltp,plan-ft", value_delimiter = ',', value_parser = parse_job)]
    pub jobs: Vec<Job>,
    /// Batch sizes (examples per step).
    #[arg(long, default_value = "16,32", value_delimiter = ',', value_parser = at_least_one)]
    pub batches: Vec<usize>,
    /// Inputs: `rt` = consecutive Rotten Tomatoes training sentences padded to the batch's
    /// longest; a number N = inputs of exactly N tokens made of RT sentences run together.
    #[arg(long, default_value = "rt,128", value_delimiter = ',', value_parser = parse_data)]
    pub data: Vec<DataChoice>,
    /// Unmeasured steps before the measured ones, per row.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Measured steps per row and round (the row gives their mean).
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    pub steps: usize,
    /// Rounds over all rows (default 1; with --trainer both at least 3, the default there).
    #[arg(long, value_parser = at_least_one)]
    pub rounds: Option<usize>,
    /// burn, native or both (both: side by side, alternating, ratios with median and range).
    #[arg(long, value_enum, default_value_t = TrainerChoice::Burn)]
    pub trainer: TrainerChoice,
    /// ApproxNet shrink factor for the distill and concrete jobs.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub approx_factor: usize,
    /// A note stored in the JSON (e.g. "machine busy: indicative").
    #[arg(long, default_value = "")]
    pub note: String,
    /// Write every round's rows and the ratios as JSON to FILE.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No per-row lines while measuring (the tables are still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// One `--data` item.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DataChoice {
    Rt,
    Len(usize),
}

fn parse_job(s: &str) -> std::result::Result<Job, String> {
    Job::ALL
        .iter()
        .copied()
        .find(|j| j.name() == s)
        .ok_or_else(|| format!("unknown job '{s}' (accepted: finetune, distill, concrete, ltp, plan-ft)"))
}

fn parse_data(s: &str) -> std::result::Result<DataChoice, String> {
    if s == "rt" {
        return Ok(DataChoice::Rt);
    }
    match s.parse::<usize>() {
        Ok(n) if n >= 3 => Ok(DataChoice::Len(n)),
        _ => Err(format!("'{s}' is neither `rt` nor a token count >= 3")),
    }
}

/// Run `sttabt bench-train`.
pub fn run(args: BenchTrainArgs) -> Result<()> {
    let trainers = match args.trainer {
        TrainerChoice::Burn => vec![Trainer::Burn],
        TrainerChoice::Native => vec![Trainer::Native],
        TrainerChoice::Both => vec![Trainer::Burn, Trainer::Native],
    };
    let both = args.trainer == TrainerChoice::Both;
    let rounds = args.rounds.unwrap_or(if both { 3 } else { 1 });
    if both && rounds < 3 {
        bail!("--trainer both needs --rounds >= 3 (got {rounds}) for a median and a range of the ratio");
    }
    let base = TrainBenchConfig {
        jobs: args.jobs.clone(),
        trainers,
        batch_sizes: args.batches.clone(),
        warmup: args.warmup,
        reps: args.steps,
        approx_factor: args.approx_factor,
        ..Default::default()
    };
    // one configuration for the RT sentences and one per synthetic length
    let mut cfgs = Vec::new();
    if args.data.contains(&DataChoice::Rt) {
        cfgs.push(TrainBenchConfig { workloads: vec![Workload::Rt], ..base.clone() });
    }
    for d in &args.data {
        if let DataChoice::Len(n) = *d {
            cfgs.push(TrainBenchConfig { workloads: vec![Workload::Long], long_len: n, ..base.clone() });
        }
    }
    let max_batch = args.batches.iter().copied().max().unwrap_or(1);
    let (model, sentences) = minilm_and_rt(2000.max(max_batch))?;
    let progress = sttabt::train::Progress { quiet: args.quiet };
    let report = bench_rounds(&model, &sentences, &cfgs, rounds, &args.note, &progress)?;
    if let Some(first) = report.rounds.first() {
        println!("model: {}; threads: {}", first.model, first.threads);
    }
    for (i, tb) in report.rounds.iter().enumerate() {
        if report.rounds.len() > 1 {
            println!("-- run {} of {}", i + 1, report.rounds.len());
        }
        print!("{}", tb.table());
    }
    if both {
        println!("-- native / burn examples per second (median over {rounds} rounds, range)");
        print!("{}", report.ratio_table());
    }
    if let Some(path) = &args.json {
        sttabt::model::checkpoint::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
