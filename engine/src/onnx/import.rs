//! ONNX model to graph: initializers to constants, inputs (with imposed shapes and values),
//! nodes in order through [`super::ops`], outputs back in the model's own layout.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prost::Message;

use super::proto::{self, GraphProto, ModelProto, TensorProto, ValueInfoProto, data_type as dt};
use crate::error::{Blockers, LoadError};
use crate::graph::{Graph, Node, Op, Value, ValueId};
use crate::tensor::{DType, Data, element_count};

const FORMAT: &str = "ONNX";

/// The most elements a constant made at load may have (the model file bounds those it
/// carries; this bounds those computed from them).
pub(super) const MAX_FOLDED: usize = 1 << 26;

/// What to impose on a model's inputs.
#[derive(Debug, Clone, Default)]
pub struct OnnxOptions {
    /// Shapes by input name; -1 leaves an axis variable.
    pub input_shapes: HashMap<String, Vec<i64>>,
    /// Fixed values by input name (a sample rate, a flag): the input becomes a constant, so
    /// what depends only on it (an `If`) is decided at load.
    pub input_values: HashMap<String, Vec<f64>>,
}

/// Why one node could not be translated.
pub(super) struct Block(pub String);

/// The reason given when a node reads a tensor of a node that could not be translated.
const POISONED: &str = "reads an untranslated tensor";

pub(super) fn block<T>(reason: impl Into<String>) -> Result<T, Block> {
    Err(Block(reason.into()))
}

/// How a value holds an ONNX tensor: as ONNX orders it, or (rank 3 and up) channels last:
/// `[N, C, D1, ...]` held as `[N, D1, ..., C]`, the order the image kernels work in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Layout {
    Plain,
    Last,
}

/// An ONNX tensor: the value holding it, how, and its shape as ONNX sees it.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub value: ValueId,
    pub layout: Layout,
    /// In ONNX's axis order; `None` where unknown at load.
    pub dims: Vec<Option<usize>>,
    /// The elements of a small integer vector computed from shapes (a `Shape` and what
    /// slices and concatenates it), where known at load: what a reshape to it gives.
    pub known: Option<Vec<Option<i64>>>,
}

impl Entry {
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// The value's axis that holds ONNX axis `axis`.
    pub fn value_axis(&self, axis: usize) -> usize {
        match self.layout {
            Layout::Plain => axis,
            Layout::Last => to_first(self.rank())[axis],
        }
    }
}

pub(super) struct Importer {
    pub graph: Graph,
    names: HashMap<String, Entry>,
    /// Tensors of nodes that could not be translated: what reads them is not reported again.
    poisoned: HashSet<String>,
    /// Layout conversions made so far: (value, target layout) to the converted value.
    converted: HashMap<(ValueId, Layout), ValueId>,
    pub blockers: Blockers,
    pub opset: i64,
    /// Which node is being translated (for origins).
    pub current: String,
}

/// The permutation from channels-first to channels-last order of a rank: `[0, 2, .., 1]`.
pub(super) fn to_last(rank: usize) -> Vec<usize> {
    let mut p = vec![0];
    p.extend(2..rank);
    p.push(1);
    p
}

/// The permutation back: `[0, rank - 1, 1, ..]`. Also maps an ONNX axis to the axis of a
/// channels-last value that holds it.
pub(super) fn to_first(rank: usize) -> Vec<usize> {
    let mut p = vec![0, rank - 1];
    p.extend(1..rank - 1);
    p
}

/// The longest integer vector whose elements are tracked at load.
pub(super) const MAX_KNOWN: usize = 16;

/// Sizes that stand for unknown axes while shapes are worked out at load: two runs with
/// different stand-ins agree exactly on the axes that do not depend on an unknown.
const STAND_INS: [usize; 2] = [7919, 7933];

pub(super) fn dtype_of(onnx: i32) -> Result<DType, Block> {
    Ok(match onnx {
        dt::FLOAT | dt::FLOAT16 | dt::DOUBLE => DType::F32,
        dt::UINT8 => DType::U8,
        dt::INT8 => DType::I8,
        dt::INT16 => DType::I16,
        dt::INT32 => DType::I32,
        dt::INT64 => DType::I64,
        dt::BOOL => DType::Bool,
        dt::STRING => return block("string tensors"),
        other => return block(format!("ONNX element type {other}")),
    })
}

