//! aq-runtime integration tests: real fixture models through the tract engine.
// Tests may unwrap, expect and print (denied workspace-wide elsewhere).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod engines;
