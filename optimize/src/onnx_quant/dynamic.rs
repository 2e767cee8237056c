//! Dynamic quantization: every weighted node becomes
//!
//! ```text
//! x -> DynamicQuantizeLinear -> ConvInteger | MatMulInteger (int8 weights, per output channel)
//!   -> Cast(float) -> Mul(x_scale * weight_scales) [-> Add(bias)]
//! ```
//!
//! Activations are quantized at run time (per tensor, by DynamicQuantizeLinear), so no
//! calibration data is needed. The weights shrink to a quarter; other ops stay float.

use std::collections::HashMap;

use prost::Message;
use tract_onnx::pb::TensorProto;

use super::{
    INT8, QuantizedOnnx, bad, cast_to_float, constants, decode, f32_tensor, float_values, install,
    node, prefix, quantize_weights, tensor, weighted,
};
use crate::error::ExportError;

/// Quantizes `onnx` dynamically (see the module doc). Models below opset 11 are refused:
/// DynamicQuantizeLinear does not exist there.
pub fn quantize_dynamic(onnx: &[u8]) -> Result<QuantizedOnnx, ExportError> {
    let mut model = decode(onnx, 11, "dynamic")?;
    let Some(graph) = model.graph.as_mut() else {
        return Err(bad("the model has no graph"));
    };
    let initializers = constants(graph);
    let mut nodes = Vec::with_capacity(graph.node.len());
    let mut added: Vec<TensorProto> = Vec::new();
    let mut quantized: HashMap<String, usize> = HashMap::new();
    let (mut before, mut after) = (0usize, 0usize);
    for (index, original) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        let Some(w) = weighted(&original, &initializers) else {
            nodes.push(original);
            continue;
        };
        let prefix = prefix(&original, index);
        let (wq, scales) = quantize_weights(&w.values, &w.dims, w.axis);
        before += w.values.len() * 4;
        after += wq.len();
        let (wq_name, scale_name) = (format!("{prefix}.w"), format!("{prefix}.w_scale"));
        added.push(tensor(&wq_name, &w.dims, INT8, wq));
        let conv = original.op_type == "Conv";
        let scale_dims: Vec<i64> = if conv {
            // [1, C, 1, ...] to broadcast over NC(spatial) outputs.
            let mut d = vec![1i64; w.dims.len()];
            d[1] = w.dims[0];
            d
        } else {
            vec![w.dims[1]]
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
        if conv {
            let mut n = node(
                "ConvInteger",
                &format!("{prefix}.conv"),
                &[&xq, &wq_name, &xzp],
                &[&acc],
            );
            n.attribute = original.attribute.clone();
            nodes.push(n);
        } else {
            nodes.push(node(
                "MatMulInteger",
                &format!("{prefix}.matmul"),
                &[&xq, &wq_name, &xzp],
                &[&acc],
            ));
        }
        let accf = format!("{prefix}.accf");
        nodes.push(cast_to_float(&format!("{prefix}.cast"), &acc, &accf));
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
                let bias_input = if conv {
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
        *quantized.entry(original.op_type.clone()).or_insert(0) += 1;
    }
    if quantized.is_empty() {
        return Err(bad(
            "no Conv, MatMul or Gemm with constant float weights to quantize",
        ));
    }
    install(graph, nodes, added);
    Ok(QuantizedOnnx {
        bytes: model.encode_to_vec(),
        quantized,
        weight_bytes: (before, after),
        calibration_samples: 0,
    })
}
