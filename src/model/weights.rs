//! Weights of one encoder layer: [`Linear`] (`W` stored `[in, out]`, with its lazily packed
//! AVX-512 copy and, at [`Precision::Int8`], its int8 copy), [`LayerNorm`] and [`EncoderLayer`].

use std::sync::Arc;

use super::checkpoint::TensorStore;
use crate::error::ModelError;
use crate::kernels;
use crate::kernels::int8::{QuantizedLinear, WeightRange};

/// The arithmetic of an encoder's linear layers (Q, K/V, attention output, FFN in and out).
///
/// Not part of the paper (ALGORITHM.md has no quantisation; issue 17): token plans decide which
/// rows run, the precision how each row is multiplied. Attention, LayerNorm, embeddings, pooler
/// and classifier stay f32 at either precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 weights and activations (the packed AVX-512 GEMM or `gemm`).
    #[default]
    Fp32,
    /// Per-output-channel symmetric int8 weights, per-row dynamic asymmetric 8-bit activations
    /// (calibrated smoothing and f32 outlier channels, see `Encoder::set_precision`), i32
    /// accumulation, bias and GELU fused into the dequantisation ([`kernels::int8`]).
    Int8,
    /// [`Int8`](Precision::Int8) with 7-bit weights (`[-63, 63]`, ONNX Runtime's
    /// `reduce_range`; [`kernels::int8::WeightRange::Reduced`]): the same integers on every
    /// CPU, and on CPUs whose int8 path is AVX2 (no AVX-512 VNNI) 1.1-1.6x faster end to end (medians),
    /// since that path can then multiply bytes directly; the weight step doubles (accuracy:
    /// README "Int8 vs fp32 accuracy per mode").
    #[serde(rename = "int8-w7")]
    Int8W7,
}

impl Precision {
    /// `fp32`, `int8` or `int8-w7`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
            Precision::Int8W7 => "int8-w7",
        }
    }

    /// Whether the linear layers run int8 (either weight range).
    pub fn is_int8(self) -> bool {
        self.weight_range().is_some()
    }

    /// The int8 weights' range (`None` at fp32).
    pub fn weight_range(self) -> Option<WeightRange> {
        match self {
            Precision::Fp32 => None,
            Precision::Int8 => Some(WeightRange::Full),
            Precision::Int8W7 => Some(WeightRange::Reduced),
        }
    }

    /// The int8 precision whose weights have `range`.
    pub fn int8_with(range: WeightRange) -> Precision {
        match range {
            WeightRange::Full => Precision::Int8,
            WeightRange::Reduced => Precision::Int8W7,
        }
    }

    /// Why int8 runs slower than fp32 on this CPU (`None` at fp32, or when the AVX-512 VNNI or
    /// the AVX2 int8 kernel runs): int8 then takes the plain-Rust fallback kernel, 2.5-4x slower
    /// than the f32 GEMM (benches/int8_gemm.rs). The text names the missing CPU features.
    pub fn slow_here(self) -> Option<String> {
        use kernels::int8::Int8Kernel;
        if !self.is_int8() {
            return None;
        }
        let why: Vec<String> = [Int8Kernel::Vnni, Int8Kernel::Avx2].iter().map(|k| k.unavailable_reason()).collect::<Option<_>>()?;
        Some(format!("{self} runs on the portable fallback kernel here ({}): expect it to be slower than fp32 on this CPU", why.join("; ")))
    }

    /// Why [`Precision::Int8W7`] buys nothing on this CPU (`None` for the other precisions, or
    /// where the AVX2 int8 path runs, the one whose speed its 7-bit weights raise): elsewhere it
    /// is as fast as `int8` and only less accurate.
    pub fn no_gain_here(self) -> Option<String> {
        use kernels::int8::Int8Kernel;
        let kernel = Int8Kernel::for_rows(1);
        (self == Precision::Int8W7 && kernel != Int8Kernel::Avx2).then(|| {
            format!(
                "int8-w7 is no faster than int8 on this CPU (its int8 path is {kernel}; only the AVX2 path multiplies 7-bit weights faster): it only costs accuracy here; --precision int8 is the better choice"
            )
        })
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    /// `fp32`, `int8` or `int8-w7` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Precision::Fp32),
            "int8" | "i8" => Ok(Precision::Int8),
            "int8-w7" => Ok(Precision::Int8W7),
            _ => Err(format!("unknown precision {s:?} (accepted: fp32, int8, int8-w7)")),
        }
    }
}

