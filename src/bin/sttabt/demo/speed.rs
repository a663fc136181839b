//! The demo's closing measurement: every family's lowest-retention setting within 1 point of
//! dense on dev (`eval`'s `within_one_point`; the oracle and dense-cls left out) timed against
//! dense by the bench's method ([`sttabt::bench::versus_dense`]: the same sentences, >= 3 rounds
//! alternating dense first / dense last, median and range of the per-round ratios) at batch 1
//! and 32; the fastest of them (geometric mean of its two speed-ups) then against the ONNX
//! Runtime dense peer when one is installed (`sttabt bench`'s rounds, ours and the peer
//! alternating); and the one sentence that reports it.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use sttabt::approx::ApproxNet;
use sttabt::bench::{load_1min, reliability_warnings, versus_dense, BenchOptions, BenchReport, Contender, RoundSpread, VersusDense};
use sttabt::data::bootstrap::Interval;
use sttabt::eval::{EvalResults, Point};
use sttabt::infer::Mode;
use sttabt::model::{EncodedInput, Encoder, Precision};
use sttabt::planners::Models;
use sttabt::train::concrete::ConcreteModel;
use sttabt::train::ltp::LtpModel;

/// The demo's models and where they are saved (the peer comparison loads them from disk).
pub(crate) struct DemoModels<'a> {
    pub teacher: &'a Encoder,
    pub teacher_dir: &'a Path,
    pub approx: &'a ApproxNet,
    pub approx_dir: &'a Path,
    /// The plan-aware fine-tuned teacher (family `abt-ft`).
    pub plan_aware: &'a Encoder,
    pub plan_aware_dir: &'a Path,
    /// The concrete-mask runs and their directories (same order).
    pub concrete: &'a [ConcreteModel],
    pub concrete_dirs: &'a [PathBuf],
    /// The LTP runs and their directories (same order).
    pub ltp: &'a [LtpModel],
    pub ltp_dirs: &'a [PathBuf],
    /// The same teachers with their linear layers in int8, for the `<family> int8` points of
    /// `eval --int8-rows` (`None`: the evaluation has no int8 rows).
    pub int8: Option<Int8Teachers<'a>>,
}

/// [`DemoModels`]' teachers in int8 (ApproxNets stay fp32, as in the int8 rows of `eval`).
pub(crate) struct Int8Teachers<'a> {
    pub teacher: &'a Encoder,
    pub plan_aware: &'a Encoder,
    /// The concrete runs with int8 teachers (same order as `DemoModels::concrete`).
    pub concrete: &'a [ConcreteModel],
    /// The LTP runs with int8 teachers (same order as `DemoModels::ltp`).
    pub ltp: &'a [LtpModel],
}

/// How the speed stage times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SpeedSettings {
    /// Sentences timed (the first ones of the test split, as `sttabt bench`'s RT workload).
    pub examples: usize,
    /// Alternating rounds (>= 3).
    pub rounds: usize,
    /// Timed passes per round.
    pub repeats: usize,
    /// Also compare with the ONNX Runtime peer when its Python and script are found (not in
    /// `--fast`: its three rounds took 3 of the 10 minutes of a fast run on a busy machine).
    pub peer: bool,
}

/// One within-1-point setting timed against dense.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Timed {
    /// Its row in the evaluation (accuracy, intervals, retention).
    pub point: Point,
    pub b1: VersusDense,
    pub b32: VersusDense,
    /// Timed for reference only, not a candidate: dense int8 (what int8 alone buys).
    #[serde(default)]
    pub reference: bool,
}

impl Timed {
    /// Geometric mean of the batch-1 and batch-32 median speed-ups (what "fastest" maximises).
    pub fn score(&self) -> f64 {
        (self.b1.vs_dense * self.b32.vs_dense).sqrt()
    }
}

/// The chosen setting against the ONNX Runtime dense peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PeerComparison {
    /// Median per-round ratio (ours / peer) and its range: batch 1 (`a_b1`), batch 32 on
    /// length-sorted batches (`c_b32_sorted`) and in order (ours unpadded, ORT padded: `b_b32`).
    pub b1: (f64, f64, f64),
    pub b32_sorted: (f64, f64, f64),
    pub b32_in_order: (f64, f64, f64),
    /// Dense (the same architecture) against the peer at batch 1 and batch 32 (sorted).
    pub dense_b1: (f64, f64, f64),
    pub dense_b32_sorted: (f64, f64, f64),
    /// The whole bench report (every round of ours and the peer's).
    pub bench: BenchReport,
}

