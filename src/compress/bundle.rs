//! A compressed-model bundle: one directory with the teacher (Hugging Face layout), its
//! ApproxNet, the chosen planner's settings and the table it was chosen from, written by
//! `sttabt compress` and loaded by `classify`, `eval` and `bench` with `--bundle DIR`.
//!
//! Layout: `bundle.json` ([`Manifest`], written last, so a bundle whose writing stopped half way
//! does not load), `teacher/`, `approx/` (absent when the planner needs none), `table.json`,
//! `table.txt`, `README.md`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::infer::Mode;

/// `format` of every bundle's `bundle.json`.
pub const FORMAT: &str = "sttabt-bundle";
/// The bundle layout this build writes and reads; a bundle of another version is refused.
pub const VERSION: u32 = 1;

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The layout version ([`VERSION`]).
    pub version: u32,
    /// The sttabt version that wrote it.
    pub sttabt_version: String,
    /// The teacher's folder, relative to the bundle (`teacher`).
    pub teacher: String,
    /// The ApproxNet's folder (`approx`), when the planner plans from one.
    pub approx: Option<String>,
    /// The chosen planner ([`Mode`], serialised with its `mode` tag).
    pub planner: Mode,
    /// Its table label.
    pub label: String,
    /// One line: what was chosen, its dev accuracy and retention, its speed-up.
    pub summary: String,
    /// The precision of the teacher's linear layers the setting was chosen at (`classify`,
    /// `eval` and `bench --bundle` run it so unless `--precision` says otherwise); fp32 when
    /// absent (bundles written before it was recorded).
    #[serde(default)]
    pub precision: crate::model::Precision,
}

/// A bundle opened by [`open`]: its manifest and the folders to load.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// `dir/teacher`.
    pub teacher_dir: PathBuf,
    /// `dir/approx`, when the bundle has one.
    pub approx_dir: Option<PathBuf>,
}

/// Open the bundle in `dir`: read and check `bundle.json` and that the folders it names exist.
///
/// Errors (each naming the path and the fix): `dir` is not a directory; no `bundle.json`;
/// `bundle.json` is not valid JSON or lacks a field; another format or version; a named folder
/// is missing; the planner needs an ApproxNet the bundle lacks.
pub fn open(dir: &Path) -> anyhow::Result<Bundle> {
    let rerun = "write a new one with `sttabt compress --out DIR`";
    if dir.is_file() {
        bail!("--bundle {}: is a file, not a directory; give a bundle directory written by `sttabt compress --out DIR`", dir.display());
    }
    if !dir.is_dir() {
        bail!("--bundle {}: no such directory; give a bundle directory written by `sttabt compress --out DIR`", dir.display());
    }
    let path = dir.join("bundle.json");
    if !path.is_file() {
        bail!("{} has no bundle.json, so it is not a bundle (or its writing did not finish); {rerun}", dir.display());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not valid JSON ({e}): the bundle is damaged; {rerun}", path.display()))?;
    let format = v.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if format != FORMAT {
        bail!("{} is not an sttabt bundle manifest (format {format:?}, expected {FORMAT:?}); {rerun}", path.display());
    }
    let version = v.get("version").and_then(|x| x.as_u64());
    if version != Some(u64::from(VERSION)) {
        let by = v.get("sttabt_version").and_then(|x| x.as_str()).unwrap_or("an unknown version");
        bail!(
            "{} is bundle version {} (written by sttabt {by}); this sttabt ({}) reads version {VERSION}; {rerun}",
            path.display(),
            version.map(|x| x.to_string()).unwrap_or_else(|| "missing".into()),
            env!("CARGO_PKG_VERSION")
        );
    }
    let manifest: Manifest = serde_json::from_value(v).map_err(|e| {
        anyhow::anyhow!("{}: {e} (a field is missing or has the wrong type: the bundle is damaged); {rerun}", path.display())
    })?;
    let sub = |name: &str, what: &str| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        if !p.join("config.json").is_file() {
            bail!("{}: the bundle's {what} folder {} has no config.json; {rerun}", path.display(), p.display());
        }
        Ok(p)
    };
    let teacher_dir = sub(&manifest.teacher, "teacher")?;
    let approx_dir = manifest.approx.as_deref().map(|a| sub(a, "ApproxNet")).transpose()?;
    if manifest.planner.needs_approx() && approx_dir.is_none() {
        bail!("{}: planner {} needs an ApproxNet, but the bundle names none; {rerun}", path.display(), manifest.label);
    }
    Ok(Bundle { dir: dir.to_path_buf(), manifest, teacher_dir, approx_dir })
}

/// Put the regular files of checkpoint folder `src` (not its sub-folders, e.g. training
/// checkpoints) into `dst`: hard links where the file system allows, else copies.
///
/// Errors: `src` cannot be read, or a file cannot be linked or copied.
pub fn link_or_copy_dir(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let to = dst.join(entry.file_name());
        let _ = std::fs::remove_file(&to);
        if std::fs::hard_link(entry.path(), &to).is_err() {
            std::fs::copy(entry.path(), &to).with_context(|| format!("copying {} to {}", entry.path().display(), to.display()))?;
        }
    }
    Ok(())
}

/// Write the manifest as `dir/bundle.json` (atomically; the last file of a bundle).
///
/// Errors: the file cannot be written.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(manifest)?;
    crate::model::checkpoint::write_atomic(&dir.join("bundle.json"), text.as_bytes())?;
    Ok(())
}
