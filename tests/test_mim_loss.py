"""The weighted masked L1 loss against SimMIM's, Hugging Face's and the published KAMIM formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CUDA, INTERPRETER, assert_raises_naming, reference_backend
from images import crop, real_image
from published import normalise, published_weights, simmim_loss

from kamim_fast import (
    IMAGENET_MEAN, IMAGENET_STD, KAMIM_PAPER, WeightedMIMLoss, patch_weights, weighted_mim_loss, weighted_mim_loss_ref,
)


def _batch(rng, B=2, H=192, W=192, names=("astronaut", "coffee", "chelsea", "rocket")):
    imgs = np.stack([crop(real_image(names[i % len(names)]), H, W, rng) for i in range(B)])
    target = normalise(torch.from_numpy(imgs).permute(0, 3, 1, 2), IMAGENET_MEAN, IMAGENET_STD)
    pred = target + torch.from_numpy(rng.normal(0, 0.5, target.shape)).float()
    cells = torch.from_numpy(rng.random((B, H // 32, W // 32)) < 0.6)
    cells[:, 0, 0] = True  # never an unmasked image: small batches would give a zero loss now and then
    mask = cells.repeat_interleave(2, 1).repeat_interleave(2, 2)
    return imgs, pred, target, mask.int()  # mask at model patch 16


def test_no_weights_is_simmim(rng):
    _, pred, target, mask = _batch(rng)
    torch.testing.assert_close(weighted_mim_loss(pred, target, mask), simmim_loss(target, pred, mask, 16), rtol=1e-6, atol=0)


def test_paper_preset_equals_the_published_loss_and_gradient(target, rng):
    """weights="fast" with KAMIM_PAPER equals OpenCV FAST + drawKeypoints + conv2d pooling + exp/min + SimMIM."""
    device, backend = target
    imgs, pred, tgt, mask = _batch(rng, B=1 if backend == "triton" and device == "cpu" else 3)
    p_ours = pred.clone().to(device).requires_grad_()
    loss = weighted_mim_loss(p_ours, tgt.to(device), mask.to(device), "fast", **KAMIM_PAPER)
    loss.backward()
    p_ref = pred.clone().requires_grad_()
    want = simmim_loss(tgt, p_ref, mask, 16, published_weights(imgs, 8, 0.25, channel_order="bgr"))
    want.backward()
    torch.testing.assert_close(loss.detach().cpu(), want.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(p_ours.grad.cpu(), p_ref.grad, rtol=1e-5, atol=1e-12)


def test_mask_forms_agree(rng):
    """SimMIM (B,h,w), Hugging Face (B,N) bool, pixel (B,1,H,W) float and AMT int8 (-1 thrown) masks."""
    _, pred, target, mask = _batch(rng, H=64, W=96)
    w = torch.from_numpy(rng.uniform(1, 3, (2, 8, 12))).float()
    mask[0, -2:, -2:] = 0  # one unmasked cell at least: all 12 cells masked happen in 0.6% of draws
    want = weighted_mim_loss(pred, target, mask, w)
    pixel = mask.repeat_interleave(16, 1).repeat_interleave(16, 2).unsqueeze(1).float()
    amt = mask.to(torch.int8) - torch.from_numpy(rng.random(mask.shape) < 0.5).to(torch.int8) * (1 - mask.to(torch.int8))
    amt[0, -1, -1] = -1  # and one thrown patch
    for form in (mask.bool().flatten(1), pixel, amt, mask.float()):
        torch.testing.assert_close(weighted_mim_loss(pred, target, form, w), want, rtol=1e-6, atol=0)
    torch.testing.assert_close(weighted_mim_loss(pred, target, mask.flatten(1), w, patch_size=16), want, rtol=1e-6, atol=0)


def test_hugging_face_loss():  # torch's generator: seeded and printed by conftest's _seed
    """weights=None equals ViTForMaskedImageModeling's own loss from reconstruction and bool_masked_pos."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, encoder_stride=8)
    model = transformers.ViTForMaskedImageModeling(cfg).eval()
    pixels = torch.randn(3, 3, 32, 32)
    bool_masked_pos = torch.rand(3, 16) < 0.5
    out = model(pixel_values=pixels, bool_masked_pos=bool_masked_pos)
    ours = weighted_mim_loss(out.reconstruction, pixels, bool_masked_pos)
    torch.testing.assert_close(ours, out.loss, rtol=1e-6, atol=0)


