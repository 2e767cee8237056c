#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 10) from its checked-in seeds
# (fuzz/seeds/TARGET; the corpus it grows is kept beside the build, outside the clone).
# cargo-fuzz on the stable toolchain through RUSTC_BOOTSTRAP, without a sanitizer (the code
# under test denies unsafe; what is checked is panics and the laws each target asserts).
#
#   fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-10}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${AQ_FUZZ_TARGET_DIR:-/var/tmp/aquilia-edge-fuzz-target}"
start=$(date +%s)
cargo fuzz build -s none -O --codegen-units 16
echo "fuzz: built $(cargo fuzz list | wc -l) targets in $(( $(date +%s) - start )) s"
for target in $(cargo fuzz list); do
  corpus="$CARGO_TARGET_DIR/corpus/$target"
  mkdir -p "$corpus"
  if [ -d "seeds/$target" ]; then cp -n "seeds/$target"/* "$corpus"/; fi
  log=$(mktemp)
  if ! cargo fuzz run -s none -O --codegen-units 16 "$target" "$corpus" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target failed (reproducer under fuzz/artifacts/$target)" >&2
    exit 1
  fi
  echo "fuzz: $target: $(grep -o 'Done [0-9]* runs' "$log" | tail -1) in ${secs} s, corpus $(ls "$corpus" | wc -l) inputs"
  rm -f "$log"
done
