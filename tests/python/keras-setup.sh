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
stamp="$out/.generator.sha256"
want="$(cat "$here/make_keras_tflite.py" "$here/keras-requirements.txt" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    rm -rf "$out"
    mkdir -p "$out"
    # TensorFlow is loud on stderr; keep its log and show the end of it on failure.
    if ! TF_CPP_MIN_LOG_LEVEL=3 "$python" "$here/make_keras_tflite.py" "$out" >"$out/.log" 2>&1; then
        tail -n 40 "$out/.log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
ops="$out/ops"
want_ops="$(cat "$here/make_tflite_ops.py" "$here/keras-requirements.txt" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$ops/.generator.sha256" 2>/dev/null)" != "$want_ops" ]]; then
    rm -rf "$ops"
    mkdir -p "$ops"
    if ! TF_CPP_MIN_LOG_LEVEL=3 "$python" "$here/make_tflite_ops.py" "$ops" >"$ops/.log" 2>&1; then
        tail -n 40 "$ops/.log" >&2
        exit 1
    fi
    echo "$want_ops" > "$ops/.generator.sha256"
fi
echo "$out"
