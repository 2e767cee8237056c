"""Makes TFLite files the way most people get them: Keras applications converted by
TensorFlow's own converter, in every flavour it writes (fp32, float16 weights, dynamic-range
int8, full-integer int8 with int8 and with uint8 inputs and outputs).

Weights are random (no model hub is reachable) but sane: He-style kernels from Keras's own
initialisers, and batch-norm statistics drawn so activations neither vanish nor explode,
so outputs depend on the input and a wrong kernel shows. Deterministic for a seed.

usage: make_keras_tflite.py OUT_DIR [MODEL ...]     (models: see MODELS)
Writes OUT_DIR/NAME.VARIANT.tflite and OUT_DIR/models.json; files already there are kept.
"""
import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

# name: (constructor, input size, input range the model expects, softmax head). Heads give
# logits: a softmax over random logits of 1,000 classes hides small differences.
MODELS = {
    "mobilenet_v2": ("MobileNetV2", 224, (-1.0, 1.0), False),
    "mobilenet_v3_small": ("MobileNetV3Small", 224, (0.0, 255.0), False),
    "efficientnet_b0": ("EfficientNetB0", 224, (0.0, 255.0), False),
    "resnet50": ("ResNet50", 224, (-120.0, 150.0), False),
    "densenet121": ("DenseNet121", 224, (-2.0, 2.5), False),
}
VARIANTS = ["fp32", "fp16", "dynamic", "int8", "uint8"]
SEED = 7


def build(name):
    ctor, size, _, softmax = MODELS[name]
    tf.keras.utils.set_random_seed(SEED)
    kwargs = dict(weights=None, input_shape=(size, size, 3))
    if not softmax:
        kwargs["classifier_activation"] = None
    model = getattr(tf.keras.applications, ctor)(**kwargs)
    rng = np.random.default_rng(SEED)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            n = gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.6, 1.4, n).astype("f4"),
                rng.uniform(-0.2, 0.2, n).astype("f4"),
                rng.uniform(-0.3, 0.3, n).astype("f4"),
                rng.uniform(0.5, 2.0, n).astype("f4"),
            ])
    return model


def samples(name, count, seed):
    _, size, (lo, hi), _ = MODELS[name]
    rng = np.random.default_rng(seed)
    return [rng.uniform(lo, hi, (1, size, size, 3)).astype("f4") for _ in range(count)]


def convert(model, name, variant):
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "fp16":
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        c.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant in ("int8", "uint8"):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([x] for x in samples(name, 16, 1))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = tf.int8 if variant == "int8" else tf.uint8
        c.inference_input_type = io
        c.inference_output_type = io
    return c.convert()


def main():
    out = sys.argv[1]
    names = sys.argv[2:] or list(MODELS)
    os.makedirs(out, exist_ok=True)
    index = {}
    for name in names:
        _, size, (lo, hi), _ = MODELS[name]
        model = None
        for variant in VARIANTS:
            path = os.path.join(out, f"{name}.{variant}.tflite")
            if not os.path.exists(path):
                model = model or build(name)
                data = convert(model, name, variant)
                with open(path + ".part", "wb") as f:
                    f.write(data)
                os.replace(path + ".part", path)
            index[f"{name}.{variant}"] = {
                "file": os.path.basename(path),
                "input_range": [lo, hi],
                "size": size,
            }
        print(name, "done", file=sys.stderr)
    with open(os.path.join(out, "models.json"), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
