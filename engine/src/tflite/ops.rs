//! One TFLite operator to graph nodes: options and parameter tensors become op attributes.

use super::builtin as b;
use super::import::{Block, Importer, block, shared_name};
use super::schema::OperatorDef;
use crate::flatbuf::Table;
use crate::graph::{
    Activation, BinaryOp, Conv2d, Depthwise, Node, Op, PadMode, Padding, Pool2d, PoolKind,
    ReduceKind, Resize, ResizeMode, SliceSpec, TransposeConv, UnaryOp, ValueId,
};
use crate::tensor::{DType, Data};

fn fb<T>(r: crate::flatbuf::FlatResult<T>) -> Result<T, Block> {
    r.map_err(|e| Block {
        reason: e.to_string(),
    })
}

struct Ctx<'i, 'a: 'i> {
    imp: &'i mut Importer<'a>,
    op: &'i OperatorDef<'a>,
    name: &'i str,
    index: usize,
}

impl Ctx<'_, '_> {
    /// Options, when the operator carries the expected options type.
    fn options(&self) -> Option<Table<'_>> {
        self.op.options
    }

    fn i32_opt(&self, field: usize, default: i32) -> Result<i32, Block> {
        match self.options() {
            Some(t) => fb(t.scalar(field, default, "option")),
            None => Ok(default),
        }
    }

    fn u8_opt(&self, field: usize, default: u8) -> Result<u8, Block> {
        match self.options() {
            Some(t) => fb(t.scalar(field, default, "option")),
            None => Ok(default),
        }
    }

    fn bool_opt(&self, field: usize, default: bool) -> Result<bool, Block> {
        match self.options() {
            Some(t) => fb(t.scalar(field, default, "option")),
            None => Ok(default),
        }
    }

    fn f32_opt(&self, field: usize, default: f32) -> Result<f32, Block> {
        match self.options() {
            Some(t) => fb(t.scalar(field, default, "option")),
            None => Ok(default),
        }
    }

    /// The tensor index of input `i` (`None` for an absent optional input, -1).
    fn input_index(&self, i: usize) -> Option<i32> {
        self.op.inputs.get(i).copied().filter(|t| *t >= 0)
    }

    fn input(&mut self, i: usize) -> Result<ValueId, Block> {
        let index = self
            .input_index(i)
            .map_or_else(|| block(format!("input {i} is missing")), Ok)?;
        self.imp.tensor_value(index)
    }

    fn optional_input(&mut self, i: usize) -> Result<Option<ValueId>, Block> {
        match self.input_index(i) {
            Some(index) => self.imp.tensor_value(index).map(Some),
            None => Ok(None),
        }
    }

    /// The integer contents of a constant input.
    fn const_ints(&mut self, i: usize) -> Result<Vec<i64>, Block> {
        let v = self.input(i)?;
        self.imp
            .graph
            .constant(v)
            .and_then(|d| d.to_i64())
            .map_or_else(
                || block(format!("input {i} must be a constant integer tensor")),
                Ok,
            )
    }

    fn outputs(&mut self) -> Result<Vec<ValueId>, Block> {
        let outs = self.op.outputs.clone();
        outs.into_iter().map(|o| self.imp.tensor_value(o)).collect()
    }

    fn output(&mut self) -> Result<ValueId, Block> {
        let outs = self.outputs()?;
        match outs.as_slice() {
            [o] => Ok(*o),
            _ => block(format!("expected one output, got {}", outs.len())),
        }
    }

    /// The declared rank of input `i`.
    fn rank(&mut self, i: usize) -> Result<usize, Block> {
        let v = self.input(i)?;
        Ok(self.imp.graph.values[v].shape.len())
    }

    fn push(&mut self, op: Op, inputs: Vec<ValueId>, outputs: Vec<ValueId>) {
        self.imp.graph.nodes.push(Node {
            op,
            inputs,
            outputs,
            origin: format!("{} #{}", self.name, self.index),
        });
    }

    /// The common case: every present input, the op, every output.
    fn simple(&mut self, op: Op) -> Result<(), Block> {
        let mut inputs = Vec::new();
        for i in 0..self.op.inputs.len() {
            if let Some(v) = self.optional_input(i)? {
                inputs.push(v);
            }
        }
        let outputs = self.outputs()?;
        self.push(op, inputs, outputs);
        Ok(())
    }

    fn unary(&mut self, op: UnaryOp) -> Result<(), Block> {
        let x = self.input(0)?;
        let y = self.output()?;
        self.push(Op::Unary(op), vec![x], vec![y]);
        Ok(())
    }

    fn binary(&mut self, op: BinaryOp, activation_field: Option<usize>) -> Result<(), Block> {
        let activation = match activation_field {
            Some(f) => activation(self.u8_opt(f, 0)?)?,
            None => Activation::None,
        };
        let (a, c) = (self.input(0)?, self.input(1)?);
        let y = self.output()?;
        self.push(Op::Binary { op, activation }, vec![a, c], vec![y]);
        Ok(())
    }

    /// An axis attribute, negative counting from the end.
    fn axis(&mut self, axis: i64, rank: usize) -> Result<usize, Block> {
        normalize_axis(axis, rank)
    }

    /// Binds the op's single output to a constant computed at load.
    fn fold(&mut self, data: Data, shape: Vec<usize>) -> Result<(), Block> {
        let out = *self
            .op
            .outputs
            .first()
            .map_or_else(|| block("no output"), Ok)?;
        let name = self.imp.tensor(out)?.name.clone();
        let id = self.imp.graph.add_const(name, data, shape);
        self.imp.bind(out, id)
    }
}

