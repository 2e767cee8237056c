//! The tract backend for ONNX: loads models from bytes, builds optimized plans once (one per
//! batch-size bucket when the model has a symbolic batch axis), and runs them.
//!
//! Every call into tract is wrapped by [`crate::inspect::guarded`]: tract can panic on files
//! it does not expect, and a panic must become an error, never a dead worker. Operators tract
//! has no translation for are found before loading, by walking the graph against tract's
//! operator registry ([`onnx_blockers`]), so the load error lists every one.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_hir::infer::{GenericFactoid, InferenceFact};

use crate::engine::{
    Axis, BatchTiming, Blocker, Engine, EngineInfo, EngineSignature, IoSpec, LoadError, RunError,
    bucket_sizes,
};
use crate::inspect::guarded;
use crate::load::LoadOptions;
use crate::tensor::{DType, Tensor as AqTensor};

const ENGINE: &str = "tract";

type Plan = Arc<TypedRunnableModel>;

/// A model loaded into tract.
pub struct TractEngine {
    signature: EngineSignature,
    /// What bucket plans are built from; dropped once warm-up has built them (it holds a
    /// copy of the weights).
    base: std::sync::Mutex<Option<Base>>,
    batched: bool,
    /// Batch-size buckets, ascending; the first (size 1, or the only plan of an unbatched
    /// model) is always built at load.
    buckets: Vec<(usize, OnceLock<Plan>)>,
    keep_all_batch_plans: bool,
}

impl std::fmt::Debug for TractEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractEngine")
            .field("signature", &self.signature)
            .field(
                "buckets",
                &self.buckets.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn chain(e: &TractError) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let line = text.lines().next().unwrap_or("").trim().to_owned();
        if !line.is_empty() && !parts.iter().any(|p| p.contains(&line)) {
            parts.push(line);
        }
    }
    let joined = parts.join(": ");
    joined.chars().take(600).collect()
}

fn load_failure(e: &TractError) -> LoadError {
    LoadError::Unsupported {
        engine: ENGINE,
        reason: chain(e),
    }
}

/// Every operator of an ONNX model (subgraphs of If, Loop and Scan included) that tract has
/// no translation for, with counts.
pub fn onnx_blockers(proto: &tract_onnx::pb::ModelProto) -> Vec<Blocker> {
    let registry = &tract_onnx::onnx().op_register.0;
    let mut blockers: Vec<Blocker> = Vec::new();
    let mut stack: Vec<&tract_onnx::pb::GraphProto> = proto.graph.iter().collect();
    while let Some(graph) = stack.pop() {
        for node in &graph.node {
            for attr in &node.attribute {
                stack.extend(attr.g.iter());
                stack.extend(attr.graphs.iter());
            }
            if registry.contains_key(&node.op_type) {
                continue;
            }
            let name = if node.domain.is_empty() || node.domain == "ai.onnx" {
                node.op_type.clone()
            } else {
                format!("{}.{}", node.domain, node.op_type)
            };
            match blockers.iter_mut().find(|b| b.op == name) {
                Some(b) => b.count += 1,
                None => blockers.push(Blocker {
                    op: name,
                    reason: "no tract translation".into(),
                    count: 1,
                }),
            }
        }
    }
    blockers
}

fn dtype_of(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::F16 => DType::F16,
        DatumType::I64 => DType::I64,
        DatumType::I32 => DType::I32,
        DatumType::I16 => DType::I16,
        DatumType::I8 => DType::I8,
        DatumType::U8 => DType::U8,
        DatumType::U16 => DType::U16,
        DatumType::U32 => DType::U32,
        DatumType::U64 => DType::U64,
        DatumType::Bool => DType::Bool,
        _ => return None,
    })
}

fn datum_of(dt: DType) -> DatumType {
    match dt {
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::F16 => DatumType::F16,
        DType::I64 => DatumType::I64,
        DType::I32 => DatumType::I32,
        DType::I16 => DatumType::I16,
        DType::I8 => DatumType::I8,
        DType::U8 => DatumType::U8,
        DType::U16 => DatumType::U16,
        DType::U32 => DatumType::U32,
        DType::U64 => DatumType::U64,
        DType::Bool => DatumType::Bool,
    }
}

