//! Tests for the data loaders (`sttabt::data`), metrics, seeded split, and IDX reader
//! (`sttabt::vision::idx`). Fixtures are written to unique temporary directories.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sttabt::data::glue::{load_glue, GlueSplit, GlueTask};
use sttabt::data::metrics::{accuracy, average_ranks, evaluate, f1_binary, matthews, pearson, spearman, Metric, MetricError};
use sttabt::data::rt::{load_rotten_tomatoes, sha256_hex, SplitInfo};
use sttabt::data::split::{split_sizes, split_three, SplitMix64};
use sttabt::data::table::{load_table, Format, TableSpec};
use sttabt::data::{DataError, Example, Label};
use sttabt::vision::idx::{
    load_fashion_mnist, read_idx_images, read_idx_labels, write_idx_images, write_idx_labels, IdxError, ImageSet, VisionSplit,
    FASHION_MNIST_CLASSES,
};

// ----------------------------------------------------------------------------------------
// Fixture helpers
// ----------------------------------------------------------------------------------------

/// A fresh, unique temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("sttabt-data-test-{}-{tag}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write fixture");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn texts(ds: &sttabt::data::Dataset) -> Vec<&str> {
    ds.examples.iter().map(|e| e.text.as_str()).collect()
}

fn classes(ds: &sttabt::data::Dataset) -> Vec<usize> {
    ds.examples.iter().map(|e| e.label.class().expect("class label")).collect()
}

// ----------------------------------------------------------------------------------------
// GLUE
// ----------------------------------------------------------------------------------------

#[test]
fn glue_task_names_and_metadata() {
    assert_eq!(GlueTask::from_name("cola").unwrap(), GlueTask::Cola);
    assert_eq!(GlueTask::from_name("CoLA").unwrap(), GlueTask::Cola);
    assert_eq!(GlueTask::from_name("sst-2").unwrap(), GlueTask::Sst2);
    assert_eq!(GlueTask::from_name("SST2").unwrap(), GlueTask::Sst2);
    assert_eq!(GlueTask::from_name("mnli").unwrap(), GlueTask::Mnli);
    assert_eq!(GlueTask::from_name("MNLI-mm").unwrap(), GlueTask::MnliMismatched);
    assert_eq!(GlueTask::from_name("mnli_mismatched").unwrap(), GlueTask::MnliMismatched);
    assert_eq!(GlueTask::from_name("STS-B").unwrap(), GlueTask::Stsb);
    assert_eq!("qnli".parse::<GlueTask>().unwrap(), GlueTask::Qnli);
    let err = GlueTask::from_name("imdb").unwrap_err();
    assert!(err.to_string().contains("imdb"), "{err}");
    for t in GlueTask::ALL {
        assert_eq!(GlueTask::from_name(t.name()).unwrap(), t, "round trip of {}", t.name());
        assert_eq!(t.metric().all[0], t.metric().primary);
    }

    assert_eq!(GlueTask::Cola.metric().primary, Metric::Matthews);
    assert_eq!(GlueTask::Mrpc.metric().all, &[Metric::Accuracy, Metric::F1]);
    assert_eq!(GlueTask::Qqp.metric().all, &[Metric::Accuracy, Metric::F1]);
    assert_eq!(GlueTask::Stsb.metric().all, &[Metric::Pearson, Metric::Spearman]);
    assert_eq!(GlueTask::Rte.metric().all, &[Metric::Accuracy]);
    assert_eq!(GlueTask::Mnli.label_names(), &["contradiction", "entailment", "neutral"]);
    assert!(GlueTask::Stsb.label_names().is_empty());
    assert_eq!(GlueTask::Stsb.num_labels(), 1);
    assert_eq!(GlueTask::Mnli.num_labels(), 3);
    assert_eq!(GlueTask::MnliMismatched.file_name(GlueSplit::Dev), "dev_mismatched.tsv");
    assert_eq!(GlueTask::Mnli.file_name(GlueSplit::Dev), "dev_matched.tsv");
    assert_eq!(GlueTask::MnliMismatched.dir_name(), "MNLI");
}

#[test]
fn glue_sst2_keeps_unescaped_quotes() {
    let dir = TempDir::new("sst2");
    dir.write(
        "train.tsv",
        "sentence\tlabel\n\
         it 's a \"charming\" and often affecting journey . \t1\n\
         \" the film is strictly routine \t0\n\
         a quote that never closes \" here\t1\n",
    );
    let ds = load_glue(dir.path(), GlueTask::Sst2, GlueSplit::Train, false).unwrap();
    assert_eq!(
        texts(&ds),
        vec![
            "it 's a \"charming\" and often affecting journey . ",
            "\" the film is strictly routine ",
            "a quote that never closes \" here",
        ]
    );
    assert_eq!(classes(&ds), vec![1, 0, 1]);
    assert_eq!(ds.label_names, vec!["negative", "positive"]);
    assert_eq!(ds.skipped_rows, 0);
    assert!(ds.examples.iter().all(|e| e.text_pair.is_none()));
}

#[test]
fn glue_columns_are_found_by_name() {
    // Same task, columns swapped and CRLF line endings: still read correctly.
    let dir = TempDir::new("sst2-swapped");
    dir.write("dev.tsv", "label\tsentence\r\n0\tbad movie\r\n1\tgood \"movie\"\r\n");
    let ds = load_glue(dir.path(), GlueTask::Sst2, GlueSplit::Dev, false).unwrap();
    assert_eq!(texts(&ds), vec!["bad movie", "good \"movie\""]);
    assert_eq!(classes(&ds), vec![0, 1]);
}

