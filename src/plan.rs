//! Token plans (ALGORITHM.md section 1) and their cost metrics (section 5).
//!
//! A [`TokenPlan`] describes, for one example, which token rows every encoder layer reads
//! (input set `I_l`, used for keys/values) and which rows it produces (output set `O_l`,
//! used for queries, the output projection and the FFN). Layers are numbered `l = 1..=L`
//! in the paper; every per-layer list here is indexed `l - 1` (index 0 = bottom layer).
//! Token 0 is CLS; tokens `0..n` are the real (unpadded) tokens.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which of the two sets of a layer an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetKind {
    /// The input set `I_l` (rows read as keys/values).
    Input,
    /// The output set `O_l` (rows computed by the layer).
    Output,
}

impl fmt::Display for SetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetKind::Input => "input set I",
            SetKind::Output => "output set O",
        })
    }
}

/// Errors for invalid plans. Layers are reported 1-based (`layer = l`, as in the paper).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PlanError {
    /// The plan has no layers.
    #[error("a token plan needs at least one layer")]
    NoLayers,
    /// `n == 0`: there must be at least the CLS token.
    #[error("a token plan needs at least one real token (n >= 1)")]
    NoTokens,
    /// `inputs` and `outputs` have different numbers of layers.
    #[error("{inputs} input sets but {outputs} output sets")]
    LayerCountMismatch {
        /// Number of input sets given.
        inputs: usize,
        /// Number of output sets given.
        outputs: usize,
    },
    /// A set is empty.
    #[error("layer {layer}: {set} is empty")]
    Empty {
        /// Layer number `l` (1-based).
        layer: usize,
        /// Which set.
        set: SetKind,
    },
    /// A set is not strictly increasing (unsorted or with a duplicate).
    #[error("layer {layer}: {set} is not sorted and unique (token {token} after {previous})")]
    Unsorted {
        /// Layer number `l` (1-based).
        layer: usize,
        /// Which set.
        set: SetKind,
        /// The offending token.
        token: usize,
        /// The token before it.
        previous: usize,
    },
    /// A token index is `>= n` (padding or out of range).
    #[error("layer {layer}: {set} contains token {token}, which is padding or out of range (n = {n})")]
    OutOfRange {
        /// Layer number `l` (1-based).
        layer: usize,
        /// Which set.
        set: SetKind,
        /// The offending token.
        token: usize,
        /// Number of real tokens.
        n: usize,
    },
    /// A set does not contain CLS (token 0).
    #[error("layer {layer}: {set} does not contain CLS (token 0)")]
    MissingCls {
        /// Layer number `l` (1-based).
        layer: usize,
        /// Which set.
        set: SetKind,
    },
    /// `O_l` is not a subset of `I_l`.
    #[error("layer {layer}: output token {token} is not in the input set")]
    OutputNotInInput {
        /// Layer number `l` (1-based).
        layer: usize,
        /// The offending token.
        token: usize,
    },
    /// `I_l != O_{l-1}` (the layer reads a row the layer below does not produce, or vice versa).
    #[error("layer {layer}: input set differs from the output set of layer {below} at token {token}")]
    NotNested {
        /// Layer number `l` (1-based, `l >= 2`).
        layer: usize,
        /// `l - 1`.
        below: usize,
        /// Smallest token in exactly one of `I_l`, `O_{l-1}`.
        token: usize,
    },
}

/// Checks one set: non-empty, strictly increasing, every index `< n`, contains CLS.
/// `layer` is 1-based and only used in the error.
pub fn check_set(n: usize, layer: usize, set: SetKind, tokens: &[usize]) -> Result<(), PlanError> {
    if tokens.is_empty() {
        return Err(PlanError::Empty { layer, set });
    }
    for w in tokens.windows(2) {
        if w[1] <= w[0] {
            return Err(PlanError::Unsorted { layer, set, token: w[1], previous: w[0] });
        }
    }
    if let Some(&token) = tokens.iter().find(|&&t| t >= n) {
        return Err(PlanError::OutOfRange { layer, set, token, n });
    }
    if tokens[0] != 0 {
        return Err(PlanError::MissingCls { layer, set });
    }
    Ok(())
}

/// Smallest element in exactly one of two sorted sets, if any.
fn first_difference(a: &[usize], b: &[usize]) -> Option<usize> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => (i, j) = (i + 1, j + 1),
            std::cmp::Ordering::Less => return Some(a[i]),
            std::cmp::Ordering::Greater => return Some(b[j]),
        }
    }
    a.get(i).or(b.get(j)).copied()
}

/// The token plan of one example (ALGORITHM.md section 1).
///
/// Invariants (checked by [`TokenPlan::new`], also on deserialisation): `L >= 1`, `n >= 1`; every
/// set is non-empty, sorted, unique, contains CLS (0) and only real tokens (`< n`);
/// `O_l ⊆ I_l`; `O_{l-1} == I_l` for `l >= 2`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTokenPlan")]
pub struct TokenPlan {
    n: usize,
    inputs: Vec<Vec<usize>>,
    outputs: Vec<Vec<usize>>,
}

