//! The engine's integration tests (one binary).
// Tests may unwrap, expect and print (denied workspace-wide elsewhere).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod fuzz_readme;
mod hostile;
mod litert;
mod model_api;
mod onnx;
mod unsafe_scope;
