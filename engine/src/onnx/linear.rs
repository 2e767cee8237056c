//! ONNX matrix products: MatMul (batched, broadcast, with vector operands as numpy has them)
//! and Gemm. Constant weights become a fully connected op on `[n, k]` weights, permuted and
//! scaled at load; weights computed at run time take the general matrix product.

use super::import::{Block, Layout, block};
use super::nn::{binary, permuted};
use super::ops::Cx;
use crate::graph::{Activation, BinaryOp, Op, ValueId};
use crate::tensor::{DType, Data};

pub(super) fn matmul(c: &mut Cx<'_>) -> Result<(), Block> {
    let a = c.entry(0)?;
    let b = c.entry(1)?;
    if let Some((w, shape)) = c.const_input(1)
        && shape.len() == 2
        && a.rank() >= 2
    {
        let x = c.plain(0)?;
        let wname = c.temp("weights");
        let wt = permuted(c, &wname, (*w).clone(), shape, vec![1, 0])?;
        let op = Op::FullyConnected {
            activation: Activation::None,
            keep_dims: true,
        };
        c.emit(op, vec![x, wt], DType::F32, Layout::Plain)?;
        return Ok(());
    }
    if a.rank() < 2 || b.rank() < 2 {
        return vector_matmul(c, a.rank(), b.rank());
    }
    let (x, y) = (c.plain(0)?, c.plain(1)?);
    c.emit(
        Op::MatMul {
            adj_a: false,
            adj_b: false,
        },
        vec![x, y],
        DType::F32,
        Layout::Plain,
    )?;
    Ok(())
}

/// A matrix product with a vector operand, as numpy has it: a vector `a` is a row, a vector
/// `b` a column, and the axis each adds is dropped from the product.
fn vector_matmul(c: &mut Cx<'_>, rank_a: usize, rank_b: usize) -> Result<(), Block> {
    if rank_a == 0 || rank_b == 0 {
        return block("matrix products of scalars");
    }
    let x = lift_vector(c, 0, rank_a, 0)?;
    let y = lift_vector(c, 1, rank_b, 1)?;
    let product = c.emit_named(
        &c.temp("product"),
        Op::MatMul {
            adj_a: false,
            adj_b: false,
        },
        vec![x, y],
        DType::F32,
        Layout::Plain,
        None,
    )?;
    let rank = rank_a.max(rank_b).max(2);
    let mut dropped = Vec::new();
    if rank_a == 1 {
        dropped.push(rank - 2);
    }
    if rank_b == 1 {
        dropped.push(rank - 1);
    }
    c.emit(
        Op::Squeeze(dropped),
        vec![product],
        DType::F32,
        Layout::Plain,
    )?;
    Ok(())
}

/// Input `i` in plain layout, a vector given a unit axis at `axis`.
fn lift_vector(c: &mut Cx<'_>, i: usize, rank: usize, axis: usize) -> Result<ValueId, Block> {
    let x = c.plain(i)?;
    if rank != 1 {
        return Ok(x);
    }
    let name = c.temp(if i == 0 { "row" } else { "column" });
    let op = Op::Unsqueeze(vec![axis]);
    c.emit_named(&name, op, vec![x], DType::F32, Layout::Plain, None)
}

/// `v * by` under a new name (`v` itself when `by` is 1).
fn scaled(c: &mut Cx<'_>, v: ValueId, by: f32, name: &str) -> Result<ValueId, Block> {
    if by == 1.0 {
        return Ok(v);
    }
    let k = c.constant(&c.temp(name), Data::F32(vec![by]), vec![]);
    let out = c.temp(&format!("{name}_scaled"));
    let op = binary(BinaryOp::Mul);
    c.emit_named(&out, op, vec![v, k], DType::F32, Layout::Plain, None)
}

