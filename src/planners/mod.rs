//! Token planners: turn (approximate) attention into a [`crate::plan::TokenPlan`].
//!
//! - [`abt`]: attention back-tracking, top-k and threshold forms (ALGORITHM.md section 3).
//! - [`concrete`]: concrete-masking scores and masks (ALGORITHM.md section 4 steps 1, 2, 4).
//! - [`topk`]: manual top-k feed-forward pruning (section 6 baseline).

pub mod abt;
pub mod concrete;
pub mod ltp;
pub mod topk;
