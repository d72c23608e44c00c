"""The outside systems that define the truth, wrapped for tests: OpenCV's FAST and gray conversion."""

from __future__ import annotations

import cv2
import numpy as np


def cv_fast(gray: np.ndarray, threshold: int, nonmax_suppression: bool) -> tuple[np.ndarray, np.ndarray, list]:
    """OpenCV's keypoints as dense (keypoints bool, responses int32) maps, plus the raw KeyPoint list."""
    detector = cv2.FastFeatureDetector_create(threshold, nonmax_suppression)
    kps = detector.detect(gray)
    keypoints = np.zeros(gray.shape[:2], dtype=bool)
    responses = np.zeros(gray.shape[:2], dtype=np.int32)
    for kp in kps:
        x, y = int(kp.pt[0]), int(kp.pt[1])
        assert kp.pt == (x, y)
        keypoints[y, x] = True
        responses[y, x] = int(kp.response)
    return keypoints, responses, kps


def cv_gray(rgb_hwc: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
    code = cv2.COLOR_RGB2GRAY if channel_order == "rgb" else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(np.ascontiguousarray(rgb_hwc), code)
