//! Comparisons, logical ops, `Where`, and integer arithmetic: what models compute shapes and
//! conditions with (mostly folded at load or when a plan is made), for every element type,
//! with broadcasting.

use super::binary::broadcast;
use super::simd::Broadcast;
use super::{BuildCtx, Kernel};
use crate::graph::{BinaryOp, CompareOp, Op};
use crate::tensor::{View, ViewMut};

/// Every element of a view as f64 (exact for the integers shapes and conditions use).
fn wide(v: View<'_>) -> Vec<f64> {
    match v {
        View::F32(x) => x.iter().map(|v| f64::from(*v)).collect(),
        View::I8(x) => x.iter().map(|v| f64::from(*v)).collect(),
        View::U8(x) => x.iter().map(|v| f64::from(*v)).collect(),
        View::I16(x) => x.iter().map(|v| f64::from(*v)).collect(),
        View::I32(x) => x.iter().map(|v| f64::from(*v)).collect(),
        View::I64(x) => x.iter().map(|v| *v as f64).collect(),
        View::Bool(x) => x.iter().map(|v| f64::from(u8::from(*v))).collect(),
    }
}

/// (a index, b index) of every output element.
fn pairs(s: &Broadcast) -> impl Iterator<Item = (usize, usize)> + '_ {
    s.runs
        .iter()
        .flat_map(move |&(a, b)| (0..s.len).map(move |i| (a + i * s.a_step, b + i * s.b_step)))
}

struct Compare {
    op: CompareOp,
    shape: Broadcast,
}

impl Kernel for Compare {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let (a, b) = (wide(inputs[0]), wide(inputs[1]));
        let out = outputs[0].bools_mut()?;
        for (o, (i, j)) in out.iter_mut().zip(pairs(&self.shape)) {
            let (x, y) = (a[i], b[j]);
            *o = match self.op {
                CompareOp::Equal => x == y,
                CompareOp::Less => x < y,
                CompareOp::LessOrEqual => x <= y,
                CompareOp::Greater => x > y,
                CompareOp::GreaterOrEqual => x >= y,
                CompareOp::And => x != 0.0 && y != 0.0,
                CompareOp::Or => x != 0.0 || y != 0.0,
            };
        }
        Ok(())
    }
}

struct Not;

impl Kernel for Not {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let x = inputs[0].bools()?;
        let out = outputs[0].bools_mut()?;
        out.iter_mut().zip(x).for_each(|(o, v)| *o = !v);
        Ok(())
    }
}

/// `Where(c, a, b)` with broadcasting of all three.
struct Where {
    cond: Broadcast,
    values: Broadcast,
    /// For each output element, whether it takes `a`.
    out_len: usize,
}

impl Kernel for Where {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let c = wide(inputs[0]);
        // cond is broadcast against `a` first; the pair of (cond, a) indices, then b.
        let choose: Vec<(bool, usize, usize)> = pairs(&self.cond)
            .zip(pairs(&self.values))
            .take(self.out_len)
            .map(|((ci, _), (ai, bi))| (c[ci] != 0.0, ai, bi))
            .collect();
        macro_rules! pick {
            ($a:expr, $b:expr, $o:expr) => {{
                for (o, (take_a, i, j)) in $o.iter_mut().zip(&choose) {
                    *o = if *take_a { $a[*i] } else { $b[*j] };
                }
                Ok(())
            }};
        }
        match (inputs[1], inputs[2], &mut outputs[0]) {
            (View::F32(a), View::F32(b), ViewMut::F32(o)) => pick!(a, b, o),
            (View::I64(a), View::I64(b), ViewMut::I64(o)) => pick!(a, b, o),
            (View::I32(a), View::I32(b), ViewMut::I32(o)) => pick!(a, b, o),
            (View::Bool(a), View::Bool(b), ViewMut::Bool(o)) => pick!(a, b, o),
            _ => Err("Where of mixed element types".into()),
        }
    }
}

