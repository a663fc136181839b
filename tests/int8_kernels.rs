//! The int8 linear layer (`kernels::int8`, issue 17): every path this machine has (AMX-INT8,
//! AVX-512 VNNI, AVX2, the portable fallback) against an exact integer reference computed from the same
//! quantised inputs, on ragged shapes, with and without GELU; the quantisation error against the
//! f32 product stays inside its analytic bound; bad shapes give errors. The tests print which
//! paths ran and fail when a path the CPU reports did not run.

use std::io::Write as _;
use sttabt::kernels::int8::{amx, quantize_row, Int8Error, Int8Kernel, QuantizedLinear, WeightRange, AMX_MIN_ROWS, MAX_K};

fn rng_vec(rng: &mut fastrand::Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| (rng.f32() * 2.0 - 1.0) * scale).collect()
}

/// The paths this machine runs, fastest first.
fn paths() -> Vec<Int8Kernel> {
    Int8Kernel::ALL.into_iter().filter(|k| k.available()).collect()
}

/// Exact reference from the same quantised inputs: i64 accumulators `Σ q · Wq`, dequantised in
/// f64 with the kernels' f32 scale product `sx · sw`. Returns `(y, magnitude)` per output, where
/// `magnitude = |acc · s| + |b|` bounds the f32 rounding of the kernels' epilogue.
fn reference(l: &QuantizedLinear, x: &[f32], m: usize, gelu: bool) -> (Vec<f64>, Vec<f64>) {
    let (k, n) = (l.k(), l.n());
    let (wq, sw, b) = (l.weight_q(), l.weight_scales(), l.bias());
    let mut u = vec![0u8; k];
    let (mut y, mut mag) = (vec![0.0f64; m * n], vec![0.0f64; m * n]);
    for i in 0..m {
        let (sx, z) = quantize_row(&x[i * k..(i + 1) * k], &mut u);
        for j in 0..n {
            let acc: i64 = (0..k).map(|t| (i64::from(u[t]) - i64::from(z)) * i64::from(wq[t * n + j])).sum();
            let s = f64::from(sx * sw[j]);
            let lin = acc as f64 * s + f64::from(b[j]);
            y[i * n + j] = if gelu { 0.5 * lin * (1.0 + libm::erf(lin / std::f64::consts::SQRT_2)) } else { lin };
            mag[i * n + j] = (acc as f64 * s).abs() + f64::from(b[j]).abs();
        }
    }
    (y, mag)
}

/// [`reference`] for a layer with smoothing and f32 channels built from `w` `[k, n]`: each row
/// is multiplied by `1 / s` (in f32, as the kernels do) with the f32 channels' factors 0 and
/// quantised, the exact integer product dequantised in f64, and `Σ_c x[i, c] · W[c, j]` over
/// the f32 channels added in f64 (its magnitudes added to the tolerance's).
fn reference_calibrated(l: &QuantizedLinear, w: &[f32], x: &[f32], m: usize, gelu: bool) -> (Vec<f64>, Vec<f64>) {
    let (k, n) = (l.k(), l.n());
    let (wq, sw, b) = (l.weight_q(), l.weight_scales(), l.bias());
    let chans = l.f32_channels();
    let mut pre: Vec<f32> = l.inverse_smoothing().map_or_else(|| vec![1.0; k], |v| v.to_vec());
    for &c in chans {
        pre[c] = 0.0;
    }
    let mut u = vec![0u8; k];
    let (mut y, mut mag) = (vec![0.0f64; m * n], vec![0.0f64; m * n]);
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        let xs: Vec<f32> = xr.iter().zip(&pre).map(|(v, g)| v * g).collect();
        let (sx, z) = quantize_row(&xs, &mut u);
        for j in 0..n {
            let acc: i64 = (0..k).map(|t| (i64::from(u[t]) - i64::from(z)) * i64::from(wq[t * n + j])).sum();
            let s = f64::from(sx * sw[j]);
            let side: f64 = chans.iter().map(|&c| f64::from(xr[c]) * f64::from(w[c * n + j])).sum();
            let side_mag: f64 = chans.iter().map(|&c| (f64::from(xr[c]) * f64::from(w[c * n + j])).abs()).sum();
            let lin = acc as f64 * s + f64::from(b[j]) + side;
            y[i * n + j] = if gelu { 0.5 * lin * (1.0 + libm::erf(lin / std::f64::consts::SQRT_2)) } else { lin };
            mag[i * n + j] = (acc as f64 * s).abs() + f64::from(b[j]).abs() + side_mag;
        }
    }
    (y, mag)
}

/// `got` equals the reference up to the f32 rounding of the epilogue (and GELU's approximation).
fn assert_matches(got: &[f32], want: &(Vec<f64>, Vec<f64>), gelu: bool, what: &str) {
    let rel = if gelu { 2e-6 } else { 4e-7 };
    for (idx, ((&g, &w), &mag)) in got.iter().zip(&want.0).zip(&want.1).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{idx}]: {g}, expected NaN");
            continue;
        }
        let tol = rel * (mag + 1e-30) + if gelu { 1e-7 * mag.min(1.0) } else { 0.0 };
        assert!((f64::from(g) - w).abs() <= tol, "{what}[{idx}]: {g} vs exact {w} (tolerance {tol:e})");
    }
}

