//! The token-plan executor (ALGORITHM.md section 1): each example of a batch carries its own
//! [`TokenPlan`]; at layer `l` only the rows in `I_l` (keys/values) and `O_l` (queries, FFN,
//! LayerNorms) are computed, and the kept rows of all examples are packed into one matrix for the
//! linear layers (no padding, no multiply-by-zero). The full plan is dense inference.
//!
//! - `run`: [`Encoder::run`] (static plans), [`Encoder::run_feed_forward`] (a [`LayerHook`]
//!   picks each layer's inputs as it runs), [`Encoder::run_dense`];
//! - `layer`: one layer over the packed rows;
//! - `reduced`: the fused ApproxNet attention pass planners consume ([`HeadReduce`]);
//! - `calibrate`: switching the linear layers to int8 ([`Encoder::set_precision`]), with the
//!   calibration run that picks each layer's smoothing;
//! - `soft`: the soft-mask forward of concrete masking (section 4.3, [`SoftLayerTrace`]).
//!
//! The methods live in `impl Encoder` blocks here; the model type itself is [`crate::model`]'s.

use rayon::prelude::*;

pub(crate) use crate::error::ModelError;
pub(crate) use crate::kernels;
pub(crate) use crate::model::{EncodedInput, Encoder, EncoderLayer, PACKED_MAX_ROWS};
pub(crate) use crate::plan::TokenPlan;

mod calibrate;
mod layer;
mod reduced;
mod run;
mod soft;

pub use calibrate::*;
pub use reduced::*;
pub use run::BATCH_GROUP_ROWS;
pub use soft::*;

/// Attention probabilities of one layer for one example: `probs[h][q][k]` flattened
/// (`[H, |queries|, |keys|]`), softmax over `keys` (token indices) for each query in `queries`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerAttention {
    pub queries: Vec<usize>,
    pub keys: Vec<usize>,
    pub probs: Vec<f32>,
}

/// What the executor returns for one example.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleOutput {
    /// Token indices of the rows in `hidden` (= `O_L`).
    pub rows: Vec<usize>,
    /// Last-layer hidden states of `rows`, `[|O_L|, d]`.
    pub hidden: Vec<f32>,
    /// Per-layer attention (index l-1), when asked for.
    pub attentions: Option<Vec<LayerAttention>>,
    /// Per-layer outputs (index 0 = embedding output on `I_1`, index l = layer l on `O_l`), when asked for.
    pub hidden_states: Option<Vec<(Vec<usize>, Vec<f32>)>>,
}

impl ExampleOutput {
    /// The CLS (token 0) row of the last layer, `[d]`. `O_L` always contains CLS in a valid plan.
    pub fn cls(&self) -> &[f32] {
        let d = self.hidden.len() / self.rows.len().max(1);
        let pos = self.rows.iter().position(|&r| r == 0).unwrap_or(0);
        &self.hidden[pos * d..(pos + 1) * d]
    }
}

/// Options of one executor run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Return each layer's attention probabilities (needed by planners; costs a copy).
    pub attentions: bool,
    /// Return each layer's output rows (for parity checks).
    pub hidden_states: bool,
}

/// Decides, while the executor runs, which tokens layer `l+1` reads (feed-forward planners:
/// manual top-k, LTP). Called after layer `l` with that layer's attention over its inputs.
pub trait LayerHook: Sync {
    /// `attention` is `[H, |inputs|, |inputs|]` over `inputs` (= `I_l`, queries = keys).
    /// Return `I_{l+1}` as a sorted subset of `inputs` containing 0.
    fn next_inputs(&self, example: usize, layer: usize, n: usize, inputs: &[usize], attention: &[f32], heads: usize) -> Vec<usize>;

    /// Whether the hook can plan a `layers`-layer model (e.g. LTP needs `layers - 1`
    /// thresholds); [`Encoder::run_feed_forward`] calls it before running anything.
    fn check_layers(&self, _layers: usize) -> Result<(), ModelError> {
        Ok(())
    }
}

/// Per-example state between layers in a packed batch.
pub(crate) struct Segment {
    /// Token indices of the rows currently held (`I_l` before layer l).
    pub(crate) rows: Vec<usize>,
    /// Offset of this example's first row in the packed matrix.
    pub(crate) offset: usize,
}

/// A raw pointer that may cross threads (each task writes a disjoint part).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: used only for disjoint writes from rayon tasks while the owner is borrowed.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[derive(Clone, Copy)]
pub(crate) struct SendPtrF64(pub(crate) *mut f64);
// SAFETY: tasks write disjoint rows (one query token each) while the owner is borrowed.
unsafe impl Send for SendPtrF64 {}
unsafe impl Sync for SendPtrF64 {}

/// Output of one layer over a packed batch: `y` (after the last LayerNorm), `a` (after the first),
/// per-segment attention when asked for.
pub(crate) struct LayerOut {
    pub(crate) y: Vec<f32>,
    pub(crate) a: Vec<f32>,
    pub(crate) probs: Vec<Vec<f32>>,
}

