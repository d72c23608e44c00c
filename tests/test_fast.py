"""FAST corners against OpenCV, through every backend this machine has."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from images import COLOUR_NAMES, GREY_NAMES, SYNTHETIC_KINDS, crop, real_image, synthetic
from conftest import INTERPRETER, assert_raises_naming
from oracles import cv_fast, cv_gray, cv_scores

import kamim_fast
from kamim_fast import fast_corners, fast_corners_ref, fast_keypoints

THRESHOLDS = (0, 1, 10, 40, 255)


def _check_against_cv(gray: np.ndarray, keypoints: torch.Tensor, scores: torch.Tensor, threshold: int, nms: bool):
    cv_kp, cv_resp, _ = cv_fast(gray, threshold, nms)
    got = keypoints.cpu().numpy()
    assert got.dtype == np.bool_ and scores.dtype == torch.uint8
    missing, extra = np.argwhere(cv_kp & ~got), np.argwhere(got & ~cv_kp)
    assert not len(missing) and not len(extra), (
        f"t={threshold} nms={nms}: {len(missing)} OpenCV keypoints missing (first {missing[:3].tolist()}), "
        f"{len(extra)} extra (first {extra[:3].tolist()})"
    )
    if nms:  # OpenCV reports the score as the response with NMS on, and 0 with it off
        np.testing.assert_array_equal(scores.cpu().numpy().astype(np.int32), cv_resp)
    else:  # we keep the score, where OpenCV reports 0: the largest threshold at which OpenCV still detects it
        s = scores.cpu().numpy()
        want = np.where(got, cv_scores(gray), 0)
        bad = np.argwhere(s != want)
        assert not len(bad), f"t={threshold} nms=False: {len(bad)} scores differ, first {bad[:3].tolist()}"


@pytest.mark.parametrize("name", GREY_NAMES + COLOUR_NAMES)
def test_real_images_match_opencv(name, target, rng):
    device, backend = target
    img = real_image(name)
    gray = cv_gray(img) if img.ndim == 3 else img
    if backend == "triton" and device == "cpu":  # the interpreter is slow: a random crop
        gray = crop(gray, 72, 136, rng)
    for threshold in (0, 10, int(rng.integers(2, 80))):
        for nms in (True, False):
            kp, sc = fast_corners(torch.from_numpy(gray).to(device), threshold, nms)
            _check_against_cv(gray, kp, sc, threshold, nms)


@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_synthetic_images_match_opencv(kind, target, rng):
    device, _ = target
    for h, w in ((7, 7), (8, 8), (7, 30), (9, 7), (37, 70), (int(rng.integers(10, 70)), int(rng.integers(10, 140)))):
        img = synthetic(kind, h, w, rng)
        for threshold in THRESHOLDS:
            for nms in (True, False):
                kp, sc = fast_corners(torch.from_numpy(img).to(device), threshold, nms)
                _check_against_cv(img, kp, sc, threshold, nms)


def test_every_threshold_matches_opencv(target, rng):
    """All 256 thresholds on a small textured crop, both NMS modes (the interpreter: a random 32)."""
    device, backend = target
    img = crop(real_image("gravel"), 24, 40, rng)
    imgs = torch.from_numpy(img).to(device)
    thresholds = range(256)
    if device == "cpu" and backend == "triton":
        thresholds = sorted({0, 1, 254, 255, *rng.choice(256, 28, replace=False).tolist()})
    for threshold in thresholds:
        for nms in (True, False):
            kp, sc = fast_corners(imgs, threshold, nms)
            _check_against_cv(img, kp, sc, threshold, nms)


def test_batch_equals_single_images(target, rng):
    """A batch with tiles crossing image boundaries gives each image's own result."""
    device, _ = target
    batch = np.stack([crop(real_image(n), 40, 90, rng) for n in ("camera", "grass", "page")])
    kp, sc = fast_corners(torch.from_numpy(batch).to(device))
    for i, img in enumerate(batch):
        _check_against_cv(img, kp[i], sc[i], 10, True)


