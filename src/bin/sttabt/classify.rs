//! `sttabt classify`.

use super::*;

// The options of `sttabt classify` (the about text is on `Command::Classify`).
#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// Sentences to classify (else --file, else stdin, one per line).
    pub texts: Vec<String>,
    /// Classify these image files (PNG/JPEG) with a ViT/DeiT checkpoint instead of text
    /// (`--image a.png b.png` or `--image a.png --image b.png`).
    #[arg(long = "image", value_name = "FILE", num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// The second text of a sentence pair, with exactly one positional TEXT
    /// (encoded `[CLS] TEXT [SEP] PAIR [SEP]`, token types 0 then 1, as in training on pairs).
    #[arg(long, value_name = "PAIR")]
    pub pair: Option<String>,
    /// Read inputs from this file: one sentence per line, or TEXT<TAB>PAIR per line for
    /// sentence pairs (the file is read as pairs when any line contains a TAB).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Fine-tuned checkpoint (with a classification head). Not with --concrete / --ltp: their
    /// runs carry their own fine-tuned teacher.
    #[arg(long, required_unless_present_any = ["concrete", "ltp", "bundle"])]
    pub model: Option<PathBuf>,
    /// ApproxNet directory (from `sttabt distill`); needed for --mode abt.
    #[arg(long)]
    pub approx: Option<PathBuf>,
    /// A concrete-mask run directory written by `sttabt concrete --out DIR` (its teacher/,
    /// approx/ and learned thresholds θ_l in concrete.json); implies --mode concrete.
    #[arg(long, value_name = "DIR", conflicts_with = "ltp")]
    pub concrete: Option<PathBuf>,
    /// An LTP run directory written by `sttabt ltp --out DIR` (its teacher/ and learned
    /// thresholds in ltp.json); implies --mode ltp.
    #[arg(long, value_name = "DIR")]
    pub ltp: Option<PathBuf>,
    /// A bundle written by `sttabt compress --out DIR`: its teacher, ApproxNet and chosen
    /// planner. Not with --model, --approx, --concrete, --ltp, --mode, --keep.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["model", "approx", "concrete", "ltp", "mode", "keep"])]
    pub bundle: Option<PathBuf>,
    /// dense (every row of every layer) | dense-cls (every input, only CLS at the top layer) |
    /// abt (ApproxNet back-tracking) | abt-actual (teacher attention) | topk (manual top-k) |
    /// concrete (needs --concrete DIR) | ltp (needs --ltp DIR). Default: abt, or concrete /
    /// ltp when --concrete / --ltp is given.
    #[arg(long, value_parser = ["dense", "dense-cls", "abt", "abt-actual", "topk", "concrete", "ltp"])]
    pub mode: Option<String>,
    /// Keep fractions, each in (0, 1]. abt, abt-actual: one value k for every layer, or one
    /// per layer l = 1..L, comma-separated (`0.9,0.7,0.5,0.4,0.3,0.3` for 6 layers: layer l
    /// keeps the top ceil(k_l n) tokens of n plus what layer l+1 reads). topk: one value, the
    /// last layer's keep fraction. abt, abt-actual also take a per-layer schedule
    /// `kmin=K,gamma=G`: k_l = K + (1 - K)((L - l)/(L - 1))^G (layer 1 keeps all, layer L keeps
    /// K; G = 1 falls linearly, G > 1 drops early, G = inf is K on layers 2..L). Not for dense,
    /// concrete, ltp. [default: 0.3]
    #[arg(long, value_name = "K[,K...]|kmin=K,gamma=G")]
    pub keep: Option<String>,
    /// Show which tokens survived to which layer (with --json: per-token char offsets and
    /// last layer, see below).
    #[arg(long)]
    pub explain: bool,
    /// JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Maximum tokens per example, [CLS]/[SEP] included (longer texts are truncated with a warning).
    #[arg(long, default_value_t = 128, value_parser = max_length_tokens)]
    pub max_length: usize,
    #[command(flatten)]
    pub precision: PrecisionArgs,
}

