//! Glue between datasets, the tokenizer and the training/evaluation jobs: choose a data source,
//! tokenise it, and hand out train/dev/test splits of labelled inputs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::data::glue::{load_glue, GlueSplit, GlueTask};
use crate::data::rt::{load_rotten_tomatoes, SplitInfo};
use crate::data::table::{load_table, TableSpec};
use crate::data::{Dataset, Label};
use crate::text::tokenizer::TextTokenizer;
use crate::train::finetune::LabeledInput;

/// Where the examples come from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// Rotten Tomatoes from the asset cache, split 80/10/10 with `seed`.
    RottenTomatoes { path: PathBuf, seed: u64 },
    /// A GLUE task directory (`train.tsv`, `dev.tsv`); dev doubles as test (GLUE test labels are hidden).
    Glue { dir: PathBuf, task: GlueTask },
    /// Generic CSV/TSV/JSONL files.
    Table { train: PathBuf, dev: PathBuf, test: Option<PathBuf>, spec: TableSpec },
}

/// Train/dev/test datasets plus how they were made.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub dev: Dataset,
    pub test: Dataset,
    pub label_names: Vec<String>,
    pub split_info: Option<SplitInfo>,
    pub description: String,
    /// The task's primary metric (accuracy unless the GLUE task says otherwise).
    pub metric: crate::data::metrics::Metric,
}

impl DataSource {
    /// Load the three splits. `skip_bad_rows` skips (and counts) malformed rows instead of failing.
    pub fn load(&self, skip_bad_rows: bool) -> Result<Splits> {
        let s = self.load_inner(skip_bad_rows)?;
        let skipped = s.train.skipped_rows + s.dev.skipped_rows + if std::ptr::eq(&s.dev, &s.test) { 0 } else { s.test.skipped_rows };
        if skipped > 0 {
            eprintln!(
                "warning: skipped {skipped} malformed row(s) (--skip-bad-rows): train {}, dev {}, test {}",
                s.train.skipped_rows, s.dev.skipped_rows, s.test.skipped_rows
            );
        }
        Ok(s)
    }

    fn load_inner(&self, skip_bad_rows: bool) -> Result<Splits> {
        match self {
            DataSource::RottenTomatoes { path, seed } => {
                if !path.exists() {
                    bail!("{} not found; run `sttabt fetch` (or scripts/fetch-assets) first", path.display());
                }
                let s = load_rotten_tomatoes(path, *seed)?;
                Ok(Splits {
                    label_names: s.train.label_names.clone(),
                    description: format!("Rotten Tomatoes sentences ({}), seed {seed}, 80/10/10", path.display()),
                    train: s.train,
                    dev: s.dev,
                    test: s.test,
                    split_info: Some(s.info),
                    metric: crate::data::metrics::Metric::Accuracy,
                })
            }
            DataSource::Glue { dir, task } => {
                if task.is_regression() {
                    bail!("{} is a regression task; sttabt's classifier jobs support classification tasks only", task.name());
                }
                let train = load_glue(dir, *task, GlueSplit::Train, skip_bad_rows)?;
                let dev = load_glue(dir, *task, GlueSplit::Dev, skip_bad_rows)?;
                Ok(Splits {
                    label_names: task.label_names().iter().map(|s| s.to_string()).collect(),
                    description: format!("GLUE {} ({}); dev used as test", task.name(), dir.display()),
                    train,
                    test: dev.clone(),
                    dev,
                    split_info: None,
                    metric: task.metric().primary,
                })
            }
            DataSource::Table { train, dev, test, spec } => {
                let tr = load_table(train, spec, skip_bad_rows)?;
                let names = tr.label_names.clone();
                let spec2 = spec.clone().with_label_names(&names);
                let dv = load_table(dev, &spec2, skip_bad_rows)?;
                let te = match test {
                    Some(p) => load_table(p, &spec2, skip_bad_rows)?,
                    None => dv.clone(),
                };
                Ok(Splits { label_names: names, description: format!("tables {}", train.display()), train: tr, dev: dv, test: te, split_info: None, metric: crate::data::metrics::Metric::Accuracy })
            }
        }
    }
}

/// Tokenise a dataset into labelled inputs; returns them and the number of tokens cut by truncation.
pub fn tokenize(tok: &TextTokenizer, ds: &Dataset, limit: Option<usize>) -> Result<(Vec<LabeledInput>, usize)> {
    let n = limit.unwrap_or(usize::MAX).min(ds.examples.len());
    let texts: Vec<(&str, Option<&str>)> = ds.examples[..n].iter().map(|e| (e.text.as_str(), e.text_pair.as_deref())).collect();
    let (enc, cut) = tok.encode_batch(&texts).with_context(|| format!("tokenising {}", ds.source))?;
    let mut out = Vec::with_capacity(n);
    for (e, t) in ds.examples[..n].iter().zip(enc) {
        let label = match e.label {
            Label::Class(c) => c,
            Label::Score(_) => bail!("{}: regression labels are not supported by the classifier jobs", ds.source),
        };
        out.push(LabeledInput { input: t.input, label });
    }
    Ok((out, cut))
}

/// Print a warning about truncation, if any.
pub fn warn_truncation(what: &str, cut: usize, max_length: usize) {
    if cut > 0 {
        eprintln!("warning: {what}: {cut} tokens cut by truncation to --max-length {max_length}");
    }
}

/// The default data source: Rotten Tomatoes in the asset cache.
pub fn default_source(seed: u64) -> DataSource {
    DataSource::RottenTomatoes { path: crate::assets::rotten_tomatoes_path(), seed }
}

/// Helper for CLIs: build a source from flags.
pub fn source_from_flags(glue: Option<&Path>, task: Option<&str>, train: Option<&Path>, dev: Option<&Path>, test: Option<&Path>, text_column: &str, pair_column: Option<&str>, label_column: &str, seed: u64) -> Result<DataSource> {
    if let Some(dir) = glue {
        let task = task.context("--glue needs --task (cola, sst2, mrpc, qqp, mnli, mnli-mm, qnli, rte, wnli)")?;
        let task = GlueTask::from_name(task).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(DataSource::Glue { dir: dir.to_path_buf(), task });
    }
    if let Some(train) = train {
        let dev = dev.context("--train needs --dev as well")?;
        let mut spec = TableSpec::new(text_column, label_column);
        if let Some(p) = pair_column {
            spec = spec.with_pair(p);
        }
        return Ok(DataSource::Table { train: train.to_path_buf(), dev: dev.to_path_buf(), test: test.map(Path::to_path_buf), spec });
    }
    Ok(default_source(seed))
}
