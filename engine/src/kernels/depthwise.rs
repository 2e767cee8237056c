//! Depthwise convolutions over NHWC: each output pixel is a sum over the window's taps of
//! input pixel times tap weights, vectorized across channels. Quantized and hybrid
//! depthwise convolutions run the same f32 kernel on integer-valued inputs (exact: a sum of
//! int8 products stays far below 2^24) and requantize or rescale after.

use std::cell::RefCell;
use std::sync::Arc;

use rayon::prelude::*;
use rten_simd::ops::{BitOps, NumOps};
use rten_simd::{Isa, Simd, SimdOp};

use super::conv::{QOut, quantized_bounds};
use super::simd::activate;
use super::{BuildCtx, Kernel, parallel_worth};
use crate::graph::{Activation, Op};
use crate::plan::shapes::conv_axis;
use crate::prepare::{DepthwiseWeights, Prepared};
use crate::quant::asymmetric_quantize_row;
use crate::tensor::{DType, View, ViewMut};

thread_local! {
    static WIDE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static ACC: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Frees this thread's scratch buffers of this module (an idle model gives them back).
pub(crate) fn release_scratch() {
    WIDE.with(|c| c.take());
    ACC.with(|c| c.take());
}

#[derive(Debug, Clone)]
struct Geometry {
    batch: usize,
    ih: usize,
    iw: usize,
    cin: usize,
    oh: usize,
    ow: usize,
    cout: usize,
    multiplier: usize,
    kh: usize,
    kw: usize,
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: (usize, usize),
}

/// Output rows `rows` of one image, multiplier 1: `out = clamp(bias + Σ x * w, lo, hi)`.
struct Rows<'a, S: Sink> {
    g: &'a Geometry,
    x: &'a [f32],
    w: &'a [f32],
    bias: &'a [f32],
    rows: std::ops::Range<usize>,
    out: &'a mut [S::Out],
    sink: S,
    /// The sink for the flat row path (vectors holding several pixels' channels): its
    /// per-channel values cycled, indexed by the vector's offset in the period.
    packed_sink: S,
}

/// How a row kernel writes one vector of sums: f32 (clamped to a fused activation), or
/// requantized to 8-bit integers in registers.
trait Sink: Copy {
    type Out: Copy;
    /// Writes the first `n` lanes of `sums` (output channels `ch..ch + n`) into `out[..n]`.
    fn put<I: Isa>(&self, isa: I, sums: I::F32, ch: usize, n: usize, out: &mut [Self::Out]);
}

#[derive(Clone, Copy)]
struct F32Sink {
    lo: f32,
    hi: f32,
}

impl Sink for F32Sink {
    type Out = f32;

    #[inline(always)]
    fn put<I: Isa>(&self, isa: I, sums: I::F32, _ch: usize, n: usize, out: &mut [f32]) {
        let ops = isa.f32();
        let v = ops.min(ops.max(sums, ops.splat(self.lo)), ops.splat(self.hi));
        if n == ops.len() {
            ops.store(v, out);
        } else {
            out[..n].copy_from_slice(&v.to_array().as_ref()[..n]);
        }
    }
}

/// `clamp(round(sum * multiplier[c]) + zero)` into 8-bit integers.
#[derive(Clone, Copy)]
struct Q8Sink<'a, T> {
    multipliers: &'a [f32],
    zero: i32,
    /// Bounds less the zero point.
    lo: f32,
    hi: f32,
    _t: std::marker::PhantomData<T>,
}

impl<T: QOut> Sink for Q8Sink<'_, T> {
    type Out = T;

    #[inline(always)]
    fn put<I: Isa>(&self, isa: I, sums: I::F32, ch: usize, n: usize, out: &mut [T]) {
        let ops = isa.f32();
        let m = if n == ops.len() {
            ops.load(&self.multipliers[ch..])
        } else {
            ops.load_pad(&self.multipliers[ch..ch + n]).0
        };
        let v = ops.min(
            ops.max(ops.mul(sums, m), ops.splat(self.lo)),
            ops.splat(self.hi),
        );
        let arr = ops.add(v, ops.splat(crate::quant::MAGIC)).to_array();
        for (o, v) in out[..n].iter_mut().zip(arr.as_ref()) {
            *o = T::from_i32(crate::quant::round_clamped(*v - crate::quant::MAGIC) + self.zero);
        }
    }
}

/// The longest repeat of per-channel values the flat row path uses (floats).
const PERIOD_MAX: usize = 1024;

fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    if a == 0 || b == 0 {
        0
    } else {
        a / gcd(a, b) * b
    }
}

/// The valid kernel taps `k0..k1` of one output position along an axis, and the input
/// index of tap 0 (which may lie in the padding, so it is signed).
#[inline(always)]
fn taps(
    out: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    kernel: usize,
    input: usize,
) -> (usize, usize, isize) {
    let start = (out * stride) as isize - pad as isize;
    let d = dilation as isize;
    let first = if start >= 0 {
        0
    } else {
        ((-start) + d - 1) / d
    };
    let last = if input as isize > start {
        (input as isize - start + d - 1) / d
    } else {
        0
    };
    (
        first.min(kernel as isize) as usize,
        last.clamp(0, kernel as isize) as usize,
        start,
    )
}

impl<S: Sink> SimdOp for Rows<'_, S> {
    type Output = ();

    #[inline(always)]
    fn eval<I: Isa>(self, isa: I) -> Self::Output {
        let ops = isa.f32();
        let lanes = ops.len();
        let g = self.g;
        let c = g.cin;
        let sink = self.sink;
        let (dy, dx) = g.dilation;
        // Input pixels between consecutive output pixels of a row.
        let step = g.stride.1 * c;
        // Channels not a multiple of the lanes, stride 1 along the row: the row's interior
        // (pixels whose taps are all inside the input along x) is one flat run of floats,
        // each vector some pixels' channels, whose inputs for a tap are a flat run too.
        // Weights and bias repeat with the period lcm(lanes, c).
        let period = lcm(lanes, c);
        let packed = g.stride.1 == 1 && dx == 1 && !c.is_multiple_of(lanes) && period <= PERIOD_MAX;
        let (mut wrep, mut brep) = (Vec::new(), Vec::new());
        let (mut inner0, mut inner1) = (g.ow, g.ow);
        if packed {
            wrep = (0..g.kh * g.kw)
                .flat_map(|t| (0..period).map(move |i| (t, i % c)))
                .map(|(t, ch)| self.w[t * c + ch])
                .collect();
            brep = (0..period).map(|i| self.bias[i % c]).collect();
            inner0 = (0..g.ow)
                .find(|&ox| taps(ox, 1, 1, g.pad.1, g.kw, g.iw).0 == 0)
                .unwrap_or(g.ow);
            inner1 = (inner0..g.ow)
                .find(|&ox| taps(ox, 1, 1, g.pad.1, g.kw, g.iw).1 != g.kw)
                .unwrap_or(g.ow);
        }
        let group_px = period / c;
        let vectors_per_group = period / lanes;
        for (r, oy) in self.rows.clone().enumerate() {
            let (ky0, ky1, iy0) = taps(oy, g.stride.0, dy, g.pad.0, g.kh, g.ih);
            let row_out = &mut self.out[r * g.ow * c..(r + 1) * g.ow * c];
            let mut ox = 0;
            while ox < g.ow {
                if packed && ox == inner0 && ox + group_px <= inner1 {
                    let groups = (inner1 - ox) / group_px;
                    let total = groups * vectors_per_group;
                    // Flat float offset of the run's first input along the row, tap kx = 0.
                    let x0 = (ox as isize - g.pad.1 as isize) as usize * c;
                    let o0 = ox * c;
                    let mut k = 0;
                    while k < total {
                        let n = (total - k).min(4);
                        // Each vector's offset in the period (no division in the tap loop).
                        let mut offs = [0usize; 4];
                        for (v, o) in offs.iter_mut().enumerate() {
                            *o = ((k + v) % vectors_per_group) * lanes;
                        }
                        let mut acc = [ops.zero(); 4];
                        for (a, o) in acc.iter_mut().zip(offs).take(n) {
                            *a = ops.load(&brep[o..]);
                        }
                        for ky in ky0..ky1 {
                            let iy = (iy0 + (ky * dy) as isize) as usize;
                            let row_in = iy * g.iw * c + x0 + k * lanes;
                            for kx in 0..g.kw {
                                let t = (ky * g.kw + kx) * period;
                                let xi = row_in + kx * c;
                                if vectors_per_group == 1 {
                                    let wv = ops.load(&wrep[t..]);
                                    for (v, a) in acc.iter_mut().enumerate().take(n) {
                                        *a = ops.mul_add(
                                            ops.load(&self.x[xi + v * lanes..]),
                                            wv,
                                            *a,
                                        );
                                    }
                                } else {
                                    for (v, a) in acc.iter_mut().enumerate().take(n) {
                                        let wv = ops.load(&wrep[t + offs[v]..]);
                                        *a = ops.mul_add(
                                            ops.load(&self.x[xi + v * lanes..]),
                                            wv,
                                            *a,
                                        );
                                    }
                                }
                            }
                        }
                        for (v, a) in acc.into_iter().enumerate().take(n) {
                            let at = o0 + (k + v) * lanes;
                            self.packed_sink.put(
                                isa,
                                a,
                                offs[v],
                                lanes,
                                &mut row_out[at..at + lanes],
                            );
                        }
                        k += n;
                    }
                    ox += groups * group_px;
                    continue;
                }
                let (kx0, kx1, ix0) = taps(ox, g.stride.1, dx, g.pad.1, g.kw, g.iw);
                // Input offset of tap (ky, kx) for this pixel, channel 0.
                let at = |ky: usize, kx: usize| -> usize {
                    let iy = (iy0 + (ky * dy) as isize) as usize;
                    let ix = (ix0 + (kx * dx) as isize) as usize;
                    (iy * g.iw + ix) * c
                };
                // Four pixels with the same valid taps run together: four independent sums
                // hide the multiply-add latency, and each weight is loaded once for all four.
                let group = ox + 4 <= g.ow && {
                    let (a, b, _) = taps(ox + 3, g.stride.1, dx, g.pad.1, g.kw, g.iw);
                    (a, b) == (kx0, kx1)
                };
                if group {
                    let mut ch = 0;
                    while ch + lanes <= c {
                        let b = ops.load(&self.bias[ch..]);
                        let mut acc = [b; 4];
                        for ky in ky0..ky1 {
                            for kx in kx0..kx1 {
                                let wv = ops.load(&self.w[(ky * g.kw + kx) * c + ch..]);
                                let xi = at(ky, kx) + ch;
                                let xs = &self.x[xi..xi + 3 * step + lanes];
                                for (p, a) in acc.iter_mut().enumerate() {
                                    *a = ops.mul_add(ops.load(&xs[p * step..]), wv, *a);
                                }
                            }
                        }
                        for (p, a) in acc.into_iter().enumerate() {
                            sink.put(isa, a, ch, lanes, &mut row_out[(ox + p) * c + ch..]);
                        }
                        ch += lanes;
                    }
                    if ch < c {
                        for p in 0..4 {
                            let out = &mut row_out[(ox + p) * c..(ox + p + 1) * c];
                            let mut a = ops.load_pad(&self.bias[ch..]).0;
                            for ky in ky0..ky1 {
                                for kx in kx0..kx1 {
                                    let xi = at(ky, kx) + p * step;
                                    let wi = (ky * g.kw + kx) * c;
                                    let xv = ops.load_pad(&self.x[xi + ch..xi + c]).0;
                                    let wv = ops.load_pad(&self.w[wi + ch..wi + c]).0;
                                    a = ops.mul_add(xv, wv, a);
                                }
                            }
                            sink.put(isa, a, ch, c - ch, &mut out[ch..]);
                        }
                    }
                    ox += 4;
                    continue;
                }
                let out = &mut row_out[ox * c..(ox + 1) * c];
                let mut ch = 0;
                while ch + lanes <= c {
                    let mut a = ops.load(&self.bias[ch..]);
                    for ky in ky0..ky1 {
                        for kx in kx0..kx1 {
                            let (xi, wi) = (at(ky, kx), (ky * g.kw + kx) * c);
                            a = ops.mul_add(
                                ops.load(&self.x[xi + ch..]),
                                ops.load(&self.w[wi + ch..]),
                                a,
                            );
                        }
                    }
                    sink.put(isa, a, ch, lanes, &mut out[ch..]);
                    ch += lanes;
                }
                if ch < c {
                    let mut a = ops.load_pad(&self.bias[ch..]).0;
                    for ky in ky0..ky1 {
                        for kx in kx0..kx1 {
                            let (xi, wi) = (at(ky, kx), (ky * g.kw + kx) * c);
                            let xv = ops.load_pad(&self.x[xi + ch..xi + c]).0;
                            let wv = ops.load_pad(&self.w[wi + ch..wi + c]).0;
                            a = ops.mul_add(xv, wv, a);
                        }
                    }
                    sink.put(isa, a, ch, c - ch, &mut out[ch..]);
                }
                ox += 1;
            }
        }
    }
}