/// Run `sttabt classify`.
pub fn run(args: ClassifyArgs) -> Result<()> {
    let ClassifyArgs { texts, images, pair, file, model, approx, concrete, ltp, bundle, mode, keep, explain, json, max_length, precision } =
        args;
    let run = match (concrete, ltp, bundle) {
        (Some(d), _, _) => Some(PrunerRun::Concrete(d)),
        (None, Some(d), _) => Some(PrunerRun::Ltp(d)),
        (None, None, Some(d)) => Some(PrunerRun::Bundle(d)),
        (None, None, None) => None,
    };
    if let Some(m) = &model {
        super::refuse_non_teacher_model(m)?;
    }
    let mode = classify_mode_name(mode, run.as_ref())?;
    let keep = parse_keeps(keep.as_deref(), &mode)?;
    if !images.is_empty() {
        if !texts.is_empty() || file.is_some() || pair.is_some() {
            bail!("give either texts or --image files, not both");
        }
        if run.is_some() {
            bail!("--concrete / --ltp runs and --bundle are text-only in `classify`; for images use `sttabt eval --image-folder DIR --concrete RUN`");
        }
        precision.fp32_only("images")?;
        let model = model.context("--image needs --model DIR (a ViT/DeiT checkpoint)")?;
        let m = parse_mode(&mode, &keep, None)?;
        if m.needs_approx() && approx.is_none() {
            bail!("--mode abt needs --approx DIR (an ApproxNet from `sttabt distill --vision`); or use --mode abt-actual, topk or dense");
        }
        return vision::classify(&images, &model, approx.as_deref(), &m, json);
    }
    let inputs = read_classify_inputs(texts, pair, file)?;
    classify(inputs, model.as_deref(), approx.as_deref(), run.as_ref(), &mode, &keep, explain, json, max_length, &precision)
}

/// A learned pruner's run directory (`classify --concrete DIR` / `--ltp DIR`).
pub(crate) enum PrunerRun {
    Concrete(PathBuf),
    Ltp(PathBuf),
    /// A bundle from `sttabt compress` (teacher, ApproxNet, planner).
    Bundle(PathBuf),
}

/// The mode `classify` runs: `--mode`, else concrete / ltp when their run is given, else abt.
pub(crate) fn classify_mode_name(mode: Option<String>, run: Option<&PrunerRun>) -> Result<String> {
    Ok(match (mode, run) {
        (None, None) => "abt".into(),
        (None, Some(PrunerRun::Concrete(_))) => "concrete".into(),
        (None, Some(PrunerRun::Ltp(_))) => "ltp".into(),
        (None, Some(PrunerRun::Bundle(_))) => "bundle".into(),
        (Some(m), Some(PrunerRun::Bundle(_))) => {
            bail!("--bundle DIR classifies with the bundle's planner, not --mode {m}: drop --mode, or drop --bundle and pass --model/--approx")
        }
        (Some(m), Some(PrunerRun::Concrete(_))) if m == "concrete" => m,
        (Some(m), Some(PrunerRun::Ltp(_))) if m == "ltp" => m,
        (Some(m), Some(run)) => {
            let (flag, own) = match run {
                PrunerRun::Concrete(_) => ("--concrete", "concrete"),
                PrunerRun::Ltp(_) => ("--ltp", "ltp"),
                PrunerRun::Bundle(_) => ("--bundle", "bundle"),
            };
            bail!("{flag} DIR classifies with mode {own}, not --mode {m}: drop --mode, or drop {flag} to run --mode {m} on --model");
        }
        (Some(m), None) if m == "concrete" || m == "ltp" => {
            bail!("--mode {m} needs --{m} DIR (a run directory written by `sttabt {m} --out DIR`)")
        }
        (Some(m), None) => m,
    })
}

/// `--keep`: keep fractions (one for every layer, or one per layer) or a per-layer keep
/// schedule (ALGORITHM.md section 8).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeepArg {
    /// `K` or `K1,...,KL`, each in (0, 1].
    Fractions(Vec<f64>),
    /// `kmin=K,gamma=G`: `k_l = k_min + (1 - k_min) ((L - l)/(L - 1))^gamma`.
    Schedule(sttabt::planners::abt::KeepSchedule),
}

/// The accepted forms of `--keep`, for error messages.
const KEEP_FORMS: &str =
    "expected K (one keep fraction for every layer), K1,K2,...,KL (one per layer), each in (0, 1], or kmin=K,gamma=G (the schedule k_l = k_min + (1 - k_min)((L - l)/(L - 1))^G, G > 0 or inf)";

