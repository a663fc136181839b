//! Measures the `gemm` crate on the executor's matrix shapes (1 and 2 threads): the evidence for
//! stepping outside burn in src/kernels/. Run: cargo bench --bench gemm_probe
use std::time::Instant;
fn mm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32], par: gemm::Parallelism) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}
fn main() {
    for &(m, k, n) in &[(26usize, 384usize, 384usize), (26, 384, 1536), (128, 384, 1536), (832, 384, 1536)] {
        let a = vec![0.01f32; m * k];
        let b = vec![0.02f32; k * n];
        let mut c = vec![0f32; m * n];
        for par in [gemm::Parallelism::None, gemm::Parallelism::Rayon(2)] {
            mm(m, k, n, &a, &b, &mut c, par);
            let it = 300;
            let t = Instant::now();
            for _ in 0..it {
                mm(m, k, n, &a, &b, &mut c, par);
            }
            let dt = t.elapsed().as_secs_f64() / it as f64;
            println!("gemm {m}x{k}x{n} {:?}: {:.1} us, {:.1} GFLOP/s", par, dt * 1e6, 2.0 * (m * k * n) as f64 / dt / 1e9);
        }
    }
}
