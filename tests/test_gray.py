"""RGB -> gray against OpenCV's cvtColor, and the un-normalisation of float batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_raises_naming
from images import COLOUR_NAMES, crop, real_image
from oracles import cv_gray

import kamim_fast
from kamim_fast import IMAGENET_MEAN, IMAGENET_STD, rgb_to_gray_u8, rgb_to_gray_u8_ref


def _nchw(rgb_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb_hwc).permute(2, 0, 1)  # (3, H, W), channels-last strides


def _normalise(u8: torch.Tensor, mean, std) -> torch.Tensor:
    """torchvision's ToTensor + Normalize."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (u8.float() / 255 - m) / s


@pytest.mark.parametrize("channel_order", ["rgb", "bgr"])
def test_uint8_matches_opencv(channel_order, target, rng):
    device, backend = target
    imgs = [rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)]
    imgs += [crop(real_image(n), 64, 96, rng) if backend == "triton" else real_image(n) for n in COLOUR_NAMES]
    for img in imgs:
        got = rgb_to_gray_u8(_nchw(img).to(device), channel_order=channel_order)
        np.testing.assert_array_equal(got.cpu().numpy(), cv_gray(img, channel_order))


def test_every_uint8_triple_on_a_grid(target):
    """All 256 values of each channel against the others' extremes and midpoints."""
    device, _ = target
    v = torch.arange(256, dtype=torch.uint8)
    grid = torch.cartesian_prod(v, torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8),
                                torch.tensor([0, 1, 128, 255], dtype=torch.uint8))
    for perm in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        rgb = grid[:, perm].reshape(32, -1, 3).numpy()
        got = rgb_to_gray_u8(_nchw(rgb).to(device))
        np.testing.assert_array_equal(got.cpu().numpy(), cv_gray(rgb))
    # Every triple whose weighted sum is exactly half-way (low 15 bits 0x4000: 2728 of 2^24): only there does
    # the rounding constant decide, so only these catch 16383 for 16384.
    v = np.arange(256)
    r, g, b = np.meshgrid(v, v, v, indexing="ij")
    half = (r * 9798 + g * 19235 + b * 3735) % 32768 == 16384
    triples = np.stack([r[half], g[half], b[half]], -1).astype(np.uint8)
    assert len(triples) == 2728
    for order in ("rgb", "bgr"):
        rgb = triples.reshape(1, -1, 3)
        got = rgb_to_gray_u8(_nchw(rgb).to(device), channel_order=order)
        np.testing.assert_array_equal(got.cpu().numpy(), cv_gray(rgb, order))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normalised_float_recovers_the_uint8_gray(dtype, target, rng):
    device, _ = target
    img = rng.integers(0, 256, (2, 40, 52, 3), dtype=np.uint8)
    u8 = torch.from_numpy(img).permute(0, 3, 1, 2)
    x = _normalise(u8, IMAGENET_MEAN, IMAGENET_STD).to(dtype)
    got = rgb_to_gray_u8(x.to(device), mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order="bgr")
    want = np.stack([cv_gray(i, "bgr") for i in img])
    np.testing.assert_array_equal(got.cpu().numpy(), want)
    # [0, 1] floats need no mean/std
    got01 = rgb_to_gray_u8((u8.to(dtype) / 255).to(device))
    np.testing.assert_array_equal(got01.cpu().numpy(), np.stack([cv_gray(i) for i in img]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_arbitrary_floats_equal_the_reference(dtype, target, rng):
    """Out-of-range values clamp, NaN gives 0, halves round to even: kernel and reference agree exactly."""
    device, _ = target
    x = torch.from_numpy(rng.normal(0, 1.5, (2, 3, 17, 29))).to(dtype)
    x[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e6])
    x[1, 1, 2, :3] = torch.tensor([0.5, 1.5, 2.5]) / 255  # exact ties at mean 0, std 1
    mean, std = (0.1, -0.2, 0.3), (0.5, 1.25, 2.0)
    got = rgb_to_gray_u8(x.to(device), mean=mean, std=std)
    want = rgb_to_gray_u8_ref(x, False, mean, std)
    assert torch.equal(got.cpu(), want)


def test_float_ties_round_to_even(target):
    """x * 255 = k + 0.5 exactly (float32) in every channel: the recovered uint8 is k rounded half to even,
    and so is the gray (the weights sum to 2**15). Asserted by value, on both backends."""
    device, _ = target
    k = torch.arange(255, dtype=torch.float32)
    x = ((k + 0.5) / 255).view(1, 1, 1, 255).expand(2, 3, 1, 255).contiguous()
    assert torch.equal(x[0, 0, 0] * 255, k + 0.5)  # exact ties
    want = torch.where(k % 2 == 0, k, k + 1).to(torch.uint8)  # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, ...
    for mean_std in ({}, {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}):
        got = rgb_to_gray_u8(x.to(device), **mean_std)
        assert torch.equal(got.cpu(), want.view(1, 1, 255).expand(2, 1, 255)), mean_std


def test_unbatched_and_strided(target, rng):
    device, _ = target
    img = crop(real_image("coffee"), 31, 45, rng)
    chw = _nchw(img).to(device)
    assert rgb_to_gray_u8(chw).shape == (31, 45)
    np.testing.assert_array_equal(rgb_to_gray_u8(chw).cpu().numpy(), cv_gray(img))
    flipped = chw.unsqueeze(0).flip(-1)[..., ::2]
    np.testing.assert_array_equal(rgb_to_gray_u8(flipped)[0].cpu().numpy(), cv_gray(img[:, ::-1][:, ::2]))


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: rgb_to_gray_u8(torch.zeros(2, 1, 4, 4, dtype=torch.uint8)), ValueError, ["images", "3 channels", "(2, 1, 4, 4)"]),
        (lambda: rgb_to_gray_u8(torch.zeros(3, 4, dtype=torch.uint8)), ValueError, ["images", "(B, 3, H, W)", "(3, 4)"]),
        (lambda: rgb_to_gray_u8(torch.zeros(1, 3, 4, 4, dtype=torch.int32)), TypeError, ["images", "uint8", "int32"]),
        (lambda: rgb_to_gray_u8(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), mean=0.5), ValueError, ["mean", "float", "uint8"]),
        (lambda: rgb_to_gray_u8(torch.zeros(1, 3, 4, 4), std=(1.0, 0.0, 1.0)), ValueError, ["std", "positive"]),
        (lambda: rgb_to_gray_u8(torch.zeros(1, 3, 4, 4), mean=(1.0, 2.0)), ValueError, ["mean", "3 floats"]),
        (lambda: rgb_to_gray_u8(torch.zeros(1, 3, 4, 4), channel_order="RGB"), ValueError, ["channel_order", "'RGB'"]),
    ],
)
def test_bad_input_is_named(make, exc, words):
    assert_raises_naming(make, exc, words)


