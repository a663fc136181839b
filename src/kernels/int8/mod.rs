//! Int8 linear layers: `y[m, n] = x[m, k] · W[k, n] + b` (then GELU) with int8 weights and
//! activations and i32 accumulation, the "dynamic quantisation" of ONNX Runtime's int8 peer.
//!
//! Not part of the paper (ALGORITHM.md has no quantisation): token pruning removes rows, int8
//! makes each remaining row cheaper (issue 17).
//!
//! - Weights: per-output-channel symmetric int8, quantised once in [`QuantizedLinear::new`]:
//!   `sw_j = max_k |W[k, j]| / 127`, `Wq[k, j] = round(W[k, j] / sw_j)` in `[-127, 127]`; or
//!   with 63 in place of 127 ([`WeightRange::Reduced`], 7 bits), which lets the AVX2 path
//!   multiply bytes by bytes exactly.
//! - Activations: per-row asymmetric unsigned 8-bit, quantised on every call ([`quantize_row`]):
//!   `lo = min(0, min_k x[i, k])`, `hi = max(0, max_k x[i, k])`, `sx_i = (hi − lo) / 255`, zero
//!   point `z_i = round(−lo / sx_i)`, `u[i, k] = clamp(round(x[i, k] / sx_i) + z_i, 0, 255)`
//!   (ties to even), so `x ≈ (u − z) · sx`. The AVX-512 VNNI `vpdpbusd` and AMX `tdpbusd`
//!   instructions multiply *unsigned* by signed bytes, so `u` goes in as it is, and the epilogue
//!   subtracts `z_i · c_j` with the precomputed column sums `c_j = Σ_k Wq[k, j]`:
//!   `Σ_k (u − z) · Wq = Σ_k u · Wq − z · c_j`, exactly (no overflow: both terms are at most
//!   `255 · 127 · k` in magnitude, which fits i32 for `k` up to [`MAX_K`]). Against a symmetric
//!   `[-max, max]` code this doubles the resolution of one-sided rows (the GELU outputs FFN-out
//!   reads: measured the largest int8 error of all-MiniLM-L6-v2) and matches it on symmetric ones.
//! - Dequantisation, fused into the tile store: `y[i, j] = (acc − z_i · c_j) · (sx_i · sw_j) + b_j`,
//!   then GELU ([`crate::kernels::gelu_fast`], the erf GELU of the f32 path) when asked.
//! - Smoothing (optional, [`QuantizedLinear::with_smoothing`]; SmoothQuant, Xiao et al. 2023):
//!   a per-input-channel factor `s_k > 0` moves range from the activations to the weights,
//!   `x W = (x / s) (diag(s) W)`: the weights are quantised from `diag(s) W` and each activation
//!   row is divided by `s` (one multiply per value, in the quantisation pass) before its scale is
//!   taken. Channels with outlier activations (large `s`) then no longer set the whole row's
//!   step; [`smoothing_factors`] picks `s` from per-channel activation and weight ranges.
//!
//! - f32 channels (optional, [`QuantizedLinear::with_f32_channels`]): a few input channels `C`
//!   of outlier range are left out of the int8 product (their activations quantised as 0, their
//!   weight rows zeroed) and added in f32 in the same epilogue, on the tile's registers before
//!   the store and the GELU: `y[i, j] = (acc − z_i · c_j) · (sx_i · sw_j) + b_j +
//!   Σ_{c ∈ C} x[i, c] · W[c, j]` (one FMA per channel per 16 outputs; the quantisation pass
//!   gathers `x[i, C]`, the weight rows are kept `[|C|, panels · NR]`), with no second pass
//!   over the output.
//!
//! Four paths compute the same i32 accumulators (bit-exact; tests/int8_kernels.rs checks each
//! against an exact reference), picked at run time by [`Int8Kernel::for_rows`]:
//! [`Int8Kernel::Amx`] (AMX-INT8 tiles, `asm!`, see [`amx`]), [`Int8Kernel::Vnni`] (AVX-512
//! VNNI micro-kernel, see [`vnni`]), [`Int8Kernel::Avx2`] (AVX2 `vpmaddwd` on 16-bit operands,
//! for CPUs without AVX-512 such as AMD Zen 1-3, see [`avx2`]) and [`Int8Kernel::Fallback`]
//! (plain Rust, any CPU). The SIMD paths share one epilogue arithmetic (FMA), so their outputs
//! agree bit for bit; the fallback's epilogue multiplies and adds separately.
//!
//! Weight layout shared by VNNI and AMX: column panels of [`NR`] = 64 outputs; panel `p` holds,
//! for every group `g` of 4 consecutive `k`, the 64 x 4 bytes `Wq[4g + t, 64p + c]` at byte
//! `256 g + 4 c + t` (zero-padded past `n` and past `k`, with `k` padded to a multiple of 64).
//! VNNI reads one group as four 64-byte registers; an AMX B tile is 16 groups x 16 columns, i.e.
//! 16 rows of 64 bytes at stride 256 ("K/4 rows of N·4 bytes"). The AVX2 path reads its own
//! 16-bit layout ([`avx2`] module docs), built on its first call.

