# The two set-up commands of the README: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch guesses CUDA_HOME from where nvcc sits, wrongly here: name the toolkit folder holding lib64/libcudart.so.
CUDA_HOME ?= $(firstword $(patsubst %/lib64/libcudart.so,%,$(wildcard /usr/local/cuda/lib64/libcudart.so /usr/local/cuda-*/lib64/libcudart.so)))
export CUDA_HOME

# The GPU machines run Triton 3.6 (with torch 2.11): CI compiles every kernel with it too, from a side
# folder that only the compile test puts on PYTHONPATH (tests/test_compile.py).
GPU_TRITON ?= 3.6.0

.PHONY: demo test test-latest test-floor _in-copy lock docs compile-report compile-all sanitize mutants clean

# The exact versions CI last passed with (`make lock` writes them from .venv): `make test` and `make demo`
# install those, so a fresh machine and CI get the same environment and a new upload cannot break landing.
# pyproject.toml keeps ranges (what users install); `make test-latest` tries the newest releases.
CONSTRAINTS := constraints.txt
# LATEST=1 (make test-latest): no constraints, the newest release of everything, from the index alone: the
# machine's own pip configuration (caps, local mirrors) is ignored, as on a user's fresh machine.
# FLOOR=1 (make test-floor): the lowest torch and Triton pyproject.toml admits (constraints-floor.txt), the
# rest as the resolver finds it.
ifeq ($(LATEST),1)
PIP_INSTALL = PIP_CONFIG_FILE=/dev/null $(PY) -m pip install -q --upgrade --upgrade-strategy eager
INSTALL_INPUTS :=
else ifeq ($(FLOOR),1)
PIP_INSTALL = $(PY) -m pip install -q -c constraints-floor.txt
INSTALL_INPUTS := constraints-floor.txt
else
PIP_INSTALL = $(PY) -m pip install -q -c $(CONSTRAINTS)
INSTALL_INPUTS := $(CONSTRAINTS)
endif

