//! Exact resume for the native trainer, in the layout of [`crate::train::resume`]
//! (`DIR/checkpoint/`: weights, optimiser state, then the commit record `state.json`, each written
//! atomically; older files removed after the commit):
//!
//! - `weights-{step}.safetensors`: every tensor of the trained model ([`Tensors`]:
//!   [`NativeBert::tensors`]; for distillation also the transfer maps) under its HF name,
//!   flattened to one dimension (linear weights in the trainer's `[in, out]` order);
//! - `optimizer-{step}.safetensors`: the AdamW moments, `moment_1.{name}` and `moment_2.{name}`;
//! - `state.json`: step, epoch, batch, schedule, run key, and in `extra` the AdamW step count and
//!   settings beside the job's own progress.
//!
//! Values are stored bit for bit, so a resumed run equals the uninterrupted one exactly. The job
//! name differs from burn's (`finetune-native` vs `finetune`): the two trainers' checkpoints are
//! not interchangeable (burn keeps its moments in its own record format).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::checkpoint::{write_safetensors, TensorStore};
use crate::train::native::{AdamW, AdamWSettings, NativeBert};
use crate::train::resume::{Checkpointer, ResumeError, TrainState};
use crate::train::Schedule;

/// Trainable tensors a checkpoint saves and restores: every tensor under a unique name, in a
/// fixed order (the order of the AdamW moments), read-only and writable.
pub trait Tensors {
    /// `(name, values)` of every tensor.
    fn named(&self) -> Vec<(String, &[f32])>;
    /// The same tensors, in the same order, writable.
    fn named_mut(&mut self) -> Vec<&mut [f32]>;
}

impl Tensors for NativeBert {
    fn named(&self) -> Vec<(String, &[f32])> {
        self.tensors()
    }
    fn named_mut(&mut self) -> Vec<&mut [f32]> {
        self.tensors_mut()
    }
}

/// The optimiser part of `state.json`'s `extra`, beside the job's own progress (`job`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NativeExtra {
    adamw_time: i32,
    adamw: AdamWSettings,
    job: Value,
}

/// Write a checkpoint of `model` and `optim` at `step` (the next step to run) with the job's
/// progress `extra` into `ckpt.dir`.
///
/// Errors: a file cannot be written (the previous checkpoint then stays the committed one).
pub fn save(
    ckpt: &Checkpointer,
    model: &impl Tensors,
    optim: &AdamW,
    step: usize,
    per_epoch: usize,
    schedule: &Schedule,
    extra: Value,
) -> Result<(), ResumeError> {
    let weights = format!("weights-{step:08}.safetensors");
    let optimizer = format!("optimizer-{step:08}.safetensors");
    let tensors = model.named();
    let views: Vec<(String, Vec<usize>, &[f32])> = tensors.iter().map(|(n, x)| (n.clone(), vec![x.len()], *x)).collect();
    let wpath = ckpt.dir.join(&weights);
    write_safetensors(&wpath, &views).map_err(|e| ResumeError::Io { path: wpath.clone(), message: e.to_string() })?;
    let mut moments: Vec<(String, Vec<usize>, &[f32])> = Vec::with_capacity(2 * tensors.len());
    for (((name, _), m1), m2) in tensors.iter().zip(&optim.moment_1).zip(&optim.moment_2) {
        moments.push((format!("moment_1.{name}"), vec![m1.len()], m1));
        moments.push((format!("moment_2.{name}"), vec![m2.len()], m2));
    }
    let opath = ckpt.dir.join(&optimizer);
    write_safetensors(&opath, &moments).map_err(|e| ResumeError::Io { path: opath.clone(), message: e.to_string() })?;
    let extra = NativeExtra { adamw_time: optim.time, adamw: optim.settings, job: extra };
    let extra = serde_json::to_value(&extra).map_err(|e| ResumeError::Io { path: ckpt.dir.join("state.json"), message: e.to_string() })?;
    ckpt.commit(step, per_epoch, schedule, Vec::new(), weights, optimizer, extra)
}

/// Restore the last checkpoint in `ckpt.dir` into `model` and `optim` (built as at the start of
/// the run, which fixes the shapes); returns the commit record with `extra` replaced by the job's
/// own progress, or `None` (nothing changed) when there is no checkpoint.
///
/// Errors: a checkpoint of another job, layout or run (naming every differing field), other
/// AdamW settings, or missing / corrupt / misshapen files.
pub fn load(ckpt: &Checkpointer, model: &mut impl Tensors, optim: &mut AdamW) -> Result<Option<TrainState>, ResumeError> {
    let Some(mut state) = ckpt.read_state()? else { return Ok(None) };
    let spath = ckpt.dir.join("state.json");
    let extra: NativeExtra = serde_json::from_value(state.extra.clone())
        .map_err(|e| ResumeError::Unusable { path: spath.clone(), message: format!("no native optimiser state ({e})") })?;
    if extra.adamw != optim.settings {
        return Err(ResumeError::Mismatch { path: spath, fields: format!("adamw: {:?} -> {:?}", extra.adamw, optim.settings) });
    }
    let wpath = ckpt.dir.join(&state.weights);
    let opath = ckpt.dir.join(&state.optimizer);
    let wstore = TensorStore::read(&wpath).map_err(|e| ResumeError::Io { path: wpath.clone(), message: e.to_string() })?;
    let ostore = TensorStore::read(&opath).map_err(|e| ResumeError::Io { path: opath.clone(), message: e.to_string() })?;
    let names: Vec<String> = model.named().into_iter().map(|(n, _)| n).collect();
    // read everything before changing anything
    let mut values = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let n = optim.moment_1[i].len();
        let bad = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |e: crate::ModelError| ResumeError::Unusable { path, message: e.to_string() }
        };
        let w = wstore.get(name, &[n]).map_err(bad(&wpath))?;
        let m1 = ostore.get(&format!("moment_1.{name}"), &[n]).map_err(bad(&opath))?;
        let m2 = ostore.get(&format!("moment_2.{name}"), &[n]).map_err(bad(&opath))?;
        values.push((w, m1, m2));
    }
    for ((dst, (w, m1, m2)), i) in model.named_mut().into_iter().zip(values).zip(0..) {
        dst.copy_from_slice(&w);
        optim.moment_1[i] = m1;
        optim.moment_2[i] = m2;
    }
    optim.time = extra.adamw_time;
    state.extra = extra.job;
    Ok(Some(state))
}
