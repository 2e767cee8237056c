//! The Open Inference Protocol v2 (KServe v2, Triton) infer body, JSON and the binary-data
//! extension: with an `Inference-Header-Content-Length: N` header, the first N bytes are the
//! JSON header and tensor bytes follow, each input naming its length in
//! `parameters.binary_data_size`. Outputs come back the same way when the client asks
//! (`parameters.binary_data` on an output, or `binary_data_output` on the request).

use std::fmt::Write as _;

use aq_runtime::{DType, EngineSignature, Tensor, element_count};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::numbers::{read_array, write_flat};
use super::select;
use crate::error::ApiError;

/// The header that splits a binary-extension body into JSON and tensor bytes.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<Input<'a>>,
    #[serde(default)]
    outputs: Option<Vec<Output>>,
}

#[derive(Deserialize)]
struct Input<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Output {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// A decoded v2 infer request.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<(String, Tensor)>,
    /// Requested outputs and whether each wants binary data (`None`: the request default).
    pub outputs: Option<Vec<(String, Option<bool>)>>,
    /// `parameters.binary_data_output` of the request.
    pub binary_by_default: bool,
}

fn bad(code: &'static str, message: String) -> ApiError {
    ApiError::new(400, code, message)
}

fn flag(parameters: &Option<Map<String, Value>>, key: &str) -> Option<bool> {
    parameters.as_ref()?.get(key)?.as_bool()
}

/// Decodes a request body; `header_length` is the `Inference-Header-Content-Length` value.
pub fn decode(
    body: &Bytes,
    header_length: Option<usize>,
    _signature: &EngineSignature,
) -> Result<InferRequest, ApiError> {
    let (json, mut binary) = match header_length {
        None => (&body[..], Bytes::new()),
        Some(n) if n <= body.len() => (&body[..n], body.slice(n..)),
        Some(n) => {
            return Err(bad(
                "bad_binary_body",
                format!(
                    "{HEADER_LENGTH} is {n}, but the body has only {} bytes",
                    body.len()
                ),
            ));
        }
    };
    let text = std::str::from_utf8(json)
        .map_err(|_| bad("malformed_json", "the JSON header is not UTF-8".into()))?;
    let request: Request<'_> = serde_json::from_str(text).map_err(|e| {
        bad(
            "malformed_json",
            format!("the body is not a valid v2 infer request: {e}"),
        )
    })?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let name = input.name;
        let fail = |reason: String| bad("bad_tensor", format!("input {name:?}: {reason}"));
        let dtype = DType::parse(&input.datatype)
            .ok_or_else(|| fail(format!("datatype {:?} is not supported", input.datatype)))?;
        let shape = input
            .shape
            .iter()
            .map(|&d| {
                usize::try_from(d)
                    .map_err(|_| fail(format!("shape {:?} has a negative dim", input.shape)))
            })
            .collect::<Result<Vec<usize>, ApiError>>()?;
        let count = element_count(&shape).ok_or_else(|| fail("the shape is too large".into()))?;
        let binary_size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| fail("binary_data_size is not a number".into()))
            })
            .transpose()?;
        let bytes = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(fail("both data and binary_data_size are given".into()));
            }
            (None, None) => return Err(fail("no data".into())),
            (Some(size), None) => {
                let size = usize::try_from(size)
                    .map_err(|_| fail("binary_data_size is too large".into()))?;
                if size > binary.len() {
                    return Err(fail(format!(
                        "binary_data_size {size} runs past the end of the body ({} bytes left)",
                        binary.len()
                    )));
                }
                binary.split_to(size)
            }
            (None, Some(raw)) => {
                let (bytes, found) = read_array(raw.get(), dtype).map_err(fail)?;
                let found = element_count(&found).unwrap_or(0);
                if found != count {
                    return Err(fail(format!(
                        "shape {shape:?} holds {count} elements, data has {found}"
                    )));
                }
                Bytes::from(bytes)
            }
        };
        let tensor = Tensor::from_bytes(dtype, shape, bytes).map_err(|e| fail(e.to_string()))?;
        inputs.push((name, tensor));
    }
    if !binary.is_empty() {
        return Err(bad(
            "bad_binary_body",
            format!("{} bytes of binary data belong to no input", binary.len()),
        ));
    }
    Ok(InferRequest {
        id: request.id,
        inputs,
        outputs: request.outputs.map(|outs| {
            outs.into_iter()
                .map(|o| (o.name, flag(&o.parameters, "binary_data")))
                .collect()
        }),
        binary_by_default: flag(&request.parameters, "binary_data_output").unwrap_or(false),
    })
}

