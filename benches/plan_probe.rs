//! Times ApproxNet + planning against the dense teacher at one length, batch 1, interleaved
//! (dense, abt, concrete, dense, ...) so that the ratios survive a loaded machine; also a focused
//! target for perf: `cargo bench --bench plan_probe -- [n] [iters] [abt|concrete|dense|all]`.
//! `APPROX_PRECISION=int8` (or `int8-w7`) runs the ApproxNet's linear layers at that precision.
use std::time::Instant;

use sttabt::planners::abt::AbtConfig;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(128);
    let iters: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(50);
    let what = args.get(3).cloned().unwrap_or_else(|| "all".into());
    let home = sttabt::assets::home().join("runs/demo");
    let teacher = sttabt::Encoder::load(&home.join("teacher"))?;
    let approx = sttabt::approx::ApproxNet::load(&home.join("approx"), &teacher.config)?.model;
    let approx = match std::env::var("APPROX_PRECISION") {
        Ok(p) => approx.with_precision(p.parse().map_err(|e| anyhow::anyhow!("APPROX_PRECISION: {e}"))?)?,
        Err(_) => approx,
    };
    let big_l = teacher.layers.len();
    let inputs: Vec<Vec<sttabt::EncodedInput>> = (0..8).map(|e| vec![sttabt::bench::synthetic_input(n, e)]).collect();
    let cfg = AbtConfig::topk(0.3);
    let theta = vec![0.0f64; big_l];
    let modes: Vec<(&str, Box<dyn Fn(&[sttabt::EncodedInput])>)> = vec![
        (
            "dense",
            Box::new(|x: &[sttabt::EncodedInput]| {
                let plans: Vec<sttabt::TokenPlan> = x.iter().map(|x| sttabt::TokenPlan::dense_cls(x.len(), big_l)).collect();
                std::hint::black_box(teacher.run(x, &plans, sttabt::RunOptions::default()).unwrap());
            }),
        ),
        (
            "abt",
            Box::new(|x: &[sttabt::EncodedInput]| {
                std::hint::black_box(sttabt::planners::abt::abt_plans(&approx, x, &cfg).unwrap());
            }),
        ),
        (
            "concrete",
            Box::new(|x: &[sttabt::EncodedInput]| {
                std::hint::black_box(sttabt::planners::concrete::concrete_plans(&approx, x, &theta).unwrap());
            }),
        ),
    ];
    let modes: Vec<_> =
        modes.into_iter().filter(|(name, _)| what == "all" || what == *name || (what == "ratios" && *name != "concrete")).collect();
    // `ab` as 4th argument: every mode twice, row blocks on then off (encoder::set_row_blocks).
    let ab = args.get(4).is_some_and(|a| a == "ab");
    let modes: Vec<(String, bool, &Box<dyn Fn(&[sttabt::EncodedInput])>)> = modes
        .iter()
        .flat_map(|(name, f)| {
            if ab {
                vec![(format!("{name}+rb"), true, f), (format!("{name}-rb"), false, f)]
            } else {
                vec![(name.to_string(), true, f)]
            }
        })
        .collect();
    let mut total = vec![0.0f64; modes.len()];
    for (_, rb, f) in &modes {
        sttabt::exec::set_row_blocks(*rb);
        f(&inputs[0]);
    }
    for i in 0..iters {
        for (m, (_, rb, f)) in modes.iter().enumerate() {
            sttabt::exec::set_row_blocks(*rb);
            let t0 = Instant::now();
            f(&inputs[i % inputs.len()]);
            total[m] += t0.elapsed().as_secs_f64();
        }
    }
    if std::env::var_os("STAGES").is_some() {
        // executor stage split of each mode (timers on: a little slower)
        for (name, rb, f) in &modes {
            sttabt::exec::set_row_blocks(*rb);
            sttabt::profile::enable(true);
            let t0 = Instant::now();
            for i in 0..iters {
                f(&inputs[i % inputs.len()]);
            }
            let wall = t0.elapsed().as_secs_f64();
            let st = sttabt::profile::take();
            sttabt::profile::enable(false);
            let ms: Vec<String> = st.iter().map(|s| format!("{:.3}", s * 1e3 / iters as f64)).collect();
            println!("{name:10} wall {:.3} ms; embed/gather/proj/attn/attn-out/ffn ms: {}", wall * 1e3 / iters as f64, ms.join(" "));
        }
    }
    for (m, (name, _, _)) in modes.iter().enumerate() {
        let ms = total[m] * 1e3 / iters as f64;
        println!("{name:10} {ms:8.3} ms  {:6.1}% of dense", 100.0 * total[m] / total[0]);
    }
    Ok(())
}
