//! Fuses the op chains tract writes for common activations back into the single TFLite ops
//! that LiteRT has for them:
//!
//! - `ADD(x, 3) → MAXIMUM(0) → MINIMUM(6) → MUL(x) → MUL(1/6)` (ONNX HardSwish) becomes
//!   `HARD_SWISH(x)`;
//! - `MAXIMUM(y, 0)` after an op with a fused-activation slot (convolutions, fully connected,
//!   ADD, SUB, MUL) becomes that op's `RELU`, and `MAXIMUM(0) → MINIMUM(6)` its `RELU6`;
//! - `PAD(x, zeros) → CONV_2D / DEPTHWISE_CONV_2D (VALID)`, where the pads are exactly what
//!   TFLite's SAME padding adds for that convolution (stride 1 with an odd kernel, mostly),
//!   becomes the convolution with SAME padding reading `x`: no padded copy of the tensor.
//!
//! `SUM → MUL(1/n)` (ONNX GlobalAveragePool) stays as it is: LiteRT runs it as `MEAN`
//! correctly, but tract reads a TFLite `MEAN` wrongly (off by 0.036 on ppocr_cls), and the
//! export's self-check runs the written file in tract.
//!
//! Fewer ops run faster, and in int8 every intermediate tensor that disappears is one
//! requantization less (and one tensor's metadata less in the file). A chain is fused only when
//! each intermediate tensor has exactly one reader and is not a graph output.

use tract_tflite::tflite::{
    ActivationFunctionType as Act, BuiltinOperator as Op, BuiltinOptions, Padding,
};

use super::graph::{Graph, Options};

/// Runs the fusions; returns how many chains were fused. `HARD_SWISH` only for a float
/// model: LiteRT's int8 `HARD_SWISH` kernel is slow (ppocr_cls int8 1.72 ms with it, 0.38 ms
/// without), while its int8 ADD, MAXIMUM, MINIMUM and MUL are fast.
pub fn fuse(graph: &mut Graph, with_hard_swish: bool) -> usize {
    let fused = if with_hard_swish {
        hard_swish(graph)
    } else {
        0
    } + activations(graph)
        + same_padding(graph);
    if fused > 0 {
        graph.compact();
    }
    fused
}

