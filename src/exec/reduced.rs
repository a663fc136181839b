//! The fused ApproxNet attention pass that ahead-of-time planners consume: attention is reduced
//! over heads as it is produced ([`HeadReduce`]: mean / max for back-tracking, ALGORITHM.md
//! section 3; the standardised-score CDF `U` for concrete masking, section 4), so `[L, H, n, n]`
//! is never stored.

use rayon::prelude::*;

use super::*;

/// Token rows per group in [`Encoder::run_attention_reduced`] (the ApproxNet pass of ABT).
pub const REDUCED_GROUP_ROWS: usize = 1024;

/// The most f64 values of group memory a thread keeps between
/// [`Encoder::for_each_reduced_group`] calls (256 MiB; a group of 1,024 tokens at 512 tokens
/// per example and 12 layers needs 25 M).
pub const REDUCED_SCRATCH_KEEP: usize = 32 << 20;

thread_local! {
    /// The group memory of this thread's last [`Encoder::for_each_reduced_group`] call.
    static REDUCED_SCRATCH: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// How [`Encoder::run_attention_reduced_with`] reduces each query row of a layer's `H`
/// attention maps to one f64 row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeadReduce {
    /// Mean over heads (attention back-tracking, ALGORITHM.md section 3).
    Mean,
    /// Maximum over heads.
    Max,
    /// The concrete planner's step 1 (section 4): the mean over heads of `Φ` of each head's
    /// standardised pre-softmax scores `S = Q Kᵀ / √d_h` (f32, [`kernels::attention_scores`];
    /// `ddof`, `eps` and the arithmetic as in `planners::concrete::standardized_cdf_scores_fast`).
    ConcreteCdf { ddof: usize, eps: f64 },
}

/// Per example, where a layer's head-reduced attention goes: `dst[e]` points to an `[n[e], n[e]]`
/// f64 block indexed by token (query row, key column), written by `layer_forward` tasks.
pub(crate) struct ReduceSink {
    pub(crate) kind: HeadReduce,
    /// Set by a task that met a row `kind` cannot reduce (non-finite, too few keys).
    pub(crate) bad: std::sync::atomic::AtomicBool,
    pub(crate) dst: Vec<SendPtrF64>,
    pub(crate) n: Vec<usize>,
}

impl Encoder {
    /// Run static `plans` and return, per example, each layer's attention reduced over heads as
    /// `[L, n, n]` f64 (query rows in `O_l`, keys in `I_l`, everything else 0): the f64 sum over
    /// heads in head order divided by the head count (`max = false`), or the f64 max (`max = true`).
    /// This is what attention back-tracking reads (`planners::abt::backtrack_reduced`), without
    /// keeping `[L, H, n, n]` per example.
    ///
    /// Large batches run in consecutive groups of about [`REDUCED_GROUP_ROWS`] tokens, so that a
    /// layer's per-head attention maps (`[H, n, n]` f32 per example, 100 MB for 32 x 256 tokens
    /// with 12 heads) stay small and are reused instead of being faulted in afresh every layer.
    pub fn run_attention_reduced(&self, inputs: &[EncodedInput], plans: &[TokenPlan], max: bool) -> Result<Vec<Vec<f64>>, ModelError> {
        self.run_attention_reduced_with(inputs, plans, if max { HeadReduce::Max } else { HeadReduce::Mean })
    }

