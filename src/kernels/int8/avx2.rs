//! AVX2 int8 micro-kernel for x86-64 CPUs without AVX-512 VNNI (AMD Zen 1-3, Intel before Ice
//! Lake): the same exact i32 accumulators as the other paths, from 16-bit multiplies.
//!
//! Why 16-bit operands: `vpmaddubsw` (u8 x s8) adds two products into a *saturating* i16, and
//! `2 · 255 · 127 = 64770 > 32767`, so it is not exact for these operands. Here the activations
//! `u` (0..=255) are widened to i16 and the weights `Wq` (-127..=127) are kept as i16, and
//! `vpmaddwd` (`_mm256_madd_epi16`) multiplies 16 pairs of i16 and adds adjacent products into 8
//! i32 lanes: each pair sum is at most `2 · 255 · 127` in magnitude (exact), and the i32
//! accumulation is exact up to [`super::MAX_K`] inputs as on the other paths.
//!
//! Weight layout (`weights::pack_pairs`, built on the first call): sub-panels of 16 output
//! columns (one tile's width); per pair `g` of consecutive `k`, 16 columns x 2 i16 = 64 bytes
//! (two ymm, each 8 columns x `(Wq[2g, c], Wq[2g + 1, c])`), so that a tile streams its weights
//! contiguously. With 32-column panels, each tile read every other 64 bytes, and dense int8 ran
//! about 1.12x slower at RT b1 and T128 b1 and the same at T128 b32, where the rows split
//! (medians of 8 interleaved pairs with wide ranges, docs/results/int8_avx2_layout_ab.txt);
//! aligning the lines to 64 bytes gained nothing measurable. Each row's two widened activations
//! of the pair are broadcast as one i32. Tasks still split the columns in [`NR`] = 32-column
//! panels (two sub-panels).
//!
//! Blocking (BLIS-style; see also docs/research/2026-12-03-int8-vs-ort-mlas.md, section 7.1): a
//! chunk of rows (about [`A_CHUNK_BYTES`] of widened activations, kept in L2) is widened once into
//! a reused thread-local buffer, then every panel of the task runs over the chunk in tiles of
//! [`MR`] = 6 rows x 16 columns (12 ymm accumulators, 2 weight vectors and a broadcast: no
//! spills; 3 x 32 tiles, measured, spilled and ran 1.35x slower, docs/results/int8_avx2_tile_ab.txt)
//! while the panel (24 KB at k = 384) stays in L1. The epilogue (`dequant_store`, once per tile)
//! is the VNNI path's arithmetic 8 lanes wide, so the two paths agree bit for bit; GELU runs on
//! its registers. Threads split the rows when `m` is large (each task streams all weights once
//! over its own rows), else the column panels.
//!
//! Ceiling (Zen 3, measured, docs/results/int8_avx2_ceiling_ab.txt): `vpmaddwd` issues 2 per
//! cycle (32 MACs/cycle at most), `vpaddd` 4; the k-pair step of the 6 x 16 tile (12 `vpmaddwd`,
//! 12 `vpaddd`, 6 broadcasts, 2 loads) takes about 7.5-8 cycles (24-25 MACs/cycle, ~150 GOP/s
//! per core at 3.2 GHz) because the multiplies and adds share the 4 vector pipes; the kernel
//! spends ~85% of its time in that loop.
//!
//! Reduced-range weights ([`WeightRange::Reduced`], `|Wq| <= 63`): a second kernel
//! ([`tile_u8s8`]) multiplies the activation bytes `u` as they are by the weight bytes with
//! `vpmaddubsw` (u8 x s8, adjacent products added into a saturating i16: at most `2 · 255 · 63 =
//! 32130` in magnitude, so it never saturates and the sums stay exact), then `vpmaddwd` by ones
//! (4 products into i32) and `vpaddd`: 3 vector µops per 32 multiply-adds instead of 4 per 32,
//! one broadcast per 4 `k` instead of per 2, half the weight bytes and no widening pass. Its
//! weights are 16-column panels of 4-byte `k` groups (`weights::pack_panels(.., SUB)`, 64
//! contiguous bytes per group), its tile [`MR_U8`] rows x 16 columns. Measured against the
//! 16-bit kernel on the same machine (`cargo bench --bench int8_gemm -- --serial`, MiniLM
//! shapes, docs/results/int8_gemm_avx2_w7_serial.txt): 1.55-1.90x at 1 row (half the weight
//! traffic), 1.23-1.43x at 26 to 4,096 rows. With
//! full-range weights it would saturate (`2 · 255 · 127 > 32767`), so full-range layers keep
//! the 16-bit kernel.

