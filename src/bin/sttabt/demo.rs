//! `sttabt demo`: the issue-16 recipe (README "The text demo"): a teacher fine-tuned natively on
//! the Rotten Tomatoes train split, an ApproxNet distilled natively towards attention KL 0.2
//! (ALGORITHM.md section 2), one plan-aware fine-tune (ABT-FT, section 8), concrete masks
//! (section 4.5), LTP (section 6), every mode evaluated on dev and test with bootstrap
//! intervals, and the fastest setting within 1 point timed against dense and the ONNX Runtime
//! peer. Each stage is cached ([`stages`]) and its wall time recorded in `demo.json`.

use super::*;

mod bundle;
mod speed;
mod stages;

use stages::{run_stage, Stage, StageOutcome};

// The options of `sttabt demo` (the about text is on `Command::Demo`).
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Smoke version (small subsets, a few training steps) for CI: about 2-4 min on 2 cores.
    #[arg(long, conflicts_with = "full")]
    pub fast: bool,
    /// The whole study: 4 epochs of teacher, ApproxNet up to 10,000 steps, 2 plan-aware epochs,
    /// concrete masks at θ0 in {-2, -1.5, -1, -0.5, 0}, LTP at λ in {0.1, 0.25, 0.5, 1, 2} (3
    /// and 2 epochs), 7 keep fractions; several hours on 2 cores.
    #[arg(long)]
    pub full: bool,
    /// The vision study instead: a DeiT trained from scratch on Fashion-MNIST (about 30 min
    /// on 2 cores; --fast: a few minutes; --full: 15 epochs, all test images), its ApproxNet, concrete masks,
    /// the trade-off table, plots, and a picture of the patches each layer keeps.
    #[arg(long)]
    pub vision: bool,
    /// Where the stages are cached (default: $STTABT_HOME/runs/demo[-vision][-fast|-full]).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars or status lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Run `sttabt demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    let DemoArgs { fast, full, vision, out, quiet } = args;
    if vision {
        vision::demo(fast, full, out, quiet)
    } else {
        demo(fast, full, out, quiet)
    }
}

/// The sizes of one text-demo variant (`--fast`, the default, `--full`).
#[derive(Debug, Clone, serde::Serialize)]
struct Recipe {
    name: &'static str,
    /// Training sentences of the teacher, concrete and LTP stages (`None`: all 10,202).
    train_limit: Option<usize>,
    /// Training sentences of the plan-aware fine-tune (`None`: as `train_limit`).
    plan_ft_limit: Option<usize>,
    /// Dev and test sentences evaluated (`None`: all 1,275 each).
    eval_limit: Option<usize>,
    teacher_epochs: usize,
    /// ApproxNet: the step cap (the schedule's length) and how often the KL target is checked.
    distill_steps: usize,
    kl_every: usize,
    plan_ft_epochs: usize,
    thetas: Vec<f64>,
    concrete_steps: usize,
    lambdas: Vec<f64>,
    ltp_steps: usize,
    /// ABT (and ABT-FT, oracle) keep fractions of the table.
    ks: Vec<f64>,
    /// Sentences `eval` times per mode (its rough speed column and the accuracy/speed plot).
    timing_examples: usize,
    speed: speed::SpeedSettings,
    /// Also every mode with its teacher's linear layers in int8 (`eval --int8-rows`), each a
    /// candidate for the fastest setting within 1 point of the fp32 dense teacher.
    int8_rows: bool,
    /// Length robustness (issue 16 item 5): this many dev and test long reviews (>= 700 words of
    /// one label's sentences, 512 tokens) through every planner at ABT k 0.3 and 0.5 (`None`: no
    /// such stage).
    long_reviews: Option<usize>,
}

