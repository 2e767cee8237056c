//! Removes layout round trips from a TFLite graph. tract's rewriter wraps every NCHW
//! convolution and pool in a TRANSPOSE to NHWC and one back, so a chain like
//! `CONV_2D → TRANSPOSE(to NCHW) → HARD_SWISH → TRANSPOSE(to NHWC) → DEPTHWISE_CONV_2D`
//! is common. When only ops that can follow a layout change sit between a transpose and its
//! inverse, both transposes go and the ops in between work in the outer layout: elementwise
//! ops (their constants permuted), rank-keeping reductions, concatenations, slices and pads
//! (their axes or parameters renumbered), and ShuffleNet's channel shuffle (a reshape that
//! splits one axis, a transpose that swaps the two parts, and a reshape back).

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
            | Op::LOG
            | Op::SQUARE
            | Op::SQRT
            | Op::RSQRT
            | Op::NEG
            | Op::POW
            | Op::SQUARED_DIFFERENCE
            | Op::LEAKY_RELU
            | Op::ELU
            | Op::GELU
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

/// Bytes per element of a constant's type, for the types whose data can be permuted.
fn element_size(dtype: tract_tflite::tflite::TensorType) -> Option<usize> {
    use tract_tflite::tflite::TensorType as T;
    match dtype {
        T::FLOAT32 | T::INT32 => Some(4),
        T::INT64 => Some(8),
        T::FLOAT16 | T::INT16 => Some(2),
        T::INT8 | T::UINT8 | T::BOOL => Some(1),
        _ => None,
    }
}

/// A constant operand that can follow the layout change: a scalar, or a constant of the same
/// rank (one with a single non-1 axis by permuting its shape, others by permuting its data).
fn permutable_constant(graph: &Graph, tensor: i32, rank: usize) -> bool {
    let t = &graph.tensors[tensor as usize];
    let Some(data) = &t.data else {
        return false;
    };
    if t.shape.is_empty() {
        return true;
    }
    if t.shape.len() != rank || t.shape.iter().any(|d| *d < 1) {
        return false;
    }
    if t.shape.iter().filter(|d| **d != 1).count() <= 1 {
        return true;
    }
    let count: usize = t.shape.iter().map(|d| *d as usize).product();
    element_size(t.dtype).is_some_and(|size| count * size == data.len())
}

