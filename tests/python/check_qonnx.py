"""Runs a quantized ONNX model in onnxruntime and compares it with outputs computed elsewhere.

Our static int8 ONNX (QuantizeLinear, QLinearConv, QLinearMatMul, DequantizeLinear) must be
standard ONNX, not something only tract accepts: onnxruntime runs it on the given input and its
first output must equal the expected one within --tolerance (max abs).

usage: check_qonnx.py MODEL.onnx INPUT.npy EXPECTED.npy [--tolerance T]
Prints one JSON line {"max_abs": ...}; exits 1 on a mismatch.
"""

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("expected")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    options = ort.SessionOptions()
    # Graph rewrites would requantize differently from the file's own nodes.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    x = np.load(args.input)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    expected = np.load(args.expected)
    max_abs = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    print(json.dumps({"max_abs": max_abs}))
    sys.exit(0 if max_abs <= args.tolerance else 1)


if __name__ == "__main__":
    main()
