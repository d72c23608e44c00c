#!/usr/bin/env bash
# Installs kamim_fast the way users do and smoke-tests the install (issue 16; `make install-check`, CI):
#   1. the sdist (python -m build --sdist --no-isolation);
#   2. a wheel built from that sdist by pip, with --no-build-isolation against the torch of .venv;
#   3. the wheel installed into a fresh venv that sees .venv's packages (torch, triton) but not the checkout;
#   4. scripts/smoke_installed.py run by that venv's python from outside the checkout.
# By default with CUDA_HOME and CUDA_PATH unset, so torch guesses the toolkit from the nvcc on PATH (a wrong
# guess where nvcc is a wrapper outside a toolkit): the wheel must still hold the CUDA kernels when a CUDA
# toolkit exists in /usr/local/cuda*. Settings (environment):
#   KAMIM_FAST_CHECK_CUDA_HOME  unset (default) | a folder: the CUDA_HOME the wheel is built with
#   KAMIM_FAST_CHECK_ARCHS      TORCH_CUDA_ARCH_LIST for the wheel; default: unset (the package's default
#                               list, or the visible GPUs' plus it); CI narrows it to save compile time
#   KAMIM_FAST_CHECK_JIT=1      also JIT-build the CPU kernels from the installed sources (minutes)
#   KEEP=1                      keep the work folder (printed)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kamim-install-check.XXXXXX")
if [[ "${KEEP:-0}" == 1 ]]; then echo "install-check: work folder $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
started=$SECONDS
step() { echo "install-check [$((SECONDS - started)) s] $*"; }
fail() { echo "install-check FAILED: $1 (log below)"; tail -n 60 "$2"; exit 1; }

build_env=(env -u CUDA_HOME -u CUDA_PATH -u TORCH_CUDA_ARCH_LIST)
if [[ -n "${KAMIM_FAST_CHECK_CUDA_HOME:-}" && "${KAMIM_FAST_CHECK_CUDA_HOME}" != unset ]]; then
  build_env+=(CUDA_HOME="$KAMIM_FAST_CHECK_CUDA_HOME")
fi
if [[ -n "${KAMIM_FAST_CHECK_ARCHS:-}" ]]; then build_env+=(TORCH_CUDA_ARCH_LIST="$KAMIM_FAST_CHECK_ARCHS"); fi

step "1. sdist"
"${build_env[@]}" "$PY" -m build --sdist --no-isolation --outdir "$WORK/dist" . >"$WORK/sdist.log" 2>&1 \
  || fail "the sdist did not build" "$WORK/sdist.log"
sdist=$(ls "$WORK"/dist/*.tar.gz)
echo "  $(basename "$sdist"): $(tar tzf "$sdist" | grep -c -v '/$') files"

step "2. wheel from the sdist (${build_env[*]} pip wheel --no-build-isolation)"
"${build_env[@]}" "$PY" -m pip wheel -v --no-build-isolation --no-deps -w "$WORK/wheel" "$sdist" >"$WORK/wheel.log" 2>&1 \
  || fail "the wheel did not build from the sdist" "$WORK/wheel.log"
grep -E '^ *kamim_fast: ' "$WORK/wheel.log" | sed 's/^ */  /' | sort -u
wheel=$(ls "$WORK"/wheel/*.whl)
echo "  $(basename "$wheel")"

step "3. install into a fresh venv"
"$PY" -m venv --without-pip "$WORK/venv"
deps=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" >"$site/_kamim_fast_check_deps.pth"  # .venv's torch and triton; its .pth files (the editable install) are not run
"$PY" -m pip --python "$WORK/venv/bin/python" install -q --no-deps --no-index "$wheel" >"$WORK/install.log" 2>&1 \
  || fail "the wheel did not install" "$WORK/install.log"

# A CUDA build of torch and a CUDA toolkit in the standard place: the wheel must hold the CUDA kernels.
expect=no
if "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
  for home in /usr/local/cuda /usr/local/cuda-*; do
    if [[ -x "$home/bin/nvcc" && -e "$home/lib64/libcudart.so" && -f "$home/include/cuda_runtime.h" ]]; then expect=yes; fi
  done
fi

step "4. smoke test from $WORK/run (CUDA kernels expected: $expect)"
mkdir -p "$WORK/run"
cp scripts/smoke_installed.py "$WORK/run/"
jit=()
if [[ "${KAMIM_FAST_CHECK_JIT:-0}" == 1 ]]; then jit=(--jit); fi
(cd "$WORK/run" && env -u CUDA_HOME -u CUDA_PATH -u PYTHONPATH KAMIM_FAST_JIT=0 KAMIM_FAST_BACKEND=auto \
  TORCH_EXTENSIONS_DIR="$WORK/torch_extensions" \
  "$WORK/venv/bin/python" smoke_installed.py --expect-cuda "$expect" --checkout "$ROOT" ${jit[@]+"${jit[@]}"})
step "passed"