def test_tiny_images_follow_opencv(target):
    """OpenCV tests rows and columns [3, dim-3): a 7x7 image has one testable pixel, 6x6 none.

    (REFERENCE.md says 7x7 gives no keypoints; OpenCV 4.14 and 5.0 both report the centre.)
    """
    device, _ = target
    dot = np.zeros((7, 7), np.uint8)
    dot[3, 3] = 200
    kp, _ = fast_corners(torch.from_numpy(dot).to(device))
    assert kp.nonzero().tolist() == [[3, 3]] and len(cv_fast(dot, 10, True)[2]) == 1
    for h, w in ((6, 6), (6, 40), (40, 6), (1, 1), (0, 5), (3, 0)):
        img = np.full((h, w), 200, np.uint8)
        kp, sc = fast_corners(torch.from_numpy(img).to(device))
        assert kp.shape == (h, w) and sc.shape == (h, w) and not kp.any()


def test_strided_inputs(target, rng):
    """Non-contiguous views give the same keypoints as their contiguous copies."""
    device, _ = target
    base = torch.from_numpy(np.stack([crop(real_image("coins"), 48, 80, rng) for _ in range(2)])).to(device)
    views = {
        "transposed": base.transpose(1, 2),
        "every-other-column": base[:, :, ::2],
        "flipped-batch": base.flip(0)[:, 3:, 5:],
    }
    for name, view in views.items():
        assert not view.is_contiguous(), name
        for got, want in zip(fast_corners(view), fast_corners_ref(view.contiguous())):
            assert torch.equal(got.cpu(), want.cpu()), name