use rayon::prelude::*;

use std::sync::atomic::{AtomicUsize, Ordering};

pub mod amx;
pub mod avx2;
mod fallback;
mod quant;
pub mod vnni;
mod weights;

pub use quant::quantize_row;
pub use weights::smoothing_factors;

/// Output columns per weight panel (four 16-lane i32 registers; four AMX tile columns of 16).
pub const NR: usize = 64;
/// The inner dimension is padded to a multiple of this (one AMX tile row: 64 bytes).
pub const KB: usize = 64;
/// From this many rows [`Int8Kernel::for_rows`] picks AMX over VNNI: AMX computes whole blocks
/// of 32 rows, and measured (benches/int8_gemm.rs, one thread, MiniLM shapes) it matches VNNI at
/// 16 rows and runs 1.2-1.8x faster from 26 rows on; VNNI is 4-6x faster at 1-8 rows.
pub const AMX_MIN_ROWS: usize = 24;
/// The largest inner dimension whose sums `Σ_k u · Wq` (at most `255 · 127 · k`) fit i32.
pub const MAX_K: usize = i32::MAX as usize / (255 * 127);
/// Products with at least this many multiply-adds are split over the pool's threads.
const PAR_MIN_MACS: usize = 192 * 1024;

/// Errors from building or running a [`QuantizedLinear`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Int8Error {
    #[error("QuantizedLinear: weight has {found} values, expected k x n = {k} x {n}")]
    WeightShape { found: usize, k: usize, n: usize },
    #[error("QuantizedLinear: bias has {found} values, expected n = {n}")]
    BiasShape { found: usize, n: usize },
    #[error("QuantizedLinear: smoothing has {found} factors, expected k = {k}")]
    SmoothingShape { found: usize, k: usize },
    #[error("QuantizedLinear: smoothing factor s[{index}] is {value}; factors must be finite and > 0")]
    BadSmoothing { index: usize, value: f32 },
    #[error("QuantizedLinear: f32 channel {channel} is not an input channel (k = {k})")]
    BadChannel { channel: usize, k: usize },
    #[error("QuantizedLinear: k = {k} and n = {n} must both be at least 1")]
    Empty { k: usize, n: usize },
    #[error("QuantizedLinear: k = {k} inputs is more than the {max} whose int8 sums fit i32")]
    TooDeep { k: usize, max: usize },
    #[error("QuantizedLinear: {what}[{index}] is {value}, not finite; int8 quantisation needs finite weights and bias")]
    NonFinite { what: &'static str, index: usize, value: f32 },
    #[error("the {kernel} int8 kernel cannot run here: {reason}")]
    Unavailable { kernel: Int8Kernel, reason: String },
}

/// Which code computes the i32 accumulators (all give the same integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// Plain Rust i32 loops (auto-vectorised); every CPU.
    Fallback,
    /// AVX-512 VNNI `vpdpbusd` micro-kernel (6 rows x 64 columns per tile); x86-64 with
    /// AVX-512F/BW/VNNI.
    Vnni,
    /// AVX2 `vpmaddwd` micro-kernel on 16-bit operands (exact; see [`avx2`]); x86-64 with AVX2
    /// and FMA, unless `STTABT_NO_INT8_AVX2` is set.
    Avx2,
    /// AMX-INT8 `tdpbusd` on 32 x 32 blocks of 16 x 16 tiles (a last partial block of fewer than
    /// 16 rows goes to the VNNI kernel); x86-64 with AMX-TILE/INT8 enabled by the OS and granted
    /// to this process (see [`amx::status`]), plus the VNNI requirements.
    Amx,
}

impl std::fmt::Display for Int8Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

static CALLS: [AtomicUsize; 4] = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];

