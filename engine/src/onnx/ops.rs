//! ONNX operators to graph ops: the dispatch, attribute access, and the elementwise,
//! reduction and control-flow operators. Shape and data-movement operators are in
//! [`super::shaping`], image and sequence operators in [`super::nn`], matrix products in
//! [`super::linear`], the `ai.onnx.ml` domain in [`super::ml`].

use std::sync::Arc;

use super::import::{Block, Entry, Importer, Layout, block, dtype_of};
use super::proto::{AttributeProto, NodeProto};
use crate::graph::{BinaryOp, CompareOp, Op, ReduceKind, UnaryOp};
use crate::tensor::{DType, Data};

/// One node being translated: the importer and the node's attributes and operands.
pub(super) struct Cx<'a> {
    pub imp: &'a mut Importer,
    pub node: &'a NodeProto,
}

impl Cx<'_> {
    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }

    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.attr(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    /// Whether optional input `i` is given.
    pub fn has(&self, i: usize) -> bool {
        self.node.input.get(i).is_some_and(|n| !n.is_empty())
    }

    pub fn input_name(&self, i: usize) -> Result<&str, Block> {
        match self.node.input.get(i) {
            Some(n) if !n.is_empty() => Ok(n),
            _ => block(format!("input {i} is missing")),
        }
    }

    pub fn entry(&self, i: usize) -> Result<Entry, Block> {
        self.imp.entry(self.input_name(i)?)
    }

    pub fn plain(&mut self, i: usize) -> Result<ValueId, Block> {
        let name = self.input_name(i)?.to_owned();
        self.imp.plain(&name)
    }

    pub fn last(&mut self, i: usize) -> Result<ValueId, Block> {
        let name = self.input_name(i)?.to_owned();
        self.imp.last(&name)
    }

    /// The contents and shape of input `i` when known at load.
    pub fn const_input(&self, i: usize) -> Option<(Arc<Data>, Vec<usize>)> {
        self.imp.const_of(self.node.input.get(i)?)
    }

    /// Integer contents of input `i`, which must be known at load.
    pub fn const_ints(&self, i: usize, what: &str) -> Result<Vec<i64>, Block> {
        match self.const_input(i) {
            Some((d, _)) => d
                .to_i64()
                .map_or_else(|| block(format!("{what} is not integer")), Ok),
            None => block(format!("{what} computed at run time")),
        }
    }

    pub fn const_floats(&self, i: usize, what: &str) -> Result<Vec<f32>, Block> {
        match self.const_input(i) {
            Some((d, _)) => Ok(d.to_f32()),
            None => block(format!("{what} computed at run time")),
        }
    }

    pub fn out(&self, i: usize) -> &str {
        self.node.output.get(i).map_or("", String::as_str)
    }

    /// A name for an intermediate value of this node.
    pub fn temp(&self, what: &str) -> String {
        format!("{}#{what}", self.out(0))
    }

    pub fn dtype(&self, v: ValueId) -> DType {
        self.imp.graph.values[v].dtype
    }

    /// Emits `op` computing output 0.
    pub fn emit(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        dtype: DType,
        layout: Layout,
    ) -> Result<ValueId, Block> {
        let name = self.out(0).to_owned();
        self.emit_named(&name, op, inputs, dtype, layout, None)
    }

    pub fn emit_named(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<ValueId>,
        dtype: DType,
        layout: Layout,
        rank: Option<usize>,
    ) -> Result<ValueId, Block> {
        let ids = self.imp.emit(op, inputs, &[(name, dtype)], layout, rank)?;
        Ok(ids[0])
    }

    /// What is known of input `i`'s elements (a shape computed at load).
    pub fn known(&self, i: usize) -> Option<Vec<Option<i64>>> {
        self.entry(i).ok()?.known
    }

    pub fn set_known(&mut self, known: Vec<Option<i64>>) {
        let name = self.out(0).to_owned();
        self.imp.set_known(&name, known);
    }

    /// Binds output 0 to an existing tensor (Identity, Dropout, a no-op cast).
    pub fn alias(&mut self, e: Entry) {
        let name = self.out(0).to_owned();
        self.imp.bind(&name, e);
    }

    /// A constant in plain layout, bound to `name`.
    pub fn constant(&mut self, name: &str, data: Data, shape: Vec<usize>) -> ValueId {
        let e = self.imp.constant(name, data, shape);
        let v = e.value;
        self.imp.bind(name, e);
        v
    }

    /// The operands of an elementwise op, in one layout: channels last when a channels-last
    /// operand is there and every other is of its rank or a constant (which is permuted to
    /// match); otherwise ONNX's order.
    pub fn operands(&mut self, entries: &[Entry]) -> Result<(Vec<ValueId>, Layout), Block> {
        let rank = entries.iter().map(Entry::rank).max().unwrap_or(0);
        let is_const = |imp: &Importer, e: &Entry| imp.graph.values[e.value].is_const();
        let last = entries.iter().any(|e| e.layout == Layout::Last)
            && entries
                .iter()
                .all(|e| e.rank() == rank || is_const(self.imp, e));
        let mut values = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if !last {
                values.push(self.imp.in_layout(e, Layout::Plain)?);
                continue;
            }
            if e.layout == Layout::Last {
                values.push(e.value);
                continue;
            }
            let count = self.imp.graph.values[e.value]
                .shape
                .iter()
                .try_fold(1usize, |a, d| d.map(|d| a * d));
            if is_const(self.imp, e) && count == Some(1) {
                values.push(e.value);
                continue;
            }
            let e = if e.rank() < rank {
                // Aligned to the right, as broadcasting aligns it, then permuted.
                let (data, shape) = self.imp.const_of_value(e.value).map_or_else(
                    || block("an operand of lower rank computed at run time"),
                    Ok,
                )?;
                let mut padded = vec![1; rank - shape.len()];
                padded.extend(&shape);
                let name = self.temp(&format!("operand{i}"));
                self.imp.constant(&name, (*data).clone(), padded)
            } else {
                e.clone()
            };
            values.push(self.imp.in_layout(&e, Layout::Last)?);
        }
        Ok((values, if last { Layout::Last } else { Layout::Plain }))
    }

    /// An elementwise op over all inputs (with broadcasting); output type `dtype` or the
    /// first input's.
    pub fn elementwise(&mut self, op: Op, dtype: Option<DType>) -> Result<(), Block> {
        let entries: Vec<Entry> = (0..self.node.input.len())
            .map(|i| self.entry(i))
            .collect::<Result<_, _>>()?;
        let (values, layout) = self.operands(&entries)?;
        let Some(&first) = values.first() else {
            return block("an elementwise op with no inputs");
        };
        let dtype = dtype.unwrap_or_else(|| self.dtype(first));
        self.emit(op, values, dtype, layout)?;
        Ok(())
    }

    fn unary(&mut self, op: UnaryOp) -> Result<(), Block> {
        let e = self.entry(0)?;
        let dtype = self.dtype(e.value);
        self.emit(Op::Unary(op), vec![e.value], dtype, e.layout)?;
        Ok(())
    }

    fn binary(&mut self, op: BinaryOp) -> Result<(), Block> {
        let known = match (self.known(0), self.known(1)) {
            (Some(a), Some(b)) if a.len() == b.len() || a.len() == 1 || b.len() == 1 => {
                let n = a.len().max(b.len());
                let at = |v: &Vec<Option<i64>>, i: usize| if v.len() == 1 { v[0] } else { v[i] };
                Some(
                    (0..n)
                        .map(|i| {
                            let (x, y) = (at(&a, i)?, at(&b, i)?);
                            match op {
                                BinaryOp::Add => x.checked_add(y),
                                BinaryOp::Sub => x.checked_sub(y),
                                BinaryOp::Mul => x.checked_mul(y),
                                BinaryOp::Div => x.checked_div(y),
                                _ => None,
                            }
                        })
                        .collect(),
                )
            }
            _ => None,
        };
        self.binary_op(op)?;
        if let Some(k) = known {
            self.set_known(k);
        }
        Ok(())
    }

    fn binary_op(&mut self, op: BinaryOp) -> Result<(), Block> {
        self.elementwise(
            Op::Binary {
                op,
                activation: crate::graph::Activation::None,
            },
            None,
        )
    }

    /// A variadic op (Sum, Max, Min, Mean) as a chain of binary ops.
    fn variadic(&mut self, op: BinaryOp) -> Result<(), Block> {
        let n = self.node.input.len();
        if n == 0 {
            return block("no inputs");
        }
        let mut acc = self.entry(0)?;
        for i in 1..n {
            let next = self.entry(i)?;
            let (values, layout) = self.operands(&[acc, next])?;
            let name = if i + 1 == n {
                self.out(0).to_owned()
            } else {
                self.temp(&format!("acc{i}"))
            };
            let dtype = self.dtype(values[0]);
            let binary = Op::Binary {
                op,
                activation: crate::graph::Activation::None,
            };
            self.emit_named(&name, binary, values, dtype, layout, None)?;
            acc = self.imp.entry(&name)?;
        }
        if n == 1 {
            self.alias(acc);
        }
        Ok(())
    }

    /// ONNX axis `axis` (negative counts from the end) of a tensor of `rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize, Block> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if (0..r.max(1)).contains(&a) {
            Ok(a as usize)
        } else {
            block(format!("axis {axis} is out of range for rank {rank}"))
        }
    }

    /// Axes from the attribute (older opsets) or input `i` (newer ones).
    pub fn axes(&self, since: i64, i: usize) -> Result<Option<Vec<i64>>, Block> {
        if self.imp.opset >= since {
            if self.has(i) {
                return self.const_ints(i, "axes").map(Some);
            }
            return Ok(None);
        }
        Ok(self.ints("axes"))
    }
}

