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
from .loss import expand_cells, sign_codes_ref, weighted_masked_l1_backward_ref, weighted_mim_loss_ref
from .weights import density_to_weights, weights_from_keypoints


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


def _per_mask_pixel(total: torch.Tensor, mask_grid: torch.Tensor, mask_patch: int, eps: float, C: int) -> torch.Tensor:
    """``total / (sum(m) + eps) / C``, sum(m) over pixels taken from the cell grid: the loss's normalisation,
    written once for the forward (total = the weighted L1 sum) and the backward (total = the incoming grad)."""
    return total / (mask_grid.sum() * mask_patch**2 + eps) / C


def _l1_kernel(pred, target, mask_grid, weights, mask_patch: int, weight_patch: int, eps: float):
    """(loss, signs) from the Triton kernel without the FAST stages; the partials summed in a fixed order."""
    from .kernels import mim_loss

    partials, signs = mim_loss.weighted_l1_forward(pred, target, mask_grid, weights, mask_patch, weight_patch)
    return _per_mask_pixel(partials.sum(), mask_grid, mask_patch, eps, pred.shape[1]), signs


@torch.library.custom_op("kamim_fast::weighted_masked_l1", mutates_args=())
def weighted_masked_l1_op(
    pred: torch.Tensor, target: torch.Tensor, mask_grid: torch.Tensor, weights: torch.Tensor | None,
    mask_patch: int, weight_patch: int, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, sign codes): sum(w * |pred - target| * m) / (sum(m) + eps) / C as a float32 scalar, and the
    2-bit codes of sign(pred - target) that the backward reads, (B, C, H, ceil(W/4)) uint8.

    pred, target (B, C, H, W); mask_grid (B, H/mask_patch, W/mask_patch) float32 >= 0; weights None or
    (B, H/weight_patch, W/weight_patch) float32.
    """
    if use_triton(pred):
        return _l1_kernel(pred, target, mask_grid, weights, mask_patch, weight_patch, eps)
    loss = weighted_mim_loss_ref(pred, target, expand_cells(mask_grid, mask_patch), weights, eps)
    return loss, sign_codes_ref(pred, target)


def _signs_like(pred: torch.Tensor) -> torch.Tensor:
    B, C, H, W = pred.shape
    return pred.new_empty((B, C, H, (W + 3) // 4), dtype=torch.uint8)


@weighted_masked_l1_op.register_fake
def _(pred, target, mask_grid, weights, mask_patch, weight_patch, eps):
    return pred.new_empty((), dtype=torch.float32), _signs_like(pred)


@torch.library.custom_op("kamim_fast::fast_weighted_masked_l1", mutates_args=())
def fast_weighted_masked_l1_op(
    pred: torch.Tensor, target: torch.Tensor, mask_grid: torch.Tensor, mask_patch: int, weight_patch: int,
    temperature: float, threshold: int, ring: bool, bgr: bool, mean: list[float], std: list[float], eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KAMIM's loss with weights from FAST on ``target``: (loss, weights (B, H/p, W/p) float32, sign codes).

    ``target`` is (B, 3, H, W) normalised with ``mean``/``std``; ``ring`` selects the drawKeypoints
    density (else keypoint count); ``bgr`` swaps the gray weights of R and B.
    """
    density = "ring" if ring else "count"
    if use_triton(pred):
        from .kernels import fast, fast_tile, mim_loss

        if mim_loss.fuses(weight_patch):  # FAST + NMS + rings + L1 in one pass
            l1, cover, signs = mim_loss.fast_weighted_l1_forward(
                pred, target, mask_grid, mask_patch, weight_patch, ring, threshold, bgr, tuple(mean), tuple(std))
            weights = density_to_weights(cover / weight_patch**2, temperature)
            return _per_mask_pixel((weights * l1).sum(), mask_grid, mask_patch, eps, pred.shape[1]), weights, signs
        # other cell sizes: the FAST kernel, the density in PyTorch, then the same loss kernel with weights
        keypoints, _ = fast.fast_corners(target, threshold, True, fast_tile.SRC_RGB_FLOAT, bgr, tuple(mean), tuple(std))
        weights = weights_from_keypoints(keypoints, weight_patch, density, temperature)
        loss, signs = _l1_kernel(pred, target, mask_grid, weights, mask_patch, weight_patch, eps)
        return loss, weights, signs
    keypoints, _ = fast_corners_ref(rgb_to_gray_u8_ref(target, bgr, mean, std), threshold, True)
    weights = weights_from_keypoints(keypoints, weight_patch, density, temperature)
    loss = weighted_mim_loss_ref(pred, target, expand_cells(mask_grid, mask_patch), weights, eps)
    return loss, weights, sign_codes_ref(pred, target)