/// Gemm whose B is computed at run time: a matrix product, then alpha, then the bias.
fn runtime_gemm(
    c: &mut Cx<'_>,
    (alpha, beta): (f32, f32),
    (trans_a, trans_b): (bool, bool),
) -> Result<(), Block> {
    let (a, b) = (c.plain(0)?, c.plain(1)?);
    let product = Op::MatMul {
        adj_a: trans_a,
        adj_b: trans_b,
    };
    if !c.has(2) && alpha == 1.0 {
        c.emit(product, vec![a, b], DType::F32, Layout::Plain)?;
        return Ok(());
    }
    let y = c.emit_named(
        &c.temp("product"),
        product,
        vec![a, b],
        DType::F32,
        Layout::Plain,
        None,
    )?;
    let (y, z) = if c.has(2) {
        let bias = c.plain(2)?;
        (
            scaled(c, y, alpha, "alpha")?,
            scaled(c, bias, beta, "beta")?,
        )
    } else {
        let k = c.constant(&c.temp("alpha"), Data::F32(vec![alpha]), vec![]);
        c.emit(binary(BinaryOp::Mul), vec![y, k], DType::F32, Layout::Plain)?;
        return Ok(());
    };
    c.emit(binary(BinaryOp::Add), vec![y, z], DType::F32, Layout::Plain)?;
    Ok(())
}

pub(super) fn gemm(c: &mut Cx<'_>) -> Result<(), Block> {
    let (alpha, beta) = (c.float("alpha", 1.0), c.float("beta", 1.0));
    let (trans_a, trans_b) = (c.int("transA", 0) != 0, c.int("transB", 0) != 0);
    let Some((w, shape)) = c.const_input(1) else {
        return runtime_gemm(c, (alpha, beta), (trans_a, trans_b));
    };
    if shape.len() != 2 {
        return block("weights of rank other than 2");
    }
    let mut x = c.plain(0)?;
    if trans_a {
        x = c.emit_named(
            &c.temp("a"),
            Op::Transpose(vec![1, 0]),
            vec![x],
            DType::F32,
            Layout::Plain,
            None,
        )?;
    }
    let mut w = w.to_f32();
    if alpha != 1.0 {
        w.iter_mut().for_each(|v| *v *= alpha);
    }
    // Weights as [n, k].
    let wname = c.temp("weights");
    let (n, weights) = if trans_b {
        (
            shape[0],
            c.imp.constant(&wname, Data::F32(w), shape.clone()).value,
        )
    } else {
        (
            shape[1],
            permuted(c, &wname, Data::F32(w), shape.clone(), vec![1, 0])?,
        )
    };
    let mut inputs = vec![x, weights];
    let mut full_bias = None;
    if c.has(2) {
        match c.const_input(2) {
            Some((b, bshape)) if b.len() == n || b.len() == 1 => {
                let mut b = b.to_f32();
                if b.len() == 1 {
                    b = vec![b[0]; n];
                }
                let _ = bshape;
                b.iter_mut().for_each(|v| *v *= beta);
                inputs.push(c.imp.constant(&c.temp("bias"), Data::F32(b), vec![n]).value);
            }
            // A full-matrix constant bias is scaled here, once.
            Some((b, bshape)) if beta != 1.0 => {
                let mut b = b.to_f32();
                b.iter_mut().for_each(|v| *v *= beta);
                let bias = c
                    .imp
                    .constant(&c.temp("bias"), Data::F32(b), bshape.clone());
                full_bias = Some(bias.value);
            }
            _ => full_bias = Some(c.plain(2)?),
        }
    }
    let op = Op::FullyConnected {
        activation: Activation::None,
        keep_dims: false,
    };
    match full_bias {
        None => {
            c.emit(op, inputs, DType::F32, Layout::Plain)?;
        }
        Some(b) => {
            if beta != 1.0 && c.const_input(2).is_none() {
                return block("a scaled full-matrix bias computed at run time");
            }
            let y = c.emit_named(
                &c.temp("product"),
                op,
                inputs,
                DType::F32,
                Layout::Plain,
                None,
            )?;
            c.emit(binary(BinaryOp::Add), vec![y, b], DType::F32, Layout::Plain)?;
        }
    }
    Ok(())
}
