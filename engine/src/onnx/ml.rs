//! The `ai.onnx.ml` operators scikit-learn's exporters (skl2onnx, onnxmltools) write for
//! linear models: LinearClassifier, LinearRegressor, Normalizer, Scaler, and ZipMap, which is
//! served as the probability tensor it wraps (a client gets `[batch, classes]` floats in
//! class order rather than a list of maps).

use super::import::{Block, Layout, block};
use super::ops::Cx;
use crate::graph::{Activation, BinaryOp, Op, ReduceKind, UnaryOp};
use crate::tensor::{DType, Data};

fn binary(op: BinaryOp) -> Op {
    Op::Binary {
        op,
        activation: Activation::None,
    }
}

pub(super) fn translate(c: &mut Cx<'_>) -> Result<(), Block> {
    if c.node.domain != "ai.onnx.ml" {
        return block("an operator of a domain this engine does not run");
    }
    match c.node.op_type.as_str() {
        "ZipMap" => {
            let e = c.entry(0)?;
            c.alias(e);
            Ok(())
        }
        "LinearClassifier" => linear_classifier(c),
        "LinearRegressor" => linear_regressor(c),
        "Normalizer" => normalizer(c),
        "Scaler" => scaler(c),
        _ => block("not supported by this engine"),
    }
}

/// `x · Wᵀ + b` for a model with `rows` outputs of `features` inputs, into `name`.
fn dense(
    c: &mut Cx<'_>,
    name: &str,
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    rows: usize,
) -> Result<crate::graph::ValueId, Block> {
    if rows == 0 || coefficients.is_empty() || !coefficients.len().is_multiple_of(rows) {
        return block("coefficients do not match the classes or targets");
    }
    let features = coefficients.len() / rows;
    let intercepts = match intercepts.len() {
        0 => vec![0.0; rows],
        n if n == rows => intercepts,
        _ => return block("intercepts do not match the classes or targets"),
    };
    let e = c.entry(0)?;
    if e.rank() != 2 || e.dims[1].is_some_and(|f| f != features) {
        return block(format!("an input that is not [batch, {features}]"));
    }
    let x = c.plain(0)?;
    let x = if c.dtype(x) == DType::F32 {
        x
    } else {
        c.emit_named(
            &c.temp("float"),
            Op::Cast,
            vec![x],
            DType::F32,
            Layout::Plain,
            None,
        )?
    };
    let w = c
        .imp
        .constant(
            &c.temp("weights"),
            Data::F32(coefficients),
            vec![rows, features],
        )
        .value;
    let b = c
        .imp
        .constant(&c.temp("bias"), Data::F32(intercepts), vec![rows])
        .value;
    let op = Op::FullyConnected {
        activation: Activation::None,
        keep_dims: false,
    };
    c.emit_named(name, op, vec![x, w, b], DType::F32, Layout::Plain, None)
}

fn floats(c: &Cx<'_>, name: &str) -> Vec<f32> {
    c.attr(name).map(|a| a.floats.clone()).unwrap_or_default()
}

fn linear_classifier(c: &mut Cx<'_>) -> Result<(), Block> {
    if c.attr("classlabels_strings")
        .is_some_and(|a| !a.strings.is_empty())
        && !c.out(0).is_empty()
    {
        return block("string class labels (the label output would be strings)");
    }
    let labels: Vec<i64> = c.ints("classlabels_ints").unwrap_or_default();
    let classes = labels
        .len()
        .max(c.attr("classlabels_strings").map_or(0, |a| a.strings.len()));
    let coefficients = floats(c, "coefficients");
    let intercepts = floats(c, "intercepts");
    if classes == 0 {
        return block("no class labels");
    }
    if coefficients.len() / classes.max(1) * classes != coefficients.len()
        || classes == 2 && intercepts.len() == 1
    {
        return block("a binary classifier with one set of coefficients");
    }
    let scores_name = c.temp("scores");
    let scores = dense(c, &scores_name, coefficients, intercepts, classes)?;
    let post = c.string("post_transform").unwrap_or_else(|| "NONE".into());
    let probabilities = c.out(1).to_owned();
    let transformed = match post.as_str() {
        "NONE" => Op::Unary(UnaryOp::Identity),
        "SOFTMAX" => Op::Softmax { axis: 1, beta: 1.0 },
        "LOGISTIC" => Op::Unary(UnaryOp::Sigmoid),
        other => return block(format!("post_transform {other:?}")),
    };
    if !probabilities.is_empty() {
        c.emit_named(
            &probabilities,
            transformed,
            vec![scores],
            DType::F32,
            Layout::Plain,
            None,
        )?;
    }
    let label = c.out(0).to_owned();
    if !label.is_empty() {
        let best = c.emit_named(
            &c.temp("best"),
            Op::ArgMax {
                axis: 1,
                keep_dims: false,
            },
            vec![scores],
            DType::I64,
            Layout::Plain,
            None,
        )?;
        let table = c
            .imp
            .constant(&c.temp("labels"), Data::I64(labels), vec![classes])
            .value;
        c.emit_named(
            &label,
            Op::Gather { axis: 0 },
            vec![table, best],
            DType::I64,
            Layout::Plain,
            None,
        )?;
    }
    Ok(())
}

