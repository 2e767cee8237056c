//! The TFLite reader: a flatbuffer model (as TensorFlow's converter, mediapipe or our own
//! export write it) into a [`Graph`](crate::graph::Graph).
//!
//! At load it widens float16 constants and densifies sparse ones (so DEQUANTIZE and DENSIFY
//! of constants cost nothing at run time), resolves parameter tensors into op attributes,
//! and turns resource variables (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE, CALL_ONCE) into
//! model state with its initial values. Whatever it cannot translate is collected, every
//! operator at once, into one [`LoadError::Unsupported`](crate::LoadError::Unsupported).

pub mod builtin;
mod import;
mod ops;
pub mod schema;
mod sparse;

pub use import::{IoDecl, io, read};
