"""The ``kamim_fast::*`` ops of the KAMIM side: schemas, fake kernels, autograd, and their rows of the
implementation table (``_backend.TABLE``).

Public functions check arguments and call these ops. Each op is a ``torch.library.custom_op`` whose
per-device kernels (``register_kernel("cpu")``/``("cuda")``) run what :func:`_backend.resolve` picks:
the Triton launcher below, the extension's ``kamim_fast_cpp::<op>`` (same schema, ``csrc/``), or the
PyTorch reference below. Registering them as custom ops keeps ``torch.compile(fullgraph=True)`` free of
graph breaks: the compiler sees one opaque node with a fake kernel for shapes. An argument has one name in
the public function, the op's schema, the C++ op and the Triton launcher (``patch_size``,
``weight_patch_size``, ``density``: "ring" | "count").
"""

from __future__ import annotations

import torch

from . import _backend
from ._checks import check_choice
from .fast import fast_corners_ref
from .gray import CHANNEL_ORDERS, rgb_to_gray_u8_ref
from .mim_loss import expand_cells, sign_codes_ref, weighted_masked_l1_backward_ref, weighted_mim_loss_ref
from .weights import density_to_weights, keypoint_density_ref, weights_from_keypoints

# auto: the Triton kernels on CUDA tensors, the native kernels on CPU tensors.
KAMIM_AUTO = {"cpu": "cpp", "cuda": "triton"}


def _define(op, *, torch_ref, triton=None, auto=None, cpp_kernel=None):
    """The op's row of the table: the native kernel on CPU tensors, Triton where given."""
    return _backend.register(op, torch_ref=torch_ref, triton=triton, cpp=("cpu",), auto=auto or KAMIM_AUTO,
                             cpp_kernel=cpp_kernel)


def _is_bgr(channel_order: str) -> bool:
    """The ops' ``channel_order`` ("rgb" | "bgr", as the public functions), checked, as the references' flag."""
    return _checked_order(channel_order) == "bgr"


def _checked_order(channel_order: str) -> str:
    """The Triton kernels take ``channel_order`` as it is: a string other than "rgb" | "bgr" must not reach one."""
    return check_choice("channel_order", channel_order, CHANNEL_ORDERS)


def _colour_stats(mean: list[float], std: list[float]) -> tuple[list[float], list[float]]:
    """Gray input carries no statistics ([]): the identity, for the kernels that read three."""
    return list(mean) or [0.0] * 3, list(std) or [1.0] * 3


# --- gray ---------------------------------------------------------------------------------------------


@torch.library.custom_op("kamim_fast::rgb_to_gray_u8", mutates_args=())
def rgb_to_gray_u8_op(images: torch.Tensor, channel_order: str, mean: list[float], std: list[float]
                      ) -> torch.Tensor:
    """(B, 3, H, W) uint8 or normalised float -> (B, H, W) uint8 gray."""
    return _backend.run("rgb_to_gray_u8", images.device, images, channel_order, mean, std)


@rgb_to_gray_u8_op.register_fake
def _(images, channel_order, mean, std):
    return images.new_empty((images.shape[0], images.shape[2], images.shape[3]), dtype=torch.uint8)


def _rgb_to_gray_u8_triton(images, channel_order, mean, std):
    from .kernels import gray

    return gray.rgb_to_gray_u8(images, _checked_order(channel_order), tuple(mean), tuple(std))


def _rgb_to_gray_u8_torch(images, channel_order, mean, std):
    return rgb_to_gray_u8_ref(images, _is_bgr(channel_order), mean, std)


_define(rgb_to_gray_u8_op, torch_ref=_rgb_to_gray_u8_torch, triton=_rgb_to_gray_u8_triton)


# --- FAST ---------------------------------------------------------------------------------------------


