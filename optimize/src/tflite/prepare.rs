//! Rewrites that run before tract's own TFLite rewriter: each turns an op tract cannot write
//! (or writes wrongly) into ops it writes faithfully. The export's self-check and the LiteRT
//! tests compare the result with the unrewritten source model.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;
use tract_onnx::tract_core::internal::{AxisOp, TypedModelPatch, tvec};
use tract_onnx::tract_core::model::Rewriter;
use tract_onnx::tract_core::ops::array::{Pad, PadMode, Slice, TypedConcat};
use tract_onnx::tract_core::ops::cnn::{Conv, MaxPool, PaddingSpec, SumPool};
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::math;
use tract_onnx::tract_core::ops::nn::Softmax;
use tract_onnx_opl::lrn::Lrn;

/// Applies every rule until none matches, then names each outlet after its node so the
/// TFLite tensors keep the source model's names.
pub fn prepare(model: &mut TypedModel) -> TractResult<()> {
    declutter_only(model, &["Dropout", "Identity"])?;
    Rewriter::default()
        .with_rule_for("channel-affine-into-conv", channel_affine_into_conv)
        .with_rule_for("div-by-constant-as-mul", div_by_constant)
        .with_rule_for("softmax-on-one-axis", softmax_on_one_axis)
        .with_rule_for("max-pool-explicit-padding", max_pool_padding)
        .with_rule_for("avg-pool-explicit-padding", avg_pool_padding)
        .with_rule_for("lrn-as-conv", lrn)
        .rewrite(&(), model)?;
    // Only once batch norms are folded: a grouped convolution split into groups and a
    // concatenation no longer sits right before its batch norm.
    Rewriter::default()
        .with_rule_for("grouped-conv-as-groups", grouped_conv)
        .rewrite(&(), model)?;
    for node in 0..model.nodes.len() {
        let name = model.nodes[node].name.clone();
        for slot in 0..model.nodes[node].outputs.len() {
            let outlet = OutletId::new(node, slot);
            // tract labels the graph's outputs with their ONNX names already.
            if model.outlet_label(outlet).is_none() {
                let label = if slot == 0 {
                    name.clone()
                } else {
                    format!("{name}:{slot}")
                };
                model.set_outlet_label(outlet, label)?;
            }
        }
    }
    Ok(())
}

/// Applies tract's own declutter to the ops named in `names` only (inference-time no-ops).
fn declutter_only(model: &mut TypedModel, names: &[&str]) -> TractResult<()> {
    loop {
        let mut changed = false;
        for id in model.eval_order()? {
            let node = model.node(id);
            if !names.contains(&node.op.name().as_ref()) {
                continue;
            }
            if let Some(patch) = node.op.declutter(model, node)? {
                patch.apply(model)?;
                changed = true;
                break;
            }
        }
        if !changed {
            model.compact()?;
            return Ok(());
        }
    }
}