impl Recipe {
    fn new(fast: bool, full: bool) -> Self {
        if fast {
            Recipe {
                name: "demo-fast",
                train_limit: Some(1920),
                plan_ft_limit: Some(640),
                eval_limit: Some(200),
                teacher_epochs: 1,
                distill_steps: 100,
                kl_every: 50,
                plan_ft_epochs: 1,
                thetas: vec![-1.0],
                concrete_steps: 20,
                lambdas: vec![0.5],
                ltp_steps: 20,
                ks: vec![0.2, 0.5],
                timing_examples: 32,
                speed: speed::SpeedSettings { examples: 32, rounds: 3, repeats: 1, peer: false },
                int8_rows: true,
                long_reviews: Some(4),
            }
        } else if full {
            Recipe {
                name: "demo-full",
                train_limit: None,
                plan_ft_limit: None,
                eval_limit: None,
                teacher_epochs: 4,
                distill_steps: 10_000,
                kl_every: 250,
                plan_ft_epochs: 2,
                thetas: vec![-2.0, -1.5, -1.0, -0.5, 0.0],
                concrete_steps: 1914,
                lambdas: vec![0.1, 0.25, 0.5, 1.0, 2.0],
                ltp_steps: 1276,
                ks: vec![0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7],
                timing_examples: 128,
                speed: speed::SpeedSettings { examples: 256, rounds: 5, repeats: 2, peer: true },
                int8_rows: true,
                long_reviews: Some(100),
            }
        } else {
            // sized on an idle 2-core machine from docs/results/bench_train_native_jobs.txt
            // (native ex/s at RT batch 16: fine-tune ~90, distill ~200, plan-ft ~73, LTP ~89;
            // native concrete ~60): 1 epoch 113 s, 3,000 distillation steps 240 s, 1 plan-aware
            // epoch 140 s, 640 concrete steps (one epoch) ~170 s, 400 LTP steps 72 s
            Recipe {
                name: "demo",
                train_limit: None,
                plan_ft_limit: None,
                eval_limit: None,
                teacher_epochs: 1,
                distill_steps: 3000,
                kl_every: 250,
                plan_ft_epochs: 1,
                thetas: vec![-1.0],
                concrete_steps: 640,
                lambdas: vec![0.5],
                ltp_steps: 400,
                ks: vec![0.2, 0.3, 0.4, 0.5],
                timing_examples: 64,
                speed: speed::SpeedSettings { examples: 128, rounds: 3, repeats: 2, peer: true },
                int8_rows: true,
                long_reviews: None,
            }
        }
    }
}

/// The concrete stage's trainer. burn today; when `train::native::concrete` lands, switching is
/// the one call in [`train_concrete`] (and this name, recorded in `demo.json`).
const CONCRETE_TRAINER: &str = "native";

/// Concrete-mask training (ALGORITHM.md section 4.5) of the demo, resumable.
fn train_concrete(
    teacher: &Encoder,
    approx: &sttabt::approx::ApproxNet,
    train: &[sttabt::train::finetune::LabeledInput],
    cfg: &sttabt::train::concrete::ConcreteConfig,
    dir: &std::path::Path,
    resume: bool,
    progress: &sttabt::train::Progress,
) -> Result<sttabt::train::concrete::ConcreteReport> {
    sttabt::train::native::concrete::train_concrete_native(teacher, approx, train, cfg, dir, resume, progress)
}

