//! Integration tests of the local registry (one test binary for the crate).
// Tests may unwrap, expect and print (denied workspace-wide elsewhere).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod crash;
mod model;
mod registry;
mod support;