fn run(l: &QuantizedLinear, kernel: Int8Kernel, x: &[f32], m: usize, gelu: bool) -> Vec<f32> {
    let mut out = vec![f32::NAN; m * l.n()];
    l.forward_with(kernel, x, &mut out, m, gelu).unwrap();
    out
}

/// Check every path on one shape; the SIMD paths (AMX, VNNI, AVX2) share their epilogue
/// arithmetic, so they agree bit for bit.
fn check_shape(rng: &mut fastrand::Rng, m: usize, k: usize, n: usize) {
    check_shape_range(rng, m, k, n, WeightRange::Full)
}

/// [`check_shape`] with the weights quantised to `range`.
fn check_shape_range(rng: &mut fastrand::Rng, m: usize, k: usize, n: usize, range: WeightRange) {
    let w = rng_vec(rng, k * n, 0.1);
    let b = rng_vec(rng, n, 0.5);
    let l = QuantizedLinear::with_range(&w, &b, k, n, range).unwrap();
    assert!(l.weight_q().iter().all(|&q| i32::from(q).abs() <= i32::from(range.max())));
    let x = rng_vec(rng, m * k, 2.0);
    for gelu in [false, true] {
        let want = reference(&l, &x, m, gelu);
        let mut simd: Option<Vec<f32>> = None;
        for kernel in paths() {
            let got = run(&l, kernel, &x, m, gelu);
            assert_matches(&got, &want, gelu, &format!("{kernel} {range:?} m={m} k={k} n={n} gelu={gelu}"));
            if kernel != Int8Kernel::Fallback {
                match &simd {
                    Some(s) => assert!(
                        s.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{kernel} m={m} k={k} n={n}: not bit-identical to the other SIMD path"
                    ),
                    None => simd = Some(got),
                }
            }
        }
    }
}

#[test]
fn every_path_matches_the_exact_reference_on_ragged_shapes() {
    let mut rng = fastrand::Rng::with_seed(17);
    for m in 1..=40 {
        for &(k, n) in &[(37, 47), (4, 1), (64, 65), (100, 130)] {
            check_shape(&mut rng, m, k, n);
        }
    }
    // (AMX: 57 = a whole block + a padded one, 40 and 257 = whole blocks + a VNNI tail)
    for &m in &[1, 6, 26, 40, 57, 64, 128, 257] {
        for &(k, n) in &[(37, 1), (384, 47), (384, 384), (1536, 384), (384, 1536)] {
            if m * k * n <= 128 * 1536 * 384 || m == 257 && n < 384 {
                check_shape(&mut rng, m, k, n);
            }
        }
    }
    check_shape(&mut rng, 257, 1536, 384);
}

/// Integer inputs whose rows span exactly 255 (from 0 or from −128) and whose column maxima are
/// 127, so that both scales are exactly 1: `x` `[m, k]`, `w` `[k, n]` and the layer. With
/// `halves`, the unsigned rows' other values are `j + 0.5` (ties, which quantise to even).
fn unit_scale_layer(rng: &mut fastrand::Rng, m: usize, k: usize, n: usize, halves: bool) -> (Vec<f32>, QuantizedLinear) {
    unit_scale_layer_range(rng, m, k, n, halves, WeightRange::Full)
}

/// [`unit_scale_layer`] with weights in `[-q, q]`, `q = range.max()`, each column reaching `±q`.
fn unit_scale_layer_range(
    rng: &mut fastrand::Rng,
    m: usize,
    k: usize,
    n: usize,
    halves: bool,
    range: WeightRange,
) -> (Vec<f32>, QuantizedLinear) {
    let q = i32::from(range.max());
    // rows with range exactly 255 and an integer minimum quantise with scale 1: even rows in
    // [0, 255] (zero point 0), odd rows in [-128, 127] (zero point 128; needs k >= 2)
    let mut x = vec![0.0f32; m * k];
    for (i, row) in x.chunks_exact_mut(k).enumerate() {
        let signed = i % 2 == 1 && k >= 2;
        let (lo, hi) = if signed { (-128, 127) } else { (0, 255) };
        let half = if halves && !signed { 0.5 } else { 0.0 };
        row.iter_mut().for_each(|v| *v = rng.i32(lo..hi) as f32 + half);
        row[i % k] = hi as f32;
        if signed || halves && k >= 2 {
            row[(i + 1) % k] = lo as f32;
        }
    }
    let mut w: Vec<f32> = (0..k * n).map(|_| rng.i32(-q..=q) as f32).collect();
    for j in 0..n {
        w[(j % k) * n + j] = if j % 3 == 0 { -q as f32 } else { q as f32 };
    }
    let l = QuantizedLinear::with_range(&w, &vec![0.0; n], k, n, range).unwrap();
    assert!(l.weight_scales().iter().all(|&s| s == 1.0));
    (x, l)
}