def test_bf16_pred_under_autocast_semantics(target, rng):
    """bf16 pred with fp32 target (the kernel on the triton backends): computed in fp32 like SimMIM's l1_loss,
    equal to the published loss of the fp32 copy of pred; the gradient is its gradient, rounded to bf16."""
    device, _ = target
    imgs, pred, tgt, mask = _batch(rng, B=2, H=32, W=64)
    p16 = pred.bfloat16().to(device).requires_grad_()
    loss = weighted_mim_loss(p16, tgt.to(device), mask.to(device), "fast", **KAMIM_PAPER)
    loss.backward()
    assert loss.dtype == torch.float32 and p16.grad.dtype == torch.bfloat16
    p32 = p16.detach().cpu().float().requires_grad_()
    want = simmim_loss(tgt, p32, mask, 16, published_weights(imgs, 8, 0.25, channel_order="bgr"))
    want.backward()
    torch.testing.assert_close(loss.detach().cpu(), want.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(p16.grad.cpu(), p32.grad.bfloat16(), rtol=1e-2, atol=0)
    assert p16.grad.cpu().any()


def _assert_rounded_once(got: torch.Tensor, exact: torch.Tensor, what: str) -> None:
    """``got`` (half precision) is ``exact`` (float64) computed in float32 and rounded once to got's dtype: within
    half an ulp of the dtype plus float32's few roundings. A value computed in the storage dtype (a factor
    rounded to it first) is off by up to an ulp and more at many elements."""
    dtype = got.dtype
    got = got.detach().cpu().double()
    mag = exact.abs().clamp_min(torch.finfo(dtype).tiny)
    info = torch.finfo(dtype)
    ulp = (info.eps * torch.exp2(torch.floor(torch.log2(mag)))).clamp_min(info.tiny * info.eps)  # dtype's spacing
    bound = ulp / 2 + 4 * torch.finfo(torch.float32).eps * exact.abs()
    err = (got - exact).abs()
    bad = err > bound
    if bad.any():
        i = int((err / bound).flatten().argmax())
        raise AssertionError(f"{what}: {int(bad.sum())} of {got.numel()} values are not the float64 value rounded once "
                             f"to {dtype}; worst: got {got.flatten()[i].item()!r}, exact {exact.flatten()[i].item()!r}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("weights", [None, "tensor", "fast"])
def test_half_pred_loss_and_gradient_against_float64(dtype, weights, target, rng):
    """pred in bfloat16 / float16: the loss is the float64 formula on pred's values (a float32 reduction, not
    the storage dtype's), and each gradient element is the float64 value rounded once to pred's dtype (the
    target's too, in the target's half dtype)."""
    device, _ = target
    imgs, pred, tgt, mask = _batch(rng, B=2, H=32, W=64)
    p = pred.to(dtype).to(device).requires_grad_()
    t = tgt.to(dtype).to(device).requires_grad_()
    w = torch.from_numpy(rng.uniform(1, 5, (2, 4, 8))).float() if weights == "tensor" else None
    if weights == "fast":
        with reference_backend():
            w = patch_weights(tgt.to(dtype), weight_patch_size=8)  # the fused kernel's weights (a test checks it)
    loss = weighted_mim_loss(p, t, mask.to(device), w.to(device) if weights == "tensor" else weights)
    loss.backward()
    p64, t64 = p.detach().cpu().double(), t.detach().cpu().double()
    m = mask.double().repeat_interleave(16, 1).repeat_interleave(16, 2).unsqueeze(1)
    cw = torch.ones_like(m) if w is None else w.double().repeat_interleave(8, 1).repeat_interleave(8, 2).unsqueeze(1)
    scale = 1 / (m.sum() + 1e-5) / 3
    want = (cw * m * (p64 - t64).abs()).sum() * scale
    torch.testing.assert_close(loss.detach().cpu().double(), want, rtol=2e-5, atol=0)
    grad = scale * cw * m * torch.sign(p64 - t64)
    _assert_rounded_once(p.grad, grad, f"grad pred {dtype} weights={weights}")
    _assert_rounded_once(t.grad, -grad, f"grad target {dtype} weights={weights}")


def test_gradcheck_float64(rng):
    _, pred, target, mask = _batch(rng, B=1, H=32, W=32)
    w = torch.from_numpy(rng.uniform(1, 3, (1, 4, 4)))
    pred = pred.double().requires_grad_()
    target = target.double().requires_grad_()
    w.requires_grad_()
    assert torch.autograd.gradcheck(lambda p, t, ww: weighted_mim_loss(p, t, mask, ww), (pred, target, w))


def test_empty_masks_and_flat_images(target, rng):
    device, _ = target
    _, pred, tgt, mask = _batch(rng, H=32, W=32)
    p = pred.to(device).requires_grad_()
    loss = weighted_mim_loss(p, tgt.to(device), torch.zeros_like(mask).to(device), "fast")
    loss.backward()
    assert loss.item() == 0.0 and not p.grad.isnan().any() and not p.grad.any()
    flat = torch.zeros(2, 3, 32, 32)  # uniform image: no keypoints, weight 1 everywhere
    torch.testing.assert_close(weighted_mim_loss(pred.to(device), flat.to(device), mask.to(device), "fast"),
                               weighted_mim_loss(pred.to(device), flat.to(device), mask.to(device)), rtol=1e-6, atol=0)


def test_module_twin_and_compile(target, rng):
    """WeightedMIMLoss and aot_eager-compiled fullgraph calls (the kernel on the triton backends) equal the
    published loss and gradient."""
    device, _ = target
    imgs, pred, tgt, mask = _batch(rng, H=32, W=64)
    pred, tgt, mask_d = pred.to(device), tgt.to(device), mask.to(device)
    criterion = WeightedMIMLoss(weights="fast", **KAMIM_PAPER)
    assert "temperature=0.25" in repr(criterion)
    p_ref = pred.detach().cpu().clone().requires_grad_()
    want = simmim_loss(tgt.cpu(), p_ref, mask, 16, published_weights(imgs, 8, 0.25, channel_order="bgr"))
    want.backward()
    torch.testing.assert_close(criterion(pred, tgt, mask_d).cpu(), want.detach(), rtol=1e-5, atol=0)
    torch._dynamo.reset()
    compiled = torch.compile(lambda p, t, m: weighted_mim_loss(p, t, m, "fast", **KAMIM_PAPER), fullgraph=True, backend="aot_eager")
    p1 = pred.clone().requires_grad_()
    got = compiled(p1, tgt, mask_d)
    got.backward()
    torch.testing.assert_close(got.detach().cpu(), want.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(p1.grad.cpu(), p_ref.grad, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 16), torch.ones(1, 2, 2)), ValueError, ["pred", "target", "(1, 3, 32, 16)"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 5)), ValueError, ["mask", "(1, 3, 5)"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), torch.ones(1, 15)), ValueError, ["N=15"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), torch.ones(2, 2, 2)), ValueError, ["mask", "batch size 1"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), torch.ones(1, 2, 2), patch_size=8), ValueError, ["patch size 16", "patch_size=8"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32), torch.ones(1, 2, 2), "fast"), ValueError, ["C = 3", "(1, 1, 32, 32)"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), torch.ones(1, 2, 2), "fast", temperature=0), ValueError, ["temperature", "0"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 36, 36), torch.zeros(1, 3, 36, 36), torch.ones(1, 3, 3), "fast"), ValueError, ["height 36", "weight_patch_size=8"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), torch.ones(1, 2, 2), torch.ones(1, 3, 3)), ValueError, ["weights", "(1, 3, 3)"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32), torch.ones(1, 2, 2), "sift"), ValueError, ["weights", "'sift'"]),
        (lambda: weighted_mim_loss(torch.zeros(1, 3, 32, 32, dtype=torch.int32), torch.zeros(1, 3, 32, 32), torch.ones(1, 2, 2)), TypeError, ["pred", "int32"]),
        (lambda: WeightedMIMLoss(tempreature=1.0), TypeError, ["tempreature"]),
    ],
)
def test_bad_input_is_named(make, exc, words):
    assert_raises_naming(make, exc, words)


