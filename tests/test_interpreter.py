"""Triton's interpreter, as the tests run the kernels on CPU tensors, behaves as the compiled kernels do where the
tests rely on it (conftest.py sets it up)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CUDA, INTERPRETER

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

pytestmark = pytest.mark.skipif(not (CUDA or INTERPRETER), reason="needs a GPU or Triton's interpreter")
DEVICE = "cuda" if CUDA else "cpu"


@triton.jit
def _to_bf16_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    inside = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=inside).to(tl.bfloat16), mask=inside)


def test_float32_to_bf16_rounds_to_nearest_even_as_torch(rng):
    """A kernel's float32 -> bfloat16 cast rounds to nearest even, as torch's: on a GPU (cvt.rn.bf16.f32) and
    through the interpreter (which truncates unless conftest's interpreter_rounds_bf16_like_the_gpu is in
    force): ties both ways, carries into the exponent, overflow to inf, NaN, signed zeros, subnormals."""
    bits = np.concatenate([
        rng.integers(0, 1 << 32, 3000, dtype=np.uint64).astype(np.uint32),
        (rng.integers(0, 1 << 16, 500, dtype=np.uint64).astype(np.uint32) << 16) | 0x8000,  # exact ties
        np.array([0x3F7FFFFF, 0x3F7F8000, 0x3F808000, 0x3F818000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
                  0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x00000000, 0x80000000, 0x00000001, 0x007FFFFF, 0x00008000],
                 dtype=np.uint32)])
    x = torch.from_numpy(bits.view(np.float32).copy()).to(DEVICE)
    y = torch.empty(x.shape, dtype=torch.bfloat16, device=DEVICE)
    _to_bf16_kernel[(1,)](x, y, x.numel(), BLOCK=triton.next_power_of_2(x.numel()))
    want = x.to(torch.bfloat16)
    nan = want.isnan()
    assert torch.equal(y.isnan(), nan)
    assert torch.equal(y[~nan].view(torch.int16), want[~nan].view(torch.int16))
