"""The keypoint density per cell against OpenCV's drawKeypoints (the published KAMIM code's ring map)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import assert_raises_naming
from images import crop, real_image
from oracles import cv_fast

from kamim_fast import fast_corners, keypoint_density
from kamim_fast.density import ring_stencil


def test_ring_stencil_is_what_opencv_draws():
    """Derive drawKeypoints' ring from OpenCV and pin it: 48 pixels, hollow 3x3 centre, any keypoint size."""
    for size in (7.0, 3.0, 31.0):
        drawn = cv2.drawKeypoints(np.zeros((21, 21, 3), np.uint8), [cv2.KeyPoint(10.0, 10.0, size)], None, color=(255, 0, 0))
        ring = np.sign(drawn[..., 0])
        assert ring.sum() == 48 and drawn[..., 1:].max() == 0
        np.testing.assert_array_equal(ring[6:15, 6:15], ring_stencil().numpy())


def test_density_matches_drawn_keypoints(target, rng):
    """Union of rings, clipped at the edges, on FAST keypoints of real images; and the count mode."""
    device, _ = target
    gray = np.stack([crop(real_image(n), 64, 96, rng) for n in ("gravel", "text")])
    kp = fast_corners(torch.from_numpy(gray).to(device))[0]
    for i, img in enumerate(gray):
        kps = cv_fast(img, 10, True)[2]
        drawn = np.sign(cv2.drawKeypoints(np.zeros((*img.shape, 3), np.uint8), kps, None, color=(255, 0, 0))[..., 0])
        for p in (8, 16, 32):
            want = drawn.reshape(64 // p, p, 96 // p, p).mean((1, 3))
            np.testing.assert_allclose(keypoint_density(kp[i], p).cpu().numpy(), want, rtol=0, atol=1e-7)
            counts = kp[i].cpu().numpy().reshape(64 // p, p, 96 // p, p).sum((1, 3)) / p**2
            np.testing.assert_allclose(keypoint_density(kp[i], p, "count").cpu().numpy(), counts, atol=1e-7)


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: keypoint_density(torch.zeros(2, 16, 20, dtype=torch.bool), 8), ValueError, ["keypoints", "width 20", "patch_size=8"]),
        (lambda: keypoint_density(torch.zeros(16, 16), 8), TypeError, ["keypoints", "bool", "float32"]),
        (lambda: keypoint_density(torch.zeros(16, 16, dtype=torch.bool), 8, "rings"), ValueError, ["mode", "'rings'"]),
    ],
)
def test_bad_input_is_named(make, exc, words):
    assert_raises_naming(make, exc, words)