/// Integer arithmetic (shape computations): i32 and i64, wrapping, division truncating
/// toward zero (ONNX's integer Div).
pub struct IntBinary {
    pub op: BinaryOp,
    pub shape: Broadcast,
}

impl Kernel for IntBinary {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let a = inputs[0].to_i64().ok_or("integer arithmetic on floats")?;
        let b = inputs[1].to_i64().ok_or("integer arithmetic on floats")?;
        let f = |x: i64, y: i64| -> Result<i64, String> {
            Ok(match self.op {
                BinaryOp::Add => x.wrapping_add(y),
                BinaryOp::Sub => x.wrapping_sub(y),
                BinaryOp::Mul => x.wrapping_mul(y),
                BinaryOp::Div => x.checked_div(y).ok_or("integer division by zero")?,
                BinaryOp::Max => x.max(y),
                BinaryOp::Min => x.min(y),
                BinaryOp::Pow => {
                    x.wrapping_pow(u32::try_from(y).map_err(|_| "a negative integer power")?)
                }
                BinaryOp::SquaredDifference => (x - y).wrapping_mul(x - y),
            })
        };
        match &mut outputs[0] {
            ViewMut::I64(o) => {
                for (o, (i, j)) in o.iter_mut().zip(pairs(&self.shape)) {
                    *o = f(a[i], b[j])?;
                }
            }
            ViewMut::I32(o) => {
                for (o, (i, j)) in o.iter_mut().zip(pairs(&self.shape)) {
                    *o = f(a[i], b[j])? as i32;
                }
            }
            _ => return Err("integer arithmetic writes i32 or i64".into()),
        }
        Ok(())
    }
}

/// `start + i * delta` for every output element.
struct Range;

impl Kernel for Range {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let first = |i: usize| {
            wide(inputs[i])
                .first()
                .copied()
                .ok_or("an empty range bound")
        };
        let (start, delta) = (first(0)?, first(2)?);
        match &mut outputs[0] {
            ViewMut::F32(o) => o
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = (start + i as f64 * delta) as f32),
            ViewMut::I64(o) => o
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = (start + i as f64 * delta) as i64),
            ViewMut::I32(o) => o
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = (start + i as f64 * delta) as i32),
            _ => return Err("a range of f32, i32 or i64".into()),
        }
        Ok(())
    }
}

struct Fill(f64);

impl Kernel for Fill {
    fn run(&self, _inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let v = self.0;
        match &mut outputs[0] {
            ViewMut::F32(o) => o.fill(v as f32),
            ViewMut::I64(o) => o.fill(v as i64),
            ViewMut::I32(o) => o.fill(v as i32),
            ViewMut::I16(o) => o.fill(v as i16),
            ViewMut::I8(o) => o.fill(v as i8),
            ViewMut::U8(o) => o.fill(v as u8),
            ViewMut::Bool(o) => o.fill(v != 0.0),
        }
        Ok(())
    }
}

pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let out = ctx.out_shape(0)?;
    match &ctx.node.op {
        Op::Range => Ok(Box::new(Range)),
        Op::Fill(v) => Ok(Box::new(Fill(*v))),
        Op::Compare(op) => Ok(Box::new(Compare {
            op: *op,
            shape: broadcast(ctx.in_shape(0)?, ctx.in_shape(1)?, out),
        })),
        Op::Not => Ok(Box::new(Not)),
        Op::Where => {
            let ab = crate::plan::shapes::broadcast(ctx.in_shape(1)?, ctx.in_shape(2)?)?;
            Ok(Box::new(Where {
                cond: broadcast(ctx.in_shape(0)?, &ab, out),
                values: broadcast(ctx.in_shape(1)?, ctx.in_shape(2)?, out),
                out_len: out.iter().product(),
            }))
        }
        _ => Err("not a logic op".into()),
    }
}
