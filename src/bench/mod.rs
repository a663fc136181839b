//! `sttabt bench`: dense vs every sparse mode on the same model and thread pool, side by side in
//! one run, at several batch sizes, on real Rotten Tomatoes sentences (own lengths) and synthetic
//! lengths; examples/s, p50/p90 call latency, a per-stage breakdown (tokenize, ApproxNet,
//! planning, executor, head), ratios against dense, peak RSS (dense vs sparse), and optionally
//! the ONNX Runtime dense peer (`../shared/peers/ort_dense.py`, fp32 or `--int8`) on the same
//! sentences.
//!
//! "dense" is the full plan of ALGORITHM.md section 1 (every row of every layer, what ORT
//! computes); "dense-cls" (only CLS at the top layer) is its own row. The measurement runs in
//! rounds: each round times one fresh pass of every (workload, batch, mode) and, with a peer, one
//! run of the peer, the order alternating (ours then peer, peer then ours, ...). Each row reports
//! the median and range over rounds, and its ratios are medians of the per-round ratios.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::exec::RunOptions;
use crate::model::{EncodedInput, Encoder};
use crate::planners::abt::{Abt, AbtConfig, AttentionSource};
use crate::planners::concrete::Concrete;
use crate::planners::dense::{Dense, DenseCls, KeepFirst};
use crate::planners::ltp::{Ltp, LtpPlanner};
use crate::planners::topk::ManualTopK;
use crate::planners::{Cost, Models, Planner, Schedule};

mod measure;
mod modes;
mod peer;
mod reliability;
mod report;
mod versus;

use measure::*;
pub use modes::calibrate_abt_keep;
use modes::*;
pub use peer::peer_workload;
use peer::*;
pub use reliability::{load_1min, loadavg, reliability_warnings, RoundSpread, MAX_ROUND_SPREAD, MIN_ROUNDS_FOR_SPREAD, SPREAD_MARK};
pub use report::format_report;
pub use versus::{versus_dense, Contender, VersusDense};

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
    /// Timed passes per (workload, batch, mode) within one round (the round's figure is their
    /// median).
    pub repeats: usize,
    /// Rounds (>= 1; >= 3 for a peer comparison): each round runs every row once and the peer
    /// once, alternating which goes first.
    #[serde(default = "default_rounds")]
    pub rounds: usize,
    /// Measure peak RSS of dense vs sparse at batch 32, length 256.
    pub memory: bool,
    /// Concrete-mask runs (directories from `sttabt concrete`) timed on the RT workload.
    #[serde(default)]
    pub concrete: Vec<PathBuf>,
    /// LTP runs (directories from `sttabt ltp`) timed on the RT workload.
    #[serde(default)]
    pub ltp: Vec<PathBuf>,
    /// `Some("ort")`: also run the ONNX Runtime dense peer (fp32); `Some("ort-int8")`: the same
    /// graph under ORT's dynamic int8 quantisation (`ort_dense.py --int8`).
    pub peer: Option<String>,
    /// Python interpreter for the peer (default: `$STTABT_PEER_PYTHON` when set and not empty,
    /// else `./.venv-peer/bin/python`, else `../.venv-peer/bin/python` (from the current
    /// directory), else `python3` from `PATH`).
    pub python: Option<PathBuf>,
    /// The peer script (default `../shared/peers/ort_dense.py`).
    pub peer_script: Option<PathBuf>,
    /// Precision of our teachers' linear layers (the teacher, and the concrete / LTP runs'
    /// teachers); the rows' mode labels end in ` int8` when it is int8.
    #[serde(default)]
    pub precision: crate::model::Precision,
    /// Precision of the ApproxNets' linear layers.
    #[serde(default)]
    pub approx_precision: crate::model::Precision,
    /// More modes timed on the RT workload with the teacher and its ApproxNet (e.g. the planner
    /// of a `--bundle`).
    #[serde(default)]
    pub modes: Vec<crate::infer::Mode>,
    /// Put before the labels of the `modes` rows (e.g. `bundle: ` for `sttabt bench --bundle`),
    /// so that they stand apart from a baseline row of the same planner; empty: the plain label.
    #[serde(default)]
    pub modes_label_prefix: String,
    /// Time dense-cls, ABT at `rt_keep` and manual top-k at `rt_keep` on the RT workload
    /// (default). `false`: only dense and the rows asked for (`modes`, `concrete`, `ltp`), e.g.
    /// to time one chosen operating point against dense and the peer (`sttabt demo`).
    #[serde(default = "default_true")]
    pub rt_baselines: bool,
    /// With a `precision` other than fp32: time dense on the fp32 teacher too (row `dense fp32`,
    /// RT workloads), and give every RT row its speed-up over it
    /// ([`BenchRow::vs_dense_fp32`]): the reference of a bundle's headline figure.
    #[serde(default)]
    pub fp32_dense: bool,
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
            repeats: 2,
            rounds: 3,
            memory: true,
            // the default demo's within-1-point operating points, where it has trained them
            concrete: [crate::assets::home().join("runs/demo/concrete_theta-1")]
                .into_iter()
                .filter(|d| d.join("concrete.json").exists())
                .collect(),
            ltp: [crate::assets::home().join("runs/demo/ltp_lambda0.5")].into_iter().filter(|d| d.join("ltp.json").exists()).collect(),
            peer: None,
            python: None,
            peer_script: None,
            precision: crate::model::Precision::Fp32,
            approx_precision: crate::model::Precision::Fp32,
            modes: Vec::new(),
            modes_label_prefix: String::new(),
            rt_baselines: true,
            fp32_dense: false,
        }
    }
}

