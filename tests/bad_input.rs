//! Bad input must give a clear [`ModelError`] (right variant, message naming the file / tensor /
//! expected vs found), never a panic.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use common::{random_tensors, tiny_config, write_checkpoint, TempDir};
use sttabt::model::config::EncoderConfig;
use sttabt::plan::{PlanError, SetKind};
use sttabt::{EncodedInput, Encoder, ModelError, RunOptions, TokenPlan};

fn cfg() -> EncoderConfig {
    // L = 2, H = 2, d = 8, d_ff = 16, vocab 10, max positions 12
    tiny_config(2, 2, 4, 16, 10, 12)
}

/// A valid checkpoint directory for `cfg()`.
fn good_checkpoint(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    let c = cfg();
    write_checkpoint(dir.path(), &c, &random_tensors(&c, 7, 1.0));
    dir
}

fn tiny_model() -> Encoder {
    let dir = good_checkpoint("good");
    Encoder::load(dir.path()).expect("a valid tiny checkpoint loads")
}

/// Load without panicking; returns the error (panics with a clear message if it loaded).
fn load_err(dir: &Path) -> ModelError {
    match catch_unwind(|| Encoder::load(dir)) {
        Ok(Ok(_)) => panic!("{} loaded, but an error was expected", dir.display()),
        Ok(Err(e)) => e,
        Err(_) => panic!("Encoder::load({}) panicked instead of returning an error", dir.display()),
    }
}

fn input(ids: &[u32]) -> EncodedInput {
    EncodedInput { ids: ids.to_vec(), type_ids: vec![0; ids.len()], patches: Vec::new() }
}

/// Run without panicking; returns the error.
fn run_err(model: &Encoder, inputs: &[EncodedInput], plans: &[TokenPlan]) -> ModelError {
    match catch_unwind(AssertUnwindSafe(|| model.run(inputs, plans, RunOptions::default()))) {
        Ok(Ok(_)) => panic!("run succeeded, but an error was expected"),
        Ok(Err(e)) => e,
        Err(_) => panic!("Encoder::run panicked instead of returning an error"),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message {msg:?} does not mention {p:?}");
    }
}

/// Write safetensors with some tensors replaced by raw (dtype, bytes).
fn write_mixed(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], raw: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let f32_bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .filter(|(n, _, _)| !raw.iter().any(|(r, ..)| r == n))
        .map(|(n, s, d)| (n.clone(), s.clone(), d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = f32_bytes
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    for (n, dtype, s, b) in raw {
        views.push((n.to_string(), safetensors::tensor::TensorView::new(*dtype, s.clone(), b).unwrap()));
    }
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Files

#[test]
fn missing_model_dir() {
    let dir = TempDir::new("nodir");
    let missing = dir.path().join("does-not-exist");
    let e = load_err(&missing);
    assert!(matches!(e, ModelError::MissingFile { ref path, .. } if path == &missing), "{e:?}");
    assert_mentions(&e.to_string(), &["does-not-exist", "not found"]);
}

#[test]
fn missing_config_json() {
    let dir = good_checkpoint("nocfg");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::MissingFile { ref path, .. } if path.ends_with("config.json")), "{e:?}");
    assert_mentions(&e.to_string(), &["config.json", "not found"]);
}

#[test]
fn an_unfinished_run_says_how_to_finish_it() {
    // a training run stopped before its final model: checkpoint/state.json, no config.json
    let dir = TempDir::new("unfinished");
    std::fs::create_dir_all(dir.path().join("checkpoint")).unwrap();
    std::fs::write(dir.path().join("checkpoint/state.json"), r#"{"format": 2, "step": 1300}"#).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::MissingFile { ref path, .. } if path.ends_with("config.json")), "{e:?}");
    assert_mentions(&e.to_string(), &["unfinished training run", "at step 1300", "--resume"]);
    let teacher = tiny_config(2, 2, 8, 32, 50, 16);
    let e = sttabt::approx::ApproxNet::load(dir.path(), &teacher).unwrap_err();
    assert_mentions(&e.to_string(), &["config.json", "unfinished training run", "at step 1300", "--resume"]);
    // without the checkpoint: the usual hints
    std::fs::remove_dir_all(dir.path().join("checkpoint")).unwrap();
    assert_mentions(&load_err(dir.path()).to_string(), &["a Hugging Face checkpoint directory needs config.json"]);
    let e = sttabt::approx::ApproxNet::load(dir.path(), &teacher).unwrap_err();
    assert_mentions(&e.to_string(), &["an ApproxNet directory written by `sttabt distill` needs config.json"]);
}

#[test]
fn missing_safetensors() {
    let dir = good_checkpoint("nost");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::MissingFile { ref path, .. } if path.ends_with("model.safetensors")), "{e:?}");
    let msg = e.to_string();
    assert_mentions(&msg, &["model.safetensors", "not found"]);
    assert!(!msg.contains("pytorch_model.bin"), "no .bin present, but the hint mentions one: {msg}");
}

