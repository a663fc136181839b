//! Times one head of attention (`kernels::attention_head`) at the ApproxNet's and the teacher's
//! head sizes: `cargo bench --bench attn_probe -- [n] [iters]`.
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(128);
    let iters: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(2000);
    let mut rng = fastrand::Rng::with_seed(1);
    for (dh, heads) in [(8usize, 12usize), (32, 12)] {
        let d = dh * heads;
        let q: Vec<f32> = (0..n * d).map(|_| rng.f32() - 0.5).collect();
        let kv: Vec<f32> = (0..n * 2 * d).map(|_| rng.f32() - 0.5).collect();
        let mut probs = vec![0.0f32; n * n];
        let mut ctx = vec![0.0f32; n * d];
        let mut kt = vec![0.0f32; dh * n.div_ceil(16) * 16];
        for keep_probs in [true, false] {
            let p: &mut [f32] = if keep_probs { &mut probs } else { &mut [] };
            let t0 = Instant::now();
            for _ in 0..iters {
                // SAFETY: ctx has n rows of d columns; one head at a time.
                unsafe { sttabt::kernels::attention_head(&q, d, &kv, 2 * d, d, None, None, n, n, dh, p, ctx.as_mut_ptr(), d, &mut kt) };
            }
            let dt = t0.elapsed().as_secs_f64() / iters as f64;
            let flops = 4.0 * (n * n * dh) as f64;
            println!(
                "dh {dh:2} n {n}, probabilities {}: {:7.2} us per head, {:6.1} GFLOP/s (QK + PV)",
                if keep_probs { "kept" } else { "not kept" },
                dt * 1e6,
                flops / dt / 1e9
            );
        }
    }
}
