"""``kamim_fast::random_masking``: MAE's ``random_masking`` in one op: the selection of ``amt_masking``, then the
visible rows of (B, N, D) ``x`` gathered in sorted order: (x_kept (B, K, D), ids_shuffle, ids_restore, mask codes).
"""

from __future__ import annotations

import torch

from .. import _backend
from .._checks import FLOAT_DTYPES, check_masking, check_tensor
from ._common import AMT_AUTO, SORT_LIMIT, sort_size_not_supported
from .amt_masking import amt_masking_op_ref, masking_samples
from .amt_masking import fake as _amt_masking_fake
from .gather_patches import gather_patches_ref


def check(x, noise, weights, num_mask, num_throw, keep_first) -> None:
    check_tensor("x", x, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, N, D)")
    check_masking(noise, weights, num_mask, num_throw)
    if x.shape[:2] != noise.shape:
        raise ValueError(f"x must be (B, N, D) with (B, N) = {tuple(noise.shape)}, got shape {tuple(x.shape)}")
    if x.device != noise.device:
        raise ValueError(f"x must be on noise's device {noise.device}, got {x.device}")


@torch.library.custom_op("kamim_fast::random_masking", mutates_args=())
def op(
    x: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor | None, num_mask: int, num_throw: int,
    keep_first: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's ``random_masking`` in one op: the selection of ``amt_masking``, then the visible rows of (B, N, D)
    ``x`` in sorted order: (x_kept (B, K, D), ids_shuffle, ids_restore, mask codes). The public function
    passes no weights (noise alone orders the patches); ``weights`` gives the AMT-weighted variant, the kept
    patches of ``amt_masking`` gathered in the same launch."""
    return _backend.run("random_masking", x.device, x, noise, weights, num_mask, num_throw, keep_first)


@op.register_fake
def _(x, noise, weights, num_mask, num_throw, keep_first):
    B, N, D = x.shape
    return (x.new_empty((B, N - num_mask - num_throw, D)), *_amt_masking_fake(noise, weights, num_mask, num_throw,
                                                                                keep_first))


def _torch(x, noise, weights, num_mask, num_throw, keep_first):
    ids_shuffle, ids_restore, mask = amt_masking_op_ref(noise, weights, num_mask, num_throw, keep_first)
    start = 0 if keep_first else num_mask + num_throw
    kept = ids_shuffle[:, start:start + x.shape[1] - num_mask - num_throw]
    return gather_patches_ref(x, kept), ids_shuffle, ids_restore, mask


def _not_supported(x, noise, *args) -> list[str]:
    return sort_size_not_supported("x", noise)


def samples(s) -> list[tuple]:
    noise, weights, x = masking_samples(s)
    return [(*s.to(x, noise), None, 5, 0, True), (*s.to(x, noise, weights), 3, 2, False)]


def _setup(ctx, inputs, output):
    x, noise, weights, num_mask, num_throw, keep_first = inputs
    x_kept, ids_shuffle, _, _ = output
    ctx.save_for_backward(ids_shuffle)
    ctx.num_rows, ctx.kept_start, ctx.num_kept = x.shape[1], 0 if keep_first else num_mask + num_throw, x_kept.shape[1]
    ctx.x_shape, ctx.x_dtype = x.shape, x.dtype


def _backward(ctx, grad_kept, *_int_outputs):
    (ids_shuffle,) = ctx.saved_tensors
    if grad_kept is None:
        return torch.zeros(ctx.x_shape, dtype=ctx.x_dtype, device=ids_shuffle.device), None, None, None, None, None
    ids_keep = ids_shuffle[:, ctx.kept_start:ctx.kept_start + ctx.num_kept]
    return torch.ops.kamim_fast.gather_patches_backward(grad_kept, ids_keep, ctx.num_rows), None, None, None, None, None


op.register_autograd(_backward, setup_context=_setup)
_backend.register(op, check=check, auto=AMT_AUTO, samples=samples, differentiable=(0,), impls=[
    _backend.torch_impl(_torch),
    _backend.cpp_impl(("cpu", "cuda"), not_supported=_not_supported, limits=SORT_LIMIT),
])
