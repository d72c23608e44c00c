"""The published KAMIM code's other keypoint detectors, ORB and SIFT (REFERENCE.md section 7).

The published dataset runs ``cv2.ORB_create().detect`` or ``cv2.SIFT_create().detect`` with default
settings on the augmented uint8 RGB array, which OpenCV converts with COLOR_BGR2GRAY; it then draws the
keypoints with ``cv2.drawKeypoints(zeros, kps, None, color=(255, 0, 0))`` and takes ``sign()`` of channel
0. Here the detectors run on :func:`kamim_fast.rgb_to_gray_u8` of the batch (with ``channel_order="bgr"``
that is the very gray OpenCV computes from the colour array, so the keypoints are the same; a test
checks it), and the rings are drawn by OpenCV's own ``drawKeypoints``: ORB's keypoints on upper pyramid
levels and all of SIFT's have sub-pixel centres, which drawKeypoints rasterises anti-aliased at 1/16
pixel, so FAST's fixed 48-pixel stencil does not apply.

OpenCV is an optional dependency (``pip install kamim-fast[opencv]``); FAST never needs it. These
detectors run on the CPU, one image at a time, as the published code does: CUDA batches are copied to
the host (a synchronisation) and the weights copied back.
"""

from __future__ import annotations

import numpy as np
import torch

DETECTORS = ("fast", "orb", "sift")
"""``detector`` of :func:`kamim_fast.patch_weights` and :class:`kamim_fast.KamimWeights`."""

OPENCV_EXTRA = "pip install kamim-fast[opencv]"


def import_cv2(detector: str):
    """``import cv2``, or an ImportError that names the extra to install."""
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            f"detector={detector!r} runs OpenCV's {detector.upper()} detector, but OpenCV is not installed: "
            f"{OPENCV_EXTRA} (or pip install opencv-python-headless)"
        ) from exc
    return cv2


def detect(gray: np.ndarray, detector: str) -> list:
    """OpenCV's ORB or SIFT keypoints of one (H, W) uint8 gray image, default settings, as published."""
    cv2 = import_cv2(detector)
    made = cv2.ORB_create() if detector == "orb" else cv2.SIFT_create()
    return list(made.detect(np.ascontiguousarray(gray), None))


def keypoint_maps(gray: torch.Tensor, detector: str, density: str) -> torch.Tensor:
    """(B, H, W) uint8 gray -> (B, H, W) float32 maps of 0 and 1 on the CPU, one image at a time.

    ``density="ring"``: the published map, ``sign(drawKeypoints(zeros, kps, color=(255, 0, 0))[..., 0])``
    (every pixel the anti-aliased ring touches counts as covered). ``"count"``: 1 at each keypoint's
    nearest pixel (``cvRound`` of its sub-pixel centre, clipped to the image); keypoints that share a
    pixel (SIFT repeats a point per orientation) count once.
    """
    cv2 = import_cv2(detector)
    B, H, W = gray.shape
    out = np.zeros((B, H, W), np.float32)
    for i, img in enumerate(gray.cpu().numpy()):
        kps = detect(img, detector)
        if density == "ring":
            drawn = cv2.drawKeypoints(np.zeros((H, W, 3), np.uint8), kps, None, color=(255, 0, 0))
            out[i] = np.sign(drawn[..., 0])
        elif kps:
            pts = np.array([k.pt for k in kps], np.float64)
            xs = np.clip(np.rint(pts[:, 0]).astype(np.int64), 0, W - 1)
            ys = np.clip(np.rint(pts[:, 1]).astype(np.int64), 0, H - 1)
            out[i, ys, xs] = 1.0
    return torch.from_numpy(out)
