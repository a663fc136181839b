//! Data loading for the text tasks (GLUE, generic tables, Rotten Tomatoes), the seeded
//! split used for our own data, and the evaluation metrics of ALGORITHM.md section 5.
//!
//! Everything here depends only on `std`, `serde`, `serde_json`, `thiserror`, `csv`,
//! `bzip2` and `flate2`. Loaders never print; they return counts (e.g.
//! [`Dataset::skipped_rows`]) so callers can report them.

pub mod bootstrap;
pub mod glue;
pub mod long_reviews;
pub mod metrics;
pub mod rt;
pub mod split;
pub mod table;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// One labelled example. `label` is a class index for classification, or a float for
/// regression (STS-B).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// First (or only) text segment.
    pub text: String,
    /// Second text segment for sentence-pair tasks.
    pub text_pair: Option<String>,
    /// Gold label.
    pub label: Label,
}

/// A gold label (or a prediction): a class index, or a real-valued score for regression.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Label {
    /// Class index into [`Dataset::label_names`].
    Class(usize),
    /// Regression target (STS-B similarity in `0..=5`).
    Score(f32),
}

impl Label {
    /// The class index, if this is a classification label.
    pub fn class(&self) -> Option<usize> {
        match *self {
            Label::Class(c) => Some(c),
            Label::Score(_) => None,
        }
    }

    /// The value as a float: the score itself, or the class index converted to `f64`.
    pub fn as_f64(&self) -> f64 {
        match *self {
            Label::Class(c) => c as f64,
            Label::Score(s) => f64::from(s),
        }
    }
}

/// A loaded set of examples plus the bookkeeping needed to report how it was read.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The examples, in file order (or split order for derived datasets).
    pub examples: Vec<Example>,
    /// Class names indexed by [`Label::Class`]; empty for regression.
    pub label_names: Vec<String>,
    /// Where the data came from (a file path, possibly with a `#split` suffix).
    pub source: String,
    /// Rows dropped because they were malformed (only non-zero when skipping was requested).
    pub skipped_rows: usize,
    /// The errors of the first [`SKIPPED_SHOWN`] skipped rows (lowest line numbers), in file order, each
    /// `FILE: line N: reason` (empty when none was skipped).
    pub skipped_first: Vec<String>,
}

/// How many skipped rows a [`Dataset`] keeps the reasons of ([`Dataset::skipped_first`]).
pub const SKIPPED_SHOWN: usize = 5;

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// True when the labels are regression scores (no class names).
    pub fn is_regression(&self) -> bool {
        self.label_names.is_empty()
    }

    /// The gold labels in example order.
    pub fn labels(&self) -> Vec<Label> {
        self.examples.iter().map(|e| e.label).collect()
    }

    /// Number of examples per class (empty for regression).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.label_names.len()];
        for e in &self.examples {
            if let Label::Class(c) = e.label {
                if c >= counts.len() {
                    counts.resize(c + 1, 0);
                }
                counts[c] += 1;
            }
        }
        counts
    }
}

