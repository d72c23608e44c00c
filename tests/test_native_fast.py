"""The native CPU FAST ops (``csrc/fast_cpu.cpp``, ``torch.ops.kamim_fast_cpp.*``), bit for bit against the
PyTorch references and against OpenCV itself.

``cell_cover`` (the C++ interface the fused CPU loss uses) is tested through ``patch_weights`` and
``keypoint_density``. The vector code runs in the copy this CPU selects (AVX2 or AVX-512 on x86-64); the
other copies run in a child process each, with ``KAMIM_FAST_CPU_ISA``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from images import COLOUR_NAMES, GREY_NAMES, SYNTHETIC_KINDS, crop, real_image, synthetic
from oracles import cv_fast, cv_gray
from published import normalise, published_weights

import kamim_fast._ext
from kamim_fast import IMAGENET_MEAN, IMAGENET_STD, _opencv, fast_corners_ref, rgb_to_gray_u8_ref
from kamim_fast.gray import CHANNEL_ORDERS
from kamim_fast.weights import DENSITY_MODES, keypoint_density_ref, weights_from_keypoints

ROOT = Path(__file__).resolve().parent.parent
ORDER = {False: "rgb", True: "bgr"}  # the ops' channel_order
kamim_fast._ext.status()  # loads kamim_fast._C (or JIT-builds csrc/), which registers kamim_fast_cpp::*


def _native_available() -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("kamim_fast_cpp::fast_corners", "CPU")
    except RuntimeError:
        return False


pytestmark = pytest.mark.skipif(not _native_available(),
                                reason="the C++ extension kamim_fast._C (with csrc/fast_cpu.cpp) is not built")
ops = torch.ops.kamim_fast_cpp

THRESHOLDS = (0, 1, 10, 40, 254, 255)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _stats(rng) -> tuple[list[float], list[float]]:
    return [float(v) for v in rng.uniform(0.2, 0.7, 3)], [float(v) for v in rng.uniform(0.1, 0.4, 3)]


def _normalised(u8: torch.Tensor, mean, std, dtype) -> torch.Tensor:
    return normalise(u8, mean, std).to(dtype)


def _assert_fast_equal(got, want, what=""):
    assert got[0].dtype == torch.bool and got[1].dtype == torch.uint8
    assert got[0].is_contiguous() and got[1].is_contiguous()
    assert torch.equal(got[0], want[0]), f"{what}: keypoints differ at {(got[0] ^ want[0]).nonzero()[:5].tolist()}"
    assert torch.equal(got[1], want[1]), f"{what}: scores differ at {(got[1] != want[1]).nonzero()[:5].tolist()}"


def _assert_cv_fast(gray: np.ndarray, keypoints: torch.Tensor, scores: torch.Tensor, threshold: int, nms: bool):
    cv_kp, cv_resp, _ = cv_fast(gray, threshold, nms)
    np.testing.assert_array_equal(keypoints.numpy(), cv_kp, err_msg=f"t={threshold} nms={nms}")
    if nms:  # OpenCV's response is the score with NMS on (0 with it off; we keep the score)
        np.testing.assert_array_equal(scores.numpy().astype(np.int32), cv_resp)


def _native_fast(gray: torch.Tensor, threshold: int, nms: bool):
    return ops.fast_corners(gray, threshold, nms, "rgb", [], [])


# --- constants shared with Python -----------------------------------------------------------------------


def test_cpp_constants_equal_python():
    """csrc/opencv_constants.h holds the same circle, radius, arc, gray weights and ring as _opencv.py."""
    text = (ROOT / "csrc" / "opencv_constants.h").read_text()

    def block(name):
        m = re.search(rf"{name}\[[^=]*=\s*\{{(.*?)\}};", text, re.S)
        assert m, name
        return m.group(1)

    def scalar(name):
        m = re.search(rf"constexpr \w+ {name} = ([^;]+);", text)
        assert m, name
        return m.group(1).strip()

    pairs = re.findall(r"\{\s*(-?\d+)\s*,\s*(-?\d+)\s*\}", block("kFastCircle"))
    circle = tuple(tuple(int(v) for v in pair) for pair in pairs)
    assert circle == _opencv.FAST_CIRCLE
    assert int(scalar("kFastRadius")) == _opencv.FAST_RADIUS
    assert int(scalar("kFastArc")) == _opencv.FAST_ARC
    assert int(scalar("kFastMaxThreshold")) == _opencv.FAST_MAX_THRESHOLD
    assert tuple(int(v) for v in re.findall(r"\d+", block("kGrayWeightsRgb"))) == _opencv.GRAY_WEIGHTS_RGB
    assert int(scalar("kGrayShift")) == _opencv.GRAY_SHIFT
    assert scalar("kGrayRound") == "1 << (kGrayShift - 1)" and _opencv.GRAY_ROUND == 1 << (_opencv.GRAY_SHIFT - 1)
    assert tuple(re.findall(r'"([.#]+)"', block("kDrawKeypointRing"))) == _opencv.DRAW_KEYPOINT_RING
    assert int(scalar("kDrawKeypointRingRadius")) == _opencv.DRAW_KEYPOINT_RING_RADIUS


def test_isa_name():
    assert ops.fast_cpu_isa() in ("sse2", "avx2", "avx512", "portable")


# --- gray ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_gray_uint8_equals_opencv(rng, order):
    imgs = [crop(real_image(n), int(rng.integers(1, 90)), int(rng.integers(1, 130)), rng) for n in COLOUR_NAMES]
    for img in imgs:
        t = torch.from_numpy(img).permute(2, 0, 1)[None]  # channels-last strides, as numpy holds it
        want = torch.from_numpy(cv_gray(img, order))[None]
        for x in (t, t.contiguous(), t[..., ::2, ::3], t.contiguous()[..., 1:, ::2]):
            got = ops.rgb_to_gray_u8(x, order, [], [])
            assert got.is_contiguous() and got.dtype == torch.uint8
            assert torch.equal(got, rgb_to_gray_u8_ref(x, order == "bgr"))
        assert torch.equal(ops.rgb_to_gray_u8(t, order, [], []), want)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_gray_float_equals_reference(rng, dtype):
    mean, std = _stats(rng)
    u8 = torch.from_numpy(np.stack([crop(real_image(n), 37, 101, rng) for n in COLOUR_NAMES])).permute(0, 3, 1, 2)
    x = _normalised(u8, mean, std, dtype)
    noise = torch.from_numpy(rng.normal(0, 3, x.shape)).to(dtype)  # out of range, clamped
    special = x.contiguous().clone()
    special.view(-1)[:: 7] = float("nan")
    special.view(-1)[1:: 11] = float("inf")
    special.view(-1)[2:: 13] = float("-inf")
    for bgr in (False, True):
        for v in (x, x.contiguous(memory_format=torch.channels_last), x[..., ::2, 1::2], noise, special):
            got = ops.rgb_to_gray_u8(v, ORDER[bgr], mean, std)
            assert torch.equal(got, rgb_to_gray_u8_ref(v, bgr, mean, std)), (dtype, bgr)
    if dtype in (torch.float32, torch.float64):  # the normalised batch recovers OpenCV's gray of the uint8 images
        imgn = _normalised(u8, IMAGENET_MEAN, IMAGENET_STD, dtype)
        want = torch.stack([torch.from_numpy(cv_gray(im.permute(1, 2, 0).numpy())) for im in u8])
        assert torch.equal(ops.rgb_to_gray_u8(imgn, "rgb", list(IMAGENET_MEAN), list(IMAGENET_STD)), want)


# --- FAST ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_fast_real_photos_equal_opencv(rng, threshold):
    grays = [crop(real_image(n), int(rng.integers(7, 140)), int(rng.integers(7, 200)), rng) for n in GREY_NAMES]
    grays += [cv_gray(crop(real_image(n), 96, 131, rng)) for n in COLOUR_NAMES]
    for g in grays:
        t = torch.from_numpy(g)[None]
        for nms in (True, False):
            got = _native_fast(t, threshold, nms)
            _assert_fast_equal(got, fast_corners_ref(t, threshold, nms), f"{g.shape} t={threshold} nms={nms}")
            _assert_cv_fast(g, got[0][0], got[1][0], threshold, nms)


@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_fast_synthetic_equal_opencv(rng, kind):
    for h, w in ((7, 7), (8, 9), (33, 70), (64, 64), (101, 67)):
        g = synthetic(kind, h, w, rng)
        t = torch.from_numpy(g)[None]
        for threshold in THRESHOLDS:
            for nms in (True, False):
                got = _native_fast(t, threshold, nms)
                _assert_fast_equal(got, fast_corners_ref(t, threshold, nms), f"{kind} {h}x{w} t={threshold} nms={nms}")
                _assert_cv_fast(g, got[0][0], got[1][0], threshold, nms)


def test_fast_tiny_images_have_no_keypoints(rng):
    for h, w in ((0, 5), (5, 0), (1, 1), (6, 40), (40, 6), (6, 6), (3, 100)):
        t = torch.from_numpy(synthetic("dots", max(h, 1), max(w, 1), rng)[:h, :w].copy())[None].expand(2, h, w)
        kp, sc = _native_fast(t, 0, False)
        assert kp.shape == (2, h, w) and not kp.any() and not sc.any()


def test_fast_every_size_from_7(rng):
    """Sizes across the vector width (16, 32, 64 columns plus the border) and odd ones."""
    for h, w in [(7, w) for w in range(7, 80, 3)] + [(h, 71) for h in range(7, 30, 4)] + [(9, 135), (13, 262)]:
        g = synthetic("noise", h, w, rng)
        t = torch.from_numpy(g)[None]
        got = _native_fast(t, 10, True)
        _assert_fast_equal(got, fast_corners_ref(t, 10, True), f"{h}x{w}")
        _assert_cv_fast(g, got[0][0], got[1][0], 10, True)


def test_fast_strided_gray(rng):
    g = torch.from_numpy(np.stack([crop(real_image("camera"), 90, 120, rng), synthetic("dots", 90, 120, rng)]))
    for v in (g.transpose(1, 2), g[:, ::2, ::3], g[:, 5:, 3:], g.expand(3, 2, 90, 120)[1]):
        for nms in (True, False):
            _assert_fast_equal(_native_fast(v, 10, nms), fast_corners_ref(v.contiguous(), 10, nms), str(v.stride()))


@pytest.mark.parametrize("dtype", (torch.uint8, *FLOAT_DTYPES), ids=str)
def test_fast_colour_input(rng, dtype):
    """(B, 3, H, W) colour, converted to gray on the fly: uint8 or normalised float, rgb or bgr, any layout."""
    u8 = torch.from_numpy(np.stack([crop(real_image(n), 75, 93, rng) for n in COLOUR_NAMES])).permute(0, 3, 1, 2)
    mean, std = _stats(rng)
    x = u8 if dtype == torch.uint8 else _normalised(u8, mean, std, dtype)
    m, s = ([], []) if dtype == torch.uint8 else (mean, std)
    for bgr in (False, True):
        for v in (x.contiguous(), x.contiguous(memory_format=torch.channels_last), x[..., 1::2, ::2]):
            for threshold, nms in ((10, True), (0, False), (40, True)):
                gray = rgb_to_gray_u8_ref(v, bgr, m or (0.0,) * 3, s or (1.0,) * 3)
                got = ops.fast_corners(v, threshold, nms, ORDER[bgr], m, s)
                _assert_fast_equal(got, fast_corners_ref(gray, threshold, nms), f"{dtype} bgr={bgr} t={threshold}")


def test_fast_bands_of_a_large_image(rng):
    """A 2048-wide photo spans several bands of rows (each reads its halo): still the reference, and OpenCV."""
    big = np.tile(real_image("camera"), (1, 4))[:300]  # 300 x 2048: bands of 64 rows
    t = torch.from_numpy(big)[None]
    got = _native_fast(t, 10, True)
    _assert_fast_equal(got, fast_corners_ref(t, 10, True), "300x2048")
    _assert_cv_fast(big, got[0][0], got[1][0], 10, True)


# --- density and weights -------------------------------------------------------------------------------


def test_keypoint_density_equals_reference(rng):
    for (h, w), p in [((16, 16), 8), ((24, 40), 8), ((48, 32), 16), ((64, 96), 32), ((15, 21), 3), ((10, 35), 5),
                      ((7, 9), 1), ((12, 8), 2), ((20, 12), 4), ((130, 200), 10), ((64, 128), 64), ((300, 1100), 4)]:
        for frac in (0.0, 0.01, 0.1, 0.6, 1.0):
            kp = torch.from_numpy(rng.random((3, h, w)) < frac)
            for v in (kp, kp.transpose(1, 2).contiguous().transpose(1, 2)):
                for density in DENSITY_MODES:
                    want = keypoint_density_ref(v, p, density)
                    got = ops.keypoint_density(v, p, density)
                    assert got.dtype == torch.float32 and torch.equal(got, want), (h, w, p, frac, density)


@pytest.mark.parametrize("p", [8, 16, 32])
def test_patch_weights_equal_reference_on_photos(rng, p):
    u8 = torch.from_numpy(np.stack([crop(real_image(n), 192, 160, rng) for n in COLOUR_NAMES])).permute(0, 3, 1, 2)
    mean, std = _stats(rng)
    for dtype in (torch.uint8, torch.float32, torch.bfloat16):
        x = u8 if dtype == torch.uint8 else _normalised(u8, mean, std, dtype)
        m, s = ([0.0] * 3, [1.0] * 3) if dtype == torch.uint8 else (mean, std)
        for bgr in (False, True):
            for threshold in (10, 40):
                kp = fast_corners_ref(rgb_to_gray_u8_ref(x, bgr, m, s), threshold, True)[0]
                for density in DENSITY_MODES:
                    for T in (0.01, 0.02, 0.05, 0.25, 2.5):  # the clip at 20 binds for small T
                        want = weights_from_keypoints(kp, p, density, T)
                        got = ops.patch_weights(x, p, T, threshold, density, ORDER[bgr], m, s)[0]
                        assert torch.equal(got, want), (dtype, bgr, threshold, density, T)


def test_patch_weights_equal_published_pipeline(rng):
    """KAMIM_PAPER's settings against the published per-image OpenCV pipeline (tests/published.py)."""
    imgs = np.stack([crop(real_image(n), 192, 192, rng) for n in COLOUR_NAMES])
    u8 = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    for density in DENSITY_MODES:
        want = published_weights(imgs, 8, 0.25, channel_order="bgr", density=density)
        got = ops.patch_weights(u8, 8, 0.25, 10, density, "bgr", [], [])[0]
        assert torch.equal(got, want), density
    x = normalise(u8, IMAGENET_MEAN, IMAGENET_STD)
    got = ops.patch_weights(x, 8, 0.25, 10, "ring", "bgr", list(IMAGENET_MEAN), list(IMAGENET_STD))[0]
    assert torch.equal(got, published_weights(imgs, 8, 0.25))


