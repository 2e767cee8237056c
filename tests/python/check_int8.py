"""Checks an int8 TFLite export against its fp32 ONNX source on held-out inputs: onnxruntime
runs the source, Google's LiteRT the int8 file, and the top-1 class (argmax of the first
output) must agree on at least --min-agreement of the inputs. Prints one JSON object.

usage: check_int8.py SOURCE.onnx INT8.tflite INPUT_DIR [--min-agreement 0.98] [--labels FILE]

--labels (a JSON list of true classes, from make_inputs.py) adds how often each model is right:
that the fp32 model is right on most inputs shows they are in its domain.
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
    ap.add_argument("--labels")
    args = ap.parse_args()
    interpreter = Interpreter(model_path=args.tflite, num_threads=1)
    interpreter.allocate_tensors()
    tin = interpreter.get_input_details()[0]
    tout = interpreter.get_output_details()[0]
    types = sorted({np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()})
    session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    files = sorted(pathlib.Path(args.inputs).glob("*.npy"))
    labels = json.loads(pathlib.Path(args.labels).read_text()) if args.labels else None
    agree, max_abs, right_fp32, right_int8 = 0, 0.0, 0, 0
    for i, f in enumerate(files):
        x = np.load(f)
        interpreter.set_tensor(tin["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(tout["index"]).reshape(-1)
        want = session.run(None, {name: x})[0].reshape(-1)
        agree += int(np.argmax(got) == np.argmax(want))
        if labels is not None:
            right_fp32 += int(np.argmax(want) == labels[i])
            right_int8 += int(np.argmax(got) == labels[i])
        max_abs = max(max_abs, float(np.max(np.abs(got - want))))
    report = {"samples": len(files), "agreement": agree / max(1, len(files)), "max_abs": max_abs,
              "tensor_types": types}
    if labels is not None:
        report["fp32_accuracy"] = right_fp32 / max(1, len(files))
        report["int8_accuracy"] = right_int8 / max(1, len(files))
    print(json.dumps(report))
    if not files or report["agreement"] < args.min_agreement:
        sys.exit(1)


if __name__ == "__main__":
    main()
