"""Property-based tests (hypothesis): random shapes, patch sizes, mask forms and dtypes vs the references.

The Triton kernels run through the interpreter here, so examples are few and small; the exhaustive
OpenCV comparisons live in test_fast.py and test_weights.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CUDA, INTERPRETER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kamim_fast import fast_corners, fast_corners_ref, weighted_mim_loss, weighted_mim_loss_ref
from kamim_fast.mim_loss import expand_cells, mask_grid

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BACKENDS = ["torch"] + (["triton"] if INTERPRETER else [])


@st.composite
def loss_case(draw):
    patch = draw(st.sampled_from([1, 2, 4, 8]))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    B, C = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    H, W = h * patch, w * patch
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    form = draw(st.sampled_from(["simmim", "hf", "pixel", "amt"]))
    if form == "simmim":
        mask = torch.from_numpy(rng.random((B, h, w)) < 0.5).to(draw(st.sampled_from([torch.int64, torch.bool, torch.float32])))
    elif form == "hf":
        mask = torch.from_numpy(rng.random((B, h * w)) < 0.5)
    elif form == "pixel":
        mask = torch.from_numpy(rng.random((B, 1, H, W)) < 0.5).float()
    else:
        mask = torch.from_numpy(rng.integers(-1, 2, (B, h, w))).to(torch.int8)
    cell = draw(st.sampled_from([c for c in (1, 2, 4, 8) if H % c == 0 and W % c == 0]))
    weights = torch.from_numpy(rng.uniform(1, 4, (B, H // cell, W // cell))).float() if draw(st.booleans()) else None
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    target = torch.from_numpy(rng.normal(0, 1, (B, C, H, W))).float()
    pred = (target + torch.from_numpy(rng.normal(0, 1, (B, C, H, W))).float()).to(dtype)
    strided = draw(st.booleans())
    return pred, target, mask, weights, patch if form in ("simmim", "hf") else None, strided


@SETTINGS
@given(case=loss_case(), backend=st.sampled_from(BACKENDS))
def test_loss_and_gradient_equal_the_reference(case, backend, monkeypatch):
    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)
    pred, target, mask, weights, patch, strided = case
    p1 = pred.clone()
    if strided:  # a non-contiguous view with the same values
        p1 = p1.transpose(-1, -2).contiguous().transpose(-1, -2)
    p1.requires_grad_()
    loss = weighted_mim_loss(p1, target, mask, weights, patch_size=patch if mask.dim() == 2 else None)
    loss.backward()
    grid, p = mask_grid(mask, pred.shape, patch if mask.dim() == 2 else None)
    p2 = pred.clone().requires_grad_()
    want = weighted_mim_loss_ref(p2, target, expand_cells(grid, p), weights)
    want.backward()
    torch.testing.assert_close(loss.detach(), want.detach(), rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-6 if pred.dtype == torch.float32 else 1e-2, atol=1e-7)
    assert not torch.isnan(loss)


@SETTINGS
@given(h=st.integers(1, 40), w=st.integers(1, 70), b=st.integers(1, 2), threshold=st.integers(0, 255),
       nms=st.booleans(), levels=st.sampled_from([2, 4, 256]), seed=st.integers(0, 2**32 - 1),
       backend=st.sampled_from(BACKENDS))
def test_fast_equals_the_reference(h, w, b, threshold, nms, levels, seed, backend, monkeypatch):
    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)
    rng = np.random.default_rng(seed)
    gray = torch.from_numpy((rng.integers(0, levels, (b, h, w)) * (255 // (levels - 1))).astype(np.uint8))
    for got, want in zip(fast_corners(gray, threshold, nms), fast_corners_ref(gray, threshold, nms)):
        assert torch.equal(got, want)


STATS = st.tuples(st.sampled_from([0.0, 0.2, 0.406, 0.5, 0.7]), st.sampled_from([0.1, 0.225, 0.25, 0.5, 1.0]))


@pytest.mark.cuda
@settings(SETTINGS, max_examples=16)
@given(cells=st.tuples(st.integers(1, 6), st.integers(1, 9)), cell=st.sampled_from([2, 4, 8, 16, 6]),
       b=st.integers(1, 2), threshold=st.integers(0, 60), density=st.sampled_from(["ring", "count"]),
       order=st.sampled_from(["rgb", "bgr"]), levels=st.sampled_from([3, 256]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**32 - 1),
       stats=st.tuples(STATS, STATS, STATS), temperature=st.sampled_from([0.01, 0.03, 0.1, 0.25, 1.0, 2.5]))
def test_fast_weighted_loss_equals_the_reference(cells, cell, b, threshold, density, order, levels, dtype, seed,
                                                 stats, temperature, monkeypatch):
    """weights="fast" through the kernels (fused for powers of two, FAST kernel + L1 kernel for 6) vs the
    reference pipeline: the same loss and gradient, on random sizes, thresholds, plateau-heavy images, a
    mean and std per channel, and temperatures where the clip binds."""
    rng = np.random.default_rng(seed)
    H, W = cells[0] * cell, cells[1] * cell
    u8 = (rng.integers(0, levels, (b, 3, H, W)) * (255 // (levels - 1))).astype(np.float32)
    mean, std = (tuple(s[0] for s in stats), tuple(s[1] for s in stats))
    target = torch.from_numpy((u8 / 255 - np.array(mean, np.float32).reshape(3, 1, 1)) / np.array(std, np.float32).reshape(3, 1, 1))
    pred = (target + torch.from_numpy(rng.normal(0, 1, target.shape)).float()).to(dtype)
    mask = torch.from_numpy(rng.random((b, cells[0], cells[1])) < 0.5)
    opts = dict(weight_patch_size=cell, threshold=threshold, density=density, channel_order=order, mean=mean, std=std,
                temperature=temperature)
    results = []
    for backend, device in (("triton", "cuda" if CUDA else "cpu"), ("torch", "cpu")):
        monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)
        p = pred.clone().to(device).requires_grad_()
        loss = weighted_mim_loss(p, target.to(device), mask.to(device), "fast", **opts)
        loss.backward()
        results.append((loss.detach().cpu(), p.grad.cpu()))
    (loss, grad), (want, want_grad) = results
    torch.testing.assert_close(loss, want, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(grad, want_grad, rtol=1e-6 if dtype == torch.float32 else 1e-2, atol=1e-7)


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``x`` (B, C, H, W) in another memory layout."""
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other column of a wider tensor
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x.contiguous()