/// A copy of the constant `tensor` (see [`permutable_constant`]) in the outer layout of a
/// transpose with permutation `perm`: inner axis `a` is outer axis `perm[a]`.
fn outer_constant(graph: &Graph, tensor: i32, perm: &[usize]) -> super::graph::Tensor {
    let inner = &graph.tensors[tensor as usize];
    let mut copy = inner.clone();
    copy.name = format!("{}.outer_layout", inner.name);
    if inner.shape.is_empty() {
        return copy;
    }
    copy.shape = unpermute(&inner.shape, perm);
    let moves_data = inner.shape.iter().filter(|d| **d != 1).count() > 1;
    if let (true, Some(data), Some(size)) = (moves_data, &inner.data, element_size(inner.dtype)) {
        let dims: Vec<usize> = inner.shape.iter().map(|d| (*d).max(1) as usize).collect();
        let outer_dims: Vec<usize> = copy.shape.iter().map(|d| (*d).max(1) as usize).collect();
        let mut outer_strides = vec![1usize; outer_dims.len()];
        for a in (0..outer_dims.len().saturating_sub(1)).rev() {
            outer_strides[a] = outer_strides[a + 1] * outer_dims[a + 1];
        }
        let mut out = vec![0u8; data.len()];
        for (flat, element) in data.chunks_exact(size).enumerate() {
            let (mut rest, mut at) = (flat, 0);
            for a in (0..dims.len()).rev() {
                at += (rest % dims[a]) * outer_strides[perm[a]];
                rest /= dims[a];
            }
            out[at * size..(at + 1) * size].copy_from_slice(element);
        }
        copy.data = Some(out);
    }
    copy
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
                        let id = graph.push(outer_constant(graph, *t, &perm));
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
pub(super) fn int32_values(graph: &Graph, tensor: i32) -> Option<Vec<i32>> {
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

/// How an op inside a region follows the change to the outer layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// Elementwise: its constants are permuted (see [`outer_constant`]).
    Elementwise,
    /// Rank-keeping reduction: its axes are renumbered.
    Reduction,
    /// CONCATENATION: its axis is renumbered.
    Concat,
    /// SLICE: its begin and size vectors are permuted.
    Slice,
    /// PAD and PADV2: the rows of its paddings are permuted (the pad value stays).
    Pad,
}

fn follow(op: &Operator) -> Option<Follow> {
    if layout_blind(op.code) {
        return Some(Follow::Elementwise);
    }
    if keep_dims_reduction(op) {
        return Some(Follow::Reduction);
    }
    match op.code {
        Op::CONCATENATION => Some(Follow::Concat),
        Op::SLICE => Some(Follow::Slice),
        Op::PAD | Op::PADV2 => Some(Follow::Pad),
        _ => None,
    }
}

/// Whether input `slot` of an op that follows as `kind` is a parameter (an int32 constant
/// that describes axes) rather than data, and whether its values suit a rank-`rank` tensor.
fn parameter(graph: &Graph, kind: Follow, slot: usize, tensor: i32, rank: usize) -> Option<bool> {
    let len = |n: usize| {
        int32_values(graph, tensor)
            .filter(|v| v.len() == n)
            .map(|_| true)
    };
    match (kind, slot) {
        (Follow::Reduction, 1) => int32_values(graph, tensor)
            .filter(|axes| axes.iter().all(|a| axis_in(*a, rank)))
            .map(|_| true),
        (Follow::Slice, 1 | 2) => len(rank),
        (Follow::Pad, 1) => len(2 * rank),
        // PADV2's pad value: a scalar constant used as it is.
        (Follow::Pad, 2) => graph.tensors[tensor as usize].data.as_ref().map(|_| true),
        _ => Some(false),
    }
}

/// Whether `axis` (negative counts from the end) names an axis of a rank-`rank` tensor.
fn axis_in(axis: i32, rank: usize) -> bool {
    let rank = rank as i32;
    (-rank..rank).contains(&axis)
}

/// A channel shuffle: a RESHAPE that splits axis `axis` of a rank-r tensor in two, a
/// TRANSPOSE that swaps the two parts, and a RESHAPE back to the first shape. In another
/// layout it is the same three ops on that layout's axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shuffle {
    split: usize,
    transpose: usize,
    merge: usize,
    axis: usize,
}

impl Shuffle {
    /// The shuffle that starts with the RESHAPE op `split`, if it is one.
    fn starting_at(graph: &Graph, split: usize, rank: usize) -> Option<Shuffle> {
        let split_op = &graph.operators[split];
        if split_op.code != Op::RESHAPE || split_op.outputs.len() != 1 {
            return None;
        }
        let shape = &graph.tensors[*split_op.inputs.first()? as usize].shape;
        let parts = &graph.tensors[split_op.outputs[0] as usize].shape;
        if shape.len() != rank || parts.len() != rank + 1 || parts.iter().any(|d| *d < 1) {
            return None;
        }
        let axis = (0..rank).find(|&k| {
            parts[..k] == shape[..k]
                && parts[k] * parts[k + 1] == shape[k]
                && parts[k + 2..] == shape[k + 1..]
        })?;
        let [transpose] = graph.consumers(split_op.outputs[0])[..] else {
            return None;
        };
        let transpose_op = &graph.operators[transpose];
        let swap: Vec<usize> = (0..=rank)
            .map(|i| match i {
                i if i == axis => axis + 1,
                i if i == axis + 1 => axis,
                i => i,
            })
            .collect();
        if transpose_op.code != Op::TRANSPOSE || permutation(graph, transpose_op)? != swap {
            return None;
        }
        let [merge] = graph.consumers(transpose_op.outputs[0])[..] else {
            return None;
        };
        let merge_op = &graph.operators[merge];
        let internal = [split_op.outputs[0], transpose_op.outputs[0]];
        (merge_op.code == Op::RESHAPE
            && merge_op.outputs.len() == 1
            && graph.tensors[merge_op.outputs[0] as usize].shape == *shape
            && !internal.iter().any(|t| graph.outputs.contains(t)))
        .then_some(Shuffle {
            split,
            transpose,
            merge,
            axis,
        })
    }

