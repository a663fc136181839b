//! The few dense CPU kernels the executor needs: GEMM (through the `gemm` crate, which picks
//! AVX-512/AVX2/scalar code at run time, and for up to 256 rows on AVX-512 CPUs the pre-packed
//! weight panels of [`packed`]), attention, LayerNorm, GELU, softmax.
//!
//! This is the one module where sttabt steps outside burn: burn's Flex backend measured 40-80
//! GFLOP/s on 2 threads for the executor's matrix shapes and ~80 µs of overhead per small
//! element-wise op (benches/burn_probe.rs; benches/gemm_probe.rs measures `gemm`), which would cap batch-1 inference far below the dense ONNX
//! Runtime peer. Training keeps using burn (autodiff); tests pin both to the same numbers.
//!
//! One file per job: `cpu` (ISA detection, threads, AMX tile access), `gemm`, `fresh` (new
//! output buffers written in one parallel pass: write-only GEMM outputs, bias rows, sums), `gemm_amx` (the
//! native trainer's AMX-BF16 hi/lo-split GEMM), `attention` (+ the AVX-512
//! micro-kernels of `qlanes` and the AVX2 attention kernel of `qlanes_avx2`), `norm`, `activation`, `math` (exp / ln / Φ approximations),
//! `softmax_exp` (the attention softmax's exponential) and
//! [`packed`] (pre-packed weight panels). Their public items are re-exported here.

// ---------------------------------------------------------------------------------------------
// Vectorised element-wise kernels with run-time AVX-512 / AVX2 dispatch.
//
// The scalar reference versions (`activate`, `layer_norm`, `softmax_row`) (libm `erff`, `f32::exp`) measured ~30% of dense MiniLM time at
// n = 128 (perf: erff + erfc2 + expf), all on one thread. The kernels below are branch-free so
// LLVM vectorises them, are compiled three times (AVX-512, AVX2+FMA, baseline) and picked at run
// time, and split large inputs over the rayon pool.

/// Defines `$name(args)` that calls `$imp(args)` compiled for AVX-512, AVX2+FMA or the baseline.
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident : $t:ty),*) $(-> $r:ty)? => $imp:ident) => {
        $(#[$m])* $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
                unsafe fn v4($($a: $t),*) $(-> $r)? { $imp($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($a: $t),*) $(-> $r)? { $imp($($a),*) }
                match isa() {
                    // SAFETY: the CPU supports the features (checked by `isa`).
                    Isa::V4 => return unsafe { v4($($a),*) },
                    Isa::V3 => return unsafe { v3($($a),*) },
                    Isa::Base => {}
                }
            }
            $imp($($a),*)
        }
    };
}

mod activation;
mod attention;
mod cpu;
mod fresh;
mod gemm;
mod gemm_amx;
mod grad;
pub mod int8;
mod math;
mod norm;
pub mod packed;
#[cfg(target_arch = "x86_64")]
mod qlanes;
#[cfg(target_arch = "x86_64")]
mod qlanes_avx2;
mod softmax_exp;

pub use activation::*;
pub use attention::*;
pub use cpu::*;
pub use fresh::*;
pub use gemm::*;
pub use gemm_amx::*;
pub use grad::*;
pub use math::*;
pub use norm::*;
pub use softmax_exp::*;
