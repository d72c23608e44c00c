"""kamim_fast.integrations.mae: MAE and MAE+AMT against the published models_mae.py (its transcription in
tests/published_amt_model.py, checked once against the real file), torch.compile without graph breaks,
checkpoints, timm ViTs, the attention refresh's entry point, and errors. DDP: tests/test_ddp_mae.py."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from conftest import assert_raises_naming
from published_amt_model import PublishedMAE, sincos_pos_embed

from kamim_fast import amt_masking, vit_class_attention, vit_class_attention_ref
from kamim_fast.amt import amt_counts
from kamim_fast.integrations import mae as kmae
from kamim_fast.integrations.mae import MaskedAutoencoderViT

timm = pytest.importorskip("timm")

SMALL = dict(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=24, decoder_depth=2, decoder_num_heads=2,
             mlp_ratio=2.0, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
# (img_size, patch_size): N = 16 and N = 64; both keep MAE's int(N / 4) + int(3N / 4) = N, which the published
# random branch needs (it makes int(N * 0.75) mask tokens whatever it kept)
SIZES = [(64, 16), (64, 8)]


def _pair(img_size, patch_size, norm_pix_loss, seed=0):
    torch.manual_seed(seed)
    ours = MaskedAutoencoderViT(img_size=img_size, patch_size=patch_size, norm_pix_loss=norm_pix_loss, **SMALL)
    for p in ours.parameters():  # away from the initialisation's zeros and ones, so every parameter matters
        if p.requires_grad:
            p.data.add_(torch.randn_like(p) * 0.05)
    theirs = PublishedMAE(img_size=img_size, patch_size=patch_size, norm_pix_loss=norm_pix_loss, **SMALL)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _assert_grads(got, want, exact, exact_except=("mask_token",)):
    assert got.keys() == want.keys()
    for n in want:
        if exact and n not in exact_except:
            assert torch.equal(got[n], want[n]), (n, float((got[n] - want[n]).abs().max()))
        else:  # a sum in another order: the mask token's positions; the patch projection as a Linear
            scale = float(want[n].abs().max())
            err = float((got[n] - want[n]).abs().max())
            assert err <= 1e-5 * scale, (n, err, scale)


def _assert_equal(got, want, exact):
    if exact:
        assert torch.equal(got, want), float((got - want).abs().max())
    else:
        # float rounding relative to the tensor's scale: elementwise, outputs near zero carry the rounding
        # of the larger values they were summed from
        got, want = got.detach(), want.detach()
        scale = float(want.abs().max())
        err = float((got - want).abs().max())
        assert got.shape == want.shape and err <= 1e-5 * scale, (err, scale)


@pytest.fixture(params=["kept", "all"])
def embed(request, monkeypatch):
    """``kept``: the model embeds the kept patches alone (a Linear on their pixels: equal up to rounding);
    ``all``: it embeds every patch with the Conv2d and keeps some, as MAE does (bitwise equal)."""
    if request.param == "all":
        monkeypatch.setattr(MaskedAutoencoderViT, "_linear_patch_embed", lambda self: False)
    return request.param


@pytest.mark.parametrize("img_size, patch_size", SIZES)
@pytest.mark.parametrize("norm_pix_loss", [False, True])
@pytest.mark.parametrize("pixel_map", [False, True])
def test_amt_equals_the_published_model(img_size, patch_size, norm_pix_loss, pixel_map, embed, rng):
    """Same parameters, same ids: the loss, the prediction, the mask and every gradient are the published
    model's, fp32; bitwise when every patch is embedded, except the mask token's gradient (a sum in another
    order); to float rounding when only the kept ones are (the default)."""
    exact = embed == "all"
    ours, theirs = _pair(img_size, patch_size, norm_pix_loss, seed=int(rng.integers(1 << 30)))
    B, N = 3, (img_size // patch_size) ** 2
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    images = torch.randn(B, 3, img_size, img_size, generator=g)
    if pixel_map:  # mae-AMT's dataset yields the map resized to the image, (B, 1, H, W) in [0, 1]
        weights = torch.rand(B, 1, img_size, img_size, generator=g)
        per_patch = theirs.per_patch_sum(weights)
    else:
        weights = torch.rand(B, N, generator=g) + 0.01
        per_patch = weights
    q = torch.empty(B, N).exponential_(generator=g)
    order = amt_masking(per_patch, noise=q).ids_shuffle  # the sampling order the model will draw from q
    loss, pred, mask = ours(images, weights, noise=q)
    loss.backward()
    want_loss, want_pred, want_mask = theirs(images, weights, 0.45, 0.4, amt=True, order=order)
    want_loss.backward()
    nm, nt = amt_counts(N, 0.45, 0.4, rounding="mae-amt")
    assert pred.shape == (B, N - nt, patch_size**2 * 3) and mask.shape == (B, N)
    assert (mask == 1).sum(1).tolist() == [nm] * B and (mask == -1).sum(1).tolist() == [nt] * B
    assert torch.equal(mask, want_mask)
    _assert_equal(pred, want_pred, exact)
    _assert_equal(loss, want_loss, exact)
    _assert_grads(_grads(ours), _grads(theirs), exact)


@pytest.mark.parametrize("img_size, patch_size", SIZES)
@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_mae_branch_equals_the_published_model(img_size, patch_size, norm_pix_loss, embed, rng):
    """Without weights: MAE's random masking at 0.75, as the published model runs before AMT starts; the same
    noise given, and the same seed (both draw torch.rand(B, N) first)."""
    ours, theirs = _pair(img_size, patch_size, norm_pix_loss, seed=int(rng.integers(1 << 30)))
    B, N = 2, (img_size // patch_size) ** 2
    images = torch.randn(B, 3, img_size, img_size)
    noise = torch.rand(B, N)
    loss, pred, mask = ours(images, noise=noise)
    loss.backward()
    want = theirs(images, amt=False, noise=noise)
    want[0].backward()
    exact = embed == "all"
    _assert_equal(loss, want[0], exact)
    _assert_equal(pred, want[1], exact)
    assert torch.equal(mask, want[2]) and mask.sum(1).tolist() == [N - N // 4] * B
    _assert_grads(_grads(ours), _grads(theirs), exact)
    seed = int(rng.integers(1 << 30))
    torch.manual_seed(seed)
    got = ours(images)[0]
    torch.manual_seed(seed)
    _assert_equal(got, theirs(images, amt=False)[0], exact)


def test_state_dict_is_the_published_models(rng):
    """The published checkpoints load as they are: the same keys, shapes and fixed position embeddings."""
    ours, theirs = _pair(64, 8, False)
    fresh = PublishedMAE(img_size=64, patch_size=8, **SMALL)
    a, b = ours.state_dict(), fresh.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert torch.equal(a["pos_embed"], b["pos_embed"]) and torch.equal(a["decoder_pos_embed"], b["decoder_pos_embed"])
    model = MaskedAutoencoderViT(img_size=64, patch_size=8, **SMALL)
    model.load_state_dict(theirs.state_dict())  # strict
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    for side, width in ((14, 768), (7, 64), (3, 8)):
        want = torch.from_numpy(sincos_pos_embed(width, side)).float()
        assert torch.equal(kmae.sincos_pos_embed(width, side), want)


def test_compile_fullgraph_forward_and_backward_equal_eager(rng):
    """No host synchronisation in a step: torch.compile(fullgraph=True) traces the whole MAE+AMT forward and
    backward (a graph break, e.g. from boolean indexing or .item(), would raise), with eager's values and
    gradients; MAE's branch too."""
    ours, _ = _pair(64, 8, True, seed=int(rng.integers(1 << 30)))
    B, N = 2, 64
    images = torch.randn(B, 3, 64, 64)
    weights = torch.rand(B, 1, 64, 64)
    q = torch.empty(B, N).exponential_()
    noise = torch.rand(B, N)

    def step(model, images, weights, q, noise):
        amt_loss, pred, mask = model(images, weights, noise=q)
        mae_loss, _, _ = model(images, noise=noise)
        (amt_loss + mae_loss).backward()
        return amt_loss.detach(), mae_loss.detach(), pred.detach(), mask

    eager = step(ours, images, weights, q, noise)
    want = _grads(ours)
    ours.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    got = step(compiled, images, weights, q, noise)
    for g, w in zip(got, eager):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)
    got_grads = _grads(ours)
    for n in want:
        torch.testing.assert_close(got_grads[n], want[n], rtol=1e-5, atol=1e-7, msg=n)
    # and noise drawn inside the graph (amt_masking's exponential_): the counts stay exact
    torch._dynamo.reset()
    _, _, mask = torch.compile(lambda m, x, w: m(x, w), fullgraph=True, backend="aot_eager")(ours, images, weights)
    assert (mask == -1).sum(1).tolist() == [amt_counts(N, rounding="mae-amt")[1]] * B