/// The contents of a tensor proto, and its shape.
pub(super) fn tensor_data(t: &TensorProto) -> Result<(Data, Vec<usize>), Block> {
    if t.data_location == 1 {
        return block("data in external files (the model must be one file)");
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()
        .map_or_else(|| block("a negative dimension"), Ok)?;
    let count = element_count(&shape).map_or_else(|| block("a tensor too large to hold"), Ok)?;
    let raw = &t.raw_data;
    let data = match t.data_type {
        dt::FLOAT if !raw.is_empty() => Data::from_le_bytes(DType::F32, raw),
        dt::FLOAT => Some(Data::F32(t.float_data.clone())),
        dt::DOUBLE if !raw.is_empty() => raw.len().is_multiple_of(8).then(|| {
            Data::F32(
                raw.chunks_exact(8)
                    .map(|b| {
                        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                    })
                    .collect(),
            )
        }),
        dt::DOUBLE => Some(Data::F32(t.double_data.iter().map(|v| *v as f32).collect())),
        dt::FLOAT16 if !raw.is_empty() => raw.len().is_multiple_of(2).then(|| {
            Data::F32(
                raw.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            )
        }),
        dt::FLOAT16 => Some(Data::F32(
            t.int32_data
                .iter()
                .map(|v| half::f16::from_bits(*v as u16).to_f32())
                .collect(),
        )),
        dt::INT64 if !raw.is_empty() => Data::from_le_bytes(DType::I64, raw),
        dt::INT64 => Some(Data::I64(t.int64_data.clone())),
        dt::INT32 if !raw.is_empty() => Data::from_le_bytes(DType::I32, raw),
        dt::INT32 => Some(Data::I32(t.int32_data.clone())),
        dt::INT16 if !raw.is_empty() => Data::from_le_bytes(DType::I16, raw),
        dt::INT16 => Some(Data::I16(t.int32_data.iter().map(|v| *v as i16).collect())),
        dt::INT8 if !raw.is_empty() => Data::from_le_bytes(DType::I8, raw),
        dt::INT8 => Some(Data::I8(t.int32_data.iter().map(|v| *v as i8).collect())),
        dt::UINT8 if !raw.is_empty() => Data::from_le_bytes(DType::U8, raw),
        dt::UINT8 => Some(Data::U8(t.int32_data.iter().map(|v| *v as u8).collect())),
        dt::BOOL if !raw.is_empty() => Data::from_le_bytes(DType::Bool, raw),
        dt::BOOL => Some(Data::Bool(t.int32_data.iter().map(|v| *v != 0).collect())),
        other => {
            dtype_of(other)?;
            None
        }
    };
    let data = data.map_or_else(
        || block(format!("tensor {:?} has partial elements", t.name)),
        Ok,
    )?;
    if data.len() != count {
        return block(format!(
            "tensor {:?} holds {} elements for shape {shape:?}",
            t.name,
            data.len()
        ));
    }
    Ok((data, shape))
}

fn declared(info: &ValueInfoProto) -> Option<(i32, Vec<Option<usize>>)> {
    let proto::type_proto::Value::TensorType(t) = info.r#type.as_ref()?.value.as_ref()?;
    let dims = t
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                usize::try_from(v).ok().filter(|v| *v > 0)
            }
            _ => None,
        })
        .collect();
    Some((t.elem_type, dims))
}

/// Reads an ONNX model.
pub fn read(bytes: &[u8], options: &OnnxOptions) -> Result<Graph, LoadError> {
    let model = ModelProto::decode(bytes).map_err(|e| LoadError::malformed(FORMAT, e))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| LoadError::malformed(FORMAT, "the file holds no graph"))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1);
    let mut imp = Importer {
        graph: Graph::default(),
        names: HashMap::new(),
        poisoned: HashSet::new(),
        converted: HashMap::new(),
        blockers: Blockers::default(),
        opset,
        current: String::new(),
    };
    imp.initializers(graph);
    imp.inputs(graph, options)?;
    imp.nodes(graph);
    imp.outputs(graph);
    if !imp.blockers.is_empty() {
        return Err(LoadError::Unsupported(std::mem::take(&mut imp.blockers.0)));
    }
    if imp.graph.outputs.is_empty() {
        return Err(LoadError::malformed(FORMAT, "the graph has no outputs"));
    }
    Ok(imp.graph)
}