use crate::graph::ValueId;

pub(super) fn translate(imp: &mut Importer, node: &NodeProto) -> Result<(), Block> {
    let mut cx = Cx { imp, node };
    let c = &mut cx;
    if !(node.domain.is_empty() || node.domain == "ai.onnx") {
        return super::ml::translate(c);
    }
    match node.op_type.as_str() {
        "Conv" => super::nn::conv(c),
        "ConvTranspose" => super::nn::conv_transpose(c),
        "BatchNormalization" => super::nn::batch_norm(c),
        "InstanceNormalization" => super::nn::instance_norm(c),
        "LayerNormalization" => super::nn::layer_norm(c),
        "MaxPool" | "AveragePool" => super::nn::pool(c),
        "GlobalAveragePool" => super::nn::global_pool(c, ReduceKind::Mean),
        "GlobalMaxPool" => super::nn::global_pool(c, ReduceKind::Max),
        "LRN" => super::nn::lrn(c),
        "Resize" | "Upsample" => super::nn::resize(c),
        "Gemm" => super::linear::gemm(c),
        "MatMul" => super::linear::matmul(c),
        "LSTM" => super::nn::lstm(c),
        "Add" => c.binary(BinaryOp::Add),
        "Sub" => c.binary(BinaryOp::Sub),
        "Mul" => c.binary(BinaryOp::Mul),
        "Div" => c.binary(BinaryOp::Div),
        "Pow" => c.binary(BinaryOp::Pow),
        "Sum" => c.variadic(BinaryOp::Add),
        "Max" => c.variadic(BinaryOp::Max),
        "Min" => c.variadic(BinaryOp::Min),
        "Mean" => mean(c),
        "Equal" => c.elementwise(Op::Compare(CompareOp::Equal), Some(DType::Bool)),
        "Less" => c.elementwise(Op::Compare(CompareOp::Less), Some(DType::Bool)),
        "LessOrEqual" => c.elementwise(Op::Compare(CompareOp::LessOrEqual), Some(DType::Bool)),
        "Greater" => c.elementwise(Op::Compare(CompareOp::Greater), Some(DType::Bool)),
        "GreaterOrEqual" => {
            c.elementwise(Op::Compare(CompareOp::GreaterOrEqual), Some(DType::Bool))
        }
        "And" => c.elementwise(Op::Compare(CompareOp::And), Some(DType::Bool)),
        "Or" => c.elementwise(Op::Compare(CompareOp::Or), Some(DType::Bool)),
        "Not" => {
            let e = c.entry(0)?;
            c.emit(Op::Not, vec![e.value], DType::Bool, e.layout)?;
            Ok(())
        }
        "Where" => {
            let entries = vec![c.entry(0)?, c.entry(1)?, c.entry(2)?];
            let (values, layout) = c.operands(&entries)?;
            let dtype = c.dtype(values[1]);
            c.emit(Op::Where, values, dtype, layout)?;
            Ok(())
        }
        "PRelu" => c.elementwise(Op::Prelu, None),
        "Relu" => c.unary(UnaryOp::Relu),
        "Sigmoid" => c.unary(UnaryOp::Sigmoid),
        "Tanh" => c.unary(UnaryOp::Tanh),
        "HardSwish" => c.unary(UnaryOp::HardSwish),
        "HardSigmoid" => {
            let (alpha, beta) = (c.float("alpha", 0.2), c.float("beta", 0.5));
            c.unary(UnaryOp::HardSigmoid { alpha, beta })
        }
        "LeakyRelu" => {
            let alpha = c.float("alpha", 0.01);
            c.unary(UnaryOp::LeakyRelu(alpha))
        }
        "Elu" => {
            let alpha = c.float("alpha", 1.0);
            c.unary(UnaryOp::Elu(alpha))
        }
        "Gelu" => match c.string("approximate").as_deref() {
            None | Some("none") => c.unary(UnaryOp::Gelu),
            Some(other) => block(format!("approximate = {other:?}")),
        },
        "Exp" => c.unary(UnaryOp::Exp),
        "Log" => c.unary(UnaryOp::Log),
        "Sqrt" => c.unary(UnaryOp::Sqrt),
        "Neg" => c.unary(UnaryOp::Neg),
        "Abs" => c.unary(UnaryOp::Abs),
        "Floor" => c.unary(UnaryOp::Floor),
        "Ceil" => c.unary(UnaryOp::Ceil),
        "Round" => c.unary(UnaryOp::Round),
        "Sin" => c.unary(UnaryOp::Sin),
        "Cos" => c.unary(UnaryOp::Cos),
        "Erf" => c.unary(UnaryOp::Erf),
        "Softplus" => c.unary(UnaryOp::Softplus),
        "Reciprocal" => {
            let e = c.entry(0)?;
            let one = c.imp.constant(&c.temp("one"), Data::F32(vec![1.0]), vec![]);
            let div = Op::Binary {
                op: BinaryOp::Div,
                activation: crate::graph::Activation::None,
            };
            c.emit(div, vec![one.value, e.value], DType::F32, e.layout)?;
            Ok(())
        }
        "Clip" => clip(c),
        "Identity" | "Dropout" => {
            // Inference: the output is the input (a mask output, when named, is not made;
            // a model that reads it reports that tensor as missing).
            let e = c.entry(0)?;
            c.alias(e);
            Ok(())
        }
        "Cast" => {
            let to = dtype_of(c.int("to", 1) as i32)?;
            let e = c.entry(0)?;
            let known = e.known.clone();
            if c.dtype(e.value) == to {
                c.alias(e);
            } else {
                c.emit(Op::Cast, vec![e.value], to, e.layout)?;
                if let Some(k) = known.filter(|_| matches!(to, DType::I64 | DType::I32)) {
                    c.set_known(k);
                }
            }
            Ok(())
        }
        "Constant" => super::shaping::constant(c),
        "ConstantOfShape" => super::shaping::constant_of_shape(c),
        "Range" => super::shaping::range(c),
        "Shape" => super::shaping::shape(c),
        "Size" => {
            let e = c.entry(0)?;
            let n: Option<usize> = e
                .dims
                .iter()
                .try_fold(1usize, |a, d| d.and_then(|d| a.checked_mul(d)));
            let n = n.map_or_else(
                || block("the size of a tensor whose shape is known only at run time"),
                Ok,
            )?;
            let out = c.out(0).to_owned();
            c.constant(&out, Data::I64(vec![n as i64]), vec![]);
            Ok(())
        }
        "Reshape" => super::shaping::reshape(c),
        "Flatten" => {
            let e = c.entry(0)?;
            let axis = c.axis(c.int("axis", 1), e.rank() + 1)?;
            let x = c.plain(0)?;
            let dtype = c.dtype(x);
            c.emit(Op::Flatten(axis), vec![x], dtype, Layout::Plain)?;
            Ok(())
        }
        "Squeeze" => super::shaping::squeeze(c),
        "Unsqueeze" => super::shaping::unsqueeze(c),
        "Transpose" => super::shaping::transpose(c),
        "Concat" => super::shaping::concat(c),
        "Split" => super::shaping::split(c),
        "Slice" => super::shaping::slice(c),
        "Pad" => super::shaping::pad(c),
        "Gather" => {
            let e = c.entry(0)?;
            let axis = c.axis(c.int("axis", 0), e.rank())?;
            let x = c.plain(0)?;
            let idx = c.plain(1)?;
            let dtype = c.dtype(x);
            let picked = match (e.known.as_ref(), c.const_input(1)) {
                (Some(k), Some((i, _))) if axis == 0 => i.to_i64().map(|i| {
                    i.iter()
                        .map(|&j| {
                            let j = if j < 0 { j + k.len() as i64 } else { j };
                            usize::try_from(j)
                                .ok()
                                .and_then(|j| k.get(j).copied().flatten())
                        })
                        .collect::<Vec<_>>()
                }),
                _ => None,
            };
            c.emit(Op::Gather { axis }, vec![x, idx], dtype, Layout::Plain)?;
            if let Some(k) = picked {
                c.set_known(k);
            }
            Ok(())
        }
        "Expand" => super::shaping::expand(c),
        "Tile" => {
            let reps = c.const_ints(1, "repeats")?;
            let reps: Vec<usize> = reps
                .iter()
                .map(|&r| usize::try_from(r).ok())
                .collect::<Option<_>>()
                .map_or_else(|| block("negative repeats"), Ok)?;
            let x = c.plain(0)?;
            let dtype = c.dtype(x);
            c.emit(Op::Tile(reps), vec![x], dtype, Layout::Plain)?;
            Ok(())
        }
        "Softmax" | "LogSoftmax" => softmax(c),
        "ReduceMean" => reduce(c, ReduceKind::Mean),
        "ReduceSum" => reduce(c, ReduceKind::Sum),
        "ReduceMax" => reduce(c, ReduceKind::Max),
        "ReduceMin" => reduce(c, ReduceKind::Min),
        "ReduceProd" => reduce(c, ReduceKind::Prod),
        "ArgMax" | "ArgMin" => arg_reduce(c),
        "DepthToSpace" | "SpaceToDepth" => {
            let b = usize::try_from(c.int("blocksize", 0))
                .ok()
                .filter(|b| *b > 0);
            let b = b.map_or_else(|| block("a block size of 0"), Ok)?;
            if node.op_type == "DepthToSpace" && c.string("mode").is_some_and(|m| m != "DCR") {
                return block("CRD mode");
            }
            let x = c.last(0)?;
            let op = if node.op_type == "DepthToSpace" {
                Op::DepthToSpace(b)
            } else {
                Op::SpaceToDepth(b)
            };
            let dtype = c.dtype(x);
            c.emit(op, vec![x], dtype, Layout::Last)?;
            Ok(())
        }
        "If" => if_(c),
        _ => block("not supported by this engine"),
    }
}