def test_colour_input_is_converted_in_the_kernel(target, rng):
    """The op's colour path (gray staged inside the kernel) equals OpenCV FAST on cvtColor's gray."""
    device, _ = target
    rgb = np.stack([crop(real_image(n), 40, 100, rng) for n in ("astronaut", "coffee")])  # (B, H, W, 3)
    nchw = torch.from_numpy(rgb).permute(0, 3, 1, 2)  # channels-last strides
    mean, std = kamim_fast.IMAGENET_MEAN, kamim_fast.IMAGENET_STD
    normalised = (nchw.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    for order in ("rgb", "bgr"):
        bgr = order == "bgr"
        for nms in (True, False):
            for image, m, s in ((nchw, [], []), (normalised, list(mean), list(std)), (normalised.bfloat16(), list(mean), list(std))):
                if image.dtype == torch.bfloat16:  # bf16 cannot hold a normalised uint8 exactly: compare to the reference
                    want = fast_corners_ref(kamim_fast.rgb_to_gray_u8_ref(image, bgr, m, s), 10, nms)
                    got = torch.ops.kamim_fast.fast_corners(image.to(device), 10, nms, order, m, s)
                    assert all(torch.equal(g.cpu(), w) for g, w in zip(got, want))
                    continue
                kp, sc = torch.ops.kamim_fast.fast_corners(image.to(device), 10, nms, order, m, s)
                for i in range(len(rgb)):
                    _check_against_cv(cv_gray(rgb[i], order), kp[i], sc[i], 10, nms)


def test_keypoint_lists_match_opencv_order(target, rng):
    device, _ = target
    img = crop(real_image("text"), 60, 120, rng)
    for nms in (True, False):
        coords, responses = fast_keypoints(torch.from_numpy(img).to(device), 10, nms)
        kps = cv_fast(img, 10, nms)[2]
        assert coords.dtype == torch.int64 and responses.dtype == torch.float32
        assert coords.cpu().tolist() == [[int(k.pt[0]), int(k.pt[1])] for k in kps]  # raster order, (x, y)
        if nms:
            assert responses.cpu().tolist() == [k.response for k in kps]
    batch = torch.from_numpy(np.stack([img, img[::-1].copy()])).to(device)
    coords, responses = fast_keypoints(batch)
    assert coords.shape[1] == 3 and torch.equal(coords[:, 0], coords[:, 0].sort().values)
    first = coords[coords[:, 0] == 0][:, 1:]
    assert first.cpu().tolist() == [[int(k.pt[0]), int(k.pt[1])] for k in cv_fast(img, 10, True)[2]]


@pytest.mark.skipif(not INTERPRETER, reason="runs the GPU block sizes through Triton's interpreter")
@pytest.mark.parametrize("src", ["gray", "rgb"])
def test_gpu_block_sizes_in_the_interpreter(src, rng, monkeypatch):
    """The shipped GPU configuration (smaller blocks, several row steps) on a few tiles, both NMS modes."""
    from kamim_fast.kernels import fast as kernel
    from kamim_fast.kernels.fast_tile import SRC_GRAY_U8, SRC_RGB_U8

    rgb = np.stack([crop(real_image("astronaut"), 45, 70, rng), crop(real_image("coffee"), 45, 70, rng)])
    gray = np.stack([cv_gray(i) for i in rgb])
    for nms in (True, False):
        if src == "gray":
            kp, sc = kernel.fast_corners(torch.from_numpy(gray), 10, nms, SRC_GRAY_U8, config=kernel.GPU_CONFIG)
        else:
            nchw = torch.from_numpy(rgb).permute(0, 3, 1, 2)
            kp, sc = kernel.fast_corners(nchw, 10, nms, SRC_RGB_U8, config=kernel.GPU_COLOUR_CONFIG)
        for i in range(len(gray)):
            _check_against_cv(gray[i], kp[i], sc[i], 10, nms)


def test_deterministic(target, rng):
    device, _ = target
    img = torch.from_numpy(synthetic("plateaus", 50, 90, rng)).to(device)
    first = fast_corners(img, 0)
    for _ in range(2):
        assert all(torch.equal(a, b) for a, b in zip(first, fast_corners(img, 0)))
    # the colour path: gray staged in the kernel's scratch, then scores, then NMS from the scratch
    rgb = torch.from_numpy(np.stack([synthetic("plateaus", 50, 90, rng) for _ in range(3)])).unsqueeze(0).to(device)
    x = (rgb.float() / 255 - 0.5) / 0.25
    first = torch.ops.kamim_fast.fast_corners(x, 0, True, "bgr", [0.5] * 3, [0.25] * 3)
    assert first[0].any()
    for _ in range(2):
        again = torch.ops.kamim_fast.fast_corners(x, 0, True, "bgr", [0.5] * 3, [0.25] * 3)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_module_twin(target, rng):
    device, _ = target
    img = torch.from_numpy(crop(real_image("camera"), 30, 60, rng)).to(device)
    detector = kamim_fast.FastCorners(threshold=25, nonmax_suppression=False)
    assert "threshold=25" in repr(detector)
    for got, want in zip(detector(img), fast_corners(img, 25, False)):
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: fast_corners(np.zeros((9, 9), np.uint8)), TypeError, ["gray", "torch.Tensor", "ndarray"]),
        (lambda: fast_corners(torch.zeros(9, 9)), TypeError, ["gray", "uint8", "float32"]),
        (lambda: fast_corners(torch.zeros(9, dtype=torch.uint8)), ValueError, ["gray", "(B, H, W)", "(9,)"]),
        (lambda: fast_corners(torch.zeros(1, 3, 9, 9, dtype=torch.uint8)), ValueError, ["gray", "rgb_to_gray_u8", "(1, 3, 9, 9)"]),
        (lambda: fast_corners(torch.zeros(9, 9, dtype=torch.uint8), 256), ValueError, ["threshold", "[0, 255]", "256"]),
        (lambda: fast_corners(torch.zeros(9, 9, dtype=torch.uint8), -1), ValueError, ["threshold", "-1"]),
        (lambda: fast_corners(torch.zeros(9, 9, dtype=torch.uint8), 10.0), TypeError, ["threshold", "float"]),
        (lambda: fast_corners(torch.zeros(9, 9, dtype=torch.uint8), True), TypeError, ["threshold", "bool"]),
        (lambda: fast_corners(torch.zeros(9, 9, dtype=torch.uint8), 10, 1), TypeError, ["nonmax_suppression", "bool"]),
        (lambda: kamim_fast.FastCorners(threshold=300), ValueError, ["threshold", "300"]),
    ],
)
def test_bad_input_is_named(make, exc, words):
    assert_raises_naming(make, exc, words)


def test_numpy_integer_threshold_is_accepted():
    img = torch.from_numpy(synthetic("dots", 20, 20, np.random.default_rng(0)))
    assert torch.equal(fast_corners(img, np.int64(10))[0], fast_corners(img, 10)[0])
