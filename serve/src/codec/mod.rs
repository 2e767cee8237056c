//! Request and response bodies, with no I/O: bytes in, tensors out, and back.
//!
//! - [`json`]: the v1 JSON body (`/v1/serve/{model}/predict`).
//! - [`binary`]: the compact binary tensor body (`application/x-aq-tensors`), for speed.
//! - [`v2`]: the Open Inference Protocol v2 JSON body and its binary-data extension.

pub mod binary;
pub mod json;
mod numbers;
pub mod v2;

use aq_runtime::{DType, EngineSignature, Tensor};

/// The element type the model expects for input `name` (f32 for a name it does not have:
/// the signature check reports the unknown name later).
fn input_dtype(signature: &EngineSignature, name: &str) -> DType {
    signature
        .inputs
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.dtype)
        .unwrap_or(DType::F32)
}

/// Keeps the outputs the client asked for (all when it asked for none), in the order it asked.
pub fn select<'a>(
    signature: &EngineSignature,
    outputs: &'a [Tensor],
    requested: Option<&[String]>,
) -> Result<Vec<(String, &'a Tensor)>, String> {
    let all: Vec<(String, &Tensor)> = signature
        .outputs
        .iter()
        .map(|s| s.name.clone())
        .zip(outputs.iter())
        .collect();
    let Some(requested) = requested else {
        return Ok(all);
    };
    requested
        .iter()
        .map(|name| {
            all.iter()
                .find(|(n, _)| n == name)
                .cloned()
                .ok_or_else(|| format!("the model has no output named {name:?}"))
        })
        .collect()
}
