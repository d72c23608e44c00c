"""KAMIM's input path on the device: kornia augmentation and SimMIM's mask generator in torch.

The published pipeline (REFERENCE.md section 3) crops, flips, normalises and runs FAST on the CPU in the
dataloader workers. Here the dataloader only decodes uint8 images; the batch moves to the GPU as uint8
(a quarter of float32's bytes), :class:`SimMIMAugment` crops, flips and normalises it there, and
:func:`simmim_mask` draws SimMIM's masks there. The keypoint weights are computed inside the loss from
the normalised target (``weighted_mim_loss(..., "fast")``), so nothing of KAMIM stays on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_bool, check_int, check_size_pair, check_tensor, is_number
from ..gray import IMAGENET_MEAN, IMAGENET_STD, ChannelStats

MASK_PATCH_SIZE = 32
MODEL_PATCH_SIZE = 16
MASK_RATIO = 0.6
CROP_SCALE = (0.67, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def _check_pair(name: str, value: object, lo: float, hi: float) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise TypeError(f"{name} must be a pair of floats (low, high), got {value!r}")
    a, b = value
    for v in (a, b):
        if not is_number(v):
            raise TypeError(f"{name} must hold floats, got {type(v).__name__} {v!r}")
    if not lo <= a <= b <= hi:
        raise ValueError(f"{name} must satisfy {lo} <= low <= high <= {hi}, got {tuple(value)}")
    return float(a), float(b)


class SimMIMAugment(nn.Module):
    """KAMIM's training augmentation on the device, as the published dataloader does it on the CPU.

    RandomResizedCrop (scale 0.67-1, aspect 3/4-4/3, bilinear), random horizontal and vertical flips,
    then normalisation, with ``kornia.augmentation`` on whole batches. Each image gets its own crop and
    flips, drawn from torch's global random generator (seed it with ``torch.manual_seed``). The resized
    crop is rounded to whole uint8 values before it is normalised, as the published dataloader's PIL
    resize gives them: the target is a normalised uint8 image, whose gray KAMIM's weights recover exactly
    (and which :class:`kamim_fast.NormalizationWarning`'s grid test expects).

    Args:
        size: output size, an int or (H, W) (SimMIM: 192).
        scale: range of the crop's share of the image area.
        ratio: range of the crop's aspect ratio.
        hflip: random horizontal flips (p = 0.5).
        vflip: random vertical flips (p = 0.5).
        mean: normalisation mean, per channel, of images in [0, 1] (ImageNet's by default).
        std: normalisation std.

    Shape:
        - input: (B, 3, H, W) uint8 (0..255) or float (0..1), on any device.
        - output: (B, 3, size, size) float32, normalised: the SimMIM target.

    Example:
        >>> aug = SimMIMAugment(32)
        >>> images = torch.randint(0, 256, (4, 3, 48, 64), dtype=torch.uint8)
        >>> out = aug(images)
        >>> out.shape, out.dtype
        (torch.Size([4, 3, 32, 32]), torch.float32)
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 192,
        *,
        scale: tuple[float, float] = CROP_SCALE,
        ratio: tuple[float, float] = CROP_RATIO,
        hflip: bool = True,
        vflip: bool = True,
        mean: ChannelStats = IMAGENET_MEAN,
        std: ChannelStats = IMAGENET_STD,
    ) -> None:
        super().__init__()
        import kornia.augmentation as K

        from .._checks import check_channel_stats

        self.size = check_size_pair("size", size)
        scale = _check_pair("scale", scale, 0.0, 1.0)
        if scale[1] <= 0:
            raise ValueError(f"scale must have a positive upper end, got {scale}")
        ratio = _check_pair("ratio", ratio, 1e-6, 1e6)
        check_bool("hflip", hflip)
        check_bool("vflip", vflip)
        self.mean = check_channel_stats("mean", mean, 3, positive=False)
        self.std = check_channel_stats("std", std, 3, positive=True)
        ops: list[nn.Module] = [K.RandomResizedCrop(self.size, scale=scale, ratio=ratio)]
        if hflip:
            ops.append(K.RandomHorizontalFlip())
        if vflip:
            ops.append(K.RandomVerticalFlip())
        self.augment = nn.Sequential(*ops)
        self.register_buffer("mean_t", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std_t", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_tensor("images", images, dtypes=(torch.uint8, torch.float16, torch.bfloat16, torch.float32),
                     ndims=(4,), shape_doc="(B, 3, H, W)")
        if images.shape[1] != 3:
            raise ValueError(f"images must have 3 channels (B, 3, H, W), got shape {tuple(images.shape)}")
        x = images.to(torch.float32)
        if images.dtype == torch.uint8:
            x = x / 255
        if x.shape[0] == 0:
            return x.new_empty((0, 3, *self.size))
        x = torch.round(self.augment(x).clamp(0, 1) * 255) / 255  # whole uint8 values, as PIL's resize gives
        mean, std = self.mean_t.to(x.device), self.std_t.to(x.device)
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"size={self.size}, mean={self.mean}, std={self.std}"


def simmim_mask(
    batch_size: int,
    input_size: int | tuple[int, int] = 192,
    *,
    mask_patch_size: int = MASK_PATCH_SIZE,
    model_patch_size: int = MODEL_PATCH_SIZE,
    mask_ratio: float = MASK_RATIO,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SimMIM's ``MaskGenerator`` for a whole batch, on the device.

    Per image, ``ceil(cells * mask_ratio)`` of the ``mask_patch_size`` cells are masked, chosen uniformly
    without replacement (SimMIM draws a random permutation per image); the result is at model-patch
    resolution, each cell repeated ``mask_patch_size // model_patch_size`` times along both axes.

    Args:
        batch_size: B.
        input_size: image size, an int or (H, W), divisible by ``mask_patch_size``.
        mask_patch_size: side of a masked cell in pixels (SimMIM: 32).
        model_patch_size: the model's patch size; must divide ``mask_patch_size`` (ViT: 16, Swin: 4).
        mask_ratio: share of cells masked, in [0, 1] (SimMIM: 0.6).
        device: where to draw the mask (the generator's device when a generator is given).
        generator: a ``torch.Generator`` on ``device``, for reproducible masks.

    Returns:
        bool mask, True where masked, as SimMIM's model and :func:`kamim_fast.weighted_mim_loss` take it.

    Shape:
        - output: (B, H / model_patch_size, W / model_patch_size).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> mask = simmim_mask(2, 64, generator=g)  # 2x2 cells of 32 px, ceil(4 * 0.6) = 3 masked
        >>> mask.shape, mask.sum((1, 2)).tolist()  # 3 cells of 2x2 model patches each
        (torch.Size([2, 4, 4]), [12, 12])
    """
    B = check_int("batch_size", batch_size, 0, 1 << 31)
    H, W = check_size_pair("input_size", input_size)
    mp = check_int("mask_patch_size", mask_patch_size, 1, 1 << 16)
    p = check_int("model_patch_size", model_patch_size, 1, 1 << 16)
    if mp % p:
        raise ValueError(f"mask_patch_size={mp} must be a multiple of model_patch_size={p}")
    if H % mp or W % mp:
        raise ValueError(f"input_size {(H, W)} must be divisible by mask_patch_size={mp}")
    if not is_number(mask_ratio):
        raise TypeError(f"mask_ratio must be a float in [0, 1], got {type(mask_ratio).__name__} {mask_ratio!r}")
    mask_ratio = float(mask_ratio)
    if not 0 <= mask_ratio <= 1:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if device is not None and torch.device(device).type != generator.device.type:
            raise ValueError(f"generator must be on device {torch.device(device)}, got {generator.device}")
        device = generator.device
    rh, rw = H // mp, W // mp
    cells = rh * rw
    count = int(math.ceil(cells * mask_ratio))
    noise = torch.rand(B, cells, device=device, generator=generator)
    # the `count` smallest draws are masked: a uniform subset, like the first `count` of a permutation
    rank = noise.argsort(dim=1).argsort(dim=1)
    mask = (rank < count).view(B, rh, rw)
    scale = mp // p
    return mask.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
