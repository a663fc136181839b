//! The model: configuration ([`config`]), checkpoint files ([`checkpoint`]), layer weights
//! (`weights`), embeddings (`embeddings`) and the [`Encoder`] type with its loading and heads
//! (`encoder`). Running it is [`crate::exec`]'s job.
//!
//! Text mirrors transformers' `BertModel` (`modeling_bert.py`): `BertEmbeddings`,
//! `BertSelfAttention`, `BertSelfOutput`, `BertIntermediate`, `BertOutput`, `BertPooler`, plus the
//! `BertForSequenceClassification` head. Vision mirrors `ViTModel` / `DeiTModel`
//! (`modeling_vit.py`, `modeling_deit.py`): patch embedding (a conv with kernel = stride = patch,
//! computed as a GEMM over flattened patches), class (+ distillation) token, learned position
//! embeddings, pre-LayerNorm layers (`layernorm_before`, `layernorm_after`), the final
//! `layernorm`, and the `ViTForImageClassification` / `DeiTForImageClassificationWithTeacher`
//! heads. Both families run through the same executor. Weights are stored pre-transposed (`[in, out]`) and the
//! attention scale `1/sqrt(d_h)` is folded into the query projection at load time.

pub mod checkpoint;
pub mod config;
mod config_file;
mod embeddings;
mod encoder;
pub mod families;
mod weights;

pub use embeddings::*;
pub use encoder::*;
pub use weights::*;
