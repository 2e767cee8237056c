//! Static quantization: activation ranges are measured by running the float model in tract on
//! calibration inputs, and every weighted node becomes
//!
//! ```text
//! x -> QuantizeLinear (uint8, per tensor) -> QLinearConv | QLinearMatMul (int8 weights per
//!   output channel, int32 bias) -> DequantizeLinear -> float ops ...
//! ```
//!
//! Where the quantized output of one such node is the input of the next, the
//! DequantizeLinear/QuantizeLinear pair between them is left out, so chains of convolutions
//! stay in int8. A `Relu` that is a convolution's only reader is folded into it: its output
//! range starts at 0, so the requantization clamps negatives. Before that, inference-mode
//! `BatchNormalization` is folded into the convolution it follows (so that one int8 node does
//! both), and a `Gemm` becomes `MatMul` (and `Add` for its bias), since QLinearMatMul has no
//! bias.

use std::collections::{HashMap, HashSet};

use prost::Message;
use tract_onnx::pb::{self, NodeProto, TensorProto, ValueInfoProto};
use tract_onnx::prelude::*;

use super::{
    INT8, INT32, QuantizedOnnx, UINT8, bad, constants, decode, f32_tensor, float_values, install,
    node, prefix, quantize_weights, tensor, weighted,
};
use crate::error::ExportError;
use crate::guard::guarded;
use crate::npy::Array;
use crate::source::{InputShapes, typed_onnx};

/// The float range of a tensor, as uint8 affine parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Affine {
    scale: f32,
    zero_point: u8,
}

impl Affine {
    /// uint8 parameters covering `[lo, hi]`, widened to hold 0 exactly (zero padding and
    /// ReLU outputs must stay exact).
    fn covering(lo: f32, hi: f32) -> Affine {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = ((hi - lo) / 255.0).max(1e-8);
        let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        Affine { scale, zero_point }
    }
}

/// A weighted node to quantize, and the tensor its quantized output stands for: its own
/// output, or the output of the Relu folded into it.
struct Plan {
    index: usize,
    weights: super::Weighted,
    output: String,
    folded_relu: Option<usize>,
}

/// Quantizes `onnx` statically (see the module doc), calibrating activations on
/// `calibration`: float32 arrays in the shape of the model's single input (fixed by `shapes`,
/// or the model's own shape with batch 1), or stacks of them. Models below opset 10 are
/// refused: QLinearConv does not exist there.
pub fn quantize_static(
    onnx: &[u8],
    shapes: &InputShapes,
    calibration: &[Array],
) -> Result<QuantizedOnnx, ExportError> {
    let mut model = decode(onnx, 10, "static")?;
    let Some(graph) = model.graph.as_mut() else {
        return Err(bad("the model has no graph"));
    };
    fold_batch_norms(graph);
    gemm_to_matmul(graph);
    let consts = constants(graph);
    let plans = plan(graph, &consts);
    if plans.is_empty() {
        return Err(bad(
            "no Conv, MatMul or Gemm with constant float weights to quantize",
        ));
    }
    let mut watched: Vec<String> = Vec::new();
    for p in &plans {
        for name in [&graph.node[p.index].input[0], &p.output] {
            if !watched.contains(name) {
                watched.push(name.clone());
            }
        }
    }
    let (ranges, samples) = calibrate(&model, shapes, &watched, calibration)?;
    let Some(graph) = model.graph.as_mut() else {
        return Err(bad("the model has no graph"));
    };
    let mut rewrite = Rewrite {
        ranges,
        consts,
        quantized: HashMap::new(),
        nodes: Vec::with_capacity(graph.node.len()),
        added: Vec::new(),
    };
    let folded: HashSet<usize> = plans.iter().filter_map(|p| p.folded_relu).collect();
    let mut plans = plans.into_iter().peekable();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let (mut before, mut after) = (0usize, 0usize);
    for (index, original) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        if folded.contains(&index) {
            continue;
        }
        let Some(p) = plans.next_if(|p| p.index == index) else {
            rewrite.nodes.push(original);
            continue;
        };
        before += p.weights.values.len() * 4;
        after += p.weights.values.len();
        rewrite.node(&original, index, &p.weights, &p.output)?;
        *counts.entry(original.op_type.clone()).or_insert(0) += 1;
    }
    let graph_outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let nodes = prune_unread_dequantize(rewrite.nodes, &graph_outputs);
    install(graph, nodes, rewrite.added);
    let bytes = model.encode_to_vec();
    check_runs(&bytes, shapes, &samples[0])?;
    Ok(QuantizedOnnx {
        bytes,
        quantized: counts,
        weight_bytes: (before, after),
        calibration_samples: samples.len(),
    })
}

