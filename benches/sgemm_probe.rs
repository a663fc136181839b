//! Does `gemm`'s per-call weight packing pay for itself? The executor's linear-layer shapes through
//! `kernels::matmul` with `gemm`'s default thresholds and with weight (lhs) packing switched off
//! (`set_lhs_packing_threshold_*` = 256, the API's only handle: it takes no pre-packed operand),
//! alternating in one process so that ratios survive a loaded machine; then the teacher and the
//! ABT planner end to end: `cargo bench --bench sgemm_probe -- [n] [iters]`.
//!
//! Measured in two runs (2 loaded cores, AVX-512): packing off takes 0.88-1.12x the default's
//! time at <= 128 tokens (faster only on the ApproxNet's 96-wide shapes and at 26 tokens) and
//! 1.31-1.34x at 1024 tokens; end to end dense n = 128 b1 1.03-1.08x, ABT planning b1 0.95-1.04x,
//! b32 1.00-1.11x. The thresholds are global, so a per-shape policy would mean racing global
//! state for a few percent: the default stays. A hand-written 8x48 AVX-512 kernel
//! reading the `[k, n]` weights in place (no packing) measured 1.10-1.52x gemm's time on the
//! large shapes (0.80x only at n = 96 outputs) and 1.24x on dense n = 128 b1; it was not kept.
use std::time::Instant;

/// 0: gemm (default thresholds), 1: gemm without weight packing.
fn set_variant(v: usize) {
    let (st, mt) = if v == 1 {
        (256, 256)
    } else {
        (gemm::DEFAULT_LHS_PACKING_THRESHOLD_SINGLE_THREAD, gemm::DEFAULT_LHS_PACKING_THRESHOLD_MULTI_THREAD)
    };
    gemm::set_lhs_packing_threshold_single_thread(st);
    gemm::set_lhs_packing_threshold_multi_thread(mt);
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n_tok: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(128);
    let iters: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(30);
    let mut rng = fastrand::Rng::with_seed(3);
    println!("simd {}, threads {}", sttabt::kernels::simd_level(), rayon::current_num_threads());
    for &(m, k, n) in &[
        (1, 384, 1536),
        (26, 384, 384),
        (26, 384, 1536),
        (128, 384, 768),
        (128, 384, 1536),
        (128, 1536, 384),
        (128, 96, 192),
        (128, 96, 384),
        (128, 384, 96),
        (1024, 384, 1536),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.f32() - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.f32() - 0.5).collect();
        let mut c = vec![0.0f32; m * n];
        let mut ref_c = vec![0.0f32; m * n];
        set_variant(0);
        sttabt::kernels::matmul(&a, &b, &mut ref_c, m, k, n, false);
        set_variant(1);
        sttabt::kernels::matmul(&a, &b, &mut c, m, k, n, false);
        let err = c.iter().zip(&ref_c).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let reps = (20_000_000 / (m * k * n)).clamp(3, 2000);
        let mut t = [0.0f64; 2];
        for _ in 0..iters {
            for i in 0..2 {
                set_variant(i);
                let t0 = Instant::now();
                for _ in 0..reps {
                    sttabt::kernels::matmul(&a, &b, &mut c, m, k, n, true);
                }
                t[i] += t0.elapsed().as_secs_f64() / reps as f64;
            }
        }
        let gf = |s: f64| 2.0 * (m * k * n) as f64 / (s / iters as f64) / 1e9;
        println!(
            "{m:5}x{k:4}x{n:4}: gemm {:6.1}, no-pack {:6.1} GFLOP/s; no-pack/gemm time {:.2}; max|diff| {err:.1e}",
            gf(t[0]),
            gf(t[1]),
            t[1] / t[0]
        );
    }
    let home = sttabt::assets::home().join("runs/demo");
    let teacher = sttabt::Encoder::load(&home.join("teacher"))?;
    let approx = sttabt::approx::ApproxNet::load(&home.join("approx"), &teacher.config)?.model;
    let big_l = teacher.layers.len();
    for batch in [1usize, 32] {
        let inputs: Vec<sttabt::EncodedInput> = (0..batch).map(|e| sttabt::bench::synthetic_input(n_tok, e)).collect();
        let dense: Vec<sttabt::TokenPlan> = inputs.iter().map(|x| sttabt::TokenPlan::dense_cls(x.len(), big_l)).collect();
        let fixed: Vec<sttabt::TokenPlan> = inputs.iter().map(|x| sttabt::bench::keep_first_plan(x.len(), big_l, 0.3)).collect();
        let cfg = sttabt::planners::abt::AbtConfig::topk(0.3);
        let its = if batch == 1 { iters } else { (iters / 6).max(2) };
        let mut t = [[0.0f64; 3]; 2];
        for _ in 0..its {
            for i in 0..2 {
                set_variant(i);
                let t0 = Instant::now();
                std::hint::black_box(teacher.run(&inputs, &dense, sttabt::RunOptions::default())?);
                let t1 = Instant::now();
                std::hint::black_box(teacher.run(&inputs, &fixed, sttabt::RunOptions::default())?);
                let t2 = Instant::now();
                std::hint::black_box(sttabt::planners::abt::abt_plans(&approx, &inputs, &cfg)?);
                let t3 = Instant::now();
                t[i][0] += (t1 - t0).as_secs_f64();
                t[i][1] += (t2 - t1).as_secs_f64();
                t[i][2] += (t3 - t2).as_secs_f64();
            }
        }
        for (j, name) in ["dense", "fixed 30%", "abt planning"].iter().enumerate() {
            let ms = |i: usize| t[i][j] * 1e3 / its as f64;
            println!(
                "n {n_tok} b{batch:<2} {name:13}: gemm {:7.2}, no-pack {:7.2} ms per batch; no-pack/gemm {:.2}",
                ms(0),
                ms(1),
                t[1][j] / t[0][j]
            );
        }
    }
    Ok(())
}