#[test]
fn glue_cola_headerless() {
    let dir = TempDir::new("cola");
    dir.write(
        "dev.tsv",
        "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n\
         gj04\t0\t*\tThey drank the pub \"dry\".\n\
         bc01\t1\t\tThe \"more\" we study verbs, the crazier they get.\n",
    );
    let ds = load_glue(dir.path(), GlueTask::Cola, GlueSplit::Dev, false).unwrap();
    assert_eq!(ds.len(), 3, "first line is data, not a header");
    assert_eq!(ds.examples[0].text, "Our friends won't buy this analysis, let alone the next one we propose.");
    assert_eq!(ds.examples[1].text, "They drank the pub \"dry\".");
    assert_eq!(classes(&ds), vec![1, 0, 1]);
    assert_eq!(ds.label_names, vec!["unacceptable", "acceptable"]);
}

#[test]
fn glue_mrpc_with_bom_header() {
    let dir = TempDir::new("mrpc");
    dir.write(
        "train.tsv",
        "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n\
         1\t702876\t702977\tAmrozi accused his brother , whom he called \" the witness \" , of lying .\tReferring to him as only \" the witness \" , Amrozi accused his brother .\n\
         0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 .\n",
    );
    let ds = load_glue(dir.path(), GlueTask::Mrpc, GlueSplit::Train, false).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.examples[0].text, "Amrozi accused his brother , whom he called \" the witness \" , of lying .");
    assert_eq!(ds.examples[0].text_pair.as_deref(), Some("Referring to him as only \" the witness \" , Amrozi accused his brother ."));
    assert_eq!(classes(&ds), vec![1, 0]);
}

#[test]
fn glue_qqp_malformed_rows_error_or_skip() {
    let dir = TempDir::new("qqp");
    let path = dir.write(
        "dev.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n\
         1\t3\t4\tHow do I learn \"Rust\"?\tWhat is the best way to learn Rust?\t1\n\
         2\t5\t6\tWhy is the sky blue?\t0\n\
         3\t7\t8\tIs this a question?\tIs this one?\tmaybe\n\
         4\t9\t10\tWhat is 2+2?\tHow much is 2 plus 2?\t1\n",
    );
    let err = load_glue(dir.path(), GlueTask::Qqp, GlueSplit::Dev, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::ColumnCount { line: 3, expected: 6, found: 5, .. }), "{msg}");
    assert_eq!(err.line(), Some(3));
    assert_eq!(err.path(), path.as_path());
    assert!(msg.contains(&path.display().to_string()) && msg.contains("line 3"), "{msg}");
    assert!(msg.contains("expected 6") && msg.contains("found 5"), "{msg}");

    let ds = load_glue(dir.path(), GlueTask::Qqp, GlueSplit::Dev, true).unwrap();
    assert_eq!(ds.skipped_rows, 2, "short row and unknown label are skipped");
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.examples[0].text, "How do I learn \"Rust\"?");
    assert_eq!(classes(&ds), vec![1, 1]);
}

#[test]
fn glue_unknown_label_names_line_and_values() {
    let dir = TempDir::new("rte-bad");
    dir.write(
        "train.tsv",
        "index\tsentence1\tsentence2\tlabel\n\
         0\tA man plays.\tSomeone plays.\tentailment\n\
         1\tA dog barks.\tA cat meows.\tcontradiction\n",
    );
    let err = load_glue(dir.path(), GlueTask::Rte, GlueSplit::Train, false).unwrap_err();
    let msg = err.to_string();
    assert!(err.is_row_error());
    assert!(msg.contains("line 3"), "{msg}");
    assert!(msg.contains("contradiction"), "{msg}");
    assert!(msg.contains("not_entailment"), "expected values listed: {msg}");
}

#[test]
fn glue_missing_column_is_fatal_even_when_skipping() {
    let dir = TempDir::new("qnli-missing");
    dir.write("dev.tsv", "index\tquestion\ttext\tlabel\n0\tq?\ts.\tentailment\n");
    let err = load_glue(dir.path(), GlueTask::Qnli, GlueSplit::Dev, true).unwrap_err();
    assert!(matches!(&err, DataError::MissingColumn { column, .. } if column == "sentence"), "{err}");
    assert!(err.to_string().contains("\"text\""), "lists found columns: {err}");
}

#[test]
fn glue_missing_file_names_path() {
    let dir = TempDir::new("nofile");
    let err = load_glue(dir.path(), GlueTask::Wnli, GlueSplit::Dev, false).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(err.to_string().contains("dev.tsv"), "{err}");
}

const MNLI_DEV_HEADER: &str = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label";

fn mnli_row(i: usize, s1: &str, s2: &str, gold: &str) -> String {
    format!(
        "{i}\t63735\t63735n\tslate\t( ( The ( new rights ) ) )\t( Everyone ( ... ) )\t(ROOT (S))\t(ROOT (S))\t{s1}\t{s2}\t{gold}\t{gold}\t{gold}\t{gold}\t{gold}\t{gold}"
    )
}