/// Unvalidated mirror of [`TokenPlan`] used for deserialisation.
#[derive(Deserialize)]
struct RawTokenPlan {
    n: usize,
    inputs: Vec<Vec<usize>>,
    outputs: Vec<Vec<usize>>,
}

impl TryFrom<RawTokenPlan> for TokenPlan {
    type Error = PlanError;
    fn try_from(raw: RawTokenPlan) -> Result<Self, PlanError> {
        TokenPlan::new(raw.n, raw.inputs, raw.outputs)
    }
}

impl TokenPlan {
    /// Builds a plan from `inputs[l-1] = I_l` and `outputs[l-1] = O_l`, validating every invariant.
    ///
    /// Errors: [`PlanError`] naming the first offending layer / set / token.
    pub fn new(n: usize, inputs: Vec<Vec<usize>>, outputs: Vec<Vec<usize>>) -> Result<Self, PlanError> {
        if n == 0 {
            return Err(PlanError::NoTokens);
        }
        if inputs.is_empty() {
            return Err(PlanError::NoLayers);
        }
        if inputs.len() != outputs.len() {
            return Err(PlanError::LayerCountMismatch { inputs: inputs.len(), outputs: outputs.len() });
        }
        for (idx, (i_set, o_set)) in inputs.iter().zip(&outputs).enumerate() {
            let layer = idx + 1;
            check_set(n, layer, SetKind::Input, i_set)?;
            check_set(n, layer, SetKind::Output, o_set)?;
            if let Some(&token) = o_set.iter().find(|t| i_set.binary_search(t).is_err()) {
                return Err(PlanError::OutputNotInInput { layer, token });
            }
            if idx > 0 {
                if let Some(token) = first_difference(i_set, &outputs[idx - 1]) {
                    return Err(PlanError::NotNested { layer, below: layer - 1, token });
                }
            }
        }
        Ok(Self { n, inputs, outputs })
    }

    /// Builds a plan from the input sets alone: `O_l = I_{l+1}` for `l < L`, `O_L = top`.
    ///
    /// Errors: as [`TokenPlan::new`] (e.g. `top ⊄ I_L`, non-nested inputs).
    pub fn from_inputs(n: usize, inputs: Vec<Vec<usize>>, top: Vec<usize>) -> Result<Self, PlanError> {
        if inputs.is_empty() {
            return Err(PlanError::NoLayers);
        }
        let mut outputs: Vec<Vec<usize>> = inputs.iter().skip(1).cloned().collect();
        outputs.push(top);
        Self::new(n, inputs, outputs)
    }

    /// The dense plan: every `I_l` and `O_l` is `0..n` (full outputs at the top, as needed for
    /// embeddings / mean pooling). Retention 1.0.
    ///
    /// Panics if `n == 0` or `layers == 0` (no valid plan exists).
    pub fn dense(n: usize, layers: usize) -> Self {
        assert!(n >= 1 && layers >= 1, "TokenPlan::dense needs n >= 1 and layers >= 1");
        let all: Vec<usize> = (0..n).collect();
        Self { n, inputs: vec![all.clone(); layers], outputs: vec![all; layers] }
    }

    /// Dense inputs, but only CLS is needed at the top (`O_L = {0}`), as for sequence
    /// classification. This is what ABT with `k = 1` produces.
    ///
    /// Panics if `n == 0` or `layers == 0` (no valid plan exists).
    pub fn dense_cls(n: usize, layers: usize) -> Self {
        let mut plan = Self::dense(n, layers);
        plan.outputs[layers - 1] = vec![0];
        plan
    }

    /// Dense inputs with `O_L = top` (sorted, contains 0, all `< n`): `[0]` for text, `[0, 1]`
    /// for DeiT (class and distillation token). `top = [0]` is [`dense_cls`](Self::dense_cls).
    ///
    /// Panics if `n == 0`, `layers == 0` or `top` is not a valid output set.
    pub fn dense_top(n: usize, layers: usize, top: &[usize]) -> Self {
        assert!(
            !top.is_empty() && top[0] == 0 && top.iter().all(|&t| t < n) && top.windows(2).all(|w| w[0] < w[1]),
            "TokenPlan::dense_top: top must be sorted token indices below n containing 0"
        );
        let mut plan = Self::dense(n, layers);
        plan.outputs[layers - 1] = top.to_vec();
        plan
    }

    /// Number of real tokens `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of layers `L`.
    pub fn num_layers(&self) -> usize {
        self.inputs.len()
    }

    /// `I_l` for `layer_idx = l - 1`. Panics if `layer_idx >= L`.
    pub fn inputs(&self, layer_idx: usize) -> &[usize] {
        &self.inputs[layer_idx]
    }

