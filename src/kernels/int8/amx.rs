//! AMX-INT8 kernel: blocks of [`MB`] = 32 rows x 32 columns, each four 16 x 16 i32 C tiles fed by
//! two A tiles (16 rows x 64 activation bytes) and two B tiles (16 groups of 4 `k` x 16 columns,
//! rows of 64 bytes at stride 256 in the packed panel), `tdpbusd` (u8 x s8 → i32) per pair.
//!
//! The AMX intrinsics are not stable Rust, so the kernel is one `asm!` block (`ldtilecfg`,
//! `tilezero`, `tileloadd`, `tdpbusd`, `tilestored`, `tilerelease`) that runs up to
//! [`BLOCKS_PER_CALL`] row blocks of one 32-column strip into an i32 scratch in L1; the
//! dequantising epilogue is the VNNI one (`vnni::dequant_store`).
//!
//! Linux gives a process the AMX tile data state only on request: [`status`] checks CPUID leaf 7
//! EDX bits 24 (AMX-TILE) and 25 (AMX-INT8), XCR0 bits 17/18 (XTILECFG/XTILEDATA enabled by the
//! OS) and asks `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` once; without all of them
//! [`super::Int8Kernel::for_rows`] falls back to VNNI. `STTABT_NO_AMX=1` switches AMX off.

use super::{Activations, Cols, Epilogue, KB, NR};
use crate::kernels::cpu::TileConfig;

/// Rows per AMX block (two A tiles of 16 rows); activations are padded to a multiple of it.
pub const MB: usize = 32;
/// Row blocks per `asm!` call (one `ldtilecfg`): the 32 x 32 i32 results of 4 blocks are 16 KiB.
pub const BLOCKS_PER_CALL: usize = 4;
/// A last partial row block shorter than this runs on VNNI (one thread, MiniLM shapes: VNNI on
/// 16 rows takes about as long as AMX on a padded block of 32; benches/int8_gemm.rs).
pub const VNNI_TAIL_ROWS: usize = 16;
/// Bytes between B tile rows: one 4-byte group of a panel's 64 columns.
const LDB: usize = 4 * NR;

/// Whether this process can run AMX-INT8, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmxStatus {
    /// Not an x86-64 Linux build.
    NotSupportedHere,
    /// CPUID has no AMX-TILE or no AMX-INT8.
    NotOnCpu,
    /// The CPU has AMX but XCR0 does not enable the tile state (OS or hypervisor).
    NotEnabledByOs,
    /// `arch_prctl(ARCH_REQ_XCOMP_PERM)` failed with this errno.
    Refused(i32),
    /// `STTABT_NO_AMX` is set.
    Disabled,
    /// Tiles may be used.
    Granted,
}

impl std::fmt::Display for AmxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AmxStatus::NotSupportedHere => f.write_str("AMX is only used on x86-64 Linux"),
            AmxStatus::NotOnCpu => f.write_str("the CPU has no AMX-TILE/AMX-INT8 (CPUID leaf 7 EDX bits 24/25)"),
            AmxStatus::NotEnabledByOs => f.write_str("the OS does not enable the AMX tile state (XCR0 bits 17/18)"),
            AmxStatus::Refused(e) => write!(f, "Linux refused the AMX tile state: arch_prctl(ARCH_REQ_XCOMP_PERM) failed with errno {e}"),
            AmxStatus::Disabled => f.write_str("AMX is switched off by STTABT_NO_AMX"),
            AmxStatus::Granted => f.write_str("AMX-INT8 granted"),
        }
    }
}

/// This process's AMX status (detected and requested once).
pub fn status() -> AmxStatus {
    use std::sync::OnceLock;
    static STATUS: OnceLock<AmxStatus> = OnceLock::new();
    *STATUS.get_or_init(detect)
}

fn detect() -> AmxStatus {
    use crate::kernels::cpu::{amx_tile_access, TileAccess, AMX_INT8_BIT};
    if crate::kernels::env_switch("STTABT_NO_AMX") {
        return AmxStatus::Disabled;
    }
    match amx_tile_access(AMX_INT8_BIT) {
        TileAccess::NotSupportedHere => AmxStatus::NotSupportedHere,
        TileAccess::NotOnCpu => AmxStatus::NotOnCpu,
        TileAccess::NotEnabledByOs => AmxStatus::NotEnabledByOs,
        TileAccess::Refused(e) => AmxStatus::Refused(e),
        TileAccess::Granted => AmxStatus::Granted,
    }
}

