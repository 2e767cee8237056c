#!/usr/bin/env bash
# Creates (or reuses) the venv with BentoML that checks `aq export --target bentoml`, and
# prints its python path. AQ_BENTOML_VENV picks the place (default /var/tmp/aquilia-edge-bentoml).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/venv.sh" "$here/bentoml-requirements.txt" "${AQ_BENTOML_VENV:-/var/tmp/aquilia-edge-bentoml}"
