//! Error type for loading models and running them. Every variant names what went wrong and where.

use std::path::PathBuf;

/// Errors from loading checkpoints, tokenizers and configs, and from running the encoder on bad input.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} not found: {hint}")]
    MissingFile { path: PathBuf, hint: String },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "{path}: not a valid safetensors file ({message}); the file may be truncated or corrupt: fetch or copy it again, or retrain it"
    )]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: this is a Git LFS pointer file ({size} bytes), not the weights{real}: the checkpoint was cloned without Git LFS; run `git lfs install && git lfs pull` in its repository, or download the file itself")]
    LfsPointer {
        path: PathBuf,
        /// Size of the pointer file.
        size: u64,
        /// ", the real file is N bytes" when the pointer says so, else empty.
        real: String,
    },
    #[error("{path}: this is a PyTorch zip archive (a torch.save file, e.g. pytorch_model.bin renamed), not a safetensors file; convert it once with: python -c \"import torch; from safetensors.torch import save_file; sd = torch.load('{path}', map_location='cpu'); save_file({{k: v.contiguous() for k, v in sd.items()}}, 'model.safetensors')\"; or rename it to pytorch_model.bin (with no model.safetensors beside it), which sttabt reads")]
    PytorchArchive { path: PathBuf },
    /// A checkpoint file other than a single safetensors file that cannot be used: a shard index
    /// that is not valid JSON or names a tensor its shard lacks, a `.bin` that is not a
    /// `torch.save` file. The message says which.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: truncated safetensors file: {what} needs {needed} bytes, but the file has only {size}; fetch or copy it again")]
    Truncated {
        path: PathBuf,
        /// What runs past the end: "the header" or "tensor 'name'".
        what: String,
        /// Bytes the file would need.
        needed: u64,
        /// Bytes it has.
        size: u64,
    },
    #[error("{path}: tensor '{name}' is missing (looked for '{name}' and 'bert.{name}')")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor '{name}' has shape {found:?}, expected {expected:?} (from config.json)")]
    Shape { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{path}: tensor '{name}' has dtype {dtype}, expected a float type (F32, F16, BF16, F64)")]
    Dtype { path: PathBuf, name: String, dtype: String },
    #[error("{path}: tensor '{name}' holds a non-finite value ({value}) at flat index {index}")]
    NonFinite { path: PathBuf, name: String, index: usize, value: f32 },
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("invalid token plan for example {example}")]
    Plan {
        example: usize,
        #[source]
        source: crate::plan::PlanError,
    },
}
