//! `sttabt bench`: dense vs every sparse mode on the same model and thread pool, side by side in
//! one run, at several batch sizes, on real Rotten Tomatoes sentences (own lengths) and synthetic
//! lengths; examples/s, p50/p90 call latency, a per-stage breakdown (tokenize, ApproxNet,
//! planning, executor, head), ratios against dense, peak RSS (dense vs sparse), and optionally
//! the ONNX Runtime dense peer (`../shared/peers/ort_dense.py`) run on the same sentences.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::encoder::{BertModel, EncodedInput, RunOptions};
use crate::infer::abt_plans_timed;
use crate::plan::TokenPlan;
use crate::planners::abt::AbtConfig;
use crate::planners::topk::ManualTopK;

/// What to benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchOptions {
    /// Fine-tuned teacher (with a classification head).
    pub model: PathBuf,
    /// Its ApproxNet (for the `abt` mode); `None` skips `abt`.
    pub approx: Option<PathBuf>,
    /// RT sentences (test split first, then dev) to time; 0 = skip the RT workload.
    pub rt_examples: usize,
    /// ABT keep fraction on RT sentences.
    pub rt_keep: f64,
    /// Synthetic lengths (e.g. 128, 256).
    pub lengths: Vec<usize>,
    /// Synthetic examples per (length, batch) workload.
    pub synth_examples: usize,
    /// Keep fraction of the sparse modes on synthetic lengths (0.3 = 30% retention).
    pub synth_keep: f64,
    /// Batch sizes (e.g. 1, 32).
    pub batches: Vec<usize>,
    /// Timed passes per workload (median reported).
    pub repeats: usize,
    /// Measure peak RSS of dense vs sparse at batch 32, length 256.
    pub memory: bool,
    /// Concrete-mask runs (directories from `sttabt concrete`) timed on the RT workload.
    #[serde(default)]
    pub concrete: Vec<PathBuf>,
    /// LTP runs (directories from `sttabt ltp`) timed on the RT workload.
    #[serde(default)]
    pub ltp: Vec<PathBuf>,
    /// `Some("ort")`: also run the ONNX Runtime dense peer.
    pub peer: Option<String>,
    /// Python interpreter for the peer (default: `$STTABT_PEER_PYTHON`, `.venv-peer/bin/python`, `python3`).
    pub python: Option<PathBuf>,
    /// The peer script (default `../shared/peers/ort_dense.py`).
    pub peer_script: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            model: crate::assets::home().join("runs/demo/teacher"),
            approx: Some(crate::assets::home().join("runs/demo/approx")),
            rt_examples: 200,
            rt_keep: 0.5,
            lengths: vec![128, 256],
            synth_examples: 8,
            synth_keep: 0.3,
            batches: vec![1, 32],
            repeats: 3,
            memory: true,
            // the default demo's within-1-point operating points, where it has trained them
            concrete: [crate::assets::home().join("runs/demo/concrete_theta0")].into_iter().filter(|d| d.join("concrete.json").exists()).collect(),
            ltp: [crate::assets::home().join("runs/demo/ltp_lambda0.5")].into_iter().filter(|d| d.join("ltp.json").exists()).collect(),
            peer: None,
            python: None,
            peer_script: None,
        }
    }
}

/// Seconds spent per stage, summed over a pass (divide by examples for per-example figures).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stages {
    pub tokenize: f64,
    pub approx: f64,
    pub planning: f64,
    pub executor: f64,
    pub head: f64,
    /// The executor's time by stage; the rest of `executor` is plan bookkeeping, scatter and
    /// allocation.
    #[serde(default)]
    pub executor_stages: ExecutorStages,
}

/// The executor's time split by [`crate::profile::Stage`] (same units as [`Stages`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecutorStages {
    pub embed: f64,
    pub gather: f64,
    pub projections: f64,
    pub attention: f64,
    pub attention_output: f64,
    pub feed_forward: f64,
}

