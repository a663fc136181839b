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
    /// Generic CSV/TSV/JSONL files; a job reads only the files it needs (see [`DataNeeds`]).
    /// Without `train`, label names come from `spec.label_names` (e.g. the model's `id2label`),
    /// else from `dev`; without `test`, dev doubles as test.
    Table { train: Option<PathBuf>, dev: Option<PathBuf>, test: Option<PathBuf>, spec: TableSpec },
}

/// How a job uses one split of a data source given by files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitUse {
    /// The job never reads it: giving the file is an error.
    Unused,
    /// The job needs it.
    Required,
    /// The job reads it when given (test: dev doubles as test otherwise).
    Optional,
}

/// Which splits a job reads, for [`source_from_flags`] and [`DataSource::summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataNeeds {
    /// The subcommand, for messages (`finetune`, `eval`, ...).
    pub job: &'static str,
    pub train: SplitUse,
    pub dev: SplitUse,
    pub test: SplitUse,
    /// The job reads only the first this many rows of dev and test (`--limit`); the `data:`
    /// line says so.
    pub eval_limit: Option<usize>,
    /// The job reads only the first this many training rows (`--train-limit`); the `data:` line
    /// says so.
    pub train_limit: Option<usize>,
}

impl DataNeeds {
    /// Training with model selection on dev (`finetune`; `distill` reads dev as held-out data).
    pub const fn train_dev(job: &'static str) -> Self {
        Self { job, train: SplitUse::Required, dev: SplitUse::Required, test: SplitUse::Unused, eval_limit: None, train_limit: None }
    }
    /// Training only (`concrete`, `ltp`).
    pub const fn train_only(job: &'static str) -> Self {
        Self { job, train: SplitUse::Required, dev: SplitUse::Unused, test: SplitUse::Unused, eval_limit: None, train_limit: None }
    }
    /// Evaluation (`eval`): dev picks the operating points, test reports them (default: dev).
    pub const fn eval(job: &'static str) -> Self {
        Self { job, train: SplitUse::Unused, dev: SplitUse::Required, test: SplitUse::Optional, eval_limit: None, train_limit: None }
    }
    /// The same needs, reading only the first `limit` rows of dev and test (`None`: all).
    pub const fn with_eval_limit(self, limit: Option<usize>) -> Self {
        Self { eval_limit: limit, ..self }
    }
    /// The same needs, reading only the first `limit` training rows (`None`: all).
    pub const fn with_train_limit(self, limit: Option<usize>) -> Self {
        Self { train_limit: limit, ..self }
    }
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

impl Splits {
    /// Replace dev and test by `count` long reviews each of >= `min_words` words built from their
    /// own sentences ([`crate::data::long_reviews::long_reviews`], seeds `seed` and `seed + 1`),
    /// and say so in the description: every planner at lengths far outside its training
    /// (ALGORITHM.md section 8, length robustness). Train is left as it is.
    ///
    /// Errors: as `long_reviews` (a zero count or word minimum, pairs or regression labels, too
    /// few words in a class).
    pub fn use_long_reviews(&mut self, min_words: usize, count: usize, seed: u64) -> Result<()> {
        use crate::data::long_reviews::long_reviews;
        self.dev = long_reviews(&self.dev, min_words, count, seed)?;
        self.test = long_reviews(&self.test, min_words, count, seed.wrapping_add(1))?;
        self.description = format!("{} [dev: {}] [test: {}]", self.description, self.dev.source, self.test.source);
        Ok(())
    }
}

/// The first [`SKIPPED_SHOWN`](crate::data::SKIPPED_SHOWN) skipped rows of `splits`, one line
/// each (`  FILE: line N: reason`), then `  ... and N more` when `total` is larger; empty when
/// nothing was skipped.
fn skipped_rows_list(splits: &[&Dataset], total: usize) -> String {
    let first: Vec<&String> = splits.iter().flat_map(|d| &d.skipped_first).take(crate::data::SKIPPED_SHOWN).collect();
    let mut out: String = first.iter().map(|e| format!("  {e}\n")).collect();
    if total > first.len() {
        out.push_str(&format!("  ... and {} more\n", total - first.len()));
    }
    out
}

impl DataSource {
    /// Load the three splits. `skip_bad_rows` skips malformed rows instead of failing, and warns
    /// with their count per split and the first five of them (`FILE: line N: reason`).
    pub fn load(&self, skip_bad_rows: bool) -> Result<Splits> {
        self.load_splits(skip_bad_rows, true)
    }

    /// Load the splits a job reads: as [`DataSource::load`], but a job that never reads the
    /// training split (`needs.train` unused: `eval`) does not need a GLUE folder's `train.tsv`
    /// (its train split is then empty). Rotten Tomatoes is always split whole (the split is
    /// seeded over all sentences); tables read only the files given.
    pub fn load_for(&self, skip_bad_rows: bool, needs: &DataNeeds) -> Result<Splits> {
        self.load_splits(skip_bad_rows, needs.train != SplitUse::Unused)
    }