/// A per-channel multiply or add by a constant right after a convolution (a batch norm)
/// becomes part of the convolution's kernel and bias: one op fewer, and int8 quantizes the
/// folded weights per channel instead of the constant per tensor.
fn channel_affine_into_conv(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    op: &tract_onnx::tract_core::ops::binary::TypedBinOp,
) -> TractResult<Option<TypedModelPatch>> {
    let is_mul = op.0.name() == "Mul";
    if !is_mul && op.0.name() != "Add" {
        return Ok(None);
    }
    let (conv_input, konst) = match (
        model.outlet_fact(node.inputs[0])?.konst.clone(),
        model.outlet_fact(node.inputs[1])?.konst.clone(),
    ) {
        (None, Some(k)) => (node.inputs[0], k),
        (Some(k), None) => (node.inputs[1], k),
        _ => return Ok(None),
    };
    let conv_node = model.node(conv_input.node);
    let Some(conv) = conv_node.op_as::<Conv>() else {
        return Ok(None);
    };
    if conv.q_params.is_some()
        || conv.kernel_fmt != tract_onnx::tract_core::ops::cnn::KernelFormat::OIHW
        || model.outlet_successors(conv_input).len() != 1
        || konst.datum_type() != f32::datum_type()
    {
        return Ok(None);
    }
    let out_fact = model.outlet_fact(conv_input)?;
    let rank = out_fact.rank();
    let format = conv.pool_spec.data_format;
    let c_axis = if format.c_is_last() {
        rank - 1
    } else {
        format.has_n() as usize
    };
    let channels = conv.output_channels();
    // The constant, right-aligned against the output: 1 everywhere but the channel axis.
    let kshape = konst.shape();
    if kshape.len() > rank {
        return Ok(None);
    }
    let offset = rank - kshape.len();
    let per_channel = kshape
        .iter()
        .enumerate()
        .all(|(i, d)| *d == 1 || (i + offset == c_axis && *d == channels));
    if !per_channel {
        return Ok(None);
    }
    let values = konst.to_plain_array_view::<f32>()?;
    let values: Vec<f32> = values.iter().copied().collect();
    let at = |c: usize| {
        if values.len() == 1 {
            values[0]
        } else {
            values[c]
        }
    };
    let (Some(kernel), Some(bias)) = (
        model.outlet_fact(conv_node.inputs[1])?.konst.clone(),
        model.outlet_fact(conv_node.inputs[2])?.konst.clone(),
    ) else {
        return Ok(None);
    };
    if kernel.datum_type() != f32::datum_type() || bias.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let mut kernel = kernel.into_tensor();
    let per_out = kernel.len() / channels;
    let mut bias_values: Vec<f32> = {
        let b = bias.to_plain_array_view::<f32>()?;
        if b.len() == 1 {
            vec![b.iter().copied().next().unwrap_or(0.0); channels]
        } else {
            b.iter().copied().collect()
        }
    };
    if bias_values.len() != channels {
        return Ok(None);
    }
    if is_mul {
        let mut view = kernel.try_as_plain_ram_mut()?;
        let k = view.as_slice_mut::<f32>()?;
        for (i, w) in k.iter_mut().enumerate() {
            *w *= at(i / per_out);
        }
        for (c, b) in bias_values.iter_mut().enumerate() {
            *b *= at(c);
        }
    } else {
        for (c, b) in bias_values.iter_mut().enumerate() {
            *b += at(c);
        }
    }
    let mut patch = TypedModelPatch::default();
    let x = patch.tap_model(model, conv_node.inputs[0])?;
    let kernel = patch.add_const(format!("{}.folded_kernel", node.name), kernel)?;
    let bias = patch.add_const(format!("{}.folded_bias", node.name), tensor1(&bias_values))?;
    let out = patch.wire_node(&node.name, conv.clone(), &[x, kernel, bias])?;
    patch.shunt_outside(model, node.id.into(), out[0])?;
    Ok(Some(patch))
}

/// `x / c` with a constant `c` becomes `x * (1 / c)`: TFLite's int8 kernels have no DIV.
fn div_by_constant(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    op: &tract_onnx::tract_core::ops::binary::TypedBinOp,
) -> TractResult<Option<TypedModelPatch>> {
    if op.0.name() != "Div" {
        return Ok(None);
    }
    let Some(divisor) = model.outlet_fact(node.inputs[1])?.konst.clone() else {
        return Ok(None);
    };
    if divisor.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let mut reciprocal = divisor.into_tensor();
    {
        let mut view = reciprocal.try_as_plain_ram_mut()?;
        for v in view.as_slice_mut::<f32>()? {
            *v = 1.0 / *v;
        }
    }
    let mut patch = TypedModelPatch::default();
    let x = patch.tap_model(model, node.inputs[0])?;
    let r = patch.add_const(format!("{name}.reciprocal"), reciprocal)?;
    let out = patch.wire_node(name, math::mul(), &[x, r])?;
    patch.shunt_outside(model, node.id.into(), out[0])?;
    Ok(Some(patch))
}

/// Gives every outlet a unique label: the writer names TFLite tensors after labels, and the
/// int8 pass finds calibration ranges by those names.
pub fn label_every_outlet(model: &mut TypedModel) -> TractResult<()> {
    let mut seen = std::collections::HashSet::new();
    for node in 0..model.nodes.len() {
        for slot in 0..model.nodes[node].outputs.len() {
            let outlet = OutletId::new(node, slot);
            let mut label = model
                .outlet_label(outlet)
                .map(str::to_owned)
                .unwrap_or_else(|| model.nodes[node].name.clone());
            if !seen.insert(label.clone()) {
                label = format!("{label}#{node}.{slot}");
                seen.insert(label.clone());
            }
            model.set_outlet_label(outlet, label)?;
        }
    }
    Ok(())
}

