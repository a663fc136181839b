//! Image data for the ViT experiments.

pub mod idx;
pub mod grid;
pub mod image;
pub mod preprocess;
pub mod data;
pub mod model;
