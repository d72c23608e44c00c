"""AMT: attention-driven masking and throwing, and MAE's token selection (REFERENCE.md sections 5 and 6).

Token selection, the gather of kept patches and the decoder's unshuffle run at every step of an
MAE/SimMIM-style trainer; here they are the C++/CUDA ops of ``csrc/`` (``torch.ops.kamim_fast.*``,
loaded by ``_ext.py``; each op in its module of ``kamim_fast/ops/``), each with its PyTorch reference
(``*_ref``) beside it. ``KAMIM_FAST_BACKEND`` picks between them (see ``_backend.py``).

Order of one image. Both methods sort the patches by a key, ascending, ties broken by the lower index:

- MAE (:func:`random_masking`): key = noise, ``noise ~ U[0, 1)``; the first K = int(N * (1 - mask_ratio))
  are kept (visible), the rest masked.
- AMT (:func:`amt_masking`): key = -w/q with ``q ~ Exp(1)``, i.e. w/q descending, which is equal in
  distribution to ``torch.multinomial(w, N)`` (without replacement); the first int(N * mask_ratio) are
  masked (1), the next int(N * throw_ratio) thrown (-1), the rest visible (0), as the published code
  partitions it. Patches of weight 0 come after every positive weight, in uniformly random order (the
  published ``torch.multinomial`` call refuses rows with fewer than N positive weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from ._checks import FLOAT_DTYPES, check_bool, check_int, check_same_device, check_tensor, is_number
from ._constants import (  # noqa: F401  (public here)
    AMT_MASK_RATIO,
    AMT_THROW_RATIO,
    MAE_MASK_RATIO,
    MASKED,
    MAX_CUDA_N,
    SIMMIM_AMT_MASK_RATIO,
    SIMMIM_AMT_THROW_RATIO,
    THROWN,
    VISIBLE,
)
from ._checks import check_weight_rows  # noqa: F401  (public here)
from .ops.amt_masking import amt_masking_op_ref, sort_keys_ref  # noqa: F401  (public here)
from .ops.gather_patches import gather_patches_ref  # noqa: F401  (public here)
from .ops.unshuffle_with_mask_token import unshuffle_with_mask_token_ref  # noqa: F401  (public here)

ID_DTYPES = (torch.int32, torch.int64)


class AMTMask(NamedTuple):
    """The result of :func:`amt_masking`.

    Attributes:
        ids_shuffle: (B, N) int64, patch indices in sampling order (MAE's meaning).
        ids_restore: (B, N) int64, position of each patch in that order (the inverse permutation).
        ids_keep: (B, K) int64, the visible patches: ``ids_shuffle[:, num_masked + num_thrown:]`` (a view).
        mask: (B, N) int8, 1 masked, -1 thrown, 0 visible (the published encoding).
        num_masked: masked patches per image, int(N * mask_ratio).
        num_thrown: thrown patches per image, int(N * throw_ratio).
    """

    ids_shuffle: torch.Tensor
    ids_restore: torch.Tensor
    ids_keep: torch.Tensor
    mask: torch.Tensor
    num_masked: int
    num_thrown: int

    @property
    def masked(self) -> torch.Tensor:
        """(B, N) bool, True where the patch is masked (what the loss counts)."""
        return self.mask == MASKED

    @property
    def thrown(self) -> torch.Tensor:
        """(B, N) bool, True where the patch is thrown away (seen by neither encoder nor loss)."""
        return self.mask == THROWN

    @property
    def visible(self) -> torch.Tensor:
        """(B, N) bool, True where the encoder sees the patch."""
        return self.mask == VISIBLE

    @property
    def ids_unthrown(self) -> torch.Tensor:
        """(B, N - num_thrown) int64: the masked and visible patches, ascending. These are the rows of
        :func:`unshuffle_with_mask_token`'s output (their position embeddings and targets are gathered with
        it), and what an encoder that keeps masked tokens (SimMIM) runs on. A stable sort of the thrown
        flags: fixed count, no host synchronisation."""
        N = self.mask.shape[1]
        thrown = (self.mask == THROWN).to(torch.uint8)
        return torch.sort(thrown, dim=1, stable=True).indices[:, : N - self.num_thrown]


# --- argument checks ------------------------------------------------------------------------------------


def amt_counts(n: int, mask_ratio: float = AMT_MASK_RATIO, throw_ratio: float = AMT_THROW_RATIO,
               rounding: str = "floor") -> tuple[int, int]:
    """(num_masked, num_thrown) of ``n`` patches (or cells), as each published trainer rounds them.

    - ``"floor"`` (:func:`amt_masking`'s): int(n * mask_ratio), int(n * throw_ratio).
    - ``"mae-amt"`` (mae-AMT's ``amt_masking_throwing``): int(n * mask_ratio) masked; the visible ones start
      at int(n * (mask_ratio + throw_ratio)). It throws one more than ``"floor"`` where the two fractional
      parts add up past 1 (n = 4 at 0.45 / 0.4); at n = 196 both give 88 and 78.
    - ``"ceil"`` (SimMIM-AMT's ``maskgenerate``, SimMIM's mask generator): ceil(n * ratio) each; 22 and 13
      of 49 cells at 0.44 / 0.26, where ``"floor"`` gives 21 and 12.

    Raises ValueError naming the ratios when the counts add up past n.

    Example:
        >>> amt_counts(196), amt_counts(4, rounding="mae-amt"), amt_counts(49, 0.44, 0.26, rounding="ceil")
        ((88, 78), (1, 2), (22, 13))
    """
    n = check_int("n", n, 0, 1 << 40)
    mask_ratio, throw_ratio = _check_ratio("mask_ratio", mask_ratio), _check_ratio("throw_ratio", throw_ratio)
    if rounding == "floor":
        counts = int(n * mask_ratio), int(n * throw_ratio)
    elif rounding == "mae-amt":
        counts = int(n * mask_ratio), int(n * (mask_ratio + throw_ratio)) - int(n * mask_ratio)
    elif rounding == "ceil":
        counts = math.ceil(n * mask_ratio), math.ceil(n * throw_ratio)
    else:
        raise ValueError(f"rounding must be one of ('floor', 'mae-amt', 'ceil'), got {rounding!r}")
    if sum(counts) > n:
        raise ValueError(f"mask_ratio + throw_ratio must be <= 1, got {mask_ratio} + {throw_ratio} "
                         f"({counts[0]} + {counts[1]} patches of N = {n})")
    return counts


def _check_ratio(name: str, value: object) -> float:
    if not is_number(value):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__} {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value


def _check_noise(noise: object, like: torch.Tensor) -> torch.Tensor:
    check_tensor("noise", noise, dtypes=FLOAT_DTYPES, ndims=(2,), shape_doc="(B, N)")
    if noise.shape != like.shape[:2]:
        raise ValueError(f"noise must have shape (B, N) = {tuple(like.shape[:2])}, got {tuple(noise.shape)}")
    if noise.device != like.device:
        raise ValueError(f"noise must be on {like.device}, got {noise.device}")
    return noise


# --- references -------------------------------------------------------------------------------------------


def amt_masking_ref(weights: torch.Tensor, noise: torch.Tensor, mask_ratio: float = 0.45,
                    throw_ratio: float = 0.4) -> AMTMask:
    """:func:`amt_masking` in PyTorch for given noise q (B, N) > 0 (float32 or float64, like weights)."""
    N = weights.shape[1]
    nm, nt = int(N * mask_ratio), int(N * throw_ratio)
    ids_shuffle, ids_restore, mask = amt_masking_op_ref(noise, weights, nm, nt, False)
    return AMTMask(ids_shuffle, ids_restore, ids_shuffle[:, nm + nt:], mask, nm, nt)


def random_masking_ref(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """MAE's random_masking on the references: (x_kept, mask (B, N) float, 1 = removed, ids_restore)."""
    N = x.shape[1]
    K = int(N * (1 - mask_ratio))
    ids_shuffle, ids_restore, codes = amt_masking_op_ref(noise, None, N - K, 0, True)
    return gather_patches_ref(x, ids_shuffle[:, :K]), codes.to(torch.get_default_dtype()), ids_restore


def amt_cell_weights_ref(attn: torch.Tensor, cell: int) -> torch.Tensor:
    """:func:`amt_cell_weights` by average pooling: mean over each cell times its area."""
    return torch.nn.functional.avg_pool2d(attn.unsqueeze(1), cell).squeeze(1) * (cell * cell)


# --- public functions ---------------------------------------------------------------------------------------


def amt_masking(
    weights: torch.Tensor,
    *,
    mask_ratio: float = AMT_MASK_RATIO,
    throw_ratio: float = AMT_THROW_RATIO,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    num_masked: int | None = None,
    num_thrown: int | None = None,
) -> AMTMask:
    """AMT's attention-driven masking and throwing: one weighted random permutation per image.

    Patches are ordered as ``torch.multinomial(weights, N)`` (without replacement) would draw them, by
    ``weights / q`` descending with ``q ~ Exp(1)``; in that order the first int(N * mask_ratio) are masked,
    the next int(N * throw_ratio) thrown and the rest visible, as the published code partitions it. The
    counts are the same for every image, so shapes are static and nothing synchronises with the host.

    Weights are checked on CPU tensors: a row holding NaN, inf or a negative value, or only zeros, raises
    ValueError. CUDA tensors are not checked (it would synchronise); there the kernel orders NaN, negative
    and zero weights alike, after every positive weight, in random order, so ids stay permutations and
    counts exact. Zero weights in a row with some positive weight are valid everywhere: those patches come
    last (thrown or visible before masked), in uniformly random order.

    Args:
        weights: per-patch attention (or any saliency) >= 0; fp16/bf16 are sorted in float32.
        mask_ratio: share of masked patches (AMT's MAE default 0.45; SimMIM variant 0.44).
        throw_ratio: share of thrown patches (0.4; SimMIM variant 0.26). mask_ratio + throw_ratio <= 1.
        noise: q ~ Exp(1) to use instead of drawing it, making the result deterministic.
        generator: the generator q is drawn from (not with ``noise``).
        num_masked, num_thrown: the counts themselves, instead of int(N * ratio) (both or neither), for
            trainers that round otherwise: mae-AMT's model throws int(N * (mask_ratio + throw_ratio)) -
            int(N * mask_ratio), SimMIM-AMT's mask generator takes ceil(N * ratio) (see :func:`amt_counts`).

    Returns:
        :class:`AMTMask` with ``ids_shuffle``, ``ids_restore``, ``ids_keep``, ``mask`` (int8: 1 masked,
        -1 thrown, 0 visible), the counts, and the bool views ``masked``, ``thrown``, ``visible``.

    Shape:
        - weights, noise: (B, N); N <= 4096 for the CUDA kernel.
        - ids_shuffle, ids_restore, mask: (B, N); ids_keep: (B, N - num_masked - num_thrown).

    Example:
        >>> weights = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
        >>> m = amt_masking(weights, mask_ratio=0.4, throw_ratio=0.2, noise=torch.ones(1, 5))
        >>> m.ids_shuffle.tolist(), m.mask.tolist()  # q = 1: by weight descending, the zero weight last
        ([[4, 3, 2, 1, 0]], [[0, 0, -1, 1, 1]])
        >>> m.ids_keep.tolist(), int(m.masked.sum()), m.num_thrown
        ([[1, 0]], 2, 1)
    """
    check_tensor("weights", weights, dtypes=FLOAT_DTYPES, ndims=(2,), shape_doc="(B, N)")
    B, N = weights.shape
    if num_masked is None and num_thrown is None:
        num_mask, num_throw = amt_counts(N, mask_ratio, throw_ratio)
    elif num_masked is None or num_thrown is None:
        raise ValueError(f"pass num_masked and num_thrown together, got num_masked={num_masked!r}, "
                         f"num_thrown={num_thrown!r}")
    else:
        num_mask, num_throw = check_int("num_masked", num_masked, 0, N), check_int("num_thrown", num_thrown, 0, N)
        if num_mask + num_throw > N:
            raise ValueError(f"num_masked + num_thrown must be <= N = {N}, got {num_mask} + {num_throw}")
    dtype = torch.float64 if weights.dtype == torch.float64 else torch.float32
    if noise is not None:
        if generator is not None:
            raise ValueError("pass noise or generator, not both")
        noise = _check_noise(noise, weights)
        dtype = torch.float64 if noise.dtype == torch.float64 else dtype
        noise = noise.to(dtype)
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    weights = weights.detach().to(dtype)
    if noise is None:
        noise = torch.empty((B, N), dtype=dtype, device=weights.device).exponential_(generator=generator)
    ids_shuffle, ids_restore, mask = torch.ops.kamim_fast.amt_masking(noise, weights, num_mask, num_throw, False)
    return AMTMask(ids_shuffle, ids_restore, ids_shuffle[:, num_mask + num_throw:], mask, num_mask, num_throw)


def gather_patches(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` named by ``ids``, per image: ``out[b, k] = x[b, ids[b, k]]``.

    Differentiable: the backward writes each gradient row into zeros, one write per element and no
    atomics when ids are distinct (repeated ids are summed in a fixed order). Any float dtype and any D
    (16-byte loads where row size and alignment allow); no (B, K, D) index is materialised.

    Args:
        x: tokens or patches.
        ids: row indices in [0, N), e.g. ``AMTMask.ids_keep``; int64 or int32.

    Returns:
        The gathered rows, x's dtype.

    Shape:
        - x: (B, N, D); ids: (B, K); output: (B, K, D).

    Example:
        >>> x = torch.arange(12.0).reshape(1, 4, 3)
        >>> gather_patches(x, torch.tensor([[3, 1]]))
        tensor([[[ 9., 10., 11.],
                 [ 3.,  4.,  5.]]])
    """
    check_tensor("x", x)
    check_tensor("ids", ids, dtypes=ID_DTYPES)
    check_same_device("ids", ids, x, "x")  # torch dispatches on the tensors' devices
    return torch.ops.kamim_fast.gather_patches(x, ids.long())


def scatter_patches(src: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """The adjoint of :func:`gather_patches`: rows of ``src`` put back at ``ids`` in zeros,
    ``out[b, ids[b, k]] = src[b, k]`` (repeated ids summed in ascending k, in float32 for half inputs).

    Differentiable (its backward is :func:`gather_patches`); no atomics, deterministic.

    Args:
        src: the rows, e.g. an encoder's outputs for ``AMTMask.ids_unthrown``.
        ids: (B, K) row indices in [0, n); int64 or int32.
        n: the number of rows of the output.

    Returns:
        (B, n, D), src's dtype; rows no id names are zero.

    Example:
        >>> scatter_patches(torch.tensor([[[1.0], [2.0]]]), torch.tensor([[2, 0]]), 3).flatten().tolist()
        [2.0, 0.0, 1.0]
    """
    check_tensor("src", src)
    check_tensor("ids", ids, dtypes=ID_DTYPES)
    check_same_device("ids", ids, src, "src")  # torch dispatches on the tensors' devices
    n = check_int("n", n, 0, 1 << 40)  # a Python int, NumPy int or 0-d tensor: the op's int
    return torch.ops.kamim_fast.gather_patches_backward(src, ids.long(), n)


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's ``random_masking`` as a drop-in: one fused select-and-gather op, equal to MAE's for the same noise.

    Patches are sorted by noise ascending (ties: lower index first, i.e. a stable argsort); the first
    K = int(N * (1 - mask_ratio)) are kept.

    Args:
        x: patch tokens (without the class token).
        mask_ratio: share of removed patches, in [0, 1].
        noise: ``torch.rand(B, N)`` when omitted, as MAE draws it.

    Returns:
        (x_kept (B, K, D), mask (B, N) in the default float dtype with 1 = removed, ids_restore (B, N) int64),
        differentiable with respect to x.

    Shape:
        - x: (B, N, D); noise: (B, N).

    Example:
        >>> x = torch.arange(8.0).reshape(1, 4, 2)
        >>> x_kept, mask, ids_restore = random_masking(x, 0.5, noise=torch.tensor([[0.4, 0.1, 0.9, 0.2]]))
        >>> x_kept.tolist(), mask.tolist(), ids_restore.tolist()
        ([[[2.0, 3.0], [6.0, 7.0]]], [[1.0, 0.0, 1.0, 0.0]], [[2, 0, 3, 1]])
    """
    check_tensor("x", x, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, N, D)")
    mask_ratio = _check_ratio("mask_ratio", mask_ratio)
    B, N, _ = x.shape
    K = int(N * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(B, N, device=x.device)
    else:
        noise = _check_noise(noise, x)
        noise = noise if noise.dtype in (torch.float32, torch.float64) else noise.float()
    x_kept, _, ids_restore, codes = torch.ops.kamim_fast.random_masking(x, noise.detach(), None, N - K, 0, True)
    return x_kept, codes.to(torch.get_default_dtype()), ids_restore


def unshuffle_with_mask_token(
    visible: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor | AMTMask, keep_thrown: bool = False
) -> torch.Tensor:
    """The decoder's re-assembly: visible tokens and mask tokens back in the original patch order.

    What it must know about thrown positions comes with ``ids_restore``:

    - a (B, N) tensor (MAE, from :func:`random_masking`): the sorted order holds the K = visible.shape[1]
      visible patches first, then masked ones; nothing is thrown. Output (B, N, D), as MAE's
      ``torch.gather(torch.cat([x, mask_tokens], 1), 1, ids_restore...)``.
    - an :class:`AMTMask`: its counts give the layout (masked, thrown, visible). Thrown positions are
      dropped, as the published decoder does: output (B, N - num_thrown, D) in original order of the
      remaining positions (their targets: ``target[~m.thrown].reshape(B, -1, ...)``). With
      ``keep_thrown=True`` they get the mask token too: output (B, N, D).

    Differentiable with respect to ``visible`` and ``mask_token``; the mask token's gradient is the sum over
    its positions in a fixed order (deterministic). The class token is not handled: strip it before and
    prepend it after, as MAE's decoder does.

    Args:
        visible: the decoder's embedding of the encoder's visible tokens, in ``ids_keep`` order.
        mask_token: the learned mask token, (D,) or MAE's (1, 1, D); cast to visible's dtype.
        ids_restore: (B, N) int64 tensor, or the :class:`AMTMask` the tokens were selected with.
        keep_thrown: give thrown positions the mask token instead of dropping them.

    Returns:
        The tokens in original order, visible's dtype.

    Shape:
        - visible: (B, K, D); output: (B, N - num_thrown, D), or (B, N, D) with keep_thrown or no throwing.

    Example:
        >>> m = amt_masking(torch.tensor([[1.0, 4.0, 3.0, 2.0]]), mask_ratio=0.25, throw_ratio=0.25,
        ...                 noise=torch.ones(1, 4))  # 1 masked, 2 thrown, 3 and 0 visible
        >>> visible = torch.tensor([[[30.0], [0.0]]])  # tokens of patches 3 and 0 (ids_keep order)
        >>> unshuffle_with_mask_token(visible, torch.tensor([-1.0]), m).flatten().tolist()
        [0.0, -1.0, 30.0]
        >>> unshuffle_with_mask_token(visible, torch.tensor([-1.0]), m, keep_thrown=True).flatten().tolist()
        [0.0, -1.0, -1.0, 30.0]
    """
    check_tensor("visible", visible, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, K, D)")
    check_tensor("mask_token", mask_token, dtypes=FLOAT_DTYPES, ndims=(1, 2, 3), shape_doc="(D,) or (1, 1, D)")
    keep_thrown = check_bool("keep_thrown", keep_thrown)
    B, K, D = visible.shape
    if mask_token.numel() != D:
        raise ValueError(f"mask_token must hold D = {D} values (visible's last dim), got shape {tuple(mask_token.shape)}")
    check_same_device("mask_token", mask_token, visible, "visible")
    if isinstance(ids_restore, AMTMask):
        num_mask, num_throw, keep_first = ids_restore.num_masked, ids_restore.num_thrown, False
        ids_restore = ids_restore.ids_restore
        check_tensor("ids_restore", ids_restore, dtypes=(torch.int64,), ndims=(2,), shape_doc="(B, N)")
        if K != ids_restore.shape[1] - num_mask - num_throw:
            raise ValueError(f"visible must hold the mask's {ids_restore.shape[1] - num_mask - num_throw} visible "
                             f"tokens per image, got shape {tuple(visible.shape)}")
    else:
        check_tensor("ids_restore", ids_restore, dtypes=(torch.int64,), ndims=(2,), shape_doc="(B, N)")
        if ids_restore.shape[1] < K:
            raise ValueError(f"ids_restore must have N >= K = {K} columns, got shape {tuple(ids_restore.shape)}")
        num_mask, num_throw, keep_first = ids_restore.shape[1] - K, 0, True
    if ids_restore.shape[0] != B:
        raise ValueError(f"ids_restore must have visible's batch size {B}, got shape {tuple(ids_restore.shape)}")
    check_same_device("ids_restore", ids_restore, visible, "visible")
    token = mask_token.reshape(D).to(visible.dtype)
    return torch.ops.kamim_fast.unshuffle_with_mask_token(visible, token, ids_restore, num_mask, num_throw, keep_first,
                                                          keep_thrown)


def amt_cell_weights(attn: torch.Tensor, cell: int) -> torch.Tensor:
    """Sums a patch map over square cells of ``cell`` x ``cell`` patches, as AMT's SimMIM variant does
    before sampling (e.g. 14x14 patches of 16 px into 7x7 mask cells of 32 px: cell = 2).

    Args:
        attn: per-patch attention as a (B, h, w) map, e.g. ``vit_class_attention(...).reshape(B, h, w)``.
        cell: the cell side in patches; it must divide h and w.

    Returns:
        (B, h / cell, w / cell) sums; ``.flatten(1)`` gives :func:`amt_masking`'s weights.

    Example:
        >>> amt_cell_weights(torch.arange(16.0).reshape(1, 4, 4), 2)
        tensor([[[10., 18.],
                 [42., 50.]]])
    """
    check_tensor("attn", attn, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, h, w)")
    B, h, w = attn.shape
    cell = check_int("cell", cell, 1, max(1, min(h, w)))
    if h % cell or w % cell:
        raise ValueError(f"cell must divide attn's h = {h} and w = {w}, got {cell}")
    return attn.reshape(B, h // cell, cell, w // cell, cell).sum(dim=(2, 4))


def _attention_module(model: nn.Module, attention: nn.Module | None = None) -> nn.Module:
    if attention is None:
        blocks = getattr(model, "blocks", None)
        ok = isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks)
        attention = getattr(blocks[-1], "attn", None) if ok else None
        if attention is None:
            raise TypeError(f"model must be a timm VisionTransformer or name its last attention block as "
                            f"model.blocks[-1].attn (or pass attention=), got {type(model).__name__}")
    elif not isinstance(attention, nn.Module):
        raise TypeError(f"attention must be an nn.Module (the last block's attention), got {type(attention).__name__}")
    if not all(hasattr(attention, a) for a in ("qkv", "num_heads", "scale")):
        raise TypeError(f"the last attention block must be a timm-style Attention (qkv, num_heads, scale) as in a "
                        f"timm VisionTransformer, got {type(attention).__name__} in model {type(model).__name__}")
    return attention


def _normalise_heads(row: torch.Tensor) -> torch.Tensor:
    """(B, heads, N) -> (B, N): min-max over patches per head (a constant row gives 0), mean over heads."""
    lo, hi = row.amin(-1, keepdim=True), row.amax(-1, keepdim=True)
    span = hi - lo
    return ((row - lo) / torch.where(span > 0, span, torch.ones_like(span))).mean(1)


def _check_vit_args(model: object, images: object, attention: object = None) -> tuple[nn.Module, int]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a timm VisionTransformer, got {type(model).__name__}")
    attn = _attention_module(model, attention)
    check_tensor("images", images, dtypes=FLOAT_DTYPES, ndims=(4,), shape_doc="(B, C, H, W)")
    return attn, int(getattr(model, "num_prefix_tokens", 1))


class _Captured(Exception):
    """Raised by vit_class_attention's hook once it has the class attention: the rest of the forward is skipped."""


@torch.no_grad()
def vit_class_attention(
    model: nn.Module,
    images: torch.Tensor,
    *,
    attention: nn.Module | None = None,
    forward: Callable[[torch.Tensor], object] | None = None,
) -> torch.Tensor:
    """The attention map AMT samples from: class-token row of the last block's softmax attention.

    One forward of ``model.forward_features(images)`` up to the last block's attention. A hook on that
    attention recomputes its q and k from its input and takes the class-token query's softmax over all
    tokens, so no (tokens x tokens) matrix is built and every block keeps its fused attention; the forward
    stops there (the last block's MLP and the final norm do not run). Each head is min-max normalised over
    the patches (a constant head gives zeros), then heads are averaged.

    Which encoders: a timm ``VisionTransformer``, and any model that names its last attention block the
    same way: ``model.blocks`` (``nn.Sequential`` or ``nn.ModuleList``) whose last block has ``.attn``, a
    timm-style attention (a fused ``qkv`` Linear, ``num_heads``, ``scale``, optional ``q_norm``/``k_norm``)
    called with the tokens (B, T, D) as first argument, T counting ``model.num_prefix_tokens`` (default 1)
    prefix tokens, the class token first; and ``model.forward_features(images)`` running the encoder over
    every patch (no masking). Other encoders pass ``attention=`` and ``forward=``.

    Args:
        model: a timm VisionTransformer with a class token (``timm.create_model("vit_base_patch16_224")``),
            or an encoder laid out as above.
        images: its input batch.
        attention: the last block's attention module, when it is not ``model.blocks[-1].attn``.
        forward: a callable running the encoder over the whole, unmasked ``images`` (its output is not
            used), when it is not ``model.forward_features``; e.g. for MAE's models_mae, a function applying
            its patch embedding, position embedding, class token and blocks.

    Returns:
        (B, N) float32 in [0, 1] over the N patches (prefix tokens excluded); ``.reshape(B, h, w)`` gives
        the map (14 x 14 for ViT-B/16 at 224).

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0).eval()
        >>> attn = vit_class_attention(vit, torch.randn(2, 3, 32, 32))
        >>> attn.shape, bool(attn.min() >= 0) and bool(attn.max() <= 1)
        (torch.Size([2, 4]), True)
    """
    attn, prefix = _check_vit_args(model, images, attention)
    if prefix < 1:
        raise ValueError("model must have a class token (num_prefix_tokens >= 1), got none")
    if forward is None:
        forward = getattr(model, "forward_features", None)
        if not callable(forward):
            raise TypeError(f"model must have forward_features(images) running the encoder on every patch (or pass "
                            f"forward=), got {type(model).__name__}")
    elif not callable(forward):
        raise TypeError(f"forward must be a callable taking images, got {type(forward).__name__}")
    captured = []

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        B, T, _ = x.shape
        qk = module.qkv(x)[..., : 2 * (module.qkv.out_features // 3)]
        q, k = qk.reshape(B, T, 2, module.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = getattr(module, "q_norm", nn.Identity())(q), getattr(module, "k_norm", nn.Identity())(k)
        logits = (q[:, :, :1].float() * module.scale) @ k.float().transpose(-2, -1)  # (B, heads, 1, T)
        captured.append(logits.softmax(-1)[:, :, 0, prefix:])
        raise _Captured

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        forward(images)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"forward ran without calling the last attention block {type(attn).__name__}")
    return _normalise_heads(captured[-1])


@torch.no_grad()
def vit_class_attention_ref(
    model: nn.Module,
    images: torch.Tensor,
    *,
    attention: nn.Module | None = None,
    forward: Callable[[torch.Tensor], object] | None = None,
) -> torch.Tensor:
    """:func:`vit_class_attention` as the published code gets it: the last block's full attention matrix
    (timm's unfused path, its softmax captured at ``attn_drop``), class-token row, min-max, head mean.
    ``attention`` and ``forward`` as in :func:`vit_class_attention`."""
    attn, prefix = _check_vit_args(model, images, attention)
    forward = model.forward_features if forward is None else forward
    captured, fused = [], getattr(attn, "fused_attn", False)
    handle = attn.attn_drop.register_forward_hook(lambda module, args, out: captured.append(out))
    attn.fused_attn = False
    try:
        forward(images)
    finally:
        attn.fused_attn = fused
        handle.remove()
    return _normalise_heads(captured[-1][:, :, 0, prefix:].float())
