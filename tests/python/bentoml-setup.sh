#!/usr/bin/env bash
# Creates (or reuses) the venv with BentoML that checks `aq export --target bentoml`, and
# prints its python path. AQ_BENTOML_VENV picks the place (default /var/tmp/aquilia-edge-bentoml).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${AQ_BENTOML_VENV:-/var/tmp/aquilia-edge-bentoml}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/bentoml-requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/bentoml-requirements.txt" >&2
    echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
