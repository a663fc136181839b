//! Task metrics (ALGORITHM.md section 5): accuracy, binary F1, Matthews correlation,
//! Pearson and Spearman correlation. All values are fractions (`0..=1`, or `-1..=1` for
//! correlations); multiply by 100 for "points".
//!
//! Degenerate inputs have defined results instead of NaN, so a result file never contains
//! NaN:
//! * empty input: every metric is `0.0`;
//! * F1 with no true positives (including "no positive predictions and no positive
//!   labels"): `0.0` (scikit-learn's `zero_division=0`);
//! * Matthews correlation whose denominator is zero (all predictions, or all labels, one
//!   class): `0.0` (as scikit-learn);
//! * Pearson / Spearman with fewer than two points or a constant side: `0.0` (scipy would
//!   return NaN; we treat "no measurable linear relation" as zero correlation).

use std::fmt;

use super::Label;

/// A metric that can be requested from [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Metric {
    /// Fraction of exact class matches.
    Accuracy,
    /// Binary F1 with class 1 as the positive class.
    F1,
    /// Matthews correlation coefficient (multi-class form; equals the binary MCC for two
    /// classes).
    Matthews,
    /// Pearson linear correlation.
    Pearson,
    /// Spearman rank correlation (average ranks for ties).
    Spearman,
}

