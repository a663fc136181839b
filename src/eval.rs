//! `sttabt eval`: every inference mode on dev and test, with accuracy, retention (section 5),
//! GFLOPs per example (ApproxNet included), measured examples/s at batch 1 and 32 and the speed-up
//! over dense measured in the same run; plus per mode the lowest retention within 1 point of dense
//! (chosen on dev, reported on test), with 95% bootstrap intervals on test: of the accuracy, and of
//! its paired difference to dense ([`crate::data::bootstrap`]).

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::bootstrap::{Bootstrap, Interval};
use crate::data::metrics::Metric;
use crate::data::rt::SplitInfo;
use crate::data::Label;
use crate::infer::{classify, Mode};
use crate::model::{EncodedInput, Encoder, Precision};
use crate::planners::topk::calibrate_k_min;
use crate::train::concrete::ConcreteModel;
use crate::train::finetune::LabeledInput;
use crate::train::ltp::LtpModel;

/// What to evaluate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalOptions {
    /// ABT keep fractions.
    pub ks: Vec<f64>,
    /// At most this many examples per split.
    pub limit: Option<usize>,
    /// Examples timed per mode and batch size.
    pub timing_examples: usize,
    pub quiet: bool,
    /// The task's primary metric (accuracy; Matthews correlation for CoLA; ...): it decides the
    /// "within 1 point of dense" operating points.
    pub metric: Metric,
    /// Also every mode (the oracle aside) with its teacher's linear layers in int8
    /// ([`Precision::Int8`], ApproxNets fp32), as family `<family> int8` beside the fp32 rows,
    /// against the same fp32 dense: pruning and int8 together as operating points (issue 17).
    #[serde(default)]
    pub int8_rows: bool,
}

/// One evaluated operating point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub mode: Mode,
    pub label: String,
    pub family: String,
    pub dev_accuracy: f64,
    pub test_accuracy: f64,
    /// The task's primary metric on dev and test (equal to the accuracies when it is accuracy).
    pub dev_metric: f64,
    pub test_metric: f64,
    /// Mean section-5 retention on test.
    pub retention: f64,
    pub dev_retention: f64,
    /// Mean GFLOPs per test example (teacher sparse part + ApproxNet).
    pub gflops: f64,
    pub examples_per_s_b1: f64,
    pub examples_per_s_b32: f64,
    pub speedup_b1: f64,
    pub speedup_b32: f64,
    /// 95% percentile-bootstrap interval of the test accuracy (fraction; 2,000 resamples of the
    /// test examples, seeded).
    #[serde(default)]
    pub test_accuracy_interval: Option<Interval>,
    /// 95% paired-bootstrap interval of `test accuracy - dense test accuracy` (fraction; the same
    /// resampled examples for both, so it reflects where the two disagree). Exactly 0 for dense.
    #[serde(default)]
    pub test_difference_to_dense: Option<Interval>,
    /// The arithmetic of the point's teacher (linear layers; ApproxNets are fp32 in int8 rows of
    /// [`EvalOptions::int8_rows`]); fp32 in files written before it was recorded.
    #[serde(default)]
    pub precision: Precision,
}

/// What [`EvalOptions::int8_rows`] appends to an fp32 row's label and family (`abt int8`).
pub const INT8_ROW_SUFFIX: &str = " int8";

impl Point {
    /// For a row of [`EvalOptions::int8_rows`], the fp32 family it repeats with an int8 teacher
    /// (`Some("abt")` for family `abt int8`); `None` for every other row, including the rows of
    /// a run made wholly in int8 (`--precision int8`, whose families carry no suffix).
    pub fn int8_row_of(&self) -> Option<&str> {
        self.family.strip_suffix(INT8_ROW_SUFFIX)
    }
}

