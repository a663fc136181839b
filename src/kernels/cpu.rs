//! CPU features and threads: the instruction set the element-wise kernels are compiled for
//! (AVX-512 / AVX2+FMA / baseline, detected once), and the rayon helpers every parallel kernel uses.

/// Run `f` on a worker thread of the rayon pool (directly when already on one), so that the
/// parallel kernels it calls fork and join inside the pool. Called from outside, every parallel
/// kernel would inject a job into the pool and put the caller to sleep on a latch: one futex
/// wake-up and sleep per call, ~12% of a batch-1 pass over a 24-token sentence (perf).
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

thread_local! {
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Threads the kernels may split one call over: 1 inside [`serial`], else the rayon pool's.
pub fn threads() -> usize {
    if SERIAL.with(|s| s.get()) {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Run `f` with every kernel it calls on the calling thread only (no fork/join inside): for
/// callers that already split the work across the pool themselves (the executor's row blocks).
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

/// Products with at least this many multiply-adds use both threads (rayon); smaller ones stay on one.
pub(super) const PAR_MIN_MACS: usize = 96 * 1024;

/// `rows x cols` elements, panicking (not wrapping) on overflow: the kernels' length checks.
pub(super) fn elems(rows: usize, cols: usize) -> usize {
    rows.checked_mul(cols).unwrap_or_else(|| panic!("{rows} x {cols} elements overflow usize"))
}

/// Elements a strided view of `rows` rows of `width` values at row stride `ld` spans:
/// `(rows - 1) · ld + width` (0 when `rows` is 0), panicking on overflow.
pub(super) fn strided_span(rows: usize, ld: usize, width: usize) -> usize {
    if rows == 0 {
        return 0;
    }
    (rows - 1)
        .checked_mul(ld)
        .and_then(|x| x.checked_add(width))
        .unwrap_or_else(|| panic!("{rows} rows of {width} at stride {ld} overflow usize"))
}

/// Rows per parallel chunk so that each chunk has at least this many elements.
pub(super) const PAR_MIN_ELEMS: usize = 16 * 1024;

/// Whether the switch `name` (e.g. `STTABT_NO_VNNI`) is on in this process's environment: set
/// to anything but `0`, `false`, `no`, `off` or the empty string (so `STTABT_NO_VNNI=0` leaves
/// VNNI on, as one would read it).
pub fn env_switch(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| {
        let v = v.to_string_lossy().trim().to_ascii_lowercase();
        !matches!(v.as_str(), "" | "0" | "false" | "no" | "off")
    })
}

/// Whether `STTABT_NO_AVX512` is set in this process (read once): every AVX-512 path of ours
/// (the element-wise and attention kernels, the packed f32 GEMM, the VNNI and AMX int8 kernels,
/// AMX-BF16) then stands down and the AVX2 + FMA code runs as on a CPU without AVX-512 (Zen 1-3),
/// so that those paths can be tested and timed on an AVX-512 machine. The `gemm` crate, which
/// the f32 layers use when the packed kernel is off, detects the CPU for itself and still uses
/// AVX-512 where it has it.
pub fn avx512_disabled() -> bool {
    use std::sync::OnceLock;
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| env_switch("STTABT_NO_AVX512"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    V4,
    V3,
    Base,
}

#[inline]
pub(super) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            if !avx512_disabled()
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("fma")
            {
                Isa::V4
            } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                Isa::V3
            } else {
                Isa::Base
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Isa::Base
    }
}

/// Whether this CPU runs the vectorised kernels (AVX2 + FMA or AVX-512), not the portable code.
pub fn simd_available() -> bool {
    isa() != Isa::Base
}

/// Name of the instruction set the element-wise kernels use on this CPU (for reports).
pub fn simd_level() -> &'static str {
    match isa() {
        Isa::V4 => "avx512",
        Isa::V3 => "avx2+fma",
        Isa::Base => "baseline",
    }
}

/// Run `f` over chunks of whole rows of `x` (row length `n`), in parallel when `x` is large.
pub(super) fn par_rows<F: Fn(&mut [f32]) + Sync>(x: &mut [f32], n: usize, f: F) {
    use rayon::prelude::*;
    let rows = x.len() / n.max(1);
    let threads = threads();
    if threads <= 1 || x.len() < 2 * PAR_MIN_ELEMS || rows < 2 {
        f(x);
        return;
    }
    let per = (rows.div_ceil(threads * 2)).max(PAR_MIN_ELEMS / n + 1);
    x.par_chunks_mut(per * n).for_each(&f);
}

/// CPUID leaf 7 EDX bit of AMX-BF16 (`tdpbf16ps`).
pub(super) const AMX_BF16_BIT: u32 = 22;
/// CPUID leaf 7 EDX bit of AMX-INT8 (`tdpbusd`).
pub(super) const AMX_INT8_BIT: u32 = 25;

/// Whether this process may run AMX tile instructions of one kind, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TileAccess {
    /// Not an x86-64 Linux build.
    #[cfg_attr(all(target_arch = "x86_64", target_os = "linux"), allow(dead_code))]
    NotSupportedHere,
    /// CPUID has no AMX-TILE (leaf 7 EDX bit 24) or not the requested kind's bit.
    NotOnCpu,
    /// The CPU has AMX but XCR0 does not enable the tile state (bits 17/18: OS or hypervisor).
    NotEnabledByOs,
    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` failed with this errno.
    Refused(i32),
    /// Tiles may be used.
    Granted,
}

/// Checks CPUID leaf 7 EDX bit 24 (AMX-TILE) and `feature_bit` ([`AMX_INT8_BIT`] or
/// [`AMX_BF16_BIT`]), XCR0 bits 17/18 (XTILECFG/XTILEDATA enabled by the OS), then asks Linux for
/// the tile data state with `arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18)`
/// (a per-process permission; asking twice is harmless). Callers cache the answer.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(super) fn amx_tile_access(feature_bit: u32) -> TileAccess {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is read only when the maximum leaf allows.
    #[allow(unused_unsafe)]
    let (max_leaf, osxsave, edx7) = unsafe {
        let l0 = __cpuid(0);
        let l1 = __cpuid(1);
        let edx7 = if l0.eax >= 7 { __cpuid_count(7, 0).edx } else { 0 };
        (l0.eax, l1.ecx & (1 << 27) != 0, edx7)
    };
    if max_leaf < 7 || edx7 & (1 << 24) == 0 || edx7 & (1 << feature_bit) == 0 {
        return TileAccess::NotOnCpu;
    }
    if !osxsave {
        return TileAccess::NotEnabledByOs;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 is valid when CPUID.1:ECX.OSXSAVE is set (checked above).
    unsafe { std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi, options(nomem, nostack, preserves_flags)) };
    if lo & (1 << 17) == 0 || lo & (1 << 18) == 0 {
        return TileAccess::NotEnabledByOs;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes this process's permitted XSAVE state.
    let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
    if rc != 0 {
        return TileAccess::Refused(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    TileAccess::Granted
}

/// Not an x86-64 Linux build: no AMX.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub(super) fn amx_tile_access(_feature_bit: u32) -> TileAccess {
    TileAccess::NotSupportedHere
}

/// An AMX tile configuration (`ldtilecfg`'s 64-byte operand).
#[repr(C, align(64))]
pub(super) struct TileConfig([u8; 64]);

impl TileConfig {
    /// Palette 1, tiles 0-7 all 16 rows x 64 bytes (the int8 and bf16 kernels' one shape).
    pub(super) fn all_16x64() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes()); // colsb
            c[48 + t] = 16; // rows
        }
        Self(c)
    }
}
