//! Reductions (mean, sum, max, min, product) over any set of axes, and arg-max/arg-min.
//! Axes that form one block reduce as `[outer, reduced, inner]`, summing whole inner rows at
//! a time (a global average pool over NHWC adds pixel rows of channels).

use super::quantized::wrap_float;
use super::{BuildCtx, Kernel};
use crate::graph::{Op, ReduceKind};
use crate::tensor::{View, ViewMut, strides};

/// Reduced axes folded into `[outer, reduced, inner]`, after moving reduced axes together
/// (when they are not contiguous, `order` gives the input element order to visit).
struct Layout {
    outer: usize,
    reduced: usize,
    inner: usize,
    /// For non-contiguous axes: the input offset of each element in
    /// [outer, reduced, inner] order.
    gather: Option<Vec<usize>>,
}

fn layout(shape: &[usize], axes: &[usize]) -> Layout {
    let contiguous = axes.windows(2).all(|w| w[1] == w[0] + 1);
    if axes.is_empty() {
        return Layout {
            outer: shape.iter().product(),
            reduced: 1,
            inner: 1,
            gather: None,
        };
    }
    if contiguous {
        let (first, last) = (axes[0], axes[axes.len() - 1]);
        return Layout {
            outer: shape[..first].iter().product(),
            reduced: shape[first..=last].iter().product(),
            inner: shape[last + 1..].iter().product(),
            gather: None,
        };
    }
    // Permute: kept axes first (in order), then reduced axes.
    let kept: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let st = strides(shape);
    let pshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let total: usize = shape.iter().product();
    let mut gather = Vec::with_capacity(total);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..total {
        gather.push(idx.iter().zip(&perm).map(|(i, p)| i * st[*p]).sum());
        for d in (0..pshape.len()).rev() {
            idx[d] += 1;
            if idx[d] < pshape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Layout {
        outer: kept.iter().map(|&a| shape[a]).product(),
        reduced: axes.iter().map(|&a| shape[a]).product(),
        inner: 1,
        gather: Some(gather),
    }
}

struct ReduceF32 {
    kind: ReduceKind,
    layout: Layout,
}

impl Kernel for ReduceF32 {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let x = inputs[0].f32s()?;
        let out = outputs[0].f32s_mut()?;
        let gathered: Vec<f32>;
        let x = match &self.layout.gather {
            Some(g) => {
                gathered = g.iter().map(|&i| x[i]).collect();
                &gathered[..]
            }
            None => x,
        };
        let Layout {
            outer,
            reduced,
            inner,
            ..
        } = self.layout;
        let init = match self.kind {
            ReduceKind::Mean | ReduceKind::Sum => 0.0,
            ReduceKind::Max => f32::NEG_INFINITY,
            ReduceKind::Min => f32::INFINITY,
            ReduceKind::Prod => 1.0,
        };
        for o in 0..outer {
            let acc = &mut out[o * inner..(o + 1) * inner];
            acc.fill(init);
            let block = &x[o * reduced * inner..(o + 1) * reduced * inner];
            for row in block.chunks_exact(inner.max(1)) {
                match self.kind {
                    ReduceKind::Mean | ReduceKind::Sum => {
                        acc.iter_mut().zip(row).for_each(|(a, v)| *a += v)
                    }
                    ReduceKind::Max => acc.iter_mut().zip(row).for_each(|(a, v)| *a = a.max(*v)),
                    ReduceKind::Min => acc.iter_mut().zip(row).for_each(|(a, v)| *a = a.min(*v)),
                    ReduceKind::Prod => acc.iter_mut().zip(row).for_each(|(a, v)| *a *= v),
                }
            }
            if self.kind == ReduceKind::Mean && reduced > 0 {
                let inv = 1.0 / reduced as f32;
                acc.iter_mut().for_each(|a| *a *= inv);
            }
        }
        Ok(())
    }
}

struct Arg {
    max: bool,
    layout: Layout,
}

impl Kernel for Arg {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let x: Vec<f32> = match inputs[0] {
            View::F32(v) => v.to_vec(),
            View::I8(v) => v.iter().map(|x| f32::from(*x)).collect(),
            View::U8(v) => v.iter().map(|x| f32::from(*x)).collect(),
            View::I32(v) => v.iter().map(|x| *x as f32).collect(),
            other => return Err(format!("arg-max of {}", other.dtype())),
        };
        let Layout {
            outer,
            reduced,
            inner,
            ..
        } = self.layout;
        let mut best = vec![0i64; outer * inner];
        for o in 0..outer {
            for i in 0..inner {
                let mut b = 0usize;
                for r in 1..reduced {
                    let (v, cur) = (
                        x[(o * reduced + r) * inner + i],
                        x[(o * reduced + b) * inner + i],
                    );
                    if (self.max && v > cur) || (!self.max && v < cur) {
                        b = r;
                    }
                }
                best[o * inner + i] = b as i64;
            }
        }
        match &mut outputs[0] {
            ViewMut::I32(out) => out.iter_mut().zip(&best).for_each(|(o, b)| *o = *b as i32),
            ViewMut::I64(out) => out.copy_from_slice(&best),
            _ => return Err("arg-max writes i32 or i64".into()),
        }
        Ok(())
    }
}

fn build_f32(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let shape = ctx.in_shape(0)?;
    match &ctx.node.op {
        Op::Reduce { kind, axes, .. } => Ok(Box::new(ReduceF32 {
            kind: *kind,
            layout: layout(shape, axes),
        })),
        _ => Err("not a reduction".into()),
    }
}

pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    match &ctx.node.op {
        Op::ArgMax { axis, .. } | Op::ArgMin { axis, .. } => Ok(Box::new(Arg {
            max: matches!(ctx.node.op, Op::ArgMax { .. }),
            layout: layout(ctx.in_shape(0)?, &[*axis]),
        })),
        _ => wrap_float(ctx, build_f32),
    }
}
