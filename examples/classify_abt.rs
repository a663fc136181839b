//! Classify with attention back-tracking (ALGORITHM.md section 3).
//!
//! `cargo run --release --example classify_abt -- TEACHER APPROX` classifies with a fine-tuned
//! teacher and its ApproxNet (e.g. `$STTABT_HOME/runs/demo/{teacher,approx}` after `sttabt demo`).
//! Without arguments it uses all-MiniLM-L6-v2 (fetched into the asset cache; it has no
//! classification head) with an untrained, interpolated ApproxNet and compares the sparse CLS
//! vector with the dense one instead.
use sttabt::approx::{ApproxInit, ApproxNet};
use sttabt::infer::{classify, Mode};
use sttabt::planners::abt::{Abt, AttentionSource};
use sttabt::planners::{run, Models};
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{Encoder, RunOptions};

fn main() -> anyhow::Result<()> {
    let texts = ["a gripping, beautifully acted film", "dull, predictable and far too long"];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [teacher_dir, approx_dir] = &args[..] {
        let teacher = Encoder::load(teacher_dir.as_ref())?;
        let approx = ApproxNet::load(approx_dir.as_ref(), &teacher.config)?;
        let tok = TextTokenizer::from_dir(teacher_dir.as_ref(), 128)?;
        let inputs = texts.iter().map(|t| Ok(tok.encode(t, None)?.input)).collect::<anyhow::Result<Vec<_>>>()?;
        // `Mode` is the serialisable description of a planner; `classify` runs it and the head.
        for (t, p) in texts.iter().zip(classify(&teacher, Some(&approx.model), &inputs, &Mode::Abt { k: 0.3 })?) {
            let label = teacher.config.labels.get(p.label).cloned().unwrap_or_else(|| p.label.to_string());
            println!("{label:>10} p={:.3} retention={:.2} GFLOPs={:.3}  {t}", p.probability, p.retention, p.flops as f64 / 1e9);
        }
        return Ok(());
    }
    sttabt::assets::ensure(false)?;
    let dir = sttabt::assets::default_model_dir();
    let teacher = Encoder::load(&dir)?;
    let approx = ApproxNet::new(&teacher, 4, ApproxInit::Interpolate, 0)?;
    let tok = TextTokenizer::from_dir(&dir, 128)?;
    let inputs = texts.iter().map(|t| Ok(tok.encode(t, None)?.input)).collect::<anyhow::Result<Vec<_>>>()?;
    let models = Models { teacher: &teacher, approx: Some(&approx.model) };
    let dense = teacher.run_dense(&inputs, RunOptions::default())?;
    let sparse = run(&Abt::topk(vec![0.5], AttentionSource::ApproxNet), &models, &inputs, RunOptions::default())?;
    for ((t, d), (s, plan)) in texts.iter().zip(&dense).zip(sparse.outputs.iter().zip(&sparse.plans)) {
        let cos = cosine(d.cls(), s.cls());
        println!("retention {:.2}, cos(sparse CLS, dense CLS) = {cos:.4}  {t}", plan.retention());
    }
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}
