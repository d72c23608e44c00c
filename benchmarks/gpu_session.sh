#!/usr/bin/env bash
# A GPU session's work in one device call of at most 10 minutes (about 15 minutes of device time in all, the
# machine's start included):
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=600)
# Steps, each writing its results under $OUT before the next starts, so a call stopped at its limit still
# returns what finished (the device tool returns at most 8 files: these are 7):
#   1. gpu.txt           the GPU, its driver, torch/Triton/OpenCV versions, then each step's wall time
#   2. build.log         the extension built in place for the present GPU only (TORCH_CUDA_ARCH_LIST from the
#                        device), with every core (MAX_JOBS); the CPU machines already compiled every arch
#   3. pytest-cuda.log   only the tests that run CUDA tensors (`pytest -m cuda`), on every core (-n auto); the
#                        compile report is the CPU's work (make compile-report) and is not repeated here
#   4. bench-<group>.json and bench.log: the benchmark matrix, one group at a time (fast, mim_loss, amt), the
#                        markdown tables in bench.log
# Each step has a deadline inside the call's budget (GPU_SESSION_BUDGET seconds, default 540): the benchmarks
# get what the build and the tests leave. The GPU machines have torch, Triton, timm, OpenCV, pytest and
# pytest-xdist but no kornia and no network: kornia's wheels travel in .whl/ (from ../shared/device-wheels).
#
# GPU_SESSION_DRY_RUN=1 runs every step in its cheapest form on a machine without a GPU (CI does, in
# tests/test_gpu_session.py): the device query answers for an H100, the build is only checked to be
# importable, the test step collects `-m cuda` without running it, and each benchmark group runs --quick on
# its first case. So the script cannot rot between GPU sessions.
set -uo pipefail
OUT=${OUT:-/tmp/out}
DRY=${GPU_SESSION_DRY_RUN:-0}
BUDGET=${GPU_SESSION_BUDGET:-540}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$SECONDS
left() { echo $(( BUDGET - (SECONDS - START) )); }
stamp() { echo "step $1: $2 ($(( SECONDS - START )) s into the call)" | tee -a "$OUT/gpu.txt"; }

# 1. the device
if [[ "$DRY" == 1 ]]; then
  echo "dry run: no GPU queried (an H100's figures stand in)" > "$OUT/gpu.txt"
  ARCH=9.0
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
  ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || { stamp 1 "no CUDA device"; exit 1; }
fi
"$PY" -c "import torch, triton, cv2; print('torch', torch.__version__, 'triton', triton.__version__, 'cv2', cv2.__version__)" >> "$OUT/gpu.txt" 2>&1
stamp 1 "device sm_${ARCH/./}"

# 2. the build: the present GPU only, every core
SITE=/tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl && export PYTHONPATH="$SITE:${PYTHONPATH:-}"
fi
if [[ "$DRY" == 1 ]]; then
  echo "dry run: TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=$(nproc) pip install --no-deps --no-build-isolation -e ." > "$OUT/build.log"
  "$PY" -c "import kamim_fast, kamim_fast._ext as e; print('kamim_fast', kamim_fast.__version__)" >> "$OUT/build.log" 2>&1
  BUILD_STATUS=$?
else
  TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=$(nproc) timeout $(( $(left) - 240 )) \
    "$PY" -m pip install -v --no-deps --no-build-isolation -e . > "$OUT/build.log" 2>&1
  BUILD_STATUS=$?
fi
stamp 2 "build exit $BUILD_STATUS"
[[ $BUILD_STATUS == 0 ]] || exit 1

# 3. the tests that run CUDA tensors
if [[ "$DRY" == 1 ]]; then
  "$PY" -m pytest -q -p no:cacheprovider -m cuda --collect-only tests > "$OUT/pytest-cuda.log" 2>&1
else
  timeout $(( $(left) - 150 )) "$PY" -m pytest -q -p no:cacheprovider -m cuda -n auto --timeout=240 tests \
    > "$OUT/pytest-cuda.log" 2>&1
fi
TEST_STATUS=$?
stamp 3 "pytest -m cuda exit $TEST_STATUS: $(tail -n 1 "$OUT/pytest-cuda.log")"

# 4. the benchmarks, one group at a time, with what time is left
: > "$OUT/bench.log"
for group in fast mim_loss amt; do
  budget=$(left)
  if (( budget < 20 )); then stamp 4 "$group skipped: ${budget} s left"; continue; fi
  work=$(mktemp -d)
  if [[ "$DRY" == 1 ]]; then extra=(--quick --max-cases 1 --no-compile); else extra=(); fi
  timeout "$budget" "$PY" -m benchmarks --no-progress --only "$group" --out "$work" "${extra[@]}" "$@" >> "$OUT/bench.log" 2>&1
  status=$?
  cp "$work"/*.json "$OUT/bench-$group.json" 2>/dev/null || status=1
  rm -rf "$work"
  stamp 4 "$group exit $status"
  (( status == 0 )) || FAILED=1
done
(( TEST_STATUS == 0 && ${FAILED:-0} == 0 ))