/// Runs after tract's TFLite rewriter: an axis change on a constant becomes the changed
/// constant. tract leaves uniform constants (weights made by ConstantOfShape) unfolded, and
/// its writer cannot write an axis op whose input is a constant.
pub fn fold_axis_ops_on_constants(model: &mut TypedModel) -> TractResult<()> {
    Rewriter::default()
        .with_rule_for("fold-axis-op-on-const", fold_axis_op)
        .rewrite(&(), model)
}

fn fold_axis_op(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    op: &AxisOp,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(konst) = model.node(node.inputs[0].node).op_as::<Const>() else {
        return Ok(None);
    };
    let mut folded = konst.val().as_ref().clone();
    op.change_tensor(&mut folded, false)?;
    let mut patch = TypedModelPatch::default();
    let wire = patch.add_const(name, folded.into_arc_tensor())?;
    patch.shunt_outside(model, node.id.into(), wire)?;
    Ok(Some(patch))
}

/// ONNX Softmax before opset 13 normalises over all axes from `axis` on: flatten those axes
/// into one, take the softmax over it, and restore the shape.
fn softmax_on_one_axis(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    softmax: &Softmax,
) -> TractResult<Option<TypedModelPatch>> {
    if softmax.axes.len() < 2 {
        return Ok(None);
    }
    let fact = model.outlet_fact(node.inputs[0])?;
    let rank = fact.rank();
    let first = softmax.axes[0];
    let contiguous = softmax
        .axes
        .iter()
        .enumerate()
        .all(|(i, a)| *a == first + i);
    if !contiguous || *softmax.axes.last().unwrap_or(&0) != rank - 1 {
        return Ok(None);
    }
    let from: TVec<TDim> = fact.shape.iter().skip(first).cloned().collect();
    let product = from.iter().product::<TDim>();
    let mut patch = TypedModelPatch::default();
    let mut wire = tvec!(patch.tap_model(model, node.inputs[0])?);
    wire = patch.wire_node(
        format!("{name}.flatten"),
        AxisOp::Reshape(first, from.clone(), tvec!(product.clone())),
        &wire,
    )?;
    wire = patch.wire_node(
        format!("{name}.softmax"),
        Softmax {
            axes: tvec!(first),
            ..softmax.clone()
        },
        &wire,
    )?;
    wire = patch.wire_node(name, AxisOp::Reshape(first, tvec!(product), from), &wire)?;
    patch.shunt_outside(model, node.id.into(), wire[0])?;
    Ok(Some(patch))
}

/// Explicit (ONNX) pool padding, in pad amounts per spatial axis, or `None` when the pool
/// needs none.
fn explicit_pads(
    model: &TypedModel,
    node: &TypedNode,
    spec: &tract_onnx::tract_core::ops::cnn::PoolSpec,
) -> TractResult<Option<Vec<(usize, usize)>>> {
    if spec.padding == PaddingSpec::Valid {
        return Ok(None);
    }
    let fact = model.outlet_fact(node.inputs[0])?;
    let shape = spec.data_format.shape(fact.shape.to_tvec())?;
    let computed = spec.computed_padding(shape.hw_dims());
    let mut pads = vec![(0usize, 0usize); fact.rank()];
    for (padding, axis) in computed.iter().zip(shape.hw_axes()) {
        pads[axis] = (
            padding.pad_before.to_usize()?,
            padding.pad_after.to_usize()?,
        );
    }
    Ok(Some(pads))
}