impl TractEngine {
    /// Loads an ONNX model from its bytes.
    pub fn load(bytes: &[u8], options: &LoadOptions) -> Result<TractEngine, LoadError> {
        match guarded(|| Self::load_unguarded(bytes, options)) {
            Ok(result) => result,
            Err(message) => Err(LoadError::Panicked {
                engine: ENGINE,
                message,
            }),
        }
    }

    fn load_unguarded(bytes: &[u8], options: &LoadOptions) -> Result<TractEngine, LoadError> {
        let base = onnx_base(bytes, options)?;
        let sizes = if base.batched() {
            bucket_sizes(options.max_batch)
        } else {
            vec![1]
        };
        let buckets: Vec<(usize, OnceLock<Plan>)> =
            sizes.into_iter().map(|b| (b, OnceLock::new())).collect();
        let (first, signature) = base.first_plan()?;
        let _ = buckets[0].1.set(first);
        Ok(TractEngine {
            signature,
            batched: base.batched(),
            // A model without a batch axis has its only plan already.
            base: std::sync::Mutex::new(base.batched().then_some(base)),
            buckets,
            keep_all_batch_plans: options.keep_all_batch_plans,
        })
    }

    /// The batch sizes this engine plans for.
    pub fn bucket_sizes(&self) -> Vec<usize> {
        self.buckets.iter().map(|(b, _)| *b).collect()
    }

    /// The largest ready bucket that is at most `rows`.
    fn pick(&self, rows: usize) -> (usize, &Plan) {
        let mut best = None;
        for (size, cell) in &self.buckets {
            if *size <= rows
                && let Some(plan) = cell.get()
            {
                best = Some((*size, plan));
            }
        }
        // Invariant: bucket 0 (size 1) is set at load, and rows >= 1.
        best.unwrap_or_else(|| {
            let (size, cell) = &self.buckets[0];
            (
                *size,
                cell.get()
                    .unwrap_or_else(|| unreachable!("bucket 1 is built at load")),
            )
        })
    }

    fn run_unguarded(&self, inputs: Vec<AqTensor>) -> Result<Vec<AqTensor>, RunError> {
        let rows = self.signature.check(&inputs)?;
        if !self.batched {
            let (_, plan) = self.pick(1);
            let values = inputs
                .iter()
                .map(|t| to_tract(t, 0, None))
                .collect::<Result<TVec<_>, _>>()?;
            let outputs = plan.run(values).map_err(|e| RunError::Failed(chain(&e)))?;
            return outputs.iter().map(|v| from_tract(v)).collect();
        }
        let mut start = 0;
        let mut pieces: Vec<TVec<TValue>> = Vec::new();
        while start < rows {
            let (size, plan) = self.pick(rows - start);
            let values = inputs
                .iter()
                .map(|t| to_tract(t, start, Some(size)))
                .collect::<Result<TVec<_>, _>>()?;
            pieces.push(plan.run(values).map_err(|e| RunError::Failed(chain(&e)))?);
            start += size;
        }
        if pieces.len() == 1 {
            return pieces[0].iter().map(|v| from_tract(v)).collect();
        }
        (0..self.signature.outputs.len())
            .map(|o| {
                let parts: Vec<&Tensor> = pieces.iter().map(|p| &*p[o]).collect();
                let stacked =
                    Tensor::stack_tensors(0, &parts).map_err(|e| RunError::Output(chain(&e)))?;
                from_tract(&stacked)
            })
            .collect()
    }
}