/// What the speed stage measured and chose (`speed/speed.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SpeedReport {
    pub settings: SpeedSettings,
    /// Every timed setting, in family order.
    pub timed: Vec<Timed>,
    /// Index into `timed` of the fastest; `None` when no pruned setting is within 1 point.
    pub chosen: Option<usize>,
    pub peer: Option<PeerComparison>,
    /// Why the peer was not compared (not installed, failed, no setting to compare).
    pub peer_note: Option<String>,
    /// Why the speed-ups may not be reliable (`sttabt::bench::reliability_warnings`: a busy
    /// machine, rounds that disagree; the peer run's own warnings too); empty when they look
    /// sound. The sentence carries them.
    #[serde(default)]
    pub warnings: Vec<String>,
    pub dense_dev_accuracy: f64,
    pub dense_test_accuracy: f64,
    /// The closing sentence.
    pub sentence: String,
}

/// The families whose within-1-point setting is a candidate (not dense, dense-cls or the oracle),
/// fp32 and, with `eval --int8-rows`, int8.
const FAMILIES: [&str; 10] =
    ["abt", "abt-ft", "concrete", "ltp", "topk", "abt int8", "abt-ft int8", "concrete int8", "ltp int8", "topk int8"];

/// One candidate point's models and folders ([`DemoModels::run_of`]).
pub(crate) struct PointRun<'a> {
    /// The models the point runs on (its own teacher, ApproxNet when its planner plans from one).
    pub models: Models<'a>,
    /// Its teacher's folder.
    pub teacher_dir: PathBuf,
    /// Its ApproxNet's folder, when its planner plans from one.
    pub approx_dir: Option<PathBuf>,
    /// Its concrete or LTP run folder (`None` for the other families).
    pub run_dir: Option<PathBuf>,
    /// The precision its teacher runs at (the point's).
    pub precision: Precision,
}

impl Int8Teachers<'_> {
    /// Whether these copies run at `precision` (the int8 rows' [`Precision::Int8`]).
    fn precision_is(&self, precision: Precision) -> bool {
        self.teacher.precision() == precision
    }
}

impl<'a> DemoModels<'a> {
    /// The run a within-1-point `p` comes from: ABT on the teacher, ABT-FT on the plan-aware
    /// teacher, top-k on the teacher, concrete by θ0 and LTP by λ among the demo's runs (`None`:
    /// another family, or no run with that setting).
    pub fn run_of(&self, p: &Point) -> Option<PointRun<'a>> {
        // an int8 point runs on the int8 copies (its folders are the fp32 models')
        let int8 = p.precision != Precision::Fp32;
        let (teacher, plan_aware, concrete, ltp) = match (&self.int8, int8) {
            (_, false) => (self.teacher, self.plan_aware, self.concrete, self.ltp),
            (Some(q), true) if q.precision_is(p.precision) => (q.teacher, q.plan_aware, q.concrete, q.ltp),
            (_, true) => return None,
        };
        let on = |teacher: &'a Encoder, dir: &Path, approx: bool| PointRun {
            models: Models { teacher, approx: approx.then_some(&self.approx.model) },
            teacher_dir: dir.to_path_buf(),
            approx_dir: approx.then(|| self.approx_dir.to_path_buf()),
            run_dir: None,
            precision: p.precision,
        };
        let family = p.int8_row_of().unwrap_or(&p.family);
        match (&p.mode, family) {
            (Mode::Abt { .. }, "abt") => Some(on(teacher, self.teacher_dir, true)),
            (Mode::Abt { .. }, "abt-ft") => Some(on(plan_aware, self.plan_aware_dir, true)),
            (Mode::TopK { .. }, _) => Some(on(teacher, self.teacher_dir, false)),
            (Mode::Dense, "dense") => Some(on(teacher, self.teacher_dir, false)),
            (Mode::Concrete { theta0, .. }, _) => {
                concrete.iter().zip(self.concrete_dirs).find(|(c, _)| c.theta0 == *theta0).map(|(c, d)| PointRun {
                    models: Models { teacher: &c.teacher, approx: Some(&c.approx.model) },
                    teacher_dir: d.join("teacher"),
                    approx_dir: Some(d.join("approx")),
                    run_dir: Some(d.clone()),
                    precision: p.precision,
                })
            }
            (Mode::Ltp { lambda, .. }, _) => ltp.iter().zip(self.ltp_dirs).find(|(l, _)| l.lambda == *lambda).map(|(l, d)| PointRun {
                models: Models { teacher: &l.teacher, approx: None },
                teacher_dir: d.join("teacher"),
                approx_dir: None,
                run_dir: Some(d.clone()),
                precision: p.precision,
            }),
            _ => None,
        }
    }
}

