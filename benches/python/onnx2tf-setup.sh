#!/usr/bin/env bash
# Creates (or reuses) the venv with onnx2tf and TensorFlow (about 2 GB) for the export
# benchmark, and prints the path of its onnx2tf. AQ_ONNX2TF_VENV picks the place.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${AQ_ONNX2TF_VENV:-/var/tmp/aq-onnx2tf}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/onnx2tf-requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/onnx2tf" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/onnx2tf-requirements.txt" >&2
    echo "$want" > "$stamp"
fi
echo "$venv/bin/onnx2tf"
