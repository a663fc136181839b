//! `sttabt eval`.

use super::*;

// The options of `sttabt eval` (the about text is on `Command::Eval`).
#[derive(clap::Args)]
// data flags this command refuses (it does not read that split) stay out of --help
#[command(mut_arg("train", |a| a.hide(true)))]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub images: ImageArgs,
    /// Fine-tuned checkpoint (with a classification head).
    #[arg(long, required_unless_present = "bundle")]
    pub model: Option<PathBuf>,
    /// A bundle written by `sttabt compress`: its teacher and ApproxNet, and its planner as one
    /// more row beside the usual sweep (or, when the sweep has the same planner, a note naming
    /// that row; dense is the bundle's teacher). Not with --model,
    /// --approx, --concrete, --ltp.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["model", "approx", "concrete", "ltp"])]
    pub bundle: Option<PathBuf>,
    /// Its ApproxNet (from `sttabt distill`); without it the ABT rows are left out.
    #[arg(long)]
    pub approx: Option<PathBuf>,
    /// Keep fractions for the ABT sweep (comma-separated).
    #[arg(long, default_value = "0.1,0.2,0.3,0.5,0.7", value_delimiter = ',')]
    pub ks: Vec<f64>,
    /// Output directory for results.json, results.csv and the plots.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Concrete-mask runs (directories from `sttabt concrete`), repeatable.
    #[arg(long)]
    pub concrete: Vec<PathBuf>,
    /// Teachers fine-tuned under their own ABT plans (directories from `sttabt finetune
    /// --plan-aware`, with the --approx they were trained with), repeatable: each adds ABT rows at
    /// every --ks on that teacher (family `abt-ft`), against the original --model as dense.
    #[arg(long, value_name = "DIR", requires = "approx")]
    pub plan_aware: Vec<PathBuf>,
    /// LTP runs (directories from `sttabt ltp`), repeatable.
    #[arg(long)]
    pub ltp: Vec<PathBuf>,
    /// Evaluate on at most N examples per split.
    #[arg(long, value_parser = at_least_one)]
    pub limit: Option<usize>,
    /// Examples timed per mode and batch size (>= 1).
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    pub timing_examples: usize,
    /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a
    /// warning). Default 128, or 512 with --long-reviews.
    #[arg(long, value_parser = max_length_tokens)]
    pub max_length: Option<usize>,
    /// Length robustness (ALGORITHM.md section 8): replace dev and test by N long reviews each,
    /// every one made of sentences of one label from that split, joined until it has
    /// --long-words words (truncated to --max-length tokens). Tests planners on inputs longer
    /// than those they were trained on.
    #[arg(long, value_name = "N")]
    pub long_reviews: Option<usize>,
    /// Words per long review (with --long-reviews).
    #[arg(long, default_value_t = 700, requires = "long_reviews")]
    pub long_words: usize,
    /// No progress bars or status lines (the `data: ...` line included): errors, warnings and the result only.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// Instead of the full table: run every mode (dense, ABT at each --ks, manual top-k at the
    /// retention of the smallest k its schedule can reach (a note says when that is not the
    /// smallest k), each --concrete and --ltp run) on the test split twice, with
    /// the teachers in fp32 and in int8 (int8-w7 when --precision says so, else int8; the fp32 run is fp32
    /// throughout; --approx-precision int8 makes the int8 run's ApproxNets int8 too, and the
    /// plan agreement column then shows how often its plans differ), and
    /// report per mode both accuracies, their argmax agreement and the paired 95% bootstrap
    /// interval of the accuracy difference; writes precision_comparison.json to --out.
    #[arg(long)]
    pub compare_precision: bool,
    /// Also every mode (the oracle aside) with its teacher's linear layers in int8 (the
    /// ApproxNets fp32), as rows of family `<family> int8` beside the fp32 ones, against the same
    /// fp32 dense: which pruned setting, with or without int8, is within 1 point of dense and
    /// how fast. Text models with --precision fp32 only.
    #[arg(long, conflicts_with = "compare_precision")]
    pub int8_rows: bool,
    /// With --compare-precision: a JSON file (e.g. from ../shared/peers/ort_accuracy.py) stored
    /// verbatim under `peer` in precision_comparison.json.
    #[arg(long, requires = "compare_precision", value_name = "FILE")]
    pub peer_json: Option<PathBuf>,
}