/// `kernel`'s outputs on a [`unit_scale_layer`] are its i32 accumulators: each must equal the
/// exact `Σ_t (u_t − z) · Wq[t, j]` of `quantize_row`'s codes, bit for bit.
fn assert_accumulators_exact(kernel: Int8Kernel, l: &QuantizedLinear, x: &[f32], m: usize) {
    let (k, n) = (l.k(), l.n());
    let got = run(l, kernel, x, m, false);
    let mut u = vec![0u8; k];
    for i in 0..m {
        let (sx, z) = quantize_row(&x[i * k..(i + 1) * k], &mut u);
        assert_eq!(sx, 1.0);
        for j in 0..n {
            let exact: i64 = (0..k).map(|t| (i64::from(u[t]) - i64::from(z)) * i64::from(l.weight_q()[t * n + j])).sum();
            assert!(exact.abs() < 1 << 24, "{exact} is not exact in f32");
            assert_eq!(got[i * n + j], exact as f32, "{kernel} {m}x{k}x{n} [{i},{j}]");
        }
    }
}

/// On [`unit_scale_layer`]s each output is its integer accumulator, exactly representable in
/// f32: the paths' i32 sums, bit for bit.
#[test]
fn accumulators_are_bit_exact() {
    let mut rng = fastrand::Rng::with_seed(5);
    for &(m, k, n) in &[(1, 1, 1), (7, 37, 47), (33, 130, 97), (57, 64, 70), (70, 1000, 64), (257, 384, 129)] {
        let (x, l) = unit_scale_layer(&mut rng, m, k, n, false);
        for kernel in paths() {
            assert_accumulators_exact(kernel, &l, &x, m);
        }
    }
}

/// The AVX2 path (what AVX2-only CPUs such as AMD Zen 3 run): its i32 accumulators equal the
/// exact ones at the MiniLM shapes (m = 1, 26, 128 rows; 128 splits the threads by rows) and at
/// odd ones (m = 1..7: its 6-row tiles and tails of 1-5 rows; n not a multiple of its 32-column panels; k odd
/// and not a multiple of 64), with ties in the activations (its quantisation rounds to even as
/// `quantize_row`); with smoothing, f32 channels and GELU it matches the exact reference. On a
/// CPU without AVX2 and FMA it reports itself unavailable.
#[test]
fn avx2_path_is_exact_at_minilm_and_odd_shapes() {
    let avx2 = Int8Kernel::Avx2;
    let l = QuantizedLinear::new(&[0.5; 12], &[0.0; 3], 4, 3).unwrap();
    let r = l.forward_with(avx2, &[1.0; 8], &mut [0.0; 6], 2, false);
    assert_eq!(r.is_ok(), avx2.available(), "{r:?}");
    if let Err(e) = r {
        assert!(matches!(e, Int8Error::Unavailable { kernel: Int8Kernel::Avx2, .. }), "{e}");
        let _ = writeln!(std::io::stderr(), "avx2 int8 path: not available here ({e}); nothing else to check");
        return;
    }
    let before = avx2.calls();
    let mut rng = fastrand::Rng::with_seed(41);
    let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
    for m in 1..=7 {
        for &(k, n) in &[(1, 1), (3, 7), (37, 33), (63, 31), (65, 95), (129, 64), (383, 100)] {
            shapes.push((m, k, n));
        }
    }
    for m in [1, 26, 128] {
        for (k, n) in [(384, 1152), (384, 384), (384, 1536), (1536, 384)] {
            shapes.push((m, k, n));
        }
    }
    for (idx, &(m, k, n)) in shapes.iter().enumerate() {
        let (x, l) = unit_scale_layer(&mut rng, m, k, n, idx % 2 == 0);
        assert_accumulators_exact(avx2, &l, &x, m);
    }
    for &(m, k, n, nc) in &[(1, 37, 33, 1), (5, 65, 95, 2), (7, 383, 100, 4), (26, 384, 384, 4), (128, 1536, 384, 8)] {
        let chans: Vec<usize> = (0..nc).map(|t| (3 * k / 4 + 5 * t) % k).collect();
        let x: Vec<f32> = (0..m * k).map(|i| (rng.f32() * 2.0 - 1.0) * if chans.contains(&(i % k)) { 15.0 } else { 1.0 }).collect();
        let w = rng_vec(&mut rng, k * n, 0.1);
        let b = rng_vec(&mut rng, n, 0.3);
        let s: Vec<f32> = (0..k).map(|_| 0.5 + rng.f32() * 2.0).collect();
        let l = QuantizedLinear::with_smoothing(&w, &b, k, n, &s).unwrap().with_f32_channels(&w, &chans).unwrap();
        for gelu in [false, true] {
            let want = reference_calibrated(&l, &w, &x, m, gelu);
            assert_matches(&run(&l, avx2, &x, m, gelu), &want, gelu, &format!("avx2 m={m} k={k} n={n} channels={nc} gelu={gelu}"));
        }
    }
    let ran = avx2.calls() - before;
    let _ = writeln!(std::io::stderr(), "avx2 int8 path: ran {ran} thread tasks over {} shapes (+ 10 calibrated)", shapes.len());
    assert!(ran >= shapes.len() + 10, "the AVX2 path ran {ran} tasks");
}