/// All points plus the per-family operating point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResults {
    pub points: Vec<Point>,
    /// Per family: the point with the lowest dev retention whose dev accuracy is within 1 point of dense.
    pub within_one_point: Vec<Point>,
    pub dense_test_accuracy: f64,
    /// Operating points that were asked for but not evaluated, and why (e.g. a manual top-k
    /// retention its schedule cannot reach).
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Name of the primary metric (`accuracy`, `matthews_corr`, `f1`, ...).
    pub metric: String,
    pub test_examples: usize,
    pub dev_examples: usize,
    pub threads: usize,
    /// The arithmetic the run used, set by the caller, e.g. `teacher int8, ApproxNet fp32; int8
    /// kernels: avx2` (`None`: not recorded, fp32 results of older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// The arithmetic of the ApproxNets of the fp32 rows (`--approx-precision`; the int8 rows'
    /// are fp32); `None` when no ApproxNet was given, and in files written before it was
    /// recorded.
    #[serde(default)]
    pub approx_precision: Option<Precision>,
}

/// Accuracy, primary metric, mean retention and GFLOPs, and per-example correctness of `mode` on `data`.
fn score(teacher: &Encoder, approx: Option<&Encoder>, data: &[LabeledInput], mode: &Mode, metric: Metric) -> anyhow::Result<Scored> {
    let (mut ret, mut flops) = (0.0f64, 0.0f64);
    let mut preds = Vec::with_capacity(data.len());
    for chunk in data.chunks(32) {
        let inputs: Vec<EncodedInput> = chunk.iter().map(|d| d.input.clone()).collect();
        for p in classify(teacher, approx, &inputs, mode)? {
            preds.push(Label::Class(p.label));
            ret += p.retention;
            flops += p.flops as f64;
        }
    }
    let gold: Vec<Label> = data.iter().map(|d| Label::Class(d.label)).collect();
    let acc = Metric::Accuracy.compute(&preds, &gold)?;
    let m = metric.compute(&preds, &gold)?;
    let n = data.len().max(1) as f64;
    let correct = preds.iter().zip(&gold).map(|(p, g)| p == g).collect();
    Ok(Scored { accuracy: acc, metric: m, retention: ret / n, gflops: flops / n / 1e9, correct })
}

/// What [`score`] measures of one mode on one split.
struct Scored {
    accuracy: f64,
    /// The task's primary metric.
    metric: f64,
    /// Mean section-5 retention.
    retention: f64,
    /// Mean GFLOPs per example.
    gflops: f64,
    /// Per example: was the predicted label right (for the bootstrap intervals).
    correct: Vec<bool>,
}

