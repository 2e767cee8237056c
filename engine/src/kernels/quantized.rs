//! Conversions (QUANTIZE, DEQUANTIZE, CAST), and the wrapper that runs any f32 kernel on
//! quantized values: inputs dequantized, outputs quantized back (round half to even), which
//! keeps every op within one quantization step of an integer-only kernel.

use std::cell::RefCell;

use super::{BuildCtx, Kernel};
use crate::quant::range_of;
use crate::tensor::{DType, View, ViewMut};

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Frees this thread's scratch buffers of this module (an idle model gives them back).
pub(crate) fn release_scratch() {
    BUFFERS.with(|c| c.take());
}

/// Per-tensor quantization of a quantized integer value.
#[derive(Clone, Copy, Debug)]
pub struct Affine {
    pub scale: f32,
    pub zero: i32,
    pub dtype: DType,
}

impl Affine {
    fn of(dtype: DType, q: Option<&crate::graph::Quant>) -> Result<Option<Affine>, String> {
        match (dtype, q) {
            (DType::I8 | DType::U8 | DType::I16, Some(q)) => {
                let (scale, zero) = q
                    .single()
                    .ok_or("per-channel quantization of an activation")?;
                Ok(Some(Affine { scale, zero, dtype }))
            }
            _ => Ok(None),
        }
    }
}

pub fn dequantize_into(v: View<'_>, a: Affine, out: &mut [f32]) -> Result<(), String> {
    let z = a.zero as f32;
    match v {
        View::I8(x) => out
            .iter_mut()
            .zip(x)
            .for_each(|(o, q)| *o = a.scale * (f32::from(*q) - z)),
        View::U8(x) => out
            .iter_mut()
            .zip(x)
            .for_each(|(o, q)| *o = a.scale * (f32::from(*q) - z)),
        View::I16(x) => out
            .iter_mut()
            .zip(x)
            .for_each(|(o, q)| *o = a.scale * (f32::from(*q) - z)),
        other => return Err(format!("cannot dequantize {}", other.dtype())),
    }
    Ok(())
}

pub fn quantize_from(x: &[f32], a: Affine, out: &mut ViewMut<'_>) -> Result<(), String> {
    let inv = 1.0 / a.scale;
    let (lo, hi) = range_of(a.dtype);
    let q = |v: f32| crate::quant::requantize(v * inv, a.zero, lo, hi);
    match out {
        ViewMut::I8(o) => o.iter_mut().zip(x).for_each(|(o, v)| *o = q(*v) as i8),
        ViewMut::U8(o) => o.iter_mut().zip(x).for_each(|(o, v)| *o = q(*v) as u8),
        ViewMut::I16(o) => o.iter_mut().zip(x).for_each(|(o, v)| *o = q(*v) as i16),
        other => return Err(format!("cannot quantize to {}", other.dtype())),
    }
    Ok(())
}

/// Runs an f32 kernel between dequantized inputs and quantized outputs.
struct Dequantized {
    inner: Box<dyn Kernel>,
    inputs: Vec<Option<Affine>>,
    outputs: Vec<Option<Affine>>,
}

impl Kernel for Dequantized {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let mut pool = BUFFERS.with(|cell| cell.take());
        let result = (|| {
            let needed = self.inputs.len() + self.outputs.len();
            while pool.len() < needed {
                pool.push(Vec::new());
            }
            let (in_bufs, out_bufs) = pool.split_at_mut(self.inputs.len());
            for ((buf, v), a) in in_bufs.iter_mut().zip(inputs).zip(&self.inputs) {
                if let Some(a) = a {
                    buf.resize(v.len(), 0.0);
                    dequantize_into(*v, *a, buf)?;
                }
            }
            for ((buf, v), a) in out_bufs.iter_mut().zip(outputs.iter()).zip(&self.outputs) {
                if a.is_some() {
                    buf.resize(view_mut_len(v), 0.0);
                }
            }
            {
                let views: Vec<View<'_>> = inputs
                    .iter()
                    .zip(&self.inputs)
                    .zip(in_bufs.iter())
                    .map(|((v, a), buf)| if a.is_some() { View::F32(buf) } else { *v })
                    .collect();
                let mut outs: Vec<ViewMut<'_>> = Vec::with_capacity(outputs.len());
                let mut out_iter = out_bufs.iter_mut();
                for (o, a) in outputs.iter_mut().zip(&self.outputs) {
                    let buf = out_iter.next().ok_or("buffer pool too small")?;
                    outs.push(if a.is_some() {
                        ViewMut::F32(buf)
                    } else {
                        reborrow(o)
                    });
                }
                self.inner.run(&views, &mut outs)?;
            }
            for ((o, a), buf) in outputs.iter_mut().zip(&self.outputs).zip(out_bufs.iter()) {
                if let Some(a) = a {
                    quantize_from(buf, *a, o)?;
                }
            }
            Ok(())
        })();
        BUFFERS.with(|cell| *cell.borrow_mut() = pool);
        result
    }
}

