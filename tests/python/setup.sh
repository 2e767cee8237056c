#!/usr/bin/env bash
# Creates (or reuses) the Python venv with the reference runtimes the tests use, and prints
# its python path. AQ_VENV picks the place (default /var/tmp/aquilia-edge-venv).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${AQ_VENV:-/var/tmp/aquilia-edge-venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
    echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