pub(crate) enum PlanSource<'a, 'b> {
    Static(&'a [TokenPlan]),
    Hook { hook: &'a dyn LayerHook, top: &'a [usize], executed: &'b mut Vec<Vec<Vec<usize>>> },
}

/// Layers whose weights take at most this many bytes ([`layer_row_blocks`]: 4 per f32 weight,
/// 1 per int8 weight on the AVX2 and VNNI int8 kernels) split their rows across threads ([`row_blocks`]):
/// every thread then reads all of the layer's weights, which must stay cheap. The MiniLM
/// ApproxNet (f = 4, 110 K weights, 0.4 MB in f32) qualifies; the f32 teacher (1.77 M weights,
/// 7 MB) ran 4-8% slower row-split than column-split (Intel, benches/plan_probe.rs `ab`) and
/// 1.01-1.09x on an AVX2-only AMD EPYC (within the noise); the int8 teacher (1.77 MB) qualifies
/// on the AVX2 and VNNI int8 kernels.
pub const ROW_BLOCK_MAX_WEIGHT_BYTES: usize = 2 * 1024 * 1024;

/// How many row blocks a layer's row-wise work (projections, feed-forward, LayerNorms) is split
/// into across the pool for `rows` rows of a layer holding `weight_bytes` bytes of weights: one
/// per thread for small layers at packed-GEMM sizes (at least 8 rows per thread, at most
/// [`PACKED_MAX_ROWS`] in all), each block's kernels then running on one thread: 3 fork/joins per
/// layer instead of one per kernel, and the LayerNorms split too. 1 (each kernel splits its own
/// work by output columns) otherwise, and on CPUs without the vectorised kernels.
///
/// Where it was measured: the AVX-512 packed f32 kernel (Intel), and on an AVX2-only AMD EPYC
/// (Zen 3) the `gemm` crate's f32 code (the ApproxNet's ABT pass 10-12% faster at 128/256
/// tokens, its concrete pass 5-9%; `cargo bench --bench plan_probe -- N 60 all ab`) and the AVX2
/// int8 kernel (the int8-w7 teacher 1.10-1.26x at batch 1; `docs/results/row_blocks_avx2_ab.txt`);
/// on a Zen 4 AMD EPYC the VNNI int8 kernel (the int8 teacher, row blocks with the batch groups
/// they bring, 1.05-1.29x at batch 1 and 1.05-1.81x at batch 32, lengths 128/256;
/// `docs/results/row_blocks_vnni_zen4_ab.txt`).
pub(crate) fn row_blocks(rows: usize, weight_bytes: usize) -> usize {
    let t = kernels::threads();
    if t <= 1
        || rows > PACKED_MAX_ROWS
        || rows < 8 * t
        || weight_bytes > ROW_BLOCK_MAX_WEIGHT_BYTES
        || !(kernels::packed::available() || kernels::simd_available())
        || !ROW_BLOCKS.load(std::sync::atomic::Ordering::Relaxed)
    {
        return 1;
    }
    t
}

/// [`row_blocks`] for `rows` rows of `layer` (its weights: Q, K/V, attention output, FFN in
/// and out). Weights count 1 byte each where they run on the AVX2 or VNNI int8 kernel, 4
/// otherwise: int8 layers on the AMX kernel (Intel, at least `AMX_MIN_ROWS` rows) keep the rule
/// measured for f32 until measured on such a CPU.
pub(crate) fn layer_row_blocks(c: &crate::model::config::EncoderConfig, layer: &EncoderLayer, rows: usize) -> usize {
    let d = c.hidden_size;
    let weights = d * (4 * d + 2 * c.intermediate_size);
    let byte_int8 = layer.precision().is_int8()
        && matches!(kernels::int8::Int8Kernel::for_rows(rows), kernels::int8::Int8Kernel::Avx2 | kernels::int8::Int8Kernel::Vnni);
    row_blocks(rows, if byte_int8 { weights } else { 4 * weights })
}

/// Whether `model`'s first layer splits `rows` rows into row blocks on this CPU and pool (tests
/// and reports; false for a model without layers).
#[doc(hidden)]
pub fn row_blocks_apply(model: &Encoder, rows: usize) -> bool {
    model.layers.first().is_some_and(|l| layer_row_blocks(&model.config, l, rows) > 1)
}

pub(crate) static ROW_BLOCKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Switch the row-block split of [`row_blocks`] on or off (on by default) process-wide: for A/B
/// measurements and the equality test (both ways give the same bits on the packed path).
#[doc(hidden)]
pub fn set_row_blocks(on: bool) {
    ROW_BLOCKS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `x += y` element-wise (pre-LN residuals).
pub(crate) fn add_assign(x: &mut [f32], y: &[f32]) {
    if kernels::threads() <= 1 {
        for (p, q) in x.iter_mut().zip(y) {
            *p += *q;
        }
        return;
    }
    x.par_chunks_mut(4096).zip(y.par_chunks(4096)).for_each(|(a, b)| {
        for (p, q) in a.iter_mut().zip(b) {
            *p += *q;
        }
    });
}

/// Positions of `wanted` (sorted token indices) within `rows` (sorted token indices, a superset).
pub(crate) fn positions_in(rows: &[usize], wanted: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(wanted.len());
    let mut p = 0;
    for &w in wanted {
        while p < rows.len() && rows[p] < w {
            p += 1;
        }
        out.push(p.min(rows.len().saturating_sub(1)));
    }
    out
}

impl Encoder {
    /// Classification logits of one executor output, `[num_labels]`: from the CLS row, or for a
    /// DeiT-distilled head the mean of `cls_classifier(row 0)` and `distillation_classifier(row 1)`.
    /// Errors if the checkpoint has no classification head or a needed row was not computed.
    pub fn logits_of(&self, out: &ExampleOutput) -> Result<Vec<f32>, ModelError> {
        let Some(dc) = &self.distillation_classifier else {
            return self.logits(out.cls());
        };
        let d = self.config.hidden_size;
        let pos = out
            .rows
            .iter()
            .position(|&r| r == 1)
            .ok_or_else(|| ModelError::Input("the plan did not compute the distillation token (token 1) at the top layer".into()))?;
        let mut l = self.logits(out.cls())?;
        let ld = dc.forward(&out.hidden[pos * d..(pos + 1) * d]);
        for (a, b) in l.iter_mut().zip(ld) {
            *a = 0.5 * (*a + b);
        }
        Ok(l)
    }
}