@SETTINGS
@given(b=st.integers(1, 3), h=st.integers(1, 30), w=st.integers(1, 40), order=st.sampled_from(["rgb", "bgr"]),
       dtype=st.sampled_from([torch.uint8, torch.float32, torch.bfloat16, torch.float16]),
       layout=st.sampled_from(["contiguous", "channels_last", "strided"]), seed=st.integers(0, 2**32 - 1),
       backend=st.sampled_from(BACKENDS))
def test_gray_equals_opencv(b, h, w, order, dtype, layout, seed, backend, monkeypatch):
    """rgb_to_gray_u8 on any layout and dtype: uint8 equals cv2.cvtColor; float equals it on the values
    the float input encodes (the reference's un-normalisation, itself tied to cv2 in test_gray.py)."""
    from oracles import cv_gray

    from kamim_fast import rgb_to_gray_u8, rgb_to_gray_u8_ref

    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)
    rng = np.random.default_rng(seed)
    u8 = torch.from_numpy(rng.integers(0, 256, (b, 3, h, w), dtype=np.uint8))
    if dtype == torch.uint8:
        got = rgb_to_gray_u8(_layout(u8, layout), channel_order=order)
        want = torch.from_numpy(np.stack([cv_gray(img.permute(1, 2, 0).numpy(), order) for img in u8]))
    else:
        mean, std = (0.4, 0.45, 0.5), (0.3, 0.2, 0.25)  # distinct per channel
        x = ((u8.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)).to(dtype)
        got = rgb_to_gray_u8(_layout(x, layout), mean=mean, std=std, channel_order=order)
        want = rgb_to_gray_u8_ref(x, order == "bgr", mean, std)
        if dtype == torch.float32:  # float32 holds the uint8 exactly: OpenCV's gray of it
            want_cv = torch.from_numpy(np.stack([cv_gray(img.permute(1, 2, 0).numpy(), order) for img in u8]))
            assert torch.equal(got, want_cv)
    assert torch.equal(got, want)


@SETTINGS
@given(b=st.integers(1, 2), h=st.integers(7, 36), w=st.integers(7, 40), threshold=st.integers(0, 80),
       layout=st.sampled_from(["contiguous", "channels_last", "strided"]), seed=st.integers(0, 2**32 - 1),
       backend=st.sampled_from(BACKENDS))
def test_fast_on_colour_equals_fast_on_its_gray(b, h, w, threshold, layout, seed, backend, monkeypatch):
    """FAST on a colour batch (gray made inside the kernel: the op under patch_weights and the loss) equals
    FAST on rgb_to_gray_u8 of it, any layout."""
    from kamim_fast import rgb_to_gray_u8

    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)
    rng = np.random.default_rng(seed)
    u8 = torch.from_numpy((rng.integers(0, 4, (b, 3, h, w)) * 85).astype(np.uint8))  # plateaus: ties
    x = _layout((u8.float() / 255 - 0.5) / 0.25, layout)
    colour = torch.ops.kamim_fast.fast_corners(x, threshold, True, "rgb", [0.5] * 3, [0.25] * 3)
    for got, want in zip(colour, fast_corners(rgb_to_gray_u8(x, mean=0.5, std=0.25), threshold)):
        assert torch.equal(got, want)


