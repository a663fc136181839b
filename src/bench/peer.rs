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

/// The peer workload (a key of `ort_dense.py --bench`'s JSON) that our `(workload, batch)` is
/// compared with: RT sentences only at batch 1 (`a_b1`) and 32 (`b_b32` in order,
/// `c_b32_sorted` length-sorted; the script runs its workloads b and c at one batch size, 32),
/// synthetic lengths at every batch size the bench passes it (`d_T128_b8`, ...); `None`: the peer
/// has no such workload.
pub fn peer_workload(workload: &str, batch: usize) -> Option<String> {
    match (workload, batch) {
        ("rt", 1) => Some("a_b1".into()),
        ("rt", 32) => Some("b_b32".into()),
        ("rt-sorted", 32) => Some("c_b32_sorted".into()),
        (w, b) if w.starts_with('T') => Some(format!("d_{w}_b{b}")),
        _ => None,
    }
}

/// The peer's Python as [`find_python`] chose it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PeerPython {
    /// The interpreter to run.
    pub(super) path: PathBuf,
    /// Every candidate looked at, in order, each with what was found (`(unset)`, `(absent)`,
    /// `(used)`); the last is the one used.
    pub(super) looked_for: Vec<String>,
}

/// The relative interpreter paths tried after `$STTABT_PEER_PYTHON`, in order (from the current
/// directory); `python3` from `PATH` comes last.
pub(super) const VENV_CANDIDATES: [&str; 2] = ["./.venv-peer/bin/python", "../.venv-peer/bin/python"];

/// The peer's Python: `given` (`--python`), else `env` (`$STTABT_PEER_PYTHON`, when set and not
/// empty), else the first of [`VENV_CANDIDATES`] that exists, else `python3` from `PATH`.
/// `exists` says whether a path exists (a parameter so that the search can be tested).
pub(super) fn find_python_with(given: Option<&Path>, env: Option<&std::ffi::OsStr>, exists: &dyn Fn(&Path) -> bool) -> PeerPython {
    let mut looked_for = Vec::new();
    let used = |p: PathBuf, mut looked_for: Vec<String>, what: String| {
        looked_for.push(format!("{what} (used)"));
        PeerPython { path: p, looked_for }
    };
    match given {
        Some(p) => return used(p.to_path_buf(), looked_for, format!("--python {}", p.display())),
        None => looked_for.push("--python (not given)".into()),
    }
    match env {
        Some(v) if !v.is_empty() => return used(PathBuf::from(v), looked_for, format!("$STTABT_PEER_PYTHON={}", Path::new(v).display())),
        Some(_) => looked_for.push("$STTABT_PEER_PYTHON (empty)".into()),
        None => looked_for.push("$STTABT_PEER_PYTHON (unset)".into()),
    }
    for c in VENV_CANDIDATES {
        if exists(Path::new(c)) {
            return used(PathBuf::from(c), looked_for, c.to_string());
        }
        looked_for.push(format!("{c} (absent)"));
    }
    used(PathBuf::from("python3"), looked_for, "python3 from PATH".into())
}

/// [`find_python_with`] on `--python` (`opts.python`), the environment and the file system.
pub(super) fn find_python(opts: &BenchOptions) -> PeerPython {
    let env = std::env::var_os("STTABT_PEER_PYTHON");
    find_python_with(opts.python.as_deref(), env.as_deref(), &|p| p.exists())
}

/// Why an interpreter run failed, in a few words: the last line it printed on stderr (else
/// stdout), else its exit status and that it printed nothing.
pub(super) fn failure_reason(out: &std::process::Output) -> String {
    let last = |b: &[u8]| String::from_utf8_lossy(b).lines().map(str::trim).rfind(|l| !l.is_empty()).map(str::to_string);
    if let Some(l) = last(&out.stderr).or_else(|| last(&out.stdout)) {
        return l;
    }
    match out.status.code() {
        Some(c) => format!("the interpreter exited with status {c} and printed nothing"),
        None => format!("the interpreter was stopped ({}) and printed nothing", out.status),
    }
}

/// Check that the peer's Python runs and imports the peer's packages; `Ok(sys.executable)`, the
/// interpreter that will run the peer, as that Python names itself.
///
/// Errors (each naming the interpreter, and every candidate looked for with which one was
/// used): it cannot be started, it fails to import numpy / onnx / onnxruntime / safetensors /
/// tokenizers (the reason: its last line of output, or its exit status when it printed nothing).
pub(super) fn check_python(py: &PeerPython) -> anyhow::Result<String> {
    let looked = || format!("looked for, in order: {}", py.looked_for.join(", "));
    let out = std::process::Command::new(&py.path)
        .args(["-c", "import numpy, onnx, onnxruntime, safetensors, tokenizers, sys; print(sys.executable)"])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run the peer's Python {}: {e} ({}); pass --python PATH", py.path.display(), looked()))?;
    anyhow::ensure!(
        out.status.success(),
        "the peer's Python {} cannot import its packages ({}); {}; pass --python PATH to one that has them (pip install numpy onnx onnxruntime safetensors tokenizers) or set STTABT_PEER_PYTHON",
        py.path.display(),
        failure_reason(&out),
        looked()
    );
    let exe = String::from_utf8_lossy(&out.stdout).lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("").to_string();
    // an embedded or odd interpreter may leave sys.executable empty: then name it as it was found
    Ok(if exe.is_empty() { format!("{} (its sys.executable is empty)", py.path.display()) } else { exe })
}

