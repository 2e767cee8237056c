//! Convolutions and dense layers as GEMM over NHWC rows: a 1x1 convolution (stride 1, no
//! padding) multiplies the input rows directly; any other window gathers patches (im2col)
//! one block of output pixels at a time, so the patch buffer stays in cache. Three number
//! paths share the geometry: f32; int8 (u8 x i8 products, requantized per output channel);
//! and hybrid (f32 activations quantized per image or row as TFLite does, int8 weights).

use std::cell::RefCell;
use std::sync::Arc;

use rayon::prelude::*;

use super::simd::activate;
use super::{BuildCtx, Kernel, parallel_worth};
use crate::graph::{Activation, Op, Padding};
use crate::plan::shapes::conv_axis;
use crate::prepare::{ConvWeightsF32, ConvWeightsI8, Prepared};
use crate::quant::qd8_quantize_row;
use crate::tensor::{DType, View, ViewMut};

thread_local! {
    static PATCHES_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PATCHES_U8: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static IMAGE_U8: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static ACC: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
    static GROUP_ACC: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
    static GROUP_OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Frees this thread's scratch buffers of this module (an idle model gives them back).
pub(crate) fn release_scratch() {
    PATCHES_F32.with(|c| c.take());
    PATCHES_U8.with(|c| c.take());
    IMAGE_U8.with(|c| c.take());
    ACC.with(|c| c.take());
    GROUP_ACC.with(|c| c.take());
    GROUP_OUT.with(|c| c.take());
}

/// Where a convolution reads and writes, for one batch of images.
#[derive(Debug, Clone)]
pub struct Geometry {
    pub batch: usize,
    pub ih: usize,
    pub iw: usize,
    pub cin: usize,
    pub oh: usize,
    pub ow: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    /// Leading padding (top, left).
    pub pad: (usize, usize),
    pub groups: usize,
}

impl Geometry {
    pub fn cin_g(&self) -> usize {
        self.cin / self.groups
    }

    pub fn cout_g(&self) -> usize {
        self.cout / self.groups
    }

    /// Depth of one patch row.
    pub fn k(&self) -> usize {
        self.kh * self.kw * self.cin_g()
    }

    /// The input rows are the patches: a 1x1 window, stride 1, no padding, one group.
    pub fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == (1, 1)
            && self.pad == (0, 0)
            && self.groups == 1
    }

    /// Output pixels per block: enough rows to amortise a GEMM call, few enough that the
    /// patch block stays in L2.
    fn block_rows(&self) -> usize {
        let k = self.k().max(1);
        (65536 / k).clamp(16, 512)
    }

    /// Writes the patches of output pixels `pixels` (of one image) into `out`, one row of
    /// `k()` per pixel; positions outside the image are `pad`.
    fn im2col<T: Copy>(
        &self,
        image: &[T],
        group: usize,
        pixels: std::ops::Range<usize>,
        pad: T,
        out: &mut [T],
    ) {
        let (cin, cin_g) = (self.cin, self.cin_g());
        let k = self.k();
        let c0 = group * cin_g;
        let (kw, dx) = (self.kw, self.dilation.1);
        // With one group and no dilation, the taps of a kernel row are one run of the input.
        let runs = self.groups == 1 && dx == 1;
        for (row, p) in pixels.enumerate() {
            let (oy, ox) = (p / self.ow, p % self.ow);
            let dest = &mut out[row * k..(row + 1) * k];
            let ix0 = (ox * self.stride.1) as isize - self.pad.1 as isize;
            let whole_row = runs && ix0 >= 0 && ix0 as usize + kw <= self.iw;
            for ky in 0..self.kh {
                let iy = (oy * self.stride.0 + ky * self.dilation.0) as isize - self.pad.0 as isize;
                let d_row = &mut dest[ky * kw * cin_g..(ky + 1) * kw * cin_g];
                if iy < 0 || iy as usize >= self.ih {
                    d_row.fill(pad);
                    continue;
                }
                let row_start = iy as usize * self.iw;
                if whole_row {
                    let at = (row_start + ix0 as usize) * cin;
                    d_row.copy_from_slice(&image[at..at + kw * cin]);
                    continue;
                }
                for kx in 0..kw {
                    let ix = ix0 + (kx * dx) as isize;
                    let d = &mut d_row[kx * cin_g..(kx + 1) * cin_g];
                    if ix >= 0 && (ix as usize) < self.iw {
                        let at = (row_start + ix as usize) * cin + c0;
                        d.copy_from_slice(&image[at..at + cin_g]);
                    } else {
                        d.fill(pad);
                    }
                }
            }
        }
    }
}

