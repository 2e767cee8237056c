"""One small ONNX model per operator and attribute form the engine supports, with
onnxruntime's answer on seeded inputs, for the engine's operator-by-operator test.

usage: make_onnx_ops.py OUT_DIR

Writes OUT_DIR/NAME/ for each case, in the layout of onnx_reference.py (one step):
  model.onnx   the one-node (or few-node) graph, inputs of fixed shapes
  meta.json    input and output dtypes and shapes
  in{k}.0.bin  input k, little-endian
  out{j}.0.bin output j as onnxruntime gives it (one intra-op thread)
and OUT_DIR/cases.json: each case's name, the operators its graph uses, and, for a form the
engine refuses, what its refusal says.
Float inputs are normal (mean 0, sd 1) unless a case says otherwise, so signs, zeros of
activations and negative slopes are all exercised. Cases are listed in one table below;
each is (name, nodes, inputs, initializers, outputs[, opset][, refused]).
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(7)
F = np.float32


def normal(*shape):
    return RNG.standard_normal(shape).astype(F)


def positive(*shape):
    return RNG.uniform(0.1, 2.0, shape).astype(F)


def ints(high, *shape, low=0):
    return RNG.integers(low, high, shape).astype(np.int64)


def bools(*shape):
    return RNG.integers(0, 2, shape).astype(np.bool_)


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


CASES = []


def case(name, nodes, inputs, inits=None, outputs=("y",), opset=17, refused=None):
    """`refused`: the engine refuses this form, with this in its message (onnxruntime's
    answer is still recorded, for when it no longer does)."""
    if not isinstance(nodes, list):
        nodes = [nodes]
    CASES.append((name, nodes, inputs, inits or {}, list(outputs), opset, refused))


X = normal(2, 3, 4, 5)

# Elementwise, one input.
for op in ["Relu", "Sigmoid", "Tanh", "HardSwish", "Exp", "Neg", "Abs", "Floor", "Ceil",
           "Sin", "Cos", "Erf", "Softplus", "Identity", "Dropout"]:
    case(op.lower(), node(op, ["x"]), {"x": X})
case("round", node("Round", ["x"]), {"x": (normal(2, 3, 4, 5) * 3).round(1)})
case("log", node("Log", ["x"]), {"x": positive(2, 3, 4, 5)})
case("sqrt", node("Sqrt", ["x"]), {"x": positive(2, 3, 4, 5)})
case("reciprocal", node("Reciprocal", ["x"]), {"x": positive(2, 3, 4, 5)})
case("hard_sigmoid", node("HardSigmoid", ["x"], alpha=0.3, beta=0.4), {"x": X})
case("leaky_relu", node("LeakyRelu", ["x"], alpha=0.2), {"x": X})
case("elu", node("Elu", ["x"], alpha=0.7), {"x": X})
case("gelu", node("Gelu", ["x"]), {"x": X}, opset=20)
case("not", node("Not", ["x"]), {"x": bools(3, 4)})
case("clip", node("Clip", ["x", "lo", "hi"]), {"x": X}, {"lo": np.array(-0.5, F), "hi": np.array(0.7, F)})
case("clip_min_only", node("Clip", ["x", "lo"]), {"x": X}, {"lo": np.array(-0.2, F)})
case("clip_attributes_opset10", node("Clip", ["x"], min=-0.3, max=0.4), {"x": X}, opset=10)
case("prelu", node("PRelu", ["x", "slope"]), {"x": X}, {"slope": normal(3, 1, 1)})

# Elementwise, two or more inputs, with broadcasting.
for op in ["Add", "Sub", "Mul", "Div"]:
    case(f"{op.lower()}_last_axis", node(op, ["a", "b"]), {"a": X, "b": positive(5)})
    case(f"{op.lower()}_both_broadcast", node(op, ["a", "b"]), {"a": normal(2, 1, 4, 1), "b": positive(1, 3, 1, 5)})
case("add_scalar_initializer", node("Add", ["a", "b"]), {"a": X}, {"b": np.array(1.5, F)})
case("add_int64", node("Add", ["a", "b"]), {"a": ints(100, 3, 4), "b": ints(100, 4)})
case("mul_int64_by_initializer", node("Mul", ["a", "b"]), {"a": ints(100, 3, 4)}, {"b": np.array([3], np.int64)})
case("pow", node("Pow", ["a", "b"]), {"a": positive(2, 3, 4), "b": normal(4)})
case("pow_square", node("Pow", ["a", "b"]), {"a": X}, {"b": np.array(2.0, F)})
for op in ["Sum", "Max", "Min", "Mean"]:
    case(f"{op.lower()}_three", node(op, ["a", "b", "c"]), {"a": X, "b": normal(4, 5), "c": normal(1, 3, 1, 1)})
case("max_one", node("Max", ["a"]), {"a": X})
case("mean_one", node("Mean", ["a"]), {"a": X})
for op in ["Less", "LessOrEqual", "Greater", "GreaterOrEqual"]:
    case(op.lower(), node(op, ["a", "b"]), {"a": normal(3, 4), "b": normal(4)})
case("equal_int64", node("Equal", ["a", "b"]), {"a": ints(3, 3, 4), "b": ints(3, 4)})
case("and", node("And", ["a", "b"]), {"a": bools(3, 4), "b": bools(3, 4)})
case("or", node("Or", ["a", "b"]), {"a": bools(3, 4), "b": bools(1, 4)})
case("where", node("Where", ["c", "a", "b"]), {"c": bools(3, 4), "a": normal(3, 4), "b": normal(4)})
case("where_from_compare", [node("Greater", ["a", "b"], ["c"]), node("Where", ["c", "a", "b"])],
     {"a": normal(3, 4), "b": normal(3, 4)})

# Types.
case("cast_float_to_int64", node("Cast", ["x"], to=TensorProto.INT64), {"x": normal(3, 4) * 10})
case("cast_int64_to_float", node("Cast", ["x"], to=TensorProto.FLOAT), {"x": ints(50, 3, 4, low=-50)})
case("cast_bool_to_float", node("Cast", ["x"], to=TensorProto.FLOAT), {"x": bools(3, 4)})
case("cast_float_to_float", node("Cast", ["x"], to=TensorProto.FLOAT), {"x": normal(3, 4)})

# Shapes and data movement.
case("shape", node("Shape", ["x"]), {"x": X})
case("size", node("Size", ["x"]), {"x": X})
case("reshape_with_minus_one_and_zero", node("Reshape", ["x", "s"]), {"x": X}, {"s": np.array([0, -1, 5], np.int64)})
case("reshape_from_shape", [node("Shape", ["x"], ["s"]), node("Reshape", ["t", "s"])],
     {"x": X, "t": normal(120)})
case("flatten_axis_2", node("Flatten", ["x"], axis=2), {"x": X})
case("flatten_axis_0", node("Flatten", ["x"], axis=0), {"x": X})
case("squeeze_axes", node("Squeeze", ["x", "a"]), {"x": normal(2, 1, 4, 1)}, {"a": np.array([1, -1], np.int64)})
case("squeeze_all", node("Squeeze", ["x"]), {"x": normal(2, 1, 4, 1)})
case("squeeze_attribute_opset11", node("Squeeze", ["x"], axes=[1]), {"x": normal(2, 1, 4)}, opset=11)
case("unsqueeze", node("Unsqueeze", ["x", "a"]), {"x": normal(3, 4)}, {"a": np.array([0, 3], np.int64)})
case("unsqueeze_attribute_opset11", node("Unsqueeze", ["x"], axes=[1]), {"x": normal(3, 4)}, opset=11)
case("transpose_perm", node("Transpose", ["x"], perm=[0, 2, 3, 1]), {"x": X})
case("transpose_reverse", node("Transpose", ["x"]), {"x": normal(2, 3, 4)})
case("concat_axis_1", node("Concat", ["a", "b", "c"], axis=1), {"a": X, "b": normal(2, 1, 4, 5), "c": normal(2, 2, 4, 5)})
case("concat_negative_axis", node("Concat", ["a", "b"], axis=-1), {"a": normal(3, 2), "b": normal(3, 5)})
case("concat_int64", node("Concat", ["a", "b"], axis=0), {"a": ints(9, 2), "b": ints(9, 3)})
case("split_equal", node("Split", ["x"], ["y0", "y1", "y2"], axis=1), {"x": normal(2, 6, 4)}, outputs=["y0", "y1", "y2"], opset=13)
case("split_sizes", node("Split", ["x", "s"], ["y0", "y1"], axis=-1), {"x": normal(2, 3, 7)}, {"s": np.array([3, 4], np.int64)}, outputs=["y0", "y1"])
case("split_attribute_opset11", node("Split", ["x"], ["y0", "y1"], axis=0, split=[1, 3]), {"x": normal(4, 3)}, outputs=["y0", "y1"], opset=11)
case("slice", node("Slice", ["x", "s", "e", "a"]), {"x": X},
     {"s": np.array([1, 0], np.int64), "e": np.array([3, 4], np.int64), "a": np.array([1, 3], np.int64)})
case("slice_steps_and_negatives", node("Slice", ["x", "s", "e", "a", "t"]), {"x": X},
     {"s": np.array([-1, 0], np.int64), "e": np.array([-100, 100], np.int64), "a": np.array([3, 2], np.int64), "t": np.array([-2, 3], np.int64)})
case("slice_no_axes", node("Slice", ["x", "s", "e"]), {"x": normal(5, 6)},
     {"s": np.array([1, 2], np.int64), "e": np.array([4, 6], np.int64)})
case("pad_constant", node("Pad", ["x", "p", "v"]), {"x": normal(1, 2, 3, 4)},
     {"p": np.array([0, 0, 1, 2, 0, 1, 2, 0], np.int64), "v": np.array(0.5, F)})
case("pad_reflect", node("Pad", ["x", "p"], mode="reflect"), {"x": normal(1, 2, 4, 5)},
     {"p": np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64)})
case("pad_edge", node("Pad", ["x", "p"], mode="edge"), {"x": normal(1, 2, 4, 5)},
     {"p": np.array([0, 0, 1, 2, 0, 0, 3, 1], np.int64)})
case("pad_attribute_opset10", node("Pad", ["x"], pads=[0, 1, 0, 2], value=-1.0), {"x": normal(3, 4)}, opset=10)
case("gather_axis_0", node("Gather", ["x", "i"]), {"x": normal(5, 4)}, {"i": np.array([[0, 4], [-1, 2]], np.int64)})
case("gather_axis_1", node("Gather", ["x", "i"], axis=1), {"x": X}, {"i": np.array([2, 0, -3], np.int64)})
case("gather_scalar_index", node("Gather", ["x", "i"], axis=2), {"x": X}, {"i": np.array(1, np.int64)})
case("gather_runtime_indices", node("Gather", ["x", "i"]), {"x": normal(6, 3), "i": ints(6, 4)})
case("expand", node("Expand", ["x", "s"]), {"x": normal(3, 1)}, {"s": np.array([2, 3, 4], np.int64)})
case("tile", node("Tile", ["x", "r"]), {"x": normal(2, 3)}, {"r": np.array([2, 3], np.int64)})
case("constant_of_shape", [node("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.array([0.25], F))),
                           node("Add", ["x", "c"])], {"x": normal(2, 3)}, {"s": np.array([2, 3], np.int64)})
case("constant", [node("Constant", [], ["c"], value=numpy_helper.from_array(normal(3))), node("Mul", ["x", "c"])],
     {"x": normal(2, 3)})
case("range", [node("Range", ["a", "b", "d"], ["r"]), node("Add", ["x", "r"])], {"x": normal(2, 5)},
     {"a": np.array(1.0, F), "b": np.array(3.5, F), "d": np.array(0.5, F)})
case("depth_to_space", node("DepthToSpace", ["x"], blocksize=2), {"x": normal(1, 8, 3, 4)})
case("space_to_depth", node("SpaceToDepth", ["x"], blocksize=2), {"x": normal(1, 2, 4, 6)})

# Reductions and normalisations.
case("softmax_last", node("Softmax", ["x"]), {"x": X * 3})
case("softmax_axis_1", node("Softmax", ["x"], axis=1), {"x": X * 3})
case("softmax_opset11_flattens", node("Softmax", ["x"], axis=1), {"x": normal(2, 3, 4)}, opset=11)
case("log_softmax", node("LogSoftmax", ["x"], axis=-1), {"x": X * 3})
for kind in ["Mean", "Sum", "Max", "Min", "Prod"]:
    op = f"Reduce{kind}"
    case(f"reduce_{kind.lower()}_keepdims", node(op, ["x", "a"]), {"x": X}, {"a": np.array([1, 3], np.int64)}, opset=18)
    case(f"reduce_{kind.lower()}_dropped", node(op, ["x", "a"], keepdims=0), {"x": X}, {"a": np.array([-1], np.int64)}, opset=18)
case("reduce_mean_all", node("ReduceMean", ["x"], keepdims=0), {"x": X}, opset=18)
case("reduce_mean_attribute_opset13", node("ReduceMean", ["x"], axes=[2, 3]), {"x": X}, opset=13)
case("reduce_sum_axes_input_opset13", node("ReduceSum", ["x", "a"]), {"x": X}, {"a": np.array([0], np.int64)}, opset=13)
case("argmax", node("ArgMax", ["x"], axis=1), {"x": X})
case("argmin_dropped", node("ArgMin", ["x"], axis=-1, keepdims=0), {"x": X})
case("batch_norm", node("BatchNormalization", ["x", "s", "b", "m", "v"]), {"x": X},
     {"s": normal(3), "b": normal(3), "m": normal(3), "v": positive(3)})
case("instance_norm", node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-3), {"x": X},
     {"s": normal(3), "b": normal(3)})
case("layer_norm", node("LayerNormalization", ["x", "s", "b"]), {"x": normal(2, 4, 6)},
     {"s": normal(6), "b": normal(6)})
case("layer_norm_no_bias", node("LayerNormalization", ["x", "s"], epsilon=1e-3), {"x": normal(2, 4, 6)},
     {"s": normal(6)})
case("lrn", node("LRN", ["x"], size=3, alpha=1e-3, beta=0.75, bias=1.0), {"x": normal(1, 5, 4, 4)})

# Convolutions, pools, resizing.
XI = normal(1, 4, 9, 9)
case("conv", node("Conv", ["x", "w", "b"]), {"x": XI}, {"w": normal(6, 4, 3, 3), "b": normal(6)})
case("conv_padded_strided", node("Conv", ["x", "w"], pads=[1, 2, 1, 0], strides=[2, 2]), {"x": XI}, {"w": normal(6, 4, 3, 3)})
case("conv_dilated", node("Conv", ["x", "w", "b"], dilations=[2, 2], pads=[2, 2, 2, 2]), {"x": XI},
     {"w": normal(5, 4, 3, 3), "b": normal(5)})
case("conv_same_upper", node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2]), {"x": XI}, {"w": normal(4, 4, 3, 3)})
case("conv_grouped", node("Conv", ["x", "w", "b"], group=2, pads=[1, 1, 1, 1]), {"x": XI}, {"w": normal(6, 2, 3, 3), "b": normal(6)})
case("conv_depthwise", node("Conv", ["x", "w", "b"], group=4, pads=[1, 1, 1, 1]), {"x": XI}, {"w": normal(4, 1, 3, 3), "b": normal(4)})
case("conv_depthwise_strided", node("Conv", ["x", "w"], group=4, strides=[2, 2], pads=[0, 0, 1, 1]), {"x": XI}, {"w": normal(4, 1, 3, 3)})
case("conv_pointwise", node("Conv", ["x", "w", "b"]), {"x": XI}, {"w": normal(8, 4, 1, 1), "b": normal(8)})
case("conv_rectangular_kernel", node("Conv", ["x", "w"], pads=[0, 2, 0, 2]), {"x": XI}, {"w": normal(3, 4, 1, 5)})
case("conv_1d", node("Conv", ["x", "w", "b"], pads=[1, 1]), {"x": normal(2, 3, 10)}, {"w": normal(4, 3, 3), "b": normal(4)})
case("conv_then_relu", [node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"])], {"x": XI},
     {"w": normal(6, 4, 3, 3), "b": normal(6)})
case("conv_then_add", [node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Add", ["c", "x"])], {"x": XI},
     {"w": normal(4, 4, 3, 3)})
case("conv_transpose", node("ConvTranspose", ["x", "w", "b"], strides=[2, 2]), {"x": normal(1, 4, 5, 5)},
     {"w": normal(4, 3, 3, 3), "b": normal(3)})
case("conv_transpose_padded", node("ConvTranspose", ["x", "w"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
     {"x": normal(1, 4, 5, 5)}, {"w": normal(4, 2, 3, 3)})
case("conv_transpose_grouped", node("ConvTranspose", ["x", "w"], group=2, strides=[2, 2]), {"x": normal(1, 4, 4, 4)},
     {"w": normal(4, 1, 2, 2)}, refused="grouped transposed convolutions")
case("max_pool", node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), {"x": XI})
case("max_pool_ceil", node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), {"x": XI})
case("max_pool_same_upper", node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"), {"x": XI})
case("average_pool", node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[1, 1]), {"x": XI})
case("average_pool_excluding_pads", node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), {"x": XI})
case("average_pool_including_pads", node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                          count_include_pad=1), {"x": XI})
case("global_average_pool", node("GlobalAveragePool", ["x"]), {"x": XI})
case("global_max_pool", node("GlobalMaxPool", ["x"]), {"x": XI})
case("resize_nearest_scales", node("Resize", ["x", "", "s"], mode="nearest"), {"x": normal(1, 2, 3, 4)},
     {"s": np.array([1, 1, 2, 2], F)})
case("resize_linear_sizes", node("Resize", ["x", "", "", "z"], mode="linear"), {"x": normal(1, 2, 3, 4)},
     {"z": np.array([1, 2, 7, 5], np.int64)})
case("resize_linear_align_corners", node("Resize", ["x", "", "s"], mode="linear", coordinate_transformation_mode="align_corners"),
     {"x": normal(1, 2, 3, 4)}, {"s": np.array([1, 1, 2, 2], F)})
case("resize_nearest_asymmetric_floor", node("Resize", ["x", "", "s"], mode="nearest",
     coordinate_transformation_mode="asymmetric", nearest_mode="floor"), {"x": normal(1, 2, 3, 4)},
     {"s": np.array([1, 1, 3, 2], F)})
case("upsample_opset9", node("Upsample", ["x", "s"], mode="nearest"), {"x": normal(1, 2, 3, 4)},
     {"s": np.array([1, 1, 2, 2], F)}, opset=9)

# Matrix products.
case("gemm", node("Gemm", ["a", "b", "c"]), {"a": normal(3, 4)}, {"b": normal(4, 5), "c": normal(5)})
case("gemm_transposed_scaled", node("Gemm", ["a", "b", "c"], transA=1, transB=1, alpha=0.5, beta=2.0),
     {"a": normal(4, 3)}, {"b": normal(5, 4), "c": normal(3, 5)})
case("gemm_no_bias", node("Gemm", ["a", "b"], transB=1), {"a": normal(3, 4)}, {"b": normal(6, 4)})
case("gemm_runtime_b", node("Gemm", ["a", "b"]), {"a": normal(3, 4), "b": normal(4, 2)})
case("gemm_runtime_b_transposed_scaled_with_bias", node("Gemm", ["a", "b", "c"], transA=1, transB=1, alpha=0.5, beta=1.5),
     {"a": normal(4, 3), "b": normal(2, 4)}, {"c": normal(2)})
case("gemm_runtime_b_scaled", node("Gemm", ["a", "b"], alpha=2.0), {"a": normal(3, 4), "b": normal(4, 2)})
case("matmul", node("MatMul", ["a", "b"]), {"a": normal(3, 4)}, {"b": normal(4, 5)})
case("matmul_batched_weights", node("MatMul", ["a", "b"]), {"a": normal(2, 3, 4)}, {"b": normal(4, 5)})
case("matmul_both_runtime_broadcast", node("MatMul", ["a", "b"]), {"a": normal(2, 1, 3, 4), "b": normal(3, 4, 2)})
case("matmul_vector", node("MatMul", ["a", "b"]), {"a": normal(2, 3, 4)}, {"b": normal(4)})
case("matmul_row_vector", node("MatMul", ["a", "b"]), {"a": normal(4), "b": normal(2, 4, 3)})
case("matmul_two_vectors", node("MatMul", ["a", "b"]), {"a": normal(4), "b": normal(4)})
case("matmul_add", [node("MatMul", ["a", "b"], ["m"]), node("Add", ["m", "c"])], {"a": normal(2, 3, 4)},
     {"b": normal(4, 6), "c": normal(6)})

# Recurrent.
H = 3
case("lstm", node("LSTM", ["x", "w", "r", "b", "", "h0", "c0"], ["y", "yh", "yc"], hidden_size=H),
     {"x": normal(4, 2, 5)},
     {"w": normal(1, 4 * H, 5) * 0.5, "r": normal(1, 4 * H, H) * 0.5, "b": normal(1, 8 * H) * 0.5,
      "h0": normal(1, 2, H), "c0": normal(1, 2, H)}, outputs=["y", "yh", "yc"])
case("lstm_no_state", node("LSTM", ["x", "w", "r"], ["y"], hidden_size=H), {"x": normal(3, 1, 4)},
     {"w": normal(1, 4 * H, 4) * 0.5, "r": normal(1, 4 * H, H) * 0.5})

TYPES = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.bool_): TensorProto.BOOL,
}


def build(name, nodes, inputs, inits, outputs, opset):
    graph_inputs = [helper.make_tensor_value_info(n, TYPES[a.dtype], list(a.shape)) for n, a in inputs.items()]
    initializers = [numpy_helper.from_array(a, n) for n, a in inits.items()]
    # Output types from shape inference on a first draft of the graph.
    draft = helper.make_graph(nodes, name, graph_inputs, [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs], initializers)
    draft = helper.make_model(draft, opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(draft, strict_mode=True)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    graph_outputs = []
    for o in outputs:
        assert o in known and known[o].type.tensor_type.elem_type != TensorProto.UNDEFINED, f"{name}: no type for {o}"
        graph_outputs.append(known[o])
    graph = helper.make_graph(nodes, name, graph_inputs, graph_outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    out = sys.argv[1]
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "case names repeat"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    for name, nodes, inputs, inits, outputs, opset, _ in CASES:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        model = build(name, nodes, inputs, inits, outputs, opset)
        path = os.path.join(d, "model.onnx")
        onnx.save(model, path)
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        results = sess.run(None, dict(inputs))
        written = []
        for j, (o, r) in enumerate(zip(outputs, results)):
            r = np.asarray(r)
            r.tofile(os.path.join(d, f"out{j}.0.bin"))
            written.append({"name": o, "dtype": str(r.dtype), "shape": list(r.shape)})
        for k, a in enumerate(inputs.values()):
            a.tofile(os.path.join(d, f"in{k}.0.bin"))
        meta = {
            "inputs": [{"name": n, "dtype": str(a.dtype)} for n, a in inputs.items()],
            "input_shapes": [[list(a.shape) for a in inputs.values()]],
            "outputs": [written],
            "steps": 1,
            "carry": [],
        }
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump(meta, f)
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({c[0]: {"ops": sorted({n.op_type for n in c[1]}), "refused": c[6]} for c in CASES}, f, indent=1)


if __name__ == "__main__":
    main()