#[test]
fn pytorch_bin_that_is_not_a_torch_file() {
    // pytorch_model.bin is read when model.safetensors is absent (more cases in checkpoint_formats.rs)
    let dir = good_checkpoint("bin");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), b"not really a pickle").unwrap();
    let e = load_err(dir.path());
    assert!(matches!(&e, ModelError::Checkpoint { path, .. } if path.ends_with("pytorch_model.bin")), "{e:?}");
    assert_mentions(&e.to_string(), &["pytorch_model.bin", "not a PyTorch checkpoint"]);
}

#[test]
fn corrupt_safetensors_random_bytes() {
    let dir = good_checkpoint("corrupt");
    let mut rng = fastrand::Rng::with_seed(3);
    let junk: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    std::fs::write(dir.path().join("model.safetensors"), junk).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::Safetensors { ref path, .. } if path.ends_with("model.safetensors")), "{e:?}");
    assert_mentions(&e.to_string(), &["model.safetensors", "not a valid safetensors file"]);
}

#[test]
fn corrupt_safetensors_tiny_and_empty() {
    for bytes in [&b""[..], &b"\x01"[..], &[0xffu8; 8][..]] {
        let dir = good_checkpoint("tiny");
        std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
        let e = load_err(dir.path());
        assert!(matches!(e, ModelError::Safetensors { .. }), "{bytes:?}: {e:?}");
    }
    // a 16-byte header of which 7 bytes are present: truncated
    let dir = good_checkpoint("tiny");
    std::fs::write(dir.path().join("model.safetensors"), b"\x10\0\0\0\0\0\0\0{\"a\":1}").unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::Truncated { needed: 24, size: 15, .. }), "{e:?}");
}

#[test]
fn truncated_safetensors() {
    let dir = good_checkpoint("trunc");
    let p = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for cut in [bytes.len() / 2, bytes.len() - 1, 9, header_end - 1, header_end + 4] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_err(dir.path());
        match &e {
            ModelError::Truncated { needed, size, what, .. } => {
                assert_eq!(*size, cut as u64, "cut at {cut}");
                if cut < header_end {
                    assert_eq!(*needed, header_end as u64, "cut at {cut}");
                    assert!(what.starts_with("the header"), "cut at {cut}: {what}");
                } else {
                    // the tensor whose data ends last ends at the end of the file
                    assert_eq!(*needed, bytes.len() as u64, "cut at {cut}");
                    assert!(what.starts_with("tensor '"), "cut at {cut}: {what}");
                }
            }
            other => panic!("cut at {cut}: expected ModelError::Truncated, got {other:?}"),
        }
        assert_mentions(&e.to_string(), &["model.safetensors", "truncated safetensors file", &format!("has only {cut}")]);
    }
}

#[test]
fn git_lfs_pointer_saved_as_safetensors() {
    let dir = good_checkpoint("lfs");
    let pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146b4bd8d2c9e5b1b1a1e2f6c11e0c4b7e3f4ad6d0c0f3a9b5e2a7c1d00\nsize 90868376\n";
    std::fs::write(dir.path().join("model.safetensors"), pointer).unwrap();
    let e = load_err(dir.path());
    assert!(
        matches!(&e, ModelError::LfsPointer { path, size, .. } if path.ends_with("model.safetensors") && *size == pointer.len() as u64),
        "{e:?}"
    );
    assert_mentions(&e.to_string(), &["model.safetensors", "Git LFS pointer", "90868376 bytes", "git lfs pull"]);
}

