//! Work done once per model, at load: weights of convolutions and dense layers packed for the
//! GEMM kernels (f32, or int8 for quantized and hybrid ops), depthwise weights laid out tap
//! by tap, biases widened. Plans for any input shape share these.

use std::sync::Arc;

use crate::graph::{Graph, Node, Op, Quant};
use crate::kernels::{PackedF32, PackedI8};
use crate::tensor::{DType, Data};

/// Packed weights of a convolution (groups of `[k, n]`), a dense layer (one group) or a
/// transposed convolution.
pub struct ConvWeightsF32 {
    pub groups: Vec<PackedF32>,
    pub bias: Vec<f32>,
    /// (kh, kw, input channels per group)
    pub kernel: (usize, usize, usize),
    pub out_channels: usize,
}

/// Int8 weights packed for u8 x i8 products; used by quantized ops (int8 in, int8 out) and
/// by hybrid ops (f32 in and out, int8 weights).
pub struct ConvWeightsI8 {
    pub groups: Vec<PackedI8>,
    /// Quantized ops with one group, on CPUs with int8 dot products: the weights packed
    /// for the fused product-and-requantize kernel.
    pub fused: Option<crate::kernels::QPacked>,
    /// Per output channel: the weight scale.
    pub scales: Vec<f32>,
    /// Per output channel: int32 bias (quantized ops) ...
    pub bias_i32: Vec<i32>,
    /// ... or float bias (hybrid ops).
    pub bias_f32: Vec<f32>,
    pub kernel: (usize, usize, usize),
    pub out_channels: usize,
}

pub struct DepthwiseWeights {
    /// `[kh * kw, channels]`, tap-major.
    pub f32: Vec<f32>,
    /// The same, as integers, for quantized ops (empty otherwise).
    pub i8: Vec<i16>,
    pub bias_f32: Vec<f32>,
    pub bias_i32: Vec<i32>,
    pub scales: Vec<f32>,
    pub kernel: (usize, usize),
    pub channels: usize,
}

pub enum Prepared {
    ConvF32(ConvWeightsF32),
    ConvI8(ConvWeightsI8),
    Depthwise(DepthwiseWeights),
}

fn per_channel(q: &Quant, n: usize) -> Result<Vec<f32>, String> {
    match q.scale.len() {
        1 => Ok(vec![q.scale[0]; n]),
        len if len == n => Ok(q.scale.clone()),
        len => Err(format!("{len} weight scales for {n} output channels")),
    }
}

fn zero_points(q: &Quant, n: usize) -> Vec<i32> {
    match q.zero_point.len() {
        0 => vec![0; n],
        1 => vec![q.zero_point[0]; n],
        _ => q.zero_point.clone(),
    }
}

/// Prepares every node that has weights; `None` for the others.
pub fn prepare(graph: &Graph) -> Result<Vec<Option<Arc<Prepared>>>, String> {
    graph
        .nodes
        .iter()
        .map(|node| {
            prepare_node(graph, node)
                .map(|p| p.map(Arc::new))
                .map_err(|e| format!("{}: {e}", node.origin))
        })
        .collect()
}

