#!/usr/bin/env bash
# One device-tool call that does a GPU session's work: install, the whole suite on CUDA, the benchmarks.
#   run(command="bash benchmarks/gpu_session.sh [all|test|bench] [benchmark args...]", carry=[".whl"])
# A device call may run 10 minutes: `test` (install, suite on CUDA, ptxas report) and `bench` (install,
# the matrix; extra args go to `python -m benchmarks`, e.g. `--only mim_loss`) fit one call each; `all` does both.
# The GPU machines have torch, Triton, timm, OpenCV and pytest but no kornia and no network: kornia's
# wheels travel in .whl/ (copied from ../shared/device-wheels). Results land in $OUT (6 files; the tool returns 8 at most):
# gpu.txt, pytest-cuda.log, <gpu>-<date>.{json,md,png}, ptxas.json.
set -uo pipefail
PHASE=${1:-all}
shift || true
case "$PHASE" in all|test|bench) ;; *) echo "gpu_session.sh: the phase must be all, test or bench, got '$PHASE'" >&2; exit 2 ;; esac
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
SITE=/tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl && export PYTHONPATH="$SITE:${PYTHONPATH:-}"
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, cv2; print('torch', torch.__version__, 'triton', triton.__version__, 'cv2', cv2.__version__)" | tee -a "$OUT/gpu.txt"
if [[ "$PHASE" == all || "$PHASE" == test ]]; then
  python3 -m pytest -q -p no:cacheprovider --timeout=300 tests 2>&1 | tee "$OUT/pytest-cuda.log" | tail -25
  python3 -m benchmarks.ptxas_report --arch sm_90a --json "$OUT/ptxas.json" 2>&1 | tail -20  # the suite compiled every arch
fi
if [[ "$PHASE" == all || "$PHASE" == bench ]]; then
  python3 -m benchmarks --no-progress --out "$OUT" "$@" 2>&1 | tail -60
fi
