#!/usr/bin/env bash
# Installs Schemathesis, pinned, into tests/schemathesis/.venv for the `schemathesis`
# integration test. Needs Python >= 3.10: the first of python3.13 … python3.10 on PATH
# that runs, then pyenv's installs, then python3.
set -euo pipefail
cd "$(dirname "$0")"
python=""
for candidate in python3.13 python3.12 python3.11 python3.10 "$HOME"/.pyenv/versions/3.1[0-9]*/bin/python3 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
    && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "schemathesis: no Python >= 3.10 found" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
echo "schemathesis: $(.venv/bin/schemathesis --version) with $("$python" --version)"