# The in-place build compiles the CUDA kernels for CUDA_ARCHS (the GPU machines' H100s) whether or not a GPU is
# visible, so that every build here compiles csrc/*.cu (tests/test_amt.py checks its kernels are in _C); a plain
# `pip install` on a machine without a GPU builds the CPU kernels only (kamim_fast/_build.py).
CUDA_ARCHS ?= 9.0
$(VENV)/.installed: pyproject.toml setup.py kamim_fast/_build.py $(wildcard csrc/*) $(INSTALL_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) "setuptools>=77" torch
	TORCH_CUDA_ARCH_LIST="$(CUDA_ARCHS)" $(PIP_INSTALL) --no-build-isolation -e ".[test,demo,dev]"
	$(PY) -m pip install -q --no-deps --target $(VENV)/triton-gpu "triton==$(GPU_TRITON)"
	touch $@

# Rewrites constraints.txt from .venv (after `make test` passed there; commit it with the change that needed it).
lock:
	test -x $(PY) || { echo "make lock reads the versions of .venv: run make test first" >&2; exit 1; }
	{ echo "# The exact versions CI last passed with: make test and make demo install these (make lock writes this file)."; \
	  $(PY) -m pip freeze --all --exclude-editable | grep -v '^pip=='; } > $(CONSTRAINTS)

# The whole suite on the newest release of every dependency, in a copy of the working tree (build/latest, its
# own .venv): run it when new work starts and before every release; when it fails, fix the incompatibility
# (users install the newest versions) and refresh the lock in the same change. It prints the versions it got.
test-latest:
	$(MAKE) _in-copy DIR=build/latest MODE=LATEST=1

# The same with the floor versions of pyproject.toml (torch 2.11, Triton 3.6), in build/floor.
test-floor:
	$(MAKE) _in-copy DIR=build/floor MODE=FLOOR=1

_in-copy:
	rm -rf $(DIR) && mkdir -p $(DIR)
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t $(DIR)
	$(MAKE) -C $(DIR) $(MODE) $(VENV)/.installed
	$(DIR)/$(PY) -m pip list 2>/dev/null | grep -iE '^(torch|triton|transformers|timm|kornia|numpy|kernels|opencv)'
	$(MAKE) -C $(DIR) $(MODE) test

# FAST vs OpenCV, the show picture, and a short SimMIM+KAMIM pretraining (kamim_fast/demo.py);
# KAMIM_FAST_DEMO_QUICK=1 shrinks it to seconds (CI).
demo: $(VENV)/.installed
	$(PY) -m kamim_fast demo

# Two workers: CI machines have 2 cores, and the Triton interpreter is CPU-bound.
TEST_JOBS ?= 2
# which environment the suite runs in (tests/test_environment.py checks the locked one against constraints.txt)
ENVIRONMENT := $(if $(filter 1,$(LATEST)),latest,$(if $(filter 1,$(FLOOR)),floor,locked))
test: $(VENV)/.installed
	KAMIM_FAST_ENVIRONMENT=$(ENVIRONMENT) $(PY) -m pytest -n $(TEST_JOBS)

# The documentation site into site/ (mkdocs.yml; warnings are errors): the README as its front page, the guides of
# docs/, the API reference from the docstrings, the figures drawn first (docs/figures.py). tests/test_docs.py builds it in CI.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Compile every shipped Triton kernel for sm_80, sm_89 and sm_90a (generic and run-time specialised): ptxas
# registers and spills, SASS per item and the H100 model (benchmarks/results/model-sm90.json is its --json).
compile-report: $(VENV)/.installed
	env -u TRITON_INTERPRET $(PY) -m benchmarks.ptxas_report

# Every configuration a user can reach (benchmarks/compile_specs.py, specs(full=True)) x sm_80/sm_89/sm_90a x
# run-time specialised/generic x Triton 3.8 (installed) and 3.6 (GPU machines), 1,042 configurations and 12,504
# compiles (about 1.5 h on 2 cores) into benchmarks/results/compile-all.json. A tool for a release or a large
# kernel change, not a condition for landing (CI compiles the representative set live: tests/test_compile.py);
# `python -m benchmarks.compile_all --check` says without compiling whether the report is current. Incremental:
# a row whose compile inputs (Triton's cache key of the kernel source, the specialisation, the options) are
# unchanged is kept. JOBS=N: worker processes (default: the cores); ONLY=REGEX: those configurations only.
compile-all: $(VENV)/.installed
	env -u TRITON_INTERPRET $(PY) -m benchmarks.ptxas_report --all $(if $(JOBS),--jobs $(JOBS)) $(if $(ONLY),--only '$(ONLY)')

# The native CPU kernels under AddressSanitizer + UndefinedBehaviorSanitizer: csrc/*.cpp built into a copy of the
# package (build/sanitize, tests/sanitize_build.py), then against it the native-kernel tests and the conformance
# suite's cases of every op whose registry entry has a CPU cpp implementation (their ids: <op>-cpp-cpu). Python
# leaks: no leak check. Fails on any ASan or UBSan report.
SANITIZE_DIR := build/sanitize
SANITIZE_TESTS := $(wildcard tests/test_native_*.py)
# libstdc++ preloaded beside libasan: ASan's __cxa_throw interceptor needs it (python itself is C).
# PYTHONSAFEPATH: the current folder's kamim_fast must not shadow the sanitized copy.
SANITIZE_ENV = LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	PYTHONSAFEPATH=1 PYTHONPATH=$(abspath $(SANITIZE_DIR))
sanitize:  # needs the venv only, not a fresh install of the normal build
	test -x $(PY) || $(MAKE) $(VENV)/.installed
	$(SANITIZE_ENV) CUDA_HOME=/nonexistent $(PY) tests/sanitize_build.py $(SANITIZE_DIR)
	$(SANITIZE_ENV) $(PY) -c "import kamim_fast._C as c, sys; sys.exit(0 if '$(SANITIZE_DIR)' in c.__file__ else 'not the sanitized build: ' + c.__file__)"
	$(SANITIZE_ENV) $(PY) -m pytest -p no:cacheprovider -q -n 1 $(SANITIZE_TESTS)
	$(SANITIZE_ENV) $(PY) -m pytest -p no:cacheprovider -q -n 1 tests/test_conformance.py -k cpp-cpu

# Planted bugs, one at a time, in a temporary copy: does the suite catch each? Not in CI (minutes);
# each row's tests must first pass unmutated (--baseline); writes tests/MUTANTS.md. MUTANTS="name ..." runs
# only those (names: tests/mutants.py --list).
mutants: $(VENV)/.installed
	env -u TRITON_INTERPRET $(PY) tests/mutants.py --baseline $(if $(MUTANTS),--only $(MUTANTS))

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# One build for every torch: a wheel built with the floor torch (2.11, a venv of its own in build/abi-check) runs the
# native tests on the newest torch (.venv's, and ABI_CHECK_NEWEST=2.15.0 with the machine's pip cap lifted for that
# venv), and a wheel built with the newer torch runs them on the floor (scripts/abi_check.sh; results in
# build/abi-check/summary.txt). Not in CI: about 35 minutes on 2 cores (the first run also downloads two torches).
.PHONY: abi-check
abi-check: $(VENV)/.installed
	PY=$(abspath $(PY)) scripts/abi_check.sh

# Installs kamim_fast as users do and smoke-tests the install from outside the checkout: the sdist, then `pip install
# <sdist>` without flags into a fresh venv that has torch (pip's isolated build compiles _C), scripts/smoke_installed.py.
# scripts/install_check.sh unsets CUDA_HOME for the build (the Makefile's own is not what pip users have).
.PHONY: install-check
install-check: $(VENV)/.installed
	PY=$(abspath $(PY)) scripts/install_check.sh