@torch.library.custom_op("kamim_fast::fast_corners", mutates_args=())
def fast_corners_op(
    image: torch.Tensor, threshold: int, nonmax_suppression: bool, channel_order: str, mean: list[float],
    std: list[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """FAST on (B, H, W) uint8 gray, or on (B, 3, H, W) colour converted to gray on the fly.

    Returns (keypoints bool, scores uint8), both (B, H, W). ``channel_order``/``mean``/``std`` apply to colour.
    """
    return _backend.run("fast_corners", image.device, image, threshold, nonmax_suppression, channel_order, mean, std)


@fast_corners_op.register_fake
def _(image, threshold, nonmax_suppression, channel_order, mean, std):
    shape = (image.shape[0], image.shape[-2], image.shape[-1])
    return image.new_empty(shape, dtype=torch.bool), image.new_empty(shape, dtype=torch.uint8)


def _fast_corners_torch(image, threshold, nonmax_suppression, channel_order, mean, std):
    gray = image if image.dim() == 3 else rgb_to_gray_u8_ref(image, _is_bgr(channel_order), *_colour_stats(mean, std))
    return fast_corners_ref(gray, threshold, nonmax_suppression)


def _fast_source(image: torch.Tensor) -> int:
    from .kernels import fast_tile

    if image.dim() == 3:
        return fast_tile.SRC_GRAY_U8
    return fast_tile.SRC_RGB_FLOAT if image.is_floating_point() else fast_tile.SRC_RGB_U8


def _fast_corners_triton(image, threshold, nonmax_suppression, channel_order, mean, std):
    from .kernels import fast

    mean, std = _colour_stats(mean, std)
    return fast.fast_corners(image, threshold, nonmax_suppression, _fast_source(image), _checked_order(channel_order),
                            tuple(mean), tuple(std))


def _fast_corners_cpp(image, threshold, nonmax_suppression, channel_order, mean, std):
    return torch.ops.kamim_fast_cpp.fast_corners(image, threshold, nonmax_suppression, channel_order,
                                                 *_colour_stats(mean, std))


_define(fast_corners_op, torch_ref=_fast_corners_torch, triton=_fast_corners_triton, cpp_kernel=_fast_corners_cpp)


# --- keypoint density and KAMIM's weights -------------------------------------------------------------


@torch.library.custom_op("kamim_fast::keypoint_density", mutates_args=())
def keypoint_density_op(keypoints: torch.Tensor, patch_size: int, density: str) -> torch.Tensor:
    """(B, H, W) bool keypoints -> (B, H/p, W/p) float32, p = ``patch_size``: the drawKeypoints ring cover
    (``density="ring"``) or the keypoint count per cell (``"count"``), over p*p. The public function calls this
    argument ``mode``."""
    return _backend.run("keypoint_density", keypoints.device, keypoints, patch_size, density)


@keypoint_density_op.register_fake
def _(keypoints, patch_size, density):
    B, H, W = keypoints.shape
    return keypoints.new_empty((B, H // patch_size, W // patch_size), dtype=torch.float32)


def _keypoint_density_torch(keypoints, patch_size, density):
    return keypoint_density_ref(keypoints, patch_size, density)


# On CUDA the density is a convolution and a pooling in PyTorch: the table lists no Triton kernel.
_define(keypoint_density_op, torch_ref=_keypoint_density_torch, auto={"cpu": "cpp"})


@torch.library.custom_op("kamim_fast::patch_weights", mutates_args=())
def patch_weights_op(
    images: torch.Tensor, weight_patch_size: int, temperature: float, threshold: int, density: str,
    channel_order: str,
    mean: list[float], std: list[float],
) -> torch.Tensor:
    """KAMIM's weights of (B, 3, H, W) uint8 or normalised float images -> (B, H/p, W/p) float32, p =
    ``weight_patch_size``: gray -> FAST with NMS -> ``density`` ("ring" or "count") per cell ->
    ``exp(clip(d/T, -20, 20))`` / per-image min."""
    return _backend.run("patch_weights", images.device, images, weight_patch_size, temperature, threshold, density,
                        channel_order, mean, std)


@patch_weights_op.register_fake
def _(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std):
    B, _, H, W = images.shape
    return images.new_empty((B, H // weight_patch_size, W // weight_patch_size), dtype=torch.float32)


def _patch_weights_torch(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std):
    keypoints, _ = _fast_corners_torch(images, threshold, True, channel_order, mean, std)
    return weights_from_keypoints(keypoints, weight_patch_size, density, temperature)


def _patch_weights_triton(images, weight_patch_size, temperature, threshold, density, channel_order, mean, std):
    keypoints, _ = _fast_corners_triton(images, threshold, True, channel_order, mean, std)
    return weights_from_keypoints(keypoints, weight_patch_size, density, temperature)


_define(patch_weights_op, torch_ref=_patch_weights_torch, triton=_patch_weights_triton)


# --- the weighted masked L1 loss ----------------------------------------------------------------------


def _per_mask_pixel(total: torch.Tensor, mask_grid: torch.Tensor, patch_size: int, eps: float, C: int) -> torch.Tensor:
    """``total / (sum(m) + eps) / C``, sum(m) over pixels taken from the cell grid: the loss's normalisation,
    written once for the forward (total = the weighted L1 sum) and the backward (total = the incoming grad)."""
    return total / (mask_grid.sum() * patch_size**2 + eps) / C


@torch.library.custom_op("kamim_fast::weighted_mim_loss", mutates_args=())
def weighted_mim_loss_op(
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


def _signs_like(pred: torch.Tensor) -> torch.Tensor:
    B, C, H, W = pred.shape
    return pred.new_empty((B, C, H, (W + 3) // 4), dtype=torch.uint8)


@weighted_mim_loss_op.register_fake
def _(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps):
    return pred.new_empty((), dtype=torch.float32), _signs_like(pred)


def _weighted_mim_loss_torch(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps):
    loss = weighted_mim_loss_ref(pred, target, expand_cells(mask_grid, patch_size), weights, eps)
    return loss, sign_codes_ref(pred, target)


def _weighted_mim_loss_triton(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps):
    """The Triton kernel without the FAST stages; its per-tile partials summed in a fixed order."""
    from .kernels import mim_loss

    partials, signs = mim_loss.weighted_mim_loss_forward(pred, target, mask_grid, weights, patch_size=patch_size,
                                                         weight_patch_size=weight_patch_size)
    return _per_mask_pixel(partials.sum(), mask_grid, patch_size, eps, pred.shape[1]), signs


_define(weighted_mim_loss_op, torch_ref=_weighted_mim_loss_torch, triton=_weighted_mim_loss_triton)


@torch.library.custom_op("kamim_fast::fast_weighted_mim_loss", mutates_args=())
def fast_weighted_mim_loss_op(
    pred: torch.Tensor, target: torch.Tensor, mask_grid: torch.Tensor, patch_size: int, weight_patch_size: int,
    temperature: float, threshold: int, density: str, channel_order: str, mean: list[float], std: list[float],
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KAMIM's loss with weights from FAST on ``target``: (loss, weights (B, H/p, W/p) float32, sign codes).

    ``target`` is (B, 3, H, W) normalised with ``mean``/``std``; ``density`` is "ring" (the drawKeypoints
    cover) or "count" (keypoints per cell); ``channel_order`` "bgr" swaps the gray weights of R and B.
    """
    return _backend.run("fast_weighted_mim_loss", pred.device, pred, target, mask_grid, patch_size, weight_patch_size,
                        temperature, threshold, density, channel_order, mean, std, eps)


@fast_weighted_mim_loss_op.register_fake
def _(pred, target, mask_grid, patch_size, weight_patch_size, temperature, threshold, density, channel_order, mean, std,
      eps):
    B, _, H, W = pred.shape
    weights = pred.new_empty((B, H // weight_patch_size, W // weight_patch_size), dtype=torch.float32)
    return pred.new_empty((), dtype=torch.float32), weights, _signs_like(pred)


def _fast_weighted_mim_loss_torch(pred, target, mask_grid, patch_size, weight_patch_size, temperature, threshold,
                                  density, channel_order, mean, std, eps):
    weights = _patch_weights_torch(target, weight_patch_size, temperature, threshold, density, channel_order, mean,
                                   std)
    loss, signs = _weighted_mim_loss_torch(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps)
    return loss, weights, signs


def _fast_weighted_mim_loss_triton(pred, target, mask_grid, patch_size, weight_patch_size, temperature, threshold,
                                   density, channel_order, mean, std, eps):
    from .kernels import mim_loss

    if mim_loss.fuses(weight_patch_size):  # FAST + NMS + rings + L1 in one pass
        l1, cover, signs = mim_loss.fast_weighted_mim_loss_forward(
            pred, target, mask_grid, patch_size=patch_size, weight_patch_size=weight_patch_size, density=density,
            threshold=threshold, channel_order=_checked_order(channel_order), mean=tuple(mean), std=tuple(std))
        weights = density_to_weights(cover / weight_patch_size**2, temperature)
        return _per_mask_pixel((weights * l1).sum(), mask_grid, patch_size, eps, pred.shape[1]), weights, signs
    # other cell sizes: the FAST kernel, the density in PyTorch, then the same loss kernel with weights
    weights = _patch_weights_triton(target, weight_patch_size, temperature, threshold, density, channel_order, mean,
                                    std)
    loss, signs = _weighted_mim_loss_triton(pred, target, mask_grid, weights, patch_size, weight_patch_size, eps)
    return loss, weights, signs


_define(fast_weighted_mim_loss_op, torch_ref=_fast_weighted_mim_loss_torch, triton=_fast_weighted_mim_loss_triton)


@torch.library.custom_op("kamim_fast::weighted_mim_loss_backward", mutates_args=())
def weighted_mim_loss_backward_op(
    grad: torch.Tensor, signs: torch.Tensor, mask_grid: torch.Tensor, weights: torch.Tensor | None,
    patch_size: int, weight_patch_size: int, eps: float, W: int, pred_dtype: torch.dtype, target_dtype: torch.dtype,
    grad_target: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_pred, grad_target), contiguous (B, C, H, W): grad / (sum(m) + eps) / C * w * m * sign(pred - target)
    from the forward's sign codes, and its negation (an empty tensor when ``grad_target`` is False)."""
    return _backend.run("weighted_mim_loss_backward", signs.device, grad, signs, mask_grid, weights, patch_size,
                        weight_patch_size, eps, W, pred_dtype, target_dtype, grad_target)


@weighted_mim_loss_backward_op.register_fake
def _(grad, signs, mask_grid, weights, patch_size, weight_patch_size, eps, W, pred_dtype, target_dtype, grad_target):
    B, C, H, _ = signs.shape
    return (signs.new_empty((B, C, H, W), dtype=pred_dtype),
            signs.new_empty((B, C, H, W) if grad_target else (0,), dtype=target_dtype))


def _backward_scale(grad, signs, mask_grid, patch_size, eps):
    return _per_mask_pixel(grad.to(torch.float32), mask_grid, patch_size, eps, signs.shape[1]).reshape(())


def _weighted_mim_loss_backward_torch(grad, signs, mask_grid, weights, patch_size, weight_patch_size, eps, W,
                                      pred_dtype, target_dtype, grad_target):
    scale = _backward_scale(grad, signs, mask_grid, patch_size, eps)
    g = weighted_masked_l1_backward_ref(scale, signs, mask_grid, patch_size, weights, weight_patch_size, W)
    return g.to(pred_dtype), (-g).to(target_dtype) if grad_target else signs.new_empty(0, dtype=target_dtype)


def _weighted_mim_loss_backward_triton(grad, signs, mask_grid, weights, patch_size, weight_patch_size, eps, W,
                                       pred_dtype, target_dtype, grad_target):
    from .kernels import mim_loss

    B, C, H, _ = signs.shape
    scale = _backward_scale(grad, signs, mask_grid, patch_size, eps)
    gp, gt = mim_loss.weighted_mim_loss_backward(scale, signs, mask_grid, weights, patch_size=patch_size,
                                                 weight_patch_size=weight_patch_size, shape=(B, C, H, W),
                                                 pred_dtype=pred_dtype, target_dtype=target_dtype,
                                                 grad_target=grad_target)
    return gp, gt if gt is not None else signs.new_empty(0, dtype=target_dtype)


_define(weighted_mim_loss_backward_op, torch_ref=_weighted_mim_loss_backward_torch,
        triton=_weighted_mim_loss_backward_triton)


# --- autograd: the loss ops save the sign codes, the mask grid and the weights ------------------------


def _save_for_backward(ctx, pred, target, signs, mask_grid, weights, patch_size, weight_patch_size, eps):
    ctx.save_for_backward(signs, mask_grid, weights)
    ctx.patch_size, ctx.weight_patch_size, ctx.eps = patch_size, weight_patch_size, eps
    ctx.width, ctx.pred_dtype, ctx.target_dtype = pred.shape[-1], pred.dtype, target.dtype
    ctx.num_inputs = None  # set by the caller: how many Nones the backward returns after the two gradients


def _loss_input_grads(ctx, grad) -> tuple:
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


def _weighted_mim_loss_setup(ctx, inputs, output):
    pred, target, mask_grid, weights, patch_size, weight_patch_size, eps = inputs
    _, signs = output
    _save_for_backward(ctx, pred, target, signs, mask_grid, weights, patch_size, weight_patch_size, eps)
    ctx.num_inputs = len(inputs)
    ctx.mark_non_differentiable(signs)


def _fast_weighted_mim_loss_setup(ctx, inputs, output):
    pred, target, mask_grid, patch_size, weight_patch_size, *_, eps = inputs
    _, weights, signs = output
    _save_for_backward(ctx, pred, target, signs, mask_grid, weights, patch_size, weight_patch_size, eps)
    ctx.num_inputs = len(inputs)
    ctx.mark_non_differentiable(weights, signs)  # the weights are piecewise constant in target


weighted_mim_loss_op.register_autograd(lambda ctx, grad, _signs: _loss_input_grads(ctx, grad),
                                       setup_context=_weighted_mim_loss_setup)
fast_weighted_mim_loss_op.register_autograd(lambda ctx, grad, _weights, _signs: _loss_input_grads(ctx, grad),
                                            setup_context=_fast_weighted_mim_loss_setup)