    fn load_splits(&self, skip_bad_rows: bool, read_train: bool) -> Result<Splits> {
        let s = self.load_inner(skip_bad_rows, read_train)?;
        // a GLUE folder's dev split, or a dev table without a test table, is also the test split:
        // its skipped rows are counted once
        let test_is_dev = self.test_is_dev();
        let skipped = s.train.skipped_rows + s.dev.skipped_rows + if test_is_dev { 0 } else { s.test.skipped_rows };
        if skipped > 0 {
            let test = if test_is_dev { "test = dev".to_string() } else { format!("test {}", s.test.skipped_rows) };
            eprintln!(
                "warning: skipped {skipped} malformed row(s) (--skip-bad-rows): train {}, dev {}, {test}",
                s.train.skipped_rows, s.dev.skipped_rows
            );
            let splits = [&s.train, &s.dev, &s.test];
            eprint!("{}", skipped_rows_list(&splits[..if test_is_dev { 2 } else { 3 }], skipped));
        }
        Ok(s)
    }

    /// Whether the test split is the dev split read again (GLUE: dev used as test; tables: a
    /// `--dev` file without a `--test` file).
    fn test_is_dev(&self) -> bool {
        match self {
            DataSource::RottenTomatoes { .. } => false,
            DataSource::Glue { .. } => true,
            DataSource::Table { dev, test, .. } => dev.is_some() && test.is_none(),
        }
    }

