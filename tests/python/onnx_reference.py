"""onnxruntime's answer for an ONNX model on seeded inputs, for the engine tests to compare with.

usage: onnx_reference.py MODEL OUT_DIR [--shape NAME=D,D,..]... [--value NAME=V]...
                         [--range=LO,HI] [--steps N] [--seed S] [--image PATH]...
                         [--carry OUTPUT=INPUT]... [--int-high HIGH]

Writes OUT_DIR/meta.json and, for each step s:
  in{k}.{s}.bin    input k (the inputs not fixed by --value), little-endian
  out{j}.{s}.bin   output j as onnxruntime 1.32 gives it (one intra-op thread, all graph
                   optimizations); a ZipMap output (a list of {class: probability}) is
                   written as the [batch, classes] float tensor it was made from, classes
                   in key order
Input shapes: the k-th --shape for an input is its shape at step k (the last one repeats),
so one model can be run at several sizes; axes the model fixes need no --shape. Float inputs
are uniform in [LO, HI] (default 0,1), or, with --image, photos resized to an NCHW image
input ([N, 3, H, W]: image n of step s is the (s * N + n)-th photo) and scaled into [LO, HI].
Integer inputs are uniform in [0, HIGH) (--int-high, default 4). --value fixes an input (a sample rate): it is given to
onnxruntime, not written. --carry feeds an output back as an input at the next step
(recurrent state): step 0 takes the input as generated.
"""
import argparse
import json
import os

import numpy as np
import onnxruntime as ort

TYPES = {
    "tensor(float)": np.float32,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--shape", action="append", default=[])
    p.add_argument("--value", action="append", default=[])
    p.add_argument("--range", default="0,1")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image", action="append", default=[])
    p.add_argument("--carry", action="append", default=[])
    p.add_argument("--int-high", type=int, default=4)
    a = p.parse_args()
    lo, hi = (float(v) for v in a.range.split(","))
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    shapes, values = {}, {}
    for s in a.shape:
        name, dims = s.split("=")
        shapes.setdefault(name, []).append([int(d) for d in dims.split(",")])
    for v in a.value:
        name, val = v.split("=")
        values[name] = float(val)
    carry = dict(c.split("=") for c in a.carry)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    ins = sess.get_inputs()
    outs = sess.get_outputs()
    fed = [i for i in ins if i.name not in values]
    photo = 0
    carried = {}
    meta_outputs = []
    input_shapes = []
    for step in range(a.steps):
        feeds = {}
        for i in ins:
            dt = TYPES[i.type]
            if i.name in values:
                feeds[i.name] = np.array(values[i.name], dtype=dt).reshape([1] * len(i.shape))
                continue
            if i.name in carried:
                feeds[i.name] = carried[i.name]
                continue
            given = shapes.get(i.name)
            if given:
                shape = given[min(step, len(given) - 1)]
            else:
                shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
            if dt == np.float32 and a.image and len(shape) == 4 and shape[1] == 3:
                from PIL import Image

                batch = []
                for _ in range(shape[0]):
                    img = Image.open(a.image[photo % len(a.image)]).convert("RGB")
                    photo += 1
                    img = img.resize((shape[3], shape[2]), Image.BILINEAR)
                    batch.append(np.asarray(img, dtype="f4").transpose(2, 0, 1) / 255.0)
                x = (np.stack(batch) * (hi - lo) + lo).astype(dt)
            elif dt == np.float32:
                x = rng.uniform(lo, hi, shape).astype(dt)
            else:
                x = rng.integers(0, a.int_high, shape).astype(dt)
            feeds[i.name] = x
        for k, i in enumerate(fed):
            feeds[i.name].tofile(os.path.join(a.out, f"in{k}.{step}.bin"))
        input_shapes.append([list(feeds[i.name].shape) for i in fed])
        results = sess.run(None, feeds)
        written = []
        for j, (o, r) in enumerate(zip(outs, results)):
            if isinstance(r, list):
                keys = sorted(r[0]) if r else []
                r = np.array([[m[k] for k in keys] for m in r], dtype=np.float32)
            r = np.asarray(r)
            r.tofile(os.path.join(a.out, f"out{j}.{step}.bin"))
            written.append({"name": o.name, "dtype": str(r.dtype), "shape": list(r.shape)})
            if o.name in carry:
                carried[carry[o.name]] = r
        meta_outputs.append(written)
    meta = {
        "inputs": [{"name": i.name, "dtype": str(np.dtype(TYPES[i.type]))} for i in fed],
        "input_shapes": input_shapes,
        "outputs": meta_outputs,
        "steps": a.steps,
        "carry": [[o, i] for o, i in carry.items()],
    }
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
