//! The embedding layer (ALGORITHM.md section 1, `X^0`): token + position + type embeddings
//! (BERT) or patch embedding + class/distillation tokens + positions (ViT/DeiT), and the
//! executor's input type [`EncodedInput`].

use super::*;
use crate::error::ModelError;

/// `embeddings.*` of a text model: word + position + token type, then LayerNorm. `position` is
/// `[max_position_embeddings, d]` (token `i` reads row `i + position_offset`); `token_type` is
/// `[type_vocab_size, d]`, empty for DistilBERT (no type embeddings).
#[derive(Debug, Clone, PartialEq)]
pub struct TextEmbeddings {
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub token_type: Vec<f32>,
    pub ln: LayerNorm,
}

/// `{vit,deit}.embeddings.*` of a vision model: patch projection, special tokens, positions.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchEmbeddings {
    /// `patch_embeddings.projection` (conv `[d, C, p, p]`) as a linear map `C·p·p -> d` over
    /// patches flattened in `(c, ky, kx)` order.
    pub projection: Linear,
    /// `cls_token` (and `distillation_token`), `[num_special, d]`.
    pub special: Vec<f32>,
    /// `position_embeddings` without the leading batch axis, `[n, d]` (`n = num_special + patches`).
    pub position: Vec<f32>,
}

/// The embedding layer of either family.
#[derive(Debug, Clone, PartialEq)]
pub enum Embeddings {
    Text(TextEmbeddings),
    Patch(PatchEmbeddings),
}

impl Embeddings {
    /// The text embedding tables, if this is a text model.
    pub fn text(&self) -> Option<&TextEmbeddings> {
        match self {
            Embeddings::Text(e) => Some(e),
            Embeddings::Patch(_) => None,
        }
    }
    /// The patch embedding, if this is a vision model.
    pub fn patch(&self) -> Option<&PatchEmbeddings> {
        match self {
            Embeddings::Patch(e) => Some(e),
            Embeddings::Text(_) => None,
        }
    }
}

/// One example: real tokens only (no padding). `n = ids.len()`; position ids are `0..n`
/// (`padding_idx + 1 ..` for RoBERTa, [`EncoderConfig::position_offset`](crate::model::config::EncoderConfig::position_offset));
/// `type_ids` are read only by families with token types (BERT).
///
/// Text: `ids`/`type_ids` from the tokenizer, `patches` empty. Images (see
/// [`EncodedInput::image`]): `ids`/`type_ids` are `n` zeros (they only carry the length) and
/// `patches` holds the preprocessed pixels as `[num_patches, C·p·p]` (`vision::preprocess::patchify`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncodedInput {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub patches: Vec<f32>,
}

