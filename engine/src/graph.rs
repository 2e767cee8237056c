//! The model graph every reader produces and every plan is made from: values (element type,
//! declared shape, quantization, constant data) and nodes in execution order.
//!
//! Image ops (convolutions, pools, resizes) are NHWC, as in TFLite; readers of NCHW formats
//! convert at the edges. Ops carry their parameters as plain data: a reader resolves
//! parameter tensors (axes, shapes, paddings) into attributes, so a plan never has to read a
//! tensor to know what an op does.

use std::sync::Arc;

use crate::tensor::{DType, Data};

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;

/// Affine quantization: `real = scale * (q - zero_point)`, per tensor or per channel on `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quant {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
    pub axis: usize,
}

impl Quant {
    pub fn per_tensor(scale: f32, zero_point: i32) -> Quant {
        Quant {
            scale: vec![scale],
            zero_point: vec![zero_point],
            axis: 0,
        }
    }

    /// The scale and zero point of a per-tensor quantization.
    pub fn single(&self) -> Option<(f32, i32)> {
        match (self.scale.as_slice(), self.zero_point.as_slice()) {
            ([s], [z]) => Some((*s, *z)),
            ([s], []) => Some((*s, 0)),
            _ => None,
        }
    }
}

/// One value: a model input, a constant, or what a node computes.
#[derive(Debug, Clone)]
pub struct Value {
    pub name: String,
    pub dtype: DType,
    /// The shape the model declares; `None` axes vary (a batch axis, say). Plans compute the
    /// concrete shape from the inputs they are made for.
    pub shape: Vec<Option<usize>>,
    pub quant: Option<Quant>,
    /// Constant contents (always fully shaped).
    pub constant: Option<Arc<Data>>,
}

impl Value {
    pub fn is_const(&self) -> bool {
        self.constant.is_some()
    }
}

/// How a convolution or pool pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// TFLite/TensorFlow SAME: output size ceil(in / stride), extra padding at the end.
    Same,
    /// No padding.
    Valid,
    /// Explicit amounts: top, bottom, left, right.
    Explicit([usize; 4]),
}

/// An activation fused into the op that computes a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    None,
    Relu,
    Relu6,
    ReluN1To1,
    /// Clamp to `[min, max]` (ONNX Clip).
    Clamp(f32, f32),
    Tanh,
    Sigmoid,
    HardSwish,
    /// `x * sigmoid(x)`
    Silu,
}

