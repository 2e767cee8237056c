//! Ops that move elements without arithmetic, for every element type: reshape, transpose,
//! concatenate, split, strided slice, pad, gather, tile, depth-to-space and space-to-depth.
//! Each is planned as index arithmetic once per shape; quantized values pass through as
//! integers when their quantization does not change (a concatenation of differently
//! quantized inputs is requantized through f32).

use super::quantized::wrap_float;
use super::{BuildCtx, Kernel};
use crate::graph::{Op, PadMode};
use crate::plan::shapes::{AxisRange, slice_ranges};
use crate::tensor::{View, ViewMut, strides};

/// Applies `$f::<T>(inputs, out)` for the element type of the output.
macro_rules! typed {
    ($inputs:expr, $out:expr, |$ins:ident, $o:ident| $body:expr) => {{
        macro_rules! go {
            ($variant:ident, $getter:ident) => {{
                let $ins = $inputs
                    .iter()
                    .map(|v| v.$getter())
                    .collect::<Result<Vec<_>, String>>()?;
                let $o = match $out {
                    ViewMut::$variant(o) => o,
                    _ => return Err("output type differs from the input's".into()),
                };
                $body
            }};
        }
        match $out {
            ViewMut::F32(_) => go!(F32, f32s),
            ViewMut::I8(_) => go!(I8, i8s),
            ViewMut::U8(_) => go!(U8, u8s),
            ViewMut::I16(_) => go!(I16, i16s),
            ViewMut::I32(_) => go!(I32, i32s),
            ViewMut::I64(_) => go!(I64, i64s),
            ViewMut::Bool(_) => go!(Bool, bools),
        }
    }};
}

/// Output element `i` reads input element `map[i]`, or a fill value where `map[i]` is
/// `None`: covers transpose, slice, pad (constant and mirrored), tile, gather with constant
/// indices, depth-to-space and space-to-depth.
struct Gathered {
    map: Vec<Option<u32>>,
    fill: f32,
}

impl Kernel for Gathered {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let fill = self.fill;
        let map = &self.map;
        typed!(inputs[..1], &mut outputs[0], |ins, out| {
            let x = ins[0];
            let f = FromFill::from_fill(fill);
            for (o, m) in out.iter_mut().zip(map) {
                *o = match m {
                    Some(i) => x[*i as usize],
                    None => f,
                };
            }
            Ok(())
        })
    }
}

/// A constant pad: each innermost row of the output is the fill, or fill, the input's row
/// and fill; rows are copied whole.
struct ConstantPad {
    /// Output rows (every axis but the last), each `Some(input row)` or `None` (all fill).
    rows: Vec<Option<u32>>,
    /// Innermost axis: fill before, input length, fill after.
    before: usize,
    len: usize,
    after: usize,
    fill: f32,
}

impl Kernel for ConstantPad {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let (before, len, after) = (self.before, self.len, self.after);
        let width = before + len + after;
        let fill = self.fill;
        typed!(inputs[..1], &mut outputs[0], |ins, out| {
            let x = ins[0];
            let f = FromFill::from_fill(fill);
            for (o, r) in out.chunks_exact_mut(width.max(1)).zip(&self.rows) {
                match r {
                    Some(r) => {
                        let start = *r as usize * len;
                        o[..before].fill(f);
                        o[before..before + len].copy_from_slice(&x[start..start + len]);
                        o[before + len..].fill(f);
                    }
                    None => o.fill(f),
                }
            }
            Ok(())
        })
    }
}

trait FromFill {
    fn from_fill(v: f32) -> Self;
}

macro_rules! from_fill {
    ($($t:ty),*) => {$(impl FromFill for $t { fn from_fill(v: f32) -> Self { v as $t } })*};
}
from_fill!(f32, i8, u8, i16, i32, i64);

impl FromFill for bool {
    fn from_fill(v: f32) -> Self {
        v != 0.0
    }
}

/// Copies the whole input (reshape).
struct Copy;

impl Kernel for Copy {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        crate::plan::copy_view(inputs[0], &mut outputs[0])
    }
}

/// Concatenation: each output block of `outer` rows takes `widths[i]` elements from input
/// `i` in turn.
struct Concat {
    outer: usize,
    widths: Vec<usize>,
}

impl Kernel for Concat {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let (outer, widths) = (self.outer, &self.widths);
        typed!(inputs, &mut outputs[0], |ins, out| {
            let total: usize = widths.iter().sum();
            for o in 0..outer {
                let mut at = o * total;
                for (x, w) in ins.iter().zip(widths) {
                    out[at..at + w].copy_from_slice(&x[o * w..(o + 1) * w]);
                    at += w;
                }
            }
            Ok(())
        })
    }
}

