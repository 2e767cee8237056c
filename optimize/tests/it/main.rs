//! Integration tests of the export passes: real fixture models in, files that Google's LiteRT
//! runs out, checked against onnxruntime on the source model.

mod onnx_quant;
mod support;
mod tflite;
