//! Quantization and export passes. Bytes in, bytes out: no I/O, no async.
//!
//! - [`tflite`]: an ONNX model to a TFLite flatbuffer that LiteRT runs, NCHW models included.
//!
//! Every pass refuses what it cannot translate faithfully with a typed error that names each
//! op that stopped it, and never emits a partial file.

mod error;
pub mod npy;
mod source;
pub mod tflite;

pub use error::{ExportError, UnsupportedOp};
pub use source::InputShapes;
