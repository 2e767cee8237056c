//! ONNX image and sequence operators: convolutions (1-D and 2-D, grouped, depthwise,
//! transposed), normalizations, pools, LRN, resizes and LSTM (matrix products are in
//! `linear.rs`). Weights are
//! permuted at load into the layouts the kernels take (OHWI, `[1, kh, kw, C]`, `[n, k]`).

use super::import::{Block, Entry, Layout, block};
use super::ops::Cx;
use crate::graph::{
    Activation, BinaryOp, Conv2d, Depthwise, Op, Padding, Pool2d, PoolKind, ReduceKind, Resize,
    ResizeMode, ResizeTo, TransposeConv, UnaryOp, ValueId,
};
use crate::tensor::{DType, Data};

pub(super) fn binary(op: BinaryOp) -> Op {
    Op::Binary {
        op,
        activation: Activation::None,
    }
}

/// A constant permuted (folded at load).
pub(super) fn permuted(
    c: &mut Cx<'_>,
    name: &str,
    data: Data,
    shape: Vec<usize>,
    perm: Vec<usize>,
) -> Result<ValueId, Block> {
    let e = c.imp.constant(name, data, shape);
    let dtype = c.dtype(e.value);
    let out = format!("{name}.permuted");
    c.emit_named(
        &out,
        Op::Transpose(perm),
        vec![e.value],
        dtype,
        Layout::Plain,
        None,
    )
}

/// Kernel, strides, dilations and padding of a 2-D window (conv or pool) from the
/// attributes; 1-D windows as 2-D ones of height 1.
struct Window {
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    padding: Padding,
}

fn positive(v: &[i64], what: &str) -> Result<Vec<usize>, Block> {
    v.iter()
        .map(|&d| usize::try_from(d).ok().filter(|d| *d > 0))
        .collect::<Option<_>>()
        .map_or_else(|| block(format!("{what} must be positive")), Ok)
}

fn window(c: &Cx<'_>, kernel: &[usize], spatial: &[Option<usize>]) -> Result<Window, Block> {
    let n = kernel.len();
    if !(1..=2).contains(&n) {
        return block(format!("{n}-D windows"));
    }
    let stride = positive(&c.ints("strides").unwrap_or_else(|| vec![1; n]), "strides")?;
    let dilation = positive(
        &c.ints("dilations").unwrap_or_else(|| vec![1; n]),
        "dilations",
    )?;
    let pads = c.ints("pads").unwrap_or_else(|| vec![0; 2 * n]);
    if stride.len() != n || dilation.len() != n || pads.len() != 2 * n {
        return block("window attributes of the wrong length");
    }
    let pads: Vec<usize> = pads
        .iter()
        .map(|&p| usize::try_from(p).ok())
        .collect::<Option<_>>()
        .map_or_else(|| block("negative pads"), Ok)?;
    // As 2-D: (height, width), a 1-D window being 1 high.
    let two = |v: &[usize], one: usize| if n == 1 { (one, v[0]) } else { (v[0], v[1]) };
    let kernel2 = two(kernel, 1);
    let stride2 = two(&stride, 1);
    let dilation2 = two(&dilation, 1);
    let explicit = if n == 1 {
        [0, 0, pads[0], pads[1]]
    } else {
        [pads[0], pads[2], pads[1], pads[3]]
    };
    let padding = match c.string("auto_pad").as_deref().unwrap_or("NOTSET") {
        "NOTSET" if explicit == [0; 4] => Padding::Valid,
        "NOTSET" => Padding::Explicit(explicit),
        "VALID" => Padding::Valid,
        "SAME_UPPER" => Padding::Same,
        "SAME_LOWER" => {
            let mut p = [0; 4];
            for (i, &(k, s, d)) in [
                (kernel2.0, stride2.0, dilation2.0),
                (kernel2.1, stride2.1, dilation2.1),
            ]
            .iter()
            .enumerate()
            {
                let size = if n == 1 && i == 0 {
                    Some(1)
                } else {
                    spatial[i + n - 2]
                };
                let size = size.map_or_else(
                    || block("SAME_LOWER padding of a size known only at run time"),
                    Ok,
                )?;
                let out = size.div_ceil(s);
                let total = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(size);
                p[2 * i] = total.div_ceil(2);
                p[2 * i + 1] = total / 2;
            }
            Padding::Explicit(p)
        }
        other => return block(format!("auto_pad {other:?}")),
    };
    Ok(Window {
        kernel: kernel2,
        stride: stride2,
        dilation: dilation2,
        padding,
    })
}

