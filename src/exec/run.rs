//! The token-plan executor's entry points (ALGORITHM.md section 1): a batch of examples, each
//! with its own [`TokenPlan`] (or a [`LayerHook`] deciding each layer's inputs as it runs), is
//! packed row-wise and run layer by layer.

use rayon::prelude::*;

use super::*;

impl Encoder {
    /// Run a batch where each example has its own plan (ragged), computing only the planned rows.
    ///
    /// `inputs[e]` holds real tokens only; `plans[e].n()` must equal `inputs[e].len()` and have
    /// `L` layers. Returns, per example, the last-layer rows `O_L`.
    /// Errors: invalid input (see [`check_input`](Self::check_input)) or a plan that does not fit.
    pub fn run(&self, inputs: &[EncodedInput], plans: &[TokenPlan], opts: RunOptions) -> Result<Vec<ExampleOutput>, ModelError> {
        self.run_inner(inputs, None, PlanSource::Static(plans), opts)
    }

    /// Like [`run`](Self::run), but starting from embedding outputs instead of token ids:
    /// `x0[e]` is `[plans[e].n(), d]` (all real tokens; only the rows in `I_1` are read).
    /// Errors: mismatched counts, or a row count that is not `n · d`.
    pub fn run_from_embeddings(&self, x0: &[Vec<f32>], plans: &[TokenPlan], opts: RunOptions) -> Result<Vec<ExampleOutput>, ModelError> {
        let d = self.config.hidden_size;
        if x0.len() != plans.len() {
            return Err(ModelError::Input(format!("{} embedding inputs but {} plans", x0.len(), plans.len())));
        }
        let mut dummies = Vec::with_capacity(x0.len());
        for (e, (x, p)) in x0.iter().zip(plans).enumerate() {
            if x.len() != p.n() * d {
                return Err(ModelError::Input(format!(
                    "example {e}: embedding input has {} values, expected n·d = {}·{}",
                    x.len(),
                    p.n(),
                    d
                )));
            }
            if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                return Err(ModelError::Input(format!("example {e}: embedding input holds a non-finite value at flat index {i}")));
            }
            dummies.push(EncodedInput { ids: vec![0; p.n()], type_ids: vec![0; p.n()], patches: Vec::new() });
        }
        self.run_inner(&dummies, Some(x0), PlanSource::Static(plans), opts)
    }

    /// Run with a feed-forward planner: layer 1 reads every token, and `hook` chooses `I_{l+1}`
    /// from layer `l`'s attention. The last layer outputs `top` (normally `[0]`).
    /// Returns the outputs and the plans that were executed.
    pub fn run_feed_forward(
        &self,
        inputs: &[EncodedInput],
        hook: &dyn LayerHook,
        top: &[usize],
        opts: RunOptions,
    ) -> Result<(Vec<ExampleOutput>, Vec<TokenPlan>), ModelError> {
        hook.check_layers(self.layers.len())?;
        let mut executed: Vec<Vec<Vec<usize>>> = vec![Vec::new(); inputs.len()];
        let outs = self.run_inner(inputs, None, PlanSource::Hook { hook, top, executed: &mut executed }, opts)?;
        let plans = executed
            .into_iter()
            .zip(inputs)
            .enumerate()
            .map(|(e, (ins, x))| {
                TokenPlan::from_inputs(x.len(), ins, top.to_vec()).map_err(|source| ModelError::Plan { example: e, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((outs, plans))
    }

    /// Dense run of a batch (full plan: every token in, every token out).
    pub fn run_dense(&self, inputs: &[EncodedInput], opts: RunOptions) -> Result<Vec<ExampleOutput>, ModelError> {
        let plans: Vec<TokenPlan> = inputs.iter().map(|x| TokenPlan::dense(x.len().max(1), self.layers.len())).collect();
        self.run(inputs, &plans, opts)
    }

    pub(crate) fn run_inner(
        &self,
        inputs: &[EncodedInput],
        x0: Option<&[Vec<f32>]>,
        source: PlanSource<'_, '_>,
        opts: RunOptions,
    ) -> Result<Vec<ExampleOutput>, ModelError> {
        kernels::in_pool(move || {
            // checked on the whole batch first, so that errors name the batch's example index
            self.check_batch(inputs, x0.is_some(), &source)?;
            match source {
                PlanSource::Static(plans)
                    if plans.len() == inputs.len() && inputs.len() > 1 && row_blocks_apply(self, BATCH_GROUP_ROWS) =>
                {
                    let groups = example_groups(plans, BATCH_GROUP_ROWS);
                    if groups.len() == 1 {
                        return self.run_checked(inputs, x0, source, opts);
                    }
                    let mut outs = Vec::with_capacity(inputs.len());
                    for g in groups {
                        let x0g = x0.map(|x| &x[g.clone()]);
                        outs.extend(self.run_checked(&inputs[g.clone()], x0g, PlanSource::Static(&plans[g]), opts)?);
                    }
                    Ok(outs)
                }
                PlanSource::Hook { hook, top, executed } if inputs.len() > 1 && row_blocks_apply(self, BATCH_GROUP_ROWS) => {
                    // a feed-forward planner's batch in groups too: each example's plan depends only
                    // on its own attention, so a group run gives it the same plan and outputs
                    let groups = row_groups(inputs.iter().map(|x| x.len()), BATCH_GROUP_ROWS);
                    if groups.len() == 1 {
                        return self.run_checked(inputs, x0, PlanSource::Hook { hook, top, executed }, opts);
                    }
                    let mut outs = Vec::with_capacity(inputs.len());
                    for g in groups {
                        let x0g = x0.map(|x| &x[g.clone()]);
                        let shifted = ShiftedHook { hook, first: g.start };
                        let mut ran = vec![Vec::new(); g.len()];
                        let source = PlanSource::Hook { hook: &shifted, top, executed: &mut ran };
                        outs.extend(self.run_checked(&inputs[g.clone()], x0g, source, opts)?);
                        for (e, sets) in g.zip(ran) {
                            executed[e] = sets;
                        }
                    }
                    Ok(outs)
                }
                source => self.run_checked(inputs, x0, source, opts),
            }
        })
    }

    /// The checks of a batch before it runs (example indices as in the whole batch): each input
    /// (unless the rows come from `x0`), and with fixed plans one plan per input, for its token
    /// count and the model's layer count.
    fn check_batch(&self, inputs: &[EncodedInput], from_embeddings: bool, source: &PlanSource<'_, '_>) -> Result<(), ModelError> {
        let big_l = self.layers.len();
        if !from_embeddings {
            for (e, x) in inputs.iter().enumerate() {
                self.check_input(e, x)?;
            }
        }
        if let PlanSource::Static(plans) = source {
            if plans.len() != inputs.len() {
                return Err(ModelError::Input(format!("{} inputs but {} plans", inputs.len(), plans.len())));
            }
            for (e, (p, x)) in plans.iter().zip(inputs).enumerate() {
                if p.n() != x.len() || p.num_layers() != big_l {
                    return Err(ModelError::Input(format!(
                        "plan of example {e} is for n = {} tokens and {} layers, but the input has {} tokens and the model {} layers",
                        p.n(),
                        p.num_layers(),
                        x.len(),
                        big_l
                    )));
                }
            }
        }
        Ok(())
    }

    /// The batch run itself, on the pool, once [`check_batch`](Self::check_batch) has passed
    /// (on this batch or on the whole batch it is a group of).
    fn run_checked(
        &self,
        inputs: &[EncodedInput],
        x0: Option<&[Vec<f32>]>,
        mut source: PlanSource<'_, '_>,
        opts: RunOptions,
    ) -> Result<Vec<ExampleOutput>, ModelError> {
        let c = &self.config;
        let d = c.hidden_size;
        let big_l = self.layers.len();
        // Layer-1 inputs and the embedding output of those rows, packed.
        let mut segs: Vec<Segment> = Vec::with_capacity(inputs.len());
        let mut total = 0;
        for (e, x) in inputs.iter().enumerate() {
            let rows: Vec<usize> = match &source {
                PlanSource::Static(plans) => plans[e].inputs(0).to_vec(),
                PlanSource::Hook { .. } => (0..x.len()).collect(),
            };
            segs.push(Segment { rows, offset: total });
            total += segs[e].rows.len();
        }
        let t_embed = crate::profile::start();
        let mut hidden = vec![0.0f32; total * d];
        {
            let mut chunks: Vec<(usize, &Segment, &EncodedInput, &mut [f32])> = Vec::with_capacity(segs.len());
            let mut rest: &mut [f32] = &mut hidden;
            for (e, (s, x)) in segs.iter().zip(inputs).enumerate() {
                let (a, b) = rest.split_at_mut(s.rows.len() * d);
                chunks.push((e, s, x, a));
                rest = b;
            }
            chunks.into_par_iter().for_each(|(e, s, x, out)| match x0 {
                Some(x0) => {
                    for (r, &t) in s.rows.iter().enumerate() {
                        out[r * d..(r + 1) * d].copy_from_slice(&x0[e][t * d..(t + 1) * d]);
                    }
                }
                None => self.embed_rows(x, &s.rows, out),
            });
        }
        crate::profile::lap(t_embed, crate::profile::Stage::Embed);
        let mut attn_out: Vec<Vec<LayerAttention>> = vec![Vec::new(); inputs.len()];
        let mut states: Vec<Vec<(Vec<usize>, Vec<f32>)>> = vec![Vec::new(); inputs.len()];
        if opts.hidden_states {
            for (e, s) in segs.iter().enumerate() {
                states[e].push((s.rows.clone(), hidden[s.offset * d..(s.offset + s.rows.len()) * d].to_vec()));
            }
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if let PlanSource::Hook { executed, .. } = &mut source {
                for (e, s) in segs.iter().enumerate() {
                    executed[e].push(s.rows.clone());
                }
            }
            // Output rows of this layer, as positions within the current rows.
            let need_full_attn = matches!(source, PlanSource::Hook { .. }) && l + 1 < big_l;
            let out_pos: Vec<Vec<usize>> = segs
                .iter()
                .enumerate()
                .map(|(e, s)| {
                    let out_tokens: &[usize] = match &source {
                        PlanSource::Static(plans) => plans[e].outputs(l),
                        PlanSource::Hook { top, .. } => {
                            if l + 1 == big_l {
                                top
                            } else {
                                &s.rows
                            }
                        }
                    };
                    positions_in(&s.rows, out_tokens)
                })
                .collect();
            let want_attn = opts.attentions || need_full_attn;
            let LayerOut { y: next, probs, .. } = self.layer_forward(layer, &hidden, &segs, &out_pos, None, None, want_attn, None);
            // Feed-forward planners: choose I_{l+1} from this layer's attention over I_l.
            let mut new_rows: Vec<Vec<usize>> = segs.iter().zip(&out_pos).map(|(s, op)| op.iter().map(|&p| s.rows[p]).collect()).collect();
            let mut hidden_next = next;
            if let (PlanSource::Hook { hook, top, .. }, true) = (&source, need_full_attn) {
                let chosen: Vec<Vec<usize>> = segs
                    .par_iter()
                    .enumerate()
                    .map(|(e, s)| {
                        // the top tokens (CLS, DeiT's distillation token) are kept at every layer
                        let mut next = hook.next_inputs(e, l + 1, inputs[e].len(), &s.rows, &probs[e], c.num_heads);
                        next.extend(top.iter().copied().filter(|t| s.rows.contains(t)));
                        next.sort_unstable();
                        next.dedup();
                        next
                    })
                    .collect();
                // gather the chosen rows out of this layer's (full) outputs
                let mut packed = Vec::with_capacity(chosen.iter().map(|v| v.len()).sum::<usize>() * d);
                let mut off = 0;
                for (e, ch) in chosen.iter().enumerate() {
                    let pos = positions_in(&new_rows[e], ch);
                    let base = off;
                    for p in pos {
                        packed.extend_from_slice(&hidden_next[(base + p) * d..(base + p + 1) * d]);
                    }
                    off += new_rows[e].len();
                }
                new_rows = chosen;
                hidden_next = packed;
            }
            if opts.attentions {
                for (e, s) in segs.iter().enumerate() {
                    attn_out[e].push(LayerAttention {
                        queries: out_pos[e].iter().map(|&p| s.rows[p]).collect(),
                        keys: s.rows.clone(),
                        probs: probs[e].clone(),
                    });
                }
            }
            let mut off = 0;
            for (s, rows) in segs.iter_mut().zip(new_rows) {
                s.offset = off;
                off += rows.len();
                s.rows = rows;
            }
            hidden = hidden_next;
            if opts.hidden_states {
                for (e, s) in segs.iter().enumerate() {
                    states[e].push((s.rows.clone(), hidden[s.offset * d..(s.offset + s.rows.len()) * d].to_vec()));
                }
            }
        }
        if let Some(ln) = &self.final_ln {
            ln.apply(&mut hidden);
        }
        Ok(segs
            .iter()
            .enumerate()
            .map(|(e, s)| ExampleOutput {
                rows: s.rows.clone(),
                hidden: hidden[s.offset * d..(s.offset + s.rows.len()) * d].to_vec(),
                attentions: opts.attentions.then(|| std::mem::take(&mut attn_out[e])),
                hidden_states: opts.hidden_states.then(|| std::mem::take(&mut states[e])),
            })
            .collect())
    }
}

/// A batch with fixed plans or a feed-forward planner ([`LayerHook`]: manual top-k, LTP; its
/// groups counted by token count, as layer 1 reads every token), on a model whose layers take
/// the row-block split ([`row_blocks`]) at this many rows, runs in groups of consecutive examples whose layer-1 rows add up to at
/// most this many (an example with more forms its own group), one group after the other: each
/// group's activations stay in cache (at 32 x 256 tokens one FFN activation is 50 MB) and each
/// group takes the row blocks. Measured on an AVX2-only AMD EPYC: the int8-w7 teacher at batch
/// 32 1.07-1.20x faster; the f32 teacher (no row blocks: the `gemm` crate then splits each
/// product by columns) 0.85x on length-sorted sentences, 1.15x at 256 tokens, so it runs whole
/// batches as before (`docs/results/batch_groups_*`). Planner hooks were grouped later (the
/// thirteenth session, after manual top-k at 256 tokens and batch 32 ran at 0.73x dense on the
/// int8 teacher on a Zen 4).
/// Every example's rows are computed by the same kernels either way (row-wise quantisation and
/// products, attention per example), so its outputs do not depend on the grouping except
/// through kernels whose choice depends on the row count (the AVX-512 packed f32 kernel up to
/// [`PACKED_MAX_ROWS`] rows).
pub const BATCH_GROUP_ROWS: usize = PACKED_MAX_ROWS;

/// Consecutive ranges of examples whose layer-1 rows (`plans[e].inputs(0)`) add up to at most
/// `max_rows` each (an example with more rows alone), covering `0..plans.len()` in order.
pub(crate) fn example_groups(plans: &[TokenPlan], max_rows: usize) -> Vec<std::ops::Range<usize>> {
    row_groups(plans.iter().map(|p| p.inputs(0).len()), max_rows)
}

/// [`example_groups`] from each example's layer-1 row count.
fn row_groups(layer1_rows: impl ExactSizeIterator<Item = usize>, max_rows: usize) -> Vec<std::ops::Range<usize>> {
    let count = layer1_rows.len();
    let mut groups = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (e, n) in layer1_rows.enumerate() {
        if e > start && rows + n > max_rows {
            groups.push(start..e);
            (start, rows) = (e, 0);
        }
        rows += n;
    }
    if start < count {
        groups.push(start..count);
    }
    groups
}

/// A feed-forward planner seen from a group of a batch that starts at example `first`: the
/// group's example `e` is the batch's `first + e`.
struct ShiftedHook<'a> {
    hook: &'a dyn LayerHook,
    first: usize,
}

impl LayerHook for ShiftedHook<'_> {
    fn next_inputs(&self, example: usize, layer: usize, n: usize, inputs: &[usize], attention: &[f32], heads: usize) -> Vec<usize> {
        self.hook.next_inputs(self.first + example, layer, n, inputs, attention, heads)
    }

    fn check_layers(&self, layers: usize) -> Result<(), ModelError> {
        self.hook.check_layers(layers)
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;

    #[test]
    fn example_groups_cover_the_batch_in_order_within_the_row_budget() {
        let plans: Vec<TokenPlan> = [100usize, 100, 100, 300, 20, 20, 256].iter().map(|&n| TokenPlan::dense(n, 2)).collect();
        assert_eq!(example_groups(&plans, 256), vec![0..2, 2..3, 3..4, 4..6, 6..7]);
        assert_eq!(example_groups(&plans, 10_000), vec![0..7]);
        assert_eq!(example_groups(&plans[..1], 10), vec![0..1]);
        assert!(example_groups(&[], 256).is_empty());
    }
}
