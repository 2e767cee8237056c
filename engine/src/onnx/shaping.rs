//! ONNX shape and data-movement operators: constants and shapes, Reshape, Squeeze and
//! Unsqueeze, Transpose, Concat, Split, Slice, Pad and Expand. Shape vectors known at load
//! travel with their values (`known`), so the reshapes exporters compute from `Shape` fold.

use super::import::{Block, Entry, Layout, block, tensor_data, to_first};
use super::ops::Cx;
use crate::graph::{Op, PadMode, SliceSpec};
use crate::tensor::{DType, Data};

pub(super) fn constant(c: &mut Cx<'_>) -> Result<(), Block> {
    let out = c.out(0).to_owned();
    let (data, shape) = if let Some(t) = c.attr("value").and_then(|a| a.t.as_ref()) {
        tensor_data(t)?
    } else if let Some(a) = c.attr("value_float") {
        (Data::F32(vec![a.f]), vec![])
    } else if let Some(a) = c.attr("value_floats") {
        (Data::F32(a.floats.clone()), vec![a.floats.len()])
    } else if let Some(a) = c.attr("value_int") {
        (Data::I64(vec![a.i]), vec![])
    } else if let Some(a) = c.attr("value_ints") {
        (Data::I64(a.ints.clone()), vec![a.ints.len()])
    } else {
        return block("a constant of a kind this engine does not hold (sparse or string)");
    };
    c.constant(&out, data, shape);
    Ok(())
}

pub(super) fn constant_of_shape(c: &mut Cx<'_>) -> Result<(), Block> {
    let value = match c.attr("value").and_then(|a| a.t.as_ref()) {
        Some(t) => tensor_data(t)?.0,
        None => Data::F32(vec![0.0]),
    };
    if c.const_input(0).is_none() {
        // A shape computed from shapes: filled when a plan is made.
        let s = c.entry(0)?;
        let rank = s.dims.first().copied().flatten();
        let rank = rank.map_or_else(|| block("a fill of a shape of unknown rank"), Ok)?;
        let fill = value
            .to_f32()
            .first()
            .copied()
            .map_or_else(|| block("an empty fill value"), Ok)?;
        let shape = c.plain(0)?;
        let name = c.out(0).to_owned();
        c.emit_named(
            &name,
            Op::Fill(f64::from(fill)),
            vec![shape],
            value.dtype(),
            Layout::Plain,
            Some(rank),
        )?;
        if let Some(k) = s.known {
            c.imp.refine_dims(
                &name,
                k.iter()
                    .map(|d| d.and_then(|d| usize::try_from(d).ok()))
                    .collect(),
            );
        }
        return Ok(());
    }
    let shape = c.const_ints(0, "the shape")?;
    let shape: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()
        .map_or_else(|| block("a negative dimension"), Ok)?;
    let count = crate::tensor::element_count(&shape).filter(|n| *n <= super::import::MAX_FOLDED);
    let count = count.map_or_else(|| block("a constant too large to make at load"), Ok)?;
    if value.len() != 1 {
        return block("a fill value of more than one element");
    }
    let data = match value {
        Data::F32(v) => Data::F32(vec![v[0]; count]),
        Data::I64(v) => Data::I64(vec![v[0]; count]),
        Data::I32(v) => Data::I32(vec![v[0]; count]),
        Data::Bool(v) => Data::Bool(vec![v[0]; count]),
        Data::U8(v) => Data::U8(vec![v[0]; count]),
        Data::I8(v) => Data::I8(vec![v[0]; count]),
        Data::I16(v) => Data::I16(vec![v[0]; count]),
    };
    let out = c.out(0).to_owned();
    c.constant(&out, data, shape);
    Ok(())
}

