//! Model runtimes: reading a model's signature without running it ([`inspect`]), choosing
//! the engine that runs a model ([`load`], [`check`]), and running it ([`Engine`]): TFLite on
//! the built-in engine (`aq-engine`, [`NativeEngine`]), ONNX on tract ([`TractEngine`]).
//!
//! tract can panic on some malformed files; every call into it is wrapped in `catch_unwind`,
//! and a panic becomes an error value ([`InspectError::Panicked`], [`LoadError::Panicked`],
//! [`RunError::Panicked`]).

mod engine;
mod inspect;
mod load;
mod native;
mod tensor;
mod tract_engine;

pub use engine::{
    Axis, BatchTiming, Blocker, Engine, EngineInfo, EngineSignature, InputError, IoSpec, LoadError,
    RunError,
};
pub use inspect::{
    InspectError, ModelSignature, coverage_warning, detect_format, inspect,
    install_quiet_panic_hook,
};
pub use load::{Coverage, ENGINES, LoadOptions, check, load};
pub use native::NativeEngine;
pub use tensor::{DType, Tensor, TensorError, element_count};
pub use tract_engine::{TractEngine, onnx_blockers};