fn geometry(
    ctx: &BuildCtx<'_>,
    kernel: (usize, usize, usize),
    cout: usize,
) -> Result<Geometry, String> {
    let x = ctx.in_shape(0)?;
    let [batch, ih, iw, cin] = x[..] else {
        return Err("convolution input must be NHWC".into());
    };
    let (kh, kw, cin_g) = kernel;
    let Op::Conv2d(c) = &ctx.node.op else {
        return Err("not a convolution".into());
    };
    let (oh, pad_t) = conv_axis(ih, kh, c.stride.0, c.dilation.0, c.padding, 0)?;
    let (ow, pad_l) = conv_axis(iw, kw, c.stride.1, c.dilation.1, c.padding, 1)?;
    if cin_g * c.groups != cin {
        return Err("input channels do not match the weights".into());
    }
    Ok(Geometry {
        batch,
        ih,
        iw,
        cin,
        oh,
        ow,
        cout,
        kh,
        kw,
        stride: c.stride,
        dilation: c.dilation,
        pad: (pad_t, pad_l),
        groups: c.groups,
    })
}

/// The geometry of a dense layer: each row of the input is one 1x1 "pixel".
fn dense_geometry(ctx: &BuildCtx<'_>, k: usize, n: usize) -> Result<Geometry, String> {
    let total: usize = ctx.in_shape(0)?.iter().product();
    if k == 0 || !total.is_multiple_of(k) {
        return Err("the input is not a whole number of rows".into());
    }
    Ok(Geometry {
        batch: 1,
        ih: total / k,
        iw: 1,
        cin: k,
        oh: total / k,
        ow: 1,
        cout: n,
        kh: 1,
        kw: 1,
        stride: (1, 1),
        dilation: (1, 1),
        pad: (0, 0),
        groups: 1,
    })
}

pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let prepared = ctx.prepared.ok_or("weights were not prepared")?;
    let (activation, dense) = match &ctx.node.op {
        Op::Conv2d(c) => (c.activation, false),
        Op::FullyConnected { activation, .. } => (*activation, true),
        Op::TransposeConv(t) => {
            return build_transpose(ctx, prepared, t.stride, t.padding, t.activation);
        }
        _ => return Err("not a convolution".into()),
    };
    match &**prepared {
        Prepared::ConvF32(w) => {
            let (kh, kw, cin_g) = w.kernel;
            let g = if dense {
                dense_geometry(ctx, kh * kw * cin_g, w.out_channels)?
            } else {
                geometry(ctx, w.kernel, w.out_channels)?
            };
            if ctx.in_dtype(0)? != DType::F32 {
                return Err("float weights with a non-float input".into());
            }
            Ok(Box::new(ConvF32 {
                weights: prepared.clone(),
                g,
                activation,
            }))
        }
        Prepared::ConvI8(w) => {
            let (kh, kw, cin_g) = w.kernel;
            let g = if dense {
                dense_geometry(ctx, kh * kw * cin_g, w.out_channels)?
            } else {
                geometry(ctx, w.kernel, w.out_channels)?
            };
            if ctx.in_dtype(0)? == DType::F32 {
                let per_row = dense || g.pointwise();
                return Ok(Box::new(ConvHybrid {
                    weights: prepared.clone(),
                    g,
                    activation,
                    per_row,
                    col_sums: column_sums(w),
                }));
            }
            let (in_scale, in_zero) = ctx
                .in_quant(0)
                .and_then(|q| q.single())
                .ok_or("a quantized convolution's input needs one scale")?;
            let (out_scale, out_zero) = ctx
                .out_quant(0)
                .and_then(|q| q.single())
                .ok_or("a quantized convolution's output needs one scale")?;
            let out_dtype = ctx.out_dtype(0)?;
            let (qmin, qmax) = crate::quant::range_of(out_dtype);
            let (lo, hi) = quantized_bounds(activation, out_scale, out_zero, qmin, qmax)?;
            let multipliers: Vec<f32> = w.scales.iter().map(|s| in_scale * s / out_scale).collect();
            let in_dtype = ctx.in_dtype(0)?;
            let in_zero_u8 = match in_dtype {
                DType::I8 => {
                    u8::try_from(in_zero + 128).map_err(|_| "input zero point out of range")?
                }
                DType::U8 => u8::try_from(in_zero).map_err(|_| "input zero point out of range")?,
                _ => return Err("int8 weights with an input that is neither i8 nor u8".into()),
            };
            let bias: Vec<i32> = w
                .bias_i32
                .iter()
                .zip(column_sums(w))
                .map(|(b, s)| b.wrapping_sub(i32::from(in_zero_u8).wrapping_mul(s)))
                .collect();
            let padded = w
                .fused
                .as_ref()
                .map(|f| (f.padded(&bias), f.padded(&multipliers)));
            Ok(Box::new(ConvInt8 {
                weights: prepared.clone(),
                g,
                in_zero_u8,
                padded,
                bias,
                signed_output: out_dtype == DType::I8,
                multipliers,
                out_zero,
                lo,
                hi,
            }))
        }
        Prepared::Depthwise(_) => Err("depthwise weights for a convolution".into()),
    }
}