#[test]
fn zero_huge_tiny_and_non_finite_rows() {
    let (k, n) = (96, 80);
    let mut rng = fastrand::Rng::with_seed(3);
    let w = rng_vec(&mut rng, k * n, 1.0);
    let b = rng_vec(&mut rng, n, 1.0);
    let l = QuantizedLinear::new(&w, &b, k, n).unwrap();
    let scales = [0.0f32, 1e30, 1e-30, 1e-40, 1.0, 3e4, f32::NAN, 1.0];
    let m = scales.len() * 5; // 40 rows: past one AMX block
    let mut x = vec![0.0f32; m * k];
    for (i, row) in x.chunks_exact_mut(k).enumerate() {
        let s = scales[i % scales.len()];
        for v in row.iter_mut() {
            *v = (rng.f32() * 2.0 - 1.0) * s;
        }
        if s.is_nan() {
            row.iter_mut().for_each(|v| *v = 1.0);
            row[k / 2] = if i % 2 == 0 { f32::NAN } else { f32::INFINITY };
        }
    }
    let mut u = vec![7u8; k];
    assert_eq!(quantize_row(&vec![0.0; k], &mut u), (0.0, 0));
    assert!(u.iter().all(|&v| v == 0));
    for gelu in [false, true] {
        let want = reference(&l, &x, m, gelu);
        for kernel in paths() {
            let got = run(&l, kernel, &x, m, gelu);
            assert_matches(&got, &want, gelu, &format!("{kernel} gelu={gelu}"));
            for (i, row) in got.chunks_exact(n).enumerate() {
                let s = scales[i % scales.len()];
                if s == 0.0 {
                    let bias: Vec<f32> = if gelu { b.iter().map(|&v| sttabt::kernels::gelu_approx(v)).collect() } else { b.clone() };
                    for (g, w) in row.iter().zip(&bias) {
                        assert!((g - w).abs() <= 3e-6, "{kernel}: a zero row gives the bias (GELU'd): {g} vs {w}");
                    }
                }
                assert_eq!(
                    row.iter().all(|v| v.is_nan()),
                    s.is_nan(),
                    "{kernel}: row {i} (scale {s}) NaN exactly when its input is not finite"
                );
            }
        }
    }
}

#[test]
fn quantize_row_rounds_to_nearest_within_half_a_step() {
    let mut rng = fastrand::Rng::with_seed(11);
    // (symmetric rows, one-sided rows as GELU gives, and all-negative rows)
    for &(len, s, shift) in
        &[(1, 1.0f32, 0.0f32), (5, 1e-3, 0.0), (384, 7.0, 0.0), (1000, 1e25, 0.0), (33, 1e-39, 0.0), (384, 2.0, 0.9), (50, 3.0, -1.0)]
    {
        let x: Vec<f32> = rng_vec(&mut rng, len, s).iter().map(|v| v + shift * s).collect();
        let mut u = vec![0u8; len];
        let (scale, z) = quantize_row(&x, &mut u);
        let lo = x.iter().fold(0.0f32, |a, &v| a.min(v));
        let hi = x.iter().fold(0.0f32, |a, &v| a.max(v));
        let range = f64::from(hi) - f64::from(lo);
        assert_eq!(scale, (range / 255.0) as f32, "len {len} scale {s}");
        assert!((0..=255).contains(&z), "zero point {z}");
        assert_eq!(z, (-f64::from(lo) * 255.0 / range).round_ties_even() as i32, "zero point of a row in [{lo}, {hi}]");
        assert!(u.contains(&255) || u.contains(&0), "the row's extreme value takes an end code");
        for (&v, &uv) in x.iter().zip(&u) {
            let err = (f64::from(v) - (f64::from(uv) - f64::from(z)) * f64::from(scale)).abs();
            // (half a step, and the zero point's own rounding of up to half a step; + the
            // rounding of a subnormal scale, 255 x half its spacing)
            assert!(err <= 1.0001 * f64::from(scale) + 255.0 * 0.71e-45, "{v} -> {uv} - {z} x {scale}: error {err}");
        }
        // a one-sided row uses the whole code; 0 is exact
        if shift > 0.5 {
            assert!(z <= 40, "a mostly positive row has its zero point near 0: {z}");
        }
        let mut u0 = vec![0u8; 2];
        let (s0, z0) = quantize_row(&[0.0, hi], &mut u0);
        assert_eq!((f64::from(u0[0]) - f64::from(z0)) * f64::from(s0), 0.0, "0 is exact");
    }
    let mut u = vec![5u8; 3];
    let (scale, z) = quantize_row(&[1.0, f32::NAN, 2.0], &mut u);
    assert!(scale.is_nan());
    assert_eq!((u, z), (vec![0, 0, 0], 0));
    // a symmetric row has its zero point in the middle
    let mut u = vec![0u8; 2];
    assert_eq!(quantize_row(&[-1.0, 1.0], &mut u), (2.0 / 255.0, 128));
    assert_eq!(u, [0, 255]);
}

