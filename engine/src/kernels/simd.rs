//! Vectorized building blocks on rten-simd: fused activations applied in place, and binary
//! arithmetic over runs of elements (same length, one operand repeating, or a scalar).

use rten_simd::ops::{BitOps, FloatOps, NumOps};
use rten_simd::{Isa, Simd, SimdOp, SimdUnaryOp};

use crate::graph::{Activation, BinaryOp};

/// `clamp(x, lo, hi)`.
struct Clamp {
    lo: f32,
    hi: f32,
}

impl SimdUnaryOp<f32> for Clamp {
    #[inline(always)]
    fn eval<I: Isa>(&self, isa: I, x: I::F32) -> I::F32 {
        let ops = isa.f32();
        ops.min(ops.max(x, ops.splat(self.lo)), ops.splat(self.hi))
    }
}

/// `x * relu6(x + 3) / 6`.
#[derive(Default)]
pub struct HardSwish;

impl SimdUnaryOp<f32> for HardSwish {
    #[inline(always)]
    fn eval<I: Isa>(&self, isa: I, x: I::F32) -> I::F32 {
        let ops = isa.f32();
        let gate = ops.min(
            ops.max(ops.add(x, ops.splat(3.0)), ops.zero()),
            ops.splat(6.0),
        );
        ops.mul(x, ops.mul(gate, ops.splat(1.0 / 6.0)))
    }
}

/// `max(0, min(1, alpha * x + beta))`.
pub struct HardSigmoid {
    pub alpha: f32,
    pub beta: f32,
}

impl SimdUnaryOp<f32> for HardSigmoid {
    #[inline(always)]
    fn eval<I: Isa>(&self, isa: I, x: I::F32) -> I::F32 {
        let ops = isa.f32();
        let y = ops.mul_add(x, ops.splat(self.alpha), ops.splat(self.beta));
        ops.min(ops.max(y, ops.zero()), ops.one())
    }
}

/// `x >= 0 ? x : alpha * x`.
pub struct LeakyRelu(pub f32);

impl SimdUnaryOp<f32> for LeakyRelu {
    #[inline(always)]
    fn eval<I: Isa>(&self, isa: I, x: I::F32) -> I::F32 {
        let ops = isa.f32();
        let neg = ops.mul(x, ops.splat(self.0));
        ops.select(x, neg, ops.ge(x, ops.zero()))
    }
}

/// Applies a fused activation in place.
pub fn activate(values: &mut [f32], activation: Activation) {
    match activation {
        Activation::None => {}
        Activation::Tanh => rten_vecmath::Tanh {}.map_mut(values),
        Activation::Sigmoid => rten_vecmath::Sigmoid {}.map_mut(values),
        Activation::HardSwish => HardSwish.map_mut(values),
        Activation::Silu => rten_vecmath::Silu {}.map_mut(values),
        bounded => {
            if let Some((lo, hi)) = bounded.bounds() {
                Clamp { lo, hi }.map_mut(values);
            }
        }
    }
}

/// A binary function of two f32 vectors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bin {
    Op(BinaryOp),
    /// `a >= 0 ? a : a * b`
    Prelu,
}

#[inline(always)]
fn apply<I: Isa>(isa: I, op: Bin, a: I::F32, b: I::F32) -> I::F32 {
    let ops = isa.f32();
    match op {
        Bin::Op(BinaryOp::Add) => ops.add(a, b),
        Bin::Op(BinaryOp::Sub) => ops.sub(a, b),
        Bin::Op(BinaryOp::Mul) => ops.mul(a, b),
        Bin::Op(BinaryOp::Div) => ops.div(a, b),
        Bin::Op(BinaryOp::Max) => ops.max(a, b),
        Bin::Op(BinaryOp::Min) => ops.min(a, b),
        Bin::Op(BinaryOp::SquaredDifference) => {
            let d = ops.sub(a, b);
            ops.mul(d, d)
        }
        Bin::Prelu => ops.select(a, ops.mul(a, b), ops.ge(a, ops.zero())),
        // Not vectorized: the caller computes powers element by element.
        Bin::Op(BinaryOp::Pow) => a,
    }
}

/// The innermost run of a broadcast binary op: `len` outputs, each operand stepping by 1 or
/// staying put (0), starting at the offsets of each outer position.
pub struct Broadcast {
    pub len: usize,
    pub a_step: usize,
    pub b_step: usize,
    /// (a offset, b offset) of each run, in output order.
    pub runs: Vec<(usize, usize)>,
}

/// `out = clamp(a op b, lo, hi)` over every run of a broadcast.
pub struct BinaryRuns<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub out: &'a mut [f32],
    pub op: Bin,
    pub shape: &'a Broadcast,
    pub lo: f32,
    pub hi: f32,
}

impl SimdOp for BinaryRuns<'_> {
    type Output = ();

    #[inline(always)]
    fn eval<I: Isa>(self, isa: I) -> Self::Output {
        let ops = isa.f32();
        let lanes = ops.len();
        let n = self.shape.len;
        let (lo, hi) = (ops.splat(self.lo), ops.splat(self.hi));
        let clamp = self.lo > f32::NEG_INFINITY || self.hi < f32::INFINITY;
        let (sa, sb) = (self.shape.a_step, self.shape.b_step);
        for (run, out) in self
            .shape
            .runs
            .iter()
            .zip(self.out.chunks_exact_mut(n.max(1)))
        {
            let (a, b) = (&self.a[run.0..], &self.b[run.1..]);
            let va = ops.splat(a[0]);
            let vb = ops.splat(b[0]);
            let mut i = 0;
            while i + lanes <= n {
                let x = if sa == 0 { va } else { ops.load(&a[i..]) };
                let y = if sb == 0 { vb } else { ops.load(&b[i..]) };
                let mut r = apply(isa, self.op, x, y);
                if clamp {
                    r = ops.min(ops.max(r, lo), hi);
                }
                ops.store(r, &mut out[i..]);
                i += lanes;
            }
            if i < n {
                let x = if sa == 0 {
                    va
                } else {
                    ops.load_pad(&a[i..n]).0
                };
                let y = if sb == 0 {
                    vb
                } else {
                    ops.load_pad(&b[i..n]).0
                };
                let mut r = apply(isa, self.op, x, y);
                if clamp {
                    r = ops.min(ops.max(r, lo), hi);
                }
                let arr = r.to_array();
                out[i..].copy_from_slice(&arr.as_ref()[..n - i]);
            }
        }
    }
}

/// Runs `f` compiled for the widest SIMD this CPU has (AVX-512, AVX2 and FMA, Neon): plain
/// loops inside it are auto-vectorized for that instruction set rather than the baseline
/// the binary targets. `f` should be `#[inline(always)]` so it is compiled into the
/// dispatched function.
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    struct Op<F>(F);
    impl<R, F: FnOnce() -> R> SimdOp for Op<F> {
        type Output = R;
        #[inline(always)]
        fn eval<I: Isa>(self, _isa: I) -> R {
            (self.0)()
        }
    }
    Op(f).dispatch()
}