def test_reference_is_the_formula(rng):
    """weighted_mim_loss_ref written out by hand on a tiny case."""
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.zeros_like(pred)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    w = torch.tensor([[[2.0]]])
    expected = (2 * 1 + 2 * 3 + 2 * 4) / (3 + 1e-5) / 1
    assert abs(weighted_mim_loss_ref(pred, target, mask, w).item() - expected) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_op_equals_the_reference_with_gradients(dtype, target, rng):
    """kamim_fast::weighted_mim_loss (kernel on the triton backends) vs the differentiable reference."""
    device, _ = target
    B, C, H, W = 2, 3, 48, 80
    tgt = torch.from_numpy(rng.normal(0, 1, (B, C, H, W))).float()
    pred = (tgt + torch.from_numpy(rng.normal(0, 0.7, (B, C, H, W))).float()).to(dtype)
    tgt[0, 0, 0, :5] = pred[0, 0, 0, :5].float()  # exact ties: sign 0, as torch's abs backward
    forms = {
        "simmim": torch.from_numpy(rng.random((B, 3, 5)) < 0.6).int(),
        "hf": torch.from_numpy(rng.random((B, 15)) < 0.6),
        "pixel": torch.from_numpy(rng.random((B, 1, H, W))).float().round(),
        "amt": torch.from_numpy(rng.integers(-1, 2, (B, 6, 10))).to(torch.int8),
    }
    for name, mask in forms.items():
        for weights in (None, torch.from_numpy(rng.uniform(1, 5, (B, 6, 10))).float()):
            for channels_last in (False, True):
                p1 = pred.clone().to(device)
                if channels_last:
                    p1 = p1.to(memory_format=torch.channels_last)
                p1.requires_grad_()
                t1 = tgt.clone().to(device).requires_grad_()
                w1 = None if weights is None else weights.to(device)
                loss = weighted_mim_loss(p1, t1, mask.to(device), w1)
                loss.backward()
                p2, t2 = pred.clone().requires_grad_(), tgt.clone().requires_grad_()
                w2 = None if weights is None else weights.clone().requires_grad_()  # forces the reference path
                with reference_backend():
                    want = weighted_mim_loss(p2, t2, mask, w2) if w2 is not None else weighted_mim_loss_ref(
                        p2, t2, _pixel(mask, (B, C, H, W)), None)
                want.backward()
                where = f"{name} weights={weights is not None} channels_last={channels_last}"
                torch.testing.assert_close(loss.detach().cpu(), want.detach(), rtol=2e-6, atol=0, msg=where)
                torch.testing.assert_close(p1.grad.cpu(), p2.grad, rtol=1e-6 if dtype == torch.float32 else 1e-2, atol=0, msg=where)
                torch.testing.assert_close(t1.grad.cpu(), t2.grad, rtol=1e-6, atol=0, msg=where)
                assert p1.grad.dtype == dtype and (p1.grad.cpu()[0, 0, 0, :5] == 0).all(), where


