//! Driver for `sttabt::bench` without the CLI: `cargo bench --bench sttabt_bench -- [--quick] [--peer ort|ort-int8] [--rounds N] [--threads N]`.
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let val = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let threads: usize = val("--threads").and_then(|v| v.parse().ok()).unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
    let mut o = sttabt::bench::BenchOptions::default();
    if !o.model.join("model.safetensors").exists() {
        println!("sttabt_bench: no fine-tuned model at {} (run `sttabt demo`); skipping", o.model.display());
        return Ok(());
    }
    if has("--check-abt") {
        // the timed ABT planner must give exactly the plans of a full dense attention run + backtrack
        let (approx, inputs) = check_inputs(&o)?;
        let c = &approx.config;
        for k in [0.1, 0.3, 0.5, 0.9] {
            for cfg in [sttabt::planners::abt::AbtConfig::topk(k), sttabt::planners::abt::AbtConfig::dynamic()] {
                let new = sttabt::planners::abt::abt_plans(&approx, &inputs, &cfg)?;
                let outs = approx.run_dense(&inputs, sttabt::RunOptions { attentions: true, hidden_states: false })?;
                for ((o1, x), p) in outs.iter().zip(&inputs).zip(&new) {
                    let st: Vec<f32> = o1.attentions.iter().flatten().flat_map(|a| a.probs.iter().copied()).collect();
                    let (old, _) = sttabt::planners::abt::backtrack(&st, c.num_layers, c.num_heads, x.len(), x.len(), &cfg)?;
                    assert_eq!(&old, p, "plan mismatch");
                }
            }
        }
        println!("check-abt: {} inputs x 8 configs: plans identical", inputs.len());
        return Ok(());
    }
    if has("--check-concrete") {
        // the fast concrete planner (top rows only, f32 Φ) must give the plans of a dense
        // attention run + the f64 reference step 1 (`standardized_cdf_scores`)
        let (approx, inputs) = check_inputs(&o)?;
        let c = &approx.config;
        let outs = approx.run_dense(&inputs, sttabt::RunOptions { attentions: true, hidden_states: false })?;
        let (mut same, mut total) = (0, 0);
        for theta0 in [-2.0, -1.0, 0.0, 1.0, 2.0] {
            let theta = vec![theta0; c.num_layers];
            let fast = sttabt::planners::concrete::concrete_plans(&approx, &inputs, &theta)?;
            for ((o1, x), p) in outs.iter().zip(&inputs).zip(&fast) {
                let n = x.len();
                let logp: Vec<f32> = o1.attentions.iter().flatten().flat_map(|a| a.probs.iter().map(|p| p.max(1e-37).ln())).collect();
                let u = sttabt::planners::concrete::standardized_cdf_scores(&logp, c.num_layers, c.num_heads, n, n, 0, 1e-6)?;
                let r = sttabt::planners::concrete::concrete_masks_top(
                    &u,
                    c.num_layers,
                    n,
                    n,
                    &theta,
                    0.1,
                    0.1,
                    1e-6,
                    approx.top_tokens().len(),
                )?;
                total += 1;
                same += usize::from(&r.plan == p);
            }
        }
        println!("check-concrete: {same} of {total} plans (64 inputs x 5 theta) identical to the f64 reference path");
        anyhow::ensure!(same == total, "concrete plans differ");
        return Ok(());
    }
    if has("--quick") {
        o.rt_examples = 64;
        o.synth_examples = 4;
        o.repeats = 1;
        o.rounds = 1;
    }
    if let Some(v) = val("--rounds") {
        o.rounds = v.parse()?;
    }
    if let Some(v) = val("--repeats") {
        o.repeats = v.parse()?;
    }
    if let Some(v) = val("--rt") {
        o.rt_examples = v.parse()?;
    }
    if let Some(v) = val("--lengths") {
        o.lengths = v.split(',').filter(|s| !s.is_empty()).map(|s| s.parse()).collect::<Result<_, _>>()?;
    }
    if let Some(v) = val("--batches") {
        o.batches = v.split(',').map(|s| s.parse()).collect::<Result<_, _>>()?;
    }
    o.memory = !has("--no-memory");
    o.peer = val("--peer");
    let r = sttabt::bench::run_bench(&o)?;
    print!("{}", sttabt::bench::format_report(&r));
    if let Some(p) = val("--json") {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)?;
    }
    Ok(())
}

/// The demo's ApproxNet and the inputs the plan checks run on: 4 synthetic lengths (17..137)
/// and the first 60 Rotten Tomatoes test sentences.
fn check_inputs(o: &sttabt::bench::BenchOptions) -> anyhow::Result<(sttabt::Encoder, Vec<sttabt::EncodedInput>)> {
    let teacher = sttabt::Encoder::load(&o.model)?;
    let approx = sttabt::approx::ApproxNet::load(
        o.approx.as_ref().ok_or_else(|| anyhow::anyhow!("no ApproxNet (run `sttabt demo`)"))?,
        &teacher.config,
    )?
    .model;
    let mut inputs: Vec<sttabt::EncodedInput> = (0..4).map(|e| sttabt::bench::synthetic_input(17 + 40 * e, e)).collect();
    let splits = sttabt::data::rt::load_rotten_tomatoes(&sttabt::assets::rotten_tomatoes_path(), 0)?;
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&o.model, 512)?;
    for ex in splits.test.examples.iter().take(60) {
        inputs.push(tok.encode(&ex.text, None)?.input);
    }
    Ok((approx, inputs))
}
