#!/usr/bin/env bash
# One build for every torch (`make abi-check`): the extension is on the LibTorch stable ABI of the torch floor
# (kamim_fast/_build.py's TORCH_FLOOR) and on Python's limited API, so a wheel built once runs with every torch from
# the floor to the newest. This shows it:
#   1. the sdist of the checkout;
#   2. a wheel built from it with the floor torch (a venv of its own with torch==<floor>.0, pip wheel
#      --no-build-isolation), CPU and CUDA kernels (TORCH_CUDA_ARCH_LIST=$ABI_CHECK_ARCHS, default 9.0);
#   3. that wheel installed, --no-deps, into venvs whose torch is: the newest this machine's pip allows (.venv's),
#      ABI_CHECK_NEWEST (default 2.15.0, installed with the machine's pip configuration lifted for that venv only,
#      PIP_CONFIG_FILE=/dev/null; skipped when it cannot be had) and the floor itself;
#   4. the other direction too: a wheel built with .venv's (newer) torch, run on the floor torch;
#   5. in each, the native tests (ABI_CHECK_TESTS on the newer torches, ABI_CHECK_FLOOR_TESTS on the floor) from a
#      copy of tests/ beside which there is no kamim_fast/, so they import the installed wheel; first a check that
#      the prebuilt abi3 _C of that install is what loads.
# The floor and newest venvs are kept in build/abi-check (torch downloads once); the rest is rebuilt each run. It
# prints one line per (wheel, torch) and writes them to build/abi-check/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
WORK=$ROOT/build/abi-check
ARCHS=${ABI_CHECK_ARCHS:-9.0}
NEWEST=${ABI_CHECK_NEWEST:-2.15.0}
TESTS=${ABI_CHECK_TESTS:-tests/test_native_fast.py tests/test_native_mim_loss.py tests/test_amt.py tests/test_conformance.py}
FLOOR_TESTS=${ABI_CHECK_FLOOR_TESTS:-tests/test_native_fast.py tests/test_native_mim_loss.py}  # on the floor torch
JOBS=${ABI_CHECK_JOBS:-2}
FLOOR=$("$PY" -c "import kamim_fast._build as b; print('{}.{}.0'.format(*b.TORCH_FLOOR))")
started=$SECONDS
step() { echo "abi-check [$((SECONDS - started)) s] $*"; }
fail() { echo "abi-check FAILED: $1 (log below)"; tail -n 60 "$2"; exit 1; }
mkdir -p "$WORK"
rm -rf "$WORK"/dist "$WORK"/wheel-* "$WORK"/run-* "$WORK"/tree "$WORK"/summary.txt
deps=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')  # pytest, OpenCV, hypothesis, ...
export PATH="$ROOT/.venv/bin:$PATH"  # ninja, for the JIT-build tests
build_env=(env -u CUDA_HOME -u CUDA_PATH -u KAMIM_FAST_NO_EXTENSION TORCH_CUDA_ARCH_LIST="$ARCHS" MAX_JOBS=2)

# A venv with torch==$1 (kept): $2 = 1 lifts the machine's pip configuration (its version cap) for it.
torch_venv() {
  local version=$1 lift=$2 dir=$WORK/torch-$1
  if [[ ! -f "$dir/.ready" ]]; then
    rm -rf "$dir" && python3 -m venv "$dir"
    local pip=("$dir/bin/python" -m pip install -q "torch==$version" "setuptools>=77" ninja numpy)
    if [[ "$lift" == 1 ]]; then pip=(env PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "${pip[@]}"); fi
    "${pip[@]}" >"$WORK/torch-$version.log" 2>&1 || return 1
    touch "$dir/.ready"
  fi
  echo "$dir"
}

step "1. sdist"
KAMIM_FAST_NO_EXTENSION=1 "$PY" -m build --sdist --no-isolation --outdir "$WORK/dist" . >"$WORK/sdist.log" 2>&1 \
  || fail "the sdist did not build" "$WORK/sdist.log"
