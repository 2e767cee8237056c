"""onnxruntime in-process latency, the peer of the engine benchmark: one session with the given
thread count, batch 1, the same input file the Rust side uses. Prints one JSON line.

usage: ort_engine.py MODEL INPUT.f32 THREADS RUNS
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, input_path, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
spec = sess.get_inputs()[0]
shape = [1 if not isinstance(d, int) else d for d in spec.shape]
x = np.fromfile(input_path, dtype="<f4").reshape(shape)
for _ in range(20):
    sess.run(None, {spec.name: x})
times = []
for _ in range(runs):
    t = time.perf_counter()
    sess.run(None, {spec.name: x})
    times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({
    "median_ms": times[len(times) // 2] * 1e3,
    "p95_ms": times[int(len(times) * 0.95)] * 1e3,
    "version": ort.__version__,
}))
