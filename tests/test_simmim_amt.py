"""SimMIM-AMT through kamim_fast.integrations.simmim: masking and throwing on 32 px cells, thrown tokens removed from
the encoder by a gather with fixed counts; against the published SimMIM-AMT model (its transcription in
tests/published_amt_model.py), alone and with KAMIM's weights."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_raises_naming
from published import normalise
from published_amt_model import published_simmim_amt_codes, published_simmim_amt_counts, published_simmim_amt_loss

from kamim_fast import IMAGENET_MEAN, IMAGENET_STD, amt_cell_weights, amt_masking, weighted_mim_loss
from kamim_fast.integrations.simmim import amt_mask
from kamim_fast.integrations.timm import simmim_vit

pytest.importorskip("timm")

VIT = dict(patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
# (image size, mask ratio, throw ratio): the published configuration (7 x 7 cells, 22 masked, 13 thrown: 144 patches
# survive, the 12 x 12 the published model lays out), and 4 x 4 cells with 9 surviving (a 6 x 6 layout)
CONFIGS = [(224, 0.44, 0.26), (128, 0.44, 0.4)]


def _model(img_size, weights=None, seed=0):
    torch.manual_seed(seed)
    model = simmim_vit(img_size=img_size, weights=weights, **VIT)
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.02)
    return model


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_amt_mask_is_the_published_mask_generator(rng):
    """Cells ordered by the weights, ceil counts, codes repeated over each cell's 2 x 2 patches: the published
    maskgenerate for the same order; the AMTMask's ids are consistent at patch resolution."""
    B, h = 3, 14
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    weights = torch.rand(B, h, h, generator=g)
    q = torch.empty(B, 49).exponential_(generator=g)
    m = amt_mask(weights, noise=q)
    order = amt_masking(amt_cell_weights(weights, 2).reshape(B, 49), noise=q).ids_shuffle
    nm, nt = published_simmim_amt_counts(49)
    assert (nm, nt) == (22, 13) and (m.num_masked, m.num_thrown) == (4 * nm, 4 * nt)
    want = published_simmim_amt_codes(torch.zeros(B, 1, 224, 224), order, nm, nt)
    assert torch.equal(m.mask.reshape(B, h, h).long(), want)
    arange = torch.arange(h * h).expand(B, -1)
    assert torch.equal(m.ids_shuffle.sort(1).values, arange)
    assert torch.equal(torch.gather(m.ids_restore, 1, m.ids_shuffle), arange)
    assert torch.equal(torch.gather(m.mask, 1, m.ids_keep), torch.zeros_like(m.ids_keep, dtype=torch.int8))
    sorted_codes = torch.gather(m.mask, 1, m.ids_shuffle)
    assert bool((sorted_codes[:, : m.num_masked] == 1).all())
    assert bool((sorted_codes[:, m.num_masked:][:, : m.num_thrown] == -1).all())
    assert torch.equal(m.ids_unthrown, torch.stack([torch.nonzero(r != -1).flatten() for r in m.mask]))


@pytest.mark.parametrize("img_size, mask_ratio, throw_ratio", CONFIGS)
def test_loss_and_gradients_equal_the_published_model(img_size, mask_ratio, throw_ratio, rng):
    """weights=None: SimMIM-AMT's loss (its encoder drops thrown tokens by boolean indexing, its decoder
    reconstructs the survivors laid out as a square, the L1 counts masked pixels) and every gradient."""
    ours = _model(img_size, seed=int(rng.integers(1 << 30)))
    theirs = _model(img_size)
    theirs.load_state_dict(ours.state_dict())
    B, h = 2, img_size // 16
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    x = torch.randn(B, 3, img_size, img_size, generator=g)
    m = amt_mask(torch.rand(B, h, h, generator=g), mask_ratio=mask_ratio, throw_ratio=throw_ratio, generator=g)
    loss = ours(x, m)
    loss.backward()
    codes = m.mask.reshape(B, h, h).long()
    want = published_simmim_amt_loss(theirs.encoder.vit, theirs.encoder.mask_token, theirs.decoder, x, codes, 16)
    want.backward()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-7)
    got_g, want_g = _grads(ours), _grads(theirs)
    assert got_g.keys() == want_g.keys()
    for n in want_g:
        scale = float(want_g[n].abs().max())
        assert float((got_g[n] - want_g[n]).abs().max()) <= 1e-5 * scale + 1e-9, n