impl Importer {
    fn initializers(&mut self, graph: &GraphProto) {
        for t in &graph.initializer {
            match tensor_data(t) {
                Ok((data, shape)) => {
                    let e = self.constant(&t.name, data, shape);
                    self.names.insert(t.name.clone(), e);
                }
                Err(b) => {
                    self.blockers.add("initializer", b.0);
                    self.poisoned.insert(t.name.clone());
                }
            }
        }
    }

    fn inputs(&mut self, graph: &GraphProto, options: &OnnxOptions) -> Result<(), LoadError> {
        let mut unused: Vec<&String> = options
            .input_shapes
            .keys()
            .chain(options.input_values.keys())
            .collect();
        for info in &graph.input {
            if self.names.contains_key(&info.name) {
                continue;
            }
            unused.retain(|n| **n != info.name);
            let Some((elem, mut dims)) = declared(info) else {
                self.blockers.add(
                    "model input",
                    format!("input {:?} declares no tensor type", info.name),
                );
                continue;
            };
            if let Some(shape) = options.input_shapes.get(&info.name) {
                dims = shape.iter().map(|&d| usize::try_from(d).ok()).collect();
            }
            let dtype = match dtype_of(elem) {
                Ok(d) => d,
                Err(b) => {
                    self.blockers.add("model input", b.0);
                    continue;
                }
            };
            if let Some(values) = options.input_values.get(&info.name) {
                let shape: Vec<usize> =
                    if dims.is_empty() || values.len() == 1 && dims.iter().all(|d| *d == Some(1)) {
                        dims.iter().map(|_| 1).collect()
                    } else {
                        dims.iter().map(|d| d.unwrap_or(0)).collect()
                    };
                if element_count(&shape) != Some(values.len()) {
                    return Err(LoadError::Options(format!(
                        "input {:?} takes {} values, {} given",
                        info.name,
                        element_count(&shape).unwrap_or(0),
                        values.len()
                    )));
                }
                let data = match dtype {
                    DType::F32 => Data::F32(values.iter().map(|v| *v as f32).collect()),
                    DType::I64 => Data::I64(values.iter().map(|v| *v as i64).collect()),
                    DType::I32 => Data::I32(values.iter().map(|v| *v as i32).collect()),
                    DType::Bool => Data::Bool(values.iter().map(|v| *v != 0.0).collect()),
                    other => {
                        return Err(LoadError::Options(format!(
                            "a fixed value for a {other} input"
                        )));
                    }
                };
                let e = self.constant(&info.name, data, shape);
                self.names.insert(info.name.clone(), e);
                continue;
            }
            let id = self.graph.add_value(Value {
                name: info.name.clone(),
                dtype,
                shape: dims.clone(),
                quant: None,
                constant: None,
            });
            self.graph.inputs.push(id);
            self.names.insert(
                info.name.clone(),
                Entry {
                    value: id,
                    layout: Layout::Plain,
                    dims,
                    known: None,
                },
            );
        }
        if let Some(name) = unused.first() {
            return Err(LoadError::Options(format!(
                "the model has no input named {name:?}"
            )));
        }
        Ok(())
    }

    fn nodes(&mut self, graph: &GraphProto) {
        for (n, node) in graph.node.iter().enumerate() {
            let name = node_name(node);
            self.current = format!("{name} #{n}");
            self.translate(node, name);
        }
    }

