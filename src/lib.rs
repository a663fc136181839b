//! # sttabt: Sparse Token Transformers with Attention Back-Tracking
//!
//! Token-pruned inference for BERT-family encoders (Lee et al., ICLR 2023). Every way of pruning
//! tokens is a *planner* that produces a [`plan::TokenPlan`]; one executor
//! ([`encoder::Encoder::run`]) computes only the planned rows.
//!
//! - [`config`], [`checkpoint`]: Hugging Face `config.json` + `model.safetensors`.
//! - [`text`]: tokenisation; [`data`]: GLUE / CSV / Rotten Tomatoes datasets and metrics.
//! - [`encoder`]: the BERT encoder and the gathered executor; [`kernels`]: its CPU kernels.
//! - [`plan`]: token plans, retention and FLOPs (ALGORITHM.md sections 1 and 5).
//! - [`planners`]: attention back-tracking (section 3), concrete masking (section 4).
//! - [`assets`]: the asset cache (`$STTABT_HOME`).

pub mod approx;
pub mod assets;
pub mod bench;
pub mod data;
pub mod error;
pub mod eval;
pub mod exec;
pub mod infer;
pub mod kernels;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod planners;
pub mod plot;
pub mod profile;
pub mod text;
pub mod train;
pub mod vision;

pub use error::ModelError;
pub use exec::RunOptions;
pub use model::{EncodedInput, Encoder, EncoderKind};
pub use plan::TokenPlan;