impl Int8Kernel {
    /// All paths, fastest first.
    pub const ALL: [Int8Kernel; 4] = [Int8Kernel::Amx, Int8Kernel::Vnni, Int8Kernel::Avx2, Int8Kernel::Fallback];

    /// Short name: `fallback`, `avx2`, `avx512-vnni`, `amx-int8`.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Fallback => "fallback",
            Int8Kernel::Vnni => "avx512-vnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Amx => "amx-int8",
        }
    }

    /// Whether this path runs on this CPU (for AMX: and the OS granted the tile state).
    pub fn available(self) -> bool {
        self.unavailable_reason().is_none()
    }

    /// Why this path cannot run here, `None` when it can.
    pub fn unavailable_reason(self) -> Option<String> {
        match self {
            Int8Kernel::Fallback => None,
            Int8Kernel::Vnni if vnni::disabled() => Some("AVX-512 VNNI is switched off by STTABT_NO_VNNI".to_string()),
            Int8Kernel::Vnni if crate::kernels::avx512_disabled() => Some("AVX-512 is switched off by STTABT_NO_AVX512".to_string()),
            Int8Kernel::Vnni => (!vnni::available()).then(|| "the CPU lacks AVX-512F/BW/VNNI".to_string()),
            Int8Kernel::Avx2 if avx2::disabled() => Some("the AVX2 int8 kernel is switched off by STTABT_NO_INT8_AVX2".to_string()),
            Int8Kernel::Avx2 => (!avx2::available()).then(|| "the CPU lacks AVX2/FMA".to_string()),
            Int8Kernel::Amx => match amx::status() {
                amx::AmxStatus::Granted if vnni::available() => None,
                amx::AmxStatus::Granted if vnni::disabled() => Some("AMX needs the VNNI epilogue, switched off by STTABT_NO_VNNI".into()),
                amx::AmxStatus::Granted if crate::kernels::avx512_disabled() => {
                    Some("AMX needs the VNNI epilogue, switched off by STTABT_NO_AVX512".into())
                }
                amx::AmxStatus::Granted => Some("AMX is granted but the CPU lacks AVX-512 VNNI for the epilogue".into()),
                s => Some(s.to_string()),
            },
        }
    }

    /// The path [`QuantizedLinear::forward`] takes for `m` rows: AMX from [`AMX_MIN_ROWS`] rows
    /// where available, else VNNI where available, else AVX2 where available, else the fallback.
    pub fn for_rows(m: usize) -> Int8Kernel {
        if m >= AMX_MIN_ROWS && Int8Kernel::Amx.available() {
            Int8Kernel::Amx
        } else if Int8Kernel::Vnni.available() {
            Int8Kernel::Vnni
        } else if Int8Kernel::Avx2.available() {
            Int8Kernel::Avx2
        } else {
            Int8Kernel::Fallback
        }
    }

    /// How many times this path's kernel code has run in this process (one count per thread
    /// task of a call): tests and profiles use it to show which paths really ran.
    pub fn calls(self) -> usize {
        CALLS[self as usize].load(Ordering::Relaxed)
    }

    fn count(self) {
        CALLS[self as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The integer range of the quantised weights `Wq`.
///
/// [`Full`](WeightRange::Full) is `[-127, 127]` (8 bits). [`Reduced`](WeightRange::Reduced) is
/// `[-63, 63]` (7 bits, ONNX Runtime's `reduce_range`): every product pair `u0 · w0 + u1 · w1`
/// with `u` in `0..=255` then fits i16 (`2 · 255 · 63 = 32130 < 32767`), so the AVX2 path can
/// multiply unsigned activation bytes by signed weight bytes with `vpmaddubsw` without
/// saturating (exact, as every path), about twice the multiply-adds per instruction of its
/// 16-bit path. The weight step doubles: the price is accuracy, measured per model
/// (`sttabt eval --precision int8-w7 --compare-precision`, README "Int8 vs fp32 accuracy per mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WeightRange {
    /// `Wq` in `[-127, 127]`.
    #[default]
    Full,
    /// `Wq` in `[-63, 63]`.
    Reduced,
}

impl WeightRange {
    /// The largest `|Wq|`: 127 or 63.
    pub fn max(self) -> i8 {
        match self {
            WeightRange::Full => 127,
            WeightRange::Reduced => 63,
        }
    }
}

/// A linear layer `y = x W + b` with int8 weights (see the module docs), built once from the f32
/// layer; the f32 weights are not kept.
#[derive(Clone)]
pub struct QuantizedLinear {
    k: usize,
    n: usize,
    /// `k` rounded up to a multiple of [`KB`].
    kp: usize,
    /// `Wq` row-major `[k, n]` (the fallback's layout).
    w_q: Vec<i8>,
    /// `Wq` in [`NR`]-column panels of 4-byte `k` groups (module docs), `[panels, kp / 4, NR, 4]`.
    packed: Vec<i8>,
    /// Per-column scale `sw_j`, bias `b_j` and column sum `c_j = Σ_k Wq[k, j]`, zero-padded to
    /// whole panels.
    w_scale: Vec<f32>,
    bias: Vec<f32>,
    col_sum: Vec<i32>,
    /// `1 / s_k` per input channel when smoothed ([`with_smoothing`](Self::with_smoothing)).
    inv_smooth: Option<Vec<f32>>,
    /// Input channels computed in f32 ([`with_f32_channels`](Self::with_f32_channels)) and
    /// their weight rows `[channels, panels · NR]` (zero-padded past `n`, so that the epilogue
    /// loads whole 16-column vectors).
    f32_channels: Vec<usize>,
    f32_rows: Vec<f32>,
    /// `Wq` in the AVX2 path's 16-bit layout ([`avx2`] module docs), built on its first call
    /// (full-range weights).
    packed16: std::sync::OnceLock<Vec<i16>>,
    /// `Wq` in 16-column panels of 4-byte `k` groups for the AVX2 path's u8 x s8 kernel
    /// ([`avx2`] module docs), built on its first call (reduced-range weights).
    packed_u8s8: std::sync::OnceLock<Vec<i8>>,
    /// The range of `Wq`.
    range: WeightRange,
    /// What each activation is multiplied by before it is quantised: `1 / s_k`, 0 on the f32
    /// channels (`None`: neither smoothing nor f32 channels).
    pre_factors: Option<Vec<f32>>,
}

impl std::fmt::Debug for QuantizedLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantizedLinear({}x{}, int8)", self.k, self.n)
    }
}

