//! Image resizing over NHWC (bilinear and nearest), with TFLite's coordinate rules
//! (align_corners, half_pixel_centers).

use super::quantized::wrap_float;
use super::{BuildCtx, Kernel};
use crate::graph::{Op, Resize, ResizeMode};
use crate::tensor::{View, ViewMut};

struct ResizeF32 {
    r: Resize,
    batch: usize,
    ih: usize,
    iw: usize,
    c: usize,
}

/// The source coordinate scale of one axis.
fn scale(input: usize, output: usize, align_corners: bool) -> f32 {
    if align_corners && output > 1 {
        (input as f32 - 1.0) / (output as f32 - 1.0)
    } else {
        input as f32 / output as f32
    }
}

/// Bilinear taps along one axis: (low index, high index, weight of high).
fn bilinear_axis(out: usize, input: usize, r: &Resize) -> Vec<(usize, usize, f32)> {
    let s = scale(input, out, r.align_corners);
    (0..out)
        .map(|o| {
            let src = if r.half_pixel_centers {
                (o as f32 + 0.5) * s - 0.5
            } else {
                o as f32 * s
            };
            let lo = src.floor();
            let frac = src - lo;
            let lo_i = (lo.max(0.0) as usize).min(input - 1);
            let hi_i = (src.ceil().max(0.0) as usize).min(input - 1);
            (lo_i, hi_i, frac)
        })
        .collect()
}

fn nearest_axis(out: usize, input: usize, r: &Resize) -> Vec<usize> {
    let s = scale(input, out, r.align_corners);
    (0..out)
        .map(|o| {
            let src = if r.align_corners {
                (o as f32 * s).round()
            } else if r.half_pixel_centers {
                ((o as f32 + 0.5) * s).floor()
            } else {
                (o as f32 * s).floor()
            };
            (src.max(0.0) as usize).min(input - 1)
        })
        .collect()
}

impl Kernel for ResizeF32 {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let x = inputs[0].f32s()?;
        let out = outputs[0].f32s_mut()?;
        let (oh, ow) = crate::plan::shapes::resize_size(self.r.to, self.ih, self.iw)?;
        let c = self.c;
        if self.ih == 0 || self.iw == 0 {
            return Err("resizing an empty image".into());
        }
        let px = |n: usize, y: usize, xx: usize| &x[((n * self.ih + y) * self.iw + xx) * c..][..c];
        match self.r.mode {
            ResizeMode::Bilinear => {
                let ys = bilinear_axis(oh, self.ih, &self.r);
                let xs = bilinear_axis(ow, self.iw, &self.r);
                for n in 0..self.batch {
                    for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
                        for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
                            let o = &mut out[((n * oh + oy) * ow + ox) * c..][..c];
                            let (a, b, cc, d) =
                                (px(n, y0, x0), px(n, y0, x1), px(n, y1, x0), px(n, y1, x1));
                            for i in 0..c {
                                let top = a[i] + (b[i] - a[i]) * fx;
                                let bottom = cc[i] + (d[i] - cc[i]) * fx;
                                o[i] = top + (bottom - top) * fy;
                            }
                        }
                    }
                }
            }
            ResizeMode::Nearest => {
                let ys = nearest_axis(oh, self.ih, &self.r);
                let xs = nearest_axis(ow, self.iw, &self.r);
                for n in 0..self.batch {
                    for (oy, &y) in ys.iter().enumerate() {
                        for (ox, &xx) in xs.iter().enumerate() {
                            out[((n * oh + oy) * ow + ox) * c..][..c].copy_from_slice(px(n, y, xx));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn build_f32(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let Op::Resize(r) = &ctx.node.op else {
        return Err("not a resize".into());
    };
    let [batch, ih, iw, c] = ctx.in_shape(0)?[..] else {
        return Err("resize input must be NHWC".into());
    };
    Ok(Box::new(ResizeF32 {
        r: r.clone(),
        batch,
        ih,
        iw,
        c,
    }))
}

pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    wrap_float(ctx, build_f32)
}