#[test]
fn pytorch_zip_renamed_to_safetensors() {
    let dir = good_checkpoint("zip");
    let mut bytes = b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec();
    bytes.extend_from_slice(b"archive/data.pkl");
    bytes.resize(4096, 0);
    std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
    let e = load_err(dir.path());
    assert!(matches!(&e, ModelError::PytorchArchive { path } if path.ends_with("model.safetensors")), "{e:?}");
    assert_mentions(&e.to_string(), &["model.safetensors", "PyTorch zip archive", "not a safetensors file", "save_file"]);
}

// ---------------------------------------------------------------------------------------------
// Config

fn patch_config(dir: &Path, key: &str, value: serde_json::Value) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn relative_position_embeddings_rejected() {
    let dir = good_checkpoint("relkey");
    patch_config(dir.path(), "position_embedding_type", "relative_key".into());
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::Config { ref path, .. } if path.ends_with("config.json")), "{e:?}");
    assert_mentions(&e.to_string(), &["config.json", "position_embedding_type", "relative_key", "absolute"]);
}

#[test]
fn unknown_activation_rejected() {
    let dir = good_checkpoint("act");
    patch_config(dir.path(), "hidden_act", "swish".into());
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::Config { .. }), "{e:?}");
    assert_mentions(&e.to_string(), &["config.json", "hidden_act", "swish"]);
}

#[test]
fn invalid_config_values_rejected() {
    for (key, value, words) in [
        ("num_attention_heads", serde_json::json!(3), vec!["hidden_size", "divisible", "3"]),
        ("num_hidden_layers", serde_json::json!(0), vec!["num_hidden_layers", "0"]),
        // (roberta and distilbert are read since issue #18; the error lists what is)
        ("model_type", serde_json::json!("albert"), vec!["model_type", "albert", "supported", "distilbert", "roberta"]),
        ("hidden_size", serde_json::json!("eight"), vec!["invalid config.json"]),
    ] {
        let dir = good_checkpoint("cfgval");
        patch_config(dir.path(), key, value);
        let e = load_err(dir.path());
        assert!(matches!(e, ModelError::Config { .. }), "{key}: {e:?}");
        let mut w: Vec<&str> = vec!["config.json"];
        w.extend(words);
        assert_mentions(&e.to_string(), &w);
    }
    // not JSON at all
    let dir = good_checkpoint("cfgjunk");
    std::fs::write(dir.path().join("config.json"), "{ this is not json").unwrap();
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::Config { .. }), "{e:?}");
    assert_mentions(&e.to_string(), &["config.json", "invalid config.json"]);
}

#[test]
fn negative_layer_norm_eps_rejected() {
    // eps < 0 makes sqrt(var + eps) NaN for low-variance rows: reject it when loading.
    let dir = good_checkpoint("lneps");
    patch_config(dir.path(), "layer_norm_eps", serde_json::json!(-1.0));
    let e = load_err(dir.path());
    assert!(matches!(e, ModelError::Config { .. }), "{e:?}");
    assert_mentions(&e.to_string(), &["config.json", "layer_norm_eps"]);
}

// ---------------------------------------------------------------------------------------------
// Tensors

#[test]
fn config_tensor_shape_mismatch() {
    // config.json says hidden 8 (2 heads x 4), the tensors are for hidden 6 (2 heads x 3)
    let dir = TempDir::new("shape");
    let c8 = cfg();
    let c6 = tiny_config(2, 2, 3, 16, 10, 12);
    write_checkpoint(dir.path(), &c8, &random_tensors(&c6, 1, 1.0));
    let e = load_err(dir.path());
    match &e {
        ModelError::Shape { path, name, expected, found } => {
            assert!(path.ends_with("model.safetensors"), "{e:?}");
            assert_eq!(name, "embeddings.word_embeddings.weight");
            assert_eq!(expected, &vec![10, 8]);
            assert_eq!(found, &vec![10, 6]);
        }
        other => panic!("expected ModelError::Shape, got {other:?}"),
    }
    assert_mentions(&e.to_string(), &["model.safetensors", "embeddings.word_embeddings.weight", "[10, 6]", "[10, 8]", "config.json"]);
}

