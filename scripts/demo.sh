#!/usr/bin/env bash
# Sets everything up, then builds a small zoo in the embedded Postgres and prints what is in it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec .venv/bin/zoo demo "$@"
