//! Training throughput of one optimisation step per job (issue 15, item 1): fine-tune, distill,
//! concrete soft-mask, LTP soft-mask, on all-MiniLM-L6-v2 with Rotten Tomatoes batches of 16 and
//! 32 sentences and with length-128 inputs; prints a table and writes the JSON of
//! [`sttabt::train::bench::TrainBench`].
//!
//! Run: `cargo bench --bench bench_train`. Environment (all optional):
//! `STTABT_BENCH_JOBS=finetune,distill,concrete,ltp`, `STTABT_BENCH_TRAINERS=burn,native`,
//! `STTABT_BENCH_BATCHES=16,32`, `STTABT_BENCH_WORKLOADS=rt,long`, `STTABT_BENCH_REPS=2`,
//! `STTABT_BENCH_WARMUP=1`, `STTABT_BENCH_NOTE=...` (e.g. "machine busy"),
//! `STTABT_BENCH_OUT=path.json`. Fetches the assets when missing.

use sttabt::pipeline::minilm_and_rt;
use sttabt::train::bench::{bench_train, Job, TrainBenchConfig, Trainer, Workload};

fn list<T>(var: &str, parse: impl Fn(&str) -> Option<T>, default: Vec<T>) -> Vec<T> {
    match std::env::var(var) {
        Ok(s) => s.split(',').map(|x| parse(x.trim()).unwrap_or_else(|| panic!("{var}: cannot read '{x}'"))).collect(),
        Err(_) => default,
    }
}

fn main() -> anyhow::Result<()> {
    let d = TrainBenchConfig::default();
    let cfg = TrainBenchConfig {
        jobs: list("STTABT_BENCH_JOBS", |s| Job::ALL.iter().copied().find(|j| j.name() == s), d.jobs.clone()),
        trainers: list(
            "STTABT_BENCH_TRAINERS",
            |s| match s {
                "burn" => Some(Trainer::Burn),
                "native" => Some(Trainer::Native),
                _ => None,
            },
            d.trainers.clone(),
        ),
        batch_sizes: list("STTABT_BENCH_BATCHES", |s| s.parse().ok(), d.batch_sizes.clone()),
        workloads: list(
            "STTABT_BENCH_WORKLOADS",
            |s| match s {
                "rt" => Some(Workload::Rt),
                "long" => Some(Workload::Long),
                _ => None,
            },
            d.workloads.clone(),
        ),
        reps: std::env::var("STTABT_BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(d.reps),
        warmup: std::env::var("STTABT_BENCH_WARMUP").ok().and_then(|s| s.parse().ok()).unwrap_or(d.warmup),
        ..d
    };
    let note = std::env::var("STTABT_BENCH_NOTE").unwrap_or_default();
    let (model, sentences) = minilm_and_rt(2000)?;
    let report = bench_train(&model, &sentences, &cfg, &note, &sttabt::train::Progress::default())?;
    print!("{}", report.table());
    if let Ok(path) = std::env::var("STTABT_BENCH_OUT") {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!("wrote {path}");
    }
    Ok(())
}
