//! ONNX to TFLite: tract types and declutters the ONNX graph, rewrites it for TFLite (NCHW
//! convolutions and pools to NHWC, kernels to OHWI, padding made explicit) and writes the fp32
//! flatbuffer; [`export_int8`] then quantizes that file (see [`quantize`]) with ranges measured
//! by running the same rewritten graph on calibration inputs.
//!
//! tract's writer stops at the first op it cannot write, and for a few ops it writes something
//! LiteRT computes differently (it writes `Rsqrt` as `SQRT`) or panics (`todo!`). So this pass
//! first checks every op of the rewritten graph against [`SUPPORTED`], the ops whose
//! translation our LiteRT tests cover, and lists all that fail at once. The write runs under
//! `catch_unwind`, and the written file is read back with tract and run against the source
//! model before it is returned.

use std::collections::BTreeMap;

use tract_onnx::prelude::*;

use crate::error::{ExportError, UnsupportedOp};
use crate::guard::guarded;
use crate::source::{InputShapes, typed_onnx};

mod fuse;
mod graph;
mod prepare;
pub mod quantize;
mod transposes;

/// One tensor of the exported model's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSig {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
}

/// An exported TFLite model.
#[derive(Debug, Clone)]
pub struct Exported {
    pub bytes: Vec<u8>,
    pub inputs: Vec<TensorSig>,
    pub outputs: Vec<TensorSig>,
    /// The TFLite ops of the written file (`CONV_2D`, ...), with their counts.
    pub ops: BTreeMap<String, usize>,
    /// Largest absolute difference between tract running the source model and tract running
    /// the written fp32 file, on one seeded pseudo-random input.
    pub self_check_max_abs: f32,
    /// For int8: the size of the fp32 file it was quantized from.
    pub fp32_bytes: Option<usize>,
    /// For int8: how many calibration inputs set the activation ranges.
    pub calibration_samples: usize,
}

/// Exports an ONNX model to TFLite fp32.
pub fn export(onnx: &[u8], shapes: &InputShapes) -> Result<Exported, ExportError> {
    Ok(export_fp32(onnx, shapes, Use::Float)?.0)
}

/// Exports a single-input ONNX model to full-integer int8 TFLite, calibrated on `calibration`:
/// arrays in the export's fixed input shape, or stacks of them (`[N, ...]` for an input of
/// batch 1). Inputs and outputs stay float.
pub fn export_int8(
    onnx: &[u8],
    shapes: &InputShapes,
    calibration: &[crate::npy::Array],
) -> Result<Exported, ExportError> {
    let (fp32, rewritten) = export_fp32(onnx, shapes, Use::Int8)?;
    let samples = samples_for(&fp32.inputs, calibration)?;
    let ranges = calibrate(&rewritten, &samples)?;
    let bytes = quantize::quantize(&fp32.bytes, &ranges)?;
    let ops = tflite_ops(&bytes)?;
    Ok(Exported {
        ops,
        fp32_bytes: Some(fp32.bytes.len()),
        calibration_samples: samples.len(),
        bytes,
        ..fp32
    })
}

/// The fp32 export, and the rewritten tract graph it was written from (its outlet labels
/// are the TFLite tensor names).
/// What an fp32 export is for: the op fusions that pay off differ (see [`fuse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Float,
    Int8,
}

fn export_fp32(
    onnx: &[u8],
    shapes: &InputShapes,
    usage: Use,
) -> Result<(Exported, TypedModel), ExportError> {
    let source = typed_onnx(onnx, shapes)?;
    let mut typed = source.clone();
    guarded(|| prepare::prepare(&mut typed))
        .map_err(|e| ExportError::Unsupported(vec![rewrite_failure(&e)]))?;
    let mut rewritten = typed.clone();
    guarded(|| tract_tflite::rewriter::rewrite_for_tflite(&mut rewritten))
        .map_err(|e| ExportError::Unsupported(vec![rewrite_failure(&e)]))?;
    guarded(|| prepare::fold_axis_ops_on_constants(&mut rewritten))
        .map_err(|e| ExportError::Write(format!("{e:#}")))?;
    prepare::label_every_outlet(&mut rewritten)
        .map_err(|e| ExportError::Write(format!("{e:#}")))?;
    let unsupported = unsupported_ops(&rewritten);
    if !unsupported.is_empty() {
        return Err(ExportError::Unsupported(unsupported));
    }
    let mut bytes = Vec::new();
    guarded(|| tract_tflite::tflite().write(&rewritten, &mut bytes))
        .map_err(|e| ExportError::Write(format!("{e:#}")))?;
    let mut graph = graph::Graph::read(&bytes)?;
    transposes::cancel_round_trips(&mut graph);
    transposes::remove_layout_regions(&mut graph);
    fuse::fuse(&mut graph, usage == Use::Float);
    // Always written again: our writer also shares the buffers of identical constants.
    bytes = graph.write();
    let self_check_max_abs = self_check(&source, &bytes)?;
    let ops = tflite_ops(&bytes)?;
    let exported = Exported {
        bytes,
        inputs: signature(&typed, typed.input_outlets())?,
        outputs: signature(&typed, typed.output_outlets())?,
        ops,
        self_check_max_abs,
        fp32_bytes: None,
        calibration_samples: 0,
    };
    Ok((exported, rewritten))
}

