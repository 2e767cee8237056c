#!/usr/bin/env bash
# Smoke test of a cross-built `aq` under qemu-user, against the host build on the same inputs:
#
#   cross/smoke.sh dist/aq-aarch64-linux qemu-aarch64-static [HOST_AQ]
#
# What exists today is checked: key generation, `pack save` of a real ONNX and a real TFLite
# model (the manifest, chunk digests and the tract-read signature must equal the host's),
# verify, export; the host imports the ARM-made .aqpack and the ARM binary imports the host's;
# unpack gives the original bytes; `aq serve` of an ARM-registry pack and of a TFLite file
# answers a predict from the host with the host build's outputs (within 1e-5: NEON and AVX
# kernels round differently). Then the fleet path: the ARM binary pulls a pack from a host
# `aq-sync` over TLS (rustls/ring on ARM), enrolls as a device, and under `aq agent run`
# follows a rollout over MQTT; its prediction must equal the host's again.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1"; qemu="$2"; host="${3:-}"
if [ -z "$host" ]; then
  cargo build --locked -p aq-agent --bin aq
  host="${CARGO_TARGET_DIR:-target}/debug/aq"
fi
# The test suite builds aq-sync beside the host aq; building it again here with only this
# package's features would rebuild most dependencies (2.5 minutes in CI) for nothing.
sync_bin="$(dirname "$host")/aq-sync"
if [ -z "${3:-}" ] || [ ! -x "$sync_bin" ]; then
  cargo build --locked -p aq-sync-server --bin aq-sync
  [ -x "$sync_bin" ] || sync_bin="${CARGO_TARGET_DIR:-target}/debug/aq-sync"
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
arm() { "$qemu" "$bin" "$@"; }

echo "smoke: $(arm --version) under $qemu"
arm key gen --out "$work/k" >/dev/null
"$host" --data-dir "$work/host" key trust "$work/k.pub" --packs '*' >/dev/null
arm --data-dir "$work/arm" key trust "$work/k.pub" --packs '*' >/dev/null

for model in fixtures/models/ppocr_cls.onnx fixtures/models/sine_float.tflite; do
  name=$(basename "$model" | tr '_.' '--' | tr 'A-Z' 'a-z')
  arm --data-dir "$work/arm" pack save "$model" --name "$name" --version 1.0.0 --key "$work/k" >/dev/null
  "$host" --data-dir "$work/host" pack save "$model" --name "$name" --version 1.0.0 --key "$work/k" >/dev/null
  arm --data-dir "$work/arm" --json pack inspect "$name" > "$work/arm.json"
  "$host" --data-dir "$work/host" --json pack inspect "$name" > "$work/host.json"
  python3 - "$work/arm.json" "$work/host.json" <<'PY'
import json, sys
a, h = (json.load(open(p))["manifest"] for p in sys.argv[1:3])
for key in ("model", "files", "name", "version"):
    assert a[key] == h[key], f"{key} differs between the ARM and host builds:\n{a[key]}\n{h[key]}"
PY
  arm --data-dir "$work/arm" pack verify "$name" >/dev/null
  arm --data-dir "$work/arm" pack export "$name" -o "$work/$name-arm.aqpack" >/dev/null
  "$host" --data-dir "$work/host" pack export "$name" -o "$work/$name-host.aqpack" >/dev/null
  "$host" --data-dir "$work/host2" pack import "$work/$name-arm.aqpack" --trust "$work/host/trust.toml" >/dev/null
  arm --data-dir "$work/arm2" pack import "$work/$name-host.aqpack" --trust "$work/arm/trust.toml" >/dev/null
  arm --data-dir "$work/arm2" pack unpack "$name" -o "$work/out-$name" >/dev/null
  cmp "$work/out-$name/$(basename "$model")" "$model"
  echo "smoke: $model: ARM manifest equals host manifest; ARM<->host .aqpack import, verify and unpack OK"
done
# Hostile input is refused under emulation too, with the documented exit code.
head -c 100 "$work/ppocr-cls-onnx-arm.aqpack" > "$work/truncated.aqpack"
set +e; arm --data-dir "$work/arm3" pack import "$work/truncated.aqpack" 2>/dev/null; code=$?; set -e
[ "$code" = 5 ] || { echo "smoke: truncated archive gave exit $code, expected 5" >&2; exit 1; }
# Serve under emulation and predict from the host; compare with the host build.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
arm_port=$(free_port); host_port=$(free_port)
# (qemu directly, not the `arm` function: `$!` must be the server's PID, not a subshell's.)
"$qemu" "$bin" --data-dir "$work/arm" serve --model ppocr=ppocr-cls-onnx:1.0.0 --model fixtures/models/sine_float.tflite \
  --addr "127.0.0.1:$arm_port" --log-level warn > "$work/arm-serve.log" 2>&1 &
