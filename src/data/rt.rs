//! Rotten Tomatoes reviews from `rotten_tomatoes_corpus_full.csv.bz2` (a normal quoted CSV
//! with header `category,text,movie_name[,...]`).
//!
//! Processing, in this order:
//! 1. keep rows whose `category` is `fresh` (label 1, positive) or `rotten` (label 0,
//!    negative); other categories (e.g. `plot`) are dropped and counted per category;
//! 2. trim the text; rows with an empty text are dropped and counted;
//! 3. remove duplicate texts (compared after trimming), keeping the first occurrence;
//! 4. shuffle with [`split_three`] and cut 80% / 10% / 10% into train / dev / test.
//!
//! [`SplitInfo`] records everything needed to reproduce (and audit) the split, including
//! the SHA-256 and size of the source file.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::split::{split_sizes, split_three};
use super::{column_index, field_str, DataError, Dataset, Delimited, DelimitedOptions, Example, Label};

/// Train/dev/test fractions used for Rotten Tomatoes.
pub const RT_FRACTIONS: [f64; 3] = [0.8, 0.1, 0.1];

/// Class names: id 0 = `negative` (rotten), id 1 = `positive` (fresh).
pub const RT_LABEL_NAMES: [&str; 2] = ["negative", "positive"];

/// Identifies the split procedure; bump if the algorithm ever changes.
pub const RT_SPLIT_ALGORITHM: &str = "rt-v1: fresh=1/rotten=0, trim, dedupe-first, splitmix64 fisher-yates, round(n*f) sizes";

/// Sizes of the three parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitSizes {
    /// Training examples.
    pub train: usize,
    /// Development examples.
    pub dev: usize,
    /// Test examples.
    pub test: usize,
}

/// Everything needed to reproduce and report the Rotten Tomatoes split; serialisable to JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitInfo {
    /// Split procedure identifier ([`RT_SPLIT_ALGORITHM`]).
    pub algorithm: String,
    /// Shuffle seed.
    pub seed: u64,
    /// `[train, dev, test]` fractions ([`RT_FRACTIONS`]).
    pub fractions: [f64; 3],
    /// Examples per part.
    pub sizes: SplitSizes,
    /// Positive (`fresh`) examples per part.
    pub positives: SplitSizes,
    /// Data rows in the CSV (header excluded).
    pub rows_read: usize,
    /// Rows with category `fresh` or `rotten`.
    pub rows_kept: usize,
    /// Rows dropped because their category is neither `fresh` nor `rotten`.
    pub dropped_other_categories: usize,
    /// The dropped categories and their counts.
    pub other_categories: BTreeMap<String, usize>,
    /// Kept-category rows dropped because their text is empty after trimming.
    pub empty_texts_removed: usize,
    /// Rows removed as duplicates of an earlier text (after trimming).
    pub duplicates_removed: usize,
    /// Of those, duplicates whose label differed from the kept first occurrence.
    pub duplicate_label_conflicts: usize,
    /// Examples after filtering and deduplication (= sum of `sizes`).
    pub unique_examples: usize,
    /// File name of the source.
    pub source_file: String,
    /// Size of the (compressed) source file in bytes.
    pub source_bytes: u64,
    /// SHA-256 of the (compressed) source file, lowercase hex.
    pub source_sha256: String,
}

/// The three Rotten Tomatoes parts plus their provenance.
#[derive(Debug, Clone)]
pub struct RtSplits {
    /// 80% part.
    pub train: Dataset,
    /// 10% part, for choosing operating points.
    pub dev: Dataset,
    /// 10% part, for reporting.
    pub test: Dataset,
    /// How the split was made.
    pub info: SplitInfo,
}

