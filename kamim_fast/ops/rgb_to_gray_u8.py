"""``kamim_fast::rgb_to_gray_u8``: (B, 3, H, W) uint8 or normalised float -> (B, H, W) uint8 gray, pixel for
pixel as OpenCV's ``COLOR_RGB2GRAY`` (``COLOR_BGR2GRAY`` with ``channel_order="bgr"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _backend
from .._opencv import GRAY_ROUND, GRAY_SHIFT, GRAY_WEIGHTS_RGB
from .._checks import check_colour
from ._common import CPU_KERNELS_ONLY, IDENTITY, KAMIM_AUTO, MEAN, STD, colour_stats, normalised

# --- the reference -------------------------------------------------------------------------------------


def channels_to_u8_ref(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) uint8 or normalised float -> int32 values in [0, 255] (reference semantics).

    Float: v = round((x * std + mean) * 255) in float32, ties to even; NaN and values below 0 give 0,
    values above 255 give 255. These are the kernels' exact operations, in the same order.
    """
    if images.dtype == torch.uint8:
        return images.to(torch.int32)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
    v = (images.to(torch.float32) * std_t + mean_t) * 255.0
    v = torch.where(v > 0, v, 0.0).clamp(max=255.0)
    return torch.round(v).to(torch.int32)


def rgb_to_gray_u8_ref(
    images: torch.Tensor,
    bgr: bool = False,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """PyTorch reference of :func:`kamim_fast.rgb_to_gray_u8` on a checked (B, 3, H, W) batch -> (B, H, W) uint8."""
    v = channels_to_u8_ref(images, mean, std)
    r, g, b = v.unbind(-3)
    if bgr:
        r, b = b, r
    w_r, w_g, w_b = GRAY_WEIGHTS_RGB
    return ((r * w_r + g * w_g + b * w_b + GRAY_ROUND) >> GRAY_SHIFT).to(torch.uint8)


# --- the check -----------------------------------------------------------------------------------------


def check(images, channel_order, mean, std) -> None:
    check_colour("images", images, channel_order, mean, std)


# --- the op --------------------------------------------------------------------------------------------


@torch.library.custom_op("kamim_fast::rgb_to_gray_u8", mutates_args=())
def op(images: torch.Tensor, channel_order: str, mean: list[float], std: list[float]) -> torch.Tensor:
    """(B, 3, H, W) uint8 or normalised float -> (B, H, W) uint8 gray; mean and std: 3 values or none."""
    return _backend.run("rgb_to_gray_u8", images.device, images, channel_order, mean, std)


@op.register_fake
def _(images, channel_order, mean, std):
    return images.new_empty((images.shape[0], images.shape[2], images.shape[3]), dtype=torch.uint8)


def _torch(images, channel_order, mean, std):
    return rgb_to_gray_u8_ref(images, channel_order == "bgr", *colour_stats(mean, std))


def _triton(images, channel_order, mean, std):
    from ..kernels import gray

    mean, std = colour_stats(mean, std)
    return gray.rgb_to_gray_u8(images, channel_order, tuple(mean), tuple(std))


def samples(s) -> list[tuple]:
    u8 = s.photo(2, 9, 13)
    return [(*s.to(u8), "rgb", *IDENTITY), (*s.to(normalised(u8)), "bgr", MEAN, STD),
            (*s.to(u8.contiguous(memory_format=torch.channels_last)), "bgr", *IDENTITY),
            (*s.to(s.photo(1, 5, 7)), "rgb", [], [])]


_backend.register(op, check=check, auto=KAMIM_AUTO, samples=samples, impls=[
    _backend.torch_impl(_torch),
    _backend.triton_impl(_triton, "gray"),
    _backend.cpp_impl(("cpu",), why_not=CPU_KERNELS_ONLY),
])
