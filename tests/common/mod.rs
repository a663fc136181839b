//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use sttabt::BertModel;

/// `../shared/reference` (or `$STTABT_REFERENCE_DIR`).
pub fn reference_dir() -> PathBuf {
    std::env::var_os("STTABT_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference")))
}

pub fn read_json(path: PathBuf) -> serde_json::Value {
    let s = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The real all-MiniLM-L6-v2 checkpoint in the asset cache. Panics with the fix if absent:
/// CI fetches it in `.ci/run`.
pub fn minilm_dir() -> PathBuf {
    let d = sttabt::assets::default_model_dir();
    assert!(
        d.join("model.safetensors").exists(),
        "all-MiniLM-L6-v2 is not in the asset cache ({}); run scripts/fetch-assets first",
        d.display()
    );
    d
}

pub fn minilm() -> &'static BertModel {
    static M: OnceLock<BertModel> = OnceLock::new();
    M.get_or_init(|| BertModel::load(&minilm_dir()).expect("load all-MiniLM-L6-v2"))
}

pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    let mut out = Vec::new();
    flatten(v, &mut out);
    out
}

fn flatten(v: &serde_json::Value, out: &mut Vec<f32>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        serde_json::Value::Number(n) => out.push(n.as_f64().expect("number") as f32),
        other => panic!("expected numbers, found {other}"),
    }
}

pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("int") as u32).collect()
}

/// Largest absolute difference; panics on length mismatch.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
