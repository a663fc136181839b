//! Whether a bench's figures can be trusted: a busy machine (load average) or rounds that
//! disagree make the report say so.

/// Largest spread of a row's rounds, `(max - min) / median`, before the rounds count as
/// disagreeing (0.25 = 25% of the median).
pub const MAX_ROUND_SPREAD: f64 = 0.25;

/// Fewest rounds for the spread of a row to be judged (with 1 or 2 rounds the range says little).
pub const MIN_ROUNDS_FOR_SPREAD: usize = 3;

/// One row's figures over its rounds, as [`reliability_warnings`] judges them.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundSpread {
    /// The row, as the report names it (e.g. `rt b1 dense`).
    pub label: String,
    /// Rounds behind the figures.
    pub rounds: usize,
    /// Median, smallest and largest round figure (any unit, e.g. examples/s).
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// The mark the text report puts after a row's `(min-max)` when its rounds disagree.
pub const SPREAD_MARK: &str = "~";

impl RoundSpread {
    /// Whether this row's rounds disagree: at least [`MIN_ROUNDS_FOR_SPREAD`] rounds and a
    /// [`relative_range`](Self::relative_range) above [`MAX_ROUND_SPREAD`].
    pub fn disagrees(&self) -> bool {
        self.rounds >= MIN_ROUNDS_FOR_SPREAD && self.relative_range().is_some_and(|x| x > MAX_ROUND_SPREAD)
    }

    /// [`SPREAD_MARK`] when the rounds [`disagree`](Self::disagrees), else nothing.
    pub fn mark(&self) -> &'static str {
        if self.disagrees() {
            SPREAD_MARK
        } else {
            ""
        }
    }

    /// `(max - min) / median`; `None` when the median is not positive.
    pub fn relative_range(&self) -> Option<f64> {
        (self.median > 0.0).then(|| (self.max - self.min) / self.median)
    }
}