def test_patch_weights_edge_cases(rng):
    flat = torch.full((2, 3, 16, 24), int(rng.integers(0, 256)), dtype=torch.uint8)
    assert torch.equal(ops.patch_weights(flat, 8, 0.25, 10, "ring", "rgb", [], [])[0], torch.ones(2, 2, 3))
    tiny = torch.from_numpy(rng.integers(0, 256, (1, 3, 6, 6), dtype=np.uint8))  # no keypoints below 7x7
    assert torch.equal(ops.patch_weights(tiny, 3, 0.1, 0, "ring", "rgb", [], [])[0], torch.ones(1, 2, 2))
    dots = torch.from_numpy(np.stack([synthetic("dots", 40, 56, rng)] * 3))[None]
    for p in (1, 4, 8):
        kp = fast_corners_ref(rgb_to_gray_u8_ref(dots), 0, True)[0]
        for density in DENSITY_MODES:
            want = weights_from_keypoints(kp, p, density, 0.05)
            assert torch.equal(ops.patch_weights(dots, p, 0.05, 0, density, "rgb", [], [])[0], want)


# --- determinism, the other vector copies, random shapes ---------------------------------------------------


def test_thread_count_invariance(rng):
    big = torch.from_numpy(np.tile(real_image("astronaut"), (2, 2, 1))[:, :1100]).permute(2, 0, 1)[None]  # 1024x1100
    u8 = torch.cat([big, big.flip(-1)])
    gray = rgb_to_gray_u8_ref(u8)
    kp = torch.from_numpy(rng.random((2, 1024, 1100)) < 0.05)
    calls = [lambda: ops.fast_corners(gray, 10, True, "rgb", [], []),
             lambda: ops.fast_corners(u8, 10, False, "bgr", [], []),
             lambda: ops.rgb_to_gray_u8(u8, "bgr", [], []), lambda: ops.keypoint_density(kp, 4, "ring"),
             lambda: ops.patch_weights(u8, 8, 0.25, 10, "ring", "bgr", [], [])[0],
             lambda: ops.patch_weights(normalise(u8, IMAGENET_MEAN, IMAGENET_STD), 8, 0.25, 10, "ring", "bgr",
                                       list(IMAGENET_MEAN), list(IMAGENET_STD), True)[1]]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [f() for f in calls]
        torch.set_num_threads(2)
        two = [f() for f in calls]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(x, y)
    _assert_fast_equal(one[0], fast_corners_ref(gray, 10, True), "1024x1100")


