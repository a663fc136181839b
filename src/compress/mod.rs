//! `sttabt compress`: choose an operating point on dev and ship it as one bundle directory.
//!
//! - [`search`]: dev accuracy and retention per mode, the lowest retention within an accuracy
//!   budget, and the per-layer keep-schedule search (ALGORITHM.md sections 5 and 8).
//! - [`bundle`]: the bundle directory (teacher, ApproxNet, planner settings, table).
//! - [`choose`] (here): every candidate on dev with 95% bootstrap intervals, those within the
//!   budget of dense dev accuracy timed against dense by the bench's method
//!   ([`crate::bench::versus_dense`]), the fastest of them chosen.

use serde::{Deserialize, Serialize};

use crate::bench::{load_1min, loadavg, reliability_warnings, versus_dense, Contender, VersusDense};
use crate::data::bootstrap::Interval;
use crate::infer::Mode;
use crate::model::{EncodedInput, Encoder};
use crate::planners::Models;
use crate::train::finetune::LabeledInput;

pub mod bundle;
pub mod search;

use search::{dev_intervals, measure, within_budget};

/// Which measured speed-up [`choose`] maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Batch 1 (latency).
    B1,
    /// Batch 32 (throughput).
    B32,
}

impl Objective {
    /// The batch size it times.
    pub fn batch(self) -> usize {
        match self {
            Objective::B1 => 1,
            Objective::B32 => 32,
        }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "b1" => Ok(Objective::B1),
            "b32" => Ok(Objective::B32),
            other => Err(format!("unknown objective {other:?}: b1 (batch-1 speed-up) or b32 (batch-32 speed-up)")),
        }
    }
}

/// Settings of [`choose`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChooseOptions {
    /// Accuracy budget in points (1.0 = one accuracy point below dense dev accuracy), `> 0`.
    pub max_drop: f64,
    pub objective: Objective,
    /// Timing rounds (>= 1; the CLI asks for >= 3), alternating dense first / dense last.
    pub rounds: usize,
    /// Timed passes per round.
    pub repeats: usize,
    /// At most this many within-budget candidates are timed: those of lowest dev retention.
    pub max_timed: usize,
    /// Progress lines on stderr.
    pub quiet: bool,
}

/// One set of models the candidates run on: the original teacher and its ApproxNet, a
/// concrete run, a plan-aware fine-tuned teacher, ...
pub struct ModelSource<'a> {
    /// Shown in the table (`teacher`, `concrete θ0=-1`, `plan-aware DIR`).
    pub name: String,
    pub teacher: &'a Encoder,
    pub approx: Option<&'a Encoder>,
    /// The modes to measure on these models.
    pub modes: Vec<Mode>,
}

/// One candidate operating point, measured on dev (and timed when within the budget).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidate {
    /// Index into [`CompressTable::sources`].
    pub source: usize,
    pub label: String,
    pub mode: Mode,
    /// The arithmetic of its teacher's linear layers (its source's; ApproxNets stay fp32);
    /// fp32 in tables written before it was recorded.
    #[serde(default)]
    pub precision: crate::model::Precision,
    /// Dev accuracy (fraction) and its 95% bootstrap interval.
    pub dev_accuracy: f64,
    pub dev_accuracy_interval: Interval,
    /// 95% paired-bootstrap interval of dev accuracy minus dense dev accuracy.
    pub dev_difference_to_dense: Interval,
    /// Mean section-5 retention on dev.
    pub dev_retention: f64,
    /// Mean section-5 GFLOPs per dev example.
    pub gflops: f64,
    /// Dev accuracy within `max_drop` points of dense's (the dev estimate decides).
    pub within_budget: bool,
    /// Measured against dense at batch 1 and 32 ([`versus_dense`]); `None` when not timed.
    pub speed_b1: Option<VersusDense>,
    pub speed_b32: Option<VersusDense>,
}

impl Candidate {
    /// The measured speed-up at `objective`'s batch (dense: 1.0), if timed.
    pub fn speedup(&self, objective: Objective) -> Option<f64> {
        if self.mode == Mode::Dense && self.source == 0 {
            return Some(1.0);
        }
        match objective {
            Objective::B1 => self.speed_b1.as_ref().map(|s| s.vs_dense),
            Objective::B32 => self.speed_b32.as_ref().map(|s| s.vs_dense),
        }
    }
}

/// Everything [`choose`] measured and chose (`table.json` of a bundle).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompressTable {
    /// Names of the model sources, in order.
    pub sources: Vec<String>,
    /// Every candidate; index 0 is dense on the original teacher (the reference).
    pub candidates: Vec<Candidate>,
    /// Index of the chosen candidate: the fastest at the objective's batch among the timed
    /// within-budget ones (dense when none beats it).
    pub chosen: usize,
    /// Index of the lowest-retention within-budget candidate (for comparison).
    pub lowest_retention: usize,
    pub max_drop: f64,
    pub objective: Objective,
    pub dev_examples: usize,
    pub bench_examples: usize,
    pub rounds: usize,
    /// CPU and threads of the timing.
    pub machine: String,
    /// `/proc/loadavg`'s 1/5/15-minute load averages before and after the timing rounds (empty
    /// when nothing was timed or where unreadable; absent in tables written before they were
    /// recorded).
    #[serde(default)]
    pub loadavg_before: String,
    #[serde(default)]
    pub loadavg_after: String,
    /// Why the timing may not be trusted ([`reliability_warnings`]: a busy machine, rounds that
    /// disagree by more than 25%), as `sttabt bench` warns; empty when it looks sound.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Measure every source's modes on `dev`, with dense on `sources[0].teacher` first (the