impl Engine for TractEngine {
    fn backend(&self) -> &'static str {
        ENGINE
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            engine: ENGINE,
            path: "onnx, tract (NCHW)".into(),
            kernels: "tract-linalg".into(),
            stateful: false,
        }
    }

    fn signature(&self) -> &EngineSignature {
        &self.signature
    }

    fn run(&self, inputs: Vec<AqTensor>) -> Result<Vec<AqTensor>, RunError> {
        guarded(|| self.run_unguarded(inputs))
            .unwrap_or_else(|message| Err(RunError::Panicked(message)))
    }

    fn warm_up(&self) -> Result<Vec<BatchTiming>, LoadError> {
        let sizes: Vec<usize> = self.buckets.iter().map(|(b, _)| *b).collect();
        if sizes.len() < 2 {
            self.base.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Ok(Vec::new());
        }
        let calibrate = !self.keep_all_batch_plans
            && self
                .signature
                .inputs
                .iter()
                .all(|s| s.shape.iter().all(|a| !matches!(a, Axis::Free(_))));
        let mut timings = Vec::new();
        let mut best_per_row = f64::INFINITY;
        for (i, (size, cell)) in self.buckets.iter().enumerate() {
            let plan = match cell.get() {
                Some(plan) => plan.clone(),
                None => match guarded(|| self.plan_from_base(*size)) {
                    Ok(result) => result?,
                    Err(message) => {
                        return Err(LoadError::Panicked {
                            engine: ENGINE,
                            message,
                        });
                    }
                },
            };
            if !calibrate {
                let _ = cell.set(plan);
                continue;
            }
            let per_row = match guarded(|| self.time_per_row(&plan, *size)) {
                Ok(Ok(ms)) => ms,
                Ok(Err(e)) => return Err(e),
                Err(message) => {
                    return Err(LoadError::Panicked {
                        engine: ENGINE,
                        message,
                    });
                }
            };
            // A bigger batch is worth its plan only if it beats every smaller one per row;
            // tract's batched plans can be slower per row (a BatchNormalization folded into
            // the convolution at batch 1 stays a separate Add at batch 2, say).
            let kept = i == 0 || per_row < best_per_row * 0.95;
            timings.push(BatchTiming {
                size: *size,
                ms_per_row: per_row,
                kept,
            });
            if kept {
                best_per_row = per_row;
                let _ = cell.set(plan);
            } else if per_row > best_per_row * 1.5 {
                // Far worse per row: larger batches will not recover; stop building plans.
                break;
            }
        }
        // Every plan warm-up will ever build exists now: free the base model's weights.
        self.base.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(timings)
    }

    fn batch_sizes(&self) -> Vec<usize> {
        self.buckets
            .iter()
            .filter(|(_, cell)| cell.get().is_some())
            .map(|(b, _)| *b)
            .collect()
    }
}

impl TractEngine {
    fn plan_from_base(&self, size: usize) -> Result<Plan, LoadError> {
        let base = self.base.lock().unwrap_or_else(|e| e.into_inner());
        match base.as_ref() {
            Some(base) => base.plan(size),
            None => Err(LoadError::Options("batch plans were already built".into())),
        }
    }

    /// Median milliseconds per row of `plan` on zero inputs of `size` rows.
    fn time_per_row(&self, plan: &Plan, size: usize) -> Result<f64, LoadError> {
        let inputs: TVec<TValue> = self
            .signature
            .inputs
            .iter()
            .map(|spec| {
                let shape: Vec<usize> = spec
                    .shape
                    .iter()
                    .map(|a| match a {
                        Axis::Fixed(n) => *n,
                        Axis::Batch | Axis::Free(_) => size,
                    })
                    .collect();
                Tensor::zero_dt(datum_of(spec.dtype), &shape).map(|t| t.into_tvalue())
            })
            .collect::<TractResult<_>>()
            .map_err(|e| load_failure(&e))?;
        // One run to warm caches, then at least 3 timed runs and up to 30, until 50 ms have
        // been measured: enough for a stable median on plans that take microseconds.
        plan.run(inputs.clone()).map_err(|e| load_failure(&e))?;
        let mut times = Vec::new();
        let mut total = 0.0;
        while times.len() < 3 || (total < 50.0 && times.len() < 30) {
            let started = std::time::Instant::now();
            plan.run(inputs.clone()).map_err(|e| load_failure(&e))?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            total += ms;
            times.push(ms);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2] / size as f64)
    }
}