_ISA_SCRIPT = """
import numpy as np, torch, sys
sys.path.insert(0, {tests!r})
import kamim_fast._ext; kamim_fast._ext.status()
from images import real_image, synthetic, crop
from kamim_fast import fast_corners_ref, rgb_to_gray_u8_ref
from kamim_fast.weights import DENSITY_MODES, weights_from_keypoints, keypoint_density_ref
ops = torch.ops.kamim_fast_cpp
assert ops.fast_cpu_isa() == {isa!r}, ops.fast_cpu_isa()
rng = np.random.default_rng({seed})
for h, w in ((7, 7), (9, 40), (64, 150), (101, 300)):
    u8 = torch.from_numpy(crop(real_image("astronaut"), h, w, rng)).permute(2, 0, 1)[None]
    x = ((u8.float() / 255 - 0.4) / 0.2)
    for img, m, s in ((u8, [], []), (x, [0.4] * 3, [0.2] * 3)):
        gray = rgb_to_gray_u8_ref(img, True, m or [0.0] * 3, s or [1.0] * 3)
        assert torch.equal(ops.rgb_to_gray_u8(img, "bgr", m, s), gray)
        for t in (0, 10, 255):
            for nms in (True, False):
                a, b = ops.fast_corners(img, t, nms, "bgr", m, s), fast_corners_ref(gray, t, nms)
                assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), (h, w, t, nms)
    g = torch.from_numpy(synthetic("noise", h, w, rng))[None]
    a, b = ops.fast_corners(g, 1, True, "rgb", [], []), fast_corners_ref(g, 1, True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    p = 1 if h % 2 else 2
    kp = fast_corners_ref(gray[:, : h // p * p, : w // p * p], 10, True)[0]
    for density in DENSITY_MODES:
        assert torch.equal(ops.keypoint_density(kp, p, density), keypoint_density_ref(kp, p, density))
        got = ops.patch_weights(u8[..., : h // p * p, : w // p * p], p, 0.05, 10, density, "bgr", [], [])[0]
        assert torch.equal(got, weights_from_keypoints(kp, p, density, 0.05))
print("ok")
"""


