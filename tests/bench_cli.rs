//! `sttabt bench` through the command line: a bad `--json PATH` fails before anything is loaded
//! or timed, with an error naming `--json` and the problem, and missing parent directories are
//! created up front. (The model path given is one that does not exist: the error must be the
//! `--json` one, proving the check comes first.)

mod common;

use std::path::Path;
use std::process::Command;

use common::TempDir;

/// Run the binary: (success, stdout, stderr).
fn sttabt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sttabt")).args(args).output().expect("run sttabt");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Run the binary, expecting a clean failure whose message contains every one of `parts` and
/// none of `absent`; returns stderr.
fn expect_error(args: &[&str], parts: &[&str], absent: &[&str]) -> String {
    let (ok, stdout, stderr) = sttabt(args);
    assert!(!ok, "sttabt {args:?} should fail, printed:\n{stdout}");
    assert!(!stderr.contains("panicked"), "sttabt {args:?} panicked:\n{stderr}");
    assert!(stderr.starts_with("error:"), "sttabt {args:?}: no error line:\n{stderr}");
    assert!(stdout.is_empty(), "sttabt {args:?}: printed a report before failing:\n{stdout}");
    for p in parts {
        assert!(stderr.contains(p), "sttabt {args:?}: error lacks {p:?}:\n{stderr}");
    }
    for a in absent {
        assert!(!stderr.contains(a), "sttabt {args:?}: error mentions {a:?}:\n{stderr}");
    }
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// Flags of a short run on a model directory that does not exist.
fn bench_args<'a>(model: &'a str, json: &'a str) -> Vec<&'a str> {
    vec!["bench", "--model", model, "--rt", "4", "--lengths", "16", "--batches", "1", "--rounds", "1", "--no-memory", "--json", json]
}

#[test]
fn json_under_a_file_fails_before_anything_runs() {
    let dir = TempDir::new("bench-json-file");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let model = dir.path().join("no-model");
    let json = file.join("sub").join("bench.json");
    let stderr = expect_error(
        &bench_args(s(&model), s(&json)),
        &["--json", &format!("{} is a file, not a directory", file.display())],
        &["no-model", "bench round"],
    );
    assert_eq!(stderr.lines().count(), 1, "one error line:\n{stderr}");
    // the file is left alone
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn json_that_is_a_directory_fails_before_anything_runs() {
    let dir = TempDir::new("bench-json-dir");
    let model = dir.path().join("no-model");
    expect_error(&bench_args(s(&model), s(dir.path())), &["--json", "is a directory", "bench.json"], &["no-model", "bench round"]);
}

#[test]
fn missing_json_parents_are_created_up_front() {
    let dir = TempDir::new("bench-json-parents");
    let model = dir.path().join("no-model");
    let parent = dir.path().join("a").join("b");
    let json = parent.join("bench.json");
    // the run fails on the missing model, after the --json check made its directory
    expect_error(&bench_args(s(&model), s(&json)), &["no-model"], &["--json"]);
    assert!(parent.is_dir(), "{} was not created", parent.display());
    assert!(!json.exists(), "no report was written");
}