/// `|Σ x w − Σ xq wq| <= Σ_k (|x| sw + |w| sx) / 2 + k sx sw / 4` (half a step on each side):
/// the int8 result stays within it (plus f32 rounding), and its typical error is small.
#[test]
fn int8_error_against_the_f32_product_is_within_the_quantisation_bound() {
    let mut rng = fastrand::Rng::with_seed(23);
    let (m, k, n) = (26, 384, 384);
    let x: Vec<f32> = (0..m * k).map(|_| rng.f32() * 2.0 - 1.0 + if rng.u8(..) == 0 { 6.0 } else { 0.0 }).collect();
    let w = rng_vec(&mut rng, k * n, 0.08);
    let b = rng_vec(&mut rng, n, 0.1);
    let l = QuantizedLinear::new(&w, &b, k, n).unwrap();
    let sw = l.weight_scales();
    let (mut err2, mut y2) = (0.0f64, 0.0f64);
    for kernel in paths() {
        let got = run(&l, kernel, &x, m, false);
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            let range = f64::from(xr.iter().fold(0.0f32, |a, &v| a.max(v))) - f64::from(xr.iter().fold(0.0f32, |a, &v| a.min(v)));
            // (the zero point's rounding adds up to half a step to each value's error: a full step)
            let sx = 2.0 * range / 255.0;
            for j in 0..n {
                let exact: f64 = (0..k).map(|t| f64::from(xr[t]) * f64::from(w[t * n + j])).sum::<f64>() + f64::from(b[j]);
                let swj = f64::from(sw[j]);
                let bound: f64 = (0..k).map(|t| (f64::from(xr[t]).abs() * swj + f64::from(w[t * n + j]).abs() * sx) / 2.0).sum::<f64>()
                    + k as f64 * sx * swj / 4.0;
                let e = (f64::from(got[i * n + j]) - exact).abs();
                assert!(e <= bound * 1.0001 + 1e-5 * exact.abs(), "{kernel} [{i},{j}]: error {e} over the bound {bound}");
                err2 += e * e;
                y2 += exact * exact;
            }
        }
    }
    let rel = (err2 / y2).sqrt();
    let _ = writeln!(std::io::stderr(), "int8 vs f32 at 26x384x384: relative RMS error {rel:.2e}");
    // (1.9e-2 here: the rare outliers of 6 widen their rows' scale, as in real activations)
    assert!(rel < 0.03, "relative RMS error {rel}");
}

#[test]
fn bad_shapes_and_values_are_errors() {
    let w = vec![0.5f32; 12];
    assert_eq!(QuantizedLinear::new(&w, &[0.0; 4], 4, 3).unwrap_err(), Int8Error::BiasShape { found: 4, n: 3 });
    assert_eq!(QuantizedLinear::new(&w, &[0.0; 3], 5, 3).unwrap_err(), Int8Error::WeightShape { found: 12, k: 5, n: 3 });
    assert_eq!(QuantizedLinear::new(&[], &[], 0, 0).unwrap_err(), Int8Error::Empty { k: 0, n: 0 });
    assert_eq!(QuantizedLinear::new(&w, &[0.0; 3], usize::MAX, 3).unwrap_err(), Int8Error::TooDeep { k: usize::MAX, max: MAX_K });
    assert_eq!(QuantizedLinear::new(&w, &[0.0; 3], MAX_K, 3).unwrap_err(), Int8Error::WeightShape { found: 12, k: MAX_K, n: 3 });
    assert_eq!(MAX_K, 66_311, "255 x 127 x (MAX_K + 1) must overflow i32");
    let mut bad = w.clone();
    bad[7] = f32::INFINITY;
    let e = QuantizedLinear::new(&bad, &[0.0; 3], 4, 3).unwrap_err();
    assert_eq!(e, Int8Error::NonFinite { what: "weight", index: 7, value: f32::INFINITY });
    assert!(e.to_string().contains("weight[7] is inf"), "{e}");
    assert!(matches!(QuantizedLinear::new(&w, &[0.0, f32::NAN, 0.0], 4, 3), Err(Int8Error::NonFinite { what: "bias", index: 1, .. })));
    let l = QuantizedLinear::new(&w, &[0.0; 3], 4, 3).unwrap();
    for kernel in Int8Kernel::ALL {
        let mut out = vec![0.0; 6];
        let r = l.forward_with(kernel, &[1.0; 8], &mut out, 2, false);
        assert_eq!(r.is_ok(), kernel.available(), "{kernel}: {r:?}");
        if let Err(e) = r {
            assert!(e.to_string().contains(kernel.name()), "{e}");
        }
    }
    let mut out = vec![1.0f32; 0];
    l.forward(&[], &mut out, 0, true); // no rows: nothing to do
}

