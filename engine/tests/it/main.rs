//! The engine's integration tests (one binary).
mod hostile;
mod litert;
mod onnx;
mod unsafe_scope;