/// The input as a channels-last rank-4 value: a 1-D input `[N, C, L]` is held `[N, L, C]`
/// and viewed as `[N, 1, L, C]`.
fn image_input(c: &mut Cx<'_>) -> Result<(Entry, ValueId), Block> {
    let e = c.entry(0)?;
    let x = c.last(0)?;
    match e.rank() {
        4 => Ok((e, x)),
        3 => {
            let name = c.temp("2d");
            let dtype = c.dtype(x);
            let v = c.emit_named(
                &name,
                Op::Unsqueeze(vec![1]),
                vec![x],
                dtype,
                Layout::Plain,
                None,
            )?;
            Ok((e, v))
        }
        r => block(format!("rank {r} images")),
    }
}

/// Emits a rank-4 image op and binds output 0, back to rank 3 for 1-D inputs.
fn image_output(c: &mut Cx<'_>, e: &Entry, op: Op, inputs: Vec<ValueId>) -> Result<(), Block> {
    let dtype = c.dtype(inputs[0]);
    if e.rank() == 4 {
        c.emit(op, inputs, dtype, Layout::Last)?;
        return Ok(());
    }
    let name = c.temp("out2d");
    // Emitted as a plain value: its axes are (N, 1, L, C), not an ONNX order.
    let y = c.emit_named(&name, op, inputs, dtype, Layout::Plain, None)?;
    c.emit(Op::Squeeze(vec![1]), vec![y], dtype, Layout::Last)?;
    Ok(())
}

pub(super) fn conv(c: &mut Cx<'_>) -> Result<(), Block> {
    let (wdata, wshape) = c
        .const_input(1)
        .map_or_else(|| block("weights computed at run time"), Ok)?;
    let bias = if c.has(2) {
        Some(
            c.const_input(2)
                .map_or_else(|| block("a bias computed at run time"), Ok)?,
        )
    } else {
        None
    };
    let (e, x) = image_input(c)?;
    let rank = e.rank();
    if wshape.len() != rank {
        return block("weights of a different rank than the input");
    }
    let group = usize::try_from(c.int("group", 1)).ok().filter(|g| *g > 0);
    let group = group.map_or_else(|| block("a group count of 0"), Ok)?;
    let (cout, cin_g) = (wshape[0], wshape[1]);
    let cin = e.dims[1];
    if cin.is_some_and(|ci| ci != cin_g * group) || cout % group != 0 {
        return block("channels do not match the weights and groups");
    }
    let kernel = &wshape[2..];
    let w = window(c, kernel, &e.dims[2..])?;
    // Weights as [O, kh, kw, I/g] (1-D: kh = 1).
    let w4 = if rank == 3 {
        vec![cout, cin_g, 1, kernel[0]]
    } else {
        wshape.clone()
    };
    let wname = c.temp("weights");
    let depthwise = group > 1 && cin_g == 1;
    let weights = if depthwise {
        permuted(c, &wname, (*wdata).clone(), w4, vec![1, 2, 3, 0])?
    } else {
        permuted(c, &wname, (*wdata).clone(), w4, vec![0, 2, 3, 1])?
    };
    let mut inputs = vec![x, weights];
    if let Some((b, _)) = bias {
        let name = c.temp("bias");
        let n = b.len();
        inputs.push(c.imp.constant(&name, (*b).clone(), vec![n]).value);
    }
    let op = if depthwise {
        Op::Depthwise(Depthwise {
            stride: w.stride,
            dilation: w.dilation,
            padding: w.padding,
            multiplier: cout / group,
            activation: Activation::None,
        })
    } else {
        Op::Conv2d(Conv2d {
            stride: w.stride,
            dilation: w.dilation,
            padding: w.padding,
            groups: group,
            activation: Activation::None,
        })
    };
    image_output(c, &e, op, inputs)
}

