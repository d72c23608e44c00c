"""AMT masking for Hugging Face ViTMAEForPreTraining through its ``noise`` argument (tiny configs, no downloads)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_raises_naming

from kamim_fast import amt_masking
from kamim_fast.integrations.hf import vitmae_amt_noise

transformers = pytest.importorskip("transformers")


def _model(mask_ratio, image_size=32, patch_size=8):
    cfg = transformers.ViTMAEConfig(image_size=image_size, patch_size=patch_size, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, decoder_hidden_size=16,
                                    decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                                    decoder_intermediate_size=32, mask_ratio=mask_ratio)
    return transformers.ViTMAEForPreTraining(cfg).eval()


@pytest.mark.parametrize("mask_ratio, image_size, patch_size", [(0.75, 32, 8), (0.75, 224, 16), (0.45, 64, 8),
                                                                  (0.45, 224, 16), (0.6, 48, 8)])
def test_the_model_masks_as_amt_masking(mask_ratio, image_size, patch_size, rng):
    """outputs.mask is amt_masking's mask (the same draw), and the encoder keeps its visible patches in
    ids_keep's order; the count is amt_masking's int(N * mask_ratio) where the model's rounding agrees."""
    model = _model(mask_ratio, image_size, patch_size)
    B, N = 3, (image_size // patch_size) ** 2
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    weights = torch.rand(B, N, generator=g) + 0.01
    q = torch.empty(B, N).exponential_(generator=g)
    noise = vitmae_amt_noise(weights, model, noise=q)
    with torch.no_grad():
        out = model(torch.randn(B, 3, image_size, image_size, generator=g), noise=noise)
    keep = int(N * (1 - mask_ratio))  # what ViTMAE keeps
    m = amt_masking(weights, noise=q, num_masked=N - keep, num_thrown=0)
    assert torch.equal(out.mask, m.masked.float())
    assert torch.equal(torch.argsort(noise, dim=1)[:, :keep], m.ids_keep)
    if N - keep == int(N * mask_ratio):  # the two roundings agree: amt_masking's own ratio gives the same mask
        plain = amt_masking(weights, mask_ratio=mask_ratio, throw_ratio=0.0, noise=q)
        assert torch.equal(out.mask, plain.masked.float())
    # the float or the config give the same noise
    assert torch.equal(noise, vitmae_amt_noise(weights, mask_ratio, noise=q))
    assert torch.equal(noise, vitmae_amt_noise(weights, model.config, noise=q))


def test_masks_follow_the_weights():
    model = _model(0.5)
    B, N = 200, 16
    weights = torch.linspace(0.01, 1.0, N).expand(B, N)
    noise = vitmae_amt_noise(weights, model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mask = model(torch.randn(B, 3, 32, 32), noise=noise).mask
    assert mask[:, N // 2:].sum() > 2 * mask[:, : N // 2].sum()


def test_errors():
    w = torch.rand(2, 16)
    cases = [
        (lambda: vitmae_amt_noise(w, "0.75"), TypeError, ["mask_ratio", "float", "str"]),
        (lambda: vitmae_amt_noise(w, 1.5), ValueError, ["mask_ratio", "[0, 1]", "1.5"]),
        (lambda: vitmae_amt_noise(w.long(), 0.75), TypeError, ["weights", "float", "int64"]),
        (lambda: vitmae_amt_noise(w[0], 0.75), ValueError, ["weights", "(B, N)"]),
        (lambda: vitmae_amt_noise(w, 0.75, noise=torch.rand(2, 15)), ValueError, ["noise", "(2, 16)", "(2, 15)"]),
    ]
    for make, exc, words in cases:
        assert_raises_naming(make, exc, words)