/// The integer range a fused activation allows on a quantized output.
pub fn quantized_bounds(
    activation: Activation,
    scale: f32,
    zero: i32,
    qmin: i32,
    qmax: i32,
) -> Result<(i32, i32), String> {
    let (lo, hi) = activation
        .bounds()
        .ok_or("this fused activation on a quantized output")?;
    let q = |v: f32| -> i32 {
        if v.is_infinite() {
            if v > 0.0 { qmax } else { qmin }
        } else {
            crate::quant::requantize(v / scale, zero, qmin, qmax)
        }
    };
    Ok((q(lo).max(qmin), q(hi).min(qmax)))
}

/// Runs `f(image, block_start, block_rows, out_block)` over every block of every image,
/// in parallel when worth it.
fn for_blocks<T: Send, F>(g: &Geometry, out: &mut [T], cout: usize, f: F) -> Result<(), String>
where
    F: Fn(usize, usize, usize, &mut [T]) -> Result<(), String> + Sync,
{
    let pixels = g.oh * g.ow;
    let mut block = g.block_rows();
    let per_image = pixels * cout;
    let work = g.batch * pixels * g.k() * g.cout_g();
    if parallel_worth(work) {
        // At least two blocks a thread (small late layers are otherwise one block).
        let tasks = 2 * rayon::current_num_threads();
        let per_task = (g.batch * pixels).div_ceil(tasks);
        block = block.min(per_task.max(8));
        out.par_chunks_mut(per_image.max(1))
            .enumerate()
            .try_for_each(|(n, image_out)| {
                image_out
                    .par_chunks_mut((block * cout).max(1))
                    .enumerate()
                    .try_for_each(|(b, o)| f(n, b * block, o.len() / cout.max(1), o))
            })
    } else {
        for (n, image_out) in out.chunks_mut(per_image.max(1)).enumerate() {
            for (b, o) in image_out.chunks_mut((block * cout).max(1)).enumerate() {
                f(n, b * block, o.len() / cout.max(1), o)?;
            }
        }
        Ok(())
    }
}

use super::scratch::with_scratch as with_buffer;

struct ConvF32 {
    weights: Arc<Prepared>,
    g: Geometry,
    activation: Activation,
}

impl ConvF32 {
    fn weights(&self) -> Result<&ConvWeightsF32, String> {
        match &*self.weights {
            Prepared::ConvF32(w) => Ok(w),
            _ => Err("weights of the wrong kind".into()),
        }
    }
}