def test_op_schema():
    assert "kamim_fast::rgb_to_gray_u8" in str(torch.ops.kamim_fast.rgb_to_gray_u8.default._schema)
    assert kamim_fast.rgb_to_gray_u8 is rgb_to_gray_u8


def test_tensor_statistics_are_read_once(monkeypatch, rng):
    """mean/std given as tensors (CUDA ones cost a host synchronisation to read) are read once per tensor, and
    again after an in-place change, which the result follows."""
    reads = []
    tolist = torch.Tensor.tolist

    def counting(self):
        reads.append(self.data_ptr())
        return tolist(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    u8 = torch.from_numpy(rng.integers(0, 256, (1, 3, 8, 8), dtype=np.uint8))
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    x = (u8 / 255 - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    first = rgb_to_gray_u8(x, mean=mean, std=std)
    assert torch.equal(rgb_to_gray_u8(x, mean=mean, std=std), first) and len(reads) == 2
    assert torch.equal(first, rgb_to_gray_u8(u8))
    mean.add_(0.1)  # an in-place change: read again, and the gray follows the new statistics
    changed = rgb_to_gray_u8(x, mean=mean, std=std)
    assert len(reads) == 3
    assert torch.equal(changed, rgb_to_gray_u8(x, mean=mean.tolist(), std=std.tolist()))
    assert not torch.equal(changed, first)