fn view_mut_len(v: &ViewMut<'_>) -> usize {
    match v {
        ViewMut::F32(x) => x.len(),
        ViewMut::I8(x) => x.len(),
        ViewMut::U8(x) => x.len(),
        ViewMut::I16(x) => x.len(),
        ViewMut::I32(x) => x.len(),
        ViewMut::I64(x) => x.len(),
        ViewMut::Bool(x) => x.len(),
    }
}

fn reborrow<'a>(v: &'a mut ViewMut<'_>) -> ViewMut<'a> {
    match v {
        ViewMut::F32(x) => ViewMut::F32(x),
        ViewMut::I8(x) => ViewMut::I8(x),
        ViewMut::U8(x) => ViewMut::U8(x),
        ViewMut::I16(x) => ViewMut::I16(x),
        ViewMut::I32(x) => ViewMut::I32(x),
        ViewMut::I64(x) => ViewMut::I64(x),
        ViewMut::Bool(x) => ViewMut::Bool(x),
    }
}

/// The kernel `build_f32` makes, wrapped in dequantize and quantize steps when any input or
/// output is quantized.
pub fn wrap_float(
    ctx: &BuildCtx<'_>,
    build_f32: impl Fn(&BuildCtx<'_>) -> Result<Box<dyn Kernel>, String>,
) -> Result<Box<dyn Kernel>, String> {
    let inputs = (0..ctx.node.inputs.len())
        .map(|i| Affine::of(ctx.in_dtype(i)?, ctx.in_quant(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = (0..ctx.node.outputs.len())
        .map(|i| Affine::of(ctx.out_dtype(i)?, ctx.out_quant(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let inner = build_f32(ctx)?;
    if inputs.iter().chain(&outputs).all(Option::is_none) {
        return Ok(inner);
    }
    Ok(Box::new(Dequantized {
        inner,
        inputs,
        outputs,
    }))
}

/// QUANTIZE (f32 to integers, or integers to other integers), DEQUANTIZE and CAST.
struct Convert {
    from: Option<Affine>,
    to: Option<Affine>,
}

impl Kernel for Convert {
    fn run(&self, inputs: &[View<'_>], outputs: &mut [ViewMut<'_>]) -> Result<(), String> {
        let x = inputs[0];
        let out = &mut outputs[0];
        match (self.from, self.to) {
            (None, Some(to)) => quantize_from(x.f32s()?, to, out),
            (Some(from), None) => dequantize_into(x, from, out.f32s_mut()?),
            (Some(from), Some(to)) => {
                let mut tmp = vec![0.0; x.len()];
                dequantize_into(x, from, &mut tmp)?;
                quantize_from(&tmp, to, out)
            }
            (None, None) => cast(x, out),
        }
    }
}

/// Element type conversion: floats to integers truncate toward zero, as TFLite's CAST does.
fn cast(x: View<'_>, out: &mut ViewMut<'_>) -> Result<(), String> {
    let wide: Vec<f64> = match x {
        View::F32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        View::I8(v) => v.iter().map(|x| f64::from(*x)).collect(),
        View::U8(v) => v.iter().map(|x| f64::from(*x)).collect(),
        View::I16(v) => v.iter().map(|x| f64::from(*x)).collect(),
        View::I32(v) => v.iter().map(|x| f64::from(*x)).collect(),
        View::I64(v) => v.iter().map(|x| *x as f64).collect(),
        View::Bool(v) => v.iter().map(|x| f64::from(u8::from(*x))).collect(),
    };
    match out {
        ViewMut::F32(o) => o.iter_mut().zip(&wide).for_each(|(o, v)| *o = *v as f32),
        ViewMut::I8(o) => o.iter_mut().zip(&wide).for_each(|(o, v)| *o = *v as i8),
        ViewMut::U8(o) => o.iter_mut().zip(&wide).for_each(|(o, v)| *o = *v as u8),
        ViewMut::I16(o) => o.iter_mut().zip(&wide).for_each(|(o, v)| *o = *v as i16),
        ViewMut::I32(o) => o.iter_mut().zip(&wide).for_each(|(o, v)| *o = *v as i32),
        ViewMut::I64(o) => o.iter_mut().zip(&wide).for_each(|(o, v)| *o = *v as i64),
        ViewMut::Bool(o) => o.iter_mut().zip(&wide).for_each(|(o, v)| *o = *v != 0.0),
    }
    Ok(())
}

pub fn build_convert(ctx: &BuildCtx<'_>) -> Result<Box<dyn Kernel>, String> {
    let from = Affine::of(ctx.in_dtype(0)?, ctx.in_quant(0))?;
    let to = Affine::of(ctx.out_dtype(0)?, ctx.out_quant(0))?;
    Ok(Box::new(Convert { from, to }))
}