#[test]
fn glue_mnli_matched_and_mismatched() {
    let dir = TempDir::new("mnli");
    let matched = [
        MNLI_DEV_HEADER.to_string(),
        mnli_row(0, "The new rights are nice enough", "Everyone really likes the newest benefits ", "neutral"),
        mnli_row(
            1,
            "This site includes a \"list\" of all award winners",
            "The Government Executive articles housed on the website are not able to be searched.",
            "contradiction",
        ),
        mnli_row(2, "uh i don't know", "I like it.", "entailment"),
    ]
    .join("\n");
    dir.write("dev_matched.tsv", &(matched + "\n"));
    let mismatched =
        [MNLI_DEV_HEADER.to_string(), mnli_row(0, "Your gift is appreciated.", "Hundreds of students will benefit.", "neutral")].join("\n");
    dir.write("dev_mismatched.tsv", &mismatched);

    let m = load_glue(dir.path(), GlueTask::Mnli, GlueSplit::Dev, false).unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(classes(&m), vec![2, 0, 1]);
    assert_eq!(m.examples[1].text, "This site includes a \"list\" of all award winners");
    assert_eq!(m.examples[0].text_pair.as_deref(), Some("Everyone really likes the newest benefits "));
    assert_eq!(m.label_names, vec!["contradiction", "entailment", "neutral"]);

    let mm = load_glue(dir.path(), GlueTask::MnliMismatched, GlueSplit::Dev, false).unwrap();
    assert_eq!(mm.len(), 1);
    assert_eq!(mm.examples[0].text, "Your gift is appreciated.");
    assert!(mm.source.ends_with("dev_mismatched.tsv"));
}

#[test]
fn glue_qnli_rte_wnli_labels() {
    let dir = TempDir::new("pairs");
    let qnli = TempDir::new("qnli");
    qnli.write(
        "train.tsv",
        "index\tquestion\tsentence\tlabel\n0\tWhat came into force?\tThe treaty came into force.\tentailment\n1\tWho?\tNobody knows.\tnot_entailment\n",
    );
    let ds = load_glue(qnli.path(), GlueTask::Qnli, GlueSplit::Train, false).unwrap();
    assert_eq!(classes(&ds), vec![0, 1]);
    assert_eq!(ds.examples[0].text, "What came into force?");
    assert_eq!(ds.examples[0].text_pair.as_deref(), Some("The treaty came into force."));

    dir.write(
        "dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tThe trophy doesn't fit because it is too big.\tThe trophy is too big.\t1\n1\tJohn couldn't see the stage with Billy in front of him because he is so short.\tBilly is so short.\t0\n",
    );
    let ds = load_glue(dir.path(), GlueTask::Wnli, GlueSplit::Dev, false).unwrap();
    assert_eq!(classes(&ds), vec![1, 0]);
    assert_eq!(ds.label_names, vec!["not_entailment", "entailment"]);
}

#[test]
fn glue_stsb_scores() {
    let dir = TempDir::new("stsb");
    let header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore";
    dir.write(
        "dev.tsv",
        &format!(
            "{header}\n\
             0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing a hard hat is dancing.\t5.000\n\
             1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA \"young\" child is riding a horse.\tA child is riding a horse.\t4.750\n\
             2\tmain-news\tdeft\t2015\t0003\tnone\tnone\tx\ty\tfive\n\
             3\tmain-news\tdeft\t2015\t0004\tnone\tnone\tx\ty\t7.5\n\
             4\tmain-news\tdeft\t2015\t0005\tnone\tnone\tx\ty\t0\n"
        ),
    );
    let err = load_glue(dir.path(), GlueTask::Stsb, GlueSplit::Dev, false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("line 4") && msg.contains("five") && msg.contains("between 0 and 5"), "{msg}");

    let ds = load_glue(dir.path(), GlueTask::Stsb, GlueSplit::Dev, true).unwrap();
    assert_eq!(ds.skipped_rows, 2, "unparsable and out-of-range scores");
    let scores: Vec<Label> = ds.labels();
    assert_eq!(scores, vec![Label::Score(5.0), Label::Score(4.75), Label::Score(0.0)]);
    assert!(ds.is_regression());
    assert_eq!(ds.examples[1].text, "A \"young\" child is riding a horse.");
}

#[test]
fn glue_all_bad_rows_is_an_error() {
    let dir = TempDir::new("allbad");
    dir.write("train.tsv", "sentence\tlabel\nfoo\t7\n");
    let err = load_glue(dir.path(), GlueTask::Sst2, GlueSplit::Train, true).unwrap_err();
    assert!(matches!(err, DataError::NoExamples { skipped_rows: 1, .. }), "{err}");
}

// ----------------------------------------------------------------------------------------
// Generic tables
// ----------------------------------------------------------------------------------------

#[test]
fn table_csv_quoted_with_string_labels() {
    let dir = TempDir::new("csv");
    let path = dir.write(
        "reviews.csv",
        "id,review,verdict\n\
         1,\"Great, really \"\"great\"\" film\",pos\n\
         2,\"Two\nlines\",neg\n\
         3,plain,pos\n\
         4,too,many,fields\n",
    );
    let spec = TableSpec::new("review", "verdict");
    let err = load_table(&path, &spec, false).unwrap_err();
    // Row 4 starts on line 6 because row 2 spans two lines.
    assert!(matches!(err, DataError::ColumnCount { line: 6, expected: 3, found: 4, .. }), "{err}");

    let ds = load_table(&path, &spec, true).unwrap();
    assert_eq!(ds.skipped_rows, 1);
    assert_eq!(texts(&ds), vec!["Great, really \"great\" film", "Two\nlines", "plain"]);
    assert_eq!(ds.label_names, vec!["pos", "neg"], "first-appearance order");
    assert_eq!(classes(&ds), vec![0, 1, 0]);
}