impl ExecutorStages {
    fn as_array(&self) -> [f64; crate::profile::STAGES] {
        [self.embed, self.gather, self.projections, self.attention, self.attention_output, self.feed_forward]
    }

    fn from_array(a: [f64; crate::profile::STAGES]) -> Self {
        let [embed, gather, projections, attention, attention_output, feed_forward] = a;
        Self { embed, gather, projections, attention, attention_output, feed_forward }
    }
}

impl Stages {
    fn add_executor_stages(&mut self, t: [f64; crate::profile::STAGES]) {
        let mut a = self.executor_stages.as_array();
        for (x, y) in a.iter_mut().zip(t) {
            *x += y;
        }
        self.executor_stages = ExecutorStages::from_array(a);
    }
}

/// One (workload, batch, mode) measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRow {
    pub workload: String,
    pub batch: usize,
    pub mode: String,
    pub examples: usize,
    /// Median over passes.
    pub examples_per_s: f64,
    /// Call (batch) latency, milliseconds, median over passes of the per-pass p50/p90.
    pub p50_ms: f64,
    pub p90_ms: f64,
    /// Mean retention (section 5) of the executed plans.
    pub retention: f64,
    /// Encoder GFLOP/s actually executed by the teacher (sparse FLOPs / executor time).
    pub exec_gflops_per_s: f64,
    /// Per-example stage times (ms), from the median pass.
    pub stage_ms: Stages,
    /// examples/s relative to dense on the same workload and batch.
    pub vs_dense: f64,
    /// examples/s relative to the peer (when run).
    pub vs_peer: Option<f64>,
}

/// Peak RSS (VmHWM after resetting it) of one dense and one sparse run of batch 32 x length 256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRow {
    pub mode: String,
    pub peak_rss_mib: f64,
    /// Peak minus the RSS before the run (what the run itself added).
    pub added_mib: f64,
}

/// Everything `sttabt bench` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub threads: usize,
    pub simd: String,
    /// Whether the linear layers of up to 256 rows ran on the packed AVX-512 GEMM
    /// (`kernels::packed`; off without AVX-512F or with `STTABT_NO_PACKED_GEMM`).
    #[serde(default)]
    pub packed_gemm: bool,
    pub rows: Vec<BenchRow>,
    pub memory: Vec<MemoryRow>,
    /// Peer examples/s per (workload, batch), when run.
    pub peer: Vec<(String, usize, f64)>,
    pub peer_note: Option<String>,
}

/// Synthetic `[CLS] w... [SEP]` of length `n`, deterministic per example.
pub fn synthetic_input(n: usize, example: usize) -> EncodedInput {
    let mut rng = fastrand::Rng::with_seed(0x5EED + example as u64);
    let mut ids: Vec<u32> = Vec::with_capacity(n);
    ids.push(101);
    ids.extend((1..n.saturating_sub(1)).map(|_| rng.u32(1996..29_000)));
    if n > 1 {
        ids.push(102);
    }
    EncodedInput { type_ids: vec![0; ids.len()], ids, patches: Vec::new() }
}

/// Fixed plan: the first `ceil(keep n)` tokens at every layer, only CLS at the top.
pub fn keep_first_plan(n: usize, layers: usize, keep: f64) -> TokenPlan {
    let c = crate::planners::abt::keep_count(keep, n);
    TokenPlan::from_inputs(n, vec![(0..c).collect(); layers], vec![0]).expect("valid plan")
}

#[derive(Clone)]
enum BMode {
    Dense,
    Abt(f64),
    /// ABT with the keep fraction found by [`calibrate_abt_keep`] for a mean retention (section 5).
    AbtAt { k: f64, retention: f64 },
    TopK(f64),
    Fixed(f64),
    /// The i-th concrete-mask run (its own teacher and ApproxNet).
    Concrete(usize),
    /// The i-th LTP run (its own teacher).
    Ltp(usize),
}

