//! A TFLite model as plain data: read from a flatbuffer, changed by passes (quantization),
//! written back. Covers one subgraph and the builtin ops (with their options) that our export
//! writes; anything else is refused by name, never dropped.

use tract_tflite::tflite::{
    self, ActivationFunctionType, BuiltinOperator, BuiltinOptions, Padding, TensorType,
};

use crate::error::ExportError;

/// Quantization of one tensor: per-tensor (one scale) or per-axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Quant {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub axis: i32,
}

#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i32>,
    pub dtype: TensorType,
    /// Constant contents (little-endian), `None` for activations.
    pub data: Option<Vec<u8>>,
    pub quant: Option<Quant>,
}

impl Tensor {
    /// The constant's values as f32, when it is a float constant.
    pub fn f32_values(&self) -> Option<Vec<f32>> {
        if self.dtype != TensorType::FLOAT32 {
            return None;
        }
        let data = self.data.as_ref()?;
        Some(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }
}

/// The options of the ops our export writes. Options with no fields keep only their type.
#[derive(Debug, Clone, PartialEq)]
pub enum Options {
    None,
    Empty(BuiltinOptions),
    Conv2D {
        padding: Padding,
        stride: (i32, i32),
        dilation: (i32, i32),
        activation: ActivationFunctionType,
    },
    DepthwiseConv2D {
        padding: Padding,
        stride: (i32, i32),
        dilation: (i32, i32),
        depth_multiplier: i32,
        activation: ActivationFunctionType,
    },
    Pool2D {
        padding: Padding,
        stride: (i32, i32),
        filter: (i32, i32),
        activation: ActivationFunctionType,
    },
    Reshape(Option<Vec<i32>>),
    Squeeze(Vec<i32>),
    Concatenation {
        axis: i32,
        activation: ActivationFunctionType,
    },
    Softmax(f32),
    BatchMatMul {
        adj_x: bool,
        adj_y: bool,
    },
    Reducer(bool),
    StridedSlice {
        begin_mask: i32,
        end_mask: i32,
        ellipsis_mask: i32,
        new_axis_mask: i32,
        shrink_axis_mask: i32,
    },
    /// ADD, SUB, MUL, DIV: a fused activation.
    Arithmetic(BuiltinOptions, ActivationFunctionType),
    FullyConnected {
        activation: ActivationFunctionType,
        keep_num_dims: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Operator {
    pub code: BuiltinOperator,
    pub version: i32,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub options: Options,
}

/// One-subgraph TFLite model.
#[derive(Debug, Clone)]
pub struct Graph {
    pub tensors: Vec<Tensor>,
    pub operators: Vec<Operator>,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
}

fn bad(message: impl Into<String>) -> ExportError {
    ExportError::Write(message.into())
}

impl Graph {
    /// Reads a flatbuffer with one subgraph of builtin ops.
    pub fn read(bytes: &[u8]) -> Result<Graph, ExportError> {
        let model = tflite::root_as_model(bytes).map_err(|e| bad(format!("not TFLite: {e}")))?;
        let subgraphs = model.subgraphs().ok_or_else(|| bad("no subgraph"))?;
        if subgraphs.len() != 1 {
            return Err(bad(format!(
                "{} subgraphs; one is supported",
                subgraphs.len()
            )));
        }
        let sub = subgraphs.get(0);
        let buffers = model.buffers().ok_or_else(|| bad("no buffers"))?;
        let codes = model
            .operator_codes()
            .ok_or_else(|| bad("no operator codes"))?;
        let mut tensors = Vec::new();
        for t in sub.tensors().iter().flatten() {
            let data = buffers
                .iter()
                .nth(t.buffer() as usize)
                .and_then(|b| b.data())
                .filter(|d| !d.is_empty())
                .map(|d| d.bytes().to_vec());
            let quant = t.quantization().and_then(|q| {
                let scale: Vec<f32> = q.scale()?.iter().collect();
                let zero_point: Vec<i64> = q.zero_point()?.iter().collect();
                Some(Quant {
                    scale,
                    zero_point,
                    axis: q.quantized_dimension(),
                })
            });
            tensors.push(Tensor {
                name: t.name().unwrap_or_default().to_owned(),
                shape: t.shape().map(|s| s.iter().collect()).unwrap_or_default(),
                dtype: t.type_(),
                data,
                quant,
            });
        }
        let mut operators = Vec::new();
        for op in sub.operators().iter().flatten() {
            let code = codes
                .iter()
                .nth(op.opcode_index() as usize)
                .ok_or_else(|| bad("operator code index out of range"))?;
            let builtin = code.builtin_code();
            operators.push(Operator {
                code: builtin,
                version: code.version(),
                inputs: op.inputs().map(|v| v.iter().collect()).unwrap_or_default(),
                outputs: op.outputs().map(|v| v.iter().collect()).unwrap_or_default(),
                options: read_options(&op, builtin)?,
            });
        }
        let graph = Graph {
            tensors,
            operators,
            inputs: sub.inputs().map(|v| v.iter().collect()).unwrap_or_default(),
            outputs: sub
                .outputs()
                .map(|v| v.iter().collect())
                .unwrap_or_default(),
        };
        graph.check_indices()?;
        Ok(graph)
    }

    /// Every tensor index names a tensor (or is -1, an absent optional input), and every op
    /// writes at least one tensor: passes index without further checks.
    fn check_indices(&self) -> Result<(), ExportError> {
        let count = self.tensors.len() as i64;
        let valid = |t: &i32| *t == -1 || (0..count).contains(&i64::from(*t));
        for (i, op) in self.operators.iter().enumerate() {
            if op.outputs.is_empty() || !op.inputs.iter().chain(&op.outputs).all(valid) {
                return Err(bad(format!(
                    "operator {i} ({:?}) has a bad tensor index",
                    op.code
                )));
            }
        }
        if !self
            .inputs
            .iter()
            .chain(&self.outputs)
            .all(|t| *t >= 0 && valid(t))
        {
            return Err(bad("a graph input or output has a bad tensor index"));
        }
        Ok(())
    }

    /// The indices of the ops that read `tensor`.
    pub fn consumers(&self, tensor: i32) -> Vec<usize> {
        self.operators
            .iter()
            .enumerate()
            .filter(|(_, op)| op.inputs.contains(&tensor))
            .map(|(i, _)| i)
            .collect()
    }

    /// Adds a tensor and returns its index.
    pub fn push(&mut self, tensor: Tensor) -> i32 {
        self.tensors.push(tensor);
        self.tensors.len() as i32 - 1
    }

    /// Drops tensors no op and no graph input or output refers to (constants a pass
    /// replaced), renumbering the rest.
    pub fn compact(&mut self) {
        let mut used = vec![false; self.tensors.len()];
        let refs = self
            .operators
            .iter()
            .flat_map(|op| op.inputs.iter().chain(&op.outputs))
            .chain(&self.inputs)
            .chain(&self.outputs);
        for &t in refs {
            if t >= 0 {
                used[t as usize] = true;
            }
        }
        let mut new_index = vec![-1i32; self.tensors.len()];
        let mut kept = Vec::new();
        for (i, tensor) in std::mem::take(&mut self.tensors).into_iter().enumerate() {
            if used[i] {
                new_index[i] = kept.len() as i32;
                kept.push(tensor);
            }
        }
        self.tensors = kept;
        let remap = |t: &mut i32| {
            if *t >= 0 {
                *t = new_index[*t as usize];
            }
        };
        for op in &mut self.operators {
            op.inputs
                .iter_mut()
                .chain(op.outputs.iter_mut())
                .for_each(remap);
        }
        self.inputs
            .iter_mut()
            .chain(self.outputs.iter_mut())
            .for_each(remap);
    }

    /// Writes the flatbuffer (schema version 3, identifier `TFL3`). Constants with the same
    /// bytes share one buffer (TFLite buffers are read-only).
    pub fn write(&self) -> Vec<u8> {
        let mut fb = flatbuffers::FlatBufferBuilder::new();
        let empty = tflite::Buffer::create(&mut fb, &tflite::BufferArgs { data: None });
        let mut buffers = vec![empty];
        let mut written: std::collections::HashMap<&[u8], u32> = std::collections::HashMap::new();
        let mut tensors = Vec::new();
        for t in &self.tensors {
            let buffer = match &t.data {
                Some(data) => match written.get(data.as_slice()) {
                    Some(&index) => index,
                    None => {
                        let bytes = fb.create_vector(data);
                        buffers.push(tflite::Buffer::create(
                            &mut fb,
                            &tflite::BufferArgs { data: Some(bytes) },
                        ));
                        let index = buffers.len() as u32 - 1;
                        written.insert(data.as_slice(), index);
                        index
                    }
                },
                None => 0,
            };
            let quantization = t.quant.as_ref().map(|q| {
                let scale = fb.create_vector(&q.scale);
                let zero_point = fb.create_vector(&q.zero_point);
                tflite::QuantizationParameters::create(
                    &mut fb,
                    &tflite::QuantizationParametersArgs {
                        scale: Some(scale),
                        zero_point: Some(zero_point),
                        quantized_dimension: q.axis,
                        ..Default::default()
                    },
                )
            });
            let shape = fb.create_vector(&t.shape);
            let name = fb.create_string(&t.name);
            tensors.push(tflite::Tensor::create(
                &mut fb,
                &tflite::TensorArgs {
                    shape: Some(shape),
                    type_: t.dtype,
                    buffer,
                    name: Some(name),
                    quantization,
                    has_rank: true,
                    ..Default::default()
                },
            ));
        }
        let mut codes: Vec<(BuiltinOperator, i32)> = Vec::new();
        let mut operators = Vec::new();
        for op in &self.operators {
            let index = match codes.iter().position(|c| *c == (op.code, op.version)) {
                Some(i) => i,
                None => {
                    codes.push((op.code, op.version));
                    codes.len() - 1
                }
            };
            let (options_type, options) = write_options(&mut fb, &op.options);
            let inputs = fb.create_vector(&op.inputs);
            let outputs = fb.create_vector(&op.outputs);
            operators.push(tflite::Operator::create(
                &mut fb,
                &tflite::OperatorArgs {
                    opcode_index: index as u32,
                    inputs: Some(inputs),
                    outputs: Some(outputs),
                    builtin_options_type: options_type,
                    builtin_options: options,
                    ..Default::default()
                },
            ));
        }
        let tensors = fb.create_vector(&tensors);
        let operators = fb.create_vector(&operators);
        let inputs = fb.create_vector(&self.inputs);
        let outputs = fb.create_vector(&self.outputs);
        let subgraph = tflite::SubGraph::create(
            &mut fb,
            &tflite::SubGraphArgs {
                tensors: Some(tensors),
                inputs: Some(inputs),
                outputs: Some(outputs),
                operators: Some(operators),
                name: None,
            },
        );
        let codes: Vec<_> = codes
            .iter()
            .map(|(code, version)| {
                tflite::OperatorCode::create(
                    &mut fb,
                    &tflite::OperatorCodeArgs {
                        // Builtin codes above 127 live only in `builtin_code`; the deprecated
                        // field holds the placeholder 127 for them.
                        deprecated_builtin_code: code.0.min(127) as i8,
                        custom_code: None,
                        version: *version,
                        builtin_code: *code,
                    },
                )
            })
            .collect();
        let codes = fb.create_vector(&codes);
        let subgraphs = fb.create_vector(&[subgraph]);
        let buffers = fb.create_vector(&buffers);
        let model = tflite::Model::create(
            &mut fb,
            &tflite::ModelArgs {
                version: 3,
                operator_codes: Some(codes),
                subgraphs: Some(subgraphs),
                description: None,
                buffers: Some(buffers),
                ..Default::default()
            },
        );
        fb.finish(model, Some("TFL3"));
        fb.finished_data().to_vec()
    }
}

fn read_options(op: &tflite::Operator, code: BuiltinOperator) -> Result<Options, ExportError> {
    let kind = op.builtin_options_type();
    let missing = || bad(format!("{code:?} has options of type {kind:?}"));
    Ok(match kind {
        BuiltinOptions::NONE => Options::None,
        BuiltinOptions::Conv2DOptions => {
            let o = op
                .builtin_options_as_conv_2_doptions()
                .ok_or_else(missing)?;
            Options::Conv2D {
                padding: o.padding(),
                stride: (o.stride_w(), o.stride_h()),
                dilation: (o.dilation_w_factor(), o.dilation_h_factor()),
                activation: o.fused_activation_function(),
            }
        }
        BuiltinOptions::DepthwiseConv2DOptions => {
            let o = op
                .builtin_options_as_depthwise_conv_2_doptions()
                .ok_or_else(missing)?;
            Options::DepthwiseConv2D {
                padding: o.padding(),
                stride: (o.stride_w(), o.stride_h()),
                dilation: (o.dilation_w_factor(), o.dilation_h_factor()),
                depth_multiplier: o.depth_multiplier(),
                activation: o.fused_activation_function(),
            }
        }
        BuiltinOptions::Pool2DOptions => {
            let o = op
                .builtin_options_as_pool_2_doptions()
                .ok_or_else(missing)?;
            Options::Pool2D {
                padding: o.padding(),
                stride: (o.stride_w(), o.stride_h()),
                filter: (o.filter_width(), o.filter_height()),
                activation: o.fused_activation_function(),
            }
        }
        BuiltinOptions::ReshapeOptions => {
            let o = op
                .builtin_options_as_reshape_options()
                .ok_or_else(missing)?;
            Options::Reshape(o.new_shape().map(|s| s.iter().collect()))
        }
        BuiltinOptions::SqueezeOptions => {
            let o = op
                .builtin_options_as_squeeze_options()
                .ok_or_else(missing)?;
            Options::Squeeze(
                o.squeeze_dims()
                    .map(|s| s.iter().collect())
                    .unwrap_or_default(),
            )
        }
        BuiltinOptions::ConcatenationOptions => {
            let o = op
                .builtin_options_as_concatenation_options()
                .ok_or_else(missing)?;
            Options::Concatenation {
                axis: o.axis(),
                activation: o.fused_activation_function(),
            }
        }
        BuiltinOptions::SoftmaxOptions => {
            let o = op
                .builtin_options_as_softmax_options()
                .ok_or_else(missing)?;
            Options::Softmax(o.beta())
        }
        BuiltinOptions::BatchMatMulOptions => {
            let o = op
                .builtin_options_as_batch_mat_mul_options()
                .ok_or_else(missing)?;
            Options::BatchMatMul {
                adj_x: o.adj_x(),
                adj_y: o.adj_y(),
            }
        }
        BuiltinOptions::ReducerOptions => {
            let o = op
                .builtin_options_as_reducer_options()
                .ok_or_else(missing)?;
            Options::Reducer(o.keep_dims())
        }
        BuiltinOptions::StridedSliceOptions => {
            let o = op
                .builtin_options_as_strided_slice_options()
                .ok_or_else(missing)?;
            Options::StridedSlice {
                begin_mask: o.begin_mask(),
                end_mask: o.end_mask(),
                ellipsis_mask: o.ellipsis_mask(),
                new_axis_mask: o.new_axis_mask(),
                shrink_axis_mask: o.shrink_axis_mask(),
            }
        }
        BuiltinOptions::AddOptions => {
            let o = op.builtin_options_as_add_options().ok_or_else(missing)?;
            Options::Arithmetic(kind, o.fused_activation_function())
        }
        BuiltinOptions::SubOptions => {
            let o = op.builtin_options_as_sub_options().ok_or_else(missing)?;
            Options::Arithmetic(kind, o.fused_activation_function())
        }
        BuiltinOptions::MulOptions => {
            let o = op.builtin_options_as_mul_options().ok_or_else(missing)?;
            Options::Arithmetic(kind, o.fused_activation_function())
        }
        BuiltinOptions::DivOptions => {
            let o = op.builtin_options_as_div_options().ok_or_else(missing)?;
            Options::Arithmetic(kind, o.fused_activation_function())
        }
        BuiltinOptions::FullyConnectedOptions => {
            let o = op
                .builtin_options_as_fully_connected_options()
                .ok_or_else(missing)?;
            Options::FullyConnected {
                activation: o.fused_activation_function(),
                keep_num_dims: o.keep_num_dims(),
            }
        }
        BuiltinOptions::TransposeOptions
        | BuiltinOptions::ExpandDimsOptions
        | BuiltinOptions::PadV2Options
        | BuiltinOptions::PadOptions
        | BuiltinOptions::SliceOptions
        | BuiltinOptions::MaximumMinimumOptions
        | BuiltinOptions::HardSwishOptions
        | BuiltinOptions::ExpOptions
        | BuiltinOptions::SquareOptions
        | BuiltinOptions::AbsOptions
        | BuiltinOptions::QuantizeOptions
        | BuiltinOptions::DequantizeOptions => Options::Empty(kind),
        other => {
            return Err(bad(format!(
                "{code:?} has options {other:?}, which this pass does not carry"
            )));
        }
    })
}

type Union = flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>;

fn write_options(
    fb: &mut flatbuffers::FlatBufferBuilder<'_>,
    options: &Options,
) -> (BuiltinOptions, Option<Union>) {
    use tflite::*;
    macro_rules! empty {
        ($kind:expr, $table:ident, $args:ident) => {
            ($kind, Some($table::create(fb, &$args {}).as_union_value()))
        };
    }
    match options {
        Options::None => (BuiltinOptions::NONE, None),
        Options::Empty(kind) => match *kind {
            BuiltinOptions::TransposeOptions => {
                empty!(*kind, TransposeOptions, TransposeOptionsArgs)
            }
            BuiltinOptions::ExpandDimsOptions => {
                empty!(*kind, ExpandDimsOptions, ExpandDimsOptionsArgs)
            }
            BuiltinOptions::PadV2Options => empty!(*kind, PadV2Options, PadV2OptionsArgs),
            BuiltinOptions::PadOptions => empty!(*kind, PadOptions, PadOptionsArgs),
            BuiltinOptions::SliceOptions => empty!(*kind, SliceOptions, SliceOptionsArgs),
            BuiltinOptions::MaximumMinimumOptions => {
                empty!(*kind, MaximumMinimumOptions, MaximumMinimumOptionsArgs)
            }
            BuiltinOptions::HardSwishOptions => {
                empty!(*kind, HardSwishOptions, HardSwishOptionsArgs)
            }
            BuiltinOptions::ExpOptions => empty!(*kind, ExpOptions, ExpOptionsArgs),
            BuiltinOptions::SquareOptions => empty!(*kind, SquareOptions, SquareOptionsArgs),
            BuiltinOptions::AbsOptions => empty!(*kind, AbsOptions, AbsOptionsArgs),
            BuiltinOptions::QuantizeOptions => {
                empty!(*kind, QuantizeOptions, QuantizeOptionsArgs)
            }
            BuiltinOptions::DequantizeOptions => {
                empty!(*kind, DequantizeOptions, DequantizeOptionsArgs)
            }
            // `read_options` admits no other empty kind.
            _ => (BuiltinOptions::NONE, None),
        },
        Options::Conv2D {
            padding,
            stride,
            dilation,
            activation,
        } => (
            BuiltinOptions::Conv2DOptions,
            Some(
                Conv2DOptions::create(
                    fb,
                    &Conv2DOptionsArgs {
                        padding: *padding,
                        stride_w: stride.0,
                        stride_h: stride.1,
                        fused_activation_function: *activation,
                        dilation_w_factor: dilation.0,
                        dilation_h_factor: dilation.1,
                    },
                )
                .as_union_value(),
            ),
        ),
        Options::DepthwiseConv2D {
            padding,
            stride,
            dilation,
            depth_multiplier,
            activation,
        } => (
            BuiltinOptions::DepthwiseConv2DOptions,
            Some(
                DepthwiseConv2DOptions::create(
                    fb,
                    &DepthwiseConv2DOptionsArgs {
                        padding: *padding,
                        stride_w: stride.0,
                        stride_h: stride.1,
                        depth_multiplier: *depth_multiplier,
                        fused_activation_function: *activation,
                        dilation_w_factor: dilation.0,
                        dilation_h_factor: dilation.1,
                    },
                )
                .as_union_value(),
            ),
        ),
        Options::Pool2D {
            padding,
            stride,
            filter,
            activation,
        } => (
            BuiltinOptions::Pool2DOptions,
            Some(
                Pool2DOptions::create(
                    fb,
                    &Pool2DOptionsArgs {
                        padding: *padding,
                        stride_w: stride.0,
                        stride_h: stride.1,
                        filter_width: filter.0,
                        filter_height: filter.1,
                        fused_activation_function: *activation,
                    },
                )
                .as_union_value(),
            ),
        ),
        Options::Reshape(shape) => {
            let new_shape = shape.as_ref().map(|s| fb.create_vector(s));
            (
                BuiltinOptions::ReshapeOptions,
                Some(
                    ReshapeOptions::create(fb, &ReshapeOptionsArgs { new_shape }).as_union_value(),
                ),
            )
        }
        Options::Squeeze(dims) => {
            let squeeze_dims = Some(fb.create_vector(dims));
            (
                BuiltinOptions::SqueezeOptions,
                Some(
                    SqueezeOptions::create(fb, &SqueezeOptionsArgs { squeeze_dims })
                        .as_union_value(),
                ),
            )
        }
        Options::Concatenation { axis, activation } => (
            BuiltinOptions::ConcatenationOptions,
            Some(
                ConcatenationOptions::create(
                    fb,
                    &ConcatenationOptionsArgs {
                        axis: *axis,
                        fused_activation_function: *activation,
                    },
                )
                .as_union_value(),
            ),
        ),
        Options::Softmax(beta) => (
            BuiltinOptions::SoftmaxOptions,
            Some(SoftmaxOptions::create(fb, &SoftmaxOptionsArgs { beta: *beta }).as_union_value()),
        ),
        Options::BatchMatMul { adj_x, adj_y } => (
            BuiltinOptions::BatchMatMulOptions,
            Some(
                BatchMatMulOptions::create(
                    fb,
                    &BatchMatMulOptionsArgs {
                        adj_x: *adj_x,
                        adj_y: *adj_y,
                        asymmetric_quantize_inputs: false,
                    },
                )
                .as_union_value(),
            ),
        ),
        Options::Reducer(keep_dims) => (
            BuiltinOptions::ReducerOptions,
            Some(
                ReducerOptions::create(
                    fb,
                    &ReducerOptionsArgs {
                        keep_dims: *keep_dims,
                    },
                )
                .as_union_value(),
            ),
        ),
        Options::StridedSlice {
            begin_mask,
            end_mask,
            ellipsis_mask,
            new_axis_mask,
            shrink_axis_mask,
        } => (
            BuiltinOptions::StridedSliceOptions,
            Some(
                StridedSliceOptions::create(
                    fb,
                    &StridedSliceOptionsArgs {
                        begin_mask: *begin_mask,
                        end_mask: *end_mask,
                        ellipsis_mask: *ellipsis_mask,
                        new_axis_mask: *new_axis_mask,
                        shrink_axis_mask: *shrink_axis_mask,
                    },
                )
                .as_union_value(),
            ),
        ),
        Options::Arithmetic(kind, activation) => {
            let value = match *kind {
                BuiltinOptions::AddOptions => AddOptions::create(
                    fb,
                    &AddOptionsArgs {
                        fused_activation_function: *activation,
                        pot_scale_int16: false,
                    },
                )
                .as_union_value(),
                BuiltinOptions::SubOptions => SubOptions::create(
                    fb,
                    &SubOptionsArgs {
                        fused_activation_function: *activation,
                        pot_scale_int16: false,
                    },
                )
                .as_union_value(),
                BuiltinOptions::MulOptions => MulOptions::create(
                    fb,
                    &MulOptionsArgs {
                        fused_activation_function: *activation,
                    },
                )
                .as_union_value(),
                _ => DivOptions::create(
                    fb,
                    &DivOptionsArgs {
                        fused_activation_function: *activation,
                    },
                )
                .as_union_value(),
            };
            (*kind, Some(value))
        }
        Options::FullyConnected {
            activation,
            keep_num_dims,
        } => (
            BuiltinOptions::FullyConnectedOptions,
            Some(
                FullyConnectedOptions::create(
                    fb,
                    &FullyConnectedOptionsArgs {
                        fused_activation_function: *activation,
                        keep_num_dims: *keep_num_dims,
                        ..Default::default()
                    },
                )
                .as_union_value(),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading and writing our own fp32 export gives a file LiteRT-equivalent to it: the same
    /// tensors, ops and options, byte for byte in every constant.
    #[test]
    fn read_then_write_keeps_every_tensor_and_op() {
        let onnx = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/models/ppocr_cls.onnx"
        ))
        .unwrap();
        let shapes = [("x".to_owned(), vec![1, 3, 48, 192])].into();
        let exported = crate::tflite::export(&onnx, &shapes).unwrap();
        let graph = Graph::read(&exported.bytes).unwrap();
        let again = Graph::read(&graph.write()).unwrap();
        assert_eq!(graph.tensors.len(), again.tensors.len());
        for (a, b) in graph.tensors.iter().zip(&again.tensors) {
            assert_eq!(
                (&a.name, &a.shape, a.dtype, &a.data),
                (&b.name, &b.shape, b.dtype, &b.data)
            );
        }
        assert_eq!(graph.operators.len(), again.operators.len());
        for (a, b) in graph.operators.iter().zip(&again.operators) {
            assert_eq!(
                (a.code, a.version, &a.inputs, &a.outputs, &a.options),
                (b.code, b.version, &b.inputs, &b.outputs, &b.options)
            );
        }
        assert_eq!(
            (&graph.inputs, &graph.outputs),
            (&again.inputs, &again.outputs)
        );

        // Hostile files: an index past the tensors, truncations, noise. Errors, never panics.
        let mut lying = graph.clone();
        lying.operators[3].inputs[0] = 9999;
        assert!(Graph::read(&lying.write()).is_err());
        let mut no_output = graph.clone();
        no_output.operators[0].outputs.clear();
        assert!(Graph::read(&no_output.write()).is_err());
        for cut in [0, 8, exported.bytes.len() / 2, exported.bytes.len() - 1] {
            assert!(Graph::read(&exported.bytes[..cut]).is_err(), "cut at {cut}");
            let ranges = Default::default();
            assert!(crate::tflite::quantize::quantize(&exported.bytes[..cut], &ranges).is_err());
        }
        assert!(Graph::read(b"TFL3 but not a flatbuffer at all").is_err());
    }

    /// Two constants with the same bytes are written once and read back as two tensors.
    #[test]
    fn identical_constants_share_one_buffer() {
        let onnx = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/models/ppocr_cls.onnx"
        ))
        .unwrap();
        let shapes = [("x".to_owned(), vec![1, 3, 48, 192])].into();
        let exported = crate::tflite::export(&onnx, &shapes).unwrap();
        let mut graph = Graph::read(&exported.bytes).unwrap();
        let (big, bytes) = graph
            .tensors
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.data.as_ref().map(|d| (i, d.len())))
            .max_by_key(|(_, len)| *len)
            .unwrap();
        let mut twin = graph.tensors[big].clone();
        twin.name.push_str(".twin");
        graph.push(twin);
        // An extra tensor no op reads still counts (compact would drop it): the file grows by
        // the tensor's table, not by its data.
        let once = graph.write();
        assert!(
            once.len() < exported.bytes.len() + bytes / 2,
            "{} vs {}",
            once.len(),
            exported.bytes.len()
        );
        let again = Graph::read(&once).unwrap();
        let last = again.tensors.last().unwrap();
        assert_eq!(last.data, again.tensors[big].data);
        assert!(last.name.ends_with(".twin"));
    }
}