pub(super) fn range(c: &mut Cx<'_>) -> Result<(), Block> {
    let (start, limit, delta) = (c.const_input(0), c.const_input(1), c.const_input(2));
    let (Some((start, _)), Some((limit, _)), Some((delta, _))) = (start, limit, delta) else {
        // Bounds from shapes: computed when a plan is made.
        let (a, b, d) = (c.plain(0)?, c.plain(1)?, c.plain(2)?);
        let dtype = c.dtype(a);
        let name = c.out(0).to_owned();
        c.emit_named(
            &name,
            Op::Range,
            vec![a, b, d],
            dtype,
            Layout::Plain,
            Some(1),
        )?;
        return Ok(());
    };
    let out = c.out(0).to_owned();
    let first = |d: &Data| d.to_f32().first().copied().map(f64::from);
    let (Some(s), Some(l), Some(d)) = (first(&start), first(&limit), first(&delta)) else {
        return block("empty range bounds");
    };
    if d == 0.0 || !s.is_finite() || !l.is_finite() {
        return block("a range with step 0 or unbounded");
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if n > super::import::MAX_FOLDED as f64 {
        return block("a range too long to make at load");
    }
    let n = n as usize;
    let data = match &*start {
        Data::F32(_) => Data::F32((0..n).map(|i| (s + i as f64 * d) as f32).collect()),
        Data::I32(_) => Data::I32((0..n).map(|i| (s + i as f64 * d) as i32).collect()),
        _ => Data::I64((0..n).map(|i| (s + i as f64 * d) as i64).collect()),
    };
    c.constant(&out, data, vec![n]);
    Ok(())
}

pub(super) fn shape(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    let rank = e.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = clamp(c.int("start", 0));
    let end = c.attr("end").map_or(rank as usize, |a| clamp(a.i));
    let out = c.out(0).to_owned();
    let wanted = e.dims.get(start..end.max(start)).unwrap_or_default();
    if let Some(dims) = wanted.iter().copied().collect::<Option<Vec<usize>>>() {
        let n = dims.len();
        c.constant(
            &out,
            Data::I64(dims.iter().map(|d| *d as i64).collect()),
            vec![n],
        );
        return Ok(());
    }
    // Known when a plan is made.
    let perm = (e.layout == Layout::Last).then(|| to_first(e.rank()));
    let full = c.temp("full");
    let s = c.emit_named(
        &full,
        Op::Shape(perm),
        vec![e.value],
        DType::I64,
        Layout::Plain,
        Some(1),
    )?;
    c.imp.refine_dims(&full, vec![Some(e.rank())]);
    let known: Vec<Option<i64>> = wanted.iter().map(|d| d.map(|d| d as i64)).collect();
    if start == 0 && end == rank as usize {
        let e = c.imp.entry(&full)?;
        c.alias(e);
        c.set_known(known);
        return Ok(());
    }
    let spec = SliceSpec {
        begin: vec![start as i64],
        end: vec![end as i64],
        stride: vec![1],
        end_open: vec![false],
        begin_open: vec![false],
        shrink: vec![false],
    };
    c.emit(Op::StridedSlice(spec), vec![s], DType::I64, Layout::Plain)?;
    c.set_known(known);
    Ok(())
}

pub(super) fn reshape(c: &mut Cx<'_>) -> Result<(), Block> {
    let copy_zeros = c.int("allowzero", 0) == 0;
    let x = c.plain(0)?;
    let dtype = c.dtype(x);
    if c.imp.opset < 5 {
        let shape = c.ints("shape").unwrap_or_default();
        c.emit(
            Op::Reshape { shape, copy_zeros },
            vec![x],
            dtype,
            Layout::Plain,
        )?;
        return Ok(());
    }
    if let Some((data, _)) = c.const_input(1) {
        let shape = data
            .to_i64()
            .map_or_else(|| block("a shape that is not integer"), Ok)?;
        c.emit(
            Op::Reshape { shape, copy_zeros },
            vec![x],
            dtype,
            Layout::Plain,
        )?;
        return Ok(());
    }
    // The shape is computed (from the input's shape, known when a plan is made).
    let s = c.entry(1)?;
    let rank = s.dims.first().copied().flatten();
    let rank = rank.map_or_else(|| block("a reshape to a shape of unknown rank"), Ok)?;
    let name = c.out(0).to_owned();
    let op = Op::Reshape {
        shape: Vec::new(),
        copy_zeros,
    };
    c.emit_named(
        &name,
        op,
        vec![x, s.value],
        dtype,
        Layout::Plain,
        Some(rank),
    )?;
    if let Some(target) = s.known.filter(|k| k.len() == rank) {
        let input = c.entry(0)?.dims;
        let mut dims: Vec<Option<usize>> = target
            .iter()
            .enumerate()
            .map(|(i, t)| match *t {
                Some(0) if copy_zeros => input.get(i).copied().flatten(),
                Some(d) if d > 0 => Some(d as usize),
                _ => None,
            })
            .collect();
        // One -1: what the others leave of the input's size.
        let total: Option<usize> = input
            .iter()
            .try_fold(1usize, |a, d| d.and_then(|d| a.checked_mul(d)));
        let inferred: Vec<usize> = (0..rank).filter(|&i| target[i] == Some(-1)).collect();
        if let ([i], Some(total)) = (inferred.as_slice(), total) {
            let rest: Option<usize> = (0..rank)
                .filter(|j| j != i)
                .try_fold(1usize, |a, j| dims[j].map(|d| a * d));
            if let Some(rest) = rest.filter(|r| *r > 0 && total % r == 0) {
                dims[*i] = Some(total / rest);
            }
        }
        c.imp.refine_dims(&name, dims);
    }
    Ok(())
}

pub(super) fn squeeze(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    let axes = match c.axes(13, 1)? {
        Some(a) => a
            .iter()
            .map(|&a| c.axis(a, e.rank()))
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let ones: Option<Vec<usize>> = e
                .dims
                .iter()
                .enumerate()
                .map(|(i, d)| d.map(|d| (i, d)))
                .collect::<Option<Vec<_>>>()
                .map(|v| {
                    v.into_iter()
                        .filter(|(_, d)| *d == 1)
                        .map(|(i, _)| i)
                        .collect()
                });
            ones.map_or_else(
                || block("a squeeze of every unit axis of a shape known only at run time"),
                Ok,
            )?
        }
    };
    let mut axes = axes;
    axes.sort_unstable();
    axes.dedup();
    let x = c.plain(0)?;
    let dtype = c.dtype(x);
    c.emit(Op::Squeeze(axes), vec![x], dtype, Layout::Plain)?;
    if let Some(k) = e.known {
        c.set_known(k);
    }
    Ok(())
}

