"""The user's path (issue 13): one set of defaults, loud traps, the HF wrapper's statistics, ORB/SIFT in the loss."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
from conftest import DEVICES
from images import COLOUR_NAMES, crop, real_image
from published import normalise, published_weights, simmim_loss

import kamim_fast.cli
import kamim_fast.show
from kamim_fast import (
    IMAGENET_MEAN, IMAGENET_STD, KAMIM_DEFAULTS, KAMIM_PAPER, KamimWeights, NormalizationWarning, WeightedMIMLoss,
    patch_weights, weighted_mim_loss,
)
from kamim_fast.integrations.data import simmim_mask
from kamim_fast.integrations.hf import HFMaskedImageModeling, hf_mim_loss, processor_stats
from kamim_fast.integrations.simmim import SimMIM
from kamim_fast.integrations.timm import TimmViTForSimMIM, simmim_vit
from kamim_fast.weights import _NORMALIZATION_CHECK


@pytest.fixture
def fresh_check():
    """The normalisation check warns once per process: start and leave it fresh."""
    _NORMALIZATION_CHECK.reset()
    yield _NORMALIZATION_CHECK
    _NORMALIZATION_CHECK.reset()


def _photos(rng, B=2, S=64, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    imgs = np.stack([crop(real_image(COLOUR_NAMES[i % 4]), S, S, rng) for i in range(B)])
    return imgs, normalise(torch.from_numpy(imgs).permute(0, 3, 1, 2), mean, std)


def _defaults(fn) -> dict:
    params = inspect.signature(fn).parameters.items()
    return {n: p.default for n, p in params if p.default is not inspect.Parameter.empty}


# --- one set of defaults -------------------------------------------------------------------------------------------


def test_every_entry_point_has_the_same_defaults(tmp_path, monkeypatch):
    assert KAMIM_PAPER == {**KAMIM_DEFAULTS, "channel_order": "bgr"}
    for fn in (patch_weights, weighted_mim_loss, KamimWeights.__init__):
        d = _defaults(fn)
        assert {k: d[k] for k in KAMIM_DEFAULTS} == dict(KAMIM_DEFAULTS), fn
        assert d["mean"] == IMAGENET_MEAN and d["std"] == IMAGENET_STD
    assert _defaults(patch_weights)["detector"] == _defaults(KamimWeights.__init__)["detector"] == "fast"
    show = _defaults(kamim_fast.show.show)
    assert {k: show[k] for k in ("threshold", "weight_patch_size", "temperature", "channel_order")} == \
        {k: KAMIM_DEFAULTS[k] for k in ("threshold", "weight_patch_size", "temperature", "channel_order")}
    # the modules and integrations add no preset of their own: their criterion holds only what was passed
    enc = TimmViTForSimMIM.create(img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2)
    assert WeightedMIMLoss().kwargs == {} and SimMIM(enc, 16).criterion.kwargs == {}
    assert simmim_vit(img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2).criterion.kwargs == {}
    # the CLI's show passes the same defaults
    seen = {}
    monkeypatch.setattr(kamim_fast.show, "show", lambda image, out, **kw: seen.update(kw) or out)
    (tmp_path / "x.png").write_bytes(b"")
    assert kamim_fast.cli.main(["show", str(tmp_path / "x.png")]) == 0
    assert {k: seen[k] for k in ("threshold", "weight_patch_size", "temperature", "channel_order")} == \
        {k: KAMIM_DEFAULTS[k] for k in ("threshold", "weight_patch_size", "temperature", "channel_order")}


def test_the_same_call_gives_the_same_loss_at_every_entry_point(rng):
    """weighted_mim_loss, WeightedMIMLoss, SimMIM's criterion and hf_mim_loss: equal with the same options."""
    _, x = _photos(rng, B=2, S=64)
    pred = x + torch.from_numpy(rng.normal(0, 0.3, x.shape)).float()
    mask = simmim_mask(2, 64, model_patch_size=16, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
    enc = TimmViTForSimMIM.create(img_size=64, patch_size=16, embed_dim=16, depth=1, num_heads=2)
    for options in ({}, KAMIM_PAPER):
        want = weighted_mim_loss(pred, x, mask, "fast", **options)
        assert torch.equal(WeightedMIMLoss("fast", **options)(pred, x, mask), want)
        assert torch.equal(SimMIM(enc, 16, **options).criterion(pred, x, mask), want)
        stats = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        assert torch.equal(hf_mim_loss(pred, x, mask.flatten(1), **stats, **options), want)
    paper = weighted_mim_loss(pred, x, mask, "fast", **KAMIM_PAPER)
    assert not torch.equal(weighted_mim_loss(pred, x, mask, "fast"), paper)


# --- loud traps ----------------------------------------------------------------------------------------------------


def test_swapped_pred_and_target_raise_naming_the_order(rng):
    _, x = _photos(rng, B=1, S=32)
    rec = torch.zeros_like(x, requires_grad=True)
    mask = torch.ones(1, 2, 2)
    with pytest.raises(ValueError, match=r"weighted_mim_loss\(pred, target, \.\.\.\).*l1_loss\(x, x_rec\)"):
        weighted_mim_loss(x, rec, mask, "fast")  # SimMIM's order
    with pytest.raises(ValueError, match="target requires grad and pred does not"):
        weighted_mim_loss(x, rec, mask)
    weighted_mim_loss(rec, x, mask, "fast").backward()  # the right order
    both = x.clone().requires_grad_()
    weighted_mim_loss(rec, both, mask)  # both differentiable: allowed (gradcheck does it)


def test_target_in_unit_range_with_imagenet_stats_warns_once(rng, fresh_check):
    imgs, x = _photos(rng)
    unit = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255  # ToTensor without Normalize
    mask = torch.ones(2, 4, 4)
    with pytest.warns(NormalizationWarning, match=r"all lie within \[0, 1\].*washed-out gray") as record:
        weighted_mim_loss(torch.zeros_like(unit), unit, mask, "fast")
    assert record[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weighted_mim_loss(torch.zeros_like(unit), unit, mask, "fast")  # once
        weighted_mim_loss(torch.zeros_like(unit), unit, mask, "fast", mean=0.0, std=1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_placeholders_and_fitting_targets_never_warn(device, rng, fresh_check):
    """The silent side of NormalizationWarning, at every entry point that checks (weighted_mim_loss with "fast",
    WeightedMIMLoss, patch_weights, KamimWeights on a float tensor, the SimMIM model): constant placeholders
    (torch.zeros and torch.ones as dummy batches, any constant: all within [0, 1] but no image), an empty
    batch, NaN, and photos normalised with the statistics given. Each is called twice with a synchronisation
    between, so that the CUDA check (read at a later call) is seen too; the check did run."""
    _, photos = _photos(rng, B=2, S=32)
    shape = (2, 3, 32, 32)
    targets = {"zeros": torch.zeros(shape), "ones": torch.ones(shape), "constant 0.3": torch.full(shape, 0.3),
               "constant -1.5": torch.full(shape, -1.5), "nan": torch.full(shape, float("nan")), "photos": photos,
               "empty": torch.zeros(0, 3, 32, 32)}
    model = simmim_vit(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0).to(device)
    for name, target in targets.items():
        t = target.to(device)
        mask = torch.ones(t.shape[0], 2, 2, device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(2):
                weighted_mim_loss(torch.zeros_like(t), t, mask, "fast")
                WeightedMIMLoss(weights="fast")(torch.zeros_like(t), t, mask)
                patch_weights(t)
                if len(t):
                    KamimWeights()(t[0])
                if name != "nan":
                    model(t, mask)
                if device == "cuda":
                    torch.cuda.synchronize()
        assert not fresh_check.warned and (fresh_check.checked > 0 or name == "empty"), name
        fresh_check.reset()


def test_constants_outside_the_normalised_range_still_warn(rng, fresh_check):
    """The other side: the exemption of constants covers the unnormalised-[0, 1] test only; a constant that no
    normalised uint8 image can hold (300, -50: e.g. a 0..255 placeholder) warns."""
    for value in (300.0, -50.0):
        t = torch.full((2, 3, 32, 32), value)
        with pytest.warns(NormalizationWarning, match="outside the range that normalising 0..255"):
            weighted_mim_loss(torch.zeros_like(t), t, torch.ones(2, 2, 2), "fast")
        fresh_check.reset()


def test_normalisation_check_cases(rng, fresh_check):
    imgs, x = _photos(rng)
    u8 = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        patch_weights(x)  # ImageNet-normalised photos with ImageNet's statistics: silent
        patch_weights(normalise(u8, (0.5,) * 3, (0.5,) * 3), mean=0.5, std=0.5)
        patch_weights(u8.float() / 255, mean=0.0, std=1.0)
        weighted_mim_loss(x, x, torch.ones(2, 4, 4))  # no weights: mean/std do not matter, nothing checked
    with pytest.warns(NormalizationWarning, match="outside the range that normalising 0..255"):
        patch_weights(u8.float())  # 0..255 floats
    fresh_check.reset()
    with pytest.warns(NormalizationWarning, match="outside the range"):
        KamimWeights(mean=0.5, std=0.5)(x[0])  # ImageNet-normalised, said to be 0.5/0.5
    fresh_check.reset()
    for _ in range(fresh_check.MAX_CHECKS):
        patch_weights(x)
    with warnings.catch_warnings():  # after MAX_CHECKS batches nothing more is checked (nor paid)
        warnings.simplefilter("error")
        patch_weights(u8.float())


def test_cuda_style_check_reads_its_result_later_without_waiting(rng, fresh_check):
    """The CUDA path's bookkeeping, with a stand-in event: nothing is read until query() is True."""

    class Event:
        done = False

        def query(self):
            return self.done

    event = Event()
    fresh_check.pending = (event, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]), "target", list(IMAGENET_MEAN),
                           list(IMAGENET_STD))
    _, x = _photos(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        patch_weights(x)
    assert fresh_check.pending is not None
    event.done = True
    with pytest.warns(NormalizationWarning, match=r"within \[0, 1\]"):
        patch_weights(x)
    assert fresh_check.pending is None and fresh_check.warned


def test_compiled_loss_skips_the_check(rng, fresh_check):
    imgs, _ = _photos(rng)
    unit = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    f = torch.compile(lambda p, t, m: weighted_mim_loss(p, t, m, "fast"), fullgraph=True, backend="aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NormalizationWarning)
        f(torch.zeros_like(unit), unit, torch.ones(2, 4, 4))
    assert fresh_check.checked == 0


# --- Hugging Face: the processor's statistics, never a guess -------------------------------------------------------


def test_hf_refuses_to_guess_the_statistics(rng):
    import transformers

    _, x = _photos(rng, B=2, S=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    pos = torch.from_numpy(rng.random((2, 4)) < 0.6)
    rec = torch.zeros_like(x)
    with pytest.raises(ValueError, match="needs the statistics pixel_values were normalised with"):
        hf_mim_loss(rec, x, pos)
    cfg = transformers.ViTConfig(image_size=32, patch_size=16, encoder_stride=16, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32)
    with pytest.raises(ValueError, match="processor=<the image processor>, or mean=... and std=..."):
        HFMaskedImageModeling(transformers.ViTForMaskedImageModeling(cfg))
    processor = transformers.ViTImageProcessor()
    with pytest.raises(ValueError, match="processor or mean/std, not both"):
        hf_mim_loss(rec, x, pos, processor=processor, mean=0.5, std=0.5)
    want = hf_mim_loss(rec, x, pos, mean=0.5, std=0.5)
    assert torch.equal(hf_mim_loss(rec, x, pos, processor=processor), want)
    model = HFMaskedImageModeling(transformers.ViTForMaskedImageModeling(cfg), processor=processor)
    assert model.criterion.kwargs["mean"] == (0.5,) * 3
    hf_mim_loss(rec, x, pos, None)  # the model's own loss needs no statistics


def test_processor_stats_follow_the_processor():
    import transformers

    assert processor_stats(transformers.ViTImageProcessor()) == ((0.5,) * 3, (0.5,) * 3)
    m, s = processor_stats(transformers.ViTImageProcessor(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD))
    np.testing.assert_allclose(m, IMAGENET_MEAN) and np.testing.assert_allclose(s, IMAGENET_STD)
    assert processor_stats(transformers.ViTImageProcessor(do_normalize=False)) == ((0.0,) * 3, (1.0,) * 3)
    m, s = processor_stats(transformers.ViTImageProcessor(do_rescale=False))  # x = (v - 0.5) / 0.5 on 0..255
    np.testing.assert_allclose(m, (0.5 / 255,) * 3) and np.testing.assert_allclose(s, (0.5 / 255,) * 3)
    # and they recover the uint8 image the processor saw
    img = (np.arange(32 * 32 * 3) % 256).astype(np.uint8).reshape(32, 32, 3)
    for kw in ({}, {"do_rescale": False}, {"do_normalize": False}):
        proc = transformers.ViTImageProcessor(do_resize=False, **kw)
        pix = torch.from_numpy(np.asarray(proc(img, return_tensors="np")["pixel_values"]))
        m, s = processor_stats(proc)
        v = torch.round((pix * torch.tensor(s).view(3, 1, 1) + torch.tensor(m).view(3, 1, 1)) * 255)
        assert torch.equal(v[0].permute(1, 2, 0).to(torch.uint8), torch.from_numpy(img)), kw
    with pytest.raises(TypeError, match="image_mean and image_std"):
        processor_stats(object())


# --- ORB and SIFT weights in the loss ------------------------------------------------------------------------------


@pytest.mark.parametrize("detector", ("orb", "sift"))
def test_orb_and_sift_weights_reach_the_loss_as_a_tensor(detector, rng):
    """The published loop with --detector orb|sift: weights from the dataset, the loss with them."""
    imgs, x = _photos(rng, B=3, S=64)
    w = torch.stack([KamimWeights(detector=detector, **KAMIM_PAPER)(im) for im in imgs])
    pred = (x + torch.from_numpy(rng.normal(0, 0.3, x.shape)).float()).requires_grad_()
    mask = simmim_mask(3, 64, model_patch_size=16, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
    loss = weighted_mim_loss(pred, x, mask, w)
    want = simmim_loss(x, pred, mask, 16, published_weights(imgs, 8, 0.25, detector=detector))
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match=rf"weights='{detector}' is not fused.*detector='{detector}'"):
        weighted_mim_loss(pred, x, mask, detector)
