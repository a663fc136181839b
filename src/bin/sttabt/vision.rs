//! The vision side of the command line: the same jobs as text (fine-tune, distil, concrete,
//! eval, classify, demo) on Fashion-MNIST or an image folder, for ViT/DeiT checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sttabt::approx::{ApproxInit, ApproxNet};
use sttabt::train::Progress;
use sttabt::vision::data::{fashion_mnist_processor, prepare, ImageSource, VisionData};
use sttabt::vision::model::{new_vision_model, processor_for, VisionSpec};
use sttabt::vision::preprocess::ImageProcessor;
use sttabt::{assets, Encoder};

/// Where the images come from (`--vision` for Fashion-MNIST or `--image-folder DIR`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ImageArgs {
    /// Image classification on Fashion-MNIST from the asset cache (`sttabt fetch --vision`).
    #[arg(long)]
    pub vision: bool,
    /// Image classification on your images: DIR holds train/ and test/ (and optionally val/)
    /// with one sub-folder per class, or just the class folders (split 80/10/10 with --seed).
    /// PNG and JPEG; images are resized as the model's preprocessor_config.json says.
    #[arg(long, value_name = "DIR")]
    pub image_folder: Option<PathBuf>,
}

impl ImageArgs {
    /// The image source, if an image flag was given.
    pub fn source(&self, seed: u64) -> Result<Option<ImageSource>> {
        match (&self.image_folder, self.vision) {
            (Some(_), true) => bail!("--vision (Fashion-MNIST) and --image-folder exclude each other"),
            (Some(dir), false) => Ok(Some(ImageSource::Folder { dir: dir.clone(), seed })),
            (None, true) => {
                let dir = assets::fashion_mnist_dir();
                if !dir.join("train-images-idx3-ubyte.gz").exists() {
                    bail!("Fashion-MNIST is not in {}; run `sttabt fetch --vision` first", dir.display());
                }
                Ok(Some(ImageSource::FashionMnist { dir, seed }))
            }
            (None, false) => Ok(None),
        }
    }
}

/// A new DeiT for a data source (Fashion-MNIST: 28x28 grey; folders: 32x32 RGB) and its processor.
fn new_model_for(source: &ImageSource, classes: Vec<String>, seed: u64) -> Result<(Encoder, ImageProcessor)> {
    match source {
        ImageSource::FashionMnist { .. } => {
            let spec = VisionSpec::fashion_mnist();
            Ok((new_vision_model(&spec, classes, seed)?, fashion_mnist_processor(spec.image_size)?))
        }
        ImageSource::Folder { .. } => {
            let spec = VisionSpec { image_size: 32, channels: 3, ..VisionSpec::fashion_mnist() };
            let proc = ImageProcessor::for_model(32, 3, &[0.5], &[0.5])?;
            Ok((new_vision_model(&spec, classes, seed)?, proc))
        }
    }
}

fn classes_of(source: &ImageSource) -> Result<Vec<String>> {
    Ok(match source {
        ImageSource::FashionMnist { .. } => sttabt::vision::idx::FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect(),
        ImageSource::Folder { dir, .. } => {
            let root = if dir.join("train").is_dir() { dir.join("train") } else { dir.clone() };
            sttabt::vision::image::load_image_folder(&root)?.classes
        }
    })
}

