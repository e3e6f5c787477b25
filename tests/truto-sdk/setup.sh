#!/usr/bin/env bash
# Installs Truto's SDK, unmodified and pinned, into tests/truto-sdk/.venv for the
# `truto_sdk` integration test. Needs Python >= 3.12 (the SDK's own requirement): the
# first of python3.13, python3.12 on PATH, then pyenv's installs.
set -euo pipefail
cd "$(dirname "$0")"
python=""
for candidate in python3.13 python3.12 "$HOME"/.pyenv/versions/3.13*/bin/python3 "$HOME"/.pyenv/versions/3.12*/bin/python3 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
    && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "truto-sdk: no Python >= 3.12 found" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -c 'import truto_python_sdk' && echo "truto-sdk: installed with $("$python" --version)"