def test_amt_masks_follow_the_weights():
    """Masked patches lean toward high weights, visible ones toward low: the published partition."""
    model = MaskedAutoencoderViT(img_size=64, patch_size=8, **SMALL)
    B, N = 64, 64
    weights = torch.linspace(0.01, 1.0, N).expand(B, N)
    with torch.no_grad():
        _, _, mask = model(torch.randn(B, 3, 64, 64), weights, generator=torch.Generator().manual_seed(0))
    high, low = mask[:, N // 2:], mask[:, : N // 2]
    assert (high == 1).sum() > 2 * (low == 1).sum() and (low == 0).sum() > 2 * (high == 0).sum()


def test_from_vit_shares_the_encoder_and_equals_the_constructor(rng):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0,
                            embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
    model = MaskedAutoencoderViT.from_vit(vit, decoder_embed_dim=24, decoder_depth=2, decoder_num_heads=2,
                                          mlp_ratio=2.0)
    assert model.blocks is vit.blocks and model.patch_embed is vit.patch_embed
    assert not vit.pos_embed.requires_grad
    plain = MaskedAutoencoderViT(img_size=64, patch_size=16, **SMALL)
    plain.load_state_dict(model.state_dict())  # the same keys: the published layout
    images, weights, q = torch.randn(2, 3, 64, 64), torch.rand(2, 16), torch.empty(2, 16).exponential_()
    assert torch.equal(model(images, weights, noise=q)[0], plain(images, weights, noise=q)[0])
    # the trained encoder is the ViT: its features are the model's
    assert torch.equal(vit.forward_features(images), model.forward_features(images))


def test_vit_class_attention_runs_on_the_model():
    """The attention refresh's entry point takes the model as it takes a timm ViT."""
    model = MaskedAutoencoderViT(img_size=64, patch_size=16, **SMALL).eval()
    images = torch.randn(3, 3, 64, 64)
    got = vit_class_attention(model, images)
    assert got.shape == (3, 16)
    torch.testing.assert_close(got, vit_class_attention_ref(model, images), rtol=1e-5, atol=1e-6)
    loss, _, _ = model(images, got + 1e-6)
    assert torch.isfinite(loss)


def test_factories_are_the_published_sizes():
    model = kmae.mae_vit_base_patch16(img_size=32)
    assert (model.pos_embed.shape, len(model.blocks), len(model.decoder_blocks)) == ((1, 5, 768), 12, 8)
    assert model.decoder_blocks[0].attn.num_heads == 16 and model.norm.eps == 1e-6
    assert kmae.mae_vit_base_patch16_dec512d8b is kmae.mae_vit_base_patch16


def test_errors():
    model = MaskedAutoencoderViT(img_size=32, patch_size=8, **SMALL)
    x, w = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    cases = [
        (lambda: model(x, torch.rand(2, 15)), ValueError, ["weights", "(2, 16)", "(2, 4, 4)", "(2, 1, 32, 32)",
                                                           "(2, 15)"]),
        (lambda: model(x, torch.rand(3, 16)), ValueError, ["weights", "(3, 16)"]),
        (lambda: model(x, 0.75), TypeError, ["weights", "torch.Tensor", "float"]),
        (lambda: model(x, w.long()), TypeError, ["weights", "float", "int64"]),
        (lambda: model(x, w, 0.7, 0.4), ValueError, ["mask_ratio + throw_ratio", "0.7", "0.4"]),
        (lambda: model(x, w, 1.2), ValueError, ["mask_ratio", "[0, 1]", "1.2"]),
        (lambda: model(x, None, 0.5, 0.2), ValueError, ["throw_ratio", "weights"]),
        (lambda: model(x, noise=torch.rand(2, 15)), ValueError, ["noise", "(2, 16)", "(2, 15)"]),
        (lambda: model(x, w, noise=torch.rand(2, 16), generator=torch.Generator()), ValueError,
         ["noise", "generator"]),
        (lambda: model(torch.randn(2, 3, 48, 48)), ValueError, ["images", "(B, 3, 32, 32)", "(2, 3, 48, 48)"]),
        (lambda: model(x[0]), ValueError, ["images", "(B, C, H, W)"]),
        (lambda: MaskedAutoencoderViT.from_vit(torch.nn.Linear(2, 2)), TypeError, ["vit", "VisionTransformer",
                                                                                  "Linear"]),
        (lambda: MaskedAutoencoderViT.from_vit(timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, img_size=32, class_token=False, global_pool="avg")),
         ValueError, ["vit", "class token"]),
        (lambda: MaskedAutoencoderViT.from_vit(timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, img_size=32, reg_tokens=4)), ValueError,
         ["vit", "register tokens"]),
        (lambda: MaskedAutoencoderViT(img_size=30, patch_size=8), ValueError, ["patch_size", "30"]),
    ]
    for make, exc, words in cases:
        assert_raises_naming(make, exc, words)


def test_autocast_bf16_is_close_to_fp32(rng):
    """Under autocast (as the published trainers run) the step runs in bf16 where timm's blocks do, with the same
    masks: the loss within bf16's rounding of the fp32 loss, and gradients everywhere."""
    ours, theirs = _pair(64, 8, True, seed=int(rng.integers(1 << 30)))
    images, weights = torch.randn(2, 3, 64, 64), torch.rand(2, 64)
    q = torch.empty(2, 64).exponential_()
    fp32 = ours(images, weights, noise=q)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, pred, mask = ours(images, weights, noise=q)
        order = amt_masking(weights, noise=q).ids_shuffle
        want = theirs(images, weights, 0.45, 0.4, amt=True, order=order)[0]
    assert pred.dtype == torch.bfloat16 and loss.dtype == torch.float32 and mask.dtype == torch.float32
    torch.testing.assert_close(loss, fp32, rtol=3e-2, atol=0)
    torch.testing.assert_close(loss, want, rtol=3e-2, atol=0)
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in ours.parameters() if p.requires_grad)
