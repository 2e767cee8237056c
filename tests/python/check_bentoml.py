"""Checks a BentoML model store entry from `aq export --target bentoml` with BentoML itself:
BENTOML_HOME points at the export, the model store lists the tag, bentoml.onnx.load_model
loads it, and the session it returns gives onnxruntime's outputs on the source model.

usage: check_bentoml.py BENTOML_HOME NAME:VERSION SOURCE.onnx
Prints one JSON object.
"""

import json
import os
import sys
import warnings

home, tag, source = sys.argv[1:4]
os.environ["BENTOML_HOME"] = home
warnings.simplefilter("ignore")

import bentoml  # noqa: E402  (BENTOML_HOME is read at import)
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

model = bentoml.models.get(tag)
session = bentoml.onnx.load_model(tag)
reference = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
inp = reference.get_inputs()[0]
shape = [d if isinstance(d, int) and d > 0 else s for d, s in zip(inp.shape, [1, 3, 48, 192])]
x = np.random.default_rng(11).uniform(-1, 1, size=shape).astype(np.float32)
got = session.run(None, {inp.name: x})
want = reference.run(None, {inp.name: x})
worst = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
assert worst == 0.0, worst
print(json.dumps({"tag": str(model.tag), "module": model.info.module,
                  "models": sorted(str(m.tag) for m in bentoml.models.list()), "max_abs": worst}))