    /// Rewrites the three ops for the outer layout of `perm`.
    fn to_outer_layout(self, graph: &mut Graph, perm: &[usize]) {
        let outer_axis = perm[self.axis];
        let merge_out = graph.operators[self.merge].outputs[0] as usize;
        let outer = unpermute(&graph.tensors[merge_out].shape, perm);
        let split_out = graph.operators[self.split].outputs[0] as usize;
        let (a, b) = {
            let parts = &graph.tensors[split_out].shape;
            (parts[self.axis], parts[self.axis + 1])
        };
        let with_parts = |first: i32, second: i32| -> Vec<i32> {
            let mut shape = outer[..outer_axis].to_vec();
            shape.extend([first, second]);
            shape.extend(&outer[outer_axis + 1..]);
            shape
        };
        set_reshape_target(graph, self.split, with_parts(a, b));
        graph.tensors[split_out].shape = with_parts(a, b);
        let swap: Vec<i32> = (0..=outer.len())
            .map(|i| match i {
                i if i == outer_axis => outer_axis + 1,
                i if i == outer_axis + 1 => outer_axis,
                i => i,
            } as i32)
            .collect();
        let perm_tensor = graph.operators[self.transpose].inputs[1];
        let mut perm_copy = graph.tensors[perm_tensor as usize].clone();
        perm_copy.name = format!("{}.outer_layout", perm_copy.name);
        perm_copy.dtype = tract_tflite::tflite::TensorType::INT32;
        perm_copy.shape = vec![swap.len() as i32];
        perm_copy.data = Some(swap.iter().flat_map(|v| v.to_le_bytes()).collect());
        graph.operators[self.transpose].inputs[1] = graph.push(perm_copy);
        let transpose_out = graph.operators[self.transpose].outputs[0] as usize;
        graph.tensors[transpose_out].shape = with_parts(b, a);
        set_reshape_target(graph, self.merge, outer.clone());
        graph.tensors[merge_out].shape = outer;
    }
}

/// Points RESHAPE op `op` at `shape`: its options and its shape operand (a new constant).
fn set_reshape_target(graph: &mut Graph, op: usize, shape: Vec<i32>) {
    if let Some(&t) = graph.operators[op].inputs.get(1).filter(|t| **t >= 0) {
        let mut copy = graph.tensors[t as usize].clone();
        copy.name = format!("{}.outer_layout", copy.name);
        copy.dtype = tract_tflite::tflite::TensorType::INT32;
        copy.shape = vec![shape.len() as i32];
        copy.data = Some(shape.iter().flat_map(|v| v.to_le_bytes()).collect());
        graph.operators[op].inputs[1] = graph.push(copy);
    }
    graph.operators[op].options = super::graph::Options::Reshape(Some(shape));
}

/// A region of the graph in the "inner" layout of some TRANSPOSE ops with one permutation
/// (the openings), left only through TRANSPOSE ops with the inverse permutation (the
/// closings), and made of ops that can follow a layout change ([`Follow`], [`Shuffle`]).
/// Squeeze-excite blocks give such regions with several openings: the gate comes back through
/// its own transpose; so do concatenations of branches that each left through a transpose.
struct Region {
    perm: Vec<usize>,
    openings: Vec<usize>,
    closings: Vec<usize>,
    ops: Vec<(usize, Follow)>,
    shuffles: Vec<Shuffle>,
    tensors: std::collections::HashSet<i32>,
}