/// Folds every inference-mode `BatchNormalization` whose input is a weighted `Conv` read by
/// nothing else into that convolution's weights and bias:
/// `w' = w·γ/√(σ²+ε)` per output channel, `b' = (b−μ)·γ/√(σ²+ε) + β`.
fn fold_batch_norms(graph: &mut pb::GraphProto) {
    let consts = constants(graph);
    let mut readers: HashMap<String, usize> = HashMap::new();
    for n in &graph.node {
        for input in &n.input {
            *readers.entry(input.clone()).or_insert(0) += 1;
        }
    }
    let graph_outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let producer: HashMap<String, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i)))
        .collect();
    let mut folded: HashSet<usize> = HashSet::new();
    let mut edits: Vec<(usize, String, TensorProto, TensorProto)> = Vec::new();
    for (index, bn) in graph.node.iter().enumerate() {
        if bn.op_type != "BatchNormalization" || bn.input.len() != 5 || bn.output.len() != 1 {
            continue;
        }
        let Some(&conv_index) = producer.get(&bn.input[0]) else {
            continue;
        };
        let conv = &graph.node[conv_index];
        if conv.op_type != "Conv"
            || readers.get(&bn.input[0]) != Some(&1)
            || graph_outputs.contains(&bn.input[0])
        {
            continue;
        }
        let Some(w) = weighted(conv, &consts) else {
            continue;
        };
        let channels = w.dims[0] as usize;
        let param = |i: usize| {
            consts
                .get(&bn.input[i])
                .and_then(float_values)
                .filter(|v| v.len() == channels)
        };
        let (Some(gamma), Some(beta), Some(mean), Some(var)) =
            (param(1), param(2), param(3), param(4))
        else {
            continue;
        };
        let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match consts
                .get(b)
                .and_then(float_values)
                .filter(|v| v.len() == channels)
            {
                Some(values) => values,
                None => continue,
            },
            None => vec![0.0; channels],
        };
        let epsilon = super::float_attr(bn, "epsilon").unwrap_or(1e-5);
        let factor: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + epsilon).sqrt())
            .collect();
        let per_channel = w.values.len() / channels;
        let weights: Vec<f32> = w
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| v * factor[i / per_channel])
            .collect();
        let bias: Vec<f32> = (0..channels)
            .map(|c| (bias[c] - mean[c]) * factor[c] + beta[c])
            .collect();
        let prefix = prefix(conv, conv_index);
        edits.push((
            conv_index,
            bn.output[0].clone(),
            f32_tensor(&format!("{prefix}.bn_w"), &w.dims, &weights),
            f32_tensor(&format!("{prefix}.bn_b"), &[channels as i64], &bias),
        ));
        folded.insert(index);
    }
    for (conv_index, output, weights, bias) in edits {
        let conv = &mut graph.node[conv_index];
        conv.input.truncate(1);
        conv.input.push(weights.name.clone());
        conv.input.push(bias.name.clone());
        conv.output[0] = output;
        graph.initializer.push(weights);
        graph.initializer.push(bias);
    }
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        !folded.contains(&(index - 1))
    });
}