/// `sttabt finetune --vision`: train a DeiT from scratch (no --model) or fine-tune a ViT/DeiT checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    source: &ImageSource,
    model: Option<PathBuf>,
    out: &Path,
    cfg: sttabt::train::finetune::FinetuneConfig,
    limits: super::finetune::Limits,
    resume: bool,
    quiet: bool,
) -> Result<()> {
    let classes = classes_of(source)?;
    let (base, proc) = match &model {
        Some(dir) => {
            let m = Encoder::load(dir).with_context(|| format!("loading {}", dir.display()))?;
            if m.config.vision().is_none() {
                bail!(
                    "{} is a text (BERT) model; images need a ViT/DeiT checkpoint (or no --model, to train a DeiT from scratch)",
                    dir.display()
                );
            }
            let p = processor_for(dir, &m.config)?;
            let m = if m.classifier.as_ref().map(|c| c.d_out()) == Some(classes.len()) {
                m
            } else {
                sttabt::train::finetune::with_new_head(m, classes.clone(), cfg.seed)
            };
            (m, p)
        }
        None => new_model_for(source, classes.clone(), cfg.seed)?,
    };
    let mut data = prepare(source, &base.config, &proc, limits.train, None)?;
    if let Some(n) = limits.dev {
        data.dev.truncate(n);
    }
    eprintln!(
        "{}: training on {} images, dev {} ({} classes); model {}",
        data.description,
        data.train.len(),
        data.dev.len(),
        data.classes.len(),
        describe(&base)
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    proc.save(&out.join("preprocessor_config.json"))?;
    let report = sttabt::train::finetune::finetune(base, &data.train, &data.dev, &cfg, out, out, resume, &Progress { quiet })?;
    let best = Encoder::load(out)?;
    let test_acc = sttabt::train::finetune::accuracy(&best, &data.test, 64)?;
    let json = serde_json::json!({"report": report, "config": cfg, "data": data.description, "base_model": model, "train_examples": data.train.len(), "dev_examples": data.dev.len(), "test_accuracy": test_acc, "test_examples": data.test.len()});
    sttabt::model::checkpoint::write_atomic(&out.join("finetune.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!(
        "best dev accuracy {:.2}% (epoch {}), test accuracy {:.2}% on {} images; {} steps in {:.0} s; saved to {}",
        report.best_dev_accuracy * 100.0,
        report.best_epoch,
        test_acc * 100.0,
        data.test.len(),
        report.steps,
        report.seconds,
        out.display()
    );
    Ok(())
}

fn describe(m: &Encoder) -> String {
    let c = &m.config;
    match c.vision() {
        Some(v) => format!(
            "{} {}x{}x{} patch {} ({} tokens), d {}, {} layers, {} heads, FFN {}, {:.2} M parameters",
            v.model_type,
            v.num_channels,
            v.image_size,
            v.image_size,
            v.patch_size,
            v.seq_len(),
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.intermediate_size,
            m.num_parameters() as f64 / 1e6
        ),
        None => format!("BERT d {}, {} layers", c.hidden_size, c.num_layers),
    }
}

fn load_vision_teacher(dir: &Path) -> Result<(Encoder, ImageProcessor)> {
    let m = Encoder::load(dir).with_context(|| format!("loading {}", dir.display()))?;
    if m.config.vision().is_none() {
        bail!("{} is a text (BERT) model; images need a ViT/DeiT checkpoint (train one with `sttabt finetune --vision` or `--image-folder DIR`)", dir.display());
    }
    let p = processor_for(dir, &m.config)?;
    Ok((m, p))
}

/// `sttabt distill --vision`.
#[allow(clippy::too_many_arguments)]
pub fn distill(
    source: &ImageSource,
    teacher_dir: &Path,
    out: &Path,
    factor: usize,
    init: ApproxInit,
    cfg: sttabt::train::distill::DistillConfig,
    train_limit: Option<usize>,
    heldout: usize,
    quiet: bool,
    resume: bool,
) -> Result<()> {
    let (teacher, proc) = load_vision_teacher(teacher_dir)?;
    let data = prepare(source, &teacher.config, &proc, Some(train_limit.unwrap_or(cfg.steps * cfg.batch_size)), Some(heldout))?;
    let approx = ApproxNet::new(&teacher, factor, init, cfg.seed)?;
    let train: Vec<_> = data.train.into_iter().map(|x| x.input).collect();
    let held: Vec<_> = data.dev.into_iter().map(|x| x.input).collect();
    let (_, r) = sttabt::train::distill::distill(&teacher, approx, &train, &held, &cfg, out, resume, &Progress { quiet })?;
    println!(
        "ApproxNet f={factor}: attention KL {:.4} -> {:.4}, MSE {:.5} -> {:.5} on {} held-out images ({} steps, {:.0} s); saved to {}",
        r.before.attention_kl,
        r.after.attention_kl,
        r.before.attention_mse,
        r.after.attention_mse,
        r.after.examples,
        r.steps,
        r.seconds,
        out.display()
    );
    Ok(())
}

/// `sttabt concrete --vision`.
#[allow(clippy::too_many_arguments)]
pub fn concrete(
    source: &ImageSource,
    teacher_dir: &Path,
    approx_dir: &Path,
    out: &Path,
    cfg: sttabt::train::concrete::ConcreteConfig,
    train_limit: Option<usize>,
    resume: bool,
    quiet: bool,
) -> Result<()> {
    let (teacher, proc) = load_vision_teacher(teacher_dir)?;
    let approx = ApproxNet::load(approx_dir, &teacher.config).with_context(|| format!("loading ApproxNet {}", approx_dir.display()))?;
    let data = prepare(source, &teacher.config, &proc, Some(train_limit.unwrap_or(cfg.steps * cfg.batch_size)), Some(1))?;
    let r = sttabt::train::concrete::train_concrete(&teacher, &approx, &data.train, &cfg, out, resume, &Progress { quiet })?;
    sttabt::train::copy_preprocessing_files(teacher_dir, &out.join("teacher"))?;
    println!(
        "concrete θ0={}: target retention {:.3}; soft r {:.3} -> {:.3}, hard retention {:.3} -> {:.3}; {:.0} s; saved to {}",
        r.theta0,
        r.target_retention,
        r.start.soft_retention,
        r.end.soft_retention,
        r.start.hard_retention,
        r.end.hard_retention,
        r.seconds,
        out.display()
    );
    Ok(())
}

/// `sttabt eval --vision`: every mode on the test split, table, results.json/csv, plots and the
/// patch-survival picture.
pub fn eval(
    source: &ImageSource,
    model: &Path,
    approx: Option<&Path>,
    concrete: &[PathBuf],
    out: &Path,
    opts: &sttabt::eval::EvalOptions,
) -> Result<()> {
    let (teacher, proc) = load_vision_teacher(model)?;
    let approx_net = match approx {
        Some(a) => Some(ApproxNet::load(a, &teacher.config).with_context(|| format!("loading ApproxNet {}", a.display()))?),
        None => None,
    };
    let concrete: Vec<_> = concrete
        .iter()
        .map(|d| sttabt::train::concrete::ConcreteModel::load(d).with_context(|| format!("loading concrete run {}", d.display())))
        .collect::<Result<_>>()?;
    let data = prepare(source, &teacher.config, &proc, Some(0), opts.limit)?;
    let results = sttabt::eval::evaluate_all(&teacher, approx_net.as_ref().map(|a| &a.model), &concrete, &[], &data.dev, &data.test, opts)?;
    sttabt::eval::write_results(&results, out, &data.description, None)?;
    print!("{}", sttabt::eval::format_table(&results));
    let grid = survival_picture(&teacher, approx_net.as_ref().map(|a| &a.model), &proc, &data, out)?;
    println!(
        "results: {0}/results.json, {0}/results.csv, plots {0}/accuracy_vs_retention.png, {0}/accuracy_vs_throughput_b1.png, patches {1}",
        out.display(),
        grid.display()
    );
    Ok(())
}

/// Which patches each layer reads, for the first 6 test images, under ABT (ApproxNet when
/// given, else the teacher's attention) at k = 0.3: `patch_survival.png` in `out`. The images are
/// drawn as the model sees them (resized/cropped by `proc`, not normalised); rows name the
/// prediction and, when wrong, the true class.
pub fn survival_picture(
    teacher: &Encoder,
    approx: Option<&Encoder>,
    proc: &ImageProcessor,
    data: &VisionData,
    out: &Path,
) -> Result<PathBuf> {
    let v = teacher.config.vision().context("not a vision model")?.clone();
    let n = data.test.len().min(6);
    let inputs: Vec<_> = data.test[..n].iter().map(|x| x.input.clone()).collect();
    let (mode, what) = match approx {
        Some(_) => (sttabt::infer::Mode::Abt { k: 0.3 }, "ABT (ApproxNet) k = 0.3"),
        None => (sttabt::infer::Mode::AbtActual { k: 0.3 }, "ABT (teacher attention) k = 0.3"),
    };
    let preds = sttabt::infer::classify(teacher, approx, &inputs, &mode)?;
    let big_l = teacher.layers.len();
    let kept: Vec<Vec<Vec<usize>>> = preds.iter().map(|p| (0..big_l).map(|l| p.plan.inputs(l).to_vec()).collect()).collect();
    let cols: Vec<String> = (1..=big_l).map(|l| format!("layer {l}")).collect();
    let rows: Vec<String> = preds
        .iter()
        .zip(&data.test[..n])
        .map(|(p, x)| {
            let name = |i: usize| data.classes.get(i).cloned().unwrap_or_else(|| i.to_string());
            if p.label == x.label {
                format!("{} (right)", name(p.label))
            } else {
                format!("{}? is {}", name(p.label), name(x.label))
            }
        })
        .collect();
    // what the model sees: the image processor's output before normalisation (values in [0, 1])
    let view = ImageProcessor { do_normalize: false, ..proc.clone() };
    let shown: Vec<_> = data.test_images[..n].iter().map(|im| view.apply(im)).collect::<std::result::Result<_, _>>()?;
    let scale = (160 / v.image_size.max(1)).clamp(1, 8) as u32;
    let path = out.join("patch_survival.png");
    std::fs::create_dir_all(out)?;
    sttabt::vision::grid::render_patch_survival(&path, &shown, &kept, &cols, &rows, v.num_special_tokens(), v.patch_size, scale)
        .with_context(|| format!("drawing {} ({what})", path.display()))?;
    Ok(path)
}

/// `sttabt classify --image FILE...`.
pub fn classify(files: &[PathBuf], model: &Path, approx: Option<&Path>, mode: &sttabt::infer::Mode, json: bool) -> Result<()> {
    let (teacher, proc) = load_vision_teacher(model)?;
    if teacher.classifier.is_none() {
        bail!("{} has no classification head; train one with `sttabt finetune --vision`", model.display());
    }
    let approx_net = match approx {
        Some(a) => Some(ApproxNet::load(a, &teacher.config).with_context(|| format!("loading ApproxNet {}", a.display()))?),
        None => None,
    };
    for f in files {
        let img = sttabt::vision::image::read_image(f)?;
        let x = sttabt::vision::model::encode_image(&teacher.config, &proc, &img).with_context(|| format!("{}", f.display()))?;
        let p = sttabt::infer::classify(&teacher, approx_net.as_ref().map(|a| &a.model), &[x], mode)?.remove(0);
        let label = teacher.config.labels.get(p.label).cloned().unwrap_or_else(|| p.label.to_string());
        if json {
            println!(
                "{}",
                serde_json::json!({"image": f, "label": label, "probability": p.probability, "retention": p.retention, "mode": mode.label(), "gflops": p.flops as f64 / 1e9, "patches_per_layer": (0..teacher.layers.len()).map(|l| p.plan.inputs(l).len()).collect::<Vec<_>>()})
            );
        } else {
            println!("{label}\t{:.3}\tretention {:.1}%\t{}", p.probability, p.retention * 100.0, f.display());
        }
    }
    Ok(())
}

/// `sttabt demo --vision`: train a DeiT on Fashion-MNIST from scratch, distil its ApproxNet,
/// train concrete masks at a few θ_0, evaluate every mode, draw the plots and the patch picture.
/// Each stage is cached in the run directory and resumable.
pub fn demo(fast: bool, full: bool, out: Option<PathBuf>, quiet: bool) -> Result<()> {
    let t0 = std::time::Instant::now();
    let progress = Progress { quiet };
    if !assets::fashion_mnist_dir().join("train-images-idx3-ubyte.gz").exists() {
        progress.println("fetching Fashion-MNIST into the asset cache");
        crate::fetch::fetch(true)?;
    }
    // (name, train images, epochs, distil steps, concrete steps, θ0s, eval limit)
    let (name, train_limit, epochs, distill_steps, concrete_steps, thetas, eval_limit): (
        &str,
        Option<usize>,
        usize,
        usize,
        usize,
        Vec<f64>,
        Option<usize>,
    ) = if fast {
        ("demo-vision-fast", Some(4096), 1, 40, 20, vec![0.0], Some(300))
    } else if full {
        ("demo-vision-full", None, 15, 400, 200, vec![-1.5, -1.0, -0.5, 0.0], None)
    } else {
        ("demo-vision", None, VISION_DEMO_EPOCHS, 200, 100, vec![-1.0, 0.0], Some(2000))
    };
    let source = ImageSource::FashionMnist { dir: assets::fashion_mnist_dir(), seed: 0 };
    let run_dir = out.unwrap_or_else(|| assets::home().join("runs").join(name));
    let (teacher_dir, approx_dir, results_dir) = (run_dir.join("teacher"), run_dir.join("approx"), run_dir.join("results"));
    std::fs::create_dir_all(&run_dir)?;
    let mut times = serde_json::Map::new();
    let classes = classes_of(&source)?;
    if teacher_dir.join("finetune.json").exists() {
        progress.println(format!("[1/4] DeiT cached: {}", teacher_dir.display()));
    } else {
        let (m, proc) = new_model_for(&source, classes.clone(), 0)?;
        progress.println(format!("[1/4] training a {} from scratch on Fashion-MNIST ({} epoch(s))", describe(&m), epochs));
        let s = std::time::Instant::now();
        let data = prepare(&source, &m.config, &proc, train_limit, eval_limit)?;
        std::fs::create_dir_all(&teacher_dir)?;
        proc.save(&teacher_dir.join("preprocessor_config.json"))?;
        let cfg = vision_finetune_config(epochs);
        let report = sttabt::train::finetune::finetune(m, &data.train, &data.dev, &cfg, &teacher_dir, &teacher_dir, true, &progress)?;
        // the dense model on the whole official test set (the table below uses --fast/default subsets)
        let best = Encoder::load(&teacher_dir)?;
        let full_test = prepare(&source, &best.config, &proc, Some(0), None)?.test;
        let test_acc = sttabt::train::finetune::accuracy(&best, &full_test, 64)?;
        progress.println(format!(
            "      dev accuracy {:.2}%, test accuracy {:.2}% on all {} test images, {:.0} s",
            report.best_dev_accuracy * 100.0,
            test_acc * 100.0,
            full_test.len(),
            s.elapsed().as_secs_f64()
        ));
        let json = serde_json::json!({"report": report, "config": cfg, "data": data.description, "train_examples": data.train.len(), "test_accuracy": test_acc, "test_examples": full_test.len()});
        sttabt::model::checkpoint::write_atomic(&teacher_dir.join("finetune.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
        times.insert("finetune_s".into(), s.elapsed().as_secs_f64().into());
    }
    let (teacher, proc) = load_vision_teacher(&teacher_dir)?;
    if approx_dir.join("distill.json").exists() {
        progress.println(format!("[2/4] ApproxNet cached: {}", approx_dir.display()));
    } else {
        progress.println(format!("[2/4] distilling an ApproxNet (f = 4, {distill_steps} steps)"));
        let s = std::time::Instant::now();
        let data = prepare(&source, &teacher.config, &proc, Some(distill_steps * 32), Some(200))?;
        let approx = ApproxNet::new(&teacher, 4, ApproxInit::Interpolate, 0)?;
        let train: Vec<_> = data.train.into_iter().map(|x| x.input).collect();
        let held: Vec<_> = data.dev.into_iter().map(|x| x.input).collect();
        let cfg = sttabt::train::distill::DistillConfig { steps: distill_steps, batch_size: 32, ..Default::default() };
        let (_, r) = sttabt::train::distill::distill(&teacher, approx, &train, &held, &cfg, &approx_dir, true, &progress)?;
        progress.println(format!(
            "      attention KL {:.3} -> {:.3}, MSE {:.5} -> {:.5}",
            r.before.attention_kl, r.after.attention_kl, r.before.attention_mse, r.after.attention_mse
        ));
        times.insert("distill_s".into(), s.elapsed().as_secs_f64().into());
    }
    let approx = ApproxNet::load(&approx_dir, &teacher.config)?;
    let mut concrete_models = Vec::new();
    for &theta0 in &thetas {
        let dir = run_dir.join(format!("concrete_theta{theta0}"));
        if dir.join("concrete.json").exists() {
            progress.println(format!("[3/4] concrete θ0 = {theta0} cached: {}", dir.display()));
        } else {
            progress.println(format!(
                "[3/4] concrete masks, θ0 = {theta0} (target retention {:.2}), {concrete_steps} steps",
                1.0 / (1.0 + (-theta0).exp())
            ));
            let s = std::time::Instant::now();
            let cfg = vision_concrete_config(theta0, concrete_steps);
            let data = prepare(&source, &teacher.config, &proc, Some(concrete_steps * cfg.batch_size), Some(1))?;
            let r = sttabt::train::concrete::train_concrete(&teacher, &approx, &data.train, &cfg, &dir, true, &progress)?;
            sttabt::train::copy_preprocessing_files(&teacher_dir, &dir.join("teacher"))?;
            progress.println(format!(
                "      soft r {:.3} -> {:.3}, hard retention {:.3} -> {:.3}",
                r.start.soft_retention, r.end.soft_retention, r.start.hard_retention, r.end.hard_retention
            ));
            times.insert(format!("concrete_theta{theta0}_s"), s.elapsed().as_secs_f64().into());
        }
        concrete_models.push(sttabt::train::concrete::ConcreteModel::load(&dir)?);
    }
    let cached = results_dir.join("results.json");
    if times.is_empty() {
        if let Some(results) = crate::demo::cached_results(&cached, &progress) {
            print!("{}", sttabt::eval::format_table(&results));
            println!(
                "DeiT test accuracy {:.2}% ({} test images); results, plots and patch_survival.png in {}",
                results.dense_test_accuracy * 100.0,
                results.test_examples,
                results_dir.display()
            );
            return Ok(());
        }
    }
    progress.println("[4/4] evaluating every mode on the Fashion-MNIST test split");
    let s = std::time::Instant::now();
    let data = prepare(&source, &teacher.config, &proc, Some(0), eval_limit)?;
    let opts = sttabt::eval::EvalOptions {
        ks: vec![0.1, 0.2, 0.3, 0.5, 0.7],
        limit: eval_limit,
        timing_examples: if fast { 32 } else { 256 },
        quiet,
        metric: sttabt::data::metrics::Metric::Accuracy,
        int8_rows: false,
    };
    let results = sttabt::eval::evaluate_all(&teacher, Some(&approx.model), &concrete_models, &[], &data.dev, &data.test, &opts)?;
    times.insert("eval_s".into(), s.elapsed().as_secs_f64().into());
    sttabt::eval::write_results(&results, &results_dir, &data.description, None)?;
    let grid = survival_picture(&teacher, Some(&approx.model), &proc, &data, &results_dir)?;
    print!("{}", sttabt::eval::format_table(&results));
    println!(
        "DeiT test accuracy {:.2}% ({} test images); results and plots in {}; patches: {}",
        results.dense_test_accuracy * 100.0,
        results.test_examples,
        results_dir.display(),
        grid.display()
    );
    println!("vision demo finished in {:.0} s", t0.elapsed().as_secs_f64());
    times.insert("total_s".into(), t0.elapsed().as_secs_f64().into());
    sttabt::model::checkpoint::write_atomic(&run_dir.join("times.json"), serde_json::to_string_pretty(&times)?.as_bytes())?;
    Ok(())
}

/// Epochs of the default vision demo (sized to its 30-minute budget on 2 cores).
pub const VISION_DEMO_EPOCHS: usize = 3;

/// From-scratch DeiT training settings (AdamW, lr 1.5e-3, warm-up 5%, weight decay 0.05, batch 64).
pub fn vision_finetune_config(epochs: usize) -> sttabt::train::finetune::FinetuneConfig {
    sttabt::train::finetune::FinetuneConfig {
        epochs,
        batch_size: 64,
        lr: 1.5e-3,
        warmup_frac: 0.05,
        weight_decay: 0.05,
        checkpoint_every: 200,
        ..Default::default()
    }
}

/// Concrete masking with the paper's vision weights (ALGORITHM.md section 4.5): retention term
/// weight 100, 0.5 · KL from the frozen teacher's logits.
pub fn vision_concrete_config(theta0: f64, steps: usize) -> sttabt::train::concrete::ConcreteConfig {
    sttabt::train::concrete::ConcreteConfig {
        theta0,
        steps,
        batch_size: 32,
        lr: 1e-4,
        retention_weight: 100.0,
        distill_weight: 0.5,
        ..Default::default()
    }
}
