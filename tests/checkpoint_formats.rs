//! Every checkpoint format of issue #18 reads to the same tensors, and bad checkpoints give the
//! named errors. Fixtures: `tests/fixtures/families/<family>/{,bin,sharded,bin-sharded,f16,bf16}/`
//! (written by `tools/fixtures/make_family_fixtures.py`): the f32 `model.safetensors` at the top is
//! the reference; `.bin` and sharded copies must be bit-equal to it, f16/bf16 copies equal to it
//! rounded to nearest-even in that type.

mod common;

use std::path::{Path, PathBuf};

use common::TempDir;
use sttabt::model::checkpoint::TensorStore;
use sttabt::ModelError;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families").join(rel)
}

fn read(dir: &Path) -> TensorStore {
    TensorStore::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn read_err(dir: &Path) -> ModelError {
    match std::panic::catch_unwind(|| TensorStore::read_dir(dir)) {
        Ok(Ok(_)) => panic!("{} read, but an error was expected", dir.display()),
        Ok(Err(e)) => e,
        Err(_) => panic!("TensorStore::read_dir({}) panicked instead of returning an error", dir.display()),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message {msg:?} does not mention {p:?}");
    }
}

/// `other` has exactly `base`'s float tensors, each value equal to `round(base value)` bit for bit.
fn assert_same_tensors(base: &TensorStore, other: &TensorStore, round: fn(f32) -> f32, what: &str) {
    assert_eq!(base.names(), other.names(), "{what}: tensor names");
    for name in base.names() {
        let shape = base.shape(&name).unwrap();
        assert_eq!(other.shape(&name).as_ref(), Some(&shape), "{what}: shape of {name}");
        let a = base.get(&name, &shape).unwrap();
        let b = other.get(&name, &shape).unwrap();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(round(*x).to_bits(), y.to_bits(), "{what}: {name}[{i}]: f32 {x} -> expected {}, read {y}", round(*x));
        }
    }
}

fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

