//! Reading an ONNX source model into a typed tract graph with every input shape fixed.

use std::collections::BTreeMap;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{GenericFactoid, InferenceFact};

use crate::error::ExportError;

/// Fixed shapes for inputs, by input name. Inputs not named keep the model's shape, with an
/// unknown leading (batch) axis set to 1.
pub type InputShapes = BTreeMap<String, Vec<usize>>;

/// Parses `onnx`, fixes every input shape and returns the typed model. It is not decluttered:
/// tract's declutter turns 1×1 convolutions into matrix products and keeps batch norms apart,
/// which TFLite runs slower and int8 quantizes worse; the export's own rewrites do the rest.
pub fn typed_onnx(onnx: &[u8], shapes: &InputShapes) -> Result<TypedModel, ExportError> {
    crate::guard::guarded_with(
        || read(onnx, shapes),
        |m| ExportError::Source(format!("tract panicked reading the model: {m}")),
    )
}

fn read(onnx: &[u8], shapes: &InputShapes) -> Result<TypedModel, ExportError> {
    let source = |e: TractError| ExportError::Source(format!("{e:#}"));
    let onnx_framework = tract_onnx::onnx();
    let mut proto = onnx_framework
        .proto_model_for_read(&mut &onnx[..])
        .map_err(source)?;
    // Intermediate shapes in `value_info` are hints; some exporters leave a symbolic batch in
    // them that contradicts the fixed shapes an export imposes, so they are dropped.
    if let Some(graph) = proto.graph.as_mut() {
        graph.value_info.clear();
    }
    let mut model = onnx_framework
        .model_for_proto_model(&proto)
        .map_err(source)?;
    let outlets = model.input_outlets().map_err(source)?.to_vec();
    if outlets.is_empty() || model.output_outlets().map_err(source)?.is_empty() {
        return Err(ExportError::Source(
            "the model has no inputs or no outputs (is it an ONNX model?)".into(),
        ));
    }
    let names: Vec<String> = outlets
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    if let Some(name) = shapes.keys().find(|n| !names.contains(n)) {
        return Err(ExportError::BadShape(format!(
            "the model has no input named {name:?} (its inputs: {names:?})"
        )));
    }
    for (ix, outlet) in outlets.iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let fact = model.outlet_fact(*outlet).map_err(source)?.clone();
        let dt = fact.datum_type().unwrap_or(DatumType::F32);
        let dims: Vec<usize> = match shapes.get(&name) {
            Some(given) => {
                let rank = fact.shape.dims().count();
                if !fact.shape.is_open() && rank != given.len() {
                    return Err(ExportError::BadShape(format!(
                        "input {name:?} has rank {rank}, but the shape given has {} dimensions",
                        given.len()
                    )));
                }
                given.clone()
            }
            None => {
                let unknown = || ExportError::UnknownShape {
                    input: name.clone(),
                    shape: format!("{:?}", fact.shape),
                };
                if fact.shape.is_open() {
                    return Err(unknown());
                }
                fact.shape
                    .dims()
                    .enumerate()
                    .map(|(axis, d)| match d {
                        GenericFactoid::Only(TDim::Val(v)) if *v > 0 => Ok(*v as usize),
                        // An unknown leading axis is the batch: export batch 1.
                        _ if axis == 0 => Ok(1),
                        _ => Err(unknown()),
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        model
            .set_input_fact(ix, InferenceFact::dt_shape(dt, dims))
            .map_err(source)?;
    }
    model.into_typed().map_err(source)
}
