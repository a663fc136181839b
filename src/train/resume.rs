//! Exact resume for the training jobs: a checkpoint holds every trainable tensor of the burn
//! module (bit for bit), the AdamW moments (burn's `ModuleOptimizer::to_record`, burnpack bytes),
//! the position in the data and in the learning-rate schedule, and what identifies the run (its
//! hyper-parameters and fingerprints of the data and the starting weights).
//!
//! Layout of `DIR/checkpoint/`: `weights-{step}.safetensors` (the module's float parameters, named
//! by their module path), `optimizer-{step}.bpk` and `state.json`. `state.json` is written last
//! and names the other two, so it is the commit record: a run killed at any point leaves either
//! the previous complete checkpoint or the new one. Every file is written atomically (temp file,
//! fsync, rename); files of older checkpoints are removed after the commit.
//!
//! Randomness is a function of (seed, epoch) ([`epoch_order`]), so a resumed run sees the batches
//! the uninterrupted run would have seen; the training loops have no other random draws.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Bytes, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::split::SplitMix64;
use crate::model::EncodedInput;
use crate::train::Schedule;

/// Version of the checkpoint layout described in the module docs.
pub const FORMAT: u32 = 2;

/// Hidden test hook: sleep this many milliseconds after each checkpoint, so a test can kill the
/// process at a known point (after a complete checkpoint, before the run ends).
pub const PAUSE_ENV: &str = "STTABT_TEST_PAUSE_AFTER_CHECKPOINT_MS";

/// The shuffled order of `n` examples for `epoch`: a function of `(seed, stream, epoch)` only, so
/// a resumed run draws the same batches. `stream` separates the jobs (fine-tune 0, distill 1000,
/// concrete 2000, LTP 3000; the values the loops used before, so results are unchanged).
pub fn epoch_order(n: usize, seed: u64, stream: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::new(seed.wrapping_add(stream + epoch as u64)).shuffle(&mut order);
    order
}

/// A 64-bit fingerprint (FNV-1a over 32-bit words; not cryptographic) for detecting that a
/// checkpoint belongs to other data or other starting weights.
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    pub fn word(&mut self, w: u32) {
        self.0 = (self.0 ^ w as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    pub fn usize(&mut self, v: usize) {
        self.word(v as u32);
        self.word((v as u64 >> 32) as u32);
    }
    pub fn f32s(&mut self, v: &[f32]) {
        self.usize(v.len());
        v.iter().for_each(|x| self.word(x.to_bits()));
    }
    pub fn input(&mut self, x: &EncodedInput) {
        self.usize(x.ids.len());
        x.ids.iter().chain(&x.type_ids).for_each(|&v| self.word(v));
        self.f32s(&x.patches);
    }
    /// Hex digest.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Fingerprint of every float parameter of `module` (values and shapes, in module order).
pub fn module_fingerprint<M: Module>(module: &M) -> String {
    let mut fp = Fingerprint::default();
    for (_, shape, data) in collect_params(module) {
        shape.iter().for_each(|&s| fp.usize(s));
        fp.f32s(&data);
    }
    fp.hex()
}

/// Fingerprint of a native model's tensors (HF names' order, values and shapes).
pub fn native_fingerprint(model: &crate::model::Encoder) -> String {
    let mut fp = Fingerprint::default();
    for (_, shape, data) in model.hf_tensors() {
        shape.iter().for_each(|&s| fp.usize(s));
        fp.f32s(&data);
    }
    fp.hex()
}

/// Fingerprint of unlabelled inputs, as `{"examples": n, "fingerprint": hex}`.
pub fn inputs_fingerprint<'a>(inputs: impl ExactSizeIterator<Item = &'a EncodedInput>, labels: impl Iterator<Item = usize>) -> Value {
    let n = inputs.len();
    let mut fp = Fingerprint::default();
    fp.usize(n);
    inputs.for_each(|x| fp.input(x));
    labels.for_each(|l| fp.usize(l));
    serde_json::json!({"examples": n, "fingerprint": fp.hex()})
}

/// What must match between a checkpoint and the command that resumes it: the job's
/// hyper-parameters (a `Serialize` config, minus `ignore`d fields such as `checkpoint_every`)
/// plus named fingerprints (data, starting weights).
pub fn run_key<C: Serialize>(cfg: &C, ignore: &[&str], extra: &[(&str, Value)]) -> BTreeMap<String, Value> {
    let mut key = BTreeMap::new();
    if let Ok(Value::Object(m)) = serde_json::to_value(cfg) {
        for (k, v) in m {
            if !ignore.contains(&k.as_str()) {
                key.insert(k, v);
            }
        }
    }
    for (k, v) in extra {
        key.insert(k.to_string(), v.clone());
    }
    key
}

/// `state.json`: the commit record of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub format: u32,
    /// `finetune`, `distill`, `concrete` or `ltp`.
    pub job: String,
    /// Optimisation steps done (the next step to run, 0-based).
    pub step: usize,
    /// Epoch of the next step and its batch index in that epoch's shuffled order.
    pub epoch: usize,
    pub batch: usize,
    /// The learning-rate schedule; the rate of the next step is `schedule.lr(step)`.
    pub schedule: Schedule,
    /// Hyper-parameters and fingerprints (see [`run_key`]).
    pub run: BTreeMap<String, Value>,
    /// Burn parameter ids, in module order, that the optimiser record is keyed by.
    pub param_ids: Vec<u64>,
    pub weights: String,
    pub optimizer: String,
    /// Job-specific progress (dev accuracies, report windows, ...).
    pub extra: Value,
}

