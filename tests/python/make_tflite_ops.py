"""One small TFLite file per operator form, as TensorFlow's converter writes it: float, and
for the operators int8 models use, full-integer int8 (int8 inputs and outputs), for the
engine's operator-by-operator test against LiteRT.

usage: make_tflite_ops.py OUT_DIR
Writes OUT_DIR/NAME.tflite for each case and OUT_DIR/ops.json (name: file, input range).
Weights are seeded normal values; float inputs are uniform in the case's range. Each case is
(name, function of the inputs, input shapes[, range][, int8]).
"""
import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

RNG = np.random.default_rng(11)


def w(*shape, scale=0.5):
    return tf.constant(RNG.standard_normal(shape).astype("f4") * scale)


CASES = []


def case(name, fn, shapes, lo=-1.0, hi=1.0, int8=False):
    CASES.append((name, fn, shapes, (lo, hi), int8))


IMG = [(1, 8, 8, 4)]
VEC = [(2, 12)]
K33 = w(3, 3, 4, 6)
B6 = w(6)
DW = w(3, 3, 4, 2)

# Convolutions (fused bias and activation), pools, resizes.
case("conv_same_relu", lambda x: tf.nn.relu(tf.nn.conv2d(x, K33, 1, "SAME") + B6), IMG, int8=True)
case("conv_valid_strided", lambda x: tf.nn.conv2d(x, K33, 2, "VALID") + B6, IMG, int8=True)
case("conv_dilated", lambda x: tf.nn.conv2d(x, K33, 1, "SAME", dilations=2), IMG)
case("conv_relu6", lambda x: tf.nn.relu6(tf.nn.conv2d(x, w(1, 1, 4, 8), 1, "SAME")), IMG, int8=True)
case("conv_tanh", lambda x: tf.tanh(tf.nn.conv2d(x, K33, 1, "SAME") + B6), IMG)
case("depthwise_same", lambda x: tf.nn.depthwise_conv2d(x, DW, [1, 1, 1, 1], "SAME"), IMG, int8=True)
case("depthwise_strided_relu", lambda x: tf.nn.relu(tf.nn.depthwise_conv2d(x, w(3, 3, 4, 1), [1, 2, 2, 1], "VALID")), IMG, int8=True)
case("transpose_conv", lambda x: tf.nn.conv2d_transpose(x, w(3, 3, 5, 4), [1, 16, 16, 5], 2, "SAME"), IMG)
case("transpose_conv_valid", lambda x: tf.nn.conv2d_transpose(x, w(3, 3, 3, 4), [1, 17, 17, 3], 2, "VALID"), IMG)
case("max_pool", lambda x: tf.nn.max_pool2d(x, 3, 2, "SAME"), IMG, int8=True)
case("average_pool", lambda x: tf.nn.avg_pool2d(x, 2, 2, "VALID"), IMG, int8=True)
case("average_pool_same", lambda x: tf.nn.avg_pool2d(x, 3, 1, "SAME"), IMG)
case("resize_bilinear", lambda x: tf.image.resize(x, [13, 11], "bilinear"), IMG, int8=True)
case("resize_bilinear_half_pixel_off", lambda x: tf.compat.v1.image.resize_bilinear(x, [16, 16], align_corners=True), IMG)
case("resize_nearest", lambda x: tf.image.resize(x, [16, 16], "nearest"), IMG, int8=True)
case("depth_to_space", lambda x: tf.nn.depth_to_space(x, 2), IMG)
case("space_to_depth", lambda x: tf.nn.space_to_depth(x, 2), IMG)

# Matrix products.
case("fully_connected", lambda x: tf.matmul(x, w(12, 5)) + w(5), VEC, int8=True)
case("fully_connected_relu", lambda x: tf.nn.relu(tf.matmul(x, w(12, 7))), VEC, int8=True)
case("batch_matmul", lambda a, b: tf.matmul(a, b), [(2, 3, 4), (2, 4, 5)])
case("batch_matmul_transposed", lambda a, b: tf.matmul(a, b, transpose_b=True), [(2, 3, 4), (2, 5, 4)])

# Elementwise.
case("add_broadcast", lambda a, b: a + b, [(2, 3, 4), (4,)], int8=True)
case("sub", lambda a, b: a - b, [(2, 3, 4), (2, 3, 4)], int8=True)
case("mul_broadcast", lambda a, b: a * b, [(2, 3, 4), (3, 1)], int8=True)
case("div", lambda a, b: a / b, [(2, 3), (2, 3)], 0.5, 2.0)
case("maximum", lambda a, b: tf.maximum(a, b), [(2, 3, 4), (4,)], int8=True)
case("minimum", lambda a, b: tf.minimum(a, b), [(2, 3, 4), (2, 3, 4)], int8=True)
case("pow", lambda a, b: tf.pow(a, b), [(2, 3), (2, 3)], 0.5, 2.0)
case("squared_difference", lambda a, b: tf.math.squared_difference(a, b), [(2, 3, 4), (4,)])
for name, fn in [("relu", tf.nn.relu), ("relu6", tf.nn.relu6), ("tanh", tf.tanh),
                 ("logistic", tf.sigmoid), ("elu", tf.nn.elu), ("exp", tf.exp),
                 ("neg", tf.negative), ("abs", tf.abs), ("floor", tf.floor), ("ceil", tf.math.ceil),
                 ("round", tf.round), ("sin", tf.sin), ("cos", tf.cos), ("square", tf.square),
                 ("gelu", lambda x: tf.nn.gelu(x, approximate=False)),
                 ("leaky_relu", lambda x: tf.nn.leaky_relu(x, 0.2)),
                 ("relu_n1_to_1", lambda x: tf.clip_by_value(x, -1.0, 1.0)),
                 ("hard_swish", lambda x: x * tf.nn.relu6(x + 3.0) / 6.0)]:
    case(name, fn, [(2, 3, 8)], -3.0, 3.0, int8=name in ("relu", "logistic", "tanh", "hard_swish", "leaky_relu"))