#[test]
fn table_empty_texts_are_row_errors_in_csv_and_jsonl() {
    let dir = TempDir::new("emptytext");
    let csv = dir.write("e.csv", "text,label\n\"a joy\",pos\n\"\",neg\n\"   \",pos\n\"flat\",neg\n");
    let spec = TableSpec::new("text", "label");
    let err = load_table(&csv, &spec, false).unwrap_err();
    assert!(matches!(&err, DataError::BadValue { line: 3, column, .. } if column == "text"), "{err}");
    assert!(err.to_string().contains("a non-empty text"), "{err}");
    let ds = load_table(&csv, &spec, true).unwrap();
    assert_eq!((ds.skipped_rows, texts(&ds)), (2, vec!["a joy", "flat"]));
    let jsonl = dir.write("e.jsonl", "{\"text\": \"good\", \"label\": \"pos\"}\n{\"text\": \" \", \"label\": \"neg\"}\n");
    let err = load_table(&jsonl, &spec, false).unwrap_err();
    assert!(matches!(&err, DataError::BadValue { line: 2, .. }), "{err}");
    assert_eq!(load_table(&jsonl, &spec, true).unwrap().skipped_rows, 1);
}

#[test]
fn table_tsv_integer_labels_and_pairs() {
    let dir = TempDir::new("tsv");
    let path = dir.write("pairs.tsv", "a\tb\ty\n\"quoted start\tsecond\t2\nx\ty\t0\nz\tw\t1\n");
    let spec = TableSpec::new("a", "y").with_pair("b");
    let ds = load_table(&path, &spec, false).unwrap();
    assert_eq!(texts(&ds), vec!["\"quoted start", "x", "z"]);
    assert_eq!(ds.examples[0].text_pair.as_deref(), Some("second"));
    assert_eq!(classes(&ds), vec![2, 0, 1], "integer labels used as-is");
    assert_eq!(ds.label_names, vec!["0", "1", "2"]);

    // Explicit format overrides the extension.
    let txt = dir.write("pairs.txt", "a\tb\ty\nq\tr\t10\ns\tt\t9\n");
    let err = load_table(&txt, &spec, false).unwrap_err();
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err}");
    let ds = load_table(&txt, &spec.clone().with_format(Format::Tsv), false).unwrap();
    assert_eq!(classes(&ds), vec![10, 9]);
    assert_eq!(ds.label_names.len(), 11);
    assert_eq!(ds.label_names[9], "9");

    // Missing pair column in the header.
    let err = load_table(&path, &TableSpec::new("a", "y").with_pair("nope"), true).unwrap_err();
    assert!(matches!(err, DataError::MissingColumn { .. }), "{err}");
}

#[test]
fn table_jsonl_keys_errors_and_regression() {
    let dir = TempDir::new("jsonl");
    let path = dir.write(
        "data.jsonl",
        "{\"sentence\": \"a \\\"b\\\" c\", \"label\": 1, \"extra\": null}\n\
         \n\
         {\"sentence\": \"d\", \"label\": 0}\n\
         {\"sentence\": 5, \"label\": 0}\n\
         not json\n\
         {\"sentence\": \"e\"}\n\
         {\"sentence\": \"f\", \"label\": 1}\n",
    );
    let spec = TableSpec::new("sentence", "label");
    let err = load_table(&path, &spec, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::BadValue { line: 4, .. }), "{msg}");
    assert!(msg.contains("\"sentence\"") && msg.contains("a string"), "{msg}");

    let ds = load_table(&path, &spec, true).unwrap();
    assert_eq!(ds.skipped_rows, 3);
    assert_eq!(texts(&ds), vec!["a \"b\" c", "d", "f"]);
    assert_eq!(classes(&ds), vec![1, 0, 1]);
    assert_eq!(ds.label_names, vec!["0", "1"]);

    let reg =
        dir.write("reg.jsonl", "{\"s1\": \"x\", \"s2\": \"y\", \"score\": 3.5}\n{\"s1\": \"x\", \"s2\": \"z\", \"score\": \"1.25\"}\n");
    let ds = load_table(&reg, &TableSpec::new("s1", "score").with_pair("s2").regression(), false).unwrap();
    assert_eq!(ds.labels(), vec![Label::Score(3.5), Label::Score(1.25)]);
    assert!(ds.label_names.is_empty());
    assert_eq!(ds.examples[1].text_pair.as_deref(), Some("z"));
}

#[test]
fn table_fixed_label_names() {
    let dir = TempDir::new("fixed");
    let path = dir.write("dev.csv", "text,label\nx,neg\ny,pos\nz,meh\n");
    let spec = TableSpec::new("text", "label").with_label_names(&["pos", "neg"]);
    let err = load_table(&path, &spec, false).unwrap_err();
    assert!(matches!(err, DataError::BadValue { line: 4, .. }), "{err}");
    let ds = load_table(&path, &spec, true).unwrap();
    assert_eq!(classes(&ds), vec![1, 0]);
    assert_eq!(ds.label_names, vec!["pos", "neg"]);
    assert_eq!(ds.skipped_rows, 1);
}