/// Errors of the resume machinery; the message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path} was written by a different run; differing fields (checkpoint -> now): {fields}. Resume with the checkpoint's settings, or train into a new --out (the checkpoint was not changed)")]
    Mismatch { path: PathBuf, fields: String },
    #[error("{path}: {message}; delete {dir} to start over (nothing was changed)", dir = .path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    Unusable { path: PathBuf, message: String },
}

fn io(path: &Path, e: impl std::fmt::Display) -> ResumeError {
    ResumeError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// Reads and writes the checkpoints of one run in `dir` (normally `OUT/checkpoint`).
#[derive(Debug, Clone)]
pub struct Checkpointer {
    pub dir: PathBuf,
    pub job: String,
    pub run: BTreeMap<String, Value>,
}

impl Checkpointer {
    pub fn new(dir: PathBuf, job: &str, run: BTreeMap<String, Value>) -> Self {
        Self { dir, job: job.to_string(), run }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Write a checkpoint at `step` (the next step to run): weights, optimiser state, then the
    /// commit record; older checkpoint files are removed afterwards.
    #[allow(clippy::too_many_arguments)]
    pub fn save<M: Module>(
        &self,
        model: &M,
        optim: &ModuleOptimizer,
        step: usize,
        per_epoch: usize,
        schedule: &Schedule,
        extra: Value,
    ) -> Result<(), ResumeError> {
        let weights = format!("weights-{step:08}.safetensors");
        let optimizer = format!("optimizer-{step:08}.bpk");
        let params = collect_params(model);
        let views: Vec<(String, Vec<usize>, &[f32])> = params.iter().map(|(n, s, d)| (n.clone(), s.clone(), d.as_slice())).collect();
        crate::model::checkpoint::write_safetensors(&self.dir.join(&weights), &views).map_err(|e| io(&self.dir.join(&weights), e))?;
        let bytes = optim.into_bytes().map_err(|e| io(&self.dir.join(&optimizer), format!("serialising the optimiser state: {e:?}")))?;
        crate::model::checkpoint::write_atomic(&self.dir.join(&optimizer), &bytes).map_err(|e| io(&self.dir.join(&optimizer), e))?;
        let param_ids = burn::module::list_param_ids(model).iter().map(|id| id.val()).collect();
        self.commit(step, per_epoch, schedule, param_ids, weights, optimizer, extra)
    }

    /// Write the commit record `state.json` of a checkpoint at `step` whose weights and optimiser
    /// files (names relative to [`Self::dir`], already written) are `weights` and `optimizer`,
    /// then remove the files of older checkpoints. [`Self::save`] ends with it; the native
    /// trainer ([`crate::train::native::checkpoint`]) writes its own two files and calls it.
    ///
    /// Errors: the record cannot be written.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        step: usize,
        per_epoch: usize,
        schedule: &Schedule,
        param_ids: Vec<u64>,
        weights: String,
        optimizer: String,
        extra: Value,
    ) -> Result<(), ResumeError> {
        let per_epoch = per_epoch.max(1);
        let state = TrainState {
            format: FORMAT,
            job: self.job.clone(),
            step,
            epoch: step / per_epoch,
            batch: step % per_epoch,
            schedule: *schedule,
            run: self.run.clone(),
            param_ids,
            weights: weights.clone(),
            optimizer: optimizer.clone(),
            extra,
        };
        let json = serde_json::to_string_pretty(&state).map_err(|e| io(&self.state_path(), e))?;
        crate::model::checkpoint::write_atomic(&self.state_path(), json.as_bytes()).map_err(|e| io(&self.state_path(), e))?;
        // the new checkpoint is committed: drop the files of older ones
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let old = (name.starts_with("weights-") || name.starts_with("optimizer-")) && name != weights && name != optimizer;
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if let Some(ms) = std::env::var(PAUSE_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
            eprintln!("checkpoint at step {step} written; pausing {ms} ms ({PAUSE_ENV})");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        Ok(())
    }

    /// Whether a checkpoint (a commit record) exists.
    pub fn exists(&self) -> bool {
        self.state_path().exists()
    }

    /// Restore the last checkpoint into `model` (built as at the start of the run, which fixes the
    /// structure) and `optim` (a fresh optimiser of the run's configuration); both come back
    /// unchanged, with `None`, when there is no checkpoint. Errors: a checkpoint of another job, layout or run (naming every differing field),
    /// or missing / corrupt files.
    pub fn load<M: Module>(&self, model: M, optim: ModuleOptimizer) -> Result<(M, ModuleOptimizer, Option<TrainState>), ResumeError> {
        let Some(state) = self.read_state()? else { return Ok((model, optim, None)) };
        let wpath = self.dir.join(&state.weights);
        let store = crate::model::checkpoint::TensorStore::read(&wpath).map_err(|e| io(&wpath, e))?;
        let names: Vec<(String, Vec<usize>)> = collect_params(&model).into_iter().map(|(n, s, _)| (n, s)).collect();
        if names.len() != state.param_ids.len() {
            return Err(ResumeError::Unusable {
                path: wpath,
                message: format!("{} parameter ids for a model with {} parameters", state.param_ids.len(), names.len()),
            });
        }
        let mut values = Vec::with_capacity(names.len());
        for (name, shape) in &names {
            values.push(store.get(name, shape).map_err(|e| ResumeError::Unusable { path: wpath.clone(), message: e.to_string() })?);
        }
        let mut mapper = Replace { values: values.into_iter().zip(state.param_ids.iter().copied()).collect::<Vec<_>>().into_iter() };
        let model = model.map(&mut mapper);
        let opath = self.dir.join(&state.optimizer);
        let bytes = std::fs::read(&opath).map_err(|e| io(&opath, e))?;
        let optim = optim
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| ResumeError::Unusable { path: opath, message: format!("corrupt optimiser state: {e:?}") })?;
        Ok((model, optim, Some(state)))
    }

    /// The commit record of the last checkpoint, checked against this run (format, job, run
    /// key); `None` when there is none. [`Self::load`] starts with it.
    ///
    /// Errors: a record of another layout, job or run (naming every differing field), or an
    /// unreadable record.
    pub fn read_state(&self) -> Result<Option<TrainState>, ResumeError> {
        let path = self.state_path();
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| ResumeError::Unusable { path: path.clone(), message: format!("not a checkpoint record ({e})") })?;
        if value.get("format").and_then(Value::as_u64) != Some(FORMAT as u64) {
            return Err(ResumeError::Unusable { path, message: format!("written by an older sttabt without the optimiser state (layout {}, expected {FORMAT}), so it cannot be resumed exactly", value.get("format").map(|v| v.to_string()).unwrap_or_else(|| "1".into())) });
        }
        let state: TrainState = serde_json::from_value(value)
            .map_err(|e| ResumeError::Unusable { path: path.clone(), message: format!("malformed checkpoint record ({e})") })?;
        if state.job != self.job {
            return Err(ResumeError::Mismatch { path, fields: format!("job: {} -> {}", state.job, self.job) });
        }
        let diffs = diff_keys(&state.run, &self.run);
        if !diffs.is_empty() {
            return Err(ResumeError::Mismatch { path, fields: diffs.join("; ") });
        }
        Ok(Some(state))
    }
}