sdist=$(ls "$WORK"/dist/*.tar.gz)

step "2. the floor torch $FLOOR (venv build/abi-check/torch-$FLOOR)"
floor_venv=$(torch_venv "$FLOOR" 0) || fail "torch==$FLOOR did not install" "$WORK/torch-$FLOOR.log"
t0=$SECONDS
"${build_env[@]}" "$floor_venv/bin/python" -m pip wheel -v --no-build-isolation --no-deps -w "$WORK/wheel-floor" "$sdist" \
  >"$WORK/wheel-floor.log" 2>&1 || fail "the wheel did not build with torch $FLOOR" "$WORK/wheel-floor.log"
floor_wheel=$(ls "$WORK"/wheel-floor/*.whl)
echo "  $(basename "$floor_wheel") built with torch $FLOOR in $((SECONDS - t0)) s:$(grep -E '^ *kamim_fast: ' "$WORK/wheel-floor.log" | sed 's/^ *kamim_fast://' | sort -u)"

step "3. a wheel built with .venv's torch ($("$PY" -c 'import torch; print(torch.__version__)'))"
t0=$SECONDS
"${build_env[@]}" "$PY" -m pip wheel -v --no-build-isolation --no-deps -w "$WORK/wheel-new" "$sdist" \
  >"$WORK/wheel-new.log" 2>&1 || fail "the wheel did not build with .venv's torch" "$WORK/wheel-new.log"
new_wheel=$(ls "$WORK"/wheel-new/*.whl)
echo "  $(basename "$new_wheel") in $((SECONDS - t0)) s"

# the tests, beside no kamim_fast/ (the installed wheel is imported)
mkdir -p "$WORK/tree"
cp -r tests csrc docs README.md pyproject.toml "$WORK/tree/"
find "$WORK/tree" -name __pycache__ -prune -exec rm -rf {} +

# run LABEL WHEEL TORCH_SITE TESTS: installs WHEEL into a venv seeing TORCH_SITE (its torch) then .venv's packages
run() {
  local label=$1 wheel=$2 torch_site=$3 tests=$4 dir=$WORK/run-$1
  "$PY" -m venv --without-pip "$dir"
  local site
  site=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\n%s\n' "$torch_site" "$deps" >"$site/_kamim_fast_abi_check.pth"
  "$PY" -m pip --python "$dir/bin/python" install -q --no-deps --no-index "$wheel" >"$WORK/run-$label.log" 2>&1 \
    || fail "the wheel did not install ($label)" "$WORK/run-$label.log"
  local check
  check=$(cd "$WORK/tree" && env -u PYTHONPATH KAMIM_FAST_JIT=0 "$dir/bin/python" -c "
import torch, kamim_fast, sys
from kamim_fast import _ext
kind, where = _ext.loaded()
assert kind == 'prebuilt' and where.startswith('$site') and where.endswith('_C.abi3.so'), (kind, where)
print(torch.__version__, 'cuda kernels' if _ext.has_cuda() else 'no cuda kernels', sys.version.split()[0])
" 2>&1) || { echo "$check"; fail "the prebuilt _C did not load ($label)" /dev/null; }
  local out
  out=$(cd "$WORK/tree" && env -u PYTHONPATH "$dir/bin/python" -m pytest -q -p no:cacheprovider -n "$JOBS" $tests 2>&1 \
        | tail -n 1) || true
  local line="$(basename "$wheel") on torch $check: $out"
  echo "  $line" | tee -a "$WORK/summary.txt"
  [[ "$out" == *passed* && "$out" != *failed* && "$out" != *error* ]] || fail "tests failed ($label)" /dev/null
}

step "4. the floor-built wheel on the newest torch this machine's pip allows (.venv)"
run floor-on-venv "$floor_wheel" "$deps" "$TESTS"

step "5. the floor-built wheel on torch $NEWEST (the machine's pip cap lifted for that venv)"
if newest_venv=$(torch_venv "$NEWEST" 1); then
  run "floor-on-$NEWEST" "$floor_wheel" "$("$newest_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    "$TESTS"
else
  echo "  torch==$NEWEST could not be installed (log: $WORK/torch-$NEWEST.log); skipped" | tee -a "$WORK/summary.txt"
fi

floor_site=$("$floor_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
step "6. the floor-built wheel on the floor torch $FLOOR"
run floor-on-floor "$floor_wheel" "$floor_site" "$FLOOR_TESTS"

step "7. the wheel built with .venv's torch on the floor torch $FLOOR (TORCH_TARGET_VERSION)"
run new-on-floor "$new_wheel" "$floor_site" "$FLOOR_TESTS"
step "passed"
