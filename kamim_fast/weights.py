"""KAMIM's per-patch weights from FAST keypoint density (REFERENCE.md section 3)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_int, check_tensor
from ._opencv import DRAW_KEYPOINT_RING, DRAW_KEYPOINT_RING_RADIUS, FAST_DEFAULT_THRESHOLD, FAST_MAX_THRESHOLD
from .gray import IMAGENET_MEAN, IMAGENET_STD, ChannelStats, colour_args

DENSITY_MODES = ("ring", "count")
# Defaults of the weight options, shared by patch_weights and weighted_mim_loss (published values).
WEIGHT_PATCH_SIZE = 8
TEMPERATURE = 0.25
DENSITY = "ring"
WEIGHT_LOG_CLIP = 20.0  # the published code clips d/T to [-20, 20] before exp


def ring_stencil(device: torch.device | str | None = None) -> torch.Tensor:
    """The 9x9 float32 ring that ``cv2.drawKeypoints`` draws around each keypoint (48 ones)."""
    rows = [[1.0 if c == "#" else 0.0 for c in row] for row in DRAW_KEYPOINT_RING]
    return torch.tensor(rows, dtype=torch.float32, device=device)


def check_divisible(name: str, size: int, what: str, patch: int, patch_name: str) -> None:
    if size % patch:
        raise ValueError(f"{name}: {what} {size} must be divisible by {patch_name}={patch}")


def keypoint_density_ref(keypoints: torch.Tensor, patch_size: int = 8, mode: str = "ring") -> torch.Tensor:
    """PyTorch reference of :func:`keypoint_density` on a checked (B, H, W) bool batch.

    ``ring``: the union of the drawKeypoints rings (a dilation by the stencil, clipped at the edges),
    averaged per cell; ``count``: keypoints per cell over p*p.
    """
    kp = keypoints.to(torch.float32).unsqueeze(1)
    if mode == "ring":
        r = DRAW_KEYPOINT_RING_RADIUS
        kp = (F.conv2d(kp, ring_stencil(kp.device)[None, None], padding=r) > 0).to(torch.float32)
    return F.avg_pool2d(kp, patch_size).squeeze(1)


def keypoint_density(keypoints: torch.Tensor, patch_size: int = 8, mode: str = "ring") -> torch.Tensor:
    """Share of each p x p cell covered by keypoints, as the published KAMIM code measures it.

    Args:
        keypoints: bool keypoint maps, e.g. from :func:`fast_corners`.
        patch_size: cell size p (the published checkpoints use 8).
        mode: ``"ring"`` rasterises each keypoint as ``cv2.drawKeypoints`` does (a 48-pixel ring of
            radius 3; overlapping rings do not add up) and averages per cell; ``"count"`` is the number
            of keypoints per cell divided by p*p.

    Returns:
        float32 density in [0, 1].

    Shape:
        - keypoints: (B, H, W) or (H, W), H and W divisible by ``patch_size``.
        - output: (B, H/p, W/p) or (H/p, W/p).

    Example:
        >>> kp = torch.zeros(16, 16, dtype=torch.bool)
        >>> kp[4, 4] = True
        >>> keypoint_density(kp, patch_size=8)  # the ring spans rows and columns 0..8: 42 + 3 + 3 pixels
        tensor([[0.6562, 0.0469],
                [0.0469, 0.0000]])
        >>> keypoint_density(kp, patch_size=8, mode="count")
        tensor([[0.0156, 0.0000],
                [0.0000, 0.0000]])
    """
    check_tensor("keypoints", keypoints, dtypes=(torch.bool,), ndims=(2, 3), shape_doc="(B, H, W) or (H, W)")
    p = check_int("patch_size", patch_size, 1, 1 << 16)
    check_choice("mode", mode, DENSITY_MODES)
    check_divisible("keypoints", keypoints.shape[-2], "height", p, "patch_size")
    check_divisible("keypoints", keypoints.shape[-1], "width", p, "patch_size")
    batched = keypoints.unsqueeze(0) if keypoints.dim() == 2 else keypoints
    density = torch.ops.kamim_fast.keypoint_density(batched, p, mode == "ring")
    return density[0] if keypoints.dim() == 2 else density


def density_to_weights(density: torch.Tensor, temperature: float) -> torch.Tensor:
    """The published weighting: ``w = exp(clip(d/T, -20, 20))``, divided by its minimum per image.

    The smallest weight of each image is 1; an image without keypoints has weight 1 everywhere.
    ``density`` is (B, h, w); the order of operations is the published code's.
    """
    w = torch.exp(torch.clamp(density / temperature, -WEIGHT_LOG_CLIP, WEIGHT_LOG_CLIP))
    return w / w.amin(dim=(-2, -1), keepdim=True)


def weights_from_keypoints(keypoints: torch.Tensor, cell: int, density: str, temperature: float) -> torch.Tensor:
    """(B, H, W) bool keypoints -> (B, H/cell, W/cell) weights: :func:`keypoint_density_ref`, then
    :func:`density_to_weights`. Every path that has keypoints (not per-cell counts) ends here."""
    return density_to_weights(keypoint_density_ref(keypoints, cell, density), temperature)


def check_temperature(temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a positive float, got {type(temperature).__name__} {temperature!r}")
    if not temperature > 0 or temperature == float("inf"):
        raise ValueError(f"temperature must be a positive finite float, got {temperature}")
    return float(temperature)


def patch_weights(
    images: torch.Tensor,
    *,
    weight_patch_size: int = WEIGHT_PATCH_SIZE,
    temperature: float = TEMPERATURE,
    threshold: int = FAST_DEFAULT_THRESHOLD,
    density: str = DENSITY,
    mean: ChannelStats | None = IMAGENET_MEAN,
    std: ChannelStats | None = IMAGENET_STD,
    channel_order: str = "rgb",
) -> torch.Tensor:
    """KAMIM's per-cell loss weights, computed from the images on their device.

    gray (OpenCV's formula, after un-normalising float input) -> FAST with non-max suppression ->
    keypoint density per cell -> ``exp(clip(d/T, -20, 20))`` / its minimum over the image.

    Args:
        images: uint8 images, or float images normalised with ``mean``/``std`` (the SimMIM target).
        weight_patch_size: cell size p of the weights (published: 8; sweeps used 16 and 32).
        temperature: T > 0 (published: 0.25; sweeps used 0.1 to 2.5).
        threshold: FAST threshold, 0..255 (OpenCV's default 10).
        density: ``"ring"`` (published) or ``"count"``, as in :func:`keypoint_density`.
        mean: normalisation mean of float images (ImageNet's by default); ignored for uint8.
        std: normalisation std of float images (ImageNet's by default); ignored for uint8.
        channel_order: ``"rgb"``, or ``"bgr"`` for COLOR_BGR2GRAY's weights (see ``KAMIM_PAPER``).

    Returns:
        float32 weights >= 1, the smallest of each image exactly 1.

    Shape:
        - images: (B, 3, H, W), H and W divisible by ``weight_patch_size``.
        - output: (B, H/p, W/p).

    Example:
        >>> images = torch.full((1, 3, 16, 16), 128, dtype=torch.uint8)
        >>> images[0, :, 4, 4] = 255  # one bright dot: a FAST corner
        >>> patch_weights(images, temperature=0.25)  # exp((d - d_min) / T)
        tensor([[[13.8046,  1.2062],
                 [ 1.2062,  1.0000]]])
    """
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        mean = std = None  # the defaults are for float targets
    images, opts = check_weight_options("images", images, weight_patch_size, temperature, threshold, density, mean,
                                        std, channel_order)
    return torch.ops.kamim_fast.patch_weights(images, opts.cell, opts.temperature, opts.threshold,
                                              opts.density == "ring", opts.bgr, opts.mean, opts.std)


class WeightOptions(NamedTuple):
    """Checked options of KAMIM's weights, shared by :func:`patch_weights` and the fused loss."""

    cell: int
    temperature: float
    threshold: int
    density: str
    bgr: bool
    mean: list[float]
    std: list[float]


def check_weight_options(name, images, weight_patch_size, temperature, threshold, density, mean, std,
                         channel_order) -> tuple[torch.Tensor, WeightOptions]:
    """Validate the weight options for a (B, 3, H, W) batch called ``name``; raises naming the argument."""
    images, bgr, mean_l, std_l = colour_args(name, images, mean, std, channel_order)
    check_tensor(name, images, ndims=(4,), shape_doc="(B, 3, H, W)")
    p = check_int("weight_patch_size", weight_patch_size, 1, 1 << 16)
    check_divisible(name, images.shape[-2], "height", p, "weight_patch_size")
    check_divisible(name, images.shape[-1], "width", p, "weight_patch_size")
    temperature = check_temperature(temperature)
    threshold = check_int("threshold", threshold, 0, FAST_MAX_THRESHOLD)
    check_choice("density", density, DENSITY_MODES)
    return images, WeightOptions(p, temperature, threshold, density, bgr, mean_l, std_l)
