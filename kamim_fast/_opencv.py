"""OpenCV's constants, written once.

Every rule that makes kamim_fast bit-exact with OpenCV lives here: the PyTorch references in
``kamim_fast/*.py`` and the Triton kernels in ``kamim_fast/kernels/`` both import these names, and the tests tie
them to ``cv2`` itself. Source: ``../shared/REFERENCE.md`` sections 1 and 2 (OpenCV 4.x/5.x).
"""

from __future__ import annotations

# FAST-9/16: the 16-pixel Bresenham circle of radius 3 as (dx, dy), +dy pointing down, in OpenCV's order.
FAST_CIRCLE: tuple[tuple[int, int], ...] = (
    (0, 3), (1, 3), (2, 2), (3, 1), (3, 0), (3, -1), (2, -2), (1, -3),
    (0, -3), (-1, -3), (-2, -2), (-3, -1), (-3, 0), (-3, 1), (-2, 2), (-1, 3),
)
FAST_RADIUS = 3  # only rows and columns in [3, dim - 3) are tested
FAST_ARC = 9  # a corner needs this many contiguous circle pixels all brighter or all darker
FAST_NMS_RADIUS = 1  # non-max suppression compares each score with its 3x3 neighbourhood
FAST_DEFAULT_THRESHOLD = 10  # cv2.FastFeatureDetector_create() default
FAST_MAX_THRESHOLD = 255  # OpenCV's SIMD paths mishandle thresholds outside 0..255: we reject them

# RGB -> gray for uint8, fixed point: gray = (R*wr + G*wg + B*wb + GRAY_ROUND) >> GRAY_SHIFT.
# These are COLOR_RGB2GRAY's weights; COLOR_BGR2GRAY applies the R weight to channel 2 instead.
GRAY_WEIGHTS_RGB: tuple[int, int, int] = (9798, 19235, 3735)
GRAY_SHIFT = 15
GRAY_ROUND = 1 << (GRAY_SHIFT - 1)

# cv2.drawKeypoints(zeros, kps, None, color=(255, 0, 0)), channel 0, sign(): what the published KAMIM code
# rasterises per keypoint. An anti-aliased circle of radius 3: 48 pixels of a 9x9 window around an
# integer keypoint, hollow 3x3 centre, clipped at the image edge; overlapping rings form a union.
# Identical in OpenCV 4.14 and 5.0 (tests/test_weights.py derives it from cv2 and compares).
DRAW_KEYPOINT_RING: tuple[str, ...] = (
    "...###...",
    "..#####..",
    ".#######.",
    "###...###",
    "###...###",
    "###...###",
    ".#######.",
    "..#####..",
    "...###...",
)
DRAW_KEYPOINT_RING_RADIUS = len(DRAW_KEYPOINT_RING) // 2
