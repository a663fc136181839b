//! Sizing probe for the Fashion-MNIST DeiT: time per training step and accuracy after N steps.
//! `cargo bench --bench vision_probe -- HIDDEN LAYERS HEADS FF STEPS BATCH LR`
use sttabt::train::finetune::{accuracy, finetune, FinetuneConfig};
use sttabt::vision::data::{encode_labeled, fashion_mnist_processor, ImageSource};
use sttabt::vision::model::{new_vision_model, VisionSpec};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let g = |i: usize, d: &str| a.get(i).cloned().unwrap_or_else(|| d.to_string());
    let spec = VisionSpec {
        hidden: g(0, "192").parse()?,
        layers: g(1, "6").parse()?,
        heads: g(2, "3").parse()?,
        intermediate: g(3, "384").parse()?,
        ..VisionSpec::fashion_mnist()
    };
    let steps: usize = g(4, "100").parse()?;
    let batch: usize = g(5, "64").parse()?;
    let lr: f64 = g(6, "1e-3").parse()?;
    let splits = ImageSource::FashionMnist { dir: sttabt::assets::fashion_mnist_dir(), seed: 0 }.load()?;
    let m = new_vision_model(&spec, splits.classes.clone(), 0)?;
    let proc = fashion_mnist_processor(28)?;
    let t = std::time::Instant::now();
    let train = encode_labeled(&m.config, &proc, &splits.train, &splits.train_labels, Some(steps * batch))?;
    let test = encode_labeled(&m.config, &proc, &splits.test, &splits.test_labels, Some(2000))?;
    eprintln!("encoded in {:.1}s", t.elapsed().as_secs_f64());
    let cfg = FinetuneConfig {
        epochs: 1,
        batch_size: batch,
        lr,
        warmup_frac: 0.05,
        weight_decay: 0.05,
        checkpoint_every: 1_000_000,
        ..Default::default()
    };
    let dir = std::env::temp_dir().join("vision_probe");
    let _ = std::fs::remove_dir_all(&dir);
    let t = std::time::Instant::now();
    let r = finetune(m, &train, &test[..500], &cfg, &dir, &dir, false, &sttabt::train::Progress { quiet: true })?;
    let secs = t.elapsed().as_secs_f64();
    let best = sttabt::Encoder::load(&dir)?;
    let t2 = std::time::Instant::now();
    let acc = accuracy(&best, &test, 64)?;
    println!(
        "spec {spec:?}\n{} steps x {batch}: {:.1} s ({:.3} s/step, {:.0} img/s train); test acc (2000) {:.2}%; inference {:.0} img/s",
        r.steps,
        secs,
        secs / r.steps as f64,
        (r.steps * batch) as f64 / secs,
        acc * 100.0,
        2000.0 / t2.elapsed().as_secs_f64()
    );
    Ok(())
}
