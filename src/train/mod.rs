//! Training on burn (autodiff): the encoder as a burn module ([`model`]), fine-tuning
//! ([`finetune`]), distillation, concrete masks, LTP; shared pieces: learning-rate schedule,
//! progress bars, HF-layout saving, exact resume ([`resume`]).

pub mod bench;
pub mod bench_plan_ft;
pub mod bench_rounds;
pub mod concrete;
pub mod distill;
pub mod finetune;
pub mod ltp;
pub mod model;
pub mod native;
pub mod parity;
pub mod resume;
pub mod step_seconds;

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::ModelError;
use crate::model::Encoder;

/// A training hyper-parameter outside its accepted range (from the configs' `validate`, which
/// every training entry point calls before any work).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{config}.{field} must be {expected}, got {found}")]
pub struct InvalidConfig {
    /// The config type, e.g. `FinetuneConfig`.
    pub config: &'static str,
    /// The field, e.g. `batch_size`.
    pub field: &'static str,
    /// The accepted range, in words.
    pub expected: &'static str,
    /// The value given.
    pub found: String,
}

/// The run directories the loaders read, by the file that marks them: (marker, what it is, the
/// flag that takes it).
const RUN_MARKERS: [(&str, &str, &str); 3] = [
    ("concrete.json", "a concrete-masking run", "--concrete"),
    ("ltp.json", "an LTP run", "--ltp"),
    ("bundle.json", "a compress bundle", "--bundle"),
];

/// Before a run directory `dir` is loaded for its `marker` file (`concrete.json`, `ltp.json`):
/// an error saying what `dir` is instead when it is a file, missing, or another kind of run
/// (an LTP run where a concrete one belongs names `--ltp`), so the message is not a bare
/// "No such file" about the marker.
pub(crate) fn check_run_dir(dir: &Path, marker: &str) -> anyhow::Result<()> {
    let (_, what, _) = RUN_MARKERS.iter().find(|(m, _, _)| *m == marker).copied().unwrap_or((marker, "a run", ""));
    if dir.is_file() {
        anyhow::bail!("{}: is a file, not a directory: give the directory of {what}", dir.display());
    }
    if !dir.exists() {
        anyhow::bail!("{}: no such directory (expected {what}, with {marker})", dir.display());
    }
    if !dir.join(marker).exists() {
        if let Some((m, other, flag)) = RUN_MARKERS.iter().find(|(m, _, _)| *m != marker && dir.join(m).exists()) {
            anyhow::bail!("{}: is {other} ({m}), not {what}: pass it as {flag}", dir.display());
        }
    }
    Ok(())
}

/// `value >= 1` (counts: epochs, steps, batch size, checkpoint interval).
pub(crate) fn check_count(config: &'static str, field: &'static str, value: usize) -> Result<(), InvalidConfig> {
    if value == 0 {
        return Err(InvalidConfig { config, field, expected: "at least 1", found: value.to_string() });
    }
    Ok(())
}

/// `value` finite and `> 0` (learning rates, temperatures).
pub(crate) fn check_positive(config: &'static str, field: &'static str, value: f64) -> Result<(), InvalidConfig> {
    if !(value.is_finite() && value > 0.0) {
        return Err(InvalidConfig { config, field, expected: "a finite number > 0", found: value.to_string() });
    }
    Ok(())
}

/// `value` in `[0, 1]` (fractions of the steps).
pub(crate) fn check_fraction(config: &'static str, field: &'static str, value: f64) -> Result<(), InvalidConfig> {
    if !(0.0..=1.0).contains(&value) {
        return Err(InvalidConfig { config, field, expected: "in [0, 1]", found: value.to_string() });
    }
    Ok(())
}

/// Linear warm-up from 0 to `peak` over `warmup_frac` of the steps, then linear decay to 0.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    pub peak: f64,
    pub total: usize,
    pub warmup: usize,
}

impl Schedule {
    pub fn new(peak: f64, total: usize, warmup_frac: f64) -> Self {
        Self { peak, total: total.max(1), warmup: ((total as f64) * warmup_frac).round() as usize }
    }
    /// Learning rate at `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            self.peak * (step + 1) as f64 / self.warmup as f64
        } else {
            let rest = (self.total - self.warmup).max(1) as f64;
            self.peak * (1.0 - (step - self.warmup) as f64 / rest).max(0.0)
        }
    }
}