    /// Translates one node; if it cannot be, records why (once: not again for its readers).
    fn translate(&mut self, node: &proto::NodeProto, name: String) {
        if let Err(b) = super::ops::translate(self, node) {
            if b.0 != POISONED {
                self.blockers.add(name, b.0);
            }
            self.poisoned
                .extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }

    fn outputs(&mut self, graph: &GraphProto) {
        for info in &graph.output {
            if self.poisoned.contains(&info.name) {
                continue;
            }
            match self.plain(&info.name) {
                Ok(v) => {
                    // A value that is also an input or another output gets its own copy, so
                    // the name clients see is this output's.
                    let v = if self.graph.inputs.contains(&v) || self.graph.outputs.contains(&v) {
                        let entry = self.names.get(&info.name).cloned();
                        let dtype = self.graph.values[v].dtype;
                        let dims = entry.map(|e| e.dims).unwrap_or_default();
                        let copy = self.new_value(&info.name, dtype, dims.clone(), None);
                        self.node(
                            Op::Unary(crate::graph::UnaryOp::Identity),
                            vec![v],
                            vec![copy],
                        );
                        copy
                    } else {
                        v
                    };
                    self.graph.values[v].name = info.name.clone();
                    self.graph.outputs.push(v);
                }
                Err(b) => self.blockers.add("model output", b.0),
            }
        }
    }

    /// A constant value (not yet bound to a name).
    pub fn constant(&mut self, name: &str, data: Data, shape: Vec<usize>) -> Entry {
        let dims = shape.iter().map(|d| Some(*d)).collect();
        let known = (shape.len() <= 1 && data.len() <= MAX_KNOWN)
            .then(|| data.to_i64())
            .flatten()
            .map(|v| v.into_iter().map(Some).collect());
        let value = self.graph.add_const(name, data, shape);
        Entry {
            value,
            layout: Layout::Plain,
            dims,
            known,
        }
    }

    pub fn entry(&self, name: &str) -> Result<Entry, Block> {
        if self.poisoned.contains(name) {
            return block(POISONED);
        }
        self.names.get(name).cloned().map_or_else(
            || block(format!("tensor {name:?} is used before it is computed")),
            Ok,
        )
    }

    /// Records what is known of a bound tensor's elements.
    pub fn set_known(&mut self, name: &str, known: Vec<Option<i64>>) {
        if let Some(e) = self.names.get_mut(name)
            && known.len() <= MAX_KNOWN
        {
            e.known = Some(known);
        }
    }

    /// Narrows the shape of a bound plain tensor to what is known of it.
    pub fn refine_dims(&mut self, name: &str, dims: Vec<Option<usize>>) {
        if let Some(e) = self.names.get_mut(name)
            && e.layout == Layout::Plain
            && e.dims.len() == dims.len()
        {
            let v = &mut self.graph.values[e.value];
            for ((d, k), n) in e.dims.iter_mut().zip(v.shape.iter_mut()).zip(dims) {
                if d.is_none() {
                    *d = n;
                    *k = n;
                }
            }
        }
    }

    pub fn bind(&mut self, name: &str, entry: Entry) {
        self.names.insert(name.to_owned(), entry);
    }

    /// The constant contents of a named tensor, when it is constant.
    pub fn const_of(&self, name: &str) -> Option<(Arc<Data>, Vec<usize>)> {
        let e = self.names.get(name)?;
        let data = self.graph.constant(e.value)?.clone();
        let shape = self.graph.const_shape(e.value)?;
        (e.layout == Layout::Plain).then_some((data, shape))
    }

    /// The elements of a small constant integer vector.
    fn known_of_value(&self, v: ValueId) -> Option<Vec<Option<i64>>> {
        let data = self.graph.constant(v)?;
        let shape = self.graph.const_shape(v)?;
        (shape.len() <= 1 && data.len() <= MAX_KNOWN)
            .then(|| data.to_i64())
            .flatten()
            .map(|v| v.into_iter().map(Some).collect())
    }

    /// The constant contents and shape of a value, when it is constant.
    pub fn const_of_value(&self, v: ValueId) -> Option<(Arc<Data>, Vec<usize>)> {
        Some((self.graph.constant(v)?.clone(), self.graph.const_shape(v)?))
    }

    /// A new computed value (`dims` in the value's own axis order).
    pub fn new_value(
        &mut self,
        name: &str,
        dtype: DType,
        dims: Vec<Option<usize>>,
        quant: Option<crate::graph::Quant>,
    ) -> ValueId {
        self.graph.add_value(Value {
            name: name.to_owned(),
            dtype,
            shape: dims,
            quant,
            constant: None,
        })
    }

    /// Adds a node; when all its inputs are constants it is evaluated now and its outputs
    /// become constants.
    pub fn node(&mut self, op: Op, inputs: Vec<ValueId>, outputs: Vec<ValueId>) {
        let node = Node {
            op,
            inputs,
            outputs,
            origin: self.current.clone(),
        };
        let foldable =
            !node.inputs.is_empty() && node.inputs.iter().all(|&i| self.graph.values[i].is_const());
        if foldable && let Ok(results) = crate::plan::evaluate(&self.graph, &node, MAX_FOLDED) {
            for (&o, (data, shape)) in node.outputs.iter().zip(results) {
                let v = &mut self.graph.values[o];
                v.shape = shape.iter().map(|d| Some(*d)).collect();
                v.constant = Some(data);
            }
            return;
        }
        self.graph.nodes.push(node);
    }

    /// The value of a named tensor in ONNX's own layout.
    pub fn plain(&mut self, name: &str) -> Result<ValueId, Block> {
        let e = self.entry(name)?;
        self.in_layout(&e, Layout::Plain)
    }

    /// The value of a tensor of rank 3 or more in channels-last order.
    pub fn last(&mut self, name: &str) -> Result<ValueId, Block> {
        let e = self.entry(name)?;
        if e.rank() < 3 {
            return block(format!(
                "{name:?} has rank {}; an image (rank 3 or more) was expected",
                e.rank()
            ));
        }
        self.in_layout(&e, Layout::Last)
    }

    /// `e`'s value converted to `layout` (one transpose, made once per value).
    pub fn in_layout(&mut self, e: &Entry, layout: Layout) -> Result<ValueId, Block> {
        if e.layout == layout {
            return Ok(e.value);
        }
        if let Some(&v) = self.converted.get(&(e.value, layout)) {
            return Ok(v);
        }
        let perm = match layout {
            Layout::Last => to_last(e.rank()),
            Layout::Plain => to_first(e.rank()),
        };
        let from = &self.graph.values[e.value];
        let dims: Vec<Option<usize>> = perm
            .iter()
            .map(|&p| from.shape.get(p).copied().flatten())
            .collect();
        let (name, dtype, quant) = (
            format!("{}.{layout:?}", from.name),
            from.dtype,
            from.quant.clone(),
        );
        let v = self.new_value(&name, dtype, dims, quant);
        self.node(Op::Transpose(perm), vec![e.value], vec![v]);
        self.converted.insert((e.value, layout), v);
        Ok(v)
    }

    /// Adds `op` computing the named outputs (each held in `layout`, of type `dtype`), works
    /// out their shapes and binds the names. `rank` is the outputs' rank where it cannot be
    /// worked out at load (a reshape to a computed shape).
    pub fn emit(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        outputs: &[(&str, DType)],
        layout: Layout,
        rank: Option<usize>,
    ) -> Result<Vec<ValueId>, Block> {
        let ids: Vec<ValueId> = outputs
            .iter()
            .map(|(name, dtype)| self.new_value(name, *dtype, Vec::new(), None))
            .collect();
        let dims = self.infer_dims(&op, &inputs, &ids, rank)?;
        for (&id, d) in ids.iter().zip(&dims) {
            self.graph.values[id].shape = d.clone();
        }
        self.node(op, inputs, ids.clone());
        for (&id, (name, _)) in ids.iter().zip(outputs) {
            let value_dims = self.graph.values[id].shape.clone();
            let dims = match layout {
                Layout::Plain => value_dims,
                Layout::Last => to_first(value_dims.len())
                    .iter()
                    .map(|&p| value_dims[p])
                    .collect(),
            };
            if !name.is_empty() {
                let known = self.known_of_value(id);
                self.bind(
                    name,
                    Entry {
                        value: id,
                        layout,
                        dims,
                        known,
                    },
                );
            }
        }
        Ok(ids)
    }

    /// The outputs' shapes with unknown axes as `None`: shapes are inferred twice, unknown
    /// input axes standing in as two different sizes; axes that differ depend on them.
    fn infer_dims(
        &self,
        op: &Op,
        inputs: &[ValueId],
        outputs: &[ValueId],
        rank: Option<usize>,
    ) -> Result<Vec<Vec<Option<usize>>>, Block> {
        let node = Node {
            op: op.clone(),
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
            origin: self.current.clone(),
        };
        let consts: Vec<Option<&Data>> = inputs
            .iter()
            .map(|&i| self.graph.constant(i).map(|d| &**d))
            .collect();
        let mut runs = Vec::with_capacity(2);
        for stand_in in STAND_INS {
            let shapes: Vec<Vec<usize>> = inputs
                .iter()
                .map(|&i| {
                    self.graph.values[i]
                        .shape
                        .iter()
                        .map(|d| d.unwrap_or(stand_in))
                        .collect()
                })
                .collect();
            let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
            runs.push(crate::plan::shapes::infer(
                &self.graph,
                &node,
                &refs,
                &consts,
            ));
        }
        match (&runs[0], &runs[1]) {
            (Ok(a), Ok(b)) if a.len() == outputs.len() && b.len() == a.len() => Ok(a
                .iter()
                .zip(b)
                .map(|(x, y)| {
                    if x.len() != y.len() {
                        return vec![None; x.len()];
                    }
                    x.iter()
                        .zip(y)
                        .map(|(p, q)| (p == q).then_some(*p))
                        .collect()
                })
                .collect()),
            (Err(e), _) | (_, Err(e)) => {
                if let Some(dims) = self
                    .dense_dims(op, inputs)
                    .or_else(|| self.concat_dims(op, inputs))
                {
                    return Ok(vec![dims]);
                }
                if let Some(rank) = rank.or_else(|| self.broadcast_rank(op, inputs)) {
                    return Ok(vec![self.broadcast_dims(op, inputs, rank); outputs.len()]);
                }
                block(e.clone())
            }
            _ => block("the outputs do not match the operator"),
        }
    }

    /// A dense layer over an input of unknown size: its leading axes, then the weights' rows.
    fn dense_dims(&self, op: &Op, inputs: &[ValueId]) -> Option<Vec<Option<usize>>> {
        let Op::FullyConnected { keep_dims, .. } = op else {
            return None;
        };
        let x = &self.graph.values[*inputs.first()?].shape;
        let n = self.graph.const_shape(*inputs.get(1)?)?.first().copied();
        let mut dims = if *keep_dims {
            x[..x.len().checked_sub(1)?].to_vec()
        } else {
            vec![None]
        };
        dims.push(n);
        Some(dims)
    }

    /// A concatenation whose inputs' known axes conflict with a stand-in: each other axis as
    /// any input knows it, the joined axis summed.
    fn concat_dims(&self, op: &Op, inputs: &[ValueId]) -> Option<Vec<Option<usize>>> {
        let Op::Concat { axis, .. } = op else {
            return None;
        };
        let shapes: Vec<&Vec<Option<usize>>> = inputs
            .iter()
            .map(|&i| &self.graph.values[i].shape)
            .collect();
        let rank = shapes.first()?.len();
        if shapes.iter().any(|s| s.len() != rank) || *axis >= rank {
            return None;
        }
        Some(
            (0..rank)
                .map(|d| {
                    if d == *axis {
                        shapes.iter().try_fold(0usize, |a, s| s[d].map(|v| a + v))
                    } else {
                        shapes.iter().find_map(|s| s[d])
                    }
                })
                .collect(),
        )
    }

    /// Elementwise ops whose inputs' known axes conflict with a stand-in: the rank of the
    /// broadcast.
    fn broadcast_rank(&self, op: &Op, inputs: &[ValueId]) -> Option<usize> {
        matches!(
            op,
            Op::Binary { .. } | Op::Compare(_) | Op::Where | Op::Prelu
        )
        .then(|| {
            inputs
                .iter()
                .map(|&i| self.graph.values[i].shape.len())
                .max()
        })
        .flatten()
    }

    fn broadcast_dims(&self, op: &Op, inputs: &[ValueId], rank: usize) -> Vec<Option<usize>> {
        if self.broadcast_rank(op, inputs) != Some(rank) {
            return vec![None; rank];
        }
        (0..rank)
            .map(|axis| {
                let mut all_one = true;
                for &i in inputs {
                    let s = &self.graph.values[i].shape;
                    let Some(k) = (axis + s.len()).checked_sub(rank) else {
                        continue;
                    };
                    match s[k] {
                        Some(1) => {}
                        Some(d) => return Some(d),
                        None => all_one = false,
                    }
                }
                all_one.then_some(1)
            })
            .collect()
    }

    /// Translates a subgraph's nodes (an `If` branch) in this scope and gives its outputs.
    pub fn inline(&mut self, graph: &GraphProto) -> Result<Vec<Entry>, Block> {
        self.initializers(graph);
        let outer = self.current.clone();
        for (n, node) in graph.node.iter().enumerate() {
            let name = node_name(node);
            self.current = format!("{outer} / {name} #{n}");
            self.translate(node, name);
        }
        self.current = outer;
        graph.output.iter().map(|o| self.entry(&o.name)).collect()
    }
}

/// An operator's name as reports give it: the op type, with its domain when not ONNX's own.
pub(super) fn node_name(node: &proto::NodeProto) -> String {
    if node.domain.is_empty() || node.domain == "ai.onnx" {
        node.op_type.clone()
    } else {
        format!("{}.{}", node.domain, node.op_type)
    }
}