#[test]
fn layer_tensor_shape_mismatch() {
    // only one layer tensor has the wrong shape: the error names that tensor
    let dir = TempDir::new("shape2");
    let c = cfg();
    let mut t = random_tensors(&c, 1, 1.0);
    let e = t.iter_mut().find(|(n, ..)| n == "encoder.layer.1.intermediate.dense.weight").unwrap();
    e.1 = vec![15, 8];
    e.2.truncate(15 * 8);
    write_checkpoint(dir.path(), &c, &t);
    let e = load_err(dir.path());
    assert!(
        matches!(&e, ModelError::Shape { name, expected, found, .. }
        if name == "encoder.layer.1.intermediate.dense.weight" && expected == &vec![16, 8] && found == &vec![15, 8]),
        "{e:?}"
    );
    assert_mentions(&e.to_string(), &["encoder.layer.1.intermediate.dense.weight", "[15, 8]", "[16, 8]"]);
}

#[test]
fn missing_tensor() {
    let dir = TempDir::new("missing");
    let c = cfg();
    let t: Vec<_> = random_tensors(&c, 1, 1.0).into_iter().filter(|(n, ..)| n != "encoder.layer.1.attention.self.value.bias").collect();
    write_checkpoint(dir.path(), &c, &t);
    let e = load_err(dir.path());
    assert!(matches!(&e, ModelError::MissingTensor { name, .. } if name == "encoder.layer.1.attention.self.value.bias"), "{e:?}");
    assert_mentions(&e.to_string(), &["model.safetensors", "encoder.layer.1.attention.self.value.bias", "missing"]);
}

#[test]
fn nan_weight() {
    let dir = TempDir::new("nan");
    let c = cfg();
    let mut t = random_tensors(&c, 1, 1.0);
    t.iter_mut().find(|(n, ..)| n == "encoder.layer.0.attention.self.key.weight").unwrap().2[5] = f32::NAN;
    write_checkpoint(dir.path(), &c, &t);
    let e = load_err(dir.path());
    assert!(
        matches!(&e, ModelError::NonFinite { name, index: 5, value, .. } if name == "encoder.layer.0.attention.self.key.weight" && value.is_nan()),
        "{e:?}"
    );
    assert_mentions(&e.to_string(), &["model.safetensors", "encoder.layer.0.attention.self.key.weight", "NaN", "index 5"]);
}

#[test]
fn infinite_weight() {
    let dir = TempDir::new("inf");
    let c = cfg();
    let mut t = random_tensors(&c, 1, 1.0);
    t.iter_mut().find(|(n, ..)| n == "embeddings.LayerNorm.bias").unwrap().2[0] = f32::NEG_INFINITY;
    write_checkpoint(dir.path(), &c, &t);
    let e = load_err(dir.path());
    assert!(matches!(&e, ModelError::NonFinite { name, index: 0, .. } if name == "embeddings.LayerNorm.bias"), "{e:?}");
    assert_mentions(&e.to_string(), &["embeddings.LayerNorm.bias", "inf"]);
}

#[test]
fn integer_dtype_weight() {
    let dir = TempDir::new("int");
    let c = cfg();
    write_checkpoint(dir.path(), &c, &[]); // config.json
    let t = random_tensors(&c, 1, 1.0);
    let ints: Vec<u8> = (0..8i64).flat_map(|v| v.to_le_bytes()).collect();
    write_mixed(
        &dir.path().join("model.safetensors"),
        &t,
        &[("encoder.layer.0.output.dense.bias", safetensors::Dtype::I64, vec![8], ints)],
    );
    let e = load_err(dir.path());
    assert!(
        matches!(&e, ModelError::Dtype { name, dtype, .. } if name == "encoder.layer.0.output.dense.bias" && dtype.contains("I64")),
        "{e:?}"
    );
    assert_mentions(&e.to_string(), &["model.safetensors", "encoder.layer.0.output.dense.bias", "I64", "float"]);
}

#[test]
fn integer_buffers_are_skipped_and_f16_weights_load() {
    // `embeddings.position_ids` (an I64 buffer in HF checkpoints) is not a weight: ignored.
    let dir = TempDir::new("posids");
    let c = cfg();
    write_checkpoint(dir.path(), &c, &[]);
    let t = random_tensors(&c, 1, 1.0);
    let pos: Vec<u8> = (0..12i64).flat_map(|v| v.to_le_bytes()).collect();
    let word = &t.iter().find(|(n, ..)| n == "embeddings.word_embeddings.weight").unwrap().2;
    let word_f16: Vec<u8> = word.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
    write_mixed(
        &dir.path().join("model.safetensors"),
        &t,
        &[
            ("embeddings.position_ids", safetensors::Dtype::I64, vec![1, 12], pos),
            ("embeddings.word_embeddings.weight", safetensors::Dtype::F16, vec![10, 8], word_f16),
        ],
    );
    let m = Encoder::load(dir.path()).expect("position_ids buffer and f16 weights are fine");
    assert_eq!(m.embeddings.text().expect("text model").word.len(), 80);
}

