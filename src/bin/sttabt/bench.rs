//! `sttabt bench`.

use super::*;
use std::path::Path;

// The options of `sttabt bench` (the about text is on `Command::Bench`).
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fine-tuned teacher (default: the demo's, $STTABT_HOME/runs/demo/teacher).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A bundle written by `sttabt compress`: its teacher and ApproxNet, and its planner as one
    /// more row on the RT sentences, the one whose mode reads `bundle: ...` (e.g. `bundle:
    /// dense-cls int8` beside the ordinary `dense-cls int8` row). Not with --model, --approx,
    /// --concrete, --ltp.
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
    /// Python interpreter for the peer (default: $STTABT_PEER_PYTHON, else ./.venv-peer/bin/python,
    /// else ../.venv-peer/bin/python, else python3 from PATH); the header names the one that ran.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The peer script (default ../shared/peers/ort_dense.py).
    #[arg(long)]
    pub peer_script: Option<PathBuf>,
    /// Also write the report as JSON to this file (checked, and missing parent directories
    /// created, before anything is timed).
    #[arg(long, value_name = "PATH")]
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
    if let Some(j) = &json {
        prepare_json_path(j)?;
    }
    if let Some(m) = &model {
        super::refuse_non_teacher_model(m)?;
    }
    if let Some(a) = &approx {
        super::refuse_file_as_approx(a, "--approx")?;
    }
    let d = sttabt::bench::BenchOptions::default();
    let bundled = bundle.is_some();
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
        // the bundle's row apart from an ordinary row of the same planner
        modes_label_prefix: if bundled { "bundle: ".into() } else { String::new() },
        rt_baselines: true,
        // a bundle's headline speed-up is against fp32 dense: time that reference too
        fp32_dense: bundled,
    };
    if !opts.model.join("model.safetensors").exists() {
        // after `demo --fast` / `--full` the teacher is in their own run directories: say so
        let others: Vec<String> = ["demo-fast", "demo-full"]
            .iter()
            .map(|r| sttabt::assets::home().join("runs").join(r).join("teacher"))
            .filter(|t| t.join("model.safetensors").exists())
            .map(|t| {
                // the run's ApproxNet, concrete and LTP runs too: without them only dense,
                // dense-cls, manual top-k and fixed plans are timed
                let run = t.parent().unwrap_or(&t);
                let mut flags = format!("--model {}", t.display());
                for (flag, sub, marker) in [
                    ("--approx", "approx", "config.json"),
                    ("--concrete", "concrete_theta-1", "concrete.json"),
                    ("--ltp", "ltp_lambda0.5", "ltp.json"),
                ] {
                    if run.join(sub).join(marker).exists() {
                        flags.push_str(&format!(" {flag} {}", run.join(sub).display()));
                    }
                }
                flags
            })
            .collect();
        let hint = if others.is_empty() { String::new() } else { format!(" (found: {})", others.join(", ")) };
        bail!("{} has no model; run `sttabt demo` first (it trains the default teacher) or pass --model{hint}", opts.model.display());
    }
    let r = sttabt::bench::run_bench(&opts)?;
    print!("{}", sttabt::bench::format_report(&r));
    if let Some(j) = json {
        sttabt::model::checkpoint::write_atomic(&j, serde_json::to_string_pretty(&r)?.as_bytes())
            .map_err(|e| anyhow::anyhow!("--json {}: {e}", j.display()))?;
    }
    Ok(())
}

/// Check `--json PATH` before anything is timed, so that a bad path fails at once rather than
/// after the rounds: PATH must not be a directory, and its nearest existing ancestor must be a
/// directory; missing parent directories are created now.
///
/// Errors (each naming `--json`): PATH is a directory, an ancestor is a file, or the parent
/// directories cannot be created.
fn prepare_json_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("--json {}: is a directory; give a file path such as {}", path.display(), path.join("bench.json").display());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // the nearest ancestor that exists must be a directory
    if let Some(a) = parent.ancestors().find(|a| !a.as_os_str().is_empty() && a.exists()) {
        if !a.is_dir() {
            bail!("--json {}: {} is a file, not a directory", path.display(), a.display());
        }
    }
    std::fs::create_dir_all(parent)
        .map_err(|e| anyhow::anyhow!("--json {}: cannot create its directory {}: {e}", path.display(), parent.display()))?;
    Ok(())
}
