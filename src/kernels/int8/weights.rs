//! Int8 quantisation of weights, once per layer: symmetric per output column, the panel
//! packings the SIMD kernels read (see `super`), and SmoothQuant's per-input-channel factors.
//! The activations' side is `super::quant`.

/// Per-column quantisation of `w` `[k, n]` (finite, checked by the caller) to `[-qmax, qmax]`
/// (127, or 63 for [`super::WeightRange::Reduced`]): `Wq` row-major and the scales `sw_j =
/// max_k |W[k, j]| / qmax` (0 for an all-zero column). In f64, once per layer.
pub(super) fn quantize_columns(w: &[f32], k: usize, n: usize, qmax: i8) -> (Vec<i8>, Vec<f32>) {
    let qm = f64::from(qmax);
    let mut max = vec![0.0f32; n];
    for row in w.chunks_exact(n) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let inv: Vec<f64> = max.iter().map(|&m| if m > 0.0 { qm / f64::from(m) } else { 0.0 }).collect();
    let mut q = vec![0i8; k * n];
    for (qrow, row) in q.chunks_exact_mut(n).zip(w.chunks_exact(n)) {
        for ((o, &v), &s) in qrow.iter_mut().zip(row).zip(&inv) {
            *o = (f64::from(v) * s).round_ties_even().clamp(-qm, qm) as i8;
        }
    }
    (q, max.iter().map(|&m| m / f32::from(qmax)).collect())
}

/// `Wq` `[k, n]` into `nr`-column panels of 4-byte `k` groups, `k` padded to `kp` (a multiple
/// of 4): byte `4 nr g + 4 c + t` of panel `p` is `Wq[4g + t, nr p + c]` or 0. With `nr` =
/// [`NR`] and `kp` a multiple of [`super::KB`], the VNNI/AMX layout (module docs); with 16, the AVX2
/// u8 x s8 path's sub-panels (`super::avx2`).
pub(super) fn pack_panels(w_q: &[i8], k: usize, n: usize, kp: usize, nr: usize) -> Vec<i8> {
    debug_assert!(kp.is_multiple_of(4) && kp >= k);
    let panels = n.div_ceil(nr);
    let mut packed = vec![0i8; panels * kp * nr];
    for p in 0..panels {
        let panel = &mut packed[p * kp * nr..(p + 1) * kp * nr];
        for kk in 0..k {
            let (g, t) = (kk / 4, kk % 4);
            for c in 0..nr.min(n - p * nr) {
                panel[g * 4 * nr + 4 * c + t] = w_q[kk * n + p * nr + c];
            }
        }
    }
    packed
}

/// `Wq` `[k, n]` into the AVX2 path's layout: column panels of `nr` outputs (a multiple of 8),
/// each holding, for every pair `g` of consecutive `k`, the `nr x 2` values
/// `Wq[2g + t, nr p + c]` as `i16` at element `2 nr g + 2 c + t` of panel `p` (zero-padded past
/// `n` and, for odd `k`, past `k`); a panel has `k.div_ceil(2)` pairs. One 32-byte load is 8
/// columns x one pair, the second operand of `vpmaddwd` (see `super::avx2`).
pub(super) fn pack_pairs(w_q: &[i8], k: usize, n: usize, nr: usize) -> Vec<i16> {
    debug_assert!(nr.is_multiple_of(8) && w_q.len() == k * n);
    let (panels, pairs) = (n.div_ceil(nr), k.div_ceil(2));
    let mut packed = vec![0i16; panels * pairs * 2 * nr];
    for (p, panel) in packed.chunks_exact_mut(pairs * 2 * nr).enumerate() {
        for kk in 0..k {
            let (g, t) = (kk / 2, kk % 2);
            for c in 0..nr.min(n - p * nr) {
                panel[g * 2 * nr + 2 * c + t] = i16::from(w_q[kk * n + p * nr + c]);
            }
        }
    }
    packed
}

/// SmoothQuant's per-input-channel factors (Xiao et al. 2023, eq. 4) for a layer `x W` with `W`
/// `[k, n]` row-major: `s_j = a_j^α / w_j^(1−α)`, where `a_j = act_max[j]` is the largest
/// `|x[·, j]|` seen (calibration) and `w_j = max_n |W[j, ·]|`. `α = 0.5` splits the range evenly
/// between activations and weights. A channel with `a_j = 0` or `w_j = 0` (or a non-finite
/// factor) gets `s_j = 1`; factors are clamped to `[1e-4, 1e4]`.
///
/// Returns `[k]` factors for [`super::QuantizedLinear::with_smoothing`].
/// Panics if `act_max.len() != k` or `w.len() != k · n`.
pub fn smoothing_factors(act_max: &[f32], w: &[f32], k: usize, n: usize, alpha: f32) -> Vec<f32> {
    assert_eq!(act_max.len(), k, "smoothing_factors: act_max has {} values, expected k = {k}", act_max.len());
    assert_eq!(Some(w.len()), k.checked_mul(n), "smoothing_factors: w has {} values, expected k x n = {k} x {n}", w.len());
    act_max
        .iter()
        .zip(w.chunks_exact(n.max(1)))
        .map(|(&a, row)| {
            let wm = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = a.powf(alpha) / wm.powf(1.0 - alpha);
            if a > 0.0 && wm > 0.0 && s.is_finite() {
                s.clamp(1e-4, 1e4)
            } else {
                1.0
            }
        })
        .collect()
}
