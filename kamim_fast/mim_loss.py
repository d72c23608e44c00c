"""SimMIM's masked L1 loss with KAMIM's keypoint weights (REFERENCE.md sections 3 and 4).

The forward is one Triton kernel (``kamim_fast/kernels/mim_loss.py``): with ``weights="fast"`` it computes FAST,
non-max suppression, the drawKeypoints rings and the per-cell L1 sums in the same pass over pred and
target; with tensor weights or none it skips the FAST stages. The backward reads 2-bit sign codes that
the forward saves (``sign_codes_ref``), not pred and target. The ops: ``kamim_fast/ops/weighted_mim_loss.py`` and
``kamim_fast/ops/fast_weighted_mim_loss.py``.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from ._checks import FLOAT_DTYPES, as_float, as_int, check_choice, check_same_device, check_tensor
from ._constants import MAX_PATCH_SIZE
from ._opencv import FAST_DEFAULT_THRESHOLD
from ._constants import IMAGENET_MEAN, IMAGENET_STD
from ._forms import ChannelStats, check_normalization, weight_options
from .ops import fast_weighted_mim_loss as _fused_op
from .ops import weighted_mim_loss as _op
from .ops.weighted_mim_loss import (  # noqa: F401  (public here)
    SIGN_CODES, expand_cells, sign_codes_ref, weighted_masked_l1_backward_ref, weighted_mim_loss_ref,
)
from .weights import (  # noqa: F401  (KAMIM_PAPER, KAMIM_DEFAULTS: also importable from here)
    CHANNEL_ORDER, DENSITY, DENSITY_MODES, KAMIM_DEFAULTS, KAMIM_PAPER, TEMPERATURE, WEIGHT_PATCH_SIZE,
    check_temperature,
)

NORMALIZE_MODES = ("local", "global")
"""``normalize`` of :func:`weighted_mim_loss`: divide by this rank's mask count (SimMIM) or by the count
of all ranks together (an all-reduce)."""

MASK_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, *FLOAT_DTYPES)


def cell_size(name: str, grid: torch.Tensor, H: int, W: int) -> int:
    """The side p of the square cells by which a (B, h, w) grid tiles an H x W image; raises if none."""
    h, w = grid.shape[1:]
    if not h or not w or H % h or W % w or H // h != W // w:
        raise ValueError(f"{name} must tile pred's {H}x{W} with square cells (B, H/p, W/p), got shape {tuple(grid.shape)}")
    return H // h


def mask_grid(mask: torch.Tensor, shape: torch.Size, patch_size: int | None) -> tuple[torch.Tensor, int]:
    """Any accepted mask form -> (grid, p): a contiguous (B, h, w) float32 grid of p x p pixel cells.

    Forms: SimMIM's (B, h, w) at model-patch resolution; Hugging Face's (B, N) ``bool_masked_pos`` with
    N = (H/p) * (W/p); pixel-level (B, 1, H, W) (p = 1). Values are multipliers as in SimMIM; negative
    values (AMT's thrown patches, -1) count as 0.
    """
    B, _, H, W = shape
    check_tensor("mask", mask, dtypes=MASK_DTYPES, ndims=(2, 3, 4), shape_doc="(B, h, w), (B, N) or (B, 1, H, W)")
    if mask.shape[0] != B:
        raise ValueError(f"mask must have batch size {B} like pred, got shape {tuple(mask.shape)}")
    if mask.dim() == 4:
        if tuple(mask.shape) != (B, 1, H, W):
            raise ValueError(f"a 4-D mask must be pixel-level (B, 1, H, W) = {(B, 1, H, W)}, got {tuple(mask.shape)}")
        grid, p = mask[:, 0], 1
    else:
        if mask.dim() == 2:  # (B, N) patch tokens, row-major
            N = mask.shape[1]
            p = patch_size if patch_size is not None else math.isqrt(H * W // N) if N else 0
            if not p or H % p or W % p or (H // p) * (W // p) != N:
                raise ValueError(
                    f"a (B, N) mask needs N = (H/p)*(W/p) for a patch size p dividing H={H} and W={W}; "
                    f"got N={N}" + (f" with patch_size={patch_size}" if patch_size is not None else "")
                )
            mask = mask.reshape(B, H // p, W // p)
        grid, p = mask, cell_size("mask", mask, H, W)
        if patch_size is not None and p != patch_size:
            raise ValueError(f"mask shape {tuple(mask.shape)} means patch size {p} for {H}x{W}, but patch_size={patch_size}")
    return grid.to(torch.float32).clamp(min=0).contiguous(), p


def weighted_mim_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | str | None = None,
    *,
    patch_size: int | None = None,
    weight_patch_size: int = WEIGHT_PATCH_SIZE,
    temperature: float = TEMPERATURE,
    threshold: int = FAST_DEFAULT_THRESHOLD,
    density: str = DENSITY,
    mean: ChannelStats | None = IMAGENET_MEAN,
    std: ChannelStats | None = IMAGENET_STD,
    channel_order: str = CHANNEL_ORDER,
    eps: float = 1e-5,
    normalize: str = "local",
    process_group: object | None = None,
) -> torch.Tensor:
    """SimMIM's masked L1 reconstruction loss, optionally weighted per cell as KAMIM does.

    ``loss = sum(w * |pred - target| * mask) / (sum(mask) + eps) / C`` with the weight in the numerator
    only, exactly as the published code; ``weights=None`` is SimMIM's loss to the bit. The loss is per
    call (per rank under DDP): it divides by this batch's own mask count, as SimMIM does, so DDP's
    gradient averaging trains on the mean of the per-rank losses. ``normalize="global"`` divides by the
    mask count of all ranks instead (one all-reduce of a scalar) and multiplies by the world size, so
    that after DDP's averaging the gradient is that of the loss of the concatenated global batch.

    The argument order is ``(pred, target)``, the reverse of SimMIM's ``l1_loss(x, x_rec)``: swapped, the
    weights would come from the reconstruction, so a ``target`` that requires grad with a ``pred`` that
    does not raises. The weight options default to :data:`kamim_fast.KAMIM_DEFAULTS` (as every entry
    point); ``**KAMIM_PAPER`` is the published configuration.

    Args:
        pred: the reconstruction (fp32, or fp16/bf16 as under autocast).
        target: the normalised target image.
        mask: 1 where a patch is masked: SimMIM's (B, h, w), Hugging Face's (B, N) ``bool_masked_pos``, or
            (B, 1, H, W); bool, int or float. Negative values (AMT's thrown patches) count as 0.
        weights: None; a (B, H/p, W/p) tensor of per-cell weights (e.g. ORB or SIFT weights from
            :func:`patch_weights` or :class:`KamimWeights`); or ``"fast"`` to compute KAMIM's weights from
            ``target`` with the keyword arguments below, fused into the loss (see :func:`patch_weights`).
        patch_size: the model's patch size; inferred from the mask's shape when omitted.
        weight_patch_size: cell size of ``"fast"`` weights.
        temperature: T of ``"fast"`` weights.
        threshold: FAST threshold of ``"fast"`` weights.
        density: ``"ring"`` or ``"count"`` for ``"fast"`` weights.
        mean: normalisation mean of ``target`` (to recover its uint8 gray).
        std: normalisation std of ``target``.
        channel_order: ``"rgb"``, or ``"bgr"`` as the published code (``KAMIM_PAPER``; about 2% on the
            loss of real photos, 34% of the cells weigh differently: see :func:`patch_weights`).
        eps: added to the mask count (SimMIM: 1e-5); an unmasked batch gives 0, not NaN.
        normalize: ``"local"`` (SimMIM: this call's mask count) or ``"global"``: ``sum_rank(loss) *
            world / (global mask count + eps) / C``; the mean of this value over the ranks is the loss of
            the concatenated batch. Without an initialised process group the world is this process
            and ``"global"`` equals ``"local"``. The all-reduce is a functional collective
            (``torch.distributed._functional_collectives``), traceable by ``torch.compile``.
        process_group: the group to all-reduce over for ``normalize="global"`` (default: the world).

    Returns:
        A float32 scalar, differentiable with respect to ``pred`` (and ``target``, tensor weights).

    Note:
        - Deterministic: the same inputs give bitwise the same loss and gradients (per-tile and per-cell
          partials summed in a fixed order; no atomics).
        - NaN in pred or target makes the loss NaN; the gradient there is 0, as PyTorch's ``l1_loss``
          gives (``torch.sign(nan)`` is 0). Inf keeps its sign.
        - ``weights="fast"`` recovers uint8 gray from ``target`` as ``round((x * std + mean) * 255)``
          clamped to [0, 255] per channel, so targets outside the normalised range weigh as clamped.
          When ``target``'s values cannot come from ``mean``/``std`` (values all in [0, 1] with a
          positive mean, or beyond the normalised range) a :class:`NormalizationWarning` says so, once
          per process, from the first 16 calls; on CUDA without a host synchronisation (the check's
          result is read at a later call, when the GPU has got there).
        - The weights are not differentiated: FAST is piecewise constant in ``target``.

    Shape:
        - pred, target: (B, C, H, W); C = 3 for ``weights="fast"``.
        - mask: (B, h, w), (B, N) or (B, 1, H, W).
        - weights: (B, H/p, W/p) when a tensor.

    Example:
        >>> pred, target = torch.zeros(2, 3, 32, 32), torch.ones(2, 3, 32, 32)
        >>> mask = torch.zeros(2, 2, 2, dtype=torch.bool)
        >>> mask[:, 0, 0] = True  # one 16 px patch per image
        >>> round(weighted_mim_loss(pred, target, mask).item(), 4)  # |0 - 1| = 1 over the masked pixels
        1.0
        >>> float(weighted_mim_loss(pred, target, mask, torch.full((2, 4, 4), 2.0)))
        2.0
    """
    # The public forms (the mask, a weights tensor, "fast", the statistics) as the ops take them; the ops check
    # their arguments (kamim_fast/ops/weighted_mim_loss.py, fast_weighted_mim_loss.py).
    # The devices first: torch dispatches an op on its tensors' devices (a meta tensor among them would take the
    # fake kernel).
    check_tensor("pred", pred, ndims=(4,), shape_doc="(B, C, H, W)")
    check_tensor("target", target)
    check_same_device("target", target, pred, "pred")
    if target.requires_grad and not pred.requires_grad:
        raise ValueError("target requires grad and pred does not: the order is weighted_mim_loss(pred, target, ...), "
                         "the reconstruction first, the reverse of SimMIM's l1_loss(x, x_rec)")
    if patch_size is not None:
        patch_size = as_int("patch_size", patch_size, 1, MAX_PATCH_SIZE)
    eps = as_float("eps", eps, "a float >= 0")
    check_choice("normalize", normalize, NORMALIZE_MODES)
    grid, patch_size = mask_grid(mask, pred.shape, patch_size)  # None: read off the mask's shape
    if mask.device != pred.device:
        raise ValueError(f"mask must be on pred's device {pred.device}, got {mask.device}")
    float64 = torch.float64 in (pred.dtype, target.dtype)
    if isinstance(weights, str):
        if weights in ("orb", "sift"):
            raise ValueError(f"weights={weights!r} is not fused: compute the weights with patch_weights(images, "
                             f"detector={weights!r}) or KamimWeights(detector={weights!r}) and pass the tensor")
        check_choice("weights", weights, ("fast",))
        if pred.shape[1] != 3:
            raise ValueError(f'weights="fast" needs RGB images (C = 3), got pred and target of shape {tuple(pred.shape)}')
        _, opts = weight_options("target", target, weight_patch_size, temperature, threshold, density, mean, std,
                                 channel_order)
        args = (pred, target, grid, patch_size, *opts[:5], opts.mean, opts.std, eps)
        if not float64:  # one fused pass over pred and target (kamim_fast/kernels/mim_loss.py)
            loss, _, _ = torch.ops.kamim_fast.fast_weighted_mim_loss(*args)
        else:  # gradcheck precision: the weights, then the differentiable reference composition
            _fused_op.check(*args)
            weights = torch.ops.kamim_fast.patch_weights(target.detach(), *opts)
            loss = weighted_mim_loss_ref(pred, target, expand_cells(grid, patch_size), weights, eps)
        check_normalization("target", target, opts.mean, opts.std)
        return _normalize(loss, grid, patch_size, eps, normalize, process_group)
    weight_patch_size = 1  # a weights tensor's cells, read off its shape below (no weights: 1)
    if weights is not None:
        check_tensor("weights", weights, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, H/p, W/p)")
        if weights.shape[0] != pred.shape[0]:
            raise ValueError(f"weights must have batch size {pred.shape[0]} like pred, got shape {tuple(weights.shape)}")
        weight_patch_size = cell_size("weights", weights, *pred.shape[-2:])
        if weights.device != pred.device:
            raise ValueError(f"weights must be on pred's device {pred.device}, got {weights.device}")
    if float64 or (weights is not None and weights.requires_grad):
        # gradcheck precision, or a gradient for the weights: the differentiable reference composition
        _op.check(pred, target, grid, None if weights is None else weights.detach().to(torch.float32).contiguous(),
                  patch_size, weight_patch_size, eps)
        loss = weighted_mim_loss_ref(pred, target, expand_cells(grid, patch_size), weights, eps)
        return _normalize(loss, grid, patch_size, eps, normalize, process_group)
    if weights is not None:
        weights = weights.to(torch.float32).contiguous()
    loss, _ = torch.ops.kamim_fast.weighted_mim_loss(pred, target, grid, weights, patch_size, weight_patch_size, eps)
    return _normalize(loss, grid, patch_size, eps, normalize, process_group)


def _normalize(loss: torch.Tensor, grid: torch.Tensor, patch_size: int, eps: float, normalize: str,
               process_group: object | None) -> torch.Tensor:
    """``normalize="global"``: rescale the local loss from this rank's mask count to all ranks' count.

    ``loss * (n_local + eps) * world / (n_global + eps)``, with n counted at pixel level as the loss does.
    The factor carries no gradient (the mask has none).
    """
    if normalize == "local" or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return loss
    from torch.distributed import _functional_collectives as funcol

    group = torch.distributed.group.WORLD if process_group is None else process_group
    world = torch.distributed.get_world_size(group)
    local = grid.sum(dtype=torch.float32) * float(patch_size * patch_size)
    total = funcol.all_reduce(local, "sum", group)
    return loss * ((local + eps) * world / (total + eps)).to(loss.dtype)


class WeightedMIMLoss(nn.Module):
    """Module twin of :func:`weighted_mim_loss`, for trainers that build their loss from config.

    Args:
        weights: ``"fast"`` (KAMIM) or None (SimMIM); a tensor of weights can be passed per call instead.
        **kwargs: the keyword arguments of :func:`weighted_mim_loss` (e.g. ``**KAMIM_PAPER``).

    Example:
        >>> criterion = WeightedMIMLoss(weights="fast", **KAMIM_PAPER)
        >>> target = torch.randn(2, 3, 32, 32).clamp(-1.8, 2.2)  # within the ImageNet-normalised range
        >>> loss = criterion(torch.zeros_like(target, requires_grad=True), target, torch.ones(2, 2, 2))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """

    def __init__(self, weights: str | None = "fast", **kwargs) -> None:
        super().__init__()
        if weights is not None:
            check_choice("weights", weights, ("fast",))
        options = {n for n, p in inspect.signature(weighted_mim_loss).parameters.items() if p.kind == p.KEYWORD_ONLY}
        unknown = set(kwargs) - options
        if unknown:
            raise TypeError(f"WeightedMIMLoss got unknown keyword arguments {sorted(unknown)}")
        if "temperature" in kwargs:
            check_temperature(kwargs["temperature"])
        if "density" in kwargs:
            check_choice("density", kwargs["density"], DENSITY_MODES)
        if "normalize" in kwargs:
            check_choice("normalize", kwargs["normalize"], NORMALIZE_MODES)
        self.weights = weights
        self.kwargs = kwargs

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return weighted_mim_loss(pred, target, mask, self.weights if weights is None else weights, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join([f"weights={self.weights!r}"] + [f"{k}={v!r}" for k, v in self.kwargs.items()])