def _isas() -> list[str]:
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return ["portable"]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = ["portable", "sse2"]
    if " avx2" in flags:
        found.append("avx2")
    if " avx512bw" in flags:
        found.append("avx512")
    return found


@pytest.mark.parametrize("isa", _isas())
def test_every_vector_copy(rng, isa):
    """Each compiled copy (portable, SSE2, AVX2, AVX-512BW) in a child process, forced with KAMIM_FAST_CPU_ISA."""
    script = _ISA_SCRIPT.format(tests=str(ROOT / "tests"), isa=isa, seed=int(rng.integers(1 << 31)))
    env = {**os.environ, "KAMIM_FAST_CPU_ISA": isa, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


DTYPES = st.sampled_from([torch.uint8, torch.float32, torch.float16, torch.bfloat16, torch.float64])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(1, 12), w=st.integers(1, 12), p=st.sampled_from([1, 2, 3, 4, 8]), threshold=st.integers(0, 255),
       bgr=st.booleans(), dtype=DTYPES, density=st.sampled_from(DENSITY_MODES), seed=st.integers(0, 2**32 - 1),
       source=st.sampled_from(["photo", *SYNTHETIC_KINDS]), nms=st.booleans())
def test_random_shapes_match_reference(h, w, p, threshold, bgr, dtype, density, seed, source, nms):
    rng = np.random.default_rng(seed)
    H, W = h * p, w * p
    if source == "photo":
        img = crop(real_image("coffee"), min(H, 400), min(W, 600), rng)
        img = np.pad(img, ((0, H - img.shape[0]), (0, W - img.shape[1]), (0, 0)), mode="reflect")
    else:
        img = np.stack([synthetic(source, H, W, rng) for _ in range(3)], -1)
    u8 = torch.from_numpy(img).permute(2, 0, 1)[None]
    mean, std = _stats(rng)
    x = u8 if dtype == torch.uint8 else _normalised(u8, mean, std, dtype)
    m, s = ([0.0] * 3, [1.0] * 3) if dtype == torch.uint8 else (mean, std)
    gray = rgb_to_gray_u8_ref(x, bgr, m, s)
    assert torch.equal(ops.rgb_to_gray_u8(x, ORDER[bgr], m, s), gray)
    _assert_fast_equal(ops.fast_corners(x, threshold, nms, ORDER[bgr], m, s), fast_corners_ref(gray, threshold, nms), "colour")
    kp = fast_corners_ref(gray, threshold, True)[0]
    assert torch.equal(ops.keypoint_density(kp, p, density), keypoint_density_ref(kp, p, density))
    T = float(rng.choice([0.01, 0.05, 0.25, 1.0]))
    want = weights_from_keypoints(kp, p, density, T)
    assert torch.equal(ops.patch_weights(x, p, T, threshold, density, ORDER[bgr], m, s)[0], want)