// ---------------------------------------------------------------------------------------------
// Inputs to `run`

#[test]
fn empty_token_list() {
    let m = tiny_model();
    let e = match catch_unwind(AssertUnwindSafe(|| m.run_dense(&[input(&[])], RunOptions::default()))) {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("empty input ran"),
        Err(_) => panic!("run_dense panicked on an empty token list"),
    };
    assert!(matches!(e, ModelError::Input(_)), "{e:?}");
    assert_mentions(&e.to_string(), &["example 0", "no tokens"]);
    // an empty batch is fine: nothing to do
    assert!(m.run(&[], &[], RunOptions::default()).expect("empty batch").is_empty());
}

#[test]
fn id_out_of_vocabulary() {
    let m = tiny_model();
    let x = input(&[1, 2, 10]);
    let e = run_err(&m, &[input(&[1]), x], &[TokenPlan::dense(1, 2), TokenPlan::dense(3, 2)]);
    assert!(matches!(e, ModelError::Input(_)), "{e:?}");
    assert_mentions(&e.to_string(), &["example 1", "token id 10", "vocabulary", "10"]);
    let e = run_err(&m, &[input(&[u32::MAX])], &[TokenPlan::dense(1, 2)]);
    assert_mentions(&e.to_string(), &[&u32::MAX.to_string(), "vocabulary"]);
}

#[test]
fn token_type_out_of_range_and_length_mismatch() {
    let m = tiny_model();
    let x = EncodedInput { ids: vec![1, 2], type_ids: vec![0, 2], patches: Vec::new() };
    let e = run_err(&m, &[x], &[TokenPlan::dense(2, 2)]);
    assert!(matches!(e, ModelError::Input(_)), "{e:?}");
    assert_mentions(&e.to_string(), &["token type 2", "type_vocab_size"]);
    let x = EncodedInput { ids: vec![1, 2], type_ids: vec![0], patches: Vec::new() };
    let e = run_err(&m, &[x], &[TokenPlan::dense(2, 2)]);
    assert_mentions(&e.to_string(), &["2 token ids", "1 token type ids"]);
}

#[test]
fn sequence_longer_than_max_positions() {
    let m = tiny_model();
    let ids: Vec<u32> = (0..13).map(|i| i % 10).collect();
    let e = run_err(&m, &[input(&ids)], &[TokenPlan::dense(13, 2)]);
    assert!(matches!(e, ModelError::Input(_)), "{e:?}");
    assert_mentions(&e.to_string(), &["13 tokens", "max_position_embeddings", "12"]);
    // exactly max_position_embeddings is fine
    let ids: Vec<u32> = (0..12).map(|i| i % 10).collect();
    m.run_dense(&[input(&ids)], RunOptions::default()).expect("n = max_position_embeddings runs");
}

#[test]
fn plan_does_not_fit_input() {
    let m = tiny_model();
    // wrong n
    let e = run_err(&m, &[input(&[1, 2, 3])], &[TokenPlan::dense(4, 2)]);
    assert!(matches!(e, ModelError::Input(_)), "{e:?}");
    assert_mentions(&e.to_string(), &["example 0", "n = 4", "3 tokens"]);
    let e = run_err(&m, &[input(&[1, 2, 3])], &[TokenPlan::dense_cls(2, 2)]);
    assert_mentions(&e.to_string(), &["n = 2", "3 tokens"]);
    // wrong number of layers
    let e = run_err(&m, &[input(&[1, 2, 3])], &[TokenPlan::dense(3, 3)]);
    assert_mentions(&e.to_string(), &["3 layers", "2 layers"]);
}

#[test]
fn mismatched_numbers_of_inputs_and_plans() {
    let m = tiny_model();
    let e = run_err(&m, &[input(&[1, 2]), input(&[3])], &[TokenPlan::dense(2, 2)]);
    assert!(matches!(e, ModelError::Input(_)), "{e:?}");
    assert_mentions(&e.to_string(), &["2 inputs", "1 plans"]);
    let e = run_err(&m, &[input(&[1, 2])], &[TokenPlan::dense(2, 2), TokenPlan::dense(2, 2)]);
    assert_mentions(&e.to_string(), &["1 inputs", "2 plans"]);
}

