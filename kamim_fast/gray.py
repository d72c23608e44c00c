"""RGB -> uint8 gray, pixel for pixel as ``cv2.cvtColor(..., COLOR_RGB2GRAY)`` computes it."""

from __future__ import annotations

import torch

from ._checks import as_str
from ._constants import CHANNEL_ORDERS, IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (public here)
from ._forms import ChannelStats, colour_args  # noqa: F401  (public here)
from .ops.rgb_to_gray_u8 import channels_to_u8_ref, rgb_to_gray_u8_ref  # noqa: F401  (public here)

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
