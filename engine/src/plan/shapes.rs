//! Concrete output shapes of each op, from its inputs' concrete shapes: what a plan is sized
//! by. Every product is overflow-checked; a shape a model cannot have is an error, not a
//! panic.

use crate::graph::{Graph, Node, Op, Padding, ResizeMode};

pub type ShapeResult<T> = Result<T, String>;

/// Output size and leading padding of one spatial axis.
pub fn conv_axis(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
    axis: usize,
) -> ShapeResult<(usize, usize)> {
    let effective = dilation
        .checked_mul(kernel.saturating_sub(1))
        .and_then(|k| k.checked_add(1))
        .ok_or("kernel size overflows")?;
    match padding {
        Padding::Valid => {
            if input < effective {
                return Err(format!(
                    "input size {input} is smaller than the kernel's {effective}"
                ));
            }
            Ok(((input - effective) / stride + 1, 0))
        }
        Padding::Same => {
            let out = input.div_ceil(stride);
            let needed = (out.saturating_sub(1) * stride + effective).saturating_sub(input);
            Ok((out, needed / 2))
        }
        Padding::Explicit(p) => {
            let (before, after) = if axis == 0 {
                (p[0], p[1])
            } else {
                (p[2], p[3])
            };
            let padded = input + before + after;
            if padded < effective {
                return Err(format!(
                    "padded size {padded} is smaller than the kernel's {effective}"
                ));
            }
            Ok(((padded - effective) / stride + 1, before))
        }
    }
}

/// Numpy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> ShapeResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

fn count(shape: &[usize]) -> ShapeResult<usize> {
    crate::tensor::element_count(shape).ok_or_else(|| format!("shape {shape:?} overflows"))
}

fn rank_is(shape: &[usize], rank: usize, what: &str) -> ShapeResult<()> {
    if shape.len() == rank {
        Ok(())
    } else {
        Err(format!("{what} must have rank {rank}, got {shape:?}"))
    }
}

