"""Checks a .mar from `aq export --target torchserve` against torch-model-archiver's own
archive of the same files, then runs its handler the way TorchServe calls it.

1. Unzips the .mar; runs `torch-model-archiver` on its model.onnx and handler.py with the same
   name and version; both archives must hold the same file names, and the same MANIFEST.json
   but for createdOn, whose format must match.
2. Imports handler.py from the archive and calls handle(requests, context) with the JSON body
   TorchServe hands over; the outputs must equal onnxruntime's on model.onnx.

usage: check_torchserve.py MODEL.mar NAME VERSION
Prints one JSON object.
"""

import datetime
import importlib.util
import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnxruntime as ort


class Context:
    def __init__(self, model_dir):
        self.system_properties = {"model_dir": model_dir}


def main():
    mar, name, version = sys.argv[1:4]
    work = pathlib.Path(tempfile.mkdtemp())
    ours = zipfile.ZipFile(mar)
    ours.extractall(work / "ours")
    theirs_dir = work / "theirs"
    theirs_dir.mkdir()
    archiver = pathlib.Path(sys.executable).with_name("torch-model-archiver")
    subprocess.run([str(archiver), "--model-name", name, "--version", version,
                    "--serialized-file", str(work / "ours" / "model.onnx"),
                    "--handler", str(work / "ours" / "handler.py"),
                    "--export-path", str(theirs_dir)], check=True)
    theirs = zipfile.ZipFile(theirs_dir / f"{name}.mar")
    assert sorted(ours.namelist()) == sorted(theirs.namelist()), (ours.namelist(), theirs.namelist())
    ours_manifest = json.loads(ours.read("MAR-INF/MANIFEST.json"))
    theirs_manifest = json.loads(theirs.read("MAR-INF/MANIFEST.json"))
    datetime.datetime.strptime(ours_manifest.pop("createdOn"), "%d/%m/%Y %H:%M:%S")
    theirs_manifest.pop("createdOn")
    assert ours_manifest == theirs_manifest, (ours_manifest, theirs_manifest)

    spec = importlib.util.spec_from_file_location("handler", work / "ours" / "handler.py")
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    session = ort.InferenceSession(str(work / "ours" / "model.onnx"))
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(5).uniform(-1, 1, size=shape).astype(np.float32)
    body = json.dumps({"inputs": {inp.name: {"shape": shape, "data": x.reshape(-1).tolist()}}}).encode()
    [response] = handler.handle([{"body": body}], Context(str(work / "ours")))
    want = session.run(None, {inp.name: x})
    worst = 0.0
    for out, w in zip(session.get_outputs(), want):
        got = np.asarray(response["outputs"][out.name]["data"]).reshape(response["outputs"][out.name]["shape"])
        worst = max(worst, float(np.max(np.abs(got - w))))
    assert worst <= 1e-6, worst
    print(json.dumps({"files": sorted(ours.namelist()), "manifest": ours_manifest, "max_abs": worst}))


if __name__ == "__main__":
    main()
