//! Generic labelled tables: CSV (RFC 4180 quoting), TSV (tab-separated, `"` is an ordinary
//! character as in GLUE), and JSONL (one JSON object per line, fields by key).
//!
//! The format comes from [`TableSpec::format`] or the file extension (`.csv`, `.tsv`/`.tab`,
//! `.jsonl`/`.ndjson`, each optionally followed by `.gz` or `.bz2`). CSV/TSV need a header
//! line; columns are looked up by name.
//!
//! Labels:
//! * regression ([`TableSpec::regression`]): parsed as finite `f32` scores;
//! * fixed names ([`TableSpec::label_names`]): each label must be one of them, id = position
//!   (use this to load a dev file with the training file's mapping), or an integer that is not
//!   itself a name and is below the number of names: then it is the class id (files labelled
//!   `0`/`1` for a model whose `id2label` is `negative`/`positive`);
//! * otherwise, if every label is a non-negative integer, the integer is the class id and
//!   `label_names` are `"0"`, `"1"`, ..., `"max"` (so names are the numeric string forms in
//!   numeric order, and every id indexes `label_names`);
//! * otherwise strings are mapped to ids in order of first appearance.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{
    column_index, field_str, handle_row_result, open_maybe_compressed, DataError, Dataset, Delimited, DelimitedOptions, Example, Label,
    Skipped,
};

/// File format of a generic table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// Comma-separated with `"` quoting; header required.
    Csv,
    /// Tab-separated without quoting; header required.
    Tsv,
    /// One JSON object per line; blank lines are ignored.
    Jsonl,
}