/// `--keep` parsed (`None` when not given): fractions checked to be in (0, 1], a schedule's
/// `k_min` and `gamma` checked; the count of a list is checked against the model's layers in
/// [`parse_mode`].
pub(crate) fn parse_keeps(keep: Option<&str>, mode: &str) -> Result<Option<KeepArg>> {
    let Some(s) = keep else { return Ok(None) };
    match mode {
        "dense" | "dense-cls" => bail!("--keep does not apply to --mode {mode} (it keeps every input token)"),
        "concrete" | "ltp" => bail!("--keep does not apply to --mode {mode}: its run learned one threshold per layer (train another run with a different {} to keep more or fewer tokens)", if mode == "ltp" { "--lambda" } else { "--theta0" }),
        "bundle" => bail!("--keep does not apply to --bundle DIR: the bundle carries its planner settings (run `sttabt compress` again to choose another, or drop --bundle and pass --model/--approx/--keep)"),
        _ => {}
    }
    if s.contains('=') {
        let sched = parse_schedule(s)?;
        if mode == "topk" {
            bail!("--keep {s}: a keep schedule is for --mode abt / abt-actual; --mode topk takes one value (k_min)");
        }
        return Ok(Some(KeepArg::Schedule(sched)));
    }
    let ks: Vec<f64> = s
        .split(',')
        .enumerate()
        .map(|(i, v)| {
            let v = v.trim();
            let k: f64 = v.parse().map_err(|_| anyhow::anyhow!("--keep {s}: value {} ({v:?}) is not a number; {KEEP_FORMS}", i + 1))?;
            if !(k > 0.0 && k <= 1.0) {
                let which = if s.contains(',') { format!("value {} is {k}", i + 1) } else { format!("{k} is") };
                bail!("--keep {s}: {which} not in (0, 1]; {KEEP_FORMS}");
            }
            Ok(k)
        })
        .collect::<Result<_>>()?;
    if mode == "topk" && ks.len() != 1 {
        bail!("--mode topk takes one --keep value (k_min, the last layer's keep fraction; the schedule falls linearly from 1.0 at layer 1), got {}", ks.len());
    }
    Ok(Some(KeepArg::Fractions(ks)))
}

/// `kmin=K,gamma=G` (also `k_min=`, `γ=`; either order) as a checked [`KeepSchedule`].
///
/// [`KeepSchedule`]: sttabt::planners::abt::KeepSchedule
pub(crate) fn parse_schedule(s: &str) -> Result<sttabt::planners::abt::KeepSchedule> {
    let (mut k_min, mut gamma) = (None, None);
    for part in s.split(',') {
        let (key, value) = part.split_once('=').ok_or_else(|| anyhow::anyhow!("--keep {s}: {part:?} is not KEY=VALUE; {KEEP_FORMS}"))?;
        let v: f64 = value.trim().parse().map_err(|_| anyhow::anyhow!("--keep {s}: {value:?} is not a number; {KEEP_FORMS}"))?;
        match key.trim() {
            "kmin" | "k_min" => k_min = Some(v),
            "gamma" | "γ" => gamma = Some(v),
            other => bail!("--keep {s}: unknown key {other:?} (kmin, gamma); {KEEP_FORMS}"),
        }
    }
    let (Some(k_min), Some(gamma)) = (k_min, gamma) else { bail!("--keep {s}: a schedule needs both kmin= and gamma=; {KEEP_FORMS}") };
    let sched = sttabt::planners::abt::KeepSchedule { k_min, gamma };
    sched.check().map_err(|e| anyhow::anyhow!("--keep {s}: {e}"))?;
    Ok(sched)
}