/// Split: the inverse of a concatenation.
struct Split {
    outer: usize,
    widths: Vec<usize>,
}

impl Kernel for Split {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let total: usize = self.widths.iter().sum();
        for (k, out) in outputs.iter_mut().enumerate() {
            let w = self.widths[k];
            let start: usize = self.widths[..k].iter().sum();
            let outer = self.outer;
            typed!(inputs[..1], out, |ins, o| {
                for r in 0..outer {
                    o[r * w..(r + 1) * w]
                        .copy_from_slice(&ins[0][r * total + start..r * total + start + w]);
                }
                Ok::<(), String>(())
            })?;
        }
        Ok(())
    }
}

/// Index of every output element in a row-major walk, given per output axis how the input
/// offset moves: `offset(coords) = base + Σ coords[d] * step[d]`.
fn affine_map(
    out_shape: &[usize],
    base: isize,
    steps: &[isize],
) -> Result<Vec<Option<u32>>, String> {
    let total: usize = out_shape.iter().product();
    if total > u32::MAX as usize {
        return Err("too many elements to index".into());
    }
    let mut map = Vec::with_capacity(total);
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..total {
        let off: isize = base
            + idx
                .iter()
                .zip(steps)
                .map(|(i, s)| *i as isize * s)
                .sum::<isize>();
        map.push(u32::try_from(off).ok());
        for d in (0..out_shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(map)
}

/// A map computed per output coordinate.
fn coord_map(
    out_shape: &[usize],
    mut f: impl FnMut(&[usize]) -> Option<usize>,
) -> Result<Vec<Option<u32>>, String> {
    let total: usize = out_shape.iter().product();
    if total > u32::MAX as usize {
        return Err("too many elements to index".into());
    }
    let mut map = Vec::with_capacity(total);
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..total {
        map.push(f(&idx).and_then(|i| u32::try_from(i).ok()));
        for d in (0..out_shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(map)
}

fn mirror(i: isize, len: usize, mode: PadMode) -> usize {
    let n = len as isize;
    match mode {
        PadMode::Edge | PadMode::Constant => i.clamp(0, n - 1) as usize,
        PadMode::Reflect => {
            if n == 1 {
                return 0;
            }
            let period = 2 * (n - 1);
            let m = i.rem_euclid(period);
            (if m < n { m } else { period - m }) as usize
        }
        PadMode::Symmetric => {
            let period = 2 * n;
            let m = i.rem_euclid(period);
            (if m < n { m } else { period - 1 - m }) as usize
        }
    }
}

fn build_moves(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let x = ctx.in_shape(0)?;
    let out = ctx.out_shape(0)?;
    let st = strides(x);
    let gathered =
        |map| -> Result<Box<dyn Kernel>, String> { Ok(Box::new(Gathered { map, fill: 0.0 })) };
    match &ctx.node.op {
        Op::Reshape { .. } | Op::Flatten(_) | Op::Squeeze(_) | Op::Unsqueeze(_) => {
            Ok(Box::new(Copy))
        }
        Op::Transpose(perm) => {
            let steps: Vec<isize> = perm.iter().map(|&p| st[p] as isize).collect();
            gathered(affine_map(out, 0, &steps)?)
        }
        Op::StridedSlice(spec) => {
            let ranges: Vec<AxisRange> = slice_ranges(x, spec)?;
            let base: isize = ranges
                .iter()
                .zip(&st)
                .map(|(r, s)| (r.start * s) as isize)
                .sum();
            let steps: Vec<isize> = ranges
                .iter()
                .zip(&st)
                .zip(&spec.shrink)
                .filter(|(_, shrink)| !**shrink)
                .map(|((r, s), _)| r.step * *s as isize)
                .collect();
            gathered(affine_map(out, base, &steps)?)
        }
        Op::Pad { pads, value, mode } if *mode == PadMode::Constant && !x.is_empty() => {
            let rank = x.len();
            let outer_out = &out[..rank - 1];
            let rows = coord_map(outer_out, |c| {
                let mut row = 0usize;
                for d in 0..rank - 1 {
                    let i = c[d] as isize - pads[d].0 as isize;
                    if i < 0 || i >= x[d] as isize {
                        return None;
                    }
                    row = row * x[d] + i as usize;
                }
                Some(row)
            })?;
            Ok(Box::new(ConstantPad {
                rows,
                before: pads[rank - 1].0,
                len: x[rank - 1],
                after: pads[rank - 1].1,
                fill: *value,
            }))
        }
        Op::Pad { pads, value, mode } => {
            let map = coord_map(out, |c| {
                let mut off = 0usize;
                for d in 0..x.len() {
                    let i = c[d] as isize - pads[d].0 as isize;
                    let i = if i < 0 || i >= x[d] as isize {
                        if *mode == PadMode::Constant {
                            return None;
                        }
                        mirror(i, x[d], *mode)
                    } else {
                        i as usize
                    };
                    off += i * st[d];
                }
                Some(off)
            })?;
            Ok(Box::new(Gathered { map, fill: *value }))
        }
        Op::Expand => {
            let lead = out
                .len()
                .checked_sub(x.len())
                .ok_or("the shape has a lower rank than the input")?;
            let steps: Vec<isize> = (0..out.len())
                .map(|d| match d.checked_sub(lead) {
                    Some(k) if x[k] != 1 || out[d] == 1 => st[k] as isize,
                    _ => 0,
                })
                .collect();
            gathered(affine_map(out, 0, &steps)?)
        }
        Op::Tile(_) => gathered(coord_map(out, |c| {
            Some(c.iter().enumerate().map(|(d, i)| (i % x[d]) * st[d]).sum())
        })?),
        Op::DepthToSpace(b) => {
            let b = *b;
            let oc = out[3];
            gathered(coord_map(out, |c| {
                let (n, y, xx, ch) = (c[0], c[1], c[2], c[3]);
                let (iy, by, ix, bx) = (y / b, y % b, xx / b, xx % b);
                let ic = (by * b + bx) * oc + ch;
                Some(((n * x[1] + iy) * x[2] + ix) * x[3] + ic)
            })?)
        }
        Op::SpaceToDepth(b) => {
            let b = *b;
            let ic_n = x[3];
            gathered(coord_map(out, |c| {
                let (n, y, xx, ch) = (c[0], c[1], c[2], c[3]);
                let (blk, ic) = (ch / ic_n, ch % ic_n);
                let (by, bx) = (blk / b, blk % b);
                Some(((n * x[1] + y * b + by) * x[2] + xx * b + bx) * x[3] + ic)
            })?)
        }
        Op::Concat { axis, .. } => {
            let outer: usize = out[..*axis].iter().product();
            let inner: usize = out[axis + 1..].iter().product();
            let widths = ctx.in_shapes.iter().map(|s| s[*axis] * inner).collect();
            Ok(Box::new(Concat { outer, widths }))
        }
        Op::Split { axis, sizes } => {
            let outer: usize = x[..*axis].iter().product();
            let inner: usize = x[axis + 1..].iter().product();
            Ok(Box::new(Split {
                outer,
                widths: sizes.iter().map(|s| s * inner).collect(),
            }))
        }
        _ => Err("not a layout op".into()),
    }
}

/// Gather with indices known at run time.
struct GatherRuntime {
    outer: usize,
    axis_len: usize,
    inner: usize,
}

impl Kernel for GatherRuntime {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let idx = inputs[1]
            .to_i64()
            .ok_or("gather indices must be integers")?;
        let (outer, n, inner) = (self.outer, self.axis_len, self.inner);
        let resolved = idx
            .iter()
            .map(|&i| {
                let i = if i < 0 { i + n as i64 } else { i };
                usize::try_from(i)
                    .ok()
                    .filter(|i| *i < n)
                    .ok_or_else(|| format!("gather index {i} is out of range"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        typed!(inputs[..1], &mut outputs[0], |ins, out| {
            let x = ins[0];
            let k = resolved.len();
            for o in 0..outer {
                for (j, &i) in resolved.iter().enumerate() {
                    out[(o * k + j) * inner..(o * k + j + 1) * inner]
                        .copy_from_slice(&x[(o * n + i) * inner..(o * n + i + 1) * inner]);
                }
            }
            Ok(())
        })
    }
}

pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    if let Op::Gather { axis } = ctx.node.op {
        let x = ctx.in_shape(0)?;
        return Ok(Box::new(GatherRuntime {
            outer: x[..axis].iter().product(),
            axis_len: x[axis],
            inner: x[axis + 1..].iter().product(),
        }));
    }
    // Integers move as they are when every input shares the output's quantization.
    let same_quant = (0..ctx.node.inputs.len()).all(|i| ctx.in_quant(i) == ctx.out_quant(0))
        && (0..ctx.node.outputs.len()).all(|i| ctx.out_quant(i) == ctx.out_quant(0));
    if same_quant {
        build_moves(ctx)
    } else {
        wrap_float(ctx, build_moves)
    }
}