/// Errors from the data loaders. Every variant names the file; row problems also give the
/// 1-based line number where the row starts and what was expected vs. what was found.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or decompressed.
    #[error("{}: cannot read file: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The CSV/TSV reader failed in a way that is not tied to a single bad row
    /// (for example a decompression error surfacing mid-file).
    #[error("{}: line {}: cannot parse: {message}", .path.display(), .line.map_or_else(|| "?".to_string(), |l| l.to_string()))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<u64>,
        /// What went wrong.
        message: String,
    },
    /// The file has no header line although one is required.
    #[error("{}: expected a header line, found an empty file", .path.display())]
    MissingHeader {
        /// The file.
        path: PathBuf,
    },
    /// A required column is not in the header.
    #[error("{}: line 1 (header): expected a column named {column:?}, found columns {found:?}", .path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column that was looked up.
        column: String,
        /// The header's column names.
        found: Vec<String>,
    },
    /// A row has a different number of fields than the header (or the fixed layout).
    #[error("{}: line {line}: expected {expected} tab/comma-separated fields, found {found}", .path.display())]
    ColumnCount {
        /// The file.
        path: PathBuf,
        /// 1-based line where the row starts.
        line: u64,
        /// Number of fields expected.
        expected: usize,
        /// Number of fields found.
        found: usize,
    },
    /// A field has an invalid value (unknown label, unparsable score, invalid UTF-8, ...).
    #[error("{}: line {line}: column {column:?}: expected {expected}, found {found:?}", .path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// 1-based line where the row starts.
        line: u64,
        /// Column name (or `#index` for headerless files, or the JSON key).
        column: String,
        /// Description of what was expected.
        expected: String,
        /// The offending value.
        found: String,
    },
    /// A JSONL object lacks a key the table spec reads (text, pair or label).
    #[error("{}: line {line}: no key {key:?} (keys: {})", .path.display(), if .keys.is_empty() { "none".to_string() } else { .keys.join(", ") })]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// The key that was looked up.
        key: String,
        /// The keys the object has (sorted).
        keys: Vec<String>,
    },
    /// A JSONL line is not a valid JSON object.
    #[error("{}: line {line}: expected a JSON object, found invalid JSON: {message}", .path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// Parser message.
        message: String,
    },
    /// The table format cannot be inferred from the file name.
    #[error("{}: cannot infer the table format: expected extension .csv, .tsv or .jsonl (optionally followed by .gz or .bz2), found {found:?}", .path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// The extension found (empty if none).
        found: String,
    },
    /// The file contained no usable examples.
    #[error("{}: expected at least one example, found none ({skipped_rows} malformed rows skipped)", .path.display())]
    NoExamples {
        /// The file.
        path: PathBuf,
        /// How many rows were skipped as malformed.
        skipped_rows: usize,
    },
}

impl DataError {
    /// True for problems confined to a single row, i.e. the ones that loaders skip (and count)
    /// when asked to skip bad rows.
    pub fn is_row_error(&self) -> bool {
        matches!(self, DataError::ColumnCount { .. } | DataError::BadValue { .. } | DataError::MissingKey { .. } | DataError::Json { .. })
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DataError::Io { path, .. }
            | DataError::Parse { path, .. }
            | DataError::MissingHeader { path }
            | DataError::MissingColumn { path, .. }
            | DataError::ColumnCount { path, .. }
            | DataError::BadValue { path, .. }
            | DataError::MissingKey { path, .. }
            | DataError::Json { path, .. }
            | DataError::UnknownFormat { path, .. }
            | DataError::NoExamples { path, .. } => path,
        }
    }

    /// The 1-based line number, for row-level errors.
    pub fn line(&self) -> Option<u64> {
        match self {
            DataError::ColumnCount { line, .. }
            | DataError::BadValue { line, .. }
            | DataError::MissingKey { line, .. }
            | DataError::Json { line, .. } => Some(*line),
            DataError::Parse { line, .. } => *line,
            DataError::MissingColumn { .. } => Some(1),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared reading helpers (crate-private).
// ---------------------------------------------------------------------------------------

/// Opens `path`, transparently decompressing `.gz` and `.bz2` files (by extension).
pub(crate) fn open_maybe_compressed(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let reader = BufReader::new(file);
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).unwrap_or_default();
    Ok(match ext.as_str() {
        "gz" => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        "bz2" => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
        _ => Box::new(reader),
    })
}

/// Converts a csv crate error into a [`DataError`] naming the file.
pub(crate) fn csv_error(path: &Path, err: csv::Error) -> DataError {
    let line = err.position().map(|p| p.line());
    match err.into_kind() {
        csv::ErrorKind::Io(source) => DataError::Io { path: path.to_path_buf(), source },
        other => DataError::Parse { path: path.to_path_buf(), line, message: format!("{other:?}") },
    }
}

/// Options for [`Delimited`].
pub(crate) struct DelimitedOptions {
    pub delimiter: u8,
    /// Whether `"` starts a quoted field (false for GLUE-style TSV).
    pub quoting: bool,
    /// Whether the first line is a header.
    pub has_header: bool,
}

/// A delimited-file reader whose header (if any) has already been read.
pub(crate) struct Delimited<R: Read> {
    path: PathBuf,
    rdr: csv::Reader<R>,
    /// Header names (BOM stripped from the first, all trimmed), when the file has a header.
    pub header: Option<Vec<String>>,
}

impl<R: Read> Delimited<R> {
    /// Opens the reader and reads the header line when `opts.has_header` is set.
    pub fn new(path: &Path, reader: R, opts: &DelimitedOptions) -> Result<Self, DataError> {
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(opts.delimiter)
            .quoting(opts.quoting)
            .has_headers(opts.has_header)
            .flexible(true)
            .from_reader(reader);
        let header = if opts.has_header {
            let raw = rdr.byte_headers().map_err(|e| csv_error(path, e))?.clone();
            if raw.is_empty() || (raw.len() == 1 && raw[0].is_empty()) {
                return Err(DataError::MissingHeader { path: path.to_path_buf() });
            }
            let mut names = Vec::with_capacity(raw.len());
            for (i, f) in raw.iter().enumerate() {
                let s = String::from_utf8_lossy(f);
                let s = if i == 0 { s.trim_start_matches('\u{feff}') } else { &s[..] };
                names.push(s.trim().to_string());
            }
            Some(names)
        } else {
            None
        };
        Ok(Delimited { path: path.to_path_buf(), rdr, header })
    }

    /// Calls `on_row(line, fields)` for every data row (`line` is the 1-based line where the
    /// row starts). Errors returned by `on_row` abort the read and are passed through.
    pub fn for_each(mut self, mut on_row: impl FnMut(u64, &csv::ByteRecord) -> Result<(), DataError>) -> Result<(), DataError> {
        let mut record = csv::ByteRecord::new();
        loop {
            match self.rdr.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(csv_error(&self.path, e)),
            }
            let line = record.position().map_or(0, |p| p.line());
            on_row(line, &record)?;
        }
    }
}

