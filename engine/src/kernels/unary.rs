//! Elementwise unary functions: vectorized (rten-vecmath and our own SIMD ops) for the
//! activations models use most, scalar for the rest. Quantized inputs go through the
//! dequantizing wrapper.

use rten_simd::SimdUnaryOp;

use super::quantized::wrap_float;
use super::simd::{HardSigmoid, HardSwish, LeakyRelu, activate};
use super::{BuildCtx, Kernel};
use crate::graph::{Activation, Op, UnaryOp};
use crate::tensor::{View, ViewMut};

struct UnaryF32(UnaryOp);

impl Kernel for UnaryF32 {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let x = inputs[0].f32s()?;
        let out = outputs[0].f32s_mut()?;
        out.copy_from_slice(x);
        self.apply(out);
        Ok(())
    }
}

impl UnaryF32 {
    /// Applies the function in place.
    fn apply(&self, out: &mut [f32]) {
        let map = |out: &mut [f32], f: fn(f32) -> f32| out.iter_mut().for_each(|v| *v = f(*v));
        match self.0 {
            UnaryOp::Relu => activate(out, Activation::Relu),
            UnaryOp::Relu6 => activate(out, Activation::Relu6),
            UnaryOp::ReluN1To1 => activate(out, Activation::ReluN1To1),
            UnaryOp::Clamp(lo, hi) => activate(out, Activation::Clamp(lo, hi)),
            UnaryOp::Sigmoid => rten_vecmath::Sigmoid {}.map_mut(out),
            UnaryOp::Tanh => rten_vecmath::Tanh {}.map_mut(out),
            UnaryOp::HardSwish => HardSwish.map_mut(out),
            UnaryOp::Silu => rten_vecmath::Silu {}.map_mut(out),
            UnaryOp::HardSigmoid { alpha, beta } => HardSigmoid { alpha, beta }.map_mut(out),
            UnaryOp::LeakyRelu(alpha) => LeakyRelu(alpha).map_mut(out),
            UnaryOp::Elu(alpha) => out.iter_mut().for_each(|v| {
                if *v < 0.0 {
                    *v = alpha * (v.exp() - 1.0);
                }
            }),
            UnaryOp::Gelu => rten_vecmath::Gelu {}.map_mut(out),
            UnaryOp::Exp => rten_vecmath::Exp {}.map_mut(out),
            UnaryOp::Erf => rten_vecmath::Erf {}.map_mut(out),
            UnaryOp::Log => map(out, f32::ln),
            UnaryOp::Sqrt => map(out, f32::sqrt),
            UnaryOp::Rsqrt => map(out, |v| 1.0 / v.sqrt()),
            UnaryOp::Neg => map(out, |v| -v),
            UnaryOp::Abs => map(out, f32::abs),
            UnaryOp::Square => map(out, |v| v * v),
            UnaryOp::Floor => map(out, f32::floor),
            UnaryOp::Ceil => map(out, f32::ceil),
            UnaryOp::Round => map(out, f32::round_ties_even),
            UnaryOp::Sin => map(out, f32::sin),
            UnaryOp::Cos => map(out, f32::cos),
            UnaryOp::Softplus => map(out, |v| if v > 20.0 { v } else { v.exp().ln_1p() }),
            UnaryOp::Identity => {}
        }
    }
}

fn build_f32(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    match &ctx.node.op {
        Op::Unary(u) => Ok(Box::new(UnaryF32(*u))),
        _ => Err("not a unary op".into()),
    }
}

pub fn build(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    match super::int8::build(ctx)? {
        Some(exact) => Ok(exact),
        None => wrap_float(ctx, build_f32),
    }
}

/// One element of a unary op (lookup tables for 8-bit values are built from it).
pub fn scalar(op: UnaryOp) -> impl Fn(f32) -> f32 {
    move |v: f32| {
        let mut one = [v];
        UnaryF32(op).apply(&mut one);
        one[0]
    }
}
