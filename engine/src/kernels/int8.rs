//! Integer kernels that reproduce LiteRT's own arithmetic bit for bit, where the generic
//! dequantize-compute-quantize path would round differently: quantized additions and
//! multiplications as XNNPACK (LiteRT's default delegate) does them, and hard-swish as
//! TFLite's fixed-point kernel does it (as a 256-entry table). Integer results feed later
//! layers, so a difference of one step here can grow to several at the model's output.

use super::binary::broadcast;
use super::quantized::Affine;
use super::simd::Broadcast;
use super::{BuildCtx, Kernel};
use crate::graph::{Activation, BinaryOp, Op, UnaryOp};
use crate::quant::range_of;
use crate::tensor::{DType, View, ViewMut};

/// Widens either 8-bit element type to i32.
fn widen(v: View<'_>) -> Result<Vec<i32>, String> {
    Ok(match v {
        View::I8(x) => x.iter().map(|q| i32::from(*q)).collect(),
        View::U8(x) => x.iter().map(|q| i32::from(*q)).collect(),
        other => return Err(format!("an 8-bit kernel given {}", other.dtype())),
    })
}

fn store(out: &mut ViewMut<'_>, values: impl Iterator<Item = i32>) -> Result<(), String> {
    match out {
        ViewMut::I8(o) => o.iter_mut().zip(values).for_each(|(o, v)| *o = v as i8),
        ViewMut::U8(o) => o.iter_mut().zip(values).for_each(|(o, v)| *o = v as u8),
        other => return Err(format!("an 8-bit kernel writing {}", other.dtype())),
    }
    Ok(())
}

/// The output's integer bounds after a fused activation.
fn bounds(activation: Activation, out: Affine) -> Result<(i32, i32), String> {
    let (qmin, qmax) = range_of(out.dtype);
    super::conv::quantized_bounds(activation, out.scale, out.zero, qmin, qmax)
}

/// XNNPACK's quantized addition: both inputs scaled to the output by 21-bit fixed-point
/// multipliers sharing one shift, summed with a rounding bias, shifted back.
struct Add {
    shape: Broadcast,
    a_mul: i32,
    b_mul: i32,
    bias: i32,
    shift: u32,
    out_zero: i32,
    lo: i32,
    hi: i32,
}

impl Add {
    fn new(
        a: Affine,
        b: Affine,
        out: Affine,
        negate_b: bool,
        shape: Broadcast,
        lo: i32,
        hi: i32,
    ) -> Result<Add, String> {
        let a_scale = a.scale / out.scale;
        let b_scale = if negate_b { -b.scale } else { b.scale } / out.scale;
        let max = a_scale.abs().max(b_scale.abs());
        if !(2f32.powi(-10)..2f32.powi(8)).contains(&max) {
            return Err("input and output scales too far apart for integer addition".into());
        }
        let exponent = ((max.to_bits() >> 23) as i32) - 127;
        let shift = (20 - exponent) as u32;
        let multiplier = |s: f32| -> i32 {
            // s * 2^shift, exactly (the exponent moves), rounded half to even.
            let scaled = f32::from_bits(s.abs().to_bits() + (shift << 23));
            let m = scaled.round_ties_even() as i32;
            if s.is_sign_negative() { -m } else { m }
        };
        let (a_mul, b_mul) = (multiplier(a_scale), multiplier(b_scale));
        let rounding = 1i32 << (shift - 1);
        Ok(Add {
            shape,
            a_mul,
            b_mul,
            bias: rounding - a_mul * a.zero - b_mul * b.zero,
            shift,
            out_zero: out.zero,
            lo,
            hi,
        })
    }
}

impl Add {
    #[inline(always)]
    fn one(&self, a: i32, b: i32) -> i32 {
        let acc = self
            .bias
            .wrapping_add(a.wrapping_mul(self.a_mul))
            .wrapping_add(b.wrapping_mul(self.b_mul));
        ((acc >> self.shift) + self.out_zero).clamp(self.lo, self.hi)
    }
}

