//! Exact caches of the frozen teacher's targets, keyed by training-example index (issue 15):
//! the teacher does not change during distillation or plan-aware fine-tuning, so its signals
//! for an example are the same in every epoch and need computing once.
//!
//! Exactness: the inference executor packs a batch's rows into shared GEMMs whose kernel (and
//! hence float summation order) depends on the batch's total row count, so an example's targets
//! computed inside one batch need not equal, bit for bit, the same example's inside another.
//! Every target here is therefore defined as the executor's result on **that example alone**
//! ([`example_targets`], [`example_dense_logits`]): the same bits whether it was computed this
//! step, read from the cache, computed in another epoch's batch or after a resume. A cache only
//! decides whether the bits are recomputed; it never changes them (tested in
//! `tests/native_distill.rs`: cached and uncached runs give bit-identical ApproxNets).
//!
//! ABT plans (plan-aware fine-tuning) are not cached: they depend on the keep fraction, which
//! is drawn per step when a keep range is given, and the ApproxNet's batched attention has the
//! same batch-composition dependence as the teacher's.

use rayon::prelude::*;

use crate::error::ModelError;
use crate::exec::RunOptions;
use crate::model::{EncodedInput, Encoder};
use crate::train::finetune::dense_logits;

/// The default memory budget of [`TeacherCache`] in MiB (`distill --teacher-cache-mb`): the
/// MiniLM teacher's targets of a 26-token RT sentence take ~0.43 MiB (six layers of 12 x 26 x 26
/// attention probabilities and 26 x 384 hidden states), so 4,096 MiB hold ~9,500 of them.
pub const DEFAULT_TEACHER_CACHE_MB: usize = 4096;

/// The budget used when none is given: [`DEFAULT_TEACHER_CACHE_MB`], or a quarter of the memory
/// available now (Linux `MemAvailable` in `/proc/meminfo`) when that is smaller, so that a small
/// machine does not swap; [`DEFAULT_TEACHER_CACHE_MB`] where it cannot be read. In MiB. The
/// budget changes no number (see [`TeacherCache`]), only how often the teacher runs.
pub fn default_teacher_cache_mb() -> usize {
    let available_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
    });
    match available_mib {
        Some(kib) => (kib / 1024 / 4).min(DEFAULT_TEACHER_CACHE_MB),
        None => DEFAULT_TEACHER_CACHE_MB,
    }
}

/// `mb` MiB in bytes (saturating).
pub fn mib(mb: usize) -> usize {
    mb.saturating_mul(1 << 20)
}

/// One example's distillation targets from the frozen teacher run on that example alone.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleTargets {
    /// Per layer, attention probabilities `[H, n, n]` (`n` the example's tokens).
    pub probs: Vec<Vec<f32>>,
    /// Hidden states 0..L-1 (embedding output, layers 1..L-1), `[n, d_teacher]` each.
    pub hidden: Vec<Vec<f32>>,
    /// `[C]` when the teacher has a classifier.
    pub logits: Option<Vec<f32>>,
    /// `Σ t·ln t` over the example's attention rows, layer by layer, each summed in order (f64).
    pub entropy: f64,
}

impl ExampleTargets {
    /// Bytes held (the float buffers plus the vectors' headers).
    pub fn bytes(&self) -> usize {
        let floats: usize = self.probs.iter().map(Vec::len).sum::<usize>()
            + self.hidden.iter().map(Vec::len).sum::<usize>()
            + self.logits.as_ref().map_or(0, Vec::len);
        floats * 4 + (self.probs.len() + self.hidden.len() + 1) * std::mem::size_of::<Vec<f32>>() + std::mem::size_of::<Self>()
    }
}

/// The teacher's distillation targets of `input`: one dense run of the inference executor on
/// this example alone, with attentions and hidden states (the signals of ALGORITHM.md section 2).
///
/// Errors: bad input for the teacher.
pub fn example_targets(teacher: &Encoder, input: &EncodedInput) -> Result<ExampleTargets, ModelError> {
    let big_l = teacher.config.num_layers;
    let outs = teacher.run_dense(std::slice::from_ref(input), RunOptions { attentions: true, hidden_states: true })?;
    let o = outs.into_iter().next().ok_or_else(|| ModelError::Input("the teacher returned no output".into()))?;
    let logits = if teacher.classifier.is_some() { Some(teacher.logits_of(&o)?) } else { None };
    let probs: Vec<Vec<f32>> = o.attentions.unwrap_or_default().into_iter().map(|la| la.probs).collect();
    let hidden: Vec<Vec<f32>> = o.hidden_states.unwrap_or_default().into_iter().take(big_l).map(|(_, rows)| rows).collect();
    let entropy = probs.iter().map(|p| p.iter().filter(|&&v| v > 0.0).map(|&v| v as f64 * (v as f64).ln()).sum::<f64>()).sum();
    Ok(ExampleTargets { probs, hidden, logits, entropy })
}

