"""kamim_fast: fused GPU kernels for keypoint-aware masked image modelling (KAMIM, AMT).

Public names only; see the README for the layout and the backends.
"""

from . import _ops  # noqa: F401  (registers the kamim_fast::* torch ops)
from ._backend import BACKENDS, ENV_VAR as BACKEND_ENV_VAR
from .fast import FastCorners, fast_corners, fast_corners_ref, fast_keypoints
from .gray import IMAGENET_MEAN, IMAGENET_STD, rgb_to_gray_u8, rgb_to_gray_u8_ref

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BACKEND_ENV_VAR",
    "FastCorners",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "fast_corners",
    "fast_corners_ref",
    "fast_keypoints",
    "rgb_to_gray_u8",
    "rgb_to_gray_u8_ref",
]
