"""Uniform argument rules and no silent result from bad input: numbers of any numeric type, one image where a
batch is taken, PIL images, the real rule in each message; bad loss weights raise, a soft mask is a feature."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from images import COLOUR_NAMES, crop, real_image
from published import normalise

from kamim_fast import (
    IMAGENET_MEAN, IMAGENET_STD, KAMIM_PAPER, KamimWeights, WeightedMIMLoss, amt_masking, fast_corners,
    patch_weights, rgb_to_gray_u8, weighted_mim_loss,
)
from kamim_fast.integrations.data import simmim_mask


def _photos(rng, B=2, S=32):
    imgs = np.stack([crop(real_image(COLOUR_NAMES[i % 4]), S, S, rng) for i in range(B)])
    u8 = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    return imgs, u8, normalise(u8, IMAGENET_MEAN, IMAGENET_STD)


# --- bad loss weights raise; a soft mask is a feature ----------------------------------------------------------


@pytest.mark.parametrize("bad, shown", [(-1.5, "-1.5"), (float("nan"), "NaN"), (float("inf"), "inf")])
def test_weights_that_are_negative_nan_or_inf_raise(rng, bad, shown):
    _, _, x = _photos(rng)
    pred = x + 0.1
    mask = torch.ones(2, 2, 2)
    w = torch.ones(2, 4, 4)
    weighted_mim_loss(pred, x, mask, w)  # fine
    w[1, 2, 3] = bad
    want = rf"weights must hold finite values >= 0 \(per-cell loss weights\), got {shown} at \(b, y, x\) = \(1, 2, 3\)"
    with pytest.raises(ValueError, match=want):
        weighted_mim_loss(pred, x, mask, w)
    with pytest.raises(ValueError, match=want):  # the differentiable path (a gradient for the weights)
        weighted_mim_loss(pred, x, mask, w.clone().requires_grad_())
    with pytest.raises(ValueError, match=want):  # the op's own check: every backend, a direct call too
        torch.ops.kamim_fast.weighted_mim_loss(pred, x, mask, w, 16, 8, 1e-5)
    w[1, 2, 3] = 0.0  # zero weights are allowed: a cell that does not count
    assert torch.isfinite(weighted_mim_loss(pred, x, mask, w))


def test_a_soft_mask_weighs_each_patch_by_its_value(rng):
    """SimMIM's formula with a float mask: sum(m * |d|) / (sum(m) + eps) / C, a weighted mean over the patches."""
    _, _, x = _photos(rng)
    pred = x + torch.from_numpy(rng.normal(0, 0.3, x.shape)).float()
    ones = torch.ones(2, 2, 2)
    torch.testing.assert_close(weighted_mim_loss(pred, x, 0.3 * ones), weighted_mim_loss(pred, x, ones),
                               rtol=1e-5, atol=0)
    soft = torch.from_numpy(rng.uniform(0, 1, (2, 2, 2))).float()
    m = soft.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, None]
    want = ((pred - x).abs() * m).sum() / (m.sum() * 1 + 1e-5) / 3
    torch.testing.assert_close(weighted_mim_loss(pred, x, soft), want, rtol=1e-5, atol=0)
    hard = (soft > 0.5).float()
    assert not torch.allclose(weighted_mim_loss(pred, x, soft), weighted_mim_loss(pred, x, hard))
    for bad, shown in ((float("nan"), "NaN"), (float("inf"), "inf")):
        soft[0, 1, 0] = bad
        with pytest.raises(ValueError, match=rf"mask must hold finite values >= 0 .*got {shown} at \(b, y, x\) = "
                                             rf"\(0, 1, 0\)"):
            weighted_mim_loss(pred, x, soft)
    soft[0, 1, 0] = -1.0  # AMT's thrown patches: count as 0
    weighted_mim_loss(pred, x, soft)


# --- numbers of any numeric type ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [float, np.float32, np.float64, lambda v: torch.tensor(v),
                                  lambda v: torch.tensor(v, dtype=torch.float64)],
                         ids=["float", "np.float32", "np.float64", "tensor", "tensor64"])
def test_temperature_and_eps_take_any_real_number(rng, make):
    _, u8, x = _photos(rng)
    t = 0.25 if make is not np.float32 else float(np.float32(0.25))  # 0.25 is exact in float32
    want = patch_weights(x, temperature=t)
    assert torch.equal(patch_weights(x, temperature=make(0.25)), want)
    assert torch.equal(KamimWeights(temperature=make(0.25))(x[0]), want[0])
    mask = torch.ones(2, 2, 2)
    loss = weighted_mim_loss(x + 0.1, x, mask, "fast", temperature=make(0.25), eps=make(0.5))
    assert torch.equal(loss, weighted_mim_loss(x + 0.1, x, mask, "fast", temperature=t, eps=0.5))
    assert torch.equal(WeightedMIMLoss("fast", temperature=make(0.25))(x + 0.1, x, mask),
                       weighted_mim_loss(x + 0.1, x, mask, "fast", temperature=t))
    # integers and NumPy integers are numbers too
    assert torch.equal(patch_weights(u8, temperature=np.int64(2)), patch_weights(u8, temperature=2.0))