pub(super) fn normalize_axis(axis: i64, rank: usize) -> Result<usize, Block> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r.max(1)).contains(&a) {
        Ok(a as usize)
    } else {
        block(format!("axis {axis} is out of range for rank {rank}"))
    }
}

fn activation(code: u8) -> Result<Activation, Block> {
    Ok(match code {
        0 => Activation::None,
        1 => Activation::Relu,
        2 => Activation::ReluN1To1,
        3 => Activation::Relu6,
        4 => Activation::Tanh,
        other => return block(format!("fused activation {other}")),
    })
}

fn padding(code: u8) -> Result<Padding, Block> {
    match code {
        0 => Ok(Padding::Same),
        1 => Ok(Padding::Valid),
        other => block(format!("padding {other}")),
    }
}

fn positive(v: i32, what: &str) -> Result<usize, Block> {
    usize::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .map_or_else(|| block(format!("{what} must be positive, got {v}")), Ok)
}

pub(super) fn translate<'a>(
    imp: &mut Importer<'a>,
    op: &OperatorDef<'a>,
    code: i32,
    name: &str,
    index: usize,
) -> Result<(), Block> {
    let mut c = Ctx {
        imp,
        op,
        name,
        index,
    };
    match code {
        b::CONV_2D => {
            let stride = (
                positive(c.i32_opt(2, 1)?, "stride")?,
                positive(c.i32_opt(1, 1)?, "stride")?,
            );
            let dilation = (
                positive(c.i32_opt(5, 1)?, "dilation")?,
                positive(c.i32_opt(4, 1)?, "dilation")?,
            );
            let conv = Conv2d {
                stride,
                dilation,
                padding: padding(c.u8_opt(0, 0)?)?,
                groups: 1,
                activation: activation(c.u8_opt(3, 0)?)?,
            };
            conv_like(&mut c, Op::Conv2d(conv))
        }
        b::DEPTHWISE_CONV_2D => {
            let stride = (
                positive(c.i32_opt(2, 1)?, "stride")?,
                positive(c.i32_opt(1, 1)?, "stride")?,
            );
            let dilation = (
                positive(c.i32_opt(6, 1)?, "dilation")?,
                positive(c.i32_opt(5, 1)?, "dilation")?,
            );
            let dw = Depthwise {
                stride,
                dilation,
                padding: padding(c.u8_opt(0, 0)?)?,
                multiplier: 0,
                activation: activation(c.u8_opt(4, 0)?)?,
            };
            conv_like(&mut c, Op::Depthwise(dw))
        }
        b::TRANSPOSE_CONV => {
            // inputs: output_shape, weights, x, bias?
            let shape = c.const_ints(0)?;
            let output_hw = match shape.as_slice() {
                [_, h, w, _] => Some((
                    usize::try_from(*h).map_or_else(|_| block("negative output height"), Ok)?,
                    usize::try_from(*w).map_or_else(|_| block("negative output width"), Ok)?,
                )),
                _ => return block("output_shape must have 4 entries"),
            };
            let tc = TransposeConv {
                stride: (
                    positive(c.i32_opt(2, 1)?, "stride")?,
                    positive(c.i32_opt(1, 1)?, "stride")?,
                ),
                padding: padding(c.u8_opt(0, 0)?)?,
                output_hw,
                activation: activation(c.u8_opt(3, 0)?)?,
            };
            let (w, x) = (c.input(1)?, c.input(2)?);
            let bias = c.optional_input(3)?;
            let mut inputs = vec![x, w];
            inputs.extend(bias);
            let y = c.output()?;
            c.push(Op::TransposeConv(tc), inputs, vec![y]);
            Ok(())
        }
        b::FULLY_CONNECTED => {
            if c.u8_opt(1, 0)? != 0 {
                return block("shuffled weights formats");
            }
            let op = Op::FullyConnected {
                activation: activation(c.u8_opt(0, 0)?)?,
                keep_dims: c.bool_opt(2, false)?,
            };
            let (x, w) = (c.input(0)?, c.input(1)?);
            let bias = c.optional_input(2)?;
            let mut inputs = vec![x, w];
            inputs.extend(bias);
            let y = c.output()?;
            c.push(op, inputs, vec![y]);
            Ok(())
        }
        b::BATCH_MATMUL => {
            let op = Op::MatMul {
                adj_a: c.bool_opt(0, false)?,
                adj_b: c.bool_opt(1, false)?,
            };
            c.simple(op)
        }
        b::ADD => c.binary(BinaryOp::Add, Some(0)),
        b::SUB => c.binary(BinaryOp::Sub, Some(0)),
        b::MUL => c.binary(BinaryOp::Mul, Some(0)),
        b::DIV => c.binary(BinaryOp::Div, Some(0)),
        b::MAXIMUM => c.binary(BinaryOp::Max, None),
        b::MINIMUM => c.binary(BinaryOp::Min, None),
        b::POW => c.binary(BinaryOp::Pow, None),
        b::SQUARED_DIFFERENCE => c.binary(BinaryOp::SquaredDifference, None),
        b::RELU => c.unary(UnaryOp::Relu),
        b::RELU6 => c.unary(UnaryOp::Relu6),
        b::RELU_N1_TO_1 => c.unary(UnaryOp::ReluN1To1),
        b::RELU_0_TO_1 => c.unary(UnaryOp::Clamp(0.0, 1.0)),
        b::LOGISTIC => c.unary(UnaryOp::Sigmoid),
        b::TANH => c.unary(UnaryOp::Tanh),
        b::HARD_SWISH => c.unary(UnaryOp::HardSwish),
        b::LEAKY_RELU => {
            let alpha = c.f32_opt(0, 0.2)?;
            c.unary(UnaryOp::LeakyRelu(alpha))
        }
        b::ELU => c.unary(UnaryOp::Elu(1.0)),
        b::GELU => c.unary(UnaryOp::Gelu),
        b::EXP => c.unary(UnaryOp::Exp),
        b::LOG => c.unary(UnaryOp::Log),
        b::SQRT => c.unary(UnaryOp::Sqrt),
        b::RSQRT => c.unary(UnaryOp::Rsqrt),
        b::NEG => c.unary(UnaryOp::Neg),
        b::ABS => c.unary(UnaryOp::Abs),
        b::SQUARE => c.unary(UnaryOp::Square),
        b::FLOOR => c.unary(UnaryOp::Floor),
        b::CEIL => c.unary(UnaryOp::Ceil),
        b::ROUND => c.unary(UnaryOp::Round),
        b::SIN => c.unary(UnaryOp::Sin),
        b::COS => c.unary(UnaryOp::Cos),
        b::PRELU => c.simple(Op::Prelu),
        b::AVERAGE_POOL_2D | b::MAX_POOL_2D => {
            let pool = Pool2d {
                kind: if code == b::MAX_POOL_2D {
                    PoolKind::Max
                } else {
                    PoolKind::Average
                },
                filter: (
                    positive(c.i32_opt(4, 1)?, "filter")?,
                    positive(c.i32_opt(3, 1)?, "filter")?,
                ),
                stride: (
                    positive(c.i32_opt(2, 1)?, "stride")?,
                    positive(c.i32_opt(1, 1)?, "stride")?,
                ),
                padding: padding(c.u8_opt(0, 0)?)?,
                count_include_pad: false,
                activation: activation(c.u8_opt(5, 0)?)?,
            };
            let x = c.input(0)?;
            let y = c.output()?;
            c.push(Op::Pool2d(pool), vec![x], vec![y]);
            Ok(())
        }
        b::MEAN | b::SUM | b::REDUCE_MAX | b::REDUCE_MIN | b::REDUCE_PROD => {
            let kind = match code {
                b::MEAN => ReduceKind::Mean,
                b::SUM => ReduceKind::Sum,
                b::REDUCE_MAX => ReduceKind::Max,
                b::REDUCE_MIN => ReduceKind::Min,
                _ => ReduceKind::Prod,
            };
            let rank = c.rank(0)?;
            let mut axes = Vec::new();
            for a in c.const_ints(1)? {
                let a = c.axis(a, rank)?;
                if !axes.contains(&a) {
                    axes.push(a);
                }
            }
            axes.sort_unstable();
            let keep_dims = c.bool_opt(0, false)?;
            let x = c.input(0)?;
            let y = c.output()?;
            c.push(
                Op::Reduce {
                    kind,
                    axes,
                    keep_dims,
                },
                vec![x],
                vec![y],
            );
            Ok(())
        }
        b::SOFTMAX | b::LOG_SOFTMAX => {
            let rank = c.rank(0)?;
            let axis = rank.saturating_sub(1);
            let op = if code == b::SOFTMAX {
                Op::Softmax {
                    axis,
                    beta: c.f32_opt(0, 1.0)?,
                }
            } else {
                Op::LogSoftmax { axis }
            };
            let x = c.input(0)?;
            let y = c.output()?;
            c.push(op, vec![x], vec![y]);
            Ok(())
        }
        b::RESHAPE | b::SQUEEZE | b::EXPAND_DIMS => reshape(&mut c, code),
        b::TRANSPOSE => {
            let rank = c.rank(0)?;
            let perm = c
                .const_ints(1)?
                .into_iter()
                .map(|p| normalize_axis(p, rank))
                .collect::<Result<Vec<_>, _>>()?;
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..rank).collect::<Vec<_>>() {
                return block(format!("{perm:?} is not a permutation"));
            }
            let x = c.input(0)?;
            let y = c.output()?;
            c.push(Op::Transpose(perm), vec![x], vec![y]);
            Ok(())
        }
        b::CONCATENATION => {
            let rank = c.rank(0)?;
            let axis = c.i32_opt(0, 0)?;
            let axis = c.axis(i64::from(axis), rank)?;
            let activation = activation(c.u8_opt(1, 0)?)?;
            c.simple(Op::Concat { axis, activation })
        }
        b::PACK => {
            // PACK stacks inputs on a new axis: expand each, then concatenate.
            let rank = c.rank(0)?;
            let axis = c.axis(i64::from(c.i32_opt(1, 0)?), rank + 1)?;
            let n = c.op.inputs.len();
            let mut expanded = Vec::new();
            for i in 0..n {
                let x = c.input(i)?;
                let v = c.imp.graph.values[x].clone();
                let mut shape = v.shape.clone();
                shape.insert(axis, Some(1));
                let target: Vec<i64> = shape.iter().map(|d| d.map_or(-1, |d| d as i64)).collect();
                if target.iter().filter(|d| **d < 0).count() > 1 {
                    return block("PACK of tensors with more than one unknown axis");
                }
                let id = c.imp.graph.add_value(crate::graph::Value {
                    name: format!("{}.expanded", v.name),
                    shape,
                    constant: None,
                    ..v
                });
                c.push(
                    Op::Reshape {
                        shape: target,
                        copy_zeros: false,
                    },
                    vec![x],
                    vec![id],
                );
                expanded.push(id);
            }
            let y = c.output()?;
            c.push(
                Op::Concat {
                    axis,
                    activation: Activation::None,
                },
                expanded,
                vec![y],
            );
            Ok(())
        }
        b::SPLIT | b::SPLIT_V => split(&mut c, code),
        b::STRIDED_SLICE | b::SLICE => slice(&mut c, code),
        b::PAD | b::PADV2 | b::MIRROR_PAD => pad(&mut c, code),
        b::GATHER => {
            let rank = c.rank(0)?;
            if c.i32_opt(1, 0)? != 0 {
                return block("GATHER with batch_dims");
            }
            let axis = c.axis(i64::from(c.i32_opt(0, 0)?), rank)?;
            let (x, i) = (c.input(0)?, c.input(1)?);
            let y = c.output()?;
            c.push(Op::Gather { axis }, vec![x, i], vec![y]);
            Ok(())
        }
        b::TILE => {
            let reps = c
                .const_ints(1)?
                .into_iter()
                .map(|r| usize::try_from(r).map_or_else(|_| block("negative repeat"), Ok))
                .collect::<Result<Vec<_>, _>>()?;
            let x = c.input(0)?;
            let y = c.output()?;
            c.push(Op::Tile(reps), vec![x], vec![y]);
            Ok(())
        }
        b::DEPTH_TO_SPACE | b::SPACE_TO_DEPTH => {
            let block_size = positive(c.i32_opt(0, 0)?, "block size")?;
            let op = if code == b::DEPTH_TO_SPACE {
                Op::DepthToSpace(block_size)
            } else {
                Op::SpaceToDepth(block_size)
            };
            let x = c.input(0)?;
            let y = c.output()?;
            c.push(op, vec![x], vec![y]);
            Ok(())
        }
        b::RESIZE_BILINEAR | b::RESIZE_NEAREST_NEIGHBOR => {
            let size = c.const_ints(1)?;
            let &[h, w] = size.as_slice() else {
                return block("the size input must have two entries");
            };
            let (h, w) = (
                usize::try_from(h).map_or_else(|_| block("negative height"), Ok)?,
                usize::try_from(w).map_or_else(|_| block("negative width"), Ok)?,
            );
            let (align_field, half_field) = if code == b::RESIZE_BILINEAR {
                (2, 3)
            } else {
                (0, 1)
            };
            let resize = Resize {
                mode: if code == b::RESIZE_BILINEAR {
                    ResizeMode::Bilinear
                } else {
                    ResizeMode::Nearest
                },
                align_corners: c.bool_opt(align_field, false)?,
                half_pixel_centers: c.bool_opt(half_field, false)?,
                to: crate::graph::ResizeTo::Size(h, w),
            };
            let x = c.input(0)?;
            let y = c.output()?;
            c.push(Op::Resize(resize), vec![x], vec![y]);
            Ok(())
        }
        b::QUANTIZE => {
            let x = c.input(0)?;
            let y = c.output()?;
            c.push(Op::Quantize, vec![x], vec![y]);
            Ok(())
        }
        b::DEQUANTIZE | b::DENSIFY => {
            let x = c.input(0)?;
            let value = c.imp.graph.values[x].clone();
            match (&value.constant, code) {
                // Float16 and sparse constants were widened and densified when read.
                (Some(data), b::DENSIFY) => {
                    let shape = c.imp.graph.const_shape(x).unwrap_or_default();
                    c.fold((**data).clone(), shape)
                }
                (Some(data), _) => {
                    let shape = c.imp.graph.const_shape(x).unwrap_or_default();
                    let dequantized = match (&value.quant, data.dtype()) {
                        (_, DType::F32) => (**data).clone(),
                        (Some(q), DType::I8 | DType::U8 | DType::I16 | DType::I32) => {
                            Data::F32(crate::quant::dequantize_const(data, &shape, q))
                        }
                        _ => return block("DEQUANTIZE of a constant without quantization"),
                    };
                    c.fold(dequantized, shape)
                }
                (None, b::DENSIFY) => block("DENSIFY of a value computed at run time"),
                (None, _) => {
                    let y = c.output()?;
                    c.push(Op::Dequantize, vec![x], vec![y]);
                    Ok(())
                }
            }
        }
        b::CAST => c.simple(Op::Cast),
        b::SHAPE => {
            let x = c.input(0)?;
            let y = c.output()?;
            c.push(Op::Shape(None), vec![x], vec![y]);
            Ok(())
        }
        b::ARG_MAX | b::ARG_MIN => {
            let rank = c.rank(0)?;
            let axis = c.const_ints(1)?;
            let &[axis] = axis.as_slice() else {
                return block("the axis input must hold one value");
            };
            let axis = c.axis(axis, rank)?;
            let op = if code == b::ARG_MAX {
                Op::ArgMax {
                    axis,
                    keep_dims: false,
                }
            } else {
                Op::ArgMin {
                    axis,
                    keep_dims: false,
                }
            };
            let x = c.input(0)?;
            let y = c.output()?;
            c.push(op, vec![x], vec![y]);
            Ok(())
        }
        b::CALL_ONCE => {
            let sub = c.i32_opt(0, -1)?;
            let sub = usize::try_from(sub).map_or_else(|_| block("no init subgraph"), Ok)?;
            c.imp.init_variables(sub)
        }
        b::VAR_HANDLE => {
            let name = shared_name(c.op)?;
            let Some(&var) = c.imp.variables.get(&name) else {
                return block(format!(
                    "variable {name:?} has no initial value (no CALL_ONCE before it assigns one)"
                ));
            };
            let out =
                c.op.outputs
                    .first()
                    .and_then(|&o| usize::try_from(o).ok())
                    .map_or_else(|| block("VAR_HANDLE without an output"), Ok)?;
            c.imp.resources.insert(out, var);
            Ok(())
        }
        b::READ_VARIABLE | b::ASSIGN_VARIABLE => {
            let handle =
                c.op.inputs
                    .first()
                    .and_then(|&h| usize::try_from(h).ok())
                    .and_then(|h| c.imp.resources.get(&h).copied())
                    .map_or_else(
                        || block("a variable read or written before its VAR_HANDLE"),
                        Ok,
                    )?;
            if code == b::READ_VARIABLE {
                let y = c.output()?;
                c.push(Op::ReadVariable(handle), vec![], vec![y]);
            } else {
                let v = c.input(1)?;
                c.push(Op::AssignVariable(handle), vec![v], vec![]);
            }
            Ok(())
        }
        b::CUSTOM if name == "Convolution2DTransposeBias" => mediapipe_transpose_conv(&mut c),
        b::CUSTOM => block("custom operator (not a TFLite builtin)"),
        _ => block("not supported by this engine"),
    }
}

