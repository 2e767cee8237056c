//! Aquilia's inference engine. A model file (TFLite today) is read into a [`graph::Graph`]
//! (NHWC, ops with resolved parameters), its weights are packed once ([`prepare`]), and each
//! set of input shapes gets a [`plan::Plan`]: concrete shapes, one kernel per node and a
//! reusable arena. Runs take and give [`Tensor`]s.
//!
//! No I/O: bytes in, tensors out. Malformed or hostile files give [`LoadError`], never a
//! panic; every read of a model file is bounds-checked ([`flatbuf`]).

mod error;
pub mod flatbuf;
pub mod graph;
mod kernels;
mod model;
pub mod onnx;
pub mod plan;
mod prepare;
pub mod quant;
mod rewrite;
mod tensor;
pub mod tflite;

pub use error::{Blocker, LoadError, RunError};
pub use kernels::isa_name;
pub use model::{IoInfo, Model, Options};
pub use tensor::{DType, Data, Tensor, element_count};
