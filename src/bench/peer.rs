//! The ONNX Runtime dense peer (`../shared/peers/ort_dense.py`): locating it and running it on
//! the same sentences.

use super::*;

/// The peer script: `--peer-script`, else `../shared/peers/ort_dense.py` from the current
/// directory (the repository root), else beside the source tree this binary was built from.
pub(super) fn peer_script(opts: &BenchOptions) -> PathBuf {
    if let Some(p) = &opts.peer_script {
        return p.clone();
    }
    let rel = PathBuf::from("../shared/peers/ort_dense.py");
    if rel.exists() {
        return rel;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/ort_dense.py");
    if built.exists() {
        built
    } else {
        rel
    }
}

pub(super) fn default_python() -> PathBuf {
    if let Ok(p) = std::env::var("STTABT_PEER_PYTHON") {
        return PathBuf::from(p);
    }
    for c in [".venv-peer/bin/python", "../.venv-peer/bin/python"] {
        if Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    PathBuf::from("python3")
}

/// One run of `ort_dense.py --bench` (fp32, or `--int8` for the `ort-int8` peer) on the same
/// sentences, threads, lengths and batch sizes; `(peer workload key, median examples/s over its
/// passes)`. The ONNX graph is cached in `dir` between rounds.
pub(super) fn run_peer(opts: &BenchOptions, sentences: &[String], dir: &Path) -> anyhow::Result<Vec<(String, f64)>> {
    let script = peer_script(opts);
    anyhow::ensure!(script.exists(), "peer script {} not found (--peer-script)", script.display());
    let py = opts.python.clone().unwrap_or_else(default_python);
    std::fs::create_dir_all(dir)?;
    let sent = dir.join("sentences.txt");
    let text: String = sentences.iter().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ") + "\n").collect();
    std::fs::write(&sent, text)?;
    let json = dir.join("ort.json");
    let _ = std::fs::remove_file(&json);
    let threads = rayon::current_num_threads();
    let lengths: Vec<String> = opts.lengths.iter().map(|l| l.to_string()).collect();
    let batches: Vec<String> = opts.batches.iter().map(|l| l.to_string()).collect();
    let mut cmd = std::process::Command::new(&py);
    cmd.arg(&script)
        .arg("--model")
        .arg(&opts.model)
        .arg("--bench")
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--repeats")
        .arg(opts.repeats.max(1).to_string())
        .arg("--json-out")
        .arg(&json)
        .arg("--onnx-out")
        .arg(dir.join("model.onnx"));
    if opts.peer.as_deref() == Some("ort-int8") {
        cmd.arg("--int8");
    }
    if !sentences.is_empty() {
        cmd.arg("--sentences").arg(&sent).arg("--limit").arg("0");
    }
    if !lengths.is_empty() {
        cmd.arg("--lengths").arg(lengths.join(",")).arg("--synth-batches").arg(batches.join(","));
    }
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e} (pip install onnx onnxruntime numpy safetensors tokenizers)", py.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    anyhow::ensure!(
        out.status.success(),
        "{} exited with {}: {}",
        script.display(),
        out.status,
        lines[lines.len().saturating_sub(5)..].join(" | ")
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let w = v["workloads"].as_object().ok_or_else(|| anyhow::anyhow!("{} wrote no workloads", script.display()))?;
    Ok(w.iter().filter_map(|(k, x)| x["ex_s"]["median"].as_f64().map(|e| (k.clone(), e))).collect())
}