/// Run `sttabt eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let EvalArgs {
        data,
        images,
        model,
        bundle,
        approx,
        ks,
        out,
        concrete,
        ltp,
        plan_aware,
        limit,
        timing_examples,
        max_length,
        quiet,
        precision,
        compare_precision,
        peer_json,
        long_reviews,
        long_words,
        int8_rows,
    } = args;
    // a bad --out fails now, not after the whole evaluation
    super::check_out_dir("--out", &out)?;
    let max_length = max_length.unwrap_or(if long_reviews.is_some() { 512 } else { 128 });
    let long = long_reviews.map(|count| LongReviews { count, words: long_words });
    let opts = sttabt::eval::EvalOptions { ks, limit, timing_examples, quiet, metric: sttabt::data::metrics::Metric::Accuracy, int8_rows };
    if let Some(m) = &model {
        super::refuse_non_teacher_model(m)?;
    }
    if let Some(a) = &approx {
        super::refuse_file_as_approx(a, "--approx")?;
    }
    for d in &plan_aware {
        super::refuse_non_plan_aware_teacher(d)?;
    }
    let mut bundle_note: Option<String> = None;
    let (model, approx, extra, precision) = match &bundle {
        Some(dir) => {
            let b = sttabt::compress::bundle::open(dir)?;
            // the bundle's own precision unless --precision says otherwise
            let precision = precision.for_bundle(&b);
            if image_source(&images, &data)?.is_some() {
                bail!("--bundle is for text models; drop --vision / --image-folder");
            }
            bundle_note = Some(format!(
                "the bundle's setting `{}` is the row `{}`; dense and every other row run on the bundle's teacher ({}), which may be a fine-tuned copy rather than the original teacher its README compares with. Its summary: {}",
                b.manifest.label,
                b.manifest.planner.label(),
                b.teacher_dir.display(),
                b.manifest.summary
            ));
            (b.teacher_dir, b.approx_dir, vec![b.manifest.planner], precision)
        }
        None => (model.context("--model DIR is required (or --bundle DIR)")?, approx, Vec::new(), precision),
    };
    if int8_rows
        && (precision.precision() != sttabt::model::Precision::Fp32 || precision.approx_precision != sttabt::model::Precision::Fp32)
    {
        bail!("--int8-rows adds int8 rows beside fp32 ones: it needs --precision fp32 and --approx-precision fp32 (given {} / {}; a bundle's own precision counts)", precision.precision(), precision.approx_precision);
    }
    if let Some(src) = image_source(&images, &data)? {
        precision.fp32_only("images")?;
        if compare_precision {
            bail!("--compare-precision is for text models; drop --vision / --image-folder");
        }
        if int8_rows {
            bail!("--int8-rows is for text models (int8 is not available for vision models yet); drop --vision / --image-folder");
        }
        if let Some(k) = opts.ks.iter().find(|k| !(**k > 0.0 && **k <= 1.0)) {
            bail!("--ks: every keep fraction must be in (0, 1], got {k}");
        }
        if !ltp.is_empty() {
            bail!("--ltp runs are text-only; the vision table compares dense, ABT, manual top-k and concrete");
        }
        return vision::eval(&src, &model, approx.as_deref(), &concrete, &out, &opts);
    }
    if compare_precision {
        let paths = super::precision::RunPaths { model: &model, approx: approx.as_deref(), concrete: &concrete, ltp: &ltp };
        if long.is_some() {
            bail!("--long-reviews is not available with --compare-precision");
        }
        return super::precision::compare(&data, paths, &out, &opts, max_length, &precision, peer_json.as_deref());
    }
    eval(&data, &model, approx.as_deref(), &concrete, &ltp, &extra, &plan_aware, &out, &opts, max_length, &precision, long)?;
    if let Some(note) = &bundle_note {
        println!("{note}");
    }
    Ok(())
}