/// Progress reporting: indicatif bars on a terminal (stderr), nothing when `quiet`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub quiet: bool,
}

impl Progress {
    /// A bar with position, ETA and a message slot.
    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(len);
        pb.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(what.to_string());
        pb
    }
    /// A line of status (stderr), unless quiet.
    pub fn println(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }
}

/// Mean section-5 retention of the hard plans read off training masks, for progress reports.
///
/// `masks[k]` `[B, T]` marks, through `kept`, the tokens of input set `I_{leading_full + k + 1}`;
/// the first `leading_full` input sets hold all `n` real tokens; `O_L` = {CLS}.
pub fn masked_plan_retention(masks: &[burn::tensor::Tensor<2>], lengths: &[usize], leading_full: usize, kept: impl Fn(f32) -> bool) -> f64 {
    let layers = leading_full + masks.len();
    let vals: Vec<Vec<f32>> = masks.iter().map(|m| model::to_vec(m.clone())).collect();
    let t = vals.first().map(|v| v.len() / lengths.len().max(1)).unwrap_or(0);
    let mut total = 0.0;
    for (e, &n) in lengths.iter().enumerate() {
        let in_sets: usize = leading_full * n + vals.iter().map(|v| (0..n).filter(|&j| kept(v[e * t + j])).count()).sum::<usize>();
        total += (in_sets + 1) as f64 / ((layers + 1) * n) as f64;
    }
    total / lengths.len().max(1) as f64
}

/// Save `model` in the Hugging Face layout into `dir` (config.json + model.safetensors, both
/// written atomically), copying tokenizer files from `tokenizer_dir` when given.
pub fn save_hf_checkpoint(model: &Encoder, dir: &Path, tokenizer_dir: Option<&Path>) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Io { path: dir.to_path_buf(), source: e })?;
    let tensors = model.hf_tensors();
    let views: Vec<(String, Vec<usize>, &[f32])> = tensors.iter().map(|(n, s, d)| (n.clone(), s.clone(), d.as_slice())).collect();
    crate::model::checkpoint::write_safetensors(&dir.join("model.safetensors"), &views)?;
    let cfg = serde_json::to_string_pretty(&model.config.to_hf_json()).unwrap_or_default();
    crate::model::checkpoint::write_atomic(&dir.join("config.json"), cfg.as_bytes())?;
    if let Some(src) = tokenizer_dir {
        copy_preprocessing_files(src, dir)?;
    }
    Ok(())
}

/// Copy the tokenizer / image-processor files (`tokenizer.json`, `vocab.txt`,
/// `tokenizer_config.json`, `special_tokens_map.json`, `preprocessor_config.json`, those that
/// exist) from checkpoint directory `src` into `dir` (atomically, file by file), so that a
/// fine-tuned copy of a model (a concrete or LTP run's `teacher/`) loads on its own.
///
/// Errors: a file cannot be read or written.
pub fn copy_preprocessing_files(src: &Path, dir: &Path) -> Result<(), ModelError> {
    if src == dir {
        return Ok(());
    }
    for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"] {
        let from = src.join(f);
        if from.exists() {
            let bytes = std::fs::read(&from).map_err(|e| ModelError::Io { path: from.clone(), source: e })?;
            crate::model::checkpoint::write_atomic(&dir.join(f), &bytes)?;
        }
    }
    Ok(())
}

/// Training throughput for progress bars: examples per second since the run (or the resumed
/// run) started at step `first`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    first: usize,
    start: std::time::Instant,
}

impl Rate {
    /// Start counting at step `first` (0, or the step a resumed run continues from).
    pub fn start(first: usize) -> Self {
        Self { first, start: std::time::Instant::now() }
    }
    /// `"{x:.1} ex/s"` after `step` steps of `batch_size` examples (the last batch of an epoch
    /// may be smaller: an estimate), or an empty string before the first step.
    pub fn examples_per_s(&self, step: usize, batch_size: usize) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        if step <= self.first || secs <= 0.0 {
            return String::new();
        }
        format!("{:.1} ex/s", ((step - self.first) * batch_size) as f64 / secs)
    }
}
