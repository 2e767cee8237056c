#!/usr/bin/env bash
# Makes (or reuses) the TFLite files TensorFlow's converter writes for the Keras applications
# (tests/python/make_keras_tflite.py), and one per operator form in ops/
# (tests/python/make_tflite_ops.py, about 2 minutes), and prints their directory. TensorFlow lives in its own
# venv (about 1.6 GB; AQ_TF_VENV, default /var/tmp/aquilia-edge-tf-venv); the files are cached
# in AQ_KERAS_MODELS (default /var/tmp/aquilia-edge-keras), keyed by the generator's sha256,
# so they are made once per machine (about 7 minutes on 2 cores).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="$("$here/venv.sh" "$here/keras-requirements.txt" "${AQ_TF_VENV:-/var/tmp/aquilia-edge-tf-venv}")"
out="${AQ_KERAS_MODELS:-/var/tmp/aquilia-edge-keras}"
# Runs GENERATOR into DIR unless DIR holds what this very generator (and requirements) made.
make_once() {
    local generator="$1" dir="$2" want
    want="$(cat "$here/$generator" "$here/keras-requirements.txt" | sha256sum | cut -d' ' -f1)"
    if [[ "$(cat "$dir/.generator.sha256" 2>/dev/null)" != "$want" ]]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        # TensorFlow is loud on stderr; keep its log and show the end of it on failure.
        if ! TF_CPP_MIN_LOG_LEVEL=3 "$python" "$here/$generator" "$dir" >"$dir/.log" 2>&1; then
            tail -n 40 "$dir/.log" >&2
            exit 1
        fi
        echo "$want" > "$dir/.generator.sha256"
    fi
}
# The applications first: remaking them clears the folder, ops/ included.
make_once make_keras_tflite.py "$out"
make_once make_tflite_ops.py "$out/ops"
echo "$out"
