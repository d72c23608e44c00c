"""torch.library registration: the ``kamim_fast::*`` ops, their fake kernels and their device dispatch.

Public functions check arguments and call these ops; each op picks the Triton kernel or the PyTorch
reference (``_backend.use_triton``) and holds no math itself. Registering them as custom ops keeps
``torch.compile(fullgraph=True)`` free of graph breaks: the compiler sees one opaque node with a
fake kernel for shapes.
"""

from __future__ import annotations

import torch

from ._backend import use_triton
from .fast import fast_corners_ref
from .gray import rgb_to_gray_u8_ref


@torch.library.custom_op("kamim_fast::rgb_to_gray_u8", mutates_args=())
def rgb_to_gray_u8_op(images: torch.Tensor, bgr: bool, mean: list[float], std: list[float]) -> torch.Tensor:
    """(B, 3, H, W) uint8 or normalised float -> (B, H, W) uint8 gray."""
    if use_triton(images):
        from .kernels import gray

        return gray.rgb_to_gray_u8(images, bgr, tuple(mean), tuple(std))
    return rgb_to_gray_u8_ref(images, bgr, mean, std)


@rgb_to_gray_u8_op.register_fake
def _(images, bgr, mean, std):
    return images.new_empty((images.shape[0], images.shape[2], images.shape[3]), dtype=torch.uint8)


@torch.library.custom_op("kamim_fast::fast_corners", mutates_args=())
def fast_corners_op(
    image: torch.Tensor, threshold: int, nonmax_suppression: bool, bgr: bool, mean: list[float], std: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """FAST on (B, H, W) uint8 gray, or on (B, 3, H, W) colour converted to gray on the fly.

    Returns (keypoints bool, scores uint8), both (B, H, W). ``bgr``/``mean``/``std`` apply to colour.
    """
    if use_triton(image):
        from .kernels import fast, fast_tile

        if image.dim() == 3:
            kind = fast_tile.SRC_GRAY_U8
        else:
            kind = fast_tile.SRC_RGB_FLOAT if image.is_floating_point() else fast_tile.SRC_RGB_U8
        return fast.fast_corners(image, threshold, nonmax_suppression, kind, bgr, tuple(mean or (0.0,) * 3), tuple(std or (1.0,) * 3))
    gray = image if image.dim() == 3 else rgb_to_gray_u8_ref(image, bgr, mean or (0.0,) * 3, std or (1.0,) * 3)
    return fast_corners_ref(gray, threshold, nonmax_suppression)


@fast_corners_op.register_fake
def _(image, threshold, nonmax_suppression, bgr, mean, std):
    shape = (image.shape[0], image.shape[-2], image.shape[-1])
    return image.new_empty(shape, dtype=torch.bool), image.new_empty(shape, dtype=torch.uint8)
