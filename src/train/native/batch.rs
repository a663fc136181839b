//! The native trainer's batch: real tokens only, packed example after example ([`PackedBatch`]).

use crate::error::ModelError;
use crate::model::config::EncoderConfig;
use crate::model::EncodedInput;

/// A batch of real tokens only, packed example after example (no padding rows: a padded row of
/// burn's batch never reaches the loss, and a padding key gets exactly 0 attention there, so
/// leaving both out changes no loss or gradient value): token ids and types `[N]` with
/// `N = Σ lengths`, example `e` at rows `offsets[e]..offsets[e + 1]`; one label per example.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedBatch {
    /// Examples `B`.
    pub b: usize,
    /// The longest example (burn's padded length `T`).
    pub t: usize,
    pub ids: Vec<usize>,
    pub types: Vec<usize>,
    pub lengths: Vec<usize>,
    /// `B + 1` row offsets.
    pub offsets: Vec<usize>,
    pub labels: Vec<usize>,
}

impl PackedBatch {
    /// Pack `inputs` with their `labels` for a model of `config` with a `num_labels`-class head.
    ///
    /// Errors: no inputs, a label count differing from the input count, an empty input, an
    /// input longer than `max_position_embeddings`, an id or type outside the vocabularies, a
    /// label `>= num_labels`, or image inputs.
    pub fn new(inputs: &[&EncodedInput], labels: &[usize], config: &EncoderConfig, num_labels: usize) -> Result<Self, ModelError> {
        let bad = |m: String| Err(ModelError::Input(m));
        if inputs.is_empty() {
            return bad("an empty batch".into());
        }
        if inputs.len() != labels.len() {
            return bad(format!("{} inputs but {} labels", inputs.len(), labels.len()));
        }
        let b = inputs.len();
        let (mut ids, mut types, mut offsets) = (Vec::new(), Vec::new(), vec![0usize]);
        for (e, x) in inputs.iter().enumerate() {
            if !x.patches.is_empty() {
                return bad(format!("example {e} is an image; the native trainer takes text only"));
            }
            if x.is_empty() || x.len() > config.max_position_embeddings {
                return bad(format!("example {e} has {} tokens; expected 1..={}", x.len(), config.max_position_embeddings));
            }
            if x.type_ids.len() != x.ids.len() {
                return bad(format!("example {e} has {} ids but {} type ids", x.ids.len(), x.type_ids.len()));
            }
            for j in 0..x.len() {
                let (id, ty) = (x.ids[j] as usize, x.type_ids[j] as usize);
                if id >= config.vocab_size || ty >= config.type_vocab_size {
                    return bad(format!(
                        "example {e} token {j}: id {id} / type {ty} outside vocab {} / {}",
                        config.vocab_size, config.type_vocab_size
                    ));
                }
                ids.push(id);
                types.push(ty);
            }
            offsets.push(ids.len());
            if labels[e] >= num_labels {
                return bad(format!("example {e} has label {} but the head has {num_labels} classes", labels[e]));
            }
        }
        let lengths: Vec<usize> = inputs.iter().map(|x| x.len()).collect();
        Ok(Self { b, t: lengths.iter().copied().max().unwrap_or(0), ids, types, lengths, offsets, labels: labels.to_vec() })
    }

    /// Real tokens `N`.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// Split `buf` into one block of `per(n_e)` values per example, in order.
    pub(crate) fn example_blocks<'a>(&self, mut buf: &'a mut [f32], per: impl Fn(usize) -> usize) -> Vec<&'a mut [f32]> {
        let mut out = Vec::with_capacity(self.b);
        for &n in &self.lengths {
            let (blk, rest) = std::mem::take(&mut buf).split_at_mut(per(n));
            out.push(blk);
            buf = rest;
        }
        out
    }
}