impl Format {
    /// Infers the format from the extension, looking through a trailing `.gz`/`.bz2`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").or_else(|| name.strip_suffix(".bz2")).unwrap_or(&name);
        let ext = name.rsplit_once('.')?.1;
        match ext {
            "csv" => Some(Format::Csv),
            "tsv" | "tab" => Some(Format::Tsv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// Which columns/keys hold the text, optional pair text and label, and how to read labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableSpec {
    /// Column (or JSON key) of the first text.
    pub text_column: String,
    /// Column (or JSON key) of the second text, for pair tasks.
    pub pair_column: Option<String>,
    /// Column (or JSON key) of the label.
    pub label_column: String,
    /// Explicit format; `None` infers it from the extension.
    pub format: Option<Format>,
    /// Read labels as regression scores.
    pub regression: bool,
    /// Fixed class names (id = position); `None` infers them from the data.
    pub label_names: Option<Vec<String>>,
}

impl TableSpec {
    /// A single-text classification spec with format inferred from the extension.
    pub fn new(text_column: &str, label_column: &str) -> Self {
        TableSpec {
            text_column: text_column.to_string(),
            pair_column: None,
            label_column: label_column.to_string(),
            format: None,
            regression: false,
            label_names: None,
        }
    }

    /// Sets the pair-text column.
    pub fn with_pair(mut self, pair_column: &str) -> Self {
        self.pair_column = Some(pair_column.to_string());
        self
    }

    /// Sets an explicit format.
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// Reads labels as regression scores.
    pub fn regression(mut self) -> Self {
        self.regression = true;
        self
    }

    /// Fixes the class names (id = position).
    pub fn with_label_names<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.label_names = Some(names.iter().map(|s| s.as_ref().to_string()).collect());
        self
    }
}

/// One row before labels are mapped.
struct RawRow {
    line: u64,
    text: String,
    pair: Option<String>,
    label: RawLabel,
}

enum RawLabel {
    Str(String),
    Score(f32),
}

/// Loads a CSV/TSV/JSONL table according to `spec`.
///
/// Malformed rows (wrong field count, missing/ill-typed JSON field, invalid JSON, empty or
/// unknown label, unparsable score, invalid UTF-8) are an error naming file and line unless
/// `skip_bad_rows` is set, in which case they are skipped and counted in
/// [`Dataset::skipped_rows`]. A missing header column, unknown format, unreadable file or a
/// table without usable rows is always an error.
pub fn load_table(path: &Path, spec: &TableSpec, skip_bad_rows: bool) -> Result<Dataset, DataError> {
    let format = match spec.format.or_else(|| Format::from_path(path)) {
        Some(f) => f,
        None => {
            return Err(DataError::UnknownFormat {
                path: path.to_path_buf(),
                found: path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default(),
            })
        }
    };
    let mut skipped = Skipped::default();
    let rows = match format {
        Format::Csv | Format::Tsv => read_delimited_rows(path, spec, format, skip_bad_rows, &mut skipped)?,
        Format::Jsonl => read_jsonl_rows(path, spec, skip_bad_rows, &mut skipped)?,
    };

    let label_column = spec.label_column.as_str();
    let mut examples = Vec::with_capacity(rows.len());
    let label_names: Vec<String>;
    if spec.regression {
        label_names = Vec::new();
        for row in rows {
            let result = (|| {
                let label = match row.label {
                    RawLabel::Score(v) => v,
                    RawLabel::Str(s) => parse_score(path, row.line, label_column, &s)?,
                };
                examples.push(Example { text: row.text, text_pair: row.pair, label: Label::Score(label) });
                Ok(())
            })();
            handle_row_result(result, skip_bad_rows, &mut skipped)?;
        }
    } else {
        // Classification: turn every label into a string first.
        let mut str_rows = Vec::with_capacity(rows.len());
        for row in rows {
            let s = match row.label {
                RawLabel::Str(s) => s,
                RawLabel::Score(v) => v.to_string(),
            };
            str_rows.push((row.line, row.text, row.pair, s));
        }
        let mapping: Mapping = if let Some(names) = &spec.label_names {
            Mapping::Fixed(names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect())
        } else if !str_rows.is_empty() && str_rows.iter().all(|r| r.3.parse::<usize>().is_ok()) {
            Mapping::Integer
        } else {
            Mapping::FirstSeen(HashMap::new(), Vec::new())
        };
        let mut mapping = mapping;
        let mut max_int = 0usize;
        for (line, text, pair, s) in str_rows {
            let id = match &mut mapping {
                Mapping::Fixed(map) => match fixed_label_id(map, spec.label_names.as_ref().map_or(0, Vec::len), &s) {
                    Some(id) => id,
                    None => {
                        let names = spec.label_names.as_deref().unwrap_or_default();
                        let err = unknown_fixed_label(path, line, label_column, names, s);
                        handle_row_result(Err(err), skip_bad_rows, &mut skipped)?;
                        continue;
                    }
                },
                // Checked above that every label parses.
                Mapping::Integer => s.parse::<usize>().unwrap_or(0),
                Mapping::FirstSeen(map, names) => {
                    let next = names.len();
                    *map.entry(s.clone()).or_insert_with(|| {
                        names.push(s.clone());
                        next
                    })
                }
            };
            max_int = max_int.max(id);
            examples.push(Example { text, text_pair: pair, label: Label::Class(id) });
        }
        label_names = match mapping {
            Mapping::Fixed(_) => spec.label_names.clone().unwrap_or_default(),
            Mapping::Integer => (0..=max_int).map(|i| i.to_string()).collect(),
            Mapping::FirstSeen(_, names) => names,
        };
    }
    if examples.is_empty() {
        return Err(DataError::NoExamples { path: path.to_path_buf(), skipped_rows: skipped.count });
    }
    Ok(Dataset { examples, label_names, source: path.display().to_string(), skipped_rows: skipped.count, skipped_first: skipped.first() })
}

/// The class id of `label` under fixed names: its position among the names, else (a label that is
/// not itself a name) a non-negative integer below the number of names read as the class index
/// (`0`/`1` in a file for a model whose `id2label` is `negative`/`positive`). `None` otherwise.
fn fixed_label_id(map: &HashMap<String, usize>, count: usize, label: &str) -> Option<usize> {
    match map.get(label) {
        Some(&id) => Some(id),
        None => label.parse::<usize>().ok().filter(|&i| i < count),
    }
}

/// A label that is neither one of the fixed `names` nor a class index in range: the error names
/// the file, line, value, the names and the valid index range.
fn unknown_fixed_label(path: &Path, line: u64, column: &str, names: &[String], found: String) -> DataError {
    let shown: Vec<&String> = names.iter().take(20).collect();
    let more = if names.len() > shown.len() { format!(" (first 20 of {})", names.len()) } else { String::new() };
    let expected = format!("one of the label names {shown:?}{more} or a class index in 0..={}", names.len().saturating_sub(1));
    bad_value(path, line, column, &expected, found)
}

enum Mapping {
    Fixed(HashMap<String, usize>),
    Integer,
    FirstSeen(HashMap<String, usize>, Vec<String>),
}

fn read_delimited_rows(path: &Path, spec: &TableSpec, format: Format, skip: bool, skipped: &mut Skipped) -> Result<Vec<RawRow>, DataError> {
    let reader = open_maybe_compressed(path)?;
    let opts =
        DelimitedOptions { delimiter: if format == Format::Csv { b',' } else { b'\t' }, quoting: format == Format::Csv, has_header: true };
    let rows = Delimited::new(path, reader, &opts)?;
    let header = rows.header.clone().unwrap_or_default();
    let text_i = column_index(path, &header, &spec.text_column)?;
    let pair_i = match &spec.pair_column {
        Some(c) => Some(column_index(path, &header, c)?),
        None => None,
    };
    let label_i = column_index(path, &header, &spec.label_column)?;
    let mut out = Vec::new();
    rows.for_each(|line, record| {
        let result = (|| {
            if record.len() != header.len() {
                return Err(DataError::ColumnCount { path: path.to_path_buf(), line, expected: header.len(), found: record.len() });
            }
            let text = field_str(path, line, &spec.text_column, record, text_i)?.to_string();
            if text.trim().is_empty() {
                return Err(empty_text(path, line, &spec.text_column, &text));
            }
            let pair = match (pair_i, &spec.pair_column) {
                (Some(i), Some(name)) => Some(field_str(path, line, name, record, i)?.to_string()),
                _ => None,
            };
            let label = field_str(path, line, &spec.label_column, record, label_i)?.trim().to_string();
            if label.is_empty() {
                return Err(empty_label(path, line, &spec.label_column));
            }
            out.push(RawRow { line, text, pair, label: RawLabel::Str(label) });
            Ok(())
        })();
        handle_row_result(result, skip, skipped)
    })?;
    Ok(out)
}

fn read_jsonl_rows(path: &Path, spec: &TableSpec, skip: bool, skipped: &mut Skipped) -> Result<Vec<RawRow>, DataError> {
    let reader = BufReader::new(open_maybe_compressed(path)?);
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let result = parse_json_row(path, line_no, trimmed, spec).map(|row| out.push(row));
        handle_row_result(result, skip, skipped)?;
    }
    Ok(out)
}

