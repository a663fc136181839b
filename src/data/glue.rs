//! GLUE tasks in the original TSV layout distributed by the GLUE site
//! (`glue_data/<TASK>/{train,dev}.tsv`; MNLI uses `dev_matched.tsv` / `dev_mismatched.tsv`).
//!
//! GLUE TSVs contain unescaped `"` characters inside sentences, so `"` is *not* treated as a
//! quote character: every line is one row and fields are split on tabs only. Where a file
//! has a header, columns are looked up by name; CoLA has no header and uses fixed positions
//! (`source, label, original-label, sentence`).

use std::fmt;
use std::path::{Path, PathBuf};

use super::metrics::Metric;
use super::{
    column_index, field_str, handle_row_result, open_maybe_compressed, DataError, Dataset, Delimited, DelimitedOptions, Example, Label,
    Skipped,
};

/// The GLUE tasks. `Mnli` is the matched dev set, `MnliMismatched` the mismatched one (both
/// share MNLI's `train.tsv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum GlueTask {
    /// Corpus of Linguistic Acceptability (Matthews correlation).
    Cola,
    /// Stanford Sentiment Treebank, binary.
    Sst2,
    /// Microsoft Research Paraphrase Corpus.
    Mrpc,
    /// Quora Question Pairs.
    Qqp,
    /// MultiNLI, matched dev set.
    Mnli,
    /// MultiNLI, mismatched dev set.
    MnliMismatched,
    /// Question NLI.
    Qnli,
    /// Recognizing Textual Entailment.
    Rte,
    /// Semantic Textual Similarity Benchmark (regression, 0..=5).
    Stsb,
    /// Winograd NLI.
    Wnli,
}

/// Which GLUE file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum GlueSplit {
    /// `train.tsv`.
    Train,
    /// `dev.tsv` (`dev_matched.tsv` / `dev_mismatched.tsv` for MNLI).
    Dev,
}

/// The metrics reported for a task: the primary one (used for "within 1 point of dense")
/// and the full list (primary first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMetrics {
    /// The task's headline metric.
    pub primary: Metric,
    /// All metrics reported for the task, `primary` first.
    pub all: &'static [Metric],
}

/// Error from [`GlueTask::from_name`] for an unrecognised task name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown GLUE task {name:?}: expected one of cola, sst-2, mrpc, qqp, mnli, mnli-mm, qnli, rte, sts-b, wnli")]
pub struct UnknownTask {
    /// The name that was given.
    pub name: String,
}

/// Where a column lives: looked up by header name, or a fixed index for headerless files.
#[derive(Debug, Clone, Copy)]
enum Col {
    Name(&'static str),
    Index(usize, &'static str),
}

/// The layout of one task's TSV.
struct Layout {
    /// `Some(n)`: headerless file with exactly `n` columns.
    headerless_columns: Option<usize>,
    text: Col,
    pair: Option<Col>,
    label: Col,
}

impl GlueTask {
    /// All tasks, in the usual GLUE order.
    pub const ALL: [GlueTask; 10] = [
        GlueTask::Cola,
        GlueTask::Sst2,
        GlueTask::Mrpc,
        GlueTask::Qqp,
        GlueTask::Mnli,
        GlueTask::MnliMismatched,
        GlueTask::Qnli,
        GlueTask::Rte,
        GlueTask::Stsb,
        GlueTask::Wnli,
    ];

    /// Parses a task name, case-insensitively, ignoring `-` and `_`: `cola`, `sst-2`/`sst2`,
    /// `mrpc`, `qqp`, `mnli` (also `mnli-m`, `mnli_matched`), `mnli-mm` (also
    /// `mnli_mismatched`), `qnli`, `rte`, `sts-b`/`stsb`, `wnli`.
    pub fn from_name(name: &str) -> Result<GlueTask, UnknownTask> {
        let norm: String = name.trim().chars().filter(|c| *c != '-' && *c != '_').flat_map(|c| c.to_lowercase()).collect();
        Ok(match norm.as_str() {
            "cola" => GlueTask::Cola,
            "sst2" | "sst" => GlueTask::Sst2,
            "mrpc" => GlueTask::Mrpc,
            "qqp" => GlueTask::Qqp,
            "mnli" | "mnlim" | "mnlimatched" => GlueTask::Mnli,
            "mnlimm" | "mnlimismatched" => GlueTask::MnliMismatched,
            "qnli" => GlueTask::Qnli,
            "rte" => GlueTask::Rte,
            "stsb" | "sts" => GlueTask::Stsb,
            "wnli" => GlueTask::Wnli,
            _ => return Err(UnknownTask { name: name.to_string() }),
        })
    }

    /// Canonical display name (`"CoLA"`, `"SST-2"`, `"MNLI-mm"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            GlueTask::Cola => "CoLA",
            GlueTask::Sst2 => "SST-2",
            GlueTask::Mrpc => "MRPC",
            GlueTask::Qqp => "QQP",
            GlueTask::Mnli => "MNLI",
            GlueTask::MnliMismatched => "MNLI-mm",
            GlueTask::Qnli => "QNLI",
            GlueTask::Rte => "RTE",
            GlueTask::Stsb => "STS-B",
            GlueTask::Wnli => "WNLI",
        }
    }

