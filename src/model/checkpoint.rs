//! Checkpoints in the Hugging Face layout: `config.json` + the weights (+ tokenizer files).
//!
//! The weights are read from whichever of these the directory holds, in this order (the order
//! `transformers` prefers): `model.safetensors`; sharded safetensors listed in
//! `model.safetensors.index.json`; `pytorch_model.bin` (a `torch.save` file, read with burn-store's
//! PyTorch reader, no torch needed); `.bin` shards listed in `pytorch_model.bin.index.json`. See
//! [`TensorStore::read_dir`].
//!
//! Tensor names are kept as stored; lookups also find BERT's names with or without the `bert.`
//! prefix. Which names a family's encoder reads is [`super::families::TextLayout`]'s business. f32/f16/bf16/f64 tensors are converted to f32; integer buffers such as
//! `embeddings.position_ids` are skipped. Writing is atomic (temp file, then rename).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::ModelError;

/// One f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// All float tensors of a safetensors file, by name (prefix `bert.` kept as stored).
#[derive(Debug, Clone)]
pub struct TensorStore {
    pub path: PathBuf,
    tensors: HashMap<String, RawTensor>,
    /// Non-float tensors (name -> dtype), skipped as weights but reported if asked for.
    other: HashMap<String, String>,
}

impl TensorStore {
    /// Read a safetensors file. Errors: missing file, corrupt/truncated header or data.
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        if !path.exists() {
            let bin = path.with_file_name("pytorch_model.bin");
            let hint = if bin.exists() {
                format!(
                    "only {} exists; sttabt reads safetensors. Convert it once with: python -c \"import torch; from safetensors.torch import save_file; sd = torch.load('{}', map_location='cpu'); save_file({{k: v.contiguous() for k, v in sd.items()}}, '{}')\"",
                    bin.display(),
                    bin.display(),
                    path.display()
                )
            } else {
                "expected a Hugging Face checkpoint directory with model.safetensors".to_string()
            };
            return Err(ModelError::MissingFile { path: path.to_path_buf(), hint });
        }
        let bytes = std::fs::read(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
        Self::from_bytes(path, &bytes)
    }

    /// Read the weights of a Hugging Face checkpoint directory, from the first of these it holds:
    ///
    /// 1. `model.safetensors` ([`read`](Self::read));
    /// 2. `model.safetensors.index.json` + the safetensors shards its `weight_map` names;
    /// 3. `pytorch_model.bin`, a `torch.save` file (zip, or the legacy pickle format);
    /// 4. `pytorch_model.bin.index.json` + the `.bin` shards its `weight_map` names.
    ///
    /// f32/f16/bf16/f64 tensors become f32, other dtypes are kept aside (see [`get`](Self::get)).
    ///
    /// Errors: [`ModelError::MissingFile`] for `model.safetensors` when none of them exists, or
    /// naming a shard the index lists that is absent; [`ModelError::Checkpoint`] for an index
    /// that is not valid JSON, that names a tensor its shard does not hold, or a `.bin` that is
    /// not a `torch.save` file; each file's own errors as [`read`](Self::read) and
    /// [`from_bytes`](Self::from_bytes) give them (Git LFS pointer, truncated, corrupt).
    pub fn read_dir(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join("model.safetensors");
        let st_index = dir.join("model.safetensors.index.json");
        let bin = dir.join("pytorch_model.bin");
        let bin_index = dir.join("pytorch_model.bin.index.json");
        if single.exists() {
            Self::read(&single)
        } else if st_index.exists() {
            Self::read_sharded(&st_index, |p| {
                let bytes = std::fs::read(p).map_err(|e| ModelError::Io { path: p.to_path_buf(), source: e })?;
                Self::from_bytes(p, &bytes)
            })
        } else if bin.exists() {
            Self::read_pytorch(&bin)
        } else if bin_index.exists() {
            Self::read_sharded(&bin_index, Self::read_pytorch)
        } else {
            Err(ModelError::MissingFile {
                path: single,
                hint: "the checkpoint directory has no weights sttabt reads (model.safetensors, sharded safetensors with model.safetensors.index.json, or a PyTorch .bin file with or without its index)".into(),
            })
        }
    }