fn default_rounds() -> usize {
    3
}

fn default_true() -> bool {
    true
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

/// One (workload, batch, mode) measurement over all rounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRow {
    /// `rt` (RT sentences in their order), `rt-sorted` (the same sentences stably sorted by
    /// token length, as the peer's `c_b32_sorted`), `T128`, ... (synthetic length).
    pub workload: String,
    pub batch: usize,
    pub mode: String,
    pub examples: usize,
    /// Median over rounds of each round's examples/s (a round's figure: the median of its passes).
    pub examples_per_s: f64,
    /// Smallest and largest round figure.
    pub examples_per_s_min: f64,
    pub examples_per_s_max: f64,
    /// Every round's examples/s, in round order.
    pub examples_per_s_rounds: Vec<f64>,
    /// Call (batch) latency, milliseconds, median over rounds of the per-round p50/p90.
    pub p50_ms: f64,
    pub p90_ms: f64,
    /// Mean retention (section 5) of the executed plans.
    pub retention: f64,
    /// Mean section-5 GFLOPs per example: the teacher's executed rows (feed-forward planners
    /// with `o = |I_l|`), plus the ApproxNet's dense pass for the modes planned from it
    /// ([`crate::planners::Cost`], the count `eval` uses).
    pub gflops_per_example: f64,
    /// Encoder GFLOP/s actually executed by the teacher (its executed FLOPs / executor time).
    pub exec_gflops_per_s: f64,
    /// Per-example stage times (ms), from the median round.
    pub stage_ms: Stages,
    /// Median over rounds of (this row's examples/s / dense's examples/s in the same round),
    /// dense being the full plan on the same workload and batch.
    pub vs_dense: f64,
    /// Median over rounds of (this row's examples/s / the peer's in the same round), when the
    /// peer ran a matching workload ([`BenchRow::peer_workload`]).
    pub vs_peer: Option<f64>,
    /// Smallest and largest per-round ratio to the peer.
    pub vs_peer_range: Option<(f64, f64)>,
    /// The peer workload this row is compared with (`a_b1`, `c_b32_sorted`, `b_b32`,
    /// `d_T128_b1`, ...; see `../shared/peers/README.md`).
    pub peer_workload: Option<String>,
    /// Median over rounds of (this row's examples/s / the `dense fp32` row's in the same round),
    /// and the smallest and largest per-round ratio, where that row ran
    /// ([`BenchOptions::fp32_dense`]).
    #[serde(default)]
    pub vs_dense_fp32: Option<f64>,
    #[serde(default)]
    pub vs_dense_fp32_range: Option<(f64, f64)>,
}

/// The peer's figures for one of its workloads over the rounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRow {
    /// Our workload name and batch it is paired with.
    pub workload: String,
    pub batch: usize,
    /// The peer's own workload key (`a_b1`, `b_b32`, `c_b32_sorted`, `d_T128_b1`, ...).
    pub peer_workload: String,
    /// Median over rounds of the peer's per-round examples/s (its median over its passes).
    pub examples_per_s: f64,
    pub examples_per_s_min: f64,
    pub examples_per_s_max: f64,
    pub examples_per_s_rounds: Vec<f64>,
}

