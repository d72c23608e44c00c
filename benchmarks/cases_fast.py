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

from .harness import Case, Impl, rotating, table_impls

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
    native = native_cases(quick) if device == "cpu" else []
    return [_case(B, H, W, device) for B, H, W in shapes] + native


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


# --- native CPU kernels (csrc/fast_cpu.cpp, torch.ops.kamim_fast_cpp) vs OpenCV and the published pipeline ---
# Natural photos (scikit-image's colour photographs, converted to gray as OpenCV does), not noise. Each case
# runs at one thread and at all threads: the native op through at::parallel_for, OpenCV in one process and
# in a pool of one process per core (the published dataloader's workers).

NATIVE_FAST_SHAPES = [(64, 192, 192), (1, 2048, 2048)]
QUICK_NATIVE_FAST_SHAPES = [(8, 192, 192), (1, 512, 512)]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def native_ops():
    """``torch.ops.kamim_fast_cpp`` when the extension holds the native CPU kernels, else None."""
    from kamim_fast import _ext

    if not _ext.status()[0]:
        return None
    try:
        if torch._C._dispatch_has_kernel_for_dispatch_key("kamim_fast_cpp::fast_corners", "CPU"):
            return torch.ops.kamim_fast_cpp
    except RuntimeError:
        pass
    return None


def photo_crops_rgb(B: int, H: int, W: int, seed: int) -> np.ndarray:
    """(B, H, W, 3) uint8 RGB: crops of the colour photos, or (when larger than the photos) a mirrored tiling."""
    import skimage.data

    rng = np.random.default_rng(seed)
    out = np.empty((B, H, W, 3), np.uint8)
    for b in range(B):
        img = getattr(skimage.data, PHOTOS[(b + seed) % len(PHOTOS)])()
        if img.shape[0] < H or img.shape[1] < W:  # mirror-tile (no seams of constant colour), random offset
            reps = (-(-H // img.shape[0]) + 1, -(-W // img.shape[1]) + 1)
            row = np.concatenate([img, img[:, ::-1]] * reps[1], 1)
            img = np.concatenate([row, row[::-1]] * reps[0], 0)
        y, x = rng.integers(0, img.shape[0] - H + 1), rng.integers(0, img.shape[1] - W + 1)
        out[b] = img[y : y + H, x : x + W]
    return out


def photo_gray(B: int, H: int, W: int, seed: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) for img in photo_crops_rgb(B, H, W, seed)])


def at_threads(n: int, fn):
    """``fn`` run with torch's intra-op thread count set to n (restored after)."""

    def step():
        prev = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(prev)

    return step


def native_cases(quick: bool) -> list[Case]:
    from kamim_fast import fast_corners

    ops = native_ops()
    if ops is None:
        return []
    cores = os.cpu_count() or 1
    isa = ops.fast_cpu_isa()
    out = []
    for B, H, W in QUICK_NATIVE_FAST_SHAPES if quick else NATIVE_FAST_SHAPES:
        gray = rotating(lambda i, B=B, H=H, W=W: photo_gray(B, H, W, i), ROTATE)
        gray_t = rotating(lambda i, B=B, H=H, W=W: torch.from_numpy(photo_gray(B, H, W, i)), ROTATE)
        opencv_one = Impl("OpenCV, 1 process", lambda gray=gray: [_cv_detect(img) for img in gray()], "cpu")
        chunk = max(1, B // cores)
        opencv_pool = Impl(f"OpenCV, {cores} processes",
                           lambda gray=gray, chunk=chunk: worker_pool().map(_cv_detect, list(gray()), chunksize=chunk),
                           "cpu")
        for threads in sorted({1, cores}):
            ours = [Impl(i.name, at_threads(threads, i.step), "cpu") for i in table_impls(
                "fast_corners", "cpu", lambda backend, gray_t=gray_t: lambda: fast_corners(gray_t(), THRESHOLD))]
            out.append(Case("fast", f"native CPU {B}x{H}x{W} photos, {threads} thread{'s' * (threads > 1)}",
                            B * H * W, "kamim_fast cpp", [*ours, opencv_one, opencv_pool],
                            min_bytes=3 * B * H * W, notes={"isa": isa, "threads": threads}))
    return out