/// `field: old -> new` for every field that differs (or is present on one side only).
fn diff_keys(old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>) -> Vec<String> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into());
    keys.into_iter().filter(|k| old.get(*k) != new.get(*k)).map(|k| format!("{k}: {} -> {}", show(old.get(k)), show(new.get(k)))).collect()
}

/// Every float parameter of `module` in module order: (path name, shape, values).
fn collect_params<M: Module>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            let shape = t.dims().to_vec();
            let data = t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
            let name = if self.path.is_empty() { format!("param{}", self.out.len()) } else { self.path.join(".") };
            self.out.push((name, shape, data));
        }
    }
    let mut c = Collect { path: Vec::new(), out: Vec::new() };
    module.visit(&mut c);
    // a name used twice (a parameter at the top level of a Vec, say) gets its index
    let mut seen = std::collections::HashSet::new();
    for (i, (n, _, _)) in c.out.iter_mut().enumerate() {
        if !seen.insert(n.clone()) {
            *n = format!("{n}#{i}");
        }
    }
    c.out
}

/// Replaces each float parameter, in module order, by a saved value and id.
struct Replace {
    values: std::vec::IntoIter<(Vec<f32>, u64)>,
}

impl ModuleMapper for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((data, id)) = self.values.next() else { return param };
        let (_, old, mapper) = param.consume();
        let shape = old.dims();
        let grad = old.is_require_grad();
        let t = Tensor::<D>::from_data(TensorData::new(data, shape), &old.device()).set_require_grad(grad);
        Param::from_mapped_value(ParamId::from(id), t, mapper)
    }
}
