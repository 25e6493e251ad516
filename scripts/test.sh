#!/usr/bin/env bash
# Sets everything up, then runs the test suite (real embedded Postgres, local fake Civitai, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