    /// The task's folder name under `glue_data/` (both MNLI variants live in `MNLI`).
    pub fn dir_name(&self) -> &'static str {
        match self {
            GlueTask::Mnli | GlueTask::MnliMismatched => "MNLI",
            other => other.name(),
        }
    }

    /// True for STS-B (regression).
    pub fn is_regression(&self) -> bool {
        matches!(self, GlueTask::Stsb)
    }

    /// Number of output classes (1 for the STS-B regression head).
    pub fn num_labels(&self) -> usize {
        if self.is_regression() {
            1
        } else {
            self.label_names().len()
        }
    }

    /// Class names indexed by class id (empty for STS-B). The order follows the usual GLUE
    /// processors: binary tasks have `0` = negative class; MNLI is
    /// `[contradiction, entailment, neutral]`; QNLI/RTE are `[entailment, not_entailment]`.
    pub fn label_names(&self) -> &'static [&'static str] {
        match self {
            GlueTask::Cola => &["unacceptable", "acceptable"],
            GlueTask::Sst2 => &["negative", "positive"],
            GlueTask::Mrpc => &["not_equivalent", "equivalent"],
            GlueTask::Qqp => &["not_duplicate", "duplicate"],
            GlueTask::Mnli | GlueTask::MnliMismatched => &["contradiction", "entailment", "neutral"],
            GlueTask::Qnli | GlueTask::Rte => &["entailment", "not_entailment"],
            GlueTask::Wnli => &["not_entailment", "entailment"],
            GlueTask::Stsb => &[],
        }
    }

    /// The label strings as written in the TSV, indexed by class id.
    fn raw_labels(&self) -> &'static [&'static str] {
        match self {
            GlueTask::Cola | GlueTask::Sst2 | GlueTask::Mrpc | GlueTask::Qqp | GlueTask::Wnli => &["0", "1"],
            other => other.label_names(),
        }
    }

    /// Metrics for the task: CoLA Matthews correlation; MRPC and QQP accuracy (primary) and F1;
    /// STS-B Pearson (primary) and Spearman; all others accuracy.
    pub fn metric(&self) -> TaskMetrics {
        match self {
            GlueTask::Cola => TaskMetrics { primary: Metric::Matthews, all: &[Metric::Matthews] },
            GlueTask::Mrpc | GlueTask::Qqp => TaskMetrics { primary: Metric::Accuracy, all: &[Metric::Accuracy, Metric::F1] },
            GlueTask::Stsb => TaskMetrics { primary: Metric::Pearson, all: &[Metric::Pearson, Metric::Spearman] },
            _ => TaskMetrics { primary: Metric::Accuracy, all: &[Metric::Accuracy] },
        }
    }

    /// File name of a split inside the task folder.
    pub fn file_name(&self, split: GlueSplit) -> &'static str {
        match (self, split) {
            (_, GlueSplit::Train) => "train.tsv",
            (GlueTask::Mnli, GlueSplit::Dev) => "dev_matched.tsv",
            (GlueTask::MnliMismatched, GlueSplit::Dev) => "dev_mismatched.tsv",
            (_, GlueSplit::Dev) => "dev.tsv",
        }
    }

    fn layout(&self) -> Layout {
        use Col::*;
        let header = |text, pair, label| Layout { headerless_columns: None, text: Name(text), pair, label: Name(label) };
        match self {
            GlueTask::Cola => Layout { headerless_columns: Some(4), text: Index(3, "sentence"), pair: None, label: Index(1, "label") },
            GlueTask::Sst2 => header("sentence", None, "label"),
            GlueTask::Mrpc => header("#1 String", Some(Name("#2 String")), "Quality"),
            GlueTask::Qqp => header("question1", Some(Name("question2")), "is_duplicate"),
            GlueTask::Mnli | GlueTask::MnliMismatched => header("sentence1", Some(Name("sentence2")), "gold_label"),
            GlueTask::Qnli => header("question", Some(Name("sentence")), "label"),
            GlueTask::Rte | GlueTask::Wnli => header("sentence1", Some(Name("sentence2")), "label"),
            GlueTask::Stsb => header("sentence1", Some(Name("sentence2")), "score"),
        }
    }
}