/// Conv and depthwise: x, weights, optional bias.
fn conv_like(c: &mut Ctx<'_, '_>, mut op: Op) -> Result<(), Block> {
    let (x, w) = (c.input(0)?, c.input(1)?);
    let bias = c.optional_input(2)?;
    let wv = &c.imp.graph.values[w];
    if !wv.is_const() {
        return block("weights computed at run time");
    }
    let xv = &c.imp.graph.values[x];
    let w_shape = c.imp.graph.const_shape(w).unwrap_or_default();
    if w_shape.len() != 4 || xv.shape.len() != 4 {
        return block("convolutions of rank other than 4");
    }
    match &mut op {
        Op::Conv2d(conv) => {
            if let Some(cin) = xv.shape[3] {
                let per_group = w_shape[3];
                if per_group == 0 || cin % per_group != 0 {
                    return block("input channels are not a multiple of the filter's");
                }
                conv.groups = cin / per_group;
                if !w_shape[0].is_multiple_of(conv.groups) {
                    return block("output channels are not a multiple of the groups");
                }
            }
        }
        Op::Depthwise(dw) => {
            let cin = xv.shape[3].map_or_else(|| block("depthwise input channels unknown"), Ok)?;
            if cin == 0 || !w_shape[3].is_multiple_of(cin) || w_shape[0] != 1 {
                return block("depthwise weights do not match the input channels");
            }
            dw.multiplier = w_shape[3] / cin;
        }
        _ => {}
    }
    let mut inputs = vec![x, w];
    inputs.extend(bias);
    let y = c.output()?;
    c.push(op, inputs, vec![y]);
    Ok(())
}

