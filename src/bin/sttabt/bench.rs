//! `sttabt bench`.

use super::*;

// The options of `sttabt bench` (the about text is on `Command::Bench`).
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fine-tuned teacher (default: the demo's, $STTABT_HOME/runs/demo/teacher).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A bundle written by `sttabt compress`: its teacher and ApproxNet, and its planner as one
    /// more row on the RT sentences. Not with --model, --approx, --concrete, --ltp.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["model", "approx", "concrete", "ltp"])]
    pub bundle: Option<PathBuf>,
    /// Its ApproxNet (default without --model: the demo's, where it exists); without one
    /// the abt rows are skipped.
    #[arg(long)]
    pub approx: Option<PathBuf>,
    /// Rotten Tomatoes sentences to time (0 = skip that workload).
    #[arg(long, default_value_t = 200)]
    pub rt: usize,
    /// ABT keep fraction on RT sentences.
    #[arg(long, default_value_t = 0.5)]
    pub rt_keep: f64,
    /// Synthetic sequence lengths.
    #[arg(long, default_value = "128,256", value_delimiter = ',')]
    pub lengths: Vec<usize>,
    /// Synthetic examples per workload (raised to the largest batch size, so that every
    /// batch is full).
    #[arg(long, default_value_t = 8)]
    pub synth_examples: usize,
    /// Keep fraction of the sparse modes on synthetic lengths: the fixed plan's tokens per
    /// layer, manual top-k's and ABT's final k. A second ABT row, `abt@0.30 k=...`, runs at a
    /// mean retention (section 5) of this fraction, its k found by bisection on the inputs
    /// (ABT keeps more in early layers than its final k).
    #[arg(long, default_value_t = 0.3)]
    pub keep: f64,
    /// Batch sizes.
    #[arg(long, default_value = "1,32", value_delimiter = ',')]
    pub batches: Vec<usize>,
    /// Timed passes per row within one round (the round's figure is their median).
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    /// Rounds: each times one fresh pass of every row and, with --peer, one run of the peer,
    /// alternating which goes first (ours+peer, peer+ours, ...). Rows report the median and
    /// range over rounds; ratios are medians of per-round ratios. At least 3 with --peer.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Skip the peak-memory measurement.
    #[arg(long)]
    pub no_memory: bool,
    /// Concrete-mask runs (from `sttabt concrete`) to time on the RT sentences, repeatable
    /// (default without --model: the demo's θ0 = -1 run, where it exists).
    #[arg(long)]
    pub concrete: Vec<PathBuf>,
    /// LTP runs (from `sttabt ltp`) to time on the RT sentences, repeatable (default without
    /// --model: the demo's λ = 0.5 run, where it exists).
    #[arg(long)]
    pub ltp: Vec<PathBuf>,
    /// Also run a peer, interleaved with our rows: `ort` (ONNX Runtime dense, fp32) or
    /// `ort-int8` (the same graph under ORT's dynamic int8 quantisation); needs a Python with
    /// numpy, onnx, onnxruntime, safetensors and tokenizers.
    #[arg(long)]
    pub peer: Option<String>,
    /// Python interpreter for the peer.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The peer script (default ../shared/peers/ort_dense.py).
    #[arg(long)]
    pub peer_script: Option<PathBuf>,
    /// Also write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// `--precision int8 --peer ort-int8` times our int8 rows against ORT's int8.
    #[command(flatten)]
    pub precision: PrecisionArgs,
}

/// Run `sttabt bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    let BenchArgs {
        model,
        bundle,
        approx,
        rt,
        rt_keep,
        lengths,
        synth_examples,
        keep,
        batches,
        repeats,
        rounds,
        no_memory,
        concrete,
        ltp,
        peer,
        python,
        peer_script,
        json,
        precision,
    } = args;
    if let Some(m) = &model {
        super::refuse_non_teacher_model(m)?;
    }
    let d = sttabt::bench::BenchOptions::default();
    let (model, approx, modes, precision) = match bundle {
        Some(dir) => {
            let b = sttabt::compress::bundle::open(&dir)?;
            // the bundle's own precision unless --precision says otherwise
            let precision = precision.for_bundle(&b);
            (Some(b.teacher_dir), b.approx_dir, vec![b.manifest.planner], precision)
        }
        None => (model, approx, Vec::new(), precision),
    };
    precision.warn_if_slow();
    // the demo's concrete/LTP runs belong to the demo's teacher
    let demo_model = model.is_none();
    let opts = sttabt::bench::BenchOptions {
        model: model.unwrap_or(d.model),
        approx: approx.or(d.approx.filter(|p| demo_model && p.join("config.json").exists())),
        rt_examples: rt,
        rt_keep,
        lengths,
        synth_examples,
        synth_keep: keep,
        batches,
        repeats,
        rounds,
        memory: !no_memory,
        concrete: if concrete.is_empty() && demo_model { d.concrete } else { concrete },
        ltp: if ltp.is_empty() && demo_model { d.ltp } else { ltp },
        peer,
        python,
        peer_script,
        precision: precision.precision(),
        approx_precision: precision.approx_precision,
        modes,
        rt_baselines: true,
    };
    if !opts.model.join("model.safetensors").exists() {
        bail!("{} has no model; run `sttabt demo` first (it trains the default teacher) or pass --model", opts.model.display());
    }
    let r = sttabt::bench::run_bench(&opts)?;
    print!("{}", sttabt::bench::format_report(&r));
    if let Some(j) = json {
        sttabt::model::checkpoint::write_atomic(&j, serde_json::to_string_pretty(&r)?.as_bytes())?;
    }
    Ok(())
}