impl BMode {
    fn label(&self) -> String {
        match self {
            BMode::Dense => "dense".into(),
            BMode::Abt(k) => format!("abt k={k:.2}"),
            BMode::AbtAt { k, retention } => format!("abt@{retention:.2} k={k:.3}"),
            BMode::TopK(k) => format!("topk k_min={k:.2}"),
            BMode::Fixed(k) => format!("fixed keep={k:.2}"),
            BMode::Concrete(i) => format!("concrete #{i}"),
            BMode::Ltp(i) => format!("ltp #{i}"),
        }
    }

    fn label_in(&self, cx: &Ctx) -> String {
        match self {
            BMode::Concrete(i) => format!("concrete θ0={}", cx.concrete[*i].theta0),
            BMode::Ltp(i) => format!("ltp λ={}", cx.ltp[*i].lambda),
            _ => self.label(),
        }
    }
}

struct Ctx<'a> {
    teacher: &'a BertModel,
    approx: Option<&'a BertModel>,
    concrete: &'a [crate::train::concrete::ConcreteModel],
    ltp: &'a [crate::train::ltp::LtpModel],
}

/// One batch end to end from token ids; returns stage seconds and sum of retentions and FLOPs.
fn run_batch(cx: &Ctx, inputs: &[EncodedInput], mode: &BMode, st: &mut Stages) -> anyhow::Result<(f64, f64)> {
    let t = cx.teacher;
    let big_l = t.layers.len();
    let c = &t.config;
    // The executor's clock starts here, or after the planning of the ApproxNet-based modes (their
    // ApproxNet pass goes to `approx`/`planning`, and its layers are not the executor's stages).
    let mut te = Instant::now();
    let mut planned = || {
        crate::profile::take();
        te = Instant::now();
    };
    let (model, outs, plans) = match mode {
        BMode::Dense => {
            let plans: Vec<TokenPlan> = inputs.iter().map(|x| TokenPlan::dense_cls(x.len(), big_l)).collect();
            (t, t.run(inputs, &plans, RunOptions::default())?, plans)
        }
        BMode::Fixed(k) => {
            let plans: Vec<TokenPlan> = inputs.iter().map(|x| keep_first_plan(x.len(), big_l, *k)).collect();
            (t, t.run(inputs, &plans, RunOptions::default())?, plans)
        }
        BMode::Abt(k) | BMode::AbtAt { k, .. } => {
            let a = cx.approx.ok_or_else(|| anyhow::anyhow!("abt needs an ApproxNet"))?;
            let (plans, ta, tp) = abt_plans_timed(a, inputs, &AbtConfig::topk(*k))?;
            st.approx += ta;
            st.planning += tp;
            planned();
            (t, t.run(inputs, &plans, RunOptions::default())?, plans)
        }
        BMode::Concrete(i) => {
            // ApproxNet pass + concrete scores and masks, all in the `approx` column
            let m = &cx.concrete[*i];
            let ta = Instant::now();
            let plans = crate::infer::concrete_plans(&m.approx.model, inputs, &m.theta)?;
            st.approx += ta.elapsed().as_secs_f64();
            planned();
            (&m.teacher, m.teacher.run(inputs, &plans, RunOptions::default())?, plans)
        }
        BMode::TopK(k) => {
            let hook = ManualTopK { k_min: *k, layers: big_l };
            let (o, p) = t.run_feed_forward(inputs, &hook, &[0], RunOptions::default())?;
            (t, o, p)
        }
        BMode::Ltp(i) => {
            let m = &cx.ltp[*i];
            let hook = crate::planners::ltp::LtpPlanner { theta: m.theta.clone() };
            let (o, p) = m.teacher.run_feed_forward(inputs, &hook, &m.teacher.top_tokens(), RunOptions::default())?;
            (&m.teacher, o, p)
        }
    };
    st.executor += te.elapsed().as_secs_f64();
    st.add_executor_stages(crate::profile::take());
    let th = Instant::now();
    for x in &outs {
        std::hint::black_box(model.logits_of(x)?);
    }
    st.head += th.elapsed().as_secs_f64();
    Ok(sums(c, &plans, matches!(mode, BMode::Dense)))
}