/// The models `p` runs on, and the bench options that time it beside dense (`None`: not a
/// candidate family, or its run is missing).
fn contestant<'a>(p: &Point, m: &DemoModels<'a>) -> Option<(Models<'a>, BenchOptions)> {
    let run = m.run_of(p)?;
    let bench = |model: &Path, approx: Option<&Path>| BenchOptions {
        model: model.to_path_buf(),
        approx: approx.map(Path::to_path_buf),
        lengths: Vec::new(),
        memory: false,
        rt_baselines: false,
        fp32_dense: false,
        concrete: Vec::new(),
        ltp: Vec::new(),
        modes: Vec::new(),
        precision: run.precision,
        ..BenchOptions::default()
    };
    // concrete and LTP runs are benched by their run folder, beside the original teacher as dense
    let opts = match &p.mode {
        Mode::Concrete { .. } => BenchOptions { concrete: vec![run.run_dir.clone()?], ..bench(m.teacher_dir, None) },
        Mode::Ltp { .. } => BenchOptions { ltp: vec![run.run_dir.clone()?], ..bench(m.teacher_dir, None) },
        _ => BenchOptions { modes: vec![p.mode.clone()], ..bench(&run.teacher_dir, run.approx_dir.as_deref()) },
    };
    Some((run.models, opts))
}