/// A linear layer `y = x W + b` with `W` stored `[in, out]` (the transpose of HF's `[out, in]`).
///
/// On CPUs with AVX-512 the first forward pass also keeps `W` in the panel layout of
/// [`kernels::packed`] (built once, then reused by every call with at most
/// [`PACKED_MAX_ROWS`] rows). At [`Precision::Int8`] ([`set_precision`](Self::set_precision))
/// every forward pass runs the int8 copy instead ([`QuantizedLinear`], quantised once from `W`;
/// `W` itself is kept for training and export). The fields are private so that the weights cannot change after
/// they were packed: read them with [`weight`](Self::weight) / [`bias`](Self::bias), build a new
/// layer with [`new`](Self::new) or [`from_hf`](Self::from_hf) to change them:
///
/// ```compile_fail,E0616
/// let mut l = sttabt::model::Linear::new(vec![0.0; 6], vec![0.0; 3], 2, 3);
/// l.w[0] = 1.0; // private field: a packed copy of `w` could go stale
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub(crate) w: Vec<f32>,
    pub(crate) b: Vec<f32>,
    pub(crate) d_in: usize,
    pub(crate) d_out: usize,
    pub(crate) packed: PackedCache,
}

/// Calls with at most this many rows use the pre-packed weights (measured faster than `gemm` up
/// to ~128-256 rows, slower on large batches; benches/packed_probe.rs).
pub const PACKED_MAX_ROWS: usize = 256;

/// Derived copies of a [`Linear`]'s weights: the lazily packed f32 panels (`None` inside: this
/// CPU has no AVX-512), the int8 layer when the layer runs at an int8 [`Precision`], and, while
/// an int8 calibration runs ([`crate::model::Encoder::set_precision`]), the largest `|x[·, j]|`
/// per input channel seen so far.
#[derive(Clone, Default)]
pub(crate) struct PackedCache(
    std::sync::OnceLock<Option<kernels::packed::PackedWeights>>,
    Option<Arc<QuantizedLinear>>,
    Option<Arc<std::sync::Mutex<Vec<f32>>>>,
);

impl PartialEq for PackedCache {
    /// A cache, not data: two layers are equal when their weights are.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for PackedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.0.get().is_some_and(|p| p.is_some()), self.1.is_some()) {
            (_, true) => "int8",
            (true, false) => "packed",
            (false, false) => "-",
        })
    }
}

impl Linear {
    /// A layer from `w` `[d_in, d_out]` row-major (this crate's layout; [`from_hf`](Self::from_hf)
    /// takes HF's `[out, in]`) and `b` `[d_out]`.
    ///
    /// Panics if `w.len() != d_in · d_out` or `b.len() != d_out`.
    pub fn new(w: Vec<f32>, b: Vec<f32>, d_in: usize, d_out: usize) -> Self {
        assert!(
            d_in.checked_mul(d_out) == Some(w.len()),
            "Linear::new: weight has {} values, expected d_in x d_out = {d_in} x {d_out}",
            w.len()
        );
        assert!(b.len() == d_out, "Linear::new: bias has {} values, expected d_out = {d_out}", b.len());
        Self { w, b, d_in, d_out, packed: PackedCache::default() }
    }

    /// The weight `[d_in, d_out]` row-major (the transpose of HF's layout; see [`weight_hf`](Self::weight_hf)).
    pub fn weight(&self) -> &[f32] {
        &self.w
    }