    /// Read the shards listed in a Hugging Face shard index (`{"weight_map": {tensor: file}}`,
    /// files relative to the index's directory) with `read_shard`, and merge them. The store's
    /// path is the index. Errors: see [`read_dir`](Self::read_dir).
    fn read_sharded(index: &Path, read_shard: impl Fn(&Path) -> Result<Self, ModelError>) -> Result<Self, ModelError> {
        let bad = |message: String| ModelError::Checkpoint { path: index.to_path_buf(), message };
        let text = std::fs::read_to_string(index).map_err(|e| ModelError::Io { path: index.to_path_buf(), source: e })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a valid shard index (invalid JSON: {e})")))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("not a valid shard index: no \"weight_map\" object (tensor name -> shard file)".into()))?;
        // shard file -> the tensors the index puts there
        let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| bad(format!("weight_map entry for '{name}' is not a file name")))?;
            if file.is_empty() || Path::new(file).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                return Err(bad(format!("weight_map puts '{name}' in '{file}', which is not a file name in the checkpoint directory")));
            }
            shards.entry(file.to_string()).or_default().push(name.clone());
        }
        if shards.is_empty() {
            return Err(bad("the shard index lists no tensors (empty \"weight_map\")".into()));
        }
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut tensors = HashMap::new();
        let mut other = HashMap::new();
        for (file, names) in &shards {
            let path = dir.join(file);
            if !path.exists() {
                return Err(ModelError::MissingFile {
                    path,
                    hint: format!(
                        "{} lists this shard (for {} tensors, e.g. '{}'), but it is not in the checkpoint directory; fetch or copy it too",
                        index.display(),
                        names.len(),
                        names[0]
                    ),
                });
            }
            let shard = read_shard(&path)?;
            if let Some(absent) = names.iter().find(|n| !shard.tensors.contains_key(*n) && !shard.other.contains_key(*n)) {
                return Err(bad(format!(
                    "the index puts tensor '{absent}' in shard '{file}', but that shard does not hold it; the index and the shards do not belong together: fetch them again"
                )));
            }
            tensors.extend(shard.tensors);
            other.extend(shard.other);
        }
        Ok(Self { path: index.to_path_buf(), tensors, other })
    }

    /// Read a `torch.save` state dict (`pytorch_model.bin`: the zip format of PyTorch >= 1.6, or
    /// the legacy pickle format) with burn-store's PyTorch reader, which needs no torch.
    ///
    /// Errors: [`ModelError::LfsPointer`] (a Git LFS pointer), [`ModelError::Checkpoint`] (not a
    /// `torch.save` file, or a storage that cannot be read: the message says which), I/O.
    pub fn read_pytorch(path: &Path) -> Result<Self, ModelError> {
        use burn::store::pytorch_reader::{DType, PytorchReader};
        let head = read_head(path, 64)?;
        if head.starts_with(LFS_MAGIC) {
            let bytes = std::fs::read(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
            return Err(lfs_pointer_error(path, &bytes));
        }
        let reader = PytorchReader::new(path).map_err(|e| {
            let what = if head.starts_with(ZIP_MAGIC) {
                "a zip archive, but not a readable torch.save checkpoint"
            } else if looks_like_safetensors(&head) {
                "not a PyTorch checkpoint but a safetensors file (rename it to model.safetensors)"
            } else {
                "not a PyTorch checkpoint (neither a torch.save zip archive nor the legacy pickle format)"
            };
            ModelError::Checkpoint { path: path.to_path_buf(), message: format!("{what}: {e}; fetch or copy it again") }
        })?;
        let mut tensors = HashMap::new();
        let mut other = HashMap::new();
        for (name, t) in reader.into_tensors() {
            let decode: fn(&[u8]) -> f32 = match t.dtype() {
                DType::F32 => |c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]),
                DType::F16 => |c| half::f16::from_ne_bytes([c[0], c[1]]).to_f32(),
                DType::BF16 => |c| half::bf16::from_ne_bytes([c[0], c[1]]).to_f32(),
                DType::F64 => |c| f64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32,
                dtype => {
                    other.insert(name, format!("{dtype:?}"));
                    continue;
                }
            };
            let bytes = t.read().map_err(|e| ModelError::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "cannot read the data of tensor '{name}' ({e}); the file may be truncated or corrupt: fetch or copy it again"
                ),
            })?;
            let data = bytes.chunks_exact(t.dtype().size()).map(decode).collect();
            tensors.insert(name, RawTensor { shape: t.shape().to_vec(), data });
        }
        Ok(Self { path: path.to_path_buf(), tensors, other })
    }

    /// Parse safetensors bytes (`path` is used in error messages only).
    ///
    /// Errors: [`ModelError::LfsPointer`] (a Git LFS pointer instead of the weights),
    /// [`ModelError::PytorchArchive`] (a `torch.save` zip), [`ModelError::Truncated`] (the header
    /// or a tensor's data runs past the end), else [`ModelError::Safetensors`].
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, ModelError> {
        sniff_format(path, bytes)?;
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors { path: path.to_path_buf(), message: e.to_string() })?;
        let mut tensors = HashMap::new();
        let mut other = HashMap::new();
        for (name, view) in st.tensors() {
            let data = match view.dtype() {
                Dtype::F32 => view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F16 => view.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => view.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::F64 => view
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                    .collect(),
                // Integer/bool buffers (position_ids, ...) are not weights.
                dtype => {
                    other.insert(name.to_string(), format!("{dtype:?}"));
                    continue;
                }
            };
            tensors.insert(name.to_string(), RawTensor { shape: view.shape().to_vec(), data });
        }
        Ok(Self { path: path.to_path_buf(), tensors, other })
    }

    /// Build from in-memory HF-named tensors `(name, shape, data)` (`path` is used in errors only).
    pub fn from_tensors(path: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Self {
        Self {
            path: path.to_path_buf(),
            tensors: tensors.into_iter().map(|(n, shape, data)| (n, RawTensor { shape, data })).collect(),
            other: HashMap::new(),
        }
    }

    /// Names present (sorted).
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether `name` (or `bert.name`) exists.
    pub fn contains(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// Shape of a float tensor, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.lookup(name).map(|t| t.shape.clone())
    }

    fn lookup(&self, name: &str) -> Option<&RawTensor> {
        self.tensors
            .get(name)
            .or_else(|| self.tensors.get(&format!("bert.{name}")))
            .or_else(|| name.strip_prefix("bert.").and_then(|n| self.tensors.get(n)))
    }

    /// Take a tensor by HF name, checking its shape and that every value is finite.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        self.get_any(&[name], shape)
    }

    /// Like [`get`](Self::get) with alternative names (e.g. `LayerNorm.weight` / `LayerNorm.gamma`).
    pub fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let (name, t) = names.iter().find_map(|n| self.lookup(n).map(|t| (*n, t))).ok_or_else(|| {
            // a non-float tensor of that name is a dtype problem, not a missing one
            for n in names {
                for cand in [n.to_string(), format!("bert.{n}")] {
                    if let Some(dtype) = self.other.get(&cand) {
                        return ModelError::Dtype { path: self.path.clone(), name: cand, dtype: dtype.clone() };
                    }
                }
            }
            ModelError::MissingTensor { path: self.path.clone(), name: names[0].to_string() }
        })?;
        if t.shape != shape {
            return Err(ModelError::Shape {
                path: self.path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        if let Some((index, &value)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ModelError::NonFinite { path: self.path.clone(), name: name.to_string(), index, value });
        }
        Ok(t.data.clone())
    }
}