fn linear_regressor(c: &mut Cx<'_>) -> Result<(), Block> {
    if c.string("post_transform").is_some_and(|p| p != "NONE") {
        return block("a post_transform other than NONE");
    }
    let targets = usize::try_from(c.int("targets", 1)).unwrap_or(0);
    let out = c.out(0).to_owned();
    dense(
        c,
        &out,
        floats(c, "coefficients"),
        floats(c, "intercepts"),
        targets,
    )?;
    Ok(())
}

fn normalizer(c: &mut Cx<'_>) -> Result<(), Block> {
    let e = c.entry(0)?;
    if e.rank() != 2 {
        return block("an input that is not [batch, features]");
    }
    let x = c.plain(0)?;
    let norm = c.string("norm").unwrap_or_else(|| "MAX".into());
    let reduce = |kind| Op::Reduce {
        kind,
        axes: vec![1],
        keep_dims: true,
    };
    let den = match norm.as_str() {
        "MAX" => c.emit_named(
            &c.temp("max"),
            reduce(ReduceKind::Max),
            vec![x],
            DType::F32,
            Layout::Plain,
            None,
        )?,
        "L1" => {
            let a = c.emit_named(
                &c.temp("abs"),
                Op::Unary(UnaryOp::Abs),
                vec![x],
                DType::F32,
                Layout::Plain,
                None,
            )?;
            c.emit_named(
                &c.temp("sum"),
                reduce(ReduceKind::Sum),
                vec![a],
                DType::F32,
                Layout::Plain,
                None,
            )?
        }
        "L2" => {
            let s = c.emit_named(
                &c.temp("square"),
                Op::Unary(UnaryOp::Square),
                vec![x],
                DType::F32,
                Layout::Plain,
                None,
            )?;
            let s = c.emit_named(
                &c.temp("sum"),
                reduce(ReduceKind::Sum),
                vec![s],
                DType::F32,
                Layout::Plain,
                None,
            )?;
            c.emit_named(
                &c.temp("norm"),
                Op::Unary(UnaryOp::Sqrt),
                vec![s],
                DType::F32,
                Layout::Plain,
                None,
            )?
        }
        other => return block(format!("norm {other:?}")),
    };
    c.emit(
        binary(BinaryOp::Div),
        vec![x, den],
        DType::F32,
        Layout::Plain,
    )?;
    Ok(())
}

fn scaler(c: &mut Cx<'_>) -> Result<(), Block> {
    let (offset, scale) = (floats(c, "offset"), floats(c, "scale"));
    let x = c.plain(0)?;
    let shape = |v: &Vec<f32>| if v.len() == 1 { vec![] } else { vec![v.len()] };
    let (so, ss) = (shape(&offset), shape(&scale));
    let o = c
        .imp
        .constant(&c.temp("offset"), Data::F32(offset), so)
        .value;
    let s = c.imp.constant(&c.temp("scale"), Data::F32(scale), ss).value;
    let d = c.emit_named(
        &c.temp("shifted"),
        binary(BinaryOp::Sub),
        vec![x, o],
        DType::F32,
        Layout::Plain,
        None,
    )?;
    c.emit(binary(BinaryOp::Mul), vec![d, s], DType::F32, Layout::Plain)?;
    Ok(())
}