/// Rewrites every `Gemm` that [`weighted`] accepts as `MatMul` with `[K, N]` weights,
/// followed by `Add` when it has a bias, so that its product is a tensor of its own to
/// calibrate and quantize.
fn gemm_to_matmul(graph: &mut pb::GraphProto) {
    let consts = constants(graph);
    let mut nodes = Vec::with_capacity(graph.node.len());
    for (index, n) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        let w = (n.op_type == "Gemm")
            .then(|| weighted(&n, &consts))
            .flatten();
        let (Some(w), Some(output)) = (w, n.output.first()) else {
            nodes.push(n);
            continue;
        };
        let prefix = prefix(&n, index);
        let weights = format!("{prefix}.kn");
        graph
            .initializer
            .push(f32_tensor(&weights, &w.dims, &w.values));
        match n.input.get(2).filter(|b| !b.is_empty()) {
            None => nodes.push(node(
                "MatMul",
                &format!("{prefix}.matmul"),
                &[&n.input[0], &weights],
                &[output],
            )),
            Some(bias) => {
                let product = format!("{prefix}.product");
                nodes.push(node(
                    "MatMul",
                    &format!("{prefix}.matmul"),
                    &[&n.input[0], &weights],
                    &[&product],
                ));
                nodes.push(node(
                    "Add",
                    &format!("{prefix}.bias"),
                    &[&product, bias],
                    &[output],
                ));
            }
        }
    }
    graph.node = nodes;
}

/// The weighted nodes to quantize, in graph order, with the Relu each may absorb.
fn plan(graph: &pb::GraphProto, consts: &HashMap<String, TensorProto>) -> Vec<Plan> {
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for input in &n.input {
            readers.entry(input.as_str()).or_default().push(i);
        }
    }
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut plans = Vec::new();
    for (index, n) in graph.node.iter().enumerate() {
        let (Some(x), Some(output)) = (n.input.first(), n.output.first()) else {
            continue;
        };
        // A constant input is not an activation.
        if consts.contains_key(x) {
            continue;
        }
        if grouped(n) {
            continue;
        }
        let Some(weights) = weighted(n, consts) else {
            continue;
        };
        let folded_relu = match readers.get(output.as_str()).map(Vec::as_slice) {
            Some([r]) if n.op_type == "Conv" && !graph_outputs.contains(output.as_str()) => {
                let reader = &graph.node[*r];
                (reader.op_type == "Relu" && reader.output.len() == 1).then_some(*r)
            }
            _ => None,
        };
        let output = match folded_relu {
            Some(r) => graph.node[r].output[0].clone(),
            None => output.clone(),
        };
        plans.push(Plan {
            index,
            weights,
            output,
            folded_relu,
        });
    }
    plans
}

/// A grouped (depthwise) convolution. Static mode leaves these float: tract runs a quantized
/// grouped convolution as an im2col and a matrix product per group, many times slower than
/// its float depthwise kernel, and depthwise kernels (few weights per channel, large after
/// batch-norm folding) are where int8 loses most accuracy.
fn grouped(n: &NodeProto) -> bool {
    n.op_type == "Conv" && super::int_attr(n, "group").unwrap_or(1) > 1
}

