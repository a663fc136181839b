//! Measurement: one round of timed passes, percentiles and medians over rounds, peak RSS.

use super::*;

pub(super) fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    percentile(&mut v, 0.5)
}

/// One round of `mode` on `inputs` in batches of `batch`: one warm-up batch, then `repeats`
/// timed passes; the round's figures are those of its median pass.
pub(super) struct RoundSample {
    pub(super) examples_per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    /// Per-example stage times (ms) of the median pass.
    pub(super) stage_ms: Stages,
    pub(super) retention: f64,
    pub(super) gflops_per_example: f64,
    pub(super) exec_gflops_per_s: f64,
}

/// One timed pass: (examples/s, p50 ms, p90 ms, its stages, sums of (retention, executed FLOPs, total FLOPs)).
type Pass = (f64, f64, f64, Stages, (f64, f64, f64));

pub(super) fn measure_round(
    cx: &Ctx,
    inputs: &[EncodedInput],
    batch: usize,
    mode: &BMode,
    repeats: usize,
    tokenize_s: f64,
) -> anyhow::Result<RoundSample> {
    measure_round_with(inputs, batch, repeats, tokenize_s, &|chunk, st| run_batch(cx, chunk, mode, st))
}

/// One batch of a mode: adds its stage seconds and returns its sums (see [`run_batch`]).
pub(super) type BatchRun<'a> = dyn Fn(&[EncodedInput], &mut Stages) -> anyhow::Result<(f64, f64, f64)> + 'a;

/// [`measure_round`] of any batch runner.
pub(super) fn measure_round_with(
    inputs: &[EncodedInput],
    batch: usize,
    repeats: usize,
    tokenize_s: f64,
    run_batch: &BatchRun,
) -> anyhow::Result<RoundSample> {
    let mut warm = Stages::default();
    run_batch(&inputs[..batch.min(inputs.len())], &mut warm)?;
    let mut passes: Vec<Pass> = Vec::new();
    for _ in 0..repeats.max(1) {
        let mut st = Stages::default();
        let mut lat = Vec::new();
        let mut sums = (0.0, 0.0, 0.0);
        crate::profile::take();
        let start = Instant::now();
        for chunk in inputs.chunks(batch) {
            let c0 = Instant::now();
            let (r, f, total) = run_batch(chunk, &mut st)?;
            lat.push(c0.elapsed().as_secs_f64() * 1e3);
            sums.0 += r;
            sums.1 += f;
            sums.2 += total;
        }
        let wall = start.elapsed().as_secs_f64();
        let p50 = percentile(&mut lat, 0.5);
        let p90 = percentile(&mut lat, 0.9);
        passes.push((inputs.len() as f64 / wall, p50, p90, st, sums));
    }
    passes.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mid = passes.len() / 2;
    let p50 = median(passes.iter().map(|p| p.1).collect());
    let p90 = median(passes.iter().map(|p| p.2).collect());
    let (eps, _, _, st, (ret, flops, total)) = passes.swap_remove(mid);
    let n = inputs.len() as f64;
    let ms = |s: f64| s / n * 1e3;
    Ok(RoundSample {
        examples_per_s: eps,
        p50_ms: p50,
        p90_ms: p90,
        stage_ms: Stages {
            tokenize: ms(tokenize_s),
            approx: ms(st.approx),
            planning: ms(st.planning),
            executor: ms(st.executor),
            head: ms(st.head),
            executor_stages: ExecutorStages::from_array(st.executor_stages.as_array().map(ms)),
        },
        retention: ret / n,
        gflops_per_example: total / n / 1e9,
        exec_gflops_per_s: if st.executor > 0.0 { flops / st.executor / 1e9 } else { 0.0 },
    })
}

/// Median and range of `v` (`(median, min, max)`; zeros when empty).
pub(super) fn spread(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(v.to_vec()), lo, hi)
}

/// The per-round examples/s a row is compared with, round by round: dense on the same workload
/// and batch, the `dense fp32` row where it ran ([`super::BenchOptions::fp32_dense`]), and the
/// peer (its workload key and series) where it ran a matching workload.
pub(super) struct References<'a> {
    pub dense: &'a [f64],
    pub dense_fp32: Option<&'a [f64]>,
    pub peer: Option<(&'a str, &'a [f64])>,
}

/// One row from its rounds (`samples[r]` = round r), with its per-round ratios to each of
/// `refs` ([`References`]: `dense[r]` = dense's examples/s in round r, and so on).
pub(super) fn aggregate(
    workload: &str,
    batch: usize,
    mode: String,
    examples: usize,
    samples: Vec<RoundSample>,
    refs: References,
) -> BenchRow {
    let References { dense, dense_fp32, peer } = refs;
    let eps: Vec<f64> = samples.iter().map(|s| s.examples_per_s).collect();
    let (med, lo, hi) = spread(&eps);
    // the round whose figure is the median gives the stage breakdown
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by(|&a, &b| eps[a].total_cmp(&eps[b]));
    let mid = &samples[order[order.len() / 2]];
    let ratios = |other: &[f64]| -> Vec<f64> { eps.iter().zip(other).filter(|(_, o)| **o > 0.0).map(|(a, o)| a / o).collect() };
    let vs_dense = spread(&ratios(dense)).0;
    let (vs_peer, vs_peer_range, peer_workload) = match peer {
        Some((key, p)) if !p.is_empty() => {
            let (m, l, h) = spread(&ratios(p));
            (Some(m), Some((l, h)), Some(key.to_string()))
        }
        _ => (None, None, None),
    };
    let (vs_dense_fp32, vs_dense_fp32_range) = match dense_fp32.map(|d| spread(&ratios(d))) {
        Some((m, l, h)) => (Some(m), Some((l, h))),
        None => (None, None),
    };
    BenchRow {
        workload: workload.into(),
        batch,
        mode,
        examples,
        examples_per_s: med,
        examples_per_s_min: lo,
        examples_per_s_max: hi,
        examples_per_s_rounds: eps.clone(),
        p50_ms: median(samples.iter().map(|s| s.p50_ms).collect()),
        p90_ms: median(samples.iter().map(|s| s.p90_ms).collect()),
        retention: mid.retention,
        gflops_per_example: mid.gflops_per_example,
        exec_gflops_per_s: mid.exec_gflops_per_s,
        stage_ms: mid.stage_ms.clone(),
        vs_dense,
        vs_peer,
        vs_peer_range,
        peer_workload,
        vs_dense_fp32,
        vs_dense_fp32_range,
    }
}

pub(super) fn read_status_kib(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// Peak RSS of one run: resets VmHWM (`/proc/self/clear_refs` = 5) before it.
pub(super) fn peak_rss(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64)> {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = read_status_kib("VmRSS:").unwrap_or(0.0);
    f()?;
    let peak = read_status_kib("VmHWM:").unwrap_or(0.0);
    Ok((peak / 1024.0, (peak - before).max(0.0) / 1024.0))
}