fn mean(c: &mut Cx<'_>) -> Result<(), Block> {
    let n = c.node.input.len();
    if n == 1 {
        let e = c.entry(0)?;
        c.alias(e);
        return Ok(());
    }
    let out = c.out(0).to_owned();
    let sum = c.temp("sum");
    let mut fake = c.node.clone();
    fake.output = vec![sum.clone()];
    Cx {
        imp: c.imp,
        node: &fake,
    }
    .variadic(BinaryOp::Add)?;
    let s = c.imp.entry(&sum)?;
    let k = c
        .imp
        .constant(&c.temp("n"), Data::F32(vec![1.0 / n as f32]), vec![]);
    let mul = Op::Binary {
        op: BinaryOp::Mul,
        activation: crate::graph::Activation::None,
    };
    c.emit_named(
        &out,
        mul,
        vec![s.value, k.value],
        DType::F32,
        s.layout,
        None,
    )?;
    Ok(())
}

fn clip(c: &mut Cx<'_>) -> Result<(), Block> {
    let (lo, hi) = if c.imp.opset >= 11 {
        let bound = |c: &Cx<'_>, i: usize, default: f32| -> Result<f32, Block> {
            if !c.has(i) {
                return Ok(default);
            }
            c.const_floats(i, "a clip bound")?
                .first()
                .copied()
                .map_or_else(|| block("an empty clip bound"), Ok)
        };
        (bound(c, 1, f32::NEG_INFINITY)?, bound(c, 2, f32::INFINITY)?)
    } else {
        (
            c.float("min", f32::NEG_INFINITY),
            c.float("max", f32::INFINITY),
        )
    };
    let op = match (lo, hi) {
        (0.0, 6.0) => UnaryOp::Relu6,
        (0.0, f32::INFINITY) => UnaryOp::Relu,
        (-1.0, 1.0) => UnaryOp::ReluN1To1,
        _ => UnaryOp::Clamp(lo, hi),
    };
    c.unary(op)
}

