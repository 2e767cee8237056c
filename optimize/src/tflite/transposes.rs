//! Removes layout round trips from a TFLite graph. tract's rewriter wraps every NCHW
//! convolution and pool in a TRANSPOSE to NHWC and one back, so a chain like
//! `CONV_2D → TRANSPOSE(to NCHW) → HARD_SWISH → TRANSPOSE(to NHWC) → DEPTHWISE_CONV_2D`
//! is common. When only layout-blind ops sit between a transpose and its inverse, both
//! transposes go and the ops in between work in the outer layout.

use tract_tflite::tflite::BuiltinOperator as Op;

use super::graph::{Graph, Operator};

/// Ops that compute each element from the same element of their inputs, with constants that
/// broadcast (scalars or all-1 shapes with one non-1 axis, which permute without moving data).
fn layout_blind(code: Op) -> bool {
    matches!(
        code,
        Op::HARD_SWISH
            | Op::LOGISTIC
            | Op::TANH
            | Op::RELU
            | Op::RELU6
            | Op::EXP
            | Op::ABS
            | Op::ADD
            | Op::SUB
            | Op::MUL
            | Op::DIV
            | Op::MAXIMUM
            | Op::MINIMUM
    )
}

/// The permutation a TRANSPOSE op applies, when it is a constant.
fn permutation(graph: &Graph, op: &Operator) -> Option<Vec<usize>> {
    let perm = graph.tensors.get(*op.inputs.get(1)? as usize)?;
    let data = perm.data.as_ref()?;
    let values: Vec<i64> = match perm.dtype {
        tract_tflite::tflite::TensorType::INT32 => data
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        tract_tflite::tflite::TensorType::INT64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        _ => return None,
    };
    values.iter().map(|v| usize::try_from(*v).ok()).collect()
}

fn consumers(graph: &Graph, tensor: i32) -> Vec<usize> {
    graph
        .operators
        .iter()
        .enumerate()
        .filter(|(_, op)| op.inputs.contains(&tensor))
        .map(|(i, _)| i)
        .collect()
}

/// `shape` with its axes put back through the inverse of `perm` (out[perm[i]] = shape[i]).
fn unpermute(shape: &[i32], perm: &[usize]) -> Vec<i32> {
    let mut out = vec![0; shape.len()];
    for (i, p) in perm.iter().enumerate() {
        out[*p] = shape[i];
    }
    out
}

/// A constant operand that can follow the layout change by permuting its shape alone.
fn permutable_constant(graph: &Graph, tensor: i32, rank: usize) -> bool {
    let t = &graph.tensors[tensor as usize];
    t.data.is_some()
        && (t.shape.is_empty()
            || (t.shape.len() == rank && t.shape.iter().filter(|d| **d != 1).count() <= 1))
}

/// Removes every transpose pair that only layout-blind ops separate. Returns how many pairs.
pub fn cancel_round_trips(graph: &mut Graph) -> usize {
    let mut removed = 0;
    'search: loop {
        for first in 0..graph.operators.len() {
            let op = &graph.operators[first];
            if op.code != Op::TRANSPOSE {
                continue;
            }
            let Some(perm) = permutation(graph, op) else {
                continue;
            };
            let rank = perm.len();
            let source = op.inputs[0];
            // Walk the single-consumer chain of layout-blind ops.
            let mut chain = Vec::new();
            let mut current = op.outputs[0];
            let closing = loop {
                if graph.outputs.contains(&current) {
                    break None;
                }
                let next = consumers(graph, current);
                let [next] = next[..] else { break None };
                let candidate = &graph.operators[next];
                if candidate.code == Op::TRANSPOSE {
                    let inverse = permutation(graph, candidate)
                        .is_some_and(|q| q.len() == rank && (0..rank).all(|i| perm[q[i]] == i));
                    break inverse.then_some(next);
                }
                let operands_ok = candidate.outputs.len() == 1
                    && layout_blind(candidate.code)
                    && candidate
                        .inputs
                        .iter()
                        .all(|t| *t == current || permutable_constant(graph, *t, rank))
                    && graph.tensors[candidate.outputs[0] as usize].shape.len() == rank;
                if !operands_ok {
                    break None;
                }
                chain.push(next);
                current = candidate.outputs[0];
            };
            let Some(closing) = closing else {
                continue;
            };
            // Rewire: the chain reads the first transpose's input, its tensors and constants
            // take the outer layout, and the closing transpose's readers read the chain's end.
            let chain_input = graph.operators[first].outputs[0];
            for &i in &chain {
                let inputs = graph.operators[i].inputs.clone();
                for (slot, t) in inputs.iter().enumerate() {
                    if *t == chain_input {
                        graph.operators[i].inputs[slot] = source;
                    } else if graph.tensors[*t as usize].data.is_some()
                        && !graph.tensors[*t as usize].shape.is_empty()
                    {
                        // A constant may be shared with other ops: give this one its own copy.
                        let mut copy = graph.tensors[*t as usize].clone();
                        copy.shape = unpermute(&copy.shape, &perm);
                        copy.name = format!("{}.outer_layout", copy.name);
                        let id = graph.push(copy);
                        graph.operators[i].inputs[slot] = id;
                    }
                }
                let out = graph.operators[i].outputs[0] as usize;
                graph.tensors[out].shape = unpermute(&graph.tensors[out].shape, &perm);
            }
            let end = chain
                .last()
                .map_or(source, |i| graph.operators[*i].outputs[0]);
            let closed = graph.operators[closing].outputs[0];
            for op in &mut graph.operators {
                for t in &mut op.inputs {
                    if *t == closed {
                        *t = end;
                    }
                }
            }
            for t in &mut graph.outputs {
                if *t == closed {
                    *t = end;
                }
            }
            let (a, b) = (first.max(closing), first.min(closing));
            graph.operators.remove(a);
            graph.operators.remove(b);
            removed += 1;
            continue 'search;
        }
        break;
    }
    graph.compact();
    removed
}