/// One run of `ort_dense.py --bench` (fp32, or `--int8` for the `ort-int8` peer) on the same
/// sentences, threads, lengths and batch sizes; `(peer workload key, median examples/s over its
/// passes)`, run by the interpreter `py` ([`find_python`]). The ONNX graph is cached in `dir`
/// between rounds.
pub(super) fn run_peer(opts: &BenchOptions, py: &Path, sentences: &[String], dir: &Path) -> anyhow::Result<Vec<(String, f64)>> {
    let script = peer_script(opts);
    anyhow::ensure!(script.exists(), "peer script {} not found (--peer-script)", script.display());
    std::fs::create_dir_all(dir)?;
    let sent = dir.join("sentences.txt");
    let text: String = sentences.iter().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ") + "\n").collect();
    std::fs::write(&sent, text)?;
    let json = dir.join("ort.json");
    let _ = std::fs::remove_file(&json);
    let threads = rayon::current_num_threads();
    let lengths: Vec<String> = opts.lengths.iter().map(|l| l.to_string()).collect();
    let batches: Vec<String> = opts.batches.iter().map(|l| l.to_string()).collect();
    let mut cmd = std::process::Command::new(py);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn peer_workloads_exist_for_rt_at_1_and_32_and_every_synthetic_batch() {
        assert_eq!(peer_workload("rt", 1).as_deref(), Some("a_b1"));
        assert_eq!(peer_workload("rt", 32).as_deref(), Some("b_b32"));
        assert_eq!(peer_workload("rt-sorted", 32).as_deref(), Some("c_b32_sorted"));
        assert_eq!(peer_workload("T128", 8).as_deref(), Some("d_T128_b8"));
        assert_eq!(peer_workload("rt", 8), None);
        assert_eq!(peer_workload("rt-sorted", 8), None);
        assert_eq!(peer_workload("rt-sorted", 1), None);
    }

    #[test]
    fn python_search_order_and_candidates() {
        let none = |_: &Path| false;
        let p = find_python_with(Some(Path::new("/opt/py")), Some(OsStr::new("/env/py")), &none);
        assert_eq!(p.path, PathBuf::from("/opt/py"));
        assert_eq!(p.looked_for, vec!["--python /opt/py (used)"]);
        let p = find_python_with(None, Some(OsStr::new("/env/py")), &none);
        assert_eq!(p.path, PathBuf::from("/env/py"));
        assert_eq!(p.looked_for, vec!["--python (not given)", "$STTABT_PEER_PYTHON=/env/py (used)"]);
        let parent = |q: &Path| q == Path::new("../.venv-peer/bin/python");
        let p = find_python_with(None, Some(OsStr::new("")), &parent);
        assert_eq!(p.path, PathBuf::from("../.venv-peer/bin/python"));
        assert_eq!(
            p.looked_for,
            vec![
                "--python (not given)",
                "$STTABT_PEER_PYTHON (empty)",
                "./.venv-peer/bin/python (absent)",
                "../.venv-peer/bin/python (used)"
            ]
        );
        let p = find_python_with(None, None, &none);
        assert_eq!(p.path, PathBuf::from("python3"));
        assert_eq!(
            p.looked_for,
            vec![
                "--python (not given)",
                "$STTABT_PEER_PYTHON (unset)",
                "./.venv-peer/bin/python (absent)",
                "../.venv-peer/bin/python (absent)",
                "python3 from PATH (used)"
            ]
        );
    }

    #[test]
    fn silent_failure_names_the_exit_status() {
        use std::os::unix::process::ExitStatusExt;
        let out = |raw: i32, stdout: &str, stderr: &str| std::process::Output {
            status: std::process::ExitStatus::from_raw(raw),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        };
        assert_eq!(failure_reason(&out(1 << 8, "", "")), "the interpreter exited with status 1 and printed nothing");
        assert_eq!(failure_reason(&out(3 << 8, "", "\n  \n")), "the interpreter exited with status 3 and printed nothing");
        assert_eq!(
            failure_reason(&out(1 << 8, "", "Traceback...\nModuleNotFoundError: No module named 'onnx'\n")),
            "ModuleNotFoundError: No module named 'onnx'"
        );
        assert_eq!(failure_reason(&out(1 << 8, "only stdout\n", "")), "only stdout");
        assert!(failure_reason(&out(9, "", "")).starts_with("the interpreter was stopped"), "{}", failure_reason(&out(9, "", "")));
    }

    #[test]
    fn bin_false_is_reported_with_its_status_and_the_candidates() {
        let py = PeerPython { path: PathBuf::from("/bin/false"), looked_for: vec!["--python /bin/false (used)".into()] };
        let e = check_python(&py).expect_err("/bin/false imports nothing").to_string();
        assert!(e.contains("/bin/false cannot import its packages (the interpreter exited with status 1 and printed nothing)"), "{e}");
        assert!(e.contains("looked for, in order: --python /bin/false (used)"), "{e}");
        let py = PeerPython { path: PathBuf::from("/nonexistent/python"), looked_for: vec!["x (used)".into()] };
        let e = check_python(&py).expect_err("no such interpreter").to_string();
        assert!(e.contains("cannot run the peer's Python /nonexistent/python") && e.contains("looked for, in order: x (used)"), "{e}");
    }
}