pub(crate) fn demo(fast: bool, full: bool, out: Option<PathBuf>, quiet: bool) -> Result<()> {
    use sttabt::approx::{ApproxInit, ApproxNet};
    use sttabt::train::{distill::DistillConfig, finetune::FinetuneConfig, Progress};
    let t0 = std::time::Instant::now();
    let recipe = Recipe::new(fast, full);
    let progress = Progress { quiet };
    let base = assets::default_model_dir();
    if !base.join("model.safetensors").exists() || !assets::rotten_tomatoes_path().exists() {
        progress.println("fetching assets (all-MiniLM-L6-v2, Rotten Tomatoes) into the asset cache");
        fetch::fetch(false)?;
    }
    let run_dir = out.unwrap_or_else(|| assets::home().join("runs").join(recipe.name));
    let (teacher_dir, approx_dir, planft_dir) = (run_dir.join("teacher"), run_dir.join("approx"), run_dir.join("planft"));
    let max_length = 128;
    let load_before = sttabt::bench::loadavg();
    let splits = sttabt::pipeline::default_source(0).load(false)?;
    let tok = TextTokenizer::from_dir(&base, max_length)?;
    let (train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, recipe.train_limit)?;
    let (dev, _) = sttabt::pipeline::tokenize(&tok, &splits.dev, recipe.eval_limit)?;
    let (test, _) = sttabt::pipeline::tokenize(&tok, &splits.test, recipe.eval_limit)?;
    let n_stages = 5 + recipe.thetas.len() + recipe.lambdas.len() + usize::from(recipe.long_reviews.is_some());
    let mut done: Vec<StageOutcome> = Vec::new();
    let header = |done: &[StageOutcome], what: String| format!("[{}/{n_stages}] {what}", done.len() + 1);
    // the runs a stage builds on (their names and wall times): a redone input redoes the stage
    let after = |done: &[StageOutcome], names: &[&str]| -> serde_json::Value {
        done.iter().filter(|o| names.contains(&o.stage.as_str())).map(|o| serde_json::json!([o.stage, o.seconds])).collect()
    };

    // 1. the teacher, fine-tuned natively on the train split; dense for every mode
    let ft_cfg = FinetuneConfig { epochs: recipe.teacher_epochs, batch_size: 16, lr: 5e-5, ..Default::default() };
    let teacher_key = serde_json::json!({"stage": "teacher", "trainer": "native", "config": ft_cfg, "train_examples": train.len(),
        "dev_examples": dev.len(), "base_model": base, "max_length": max_length, "data": splits.description});
    let what = format!(
        "teacher: all-MiniLM-L6-v2 fine-tuned natively on {} Rotten Tomatoes sentences, {} epoch(s)",
        train.len(),
        recipe.teacher_epochs
    );
    let stage = Stage { name: "teacher".into(), dir: teacher_dir.clone(), key: teacher_key.clone() };
    done.push(run_stage(&stage, &header(&done, what), &progress, |resume| {
        let m = sttabt::train::finetune::with_new_head(Encoder::load(&base)?, splits.label_names.clone(), 0);
        let report = sttabt::train::native::finetune_native(m, &train, &dev, &ft_cfg, &teacher_dir, &base, resume, &progress)?;
        let json = serde_json::json!({"report": report, "config": ft_cfg, "trainer": "native", "data": splits.description, "split": splits.split_info, "base_model": base, "max_length": max_length, "train_examples": train.len()});
        sttabt::model::checkpoint::write_atomic(&teacher_dir.join("finetune.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
        progress.println(format!("      dev accuracy per epoch {:?}", report.dev_accuracy.iter().map(|a| (a * 1e4).round() / 100.0).collect::<Vec<_>>()));
        Ok(serde_json::json!({"dev_accuracy_per_epoch": report.dev_accuracy, "best_epoch": report.best_epoch, "best_dev_accuracy": report.best_dev_accuracy}))
    })?);
    let teacher = Encoder::load(&teacher_dir)?;

    // 2. the ApproxNet, distilled natively until held-out attention KL <= 0.2 or the step cap
    let d_cfg = DistillConfig {
        steps: recipe.distill_steps,
        target_kl: Some(sttabt::train::distill::KlTarget { kl: 0.2, every: recipe.kl_every }),
        ..Default::default()
    };
    let heldout = 200;
    let approx_key = serde_json::json!({"stage": "approx", "trainer": "native", "config": d_cfg, "factor": 4, "init": "interpolate", "heldout": heldout, "teacher": teacher_key, "after": after(&done, &["teacher"])});
    let what = format!("ApproxNet (f = 4) distilled natively to attention KL <= 0.2, at most {} steps", recipe.distill_steps);
    let stage = Stage { name: "approx".into(), dir: approx_dir.clone(), key: approx_key.clone() };
    done.push(run_stage(&stage, &header(&done, what), &progress, |resume| {
        let approx = ApproxNet::new(&teacher, 4, ApproxInit::Interpolate, 0)?;
        let inputs: Vec<_> = train.iter().map(|x| x.input.clone()).collect();
        let held: Vec<_> = dev.iter().take(heldout).map(|x| x.input.clone()).collect();
        let (_, r) = sttabt::train::native::distill::distill_native(&teacher, approx, &inputs, &held, &d_cfg, &approx_dir, resume, &progress)?;
        progress.println(format!(
            "      attention KL {:.3} -> {:.3} in {} steps (target 0.2 {})",
            r.before.attention_kl,
            r.after.attention_kl,
            r.steps,
            if r.target_reached == Some(true) { "reached" } else { "not reached: step cap" }
        ));
        Ok(serde_json::json!({"attention_kl_before": r.before.attention_kl, "attention_kl_after": r.after.attention_kl, "steps": r.steps, "target_reached": r.target_reached}))
    })?);
    let approx = ApproxNet::load(&approx_dir, &teacher.config)?;

    // 3. plan-aware fine-tuning (ABT-FT): the teacher under its own ABT plans, k in [0.2, 0.5]
    let (plan_train, _) = sttabt::pipeline::tokenize(&tok, &splits.train, recipe.plan_ft_limit.or(recipe.train_limit))?;
    let pf_cfg = sttabt::train::native::plan_ft::PlanFtConfig {
        finetune: FinetuneConfig { epochs: recipe.plan_ft_epochs, batch_size: 16, lr: 2e-5, ..Default::default() },
        keep: 0.3,
        keep_range: Some((0.2, 0.5)),
        kd_alpha: 0.5,
        kd_temperature: 1.0,
        hidden_weight: 0.0,
    };
    let planft_key = serde_json::json!({"stage": "planft", "trainer": "native", "config": pf_cfg, "train_examples": plan_train.len(), "dev_examples": dev.len(), "approx": approx_key, "after": after(&done, &["teacher", "approx"])});
    let what = format!(
        "plan-aware fine-tune (ABT-FT, k 0.3, range 0.2-0.5) on {} sentences, {} epoch(s)",
        plan_train.len(),
        recipe.plan_ft_epochs
    );
    let stage = Stage { name: "planft".into(), dir: planft_dir.clone(), key: planft_key.clone() };
    done.push(run_stage(&stage, &header(&done, what), &progress, |resume| {
        let r = sttabt::train::native::plan_ft::finetune_plan_aware(
            &teacher,
            &approx,
            &plan_train,
            &dev,
            &pf_cfg,
            &planft_dir,
            &teacher_dir,
            resume,
            &progress,
        )?;
        let json = serde_json::json!({"report": r, "config": pf_cfg, "trainer": "native", "plan_aware": true, "approx": approx_dir, "base_model": teacher_dir, "max_length": max_length, "train_examples": plan_train.len()});
        sttabt::model::checkpoint::write_atomic(&planft_dir.join("finetune.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
        progress.println(format!(
            "      dev accuracy under ABT k = 0.3: {:.2}% -> {:.2}% (dense {:.2}%)",
            r.start_abt_dev_accuracy * 100.0,
            r.best_abt_dev_accuracy * 100.0,
            r.dense_dev_accuracy[r.best_epoch - 1] * 100.0
        ));
        Ok(serde_json::json!({"start_abt_dev_accuracy": r.start_abt_dev_accuracy, "best_abt_dev_accuracy": r.best_abt_dev_accuracy, "dense_dev_accuracy_per_epoch": r.dense_dev_accuracy, "best_epoch": r.best_epoch}))
    })?);
    let plan_aware = [sttabt::eval::PlanAwareTeacher { name: String::new(), teacher: Encoder::load(&planft_dir)? }];

    // 4. concrete masks (joint training, logit distillation from the teacher); retention weight
    // 10 instead of the paper's 1e-3 (a labelled deviation: with 1e-3 θ hardly moves)
    let (mut concrete, mut concrete_dirs) = (Vec::new(), Vec::new());
    for &theta0 in &recipe.thetas {
        let dir = run_dir.join(format!("concrete_theta{theta0}"));
        let cfg = sttabt::train::concrete::ConcreteConfig {
            theta0,
            steps: recipe.concrete_steps,
            retention_weight: 10.0,
            distill_weight: 0.5,
            ..Default::default()
        };
        let key = serde_json::json!({"stage": "concrete", "trainer": CONCRETE_TRAINER, "config": cfg, "train_examples": train.len(), "approx": approx_key, "after": after(&done, &["teacher", "approx"])});
        let what = format!(
            "concrete masks θ0 = {theta0} (target retention {:.3}), {} steps, {CONCRETE_TRAINER} trainer",
            1.0 / (1.0 + (-theta0).exp()),
            recipe.concrete_steps
        );
        let stage = Stage { name: format!("concrete_theta{theta0}"), dir: dir.clone(), key };
        done.push(run_stage(&stage, &header(&done, what), &progress, |resume| {
            let r = train_concrete(&teacher, &approx, &train, &cfg, &dir, resume, &progress)?;
            sttabt::train::copy_preprocessing_files(&teacher_dir, &dir.join("teacher"))?;
            progress.println(format!(
                "      hard retention {:.3} -> {:.3} (target {:.3}), θ {:?}",
                r.start.hard_retention,
                r.end.hard_retention,
                r.target_retention,
                r.theta.iter().map(|t| (t * 1e3).round() / 1e3).collect::<Vec<_>>()
            ));
            Ok(serde_json::json!({"trainer": CONCRETE_TRAINER, "retention_weight": cfg.retention_weight, "paper_retention_weight": 1e-3, "target_retention": r.target_retention, "hard_retention_start": r.start.hard_retention, "hard_retention_end": r.end.hard_retention, "theta": r.theta}))
        })?);
        concrete.push(sttabt::train::concrete::ConcreteModel::load(&dir)?);
        concrete_dirs.push(dir);
    }

    // 5. LTP on the length-scaled score, native
    let (mut ltp, mut ltp_dirs) = (Vec::new(), Vec::new());
    for &lambda in &recipe.lambdas {
        let dir = run_dir.join(format!("ltp_lambda{lambda}"));
        let cfg = sttabt::train::ltp::LtpConfig { lambda, steps: recipe.ltp_steps, ..Default::default() };
        let key = serde_json::json!({"stage": "ltp", "trainer": "native", "config": cfg, "train_examples": train.len(), "teacher": teacher_key, "after": after(&done, &["teacher"])});
        let what = format!("LTP λ = {lambda} (length-scaled score), {} steps, native", recipe.ltp_steps);
        let stage = Stage { name: format!("ltp_lambda{lambda}"), dir: dir.clone(), key };
        done.push(run_stage(&stage, &header(&done, what), &progress, |resume| {
            let r = sttabt::train::native::ltp::train_ltp_native(&teacher, &train, &cfg, &dir, resume, &progress)?;
            sttabt::train::copy_preprocessing_files(&teacher_dir, &dir.join("teacher"))?;
            progress.println(format!("      hard retention {:.3} -> {:.3}", r.start_retention, r.end_retention));
            Ok(serde_json::json!({"retention_start": r.start_retention, "retention_end": r.end_retention, "theta": r.theta}))
        })?);
        ltp.push(sttabt::train::ltp::LtpModel::load(&dir)?);
        ltp_dirs.push(dir);
    }

    // 6. every mode on dev and test (plan-aware rows against the original dense teacher)
    let results_dir = run_dir.join("results");
    let opts = sttabt::eval::EvalOptions {
        ks: recipe.ks.clone(),
        limit: recipe.eval_limit,
        timing_examples: recipe.timing_examples,
        quiet,
        metric: splits.metric,
        int8_rows: recipe.int8_rows,
    };
    let eval_key = serde_json::json!({"stage": "eval", "options": {"ks": opts.ks, "limit": opts.limit, "timing_examples": opts.timing_examples, "int8_rows": opts.int8_rows},
        "dev_examples": dev.len(), "test_examples": test.len(), "after": done.iter().map(|o| serde_json::json!([o.stage, o.seconds])).collect::<Vec<_>>()});
    let what = format!("evaluating every mode on {} dev and {} test sentences", dev.len(), test.len());
    let stage = Stage { name: "eval".into(), dir: results_dir.clone(), key: eval_key.clone() };
    done.push(run_stage(&stage, &header(&done, what), &progress, |_| {
        let r = sttabt::eval::evaluate_with(&teacher, Some(&approx.model), &concrete, &ltp, &[], &plan_aware, &dev, &test, &opts)?;
        sttabt::eval::write_results(&r, &results_dir, &splits.description, splits.split_info.as_ref())?;
        Ok(serde_json::json!({"dense_test_accuracy": r.dense_test_accuracy, "modes": r.points.len()}))
    })?);
    let results = cached_results(&results_dir.join("results.json"), &Progress { quiet: true })
        .with_context(|| format!("reading {}", results_dir.join("results.json").display()))?;

    // 7. the fastest setting within 1 point, timed against dense and the peer
    let speed_dir = run_dir.join("speed");
    let speed_key = serde_json::json!({"stage": "speed", "settings": recipe.speed, "eval": eval_key, "peer_python": std::env::var("STTABT_PEER_PYTHON").ok()});
    let what = "the fastest setting within 1 point against dense (and the ONNX Runtime peer)".to_string();
    let stage = Stage { name: "speed".into(), dir: speed_dir.clone(), key: speed_key };
    let models = speed::DemoModels {
        teacher: &teacher,
        teacher_dir: &teacher_dir,
        approx: &approx,
        approx_dir: &approx_dir,
        plan_aware: &plan_aware[0].teacher,
        plan_aware_dir: &planft_dir,
        concrete: &concrete,
        concrete_dirs: &concrete_dirs,
        ltp: &ltp,
        ltp_dirs: &ltp_dirs,
        int8: None,
    };
    done.push(run_stage(&stage, &header(&done, what), &progress, |_| {
        // the int8 rows' teachers (calibrated once each; ApproxNets stay fp32), when there are
        // any: made here, so that a cached speed stage does not calibrate them
        let int8 = |t: &Encoder| t.clone().with_precision(sttabt::model::Precision::Int8).context("switching a teacher to int8");
        let int8_models = if recipe.int8_rows {
            let concrete: Vec<_> = concrete
                .iter()
                .map(|c| Ok(sttabt::train::concrete::ConcreteModel { teacher: int8(&c.teacher)?, ..c.clone() }))
                .collect::<Result<_>>()?;
            let ltp: Vec<_> =
                ltp.iter().map(|m| Ok(sttabt::train::ltp::LtpModel { teacher: int8(&m.teacher)?, ..m.clone() })).collect::<Result<_>>()?;
            Some((int8(&teacher)?, int8(&plan_aware[0].teacher)?, concrete, ltp))
        } else {
            None
        };
        let int8 =
            int8_models.as_ref().map(|(teacher, plan_aware, concrete, ltp)| speed::Int8Teachers { teacher, plan_aware, concrete, ltp });
        let models = speed::DemoModels { int8, ..models };
        let inputs: Vec<_> = test.iter().map(|x| x.input.clone()).collect();
        let r = speed::measure(&results, &models, &inputs, &recipe.speed, &progress)?;
        sttabt::model::checkpoint::write_atomic(&speed_dir.join("speed.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;
        Ok(serde_json::json!({"sentence": r.sentence}))
    })?);
    let speed: speed::SpeedReport = serde_json::from_str(&std::fs::read_to_string(speed_dir.join("speed.json"))?)
        .with_context(|| format!("reading {}", speed_dir.join("speed.json").display()))?;

    // 8. length robustness: every planner on long reviews, lengths far outside training
    if let Some(count) = recipe.long_reviews {
        let long_dir = run_dir.join("long_reviews");
        let words = 700;
        let long_opts = sttabt::eval::EvalOptions {
            ks: vec![0.3, 0.5],
            limit: None,
            timing_examples: 8,
            quiet,
            metric: splits.metric,
            int8_rows: false,
        };
        let long_key = serde_json::json!({"stage": "long_reviews", "count": count, "words": words, "max_length": 512, "ks": long_opts.ks,
            "timing_examples": long_opts.timing_examples, "eval": eval_key});
        let what = format!("length robustness: every planner on {count} dev and {count} test long reviews (>= {words} words, 512 tokens)");
        let stage = Stage { name: "long_reviews".into(), dir: long_dir.clone(), key: long_key };
        done.push(run_stage(&stage, &header(&done, what), &progress, |_| {
            let long_tok = TextTokenizer::from_dir(&base, 512)?;
            let mut long = splits.clone();
            long.use_long_reviews(words, count, 0)?;
            let (ldev, _) = sttabt::pipeline::tokenize(&long_tok, &long.dev, None)?;
            let (ltest, _) = sttabt::pipeline::tokenize(&long_tok, &long.test, None)?;
            let r =
                sttabt::eval::evaluate_with(&teacher, Some(&approx.model), &concrete, &ltp, &[], &plan_aware, &ldev, &ltest, &long_opts)?;
            sttabt::eval::write_results(&r, &long_dir, &long.description, None)?;
            println!(
                "length robustness (stage {}): every planner on long reviews of >= {words} words, 512 tokens, far longer than the sentences it was trained on (the main table follows):",
                stage.name
            );
            print!("{}", sttabt::eval::format_table(&r));
            Ok(serde_json::json!({"dense_test_accuracy": r.dense_test_accuracy, "modes": r.points.len()}))
        })?);
    }

    // the chosen setting as a bundle `classify` / `eval` / `bench --bundle` load (cheap: links)
    let bundle_dir = bundle::write(&speed, &models, &run_dir.join("bundle"))?;
    println!("every mode on the {} dev and {} test sentences:", results.dev_examples, results.test_examples);
    print!("{}", sttabt::eval::format_table(&results));
    println!(
        "(the table's ex/s and speedup columns are eval's rough timing pass on {} sentences; the sentence below is the speed stage's measurement: {} alternating rounds against dense on {} sentences, median - trust it)",
        recipe.timing_examples, recipe.speed.rounds, recipe.speed.examples
    );
    println!(
        "teacher test accuracy {:.2}% ({} test sentences); results and plots in {}",
        results.dense_test_accuracy * 100.0,
        results.test_examples,
        results_dir.display()
    );
    for o in &done {
        println!("  {:<22} {:>7.0} s{}", o.stage, o.seconds, if o.cached { " (cached)" } else { "" });
    }
    println!("{}", speed.sentence);
    if let Some(dir) = &bundle_dir {
        println!("the chosen setting is bundled in {0}: sttabt classify --bundle {0} \"a sentence\"", dir.display());
    }
    let all_cached = done.iter().all(|o| o.cached);
    let total = t0.elapsed().as_secs_f64();
    println!("demo finished in {total:.0} s{}", if all_cached { " (all stages cached)" } else { "" });
    let json = serde_json::json!({
        "recipe": recipe,
        "concrete_trainer": CONCRETE_TRAINER,
        "stages": done,
        "stage_seconds_total": done.iter().map(|o| o.seconds).sum::<f64>(),
        "this_run_seconds": total,
        "all_cached": all_cached,
        "machine": sttabt::eval::machine_line(),
        "loadavg_before": load_before,
        "loadavg_after": sttabt::bench::loadavg(),
        "sentence": speed.sentence,
        "bundle": bundle_dir,
        "speed": speed,
        "results": results,
    });
    sttabt::model::checkpoint::write_atomic(&run_dir.join("demo.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
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