/// The output shapes of `node` given its inputs' shapes.
/// `consts` holds the contents of inputs known when planning (a reshape's computed shape).
pub fn infer(
    graph: &Graph,
    node: &Node,
    inputs: &[&[usize]],
    consts: &[Option<&crate::tensor::Data>],
) -> ShapeResult<Vec<Vec<usize>>> {
    let input = |i: usize| -> ShapeResult<&[usize]> {
        inputs
            .get(i)
            .copied()
            .ok_or_else(|| format!("input {i} is missing"))
    };
    let one = |s: Vec<usize>| Ok(vec![s]);
    match &node.op {
        Op::Conv2d(c) => {
            let (x, w) = (input(0)?, input(1)?);
            rank_is(x, 4, "conv input")?;
            rank_is(w, 4, "conv weights")?;
            if x[3] != w[3] * c.groups {
                return Err(format!(
                    "input has {} channels, the weights expect {}",
                    x[3],
                    w[3] * c.groups
                ));
            }
            let (oh, _) = conv_axis(x[1], w[1], c.stride.0, c.dilation.0, c.padding, 0)?;
            let (ow, _) = conv_axis(x[2], w[2], c.stride.1, c.dilation.1, c.padding, 1)?;
            one(vec![x[0], oh, ow, w[0]])
        }
        Op::Depthwise(d) => {
            let (x, w) = (input(0)?, input(1)?);
            rank_is(x, 4, "depthwise input")?;
            rank_is(w, 4, "depthwise weights")?;
            if x[3] * d.multiplier != w[3] {
                return Err("depthwise channels do not match the weights".into());
            }
            let (oh, _) = conv_axis(x[1], w[1], d.stride.0, d.dilation.0, d.padding, 0)?;
            let (ow, _) = conv_axis(x[2], w[2], d.stride.1, d.dilation.1, d.padding, 1)?;
            one(vec![x[0], oh, ow, w[3]])
        }
        Op::TransposeConv(t) => {
            let (x, w) = (input(0)?, input(1)?);
            rank_is(x, 4, "transpose conv input")?;
            rank_is(w, 4, "transpose conv weights")?;
            if x[3] != w[3] {
                return Err("transpose conv channels do not match the weights".into());
            }
            // The full output of a transposed convolution, less `cut` padding.
            let full = |input: usize, stride: usize, k: usize, cut: usize| {
                input
                    .saturating_sub(1)
                    .checked_mul(stride)
                    .and_then(|v| v.checked_add(k))
                    .and_then(|v| v.checked_sub(cut))
                    .filter(|v| *v > 0)
                    .ok_or_else(|| format!("transpose conv of size {input}, stride {stride}, kernel {k} and padding {cut} has no output size"))
            };
            let (oh, ow) = match (t.output_hw, t.padding) {
                (Some(hw), _) => hw,
                (None, Padding::Valid) => (
                    full(x[1], t.stride.0, w[1], 0)?,
                    full(x[2], t.stride.1, w[2], 0)?,
                ),
                // ONNX: the padding comes off the full output (output padding was already
                // taken off the end padding).
                (None, Padding::Explicit([top, bottom, left, right])) => (
                    full(x[1], t.stride.0, w[1], top.saturating_add(bottom))?,
                    full(x[2], t.stride.1, w[2], left.saturating_add(right))?,
                ),
                (None, Padding::Same) => (
                    x[1].saturating_mul(t.stride.0),
                    x[2].saturating_mul(t.stride.1),
                ),
            };
            one(vec![x[0], oh, ow, w[0]])
        }
        Op::FullyConnected { keep_dims, .. } => {
            let (x, w) = (input(0)?, input(1)?);
            rank_is(w, 2, "fully connected weights")?;
            let k = w[1];
            let total = count(x)?;
            if k == 0 || total % k != 0 {
                return Err(format!("input {x:?} is not a multiple of depth {k}"));
            }
            if *keep_dims {
                let mut s = x.to_vec();
                if s.last() != Some(&k) {
                    return Err("keep_num_dims needs the last axis to be the depth".into());
                }
                if let Some(last) = s.last_mut() {
                    *last = w[0];
                }
                one(s)
            } else {
                one(vec![total / k, w[0]])
            }
        }
        Op::MatMul { adj_a, adj_b } => {
            let (a, b) = (input(0)?, input(1)?);
            if a.len() < 2 || b.len() < 2 {
                return Err("matmul operands need rank 2 or more".into());
            }
            let (m, ka) = if *adj_a {
                (a[a.len() - 1], a[a.len() - 2])
            } else {
                (a[a.len() - 2], a[a.len() - 1])
            };
            let (kb, n) = if *adj_b {
                (b[b.len() - 1], b[b.len() - 2])
            } else {
                (b[b.len() - 2], b[b.len() - 1])
            };
            if ka != kb {
                return Err(format!("matmul depths differ: {a:?} x {b:?}"));
            }
            let mut s = broadcast(&a[..a.len() - 2], &b[..b.len() - 2])?;
            s.extend([m, n]);
            one(s)
        }
        Op::Binary { .. } | Op::Prelu | Op::Compare(_) => one(broadcast(input(0)?, input(1)?)?),
        Op::Where => one(broadcast(&broadcast(input(0)?, input(1)?)?, input(2)?)?),
        Op::Not => one(input(0)?.to_vec()),
        Op::Unary(_) | Op::Quantize | Op::Dequantize | Op::Cast => one(input(0)?.to_vec()),
        Op::Shape(_) => one(vec![input(0)?.len()]),
        Op::Flatten(axis) => {
            let x = input(0)?;
            if *axis > x.len() {
                return Err("the flatten axis is out of range".into());
            }
            one(vec![count(&x[..*axis])?, count(&x[*axis..])?])
        }
        Op::Squeeze(axes) => {
            let x = input(0)?;
            if axes.iter().any(|a| *a >= x.len() || x[*a] != 1) {
                return Err(format!("cannot squeeze axes {axes:?} of {x:?}"));
            }
            one(x
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, d)| *d)
                .collect())
        }
        Op::Unsqueeze(axes) => {
            let x = input(0)?;
            let rank = x.len() + axes.len();
            if axes.iter().any(|a| *a >= rank) {
                return Err("an unsqueeze axis is out of range".into());
            }
            let mut rest = x.iter();
            one((0..rank)
                .map(|i| {
                    if axes.contains(&i) {
                        1
                    } else {
                        rest.next().copied().unwrap_or(1)
                    }
                })
                .collect())
        }
        Op::Softmax { .. } | Op::LogSoftmax { .. } => one(input(0)?.to_vec()),
        Op::Pool2d(p) => {
            let x = input(0)?;
            rank_is(x, 4, "pool input")?;
            let (oh, _) = conv_axis(x[1], p.filter.0, p.stride.0, 1, p.padding, 0)?;
            let (ow, _) = conv_axis(x[2], p.filter.1, p.stride.1, 1, p.padding, 1)?;
            one(vec![x[0], oh, ow, x[3]])
        }
        Op::Reduce {
            axes, keep_dims, ..
        } => {
            let x = input(0)?;
            if axes.iter().any(|a| *a >= x.len()) {
                return Err("a reduction axis is out of range".into());
            }
            let s = x
                .iter()
                .enumerate()
                .filter_map(|(i, d)| match (axes.contains(&i), keep_dims) {
                    (false, _) => Some(*d),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect();
            one(s)
        }
        Op::ArgMax { axis, keep_dims } | Op::ArgMin { axis, keep_dims } => {
            let x = input(0)?;
            if *axis >= x.len() {
                return Err("the axis is out of range".into());
            }
            let mut s = x.to_vec();
            if *keep_dims {
                s[*axis] = 1;
            } else {
                s.remove(*axis);
            }
            one(s)
        }
        Op::Reshape {
            shape: declared,
            copy_zeros,
        } => {
            let x = input(0)?;
            let computed = consts.get(1).copied().flatten().and_then(|d| d.to_i64());
            let mut target = computed.unwrap_or_else(|| declared.clone());
            if *copy_zeros {
                for (i, d) in target.iter_mut().enumerate() {
                    if *d == 0 {
                        *d = *x.get(i).ok_or("a 0 in a reshape past the input's rank")? as i64;
                    }
                }
            }
            let target = &target;
            let total = count(x)?;
            let mut s = Vec::with_capacity(target.len());
            let mut unknown = None;
            for (i, &d) in target.iter().enumerate() {
                if d < 0 {
                    unknown = Some(i);
                    s.push(1);
                } else {
                    s.push(usize::try_from(d).map_err(|_| "negative reshape dimension")?);
                }
            }
            let known = count(&s)?;
            if target.iter().filter(|d| **d < 0).count() > 1 {
                return Err(format!("cannot reshape {x:?} to {target:?}"));
            }
            if let Some(i) = unknown {
                if known == 0 || total % known != 0 {
                    return Err(format!("cannot reshape {x:?} to {target:?}"));
                }
                s[i] = total / known;
            } else if known != total {
                return Err(format!("cannot reshape {x:?} to {target:?}"));
            }
            one(s)
        }
        Op::Transpose(perm) => {
            let x = input(0)?;
            if perm.len() != x.len() {
                return Err("the permutation does not match the rank".into());
            }
            one(perm.iter().map(|&p| x[p]).collect())
        }
        Op::Concat { axis, .. } => {
            let first = input(0)?;
            if *axis >= first.len() {
                return Err("the concat axis is out of range".into());
            }
            let mut s = first.to_vec();
            s[*axis] = 0;
            for x in inputs {
                if x.len() != first.len()
                    || x.iter()
                        .zip(first)
                        .enumerate()
                        .any(|(i, (a, b))| i != *axis && a != b)
                {
                    return Err(format!("cannot concatenate {first:?} and {x:?}"));
                }
                s[*axis] += x[*axis];
            }
            one(s)
        }
        Op::Split { axis, sizes } => {
            let x = input(0)?;
            if *axis >= x.len() || sizes.iter().sum::<usize>() != x[*axis] {
                return Err("split sizes do not match the axis".into());
            }
            Ok(sizes
                .iter()
                .map(|&n| {
                    let mut s = x.to_vec();
                    s[*axis] = n;
                    s
                })
                .collect())
        }
        Op::StridedSlice(spec) => {
            let x = input(0)?;
            let ranges = slice_ranges(x, spec)?;
            let s = ranges
                .iter()
                .zip(&spec.shrink)
                .filter(|(_, shrink)| !**shrink)
                .map(|(r, _)| r.len)
                .collect();
            one(s)
        }
        Op::Pad { pads, .. } => {
            let x = input(0)?;
            if pads.len() != x.len() {
                return Err("paddings do not match the rank".into());
            }
            one(x.iter().zip(pads).map(|(d, (a, b))| d + a + b).collect())
        }
        Op::Gather { axis } => {
            let (x, idx) = (input(0)?, input(1)?);
            if *axis >= x.len() {
                return Err("the gather axis is out of range".into());
            }
            let mut s = x[..*axis].to_vec();
            s.extend_from_slice(idx);
            s.extend_from_slice(&x[axis + 1..]);
            one(s)
        }
        Op::Range => {
            let scalar = |i: usize| -> ShapeResult<f64> {
                let d = consts
                    .get(i)
                    .copied()
                    .flatten()
                    .ok_or("range bounds are not known when the plan is made")?;
                d.to_f32()
                    .first()
                    .map(|v| f64::from(*v))
                    .ok_or_else(|| "an empty range bound".to_owned())
            };
            one(vec![range_len(scalar(0)?, scalar(1)?, scalar(2)?)?])
        }
        Op::Fill(_) => {
            let shape = consts
                .first()
                .copied()
                .flatten()
                .and_then(|d| d.to_i64())
                .ok_or("the shape to fill is not known when the plan is made")?;
            let shape = shape
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| "a negative dimension".to_owned()))
                .collect::<ShapeResult<Vec<_>>>()?;
            count(&shape)?;
            one(shape)
        }
        Op::Expand => {
            let x = input(0)?;
            let target = consts
                .get(1)
                .copied()
                .flatten()
                .and_then(|d| d.to_i64())
                .ok_or("the shape of an expand is not known when the plan is made")?;
            let target: Vec<usize> = target
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| "a negative expand dimension".to_owned()))
                .collect::<ShapeResult<_>>()?;
            one(broadcast(x, &target)?)
        }
        Op::Tile(reps) => {
            let x = input(0)?;
            if reps.len() != x.len() {
                return Err("repeats do not match the rank".into());
            }
            one(x.iter().zip(reps).map(|(d, r)| d * r).collect())
        }
        Op::DepthToSpace(b) => {
            let x = input(0)?;
            rank_is(x, 4, "depth-to-space input")?;
            if x[3] % (b * b) != 0 {
                return Err("channels are not a multiple of the block size squared".into());
            }
            one(vec![x[0], x[1] * b, x[2] * b, x[3] / (b * b)])
        }
        Op::SpaceToDepth(b) => {
            let x = input(0)?;
            rank_is(x, 4, "space-to-depth input")?;
            if x[1] % b != 0 || x[2] % b != 0 {
                return Err("height and width are not multiples of the block size".into());
            }
            one(vec![x[0], x[1] / b, x[2] / b, x[3] * b * b])
        }
        Op::Resize(r) => {
            let x = input(0)?;
            rank_is(x, 4, "resize input")?;
            if r.mode == ResizeMode::Bilinear && r.align_corners && r.half_pixel_centers {
                return Err("align_corners and half_pixel_centers together".into());
            }
            let (h, w) = resize_size(r.to, x[1], x[2])?;
            one(vec![x[0], h, w, x[3]])
        }
        Op::ReadVariable(v) => graph
            .variables
            .get(*v)
            .map(|v| vec![v.shape.clone()])
            .ok_or_else(|| "unknown variable".into()),
        Op::AssignVariable(_) => Ok(Vec::new()),
    }
}

