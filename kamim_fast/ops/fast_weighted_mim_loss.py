"""``kamim_fast::fast_weighted_mim_loss``: KAMIM's loss with the weights computed from FAST on ``target``, fused:
(loss, weights (B, H/p, W/p) float32, sign codes). Its backward is ``weighted_mim_loss_backward``.
"""

from __future__ import annotations

import torch

from .. import _backend
from .._checks import check_loss_tensors, check_weight_options
from ._common import CPU_KERNELS_ONLY, KAMIM_AUTO, MEAN, REDUCTION, STD, colour_stats, float64_inputs
from .patch_weights import _torch as _patch_weights_torch
from .patch_weights import _triton as _patch_weights_triton
from .patch_weights import density_to_weights
from .weighted_mim_loss import _torch as _weighted_mim_loss_torch
from .weighted_mim_loss import _triton as _weighted_mim_loss_triton
from .weighted_mim_loss import (
    loss_input_grads, loss_tensors, per_mask_pixel, save_for_backward, signs_like,
)


def check(pred, target, mask_grid, patch_size, weight_patch_size, temperature, threshold, density, channel_order, mean,
          std, eps) -> None:
    check_loss_tensors(pred, target, mask_grid, patch_size, eps)
    check_weight_options("target", target, weight_patch_size, temperature, threshold, density, channel_order, mean,
                         std)


@torch.library.custom_op("kamim_fast::fast_weighted_mim_loss", mutates_args=())
def op(
    pred: torch.Tensor, target: torch.Tensor, mask_grid: torch.Tensor, patch_size: int, weight_patch_size: int,
    temperature: float, threshold: int, density: str, channel_order: str, mean: list[float], std: list[float],
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KAMIM's loss with weights from FAST on ``target``: (loss, weights (B, H/p, W/p) float32, sign codes).

    ``target`` is (B, 3, H, W) normalised with ``mean``/``std`` (3 values each, or none: the identity);
    ``density`` is "ring" (the drawKeypoints cover) or "count" (keypoints per cell); ``channel_order`` "bgr"
    swaps the gray weights of R and B.
    """
    return _backend.run("fast_weighted_mim_loss", pred.device, pred, target, mask_grid, patch_size, weight_patch_size,
                        temperature, threshold, density, channel_order, mean, std, eps)


@op.register_fake
def _(pred, target, mask_grid, patch_size, weight_patch_size, temperature, threshold, density, channel_order, mean, std,
      eps):
    B, _, H, W = pred.shape
    weights = pred.new_empty((B, H // weight_patch_size, W // weight_patch_size), dtype=torch.float32)
    return pred.new_empty((), dtype=torch.float32), weights, signs_like(pred)


def _torch(pred, target, mask_grid, patch_size, weight_patch_size, temperature, threshold, density, channel_order,
           mean, std, eps):
    weights = _patch_weights_torch(target, weight_patch_size, temperature, threshold, density, channel_order, mean, std)
    loss, signs = _weighted_mim_loss_torch(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps)
    return loss, weights, signs


def _triton(pred, target, mask_grid, patch_size, weight_patch_size, temperature, threshold, density, channel_order,
            mean, std, eps):
    from ..kernels import mim_loss

    if mim_loss.fuses(weight_patch_size):  # FAST + NMS + rings + L1 in one pass
        mean, std = colour_stats(mean, std)
        l1, cover, signs = mim_loss.fast_weighted_mim_loss_forward(
            pred, target, mask_grid, patch_size=patch_size, weight_patch_size=weight_patch_size, density=density,
            threshold=threshold, channel_order=channel_order, mean=tuple(mean), std=tuple(std))
        weights = density_to_weights(cover / weight_patch_size**2, temperature)
        return per_mask_pixel((weights * l1).sum(), mask_grid, patch_size, eps, pred.shape[1]), weights, signs
    # other cell sizes: the FAST kernel, the density in PyTorch, then the same loss kernel with weights
    weights = _patch_weights_triton(target, weight_patch_size, temperature, threshold, density, channel_order, mean,
                                    std)
    loss, signs = _weighted_mim_loss_triton(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps)
    return loss, weights, signs


def _cpp(pred, target, mask_grid, patch_size, weight_patch_size, temperature, threshold, density, channel_order, mean,
         std, eps):
    return torch.ops.kamim_fast_cpp.fast_weighted_mim_loss(pred, target, mask_grid, patch_size, weight_patch_size,
                                                           temperature, threshold, density, channel_order,
                                                           *colour_stats(mean, std), eps)


def _not_supported(pred, target, *args) -> list[str]:
    return float64_inputs(pred, target)


def samples(s) -> list[tuple]:
    pred, target, grid, _ = loss_tensors(s.rng, photo=s.photo)
    p48, t48, g48, _ = loss_tensors(s.rng, H=48, W=48, p=16, photo=s.photo)
    return [(*s.to(pred, target, grid), 8, 8, 0.25, 10, "ring", "rgb", MEAN, STD, 1e-5),
            (*s.to(pred, target, grid), 8, 4, 0.5, 20, "count", "bgr", MEAN, STD, 1e-5),
            # weight cells of 8 with bgr, 16 by count, 12 (the Triton path that does not fuse FAST)
            (*s.to(p48, t48, g48), 16, 8, 0.25, 10, "ring", "bgr", MEAN, STD, 1e-5),
            (*s.to(p48, t48, g48), 16, 16, 0.25, 10, "count", "rgb", MEAN, STD, 1e-5),
            (*s.to(p48, t48, g48), 16, 12, 0.25, 10, "ring", "rgb", MEAN, STD, 1e-5)]


def _setup(ctx, inputs, output):
    pred, target, mask_grid, patch_size, weight_patch_size, *_, eps = inputs
    _, weights, signs = output
    save_for_backward(ctx, pred, target, signs, mask_grid, weights, patch_size, weight_patch_size, eps, len(inputs))
    ctx.mark_non_differentiable(weights, signs)  # the weights are piecewise constant in target


op.register_autograd(lambda ctx, grad, _weights, _signs: loss_input_grads(ctx, grad), setup_context=_setup)

_backend.register(op, check=check, auto=KAMIM_AUTO, samples=samples, tolerances={0: REDUCTION}, differentiable=(0, 1),
                  impls=[
                      _backend.torch_impl(_torch),
                      _backend.Impl("triton", ("cuda", "cpu"), _triton, not_supported=_not_supported,
                                    limits="float64 inputs (the reference runs them)", modules=("mim_loss", "fast")),
                      _backend.cpp_impl(("cpu",), _cpp, why_not=CPU_KERNELS_ONLY, not_supported=_not_supported,
                                        limits="float64 inputs (the reference runs them)"),
                  ])