    /// The bias `[d_out]`.
    pub fn bias(&self) -> &[f32] {
        &self.b
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// Load `{prefix}.weight` `[out, in]` and `{prefix}.bias` `[out]` from an HF checkpoint.
    pub fn load(store: &TensorStore, prefix: &str, d_in: usize, d_out: usize) -> Result<Self, ModelError> {
        let w_hf = store.get(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let b = store.get(&format!("{prefix}.bias"), &[d_out])?;
        Ok(Self::from_hf(&w_hf, b, d_in, d_out))
    }

    /// Build from an HF-layout weight `[out, in]` and bias `[out]`.
    ///
    /// Panics if `w_hf.len() != d_out · d_in` or `b.len() != d_out`.
    pub fn from_hf(w_hf: &[f32], b: Vec<f32>, d_in: usize, d_out: usize) -> Self {
        assert!(
            d_in.checked_mul(d_out) == Some(w_hf.len()),
            "Linear::from_hf: weight has {} values, expected d_out x d_in = {d_out} x {d_in}",
            w_hf.len()
        );
        assert!(b.len() == d_out, "Linear::from_hf: bias has {} values, expected d_out = {d_out}", b.len());
        let mut w = vec![0.0; d_in * d_out];
        for o in 0..d_out {
            for i in 0..d_in {
                w[i * d_out + o] = w_hf[o * d_in + i];
            }
        }
        Self { w, b, d_in, d_out, packed: PackedCache::default() }
    }

    /// The int8 layer forward passes run (`None` at [`Precision::Fp32`]).
    pub fn int8(&self) -> Option<&QuantizedLinear> {
        self.packed.1.as_deref()
    }

    /// The precision forward passes run at.
    pub fn precision(&self) -> Precision {
        match &self.packed.1 {
            Some(q) => Precision::int8_with(q.weight_range()),
            None => Precision::Fp32,
        }
    }

    /// Run forward passes at `precision`: [`Precision::Int8`] / [`Precision::Int8W7`] quantise
    /// `W` once (per output channel, [`QuantizedLinear::with_range`]; a no-op when already at
    /// that precision), [`Precision::Fp32`] drops the int8 copy. The f32 weights are kept
    /// either way.
    ///
    /// Errors: [`ModelError::Input`] when `W` or `b` cannot be quantised (a NaN or infinite
    /// value, or more than [`kernels::int8::MAX_K`] inputs); the layer is left unchanged.
    pub fn set_precision(&mut self, precision: Precision) -> Result<(), ModelError> {
        match precision.weight_range() {
            None => self.packed.1 = None,
            Some(_) if self.precision() == precision => {}
            Some(range) => {
                let q = QuantizedLinear::with_range(&self.w, &self.b, self.d_in, self.d_out, range).map_err(|e| {
                    ModelError::Input(format!("cannot run this {}x{} linear layer in {precision}: {e}", self.d_in, self.d_out))
                })?;
                self.packed.1 = Some(Arc::new(q));
            }
        }
        Ok(())
    }

    /// Run at int8 calibrated on `act_max` `[d_in]` (the largest `|x[·, j]|` per input channel,
    /// from a calibration run): with SmoothQuant smoothing at migration strength `alpha` when
    /// given (see [`kernels::int8::QuantizedLinear::with_smoothing`] and
    /// [`kernels::int8::smoothing_factors`]), and the `f32_channels` input channels of largest
    /// range computed in f32 ([`kernels::int8::QuantizedLinear::with_f32_channels`]), the
    /// weights quantised to `range`. Replaces any int8 copy the layer had.
    ///
    /// Errors: [`ModelError::Input`] as [`set_precision`](Self::set_precision), or when
    /// `act_max` does not have `d_in` values.
    pub(crate) fn set_int8_calibrated(
        &mut self,
        act_max: &[f32],
        alpha: Option<f32>,
        f32_channels: usize,
        range: WeightRange,
    ) -> Result<(), ModelError> {
        let (k, n) = (self.d_in, self.d_out);
        if act_max.len() != k {
            return Err(ModelError::Input(format!("int8 calibration: {} activation ranges for a layer with {k} inputs", act_max.len())));
        }
        let err = |e: kernels::int8::Int8Error| ModelError::Input(format!("cannot run this {k}x{n} linear layer in int8: {e}"));
        let mut q = match alpha {
            Some(a) => {
                let s = kernels::int8::smoothing_factors(act_max, &self.w, k, n, a);
                QuantizedLinear::with_smoothing_range(&self.w, &self.b, k, n, &s, range)
            }
            None => QuantizedLinear::with_range(&self.w, &self.b, k, n, range),
        }
        .map_err(err)?;
        if f32_channels > 0 {
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| act_max[b].total_cmp(&act_max[a]));
            order.truncate(f32_channels.min(k));
            q = q.with_f32_channels(&self.w, &order).map_err(err)?;
        }
        self.packed.1 = Some(Arc::new(q));
        Ok(())
    }

    /// Start (`true`) or stop recording the largest `|x[·, j]|` per input channel of every
    /// forward pass (int8 calibration); stopping returns the ranges recorded (`None` when not
    /// recording or nothing ran).
    pub(crate) fn record_input_ranges(&mut self, on: bool) -> Option<Vec<f32>> {
        let old = self.packed.2.take();
        if on {
            self.packed.2 = Some(Arc::new(std::sync::Mutex::new(Vec::new())));
        }
        old.map(|r| std::mem::take(&mut *r.lock().unwrap_or_else(|e| e.into_inner()))).filter(|v| !v.is_empty())
    }

    /// The packed weights when a call with `rows` rows should use them (AVX-512 CPU, few rows).
    pub(crate) fn packed_for(&self, rows: usize) -> Option<&kernels::packed::PackedWeights> {
        if rows > PACKED_MAX_ROWS {
            return None;
        }
        self.packed.0.get_or_init(|| kernels::packed::PackedWeights::new(&self.w, self.d_in, self.d_out)).as_ref()
    }

    /// `out[rows, d_out] = act(x[rows, d_in] W + b)`: bias (and GELU) fused into the packed
    /// kernel where it runs; else the bias pre-filled, `gemm` accumulating, the activation after.
    /// The kernels assert `x.len() == rows · d_in` and `out.len() == rows · d_out`.
    /// At [`Precision::Int8`] the int8 kernel runs instead, with the bias and GELU fused into
    /// its dequantisation (other activations applied after).
    pub(crate) fn linear_into(&self, x: &[f32], out: &mut [f32], rows: usize, act: Option<crate::model::config::Activation>) {
        if let Some(rec) = &self.packed.2 {
            let mut r = rec.lock().unwrap_or_else(|e| e.into_inner());
            r.resize(self.d_in, 0.0);
            for row in x.chunks_exact(self.d_in.max(1)) {
                for (m, v) in r.iter_mut().zip(row) {
                    *m = m.max(v.abs());
                }
            }
        }
        if let Some(q) = &self.packed.1 {
            let gelu = act == Some(crate::model::config::Activation::Gelu);
            q.forward(x, out, rows, gelu);
            if let Some(a) = act.filter(|_| !gelu) {
                kernels::activate_fast(out, a);
            }
            return;
        }
        if let Some(p) = self.packed_for(rows) {
            let gelu = act == Some(crate::model::config::Activation::Gelu);
            p.matmul_bias(x, &self.b, out, rows, gelu);
            if let Some(a) = act.filter(|_| !gelu) {
                kernels::activate_fast(out, a);
            }
            return;
        }
        kernels::linear(x, &self.w, &self.b, out, rows, self.d_in, self.d_out, act);
    }

    /// The weight in HF layout `[out, in]`.
    pub fn weight_hf(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.d_in * self.d_out];
        for i in 0..self.d_in {
            for o in 0..self.d_out {
                w[o * self.d_in + i] = self.w[i * self.d_out + o];
            }
        }
        w
    }

