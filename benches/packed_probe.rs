//! Packed-panel GEMM (`kernels::packed`) against `gemm` on the executor's linear-layer shapes,
//! alternating in one process: `cargo bench --bench packed_probe -- [iters]`.
use std::time::Instant;

fn main() {
    let iters: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut rng = fastrand::Rng::with_seed(3);
    println!("threads {}, packed available {}", rayon::current_num_threads(), sttabt::kernels::packed::available());
    for &(m, k, n) in &[
        (26, 384, 384),
        (26, 384, 1152),
        (26, 384, 1536),
        (26, 1536, 384),
        (128, 384, 384),
        (128, 384, 1536),
        (128, 1536, 384),
        (128, 96, 192),
        (128, 96, 384),
        (128, 384, 96),
        (1024, 96, 96),
        (1024, 96, 192),
        (1024, 96, 384),
        (1024, 384, 96),
        (832, 384, 1536),
        (832, 1536, 384),
        (4096, 384, 1536),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.f32() - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.f32() - 0.5).collect();
        let p = sttabt::kernels::packed::PackedWeights::new(&b, k, n).expect("no AVX-512");
        let mut c = vec![0.0f32; m * n];
        let mut ref_c = vec![0.0f32; m * n];
        sttabt::kernels::matmul(&a, &b, &mut ref_c, m, k, n, false);
        p.matmul(&a, &mut c, m, false);
        let err = c.iter().zip(&ref_c).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let reps = (20_000_000 / (m * k * n)).clamp(2, 2000);
        let mut t = [0.0f64; 2];
        for _ in 0..iters {
            let t0 = Instant::now();
            for _ in 0..reps {
                sttabt::kernels::matmul(&a, &b, &mut c, m, k, n, true);
            }
            t[0] += t0.elapsed().as_secs_f64() / reps as f64;
            let t0 = Instant::now();
            for _ in 0..reps {
                p.matmul(&a, &mut c, m, true);
            }
            t[1] += t0.elapsed().as_secs_f64() / reps as f64;
        }
        let gf = |s: f64| 2.0 * (m * k * n) as f64 / (s / iters as f64) / 1e9;
        println!(
            "{m:5}x{k:4}x{n:4}: gemm {:6.1}, packed {:6.1} GFLOP/s; packed/gemm time {:.2}; max|diff| {err:.1e}",
            gf(t[0]),
            gf(t[1]),
            t[1] / t[0]
        );
    }
}