fn softmax(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    let rank = e.rank();
    let log = c.node.op_type == "LogSoftmax";
    let default = if c.imp.opset >= 13 { -1 } else { 1 };
    let axis = c.axis(c.int("axis", default), rank)?;
    if c.imp.opset < 13 && axis + 1 != rank {
        // Older opsets: softmax over everything from `axis` on.
        let x = c.plain(0)?;
        let name = c.temp("flat");
        let flat = c.emit_named(
            &name,
            Op::Flatten(axis),
            vec![x],
            DType::F32,
            Layout::Plain,
            None,
        )?;
        let name = c.temp("softmax");
        let op = if log {
            Op::LogSoftmax { axis: 1 }
        } else {
            Op::Softmax { axis: 1, beta: 1.0 }
        };
        let s = c.emit_named(&name, op, vec![flat], DType::F32, Layout::Plain, None)?;
        let shape: Vec<i64> = e.dims.iter().map(|d| d.map_or(-1, |d| d as i64)).collect();
        if shape.iter().filter(|d| **d < 0).count() > 1 {
            return block("a softmax over several axes of a shape known only at run time");
        }
        c.emit(
            Op::Reshape {
                shape,
                copy_zeros: false,
            },
            vec![s],
            DType::F32,
            Layout::Plain,
        )?;
        return Ok(());
    }
    let axis = e.value_axis(axis);
    let op = if log {
        Op::LogSoftmax { axis }
    } else {
        Op::Softmax { axis, beta: 1.0 }
    };
    c.emit(op, vec![e.value], DType::F32, e.layout)?;
    Ok(())
}