def _pixel(mask, shape):
    from kamim_fast.mim_loss import expand_cells, mask_grid

    grid, p = mask_grid(mask, torch.Size(shape), None)
    return expand_cells(grid, p)


def test_op_determinism(target, rng):
    """Repeated calls give the same loss, bit for bit (opcheck of the loss ops: tests/test_conformance.py)."""
    device, _ = target
    pred = torch.from_numpy(rng.normal(0, 1, (2, 3, 48, 48))).float().to(device)
    tgt = torch.from_numpy(rng.normal(0, 1, (2, 3, 48, 48))).float().to(device)
    grid = torch.from_numpy(rng.random((2, 3, 3)) < 0.5).float().to(device)
    weights = torch.from_numpy(rng.uniform(1, 3, (2, 6, 6))).float().to(device)
    first = weighted_mim_loss(pred.detach(), tgt, grid, weights)
    for _ in range(3):
        assert torch.equal(weighted_mim_loss(pred.detach(), tgt, grid, weights), first)


# --- The fused kernel (kamim_fast/kernels/mim_loss.py) against the references, stage by stage --------------------

def _photos(rng, B, H, W):
    from kamim_fast.gray import rgb_to_gray_u8_ref

    imgs = np.stack([crop(real_image(("astronaut", "coffee", "chelsea", "rocket")[i % 4]), H, W, rng) for i in range(B)])
    target = normalise(torch.from_numpy(imgs).permute(0, 3, 1, 2), IMAGENET_MEAN, IMAGENET_STD)
    return target, rgb_to_gray_u8_ref