impl Geometry {
    /// The f32 kernel over every image, in parallel row blocks when worth it.
    fn run_f32(&self, x: &[f32], w: &[f32], bias: &[f32], out: &mut [f32], lo: f32, hi: f32) {
        if self.multiplier != 1 {
            return self.run_multiplier(x, w, bias, out, lo, hi);
        }
        let sink = F32Sink { lo, hi };
        self.run_rows(x, w, bias, out, sink, sink);
    }

    /// Multiplier-1 rows into any sink, every image, in parallel row blocks when worth it.
    fn run_rows<S: Sink + Sync>(
        &self,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        out: &mut [S::Out],
        sink: S,
        packed_sink: S,
    ) where
        S::Out: Send,
    {
        let image_in = self.ih * self.iw * self.cin;
        let image_out = self.oh * self.ow * self.cout;
        let row_len = self.ow * self.cout;
        let work = self.batch * image_out * self.kh * self.kw;
        let parallel = parallel_worth(work);
        let rows_per_task = if parallel { 4 } else { self.oh };
        let task = |n: usize, r0: usize, o: &mut [S::Out]| {
            let rows = o.len() / row_len.max(1);
            Rows {
                g: self,
                x: &x[n * image_in..(n + 1) * image_in],
                w,
                bias,
                rows: r0..r0 + rows,
                out: o,
                sink,
                packed_sink,
            }
            .dispatch();
        };
        if parallel {
            out.par_chunks_mut(image_out.max(1))
                .enumerate()
                .for_each(|(n, img)| {
                    img.par_chunks_mut((rows_per_task * row_len).max(1))
                        .enumerate()
                        .for_each(|(b, o)| task(n, b * rows_per_task, o));
                });
        } else {
            for (n, img) in out.chunks_mut(image_out.max(1)).enumerate() {
                task(n, 0, img);
            }
        }
    }

