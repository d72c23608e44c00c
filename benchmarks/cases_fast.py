"""FAST-9/16 (threshold 10, NMS on): kamim_fast vs OpenCV on the CPU (one process, and a pool over all
cores as the published dataloader's workers) vs the vectorised PyTorch FAST on the same GPU.

Inputs are real texture (scikit-image's gravel and grass, tiled and shifted per image), so keypoint
density is natural. Minimal bytes: gray in, keypoints and scores out, 3 B per pixel.
"""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import torch

from .harness import Case, Impl, rotating

GPU_SHAPES = [(256, 192, 192), (256, 224, 224), (16, 1024, 1024), (1, 4096, 4096)]
QUICK_GPU_SHAPES = [(16, 192, 192), (1, 1024, 1024)]
CPU_SHAPES = [(8, 192, 192), (1, 512, 512)]
ROTATE = 3
THRESHOLD = 10


def textured_batch(B: int, H: int, W: int, seed: int) -> torch.Tensor:
    """(B, H, W) uint8 gray cut from tiled real textures at random offsets."""
    import skimage.data

    g = torch.Generator().manual_seed(seed)
    tiles = [torch.from_numpy(skimage.data.gravel()), torch.from_numpy(skimage.data.grass())]
    out = torch.empty((B, H, W), dtype=torch.uint8)
    for b in range(B):
        src = tiles[b % 2]
        big = src.repeat(-(-H // src.shape[0]) + 1, -(-W // src.shape[1]) + 1)
        y, x = (int(torch.randint(0, s, (1,), generator=g)) for s in src.shape)
        out[b] = big[y : y + H, x : x + W]
    return out


def _cv_detect(img: np.ndarray) -> int:
    import cv2

    return len(cv2.FastFeatureDetector_create(THRESHOLD, True).detect(img))


_POOL = None


def worker_pool():
    """One process per core, started once (as a DataLoader's workers are), reused by every case."""
    global _POOL
    if _POOL is None:
        _POOL = multiprocessing.get_context("fork").Pool(os.cpu_count())
    return _POOL


def cases(device: str, quick: bool) -> list[Case]:
    shapes = CPU_SHAPES if device == "cpu" else QUICK_GPU_SHAPES if quick else GPU_SHAPES
    return [_case(B, H, W, device) for B, H, W in shapes]


def _case(B: int, H: int, W: int, device: str) -> Case:
    from kamim_fast import fast_corners, fast_corners_ref

    on_device = rotating(lambda i: textured_batch(B, H, W, i).to(device), ROTATE)
    on_host = rotating(lambda i: list(textured_batch(B, H, W, i).numpy()), ROTATE)
    cores = os.cpu_count()
    impls = [Impl("kamim_fast", lambda: fast_corners(on_device(), THRESHOLD), device)]
    if device == "cuda":
        impls.append(Impl("PyTorch FAST, same GPU", lambda: fast_corners_ref(on_device(), THRESHOLD, True), device))
    impls += [
        Impl("OpenCV, 1 process", lambda: [_cv_detect(img) for img in on_host()], "cpu"),
        Impl(f"OpenCV, {cores} processes",
             lambda: worker_pool().map(_cv_detect, on_host(), chunksize=max(1, B // cores)), "cpu"),
    ]
    return Case("fast", f"{B}x{H}x{W}", B * H * W, "kamim_fast", impls, min_bytes=3 * B * H * W)