/// All `m` rows of one panel: `out[r, c0 .. c0 + width]`, in 32-column strips; after at least
/// one whole block, a last partial block of fewer than [`VNNI_TAIL_ROWS`] rows goes to the VNNI
/// kernel (cheaper than a padded AMX block of 32).
///
/// # Safety
/// [`status`] is `Granted` and AVX-512 VNNI is available; `act` has a multiple of [`MB`] rows
/// (at least `m`) of `kp` bytes; `panel` is one packed panel of `kp / 4` groups; `out` has `m`
/// rows of stride `cols.ldc` covering the panel's columns, not written concurrently by anyone
/// else.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub(super) unsafe fn panel(act: &Activations, m: usize, kp: usize, panel: &[i8], out: *mut f32, cols: Cols, ep: &Epilogue<'_>) {
    use std::arch::x86_64::*;
    let rows = act.data.len() / act.ld;
    assert!(rows.is_multiple_of(MB) && rows >= m && act.ld == kp && kp.is_multiple_of(KB) && panel.len() == kp * NR);
    let tail = m % MB;
    let m_amx = if m > MB && tail < VNNI_TAIL_ROWS { m - tail } else { m };
    let cfg = TileConfig::all_16x64();
    let mut scratch = [0i32; BLOCKS_PER_CALL * MB * 32];
    for sc0 in [0, 32] {
        if sc0 >= cols.width {
            break;
        }
        let width = (cols.width - sc0).min(32);
        let mut r0 = 0;
        while r0 < m_amx {
            let blocks = (m_amx.div_ceil(MB) - r0 / MB).min(BLOCKS_PER_CALL);
            kernel(&cfg, act.data.as_ptr().add(r0 * kp), kp, panel.as_ptr().add(4 * sc0), scratch.as_mut_ptr(), kp / KB, blocks);
            for r in r0..m_amx.min(r0 + blocks * MB) {
                let s = scratch.as_ptr().add((r - r0) * 32);
                let acc = [_mm512_loadu_si512(s as *const __m512i), _mm512_loadu_si512(s.add(16) as *const __m512i)];
                super::vnni::dequant_store(&acc, ep, sc0, r, out.add(r * cols.ldc + cols.c0 + sc0), width);
            }
            r0 += blocks * MB;
        }
    }
    if m_amx < m {
        super::vnni::panel(act, m_amx, m, kp, panel, out, cols, ep);
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn panel(_: &Activations, _: usize, _: usize, _: &[i8], _: *mut f32, _: Cols, _: &Epilogue<'_>) {
    unreachable!("the AMX int8 kernel is only built for x86_64")
}

/// `blocks` row blocks of 32 rows x 32 columns: `c[32 b + r, col] = Σ_k a[32 b + r, k] · B[k, col]`
/// with `a` u8 rows of `lda` bytes, `b` the strip's first column in a packed panel (groups at
/// stride [`LDB`]) and `c` row-major i32 with rows of 32 values; `ksteps` steps of 64 `k`.
///
/// # Safety
/// AMX granted; `a` valid for `32 blocks` rows of `64 ksteps <= lda` bytes, `b` for `16 ksteps`
/// groups, `c` for `32 blocks` rows of 32 i32; `ksteps, blocks >= 1`.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn kernel(cfg: &TileConfig, a: *const u8, lda: usize, b: *const i8, c: *mut i32, ksteps: usize, blocks: usize) {
    debug_assert!(ksteps >= 1 && blocks >= 1);
    std::arch::asm!(
        "ldtilecfg [{t}]",
        "2:",
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        "mov {ap}, {a}",
        "mov {ap16}, {lda}",
        "shl {ap16}, 4",
        "add {ap16}, {a}",
        "mov {bp}, {b}",
        "mov {t}, {ksteps}",
        "3:",
        // each load just before its first use: tile registers are not renamed, so a load into
        // tmm4..7 waits for the previous step's products that read it; this order lets the
        // loads of one step overlap the products still running from the last
        "tileloadd tmm4, [{ap} + {lda} * 1]",
        "tileloadd tmm6, [{bp} + {ldb} * 1]",
        "tdpbusd tmm0, tmm4, tmm6",
        "tileloadd tmm7, [{bp} + {ldb} * 1 + 64]",
        "tdpbusd tmm1, tmm4, tmm7",
        "tileloadd tmm5, [{ap16} + {lda} * 1]",
        "tdpbusd tmm2, tmm5, tmm6",
        "tdpbusd tmm3, tmm5, tmm7",
        "add {ap}, 64",
        "add {ap16}, 64",
        "add {bp}, {bstep}",
        "dec {t}",
        "jnz 3b",
        "tilestored [{c} + {ldc} * 1], tmm0",
        "tilestored [{c} + {ldc} * 1 + 64], tmm1",
        "add {c}, {cstep}",
        "tilestored [{c} + {ldc} * 1], tmm2",
        "tilestored [{c} + {ldc} * 1 + 64], tmm3",
        "add {c}, {cstep}",
        "mov {t}, {lda}",
        "shl {t}, 5",
        "add {a}, {t}",
        "dec {blocks}",
        "jnz 2b",
        "tilerelease",
        t = inout(reg) cfg as *const TileConfig => _,
        a = inout(reg) a => _,
        lda = in(reg) lda,
        b = in(reg) b,
        ldb = in(reg) LDB,
        c = inout(reg) c => _,
        ldc = in(reg) 32 * 4usize,
        ksteps = in(reg) ksteps,
        blocks = inout(reg) blocks => _,
        ap = out(reg) _,
        ap16 = out(reg) _,
        bp = out(reg) _,
        bstep = const 16 * LDB,
        cstep = const 16 * 32 * 4,
        options(nostack),
    );
}
