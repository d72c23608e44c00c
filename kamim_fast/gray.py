"""RGB -> uint8 gray, pixel for pixel as ``cv2.cvtColor(..., COLOR_RGB2GRAY)`` computes it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import FLOAT_DTYPES, check_channel_stats, check_choice, check_tensor
from ._opencv import GRAY_ROUND, GRAY_SHIFT, GRAY_WEIGHTS_RGB

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CHANNEL_ORDERS = ("rgb", "bgr")
COLOUR_DTYPES = (torch.uint8, *FLOAT_DTYPES)

ChannelStats = float | Sequence[float] | torch.Tensor


def colour_args(
    name: str,
    images: object,
    mean: ChannelStats | None,
    std: ChannelStats | None,
    channel_order: str,
) -> tuple[torch.Tensor, str, list[float], list[float]]:
    """Check a colour batch and its normalisation; returns (images, channel_order, mean, std).

    uint8 images take no mean/std. Float images are un-normalised as ``round((x*std + mean)*255)``;
    without mean/std they are taken to lie in [0, 1].
    """
    check_tensor(name, images, dtypes=COLOUR_DTYPES, ndims=(3, 4), shape_doc="(B, 3, H, W) or (3, H, W)")
    if images.shape[-3] != 3:
        raise ValueError(f"{name} must have 3 channels in dimension -3 (B, 3, H, W), got shape {tuple(images.shape)}")
    channel_order = check_choice("channel_order", channel_order, CHANNEL_ORDERS)
    if images.dtype == torch.uint8:
        if mean is not None or std is not None:
            raise ValueError(f"mean and std apply to float {name}; got uint8 {name} with mean={mean!r}, std={std!r}")
        return images, channel_order, [0.0] * 3, [1.0] * 3
    mean_t = check_channel_stats("mean", 0.0 if mean is None else mean, 3, positive=False)
    std_t = check_channel_stats("std", 1.0 if std is None else std, 3, positive=True)
    return images, channel_order, list(mean_t), list(std_t)


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
    """PyTorch reference of :func:`rgb_to_gray_u8` on a checked (B, 3, H, W) batch -> (B, H, W) uint8."""
    v = channels_to_u8_ref(images, mean, std)
    r, g, b = v.unbind(-3)
    if bgr:
        r, b = b, r
    w_r, w_g, w_b = GRAY_WEIGHTS_RGB
    return ((r * w_r + g * w_g + b * w_b + GRAY_ROUND) >> GRAY_SHIFT).to(torch.uint8)


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
    images, channel_order, mean_l, std_l = colour_args("images", images, mean, std, channel_order)
    batched = images.unsqueeze(0) if images.dim() == 3 else images
    gray = torch.ops.kamim_fast.rgb_to_gray_u8(batched, channel_order, mean_l, std_l)
    return gray[0] if images.dim() == 3 else gray
