//! `sttabt embed`.

use super::*;

// The options of `sttabt embed` (the about text is on `Command::Embed`).
#[derive(clap::Args)]
pub struct EmbedArgs {
    /// Texts to embed.
    pub texts: Vec<String>,
    /// Read texts from this file, one per line.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Checkpoint directory. Default: the cached all-MiniLM-L6-v2.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Maximum tokens per text, [CLS] and [SEP] included (sentence-transformers uses 256).
    #[arg(long, default_value_t = 256, value_parser = max_length_tokens)]
    pub max_length: usize,
    /// Examples per batch (>= 1).
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub batch_size: usize,
}

/// Run `sttabt embed`.
pub fn run(args: EmbedArgs) -> Result<()> {
    let EmbedArgs { texts, file, model, max_length, batch_size } = args;
    embed(texts, file, model, max_length, batch_size)
}

/// Texts from arguments, a file, or stdin (one per line).
pub(crate) fn read_texts(texts: Vec<String>, file: Option<PathBuf>) -> Result<Vec<String>> {
    if !texts.is_empty() {
        super::classify::reject_empty_texts("argument", texts.iter())?;
        return Ok(texts);
    }
    if let Some(f) = file {
        let s = utf8_text(&f.display().to_string(), std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?)?;
        let lines: Vec<String> = s.lines().map(str::to_string).collect();
        super::classify::reject_empty_texts(&format!("{}: line", f.display()), lines.iter())?;
        return Ok(lines);
    }
    if std::io::stdin().is_terminal() {
        bail!("no texts given: pass them as arguments, with --file, or on stdin");
    }
    let stdin = std::io::stdin();
    let lines: Vec<String> = stdin.lock().lines().collect::<std::io::Result<_>>().context("reading stdin")?;
    super::classify::reject_empty_texts("<stdin>: line", lines.iter())?;
    Ok(lines)
}

pub(crate) fn embed(texts: Vec<String>, file: Option<PathBuf>, model: Option<PathBuf>, max_length: usize, batch_size: usize) -> Result<()> {
    let texts = read_texts(texts, file)?;
    if texts.is_empty() {
        bail!("no texts to embed");
    }
    let dir = model_dir(model)?;
    let m = Encoder::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let max_length = clamp_max_length(&dir, &m, max_length);
    let tok = text_tokenizer(&dir, &m, max_length)?;
    let pairs: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (t.as_str(), None)).collect();
    let (encoded, cut) = tok.encode_batch(&pairs)?;
    reject_tokenless("text", &encoded)?;
    if cut > 0 {
        let n = encoded.iter().filter(|t| t.truncated > 0).count();
        eprintln!("warning: {n} text(s) longer than --max-length {max_length} were truncated ({cut} tokens cut)");
    }
    let d = m.config.hidden_size;
    let mut out = Vec::with_capacity(texts.len());
    for (chunk_t, chunk_e) in texts.chunks(batch_size.max(1)).zip(encoded.chunks(batch_size.max(1))) {
        let inputs: Vec<_> = chunk_e.iter().map(|t| t.input.clone()).collect();
        let res = m.run_dense(&inputs, RunOptions::default())?;
        for ((text, e), r) in chunk_t.iter().zip(chunk_e).zip(res) {
            out.push(serde_json::json!({
                "text": text,
                "tokens": e.input.len(),
                "truncated_tokens": e.truncated,
                "embedding": model::mean_pool_normalized(&r.hidden, d),
            }));
        }
    }
    println!("{}", serde_json::to_string(&serde_json::json!({"model": dir, "dim": d, "embeddings": out}))?);
    Ok(())
}

/// An error naming the first input (1-based, `what N`) whose tokens are all special tokens: its
/// text has nothing the tokenizer keeps (control or zero-width characters, say), so the model
/// would read `[CLS] [SEP]` alone and answer the same for any such text.
pub(crate) fn reject_tokenless<'a>(what: &str, encoded: impl IntoIterator<Item = &'a sttabt::text::tokenizer::Tokenized>) -> Result<()> {
    if let Some(i) = encoded.into_iter().position(|t| t.content_tokens == 0) {
        bail!("{what} {}: the tokenizer keeps nothing of it (only special tokens such as [CLS]/[SEP] would be left); give text with words in it", i + 1);
    }
    Ok(())
}

/// `bytes` (the contents of `name`, a file or `<stdin>`) as text; not UTF-8: an error naming
/// `name`, the line and the byte offset of the first bad byte.
pub(crate) fn utf8_text(name: &str, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow::anyhow!("{name}: line {line} is not valid UTF-8 (byte {at} of the input, counted from 0); save the file as UTF-8")
    })
}
