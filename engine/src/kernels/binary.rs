//! Elementwise binary ops with numpy broadcasting (and PReLU): the broadcast is reduced at
//! build time to runs along the innermost axes, each run vectorized.

use rten_simd::SimdOp;

use super::quantized::wrap_float;
use super::simd::{Bin, BinaryRuns, Broadcast};
use super::{BuildCtx, Kernel};
use crate::graph::{Activation, BinaryOp, Op};
use crate::tensor::{View, ViewMut, strides};

/// Broadcasts `a` and `b` to `out`, merging axes where both step the same way, and lists the
/// starts of the innermost runs.
pub fn broadcast(a: &[usize], b: &[usize], out: &[usize]) -> Broadcast {
    let rank = out.len();
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut p = vec![1; rank - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (a, b) = (pad(a), pad(b));
    let (sa, sb) = (strides(&a), strides(&b));
    // Per axis: length, a step (0 when broadcast), b step.
    let mut axes: Vec<(usize, usize, usize)> = (0..rank)
        .map(|i| {
            (
                out[i],
                if a[i] == 1 { 0 } else { sa[i] },
                if b[i] == 1 { 0 } else { sb[i] },
            )
        })
        .filter(|(len, _, _)| *len != 1)
        .collect();
    if axes.is_empty() {
        axes.push((1, 1, 1));
    }
    // Merge an axis into the next (inner) one when each operand's steps chain.
    let mut merged: Vec<(usize, usize, usize)> = Vec::new();
    for ax in axes {
        if let Some(last) = merged.last_mut() {
            let chains = |outer: usize, inner: usize, inner_len: usize| {
                (outer == 0 && inner == 0) || (outer != 0 && outer == inner * inner_len)
            };
            if chains(last.1, ax.1, ax.0) && chains(last.2, ax.2, ax.0) {
                *last = (last.0 * ax.0, ax.1, ax.2);
                continue;
            }
        }
        merged.push(ax);
    }
    let Some(&(len, a_step, b_step)) = merged.last() else {
        return Broadcast {
            len: 1,
            a_step: 0,
            b_step: 0,
            runs: vec![(0, 0)],
        };
    };
    let outer = &merged[..merged.len() - 1];
    let count: usize = outer.iter().map(|a| a.0).product();
    let mut runs = Vec::with_capacity(count);
    let mut idx = vec![0usize; outer.len()];
    for _ in 0..count {
        let (mut oa, mut ob) = (0, 0);
        for (i, &(_, sa, sb)) in outer.iter().enumerate() {
            oa += idx[i] * sa;
            ob += idx[i] * sb;
        }
        runs.push((oa, ob));
        for i in (0..outer.len()).rev() {
            idx[i] += 1;
            if idx[i] < outer[i].0 {
                break;
            }
            idx[i] = 0;
        }
    }
    Broadcast {
        len,
        a_step: usize::from(a_step != 0),
        b_step: usize::from(b_step != 0),
        runs,
    }
}

struct BinaryF32 {
    op: Bin,
    shape: Broadcast,
    lo: f32,
    hi: f32,
    activation: Activation,
}

impl Kernel for BinaryF32 {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let (a, b) = (inputs[0].f32s()?, inputs[1].f32s()?);
        let out = outputs[0].f32s_mut()?;
        if self.op == Bin::Op(BinaryOp::Pow) {
            let n = self.shape.len;
            for (run, o) in self.shape.runs.iter().zip(out.chunks_exact_mut(n.max(1))) {
                for (i, v) in o.iter_mut().enumerate() {
                    let x = a[run.0 + i * self.shape.a_step];
                    let y = b[run.1 + i * self.shape.b_step];
                    *v = x.powf(y).clamp(self.lo, self.hi);
                }
            }
        } else {
            BinaryRuns {
                a,
                b,
                out,
                op: self.op,
                shape: &self.shape,
                lo: self.lo,
                hi: self.hi,
            }
            .dispatch();
        }
        if self.activation.bounds().is_none() {
            super::simd::activate(outputs[0].f32s_mut()?, self.activation);
        }
        Ok(())
    }
}

fn build_f32(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let (op, activation) = match &ctx.node.op {
        Op::Binary { op, activation } => (Bin::Op(*op), *activation),
        Op::Prelu => (Bin::Prelu, Activation::None),
        _ => return Err("not a binary op".into()),
    };
    let (a, b, out) = (ctx.in_shape(0)?, ctx.in_shape(1)?, ctx.out_shape(0)?);
    let (lo, hi) = activation
        .bounds()
        .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    Ok(Box::new(BinaryF32 {
        op,
        shape: broadcast(a, b, out),
        lo,
        hi,
        activation,
    }))
}

pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    if let Op::Binary { op, .. } = ctx.node.op
        && matches!(
            ctx.out_dtype(0)?,
            crate::tensor::DType::I32 | crate::tensor::DType::I64
        )
    {
        let (a, b, out) = (ctx.in_shape(0)?, ctx.in_shape(1)?, ctx.out_shape(0)?);
        return Ok(Box::new(super::logic::IntBinary {
            op,
            shape: broadcast(a, b, out),
        }));
    }
    match super::int8::build(ctx)? {
        Some(exact) => Ok(exact),
        None => wrap_float(ctx, build_f32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[usize], b: &[usize], out: &[usize]) -> Vec<(usize, usize)> {
        // Every output element's (a index, b index), by brute force.
        let rank = out.len();
        let pa: Vec<usize> = std::iter::repeat_n(1, rank - a.len())
            .chain(a.iter().copied())
            .collect();
        let pb: Vec<usize> = std::iter::repeat_n(1, rank - b.len())
            .chain(b.iter().copied())
            .collect();
        let (sa, sb, so) = (strides(&pa), strides(&pb), strides(out));
        let total: usize = out.iter().product();
        (0..total)
            .map(|flat| {
                let (mut ia, mut ib) = (0, 0);
                for d in 0..rank {
                    let c = flat / so[d] % out[d];
                    if pa[d] != 1 {
                        ia += c * sa[d];
                    }
                    if pb[d] != 1 {
                        ib += c * sb[d];
                    }
                }
                (ia, ib)
            })
            .collect()
    }

    fn expand(bc: &Broadcast) -> Vec<(usize, usize)> {
        bc.runs
            .iter()
            .flat_map(|(a, b)| (0..bc.len).map(move |i| (a + i * bc.a_step, b + i * bc.b_step)))
            .collect()
    }

    #[test]
    fn broadcast_runs_visit_what_numpy_would() {
        let cases: [(&[usize], &[usize], &[usize]); 6] = [
            (&[1, 4, 4, 8], &[8], &[1, 4, 4, 8]),
            (&[2, 3, 4], &[2, 3, 4], &[2, 3, 4]),
            (&[2, 1, 4], &[1, 3, 1], &[2, 3, 4]),
            (&[1, 8, 1, 1], &[1, 8, 5, 5], &[1, 8, 5, 5]),
            (&[1], &[3, 2], &[3, 2]),
            (&[1, 1, 1, 1], &[1, 1, 1, 1], &[1, 1, 1, 1]),
        ];
        for (a, b, out) in cases {
            assert_eq!(
                expand(&broadcast(a, b, out)),
                reference(a, b, out),
                "{a:?} {b:?}"
            );
        }
    }
}
