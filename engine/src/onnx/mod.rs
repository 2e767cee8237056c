//! The ONNX reader: a model (as torch.onnx, PaddlePaddle's and scikit-learn's exporters write
//! it) into a [`Graph`](crate::graph::Graph).
//!
//! ONNX is NCHW; the graph is NHWC. Every tensor is tracked with the layout its value holds:
//! convolutions, pools and resizes produce NHWC values, elementwise ops keep their input's
//! layout (constants are permuted to match), and ops whose meaning depends on element order
//! (reshape, flatten, transposes, outputs) get NCHW back through one transpose. Nodes whose
//! inputs are all constants are evaluated at load, which is how an `If` on a fixed input
//! (`input_values`) picks its branch. scikit-learn's ZipMap is served as the probability
//! tensor it wraps. Whatever cannot be translated is collected, every operator at once.

mod import;
mod linear;
mod ml;
mod nn;
mod ops;
mod proto;
mod recurrent;
mod shaping;

pub use import::{OnnxOptions, read};