/// What plans are built from.
enum Base {
    /// A model without a batch axis: one plan.
    Single(TypedModel),
    /// A typed model whose axis 0 is `symbol` in every input and output; a bucket's plan
    /// binds the symbol.
    Symbolic { model: TypedModel, symbol: Symbol },
    /// An ONNX model tract can only type once the batch size is known (a Reshape whose shape
    /// is computed from the input, say): each bucket is typed from the inference model.
    PerBatch {
        model: InferenceModel,
        /// Inputs whose axis 0 is the batch axis.
        inputs: Vec<bool>,
        /// Outputs whose axis 0 is the batch axis.
        outputs: Vec<bool>,
    },
}

impl Base {
    fn batched(&self) -> bool {
        !matches!(self, Base::Single(_))
    }

    /// The plan for one row (or the only plan), and the signature.
    fn first_plan(&self) -> Result<(Plan, EngineSignature), LoadError> {
        match self {
            Base::Single(model) => Ok((optimize(model.clone())?, signature_of(model, None)?)),
            Base::Symbolic { model, symbol } => {
                Ok((self.plan(1)?, signature_of(model, Some(symbol))?))
            }
            Base::PerBatch {
                inputs, outputs, ..
            } => {
                let typed = self.typed_for(1)?;
                let mut signature = signature_of(&typed, None)?;
                for (spec, batched) in signature.inputs.iter_mut().zip(inputs) {
                    if *batched && let Some(axis) = spec.shape.first_mut() {
                        *axis = Axis::Batch;
                    }
                }
                for (spec, batched) in signature.outputs.iter_mut().zip(outputs) {
                    if *batched && spec.shape.first() == Some(&Axis::Fixed(1)) {
                        spec.shape[0] = Axis::Batch;
                    }
                }
                if !signature.batchable() {
                    return Err(LoadError::Unsupported {
                        engine: ENGINE,
                        reason: "the model's batch axis does not reach every output".into(),
                    });
                }
                Ok((optimize(typed)?, signature))
            }
        }
    }

    fn typed_for(&self, size: usize) -> Result<TypedModel, LoadError> {
        let Base::PerBatch { model, inputs, .. } = self else {
            return Err(LoadError::Options("not a per-batch model".into()));
        };
        let mut model = model.clone();
        let outlets = model
            .input_outlets()
            .map_err(|e| load_failure(&e))?
            .to_vec();
        for (ix, (outlet, batched)) in outlets.iter().zip(inputs).enumerate() {
            if !batched {
                continue;
            }
            let fact = model
                .outlet_fact(*outlet)
                .map_err(|e| load_failure(&e))?
                .clone();
            let mut dims: Vec<GenericFactoid<TDim>> = fact.shape.dims().cloned().collect();
            dims[0] = GenericFactoid::Only(TDim::Val(size as i64));
            let dt = fact.datum_type().unwrap_or(DatumType::F32);
            let shape =
                tract_onnx::tract_hir::infer::ShapeFactoid::closed(dims.into_iter().collect());
            model
                .set_input_fact(ix, InferenceFact::dt_shape(dt, shape))
                .map_err(|e| load_failure(&e))?;
        }
        model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(|e| load_failure(&e))
    }

    fn plan(&self, size: usize) -> Result<Plan, LoadError> {
        match self {
            Base::Single(model) => optimize(model.clone()),
            Base::Symbolic { model, symbol } => {
                let mut subs = HashMap::new();
                subs.insert(symbol.clone(), TDim::Val(size as i64));
                optimize(model.set_symbols(&subs).map_err(|e| load_failure(&e))?)
            }
            Base::PerBatch { .. } => optimize(self.typed_for(size)?),
        }
    }
}

fn optimize(model: TypedModel) -> Result<Plan, LoadError> {
    model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| load_failure(&e))
}