pub(super) fn conv_transpose(c: &mut Cx<'_>) -> Result<(), Block> {
    let (wdata, wshape) = c
        .const_input(1)
        .map_or_else(|| block("weights computed at run time"), Ok)?;
    let e = c.entry(0)?;
    if e.rank() != 4 || wshape.len() != 4 {
        return block("transposed convolutions of rank other than 4");
    }
    if c.int("group", 1) != 1 {
        return block("grouped transposed convolutions");
    }
    if c.ints("dilations")
        .is_some_and(|d| d.iter().any(|v| *v != 1))
    {
        return block("dilated transposed convolutions");
    }
    if c.attr("output_shape").is_some() || c.string("auto_pad").is_some_and(|p| p != "NOTSET") {
        return block("output_shape or auto_pad on a transposed convolution");
    }
    let stride = positive(&c.ints("strides").unwrap_or_else(|| vec![1, 1]), "strides")?;
    let pads = c.ints("pads").unwrap_or_else(|| vec![0; 4]);
    let extra = c.ints("output_padding").unwrap_or_else(|| vec![0, 0]);
    if stride.len() != 2 || pads.len() != 4 || extra.len() != 2 {
        return block("attributes of the wrong length");
    }
    // output = stride * (in - 1) + k - begin - end + output_padding: output padding is taken
    // off the end padding.
    let p: Vec<i64> = vec![pads[0], pads[2] - extra[0], pads[1], pads[3] - extra[1]];
    let p: Vec<usize> = p
        .iter()
        .map(|&v| usize::try_from(v).ok())
        .collect::<Option<_>>()
        .map_or_else(|| block("output padding larger than the padding"), Ok)?;
    let x = c.last(0)?;
    let wname = c.temp("weights");
    let weights = permuted(
        c,
        &wname,
        (*wdata).clone(),
        wshape.clone(),
        vec![1, 2, 3, 0],
    )?;
    let cout = wshape[1];
    let bias = match c.const_input(2) {
        Some((b, _)) => (*b).clone(),
        None if !c.has(2) => Data::F32(vec![0.0; cout]),
        None => return block("a bias computed at run time"),
    };
    let bname = c.temp("bias");
    let b = c.imp.constant(&bname, bias, vec![cout]).value;
    let op = Op::TransposeConv(TransposeConv {
        stride: (stride[0], stride[1]),
        padding: Padding::Explicit([p[0], p[1], p[2], p[3]]),
        output_hw: None,
        activation: Activation::None,
    });
    c.emit(op, vec![x, weights, b], DType::F32, Layout::Last)?;
    Ok(())
}

/// Per-channel constants shaped to broadcast along ONNX axis 1 of `e`.
fn per_channel(c: &mut Cx<'_>, e: &Entry, name: &str, values: Vec<f32>) -> ValueId {
    let n = values.len();
    let shape = match (e.layout, e.rank()) {
        (Layout::Last, _) | (_, 0..=2) => vec![n],
        (Layout::Plain, r) => {
            let mut s = vec![n];
            s.extend(std::iter::repeat_n(1, r - 2));
            s
        }
    };
    c.imp.constant(name, Data::F32(values), shape).value
}

/// `x * scale + shift` per channel, binding output 0.
fn affine(c: &mut Cx<'_>, e: &Entry, scale: Vec<f32>, shift: Vec<f32>) -> Result<(), Block> {
    let s = per_channel(c, e, &c.temp("scale"), scale);
    let b = per_channel(c, e, &c.temp("shift"), shift);
    let name = c.temp("scaled");
    let y = c.emit_named(
        &name,
        binary(BinaryOp::Mul),
        vec![e.value, s],
        DType::F32,
        e.layout,
        None,
    )?;
    c.emit(binary(BinaryOp::Add), vec![y, b], DType::F32, e.layout)?;
    Ok(())
}

pub(super) fn batch_norm(c: &mut Cx<'_>) -> Result<(), Block> {
    if c.node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return block("training-mode outputs");
    }
    let eps = c.float("epsilon", 1e-5);
    let scale = c.const_floats(1, "the scale")?;
    let bias = c.const_floats(2, "the bias")?;
    let mean = c.const_floats(3, "the mean")?;
    let var = c.const_floats(4, "the variance")?;
    let n = scale.len();
    if bias.len() != n || mean.len() != n || var.len() != n {
        return block("statistics of different lengths");
    }
    let mul: Vec<f32> = scale
        .iter()
        .zip(&var)
        .map(|(s, v)| s / (v + eps).sqrt())
        .collect();
    let add: Vec<f32> = bias
        .iter()
        .zip(&mean)
        .zip(&mul)
        .map(|((b, m), k)| b - m * k)
        .collect();
    let e = c.entry(0)?;
    affine(c, &e, mul, add)
}

