//! Times one head of attention (`kernels::attention_head`) at the ApproxNet's and the teacher's
//! head sizes, with each softmax exponential (`kernels::SoftmaxExp`: `exp_softmax`, the default,
//! and the Cephes `exp_approx` it replaced), interleaved over rounds and in this thread's CPU
//! time (`CLOCK_THREAD_CPUTIME_ID`, which a busy machine disturbs less than wall time):
//! `cargo bench --bench attn_probe -- [n] [iters] [rounds]`.
use sttabt::kernels::{set_softmax_exp, SoftmaxExp};

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write; the clock id is a constant Linux defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(128);
    let iters: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(2000);
    let rounds: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut rng = fastrand::Rng::with_seed(1);
    println!("one head, n = {n}: µs per head (median of {rounds} interleaved rounds of {iters} calls, thread CPU time)");
    for (dh, heads) in [(8usize, 12usize), (32, 12)] {
        let d = dh * heads;
        // scores of a few units, as real attention rows have
        let q: Vec<f32> = (0..n * d).map(|_| (rng.f32() - 0.5) * 2.0).collect();
        let kv: Vec<f32> = (0..n * 2 * d).map(|_| (rng.f32() - 0.5) * 2.0).collect();
        let mut probs = vec![0.0f32; n * n];
        let mut ctx = vec![0.0f32; n * d];
        let mut kt = vec![0.0f32; dh * n.div_ceil(16) * 16];
        for keep_probs in [true, false] {
            let mut times = [Vec::new(), Vec::new()];
            for _ in 0..rounds {
                for (i, e) in [SoftmaxExp::Cephes, SoftmaxExp::Fast].into_iter().enumerate() {
                    set_softmax_exp(e);
                    let p: &mut [f32] = if keep_probs { &mut probs } else { &mut [] };
                    let t0 = thread_cpu_seconds();
                    for _ in 0..iters {
                        // SAFETY: ctx has n rows of d columns; one head at a time.
                        unsafe {
                            sttabt::kernels::attention_head(&q, d, &kv, 2 * d, d, None, None, n, n, dh, p, ctx.as_mut_ptr(), d, &mut kt)
                        };
                    }
                    times[i].push((thread_cpu_seconds() - t0) / iters as f64);
                }
            }
            set_softmax_exp(SoftmaxExp::Fast);
            let [cephes, fast] = times.map(median);
            let flops = 4.0 * (n * n * dh) as f64;
            println!(
                "dh {dh:2}, probabilities {:8}: Cephes exp {:7.2} µs, exp_softmax {:7.2} µs ({:.2}x; {:6.1} GFLOP/s QK + PV)",
                if keep_probs { "kept" } else { "not kept" },
                cephes * 1e6,
                fast * 1e6,
                cephes / fast,
                flops / fast / 1e9
            );
        }
    }
}