fn typed_base(model: TypedModel) -> Result<Base, LoadError> {
    let model = model.into_decluttered().map_err(|e| load_failure(&e))?;
    Ok(match batch_symbol(&model)? {
        Some(symbol) => Base::Symbolic { model, symbol },
        None => Base::Single(model),
    })
}

/// Reads an ONNX model: unknown input axes become symbols (axis 0 the batch symbol),
/// configured shapes are imposed, then the model is typed with a symbolic batch axis, or
/// per batch size when tract cannot type it symbolically.
fn onnx_base(bytes: &[u8], options: &LoadOptions) -> Result<Base, LoadError> {
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| LoadError::Malformed {
            format: "ONNX",
            reason: chain(&e),
        })?;
    let blockers = onnx_blockers(&proto);
    if !blockers.is_empty() {
        return Err(LoadError::UnsupportedOps {
            engine: ENGINE,
            blockers,
        });
    }
    let mut model = onnx
        .model_for_proto_model(&proto)
        .map_err(|e| load_failure(&e))?;
    let outlets = model
        .input_outlets()
        .map_err(|e| load_failure(&e))?
        .to_vec();
    let mut unused: Vec<&String> = options.input_shapes.keys().collect();
    let batch = model.symbols.sym("batch");
    let mut batched_inputs = Vec::new();
    for (ix, outlet) in outlets.iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let fact = model
            .outlet_fact(*outlet)
            .map_err(|e| load_failure(&e))?
            .clone();
        let dt = fact.datum_type().ok_or_else(|| LoadError::Unsupported {
            engine: ENGINE,
            reason: format!("input {name:?} has no known element type"),
        })?;
        unused.retain(|n| **n != name);
        let dims: Vec<GenericFactoid<TDim>> = match options.input_shapes.get(&name) {
            Some(shape) => shape
                .iter()
                .map(|&d| {
                    if d < 0 {
                        GenericFactoid::Any
                    } else {
                        GenericFactoid::Only(TDim::Val(d))
                    }
                })
                .collect(),
            None if !fact.shape.is_open() => fact.shape.dims().cloned().collect(),
            None => {
                return Err(LoadError::Unsupported {
                    engine: ENGINE,
                    reason: format!(
                        "input {name:?} has an unknown rank; give its shape in the model's settings"
                    ),
                });
            }
        };
        let resolved: Vec<TDim> = dims
            .iter()
            .enumerate()
            .map(|(axis, d)| match d {
                GenericFactoid::Only(t) => t.clone(),
                GenericFactoid::Any if axis == 0 => TDim::Sym(batch.clone()),
                GenericFactoid::Any => {
                    TDim::Sym(model.symbols.sym(&format!("{}_{axis}", sanitize(&name))))
                }
            })
            .collect();
        batched_inputs.push(matches!(resolved.first(), Some(TDim::Sym(_))));
        model
            .set_input_fact(ix, InferenceFact::dt_shape(dt, resolved))
            .map_err(|e| load_failure(&e))?;
    }
    if let Some(name) = unused.first() {
        return Err(LoadError::Options(format!(
            "the model has no input named {name:?}"
        )));
    }
    let batched_outputs = model
        .output_outlets()
        .map_err(|e| load_failure(&e))?
        .iter()
        .map(|o| {
            model.outlet_fact(*o).is_ok_and(|f| {
                !matches!(
                    f.shape.dims().next(),
                    Some(GenericFactoid::Only(TDim::Val(_)))
                )
            })
        })
        .collect::<Vec<bool>>();
    match model.clone().into_typed() {
        Ok(typed) => typed_base(typed),
        Err(e) if batched_inputs.iter().any(|b| *b) => {
            let base = Base::PerBatch {
                model,
                inputs: batched_inputs,
                outputs: batched_outputs,
            };
            // Typing per batch must work at least for one row; else report the symbolic error.
            match base.typed_for(1) {
                Ok(_) => Ok(base),
                Err(_) => Err(load_failure(&e)),
            }
        }
        Err(e) => Err(load_failure(&e)),
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The symbol at axis 0 of every input and output, when there is one.
fn batch_symbol(model: &TypedModel) -> Result<Option<Symbol>, LoadError> {
    let mut symbol: Option<Symbol> = None;
    let outlets = model
        .input_outlets()
        .map_err(|e| load_failure(&e))?
        .iter()
        .chain(model.output_outlets().map_err(|e| load_failure(&e))?)
        .copied()
        .collect::<Vec<_>>();
    for outlet in outlets {
        let fact = model.outlet_fact(outlet).map_err(|e| load_failure(&e))?;
        let Some(TDim::Sym(s)) = fact.shape.iter().next() else {
            return Ok(None);
        };
        match &symbol {
            None => symbol = Some(s.clone()),
            Some(existing) if existing == s => {}
            Some(_) => return Ok(None),
        }
    }
    Ok(symbol)
}

fn signature_of(model: &TypedModel, batch: Option<&Symbol>) -> Result<EngineSignature, LoadError> {
    let spec = |outlet: OutletId, name: String| -> Result<IoSpec, LoadError> {
        let fact = model.outlet_fact(outlet).map_err(|e| load_failure(&e))?;
        let dtype = dtype_of(fact.datum_type).ok_or_else(|| LoadError::Unsupported {
            engine: ENGINE,
            reason: format!(
                "{name:?} has element type {:?}, which serving does not handle",
                fact.datum_type
            ),
        })?;
        let shape = fact
            .shape
            .iter()
            .enumerate()
            .map(|(axis, d)| match (d.to_usize(), d) {
                (Ok(n), _) => Axis::Fixed(n),
                (Err(_), TDim::Sym(s)) if axis == 0 && Some(s) == batch.cloned().as_ref() => {
                    Axis::Batch
                }
                (Err(_), other) => Axis::Free(other.to_string()),
            })
            .collect();
        Ok(IoSpec { name, dtype, shape })
    };
    let inputs = model
        .input_outlets()
        .map_err(|e| load_failure(&e))?
        .iter()
        .map(|o| spec(*o, model.node(o.node).name.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = model
        .output_outlets()
        .map_err(|e| load_failure(&e))?
        .iter()
        .map(|o| {
            let name = model
                .outlet_label(*o)
                .map(String::from)
                .unwrap_or_else(|| model.node(o.node).name.clone());
            spec(*o, name)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EngineSignature { inputs, outputs })
}

/// Rows `start..start + count` of `t` (all of it when `count` is `None`) as a tract value.
fn to_tract(t: &AqTensor, start: usize, count: Option<usize>) -> Result<TValue, RunError> {
    let (shape, bytes) = match count {
        None => (t.shape().to_vec(), t.bytes()),
        Some(count) => {
            let row = t.row_bytes();
            let mut shape = t.shape().to_vec();
            shape[0] = count;
            (shape, &t.bytes()[start * row..(start + count) * row])
        }
    };
    let mut tensor =
        Tensor::zero_dt(datum_of(t.dtype()), &shape).map_err(|e| RunError::Failed(chain(&e)))?;
    let dest = tensor.as_bytes_mut();
    if dest.len() != bytes.len() {
        return Err(RunError::Failed(format!(
            "tensor of shape {shape:?} needs {} bytes, got {}",
            dest.len(),
            bytes.len()
        )));
    }
    dest.copy_from_slice(bytes);
    Ok(tensor.into_tvalue())
}

fn from_tract(t: &Tensor) -> Result<AqTensor, RunError> {
    let dtype = dtype_of(t.datum_type())
        .ok_or_else(|| RunError::Output(format!("{:?}", t.datum_type())))?;
    AqTensor::from_bytes(dtype, t.shape().to_vec(), t.as_bytes().to_vec())
        .map_err(|e| RunError::Output(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_then_the_max() {
        assert_eq!(bucket_sizes(0), vec![1]);
        assert_eq!(bucket_sizes(1), vec![1]);
        assert_eq!(bucket_sizes(8), vec![1, 2, 4, 8]);
        assert_eq!(bucket_sizes(12), vec![1, 2, 4, 8, 12]);
    }
}
