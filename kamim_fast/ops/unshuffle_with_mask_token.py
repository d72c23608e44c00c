"""``kamim_fast::unshuffle_with_mask_token`` and its adjoint ``kamim_fast::unshuffle_with_mask_token_backward``: the
decoder's re-assembly of (B, K, D) visible tokens and the (D,) mask token in original patch order (thrown
positions dropped or given the token), and its gradient. The two close under differentiation.
"""

from __future__ import annotations

import torch

from .. import _backend
from .._checks import FLOAT_DTYPES, check_same_device, check_tensor
from ._common import AMT_AUTO, REDUCTION
from .amt_masking import masking_samples


def unshuffle_with_mask_token_ref(
    visible: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor, num_mask: int, num_throw: int,
    keep_first: bool, keep_thrown: bool,
) -> torch.Tensor:
    """The decoder's re-assembly as the published code writes it: append (or prepend) mask tokens to the
    visible tokens in sorted order, gather by ids_restore, then drop thrown positions by boolean indexing.
    ``mask_token`` is (D,) of visible's dtype."""
    B, K, D = visible.shape
    N = ids_restore.shape[1]
    tokens = mask_token.reshape(1, 1, D).expand(B, N - K, D)
    in_order = torch.cat([visible, tokens] if keep_first else [tokens, visible], dim=1)
    out = torch.gather(in_order, 1, ids_restore.unsqueeze(-1).expand(-1, -1, D))
    if keep_thrown or num_throw == 0:
        return out
    start = K + num_mask if keep_first else num_mask
    thrown = (ids_restore >= start) & (ids_restore < start + num_throw)
    return out[~thrown].reshape(B, N - num_throw, D)


def check_layout(ids_restore, B, num_visible, num_mask, num_throw, like, like_name) -> None:
    """(B, N) int64 ids_restore on ``like``'s device holding a permutation of 0..N-1 in every row (checked on
    CPU tensors), and the visible, masked and thrown counts adding up to N."""
    check_tensor("ids_restore", ids_restore, ndims=(2,), shape_doc="(B, N)")
    if ids_restore.dtype != torch.int64:
        raise TypeError(f"ids_restore must be int64, got {ids_restore.dtype}")
    N = ids_restore.shape[1]
    if not (num_mask >= 0 and num_throw >= 0 and num_visible + num_mask + num_throw == N):
        raise ValueError(f"the visible, masked and thrown counts must add up to N = {N}, got {num_visible} + "
                         f"{num_mask} + {num_throw}")
    if ids_restore.shape[0] != B:
        raise ValueError(f"ids_restore must have batch size {B}, got {ids_restore.shape[0]}")
    check_same_device("ids_restore", ids_restore, like, like_name)
    if ids_restore.device.type == "cpu" and ids_restore.numel():
        low, high = torch.aminmax(ids_restore)
        if low < 0 or high >= N:
            bad = (ids_restore < 0) | (ids_restore >= N)
            raise IndexError(f"ids_restore must be in [0, {N}), got {int(ids_restore[bad][0])}")
        seen = torch.zeros(ids_restore.shape, dtype=torch.bool).scatter_(1, ids_restore, True)
        if not seen.all():  # N indices in [0, N) that miss one repeat another
            b = int((~seen).any(1).nonzero()[0])
            r = int((torch.bincount(ids_restore[b], minlength=N) > 1).nonzero()[0])
            raise ValueError(f"ids_restore must hold a permutation of 0..N-1 in every row; {r} appears twice")


def check(visible, mask_token, ids_restore, num_mask, num_throw, keep_first, keep_thrown) -> None:
    check_tensor("visible", visible, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, K, D)")
    B, K, D = visible.shape
    check_tensor("mask_token", mask_token)
    if mask_token.numel() != D or mask_token.dtype != visible.dtype:
        raise ValueError(f"mask_token must hold D = {D} values of visible's dtype {visible.dtype}, got shape "
                         f"{tuple(mask_token.shape)} {mask_token.dtype}")
    check_same_device("mask_token", mask_token, visible, "visible")
    check_layout(ids_restore, B, K, num_mask, num_throw, visible, "visible")


@torch.library.custom_op("kamim_fast::unshuffle_with_mask_token", mutates_args=())
def op(
    visible: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor, num_mask: int, num_throw: int,
    keep_first: bool, keep_thrown: bool,
) -> torch.Tensor:
    """Visible tokens (B, K, D) and the (D,) mask token back in original patch order (see
    ``unshuffle_with_mask_token``): (B, N, D), or (B, N - num_throw, D) with thrown positions dropped."""
    return _backend.run("unshuffle_with_mask_token", visible.device, visible, mask_token, ids_restore, num_mask,
                        num_throw, keep_first, keep_thrown)


@op.register_fake
def _(visible, mask_token, ids_restore, num_mask, num_throw, keep_first, keep_thrown):
    N = ids_restore.shape[1]
    return visible.new_empty((visible.shape[0], N if keep_thrown else N - num_throw, visible.shape[2]))