impl Kernel for ConvF32 {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let x = inputs[0].f32s()?;
        let out = outputs[0].f32s_mut()?;
        let w = self.weights()?;
        let g = &self.g;
        let image_len = g.ih * g.iw * g.cin;
        let (k, cout_g) = (g.k(), g.cout_g());
        for_blocks(g, out, g.cout, |n, p0, rows, o: &mut [f32]| {
            let image = &x[n * image_len..(n + 1) * image_len];
            if g.pointwise() {
                w.groups[0].gemm(o, &image[p0 * g.cin..], rows, g.cin, Some(&w.bias))?;
            } else if g.groups == 1 {
                with_buffer(&PATCHES_F32, rows * k, |patches| {
                    g.im2col(image, 0, p0..p0 + rows, 0.0, patches);
                    w.groups[0].gemm(o, patches, rows, k, Some(&w.bias))
                })?;
            } else {
                with_buffer(&PATCHES_F32, rows * k, |patches| {
                    with_buffer(&GROUP_OUT, rows * cout_g, |part| {
                        for (gi, packed) in w.groups.iter().enumerate() {
                            g.im2col(image, gi, p0..p0 + rows, 0.0, patches);
                            let bias = &w.bias[gi * cout_g..(gi + 1) * cout_g];
                            packed.gemm(part, patches, rows, k, Some(bias))?;
                            for (dst, src) in
                                o.chunks_exact_mut(g.cout).zip(part.chunks_exact(cout_g))
                            {
                                dst[gi * cout_g..(gi + 1) * cout_g].copy_from_slice(src);
                            }
                        }
                        Ok::<(), String>(())
                    })
                })?;
            }
            activate(o, self.activation);
            Ok(())
        })
    }
}

/// Int8 in, int8 out: u8 patches (i8 inputs shifted by 128) times i8 weights, then
/// `clamp(round((acc + bias) * multiplier[c]) + zero)`. The input's zero point is folded into
/// the bias (`bias - zero * Σ weights`), so the products need no correction.
struct ConvInt8 {
    weights: Arc<Prepared>,
    g: Geometry,
    in_zero_u8: u8,
    signed_output: bool,
    multipliers: Vec<f32>,
    /// Per output channel: the bias less the input zero point's share.
    bias: Vec<i32>,
    /// The fused kernel's bias and multipliers, padded to its blocks (when it runs).
    padded: Option<(Vec<i32>, Vec<f32>)>,
    out_zero: i32,
    lo: i32,
    hi: i32,
}

fn i8_weights(p: &Prepared) -> Result<&ConvWeightsI8, String> {
    match p {
        Prepared::ConvI8(w) => Ok(w),
        _ => Err("weights of the wrong kind".into()),
    }
}

/// Raw products `Σ a · w` of one block of u8 rows with every group's weights into `acc`
/// ([rows, cout]); the window's padding is `zero` (the rows' zero point), whose share the
/// caller removes with the weights' column sums ([`column_sums`]).
fn int8_products(
    g: &Geometry,
    w: &ConvWeightsI8,
    image: &[u8],
    zero: u8,
    p0: usize,
    rows: usize,
    acc: &mut [i32],
) -> Result<(), String> {
    let (k, cout_g) = (g.k(), g.cout_g());
    if g.pointwise() {
        return w.groups[0].products(acc, &image[p0 * g.cin..], rows, g.cin);
    }
    with_buffer(&PATCHES_U8, rows * k, |patches| {
        if g.groups == 1 {
            g.im2col(image, 0, p0..p0 + rows, zero, patches);
            return w.groups[0].products(acc, patches, rows, k);
        }
        with_buffer(&GROUP_ACC, rows * cout_g, |part| {
            for (gi, packed) in w.groups.iter().enumerate() {
                g.im2col(image, gi, p0..p0 + rows, zero, patches);
                packed.products(part, patches, rows, k)?;
                for (dst, src) in acc.chunks_exact_mut(g.cout).zip(part.chunks_exact(cout_g)) {
                    dst[gi * cout_g..(gi + 1) * cout_g].copy_from_slice(src);
                }
            }
            Ok(())
        })
    })
}

