"""Checks a Triton model repository entry the way Triton reads it: config.pbtxt parsed with
Triton's own protobuf schema (tritonclient's model_config_pb2), the version directory, and
the model file loaded in onnxruntime with the inputs and outputs the config declares.

usage: check_triton.py REPO NAME
"""

import importlib.util
import json
import pathlib
import sys

import onnxruntime as ort
from google.protobuf import text_format


def load_model_config_pb2():
    """tritonclient/grpc/model_config_pb2.py, without the grpc package's __init__ (which needs
    grpcio, a client we do not use here)."""
    root = pathlib.Path(importlib.util.find_spec("tritonclient").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location("model_config_pb2", root / "grpc" / "model_config_pb2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model_config_pb2 = load_model_config_pb2()


def main():
    repo, name = pathlib.Path(sys.argv[1]), sys.argv[2]
    config = model_config_pb2.ModelConfig()
    text_format.Parse((repo / name / "config.pbtxt").read_text(), config)
    assert config.name == name, config.name
    assert config.platform == "onnxruntime_onnx", config.platform
    versions = sorted(int(p.name) for p in (repo / name).iterdir() if p.is_dir())
    assert versions, "no version directory"
    session = ort.InferenceSession(str(repo / name / str(versions[-1]) / "model.onnx"))
    batch = 1 if config.max_batch_size > 0 else 0
    for declared, actual in [(config.input, session.get_inputs()), (config.output, session.get_outputs())]:
        assert [d.name for d in declared] == [a.name for a in actual], (declared, actual)
        for d, a in zip(declared, actual):
            shape = a.shape[batch:]
            assert len(d.dims) == len(shape), (d, shape)
            for dd, ad in zip(d.dims, shape):
                assert dd == -1 or dd == ad, (d.name, list(d.dims), shape)
    print(json.dumps({
        "name": config.name, "platform": config.platform, "versions": versions,
        "max_batch_size": config.max_batch_size,
        "dynamic_batching": config.HasField("dynamic_batching"),
        "inputs": [[i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)] for i in config.input],
        "outputs": [[o.name, model_config_pb2.DataType.Name(o.data_type), list(o.dims)] for o in config.output],
    }))


if __name__ == "__main__":
    main()
