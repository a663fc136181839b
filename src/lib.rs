//! # sttabt: Sparse Token Transformers with Attention Back-Tracking
//!
//! Token-pruned inference for BERT-family and ViT/DeiT encoders (Lee et al., ICLR 2023). Every
//! way of pruning tokens is a [`planners::Planner`] that decides a [`plan::TokenPlan`]; one
//! executor ([`Encoder::run`], in [`exec`]) computes only the planned rows, and
//! [`planners::run`] connects the two. See `ARCHITECTURE.md` for the data path and layering.
//!
//! - [`kernels`]: the CPU kernels (GEMM, packed panels, attention, norms, activations, math).
//! - [`model`]: [`Encoder`] ([`EncoderKind::Bert`] / [`EncoderKind::Vit`]), its configuration,
//!   checkpoint files, weights and embeddings.
//! - [`exec`]: the token-plan executor, feed-forward hooks, the fused attention pass planners
//!   consume, the soft-mask forward.
//! - [`plan`]: token plans, retention and FLOPs (ALGORITHM.md sections 1 and 5).
//! - [`planners`]: the `Planner` trait and dense, ABT (section 3), concrete (section 4), manual
//!   top-k and LTP (section 6); [`approx`]: the ApproxNet (section 2).
//! - [`infer`] (`Mode`, `classify`), [`eval`] + [`plot`], [`bench`], [`train`], [`compress`]: the jobs.
//! - [`text`], [`vision`], [`data`], [`pipeline`]: inputs; [`assets`]: the asset cache
//!   (`$STTABT_HOME`).

pub mod approx;
pub mod assets;
pub mod bench;
pub mod compress;
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
pub mod precision_eval;
pub mod profile;
pub mod text;
pub mod train;
pub mod vision;

pub use error::ModelError;
pub use exec::RunOptions;
pub use model::{EncodedInput, Encoder, EncoderKind, Precision};
pub use plan::TokenPlan;
