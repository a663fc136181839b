//! `sttabt compress`.

use super::*;

// The options of `sttabt compress` (the about text is on `Command::Compress`).
#[derive(clap::Args)]
// data flags this command refuses (it does not read that split) stay out of --help
#[command(mut_arg("test", |a| a.hide(true)))]
pub struct CompressArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Fine-tuned teacher (HF layout, with a classification head): dense and the reference.
    #[arg(long)]
    pub model: PathBuf,
    /// Its ApproxNet (from `sttabt distill`); without it one is distilled into OUT/approx on the
    /// training sentences (--train FILE, or Rotten Tomatoes' train split without data files).
    #[arg(long)]
    pub approx: Option<PathBuf>,
    /// Distillation steps when no --approx is given.
    #[arg(long, default_value_t = 400, value_parser = at_least_one)]
    pub distill_steps: usize,
    /// Accuracy budget in points below dense dev accuracy (1.0 = one point), > 0.
    #[arg(long, default_value_t = 1.0, value_parser = positive_points, allow_hyphen_values = true)]
    pub max_drop: f64,
    /// Which measured speed-up to maximise: b1 (batch 1) or b32 (batch 32).
    #[arg(long, default_value = "b1", value_parser = ["b1", "b32"])]
    pub objective: String,
    /// The bundle directory to write (refused when it already holds one).
    #[arg(long)]
    pub out: PathBuf,
    /// ABT keep fractions of the flat schedule (same k on every layer).
    #[arg(long, default_value = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", value_delimiter = ',')]
    pub ks: Vec<f64>,
    /// k_min values of the per-layer schedules k_l = k_min + (1 - k_min)((L - l)/(L - 1))^gamma.
    #[arg(long, default_value = "0.05,0.1,0.2,0.3", value_delimiter = ',')]
    pub k_mins: Vec<f64>,
    /// gamma values of the per-layer schedules (> 0; inf allowed).
    #[arg(long, default_value = "0.5,1,2,4", value_delimiter = ',')]
    pub gammas: Vec<f64>,
    /// Concrete-mask runs (from `sttabt concrete --out DIR`) to consider, repeatable.
    #[arg(long, value_name = "DIR")]
    pub concrete: Vec<PathBuf>,
    /// Plan-aware fine-tuned teachers (HF layout; fine-tuned under ABT plans of this ApproxNet)
    /// to consider with the same ABT keep grid, repeatable.
    #[arg(long, value_name = "DIR")]
    pub plan_aware: Vec<PathBuf>,
    /// Use at most N dev examples.
    #[arg(long, value_parser = at_least_one)]
    pub limit: Option<usize>,
    /// Dev examples timed per candidate and batch (the first N).
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub bench_examples: usize,
    /// Timing rounds, alternating dense first / dense last (>= 3).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Timed passes per round.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub repeats: usize,
    /// Time at most N within-budget candidates (those of lowest dev retention).
    #[arg(long, default_value_t = 6, value_parser = at_least_one)]
    pub max_timed: usize,
    /// Maximum tokens per example, [CLS]/[SEP] included.
    #[arg(long, default_value_t = 128, value_parser = max_length_tokens)]
    pub max_length: usize,
    /// The teacher arithmetics whose candidates compete (comma-separated: fp32, int8, int8-w7;
    /// see `classify --help` on --precision). Every non-fp32 entry adds each candidate again
    /// with its teacher's linear layers in that precision (ApproxNets stay fp32), dense
    /// included, as sources named `<precision> ...`: the fastest within the budget may then be
    /// pruned, quantised, or both. Without fp32 in the list only the quantised candidates
    /// compete. The budget is always measured from the fp32 dense teacher; the bundle records
    /// the precision its setting was chosen at.
    #[arg(long, value_delimiter = ',', default_value = "fp32", value_name = "LIST", conflicts_with = "int8")]
    pub precisions: Vec<sttabt::model::Precision>,
    /// Shorthand for --precisions fp32,int8.
    #[arg(long)]
    pub int8: bool,
    /// No progress bars or status lines (the `data: ...` line included): errors, warnings and the result only.
    #[arg(long)]
    pub quiet: bool,
}