/// RESHAPE, SQUEEZE and EXPAND_DIMS become one reshape to the target shape: RESHAPE's shape
/// input (or option) when constant, else the output's declared shape.
fn reshape(c: &mut Ctx<'_, '_>, code: i32) -> Result<(), Block> {
    let x = c.input(0)?;
    let y = c.output()?;
    let declared: Vec<i64> = c.imp.graph.values[y]
        .shape
        .iter()
        .map(|d| d.map_or(-1, |d| d as i64))
        .collect();
    let mut target = None;
    if code == b::RESHAPE {
        if let Some(index) = c.input_index(1) {
            let v = c.imp.tensor_value(index)?;
            if let Some(data) = c.imp.graph.constant(v) {
                target = data.to_i64();
            }
        }
        if target.is_none()
            && let Some(t) = c.options()
        {
            let shape: Vec<i32> = fb(t.vec(0, "new shape"))?;
            if !shape.is_empty() {
                target = Some(shape.into_iter().map(i64::from).collect());
            }
        }
    }
    // A shape computed at run time (from SHAPE, say) is usually known once a plan is made:
    // keep it as a second input, with the declared shape as the fallback.
    let mut inputs = vec![x];
    if target.is_none()
        && code == b::RESHAPE
        && let Some(index) = c.input_index(1)
    {
        inputs.push(c.imp.tensor_value(index)?);
    }
    let target = target.unwrap_or(declared);
    if target.iter().filter(|d| **d < 0).count() > 1 && inputs.len() == 1 {
        return block("a reshape with more than one unknown axis");
    }
    c.push(
        Op::Reshape {
            shape: target,
            copy_zeros: false,
        },
        inputs,
        vec![y],
    );
    Ok(())
}