/// `--long-reviews N --long-words W`: dev and test replaced by long single-label reviews.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LongReviews {
    pub count: usize,
    pub words: usize,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn eval(
    data: &DataArgs,
    model: &std::path::Path,
    approx: Option<&std::path::Path>,
    concrete: &[PathBuf],
    ltp: &[PathBuf],
    extra: &[sttabt::infer::Mode],
    plan_aware: &[PathBuf],
    out: &std::path::Path,
    opts: &sttabt::eval::EvalOptions,
    max_length: usize,
    precision: &PrecisionArgs,
    long: Option<LongReviews>,
) -> Result<()> {
    if let Some(k) = opts.ks.iter().find(|k| !(**k > 0.0 && **k <= 1.0)) {
        bail!("--ks: every keep fraction must be in (0, 1], got {k}");
    }
    if approx.is_none() && !opts.quiet {
        eprintln!(
            "note: no --approx given, so the ABT (ApproxNet) rows are left out; ABT on the teacher's actual attention is still evaluated"
        );
    }
    let needs = DataNeeds::eval("eval").with_eval_limit(opts.limit);
    let mut source = data.source(&needs)?;
    let teacher = precision.teacher(Encoder::load(model).with_context(|| format!("loading {}", model.display()))?)?;
    let approx_net =
        match approx {
            Some(a) => Some(precision.approx(
                sttabt::approx::ApproxNet::load(a, &teacher.config).with_context(|| format!("loading ApproxNet {}", a.display()))?,
            )?),
            None => None,
        };
    let concrete: Vec<_> = concrete
        .iter()
        .map(|d| {
            precision
                .concrete(sttabt::train::concrete::ConcreteModel::load(d).with_context(|| format!("loading concrete run {}", d.display()))?)
        })
        .collect::<Result<_>>()?;
    let ltp: Vec<_> = ltp
        .iter()
        .map(|d| precision.ltp(sttabt::train::ltp::LtpModel::load(d).with_context(|| format!("loading LTP run {}", d.display()))?))
        .collect::<Result<_>>()?;
    // without --train, labels in the files map to the model's own id2label
    if let sttabt::pipeline::DataSource::Table { train: None, spec, .. } = &mut source {
        if spec.label_names.is_none() && !teacher.config.labels.is_empty() {
            spec.label_names = Some(teacher.config.labels.clone());
        }
    }
    let tok = text_tokenizer(model, &teacher, max_length)?;
    let mut splits = data.load(&source, &needs, opts.quiet)?;
    if let Some(l) = long {
        splits.use_long_reviews(l.words, l.count, data.seed)?;
        if !opts.quiet {
            eprintln!(
                "length robustness: {} and {} long reviews of >= {} words, truncated to {max_length} tokens",
                splits.dev.len(),
                splits.test.len(),
                l.words
            );
        }
    }
    let opts = &sttabt::eval::EvalOptions { metric: splits.metric, ..opts.clone() };
    let (dev, _) = sttabt::pipeline::tokenize(&tok, &splits.dev, opts.limit)?;
    let (test, _) = sttabt::pipeline::tokenize(&tok, &splits.test, opts.limit)?;
    let plan_aware: Vec<sttabt::eval::PlanAwareTeacher> = plan_aware
        .iter()
        .map(|d| {
            let teacher = precision.teacher(Encoder::load(d).with_context(|| format!("loading plan-aware teacher {}", d.display()))?)?;
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Ok(sttabt::eval::PlanAwareTeacher { name, teacher })
        })
        .collect::<Result<_>>()?;
    let mut results = sttabt::eval::evaluate_with(
        &teacher,
        approx_net.as_ref().map(|a| &a.model),
        &concrete,
        &ltp,
        extra,
        &plan_aware,
        &dev,
        &test,
        opts,
    )?;
    // an ApproxNet runs for the ABT rows (--approx) and inside every concrete run
    results.precision = Some(precision.describe(approx_net.is_some() || !concrete.is_empty()));
    sttabt::eval::write_results(&results, out, &splits.description, splits.split_info.as_ref())?;
    print!("{}", sttabt::eval::format_table(&results));
    println!(
        "results: {0}/results.json, {0}/results.csv, plots {0}/accuracy_vs_retention.png, {0}/accuracy_vs_throughput_b1.png",
        out.display()
    );
    Ok(())
}