#[test]
fn table_fixed_label_names_accept_class_indices_in_range() {
    let dir = TempDir::new("fixedidx");
    // 0/1 for names neg/pos are class indices; a name that is itself an integer keeps its position
    let path = dir.write("dev.csv", "text,label\nx,1\ny,0\nz,neg\n");
    let ds = load_table(&path, &TableSpec::new("text", "label").with_label_names(&["neg", "pos"]), false).unwrap();
    assert_eq!(classes(&ds), vec![1, 0, 0]);
    assert_eq!(ds.label_names, vec!["neg", "pos"]);
    let ds = load_table(&path, &TableSpec::new("text", "label").with_label_names(&["1", "neg", "0"]), false).unwrap();
    assert_eq!(classes(&ds), vec![0, 2, 1], "a label that is a name maps to the name's position");
    // out of range: an error naming file, line, value and the valid range; skipped with skip_bad_rows
    let bad = dir.write("bad.csv", "text,label\nx,1\ny,2\n");
    let err = load_table(&bad, &TableSpec::new("text", "label").with_label_names(&["neg", "pos"]), false).unwrap_err();
    assert!(matches!(err, DataError::BadValue { line: 3, .. }), "{err}");
    let msg = err.to_string();
    for part in ["bad.csv", "line 3", "\"2\"", "0..=1", "\"neg\""] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    let ds = load_table(&bad, &TableSpec::new("text", "label").with_label_names(&["neg", "pos"]), true).unwrap();
    assert_eq!(classes(&ds), vec![1]);
    assert_eq!(ds.skipped_rows, 1);
    assert_eq!(ds.skipped_first, vec![msg], "the skipped row's error is kept for the warning");
}

#[test]
fn table_jsonl_missing_key_names_the_key_and_the_keys_there() {
    let dir = TempDir::new("jsonlkey");
    let path = dir.write("d.jsonl", "{\"text\": \"good\", \"label\": \"pos\"}\n{\"sentence\": \"bad\", \"label\": \"neg\", \"id\": 7}\n");
    let spec = TableSpec::new("text", "label");
    let err = load_table(&path, &spec, false).unwrap_err();
    assert!(matches!(err, DataError::MissingKey { line: 2, .. }), "{err}");
    assert_eq!(err.line(), Some(2));
    assert_eq!(err.to_string(), format!("{}: line 2: no key \"text\" (keys: id, label, sentence)", path.display()));
    // a missing label key, and an empty object
    let path = dir.write("l.jsonl", "{\"text\": \"good\", \"y\": 1}\n{}\n");
    let err = load_table(&path, &spec, false).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: line 1: no key \"label\" (keys: text, y)", path.display()));
    let err = load_table(&path, &TableSpec::new("text", "y"), false).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: line 2: no key \"text\" (keys: none)", path.display()));
    // a row error: skipped and counted with skip_bad_rows
    let ds = load_table(&path, &TableSpec::new("text", "y"), true).unwrap();
    assert_eq!((texts(&ds), ds.skipped_rows), (vec!["good"], 1));
}

#[test]
fn table_gzip_csv() {
    let dir = TempDir::new("gz");
    let path = dir.path().join("t.csv.gz");
    let file = std::fs::File::create(&path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    enc.write_all(b"text,label\nhello,1\nworld,0\n").unwrap();
    enc.finish().unwrap();
    let ds = load_table(&path, &TableSpec::new("text", "label"), false).unwrap();
    assert_eq!(texts(&ds), vec!["hello", "world"]);
    assert_eq!(classes(&ds), vec![1, 0]);
}

#[test]
fn example_serialises() {
    let e = Example { text: "a".into(), text_pair: None, label: Label::Score(1.5) };
    let json = serde_json::to_string(&e).unwrap();
    let back: Example = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e);
}

// ----------------------------------------------------------------------------------------
// Metrics
// ----------------------------------------------------------------------------------------

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn metrics_accuracy_f1_mcc() {
    // Confusion: tp=3, fn=1, fp=2, tn=4.
    let gold = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0];
    let pred = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0];
    assert!(close(accuracy(&pred, &gold), 0.7));
    // F1 = 2*3 / (2*3 + 2 + 1) = 6/9.
    assert!(close(f1_binary(&pred, &gold), 6.0 / 9.0));
    // MCC = (3*4 - 2*1) / sqrt(5*4*6*5) = 10 / sqrt(600).
    assert!(close(matthews(&pred, &gold), 10.0 / 600f64.sqrt()));

    // Multi-class MCC (Gorodkin): gold [0,0,1,1,2,2], pred [0,1,1,1,2,0]:
    // c=4, s=6, p=[2,3,1], t=[2,2,2]; (4*6 - (4+6+2)) / sqrt((36-14)(36-12)) = 12/sqrt(528).
    let g3 = [0, 0, 1, 1, 2, 2];
    let p3 = [0, 1, 1, 1, 2, 0];
    assert!(close(matthews(&p3, &g3), 12.0 / 528f64.sqrt()));
    assert!(close(matthews(&g3, &g3), 1.0));
    assert!(close(matthews(&[1, 0], &[0, 1]), -1.0));

    // Degenerate cases.
    assert_eq!(matthews(&[1, 1, 1], &[0, 1, 0]), 0.0, "constant predictions");
    assert_eq!(matthews(&[], &[]), 0.0);
    assert_eq!(accuracy(&[], &[]), 0.0);
    assert_eq!(f1_binary(&[0, 0], &[0, 0]), 0.0, "no positives anywhere");
    assert_eq!(f1_binary(&[1, 1], &[1, 1]), 1.0);
}

