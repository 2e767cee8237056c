//! Quantization and export passes. Bytes in, bytes out: no I/O, no async.
//!
//! - [`tflite`]: an ONNX model to a TFLite flatbuffer that LiteRT runs, NCHW models included,
//!   in fp32 or full-integer int8.
//! - [`onnx_quant`]: int8 quantization of ONNX models (dynamic, or static with calibrated
//!   activations) with only the quantized ops tract runs.
//! - [`layout`]: the files another serving stack expects (Triton's model repository).
//!
//! Every pass refuses what it cannot translate faithfully with a typed error that names each
//! op that stopped it, and never emits a partial file.

mod calibration;
mod error;
mod guard;
mod int8;
pub mod layout;
pub mod npy;
pub mod onnx_quant;
mod source;
pub mod tflite;

pub use error::{ExportError, UnsupportedOp};
pub use source::InputShapes;
