"""``kamim_fast::patch_weights``: KAMIM's weights of (B, 3, H, W) uint8 or normalised float images -> (B, H/p, W/p)
float32: gray -> FAST with NMS -> ``density`` per cell -> ``exp(clip(d/T, -20, 20))`` / its minimum per image.

Also the published weighting (:func:`density_to_weights`), which the fused loss (``fast_weighted_mim_loss``) shares.
"""

from __future__ import annotations

import torch

from .. import _backend
from .._constants import WEIGHT_LOG_CLIP
from .._checks import check_weight_options
from ._common import CPU_KERNELS_ONLY, IDENTITY, KAMIM_AUTO, MEAN, STD, normalised
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


def check(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std) -> None:
    check_weight_options("images", images, weight_patch_size, temperature, threshold, density, channel_order, mean, std)


# --- the op --------------------------------------------------------------------------------------------


@torch.library.custom_op("kamim_fast::patch_weights", mutates_args=())
def op(
    images: torch.Tensor, weight_patch_size: int, temperature: float, threshold: int, density: str,
    channel_order: str, mean: list[float], std: list[float],
) -> torch.Tensor:
    """KAMIM's weights of (B, 3, H, W) uint8 or normalised float images -> (B, H/p, W/p) float32, p =
    ``weight_patch_size``: gray -> FAST with NMS -> ``density`` ("ring" or "count") per cell ->
    ``exp(clip(d/T, -20, 20))`` / per-image min."""
    return _backend.run("patch_weights", images.device, images, weight_patch_size, temperature, threshold, density,
                        channel_order, mean, std)


@op.register_fake
def _(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std):
    B, _, H, W = images.shape
    return images.new_empty((B, H // weight_patch_size, W // weight_patch_size), dtype=torch.float32)


def _torch(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std):
    keypoints, _ = _fast_corners_torch(images, threshold, True, channel_order, mean, std)
    return weights_from_keypoints(keypoints, weight_patch_size, density, temperature)


def _triton(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std):
    """The FAST kernel, then the density and the weighting in PyTorch."""
    keypoints, _ = _fast_corners_triton(images, threshold, True, channel_order, mean, std)
    return weights_from_keypoints(keypoints, weight_patch_size, density, temperature)


def samples(s) -> list[tuple]:
    return [(*s.to(normalised(s.photo(2, 16, 24))), 8, 0.25, 10, "ring", "bgr", MEAN, STD),
            (*s.to(s.photo(1, 16, 16)), 4, 0.03, 5, "count", "rgb", *IDENTITY)]


_backend.register(op, check=check, auto=KAMIM_AUTO, samples=samples, impls=[
    _backend.torch_impl(_torch),
    _backend.triton_impl(_triton, "fast"),
    _backend.cpp_impl(("cpu",), why_not=CPU_KERNELS_ONLY),
])