    /// `O_l` for `layer_idx = l - 1`. Panics if `layer_idx >= L`.
    pub fn outputs(&self, layer_idx: usize) -> &[usize] {
        &self.outputs[layer_idx]
    }

    /// All input sets, index `l - 1`.
    pub fn input_sets(&self) -> &[Vec<usize>] {
        &self.inputs
    }

    /// All output sets, index `l - 1`.
    pub fn output_sets(&self) -> &[Vec<usize>] {
        &self.outputs
    }

    /// `O_L`, the rows the top layer produces.
    pub fn top(&self) -> &[usize] {
        &self.outputs[self.outputs.len() - 1]
    }

    /// Token retention (section 5): `(Σ_l |I_l| + |O_L|) / ((L + 1) n)`.
    pub fn retention(&self) -> f64 {
        let kept: usize = self.inputs.iter().map(Vec::len).sum::<usize>() + self.top().len();
        kept as f64 / ((self.num_layers() + 1) * self.n) as f64
    }

    /// `|I_l| / n` per layer, index `l - 1`.
    pub fn per_layer_retention(&self) -> Vec<f64> {
        self.inputs.iter().map(|s| s.len() as f64 / self.n as f64).collect()
    }

    /// Encoder FLOPs the executor performs for this plan (section 5) under `execution`:
    /// [`Execution::Planned`] counts `o = |O_l|` ([`flops`](Self::flops)); a feed-forward
    /// planner (manual top-k, LTP; section 1) computes every row of `I_l` at layer `l`, so
    /// [`Execution::FeedForward`] counts `o = |I_l|`. The one FLOPs count `eval`, `classify` and
    /// `bench` share.
    pub fn executed_flops(&self, d: usize, d_ff: usize, execution: Execution) -> u64 {
        match execution {
            Execution::Planned => self.flops(d, d_ff).total,
            Execution::FeedForward => self.inputs.iter().map(|i| layer_flops(i.len(), i.len(), d, d_ff).total).sum(),
        }
    }

    /// Encoder FLOPs of this plan (section 5) for hidden size `d` and FFN size `d_ff`,
    /// with `o = |O_l|`, `i = |I_l|` per layer.
    pub fn flops(&self, d: usize, d_ff: usize) -> PlanFlops {
        let per_layer: Vec<LayerFlops> =
            self.inputs.iter().zip(&self.outputs).map(|(i, o)| layer_flops(o.len(), i.len(), d, d_ff)).collect();
        let total = per_layer.iter().map(|l| l.total).sum();
        PlanFlops { per_layer, total }
    }
}

/// How the teacher's pass executes a plan, for counting its FLOPs (section 1 and 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Execution {
    /// Ahead-of-time plans: layer `l` computes the rows of `O_l` (queries) against `I_l`.
    Planned,
    /// Feed-forward planners choose `I_{l+1}` from layer `l`'s attention, so layer `l` computes
    /// every row of `I_l` (`o = |I_l|`).
    FeedForward,
}

/// FLOPs of one encoder layer (section 5; 1 multiply-add = 2 FLOPs). LayerNorm, softmax,
/// GELU and biases are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerFlops {
    /// `|O_l|` (query / output rows).
    pub o: usize,
    /// `|I_l|` (key / value rows).
    pub i: usize,
    /// Q projection, `2 o d²`.
    pub q: u64,
    /// K and V projections, `4 i d²`.
    pub kv: u64,
    /// `Q Kᵀ`, `2 o i d`.
    pub scores: u64,
    /// `A V`, `2 o i d`.
    pub av: u64,
    /// Attention output projection, `2 o d²`.
    pub out_proj: u64,
    /// Both FFN matrices, `4 o d d_ff`.
    pub ffn: u64,
    /// Sum of the above.
    pub total: u64,
}

/// Section 5 FLOPs of one layer with `o` output rows and `i` input rows.
pub fn layer_flops(o: usize, i: usize, d: usize, d_ff: usize) -> LayerFlops {
    let (o64, i64_, d64, f64_) = (o as u64, i as u64, d as u64, d_ff as u64);
    let q = 2 * o64 * d64 * d64;
    let kv = 4 * i64_ * d64 * d64;
    let scores = 2 * o64 * i64_ * d64;
    let av = scores;
    let out_proj = q;
    let ffn = 4 * o64 * d64 * f64_;
    LayerFlops { o, i, q, kv, scores, av, out_proj, ffn, total: q + kv + scores + av + out_proj + ffn }
}

/// FLOPs of a whole plan: per layer (index `l - 1`) and the encoder total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanFlops {
    /// Per layer, index `l - 1`.
    pub per_layer: Vec<LayerFlops>,
    /// Sum over layers.
    pub total: u64,
}

/// FLOPs of the dense encoder (every set = the `n` real tokens, all layers).
pub fn dense_flops(n: usize, layers: usize, d: usize, d_ff: usize) -> u64 {
    layers as u64 * layer_flops(n, n, d, d_ff).total
}
