"""torch.library registration: the ``kamim_fast::*`` ops, their fake kernels and their device dispatch.

Public functions check arguments and call these ops; each op picks the Triton kernel or the PyTorch
reference (``_backend.use_triton``) and holds no math itself. Registering them as custom ops keeps
``torch.compile(fullgraph=True)`` free of graph breaks: the compiler sees one opaque node with a
fake kernel for shapes.
"""

from __future__ import annotations

import torch

from ._backend import use_triton
from .fast import fast_corners_ref
from .gray import rgb_to_gray_u8_ref
from .loss import expand_cells, weighted_mim_loss_ref


@torch.library.custom_op("kamim_fast::rgb_to_gray_u8", mutates_args=())
def rgb_to_gray_u8_op(images: torch.Tensor, bgr: bool, mean: list[float], std: list[float]) -> torch.Tensor:
    """(B, 3, H, W) uint8 or normalised float -> (B, H, W) uint8 gray."""
    if use_triton(images):
        from .kernels import gray

        return gray.rgb_to_gray_u8(images, bgr, tuple(mean), tuple(std))
    return rgb_to_gray_u8_ref(images, bgr, mean, std)


@rgb_to_gray_u8_op.register_fake
def _(images, bgr, mean, std):
    return images.new_empty((images.shape[0], images.shape[2], images.shape[3]), dtype=torch.uint8)


@torch.library.custom_op("kamim_fast::fast_corners", mutates_args=())
def fast_corners_op(
    image: torch.Tensor, threshold: int, nonmax_suppression: bool, bgr: bool, mean: list[float], std: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """FAST on (B, H, W) uint8 gray, or on (B, 3, H, W) colour converted to gray on the fly.

    Returns (keypoints bool, scores uint8), both (B, H, W). ``bgr``/``mean``/``std`` apply to colour.
    """
    if use_triton(image):
        from .kernels import fast, fast_tile

        if image.dim() == 3:
            kind = fast_tile.SRC_GRAY_U8
        else:
            kind = fast_tile.SRC_RGB_FLOAT if image.is_floating_point() else fast_tile.SRC_RGB_U8
        return fast.fast_corners(image, threshold, nonmax_suppression, kind, bgr, tuple(mean or (0.0,) * 3), tuple(std or (1.0,) * 3))
    gray = image if image.dim() == 3 else rgb_to_gray_u8_ref(image, bgr, mean or (0.0,) * 3, std or (1.0,) * 3)
    return fast_corners_ref(gray, threshold, nonmax_suppression)


@fast_corners_op.register_fake
def _(image, threshold, nonmax_suppression, bgr, mean, std):
    shape = (image.shape[0], image.shape[-2], image.shape[-1])
    return image.new_empty(shape, dtype=torch.bool), image.new_empty(shape, dtype=torch.uint8)


@torch.library.custom_op("kamim_fast::weighted_masked_l1", mutates_args=())
def weighted_masked_l1_op(
    pred: torch.Tensor, target: torch.Tensor, mask_grid: torch.Tensor, weights: torch.Tensor | None,
    mask_patch: int, weight_patch: int, eps: float,
) -> torch.Tensor:
    """sum(w * |pred - target| * m) / (sum(m) + eps) / C as a float32 scalar.

    pred, target (B, C, H, W); mask_grid (B, H/mask_patch, W/mask_patch) float32 >= 0; weights None or
    (B, H/weight_patch, W/weight_patch) float32.
    """
    if use_triton(pred):
        from .kernels import mim_loss

        num, den = mim_loss.weighted_l1_forward(pred, target, mask_grid, weights, mask_patch, weight_patch)
        return num.sum() / (den.sum() + eps) / pred.shape[1]  # fixed-order reduction of the partials
    return weighted_mim_loss_ref(pred, target, expand_cells(mask_grid, mask_patch), weights, eps)


@weighted_masked_l1_op.register_fake
def _(pred, target, mask_grid, weights, mask_patch, weight_patch, eps):
    return pred.new_empty((), dtype=torch.float32)


@torch.library.custom_op("kamim_fast::weighted_masked_l1_backward", mutates_args=())
def weighted_masked_l1_backward_op(
    grad: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, mask_grid: torch.Tensor,
    weights: torch.Tensor | None, mask_patch: int, weight_patch: int, eps: float, grad_target: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_pred, grad_target): grad / (sum(m) + eps) / C * w * m * sign(pred - target), and its negation
    (an empty tensor when ``grad_target`` is False)."""
    scale = (grad.to(torch.float32) / (mask_grid.sum() * mask_patch**2 + eps) / pred.shape[1]).reshape(())
    if use_triton(pred):
        from .kernels import mim_loss

        gp, gt = mim_loss.weighted_l1_backward(scale, pred, target, mask_grid, weights, mask_patch, weight_patch, grad_target)
        return gp, gt if gt is not None else target.new_empty(0)
    coef = expand_cells(mask_grid, mask_patch) * scale
    if weights is not None:
        coef = coef * expand_cells(weights, weight_patch)
    g = coef * torch.sign(pred.to(torch.float32) - target.to(torch.float32))
    return g.to(pred.dtype), (-g).to(target.dtype) if grad_target else target.new_empty(0)


@weighted_masked_l1_backward_op.register_fake
def _(grad, pred, target, mask_grid, weights, mask_patch, weight_patch, eps, grad_target):
    return torch.empty_like(pred, memory_format=torch.contiguous_format), (
        torch.empty_like(target, memory_format=torch.contiguous_format) if grad_target else target.new_empty(0))


def _l1_setup_context(ctx, inputs, output):
    pred, target, mask_grid, weights, mask_patch, weight_patch, eps = inputs
    ctx.save_for_backward(pred, target, mask_grid, weights)
    ctx.args = (mask_patch, weight_patch, eps)


def _l1_backward(ctx, grad):
    pred, target, mask_grid, weights = ctx.saved_tensors
    want_pred, want_target = ctx.needs_input_grad[:2]
    if not (want_pred or want_target):
        return (None,) * 7
    gp, gt = torch.ops.kamim_fast.weighted_masked_l1_backward(grad, pred, target, mask_grid, weights, *ctx.args, want_target)
    return gp if want_pred else None, gt if want_target else None, None, None, None, None, None


weighted_masked_l1_op.register_autograd(_l1_backward, setup_context=_l1_setup_context)