/// Several examples' [`example_targets`], each run alone, spread over the caller's pool.
///
/// Errors: bad input for the teacher.
pub fn examples_targets(teacher: &Encoder, inputs: &[&EncodedInput]) -> Result<Vec<ExampleTargets>, ModelError> {
    crate::kernels::in_pool(|| inputs.par_iter().map(|x| example_targets(teacher, x)).collect())
}

/// The frozen teacher's signals for one batch, packed as the native trainer's rows.
#[derive(Debug, Clone)]
pub struct TeacherTargets {
    /// Per layer, attention probabilities: per example `[H, n_e, n_e]`, one after another.
    pub probs: Vec<Vec<f32>>,
    /// Hidden states 0..L-1 (embedding output, layers 1..L-1), `[N, d_teacher]` each.
    pub hidden: Vec<Vec<f32>>,
    /// `[B, C]` when the teacher has a classifier.
    pub logits: Option<Vec<f32>>,
    /// `Σ t·ln t` over every real attention row of every layer (f64), the constant of L_att.
    pub entropy_sum: f64,
}

/// The teacher's targets for `inputs`: per example, one dense run of the inference executor on
/// that example alone with attentions and hidden states (the signals burn's `distill_loss`
/// uses), packed one example after another ([`assemble`] of
/// [`example_targets`]: the bits a [`TeacherCache`] serves).
///
/// Errors: bad input for the teacher.
pub fn teacher_targets(teacher: &Encoder, inputs: &[EncodedInput]) -> Result<TeacherTargets, ModelError> {
    let each = examples_targets(teacher, &inputs.iter().collect::<Vec<_>>())?;
    Ok(assemble(&each.iter().collect::<Vec<_>>()))
}

/// A batch's targets in the native trainer's packing (examples one after another), from each
/// example's: probabilities and hidden states concatenated per layer, logits `[B, C]`, and the
/// entropy constant summed over the examples in order.
pub fn assemble(examples: &[&ExampleTargets]) -> TeacherTargets {
    let big_l = examples.first().map_or(0, |e| e.probs.len());
    let n_hidden = examples.first().map_or(0, |e| e.hidden.len());
    let mut probs: Vec<Vec<f32>> = (0..big_l).map(|l| Vec::with_capacity(examples.iter().map(|e| e.probs[l].len()).sum())).collect();
    let mut hidden: Vec<Vec<f32>> = (0..n_hidden).map(|l| Vec::with_capacity(examples.iter().map(|e| e.hidden[l].len()).sum())).collect();
    let with_logits = examples.first().is_some_and(|e| e.logits.is_some());
    let mut logits = Vec::new();
    let mut entropy_sum = 0.0f64;
    for e in examples {
        for (dst, src) in probs.iter_mut().zip(&e.probs) {
            dst.extend_from_slice(src);
        }
        for (dst, src) in hidden.iter_mut().zip(&e.hidden) {
            dst.extend_from_slice(src);
        }
        if let Some(l) = &e.logits {
            logits.extend_from_slice(l);
        }
        entropy_sum += e.entropy;
    }
    TeacherTargets { probs, hidden, logits: with_logits.then_some(logits), entropy_sum }
}

/// Distillation targets by training-example index, kept up to a memory budget (ALGORITHM.md
/// section 2; issue 15). Examples are stored in the order they are first needed until the
/// budget is full; those beyond it are computed again whenever needed. Either way a batch's
/// targets are the same bits ([`assemble`] of [`example_targets`]).
#[derive(Debug)]
pub struct TeacherCache {
    budget_bytes: usize,
    used_bytes: usize,
    entries: Vec<Option<ExampleTargets>>,
    /// Examples served from the cache so far.
    pub hits: usize,
    /// Examples computed so far (stored or not).
    pub misses: usize,
}

impl TeacherCache {
    /// An empty cache for `n_examples` training examples with a budget of `budget_bytes` bytes
    /// of targets ([`ExampleTargets::bytes`]; 0: nothing is kept, every target is computed each
    /// time; [`mib`] converts the CLI's MiB).
    pub fn new(n_examples: usize, budget_bytes: usize) -> Self {
        Self { budget_bytes, used_bytes: 0, entries: vec![None; n_examples], hits: 0, misses: 0 }
    }

    /// Bytes of targets held.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Examples held.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    /// Whether no example is held.
    pub fn is_empty(&self) -> bool {
        self.used_bytes == 0
    }

