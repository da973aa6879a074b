#!/usr/bin/env bash
# The GPU machine's check: build golf (CUDA ops included) into the machine's own torch, run the GPU tests
# and the kernel benchmarks, each printing its table. Usage on a GPU machine whose python has a CUDA torch:
#   bash scripts/gpu_suite.sh [OUT_DIR]
# Missing wheels (brotli, zstandard) can be installed first from a carried folder: WHEELS=dir.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then python -m pip install -q --no-deps "$WHEELS"/*.whl; fi
MAX_JOBS=${MAX_JOBS:-16} python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
python -c "import golf._ext as e; print('golf._C built:', e.HAS_EXT, 'CUDA ops:', e.has_cuda_ops())"
python -m pytest -q -m cuda tests 2>&1 | tee "$OUT/cuda_tests.log" | tail -25
python benchmarks/bench_gptq.py 2>&1 | tee "$OUT/bench_gptq.log" | tail -30
python benchmarks/bench_ns.py 2>&1 | tee "$OUT/bench_ns.log" | tail -30
