//! TFLite model to graph: tensors to values (constants decoded, float16 widened, sparse
//! densified), the main subgraph's operators to nodes, resource variables to model state.

use std::collections::HashMap;
use std::sync::Arc;

use super::builtin;
use super::schema::{self, Model, OpCode, OperatorDef, TensorDef, tensor_type as tt};
use super::sparse;
use crate::error::{Blockers, LoadError};
use crate::graph::{Graph, Quant, Value, ValueId, Variable};
use crate::tensor::{DType, Data};

const FORMAT: &str = "TFLite";

/// Why one operator could not be translated: shown as `op: reason`.
pub(super) struct Block {
    pub reason: String,
}

pub(super) fn block<T>(reason: impl Into<String>) -> Result<T, Block> {
    Err(Block {
        reason: reason.into(),
    })
}

/// Reads a TFLite model.
pub fn read(bytes: &[u8]) -> Result<Graph, LoadError> {
    let model = Model::parse(bytes).map_err(|e| LoadError::malformed(FORMAT, e))?;
    let version = model
        .version()
        .map_err(|e| LoadError::malformed(FORMAT, e))?;
    if version != 3 {
        return Err(LoadError::malformed(
            FORMAT,
            format!("schema version {version}; version 3 is supported"),
        ));
    }
    let codes = model
        .operator_codes()
        .map_err(|e| LoadError::malformed(FORMAT, e))?;
    let mut importer = Importer::new(model, codes)?;
    importer.run()?;
    Ok(importer.graph)
}

pub(super) struct Importer<'a> {
    pub model: Model<'a>,
    codes: Vec<OpCode>,
    pub tensors: Vec<TensorDef>,
    pub graph: Graph,
    values: Vec<Option<ValueId>>,
    pub blockers: Blockers,
    /// Resource tensors (VAR_HANDLE outputs) of the main subgraph, to their variable.
    pub resources: HashMap<usize, usize>,
    /// Variables by shared name.
    pub variables: HashMap<String, usize>,
}