/// Runs the float model on every calibration sample with each `watched` tensor made an
/// output, and returns their ranges as uint8 parameters, with the samples.
fn calibrate(
    model: &pb::ModelProto,
    shapes: &InputShapes,
    watched: &[String],
    calibration: &[Array],
) -> Result<(HashMap<String, Affine>, Vec<Tensor>), ExportError> {
    let failed = |e: TractError| ExportError::Calibration(format!("{e:#}"));
    let mut probe = model.clone();
    let Some(graph) = probe.graph.as_mut() else {
        return Err(bad("the model has no graph"));
    };
    let inputs: Vec<String> = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .filter(|name| !graph.initializer.iter().any(|t| &t.name == name))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(ExportError::Calibration(format!(
            "the model has {} inputs; calibration takes single-input models",
            inputs.len()
        )));
    };
    let first_probe = graph.output.len();
    let mut probes: Vec<&String> = Vec::new();
    for name in watched.iter().filter(|n| *n != input) {
        if let Some(at) = graph.output.iter().position(|o| &o.name == name) {
            // Already an output: read it there.
            graph.output.push(graph.output[at].clone());
        } else {
            graph.output.push(ValueInfoProto {
                name: name.clone(),
                ..Default::default()
            });
        }
        probes.push(name);
    }
    let typed = typed_onnx(&probe.encode_to_vec(), shapes)?;
    let shape: Vec<usize> = typed
        .input_fact(0)
        .ok()
        .and_then(|f| f.shape.as_concrete().map(<[usize]>::to_vec))
        .ok_or_else(|| ExportError::Calibration("the model's input shape is not fixed".into()))?;
    let samples = crate::calibration::samples(input, &shape, calibration)?;
    let runnable =
        guarded(|| typed.into_optimized().and_then(|m| m.into_runnable())).map_err(failed)?;
    let mut lo_hi: HashMap<String, (f32, f32)> = HashMap::new();
    let mut widen = |name: &str, t: &Tensor| -> Result<(), ExportError> {
        let view = t.to_plain_array_view::<f32>().map_err(failed)?;
        let (lo, hi) = view
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        let entry = lo_hi.entry(name.to_owned()).or_insert((lo, hi));
        entry.0 = entry.0.min(lo);
        entry.1 = entry.1.max(hi);
        Ok(())
    };
    for sample in &samples {
        widen(input, sample)?;
        let outputs =
            guarded(|| runnable.run(tvec!(sample.clone().into_tvalue()))).map_err(failed)?;
        for (name, value) in probes.iter().zip(outputs.iter().skip(first_probe)) {
            widen(name, value)?;
        }
    }
    let ranges = lo_hi
        .into_iter()
        .map(|(name, (lo, hi))| {
            let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
            (name, Affine::covering(lo, hi))
        })
        .collect();
    Ok((ranges, samples))
}

/// A tensor in uint8: the tensor and the names of its scale and zero point.
#[derive(Clone)]
struct Quantized {
    values: String,
    scale: String,
    zero_point: String,
    affine: Affine,
}

/// The node list being rewritten.
struct Rewrite {
    ranges: HashMap<String, Affine>,
    consts: HashMap<String, TensorProto>,
    /// Float tensors that already exist in uint8, by float name.
    quantized: HashMap<String, Quantized>,
    nodes: Vec<NodeProto>,
    added: Vec<TensorProto>,
}

impl Rewrite {
    fn affine(&self, name: &str) -> Result<Affine, ExportError> {
        self.ranges
            .get(name)
            .copied()
            .ok_or_else(|| ExportError::Calibration(format!("no range was measured for {name:?}")))
    }

    /// The uint8 parameters of `name` as constants, declared once.
    fn parameters(&mut self, name: &str) -> Result<Quantized, ExportError> {
        let affine = self.affine(name)?;
        let (scale, zero_point) = (format!("{name}.aq_scale"), format!("{name}.aq_zero_point"));
        self.added.push(f32_tensor(&scale, &[], &[affine.scale]));
        self.added
            .push(tensor(&zero_point, &[], UINT8, vec![affine.zero_point]));
        Ok(Quantized {
            values: format!("{name}.aq_u8"),
            scale,
            zero_point,
            affine,
        })
    }

    /// `name` in uint8: the output of an earlier quantized node, or a new QuantizeLinear.
    fn input(&mut self, name: &str) -> Result<Quantized, ExportError> {
        if let Some(q) = self.quantized.get(name) {
            return Ok(q.clone());
        }
        let q = self.parameters(name)?;
        self.nodes.push(node(
            "QuantizeLinear",
            &format!("{name}.aq_quantize"),
            &[name, &q.scale, &q.zero_point],
            &[&q.values],
        ));
        self.quantized.insert(name.to_owned(), q.clone());
        Ok(q)
    }