/// The ABT keep fraction `k` (top-k form, ALGORITHM.md section 3) whose plans on `inputs` have a
/// mean retention (section 5) closest to `target` (0..1): bisection over `k`, retention being
/// non-decreasing in `k`. Lets the bench compare ABT and the fixed plan at the same retention (ABT
/// keeps more tokens in early layers than its final `k`: k = 0.3 gives ~41% retention).
///
/// Errors: the ApproxNet pass fails (bad input).
pub fn calibrate_abt_keep(approx: &BertModel, inputs: &[EncodedInput], target: f64) -> anyhow::Result<f64> {
    let retention = |k: f64| -> anyhow::Result<f64> {
        let plans = crate::infer::abt_plans(approx, inputs, &AbtConfig::topk(k))?;
        Ok(plans.iter().map(|p| p.retention()).sum::<f64>() / plans.len().max(1) as f64)
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut best = (f64::INFINITY, 1.0);
    for _ in 0..14 {
        let k = 0.5 * (lo + hi);
        let r = retention(k)?;
        if (r - target).abs() < best.0 {
            best = ((r - target).abs(), k);
        }
        if r < target {
            lo = k;
        } else {
            hi = k;
        }
    }
    Ok(best.1)
}

fn sums(c: &crate::config::EncoderConfig, plans: &[TokenPlan], dense: bool) -> (f64, f64) {
    let mut r = 0.0;
    let mut f = 0.0;
    for p in plans {
        r += if dense { 1.0 } else { p.retention() };
        f += p.flops(c.hidden_size, c.intermediate_size).total as f64;
    }
    (r, f)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn median(mut v: Vec<f64>) -> f64 {
    percentile(&mut v, 0.5)
}

/// Time `mode` on `inputs` in batches of `batch`: `repeats` passes after one warm-up batch.
fn measure(cx: &Ctx, workload: &str, inputs: &[EncodedInput], batch: usize, mode: &BMode, repeats: usize, tokenize_s: f64) -> anyhow::Result<BenchRow> {
    let mut warm = Stages::default();
    run_batch(cx, &inputs[..batch.min(inputs.len())], mode, &mut warm)?;
    let mut passes: Vec<(f64, f64, f64, Stages, f64, f64)> = Vec::new();
    for _ in 0..repeats.max(1) {
        let mut st = Stages::default();
        let mut lat = Vec::new();
        let (mut ret, mut flops) = (0.0, 0.0);
        crate::profile::take();
        let start = Instant::now();
        for chunk in inputs.chunks(batch) {
            let c0 = Instant::now();
            let (r, f) = run_batch(cx, chunk, mode, &mut st)?;
            lat.push(c0.elapsed().as_secs_f64() * 1e3);
            ret += r;
            flops += f;
        }
        let wall = start.elapsed().as_secs_f64();
        let p50 = percentile(&mut lat, 0.5);
        let p90 = percentile(&mut lat, 0.9);
        passes.push((inputs.len() as f64 / wall, p50, p90, st, ret, flops));
    }
    passes.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mid = passes.len() / 2;
    let p50 = median(passes.iter().map(|p| p.1).collect());
    let p90 = median(passes.iter().map(|p| p.2).collect());
    let (eps, _, _, st, ret, flops) = passes.swap_remove(mid);
    let n = inputs.len() as f64;
    let ms = |s: f64| s / n * 1e3;
    Ok(BenchRow {
        workload: workload.into(),
        batch,
        mode: mode.label_in(cx),
        examples: inputs.len(),
        examples_per_s: eps,
        p50_ms: p50,
        p90_ms: p90,
        retention: ret / n,
        exec_gflops_per_s: if st.executor > 0.0 { flops / st.executor / 1e9 } else { 0.0 },
        stage_ms: Stages { tokenize: ms(tokenize_s), approx: ms(st.approx), planning: ms(st.planning), executor: ms(st.executor), head: ms(st.head), executor_stages: ExecutorStages::from_array(st.executor_stages.as_array().map(ms)) },
        vs_dense: 1.0,
        vs_peer: None,
    })
}

fn read_status_kib(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// Peak RSS of one run: resets VmHWM (`/proc/self/clear_refs` = 5) before it.
fn peak_rss(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64)> {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = read_status_kib("VmRSS:").unwrap_or(0.0);
    f()?;
    let peak = read_status_kib("VmHWM:").unwrap_or(0.0);
    Ok((peak / 1024.0, (peak - before).max(0.0) / 1024.0))
}

/// Run the whole benchmark.
/// Check the options before anything is loaded or timed: flag values, and that the peer (when
/// asked for) can run at all (its script found, its Python able to import onnxruntime).
pub fn check_options(opts: &BenchOptions) -> anyhow::Result<()> {
    let frac = |name: &str, v: f64| -> anyhow::Result<()> {
        anyhow::ensure!(v > 0.0 && v <= 1.0, "{name} must be in (0, 1], got {v}");
        Ok(())
    };
    frac("--keep", opts.synth_keep)?;
    frac("--rt-keep", opts.rt_keep)?;
    anyhow::ensure!(!opts.batches.is_empty() && opts.batches.iter().all(|&b| b >= 1), "--batches: every batch size must be >= 1, got {:?}", opts.batches);
    anyhow::ensure!(opts.lengths.iter().all(|&n| n >= 2), "--lengths: every synthetic length must be >= 2 tokens ([CLS] and [SEP] included), got {:?}", opts.lengths);
    anyhow::ensure!(opts.repeats >= 1, "--repeats must be >= 1");
    anyhow::ensure!(opts.synth_examples >= 1 || opts.lengths.is_empty(), "--synth-examples must be >= 1");
    anyhow::ensure!(opts.rt_examples > 0 || !opts.lengths.is_empty(), "nothing to time: --rt 0 and no --lengths");
    if let Some(p) = &opts.peer {
        anyhow::ensure!(p == "ort", "unknown peer {p:?} (only `ort`)");
        let script = peer_script(opts);
        anyhow::ensure!(script.exists(), "peer script {} not found; pass --peer-script PATH (it is shared/peers/ort_dense.py beside the repository)", script.display());
        let py = opts.python.clone().unwrap_or_else(default_python);
        let out = std::process::Command::new(&py)
            .args(["-c", "import numpy, onnx, onnxruntime, safetensors, tokenizers"])
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run the peer's Python {}: {e}; pass --python PATH", py.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "the peer's Python {} cannot import its packages ({}); pass --python PATH to one that has them (pip install numpy onnx onnxruntime safetensors tokenizers) or set STTABT_PEER_PYTHON",
            py.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").trim()
        );
    }
    Ok(())
}

/// The peer script: `--peer-script`, else `../shared/peers/ort_dense.py` from the current
/// directory (the repository root), else beside the source tree this binary was built from.
fn peer_script(opts: &BenchOptions) -> PathBuf {
    if let Some(p) = &opts.peer_script {
        return p.clone();
    }
    let rel = PathBuf::from("../shared/peers/ort_dense.py");
    if rel.exists() {
        return rel;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/ort_dense.py");
    if built.exists() {
        built
    } else {
        rel
    }
}

pub fn run_bench(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    check_options(opts)?;
    let teacher = BertModel::load(&opts.model)?;
    anyhow::ensure!(teacher.classifier.is_some(), "{} has no classification head; fine-tune one with `sttabt finetune`", opts.model.display());
    anyhow::ensure!(
        teacher.config.vision().is_none(),
        "{} is a ViT/DeiT; `sttabt bench` measures text workloads. For images, `sttabt eval --vision` measures every mode's images/s at batch 1 and 32 side by side",
        opts.model.display()
    );
    let approx = match &opts.approx {
        Some(p) => Some(crate::approx::ApproxNet::load(p, &teacher.config)?.model),
        None => None,
    };
    // Memory first, with only the teacher and its ApproxNet loaded (not the concrete/LTP runs'
    // models), after a warm-up that builds the packed weight panels the timed runs also use.
    let mut memory = Vec::new();
    if opts.memory {
        let cx = Ctx { teacher: &teacher, approx: approx.as_ref(), concrete: &[], ltp: &[] };
        let inputs: Vec<EncodedInput> = (0..32).map(|e| synthetic_input(256, e)).collect();
        let mut st = Stages::default();
        let mut mem_modes = vec![BMode::Dense, BMode::Fixed(opts.synth_keep)];
        if approx.is_some() {
            mem_modes.push(BMode::Abt(opts.synth_keep));
        }
        for m in &mem_modes {
            run_batch(&cx, &inputs[..1], m, &mut st)?;
        }
        for m in mem_modes {
            let (peak, added) = peak_rss(|| run_batch(&cx, &inputs, &m, &mut st).map(|_| ()))?;
            memory.push(MemoryRow { mode: m.label(), peak_rss_mib: peak, added_mib: added });
        }
    }
    let concrete: Vec<_> = opts.concrete.iter().map(|d| crate::train::concrete::ConcreteModel::load(d).map_err(|e| anyhow::anyhow!("loading concrete run {}: {e:#}", d.display()))).collect::<anyhow::Result<_>>()?;
    let ltp: Vec<_> = opts.ltp.iter().map(|d| crate::train::ltp::LtpModel::load(d).map_err(|e| anyhow::anyhow!("loading LTP run {}: {e:#}", d.display()))).collect::<anyhow::Result<_>>()?;
    for (what, cfg) in concrete.iter().map(|m| ("concrete", &m.teacher.config)).chain(ltp.iter().map(|m| ("LTP", &m.teacher.config))) {
        anyhow::ensure!(
            cfg.hidden_size == teacher.config.hidden_size && cfg.num_layers == teacher.config.num_layers && cfg.intermediate_size == teacher.config.intermediate_size,
            "a {what} run's teacher is not the architecture of {} (the bench compares one model's modes)",
            opts.model.display()
        );
    }
    let cx = Ctx { teacher: &teacher, approx: approx.as_ref(), concrete: &concrete, ltp: &ltp };
    // Executor stage timers on for the whole bench, off again however it ends.
    struct ProfileOn;
    impl Drop for ProfileOn {
        fn drop(&mut self) {
            crate::profile::enable(false);
        }
    }
    crate::profile::enable(true);
    let _profile = ProfileOn;
    let big_l = teacher.layers.len();
    let mut rows: Vec<BenchRow> = Vec::new();
    let mut rt_sentences: Vec<String> = Vec::new();

    // Workloads: (name, inputs, tokenize seconds, sparse keep).
    let mut workloads: Vec<(String, Vec<EncodedInput>, f64, f64)> = Vec::new();
    if opts.rt_examples > 0 {
        let splits = crate::data::rt::load_rotten_tomatoes(&crate::assets::rotten_tomatoes_path(), 0)?;
        rt_sentences = splits.test.examples.iter().chain(&splits.dev.examples).take(opts.rt_examples).map(|e| e.text.clone()).collect();
        let tok = crate::text::tokenizer::TextTokenizer::from_dir(&opts.model, 512)?;
        let t0 = Instant::now();
        let inputs: Vec<EncodedInput> = rt_sentences.iter().map(|s| tok.encode(s, None).map(|t| t.input)).collect::<Result<_, _>>()?;
        let tok_s = t0.elapsed().as_secs_f64();
        workloads.push(("rt".into(), inputs, tok_s, opts.rt_keep));
    }
    for &n in &opts.lengths {
        let k = opts.synth_examples.max(*opts.batches.iter().max().unwrap_or(&1));
        workloads.push((format!("T{n}"), (0..k).map(|e| synthetic_input(n, e)).collect(), 0.0, opts.synth_keep));
    }
    for (name, inputs, tok_s, keep) in &workloads {
        let mut modes = vec![BMode::Dense];
        if let Some(a) = &approx {
            modes.push(BMode::Abt(*keep));
            if name != "rt" {
                // and ABT at the fixed plan's nominal retention (its k calibrated on these inputs)
                let k = calibrate_abt_keep(a, inputs, *keep)?;
                modes.push(BMode::AbtAt { k, retention: *keep });
            }
        }
        // manual top-k with the final keep fraction at the target
        modes.push(BMode::TopK(*keep));
        if name != "rt" {
            modes.push(BMode::Fixed(*keep));
        } else {
            modes.extend((0..concrete.len()).map(BMode::Concrete));
            modes.extend((0..ltp.len()).map(BMode::Ltp));
        }
        for &b in &opts.batches {
            let mut dense_eps = None;
            for m in &modes {
                let mut row = measure(&cx, name, inputs, b, m, opts.repeats, *tok_s)?;
                let d = *dense_eps.get_or_insert(row.examples_per_s);
                row.vs_dense = row.examples_per_s / d;
                rows.push(row);
            }
        }
    }

    let mut report = BenchReport { threads: rayon::current_num_threads(), simd: crate::kernels::simd_level().into(), packed_gemm: crate::kernels::packed::available(), rows, memory, peer: Vec::new(), peer_note: None };
    if opts.peer.is_some() {
        match run_peer(opts, &rt_sentences, big_l) {
            Ok(peer) => {
                for row in report.rows.iter_mut() {
                    if let Some((_, _, eps)) = peer.iter().find(|(w, b, _)| *w == row.workload && *b == row.batch) {
                        row.vs_peer = Some(row.examples_per_s / eps);
                    }
                }
                report.peer = peer;
            }
            Err(e) => report.peer_note = Some(format!("peer failed: {e:#}")),
        }
    }
    Ok(report)
}

fn default_python() -> PathBuf {
    if let Ok(p) = std::env::var("STTABT_PEER_PYTHON") {
        return PathBuf::from(p);
    }
    for c in [".venv-peer/bin/python", "../.venv-peer/bin/python"] {
        if Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    PathBuf::from("python3")
}

/// Run `ort_dense.py --bench` on the same sentences, threads and lengths; `(workload, batch, ex/s)`.
fn run_peer(opts: &BenchOptions, sentences: &[String], _layers: usize) -> anyhow::Result<Vec<(String, usize, f64)>> {
    let script = peer_script(opts);
    anyhow::ensure!(script.exists(), "peer script {} not found (--peer-script)", script.display());
    let py = opts.python.clone().unwrap_or_else(default_python);
    let dir = std::env::temp_dir().join(format!("sttabt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sent = dir.join("sentences.txt");
    let text: String = sentences.iter().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ") + "\n").collect();
    std::fs::write(&sent, text)?;
    let json = dir.join("ort.json");
    let threads = rayon::current_num_threads();
    let lengths: Vec<String> = opts.lengths.iter().map(|l| l.to_string()).collect();
    let batches: Vec<String> = opts.batches.iter().map(|l| l.to_string()).collect();
    let mut cmd = std::process::Command::new(&py);
    cmd.arg(&script).arg("--model").arg(&opts.model).arg("--bench").arg("--threads").arg(threads.to_string()).arg("--repeats").arg(opts.repeats.max(1).to_string()).arg("--json-out").arg(&json).arg("--onnx-out").arg(dir.join("model.onnx"));
    if !sentences.is_empty() {
        cmd.arg("--sentences").arg(&sent).arg("--limit").arg("0");
    }
    if !lengths.is_empty() {
        cmd.arg("--lengths").arg(lengths.join(",")).arg("--synth-batches").arg(batches.join(","));
    }
    let out = cmd.output().map_err(|e| anyhow::anyhow!("cannot run {}: {e} (pip install onnx onnxruntime numpy safetensors tokenizers)", py.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    anyhow::ensure!(out.status.success(), "{} exited with {}: {}", script.display(), out.status, lines[lines.len().saturating_sub(5)..].join(" | "));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let w = &v["workloads"];
    let get = |k: &str| w[k]["ex_s"]["median"].as_f64();
    let mut res = Vec::new();
    if let Some(x) = get("a_b1") {
        res.push(("rt".to_string(), 1, x));
    }
    if let Some(x) = get("c_b32_sorted") {
        res.push(("rt".to_string(), 32, x));
    }
    for &n in &opts.lengths {
        for &b in &opts.batches {
            if let Some(x) = get(&format!("d_T{n}_b{b}")) {
                res.push((format!("T{n}"), b, x));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(res)
}

/// The report as a text table.
pub fn format_report(r: &BenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "threads {}, element-wise SIMD {}, packed AVX-512 GEMM {}; stage times are ms per example",
        r.threads,
        r.simd,
        if r.packed_gemm { "on" } else { "off (gemm crate only)" }
    );
    let _ = writeln!(
        s,
        "{:<6} {:>3} {:<18} {:>8} {:>8} {:>8} {:>6} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>7}",
        "work", "b", "mode", "ex/s", "p50 ms", "p90 ms", "ret", "GFLOP/s", "tok", "approx", "plan", "exec", "head", "xdense", "xpeer"
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:<6} {:>3} {:<18} {:>8.1} {:>8.2} {:>8.2} {:>6.3} {:>7.1} {:>6.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>6.2} {:>7}",
            row.workload,
            row.batch,
            row.mode,
            row.examples_per_s,
            row.p50_ms,
            row.p90_ms,
            row.retention,
            row.exec_gflops_per_s,
            row.stage_ms.tokenize,
            row.stage_ms.approx,
            row.stage_ms.planning,
            row.stage_ms.executor,
            row.stage_ms.head,
            row.vs_dense,
            row.vs_peer.map_or("-".into(), |v| format!("{v:.2}"))
        );
    }
    let _ = writeln!(s, "executor stages, ms per example (rest: plan bookkeeping, scatter, allocation):");
    let _ = writeln!(s, "{:<6} {:>3} {:<18} {:>7} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>7}", "work", "b", "mode", "exec", "embed", "gather", "qkv", "attention", "attnout", "ffn", "rest");
    for row in &r.rows {
        let e = row.stage_ms.executor_stages.as_array();
        let rest = row.stage_ms.executor - e.iter().sum::<f64>();
        let _ = writeln!(
            s,
            "{:<6} {:>3} {:<18} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>9.3} {:>7.3} {:>7.3} {:>7.3}",
            row.workload, row.batch, row.mode, row.stage_ms.executor, e[0], e[1], e[2], e[3], e[4], e[5], rest
        );
    }
    if !r.peer.is_empty() {
        let _ = writeln!(s, "peer (ONNX Runtime dense) ex/s:");
        for (w, b, x) in &r.peer {
            let _ = writeln!(s, "  {w:<6} b{b:<3} {x:>8.1}");
        }
    }
    if let Some(n) = &r.peer_note {
        let _ = writeln!(s, "{n}");
    }
    if !r.memory.is_empty() {
        let _ = writeln!(s, "peak RSS, batch 32 x length 256 (VmHWM; added = peak - RSS before):");
        for m in &r.memory {
            let _ = writeln!(s, "  {:<18} peak {:>8.1} MiB  added {:>8.1} MiB", m.mode, m.peak_rss_mib, m.added_mib);
        }
    }
    s
}
