//! A GEMM on AMX-BF16 tiles with fp32-level accuracy ("bf16x3"), built for the native trainer.
//!
//! Each fp32 operand is split into two bf16 parts, `a = a_hi + a_lo` with `a_hi = bf16(a)` and
//! `a_lo = bf16(a - a_hi)` (round to nearest even), and `tdpbf16ps` sums
//! `a_hi·b_hi + a_hi·b_lo + a_lo·b_hi` in fp32: the products of bf16 parts are exact in fp32, and
//! what is dropped (`a_lo·b_lo` and the parts' rounding residuals) is about 2^-16 of each product,
//! so a product's relative error is ~1e-5 (plain bf16: ~3e-3). On paper (one 16 x 16 x 32
//! `tdpbf16ps` per 16 cycles) three bf16 tile products per fp32 one are ~5x the AVX-512 fp32
//! FMA peak of a core.
//!
//! Layout: `op(a)` is packed into blocks of 32 rows and `op(b)` into strips of 32 columns, both
//! in chunks of 32 `k` (zero padded): a block's chunk is its hi part (two 16 x 32 bf16 tiles,
//! rows of 64 bytes) then its lo part; a strip's chunk is its hi part (16 pairs of `k` x 32
//! columns, the VNNI pair layout `tdpbf16ps` reads, rows of 128 bytes holding two 16-column
//! tiles) then its lo part. One `asm!` block per 32 x 32 output block (`ldtilecfg`, `tilezero`,
//! `tileloadd`, `tdpbf16ps`, `tilestored`, `tilerelease`) runs all of `k` with the four fp32
//! accumulator tiles held in tile registers.
//!
//! Determinism: every output block is one kernel call over all of `k` in a fixed order; threads
//! split the output blocks, never `k`, so the bits do not depend on the thread count.
//!
//! Status (issue 15): measured against the fp32 `gemm` crate at the native trainer's shapes
//! (benches/amx_bf16_probe.rs, docs/results/amx_bf16_probe.txt) it is slower on the 2-vCPU
//! Sapphire Rapids VM this project is measured on (0.64-0.84x): `tdpbf16ps` runs at 17-37
//! cycles there (nominal 16), but a `tileloadd` takes ~50-60 cycles (nominal ~8), and a
//! block's 8 loads per 12 products do not overlap the products (a chunk costs ~1000 cycles). So no caller routes products here: the native trainer stays on
//! fp32 [`super::matmul_t`]. [`matmul_t_bf16x3`] is kept, tested and benchmarked so that the
//! choice can be re-measured on other AMX machines.

use rayon::prelude::*;

use super::cpu::{amx_tile_access, TileAccess, TileConfig, AMX_BF16_BIT};
use super::{elems, threads};

/// Rows per packed block of `op(a)` (two 16-row tiles).
const MB: usize = 32;
/// Columns per packed strip of `op(b)` (two 16-column tiles).
const NB: usize = 32;
/// `k` per chunk (one `tdpbf16ps` step: 16 pairs).
const KC: usize = 32;
/// bf16 values in one chunk of a block or strip: hi and lo parts of 1024 values each.
const CHUNK: usize = 2 * MB * KC;
/// Blocks (and strips) per parallel task: a task's packed operands stay in L2.
const GROUP: usize = 4;

/// Why the AMX-BF16 path cannot run in this process, `None` when it can: CPUID leaf 7 EDX bits
/// 22 (AMX-BF16) and 24 (AMX-TILE), XCR0 bits 17/18, Linux's `arch_prctl(ARCH_REQ_XCOMP_PERM)`
/// grant, AVX-512F/BW for the packing, and `STTABT_NO_AMX` unset. Detected once.
pub fn amx_bf16_unavailable() -> Option<&'static str> {
    use std::sync::OnceLock;
    static REASON: OnceLock<Option<&'static str>> = OnceLock::new();
    *REASON.get_or_init(|| {
        if crate::kernels::env_switch("STTABT_NO_AMX") {
            return Some("AMX is switched off by STTABT_NO_AMX");
        }
        match amx_tile_access(AMX_BF16_BIT) {
            TileAccess::NotSupportedHere => Some("AMX is only used on x86-64 Linux"),
            TileAccess::NotOnCpu => Some("the CPU has no AMX-TILE/AMX-BF16 (CPUID leaf 7 EDX bits 24/22)"),
            TileAccess::NotEnabledByOs => Some("the OS does not enable the AMX tile state (XCR0 bits 17/18)"),
            TileAccess::Refused(_) => Some("Linux refused the AMX tile state (arch_prctl(ARCH_REQ_XCOMP_PERM))"),
            TileAccess::Granted if !packing_isa() => Some("AMX is granted but the CPU lacks AVX-512F/BW for the packing"),
            TileAccess::Granted => None,
        }
    })
}

