//! The native trainer's dense products at its training shapes (MiniLM: d = 384, FFN 1536; rows
//! M = B·T = 608 at RT b16, 2048 at length 128 b16): fp32 `kernels::matmul_t` (the `gemm` crate)
//! against the AMX-BF16 hi/lo-split kernel (`kernels::matmul_t_bf16x3`), alternating A/B in each
//! round on the rayon pool's threads; GFLOP/s (median and range over rounds) and the relative
//! Frobenius error of both against an f64 product; first, the raw rate of the two tile
//! instructions the kernel is made of (`tdpbf16ps` alone on resident tiles, `tileloadd` alone
//! from L1), in the thread's CPU time. Run: cargo bench --bench amx_bf16_probe [-- ROUNDS]
use std::time::Instant;

use sttabt::kernels;

fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let (mut e, mut w) = (0.0f64, 0.0f64);
    for (g, x) in got.iter().zip(want) {
        e += (*g as f64 - x).powi(2);
        w += x * x;
    }
    (e / w).sqrt()
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    println!("threads {}; AMX-BF16: {}", rayon::current_num_threads(), kernels::amx_bf16_unavailable().unwrap_or("granted"));
    if kernels::amx_bf16_unavailable().is_none() {
        raw_tile_rates();
    }
    let (d, f) = (384usize, 1536usize);
    let mut shapes = Vec::new();
    for rows in [608usize, 2048] {
        for (di, dout) in [(d, d), (d, f), (f, d)] {
            shapes.push((format!("fwd  Y=XW     M={rows} {di}->{dout}"), rows, di, dout, false, false));
            shapes.push((format!("bwd  dX=dY W^T M={rows} {di}->{dout}"), rows, dout, di, false, true));
            shapes.push((format!("bwd  dW=X^T dY M={rows} {di}->{dout}"), di, rows, dout, true, false));
        }
    }
    // small products of the trainer: one head's scores (T = 128, d_h = 32), the classifier
    shapes.push(("head QK^T T=128 d_h=32".to_string(), 128, 32, 128, false, true));
    shapes.push(("classifier b16 384->2".to_string(), 16, 384, 2, false, false));
    println!(
        "{:<34} {:>5} {:>5} {:>5} | {:>18} {:>18} | {:>6} | {:>9} {:>9}",
        "product", "m", "k", "n", "fp32 GFLOP/s", "amx GFLOP/s", "amx/fp32", "err fp32", "err amx"
    );
    let mut rng = fastrand::Rng::with_seed(7);
    for (name, m, k, n, a_t, b_t) in shapes {
        let a: Vec<f32> = (0..m * k).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.f32() * 2.0 - 1.0).collect();
        let at = |i: usize, kk: usize| if a_t { a[kk * m + i] } else { a[i * k + kk] } as f64;
        let bt = |kk: usize, j: usize| if b_t { b[j * k + kk] } else { b[kk * n + j] } as f64;
        let mut want = vec![0.0f64; m * n];
        if m * n * k <= 1 << 29 {
            for i in 0..m {
                for kk in 0..k {
                    let x = at(i, kk);
                    for j in 0..n {
                        want[i * n + j] += x * bt(kk, j);
                    }
                }
            }
        }
        let mut c32 = vec![0.0f32; m * n];
        let mut camx = vec![0.0f32; m * n];
        let flop = 2.0 * (m * n * k) as f64;
        let reps = ((2e9 / flop) as usize).clamp(3, 2000);
        let (mut g32, mut gamx) = (Vec::new(), Vec::new());
        kernels::in_pool(|| {
            kernels::matmul_t(&a, a_t, &b, b_t, &mut c32, m, k, n, false);
            let _ = kernels::matmul_t_bf16x3(&a, a_t, &b, b_t, &mut camx, m, k, n, false);
            for _ in 0..rounds {
                let t = Instant::now();
                for _ in 0..reps {
                    kernels::matmul_t(&a, a_t, &b, b_t, &mut c32, m, k, n, false);
                }
                g32.push(flop * reps as f64 / t.elapsed().as_secs_f64() / 1e9);
                let t = Instant::now();
                for _ in 0..reps {
                    let _ = kernels::matmul_t_bf16x3(&a, a_t, &b, b_t, &mut camx, m, k, n, false);
                }
                gamx.push(flop * reps as f64 / t.elapsed().as_secs_f64() / 1e9);
            }
        });
        let stat = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let (m32, lo32, hi32) = stat(&mut g32);
        let (mamx, loamx, hiamx) = stat(&mut gamx);
        let (e32, eamx) = if m * n * k <= 1 << 29 { (rel_err(&c32, &want), rel_err(&camx, &want)) } else { (f64::NAN, f64::NAN) };
        println!(
            "{name:<34} {m:>5} {k:>5} {n:>5} | {m32:>6.1} [{lo32:>5.0},{hi32:>5.0}] {mamx:>6.1} [{loamx:>5.0},{hiamx:>5.0}] | {:>8.2} | {e32:>9.2e} {eamx:>9.2e}",
            mamx / m32
        );
    }
}

