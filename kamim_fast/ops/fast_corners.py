"""``kamim_fast::fast_corners``: FAST-9/16 corners and OpenCV's scores, bit-exact with
``cv2.FastFeatureDetector_create``, on (B, H, W) uint8 gray or on (B, 3, H, W) colour converted to gray on the fly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _backend
from .._checks import check_choice, check_colour, check_stats, check_tensor, check_threshold
from .._constants import CHANNEL_ORDERS
from .._opencv import FAST_ARC, FAST_CIRCLE, FAST_DEFAULT_THRESHOLD, FAST_RADIUS
from ._common import CPU_KERNELS_ONLY, IDENTITY, KAMIM_AUTO, MEAN, STD, colour_stats, normalised
from .rgb_to_gray_u8 import rgb_to_gray_u8_ref

# --- the reference -------------------------------------------------------------------------------------


def fast_corners_ref(
    gray: torch.Tensor, threshold: int = FAST_DEFAULT_THRESHOLD, nonmax_suppression: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch reference of :func:`kamim_fast.fast_corners` on a checked (B, H, W) uint8 batch.

    This is the semantics, written plainly: OpenCV's score over every arc of 9 circle pixels, the
    corner test ``score >= threshold`` on rows and columns [3, dim-3), and 3x3 suppression where a
    keypoint's score must beat all 8 neighbours (non-corners count as 0).
    """
    B, H, W = gray.shape
    R = FAST_RADIUS
    keypoints = torch.zeros((B, H, W), dtype=torch.bool, device=gray.device)
    scores = torch.zeros((B, H, W), dtype=torch.int16, device=gray.device)
    if H <= 2 * R or W <= 2 * R or B == 0:
        return keypoints, scores.to(torch.uint8)
    g = gray.to(torch.int16)
    centre = g[:, R : H - R, R : W - R]
    # d_k = v - x_k for the 16 circle pixels, then every arc of 9 contiguous ones: (B, 16, h, w, 9).
    d = torch.stack([centre - g[:, R + dy : H - R + dy, R + dx : W - R + dx] for dx, dy in FAST_CIRCLE], dim=1)
    arcs = torch.cat([d, d[:, : FAST_ARC - 1]], dim=1).unfold(1, FAST_ARC, 1)
    score = torch.maximum(arcs.amin(-1).amax(1), -arcs.amax(-1).amin(1)) - 1
    corner = score >= threshold
    keypoints[:, R : H - R, R : W - R] = corner
    scores[:, R : H - R, R : W - R] = torch.where(corner, score, 0)
    if nonmax_suppression:
        padded = F.pad(scores, (1, 1, 1, 1))
        neighbours = torch.stack(
            [padded[:, 1 + dy : H + 1 + dy, 1 + dx : W + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
        )
        keypoints &= scores > neighbours.amax(0)
        scores = torch.where(keypoints, scores, 0)
    return keypoints, scores.to(torch.uint8)


# --- the check -----------------------------------------------------------------------------------------


def check(image, threshold, nonmax_suppression, channel_order, mean, std) -> None:
    if isinstance(image, torch.Tensor) and image.dim() == 3:  # gray: channel_order, mean and std go unused
        check_tensor("image", image, dtypes=(torch.uint8,), shape_doc="(B, H, W) gray or (B, 3, H, W) colour")
        check_choice("channel_order", channel_order, CHANNEL_ORDERS)
        check_stats(mean, std)
    else:
        check_colour("image", image, channel_order, mean, std)
    check_threshold(threshold)


# --- the op --------------------------------------------------------------------------------------------


@torch.library.custom_op("kamim_fast::fast_corners", mutates_args=())
def op(
    image: torch.Tensor, threshold: int, nonmax_suppression: bool, channel_order: str, mean: list[float],
    std: list[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """FAST on (B, H, W) uint8 gray, or on (B, 3, H, W) colour converted to gray on the fly.

    Returns (keypoints bool, scores uint8), both (B, H, W). ``channel_order``/``mean``/``std`` apply to colour.
    """
    return _backend.run("fast_corners", image.device, image, threshold, nonmax_suppression, channel_order, mean, std)


@op.register_fake
def _(image, threshold, nonmax_suppression, channel_order, mean, std):
    shape = (image.shape[0], image.shape[-2], image.shape[-1])
    return image.new_empty(shape, dtype=torch.bool), image.new_empty(shape, dtype=torch.uint8)


def _torch(image, threshold, nonmax_suppression, channel_order, mean, std):
    gray = image if image.dim() == 3 else rgb_to_gray_u8_ref(image, channel_order == "bgr", *colour_stats(mean, std))
    return fast_corners_ref(gray, threshold, nonmax_suppression)


def _triton(image, threshold, nonmax_suppression, channel_order, mean, std):
    from ..kernels import fast, fast_tile

    if image.dim() == 3:
        source = fast_tile.SRC_GRAY_U8
    else:
        source = fast_tile.SRC_RGB_FLOAT if image.is_floating_point() else fast_tile.SRC_RGB_U8
    mean, std = colour_stats(mean, std)
    return fast.fast_corners(image, threshold, nonmax_suppression, source, channel_order, tuple(mean), tuple(std))


def _cpp(image, threshold, nonmax_suppression, channel_order, mean, std):
    return torch.ops.kamim_fast_cpp.fast_corners(image, threshold, nonmax_suppression, channel_order,
                                                 *colour_stats(mean, std))


def samples(s) -> list[tuple]:
    return [(*s.to(s.gray(3, 17, 21)), 10, True, "rgb", [], []),
            (*s.to(s.gray(2, 12, 9)), int(s.rng.integers(0, 40)), False, "rgb", [], []),
            (*s.to(normalised(s.photo(2, 16, 20))), 10, True, "bgr", MEAN, STD),
            (*s.to(s.photo(1, 7, 7)), 0, True, "rgb", *IDENTITY),
            (*s.to(s.photo(1, 20, 30)), 0, False, "bgr", [], []),  # colour uint8 without statistics
            (*s.to(normalised(s.photo(1, 20, 30), [0.5] * 3, [0.25] * 3)), 10, True, "rgb", [0.5] * 3, [0.25] * 3)]


_backend.register(op, check=check, auto=KAMIM_AUTO, samples=samples, impls=[
    _backend.torch_impl(_torch),
    _backend.triton_impl(_triton, "fast"),
    _backend.cpp_impl(("cpu",), _cpp, why_not=CPU_KERNELS_ONLY),
])
