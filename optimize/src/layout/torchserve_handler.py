"""TorchServe handler written by `aq export --target torchserve`: runs model.onnx with
onnxruntime. Requests and responses are the JSON of `aq serve`'s v1 API:

    {"inputs": {"x": {"shape": [1, 3, 224, 224], "data": [...]}}}
    -> {"outputs": {"y": {"shape": [1, 4], "data": [...]}}}
"""

import json
import os

import numpy as np
import onnxruntime as ort

_NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
          "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
_session = None


def _load(context):
    global _session
    if _session is None:
        model_dir = context.system_properties.get("model_dir")
        _session = ort.InferenceSession(os.path.join(model_dir, "model.onnx"),
                                        providers=["CPUExecutionProvider"])
    return _session


def handle(data, context):
    session = _load(context)
    if data is None:
        return None
    types = {i.name: _NUMPY.get(i.type, np.float32) for i in session.get_inputs()}
    responses = []
    for row in data:
        body = row.get("body") if isinstance(row, dict) else row
        if body is None and isinstance(row, dict):
            body = row.get("data")
        if isinstance(body, (bytes, bytearray)):
            body = json.loads(body)
        feeds = {name: np.asarray(spec["data"], dtype=types.get(name, np.float32)).reshape(spec["shape"])
                 for name, spec in body["inputs"].items()}
        outputs = session.run(None, feeds)
        responses.append({"outputs": {o.name: {"shape": list(v.shape), "data": v.reshape(-1).tolist()}
                                      for o, v in zip(session.get_outputs(), outputs)}})
    return responses