    /// [`run_attention_reduced`](Self::run_attention_reduced) with any [`HeadReduce`]: e.g. the
    /// concrete planner's per-head standardised scores, reduced while each block of 16 query rows
    /// is in cache instead of storing `[L, H, n, n]` maps.
    ///
    /// Errors: as `run_attention_reduced`; with `ConcreteCdf`, a non-finite score row (NaN
    /// weights) or a row of at most `ddof` keys.
    pub fn run_attention_reduced_with(
        &self,
        inputs: &[EncodedInput],
        plans: &[TokenPlan],
        reduce: HeadReduce,
    ) -> Result<Vec<Vec<f64>>, ModelError> {
        let mut out = Vec::with_capacity(inputs.len());
        self.for_each_reduced_group(inputs, plans, reduce, |_, blocks| {
            out.extend(blocks.iter().map(|b| b.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// [`run_attention_reduced_with`](Self::run_attention_reduced_with) one group of
    /// consecutive examples (about [`REDUCED_GROUP_ROWS`] tokens) at a time:
    /// `consume(first, blocks)` gets the group's first example index and, per example of the
    /// group, its `[L, n, n]` block (the same values, zeros included), before the next group
    /// reuses the memory. A thread keeps that memory (up to [`REDUCED_SCRATCH_KEEP`] values)
    /// for its next call, so that a batch's blocks are not faulted in afresh every call (page
    /// faults and the kernel's page clearing were ~10% of the ApproxNet pass at 32 x 256 tokens).
    ///
    /// Errors: as `run_attention_reduced_with`, or the first error `consume` returns.
    pub fn for_each_reduced_group(
        &self,
        inputs: &[EncodedInput],
        plans: &[TokenPlan],
        reduce: HeadReduce,
        mut consume: impl FnMut(usize, &[&[f64]]) -> Result<(), ModelError> + Send,
    ) -> Result<(), ModelError> {
        // Checked here, once, with batch-wide example numbers.
        for (e, x) in inputs.iter().enumerate() {
            self.check_input(e, x)?;
        }
        let big_l = self.layers.len();
        if plans.len() != inputs.len() || plans.iter().zip(inputs).any(|(p, x)| p.n() != x.len() || p.num_layers() != big_l) {
            return Err(ModelError::Input("run_attention_reduced: one plan per input, for its length and the model's layers".into()));
        }
        kernels::in_pool(move || {
            let mut scratch = REDUCED_SCRATCH.with(|s| s.take());
            let mut result = Ok(());
            for g in super::run::example_groups(plans, REDUCED_GROUP_ROWS) {
                let sizes: Vec<usize> = inputs[g.clone()].iter().map(|x| big_l * x.len() * x.len()).collect();
                let total: usize = sizes.iter().sum();
                if scratch.len() < total {
                    scratch.resize(total, 0.0);
                }
                let mut blocks: Vec<&mut [f64]> = Vec::with_capacity(sizes.len());
                let mut rest: &mut [f64] = &mut scratch[..total];
                for &len in &sizes {
                    let (a, b) = rest.split_at_mut(len);
                    blocks.push(a);
                    rest = b;
                }
                result = self.run_attention_reduced_in_pool(&inputs[g.clone()], &plans[g.clone()], reduce, &mut blocks);
                if result.is_ok() {
                    let views: Vec<&[f64]> = blocks.iter().map(|b| &**b).collect();
                    result = consume(g.start, &views);
                }
                if result.is_err() {
                    break;
                }
            }
            if scratch.len() <= REDUCED_SCRATCH_KEEP {
                REDUCED_SCRATCH.with(|s| s.set(scratch));
            }
            result
        })
    }

    /// One group's pass into `blocks` (one `[L, n, n]` block per example, any contents on
    /// entry): every entry the plans do not write is zeroed first, layer by layer (with a full
    /// `I_l`, the rows outside `O_l`: e.g. the top layer's rows other than CLS in ABT's pass).
    pub(crate) fn run_attention_reduced_in_pool(
        &self,
        inputs: &[EncodedInput],
        plans: &[TokenPlan],
        reduce: HeadReduce,
        reduced: &mut [&mut [f64]],
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let d = c.hidden_size;
        let big_l = self.layers.len();
        let mut segs: Vec<Segment> = Vec::with_capacity(inputs.len());
        let mut total = 0;
        for p in plans {
            let rows = p.inputs(0).to_vec();
            let len = rows.len();
            segs.push(Segment { rows, offset: total });
            total += len;
        }
        let mut hidden = vec![0.0f32; total * d];
        {
            let mut chunks: Vec<(&Segment, &EncodedInput, &mut [f32])> = Vec::with_capacity(segs.len());
            let mut rest: &mut [f32] = &mut hidden;
            for (s, x) in segs.iter().zip(inputs) {
                let (a, b) = rest.split_at_mut(s.rows.len() * d);
                chunks.push((s, x, a));
                rest = b;
            }
            chunks.into_par_iter().for_each(|(s, x, out)| self.embed_rows(x, &s.rows, out));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            for (r, p) in reduced.iter_mut().zip(plans) {
                let n = p.n();
                let block = &mut r[l * n * n..(l + 1) * n * n];
                if p.inputs(l).len() == n {
                    // every key of the rows in O_l is written: zero the other rows only
                    let mut next = 0;
                    for &o in p.outputs(l).iter().chain(std::iter::once(&n)) {
                        block[next * n..o * n].fill(0.0);
                        next = o + 1;
                    }
                } else {
                    block.fill(0.0);
                }
            }
            let out_pos: Vec<Vec<usize>> = segs.iter().zip(plans).map(|(s, p)| positions_in(&s.rows, p.outputs(l))).collect();
            let sink = ReduceSink {
                kind: reduce,
                bad: std::sync::atomic::AtomicBool::new(false),
                dst: reduced
                    .iter_mut()
                    .map(|r| {
                        let off = l * r.len() / big_l;
                        SendPtrF64(r[off..].as_mut_ptr())
                    })
                    .collect(),
                n: inputs.iter().map(|x| x.len()).collect(),
            };
            let LayerOut { y, .. } = self.layer_forward(layer, &hidden, &segs, &out_pos, None, None, false, Some(&sink));
            if sink.bad.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ModelError::Input(format!("layer {}: an attention score row is not finite (NaN or infinite weights?) or has too few keys for the standardised scores", l + 1)));
            }
            let mut off = 0;
            for (s, op) in segs.iter_mut().zip(&out_pos) {
                s.rows = op.iter().map(|&p| s.rows[p]).collect();
                s.offset = off;
                off += s.rows.len();
            }
            hidden = y;
        }
        Ok(())
    }
}