def test_bools_are_not_numbers(rng):
    _, u8, _ = _photos(rng)
    for bad, name in ((True, "bool True"), (np.bool_(True), "bool np.True_"), (torch.tensor(True), "Tensor"),
                      (torch.ones(2), "Tensor"), ("0.25", "str")):
        with pytest.raises(TypeError, match=f"temperature must be a positive float, got {name}"):
            patch_weights(u8, temperature=bad)


def test_statistics_take_numpy_scalars_arrays_and_0d_tensors(rng):
    _, _, x = _photos(rng)
    want = rgb_to_gray_u8(x, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert torch.equal(rgb_to_gray_u8(x, mean=np.array(IMAGENET_MEAN), std=np.array(IMAGENET_STD, np.float32)),
                       rgb_to_gray_u8(x, mean=IMAGENET_MEAN, std=tuple(float(v) for v in np.float32(IMAGENET_STD))))
    assert torch.equal(rgb_to_gray_u8(x, mean=[np.float64(m) for m in IMAGENET_MEAN], std=IMAGENET_STD), want)
    half = normalise((x * 0).to(torch.uint8) + 100, (0.5,) * 3, (0.5,) * 3)
    want = rgb_to_gray_u8(half, mean=0.5, std=0.5)
    for v in (np.float32(0.5), np.float64(0.5), torch.tensor(0.5), np.array(0.5)):
        assert torch.equal(rgb_to_gray_u8(half, mean=v, std=v), want), type(v)


def test_amt_ratios_take_numpy_floats():
    w = torch.rand(2, 16) + 0.1
    noise = torch.rand(2, 16)
    a = amt_masking(w, mask_ratio=0.5, throw_ratio=0.25, noise=noise)
    b = amt_masking(w, mask_ratio=np.float32(0.5), throw_ratio=torch.tensor(0.25), noise=noise)
    assert torch.equal(a.mask, b.mask)
    g = torch.Generator()
    assert torch.equal(simmim_mask(2, 64, mask_ratio=np.float64(0.6), generator=g.manual_seed(0)),
                       simmim_mask(2, 64, mask_ratio=0.6, generator=g.manual_seed(0)))


# --- one image where a batch is taken; the real rule in each message ----------------------------------------------


def test_patch_weights_takes_one_image_like_rgb_to_gray_u8(rng):
    _, u8, x = _photos(rng)
    for images in (u8, x):
        want = patch_weights(images, **KAMIM_PAPER)
        got = patch_weights(images[1], **KAMIM_PAPER)
        assert got.shape == want.shape[1:] and torch.equal(got, want[1])
        assert torch.equal(rgb_to_gray_u8(images[1]) if images.dtype == torch.uint8 else
                           rgb_to_gray_u8(images[1], mean=IMAGENET_MEAN, std=IMAGENET_STD),
                           rgb_to_gray_u8(images, **({} if images.dtype == torch.uint8 else
                                                     dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)))[1])
    with pytest.raises(ValueError, match=r"images must have 3 or 4 dimensions \(B, 3, H, W\) or \(3, H, W\), got shape "
                                         r"\(32, 32\)"):
        patch_weights(u8[0, 0])


def test_fast_corners_states_its_real_rule_for_the_rank():
    with pytest.raises(ValueError, match=r"^gray must have 2 or 3 dimensions \(B, H, W\) or \(H, W\), got shape "
                                         r"\(1, 1, 1, 8, 8\)$"):
        fast_corners(torch.zeros(1, 1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"gray must have 2 or 3 dimensions .*got shape \(8,\)"):
        fast_corners(torch.zeros(8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="convert colour with rgb_to_gray_u8 first"):
        fast_corners(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# --- PIL images where images are taken, no leaked NumPy warning --------------------------------------------------


def test_pil_images_are_taken_where_images_are(rng):
    from PIL import Image

    imgs, u8, _ = _photos(rng)
    pil = Image.fromarray(imgs[0])
    want = KamimWeights(**KAMIM_PAPER)(imgs[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "The given NumPy array is not writable" from torch
        assert torch.equal(KamimWeights(**KAMIM_PAPER)(pil), want)
        assert torch.equal(KamimWeights(**KAMIM_PAPER)(np.asarray(pil)), want)  # a read-only array
        assert torch.equal(patch_weights(pil, **KAMIM_PAPER), want)
        assert torch.equal(rgb_to_gray_u8(pil), rgb_to_gray_u8(u8[0]))
    gray = Image.fromarray(imgs[0]).convert("L")  # L: the gray in three channels gives that gray
    g = torch.from_numpy(np.array(gray))
    assert torch.equal(rgb_to_gray_u8(gray), g)
    assert torch.equal(KamimWeights()(gray), patch_weights(g[None].expand(3, -1, -1)))
    with pytest.raises(ValueError, match=r"image must be an RGB or L \(gray\) PIL image, got mode 'RGBA': convert it "
                                         r"first, e.g. image.convert\('RGB'\)"):
        KamimWeights()(Image.fromarray(imgs[0]).convert("RGBA"))