/// Splits calibration arrays into one-tensor samples for the model's single input.
fn samples_for(
    inputs: &[TensorSig],
    arrays: &[crate::npy::Array],
) -> Result<Vec<Vec<Tensor>>, ExportError> {
    let [input] = inputs else {
        return Err(ExportError::Calibration(format!(
            "the model has {} inputs; calibration takes single-input models",
            inputs.len()
        )));
    };
    Ok(
        crate::calibration::samples(&input.name, &input.shape, arrays)?
            .into_iter()
            .map(|t| vec![t])
            .collect(),
    )
}

/// Runs `model` on every sample and records each labelled outlet's float range.
fn calibrate(model: &TypedModel, samples: &[Vec<Tensor>]) -> Result<quantize::Ranges, ExportError> {
    let calibration = |e: TractError| ExportError::Calibration(format!("{e:#}"));
    let input_facts: Vec<TypedFact> = model
        .input_outlets()
        .map_err(calibration)?
        .iter()
        .map(|o| model.outlet_fact(*o).cloned())
        .collect::<TractResult<_>>()
        .map_err(calibration)?;
    let plan = guarded(|| tract_onnx::tract_core::plan::SimplePlan::new(model.clone()))
        .map_err(calibration)?;
    let mut state =
        guarded(|| tract_onnx::tract_core::plan::SimpleState::new(&plan)).map_err(calibration)?;
    let mut ranges = quantize::Ranges::new();
    for (n, sample) in samples.iter().enumerate() {
        if sample.len() != input_facts.len() {
            return Err(ExportError::Calibration(format!(
                "sample {n} has {} tensors; the model has {} inputs",
                sample.len(),
                input_facts.len()
            )));
        }
        for (t, fact) in sample.iter().zip(&input_facts) {
            let want = fact.shape.as_concrete().unwrap_or(&[]);
            if t.shape() != want {
                return Err(ExportError::Calibration(format!(
                    "sample {n} has shape {:?}; the model takes {want:?}",
                    t.shape()
                )));
            }
        }
        let inputs: TVec<TValue> = sample.iter().map(|t| t.clone().into_tvalue()).collect();
        for (outlet, t) in model
            .input_outlets()
            .map_err(calibration)?
            .iter()
            .zip(sample)
        {
            record(&mut ranges, model, *outlet, t);
        }
        let result = guarded(|| {
            state.run_plan_with_eval(inputs, |session, op_state, node, input| {
                let outputs = tract_onnx::tract_core::plan::eval(session, op_state, node, input)?;
                for (slot, value) in outputs.iter().enumerate() {
                    record(&mut ranges, model, OutletId::new(node.id, slot), value);
                }
                Ok::<_, TractError>(outputs)
            })
        });
        result.map_err(calibration)?;
    }
    Ok(ranges)
}

fn record(ranges: &mut quantize::Ranges, model: &TypedModel, outlet: OutletId, value: &Tensor) {
    let (Some(label), Ok(view)) = (
        model.outlet_label(outlet),
        value.to_plain_array_view::<f32>(),
    ) else {
        return;
    };
    let (lo, hi) = view
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let entry = ranges.entry(label.to_owned()).or_insert((lo, hi));
    entry.0 = entry.0.min(lo);
    entry.1 = entry.1.max(hi);
}

/// Counts the operators of a TFLite flatbuffer by builtin name.
pub fn tflite_ops(bytes: &[u8]) -> Result<BTreeMap<String, usize>, ExportError> {
    let bad =
        |e: &dyn std::fmt::Display| ExportError::Write(format!("not a TFLite flatbuffer: {e}"));
    let model = tract_tflite::tflite::root_as_model(bytes).map_err(|e| bad(&e))?;
    let codes = model
        .operator_codes()
        .ok_or_else(|| bad(&"no operator codes"))?;
    let mut ops = BTreeMap::new();
    for graph in model.subgraphs().iter().flatten() {
        for op in graph.operators().iter().flatten() {
            let index = op.opcode_index() as usize;
            if index >= codes.len() {
                return Err(bad(&format!(
                    "operator code index {index} is past the {} codes",
                    codes.len()
                )));
            }
            let code = codes.get(index).builtin_code();
            let name = code
                .variant_name()
                .map_or_else(|| format!("{code:?}"), str::to_owned);
            *ops.entry(name).or_insert(0) += 1;
        }
    }
    Ok(ops)
}

fn rewrite_failure(e: &TractError) -> UnsupportedOp {
    // tract names the node in its error context: "Rewriting rule ... on node #12 "name" Op".
    UnsupportedOp {
        node: String::new(),
        op: "(rewrite)".into(),
        reason: format!("{e:#}"),
    }
}

