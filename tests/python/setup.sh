#!/usr/bin/env bash
# Creates (or reuses) the Python venv with the reference runtimes the tests use, and prints
# its python path. AQ_VENV picks the place (default /var/tmp/aquilia-edge-venv).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/venv.sh" "$here/requirements.txt" "${AQ_VENV:-/var/tmp/aquilia-edge-venv}"
