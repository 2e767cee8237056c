"""The peers of the engine benchmark, in one process: onnxruntime for ONNX files and LiteRT
(its default XNNPACK path) for TFLite files, each on the same input files the Rust side uses.

usage: engine_peer.py JOBS.json
JOBS.json: a list of {"model", "inputs": [{"name", "dtype", "shape", "file"}],
                      "values": {name: number}, "threads": N (0: the runtime's default)}
Prints one JSON list: per job {"median_ms", "runs", "runtime"}. Timing: 3 warm-up runs,
then runs until 0.5 s or 200 runs have passed (at least 10), median.
"""
import json
import sys
import time

import numpy as np


def timed(run):
    for _ in range(3):
        run()
    times = []
    start = time.perf_counter()
    while len(times) < 10 or (time.perf_counter() - start < 0.5 and len(times) < 200):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3, len(times)


def onnx_job(job):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = job["threads"]
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(job["model"], opts, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in job["inputs"]:
        feeds[i["name"]] = np.fromfile(i["file"], dtype=i["dtype"]).reshape(i["shape"])
    declared = {i.name: i for i in sess.get_inputs()}
    for name, v in job.get("values", {}).items():
        kind = declared[name].type
        dt = np.int64 if "int64" in kind else np.float32
        feeds[name] = np.array(v, dtype=dt).reshape([1] * len(declared[name].shape))
    median, runs = timed(lambda: sess.run(None, feeds))
    return {"median_ms": median, "runs": runs, "runtime": f"onnxruntime {ort.__version__}"}


def tflite_job(job):
    import ai_edge_litert
    from ai_edge_litert.interpreter import Interpreter

    threads = job["threads"] or None
    it = Interpreter(model_path=job["model"], num_threads=threads)
    it.allocate_tensors()
    for d, i in zip(it.get_input_details(), job["inputs"]):
        it.set_tensor(d["index"], np.fromfile(i["file"], dtype=i["dtype"]).reshape(i["shape"]))
    median, runs = timed(it.invoke)
    version = getattr(ai_edge_litert, "__version__", "2.3")
    return {"median_ms": median, "runs": runs, "runtime": f"LiteRT {version}"}


def main():
    jobs = json.load(open(sys.argv[1]))
    out = []
    for job in jobs:
        out.append(onnx_job(job) if job["model"].endswith(".onnx") else tflite_job(job))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
