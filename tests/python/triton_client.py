"""Drives `aq serve` with the real, unmodified `tritonclient` (HTTP) package: server and model
health, metadata, config, and inference with binary tensors (the client's default) and with
JSON, checked against onnxruntime on the same input. Exits non-zero on any failure.

usage: triton_client.py HOST:PORT MODEL ONNX_PATH
"""

import sys

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main():
    url, model, path = sys.argv[1:4]
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    assert client.is_model_ready(model), "model not ready"
    assert not client.is_model_ready("no-such-model"), "an unknown model reports ready"

    meta = client.get_model_metadata(model)
    assert meta["name"] == model, meta
    config = client.get_model_config(model)
    assert config["name"] == model, config
    server_meta = client.get_server_metadata()
    assert "binary_tensor_data" in server_meta["extensions"], server_meta

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    spec = meta["inputs"][0]
    shape = [3 if d == -1 else d for d in spec["shape"]]
    x = np.random.default_rng(1).uniform(-1, 1, size=shape).astype(np.float32)
    want = sess.run(None, {spec["name"]: x})
    out_names = [o["name"] for o in meta["outputs"]]

    for binary in (True, False):
        inp = httpclient.InferInput(spec["name"], list(x.shape), spec["datatype"])
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in out_names]
        result = client.infer(model, [inp], outputs=outputs, request_id="req-7")
        assert result.get_response()["id"] == "req-7", result.get_response()
        for name, ref in zip(out_names, want):
            got = result.as_numpy(name)
            diff = float(np.max(np.abs(got - ref)))
            assert got.shape == ref.shape and diff <= 1e-4, (name, got.shape, ref.shape, diff)
        print(f"infer binary_data={binary}: ok")

    # No outputs named: tritonclient asks for every output in binary.
    inp = httpclient.InferInput(spec["name"], list(x.shape), spec["datatype"])
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp])
    assert np.allclose(result.as_numpy(out_names[0]), want[0], atol=1e-4)

    # A wrong shape is the server's 400, surfaced by the client as an exception.
    bad = httpclient.InferInput(spec["name"], [1, 1], spec["datatype"])
    bad.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
    try:
        client.infer(model, [bad])
        raise AssertionError("a wrong shape was accepted")
    except InferenceServerException as e:
        assert "shape" in str(e), e
        print(f"wrong shape refused: {e}")

    stats_text = client.get_server_metadata()
    print("tritonclient: all checks passed", stats_text["name"])


if __name__ == "__main__":
    main()
