"""The integrations (SimMIM, Hugging Face, timm, the kornia pipeline), the CLI's show and bench, and the demo.

Oracles: a SimMIM model written the way Microsoft's ``models/simmim.py`` is (its own loss in forward),
Hugging Face's own ``outputs.loss``, and the published KAMIM pipeline of tests/published.py.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_raises_naming
from images import COLOUR_NAMES, crop, real_image, user_arrays
from published import normalise, published_keypoints, published_weights, simmim_loss
from torch import nn

from kamim_fast import IMAGENET_MEAN, IMAGENET_STD, KAMIM_PAPER, WeightedMIMLoss, weighted_mim_loss
from kamim_fast.cli import main
from kamim_fast.integrations.data import SimMIMAugment, simmim_mask
from kamim_fast.integrations.hf import HFMaskedImageModeling, hf_mim_loss
from kamim_fast.integrations.simmim import SimMIM
from kamim_fast.integrations.timm import TimmViTForSimMIM, simmim_vit

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _real_batch(rng, B: int, S: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tuple[np.ndarray, torch.Tensor]:
    """(B, S, S, 3) uint8 crops of the bundled colour photographs and their normalised (B, 3, S, S) tensor."""
    imgs = np.stack([crop(real_image(COLOUR_NAMES[i % len(COLOUR_NAMES)]), S, S, rng) for i in range(B)])
    mean = (mean,) * 3 if isinstance(mean, float) else mean
    std = (std,) * 3 if isinstance(std, float) else std
    return imgs, normalise(torch.from_numpy(imgs).permute(0, 3, 1, 2), mean, std)


def _seed(rng) -> int:
    seed = int(rng.integers(1 << 30))
    torch.manual_seed(seed)
    return seed


class MicrosoftStyleSimMIM(nn.Module):
    """SimMIM's model class as its models/simmim.py has it: 1x1 conv + PixelShuffle decoder, loss in forward."""

    def __init__(self, encoder: nn.Module, encoder_stride: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder_stride = encoder_stride
        self.decoder = nn.Sequential(nn.Conv2d(encoder.num_features, encoder_stride**2 * 3, kernel_size=1),
                                     nn.PixelShuffle(encoder_stride))
        self.in_chans = encoder.in_chans
        self.patch_size = encoder.patch_size

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x_rec = self.decoder(self.encoder(x, mask))
        return simmim_loss(x, x_rec, mask, self.patch_size)


def _assert_grads_close(got, want, rtol: float) -> None:
    """Parameter gradients agree to rtol, with an absolute floor of 1e-6 of the largest gradient: parameters
    whose exact gradient is 0 get rounding noise from either side's summation order."""
    scale = max(float(w.abs().max()) for w in want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=rtol, atol=1e-6 * scale)


def _tiny_encoder(S: int, patch: int = 16) -> TimmViTForSimMIM:
    return TimmViTForSimMIM.create(img_size=S, patch_size=patch, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


# --- SimMIM ----------------------------------------------------------------------------------------------------


def test_simmim_wrapper_without_weights_is_simmims_own_loss_and_gradient(rng):
    _seed(rng)
    _, x = _real_batch(rng, 3, 64)
    mask = simmim_mask(3, 64, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
    ref = MicrosoftStyleSimMIM(_tiny_encoder(64), 16)
    ours = SimMIM.from_model(ref, weights=None)
    assert ours.encoder is ref.encoder and ours.decoder is ref.decoder  # shared: same parameters
    assert ours.state_dict().keys() == ref.state_dict().keys()
    want = ref(x, mask)
    grads_want = torch.autograd.grad(want, list(ref.parameters()))
    got = ours(x, mask)
    grads_got = torch.autograd.grad(got, list(ref.parameters()))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    _assert_grads_close(grads_got, grads_want, rtol=1e-5)


def test_simmim_wrapper_with_paper_preset_is_the_published_kamim_loss(target, rng):
    """weights="fast" (default): the published pipeline's loss and gradient, on the fused kernel too."""
    device, backend = target
    _seed(rng)
    B = 2 if backend == "triton" else 4
    imgs, x = _real_batch(rng, B, 64)
    mask = simmim_mask(B, 64, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
    model = SimMIM(_tiny_encoder(64), 16, **KAMIM_PAPER)
    ref = copy.deepcopy(model)  # on the CPU, with the published loss
    model = model.to(device)
    loss = model(x.to(device), mask.to(device))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    want = simmim_loss(x, ref.reconstruct(x, mask), mask, 16, published_weights(imgs, 8, 0.25, channel_order="bgr"))
    grads_want = torch.autograd.grad(want, list(ref.parameters()))
    torch.testing.assert_close(loss.detach().cpu(), want.detach(), rtol=1e-5, atol=0)
    _assert_grads_close([g.cpu() for g in grads], grads_want, rtol=1e-4)


def test_simmim_loss_options_are_the_loss_options():
    """No hidden preset: the options given reach the loss, the rest are weighted_mim_loss's (KAMIM_DEFAULTS)."""
    model = SimMIM(_tiny_encoder(32), 16, temperature=0.5)
    assert model.criterion.kwargs == {"temperature": 0.5}
    assert SimMIM(_tiny_encoder(32), 16, **KAMIM_PAPER).criterion.kwargs == KAMIM_PAPER
    assert SimMIM(_tiny_encoder(32), 16, weights=None).criterion.kwargs == {}


def test_timm_encoder_mask_token_replaces_masked_patches(rng):
    """Masked patches' content does not reach the encoder; unmasked patches' does."""
    _seed(rng)
    enc = _tiny_encoder(64).eval()
    x = torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, 1, 2] = True
    y = x.clone()
    y[:, :, 16:32, 32:48] = torch.randn(2, 3, 16, 16)  # change only the masked patch
    torch.testing.assert_close(enc(x, mask), enc(y, mask), rtol=0, atol=0)
    assert not torch.allclose(enc(x, ~mask), enc(y, ~mask))


def test_timm_model_on_an_empty_batch(rng):
    """B = 0 (the last, empty shard of a dataset; a dry run): the encoder gives (0, D, h, w), the model a loss of 0.
    (Its backward stops in PyTorch's own PixelShuffle backward, whose pixel_unshuffle returns an empty input
    unchanged in shape: not the library's.)"""
    _seed(rng)
    enc = _tiny_encoder(64)
    out = enc(torch.zeros(0, 3, 64, 64), torch.zeros(0, 4, 4, dtype=torch.bool))
    assert out.shape == (0, enc.num_features, 4, 4)
    model = simmim_vit(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0)
    assert model(torch.zeros(0, 3, 64, 64), torch.zeros(0, 4, 4)).item() == 0.0


def test_few_optimiser_steps_reduce_the_kamim_loss_on_real_images(rng):
    _seed(rng)
    imgs, x = _real_batch(rng, 8, 64)
    mask = simmim_mask(8, 64, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
    model = simmim_vit(img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0,
                       loss_options=KAMIM_PAPER)
    with torch.no_grad():  # the value trained on is the published KAMIM loss of the model's reconstruction
        want = simmim_loss(x, model.reconstruct(x, mask), mask, 16, published_weights(imgs, 8, 0.25, channel_order="bgr"))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss = model(x, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[0] == pytest.approx(float(want), rel=1e-5, abs=0)
    assert losses[-1] < 0.9 * losses[0], losses


# --- Hugging Face -------------------------------------------------------------------------------------------------


def _hf_vit(S: int):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=S, patch_size=16, encoder_stride=16, num_channels=3, hidden_size=32,
                                 num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    return transformers.ViTForMaskedImageModeling(cfg)


def _hf_swin(S: int):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.SwinConfig(image_size=S, patch_size=4, num_channels=3, embed_dim=8, depths=[1, 1],
                                  num_heads=[1, 2], window_size=4, encoder_stride=8,
                                  drop_path_rate=0.0)  # deterministic: two forwards agree
    return transformers.SwinForMaskedImageModeling(cfg)


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_hf_without_weights_is_the_models_own_loss(arch, rng):
    _seed(rng)
    model = (_hf_vit if arch == "vit" else _hf_swin)(64)
    _, pixels = _real_batch(rng, 3, 64)
    p = model.config.patch_size
    pos = torch.from_numpy(rng.random((3, (64 // p) ** 2)) < 0.6)
    wrapped = HFMaskedImageModeling(model, weights=None)
    out = model(pixel_values=pixels, bool_masked_pos=pos)
    got = wrapped(pixels, pos)
    torch.testing.assert_close(got.loss, out.loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(hf_mim_loss(out.reconstruction, pixels, pos, None), out.loss, rtol=1e-6, atol=0)
    g_ours = torch.autograd.grad(got.loss, list(model.parameters()))
    g_hf = torch.autograd.grad(out.loss, list(model.parameters()))
    _assert_grads_close(g_ours, g_hf, rtol=1e-5)


@pytest.mark.parametrize("arch, mean, std", [("vit", 0.5, 0.5), ("swin", IMAGENET_MEAN, IMAGENET_STD)])
def test_hf_with_paper_preset_is_the_published_kamim_loss(arch, mean, std, rng):
    """The processor's mean/std reach the weights: ViT as ViTImageProcessor normalises (0.5), Swin as ImageNet."""
    _seed(rng)
    model = (_hf_vit if arch == "vit" else _hf_swin)(64)
    imgs, pixels = _real_batch(rng, 3, 64, mean, std)
    p = model.config.patch_size
    pos = torch.from_numpy(rng.random((3, (64 // p) ** 2)) < 0.6)
    out = HFMaskedImageModeling(model, mean=mean, std=std, **KAMIM_PAPER)(pixels, pos)
    rec = out.reconstruction.detach().requires_grad_()
    want = simmim_loss(pixels, rec, pos.reshape(3, 64 // p, 64 // p).int(), p,
                       published_weights(imgs, 8, 0.25, channel_order="bgr"))
    torch.testing.assert_close(out.loss.detach(), want.detach(), rtol=1e-5, atol=0)
    # and without the right statistics the weights differ: the test can tell
    wrong = hf_mim_loss(rec, pixels, pos, patch_size=p, mean=(0.2, 0.2, 0.2), std=(0.9, 0.9, 0.9))
    assert not torch.allclose(wrong, want, rtol=1e-5)  # the tolerance the equality above holds to


def test_hf_few_optimiser_steps_reduce_the_loss(rng):
    _seed(rng)
    model = HFMaskedImageModeling(_hf_vit(64), mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order="bgr")
    imgs, pixels = _real_batch(rng, 6, 64)
    pos = torch.from_numpy(rng.random((6, 16)) < 0.6)
    with torch.no_grad():  # the value trained on is the published KAMIM loss of the model's reconstruction
        out = model(pixels, pos)
        want = simmim_loss(pixels, out.reconstruction, pos.reshape(6, 4, 4).int(), 16,
                           published_weights(imgs, 8, 0.25, channel_order="bgr"))
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss = model(pixels, pos).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


# --- data pipeline ----------------------------------------------------------------------------------------------


def test_augment_without_randomness_is_normalisation(rng):
    """scale 1, ratio 1, no flips on a square image: the crop is the image; uint8 and float in agree."""
    imgs, want = _real_batch(rng, 3, 48)
    aug = SimMIMAugment(48, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False, vflip=False)
    u8 = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    torch.testing.assert_close(aug(u8), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(aug(u8.float() / 255), want, rtol=0, atol=1e-5)


def test_augment_flips_each_image_independently(rng):
    while True:  # a crop whose four flips differ (not a flat or symmetric patch), so each output tells its flips
        imgs, want = _real_batch(rng, 1, 32)
        variants = [want[0], want[0].flip(-1), want[0].flip(-2), want[0].flip(-1, -2)]
        if min((a - b).abs().max() for i, a in enumerate(variants) for b in variants[i + 1:]) > 0.1:
            break
    aug = SimMIMAugment(32, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    out = aug(torch.from_numpy(imgs).permute(0, 3, 1, 2).expand(64, -1, -1, -1).contiguous())
    seen = set()
    for o in out:
        hits = [k for k, v in enumerate(variants) if torch.allclose(o, v, atol=1e-5)]
        assert hits, "an output is not a flip of the input"
        seen.add(hits[0])
    assert seen == {0, 1, 2, 3}  # P(a variant missing) < 4 * 0.75**64 ~ 4e-8


def test_augment_crops_resize_and_stay_in_range(rng):
    _seed(rng)
    imgs = torch.from_numpy(np.stack([crop(real_image("coffee"), 120, 160, rng) for _ in range(4)])).permute(0, 3, 1, 2)
    out = SimMIMAugment((32, 64))(imgs)
    assert out.shape == (4, 3, 32, 64) and out.dtype == torch.float32
    lo = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    hi = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert (out >= lo.view(1, 3, 1, 1) - 1e-5).all() and (out <= hi.view(1, 3, 1, 1) + 1e-5).all()
    assert not torch.allclose(out[0], out[1])  # independent crops
    assert SimMIMAugment(16)(torch.zeros(0, 3, 20, 20, dtype=torch.uint8)).shape == (0, 3, 16, 16)


def test_simmim_mask_counts_blocks_and_reproducibility(rng):
    seed = int(rng.integers(1 << 30))
    mask = simmim_mask(500, 192, generator=torch.Generator().manual_seed(seed))
    assert mask.shape == (500, 12, 12) and mask.dtype == torch.bool
    cells = mask[:, ::2, ::2]  # 6x6 cells of 32 px, each 2x2 model patches
    assert torch.equal(mask, cells.repeat_interleave(2, 1).repeat_interleave(2, 2))
    assert (cells.sum((1, 2)) == 22).all()  # ceil(36 * 0.6)
    freq = cells.float().mean(0)  # every cell masked with probability 22/36
    assert (freq - 22 / 36).abs().max() < 0.1
    assert len({tuple(c.flatten().tolist()) for c in cells}) > 400  # images differ
    assert torch.equal(mask, simmim_mask(500, 192, generator=torch.Generator().manual_seed(seed)))
    swin = simmim_mask(2, (64, 96), model_patch_size=4, mask_ratio=0.5, generator=torch.Generator().manual_seed(seed))
    assert swin.shape == (2, 16, 24) and (swin.sum((1, 2)) == 3 * 64).all()


def test_pipeline_feeds_the_loss(rng):
    """uint8 -> augmentation -> mask -> model -> loss: the demo's path, shapes and a finite loss."""
    _seed(rng)
    imgs = torch.from_numpy(np.stack([crop(real_image(n), 128, 128, rng) for n in COLOUR_NAMES])).permute(0, 3, 1, 2)
    x = SimMIMAugment(64)(imgs)
    mask = simmim_mask(4, 64)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and mask.shape == (4, 4, 4)
    model = simmim_vit(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, loss_options=KAMIM_PAPER)
    loss = model(x, mask)
    # Its value: the published loss, with OpenCV's keypoints on the uint8 image x encodes, recovered as
    # REFERENCE.md says, v = round((x * std + mean) * 255) (float32, in this order)
    mean, std = (torch.tensor(v, dtype=torch.float32).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    u8 = torch.round((x * std + mean) * 255).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    with torch.no_grad():
        want = simmim_loss(x, model.reconstruct(x, mask), mask, 16, published_weights(u8, 8, 0.25, channel_order="bgr"))
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=0)


# --- command line and demo -----------------------------------------------------------------------------------


def _assert_png(path: Path, min_width: int) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = matplotlib.image.imread(str(path))
    assert img.ndim == 3 and img.shape[1] >= min_width and img.shape[0] > 50
    assert img[..., :3].std() > 0.05  # not blank
    return img


@pytest.mark.parametrize("kind", ["jpeg-odd-size", "gray-png", "rgba-png", "float-tiff"])
def test_show_writes_a_png_from_any_image_file(kind, tmp_path, rng, capsys):
    import skimage.io

    img = crop(real_image("chelsea"), 97, 131, rng)
    if kind == "jpeg-odd-size":
        path = tmp_path / "cat.jpg"
        skimage.io.imsave(path, img, check_contrast=False)
    elif kind == "gray-png":
        path = tmp_path / "cat.png"
        skimage.io.imsave(path, crop(real_image("camera"), 100, 70, rng), check_contrast=False)
    elif kind == "rgba-png":
        path = tmp_path / "cat.png"
        skimage.io.imsave(path, np.dstack([img, np.full(img.shape[:2], 128, np.uint8)]), check_contrast=False)
    else:
        path = tmp_path / "cat.tif"
        skimage.io.imsave(path, img.astype(np.float32) / 255, check_contrast=False)
    out = tmp_path / "sub" / "out.png"
    assert main(["show", str(path), "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    png = _assert_png(out, 500)
    assert 1 / 2.5 <= png.shape[1] / png.shape[0] <= 2.5  # a grid of panels (tests/test_show.py), not a strip


def test_show_takes_the_arrays_users_pass(tmp_path, rng, strict_from_numpy):
    """show() on an array: flipped views, crops, Fortran order, read-only arrays (np.asarray of a PIL image), in
    colour, gray and float: the same picture as on the contiguous copy, no warning; as_rgb_u8 hands torch a
    C-contiguous writable array equal to the copy's."""
    from kamim_fast.show import as_rgb_u8, show

    colour = crop(real_image("chelsea"), 64, 96, rng)
    arrays = {"colour": colour, "gray": crop(real_image("camera"), 64, 96, rng),
              "float": colour.astype(np.float32) / 255}
    for kind, img in arrays.items():
        want = as_rgb_u8(img.copy())
        forms = user_arrays(img)
        for name, form in forms.items():
            got = as_rgb_u8(form)
            assert np.array_equal(got, want) and got.flags.c_contiguous and got.flags.writeable, (kind, name)
    picture = _assert_png(show(colour.copy(), tmp_path / "copy.png"), 500)
    for name in ("flipped", "read-only-pil"):  # show() draws what as_rgb_u8 gives: two forms end to end
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            path = show(user_arrays(colour)[name], tmp_path / f"{name}.png")
        assert np.array_equal(_assert_png(path, 500), picture), name


def test_show_default_output_name(tmp_path):
    import skimage.io

    path = tmp_path / "coffee.png"
    skimage.io.imsave(path, real_image("coffee")[:64, :64], check_contrast=False)
    assert main(["show", str(path), "--threshold", "20", "--channel-order", "rgb"]) == 0
    _assert_png(tmp_path / "coffee_kamim.png", 500)


@pytest.mark.parametrize(
    "args, words",
    [
        (["show", "{tmp}/missing.png"], ["usage: kamim-fast show", "IMAGE", "missing.png", "does not exist"]),
        (["show", "{tmp}/notes.txt"], ["usage: kamim-fast show", "IMAGE must be an image file", "notes.txt"]),
        (["show", "{tmp}/tiny.png"], ["usage: kamim-fast show", "at least 32x32", "16x16"]),
        (["show", "{tmp}/tiny.png", "-o", "{tmp}/out.jpg"], ["usage: kamim-fast show", "-o/--out", ".png", "out.jpg"]),
        (["show", "{tmp}/big.png", "--threshold", "300"], ["usage: kamim-fast show", "--threshold must be in [0, 255]",
                                                           "300"]),
        (["show", "{tmp}/big.png", "--weight-patch-size", "12"], ["usage: kamim-fast show",
                                                                  "--weight-patch-size must divide 32, got 12"]),
        (["show", "{tmp}/big.png", "--temperature", "0"], ["usage: kamim-fast show", "--temperature must be"]),
        (["show", "{tmp}/big.png", "--max-side", "3"], ["usage: kamim-fast show", "--max-side must be in"]),
        (["demo", "--steps", "0"], ["usage: kamim-fast demo", "--steps must be >= 1, got 0"]),
        (["demo", "--batch-size", "0"], ["usage: kamim-fast demo", "--batch-size must be >= 1, got 0"]),
        (["demo", "--image", "download_all"], ["--image", "invalid choice", "download_all", "astronaut"]),
        (["demo", "--method", "simmim"], ["--method", "invalid choice", "simmim", "amt"]),
        (["frobnicate"], ["invalid choice", "frobnicate"]),
    ],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio's DICOM plugin, tried on the text file
def test_cli_bad_arguments_exit_with_clear_messages(args, words, tmp_path, capsys):
    import skimage.io

    (tmp_path / "notes.txt").write_text("not an image")
    skimage.io.imsave(tmp_path / "tiny.png", np.zeros((16, 16, 3), np.uint8), check_contrast=False)
    skimage.io.imsave(tmp_path / "big.png", real_image("coffee")[:64, :64], check_contrast=False)
    with pytest.raises(SystemExit) as info:
        main([a.format(tmp=tmp_path) for a in args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)
    # the flags, never the Python argument names behind them
    assert not any(name in err for name in ("weight_patch_size", "max_side", "mask_seed", "batch_size")), err


def test_bench_passes_its_arguments_to_the_benchmark_runner(monkeypatch):
    import benchmarks.__main__ as runner

    seen = []
    monkeypatch.setattr(runner, "main", lambda argv: seen.append(argv) or 7)
    assert main(["bench", "--quick", "--only", "fast", "--help"]) == 7
    root = Path(runner.__file__).resolve().parents[1]  # results go to the checkout, not the current folder
    assert seen == [["--quick", "--only", "fast", "--help", "--out", str(root / "benchmarks" / "results")]]
    assert main(["bench", "--out", "x"]) == 7 and seen[-1] == ["--out", "x"]


def test_bench_outside_a_checkout_says_what_it_needs(monkeypatch, tmp_path, capsys):
    import kamim_fast.cli

    monkeypatch.setattr(kamim_fast.cli, "checkout_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    for word in ("kamim_fast source checkout", "pip install -e", "Nothing was written"):
        assert word in err, (word, err)
    assert list(tmp_path.iterdir()) == []


def test_quick_demo_runs_end_to_end(tmp_path):
    """`make demo` in CI's reduced size: FAST vs OpenCV, show, training, the fused-vs-reference table, PNGs."""
    env = {**os.environ, "KAMIM_FAST_DEMO_QUICK": "1"}
    env.pop("TRITON_INTERPRET", None)  # as `make demo` runs it: the demo switches the interpreter on itself
    env.pop("KAMIM_FAST_BACKEND", None)
    proc = subprocess.run([sys.executable, "-m", "kamim_fast", "demo", "-o", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for words in ("identical", "quick mode", "12 steps", "loss curve", "relative difference",
                  "steps/s", "time per step: weights + loss", "time per step: optimiser"):
        assert words in out, (words, out)
    for name, width in (("fast_astronaut.png", 300), ("show_astronaut.png", 1000), ("loss_curve.png", 300)):
        _assert_png(tmp_path / name, width)
    # step 4: MAE, then MAE+AMT from the refreshed attention bank, their rates side by side
    assert "== 4. MAE + AMT pretraining" in out and "8 MAE steps then 8 MAE+AMT steps" in out, out
    rates = dict(re.findall(r"^\| (MAE|MAE\+AMT)\s+\|\s+([0-9.]+) \|", out, re.M))
    assert set(rates) == {"MAE", "MAE+AMT"} and all(float(v) > 0 for v in rates.values()), rates
    refreshes = int(re.search(r"; (\d+) bank refreshes", out).group(1))
    assert refreshes == 4, out  # before the AMT phase, then after its steps 2, 4 and 6
    # the values it reports: the fused path agrees with the reference, loss and gradient
    rel = float(re.search(r"relative difference\s*\|\s*([-+0-9.e]+)", out).group(1))
    diff, scale = map(float, re.search(r"gradient max \|difference\| \(max \|grad\|\)\s*\|\s*([-+0-9.e]+) \(([-+0-9.e]+)\)", out).groups())
    assert rel <= 1e-5 and diff <= 1e-5 * scale and scale > 0, (rel, diff, scale)


# --- argument checks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: SimMIM(nn.Linear(2, 2), 16), TypeError, ["encoder", "num_features", "Linear"]),
        (lambda: SimMIM(_tiny_encoder(32), 0), ValueError, ["encoder_stride", "[1,", "0"]),
        (lambda: SimMIM(_tiny_encoder(32), 16, weights="sift"), ValueError, ["weights", "fast", "sift"]),
        (lambda: SimMIM(_tiny_encoder(32), 16, temprature=1.0), TypeError, ["unknown keyword", "temprature"]),
        (lambda: SimMIM(_tiny_encoder(32), 16)(torch.zeros(2, 3, 32, 32), torch.zeros(2, 4, 4)), ValueError,
         ["mask", "(2, 2, 2)", "(2, 4, 4)"]),
        (lambda: SimMIM.from_model(nn.Linear(2, 2)), TypeError, ["SimMIM model", "Linear", "encoder"]),
        (lambda: TimmViTForSimMIM(nn.Linear(2, 2)), TypeError, ["vit", "VisionTransformer", "Linear"]),
        (lambda: HFMaskedImageModeling(nn.Linear(2, 2)), TypeError, ["config.patch_size", "Linear"]),
        (lambda: HFMaskedImageModeling(_hf_vit(32), weights=None)(torch.zeros(1, 3, 32, 32), None), TypeError,
         ["bool_masked_pos", "NoneType"]),
        (lambda: simmim_mask(2, 100), ValueError, ["input_size", "(100, 100)", "mask_patch_size=32"]),
        (lambda: simmim_mask(2, 64, model_patch_size=12), ValueError, ["mask_patch_size=32", "model_patch_size=12"]),
        (lambda: simmim_mask(2, 64, mask_ratio=1.5), ValueError, ["mask_ratio", "[0, 1]", "1.5"]),
        (lambda: simmim_mask(2, 64, mask_ratio="0.6"), TypeError, ["mask_ratio", "str"]),
        (lambda: simmim_mask(-1, 64), ValueError, ["batch_size", "-1"]),
        (lambda: simmim_mask(2, 64, generator=3), TypeError, ["generator", "torch.Generator", "int"]),
        (lambda: SimMIMAugment(0), ValueError, ["size", "0"]),
        (lambda: SimMIMAugment(32, scale=(0.9, 0.5)), ValueError, ["scale", "low <= high", "(0.9, 0.5)"]),
        (lambda: SimMIMAugment(32, std=(0.2, 0.0, 0.2)), ValueError, ["std", "positive"]),
        (lambda: SimMIMAugment(32)(torch.zeros(1, 4, 32, 32)), ValueError, ["images", "3 channels", "(1, 4, 32, 32)"]),
        (lambda: SimMIMAugment(32)(torch.zeros(1, 3, 32, 32, dtype=torch.int32)), TypeError, ["images", "uint8", "int32"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), torch.ones(1, 2, 2),
                                   normalize="world"), ValueError, ["normalize", "'local', 'global'", "'world'"]),
        (lambda: WeightedMIMLoss(normalize="batch"), ValueError, ["normalize", "'global'", "'batch'"]),
    ],
)
def test_bad_arguments_name_the_argument(make, exc, words):
    assert_raises_naming(make, exc, words)


def test_show_draws_the_published_values(tmp_path, rng, monkeypatch):
    """The show picture's panels hold OpenCV's keypoints, drawKeypoints' rings and the published weights."""
    import cv2
    import matplotlib.figure

    from kamim_fast.show import show

    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    img = crop(real_image("coffee"), 64, 96, rng)
    for y, x in zip(rng.integers(4, 60, 4), rng.integers(4, 92, 4)):  # black and white dots: corners in any crop
        img[y, x] = 255 * int(rng.integers(2))
    show(img, tmp_path / "out.png", temperature=0.5, channel_order="bgr")  # the published gray
    axes = figures[0].axes
    kps = cv2.FastFeatureDetector_create(10).detect(img)  # the published call: OpenCV converts with BGR2GRAY
    assert kps
    drawn = np.sign(cv2.drawKeypoints(np.zeros_like(img), kps, None, color=(255, 0, 0))[..., 0])
    assert sorted(map(tuple, axes[1].collections[0].get_offsets().astype(int).tolist())) == sorted(
        (int(k.pt[0]), int(k.pt[1])) for k in kps)
    np.testing.assert_array_equal(np.asarray(axes[2].images[0].get_array()), drawn)
    want = published_weights(img[None], 8, 0.5)[0].repeat_interleave(8, 0).repeat_interleave(8, 1).numpy()
    np.testing.assert_allclose(np.asarray(axes[3].images[0].get_array()), want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("detector", ["orb", "sift"])
def test_show_draws_the_published_orb_and_sift_values(detector, tmp_path, rng, monkeypatch):
    """With ``--detector orb|sift`` the panels hold OpenCV's keypoints and rings on the published gray, and
    the published weights of that detector."""
    import cv2
    import matplotlib.figure
    import skimage.io

    figures = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    img = crop(real_image("astronaut"), 128, 160, rng)
    path = tmp_path / "img.png"
    skimage.io.imsave(str(path), img, check_contrast=False)
    assert main(["show", str(path), "-o", str(tmp_path / "out.png"), "--detector", detector,
                 "--channel-order", "bgr", "--temperature", "0.5"]) == 0
    axes = figures[0].axes
    kps = published_keypoints(img, detector)  # the published call: OpenCV converts the array with BGR2GRAY
    assert kps
    drawn = np.sign(cv2.drawKeypoints(np.zeros_like(img), kps, None, color=(255, 0, 0))[..., 0])
    np.testing.assert_allclose(np.sort(axes[1].collections[0].get_offsets(), axis=0),
                               np.sort(np.array([k.pt for k in kps]), axis=0), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(axes[2].images[0].get_array()), drawn)
    want = published_weights(img[None], 8, 0.5, detector=detector)[0]
    want = want.repeat_interleave(8, 0).repeat_interleave(8, 1).numpy()
    np.testing.assert_allclose(np.asarray(axes[3].images[0].get_array()), want, rtol=1e-5, atol=0)
    assert detector.upper() in axes[1].get_title()
