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

.PHONY: demo test compile-report clean

$(VENV)/.installed: pyproject.toml setup.py $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "setuptools>=70" "torch>=2.6"
	$(PY) -m pip install -q --no-build-isolation -e ".[test,demo,dev]"
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

# Compile every shipped Triton kernel for sm_80, sm_89 and sm_90a (generic and run-time specialised): ptxas
# registers and spills, SASS per item and the H100 model (benchmarks/results/model-sm90.json is its --json).
compile-report: $(VENV)/.installed
	env -u TRITON_INTERPRET $(PY) -m benchmarks.ptxas_report

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
