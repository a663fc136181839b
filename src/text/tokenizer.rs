//! Tokenisation with the `tokenizers` crate (`tokenizer.json`), falling back to a WordPiece
//! tokenizer built from `vocab.txt` (lower-casing as `tokenizer_config.json` says).
//!
//! Padding and truncation built into a `tokenizer.json` are switched off (the all-MiniLM-L6-v2 file
//! pads everything to 128 by itself); sttabt truncates to its own `max_length` (longest-first) and
//! reports how many tokens were cut.

use std::path::{Path, PathBuf};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Model, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::ModelError;
use crate::model::EncodedInput;

/// A tokenised example plus what truncation removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub input: EncodedInput,
    /// Wordpiece strings, for display (`--explain`).
    pub tokens: Vec<String>,
    /// Tokens removed by truncation (0 when the text fitted).
    pub truncated: usize,
    /// Tokens of the text(s) themselves, special tokens (`[CLS]`, `[SEP]`, ...) not counted: 0
    /// when nothing of the text survived tokenisation (e.g. only control or zero-width
    /// characters), so that a model would see the special tokens alone.
    pub content_tokens: usize,
}

/// Where a token came from in the original text: which text of the input (`segment` 0 = the
/// text, 1 = the pair) and its **char** (Unicode scalar value) offsets `start..end` (end
/// exclusive) into that original, un-normalised string, so that
/// `text.chars().skip(start).take(end - start)` is the token's surface form. Special tokens
/// (`[CLS]`, `[SEP]`) have no span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TokenSpan {
    /// 0 for the first text, 1 for the pair.
    pub segment: usize,
    /// First char of the token in its text.
    pub start: usize,
    /// One past the last char.
    pub end: usize,
}

/// BERT tokenizer with sttabt's padding/truncation rules.
pub struct TextTokenizer {
    plain: Tokenizer,
    truncating: Tokenizer,
    max_length: usize,
    source: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("source", &self.source).field("max_length", &self.max_length).finish()
    }
}