# --- argument checks -----------------------------------------------------------------------------------
# The ops' arguments are checked in Python at the op boundary (docs/ERRORS.md); a direct call of the C++ op checks
# what its kernels rely on, naming the argument. The stable ABI carries ValueError and IndexError (as
# std::invalid_argument and std::out_of_range) on torch 2.11-2.14 only, never TypeError; torch 2.15 turns every C++
# exception of a stable-ABI kernel into a RuntimeError. A direct call of the C++ op raises naming the argument; the
# typed errors are the op boundary's.
NATIVE_TYPE_ERROR = RuntimeError

_U8 = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
_GRAY = torch.zeros(1, 16, 16, dtype=torch.uint8)
_KP = torch.zeros(1, 16, 16, dtype=torch.bool)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: ops.rgb_to_gray_u8(_U8[:, :2], "rgb", [], []), ValueError, ["images", "(B, 3, H, W)"]),
        (lambda: ops.rgb_to_gray_u8(_U8[0], "rgb", [], []), ValueError, ["images", "(B, 3, H, W)"]),
        (lambda: ops.rgb_to_gray_u8(_U8.int(), "rgb", [], []), NATIVE_TYPE_ERROR, ["images", "uint8", "Int"]),
        (lambda: ops.rgb_to_gray_u8(_U8.float(), "rgb", [0.5, 0.5], []), ValueError, ["mean", "3 values", "2"]),
        (lambda: ops.rgb_to_gray_u8(_U8.float(), "rgb", [], [1.0] * 4), ValueError, ["std", "3 values", "4"]),
        (lambda: ops.fast_corners(_GRAY.float(), 10, True, "rgb", [], []), NATIVE_TYPE_ERROR, ["image", "uint8", "Float"]),
        (lambda: ops.fast_corners(_GRAY[0], 10, True, "rgb", [], []), ValueError, ["image", "(B, H, W)"]),
        (lambda: ops.fast_corners(_U8[:, :1], 10, True, "rgb", [], []), ValueError, ["image", "(B, 3, H, W)"]),
        (lambda: ops.fast_corners(_U8.short(), 10, True, "rgb", [], []), NATIVE_TYPE_ERROR, ["image", "Short"]),
        (lambda: ops.fast_corners(_U8.float(), 10, True, "rgb", [1.0], []), ValueError, ["mean", "3 values"]),
        (lambda: ops.keypoint_density(_KP, 0, "ring"), ValueError, ["patch_size", ">= 1", "0"]),
        (lambda: ops.keypoint_density(_KP[..., :12], 8, "ring"), ValueError, ["keypoints", "width 12", "patch_size=8"]),
        (lambda: ops.keypoint_density(_KP.float(), 8, "ring"), NATIVE_TYPE_ERROR, ["keypoints", "bool", "Float"]),
        (lambda: ops.keypoint_density(_KP[0], 8, "ring"), ValueError, ["keypoints", "(B, H, W)"]),
        # the values of weights.py's DENSITY_MODES, and no other
        (lambda: ops.keypoint_density(_KP, 8, "rings"), ValueError, ["density", str(DENSITY_MODES), "'rings'"]),
        (lambda: ops.patch_weights(_U8, 8, 0.25, 10, "", "rgb", [], []), ValueError, ["density", str(DENSITY_MODES)]),
        (lambda: ops.patch_weights(_U8, 8, 0.25, 10, "ring", "RGB", [], []), ValueError,
         ["channel_order", str(CHANNEL_ORDERS), "RGB"]),
        (lambda: ops.rgb_to_gray_u8(_U8, "bgra", [], []), ValueError, ["channel_order", str(CHANNEL_ORDERS), "bgra"]),
        (lambda: ops.fast_corners(_U8, 10, True, "", [], []), ValueError, ["channel_order", str(CHANNEL_ORDERS)]),
        (lambda: ops.patch_weights(_U8, 3, 0.25, 10, "ring", "rgb", [], []), ValueError,
         ["images", "height 16", "weight_patch_size=3"]),
        (lambda: ops.patch_weights(_U8, 0, 0.25, 10, "ring", "rgb", [], []), ValueError, ["weight_patch_size", ">= 1"]),
        (lambda: ops.patch_weights(_U8[..., :0, :0], 8, 0.25, 10, "ring", "rgb", [], []), ValueError,
         ["images", "positive"]),
        (lambda: ops.patch_weights(_U8.bool(), 8, 0.25, 10, "ring", "rgb", [], []), NATIVE_TYPE_ERROR, ["images", "Bool"]),
        (lambda: ops.patch_weights(_U8.float(), 8, 0.25, 10, "ring", "rgb", [1.0] * 3, [2.0]), ValueError,
         ["std", "3 values"]),
    ],
)
def test_argument_checks_raise(call, exc, words):
    with pytest.raises((exc, NATIVE_TYPE_ERROR)) as info:  # torch >= 2.15 carries every C++ exception as RuntimeError
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_meta_tensors_raise():
    with pytest.raises((ValueError, NotImplementedError, RuntimeError)):
        ops.fast_corners(_GRAY.to("meta"), 10, True, "rgb", [], [])