impl EncodedInput {
    /// An image input: `patches` is `[num_patches, patch_dim]`, the sequence has
    /// `num_special + num_patches` tokens.
    pub fn image(patches: Vec<f32>, num_special: usize, patch_dim: usize) -> Self {
        let n = num_special + patches.len() / patch_dim.max(1);
        Self { ids: vec![0; n], type_ids: vec![0; n], patches }
    }
    /// Number of real tokens `n`.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    /// True when there are no tokens (never valid input to the encoder).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl Encoder {
    /// Check an input against the model: non-empty, within `max_position_embeddings`, ids in the
    /// vocabulary, token types in range.
    pub fn check_input(&self, example: usize, x: &EncodedInput) -> Result<(), ModelError> {
        let c = &self.config;
        if let Some(v) = c.vision() {
            let want = v.num_patches() * v.patch_dim();
            if x.patches.len() != want || x.ids.len() != v.seq_len() {
                return Err(ModelError::Input(format!(
                    "example {example}: an image input must hold {} patches of {} values ({}x{} pixels, {} channel(s), patch {}), found {} values and {} tokens; preprocess images with the model's image processor",
                    v.num_patches(),
                    v.patch_dim(),
                    v.image_size,
                    v.image_size,
                    v.num_channels,
                    v.patch_size,
                    x.patches.len(),
                    x.ids.len()
                )));
            }
            if let Some(i) = x.patches.iter().position(|p| !p.is_finite()) {
                return Err(ModelError::Input(format!("example {example}: pixel value {i} is not finite")));
            }
            return Ok(());
        }
        if !x.patches.is_empty() {
            return Err(ModelError::Input(format!("example {example} is an image, but this is a text model")));
        }
        if x.ids.is_empty() {
            return Err(ModelError::Input(format!("example {example} has no tokens (an empty text still has [CLS] [SEP])")));
        }
        if x.type_ids.len() != x.ids.len() {
            return Err(ModelError::Input(format!("example {example}: {} token ids but {} token type ids", x.ids.len(), x.type_ids.len())));
        }
        if x.ids.len() > c.max_tokens() {
            let why = if c.position_offset() > 0 {
                format!("max_position_embeddings {} - padding_idx - 1", c.max_position_embeddings)
            } else {
                "max_position_embeddings".to_string()
            };
            return Err(ModelError::Input(format!(
                "example {example} has {} tokens, more than {why} = {} (truncate it: --max-length)",
                x.ids.len(),
                c.max_tokens()
            )));
        }
        if let Some(&bad) = x.ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            return Err(ModelError::Input(format!("example {example}: token id {bad} is outside the vocabulary (size {})", c.vocab_size)));
        }
        if let Some(&bad) = x.type_ids.iter().find(|&&i| c.uses_token_types() && i as usize >= c.type_vocab_size) {
            return Err(ModelError::Input(format!("example {example}: token type {bad} is outside type_vocab_size {}", c.type_vocab_size)));
        }
        Ok(())
    }

    /// Embedding output rows for `tokens` of one example, `[|tokens|, d]` into `out`.
    pub(crate) fn embed_rows(&self, x: &EncodedInput, tokens: &[usize], out: &mut [f32]) {
        let d = self.config.hidden_size;
        let e = match &self.embeddings {
            Embeddings::Text(e) => e,
            Embeddings::Patch(e) => return self.embed_patches(e, x, tokens, out),
        };
        // token t keeps its original position id (t, or padding_idx + 1 + t for RoBERTa) when
        // pruning drops others; DistilBERT has no type table, RoBERTa reads type 0 only
        let offset = self.config.position_offset();
        let types = self.config.uses_token_types();
        for (r, &t) in tokens.iter().enumerate() {
            let row = &mut out[r * d..(r + 1) * d];
            let id = x.ids[t] as usize;
            let w = &e.word[id * d..(id + 1) * d];
            let p = &e.position[(t + offset) * d..(t + offset + 1) * d];
            for j in 0..d {
                row[j] = w[j] + p[j];
            }
            if !e.token_type.is_empty() {
                let ty = if types { x.type_ids[t] as usize } else { 0 };
                for (a, b) in row.iter_mut().zip(&e.token_type[ty * d..(ty + 1) * d]) {
                    *a += b;
                }
            }
        }
        e.ln.apply(out);
    }

    /// Vision embedding rows for `tokens`: special tokens from their table, patch tokens through
    /// the projection (only the patches in `tokens` are projected), plus position embeddings.
    pub(crate) fn embed_patches(&self, e: &PatchEmbeddings, x: &EncodedInput, tokens: &[usize], out: &mut [f32]) {
        let d = self.config.hidden_size;
        let ns = e.special.len() / d;
        let pd = e.projection.d_in;
        let patch_tokens: Vec<usize> = tokens.iter().copied().filter(|&t| t >= ns).collect();
        let mut gathered = Vec::with_capacity(patch_tokens.len() * pd);
        for &t in &patch_tokens {
            gathered.extend_from_slice(&x.patches[(t - ns) * pd..(t - ns + 1) * pd]);
        }
        let projected = e.projection.forward(&gathered);
        let mut next_patch = 0;
        for (r, &t) in tokens.iter().enumerate() {
            let row = &mut out[r * d..(r + 1) * d];
            let src = if t < ns {
                &e.special[t * d..(t + 1) * d]
            } else {
                next_patch += 1;
                &projected[(next_patch - 1) * d..next_patch * d]
            };
            let pos = &e.position[t * d..(t + 1) * d];
            for j in 0..d {
                row[j] = src[j] + pos[j];
            }
        }
    }
}