fn bf16_round(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// A fixture folder copied into a fresh temporary directory (files only), to be damaged.
fn copy_of(rel: &str) -> TempDir {
    let dir = TempDir::new("ckpt-formats");
    for entry in std::fs::read_dir(fixture(rel)).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

#[test]
fn every_format_reads_the_same_tensors() {
    // (family, float tensors, variants that must be bit-equal)
    let families: [(&str, usize, &[&str]); 3] =
        [("distilbert", 40, &["bin", "sharded", "bin-sharded"]), ("roberta", 41, &["bin", "sharded"]), ("bert", 41, &["bin"])];
    for (family, count, exact) in families {
        let base = read(&fixture(family));
        assert_eq!(base.names().len(), count, "{family}: float tensors in model.safetensors");
        for v in exact {
            let what = format!("{family}/{v}");
            assert_same_tensors(&base, &read(&fixture(&what)), |x| x, &what);
        }
        if family != "bert" {
            assert_same_tensors(&base, &read(&fixture(&format!("{family}/f16"))), f16_round, &format!("{family}/f16"));
            assert_same_tensors(&base, &read(&fixture(&format!("{family}/bf16"))), bf16_round, &format!("{family}/bf16"));
        }
    }
}

#[test]
fn half_precision_copies_really_are_rounded() {
    // guards the test above against fixtures that were written in f32 by mistake
    let base = read(&fixture("distilbert"));
    let name = "distilbert.transformer.layer.0.ffn.lin1.weight";
    let a = base.get(name, &[64, 32]).unwrap();
    for (v, round) in [("f16", f16_round as fn(f32) -> f32), ("bf16", bf16_round)] {
        let b = read(&fixture(&format!("distilbert/{v}"))).get(name, &[64, 32]).unwrap();
        let changed = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert!(changed > a.len() / 2, "{v}: only {changed} of {} values differ from f32", a.len());
        let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / x.abs().max(1e-3)).fold(0.0, f32::max);
        let bound = if v == "f16" { 2f32.powi(-11) } else { 2f32.powi(-8) };
        assert!(err <= bound, "{v}: relative rounding error {err} > {bound}");
        assert!(a.iter().zip(&b).all(|(x, y)| round(*x) == *y));
    }
}

#[test]
fn integer_buffers_are_kept_aside_in_every_format() {
    // roberta's checkpoints carry the int64 `embeddings.position_ids` buffer: not a weight
    for v in ["", "bin", "sharded", "f16", "bf16"] {
        let store = read(&fixture(&format!("roberta/{v}")));
        assert!(!store.contains("roberta.embeddings.position_ids"), "{v}: position_ids read as a float tensor");
        let e = store.get("roberta.embeddings.position_ids", &[1, 66]).unwrap_err();
        assert!(matches!(&e, ModelError::Dtype { dtype, .. } if dtype == "I64"), "{v}: {e:?}");
    }
}

#[test]
fn safetensors_is_preferred_over_bin() {
    // transformers' order: a directory with both reads model.safetensors (the .bin here is junk)
    let dir = copy_of("distilbert");
    std::fs::write(dir.path().join("pytorch_model.bin"), b"junk").unwrap();
    let store = read(dir.path());
    assert!(store.path.ends_with("model.safetensors"), "{}", store.path.display());
    assert_same_tensors(&read(&fixture("distilbert")), &store, |x| x, "both present");
}

// ---------------------------------------------------------------------------------------------
// Bad checkpoints

#[test]
fn missing_safetensors_shard_is_named() {
    let dir = copy_of("distilbert/sharded");
    std::fs::remove_file(dir.path().join("model-00002-of-00003.safetensors")).unwrap();
    let e = read_err(dir.path());
    assert!(matches!(&e, ModelError::MissingFile { path, .. } if path.ends_with("model-00002-of-00003.safetensors")), "{e:?}");
    assert_mentions(&e.to_string(), &["model-00002-of-00003.safetensors", "model.safetensors.index.json", "not found"]);
}

#[test]
fn missing_bin_shard_is_named() {
    let dir = copy_of("distilbert/bin-sharded");
    std::fs::remove_file(dir.path().join("pytorch_model-00001-of-00002.bin")).unwrap();
    let e = read_err(dir.path());
    assert!(matches!(&e, ModelError::MissingFile { path, .. } if path.ends_with("pytorch_model-00001-of-00002.bin")), "{e:?}");
    assert_mentions(&e.to_string(), &["pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json"]);
}

fn patch_index(dir: &Path, file: &str, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join(file);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(v["weight_map"].as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn index_naming_an_absent_tensor() {
    let index = "model.safetensors.index.json";
    // a tensor no shard holds
    let dir = copy_of("roberta/sharded");
    patch_index(dir.path(), index, |m| {
        m.insert("roberta.pooler.dense.weight".into(), "model-00001-of-00003.safetensors".into());
    });
    let e = read_err(dir.path());
    assert!(matches!(&e, ModelError::Checkpoint { path, .. } if path.ends_with(index)), "{e:?}");
    assert_mentions(&e.to_string(), &[index, "roberta.pooler.dense.weight", "model-00001-of-00003.safetensors", "does not hold it"]);
    // a real tensor put in the wrong shard
    let dir = copy_of("roberta/sharded");
    let mut moved = String::new();
    patch_index(dir.path(), index, |m| {
        let (name, _) = m.iter().find(|(_, f)| f.as_str() == Some("model-00003-of-00003.safetensors")).unwrap();
        moved = name.clone();
        m.insert(moved.clone(), "model-00001-of-00003.safetensors".into());
    });
    let e = read_err(dir.path());
    assert!(matches!(&e, ModelError::Checkpoint { .. }), "{e:?}");
    assert_mentions(&e.to_string(), &[&moved, "model-00001-of-00003.safetensors"]);
    // the same for a .bin index
    let dir = copy_of("distilbert/bin-sharded");
    patch_index(dir.path(), "pytorch_model.bin.index.json", |m| {
        m.insert("distilbert.extra.weight".into(), "pytorch_model-00002-of-00002.bin".into());
    });
    let e = read_err(dir.path());
    assert!(matches!(&e, ModelError::Checkpoint { .. }), "{e:?}");
    assert_mentions(&e.to_string(), &["pytorch_model.bin.index.json", "distilbert.extra.weight", "pytorch_model-00002-of-00002.bin"]);
}

#[test]
fn invalid_shard_index() {
    let index = "model.safetensors.index.json";
    let cases: [(&str, &[&str]); 4] = [
        ("{ broken", &["invalid JSON"]),
        (r#"{"metadata": {}}"#, &["weight_map"]),
        (r#"{"weight_map": {}}"#, &["lists no tensors"]),
        (r#"{"weight_map": {"a.weight": "../model-00001-of-00003.safetensors"}}"#, &["a.weight", "not a file name"]),
    ];
    for (text, parts) in cases {
        let dir = copy_of("distilbert/sharded");
        std::fs::write(dir.path().join(index), text).unwrap();
        let e = read_err(dir.path());
        assert!(matches!(&e, ModelError::Checkpoint { path, .. } if path.ends_with(index)), "{text}: {e:?}");
        assert_mentions(&e.to_string(), parts);
    }
}

#[test]
fn truncated_shard_is_named() {
    let dir = copy_of("distilbert/sharded");
    let p = dir.path().join("model-00003-of-00003.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let e = read_err(dir.path());
    assert!(matches!(&e, ModelError::Truncated { path, .. } if path.ends_with("model-00003-of-00003.safetensors")), "{e:?}");
}

#[test]
fn bin_that_is_not_a_torch_file() {
    let bin = "pytorch_model.bin";
    let mut rng = fastrand::Rng::with_seed(18);
    let junk: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    let safetensors = std::fs::read(fixture("distilbert/model.safetensors")).unwrap();
    let zip = std::fs::read(fixture("distilbert/bin/pytorch_model.bin")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("random bytes", junk, &["not a PyTorch checkpoint", "neither a torch.save zip archive nor the legacy pickle format"]),
        ("empty", Vec::new(), &["not a PyTorch checkpoint"]),
        ("a safetensors file", safetensors, &["safetensors file", "model.safetensors"]),
        ("a zip cut in half", zip[..zip.len() / 2].to_vec(), &["torch.save"]),
        ("text", b"not really a pickle".to_vec(), &["not a PyTorch checkpoint"]),
    ];
    for (what, bytes, parts) in cases {
        let dir = copy_of("distilbert/bin");
        std::fs::write(dir.path().join(bin), &bytes).unwrap();
        let e = read_err(dir.path());
        assert!(matches!(&e, ModelError::Checkpoint { path, .. } if path.ends_with(bin)), "{what}: {e:?}");
        let msg = e.to_string();
        assert_mentions(&msg, &[bin]);
        assert_mentions(&msg, parts);
    }
}

#[test]
fn git_lfs_pointer_saved_as_bin() {
    let dir = copy_of("distilbert/bin");
    let pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146b4bd8d2c9e5b1b1a1e2f6c11e0c4b7e3f4ad6d0c0f3a9b5e2a7c1d00\nsize 267967963\n";
    std::fs::write(dir.path().join("pytorch_model.bin"), pointer).unwrap();
    let e = read_err(dir.path());
    assert!(
        matches!(&e, ModelError::LfsPointer { path, size, .. } if path.ends_with("pytorch_model.bin") && *size == pointer.len() as u64),
        "{e:?}"
    );
    assert_mentions(&e.to_string(), &["pytorch_model.bin", "Git LFS pointer", "267967963 bytes"]);
}

#[test]
fn no_weights_at_all() {
    let dir = copy_of("distilbert/sharded");
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().contains("safetensors") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let e = read_err(dir.path());
    assert!(matches!(&e, ModelError::MissingFile { path, .. } if path.ends_with("model.safetensors")), "{e:?}");
    assert_mentions(&e.to_string(), &["model.safetensors", "sharded safetensors", "PyTorch .bin"]);
}