/// The number of elements of `Range(start, limit, delta)`.
pub fn range_len(start: f64, limit: f64, delta: f64) -> ShapeResult<usize> {
    if delta == 0.0 || !(start.is_finite() && limit.is_finite() && delta.is_finite()) {
        return Err("a range with step 0 or unbounded".into());
    }
    let n = ((limit - start) / delta).ceil().max(0.0);
    if n > (1u64 << 31) as f64 {
        return Err("a range too long".into());
    }
    Ok(n as usize)
}

/// A resize's output height and width for an input of `h` x `w`.
pub fn resize_size(to: crate::graph::ResizeTo, h: usize, w: usize) -> ShapeResult<(usize, usize)> {
    match to {
        crate::graph::ResizeTo::Size(oh, ow) => Ok((oh, ow)),
        crate::graph::ResizeTo::Scale(sh, sw) => {
            let scaled = |d: usize, s: f32| -> ShapeResult<usize> {
                let v = (d as f64 * f64::from(s)).floor();
                if !(v.is_finite() && (0.0..=f64::from(1u32 << 30)).contains(&v)) {
                    return Err(format!("resize scale {s} gives a bad size"));
                }
                Ok(v as usize)
            };
            Ok((scaled(h, sh)?, scaled(w, sw)?))
        }
    }
}