impl TextTokenizer {
    /// Load from a checkpoint directory: `tokenizer.json` if present, else `vocab.txt`.
    /// `max_length` (>= 3) caps every encoding, `[CLS]` and `[SEP]` included.
    ///
    /// Errors: `max_length` below 3, tokenizer files missing or unreadable.
    pub fn from_dir(dir: &Path, max_length: usize) -> Result<Self, ModelError> {
        if max_length < 3 {
            return Err(ModelError::Input(format!("max_length must be at least 3 (room for [CLS] x [SEP]), got {max_length}")));
        }
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let (tok, source) = if json.exists() {
            let t = Tokenizer::from_file(&json)
                .map_err(|e| ModelError::Tokenizer { path: json.clone(), message: format!("cannot load tokenizer.json: {e}") })?;
            (t, json)
        } else if vocab.exists() {
            (wordpiece_from_vocab(dir, &vocab)?, vocab)
        } else {
            return Err(ModelError::MissingFile { path: json, hint: "a checkpoint needs tokenizer.json or vocab.txt".into() });
        };
        let mut plain = tok;
        plain.with_padding(None);
        plain.with_truncation(None).map_err(|e| ModelError::Tokenizer { path: source.clone(), message: e.to_string() })?;
        let mut truncating = plain.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ModelError::Tokenizer { path: source.clone(), message: e.to_string() })?;
        Ok(Self { plain, truncating, max_length, source })
    }

    /// The cap on tokens per example.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenise a sentence or a sentence pair: `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`
    /// (token types 0 for A and its `[SEP]`, 1 for B and the final `[SEP]`). An empty text gives
    /// `[CLS] [SEP]`.
    pub fn encode(&self, text: &str, pair: Option<&str>) -> Result<Tokenized, ModelError> {
        let enc = |t: &Tokenizer| match pair {
            Some(b) => t.encode((text, b), true),
            None => t.encode(text, true),
        };
        let full = enc(&self.plain).map_err(|e| ModelError::Tokenizer { path: self.source.clone(), message: e.to_string() })?;
        let (e, truncated) = if full.get_ids().len() > self.max_length {
            let cut = enc(&self.truncating).map_err(|e| ModelError::Tokenizer { path: self.source.clone(), message: e.to_string() })?;
            let removed = full.get_ids().len() - cut.get_ids().len();
            (cut, removed)
        } else {
            (full, 0)
        };
        if e.get_ids().is_empty() {
            return Err(ModelError::Input(
                "tokenizer produced no tokens (does tokenizer.json have a post-processor adding [CLS]/[SEP]?)".into(),
            ));
        }
        Ok(Tokenized {
            input: EncodedInput { ids: e.get_ids().to_vec(), type_ids: e.get_type_ids().to_vec(), patches: Vec::new() },
            tokens: e.get_tokens().to_vec(),
            truncated,
            content_tokens: e.get_special_tokens_mask().iter().filter(|&&m| m == 0).count(),
        })
    }

    /// [`encode`](Self::encode) plus, per token, its [`TokenSpan`] in the original text or pair
    /// (`None` for special tokens), from the tokenizer's offsets (`Encoding::get_offsets`, taken
    /// in chars). Same truncation as `encode`.
    pub fn encode_with_spans(&self, text: &str, pair: Option<&str>) -> Result<(Tokenized, Vec<Option<TokenSpan>>), ModelError> {
        let tokenized = self.encode(text, pair)?;
        let t = if tokenized.truncated > 0 { &self.truncating } else { &self.plain };
        let enc = match pair {
            Some(b) => t.encode_char_offsets((text, b), true),
            None => t.encode_char_offsets(text, true),
        }
        .map_err(|e| ModelError::Tokenizer { path: self.source.clone(), message: e.to_string() })?;
        if enc.get_ids() != tokenized.input.ids.as_slice() {
            return Err(ModelError::Input("internal: the tokenizer gave different ids when asked for offsets".into()));
        }
        let special = enc.get_special_tokens_mask();
        let spans = enc
            .get_offsets()
            .iter()
            .zip(enc.get_sequence_ids())
            .zip(special)
            .map(|((&(start, end), seq), &sp)| match seq {
                Some(segment) if sp == 0 => Some(TokenSpan { segment, start, end }),
                _ => None,
            })
            .collect();
        Ok((tokenized, spans))
    }

    /// Tokenise many texts (parallel). Returns the encodings and the total number of tokens cut.
    pub fn encode_batch(&self, texts: &[(&str, Option<&str>)]) -> Result<(Vec<Tokenized>, usize), ModelError> {
        use rayon::prelude::*;
        let out: Vec<Tokenized> = texts.par_iter().map(|(a, b)| self.encode(a, *b)).collect::<Result<_, _>>()?;
        let cut = out.iter().map(|t| t.truncated).sum();
        Ok((out, cut))
    }
}

fn wordpiece_from_vocab(dir: &Path, vocab: &Path) -> Result<Tokenizer, ModelError> {
    let lower = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("do_lower_case").and_then(|b| b.as_bool()))
        .unwrap_or(true);
    let err = |m: String| ModelError::Tokenizer { path: vocab.to_path_buf(), message: m };
    let vocab_str = vocab.to_str().ok_or_else(|| err("path is not UTF-8".into()))?;
    let wp = WordPiece::from_file(vocab_str).unk_token("[UNK]".into()).build().map_err(|e| err(format!("cannot read vocab.txt: {e}")))?;
    let id = |t: &str| wp.get_vocab().get(t).copied().ok_or_else(|| err(format!("vocab.txt has no {t} token")));
    let cls = id("[CLS]")?;
    let sep = id("[SEP]")?;
    let mut tok = Tokenizer::new(wp);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lower)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    Ok(tok)
}
