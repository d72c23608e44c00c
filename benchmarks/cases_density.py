"""The keypoint density per cell (``keypoint_density``): kamim_fast vs what the published code does per image
(``cv2.drawKeypoints`` of the keypoints, then the mean per cell, in numpy) and the PyTorch reference
(a 9x9 convolution and average pooling) on the same device. Inputs: FAST keypoints (threshold 10, NMS) of
crops of scikit-image's colour photographs, p = 8. Minimal bytes: the keypoint map in (1 byte per pixel), the
density out (4 bytes per cell).
"""

from __future__ import annotations

import numpy as np
import torch

from .cases_fast import photo_gray
from .harness import Case, Impl, auto_impl, rotating, table_impls

GPU_SHAPES = [(256, 192, 192), (16, 1024, 1024)]
QUICK_GPU_SHAPES = [(16, 192, 192)]
CPU_SHAPES = [(64, 192, 192)]
QUICK_CPU_SHAPES = [(8, 192, 192)]
ROTATE = 3
P = 8


def cases(device: str, quick: bool) -> list[Case]:
    shapes = (QUICK_CPU_SHAPES if quick else CPU_SHAPES) if device == "cpu" else \
        QUICK_GPU_SHAPES if quick else GPU_SHAPES
    return [_case(*shape, density, device) for shape in shapes for density in ("ring", "count")]


def _published_one(kp: np.ndarray, density: str) -> np.ndarray:
    """The published per-image pipeline: drawKeypoints of the keypoints (ring) or the keypoint map (count),
    then the mean per p x p cell."""
    import cv2

    if density == "ring":
        ys, xs = np.nonzero(kp)
        kps = [cv2.KeyPoint(float(x), float(y), 7) for y, x in zip(ys, xs)]
        drawn = cv2.drawKeypoints(np.zeros((*kp.shape, 3), np.uint8), kps, None, color=(255, 0, 0))
        covered = np.sign(drawn[..., 0]).astype(np.float32)
    else:
        covered = kp.astype(np.float32)
    h, w = kp.shape[0] // P, kp.shape[1] // P
    return covered.reshape(h, P, w, P).mean((1, 3), dtype=np.float32)


def _case(B: int, H: int, W: int, density: str, device: str) -> Case:
    from kamim_fast import fast_corners, keypoint_density

    def make(i):
        with torch.no_grad():
            return fast_corners(torch.from_numpy(photo_gray(B, H, W, i)))[0].to(device)

    keypoints = rotating(make, ROTATE)
    host = rotating(lambda i: make(i).cpu().numpy(), ROTATE)
    ours = table_impls("keypoint_density", device, lambda backend: lambda: keypoint_density(keypoints(), P, density))
    impls = [*ours,  # the registry's implementations that run here: the PyTorch reference among them
             Impl("published (drawKeypoints + numpy), 1 process", lambda: [_published_one(k, density) for k in host()],
                  "cpu")]
    return Case("density", f"B={B} {H}x{W} p={P} {density}", B * H * W, auto_impl("keypoint_density", device), impls,
                min_bytes=B * H * W + 4 * B * (H // P) * (W // P))