impl Kernel for Add {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        binary_runs(&self.shape, inputs, outputs, |a, b| self.one(a, b))
    }
}

/// Applies `f` over every run of a broadcast of two 8-bit inputs (of one type) into an
/// 8-bit output, compiled for the widest SIMD so the loops vectorize.
fn binary_runs(
    shape: &Broadcast,
    inputs: &[View<'_>],
    outputs: &mut [ViewMut<'_>],
    f: impl Fn(i32, i32) -> i32 + Copy,
) -> Result<(), String> {
    fn go<A: Copy + Into<i32>, O: QStore>(
        s: &Broadcast,
        a: &[A],
        b: &[A],
        out: &mut [O],
        f: impl Fn(i32, i32) -> i32 + Copy,
    ) {
        super::simd::vectorized(
            #[inline(always)]
            || {
                for (&(ra, rb), o) in s.runs.iter().zip(out.chunks_exact_mut(s.len.max(1))) {
                    match (s.a_step, s.b_step) {
                        (1, 1) => {
                            for ((o, x), y) in
                                o.iter_mut().zip(&a[ra..ra + s.len]).zip(&b[rb..rb + s.len])
                            {
                                *o = O::store(f((*x).into(), (*y).into()));
                            }
                        }
                        (1, _) => {
                            let y = b[rb].into();
                            for (o, x) in o.iter_mut().zip(&a[ra..ra + s.len]) {
                                *o = O::store(f((*x).into(), y));
                            }
                        }
                        (_, 1) => {
                            let x = a[ra].into();
                            for (o, y) in o.iter_mut().zip(&b[rb..rb + s.len]) {
                                *o = O::store(f(x, (*y).into()));
                            }
                        }
                        _ => {
                            let v = O::store(f(a[ra].into(), b[rb].into()));
                            o.iter_mut().for_each(|o| *o = v);
                        }
                    }
                }
            },
        )
    }
    match (inputs[0], inputs[1], &mut outputs[0]) {
        (View::I8(a), View::I8(b), ViewMut::I8(o)) => go(shape, a, b, o, f),
        (View::U8(a), View::U8(b), ViewMut::U8(o)) => go(shape, a, b, o, f),
        _ => return Err("an 8-bit kernel given mixed element types".into()),
    }
    Ok(())
}

/// An 8-bit element type kernels write from an in-range i32.
trait QStore: Copy {
    fn store(v: i32) -> Self;
}

impl QStore for i8 {
    #[inline(always)]
    fn store(v: i32) -> Self {
        v as i8
    }
}

impl QStore for u8 {
    #[inline(always)]
    fn store(v: i32) -> Self {
        v as u8
    }
}

/// XNNPACK's quantized multiplication: the integer product of the centred inputs, scaled
/// in f32 and rounded half to even.
struct Mul {
    shape: Broadcast,
    a_zero: i32,
    b_zero: i32,
    scale: f32,
    out_zero: i32,
    lo: i32,
    hi: i32,
}

impl Kernel for Mul {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let (lo, hi) = (
            (self.lo - self.out_zero) as f32,
            (self.hi - self.out_zero) as f32,
        );
        let (za, zb, scale, zero) = (self.a_zero, self.b_zero, self.scale, self.out_zero);
        binary_runs(&self.shape, inputs, outputs, move |a, b| {
            let product = (a - za) * (b - zb);
            let scaled = (product as f32 * scale).max(lo).min(hi);
            crate::quant::round_clamped(scaled) + zero
        })
    }
}

/// TFLite's int8 average pool (input and output share their quantization): the raw sum of
/// the window divided by its element count, rounded half away from zero.
struct AveragePool {
    batch: usize,
    ih: usize,
    iw: usize,
    c: usize,
    oh: usize,
    ow: usize,
    filter: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    lo: i32,
    hi: i32,
}

impl Kernel for AveragePool {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let x = widen(inputs[0])?;
        let c = self.c;
        let mut out = Vec::with_capacity(self.batch * self.oh * self.ow * c);
        let mut acc = vec![0i32; c];
        for n in 0..self.batch {
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    let y0 = (oy * self.stride.0) as isize - self.pad.0 as isize;
                    let x0 = (ox * self.stride.1) as isize - self.pad.1 as isize;
                    let ys = y0.max(0) as usize
                        ..((y0 + self.filter.0 as isize).max(0) as usize).min(self.ih);
                    let xs = x0.max(0) as usize
                        ..((x0 + self.filter.1 as isize).max(0) as usize).min(self.iw);
                    let count = (ys.len() * xs.len()) as i32;
                    acc.fill(0);
                    for iy in ys {
                        for ix in xs.clone() {
                            let px = &x[((n * self.ih + iy) * self.iw + ix) * c..][..c];
                            acc.iter_mut().zip(px).for_each(|(a, v)| *a += v);
                        }
                    }
                    for a in &acc {
                        let avg = match count {
                            0 => 0,
                            _ if *a > 0 => (a + count / 2) / count,
                            _ => (a - count / 2) / count,
                        };
                        out.push(avg.clamp(self.lo, self.hi));
                    }
                }
            }
        }
        store(&mut outputs[0], out.into_iter())
    }
}

