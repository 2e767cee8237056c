"""Checks a TFLite export against its ONNX source: onnxruntime runs the source, Google's LiteRT
runs the export, on the same seeded random inputs in the export's (fixed) input shapes.

Prints one JSON object: the largest absolute output difference, LiteRT's op list, the input
and output signatures LiteRT sees, and how much the reference outputs vary from input to input
(`reference_spread`: the largest standard deviation over runs of an output element; near 0
when the model ignores its input and so a check that proves little). Exits 1 when LiteRT
cannot load or run the file, or when any output differs by more than --tolerance (with
--relative: by more than --tolerance times the largest reference magnitude, if above 1).

usage: check_tflite.py SOURCE.onnx EXPORT.tflite [--tolerance 1e-4] [--relative] [--runs 3]
"""

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("tflite")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--relative", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    interpreter = Interpreter(model_path=args.tflite, num_threads=1)
    interpreter.allocate_tensors()
    tfl_inputs = interpreter.get_input_details()
    tfl_outputs = interpreter.get_output_details()
    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(args.onnx, opts, providers=["CPUExecutionProvider"])
    ort_inputs = session.get_inputs()
    if len(ort_inputs) != len(tfl_inputs):
        fail(f"the export has {len(tfl_inputs)} inputs, the source {len(ort_inputs)}")

    rng = np.random.default_rng(7)
    worst, magnitude, references = 0.0, 0.0, []
    for _ in range(args.runs):
        feeds = [rng.uniform(-1, 1, size=tuple(d["shape"])).astype(d["dtype"]) for d in tfl_inputs]
        for detail, value in zip(tfl_inputs, feeds):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        got = [interpreter.get_tensor(d["index"]) for d in tfl_outputs]
        want = session.run(None, {i.name: v for i, v in zip(ort_inputs, feeds)})
        if len(got) != len(want):
            fail(f"the export has {len(got)} outputs, the source {len(want)}")
        for g, w in zip(got, want):
            if g.shape != w.shape:
                fail(f"output shape {g.shape} but the source gives {w.shape}")
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))))
            magnitude = max(magnitude, float(np.max(np.abs(w))))
        references.append(np.concatenate([w.astype(np.float64).reshape(-1) for w in want]))

    report = {
        "max_abs": worst,
        "reference_spread": float(np.max(np.std(np.stack(references), axis=0))),
        "reference_magnitude": magnitude,
        "ops": ops,
        "inputs": [[d["name"], list(map(int, d["shape"])), np.dtype(d["dtype"]).name] for d in tfl_inputs],
        "outputs": [[d["name"], list(map(int, d["shape"])), np.dtype(d["dtype"]).name] for d in tfl_outputs],
    }
    print(json.dumps(report))
    tolerance = args.tolerance * (max(1.0, magnitude) if args.relative else 1.0)
    if not worst <= tolerance:
        fail(f"max abs difference {worst} exceeds {tolerance}")


def fail(message):
    print(json.dumps({"error": message}))
    sys.exit(1)


if __name__ == "__main__":
    main()
