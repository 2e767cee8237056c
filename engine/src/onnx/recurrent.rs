//! ONNX LSTM, unrolled at load over its sequence length (known then: fixed by the model or
//! by `input_shapes`) into dense layers and elementwise ops. Each step is one dense layer over
//! `[x_t, h]` with the input and recurrence weights side by side, so a step costs one GEMM.

use super::import::{Block, Layout, block};
use super::ops::Cx;
use crate::graph::{Activation, BinaryOp, Op, SliceSpec, UnaryOp, ValueId};
use crate::tensor::{DType, Data};

fn binary(op: BinaryOp) -> Op {
    Op::Binary {
        op,
        activation: Activation::None,
    }
}

/// Element `index` of axis 0 of a rank-3 value, as rank 2.
fn take(index: usize, rank: usize) -> Op {
    let mut spec = SliceSpec {
        begin: vec![0; rank],
        end: vec![0; rank],
        stride: vec![1; rank],
        end_open: vec![true; rank],
        begin_open: vec![true; rank],
        shrink: vec![false; rank],
    };
    spec.begin[0] = index as i64;
    spec.begin_open[0] = false;
    spec.shrink[0] = true;
    Op::StridedSlice(spec)
}

pub(super) fn lstm(c: &mut Cx<'_>) -> Result<(), Block> {
    if c.int("layout", 0) != 0 {
        return block("batch-major layout");
    }
    if c.attr("clip").is_some() || c.int("input_forget", 0) != 0 {
        return block("clip or input_forget");
    }
    if let Some(a) = c.attr("activations") {
        let names: Vec<String> = a
            .strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).to_lowercase())
            .collect();
        if names.chunks(3).any(|g| g != ["sigmoid", "tanh", "tanh"]) {
            return block("activations other than sigmoid, tanh, tanh");
        }
    }
    if c.has(4) {
        return block("per-sequence lengths");
    }
    if c.has(7) {
        return block("peephole weights");
    }
    let directions = match c.string("direction").as_deref().unwrap_or("forward") {
        "forward" => vec![false],
        "reverse" => vec![true],
        "bidirectional" => vec![false, true],
        other => return block(format!("direction {other:?}")),
    };
    let x_entry = c.entry(0)?;
    if x_entry.rank() != 3 {
        return block("an input of rank other than 3");
    }
    let (Some(seq), Some(batch), Some(input)) = (x_entry.dims[0], x_entry.dims[1], x_entry.dims[2])
    else {
        return block(
            "a sequence, batch or input size known only at run time (fix it with input_shapes)",
        );
    };
    if seq > 4096 {
        return block("a sequence longer than 4096 steps");
    }
    let (w, wshape) = c
        .const_input(1)
        .map_or_else(|| block("weights computed at run time"), Ok)?;
    let (r, rshape) = c
        .const_input(2)
        .map_or_else(|| block("recurrence weights computed at run time"), Ok)?;
    let dirs = directions.len();
    let hidden = rshape.get(2).copied().unwrap_or(0);
    if wshape != [dirs, 4 * hidden, input] || rshape != [dirs, 4 * hidden, hidden] || hidden == 0 {
        return block("weights of the wrong shape");
    }
    let bias = if c.has(3) {
        let b = c.const_floats(3, "the bias")?;
        if b.len() != dirs * 8 * hidden {
            return block("a bias of the wrong length");
        }
        b
    } else {
        vec![0.0; dirs * 8 * hidden]
    };
    let (w, r) = (w.to_f32(), r.to_f32());
    let x = c.plain(0)?;
    let initial = |c: &mut Cx<'_>, i: usize| -> Result<Option<ValueId>, Block> {
        if c.has(i) {
            c.plain(i).map(Some)
        } else {
            Ok(None)
        }
    };
    let (h0, c0) = (initial(c, 5)?, initial(c, 6)?);

    let mut ys = Vec::new();
    let mut hs = Vec::new();
    let mut cs = Vec::new();
    for (d, &reverse) in directions.iter().enumerate() {
        let base = c.out(0).to_owned();
        let tag = |what: &str, t: usize| format!("{base}#d{d}.{what}{t}");
        // Weights [4h, input + hidden]: W and R side by side; bias Wb + Rb.
        let k = input + hidden;
        let mut wr = Vec::with_capacity(4 * hidden * k);
        for row in 0..4 * hidden {
            wr.extend_from_slice(&w[(d * 4 * hidden + row) * input..][..input]);
            wr.extend_from_slice(&r[(d * 4 * hidden + row) * hidden..][..hidden]);
        }
        let b: Vec<f32> = (0..4 * hidden)
            .map(|j| bias[d * 8 * hidden + j] + bias[d * 8 * hidden + 4 * hidden + j])
            .collect();
        let wv = c
            .imp
            .constant(&tag("weights", 0), Data::F32(wr), vec![4 * hidden, k])
            .value;
        let bv = c
            .imp
            .constant(&tag("bias", 0), Data::F32(b), vec![4 * hidden])
            .value;
        let state =
            |c: &mut Cx<'_>, given: Option<ValueId>, what: &str| -> Result<ValueId, Block> {
                match given {
                    Some(v) => c.emit_named(
                        &tag(what, 0),
                        take(d, 3),
                        vec![v],
                        DType::F32,
                        Layout::Plain,
                        None,
                    ),
                    None => Ok(c
                        .imp
                        .constant(
                            &tag(what, 0),
                            Data::F32(vec![0.0; batch * hidden]),
                            vec![batch, hidden],
                        )
                        .value),
                }
            };
        let mut h = state(c, h0, "h_init")?;
        let mut cell = state(c, c0, "c_init")?;
        let mut outs = vec![0; seq];
        for step in 0..seq {
            let t = if reverse { seq - 1 - step } else { step };
            let xt = c.emit_named(
                &tag("x", t),
                take(t, 3),
                vec![x],
                DType::F32,
                Layout::Plain,
                None,
            )?;
            let concat = Op::Concat {
                axis: 1,
                activation: Activation::None,
            };
            let xh = c.emit_named(
                &tag("xh", t),
                concat,
                vec![xt, h],
                DType::F32,
                Layout::Plain,
                None,
            )?;
            let fc = Op::FullyConnected {
                activation: Activation::None,
                keep_dims: false,
            };
            let g = c.emit_named(
                &tag("gates", t),
                fc,
                vec![xh, wv, bv],
                DType::F32,
                Layout::Plain,
                None,
            )?;
            let names = [tag("i", t), tag("o", t), tag("f", t), tag("g", t)];
            let outs4: Vec<(&str, DType)> =
                names.iter().map(|n| (n.as_str(), DType::F32)).collect();
            let split = Op::Split {
                axis: 1,
                sizes: vec![hidden; 4],
            };
            let gates = c.imp.emit(split, vec![g], &outs4, Layout::Plain, None)?;
            let act = |c: &mut Cx<'_>, v: ValueId, op: UnaryOp, what: &str| {
                c.emit_named(
                    &tag(what, t),
                    Op::Unary(op),
                    vec![v],
                    DType::F32,
                    Layout::Plain,
                    None,
                )
            };
            let i = act(c, gates[0], UnaryOp::Sigmoid, "si")?;
            let o = act(c, gates[1], UnaryOp::Sigmoid, "so")?;
            let f = act(c, gates[2], UnaryOp::Sigmoid, "sf")?;
            let gg = act(c, gates[3], UnaryOp::Tanh, "tg")?;
            let fc_ = c.emit_named(
                &tag("fc", t),
                binary(BinaryOp::Mul),
                vec![f, cell],
                DType::F32,
                Layout::Plain,
                None,
            )?;
            let ig = c.emit_named(
                &tag("ig", t),
                binary(BinaryOp::Mul),
                vec![i, gg],
                DType::F32,
                Layout::Plain,
                None,
            )?;
            cell = c.emit_named(
                &tag("c", t),
                binary(BinaryOp::Add),
                vec![fc_, ig],
                DType::F32,
                Layout::Plain,
                None,
            )?;
            let tc = act(c, cell, UnaryOp::Tanh, "tc")?;
            h = c.emit_named(
                &tag("h", t),
                binary(BinaryOp::Mul),
                vec![o, tc],
                DType::F32,
                Layout::Plain,
                None,
            )?;
            outs[t] = h;
        }
        // Y for this direction: [seq, 1, batch, hidden].
        let stacked: Vec<ValueId> = outs
            .iter()
            .enumerate()
            .map(|(t, &v)| {
                c.emit_named(
                    &tag("y", t),
                    Op::Unsqueeze(vec![0, 1]),
                    vec![v],
                    DType::F32,
                    Layout::Plain,
                    None,
                )
            })
            .collect::<Result<_, _>>()?;
        let y = if stacked.len() == 1 {
            stacked[0]
        } else {
            let concat = Op::Concat {
                axis: 0,
                activation: Activation::None,
            };
            c.emit_named(
                &tag("ys", 0),
                concat,
                stacked,
                DType::F32,
                Layout::Plain,
                None,
            )?
        };
        ys.push(y);
        hs.push(c.emit_named(
            &tag("hn", 0),
            Op::Unsqueeze(vec![0]),
            vec![h],
            DType::F32,
            Layout::Plain,
            None,
        )?);
        cs.push(c.emit_named(
            &tag("cn", 0),
            Op::Unsqueeze(vec![0]),
            vec![cell],
            DType::F32,
            Layout::Plain,
            None,
        )?);
    }
    for (i, (parts, axis)) in [(ys, 1), (hs, 0), (cs, 0)].into_iter().enumerate() {
        let name = c.out(i).to_owned();
        if name.is_empty() {
            continue;
        }
        let op = if parts.len() == 1 {
            Op::Unary(UnaryOp::Identity)
        } else {
            Op::Concat {
                axis,
                activation: Activation::None,
            }
        };
        c.emit_named(&name, op, parts, DType::F32, Layout::Plain, None)?;
    }
    Ok(())
}
