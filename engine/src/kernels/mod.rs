//! Kernels: each node of a plan becomes one [`Kernel`], built for its concrete shapes, that
//! reads its inputs and writes its outputs. Heavy kernels (convolutions, matrix products)
//! run on rten-gemm's packed GEMM; elementwise, depthwise and pooling kernels on rten-simd,
//! dispatched at run time to the widest SIMD the CPU has (AVX-512, AVX2, Neon).

mod binary;
mod conv;
mod depthwise;
mod gemm;
mod int8;
mod layout;
mod logic;
mod pool;
mod qgemm;
mod quantized;
mod reduce;
mod resize;
mod scratch;
mod simd;
mod softmax;
mod unary;

pub use gemm::{PackedF32, PackedI8, isa_name};
pub use qgemm::QPacked;

use crate::graph::{Graph, Node, Op, Quant, Value};
use crate::prepare::Prepared;
use crate::tensor::{DType, View, ViewMut};

/// A node's work for one set of shapes.
pub trait Kernel: Send + Sync {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String>;
}

/// What a kernel builder knows of its node.
pub struct BuildCtx<'a> {
    pub graph: &'a Graph,
    pub node: &'a Node,
    pub in_shapes: &'a [Vec<usize>],
    pub out_shapes: &'a [Vec<usize>],
    pub prepared: Option<&'a std::sync::Arc<Prepared>>,
}

impl BuildCtx<'_> {
    pub fn input(&self, i: usize) -> Result<&Value, String> {
        self.node
            .inputs
            .get(i)
            .and_then(|&v| self.graph.values.get(v))
            .ok_or_else(|| format!("input {i} is missing"))
    }

    pub fn output(&self, i: usize) -> Result<&Value, String> {
        self.node
            .outputs
            .get(i)
            .and_then(|&v| self.graph.values.get(v))
            .ok_or_else(|| format!("output {i} is missing"))
    }

    pub fn in_dtype(&self, i: usize) -> Result<DType, String> {
        Ok(self.input(i)?.dtype)
    }

    pub fn out_dtype(&self, i: usize) -> Result<DType, String> {
        Ok(self.output(i)?.dtype)
    }

    pub fn in_quant(&self, i: usize) -> Option<&Quant> {
        self.input(i).ok().and_then(|v| v.quant.as_ref())
    }

    pub fn out_quant(&self, i: usize) -> Option<&Quant> {
        self.output(i).ok().and_then(|v| v.quant.as_ref())
    }

    pub fn in_shape(&self, i: usize) -> Result<&[usize], String> {
        self.in_shapes
            .get(i)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("input {i} has no shape"))
    }

    pub fn out_shape(&self, i: usize) -> Result<&[usize], String> {
        self.out_shapes
            .get(i)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("output {i} has no shape"))
    }
}

/// Builds the kernel of a node.
pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    match &ctx.node.op {
        Op::Conv2d(_) | Op::FullyConnected { .. } | Op::TransposeConv(_) => conv::build(ctx),
        Op::Depthwise(_) => depthwise::build(ctx),
        Op::MatMul { .. } => gemm::build_matmul(ctx),
        Op::Binary { .. } | Op::Prelu => binary::build(ctx),
        Op::Compare(_) | Op::Where | Op::Not | Op::Range | Op::Fill(_) => logic::build(ctx),
        Op::Unary(_) => unary::build(ctx),
        Op::Pool2d(_) => pool::build(ctx),
        Op::Reduce { .. } | Op::ArgMax { .. } | Op::ArgMin { .. } => reduce::build(ctx),
        Op::Softmax { .. } | Op::LogSoftmax { .. } => softmax::build(ctx),
        Op::Resize(_) => resize::build(ctx),
        Op::Quantize | Op::Dequantize | Op::Cast => quantized::build_convert(ctx),
        Op::Reshape { .. }
        | Op::Flatten(_)
        | Op::Squeeze(_)
        | Op::Unsqueeze(_)
        | Op::Transpose(_)
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::StridedSlice(_)
        | Op::Pad { .. }
        | Op::Gather { .. }
        | Op::Tile(_)
        | Op::Expand
        | Op::DepthToSpace(_)
        | Op::SpaceToDepth(_) => layout::build(ctx),
        Op::Shape(_) => Err("shapes are known when a plan is made".into()),
        Op::ReadVariable(_) | Op::AssignVariable(_) => {
            Err("variables are read and written by the plan, not a kernel".into())
        }
    }
}

/// Whether to split work of this many multiply-adds across threads.
pub(crate) fn parallel_worth(work: usize) -> bool {
    rayon::current_num_threads() > 1 && work >= 1 << 16
}

/// Frees the calling thread's scratch buffers in every kernel module.
pub(crate) fn release_scratch() {
    conv::release_scratch();
    depthwise::release_scratch();
    gemm::release_scratch();
    quantized::release_scratch();
}
