//! Full-integer (int8) post-training quantization of an fp32 TFLite graph.
//!
//! Activations are int8 with one scale and zero point each, from the value ranges seen while
//! tract runs the calibration inputs through the same graph. Weights of convolutions are int8
//! per output channel (symmetric), other constant operands int8 per tensor, biases int32 at
//! input scale × weight scale. The model keeps float inputs and outputs: a QUANTIZE op after
//! each input and a DEQUANTIZE op before each output, so callers feed and read f32.
//!
//! Each op follows what LiteRT's int8 kernels require: ops that only move or select values
//! (reshape, transpose, pools, pad, max/min, slices) keep their input's quantization;
//! concatenation inputs are requantized to the output's; softmax and logistic outputs use the
//! fixed 1/256 scale. An op with no int8 rule is refused by name.

use std::collections::HashMap;

use tract_tflite::tflite::{BuiltinOperator as Op, BuiltinOptions, TensorType};

use super::graph::{Graph, Operator, Options, Quant, Tensor};
use crate::error::{ExportError, UnsupportedOp};

/// Observed value range of each activation tensor, by tensor name.
pub type Ranges = HashMap<String, (f32, f32)>;

/// Affine int8 parameters of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Affine {
    scale: f32,
    zero_point: i32,
}

impl Affine {
    /// Asymmetric parameters covering `[min, max]` (widened to include 0).
    fn covering(min: f32, max: f32) -> Affine {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let scale = ((max - min) / 255.0).max(1e-8);
        let zero_point = (-128.0 - min / scale).round().clamp(-128.0, 127.0) as i32;
        Affine { scale, zero_point }
    }

    fn quantize(&self, v: f32) -> i8 {
        (v / self.scale + self.zero_point as f32)
            .round()
            .clamp(-128.0, 127.0) as i8
    }

    fn quant(&self) -> Quant {
        Quant {
            scale: vec![self.scale],
            zero_point: vec![i64::from(self.zero_point)],
            axis: 0,
        }
    }
}

/// Softmax and logistic outputs: LiteRT's int8 kernels require exactly this.
const UNIT_INTERVAL: Affine = Affine {
    scale: 1.0 / 256.0,
    zero_point: -128,
};

struct Pass<'r> {
    graph: Graph,
    ranges: &'r Ranges,
    /// int8 parameters of each activation tensor once it is int8.
    params: HashMap<i32, Affine>,
    out: Vec<Operator>,
}

