"""``kamim_fast::gather_patches`` and its adjoint ``kamim_fast::gather_patches_backward``: ``out[b, k] = x[b,
ids[b, k]]`` for (B, N, D) rows and (B, K) int64 ids, and the rows added back into zeros (B, n, D) at ``ids``.
The two close under differentiation, so double backward works too.
"""

from __future__ import annotations

import torch

from .. import _backend
from .._checks import FLOAT_DTYPES, check_same_device, check_tensor
from ._common import AMT_AUTO
from .amt_masking import masking_samples


def gather_patches_ref(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``torch.gather(x, 1, ids[..., None].expand(-1, -1, D))``, as MAE writes it."""
    return torch.gather(x, 1, ids.long().unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def check_ids(name: str, ids: torch.Tensor, x: torch.Tensor, x_name: str, n: int) -> None:
    """(B, K) int64 row indices of the (B, ., D) ``x_name`` on its device, in [0, n) (checked on CPU tensors:
    on CUDA tensors it would synchronise with the host)."""
    check_tensor(name, ids, ndims=(2,), shape_doc="(B, K)")
    if ids.shape[0] != x.shape[0]:
        raise ValueError(f"{name} must have {x_name}'s batch size {x.shape[0]}, got shape {tuple(ids.shape)}")
    if ids.dtype != torch.int64:
        raise TypeError(f"{name} must be int64, got {ids.dtype}")
    check_same_device(name, ids, x, x_name)
    if ids.device.type == "cpu" and ids.numel():
        low, high = torch.aminmax(ids)
        if low < 0 or high >= n:
            raise IndexError(f"{name} must be in [0, {n}), got {int(ids[(ids < 0) | (ids >= n)][0])}")


def check(x, ids) -> None:
    check_tensor("x", x, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, N, D)")
    check_ids("ids", ids, x, "x", x.shape[1])


@torch.library.custom_op("kamim_fast::gather_patches", mutates_args=())
def op(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``out[b, k] = x[b, ids[b, k]]``: (B, N, D), (B, K) int64 -> (B, K, D)."""
    return _backend.run("gather_patches", x.device, x, ids)


@op.register_fake
def _(x, ids):
    return x.new_empty((x.shape[0], ids.shape[1], x.shape[2]))


def samples(s) -> list[tuple]:
    _, _, x = masking_samples(s)
    B, N = x.shape[:2]
    ids = torch.stack([torch.from_numpy(s.rng.permutation(N)[:6]) for _ in range(B)])
    return [tuple(s.to(x, ids)), tuple(s.to(x.bfloat16(), ids[:, :2]))]


_backend.register(op, check=check, auto=AMT_AUTO, samples=samples, differentiable=(0,), impls=[
    _backend.torch_impl(gather_patches_ref),
    _backend.cpp_impl(("cpu", "cuda")),
])


# --- the adjoint ---------------------------------------------------------------------------------------


def check_backward(src, ids, n) -> None:
    check_tensor("src", src, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, K, D)")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    check_ids("ids", ids, src, "src", n)
    if ids.shape[1] != src.shape[1]:
        raise ValueError(f"ids must have shape (B, K) = {tuple(src.shape[:2])} (src's), got {tuple(ids.shape)}")


@torch.library.custom_op("kamim_fast::gather_patches_backward", mutates_args=())
def backward_op(src: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """The adjoint of gather_patches: (B, K, D) rows added into zeros (B, n, D) at ``ids``."""
    return _backend.run("gather_patches_backward", src.device, src, ids, n)


@backward_op.register_fake
def _(src, ids, n):
    return src.new_empty((src.shape[0], n, src.shape[2]))


def _backward_torch(src, ids, n):
    """The rows of repeated ids summed in float32 (float64 for float64) and rounded once, as the kernels do: an
    accumulation in half precision would round after every addend."""
    acc = torch.promote_types(src.dtype, torch.float32)
    out = src.new_zeros((src.shape[0], n, src.shape[2]), dtype=acc)
    rows = (torch.arange(src.shape[0], device=src.device)[:, None], ids)
    return out.index_put_(rows, src.to(acc), accumulate=True).to(src.dtype)


def backward_samples(s) -> list[tuple]:
    _, _, x = masking_samples(s)
    B, N = x.shape[:2]
    ids = torch.stack([torch.from_numpy(s.rng.permutation(N)[:6]) for _ in range(B)])
    # repeated ids in bfloat16: multiples of 1/64 below 4, whose float32 sums are exact in any order
    repeats = torch.from_numpy(s.rng.integers(0, N, (B, 24)))
    rows = (torch.from_numpy(s.rng.integers(-255, 256, (B, 24, 3))) / 64).to(torch.bfloat16)
    return [(*s.to(x[:, :6], ids), N), (*s.to(rows, repeats), N)]


_backend.register(backward_op, check=check_backward, auto=AMT_AUTO, samples=backward_samples, differentiable=(0,),
                  impls=[_backend.torch_impl(_backward_torch), _backend.cpp_impl(("cpu", "cuda"))])


# --- autograd ------------------------------------------------------------------------------------------


def _setup(ctx, inputs, output):
    x, ids = inputs
    ctx.save_for_backward(ids)
    ctx.num_rows = x.shape[1]


def _backward(ctx, grad):
    (ids,) = ctx.saved_tensors
    return torch.ops.kamim_fast.gather_patches_backward(grad, ids, ctx.num_rows), None


def _backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _backward_backward(ctx, grad):
    (ids,) = ctx.saved_tensors
    return torch.ops.kamim_fast.gather_patches(grad, ids), None, None


op.register_autograd(_backward, setup_context=_setup)
backward_op.register_autograd(_backward_backward, setup_context=_backward_setup)