/// `(x - mean) / sqrt(var + eps)` over `axes` (of the value as held), then `* scale + shift`.
fn normalize(
    c: &mut Cx<'_>,
    e: &Entry,
    axes: Vec<usize>,
    eps: f32,
) -> Result<(ValueId, Layout), Block> {
    let (x, layout) = (e.value, e.layout);
    let reduce = |axes: &Vec<usize>| Op::Reduce {
        kind: ReduceKind::Mean,
        axes: axes.clone(),
        keep_dims: true,
    };
    let m = c.emit_named(
        &c.temp("mean"),
        reduce(&axes),
        vec![x],
        DType::F32,
        layout,
        None,
    )?;
    let d = c.emit_named(
        &c.temp("centred"),
        binary(BinaryOp::Sub),
        vec![x, m],
        DType::F32,
        layout,
        None,
    )?;
    let sq = c.emit_named(
        &c.temp("square"),
        Op::Unary(UnaryOp::Square),
        vec![d],
        DType::F32,
        layout,
        None,
    )?;
    let v = c.emit_named(
        &c.temp("var"),
        reduce(&axes),
        vec![sq],
        DType::F32,
        layout,
        None,
    )?;
    let eps = c
        .imp
        .constant(&c.temp("eps"), Data::F32(vec![eps]), vec![])
        .value;
    let ve = c.emit_named(
        &c.temp("var_eps"),
        binary(BinaryOp::Add),
        vec![v, eps],
        DType::F32,
        layout,
        None,
    )?;
    let r = c.emit_named(
        &c.temp("rstd"),
        Op::Unary(UnaryOp::Rsqrt),
        vec![ve],
        DType::F32,
        layout,
        None,
    )?;
    let y = c.emit_named(
        &c.temp("normed"),
        binary(BinaryOp::Mul),
        vec![d, r],
        DType::F32,
        layout,
        None,
    )?;
    Ok((y, layout))
}

pub(super) fn instance_norm(c: &mut Cx<'_>) -> Result<(), Block> {
    let eps = c.float("epsilon", 1e-5);
    let scale = c.const_floats(1, "the scale")?;
    let bias = c.const_floats(2, "the bias")?;
    let e = c.entry(0)?;
    if e.rank() < 3 {
        return block("instance normalization of rank below 3");
    }
    let axes: Vec<usize> = (2..e.rank()).map(|a| e.value_axis(a)).collect();
    let (y, layout) = normalize(c, &e, axes, eps)?;
    let held = Entry {
        value: y,
        layout,
        dims: e.dims.clone(),
        known: None,
    };
    affine(c, &held, scale, bias)
}

pub(super) fn layer_norm(c: &mut Cx<'_>) -> Result<(), Block> {
    if c.node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return block("mean and inverse-deviation outputs");
    }
    let eps = c.float("epsilon", 1e-5);
    let x = c.plain(0)?;
    let e = c.entry(0)?;
    let rank = e.rank();
    let axis = c.axis(c.int("axis", -1), rank)?;
    let held = Entry {
        value: x,
        layout: Layout::Plain,
        dims: e.dims.clone(),
        known: None,
    };
    let (y, _) = normalize(c, &held, (axis..rank).collect(), eps)?;
    let scale = c.plain(1)?;
    let name = if c.has(2) {
        c.temp("scaled")
    } else {
        c.out(0).to_owned()
    };
    let s = c.emit_named(
        &name,
        binary(BinaryOp::Mul),
        vec![y, scale],
        DType::F32,
        Layout::Plain,
        None,
    )?;
    if c.has(2) {
        let b = c.plain(2)?;
        c.emit(binary(BinaryOp::Add), vec![s, b], DType::F32, Layout::Plain)?;
    }
    Ok(())
}

