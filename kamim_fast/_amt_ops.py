"""The ``kamim_fast::*`` ops of the AMT side: schemas, fake kernels, autograd, and their rows of the
implementation table (``_backend.TABLE``).

The extension implements each op for CPU and CUDA tensors as ``kamim_fast_cpp::<op>`` (``csrc/amt.cpp``,
``csrc/amt_cuda.cu``); the PyTorch references below define the semantics. Each op has the stem of the public
function of ``amt.py`` it serves; the adjoint pairs close under differentiation (gather_patches <->
gather_patches_backward, unshuffle_with_mask_token <-> unshuffle_with_mask_token_backward), so double
backward works too.
"""

from __future__ import annotations

import torch

from . import _backend
from .amt import MAX_CUDA_N, amt_masking_op_ref, check_weight_rows, gather_patches_ref, unshuffle_with_mask_token_ref

# auto: the extension on both devices (AMT has no Triton kernels).
AMT_AUTO = {"cpu": "cpp", "cuda": "cpp"}


def _define(op, *, torch_ref, cpp_kernel=None):
    """The op's row of the table: the extension on both devices."""
    return _backend.register(op, torch_ref=torch_ref, cpp=("cpu", "cuda"), auto=AMT_AUTO, cpp_kernel=cpp_kernel)


def _check_sort_size(name: str, noise: torch.Tensor) -> None:
    """The CUDA kernel sorts one image's keys in one block's shared memory."""
    if noise.device.type == "cuda" and noise.shape[1] > MAX_CUDA_N:
        raise ValueError(f"{name} on CUDA must have N <= {MAX_CUDA_N} patches per image for the extension (one "
                         f"block sorts them), got N = {noise.shape[1]}; KAMIM_FAST_BACKEND=torch has no limit")


# --- masking -----------------------------------------------------------------------------------------


@torch.library.custom_op("kamim_fast::amt_masking", mutates_args=())
def amt_masking_op(
    noise: torch.Tensor, weights: torch.Tensor | None, num_mask: int, num_throw: int, keep_first: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids_shuffle, ids_restore, int8 mask codes), all (B, N), from (B, N) noise and optional weights: the
    sort and partition of ``amt_masking`` (weights, ``keep_first=False``) and of MAE (no weights, ``keep_first``)."""
    return _backend.run("amt_masking", noise.device, noise, weights, num_mask, num_throw, keep_first)


@amt_masking_op.register_fake
def _amt_masking_fake(noise, weights, num_mask, num_throw, keep_first):
    B, N = noise.shape
    return (noise.new_empty((B, N), dtype=torch.int64), noise.new_empty((B, N), dtype=torch.int64),
            noise.new_empty((B, N), dtype=torch.int8))


def _amt_masking_torch(noise, weights, num_mask, num_throw, keep_first):
    if weights is not None and noise.device.type != "cuda":  # the C++ CPU kernel checks the same rows
        check_weight_rows(weights)
    return amt_masking_op_ref(noise, weights, num_mask, num_throw, keep_first)


def _amt_masking_cpp(noise, weights, num_mask, num_throw, keep_first):
    _check_sort_size("weights" if weights is not None else "noise", noise)
    return torch.ops.kamim_fast_cpp.amt_masking(noise, weights, num_mask, num_throw, keep_first)


_define(amt_masking_op, torch_ref=_amt_masking_torch, cpp_kernel=_amt_masking_cpp)


@torch.library.custom_op("kamim_fast::random_masking", mutates_args=())
def random_masking_op(
    x: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor | None, num_mask: int, num_throw: int,
    keep_first: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's ``random_masking`` in one op: the selection of ``amt_masking``, then the visible rows of (B, N, D)
    ``x`` in sorted order: (x_kept (B, K, D), ids_shuffle, ids_restore, mask codes). The public function
    passes no weights (noise alone orders the patches); ``weights`` gives the AMT-weighted variant, the kept
    patches of ``amt_masking`` gathered in the same launch."""
    return _backend.run("random_masking", x.device, x, noise, weights, num_mask, num_throw, keep_first)


@random_masking_op.register_fake
def _(x, noise, weights, num_mask, num_throw, keep_first):
    B, N, D = x.shape
    return (x.new_empty((B, N - num_mask - num_throw, D)),
            *_amt_masking_fake(noise, weights, num_mask, num_throw, keep_first))


def _random_masking_torch(x, noise, weights, num_mask, num_throw, keep_first):
    ids_shuffle, ids_restore, mask = _amt_masking_torch(noise, weights, num_mask, num_throw, keep_first)
    start = 0 if keep_first else num_mask + num_throw
    kept = ids_shuffle[:, start:start + x.shape[1] - num_mask - num_throw]
    return gather_patches_ref(x, kept), ids_shuffle, ids_restore, mask


