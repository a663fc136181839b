//! `sttabt info`.

use super::*;

// The options of `sttabt info` (the about text is on `Command::Info`).
#[derive(clap::Args)]
pub struct InfoArgs {
    /// Checkpoint directory (HF layout). Default: the cached all-MiniLM-L6-v2.
    pub model: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Run `sttabt info`.
pub fn run(args: InfoArgs) -> Result<()> {
    let InfoArgs { model, json } = args;
    info(model, json)
}

pub(crate) fn info(model: Option<PathBuf>, json: bool) -> Result<()> {
    let dir = model_dir(model)?;
    if let Some(what) = run_dir_pointer(&dir) {
        bail!("{what}");
    }
    let m = Encoder::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let c = &m.config;
    let lengths: Vec<usize> = match c.vision() {
        // an image always has the same number of tokens
        Some(v) => vec![v.seq_len()],
        None => vec![16, 32, 64, 128, 256, 512],
    };
    let flops: Vec<(usize, u64)> = lengths.iter().filter(|&&n| n <= c.max_tokens()).map(|&n| (n, c.dense_flops(n))).collect();
    let approx = sttabt::approx::ApproxMeta::read(&dir);
    // the attention KL `sttabt distill` measured on its held-out sentences (distill.json)
    let approx_kl = approx.as_ref().and_then(|_| {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("distill.json")).ok()?).ok()?;
        v["report"]["after"]["attention_kl"].as_f64()
    });
    if json {
        let v = serde_json::json!({
            "model_dir": dir,
            "config": c,
            "head_size": c.head_size(),
            "parameters": m.num_parameters(),
            "has_pooler": m.pooler.is_some(),
            "has_classifier": m.classifier.is_some(),
            "approxnet": approx.as_ref().map(|a| serde_json::json!({"meta": a, "attention_kl": approx_kl})),
            "dense_flops": flops.iter().map(|(n, f)| serde_json::json!({"tokens": n, "flops": f, "gflops": *f as f64 / 1e9})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model       {}   ({})", dir.display(), c.model_type());
    if let Some(a) = &approx {
        println!(
            "ApproxNet   factor {} of a teacher with hidden {}, {} layers, {} heads (written by `sttabt distill`; pass it as --approx){}",
            a.factor,
            a.teacher_hidden_size,
            a.teacher_num_layers,
            a.teacher_num_heads,
            approx_kl.map(|k| format!("; attention KL {k:.3} on held-out sentences")).unwrap_or_default()
        );
    }
    println!(
        "layers      {}   heads {}   hidden {}   head size {}   FFN {}",
        c.num_layers,
        c.num_heads,
        c.hidden_size,
        c.head_size(),
        c.intermediate_size
    );
    match c.vision() {
        Some(v) => println!(
            "image       {} ({}): {}x{} pixels, {} channel(s), patch {} -> {} patches + {} special token(s) = {} tokens; pre-LayerNorm   activation {:?}",
            v.model_type,
            if v.num_special_tokens() == 2 { "class + distillation token" } else { "class token" },
            v.image_size, v.image_size, v.num_channels, v.patch_size, v.num_patches(), v.num_special_tokens(), v.seq_len(), c.activation
        ),
        None => println!(
            "vocab       {}   max tokens {}   token types {}   activation {:?}",
            c.vocab_size,
            c.max_tokens(),
            if c.uses_token_types() { c.type_vocab_size.to_string() } else { "ignored".into() },
            c.activation
        ),
    }
    println!("parameters  {} ({:.1} M)", m.num_parameters(), m.num_parameters() as f64 / 1e6);
    println!(
        "pooler      {}   classifier {}",
        yes(m.pooler.is_some()),
        match &m.classifier {
            Some(_) => format!("yes, labels {:?}", c.labels),
            None => "no (fine-tune one with `sttabt finetune`)".into(),
        }
    );
    println!("\ndense encoder FLOPs (the paper's section 5; 1 multiply-add = 2 FLOPs)");
    println!("{:>8} {:>14} {:>10}", "tokens", "FLOPs", "GFLOPs");
    for (n, f) in flops {
        println!("{n:>8} {f:>14} {:>10.3}", f as f64 / 1e9);
    }
    Ok(())
}

pub(crate) fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// For a run directory of `sttabt concrete` / `sttabt ltp` (`concrete.json` / `ltp.json` beside a
/// `teacher/` checkpoint) or a `sttabt compress` bundle (`bundle.json`), which `info` cannot
/// describe as one checkpoint: what it is and where its models are (`RUN/teacher`, the ApproxNet
/// it used), with the commands that read it. `None` for any other directory, and for one with a
/// `config.json` of its own (a checkpoint).
pub(crate) fn run_dir_pointer(dir: &std::path::Path) -> Option<String> {
    if dir.join("config.json").exists() {
        return None;
    }
    let d = dir.display();
    let teacher = dir.join("teacher");
    let info_teacher = format!("`sttabt info {}`", teacher.display());
    if dir.join("concrete.json").is_file() {
        let approx = dir.join("approx");
        let approx = if approx.join("config.json").is_file() {
            format!(" and the ApproxNet it used is {}", approx.display())
        } else {
            String::new()
        };
        return Some(format!(
            "{d} is a concrete-masking run (`sttabt concrete`, concrete.json), not a checkpoint: its teacher is {} ({info_teacher}){approx}; classify with `sttabt classify --concrete {d} TEXT`",
            teacher.display()
        ));
    }
    if dir.join("ltp.json").is_file() {
        return Some(format!(
            "{d} is an LTP run (`sttabt ltp`, ltp.json), not a checkpoint: its teacher is {} ({info_teacher}); classify with `sttabt classify --ltp {d} TEXT`",
            teacher.display()
        ));
    }
    if dir.join("bundle.json").is_file() {
        let models = match sttabt::compress::bundle::open(dir) {
            Ok(b) => format!(
                ": its teacher is {}{}",
                b.teacher_dir.display(),
                b.approx_dir.map(|a| format!(" and its ApproxNet {}", a.display())).unwrap_or_default()
            ),
            Err(e) => format!(" ({e:#})"),
        };
        return Some(format!(
            "{d} is a bundle (`sttabt compress`, bundle.json), not a checkpoint{models}; classify with `sttabt classify --bundle {d} TEXT`"
        ));
    }
    None
}
