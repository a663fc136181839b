//! AVX-512 VNNI int8 micro-kernel: tiles of up to [`MR`] = 6 rows x [`super::NR`] = 64 columns,
//! 24 i32 accumulator registers; per group of 4 `k` it loads the panel's 256 bytes (four
//! registers), broadcasts each row's 4 activation bytes and issues `vpdpbusd` (u8 x s8 → i32,
//! non-saturating). The dequantising epilogue (`dequant_store`) runs on the registers.

use super::{Activations, Cols, Epilogue, NR};

/// Rows per micro-kernel tile.
pub const MR: usize = 6;

/// Whether `STTABT_NO_VNNI` is set in this process: it switches the VNNI path (and with it
/// AMX, whose epilogue is VNNI code) off, so that the portable fallback runs as on a CPU
/// without them (tests, comparisons). Read once.
pub fn disabled() -> bool {
    use std::sync::OnceLock;
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| crate::kernels::env_switch("STTABT_NO_VNNI"))
}

/// Whether this CPU runs the VNNI path (AVX-512F/BW/VNNI and FMA, checked once; false when
/// [`disabled`]).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            !disabled()
                && !crate::kernels::avx512_disabled()
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows `r_start .. m` of one panel: `out[r, c0 .. c0 + width]`.
///
/// # Safety
/// [`available`] holds; `act` has at least `m` rows; `panel` is one packed panel of
/// `act.ld / 4` groups; `out` has `m` rows of stride `cols.ldc` covering the panel's columns,
/// not written concurrently by anyone else.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn panel(
    act: &Activations,
    r_start: usize,
    m: usize,
    k: usize,
    panel: &[i8],
    out: *mut f32,
    cols: Cols,
    ep: &Epilogue<'_>,
) {
    debug_assert!(act.data.len() >= m * act.ld && panel.len() >= act.ld * NR && r_start <= m);
    let groups = k.div_ceil(4);
    let a = act.data.as_ptr();
    let b = panel.as_ptr();
    let mut r = r_start;
    while r + MR <= m {
        tile::<MR>(a.add(r * act.ld), act.ld, b, groups, out, cols, ep, r);
        r += MR;
    }
    let ar = a.add(r * act.ld);
    match m - r {
        0 => {}
        1 => tile::<1>(ar, act.ld, b, groups, out, cols, ep, r),
        2 => tile::<2>(ar, act.ld, b, groups, out, cols, ep, r),
        3 => tile::<3>(ar, act.ld, b, groups, out, cols, ep, r),
        4 => tile::<4>(ar, act.ld, b, groups, out, cols, ep, r),
        _ => tile::<5>(ar, act.ld, b, groups, out, cols, ep, r),
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn panel(_: &Activations, _: usize, _: usize, _: usize, _: &[i8], _: *mut f32, _: Cols, _: &Epilogue<'_>) {
    unreachable!("the VNNI int8 kernel is only built for x86_64")
}

/// `R` rows from row `r0`: i32 accumulators over `groups` groups of 4 bytes, then the epilogue.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    a: *const u8,
    lda: usize,
    b: *const i8,
    groups: usize,
    out: *mut f32,
    cols: Cols,
    ep: &Epilogue<'_>,
    r0: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_si512(); 4]; R];
    for g in 0..groups {
        let bg = b.add(g * 4 * NR);
        let bv: [__m512i; 4] = std::array::from_fn(|j| _mm512_loadu_si512(bg.add(64 * j) as *const __m512i));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_epi32((a.add(r * lda + 4 * g) as *const i32).read_unaligned());
            for (v, &w) in row.iter_mut().zip(&bv) {
                *v = _mm512_dpbusd_epi32(*v, av, w);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let i = r0 + r;
        dequant_store(row, ep, 0, i, out.add(i * cols.ldc + cols.c0), cols.width);
    }
}

/// Output row `i` of (part of) a panel, from `16 N` accumulators in `N` registers:
/// `out[c] = (acc[c] − z_i · col_sum[off + c]) · (sx_i · sw[off + c]) + bias[off + c]
/// + Σ_t side_x[i, t] · side_w[t, off + c]` (the f32 channels, one FMA each, in channel order)
/// for `c < width`, then GELU when `ep.gelu`.
///
/// # Safety
/// AVX-512F available; `off + 16 N <= NR`; `out` valid for `width <= 16 N` writes; `ep.side_x`
/// holds row `i`'s `side_n` values and `ep.side_w` `side_n` rows at stride `side_ld` of at
/// least `NR` columns (checked in debug builds).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
#[inline]
pub(super) unsafe fn dequant_store<const N: usize>(
    acc: &[std::arch::x86_64::__m512i; N],
    ep: &Epilogue<'_>,
    off: usize,
    i: usize,
    out: *mut f32,
    width: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(off + 16 * N <= NR && width <= 16 * N);
    let sxv = _mm512_set1_ps(ep.x_scale[i]);
    let zv = _mm512_set1_epi32(ep.x_zero[i]);
    let side_x = &ep.side_x[i * ep.side_n..(i + 1) * ep.side_n];
    debug_assert!(ep.side_n == 0 || ep.side_w.len() >= (ep.side_n - 1) * ep.side_ld + NR);
    for (j, &v) in acc.iter().enumerate() {
        let live = width.saturating_sub(16 * j).min(16);
        if live == 0 {
            break;
        }
        let mask: __mmask16 = if live == 16 { 0xFFFF } else { ((1u32 << live) - 1) as __mmask16 };
        let comp = _mm512_mullo_epi32(zv, _mm512_loadu_si512(ep.col_sum.as_ptr().add(off + 16 * j) as *const __m512i));
        let scale = _mm512_mul_ps(sxv, _mm512_loadu_ps(ep.w_scale.as_ptr().add(off + 16 * j)));
        let bias = _mm512_loadu_ps(ep.bias.as_ptr().add(off + 16 * j));
        let mut y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v, comp)), scale, bias);
        let w = ep.side_w.as_ptr().add(off + 16 * j);
        for (t, &xv) in side_x.iter().enumerate() {
            y = _mm512_fmadd_ps(_mm512_set1_ps(xv), _mm512_loadu_ps(w.add(t * ep.side_ld)), y);
        }
        _mm512_mask_storeu_ps(out.add(16 * j), mask, y);
    }
    if ep.gelu {
        // SAFETY: the row's `width` columns were just written (in bounds, this task's).
        crate::kernels::gelu_fast(std::slice::from_raw_parts_mut(out, width));
    }
}