impl BenchRow {
    /// Its rounds as the reliability check judges them (label `rt b1 dense`).
    pub fn round_spread(&self) -> RoundSpread {
        RoundSpread {
            label: format!("{} b{} {}", self.workload, self.batch, self.mode),
            rounds: self.examples_per_s_rounds.len(),
            median: self.examples_per_s,
            min: self.examples_per_s_min,
            max: self.examples_per_s_max,
        }
    }
}

impl PeerRow {
    /// Its rounds as the reliability check judges them (label `peer a_b1`).
    pub fn round_spread(&self) -> RoundSpread {
        RoundSpread {
            label: format!("peer {}", self.peer_workload),
            rounds: self.examples_per_s_rounds.len(),
            median: self.examples_per_s,
            min: self.examples_per_s_min,
            max: self.examples_per_s_max,
        }
    }
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
    /// CPU model, thread count and the instruction sets the kernels detected.
    pub machine: String,
    /// `/proc/loadavg` (1, 5, 15 min) before and after the timed rounds: what else the machine
    /// was doing.
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub rounds: usize,
    /// The order of each round: `ours,peer` or `peer,ours`.
    pub round_order: Vec<String>,
    pub threads: usize,
    pub simd: String,
    /// Whether the linear layers of up to 256 rows ran on the packed AVX-512 GEMM
    /// (`kernels::packed`; off without AVX-512F or with `STTABT_NO_PACKED_GEMM`).
    #[serde(default)]
    pub packed_gemm: bool,
    pub rows: Vec<BenchRow>,
    pub memory: Vec<MemoryRow>,
    /// The peer's label (`ort` fp32 or `ort-int8`), when run.
    pub peer_name: Option<String>,
    /// The peer's examples/s per workload, when run.
    pub peer: Vec<PeerRow>,
    pub peer_note: Option<String>,
    /// Precision of our teachers' and ApproxNets' linear layers in every row.
    #[serde(default)]
    pub precision: crate::model::Precision,
    /// Precision of the ApproxNets' linear layers (`--approx` and the concrete runs' own); `None`
    /// when no ApproxNet ran (dense, top-k, fixed and LTP rows only).
    #[serde(default)]
    pub approx_precision: Option<crate::model::Precision>,
    /// The int8 kernels this CPU ran (e.g. `avx512-vnni`,
    /// [`crate::precision_eval::int8_kernels_here`]) when a teacher or ApproxNet ran in int8;
    /// `None` when everything was fp32.
    #[serde(default)]
    pub int8_kernels: Option<String>,
    /// The interpreter that ran the peer, as it names itself (`sys.executable`), when a peer ran.
    #[serde(default)]
    pub peer_python: Option<String>,
    /// Why the figures may not be reliable ([`reliability_warnings`]: a busy machine, rounds
    /// that disagree); empty when they look sound.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Notes the text report prints under the peer's rows (e.g. which of our rows have no peer
    /// workload to compare with, and why their `xpeer` is `-`).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Synthetic `[CLS] w... [SEP]` of length `n` (BERT-uncased ids), deterministic per example.
pub fn synthetic_input(n: usize, example: usize) -> EncodedInput {
    synthetic_input_in(n, example, usize::MAX)
}

/// [`synthetic_input`] with every id folded into a vocabulary of `vocab` ids (`id % vocab`),
/// for models whose vocabulary is smaller than BERT's ids (tiny test checkpoints).
pub fn synthetic_input_in(n: usize, example: usize, vocab: usize) -> EncodedInput {
    let mut rng = fastrand::Rng::with_seed(0x5EED + example as u64);
    let mut ids: Vec<u32> = Vec::with_capacity(n);
    ids.push(101);
    ids.extend((1..n.saturating_sub(1)).map(|_| rng.u32(1996..29_000)));
    if n > 1 {
        ids.push(102);
    }
    let vocab = vocab.clamp(1, u32::MAX as usize) as u32;
    EncodedInput { type_ids: vec![0; ids.len()], ids: ids.into_iter().map(|i| i % vocab).collect(), patches: Vec::new() }
}

pub use crate::planners::dense::keep_first_plan;

/// Check the options before anything is loaded or timed: flag values, and that the peer (when
/// asked for) can run at all (its script found, its Python able to import onnxruntime).
pub fn check_options(opts: &BenchOptions) -> anyhow::Result<()> {
    check_options_peer_python(opts).map(|_| ())
}

/// [`check_options`], returning the interpreter that will run the peer (`sys.executable`) when
/// a peer is asked for.
fn check_options_peer_python(opts: &BenchOptions) -> anyhow::Result<Option<(PathBuf, String)>> {
    let frac = |name: &str, v: f64| -> anyhow::Result<()> {
        anyhow::ensure!(v > 0.0 && v <= 1.0, "{name} must be in (0, 1], got {v}");
        Ok(())
    };
    frac("--keep", opts.synth_keep)?;
    frac("--rt-keep", opts.rt_keep)?;
    anyhow::ensure!(
        !opts.batches.is_empty() && opts.batches.iter().all(|&b| b >= 1),
        "--batches: every batch size must be >= 1, got {:?}",
        opts.batches
    );
    anyhow::ensure!(
        opts.lengths.iter().all(|&n| n >= 2),
        "--lengths: every synthetic length must be >= 2 tokens ([CLS] and [SEP] included), got {:?}",
        opts.lengths
    );
    anyhow::ensure!(opts.repeats >= 1, "--repeats must be >= 1");
    anyhow::ensure!(opts.rounds >= 1, "--rounds must be >= 1");
    anyhow::ensure!(opts.synth_examples >= 1 || opts.lengths.is_empty(), "--synth-examples must be >= 1");
    anyhow::ensure!(opts.rt_examples > 0 || !opts.lengths.is_empty(), "nothing to time: --rt 0 and no --lengths");
    anyhow::ensure!(
        opts.modes.is_empty() || opts.rt_examples > 0,
        "--rt 0 leaves out the RT workload, where the extra modes ({}) are timed; give --rt N",
        opts.modes.iter().map(|m| m.label()).collect::<Vec<_>>().join(", ")
    );
    if let Some(p) = &opts.peer {
        anyhow::ensure!(
            p == "ort" || p == "ort-int8",
            "unknown peer {p:?} (`ort`: ONNX Runtime fp32; `ort-int8`: its dynamic int8 quantisation)"
        );
        anyhow::ensure!(
            opts.rounds >= 3,
            "--rounds {} with --peer: a comparison with the peer needs at least 3 alternating rounds",
            opts.rounds
        );
        let script = peer_script(opts);
        anyhow::ensure!(
            script.exists(),
            "peer script {} not found; pass --peer-script PATH (it is shared/peers/ort_dense.py beside the repository)",
            script.display()
        );
        let py = find_python(opts);
        let exe = check_python(&py)?;
        return Ok(Some((py.path, exe)));
    }
    Ok(None)
}

/// Run the whole benchmark: every (workload, batch, mode) row over `opts.rounds` rounds, the
/// peer alternating with them when asked for.
///
/// Errors: bad options or a peer that cannot run ([`check_options`]), models that do not load
/// or do not fit together, a workload that fails. A peer failing in a round is not an error:
/// [`BenchReport::peer_note`] says so.
pub fn run_bench(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let peer_python = check_options_peer_python(opts)?;
    let loaded = Encoder::load(&opts.model)?;
    let fp32_dense = opts.fp32_dense && opts.precision != crate::model::Precision::Fp32;
    let teacher_fp32 = fp32_dense.then(|| loaded.clone());
    let teacher = loaded.with_precision(opts.precision)?;
    anyhow::ensure!(
        teacher.classifier.is_some(),
        "{} has no classification head; fine-tune one with `sttabt finetune`",
        opts.model.display()
    );
    anyhow::ensure!(
        teacher.config.vision().is_none(),
        "{} is a ViT/DeiT; `sttabt bench` measures text workloads. For images, `sttabt eval --vision` measures every mode's images/s at batch 1 and 32 side by side",
        opts.model.display()
    );
    let approx = match &opts.approx {
        Some(p) => Some(crate::approx::ApproxNet::load(p, &teacher.config)?.model.with_precision(opts.approx_precision)?),
        None => None,
    };
    if let Some(m) = opts.modes.iter().find(|m| m.needs_approx() && approx.is_none()) {
        anyhow::bail!("mode {} plans from an ApproxNet, and none was given", m.label());
    }
    // Memory first, with only the teacher and its ApproxNet loaded (not the concrete/LTP runs'
    // models), after a warm-up that builds the packed weight panels the timed runs also use.
    let mut memory = Vec::new();
    if opts.memory {
        let cx = Ctx { teacher: &teacher, teacher_fp32: None, approx: approx.as_ref(), concrete: &[], ltp: &[] };
        let n = teacher.config.max_tokens().min(256);
        let inputs: Vec<EncodedInput> = (0..32).map(|e| synthetic_input_in(n, e, teacher.config.vocab_size)).collect();
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
            let mode = match opts.precision {
                crate::model::Precision::Fp32 => m.label(),
                p => format!("{} {p}", m.label()),
            };
            memory.push(MemoryRow { mode, peak_rss_mib: peak, added_mib: added });
        }
    }
    let concrete: Vec<_> = opts
        .concrete
        .iter()
        .map(|d| {
            let mut c = crate::train::concrete::ConcreteModel::load(d)
                .map_err(|e| anyhow::anyhow!("loading concrete run {}: {e:#}", d.display()))?;
            c.teacher.set_precision(opts.precision)?;
            c.approx.model.set_precision(opts.approx_precision)?;
            Ok(c)
        })
        .collect::<anyhow::Result<_>>()?;
    let ltp: Vec<_> = opts
        .ltp
        .iter()
        .map(|d| {
            let mut m = crate::train::ltp::LtpModel::load(d).map_err(|e| anyhow::anyhow!("loading LTP run {}: {e:#}", d.display()))?;
            m.teacher.set_precision(opts.precision)?;
            Ok(m)
        })
        .collect::<anyhow::Result<_>>()?;
    for (what, cfg) in concrete.iter().map(|m| ("concrete", &m.teacher.config)).chain(ltp.iter().map(|m| ("LTP", &m.teacher.config))) {
        anyhow::ensure!(
            cfg.hidden_size == teacher.config.hidden_size
                && cfg.num_layers == teacher.config.num_layers
                && cfg.intermediate_size == teacher.config.intermediate_size,
            "a {what} run's teacher is not the architecture of {} (the bench compares one model's modes)",
            opts.model.display()
        );
    }
    let cx = Ctx { teacher: &teacher, teacher_fp32: teacher_fp32.as_ref(), approx: approx.as_ref(), concrete: &concrete, ltp: &ltp };
    // Executor stage timers on for the whole bench, off again however it ends.
    struct ProfileOn;
    impl Drop for ProfileOn {
        fn drop(&mut self) {
            crate::profile::enable(false);
        }
    }
    crate::profile::enable(true);
    let _profile = ProfileOn;
    let mut rt_sentences: Vec<String> = Vec::new();