    /// Rows of `x` `[rows, d_in]`; panics (naming `what`) if its length is not a multiple of `d_in`.
    pub(crate) fn rows_of(&self, x: &[f32], what: &str) -> usize {
        assert!(
            if self.d_in == 0 { x.is_empty() } else { x.len().is_multiple_of(self.d_in) },
            "Linear::{what}: input has {} values, not a whole number of rows of d_in = {}",
            x.len(),
            self.d_in
        );
        x.len().checked_div(self.d_in).unwrap_or(0)
    }

    /// `out[rows, d_out] = x[rows, d_in] W + b`.
    ///
    /// Panics if `x.len()` is not a multiple of `d_in` or `out.len() != rows · d_out`.
    pub fn forward_into(&self, x: &[f32], out: &mut [f32]) {
        let rows = self.rows_of(x, "forward_into");
        assert!(
            Some(out.len()) == rows.checked_mul(self.d_out),
            "Linear::forward_into: output has {} values, expected rows x d_out = {rows} x {}",
            out.len(),
            self.d_out
        );
        self.linear_into(x, out, rows, None);
    }

    /// `x[rows, d_in] W + b` as a new buffer.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.forward_act(x, None)
    }

    /// `act(x W + b)` as a new buffer (bias and activation fused into the GEMM output pass).
    ///
    /// Panics if `x.len()` is not a multiple of `d_in`.
    pub fn forward_act(&self, x: &[f32], act: Option<crate::model::config::Activation>) -> Vec<f32> {
        let rows = self.rows_of(x, "forward_act");
        let mut out = vec![0.0; rows * self.d_out];
        self.linear_into(x, &mut out, rows, act);
        out
    }

    /// Multiply the output columns in `cols` by `s` (weights and bias).
    /// Resets the layer to [`Precision::Fp32`] (the derived copies would be stale); only the
    /// loaders call it, before any precision is chosen.
    pub(crate) fn scale_cols(&mut self, cols: std::ops::Range<usize>, s: f32) {
        self.packed = PackedCache::default();
        for i in 0..self.d_in {
            for o in cols.clone() {
                self.w[i * self.d_out + o] *= s;
            }
        }
        for o in cols {
            self.b[o] *= s;
        }
    }
}

/// LayerNorm parameters `γ`, `β` (HF names `.weight`/`.bias`, or the older `.gamma`/`.beta`).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f64,
}

