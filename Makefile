# The two set-up commands of the README: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch guesses CUDA_HOME from where nvcc sits, wrongly here: name the toolkit folder holding lib64/libcudart.so.
CUDA_HOME ?= $(firstword $(patsubst %/lib64/libcudart.so,%,$(wildcard /usr/local/cuda/lib64/libcudart.so /usr/local/cuda-*/lib64/libcudart.so)))
export CUDA_HOME

# The GPU machines run Triton 3.6 (with torch 2.11): CI compiles every kernel with it too, from a side
# folder that only the compile test puts on PYTHONPATH (tests/test_compile_sm90.py).
GPU_TRITON ?= 3.6.0

.PHONY: demo test compile-report mutants clean

$(VENV)/.installed: pyproject.toml setup.py $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "setuptools>=70" "torch>=2.6"
	$(PY) -m pip install -q --no-build-isolation -e ".[test,demo]"
	$(PY) -m pip install -q --no-deps --target $(VENV)/triton-gpu "triton==$(GPU_TRITON)"
	touch $@

# FAST vs OpenCV, the show picture, and a short SimMIM+KAMIM pretraining (kamim_fast/demo.py);
# KAMIM_FAST_DEMO_QUICK=1 shrinks it to seconds (CI).
demo: $(VENV)/.installed
	$(PY) -m kamim_fast demo

# Two workers: CI machines have 2 cores, and the Triton interpreter is CPU-bound.
TEST_JOBS ?= 2
test: $(VENV)/.installed
	$(PY) -m pytest -n $(TEST_JOBS)

# Compile every shipped Triton kernel for the H100 (sm_90a) and print ptxas registers and spills.
compile-report: $(VENV)/.installed
	env -u TRITON_INTERPRET $(PY) -m benchmarks.ptxas_report

# Planted bugs, one at a time, in a temporary copy: does the suite catch each? Not in CI (minutes);
# each row's tests must first pass unmutated (--baseline); writes tests/MUTANTS.md. MUTANTS="name ..." runs
# only those (names: tests/mutants.py --list).
mutants: $(VENV)/.installed
	env -u TRITON_INTERPRET $(PY) tests/mutants.py --baseline $(if $(MUTANTS),--only $(MUTANTS))

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