/// clap value parser for `--max-drop`: a finite number of points > 0.
fn positive_points(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("the accuracy budget must be a number of points > 0 (e.g. 1.0 = one accuracy point below dense), got {v}")),
        Err(_) => Err("expected a number of accuracy points > 0, e.g. 1.0".into()),
    }
}

/// The teacher precisions `compress` compares: `--precisions`, or fp32 and int8 with `--int8`;
/// each once, in the order given.
///
/// Errors: an empty list.
fn compared_precisions(a: &CompressArgs) -> Result<Vec<sttabt::model::Precision>> {
    use sttabt::model::Precision;
    let listed: &[Precision] = if a.int8 { &[Precision::Fp32, Precision::Int8] } else { &a.precisions };
    let mut out: Vec<Precision> = Vec::new();
    for &p in listed {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        bail!("--precisions: name at least one of fp32, int8, int8-w7");
    }
    // where 7-bit weights are no faster (every int8 path but AVX2's), an int8-w7 candidate can
    // only win the speed comparison by timing noise against the same setting in int8, at an
    // accuracy cost: with int8 in the list it is left out (asked for alone, it competes)
    if let Some(why) = Precision::Int8W7.no_gain_here().filter(|_| out.contains(&Precision::Int8W7)) {
        if out.contains(&Precision::Int8) {
            out.retain(|&p| p != Precision::Int8W7);
            eprintln!("warning: --precisions: int8-w7 left out beside int8: {why}");
        } else {
            eprintln!("warning: --precisions: {why}");
        }
    }
    Ok(out)
}