    // Workloads: (name, inputs, tokenize seconds, modes).
    let mut workloads: Vec<(String, Vec<EncodedInput>, f64, Vec<BMode>)> = Vec::new();
    let dense_modes = || vec![BMode::Dense, BMode::DenseCls];
    if opts.rt_examples > 0 {
        let splits = crate::data::rt::load_rotten_tomatoes(&crate::assets::rotten_tomatoes_path(), 0)?;
        rt_sentences = splits.test.examples.iter().chain(&splits.dev.examples).take(opts.rt_examples).map(|e| e.text.clone()).collect();
        let tok = crate::text::tokenizer::TextTokenizer::from_dir(&opts.model, teacher.config.max_tokens().min(512))?;
        let t0 = Instant::now();
        let inputs: Vec<EncodedInput> = rt_sentences.iter().map(|s| tok.encode(s, None).map(|t| t.input)).collect::<Result<_, _>>()?;
        let tok_s = t0.elapsed().as_secs_f64();
        let mut modes = if opts.rt_baselines { dense_modes() } else { vec![BMode::Dense] };
        if fp32_dense {
            modes.insert(1, BMode::DenseFp32);
        }
        if approx.is_some() && opts.rt_baselines {
            modes.push(BMode::Abt(opts.rt_keep));
        }
        if opts.rt_baselines {
            modes.push(BMode::TopK(opts.rt_keep));
        }
        modes.extend(opts.modes.iter().cloned().map(BMode::Planned));
        modes.extend((0..concrete.len()).map(BMode::Concrete));
        modes.extend((0..ltp.len()).map(BMode::Ltp));
        // the same sentences stably sorted by token length: the batches the peer's
        // `c_b32_sorted` runs (its tokenizer gives the same lengths)
        let mut sorted = inputs.clone();
        sorted.sort_by_key(|x| x.len());
        workloads.push(("rt".into(), inputs, tok_s, modes.clone()));
        if opts.batches.iter().any(|&b| b > 1) {
            workloads.push(("rt-sorted".into(), sorted, tok_s, modes));
        }
    }
    for &n in &opts.lengths {
        let k = opts.synth_examples.max(*opts.batches.iter().max().unwrap_or(&1));
        anyhow::ensure!(
            n <= teacher.config.max_tokens(),
            "--lengths {n} is longer than the model's longest input ({} tokens)",
            teacher.config.max_tokens()
        );
        let inputs: Vec<EncodedInput> = (0..k).map(|e| synthetic_input_in(n, e, teacher.config.vocab_size)).collect();
        let mut modes = dense_modes();
        if let Some(a) = &approx {
            modes.push(BMode::Abt(opts.synth_keep));
            // and ABT at the fixed plan's nominal retention (its k calibrated on these inputs)
            let k = calibrate_abt_keep(a, &inputs, opts.synth_keep)?;
            modes.push(BMode::AbtAt { k, retention: opts.synth_keep });
        }
        // manual top-k with the final keep fraction at the target
        modes.push(BMode::TopK(opts.synth_keep));
        modes.push(BMode::Fixed(opts.synth_keep));
        workloads.push((format!("T{n}"), inputs, 0.0, modes));
    }
    // every (workload, batch, mode) row; rt-sorted only at batch > 1 (at batch 1 it is `rt`)
    let mut keys: Vec<(usize, usize, usize)> = Vec::new();
    for (w, (name, _, _, modes)) in workloads.iter().enumerate() {
        for &b in &opts.batches {
            if name == "rt-sorted" && b == 1 {
                continue;
            }
            keys.extend((0..modes.len()).map(|m| (w, b, m)));
        }
    }

