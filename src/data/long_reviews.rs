//! Long "reviews" built from short labelled sentences, for testing planners on inputs longer
//! than those they were trained on (issue 16 item 5, ALGORITHM.md section 8 "Length robustness").
//!
//! Users deploy on long movie reviews (~700 words, truncated to 512 tokens) that we do not have;
//! we reproduce the situation by joining sentences **of one label**, drawn from one split (so
//! test reviews are made of test sentences only), until a review has at least `min_words`
//! words. Each review draws its sentences from a fresh seeded shuffle of its class, so a
//! sentence appears at most once per review but may appear in several reviews.

use crate::data::split::SplitMix64;
use crate::data::{Dataset, Example, Label};

/// Why long reviews cannot be built from a data set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LongReviewError {
    /// `count` or `min_words` was 0.
    #[error("long reviews: {what} must be at least 1, got 0")]
    Zero {
        /// The offending parameter.
        what: &'static str,
    },
    /// Regression labels or sentence pairs: a review needs one class and one text.
    #[error("long reviews need single-text classification data; {data} has {what}")]
    Unsupported {
        /// The data set's source.
        data: String,
        /// What it has instead.
        what: &'static str,
    },
    /// No class has enough words to reach `min_words` even using all its sentences.
    #[error("long reviews: no class of {data} has {min_words} words in all its sentences together (most: {most})")]
    TooFewWords {
        /// The data set's source.
        data: String,
        /// The requested minimum.
        min_words: usize,
        /// The largest class total.
        most: usize,
    },
}

/// Whitespace-separated words of `s`.
fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// `count` reviews of at least `min_words` words each, built from the sentences of `ds` of
/// one label per review (the label of the review). Classes take turns (review `i` has the
/// `i mod C`-th class among those with enough words), so the classes stay balanced. Texts are
/// the sentences joined by one space, in shuffled order. Deterministic for a `seed`.
///
/// The returned data set keeps `ds`'s label names; its `source` says how it was made.
///
/// Errors: `count == 0` or `min_words == 0`; regression labels or sentence pairs; no class
/// with `min_words` words in total.
pub fn long_reviews(ds: &Dataset, min_words: usize, count: usize, seed: u64) -> Result<Dataset, LongReviewError> {
    if count == 0 {
        return Err(LongReviewError::Zero { what: "the number of reviews" });
    }
    if min_words == 0 {
        return Err(LongReviewError::Zero { what: "the minimum number of words" });
    }
    if ds.is_regression() {
        return Err(LongReviewError::Unsupported { data: ds.source.clone(), what: "regression labels" });
    }
    if ds.examples.iter().any(|e| e.text_pair.is_some()) {
        return Err(LongReviewError::Unsupported { data: ds.source.clone(), what: "sentence pairs" });
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); ds.label_names.len()];
    for (i, e) in ds.examples.iter().enumerate() {
        if let Label::Class(c) = e.label {
            if c < by_class.len() && words(&e.text) > 0 {
                by_class[c].push(i);
            }
        }
    }
    let totals: Vec<usize> = by_class.iter().map(|ix| ix.iter().map(|&i| words(&ds.examples[i].text)).sum()).collect();
    let usable: Vec<usize> = (0..by_class.len()).filter(|&c| totals[c] >= min_words).collect();
    if usable.is_empty() {
        return Err(LongReviewError::TooFewWords { data: ds.source.clone(), min_words, most: totals.iter().copied().max().unwrap_or(0) });
    }
    let mut rng = SplitMix64::new(seed ^ 0x4c6f_6e67_5265_7677);
    let mut examples = Vec::with_capacity(count);
    for r in 0..count {
        let class = usable[r % usable.len()];
        let mut pool = by_class[class].clone();
        rng.shuffle(&mut pool);
        let mut text = String::new();
        let mut n = 0usize;
        for i in pool {
            let s = ds.examples[i].text.trim();
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(s);
            n += words(s);
            if n >= min_words {
                break;
            }
        }
        examples.push(Example { text, text_pair: None, label: Label::Class(class) });
    }
    Ok(Dataset {
        examples,
        label_names: ds.label_names.clone(),
        source: format!("{count} long reviews (>= {min_words} words, one label each, seed {seed}) from {}", ds.source),
        skipped_rows: 0,
        skipped_first: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds() -> Dataset {
        let mut examples = Vec::new();
        for i in 0..40 {
            let label = Label::Class(i % 2);
            examples.push(Example { text: format!("s{i} {} words here", if i % 2 == 0 { "good" } else { "bad" }), text_pair: None, label });
        }
        Dataset { examples, label_names: vec!["neg".into(), "pos".into()], source: "t".into(), skipped_rows: 0, skipped_first: Vec::new() }
    }

    #[test]
    fn one_label_per_review_and_long_enough() {
        let d = ds();
        let r = long_reviews(&d, 30, 6, 1).unwrap();
        assert_eq!(r.len(), 6);
        for (k, e) in r.examples.iter().enumerate() {
            assert_eq!(e.label, Label::Class(k % 2));
            assert!(words(&e.text) >= 30, "{}", e.text);
            let marker = if k % 2 == 0 { "good" } else { "bad" };
            // every sentence of the review comes from its class, none twice
            let ids: Vec<&str> = e.text.split_whitespace().filter(|w| w.starts_with('s')).collect();
            assert_eq!(e.text.matches(marker).count(), ids.len());
            let mut sorted = ids.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), ids.len());
        }
        assert_eq!(r.examples, long_reviews(&d, 30, 6, 1).unwrap().examples, "deterministic");
        assert_ne!(r.examples[0].text, long_reviews(&d, 30, 6, 2).unwrap().examples[0].text);
    }

    #[test]
    fn bad_requests_are_named() {
        let d = ds();
        assert!(matches!(long_reviews(&d, 30, 0, 1), Err(LongReviewError::Zero { .. })));
        assert!(matches!(long_reviews(&d, 0, 3, 1), Err(LongReviewError::Zero { .. })));
        let err = long_reviews(&d, 10_000, 3, 1).unwrap_err();
        assert_eq!(err, LongReviewError::TooFewWords { data: "t".into(), min_words: 10_000, most: 80 });
        let mut pairs = d.clone();
        pairs.examples[0].text_pair = Some("x".into());
        assert!(long_reviews(&pairs, 10, 3, 1).unwrap_err().to_string().contains("sentence pairs"));
    }
}