/// A 256-entry table from input code to output code (the output's bits, indexed by the
/// input's bits).
struct Table {
    table: [u8; 256],
}

impl Table {
    /// From a table indexed by input code (-128.. for int8, 0.. for uint8) holding output codes.
    fn new(codes: &[i32; 256]) -> Table {
        let mut table = [0u8; 256];
        for (t, c) in table.iter_mut().zip(codes) {
            *t = *c as u8;
        }
        Table { table }
    }
}

impl Kernel for Table {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        match (inputs[0], &mut outputs[0]) {
            (View::I8(x), ViewMut::I8(o)) => {
                // Signed codes index from -128: flip the sign bit.
                for (o, q) in o.iter_mut().zip(x) {
                    *o = self.table[(*q as u8 ^ 0x80) as usize] as i8;
                }
            }
            (View::U8(x), ViewMut::U8(o)) => {
                for (o, q) in o.iter_mut().zip(x) {
                    *o = self.table[*q as usize];
                }
            }
            _ => return Err("a table op between different 8-bit types".into()),
        }
        Ok(())
    }
}

/// Every input code through `f` (TFLite's lookup tables for int8 activations: dequantize,
/// the float function, round half away from zero, clamp).
fn float_table(input: Affine, output: Affine, f: impl Fn(f32) -> f32) -> [i32; 256] {
    let (lo, hi) = crate::quant::range_of(output.dtype);
    let base = if input.dtype == DType::I8 { -128 } else { 0 };
    let mut table = [0i32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let q = base + i as i32;
        let x = input.scale * (q - input.zero) as f32;
        let y = (f(x) / output.scale).round() as i32 + output.zero;
        *t = y.clamp(lo, hi);
    }
    table
}

/// gemmlowp's saturating rounding doubling high multiply, on 16 bits.
fn srdhm16(a: i16, b: i16) -> i16 {
    if a == b && a == i16::MIN {
        return i16::MAX;
    }
    let ab = i32::from(a) * i32::from(b);
    let nudge = if ab >= 0 { 1 << 14 } else { 1 - (1 << 14) };
    ((ab + nudge) / (1 << 15)) as i16
}

/// TFLite's saturating doubling high multiply (no rounding), on 16 bits.
fn sdhm16(a: i16, b: i16) -> i16 {
    if a == b && a == i16::MIN {
        return i16::MAX;
    }
    ((i32::from(a) * i32::from(b)) / (1 << 15)) as i16
}

/// gemmlowp's rounding divide by a power of two (round half away from zero).
fn rdpot16(x: i16, exponent: i32) -> i16 {
    let x = i32::from(x);
    let mask = (1i32 << exponent) - 1;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    ((x >> exponent) + i32::from(remainder > threshold)) as i16
}