for name, fn in [("log", tf.math.log), ("sqrt", tf.sqrt), ("rsqrt", tf.math.rsqrt)]:
    case(name, fn, [(2, 3, 8)], 0.1, 4.0)
PRELU = tf.keras.layers.PReLU(alpha_initializer=tf.constant_initializer(0.25), shared_axes=[1, 2])
PRELU.build(IMG[0])
case("prelu", lambda x: PRELU(x), IMG)

# Shapes and data movement.
case("reshape", lambda x: tf.reshape(x, [1, 16, 16]), IMG, int8=True)
case("transpose", lambda x: tf.transpose(x, [0, 3, 1, 2]), IMG)
case("squeeze", lambda x: tf.squeeze(x, [0]), IMG)
case("expand_dims", lambda x: tf.expand_dims(x, 1) * 2.0, VEC)
case("concatenation", lambda a, b: tf.concat([a, b], -1), [(1, 4, 4, 3), (1, 4, 4, 5)], int8=True)
case("split", lambda x: tf.split(x, 3, axis=-1)[1] * 2.0, VEC)
case("split_v", lambda x: tf.split(x, [5, 7], axis=1)[1] + 1.0, VEC)
case("slice", lambda x: tf.slice(x, [0, 1, 2, 0], [1, 5, 4, 3]), IMG)
case("strided_slice", lambda x: x[:, 1:7:2, ::-1, 1:], IMG)
case("pad", lambda x: tf.pad(x, [[0, 0], [1, 2], [2, 1], [0, 0]]), IMG, int8=True)
case("padv2", lambda x: tf.pad(x, [[0, 0], [1, 1], [0, 2], [0, 0]], constant_values=0.5), IMG)
case("mirror_pad_reflect", lambda x: tf.pad(x, [[0, 0], [2, 1], [1, 2], [0, 0]], "REFLECT"), IMG)
case("mirror_pad_symmetric", lambda x: tf.pad(x, [[0, 0], [1, 1], [2, 2], [0, 0]], "SYMMETRIC"), IMG)
case("tile", lambda x: tf.tile(x, [2, 3]), VEC)
case("gather", lambda x: tf.gather(x, [3, 0, 7, 7], axis=1), VEC)
case("pack", lambda a, b: tf.stack([a, b], axis=1), [(2, 5), (2, 5)])
case("cast_to_int32_and_back", lambda x: tf.cast(tf.cast(x * 10.0, tf.int32), tf.float32), VEC)

# Reductions and normalisations.
case("softmax", lambda x: tf.nn.softmax(x * 3.0), VEC, int8=True)
case("log_softmax", lambda x: tf.nn.log_softmax(x * 3.0), VEC)
case("mean_spatial", lambda x: tf.reduce_mean(x, [1, 2]), IMG, int8=True)
case("mean_keepdims", lambda x: tf.reduce_mean(x, [1, 2], keepdims=True), IMG)
case("sum", lambda x: tf.reduce_sum(x, -1), VEC)
case("reduce_max", lambda x: tf.reduce_max(x, 1), VEC)
case("reduce_min", lambda x: tf.reduce_min(x, 0, keepdims=True), VEC)
case("reduce_prod", lambda x: tf.reduce_prod(x, 1), [(2, 5)], 0.5, 1.5)
case("arg_max", lambda x: tf.argmax(x, -1, output_type=tf.int32), VEC)
case("arg_min", lambda x: tf.argmin(x, 1, output_type=tf.int64), VEC)


def convert(fn, shapes, lo, hi, int8):
    spec = [tf.TensorSpec(s, tf.float32) for s in shapes]
    concrete = tf.function(fn, input_signature=spec).get_concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    if int8:
        rng = np.random.default_rng(3)

        def representative():
            for _ in range(32):
                yield [rng.uniform(lo, hi, s).astype("f4") for s in shapes]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "case names repeat"
    index = {}
    for name, fn, shapes, (lo, hi), int8 in CASES:
        for flavour in ["fp32", "int8"] if int8 else ["fp32"]:
            file = f"{name}.{flavour}.tflite"
            with open(os.path.join(out, file), "wb") as f:
                f.write(convert(fn, shapes, lo, hi, flavour == "int8"))
            index[f"{name}.{flavour}"] = {"file": file, "input_range": [lo, hi]}
    with open(os.path.join(out, "ops.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
