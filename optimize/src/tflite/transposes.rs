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
                let next = graph.consumers(current);
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

/// Reductions that keep their rank: their axes follow a layout change by renumbering.
fn keep_dims_reduction(op: &Operator) -> bool {
    matches!(
        op.code,
        Op::SUM | Op::MEAN | Op::REDUCE_MAX | Op::REDUCE_MIN | Op::REDUCE_PROD
    ) && op.options == super::graph::Options::Reducer(true)
}

/// The int32 values of a constant tensor.
fn int32_values(graph: &Graph, tensor: i32) -> Option<Vec<i32>> {
    let t = graph.tensors.get(tensor as usize)?;
    if t.dtype != tract_tflite::tflite::TensorType::INT32 {
        return None;
    }
    let data = t.data.as_ref()?;
    Some(
        data.chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// A region of the graph in the "inner" layout of some TRANSPOSE ops with one permutation
/// (the openings), left only through TRANSPOSE ops with the inverse permutation (the
/// closings), and made of layout-blind ops and rank-keeping reductions. Squeeze-excite blocks
/// give such regions with several openings: the gate comes back through its own transpose.
struct Region {
    perm: Vec<usize>,
    openings: Vec<usize>,
    closings: Vec<usize>,
    ops: Vec<usize>,
    tensors: std::collections::HashSet<i32>,
}

fn grow_region(graph: &Graph, seed: usize) -> Option<Region> {
    use std::collections::{HashMap, HashSet};
    let perm = permutation(graph, &graph.operators[seed])?;
    let rank = perm.len();
    let mut producer: HashMap<i32, usize> = HashMap::new();
    let mut consumers: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, op) in graph.operators.iter().enumerate() {
        for t in &op.outputs {
            producer.insert(*t, i);
        }
        for t in &op.inputs {
            consumers.entry(*t).or_default().push(i);
        }
    }
    let is_opening = |i: usize| {
        graph.operators[i].code == Op::TRANSPOSE
            && permutation(graph, &graph.operators[i]).as_deref() == Some(&perm[..])
    };
    let is_closing = |i: usize| {
        graph.operators[i].code == Op::TRANSPOSE
            && permutation(graph, &graph.operators[i])
                .is_some_and(|q| q.len() == rank && (0..rank).all(|k| perm[q[k]] == k))
    };
    let mut region = Region {
        perm: perm.clone(),
        openings: vec![seed],
        closings: Vec::new(),
        ops: Vec::new(),
        tensors: HashSet::from([graph.operators[seed].outputs[0]]),
    };
    // Forward from region tensors to their readers; backward from a region op's other inputs
    // to where they come from (an opening, or layout-blind ops that lead to openings).
    let mut queue = vec![graph.operators[seed].outputs[0]];
    let mut back: Vec<i32> = Vec::new();
    let admit =
        |region: &mut Region, c: usize, back: &mut Vec<i32>, queue: &mut Vec<i32>| -> Option<()> {
            let op = &graph.operators[c];
            let reduction = keep_dims_reduction(op);
            if !(layout_blind(op.code) || reduction) || op.outputs.len() != 1 {
                return None;
            }
            if graph.tensors[op.outputs[0] as usize].shape.len() != rank {
                return None;
            }
            for (slot, &input) in op.inputs.iter().enumerate() {
                if region.tensors.contains(&input) {
                    continue;
                }
                if reduction && slot == 1 {
                    int32_values(graph, input)?;
                } else if graph.tensors[input as usize].data.is_some() {
                    if !permutable_constant(graph, input, rank) {
                        return None;
                    }
                } else {
                    back.push(input);
                }
            }
            region.ops.push(c);
            region.tensors.insert(op.outputs[0]);
            queue.push(op.outputs[0]);
            Some(())
        };
    loop {
        if let Some(t) = queue.pop() {
            if graph.outputs.contains(&t) {
                return None;
            }
            for &c in consumers.get(&t).map(Vec::as_slice).unwrap_or(&[]) {
                if region.ops.contains(&c) || region.closings.contains(&c) {
                    continue;
                }
                if is_closing(c) {
                    region.closings.push(c);
                    continue;
                }
                admit(&mut region, c, &mut back, &mut queue)?;
            }
        } else if let Some(t) = back.pop() {
            if region.tensors.contains(&t) {
                continue;
            }
            let p = *producer.get(&t)?;
            if is_opening(p) {
                region.openings.push(p);
                region.tensors.insert(t);
                queue.push(t);
            } else {
                admit(&mut region, p, &mut back, &mut queue)?;
            }
        } else {
            break;
        }
    }
    Some(region)
}

/// Removes every region's openings and closings (see [`Region`]); the region's ops then work
/// in the outer layout. Returns how many regions.
pub fn remove_layout_regions(graph: &mut Graph) -> usize {
    use std::collections::HashMap;
    let mut removed = 0;
    'search: loop {
        for seed in 0..graph.operators.len() {
            if graph.operators[seed].code != Op::TRANSPOSE {
                continue;
            }
            let Some(region) = grow_region(graph, seed) else {
                continue;
            };
            if region.closings.is_empty() {
                continue;
            }
            let perm = &region.perm;
            // Readers of an opening's output read its input; readers of a closing's output
            // read what the closing read (then in the outer layout).
            let mut replace: HashMap<i32, i32> = HashMap::new();
            for &o in &region.openings {
                let op = &graph.operators[o];
                replace.insert(op.outputs[0], op.inputs[0]);
            }
            for &c in &region.closings {
                let op = &graph.operators[c];
                let source = *replace.get(&op.inputs[0]).unwrap_or(&op.inputs[0]);
                replace.insert(op.outputs[0], source);
            }
            for &i in &region.ops {
                let inputs = graph.operators[i].inputs.clone();
                let reduction = keep_dims_reduction(&graph.operators[i]);
                for (slot, t) in inputs.iter().enumerate() {
                    if let Some(r) = replace.get(t) {
                        graph.operators[i].inputs[slot] = *r;
                    } else if reduction && slot == 1 {
                        // Inner axis a is outer axis perm[a].
                        let axes = int32_values(graph, *t).unwrap_or_default();
                        let mut copy = graph.tensors[*t as usize].clone();
                        copy.data = Some(
                            axes.iter()
                                .flat_map(|a| {
                                    let a = if *a < 0 { *a + perm.len() as i32 } else { *a };
                                    (perm[a as usize] as i32).to_le_bytes()
                                })
                                .collect(),
                        );
                        copy.name = format!("{}.outer_layout", copy.name);
                        graph.operators[i].inputs[slot] = graph.push(copy);
                    } else if !region.tensors.contains(t)
                        && graph.tensors[*t as usize].data.is_some()
                        && !graph.tensors[*t as usize].shape.is_empty()
                    {
                        let mut copy = graph.tensors[*t as usize].clone();
                        copy.shape = unpermute(&copy.shape, perm);
                        copy.name = format!("{}.outer_layout", copy.name);
                        graph.operators[i].inputs[slot] = graph.push(copy);
                    }
                }
                let out = graph.operators[i].outputs[0] as usize;
                graph.tensors[out].shape = unpermute(&graph.tensors[out].shape, perm);
            }
            for op in &mut graph.operators {
                for t in &mut op.inputs {
                    if let Some(r) = replace.get(t) {
                        *t = *r;
                    }
                }
            }
            for t in &mut graph.outputs {
                if let Some(r) = replace.get(t) {
                    *t = *r;
                }
            }
            let mut gone: Vec<usize> = region
                .openings
                .iter()
                .chain(&region.closings)
                .copied()
                .collect();
            gone.sort_unstable();
            gone.dedup();
            for i in gone.into_iter().rev() {
                graph.operators.remove(i);
            }
            removed += 1;
            continue 'search;
        }
        break;
    }
    graph.compact();
    removed
}