/// Time the within-1-point settings of `results` against dense on `inputs`, choose the fastest,
/// compare it with the peer (when asked and installed) and write the sentence.
///
/// Errors: fewer than 3 rounds, no inputs, or a timing run fails (the peer failing is a note,
/// not an error).
pub(crate) fn measure(
    results: &EvalResults,
    models: &DemoModels,
    inputs: &[EncodedInput],
    settings: &SpeedSettings,
    progress: &sttabt::train::Progress,
) -> Result<SpeedReport> {
    anyhow::ensure!(settings.rounds >= 3, "the speed comparison needs at least 3 alternating rounds, got {}", settings.rounds);
    let inputs = &inputs[..settings.examples.min(inputs.len())];
    anyhow::ensure!(!inputs.is_empty(), "no sentences to time");
    let layers = models.teacher.layers.len();
    let mut points: Vec<(&Point, Models, BenchOptions)> = Vec::new();
    for fam in FAMILIES {
        if let Some(p) = results.within_one_point.iter().find(|p| p.family == fam) {
            if let Some((m, b)) = contestant(p, models) {
                points.push((p, m, b));
            }
        }
    }
    // with int8 rows: dense int8 too, timed for reference (what int8 alone buys), never chosen
    let candidates = points.len();
    if let Some(p) = results.points.iter().find(|p| p.int8_row_of() == Some("dense")) {
        if let Some((m, b)) = contestant(p, models) {
            points.push((p, m, b));
        }
    }
    let mut timed: Vec<Timed> = Vec::new();
    let load_before = sttabt::bench::loadavg();
    if !points.is_empty() {
        let contenders: Vec<Contender> = points.iter().map(|(p, m, _)| Contender { models: *m, planner: p.mode.planner(layers) }).collect();
        let dense = Models { teacher: models.teacher, approx: None };
        let mut by_batch = Vec::new();
        for batch in [1usize, 32] {
            progress.println(format!(
                "      timing {} setting(s) against dense at batch {batch}: {} sentences, {} alternating rounds",
                contenders.len(),
                inputs.len(),
                settings.rounds
            ));
            by_batch.push(versus_dense(dense, &contenders, inputs, batch, settings.rounds, settings.repeats)?);
        }
        let b32 = by_batch.pop().unwrap_or_default();
        let b1 = by_batch.pop().unwrap_or_default();
        timed = points
            .iter()
            .zip(b1)
            .zip(b32)
            .enumerate()
            .map(|(i, (((p, _, _), b1), b32))| Timed { point: (*p).clone(), b1, b32, reference: i >= candidates })
            .collect();
    }
    // what the machine was doing while the settings were timed, and how far the rounds agree
    let spreads: Vec<RoundSpread> = timed
        .iter()
        .flat_map(|t| [(1, &t.b1), (32, &t.b32)].map(|(b, v)| v.round_spread(format!("{} vs dense b{b}", t.point.label))))
        .collect();
    let threads = rayon::current_num_threads();
    let mut warnings = reliability_warnings(load_1min(&load_before), load_1min(&sttabt::bench::loadavg()), threads, &spreads);
    let chosen = (0..timed.len().min(candidates)).max_by(|&a, &b| timed[a].score().total_cmp(&timed[b].score()).then(b.cmp(&a)));
    let (mut peer, mut peer_note) = (None, None);
    match (chosen, settings.peer) {
        (None, _) => peer_note = Some("no pruned setting within 1 point to compare".into()),
        (Some(_), false) => peer_note = Some("not run in --fast (its rounds take minutes)".into()),
        (Some(i), true) => {
            let (_, _, b) = &points[i];
            let opts = BenchOptions {
                rt_examples: inputs.len(),
                batches: vec![1, 32],
                rounds: settings.rounds,
                repeats: settings.repeats,
                // an int8 setting against ORT's own int8 (dynamic quantisation of the same graph)
                peer: Some(if b.precision == Precision::Fp32 { "ort" } else { "ort-int8" }.into()),
                ..b.clone()
            };
            match sttabt::bench::check_options(&opts) {
                Err(e) => peer_note = Some(format!("ONNX Runtime peer not installed or not found: {e:#}")),
                Ok(()) => {
                    progress.println(format!("      the fastest against the ONNX Runtime peer, {} alternating rounds", settings.rounds));
                    match sttabt::bench::run_bench(&opts) {
                        Ok(r) => match compare_with_peer(r) {
                            Ok(p) => peer = Some(p),
                            Err(e) => peer_note = Some(format!("{e:#}")),
                        },
                        Err(e) => peer_note = Some(format!("the peer comparison failed: {e:#}")),
                    }
                }
            }
        }
    }
    if let Some(p) = &peer {
        warnings.extend(p.bench.warnings.iter().map(|w| format!("the peer comparison: {w}")));
    }
    let mut report = SpeedReport {
        settings: settings.clone(),
        timed,
        chosen,
        peer,
        peer_note,
        warnings,
        dense_dev_accuracy: results.points[0].dev_accuracy,
        dense_test_accuracy: results.dense_test_accuracy,
        sentence: String::new(),
    };
    report.sentence = sentence(&report);
    Ok(report)
}

/// The peer ratios of the chosen row (the one that is not dense) and of dense, from a bench
/// report with the RT workload only.
fn compare_with_peer(r: BenchReport) -> Result<PeerComparison> {
    if let Some(note) = &r.peer_note {
        anyhow::bail!("the peer comparison is incomplete: {note}");
    }
    let ratio = |workload: &str, batch: usize, dense: bool| -> Result<(f64, f64, f64)> {
        let row = r
            .rows
            .iter()
            // rows are labelled `dense` or, in int8, `dense int8`
            .find(|x| x.workload == workload && x.batch == batch && (x.mode.split_whitespace().next() == Some("dense")) == dense)
            .ok_or_else(|| anyhow::anyhow!("the bench has no {workload} batch-{batch} row"))?;
        let (Some(m), Some((lo, hi))) = (row.vs_peer, row.vs_peer_range) else {
            anyhow::bail!("the peer ran no workload matching {workload} at batch {batch}")
        };
        Ok((m, lo, hi))
    };
    Ok(PeerComparison {
        b1: ratio("rt", 1, false)?,
        b32_sorted: ratio("rt-sorted", 32, false)?,
        b32_in_order: ratio("rt", 32, false)?,
        dense_b1: ratio("rt", 1, true)?,
        dense_b32_sorted: ratio("rt-sorted", 32, true)?,
        bench: r,
    })
}

fn iv_points(iv: Option<Interval>) -> String {
    match iv {
        Some(iv) => format!("[{:+.2}, {:+.2}]", iv.lo * 100.0, iv.hi * 100.0),
        None => "[-]".into(),
    }
}

