//! Operating points chosen on dev (ALGORITHM.md sections 5 and 8): measure each mode's dev
//! accuracy and retention, and pick the lowest retention within an accuracy budget of dense.
//!
//! [`search_schedules`] is the per-layer keep-schedule search of section 8: for a grid of
//! `(k_min, γ)` ([`KeepSchedule`]) it measures ABT on dev and returns the lowest-retention
//! schedule whose dev accuracy is within `max_drop` points of dense dev accuracy.

use serde::{Deserialize, Serialize};

use crate::data::bootstrap::{Bootstrap, Interval};
use crate::infer::{classify, Mode};
use crate::model::{EncodedInput, Encoder};
use crate::planners::abt::KeepSchedule;
use crate::train::finetune::LabeledInput;

/// One mode measured on dev.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevPoint {
    /// The mode (its planner settings).
    pub mode: Mode,
    /// Table label ([`Mode::label`]).
    pub label: String,
    /// Dev accuracy, a fraction in `[0, 1]`.
    pub dev_accuracy: f64,
    /// Mean section-5 retention on dev, in `(0, 1]`.
    pub dev_retention: f64,
    /// Mean section-5 GFLOPs per dev example (ApproxNet included where the mode plans from it).
    pub gflops: f64,
    /// Per dev example: was the prediction right (for bootstrap intervals).
    #[serde(skip)]
    pub correct: Vec<bool>,
}

/// Measure `mode` on `dev` with `teacher` (and `approx` for modes that plan from an ApproxNet),
/// in batches of 32.
///
/// Errors: `dev` is empty; the mode needs an ApproxNet and none is given; bad input.
pub fn measure(teacher: &Encoder, approx: Option<&Encoder>, dev: &[LabeledInput], mode: &Mode) -> anyhow::Result<DevPoint> {
    anyhow::ensure!(!dev.is_empty(), "no dev examples to measure {} on", mode.label());
    let (mut ret, mut flops) = (0.0f64, 0.0f64);
    let mut correct = Vec::with_capacity(dev.len());
    for chunk in dev.chunks(32) {
        let inputs: Vec<EncodedInput> = chunk.iter().map(|d| d.input.clone()).collect();
        for (p, d) in classify(teacher, approx, &inputs, mode)?.into_iter().zip(chunk) {
            correct.push(p.label == d.label);
            ret += p.retention;
            flops += p.flops as f64;
        }
    }
    let n = dev.len() as f64;
    Ok(DevPoint {
        label: mode.label(),
        mode: mode.clone(),
        dev_accuracy: correct.iter().filter(|&&c| c).count() as f64 / n,
        dev_retention: ret / n,
        gflops: flops / n / 1e9,
        correct,
    })
}

/// Whether `accuracy` is within `max_drop` points (1 point = 0.01) of `dense_accuracy`
/// (both fractions); a 1e-9 tolerance absorbs rounding of equal counts.
pub fn within_budget(accuracy: f64, dense_accuracy: f64, max_drop: f64) -> bool {
    accuracy >= dense_accuracy - max_drop / 100.0 - 1e-9
}

/// Index of the point with the lowest dev retention among those within `max_drop` points of
/// `dense_accuracy` ([`within_budget`]); ties go to the higher dev accuracy, then the earlier
/// point. `None` when no point is within the budget.
pub fn lowest_retention_within(points: &[DevPoint], dense_accuracy: f64, max_drop: f64) -> Option<usize> {
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| within_budget(p.dev_accuracy, dense_accuracy, max_drop))
        .min_by(|(i, a), (j, b)| a.dev_retention.total_cmp(&b.dev_retention).then(b.dev_accuracy.total_cmp(&a.dev_accuracy)).then(i.cmp(j)))
        .map(|(i, _)| i)
}

