//! Accuracy of int8 against fp32 execution, per mode, on one labelled split (issue 17 item 3).
//!
//! Not part of the paper (ALGORITHM.md has no quantisation). Each mode classifies the same
//! examples twice, once with the fp32 models and once with their int8 copies
//! ([`Encoder::set_precision`]); per mode this reports both accuracies, how often the two
//! predicted labels agree, and the paired bootstrap interval of `accuracy(int8) −
//! accuracy(fp32)` ([`Bootstrap::paired_difference`]: both predictors scored on the same
//! resampled examples).

use serde::{Deserialize, Serialize};

use crate::data::bootstrap::{Bootstrap, Interval};
use crate::infer::{classify, Mode};
use crate::model::{EncodedInput, Encoder, Precision};
use crate::planners::topk::calibrate_k_min;
use crate::train::concrete::ConcreteModel;
use crate::train::finetune::LabeledInput;
use crate::train::ltp::LtpModel;

/// The models of one precision: a teacher, its ApproxNet (for ABT) and learned-pruner runs (each
/// with its own teacher).
#[derive(Clone, Copy)]
pub struct ModelSet<'a> {
    pub teacher: &'a Encoder,
    pub approx: Option<&'a Encoder>,
    pub concrete: &'a [ConcreteModel],
    pub ltp: &'a [LtpModel],
}

impl<'a> ModelSet<'a> {
    /// The (teacher, ApproxNet) `mode` runs on: a concrete or LTP mode's own run, else the set's.
    ///
    /// Errors: a concrete / LTP mode whose run is not in the set.
    fn models_for(&self, mode: &Mode) -> anyhow::Result<(&'a Encoder, Option<&'a Encoder>)> {
        Ok(match mode {
            Mode::Concrete { theta0, .. } => {
                let c = self
                    .concrete
                    .iter()
                    .find(|c| c.theta0 == *theta0)
                    .ok_or_else(|| anyhow::anyhow!("no concrete run with θ0 = {theta0}"))?;
                (&c.teacher, Some(&c.approx.model))
            }
            Mode::Ltp { lambda, .. } => {
                let m = self.ltp.iter().find(|m| m.lambda == *lambda).ok_or_else(|| anyhow::anyhow!("no LTP run with λ = {lambda}"))?;
                (&m.teacher, None)
            }
            _ => (self.teacher, self.approx),
        })
    }
}

/// One mode at both precisions on the same `examples`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeComparison {
    pub mode: Mode,
    pub label: String,
    pub examples: usize,
    /// Accuracy in `[0, 1]` with the fp32 models.
    pub accuracy_fp32: f64,
    /// Accuracy in `[0, 1]` with the teacher (and ApproxNet, if so set) in int8.
    pub accuracy_int8: f64,
    /// Fraction of examples whose predicted label is the same at both precisions.
    pub agreement: f64,
    /// `accuracy_int8 − accuracy_fp32` with its paired bootstrap interval.
    pub accuracy_difference: Interval,
    /// Mean section-5 retention at each precision (equal for ABT with an fp32 ApproxNet).
    pub retention_fp32: f64,
    pub retention_int8: f64,
    /// Fraction of examples whose token plan is the same at both precisions.
    pub plan_agreement: f64,
}

/// The per-mode comparison plus what produced it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrecisionComparison {
    /// Precision of the teacher(s) in the int8 run (`int8`) and of the ApproxNet in both runs.
    pub teacher_precision: Precision,
    pub approx_precision_fp32_run: Precision,
    pub approx_precision_int8_run: Precision,
    /// Which split the examples come from, and its description.
    pub split: String,
    pub data: String,
    pub examples: usize,
    /// The int8 kernels this CPU runs (AMX-INT8 from 24 rows, AVX-512 VNNI, or the fallback).
    pub int8_kernels: String,
    pub bootstrap_resamples: usize,
    pub bootstrap_level: f64,
    pub bootstrap_seed: u64,
    pub modes: Vec<ModeComparison>,
    /// Modes left out or matched differently than asked, and why (printed as `note:` lines).
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Anything added by the caller (e.g. ONNX Runtime's own fp32 / int8 accuracy on the same
    /// examples), verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<serde_json::Value>,
}