impl<'a> Importer<'a> {
    fn new(model: Model<'a>, codes: Vec<OpCode>) -> Result<Importer<'a>, LoadError> {
        let main = model
            .subgraph(0)
            .map_err(|e| LoadError::malformed(FORMAT, e))?;
        let tensors = main
            .tensors()
            .map_err(|e| LoadError::malformed(FORMAT, e))?;
        Ok(Importer {
            model,
            codes,
            values: vec![None; tensors.len()],
            tensors,
            graph: Graph::default(),
            blockers: Blockers::default(),
            resources: HashMap::new(),
            variables: HashMap::new(),
        })
    }

    fn run(&mut self) -> Result<(), LoadError> {
        let main = self
            .model
            .subgraph(0)
            .map_err(|e| LoadError::malformed(FORMAT, e))?;
        let operators = main
            .operators()
            .map_err(|e| LoadError::malformed(FORMAT, e))?;
        for index in main.inputs().map_err(|e| LoadError::malformed(FORMAT, e))? {
            match self.tensor_value(index) {
                Ok(v) => self.graph.inputs.push(v),
                Err(b) => self.blockers.add("model input", b.reason),
            }
        }
        for (n, op) in operators.iter().enumerate() {
            let (name, code) = self.op_name(op)?;
            if let Err(b) = super::ops::translate(self, op, code, &name, n) {
                self.blockers.add(name, b.reason);
            }
        }
        for index in main
            .outputs()
            .map_err(|e| LoadError::malformed(FORMAT, e))?
        {
            match self.tensor_value(index) {
                Ok(v) => self.graph.outputs.push(v),
                Err(b) => self.blockers.add("model output", b.reason),
            }
        }
        if !self.blockers.is_empty() {
            return Err(LoadError::Unsupported(std::mem::take(&mut self.blockers.0)));
        }
        if self.graph.outputs.is_empty() {
            return Err(LoadError::malformed(FORMAT, "the model has no outputs"));
        }
        Ok(())
    }

    /// The operator's name (builtin name or custom code) and builtin code.
    fn op_name(&self, op: &OperatorDef<'_>) -> Result<(String, i32), LoadError> {
        let code = self.codes.get(op.opcode_index as usize).ok_or_else(|| {
            LoadError::malformed(FORMAT, "an operator's code index is out of range")
        })?;
        let name = match (&code.custom, code.builtin) {
            (Some(custom), builtin::CUSTOM) => custom.clone(),
            (_, b) => builtin::name(b),
        };
        Ok((name, code.builtin))
    }

    /// The tensor definition at an operator's input or output index.
    pub fn tensor(&self, index: i32) -> Result<&TensorDef, Block> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.tensors.get(i))
            .map_or_else(
                || block(format!("tensor index {index} is out of range")),
                Ok,
            )
    }

    /// The value for a tensor, made on first use.
    pub fn tensor_value(&mut self, index: i32) -> Result<ValueId, Block> {
        let i = usize::try_from(index)
            .ok()
            .filter(|i| *i < self.tensors.len())
            .map_or_else(
                || block(format!("tensor index {index} is out of range")),
                Ok,
            )?;
        if let Some(v) = self.values[i] {
            return Ok(v);
        }
        let value = self.make_value(&self.tensors[i].clone())?;
        let id = self.graph.add_value(value);
        self.values[i] = Some(id);
        Ok(id)
    }

    /// Replaces the value a tensor stands for (ops folded at load bind their output tensor
    /// to a constant).
    pub fn bind(&mut self, index: i32, value: ValueId) -> Result<(), Block> {
        let i = usize::try_from(index)
            .ok()
            .filter(|i| *i < self.tensors.len())
            .map_or_else(
                || block(format!("tensor index {index} is out of range")),
                Ok,
            )?;
        self.values[i] = Some(value);
        Ok(())
    }

    fn make_value(&self, t: &TensorDef) -> Result<Value, Block> {
        let dims = match &t.shape_signature {
            Some(sig) if sig.len() == t.shape.len() => sig.clone(),
            _ => t.shape.clone(),
        };
        let shape: Vec<Option<usize>> = dims.iter().map(|&d| usize::try_from(d).ok()).collect();
        let quant = t.quant.as_ref().map(quant_of).transpose()?;
        let data = self.model.buffer(t.buffer).map_err(|e| Block {
            reason: e.to_string(),
        })?;
        let dtype = match t.ttype {
            tt::FLOAT32 | tt::FLOAT16 => DType::F32,
            tt::INT8 => DType::I8,
            tt::UINT8 => DType::U8,
            tt::INT16 => DType::I16,
            tt::INT32 => DType::I32,
            tt::INT64 => DType::I64,
            tt::BOOL => DType::Bool,
            other => return block(format!("{} tensors", tt::name(other))),
        };
        let constant = if data.is_empty() {
            if t.ttype == tt::FLOAT16 {
                return block("float16 activations (only float16 constants are widened)");
            }
            None
        } else {
            let shape: Vec<usize> = t
                .shape
                .iter()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<_>>()
                .map_or_else(|| block("a constant with a negative dimension"), Ok)?;
            Some(Arc::new(constant_data(t, &shape, data)?))
        };
        if constant.is_some() && shape.iter().any(Option::is_none) {
            return block("a constant without a fixed shape");
        }
        Ok(Value {
            name: t.name.clone(),
            dtype,
            shape,
            quant,
            constant,
        })
    }

    /// Variables come from the init subgraph a CALL_ONCE names: each ASSIGN_VARIABLE there
    /// gives a variable (by its VAR_HANDLE's shared name) its initial value.
    pub fn init_variables(&mut self, subgraph: usize) -> Result<(), Block> {
        let sub = self.model.subgraph(subgraph).map_err(|e| Block {
            reason: e.to_string(),
        })?;
        let tensors = sub.tensors().map_err(|e| Block {
            reason: e.to_string(),
        })?;
        let ops = sub.operators().map_err(|e| Block {
            reason: e.to_string(),
        })?;
        let mut handles: HashMap<usize, String> = HashMap::new();
        for op in &ops {
            let code = self
                .codes
                .get(op.opcode_index as usize)
                .map_or_else(|| block("operator code index out of range"), Ok)?;
            let tensor = |i: i32| -> Result<&TensorDef, Block> {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| tensors.get(i))
                    .map_or_else(|| block("init subgraph tensor index out of range"), Ok)
            };
            match code.builtin {
                builtin::VAR_HANDLE => {
                    let name = shared_name(op)?;
                    let out = op
                        .outputs
                        .first()
                        .and_then(|&o| usize::try_from(o).ok())
                        .map_or_else(|| block("VAR_HANDLE without an output"), Ok)?;
                    handles.insert(out, name);
                }
                builtin::ASSIGN_VARIABLE => {
                    let (Some(&handle), Some(&value)) = (op.inputs.first(), op.inputs.get(1))
                    else {
                        return block("ASSIGN_VARIABLE needs a handle and a value");
                    };
                    let name = usize::try_from(handle)
                        .ok()
                        .and_then(|h| handles.get(&h))
                        .cloned()
                        .map_or_else(|| block("ASSIGN_VARIABLE of an unknown handle"), Ok)?;
                    let t = tensor(value)?.clone();
                    let data = self.model.buffer(t.buffer).map_err(|e| Block {
                        reason: e.to_string(),
                    })?;
                    if data.is_empty() {
                        return block("a variable's initial value is not a constant");
                    }
                    let shape: Vec<usize> = t
                        .shape
                        .iter()
                        .map(|&d| usize::try_from(d).ok())
                        .collect::<Option<_>>()
                        .map_or_else(|| block("a negative variable dimension"), Ok)?;
                    let initial = constant_data(&t, &shape, data)?;
                    let quant = t.quant.as_ref().map(quant_of).transpose()?;
                    let id = self.graph.variables.len();
                    self.graph.variables.push(Variable {
                        name: name.clone(),
                        initial: Arc::new(initial),
                        shape,
                        quant,
                    });
                    self.variables.insert(name, id);
                }
                other => {
                    return block(format!(
                        "the init subgraph runs {}; only VAR_HANDLE and ASSIGN_VARIABLE of constants are supported",
                        builtin::name(other)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The shared name of a VAR_HANDLE (its variable's identity).
pub(super) fn shared_name(op: &OperatorDef<'_>) -> Result<String, Block> {
    let options = op
        .options
        .map_or_else(|| block("VAR_HANDLE without options"), Ok)?;
    let container = options.string(0, "container").map_err(|e| Block {
        reason: e.to_string(),
    })?;
    let shared = options.string(1, "shared name").map_err(|e| Block {
        reason: e.to_string(),
    })?;
    Ok(format!(
        "{}/{}",
        container.unwrap_or_default(),
        shared.unwrap_or_default()
    ))
}

fn quant_of(q: &schema::QuantDef) -> Result<Quant, Block> {
    let axis = usize::try_from(q.axis).map_or_else(|_| block("a negative quantized axis"), Ok)?;
    let zero_point = q
        .zero_point
        .iter()
        .map(|&z| i32::try_from(z).ok())
        .collect::<Option<Vec<i32>>>()
        .map_or_else(|| block("a zero point out of range"), Ok)?;
    if zero_point.iter().any(|z| !(-32768..=65535).contains(z)) {
        return block("a zero point outside every quantized type's range");
    }
    if !zero_point.is_empty() && zero_point.len() != q.scale.len() {
        return block("quantization scales and zero points differ in count");
    }
    if q.scale.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return block("a quantization scale that is not a positive number");
    }
    Ok(Quant {
        scale: q.scale.clone(),
        zero_point,
        axis,
    })
}

/// Decodes a constant buffer: float16 widened to f32, sparse tensors densified.
fn constant_data(t: &TensorDef, shape: &[usize], bytes: &[u8]) -> Result<Data, Block> {
    let count = crate::tensor::element_count(shape)
        .filter(|n| *n <= sparse::MAX_DENSE_ELEMENTS)
        .map_or_else(|| block("a constant too large to hold"), Ok)?;
    let decode = |dtype: DType| -> Result<Data, Block> {
        Data::from_le_bytes(dtype, bytes)
            .map_or_else(|| block("a constant buffer of a partial element"), Ok)
    };
    let data = match t.ttype {
        tt::FLOAT16 => {
            if !bytes.len().is_multiple_of(2) {
                return block("a float16 buffer of odd length");
            }
            Data::F32(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            )
        }
        tt::FLOAT32 => decode(DType::F32)?,
        tt::INT8 => decode(DType::I8)?,
        tt::UINT8 => decode(DType::U8)?,
        tt::INT16 => decode(DType::I16)?,
        tt::INT32 => decode(DType::I32)?,
        tt::INT64 => decode(DType::I64)?,
        tt::BOOL => decode(DType::Bool)?,
        other => return block(format!("{} constants", tt::name(other))),
    };
    let data = match &t.sparsity {
        None => data,
        Some(s) => {
            let dense = match data {
                Data::F32(v) => sparse::densify(&v, shape, s, 0.0).map(Data::F32),
                Data::I8(v) => sparse::densify(&v, shape, s, 0).map(Data::I8),
                Data::U8(v) => sparse::densify(&v, shape, s, 0).map(Data::U8),
                _ => Err("sparse constants of this element type".into()),
            };
            dense.map_err(|reason| Block { reason })?
        }
    };
    if data.len() != count {
        return block(format!(
            "constant {:?} holds {} elements for shape {shape:?}",
            t.name,
            data.len()
        ));
    }
    Ok(data)
}

/// One input or output of a TFLite model as the file declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct IoDecl {
    pub name: String,
    /// The schema's type name ("float32", "int8", ...).
    pub dtype: &'static str,
    /// `None` where the signature leaves an axis free (-1).
    pub shape: Vec<Option<usize>>,
    pub quantized: bool,
}

/// The inputs and outputs of the main subgraph, without translating any operator (what
/// `aq pack save` records even for a model no engine here runs).
pub fn io(bytes: &[u8]) -> Result<(Vec<IoDecl>, Vec<IoDecl>), LoadError> {
    let model = Model::parse(bytes).map_err(|e| LoadError::malformed(FORMAT, e))?;
    let main = model
        .subgraph(0)
        .map_err(|e| LoadError::malformed(FORMAT, e))?;
    let tensors = main
        .tensors()
        .map_err(|e| LoadError::malformed(FORMAT, e))?;
    let decl = |index: i32| -> Result<IoDecl, LoadError> {
        let t = usize::try_from(index)
            .ok()
            .and_then(|i| tensors.get(i))
            .ok_or_else(|| {
                LoadError::malformed(FORMAT, format!("tensor index {index} is out of range"))
            })?;
        let dims = match &t.shape_signature {
            Some(sig) if sig.len() == t.shape.len() => sig,
            _ => &t.shape,
        };
        Ok(IoDecl {
            name: t.name.clone(),
            dtype: tt::name(t.ttype),
            shape: dims.iter().map(|&d| usize::try_from(d).ok()).collect(),
            quantized: t.quant.is_some(),
        })
    };
    let inputs = main
        .inputs()
        .map_err(|e| LoadError::malformed(FORMAT, e))?
        .into_iter()
        .map(decl)
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = main
        .outputs()
        .map_err(|e| LoadError::malformed(FORMAT, e))?
        .into_iter()
        .map(decl)
        .collect::<Result<Vec<_>, _>>()?;
    if outputs.is_empty() {
        return Err(LoadError::malformed(FORMAT, "the model has no outputs"));
    }
    Ok((inputs, outputs))
}