pub(super) fn pool(c: &mut Cx<'_>) -> Result<(), Block> {
    if !c.out(1).is_empty() {
        return block("the indices output");
    }
    let kernel = positive(&c.ints("kernel_shape").unwrap_or_default(), "kernel_shape")?;
    let (e, x) = image_input(c)?;
    let spatial = &e.dims[2..];
    if kernel.len() != spatial.len() {
        return block("kernel_shape does not match the input");
    }
    let mut w = window(c, &kernel, spatial)?;
    if w.dilation != (1, 1) {
        return block("dilated pools");
    }
    if c.int("ceil_mode", 0) != 0 {
        // Extra padding at the end gives the rounded-up output size.
        let mut p = match w.padding {
            Padding::Explicit(p) => p,
            Padding::Valid => [0; 4],
            Padding::Same => return block("ceil_mode with SAME padding"),
        };
        let axes: [(usize, Option<usize>); 2] = if spatial.len() == 1 {
            [(0, Some(1)), (1, spatial[0])]
        } else {
            [(0, spatial[0]), (1, spatial[1])]
        };
        for (i, size) in axes {
            let size =
                size.map_or_else(|| block("ceil_mode with a size known only at run time"), Ok)?;
            let (k, s) = if i == 0 {
                (w.kernel.0, w.stride.0)
            } else {
                (w.kernel.1, w.stride.1)
            };
            let padded = size + p[2 * i] + p[2 * i + 1];
            if padded < k {
                return block("a window larger than the input");
            }
            let mut out = (padded - k).div_ceil(s) + 1;
            // The last window must start inside the input or its leading padding.
            if (out - 1) * s >= size + p[2 * i] {
                out -= 1;
            }
            p[2 * i + 1] += ((out - 1) * s + k).saturating_sub(padded);
        }
        w.padding = Padding::Explicit(p);
    }
    let kind = if c.node.op_type == "MaxPool" {
        PoolKind::Max
    } else {
        PoolKind::Average
    };
    let op = Op::Pool2d(Pool2d {
        kind,
        filter: w.kernel,
        stride: w.stride,
        padding: w.padding,
        count_include_pad: c.int("count_include_pad", 0) != 0,
        activation: Activation::None,
    });
    image_output(c, &e, op, vec![x])
}

pub(super) fn global_pool(c: &mut Cx<'_>, kind: ReduceKind) -> Result<(), Block> {
    let e = c.entry(0)?;
    if e.rank() < 3 {
        return block("a global pool of rank below 3");
    }
    let x = c.last(0)?;
    let axes = (1..e.rank() - 1).collect();
    let op = Op::Reduce {
        kind,
        axes,
        keep_dims: true,
    };
    c.emit(op, vec![x], DType::F32, Layout::Last)?;
    Ok(())
}

/// Local response normalization across channels: `x / (bias + alpha / size * Σ x²)^beta`,
/// the windowed sum of squares as a 1x1 convolution with a banded matrix.
pub(super) fn lrn(c: &mut Cx<'_>) -> Result<(), Block> {
    let size = usize::try_from(c.int("size", 0)).ok().filter(|s| *s > 0);
    let size = size.map_or_else(|| block("size must be positive"), Ok)?;
    let (alpha, beta, bias) = (
        c.float("alpha", 1e-4),
        c.float("beta", 0.75),
        c.float("bias", 1.0),
    );
    let e = c.entry(0)?;
    if e.rank() != 4 {
        return block("LRN of rank other than 4");
    }
    let ch = e.dims[1].map_or_else(|| block("channels known only at run time"), Ok)?;
    if ch > 4096 {
        return block("more than 4096 channels");
    }
    let x = c.last(0)?;
    let (before, after) = ((size - 1) / 2, (size - 1).div_ceil(2));
    let mut band = vec![0.0f32; ch * ch];
    for o in 0..ch {
        for i in o.saturating_sub(before)..=(o + after).min(ch - 1) {
            band[o * ch + i] = alpha / size as f32;
        }
    }
    let sq = c.emit_named(
        &c.temp("square"),
        Op::Unary(UnaryOp::Square),
        vec![x],
        DType::F32,
        Layout::Last,
        None,
    )?;
    let w = c
        .imp
        .constant(&c.temp("band"), Data::F32(band), vec![ch, 1, 1, ch])
        .value;
    let b = c
        .imp
        .constant(&c.temp("bias"), Data::F32(vec![bias; ch]), vec![ch])
        .value;
    let conv = Op::Conv2d(Conv2d {
        stride: (1, 1),
        dilation: (1, 1),
        padding: Padding::Valid,
        groups: 1,
        activation: Activation::None,
    });
    let d = c.emit_named(
        &c.temp("sum"),
        conv,
        vec![sq, w, b],
        DType::F32,
        Layout::Last,
        None,
    )?;
    let p = c
        .imp
        .constant(&c.temp("beta"), Data::F32(vec![beta]), vec![])
        .value;
    let den = c.emit_named(
        &c.temp("den"),
        binary(BinaryOp::Pow),
        vec![d, p],
        DType::F32,
        Layout::Last,
        None,
    )?;
    c.emit(
        binary(BinaryOp::Div),
        vec![x, den],
        DType::F32,
        Layout::Last,
    )?;
    Ok(())
}