#[cfg(target_arch = "x86_64")]
fn packing_isa() -> bool {
    !super::cpu::avx512_disabled() && std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
}

#[cfg(not(target_arch = "x86_64"))]
fn packing_isa() -> bool {
    false
}

/// `out[m, n] = op(a) · op(b) (+ out if accumulate)` on AMX-BF16 tiles with hi/lo split
/// operands, laid out as in [`super::matmul_t`] (`a` row-major `[m, k]`, or `[k, m]` read
/// transposed when `a_t`; `b` `[k, n]`, or `[n, k]` when `b_t`). Relative error ~1e-5 (fp32:
/// ~1e-7, plain bf16: ~3e-3); the bits do not depend on the thread count. A NaN operand gives
/// NaN; an infinite one gives NaN too (inf·0 of a hi and a lo part) where fp32 gives ±inf. Parallel over 128 x 128
/// output groups on the caller's rayon pool.
///
/// # Errors
/// The reason of [`amx_bf16_unavailable`] when the path cannot run here.
///
/// Panics if a slice's length is not the product of its dimensions.
#[allow(clippy::too_many_arguments)]
pub fn matmul_t_bf16x3(
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) -> Result<(), &'static str> {
    check_lengths("matmul_t_bf16x3", a, b, out, m, k, n);
    if let Some(reason) = amx_bf16_unavailable() {
        return Err(reason);
    }
    amx_product(a, a_t, b, b_t, out, m, k, n, accumulate);
    Ok(())
}

fn check_lengths(name: &str, a: &[f32], b: &[f32], out: &[f32], m: usize, k: usize, n: usize) {
    assert!(a.len() == elems(m, k), "{name}: a has {} values, expected m x k = {m} x {k}", a.len());
    assert!(b.len() == elems(k, n), "{name}: b has {} values, expected k x n = {k} x {n}", b.len());
    assert!(out.len() == elems(m, n), "{name}: out has {} values, expected m x n = {m} x {n}", out.len());
}

