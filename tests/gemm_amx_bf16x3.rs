//! The AMX-BF16 hi/lo-split GEMM (`kernels::matmul_t_bf16x3`) against an f64 product on odd
//! shapes (m, n, k not multiples of 16/32, k = 1, transposed operands, accumulate): its relative
//! error stays under a bound that plain bf16 operands exceed (so the hi/lo compensation is what
//! makes it pass), and its bits do not depend on the thread count. Where the CPU or the OS gives
//! no AMX-BF16, the test checks the reason instead and says so.
use std::io::Write;

use sttabt::kernels;

/// Relative Frobenius error bound: fp32 GEMMs reach ~1e-7, the hi/lo split ~5e-6, plain bf16
/// operands ~3e-3.
const BOUND: f64 = 2e-5;

fn bf16(v: f32) -> f64 {
    let b = v.to_bits();
    f32::from_bits((b.wrapping_add(0x7fff + ((b >> 16) & 1))) & 0xffff_0000) as f64
}

struct Case {
    m: usize,
    k: usize,
    n: usize,
    a_t: bool,
    b_t: bool,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Case {
    fn new(rng: &mut fastrand::Rng, m: usize, k: usize, n: usize, a_t: bool, b_t: bool) -> Self {
        let a = (0..m * k).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let b = (0..k * n).map(|_| (rng.f32() * 2.0 - 1.0) * 3.0).collect();
        Case { m, k, n, a_t, b_t, a, b }
    }
    fn a(&self, i: usize, kk: usize) -> f32 {
        if self.a_t {
            self.a[kk * self.m + i]
        } else {
            self.a[i * self.k + kk]
        }
    }
    fn b(&self, kk: usize, j: usize) -> f32 {
        if self.b_t {
            self.b[j * self.k + kk]
        } else {
            self.b[kk * self.n + j]
        }
    }
    /// op(a)·op(b) in f64, from the operands as given (`round` = to bf16 first).
    fn reference(&self, round: bool) -> Vec<f64> {
        let f = |v: f32| if round { bf16(v) } else { v as f64 };
        let mut want = vec![0.0f64; self.m * self.n];
        for i in 0..self.m {
            for kk in 0..self.k {
                let x = f(self.a(i, kk));
                for j in 0..self.n {
                    want[i * self.n + j] += x * f(self.b(kk, j));
                }
            }
        }
        want
    }
    fn run(&self, out: &mut [f32], accumulate: bool) -> Result<(), &'static str> {
        kernels::matmul_t_bf16x3(&self.a, self.a_t, &self.b, self.b_t, out, self.m, self.k, self.n, accumulate)
    }
}

fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let e: f64 = got.iter().zip(want).map(|(g, w)| (*g as f64 - w).powi(2)).sum();
    let w: f64 = want.iter().map(|w| w * w).sum();
    (e / w).sqrt()
}

const SHAPES: [(usize, usize, usize); 9] =
    [(1, 1, 1), (33, 1, 17), (37, 45, 53), (16, 32, 16), (70, 130, 65), (100, 257, 31), (31, 96, 129), (129, 64, 33), (64, 300, 64)];