    // The rounds: ours and the peer alternate (ours first in even rounds).
    let peer_name = opts.peer.clone();
    let rounds = opts.rounds.max(1);
    let loadavg_before = loadavg();
    let mut samples: Vec<Vec<RoundSample>> = (0..keys.len()).map(|_| Vec::with_capacity(rounds)).collect();
    let mut peer_rounds: Vec<Vec<(String, f64)>> = Vec::new();
    let mut peer_note = None;
    let mut round_order = Vec::new();
    let peer_dir = std::env::temp_dir().join(format!("sttabt-bench-{}", std::process::id()));
    for round in 0..rounds {
        let peer_first = round % 2 == 1;
        round_order.push(if peer_name.is_none() {
            "ours".to_string()
        } else if peer_first {
            "peer,ours".to_string()
        } else {
            "ours,peer".to_string()
        });
        let mut run_peer_round = |peer_rounds: &mut Vec<Vec<(String, f64)>>| -> anyhow::Result<()> {
            if let (Some((py, _)), None) = (&peer_python, &peer_note) {
                eprintln!("bench round {}/{rounds}: peer", round + 1);
                match run_peer(opts, py, &rt_sentences, &peer_dir) {
                    Ok(p) => peer_rounds.push(p),
                    Err(e) => peer_note = Some(format!("peer failed in round {}: {e:#}", round + 1)),
                }
            }
            Ok(())
        };
        if peer_first {
            run_peer_round(&mut peer_rounds)?;
        }
        eprintln!("bench round {}/{rounds}: sttabt ({} rows)", round + 1, keys.len());
        for (i, &(w, b, m)) in keys.iter().enumerate() {
            let (_, inputs, tok_s, modes) = &workloads[w];
            samples[i].push(measure_round(&cx, inputs, b, &modes[m], opts.repeats, *tok_s)?);
        }
        if !peer_first {
            run_peer_round(&mut peer_rounds)?;
        }
    }
    let _ = std::fs::remove_dir_all(&peer_dir);
    let loadavg_after = loadavg();