/// i8 to u8 by adding 128 (flipping the sign bit), vectorized.
fn shift_to_u8(from: &[i8], to: &mut [u8]) {
    super::simd::vectorized(
        #[inline(always)]
        || {
            for (d, q) in to.iter_mut().zip(from) {
                *d = (*q as u8) ^ 0x80;
            }
        },
    )
}

/// `Σ_k w[k, c]` for every output channel, across the groups.
fn column_sums(w: &ConvWeightsI8) -> Vec<i32> {
    w.groups
        .iter()
        .flat_map(|p| p.col_sums().iter().copied())
        .collect()
}

/// `out[p, c] = clamp(round((acc[p, c] + bias[c]) * multiplier[c]) + zero, lo, hi)` for
/// every pixel row, vectorized across channels.
fn requantize_rows<T: QOut>(
    acc: &[i32],
    bias: &[i32],
    multipliers: &[f32],
    zero: i32,
    lo: i32,
    hi: i32,
    out: &mut [T],
) {
    let c = bias.len();
    // Clamped in f32 before rounding (max/min also turn NaN into a bound), so the magic-number
    // rounding is exact and the loop vectorizes.
    let (lo_f, hi_f) = ((lo - zero) as f32, (hi - zero) as f32);
    super::simd::vectorized(
        #[inline(always)]
        || {
            for (a, o) in acc.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
                for (((a, b), m), o) in a.iter().zip(bias).zip(multipliers).zip(o.iter_mut()) {
                    let v = (a.wrapping_add(*b) as f32 * m).max(lo_f).min(hi_f);
                    *o = T::from_i32(crate::quant::round_clamped(v) + zero);
                }
            }
        },
    )
}

/// An integer element type a quantized kernel writes.
pub trait QOut: super::qgemm::Code {
    fn from_i32(v: i32) -> Self;
}

impl QOut for i8 {
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as i8
    }
}

impl QOut for u8 {
    #[inline(always)]
    fn from_i32(v: i32) -> Self {
        v as u8
    }
}

impl ConvInt8 {
    fn run_typed<T: QOut>(&self, x: &[u8], out: &mut [T]) -> Result<(), String> {
        let w = i8_weights(&self.weights)?;
        let g = &self.g;
        let image_len = g.ih * g.iw * g.cin;
        if let (Some(fused), Some((bias, multipliers))) = (&w.fused, &self.padded) {
            let epi = super::qgemm::Requant {
                bias,
                multipliers,
                zero: self.out_zero,
                lo: self.lo,
                hi: self.hi,
            };
            return for_blocks(g, out, g.cout, |n, p0, rows, o: &mut [T]| {
                let image = &x[n * image_len..(n + 1) * image_len];
                if g.pointwise() {
                    return fused.run(&image[p0 * g.cin..], rows, g.cin, &epi, o);
                }
                let k = g.k();
                with_buffer(&PATCHES_U8, rows * k, |patches| {
                    g.im2col(image, 0, p0..p0 + rows, self.in_zero_u8, patches);
                    fused.run(patches, rows, k, &epi, o)
                })
            });
        }
        for_blocks(g, out, g.cout, |n, p0, rows, o: &mut [T]| {
            with_buffer(&ACC, rows * g.cout, |acc| {
                let image = &x[n * image_len..(n + 1) * image_len];
                int8_products(g, w, image, self.in_zero_u8, p0, rows, acc)?;
                requantize_rows(
                    acc,
                    &self.bias,
                    &self.multipliers,
                    self.out_zero,
                    self.lo,
                    self.hi,
                    o,
                );
                Ok(())
            })
        })
    }
}