/// The inference mode for dense, abt, abt-actual and topk (`layers`: the model's L, when known,
/// to check a per-layer `--keep` list; the default keep is 0.3).
pub(crate) fn parse_mode(mode: &str, keep: &Option<KeepArg>, layers: Option<usize>) -> Result<sttabt::infer::Mode> {
    use sttabt::infer::Mode;
    let ks = match keep {
        Some(KeepArg::Schedule(sc)) => {
            let (k_min, gamma) = (sc.k_min, sc.gamma);
            return Ok(match mode {
                "abt" => Mode::AbtSchedule { k_min, gamma },
                "abt-actual" => Mode::AbtActualSchedule { k_min, gamma },
                other => bail!("--keep kmin=..,gamma=.. applies to --mode abt / abt-actual, not {other}"),
            });
        }
        Some(KeepArg::Fractions(ks)) => ks.clone(),
        None => vec![0.3],
    };
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

/// `classify`'s inputs: positional texts (or one text with `--pair`), else `--file`, else stdin.
/// A file (or stdin) with a TAB on any line is read as sentence pairs, `TEXT<TAB>PAIR` on every
/// line; a line with another number of columns, or an empty one, is an error naming FILE:LINE.
pub(crate) fn read_classify_inputs(texts: Vec<String>, pair: Option<String>, file: Option<PathBuf>) -> Result<Vec<ClassifyInput>> {
    if let Some(p) = pair {
        if file.is_some() || texts.len() != 1 {
            bail!(
                "--pair PAIR goes with exactly one positional TEXT (got {} text(s){}); for many pairs use --file with TEXT<TAB>PAIR lines",
                texts.len(),
                if file.is_some() { " and --file" } else { "" }
            );
        }
        reject_empty_texts("argument", texts.iter().chain(std::iter::once(&p)))?;
        return Ok(texts.into_iter().map(|t| (t, Some(p.clone()))).collect());
    }
    if !texts.is_empty() {
        if file.is_some() {
            bail!("give texts either as arguments or with --file, not both");
        }
        reject_empty_texts("argument", texts.iter())?;
        return Ok(texts.into_iter().map(|t| (t, None)).collect());
    }
    let (name, content) = match file {
        Some(f) => {
            let name = f.display().to_string();
            let text = super::embed::utf8_text(&name, std::fs::read(&f).with_context(|| format!("reading {name}"))?)?;
            (name, text)
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no texts given: pass them as arguments (one TEXT with --pair PAIR for a sentence pair), with --file, or on stdin");
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes).context("reading stdin")?;
            ("<stdin>".to_string(), super::embed::utf8_text("<stdin>", bytes)?)
        }
    };
    parse_classify_lines(&name, &content)
}

/// An error naming the first empty (or whitespace-only) text: `what` and its 1-based position,
/// e.g. "argument 2" or "reviews.txt: line 7". An empty text has no token to classify or embed
/// beyond [CLS] [SEP], so its output would say nothing about any input.
pub(crate) fn reject_empty_texts<S: AsRef<str>>(what: &str, texts: impl Iterator<Item = S>) -> Result<()> {
    for (i, t) in texts.enumerate() {
        if t.as_ref().trim().is_empty() {
            bail!("{what} {} is empty: every text needs at least one word (remove empty lines or arguments)", i + 1);
        }
    }
    Ok(())
}

