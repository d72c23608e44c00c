"""kamim_fast's own constants, written once: the choices its arguments take, the published defaults, the
largest sizes, and the AMT mask codes that the extension shares (``csrc/amt.h``). OpenCV's constants are in
``_opencv.py``. Every layer imports these; this module imports nothing.
"""

from __future__ import annotations

CHANNEL_ORDERS = ("rgb", "bgr")
"""``channel_order``: COLOR_RGB2GRAY's weights, or COLOR_BGR2GRAY's (the R and B weights swapped)."""
DENSITY_MODES = ("ring", "count")
"""``density``: the drawKeypoints ring cover per cell, or the keypoint count per cell (both over p * p)."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Defaults of KAMIM's weight options, shared by every entry point (the published values, except the channel order).
WEIGHT_PATCH_SIZE = 8
TEMPERATURE = 0.25
DENSITY = "ring"
CHANNEL_ORDER = "rgb"
DETECTOR = "fast"
WEIGHT_LOG_CLIP = 20.0  # the published code clips d/T to [-20, 20] before exp

MAX_PATCH_SIZE = 1 << 16  # patch sizes (the mask's, the weights') are ints in [1, MAX_PATCH_SIZE]

# AMT's published ratios: mae-AMT's model (mask, throw) and MAE's random masking before AMT starts; SimMIM-AMT's
# configuration on 32 px cells.
AMT_MASK_RATIO, AMT_THROW_RATIO = 0.45, 0.4
MAE_MASK_RATIO = 0.75
SIMMIM_AMT_MASK_RATIO, SIMMIM_AMT_THROW_RATIO = 0.44, 0.26

# AMT: the int8 mask codes (the published encoding), kVisible/kMasked/kThrown in csrc/amt.h, and kMaxSortN:
# one CUDA block sorts an image's keys in shared memory (tests/test_amt.py ties both to the header).
VISIBLE, MASKED, THROWN = 0, 1, -1
MAX_CUDA_N = 4096
