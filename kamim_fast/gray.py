"""RGB -> uint8 gray, pixel for pixel as ``cv2.cvtColor(..., COLOR_RGB2GRAY)`` computes it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import as_str, channel_stats, check_tensor
from ._constants import CHANNEL_ORDERS, IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (public here)
from .ops.rgb_to_gray_u8 import channels_to_u8_ref, rgb_to_gray_u8_ref  # noqa: F401  (public here)

ChannelStats = float | Sequence[float] | torch.Tensor


def colour_args(
    name: str,
    images: object,
    mean: ChannelStats | None,
    std: ChannelStats | None,
) -> tuple[torch.Tensor, list[float], list[float]]:
    """A colour batch's public forms as the ops take them: (images, mean, std).

    uint8 images take no mean/std (the ops get none). Float images are un-normalised as
    ``round((x*std + mean)*255)``; without mean/std they are taken to lie in [0, 1]. A statistic is a float,
    a sequence or a tensor; the ops check the values (``kamim_fast.ops.rgb_to_gray_u8.check_colour``).
    """
    check_tensor(name, images, ndims=(3, 4), shape_doc="(B, 3, H, W) or (3, H, W)")
    if images.dtype == torch.uint8:
        if mean is not None or std is not None:
            raise ValueError(f"mean and std apply to float {name}; got uint8 {name} with mean={mean!r}, std={std!r}")
        return images, [], []
    mean_t = channel_stats("mean", 0.0 if mean is None else mean, 3)
    std_t = channel_stats("std", 1.0 if std is None else std, 3)
    return images, list(mean_t), list(std_t)


def rgb_to_gray_u8(
    images: torch.Tensor,
    *,
    mean: ChannelStats | None = None,
    std: ChannelStats | None = None,
    channel_order: str = "rgb",
) -> torch.Tensor:
    """Convert colour images to uint8 gray exactly as OpenCV does.

    ``gray = (R*9798 + G*19235 + B*3735 + 16384) >> 15`` on uint8 values, which equals
    ``cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)`` pixel for pixel (float weights with rounding disagree on
    about 0.1% of pixels). Float images are first un-normalised to ``round((x*std + mean)*255)``,
    clamped to [0, 255] (NaN gives 0), which recovers the uint8 image a normalised batch came from.

    Args:
        images: uint8 images, or float images normalised as ``(v/255 - mean)/std``.
        mean: per-channel mean of the normalisation (float images only; default 0).
        std: per-channel std of the normalisation (float images only; default 1).
        channel_order: ``"rgb"``, or ``"bgr"`` to match ``COLOR_BGR2GRAY`` on the same array.

    Returns:
        uint8 gray images.

    Shape:
        - images: (B, 3, H, W) or (3, H, W), any strides (channels-last works).
        - output: (B, H, W) or (H, W), contiguous.

    Example:
        >>> img = torch.tensor([[[255]], [[0]], [[0]]], dtype=torch.uint8)  # one red pixel
        >>> rgb_to_gray_u8(img)
        tensor([[76]], dtype=torch.uint8)
        >>> rgb_to_gray_u8(img, channel_order="bgr")
        tensor([[29]], dtype=torch.uint8)
    """
    images, mean_l, std_l = colour_args("images", images, mean, std)
    as_str("channel_order", channel_order, CHANNEL_ORDERS)
    batched = images.unsqueeze(0) if images.dim() == 3 else images
    gray = torch.ops.kamim_fast.rgb_to_gray_u8(batched, channel_order, mean_l, std_l)
    return gray[0] if images.dim() == 3 else gray
