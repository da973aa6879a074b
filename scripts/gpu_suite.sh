#!/usr/bin/env bash
# The GPU machine's checks, one stage per call (each fits a 10-minute call on one H200):
#   bash scripts/gpu_suite.sh tests  OUT   # build golf with its CUDA ops, run every `cuda` test, a log per file
#   bash scripts/gpu_suite.sh bench  OUT   # bench_mlp, bench_ns, bench_fake_quant, bench_gptq
#   bash scripts/gpu_suite.sh step   OUT   # bench_step: core11 kernels vs references, pr549
#   bash scripts/gpu_suite.sh losses OUT   # 200 core11 steps with kernels on and off, then compare_losses
# WHEELS=DIR installs missing wheels first (brotli, zstandard); DATA=DIR is a prepared data directory
# (scripts/pack_gpu_data.py makes one small enough to carry; the machine has no network).
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:?stage: tests | bench | step | losses}
OUT=${2:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if [ -n "${WHEELS:-}" ]; then python -m pip install -q --no-deps "$WHEELS"/*.whl; fi
MAX_JOBS=${MAX_JOBS:-16} python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
python -c "import golf._ext as e; print('golf._C built:', e.HAS_EXT, 'CUDA ops:', e.has_cuda_ops())"

case "$STAGE" in
tests)
  # One pytest per file: a crash in one file must not hide the others' results.
  for f in $(grep -l "mark.cuda" -r tests --include='test_*.py' | sort); do
    log="$OUT/$(basename "$f" .py).log"
    timeout 300 python -m pytest -q -m cuda -p no:cacheprovider "$f" > "$log" 2>&1
    echo "rc=$? $f: $(grep -E '[0-9]+ (passed|failed)' "$log" | tail -1)"
  done ;;
bench)
  for b in bench_mlp bench_ns bench_fake_quant; do
    timeout 180 python "benchmarks/$b.py" > "$OUT/$b.log" 2>&1; echo "rc=$? $b"; tail -12 "$OUT/$b.log"
  done
  timeout 180 python benchmarks/bench_gptq.py --device cuda > "$OUT/bench_gptq.log" 2>&1; tail -4 "$OUT/bench_gptq.log" ;;
step)
  timeout 300 python benchmarks/bench_step.py --preset core11 --compare --steps 3 --warmup 2 2>&1 | tail -6
  timeout 240 python benchmarks/bench_step.py --preset pr549 --steps 3 --warmup 2 2>&1 | tail -4 ;;
losses)
  : "${DATA:?DATA must name a prepared data directory}"
  common=(--preset core11 --data.dir "$DATA" --train.iterations=200 --train.max_wallclock_seconds=0
          --train.val_every=0 --quant.calib_batches=1 --quant.allow_over_budget=true --eval.max_tokens=65536
          --eval.stride=0)
  timeout 270 golf train "${common[@]}" --out runs/losses_kernels > "$OUT/losses_kernels.log" 2>&1
  timeout 270 golf train "${common[@]}" --train.kernels=false --out runs/losses_reference > "$OUT/losses_ref.log" 2>&1
  python benchmarks/compare_losses.py runs/losses_kernels runs/losses_reference ;;
*) echo "unknown stage $STAGE"; exit 2 ;;
esac
