//! `sttabt compress`: choose an operating point on dev and ship it as one bundle directory.
//!
//! - [`search`]: dev accuracy and retention per mode, the lowest retention within an accuracy
//!   budget, and the per-layer keep-schedule search (ALGORITHM.md sections 5 and 8).

pub mod search;
