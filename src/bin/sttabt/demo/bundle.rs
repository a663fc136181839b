//! The demo's closing bundle: the setting its speed stage chose (the fastest within 1 point of
//! dense on dev) written as an `sttabt compress`-style bundle (teacher, ApproxNet when the planner
//! plans from one, the planner's settings), so that `sttabt classify --bundle RUN/bundle TEXT`,
//! `eval --bundle` and `bench --bundle` use it without the user retyping its flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use sttabt::compress::bundle;

use super::speed::{DemoModels, SpeedReport};

/// Write the chosen setting of `speed` as a bundle in `dir` (replacing an older one there).
/// Returns `Ok(None)` (and writes nothing) when no pruned setting was chosen.
///
/// Errors: a model folder cannot be read, or a file cannot be written.
pub(crate) fn write(speed: &SpeedReport, models: &DemoModels, dir: &Path) -> Result<Option<PathBuf>> {
    let Some(t) = speed.chosen.map(|i| &speed.timed[i]) else {
        return Ok(None);
    };
    let p = &t.point;
    // only the folders are needed, and they are the same at every precision (an int8 point's
    // teacher is its fp32 teacher's folder, calibrated when loaded): look them up as fp32, so
    // that the int8 copies (made only when the speed stage runs) are not needed here
    let fp32 = sttabt::eval::Point { precision: sttabt::model::Precision::Fp32, ..p.clone() };
    let Some(run) = models.run_of(&fp32) else {
        return Ok(None);
    };
    // bundle.json is written last: remove the old one first, so a half-written bundle never loads
    let _ = std::fs::remove_file(dir.join("bundle.json"));
    bundle::link_or_copy_dir(&run.teacher_dir, &dir.join("teacher"))?;
    sttabt::train::copy_preprocessing_files(models.teacher_dir, &dir.join("teacher"))?;
    let approx = match run.approx_dir.filter(|_| p.mode.needs_approx()) {
        Some(src) => {
            bundle::link_or_copy_dir(&src, &dir.join("approx"))?;
            Some("approx".to_string())
        }
        None => None,
    };
    // the stage records describe the demo's run directories, not the bundle
    for sub in ["teacher", "approx"] {
        let _ = std::fs::remove_file(dir.join(sub).join(super::stages::RECORD));
    }
    let summary = format!(
        "{}: dev {:.2}% (dense {:.2}%), test {:.2}% (dense {:.2}%), {:.1}% retention; {:.2}x dense at batch 1, {:.2}x at batch 32 (the demo's speed stage)",
        p.label,
        p.dev_accuracy * 100.0,
        speed.dense_dev_accuracy * 100.0,
        p.test_accuracy * 100.0,
        speed.dense_test_accuracy * 100.0,
        p.retention * 100.0,
        t.b1.vs_dense,
        t.b32.vs_dense
    );
    let readme = format!(
        "# sttabt bundle (from `sttabt demo`)\n\nTask: sentiment of Rotten Tomatoes sentences, labels {:?} (all-MiniLM-L6-v2 fine-tuned by the demo).\n\n{summary}\n\n{}\n\nThe speed-ups are the demo's own speed stage ({} alternating rounds against dense on {} test sentences, median), on {}; the demo does not control what else the machine was doing, so re-measure with `sttabt bench --bundle DIR` on an idle machine.\n\nUse it with `sttabt classify --bundle DIR TEXT`, `sttabt eval --bundle DIR`, `sttabt bench --bundle DIR`.\n",
        models.teacher.config.labels,
        speed.sentence,
        speed.settings.rounds,
        speed.settings.examples,
        sttabt::eval::machine_line()
    );
    sttabt::model::checkpoint::write_atomic(&dir.join("README.md"), readme.as_bytes())?;
    let manifest = bundle::Manifest {
        format: bundle::FORMAT.into(),
        version: bundle::VERSION,
        sttabt_version: env!("CARGO_PKG_VERSION").into(),
        teacher: "teacher".into(),
        approx,
        planner: p.mode.clone(),
        label: p.label.clone(),
        summary,
        precision: p.precision,
    };
    bundle::write_manifest(dir, &manifest).with_context(|| format!("writing the demo's bundle in {}", dir.display()))?;
    Ok(Some(dir.to_path_buf()))
}