/// The single value of a constant float scalar (or all-1-shaped) tensor.
fn scalar(graph: &Graph, tensor: i32) -> Option<f32> {
    let t = graph.tensors.get(usize::try_from(tensor).ok()?)?;
    t.data.as_ref()?;
    match t.f32_values()?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// For a binary op with one constant scalar operand: the other operand and the constant.
fn with_scalar(graph: &Graph, op_index: usize, code: Op) -> Option<(i32, f32)> {
    let op = &graph.operators[op_index];
    if op.code != code || op.inputs.len() != 2 || op.outputs.len() != 1 {
        return None;
    }
    match (scalar(graph, op.inputs[0]), scalar(graph, op.inputs[1])) {
        (None, Some(c)) => Some((op.inputs[0], c)),
        (Some(c), None) => Some((op.inputs[1], c)),
        _ => None,
    }
}

/// The one op that reads `tensor`, when there is exactly one and `tensor` is not a graph
/// output.
fn sole_reader(graph: &Graph, tensor: i32) -> Option<usize> {
    if graph.outputs.contains(&tensor) {
        return None;
    }
    match graph.consumers(tensor).as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

/// No fused activation (arithmetic ops carry one).
fn plain(options: &Options) -> bool {
    match options {
        Options::Arithmetic(_, act) => *act == Act::NONE,
        _ => true,
    }
}

/// Removes the ops at `dead` (indices into `graph.operators`).
fn remove(graph: &mut Graph, mut dead: Vec<usize>) {
    dead.sort_unstable();
    dead.dedup();
    for i in dead.into_iter().rev() {
        graph.operators.remove(i);
    }
}

fn hard_swish(graph: &mut Graph) -> usize {
    let mut fused = 0;
    'search: loop {
        for add in 0..graph.operators.len() {
            let Some((x, 3.0)) = with_scalar(graph, add, Op::ADD) else {
                continue;
            };
            if !plain(&graph.operators[add].options) {
                continue;
            }
            let chain = (|| {
                let max = sole_reader(graph, graph.operators[add].outputs[0])?;
                let (_, lo) = with_scalar(graph, max, Op::MAXIMUM)?;
                let min = sole_reader(graph, graph.operators[max].outputs[0])?;
                let (_, hi) = with_scalar(graph, min, Op::MINIMUM)?;
                if lo != 0.0 || hi != 6.0 {
                    return None;
                }
                let first = sole_reader(graph, graph.operators[min].outputs[0])?;
                let second = sole_reader(graph, graph.operators[first].outputs[0])?;
                let clipped = graph.operators[min].outputs[0];
                let ops = &graph.operators;
                let [a, b] =
                    [first, second].map(|i| ops[i].code == Op::MUL && plain(&ops[i].options));
                if !(a && b) {
                    return None;
                }
                // x * clip(x + 3, 0, 6) / 6, with the division first or last.
                let times_x = |i: usize, other: i32| {
                    let inputs = &graph.operators[i].inputs;
                    inputs.len() == 2 && inputs.contains(&x) && inputs.contains(&other)
                };
                let sixth = |i: usize| with_scalar(graph, i, Op::MUL).map(|(_, c)| c);
                let ok = (times_x(first, clipped)
                    && sixth(second).is_some_and(|c| close(c, 1.0 / 6.0)))
                    || (sixth(first).is_some_and(|c| close(c, 1.0 / 6.0))
                        && times_x(second, graph.operators[first].outputs[0]));
                ok.then_some([max, min, first, second])
            })();
            let Some([max, min, first, second]) = chain else {
                continue;
            };
            let output = graph.operators[second].outputs[0];
            let op = &mut graph.operators[add];
            op.code = Op::HARD_SWISH;
            op.version = 1;
            op.inputs = vec![x];
            op.outputs = vec![output];
            op.options = Options::Empty(BuiltinOptions::HardSwishOptions);
            remove(graph, vec![max, min, first, second]);
            fused += 1;
            continue 'search;
        }
        return fused;
    }
}

/// The fused activation slot of `options`, when the op has one and it is empty.
fn activation_slot(options: &mut Options) -> Option<&mut Act> {
    let slot = match options {
        Options::Conv2D { activation, .. }
        | Options::DepthwiseConv2D { activation, .. }
        | Options::FullyConnected { activation, .. }
        | Options::Arithmetic(_, activation) => activation,
        _ => return None,
    };
    (*slot == Act::NONE).then_some(slot)
}

fn activations(graph: &mut Graph) -> usize {
    let mut fused = 0;
    'search: loop {
        for producer in 0..graph.operators.len() {
            let code = graph.operators[producer].code;
            if !matches!(
                code,
                Op::CONV_2D
                    | Op::DEPTHWISE_CONV_2D
                    | Op::FULLY_CONNECTED
                    | Op::ADD
                    | Op::SUB
                    | Op::MUL
            ) || graph.operators[producer].outputs.len() != 1
                || activation_slot(&mut graph.operators[producer].options).is_none()
            {
                continue;
            }
            let Some(max) = sole_reader(graph, graph.operators[producer].outputs[0]) else {
                continue;
            };
            let Some((_, 0.0)) = with_scalar(graph, max, Op::MAXIMUM) else {
                continue;
            };
            // RELU6 when a MINIMUM(6) follows, else RELU.
            let six = sole_reader(graph, graph.operators[max].outputs[0])
                .filter(|min| with_scalar(graph, *min, Op::MINIMUM).is_some_and(|(_, c)| c == 6.0));
            let (last, act) = match six {
                Some(min) => (min, Act::RELU6),
                None => (max, Act::RELU),
            };
            let output = graph.operators[last].outputs[0];
            let op = &mut graph.operators[producer];
            if let Some(slot) = activation_slot(&mut op.options) {
                *slot = act;
            }
            op.outputs = vec![output];
            let mut dead = vec![max];
            if let Some(min) = six {
                dead.push(min);
            }
            remove(graph, dead);
            fused += 1;
            continue 'search;
        }
        return fused;
    }
}

