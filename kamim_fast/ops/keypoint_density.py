"""``kamim_fast::keypoint_density``: (B, H, W) bool keypoints -> (B, H/p, W/p) float32, the share of each p x p
cell that the drawKeypoints rings cover (``density="ring"``, as the published KAMIM code) or the keypoint count
per cell over p * p (``"count"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _backend
from .._checks import check_cells, check_choice, check_tensor
from .._constants import DENSITY_MODES
from .._opencv import DRAW_KEYPOINT_RING, DRAW_KEYPOINT_RING_RADIUS
from ._common import CPU_KERNELS_ONLY, KAMIM_AUTO

# --- the reference -------------------------------------------------------------------------------------


def ring_stencil(device: torch.device | str | None = None) -> torch.Tensor:
    """The 9x9 float32 ring that ``cv2.drawKeypoints`` draws around each keypoint (48 ones)."""
    rows = [[1.0 if c == "#" else 0.0 for c in row] for row in DRAW_KEYPOINT_RING]
    return torch.tensor(rows, dtype=torch.float32, device=device)


def keypoint_density_ref(keypoints: torch.Tensor, patch_size: int = 8, mode: str = "ring") -> torch.Tensor:
    """PyTorch reference of :func:`kamim_fast.keypoint_density` on a checked (B, H, W) bool batch.

    ``ring``: the union of the drawKeypoints rings (a dilation by the stencil, clipped at the edges),
    averaged per cell; ``count``: keypoints per cell over p*p.
    """
    kp = keypoints.to(torch.float32).unsqueeze(1)
    if mode == "ring":
        r = DRAW_KEYPOINT_RING_RADIUS
        kp = (F.conv2d(kp, ring_stencil(kp.device)[None, None], padding=r) > 0).to(torch.float32)
    return F.avg_pool2d(kp, patch_size).squeeze(1)


# --- the check -----------------------------------------------------------------------------------------


def check(keypoints, patch_size, density) -> None:
    check_tensor("keypoints", keypoints, dtypes=(torch.bool,), ndims=(3,), shape_doc="(B, H, W)")
    check_cells("keypoints", keypoints.shape, patch_size, "patch_size")
    check_choice("density", density, DENSITY_MODES)


# --- the op --------------------------------------------------------------------------------------------


@torch.library.custom_op("kamim_fast::keypoint_density", mutates_args=())
def op(keypoints: torch.Tensor, patch_size: int, density: str) -> torch.Tensor:
    """(B, H, W) bool keypoints -> (B, H/p, W/p) float32, p = ``patch_size``: the drawKeypoints ring cover
    (``density="ring"``) or the keypoint count per cell (``"count"``), over p*p. The public function calls this
    argument ``mode``."""
    return _backend.run("keypoint_density", keypoints.device, keypoints, patch_size, density)


@op.register_fake
def _(keypoints, patch_size, density):
    B, H, W = keypoints.shape
    return keypoints.new_empty((B, H // patch_size, W // patch_size), dtype=torch.float32)


def samples(s) -> list[tuple]:
    kp = torch.from_numpy(s.rng.random((2, 16, 24)) < 0.05)
    return [(*s.to(kp), 8, "ring"), (*s.to(kp), 4, "count"), (*s.to(kp[:, :8, :8]), 8, "ring")]


def _triton(keypoints, patch_size, density):
    from ..kernels import density as kernel

    return kernel.keypoint_density(keypoints, patch_size, density)


_backend.register(op, check=check, auto=KAMIM_AUTO, samples=samples, impls=[
    _backend.torch_impl(keypoint_density_ref),
    _backend.triton_impl(_triton, "density"),
    _backend.cpp_impl(("cpu",), why_not=CPU_KERNELS_ONLY),
])
