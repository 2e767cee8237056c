//! int8 quantization of ONNX models with only the quantized ops tract runs (see
//! `../shared/fixtures.md`: QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger and the
//! Quantize/Dequantize ops; no QLinearAdd and friends).
//!
//! - [`quantize_dynamic`]: activations quantized at run time, no calibration data.
//! - [`quantize_static`]: activation ranges measured on calibration inputs, int8 kept between
//!   consecutive convolutions.
//!
//! Both quantize every `Conv`, `MatMul` and `Gemm` whose weights are a float constant, with
//! symmetric weights per output channel in 7 bits ([-63, 63] stored as int8); other ops stay
//! float.
//!
//! Why 7 bits: the activations are uint8 and the weights int8, and onnxruntime's u8s8
//! kernels on x86 CPUs without AVX-512 VNNI (AVX2, and AVX-512 without VNNI: most x86
//! servers) add pairs of u8 x s8 products in 16 bits with saturation (`vpmaddubsw`). With
//! 8-bit weights a pair reaches 2 x 255 x 127 = 64,770 and saturates at 32,767, so the same
//! file gives other answers there (measured: max abs 1.29 on an AMD EPYC). With 7-bit
//! weights a pair is at most 2 x 255 x 63 = 32,130: exact on every CPU, which is what
//! onnxruntime's own quantizer does with `reduce_range`.

use std::collections::{HashMap, HashSet};

use prost::Message;
use tract_onnx::pb::{self, AttributeProto, NodeProto, TensorProto};

use crate::error::ExportError;

mod calibrated;
mod dynamic;

pub use calibrated::quantize_static;
pub use dynamic::quantize_dynamic;

/// A quantized ONNX model.
#[derive(Debug, Clone)]
pub struct QuantizedOnnx {
    pub bytes: Vec<u8>,
    /// Nodes that were quantized, by op type.
    pub quantized: HashMap<String, usize>,
    /// Weight bytes before and after.
    pub weight_bytes: (usize, usize),
    /// For static quantization: how many calibration inputs set the activation ranges.
    pub calibration_samples: usize,
}

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const INT8: i32 = pb::tensor_proto::DataType::Int8 as i32;
const UINT8: i32 = pb::tensor_proto::DataType::Uint8 as i32;
const INT32: i32 = pb::tensor_proto::DataType::Int32 as i32;

fn bad(message: impl Into<String>) -> ExportError {
    ExportError::Source(message.into())
}

/// Decodes `onnx` and checks that its default-domain opset is at least `min_opset`, which the
/// ops `mode` emits need.
fn decode(onnx: &[u8], min_opset: i64, mode: &str) -> Result<pb::ModelProto, ExportError> {
    let model = pb::ModelProto::decode(onnx).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    if opset < min_opset {
        return Err(bad(format!(
            "the model uses ONNX opset {opset}; {mode} quantization needs opset {min_opset} or later"
        )));
    }
    if model.graph.is_none() {
        return Err(bad("the model has no graph"));
    }
    Ok(model)
}

/// The graph's constants by name: initializers, and the outputs of Constant nodes (some
/// exporters put weights there).
fn constants(graph: &pb::GraphProto) -> HashMap<String, TensorProto> {
    let mut constants: HashMap<String, TensorProto> = graph
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
            constants.insert(out.clone(), t);
        }
    }
    constants
}