/// The 95% bootstrap intervals of a dev point: its accuracy, and its paired difference to
/// dense (`dense` = dense's per-example correctness on the same examples).
///
/// Errors: no examples, or the two were scored on different examples.
pub fn dev_intervals(point: &DevPoint, dense: &[bool]) -> anyhow::Result<(Interval, Interval)> {
    let b = Bootstrap::default();
    Ok((b.accuracy(&point.correct)?, b.paired_difference(&point.correct, dense)?))
}

/// The `(k_min, γ)` grid of a schedule search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleGrid {
    /// Last-layer keep fractions, each in `(0, 1]`.
    pub k_mins: Vec<f64>,
    /// Exponents, each in `(0, +∞]`.
    pub gammas: Vec<f64>,
}

impl Default for ScheduleGrid {
    /// `k_min ∈ {0.05, 0.1, 0.2, 0.3}`, `γ ∈ {0.5, 1, 2, 4}`.
    fn default() -> Self {
        Self { k_mins: vec![0.05, 0.1, 0.2, 0.3], gammas: vec![0.5, 1.0, 2.0, 4.0] }
    }
}

impl ScheduleGrid {
    /// Every schedule of the grid (`k_min` outer, `γ` inner).
    ///
    /// Errors: an empty axis, or a value outside its range ([`KeepSchedule::check`]).
    pub fn schedules(&self) -> anyhow::Result<Vec<KeepSchedule>> {
        anyhow::ensure!(!self.k_mins.is_empty() && !self.gammas.is_empty(), "the schedule grid needs at least one k_min and one gamma");
        let mut out = Vec::with_capacity(self.k_mins.len() * self.gammas.len());
        for &k_min in &self.k_mins {
            for &gamma in &self.gammas {
                let s = KeepSchedule { k_min, gamma };
                s.check()?;
                out.push(s);
            }
        }
        Ok(out)
    }
}

/// What [`search_schedules`] measured and chose.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleSearch {
    /// Dense on the same dev examples (the budget's reference).
    pub dense: DevPoint,
    /// One point per schedule, in grid order ([`ScheduleGrid::schedules`]).
    pub points: Vec<DevPoint>,
    /// Index into `points` of the lowest dev retention within `max_drop` points of dense
    /// ([`lowest_retention_within`]); `None` when no schedule is within the budget.
    pub chosen: Option<usize>,
    /// The budget, in accuracy points.
    pub max_drop: f64,
}

impl ScheduleSearch {
    /// The chosen schedule, if any.
    pub fn best(&self) -> Option<KeepSchedule> {
        self.chosen.and_then(|i| match self.points[i].mode {
            Mode::AbtSchedule { k_min, gamma } | Mode::AbtActualSchedule { k_min, gamma } => Some(KeepSchedule { k_min, gamma }),
            _ => None,
        })
    }
}

/// The per-layer keep-schedule search (ALGORITHM.md section 8): dense and ABT (on `approx`'s
/// attention) at every schedule of `grid`, measured on `dev`; picks the lowest dev retention with
/// dev accuracy within `max_drop` points (`> 0`; 1.0 = one accuracy point) of dense's.
///
/// Errors: empty `dev`, a bad grid or `max_drop <= 0`, bad input.
pub fn search_schedules(
    teacher: &Encoder,
    approx: &Encoder,
    dev: &[LabeledInput],
    grid: &ScheduleGrid,
    max_drop: f64,
) -> anyhow::Result<ScheduleSearch> {
    anyhow::ensure!(max_drop.is_finite() && max_drop > 0.0, "the accuracy budget must be > 0 points, got {max_drop}");
    let schedules = grid.schedules()?;
    let dense = measure(teacher, None, dev, &Mode::Dense)?;
    let points = schedules
        .iter()
        .map(|s| measure(teacher, Some(approx), dev, &Mode::AbtSchedule { k_min: s.k_min, gamma: s.gamma }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let chosen = lowest_retention_within(&points, dense.dev_accuracy, max_drop);
    Ok(ScheduleSearch { dense, points, chosen, max_drop })
}
