#!/usr/bin/env bash
# Creates (or reuses) a Python venv at VENV with the packages of REQUIREMENTS, and prints its
# python path. The venv is rebuilt when the requirements file changes (its sha256 is stamped).
# usage: venv.sh REQUIREMENTS VENV
set -euo pipefail
requirements="$1"
venv="$2"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