impl QuantizedLinear {
    /// Quantise `w` `[k, n]` row-major (this crate's layout, as `encoder::Linear`) per output
    /// column and keep `b` `[n]` in f32.
    ///
    /// Errors: [`Int8Error::WeightShape`] / [`Int8Error::BiasShape`] when the lengths do not match
    /// `k` and `n`, [`Int8Error::Empty`] when `k` or `n` is 0, [`Int8Error::TooDeep`] when `k`
    /// exceeds [`MAX_K`], [`Int8Error::NonFinite`] for a NaN or infinite weight or bias value.
    pub fn new(w: &[f32], b: &[f32], k: usize, n: usize) -> Result<Self, Int8Error> {
        Self::build(w, b, k, n, None, WeightRange::Full)
    }

    /// [`new`](Self::new) with the weights quantised to `range` (see [`WeightRange`]).
    ///
    /// Errors: those of [`new`](Self::new).
    pub fn with_range(w: &[f32], b: &[f32], k: usize, n: usize, range: WeightRange) -> Result<Self, Int8Error> {
        Self::build(w, b, k, n, None, range)
    }

    /// [`new`](Self::new) with per-input-channel smoothing `s` `[k]` (module docs): `Wq` is
    /// quantised from `diag(s) W` and every activation row is divided by `s` before it is
    /// quantised, so that `forward` still computes `x W + b`. `s = 1` everywhere is [`new`](Self::new).
    ///
    /// Errors: those of [`new`](Self::new), [`Int8Error::SmoothingShape`] when `s.len() != k`
    /// and [`Int8Error::BadSmoothing`] for a factor that is not finite and positive.
    pub fn with_smoothing(w: &[f32], b: &[f32], k: usize, n: usize, s: &[f32]) -> Result<Self, Int8Error> {
        Self::with_smoothing_range(w, b, k, n, s, WeightRange::Full)
    }