fn saturating_shl16(x: i16, shift: i32) -> i16 {
    (i32::from(x) << shift).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// TFLite's QuantizeMultiplier: `m = q * 2^shift` with q a Q31 fixed-point value in [0.5, 1).
fn quantize_multiplier(m: f64) -> (i32, i32) {
    if m == 0.0 {
        return (0, 0);
    }
    let (mut q, mut shift) = frexp(m);
    let mut fixed = (q * (1i64 << 31) as f64).round() as i64;
    if fixed == 1i64 << 31 {
        fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        shift = 0;
        fixed = 0;
        q = 0.0;
    }
    let _ = q;
    (fixed as i32, shift)
}

/// `x = m * 2^e` with `m` in [0.5, 1).
fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    if exponent == 0 {
        // Subnormal: scale up first.
        let (m, e) = frexp(x * 2f64.powi(64));
        return (m, e - 64);
    }
    let e = exponent - 1022;
    let m = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (m, e)
}

fn downscale_to_int16(m: i32) -> i16 {
    const ROUNDING: i32 = 1 << 15;
    if m >= i32::MAX - ROUNDING {
        return i16::MAX;
    }
    ((m + ROUNDING) >> 16) as i16
}

/// TFLite's int8 hard-swish, entry by entry.
fn hard_swish_table(input: Affine, output: Affine) -> Result<[i32; 256], String> {
    let hires_input_scale = (1.0f32 / 128.0) * input.scale;
    let reluish_scale = 3.0f32 / 32768.0;
    let (out_fixed, out_exponent) =
        quantize_multiplier(f64::from(hires_input_scale / output.scale));
    if out_exponent > 0 {
        return Err("hard-swish output scale below the input's / 128".into());
    }
    let out_mul = downscale_to_int16(out_fixed);
    let (relu_fixed, relu_exponent) =
        quantize_multiplier(f64::from(hires_input_scale / reluish_scale));
    let relu_mul = downscale_to_int16(relu_fixed);
    let (qmin, qmax) = range_of(output.dtype);
    let first = if input.dtype == DType::I8 { -128 } else { 0 };
    let mut table = [0i32; 256];
    for (i, entry) in table.iter_mut().enumerate() {
        let code = first + i as i32;
        let value = (code - input.zero) as i16;
        let hires = value.wrapping_mul(1 << 7);
        let preshift = srdhm16(hires, out_mul);
        let mut reluish = hires;
        if relu_exponent > 0 {
            reluish = saturating_shl16(reluish, relu_exponent - 1);
        }
        reluish = srdhm16(reluish, relu_mul);
        if relu_exponent > 0 {
            reluish = saturating_shl16(reluish, 1);
        }
        if relu_exponent < 0 {
            reluish = rdpot16(reluish, -relu_exponent);
        }
        let reluish = ((i32::from(reluish) + (1 << 15)) >> 1) as i16;
        let out = rdpot16(sdhm16(reluish, preshift), -out_exponent);
        *entry = (i32::from(out) + output.zero).clamp(qmin, qmax);
    }
    Ok(table)
}

