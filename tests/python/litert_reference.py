"""LiteRT's answer for a TFLite model on seeded inputs, for the engine tests to compare with.

usage: litert_reference.py MODEL OUT_DIR [--range=LO,HI] [--steps N] [--seed S]
                           [--image PATH ...] [--all]

Writes OUT_DIR/meta.json and, for each step s (stateful models run N steps on one
interpreter, each continuing from the state the previous left):
  in{k}.{s}.bin    input k, little-endian
  out{j}.{s}.bin   output j as LiteRT 2.3 gives it by default (with the XNNPACK delegate)
  alt{j}.{s}.bin   output j from LiteRT's own kernels without the delegate: how far LiteRT
                   is from itself, which bounds how close anyone can get on models whose
                   results hang on float rounding (dynamic-range quantization)
Float inputs are uniform in [LO, HI] (default 0,1), or, with --image, photos resized to an
image input ([1, H, W, 3]) and scaled into [LO, HI] (step s takes the s-th image); integer
inputs cover their whole range. --all also writes every tensor an operator computes, as
t{i}.{s}.bin, listed in meta.json's "tensors" (for models whose outputs alone say little).
"""
import argparse
import json
import os

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--range", default="0,1")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image", action="append", default=[])
    p.add_argument("--all", action="store_true")
    a = p.parse_args()
    lo, hi = (float(v) for v in a.range.split(","))
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)

    def make(resolver, keep=False):
        it = Interpreter(
            model_path=a.model,
            experimental_op_resolver_type=resolver,
            experimental_preserve_all_tensors=keep,
        )
        it.allocate_tensors()
        return it

    main_it = make(OpResolverType.AUTO, keep=a.all)
    try:
        alt_it = make(OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (RuntimeError, ValueError):
        # Custom ops that only the delegate provides (mediapipe's transposed convolution).
        alt_it = None
    ins = main_it.get_input_details()
    outs = main_it.get_output_details()
    details = {t["index"]: t for t in main_it.get_tensor_details()}
    computed = []
    if a.all:
        seen = set()
        for op in main_it._get_ops_details():
            for t in op["outputs"]:
                d = details.get(int(t))
                if d is not None and t not in seen and d["dtype"] != np.object_ and d["name"]:
                    seen.add(t)
                    computed.append(d)
    for step in range(a.steps):
        for k, d in enumerate(ins):
            shape = [1 if s < 0 else int(s) for s in d["shape"]]
            dt = np.dtype(d["dtype"])
            if dt.kind == "f" and a.image and len(shape) == 4 and shape[3] == 3:
                from PIL import Image

                img = Image.open(a.image[step % len(a.image)]).convert("RGB")
                img = img.resize((shape[2], shape[1]), Image.BILINEAR)
                x = (np.asarray(img, dtype="f4")[None] / 255.0 * (hi - lo) + lo).astype(dt)
            elif dt.kind == "f":
                x = rng.uniform(lo, hi, shape).astype(dt)
            else:
                info = np.iinfo(dt)
                x = rng.integers(info.min, int(info.max) + 1, shape).astype(dt)
            main_it.set_tensor(d["index"], x)
            if alt_it is not None:
                alt_it.set_tensor(alt_it.get_input_details()[k]["index"], x)
            x.tofile(os.path.join(a.out, f"in{k}.{step}.bin"))
        main_it.invoke()
        if alt_it is not None:
            alt_it.invoke()
        if a.all:
            for i, t in enumerate(computed):
                main_it.get_tensor(t["index"]).tofile(os.path.join(a.out, f"t{i}.{step}.bin"))
        for j, d in enumerate(outs):
            main_it.get_tensor(d["index"]).tofile(os.path.join(a.out, f"out{j}.{step}.bin"))
            if alt_it is not None:
                alt = alt_it.get_tensor(alt_it.get_output_details()[j]["index"])
                alt.tofile(os.path.join(a.out, f"alt{j}.{step}.bin"))

    def describe(d):
        q = d["quantization"]
        return {
            "name": d["name"],
            "dtype": np.dtype(d["dtype"]).name,
            "shape": [int(s) for s in d["shape"]],
            "quant": [float(q[0]), int(q[1])] if q[0] else None,
        }

    meta = {
        "inputs": [describe(d) for d in ins],
        "outputs": [describe(d) for d in outs],
        "tensors": [describe(d) for d in computed],
        "steps": a.steps,
        "alt": alt_it is not None,
    }
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
