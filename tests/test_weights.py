"""KAMIM's patch weights against the published pipeline (OpenCV + drawKeypoints)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import assert_raises_naming
from images import COLOUR_NAMES, crop, dotted_rgb, real_image
from oracles import cv_fast
from published import normalise, published_weights

from kamim_fast import IMAGENET_MEAN, IMAGENET_STD, patch_weights


@pytest.mark.parametrize("name", COLOUR_NAMES)
def test_weights_equal_the_published_pipeline(name, target, rng):
    """scikit-image photographs cropped to 192x192, from the normalised float target, rel. error < 1e-5."""
    device, backend = target
    interp = backend == "triton" and device == "cpu"
    n = 1 if interp else 3
    imgs = np.stack([crop(real_image(name), 192, 192, rng) for _ in range(n)])
    x = normalise(torch.from_numpy(imgs).permute(0, 3, 1, 2), IMAGENET_MEAN, IMAGENET_STD)
    settings = [(8, 0.25, "bgr", "ring")] if interp else [
        (8, 0.25, "bgr", "ring"), (16, 0.1, "rgb", "ring"), (32, 2.5, "bgr", "count"), (8, 1.0, "rgb", "count")]
    for p, T, order, density in settings:
        got = patch_weights(x.to(device), weight_patch_size=p, temperature=T, channel_order=order, density=density)
        want = published_weights(imgs, p, T, channel_order=order, density=density)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=0)
        assert torch.equal(got.amin((1, 2)).cpu(), torch.ones(n))


def test_uint8_input_and_no_keypoints(target, rng):
    device, _ = target
    flat = torch.full((2, 3, 32, 48), int(rng.integers(0, 256)), dtype=torch.uint8)
    w = patch_weights(flat.to(device))
    assert w.shape == (2, 4, 6) and torch.equal(w.cpu(), torch.ones(2, 4, 6))
    imgs = np.stack([crop(real_image("coffee"), 32, 48, rng)])
    u8 = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    torch.testing.assert_close(patch_weights(u8.to(device), channel_order="bgr").cpu(), published_weights(imgs, 8, 0.25), rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: patch_weights(torch.zeros(1, 3, 20, 16)), ValueError, ["images", "height 20", "weight_patch_size=8"]),
        (lambda: patch_weights(torch.zeros(1, 3, 16, 16), temperature=0.0), ValueError, ["temperature", "0.0"]),
        (lambda: patch_weights(torch.zeros(1, 3, 16, 16), temperature=-1), ValueError, ["temperature", "-1"]),
        (lambda: patch_weights(torch.zeros(1, 1, 16, 16)), ValueError, ["images", "3 channels"]),
        (lambda: patch_weights(torch.zeros(1, 3, 16, 16), threshold=300), ValueError, ["threshold", "300"]),
        (lambda: patch_weights(torch.zeros(1, 3, 16, 16), density="dense"), ValueError, ["density", "'dense'"]),
    ],
)
def test_bad_input_is_named(make, exc, words):
    assert_raises_naming(make, exc, words)


def _batch_with_different_minima(rng):
    """Two dense images (every cell holds keypoints), and one with an empty (flat) quarter: minima differ."""
    imgs = np.stack([dotted_rgb(rng, 32, 48, 1), dotted_rgb(rng, 32, 48, 3), dotted_rgb(rng, 32, 48, 1)])
    imgs[2, :16, :24] = 128  # four empty cells: this image's minimum density is 0
    return imgs


@pytest.mark.parametrize("temperature", [0.01, 0.03, 0.05, 0.25])
def test_small_temperatures_and_per_image_minima_equal_the_published_pipeline(temperature, target, rng):
    """Where exp(d/T) overflows float32 (T = 0.01: d/T up to 100) the clip to 20 decides the weights; and each
    image is divided by its own minimum: the images' sparsest cells differ, none of the dense ones has
    weight 1 before the division. Oracle: OpenCV FAST + drawKeypoints + the published formula."""
    device, _ = target
    imgs = _batch_with_different_minima(rng)
    density = np.stack([np.sign(cv2.drawKeypoints(np.zeros_like(i), cv_fast(cv2.cvtColor(i, cv2.COLOR_BGR2GRAY), 10, True)[2],
                                                  None, color=(255, 0, 0))[..., 0]).reshape(4, 8, 6, 8).mean((1, 3))
                        for i in imgs])
    lo = density.reshape(3, -1).min(1)
    assert lo[0] > 0 and lo[1] > 0 and lo[2] == 0, lo  # the premise: two dense images (no weight 1 before the division), one not
    if temperature <= 0.03:
        assert (density / temperature > 20).any()  # the clip binds (at 0.01 exp(d/T) reaches e^70 and more)
    u8 = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    want = published_weights(imgs, 8, temperature, channel_order="bgr")
    assert want.isfinite().all()
    got = patch_weights(u8.to(device), weight_patch_size=8, temperature=temperature, channel_order="bgr")
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=0)
    mean, std = (0.3, 0.5, 0.6), (0.2, 0.25, 0.3)  # the normalised float target, distinct per channel
    x = normalise(u8, mean, std)
    got = patch_weights(x.to(device), weight_patch_size=8, temperature=temperature, channel_order="bgr", mean=mean, std=std)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=0)
