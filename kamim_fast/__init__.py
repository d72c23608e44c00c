"""kamim_fast: fused GPU kernels for keypoint-aware masked image modelling (KAMIM, AMT).

Public names only; the README and docs/ describe them, CONTRIBUTING.md the layout.
"""

from . import ops  # noqa: F401  (the op registry: registers the kamim_fast::* torch ops)
from ._backend import BACKENDS, ENV_VAR as BACKEND_ENV_VAR
from .amt import (
    AMTMask,
    amt_cell_weights,
    amt_cell_weights_ref,
    amt_counts,
    amt_masking,
    amt_masking_ref,
    gather_patches,
    gather_patches_ref,
    random_masking,
    random_masking_ref,
    scatter_patches,
    unshuffle_with_mask_token,
    unshuffle_with_mask_token_ref,
    vit_class_attention,
    vit_class_attention_ref,
)
from .amt_presets import AMT_DEFAULTS, AMT_PAPER
from ._info import BackendInfo, backend_info
from .fast import FastCorners, fast_corners, fast_corners_ref, fast_keypoints
from .gray import IMAGENET_MEAN, IMAGENET_STD, rgb_to_gray_u8, rgb_to_gray_u8_ref
from .density import keypoint_density, keypoint_density_ref
from .detectors import DETECTORS
from .mim_loss import WeightedMIMLoss, weighted_mim_loss, weighted_mim_loss_ref
from .weights import (
    KAMIM_DEFAULTS,
    KAMIM_PAPER,
    KamimWeights,
    NormalizationWarning,
    patch_weights,
)
from ._version import __version__

__all__ = [
    "AMTMask",
    "AMT_DEFAULTS",
    "AMT_PAPER",
    "BACKENDS",
    "BackendInfo",
    "BACKEND_ENV_VAR",
    "DETECTORS",
    "FastCorners",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KAMIM_DEFAULTS",
    "KAMIM_PAPER",
    "KamimWeights",
    "NormalizationWarning",
    "WeightedMIMLoss",
    "amt_cell_weights",
    "amt_cell_weights_ref",
    "amt_counts",
    "amt_masking",
    "amt_masking_ref",
    "backend_info",
    "fast_corners",
    "fast_corners_ref",
    "fast_keypoints",
    "gather_patches",
    "gather_patches_ref",
    "keypoint_density",
    "keypoint_density_ref",
    "patch_weights",
    "random_masking",
    "random_masking_ref",
    "rgb_to_gray_u8",
    "rgb_to_gray_u8_ref",
    "scatter_patches",
    "unshuffle_with_mask_token",
    "unshuffle_with_mask_token_ref",
    "vit_class_attention",
    "vit_class_attention_ref",
    "weighted_mim_loss",
    "weighted_mim_loss_ref",
]
