"""Extreme inputs: empty batches, tiny images, out-of-range targets, strides past 2^31, and memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CUDA, INTERPRETER
from images import crop, real_image

from kamim_fast import (
    IMAGENET_MEAN, IMAGENET_STD, KAMIM_PAPER, fast_corners, keypoint_density, patch_weights, rgb_to_gray_u8,
    weighted_mim_loss,
)


@pytest.mark.parametrize("weights", [None, "tensor", "fast"])
def test_empty_batch(target, weights):
    """B = 0: every op returns empty results of the right shape; the loss is 0 with a zero-size gradient."""
    device, _ = target
    pred = torch.randn(0, 3, 32, 32, device=device, requires_grad=True)
    tgt = torch.randn(0, 3, 32, 32, device=device)
    w = torch.ones(0, 4, 4, device=device) if weights == "tensor" else weights
    loss = weighted_mim_loss(pred, tgt, torch.ones(0, 2, 2, device=device), w)
    loss.backward()
    assert loss.item() == 0.0 and pred.grad.shape == pred.shape
    keypoints, scores = fast_corners(torch.zeros(0, 16, 16, dtype=torch.uint8, device=device))
    assert keypoints.shape == scores.shape == (0, 16, 16)
    assert rgb_to_gray_u8(torch.zeros(0, 3, 8, 8, dtype=torch.uint8, device=device)).shape == (0, 8, 8)
    assert keypoint_density(keypoints, 8).shape == (0, 2, 2)
    assert patch_weights(tgt, weight_patch_size=8).shape == (0, 4, 4)


def test_all_masked_is_the_weighted_mean(target, rng):
    device, _ = target
    tgt = torch.from_numpy(rng.normal(0, 1, (2, 3, 32, 48))).float()
    pred = tgt + torch.from_numpy(rng.normal(0, 1, tgt.shape)).float()
    w = torch.from_numpy(rng.uniform(1, 3, (2, 4, 6))).float()
    got = weighted_mim_loss(pred.to(device), tgt.to(device), torch.ones(2, 2, 3, device=device), w.to(device))
    wide = w.repeat_interleave(8, 1).repeat_interleave(8, 2).unsqueeze(1)
    want = (wide * (pred - tgt).abs()).sum() / (2 * 32 * 48 + 1e-5) / 3
    torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("size", [4, 6, 8])
def test_images_inside_the_fast_border_weigh_one(target, size, rng):
    """FAST tests rows and columns in [3, size - 3) only: 4x4 and 6x6 images hold no keypoint, so
    weights="fast" is SimMIM's loss; 8x8 may hold some and must still match the reference."""
    device, backend = target
    tgt = torch.from_numpy(rng.normal(0, 1.5, (2, 3, size, size))).float().to(device)
    pred = tgt + 0.5
    mask = torch.ones(2, 1, 1, device=device)
    got = weighted_mim_loss(pred, tgt, mask, "fast", weight_patch_size=2)
    if size < 7:
        torch.testing.assert_close(got, weighted_mim_loss(pred, tgt, mask), rtol=1e-6, atol=0)
    weights = patch_weights(tgt, weight_patch_size=2)
    torch.testing.assert_close(got, weighted_mim_loss(pred, tgt, mask, weights), rtol=1e-6, atol=0)