/// The elements one axis of a strided slice selects: `start, start + step, ...`, `len` of
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisRange {
    pub start: usize,
    pub step: isize,
    pub len: usize,
}

/// Resolves a slice spec against a shape (TensorFlow's clamping rules).
pub fn slice_ranges(
    shape: &[usize],
    spec: &crate::graph::SliceSpec,
) -> ShapeResult<Vec<AxisRange>> {
    if spec.begin.len() != shape.len() {
        return Err("slice parameters do not match the rank".into());
    }
    let mut ranges = Vec::with_capacity(shape.len());
    for (i, &dim) in shape.iter().enumerate() {
        let d = dim as i64;
        let stride = spec.stride[i];
        if spec.shrink[i] {
            let mut b = spec.begin[i];
            if b < 0 {
                b += d;
            }
            if !(0..d).contains(&b) {
                return Err(format!("shrunk axis {i} index is out of range"));
            }
            ranges.push(AxisRange {
                start: b as usize,
                step: 1,
                len: 1,
            });
            continue;
        }
        let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let (lo, hi) = if stride > 0 { (0, d) } else { (-1, d - 1) };
        let begin = if spec.begin_open[i] {
            if stride > 0 { 0 } else { d - 1 }
        } else {
            let b = spec.begin[i];
            clamp(if b < 0 { b + d } else { b }, lo, hi)
        };
        let end = if spec.end_open[i] {
            if stride > 0 { d } else { -1 }
        } else {
            let e = spec.end[i];
            let e = if e < 0 && e != i64::MIN { e + d } else { e };
            clamp(e, lo, hi)
        };
        let len = if stride > 0 {
            if end > begin {
                (end - begin + stride - 1) / stride
            } else {
                0
            }
        } else if begin > end {
            (begin - end + (-stride) - 1) / (-stride)
        } else {
            0
        };
        ranges.push(AxisRange {
            start: begin.max(0) as usize,
            step: stride as isize,
            len: len as usize,
        });
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(conv_axis(224, 3, 2, 1, Padding::Same, 0).unwrap(), (112, 0));
        assert_eq!(conv_axis(7, 3, 1, 1, Padding::Same, 0).unwrap(), (7, 1));
        assert_eq!(conv_axis(8, 3, 2, 1, Padding::Valid, 0).unwrap(), (3, 0));
        assert!(conv_axis(2, 3, 1, 1, Padding::Valid, 0).is_err());
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast(&[1, 4, 1], &[3, 1, 5]).unwrap(), vec![3, 4, 5]);
        assert_eq!(broadcast(&[2, 3], &[3]).unwrap(), vec![2, 3]);
        assert!(broadcast(&[2, 3], &[4]).is_err());
    }
}