def _ids_restore(s, B, N):
    return torch.stack([torch.from_numpy(s.rng.permutation(N)) for _ in range(B)])


def samples(s) -> list[tuple]:
    _, _, x = masking_samples(s)
    B, N, D = x.shape
    ids_restore = _ids_restore(s, B, N)
    token = torch.from_numpy(s.rng.standard_normal(D)).float()
    return [(*s.to(x[:, :5], token, ids_restore), 5, 0, True, False),
            (*s.to(x[:, :3], token, ids_restore), 4, 3, False, False),
            (*s.to(x[:, :3], token, ids_restore), 4, 3, False, True)]


_backend.register(op, check=check, auto=AMT_AUTO, samples=samples, differentiable=(0, 1), impls=[
    _backend.torch_impl(unshuffle_with_mask_token_ref),
    _backend.cpp_impl(("cpu", "cuda")),
])


# --- the adjoint ---------------------------------------------------------------------------------------


def check_backward(grad, ids_restore, num_visible, num_mask, num_throw, keep_first, keep_thrown) -> None:
    check_tensor("grad", grad, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, N, D)")
    check_layout(ids_restore, grad.shape[0], num_visible, num_mask, num_throw, grad, "grad")
    N = ids_restore.shape[1]
    n_out = N if keep_thrown else N - num_throw
    if grad.shape[1] != n_out:
        raise ValueError(f"grad must be (B, {n_out}, D) for ids_restore of shape {tuple(ids_restore.shape)}, got "
                         f"{tuple(grad.shape)}")


@torch.library.custom_op("kamim_fast::unshuffle_with_mask_token_backward", mutates_args=())
def backward_op(
    grad: torch.Tensor, ids_restore: torch.Tensor, num_visible: int, num_mask: int, num_throw: int,
    keep_first: bool, keep_thrown: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adjoint of unshuffle_with_mask_token: (grad_visible (B, K, D), grad_token (D,)), the token's gradient
    summed over its positions in a fixed order."""
    return _backend.run("unshuffle_with_mask_token_backward", grad.device, grad, ids_restore, num_visible, num_mask,
                        num_throw, keep_first, keep_thrown)


@backward_op.register_fake
def _(grad, ids_restore, num_visible, num_mask, num_throw, keep_first, keep_thrown):
    return grad.new_empty((grad.shape[0], num_visible, grad.shape[2])), grad.new_empty((grad.shape[2],))


def _backward_torch(grad, ids_restore, num_visible, num_mask, num_throw, keep_first, keep_thrown):
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


def backward_samples(s) -> list[tuple]:
    _, _, x = masking_samples(s)
    B, N, _ = x.shape
    ids_restore = _ids_restore(s, B, N)
    return [(*s.to(x, ids_restore), 5, 5, 0, True, False), (*s.to(x[:, :7], ids_restore), 3, 4, 3, False, False)]


_backend.register(backward_op, check=check_backward, auto=AMT_AUTO, samples=backward_samples,
                  tolerances={1: REDUCTION}, differentiable=(0,),
                  impls=[_backend.torch_impl(_backward_torch), _backend.cpp_impl(("cpu", "cuda"))])


# --- autograd ------------------------------------------------------------------------------------------


def _setup(ctx, inputs, output):
    visible, mask_token, ids_restore, num_mask, num_throw, keep_first, keep_thrown = inputs
    ctx.save_for_backward(ids_restore)
    ctx.layout = (num_mask, num_throw, keep_first, keep_thrown)
    ctx.num_visible, ctx.token_shape = visible.shape[1], mask_token.shape


def _backward(ctx, grad):
    (ids_restore,) = ctx.saved_tensors
    gv, gt = torch.ops.kamim_fast.unshuffle_with_mask_token_backward(grad, ids_restore, ctx.num_visible, *ctx.layout)
    return gv, gt.reshape(ctx.token_shape), None, None, None, None, None


def _backward_setup(ctx, inputs, output):
    grad, ids_restore, num_visible, num_mask, num_throw, keep_first, keep_thrown = inputs
    ctx.save_for_backward(ids_restore)
    ctx.layout = (num_mask, num_throw, keep_first, keep_thrown)
    ctx.grad_shape, ctx.grad_dtype, ctx.num_visible = grad.shape, grad.dtype, num_visible


def _backward_backward(ctx, grad_visible, grad_token):
    (ids_restore,) = ctx.saved_tensors
    B, _, D = ctx.grad_shape
    if grad_visible is None:
        grad_visible = torch.zeros((B, ctx.num_visible, D), dtype=ctx.grad_dtype, device=ids_restore.device)
    if grad_token is None:
        grad_token = torch.zeros((D,), dtype=ctx.grad_dtype, device=ids_restore.device)
    grad = torch.ops.kamim_fast.unshuffle_with_mask_token(grad_visible, grad_token, ids_restore, *ctx.layout)
    return grad, None, None, None, None, None, None


op.register_autograd(_backward, setup_context=_setup)
backward_op.register_autograd(_backward_backward, setup_context=_backward_setup)
