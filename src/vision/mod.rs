//! Image data for the ViT experiments.

pub mod data;
pub mod grid;
pub mod idx;
pub mod image;
pub mod model;
pub mod preprocess;
pub mod transforms;
