"""KAMIM_FAST_BACKEND=triton runs the Triton kernels: each public op's launches are counted.

Kernel and reference give equal values by design, so value tests cannot tell which one ran; a backend that
quietly ran the reference passed all but one test. Here a spy replaces each ``@triton.jit`` kernel object in
its module and records the launches (``kernel[grid](...)``) of every public function.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CUDA, INTERPRETER

import kamim_fast

pytestmark = [pytest.mark.skipif(not (CUDA or INTERPRETER), reason="needs a GPU or Triton's interpreter"), pytest.mark.cuda]
DEVICE = "cuda" if CUDA else "cpu"


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


@pytest.fixture
def launched(monkeypatch) -> list[str]:
    from kamim_fast.kernels import fast, gray, mim_loss

    seen: list[str] = []
    for module, name in ((fast, "_fast_kernel"), (gray, "_gray_kernel"), (mim_loss, "_forward_kernel"),
                         (mim_loss, "_backward_kernel")):
        monkeypatch.setattr(module, name, _Spy(getattr(module, name), name, seen))
    monkeypatch.setenv("KAMIM_FAST_BACKEND", "triton")
    return seen


def test_every_op_launches_its_kernel(launched, rng):
    u8 = torch.from_numpy(rng.integers(0, 256, (1, 3, 16, 24), dtype=np.uint8)).to(DEVICE)
    cases = [
        ("rgb_to_gray_u8", lambda: kamim_fast.rgb_to_gray_u8(u8), {"_gray_kernel"}),
        ("fast_corners", lambda: kamim_fast.fast_corners(u8[:, 0]), {"_fast_kernel"}),
        ("patch_weights", lambda: kamim_fast.patch_weights(u8), {"_fast_kernel"}),
    ]
    x = (u8.float() / 255 - 0.5) / 0.25
    mask = torch.ones(1, 2, 3, device=DEVICE)
    for weights, kernels in (("fast", {"_forward_kernel"}), (None, {"_forward_kernel"}),
                             (torch.ones(1, 2, 3, device=DEVICE), {"_forward_kernel"})):
        cases.append((f"weighted_mim_loss weights={type(weights).__name__}",
                      lambda w=weights: kamim_fast.weighted_mim_loss(x + 0.1, x, mask, w, mean=0.5, std=0.25)
                      if w == "fast" else kamim_fast.weighted_mim_loss(x + 0.1, x, mask, w), kernels))
    p = (x + 0.1).requires_grad_()
    cases.append(("weighted_mim_loss backward", lambda: kamim_fast.weighted_mim_loss(p, x, mask, None).backward(),
                  {"_forward_kernel", "_backward_kernel"}))
    for name, call, kernels in cases:
        launched.clear()
        call()
        assert kernels <= set(launched), (name, launched)


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