fn max_pool_padding(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    pool: &MaxPool,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(pads) = explicit_pads(model, node, &pool.pool_spec)? else {
        return Ok(None);
    };
    if pool.with_index_outputs.is_some() {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::default();
    let mut wire = tvec!(patch.tap_model(model, node.inputs[0])?);
    if pads.iter().any(|p| *p != (0, 0)) {
        // The lowest finite value: a window never lies wholly in the padding.
        wire = patch.wire_node(
            format!("{name}.pad"),
            Pad {
                pads,
                mode: PadMode::Constant(tensor0(f32::MIN).into_arc_tensor()),
            },
            &wire,
        )?;
    }
    let mut valid = pool.clone();
    valid.pool_spec.padding = PaddingSpec::Valid;
    wire = patch.wire_node(name, valid, &wire)?;
    patch.shunt_outside(model, node.id.into(), wire[0])?;
    Ok(Some(patch))
}

/// Average pools with explicit padding become zero padding, a valid average pool, and (when
/// padded cells do not count) a constant per-position rescale by kernel size / cells counted.
fn avg_pool_padding(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    pool: &SumPool,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(pads) = explicit_pads(model, node, &pool.pool_spec)? else {
        return Ok(None);
    };
    if !pool.normalize {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::default();
    let mut wire = tvec!(patch.tap_model(model, node.inputs[0])?);
    let padded = pads.iter().any(|p| *p != (0, 0));
    if padded {
        wire = patch.wire_node(
            format!("{name}.pad"),
            Pad {
                pads: pads.clone(),
                mode: PadMode::Constant(tensor0(0f32).into_arc_tensor()),
            },
            &wire,
        )?;
    }
    let mut valid = pool.clone();
    valid.pool_spec.padding = PaddingSpec::Valid;
    valid.count_include_pad = true;
    wire = patch.wire_node(format!("{name}.valid"), valid, &wire)?;
    if padded && !pool.count_include_pad {
        let out_shape = patch
            .outlet_fact(wire[0])?
            .shape
            .as_concrete()
            .map(|s| s.to_vec());
        let Some(out_shape) = out_shape else {
            return Ok(None);
        };
        let in_shape = model
            .outlet_fact(node.inputs[0])?
            .shape
            .as_concrete()
            .map(|s| s.to_vec());
        let Some(in_shape) = in_shape else {
            return Ok(None);
        };
        let scale = exclude_pad_scale(pool, &pads, &in_shape, &out_shape)?;
        let scale = patch.add_const(format!("{name}.count_scale"), scale)?;
        wire = patch.wire_node(name, math::mul(), &[wire[0], scale])?;
    }
    patch.shunt_outside(model, node.id.into(), wire[0])?;
    Ok(Some(patch))
}

/// For each output position of a 2D pool: kernel cells / cells inside the unpadded input.
/// The tensor has the output's rank, with 1 for the batch and channel axes.
fn exclude_pad_scale(
    pool: &SumPool,
    pads: &[(usize, usize)],
    in_shape: &[usize],
    out_shape: &[usize],
) -> TractResult<Tensor> {
    let spec = &pool.pool_spec;
    let axes: Vec<usize> = spec
        .data_format
        .shape(in_shape.to_vec())?
        .hw_axes()
        .collect();
    let strides = spec.strides();
    let kernel = &spec.kernel_shape;
    let mut scale_shape = vec![1usize; out_shape.len()];
    for &a in &axes {
        scale_shape[a] = out_shape[a];
    }
    let counts_per_axis: Vec<Vec<f32>> = axes
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            (0..out_shape[a])
                .map(|o| {
                    let start = (o * strides[i]) as isize - pads[a].0 as isize;
                    (0..kernel[i] as isize)
                        .filter(|k| {
                            let at = start + k;
                            at >= 0 && at < in_shape[a] as isize
                        })
                        .count() as f32
                })
                .collect()
        })
        .collect();
    let cells: f32 = kernel.iter().product::<usize>() as f32;
    let total: usize = scale_shape.iter().product();
    let mut data = Vec::with_capacity(total);
    for flat in 0..total {
        let mut rest = flat;
        let mut counted = 1f32;
        for (dim, size) in scale_shape.iter().enumerate().rev() {
            let ix = rest % size;
            rest /= size;
            if let Some(i) = axes.iter().position(|a| *a == dim) {
                counted *= counts_per_axis[i][ix];
            }
        }
        data.push(cells / counted.max(1.0));
    }
    Tensor::from_shape(&scale_shape, &data)
}

