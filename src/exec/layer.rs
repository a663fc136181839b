//! One encoder layer over a packed batch of gathered rows: Q/K/V of `I_l`, attention of the
//! query rows `O_l`, output projection, FFN and LayerNorms (post-LN BERT, pre-LN ViT).

use rayon::prelude::*;

use super::*;

impl Encoder {
    /// One layer over a packed batch. `x` holds, for each segment, its current rows (keys/values);
    /// `out_pos[e]` are the positions (within the segment's rows) of the query/output rows.
    /// `key_weights[e]`, when given, renormalises attention over the segment's keys
    /// (soft mask, ALGORITHM.md section 4.3): `P_ij <- P_ij m_j / (Σ_k P_ik m_k + 1e-9)`.
    /// `key_pos[e]`, when given, restricts the keys to those positions (default: all rows).
    /// Returns the packed output rows `[Σ|out_pos|, d]` and, if asked, each segment's attention
    /// `[H, |out_pos|, |keys|]` (after renormalisation).
    #[allow(clippy::too_many_arguments)]
    /// With `reduce`, the attention is not kept: each task takes 16 query rows of one example
    /// through every head and writes their head reduction straight into `reduce` (while the
    /// probabilities are in cache); `probs` is then empty.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn layer_forward(
        &self,
        layer: &EncoderLayer,
        x: &[f32],
        segs: &[Segment],
        out_pos: &[Vec<usize>],
        key_pos: Option<&[Vec<usize>]>,
        key_weights: Option<&[Vec<f32>]>,
        want_attn: bool,
        reduce: Option<&ReduceSink>,
    ) -> LayerOut {
        let c = &self.config;
        let d = c.hidden_size;
        let h = c.num_heads;
        let dh = c.head_size();
        let pre_norm = c.pre_norm();
        use crate::profile::{lap, Stage};
        let t = crate::profile::start();
        // Pre-LN (ViT): Q/K/V read LayerNorm(x); the residual reads x.
        let normed: Option<Vec<f32>> = pre_norm.then(|| {
            let mut h = x.to_vec();
            layer.attn_ln.apply(&mut h);
            h
        });
        let x_in: &[f32] = normed.as_deref().unwrap_or(x);
        // Gather the output rows (queries, residual); dense layers use `x` as it is.
        let n_out: usize = out_pos.iter().map(|v| v.len()).sum();
        let identity = segs.iter().zip(out_pos).all(|(s, op)| op.len() == s.rows.len() && op.iter().enumerate().all(|(i, &p)| i == p))
            && segs.iter().map(|s| s.rows.len()).sum::<usize>() * d == x.len();
        let mut out_off = Vec::with_capacity(segs.len());
        {
            let mut r = 0;
            for op in out_pos {
                out_off.push(r);
                r += op.len();
            }
        }
        let gather = |src: &[f32]| -> Vec<f32> {
            let mut buf = Vec::with_capacity(n_out * d);
            for (s, op) in segs.iter().zip(out_pos) {
                for &p in op {
                    buf.extend_from_slice(&src[(s.offset + p) * d..(s.offset + p + 1) * d]);
                }
            }
            buf
        };
        let (gathered_xo, gathered_qin) = if identity { (None, None) } else { (Some(gather(x)), pre_norm.then(|| gather(x_in))) };
        let xo: &[f32] = gathered_xo.as_deref().unwrap_or(x);
        let q_in: &[f32] = if pre_norm { gathered_qin.as_deref().unwrap_or(x_in) } else { xo };
        let t = lap(t, Stage::Gather);
        // K and V for every current row, Q for the output rows.
        let n_rows = x.len() / d;
        let blocks = layer_row_blocks(c, layer, n_rows.max(n_out));
        let (kv, q) = if blocks > 1 {
            let mut kv = vec![0.0f32; n_rows * 2 * d];
            let mut q = vec![0.0f32; n_out * d];
            let (kb, qb) = (n_rows.div_ceil(blocks).max(1), n_out.div_ceil(blocks).max(1));
            // One task per thread, each a block of K/V rows and a block of Q rows (even shares).
            let mut kv_blocks: Vec<_> = x_in.chunks(kb * d).zip(kv.chunks_mut(kb * 2 * d)).map(Some).collect();
            let mut q_blocks: Vec<_> = q_in.chunks(qb * d).zip(q.chunks_mut(qb * d)).map(Some).collect();
            kv_blocks.resize_with(blocks, || None);
            q_blocks.resize_with(blocks, || None);
            let tasks: Vec<_> = kv_blocks.into_iter().zip(q_blocks).collect();
            tasks.into_par_iter().for_each(|(kv_task, q_task)| {
                kernels::serial(|| {
                    if let Some((a, o)) = kv_task {
                        layer.key_value.forward_into(a, o);
                    }
                    if let Some((a, o)) = q_task {
                        layer.query.forward_into(a, o);
                    }
                })
            });
            (kv, q)
        } else {
            (layer.key_value.forward(x_in), layer.query.forward(q_in))
        };
        let t = lap(t, Stage::Projections);
        // Attention: one task per (example, head), hand-written kernel (no GEMM call overhead).
        let mut ctx = vec![0.0f32; n_out * d];
        let ctx_ptr = SendPtr(ctx.as_mut_ptr());
        let n_keys = |e: usize| key_pos.map_or(segs[e].rows.len(), |kp| kp[e].len());
        let mut probs: Vec<Vec<f32>> =
            if want_attn { (0..segs.len()).map(|e| vec![0.0f32; h * out_pos[e].len() * n_keys(e)]).collect() } else { Vec::new() };
        if let Some(sink) = reduce {
            // One task per (example, block of 16 query rows): every head, then the reduction.
            let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
            for (e, op) in out_pos.iter().enumerate() {
                for q0 in (0..op.len()).step_by(16) {
                    tasks.push((e, q0, (q0 + 16).min(op.len())));
                }
            }
            let (q, kv, out_off) = (&q, &kv, &out_off);
            tasks.into_par_iter().for_each_init(
                || (Vec::<f32>::new(), Vec::<f32>::new(), Vec::<f64>::new(), Vec::<f32>::new(), Vec::<f64>::new()),
                move |(buf, kt, row, pbuf, acc), (e, q0, q1)| {
                    let ctx_ptr = ctx_ptr;
                    let s = &segs[e];
                    let nb = q1 - q0;
                    let ni = n_keys(e);
                    let key_rows = key_pos.map(|kp| &kp[e][..]);
                    let kw = key_weights.map(|kw| &kw[e][..]);
                    // one head's query rows of this block, the example's K/V rows, and the
                    // offset of the block's context columns for that head
                    let head_inputs = |head: usize| {
                        let qr = (out_off[e] + q0) * d + head * dh;
                        (&q[qr..(out_off[e] + q1) * d], &kv[s.offset * 2 * d + head * dh..(s.offset + s.rows.len()) * 2 * d], qr)
                    };
                    if sink.kind == HeadReduce::Mean && kw.is_none() && kernels::attention_accumulate_supported(dh, nb, ni) {
                        // probabilities added over heads as they are produced (lane-major f64)
                        acc.resize(16 * ni, 0.0);
                        for head in 0..h {
                            let (q_b, kv_e, c0) = head_inputs(head);
                            // SAFETY: rows out_off[e]+q0..q1 of ctx, columns of this head: this task only.
                            unsafe {
                                kernels::attention_head_accumulate(
                                    q_b,
                                    d,
                                    kv_e,
                                    2 * d,
                                    d,
                                    key_rows,
                                    nb,
                                    ni,
                                    dh,
                                    ctx_ptr.0.add(c0),
                                    d,
                                    acc,
                                    head == 0,
                                );
                            }
                        }
                        let (n, hf) = (sink.n[e], h as f64);
                        // every key, in token order (the rows of a full I_l are 0..n, sorted)
                        let identity = key_pos.is_none() && ni == n;
                        for r in 0..nb {
                            let token = s.rows[out_pos[e][q0 + r]];
                            // SAFETY: as below (one task per query token; token < n).
                            let dst = unsafe { std::slice::from_raw_parts_mut(sink.dst[e].0.add(token * n), n) };
                            if identity {
                                kernels::lane_row_mean(acc, r, hf, dst);
                            } else {
                                for j in 0..ni {
                                    let key = key_pos.map_or(j, |kp| kp[e][j]);
                                    dst[s.rows[key]] = acc[16 * j + r] / hf;
                                }
                            }
                        }
                        return;
                    }
                    buf.resize(h * nb * ni, 0.0);
                    if let HeadReduce::ConcreteCdf { ddof, eps } = sink.kind {
                        // U row = (1/H) Σ_h Φ(standardised S_h row), heads in order, from the
                        // pre-softmax scores S (section 4 step 1), not from the probabilities:
                        // ln P of a key ~88 nats below its row's max underflows in f32
                        // (planners::concrete::standardized_cdf_scores_fast's arithmetic on S).
                        // The probabilities themselves are not kept (only the context).
                        let lanes = kw.is_none() && kernels::attention_accumulate_supported(dh, nb, ni);
                        for head in 0..h {
                            let (q_b, kv_e, c0) = head_inputs(head);
                            // the query-lane kernels skip writing probabilities; others need a buffer
                            if !lanes {
                                pbuf.resize(nb * ni, 0.0);
                            }
                            let probs: &mut [f32] = if lanes { &mut [] } else { &mut pbuf[..nb * ni] };
                            // SAFETY: rows out_off[e]+q0..q1 of ctx, columns of this head: this task only.
                            unsafe {
                                kernels::attention_head(q_b, d, kv_e, 2 * d, d, key_rows, kw, nb, ni, dh, probs, ctx_ptr.0.add(c0), d, kt);
                            }
                            kernels::attention_scores(
                                q_b,
                                d,
                                kv_e,
                                2 * d,
                                key_rows,
                                nb,
                                ni,
                                dh,
                                kt,
                                &mut buf[head * nb * ni..(head + 1) * nb * ni],
                            );
                        }
                        let n = sink.n[e];
                        let inv_h = 1.0 / h as f64;
                        for r in 0..nb {
                            let token = s.rows[out_pos[e][q0 + r]];
                            row.clear();
                            row.resize(ni, 0.0);
                            for head in 0..h {
                                let sc = &buf[head * nb * ni + r * ni..][..ni];
                                if ni <= ddof || !kernels::all_finite(sc) {
                                    sink.bad.store(true, std::sync::atomic::Ordering::Relaxed);
                                    continue;
                                }
                                kernels::standardized_cdf_row(sc, ddof, eps, row);
                            }
                            row.iter_mut().for_each(|x| *x *= inv_h);
                            // SAFETY: each query token of example e is in exactly one task; the
                            // sink's block for e is [n, n] and token < n.
                            let dst = unsafe { std::slice::from_raw_parts_mut(sink.dst[e].0.add(token * n), n) };
                            for (j, &a) in row.iter().enumerate() {
                                let key = key_pos.map_or(j, |kp| kp[e][j]);
                                dst[s.rows[key]] = a;
                            }
                        }
                        return;
                    }
                    for head in 0..h {
                        let (q_b, kv_e, c0) = head_inputs(head);
                        // SAFETY: rows out_off[e]+q0..q1 of ctx, columns of this head: this task only.
                        unsafe {
                            kernels::attention_head(
                                q_b,
                                d,
                                kv_e,
                                2 * d,
                                d,
                                key_rows,
                                kw,
                                nb,
                                ni,
                                dh,
                                &mut buf[head * nb * ni..(head + 1) * nb * ni],
                                ctx_ptr.0.add(c0),
                                d,
                                kt,
                            );
                        }
                    }
                    let n = sink.n[e];
                    let identity = key_pos.is_none() && ni == n;
                    for r in 0..nb {
                        let token = s.rows[out_pos[e][q0 + r]];
                        // SAFETY: each query token of example e is in exactly one task; the
                        // sink's block for e is [n, n] and token < n.
                        let dst = unsafe { std::slice::from_raw_parts_mut(sink.dst[e].0.add(token * n), n) };
                        let max = sink.kind == HeadReduce::Max;
                        if identity {
                            kernels::reduce_heads_row(&buf[r * ni..], nb * ni, h, max, dst);
                        } else {
                            row.resize(ni, 0.0);
                            kernels::reduce_heads_row(&buf[r * ni..], nb * ni, h, max, row);
                            for (j, &a) in row.iter().enumerate() {
                                let key = key_pos.map_or(j, |kp| kp[e][j]);
                                dst[s.rows[key]] = a;
                            }
                        }
                    }
                },
            );
        } else {
            let mut tasks: Vec<(usize, usize, Option<&mut [f32]>)> = Vec::with_capacity(segs.len() * h);
            if want_attn {
                for (e, all) in probs.iter_mut().enumerate() {
                    let per = out_pos[e].len() * n_keys(e);
                    let mut rest: &mut [f32] = all;
                    for head in 0..h {
                        let (a, b) = rest.split_at_mut(per);
                        tasks.push((e, head, Some(a)));
                        rest = b;
                    }
                }
            } else {
                for e in 0..segs.len() {
                    for head in 0..h {
                        tasks.push((e, head, None));
                    }
                }
            }
            let q = &q;
            let kv = &kv;
            let out_off = &out_off;
            tasks.into_par_iter().for_each(move |(e, head, p)| {
                let ctx_ptr = ctx_ptr;
                let s = &segs[e];
                let no = out_pos[e].len();
                let ni = n_keys(e);
                // no probabilities wanted: an empty slice (the kernel skips writing them)
                let probs_h: &mut [f32] = p.unwrap_or(&mut []);
                let mut kt = Vec::new();
                let q_e = &q[out_off[e] * d + head * dh..(out_off[e] + no) * d];
                let kv_e = &kv[s.offset * 2 * d + head * dh..(s.offset + s.rows.len()) * 2 * d];
                let key_rows = key_pos.map(|kp| &kp[e][..]);
                let kw = key_weights.map(|kw| &kw[e][..]);
                // SAFETY: rows out_off[e].. of ctx, columns head*dh..(head+1)*dh belong to this task only.
                unsafe {
                    kernels::attention_head(
                        q_e,
                        d,
                        kv_e,
                        2 * d,
                        d,
                        key_rows,
                        kw,
                        no,
                        ni,
                        dh,
                        probs_h,
                        ctx_ptr.0.add(out_off[e] * d + head * dh),
                        d,
                        &mut kt,
                    );
                }
            });
        }
        let t = lap(t, Stage::Attention);
        if blocks > 1 {
            let (a, (y, share)) = self.output_blocks(layer, &ctx, xo, n_out, blocks);
            crate::profile::split(t, Stage::AttentionOutput, Stage::FeedForward, share);
            return LayerOut { y, a, probs };
        }
        // Attention output projection + residual + LayerNorm.
        let mut a = layer.attn_out.forward(&ctx);
        drop(ctx);
        if pre_norm {
            // a = x + attention; y = a + FFN(LayerNorm(a))
            add_assign(&mut a, xo);
            let t = lap(t, Stage::AttentionOutput);
            let mut h = a.clone();
            layer.out_ln.apply(&mut h);
            let inter = layer.ffn_in.forward_act(&h, Some(c.activation));
            drop(h);
            let mut y = layer.ffn_out.forward(&inter);
            add_assign(&mut y, &a);
            lap(t, Stage::FeedForward);
            return LayerOut { y, a, probs };
        }
        kernels::residual_layer_norm(&mut a, xo, &layer.attn_ln.gamma, &layer.attn_ln.beta, layer.attn_ln.eps);
        let t = lap(t, Stage::AttentionOutput);
        // FFN + residual + LayerNorm.
        let inter = layer.ffn_in.forward_act(&a, Some(c.activation));
        let mut y = layer.ffn_out.forward(&inter);
        drop(inter);
        kernels::residual_layer_norm(&mut y, &a, &layer.out_ln.gamma, &layer.out_ln.beta, layer.out_ln.eps);
        lap(t, Stage::FeedForward);
        LayerOut { y, a, probs }
    }

    /// The rows after attention, in `blocks` row blocks on the pool (each block's kernels on one
    /// thread, see [`row_blocks`]): `a` = attention output projection + residual (+ LayerNorm
    /// after, in a post-LN block), `y` = the feed-forward block's output; also the share of the
    /// blocks' time spent in the attention-output part (for the stage timers; 0 when off).
    pub(crate) fn output_blocks(
        &self,
        layer: &EncoderLayer,
        ctx: &[f32],
        xo: &[f32],
        n_out: usize,
        blocks: usize,
    ) -> (Vec<f32>, (Vec<f32>, f64)) {
        let c = &self.config;
        let d = c.hidden_size;
        let pre_norm = c.pre_norm();
        let timed = crate::profile::start().is_some();
        let mut a = vec![0.0f32; n_out * d];
        let mut y = vec![0.0f32; n_out * d];
        let rb = n_out.div_ceil(blocks).max(1) * d;
        let (t_ao, t_all) = ctx
            .par_chunks(rb)
            .zip(xo.par_chunks(rb))
            .zip(a.par_chunks_mut(rb))
            .zip(y.par_chunks_mut(rb))
            .map(|(((ctx, xo), a), y)| {
                kernels::serial(|| {
                    let t0 = timed.then(std::time::Instant::now);
                    layer.attn_out.forward_into(ctx, a);
                    let inter = if pre_norm {
                        // a = x + attention; y = a + FFN(LayerNorm(a))
                        add_assign(a, xo);
                        let mut h = a.to_vec();
                        layer.out_ln.apply(&mut h);
                        h
                    } else {
                        kernels::residual_layer_norm(a, xo, &layer.attn_ln.gamma, &layer.attn_ln.beta, layer.attn_ln.eps);
                        Vec::new()
                    };
                    let t1 = timed.then(std::time::Instant::now);
                    let inter = layer.ffn_in.forward_act(if pre_norm { &inter } else { a }, Some(c.activation));
                    layer.ffn_out.forward_into(&inter, y);
                    if pre_norm {
                        add_assign(y, a);
                    } else {
                        kernels::residual_layer_norm(y, a, &layer.out_ln.gamma, &layer.out_ln.beta, layer.out_ln.eps);
                    }
                    match (t0, t1) {
                        (Some(t0), Some(t1)) => ((t1 - t0).as_secs_f64(), t0.elapsed().as_secs_f64()),
                        _ => (0.0, 0.0),
                    }
                })
            })
            .reduce(|| (0.0, 0.0), |p, q| (p.0 + q.0, p.1 + q.1));
        (a, (y, if t_all > 0.0 { t_ao / t_all } else { 0.0 }))
    }
}
