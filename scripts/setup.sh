#!/usr/bin/env bash
# Creates .venv (or reuses it) and installs golf with its test dependencies. CPU machines get the pinned
# CPU build of torch first; a machine whose python already has a CUDA torch should `pip install
# --no-build-isolation -e .` into that environment instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0 triton==3.8.0
.venv/bin/python -m pip install -q --no-build-isolation -e '.[test]'
