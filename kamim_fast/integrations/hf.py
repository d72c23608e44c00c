"""Hugging Face ``ViTForMaskedImageModeling`` / ``SwinForMaskedImageModeling`` with kamim_fast's loss, and AMT's
masking for ``ViTMAEForPreTraining`` (:func:`vitmae_amt_noise`).

Both models return ``reconstruction`` (B, C, H, W) and compute SimMIM's masked L1 from ``pixel_values``
and ``bool_masked_pos`` (B, N). :func:`hf_mim_loss` computes kamim_fast's loss from the same three
tensors; :class:`HFMaskedImageModeling` wraps a model so that ``outputs.loss`` is that loss, which is
what ``transformers.Trainer`` and hand-written loops read.

Normalisation: KAMIM's weights recover the uint8 gray image from ``pixel_values``, so the loss must know
how they were normalised. ``ViTImageProcessor`` uses 0.5/0.5, not ImageNet's statistics, so nothing is
assumed: with ``weights="fast"`` pass the image processor (``processor=``, which also accounts for its
``do_normalize``, ``do_rescale`` and ``rescale_factor``) or explicit ``mean=``/``std=``; without either it
raises. ``weights=None`` (the model's own loss) needs neither. The other options default to
:data:`kamim_fast.KAMIM_DEFAULTS`, as everywhere; pass ``**KAMIM_PAPER`` for the published configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import FLOAT_DTYPES, check_choice, check_int, check_tensor
from ..amt import _check_ratio, amt_masking
from ..mim_loss import WeightedMIMLoss, weighted_mim_loss
from .simmim import _criterion


def processor_stats(processor: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for :func:`kamim_fast.weighted_mim_loss` from a Hugging Face image processor.

    The processor computes ``pixel_values = (v * rescale_factor - image_mean) / image_std`` (each step
    only when ``do_rescale`` / ``do_normalize``); the loss un-normalises ``v = (x * std + mean) * 255``,
    so ``mean = image_mean / (255 * rescale_factor)`` and ``std = image_std / (255 * rescale_factor)``
    (0 and ``1 / (255 * rescale_factor)`` without ``do_normalize``).

    Example:
        >>> import transformers
        >>> processor_stats(transformers.ViTImageProcessor())
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    """
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    do_normalize = getattr(processor, "do_normalize", True)
    if do_normalize and (mean is None or std is None):
        raise TypeError(f"processor must be a Hugging Face image processor with image_mean and image_std, got "
                        f"{type(processor).__name__}")
    rescale = float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
    scale = 255.0 * rescale

    def per_channel(v: object) -> tuple[float, ...]:
        return tuple(float(x) for x in v) if isinstance(v, Sequence) else (float(v),) * 3

    if not do_normalize:
        return (0.0,) * 3, (1.0 / scale,) * 3
    return tuple(m / scale for m in per_channel(mean)), tuple(s / scale for s in per_channel(std))


def _stats_options(where: str, weights: str | None, processor: object | None, loss_options: dict) -> dict:
    """``loss_options`` with ``mean``/``std`` from ``processor``; raises when weights need them and none came."""
    if processor is not None:
        if "mean" in loss_options or "std" in loss_options:
            raise ValueError(f"{where} takes processor or mean/std, not both")
        mean, std = processor_stats(processor)
        return {**loss_options, "mean": mean, "std": std}
    if weights is not None and ("mean" not in loss_options or "std" not in loss_options):
        raise ValueError(
            f"{where} with weights={weights!r} needs the statistics pixel_values were normalised with: pass "
            f"processor=<the image processor>, or mean=... and std=... (ViTImageProcessor uses 0.5, not ImageNet's; "
            f"kamim_fast does not guess)")
    return loss_options


