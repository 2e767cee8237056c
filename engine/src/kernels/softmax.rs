//! Softmax and log-softmax along one axis (rten-vecmath's vectorized softmax for the last
//! axis, a strided loop for others).

use rten_simd::SimdOp;

use super::quantized::wrap_float;
use super::{BuildCtx, Kernel};
use crate::graph::Op;
use crate::tensor::{View, ViewMut};

struct SoftmaxF32 {
    outer: usize,
    len: usize,
    inner: usize,
    beta: f32,
    log: bool,
}

impl Kernel for SoftmaxF32 {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let x = inputs[0].f32s()?;
        let out = outputs[0].f32s_mut()?;
        out.copy_from_slice(x);
        if self.beta != 1.0 {
            out.iter_mut().for_each(|v| *v *= self.beta);
        }
        let mut row = vec![0.0f32; self.len];
        for o in 0..self.outer {
            for i in 0..self.inner {
                let at = |r: usize| (o * self.len + r) * self.inner + i;
                if self.inner == 1 {
                    let r = &mut out[o * self.len..(o + 1) * self.len];
                    self.apply(r);
                } else {
                    for (r, v) in row.iter_mut().enumerate() {
                        *v = out[at(r)];
                    }
                    self.apply(&mut row);
                    for (r, v) in row.iter().enumerate() {
                        out[at(r)] = *v;
                    }
                }
            }
        }
        Ok(())
    }
}

impl SoftmaxF32 {
    fn apply(&self, row: &mut [f32]) {
        if self.log {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
            let log_sum = sum.ln();
            row.iter_mut().for_each(|v| *v = *v - max - log_sum);
        } else {
            rten_vecmath::Softmax::new_mut(row).dispatch();
        }
    }
}

fn build_f32(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let shape = ctx.in_shape(0)?;
    let (axis, beta, log) = match ctx.node.op {
        Op::Softmax { axis, beta } => (axis, beta, false),
        Op::LogSoftmax { axis } => (axis, 1.0, true),
        _ => return Err("not a softmax".into()),
    };
    if axis >= shape.len().max(1) {
        return Err("the softmax axis is out of range".into());
    }
    let len = shape.get(axis).copied().unwrap_or(1);
    Ok(Box::new(SoftmaxF32 {
        outer: shape[..axis].iter().product(),
        len,
        inner: shape
            .get(axis + 1..)
            .map(|s| s.iter().product())
            .unwrap_or(1),
        beta,
        log,
    }))
}

pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    wrap_float(ctx, build_f32)
}
