//! Packed GEMM with and without the fused GELU on the ApproxNet's feed-forward shape, one
//! thread: `cargo bench --bench gelu_probe`.
use std::time::Instant;

fn main() {
    {
        let x0: Vec<f32> = (0..24576).map(|i| (i as f32 / 24576.0 - 0.5) * 8.0).collect();
        let mut x = x0.clone();
        let t0 = Instant::now();
        for _ in 0..1000 {
            x.copy_from_slice(&x0);
            sttabt::kernels::activate_fast(&mut x, sttabt::model::config::Activation::Gelu);
            std::hint::black_box(&mut x);
        }
        println!("gelu over 24576 floats: {:.3} ns/element (pool)", t0.elapsed().as_secs_f64() / 1000.0 / 24576.0 * 1e9);
        let t0 = Instant::now();
        for _ in 0..1000 {
            x.copy_from_slice(&x0);
            sttabt::kernels::serial(|| sttabt::kernels::activate_fast(&mut x, sttabt::model::config::Activation::Gelu));
            std::hint::black_box(&mut x);
        }
        println!("gelu over 24576 floats: {:.3} ns/element (one thread)", t0.elapsed().as_secs_f64() / 1000.0 / 24576.0 * 1e9);
    }
    let mut rng = fastrand::Rng::with_seed(3);
    for &(m, k, n) in &[(64usize, 96usize, 384usize), (64, 384, 96), (64, 96, 192), (64, 96, 96), (128, 384, 1536)] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.f32() - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.f32() - 0.5).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.f32() - 0.5).collect();
        let p = sttabt::kernels::packed::PackedWeights::new(&b, k, n).expect("no AVX-512");
        let mut c = vec![0.0f32; m * n];
        let reps = 20_000_000 / (m * k * n);
        for gelu in [false, true] {
            let mut best = f64::MAX;
            for _ in 0..10 {
                let t0 = Instant::now();
                for _ in 0..reps {
                    sttabt::kernels::serial(|| p.matmul_bias(&a, &bias, &mut c, m, gelu));
                }
                best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
            }
            println!("{m}x{k}x{n} gelu {gelu}: {:.2} us, {:.1} GFLOP/s", best * 1e6, 2.0 * (m * k * n) as f64 / best * 1e-9);
        }
    }
}