@fast_weighted_masked_l1_op.register_fake
def _(pred, target, mask_grid, mask_patch, weight_patch, temperature, threshold, ring, bgr, mean, std, eps):
    B, _, H, W = pred.shape
    weights = pred.new_empty((B, H // weight_patch, W // weight_patch), dtype=torch.float32)
    return pred.new_empty((), dtype=torch.float32), weights, _signs_like(pred)


@torch.library.custom_op("kamim_fast::weighted_masked_l1_backward", mutates_args=())
def weighted_masked_l1_backward_op(
    grad: torch.Tensor, signs: torch.Tensor, mask_grid: torch.Tensor, weights: torch.Tensor | None,
    mask_patch: int, weight_patch: int, eps: float, W: int, pred_dtype: torch.dtype, target_dtype: torch.dtype,
    grad_target: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_pred, grad_target), contiguous (B, C, H, W): grad / (sum(m) + eps) / C * w * m * sign(pred - target)
    from the forward's sign codes, and its negation (an empty tensor when ``grad_target`` is False)."""
    B, C, H, _ = signs.shape
    scale = _per_mask_pixel(grad.to(torch.float32), mask_grid, mask_patch, eps, C).reshape(())
    if use_triton(signs):
        from .kernels import mim_loss

        gp, gt = mim_loss.weighted_l1_backward(scale, signs, mask_grid, weights, mask_patch, weight_patch,
                                               (B, C, H, W), pred_dtype, target_dtype, grad_target)
        return gp, gt if gt is not None else signs.new_empty(0, dtype=target_dtype)
    g = weighted_masked_l1_backward_ref(scale, signs, mask_grid, mask_patch, weights, weight_patch, W)
    return g.to(pred_dtype), (-g).to(target_dtype) if grad_target else signs.new_empty(0, dtype=target_dtype)


@weighted_masked_l1_backward_op.register_fake
def _(grad, signs, mask_grid, weights, mask_patch, weight_patch, eps, W, pred_dtype, target_dtype, grad_target):
    B, C, H, _ = signs.shape
    return (signs.new_empty((B, C, H, W), dtype=pred_dtype),
            signs.new_empty((B, C, H, W) if grad_target else (0,), dtype=target_dtype))


def _l1_backward(ctx, grad):
    signs, mask_grid, weights = ctx.saved_tensors
    want_pred, want_target = ctx.needs_input_grad[:2]
    if not (want_pred or want_target):
        return None, None
    gp, gt = torch.ops.kamim_fast.weighted_masked_l1_backward(grad, signs, mask_grid, weights, *ctx.args, want_target)
    return gp if want_pred else None, gt if want_target else None


def _setup(ctx, pred, target, signs, mask_grid, weights, mask_patch, weight_patch, eps):
    ctx.save_for_backward(signs, mask_grid, weights)
    ctx.args = (mask_patch, weight_patch, eps, pred.shape[-1], pred.dtype, target.dtype)
    ctx.mark_non_differentiable(signs)


def _l1_setup_context(ctx, inputs, output):
    pred, target, mask_grid, weights, mask_patch, weight_patch, eps = inputs
    _setup(ctx, pred, target, output[1], mask_grid, weights, mask_patch, weight_patch, eps)


def _fast_l1_setup_context(ctx, inputs, output):
    pred, target, mask_grid, mask_patch, weight_patch, *_, eps = inputs
    _setup(ctx, pred, target, output[2], mask_grid, output[1], mask_patch, weight_patch, eps)
    ctx.mark_non_differentiable(output[1], output[2])  # the weights are piecewise constant in target


weighted_masked_l1_op.register_autograd(
    lambda ctx, grad, _signs: (*_l1_backward(ctx, grad), None, None, None, None, None),
    setup_context=_l1_setup_context)
fast_weighted_masked_l1_op.register_autograd(
    lambda ctx, grad, _weights, _signs: (*_l1_backward(ctx, grad), *(None,) * 10),
    setup_context=_fast_l1_setup_context)
