"""The keypoint density of KAMIM's weights: the share of each p x p cell that keypoints cover (REFERENCE.md
section 3). Op: ``kamim_fast/ops/keypoint_density.py``."""

from __future__ import annotations

import torch

from ._checks import as_int, check_choice, check_tensor
from ._constants import DENSITY_MODES, MAX_PATCH_SIZE
from .ops.keypoint_density import keypoint_density_ref, ring_stencil  # noqa: F401  (public here)


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
    check_tensor("keypoints", keypoints, ndims=(2, 3), shape_doc="(B, H, W) or (H, W)")
    p = as_int("patch_size", patch_size, 1, MAX_PATCH_SIZE)
    check_choice("mode", mode, DENSITY_MODES)  # the public name of the op's density
    batched = keypoints.unsqueeze(0) if keypoints.dim() == 2 else keypoints
    density = torch.ops.kamim_fast.keypoint_density(batched, p, mode)
    return density[0] if keypoints.dim() == 2 else density
