"""The native CPU loss kernels (csrc/mim_loss_cpu.cpp, torch.ops.kamim_fast_cpp.*) against the PyTorch
references that define the semantics (the ops' torch implementations in kamim_fast/ops/): loss, sign codes,
gradients and the fused FAST weights, bitwise where the reference's order of float operations allows;
thread-count and SIMD-path invariance; argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_raises_naming
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from images import crop, real_image
from published import normalise, published_weights

from kamim_fast import IMAGENET_MEAN, IMAGENET_STD, _ext
from kamim_fast.fast import fast_corners_ref
from kamim_fast.gray import rgb_to_gray_u8_ref
from kamim_fast.mim_loss import expand_cells, sign_codes_ref, weighted_masked_l1_backward_ref, weighted_mim_loss_ref
from kamim_fast.weights import DENSITY_MODES, weights_from_keypoints

_ext.status()  # loads kamim_fast._C, which registers the kamim_fast_cpp ops
OPS = ("weighted_mim_loss", "fast_weighted_mim_loss", "weighted_mim_loss_backward")
if not all(torch._C._dispatch_has_kernel_for_dispatch_key(f"kamim_fast_cpp::{op}", "CPU") for op in OPS):
    pytest.skip("the extension kamim_fast._C with the native CPU loss ops is not built", allow_module_level=True)

NATIVE = torch.ops.kamim_fast_cpp
ORDER = {False: "rgb", True: "bgr"}  # the ops' channel_order
MEAN, STD = list(IMAGENET_MEAN), list(IMAGENET_STD)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float64: torch.int64}


# --- references: the ops' torch implementations in kamim_fast/ops/ ------------------------------------------------

def ref_forward(pred, target, grid, weights, patch_size, eps=1e-5):
    return weighted_mim_loss_ref(pred, target, expand_cells(grid, patch_size), weights, eps), sign_codes_ref(pred, target)


def ref_fast_weights(target, weight_patch_size, temperature, threshold, density, bgr, mean=MEAN, std=STD):
    keypoints, _ = fast_corners_ref(rgb_to_gray_u8_ref(target, bgr, mean, std), threshold, True)
    return weights_from_keypoints(keypoints, weight_patch_size, density, temperature)


def ref_backward(grad, signs, grid, weights, patch_size, weight_patch_size, eps, W, pred_dtype, target_dtype,
                 grad_target):
    from kamim_fast.ops.weighted_mim_loss import per_mask_pixel as _per_mask_pixel

    scale = _per_mask_pixel(grad.to(torch.float32), grid, patch_size, eps, signs.shape[1]).reshape(())
    g = weighted_masked_l1_backward_ref(scale, signs, grid, patch_size, weights, weight_patch_size, W)
    return g.to(pred_dtype), ((-g).to(target_dtype) if grad_target else None)


def assert_bits(got, want):
    """Bitwise equal (signed zeros included); NaN at the same places (its payload may differ)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    view = INT_VIEW[got.dtype]
    assert torch.equal(got[~nan].view(view), want[~nan].view(view))


def assert_loss(got, want, rtol=1e-6):
    assert got.dtype == torch.float32 and got.shape == ()
    want = want.to(torch.float32)
    if want.isnan():
        assert got.isnan()
    else:
        torch.testing.assert_close(got, want, rtol=rtol, atol=0)


def _normalised(imgs_u8_nhwc):
    return normalise(torch.from_numpy(imgs_u8_nhwc).permute(0, 3, 1, 2), IMAGENET_MEAN, IMAGENET_STD)


def photos(rng, B, H, W):
    """(B, 3, H, W) normalised crops of scikit-image's colour photos, and the uint8 crops."""
    names = ("astronaut", "coffee", "chelsea", "rocket")
    imgs = np.stack([crop(real_image(names[i % 4]), H, W, rng) for i in range(B)])
    return _normalised(imgs), imgs


def layout(x, kind):
    """The same values as a strided view: channels_last, or a transposed copy, or contiguous."""
    if kind == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if kind == "transposed":
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "sliced":  # every other column of a wider tensor
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x


def grid_values(rng, shape, kind):
    if kind == "binary":
        return torch.from_numpy(rng.random(shape) < 0.6).float()
    if kind == "fractional":
        return torch.from_numpy(rng.random(shape)).float()
    if kind == "all":
        return torch.ones(shape)
    return torch.zeros(shape)


