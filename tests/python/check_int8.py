"""Checks an int8 TFLite export against its fp32 ONNX source on held-out inputs: onnxruntime
runs the source, Google's LiteRT the int8 file, and the top-1 class (argmax of the first
output) must agree on at least --min-agreement of the inputs. Prints one JSON object.

usage: check_int8.py SOURCE.onnx INT8.tflite INPUT_DIR [--min-agreement 0.98]
"""

import argparse
import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("tflite")
    ap.add_argument("inputs")
    ap.add_argument("--min-agreement", type=float, default=0.98)
    args = ap.parse_args()
    interpreter = Interpreter(model_path=args.tflite, num_threads=1)
    interpreter.allocate_tensors()
    tin = interpreter.get_input_details()[0]
    tout = interpreter.get_output_details()[0]
    types = sorted({np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()})
    session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    files = sorted(pathlib.Path(args.inputs).glob("*.npy"))
    agree, max_abs = 0, 0.0
    for f in files:
        x = np.load(f)
        interpreter.set_tensor(tin["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(tout["index"]).reshape(-1)
        want = session.run(None, {name: x})[0].reshape(-1)
        agree += int(np.argmax(got) == np.argmax(want))
        max_abs = max(max_abs, float(np.max(np.abs(got - want))))
    report = {"samples": len(files), "agreement": agree / max(1, len(files)), "max_abs": max_abs,
              "tensor_types": types}
    print(json.dumps(report))
    if not files or report["agreement"] < args.min_agreement:
        sys.exit(1)


if __name__ == "__main__":
    main()