/// safetensors' own limit on the JSON header (bytes); a larger length field is garbage, not a
/// truncated file.
const MAX_HEADER_BYTES: u64 = 100_000_000;

const LFS_MAGIC: &[u8] = b"version https://git-lfs.github.com/spec/v1";
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// The first `n` bytes of a file (fewer if it is shorter).
fn read_head(path: &Path, n: u64) -> Result<Vec<u8>, ModelError> {
    use std::io::Read;
    let io = |e| ModelError::Io { path: path.to_path_buf(), source: e };
    let mut head = Vec::new();
    std::fs::File::open(path).map_err(io)?.take(n).read_to_end(&mut head).map_err(io)?;
    Ok(head)
}

/// A safetensors header: u64 little-endian length, then `{`.
fn looks_like_safetensors(head: &[u8]) -> bool {
    head.len() > 8 && head[8] == b'{' && u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8])) <= MAX_HEADER_BYTES
}

fn lfs_pointer_error(path: &Path, bytes: &[u8]) -> ModelError {
    let text = String::from_utf8_lossy(bytes);
    let real = text
        .lines()
        .find_map(|l| l.strip_prefix("size ").and_then(|n| n.trim().parse::<u64>().ok()))
        .map(|n| format!(", the real file is {n} bytes"))
        .unwrap_or_default();
    ModelError::LfsPointer { path: path.to_path_buf(), size: bytes.len() as u64, real }
}