fn split(c: &mut Ctx<'_, '_>, code: i32) -> Result<(), Block> {
    let (x_at, axis_at) = if code == b::SPLIT { (1, 0) } else { (0, 2) };
    let rank = c.rank(x_at)?;
    let axis = c.const_ints(axis_at)?;
    let &[axis] = axis.as_slice() else {
        return block("the axis input must hold one value");
    };
    let axis = c.axis(axis, rank)?;
    let x = c.input(x_at)?;
    let outputs = c.outputs()?;
    let dim = c.imp.graph.values[x].shape[axis]
        .map_or_else(|| block("splitting an axis of unknown length"), Ok)?;
    let sizes = if code == b::SPLIT {
        let n = outputs.len();
        if n == 0 || dim % n != 0 {
            return block("the axis does not split evenly");
        }
        vec![dim / n; n]
    } else {
        let mut sizes: Vec<i64> = c.const_ints(1)?;
        if let Some(p) = sizes.iter().position(|s| *s < 0) {
            let known: i64 = sizes.iter().filter(|s| **s >= 0).sum();
            sizes[p] = dim as i64 - known;
        }
        sizes
            .into_iter()
            .map(|s| usize::try_from(s).map_or_else(|_| block("negative split size"), Ok))
            .collect::<Result<Vec<_>, _>>()?
    };
    if sizes.len() != outputs.len() || sizes.iter().sum::<usize>() != dim {
        return block("split sizes do not add up to the axis");
    }
    c.push(Op::Split { axis, sizes }, vec![x], outputs);
    Ok(())
}

