"""KAMIM_FAST_BACKEND=triton runs the Triton kernels: each op's launches are counted.

Kernel and reference give equal values by design, so value tests cannot tell which one ran; a backend that
quietly ran the reference passed all but one test. Here a spy replaces each ``@triton.jit`` kernel object
(``_*_kernel``) of the kernel modules the registry names for an op's Triton implementation, and records the
launches (``kernel[grid](...)``) of the op on each of its samples; and of the public loss's forward and backward.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import CUDA, INTERPRETER
from samples import Source

import kamim_fast
from kamim_fast import _backend

pytestmark = [pytest.mark.skipif(not (CUDA or INTERPRETER), reason="needs a GPU or Triton's interpreter"), pytest.mark.cuda]
DEVICE = "cuda" if CUDA else "cpu"
TRITON_OPS = [name for name, entry in _backend.TABLE.items() if "triton" in entry.impls]


class _Spy:
    """Stands in for a ``@triton.jit`` kernel: counts ``kernel[grid]`` launches and forwards every other
    attribute (``warmup``, ``arg_names``, ``params``...), which the CUDA launch path also uses."""

    def __init__(self, kernel, name: str, launched: list[str]):
        self.kernel, self.name, self.launched = kernel, name, launched

    def __getitem__(self, grid):
        self.launched.append(self.name)
        return self.kernel[grid]

    def __getattr__(self, attr):
        return getattr(self.kernel, attr)


def _kernels(module) -> dict[str, object]:
    """The kernels a module's launchers launch: its own ``@triton.jit`` functions named ``_*_kernel``."""
    return {name: obj for name, obj in vars(module).items()
            if name.startswith("_") and name.endswith("_kernel") and hasattr(obj, "__getitem__")
            and getattr(getattr(obj, "fn", None), "__module__", None) == module.__name__}


@pytest.fixture
def launched(monkeypatch) -> list[str]:
    seen: list[str] = []
    for module_name in _backend.kernel_modules():
        module = importlib.import_module(f"{_backend.KERNELS_PACKAGE}.{module_name}")
        kernels = _kernels(module)
        assert kernels, f"{module.__name__} holds no _*_kernel"
        for name, kernel in kernels.items():
            monkeypatch.setattr(module, name, _Spy(kernel, f"{module_name}.{name}", seen))
    monkeypatch.setenv("KAMIM_FAST_BACKEND", "triton")
    return seen


def test_the_registry_names_triton_ops():
    assert TRITON_OPS and all(_backend.TABLE[n].impls["triton"].modules for n in TRITON_OPS)


@pytest.mark.parametrize("name", TRITON_OPS)
def test_every_op_launches_its_kernels(name, launched, rng):
    modules = _backend.TABLE[name].impls["triton"].modules
    for args in _backend.TABLE[name].samples(Source(DEVICE, rng)):
        launched.clear()
        getattr(torch.ops.kamim_fast, name)(*args)
        assert {k.split(".")[0] for k in launched} & set(modules), (name, launched)


def test_the_public_loss_launches_forward_and_backward(launched, rng):
    x = torch.from_numpy(rng.normal(0, 1, (1, 3, 16, 24))).float().to(DEVICE)
    mask = torch.ones(1, 2, 3, device=DEVICE)
    for weights in ("fast", None, torch.ones(1, 2, 3, device=DEVICE)):
        launched.clear()
        p = (x + 0.1).requires_grad_()
        kamim_fast.weighted_mim_loss(p, x.clamp(-2, 2), mask, weights, mean=0.5, std=0.25).backward()
        forward = "mim_loss._fused_forward_kernel" if weights == "fast" else "mim_loss._l1_forward_kernel"
        assert {forward, "mim_loss._backward_kernel"} <= set(launched), (weights, launched)


def test_the_spy_serves_the_cuda_launch_path(monkeypatch):
    """On a GPU the launchers size persistent grids with ``kernel.warmup`` before ``kernel[grid]``: the spy must
    forward it (a spy with ``__getitem__`` alone broke every CUDA run of this file). Driven here with a mock
    CUDA tensor and kernel, so the break shows on a machine without a GPU."""
    import contextlib

    from test_gpu_readiness import _FakeCudaBuffer, _FakeCudaTensor, _H100Props, _MockKernel

    from kamim_fast.kernels import _launch

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: _H100Props())
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(_launch, "_PROGRAMS", {})
    seen: list[str] = []
    kernel = _MockKernel()
    spy = _Spy(kernel, "mock", seen)
    args = {"BLOCK": 64, "x_ptr": _FakeCudaBuffer(4096), "n": 1000}
    assert _launch.persistent_programs(spy, _FakeCudaTensor(), 10**6, 4, args) == 132 * 3
    assert len(kernel.warmups) == 1 and seen == []
