"""Shared fixtures. Without a GPU, Triton's interpreter runs every kernel on CPU tensors.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, before anything
imports kamim_fast's kernels. On a machine with CUDA the real kernels run on CUDA tensors instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets

import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# (device, backend) pairs this machine can run: the reference always, the Triton kernels on CUDA or
# through the interpreter.
TARGETS = [("cpu", "torch")]
if INTERPRETER:
    TARGETS.append(("cpu", "triton"))
if CUDA:
    TARGETS += [("cuda", "torch"), ("cuda", "triton")]


@pytest.fixture(params=TARGETS, ids=[f"{d}-{b}" for d, b in TARGETS])
def target(request, monkeypatch) -> tuple[str, str]:
    """Runs the test once per (device, backend); the backend is selected through KAMIM_FAST_BACKEND."""
    device, backend = request.param
    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)
    return device, backend


@contextlib.contextmanager
def reference_backend():
    """KAMIM_FAST_BACKEND=torch inside: for the CPU references a test compares a target with. Under the
    ("cuda", "triton") target a CPU tensor given to an op would raise (no interpreter on a GPU machine);
    tests/test_gpu_readiness.py checks that target tests call ops on CPU tensors only in here."""
    old = os.environ.get("KAMIM_FAST_BACKEND")
    os.environ["KAMIM_FAST_BACKEND"] = "torch"
    try:
        yield
    finally:
        if old is None:
            del os.environ["KAMIM_FAST_BACKEND"]
        else:
            os.environ["KAMIM_FAST_BACKEND"] = old


@pytest.fixture
def rng() -> np.random.Generator:
    """Fresh random data on every run; the seed is printed on failure and KAMIM_FAST_TEST_SEED replays it."""
    seed = int(os.environ.get("KAMIM_FAST_TEST_SEED") or secrets.randbits(32))
    print(f"KAMIM_FAST_TEST_SEED={seed}")
    return np.random.default_rng(seed)


def assert_raises_naming(make, exc: type[Exception], words: list[str]) -> None:
    """``make()`` raises ``exc`` whose message holds every word (the argument, what was expected, what came)."""
    with pytest.raises(exc) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
