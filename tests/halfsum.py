"""Inputs whose sums have one right answer in half precision, for tests of reductions on fp16/bf16 storage.

Values are multiples of 1/64 below 4 in magnitude (8 significant bits at most: exact in bfloat16 and
float16), plus a few "large" values (256 in bfloat16, 2048 in float16: their ulp is 2). Every partial sum of
a few thousand of them is exact in float32, in any order, so an implementation that accumulates in float32
(or float64) and rounds once returns exactly ``float64 sum -> dtype``. One that accumulates in the storage
dtype loses each small addend after a large one (less than half an ulp: rounded away), so it is off by many
ulps: the tests compare bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

HALF_DTYPES = (torch.bfloat16, torch.float16)
LARGE = {torch.bfloat16: 256.0, torch.float16: 2048.0}  # ulp 2: an addend below 1 vanishes in the storage dtype


def dyadic(rng: np.random.Generator, shape, positive: bool = False) -> np.ndarray:
    """float64 multiples of 1/64 in (-4, 4) (or [1/64, 1) when ``positive``: addends a large value swallows)."""
    if positive:
        return rng.integers(1, 64, shape) / 64.0
    return rng.integers(-255, 256, shape) / 64.0


def rounded(exact: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The float64 result rounded once to ``dtype`` (what float32 accumulation then one cast gives here)."""
    t = exact if isinstance(exact, torch.Tensor) else torch.from_numpy(np.asarray(exact, np.float64))
    return t.to(torch.float64).to(dtype)


def assert_bitwise(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    got = got.detach().cpu()
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, want.dtype, got.shape, want.shape)
    if not torch.equal(got, want):
        diff = (got.double() - want.double()).abs()
        i = int(diff.flatten().argmax())
        raise AssertionError(f"{what}: {int((got != want).sum())} of {got.numel()} values differ from the float32-"
                             f"accumulated result; worst at flat index {i}: got {got.flatten()[i].item()}, want "
                             f"{want.flatten()[i].item()} (a sum in the storage dtype {got.dtype}?)")