    fn load_inner(&self, skip_bad_rows: bool, read_train: bool) -> Result<Splits> {
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
                let dev = load_glue(dir, *task, GlueSplit::Dev, skip_bad_rows)?;
                let train = if read_train {
                    load_glue(dir, *task, GlueSplit::Train, skip_bad_rows)?
                } else {
                    Dataset {
                        examples: Vec::new(),
                        label_names: dev.label_names.clone(),
                        source: "(train.tsv not read)".into(),
                        skipped_rows: 0,
                        skipped_first: Vec::new(),
                    }
                };
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
                let tr = train.as_ref().map(|p| load_table(p, spec, skip_bad_rows)).transpose()?;
                let fixed = tr.as_ref().map(|t| t.label_names.clone()).or_else(|| spec.label_names.clone());
                let spec2 = match &fixed {
                    Some(names) => spec.clone().with_label_names(names),
                    None => spec.clone(),
                };
                let dv = dev.as_ref().map(|p| load_table(p, &spec2, skip_bad_rows)).transpose()?;
                let names = fixed.or_else(|| dv.as_ref().map(|d| d.label_names.clone())).unwrap_or_default();
                let spec3 = spec.clone().with_label_names(&names);
                let te = match test {
                    Some(p) => Some(load_table(p, &spec3, skip_bad_rows)?),
                    None => dv.clone(),
                };
                // splits the job does not read stay empty (`source_from_flags` checked the job's needs)
                let none = |what: &str| Dataset {
                    examples: Vec::new(),
                    label_names: names.clone(),
                    source: format!("(no {what} file)"),
                    skipped_rows: 0,
                    skipped_first: Vec::new(),
                };
                let files: Vec<String> = [("train", train), ("dev", dev), ("test", test)]
                    .iter()
                    .filter_map(|(w, p)| p.as_ref().map(|p| format!("{w} {}", p.display())))
                    .collect();
                Ok(Splits {
                    train: tr.unwrap_or_else(|| none("--train")),
                    dev: dv.unwrap_or_else(|| none("--dev")),
                    test: te.unwrap_or_else(|| none("--test")),
                    label_names: names,
                    description: format!("tables ({})", files.join(", ")),
                    split_info: None,
                    metric: crate::data::metrics::Metric::Accuracy,
                })
            }
        }
    }

    /// The one line a job prints before it starts: where each split it reads comes from and
    /// how many rows it has, e.g. `data: dev=dev.csv (120 rows), test=test.csv (80 rows)` or
    /// `data: Rotten Tomatoes from <path>, split seed 0 (80/10/10): train 10202 rows, ...`.
    pub fn summary(&self, splits: &Splits, needs: &DataNeeds) -> String {
        let parts: Vec<(&str, &Dataset, bool)> = vec![
            ("train", &splits.train, needs.train != SplitUse::Unused),
            ("dev", &splits.dev, needs.dev != SplitUse::Unused),
            ("test", &splits.test, needs.test != SplitUse::Unused),
        ];
        let used = parts.into_iter().filter(|p| p.2);
        // "100 of 1275 rows" when --limit (--train-limit) leaves some of dev / test (train) unread
        let count = |w: &str, d: &Dataset| match if w == "train" { needs.train_limit } else { needs.eval_limit } {
            Some(l) if l < d.len() => format!("{l} of {} rows", d.len()),
            _ => format!("{} rows", d.len()),
        };
        match self {
            DataSource::RottenTomatoes { path, seed } => {
                let rows: Vec<String> = used.map(|(w, d, _)| format!("{w} {}", count(w, d))).collect();
                format!("data: Rotten Tomatoes from {}, split seed {seed} (80/10/10): {}", path.display(), rows.join(", "))
            }
            DataSource::Glue { dir, task } => {
                let rows: Vec<String> = used.map(|(w, d, _)| format!("{w} {}", count(w, d))).collect();
                format!("data: GLUE {} from {} (dev.tsv doubles as test): {}", task.name(), dir.display(), rows.join(", "))
            }
            DataSource::Table { dev, test, .. } => {
                let rows: Vec<String> = used
                    .map(|(w, d, _)| {
                        if w == "test" && test.is_none() {
                            format!("test=dev ({})", count(w, d))
                        } else if w == "dev" && dev.is_none() {
                            format!("dev=none ({})", count(w, d))
                        } else {
                            format!("{w}={} ({})", d.source, count(w, d))
                        }
                    })
                    .collect();
                format!("data: {}", rows.join(", "))
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

/// Helper for CLIs: build a source from flags for a job that reads `needs`.
///
/// No `--glue`/`--train`/`--dev`/`--test`: Rotten Tomatoes. Errors (naming the flags) for every
/// combination that cannot be honoured: `--glue` without `--task` or with data files, `--task`
/// without `--glue`, a file the job never reads, a file the job needs missing while others are
/// given (the data files are never silently replaced by Rotten Tomatoes).
#[allow(clippy::too_many_arguments)]
pub fn source_from_flags(
    glue: Option<&Path>,
    task: Option<&str>,
    train: Option<&Path>,
    dev: Option<&Path>,
    test: Option<&Path>,
    text_column: &str,
    pair_column: Option<&str>,
    label_column: &str,
    seed: u64,
    needs: &DataNeeds,
) -> Result<DataSource> {
    let job = needs.job;
    let files = [("--train", train, needs.train), ("--dev", dev, needs.dev), ("--test", test, needs.test)];
    let given: Vec<&str> = files.iter().filter(|f| f.1.is_some()).map(|f| f.0).collect();
    if let Some(dir) = glue {
        if !given.is_empty() {
            bail!("--glue cannot be combined with {}: a GLUE task folder brings its own train.tsv and dev.tsv; give either --glue DIR --task NAME or the data files", given.join(", "));
        }
        let task = task.context("--glue needs --task (cola, sst2, mrpc, qqp, mnli, mnli-mm, qnli, rte, wnli)")?;
        let task = GlueTask::from_name(task).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(DataSource::Glue { dir: dir.to_path_buf(), task });
    }
    if let Some(t) = task {
        bail!("--task {t} needs --glue DIR (the GLUE task folder); without --glue there is no task to read");
    }
    if given.is_empty() {
        return Ok(default_source(seed));
    }
    let reads: Vec<&str> = files.iter().filter(|f| f.2 != SplitUse::Unused).map(|f| f.0).collect();
    if let Some(f) = files.iter().find(|f| f.1.is_none() && f.2 == SplitUse::Required) {
        bail!("`sttabt {job}` was given {} but not {} FILE, which it needs (it reads {} from files once any data file is given; give none of --train/--dev/--test to use Rotten Tomatoes)", given.join(" and "), f.0, reads.join(" and "));
    }
    if let Some(f) = files.iter().find(|f| f.1.is_some() && f.2 == SplitUse::Unused) {
        bail!("`sttabt {job}` does not read {}: it reads {} only; remove {}", f.0, reads.join(" and "), f.0);
    }
    let mut spec = TableSpec::new(text_column, label_column);
    if let Some(p) = pair_column {
        spec = spec.with_pair(p);
    }
    Ok(DataSource::Table { train: train.map(Path::to_path_buf), dev: dev.map(Path::to_path_buf), test: test.map(Path::to_path_buf), spec })
}

/// The default subjects of the training measurement (`train::bench`): all-MiniLM-L6-v2 from the asset cache with a fresh
/// two-class head ([`crate::train::finetune::with_new_head`], seed 0) and the first `limit`
/// Rotten Tomatoes training sentences (split seed 0), tokenised to at most 128 tokens. Fetches
/// the assets when missing ([`crate::assets::ensure`]).
///
/// Errors: the assets cannot be fetched or read.
pub fn minilm_and_rt(limit: usize) -> Result<(crate::model::Encoder, Vec<LabeledInput>)> {
    crate::assets::ensure(false)?;
    let dir = crate::assets::default_model_dir();
    let base = crate::model::Encoder::load(&dir)?;
    let model = crate::train::finetune::with_new_head(base, vec!["negative".into(), "positive".into()], 0);
    let rt = crate::data::rt::load_rotten_tomatoes(&crate::assets::rotten_tomatoes_path(), 0)?;
    let tok = TextTokenizer::from_dir(&dir, 128)?;
    let (train, _) = tokenize(&tok, &rt.train, Some(limit))?;
    Ok((model, train))
}
