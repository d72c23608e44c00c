"""``kamim_fast::weighted_mim_loss`` and its adjoint ``kamim_fast::weighted_mim_loss_backward``: SimMIM's masked L1
loss with per-cell weights (or none), ``sum(w * |pred - target| * m) / (sum(m) + eps) / C``, whose forward saves
2-bit sign codes of ``pred - target`` for the backward.

Also the loss's references (the published formula) and the autograd that ``fast_weighted_mim_loss`` shares.
"""

from __future__ import annotations

import torch

from .. import _backend
from .._checks import (
    FLOAT_DTYPES, check_eps, check_grid, check_loss_tensors, check_same_device, check_tensor,
)
from ._common import CPU_KERNELS_ONLY, KAMIM_AUTO, REDUCTION, ROUNDING, float64_inputs, normalised

# --- the references ------------------------------------------------------------------------------------


def expand_cells(grid: torch.Tensor, p: int) -> torch.Tensor:
    """(B, h, w) cells -> (B, 1, h*p, w*p) pixels, as SimMIM's repeat_interleave does."""
    return grid.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1)


def weighted_mim_loss_ref(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """The published loss on checked inputs: ``sum(w * |pred - target| * mask) / (sum(mask) + eps) / C``.

    ``mask`` is (B, 1, H, W) float32; ``weights`` is None (SimMIM) or (B, H/p, W/p) per-cell weights.
    Computed in float32 whatever pred's dtype, as SimMIM's l1_loss does under autocast (float64 when an
    input is float64, for gradcheck).
    """
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    loss = (pred.to(dtype) - target.to(dtype)).abs()
    if weights is not None:
        loss = expand_cells(weights, pred.shape[-1] // weights.shape[-1]).to(dtype) * loss
    return (loss * mask).sum() / (mask.sum() + eps) / pred.shape[1]


SIGN_CODES = {"zero or NaN": 0, "positive": 1, "negative": 2}
"""The 2-bit codes of sign(pred - target) that the forward saves for the backward, four per byte. NaN
codes as 0 because ``torch.sign(nan)`` is 0: PyTorch's own l1 gradient is 0 there (the loss is NaN)."""


def sign_codes_ref(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reference of the forward's saved state: (B, C, H, W) -> (B, C, H, ceil(W/4)) uint8.

    Column x of a row is bits 2*(x % 4) .. 2*(x % 4) + 1 of byte x // 4; codes as ``SIGN_CODES``.
    """
    d = pred.to(torch.float32) - target.to(torch.float32)
    code = (d > 0).to(torch.uint8) + 2 * (d < 0).to(torch.uint8)
    code = torch.nn.functional.pad(code, (0, -code.shape[-1] % 4)).unflatten(-1, (-1, 4))
    return (code << torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=code.device)).sum(-1, dtype=torch.uint8)


def weighted_masked_l1_backward_ref(
    scale: torch.Tensor, signs: torch.Tensor, mask_grid: torch.Tensor, patch_size: int,
    weights: torch.Tensor | None, weight_patch_size: int, W: int,
) -> torch.Tensor:
    """Reference of the backward from the sign codes: ``scale * w * m * sign(pred - target)`` as float32
    (B, C, H, W)."""
    codes = (signs.unsqueeze(-1) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=signs.device)) & 3
    codes = codes.flatten(-2)[..., :W]
    sign = (codes == 1).to(torch.float32) - (codes == 2).to(torch.float32)
    coef = expand_cells(mask_grid, patch_size) * scale
    if weights is not None:
        coef = coef * expand_cells(weights, weight_patch_size)
    return coef * sign


def per_mask_pixel(total: torch.Tensor, mask_grid: torch.Tensor, patch_size: int, eps: float, C: int) -> torch.Tensor:
    """``total / (sum(m) + eps) / C``, sum(m) over pixels taken from the cell grid: the loss's normalisation,
    written once for the forward (total = the weighted L1 sum) and the backward (total = the incoming grad)."""
    return total / (mask_grid.sum() * patch_size**2 + eps) / C


# --- the checks ----------------------------------------------------------------------------------------


def check(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps) -> None:
    check_loss_tensors(pred, target, mask_grid, patch_size, eps)
    if weights is not None:
        check_grid("weights", weights, pred.shape, pred.device, weight_patch_size, "weight_patch_size")


# --- the forward ---------------------------------------------------------------------------------------


@torch.library.custom_op("kamim_fast::weighted_mim_loss", mutates_args=())
def op(
    pred: torch.Tensor, target: torch.Tensor, mask_grid: torch.Tensor, weights: torch.Tensor | None,
    patch_size: int, weight_patch_size: int, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, sign codes): sum(w * |pred - target| * m) / (sum(m) + eps) / C as a float32 scalar, and the
    2-bit codes of sign(pred - target) that the backward reads, (B, C, H, ceil(W/4)) uint8.

    pred, target (B, C, H, W); mask_grid (B, H/patch_size, W/patch_size) float32 >= 0; weights None or
    (B, H/weight_patch_size, W/weight_patch_size) float32.
    """
    return _backend.run("weighted_mim_loss", pred.device, pred, target, mask_grid, weights, patch_size,
                        weight_patch_size, eps)


def signs_like(pred: torch.Tensor) -> torch.Tensor:
    B, C, H, W = pred.shape
    return pred.new_empty((B, C, H, (W + 3) // 4), dtype=torch.uint8)


@op.register_fake
def _(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps):
    return pred.new_empty((), dtype=torch.float32), signs_like(pred)


def _torch(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps):
    loss = weighted_mim_loss_ref(pred, target, expand_cells(mask_grid, patch_size), weights, eps)
    return loss, sign_codes_ref(pred, target)


def _triton(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps):
    """The Triton kernel without the FAST stages; its per-tile partials summed in a fixed order."""
    from ..kernels import mim_loss

    partials, signs = mim_loss.weighted_mim_loss_forward(pred, target, mask_grid, weights, patch_size=patch_size,
                                                         weight_patch_size=weight_patch_size)
    return per_mask_pixel(partials.sum(), mask_grid, patch_size, eps, pred.shape[1]), signs


def _loss_not_supported(pred, target, *args) -> list[str]:
    return float64_inputs(pred, target)


def loss_tensors(rng, B=2, H=16, W=24, p=8, weight_p=None, dtype=torch.float32, photo=None):
    """Samples: pred (dtype) and target (float32), (B, 3, H, W); a 0/1 mask grid of p-pixel cells; weights of
    weight_p-pixel cells (default p). ``photo(B, H, W)``: the sample source's photographs."""
    weight_p = weight_p or p
    target = normalised(photo(B, H, W))
    pred = (target + torch.from_numpy(rng.standard_normal(target.shape)).float() * 0.5).to(dtype)
    grid = torch.from_numpy(rng.integers(0, 2, (B, H // p, W // p))).float()
    weights = torch.from_numpy(rng.uniform(1, 3, (B, H // weight_p, W // weight_p))).float()
    return pred, target, grid, weights


def samples(s) -> list[tuple]:
    pred, target, grid, weights = loss_tensors(s.rng, photo=s.photo)
    bf16, t2, g2, _ = loss_tensors(s.rng, dtype=torch.bfloat16, photo=s.photo)
    p48, t48, g48, w48 = loss_tensors(s.rng, H=48, W=48, p=16, weight_p=8, photo=s.photo)  # mask, weight cells differ
    return [(*s.to(pred, target, grid, weights), 8, 8, 1e-5), (*s.to(pred, target, grid), None, 8, 1, 1e-5),
            (*s.to(bf16, t2, g2), None, 8, 1, 1e-5), (*s.to(p48, t48, g48, w48), 16, 8, 1e-5)]


_backend.register(op, check=check, auto=KAMIM_AUTO, samples=samples, tolerances={0: REDUCTION}, differentiable=(0, 1),
                  impls=[
                      _backend.torch_impl(_torch),
                      _backend.Impl("triton", ("cuda", "cpu"), _triton, not_supported=_loss_not_supported,
                                    limits="float64 inputs (the reference runs them)", modules=("mim_loss",)),
                      _backend.cpp_impl(("cpu",), why_not=CPU_KERNELS_ONLY, not_supported=_loss_not_supported,
                                        limits="float64 inputs (the reference runs them)"),
                  ])


# --- the backward --------------------------------------------------------------------------------------


def check_backward(grad, signs, mask_grid, weights, patch_size, weight_patch_size, eps, W, pred_dtype, target_dtype,
                   grad_target) -> None:
    check_tensor("grad", grad, dtypes=FLOAT_DTYPES)
    if grad.numel() != 1:
        raise ValueError(f"grad must hold one value (the loss's gradient), got shape {tuple(grad.shape)}")
    check_tensor("signs", signs, dtypes=(torch.uint8,), ndims=(4,), shape_doc="(B, C, H, ceil(W/4))")
    if W < 0 or (W + 3) // 4 != signs.shape[3]:
        raise ValueError(f"W={W} does not match signs of shape {tuple(signs.shape)} (ceil(W/4) bytes per row)")
    check_same_device("grad", grad, signs, "signs")
    for name, dtype in (("pred_dtype", pred_dtype), ("target_dtype", target_dtype)):
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float dtype, got {dtype}")
    shape = (*signs.shape[:3], W)
    check_grid("mask_grid", mask_grid, shape, signs.device, patch_size, "patch_size", of="signs")
    if weights is not None:
        check_grid("weights", weights, shape, signs.device, weight_patch_size, "weight_patch_size", of="signs")
    check_eps(eps)


@torch.library.custom_op("kamim_fast::weighted_mim_loss_backward", mutates_args=())
def backward_op(
    grad: torch.Tensor, signs: torch.Tensor, mask_grid: torch.Tensor, weights: torch.Tensor | None,
    patch_size: int, weight_patch_size: int, eps: float, W: int, pred_dtype: torch.dtype, target_dtype: torch.dtype,
    grad_target: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_pred, grad_target), contiguous (B, C, H, W): grad / (sum(m) + eps) / C * w * m * sign(pred - target)
    from the forward's sign codes, and its negation (an empty tensor when ``grad_target`` is False)."""
    return _backend.run("weighted_mim_loss_backward", signs.device, grad, signs, mask_grid, weights, patch_size,
                        weight_patch_size, eps, W, pred_dtype, target_dtype, grad_target)


@backward_op.register_fake
def _(grad, signs, mask_grid, weights, patch_size, weight_patch_size, eps, W, pred_dtype, target_dtype, grad_target):
    B, C, H, _ = signs.shape
    return (signs.new_empty((B, C, H, W), dtype=pred_dtype),
            signs.new_empty((B, C, H, W) if grad_target else (0,), dtype=target_dtype))


def _backward_scale(grad, signs, mask_grid, patch_size, eps):
    return per_mask_pixel(grad.to(torch.float32), mask_grid, patch_size, eps, signs.shape[1]).reshape(())


def _backward_torch(grad, signs, mask_grid, weights, patch_size, weight_patch_size, eps, W, pred_dtype, target_dtype,
                    grad_target):
    scale = _backward_scale(grad, signs, mask_grid, patch_size, eps)
    g = weighted_masked_l1_backward_ref(scale, signs, mask_grid, patch_size, weights, weight_patch_size, W)
    return g.to(pred_dtype), (-g).to(target_dtype) if grad_target else signs.new_empty(0, dtype=target_dtype)


def _backward_triton(grad, signs, mask_grid, weights, patch_size, weight_patch_size, eps, W, pred_dtype, target_dtype,
                     grad_target):
    from ..kernels import mim_loss

    B, C, H, _ = signs.shape
    scale = _backward_scale(grad, signs, mask_grid, patch_size, eps)
    gp, gt = mim_loss.weighted_mim_loss_backward(scale, signs, mask_grid, weights, patch_size=patch_size,
                                                 weight_patch_size=weight_patch_size, shape=(B, C, H, W),
                                                 pred_dtype=pred_dtype, target_dtype=target_dtype,
                                                 grad_target=grad_target)
    return gp, gt if gt is not None else signs.new_empty(0, dtype=target_dtype)


def backward_samples(s) -> list[tuple]:
    pred, target, grid, weights = loss_tensors(s.rng, photo=s.photo)
    signs, grad = sign_codes_ref(pred, target), torch.tensor(0.75)
    p48, t48, g48, w48 = loss_tensors(s.rng, H=48, W=48, p=16, weight_p=8, photo=s.photo)
    s48 = sign_codes_ref(p48, t48)
    return [(*s.to(grad, signs, grid, weights), 8, 8, 1e-5, 24, torch.float32, torch.float32, True),
            (*s.to(grad, signs, grid), None, 8, 1, 1e-5, 24, torch.bfloat16, torch.float32, False),
            # mask and weight cells differ, bf16 pred, with and without the target's gradient
            (*s.to(torch.tensor(1.5), s48, g48, w48), 16, 8, 1e-5, 48, torch.bfloat16, torch.float32, True),
            (*s.to(torch.tensor(1.5), s48, g48, w48), 16, 8, 1e-5, 48, torch.bfloat16, torch.float32, False)]


_backend.register(backward_op, check=check_backward, auto=KAMIM_AUTO, samples=backward_samples,
                  tolerances={0: ROUNDING, 1: ROUNDING}, impls=[
                      _backend.torch_impl(_backward_torch),
                      _backend.triton_impl(_backward_triton, "mim_loss"),
                      _backend.cpp_impl(("cpu",), why_not=CPU_KERNELS_ONLY),
                  ])


# --- autograd: the loss ops save the sign codes, the mask grid and the weights ----------------------------


def save_for_backward(ctx, pred, target, signs, mask_grid, weights, patch_size, weight_patch_size, eps, num_inputs):
    ctx.save_for_backward(signs, mask_grid, weights)
    ctx.patch_size, ctx.weight_patch_size, ctx.eps = patch_size, weight_patch_size, eps
    ctx.width, ctx.pred_dtype, ctx.target_dtype = pred.shape[-1], pred.dtype, target.dtype
    ctx.num_inputs = num_inputs  # how many Nones the backward returns after the two gradients, plus two


def loss_input_grads(ctx, grad) -> tuple:
    """(grad_pred, grad_target, None for every other input) from the saved sign codes."""
    signs, mask_grid, weights = ctx.saved_tensors
    want_pred, want_target = ctx.needs_input_grad[:2]
    rest = (None,) * (ctx.num_inputs - 2)
    if not (want_pred or want_target):
        return (None, None, *rest)
    gp, gt = torch.ops.kamim_fast.weighted_mim_loss_backward(
        grad, signs, mask_grid, weights, ctx.patch_size, ctx.weight_patch_size, ctx.eps, ctx.width, ctx.pred_dtype,
        ctx.target_dtype, want_target)
    return (gp if want_pred else None, gt if want_target else None, *rest)


def _setup(ctx, inputs, output):
    pred, target, mask_grid, weights, patch_size, weight_patch_size, eps = inputs
    _, signs = output
    save_for_backward(ctx, pred, target, signs, mask_grid, weights, patch_size, weight_patch_size, eps, len(inputs))
    ctx.mark_non_differentiable(signs)


op.register_autograd(lambda ctx, grad, _signs: loss_input_grads(ctx, grad), setup_context=_setup)
