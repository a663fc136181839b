//! Side-by-side rounds of the training bench ([`crate::train::bench`], issue 15): every
//! configuration several times with the trainers' order alternating, and the per-point ratio of
//! the native trainer's examples/s to burn's (for distillation and plan-aware fine-tuning once
//! with the native teacher targets cold and once cached).

use serde::{Deserialize, Serialize};

use crate::model::Encoder;
use crate::train::bench::{bench_train, BenchRow, Job, TrainBench, TrainBenchConfig, Trainer, Workload};
use crate::train::finetune::LabeledInput;

/// The speed-up of the native trainer over burn for one (job, workload, batch, length), over the
/// rounds of a side-by-side run ([`bench_rounds`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RatioRow {
    pub job: Job,
    pub workload: Workload,
    pub batch_size: usize,
    pub padded_len: usize,
    /// The native rows' teacher targets came from the cache ([`BenchRow::teacher_cached`]):
    /// the ratio of the steady state after epoch 1 against burn (which computes them every
    /// step); `false`: the cold step of both.
    #[serde(default)]
    pub teacher_cached: bool,
    /// Median over rounds of burn's and the native trainer's examples/s.
    pub burn_examples_per_s: f64,
    pub native_examples_per_s: f64,
    /// Per-round ratios native / burn of examples/s (one per round, in round order).
    pub ratios: Vec<f64>,
    /// Their median, minimum and maximum.
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Several rounds of [`bench_train`] and, when both trainers ran, the ratios between them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRounds {
    /// One [`TrainBench`] per round and configuration, in the order they ran.
    pub rounds: Vec<TrainBench>,
    /// Native / burn examples/s per measured point (empty unless both trainers ran).
    pub ratios: Vec<RatioRow>,
}

impl BenchRounds {
    /// The ratio table (one line per point), empty when there are no ratios.
    pub fn ratio_table(&self) -> String {
        if self.ratios.is_empty() {
            return String::new();
        }
        let mut s = format!(
            "{:<9} {:<7} {:<5} {:>3} {:>4} {:>9} {:>9} {:>7} {:>15}\n",
            "job", "targets", "data", "B", "T", "burn ex/s", "nat ex/s", "xburn", "range"
        );
        for r in &self.ratios {
            let targets = match (r.job, r.teacher_cached) {
                (Job::Distill | Job::PlanFt, false) => "cold",
                (Job::Distill | Job::PlanFt, true) => "cached",
                _ => "-",
            };
            s += &format!(
                "{:<9} {:<7} {:<5} {:>3} {:>4} {:>9.2} {:>9.2} {:>7.2} {:>15}\n",
                r.job.name(),
                targets,
                match r.workload {
                    Workload::Rt => "rt",
                    Workload::Long => "long",
                },
                r.batch_size,
                r.padded_len,
                r.burn_examples_per_s,
                r.native_examples_per_s,
                r.median,
                format!("{:.2}-{:.2}", r.min, r.max)
            );
        }
        s
    }
}

/// Median of a non-empty slice (mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Run every configuration of `cfgs` `rounds` times (round-major), reversing the order of the
/// trainers on every other round (burn then native, native then burn, ...) so that neither
/// always runs on a warmer or a quieter machine. When a configuration names both trainers, the
/// result holds, per (job, workload, batch, padded length), the per-round ratio of native to
/// burn examples/s with its median and range.
///
/// Errors: `rounds == 0`, or as [`bench_train`].
pub fn bench_rounds(
    teacher: &Encoder,
    sentences: &[LabeledInput],
    cfgs: &[TrainBenchConfig],
    rounds: usize,
    note: &str,
    progress: &crate::train::Progress,
) -> anyhow::Result<BenchRounds> {
    anyhow::ensure!(rounds >= 1, "at least one round is needed");
    let mut out = Vec::new();
    for round in 0..rounds {
        for cfg in cfgs {
            let mut cfg = cfg.clone();
            if round % 2 == 1 {
                cfg.trainers.reverse();
            }
            progress.println(format!("round {} of {rounds}", round + 1));
            out.push(bench_train(teacher, sentences, &cfg, note, progress)?);
        }
    }
    // a native row with cached teacher targets is compared with burn's (cold) row of its point
    type Key = (Job, Workload, usize, usize, bool);
    let key = |r: &BenchRow| -> Key { (r.job, r.workload, r.batch_size, r.padded_len, r.teacher_cached) };
    let point = |r: &BenchRow, k: &Key| (r.job, r.workload, r.batch_size, r.padded_len) == (k.0, k.1, k.2, k.3);
    let mut keys: Vec<Key> = Vec::new();
    for tb in &out {
        for r in tb.rows.iter().filter(|r| r.trainer == Trainer::Native) {
            if !keys.contains(&key(r)) {
                keys.push(key(r));
            }
        }
    }
    let mut ratios = Vec::new();
    for k in keys {
        let (mut burn, mut native, mut per) = (Vec::new(), Vec::new(), Vec::new());
        for tb in &out {
            let b = tb.rows.iter().find(|r| point(r, &k) && r.trainer == Trainer::Burn);
            let n = tb.rows.iter().find(|r| key(r) == k && r.trainer == Trainer::Native);
            if let (Some(b), Some(n)) = (b, n) {
                burn.push(b.examples_per_s);
                native.push(n.examples_per_s);
                per.push(n.examples_per_s / b.examples_per_s);
            }
        }
        if per.is_empty() {
            continue;
        }
        ratios.push(RatioRow {
            job: k.0,
            workload: k.1,
            batch_size: k.2,
            padded_len: k.3,
            teacher_cached: k.4,
            burn_examples_per_s: median(&burn),
            native_examples_per_s: median(&native),
            median: median(&per),
            min: per.iter().copied().fold(f64::INFINITY, f64::min),
            max: per.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ratios: per,
        });
    }
    Ok(BenchRounds { rounds: out, ratios })
}
