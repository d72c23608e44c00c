"""``kamim_fast::patch_weights``: KAMIM's weights of (B, 3, H, W) uint8 or normalised float images -> (B, H/p, W/p)
float32: gray -> FAST with NMS -> ``density`` per cell -> ``exp(clip(d/T, -20, 20))`` / its minimum per image; and,
asked for (``with_stats``), the statistics of the normalisation check of float images (``colour_stats_ref``),
which the native CPU kernel gathers in its gray pass.

Also the published weighting (:func:`density_to_weights`), which the fused loss (``fast_weighted_mim_loss``) shares.
"""

from __future__ import annotations

import torch

from .. import _backend
from .._constants import WEIGHT_LOG_CLIP
from .._checks import check_bool, check_weight_options
from ._common import CPU_KERNELS_ONLY, IDENTITY, KAMIM_AUTO, MEAN, STD, colour_stats, normalised
from .rgb_to_gray_u8 import STATS_SIZE, colour_stats_ref
from .fast_corners import _torch as _fast_corners_torch
from .fast_corners import _triton as _fast_corners_triton
from .keypoint_density import keypoint_density_ref

# --- the reference -------------------------------------------------------------------------------------


def density_to_weights(density: torch.Tensor, temperature: float) -> torch.Tensor:
    """The published weighting: ``w = exp(clip(d/T, -20, 20))``, divided by its minimum per image.

    The smallest weight of each image is 1; an image without keypoints has weight 1 everywhere.
    ``density`` is (B, h, w); the order of operations is the published code's.
    """
    w = torch.exp(torch.clamp(density / temperature, -WEIGHT_LOG_CLIP, WEIGHT_LOG_CLIP))
    return w / w.amin(dim=(-2, -1), keepdim=True)


def weights_from_keypoints(keypoints: torch.Tensor, weight_patch_size: int, density: str,
                           temperature: float) -> torch.Tensor:
    """(B, H, W) bool keypoints -> (B, H/p, W/p) weights, p = ``weight_patch_size``: the keypoint density's
    reference, then :func:`density_to_weights`. Every path that has keypoints (not per-cell counts) ends here."""
    return density_to_weights(keypoint_density_ref(keypoints, weight_patch_size, density), temperature)


# --- the check -----------------------------------------------------------------------------------------


def check(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std,
          with_stats=False) -> None:
    check_weight_options("images", images, weight_patch_size, temperature, threshold, density, channel_order, mean, std)
    check_bool("with_stats", with_stats)


def stats_size(images: torch.Tensor, with_stats: bool) -> int:
    """The length of the statistics output: ``STATS_SIZE`` for float images with ``with_stats``, else 0."""
    return STATS_SIZE if with_stats and images.is_floating_point() else 0


def stats_ref(images, mean, std, with_stats) -> torch.Tensor:
    """The statistics output of the implementations that do not gather them in their own pass."""
    if not stats_size(images, with_stats):
        return images.new_empty(0, dtype=torch.float32)
    return colour_stats_ref(images, *colour_stats(mean, std))


# --- the op --------------------------------------------------------------------------------------------


@torch.library.custom_op("kamim_fast::patch_weights", mutates_args=())
def op(
    images: torch.Tensor, weight_patch_size: int, temperature: float, threshold: int, density: str,
    channel_order: str, mean: list[float], std: list[float], with_stats: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, stats): KAMIM's weights of (B, 3, H, W) uint8 or normalised float images -> (B, H/p, W/p)
    float32, p = ``weight_patch_size``: gray -> FAST with NMS -> ``density`` ("ring" or "count") per cell ->
    ``exp(clip(d/T, -20, 20))`` / per-image min; and with ``with_stats`` for float images, the (7,) float32
    statistics of the normalisation check (``colour_stats_ref``: per-channel minima, maxima, the number of
    values off the 1/255 grid), else an empty tensor."""
    return _backend.run("patch_weights", images.device, images, weight_patch_size, temperature, threshold, density,
                        channel_order, mean, std, with_stats)


@op.register_fake
def _(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std, with_stats=False):
    B, _, H, W = images.shape
    return (images.new_empty((B, H // weight_patch_size, W // weight_patch_size), dtype=torch.float32),
            images.new_empty(stats_size(images, with_stats), dtype=torch.float32))


def _torch(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std, with_stats=False):
    keypoints, _ = _fast_corners_torch(images, threshold, True, channel_order, mean, std)
    return (weights_from_keypoints(keypoints, weight_patch_size, density, temperature),
            stats_ref(images, mean, std, with_stats))


def _triton(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std, with_stats=False):
    """The FAST kernel, then the density and the weighting in PyTorch (the statistics too: one reduction, on the
    device, without a synchronisation)."""
    keypoints, _ = _fast_corners_triton(images, threshold, True, channel_order, mean, std)
    return (weights_from_keypoints(keypoints, weight_patch_size, density, temperature),
            stats_ref(images, mean, std, with_stats))


def samples(s) -> list[tuple]:
    u8 = s.photo(2, 16, 24)
    wrong = normalised(u8, [0.5] * 3, [0.5] * 3)  # other statistics: off the grid
    return [(*s.to(normalised(u8)), 8, 0.25, 10, "ring", "bgr", MEAN, STD, True),
            (*s.to(wrong), 8, 0.25, 10, "ring", "rgb", MEAN, STD, True),
            (*s.to(normalised(u8).to(torch.bfloat16)), 8, 0.25, 10, "count", "rgb", MEAN, STD, True),
            (*s.to(normalised(s.photo(1, 72, 40))), 8, 0.5, 10, "ring", "rgb", MEAN, STD, False),
            (*s.to(s.photo(1, 16, 16)), 4, 0.03, 5, "count", "rgb", *IDENTITY, True)]


_backend.register(op, check=check, auto=KAMIM_AUTO, samples=samples, impls=[
    _backend.torch_impl(_torch),
    _backend.triton_impl(_triton, "fast"),
    _backend.cpp_impl(("cpu",), why_not=CPU_KERNELS_ONLY),
])
