//! Int8 GEMM probe (issue 17): GOP/s of each int8 path of `kernels::int8::QuantizedLinear`
//! (AMX-INT8, AVX-512 VNNI, AVX2, fallback; activation quantisation and the dequantising epilogue
//! included) next to the f32 kernels' GFLOP/s (the packed kernel the executor uses up to 256 rows,
//! and `kernels::linear` through the `gemm` crate) at BERT linear-layer shapes (MiniLM d = 384:
//! QKV 384x1152, output 384x384, FFN up 384x1536, FFN down 1536x384) for m = 26 (one RT
//! sentence), 128, 256 and 832 (32 sentences of 26 tokens) rows. One op = one multiply or add.
//!
//! The paths run interleaved (each repeat times every path once per shape, in turn), and the
//! table shows the median of the repeats, so a busy machine slows all paths alike; compare the
//! columns of one run, not runs of different times.
//!
//! `--serial` runs every call on one thread (`kernels::serial`) and times it in that thread's CPU
//! time (`CLOCK_THREAD_CPUTIME_ID`), which other processes on the machine disturb much less than
//! wall time (still through shared caches and frequency): the figure for comparing kernels on a
//! busy machine.
//!
//! `--f32-channels N` adds a column: the picked path on the same layer with `N` input channels
//! computed in f32 in the epilogue (as the int8 calibration keeps 4-8), and its time relative to
//! the plain picked path.
//!
//! `--paths avx2,picked+ch` times only the named paths (the others print NaN).
//!
//! Every int8 path runs twice: on full-range (8-bit) weights, and on reduced-range (7-bit)
//! ones (columns `-w7`; the AVX2 path then multiplies bytes with `vpmaddubsw`).
//!
//! Run: `cargo bench --bench int8_gemm [-- --repeats 9] [--serial] [--rows 1,26,128] [--f32-channels 4] [--paths NAMES] [--json out.json]`;
//! the thread count is rayon's (`RAYON_NUM_THREADS`).

use std::hint::black_box;
use std::time::Instant;

use sttabt::kernels::{self, int8::Int8Kernel, int8::QuantizedLinear, int8::WeightRange, packed::PackedWeights};

/// Seconds each timed sample aims for.
const SAMPLE_S: f64 = 0.004;

