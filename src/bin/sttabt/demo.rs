//! `sttabt demo`.

use super::*;

// The options of `sttabt demo` (the about text is on `Command::Demo`).
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Smoke version (small subsets) for CI.
    #[arg(long, conflicts_with = "full")]
    pub fast: bool,
    /// The whole study: all training data, 2 epochs, longer distillation, full dev/test.
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

pub(crate) fn demo(fast: bool, full: bool, out: Option<PathBuf>, quiet: bool) -> Result<()> {
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
        fetch::fetch(false)?;
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