pub(super) fn resize(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    if e.rank() != 4 {
        return block("resizes of rank other than 4");
    }
    let upsample = c.node.op_type == "Upsample";
    let opset = c.imp.opset;
    let mode = c.string("mode").unwrap_or_else(|| "nearest".into());
    let coords = if upsample || opset < 11 {
        "asymmetric".to_owned()
    } else {
        c.string("coordinate_transformation_mode")
            .unwrap_or_else(|| "half_pixel".into())
    };
    let nearest = c
        .string("nearest_mode")
        .unwrap_or_else(|| "round_prefer_floor".into());
    let (mode, align_corners, half_pixel) = match (mode.as_str(), coords.as_str()) {
        ("linear" | "bilinear", "half_pixel" | "pytorch_half_pixel") => {
            (ResizeMode::Bilinear, false, true)
        }
        ("linear" | "bilinear", "align_corners") => (ResizeMode::Bilinear, true, false),
        ("linear" | "bilinear", "asymmetric") => (ResizeMode::Bilinear, false, false),
        ("nearest", "asymmetric") if upsample || opset < 11 || nearest == "floor" => {
            (ResizeMode::Nearest, false, false)
        }
        ("nearest", "half_pixel" | "pytorch_half_pixel") if nearest == "round_prefer_floor" => {
            (ResizeMode::Nearest, false, true)
        }
        ("nearest", "align_corners") if nearest == "round_prefer_ceil" => {
            (ResizeMode::Nearest, true, false)
        }
        (m, t) => {
            return block(format!(
                "mode {m:?} with {t:?} coordinates ({nearest:?} rounding)"
            ));
        }
    };
    // Scales or sizes, in ONNX's order (N, C, H, W).
    let (scales_at, sizes_at) = match (upsample, opset) {
        (true, o) if o < 9 => (None, None),
        (true, _) | (false, 10) => (Some(1), None),
        (false, o) if o < 10 => (Some(1), None),
        _ => (Some(2), Some(3)),
    };
    let scales = match scales_at {
        None => c.attr("scales").map(|a| a.floats.clone()),
        Some(i) if c.has(i) => Some(c.const_floats(i, "scales")?).filter(|s| !s.is_empty()),
        _ => None,
    };
    let sizes = match sizes_at {
        Some(i) if c.has(i) => Some(c.const_ints(i, "sizes")?).filter(|s| !s.is_empty()),
        _ => None,
    };
    let to = match (scales, sizes) {
        (_, Some(s)) if s.len() == 4 => {
            if Some(s[0] as usize) != e.dims[0].or(Some(s[0] as usize))
                || e.dims[1].is_some_and(|ch| ch as i64 != s[1])
            {
                return block("a resize of the batch or channel axes");
            }
            let (h, w) = (usize::try_from(s[2]), usize::try_from(s[3]));
            let (Ok(h), Ok(w)) = (h, w) else {
                return block("negative sizes");
            };
            ResizeTo::Size(h, w)
        }
        (Some(s), _) if s.len() == 4 => {
            if s[0] != 1.0 || s[1] != 1.0 {
                return block("a resize of the batch or channel axes");
            }
            ResizeTo::Scale(s[2], s[3])
        }
        _ => return block("neither scales nor sizes for four axes"),
    };
    let x = c.last(0)?;
    let op = Op::Resize(Resize {
        mode,
        align_corners,
        half_pixel_centers: half_pixel,
        to,
    });
    c.emit(op, vec![x], DType::F32, Layout::Last)?;
    Ok(())
}

/// `x · Wᵀ + b` with constant weights as a fully connected op; otherwise a matrix product.
pub(super) fn lstm(c: &mut Cx<'_>) -> Result<(), Block> {
    super::recurrent::lstm(c)
}
