//! Dynamic int8 quantization of an ONNX model, with only ops tract runs: every `Conv`,
//! `MatMul` and `Gemm` whose weights are constant becomes
//!
//! ```text
//! x -> DynamicQuantizeLinear -> ConvInteger | MatMulInteger (int8 weights, per output channel)
//!   -> Cast(float) -> Mul(x_scale * weight_scales) [-> Add(bias)]
//! ```
//!
//! Activations are quantized at run time (per tensor, by DynamicQuantizeLinear), so no
//! calibration data is needed. The weights shrink to a quarter; other ops stay float.

use std::collections::{HashMap, HashSet};

use prost::Message;
use tract_onnx::pb::{self, AttributeProto, NodeProto, TensorProto};

use crate::error::ExportError;

/// A quantized ONNX model.
#[derive(Debug, Clone)]
pub struct QuantizedOnnx {
    pub bytes: Vec<u8>,
    /// Nodes that were quantized, by op type.
    pub quantized: HashMap<String, usize>,
    /// Weight bytes before and after.
    pub weight_bytes: (usize, usize),
}

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const INT8: i32 = pb::tensor_proto::DataType::Int8 as i32;

fn bad(message: impl Into<String>) -> ExportError {
    ExportError::Source(message.into())
}

/// The float values of an initializer, in C order, when it is a plain float tensor.
fn float_values(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != FLOAT || !t.external_data.is_empty() {
        return None;
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    if !t.raw_data.len().is_multiple_of(4) {
        return None;
    }
    Some(
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

fn tensor(name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type,
        raw_data: raw,
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    tensor(
        name,
        dims,
        FLOAT,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.to_owned(),
        name: name.to_owned(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: outputs.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

fn int_attr(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn float_attr(node: &NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

/// Symmetric int8 weights with one scale per slice along `axis` of `dims`.
fn quantize_weights(values: &[f32], dims: &[i64], axis: usize) -> (Vec<u8>, Vec<f32>) {
    let channels = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().map(|d| *d as usize).product();
    let channel_of = |i: usize| (i / inner.max(1)) % channels.max(1);
    let mut max_abs = vec![0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = channel_of(i);
        max_abs[c] = max_abs[c].max(v.abs());
    }
    let scales: Vec<f32> = max_abs.iter().map(|m| (m / 127.0).max(1e-12)).collect();
    let data = values
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[channel_of(i)]).round().clamp(-127.0, 127.0) as i8 as u8)
        .collect();
    (data, scales)
}

/// Quantizes `onnx` dynamically (see the module doc). Models below opset 11 are refused:
/// DynamicQuantizeLinear does not exist there.
pub fn quantize_dynamic(onnx: &[u8]) -> Result<QuantizedOnnx, ExportError> {
    let mut model =
        pb::ModelProto::decode(onnx).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    if opset < 11 {
        return Err(bad(format!(
            "the model uses ONNX opset {opset}; dynamic quantization needs opset 11 or later"
        )));
    }
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| bad("the model has no graph"))?;
    // Constants: initializers, and the outputs of Constant nodes (some exporters put weights
    // there).
    let mut initializers: HashMap<String, TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    for n in graph.node.iter().filter(|n| n.op_type == "Constant") {
        if let (Some(out), Some(t)) = (
            n.output.first(),
            n.attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.clone()),
        ) {
            initializers.insert(out.clone(), t);
        }
    }
    let mut nodes = Vec::with_capacity(graph.node.len());
    let mut added: Vec<TensorProto> = Vec::new();
    let mut quantized: HashMap<String, usize> = HashMap::new();
    let mut replaced_weights: HashSet<String> = HashSet::new();
    let (mut before, mut after) = (0usize, 0usize);
    for (index, original) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        let weight = original
            .input
            .get(1)
            .and_then(|w| initializers.get(w))
            .filter(|w| w.data_type == FLOAT);
        let plan = match (original.op_type.as_str(), weight) {
            ("Conv", Some(w)) if w.dims.len() >= 3 => Some((w, 0usize, false)),
            ("MatMul", Some(w)) if w.dims.len() == 2 => Some((w, 1, false)),
            ("Gemm", Some(w))
                if w.dims.len() == 2
                    && int_attr(&original, "transA").unwrap_or(0) == 0
                    && float_attr(&original, "alpha").unwrap_or(1.0) == 1.0
                    && float_attr(&original, "beta").unwrap_or(1.0) == 1.0 =>
            {
                Some((w, 1, int_attr(&original, "transB").unwrap_or(0) == 1))
            }
            _ => None,
        };
        let Some((w, axis, transposed)) = plan else {
            nodes.push(original);
            continue;
        };
        let Some(mut values) = float_values(w) else {
            nodes.push(original);
            continue;
        };
        let mut dims = w.dims.clone();
        if transposed {
            // Gemm with transB: B is [N, K]; MatMulInteger takes [K, N].
            let (n, k) = (dims[0] as usize, dims[1] as usize);
            let mut t = vec![0f32; values.len()];
            for r in 0..n {
                for c in 0..k {
                    t[c * n + r] = values[r * k + c];
                }
            }
            values = t;
            dims = vec![dims[1], dims[0]];
        }
        let prefix = format!(
            "{}.q{index}",
            if original.name.is_empty() {
                &original.output[0]
            } else {
                &original.name
            }
        );
        let (wq, scales) = quantize_weights(&values, &dims, axis);
        before += values.len() * 4;
        after += wq.len();
        let (wq_name, scale_name) = (format!("{prefix}.w"), format!("{prefix}.w_scale"));
        added.push(tensor(&wq_name, &dims, INT8, wq));
        let scale_dims: Vec<i64> = if original.op_type == "Conv" {
            // [1, C, 1, ...] to broadcast over NC(spatial) outputs.
            let mut d = vec![1i64; dims.len()];
            d[1] = dims[0];
            d
        } else {
            vec![dims[1]]
        };
        added.push(f32_tensor(&scale_name, &scale_dims, &scales));
        let x = original.input[0].clone();
        let (xq, xs, xzp) = (
            format!("{prefix}.xq"),
            format!("{prefix}.xs"),
            format!("{prefix}.xzp"),
        );
        nodes.push(node(
            "DynamicQuantizeLinear",
            &format!("{prefix}.dql"),
            &[&x],
            &[&xq, &xs, &xzp],
        ));
        let acc = format!("{prefix}.acc");
        let mut integer = if original.op_type == "Conv" {
            let mut n = node(
                "ConvInteger",
                &format!("{prefix}.conv"),
                &[&xq, &wq_name, &xzp],
                &[&acc],
            );
            n.attribute = original.attribute.clone();
            n
        } else {
            node(
                "MatMulInteger",
                &format!("{prefix}.matmul"),
                &[&xq, &wq_name, &xzp],
                &[&acc],
            )
        };
        integer.domain = String::new();
        nodes.push(integer);
        let accf = format!("{prefix}.accf");
        let mut cast = node("Cast", &format!("{prefix}.cast"), &[&acc], &[&accf]);
        cast.attribute.push(AttributeProto {
            name: "to".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: i64::from(FLOAT),
            ..Default::default()
        });
        nodes.push(cast);
        let scale = format!("{prefix}.scale");
        nodes.push(node(
            "Mul",
            &format!("{prefix}.scale_mul"),
            &[&xs, &scale_name],
            &[&scale],
        ));
        let bias = original.input.get(2).filter(|b| !b.is_empty()).cloned();
        let output = original.output[0].clone();
        match bias {
            None => nodes.push(node(
                "Mul",
                &format!("{prefix}.dequant"),
                &[&accf, &scale],
                &[&output],
            )),
            Some(b) => {
                let deq = format!("{prefix}.deq");
                nodes.push(node(
                    "Mul",
                    &format!("{prefix}.dequant"),
                    &[&accf, &scale],
                    &[&deq],
                ));
                let bias_input = if original.op_type == "Conv" {
                    // Conv's bias is [C]: reshaped to broadcast over [N, C, spatial...].
                    let values = initializers.get(&b).and_then(float_values).ok_or_else(|| {
                        bad(format!(
                            "{}: the bias is not a float constant",
                            original.name
                        ))
                    })?;
                    let name = format!("{prefix}.bias");
                    added.push(f32_tensor(&name, &scale_dims, &values));
                    name
                } else {
                    b
                };
                nodes.push(node(
                    "Add",
                    &format!("{prefix}.bias_add"),
                    &[&deq, &bias_input],
                    &[&output],
                ));
            }
        }
        replaced_weights.insert(w.name.clone());
        *quantized.entry(original.op_type.clone()).or_insert(0) += 1;
    }
    // Float weights that no node reads any more are dropped, with the Constant nodes that
    // made them.
    let still_read: HashSet<String> = nodes.iter().flat_map(|n| n.input.iter().cloned()).collect();
    let unread = |name: &String| replaced_weights.contains(name) && !still_read.contains(name);
    graph.initializer.retain(|t| !unread(&t.name));
    nodes.retain(|n| !(n.op_type == "Constant" && n.output.first().is_some_and(unread)));
    graph.initializer.extend(added);
    graph.node = nodes;
    if quantized.is_empty() {
        return Err(bad(
            "no Conv, MatMul or Gemm with constant float weights to quantize",
        ));
    }
    Ok(QuantizedOnnx {
        bytes: model.encode_to_vec(),
        quantized,
        weight_bytes: (before, after),
    })
}
