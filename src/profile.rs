//! Executor stage timers for `sttabt bench`'s per-stage breakdown (issue: embedding, gather,
//! projections, attention, feed-forward). Off by default: each timer point is then one relaxed
//! atomic load. When on, the executor adds the wall time of each stage of every layer to global
//! counters; they are process-wide, so only one timed run should be in flight.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// What the executor's time is spent on, in the order of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Embedding lookup (or patch projection) of the kept input rows.
    Embed = 0,
    /// Gathering the rows a layer keeps (and a pre-LN block's LayerNorm of its input).
    Gather = 1,
    /// Q, K and V projections.
    Projections = 2,
    /// Scores, softmax and probability-weighted values, per head.
    Attention = 3,
    /// Attention output projection, residual and LayerNorm.
    AttentionOutput = 4,
    /// The two feed-forward projections, GELU, residual and LayerNorm.
    FeedForward = 5,
}

/// Number of [`Stage`]s.
pub const STAGES: usize = 6;

static ON: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; STAGES] = [const { AtomicU64::new(0) }; STAGES];

/// Switch the timers on or off (and clear them).
pub fn enable(on: bool) {
    take();
    ON.store(on, Ordering::Relaxed);
}

/// Seconds per stage since the last call (indexed by `Stage as usize`), and reset.
pub fn take() -> [f64; STAGES] {
    std::array::from_fn(|i| NANOS[i].swap(0, Ordering::Relaxed) as f64 * 1e-9)
}

/// A start time when the timers are on.
#[inline]
pub(crate) fn start() -> Option<Instant> {
    ON.load(Ordering::Relaxed).then(Instant::now)
}

/// Add the time since `t` to `stage` and return a new start time (for back-to-back stages).
#[inline]
pub(crate) fn lap(t: Option<Instant>, stage: Stage) -> Option<Instant> {
    t.map(|t0| {
        let now = Instant::now();
        NANOS[stage as usize].fetch_add((now - t0).as_nanos() as u64, Ordering::Relaxed);
        now
    })
}

/// Split the time since `t` between two stages, `share` (0..=1) of it to `first` (stages that
/// ran fused in one parallel region, divided by their measured CPU-time shares).
#[inline]
pub(crate) fn split(t: Option<Instant>, first: Stage, second: Stage, share: f64) {
    if let Some(t0) = t {
        let ns = t0.elapsed().as_nanos() as f64;
        let a = (ns * share.clamp(0.0, 1.0)) as u64;
        NANOS[first as usize].fetch_add(a, Ordering::Relaxed);
        NANOS[second as usize].fetch_add((ns as u64).saturating_sub(a), Ordering::Relaxed);
    }
}