fn slice(c: &mut Ctx<'_, '_>, code: i32) -> Result<(), Block> {
    let rank = c.rank(0)?;
    let begin = c.const_ints(1)?;
    let second = c.const_ints(2)?;
    if begin.len() != rank || second.len() != rank {
        return block("slice parameters must name every axis");
    }
    let spec = if code == b::SLICE {
        SliceSpec {
            end: begin
                .iter()
                .zip(&second)
                .map(|(b, s)| if *s < 0 { i64::MAX } else { b + s })
                .collect(),
            end_open: second.iter().map(|s| *s < 0).collect(),
            begin,
            stride: vec![1; rank],
            begin_open: vec![false; rank],
            shrink: vec![false; rank],
        }
    } else {
        let strides = c.const_ints(3)?;
        if strides.len() != rank || strides.contains(&0) {
            return block("strides must name every axis and not be zero");
        }
        let (begin_mask, end_mask) = (c.i32_opt(0, 0)?, c.i32_opt(1, 0)?);
        let (ellipsis, new_axis, shrink) = (c.i32_opt(2, 0)?, c.i32_opt(3, 0)?, c.i32_opt(4, 0)?);
        if ellipsis != 0 || new_axis != 0 {
            return block("STRIDED_SLICE with ellipsis or new-axis masks");
        }
        if c.bool_opt(5, false)? {
            return block("STRIDED_SLICE with offset");
        }
        let bit = |mask: i32, i: usize| mask >> i & 1 == 1;
        SliceSpec {
            begin,
            end: second,
            stride: strides,
            begin_open: (0..rank).map(|i| bit(begin_mask, i)).collect(),
            end_open: (0..rank).map(|i| bit(end_mask, i)).collect(),
            shrink: (0..rank).map(|i| bit(shrink, i)).collect(),
        }
    };
    let x = c.input(0)?;
    let y = c.output()?;
    c.push(Op::StridedSlice(spec), vec![x], vec![y]);
    Ok(())
}