type Path<'a> = (String, Box<dyn Fn() + Sync + 'a>);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let repeats: usize = arg("--repeats").map(|r| r.parse().expect("--repeats takes a number")).unwrap_or(7);
    let json = arg("--json");
    let only = arg("--paths");
    let serial = args.iter().any(|a| a == "--serial");
    let side_ch: usize = arg("--f32-channels").map(|r| r.parse().expect("--f32-channels takes a number")).unwrap_or(0);
    let shapes_mk: Vec<usize> =
        arg("--rows").map_or(vec![26, 128, 256, 832], |r| r.split(',').map(|v| v.parse().expect("--rows takes m,m,...")).collect());
    let shapes_kn = [(384usize, 1152usize), (384, 384), (384, 1536), (1536, 384)];
    // every available path on full-range (8-bit) weights, then on reduced-range (7-bit) ones
    let int8_paths: Vec<(String, Int8Kernel, WeightRange)> = [WeightRange::Full, WeightRange::Reduced]
        .into_iter()
        .flat_map(|r| {
            Int8Kernel::ALL
                .into_iter()
                .filter(|k| k.available())
                .map(move |k| (if r == WeightRange::Full { k.name().to_string() } else { format!("{}-w7", k.name()) }, k, r))
        })
        .collect();
    let threads = if serial { 1 } else { rayon::current_num_threads() };
    println!(
        "int8 GEMM probe: {threads} thread(s), {}, CPU SIMD level {}, AMX: {}, median of {repeats} interleaved repeats",
        if serial { "thread CPU time" } else { "wall time" },
        kernels::simd_level(),
        kernels::int8::amx::status()
    );
    let mut header = format!("{:>5} {:>5} {:>5} | {:>10} {:>10}", "m", "k", "n", "f32 packed", "f32 gemm");
    for (name, _, _) in &int8_paths {
        header += &format!(" | {name:>12}");
    }
    if side_ch > 0 {
        header += &format!(" | {:>12} {:>6}", format!("picked+{side_ch}ch"), "time");
    }
    header += &format!(" | {:>7} | {:>7}", "best/f32", "picked");
    println!("{header}\n{}", "-".repeat(header.len()));
    let mut rows_json = Vec::new();
    let mut rng = fastrand::Rng::with_seed(1);
    for &m in &shapes_mk {
        for &(k, n) in &shapes_kn {
            let w: Vec<f32> = (0..k * n).map(|_| (rng.f32() - 0.5) * 0.1).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.f32() - 0.5).collect();
            let x: Vec<f32> = (0..m * k).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let packed = PackedWeights::new(&w, k, n);
            let q = QuantizedLinear::new(&w, &b, k, n).expect("quantise");
            let q7 = QuantizedLinear::with_range(&w, &b, k, n, WeightRange::Reduced).expect("quantise");
            let qc = (side_ch > 0).then(|| {
                let chans: Vec<usize> = (0..side_ch.min(k)).map(|t| t * k / side_ch.min(k)).collect();
                q.with_f32_channels(&w, &chans).expect("f32 channels")
            });
            let out = std::sync::Mutex::new(vec![0.0f32; m * n]);
            let mut paths: Vec<Path<'_>> = Vec::new();
            if let Some(p) = &packed {
                let (p, x, b, out) = (p, &x, &b, &out);
                paths.push(("f32 packed".into(), Box::new(move || p.matmul_bias(black_box(x), b, &mut out.lock().unwrap(), m, false))));
            }
            {
                let (w, x, b, out) = (&w, &x, &b, &out);
                paths.push((
                    "f32 gemm".into(),
                    Box::new(move || kernels::linear(black_box(x), w, b, &mut out.lock().unwrap(), m, k, n, None)),
                ));
            }
            for (name, kernel, range) in &int8_paths {
                let (q, x, out, kernel) = (if *range == WeightRange::Full { &q } else { &q7 }, &x, &out, *kernel);
                paths.push((
                    name.clone(),
                    Box::new(move || q.forward_with(kernel, black_box(x), &mut out.lock().unwrap(), m, false).unwrap()),
                ));
            }
            if let Some(qc) = &qc {
                let (x, out, kernel) = (&x, &out, Int8Kernel::for_rows(m));
                paths.push((
                    "picked+ch".into(),
                    Box::new(move || qc.forward_with(kernel, black_box(x), &mut out.lock().unwrap(), m, false).unwrap()),
                ));
            }
            if let Some(keep) = &only {
                paths.retain(|(name, _)| keep.split(',').any(|k| k == name));
            }
            let secs = if serial {
                kernels::serial(|| time_interleaved(&paths, repeats, thread_cpu_seconds))
            } else {
                kernels::in_pool(|| time_interleaved(&paths, repeats, wall_seconds))
            };
            let ops = 2.0 * (m * k * n) as f64;
            let rate = |name: &str| paths.iter().position(|(p, _)| p == name).map(|i| ops / secs[i] / 1e9);
            let f32_packed = rate("f32 packed");
            let f32_gemm = rate("f32 gemm").unwrap_or(f64::NAN);
            let int8: Vec<f64> = int8_paths.iter().map(|(p, _, _)| rate(p).unwrap_or(f64::NAN)).collect();
            let best_f32 = f32_packed.unwrap_or(0.0).max(f32_gemm);
            let best_int8 = int8.iter().cloned().fold(0.0, f64::max);
            let mut line = format!("{m:>5} {k:>5} {n:>5} | {:>10.1} {f32_gemm:>10.1}", f32_packed.unwrap_or(f64::NAN));
            for r in &int8 {
                line += &format!(" | {r:>12.1}");
            }
            if let Some(r) = rate("picked+ch") {
                let plain = rate(Int8Kernel::for_rows(m).name()).unwrap_or(f64::NAN);
                line += &format!(" | {r:>12.1} {:>5.2}x", plain / r);
            }
            line += &format!(" | {:>7.2}x | {:>7}", best_int8 / best_f32, Int8Kernel::for_rows(m).name());
            println!("{line}");
            let per_path: Vec<String> = int8_paths.iter().zip(&int8).map(|((p, _, _), r)| format!("\"{p}\": {r:.2}")).collect();
            rows_json.push(format!(
                "{{\"m\": {m}, \"k\": {k}, \"n\": {n}, \"f32_packed_gflops\": {}, \"f32_gemm_gflops\": {f32_gemm:.2}, \"int8_gops\": {{{}}}, \"picked\": \"{}\"}}",
                f32_packed.map_or("null".into(), |r| format!("{r:.2}")),
                per_path.join(", "),
                Int8Kernel::for_rows(m).name()
            ));
        }
    }
    println!("(GFLOP/s and GOP/s: 2 m k n / median seconds; int8 includes quantising the activations)");
    if let Some(path) = json {
        let text = format!(
            "{{\"threads\": {threads}, \"clock\": \"{}\", \"repeats\": {repeats}, \"simd\": \"{}\", \"amx\": \"{}\", \"rows\": [\n  {}\n]}}\n",
            if serial { "thread-cpu" } else { "wall" },
            kernels::simd_level(),
            kernels::int8::amx::status(),
            rows_json.join(",\n  ")
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        println!("wrote {path}");
    }
}

/// Median seconds per call of each path over `repeats` rounds; each round times every path in
/// turn (calls per sample calibrated once so that a sample takes about [`SAMPLE_S`]).
fn time_interleaved(paths: &[Path<'_>], repeats: usize, clock: fn() -> f64) -> Vec<f64> {
    let iters: Vec<usize> = paths
        .iter()
        .map(|(_, f)| {
            f();
            let t = clock();
            f();
            ((SAMPLE_S / (clock() - t).max(1e-7)) as usize).clamp(1, 10_000)
        })
        .collect();
    let mut samples = vec![Vec::with_capacity(repeats); paths.len()];
    for _ in 0..repeats {
        for (i, (_, f)) in paths.iter().enumerate() {
            let t = clock();
            for _ in 0..iters[i] {
                f();
            }
            samples[i].push((clock() - t) / iters[i] as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

/// Seconds since the first call (wall clock).
fn wall_seconds() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// CPU seconds the calling thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write; the clock id is a constant Linux defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