use super::{Activations, Epilogue, Int8Kernel, OutPtr, QuantizedLinear, WeightRange, PAR_MIN_MACS};
use rayon::prelude::*;

/// Output columns per weight panel (four 8-lane i32 registers).
pub const NR: usize = 32;
/// Rows per micro-kernel tile (with 16 columns: 12 accumulator registers of 16).
pub const MR: usize = 6;
/// Widened activation bytes per row chunk (the chunk stays in L2 while the panels pass over it):
/// 120 rows at k = 384, so that a thread's 64 rows at m = 128 are one chunk (each chunk streams
/// all of `W` from L3 once; at 48 KB, 60 + 6 or 60 + 2 rows streamed it twice), and 30 rows at k = 1536
/// (whose 96 KB panels do not fit L1: 12-row chunks re-streamed each panel from L2 per 12 rows).
pub const A_CHUNK_BYTES: usize = 96 * 1024;
/// From this many rows per thread the threads split the rows instead of the column panels.
pub const ROW_SPLIT_ROWS: usize = 64;

/// Whether `STTABT_NO_INT8_AVX2` is set in this process: it switches this path off, so that the
/// portable fallback runs as on a CPU without AVX2 (tests, comparisons). Read once.
pub fn disabled() -> bool {
    use std::sync::OnceLock;
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| crate::kernels::env_switch("STTABT_NO_INT8_AVX2"))
}

/// Whether this CPU runs the AVX2 path (AVX2 and FMA, checked once; false when [`disabled`]).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| !disabled() && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[m, n]` from the quantised activations `act` (`m` rows of `act.ld` bytes, `act.ld` a
/// multiple of 16 and at least `k` rounded up to even), split over the pool's threads when large.
///
/// # Safety
/// [`available`] holds; `out.len() == m · n`; `act` holds `m` rows, their scales and zero points.
pub(super) unsafe fn run(l: &QuantizedLinear, act: &Activations, out: &mut [f32], m: usize, gelu: bool) {
    debug_assert!(out.len() == m * l.n && act.data.len() >= m * act.ld && act.ld.is_multiple_of(16) && act.ld >= 2 * l.k.div_ceil(2));
    let reduced = l.range == WeightRange::Reduced;
    let packed: &[i16] = if reduced { &[] } else { l.packed16.get_or_init(|| super::weights::pack_pairs(&l.w_q, l.k, l.n, SUB)) };
    let packed8: &[i8] =
        if reduced { l.packed_u8s8.get_or_init(|| super::weights::pack_panels(&l.w_q, l.k, l.n, 4 * l.k.div_ceil(4), SUB)) } else { &[] };
    let (k, n) = (l.k, l.n);
    let panels = n.div_ceil(NR);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let task = |r0: usize, r1: usize, p0: usize, p1: usize| {
        let o = out_ptr;
        Int8Kernel::Avx2.count();
        // SAFETY: `available` (the caller's contract); tasks write disjoint rows or disjoint
        // column panels of `out`, whose length the caller checked.
        unsafe {
            if reduced {
                block_u8s8(l, packed8, act, r0, r1, p0, p1, o.0, gelu)
            } else {
                block(l, packed, act, r0, r1, p0, p1, o.0, gelu)
            }
        }
    };
    let threads = crate::kernels::threads();
    if threads <= 1 || m * n * k < PAR_MIN_MACS {
        task(0, m, 0, panels);
    } else if m >= ROW_SPLIT_ROWS * threads {
        let per = m.div_ceil(threads).next_multiple_of(MR);
        (0..m.div_ceil(per)).into_par_iter().for_each(|t| task(t * per, ((t + 1) * per).min(m), 0, panels));
    } else if panels >= 2 {
        let tasks = (threads * 2).min(panels);
        (0..tasks).into_par_iter().for_each(|t| task(0, m, t * panels / tasks, (t + 1) * panels / tasks));
    } else {
        let per = m.div_ceil(threads).next_multiple_of(MR);
        (0..m.div_ceil(per)).into_par_iter().for_each(|t| task(t * per, ((t + 1) * per).min(m), 0, panels));
    }
}

