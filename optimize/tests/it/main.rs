//! Integration tests of the export passes: real fixture models in, files that Google's LiteRT
//! runs out, checked against onnxruntime on the source model.
// Tests may unwrap, expect and print (denied workspace-wide elsewhere).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod onnx_quant;
mod support;
mod tflite;
