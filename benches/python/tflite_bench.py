"""LiteRT latency and accuracy of a TFLite file against its ONNX source (onnxruntime).

Feeds the source's NCHW inputs, transposed to NHWC when the TFLite model takes NHWC (as
onnx2tf's output does). Latency: median of --runs invokes after 3 warm-up runs, 1 thread.
Accuracy: max abs output difference on a seeded random input, and, with --inputs DIR, top-1
agreement on the .npy inputs there. Prints one JSON object.

usage: tflite_bench.py SOURCE.onnx MODEL.tflite [--inputs DIR] [--runs 50]
"""

import argparse
import json
import pathlib
import time

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("tflite")
    ap.add_argument("--inputs")
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    it = Interpreter(model_path=args.tflite, num_threads=1)
    it.allocate_tensors()
    tin, tout = it.get_input_details()[0], it.get_output_details()[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(args.onnx, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    shape = [int(d) for d in tin["shape"]]

    def nchw_shape():
        if len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3):
            return [shape[0], shape[3], shape[1], shape[2]], True
        return shape, False

    src_shape, nhwc = nchw_shape()

    def run(x):
        feed = x.transpose(0, 2, 3, 1) if nhwc else x
        it.set_tensor(tin["index"], feed.astype(np.float32))
        it.invoke()
        return it.get_tensor(tout["index"])

    x = np.random.default_rng(3).uniform(-1, 1, size=src_shape).astype(np.float32)
    got, want = run(x), sess.run(None, {name: x})[0]
    if got.shape != want.shape and got.size == want.size:
        got = got.reshape(want.shape)
    max_abs = float(np.max(np.abs(got.astype(np.float64) - want)))
    for _ in range(3):
        run(x)
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    report = {"latency_ms": 1000 * float(np.median(times)), "max_abs": max_abs, "nhwc_input": nhwc}
    if args.inputs:
        files = sorted(pathlib.Path(args.inputs).glob("*.npy"))
        agree = sum(
            int(np.argmax(run(np.load(f))) == np.argmax(sess.run(None, {name: np.load(f)})[0]))
            for f in files
        )
        report["agreement"] = agree / len(files)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