def test_thrown_tokens_never_reach_the_blocks():
    model = _model(224)
    m = amt_mask(torch.rand(2, 14, 14), generator=torch.Generator().manual_seed(0))
    seen = []
    handle = model.encoder.vit.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    model(torch.randn(2, 3, 224, 224), m)
    handle.remove()
    assert seen == [torch.Size([2, 1 + 196 - m.num_thrown, 32])]


def test_with_kamim_weights(rng):
    """weights="fast": KAMIM's weighted loss over the masked patches of the survivors' reconstruction (thrown
    patches count for nothing whatever they hold): the published model's reconstruction put back in place, and
    kamim_fast's loss on it."""
    ours = _model(224, weights="fast", seed=int(rng.integers(1 << 30)))
    B = 2
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    u8 = torch.randint(0, 256, (B, 3, 224, 224), dtype=torch.uint8, generator=g)
    x = normalise(u8, IMAGENET_MEAN, IMAGENET_STD)
    m = amt_mask(torch.rand(B, 14, 14, generator=g), generator=g)
    loss = ours(x, m)
    rec = ours.reconstruct(x, m)
    assert bool((rec.reshape(B, 3, 14, 16, 14, 16).permute(0, 2, 4, 1, 3, 5).reshape(B, 196, -1)[m.thrown] == 0).all())
    filled = torch.where(m.thrown.reshape(B, 1, 14, 1, 14, 1).expand(B, 3, 14, 16, 14, 16).reshape(B, 3, 224, 224),
                         torch.randn_like(x), rec)  # anything in the thrown patches
    want = weighted_mim_loss(filled, x, m.masked.reshape(B, 14, 14), "fast")
    torch.testing.assert_close(loss, want, rtol=1e-6, atol=0)
    # the reconstruction is the published model's, token for token
    plain = _model(224)
    plain.load_state_dict(ours.state_dict())
    torch.testing.assert_close(plain(x, m), weighted_mim_loss(rec, x, m.masked.reshape(B, 14, 14), None), rtol=1e-6,
                               atol=0)
    loss.backward()
    assert all(p.grad is not None for p in ours.parameters())


def test_compile_fullgraph_equals_eager(rng):
    model = _model(128)
    x = torch.randn(2, 3, 128, 128)
    w, q = torch.rand(2, 8, 8), torch.empty(2, 16).exponential_()

    def loss_of(model, x, w, q):  # the mask drawn and the thrown tokens removed inside the graph
        return model(x, amt_mask(w, mask_ratio=0.44, throw_ratio=0.4, noise=q))

    eager = loss_of(model, x, w, q)
    eager.backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    got = torch.compile(loss_of, fullgraph=True, backend="aot_eager")(model, x, w, q)
    got.backward()  # AOT autograd's backward graph
    torch.testing.assert_close(got, eager, rtol=1e-6, atol=0)
    for n, gr in _grads(model).items():
        torch.testing.assert_close(gr, want[n], rtol=1e-5, atol=1e-7, msg=n)


def test_errors():
    model = _model(64)
    x = torch.randn(2, 3, 64, 64)
    cases = [
        (lambda: amt_mask(torch.rand(2, 16)), ValueError, ["weights", "(B, h, w)"]),
        (lambda: amt_mask(torch.rand(2, 4, 4), cell=3), ValueError, ["cell", "3"]),
        (lambda: amt_mask(torch.rand(2, 4, 4), mask_ratio=0.7, throw_ratio=0.5), ValueError,
         ["mask_ratio + throw_ratio", "0.7", "0.5"]),
        (lambda: amt_mask(torch.rand(2, 4, 4), rounding="round"), ValueError, ["rounding", "ceil", "round"]),
        (lambda: model(x, amt_mask(torch.rand(2, 8, 8))), ValueError, ["mask", "AMTMask", "(2, 16)", "(2, 64)"]),
        (lambda: model(x, amt_mask(torch.rand(3, 4, 4))), ValueError, ["mask", "(2, 16)", "(3, 16)"]),
    ]
    for make, exc, words in cases:
        assert_raises_naming(make, exc, words)
