//! Linear-layer GEMM on weights packed once at load: `out[m, n] = a[m, k] · W[k, n]`.
//!
//! Why: at batch 1 a BERT layer's GEMMs have few rows (a 26-token sentence: m = 26), so the time
//! goes into reading the weights, and the `gemm` crate repacks the whole weight matrix on every
//! call (it has no pre-packed API; 15% of dense samples at n = 128). Here each weight matrix is
//! rearranged once into column panels of [`NR`] = 48 floats: panel `p` holds, for every `kk` in
//! `0..k`, the 48 values `W[kk, 48p .. 48p + 48]` contiguously (zero-padded past `n`), so a
//! micro-kernel streams one panel from memory exactly once per block of [`MR`] = 8 rows, keeping
//! the 8 x 48 output tile in 24 AVX-512 registers. Threads split the panels (each reads only its
//! share of the weights).
//!
//! Only compiled into use on CPUs with AVX-512F (checked at run time); elsewhere
//! [`PackedWeights::new`] returns `None` and callers keep using `gemm` on the row-major weights.

use rayon::prelude::*;

/// Panel width in floats (three 16-lane registers).
pub const NR: usize = 48;
/// Rows per micro-kernel tile.
pub const MR: usize = 8;
/// Panel rows (`kk` steps) fetched ahead into L1: the first row tile streams the panel from L3.
const PREFETCH_ROWS: usize = 6;

/// A `[k, n]` weight matrix in [`NR`]-wide column panels (see the module docs).
#[derive(Clone)]
pub struct PackedWeights {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeights({}x{})", self.k, self.n)
    }
}

impl PackedWeights {
    /// Pack row-major `w[k, n]`; `None` where this CPU lacks AVX-512F (or on other architectures).
    pub fn new(w: &[f32], k: usize, n: usize) -> Option<Self> {
        if !available() {
            return None;
        }
        Some(Self::pack(w, k, n))
    }

    fn pack(w: &[f32], k: usize, n: usize) -> Self {
        assert!(k.checked_mul(n) == Some(w.len()), "weight has {} values, expected {k} x {n}", w.len());
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0f32; panels * k * NR];
        for p in 0..panels {
            let c0 = p * NR;
            let width = NR.min(n - c0);
            for kk in 0..k {
                let dst = (p * k + kk) * NR;
                data[dst..dst + width].copy_from_slice(&w[kk * n + c0..kk * n + c0 + width]);
            }
        }
        Self { data, k, n }
    }

    /// Inner dimension `k` (input features).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output columns `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `out[m, n] = a[m, k] · W (+ out if accumulate)`; `a` and `out` row-major and contiguous.
    ///
    /// Panics if the slice lengths do not match `m`, `k`, `n`.
    pub fn matmul(&self, a: &[f32], out: &mut [f32], m: usize, accumulate: bool) {
        self.run(a, out, m, if accumulate { Init::Out } else { Init::Zero }, false);
    }

    /// `out[m, n] = a[m, k] · W + bias` (then exact GELU, [`super::gelu_fast`], when `gelu`):
    /// the bias is the accumulators' starting value and the GELU is applied to each tile right
    /// after it is stored, while it is in L1 (no separate passes over `out`).
    ///
    /// Panics if the slice lengths do not match `m`, `k`, `n`.
    pub fn matmul_bias(&self, a: &[f32], bias: &[f32], out: &mut [f32], m: usize, gelu: bool) {
        assert_eq!(bias.len(), self.n, "bias has {} values, expected {}", bias.len(), self.n);
        self.run(a, out, m, Init::Bias(bias), gelu);
    }

    fn run(&self, a: &[f32], out: &mut [f32], m: usize, init: Init<'_>, gelu: bool) {
        let (k, n) = (self.k, self.n);
        // (checked products: a wrapped m x k must not pass for a short slice)
        assert!(m.checked_mul(k) == Some(a.len()), "input has {} values, expected {m} x {k}", a.len());
        assert!(m.checked_mul(n) == Some(out.len()), "output has {} values, expected {m} x {n}", out.len());
        if m == 0 || n == 0 {
            return;
        }
        let panels = n.div_ceil(NR);
        let threads = super::threads();
        let out_ptr = OutPtr(out.as_mut_ptr());
        let run = |p0: usize, p1: usize| {
            let o = out_ptr;
            for p in p0..p1 {
                // SAFETY: `available()` held at construction; panels [p0, p1) write disjoint
                // column ranges of `out`, whose bounds were asserted above.
                unsafe { panel_avx512(a, m, k, &self.data[p * k * NR..(p + 1) * k * NR], o.0, n, p * NR, NR.min(n - p * NR), init, gelu) };
            }
        };
        if threads <= 1 || m * n * k < super::PAR_MIN_MACS || panels < 2 {
            run(0, panels);
            return;
        }
        // Whole panels per task; a few more tasks than threads to even out ragged shares.
        let tasks = (threads * 2).min(panels);
        (0..tasks).into_par_iter().for_each(|t| run(t * panels / tasks, (t + 1) * panels / tasks));
    }
}