impl fmt::Display for GlueTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GlueTask {
    type Err = UnknownTask;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GlueTask::from_name(s)
    }
}

/// Path of a split's file: `dir/<file_name>` where `dir` is the task folder.
pub fn glue_file(dir: &Path, task: GlueTask, split: GlueSplit) -> PathBuf {
    dir.join(task.file_name(split))
}

/// Loads one GLUE split from the task folder `dir` (e.g. `glue_data/SST-2`).
///
/// Malformed rows (wrong column count, unknown label, unparsable or out-of-range STS-B
/// score, invalid UTF-8) are an error naming the file and line, unless `skip_bad_rows` is
/// set, in which case they are skipped and counted in [`Dataset::skipped_rows`]. A missing
/// column in the header, unreadable file or a file without any usable row is always an
/// error. Texts are kept exactly as in the file.
pub fn load_glue(dir: &Path, task: GlueTask, split: GlueSplit, skip_bad_rows: bool) -> Result<Dataset, DataError> {
    let path = glue_file(dir, task, split);
    load_glue_file(&path, task, skip_bad_rows)
}

/// Like [`load_glue`] but for an explicit file in `task`'s layout.
pub fn load_glue_file(path: &Path, task: GlueTask, skip_bad_rows: bool) -> Result<Dataset, DataError> {
    let layout = task.layout();
    let reader = open_maybe_compressed(path)?;
    let opts = DelimitedOptions { delimiter: b'\t', quoting: false, has_header: layout.headerless_columns.is_none() };

    let rows = Delimited::new(path, reader, &opts)?;
    let header = rows.header.clone();
    let resolve = |col: Col| -> Result<(usize, String), DataError> {
        match (col, &header) {
            (Col::Index(i, name), _) => Ok((i, name.to_string())),
            (Col::Name(n), Some(h)) => Ok((column_index(path, h, n)?, n.to_string())),
            (Col::Name(n), None) => Err(DataError::MissingColumn { path: path.to_path_buf(), column: n.to_string(), found: Vec::new() }),
        }
    };
    let expected = match (&header, layout.headerless_columns) {
        (_, Some(n)) => n,
        (Some(h), None) => h.len(),
        (None, None) => 0,
    };
    let text_col = resolve(layout.text)?;
    let pair_col = layout.pair.map(resolve).transpose()?;
    let label_col = resolve(layout.label)?;
    let raw_labels = task.raw_labels();
    let mut examples = Vec::new();
    let mut skipped = Skipped::default();

    rows.for_each(|line, record| {
        let result = (|| {
            if record.len() != expected {
                return Err(DataError::ColumnCount { path: path.to_path_buf(), line, expected, found: record.len() });
            }
            let text = field_str(path, line, &text_col.1, record, text_col.0)?.to_string();
            let text_pair = match &pair_col {
                Some((i, name)) => Some(field_str(path, line, name, record, *i)?.to_string()),
                None => None,
            };
            let raw = field_str(path, line, &label_col.1, record, label_col.0)?.trim();
            let label = if task.is_regression() {
                parse_score(path, line, &label_col.1, raw)?
            } else {
                match raw_labels.iter().position(|l| *l == raw) {
                    Some(c) => Label::Class(c),
                    None => {
                        return Err(DataError::BadValue {
                            path: path.to_path_buf(),
                            line,
                            column: label_col.1.clone(),
                            expected: format!("one of {raw_labels:?}"),
                            found: raw.to_string(),
                        })
                    }
                }
            };
            examples.push(Example { text, text_pair, label });
            Ok(())
        })();
        handle_row_result(result, skip_bad_rows, &mut skipped)
    })?;

    if examples.is_empty() {
        return Err(DataError::NoExamples { path: path.to_path_buf(), skipped_rows: skipped.count });
    }
    Ok(Dataset {
        examples,
        label_names: task.label_names().iter().map(|s| s.to_string()).collect(),
        source: path.display().to_string(),
        skipped_rows: skipped.count,
        skipped_first: skipped.first(),
    })
}

/// Parses an STS-B similarity score: a finite number in `0..=5`.
fn parse_score(path: &Path, line: u64, column: &str, raw: &str) -> Result<Label, DataError> {
    match raw.parse::<f32>() {
        Ok(v) if v.is_finite() && (0.0..=5.0).contains(&v) => Ok(Label::Score(v)),
        _ => Err(DataError::BadValue {
            path: path.to_path_buf(),
            line,
            column: column.to_string(),
            expected: "a similarity score between 0 and 5".to_string(),
            found: raw.to_string(),
        }),
    }
}