/// Run `sttabt compress`.
pub fn run(args: CompressArgs) -> Result<()> {
    use sttabt::compress::{self, bundle, search::ScheduleGrid, ChooseOptions, ModelSource, Objective};
    use sttabt::infer::Mode;
    let a = args;
    let progress = sttabt::train::Progress { quiet: a.quiet };
    if a.rounds < 3 {
        bail!("--rounds {}: the speed comparison with dense needs at least 3 alternating rounds", a.rounds);
    }
    if let Some(k) = a.ks.iter().find(|k| !(**k > 0.0 && **k <= 1.0)) {
        bail!("--ks: every keep fraction must be in (0, 1], got {k}");
    }
    let grid = ScheduleGrid { k_mins: a.k_mins.clone(), gammas: a.gammas.clone() };
    let schedules = grid.schedules().map_err(|e| anyhow::anyhow!("--k-mins / --gammas: {e}"))?;
    if a.out.join("bundle.json").exists() {
        bail!("{} already holds a bundle (bundle.json); choose another --out (nothing was overwritten)", a.out.display());
    }
    if a.out.is_file() {
        bail!("--out {}: is a file, not a directory (the bundle is a directory)", a.out.display());
    }
    if !a.model.is_dir() {
        bail!("--model {}: no such directory; give a fine-tuned checkpoint (from `sttabt finetune`)", a.model.display());
    }
    super::refuse_non_teacher_model(&a.model)?;
    if let Some(ap) = &a.approx {
        super::refuse_file_as_approx(ap, "--approx")?;
    }
    for d in &a.plan_aware {
        super::refuse_non_plan_aware_teacher(d)?;
    }
    let objective: Objective = a.objective.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let needs = sttabt::pipeline::DataNeeds {
        job: "compress",
        // train is read only to distil an ApproxNet, which --approx replaces
        train: if a.approx.is_some() { sttabt::pipeline::SplitUse::Unused } else { sttabt::pipeline::SplitUse::Optional },
        dev: sttabt::pipeline::SplitUse::Required,
        test: sttabt::pipeline::SplitUse::Unused,
        eval_limit: a.limit,
        train_limit: None,
    };
    let mut source = a.data.source(&needs)?;
    let teacher = Encoder::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    if teacher.classifier.is_none() {
        bail!("{} has no classification head; fine-tune one with `sttabt finetune`", a.model.display());
    }
    // the teacher's head defines the class ids: labels in the files map to its id2label (the
    // training file, when given, is only distilled on)
    if let sttabt::pipeline::DataSource::Table { spec, .. } = &mut source {
        if spec.label_names.is_none() && !teacher.config.labels.is_empty() {
            spec.label_names = Some(teacher.config.labels.clone());
        }
    }
    let tok = text_tokenizer(&a.model, &teacher, a.max_length)?;
    let splits = a.data.load(&source, &needs, a.quiet)?;
    let (dev, _) = sttabt::pipeline::tokenize(&tok, &splits.dev, a.limit)?;
    if dev.is_empty() {
        bail!("the dev split is empty: compress chooses its operating point on dev examples");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // the ApproxNet: given, or distilled into OUT/approx
    let approx_dir = match &a.approx {
        Some(d) => d.clone(),
        None => {
            let dir = a.out.join("approx");
            let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, None)?;
            if train.is_empty() {
                bail!("no --approx given and no training sentences to distil one on: pass --approx DIR (from `sttabt distill`) or --train FILE");
            }
            progress.println(format!("distilling an ApproxNet (f = 4, {} steps) on {} training sentences", a.distill_steps, train.len()));
            let approx = sttabt::approx::ApproxNet::new(&teacher, 4, sttabt::approx::ApproxInit::Interpolate, a.data.seed)?;
            let train: Vec<_> = train.into_iter().map(|x| x.input).collect();
            let held: Vec<_> = dev.iter().take(200).map(|x| x.input.clone()).collect();
            let cfg = sttabt::train::distill::DistillConfig { steps: a.distill_steps, seed: a.data.seed, ..Default::default() };
            let (_, r) = sttabt::train::distill::distill(&teacher, approx, &train, &held, &cfg, &dir, false, &progress)?;
            progress.println(format!(
                "      attention KL {:.3} -> {:.3} on held-out dev sentences",
                r.before.attention_kl, r.after.attention_kl
            ));
            let _ = std::fs::remove_dir_all(dir.join("checkpoint"));
            dir
        }
    };
    let approx = sttabt::approx::ApproxNet::load(&approx_dir, &teacher.config)
        .with_context(|| format!("loading ApproxNet {}", approx_dir.display()))?;
    let concrete: Vec<_> = a
        .concrete
        .iter()
        .map(|d| sttabt::train::concrete::ConcreteModel::load(d).with_context(|| format!("loading concrete run {}", d.display())))
        .collect::<Result<_>>()?;
    let plan_aware: Vec<Encoder> = a
        .plan_aware
        .iter()
        .map(|d| {
            let m = Encoder::load(d).with_context(|| format!("loading plan-aware teacher {}", d.display()))?;
            approx.check_teacher(&m.config).with_context(|| format!("--plan-aware {}", d.display()))?;
            Ok(m)
        })
        .collect::<Result<_>>()?;
    let abt_modes = || -> Vec<Mode> {
        let flat = a.ks.iter().map(|&k| Mode::Abt { k });
        let sched = schedules.iter().map(|s| Mode::AbtSchedule { k_min: s.k_min, gamma: s.gamma });
        flat.chain(sched).collect()
    };
    let precisions = compared_precisions(&a)?;
    // each source's teacher again in each quantised precision (calibrated once here)
    let quantised: Vec<(sttabt::model::Precision, Vec<Encoder>)> = precisions
        .iter()
        .filter(|p| p.is_int8())
        .map(|&p| {
            let teachers = std::iter::once(&teacher)
                .chain(concrete.iter().map(|c| &c.teacher))
                .chain(plan_aware.iter())
                .map(|m| m.clone().with_precision(p).with_context(|| format!("switching a teacher to {p}")))
                .collect::<Result<_>>()?;
            Ok((p, teachers))
        })
        .collect::<Result<_>>()?;
    // (source, its teacher dir, its ApproxNet dir)
    let mut sources = vec![ModelSource {
        name: "teacher".into(),
        teacher: &teacher,
        approx: Some(&approx.model),
        modes: std::iter::once(Mode::DenseCls).chain(abt_modes()).collect(),
    }];
    let mut dirs: Vec<(PathBuf, Option<PathBuf>)> = vec![(a.model.clone(), Some(approx_dir.clone()))];
    for (c, d) in concrete.iter().zip(&a.concrete) {
        sources.push(ModelSource {
            name: format!("concrete θ0={} ({})", c.theta0, d.display()),
            teacher: &c.teacher,
            approx: Some(&c.approx.model),
            modes: vec![Mode::Concrete { theta0: c.theta0, theta: c.theta.clone() }],
        });
        dirs.push((d.join("teacher"), Some(d.join("approx"))));
    }
    for (m, d) in plan_aware.iter().zip(&a.plan_aware) {
        sources.push(ModelSource {
            name: format!("plan-aware ({})", d.display()),
            teacher: m,
            approx: Some(&approx.model),
            modes: abt_modes(),
        });
        dirs.push((d.clone(), Some(approx_dir.clone())));
    }
    // the quantised sources: the same models and modes (plus dense) with quantised teachers, the
    // same folders
    let fp32_sources = sources.len();
    for (p, teachers) in &quantised {
        for (i, q) in teachers.iter().enumerate() {
            let s = &sources[i];
            let mut modes = s.modes.clone();
            if i == 0 {
                modes.insert(0, Mode::Dense);
            }
            let source = ModelSource { name: format!("{p} {}", s.name), teacher: q, approx: s.approx, modes };
            sources.push(source);
            dirs.push(dirs[i].clone());
        }
    }
    if !precisions.contains(&sttabt::model::Precision::Fp32) {
        // fp32 dense (sources[0]'s reference) is still measured; its pruned candidates are not
        for s in &mut sources[..fp32_sources] {
            s.modes.clear();
        }
    }
    let bench: Vec<_> = dev.iter().take(a.bench_examples).map(|d| d.input.clone()).collect();
    let opts =
        ChooseOptions { max_drop: a.max_drop, objective, rounds: a.rounds, repeats: a.repeats, max_timed: a.max_timed, quiet: a.quiet };
    progress.println(format!(
        "measuring {} operating points on {} dev examples",
        sources.iter().map(|s| s.modes.len()).sum::<usize>() + 1,
        dev.len()
    ));
    let table = compress::choose(&sources, &dev, &bench, &opts)?;
    let text = compress::format_table(&table);
    print!("{text}");
    // the bundle: teacher, ApproxNet (when the planner uses one), table, summary, manifest last
    let chosen = &table.candidates[table.chosen];
    let (teacher_src, approx_src) = &dirs[chosen.source];
    bundle::link_or_copy_dir(teacher_src, &a.out.join("teacher"))?;
    sttabt::train::copy_preprocessing_files(&a.model, &a.out.join("teacher"))?;
    let approx_name = if chosen.mode.needs_approx() {
        let src = approx_src.as_ref().context("internal: the chosen planner needs an ApproxNet")?;
        if *src != a.out.join("approx") {
            bundle::link_or_copy_dir(src, &a.out.join("approx"))?;
        }
        Some("approx".to_string())
    } else {
        None
    };
    let write = |name: &str, bytes: &[u8]| sttabt::model::checkpoint::write_atomic(&a.out.join(name), bytes);
    let json = serde_json::json!({"table": table, "data": splits.description, "teacher": a.model, "approx": approx_dir});
    write("table.json", serde_json::to_string_pretty(&json)?.as_bytes())?;
    write("table.txt", text.as_bytes())?;
    let mut summary = compress::summary_line(&table);
    for w in &table.warnings {
        summary.push_str(&format!("\n\nCaution: {w}."));
    }
    let readme = format!(
        "# sttabt bundle\n\n{summary}\n\nUse it with `sttabt classify --bundle DIR TEXT`, `sttabt eval --bundle DIR`, `sttabt bench --bundle DIR`.\nFiles: teacher/ (HF layout), {}bundle.json (planner settings), table.json / table.txt (every candidate measured on dev).\n",
        if approx_name.is_some() { "approx/ (ApproxNet), " } else { "" }
    );
    write("README.md", readme.as_bytes())?;
    let manifest = bundle::Manifest {
        format: bundle::FORMAT.into(),
        version: bundle::VERSION,
        sttabt_version: env!("CARGO_PKG_VERSION").into(),
        teacher: "teacher".into(),
        approx: approx_name,
        planner: chosen.mode.clone(),
        // the candidate records its teacher's precision (`Candidate::precision`)
        label: match chosen.precision {
            sttabt::model::Precision::Fp32 => chosen.label.clone(),
            p => format!("{} {p}", chosen.label),
        },
        summary: summary.clone(),
        precision: chosen.precision,
    };
    bundle::write_manifest(&a.out, &manifest)?;
    println!("bundle written to {} (classify / eval / bench --bundle {0})", a.out.display());
    Ok(())
}
