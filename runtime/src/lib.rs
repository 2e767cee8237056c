//! Model runtimes. Today this crate holds model inspection: reading a model file's inputs and
//! outputs (names, element types, shapes with symbolic dims) with tract, for ONNX and TFLite.
//! Inference engines and the runtime trait arrive with the serving issue.
//!
//! tract can panic on some malformed files (tract-tflite in particular); every call into tract
//! here is wrapped in `catch_unwind` and a panic becomes [`InspectError::Panicked`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod inspect;

pub use inspect::{InspectError, ModelSignature, detect_format, inspect, install_quiet_panic_hook};