/// Examples per second, end to end from token ids (ApproxNet and planning included).
pub fn throughput(teacher: &Encoder, approx: Option<&Encoder>, inputs: &[EncodedInput], mode: &Mode, batch: usize) -> anyhow::Result<f64> {
    // one warm-up batch, then the median of three passes (single passes of a few hundred ms
    // moved by up to 1.5x on a shared VM)
    classify(teacher, approx, &inputs[..batch.min(inputs.len())], mode)?;
    let mut rates = Vec::with_capacity(3);
    for _ in 0..3 {
        let start = Instant::now();
        for chunk in inputs.chunks(batch) {
            classify(teacher, approx, chunk, mode)?;
        }
        rates.push(inputs.len() as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[1])
}

/// Evaluate dense, ABT (if `approx`), ABT-actual, manual top-k (calibrated to the ABT-actual
/// retentions) and each concrete-mask model on dev and test.
pub fn evaluate_all(
    teacher: &Encoder,
    approx: Option<&Encoder>,
    concrete: &[ConcreteModel],
    ltp: &[LtpModel],
    dev: &[LabeledInput],
    test: &[LabeledInput],
    opts: &EvalOptions,
) -> anyhow::Result<EvalResults> {
    evaluate_with(teacher, approx, concrete, ltp, &[], &[], dev, test, opts)
}

/// One mode's row on `teacher` / `approx`: dev and test scores, examples/s at batch 1 and 32 on
/// `timing`, bootstrap intervals of the test accuracy and of its paired difference to dense, and
/// the speed-ups over dense; `dense` is dense's per-example test correctness and b1 / b32 rates
/// (`None`: this row is dense itself). Also returns the row's per-example test correctness.
#[allow(clippy::too_many_arguments)]
fn point_of(
    teacher: &Encoder,
    approx: Option<&Encoder>,
    mode: &Mode,
    (label, family): (String, String),
    dev: &[LabeledInput],
    test: &[LabeledInput],
    timing: &[EncodedInput],
    metric: Metric,
    dense: Option<(&[bool], f64, f64)>,
) -> anyhow::Result<(Point, Vec<bool>)> {
    let Scored { accuracy: dev_acc, metric: dev_metric, retention: dev_ret, .. } = score(teacher, approx, dev, mode, metric)?;
    let Scored { accuracy: test_acc, metric: test_metric, retention: ret, gflops, correct } = score(teacher, approx, test, mode, metric)?;
    let b1 = throughput(teacher, approx, timing, mode, 1)?;
    let b32 = throughput(teacher, approx, timing, mode, 32)?;
    let (dense_correct, d1, d32) = dense.unwrap_or((&correct, b1, b32));
    let bootstrap = Bootstrap::default();
    let point = Point {
        label,
        family,
        mode: mode.clone(),
        dev_accuracy: dev_acc,
        test_accuracy: test_acc,
        dev_metric,
        test_metric,
        retention: ret,
        dev_retention: dev_ret,
        gflops,
        examples_per_s_b1: b1,
        examples_per_s_b32: b32,
        speedup_b1: b1 / d1,
        speedup_b32: b32 / d32,
        test_accuracy_interval: bootstrap.accuracy(&correct).ok(),
        test_difference_to_dense: bootstrap.paired_difference(&correct, dense_correct).ok(),
        precision: teacher.precision(),
    };
    Ok((point, correct))
}

/// A teacher fine-tuned under its own ABT plans (`sttabt finetune --plan-aware`, ALGORITHM.md
/// section 8), evaluated with the same ApproxNet at every keep fraction as family `abt-ft`
/// against the original dense teacher.
#[derive(Debug, Clone)]
pub struct PlanAwareTeacher {
    /// Shown in the labels (`abt-ft[name] k=0.30`); empty: `abt-ft k=0.30`.
    pub name: String,
    pub teacher: Encoder,
}

/// [`evaluate_all`] plus `extra` modes run on `teacher` and `approx` (e.g. a bundle's planner;
/// a concrete mode there runs on `teacher` and `approx` when no run in `concrete` has its θ0),
/// and ABT at every `opts.ks` on each `plan_aware` teacher (family `abt-ft`; needs `approx`).
///
/// Errors: empty `dev` or `test`, no classification head, a mode fails (e.g. needs an ApproxNet
/// and `approx` is `None`).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with(
    teacher: &Encoder,
    approx: Option<&Encoder>,
    concrete: &[ConcreteModel],
    ltp: &[LtpModel],
    extra: &[Mode],
    plan_aware: &[PlanAwareTeacher],
    dev: &[LabeledInput],
    test: &[LabeledInput],
    opts: &EvalOptions,
) -> anyhow::Result<EvalResults> {
    anyhow::ensure!(!dev.is_empty() && !test.is_empty(), "evaluation needs dev and test examples");
    anyhow::ensure!(teacher.classifier.is_some(), "the model has no classification head; fine-tune one with `sttabt finetune`");
    // `dense` first: every speed-up and the 1-point budget are against the full dense pass
    let mut modes = vec![Mode::Dense, Mode::DenseCls];
    if approx.is_some() {
        modes.extend(opts.ks.iter().map(|&k| Mode::Abt { k }));
    }
    modes.extend(opts.ks.iter().map(|&k| Mode::AbtActual { k }));
    modes.extend(concrete.iter().map(|c| Mode::Concrete { theta0: c.theta0, theta: c.theta.clone() }));
    modes.extend(ltp.iter().map(|m| Mode::Ltp { lambda: m.lambda, theta: m.theta.clone(), score: m.score }));
    if let Some(m) = extra.iter().find(|m| m.needs_approx() && approx.is_none()) {
        anyhow::bail!("mode {} plans from an ApproxNet, and none was given", m.label());
    }
    modes.extend(extra.iter().filter(|m| !modes.contains(m)).cloned().collect::<Vec<_>>());
    anyhow::ensure!(plan_aware.is_empty() || approx.is_some(), "plan-aware teachers are evaluated under ABT plans: give the ApproxNet");
    // the mode and, for `abt-ft` rows, the plan-aware teacher it runs on
    let mut modes: Vec<(Mode, Option<usize>)> = modes.into_iter().map(|m| (m, None)).collect();
    for (j, _) in plan_aware.iter().enumerate() {
        modes.extend(opts.ks.iter().map(|&k| (Mode::Abt { k }, Some(j))));
    }
    // the teacher and ApproxNet a mode runs on: ABT-FT rows on their plan-aware teacher, concrete
    // and LTP rows on their run's
    let models_of = |mode: &Mode, pa: Option<usize>| -> anyhow::Result<(&Encoder, Option<&Encoder>)> {
        Ok(match (mode, pa) {
            (_, Some(j)) => (&plan_aware[j].teacher, approx),
            (mode, None) => match mode {
                Mode::Concrete { theta0, .. } => match concrete.iter().find(|c| c.theta0 == *theta0) {
                    Some(c) => (&c.teacher, Some(&c.approx.model)),
                    None => (teacher, approx),
                },
                Mode::Ltp { lambda, .. } => {
                    let m = ltp.iter().find(|m| m.lambda == *lambda).ok_or_else(|| anyhow::anyhow!("LTP model missing"))?;
                    (&m.teacher, None)
                }
                _ => (teacher, approx),
            },
        })
    };
    // each fp32 point's plan-aware teacher (its mode is the point's), for its int8 row
    let mut plan_aware_of: Vec<Option<usize>> = Vec::new();
    let timing: Vec<EncodedInput> = test.iter().take(opts.timing_examples.max(1)).map(|d| d.input.clone()).collect();
    let progress = crate::train::Progress { quiet: opts.quiet };
    let bar = progress.bar((modes.len() + opts.ks.len()) as u64, "eval");
    let mut points: Vec<Point> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    // dense's per-example correctness on test and its b1 / b32 rates (the first mode), for the
    // paired intervals and the speed-ups
    let mut dense_ref: Option<(Vec<bool>, f64, f64)> = None;
    let mut i = 0;
    while i < modes.len() {
        let (mode, pa) = modes[i].clone();
        let (label, family) = match pa {
            Some(j) => {
                let name = &plan_aware[j].name;
                let tag = if name.is_empty() { String::new() } else { format!("[{name}]") };
                (mode.label().replacen("abt", &format!("abt-ft{tag}"), 1), "abt-ft".to_string())
            }
            None => (mode.label(), mode.family().to_string()),
        };
        bar.set_message(label.clone());
        let (teacher, approx) = models_of(&mode, pa)?;
        plan_aware_of.push(pa);
        let reference = dense_ref.as_ref().map(|(c, d1, d32): &(Vec<bool>, f64, f64)| (c.as_slice(), *d1, *d32));
        let (point, correct) = point_of(teacher, approx, &mode, (label.clone(), family), dev, test, &timing, opts.metric, reference)?;
        let dev_ret = point.dev_retention;
        if dense_ref.is_none() {
            dense_ref = Some((correct, point.examples_per_s_b1, point.examples_per_s_b32));
        }
        points.push(point);
        // after the ABT-actual sweep, add manual top-k at the same retentions
        if let (Mode::AbtActual { .. }, None) = (&mode, pa) {
            let lengths: Vec<usize> = dev.iter().map(|d| d.input.len()).collect();
            match calibrate_k_min(&lengths, teacher.layers.len(), dev_ret) {
                Ok(k_min) => {
                    if !modes.iter().any(|(m, _)| matches!(m, Mode::TopK { k_min: k } if (k - k_min).abs() < 1e-6)) {
                        modes.push((Mode::TopK { k_min }, None));
                    }
                }
                // a point at the schedule's floor would not be at this retention: skip it, say so
                Err(e) => {
                    let note = format!("manual top-k at {label}'s dev retention {:.3}: {e}", dev_ret);
                    bar.suspend(|| eprintln!("note: skipped {note}"));
                    skipped.push(note);
                }
            }
        }
        bar.inc(1);
        i += 1;
        if i == modes.len() {
            bar.set_length(i as u64);
        }
    }
    bar.finish_and_clear();
    if opts.int8_rows {
        let fp32_points = points.len();
        // one int8 copy per distinct teacher (calibrated once), in the order first met
        let mut int8: Vec<(*const Encoder, Encoder)> = Vec::new();
        let bar = progress.bar(fp32_points as u64, "eval int8");
        for i in 0..fp32_points {
            let (mode, pa) = (points[i].mode.clone(), plan_aware_of[i]);
            if points[i].family == "abt-actual" {
                bar.inc(1);
                continue;
            }
            let (t32, approx) = models_of(&mode, pa)?;
            let key = t32 as *const Encoder;
            if !int8.iter().any(|(k, _)| *k == key) {
                let q = t32.clone().with_precision(Precision::Int8).map_err(|e| anyhow::anyhow!("switching a teacher to int8: {e}"))?;
                int8.push((key, q));
            }
            let teacher = &int8.iter().find(|(k, _)| *k == key).expect("converted above").1;
            let (label, family) = (format!("{}{INT8_ROW_SUFFIX}", points[i].label), format!("{}{INT8_ROW_SUFFIX}", points[i].family));
            bar.set_message(label.clone());
            let reference = dense_ref.as_ref().map(|(c, d1, d32)| (c.as_slice(), *d1, *d32));
            points.push(point_of(teacher, approx, &mode, (label, family), dev, test, &timing, opts.metric, reference)?.0);
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    let dense_dev = points[0].dev_metric;
    let mut within = Vec::new();
    let families = ["dense", "dense-cls", "abt", "abt-ft", "abt-actual", "topk", "concrete", "ltp"];
    let int8_families: Vec<String> = families.iter().map(|f| format!("{f}{INT8_ROW_SUFFIX}")).collect();
    for fam in families.iter().copied().chain(int8_families.iter().map(String::as_str)) {
        if let Some(best) = points
            .iter()
            .filter(|p| p.family == fam && p.dev_metric >= dense_dev - 0.01)
            .min_by(|a, b| a.dev_retention.total_cmp(&b.dev_retention))
        {
            within.push(best.clone());
        }
    }
    Ok(EvalResults {
        dense_test_accuracy: points[0].test_accuracy,
        metric: opts.metric.name().into(),
        points,
        within_one_point: within,
        skipped,
        test_examples: test.len(),
        dev_examples: dev.len(),
        threads: rayon::current_num_threads(),
        precision: None,
        approx_precision: approx.or(concrete.first().map(|c| &c.approx.model)).map(Encoder::precision),
    })
}

/// Write `results.json` and `results.csv` into `out` (atomically).
pub fn write_results(r: &EvalResults, out: &Path, data: &str, split: Option<&SplitInfo>) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let json = serde_json::json!({"data": data, "split": split, "results": r, "machine": machine_line()});
    crate::model::checkpoint::write_atomic(&out.join("results.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    // the task's primary metric gets its own columns (named `dev_metric_<name>` so that
    // accuracy tasks do not repeat the accuracy column names)
    let mut csv = format!("mode,dev_accuracy,test_accuracy,dev_metric_{0},test_metric_{0},retention,gflops,examples_per_s_b1,examples_per_s_b32,speedup_b1,speedup_b32,precision\n", r.metric);
    // each row's arithmetic (quoted: it holds commas), as the run's line gives it: the
    // ApproxNet only where the row's mode runs one (an int8 row's is fp32), the int8 kernels
    // where a model is int8
    let quoted = |p: &str| format!("\"{}\"", p.replace('"', "\"\""));
    for p in &r.points {
        let approx = if p.int8_row_of().is_some() { Some(Precision::Fp32) } else { r.approx_precision };
        let approx = approx.filter(|_| p.mode.needs_approx());
        let precision = quoted(&crate::precision_eval::describe_arithmetic(p.precision, approx));
        csv.push_str(&format!(
            "{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.1},{:.1},{:.3},{:.3},{precision}\n",
            p.label,
            p.dev_accuracy,
            p.test_accuracy,
            p.dev_metric,
            p.test_metric,
            p.retention,
            p.gflops,
            p.examples_per_s_b1,
            p.examples_per_s_b32,
            p.speedup_b1,
            p.speedup_b32
        ));
    }
    crate::model::checkpoint::write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    // the data set's name, without the split details in parentheses
    let name: String = data.split(" (").next().unwrap_or(data).chars().take(48).collect();
    let plot = crate::plot::PlotData {
        points: r
            .points
            .iter()
            .map(|p| crate::plot::PlotPoint {
                family: p.family.clone(),
                int8_of: p.int8_row_of().map(str::to_string),
                retention: p.retention,
                examples_per_s_b1: p.examples_per_s_b1,
                test_metric: p.test_metric,
            })
            .collect(),
        dense_test_metric: r.dense_test_accuracy,
        metric: r.metric.clone(),
    };
    crate::plot::plot_results(&plot, out, name.trim())?;
    Ok(())
}

/// CPU model and thread count, for recording with results.
pub fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpu}, {} threads", rayon::current_num_threads())
}

/// A terminal table of all points and the within-1-point operating points.
pub fn format_table(r: &EvalResults) -> String {
    let short = if r.metric == "accuracy" { "acc".to_string() } else { r.metric.chars().take(4).collect() };
    let mut s = format!("{} dev / {} test examples", r.dev_examples, r.test_examples);
    if let Some(p) = &r.precision {
        s.push_str(&format!("; {p}"));
    }
    s.push('\n');
    s += &format!(
        "{:<22} {:>8} {:>8} {:>15} {:>16} {:>9} {:>8} {:>9} {:>9} {:>8} {:>8}\n",
        "mode",
        format!("dev {short}"),
        format!("test {short}"),
        "test acc 95%",
        "Δacc vs dense",
        "retention",
        "GFLOPs",
        "ex/s b1",
        "ex/s b32",
        "speedup1",
        "speedup32"
    );
    for p in &r.points {
        s.push_str(&format!(
            "{:<22} {:>7.2}% {:>7.2}% {:>15} {:>16} {:>8.1}% {:>8.3} {:>9.1} {:>9.1} {:>7.2}x {:>7.2}x\n",
            p.label,
            p.dev_metric * 100.0,
            p.test_metric * 100.0,
            interval_text(p.test_accuracy_interval, false),
            interval_text(p.test_difference_to_dense, true),
            p.retention * 100.0,
            p.gflops,
            p.examples_per_s_b1,
            p.examples_per_s_b32,
            p.speedup_b1,
            p.speedup_b32
        ));
    }
    for note in &r.skipped {
        s.push_str(&format!("skipped (not evaluated): {note}\n"));
    }
    s.push_str("\nlowest retention within 1 point of dense (chosen on dev, reported on test):\n");
    let mut families: Vec<&str> = Vec::new();
    for p in &r.points {
        if !families.contains(&p.family.as_str()) {
            families.push(&p.family);
        }
    }
    for fam in families {
        let note = if fam == "abt-actual" { "  (oracle: needs a dense teacher pass, saves nothing)" } else { "" };
        match r.within_one_point.iter().find(|p| p.family == fam) {
            Some(p) => s.push_str(&format!(
                "  {:<14} {:<24} test {} {:.2}% (accuracy vs dense {} points, 95%)  retention {:.1}%  speed-up b1 {:.2}x b32 {:.2}x{note}\n",
                p.family,
                p.label,
                r.metric,
                p.test_metric * 100.0,
                interval_text(p.test_difference_to_dense, true),
                p.retention * 100.0,
                p.speedup_b1,
                p.speedup_b32
            )),
            None => s.push_str(&format!("  {fam:<14} none of its points is within 1 point of dense on dev{note}\n")),
        }
    }
    s
}

/// `[lo, hi]` in percent (points for a difference, signed), or `-` when there is no interval.
fn interval_text(iv: Option<Interval>, signed: bool) -> String {
    match iv {
        Some(iv) if signed => format!("[{:+.2}, {:+.2}]", iv.lo * 100.0, iv.hi * 100.0),
        Some(iv) => format!("[{:.2}, {:.2}]", iv.lo * 100.0, iv.hi * 100.0),
        None => "-".into(),
    }
}