    /// Depth multipliers above 1 (rare): output channel `c * m + j` reads input channel `c`.
    fn run_multiplier(
        &self,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        out: &mut [f32],
        lo: f32,
        hi: f32,
    ) {
        let m = self.multiplier;
        for n in 0..self.batch {
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    let o =
                        &mut out[((n * self.oh + oy) * self.ow + ox) * self.cout..][..self.cout];
                    o.copy_from_slice(bias);
                    for ky in 0..self.kh {
                        let iy = (oy * self.stride.0 + ky * self.dilation.0) as isize
                            - self.pad.0 as isize;
                        if iy < 0 || iy as usize >= self.ih {
                            continue;
                        }
                        for kx in 0..self.kw {
                            let ix = (ox * self.stride.1 + kx * self.dilation.1) as isize
                                - self.pad.1 as isize;
                            if ix < 0 || ix as usize >= self.iw {
                                continue;
                            }
                            let px = &x[((n * self.ih + iy as usize) * self.iw + ix as usize)
                                * self.cin..][..self.cin];
                            let wt = &w[(ky * self.kw + kx) * self.cout..][..self.cout];
                            for (oc, acc) in o.iter_mut().enumerate() {
                                *acc += px[oc / m] * wt[oc];
                            }
                        }
                    }
                    for v in o.iter_mut() {
                        *v = v.clamp(lo, hi);
                    }
                }
            }
        }
    }
}

enum Numbers {
    F32(Activation),
    /// Quantized: input zero point, per-channel multipliers, output zero point and bounds.
    Int8 {
        in_zero: i32,
        multipliers: Vec<f32>,
        out_zero: i32,
        lo: i32,
        hi: i32,
    },
    /// Hybrid: f32 in and out, int8 weights.
    Hybrid(Activation),
}

struct Depthwise {
    weights: Arc<Prepared>,
    g: Geometry,
    numbers: Numbers,
    /// Integer weights and biases as f32, for the quantized and hybrid paths.
    int_w: Vec<f32>,
    int_bias: Vec<f32>,
    /// Quantized: the per-channel multipliers cycled (for the flat row path, whose vectors
    /// hold several pixels' channels).
    repeated_multipliers: Vec<f32>,
}

pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let Op::Depthwise(d) = &ctx.node.op else {
        return Err("not a depthwise convolution".into());
    };
    let prepared = ctx.prepared.ok_or("weights were not prepared")?;
    let Prepared::Depthwise(w) = &**prepared else {
        return Err("weights of the wrong kind".into());
    };
    let x = ctx.in_shape(0)?;
    let [batch, ih, iw, cin] = x[..] else {
        return Err("depthwise input must be NHWC".into());
    };
    let (kh, kw) = w.kernel;
    let (oh, pad_t) = conv_axis(ih, kh, d.stride.0, d.dilation.0, d.padding, 0)?;
    let (ow, pad_l) = conv_axis(iw, kw, d.stride.1, d.dilation.1, d.padding, 1)?;
    let g = Geometry {
        batch,
        ih,
        iw,
        cin,
        oh,
        ow,
        cout: w.channels,
        multiplier: d.multiplier.max(1),
        kh,
        kw,
        stride: d.stride,
        dilation: d.dilation,
        pad: (pad_t, pad_l),
    };
    if cin * g.multiplier != w.channels {
        return Err("depthwise channels do not match the weights".into());
    }
    let numbers = match (ctx.in_dtype(0)?, w.i8.is_empty()) {
        (DType::F32, true) => Numbers::F32(d.activation),
        (DType::F32, false) => Numbers::Hybrid(d.activation),
        (DType::I8 | DType::U8, false) => {
            let (in_scale, in_zero) = ctx
                .in_quant(0)
                .and_then(|q| q.single())
                .ok_or("input needs one scale")?;
            let (out_scale, out_zero) = ctx
                .out_quant(0)
                .and_then(|q| q.single())
                .ok_or("output needs one scale")?;
            let (qmin, qmax) = crate::quant::range_of(ctx.out_dtype(0)?);
            let (lo, hi) = quantized_bounds(d.activation, out_scale, out_zero, qmin, qmax)?;
            Numbers::Int8 {
                in_zero,
                multipliers: w.scales.iter().map(|s| in_scale * s / out_scale).collect(),
                out_zero,
                lo,
                hi,
            }
        }
        _ => return Err("depthwise weights and input types do not match".into()),
    };
    let repeated_multipliers = match &numbers {
        Numbers::Int8 { multipliers, .. } if !multipliers.is_empty() => (0..PERIOD_MAX)
            .map(|i| multipliers[i % multipliers.len()])
            .collect(),
        _ => Vec::new(),
    };
    Ok(Box::new(Depthwise {
        weights: prepared.clone(),
        g,
        numbers,
        repeated_multipliers,
        int_w: w.i8.iter().map(|v| f32::from(*v)).collect(),
        int_bias: w.bias_i32.iter().map(|b| *b as f32).collect(),
    }))
}

fn weights(p: &Prepared) -> Result<&DepthwiseWeights, String> {
    match p {
        Prepared::Depthwise(w) => Ok(w),
        _ => Err("weights of the wrong kind".into()),
    }
}

use super::scratch::with_scratch as with_buffer;

/// `to[i] = from[i] - zero` as f32, vectorized.
fn widen_centred<T: Copy + Into<i32>>(from: &[T], zero: f32, to: &mut [f32]) {
    super::simd::vectorized(
        #[inline(always)]
        || {
            for (d, q) in to.iter_mut().zip(from) {
                *d = Into::<i32>::into(*q) as f32 - zero;
            }
        },
    )
}

impl Depthwise {
    /// `out = clamp(round(acc * multiplier[c]) + zero)`, vectorized across channels.
    fn requantize<T: QOut>(
        &self,
        acc: &[f32],
        out: &mut [T],
        multipliers: &[f32],
        zero: i32,
        lo: i32,
        hi: i32,
    ) {
        let c = self.g.cout;
        let (lo_f, hi_f) = ((lo - zero) as f32, (hi - zero) as f32);
        super::simd::vectorized(
            #[inline(always)]
            || {
                for (a, o) in acc.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
                    for ((a, m), o) in a.iter().zip(multipliers).zip(o.iter_mut()) {
                        let v = (a * m).max(lo_f).min(hi_f);
                        *o = T::from_i32(crate::quant::round_clamped(v) + zero);
                    }
                }
            },
        )
    }
}