/// See [`read_classify_inputs`]; `name` is the file name for error messages.
pub(crate) fn parse_classify_lines(name: &str, content: &str) -> Result<Vec<ClassifyInput>> {
    let mut lines: Vec<&str> = content.lines().map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    // blank lines at the end of a file are no inputs (an editor's trailing newline); inside, they are errors
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let Some(first_tab) = lines.iter().position(|l| l.contains('\t')) else {
        reject_empty_texts(&format!("{name}: line"), lines.iter())?;
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

#[allow(clippy::too_many_arguments)]
pub(crate) fn classify(
    inputs: Vec<ClassifyInput>,
    model: Option<&std::path::Path>,
    approx: Option<&std::path::Path>,
    run: Option<&PrunerRun>,
    mode: &str,
    keep: &Option<KeepArg>,
    explain: bool,
    json: bool,
    max_length: usize,
    precision: &PrecisionArgs,
) -> Result<()> {
    if inputs.is_empty() {
        bail!("no texts to classify: pass them as arguments, with --file, or on stdin");
    }
    let mode_arg = mode;
    if run.is_some() && (model.is_some() || approx.is_some()) {
        bail!("--model / --approx are not used with --concrete / --ltp / --bundle: the run directory carries its own fine-tuned teacher (and its ApproxNet)");
    }
    // a bundle runs at the precision its setting was chosen at, unless --precision says otherwise
    let opened = match run {
        Some(PrunerRun::Bundle(d)) => Some(sttabt::compress::bundle::open(d)?),
        _ => None,
    };
    let precision = &match &opened {
        Some(b) => precision.for_bundle(b),
        None => *precision,
    };
    // (teacher, its directory for the tokenizer, ApproxNet, mode)
    let (concrete, ltp, plain, approx_net, bundled);
    // the bundle's own label for its setting (e.g. `abt-ft k=0.50`: the planner alone says `abt`)
    let mut bundle_label: Option<String> = None;
    let (teacher, teacher_dir, approx_model, mode): (&Encoder, PathBuf, Option<&Encoder>, sttabt::infer::Mode) = match run {
        Some(PrunerRun::Concrete(d)) => {
            existing_run_dir(d, "--concrete", "teacher/, approx/ and concrete.json", "concrete")?;
            concrete = precision.concrete(
                sttabt::train::concrete::ConcreteModel::load(d).with_context(|| format!("loading concrete run {}", d.display()))?,
            )?;
            let mode = sttabt::infer::Mode::Concrete { theta0: concrete.theta0, theta: concrete.theta.clone() };
            (&concrete.teacher, d.join("teacher"), Some(&concrete.approx.model), mode)
        }
        Some(PrunerRun::Ltp(d)) => {
            existing_run_dir(d, "--ltp", "teacher/ and ltp.json", "ltp")?;
            ltp = precision.ltp(sttabt::train::ltp::LtpModel::load(d).with_context(|| format!("loading LTP run {}", d.display()))?)?;
            let mode = sttabt::infer::Mode::Ltp { lambda: ltp.lambda, theta: ltp.theta.clone(), score: ltp.score };
            (&ltp.teacher, d.join("teacher"), None, mode)
        }
        Some(PrunerRun::Bundle(_)) => {
            let b = opened.as_ref().expect("opened above");
            let t = precision.teacher(
                Encoder::load(&b.teacher_dir).with_context(|| format!("loading the bundle's teacher {}", b.teacher_dir.display()))?,
            )?;
            let a = match &b.approx_dir {
                Some(a) => Some(
                    precision.approx(
                        sttabt::approx::ApproxNet::load(a, &t.config)
                            .with_context(|| format!("loading the bundle's ApproxNet {}", a.display()))?,
                    )?,
                ),
                None => None,
            };
            bundled = (t, a);
            bundle_label = Some(b.manifest.label.clone());
            (&bundled.0, b.teacher_dir.clone(), bundled.1.as_ref().map(|a| &a.model), b.manifest.planner.clone())
        }
        None => {
            let model = model.context("--model DIR is required (or --concrete DIR / --ltp DIR)")?;
            plain = precision.teacher(Encoder::load(model).with_context(|| format!("loading {}", model.display()))?)?;
            let teacher = &plain;
            if teacher.classifier.is_none() {
                bail!("{} has no classification head; fine-tune one with `sttabt finetune`", model.display());
            }
            let mode = parse_mode(mode, keep, Some(teacher.layers.len()))?;
            if approx.is_some() && !mode.needs_approx() {
                // refused, not ignored: the user may believe the ApproxNet shapes the result
                bail!("--approx is not used by --mode {mode_arg}: only --mode abt (and a --concrete run) plans from an ApproxNet (remove --approx, or use --mode abt)");
            }
            if let Some(a) = approx {
                super::refuse_file_as_approx(a, "--approx")?;
            }
            approx_net = match approx {
                Some(a) => Some(precision.approx(
                    sttabt::approx::ApproxNet::load(a, &teacher.config).with_context(|| format!("loading ApproxNet {}", a.display()))?,
                )?),
                None => None,
            };
            if mode.needs_approx() && approx_net.is_none() {
                bail!("--mode abt needs --approx DIR (an ApproxNet from `sttabt distill`); or use --mode abt-actual, topk or dense");
            }
            (teacher, model.to_path_buf(), approx_net.as_ref().map(|a| &a.model), mode)
        }
    };
    if precision.approx_precision != sttabt::model::Precision::Fp32 && !(approx_model.is_some() && mode.needs_approx()) {
        let what = match (run, &bundle_label) {
            (Some(PrunerRun::Bundle(_)), Some(l)) => format!("this bundle's planner ({l})"),
            (Some(PrunerRun::Ltp(_)), _) => "an LTP run (--ltp)".to_string(),
            _ => format!("--mode {mode_arg}"),
        };
        bail!(
            "--approx-precision {} applies to the ApproxNet, and {what} runs none: only --mode abt (and a --concrete run) plans from an ApproxNet",
            precision.approx_precision
        );
    }
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
    // the length in force (--max-length capped at the model's positions, with a warning above)
    let max_length = tok.max_length();
    let big_l = teacher.layers.len();
    // the ApproxNet's precision is named only when one runs (not in dense, top-k, abt-actual, LTP)
    let approx_used = approx_model.is_some() && mode.needs_approx();
    if !json && precision.int8_used(approx_used) {
        eprintln!("precision: {}", precision.describe(approx_used));
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // truncated inputs: the first few named as they come, then one summary line
    const NAMED_CUTS: usize = 5;
    let (mut cut_inputs, mut cut_tokens) = (0usize, 0usize);
    // every input tokenised before any is classified, so that one the tokenizer reduces to its
    // special tokens is refused before anything is printed
    let encoded: Vec<_> = inputs.iter().map(|(text, pair)| tok.encode_with_spans(text, pair.as_deref())).collect::<Result<_, _>>()?;
    // each side of a pair on its own too (a pair whose one side is lost would be classified as
    // the other side alone)
    for (i, ((_, pair), (_, spans))) in inputs.iter().zip(&encoded).enumerate() {
        for (segment, side) in [(0, "text"), (1, "pair")].into_iter().take(if pair.is_some() { 2 } else { 1 }) {
            if !spans.iter().flatten().any(|sp| sp.segment == segment) {
                bail!(
                    "input {}: the tokenizer keeps nothing of its {side} (only special tokens would be left); give text with words in it",
                    i + 1
                );
            }
        }
    }
    for (i, ((text, pair), (enc, spans))) in inputs.iter().zip(encoded).enumerate() {
        if enc.truncated > 0 {
            cut_inputs += 1;
            cut_tokens += enc.truncated;
            if cut_inputs <= NAMED_CUTS {
                eprintln!("warning: input {}: {} tokens cut (--max-length {max_length})", i + 1, enc.truncated);
            }
        }
        let p = sttabt::infer::classify(teacher, approx_model, &[enc.input.clone()], &mode)?.remove(0);
        // a plan whose first layer reads no token of the text answers the same for any text
        if !p.plan.inputs(0).iter().any(|&j| spans.get(j).is_some_and(Option::is_some)) {
            eprintln!(
                "warning: input {}: the planner kept no token of the text (layer 1 reads only special tokens), so this prediction does not depend on the text; the run keeps too few tokens for it (e.g. a concrete run with a low θ0, or a small --keep)",
                i + 1
            );
        }
        let label = teacher.config.labels.get(p.label).cloned().unwrap_or_else(|| p.label.to_string());
        // deepest layer each token is read by (0 = not even layer 1); the sets are nested
        let depth: Vec<usize> =
            (0..enc.input.len()).map(|j| (0..big_l).filter(|&l| p.plan.inputs(l).binary_search(&j).is_ok()).count()).collect();
        if json {
            let mut rec = serde_json::json!({"text": text, "pair": pair, "label": label, "probability": p.probability, "logits": p.logits, "retention": p.retention, "mode": mode.label(), "gflops": p.flops as f64 / 1e9, "inputs_per_layer": (0..big_l).map(|l| p.plan.inputs(l).len()).collect::<Vec<_>>(), "tokens": enc.tokens, "tokens_cut": enc.truncated, "survives_to_layer": depth});
            rec["precision"] = serde_json::json!({"teacher": precision.precision(), "approx": precision.approx_used(approx_used)});
            // the int8 kernels, as the text line names them, only when a model runs in int8
            if precision.int8_used(approx_used) {
                rec["precision"]["int8_kernels"] = sttabt::precision_eval::int8_kernels_here().into();
            }
            // the bundle's own label, only with --bundle (no `"bundle": null` otherwise)
            if let Some(l) = &bundle_label {
                rec["bundle"] = l.as_str().into();
            }
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
    if cut_inputs > NAMED_CUTS {
        eprintln!(
            "warning: {cut_inputs} of {} inputs were cut to --max-length {max_length} ({cut_tokens} tokens in all; the first {NAMED_CUTS} are named above)",
            inputs.len()
        );
    }
    Ok(())
}
