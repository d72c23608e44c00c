#!/usr/bin/env bash
# Installs kamim_fast the way users do and smoke-tests the install (`make install-check`, CI):
#   1. the sdist (python -m build --sdist --no-isolation);
#   2. `pip install <sdist>` without flags into a fresh venv that already has torch (it sees .venv's packages:
#      torch, triton, ...) but not the checkout: pip's default isolated build, whose build environment gets a torch
#      from the build requirements (torch >= the floor, kamim_fast/_build.py; pinned to a CPU torch wheel on disk
#      where there is one, KAMIM_FAST_CHECK_BUILD_TORCH below), compiles kamim_fast._C;
#   3. scripts/smoke_installed.py run by that venv's python from outside the checkout: the prebuilt, abi3 _C
#      holds the CPU kernels; the CUDA kernels too exactly when the build had a GPU or TORCH_CUDA_ARCH_LIST and a
#      CUDA toolkit (CUDA_HOME unset, so the toolkit is found as a user's build finds it).
# Settings (environment):
#   KAMIM_FAST_CHECK_ARCHS      TORCH_CUDA_ARCH_LIST for the build (default: unset: on a machine without a GPU the
#                               CPU kernels only, as a user's plain `pip install` there)
#   KAMIM_FAST_CHECK_CUDA_HOME  unset (default) | a folder: the CUDA_HOME the build sees
#   KAMIM_FAST_CHECK_JIT=1      also JIT-build the CPU kernels from the installed sources (a minute)
#   KAMIM_FAST_CHECK_BUILD_TORCH  auto (default) | any | a version: the torch in pip's isolated build environment.
#                               auto: the CPU torch wheel in pip's find-links folders (PIP_FIND_LINKS), if one is
#                               there for this Python, else any. Unpinned, pip puts the newest CUDA torch there
#                               (several GB of packages in TMPDIR, a download where they are not on disk): a
#                               machine with a few GB free runs out of space. The abi3 build is the same from any
#                               torch >= the floor, so the pin changes what is downloaded, not what is built.
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

build_env=(env -u CUDA_HOME -u CUDA_PATH -u TORCH_CUDA_ARCH_LIST -u KAMIM_FAST_NO_EXTENSION)
if [[ -n "${KAMIM_FAST_CHECK_CUDA_HOME:-}" && "${KAMIM_FAST_CHECK_CUDA_HOME}" != unset ]]; then
  build_env+=(CUDA_HOME="$KAMIM_FAST_CHECK_CUDA_HOME")
fi
if [[ -n "${KAMIM_FAST_CHECK_ARCHS:-}" ]]; then build_env+=(TORCH_CUDA_ARCH_LIST="$KAMIM_FAST_CHECK_ARCHS"); fi

step "1. sdist"
"${build_env[@]}" KAMIM_FAST_NO_EXTENSION=1 "$PY" -m build --sdist --no-isolation --outdir "$WORK/dist" . \
  >"$WORK/sdist.log" 2>&1 || fail "the sdist did not build" "$WORK/sdist.log"
sdist=$(ls "$WORK"/dist/*.tar.gz)
echo "  $(basename "$sdist"): $(tar tzf "$sdist" | grep -c -v '/$') files"

build_torch=${KAMIM_FAST_CHECK_BUILD_TORCH:-auto}
if [[ "$build_torch" == auto ]]; then
  build_torch=any
  tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  IFS=' ' read -r -a links <<<"${PIP_FIND_LINKS:-$("$PY" -m pip config get global.find-links 2>/dev/null || true)}"
  for dir in ${links[@]+"${links[@]}"}; do
    for whl in "$dir"/torch-*+cpu-"$tag"-"$tag"-*.whl; do
      [[ -e "$whl" ]] && build_torch=$(basename "$whl" | cut -d- -f2 | cut -d+ -f1)
    done
  done
fi
pip_env=()
deps_flag=()
if [[ "$build_torch" != any ]]; then
  # pip <= 26.1 applies PIP_CONSTRAINT inside the isolated build; newer pip reads PIP_BUILD_CONSTRAINT there.
  # The venv's own torch comes from .venv, so the install itself resolves no dependencies (--no-deps).
  echo "torch==$build_torch" >"$WORK/build-constraints.txt"
  pip_env=(PIP_CONSTRAINT="$WORK/build-constraints.txt" PIP_BUILD_CONSTRAINT="$WORK/build-constraints.txt")
  deps_flag=(--no-deps)
fi
step "2. pip install $(basename "$sdist") (pip's isolated build; its torch: $build_torch) into a fresh venv with torch"
"$PY" -m venv --without-pip "$WORK/venv"
deps=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" >"$site/_kamim_fast_check_deps.pth"  # .venv's torch and triton; its .pth files (the editable install) are not run
"${build_env[@]}" ${pip_env[@]+"${pip_env[@]}"} "$PY" -m pip --python "$WORK/venv/bin/python" install -v \
  ${deps_flag[@]+"${deps_flag[@]}"} "$sdist" >"$WORK/install.log" 2>&1 \
  || fail "pip install of the sdist failed" "$WORK/install.log"
grep -E '^ *kamim_fast: ' "$WORK/install.log" | sed 's/^ */  /' | sort -u
grep -oE 'Created wheel for kamim-fast: filename=[^ ]+' "$WORK/install.log" | sed 's/^/  /' || true
grep -oE 'Successfully installed .*' "$WORK/install.log" | sed 's/^/  /' || true

# The CUDA kernels are expected exactly where the build policy builds them: a CUDA build of torch, a toolkit in
# the standard place, and an architecture list (or a visible GPU).
expect=no
if [[ -n "${KAMIM_FAST_CHECK_ARCHS:-}" ]] || "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  if "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
    for home in /usr/local/cuda /usr/local/cuda-*; do
      if [[ -x "$home/bin/nvcc" && -e "$home/lib64/libcudart.so" && -f "$home/include/cuda_runtime.h" ]]; then expect=yes; fi
    done
  fi
fi

step "3. smoke test from $WORK/run (CUDA kernels expected: $expect)"
mkdir -p "$WORK/run"
cp scripts/smoke_installed.py "$WORK/run/"
jit=()
if [[ "${KAMIM_FAST_CHECK_JIT:-0}" == 1 ]]; then jit=(--jit); fi
(cd "$WORK/run" && env -u CUDA_HOME -u CUDA_PATH -u PYTHONPATH KAMIM_FAST_JIT=0 KAMIM_FAST_BACKEND=auto \
  TORCH_EXTENSIONS_DIR="$WORK/torch_extensions" \
  "$WORK/venv/bin/python" smoke_installed.py --expect-cuda "$expect" --checkout "$ROOT" ${jit[@]+"${jit[@]}"})
step "passed"
