"""FAST-9/16 corners, bit-exact with ``cv2.FastFeatureDetector_create`` (REFERENCE.md section 1)."""

from __future__ import annotations

import torch
from torch import nn

from ._checks import as_int, check_bool, check_tensor, check_threshold
from ._opencv import FAST_DEFAULT_THRESHOLD, FAST_MAX_THRESHOLD
from .ops.fast_corners import fast_corners_ref  # noqa: F401  (public here)


def _gray_args(gray: object, threshold: object, nonmax_suppression: object) -> tuple[torch.Tensor, int, bool]:
    """The public forms: (H, W) or (B, H, W) uint8 gray, an int threshold (its range the op checks), a bool."""
    check_tensor("gray", gray, ndims=(2, 3, 4), shape_doc="(B, H, W) or (H, W)")
    if gray.dim() == 4:
        hint = "convert colour with rgb_to_gray_u8 first" if gray.shape[1] == 3 else "drop the channel dimension"
        raise ValueError(f"gray must be (B, H, W) or (H, W) with one channel; got shape {tuple(gray.shape)}: {hint}")
    check_tensor("gray", gray, dtypes=(torch.uint8,))
    threshold = as_int("threshold", threshold, 0, FAST_MAX_THRESHOLD)
    return gray, threshold, check_bool("nonmax_suppression", nonmax_suppression)


def fast_corners(
    gray: torch.Tensor, threshold: int = FAST_DEFAULT_THRESHOLD, nonmax_suppression: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """FAST-9/16 corners as dense maps, exactly the keypoints OpenCV's FAST detector finds.

    The keypoint set equals ``cv2.FastFeatureDetector_create(threshold, nonmax_suppression).detect(img)``
    for every threshold and image size. A pixel is a corner if 9 contiguous pixels of its 16-pixel
    circle are all brighter than ``v + threshold`` or all darker than ``v - threshold``; only rows and
    columns in [3, dim-3) are tested. With suppression a corner survives only if its score beats all
    8 neighbours. On CUDA (or with ``KAMIM_FAST_BACKEND=triton``) one Triton kernel does it all.

    Args:
        gray: uint8 gray images.
        threshold: intensity threshold, 0..255 (OpenCV's SIMD paths mishandle others, so they raise).
        nonmax_suppression: keep only local maxima of the score in 3x3.

    Returns:
        (keypoints, scores): ``keypoints`` is True at each keypoint; ``scores`` holds OpenCV's corner
        score there (``KeyPoint.response`` with suppression on; OpenCV reports 0 with it off, we keep
        the score) and 0 elsewhere.

    Shape:
        - gray: (B, H, W) or (H, W), any strides.
        - keypoints: bool, same shape as ``gray``.
        - scores: uint8, same shape as ``gray``.

    Example:
        >>> img = torch.zeros(9, 9, dtype=torch.uint8)
        >>> img[4, 4] = 200  # one bright dot is a corner
        >>> keypoints, scores = fast_corners(img)
        >>> keypoints.nonzero().tolist(), scores[4, 4].item()
        ([[4, 4]], 199)
    """
    gray, threshold, nonmax_suppression = _gray_args(gray, threshold, nonmax_suppression)
    batched = gray.unsqueeze(0) if gray.dim() == 2 else gray
    keypoints, scores = torch.ops.kamim_fast.fast_corners(batched, threshold, nonmax_suppression, "rgb", [], [])
    if gray.dim() == 2:
        return keypoints[0], scores[0]
    return keypoints, scores


def fast_keypoints(
    gray: torch.Tensor, threshold: int = FAST_DEFAULT_THRESHOLD, nonmax_suppression: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """FAST keypoints as coordinate lists in raster order, as ``cv2`` returns them.

    Same detector as :func:`fast_corners`. The number of keypoints is data-dependent, so this
    synchronises with the device (use :func:`fast_corners` inside compiled or captured code).

    Args:
        gray: uint8 gray images.
        threshold: intensity threshold, 0..255.
        nonmax_suppression: keep only local maxima of the score in 3x3.

    Returns:
        (coords, responses): int64 coordinates ordered by image, then row, then column, and float32
        responses (OpenCV's ``KeyPoint.response``; with suppression off we return the score, not 0).

    Shape:
        - gray: (H, W) -> coords (K, 2) as (x, y); (B, H, W) -> coords (K, 3) as (b, x, y).
        - responses: (K,).

    Example:
        >>> img = torch.zeros(9, 9, dtype=torch.uint8)
        >>> img[4, 5] = 200
        >>> fast_keypoints(img)
        (tensor([[5, 4]]), tensor([199.]))
    """
    keypoints, scores = fast_corners(gray, threshold, nonmax_suppression)
    index = keypoints.nonzero()  # raster order: ([b,] y, x)
    coords = torch.cat([index[:, :-2], index[:, -2:].flip(-1)], dim=1)  # ([b,] x, y), as cv2's KeyPoint.pt
    return coords, scores[keypoints].to(torch.float32)


class FastCorners(nn.Module):
    """Module twin of :func:`fast_corners`, for pipelines built from config.

    Args:
        threshold: intensity threshold, 0..255.
        nonmax_suppression: keep only local maxima of the score in 3x3.

    Example:
        >>> detector = FastCorners(threshold=20)
        >>> keypoints, scores = detector(torch.randint(0, 256, (2, 32, 32), dtype=torch.uint8))
        >>> keypoints.shape, scores.dtype
        (torch.Size([2, 32, 32]), torch.uint8)
    """

    def __init__(self, threshold: int = FAST_DEFAULT_THRESHOLD, nonmax_suppression: bool = True) -> None:
        super().__init__()
        self.threshold = as_int("threshold", threshold, 0, FAST_MAX_THRESHOLD)
        check_threshold(self.threshold)  # at construction: the op's check, early
        self.nonmax_suppression = check_bool("nonmax_suppression", nonmax_suppression)

    def forward(self, gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fast_corners(gray, self.threshold, self.nonmax_suppression)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, nonmax_suppression={self.nonmax_suppression}"
