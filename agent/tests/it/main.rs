//! End-to-end tests of the `aq` binary: real processes, real redb files, real model files.
// Tests may unwrap, expect and print (denied workspace-wide elsewhere).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod bad_input;
mod check;
// `aq export` and `aq optimize` exist only with the `export` feature (on by default).
#[cfg(feature = "export")]
mod export;
mod flow;
mod serving;
mod support;