impl Kernel for ConvInt8 {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let run = |x: &[u8], out: &mut ViewMut<'_>| -> Result<(), String> {
            match out {
                ViewMut::I8(o) if self.signed_output => self.run_typed(x, o),
                ViewMut::U8(o) if !self.signed_output => self.run_typed(x, o),
                _ => Err("a quantized convolution's output type does not match".into()),
            }
        };
        match inputs[0] {
            View::U8(v) => run(v, &mut outputs[0]),
            View::I8(v) => with_buffer(&IMAGE_U8, v.len(), |shifted| {
                shift_to_u8(v, shifted);
                run(shifted, &mut outputs[0])
            }),
            _ => Err("a quantized convolution of a non-integer input".into()),
        }
    }
}

/// Hybrid (dynamic-range) ops: f32 in and out, int8 weights. The input is quantized to int8
/// with its own scale and zero point per row (dense layers and 1x1 convolutions, which
/// LiteRT's XNNPACK runs as dense layers) or per image (other convolutions), multiplied in
/// integers, and scaled back: `acc * in_scale * weight_scale[c] + bias[c]`. Quantization
/// follows XNNPACK's rule, so results match what LiteRT gives by default.
struct ConvHybrid {
    weights: Arc<Prepared>,
    g: Geometry,
    activation: Activation,
    /// Quantize each row separately (TFLite's dense layers) rather than each image.
    per_row: bool,
    /// `Σ_k w[k, c]` per output channel (to take out the per-image zero point).
    col_sums: Vec<i32>,
}

impl Kernel for ConvHybrid {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let w = i8_weights(&self.weights)?;
        let x = inputs[0].f32s()?;
        let out = outputs[0].f32s_mut()?;
        let g = &self.g;
        let image_len = g.ih * g.iw * g.cin;
        let units: Vec<(usize, usize)> = if self.per_row {
            (0..g.batch * g.oh * g.ow)
                .map(|r| (r * g.cin, g.cin))
                .collect()
        } else {
            (0..g.batch).map(|n| (n * image_len, image_len)).collect()
        };
        with_buffer(&IMAGE_U8, x.len(), |quantized| {
            let mut params = Vec::with_capacity(units.len());
            let mut q8 = Vec::new();
            for &(start, len) in &units {
                q8.resize(len, 0i8);
                let (scale, zero) = qd8_quantize_row(&x[start..start + len], &mut q8);
                for (d, q) in quantized[start..start + len].iter_mut().zip(&q8) {
                    *d = (*q as u8) ^ 0x80;
                }
                params.push((scale, u8::try_from(zero + 128).unwrap_or(128)));
            }
            self.products(w, quantized, &params, out)
        })
    }
}

impl ConvHybrid {
    fn products(
        &self,
        w: &ConvWeightsI8,
        quantized: &[u8],
        params: &[(f32, u8)],
        out: &mut [f32],
    ) -> Result<(), String> {
        let g = &self.g;
        let image_len = g.ih * g.iw * g.cin;
        let cout = g.cout;
        for_blocks(g, out, cout, |n, p0, rows, o: &mut [f32]| {
            let image = &quantized[n * image_len..(n + 1) * image_len];
            with_buffer(&ACC, rows * cout, |acc| {
                if self.per_row {
                    // Each row has its own zero point (the GEMM takes one per row) and scale.
                    let first = n * g.oh * g.ow + p0;
                    let rows_params = &params[first..first + rows];
                    let zeros: Vec<u8> = rows_params.iter().map(|p| p.1).collect();
                    w.groups[0].gemm(acc, &image[p0 * g.cin..], rows, g.cin, &zeros)?;
                    super::simd::vectorized(
                        #[inline(always)]
                        || {
                            for ((a, o), (scale, _)) in acc
                                .chunks_exact(cout)
                                .zip(o.chunks_exact_mut(cout))
                                .zip(rows_params)
                            {
                                for c in 0..cout {
                                    o[c] = a[c] as f32 * (scale * w.scales[c]) + w.bias_f32[c];
                                }
                            }
                        },
                    );
                } else {
                    let (scale, zero) = params[n];
                    int8_products(g, w, image, zero, p0, rows, acc)?;
                    let z = i32::from(zero);
                    let sums = &self.col_sums;
                    super::simd::vectorized(
                        #[inline(always)]
                        || {
                            for (a, o) in acc.chunks_exact(cout).zip(o.chunks_exact_mut(cout)) {
                                for c in 0..cout {
                                    let centred = a[c].wrapping_sub(z.wrapping_mul(sums[c]));
                                    o[c] = centred as f32 * (scale * w.scales[c]) + w.bias_f32[c];
                                }
                            }
                        },
                    );
                }
                Ok::<(), String>(())
            })?;
            activate(o, self.activation);
            Ok(())
        })
    }
}