def hf_mim_loss(
    reconstruction: torch.Tensor,
    pixel_values: torch.Tensor,
    bool_masked_pos: torch.Tensor,
    weights: str | None = "fast",
    *,
    processor: object | None = None,
    patch_size: int | None = None,
    **loss_options,
) -> torch.Tensor:
    """kamim_fast's loss from a Hugging Face masked-image-modelling model's tensors.

    With ``weights=None`` this is the model's own ``loss``; with ``"fast"`` it is KAMIM's loss with the
    options of :data:`kamim_fast.KAMIM_DEFAULTS`, updated by ``loss_options`` (``**KAMIM_PAPER`` for the
    published configuration).

    Args:
        reconstruction: ``outputs.reconstruction``.
        pixel_values: the model's input, normalised (the target).
        bool_masked_pos: the model's (B, N) mask, True where masked, row-major patches.
        weights: ``"fast"`` (KAMIM, default), a (B, H/p, W/p) tensor, or None (SimMIM, as the model's own loss).
        processor: the image processor that made ``pixel_values``; or pass ``mean`` and ``std``.
        patch_size: ``model.config.patch_size``; inferred from N when omitted (square patches).
        **loss_options: keyword arguments of :func:`kamim_fast.weighted_mim_loss` (``mean``, ``std``, ...).

    Returns:
        A float32 scalar.

    Raises:
        ValueError: ``weights="fast"`` without ``processor`` or ``mean``/``std``.

    Shape:
        - reconstruction, pixel_values: (B, C, H, W).
        - bool_masked_pos: (B, N), N = (H/p) * (W/p).

    Example:
        >>> rec, pix = torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32)
        >>> pos = torch.tensor([[True, False, False, False]])
        >>> float(hf_mim_loss(rec, pix, pos, None, patch_size=16))
        1.0
    """
    loss_options = _stats_options("hf_mim_loss", weights if isinstance(weights, str) else None, processor, loss_options)
    return weighted_mim_loss(reconstruction, pixel_values, bool_masked_pos, weights, patch_size=patch_size,
                             **loss_options)


class HFMaskedImageModeling(nn.Module):
    """A Hugging Face masked-image-modelling model whose ``outputs.loss`` is kamim_fast's loss.

    The model runs unchanged (it still computes its own loss, a cheap extra L1 pass, since Hugging Face
    computes it whenever ``bool_masked_pos`` is given); the returned output's ``loss`` is replaced by
    :func:`hf_mim_loss` on its ``reconstruction``. Parameters, ``state_dict`` and ``save_pretrained``
    stay the wrapped model's (``wrapper.model``).

    Args:
        model: ``ViTForMaskedImageModeling``, ``SwinForMaskedImageModeling`` or any model with a
            ``config.patch_size`` that returns ``reconstruction``.
        processor: the image processor that makes ``pixel_values`` (its statistics reach the weights);
            or pass ``mean=`` and ``std=``. One of the two is required with ``weights="fast"``.
        weights: ``"fast"`` (KAMIM, default) or None (the model's own loss).
        **loss_options: keyword arguments of :func:`kamim_fast.weighted_mim_loss`, defaults
            :data:`kamim_fast.KAMIM_DEFAULTS` (``**KAMIM_PAPER`` for the published configuration).

    Example:
        >>> import transformers
        >>> cfg = transformers.ViTConfig(image_size=32, patch_size=8, encoder_stride=8, hidden_size=16,
        ...                              num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
        >>> processor = transformers.ViTImageProcessor(size=32)
        >>> model = HFMaskedImageModeling(transformers.ViTForMaskedImageModeling(cfg), processor=processor)
        >>> out = model(torch.randn(2, 3, 32, 32).clamp(-1, 1), torch.rand(2, 16) < 0.5)
        >>> out.loss.shape, out.reconstruction.shape
        (torch.Size([]), torch.Size([2, 3, 32, 32]))
    """

    def __init__(self, model: nn.Module, *, processor: object | None = None, weights: str | None = "fast",
                 **loss_options) -> None:
        super().__init__()
        config = getattr(model, "config", None)
        if not isinstance(model, nn.Module) or getattr(config, "patch_size", None) is None:
            raise TypeError(f"model must be a Hugging Face model with config.patch_size (ViTForMaskedImageModeling, "
                            f"SwinForMaskedImageModeling), got {type(model).__name__}")
        if weights is not None:
            check_choice("weights", weights, ("fast",))
        self.model = model
        self.patch_size = check_int("model.config.patch_size", config.patch_size, 1, 1 << 16)
        loss_options = _stats_options("HFMaskedImageModeling", weights, processor, loss_options)
        self.criterion: WeightedMIMLoss = _criterion(weights, {"patch_size": self.patch_size, **loss_options})

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor, **kwargs):
        if not isinstance(bool_masked_pos, torch.Tensor):
            raise TypeError(f"bool_masked_pos must be a (B, N) torch.Tensor, got {type(bool_masked_pos).__name__}")
        outputs = self.model(pixel_values=pixel_values, bool_masked_pos=bool_masked_pos, **kwargs)
        outputs["loss"] = self.criterion(outputs.reconstruction, pixel_values, bool_masked_pos)
        return outputs