/// A grouped convolution that is not depthwise becomes one convolution per group on a slice
/// of the channels, then a concatenation: TFLite's optimized kernels have no groups.
fn grouped_conv(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    conv: &Conv,
) -> TractResult<Option<TypedModelPatch>> {
    let groups = conv.group;
    if groups == 1 || conv.q_params.is_some() {
        return Ok(None);
    }
    let (ci, co) = (conv.input_channels(), conv.output_channels());
    // Depthwise: one input channel per group, which TFLite's DEPTHWISE_CONV_2D covers.
    if groups == ci {
        return Ok(None);
    }
    if ci % groups != 0 || co % groups != 0 {
        return Ok(None);
    }
    let format = conv.pool_spec.data_format;
    let rank = model.outlet_fact(node.inputs[0])?.rank();
    let c_axis = if format.c_is_last() {
        rank - 1
    } else {
        format.has_n() as usize
    };
    let o_axis = match conv.kernel_fmt {
        tract_onnx::tract_core::ops::cnn::KernelFormat::OIHW => 0,
        _ => return Ok(None),
    };
    let bias_rank = model.outlet_fact(node.inputs[2])?.rank();
    let mut patch = TypedModelPatch::default();
    let taps = patch.taps(model, &node.inputs)?;
    let (ci_g, co_g) = (ci / groups, co / groups);
    let mut outputs = tvec!();
    for g in 0..groups {
        let slice = |axis: usize, size: usize| Slice {
            axis,
            start: TDim::from(g * size),
            end: TDim::from((g + 1) * size),
        };
        let x = patch.wire_node(format!("{name}.g{g}.x"), slice(c_axis, ci_g), &[taps[0]])?[0];
        let k = patch.wire_node(format!("{name}.g{g}.k"), slice(o_axis, co_g), &[taps[1]])?[0];
        let b = if bias_rank == 0 {
            taps[2]
        } else {
            patch.wire_node(format!("{name}.g{g}.b"), slice(0, co_g), &[taps[2]])?[0]
        };
        let mut single = conv.clone();
        single.group = 1;
        single.pool_spec.input_channels = ci_g;
        single.pool_spec.output_channels = co_g;
        outputs.push(patch.wire_node(format!("{name}.g{g}"), single, &[x, k, b])?[0]);
    }
    let out = patch.wire_node(name, TypedConcat::new(c_axis), &outputs)?;
    patch.shunt_outside(model, node.id.into(), out[0])?;
    Ok(Some(patch))
}

/// Local response normalisation across channels (NCHW), from ops TFLite has:
/// `x * exp(-beta * ln(bias + alpha / size * window_sum(x²)))`, the window sum being a 1×1
/// convolution with a banded 0/1 kernel.
fn lrn(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    lrn: &Lrn,
) -> TractResult<Option<TypedModelPatch>> {
    let fact = model.outlet_fact(node.inputs[0])?;
    if fact.rank() != 4 || fact.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let channels = fact.shape[1].to_usize()?;
    let (before, after): (usize, usize) =
        ((lrn.size - 1) / 2, lrn.size.saturating_sub(1).div_ceil(2));
    let mut band = vec![0f32; channels * channels];
    for out in 0..channels {
        let out: usize = out;
        let lo = out.saturating_sub(before);
        let hi = (out + after).min(channels - 1);
        for input in lo..=hi {
            band[out * channels + input] = 1.0;
        }
    }
    let scalar = |v: f32| -> TractResult<Tensor> { Tensor::from_shape(&[1, 1, 1, 1], &[v]) };
    let mut patch = TypedModelPatch::default();
    let x = patch.tap_model(model, node.inputs[0])?;
    let square = patch.wire_node(format!("{name}.square"), math::square(), &[x])?[0];
    let kernel = patch.add_const(
        format!("{name}.band"),
        Tensor::from_shape(&[channels, channels, 1, 1], &band)?,
    )?;
    let bias = patch.add_const(format!("{name}.no_bias"), tensor0(0f32))?;
    let window = Conv {
        pool_spec: tract_onnx::tract_core::ops::cnn::PoolSpec {
            data_format: tract_onnx::tract_core::ops::nn::DataFormat::NCHW,
            kernel_shape: tvec!(1, 1),
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: None,
            input_channels: channels,
            output_channels: channels,
        },
        kernel_fmt: tract_onnx::tract_core::ops::cnn::KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let sum = patch.wire_node(
        format!("{name}.window_sum"),
        window,
        &[square, kernel, bias],
    )?[0];
    let coef = patch.add_const(
        format!("{name}.alpha"),
        scalar(lrn.alpha / lrn.size as f32)?,
    )?;
    let scaled = patch.wire_node(format!("{name}.scaled"), math::mul(), &[sum, coef])?[0];
    let k = patch.add_const(format!("{name}.bias"), scalar(lrn.bias)?)?;
    let base = patch.wire_node(format!("{name}.base"), math::add(), &[scaled, k])?[0];
    let ln = patch.wire_node(format!("{name}.ln"), math::ln(), &[base])?[0];
    let neg_beta = patch.add_const(format!("{name}.neg_beta"), scalar(-lrn.beta)?)?;
    let power = patch.wire_node(format!("{name}.power"), math::mul(), &[ln, neg_beta])?[0];
    let factor = patch.wire_node(format!("{name}.factor"), math::exp(), &[power])?[0];
    let out = patch.wire_node(name, math::mul(), &[x, factor])?;
    patch.shunt_outside(model, node.id.into(), out[0])?;
    Ok(Some(patch))
}