impl Kernel for Depthwise {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let w = weights(&self.weights)?;
        let g = &self.g;
        match &self.numbers {
            Numbers::F32(act) => {
                let x = inputs[0].f32s()?;
                let out = outputs[0].f32s_mut()?;
                let (lo, hi) = act.bounds().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
                g.run_f32(x, &w.f32, &w.bias_f32, out, lo, hi);
                if act.bounds().is_none() {
                    activate(out, *act);
                }
                Ok(())
            }
            Numbers::Hybrid(act) => {
                let x = inputs[0].f32s()?;
                let out = outputs[0].f32s_mut()?;
                let image_in = g.ih * g.iw * g.cin;
                let image_out = g.oh * g.ow * g.cout;
                let zeros = vec![0.0f32; g.cout];
                let mut q8 = vec![0i8; image_in];
                for n in 0..g.batch {
                    let (scale, zero) =
                        asymmetric_quantize_row(&x[n * image_in..(n + 1) * image_in], &mut q8);
                    let wide: Vec<f32> = q8.iter().map(|q| f32::from(*q) - zero as f32).collect();
                    let single = Geometry {
                        batch: 1,
                        ..g.clone()
                    };
                    let o = &mut out[n * image_out..(n + 1) * image_out];
                    single.run_f32(
                        &wide,
                        &self.int_w,
                        &zeros,
                        o,
                        f32::NEG_INFINITY,
                        f32::INFINITY,
                    );
                    for px in o.chunks_exact_mut(g.cout) {
                        for (c, v) in px.iter_mut().enumerate() {
                            *v = *v * (scale * w.scales[c]) + w.bias_f32[c];
                        }
                    }
                }
                activate(out, *act);
                Ok(())
            }
            Numbers::Int8 {
                in_zero,
                multipliers,
                out_zero,
                lo,
                hi,
            } if g.multiplier == 1 => {
                let zero = *in_zero as f32;
                let (lo_f, hi_f) = ((lo - out_zero) as f32, (hi - out_zero) as f32);
                with_buffer(&WIDE, inputs[0].len(), |wide| {
                    match (inputs[0], &mut outputs[0]) {
                        (View::I8(x), ViewMut::I8(o)) => {
                            widen_centred(x, zero, wide);
                            let sink = Q8Sink::<i8> {
                                multipliers,
                                zero: *out_zero,
                                lo: lo_f,
                                hi: hi_f,
                                _t: std::marker::PhantomData,
                            };
                            let packed = Q8Sink {
                                multipliers: &self.repeated_multipliers,
                                ..sink
                            };
                            g.run_rows(wide, &self.int_w, &self.int_bias, o, sink, packed);
                            Ok(())
                        }
                        (View::U8(x), ViewMut::U8(o)) => {
                            widen_centred(x, zero, wide);
                            let sink = Q8Sink::<u8> {
                                multipliers,
                                zero: *out_zero,
                                lo: lo_f,
                                hi: hi_f,
                                _t: std::marker::PhantomData,
                            };
                            let packed = Q8Sink {
                                multipliers: &self.repeated_multipliers,
                                ..sink
                            };
                            g.run_rows(wide, &self.int_w, &self.int_bias, o, sink, packed);
                            Ok(())
                        }
                        _ => Err(
                            "a quantized depthwise convolution's input and output types differ"
                                .to_string(),
                        ),
                    }
                })
            }
            Numbers::Int8 {
                in_zero,
                multipliers,
                out_zero,
                lo,
                hi,
            } => {
                let wide_len = inputs[0].len();
                let acc_len = g.batch * g.oh * g.ow * g.cout;
                with_buffer(&WIDE, wide_len, |wide| {
                    let zero = *in_zero as f32;
                    match inputs[0] {
                        View::I8(v) => super::simd::vectorized(
                            #[inline(always)]
                            || {
                                wide.iter_mut()
                                    .zip(v)
                                    .for_each(|(d, q)| *d = f32::from(*q) - zero)
                            },
                        ),
                        View::U8(v) => super::simd::vectorized(
                            #[inline(always)]
                            || {
                                wide.iter_mut()
                                    .zip(v)
                                    .for_each(|(d, q)| *d = f32::from(*q) - zero)
                            },
                        ),
                        _ => {
                            return Err("a quantized depthwise convolution of a non-integer input"
                                .to_string());
                        }
                    }
                    with_buffer(&ACC, acc_len, |acc| {
                        g.run_f32(
                            wide,
                            &self.int_w,
                            &self.int_bias,
                            acc,
                            f32::NEG_INFINITY,
                            f32::INFINITY,
                        );
                        match &mut outputs[0] {
                            ViewMut::I8(o) => {
                                self.requantize(acc, o, multipliers, *out_zero, *lo, *hi)
                            }
                            ViewMut::U8(o) => {
                                self.requantize(acc, o, multipliers, *out_zero, *lo, *hi)
                            }
                            _ => {
                                return Err(
                                    "a quantized depthwise output must be i8 or u8".to_string()
                                );
                            }
                        }
                        Ok(())
                    })
                })
            }
        }
    }
}
