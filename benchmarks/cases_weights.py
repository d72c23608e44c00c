"""KAMIM's weights (``patch_weights``, ``**KAMIM_PAPER``) on the CPU: the native kernels (csrc/fast_cpu.cpp) vs the
published per-image pipeline (OpenCV FAST + drawKeypoints + pooling) in one process and in a pool of one
process per core (the published dataloader's workers), at one thread and at all threads. Inputs: crops of
scikit-image's colour photographs, uint8, and ImageNet-normalised fp32. Minimal bytes: the image in, the
weights out.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .cases_fast import ROTATE, at_threads, native_ops, photo_crops_rgb, worker_pool
from .harness import Case, Impl, rotating, table_impls

NATIVE_WEIGHTS_B = 64
QUICK_NATIVE_WEIGHTS_B = 8


def cases(device: str, quick: bool) -> list[Case]:
    """The native CPU cases (none on a GPU machine, or without the native kernels)."""
    if device != "cpu":
        return []
    return native_cases(quick)


def published_weights_one(img: np.ndarray, p: int = 8, temperature: float = 0.25) -> np.ndarray:
    """The published per-image pipeline: OpenCV FAST + drawKeypoints rings (cases_mim_loss.published_ring_map),
    pooling per p x p cell, exp(clip(d/T)) / min."""
    from .cases_mim_loss import published_ring_map

    ring = published_ring_map(img)
    h, w = ring.shape[0] // p, ring.shape[1] // p
    d = ring.reshape(h, p, w, p).mean((1, 3), dtype=np.float32)
    wts = np.exp(np.clip(d / np.float32(temperature), -20, 20))
    return wts / wts.min()


def native_cases(quick: bool) -> list[Case]:
    from kamim_fast import KAMIM_PAPER, patch_weights

    ops = native_ops()
    if ops is None:
        return []
    cores = os.cpu_count() or 1
    isa = ops.fast_cpu_isa()
    out = []
    B, S = (QUICK_NATIVE_WEIGHTS_B if quick else NATIVE_WEIGHTS_B), 192
    rgb = rotating(lambda i: photo_crops_rgb(B, S, S, i), ROTATE)
    rgb_t = rotating(lambda i: torch.from_numpy(photo_crops_rgb(B, S, S, i)).permute(0, 3, 1, 2).contiguous(), ROTATE)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    norm_t = rotating(lambda i: ((torch.from_numpy(photo_crops_rgb(B, S, S, i)).permute(0, 3, 1, 2).float() / 255
                                  - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)).contiguous(),
                      ROTATE)
    published_one = Impl("published pipeline, 1 process", lambda: [published_weights_one(img) for img in rgb()], "cpu")
    published_pool = Impl(f"published pipeline, {cores} processes",
                          lambda: worker_pool().map(published_weights_one, list(rgb()), chunksize=max(1, B // cores)),
                          "cpu")
    for threads in sorted({1, cores}):
        # KAMIM_PAPER: p=8, T=0.25, ring density, BGR2GRAY as the published code (RGB arrays handed to OpenCV)
        ours = [Impl(i.name, at_threads(threads, i.step), "cpu") for i in table_impls(
            "patch_weights", "cpu", lambda backend: lambda: patch_weights(rgb_t(), **KAMIM_PAPER))]
        native_f32 = Impl("kamim_fast cpp, normalised fp32 input", at_threads(
            threads, lambda: patch_weights(norm_t(), **KAMIM_PAPER, mean=mean, std=std)), "cpu")
        out.append(Case("weights", f"native CPU B={B} 3x{S}x{S} uint8 p=8, {threads} thread{'s' * (threads > 1)}",
                        B * S * S, "kamim_fast cpp", [*ours, native_f32, published_one, published_pool],
                        min_bytes=3 * B * S * S + 4 * B * (S // 8) ** 2, notes={"isa": isa, "threads": threads}))
    return out