/// The tract op name used for support checks: the inner op for element-wise and binary
/// wrappers (`Sigmoid`, `Add`), the op's own name otherwise.
fn op_name(node: &TypedNode) -> String {
    node.op.name().to_string()
}

/// Ops of the rewritten graph that tract writes as TFLite ops LiteRT computes the same way.
const SUPPORTED: &[&str] = &[
    "Source",
    "Const", // graph plumbing
    "AddAxis",
    "RmAxis",
    "MoveAxis",
    "Reshape", // AxisOp: EXPAND_DIMS, SQUEEZE, TRANSPOSE, RESHAPE
    "MultiBroadcastTo",
    "Concat",
    "Slice",
    "Downsample",
    "Pad", //
    "Conv",
    "MaxPool",
    "SumPool", //
    "PrefixMatMul",
    "Softmax", //
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Max",
    "Min", //
    "Abs",
    "Exp",
    "Ln",
    "Sqrt",
    "Square",
    "Sigmoid",
    "Tanh",
    "HardSwish",
    "LeakyRelu",
    "Floor",
    "Ceil",
    "Sin",
    "Cos", //
    "Reduce<Max>",
    "Reduce<Min>",
    "Reduce<Sum>",
    "Reduce<Prod>", //
];

/// Every op of `model` outside [`SUPPORTED`].
fn unsupported_ops(model: &TypedModel) -> Vec<UnsupportedOp> {
    model
        .nodes
        .iter()
        .filter(|node| !SUPPORTED.contains(&op_name(node).as_str()))
        .map(|node| UnsupportedOp {
            node: node.name.clone(),
            op: op_name(node),
            reason: "no TFLite translation".into(),
        })
        .collect()
}

fn signature(
    model: &TypedModel,
    outlets: TractResult<&[OutletId]>,
) -> Result<Vec<TensorSig>, ExportError> {
    let write = |e: TractError| ExportError::Write(format!("{e:#}"));
    outlets
        .map_err(write)?
        .iter()
        .map(|outlet| {
            let fact = model.outlet_fact(*outlet).map_err(write)?;
            let shape = fact
                .shape
                .as_concrete()
                .ok_or_else(|| ExportError::Write(format!("{outlet:?} has a symbolic shape")))?
                .to_vec();
            Ok(TensorSig {
                name: model.node(outlet.node).name.clone(),
                shape,
                dtype: format!("{:?}", fact.datum_type).to_lowercase(),
            })
        })
        .collect()
}

/// Runs the source model and the written file on the same seeded input with tract; returns
/// the largest absolute difference, or an error when they disagree beyond float noise.
fn self_check(source: &TypedModel, written: &[u8]) -> Result<f32, ExportError> {
    let back =
        guarded(|| tract_tflite::tflite().model_for_read(&mut &written[..])).map_err(|e| {
            ExportError::Write(format!("tract cannot read the written file back: {e:#}"))
        })?;
    let mismatch = |e: TractError| ExportError::Mismatch(format!("{e:#}"));
    let mut inputs = TVec::new();
    for (ix, outlet) in source.input_outlets().map_err(mismatch)?.iter().enumerate() {
        let fact = source.outlet_fact(*outlet).map_err(mismatch)?;
        let shape = fact.shape.as_concrete().unwrap_or(&[]).to_vec();
        inputs.push(
            seeded_input(&shape, ix as u64)
                .map_err(mismatch)?
                .into_tvalue(),
        );
    }
    let expected =
        guarded(|| source.clone().into_runnable()?.run(inputs.clone())).map_err(mismatch)?;
    let got = guarded(|| back.into_runnable()?.run(inputs)).map_err(mismatch)?;
    let mut worst = 0f32;
    for (e, g) in expected.iter().zip(got.iter()) {
        let e = e.cast_to::<f32>().map_err(mismatch)?;
        let g = g.cast_to::<f32>().map_err(mismatch)?;
        if e.shape() != g.shape() {
            return Err(ExportError::Mismatch(format!(
                "output shape {:?} became {:?}",
                e.shape(),
                g.shape()
            )));
        }
        let (e, g) = (
            e.to_plain_array_view::<f32>().map_err(mismatch)?,
            g.to_plain_array_view::<f32>().map_err(mismatch)?,
        );
        let scale = e.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (a, b) in e.iter().zip(g) {
            let diff = (a - b).abs();
            if diff.is_nan() || diff > 1e-3 * scale {
                return Err(ExportError::Mismatch(format!(
                    "an output differs by {diff} (source {a}, exported {b})"
                )));
            }
            worst = worst.max(diff);
        }
    }
    Ok(worst)
}

/// A deterministic input in [-1, 1): the same for every run, so exports are reproducible.
fn seeded_input(shape: &[usize], seed: u64) -> TractResult<Tensor> {
    let len: usize = shape.iter().product();
    let mut rng = fastrand::Rng::with_seed(seed);
    let data: Vec<f32> = (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect();
    Tensor::from_shape(shape, &data)
}
