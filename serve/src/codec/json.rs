//! The v1 JSON body.
//!
//! Request: `{"inputs": {"x": {"shape": [1, 4], "data": [1, 2, 3, 4], "dtype": "f32"}}}`, where
//! `dtype` is optional (the model's), `shape` is optional when `data` is nested, and an input
//! may also be given as a bare nested array: `{"inputs": {"x": [[1, 2, 3, 4]]}}`. An optional
//! `"outputs": ["name"]` picks outputs.
//!
//! Response: `{"model": ..., "version": ..., "outputs": {"y": {"dtype", "shape", "data"}}}`
//! with `data` flat, row-major.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aq_runtime::{DType, EngineSignature, Tensor, element_count};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::numbers::{read_array, write_flat};
use super::{input_dtype, select};
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    #[serde(borrow)]
    inputs: BTreeMap<String, &'a RawValue>,
    #[serde(default)]
    outputs: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorBody<'a> {
    dtype: Option<String>,
    shape: Option<Vec<usize>>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A decoded v1 request.
#[derive(Debug)]
pub struct PredictRequest {
    pub inputs: Vec<(String, Tensor)>,
    pub outputs: Option<Vec<String>>,
}

pub fn decode(body: &[u8], signature: &EngineSignature) -> Result<PredictRequest, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(400, "malformed_json", "the body is not UTF-8"))?;
    let request: Request<'_> = serde_json::from_str(text).map_err(|e| {
        ApiError::new(
            400,
            "malformed_json",
            format!("the body is not a valid v1 request: {e}"),
        )
    })?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for (name, raw) in request.inputs {
        let bad =
            |reason: String| ApiError::new(400, "bad_tensor", format!("input {name:?}: {reason}"));
        let text = raw.get().trim_start();
        let (dtype, declared_shape, data) = if text.starts_with('{') {
            let body: TensorBody<'_> =
                serde_json::from_str(raw.get()).map_err(|e| bad(e.to_string()))?;
            let dtype = match body.dtype {
                Some(d) => DType::parse(&d).ok_or_else(|| bad(format!("unknown dtype {d:?}")))?,
                None => input_dtype(signature, &name),
            };
            (dtype, body.shape, body.data.get())
        } else {
            (input_dtype(signature, &name), None, raw.get())
        };
        let (bytes, found_shape) = read_array(data, dtype).map_err(bad)?;
        let shape = match declared_shape {
            None => found_shape,
            Some(shape) => {
                let count =
                    element_count(&shape).ok_or_else(|| bad("the shape is too large".into()))?;
                let found = element_count(&found_shape).unwrap_or(0);
                if found != count {
                    return Err(bad(format!(
                        "shape {shape:?} holds {count} elements, data has {found}"
                    )));
                }
                shape
            }
        };
        let tensor = Tensor::from_bytes(dtype, shape, bytes).map_err(|e| bad(e.to_string()))?;
        inputs.push((name, tensor));
    }
    Ok(PredictRequest {
        inputs,
        outputs: request.outputs,
    })
}

pub fn encode(
    model: &str,
    version: &str,
    signature: &EngineSignature,
    outputs: &[Tensor],
    requested: Option<&[String]>,
) -> Result<String, ApiError> {
    let chosen = select(signature, outputs, requested)
        .map_err(|e| ApiError::new(400, "unknown_output", e))?;
    let mut out =
        String::with_capacity(64 + chosen.iter().map(|(_, t)| t.len() * 12).sum::<usize>());
    out.push_str("{\"model\":");
    out.push_str(&serde_json::Value::from(model).to_string());
    out.push_str(",\"version\":");
    out.push_str(&serde_json::Value::from(version).to_string());
    out.push_str(",\"outputs\":{");
    for (i, (name, t)) in chosen.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{}:{{\"dtype\":\"{}\",\"shape\":{},\"data\":",
            serde_json::Value::from(name.as_str()),
            t.dtype(),
            serde_json::Value::from(t.shape().to_vec())
        );
        write_flat(t, &mut out);
        out.push('}');
    }
    out.push_str("}}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aq_runtime::{Axis, IoSpec};

    fn sig() -> EngineSignature {
        EngineSignature {
            inputs: vec![IoSpec {
                name: "x".into(),
                dtype: DType::F32,
                shape: vec![Axis::Batch, Axis::Fixed(2)],
            }],
            outputs: vec![IoSpec {
                name: "y".into(),
                dtype: DType::F32,
                shape: vec![Axis::Batch, Axis::Fixed(2)],
            }],
        }
    }

    #[test]
    fn all_three_input_forms_decode() {
        for body in [
            r#"{"inputs": {"x": [[1, 2]]}}"#,
            r#"{"inputs": {"x": {"shape": [1, 2], "data": [1, 2]}}}"#,
            r#"{"inputs": {"x": {"dtype": "float32", "data": [[1, 2]]}}}"#,
        ] {
            let r = decode(body.as_bytes(), &sig()).unwrap();
            assert_eq!(r.inputs[0].1.shape(), &[1, 2], "{body}");
            assert_eq!(r.inputs[0].1.to_f32().unwrap(), vec![1.0, 2.0]);
        }
    }

    #[test]
    fn malformed_bodies_are_400s() {
        for body in [
            "{",
            "[]",
            r#"{"inputs": {"x": [[1, 2]]}, "extra": 1}"#,
            r#"{"inputs": {"x": {"shape": [3], "data": [1, 2]}}}"#,
            r#"{"inputs": {"x": {"dtype": "complex", "data": [1]}}}"#,
            r#"{"inputs": {"x": [[1, "a"]]}}"#,
            r#"{"inputs": {"x": {"shape": [18446744073709551615, 2], "data": [1]}}}"#,
        ] {
            let e = decode(body.as_bytes(), &sig()).unwrap_err();
            assert_eq!(e.status, 400, "{body}: {e:?}");
        }
    }

    #[test]
    fn the_response_is_valid_json() {
        let t = Tensor::from_f32(vec![1, 2], &[0.5, f32::NAN]).unwrap();
        let text = encode("m", "1.0.0", &sig(), &[t], None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["outputs"]["y"]["shape"], serde_json::json!([1, 2]));
        assert_eq!(v["outputs"]["y"]["data"], serde_json::json!([0.5, null]));
    }
}
