//! Quantization arithmetic shared by readers and kernels: dequantizing constants, rounding
//! floats to int8/uint8, and the per-row dynamic quantization of hybrid (dynamic-range)
//! ops, done exactly as TFLite does it so hybrid models give LiteRT's numbers.

use crate::graph::Quant;
use crate::tensor::Data;

/// Dequantizes a constant with per-tensor or per-axis parameters.
pub fn dequantize_const(data: &Data, shape: &[usize], q: &Quant) -> Vec<f32> {
    let values = data.to_f32();
    let channels = if q.scale.len() > 1 {
        shape.get(q.axis).copied().unwrap_or(1)
    } else {
        1
    };
    let inner: usize = shape.iter().skip(q.axis + 1).product();
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = if channels > 1 {
                (i / inner.max(1)) % channels
            } else {
                0
            };
            let scale = q.scale.get(c).copied().unwrap_or(1.0);
            let zero = q.zero_point.get(c).copied().unwrap_or(0) as f32;
            scale * (v - zero)
        })
        .collect()
}

/// Rounds half away from zero, as TFLite's reference kernels do.
#[inline(always)]
pub fn round_away(x: f32) -> f32 {
    x.round()
}

/// Adding this rounds an f32 of magnitude below 2^22 to an integer (half to even) in its low
/// mantissa bits: `(v + MAGIC).to_bits() - MAGIC_BITS` is `round_ties_even(v)`. Plain float
/// arithmetic, so loops using it vectorize (XNNPACK rounds the same way).
pub const MAGIC: f32 = 12_582_912.0;
const MAGIC_BITS: i32 = 0x4B40_0000;

/// `round_ties_even(v)` for `v` already clamped to a range much smaller than 2^22.
#[inline(always)]
pub fn round_clamped(v: f32) -> i32 {
    ((v + MAGIC).to_bits() as i32).wrapping_sub(MAGIC_BITS)
}

/// `clamp(round_half_even(v) + zero, lo, hi)`, clamping before the conversion so that no
/// value (infinite, NaN, or from hostile scales) can overflow.
#[inline(always)]
pub fn requantize(v: f32, zero: i32, lo: i32, hi: i32) -> i32 {
    let (lo_f, hi_f) = (
        (i64::from(lo) - i64::from(zero)) as f32,
        (i64::from(hi) - i64::from(zero)) as f32,
    );
    let r = v.clamp(lo_f, hi_f).round_ties_even() as i64 + i64::from(zero);
    r.clamp(i64::from(lo), i64::from(hi)) as i32
}

/// The integer range of a quantized element type.
pub fn range_of(dtype: crate::tensor::DType) -> (i32, i32) {
    match dtype {
        crate::tensor::DType::U8 => (0, 255),
        crate::tensor::DType::I16 => (-32768, 32767),
        _ => (-128, 127),
    }
}

/// TFLite's asymmetric dynamic quantization of one row of a hybrid op's input: the range
/// always includes zero, the zero point is nudged onto the int8 grid from whichever end
/// loses less, and values round half away from zero. Returns (scale, zero point).
pub fn asymmetric_quantize_row(values: &[f32], out: &mut [i8]) -> (f32, i32) {
    const QMIN: f64 = -128.0;
    const QMAX: f64 = 127.0;
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let (rmin, rmax) = (f64::from(lo), f64::from(hi));
    if rmin == rmax {
        out.iter_mut().for_each(|o| *o = 0);
        return (1.0, 0);
    }
    let scale = (rmax - rmin) / (QMAX - QMIN);
    let from_min = QMIN - rmin / scale;
    let from_max = QMAX - rmax / scale;
    let from_min_error = QMIN.abs() + (rmin / scale).abs();
    let from_max_error = QMAX.abs() + (rmax / scale).abs();
    let zero = if from_min_error < from_max_error {
        from_min
    } else {
        from_max
    };
    let zero_point = if zero <= QMIN {
        QMIN as i32
    } else if zero >= QMAX {
        QMAX as i32
    } else {
        zero.round() as i32
    };
    let scale = scale as f32;
    let inv = 1.0 / scale;
    for (o, &v) in out.iter_mut().zip(values) {
        let q = round_away(zero_point as f32 + v * inv) as i32;
        *o = q.clamp(-128, 127) as i8;
    }
    (scale, zero_point)
}

/// XNNPACK's dynamic quantization of one row (its "qd8" rule, which LiteRT's default
/// delegate applies to hybrid convolutions and dense layers): single-precision arithmetic,
/// the zero point taken from whichever end has the larger error sum, values rounded half to
/// even. Returns (scale, zero point); `real = scale * (q - zero_point)`.
pub fn qd8_quantize_row(values: &[f32], out: &mut [i8]) -> (f32, i32) {
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let inv_scale = if lo == hi { 1.0 } else { 255.0 / (hi - lo) };
    let (lo_s, hi_s) = (lo * inv_scale, hi * inv_scale);
    let from_min = -128.0 + lo_s;
    let from_max = 127.0 + hi_s;
    let zero = if from_min + from_max > 0.0 {
        -128.0 - lo_s
    } else {
        127.0 - hi_s
    };
    let zero_point = zero.clamp(-128.0, 127.0).round_ties_even() as i32;
    for (o, &v) in out.iter_mut().zip(values) {
        *o = requantize(v * inv_scale, zero_point, -128, 127) as i8;
    }
    (1.0 / inv_scale, zero_point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_dequantization_uses_the_axis() {
        let data = Data::I8(vec![1, 2, 3, 4]);
        let q = Quant {
            scale: vec![0.5, 2.0],
            zero_point: vec![0, 1],
            axis: 0,
        };
        assert_eq!(
            dequantize_const(&data, &[2, 2], &q),
            vec![0.5, 1.0, 4.0, 6.0]
        );
    }

    #[test]
    fn dynamic_quantization_covers_zero_and_the_range() {
        let values = [-1.0f32, 0.0, 0.5, 3.0];
        let mut q = [0i8; 4];
        let (scale, zp) = asymmetric_quantize_row(&values, &mut q);
        for (v, q) in values.iter().zip(q) {
            let back = scale * (f32::from(q) - zp as f32);
            assert!((back - v).abs() <= scale / 2.0 + 1e-6, "{v} -> {back}");
        }
        let mut zeros = [1i8; 3];
        assert_eq!(asymmetric_quantize_row(&[0.0; 3], &mut zeros), (1.0, 0));
        assert_eq!(zeros, [0; 3]);
    }
}
