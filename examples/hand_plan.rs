//! Build a token plan by hand (ALGORITHM.md section 1) and run it: every token enters the first
//! L-1 layers, only tokens 0, 1 and 3 the last one, and only CLS leaves it (`O_L = {0}`).
//!
//! `cargo run --release --example hand_plan` (uses all-MiniLM-L6-v2 from the asset cache).
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{Encoder, RunOptions, TokenPlan};

fn main() -> anyhow::Result<()> {
    sttabt::assets::ensure(false)?;
    let dir = sttabt::assets::default_model_dir();
    let model = Encoder::load(&dir)?;
    let tok = TextTokenizer::from_dir(&dir, 128)?;
    let x = tok.encode("a gripping, funny film", None)?.input;
    let (n, layers) = (x.len(), model.layers.len());
    // I_l for l = 1..L
    let mut inputs: Vec<Vec<usize>> = vec![(0..n).collect(); layers - 1];
    inputs.push(vec![0, 1, 3]);
    let plan = TokenPlan::from_inputs(n, inputs, vec![0])?;
    println!("n = {n}, retention {:.3} (section 5)", plan.retention());
    let sparse = model.run(std::slice::from_ref(&x), &[plan], RunOptions::default())?; // only planned rows are computed
    let dense = model.run_dense(&[x], RunOptions::default())?;
    let diff = sparse[0].cls().iter().zip(dense[0].cls()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("CLS rows computed at the top: {:?}; max |sparse - dense| on CLS = {diff:.4}", sparse[0].rows);
    Ok(())
}