/// Quantizes an fp32 graph to int8. `ranges` must hold every float activation tensor.
pub fn quantize(fp32: &[u8], ranges: &Ranges) -> Result<Vec<u8>, ExportError> {
    let graph = Graph::read(fp32)?;
    let unsupported: Vec<UnsupportedOp> = graph
        .operators
        .iter()
        .filter(|op| !has_int8_rule(op.code))
        .map(|op| UnsupportedOp {
            node: graph
                .tensors
                .get(op.outputs.first().copied().unwrap_or(-1) as usize)
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            op: format!("{:?}", op.code),
            reason: "no int8 kernel rule".into(),
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(ExportError::Unsupported(unsupported));
    }
    let mut pass = Pass {
        graph,
        ranges,
        params: HashMap::new(),
        out: Vec::new(),
    };
    pass.run()?;
    pass.graph.compact();
    Ok(pass.graph.write())
}

fn has_int8_rule(code: Op) -> bool {
    matches!(
        code,
        Op::CONV_2D
            | Op::DEPTHWISE_CONV_2D
            | Op::BATCH_MATMUL
            | Op::FULLY_CONNECTED
            | Op::ADD
            | Op::SUB
            | Op::MUL
            | Op::SUM
            | Op::MEAN
            | Op::HARD_SWISH
            | Op::LOGISTIC
            | Op::SOFTMAX
            | Op::RESHAPE
            | Op::TRANSPOSE
            | Op::SQUEEZE
            | Op::EXPAND_DIMS
            | Op::MAX_POOL_2D
            | Op::AVERAGE_POOL_2D
            | Op::PADV2
            | Op::PAD
            | Op::STRIDED_SLICE
            | Op::SLICE
            | Op::MAXIMUM
            | Op::MINIMUM
            | Op::REDUCE_MAX
            | Op::CONCATENATION
    )
}

fn err(message: String) -> ExportError {
    ExportError::Write(message)
}

impl Pass<'_> {
    fn run(&mut self) -> Result<(), ExportError> {
        // Float inputs: a QUANTIZE op makes the int8 tensor the graph reads.
        let mut renamed: HashMap<i32, i32> = HashMap::new();
        for input in self.graph.inputs.clone() {
            if self.graph.tensors[input as usize].dtype != TensorType::FLOAT32 {
                continue;
            }
            let params = self.range_params(input)?;
            let int8 = self.int8_twin(input, params, ".int8");
            self.out.push(Operator {
                code: Op::QUANTIZE,
                version: 1,
                inputs: vec![input],
                outputs: vec![int8],
                options: Options::Empty(BuiltinOptions::QuantizeOptions),
            });
            renamed.insert(input, int8);
        }
        // Float outputs: the graph writes an int8 twin, a DEQUANTIZE op the float output.
        let mut output_twins = Vec::new();
        for output in self.graph.outputs.clone() {
            if self.graph.tensors[output as usize].dtype != TensorType::FLOAT32 {
                continue;
            }
            let twin = self.graph.push(Tensor {
                name: format!("{}.int8", self.graph.tensors[output as usize].name),
                ..self.graph.tensors[output as usize].clone()
            });
            renamed.insert(output, twin);
            output_twins.push((output, twin));
        }
        let ops = std::mem::take(&mut self.graph.operators);
        for mut op in ops {
            for t in op.inputs.iter_mut().chain(op.outputs.iter_mut()) {
                if let Some(r) = renamed.get(t) {
                    *t = *r;
                }
            }
            self.op(op)?;
        }
        for (output, twin) in output_twins {
            if !self.params.contains_key(&twin) {
                return Err(err(format!(
                    "output {} was never made int8",
                    self.name(output)
                )));
            }
            self.out.push(Operator {
                code: Op::DEQUANTIZE,
                version: 2,
                inputs: vec![twin],
                outputs: vec![output],
                options: Options::Empty(BuiltinOptions::DequantizeOptions),
            });
        }
        self.graph.operators = std::mem::take(&mut self.out);
        Ok(())
    }

    fn name(&self, t: i32) -> &str {
        &self.graph.tensors[t as usize].name
    }

    fn is_const(&self, t: i32) -> bool {
        self.graph.tensors[t as usize].data.is_some()
    }

    /// Parameters from the calibration range of tensor `t`.
    fn range_params(&self, t: i32) -> Result<Affine, ExportError> {
        let name = self.name(t);
        let name = name.strip_suffix(".int8").unwrap_or(name);
        let (min, max) = self
            .ranges
            .get(name)
            .copied()
            .ok_or_else(|| err(format!("no calibration range for tensor {name:?}")))?;
        Ok(Affine::covering(min, max))
    }

    /// A new int8 activation tensor shaped like `t`.
    fn int8_twin(&mut self, t: i32, params: Affine, suffix: &str) -> i32 {
        let base = &self.graph.tensors[t as usize];
        let twin = Tensor {
            name: format!("{}{suffix}", base.name),
            shape: base.shape.clone(),
            dtype: TensorType::INT8,
            data: None,
            quant: Some(params.quant()),
        };
        let id = self.graph.push(twin);
        self.params.insert(id, params);
        id
    }

    /// Makes activation `t` int8 with `params` (it is an op's output about to be written).
    fn set_output(&mut self, t: i32, params: Affine) {
        let tensor = &mut self.graph.tensors[t as usize];
        tensor.dtype = TensorType::INT8;
        tensor.quant = Some(params.quant());
        self.params.insert(t, params);
    }

    /// The int8 parameters of an activation input, already decided by its producer.
    fn input_params(&self, t: i32) -> Result<Affine, ExportError> {
        self.params.get(&t).copied().ok_or_else(|| {
            err(format!(
                "tensor {} is read before it is written",
                self.name(t)
            ))
        })
    }

    /// An int8 input with exactly `want`: `t` itself, or a requantized copy (QUANTIZE op).
    fn with_params(&mut self, t: i32, want: Affine) -> Result<i32, ExportError> {
        if self.is_const(t) {
            return self.const_int8(t, Some(want));
        }
        if self.input_params(t)? == want {
            return Ok(t);
        }
        let copy = self.int8_twin(t, want, ".requant");
        self.out.push(Operator {
            code: Op::QUANTIZE,
            version: 2,
            inputs: vec![t],
            outputs: vec![copy],
            options: Options::Empty(BuiltinOptions::QuantizeOptions),
        });
        Ok(copy)
    }

    /// A float constant as a new int8 constant: with `params`, or covering its own values.
    fn const_int8(&mut self, t: i32, params: Option<Affine>) -> Result<i32, ExportError> {
        let tensor = &self.graph.tensors[t as usize];
        let Some(values) = tensor.f32_values() else {
            return Ok(t); // integer constants (shapes, axes, permutations) stay as they are
        };
        let params = params.unwrap_or_else(|| {
            let (min, max) = values
                .iter()
                .fold((0f32, 0f32), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            Affine::covering(min, max)
        });
        let data = values.iter().map(|v| params.quantize(*v) as u8).collect();
        let int8 = Tensor {
            name: format!("{}.int8", tensor.name),
            shape: tensor.shape.clone(),
            dtype: TensorType::INT8,
            data: Some(data),
            quant: Some(params.quant()),
        };
        Ok(self.graph.push(int8))
    }

    /// An activation or constant operand of an arithmetic op: int8 as it is.
    fn operand(&mut self, t: i32) -> Result<i32, ExportError> {
        if self.is_const(t) {
            self.const_int8(t, None)
        } else {
            self.input_params(t).map(|_| t)
        }
    }

    /// Symmetric int8 weights, one scale per slice along `axis` (all axes when `None`).
    fn weights(&mut self, t: i32, axis: Option<usize>) -> Result<(i32, Vec<f32>), ExportError> {
        let tensor = &self.graph.tensors[t as usize];
        let values = tensor
            .f32_values()
            .ok_or_else(|| err(format!("weights {} are not a float constant", tensor.name)))?;
        let shape: Vec<usize> = tensor.shape.iter().map(|d| (*d).max(0) as usize).collect();
        if axis.is_some_and(|a| a >= shape.len()) || shape.iter().product::<usize>() != values.len()
        {
            return Err(err(format!(
                "weights {} have shape {:?} and {} values",
                tensor.name,
                tensor.shape,
                values.len()
            )));
        }
        let (channels, inner) = match axis {
            Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
            None => (1, values.len()),
        };
        let (data, scales) = crate::int8::symmetric_per_channel(&values, channels, inner, 127);
        let int8 = Tensor {
            name: format!("{}.int8", tensor.name),
            shape: tensor.shape.clone(),
            dtype: TensorType::INT8,
            data: Some(data),
            quant: Some(Quant {
                scale: scales.clone(),
                zero_point: vec![0; scales.len()],
                axis: axis.unwrap_or(0) as i32,
            }),
        };
        Ok((self.graph.push(int8), scales))
    }

    /// An int32 bias at `input_scale × weight_scale[c]`.
    fn bias(
        &mut self,
        t: i32,
        input_scale: f32,
        weight_scales: &[f32],
    ) -> Result<i32, ExportError> {
        let tensor = &self.graph.tensors[t as usize];
        let values = tensor
            .f32_values()
            .ok_or_else(|| err(format!("bias {} is not a float constant", tensor.name)))?;
        let scales: Vec<f32> = (0..values.len())
            .map(|c| input_scale * weight_scales[if weight_scales.len() == 1 { 0 } else { c }])
            .collect();
        let data = values
            .iter()
            .zip(&scales)
            .flat_map(|(v, s)| ((v / s).round() as i32).to_le_bytes())
            .collect();
        let int32 = Tensor {
            name: format!("{}.int32", tensor.name),
            shape: tensor.shape.clone(),
            dtype: TensorType::INT32,
            data: Some(data),
            quant: Some(Quant {
                zero_point: vec![0; scales.len()],
                scale: scales,
                axis: 0,
            }),
        };
        Ok(self.graph.push(int32))
    }

    fn op(&mut self, mut op: Operator) -> Result<(), ExportError> {
        let output = op.outputs[0];
        match op.code {
            Op::CONV_2D | Op::DEPTHWISE_CONV_2D => {
                let input = op.inputs[0];
                let in_params = self.input_params(input)?;
                // Filters: OHWI for CONV_2D (channels on axis 0), 1HWC for depthwise (axis 3).
                let axis = if op.code == Op::CONV_2D { 0 } else { 3 };
                let (w, scales) = self.weights(op.inputs[1], Some(axis))?;
                op.inputs[1] = w;
                if let Some(&b) = op.inputs.get(2).filter(|b| **b >= 0) {
                    op.inputs[2] = self.bias(b, in_params.scale, &scales)?;
                }
                let params = self.range_params(output)?;
                self.set_output(output, params);
                op.version = op.version.max(3);
            }
            Op::FULLY_CONNECTED => {
                let in_params = self.input_params(op.inputs[0])?;
                let (w, scales) = self.weights(op.inputs[1], Some(0))?;
                op.inputs[1] = w;
                if let Some(&b) = op.inputs.get(2).filter(|b| **b >= 0) {
                    op.inputs[2] = self.bias(b, in_params.scale, &scales)?;
                }
                let params = self.range_params(output)?;
                self.set_output(output, params);
            }
            Op::BATCH_MATMUL => {
                for i in 0..2 {
                    let t = op.inputs[i];
                    op.inputs[i] = if self.is_const(t) {
                        self.weights(t, None)?.0
                    } else {
                        self.input_params(t).map(|_| t)?
                    };
                }
                let params = self.range_params(output)?;
                self.set_output(output, params);
            }
            Op::ADD | Op::SUB | Op::MUL | Op::SUM | Op::MEAN | Op::HARD_SWISH => {
                for i in 0..op.inputs.len() {
                    op.inputs[i] = self.operand(op.inputs[i])?;
                }
                let params = self.range_params(output)?;
                self.set_output(output, params);
            }
            Op::LOGISTIC | Op::SOFTMAX => {
                self.input_params(op.inputs[0])?;
                self.set_output(output, UNIT_INTERVAL);
            }
            Op::CONCATENATION => {
                let params = self.range_params(output)?;
                for i in 0..op.inputs.len() {
                    op.inputs[i] = self.with_params(op.inputs[i], params)?;
                }
                self.set_output(output, params);
            }
            Op::MAXIMUM | Op::MINIMUM => {
                // Values are compared as they are: both operands share the activation's
                // quantization (a constant operand is quantized with it).
                let reference = op
                    .inputs
                    .iter()
                    .copied()
                    .find(|t| !self.is_const(*t))
                    .ok_or_else(|| err(format!("{:?} of two constants", op.code)))?;
                let params = self.input_params(reference)?;
                for i in 0..op.inputs.len() {
                    op.inputs[i] = self.with_params(op.inputs[i], params)?;
                }
                self.set_output(output, params);
            }
            Op::PADV2 | Op::PAD => {
                // The pad value is copied as it is: it shares the input's quantization.
                let params = self.input_params(op.inputs[0])?;
                if let Some(&value) = op.inputs.get(2) {
                    op.inputs[2] = self.with_params(value, params)?;
                }
                self.set_output(output, params);
            }
            _ => {
                // RESHAPE, TRANSPOSE, SQUEEZE, EXPAND_DIMS, pools, slices, REDUCE_MAX: the
                // output keeps the input's quantization.
                let params = self.input_params(op.inputs[0])?;
                self.set_output(output, params);
            }
        }
        self.out.push(op);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_parameters_cover_the_range_and_zero() {
        let a = Affine::covering(-1.0, 3.0);
        assert_eq!(a.quantize(-1.0), -128);
        assert_eq!(a.quantize(3.0), 127);
        assert_eq!(a.quantize(0.0) as i32, a.zero_point);
        let positive = Affine::covering(2.0, 4.0);
        assert_eq!(positive.zero_point, -128, "0 stays representable");
        assert_eq!(positive.quantize(100.0), 127, "values beyond saturate");
    }
}