@pytest.mark.cuda
@pytest.mark.parametrize("cell, H, W", [(8, 96, 160), (4, 40, 136), (16, 64, 128), (32, 64, 96), (64, 128, 128), (2, 34, 98)])
@pytest.mark.parametrize("ring", [True, False], ids=["ring", "count"])
def test_fused_partials_equal_the_reference_pipeline(cell, H, W, ring, rng):
    """Per-cell covered pixels equal gray -> FAST -> NMS -> rings -> pooling exactly; the per-cell L1 sums and
    the sign codes equal PyTorch's. Sizes give several tile rows and columns, partial tiles, W % 4 != 0."""
    from kamim_fast.fast import fast_corners_ref
    from kamim_fast.kernels import mim_loss
    from kamim_fast.mim_loss import expand_cells, sign_codes_ref
    from kamim_fast.weights import keypoint_density_ref

    target, gray_ref = _photos(rng, 2, H, W)
    for b in range(2):  # a few black and white dots: corners even where the crop is smooth
        for y, x in zip(rng.integers(4, H - 4, 6), rng.integers(4, W - 4, 6)):
            white = float(rng.integers(2))  # 0: black, 1: white, in every channel
            target[b, :, y, x] = (white - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    pred = target + torch.from_numpy(rng.normal(0, 0.5, target.shape)).float()
    pred[0, 1, 3, :7] = target[0, 1, 3, :7]  # ties: code 0
    grid = torch.from_numpy(rng.random((2, H // 2, W // 2)) < 0.6).float()
    bgr = bool(rng.integers(2))
    threshold = int(rng.integers(0, 40))
    device = "cuda" if CUDA else "cpu"  # the kernel: on the GPU, or through the interpreter
    outputs = mim_loss.fast_weighted_mim_loss_forward(pred.to(device), target.to(device), grid.to(device), 2, cell,
                                                      "ring" if ring else "count", threshold, "bgr" if bgr else "rgb",
                                                      IMAGENET_MEAN, IMAGENET_STD)
    l1, cover, signs = (x.cpu() for x in outputs)
    keypoints, _ = fast_corners_ref(gray_ref(target, bgr, IMAGENET_MEAN, IMAGENET_STD), threshold, True)
    assert keypoints.any()
    density = keypoint_density_ref(keypoints, cell, "ring" if ring else "count")
    assert torch.equal(cover / cell**2, density)
    m = expand_cells(grid, 2)
    want = torch.nn.functional.avg_pool2d((pred - target).abs().sum(1, keepdim=True) * m, cell, divisor_override=1)
    torch.testing.assert_close(l1, want.squeeze(1), rtol=1e-5, atol=1e-5)
    assert torch.equal(signs, sign_codes_ref(pred, target))


@pytest.mark.skipif(not INTERPRETER, reason="runs the GPU tile sizes through Triton's interpreter")
def test_fused_gpu_configuration_through_the_interpreter(rng):
    """The shipped GPU tile sizes (4-row steps, 48-row tiles) give the same partials as the interpreter's."""
    from kamim_fast.kernels import mim_loss

    target, _ = _photos(rng, 1, 56, 120)
    pred = target + 0.5
    grid = torch.ones(1, 7, 15)
    args = (pred, target, grid, 8, 8, "ring", 10, "rgb", IMAGENET_MEAN, IMAGENET_STD)
    for got, want in zip(mim_loss.fast_weighted_mim_loss_forward(*args, config=mim_loss.GPU_CONFIG),
                         mim_loss.fast_weighted_mim_loss_forward(*args)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


@pytest.mark.skipif(not INTERPRETER, reason="runs the GPU tile sizes through Triton's interpreter")
@pytest.mark.parametrize("weighted", [False, True])
def test_plain_gpu_configuration_through_the_interpreter(rng, weighted):
    """The shipped GPU steps of the loss without FAST weights (4 x 128, ragged tiles) give the interpreter's
    sum and sign codes; the backward's gradient matches the codes."""
    from kamim_fast.kernels import mim_loss
    from kamim_fast.mim_loss import expand_cells, sign_codes_ref

    B, C, H, W = 2, 3, 37, 150
    pred = torch.from_numpy(rng.normal(0, 1, (B, C, H, W))).float()
    target = torch.from_numpy(rng.normal(0, 1, (B, C, H, W))).float()
    target[0, 1, :5] = pred[0, 1, :5]  # zero differences: code 0
    grid = torch.from_numpy(rng.random((B, 3, 10)) < 0.6).float()
    weights = torch.from_numpy(rng.random((B, 5, 19))).float() if weighted else None
    args = (pred, target, grid, weights, 16, 8)
    (got, got_signs), (want, want_signs) = (mim_loss.weighted_mim_loss_forward(*args, config=mim_loss.GPU_CONFIG),
                                            mim_loss.weighted_mim_loss_forward(*args))
    torch.testing.assert_close(got.sum(), want.sum(), rtol=1e-6, atol=0)
    assert torch.equal(got_signs, want_signs) and torch.equal(got_signs, sign_codes_ref(pred, target))
    scale = torch.tensor(0.75)
    grad, grad_target = mim_loss.weighted_mim_loss_backward(scale, got_signs, grid, weights, 16, 8, (B, C, H, W),
                                                            torch.float32, torch.float32, True)
    coef = expand_cells(grid, 16)[..., :H, :W] * scale
    if weighted:
        coef = coef * expand_cells(weights, 8)[..., :H, :W]
    want = coef * torch.sign(pred - target)
    assert torch.equal(grad, want) and torch.equal(grad_target, -want)
    # bf16: the two non-zero values are cast once (the interpreter truncates where the GPU rounds)
    grad_bf16, _ = mim_loss.weighted_mim_loss_backward(scale, got_signs, grid, weights, 16, 8, (B, C, H, W),
                                                       torch.bfloat16, torch.float32, False)
    torch.testing.assert_close(grad_bf16.float(), want, rtol=2**-7, atol=0)
    assert torch.equal(grad_bf16.float().sign(), want.sign())


@pytest.mark.parametrize("weight_patch_size", [8, 12])
def test_fast_weights_of_the_op_are_patch_weights(target, weight_patch_size, rng):
    """The weights the loss op computes (fused for 8, FAST kernel + L1 kernel for 12) are patch_weights' to the bit."""
    from kamim_fast import patch_weights

    device, _ = target
    tgt, _ = _photos(rng, 2, 48, 96)
    pred = tgt + 0.25
    grid = torch.from_numpy(rng.random((2, 3, 6)) < 0.6).float()
    opts = dict(weight_patch_size=weight_patch_size, temperature=0.5, threshold=12, density="ring", channel_order="bgr")
    loss, weights, _ = torch.ops.kamim_fast.fast_weighted_mim_loss(
        pred.to(device), tgt.to(device), grid.to(device), 16, weight_patch_size, 0.5, 12, "ring", "bgr",
        list(IMAGENET_MEAN), list(IMAGENET_STD), 1e-5)
    with reference_backend():  # the CPU reference, also where the target is CUDA
        want = patch_weights(tgt, **opts)
        want_loss = weighted_mim_loss(pred, tgt, grid, want)
    if device == "cpu":
        assert torch.equal(weights, want)
    else:  # the same density; exp on the GPU may differ from the CPU's in the last bit
        torch.testing.assert_close(weights.cpu(), want, rtol=1e-6, atol=0)
    torch.testing.assert_close(loss.cpu(), want_loss, rtol=1e-6, atol=0)


def test_nan_and_inf_propagate_as_in_pytorch(target, rng):
    """NaN in pred gives a NaN loss, and the gradient torch's l1 gives: 0 at the NaN (torch.sign(nan) = 0),
    finite elsewhere; Inf keeps its sign."""
    device, _ = target
    tgt, _ = _photos(rng, 1, 32, 32)
    pred = tgt + torch.from_numpy(rng.normal(0, 0.3, tgt.shape)).float()
    pred[0, 0, 5, 5] = float("nan")
    pred[0, 1, 20, 20] = float("inf")
    pred[0, 2, 30, 2] = float("-inf")
    mask = torch.ones(1, 2, 2)
    for weights in (None, "fast"):
        p1 = pred.clone().to(device).requires_grad_()
        loss = weighted_mim_loss(p1, tgt.to(device), mask.to(device), weights)
        loss.backward()
        p2 = pred.clone().double().requires_grad_()  # float64: the autograd composition of the reference
        with reference_backend():  # its FAST weights on the CPU: the reference, also under ("cuda", "triton")
            weighted_mim_loss(p2, tgt.double(), mask, weights).backward()
        assert loss.isnan()
        g1, g2 = p1.grad.cpu(), p2.grad.float()
        assert g1.isfinite().all() and g1[0, 0, 5, 5] == 0 and g2[0, 0, 5, 5] == 0, weights
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=0)
        assert g1[0, 1, 20, 20] > 0 and g1[0, 2, 30, 2] < 0


def test_fused_loss_is_deterministic(target, rng):
    """Loss and gradient bitwise equal over runs, on the fused kernel too (triton backends); with the tensor
    weights kernel as well. (The scratch barriers that make it so on a GPU: tests/test_barriers.py.)"""
    device, _ = target
    tgt, _ = _photos(rng, 2, 32, 64)
    tgt = tgt.to(device)
    pred = (tgt + torch.from_numpy(rng.normal(0, 0.3, tgt.shape)).float().to(device)).requires_grad_()
    mask = torch.from_numpy(rng.random((2, 2, 4)) < 0.6).to(device)
    w = torch.from_numpy(rng.uniform(1, 3, (2, 4, 8))).float().to(device)
    for weights in ("fast", w):
        runs = []
        for _ in range(3):
            pred.grad = None
            loss = weighted_mim_loss(pred, tgt, mask, weights, **(KAMIM_PAPER if weights == "fast" else {}))
            loss.backward()
            runs.append((loss.detach().clone(), pred.grad.clone()))
        for loss, grad in runs[1:]:
            assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1])


def test_compile_inductor_fullgraph(target, rng):
    """torch.compile with the default backend (Inductor) and fullgraph=True: no graph break, the eager
    value and gradient, for each weights form."""
    device, _ = target
    _, pred, tgt, mask = _batch(rng, B=2, H=32, W=32)
    w = torch.from_numpy(rng.uniform(1, 3, (2, 4, 4))).float().to(device)

    def step(p, t, m, weights):
        return weighted_mim_loss(p * 1.0, t, m, weights, **(KAMIM_PAPER if isinstance(weights, str) else {}))

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    for weights in (None, w, "fast"):
        p1, p2 = (pred.clone().to(device).requires_grad_() for _ in range(2))
        got = compiled(p1, tgt.to(device), mask.to(device), weights)
        got.backward()
        want = step(p2, tgt.to(device), mask.to(device), weights)
        want.backward()
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-6, atol=0)


def _pixel_mask_of_one(B, H, W, rng) -> torch.Tensor:
    mask = torch.zeros(B, 1, H, W)
    mask[int(rng.integers(B)), 0, int(rng.integers(H)), int(rng.integers(W))] = 1
    return mask


def test_eps_is_simmims_by_value(target, rng):
    """Mask counts of 1 and 0 against SimMIM's formula with its eps 1e-5 (at a count of 1 an eps of 1e-4 moves
    the loss by 9e-5 relative); the default eps is 1e-5 on every entry point."""
    import inspect

    from kamim_fast import WeightedMIMLoss

    device, _ = target
    imgs, pred, tgt, _ = _batch(rng, B=2, H=32, W=32)
    one = _pixel_mask_of_one(2, 32, 32, rng)
    w = published_weights(imgs, 8, 0.25, channel_order="bgr")
    for weights, want_w in ((None, None), ("fast", w), (torch.from_numpy(rng.uniform(1, 3, (2, 4, 4))).float(), None)):
        if isinstance(weights, torch.Tensor):
            want_w = weights
        p = pred.clone().to(device).requires_grad_()
        opts = KAMIM_PAPER if weights == "fast" else {}
        dev_w = weights.to(device) if isinstance(weights, torch.Tensor) else weights
        loss = weighted_mim_loss(p, tgt.to(device), one.to(device), dev_w, **opts)
        loss.backward()
        # SimMIM's formula written out: sum(w * |x - x_rec| * mask) / (sum(mask) + 1e-5) / C
        wp = torch.ones(2, 1, 32, 32) if want_w is None else want_w.repeat_interleave(8, 1).repeat_interleave(8, 2).unsqueeze(1)
        want = ((pred - tgt).abs().double() * wp * one).sum() / (1 + 1e-5) / 3
        torch.testing.assert_close(loss.detach().cpu().double(), want, rtol=2e-6, atol=0)
        want_grad = (torch.sign(pred - tgt) * wp * one / (1 + 1e-5) / 3).float()
        torch.testing.assert_close(p.grad.cpu(), want_grad, rtol=2e-6, atol=0)
        zero = weighted_mim_loss(pred.to(device), tgt.to(device), torch.zeros_like(one).to(device), dev_w, **opts)
        assert zero.item() == 0.0
    assert weighted_mim_loss_ref(pred, tgt, one, None).item() == pytest.approx(
        float((pred - tgt).abs().double().mul(one).sum() / (1 + 1e-5) / 3), rel=2e-6, abs=0)
    for fn in (weighted_mim_loss, weighted_mim_loss_ref):
        assert inspect.signature(fn).parameters["eps"].default == 1e-5, fn
    with reference_backend():  # CPU tensors: valid under every target, a GPU machine's included
        torch.testing.assert_close(WeightedMIMLoss(weights=None)(pred, tgt, one),
                                   weighted_mim_loss(pred, tgt, one, None, eps=1e-5), rtol=0, atol=0)


@pytest.mark.parametrize("channel_order", ["rgb", "bgr"])
def test_fused_path_with_per_channel_statistics(channel_order, target, rng):
    """weights="fast" from a target normalised with a distinct mean and std per channel, in both channel
    orders and at a temperature where the clip binds: the published loss and gradient (OpenCV on the uint8
    image the statistics encode). The fused kernel on the triton backends."""
    device, _ = target
    mean, std = (0.3, 0.45, 0.6), (0.2, 0.3, 0.25)
    imgs = np.stack([crop(real_image(n), 32, 64, rng) for n in ("astronaut", "coffee")])
    for b in range(2):  # black and white dots: corners even where the crop is smooth
        for y, x in zip(rng.integers(4, 28, 8), rng.integers(4, 60, 8)):
            imgs[b, y, x] = 255 * int(rng.integers(2))
    x = normalise(torch.from_numpy(imgs).permute(0, 3, 1, 2), mean, std)
    pred = x + torch.from_numpy(rng.normal(0, 0.5, x.shape)).float()
    mask = torch.from_numpy(rng.random((2, 2, 4)) < 0.6).int()
    for T in (0.25, 0.03):
        opts = dict(weight_patch_size=8, temperature=T, channel_order=channel_order, mean=mean, std=std)
        p = pred.clone().to(device).requires_grad_()
        loss = weighted_mim_loss(p, x.to(device), mask.to(device), "fast", **opts)
        loss.backward()
        p_ref = pred.clone().requires_grad_()
        want = simmim_loss(x, p_ref, mask, 16, published_weights(imgs, 8, T, channel_order=channel_order))
        want.backward()
        torch.testing.assert_close(loss.detach().cpu(), want.detach(), rtol=1e-5, atol=0, msg=f"T={T}")
        torch.testing.assert_close(p.grad.cpu(), p_ref.grad, rtol=1e-5, atol=1e-12, msg=f"T={T}")