/// Recognise the files that are commonly saved as `model.safetensors` by mistake (a Git LFS
/// pointer, a PyTorch zip) and truncated safetensors files, each with its own error.
fn sniff_format(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let size = bytes.len() as u64;
    if bytes.starts_with(LFS_MAGIC) {
        return Err(lfs_pointer_error(path, bytes));
    }
    if bytes.starts_with(ZIP_MAGIC) {
        return Err(ModelError::PytorchArchive { path: path.to_path_buf() });
    }
    // safetensors: u64 little-endian header length N, N bytes of JSON, then the data
    let Some(len_bytes) = bytes.get(..8) else { return Ok(()) };
    let n = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8]));
    if n > MAX_HEADER_BYTES || bytes.get(8).is_some_and(|&b| b != b'{') {
        return Ok(()); // not a safetensors header at all: the parser's own error says so
    }
    let header_end = 8 + n;
    if header_end > size {
        return Err(ModelError::Truncated {
            path: path.to_path_buf(),
            what: format!("the header ({n} bytes of JSON)"),
            needed: header_end,
            size,
        });
    }
    let Ok(header) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes[8..header_end as usize]) else {
        return Ok(());
    };
    let last = header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(name, v)| v["data_offsets"].get(1).and_then(|e| e.as_u64()).map(|end| (end, name)))
        .max();
    if let Some((end, name)) = last {
        if header_end.saturating_add(end) > size {
            return Err(ModelError::Truncated {
                path: path.to_path_buf(),
                what: format!("tensor '{name}'"),
                needed: header_end.saturating_add(end),
                size,
            });
        }
    }
    Ok(())
}

/// Write f32 tensors as safetensors, atomically (temp file in the same directory, then rename).
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, &[f32])]) -> Result<(), ModelError> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let bytes: &[u8] = bytemuck_cast(data);
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| ModelError::Safetensors { path: path.to_path_buf(), message: format!("tensor {name}: {e}") })
        })
        .collect::<Result<_, _>>()?;
    let bytes = safetensors::tensor::serialize(views, None)
        .map_err(|e| ModelError::Safetensors { path: path.to_path_buf(), message: e.to_string() })?;
    write_atomic(path, &bytes)
}

fn bytemuck_cast(data: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; little-endian hosts only
    // (safetensors is little-endian; x86_64 and aarch64 are).
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) }
}

/// Write bytes to `path` atomically: a temp file beside it, fsync, then rename over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    write_atomic_io(path, bytes).map_err(|(path, source)| ModelError::Io { path, source })
}

/// [`write_atomic`] with the failing path and I/O error, for callers with their own error type:
/// creates the parent directory, writes `.{name}.{pid}.tmp` beside `path`, syncs, renames; the
/// temporary file is removed when anything fails, and an existing `path` is kept.
pub fn write_atomic_io(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
    let file_name = path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })()
    .map_err(|e| (tmp.clone(), e))
    .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| (path.to_path_buf(), e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The hint for a directory without `config.json`: `usual`, unless the directory holds a training
/// checkpoint (`checkpoint/state.json`) and no final model, i.e. a `finetune` / `distill` /
/// `concrete` / `ltp` run that was stopped before it wrote one: then say so and how to finish it.
pub(crate) fn missing_config_hint(dir: &Path, usual: &str) -> String {
    let ckpt = dir.join("checkpoint");
    let state = ckpt.join("state.json");
    if state.is_file() {
        let step = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
            .map_or(String::new(), |s| format!(" at step {s}"));
        format!(
            "{} is an unfinished training run (a checkpoint{step} in {}, no final model yet): finish it by running the command that started it again with --resume",
            dir.display(),
            ckpt.display()
        )
    } else {
        usual.to_string()
    }
}
