//! The executor without the packed AVX-512 GEMM (what CPUs without AVX-512 run): with
//! `STTABT_NO_PACKED_GEMM` set before the first kernel call, every linear layer goes through
//! `gemm` on the row-major weights, MiniLM still matches the transformers reference, and a plan
//! that reads only CLS at the last layer gives the dense run's CLS row. (The packed path is
//! checked by every other test on an AVX-512 machine, and by `kernels::packed`'s unit test.)
//! One test per file: the switch is read once per process.

mod common;
use common::*;
use std::io::Write as _;

use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{RunOptions, TokenPlan};

#[test]
fn gemm_fallback_matches_reference_and_gathered_plans() {
    #[cfg(target_arch = "x86_64")]
    if !std::is_x86_feature_detected!("avx512f") {
        let _ = writeln!(std::io::stderr(), "NOTE: this CPU has no AVX-512F: the packed GEMM never runs here, so this test checks the path every test runs (not a fallback from the packed one)");
    }
    std::env::set_var("STTABT_NO_PACKED_GEMM", "1");
    assert!(!sttabt::kernels::packed::available(), "the switch must turn the packed path off");
    note_cpu_paths("gemm_fallback");
    let tok = TextTokenizer::from_dir(&minilm_dir(), 512).unwrap();
    let m = minilm();
    for name in ["case1_short", "case4_pair"] {
        let c = read_json(reference_dir().join("minilm").join(format!("{name}.json")));
        let pair = c.get("text_pair").and_then(|v| v.as_str());
        let enc = tok.encode(c["text"].as_str().unwrap(), pair).unwrap();
        let out = m.run_dense(&[enc.input.clone()], RunOptions::default()).unwrap().remove(0);
        let err = max_abs_diff(&out.hidden, &f32s(&c["last_hidden_state"]));
        assert!(err < 2e-5, "{name}: last_hidden_state differs by {err} without the packed GEMM");
    }
    // A plan that keeps every token until the last layer reads only CLS: its CLS row equals the
    // dense run's (the last layer's CLS row depends only on layer L-1's full output).
    let enc = tok.encode("a gripping, beautifully shot film that never lets go", None).unwrap();
    let n = enc.input.len();
    let layers = m.layers.len();
    let dense = m.run(&[enc.input.clone()], &[TokenPlan::dense(n, layers)], RunOptions::default()).unwrap().remove(0);
    let top = m.run(&[enc.input.clone()], &[TokenPlan::dense_cls(n, layers)], RunOptions::default()).unwrap().remove(0);
    let d = m.config.hidden_size;
    let err = max_abs_diff(&top.hidden[..d], &dense.hidden[..d]);
    assert!(err < 1e-5, "CLS row of the top-only plan differs from the dense run by {err}");
}
