#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine with the Rust toolchain:
# installs what the tests need, fetches the fixture models, then format check, clippy, the
# whole workspace test suite (unit, property, integration and end-to-end tests), a short run of
# every fuzz target, and the static aarch64 build with its smoke test under qemu (apt installs
# need root).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "tools"
missing=()
command -v python3 >/dev/null || missing+=(python3 python3-pip)
command -v zstd >/dev/null || missing+=(zstd)   # benches compare against tar --zstd
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v promtool >/dev/null || missing+=(prometheus)   # serving tests check /metrics with promtool
command -v wrk >/dev/null || missing+=(wrk)   # the HTTP benchmark's load generator
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)   # the fleet test's external broker
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "please install: ${missing[*]}" >&2; exit 1
  fi
fi
cargo --version
# Debian puts mosquitto in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin"

step "fixtures"
fixtures/fetch.sh

step "python reference runtimes (onnxruntime, LiteRT, tritonclient, torch-model-archiver) in a venv; BentoML in another"
AQ_PYTHON="$(tests/python/setup.sh)"
export AQ_PYTHON
"$AQ_PYTHON" -c 'import onnxruntime, ai_edge_litert, tritonclient.http; print("onnxruntime", onnxruntime.__version__)'
AQ_BENTOML_PYTHON="$(tests/python/bentoml-setup.sh)"   # BentoML in its own venv
export AQ_BENTOML_PYTHON

step "TFLite files from TensorFlow's converter (Keras applications, five flavours each; made once per machine)"
start=$(date +%s)
AQ_KERAS_MODELS="$(tests/python/keras-setup.sh)"
export AQ_KERAS_MODELS
echo "keras models in $AQ_KERAS_MODELS ($(( $(date +%s) - start )) s)"

# tract's AMX int8 kernel (Sapphire Rapids and later) crashed the optimize tests with SIGSEGV
# about one run in two on this project's 2-vCPU VMs (gdb: inside avx512amx_mmm_i32_16x16 with
# two threads running int8 products; cause not yet known). tract's own knob takes
# those kernels out; only tract-run int8 ONNX uses them (the fallback engine and aq optimize's
# checks), never aq-engine. x86_64 only: tract refuses another architecture's feature names.
if [ "$(uname -m)" = x86_64 ]; then export TRACT_CPU_ISA="-amx-int8,-amx-bf16"; fi

step "format"
cargo fmt --all -- --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
test_log=$(mktemp)
# --no-fail-fast: one failing test binary must not hide the others' results.
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$test_log"
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } } END { print p + 0, f + 0 }' "$test_log")
rm -f "$test_log"

step "fuzz: every target built (cargo-fuzz) and run 10 s from its seeds"
start=$(date +%s)
fuzz/run.sh 10
echo "fuzz step took $(( $(date +%s) - start )) s"

step "cross: static aarch64 aq, smoke test under qemu-aarch64-static against the host build"
start=$(date +%s)
# The host side of the comparison: the `aq` the test step just built.
AQ_HOST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/aq" cross/build.sh aarch64 --smoke
echo "cross step took $(( $(date +%s) - start )) s"

# One closing line for the whole run: the cargo tests, plus the fuzz step and the cross smoke
# test.
echo "summary: $((passed + 2)) passed, $failed failed"