    /// Emits the quantized form of `original` (whose weights are `w`), standing for the float
    /// tensor `output`, and a DequantizeLinear back to `output` for float readers.
    fn node(
        &mut self,
        original: &NodeProto,
        index: usize,
        w: &super::Weighted,
        output: &str,
    ) -> Result<(), ExportError> {
        let prefix = prefix(original, index);
        let x = self.input(&original.input[0])?;
        let y = self.parameters(output)?;
        let (wq, scales) = quantize_weights(&w.values, &w.dims, w.axis);
        let channels = scales.len();
        let (w_name, w_scale, w_zero) = (
            format!("{prefix}.w"),
            format!("{prefix}.w_scale"),
            format!("{prefix}.w_zero_point"),
        );
        self.added.push(tensor(&w_name, &w.dims, INT8, wq));
        self.added
            .push(f32_tensor(&w_scale, &[channels as i64], &scales));
        self.added
            .push(tensor(&w_zero, &[channels as i64], INT8, vec![0; channels]));
        let mut inputs: Vec<String> = vec![
            x.values.clone(),
            x.scale.clone(),
            x.zero_point.clone(),
            w_name,
            w_scale,
            w_zero,
            y.scale.clone(),
            y.zero_point.clone(),
        ];
        let mut q = if original.op_type == "Conv" {
            if let Some(bias) = original.input.get(2).filter(|b| !b.is_empty()) {
                let values = self
                    .consts
                    .get(bias)
                    .and_then(float_values)
                    .filter(|v| v.len() == channels)
                    .ok_or_else(|| {
                        bad(format!(
                            "{}: the bias is not a float constant of {channels} values",
                            original.name
                        ))
                    })?;
                // int32 at the accumulator's scale, x_scale * w_scale[c].
                let raw: Vec<u8> = values
                    .iter()
                    .zip(&scales)
                    .flat_map(|(b, s)| {
                        let q = (f64::from(*b) / (f64::from(x.affine.scale) * f64::from(*s)))
                            .round()
                            .clamp(f64::from(i32::MIN), f64::from(i32::MAX));
                        (q as i32).to_le_bytes()
                    })
                    .collect();
                let name = format!("{prefix}.bias_i32");
                self.added
                    .push(tensor(&name, &[channels as i64], INT32, raw));
                inputs.push(name);
            }
            let mut n = node("QLinearConv", &format!("{prefix}.conv"), &[], &[&y.values]);
            n.attribute = original.attribute.clone();
            n
        } else {
            node(
                "QLinearMatMul",
                &format!("{prefix}.matmul"),
                &[],
                &[&y.values],
            )
        };
        q.input = inputs;
        self.nodes.push(q);
        self.nodes.push(node(
            "DequantizeLinear",
            &format!("{output}.aq_dequantize"),
            &[&y.values, &y.scale, &y.zero_point],
            &[output],
        ));
        self.quantized.insert(output.to_owned(), y);
        Ok(())
    }
}

/// Drops the DequantizeLinear nodes whose float output nobody reads (every reader took the
/// uint8 tensor directly).
fn prune_unread_dequantize(
    nodes: Vec<NodeProto>,
    graph_outputs: &HashSet<String>,
) -> Vec<NodeProto> {
    let read: HashSet<String> = nodes
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph_outputs.iter().cloned())
        .collect();
    nodes
        .into_iter()
        .filter(|n| {
            !(n.op_type == "DequantizeLinear"
                && n.name.ends_with(".aq_dequantize")
                && n.output.iter().all(|o| !read.contains(o)))
        })
        .collect()
}

/// Loads the quantized model in tract, as `aq serve` would, and runs it once.
fn check_runs(bytes: &[u8], shapes: &InputShapes, sample: &Tensor) -> Result<(), ExportError> {
    let broken = |e: TractError| {
        ExportError::Mismatch(format!("tract cannot run the quantized model: {e:#}"))
    };
    let typed = typed_onnx(bytes, shapes)?;
    guarded(|| {
        typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .and_then(|plan| plan.run(tvec!(sample.clone().into_tvalue())))
    })
    .map_err(broken)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_zero_exactly() {
        let a = Affine::covering(0.0, 6.0);
        assert_eq!(a.zero_point, 0);
        assert!((a.scale - 6.0 / 255.0).abs() < 1e-9);
        let b = Affine::covering(-1.0, 3.0);
        assert_eq!(b.zero_point, 64);
        // An all-positive range still includes 0, and an empty one does not divide by 0.
        assert_eq!(Affine::covering(2.0, 4.0).zero_point, 0);
        assert!(Affine::covering(0.0, 0.0).scale > 0.0);
        // A negative range maps 0 to the top code.
        assert_eq!(Affine::covering(-5.0, -1.0).zero_point, 255);
    }
}