fn iv_pct(iv: Option<Interval>) -> String {
    match iv {
        Some(iv) => format!("[{:.2}, {:.2}]", iv.lo * 100.0, iv.hi * 100.0),
        None => "[-]".into(),
    }
}

/// The closing sentence of the demo.
pub(crate) fn sentence(r: &SpeedReport) -> String {
    let x = |v: &VersusDense| format!("{:.2}x ({:.2}-{:.2})", v.vs_dense, v.vs_dense_min, v.vs_dense_max);
    // what int8 alone buys, when it was timed
    let int8_alone = r.timed.iter().find(|t| t.reference).map(|d| {
        format!(
            "int8 alone ({}, no pruning, test accuracy {:.2}%): {} at batch 1 and {} at batch 32",
            d.point.label,
            d.point.test_accuracy * 100.0,
            x(&d.b1),
            x(&d.b32)
        )
    });
    let Some(t) = r.chosen.map(|i| &r.timed[i]) else {
        let mut s = format!(
            "No pruned setting is within 1 point of dense on dev (dense dev accuracy {:.2}%): dense stays the fastest pruned setting within 1 point",
            r.dense_dev_accuracy * 100.0
        );
        if let Some(a) = int8_alone {
            s.push_str(&format!("; {a}"));
        }
        s.push('.');
        return s;
    };
    let p = &t.point;
    let mut s = format!(
        "Fastest pruned setting within 1 point of dense (decided on dev: {:.2}% vs {:.2}%): {}, {:.1}% retention, test accuracy {:.2}% {} \
         (dense {:.2}%, difference {} points, 95% bootstrap); measured speed-up vs dense {} at batch 1 and {} at batch 32 \
         (median (range) of {} alternating rounds on {} test sentences)",
        p.dev_accuracy * 100.0,
        r.dense_dev_accuracy * 100.0,
        p.label,
        p.retention * 100.0,
        p.test_accuracy * 100.0,
        iv_pct(p.test_accuracy_interval),
        r.dense_test_accuracy * 100.0,
        iv_points(p.test_difference_to_dense),
        x(&t.b1),
        x(&t.b32),
        r.settings.rounds,
        t.b1.examples
    );
    let int8 = p.precision != Precision::Fp32;
    if int8 {
        s.push_str(&format!("; its teacher's linear layers run in {} (ApproxNet fp32), dense in fp32", p.precision));
    }
    if let Some(a) = int8_alone {
        s.push_str(&format!("; {a}"));
    }
    // what the pruning adds on top of int8: the ratio of the two medians
    if let (true, Some(d)) = (int8, r.timed.iter().find(|t| t.reference)) {
        s.push_str(&format!(
            " (the pruning's share over int8 alone: {:.2}x at batch 1 and {:.2}x at batch 32, ratios of the medians)",
            t.b1.vs_dense / d.b1.vs_dense,
            t.b32.vs_dense / d.b32.vs_dense
        ));
    }
    if int8 {
        let fp32 =
            r.timed.iter().filter(|t| !t.reference && t.point.precision == Precision::Fp32).max_by(|a, b| a.score().total_cmp(&b.score()));
        match fp32 {
            Some(f) => s.push_str(&format!(
                "; the fastest fp32 setting within 1 point: {} ({:.1}% retention), {} and {}",
                f.point.label,
                f.point.retention * 100.0,
                x(&f.b1),
                x(&f.b32)
            )),
            None => s.push_str("; no fp32 pruned setting is within 1 point"),
        }
    }
    let y = |v: (f64, f64, f64)| format!("{:.2}x ({:.2}-{:.2})", v.0, v.1, v.2);
    match (&r.peer, &r.peer_note) {
        (Some(c), _) => s.push_str(&format!(
            "; vs the ONNX Runtime {} dense peer {} at batch 1 and {} at batch 32 (length-sorted batches; our dense{} alone: {} and {}).",
            if int8 { "int8" } else { "fp32" },
            y(c.b1),
            y(c.b32_sorted),
            if int8 { " int8" } else { "" },
            y(c.dense_b1),
            y(c.dense_b32_sorted)
        )),
        (None, Some(note)) => s.push_str(&format!("; ONNX Runtime peer: {note}.")),
        (None, None) => s.push('.'),
    }
    for w in &r.warnings {
        s.push_str(&format!(" Caution: {w}."));
    }
    s
}