    /// The targets of the batch `train[idx[0]], train[idx[1]], ...` (packed as
    /// [`assemble`]): cached examples read back, the others computed (each alone, over the
    /// caller's pool) and stored while the budget allows.
    ///
    /// Errors: an index outside `train` or beyond the cache's size, or bad input for the teacher.
    pub fn targets(&mut self, teacher: &Encoder, train: &[EncodedInput], idx: &[usize]) -> Result<TeacherTargets, ModelError> {
        if let Some(&i) = idx.iter().find(|&&i| i >= train.len().min(self.entries.len())) {
            return Err(ModelError::Input(format!(
                "teacher cache: example index {i} is outside the {} training examples ({} cached slots)",
                train.len(),
                self.entries.len()
            )));
        }
        let missing: Vec<usize> = idx.iter().copied().filter(|&i| self.entries[i].is_none()).collect();
        let fresh = examples_targets(teacher, &missing.iter().map(|&i| &train[i]).collect::<Vec<_>>())?;
        self.misses += missing.len();
        self.hits += idx.len() - missing.len();
        let mut kept: Vec<Option<ExampleTargets>> = Vec::with_capacity(fresh.len());
        for (&i, t) in missing.iter().zip(fresh) {
            let bytes = t.bytes();
            if self.entries[i].is_none() && self.used_bytes + bytes <= self.budget_bytes {
                self.used_bytes += bytes;
                self.entries[i] = Some(t);
                kept.push(None);
            } else {
                kept.push(Some(t));
            }
        }
        let refs: Vec<&ExampleTargets> = idx
            .iter()
            .map(|&i| match self.entries[i].as_ref() {
                Some(t) => t,
                None => {
                    let at = missing.iter().position(|&m| m == i).expect("a missing index was computed");
                    kept[at].as_ref().expect("an uncached example keeps its targets")
                }
            })
            .collect();
        Ok(assemble(&refs))
    }
}

/// The frozen teacher's dense logits `[C]` of `input` alone (every input token at every layer,
/// the head's tokens at the top: [`dense_logits`] of a one-example batch).
///
/// Errors: bad input; the teacher has no classification head.
pub fn example_dense_logits(teacher: &Encoder, input: &EncodedInput) -> Result<Vec<f32>, ModelError> {
    dense_logits(teacher, std::slice::from_ref(input))?.pop().ok_or_else(|| ModelError::Input("the teacher returned no logits".into()))
}

/// Dense teacher logits by training-example index (plan-aware fine-tuning's distillation
/// targets, ALGORITHM.md section 8): `C` floats per example, always kept. Each is
/// [`example_dense_logits`], so cached and recomputed logits are the same bits.
#[derive(Debug, Clone)]
pub struct DenseLogitsCache {
    entries: Vec<Option<Vec<f32>>>,
    /// Examples served from the cache so far.
    pub hits: usize,
    /// Examples computed so far.
    pub misses: usize,
}

impl DenseLogitsCache {
    /// An empty cache for `n_examples` training examples.
    pub fn new(n_examples: usize) -> Self {
        Self { entries: vec![None; n_examples], hits: 0, misses: 0 }
    }

    /// The logits `[B, C]` of a batch: `inputs[j]` is training example `idx[j]`; those not yet
    /// cached are computed (each alone, over the caller's pool) and kept.
    ///
    /// Errors: `idx` and `inputs` of different lengths, an index beyond the cache, bad input, or
    /// no classification head.
    pub fn logits(&mut self, teacher: &Encoder, idx: &[usize], inputs: &[&EncodedInput]) -> Result<Vec<f32>, ModelError> {
        if idx.len() != inputs.len() {
            return Err(ModelError::Input(format!("dense-logit cache: {} indices for {} inputs", idx.len(), inputs.len())));
        }
        if let Some(&i) = idx.iter().find(|&&i| i >= self.entries.len()) {
            return Err(ModelError::Input(format!("dense-logit cache: example index {i} is beyond its {} examples", self.entries.len())));
        }
        let missing: Vec<usize> = (0..idx.len()).filter(|&j| self.entries[idx[j]].is_none()).collect();
        let fresh: Vec<Vec<f32>> =
            crate::kernels::in_pool(|| missing.par_iter().map(|&j| example_dense_logits(teacher, inputs[j])).collect::<Result<_, _>>())?;
        self.misses += missing.len();
        self.hits += idx.len() - missing.len();
        for (&j, l) in missing.iter().zip(fresh) {
            self.entries[idx[j]] = Some(l);
        }
        Ok(idx.iter().flat_map(|&i| self.entries[i].iter().flatten().copied()).collect())
    }
}

/// Dense teacher logits `[B, C]` of `inputs`, each example run alone ([`example_dense_logits`]:
/// the bits [`DenseLogitsCache`] holds).
///
/// Errors: bad input; the teacher has no classification head.
pub fn dense_logits_each(teacher: &Encoder, inputs: &[EncodedInput]) -> Result<Vec<f32>, ModelError> {
    let rows: Vec<Vec<f32>> =
        crate::kernels::in_pool(|| inputs.par_iter().map(|x| example_dense_logits(teacher, x)).collect::<Result<_, _>>())?;
    Ok(rows.concat())
}