impl LayerNorm {
    pub(crate) fn load(store: &TensorStore, prefix: &str, d: usize, eps: f64) -> Result<Self, ModelError> {
        let gamma = store.get_any(&[&format!("{prefix}.weight"), &format!("{prefix}.gamma")], &[d])?;
        let beta = store.get_any(&[&format!("{prefix}.bias"), &format!("{prefix}.beta")], &[d])?;
        Ok(Self { gamma, beta, eps })
    }
    /// Normalise every row of `x[rows, d]` in place.
    pub fn apply(&self, x: &mut [f32]) {
        kernels::layer_norm(x, &self.gamma, &self.beta, self.eps);
    }
}

/// One encoder layer (`encoder.layer.{i}`).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderLayer {
    /// `attention.self.query` exactly as stored (HF layout round trip; not used for compute).
    pub query_hf: (Vec<f32>, Vec<f32>),
    /// `attention.self.query`, pre-scaled by `1/sqrt(d_h)`.
    pub query: Linear,
    /// `attention.self.key` and `.value` fused: output columns `[0, d)` = K, `[d, 2d)` = V.
    pub key_value: Linear,
    /// `attention.output.dense`.
    pub attn_out: Linear,
    /// `attention.output.LayerNorm`.
    pub attn_ln: LayerNorm,
    /// `intermediate.dense`.
    pub ffn_in: Linear,
    /// `output.dense`.
    pub ffn_out: Linear,
    /// `output.LayerNorm`.
    pub out_ln: LayerNorm,
}

// For ViT/DeiT (pre-LayerNorm) `attn_ln` holds `layernorm_before` (applied to the layer input
// before Q/K/V) and `out_ln` holds `layernorm_after` (applied before the FFN); the residuals are
// added without normalisation.

impl EncoderLayer {
    /// The linear layers [`Precision`] switches: Q, K/V, attention output, FFN in and out.
    pub(crate) fn linears_mut(&mut self) -> [&mut Linear; 5] {
        [&mut self.query, &mut self.key_value, &mut self.attn_out, &mut self.ffn_in, &mut self.ffn_out]
    }

    /// The precision of this layer's linear layers (that of Q; [`Encoder::set_precision`]
    /// switches all five together).
    ///
    /// [`Encoder::set_precision`]: crate::model::Encoder::set_precision
    pub fn precision(&self) -> Precision {
        self.query.precision()
    }
}

pub(crate) fn concat_cols(a: &Linear, b: &Linear) -> Linear {
    let d_in = a.d_in;
    let d_out = a.d_out + b.d_out;
    let mut w = vec![0.0; d_in * d_out];
    for i in 0..d_in {
        w[i * d_out..i * d_out + a.d_out].copy_from_slice(&a.w[i * a.d_out..(i + 1) * a.d_out]);
        w[i * d_out + a.d_out..(i + 1) * d_out].copy_from_slice(&b.w[i * b.d_out..(i + 1) * b.d_out]);
    }
    let mut bias = a.b.clone();
    bias.extend_from_slice(&b.b);
    Linear { w, b: bias, d_in, d_out, packed: PackedCache::default() }
}

pub(crate) fn split_cols(l: &Linear, first: usize) -> (Linear, Linear) {
    let second = l.d_out - first;
    let mut wa = vec![0.0; l.d_in * first];
    let mut wb = vec![0.0; l.d_in * second];
    for i in 0..l.d_in {
        wa[i * first..(i + 1) * first].copy_from_slice(&l.w[i * l.d_out..i * l.d_out + first]);
        wb[i * second..(i + 1) * second].copy_from_slice(&l.w[i * l.d_out + first..(i + 1) * l.d_out]);
    }
    (
        Linear { w: wa, b: l.b[..first].to_vec(), d_in: l.d_in, d_out: first, packed: PackedCache::default() },
        Linear { w: wb, b: l.b[first..].to_vec(), d_in: l.d_in, d_out: second, packed: PackedCache::default() },
    )
}

pub(crate) fn push_linear(out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, prefix: &str, l: &Linear) {
    out.push((format!("{prefix}.weight"), vec![l.d_out, l.d_in], l.weight_hf()));
    out.push((format!("{prefix}.bias"), vec![l.d_out], l.b.clone()));
}

pub(crate) fn push_ln(out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, prefix: &str, ln: &LayerNorm) {
    out.push((format!("{prefix}.weight"), vec![ln.gamma.len()], ln.gamma.clone()));
    out.push((format!("{prefix}.bias"), vec![ln.beta.len()], ln.beta.clone()));
}