/// An encoded response: the body, and the JSON header's length when binary data follows it.
pub struct Encoded {
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

pub fn encode(
    model: &str,
    version: &str,
    signature: &EngineSignature,
    outputs: &[Tensor],
    request: &InferRequest,
) -> Result<Encoded, ApiError> {
    let names: Option<Vec<String>> = request
        .outputs
        .as_ref()
        .map(|o| o.iter().map(|(n, _)| n.clone()).collect());
    let chosen =
        select(signature, outputs, names.as_deref()).map_err(|e| bad("unknown_output", e))?;
    let binary_for = |i: usize| -> bool {
        request
            .outputs
            .as_ref()
            .and_then(|o| o.get(i))
            .and_then(|(_, b)| *b)
            .unwrap_or(request.binary_by_default)
    };
    let mut json = String::with_capacity(128);
    json.push_str("{\"model_name\":");
    json.push_str(&Value::from(model).to_string());
    json.push_str(",\"model_version\":");
    json.push_str(&Value::from(version).to_string());
    if let Some(id) = &request.id {
        json.push_str(",\"id\":");
        json.push_str(&Value::from(id.as_str()).to_string());
    }
    json.push_str(",\"outputs\":[");
    let mut binary: Vec<u8> = Vec::new();
    let mut any_binary = false;
    for (i, (name, t)) in chosen.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        let _ = write!(
            json,
            "{{\"name\":{},\"datatype\":\"{}\",\"shape\":{}",
            Value::from(name.as_str()),
            t.dtype().v2_name(),
            Value::from(t.shape().to_vec())
        );
        if binary_for(i) {
            any_binary = true;
            let _ = write!(
                json,
                ",\"parameters\":{{\"binary_data_size\":{}}}}}",
                t.bytes().len()
            );
            binary.extend_from_slice(t.bytes());
        } else {
            json.push_str(",\"data\":");
            write_flat(t, &mut json);
            json.push('}');
        }
    }
    json.push_str("]}");
    if any_binary {
        let header_length = json.len();
        let mut body = json.into_bytes();
        body.extend_from_slice(&binary);
        Ok(Encoded {
            body,
            header_length: Some(header_length),
        })
    } else {
        Ok(Encoded {
            body: json.into_bytes(),
            header_length: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aq_runtime::{Axis, IoSpec};

    fn sig() -> EngineSignature {
        let spec = |name: &str, dtype, shape| IoSpec {
            name: name.into(),
            dtype,
            shape,
        };
        EngineSignature {
            inputs: vec![spec("x", DType::F32, vec![Axis::Batch, Axis::Fixed(2)])],
            outputs: vec![
                spec("y", DType::F32, vec![Axis::Batch, Axis::Fixed(2)]),
                spec("z", DType::I64, vec![Axis::Batch]),
            ],
        }
    }

    fn body(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    const HEADER: &[u8] = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;

    #[test]
    fn json_and_binary_inputs_decode_alike() {
        let json = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1.5,2]}]}"#;
        let a = decode(&body(json), None, &sig()).unwrap();
        let mut raw = HEADER.to_vec();
        raw.extend_from_slice(&1.5f32.to_le_bytes());
        raw.extend_from_slice(&2f32.to_le_bytes());
        let b = decode(&body(&raw), Some(HEADER.len()), &sig()).unwrap();
        assert_eq!(a.inputs[0].1, b.inputs[0].1);
    }

    #[test]
    fn lying_binary_bodies_are_400s() {
        let mut raw = HEADER.to_vec();
        raw.extend_from_slice(&[0; 4]);
        let status = |raw: &[u8], n: usize| decode(&body(raw), Some(n), &sig()).unwrap_err().status;
        assert_eq!(status(&raw, HEADER.len()), 400, "too little binary data");
        assert_eq!(
            status(&raw, raw.len() + 1),
            400,
            "header length past the end"
        );
        raw.extend_from_slice(&[0; 8]);
        assert_eq!(status(&raw, HEADER.len()), 400, "binary data left over");
        let strings = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["a"]}]}"#;
        assert_eq!(
            decode(&body(strings), None, &sig()).unwrap_err().status,
            400
        );
    }

    #[test]
    fn outputs_come_back_binary_when_asked() {
        let request = br#"{"id":"7","inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"z","parameters":{"binary_data":true}},{"name":"y"}]}"#;
        let req = decode(&body(request), None, &sig()).unwrap();
        let y = Tensor::from_f32(vec![1, 2], &[0.25, 0.5]).unwrap();
        let z = Tensor::from_bytes(DType::I64, vec![1], 3i64.to_le_bytes().to_vec()).unwrap();
        let out = encode("m", "1", &sig(), &[y, z], &req).unwrap();
        let n = out.header_length.unwrap();
        let head: Value = serde_json::from_slice(&out.body[..n]).unwrap();
        assert_eq!(head["id"], "7");
        assert_eq!(head["outputs"][0]["name"], "z");
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(head["outputs"][1]["data"], serde_json::json!([0.25, 0.5]));
        assert_eq!(&out.body[n..], &3i64.to_le_bytes());
    }
}
