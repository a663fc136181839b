//! Parity with the real all-MiniLM-L6-v2 against `../shared/reference/minilm/` (computed with
//! transformers): token ids exactly; hidden states 2e-5 (measured ~3e-6); attention
//! probabilities, pooler, sentence embedding, cosine 1e-5.

mod common;
use common::*;

use sttabt::model::mean_pool_normalized;
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{EncodedInput, RunOptions};

const HIDDEN_TOL: f32 = 2e-5;
const PROB_TOL: f32 = 1e-5;

fn case(name: &str) -> serde_json::Value {
    read_json(reference_dir().join("minilm").join(format!("{name}.json")))
}

fn tokenizer(max_len: usize) -> TextTokenizer {
    TextTokenizer::from_dir(&minilm_dir(), max_len).expect("tokenizer")
}

fn check_case(name: &str) {
    let c = case(name);
    let max_len = c.get("max_length").and_then(|v| v.as_u64()).unwrap_or(512) as usize;
    let tok = tokenizer(max_len);
    let text = c["text"].as_str().unwrap();
    let pair = c.get("text_pair").and_then(|v| v.as_str());
    let enc = tok.encode(text, pair).unwrap();
    assert_eq!(enc.input.ids, u32s(&c["input_ids"]), "{name}: input_ids");
    assert_eq!(enc.input.type_ids, u32s(&c["token_type_ids"]), "{name}: token_type_ids");
    if let Some(u) = c.get("untruncated_length") {
        assert_eq!(enc.truncated, u.as_u64().unwrap() as usize - enc.input.len(), "{name}: tokens cut");
    }
    let m = minilm();
    let d = m.config.hidden_size;
    let out = m.run_dense(std::slice::from_ref(&enc.input), RunOptions { attentions: true, hidden_states: true }).unwrap().remove(0);
    let err = max_abs_diff(&out.hidden, &f32s(&c["last_hidden_state"]));
    eprintln!("{name}: max |Δ last_hidden_state| = {err:.2e}");
    assert!(err < HIDDEN_TOL, "{name}: last_hidden_state differs by {err}");
    if let Some(hs) = c.get("hidden_states") {
        let states = out.hidden_states.as_ref().unwrap();
        for (l, expect) in hs.as_array().unwrap().iter().enumerate() {
            let e = max_abs_diff(&states[l].1, &f32s(expect));
            assert!(e < HIDDEN_TOL, "{name}: hidden_states[{l}] differs by {e}");
        }
    }
    let atts = out.attentions.as_ref().unwrap();
    for (key, l) in [("attentions_layer1", 0usize), ("attentions_layer6", 5)] {
        if let Some(a) = c.get(key) {
            let e = max_abs_diff(&atts[l].probs, &f32s(a));
            eprintln!("{name}: max |Δ {key}| = {e:.2e}");
            assert!(e < PROB_TOL, "{name}: {key} differs by {e}");
        }
    }
    let pooled = m.pool(out.cls()).unwrap();
    let e = max_abs_diff(&pooled, &f32s(&c["pooler_output"]));
    assert!(e < PROB_TOL, "{name}: pooler_output differs by {e}");
    let emb = mean_pool_normalized(&out.hidden, d);
    let e = max_abs_diff(&emb, &f32s(&c["sentence_embedding"]));
    assert!(e < PROB_TOL, "{name}: sentence_embedding differs by {e}");
}

#[test]
fn case1_short() {
    check_case("case1_short");
}
#[test]
fn case2_unicode() {
    check_case("case2_unicode");
}
#[test]
fn case3_empty() {
    check_case("case3_empty");
}
#[test]
fn case4_pair() {
    check_case("case4_pair");
}
#[test]
fn case5_long_truncated() {
    check_case("case5_long_truncated");
}

#[test]
fn case6_batch_matches_reference_and_single_runs() {
    let c = case("case6_batch");
    let tok = tokenizer(512);
    let m = minilm();
    let d = m.config.hidden_size;
    let texts: Vec<&str> = c["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let ids = c["input_ids"].as_array().unwrap();
    let masks = c["attention_mask"].as_array().unwrap();
    let mut inputs: Vec<EncodedInput> = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let e = tok.encode(t, None).unwrap();
        let n = u32s(&masks[i]).iter().filter(|&&m| m == 1).count();
        assert_eq!(e.input.ids, u32s(&ids[i])[..n].to_vec(), "batch ids {i}");
        inputs.push(e.input);
    }
    let batched = m.run_dense(&inputs, RunOptions::default()).unwrap();
    let lhs = c["last_hidden_state"].as_array().unwrap();
    for (i, out) in batched.iter().enumerate() {
        let n = inputs[i].len();
        let expect = f32s(&lhs[i]);
        let err = max_abs_diff(&out.hidden, &expect[..n * d]);
        assert!(err < HIDDEN_TOL, "batch example {i}: {err}");
        let emb = mean_pool_normalized(&out.hidden, d);
        assert!(max_abs_diff(&emb, &f32s(&c["sentence_embedding"][i])) < PROB_TOL);
        let alone = m.run_dense(&inputs[i..i + 1], RunOptions::default()).unwrap().remove(0);
        assert!(max_abs_diff(&alone.hidden, &out.hidden) < 1e-5, "batched vs alone, example {i}");
    }
}

#[test]
fn similarity_cosines() {
    let s = read_json(reference_dir().join("minilm/similarity.json"));
    let tok = tokenizer(256);
    let m = minilm();
    let d = m.config.hidden_size;
    for p in s["pairs"].as_array().unwrap() {
        let a = tok.encode(p["text_a"].as_str().unwrap(), None).unwrap();
        let b = tok.encode(p["text_b"].as_str().unwrap(), None).unwrap();
        assert_eq!(a.input.ids, u32s(&p["input_ids_a"]));
        assert_eq!(b.input.ids, u32s(&p["input_ids_b"]));
        let out = m.run_dense(&[a.input, b.input], RunOptions::default()).unwrap();
        let ea = mean_pool_normalized(&out[0].hidden, d);
        let eb = mean_pool_normalized(&out[1].hidden, d);
        let cos: f32 = ea.iter().zip(&eb).map(|(x, y)| x * y).sum();
        let expect = p["cosine"].as_f64().unwrap() as f32;
        assert!((cos - expect).abs() < 1e-5, "{}: cosine {cos} vs {expect}", p["kind"]);
    }
}

#[test]
fn vocab_txt_fallback_tokenizes_like_tokenizer_json() {
    // Copy only vocab.txt + tokenizer_config.json into a temp dir: the WordPiece fallback must
    // give the same ids as tokenizer.json on the reference texts.
    let dir = std::env::temp_dir().join(format!("sttabt-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(minilm_dir().join(f), dir.join(f)).unwrap();
    }
    let fallback = TextTokenizer::from_dir(&dir, 512).unwrap();
    let full = tokenizer(512);
    for name in ["case1_short", "case2_unicode", "case3_empty", "case4_pair"] {
        let c = case(name);
        let text = c["text"].as_str().unwrap();
        let pair = c.get("text_pair").and_then(|v| v.as_str());
        assert_eq!(fallback.encode(text, pair).unwrap().input, full.encode(text, pair).unwrap().input, "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
