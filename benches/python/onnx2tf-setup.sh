#!/usr/bin/env bash
# Creates (or reuses) the venv with onnx2tf and TensorFlow (about 2 GB) for the export
# benchmark, and prints the path of its onnx2tf. AQ_ONNX2TF_VENV picks the place.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="$("$here/../../tests/python/venv.sh" "$here/onnx2tf-requirements.txt" "${AQ_ONNX2TF_VENV:-/var/tmp/aq-onnx2tf}")"
echo "$(dirname "$python")/onnx2tf"