/// `/proc/loadavg`'s 1, 5 and 15-minute load averages as one string (`"1.52 0.98 0.60"`); empty
/// where the file cannot be read (not Linux).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// The 1-minute load average, the first field of a `/proc/loadavg` line (`"1.52 0.98 0.60 ..."`);
/// `None` when the line is empty or its first field is not a number.
pub fn load_1min(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

/// The warnings a bench report carries (empty when the figures look sound):
///
/// - busy machine: the 1-minute load average before the rounds (`load_before`) is >= `threads`
///   (the threads the bench ran on), or the one after them (`load_after`, which counts the
///   bench's own `threads` busy threads) is >= `threads + 1`, i.e. other work had at least one
///   runnable task on average besides ours. `None` loads (unreadable `/proc/loadavg`) are not
///   judged.
/// - rounds that disagree: some row with >= [`MIN_ROUNDS_FOR_SPREAD`] rounds whose
///   [`RoundSpread::relative_range`] exceeds [`MAX_ROUND_SPREAD`]; the warning names how many
///   rows and the widest.
///
/// Each warning says the figures are not reliable and to rerun on an idle machine. A pure
/// function of its arguments.
pub fn reliability_warnings(load_before: Option<f64>, load_after: Option<f64>, threads: usize, rows: &[RoundSpread]) -> Vec<String> {
    let mut out = Vec::new();
    let t = threads as f64;
    let busy_before = load_before.filter(|&l| l >= t);
    let busy_after = load_after.filter(|&l| l >= t + 1.0);
    if busy_before.is_some() || busy_after.is_some() {
        let mut why = Vec::new();
        if let Some(l) = busy_before {
            why.push(format!("1-minute load average {l:.2} before the rounds, >= the {threads} thread(s) the bench used"));
        }
        if let Some(l) = busy_after {
            why.push(format!("{l:.2} after them, >= the bench's own {threads} thread(s) + 1"));
        }
        out.push(format!(
            "the machine was busy ({}): other work competed for the cores, so the figures are not reliable; rerun on an idle machine",
            why.join("; ")
        ));
    }
    let wide: Vec<(&RoundSpread, f64)> = rows.iter().filter(|r| r.disagrees()).filter_map(|r| r.relative_range().map(|x| (r, x))).collect();
    if let Some((widest, x)) = wide.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        out.push(format!(
            "the rounds disagree: {} of {} row(s) spread more than {:.0}% of their median over their rounds (marked {SPREAD_MARK} after their range in the text tables; widest: {}, {:.0}%: {:.1}-{:.1} around {:.1}), so the figures are not reliable; rerun on an idle machine",
            wide.len(),
            rows.len(),
            MAX_ROUND_SPREAD * 100.0,
            widest.label,
            x * 100.0,
            widest.min,
            widest.max,
            widest.median
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, rounds: usize, min: f64, median: f64, max: f64) -> RoundSpread {
        RoundSpread { label: label.into(), rounds, median, min, max }
    }

    #[test]
    fn load_1min_reads_the_first_field() {
        assert_eq!(load_1min("1.52 0.98 0.60 2/345 6789"), Some(1.52));
        assert_eq!(load_1min(""), None);
        assert_eq!(load_1min("x 1 2"), None);
    }

    #[test]
    fn idle_machine_and_agreeing_rounds_give_no_warning() {
        let rows = [row("rt b1 dense", 3, 90.0, 100.0, 110.0), row("rt b1 abt", 3, 150.0, 160.0, 170.0)];
        assert!(reliability_warnings(Some(0.4), Some(2.9), 2, &rows).is_empty());
        assert!(reliability_warnings(None, None, 2, &rows).is_empty());
    }

    #[test]
    fn load_before_at_the_thread_count_is_busy() {
        let w = reliability_warnings(Some(2.0), Some(0.1), 2, &[]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("machine was busy") && w[0].contains("2.00 before") && w[0].contains("rerun on an idle machine"), "{w:?}");
        assert!(reliability_warnings(Some(1.99), None, 2, &[]).is_empty());
    }

    #[test]
    fn load_after_counts_the_bench_own_threads() {
        // the bench's own 2 threads raise the load after it to ~2: not busy
        assert!(reliability_warnings(Some(0.1), Some(2.99), 2, &[]).is_empty());
        let w = reliability_warnings(Some(0.1), Some(3.0), 2, &[]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("3.00 after") && !w[0].contains("before the rounds"), "{w:?}");
        // both named in one warning
        let w = reliability_warnings(Some(4.0), Some(5.0), 2, &[]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("4.00 before") && w[0].contains("5.00 after"), "{w:?}");
    }

    #[test]
    fn rounds_that_spread_over_a_quarter_of_the_median_disagree() {
        // (130 - 100) / 110 = 0.27 > 0.25; (125 - 100) / 100 = 0.25 is not more than 0.25
        let rows = [
            row("rt b1 dense", 3, 100.0, 100.0, 125.0),
            row("rt b1 abt", 3, 100.0, 110.0, 130.0),
            row("T128 b1 topk", 5, 10.0, 20.0, 30.0),
        ];
        let w = reliability_warnings(Some(0.1), Some(0.1), 2, &rows);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("the rounds disagree: 2 of 3 row(s)"), "{w:?}");
        assert!(w[0].contains("widest: T128 b1 topk, 100%"), "{w:?}");
        assert!(w[0].contains("rerun on an idle machine"), "{w:?}");
    }

    #[test]
    fn spread_needs_three_rounds() {
        let rows = [row("rt b1 dense", 2, 10.0, 20.0, 30.0), row("rt b1 abt", 1, 20.0, 20.0, 20.0)];
        assert!(reliability_warnings(None, None, 2, &rows).is_empty());
        let w = reliability_warnings(Some(9.0), None, 2, &[row("rt b1 dense", 3, 10.0, 20.0, 30.0)]);
        assert_eq!(w.len(), 2, "busy and disagreeing: {w:?}");
    }

    #[test]
    fn zero_median_is_not_judged() {
        assert_eq!(row("x", 3, 0.0, 0.0, 5.0).relative_range(), None);
        assert!(reliability_warnings(None, None, 2, &[row("x", 3, 0.0, 0.0, 5.0)]).is_empty());
    }
}