#[test]
#[should_panic(expected = "input has 7 values, expected m x k = 2 x 4")]
fn wrong_input_length_panics_with_the_shapes() {
    let l = QuantizedLinear::new(&[0.5; 12], &[0.0; 3], 4, 3).unwrap();
    l.forward(&[1.0; 7], &mut [0.0; 6], 2, false);
}

#[test]
#[should_panic(expected = "output has 5 values, expected m x n = 2 x 3")]
fn wrong_output_length_panics_with_the_shapes() {
    let l = QuantizedLinear::new(&[0.5; 12], &[0.0; 3], 4, 3).unwrap();
    l.forward(&[1.0; 8], &mut [0.0; 5], 2, false);
}

/// The dispatcher's pick equals the forced path bit for bit, also inside `kernels::serial`, and
/// every path the CPU reports has run (this test runs each one itself).
#[test]
fn dispatch_and_the_paths_this_cpu_runs() {
    let mut rng = fastrand::Rng::with_seed(29);
    let (k, n) = (384, 200);
    let l = QuantizedLinear::new(&rng_vec(&mut rng, k * n, 0.1), &rng_vec(&mut rng, n, 0.1), k, n).unwrap();
    for m in [1, 26, AMX_MIN_ROWS - 1, AMX_MIN_ROWS, 300] {
        let x = rng_vec(&mut rng, m * k, 1.0);
        let kernel = Int8Kernel::for_rows(m);
        assert!(kernel.available());
        let mut auto = vec![0.0; m * n];
        l.forward(&x, &mut auto, m, true);
        let forced = run(&l, kernel, &x, m, true);
        let serial = sttabt::kernels::serial(|| run(&l, kernel, &x, m, true));
        assert!(auto.iter().zip(&forced).zip(&serial).all(|((a, f), s)| a.to_bits() == f.to_bits() && a.to_bits() == s.to_bits()), "m={m}");
    }
    let before: Vec<usize> = Int8Kernel::ALL.iter().map(|k| k.calls()).collect();
    let x = rng_vec(&mut rng, 100 * k, 1.0);
    for kernel in paths() {
        run(&l, kernel, &x, 100, false);
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flag = |f: &str| cpuinfo.lines().any(|line| line.starts_with("flags") && line.split_whitespace().any(|w| w == f));
    let mut report = String::new();
    for (kernel, before) in Int8Kernel::ALL.iter().zip(before) {
        let ran = kernel.calls() > before;
        report += &format!(
            "  {kernel}: {}\n",
            if ran { "ran".to_string() } else { format!("did NOT run ({})", kernel.unavailable_reason().unwrap_or_default()) }
        );
        assert_eq!(ran, kernel.available(), "{kernel}: ran = {ran}, available = {}", kernel.available());
    }
    let _ = writeln!(std::io::stderr(), "int8 paths on this CPU (AMX: {}):\n{report}", amx::status());
    assert!(Int8Kernel::Fallback.calls() > 0);
    #[cfg(target_arch = "x86_64")]
    {
        let vnni = std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512bw");
        assert_eq!(Int8Kernel::Vnni.available(), vnni, "the CPU reports AVX-512 VNNI = {vnni}");
        if flag("amx_int8") && flag("amx_tile") && std::env::var_os("STTABT_NO_AMX").is_none() {
            // /proc/cpuinfo lists AMX only when the kernel supports it: the request may still be refused.
            assert!(
                matches!(amx::status(), amx::AmxStatus::Granted | amx::AmxStatus::Refused(_)),
                "cpuinfo lists AMX, status {}",
                amx::status()
            );
            if amx::status() == amx::AmxStatus::Granted {
                assert!(Int8Kernel::Amx.available(), "AMX granted, so the AMX path must run");
            }
        }
    }
}

/// Smoothing and f32 channels change how `x W + b` is computed, not what: unit factors give the
/// plain layer bit for bit; any factors and f32 channels stay within the plain layer's error of
/// the f32 product (here, with an outlier channel, well inside it); bad factors and channels
/// are errors naming them.
#[test]
fn smoothing_and_f32_channels_compute_the_same_product() {
    let mut rng = fastrand::Rng::with_seed(31);
    let (m, k, n) = (30, 96, 70);
    // channel 5 an outlier (x 20), the rest uniform in [-1, 1]
    let x: Vec<f32> = (0..m * k).map(|i| (rng.f32() * 2.0 - 1.0) * if i % k == 5 { 20.0 } else { 1.0 }).collect();
    let w = rng_vec(&mut rng, k * n, 0.1);
    let b = rng_vec(&mut rng, n, 0.1);
    let exact: Vec<f64> = (0..m * n)
        .map(|o| (0..k).map(|t| f64::from(x[o / n * k + t]) * f64::from(w[t * n + o % n])).sum::<f64>() + f64::from(b[o % n]))
        .collect();
    let rel = |y: &[f32]| {
        let e: f64 = y.iter().zip(&exact).map(|(a, b)| (f64::from(*a) - b).powi(2)).sum();
        (e / exact.iter().map(|v| v * v).sum::<f64>()).sqrt()
    };
    let plain = QuantizedLinear::new(&w, &b, k, n).unwrap();
    let unit = QuantizedLinear::with_smoothing(&w, &b, k, n, &vec![1.0; k]).unwrap();
    let mut act_max = vec![1.0f32; k];
    act_max[5] = 20.0;
    let s = sttabt::kernels::int8::smoothing_factors(&act_max, &w, k, n, 0.5);
    assert!(s[5] > 3.0 * s[0], "the outlier channel gets the largest factor: {} vs {}", s[5], s[0]);
    let smooth = QuantizedLinear::with_smoothing(&w, &b, k, n, &s).unwrap();
    let side = smooth.with_f32_channels(&w, &[5, 5]).unwrap();
    assert_eq!(side.f32_channels(), &[5]);
    for kernel in paths() {
        let p = run(&plain, kernel, &x, m, false);
        assert_eq!(run(&unit, kernel, &x, m, false), p, "{kernel}: unit smoothing is the plain layer");
        let (ep, es, ec) = (rel(&p), rel(&run(&smooth, kernel, &x, m, false)), rel(&run(&side, kernel, &x, m, false)));
        let _ = writeln!(std::io::stderr(), "{kernel}: relative error plain {ep:.2e}, smoothed {es:.2e}, + channel 5 in f32 {ec:.2e}");
        assert!(es < ep && ec < 0.6 * ep, "{kernel}: plain {ep}, smoothed {es}, f32 channel {ec}");
        // GELU is applied after the f32 channels are added
        let g = run(&side, kernel, &x, m, true);
        let mut want = run(&side, kernel, &x, m, false);
        sttabt::kernels::gelu_fast(&mut want);
        assert_eq!(g, want, "{kernel}: GELU after the f32 channels");
    }
    assert!(matches!(QuantizedLinear::with_smoothing(&w, &b, k, n, &[1.0; 3]), Err(Int8Error::SmoothingShape { found: 3, k: 96 })));
    let mut bad = vec![1.0f32; k];
    bad[7] = 0.0;
    assert!(matches!(QuantizedLinear::with_smoothing(&w, &b, k, n, &bad), Err(Int8Error::BadSmoothing { index: 7, .. })));
    assert!(matches!(plain.with_f32_channels(&w, &[96]), Err(Int8Error::BadChannel { channel: 96, k: 96 })));
}

/// The f32 channels are added in the int8 tile's epilogue (before the store and the GELU): every
/// path equals the exact reference (integer product + f64 side product) up to f32 rounding, on
/// ragged shapes (partial panels, AMX blocks and VNNI tails, the 4 and 8 channels the
/// calibration uses, with and without smoothing), and VNNI and AMX agree bit for bit.
#[test]
fn f32_channels_in_the_epilogue_match_the_exact_reference() {
    let mut rng = fastrand::Rng::with_seed(37);
    let shapes: &[(usize, usize, usize, usize)] =
        &[(1, 37, 47, 1), (5, 96, 70, 4), (7, 384, 130, 4), (24, 100, 65, 3), (40, 384, 384, 4), (57, 1536, 96, 8), (100, 384, 200, 8)];
    for &(m, k, n, nc) in shapes {
        for smoothed in [false, true] {
            // channels 3 k / 4 .. a few outliers (x 15) among values in [-1, 1]
            let chans: Vec<usize> = (0..nc).map(|t| (3 * k / 4 + 5 * t) % k).collect();
            let x: Vec<f32> = (0..m * k).map(|i| (rng.f32() * 2.0 - 1.0) * if chans.contains(&(i % k)) { 15.0 } else { 1.0 }).collect();
            let w = rng_vec(&mut rng, k * n, 0.1);
            let b = rng_vec(&mut rng, n, 0.3);
            let base = if smoothed {
                let s: Vec<f32> = (0..k).map(|_| 0.5 + rng.f32() * 2.0).collect();
                QuantizedLinear::with_smoothing(&w, &b, k, n, &s).unwrap()
            } else {
                QuantizedLinear::new(&w, &b, k, n).unwrap()
            };
            let l = base.with_f32_channels(&w, &chans).unwrap();
            assert_eq!(l.f32_channels().len(), nc);
            for gelu in [false, true] {
                let want = reference_calibrated(&l, &w, &x, m, gelu);
                let mut simd: Option<Vec<f32>> = None;
                for kernel in paths() {
                    let got = run(&l, kernel, &x, m, gelu);
                    let what = format!("{kernel} m={m} k={k} n={n} channels={nc} smoothed={smoothed} gelu={gelu}");
                    assert_matches(&got, &want, gelu, &what);
                    if kernel != Int8Kernel::Fallback {
                        match &simd {
                            Some(s) => assert!(s.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: SIMD paths differ"),
                            None => simd = Some(got),
                        }
                    }
                }
            }
        }
    }
}

/// Reduced-range (7-bit) weights, which the AVX2 path multiplies with `vpmaddubsw` (u8 x s8
/// pairs into i16): every path's accumulators equal the exact sums at ragged and MiniLM shapes,
/// including the extreme pairs `2 · 255 · (±63) = ±32130` that a saturating i16 would clip if
/// the weights were not reduced; with GELU, smoothing and f32 channels every path matches the
/// exact reference; the SIMD paths agree bit for bit. The quantisation itself: `|Wq| <= 63` and
/// `sw = max |W| / 63`.
#[test]
fn reduced_range_weights_are_exact_on_every_path() {
    let mut rng = fastrand::Rng::with_seed(63);
    let w = rng_vec(&mut rng, 37 * 5, 1.0);
    let l = QuantizedLinear::with_range(&w, &[0.0; 5], 37, 5, WeightRange::Reduced).unwrap();
    assert_eq!(l.weight_range(), WeightRange::Reduced);
    for j in 0..5 {
        let max = (0..37).map(|t| w[t * 5 + j].abs()).fold(0.0f32, f32::max);
        assert_eq!(l.weight_scales()[j], max / 63.0);
        assert_eq!((0..37).map(|t| i32::from(l.weight_q()[t * 5 + j]).abs()).max(), Some(63));
    }
    let before: Vec<usize> = paths().iter().map(|k| k.calls()).collect();
    let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
    for m in 1..=7 {
        for &(k, n) in &[(1, 1), (3, 7), (37, 33), (63, 31), (65, 95), (129, 64), (383, 100)] {
            shapes.push((m, k, n));
        }
    }
    for m in [1, 26, 57, 128, 257] {
        for (k, n) in [(384, 1152), (384, 384), (1536, 384)] {
            shapes.push((m, k, n));
        }
    }
    for (idx, &(m, k, n)) in shapes.iter().enumerate() {
        let (x, l) = unit_scale_layer_range(&mut rng, m, k, n, idx % 2 == 0, WeightRange::Reduced);
        for kernel in paths() {
            assert_accumulators_exact(kernel, &l, &x, m);
        }
    }
    // the extreme pairs: u = 255 everywhere against all +63 and all -63 columns
    let (m, k, n) = (7, 130, 40);
    let x = vec![255.0f32; m * k];
    let w: Vec<f32> = (0..k * n).map(|i| if (i % n) % 2 == 0 { 63.0 } else { -63.0 }).collect();
    let l = QuantizedLinear::with_range(&w, &vec![0.0; n], k, n, WeightRange::Reduced).unwrap();
    for kernel in paths() {
        let got = run(&l, kernel, &x, m, false);
        for (idx, g) in got.iter().enumerate() {
            let want = if (idx % n) % 2 == 0 { 255.0 * 63.0 * k as f32 } else { -255.0 * 63.0 * k as f32 };
            assert!((g - want).abs() <= want.abs() * 1e-6, "{kernel} [{idx}]: {g}, expected {want}");
        }
    }
    for &(m, k, n) in &[(1, 37, 47), (6, 384, 384), (26, 384, 1536), (40, 1536, 384)] {
        check_shape_range(&mut rng, m, k, n, WeightRange::Reduced);
    }
    for &(m, k, n, nc) in &[(5, 65, 95, 2), (26, 384, 384, 4)] {
        let chans: Vec<usize> = (0..nc).map(|t| (3 * k / 4 + 5 * t) % k).collect();
        let x = rng_vec(&mut rng, m * k, 2.0);
        let w = rng_vec(&mut rng, k * n, 0.1);
        let b = rng_vec(&mut rng, n, 0.3);
        let s: Vec<f32> = (0..k).map(|_| 0.5 + rng.f32() * 2.0).collect();
        let l =
            QuantizedLinear::with_smoothing_range(&w, &b, k, n, &s, WeightRange::Reduced).unwrap().with_f32_channels(&w, &chans).unwrap();
        assert_eq!(l.weight_range(), WeightRange::Reduced);
        for gelu in [false, true] {
            let want = reference_calibrated(&l, &w, &x, m, gelu);
            for kernel in paths() {
                assert_matches(&run(&l, kernel, &x, m, gelu), &want, gelu, &format!("{kernel} reduced m={m} k={k} n={n} gelu={gelu}"));
            }
        }
    }
    for (kernel, before) in paths().iter().zip(before) {
        let ran = kernel.calls() - before;
        let _ = writeln!(std::io::stderr(), "reduced-range weights: {kernel} ran {ran} thread tasks");
        assert!(ran >= shapes.len(), "{kernel} ran {ran} tasks on reduced-range weights");
    }
}
