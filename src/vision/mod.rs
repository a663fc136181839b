//! Image data for the ViT experiments.

pub mod idx;