    /// [`with_smoothing`](Self::with_smoothing) with the weights quantised to `range`.
    ///
    /// Errors: those of [`with_smoothing`](Self::with_smoothing).
    pub fn with_smoothing_range(w: &[f32], b: &[f32], k: usize, n: usize, s: &[f32], range: WeightRange) -> Result<Self, Int8Error> {
        if s.len() != k {
            return Err(Int8Error::SmoothingShape { found: s.len(), k });
        }
        if let Some(index) = s.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(Int8Error::BadSmoothing { index, value: s[index] });
        }
        Self::build(w, b, k, n, Some(s), range)
    }

    /// `self` rebuilt from `w` (the same `[k, n]` weights it was built from) with the input
    /// channels `channels` computed in f32 beside the int8 product: their weight rows are kept
    /// in f32 and zeroed in `Wq` (so they no longer widen the column scales), their activations
    /// are left out of each row's int8 range (so they no longer widen the row scales), and
    /// `x[:, channels] · W[channels, :]` is added before the bias's GELU. For a few outlier
    /// channels (activation ranges 3-5x the others') this costs `|channels| / k` of the
    /// multiply-adds, in f32. Smoothing, if any, stays.
    ///
    /// Errors: [`Int8Error::WeightShape`] when `w` is not `[k, n]`, [`Int8Error::BadChannel`] for
    /// a channel `>= k`.
    pub fn with_f32_channels(&self, w: &[f32], channels: &[usize]) -> Result<Self, Int8Error> {
        let (k, n) = (self.k, self.n);
        if w.len() != k * n {
            return Err(Int8Error::WeightShape { found: w.len(), k, n });
        }
        if let Some(&c) = channels.iter().find(|&&c| c >= k) {
            return Err(Int8Error::BadChannel { channel: c, k });
        }
        let mut chans = channels.to_vec();
        chans.sort_unstable();
        chans.dedup();
        let mut zeroed = w.to_vec();
        let np = n.div_ceil(NR) * NR;
        let mut rows = vec![0.0f32; chans.len() * np];
        for (r, &c) in rows.chunks_exact_mut(np).zip(&chans) {
            r[..n].copy_from_slice(&w[c * n..(c + 1) * n]);
            zeroed[c * n..(c + 1) * n].fill(0.0);
        }
        let s: Option<Vec<f32>> = self.inv_smooth.as_ref().map(|inv| inv.iter().map(|v| 1.0 / v).collect());
        let mut out = Self::build(&zeroed, &self.bias[..n], k, n, s.as_deref(), self.range)?;
        let mut pre = out.inv_smooth.clone().unwrap_or_else(|| vec![1.0; k]);
        for &c in &chans {
            pre[c] = 0.0;
        }
        out.pre_factors = Some(pre);
        out.f32_channels = chans;
        out.f32_rows = rows;
        Ok(out)
    }

    /// The input channels computed in f32 ([`with_f32_channels`](Self::with_f32_channels)).
    pub fn f32_channels(&self) -> &[usize] {
        &self.f32_channels
    }

    fn build(w: &[f32], b: &[f32], k: usize, n: usize, smooth: Option<&[f32]>, range: WeightRange) -> Result<Self, Int8Error> {
        if k == 0 || n == 0 {
            return Err(Int8Error::Empty { k, n });
        }
        if k > MAX_K {
            return Err(Int8Error::TooDeep { k, max: MAX_K });
        }
        if k.checked_mul(n) != Some(w.len()) {
            return Err(Int8Error::WeightShape { found: w.len(), k, n });
        }
        if b.len() != n {
            return Err(Int8Error::BiasShape { found: b.len(), n });
        }
        for (what, v) in [("weight", w), ("bias", b)] {
            if let Some(index) = v.iter().position(|x| !x.is_finite()) {
                return Err(Int8Error::NonFinite { what, index, value: v[index] });
            }
        }
        let scaled: Option<Vec<f32>> =
            smooth.map(|s| w.chunks_exact(n).zip(s).flat_map(|(row, &f)| row.iter().map(move |v| v * f)).collect());
        if let Some(ws) = &scaled {
            if let Some(index) = ws.iter().position(|x| !x.is_finite()) {
                return Err(Int8Error::NonFinite { what: "smoothed weight", index, value: ws[index] });
            }
        }
        let (w_q, scale) = weights::quantize_columns(scaled.as_deref().unwrap_or(w), k, n, range.max());
        let kp = k.div_ceil(KB) * KB;
        let panels = n.div_ceil(NR);
        let np = panels * NR;
        let packed = weights::pack_panels(&w_q, k, n, kp, NR);
        let mut col_sum = vec![0i32; np];
        for row in w_q.chunks_exact(n) {
            for (c, &q) in col_sum.iter_mut().zip(row) {
                *c += i32::from(q);
            }
        }
        let mut w_scale = vec![0.0f32; np];
        w_scale[..n].copy_from_slice(&scale);
        let mut bias = vec![0.0f32; np];
        bias[..n].copy_from_slice(b);
        let inv_smooth = smooth.map(|s| s.iter().map(|v| 1.0 / v).collect());
        let pre_factors = inv_smooth.clone();
        Ok(Self {
            k,
            n,
            kp,
            w_q,
            packed,
            w_scale,
            bias,
            col_sum,
            inv_smooth,
            f32_channels: Vec::new(),
            f32_rows: Vec::new(),
            packed16: Default::default(),
            packed_u8s8: Default::default(),
            range,
            pre_factors,
        })
    }

    /// Inner dimension `k` (input features).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output columns `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The range of the quantised weights ([`WeightRange`]).
    pub fn weight_range(&self) -> WeightRange {
        self.range
    }

    /// The quantised weights `Wq` (of `diag(s) W` when smoothed), row-major `[k, n]`, values in
    /// `[-127, 127]` (`[-63, 63]` for [`WeightRange::Reduced`]).
    pub fn weight_q(&self) -> &[i8] {
        &self.w_q
    }

    /// The smoothing factors `s` `[k]` when built by [`with_smoothing`](Self::with_smoothing)
    /// (as `1 / s`), else `None`.
    pub fn inverse_smoothing(&self) -> Option<&[f32]> {
        self.inv_smooth.as_deref()
    }

    /// Per-output-column weight scales `sw` `[n]` (`diag(s) W ≈ Wq · sw`; 0 for an all-zero column).
    pub fn weight_scales(&self) -> &[f32] {
        &self.w_scale[..self.n]
    }

    /// The f32 bias `[n]`.
    pub fn bias(&self) -> &[f32] {
        &self.bias[..self.n]
    }

    /// `out[m, n] = x[m, k] · W + b` (then GELU when `gelu`) on the path [`Int8Kernel::for_rows`]
    /// picks; `x` and `out` row-major and contiguous. Rows of `x` holding a NaN or infinity
    /// come out NaN (their scale is NaN).
    ///
    /// Panics if `x.len() != m · k` or `out.len() != m · n` (the executor sizes both).
    pub fn forward(&self, x: &[f32], out: &mut [f32], m: usize, gelu: bool) {
        self.run(Int8Kernel::for_rows(m), x, out, m, gelu);
    }

    /// [`forward`](Self::forward) on the given path (tests, benches).
    ///
    /// Errors: [`Int8Error::Unavailable`] when this CPU (or OS) cannot run `kernel`.
    /// Panics as [`forward`](Self::forward) does on wrong lengths.
    pub fn forward_with(&self, kernel: Int8Kernel, x: &[f32], out: &mut [f32], m: usize, gelu: bool) -> Result<(), Int8Error> {
        if let Some(reason) = kernel.unavailable_reason() {
            return Err(Int8Error::Unavailable { kernel, reason });
        }
        self.run(kernel, x, out, m, gelu);
        Ok(())
    }

    fn run(&self, kernel: Int8Kernel, x: &[f32], out: &mut [f32], m: usize, gelu: bool) {
        let (k, n) = (self.k, self.n);
        assert!(m.checked_mul(k) == Some(x.len()), "QuantizedLinear: input has {} values, expected m x k = {m} x {k}", x.len());
        assert!(m.checked_mul(n) == Some(out.len()), "QuantizedLinear: output has {} values, expected m x n = {m} x {n}", out.len());
        if m == 0 {
            return;
        }
        // AMX reads A tiles of 32 rows: pad the row count (the extra rows are computed, not stored).
        let rows = if kernel == Int8Kernel::Amx { m.div_ceil(amx::MB) * amx::MB } else { m };
        // (x · diag(1 / s), with the f32 channels' factors 0, row by row in the quantisation,
        // which also gathers x[:, C] for the epilogue)
        let act = quant::quantize_rows(x, m, k, self.kp, rows, self.pre_factors.as_deref(), &self.f32_channels);
        self.run_quantized(kernel, &act, out, m, gelu);
    }

    fn run_quantized(&self, kernel: Int8Kernel, act: &Activations, out: &mut [f32], m: usize, gelu: bool) {
        let (k, n) = (self.k, self.n);
        match kernel {
            Int8Kernel::Fallback => return fallback::run(self, act, out, m, gelu),
            // SAFETY: `kernel` is available (checked by the callers of `run`); the lengths of
            // `out` and `act` were checked or built by `run`.
            Int8Kernel::Avx2 => return unsafe { avx2::run(self, act, out, m, gelu) },
            _ => {}
        }
        let panels = n.div_ceil(NR);
        let out_ptr = OutPtr(out.as_mut_ptr());
        let task = |p0: usize, p1: usize| {
            let o = out_ptr;
            kernel.count();
            for p in p0..p1 {
                let panel = &self.packed[p * self.kp * NR..(p + 1) * self.kp * NR];
                let cols = Cols { c0: p * NR, width: NR.min(n - p * NR), ldc: n };
                let ep = Epilogue::new(self, act, cols.c0, gelu);
                // SAFETY: `kernel` is available (checked by the callers of `run`); panels write
                // disjoint column ranges of `out`, whose length was asserted above; `act` holds
                // `rows` rows of `kp` bytes.
                unsafe {
                    match kernel {
                        Int8Kernel::Vnni => vnni::panel(act, 0, m, k, panel, o.0, cols, &ep),
                        _ => amx::panel(act, m, self.kp, panel, o.0, cols, &ep),
                    }
                }
            }
        };
        let threads = crate::kernels::threads();
        if threads <= 1 || m * n * k < PAR_MIN_MACS || panels < 2 {
            task(0, panels);
            return;
        }
        let tasks = (threads * 2).min(panels);
        (0..tasks).into_par_iter().for_each(|t| task(t * panels / tasks, (t + 1) * panels / tasks));
    }
}

