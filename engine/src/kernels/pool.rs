//! Max and average pooling over NHWC windows. Average pools divide by the elements inside
//! the input (TFLite, ONNX's default) or by the whole window (ONNX count_include_pad).

use super::quantized::wrap_float;
use super::simd::activate;
use super::{BuildCtx, Kernel};
use crate::graph::{Activation, Op, PoolKind};
use crate::plan::shapes::conv_axis;
use crate::tensor::{View, ViewMut};

struct PoolF32 {
    kind: PoolKind,
    batch: usize,
    ih: usize,
    iw: usize,
    c: usize,
    oh: usize,
    ow: usize,
    filter: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    count_include_pad: bool,
    activation: Activation,
}

impl Kernel for PoolF32 {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let x = inputs[0].f32s()?;
        let out = outputs[0].f32s_mut()?;
        let c = self.c;
        let mut acc = vec![0.0f32; c];
        for n in 0..self.batch {
            let image = &x[n * self.ih * self.iw * c..][..self.ih * self.iw * c];
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    let y0 = (oy * self.stride.0) as isize - self.pad.0 as isize;
                    let x0 = (ox * self.stride.1) as isize - self.pad.1 as isize;
                    let ys = y0.max(0) as usize
                        ..((y0 + self.filter.0 as isize).max(0) as usize).min(self.ih);
                    let xs = x0.max(0) as usize
                        ..((x0 + self.filter.1 as isize).max(0) as usize).min(self.iw);
                    let count = ys.len() * xs.len();
                    match self.kind {
                        PoolKind::Max => acc.fill(f32::NEG_INFINITY),
                        PoolKind::Average => acc.fill(0.0),
                    }
                    for iy in ys.clone() {
                        for ix in xs.clone() {
                            let px = &image[(iy * self.iw + ix) * c..][..c];
                            match self.kind {
                                PoolKind::Max => {
                                    acc.iter_mut().zip(px).for_each(|(a, v)| *a = a.max(*v))
                                }
                                PoolKind::Average => {
                                    acc.iter_mut().zip(px).for_each(|(a, v)| *a += v)
                                }
                            }
                        }
                    }
                    let o = &mut out[((n * self.oh + oy) * self.ow + ox) * c..][..c];
                    match self.kind {
                        PoolKind::Max if count == 0 => o.fill(0.0),
                        PoolKind::Max => o.copy_from_slice(&acc),
                        PoolKind::Average => {
                            let div = if self.count_include_pad {
                                self.filter.0 * self.filter.1
                            } else {
                                count.max(1)
                            };
                            let inv = 1.0 / div as f32;
                            o.iter_mut().zip(&acc).for_each(|(o, a)| *o = a * inv);
                        }
                    }
                }
            }
        }
        activate(out, self.activation);
        Ok(())
    }
}

fn build_f32(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let Op::Pool2d(p) = &ctx.node.op else {
        return Err("not a pool".into());
    };
    let x = ctx.in_shape(0)?;
    let [batch, ih, iw, c] = x[..] else {
        return Err("pool input must be NHWC".into());
    };
    let (oh, pad_t) = conv_axis(ih, p.filter.0, p.stride.0, 1, p.padding, 0)?;
    let (ow, pad_l) = conv_axis(iw, p.filter.1, p.stride.1, 1, p.padding, 1)?;
    Ok(Box::new(PoolF32 {
        kind: p.kind,
        batch,
        ih,
        iw,
        c,
        oh,
        ow,
        filter: p.filter,
        stride: p.stride,
        pad: (pad_t, pad_l),
        count_include_pad: p.count_include_pad,
        activation: p.activation,
    }))
}

pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    match super::int8::build(ctx)? {
        Some(exact) => Ok(exact),
        None => wrap_float(ctx, build_f32),
    }
}