/// This thread's CPU time in seconds (other processes on a busy machine do not count).
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Millions per CPU-second of `tdpbf16ps` on resident tiles (4 independent accumulators) and of
/// `tileloadd` (16 rows of 64 bytes from L1); the tile state was granted by
/// `kernels::amx_bf16_unavailable`.
#[cfg(target_arch = "x86_64")]
fn raw_tile_rates() {
    #[repr(C, align(64))]
    struct Cfg([u8; 64]);
    let mut cfg = Cfg([0; 64]);
    cfg.0[0] = 1;
    for t in 0..8 {
        cfg.0[16 + 2 * t] = 64;
        cfg.0[48 + t] = 16;
    }
    let data = vec![0x3f80u16; 4 * 512];
    let iters = 2_000_000usize;
    let t = cpu_seconds();
    // SAFETY: tile state granted; `data` holds 4 tiles of 1 KiB.
    unsafe {
        std::arch::asm!(
            "ldtilecfg [{cfg}]",
            "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
            "tileloadd tmm4, [{a} + {s} * 1]",
            "tileloadd tmm5, [{a} + {s} * 1 + 1024]",
            "tileloadd tmm6, [{a} + {s} * 1 + 2048]",
            "tileloadd tmm7, [{a} + {s} * 1 + 3072]",
            "2:",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "dec {n}",
            "jnz 2b",
            "tilerelease",
            cfg = in(reg) &cfg as *const Cfg,
            a = in(reg) data.as_ptr(),
            s = in(reg) 64usize,
            n = inout(reg) iters => _,
            options(nostack),
        );
    }
    let tdp = (4 * iters) as f64 / (cpu_seconds() - t) / 1e6;
    let t = cpu_seconds();
    // SAFETY: as above.
    unsafe {
        std::arch::asm!(
            "ldtilecfg [{cfg}]",
            "2:",
            "tileloadd tmm4, [{a} + {s} * 1]",
            "tileloadd tmm5, [{a} + {s} * 1 + 1024]",
            "tileloadd tmm6, [{a} + {s} * 1 + 2048]",
            "tileloadd tmm7, [{a} + {s} * 1 + 3072]",
            "dec {n}",
            "jnz 2b",
            "tilerelease",
            cfg = in(reg) &cfg as *const Cfg,
            a = in(reg) data.as_ptr(),
            s = in(reg) 64usize,
            n = inout(reg) iters => _,
            options(nostack),
        );
    }
    let load = (4 * iters) as f64 / (cpu_seconds() - t) / 1e6;
    println!(
        "raw tile rates per CPU-second: tdpbf16ps {tdp:.1} M/s ({:.1} GFLOP/s bf16), tileloadd {load:.1} M/s ({:.1} GB/s)",
        tdp * 16.0 * 16.0 * 32.0 * 2.0 / 1e3,
        load * 1024.0 / 1e3
    );
}

#[cfg(not(target_arch = "x86_64"))]
fn raw_tile_rates() {}
