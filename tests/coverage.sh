#!/usr/bin/env bash
# Line coverage per crate and per module (source file), measured with cargo-tarpaulin on the
# LLVM engine (its own profile reader: no LLVM tools matching rustc needed), the whole test
# suite included: the end-to-end tests' `aq` and `aq-sync` processes are instrumented too.
# Not part of tests/run-all.sh: an instrumented build and run takes about as long as the test
# step itself. Needs what the test suite needs (run tests/run-all.sh once first on a machine,
# or export AQ_PYTHON, AQ_BENTOML_PYTHON and AQ_KERAS_MODELS).
#
#   tests/coverage.sh [CRATE...]     # default: every crate of the workspace but benches
#
# Writes target/coverage/tarpaulin-report.json and prints one line per crate, then every
# module under 90%.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"
command -v cargo-tarpaulin >/dev/null || cargo install cargo-tarpaulin --version 0.37.5 --locked
export AQ_PYTHON="${AQ_PYTHON:-$(tests/python/setup.sh)}"
export AQ_BENTOML_PYTHON="${AQ_BENTOML_PYTHON:-$(tests/python/bentoml-setup.sh)}"
export AQ_KERAS_MODELS="${AQ_KERAS_MODELS:-$(tests/python/keras-setup.sh)}"
if [ "$(uname -m)" = x86_64 ]; then export TRACT_CPU_ISA="-amx-int8,-amx-bf16"; fi
fixtures/fetch.sh >/dev/null
out="${AQ_COVERAGE_DIR:-$PWD/target/coverage}"
mkdir -p "$out"
packages=()
if [ $# -gt 0 ]; then
  for c in "$@"; do packages+=(--packages "$c"); done
  # The end-to-end tests of aq-sync and aq-serve start `aq`, which only an instrumented build
  # of aq-agent provides: without it they fail here and their lines read as untested.
  case " $* " in
    *" aq-agent "*) ;;
    *" aq-sync-server "*|*" aq-serve "*)
      echo "coverage: without aq-agent, the tests that start \`aq\` fail and count nothing" >&2 ;;
  esac
else
  packages=(--workspace --exclude aq-benches --exclude aq-test-support)
fi
start=$(date +%s)
target="${AQ_COVERAGE_TARGET_DIR:-/var/tmp/aquilia-edge-coverage-target}"
# An instrumented build of its own, beside the test one. The kill loop is left out: a process
# SIGKILLed while it writes its profile leaves a truncated .profraw, on which tarpaulin's
# reader (llvm_profparser 0.14) panics and the whole report is lost. The `aq` and `aq-sync`
# processes the end-to-end tests start write profiles too, but tarpaulin maps a profile only
# to the objects it knows: `--objects` names the two binaries (without it, `serve` and the
# server side of `sync-server` read as untested).
failed=0
CARGO_TARGET_DIR="$target" \
  cargo tarpaulin "${packages[@]}" --engine llvm --skip-clean --no-fail-fast --timeout 900 \
  --objects "$target/debug/aq" --objects "$target/debug/aq-sync" \
  --exclude-files 'benches/*' --exclude-files 'test-support/*' --exclude-files 'fuzz/*' \
  --exclude-files '*/tests/*' --exclude-files '*/examples/*' \
  --out Json --output-dir "$out" -- --test-threads 2 --skip kill_loop >"$out/tarpaulin.log" 2>&1 || failed=1
if [ "$failed" = 1 ]; then
  # Instrumented code runs several times slower, so tests with time limits can fail here
  # and pass in the test run; the report still counts what ran. Say which failed.
  grep -E '^test .* FAILED$' "$out/tarpaulin.log" || tail -40 "$out/tarpaulin.log"
  [ -s "$out/tarpaulin-report.json" ] || { echo "coverage: no report (log: $out/tarpaulin.log)" >&2; exit 1; }
  echo "coverage: some tests failed under instrumentation (log: $out/tarpaulin.log)" >&2
fi
echo "coverage: measured in $(( $(date +%s) - start )) s"
python3 - "$out/tarpaulin-report.json" "$PWD" <<'EOF'
import json, os, sys, collections
report = json.load(open(sys.argv[1]))
root = sys.argv[2].rstrip("/") + "/"
crates = collections.defaultdict(lambda: [0, 0])
modules = []
for f in report["files"]:
    # tarpaulin splits the absolute path into parts, the first being "/".
    path = os.path.normpath("/" + "/".join(f["path"]))
    path = path[len(root):] if path.startswith(root) else path.lstrip("/")
    covered, coverable = f["covered"], f["coverable"]
    if coverable == 0:
        continue
    crate = path.split("/", 1)[0]
    crates[crate][0] += covered
    crates[crate][1] += coverable
    modules.append((covered / coverable, path, covered, coverable))
total = [sum(c[0] for c in crates.values()), sum(c[1] for c in crates.values())]
print(f"{'crate':<14} {'lines':>13} {'coverage':>9}")
for crate, (c, n) in sorted(crates.items()):
    print(f"{crate:<14} {c:>6}/{n:<6} {100 * c / n:>8.1f}%")
print(f"{'all':<14} {total[0]:>6}/{total[1]:<6} {100 * total[0] / max(total[1], 1):>8.1f}%")
print("\nmodules under 90%:")
for share, path, c, n in sorted(modules):
    if share < 0.9:
        print(f"  {100 * share:5.1f}%  {c:>5}/{n:<5} {path}")
EOF
exit "$failed"
