"""``kamim_fast::amt_masking``: the sort and partition of AMT's masking (weights, ``keep_first=False``) and of MAE's
(no weights, ``keep_first``): (ids_shuffle, ids_restore, int8 mask codes), all (B, N), from (B, N) noise.

Both methods sort the patches of an image by a key, ascending, ties broken by the lower index: MAE's key is the
noise; AMT's is -w/q (w/q descending) with q ~ Exp(1) the noise, and the key of a zero weight is q, after every
positive weight.
"""

from __future__ import annotations

import math

import torch

from .. import _backend
from .._constants import MASKED, THROWN, VISIBLE
from .._checks import check_masking
from ._common import AMT_AUTO, SORT_LIMIT, sort_size_not_supported

# --- the references ------------------------------------------------------------------------------------


def sort_keys_ref(noise: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The ascending sort key of csrc/amt.h: noise, or -w/q for w > 0 and q otherwise; NaN -> +inf, -0 -> +0."""
    key = noise if weights is None else torch.where(weights > 0, -(weights / noise), noise)
    key = torch.where(key.isnan(), torch.full_like(key, math.inf), key)
    return torch.where(key == 0, torch.zeros_like(key), key)


def amt_masking_op_ref(
    noise: torch.Tensor, weights: torch.Tensor | None, num_mask: int, num_throw: int, keep_first: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op ``torch.ops.kamim_fast.amt_masking`` in PyTorch: (ids_shuffle, ids_restore, int8 mask codes). The
    public :func:`kamim_fast.amt_masking_ref` (weights and ratios, like :func:`kamim_fast.amt_masking`) and
    :func:`kamim_fast.random_masking_ref` call it.

    Stable ascending sort of the keys; ids_restore by scatter of positions; the sorted positions are
    ``[visible | masked | thrown]`` when ``keep_first`` (MAE), ``[masked | thrown | visible]`` otherwise.
    """
    B, N = noise.shape
    ids_shuffle = torch.sort(sort_keys_ref(noise, weights), dim=1, stable=True).indices
    positions = torch.arange(N, device=noise.device).expand(B, N)
    ids_restore = torch.empty_like(ids_shuffle).scatter_(1, ids_shuffle, positions)
    K = N - num_mask - num_throw
    codes = torch.full((N,), THROWN, dtype=torch.int8, device=noise.device)
    if keep_first:
        codes[:K], codes[K:K + num_mask] = VISIBLE, MASKED
    else:
        codes[:num_mask], codes[num_mask + num_throw:] = MASKED, VISIBLE
    return ids_shuffle, ids_restore, codes[ids_restore]


# --- the checks ----------------------------------------------------------------------------------------


# --- the op --------------------------------------------------------------------------------------------


@torch.library.custom_op("kamim_fast::amt_masking", mutates_args=())
def op(
    noise: torch.Tensor, weights: torch.Tensor | None, num_mask: int, num_throw: int, keep_first: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids_shuffle, ids_restore, int8 mask codes), all (B, N), from (B, N) noise and optional weights: the
    sort and partition of ``amt_masking`` (weights, ``keep_first=False``) and of MAE (no weights, ``keep_first``)."""
    return _backend.run("amt_masking", noise.device, noise, weights, num_mask, num_throw, keep_first)


@op.register_fake
def fake(noise, weights, num_mask, num_throw, keep_first):
    B, N = noise.shape
    return (noise.new_empty((B, N), dtype=torch.int64), noise.new_empty((B, N), dtype=torch.int64),
            noise.new_empty((B, N), dtype=torch.int8))


def check(noise, weights, num_mask, num_throw, keep_first) -> None:
    check_masking(noise, weights, num_mask, num_throw)


def _not_supported(noise, weights, *args) -> list[str]:
    return sort_size_not_supported("weights" if weights is not None else "noise", noise)


def masking_samples(s) -> tuple:
    """(noise, weights, x) of the AMT samples: B = 2, N = 10, D = 4."""
    B, N, D = 2, 10, 4
    noise = torch.from_numpy(s.rng.random((B, N))).float() + 0.01
    weights = torch.from_numpy(s.rng.uniform(0.1, 1, (B, N))).float()
    x = torch.from_numpy(s.rng.standard_normal((B, N, D))).float()
    return noise, weights, x


def samples(s) -> list[tuple]:
    noise, weights, _ = masking_samples(s)
    return [(*s.to(noise, weights), 4, 3, False), (*s.to(noise), None, 6, 0, True),
            (*s.to(noise.double()), None, 6, 0, True)]


_backend.register(op, check=check, auto=AMT_AUTO, samples=samples, impls=[
    _backend.torch_impl(amt_masking_op_ref),
    _backend.cpp_impl(("cpu", "cuda"), not_supported=_not_supported, limits=SORT_LIMIT),
])