fn parse_json_row(path: &Path, line: u64, text: &str, spec: &TableSpec) -> Result<RawRow, DataError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DataError::Json { path: path.to_path_buf(), line, message: e.to_string() })?;
    let obj = value.as_object().ok_or_else(|| DataError::Json {
        path: path.to_path_buf(),
        line,
        message: format!("found {} instead of an object", json_kind(&value)),
    })?;
    let missing =
        |key: &str| DataError::MissingKey { path: path.to_path_buf(), line, key: key.to_string(), keys: obj.keys().cloned().collect() };
    let get_str = |key: &str| -> Result<String, DataError> {
        match obj.get(key) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(bad_value(path, line, key, "a string", other.to_string())),
            None => Err(missing(key)),
        }
    };
    let text_value = get_str(&spec.text_column)?;
    if text_value.trim().is_empty() {
        return Err(empty_text(path, line, &spec.text_column, &text_value));
    }
    let pair = match &spec.pair_column {
        Some(k) => Some(get_str(k)?),
        None => None,
    };
    let key = &spec.label_column;
    let label = match obj.get(key) {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => RawLabel::Str(s.trim().to_string()),
        Some(serde_json::Value::Number(n)) => {
            if spec.regression {
                match n.as_f64() {
                    Some(v) if v.is_finite() => RawLabel::Score(v as f32),
                    _ => return Err(bad_value(path, line, key, "a finite number", n.to_string())),
                }
            } else {
                RawLabel::Str(n.to_string())
            }
        }
        Some(serde_json::Value::Bool(b)) => RawLabel::Str(b.to_string()),
        Some(other) => return Err(bad_value(path, line, key, "a non-empty string, number or boolean label", other.to_string())),
        None => return Err(missing(key)),
    };
    Ok(RawRow { line, text: text_value, pair, label })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn bad_value(path: &Path, line: u64, column: &str, expected: &str, found: String) -> DataError {
    DataError::BadValue { path: path.to_path_buf(), line, column: column.to_string(), expected: expected.to_string(), found }
}

/// An empty or whitespace-only text: nothing to tokenise but [CLS]/[SEP], so a row error (skipped
/// with `--skip-bad-rows`), as `classify` refuses an empty text.
fn empty_text(path: &Path, line: u64, column: &str, raw: &str) -> DataError {
    bad_value(path, line, column, "a non-empty text", raw.to_string())
}

fn empty_label(path: &Path, line: u64, column: &str) -> DataError {
    bad_value(path, line, column, "a non-empty label", String::new())
}

fn parse_score(path: &Path, line: u64, column: &str, raw: &str) -> Result<f32, DataError> {
    match raw.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(bad_value(path, line, column, "a finite number", raw.to_string())),
    }
}