arm_pid=$!
"$host" --data-dir "$work/host" serve --model ppocr=ppocr-cls-onnx:1.0.0 --model fixtures/models/sine_float.tflite \
  --addr "127.0.0.1:$host_port" --log-level warn > "$work/host-serve.log" 2>&1 &
host_pid=$!
trap 'kill $arm_pid $host_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for case in "ppocr x 1,3,48,192" "sine_float serving_default_dense_input:0 1,1"; do
  set -- $case
  python3 cross/predict.py "http://127.0.0.1:$arm_port" "$1" "$2" "$3" > "$work/arm-out.json"
  python3 cross/predict.py "http://127.0.0.1:$host_port" "$1" "$2" "$3" > "$work/host-out.json"
  python3 - "$work/arm-out.json" "$work/host-out.json" "$1" <<'PY'
import json, sys
a, h = (json.load(open(p))["outputs"] for p in sys.argv[1:3])
assert a.keys() == h.keys(), (a.keys(), h.keys())
worst = max(abs(x - y) for k in a for x, y in zip(a[k]["data"], h[k]["data"]))
assert all(a[k]["shape"] == h[k]["shape"] for k in a)
assert worst <= 1e-5, f"ARM and host outputs differ by {worst}"
print(f"smoke: serve {sys.argv[3]}: predict over HTTP from the host, ARM output equals host output (max abs diff {worst:.2g})")
PY
done
kill -TERM $arm_pid
wait $arm_pid || { echo "smoke: the ARM aq serve did not exit cleanly on SIGTERM" >&2; exit 1; }

# The fleet path on ARM: TLS pull from a host aq-sync, then enrollment and a rollout over MQTT.
mqtt_port=$(free_port)
"$sync_bin" --data-dir "$work/sync" serve --addr 127.0.0.1:0 --mqtt-listen "127.0.0.1:$mqtt_port" --log-level warn > "$work/sync.out" 2> "$work/sync.err" &
sync_pid=$!
trap 'kill $arm_pid $host_pid $sync_pid ${agent_pid:-} 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q listening "$work/sync.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'https://[^ ]*' "$work/sync.out")
export AQ_SERVER="$url" AQ_SERVER_CA="$work/sync/tls/ca.pem" AQ_TOKEN="$(cat "$work/sync/admin.token")"
"$host" key trust "$work/k.pub" --packs '*' --policy "$work/sync/trust.toml" >/dev/null
"$host" --data-dir "$work/host" pack push ppocr-cls-onnx:1.0.0 >/dev/null
arm --data-dir "$work/arm4" key trust "$work/k.pub" --packs '*' >/dev/null
arm --data-dir "$work/arm4" pack pull ppocr-cls-onnx:1.0.0 >/dev/null
arm --data-dir "$work/arm4" pack verify ppocr-cls-onnx:1.0.0 >/dev/null
echo "smoke: the ARM build pulled a pack from aq-sync over TLS and verified it"
arm --data-dir "$work/device" agent enroll --label site=smoke >/dev/null
"$qemu" "$bin" --data-dir "$work/device" agent run --addr "127.0.0.1:0" --heartbeat 500ms --log-level warn > "$work/agent.out" 2> "$work/agent.err" &
agent_pid=$!
for _ in $(seq 300); do grep -q listening "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
agent_addr=$(grep -o 'http://[0-9.:]*' "$work/agent.out")
"$host" rollout create ppocr-cls-onnx:1.0.0 --selector site=smoke --steps 100 >/dev/null
done=""
for _ in $(seq 600); do
  if "$host" --json rollout status r1 | grep -q '"phase": "completed"'; then done=yes; break; fi
  sleep 0.2
done
[ -n "$done" ] || { echo "smoke: the ARM agent did not complete the rollout" >&2; cat "$work/agent.err" >&2; exit 1; }
python3 cross/predict.py "$agent_addr" ppocr-cls-onnx x 1,3,48,192 > "$work/agent-out.json"
python3 cross/predict.py "http://127.0.0.1:$host_port" ppocr x 1,3,48,192 > "$work/host-out.json"
python3 - "$work/agent-out.json" "$work/host-out.json" <<'PY'
import json, sys
a, h = (json.load(open(p))["outputs"] for p in sys.argv[1:3])
worst = max(abs(x - y) for k in a for x, y in zip(a[k]["data"], h[k]["data"]))
assert worst <= 1e-5, f"ARM agent and host outputs differ by {worst}"
print(f"smoke: the ARM agent applied a rollout over MQTT and serves it (max abs diff to host {worst:.2g})")
PY
kill -TERM $agent_pid $host_pid $sync_pid
wait $agent_pid || { echo "smoke: the ARM agent did not exit cleanly on SIGTERM" >&2; exit 1; }
echo "smoke: passed"