#[test]
fn metrics_pearson_spearman() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0];
    let y = [2.0, 4.0, 6.0, 8.0, 10.0];
    assert!(close(pearson(&x, &y), 1.0));
    assert!(close(pearson(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]), -1.0));
    // x=[1,2,3], y=[1,3,2]: cov=0.5·2... r = 0.5.
    assert!(close(pearson(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]), 0.5));

    assert_eq!(average_ranks(&[10.0, 20.0, 20.0, 30.0]), vec![1.0, 2.5, 2.5, 4.0]);
    assert_eq!(average_ranks(&[3.0, 1.0, 3.0, 3.0]), vec![3.0, 1.0, 3.0, 3.0]);
    // Spearman with ties: ranks x=[1,2.5,2.5,4], y=[1,2,3,4].
    // mean 2.5; dx=[-1.5,0,0,1.5], dy=[-1.5,-.5,.5,1.5]; sxy=4.5, sxx=4.5, syy=5 → 4.5/sqrt(22.5).
    let s = spearman(&[10.0, 20.0, 20.0, 30.0], &[1.0, 2.0, 3.0, 4.0]);
    assert!(close(s, 4.5 / 22.5f64.sqrt()), "{s}");
    // Monotone but non-linear → Spearman 1, Pearson < 1.
    let cubes = [1.0, 8.0, 27.0, 64.0, 125.0];
    assert!(close(spearman(&x, &cubes), 1.0));
    assert!(pearson(&x, &cubes) < 0.99);

    // Degenerate: constant side or < 2 points → 0 (documented choice, never NaN).
    assert_eq!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), 0.0);
    assert_eq!(pearson(&[1.0], &[2.0]), 0.0);
    assert_eq!(spearman(&[], &[]), 0.0);
}

#[test]
fn metrics_evaluate_dispatch_and_errors() {
    assert_eq!(Metric::Matthews.name(), "matthews_corr");
    assert_eq!(Metric::Accuracy.name(), "accuracy");
    let gold: Vec<Label> = [1, 0, 1, 1].iter().map(|&c| Label::Class(c)).collect();
    let pred: Vec<Label> = [1, 0, 0, 1].iter().map(|&c| Label::Class(c)).collect();
    let out = evaluate(GlueTask::Mrpc.metric().all, &pred, &gold).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, Metric::Accuracy);
    assert!(close(out[0].1, 0.75));
    assert_eq!(out[1].0, Metric::F1);
    assert!(close(out[1].1, 0.8));

    let sg = [Label::Score(1.0), Label::Score(2.0), Label::Score(3.0)];
    let sp = [Label::Score(1.5), Label::Score(2.5), Label::Score(2.0)];
    let out = evaluate(GlueTask::Stsb.metric().all, &sp, &sg).unwrap();
    assert!(close(out[0].1, pearson(&[1.5, 2.5, 2.0], &[1.0, 2.0, 3.0])));
    assert!(close(out[1].1, 0.5));

    assert!(matches!(evaluate(&[Metric::Accuracy], &sp, &sg), Err(MetricError::NotAClass { side: "prediction", index: 0, .. })));
    assert!(matches!(evaluate(&[Metric::Accuracy], &pred[..3], &gold), Err(MetricError::LengthMismatch { predictions: 3, labels: 4 })));
}

// ----------------------------------------------------------------------------------------
// PRNG and splits
// ----------------------------------------------------------------------------------------

#[test]
fn splitmix64_reference_values_and_determinism() {
    // Reference output of SplitMix64 seeded with 0.
    let mut r = SplitMix64::new(0);
    assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);

    let mut a = SplitMix64::new(42);
    let mut b = SplitMix64::new(42);
    let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
    let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
    assert_eq!(xs, ys);
    let mut c = SplitMix64::new(43);
    assert_ne!(xs[0], c.next_u64());

    let mut f = SplitMix64::new(7);
    for _ in 0..1000 {
        let v = f.next_f64();
        assert!((0.0..1.0).contains(&v));
        assert!(f.next_below(10) < 10);
    }

    let mut v: Vec<u32> = (0..50).collect();
    SplitMix64::new(1).shuffle(&mut v);
    let mut w: Vec<u32> = (0..50).collect();
    SplitMix64::new(1).shuffle(&mut w);
    assert_eq!(v, w);
    assert_ne!(v, (0..50).collect::<Vec<u32>>());
    let mut sorted = v.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<u32>>(), "a permutation");
}

#[test]
fn split_three_sizes_and_disjointness() {
    assert_eq!(split_sizes(12752, [0.8, 0.1, 0.1]), [10202, 1275, 1275]);
    assert_eq!(split_sizes(10, [0.8, 0.1, 0.1]), [8, 1, 1]);
    assert_eq!(split_sizes(0, [0.8, 0.1, 0.1]), [0, 0, 0]);
    assert_eq!(split_sizes(3, [0.5, 0.5, 0.0]), [2, 1, 0]);
    for n in [0usize, 1, 2, 7, 100, 1001] {
        let (tr, dv, te) = split_three(n, [0.8, 0.1, 0.1], 5);
        let sizes = split_sizes(n, [0.8, 0.1, 0.1]);
        assert_eq!([tr.len(), dv.len(), te.len()], sizes);
        let mut all: Vec<usize> = tr.iter().chain(&dv).chain(&te).copied().collect();
        all.sort();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "n={n}");
    }
    assert_eq!(split_three(100, [0.8, 0.1, 0.1], 9), split_three(100, [0.8, 0.1, 0.1], 9));
    assert_ne!(split_three(100, [0.8, 0.1, 0.1], 9).0, split_three(100, [0.8, 0.1, 0.1], 10).0);
}

