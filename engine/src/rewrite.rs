//! Load-time rewrites of a reader's graph into fewer, cheaper float ops: division and
//! subtraction by constants become multiplication and addition; the swish family
//! (`x * sigmoid(x)`, `x * hardsigmoid(x)`, `x * relu6(x + 3) / 6`) becomes one op;
//! per-channel scales and shifts after a convolution or dense layer (batch norms, as ONNX
//! exporters leave them) are folded into its weights and bias; activations are fused into
//! the op before them; transposes that undo each other cancel; dead nodes go.
//!
//! Invariant: every rewrite computes the same function (up to float rounding). Quantized
//! values are never touched: their arithmetic is exact and owned by the int8 kernels.

use crate::graph::{Activation, BinaryOp, Graph, Op, UnaryOp, ValueId};
use crate::tensor::{DType, Data};

pub fn optimize(graph: &mut Graph) {
    constants_to_products(graph);
    swish(graph);
    remove_dead_nodes(graph);
    fold_affine(graph);
    fold_pads(graph);
    fuse_activations(graph);
    cancel_transposes(graph);
    remove_dead_nodes(graph);
}

fn is_float(graph: &Graph, v: ValueId) -> bool {
    graph
        .values
        .get(v)
        .is_some_and(|v| v.dtype == DType::F32 && v.quant.is_none())
}

/// A float constant's contents and shape.
fn const_f32(graph: &Graph, v: ValueId) -> Option<(Vec<f32>, Vec<usize>)> {
    if !is_float(graph, v) {
        return None;
    }
    let data = graph.constant(v)?.as_f32()?.to_vec();
    Some((data, graph.const_shape(v)?))
}

fn scalar(graph: &Graph, v: ValueId) -> Option<f32> {
    let (d, _) = const_f32(graph, v)?;
    (d.len() == 1).then(|| d[0])
}

