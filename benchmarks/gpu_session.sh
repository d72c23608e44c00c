#!/usr/bin/env bash
# One device-tool call that does a GPU session's work: install, the whole suite on CUDA, the benchmarks.
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"])
# The GPU machines have torch, Triton, timm, OpenCV and pytest but no kornia and no network: kornia's
# wheels travel in .whl/ (copied from ../shared/device-wheels). Results land in $OUT (8 files; the tool returns 8 at most).
set -uo pipefail
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
python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest-cuda.log" | tail -15
python3 -m benchmarks.bench_fast --out "$OUT" 2>&1 | tail -12
python3 -m benchmarks.bench_loss --out "$OUT" 2>&1 | tail -8
python3 -m benchmarks.bench_amt --out "$OUT" 2>&1 | tail -30
python3 -m benchmarks.ptxas_report --json "$OUT/ptxas.json" 2>&1 | tail -20