/// Loads `rotten_tomatoes_corpus_full.csv.bz2` (or an uncompressed `.csv`, chosen by
/// extension) and splits it deterministically with `seed`. Prints nothing; all counts are
/// in [`RtSplits::info`].
///
/// Any malformed row (missing fields, invalid UTF-8) is an error naming file and line.
pub fn load_rotten_tomatoes(path: &Path, seed: u64) -> Result<RtSplits, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let source_sha256 = sha256_hex(&bytes);
    let source_bytes = bytes.len() as u64;
    let is_bz2 = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bz2"));
    let reader: Box<dyn std::io::Read + '_> =
        if is_bz2 { Box::new(bzip2::read::MultiBzDecoder::new(&bytes[..])) } else { Box::new(&bytes[..]) };
    let opts = DelimitedOptions { delimiter: b',', quoting: true, has_header: true };
    let rows = Delimited::new(path, reader, &opts)?;
    let header = rows.header.clone().unwrap_or_default();
    let cat_i = column_index(path, &header, "category")?;
    let text_i = column_index(path, &header, "text")?;

    let mut rows_read = 0usize;
    let mut rows_kept = 0usize;
    let mut other_categories: BTreeMap<String, usize> = BTreeMap::new();
    let mut empty_texts_removed = 0usize;
    let mut duplicates_removed = 0usize;
    let mut duplicate_label_conflicts = 0usize;
    let mut seen: HashSet<String> = HashSet::new();
    let mut first_label: std::collections::HashMap<String, usize> = Default::default();
    let mut examples: Vec<Example> = Vec::new();

    rows.for_each(|line, record| {
        rows_read += 1;
        if record.len() != header.len() {
            return Err(DataError::ColumnCount { path: path.to_path_buf(), line, expected: header.len(), found: record.len() });
        }
        let category = field_str(path, line, "category", record, cat_i)?.trim();
        let label = match category {
            "fresh" => 1,
            "rotten" => 0,
            other => {
                *other_categories.entry(other.to_string()).or_insert(0) += 1;
                return Ok(());
            }
        };
        rows_kept += 1;
        let text = field_str(path, line, "text", record, text_i)?.trim();
        if text.is_empty() {
            empty_texts_removed += 1;
            return Ok(());
        }
        if !seen.insert(text.to_string()) {
            duplicates_removed += 1;
            if first_label.get(text) != Some(&label) {
                duplicate_label_conflicts += 1;
            }
            return Ok(());
        }
        first_label.insert(text.to_string(), label);
        examples.push(Example { text: text.to_string(), text_pair: None, label: Label::Class(label) });
        Ok(())
    })?;

    if examples.is_empty() {
        return Err(DataError::NoExamples { path: path.to_path_buf(), skipped_rows: 0 });
    }

    let n = examples.len();
    let [n_train, n_dev, n_test] = split_sizes(n, RT_FRACTIONS);
    let (train_idx, dev_idx, test_idx) = split_three(n, RT_FRACTIONS, seed);
    let source_file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    let make = |idx: &[usize], part: &str| Dataset {
        examples: idx.iter().map(|&i| examples[i].clone()).collect(),
        label_names: RT_LABEL_NAMES.iter().map(|s| s.to_string()).collect(),
        source: format!("{}#{part}", path.display()),
        skipped_rows: 0,
        skipped_first: Vec::new(),
    };
    let train = make(&train_idx, "train");
    let dev = make(&dev_idx, "dev");
    let test = make(&test_idx, "test");
    let positives = |d: &Dataset| d.examples.iter().filter(|e| e.label == Label::Class(1)).count();
    let info = SplitInfo {
        algorithm: RT_SPLIT_ALGORITHM.to_string(),
        seed,
        fractions: RT_FRACTIONS,
        sizes: SplitSizes { train: n_train, dev: n_dev, test: n_test },
        positives: SplitSizes { train: positives(&train), dev: positives(&dev), test: positives(&test) },
        rows_read,
        rows_kept,
        dropped_other_categories: other_categories.values().sum(),
        other_categories,
        empty_texts_removed,
        duplicates_removed,
        duplicate_label_conflicts,
        unique_examples: n,
        source_file,
        source_bytes,
        source_sha256,
    };
    Ok(RtSplits { train, dev, test, info })
}

/// SHA-256 (FIPS 180-4) of `data`, as 64 lowercase hex digits. Used to fingerprint source
/// files in [`SplitInfo`].
pub fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
        0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
        0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
        0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
        0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
        0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];
    let mut h: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    // Padding: 0x80, zeros to 56 mod 64, then the bit length as big-endian u64.
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut tail = Vec::with_capacity(128);
    let full = data.len() - data.len() % 64;
    tail.extend_from_slice(&data[full..]);
    tail.push(0x80);
    while tail.len() % 64 != 56 {
        tail.push(0);
    }
    tail.extend_from_slice(&bit_len.to_be_bytes());

    let mut compress = |block: &[u8]| {
        let mut w = [0u32; 64];
        for (i, chunk) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    };
    for block in data[..full].chunks_exact(64) {
        compress(block);
    }
    for block in tail.chunks_exact(64) {
        compress(block);
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}
