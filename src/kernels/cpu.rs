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
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq") && std::is_x86_feature_detected!("fma")
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