#[test]
fn sha256_known_vectors() {
    assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(
        sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    let million_a = vec![b'a'; 1_000_000];
    assert_eq!(sha256_hex(&million_a), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// ----------------------------------------------------------------------------------------
// Rotten Tomatoes
// ----------------------------------------------------------------------------------------

fn write_bz2(path: &Path, contents: &str) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = bzip2::write::BzEncoder::new(file, bzip2::Compression::default());
    enc.write_all(contents.as_bytes()).unwrap();
    enc.finish().unwrap();
}

#[test]
fn rotten_tomatoes_fixture() {
    let dir = TempDir::new("rt");
    let path = dir.path().join("rotten_tomatoes_corpus_full.csv.bz2");
    let mut csv = String::from("category,text,movie_name,has_plot_and_reviews\n");
    csv.push_str("plot,\"A plot summary, with commas\nand a newline.\",m0,True\n");
    for i in 0..40 {
        let cat = if i % 3 == 0 { "rotten" } else { "fresh" };
        csv.push_str(&format!("{cat},\"Review number {i}, \"\"quoted\"\".\",m{i},True\n"));
    }
    csv.push_str("fresh,\"  Review number 5, \"\"quoted\"\".  \",dup,True\n"); // duplicate after trim
    csv.push_str("rotten,Review number 7 but different,x,True\n");
    csv.push_str("rotten,\"   \",empty,True\n");
    csv.push_str("plot,another plot,m1,False\n");
    write_bz2(&path, &csv);

    let s = load_rotten_tomatoes(&path, 1234).unwrap();
    let info = &s.info;
    assert_eq!(info.rows_read, 45);
    assert_eq!(info.dropped_other_categories, 2);
    assert_eq!(info.other_categories.get("plot"), Some(&2));
    assert_eq!(info.rows_kept, 43);
    assert_eq!(info.empty_texts_removed, 1);
    assert_eq!(info.duplicates_removed, 1);
    assert_eq!(info.duplicate_label_conflicts, 0);
    assert_eq!(info.unique_examples, 41);
    assert_eq!((info.sizes.train, info.sizes.dev, info.sizes.test), (33, 4, 4));
    assert_eq!(s.train.len() + s.dev.len() + s.test.len(), 41);
    assert_eq!(s.train.label_names, vec!["negative", "positive"]);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(info.source_sha256, sha256_hex(&bytes));
    assert_eq!(info.source_bytes, bytes.len() as u64);

    let all: Vec<&Example> = s.train.examples.iter().chain(&s.dev.examples).chain(&s.test.examples).collect();
    let r5 = all.iter().find(|e| e.text == "Review number 5, \"quoted\".").expect("kept");
    assert_eq!(r5.label, Label::Class(1));
    let r3 = all.iter().find(|e| e.text == "Review number 3, \"quoted\".").expect("kept");
    assert_eq!(r3.label, Label::Class(0));
    let unique: HashSet<&str> = all.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(unique.len(), all.len());

    // Deterministic per seed, different across seeds.
    let again = load_rotten_tomatoes(&path, 1234).unwrap();
    assert_eq!(again.test.examples, s.test.examples);
    assert_eq!(again.info, s.info);
    let other = load_rotten_tomatoes(&path, 99).unwrap();
    assert_ne!(other.train.examples, s.train.examples);

    // Info round-trips through JSON.
    let json = serde_json::to_string(info).unwrap();
    let back: SplitInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, info);
}

#[test]
fn rotten_tomatoes_bad_row_names_line() {
    let dir = TempDir::new("rt-bad");
    let path = dir.path().join("rt.csv.bz2");
    write_bz2(&path, "category,text,movie_name\nfresh,good,m\nrotten,bad\n");
    let err = load_rotten_tomatoes(&path, 0).unwrap_err();
    assert!(matches!(err, DataError::ColumnCount { line: 3, expected: 3, found: 2, .. }), "{err}");
    let missing = dir.path().join("missing.csv.bz2");
    let err = load_rotten_tomatoes(&missing, 0).unwrap_err();
    assert!(err.to_string().contains("missing.csv.bz2"), "{err}");
}

#[test]
fn rotten_tomatoes_real_file() {
    let path = common::rotten_tomatoes_path();
    let s = load_rotten_tomatoes(&path, 0).unwrap();
    let info = &s.info;
    println!("{}", serde_json::to_string_pretty(info).unwrap());
    println!(
        "RT: read {} rows, kept {} fresh/rotten, dropped {} other ({:?}), {} empty, {} duplicates removed ({} with conflicting labels), {} unique -> train {} / dev {} / test {}",
        info.rows_read,
        info.rows_kept,
        info.dropped_other_categories,
        info.other_categories,
        info.empty_texts_removed,
        info.duplicates_removed,
        info.duplicate_label_conflicts,
        info.unique_examples,
        info.sizes.train,
        info.sizes.dev,
        info.sizes.test
    );
    // Plausibility: the public corpus has ~13.9k rows, ~12.8k of them reviews.
    assert!(info.rows_read > 10_000, "{}", info.rows_read);
    assert!(info.unique_examples > 10_000 && info.unique_examples <= info.rows_kept);
    assert!(info.duplicates_removed < info.rows_kept / 10);
    assert_eq!(info.sizes.train + info.sizes.dev + info.sizes.test, info.unique_examples);
    let frac_train = info.sizes.train as f64 / info.unique_examples as f64;
    assert!((frac_train - 0.8).abs() < 0.001);
    for d in [&s.train, &s.dev, &s.test] {
        let pos = d.class_counts()[1] as f64 / d.len() as f64;
        assert!((0.3..0.8).contains(&pos), "positive share {pos} in {}", d.source);
    }

    let mut seen: HashSet<&str> = HashSet::new();
    for e in s.train.examples.iter().chain(&s.dev.examples).chain(&s.test.examples) {
        assert!(seen.insert(e.text.as_str()), "duplicate or overlapping text: {:?}", e.text);
        assert_eq!(e.text.trim(), e.text);
        assert!(!e.text.is_empty());
    }
}

// ----------------------------------------------------------------------------------------
// IDX (Fashion-MNIST)
// ----------------------------------------------------------------------------------------

fn tiny_images() -> ImageSet {
    ImageSet { count: 3, rows: 2, cols: 4, pixels: (0..24u8).map(|v| v * 10).collect() }
}

#[test]
fn idx_round_trip_raw_and_gzip() {
    let dir = TempDir::new("idx");
    let imgs = tiny_images();
    let ip = dir.path().join("train-images-idx3-ubyte");
    let lp = dir.path().join("train-labels-idx1-ubyte");
    write_idx_images(&ip, &imgs).unwrap();
    write_idx_labels(&lp, &[9, 0, 3]).unwrap();
    let back = read_idx_images(&ip).unwrap();
    assert_eq!(back, imgs);
    assert_eq!(back.image(1).unwrap(), &imgs.pixels[8..16]);
    assert!(back.image(3).is_none());
    assert_eq!(read_idx_labels(&lp).unwrap(), vec![9, 0, 3]);

    let ds = load_fashion_mnist(dir.path(), VisionSplit::Train).unwrap();
    assert_eq!(ds.labels, vec![9, 0, 3]);
    assert_eq!(ds.class_names[9], "Ankle boot");
    assert_eq!(ds.class_names[0], "T-shirt/top");

    // Gzip versions (preferred when both exist) of the test split.
    for (name, src) in [("t10k-images-idx3-ubyte.gz", &ip), ("t10k-labels-idx1-ubyte.gz", &lp)] {
        let raw = std::fs::read(src).unwrap();
        let f = std::fs::File::create(dir.path().join(name)).unwrap();
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        enc.write_all(&raw).unwrap();
        enc.finish().unwrap();
    }
    let ds = load_fashion_mnist(dir.path(), VisionSplit::Test).unwrap();
    assert_eq!(ds.images, imgs);
    assert_eq!(ds.labels, vec![9, 0, 3]);
}

#[test]
fn idx_errors_name_file_and_sizes() {
    let dir = TempDir::new("idx-bad");
    let ip = dir.path().join("imgs");
    write_idx_images(&ip, &tiny_images()).unwrap();
    let full = std::fs::read(&ip).unwrap();
    assert_eq!(full.len(), 16 + 24);

    // Truncated data.
    std::fs::write(&ip, &full[..30]).unwrap();
    let err = read_idx_images(&ip).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IdxError::Truncated { expected_bytes: 40, found_bytes: 30, .. }), "{msg}");
    assert!(msg.contains(&ip.display().to_string()) && msg.contains("40") && msg.contains("30"), "{msg}");

    // Truncated header.
    std::fs::write(&ip, &full[..10]).unwrap();
    assert!(matches!(read_idx_images(&ip), Err(IdxError::Truncated { expected_bytes: 16, found_bytes: 10, .. })));

    // Trailing data.
    let mut longer = full.clone();
    longer.push(0);
    std::fs::write(&ip, &longer).unwrap();
    assert!(matches!(read_idx_images(&ip), Err(IdxError::TrailingData { expected_bytes: 40, found_bytes: 41, .. })));

    // Labels file read as images → magic error.
    let lp = dir.path().join("labels");
    write_idx_labels(&lp, &[1, 2, 3]).unwrap();
    let err = read_idx_images(&lp).unwrap_err();
    assert!(matches!(err, IdxError::BadMagic { expected: 2051, found: 2049, .. }), "{err}");
    assert!(err.to_string().contains("labels"), "{err}");
    let err = read_idx_labels(&ip).unwrap_err();
    assert!(matches!(err, IdxError::BadMagic { expected: 2049, .. }), "{err}");

    // Count mismatch and out-of-range labels in the loader.
    std::fs::write(dir.path().join("train-images-idx3-ubyte"), &full).unwrap();
    write_idx_labels(&dir.path().join("train-labels-idx1-ubyte"), &[1, 2]).unwrap();
    let err = load_fashion_mnist(dir.path(), VisionSplit::Train).unwrap_err();
    assert!(matches!(err, IdxError::CountMismatch { images: 3, labels: 2, .. }), "{err}");
    write_idx_labels(&dir.path().join("train-labels-idx1-ubyte"), &[1, 10, 2]).unwrap();
    let err = load_fashion_mnist(dir.path(), VisionSplit::Train).unwrap_err();
    assert!(matches!(err, IdxError::BadLabel { index: 1, found: 10, .. }), "{err}");

    // Missing files.
    let err = load_fashion_mnist(dir.path(), VisionSplit::Test).unwrap_err();
    assert!(matches!(err, IdxError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("t10k-images-idx3-ubyte"), "{err}");
}

#[test]
fn fashion_mnist_real_files() {
    let dir = common::fashion_mnist_dir();
    let test = load_fashion_mnist(&dir, VisionSplit::Test).unwrap();
    assert_eq!((test.images.count, test.images.rows, test.images.cols), (10_000, 28, 28));
    assert_eq!(test.labels.len(), 10_000);
    let mut counts = [0usize; 10];
    for &l in &test.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [1000; 10], "Fashion-MNIST test set is balanced");
    assert_eq!(test.class_names, FASHION_MNIST_CLASSES.to_vec());
    let train = load_fashion_mnist(&dir, VisionSplit::Train).unwrap();
    assert_eq!(train.images.count, 60_000);
    println!("Fashion-MNIST: train {} / test {} images of 28x28", train.images.count, test.images.count);
}