/// Transposed convolution (f32): one product gives every tap's contribution of every input
/// pixel, which is then added into the output window it lands on.
struct TransposeF32 {
    weights: Arc<Prepared>,
    batch: usize,
    ih: usize,
    iw: usize,
    cin: usize,
    oh: usize,
    ow: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: (usize, usize),
    pad: (usize, usize),
    activation: Activation,
}

fn build_transpose(
    ctx: &BuildCtx<'_>,
    prepared: &Arc<Prepared>,
    stride: (usize, usize),
    padding: Padding,
    activation: Activation,
) -> Result<Box<dyn Kernel>, String> {
    let Prepared::ConvF32(w) = &**prepared else {
        return Err("quantized transposed convolutions".into());
    };
    let x = ctx.in_shape(0)?;
    let out = ctx.out_shape(0)?;
    let (&[batch, ih, iw, cin], &[_, oh, ow, cout]) = (x, out) else {
        return Err("transposed convolution needs NHWC values".into());
    };
    let (kh, kw, _) = w.kernel;
    // The forward convolution from this op's output back to its input fixes the padding.
    let pad_of = |out: usize, k: usize, s: usize, axis: usize| -> Result<usize, String> {
        match padding {
            Padding::Valid => Ok(0),
            Padding::Same => Ok(conv_axis(out, k, s, 1, Padding::Same, axis)?.1),
            Padding::Explicit(p) => Ok(if axis == 0 { p[0] } else { p[2] }),
        }
    };
    Ok(Box::new(TransposeF32 {
        weights: prepared.clone(),
        batch,
        ih,
        iw,
        cin,
        oh,
        ow,
        cout,
        kh,
        kw,
        stride,
        pad: (pad_of(oh, kh, stride.0, 0)?, pad_of(ow, kw, stride.1, 1)?),
        activation,
    }))
}

impl Kernel for TransposeF32 {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let Prepared::ConvF32(w) = &*self.weights else {
            return Err("weights of the wrong kind".into());
        };
        let x = inputs[0].f32s()?;
        let out = outputs[0].f32s_mut()?;
        let taps = self.kh * self.kw;
        let pixels = self.ih * self.iw;
        let mut cols = vec![0.0f32; pixels * taps * self.cout];
        for n in 0..self.batch {
            let image = &x[n * pixels * self.cin..(n + 1) * pixels * self.cin];
            w.groups[0].gemm(&mut cols, image, pixels, self.cin, None)?;
            let o = &mut out
                [n * self.oh * self.ow * self.cout..(n + 1) * self.oh * self.ow * self.cout];
            for px in o.chunks_exact_mut(self.cout) {
                px.copy_from_slice(&w.bias);
            }
            for iy in 0..self.ih {
                for ix in 0..self.iw {
                    let col = &cols[(iy * self.iw + ix) * taps * self.cout..][..taps * self.cout];
                    for ky in 0..self.kh {
                        let oy = (iy * self.stride.0 + ky) as isize - self.pad.0 as isize;
                        if oy < 0 || oy as usize >= self.oh {
                            continue;
                        }
                        for kx in 0..self.kw {
                            let ox = (ix * self.stride.1 + kx) as isize - self.pad.1 as isize;
                            if ox < 0 || ox as usize >= self.ow {
                                continue;
                            }
                            let dst = &mut o[(oy as usize * self.ow + ox as usize) * self.cout..]
                                [..self.cout];
                            let src = &col[(ky * self.kw + kx) * self.cout..][..self.cout];
                            for (d, s) in dst.iter_mut().zip(src) {
                                *d += s;
                            }
                        }
                    }
                }
            }
        }
        activate(out, self.activation);
        Ok(())
    }
}
