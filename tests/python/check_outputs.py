"""Checks `aq serve` against the reference runtimes, model by model.

For each model: random inputs in the shapes the server reports (free axes filled in from
--free), the same inputs through onnxruntime (ONNX) or Google's LiteRT (TFLite), and through
the server over HTTP three ways: v1 JSON, v1 binary tensors, and v2 JSON. Every output must
match the reference within --tolerance of the output's scale (max abs difference over
max(1, max abs reference value)). Prints one JSON line per model; exits 1 if any model
fails.

usage: check_outputs.py URL MODEL=PATH [MODEL=PATH ...] [--rows N] [--free MODEL:AXIS=LEN]
"""

import argparse
import json
import struct
import sys
import urllib.request

import numpy as np

DTYPE_CODES = ["f32", "f64", "f16", "i64", "i32", "i16", "i8", "u8", "u16", "u32", "u64", "bool"]
NUMPY = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "i64": np.int64, "i32": np.int32,
         "i16": np.int16, "i8": np.int8, "u8": np.uint8, "u16": np.uint16, "u32": np.uint32,
         "u64": np.uint64, "bool": np.bool_}
V2 = {"f32": "FP32", "f64": "FP64", "i64": "INT64", "i32": "INT32", "u8": "UINT8", "i8": "INT8", "bool": "BOOL"}


def http(url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, dict(resp.headers), resp.read()


def encode_binary(named):
    out = bytearray(b"AQT1") + struct.pack("<I", len(named))
    for name, arr in named:
        code = DTYPE_CODES.index(next(k for k, v in NUMPY.items() if np.dtype(v) == arr.dtype))
        raw = name.encode()
        out += struct.pack("<H", len(raw)) + raw + bytes([code, arr.ndim])
        out += b"".join(struct.pack("<Q", d) for d in arr.shape)
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        out += struct.pack("<Q", len(data)) + data
    return bytes(out)


def decode_binary(body):
    assert body[:4] == b"AQT1", body[:16]
    (count,), at = struct.unpack_from("<I", body, 4), 8
    out = {}
    for _ in range(count):
        (n,) = struct.unpack_from("<H", body, at); at += 2
        name = body[at:at + n].decode(); at += n
        code, rank = body[at], body[at + 1]; at += 2
        shape = struct.unpack_from("<%dQ" % rank, body, at); at += 8 * rank
        (length,) = struct.unpack_from("<Q", body, at); at += 8
        dtype = np.dtype(NUMPY[DTYPE_CODES[code]]).newbyteorder("<")
        out[name] = np.frombuffer(body[at:at + length], dtype=dtype).reshape(shape); at += length
    assert at == len(body)
    return out


def reference(path, inputs):
    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter
        interp = Interpreter(model_path=path)
        details = interp.get_input_details()
        for d in details:
            interp.resize_tensor_input(d["index"], inputs[d["name"]].shape)
        interp.allocate_tensors()
        for d in details:
            interp.set_tensor(d["index"], inputs[d["name"]])
        interp.invoke()
        return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))


def compare(got, want, tolerance):
    worst = 0.0
    scale = 1.0
    for name, ref in want.items():
        if name not in got:
            raise AssertionError(f"output {name!r} missing; got {sorted(got)}")
        g = np.asarray(got[name])
        if g.shape != ref.shape:
            raise AssertionError(f"output {name!r}: shape {g.shape} != reference {ref.shape}")
        if ref.size:
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - ref.astype(np.float64)))))
            scale = max(scale, float(np.max(np.abs(ref.astype(np.float64)))))
    if worst > tolerance * scale:
        raise AssertionError(f"max abs difference {worst:g} > {tolerance:g} x output scale {scale:g}")
    return worst


def check(url, model, path, rows, free, tolerance, rng):
    _, _, body = http(f"{url}/v1/serve/{model}/health")
    health = json.loads(body)
    inputs = {}
    for spec in health["inputs"]:
        shape = []
        for axis, d in enumerate(spec["shape"]):
            if isinstance(d, int):
                shape.append(d)
            elif d == "batch":
                shape.append(rows)
            else:
                shape.append(free[(model, axis)])
        inputs[spec["name"]] = rng.uniform(-1, 1, size=shape).astype(NUMPY[spec["dtype"]])
    want = reference(path, inputs)
    results = {}
    # v1 JSON
    v1 = {"inputs": {n: {"shape": list(a.shape), "data": a.ravel().tolist()} for n, a in inputs.items()}}
    status, _, body = http(f"{url}/v1/serve/{model}/predict", json.dumps(v1).encode(), {"Content-Type": "application/json"})
    outs = json.loads(body)["outputs"]
    got = {n: np.array(o["data"], dtype=NUMPY[o["dtype"]]).reshape(o["shape"]) for n, o in outs.items()}
    results["v1_json"] = compare(got, want, tolerance)
    # v1 binary
    status, headers, body = http(f"{url}/v1/serve/{model}/predict", encode_binary(list(inputs.items())),
                                 {"Content-Type": "application/x-aq-tensors"})
    results["v1_binary"] = compare(decode_binary(body), want, tolerance)
    # v2 JSON
    v2 = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": V2[health_dtype(health, n)],
                      "data": a.ravel().tolist()} for n, a in inputs.items()]}
    status, _, body = http(f"{url}/v2/models/{model}/infer", json.dumps(v2).encode(), {"Content-Type": "application/json"})
    outs = json.loads(body)["outputs"]
    got = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in outs}
    results["v2_json"] = compare(got, want, tolerance)
    return results


def health_dtype(health, name):
    return next(s["dtype"] for s in health["inputs"] if s["name"] == name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("models", nargs="+", help="MODEL=PATH")
    p.add_argument("--rows", type=int, default=2, help="rows for models with a batch axis")
    p.add_argument("--free", action="append", default=[], help="MODEL:AXIS=LEN for free axes")
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args()
    free = {}
    for f in args.free:
        key, length = f.split("=")
        model, axis = key.rsplit(":", 1)
        free[(model, int(axis))] = int(length)
    rng = np.random.default_rng(20261127)
    failed = 0
    for spec in args.models:
        model, path = spec.split("=", 1)
        try:
            results = check(args.url, model, path, args.rows, free, args.tolerance, rng)
            print(json.dumps({"model": model, "ok": True, "max_abs_diff": results}), flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the exit code says so
            failed += 1
            print(json.dumps({"model": model, "ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
