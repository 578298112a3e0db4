#!/usr/bin/env bash
# Set up everything the tests need, then run them all (fast and slow).
# This is the README's test command and exactly what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh cpu,embedded,train,dev
if [ -f scripts/install-observability.sh ]; then
  bash scripts/install-observability.sh
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m pytest "$@"