/// Quantised activations: `rows` rows (`m` real ones, the rest zero) of `kp` bytes `u`
/// (zero-padded past `k`), the `m` row scales `sx` and zero points `z`, and the f32 channels'
/// activations `x[i, C]` `[m, side_n]` (unquantised, unsmoothed).
pub(crate) struct Activations {
    pub(crate) data: Vec<u8>,
    pub(crate) scale: Vec<f32>,
    pub(crate) zero: Vec<i32>,
    pub(crate) ld: usize,
    pub(crate) side: Vec<f32>,
    pub(crate) side_n: usize,
}

/// Where a panel's results go: columns `c0 .. c0 + width` of an output with row stride `ldc`.
#[derive(Clone, Copy)]
pub(crate) struct Cols {
    pub(crate) c0: usize,
    pub(crate) width: usize,
    pub(crate) ldc: usize,
}

/// A panel's dequantisation inputs: [`NR`] values each of column sum, scale and bias starting
/// at the panel's first column, the row scales and zero points, the f32 channels (`side_n` of
/// them: activations `side_x` `[m, side_n]`, weight rows `side_w` from the panel's first column
/// at stride `side_ld`), and whether to apply GELU.
pub(crate) struct Epilogue<'a> {
    pub(crate) col_sum: &'a [i32],
    pub(crate) w_scale: &'a [f32],
    pub(crate) bias: &'a [f32],
    pub(crate) x_scale: &'a [f32],
    pub(crate) x_zero: &'a [i32],
    pub(crate) side_x: &'a [f32],
    pub(crate) side_w: &'a [f32],
    pub(crate) side_n: usize,
    pub(crate) side_ld: usize,
    pub(crate) gelu: bool,
}

impl<'a> Epilogue<'a> {
    /// The epilogue of the [`NR`]-column panel from column `c0`.
    fn new(l: &'a QuantizedLinear, act: &'a Activations, c0: usize, gelu: bool) -> Self {
        Self::with_width(l, act, c0, NR, gelu)
    }

    /// The epilogue of `width` columns from column `c0` (`c0 + width` within the padded columns).
    fn with_width(l: &'a QuantizedLinear, act: &'a Activations, c0: usize, width: usize, gelu: bool) -> Self {
        let r = c0..c0 + width;
        let side_n = l.f32_channels.len();
        debug_assert_eq!(act.side_n, side_n);
        Self {
            col_sum: &l.col_sum[r.clone()],
            w_scale: &l.w_scale[r.clone()],
            bias: &l.bias[r],
            x_scale: &act.scale,
            x_zero: &act.zero,
            side_x: &act.side,
            side_w: if side_n > 0 { &l.f32_rows[c0..] } else { &[] },
            side_n,
            side_ld: l.w_scale.len(),
            gelu,
        }
    }
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint column ranges (see `QuantizedLinear::run`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