fn reduce(c: &mut Cx<'_>, kind: ReduceKind) -> Result<(), Block> {
    let e = c.entry(0)?;
    let rank = e.rank();
    let keep_dims = c.int("keepdims", 1) != 0;
    let since = if kind == ReduceKind::Sum { 13 } else { 18 };
    let axes = match c.axes(since, 1)? {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&a| c.axis(a, rank))
            .collect::<Result<Vec<_>, _>>()?,
        _ if c.int("noop_with_empty_axes", 0) != 0 => {
            c.alias(e);
            return Ok(());
        }
        _ => (0..rank).collect(),
    };
    let (x, layout) = if keep_dims {
        (e.value, e.layout)
    } else {
        (c.plain(0)?, Layout::Plain)
    };
    let held = Entry { layout, ..e };
    let mut axes: Vec<usize> = axes.iter().map(|&a| held.value_axis(a)).collect();
    axes.sort_unstable();
    axes.dedup();
    let dtype = c.dtype(x);
    c.emit(
        Op::Reduce {
            kind,
            axes,
            keep_dims,
        },
        vec![x],
        dtype,
        layout,
    )?;
    Ok(())
}

fn arg_reduce(c: &mut Cx<'_>) -> Result<(), Block> {
    if c.int("select_last_index", 0) != 0 {
        return block("select_last_index");
    }
    let e = c.entry(0)?;
    let axis = c.axis(c.int("axis", 0), e.rank())?;
    let keep_dims = c.int("keepdims", 1) != 0;
    let (x, layout) = if keep_dims {
        (e.value, e.layout)
    } else {
        (c.plain(0)?, Layout::Plain)
    };
    let held = Entry { layout, ..e };
    let axis = held.value_axis(axis);
    let op = if c.node.op_type == "ArgMax" {
        Op::ArgMax { axis, keep_dims }
    } else {
        Op::ArgMin { axis, keep_dims }
    };
    c.emit(op, vec![x], DType::I64, layout)?;
    Ok(())
}

/// An `If` whose condition is known at load (from constants, or an input fixed with
/// `input_values`): the taken branch is translated in place.
fn if_(c: &mut Cx<'_>) -> Result<(), Block> {
    let cond = c.const_input(0).map_or_else(
        || block("a condition computed at run time (fix the input it depends on with input_values, or its shape with input_shapes)"),
        Ok,
    )?;
    let taken = cond.0.to_f32().first().is_some_and(|v| *v != 0.0);
    let branch = if taken { "then_branch" } else { "else_branch" };
    let graph = c
        .attr(branch)
        .and_then(|a| a.g.clone())
        .map_or_else(|| block(format!("no {branch}")), Ok)?;
    let results = c.imp.inline(&graph)?;
    if results.len() != c.node.output.len() {
        return block("the branch gives a different number of outputs");
    }
    for (i, r) in results.into_iter().enumerate() {
        let name = c.out(i).to_owned();
        c.imp.bind(&name, r);
    }
    Ok(())
}