impl Activation {
    /// The clamp range when the activation is a clamp (or none: unbounded).
    pub fn bounds(self) -> Option<(f32, f32)> {
        match self {
            Activation::None => Some((f32::NEG_INFINITY, f32::INFINITY)),
            Activation::Relu => Some((0.0, f32::INFINITY)),
            Activation::Relu6 => Some((0.0, 6.0)),
            Activation::ReluN1To1 => Some((-1.0, 1.0)),
            Activation::Clamp(lo, hi) => Some((lo, hi)),
            Activation::Tanh | Activation::Sigmoid | Activation::HardSwish | Activation::Silu => {
                None
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// (height, width)
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub padding: Padding,
    pub groups: usize,
    pub activation: Activation,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Depthwise {
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub padding: Padding,
    /// Output channels per input channel.
    pub multiplier: usize,
    pub activation: Activation,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransposeConv {
    pub stride: (usize, usize),
    pub padding: Padding,
    /// Output height and width when the model fixes them (TFLite's output_shape input).
    pub output_hw: Option<(usize, usize)>,
    pub activation: Activation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pool2d {
    pub kind: PoolKind,
    /// (height, width)
    pub filter: (usize, usize),
    pub stride: (usize, usize),
    pub padding: Padding,
    /// Average pools: divide by the whole window (ONNX count_include_pad) rather than by the
    /// elements inside the input.
    pub count_include_pad: bool,
    pub activation: Activation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
    SquaredDifference,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Relu,
    Relu6,
    ReluN1To1,
    Clamp(f32, f32),
    Sigmoid,
    Tanh,
    HardSwish,
    /// `x * sigmoid(x)` (swish)
    Silu,
    /// `max(0, min(1, alpha * x + beta))`
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    LeakyRelu(f32),
    Elu(f32),
    Gelu,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Neg,
    Abs,
    Square,
    Floor,
    Ceil,
    Round,
    Sin,
    Cos,
    Erf,
    Softplus,
    Identity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    Bilinear,
    Nearest,
}

/// The output size of a resize: fixed, or a scale of the input's (ONNX scales).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResizeTo {
    Size(usize, usize),
    Scale(f32, f32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    pub mode: ResizeMode,
    pub align_corners: bool,
    pub half_pixel_centers: bool,
    /// Output height and width.
    pub to: ResizeTo,
}

/// A strided slice with every mask resolved: one entry per input axis.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceSpec {
    pub begin: Vec<i64>,
    pub end: Vec<i64>,
    pub stride: Vec<i64>,
    /// Axes whose `end` is "to the end" in the direction of the stride.
    pub end_open: Vec<bool>,
    pub begin_open: Vec<bool>,
    /// Axes removed from the output (each must select one element).
    pub shrink: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// inputs: x (NHWC), weights (OHWI: [out, kh, kw, in / groups]), optional bias [out]
    Conv2d(Conv2d),
    /// inputs: x (NHWC), weights [1, kh, kw, channels * multiplier], optional bias
    Depthwise(Depthwise),
    /// inputs: x (NHWC), weights [out, kh, kw, in], optional bias
    TransposeConv(TransposeConv),
    /// inputs: x [..., k], weights [n, k], optional bias [n]. `keep_dims` keeps the leading
    /// axes; otherwise the output is [rows, n].
    FullyConnected {
        activation: Activation,
        keep_dims: bool,
    },
    /// Batched matrix product of two values with broadcasting over leading axes.
    MatMul {
        adj_a: bool,
        adj_b: bool,
    },
    Binary {
        op: BinaryOp,
        activation: Activation,
    },
    /// Elementwise comparison (or logical and/or of bools) with broadcasting; bool output.
    Compare(CompareOp),
    /// inputs: condition (bool), then, else; broadcasting.
    Where,
    /// Logical not of bools.
    Not,
    Unary(UnaryOp),
    /// inputs: x, alpha (broadcast to x)
    Prelu,
    Pool2d(Pool2d),
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    Softmax {
        axis: usize,
        beta: f32,
    },
    LogSoftmax {
        axis: usize,
    },
    /// The output shape; at most one -1 (inferred). With `copy_zeros`, a 0 keeps the input's
    /// length on that axis (ONNX); otherwise 0 is a length. A second input, when present and
    /// known at planning, gives the shape instead.
    Reshape {
        shape: Vec<i64>,
        copy_zeros: bool,
    },
    /// `[prod(dims[..axis]), prod(dims[axis..])]`.
    Flatten(usize),
    /// Removes these axes (each of length 1).
    Squeeze(Vec<usize>),
    /// Inserts axes of length 1 at these positions of the output.
    Unsqueeze(Vec<usize>),
    Transpose(Vec<usize>),
    Concat {
        axis: usize,
        activation: Activation,
    },
    /// Sizes along `axis`, one per output.
    Split {
        axis: usize,
        sizes: Vec<usize>,
    },
    StridedSlice(SliceSpec),
    /// Per axis (before, after); `value` fills (for quantized values, the quantized value).
    Pad {
        pads: Vec<(usize, usize)>,
        value: f32,
        mode: PadMode,
    },
    /// inputs: x, indices (i32/i64)
    Gather {
        axis: usize,
    },
    Tile(Vec<usize>),
    /// inputs: start, limit, delta (scalars known when a plan is made): ONNX Range.
    Range,
    /// inputs: a shape (known when a plan is made): that shape filled with one value, of the
    /// output's type.
    Fill(f64),
    /// inputs: x, shape (known when a plan is made): x broadcast to the shape (ONNX Expand).
    Expand,
    DepthToSpace(usize),
    SpaceToDepth(usize),
    Resize(Resize),
    /// float to quantized, or quantized to quantized (requantize)
    Quantize,
    Dequantize,
    Cast,
    /// The shape of its input, as i32 or i64 (the output's type), its axes taken in `perm`
    /// order when given (an NHWC value whose model sees NCHW). Known when a plan is made.
    Shape(Option<Vec<usize>>),
    ArgMax {
        axis: usize,
        keep_dims: bool,
    },
    ArgMin {
        axis: usize,
        keep_dims: bool,
    },
    /// The current value of a model variable (stateful models).
    ReadVariable(usize),
    /// inputs: the new value. Sets the variable after the run's reads.
    AssignVariable(usize),
}

impl Op {
    /// A short name for reports and profiles.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "Conv2d",
            Op::Depthwise(_) => "DepthwiseConv2d",
            Op::TransposeConv(_) => "TransposeConv2d",
            Op::FullyConnected { .. } => "FullyConnected",
            Op::MatMul { .. } => "MatMul",
            Op::Binary { .. } => "Binary",
            Op::Compare(_) => "Compare",
            Op::Where => "Where",
            Op::Not => "Not",
            Op::Unary(_) => "Unary",
            Op::Prelu => "Prelu",
            Op::Pool2d(_) => "Pool2d",
            Op::Reduce { .. } => "Reduce",
            Op::Softmax { .. } => "Softmax",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::Reshape { .. } => "Reshape",
            Op::Flatten(_) => "Flatten",
            Op::Squeeze(_) => "Squeeze",
            Op::Unsqueeze(_) => "Unsqueeze",
            Op::Transpose(_) => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::StridedSlice(_) => "StridedSlice",
            Op::Pad { .. } => "Pad",
            Op::Gather { .. } => "Gather",
            Op::Tile(_) => "Tile",
            Op::Expand => "Expand",
            Op::Range => "Range",
            Op::Fill(_) => "Fill",
            Op::DepthToSpace(_) => "DepthToSpace",
            Op::SpaceToDepth(_) => "SpaceToDepth",
            Op::Resize(_) => "Resize",
            Op::Quantize => "Quantize",
            Op::Dequantize => "Dequantize",
            Op::Cast => "Cast",
            Op::Shape(_) => "Shape",
            Op::ArgMax { .. } => "ArgMax",
            Op::ArgMin { .. } => "ArgMin",
            Op::ReadVariable(_) => "ReadVariable",
            Op::AssignVariable(_) => "AssignVariable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Symmetric,
    Edge,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Where the node came from in the model file ("CONV_2D #12"), for errors and profiles.
    pub origin: String,
}

/// A model variable: its element type, shape and initial contents.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub initial: Arc<Data>,
    pub shape: Vec<usize>,
    pub quant: Option<Quant>,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub variables: Vec<Variable>,
}

impl Graph {
    pub fn add_value(&mut self, value: Value) -> ValueId {
        self.values.push(value);
        self.values.len() - 1
    }

    pub fn add_const(&mut self, name: impl Into<String>, data: Data, shape: Vec<usize>) -> ValueId {
        self.add_value(Value {
            name: name.into(),
            dtype: data.dtype(),
            shape: shape.iter().map(|d| Some(*d)).collect(),
            quant: None,
            constant: Some(Arc::new(data)),
        })
    }

    /// The constant data of a value, if it is constant.
    pub fn constant(&self, id: ValueId) -> Option<&Arc<Data>> {
        self.values.get(id).and_then(|v| v.constant.as_ref())
    }

    /// The declared shape of a constant (fully known).
    pub fn const_shape(&self, id: ValueId) -> Option<Vec<usize>> {
        let v = self.values.get(id)?;
        v.constant.as_ref()?;
        v.shape.iter().copied().collect()
    }

    /// How many nodes read each value (model outputs count as one more reader).
    pub fn reader_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.values.len()];
        for node in &self.nodes {
            for &i in &node.inputs {
                counts[i] += 1;
            }
        }
        for &o in &self.outputs {
            counts[o] += 1;
        }
        counts
    }

    /// The node that computes each value, if any.
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut producers = vec![None; self.values.len()];
        for (n, node) in self.nodes.iter().enumerate() {
            for &o in &node.outputs {
                producers[o] = Some(n);
            }
        }
        producers
    }
}