pub(super) fn unsqueeze(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    let axes = c.axes(13, 1)?.map_or_else(|| block("no axes"), Ok)?;
    let rank = e.rank() + axes.len();
    let mut axes = axes
        .iter()
        .map(|&a| c.axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    axes.sort_unstable();
    axes.dedup();
    let x = c.plain(0)?;
    let dtype = c.dtype(x);
    c.emit(Op::Unsqueeze(axes), vec![x], dtype, Layout::Plain)?;
    if let Some(k) = e.known {
        c.set_known(k);
    }
    Ok(())
}

pub(super) fn transpose(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    let rank = e.rank();
    let perm: Vec<usize> = match c.ints("perm") {
        Some(p) => p
            .iter()
            .map(|&a| c.axis(a, rank))
            .collect::<Result<_, _>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..rank).collect::<Vec<_>>() {
        return block("the permutation is not one");
    }
    // A channels-last value: one transpose from the order it is held in.
    let perm: Vec<usize> = perm.iter().map(|&p| e.value_axis(p)).collect();
    let dtype = c.dtype(e.value);
    if perm.iter().enumerate().all(|(i, p)| i == *p) {
        let dims = c.imp.graph.values[e.value].shape.clone();
        c.alias(Entry {
            value: e.value,
            layout: Layout::Plain,
            dims,
            known: None,
        });
        return Ok(());
    }
    c.emit(Op::Transpose(perm), vec![e.value], dtype, Layout::Plain)?;
    Ok(())
}

pub(super) fn concat(c: &mut Cx<'_>) -> Result<(), Block> {
    let entries: Vec<Entry> = (0..c.node.input.len())
        .filter(|&i| c.has(i))
        .map(|i| c.entry(i))
        .collect::<Result<_, _>>()?;
    let Some(first) = entries.first().cloned() else {
        return block("no inputs");
    };
    let axis = c.axis(c.int("axis", 0), first.rank())?;
    let all_last = entries.iter().any(|e| e.layout == Layout::Last)
        && entries.iter().all(|e| e.rank() == first.rank());
    let layout = if all_last {
        Layout::Last
    } else {
        Layout::Plain
    };
    let values = entries
        .iter()
        .map(|e| c.imp.in_layout(e, layout))
        .collect::<Result<Vec<_>, _>>()?;
    let known: Option<Vec<Option<i64>>> = (first.rank() == 1)
        .then(|| {
            entries
                .iter()
                .map(|e| e.known.clone())
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat())
        })
        .flatten();
    let held = Entry { layout, ..first };
    let axis = held.value_axis(axis);
    let dtype = c.dtype(values[0]);
    let op = Op::Concat {
        axis,
        activation: crate::graph::Activation::None,
    };
    c.emit(op, values, dtype, layout)?;
    if let Some(k) = known {
        c.set_known(k);
    }
    Ok(())
}