fn pad(c: &mut Ctx<'_, '_>, code: i32) -> Result<(), Block> {
    let rank = c.rank(0)?;
    let pads = c.const_ints(1)?;
    if pads.len() != 2 * rank {
        return block("paddings must be [rank, 2]");
    }
    let pads = pads
        .chunks_exact(2)
        .map(|p| match (usize::try_from(p[0]), usize::try_from(p[1])) {
            (Ok(a), Ok(z)) => Ok((a, z)),
            _ => block("negative padding"),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mode = if code == b::MIRROR_PAD {
        if c.u8_opt(0, 0)? == 0 {
            PadMode::Reflect
        } else {
            PadMode::Symmetric
        }
    } else {
        PadMode::Constant
    };
    let x = c.input(0)?;
    let mut value = 0.0;
    if code == b::PADV2
        && let Some(v) = c.optional_input(2)?
    {
        let data = c
            .imp
            .graph
            .constant(v)
            .map_or_else(|| block("the pad value must be a constant"), Ok)?;
        value = data.to_f32().first().copied().unwrap_or(0.0);
    } else if let Some(q) = &c.imp.graph.values[x].quant {
        // A quantized zero pads with the zero point.
        value = q.zero_point.first().copied().unwrap_or(0) as f32;
    }
    let y = c.output()?;
    c.push(Op::Pad { pads, value, mode }, vec![x], vec![y]);
    Ok(())
}

/// mediapipe's Convolution2DTransposeBias: x, weights, bias; its custom options are the
/// bytes of TfLiteTransposeConvParams (padding, stride width, stride height as i32).
fn mediapipe_transpose_conv(c: &mut Ctx<'_, '_>) -> Result<(), Block> {
    let options = c.op.custom_options.unwrap_or_default();
    if options.len() < 12 {
        return block("custom options shorter than its parameters");
    }
    let word =
        |i: usize| i32::from_le_bytes([options[i], options[i + 1], options[i + 2], options[i + 3]]);
    let padding = match word(0) {
        1 => Padding::Same,
        2 => Padding::Valid,
        other => return block(format!("padding {other}")),
    };
    let tc = TransposeConv {
        stride: (positive(word(8), "stride")?, positive(word(4), "stride")?),
        padding,
        output_hw: None,
        activation: Activation::None,
    };
    let (x, w, bias) = (c.input(0)?, c.input(1)?, c.input(2)?);
    let y = c.output()?;
    c.push(Op::TransposeConv(tc), vec![x, w, bias], vec![y]);
    Ok(())
}