/// The exact integer kernel for a quantized node, when there is one.
pub fn build(ctx: &BuildCtx<'_>) -> Result<Option<Box<dyn Kernel>>, String> {
    let affine = |dtype: DType, q: Option<&crate::graph::Quant>| -> Option<Affine> {
        let (scale, zero) = q?.single()?;
        matches!(dtype, DType::I8 | DType::U8).then_some(Affine { scale, zero, dtype })
    };
    let Some(out) = affine(ctx.out_dtype(0)?, ctx.out_quant(0)) else {
        return Ok(None);
    };
    let Some(a) = affine(ctx.in_dtype(0)?, ctx.in_quant(0)) else {
        return Ok(None);
    };
    match &ctx.node.op {
        Op::Binary { op, activation }
            if matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul) =>
        {
            let Some(b) = affine(ctx.in_dtype(1)?, ctx.in_quant(1)) else {
                return Ok(None);
            };
            if a.dtype != b.dtype || a.dtype != out.dtype {
                return Ok(None);
            }
            let shape = broadcast(ctx.in_shape(0)?, ctx.in_shape(1)?, ctx.out_shape(0)?);
            let (lo, hi) = bounds(*activation, out)?;
            Ok(Some(match op {
                BinaryOp::Mul => Box::new(Mul {
                    shape,
                    a_zero: a.zero,
                    b_zero: b.zero,
                    scale: (a.scale * b.scale) / out.scale,
                    out_zero: out.zero,
                    lo,
                    hi,
                }),
                _ => Box::new(Add::new(a, b, out, *op == BinaryOp::Sub, shape, lo, hi)?),
            }))
        }
        Op::Pool2d(p)
            if p.kind == crate::graph::PoolKind::Average
                && !p.count_include_pad
                && a.dtype == out.dtype
                && (a.scale, a.zero) == (out.scale, out.zero) =>
        {
            let [batch, ih, iw, c] = ctx.in_shape(0)?[..] else {
                return Ok(None);
            };
            let (oh, pad_t) =
                crate::plan::shapes::conv_axis(ih, p.filter.0, p.stride.0, 1, p.padding, 0)?;
            let (ow, pad_l) =
                crate::plan::shapes::conv_axis(iw, p.filter.1, p.stride.1, 1, p.padding, 1)?;
            let (lo, hi) = bounds(p.activation, out)?;
            Ok(Some(Box::new(AveragePool {
                batch,
                ih,
                iw,
                c,
                oh,
                ow,
                filter: p.filter,
                stride: p.stride,
                pad: (pad_t, pad_l),
                lo,
                hi,
            })))
        }
        Op::Unary(UnaryOp::HardSwish) if a.dtype == out.dtype => {
            Ok(Some(Box::new(Table::new(&hard_swish_table(a, out)?))))
        }
        Op::Unary(u) if a.dtype == out.dtype && *u != UnaryOp::Identity => {
            let f = super::unary::scalar(*u);
            Ok(Some(Box::new(Table::new(&float_table(a, out, f)))))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frexp_splits_like_c() {
        assert_eq!(frexp(1.0), (0.5, 1));
        assert_eq!(frexp(0.75), (0.75, 0));
        assert_eq!(frexp(3.0), (0.75, 2));
        assert_eq!(frexp(0.1).1, -3);
    }

    #[test]
    fn quantized_multipliers_reconstruct_the_real_one() {
        for m in [0.001, 0.37, 0.5, 0.9999, 1.0, 3.5, 1234.0] {
            let (fixed, shift) = quantize_multiplier(m);
            let back = f64::from(fixed) / (1u64 << 31) as f64 * 2f64.powi(shift);
            assert!((back - m).abs() <= m * 1e-9, "{m}: {back}");
        }
    }

    #[test]
    fn rounding_divide_rounds_half_away_from_zero() {
        assert_eq!(rdpot16(5, 1), 3);
        assert_eq!(rdpot16(-5, 1), -3);
        assert_eq!(rdpot16(4, 2), 1);
        assert_eq!(rdpot16(-6, 2), -2);
    }

    #[test]
    fn hard_swish_table_follows_the_real_function_within_a_step() {
        let input = Affine {
            scale: 0.0164,
            zero: 3,
            dtype: DType::I8,
        };
        let output = Affine {
            scale: 0.0081,
            zero: -82,
            dtype: DType::I8,
        };
        let table = hard_swish_table(input, output).unwrap();
        for (i, q) in table.iter().enumerate() {
            let x = input.scale * ((i as i32 - 128) - input.zero) as f32;
            let y = x * (x + 3.0).clamp(0.0, 6.0) / 6.0;
            let want = ((y / output.scale).round() as i32 + output.zero).clamp(-128, 127);
            assert!(
                (q - want).abs() <= 1,
                "input {}: {q} vs {want}",
                i as i32 - 128
            );
        }
    }
}