# --- the plain loss and its backward ---------------------------------------------------------------------

@pytest.mark.parametrize("pred_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("patch_size, weight_patch_size, weighted", [(8, 8, True), (32, 8, True), (4, 12, True),
                                                                     (1, 2, True), (16, 1, False), (3, 3, False)])
def test_forward_and_backward_equal_the_reference(pred_dtype, target_dtype, patch_size, weight_patch_size, weighted,
                                                  rng):
    cell = math.lcm(patch_size, weight_patch_size)
    B, C = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    H, W = cell * int(rng.integers(1, 4)), cell * int(rng.integers(1, 5))
    target = torch.from_numpy(rng.normal(0, 1, (B, C, H, W))).float()
    pred = (target + torch.from_numpy(rng.normal(0, 1, (B, C, H, W))).float()).to(pred_dtype)
    pred.view(-1)[:: 7] = target.view(-1)[:: 7].to(pred_dtype)  # ties: sign code 0 (exact in fp32)
    target = target.to(target_dtype)
    grid = grid_values(rng, (B, H // patch_size, W // patch_size), "binary")
    weight_shape = (B, H // weight_patch_size, W // weight_patch_size)
    weights = torch.from_numpy(rng.uniform(1, 4, weight_shape)).float() if weighted else None
    wp = weight_patch_size if weighted else 1
    loss, signs = NATIVE.weighted_mim_loss(pred, target, grid, weights, patch_size, wp, 1e-5)
    want_loss, want_signs = ref_forward(pred, target, grid, weights, patch_size)
    assert_loss(loss, want_loss)
    assert torch.equal(signs, want_signs)
    grad = torch.tensor(float(rng.uniform(-3, 3)))
    for grad_target in (True, False):
        got = NATIVE.weighted_mim_loss_backward(grad, signs, grid, weights, patch_size, wp, 1e-5, W, pred_dtype,
                                                target_dtype, grad_target)
        want = ref_backward(grad, want_signs, grid, weights, patch_size, wp, 1e-5, W, pred_dtype, target_dtype,
                            grad_target)
        assert_bits(got[0], want[0])
        if grad_target:
            assert_bits(got[1], want[1])
        else:
            assert got[1].numel() == 0 and got[1].dtype == target_dtype


@pytest.mark.parametrize("kind", ["channels_last", "transposed", "sliced"])
def test_strided_inputs(kind, rng):
    target = torch.from_numpy(rng.normal(0, 1, (2, 3, 24, 40))).float()
    pred = (target + torch.from_numpy(rng.normal(0, 1, target.shape)).float()).bfloat16()
    grid = grid_values(rng, (2, 3, 5), "binary")
    weights = torch.from_numpy(rng.uniform(1, 2, (2, 6, 10))).float()
    want = NATIVE.weighted_mim_loss(pred, target, grid, weights, 8, 4, 1e-5)
    for p, t in ((layout(pred, kind), target), (pred, layout(target, kind)), (layout(pred, kind), layout(target, kind))):
        got = NATIVE.weighted_mim_loss(p, t, grid, weights, 8, 4, 1e-5)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # strided grids and weights too
    got = NATIVE.weighted_mim_loss(pred, target, layout(grid, "transposed"), layout(weights, "transposed"), 8, 4, 1e-5)
    assert torch.equal(got[0], want[0])


@pytest.mark.parametrize("kind", ["fractional", "all", "none"])
def test_mask_values(kind, rng):
    """Fractional masks, all cells masked, none masked (loss 0 and zero gradients, not NaN)."""
    target = torch.from_numpy(rng.normal(0, 1, (3, 3, 32, 48))).float()
    pred = target + torch.from_numpy(rng.normal(0, 1, target.shape)).float()
    grid = grid_values(rng, (3, 4, 6), kind)
    weights = torch.from_numpy(rng.uniform(1, 4, (3, 8, 12))).float()
    for w, wp in ((None, 1), (weights, 4)):
        loss, signs = NATIVE.weighted_mim_loss(pred, target, grid, w, 8, wp, 1e-5)
        assert_loss(loss, ref_forward(pred, target, grid, w, 8)[0])
        if kind == "none":
            assert loss == 0
        grad = torch.tensor(1.0)
        for dtype in DTYPES:
            got, _ = NATIVE.weighted_mim_loss_backward(grad, signs, grid, w, 8, wp, 1e-5, 48, dtype, dtype, False)
            want, _ = ref_backward(grad, signs, grid, w, 8, wp, 1e-5, 48, dtype, dtype, False)
            if kind == "fractional":
                # the reference's mask_grid.sum() is a float32 cascade, ours a double rounded once: the scale
                # may differ in its last bit, and (m * scale) * w rounds twice more, so at most 3 ulps
                torch.testing.assert_close(got, want, rtol=4 * torch.finfo(dtype).eps, atol=0)
            else:
                assert_bits(got, want)
            if kind == "none":
                assert not got.any()


def test_nan_and_inf(rng):
    """NaN in pred: NaN loss, sign code 0, gradient 0 there; Inf keeps its sign; as the reference."""
    target = torch.from_numpy(rng.normal(0, 1, (2, 3, 16, 20))).float()
    for dtype in DTYPES:
        pred = (target + 0.5).to(dtype)
        pred[0, 0, 5, 5] = float("nan")
        pred[1, 1, 2, 17] = float("inf")
        pred[1, 2, 15, 0] = float("-inf")
        grid = torch.ones(2, 4, 5)
        loss, signs = NATIVE.weighted_mim_loss(pred, target, grid, None, 4, 1, 1e-5)
        want_loss, want_signs = ref_forward(pred, target, grid, None, 4)
        assert loss.isnan() and want_loss.isnan()
        assert torch.equal(signs, want_signs)
        assert (signs[0, 0, 5, 1] >> 2) & 3 == 0
        g, _ = NATIVE.weighted_mim_loss_backward(torch.tensor(1.0), signs, grid, None, 4, 1, 1e-5, 20, dtype, dtype,
                                                 False)
        assert g[0, 0, 5, 5] == 0 and g[1, 1, 2, 17] > 0 and g[1, 2, 15, 0] < 0 and g.isfinite().all()
        # only Inf: an infinite loss where masked, NaN where an unmasked cell holds it (0 * inf), as the reference
        pred2 = (target + 0.5).to(dtype)
        pred2[1, 1, 2, 17] = float("inf")
        for masked in (1.0, 0.0):
            grid2 = torch.ones(2, 4, 5)
            grid2[1, 0, 4] = masked
            got = NATIVE.weighted_mim_loss(pred2, target, grid2, None, 4, 1, 1e-5)[0]
            assert_loss(got, ref_forward(pred2, target, grid2, None, 4)[0])


def test_thread_count_and_simd_path_do_not_change_a_bit(rng, monkeypatch):
    target, _ = photos(rng, 5, 96, 64)
    pred = (target + torch.from_numpy(rng.normal(0, 0.5, target.shape)).float()).bfloat16()
    grid = grid_values(rng, (5, 3, 2), "fractional")
    weights = torch.from_numpy(rng.uniform(1, 4, (5, 12, 8))).float()

    def run():
        out = [*NATIVE.weighted_mim_loss(pred, target, grid, weights, 32, 8, 1e-5),
               *NATIVE.weighted_mim_loss(pred, target, grid, None, 32, 1, 1e-5),
               *NATIVE.fast_weighted_mim_loss(pred, target, grid, 32, 8, 0.25, 10, "ring", "bgr", MEAN, STD, 1e-5)]
        out += NATIVE.weighted_mim_loss_backward(torch.tensor(0.7), out[1], grid, weights, 32, 8, 1e-5, 64,
                                                 torch.bfloat16, torch.float32, True)
        return out

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(max(2, threads))
        many = run()
        monkeypatch.setenv("KAMIM_FAST_CPU_ISA", "portable")  # the portable row kernels of the loss
        generic = run()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(one, many, generic):
        assert torch.equal(a, b) and torch.equal(a, c)
        if a.is_floating_point():
            assert torch.equal(a.view(INT_VIEW[a.dtype]), b.view(INT_VIEW[b.dtype]))


# --- the fused forward: FAST weights from target ------------------------------------------------------------

@pytest.mark.parametrize("weight_patch_size, patch_size, H, W", [(8, 32, 96, 160), (8, 8, 64, 64), (16, 16, 80, 48),
                                                            (4, 2, 36, 44), (12, 4, 48, 72), (32, 32, 64, 96)])
@pytest.mark.parametrize("density", DENSITY_MODES)
def test_fused_forward_equals_the_reference(weight_patch_size, patch_size, H, W, density, rng):
    """Weights bitwise patch_weights' reference (gray -> FAST -> NMS -> density -> exp/min) on photo crops with
    dots (corners even where a crop is smooth); loss within 1e-6; sign codes equal."""
    B = 2
    target, _ = photos(rng, B, H, W)
    for b in range(B):
        for y, x in zip(rng.integers(4, H - 4, 6), rng.integers(4, W - 4, 6)):
            white = float(rng.integers(2))
            target[b, :, y, x] = (white - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    pred_dtype = DTYPES[int(rng.integers(3))]
    pred = (target + torch.from_numpy(rng.normal(0, 0.5, target.shape)).float()).to(pred_dtype)
    grid = grid_values(rng, (B, H // patch_size, W // patch_size), "binary")
    bgr, threshold, temperature = bool(rng.integers(2)), int(rng.integers(0, 40)), float(rng.choice([0.1, 0.25, 1.0]))
    loss, weights, signs = NATIVE.fast_weighted_mim_loss(pred, target, grid, patch_size, weight_patch_size, temperature,
                                                         threshold, density, ORDER[bgr], MEAN, STD, 1e-5)
    want_w = ref_fast_weights(target, weight_patch_size, temperature, threshold, density, bgr)
    assert (want_w > 1).any()
    assert_bits(weights, want_w)
    want_loss, want_signs = ref_forward(pred, target, grid, want_w, patch_size)
    assert_loss(loss, want_loss)
    assert torch.equal(signs, want_signs)
    # the same loss as the plain kernel with those weights
    plain, _ = NATIVE.weighted_mim_loss(pred, target, grid, weights, patch_size, weight_patch_size, 1e-5)
    assert_loss(loss, plain)


@pytest.mark.parametrize("target_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "sliced"])
def test_fused_target_dtypes_and_layouts(target_dtype, kind, rng):
    target, _ = photos(rng, 2, 48, 64)
    target = layout(target.to(target_dtype), kind)
    pred = target.float() + 0.25
    grid = grid_values(rng, (2, 3, 4), "binary")
    loss, weights, signs = NATIVE.fast_weighted_mim_loss(pred, target, grid, 16, 8, 0.25, 10, "ring", "rgb", MEAN, STD,
                                                         1e-5)
    want_w = ref_fast_weights(target, 8, 0.25, 10, "ring", False)
    assert_bits(weights, want_w)
    assert_loss(loss, ref_forward(pred, target, grid, want_w, 16)[0])
    assert torch.equal(signs, sign_codes_ref(pred, target))


def test_fused_weights_equal_the_published_pipeline_on_photos(rng):
    """On whole 192x192 photo crops, KAMIM_PAPER's options: the weights equal patch_weights' reference to the
    bit and OpenCV's published pipeline (FAST + drawKeypoints + pooling) to float rounding."""
    target, imgs = photos(rng, 4, 192, 192)
    pred = target + torch.from_numpy(rng.normal(0, 0.3, target.shape)).float()
    grid = grid_values(rng, (4, 6, 6), "binary")
    _, weights, _ = NATIVE.fast_weighted_mim_loss(pred, target, grid, 32, 8, 0.25, 10, "ring", "bgr", MEAN, STD, 1e-5)
    assert_bits(weights, ref_fast_weights(target, 8, 0.25, 10, "ring", True))
    torch.testing.assert_close(weights, published_weights(imgs, 8, 0.25, channel_order="bgr"), rtol=1e-6, atol=0)


def test_fused_flat_and_empty(rng):
    """A flat image has no keypoints: weight 1 everywhere; an empty batch gives loss 0."""
    target = torch.zeros(2, 3, 32, 32)
    pred = target + 1
    grid = torch.ones(2, 4, 4)
    loss, weights, _ = NATIVE.fast_weighted_mim_loss(pred, target, grid, 8, 8, 0.25, 10, "ring", "rgb", MEAN, STD, 1e-5)
    assert torch.equal(weights, torch.ones(2, 4, 4))
    assert_loss(loss, torch.tensor(1.0))
    empty = torch.zeros(0, 3, 32, 32)
    loss, weights, signs = NATIVE.fast_weighted_mim_loss(empty, empty, torch.zeros(0, 4, 4), 8, 8, 0.25, 10, "ring",
                                                         "rgb", MEAN, STD, 1e-5)
    assert loss == 0 and weights.shape == (0, 4, 4) and signs.shape == (0, 3, 32, 8)
    loss, signs = NATIVE.weighted_mim_loss(empty, empty, torch.zeros(0, 4, 4), None, 8, 1, 1e-5)
    assert loss == 0


# --- hypothesis: sizes, cells, dtypes, weights forms --------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patch_size=st.sampled_from([1, 2, 4, 8, 16]), weight_patch_size=st.sampled_from([1, 2, 3, 4, 8]),
       h=st.integers(1, 3), w=st.integers(1, 4), B=st.integers(1, 3), weights_form=st.sampled_from(["none", "tensor", "fast"]),
       pred_dtype=st.sampled_from(DTYPES), mask_kind=st.sampled_from(["binary", "all", "none"]),
       view=st.sampled_from(["contiguous", "channels_last", "transposed"]), seed=st.integers(0, 2**32 - 1))
def test_hypothesis_native_equals_the_reference(patch_size, weight_patch_size, h, w, B, weights_form, pred_dtype,
                                                mask_kind, view, seed):
    rng = np.random.default_rng(seed)
    cell = math.lcm(patch_size, weight_patch_size)
    H, W = h * cell, w * cell
    if weights_form == "fast":
        target, _ = photos(rng, B, max(H, 8), max(W, 8))
        target = target[..., :H, :W].contiguous()
    else:
        target = torch.from_numpy(rng.normal(0, 1, (B, 3, H, W))).float()
    pred = (target + torch.from_numpy(rng.normal(0, 0.5, target.shape)).float()).to(pred_dtype)
    grid = grid_values(rng, (B, H // patch_size, W // patch_size), mask_kind)
    p = layout(pred, view)
    if weights_form == "fast":
        loss, weights, signs = NATIVE.fast_weighted_mim_loss(p, target, grid, patch_size, weight_patch_size, 0.25, 10,
                                                             "ring", "bgr", MEAN, STD, 1e-5)
        assert_bits(weights, ref_fast_weights(target, weight_patch_size, 0.25, 10, "ring", True))
        wp = weight_patch_size
    else:
        weights = (torch.from_numpy(rng.uniform(1, 4, (B, H // weight_patch_size, W // weight_patch_size))).float()
                   if weights_form == "tensor" else None)
        wp = weight_patch_size if weights is not None else 1
        loss, signs = NATIVE.weighted_mim_loss(p, target, grid, weights, patch_size, wp, 1e-5)
    want_loss, want_signs = ref_forward(pred, target, grid, weights, patch_size)
    assert_loss(loss, want_loss)
    assert torch.equal(signs, want_signs)
    grad = torch.tensor(1.25)
    got = NATIVE.weighted_mim_loss_backward(grad, signs, grid, weights, patch_size, wp, 1e-5, W, pred_dtype,
                                            torch.float32, True)
    want = ref_backward(grad, want_signs, grid, weights, patch_size, wp, 1e-5, W, pred_dtype, torch.float32, True)
    assert_bits(got[0], want[0])
    assert_bits(got[1], want[1])


# --- argument checks -----------------------------------------------------------------------------------------

def _args():
    pred = torch.zeros(2, 3, 16, 16)
    return pred, pred.clone(), torch.ones(2, 2, 2), torch.ones(2, 4, 4)


# A direct call of the C++ ops checks what the kernels rely on, naming the argument (the op boundary checks the
# arguments first, in Python). The stable ABI carries ValueError (std::invalid_argument), not TypeError: a wrong
# dtype stops the C++ op with a RuntimeError.
NATIVE_TYPE_ERROR = RuntimeError

BAD_FORWARD = [
    (lambda p, t, g, w: NATIVE.weighted_mim_loss(p.double(), t, g, None, 8, 1, 1e-5), NATIVE_TYPE_ERROR, ["pred", "Double"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss(p, t.double(), g, None, 8, 1, 1e-5), NATIVE_TYPE_ERROR, ["target", "Double"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss(p[0], t[0], g, None, 8, 1, 1e-5), ValueError, ["pred", "(B, C, H, W)"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss(p, t[:, :2], g, None, 8, 1, 1e-5), ValueError, ["target", "shape"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss(p, t, g[:, :1], None, 8, 1, 1e-5), ValueError, ["mask_grid", "[2, 2, 2]"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss(p, t, g.bool(), None, 8, 1, 1e-5), NATIVE_TYPE_ERROR, ["mask_grid", "float32"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss(p, t, g, None, 0, 1, 1e-5), ValueError, ["patch_size", ">= 1"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss(p, t, g, None, 5, 1, 1e-5), ValueError, ["pred", "patch_size=5", "divisible by"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss(p, t, g, w, 8, 8, 1e-5), ValueError, ["weights", "[2, 2, 2]"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss(p, t, g, w.half(), 8, 4, 1e-5), NATIVE_TYPE_ERROR, ["weights", "float32"]),
    (lambda p, t, g, w: NATIVE.fast_weighted_mim_loss(p[:, :2], t[:, :2], g, 8, 8, 0.25, 10, "ring", "rgb", MEAN, STD,
                                                      1e-5),
     ValueError, ["RGB", "3"]),
    (lambda p, t, g, w: NATIVE.fast_weighted_mim_loss(p, t, g, 8, 8, 0.25, 10, "rings", "rgb", MEAN, STD, 1e-5),
     ValueError, ["density", str(DENSITY_MODES), "'rings'"]),
    (lambda p, t, g, w: NATIVE.fast_weighted_mim_loss(p, t, g, 8, 8, 0.25, 10, "ring", "brg", MEAN, STD, 1e-5),
     ValueError, ["channel_order", "('rgb', 'bgr')", "'brg'"]),
    (lambda p, t, g, w: NATIVE.fast_weighted_mim_loss(p, t, g, 8, 7, 0.25, 10, "ring", "rgb", MEAN, STD, 1e-5),
     ValueError, ["weight_patch_size=7"]),
    (lambda p, t, g, w: NATIVE.fast_weighted_mim_loss(p, t, g, 8, 8, 0.25, 10, "ring", "rgb", MEAN[:2], STD, 1e-5),
     ValueError, ["mean", "3"]),
    (lambda p, t, g, w: NATIVE.fast_weighted_mim_loss(p, t, g, 8, 8, 0.25, 10, "ring", "rgb", MEAN, [], 1e-5),
     ValueError, ["std", "3"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss_backward(torch.ones(2), torch.zeros(2, 3, 16, 4, dtype=torch.uint8), g,
                                                          None, 8, 1, 1e-5, 16, torch.float32, torch.float32, False),
     ValueError, ["grad", "one value"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss_backward(torch.ones(()), torch.zeros(2, 3, 16, 4), g, None, 8, 1, 1e-5,
                                                          16, torch.float32, torch.float32, False),
     NATIVE_TYPE_ERROR, ["signs", "uint8"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss_backward(torch.ones(()), torch.zeros(2, 3, 16, 4, dtype=torch.uint8), g,
                                                          None, 8, 1, 1e-5, 20, torch.float32, torch.float32, False),
     ValueError, ["W=20", "signs"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss_backward(torch.ones(()), torch.zeros(2, 3, 16, 4, dtype=torch.uint8), g,
                                                          None, 8, 1, 1e-5, 16, torch.int32, torch.float32, False),
     NATIVE_TYPE_ERROR, ["pred_dtype"]),
    (lambda p, t, g, w: NATIVE.weighted_mim_loss_backward(torch.ones(()), torch.zeros(2, 3, 16, 4, dtype=torch.uint8), g,
                                                          w[:, :3], 8, 4, 1e-5, 16, torch.float32, torch.float32, False),
     ValueError, ["weights", "weight_patch_size"]),
]


@pytest.mark.parametrize("make, exc, words", BAD_FORWARD)
def test_bad_arguments_are_named(make, exc, words):
    args = _args()
    assert_raises_naming(lambda: make(*args), (exc, NATIVE_TYPE_ERROR), words)  # torch >= 2.15: all RuntimeError
