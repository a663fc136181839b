//! The demo's stage cache: every stage directory holds `demo_stage.json` with the stage's key
//! (its settings and the keys of the stages it builds on), whether it finished and its wall
//! time. A finished stage with the same key is reused; an unfinished one resumes from its
//! checkpoint; one with another key (an older demo recipe, other sizes upstream) is removed and
//! redone, and so is a directory without a record.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The record file in each stage directory.
pub(crate) const RECORD: &str = "demo_stage.json";

/// What `demo_stage.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StageRecord {
    /// The stage's settings and the keys of its inputs.
    pub key: Value,
    /// Whether the stage finished.
    pub done: bool,
    /// Wall-clock seconds of the run that finished it (0 until then).
    pub seconds: f64,
    /// A few figures of the stage's outcome (dev accuracy, KL, retention, ...).
    #[serde(default)]
    pub summary: Value,
}

/// One stage of the demo, for [`run_stage`].
pub(crate) struct Stage {
    /// Short name (`teacher`, `approx`, `concrete_theta-1`, `eval`, ...).
    pub name: String,
    pub dir: PathBuf,
    pub key: Value,
}

/// What one stage did in this run (one entry of `demo.json`'s `stages`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StageOutcome {
    pub stage: String,
    pub dir: PathBuf,
    /// Wall-clock seconds of the run that produced it (this run's, or the earlier one's when cached).
    pub seconds: f64,
    /// Reused from an earlier run.
    pub cached: bool,
    pub summary: Value,
}

fn read_record(dir: &Path) -> Option<StageRecord> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(RECORD)).ok()?).ok()
}

fn write_record(dir: &Path, r: &StageRecord) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    sttabt::model::checkpoint::write_atomic(&dir.join(RECORD), serde_json::to_string_pretty(r)?.as_bytes())?;
    Ok(())
}

/// Run `stage` unless a finished run with the same key is there: `train(resume)` trains into
/// `stage.dir` (resuming from its checkpoint when an unfinished run of the same key is there)
/// and returns the stage's summary. `header` is printed before the stage runs or is reused.
///
/// Errors: the stage's own, or a stale directory that cannot be removed.
pub(crate) fn run_stage(
    stage: &Stage,
    header: &str,
    progress: &sttabt::train::Progress,
    train: impl FnOnce(bool) -> Result<Value>,
) -> Result<StageOutcome> {
    let record = read_record(&stage.dir);
    let resume = match &record {
        Some(r) if r.key == stage.key && r.done => {
            progress.println(format!("{header}: cached ({:.0} s when it ran): {}", r.seconds, stage.dir.display()));
            return Ok(StageOutcome {
                stage: stage.name.clone(),
                dir: stage.dir.clone(),
                seconds: r.seconds,
                cached: true,
                summary: r.summary.clone(),
            });
        }
        Some(r) if r.key == stage.key => true,
        _ => {
            if stage.dir.exists() {
                progress.println(format!(
                    "{header}: {} was made with other settings (another demo recipe or other inputs); removing it and redoing the stage",
                    stage.dir.display()
                ));
                std::fs::remove_dir_all(&stage.dir).with_context(|| format!("removing the stale stage {}", stage.dir.display()))?;
            }
            false
        }
    };
    progress.println(format!("{header}{}", if resume { " (resuming)" } else { "" }));
    write_record(&stage.dir, &StageRecord { key: stage.key.clone(), done: false, seconds: 0.0, summary: Value::Null })?;
    let t = std::time::Instant::now();
    let summary = train(resume)?;
    let seconds = t.elapsed().as_secs_f64();
    write_record(&stage.dir, &StageRecord { key: stage.key.clone(), done: true, seconds, summary: summary.clone() })?;
    progress.println(format!("      {:.0} s", seconds));
    Ok(StageOutcome { stage: stage.name.clone(), dir: stage.dir.clone(), seconds, cached: false, summary })
}