pub(super) fn split(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    let axis = c.axis(c.int("axis", 0), e.rank())?;
    let outputs = c.node.output.len();
    let given = if c.imp.opset >= 13 {
        if c.has(1) {
            Some(c.const_ints(1, "split sizes")?)
        } else {
            None
        }
    } else {
        c.ints("split")
    };
    let sizes: Vec<usize> = match given {
        Some(s) => s
            .iter()
            .map(|&v| usize::try_from(v).ok())
            .collect::<Option<_>>()
            .map_or_else(|| block("negative split sizes"), Ok)?,
        None => {
            let d = e.dims[axis].map_or_else(
                || block("an even split of an axis known only at run time"),
                Ok,
            )?;
            let n = outputs.max(1);
            let chunk = d.div_ceil(n);
            (0..n)
                .map(|i| chunk.min(d.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.len() != outputs {
        return block("split sizes do not match the outputs");
    }
    let axis = e.value_axis(axis);
    let dtype = c.dtype(e.value);
    let names: Vec<String> = (0..outputs)
        .map(|i| {
            if c.out(i).is_empty() {
                c.temp(&format!("unused{i}"))
            } else {
                c.out(i).to_owned()
            }
        })
        .collect();
    let outs: Vec<(&str, DType)> = names.iter().map(|n| (n.as_str(), dtype)).collect();
    c.imp.emit(
        Op::Split { axis, sizes },
        vec![e.value],
        &outs,
        e.layout,
        None,
    )?;
    Ok(())
}

pub(super) fn slice(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    let rank = e.rank();
    let (starts, ends, axes, steps) = if c.imp.opset >= 10 {
        let starts = c.const_ints(1, "slice starts")?;
        let ends = c.const_ints(2, "slice ends")?;
        let axes = if c.has(3) {
            Some(c.const_ints(3, "slice axes")?)
        } else {
            None
        };
        let steps = if c.has(4) {
            Some(c.const_ints(4, "slice steps")?)
        } else {
            None
        };
        (starts, ends, axes, steps)
    } else {
        (
            c.ints("starts").unwrap_or_default(),
            c.ints("ends").unwrap_or_default(),
            c.ints("axes"),
            None,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return block("slice parameters of different lengths");
    }
    let mut spec = SliceSpec {
        begin: vec![0; rank],
        end: vec![0; rank],
        stride: vec![1; rank],
        end_open: vec![true; rank],
        begin_open: vec![true; rank],
        shrink: vec![false; rank],
    };
    for i in 0..starts.len() {
        let a = e.value_axis(c.axis(axes[i], rank)?);
        if steps[i] == 0 {
            return block("a slice step of 0");
        }
        spec.begin[a] = starts[i];
        spec.end[a] = ends[i];
        spec.stride[a] = steps[i];
        spec.begin_open[a] = false;
        spec.end_open[a] = false;
    }
    let known = match (&e.known, rank) {
        (Some(k), 1) if spec.stride[0] == 1 => {
            let n = k.len() as i64;
            let norm = |v: i64, open: bool, dflt: i64| {
                if open {
                    dflt
                } else {
                    (if v < 0 { v + n } else { v }).clamp(0, n)
                }
            };
            let (b, f) = (
                norm(spec.begin[0], spec.begin_open[0], 0),
                norm(spec.end[0], spec.end_open[0], n),
            );
            Some(k[b as usize..f.max(b) as usize].to_vec())
        }
        _ => None,
    };
    let dtype = c.dtype(e.value);
    c.emit(Op::StridedSlice(spec), vec![e.value], dtype, e.layout)?;
    if let Some(k) = known {
        c.set_known(k);
    }
    Ok(())
}

pub(super) fn pad(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    let rank = e.rank();
    let mode = match c.string("mode").as_deref().unwrap_or("constant") {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        other => return block(format!("mode {other:?}")),
    };
    let (pads, value) = if c.imp.opset >= 11 {
        let pads = c.const_ints(1, "pads")?;
        let value = if c.has(2) {
            c.const_floats(2, "the pad value")?
                .first()
                .copied()
                .unwrap_or(0.0)
        } else {
            0.0
        };
        (pads, value)
    } else {
        (c.ints("pads").unwrap_or_default(), c.float("value", 0.0))
    };
    let axes: Vec<usize> = if c.has(3) {
        c.const_ints(3, "pad axes")?
            .iter()
            .map(|&a| c.axis(a, rank))
            .collect::<Result<_, _>>()?
    } else {
        (0..rank).collect()
    };
    if pads.len() != 2 * axes.len() {
        return block("pads do not match the rank");
    }
    let mut per_axis = vec![(0usize, 0usize); rank];
    for (i, &a) in axes.iter().enumerate() {
        let (b, f) = (pads[i], pads[i + axes.len()]);
        let (Ok(b), Ok(f)) = (usize::try_from(b), usize::try_from(f)) else {
            return block("negative pads (cropping)");
        };
        per_axis[e.value_axis(a)] = (b, f);
    }
    let dtype = c.dtype(e.value);
    c.emit(
        Op::Pad {
            pads: per_axis,
            value,
            mode,
        },
        vec![e.value],
        dtype,
        e.layout,
    )?;
    Ok(())
}

pub(super) fn expand(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    let s = c.entry(1)?;
    let rank = s.dims.first().copied().flatten();
    let rank = rank.map_or_else(|| block("an expand to a shape of unknown rank"), Ok)?;
    let rank = rank.max(e.rank());
    let x = c.plain(0)?;
    let shape = c.plain(1)?;
    let dtype = c.dtype(x);
    let name = c.out(0).to_owned();
    c.emit_named(
        &name,
        Op::Expand,
        vec![x, shape],
        dtype,
        Layout::Plain,
        Some(rank),
    )?;
    if let Some(target) = s.known {
        let lead = rank - e.rank();
        let tlead = rank - target.len();
        let dims = (0..rank)
            .map(|d| {
                let xd = d.checked_sub(lead).map_or(Some(1), |k| e.dims[k]);
                let td = d
                    .checked_sub(tlead)
                    .map_or(Some(1), |k| target[k].and_then(|t| usize::try_from(t).ok()));
                match (xd, td) {
                    (Some(1), t) => t,
                    (x, Some(1)) => x,
                    (Some(x), Some(t)) if x == t => Some(x),
                    _ => None,
                }
            })
            .collect();
        c.imp.refine_dims(&name, dims);
    }
    Ok(())
}