thread_local! {
    /// The widened activation chunk, reused across calls (i32 = one pair of i16).
    static WIDE: std::cell::Cell<Vec<i32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Rows `r0 .. r1` x panels `p0 .. p1` of the output: chunk by chunk of rows, widen, then every
/// panel over the chunk.
///
/// # Safety
/// AVX2 and FMA available; as [`run`]; no other task writes these rows x panels of `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    l: &QuantizedLinear,
    packed: &[i16],
    act: &Activations,
    r0: usize,
    r1: usize,
    p0: usize,
    p1: usize,
    out: *mut f32,
    gelu: bool,
) {
    use std::arch::x86_64::*;
    let ld = act.ld;
    let lda = ld / 2; // i32 pairs per widened row
    let pairs = l.k.div_ceil(2);
    let mc = (A_CHUNK_BYTES / (2 * ld) / MR).max(1) * MR;
    let mut buf = WIDE.take();
    if buf.len() < mc.min(r1 - r0) * lda {
        buf.resize(mc.min(r1 - r0) * lda, 0);
    }
    // GELU in registers (the bits of `gelu_fast` except on AVX-512 CPUs, where `gelu_fast` is
    // the faster approximation the VNNI path's epilogue calls: there the stored row goes
    // through it, so that the SIMD paths agree bit for bit)
    let gelu_in_regs = gelu && crate::kernels::cpu::isa() != crate::kernels::cpu::Isa::V4;
    let mut c0 = r0;
    while c0 < r1 {
        let c1 = (c0 + mc).min(r1);
        // u8 -> i16, 16 at a time (`ld` is a multiple of 16)
        let src = act.data[c0 * ld..c1 * ld].as_ptr();
        let dst = buf.as_mut_ptr() as *mut __m256i;
        for q in 0..(c1 - c0) * ld / 16 {
            _mm256_storeu_si256(dst.add(q), _mm256_cvtepu8_epi16(_mm_loadu_si128(src.add(16 * q) as *const __m128i)));
        }
        for p in p0..p1 {
            // (the last panel may hold one sub-panel only: its second half is never read)
            let panel = packed[p * pairs * 2 * NR..].as_ptr();
            let c = p * NR;
            let width = NR.min(l.n - c);
            let ep = Epilogue::with_width(l, act, c, NR, gelu && !gelu_in_regs);
            for v0 in (0..NR / 8).step_by(TV) {
                if 8 * v0 >= width {
                    break;
                }
                // the sub-panel of columns c + 8 v0 .. + SUB: `pairs` x SUB x 2 contiguous i16
                let (a, o, b) = (buf.as_ptr(), out.add(c + 8 * v0), panel.add(v0 / TV * pairs * 2 * SUB));
                let w = width - 8 * v0;
                let mut r = c0;
                while r + MR <= c1 {
                    tile::<MR>(a.add((r - c0) * lda), lda, b, pairs, o, l.n, w, &ep, gelu_in_regs, 8 * v0, r);
                    r += MR;
                }
                let a = a.add((r - c0) * lda);
                match c1 - r {
                    0 => {}
                    1 => tile::<1>(a, lda, b, pairs, o, l.n, w, &ep, gelu_in_regs, 8 * v0, r),
                    2 => tile::<2>(a, lda, b, pairs, o, l.n, w, &ep, gelu_in_regs, 8 * v0, r),
                    3 => tile::<3>(a, lda, b, pairs, o, l.n, w, &ep, gelu_in_regs, 8 * v0, r),
                    4 => tile::<4>(a, lda, b, pairs, o, l.n, w, &ep, gelu_in_regs, 8 * v0, r),
                    _ => tile::<5>(a, lda, b, pairs, o, l.n, w, &ep, gelu_in_regs, 8 * v0, r),
                }
            }
        }
        c0 = c1;
    }
    WIDE.set(buf);
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn block(_: &QuantizedLinear, _: &[i16], _: &Activations, _: usize, _: usize, _: usize, _: usize, _: *mut f32, _: bool) {
    unreachable!("the AVX2 int8 kernel is only built for x86_64")
}

/// [`block`] for reduced-range weights ([`WeightRange::Reduced`]): the activation bytes `u` are
/// read as they are (no widening) and each tile multiplies them by the weight bytes with
/// `vpmaddubsw`, exact since `|Wq| <= 63` (module docs).
///
/// # Safety
/// As [`block`]; `packed` is `Wq` in [`SUB`]-column panels of 4-byte groups
/// (`weights::pack_panels(.., 4 · ceil(k / 4), SUB)`); `act.ld >= 4 · ceil(k / 4)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_u8s8(
    l: &QuantizedLinear,
    packed: &[i8],
    act: &Activations,
    r0: usize,
    r1: usize,
    p0: usize,
    p1: usize,
    out: *mut f32,
    gelu: bool,
) {
    let ld = act.ld;
    let groups = l.k.div_ceil(4);
    debug_assert!(ld >= 4 * groups && packed.len() >= l.n.div_ceil(SUB) * groups * 4 * SUB);
    let mc = (A_CHUNK_BYTES / ld / MR_U8).max(1) * MR_U8;
    let gelu_in_regs = gelu && crate::kernels::cpu::isa() != crate::kernels::cpu::Isa::V4;
    let mut c0 = r0;
    while c0 < r1 {
        let c1 = (c0 + mc).min(r1);
        for p in p0..p1 {
            let c = p * NR;
            let width = NR.min(l.n - c);
            let ep = Epilogue::with_width(l, act, c, NR, gelu && !gelu_in_regs);
            for sp in 0..NR / SUB {
                if SUB * sp >= width {
                    break;
                }
                // the sub-panel of columns c + SUB sp ..: `groups` x SUB x 4 contiguous bytes
                let b = packed.as_ptr().add((c / SUB + sp) * groups * 4 * SUB);
                let (o, w, off) = (out.add(c + SUB * sp), width - SUB * sp, SUB * sp);
                let a = act.data.as_ptr();
                let mut r = c0;
                while r + MR_U8 <= c1 {
                    tile_u8s8::<MR_U8>(a.add(r * ld), ld, b, groups, o, l.n, w, &ep, gelu_in_regs, off, r);
                    r += MR_U8;
                }
                let a = a.add(r * ld);
                match c1 - r {
                    0 => {}
                    1 => tile_u8s8::<1>(a, ld, b, groups, o, l.n, w, &ep, gelu_in_regs, off, r),
                    2 => tile_u8s8::<2>(a, ld, b, groups, o, l.n, w, &ep, gelu_in_regs, off, r),
                    _ => tile_u8s8::<3>(a, ld, b, groups, o, l.n, w, &ep, gelu_in_regs, off, r),
                }
            }
        }
        c0 = c1;
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn block_u8s8(_: &QuantizedLinear, _: &[i8], _: &Activations, _: usize, _: usize, _: usize, _: usize, _: *mut f32, _: bool) {
    unreachable!("the AVX2 int8 kernel is only built for x86_64")
}

/// `R` rows (activation bytes `a` at stride `lda`) x one [`SUB`]-column sub-panel of
/// reduced-range weights `b` (`groups` groups of 4 `k` x SUB columns): per group and row, the
/// row's 4 bytes broadcast, `vpmaddubsw` against the two 8-column weight vectors (pairs of
/// products into i16, at most `2 · 255 · 63` in magnitude: exact), `vpmaddwd` by ones (the
/// 4-sums into i32) and `vpaddd`; then [`dequant_store`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_u8s8<const R: usize>(
    a: *const u8,
    lda: usize,
    b: *const i8,
    groups: usize,
    out: *mut f32,
    ldc: usize,
    width: usize,
    ep: &Epilogue<'_>,
    gelu_in_regs: bool,
    off: usize,
    r0: usize,
) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); TV]; R];
    for g in 0..groups {
        let bg = b.add(g * 4 * SUB);
        let bv: [__m256i; TV] = std::array::from_fn(|j| _mm256_loadu_si256(bg.add(32 * j) as *const __m256i));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_epi32((a.add(r * lda + 4 * g) as *const i32).read_unaligned());
            for (v, &w) in row.iter_mut().zip(&bv) {
                *v = _mm256_add_epi32(*v, _mm256_madd_epi16(_mm256_maddubs_epi16(av, w), ones));
            }
        }
    }
    dequant_store(&acc, ep, gelu_in_regs, off, r0, out, ldc, width.min(SUB));
}