    let peer_series =
        |key: &str| -> Vec<f64> { peer_rounds.iter().filter_map(|r| r.iter().find(|(k, _)| k == key).map(|(_, x)| *x)).collect() };
    // dense's per-round examples/s for every (workload, batch), before the rows take their samples
    let dense_series: Vec<Vec<f64>> = keys
        .iter()
        .enumerate()
        .map(|(i, &(w, b, _))| {
            let modes = &workloads[w].3;
            let d = keys.iter().position(|&(w2, b2, m2)| w2 == w && b2 == b && matches!(modes[m2], BMode::Dense)).unwrap_or(i);
            samples[d].iter().map(|s| s.examples_per_s).collect()
        })
        .collect();
    // the fp32 dense row's, where it ran (RT workloads of an int8 bench with `fp32_dense`)
    let dense_fp32_series: Vec<Option<Vec<f64>>> = keys
        .iter()
        .map(|&(w, b, _)| {
            let modes = &workloads[w].3;
            keys.iter()
                .position(|&(w2, b2, m2)| w2 == w && b2 == b && matches!(modes[m2], BMode::DenseFp32))
                .map(|d| samples[d].iter().map(|s| s.examples_per_s).collect())
        })
        .collect();
    let mut rows = Vec::with_capacity(keys.len());
    let mut peer_rows: Vec<PeerRow> = Vec::new();
    for (i, &(w, b, m)) in keys.iter().enumerate() {
        let (name, inputs, _, modes) = &workloads[w];
        let dense = &dense_series[i];
        let key = peer_workload(name, b);
        let series = key.as_deref().map(peer_series).unwrap_or_default();
        if m == 0 && !series.is_empty() {
            let (med, lo, hi) = spread(&series);
            peer_rows.push(PeerRow {
                workload: name.clone(),
                batch: b,
                peer_workload: key.clone().unwrap_or_default(),
                examples_per_s: med,
                examples_per_s_min: lo,
                examples_per_s_max: hi,
                examples_per_s_rounds: series.clone(),
            });
        }
        let row_samples = std::mem::take(&mut samples[i]);
        // ratios to the peer pair rounds one to one (only when the peer ran in every round)
        let peer = (series.len() == row_samples.len()).then(|| (key.as_deref().unwrap_or(""), series.as_slice()));
        let prefix = if matches!(modes[m], BMode::Planned(_)) { opts.modes_label_prefix.as_str() } else { "" };
        let label = match opts.precision {
            _ if matches!(modes[m], BMode::DenseFp32) => modes[m].label(),
            crate::model::Precision::Fp32 => format!("{prefix}{}", modes[m].label_in(&cx)),
            p => format!("{prefix}{} {p}", modes[m].label_in(&cx)),
        };
        // the fp32 reference row itself gets no ratio to itself
        let dense_fp32 = dense_fp32_series[i].as_deref().filter(|_| !matches!(modes[m], BMode::DenseFp32));
        rows.push(aggregate(name, b, label, inputs.len(), row_samples, References { dense, dense_fp32, peer }));
    }
    if peer_note.is_none() && peer_name.is_some() && peer_rounds.len() != rounds {
        peer_note = Some(format!("the peer ran in {} of {rounds} rounds", peer_rounds.len()));
    }
    let isa = crate::kernels::simd_level();
    let threads = rayon::current_num_threads();
    let spreads: Vec<RoundSpread> = rows.iter().map(BenchRow::round_spread).chain(peer_rows.iter().map(PeerRow::round_spread)).collect();
    let warnings = reliability_warnings(load_1min(&loadavg_before), load_1min(&loadavg_after), threads, &spreads);
    let approx_precision = (approx.is_some() || !concrete.is_empty()).then_some(opts.approx_precision);
    let int8 = opts.precision.is_int8() || approx_precision.is_some_and(crate::model::Precision::is_int8);
    let mut report = BenchReport {
        machine: format!("{} ({isa})", crate::eval::machine_line()),
        loadavg_before,
        loadavg_after,
        rounds,
        round_order,
        threads,
        simd: isa.into(),
        packed_gemm: crate::kernels::packed::available(),
        rows,
        memory,
        peer_name,
        peer: peer_rows,
        peer_note,
        precision: opts.precision,
        approx_precision,
        int8_kernels: int8.then(crate::precision_eval::int8_kernels_here),
        peer_python: peer_python.map(|(_, exe)| exe),
        warnings,
        notes: Vec::new(),
    };
    report.notes = report::unpaired_note(&report).into_iter().collect();
    Ok(report)
}