// ---------------------------------------------------------------------------------------------
// Invalid plans cannot even be built (the executor only ever sees validated plans)

#[test]
fn invalid_plans_rejected_by_token_plan_new() {
    let v = |s: &[usize]| s.to_vec();
    let cases: Vec<(usize, Vec<Vec<usize>>, Vec<Vec<usize>>, PlanError)> = vec![
        (0, vec![v(&[0])], vec![v(&[0])], PlanError::NoTokens),
        (3, vec![], vec![], PlanError::NoLayers),
        (3, vec![v(&[0]), v(&[0])], vec![v(&[0])], PlanError::LayerCountMismatch { inputs: 2, outputs: 1 }),
        (3, vec![v(&[])], vec![v(&[0])], PlanError::Empty { layer: 1, set: SetKind::Input }),
        // no CLS
        (3, vec![v(&[1, 2])], vec![v(&[1])], PlanError::MissingCls { layer: 1, set: SetKind::Input }),
        (3, vec![v(&[0, 1, 2]), v(&[0, 2])], vec![v(&[0, 2]), v(&[2])], PlanError::MissingCls { layer: 2, set: SetKind::Output }),
        // padding / out of range (wrong n)
        (3, vec![v(&[0, 3])], vec![v(&[0])], PlanError::OutOfRange { layer: 1, set: SetKind::Input, token: 3, n: 3 }),
        // unsorted, duplicate
        (3, vec![v(&[0, 2, 1])], vec![v(&[0])], PlanError::Unsorted { layer: 1, set: SetKind::Input, token: 1, previous: 2 }),
        (3, vec![v(&[0, 1, 1])], vec![v(&[0])], PlanError::Unsorted { layer: 1, set: SetKind::Input, token: 1, previous: 1 }),
        // O not within I
        (3, vec![v(&[0, 1])], vec![v(&[0, 2])], PlanError::OutputNotInInput { layer: 1, token: 2 }),
        // not nested: I_2 != O_1
        (4, vec![v(&[0, 1, 2]), v(&[0, 1, 2])], vec![v(&[0, 1]), v(&[0])], PlanError::NotNested { layer: 2, below: 1, token: 2 }),
        (4, vec![v(&[0, 1, 2]), v(&[0, 3])], vec![v(&[0, 1]), v(&[0])], PlanError::NotNested { layer: 2, below: 1, token: 1 }),
    ];
    for (n, inputs, outputs, want) in cases {
        let got = TokenPlan::new(n, inputs.clone(), outputs.clone());
        assert_eq!(got.as_ref().err(), Some(&want), "n={n} I={inputs:?} O={outputs:?}");
        let msg = want.to_string();
        assert!(!msg.is_empty());
    }
    // messages name the layer (1-based), the set and the token
    let e = TokenPlan::new(4, vec![vec![0, 1, 2], vec![0, 3]], vec![vec![0, 1], vec![0]]).unwrap_err();
    assert_mentions(&e.to_string(), &["layer 2", "layer 1", "token 1"]);
    let e = TokenPlan::new(3, vec![vec![1, 2]], vec![vec![1]]).unwrap_err();
    assert_mentions(&e.to_string(), &["layer 1", "CLS"]);
    // from_inputs: a top outside I_L, a top without CLS
    assert!(matches!(TokenPlan::from_inputs(3, vec![vec![0, 1]], vec![0, 2]), Err(PlanError::OutputNotInInput { layer: 1, token: 2 })));
    assert!(matches!(TokenPlan::from_inputs(3, vec![vec![0, 1]], vec![1]), Err(PlanError::MissingCls { .. })));
    assert!(matches!(TokenPlan::from_inputs(3, vec![], vec![0]), Err(PlanError::NoLayers)));
    // deserialisation validates too
    let bad = r#"{"n": 3, "inputs": [[0, 1, 2], [0, 2]], "outputs": [[0, 1], [0]]}"#;
    let e = serde_json::from_str::<TokenPlan>(bad).unwrap_err();
    assert!(e.to_string().contains("layer 2"), "{e}");
    let good = r#"{"n": 3, "inputs": [[0, 1, 2], [0, 1]], "outputs": [[0, 1], [0]]}"#;
    serde_json::from_str::<TokenPlan>(good).expect("valid plan deserialises");
}

