//! `STTABT_NO_AVX512`: on an AVX-512 CPU, every kernel of ours runs its AVX2 + FMA code (what
//! AMD Zen 1-3 run): the element-wise and query-lane attention kernels at the AVX2 level, no
//! packed GEMM, the AVX2 int8 kernel instead of VNNI/AMX. all-MiniLM-L6-v2 still matches the
//! transformers reference in fp32, its int8 embeddings stay within cosine 0.999 of it, and a plan
//! that reads only CLS at the last layer gives the dense run's CLS row. On a CPU without AVX-512
//! this is the path every test runs (the test says so). One test per file: the switch is read
//! once per process.

mod common;
use common::*;
use std::io::Write as _;

use sttabt::kernels::int8::Int8Kernel;
use sttabt::model::{mean_pool_normalized, Precision};
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{RunOptions, TokenPlan};

#[test]
fn no_avx512_runs_the_avx2_paths_and_matches_the_reference() {
    #[cfg(target_arch = "x86_64")]
    if !std::is_x86_feature_detected!("avx512f") {
        let _ = writeln!(
            std::io::stderr(),
            "NOTE: this CPU has no AVX-512F: the switch changes nothing here, so this test checks the path every test runs"
        );
    }
    std::env::set_var("STTABT_NO_AVX512", "1");
    assert!(sttabt::kernels::avx512_disabled(), "the switch must be read as set");
    assert_ne!(sttabt::kernels::simd_level(), "avx512", "the element-wise kernels must leave AVX-512");
    assert!(!sttabt::kernels::packed::available(), "the packed AVX-512 GEMM must be off");
    for k in [Int8Kernel::Vnni, Int8Kernel::Amx] {
        assert!(!k.available(), "{} must be off under STTABT_NO_AVX512", k.name());
    }
    note_cpu_paths("no_avx512");
    let avx2 = Int8Kernel::Avx2.available();
    assert_eq!(sttabt::precision_eval::int8_kernels_here(), if avx2 { "avx2" } else { "fallback" });

    let tok = TextTokenizer::from_dir(&minilm_dir(), 512).unwrap();
    let m = minilm();
    let m8 = m.clone().with_precision(Precision::Int8).expect("quantise all-MiniLM-L6-v2");
    let d = m.config.hidden_size;
    for name in ["case1_short", "case4_pair", "case5_long_truncated"] {
        let c = read_json(reference_dir().join("minilm").join(format!("{name}.json")));
        let max_len = c.get("max_length").and_then(|v| v.as_u64()).unwrap_or(512) as usize;
        let tok = TextTokenizer::from_dir(&minilm_dir(), max_len).unwrap();
        let pair = c.get("text_pair").and_then(|v| v.as_str());
        let x = tok.encode(c["text"].as_str().unwrap(), pair).unwrap().input;
        let out = m.run_dense(std::slice::from_ref(&x), RunOptions::default()).unwrap().remove(0);
        let err = max_abs_diff(&out.hidden, &f32s(&c["last_hidden_state"]));
        assert!(err < 2e-5, "{name}: last_hidden_state differs by {err} on the AVX2 paths");
        let o8 = m8.run_dense(std::slice::from_ref(&x), RunOptions::default()).unwrap().remove(0);
        let cos = cosine(&mean_pool_normalized(&o8.hidden, d), &f32s(&c["sentence_embedding"]));
        let _ = writeln!(std::io::stderr(), "{name} ({} tokens): fp32 max |Δ| {err:.2e}; int8 embedding cosine {cos:.5}", x.len());
        assert!(cos >= 0.999, "{name}: int8 embedding cosine {cos} to the reference on the AVX2 paths");
    }
    assert_eq!(Int8Kernel::Vnni.calls() + Int8Kernel::Amx.calls(), 0, "an AVX-512 int8 kernel ran under STTABT_NO_AVX512");
    let ran = if avx2 { Int8Kernel::Avx2 } else { Int8Kernel::Fallback };
    assert!(ran.calls() > 0, "the {} int8 kernel did not run", ran.name());

    // A plan that keeps every token until the last layer reads only CLS: its CLS row equals the
    // dense run's (the last layer's CLS row depends only on layer L-1's full output).
    let enc = tok.encode("a gripping, beautifully shot film that never lets go", None).unwrap();
    let (n, layers) = (enc.input.len(), m.layers.len());
    let dense = m.run(&[enc.input.clone()], &[TokenPlan::dense(n, layers)], RunOptions::default()).unwrap().remove(0);
    let top = m.run(&[enc.input.clone()], &[TokenPlan::dense_cls(n, layers)], RunOptions::default()).unwrap().remove(0);
    let err = max_abs_diff(&top.hidden[..d], &dense.hidden[..d]);
    assert!(err < 1e-5, "CLS row of the top-only plan differs from the dense run by {err}");
}