fn near(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

/// `x / c` to `x * (1 / c)` and `x - c` to `x + (-c)` for float constants `c`.
fn constants_to_products(graph: &mut Graph) {
    for n in 0..graph.nodes.len() {
        let node = &graph.nodes[n];
        let Op::Binary { op, activation } = node.op else {
            continue;
        };
        if !matches!(op, BinaryOp::Div | BinaryOp::Sub) || node.inputs.len() != 2 {
            continue;
        }
        let (x, c) = (node.inputs[0], node.inputs[1]);
        if !is_float(graph, x) || graph.values[x].is_const() {
            continue;
        }
        let Some((data, shape)) = const_f32(graph, c) else {
            continue;
        };
        let (new_op, data): (BinaryOp, Vec<f32>) = match op {
            BinaryOp::Div => (BinaryOp::Mul, data.iter().map(|v| 1.0 / v).collect()),
            _ => (BinaryOp::Add, data.iter().map(|v| -v).collect()),
        };
        let name = format!("{}.folded", graph.values[c].name);
        let k = graph.add_const(name, Data::F32(data), shape);
        let node = &mut graph.nodes[n];
        node.inputs[1] = k;
        node.op = Op::Binary {
            op: new_op,
            activation,
        };
    }
}

/// The node computing `v` when it is a float unary op: (op, input).
fn unary_of(graph: &Graph, producers: &[Option<usize>], v: ValueId) -> Option<(UnaryOp, ValueId)> {
    let node = &graph.nodes[producers[v]?];
    match node.op {
        Op::Unary(u) if is_float(graph, v) => Some((u, *node.inputs.first()?)),
        _ => None,
    }
}

/// The node computing `v` when it is a binary op with no fused activation: (op, a, b).
fn binary_of(
    graph: &Graph,
    producers: &[Option<usize>],
    v: ValueId,
) -> Option<(BinaryOp, ValueId, ValueId)> {
    let node = &graph.nodes[producers[v]?];
    match node.op {
        Op::Binary {
            op,
            activation: Activation::None,
        } if is_float(graph, v) && node.inputs.len() == 2 => {
            Some((op, node.inputs[0], node.inputs[1]))
        }
        _ => None,
    }
}

/// `relu6(x + 3)`: its `x`.
fn relu6_plus_3(graph: &Graph, producers: &[Option<usize>], v: ValueId) -> Option<ValueId> {
    let (u, t) = unary_of(graph, producers, v)?;
    if !matches!(u, UnaryOp::Relu6) && u != UnaryOp::Clamp(0.0, 6.0) {
        return None;
    }
    let (op, a, b) = binary_of(graph, producers, t)?;
    if op != BinaryOp::Add {
        return None;
    }
    match (scalar(graph, a), scalar(graph, b)) {
        (_, Some(k)) if near(k, 3.0) => Some(a),
        (Some(k), _) if near(k, 3.0) => Some(b),
        _ => None,
    }
}

fn swish(graph: &mut Graph) {
    let producers = graph.producers();
    for n in 0..graph.nodes.len() {
        let node = &graph.nodes[n];
        let (
            Op::Binary {
                op: BinaryOp::Mul,
                activation: Activation::None,
            },
            [a, b],
        ) = (&node.op, node.inputs.as_slice())
        else {
            continue;
        };
        let (a, b) = (*a, *b);
        let Some(&y) = node.outputs.first() else {
            continue;
        };
        if !is_float(graph, y) {
            continue;
        }
        let mut found = None;
        for (x, g) in [(a, b), (b, a)] {
            match unary_of(graph, &producers, g) {
                Some((UnaryOp::Sigmoid, i)) if i == x => found = Some((UnaryOp::Silu, x)),
                Some((UnaryOp::HardSigmoid { alpha, beta }, i))
                    if i == x && near(alpha, 1.0 / 6.0) && near(beta, 0.5) =>
                {
                    found = Some((UnaryOp::HardSwish, x))
                }
                _ => {}
            }
            if found.is_some() {
                break;
            }
            // (x * relu6(x + 3)) * (1/6), or relu6(x + 3) * (1/6).
            if scalar(graph, g).is_some_and(|k| near(k, 1.0 / 6.0)) {
                if let Some((BinaryOp::Mul, p, q)) = binary_of(graph, &producers, x) {
                    for (xx, r) in [(p, q), (q, p)] {
                        if relu6_plus_3(graph, &producers, r) == Some(xx) {
                            found = Some((UnaryOp::HardSwish, xx));
                        }
                    }
                } else if let Some(xx) = relu6_plus_3(graph, &producers, x) {
                    found = Some((
                        UnaryOp::HardSigmoid {
                            alpha: 1.0 / 6.0,
                            beta: 0.5,
                        },
                        xx,
                    ));
                }
            }
            if found.is_some() {
                break;
            }
        }
        if let Some((u, x)) = found {
            let node = &mut graph.nodes[n];
            node.op = Op::Unary(u);
            node.inputs = vec![x];
        }
    }
}

/// Folds `conv(x) * s + t` (per output channel, or scalar) into the conv's weights and bias.
fn fold_affine(graph: &mut Graph) {
    loop {
        let readers = graph.reader_counts();
        let producers = graph.producers();
        let mut changed = false;
        for n in 0..graph.nodes.len() {
            let node = &graph.nodes[n];
            let Op::Binary {
                op: op @ (BinaryOp::Mul | BinaryOp::Add),
                activation: Activation::None,
            } = node.op
            else {
                continue;
            };
            let [a, b] = node.inputs[..] else { continue };
            let (v, k) = if graph.values[b].is_const() {
                (a, b)
            } else {
                (b, a)
            };
            let Some(p) = producers[v] else { continue };
            if readers[v] != 1 || graph.outputs.contains(&v) || !is_float(graph, v) {
                continue;
            }
            let channels = match &graph.nodes[p].op {
                Op::Conv2d(c) if c.activation == Activation::None => weights_rows(graph, p),
                Op::FullyConnected {
                    activation: Activation::None,
                    ..
                } => weights_rows(graph, p),
                Op::Depthwise(d) if d.activation == Activation::None => graph.nodes[p]
                    .inputs
                    .get(1)
                    .and_then(|&w| graph.const_shape(w))
                    .and_then(|s| s.last().copied()),
                _ => None,
            };
            let Some(channels) = channels else { continue };
            let Some((values, shape)) = const_f32(graph, k) else {
                continue;
            };
            let per_channel = values.len() == channels && shape.last() == Some(&channels);
            if values.len() != 1 && !per_channel {
                continue;
            }
            // The constant must not broadcast the output to a higher rank.
            if shape.len() > graph.values[v].shape.len() {
                continue;
            }
            let at = |c: usize| {
                if values.len() == 1 {
                    values[0]
                } else {
                    values[c]
                }
            };
            if fold_into(graph, p, op, channels, &at).is_none() {
                continue;
            }
            let y = graph.nodes[n].outputs[0];
            graph.nodes[p].outputs[0] = y;
            graph.nodes.remove(n);
            changed = true;
            break;
        }
        if !changed {
            break;
        }
    }
}

/// A zero pad of height and width only, read only by a convolution without padding of its
/// own, becomes the convolution's explicit padding (its zeros are not written).
fn fold_pads(graph: &mut Graph) {
    use crate::graph::{PadMode, Padding};
    let readers = graph.reader_counts();
    let producers = graph.producers();
    for n in 0..graph.nodes.len() {
        let Some(&x) = graph.nodes[n].inputs.first() else {
            continue;
        };
        let Some(p) = producers[x] else { continue };
        let Op::Pad { pads, value, mode } = &graph.nodes[p].op else {
            continue;
        };
        if *mode != PadMode::Constant
            || readers[x] != 1
            || graph.outputs.contains(&x)
            || pads.len() != 4
        {
            continue;
        }
        if pads[0] != (0, 0) || pads[3] != (0, 0) {
            continue;
        }
        // The value the op pads with: zero, or a quantized input's zero point.
        let zero = match &graph.values[x].quant {
            None => 0.0,
            Some(q) => match q.single() {
                Some((_, z)) => z as f32,
                None => continue,
            },
        };
        if *value != zero {
            continue;
        }
        let explicit = Padding::Explicit([pads[1].0, pads[1].1, pads[2].0, pads[2].1]);
        let slot = match &mut graph.nodes[n].op {
            Op::Conv2d(c) => &mut c.padding,
            Op::Depthwise(d) => &mut d.padding,
            // (Not pools: their padding is skipped, where a pad's zeros are values.)
            _ => continue,
        };
        if *slot != Padding::Valid {
            continue;
        }
        *slot = explicit;
        let source = graph.nodes[p].inputs[0];
        graph.nodes[n].inputs[0] = source;
    }
}

/// Output channels of a conv or dense layer: its weights' rows.
fn weights_rows(graph: &Graph, p: usize) -> Option<usize> {
    let w = *graph.nodes[p].inputs.get(1)?;
    graph.const_shape(w)?.first().copied()
}

/// Scales (Mul) or shifts (Add) the outputs of node `p` by `at(channel)`.
fn fold_into(
    graph: &mut Graph,
    p: usize,
    op: BinaryOp,
    channels: usize,
    at: &dyn Fn(usize) -> f32,
) -> Option<()> {
    let w = *graph.nodes[p].inputs.get(1)?;
    if !is_float(graph, w) {
        return None;
    }
    let bias = graph.nodes[p].inputs.get(2).copied();
    let mut b = match bias {
        Some(b) => const_f32(graph, b)?.0,
        None => vec![0.0; channels],
    };
    if b.len() != channels {
        return None;
    }
    if op == BinaryOp::Mul {
        let (mut wd, ws) = const_f32(graph, w)?;
        let depthwise = matches!(graph.nodes[p].op, Op::Depthwise(_));
        if depthwise {
            for (i, v) in wd.iter_mut().enumerate() {
                *v *= at(i % channels);
            }
        } else {
            let per_row = wd.len() / channels;
            for (i, v) in wd.iter_mut().enumerate() {
                *v *= at(i / per_row);
            }
        }
        let name = format!("{}.scaled", graph.values[w].name);
        let nw = graph.add_const(name, Data::F32(wd), ws);
        graph.nodes[p].inputs[1] = nw;
        b.iter_mut().enumerate().for_each(|(c, v)| *v *= at(c));
    } else {
        b.iter_mut().enumerate().for_each(|(c, v)| *v += at(c));
    }
    let name = format!("{}.bias", graph.values[w].name);
    let nb = graph.add_const(name, Data::F32(b), vec![channels]);
    match graph.nodes[p].inputs.get_mut(2) {
        Some(slot) => *slot = nb,
        None => graph.nodes[p].inputs.push(nb),
    }
    Some(())
}

/// Folds an activation into the op that computes its input, when nothing else reads that
/// op's output: clamps into any op with a fused activation, the others into float ones.
fn fuse_activations(graph: &mut Graph) {
    let readers = graph.reader_counts();
    let producers = graph.producers();
    let mut removed = vec![false; graph.nodes.len()];
    for a in 0..graph.nodes.len() {
        let (act, clamp) = match graph.nodes[a].op {
            Op::Unary(UnaryOp::Relu) => (Activation::Relu, true),
            Op::Unary(UnaryOp::Relu6) => (Activation::Relu6, true),
            Op::Unary(UnaryOp::ReluN1To1) => (Activation::ReluN1To1, true),
            Op::Unary(UnaryOp::Clamp(lo, hi)) => (Activation::Clamp(lo, hi), true),
            Op::Unary(UnaryOp::HardSwish) => (Activation::HardSwish, false),
            Op::Unary(UnaryOp::Sigmoid) => (Activation::Sigmoid, false),
            Op::Unary(UnaryOp::Tanh) => (Activation::Tanh, false),
            Op::Unary(UnaryOp::Silu) => (Activation::Silu, false),
            _ => continue,
        };
        let (Some(&x), Some(&y)) = (
            graph.nodes[a].inputs.first(),
            graph.nodes[a].outputs.first(),
        ) else {
            continue;
        };
        if readers[x] != 1 || graph.outputs.contains(&x) {
            continue;
        }
        let Some(p) = producers[x] else { continue };
        let float = is_float(graph, x) && is_float(graph, y);
        if removed[p] || !(clamp || float) {
            continue;
        }
        let slot = match &mut graph.nodes[p].op {
            Op::Conv2d(c) => &mut c.activation,
            Op::Depthwise(d) => &mut d.activation,
            Op::FullyConnected { activation, .. } => activation,
            Op::Binary { activation, .. } => activation,
            Op::Pool2d(p) if clamp => &mut p.activation,
            _ => continue,
        };
        if *slot != Activation::None {
            continue;
        }
        *slot = act;
        graph.nodes[p].outputs[0] = y;
        removed[a] = true;
    }
    let mut i = 0;
    graph.nodes.retain(|_| {
        let keep = !removed[i];
        i += 1;
        keep
    });
}

/// `transpose(transpose(x, p), q)` as one transpose, and identity transposes dropped (their
/// readers read the input).
fn cancel_transposes(graph: &mut Graph) {
    let producers = graph.producers();
    for n in 0..graph.nodes.len() {
        let Op::Transpose(q) = &graph.nodes[n].op else {
            continue;
        };
        let Some(&x) = graph.nodes[n].inputs.first() else {
            continue;
        };
        let Some(p) = producers[x] else { continue };
        let Op::Transpose(first) = &graph.nodes[p].op else {
            continue;
        };
        if first.len() != q.len() {
            continue;
        }
        let composed: Vec<usize> = q.iter().map(|&i| first[i]).collect();
        let source = graph.nodes[p].inputs[0];
        let node = &mut graph.nodes[n];
        node.op = Op::Transpose(composed);
        node.inputs[0] = source;
    }
    // Identity transposes: readers take the input (unless the output is a model output).
    let mut alias: Vec<(ValueId, ValueId)> = Vec::new();
    for node in &graph.nodes {
        if let Op::Transpose(perm) = &node.op
            && perm.iter().enumerate().all(|(i, p)| i == *p)
            && !graph.outputs.contains(&node.outputs[0])
        {
            alias.push((node.outputs[0], node.inputs[0]));
        }
    }
    for (from, to) in alias {
        for node in &mut graph.nodes {
            for i in &mut node.inputs {
                if *i == from {
                    *i = to;
                }
            }
        }
    }
}

/// Drops nodes whose outputs nobody reads (stateful writes are always kept).
pub fn remove_dead_nodes(graph: &mut Graph) {
    loop {
        let readers = graph.reader_counts();
        let before = graph.nodes.len();
        graph.nodes.retain(|n| {
            matches!(n.op, Op::AssignVariable(_)) || n.outputs.iter().any(|&o| readers[o] > 0)
        });
        if graph.nodes.len() == before {
            break;
        }
    }
}