/// Per-example predicted labels, correctness, retentions and plans of `mode`.
fn predict(
    teacher: &Encoder,
    approx: Option<&Encoder>,
    data: &[LabeledInput],
    mode: &Mode,
) -> anyhow::Result<Vec<crate::infer::Prediction>> {
    let mut preds = Vec::with_capacity(data.len());
    for chunk in data.chunks(32) {
        let inputs: Vec<EncodedInput> = chunk.iter().map(|d| d.input.clone()).collect();
        preds.extend(classify(teacher, approx, &inputs, mode)?);
    }
    Ok(preds)
}

/// Compare one mode at both precisions on `data`.
///
/// Errors: empty `data`; a mode the model sets cannot run (e.g. ABT without an ApproxNet, a
/// concrete / LTP run missing from a set); bootstrap settings out of range.
pub fn compare_mode(
    fp32: &ModelSet,
    int8: &ModelSet,
    data: &[LabeledInput],
    mode: &Mode,
    boot: &Bootstrap,
) -> anyhow::Result<ModeComparison> {
    anyhow::ensure!(!data.is_empty(), "comparing precisions needs at least one labelled example");
    let (t32, a32) = fp32.models_for(mode)?;
    let (t8, a8) = int8.models_for(mode)?;
    let p32 = predict(t32, a32, data, mode)?;
    let p8 = predict(t8, a8, data, mode)?;
    let c32: Vec<bool> = p32.iter().zip(data).map(|(p, d)| p.label == d.label).collect();
    let c8: Vec<bool> = p8.iter().zip(data).map(|(p, d)| p.label == d.label).collect();
    let n = data.len() as f64;
    let frac = |v: &[bool]| v.iter().filter(|&&c| c).count() as f64 / n;
    let same: Vec<bool> = p32.iter().zip(&p8).map(|(a, b)| a.label == b.label).collect();
    let same_plan: Vec<bool> = p32.iter().zip(&p8).map(|(a, b)| a.plan == b.plan).collect();
    Ok(ModeComparison {
        label: mode.label(),
        mode: mode.clone(),
        examples: data.len(),
        accuracy_fp32: frac(&c32),
        accuracy_int8: frac(&c8),
        agreement: frac(&same),
        accuracy_difference: boot.paired_difference(&c8, &c32)?,
        retention_fp32: p32.iter().map(|p| p.retention).sum::<f64>() / n,
        retention_int8: p8.iter().map(|p| p.retention).sum::<f64>() / n,
        plan_agreement: frac(&same_plan),
    })
}

/// Compare dense, ABT at each keep fraction in `ks` (when the sets have an ApproxNet), manual
/// top-k at the fp32 retention of ABT at the smallest `k` (or of ABT on the teacher's actual
/// attention without an ApproxNet), and every concrete and LTP run, at both precisions on
/// `data`. `fp32` and `int8` must hold the same runs in the same order.
///
/// Returns the comparisons and a note per mode left out (and why).
///
/// Errors: as [`compare_mode`]; a keep fraction outside `(0, 1]`.
pub fn compare_modes(
    fp32: &ModelSet,
    int8: &ModelSet,
    ks: &[f64],
    data: &[LabeledInput],
    boot: &Bootstrap,
) -> anyhow::Result<(Vec<ModeComparison>, Vec<String>)> {
    let mut skipped = Vec::new();
    if let Some(k) = ks.iter().find(|k| !(**k > 0.0 && **k <= 1.0)) {
        anyhow::bail!("every keep fraction must be in (0, 1], got {k}");
    }
    let mut out = vec![compare_mode(fp32, int8, data, &Mode::Dense, boot)?];
    let abt = |k: f64| if fp32.approx.is_some() { Mode::Abt { k } } else { Mode::AbtActual { k } };
    for &k in ks {
        out.push(compare_mode(fp32, int8, data, &abt(k), boot)?);
    }
    // manual top-k at the fp32 retention of the lowest ABT point its schedule can reach
    let mut by_k: Vec<f64> = ks.to_vec();
    by_k.sort_by(f64::total_cmp);
    let lengths: Vec<usize> = data.iter().map(|d| d.input.len()).collect();
    let retention_of = |k: f64| out.iter().find(|c| c.mode == abt(k)).map(|c| c.retention_fp32);
    let topk = by_k.iter().find_map(|&k| {
        let k_min = calibrate_k_min(&lengths, fp32.teacher.layers.len(), retention_of(k)?).ok()?;
        Some((k, k_min))
    });
    if let Some((k, _)) = topk.filter(|(k, _)| *k != by_k[0]) {
        // said, not hidden: the help promises the smallest k's retention where reachable
        skipped.push(format!(
            "manual top-k: the retention of ABT k = {} ({:.1}%) is below what its schedule reaches; matched k = {k}'s ({:.1}%) instead",
            by_k[0],
            retention_of(by_k[0]).unwrap_or(f64::NAN) * 100.0,
            retention_of(k).unwrap_or(f64::NAN) * 100.0
        ));
    }
    match topk.map(|(_, k_min)| k_min) {
        Some(k_min) => out.push(compare_mode(fp32, int8, data, &Mode::TopK { k_min }, boot)?),
        None if !ks.is_empty() => skipped.push("manual top-k left out: no ABT point's retention is reachable by its schedule".into()),
        None => {}
    }
    for c in fp32.concrete {
        out.push(compare_mode(fp32, int8, data, &Mode::Concrete { theta0: c.theta0, theta: c.theta.clone() }, boot)?);
    }
    for m in fp32.ltp {
        out.push(compare_mode(fp32, int8, data, &Mode::Ltp { lambda: m.lambda, theta: m.theta.clone(), score: m.score }, boot)?);
    }
    Ok((out, skipped))
}

