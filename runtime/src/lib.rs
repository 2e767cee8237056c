//! Model runtimes: reading a model's signature without running it ([`inspect`]), and running
//! it ([`Engine`], implemented for ONNX and TFLite by [`TractEngine`]).
//!
//! tract can panic on some malformed files (tract-tflite in particular); every call into tract
//! here is wrapped in `catch_unwind`, and a panic becomes an error value
//! ([`InspectError::Panicked`], [`LoadError::Panicked`], [`RunError::Panicked`]).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod engine;
mod inspect;
mod tensor;
mod tract_engine;

pub use engine::{
    Axis, BatchTiming, Engine, EngineSignature, InputError, IoSpec, LoadError, RunError,
};
pub use inspect::{InspectError, ModelSignature, detect_format, inspect, install_quiet_panic_hook};
pub use tensor::{DType, Tensor, TensorError, element_count};
pub use tract_engine::{TractEngine, TractOptions};