fn prepare_node(graph: &Graph, node: &Node) -> Result<Option<Prepared>, String> {
    let weight_input = match node.op {
        Op::Conv2d(_) | Op::Depthwise(_) | Op::FullyConnected { .. } | Op::TransposeConv(_) => 1,
        _ => return Ok(None),
    };
    let Some(&w) = node.inputs.get(weight_input) else {
        return Err("weights are missing".into());
    };
    let Some(weights) = graph.constant(w) else {
        return Err("weights computed at run time are not supported".into());
    };
    let w_shape = graph.const_shape(w).ok_or("weights without a shape")?;
    let w_quant = graph.values[w].quant.clone();
    let x = node
        .inputs
        .first()
        .map(|&x| &graph.values[x])
        .ok_or("no input")?;
    let bias = node
        .inputs
        .get(weight_input + 1)
        .and_then(|&b| graph.constant(b).cloned());
    let bias_quant = node
        .inputs
        .get(weight_input + 1)
        .and_then(|&b| graph.values[b].quant.clone());
    let quantized_input = x.quant.is_some() && matches!(x.dtype, DType::I8 | DType::U8);
    let int_weights = matches!(weights.dtype(), DType::I8 | DType::U8) && w_quant.is_some();

    // (kh, kw, in per group, out, groups) and the layout of the weight constant.
    let (kernel, out_channels, groups) = match &node.op {
        Op::Conv2d(c) => {
            let [o, kh, kw, i] = w_shape[..] else {
                return Err("conv weights must have rank 4".into());
            };
            ((kh, kw, i), o, c.groups)
        }
        Op::FullyConnected { .. } => {
            let [o, i] = w_shape[..] else {
                return Err("dense weights must have rank 2".into());
            };
            ((1, 1, i), o, 1)
        }
        Op::TransposeConv(_) => {
            let [o, kh, kw, i] = w_shape[..] else {
                return Err("transpose conv weights must have rank 4".into());
            };
            ((kh, kw, i), o, 1)
        }
        Op::Depthwise(_) => {
            let [_, kh, kw, c] = w_shape[..] else {
                return Err("depthwise weights must have rank 4".into());
            };
            let taps = kh * kw;
            let (f32w, i8w, scales) = match (&w_quant, int_weights) {
                (Some(q), true) => {
                    let zp = zero_points(q, c);
                    let raw = weights.to_i64().ok_or("integer weights expected")?;
                    let i8w: Vec<i16> = raw
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (*v - i64::from(zp[i % c])) as i16)
                        .collect();
                    let scales = per_channel(q, c)?;
                    let f32w = i8w
                        .iter()
                        .enumerate()
                        .map(|(i, v)| f32::from(*v) * scales[i % c])
                        .collect();
                    (f32w, i8w, scales)
                }
                _ => (weights.to_f32(), Vec::new(), Vec::new()),
            };
            if f32w.len() != taps * c {
                return Err("depthwise weights do not match their shape".into());
            }
            let (bias_f32, bias_i32) = bias_values(bias.as_deref(), bias_quant.as_ref(), c)?;
            return Ok(Some(Prepared::Depthwise(DepthwiseWeights {
                f32: f32w,
                i8: i8w,
                bias_f32,
                bias_i32,
                scales,
                kernel: (kh, kw),
                channels: c,
            })));
        }
        _ => return Ok(None),
    };
    if groups == 0 || out_channels % groups != 0 {
        return Err("output channels are not a multiple of the groups".into());
    }
    let (kh, kw, cin_g) = kernel;
    let k = kh * kw * cin_g;
    let n_g = out_channels / groups;
    let (bias_f32, bias_i32) = bias_values(bias.as_deref(), bias_quant.as_ref(), out_channels)?;
    let transpose = matches!(node.op, Op::TransposeConv(_));
    if int_weights && (quantized_input || x.dtype == DType::F32) && !transpose {
        let q = w_quant.as_ref().ok_or("weights without quantization")?;
        let scales = per_channel(q, out_channels)?;
        let zp = zero_points(q, out_channels);
        let raw = weights.to_i64().ok_or("integer weights expected")?;
        // Weights minus their zero point, as i8 (TFLite's int8 weights are symmetric).
        let centred: Vec<i8> = raw
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = i / k.max(1);
                let z = i64::from(zp.get(c).copied().unwrap_or(0));
                (*v - z).clamp(-128, 127) as i8
            })
            .collect();
        let fused = if quantized_input && groups == 1 && crate::kernels::QPacked::available() {
            Some(crate::kernels::QPacked::pack(&centred, k, n_g, 1, k)?)
        } else {
            None
        };
        let groups = (0..groups)
            .map(|g| PackedI8::pack(&centred[g * n_g * k..], k, n_g, 1, k))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(Prepared::ConvI8(ConvWeightsI8 {
            groups,
            fused,
            scales,
            bias_i32,
            bias_f32,
            kernel,
            out_channels,
        })));
    }
    let wf: Vec<f32> = match (&w_quant, int_weights) {
        (Some(q), true) => crate::quant::dequantize_const(weights, &w_shape, q),
        _ => weights.to_f32(),
    };
    if wf.len() != out_channels * k {
        return Err("weights do not match their shape".into());
    }
    let groups = if transpose {
        // Transposed convolution scatters: out[pixel + tap, o] += x[pixel, i] * w[o, tap, i].
        // Pack as [i, (tap, o)] so one product gives every tap's contribution.
        let taps = kh * kw;
        let mut t = vec![0.0f32; cin_g * taps * out_channels];
        for o in 0..out_channels {
            for tap in 0..taps {
                for i in 0..cin_g {
                    t[i * taps * out_channels + tap * out_channels + o] =
                        wf[(o * taps + tap) * cin_g + i];
                }
            }
        }
        vec![PackedF32::pack(
            &t,
            cin_g,
            taps * out_channels,
            taps * out_channels,
            1,
        )?]
    } else {
        (0..groups)
            .map(|g| PackedF32::pack(&wf[g * n_g * k..], k, n_g, 1, k))
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(Some(Prepared::ConvF32(ConvWeightsF32 {
        groups,
        bias: bias_f32,
        kernel,
        out_channels,
    })))
}

/// A bias as floats and (for int32 biases) as integers; zeros when absent.
fn bias_values(
    bias: Option<&Data>,
    q: Option<&Quant>,
    n: usize,
) -> Result<(Vec<f32>, Vec<i32>), String> {
    match bias {
        None => Ok((vec![0.0; n], vec![0; n])),
        Some(b) if b.len() != n => Err(format!("a bias of {} for {n} channels", b.len())),
        Some(Data::F32(v)) => Ok((v.clone(), vec![0; n])),
        Some(Data::I32(v)) => {
            let f = match q {
                Some(q) => crate::quant::dequantize_const(&Data::I32(v.clone()), &[n], q),
                None => v.iter().map(|x| *x as f32).collect(),
            };
            Ok((f, v.clone()))
        }
        Some(other) => Ok((other.to_f32(), vec![0; n])),
    }
}