impl Region {
    fn holds(&self, op: usize) -> bool {
        self.ops.iter().any(|(i, _)| *i == op)
            || self
                .shuffles
                .iter()
                .any(|s| s.split == op || s.transpose == op || s.merge == op)
    }
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
        shuffles: Vec::new(),
        tensors: HashSet::from([graph.operators[seed].outputs[0]]),
    };
    // Forward from region tensors to their readers; backward from a region op's other inputs
    // to where they come from (an opening, or ops that lead to openings).
    let mut queue = vec![graph.operators[seed].outputs[0]];
    let mut back: Vec<i32> = Vec::new();
    let admit =
        |region: &mut Region, c: usize, back: &mut Vec<i32>, queue: &mut Vec<i32>| -> Option<()> {
            let op = &graph.operators[c];
            let kind = follow(op)?;
            if let super::graph::Options::Concatenation { axis, .. } = op.options
                && !axis_in(axis, rank)
            {
                return None;
            }
            if op.outputs.len() != 1 || graph.tensors[op.outputs[0] as usize].shape.len() != rank {
                return None;
            }
            for (slot, &input) in op.inputs.iter().enumerate() {
                if region.tensors.contains(&input) || parameter(graph, kind, slot, input, rank)? {
                    continue;
                }
                if graph.tensors[input as usize].data.is_some() {
                    if kind != Follow::Elementwise || !permutable_constant(graph, input, rank) {
                        return None;
                    }
                } else {
                    back.push(input);
                }
            }
            region.ops.push((c, kind));
            region.tensors.insert(op.outputs[0]);
            queue.push(op.outputs[0]);
            Some(())
        };
    let admit_shuffle = |region: &mut Region, shuffle: Shuffle, back: &mut Vec<i32>| {
        let input = graph.operators[shuffle.split].inputs[0];
        if !region.tensors.contains(&input) {
            back.push(input);
        }
        let output = graph.operators[shuffle.merge].outputs[0];
        region.shuffles.push(shuffle);
        region.tensors.insert(output);
        output
    };
    loop {
        if let Some(t) = queue.pop() {
            if graph.outputs.contains(&t) {
                return None;
            }
            for &c in consumers.get(&t).map(Vec::as_slice).unwrap_or(&[]) {
                if region.holds(c) || region.closings.contains(&c) {
                    continue;
                }
                if is_closing(c) {
                    region.closings.push(c);
                    continue;
                }
                if let Some(shuffle) = Shuffle::starting_at(graph, c, rank) {
                    let output = admit_shuffle(&mut region, shuffle, &mut back);
                    queue.push(output);
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
                continue;
            }
            // A shuffle met from its end: its merge RESHAPE, after its TRANSPOSE and split.
            let shuffle = (graph.operators[p].code == Op::RESHAPE)
                .then(|| {
                    let transpose = *producer.get(graph.operators[p].inputs.first()?)?;
                    let split = *producer.get(graph.operators[transpose].inputs.first()?)?;
                    Shuffle::starting_at(graph, split, rank).filter(|s| s.merge == p)
                })
                .flatten();
            match shuffle {
                Some(shuffle) => {
                    let output = admit_shuffle(&mut region, shuffle, &mut back);
                    queue.push(output);
                }
                None => admit(&mut region, p, &mut back, &mut queue)?,
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
            for &(i, kind) in &region.ops {
                let inputs = graph.operators[i].inputs.clone();
                for (slot, t) in inputs.iter().enumerate() {
                    if replace.contains_key(t) || region.tensors.contains(t) {
                        continue;
                    }
                    let values = int32_values(graph, *t).unwrap_or_default();
                    let new = match (kind, slot) {
                        // Inner axis a is outer axis perm[a].
                        (Follow::Reduction, 1) => Some(
                            values
                                .iter()
                                .map(|a| {
                                    let a = if *a < 0 { *a + perm.len() as i32 } else { *a };
                                    perm[a as usize] as i32
                                })
                                .collect::<Vec<_>>(),
                        ),
                        // Per-axis values move with their axis.
                        (Follow::Slice, 1 | 2) => Some(unpermute(&values, perm)),
                        // One (before, after) row per axis.
                        (Follow::Pad, 1) => {
                            let mut out = vec![0; values.len()];
                            for (a, row) in values.chunks_exact(2).enumerate() {
                                out[2 * perm[a]..2 * perm[a] + 2].copy_from_slice(row);
                            }
                            Some(out)
                        }
                        (Follow::Pad, 2) => None,
                        _ => {
                            let constant = &graph.tensors[*t as usize];
                            if constant.data.is_some() && !constant.shape.is_empty() {
                                graph.operators[i].inputs[slot] =
                                    graph.push(outer_constant(graph, *t, perm));
                            }
                            None
                        }
                    };
                    if let Some(values) = new {
                        let mut copy = graph.tensors[*t as usize].clone();
                        copy.data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
                        copy.name = format!("{}.outer_layout", copy.name);
                        graph.operators[i].inputs[slot] = graph.push(copy);
                    }
                }
                if let super::graph::Options::Concatenation { axis, .. } =
                    &mut graph.operators[i].options
                {
                    let inner = if *axis < 0 {
                        *axis + perm.len() as i32
                    } else {
                        *axis
                    };
                    *axis = perm[inner as usize] as i32;
                }
                let out = graph.operators[i].outputs[0] as usize;
                graph.tensors[out].shape = unpermute(&graph.tensors[out].shape, perm);
            }
            for shuffle in &region.shuffles {
                shuffle.to_outer_layout(graph, perm);
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

#[cfg(test)]
mod tests {
    use tract_tflite::tflite::TensorType;

    use super::*;
    use crate::tflite::graph::Tensor;

    fn constant(shape: &[i32], values: &[f32]) -> Tensor {
        Tensor {
            name: "c".into(),
            shape: shape.to_vec(),
            dtype: TensorType::FLOAT32,
            data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            quant: None,
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.f32_values().unwrap_or_default()
    }

    #[test]
    fn a_constant_with_two_real_axes_moves_its_data_to_the_outer_layout() {
        // Inner NCHW [1, 2, 1, 3] holding c * 3 + w; the opening transpose maps NHWC to NCHW
        // (inner axis a is outer axis perm[a]), so the outer copy is NHWC [1, 1, 3, 2].
        let graph = Graph {
            tensors: vec![constant(&[1, 2, 1, 3], &[0., 1., 2., 3., 4., 5.])],
            operators: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        assert!(permutable_constant(&graph, 0, 4));
        let outer = outer_constant(&graph, 0, &[0, 3, 1, 2]);
        assert_eq!(outer.shape, [1, 1, 3, 2]);
        assert_eq!(values(&outer), [0., 3., 1., 4., 2., 5.]);
        // One real axis: only the shape changes.
        let graph = Graph {
            tensors: vec![constant(&[1, 3, 1, 1], &[7., 8., 9.])],
            ..graph
        };
        let outer = outer_constant(&graph, 0, &[0, 3, 1, 2]);
        assert_eq!(outer.shape, [1, 1, 1, 3]);
        assert_eq!(values(&outer), [7., 8., 9.]);
    }

    #[test]
    fn constants_whose_data_does_not_fit_their_shape_stay_out_of_regions() {
        let mut short = constant(&[1, 2, 1, 3], &[0., 1., 2.]);
        let graph = Graph {
            tensors: vec![short.clone()],
            operators: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        assert!(!permutable_constant(&graph, 0, 4));
        short.dtype = TensorType::STRING;
        let graph = Graph {
            tensors: vec![short],
            ..graph
        };
        assert!(!permutable_constant(&graph, 0, 4));
        assert!(!permutable_constant(&graph, 0, 3), "wrong rank");
    }
}
