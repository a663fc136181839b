//! Text front end: tokenisation (and, in `crate::data`, datasets).
pub mod tokenizer;