/// Rows per tile of the u8 x s8 kernel ([`tile_u8s8`]): 8 accumulators, 2 weight vectors, the
/// broadcast, a product and the ones fit the 16 ymm registers. At 6 rows one accumulator
/// spilled to the stack; 4 and 5 rows measured alike (`cargo bench --bench int8_gemm --
/// --serial`, 1.25-1.37x the 16-bit kernel at 26 and 128 rows).
pub const MR_U8: usize = 4;

/// Vectors of 8 columns per tile (a panel is `NR / 8 / TV` tiles wide).
const TV: usize = 2;
/// Columns per sub-panel of the weight layout: one tile's width, so that a tile streams its
/// weights contiguously (`pairs` x 64 bytes).
const SUB: usize = 8 * TV;

/// `R` rows from output row `r0` (widened rows `a` at stride `lda` pairs) x one panel: i32
/// accumulators over `pairs` pairs of `k`, then the epilogue into `out` (the panel's first
/// column, row stride `ldc`), `width` live columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    a: *const i32,
    lda: usize,
    b: *const i16,
    pairs: usize,
    out: *mut f32,
    ldc: usize,
    width: usize,
    ep: &Epilogue<'_>,
    gelu_in_regs: bool,
    off: usize,
    r0: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_si256(); TV]; R];
    for g in 0..pairs {
        let bg = b.add(g * 2 * SUB);
        let bv: [__m256i; TV] = std::array::from_fn(|j| _mm256_loadu_si256(bg.add(16 * j) as *const __m256i));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_epi32(a.add(r * lda + g).read());
            for (v, &w) in row.iter_mut().zip(&bv) {
                *v = _mm256_add_epi32(*v, _mm256_madd_epi16(av, w));
            }
        }
    }
    dequant_store(&acc, ep, gelu_in_regs, off, r0, out, ldc, width.min(8 * TV));
}