/// Where the accumulators start: zero, the current output, or the bias row.
#[derive(Clone, Copy)]
enum Init<'a> {
    Zero,
    Out,
    Bias(&'a [f32]),
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint column ranges (see `PackedWeights::matmul`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Whether this CPU runs the packed kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            !super::cpu::avx512_disabled()
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("fma")
                && !crate::kernels::env_switch("STTABT_NO_PACKED_GEMM")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One panel: columns `c0 .. c0 + width` of `out` for all `m` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_avx512(
    a: &[f32],
    m: usize,
    k: usize,
    panel: &[f32],
    out: *mut f32,
    ldc: usize,
    c0: usize,
    width: usize,
    init: Init<'_>,
    gelu: bool,
) {
    let bias = match init {
        Init::Bias(b) => Some(b.as_ptr().add(c0)),
        _ => None,
    };
    let acc = matches!(init, Init::Out);
    let mut r = 0;
    while r + MR <= m {
        tile::<MR>(a.as_ptr().add(r * k), k, panel.as_ptr(), out.add(r * ldc + c0), ldc, width, acc, bias, gelu);
        r += MR;
    }
    let a = a.as_ptr().add(r * k);
    let o = out.add(r * ldc + c0);
    let pp = panel.as_ptr();
    match m - r {
        0 => {}
        1 => tile::<1>(a, k, pp, o, ldc, width, acc, bias, gelu),
        2 => tile::<2>(a, k, pp, o, ldc, width, acc, bias, gelu),
        3 => tile::<3>(a, k, pp, o, ldc, width, acc, bias, gelu),
        4 => tile::<4>(a, k, pp, o, ldc, width, acc, bias, gelu),
        5 => tile::<5>(a, k, pp, o, ldc, width, acc, bias, gelu),
        6 => tile::<6>(a, k, pp, o, ldc, width, acc, bias, gelu),
        _ => tile::<7>(a, k, pp, o, ldc, width, acc, bias, gelu),
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_avx512(_: &[f32], _: usize, _: usize, _: &[f32], _: *mut f32, _: usize, _: usize, _: usize, _: Init<'_>, _: bool) {
    unreachable!("packed GEMM is only built for x86_64")
}

/// `R` rows x 48 columns: `out[r, 0..width] = init + Σ_kk a[r, kk] · panel[kk, 0..48]`, where
/// `init` is the old `out` (`accumulate`), the `bias` row, or zero; then GELU if `gelu`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    a: *const f32,
    lda: usize,
    panel: *const f32,
    out: *mut f32,
    ldc: usize,
    width: usize,
    accumulate: bool,
    bias: Option<*const f32>,
    gelu: bool,
) {
    use std::arch::x86_64::*;
    let masks: [__mmask16; 3] = std::array::from_fn(|j| {
        let w = width.saturating_sub(16 * j).min(16);
        if w == 16 {
            0xFFFF
        } else {
            ((1u32 << w) - 1) as __mmask16
        }
    });
    let mut acc = [[_mm512_setzero_ps(); 3]; R];
    if let Some(b) = bias {
        let bv: [__m512; 3] = std::array::from_fn(|j| _mm512_maskz_loadu_ps(masks[j], b.add(16 * j)));
        for row in acc.iter_mut() {
            *row = bv;
        }
    } else if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(masks[j], out.add(r * ldc + 16 * j));
            }
        }
    }
    for kk in 0..lda {
        let b = panel.add(kk * NR);
        if PREFETCH_ROWS > 0 {
            let f = b.wrapping_add(PREFETCH_ROWS * NR) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(f);
            _mm_prefetch::<_MM_HINT_T0>(f.wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T0>(f.wrapping_add(128));
        }
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        let b2 = _mm512_loadu_ps(b.add(32));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r * lda + kk));
            row[0] = _mm512_fmadd_ps(av, b0, row[0]);
            row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            row[2] = _mm512_fmadd_ps(av, b2, row[2]);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(out.add(r * ldc + 16 * j), masks[j], *v);
        }
        if gelu {
            // SAFETY: the row's `width` columns were just written (in bounds, this task's).
            super::gelu_fast(std::slice::from_raw_parts_mut(out.add(r * ldc), width));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn matches_naive_product_on_ragged_shapes() {
        if !available() {
            let _ = writeln!(std::io::stderr(), "NOTE: matches_naive_product_on_ragged_shapes did NOT run: the packed GEMM is off (no AVX-512F, or STTABT_NO_PACKED_GEMM set)");
            return;
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for &(m, k, n) in &[(1, 5, 1), (3, 17, 47), (8, 48, 48), (9, 33, 49), (26, 384, 384), (17, 96, 200), (130, 64, 97)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.f32() - 0.5).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rng.f32() - 0.5).collect();
            let init: Vec<f32> = (0..m * n).map(|_| rng.f32()).collect();
            let p = PackedWeights::pack(&w, k, n);
            let bias: Vec<f32> = (0..n).map(|_| rng.f32() - 0.5).collect();
            for gelu in [false, true] {
                let mut out = init.clone();
                p.matmul_bias(&a, &bias, &mut out, m, gelu);
                for i in 0..m {
                    for j in 0..n {
                        let lin = (0..k).map(|t| a[i * k + t] as f64 * w[t * n + j] as f64).sum::<f64>() + bias[j] as f64;
                        let want = if gelu { 0.5 * lin * (1.0 + libm::erf(lin / std::f64::consts::SQRT_2)) } else { lin };
                        let got = out[i * n + j] as f64;
                        assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{m}x{k}x{n} bias gelu={gelu} [{i},{j}]: {got} vs {want}");
                    }
                }
            }
            for accumulate in [false, true] {
                let mut out = init.clone();
                p.matmul(&a, &mut out, m, accumulate);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|t| a[i * k + t] as f64 * w[t * n + j] as f64).sum::<f64>()
                            + if accumulate { init[i * n + j] as f64 } else { 0.0 };
                        let got = out[i * n + j] as f64;
                        assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{m}x{k}x{n} acc={accumulate} [{i},{j}]: {got} vs {want}");
                    }
                }
            }
        }
    }
}