@SETTINGS
@given(b=st.integers(1, 3), n=st.integers(1, 50), d=st.integers(1, 40), k=st.integers(0, 50),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]),
       view=st.sampled_from(["contiguous", "transposed", "sliced"]), seed=st.integers(0, 2**32 - 1),
       backend=st.sampled_from(["torch", "triton"]))
def test_gather_patches_equals_torch_gather(b, n, d, k, dtype, view, seed, backend, monkeypatch):
    """gather_patches on any float dtype and memory view equals torch.gather with an expanded index,
    forward and backward (distinct ids, as AMT's and MAE's are)."""
    from kamim_fast import gather_patches

    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)  # "triton" demands the compiled AMT extension
    g = torch.Generator().manual_seed(seed)
    k = min(k, n)
    base = torch.randn(b, n, d, generator=g).to(dtype)
    if view == "transposed":
        base = base.transpose(1, 2).contiguous().transpose(1, 2)
    elif view == "sliced":
        base = torch.cat([base, base], dim=2)[..., :d]
    ids = torch.argsort(torch.rand(b, n, generator=g), dim=1)[:, :k]
    up = torch.randn(b, k, d, generator=g).to(dtype)
    x1, x2 = base.clone().requires_grad_(), base.clone().requires_grad_()
    if view != "contiguous":  # keep the view's strides for the op under test
        x1 = base.detach().requires_grad_()
    got = gather_patches(x1, ids)
    want = torch.gather(x2, 1, ids.unsqueeze(-1).expand(-1, -1, d))
    assert torch.equal(got, want)
    got.backward(up)
    want.backward(up)
    assert torch.equal(x1.grad, x2.grad)


@SETTINGS
@given(b=st.integers(1, 3), n=st.integers(1, 70), d=st.integers(1, 20), mask_ratio=st.floats(0, 1),
       throw_share=st.floats(0, 1), zeros=st.booleans(), keep_thrown=st.booleans(), seed=st.integers(0, 2**32 - 1),
       backend=st.sampled_from(["torch", "triton"]))
def test_amt_selection_invariants_and_decoder_round_trip(b, n, d, mask_ratio, throw_share, zeros, keep_thrown, seed,
                                                         backend, monkeypatch):
    """amt_masking: ids_shuffle is a permutation, ids_restore its inverse, exact counts per image, the mask
    in the published encoding, ids_keep the visible patches; equal to the reference for the same noise.
    unshuffle_with_mask_token puts every visible token back at its own patch and the mask token elsewhere."""
    from kamim_fast import amt_masking, unshuffle_with_mask_token
    from kamim_fast.amt import amt_masking_ref

    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)  # "triton" demands the compiled AMT extension
    g = torch.Generator().manual_seed(seed)
    throw_ratio = (1 - mask_ratio) * throw_share
    weights = torch.rand(b, n, generator=g)
    if zeros:  # ties at zero weight, one positive entry kept per row
        weights[weights < 0.5] = 0.0
        weights[:, 0] = 1.0
    noise = torch.empty(b, n).exponential_(generator=g)
    m = amt_masking(weights, mask_ratio=mask_ratio, throw_ratio=throw_ratio, noise=noise)
    ref = amt_masking_ref(weights, noise, mask_ratio, throw_ratio)
    for got, want in zip(m[:4], ref[:4]):
        assert torch.equal(got, want)
    ar = torch.arange(n).expand(b, n)
    assert torch.equal(m.ids_shuffle.sort(1).values, ar)
    assert torch.equal(torch.gather(m.ids_shuffle, 1, m.ids_restore), ar)
    num_mask, num_throw = int(n * mask_ratio), int(n * throw_ratio)
    assert (m.mask == 1).sum(1).tolist() == [num_mask] * b and (m.mask == -1).sum(1).tolist() == [num_throw] * b
    assert torch.equal(torch.gather(m.mask, 1, m.ids_keep), torch.zeros_like(m.ids_keep, dtype=m.mask.dtype))
    ids = torch.arange(n, dtype=torch.float32).expand(b, n)
    visible = torch.gather(ids, 1, m.ids_keep).unsqueeze(-1).expand(-1, -1, d)  # each token holds its patch id
    out = unshuffle_with_mask_token(visible, torch.full((d,), -1.0), m, keep_thrown=keep_thrown)
    kept = torch.ones(b, n, dtype=torch.bool) if keep_thrown else m.mask != -1
    expected = torch.where(m.mask == 0, ids, -1.0)[kept].reshape(b, -1)
    assert torch.equal(out, expected.unsqueeze(-1).expand(-1, -1, d))