/// reference: dev accuracy, bootstrap intervals of each candidate's accuracy and paired
/// difference to dense); time the within-budget candidates of lowest retention (at most
/// `opts.max_timed`) against dense on `bench` at batch 1 and 32; choose the fastest at the
/// objective's batch.
///
/// Errors: no sources, empty `dev` or `bench`, `max_drop <= 0`, a mode fails (e.g. needs an
/// ApproxNet its source lacks).
pub fn choose(
    sources: &[ModelSource],
    dev: &[LabeledInput],
    bench: &[EncodedInput],
    opts: &ChooseOptions,
) -> anyhow::Result<CompressTable> {
    anyhow::ensure!(!sources.is_empty(), "no models to compress");
    anyhow::ensure!(opts.max_drop.is_finite() && opts.max_drop > 0.0, "the accuracy budget must be > 0 points, got {}", opts.max_drop);
    anyhow::ensure!(!bench.is_empty(), "no examples to time");
    let progress = crate::train::Progress { quiet: opts.quiet };
    let base = &sources[0];
    let dense = measure(base.teacher, None, dev, &Mode::Dense)?;
    let dense_correct = dense.correct.clone();
    let mut measured = vec![(0usize, dense)];
    let total: usize = sources.iter().map(|s| s.modes.len()).sum();
    let bar = progress.bar(total as u64, "dev");
    for (si, s) in sources.iter().enumerate() {
        for mode in &s.modes {
            bar.set_message(format!("{} {}", s.name, mode.label()));
            measured.push((si, measure(s.teacher, s.approx, dev, mode)?));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let dense_acc = measured[0].1.dev_accuracy;
    let mut candidates = measured
        .iter()
        .map(|(si, p)| {
            let (acc_iv, diff_iv) = dev_intervals(p, &dense_correct)?;
            Ok(Candidate {
                source: *si,
                label: p.label.clone(),
                mode: p.mode.clone(),
                precision: sources[*si].teacher.precision(),
                dev_accuracy: p.dev_accuracy,
                dev_accuracy_interval: acc_iv,
                dev_difference_to_dense: diff_iv,
                dev_retention: p.dev_retention,
                gflops: p.gflops,
                within_budget: within_budget(p.dev_accuracy, dense_acc, opts.max_drop),
                speed_b1: None,
                speed_b32: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // time the within-budget candidates of lowest retention (never dense itself)
    let mut order: Vec<usize> = (1..candidates.len()).filter(|&i| candidates[i].within_budget).collect();
    order.sort_by(|&a, &b| candidates[a].dev_retention.total_cmp(&candidates[b].dev_retention).then(a.cmp(&b)));
    order.truncate(opts.max_timed);
    // dense on another source (e.g. the int8 teacher of `compress --int8`) keeps every token, so
    // it is never among the lowest retentions: timed too when within the budget
    for i in 1..candidates.len() {
        if candidates[i].within_budget && candidates[i].mode == Mode::Dense && !order.contains(&i) {
            order.push(i);
        }
    }
    let (mut load_before, mut load_after, mut warnings) = (String::new(), String::new(), Vec::new());
    if !order.is_empty() {
        let contenders: Vec<Contender> = order
            .iter()
            .map(|&i| {
                let s = &sources[candidates[i].source];
                Contender {
                    models: Models { teacher: s.teacher, approx: s.approx },
                    planner: candidates[i].mode.planner(s.teacher.layers.len()),
                }
            })
            .collect();
        let dense_models = Models { teacher: base.teacher, approx: None };
        load_before = loadavg();
        for batch in [1usize, 32] {
            progress.println(format!("timing {} candidates against dense at batch {batch}, {} rounds", order.len(), opts.rounds));
            let speeds = versus_dense(dense_models, &contenders, bench, batch, opts.rounds, opts.repeats)?;
            for (&i, sp) in order.iter().zip(speeds) {
                if batch == 1 {
                    candidates[i].speed_b1 = Some(sp);
                } else {
                    candidates[i].speed_b32 = Some(sp);
                }
            }
        }
        load_after = loadavg();
        let spreads: Vec<_> = order
            .iter()
            .flat_map(|&i| {
                let c = &candidates[i];
                [(1, &c.speed_b1), (32, &c.speed_b32)].into_iter().filter_map(|(b, v)| {
                    v.as_ref().map(|v| v.round_spread(format!("{} on {} vs dense b{b}", c.label, sources[c.source].name)))
                })
            })
            .collect();
        warnings = reliability_warnings(load_1min(&load_before), load_1min(&load_after), rayon::current_num_threads(), &spreads);
    }
    let chosen = order
        .iter()
        .copied()
        .filter(|&i| candidates[i].speedup(opts.objective).is_some_and(|s| s > 1.0))
        .max_by(|&a, &b| {
            let (sa, sb) = (candidates[a].speedup(opts.objective).unwrap_or(0.0), candidates[b].speedup(opts.objective).unwrap_or(0.0));
            sa.total_cmp(&sb).then(b.cmp(&a))
        })
        .unwrap_or(0);
    let points: Vec<search::DevPoint> = measured.into_iter().map(|(_, p)| p).collect();
    let lowest_retention = search::lowest_retention_within(&points, dense_acc, opts.max_drop).unwrap_or(0);
    Ok(CompressTable {
        sources: sources.iter().map(|s| s.name.clone()).collect(),
        candidates,
        chosen,
        lowest_retention,
        max_drop: opts.max_drop,
        objective: opts.objective,
        dev_examples: dev.len(),
        bench_examples: bench.len(),
        rounds: opts.rounds,
        machine: crate::eval::machine_line(),
        loadavg_before: load_before,
        loadavg_after: load_after,
        warnings,
    })
}

/// The one-line summary of the chosen operating point.
pub fn summary_line(t: &CompressTable) -> String {
    let c = &t.candidates[t.chosen];
    let d = &t.candidates[0];
    let speed = |s: &Option<VersusDense>| s.as_ref().map(|s| format!("{:.2}x", s.vs_dense)).unwrap_or_else(|| "1.00x".into());
    let why = if t.chosen == 0 { " (no timed candidate within the budget was faster than dense)" } else { "" };
    format!(
        "chosen: {} on {}: dev accuracy {:.2}% (dense {:.2}%, difference {} points, 95%), retention {:.1}%, speed-up vs dense b1 {} b32 {} ({} dev examples, budget {} point(s), objective {}){why}",
        c.label,
        t.sources[c.source],
        c.dev_accuracy * 100.0,
        d.dev_accuracy * 100.0,
        interval(&c.dev_difference_to_dense),
        c.dev_retention * 100.0,
        speed(&c.speed_b1),
        speed(&c.speed_b32),
        t.dev_examples,
        t.max_drop,
        match t.objective {
            Objective::B1 => "b1",
            Objective::B32 => "b32",
        }
    )
}

fn interval(iv: &Interval) -> String {
    format!("[{:+.2}, {:+.2}]", iv.lo * 100.0, iv.hi * 100.0)
}

/// The table as text: one row per candidate, the chosen one marked `*`, then the summary line.
pub fn format_table(t: &CompressTable) -> String {
    // the models column as wide as its longest name (two plan-aware teachers differ by path)
    let w = t.sources.iter().map(|n| n.chars().count()).max().unwrap_or(0).max("models".len());
    let mut s = format!(
        "  {:<28} {:<w$} {:>8} {:>16} {:>15} {:>9} {:>7} {:>6} {:>14} {:>14}\n",
        "mode", "models", "dev acc", "dev acc 95%", "Δ vs dense 95%", "retention", "GFLOPs", "budget", "xdense b1", "xdense b32"
    );
    // rounds that disagree by more than the bench's bound are marked as `sttabt bench` marks them
    let speed = |v: &Option<VersusDense>| match v {
        Some(v) => format!("{:.2} [{:.2},{:.2}]{}", v.vs_dense, v.vs_dense_min, v.vs_dense_max, v.round_spread(String::new()).mark()),
        None => "-".into(),
    };
    for (i, c) in t.candidates.iter().enumerate() {
        let src = &t.sources[c.source];
        s.push_str(&format!(
            "{} {:<28} {:<w$} {:>7.2}% {:>16} {:>15} {:>8.1}% {:>7.3} {:>6} {:>14} {:>14}\n",
            if i == t.chosen { "*" } else { " " },
            c.label,
            src,
            c.dev_accuracy * 100.0,
            format!("[{:.2}, {:.2}]", c.dev_accuracy_interval.lo * 100.0, c.dev_accuracy_interval.hi * 100.0),
            interval(&c.dev_difference_to_dense),
            c.dev_retention * 100.0,
            c.gflops,
            if c.within_budget { "in" } else { "out" },
            if i == 0 { "1.00".into() } else { speed(&c.speed_b1) },
            if i == 0 { "1.00".into() } else { speed(&c.speed_b32) },
        ));
    }
    let low = &t.candidates[t.lowest_retention];
    s.push_str(&format!(
        "lowest retention within {} point(s) on dev: {} on {} ({:.1}%)\n",
        t.max_drop,
        low.label,
        t.sources[low.source],
        low.dev_retention * 100.0
    ));
    s.push_str(&summary_line(t));
    s.push('\n');
    for w in &t.warnings {
        s.push_str(&format!("WARNING: {w}\n"));
    }
    s
}
