"""kamim_fast: fused GPU kernels for keypoint-aware masked image modelling (KAMIM, AMT).

Public names only; the README and docs/ describe them, CONTRIBUTING.md the layout.
"""

from . import _ops, _amt_ops  # noqa: F401  (register the kamim_fast::* torch ops)
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
from .detectors import DETECTORS
from .mim_loss import WeightedMIMLoss, weighted_mim_loss, weighted_mim_loss_ref
from .weights import (
    KAMIM_DEFAULTS,
    KAMIM_PAPER,
    KamimWeights,
    NormalizationWarning,
    keypoint_density,
    keypoint_density_ref,
    patch_weights,
)


def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one source); from a checkout that is
    not installed, pyproject.toml's own line."""
    import importlib.metadata
    import re
    from pathlib import Path

    try:
        return importlib.metadata.version("kamim-fast")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return found.group(1) if found else "0+unknown"


__version__ = _version()

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
