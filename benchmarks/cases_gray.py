"""RGB -> uint8 gray (``rgb_to_gray_u8``): kamim_fast vs ``cv2.cvtColor(..., COLOR_RGB2GRAY)`` per image on the
CPU, and the PyTorch reference (the registry's torch implementation) on the same device. Inputs: crops of scikit-image's colour photographs, uint8
and ImageNet-normalised float32 (un-normalised on the fly). Minimal bytes: 3 channels in, 1 byte out per pixel
(uint8), 12 in and 1 out (float32).
"""

from __future__ import annotations

import numpy as np
import torch

from .cases_fast import photo_crops_rgb
from .harness import Case, Impl, auto_impl, rotating, table_impls

GPU_SHAPES = [(256, 192, 192), (16, 1024, 1024)]
QUICK_GPU_SHAPES = [(16, 192, 192)]
CPU_SHAPES = [(64, 192, 192)]
QUICK_CPU_SHAPES = [(8, 192, 192)]
ROTATE = 3
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def cases(device: str, quick: bool) -> list[Case]:
    shapes = (QUICK_CPU_SHAPES if quick else CPU_SHAPES) if device == "cpu" else \
        QUICK_GPU_SHAPES if quick else GPU_SHAPES
    return [_case(*shape, dtype, device) for shape in shapes for dtype in (torch.uint8, torch.float32)]


def _cv_gray(images: np.ndarray) -> list[np.ndarray]:
    import cv2

    return [cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) for img in images]


def _case(B: int, H: int, W: int, dtype: torch.dtype, device: str) -> Case:
    from kamim_fast import rgb_to_gray_u8

    def make(i):
        u8 = torch.from_numpy(photo_crops_rgb(B, H, W, i)).permute(0, 3, 1, 2).contiguous()
        if dtype == torch.uint8:
            return u8.to(device)
        m, s = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
        return ((u8.float() / 255 - m) / s).to(device)

    images = rotating(make, ROTATE)
    stats = {} if dtype == torch.uint8 else {"mean": MEAN, "std": STD}
    host = rotating(lambda i: photo_crops_rgb(B, H, W, i), ROTATE)
    ours = table_impls("rgb_to_gray_u8", device, lambda backend: lambda: rgb_to_gray_u8(images(), **stats))
    impls = list(ours)  # the registry's implementations that run here: the PyTorch reference among them
    if dtype == torch.uint8:  # OpenCV converts uint8 arrays
        impls.append(Impl("OpenCV, 1 process", lambda: _cv_gray(host()), "cpu"))
    size = torch.tensor([], dtype=dtype).element_size()
    return Case("gray", f"B={B} 3x{H}x{W} {str(dtype).removeprefix('torch.')}", B * H * W, auto_impl("rgb_to_gray_u8", device), impls,
                min_bytes=(3 * size + 1) * B * H * W)