/// The (before, after) padding TFLite's SAME adds on an axis of `size` for a kernel of `kernel`
/// taps at `stride` and `dilation`.
fn same_pads(size: i32, kernel: i32, stride: i32, dilation: i32) -> Option<(i32, i32)> {
    if size < 1 || kernel < 1 || stride < 1 || dilation < 1 {
        return None;
    }
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + (kernel - 1) * dilation + 1 - size).max(0);
    Some((total / 2, total - total / 2))
}

fn same_padding(graph: &mut Graph) -> usize {
    let mut fused = 0;
    'search: loop {
        for pad in 0..graph.operators.len() {
            let op = &graph.operators[pad];
            if !matches!(op.code, Op::PAD | Op::PADV2) || op.outputs.len() != 1 {
                continue;
            }
            let zero_value = match op.inputs.get(2) {
                Some(&value) => scalar(graph, value) == Some(0.0),
                None => true,
            };
            let Some(conv) = sole_reader(graph, op.outputs[0]) else {
                continue;
            };
            let c = &graph.operators[conv];
            let (Options::Conv2D {
                padding: Padding::VALID,
                stride,
                dilation,
                ..
            }
            | Options::DepthwiseConv2D {
                padding: Padding::VALID,
                stride,
                dilation,
                ..
            }) = c.options
            else {
                continue;
            };
            let (Some(&source), Some(&paddings), Some(&weights)) =
                (op.inputs.first(), op.inputs.get(1), c.inputs.get(1))
            else {
                continue;
            };
            let pads = super::transposes::int32_values(graph, paddings);
            let input = &graph.tensors[source as usize].shape;
            let filter = &graph.tensors[weights as usize].shape;
            // NHWC input; OHWI or 1HWC filter: height and width on axes 1 and 2. The options
            // hold (width, height) pairs.
            let fits = zero_value
                && c.inputs[0] == op.outputs[0]
                && input.len() == 4
                && filter.len() == 4
                && pads.is_some_and(|p| {
                    p.len() == 8
                        && p[..2] == [0, 0]
                        && p[6..] == [0, 0]
                        && same_pads(input[1], filter[1], stride.1, dilation.1)
                            == Some((p[2], p[3]))
                        && same_pads(input[2], filter[2], stride.0, dilation.0)
                            == Some((p[4], p[5]))
                });
            if !fits {
                continue;
            }
            let conv_op = &mut graph.operators[conv];
            conv_op.inputs[0] = source;
            if let Options::Conv2D { padding, .. } | Options::DepthwiseConv2D { padding, .. } =
                &mut conv_op.options
            {
                *padding = Padding::SAME;
            }
            remove(graph, vec![pad]);
            fused += 1;
            continue 'search;
        }
        return fused;
    }
}

#[cfg(test)]
mod tests {
    use super::same_pads;

    #[test]
    fn same_padding_matches_tflite() {
        // Stride 1, odd kernel: symmetric.
        assert_eq!(same_pads(56, 3, 1, 1), Some((1, 1)));
        assert_eq!(same_pads(56, 5, 1, 1), Some((2, 2)));
        // Stride 2 on an even size: the extra pad goes after, so PyTorch's symmetric 1 is
        // not SAME and stays an explicit PAD.
        assert_eq!(same_pads(56, 3, 2, 1), Some((0, 1)));
        assert_eq!(same_pads(57, 3, 2, 1), Some((1, 1)));
        assert_eq!(same_pads(7, 1, 1, 1), Some((0, 0)));
        // Dilation widens the kernel: 5 taps at dilation 2 cover 9.
        assert_eq!(same_pads(5, 5, 1, 2), Some((4, 4)));
        assert_eq!(same_pads(0, 3, 1, 1), None);
        assert_eq!(same_pads(8, 3, 0, 1), None);
    }
}