/// Decodes field `idx` of `record` as UTF-8, or reports a row error.
pub(crate) fn field_str<'r>(path: &Path, line: u64, column: &str, record: &'r csv::ByteRecord, idx: usize) -> Result<&'r str, DataError> {
    let bytes =
        record.get(idx).ok_or_else(|| DataError::ColumnCount { path: path.to_path_buf(), line, expected: idx + 1, found: record.len() })?;
    std::str::from_utf8(bytes).map_err(|e| DataError::BadValue {
        path: path.to_path_buf(),
        line,
        column: column.to_string(),
        expected: "UTF-8 text".to_string(),
        found: format!("invalid UTF-8 at byte {}: {}", e.valid_up_to(), String::from_utf8_lossy(bytes)),
    })
}

/// Finds a column by name in a header, or reports [`DataError::MissingColumn`].
pub(crate) fn column_index(path: &Path, header: &[String], name: &str) -> Result<usize, DataError> {
    header.iter().position(|h| h == name).ok_or_else(|| DataError::MissingColumn {
        path: path.to_path_buf(),
        column: name.to_string(),
        found: header.to_vec(),
    })
}

/// Applies the skip-or-fail rule: row errors are counted when `skip` is set, everything
/// else (and row errors when not skipping) is returned.
pub(crate) fn handle_row_result(result: Result<(), DataError>, skip: bool, skipped: &mut Skipped) -> Result<(), DataError> {
    match result {
        Err(e) if skip && e.is_row_error() => {
            skipped.add(&e);
            Ok(())
        }
        other => other,
    }
}

/// The rows a loader skipped: how many, and the errors of the [`SKIPPED_SHOWN`] with the lowest
/// line numbers (a loader finds malformed rows while reading and unknown labels in a second pass,
/// so rows are not skipped in file order).
#[derive(Debug, Default)]
pub(crate) struct Skipped {
    pub count: usize,
    /// (line, error), sorted by line, at most [`SKIPPED_SHOWN`].
    first: Vec<(u64, String)>,
}

impl Skipped {
    fn add(&mut self, e: &DataError) {
        self.count += 1;
        let line = e.line().unwrap_or(u64::MAX);
        let at = self.first.partition_point(|(l, _)| *l <= line);
        if at < SKIPPED_SHOWN {
            self.first.insert(at, (line, e.to_string()));
            self.first.truncate(SKIPPED_SHOWN);
        }
    }

    /// The kept errors in file order, for [`Dataset::skipped_first`].
    pub fn first(self) -> Vec<String> {
        self.first.into_iter().map(|(_, e)| e).collect()
    }
}
