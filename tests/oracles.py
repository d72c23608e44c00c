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


_SCORE_CACHE: dict[tuple, np.ndarray] = {}


def cv_scores(gray: np.ndarray) -> np.ndarray:
    """FAST scores from OpenCV alone, where it reports none (NMS off gives response 0): a pixel's score is the
    largest threshold at which OpenCV still detects it (REFERENCE.md section 1), 0 where it never does."""
    key = (gray.shape, gray.tobytes())
    if key not in _SCORE_CACHE:
        scores = np.zeros(gray.shape[:2], dtype=np.int32)
        for t in range(256):
            kps = cv2.FastFeatureDetector_create(t, False).detect(gray)
            if not kps:
                break
            xy = cv2.KeyPoint_convert(kps).astype(np.int64)  # integer centres, (x, y)
            scores[xy[:, 1], xy[:, 0]] = t
        if len(_SCORE_CACHE) > 64:
            _SCORE_CACHE.clear()
        _SCORE_CACHE[key] = scores
    return _SCORE_CACHE[key]