def test_targets_outside_the_normalised_range_are_clamped(target, rng):
    """Recovering gray from target clamps each channel to [0, 255] after un-normalising (documented):
    a target pushed far outside the range weighs as the clamped one does."""
    device, _ = target
    u8 = crop(real_image("astronaut"), 48, 48, rng)
    x = (torch.from_numpy(u8).permute(2, 0, 1).float() / 255).unsqueeze(0)
    wild = x.clone()
    wild[..., ::3, ::2] = torch.where(x[..., ::3, ::2] > 0.5, 40.0, -40.0)  # far outside [0, 1]
    clamped = wild.clamp(0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    w_wild = patch_weights(((wild - mean) / std).to(device))
    w_clamped = patch_weights(((clamped - mean) / std).to(device))
    assert torch.equal(w_wild, w_clamped)


@pytest.mark.cuda
@pytest.mark.skipif(not (CUDA or INTERPRETER), reason="needs a GPU or Triton's interpreter")
def test_strides_past_two_to_the_31(monkeypatch, rng):
    """Batch strides of 2^31 + 64 elements: the kernels' offsets must be int64. On the CPU (the interpreter)
    the storages are allocated (several GB of address space) but only the images' pages are ever touched; on
    a GPU they take about 14 GB of its memory."""
    monkeypatch.setenv("KAMIM_FAST_BACKEND", "triton")
    device = "cuda" if CUDA else "cpu"
    stride = (1 << 31) + 64
    B, H, W = 2, 24, 40

    def spread(x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) copied into a storage whose images lie ``stride`` elements apart."""
        big = torch.empty(stride * (B - 1) + x[0].numel(), dtype=x.dtype, device=device)
        view = big.as_strided(x.shape, (stride, *x[0].contiguous().stride()))
        view.copy_(x)
        return view

    gray = torch.from_numpy(np.stack([crop(real_image("camera"), H, W, rng) for _ in range(B)])).to(device)
    for got, want in zip(fast_corners(spread(gray)), fast_corners(gray)):
        assert torch.equal(got, want)
    u8 = np.stack([crop(real_image("coffee"), H, W, rng) for _ in range(B)])
    tgt = ((torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1))
           / torch.tensor(IMAGENET_STD).view(3, 1, 1)).to(device)
    pred = (tgt + torch.from_numpy(rng.normal(0, 0.5, tgt.shape)).float().to(device)).bfloat16()
    mask = torch.from_numpy(rng.random((B, 3, 5)) < 0.6).to(device)
    far = spread(pred).requires_grad_()
    near = pred.clone().requires_grad_()
    got = weighted_mim_loss(far, spread(tgt), mask, "fast", **KAMIM_PAPER)
    want = weighted_mim_loss(near, tgt, mask, "fast", **KAMIM_PAPER)
    got.backward()
    want.backward()
    assert torch.equal(got, want) and torch.equal(far.grad, near.grad)


@pytest.mark.cuda
@pytest.mark.skipif(not (CUDA or INTERPRETER), reason="needs a GPU or Triton's interpreter")
def test_row_and_column_offsets_past_two_to_the_31(monkeypatch, rng):
    """Views whose column stride (or 3 rows of row stride) times a coordinate passes 2^31 elements while each
    stride alone fits int32: the kernels must form those offsets in int64 (on the CPU the interpreter computes
    int32 products as int32, so an overflow reads the wrong pixel here too). Column strides of 2^28 + 16 (uint8)
    and 2^27 + 16 (bf16) elements, and a row stride of 2^30 + 16 (FAST's circle reaches 3 rows away)."""
    monkeypatch.setenv("KAMIM_FAST_BACKEND", "triton")
    device = "cuda" if CUDA else "cpu"

    def strided(x: torch.Tensor, strides: tuple[int, ...]) -> torch.Tensor:
        """x copied into a storage with the given strides (only the touched pages are backed on the CPU)."""
        size = 1 + sum((n - 1) * st for n, st in zip(x.shape, strides))
        view = torch.empty(size, dtype=x.dtype, device=device).as_strided(x.shape, strides)
        view.copy_(x)
        return view

    wide = (1 << 28) + 16
    gray = torch.from_numpy(crop(real_image("camera"), 16, 12, rng)).unsqueeze(0).to(device)  # (1, 16, 12)
    for got, want in zip(fast_corners(strided(gray, (0, 1, wide))), fast_corners(gray)):
        assert torch.equal(got, want)
    tall = (1 << 30) + 16
    gray = torch.from_numpy(crop(real_image("camera"), 9, 16, rng)).unsqueeze(0).to(device)  # (1, 9, 16)
    for got, want in zip(fast_corners(strided(gray, (0, tall, 1))), fast_corners(gray)):
        assert torch.equal(got, want)
    rgb = torch.from_numpy(crop(real_image("coffee"), 16, 12, rng)).permute(2, 0, 1).unsqueeze(0).to(device)
    far = strided(rgb, (0, 1, 3, wide))  # (1, 3, 16, 12): channels adjacent, columns 2^28 + 16 apart
    assert torch.equal(rgb_to_gray_u8(far), rgb_to_gray_u8(rgb))
    for got, want in zip(fast_corners(rgb_to_gray_u8(far)), fast_corners(rgb_to_gray_u8(rgb))):
        assert torch.equal(got, want)
    u8 = torch.from_numpy(crop(real_image("coffee"), 8, 24, rng)).permute(2, 0, 1).unsqueeze(0).float()
    tgt = ((u8 / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1))
    tgt = tgt.bfloat16().to(device)
    pred = (tgt.float() + torch.from_numpy(rng.normal(0, 0.5, tgt.shape)).float().to(device)).bfloat16()
    mask = torch.from_numpy(rng.random((1, 1, 3)) < 0.7).to(device)
    cols = (1 << 27) + 16
    for weights in ("fast", None):
        far = strided(pred, (0, 1, 3, cols)).requires_grad_()
        near = pred.clone().requires_grad_()
        got = weighted_mim_loss(far, strided(tgt, (0, 1, 3, cols)), mask, weights, **KAMIM_PAPER)
        want = weighted_mim_loss(near, tgt, mask, weights, **KAMIM_PAPER)
        got.backward()
        want.backward()
        assert torch.equal(got, want) and torch.equal(far.grad, near.grad), weights


def _allocations(fn) -> list[int]:
    """Sizes in bytes of the CPU tensors allocated while ``fn`` runs (torch's profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return [e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0]


@pytest.mark.skipif(CUDA, reason="the CUDA twin below measures device memory")
@pytest.mark.parametrize("backend", ["triton"] if INTERPRETER else [])
def test_fused_loss_allocates_nothing_full_size_but_the_gradient(backend, monkeypatch, rng):
    """Forward: only per-cell partials, the 2-bit sign codes (a 16th of fp32 pred) and the per-program
    scratch; backward: the gradient. The reference composition, for contrast, allocates full-size maps."""
    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)
    B, H, W = 4, 128, 128
    tgt = torch.from_numpy(rng.normal(0, 1, (B, 3, H, W))).float()
    pred = (tgt + 0.3).requires_grad_()
    mask = torch.ones(B, 8, 8)
    full = pred.numel() * pred.element_size()
    state = {}

    def forward():
        state["loss"] = weighted_mim_loss(pred, tgt, mask, "fast", **KAMIM_PAPER)

    forward_sizes = _allocations(forward)
    backward_sizes = _allocations(lambda: state["loss"].backward())
    assert max(forward_sizes) < full / 8 and sum(forward_sizes) < full / 2, (full, sorted(forward_sizes)[-5:])
    assert sorted(backward_sizes)[-1] == full and sorted(backward_sizes)[-2] < full / 8, (full, sorted(backward_sizes)[-5:])
    monkeypatch.setenv("KAMIM_FAST_BACKEND", "torch")
    pred.grad = None
    reference = _allocations(lambda: weighted_mim_loss(pred.double(), tgt.double(), mask, "fast", **KAMIM_PAPER))
    assert max(reference) >= full  # the measurement sees full-size tensors when there are some


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
def test_fused_loss_peak_memory_on_cuda(rng):
    """On CUDA: the forward + backward peak over what exists before is the gradient plus small state."""
    B, H, W = 16, 192, 192
    tgt = torch.randn(B, 3, H, W, device="cuda")
    pred = (tgt + 0.3).bfloat16().requires_grad_()
    mask = torch.ones(B, 12, 12, device="cuda")
    weighted_mim_loss(pred, tgt, mask, "fast", **KAMIM_PAPER).backward()  # warm-up: kernels, scratch
    pred.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    weighted_mim_loss(pred, tgt, mask, "fast", **KAMIM_PAPER).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    grad = pred.numel() * pred.element_size()
    assert extra < grad + pred.numel() // 4 + 32 * 2**20, (extra, grad)