impl Metric {
    /// Short machine-friendly name: `accuracy`, `f1`, `matthews_corr`, `pearson`, `spearman`.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::F1 => "f1",
            Metric::Matthews => "matthews_corr",
            Metric::Pearson => "pearson",
            Metric::Spearman => "spearman",
        }
    }

    /// True for metrics computed on class indices (accuracy, F1, MCC); false for the
    /// correlations, which use real values.
    pub fn is_classification(&self) -> bool {
        matches!(self, Metric::Accuracy | Metric::F1 | Metric::Matthews)
    }

    /// Computes this metric. Classification metrics need [`Label::Class`] on both sides;
    /// correlations accept either kind (class indices are used as numbers).
    pub fn compute(&self, predictions: &[Label], labels: &[Label]) -> Result<f64, MetricError> {
        if predictions.len() != labels.len() {
            return Err(MetricError::LengthMismatch { predictions: predictions.len(), labels: labels.len() });
        }
        if self.is_classification() {
            let p = classes(*self, "prediction", predictions)?;
            let g = classes(*self, "label", labels)?;
            Ok(match self {
                Metric::Accuracy => accuracy(&p, &g),
                Metric::F1 => f1_binary(&p, &g),
                _ => matthews(&p, &g),
            })
        } else {
            let p: Vec<f64> = predictions.iter().map(Label::as_f64).collect();
            let g: Vec<f64> = labels.iter().map(Label::as_f64).collect();
            Ok(match self {
                Metric::Pearson => pearson(&p, &g),
                _ => spearman(&p, &g),
            })
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why [`evaluate`] could not compute a metric.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// Predictions and labels have different lengths.
    #[error("expected as many predictions as labels, found {predictions} predictions and {labels} labels")]
    LengthMismatch {
        /// Number of predictions.
        predictions: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A classification metric was given a regression score.
    #[error("{metric} expects class labels, found a score ({value}) as {side} #{index}")]
    NotAClass {
        /// The metric.
        metric: Metric,
        /// `"prediction"` or `"label"`.
        side: &'static str,
        /// 0-based position.
        index: usize,
        /// The score found.
        value: f32,
    },
}

fn classes(metric: Metric, side: &'static str, xs: &[Label]) -> Result<Vec<usize>, MetricError> {
    xs.iter()
        .enumerate()
        .map(|(index, l)| match *l {
            Label::Class(c) => Ok(c),
            Label::Score(value) => Err(MetricError::NotAClass { metric, side, index, value }),
        })
        .collect()
}

/// Computes each of `task_metrics` (e.g. `GlueTask::metric().all`) on the predictions,
/// in the given order.
pub fn evaluate(task_metrics: &[Metric], predictions: &[Label], labels: &[Label]) -> Result<Vec<(Metric, f64)>, MetricError> {
    task_metrics.iter().map(|m| m.compute(predictions, labels).map(|v| (*m, v))).collect()
}

/// Fraction of positions where `pred == gold`; `0.0` when empty.
///
/// # Panics
/// If the lengths differ (use [`evaluate`] for a checked version).
pub fn accuracy(pred: &[usize], gold: &[usize]) -> f64 {
    assert_eq!(pred.len(), gold.len(), "accuracy: length mismatch");
    if pred.is_empty() {
        return 0.0;
    }
    let hits = pred.iter().zip(gold).filter(|(p, g)| p == g).count();
    hits as f64 / pred.len() as f64
}

/// Binary F1 with class `1` as positive: `2·tp / (2·tp + fp + fn)`; `0.0` when `tp = 0`.
/// Any class other than 1 counts as negative.
///
/// # Panics
/// If the lengths differ.
pub fn f1_binary(pred: &[usize], gold: &[usize]) -> f64 {
    assert_eq!(pred.len(), gold.len(), "f1: length mismatch");
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for (&p, &g) in pred.iter().zip(gold) {
        match (p == 1, g == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
    }
    if tp == 0 {
        return 0.0;
    }
    (2 * tp) as f64 / (2 * tp + fp + fneg) as f64
}

/// Matthews correlation coefficient, multi-class (Gorodkin's R_K) form, which equals
/// `(tp·tn − fp·fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn))` for two classes:
/// `(c·s − Σ_k p_k·t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²))` with `c` correct, `s` total,
/// `p_k`/`t_k` predicted/true counts of class `k`. `0.0` when the denominator is zero.
///
/// # Panics
/// If the lengths differ.
pub fn matthews(pred: &[usize], gold: &[usize]) -> f64 {
    assert_eq!(pred.len(), gold.len(), "matthews: length mismatch");
    let k = pred.iter().chain(gold).copied().max().map_or(0, |m| m + 1);
    let mut p_count = vec![0f64; k];
    let mut t_count = vec![0f64; k];
    let mut correct = 0f64;
    for (&p, &g) in pred.iter().zip(gold) {
        p_count[p] += 1.0;
        t_count[g] += 1.0;
        if p == g {
            correct += 1.0;
        }
    }
    let s = pred.len() as f64;
    let pt: f64 = p_count.iter().zip(&t_count).map(|(a, b)| a * b).sum();
    let pp: f64 = p_count.iter().map(|a| a * a).sum();
    let tt: f64 = t_count.iter().map(|a| a * a).sum();
    let denom = ((s * s - pp) * (s * s - tt)).sqrt();
    if denom == 0.0 || !denom.is_finite() {
        return 0.0;
    }
    (correct * s - pt) / denom
}

/// Pearson correlation; `0.0` for fewer than two points or when either side is constant.
///
/// # Panics
/// If the lengths differ.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "pearson: length mismatch");
    let n = x.len();
    if n < 2 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let denom = (sxx * syy).sqrt();
    if denom == 0.0 || !denom.is_finite() {
        return 0.0;
    }
    (sxy / denom).clamp(-1.0, 1.0)
}

/// 1-based ranks with ties given the average of the ranks they span (e.g. `[10, 20, 20, 30]`
/// → `[1, 2.5, 2.5, 4]`). NaNs sort last.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && x[order[j]] == x[order[i]] {
            j += 1;
        }
        // Positions i..j (0-based) hold ranks i+1..=j; their mean is (i + 1 + j) / 2.
        let avg = (i + 1 + j) as f64 / 2.0;
        for &o in &order[i..j] {
            ranks[o] = avg;
        }
        i = j;
    }
    ranks
}

/// Spearman rank correlation: Pearson of [`average_ranks`]; same degenerate cases as
/// [`pearson`].
///
/// # Panics
/// If the lengths differ.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "spearman: length mismatch");
    pearson(&average_ranks(x), &average_ranks(y))
}