#[test]
fn dense_plan_constructors_panic_only_on_impossible_sizes() {
    // documented panics: no valid plan exists for n = 0 or L = 0
    assert!(catch_unwind(|| TokenPlan::dense(0, 2)).is_err());
    assert!(catch_unwind(|| TokenPlan::dense_cls(3, 0)).is_err());
}

// ---------------------------------------------------------------------------------------------
// forward_soft

#[test]
fn forward_soft_shape_errors() {
    let m = tiny_model();
    let d = 8;
    let ok_masks = vec![vec![1.0f32; 3]; 3];
    for (x0_len, valid, masks) in [
        (2 * d, vec![true; 3], ok_masks.clone()),      // x0 too short
        (3 * d, vec![true; 3], vec![vec![1.0; 3]; 2]), // L masks instead of L + 1
        (3 * d, vec![true; 3], vec![vec![1.0; 2]; 3]), // masks of the wrong length
    ] {
        let x0 = vec![0.1f32; x0_len];
        let r = catch_unwind(AssertUnwindSafe(|| m.forward_soft(&x0, &valid, &masks)));
        match r {
            Ok(Err(ModelError::Input(msg))) => assert_mentions(&msg, &["forward_soft", "L+1"]),
            Ok(other) => panic!("expected ModelError::Input, got {other:?}"),
            Err(_) => panic!("forward_soft panicked on a shape error"),
        }
    }
}

#[test]
fn forward_soft_without_real_tokens_is_an_error_not_a_panic() {
    // valid all false (T = 3), and T = 0: there is no key to attend to.
    let m = tiny_model();
    for t in [3usize, 0] {
        let x0 = vec![0.1f32; t * 8];
        let valid = vec![false; t];
        let masks = vec![vec![1.0f32; t]; 3];
        let r = catch_unwind(AssertUnwindSafe(|| m.forward_soft(&x0, &valid, &masks)));
        match r {
            Ok(Err(ModelError::Input(_))) => {}
            Ok(Ok(trace)) => {
                for layer in &trace {
                    assert!(layer.x.iter().chain(&layer.y).chain(&layer.p).all(|v| v.is_finite()), "T={t}: non-finite output");
                }
            }
            Ok(Err(e)) => panic!("T={t}: expected ModelError::Input, got {e:?}"),
            Err(_) => panic!("T={t}: forward_soft panicked when no token is valid (expected ModelError::Input)"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Text

#[test]
fn empty_text_gives_cls_sep_and_runs() {
    let dir = common::minilm_dir();
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&dir, 128).expect("tokenizer");
    let t = tok.encode("", None).expect("empty text is not an error");
    assert_eq!(t.tokens, vec!["[CLS]", "[SEP]"]);
    assert_eq!(t.input.ids, vec![101, 102]);
    assert_eq!(t.input.type_ids, vec![0, 0]);
    assert_eq!(t.truncated, 0);
    let m = common::minilm();
    let out = m.run_dense(std::slice::from_ref(&t.input), RunOptions::default()).expect("[CLS] [SEP] runs");
    assert_eq!(out[0].rows, vec![0, 1]);
    assert!(out[0].hidden.iter().all(|v| v.is_finite()));
    // whitespace only is the same
    let t2 = tok.encode("   \t\n", None).expect("whitespace text");
    assert_eq!(t2.input.ids, vec![101, 102]);
}

#[test]
fn tokenizer_errors() {
    let dir = TempDir::new("tok");
    let e = sttabt::text::tokenizer::TextTokenizer::from_dir(dir.path(), 128).unwrap_err();
    assert!(matches!(e, ModelError::MissingFile { .. }), "{e:?}");
    assert_mentions(&e.to_string(), &["tokenizer.json", "vocab.txt"]);
    let e = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 2).unwrap_err();
    assert!(matches!(e, ModelError::Input(_)), "{e:?}");
    assert_mentions(&e.to_string(), &["max_length", "2"]);
    std::fs::write(dir.path().join("tokenizer.json"), "{ broken").unwrap();
    let e = sttabt::text::tokenizer::TextTokenizer::from_dir(dir.path(), 128).unwrap_err();
    assert!(matches!(e, ModelError::Tokenizer { .. }), "{e:?}");
    assert_mentions(&e.to_string(), &["tokenizer.json"]);
}
