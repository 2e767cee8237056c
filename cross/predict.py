"""Waits for an `aq serve` to answer, then predicts once with a deterministic input.

usage: predict.py URL MODEL INPUT SHAPE(comma-separated) [--wait SECONDS]
Prints one JSON line: {"first_predict_ms": time from the call to the first 200, "outputs": ...}.
Used by cross/smoke.sh (ARM output against host output) and cross/footprint.sh.
"""
import argparse
import json
import math
import time
import urllib.error
import urllib.request

p = argparse.ArgumentParser()
p.add_argument("url")
p.add_argument("model")
p.add_argument("input")
p.add_argument("shape")
p.add_argument("--wait", type=float, default=120)
a = p.parse_args()
shape = [int(d) for d in a.shape.split(",")]
n = math.prod(shape)
data = [math.sin(i * 0.01) for i in range(n)]
body = json.dumps({"inputs": {a.input: {"shape": shape, "data": data}}}).encode()
start = time.monotonic()
while True:
    try:
        req = urllib.request.Request(f"{a.url}/v1/serve/{a.model}/predict", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            out = json.loads(resp.read())
        break
    except (urllib.error.URLError, ConnectionError):
        if time.monotonic() - start > a.wait:
            raise
        time.sleep(0.01)
print(json.dumps({"first_predict_ms": round((time.monotonic() - start) * 1e3, 1), "outputs": out["outputs"]}))