/// Rows `r0 .. r0 + R` of a panel from their `8 V` accumulators each, the VNNI epilogue's
/// arithmetic 8 lanes wide: `out[i, c] = fma(f32(acc[i, c] − z_i · col_sum[c]), sx_i · sw[c],
/// bias[c])`, then one FMA per f32 channel `t` (`side_x[i, t] · side_w[t, c]`, in channel
/// order), for `c < width`, then GELU: in registers before the store when `gelu_in_regs`
/// ([`crate::kernels::gelu_approx_v8`]: the bits of `gelu_fast` on CPUs without AVX-512), else
/// [`crate::kernels::gelu_fast`] on each stored row when `ep.gelu`. The column vectors and
/// each channel's weight vectors are loaded once per tile, and the channel FMAs run channel by
/// channel over all `R · V` vectors (independent chains), each element's operations as before.
///
/// # Safety
/// AVX2 and FMA available; `ep`'s column slices hold at least `off + 8 V` values; `out` (the
/// panel's first column, row stride `ldc`) is valid for `width <= 8 V` writes in rows `r0 ..
/// r0 + R`; `ep.side_x` holds those rows' `side_n` values and `ep.side_w` `side_n` rows at
/// stride `side_ld` of at least `off + 8 V` columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dequant_store<const R: usize, const V: usize>(
    acc: &[[std::arch::x86_64::__m256i; V]; R],
    ep: &Epilogue<'_>,
    gelu_in_regs: bool,
    off: usize,
    r0: usize,
    out: *mut f32,
    ldc: usize,
    width: usize,
) {
    use std::arch::x86_64::*;
    let end = off + 8 * V;
    debug_assert!(width <= 8 * V && ep.col_sum.len() >= end && ep.w_scale.len() >= end && ep.bias.len() >= end);
    debug_assert!(ep.side_n == 0 || ep.side_w.len() >= (ep.side_n - 1) * ep.side_ld + end);
    debug_assert!(ep.x_scale.len() >= r0 + R && ep.side_x.len() >= (r0 + R) * ep.side_n);
    let col = |j: usize| off + 8 * j;
    let cs: [__m256i; V] = std::array::from_fn(|j| _mm256_loadu_si256(ep.col_sum.as_ptr().add(col(j)) as *const __m256i));
    let ws: [__m256; V] = std::array::from_fn(|j| _mm256_loadu_ps(ep.w_scale.as_ptr().add(col(j))));
    let bias: [__m256; V] = std::array::from_fn(|j| _mm256_loadu_ps(ep.bias.as_ptr().add(col(j))));
    let mut y = [[_mm256_setzero_ps(); V]; R];
    for (r, (yr, ar)) in y.iter_mut().zip(acc).enumerate() {
        let i = r0 + r;
        let sxv = _mm256_set1_ps(*ep.x_scale.get_unchecked(i));
        let zv = _mm256_set1_epi32(*ep.x_zero.get_unchecked(i));
        for j in 0..V {
            let comp = _mm256_mullo_epi32(zv, cs[j]);
            let scale = _mm256_mul_ps(sxv, ws[j]);
            yr[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(ar[j], comp)), scale, bias[j]);
        }
    }
    for t in 0..ep.side_n {
        let w: [__m256; V] = std::array::from_fn(|j| _mm256_loadu_ps(ep.side_w.as_ptr().add(t * ep.side_ld + col(j))));
        for (r, yr) in y.iter_mut().enumerate() {
            let xv = _mm256_set1_ps(*ep.side_x.get_unchecked((r0 + r) * ep.side_n + t));
            for j in 0..V {
                yr[j] = _mm256_fmadd_ps(xv, w[j], yr[j]);
            }
        }
    }
    if gelu_in_regs {
        for yr in y.iter_mut() {
            for v in yr.iter_mut() {
                *v = crate::kernels::gelu_approx_v8(*v);
            }
        }
    }
    for (r, yr) in y.iter().enumerate() {
        let o = out.add((r0 + r) * ldc);
        if width == 8 * V {
            for (j, &v) in yr.iter().enumerate() {
                _mm256_storeu_ps(o.add(8 * j), v);
            }
        } else {
            for (j, &v) in yr.iter().enumerate() {
                let live = width.saturating_sub(8 * j).min(8);
                if live == 0 {
                    break;
                }
                let mut tmp = [0.0f32; 8];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), o.add(8 * j), live);
            }
        }
        if ep.gelu {
            // SAFETY: the row's `width` columns were just written (in bounds, this task's).
            crate::kernels::gelu_fast(std::slice::from_raw_parts_mut(o, width));
        }
    }
}