#[test]
fn bf16x3_matches_f64_where_plain_bf16_does_not() {
    let mut report = String::new();
    match kernels::amx_bf16_unavailable() {
        None => {
            let mut rng = fastrand::Rng::with_seed(15);
            for &(m, k, n) in &SHAPES {
                for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                    let case = Case::new(&mut rng, m, k, n, a_t, b_t);
                    let want = case.reference(false);
                    let mut got = vec![f32::NAN; m * n];
                    case.run(&mut got, false).expect("AMX-BF16 is available");
                    let err = rel_err(&got, &want);
                    assert!(err <= BOUND, "{m}x{k}x{n} a_t={a_t} b_t={b_t}: relative error {err:.2e} > {BOUND:.0e}");
                    // accumulate: out = c0 + op(a)·op(b)
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.f32() - 0.5).collect();
                    let mut acc = c0.clone();
                    case.run(&mut acc, true).expect("AMX-BF16 is available");
                    let want_acc: Vec<f64> = want.iter().zip(&c0).map(|(w, c)| w + *c as f64).collect();
                    let err_acc = rel_err(&acc, &want_acc);
                    assert!(err_acc <= BOUND, "{m}x{k}x{n} accumulate: relative error {err_acc:.2e}");
                    // plain bf16 operands: far outside the bound (from 64 products on, so that one
                    // lucky near-bf16 value cannot make it small)
                    let plain: Vec<f32> = case.reference(true).iter().map(|v| *v as f32).collect();
                    let err_plain = rel_err(&plain, &want);
                    if m * n * k >= 64 {
                        assert!(err_plain > 10.0 * BOUND, "{m}x{k}x{n}: plain bf16 error {err_plain:.2e} should exceed 10 x {BOUND:.0e}");
                    }
                    if a_t == b_t {
                        report += &format!("  {m}x{k}x{n} a_t={a_t} b_t={b_t}: bf16x3 {err:.1e}, plain bf16 {err_plain:.1e}\n");
                    }
                }
            }
            let _ = writeln!(std::io::stderr(), "path amx-bf16x3 ran (AMX-BF16 granted):\n{report}");
        }
        Some(reason) => {
            let case = Case::new(&mut fastrand::Rng::with_seed(1), 3, 4, 5, false, false);
            assert_eq!(case.run(&mut [0.0; 15], false), Err(reason));
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let flag = |f: &str| cpuinfo.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|w| w == f));
            if flag("amx_bf16") && flag("amx_tile") && std::env::var_os("STTABT_NO_AMX").is_none() {
                assert!(reason.contains("refused"), "cpuinfo lists AMX-BF16, yet: {reason}");
            }
            let _ = writeln!(std::io::stderr(), "path amx-bf16x3 did NOT run: {reason}");
        }
    }
}

/// Output blocks are split over threads, never `k`: 1 and 2 threads give the same bits, on a
/// product with several 128 x 128 task groups and a ragged edge.
#[test]
fn bf16x3_bits_do_not_depend_on_threads() {
    if let Some(reason) = kernels::amx_bf16_unavailable() {
        let _ = writeln!(std::io::stderr(), "path amx-bf16x3 did NOT run: {reason}");
        return assert!(kernels::matmul_t_bf16x3(&[1.0], false, &[1.0], false, &mut [0.0], 1, 1, 1, false).is_err());
    }
    let case = Case::new(&mut fastrand::Rng::with_seed(3), 300, 200, 270, true, false);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        let mut out = vec![0.0f32; 300 * 270];
        pool.install(|| case.run(&mut out, false)).expect("AMX-BF16 is available");
        out
    };
    let (one, two) = (run(1), run(2));
    assert!(one.iter().zip(&two).all(|(x, y)| x.to_bits() == y.to_bits()), "1 and 2 threads differ");
    assert!(rel_err(&one, &case.reference(false)) <= BOUND);
}

/// Non-finite inputs never give finite sums: a NaN operand gives NaN in its row; an infinite one
/// gives NaN too (its hi part times the other operand's lo part of 0 is inf·0), where fp32 gives
/// ±inf. Finite rows are unaffected.
#[test]
fn bf16x3_propagates_nan_and_infinity() {
    if kernels::amx_bf16_unavailable().is_some() {
        return assert!(kernels::matmul_t_bf16x3(&[1.0], false, &[1.0], false, &mut [0.0], 1, 1, 1, false).is_err());
    }
    let (m, k, n) = (3, 5, 2);
    let mut a = vec![0.5f32; m * k];
    a[0] = f32::NAN;
    a[k] = f32::INFINITY;
    let b = vec![1.0f32; k * n];
    let mut out = vec![0.0f32; m * n];
    kernels::matmul_t_bf16x3(&a, false, &b, false, &mut out, m, k, n, false).expect("AMX-BF16 is available");
    assert!(out[0].is_nan() && out[1].is_nan(), "{out:?}");
    assert!(!out[2].is_finite() && !out[3].is_finite(), "{out:?}");
    assert_eq!(out[4], 2.5, "{out:?}");
}