thread_local! {
    /// Reused packing buffers of the calling thread (fresh pages would cost a page fault per 4 KiB).
    static PACKS: std::cell::RefCell<(Vec<u16>, Vec<u16>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// The output pointer shared by the tasks, each writing its own blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint output blocks (see `amx_product`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// The AMX path, lengths checked and the tile state granted.
#[allow(clippy::too_many_arguments)]
fn amx_product(a: &[f32], a_t: bool, b: &[f32], b_t: bool, out: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    if super::gemm::empty_product(out, m, k, n, accumulate) {
        return;
    }
    let (mb, nb, kc) = (m.div_ceil(MB), n.div_ceil(NB), k.div_ceil(KC));
    let o = OutPtr(out.as_mut_ptr());
    let run = |pa: &mut Vec<u16>, pb: &mut Vec<u16>| {
        pa.resize(mb * kc * CHUNK, 0);
        pb.resize(nb * kc * CHUNK, 0);
        let par = threads() > 1 && elems(m, k) + elems(k, n) >= 64 * 1024;
        // SAFETY: AVX-512F/BW checked by `amx_bf16_unavailable` (the caller's precondition).
        let pack_a_block = |(ib, dst): (usize, &mut [u16])| unsafe { pack_a(a, a_t, m, k, ib, dst) };
        let pack_b_strip = |(jb, dst): (usize, &mut [u16])| unsafe { pack_b(b, b_t, k, n, jb, dst) };
        if par {
            pa.par_chunks_mut(kc * CHUNK).enumerate().for_each(pack_a_block);
            pb.par_chunks_mut(kc * CHUNK).enumerate().for_each(pack_b_strip);
        } else {
            pa.chunks_mut(kc * CHUNK).enumerate().for_each(pack_a_block);
            pb.chunks_mut(kc * CHUNK).enumerate().for_each(pack_b_strip);
        }
        let (tm, tn) = (mb.div_ceil(GROUP), nb.div_ceil(GROUP));
        let (pa, pb) = (&pa[..], &pb[..]);
        let task = move |t: usize| {
            let o = o;
            let (gm, gn) = (t / tn, t % tn);
            let mut scratch = Scratch([0.0; MB * NB]);
            let cfg = TileConfig::all_16x64();
            for jb in gn * GROUP..nb.min((gn + 1) * GROUP) {
                for ib in gm * GROUP..mb.min((gm + 1) * GROUP) {
                    // SAFETY: tile state granted (caller); the block and strip hold `kc` chunks;
                    // this task alone writes output block (ib, jb), inside `out` [m, n].
                    unsafe {
                        kernel(&cfg, pa.as_ptr().add(ib * kc * CHUNK), pb.as_ptr().add(jb * kc * CHUNK), scratch.0.as_mut_ptr(), kc);
                        store_block(&scratch, o.0, m, n, ib * MB, jb * NB, accumulate);
                    }
                }
            }
        };
        if threads() > 1 && tm * tn > 1 {
            (0..tm * tn).into_par_iter().for_each(task);
        } else {
            (0..tm * tn).for_each(task);
        }
    };
    // A nested call on this thread (rayon work stealing) packs into its own buffers.
    PACKS.with(|p| match p.try_borrow_mut() {
        Ok(mut bufs) => {
            let (pa, pb) = &mut *bufs;
            run(pa, pb)
        }
        Err(_) => run(&mut Vec::new(), &mut Vec::new()),
    });
}

/// One output block's fp32 sums, rows of [`NB`] values.
#[repr(C, align(64))]
struct Scratch([f32; MB * NB]);

/// Writes (or adds, when `accumulate`) the valid part of a 32 x 32 block at rows `r0..`, columns
/// `c0..` of `out` `[m, n]`.
///
/// # Safety
/// `out` points at `m n` values that nobody else writes in this block.
unsafe fn store_block(s: &Scratch, out: *mut f32, m: usize, n: usize, r0: usize, c0: usize, accumulate: bool) {
    let (rows, cols) = ((m - r0).min(MB), (n - c0).min(NB));
    for r in 0..rows {
        let dst = std::slice::from_raw_parts_mut(out.add((r0 + r) * n + c0), cols);
        let src = &s.0[r * NB..r * NB + cols];
        if accumulate {
            dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
        } else {
            dst.copy_from_slice(src);
        }
    }
}

/// bf16 of `v`, rounded to nearest even (NaN stays NaN).
#[inline(always)]
fn bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        0x7fc0
    } else {
        (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
    }
}

/// `(bf16(v), bf16(v - bf16(v)))`; the lo part is 0 when the hi part is infinite.
#[inline(always)]
fn split(v: f32) -> (u16, u16) {
    let hi = bf16(v);
    let hf = f32::from_bits((hi as u32) << 16);
    let rest = if hf.is_finite() { v - hf } else { 0.0 };
    (hi, bf16(rest))
}

/// Packs block `ib` (rows `32 ib ..`) of `op(a)` `[m, k]` into `dst` (`kc` chunks: hi then lo
/// part, each 32 rows x 32 `k`), zeros past `m` and `k`.
///
/// # Safety
/// AVX-512F/BW available; `a` holds `m k` values; `dst.len() == kc CHUNK`.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma"))]
unsafe fn pack_a(a: &[f32], a_t: bool, m: usize, k: usize, ib: usize, dst: &mut [u16]) {
    let r0 = ib * MB;
    let rows = (m - r0).min(MB);
    let mut tmp = [0.0f32; KC];
    for (c, chunk) in dst.chunks_exact_mut(CHUNK).enumerate() {
        let k0 = c * KC;
        let ks = (k - k0).min(KC);
        let (hi, lo) = chunk.split_at_mut(MB * KC);
        if !a_t {
            // row i: a[(r0 + i) k + k0 ..] contiguous
            for i in 0..MB {
                tmp.fill(0.0);
                if i < rows {
                    tmp[..ks].copy_from_slice(&a[(r0 + i) * k + k0..(r0 + i) * k + k0 + ks]);
                }
                let (h, l) = (&mut hi[i * KC..(i + 1) * KC], &mut lo[i * KC..(i + 1) * KC]);
                for j in 0..KC {
                    (h[j], l[j]) = split(tmp[j]);
                }
            }
        } else {
            // a stored [k, m]: k-row kk holds rows r0.. contiguous
            for kk in 0..KC {
                tmp.fill(0.0);
                if kk < ks {
                    tmp[..rows].copy_from_slice(&a[(k0 + kk) * m + r0..(k0 + kk) * m + r0 + rows]);
                }
                for i in 0..MB {
                    (hi[i * KC + kk], lo[i * KC + kk]) = split(tmp[i]);
                }
            }
        }
    }
}

/// Packs strip `jb` (columns `32 jb ..`) of `op(b)` `[k, n]` into `dst` (`kc` chunks: hi then lo
/// part, each 16 pairs of `k` x 32 columns x 2, the pair layout of `tdpbf16ps`'s B tiles), zeros
/// past `k` and `n`.
///
/// # Safety
/// AVX-512F/BW available; `b` holds `k n` values; `dst.len() == kc CHUNK`.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma"))]
unsafe fn pack_b(b: &[f32], b_t: bool, k: usize, n: usize, jb: usize, dst: &mut [u16]) {
    let c0 = jb * NB;
    let cols = (n - c0).min(NB);
    let mut tmp = [[0.0f32; NB]; 2];
    for (c, chunk) in dst.chunks_exact_mut(CHUNK).enumerate() {
        let k0 = c * KC;
        let ks = (k - k0).min(KC);
        let (hi, lo) = chunk.split_at_mut(KC * NB);
        if !b_t {
            // k-rows 2p, 2p + 1: b[(k0 + kk) n + c0 ..] contiguous, interleaved into pairs
            for p in 0..KC / 2 {
                for (e, t) in tmp.iter_mut().enumerate() {
                    t.fill(0.0);
                    let kk = 2 * p + e;
                    if kk < ks {
                        t[..cols].copy_from_slice(&b[(k0 + kk) * n + c0..(k0 + kk) * n + c0 + cols]);
                    }
                }
                let (h, l) = (&mut hi[p * 2 * NB..(p + 1) * 2 * NB], &mut lo[p * 2 * NB..(p + 1) * 2 * NB]);
                for j in 0..NB {
                    (h[2 * j], l[2 * j]) = split(tmp[0][j]);
                    (h[2 * j + 1], l[2 * j + 1]) = split(tmp[1][j]);
                }
            }
        } else {
            // b stored [n, k]: column j is b[(c0 + j) k + k0 ..] contiguous
            let t = &mut tmp[0];
            for j in 0..NB {
                t.fill(0.0);
                if j < cols {
                    t[..ks].copy_from_slice(&b[(c0 + j) * k + k0..(c0 + j) * k + k0 + ks]);
                }
                for kk in 0..KC {
                    let at = (kk / 2) * 2 * NB + 2 * j + kk % 2;
                    (hi[at], lo[at]) = split(t[kk]);
                }
            }
        }
    }
}

/// One 32 x 32 output block over `chunks` chunks of 32 `k`: per chunk `C += A_hi·B_lo`,
/// `C += A_hi·B_hi`, `C += A_lo·B_hi` (tiles: C 0-3, A 4-5, B 6-7; 8 tile loads per 12
/// `tdpbf16ps`, each loaded tile used as soon as it arrives); the sums go to `c`, rows of 32 fp32.
///
/// # Safety
/// AMX-BF16 tile state granted; `a` a packed block and `b` a packed strip of `chunks >= 1`
/// chunks; `c` valid for 32 x 32 fp32.
#[cfg(target_arch = "x86_64")]
unsafe fn kernel(cfg: &TileConfig, a: *const u16, b: *const u16, c: *mut f32, chunks: usize) {
    debug_assert!(chunks >= 1);
    std::arch::asm!(
        "ldtilecfg [{cfg}]",
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        "2:",
        // hi x lo
        "tileloadd tmm4, [{a} + {s64} * 1]",
        "tileloadd tmm6, [{b} + {s128} * 1 + 2048]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tileloadd tmm7, [{b} + {s128} * 1 + 2112]",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tileloadd tmm5, [{a} + {s64} * 1 + 1024]",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        // hi x hi
        "tileloadd tmm6, [{b} + {s128} * 1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tileloadd tmm7, [{b} + {s128} * 1 + 64]",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        // lo x hi
        "tileloadd tmm4, [{a} + {s64} * 1 + 2048]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tileloadd tmm5, [{a} + {s64} * 1 + 3072]",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "add {a}, 4096",
        "add {b}, 4096",
        "dec {n}",
        "jnz 2b",
        "tilestored [{c} + {s128} * 1], tmm0",
        "tilestored [{c} + {s128} * 1 + 64], tmm1",
        "tilestored [{c} + {s128} * 1 + 2048], tmm2",
        "tilestored [{c} + {s128} * 1 + 2112], tmm3",
        "tilerelease",
        cfg = in(reg) cfg as *const TileConfig,
        a = inout(reg) a => _,
        b = inout(reg) b => _,
        c = in(reg) c,
        n = inout(reg) chunks => _,
        s64 = in(reg) 64usize,
        s128 = in(reg) 128usize,
        options(nostack),
    );
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(_: &TileConfig, _: *const u16, _: *const u16, _: *mut f32, _: usize) {
    unreachable!("the AMX-BF16 kernel is only built for x86_64")
}