def _random_masking_cpp(x, noise, weights, num_mask, num_throw, keep_first):
    _check_sort_size("x", noise)
    return torch.ops.kamim_fast_cpp.random_masking(x, noise, weights, num_mask, num_throw, keep_first)


_define(random_masking_op, torch_ref=_random_masking_torch, cpp_kernel=_random_masking_cpp)


# --- gather and unshuffle, with their adjoints ---------------------------------------------------------


@torch.library.custom_op("kamim_fast::gather_patches", mutates_args=())
def gather_patches_op(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``out[b, k] = x[b, ids[b, k]]``: (B, N, D), (B, K) int64 -> (B, K, D)."""
    return _backend.run("gather_patches", x.device, x, ids)


@gather_patches_op.register_fake
def _(x, ids):
    return x.new_empty((x.shape[0], ids.shape[1], x.shape[2]))


_define(gather_patches_op, torch_ref=gather_patches_ref)


@torch.library.custom_op("kamim_fast::gather_patches_backward", mutates_args=())
def gather_patches_backward_op(src: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """The adjoint of gather_patches: (B, K, D) rows added into zeros (B, n, D) at ``ids``."""
    return _backend.run("gather_patches_backward", src.device, src, ids, n)


@gather_patches_backward_op.register_fake
def _(src, ids, n):
    return src.new_empty((src.shape[0], n, src.shape[2]))


def _gather_patches_backward_torch(src, ids, n):
    out = src.new_zeros((src.shape[0], n, src.shape[2]))
    return out.index_put_((torch.arange(src.shape[0], device=src.device)[:, None], ids), src, accumulate=True)


_define(gather_patches_backward_op, torch_ref=_gather_patches_backward_torch)


@torch.library.custom_op("kamim_fast::unshuffle_with_mask_token", mutates_args=())
def unshuffle_with_mask_token_op(
    visible: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor, num_mask: int, num_throw: int,
    keep_first: bool, keep_thrown: bool,
) -> torch.Tensor:
    """Visible tokens (B, K, D) and the (D,) mask token back in original patch order (see
    ``unshuffle_with_mask_token``): (B, N, D), or (B, N - num_throw, D) with thrown positions dropped."""
    return _backend.run("unshuffle_with_mask_token", visible.device, visible, mask_token, ids_restore, num_mask,
                        num_throw, keep_first, keep_thrown)


@unshuffle_with_mask_token_op.register_fake
def _(visible, mask_token, ids_restore, num_mask, num_throw, keep_first, keep_thrown):
    N = ids_restore.shape[1]
    return visible.new_empty((visible.shape[0], N if keep_thrown else N - num_throw, visible.shape[2]))


_define(unshuffle_with_mask_token_op, torch_ref=unshuffle_with_mask_token_ref)


@torch.library.custom_op("kamim_fast::unshuffle_with_mask_token_backward", mutates_args=())
def unshuffle_with_mask_token_backward_op(
    grad: torch.Tensor, ids_restore: torch.Tensor, num_visible: int, num_mask: int, num_throw: int,
    keep_first: bool, keep_thrown: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adjoint of unshuffle_with_mask_token: (grad_visible (B, K, D), grad_token (D,)), the token's gradient
    summed over its positions in a fixed order."""
    return _backend.run("unshuffle_with_mask_token_backward", grad.device, grad, ids_restore, num_visible, num_mask,
                        num_throw, keep_first, keep_thrown)


@unshuffle_with_mask_token_backward_op.register_fake
def _(grad, ids_restore, num_visible, num_mask, num_throw, keep_first, keep_thrown):
    return grad.new_empty((grad.shape[0], num_visible, grad.shape[2])), grad.new_empty((grad.shape[2],))


def _unshuffle_with_mask_token_backward_torch(grad, ids_restore, num_visible, num_mask, num_throw, keep_first,
                                              keep_thrown):
    B, N = ids_restore.shape
    D, K = grad.shape[2], num_visible
    full = grad
    if not keep_thrown and num_throw:  # put the kept positions' gradients back in place, zeros where thrown
        start = K + num_mask if keep_first else num_mask
        thrown = (ids_restore >= start) & (ids_restore < start + num_throw)
        full = grad.new_zeros((B, N, D))
        full[~thrown] = grad.reshape(-1, D)
    # out[n] = in_order[ids_restore[n]], a permutation: its adjoint scatters back to sorted order
    in_order = torch.empty_like(full).scatter_(1, ids_restore.unsqueeze(-1).expand(-1, -1, D), full)
    visible = slice(0, K) if keep_first else slice(N - K, N)
    tokens = slice(K, N) if keep_first else slice(0, N - K)
    if not keep_thrown and num_throw:  # thrown positions carry no token gradient
        tokens = slice(K, K + num_mask) if keep_first else slice(0, num_mask)
    acc = torch.promote_types(grad.dtype, torch.float32)  # the C++ kernels' accumulator
    grad_token = in_order[:, tokens].to(acc).sum(dim=(0, 1)).to(grad.dtype)
    return in_order[:, visible].contiguous(), grad_token


_define(unshuffle_with_mask_token_backward_op, torch_ref=_unshuffle_with_mask_token_backward_torch)


# --- autograd --------------------------------------------------------------------------------------------


def _gather_patches_setup(ctx, inputs, output):
    x, ids = inputs
    ctx.save_for_backward(ids)
    ctx.num_rows = x.shape[1]


def _gather_patches_backward(ctx, grad):
    (ids,) = ctx.saved_tensors
    return torch.ops.kamim_fast.gather_patches_backward(grad, ids, ctx.num_rows), None


def _gather_patches_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _gather_patches_backward_backward(ctx, grad):
    (ids,) = ctx.saved_tensors
    return torch.ops.kamim_fast.gather_patches(grad, ids), None, None


def _random_masking_setup(ctx, inputs, output):
    x, noise, weights, num_mask, num_throw, keep_first = inputs
    x_kept, ids_shuffle, _, _ = output
    ctx.save_for_backward(ids_shuffle)
    ctx.num_rows, ctx.kept_start, ctx.num_kept = x.shape[1], 0 if keep_first else num_mask + num_throw, x_kept.shape[1]
    ctx.x_shape, ctx.x_dtype = x.shape, x.dtype


def _random_masking_backward(ctx, grad_kept, *_int_outputs):
    (ids_shuffle,) = ctx.saved_tensors
    if grad_kept is None:
        return torch.zeros(ctx.x_shape, dtype=ctx.x_dtype, device=ids_shuffle.device), None, None, None, None, None
    ids_keep = ids_shuffle[:, ctx.kept_start:ctx.kept_start + ctx.num_kept]
    return torch.ops.kamim_fast.gather_patches_backward(grad_kept, ids_keep, ctx.num_rows), None, None, None, None, None


def _unshuffle_with_mask_token_setup(ctx, inputs, output):
    visible, mask_token, ids_restore, num_mask, num_throw, keep_first, keep_thrown = inputs
    ctx.save_for_backward(ids_restore)
    ctx.layout = (num_mask, num_throw, keep_first, keep_thrown)
    ctx.num_visible, ctx.token_shape = visible.shape[1], mask_token.shape


def _unshuffle_with_mask_token_backward(ctx, grad):
    (ids_restore,) = ctx.saved_tensors
    gv, gt = torch.ops.kamim_fast.unshuffle_with_mask_token_backward(grad, ids_restore, ctx.num_visible, *ctx.layout)
    return gv, gt.reshape(ctx.token_shape), None, None, None, None, None


def _unshuffle_with_mask_token_backward_setup(ctx, inputs, output):
    grad, ids_restore, num_visible, num_mask, num_throw, keep_first, keep_thrown = inputs
    ctx.save_for_backward(ids_restore)
    ctx.layout = (num_mask, num_throw, keep_first, keep_thrown)
    ctx.grad_shape, ctx.grad_dtype, ctx.num_visible = grad.shape, grad.dtype, num_visible


def _unshuffle_with_mask_token_backward_backward(ctx, grad_visible, grad_token):
    (ids_restore,) = ctx.saved_tensors
    B, _, D = ctx.grad_shape
    if grad_visible is None:
        grad_visible = torch.zeros((B, ctx.num_visible, D), dtype=ctx.grad_dtype, device=ids_restore.device)
    if grad_token is None:
        grad_token = torch.zeros((D,), dtype=ctx.grad_dtype, device=ids_restore.device)
    grad = torch.ops.kamim_fast.unshuffle_with_mask_token(grad_visible, grad_token, ids_restore, *ctx.layout)
    return grad, None, None, None, None, None, None


gather_patches_op.register_autograd(_gather_patches_backward, setup_context=_gather_patches_setup)
gather_patches_backward_op.register_autograd(_gather_patches_backward_backward,
                                             setup_context=_gather_patches_backward_setup)
random_masking_op.register_autograd(_random_masking_backward, setup_context=_random_masking_setup)
unshuffle_with_mask_token_op.register_autograd(_unshuffle_with_mask_token_backward,
                                               setup_context=_unshuffle_with_mask_token_setup)
unshuffle_with_mask_token_backward_op.register_autograd(_unshuffle_with_mask_token_backward_backward,
                                                        setup_context=_unshuffle_with_mask_token_backward_setup)
