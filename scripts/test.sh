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
# Types over monitor/ and training/ (the files and flags are in pyproject.toml).
.venv/bin/python -m mypy
# Known vulnerabilities in what is installed: fails on a finding, warns when no service answers.
.venv/bin/python scripts/audit.py
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m pytest "$@"