/// The int8 paths this CPU runs, e.g. `amx-int8 (>= 24 rows), avx512-vnni` or `avx2`.
pub fn int8_kernels_here() -> String {
    use crate::kernels::int8::{Int8Kernel, AMX_MIN_ROWS};
    let mut v = Vec::new();
    if Int8Kernel::Amx.available() {
        v.push(format!("amx-int8 (>= {AMX_MIN_ROWS} rows)"));
    }
    if Int8Kernel::Vnni.available() {
        v.push("avx512-vnni".to_string());
    } else if Int8Kernel::Avx2.available() {
        v.push("avx2".to_string());
    } else {
        v.push("fallback".to_string());
    }
    v.join(", ")
}

/// Whether a run with its teacher at `teacher` and its ApproxNet at `approx` (`None`: no
/// ApproxNet runs) has a model running in int8.
pub fn int8_runs(teacher: Precision, approx: Option<Precision>) -> bool {
    teacher.is_int8() || approx.is_some_and(Precision::is_int8)
}

/// A run's arithmetic as `classify`, `eval` and their CSV name it: `teacher fp32, ApproxNet fp32`
/// (`teacher fp32` alone when no ApproxNet runs: `approx` `None`), plus `; int8 kernels: ...`
/// ([`int8_kernels_here`]) when [`int8_runs`].
pub fn describe_arithmetic(teacher: Precision, approx: Option<Precision>) -> String {
    let mut s = format!("teacher {teacher}");
    if let Some(a) = approx {
        s.push_str(&format!(", ApproxNet {a}"));
    }
    if int8_runs(teacher, approx) {
        s.push_str(&format!("; int8 kernels: {}", int8_kernels_here()));
    }
    s
}

/// A text table of `c` (accuracies and differences in points).
pub fn format_comparison(c: &PrecisionComparison) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} examples ({}), teacher {} vs fp32 (ApproxNet {} / {}); int8 kernels: {}",
        c.examples, c.split, c.teacher_precision, c.approx_precision_fp32_run, c.approx_precision_int8_run, c.int8_kernels
    );
    // the quantised columns named by the teacher's precision (int8 or int8-w7), as wide as their names
    let q = c.teacher_precision.name();
    let (wa, wr) = ((4 + q.len()).max(8), (4 + q.len()).max(7));
    let _ = writeln!(
        s,
        "{:<28} {:>8} {:>wa$} {:>9} {:>24} {:>7} {:>wr$} {:>10}",
        "mode",
        "acc fp32",
        format!("acc {q}"),
        "agreement",
        format!("{q} - fp32 (95% CI)"),
        "ret32",
        format!("ret {q}"),
        "same plans"
    );
    for m in &c.modes {
        let d = &m.accuracy_difference;
        let _ = writeln!(
            s,
            "{:<28} {:>8.2} {:>wa$.2} {:>8.2}% {:>24} {:>7.3} {:>wr$.3} {:>9.1}%",
            m.label,
            100.0 * m.accuracy_fp32,
            100.0 * m.accuracy_int8,
            100.0 * m.agreement,
            format!("{:+.2} [{:+.2}, {:+.2}]", 100.0 * d.estimate, 100.0 * d.lo, 100.0 * d.hi),
            m.retention_fp32,
            m.retention_int8,
            100.0 * m.plan_agreement
        );
    }
    for note in &c.skipped {
        let _ = writeln!(s, "note: {note}");
    }
    s
}
