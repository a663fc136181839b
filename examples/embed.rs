//! Sentence embeddings as sentence-transformers computes them (mean-pooled, L2-normalised) and
//! their cosine similarities.
//!
//! `cargo run --release --example embed` (uses all-MiniLM-L6-v2 from the asset cache).
use sttabt::model::mean_pool_normalized;
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{Encoder, RunOptions};

fn main() -> anyhow::Result<()> {
    sttabt::assets::ensure(false)?;
    let dir = sttabt::assets::default_model_dir();
    let model = Encoder::load(&dir)?;
    let tok = TextTokenizer::from_dir(&dir, 256)?;
    let texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell today."];
    let inputs = texts.iter().map(|t| Ok(tok.encode(t, None)?.input)).collect::<anyhow::Result<Vec<_>>>()?;
    let opts = RunOptions { hidden_states: false, attentions: false };
    let d = model.config.hidden_size;
    // every token's last-layer row: the dense plan
    let emb: Vec<Vec<f32>> = model.run_dense(&inputs, opts)?.iter().map(|o| mean_pool_normalized(&o.hidden, d)).collect();
    for i in 0..texts.len() {
        for j in i + 1..texts.len() {
            let cos: f32 = emb[i].iter().zip(&emb[j]).map(|(a, b)| a * b).sum();
            println!("{cos:.3}  {:?} ~ {:?}", texts[i], texts[j]);
        }
    }
    Ok(())
}
