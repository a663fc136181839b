//! Bootstrap confidence intervals for accuracy and for paired accuracy differences.
//!
//! An operating point is "within 1 point of dense" only if the evidence says so: on 1,275 test
//! sentences one sentence is 0.08 points and the sampling error of an accuracy near 80% is about
//! ±2.2 points (95%). These intervals go beside every accuracy the evaluation reports.
//!
//! Both are percentile bootstraps over examples (Efron & Tibshirani 1993, ch. 13): resample the
//! `n` examples with replacement `resamples` times, recompute the statistic, and take the
//! `(1 - level) / 2` and `(1 + level) / 2` quantiles. The difference is *paired*: each resample
//! draws the same examples for both predictors, so the interval reflects how often the two
//! disagree, not the spread of either accuracy alone (a pruned mode that differs from dense on 10
//! of 1,275 sentences gets a narrow interval even though each accuracy's own interval is wide).
//! Seeded ([`SplitMix64`]): the same inputs and seed give the same interval on every platform.

use serde::{Deserialize, Serialize};

use super::split::SplitMix64;

/// A point estimate with a two-sided percentile interval, in the estimate's units (accuracy as a
/// fraction in `[0, 1]`, a difference in `[-1, 1]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the original sample.
    pub estimate: f64,
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
    /// Coverage, e.g. 0.95.
    pub level: f64,
}

/// Bootstrap settings: resample count, coverage and seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    /// Number of resamples (2,000 by default; the quantiles move by < 0.1 point beyond that at n ≈ 1,000).
    pub resamples: usize,
    /// Coverage in `(0, 1)` (0.95 by default).
    pub level: f64,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self { resamples: 2000, level: 0.95, seed: 0x5774_ab7 }
    }
}

/// Why an interval cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BootstrapError {
    /// No examples.
    #[error("no examples to bootstrap")]
    Empty,
    /// The two predictors were scored on different numbers of examples.
    #[error("paired samples differ in length: {0} vs {1} examples")]
    Unpaired(usize, usize),
    /// Zero resamples, or a level outside `(0, 1)`.
    #[error("bootstrap needs resamples >= 1 and a level in (0, 1), got {resamples} and {level}")]
    Settings { resamples: usize, level: f64 },
}

impl Bootstrap {
    fn check(&self) -> Result<(), BootstrapError> {
        if self.resamples == 0 || !(self.level > 0.0 && self.level < 1.0) {
            return Err(BootstrapError::Settings { resamples: self.resamples, level: self.level });
        }
        Ok(())
    }

    /// Interval of the accuracy `mean(correct)`.
    ///
    /// Errors: empty `correct`; bad settings.
    pub fn accuracy(&self, correct: &[bool]) -> Result<Interval, BootstrapError> {
        self.paired_difference_of(correct, None)
    }

    /// Interval of `accuracy(a) - accuracy(b)` where `a[i]` and `b[i]` score the same example `i`
    /// (e.g. a pruned mode and dense). Positive: `a` is better.
    ///
    /// Errors: empty input; `a.len() != b.len()`; bad settings.
    pub fn paired_difference(&self, a: &[bool], b: &[bool]) -> Result<Interval, BootstrapError> {
        if a.len() != b.len() {
            return Err(BootstrapError::Unpaired(a.len(), b.len()));
        }
        self.paired_difference_of(a, Some(b))
    }

    fn paired_difference_of(&self, a: &[bool], b: Option<&[bool]>) -> Result<Interval, BootstrapError> {
        self.check()?;
        let n = a.len();
        if n == 0 {
            return Err(BootstrapError::Empty);
        }
        // per-example score: +1/0 (accuracy) or a_i - b_i in {-1, 0, 1} (difference)
        let score: Vec<i32> = (0..n).map(|i| a[i] as i32 - b.map_or(0, |b| b[i] as i32)).collect();
        let estimate = score.iter().map(|&s| s as f64).sum::<f64>() / n as f64;
        let mut rng = SplitMix64::new(self.seed);
        let mut stats: Vec<f64> = (0..self.resamples)
            .map(|_| {
                let total: i64 = (0..n).map(|_| score[rng.next_below(n as u64) as usize] as i64).sum();
                total as f64 / n as f64
            })
            .collect();
        stats.sort_by(f64::total_cmp);
        let q = |p: f64| {
            // nearest-rank quantile
            let idx = ((p * stats.len() as f64).ceil() as usize).clamp(1, stats.len()) - 1;
            stats[idx]
        };
        let tail = (1.0 - self.level) / 2.0;
        Ok(Interval { estimate, lo: q(tail), hi: q(1.0 - tail), level: self.level })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, p: f64, seed: u64) -> Vec<bool> {
        let mut r = SplitMix64::new(seed);
        (0..n).map(|_| r.next_f64() < p).collect()
    }

    #[test]
    fn accuracy_interval_matches_the_normal_approximation() {
        let c = sample(1275, 0.8, 1);
        let iv = Bootstrap::default().accuracy(&c).unwrap();
        let p = iv.estimate;
        let half = 1.96 * (p * (1.0 - p) / c.len() as f64).sqrt();
        assert!(iv.lo < p && p < iv.hi, "{iv:?}");
        // percentile bootstrap of a mean of Bernoullis ≈ Wald interval at this n
        assert!(((iv.hi - iv.lo) / 2.0 - half).abs() < 0.15 * half, "{iv:?} vs ±{half}");
    }

    #[test]
    fn paired_difference_of_identical_predictions_is_exactly_zero() {
        let c = sample(500, 0.7, 2);
        let iv = Bootstrap::default().paired_difference(&c, &c).unwrap();
        assert_eq!((iv.estimate, iv.lo, iv.hi), (0.0, 0.0, 0.0));
    }

    #[test]
    fn paired_interval_is_narrower_than_either_accuracy_interval() {
        // b equals a except on 10 of 1,000 examples, where a is right and b wrong
        let a = sample(1000, 0.8, 3);
        let mut b = a.clone();
        let mut flipped = 0;
        for x in b.iter_mut() {
            if *x && flipped < 10 {
                *x = false;
                flipped += 1;
            }
        }
        let bs = Bootstrap::default();
        let d = bs.paired_difference(&a, &b).unwrap();
        let ia = bs.accuracy(&a).unwrap();
        assert!((d.estimate - 0.01).abs() < 1e-12);
        assert!(d.lo > 0.0, "every disagreement favours a: {d:?}");
        assert!(d.hi - d.lo < (ia.hi - ia.lo) / 3.0, "{d:?} vs {ia:?}");
    }

    #[test]
    fn same_seed_same_interval_and_bad_input_errors() {
        let c = sample(300, 0.6, 4);
        let bs = Bootstrap::default();
        assert_eq!(bs.accuracy(&c).unwrap(), bs.accuracy(&c).unwrap());
        assert_eq!(bs.accuracy(&[]), Err(BootstrapError::Empty));
        assert_eq!(bs.paired_difference(&c, &c[1..]), Err(BootstrapError::Unpaired(300, 299)));
        let bad = Bootstrap { resamples: 0, ..bs };
        assert!(matches!(bad.accuracy(&c), Err(BootstrapError::Settings { .. })));
        let bad = Bootstrap { level: 1.0, ..bs };
        assert!(matches!(bad.accuracy(&c), Err(BootstrapError::Settings { .. })));
    }
}
