//! Quantization and export passes. Bytes in, bytes out: no I/O, no async.
//!
//! - [`tflite`]: an ONNX model to a TFLite flatbuffer that LiteRT runs, NCHW models included,
//!   in fp32 or full-integer int8.
//! - [`layout`]: the files another serving stack expects (Triton's model repository).
//!
//! Every pass refuses what it cannot translate faithfully with a typed error that names each
//! op that stopped it, and never emits a partial file.

mod error;
pub mod layout;
pub mod npy;
mod source;
pub mod tflite;

pub use error::{ExportError, UnsupportedOp};
pub use source::InputShapes;