/// The float values of a constant, in C order, when it is a plain float tensor whose value
/// count matches its dims.
fn float_values(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != FLOAT || !t.external_data.is_empty() {
        return None;
    }
    let values: Vec<f32> = if !t.float_data.is_empty() {
        t.float_data.clone()
    } else if t.raw_data.len().is_multiple_of(4) {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        return None;
    };
    // Hostile dims must not overflow (or panic) on the way.
    let count = t
        .dims
        .iter()
        .try_fold(1i64, |n, d| if *d < 0 { None } else { n.checked_mul(*d) })?;
    (usize::try_from(count).ok() == Some(values.len())).then_some(values)
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

fn cast_to_float(name: &str, input: &str, output: &str) -> NodeProto {
    let mut cast = node("Cast", name, &[input], &[output]);
    cast.attribute.push(AttributeProto {
        name: "to".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: i64::from(FLOAT),
        ..Default::default()
    });
    cast
}

/// A `Conv`, `MatMul` or `Gemm` node whose weights are a float constant, with the weights as
/// the integer op takes them: `[O, I/group, k...]` for Conv, `[K, N]` for the matrix products
/// (a Gemm's `transB` undone).
struct Weighted {
    values: Vec<f32>,
    dims: Vec<i64>,
    /// The output-channel axis of `dims`.
    axis: usize,
}

/// The weights of `node` when it is a Conv, MatMul or plain Gemm (no transA, alpha and beta
/// 1) with constant float weights.
fn weighted(node: &NodeProto, constants: &HashMap<String, TensorProto>) -> Option<Weighted> {
    let w = node
        .input
        .get(1)
        .and_then(|w| constants.get(w))
        .filter(|w| w.data_type == FLOAT)?;
    let (axis, transposed) = match node.op_type.as_str() {
        "Conv" if w.dims.len() >= 3 => (0usize, false),
        "MatMul" if w.dims.len() == 2 => (1, false),
        "Gemm"
            if w.dims.len() == 2
                && int_attr(node, "transA").unwrap_or(0) == 0
                && float_attr(node, "alpha").unwrap_or(1.0) == 1.0
                && float_attr(node, "beta").unwrap_or(1.0) == 1.0 =>
        {
            (1, int_attr(node, "transB").unwrap_or(0) == 1)
        }
        _ => return None,
    };
    let mut values = float_values(w)?;
    let mut dims = w.dims.clone();
    if dims.iter().any(|d| *d <= 0) {
        return None;
    }
    if transposed {
        // Gemm with transB: B is [N, K]; the integer ops take [K, N].
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
    Some(Weighted { values, dims, axis })
}

/// A name prefix for the nodes and tensors that replace `node`.
fn prefix(node: &NodeProto, index: usize) -> String {
    let base = if node.name.is_empty() {
        node.output.first().map_or("node", String::as_str)
    } else {
        &node.name
    };
    format!("{base}.q{index}")
}

/// The largest weight magnitude: 7 bits (see the module docs).
pub(crate) const WEIGHT_LEVELS: u8 = 63;

/// Symmetric 7-bit weights (as int8) with one scale per slice along `axis` of `dims`.
fn quantize_weights(values: &[f32], dims: &[i64], axis: usize) -> (Vec<u8>, Vec<f32>) {
    let channels = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().map(|d| *d as usize).product();
    crate::int8::symmetric_per_channel(values, channels, inner, WEIGHT_LEVELS)
}

/// Replaces the graph's nodes with `nodes` and adds the `added` initializers. Constants that
/// no node reads any more (the float weights that were replaced) are dropped, initializers
/// and Constant nodes alike, unless they are graph inputs or outputs.
fn install(graph: &mut pb::GraphProto, mut nodes: Vec<NodeProto>, added: Vec<TensorProto>) {
    let kept: HashSet<String> = nodes
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.input.iter().map(|i| i.name.clone()))
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    graph.initializer.retain(|t| kept.contains(&t.name));
    nodes.retain(|n| !(n.op_type == "Constant" && n.output.iter().all(|o| !kept.contains(o))));
    graph.initializer.extend(added);
    graph.node = nodes;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_quantized_per_output_channel() {
        // Two output channels of very different magnitude keep their own scale.
        let (q, scales) = quantize_weights(&[1.0, -0.5, 100.0, 50.0], &[2, 2], 0);
        assert_eq!(scales, vec![1.0 / 63.0, 100.0 / 63.0]);
        assert_eq!(q, vec![63, (-31i8) as u8, 63, 32]);
        // Along axis 1 ([K, N] matrices), columns share a scale.
        let (_, scales) = quantize_weights(&[1.0, 100.0, -2.0, 50.0], &[2, 2], 1);
        assert_eq!(scales, vec![2.0 / 63.0, 100.0 / 63.0]);
    }

    #[test]
    fn no_pair_of_uint8_by_weight_products_can_saturate_16_bits() {
        // The u8s8 kernels without VNNI add two u8 x s8 products in an i16 with saturation:
        // the largest weights must keep the worst pair inside it.
        let (q, _) = quantize_weights(&[-3.0, 3.0, 1e30, -1e30, 0.5, -0.25], &[3, 2], 0);
        let widest = q
            .iter()
            .map(|b| i32::from((*b as i8).unsigned_abs()))
            .max()
            .unwrap();
        assert!(
            2 * 255 * widest <= i32::from(i16::MAX),
            "weights up to {widest}"
        );
    }

    #[test]
    fn truncated_float_constants_are_not_weights() {
        let mut t = f32_tensor("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(float_values(&t).map(|v| v.len()), Some(4));
        t.raw_data.truncate(8);
        assert_eq!(float_values(&t), None);
        // float_data of the wrong length, hostile dims: not weights, and no panic.
        let mut t = f32_tensor("w", &[2, 3], &[]);
        t.raw_data.clear();
        t.float_data = vec![1.0; 5];
        assert_eq!(float_values(&t), None);
        t.dims = vec![i64::MAX, 4];
        assert_eq!(float_values(&t), None);
        t.dims = vec![-1, -5];
        assert_eq!(float_values(&t), None);
    }
}
