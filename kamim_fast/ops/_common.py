"""What the op modules share: ``auto``'s choices per family, the reasons an implementation does not run on a
device, the tolerances of the conformance suite, and the interface of its sample source."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from .._constants import MAX_CUDA_N

# auto: the Triton kernels on CUDA tensors, the native kernels on CPU tensors (the KAMIM ops); the extension on
# both devices (the AMT ops, which have no Triton kernels).
KAMIM_AUTO = {"cpu": "cpp", "cuda": "triton"}
AMT_AUTO = {"cpu": "cpp", "cuda": "cpp"}
CPU_KERNELS_ONLY = {"cuda": "CPU kernels only"}

# Tolerances of an output against the reference (OpEntry.tolerances); the others are compared bit for bit.
REDUCTION = "reduction"  # a float sum in another order: relative to the reference's own float32 rounding
ROUNDING = "rounding"  # the same factors multiplied in another order: a few ulps

IDENTITY = ([0.0] * 3, [1.0] * 3)  # mean and std of images that need no un-normalisation
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet's, as lists (the ops' float[] arguments)


def colour_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    """No statistics ([]) mean the identity: the three values each that the kernels read."""
    return list(mean) or [0.0] * 3, list(std) or [1.0] * 3


class SampleSource(Protocol):
    """What an op's ``samples`` draws its inputs from (the test suite implements it in ``tests/samples.py``):
    real photographs and adversarial patterns, fresh on every run from ``rng``, moved to ``device`` by ``to``."""

    rng: np.random.Generator
    device: str

    def photo(self, B: int, H: int, W: int) -> torch.Tensor:
        """(B, 3, H, W) uint8 crops of real colour photographs, on the CPU."""

    def gray(self, B: int, H: int, W: int) -> torch.Tensor:
        """(B, H, W) uint8 adversarial patterns (noise, plateaus, isolated dots), on the CPU."""

    def to(self, *items) -> list:
        """The tensors among ``items`` moved to ``device``; the rest as they are."""


def normalised(u8: torch.Tensor, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32 normalised as ``(v / 255 - mean) / std``."""
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return (u8.float() / 255 - m) / s


# --- what an implementation does not support, and why (Impl.not_supported) --------------------------------

FLOAT64 = "float64 takes the PyTorch reference: the kernels read float32, bfloat16 and float16"


def float64_inputs(*tensors) -> list[str]:
    """Why the kernels do not run float64 inputs (the reference does)."""
    return [FLOAT64] if any(t.dtype == torch.float64 for t in tensors) else []


def sort_size_not_supported(name: str, noise: torch.Tensor) -> list[str]:
    """The CUDA kernel sorts one image's keys in one block's shared memory."""
    if noise.device.type == "cuda" and noise.shape[1] > MAX_CUDA_N:
        return [f"{name} on CUDA must have N <= {MAX_CUDA_N} patches per image for the extension (one block sorts "
                f"them), got N = {noise.shape[1]}; KAMIM_FAST_BACKEND=torch has no limit"]
    return []


SORT_LIMIT = f"N > {MAX_CUDA_N} patches per image on CUDA (one block sorts an image)"
