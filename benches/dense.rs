//! Encoder throughput (examples/s) of the real all-MiniLM-L6-v2: dense vs a 30% token plan,
//! batch 1 and 32, sequence lengths 32 and 128 (synthetic token ids).
//!
//! Run: `cargo bench --bench dense` (or `-- --warm-up-time 1 --measurement-time 3` for a quick look).
//! Needs the model in the asset cache (`sttabt fetch`); without it the bench says so and exits 0.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use sttabt::{EncodedInput, Encoder, RunOptions, TokenPlan};

fn main() {
    let dir = sttabt::assets::default_model_dir();
    if !dir.join("model.safetensors").exists() {
        println!(
            "benches/dense: all-MiniLM-L6-v2 is not in the asset cache ({}).\n\
             Fetch it with `cargo run --release -- fetch` (or scripts/fetch-assets), then rerun `cargo bench --bench dense`.\n\
             Skipping.",
            dir.display()
        );
        return;
    }
    let model = Encoder::load(&dir).unwrap_or_else(|e| panic!("cannot load {}: {e}", dir.display()));
    let layers = model.layers.len();
    // 10 samples by default (a dense batch of 32 x 128 tokens takes ~1 s); `--sample-size` overrides.
    let mut c = Criterion::default().sample_size(10).configure_from_args();

    for &n in &[32usize, 128] {
        let mut group = c.benchmark_group(format!("minilm_n{n}"));
        for &batch in &[1usize, 32] {
            let inputs: Vec<EncodedInput> = (0..batch).map(|e| sttabt::bench::synthetic_input(n, e)).collect();
            let dense: Vec<TokenPlan> = (0..batch).map(|_| TokenPlan::dense(n, layers)).collect();
            let sparse: Vec<TokenPlan> = (0..batch).map(|_| sttabt::bench::keep_first_plan(n, layers, 0.3)).collect();
            group.throughput(Throughput::Elements(batch as u64));
            for (name, plans) in [("dense", &dense), ("keep30", &sparse)] {
                group.bench_with_input(BenchmarkId::new(name, format!("batch{batch}")), plans, |b, plans| {
                    b.iter(|| {
                        let out = model.run(black_box(&inputs), black_box(plans), RunOptions::default()).expect("run");
                        black_box(out);
                    })
                });
            }
        }
        group.finish();
    }
    c.final_summary();
}