def vitmae_amt_noise(
    weights: torch.Tensor,
    mask_ratio: float | nn.Module | object,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The ``noise`` that makes Hugging Face's ``ViTMAEForPreTraining`` mask as AMT does (masking, no throwing).

    ViTMAE keeps the ``int(N * (1 - config.mask_ratio))`` patches of smallest noise (in ascending noise order)
    and masks the rest. This draws :func:`kamim_fast.amt_masking`'s weighted order with that many visible
    patches and returns, per patch, its place in the order ``[visible | masked]`` as noise, so that the model
    keeps exactly AMT's visible patches, in ``AMTMask.ids_keep``'s order, and ``outputs.mask`` is AMT's mask.
    The masked count is the model's: ``N - int(N * (1 - mask_ratio))``, which is ``amt_masking``'s
    ``int(N * mask_ratio)`` wherever the two roundings agree (MAE's 0.75 of 196 patches: 147); where they
    do not (0.45 of 196: 88 against 89), the model's count wins, since the model cannot be told another.

    Args:
        weights: per-patch attention (B, N) or (B, h, w), >= 0.
        mask_ratio: the model's ``config.mask_ratio``, or the model (or its config) to read it from.
        noise: ``amt_masking``'s q ~ Exp(1), (B, N), for a reproducible draw.
        generator: draws q instead.

    Returns:
        (B, N) float32 noise: pass it as ``model(pixel_values, noise=...)``.

    Example:
        >>> import transformers
        >>> cfg = transformers.ViTMAEConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=32, decoder_hidden_size=16, decoder_num_hidden_layers=1,
        ...     decoder_num_attention_heads=2, decoder_intermediate_size=32)
        >>> model = transformers.ViTMAEForPreTraining(cfg)
        >>> weights = torch.linspace(0.01, 1, 16).expand(2, 16)
        >>> out = model(torch.randn(2, 3, 32, 32), noise=vitmae_amt_noise(weights, model))
        >>> out.mask.sum(1).tolist()  # 0.75 of 16 patches masked, drawn by the weights
        [12.0, 12.0]
    """
    check_tensor("weights", weights, dtypes=FLOAT_DTYPES, ndims=(2, 3), shape_doc="(B, N) or (B, h, w)")
    weights = weights.reshape(weights.shape[0], -1)
    config = getattr(mask_ratio, "config", mask_ratio)
    if not isinstance(mask_ratio, (int, float)) or isinstance(mask_ratio, bool):
        if not hasattr(config, "mask_ratio"):
            raise TypeError(f"mask_ratio must be a float, or a ViTMAE model or config with mask_ratio, got "
                            f"{type(mask_ratio).__name__}")
        mask_ratio = config.mask_ratio
    mask_ratio = _check_ratio("mask_ratio", mask_ratio)
    N = weights.shape[1]
    num_masked = N - int(N * (1 - mask_ratio))  # ViTMAEEmbeddings.random_masking keeps int(N * (1 - ratio))
    m = amt_masking(weights, noise=noise, generator=generator, num_masked=num_masked, num_thrown=0)
    # sorted place r of each patch: masked r < num_masked, visible after; ViTMAE keeps the smallest noise
    return torch.remainder(m.ids_restore - num_masked, N).to(torch.float32)
